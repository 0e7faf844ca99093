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

/* An entry's default is a number, or a string literal for the string
 * kinds: these pick it apart (a string's number is 0, a number's text
 * is NULL). */
#define SRV_DFLT_NUM(d) _Generic((d), char *: 0.0, default: (d))
#define SRV_DFLT_TEXT(d) _Generic((d), char *: (d), default: (const char *)0)

const struct srv_option srv_option_table[SRV_NOPTIONS] = {
#define SRV_OPTION(name_, kind_, dflt_, min_, max_, field_, flag_, env_, help_) \
    {.name = #name_, .kind = kind_, .dflt = SRV_DFLT_NUM(dflt_),                \
     .dflt_text = SRV_DFLT_TEXT(dflt_), .min = min_, .max = max_,               \
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
#define SRV_CTYPE_SRV_STR const char *
#define SRV_CTYPE_SRV_STR_LIST struct srv_strlist
#define SRV_CTYPE_SRV_CALLABLE PyObject *
#define SRV_OPTION(name_, kind_, dflt_, min_, max_, field_, ...)               \
    _Static_assert(__builtin_types_compatible_p(                               \
                       __typeof__(((struct srv_options *)0)->field_),          \
                       SRV_CTYPE_##kind_),                                     \
                   "option " #name_ ": field " #field_ " is not a " #kind_);   \
    _Static_assert(SRV_DFLT_NUM(dflt_) >= (min_) &&                            \
                   SRV_DFLT_NUM(dflt_) <= (max_),                              \
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
    [SRV_STR] = "str",
    [SRV_STR_LIST] = "str_or_list",
    [SRV_CALLABLE] = "callable",
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
    case SRV_STR:
        snprintf(buf, n, o->dflt_text ? "a str; None: the default" : "a str, or None");
        break;
    case SRV_STR_LIST:
        snprintf(buf, n, "a str of comma-separated items, or a list of str%s",
                 o->dflt_text ? "; None: the default" : ", or None");
        break;
    case SRV_CALLABLE:
        snprintf(buf, n, "a callable, or None");
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
    case SRV_CALLABLE:
        snprintf(buf, n, "%s", o->dflt ? num : "None");
        break;
    case SRV_STR:
    case SRV_STR_LIST:
        if (o->dflt_text)
            snprintf(buf, n, "'%s'", o->dflt_text);
        else
            snprintf(buf, n, "None");
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

/* The UTF-8 text of str v in *out (valid while v lives), or -1 with an
 * error naming option o: a NUL would end the text early, and a lone
 * surrogate has no UTF-8. */
static int srv_opt_text(const struct srv_option *o, PyObject *v, const char **out)
{
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(v, &n);

    if (!s) {
        PyErr_Clear();
        return srv_opt_fail(PyExc_ValueError, o, v, "is not valid text");
    }
    if (strlen(s) != (size_t)n)
        return srv_opt_fail(PyExc_ValueError, o, v, "contains a NUL character");
    *out = s;
    return 0;
}

static int srv_opt_str(const struct srv_option *o, PyObject *v, const char **out)
{
    if (!v || v == Py_None) {
        *out = o->dflt_text;
        return 0;
    }
    if (!PyUnicode_Check(v))
        return srv_opt_wrong_type(o, v);
    return srv_opt_text(o, v, out);
}

/* A str stays text (its consumer splits it at commas); a list or tuple
 * is kept as it is once every item is known to be a str. */
static int srv_opt_str_list(const struct srv_option *o, PyObject *v,
                            struct srv_strlist *out)
{
    out->text = NULL;
    out->seq = NULL;
    if (!v || v == Py_None || PyUnicode_Check(v))
        return srv_opt_str(o, v, &out->text);
    if (!PyList_Check(v) && !PyTuple_Check(v))
        return srv_opt_wrong_type(o, v);
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(v); i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(v, i);
        const char *unused;
        if (!PyUnicode_Check(item))
            return srv_opt_fail(PyExc_TypeError, o, v, "holds an item that is not a str");
        if (srv_opt_text(o, item, &unused) < 0)
            return -1;
    }
    out->seq = v;
    return 0;
}

int srv_option_invalid(int i, const char *value, const char *why)
{
    PyObject *v = PyUnicode_DecodeUTF8(value, (Py_ssize_t)strlen(value), "replace");

    if (!v)
        return -1;
    PyErr_Format(PyExc_ValueError, "libgreen.wsgi.server(): %s=%.200R %s",
                 srv_option_table[i].name, v, why);
    Py_DECREF(v);
    return -1;
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
    case SRV_STR:
        return srv_opt_str(o, v, field);
    case SRV_STR_LIST:
        return srv_opt_str_list(o, v, field);
    case SRV_CALLABLE:
        if (v == Py_None)
            v = NULL;
        if (v && !PyCallable_Check(v))
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
    case SRV_CALLABLE:
        return Py_NewRef(Py_None);
    case SRV_STR:
    case SRV_STR_LIST:
        if (!o->dflt_text)
            return Py_NewRef(Py_None);
        return PyUnicode_FromString(o->dflt_text);
    default:
        return PyFloat_FromDouble(o->dflt);
    }
}

/* min or max as Python sees it: int for sizes, float for seconds. */
static PyObject *srv_opt_bound(const struct srv_option *o, double v)
{
    int number = o->kind == SRV_SECONDS || o->kind == SRV_TIMEOUT ||
                 o->kind == SRV_BOOL_SECONDS || o->kind == SRV_SIZE ||
                 o->kind == SRV_SIZE_OR_NONE;

    if (!number || isinf(v))
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
    return Py_BuildValue("{s:s,s:s,s:N,s:s,s:N,s:N,s:s,s:s,s:z,s:z,s:s}",
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
