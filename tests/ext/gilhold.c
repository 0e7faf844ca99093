/* tests/ext/gilhold.c - a C extension that makes blocking calls while it
 * holds the GIL, as some real extensions do (hard rule 1).
 *
 * read_holding_gil(fd, n) and recv_holding_gil(fd, n) call read(2) and
 * recv(2) without Py_BEGIN_ALLOW_THREADS. Under libgreen, inside a green
 * thread, the call parks; the park must release the GIL or every other
 * green thread on the OS thread would block in take_gil forever.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <sys/socket.h>
#include <unistd.h>

static PyObject *read_holding_gil(PyObject *self, PyObject *args)
{
    int fd;
    Py_ssize_t n;
    char buf[4096];
    ssize_t r;

    if (!PyArg_ParseTuple(args, "in", &fd, &n))
        return NULL;
    if (n > (Py_ssize_t)sizeof buf)
        n = sizeof buf;
    r = read(fd, buf, (size_t)n); /* GIL held on purpose */
    if (r < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyBytes_FromStringAndSize(buf, r);
}

static PyObject *recv_holding_gil(PyObject *self, PyObject *args)
{
    int fd;
    Py_ssize_t n;
    char buf[4096];
    ssize_t r;

    if (!PyArg_ParseTuple(args, "in", &fd, &n))
        return NULL;
    if (n > (Py_ssize_t)sizeof buf)
        n = sizeof buf;
    r = recv(fd, buf, (size_t)n, 0); /* GIL held on purpose */
    if (r < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyBytes_FromStringAndSize(buf, r);
}

static PyMethodDef methods[] = {
    {"read_holding_gil", read_holding_gil, METH_VARARGS, NULL},
    {"recv_holding_gil", recv_holding_gil, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "gilhold", NULL, -1,
                                 methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_gilhold(void) { return PyModule_Create(&def); }
