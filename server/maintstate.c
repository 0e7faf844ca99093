/* server/maintstate.c - on Python 3.13+, CPython's "main thread state"
 * follows the main role (docs/DESIGN.md, "The main thread under
 * libgreen").
 *
 * Python 3.13 no longer flags a signal for the interpreter as a whole: the
 * C-level handler, and _thread.interrupt_main(), set a bit in the eval
 * breaker of one thread state, _PyRuntime.main_tstate, and only the code
 * running on that state stops to run the Python handler. While the main
 * program waits for a green thread G (GreenThread.wait()), G is the main
 * thread, but main_tstate is still the waiting main context's state, which
 * runs no bytecode: a pure-Python loop in G never saw a signal, and
 * interrupt_main() in G raised nothing until G's next blocking call.
 * So while G holds the role, main_tstate is G's state; when the wait ends
 * (or G ends first) it goes back, and a bit set meanwhile goes with it.
 * Pyodide's stack switching does the same, for the same reason.
 *
 * main_tstate sits in the part of _PyRuntimeState that CPython keeps at a
 * fixed place for out-of-process tools, so the 3.13 headers this object
 * is built with describe every 3.13 release. Before 3.13 the flag is the
 * interpreter's and every function here does nothing.
 *
 * Only the main OS thread changes main_tstate, from the main program's
 * waits and from the heir it waits for; other threads and the C signal
 * handler only read it, and a flag they set on the old state while it
 * changes is carried over after the store.
 */
#include <patchlevel.h>
#if PY_VERSION_HEX >= 0x030D0000
#define Py_BUILD_CORE_MODULE 1
#endif
#include <pthread.h>

#include "server/py.h"

#if PY_VERSION_HEX >= 0x030D0000
/* CPython's own inline code there casts in ways our -Wcast-align=strict
 * refuses; it is theirs, built with their flags. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wcast-align"
#include <internal/pycore_ceval.h>
#include <internal/pycore_runtime.h>
#pragma GCC diagnostic pop

/* The green thread holding the role for the innermost wait, and the state
 * main_tstate goes back to if it ends before that wait does. */
static struct green *srv_maints_heir;
static PyThreadState *srv_maints_back;

/* What the main thread has been asked to do and has not done yet. */
#define SRV_MAINTS_BITS (_PY_SIGNALS_PENDING_BIT | _PY_CALLS_TO_DO_BIT)

static void srv_maints_set(PyThreadState *to)
{
    PyThreadState *from = _PyRuntime.main_tstate;
    uintptr_t bits;

    if (!to || to == from)
        return;
    __atomic_store_n(&_PyRuntime.main_tstate, to, __ATOMIC_SEQ_CST);
    bits = __atomic_load_n(&from->eval_breaker, __ATOMIC_SEQ_CST);
    if (bits & SRV_MAINTS_BITS)
        _Py_set_eval_breaker_bit(to, bits & SRV_MAINTS_BITS);
}

/* A fork child has none of the parent's waits; CPython makes the forking
 * state its main_tstate. */
static void srv_maints_atfork_child(void)
{
    srv_maints_heir = NULL;
    srv_maints_back = NULL;
}

static void srv_maints_atfork_register(void)
{
    pthread_atfork(NULL, NULL, srv_maints_atfork_child);
}

void srv_maints_wait_begin(struct srv_maints *m, struct green *heir)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;

    pthread_once(&once, srv_maints_atfork_register);
    m->saved = _PyRuntime.main_tstate;
    m->heir = srv_maints_heir;
    m->back = srv_maints_back;
    srv_maints_heir = heir;
    srv_maints_back = m->saved;
}

void srv_maints_wait_end(struct srv_maints *m)
{
    srv_maints_set(m->saved);
    srv_maints_heir = m->heir;
    srv_maints_back = m->back;
}

void srv_maints_enter(struct green *self, PyThreadState *ts)
{
    if (self && self == srv_maints_heir)
        srv_maints_set(ts);
}

void srv_maints_leave(PyThreadState *ts)
{
    if (_PyRuntime.main_tstate == ts && srv_maints_back)
        srv_maints_set(srv_maints_back);
}

#else /* Python 3.10-3.12: signals are flagged on the interpreter */

void srv_maints_wait_begin(struct srv_maints *m, struct green *heir) {}
void srv_maints_wait_end(struct srv_maints *m) {}
void srv_maints_enter(struct green *self, PyThreadState *ts) {}
void srv_maints_leave(PyThreadState *ts) {}

#endif
