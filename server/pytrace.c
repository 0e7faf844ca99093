/* server/pytrace.c - a green thread's Python stack, written to an fd.
 *
 * Used by the hub's reports (server/debug.c): in a dump, from the hub
 * context with the GIL held and every green thread stopped; in a block
 * warning, from a signal handler that interrupted the green thread
 * itself, halfway through whatever it was doing. So this is faulthandler's
 * way: a read-only walk of the thread state's frame chain, no allocation,
 * no lock, no reference counting, and output with write(2) through
 * syscall() (libgreen's own write() could park). The form is
 * faulthandler's too:
 *
 *   Stack (most recent call first):
 *     File "/srv/app.py", line 12 in wait_for_backend
 *
 * CPython 3.11 and 3.12 export the function faulthandler uses,
 * _Py_DumpTraceback (on Debian's static python3.11 the executable does),
 * which then does the work and stays right for the running interpreter
 * whatever its patch level. Where it is hidden (3.13, some 3.10 builds)
 * the frames are walked here: 3.10's PyFrameObject chain is public; from
 * 3.11 on the _PyInterpreterFrame chain is read through CPython's internal
 * header, as profilers do (this file alone defines Py_BUILD_CORE).
 */
#include <dlfcn.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "server/debug.h"

#if PY_VERSION_HEX >= 0x030B0000
#define Py_BUILD_CORE 1
#pragma GCC diagnostic push /* CPython's own casts, not ours */
#pragma GCC diagnostic ignored "-Wcast-align"
#include "internal/pycore_frame.h"
#pragma GCC diagnostic pop
#define SRV_PT_NEXT(f) ((f)->previous)
#else
#include <frameobject.h>
#define SRV_PT_NEXT(f) ((f)->f_back)
#endif

#define SRV_PT_MAX_DEPTH 100   /* frames, as faulthandler */
#define SRV_PT_MAX_STRING 500  /* characters of a name */

static void (*srv_py_dump_traceback)(int fd, PyThreadState *ts);

void srv_pytrace_init(void)
{
    *(void **)&srv_py_dump_traceback = dlsym(RTLD_DEFAULT, "_Py_DumpTraceback");
}

/* ---- output ------------------------------------------------------------- */

struct srv_pt_out {
    int fd;
    size_t len;
    char buf[512];
};

static void srv_pt_flush(struct srv_pt_out *o)
{
    const char *p = o->buf;

    while (o->len) {
        long w = syscall(SYS_write, o->fd, p, o->len);
        if (w <= 0)
            break;
        p += w;
        o->len -= (size_t)w;
    }
    o->len = 0;
}

static void srv_pt_put(struct srv_pt_out *o, const char *s, size_t n)
{
    while (n--) {
        if (o->len == sizeof o->buf)
            srv_pt_flush(o);
        o->buf[o->len++] = *s++;
    }
}

static void srv_pt_puts(struct srv_pt_out *o, const char *s)
{
    srv_pt_put(o, s, strlen(s));
}

static void srv_pt_hex(struct srv_pt_out *o, const char *prefix, unsigned long v,
                       int digits)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[8];

    srv_pt_puts(o, prefix);
    for (int i = digits - 1; i >= 0; i--, v >>= 4)
        tmp[i] = hex[v & 15];
    srv_pt_put(o, tmp, (size_t)digits);
}

static void srv_pt_decimal(struct srv_pt_out *o, long v)
{
    char tmp[24];
    size_t n = sizeof tmp;

    if (v < 0) {
        srv_pt_puts(o, "???");
        return;
    }
    do
        tmp[--n] = (char)('0' + v % 10);
    while ((v /= 10));
    srv_pt_put(o, tmp + n, sizeof tmp - n);
}

/* A str as faulthandler shows it: ASCII as is, the rest escaped, cut at
 * SRV_PT_MAX_STRING characters. */
static void srv_pt_ascii(struct srv_pt_out *o, PyObject *s)
{
    Py_ssize_t size, i;
    const void *data;
    int kind;

    if (!s || !PyUnicode_Check(s)) {
        srv_pt_puts(o, "???");
        return;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (!PyUnicode_IS_READY(s)) {
        srv_pt_puts(o, "???");
        return;
    }
#endif
    size = PyUnicode_GET_LENGTH(s);
    kind = PyUnicode_KIND(s);
    data = PyUnicode_DATA(s);
    for (i = 0; i < size && i < SRV_PT_MAX_STRING; i++) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, i);
        char c = (char)ch;
        if (ch >= ' ' && ch <= 126)
            srv_pt_put(o, &c, 1);
        else if (ch <= 0xff)
            srv_pt_hex(o, "\\x", ch, 2);
        else if (ch <= 0xffff)
            srv_pt_hex(o, "\\u", ch, 4);
        else
            srv_pt_hex(o, "\\U", ch, 8);
    }
    if (size > SRV_PT_MAX_STRING)
        srv_pt_puts(o, "...");
}

static void srv_pt_frame(struct srv_pt_out *o, PyCodeObject *co, long line)
{
    srv_pt_puts(o, "  File \"");
    srv_pt_ascii(o, co->co_filename);
    srv_pt_puts(o, "\", line ");
    srv_pt_decimal(o, line);
    srv_pt_puts(o, " in ");
    srv_pt_ascii(o, co->co_name);
    srv_pt_puts(o, "\n");
}

/* ---- the walk ------------------------------------------------------------ */

static void srv_pt_walk(struct srv_pt_out *o, PyThreadState *ts)
{
    int depth = 0;

#if PY_VERSION_HEX >= 0x030D0000
    _PyInterpreterFrame *f = ts->current_frame;
#elif PY_VERSION_HEX >= 0x030B0000
    _PyInterpreterFrame *f = ts->cframe ? ts->cframe->current_frame : NULL;
#else
    PyFrameObject *f = ts->frame;
#endif
    for (; f; f = SRV_PT_NEXT(f)) {
#if PY_VERSION_HEX >= 0x030D0000
        PyCodeObject *co;
        if (f->owner == FRAME_OWNED_BY_CSTACK || !PyCode_Check(f->f_executable))
            continue;
        co = (PyCodeObject *)f->f_executable;
        long line = PyUnstable_InterpreterFrame_GetLine(f);
#elif PY_VERSION_HEX >= 0x030C0000
        PyCodeObject *co = f->f_code;
        if (f->owner == FRAME_OWNED_BY_CSTACK)
            continue;
        long line = PyUnstable_InterpreterFrame_GetLine(f);
#elif PY_VERSION_HEX >= 0x030B0000
        PyCodeObject *co = f->f_code;
        /* _PyInterpreterFrame_LASTI, in bytes, without its cast */
        long line = PyCode_Addr2Line(co, (int)((const char *)f->prev_instr -
                                               co->co_code_adaptive));
#else
        PyCodeObject *co = f->f_code;
        long line = f->f_lasti < 0
                        ? co->co_firstlineno
                        : PyCode_Addr2Line(co, f->f_lasti * (int)sizeof(_Py_CODEUNIT));
#endif
        if (depth++ == SRV_PT_MAX_DEPTH) {
            srv_pt_puts(o, "  ...\n");
            return;
        }
        srv_pt_frame(o, co, line);
    }
    if (depth == 0)
        srv_pt_puts(o, "  <no Python frame>\n");
}

void srv_pytrace_write(int fd, PyThreadState *ts)
{
    struct srv_pt_out o;

    if (srv_py_dump_traceback) {
        srv_py_dump_traceback(fd, ts);
        return;
    }
    o.fd = fd;
    o.len = 0;
    srv_pt_puts(&o, "Stack (most recent call first):\n");
    srv_pt_walk(&o, ts);
    srv_pt_flush(&o);
}
