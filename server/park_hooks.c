/* server/park_hooks.c - the park hooks: a green thread never parks
 * holding the GIL (hard rule 1).
 *
 * "Does this OS thread hold the GIL?" differs per CPython version. From
 * 3.12 the attached thread state is thread-local, so any attached state
 * means yes. Up to 3.11 the current state is process-wide: it is ours only if
 * it was made on this OS thread (green threads' states are made on the
 * thread that runs the hub, so they carry its id).
 *
 * The hooks use it: a C extension that makes a blocking call while
 * holding the GIL gets the GIL released around the park and re-taken
 * after, so the other green threads can run Python meanwhile.
 */
#include <pthread.h>

#include "server/py.h"

static int srv_gil_held(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyThreadState_GetUnchecked() != NULL;
#elif PY_VERSION_HEX >= 0x030C0000
    return _PyThreadState_UncheckedGet() != NULL;
#else
    PyThreadState *ts = _PyThreadState_UncheckedGet();
    return ts && ts->thread_id == (unsigned long)pthread_self();
#endif
}

static void *srv_before_park(void)
{
    if (!srv_gil_held())
        return NULL;
    return PyEval_SaveThread();
}

static void srv_after_park(void *token)
{
    if (token)
        PyEval_RestoreThread(token);
}

static const struct green_park_hooks srv_hooks = {srv_before_park,
                                                  srv_after_park};

void srv_park_hooks_init(void)
{
    G.set_park_hooks(&srv_hooks);
}
