/* hub/mainrole.c - the main program's continuation (docs/DESIGN.md,
 * "The main thread under libgreen").
 *
 * While the main context of an OS thread waits for a green thread G (the
 * server's GreenThread.wait()), G carries on the main program: it holds
 * the "main role". pthread_self() in G is then what the OS thread's main
 * context gets (preload/thread.c asks green_is_main), and a signal whose
 * handler was installed without SA_RESTART ends G's interruptible park
 * with EINTR, as the kernel would end the main program's blocking call.
 * One green thread in the process holds the role at a time; the holder
 * before it comes back when the wait ends (green_set_main gives it).
 * Only a green thread that has not yet asked for its own identity can
 * take the role: one that has may own RLocks under it, and must keep it.
 *
 * Signals arrive on any OS thread, in async-signal context: the preload's
 * trampoline (preload/signal.c) calls green_signal_note, which only sets
 * a flag and sends an ev_async to the holder's hub (both async-signal
 * safe). The watcher's callback, in that hub's context, does the rest.
 * The watcher runs only while a holder exists and never keeps the loop
 * waiting on its own.
 */
#include <pthread.h>
#include <signal.h>

#include "hub/hub_internal.h"

static struct green *hub_main_green;  /* the holder, or NULL */
static struct hub *hub_main_hub;      /* its hub, read by signal handlers */
static ev_async hub_main_sig;         /* active on hub_main_hub's loop */
static int hub_main_sig_pending;      /* set by handlers, taken by the cb */

static void hub_main_sig_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    struct green *g = hub_main_green;

    (void)loop;
    (void)w;
    (void)revents;
    if (__atomic_exchange_n(&hub_main_sig_pending, 0, __ATOMIC_ACQ_REL) && g)
        green_interrupt(g); /* a no-op unless parked interruptibly */
}

static void hub_main_watch(struct hub *hub, int on)
{
    if (on) {
        ev_async_init(&hub_main_sig, hub_main_sig_cb);
        ev_async_start(hub->loop, &hub_main_sig);
        ev_unref(hub->loop); /* no reason on its own to keep waiting */
        __atomic_store_n(&hub_main_hub, hub, __ATOMIC_RELEASE);
    } else {
        __atomic_store_n(&hub_main_hub, NULL, __ATOMIC_RELEASE);
        ev_ref(hub->loop);
        ev_async_stop(hub->loop, &hub_main_sig);
    }
}

/* After fork() no hub of the parent runs (hard rule 6): forget the role,
 * or a signal in the child would poke the parent's loop. */
static void hub_main_atfork_child(void)
{
    hub_main_green = NULL;
    hub_main_hub = NULL;
    hub_main_sig_pending = 0;
}

static void hub_main_atfork_register(void)
{
    pthread_atfork(NULL, NULL, hub_main_atfork_child);
}

int green_set_main(struct green *g, struct green **prev)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    struct hub *hub;

    if (prev)
        *prev = hub_main_green;
    if (g && g->ident_slot)
        g = NULL; /* its identity is in use: it stays its own thread */
    hub = g ? g->hub : NULL;
    pthread_once(&once, hub_main_atfork_register);
    if (hub != hub_main_hub) {
        if (hub_main_hub)
            hub_main_watch(hub_main_hub, 0);
        if (hub)
            hub_main_watch(hub, 1);
    }
    __atomic_store_n(&hub_main_green, g, __ATOMIC_RELEASE);
    return g != NULL;
}

int green_is_main(const struct green *g)
{
    return g == __atomic_load_n(&hub_main_green, __ATOMIC_RELAXED);
}

/* A holder that finishes before the wait ends gives the role up, so its
 * memory, reused by a later spawn, is nobody's role (hub.c, hub context). */
void hub_main_release(struct green *g)
{
    if (g == hub_main_green)
        __atomic_store_n(&hub_main_green, NULL, __ATOMIC_RELEASE);
}

void green_signal_note(void)
{
    struct hub *hub = __atomic_load_n(&hub_main_hub, __ATOMIC_ACQUIRE);

    if (!hub)
        return;
    __atomic_store_n(&hub_main_sig_pending, 1, __ATOMIC_RELEASE);
    ev_async_send(hub->loop, &hub_main_sig);
}
