/* server/options.c - the options of libgreen.wsgi.server(), from the one
 * list in server/options.def: their conversion from Python values with
 * range checks, their defaults, the docstring that describes them and
 * libgreen.wsgi.options(), which hands the list to Python tools (the
 * README generator, a command-line front end).
 *
 * Runs once per server() call or per import, never per request: it is
 * written to be plain rather than fast.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/py.h"

const struct srv_option srv_option_table[SRV_NOPTIONS] = {
#define SRV_OPTION(name_, kind_, dflt_, min_, max_, field_, flag_, env_, help_) \
    {.name = #name_, .kind = kind_, .dflt = dflt_, .min = min_, .max = max_,    \
     .offset = offsetof(struct srv_options, field_), .field = #field_,          \
     .flag = flag_, .env = env_, .help = help_},
#include "server/options.def"
#undef SRV_OPTION
};

/* Each entry's field must have the C type its kind writes, and its
 * default must lie in its range: checked here, at compile time. */
#define SRV_CTYPE_SRV_BOOL int
#define SRV_CTYPE_SRV_SECONDS double
#define SRV_CTYPE_SRV_TIMEOUT double
#define SRV_CTYPE_SRV_BOOL_SECONDS double
#define SRV_CTYPE_SRV_SIZE size_t
#define SRV_CTYPE_SRV_SIZE_OR_NONE size_t
#define SRV_CTYPE_SRV_DICT PyObject *
#define SRV_OPTION(name_, kind_, dflt_, min_, max_, field_, ...)               \
    _Static_assert(__builtin_types_compatible_p(                               \
                       __typeof__(((struct srv_options *)0)->field_),          \
                       SRV_CTYPE_##kind_),                                     \
                   "option " #name_ ": field " #field_ " is not a " #kind_);   \
    _Static_assert((dflt_) >= (min_) && (dflt_) <= (max_),                     \
                   "option " #name_ ": default out of its range");
#include "server/options.def"
#undef SRV_OPTION

static const char *const srv_kind_names[] = {
    [SRV_BOOL] = "bool",
    [SRV_SECONDS] = "seconds",
    [SRV_TIMEOUT] = "timeout",
    [SRV_BOOL_SECONDS] = "bool_or_seconds",
    [SRV_SIZE] = "size",
    [SRV_SIZE_OR_NONE] = "size_or_none",
    [SRV_DICT] = "dict",
};

/* ---- words for docs and errors ----------------------------------------- */

/* v as Python source would write it: 30, 0.5, 2147483647. */
static void srv_opt_num(char *buf, size_t n, double v)
{
    snprintf(buf, n, "%.15g", v);
}

/* The values option o accepts, as one phrase. */
static void srv_opt_allowed(const struct srv_option *o, char *buf, size_t n)
{
    char lo[32], hi[32];

    srv_opt_num(lo, sizeof lo, o->min);
    srv_opt_num(hi, sizeof hi, o->max);
    switch (o->kind) {
    case SRV_BOOL:
        snprintf(buf, n, "True or False");
        break;
    case SRV_SECONDS:
        snprintf(buf, n, "%s to %s seconds", lo, hi);
        break;
    case SRV_TIMEOUT:
        snprintf(buf, n, "%s to %s seconds; 0 or None: no limit", lo, hi);
        break;
    case SRV_BOOL_SECONDS:
        snprintf(buf, n, "True, False, or %s to %s seconds", lo, hi);
        break;
    case SRV_SIZE:
    case SRV_SIZE_OR_NONE:
        if (isinf(o->max))
            snprintf(buf, n, "an integer >= %s", lo);
        else
            snprintf(buf, n, "an integer from %s to %s", lo, hi);
        if (o->kind == SRV_SIZE_OR_NONE)
            snprintf(buf + strlen(buf), n - strlen(buf), "; 0 or None: no limit");
        break;
    case SRV_DICT:
        snprintf(buf, n, "a dict, or None");
        break;
    }
}

/* The default as a Python literal; with detail, what True stands for. */
static void srv_opt_default_text(const struct srv_option *o, char *buf,
                                 size_t n, int detail)
{
    char num[32];

    srv_opt_num(num, sizeof num, o->dflt);
    switch (o->kind) {
    case SRV_BOOL:
        snprintf(buf, n, "%s", o->dflt ? "True" : "False");
        break;
    case SRV_BOOL_SECONDS:
        snprintf(buf, n, detail ? "True (%s s)" : "True", num);
        break;
    case SRV_SIZE_OR_NONE:
    case SRV_DICT:
        snprintf(buf, n, "%s", o->dflt ? num : "None");
        break;
    default:
        snprintf(buf, n, "%s", num);
    }
}

static int srv_opt_fail(PyObject *exc_type, const struct srv_option *o,
                        PyObject *value, const char *what)
{
    char allowed[160];

    srv_opt_allowed(o, allowed, sizeof allowed);
    PyErr_Format(exc_type, "libgreen.wsgi.server(): %s=%.80R %s (allowed: %s)",
                 o->name, value, what, allowed);
    return -1;
}

static int srv_opt_wrong_type(const struct srv_option *o, PyObject *value)
{
    char what[96];

    snprintf(what, sizeof what, "is of the wrong type, %.60s",
             Py_TYPE(value)->tp_name);
    return srv_opt_fail(PyExc_TypeError, o, value, what);
}

/* ---- converting one value ------------------------------------------------ */

static int srv_opt_seconds(const struct srv_option *o, PyObject *v, double *out)
{
    double d;

    if (!v)
        d = o->dflt;
    else if (v == Py_None)
        d = 0;
    else if (o->kind == SRV_BOOL_SECONDS && PyBool_Check(v))
        d = v == Py_True ? o->dflt : 0;
    else {
        d = PyFloat_AsDouble(v);
        if (d == -1 && PyErr_Occurred()) {
            if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                return srv_opt_wrong_type(o, v);
            }
            if (!PyErr_ExceptionMatches(PyExc_OverflowError))
                return -1;
            PyErr_Clear();
            return srv_opt_fail(PyExc_ValueError, o, v, "is out of range");
        }
        if (!(d >= o->min && d <= o->max)) /* NaN too */
            return srv_opt_fail(PyExc_ValueError, o, v, "is out of range");
    }
    if (o->kind == SRV_TIMEOUT && d == 0)
        d = -1; /* no deadline, in the hub's words */
    *out = d;
    return 0;
}

static int srv_opt_size(const struct srv_option *o, PyObject *v, size_t *out)
{
    Py_ssize_t n;

    if (!v) {
        *out = (size_t)o->dflt;
        return 0;
    }
    if (v == Py_None && o->kind == SRV_SIZE_OR_NONE) {
        *out = 0;
        return 0;
    }
    if (!PyIndex_Check(v))
        return srv_opt_wrong_type(o, v);
    n = PyNumber_AsSsize_t(v, NULL); /* clipped to the Py_ssize_t range */
    if (n == -1 && PyErr_Occurred())
        return -1;
    if ((double)n < o->min || (double)n > o->max)
        return srv_opt_fail(PyExc_ValueError, o, v, "is out of range");
    *out = (size_t)n;
    return 0;
}

/* Stores option o, from the Python value v (NULL: not given), in opts. */
static int srv_opt_set(const struct srv_option *o, PyObject *v,
                       struct srv_options *opts)
{
    void *field = (char *)opts + o->offset;
    int b;

    switch (o->kind) {
    case SRV_BOOL:
        b = v ? PyObject_IsTrue(v) : o->dflt != 0;
        if (b < 0)
            return -1;
        *(int *)field = b;
        return 0;
    case SRV_SIZE:
    case SRV_SIZE_OR_NONE:
        return srv_opt_size(o, v, field);
    case SRV_DICT:
        if (v == Py_None)
            v = NULL;
        if (v && !PyDict_Check(v) && !PyObject_HasAttrString(v, "keys"))
            return srv_opt_wrong_type(o, v);
        *(PyObject **)field = v;
        return 0;
    default:
        return srv_opt_seconds(o, v, field);
    }
}

/* ---- the whole set ------------------------------------------------------- */

int srv_options_find(PyObject *key)
{
    for (int i = 0; i < SRV_NOPTIONS; i++)
        if (PyUnicode_CompareWithASCIIString(key, srv_option_table[i].name) == 0)
            return i;
    return -1;
}

int srv_options_unknown(PyObject *key)
{
    char names[512] = "";
    size_t len = 0;

    for (int i = 0; i < SRV_NOPTIONS && len < sizeof names; i++)
        len += (size_t)snprintf(names + len, sizeof names - len, "%s%s",
                                i ? ", " : "", srv_option_table[i].name);
    PyErr_Format(PyExc_TypeError,
                 "libgreen.wsgi.server() got an unexpected keyword argument "
                 "%R; its options are: %s", key, names);
    return -1;
}

int srv_options_set(PyObject *const given[SRV_NOPTIONS], struct srv_options *opts)
{
    memset(opts, 0, sizeof *opts);
    for (int i = 0; i < SRV_NOPTIONS; i++)
        if (srv_opt_set(&srv_option_table[i], given[i], opts) < 0)
            return -1;
    return 0;
}

/* ---- the docstring ------------------------------------------------------- */

/* text, word-wrapped to width columns, every line after indent. */
static void srv_doc_wrap(FILE *f, const char *indent, const char *text, int width)
{
    int col = 0;

    while (*text) {
        int word = (int)strcspn(text, " ");
        if (col && col + 1 + word > width) {
            fputc('\n', f);
            col = 0;
        }
        if (!col)
            col = fprintf(f, "%s", indent);
        else
            col += fprintf(f, " ");
        col += fprintf(f, "%.*s", word, text);
        text += word;
        text += strspn(text, " ");
    }
    fputc('\n', f);
}

char *srv_options_doc(const char *call, const char *summary)
{
    char *doc = NULL, text[512], dflt[64], allowed[160];
    size_t len = 0;
    FILE *f = open_memstream(&doc, &len);

    if (!f)
        return NULL;
    fprintf(f, "%s, *", call); /* the text signature: "server(sock, app" */
    for (int i = 0; i < SRV_NOPTIONS; i++) {
        srv_opt_default_text(&srv_option_table[i], dflt, sizeof dflt, 0);
        fprintf(f, ", %s=%s", srv_option_table[i].name, dflt);
    }
    fprintf(f, ")\n--\n\n%s\n\nOptions (keyword-only; libgreen.wsgi.options() "
            "lists them for tools):\n", summary);
    for (int i = 0; i < SRV_NOPTIONS; i++) {
        const struct srv_option *o = &srv_option_table[i];
        srv_opt_default_text(o, dflt, sizeof dflt, 1);
        srv_opt_allowed(o, allowed, sizeof allowed);
        snprintf(text, sizeof text, "%s. Default: %s. Allowed: %s.", o->help, dflt,
                 allowed);
        fprintf(f, "\n  %s\n", o->name);
        srv_doc_wrap(f, "      ", text, 76);
    }
    if (fclose(f) != 0) {
        free(doc);
        return NULL;
    }
    return doc;
}

/* ---- libgreen.wsgi.options() --------------------------------------------- */

/* The Python value a caller passes to get the default. */
static PyObject *srv_opt_default_value(const struct srv_option *o)
{
    switch (o->kind) {
    case SRV_BOOL:
        return PyBool_FromLong(o->dflt != 0);
    case SRV_BOOL_SECONDS:
        return Py_NewRef(Py_True);
    case SRV_SIZE:
    case SRV_SIZE_OR_NONE:
        if (o->kind == SRV_SIZE_OR_NONE && o->dflt == 0)
            return Py_NewRef(Py_None);
        return PyLong_FromDouble(o->dflt);
    case SRV_DICT:
        return Py_NewRef(Py_None);
    default:
        return PyFloat_FromDouble(o->dflt);
    }
}

/* min or max as Python sees it: int for sizes, float for seconds. */
static PyObject *srv_opt_bound(const struct srv_option *o, double v)
{
    if (o->kind == SRV_BOOL || o->kind == SRV_DICT || isinf(v))
        return Py_NewRef(Py_None);
    if (o->kind == SRV_SIZE || o->kind == SRV_SIZE_OR_NONE)
        return PyLong_FromDouble(v);
    return PyFloat_FromDouble(v);
}

static PyObject *srv_opt_dict(const struct srv_option *o)
{
    char dflt[64], allowed[160];

    srv_opt_default_text(o, dflt, sizeof dflt, 1);
    srv_opt_allowed(o, allowed, sizeof allowed);
    return Py_BuildValue("{s:s,s:s,s:N,s:s,s:N,s:N,s:s,s:s,s:s,s:z,s:s}",
                         "name", o->name, "kind", srv_kind_names[o->kind],
                         "default", srv_opt_default_value(o),
                         "default_text", dflt,
                         "min", srv_opt_bound(o, o->min),
                         "max", srv_opt_bound(o, o->max),
                         "allowed", allowed, "field", o->field,
                         "flag", o->flag, "env", o->env, "help", o->help);
}

PyObject *srv_options_list(PyObject *self, PyObject *unused)
{
    PyObject *list = PyList_New(SRV_NOPTIONS);

    for (int i = 0; list && i < SRV_NOPTIONS; i++) {
        PyObject *d = srv_opt_dict(&srv_option_table[i]);
        if (!d)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, i, d);
    }
    return list;
}
