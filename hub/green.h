/* hub/green.h - the public API of the hub: green threads on a libev loop.
 *
 * One hub per OS thread, created on first use. A hub owns a libev loop, a
 * run queue and the green threads spawned on that OS thread. Green threads
 * are cooperative: one runs at a time per hub, and it runs until it parks
 * (waits for an fd, a timer, a wait queue), yields or returns.
 *
 * The OS thread's own stack is the "hub context": it runs the scheduler
 * (green_hub_run) and libev callbacks, and it is never a green thread.
 * green_current() is NULL there and on every OS thread without a hub.
 *
 * Conventions: functions return 0 or a count on success and -1 with errno
 * on failure, and leave errno alone on success. "Switches" marks a function
 * that may park the caller and run other green threads before it returns.
 * Times are in seconds (double); a negative timeout means "no deadline".
 * This layer knows nothing of Python or HTTP. The functions are hidden in
 * libgreen.so; objects it loads later (the server) call the ones listed
 * in hub/api.def through a table.
 */
#ifndef LIBGREEN_HUB_GREEN_H
#define LIBGREEN_HUB_GREEN_H

#include <stddef.h>
#include <stdint.h>

#define GREEN_API __attribute__((visibility("hidden")))

struct green;
struct hub;

typedef void (*green_fn)(void *arg);

/* The green thread running on this OS thread, or NULL in the hub context
 * and on OS threads without a hub. A single TLS load: the interposed calls
 * test it first, so it must stay this cheap. */
extern __thread struct green *hub_tls_current
    __attribute__((tls_model("initial-exec"), visibility("hidden")));
static inline struct green *green_current(void) { return hub_tls_current; }

/* ---- hubs ------------------------------------------------------------- */

/* The hub of the calling OS thread, created on first call (libev loop,
 * cross-thread wake-up, alternate signal stack for overflow reports).
 * Returns NULL with errno (ENOMEM, EMFILE) if it cannot be created. */
GREEN_API struct hub *green_hub(void);

/* The calling OS thread's hub if it has one, else NULL. Never creates. */
GREEN_API struct hub *green_hub_peek(void);

/* Runs the scheduler in the hub context until done(arg) returns nonzero:
 * runs ready green threads, then waits for events. done is checked after
 * every round. Must be called outside any green thread (EPERM otherwise).
 * Returns 0, or -1 with errno. Switches. */
GREEN_API int green_hub_run(int (*done)(void *arg), void *arg);

/* green_hub_run with a deadline and a tick: runs the scheduler until
 * done(arg) returns nonzero or timeout seconds pass (timeout < 0: no
 * deadline, and then done must not be NULL). If tick is not NULL, it is
 * called as tick(arg) in the hub context every period seconds, and done
 * is checked right after; the tick alone never keeps the hub waiting (a
 * hub with nothing else armed still fails with EDEADLK). The server uses
 * the tick to run Python's signal handlers. Returns 0 when done, -1/
 * ETIMEDOUT when the deadline came first, -1/EINVAL for no done and no
 * deadline (or period <= 0 with a tick), else -1 with errno as
 * green_hub_run. Switches. */
GREEN_API int green_hub_run_until(int (*done)(void *arg), void *arg,
                                  double timeout, void (*tick)(void *arg),
                                  double period);

/* Asks a running green_hub_run of this hub to check done() again soon,
 * even if no event arrives. Safe from any OS thread and from async-signal
 * context (it is ev_async_send). */
GREEN_API void green_hub_poke(struct hub *hub);

/* Runs fn(arg) in the hub context of hub, soon, from any OS thread. The
 * only way to touch another OS thread's hub. Returns -1/ENOMEM on failure. */
GREEN_API int green_hub_post(struct hub *hub, void (*fn)(void *), void *arg);

/* The libev loop of a hub, for layers that add their own watchers (the
 * server's listening socket). Watchers belong to the hub's OS thread. */
GREEN_API struct ev_loop *green_hub_loop(struct hub *hub);

/* ---- green threads ---------------------------------------------------- */

struct green_attr {
    size_t stack_size;   /* bytes, 0 = green_default_stack_size() */
    const char *name;    /* shown in overflow reports; copied, may be NULL */
};

/* Default stack size: LIBGREEN_STACK_SIZE (bytes, or with k/m suffix) if
 * set and valid, else GREEN_DEFAULT_STACK. Read once. */
#define GREEN_DEFAULT_STACK (1024 * 1024)
#define GREEN_MIN_STACK (64 * 1024)
GREEN_API size_t green_default_stack_size(void);

/* Creates a green thread on the calling OS thread's hub that will run
 * fn(arg). It is queued, not started: it first runs when the spawner parks,
 * yields or enters green_hub_run. attr may be NULL. Returns NULL with errno
 * ENOMEM (no stack) or EINVAL (stack size out of range). Does not switch.
 * The handle stays valid until green_join or green_detach is called. */
GREEN_API struct green *green_spawn(green_fn fn, void *arg,
                                    const struct green_attr *attr);

/* Waits until g has returned, then releases it. From a green thread it
 * parks; from the hub context it runs the scheduler until g finishes.
 * Returns 0, -1/EDEADLK if g is the caller, -1/EINVAL if g was already
 * joined or detached, -1/ETIMEDOUT after timeout seconds (g stays joinable).
 * Switches. */
GREEN_API int green_join(struct green *g, double timeout);

/* Releases g without waiting: it is freed when it returns. */
GREEN_API void green_detach(struct green *g);

/* Puts the caller at the back of the run queue. From the hub context it
 * does nothing. Switches. */
GREEN_API void green_yield(void);

/* Sleeps seconds (>= 0) without blocking the OS thread. In a green thread
 * it parks; in the hub context it runs the scheduler until the time is up.
 * Returns 0, or -1/EINTR if green_interrupt woke it early. Switches. */
GREEN_API int green_sleep(double seconds);

/* A small integer that names g in reports (1, 2, ...; unique per process). */
GREEN_API uint64_t green_id(const struct green *g);
GREEN_API const char *green_name(const struct green *g);

/* Wakes g out of whatever park it is in with -1/EINTR. Same OS thread
 * only; a no-op if g is not parked or its park is not interruptible
 * (joins and wait queues are; fd waits and sleeps are). */
GREEN_API void green_interrupt(struct green *g);

/* ---- waiting on fds --------------------------------------------------- */

#define GREEN_READ  0x1
#define GREEN_WRITE 0x2

/* Parks the current green thread until fd is ready for events (GREEN_READ
 * and/or GREEN_WRITE) or timeout seconds pass. Returns the events that
 * fired (>0), or -1 with errno ETIMEDOUT, EBADF (green_fd_closing was
 * called on fd while it waited), EINTR (green_interrupt) or EPERM (not in
 * a green thread). Switches. */
GREEN_API int green_wait_fd(int fd, int events, double timeout);

/* One entry of a multi-fd wait, for poll/select. */
struct green_pollfd {
    int fd;
    int events;     /* GREEN_READ | GREEN_WRITE */
};

/* Parks until any of the n fds is ready or timeout passes. Returns the
 * index of an fd that fired (>= 0) or -1 with errno as green_wait_fd.
 * The caller re-checks all fds itself (poll with timeout 0). Switches. */
GREEN_API int green_wait_fds(const struct green_pollfd *fds, size_t n,
                             double timeout);

/* Tells the hub that fd is about to be closed or replaced (close, dup2):
 * every green thread of this OS thread's hub that waits on fd is woken
 * with EBADF and its watcher stopped, so the number can be reused safely.
 * Cheap when nobody waits on fd. Does not switch. */
GREEN_API void green_fd_closing(int fd);

/* green_fd_closing for every fd in [first, last] (close_range). Costs
 * time in proportion to the fds with waiters, not to the range. */
GREEN_API void green_fd_closing_range(unsigned first, unsigned last);

/* Nonzero in the child of a vfork() made from this OS thread: it shares
 * our memory but is another process, so it must not change hub or fd
 * records. Costs one getpid() system call. */
GREEN_API int green_vforked(void);

/* ---- wait queues ------------------------------------------------------ */

/* A FIFO of parked green threads of one hub. Zero-initialise, or
 * GREEN_WQ_INIT. Not for use across OS threads. */
struct green_wq {
    struct green *head, *tail;
};
#define GREEN_WQ_INIT { 0, 0 }

/* Parks the current green thread on wq until woken or timeout. Returns 0
 * when woken, -1/ETIMEDOUT, -1/EINTR (green_interrupt) or -1/EPERM (not a
 * green thread). Switches. */
GREEN_API int green_wq_wait(struct green_wq *wq, double timeout);

/* Wakes the oldest waiter (returns 1) or nobody (returns 0). The woken
 * thread runs later; the caller keeps running. Does not switch. */
GREEN_API int green_wq_wake_one(struct green_wq *wq);

/* Wakes every waiter; returns how many. Does not switch. */
GREEN_API int green_wq_wake_all(struct green_wq *wq);

/* ---- plain parks, for wake-ups from outside the loop ------------------ */

/* Parks the current green thread until green_unpark(g) or timeout. Unlike
 * the other parks it keeps the hub's scheduler waiting even when no
 * watcher is armed: the wake-up is expected from another OS thread (via
 * green_hub_post) or from a green thread. Returns 0 when unparked,
 * -1/ETIMEDOUT, -1/EINTR (green_interrupt), -1/EPERM outside a green
 * thread. Switches. */
GREEN_API int green_park(double timeout);

/* Ends g's green_park with 0. Same OS thread as g only (from another one,
 * post a function that calls it). A no-op unless g is in green_park.
 * Does not switch. */
GREEN_API void green_unpark(struct green *g);

/* The hub a green thread belongs to (for green_hub_post). */
GREEN_API struct hub *green_hub_of(const struct green *g);

/* ---- identity ------------------------------------------------------- */

/* What pthread_self() returns inside g (hard rule 11): a value no real
 * pthread_t can have (bit 63 set, then the hub's index and a slot), made
 * on first use and recycled when g ends, so a process sees at most as
 * many distinct ids as it ever had green threads alive at once. */
#define GREEN_IDENT_TAG (((uintptr_t)0xFFFF) << 48)
GREEN_API uintptr_t green_ident(struct green *g);

/* The real pthread_t of the OS thread behind a value green_ident gave,
 * so calls that take a pthread_t keep working; returns 0 if id is not one
 * of ours (or its hub is gone). */
GREEN_API uintptr_t green_ident_real(uintptr_t id);

static inline int green_ident_is_ours(uintptr_t id)
{
    return (id >> 48) == 0xFFFF;
}

/* ---- the main program's continuation (hub/mainrole.c) --------------- */

/* Gives g (a green thread of the calling OS thread's hub, or NULL for
 * nobody) the main role while the main context waits for it: inside g,
 * pthread_self() is the main context's own, and green_signal_note ends
 * g's interruptible park with EINTR. A g that already asked for its own
 * identity (green_ident) keeps it: nobody gets the role then. *prev (if
 * not NULL) gets the previous holder, to give the role back when the
 * wait ends. Returns 1 if g holds the role now, else 0. Hub context
 * only. Does not switch. */
GREEN_API int green_set_main(struct green *g, struct green **prev);

/* Nonzero if g holds the main role. Any OS thread. */
GREEN_API int green_is_main(const struct green *g);

/* A signal handler installed without SA_RESTART just ran: the holder of
 * the main role, if parked interruptibly, is woken with EINTR soon, in
 * its hub's context. Async-signal safe, any OS thread. */
GREEN_API void green_signal_note(void);

/* ---- hooks for the layer above --------------------------------------- */

/* Called around every park of a green thread. The server uses them to
 * release the GIL if a C extension made a blocking call while holding it
 * (hard rule 1): before_park returns a token given back to after_park.
 * Set once, before the first spawn; both may be NULL. */
struct green_park_hooks {
    void *(*before_park)(void);
    void (*after_park)(void *token);
};
GREEN_API void green_set_park_hooks(const struct green_park_hooks *hooks);

/* ---- what a park waits for (debugging reports) ----------------------- */

/* The kinds of parks counted per hub (green_stats.parks) and named in
 * traces and dumps. GREEN_CALLS(X) is the one list: X(KIND, "name").
 * OTHER is a park no interposed call named: the server's own waits,
 * libgreen.sleep, GreenThread.wait, joins. */
#define GREEN_CALLS(X)                                                      \
    X(OTHER, "other")                                                       \
    X(READ, "read") X(WRITE, "write") X(RECV, "recv") X(SEND, "send")       \
    X(ACCEPT, "accept") X(CONNECT, "connect") X(POLL, "poll")               \
    X(SLEEP, "sleep") X(SEM, "sem") X(RESOLVER, "resolver")                 \
    X(WAITPID, "waitpid")
enum green_call {
#define GREEN_CALL_ENUM(kind, name) GREEN_CALL_##kind,
    GREEN_CALLS(GREEN_CALL_ENUM)
#undef GREEN_CALL_ENUM
    GREEN_NCALLS
};

/* How a report shows the object a park names (green_note's obj). */
enum green_obj { GREEN_OBJ_NONE, GREEN_OBJ_ADDR, GREEN_OBJ_TEXT, GREEN_OBJ_PID };

/* One per call that may park, static in the layer that parks: its libc
 * name ("recvfrom"), its kind, and what its obj is. */
struct green_callsite {
    const char *name;
    unsigned char kind;      /* enum green_call */
    unsigned char obj;       /* enum green_obj */
};

/* Names the next park of the calling green thread: the interposed call
 * and what it waits on beyond an fd (a semaphore's address, a host name,
 * a pid cast to a pointer). Costs two stores; the park takes the note
 * and clears it, so set it right before parking. */
struct green_note {
    const struct green_callsite *site;
    const void *obj;
};
extern __thread struct green_note hub_tls_note
    __attribute__((tls_model("initial-exec"), visibility("hidden")));
static inline void green_note(const struct green_callsite *site, const void *obj)
{
    hub_tls_note.site = site;
    hub_tls_note.obj = obj;
}

/* ---- debugging hooks for the layer above ------------------------------ */

/* The hub knows nothing of Python or HTTP; dumps, traces and block
 * warnings ask the layer above about a green thread through these, with
 * the pointer it gave green_set_info (NULL: nothing to say).
 *
 *  enter/leave   around a dump, in the hub context: take what reading
 *                every green thread needs (the server takes the GIL).
 *  describe      what g is doing, one line, into buf (at most len bytes,
 *                no newline); returns the length. Must be async-signal-
 *                safe: it also runs in a signal handler and in a green
 *                thread just woken from a park.
 *  traceback     writes g's interpreter stack to fd. in_signal: called
 *                from a signal handler interrupting g itself, which may be
 *                halfway through changing it: read only, no locks, no
 *                allocation (as faulthandler does).
 *  stats         appends ',"key":value' JSON members to the stats line
 *                (hub context); returns the length.
 * Any of them may be NULL. Set once, before the first spawn. */
struct green_debug_hooks {
    void *(*enter)(void);
    void (*leave)(void *token);
    size_t (*describe)(void *info, char *buf, size_t len);
    void (*traceback)(int fd, void *info, int in_signal);
    size_t (*stats)(char *buf, size_t len);
};
GREEN_API void green_set_debug_hooks(const struct green_debug_hooks *hooks);

/* Attaches the layer above's description of g (given to the hooks; kept
 * until g ends or it is set again; NULL clears). A NULL g does nothing (a
 * fork child's green_current()). Does not switch. */
GREEN_API void green_set_info(struct green *g, void *info);

/* ---- statistics ------------------------------------------------------- */

struct green_stats {
    uint64_t spawned;        /* green threads created on this hub */
    uint64_t live;           /* spawned and not yet finished */
    uint64_t switches;       /* context switches into green threads */
    uint64_t stacks_pooled;  /* stacks kept for reuse */
    uint64_t stack_high_water; /* deepest stack use seen, in bytes; only
                                  measured with LIBGREEN_STACK_STATS=1 */
    uint64_t parked;         /* live threads parked now */
    uint64_t ready;          /* live threads in the run queue now */
    uint64_t parks[GREEN_NCALLS]; /* parks so far, per enum green_call */
};
GREEN_API void green_get_stats(struct green_stats *out);

#endif
