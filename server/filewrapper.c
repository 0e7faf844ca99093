/* server/filewrapper.c - wsgi.file_wrapper (PEP 3333, "Optional
 * Platform-Specific File Handling").
 *
 * The object is an ordinary iterable over filelike.read(blksize), so any
 * server or middleware can consume it. When the app returns it unchanged
 * and the file is a regular file, response.c (srv_sendfile) bypasses the
 * iteration and sends the file with sendfile(2) instead.
 */
#include "server/py.h"

static PyObject *fw_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *names[] = {"filelike", "blksize", NULL};
    struct srv_filewrapper *fw;
    PyObject *filelike;
    Py_ssize_t blksize = 8192;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|n:file_wrapper", names,
                                     &filelike, &blksize))
        return NULL;
    if (blksize <= 0) {
        PyErr_SetString(PyExc_ValueError, "blksize must be positive");
        return NULL;
    }
    fw = (struct srv_filewrapper *)type->tp_alloc(type, 0);
    if (!fw)
        return NULL;
    fw->filelike = Py_NewRef(filelike);
    fw->blksize = blksize;
    return (PyObject *)fw;
}

static void fw_dealloc(PyObject *self)
{
    struct srv_filewrapper *fw = (struct srv_filewrapper *)self;

    Py_XDECREF(fw->filelike);
    Py_TYPE(self)->tp_free(self);
}

static PyObject *fw_next(PyObject *self)
{
    struct srv_filewrapper *fw = (struct srv_filewrapper *)self;
    PyObject *data = PyObject_CallMethod(fw->filelike, "read", "n", fw->blksize);

    if (!data)
        return NULL;
    if (PyBytes_Check(data) && PyBytes_GET_SIZE(data) == 0) {
        Py_DECREF(data);
        return NULL;
    }
    return data;
}

static PyObject *fw_close(PyObject *self, PyObject *unused)
{
    struct srv_filewrapper *fw = (struct srv_filewrapper *)self;
    PyObject *close = PyObject_GetAttrString(fw->filelike, "close"), *r;

    if (!close) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    r = PyObject_CallNoArgs(close);
    Py_DECREF(close);
    return r;
}

static PyMethodDef fw_methods[] = {
    {"close", fw_close, METH_NOARGS, "close the wrapped file"},
    {NULL, NULL, 0, NULL},
};

PyTypeObject srv_filewrapper_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "libgreen.wsgi.FileWrapper",
    .tp_basicsize = sizeof(struct srv_filewrapper),
    .tp_dealloc = fw_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "FileWrapper(filelike, blksize=8192): wsgi.file_wrapper",
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = fw_next,
    .tp_methods = fw_methods,
    .tp_new = fw_new,
};
