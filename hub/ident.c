/* hub/ident.c - thread identities for green threads (hard rule 11).
 *
 * Python tells threads apart by pthread_self(): RLock owners,
 * threading.get_ident(), current_thread(), sys._current_frames(). Every
 * green thread on an OS thread shares that OS thread's pthread_t, so
 * without help one green thread could enter an RLock another one holds.
 * Each green thread that asks therefore gets an id of its own:
 *
 *     0xFFFF << 48 | hub index << 32 | slot
 *
 * No real pthread_t looks like that (they are user-space addresses), so
 * the preload can map any such id back to the real thread of its hub for
 * the libc calls that take a pthread_t. Slots are recycled when a green
 * thread ends, lowest first: the number of distinct ids a process ever
 * sees is bounded by how many green threads were alive at once, and so is
 * whatever Python keeps per id (threading's dummy Thread objects).
 *
 * After fork() none of the parent's hubs runs in the child (hard rule 6),
 * but their indexes stay taken, so the child's own hubs get new ones and
 * no identity ever stands for two threads of one process. Those of the
 * forking OS thread's hubs still map to it: when a green thread forked,
 * the child's main context keeps that thread's identity (preload/thread.c).
 * The others map to no thread: ESRCH to pthread_kill.
 */
#include <pthread.h>
#include <stdlib.h>

#include "hub/hub_internal.h"

#define HUB_MAX_IDENT_HUBS 4096

static pthread_t hub_ident_threads[HUB_MAX_IDENT_HUBS];
static struct hub *hub_ident_hubs[HUB_MAX_IDENT_HUBS];
static pthread_mutex_t hub_ident_lock = PTHREAD_MUTEX_INITIALIZER;

/* The real pthread_t behind self, what pthread_self() gave outside any
 * green thread: libc's own, or in the main context of a fork child the
 * green identity it kept (preload/thread.c), which maps to this thread.
 * Lock held. */
static pthread_t hub_ident_unwrap_locked(uintptr_t self)
{
    unsigned idx = (unsigned)((self >> 32) & 0xFFFF);

    if (!green_ident_is_ours(self))
        return (pthread_t)self;
    return idx < HUB_MAX_IDENT_HUBS ? hub_ident_threads[idx] : 0;
}

/* Gives hub an index (or none if all are taken: its green threads then
 * share the OS thread's identity, as without libgreen). Called where the
 * hub is made, in the hub context. */
void hub_ident_register(struct hub *hub)
{
    uintptr_t self = (uintptr_t)pthread_self();

    pthread_mutex_lock(&hub_ident_lock);
    hub->thread = hub_ident_unwrap_locked(self);
    hub->ident_index = -1;
    for (int i = 0; i < HUB_MAX_IDENT_HUBS; i++) {
        if (!hub_ident_hubs[i]) {
            hub_ident_hubs[i] = hub;
            hub_ident_threads[i] = hub->thread;
            hub->ident_index = i;
            break;
        }
    }
    pthread_mutex_unlock(&hub_ident_lock);
}

void hub_ident_unregister(struct hub *hub)
{
    pthread_mutex_lock(&hub_ident_lock);
    if (hub->ident_index >= 0 && hub_ident_hubs[hub->ident_index] == hub)
        hub_ident_hubs[hub->ident_index] = NULL;
    pthread_mutex_unlock(&hub_ident_lock);
    free(hub->ident_free);
    hub->ident_free = NULL;
}

uintptr_t green_ident(struct green *g)
{
    struct hub *hub = g->hub;

    if (g->ident_slot)
        return GREEN_IDENT_TAG | ((uintptr_t)hub->ident_index << 32) | g->ident_slot;
    if (hub->ident_index < 0)
        return (uintptr_t)hub->thread;
    if (hub->ident_nfree) {
        /* reuse the lowest free slot: keep ids (and Python's per-id
         * objects) few; the free list is kept sorted descending */
        g->ident_slot = hub->ident_free[--hub->ident_nfree];
    } else if (hub->ident_next < 0xFFFFFFFFu) {
        g->ident_slot = ++hub->ident_next;
    } else {
        return (uintptr_t)hub->thread;
    }
    return GREEN_IDENT_TAG | ((uintptr_t)hub->ident_index << 32) | g->ident_slot;
}

/* A finished green thread's slot goes back (hub context). */
void hub_ident_release(struct hub *hub, struct green *g)
{
    uint32_t slot = g->ident_slot;
    size_t i;

    if (!slot)
        return;
    g->ident_slot = 0;
    if (hub->ident_nfree == hub->ident_cap) {
        size_t cap = hub->ident_cap ? hub->ident_cap * 2 : 64;
        uint32_t *p = realloc(hub->ident_free, cap * sizeof *p);
        if (!p)
            return; /* the slot is lost; ids stay unique */
        hub->ident_free = p;
        hub->ident_cap = cap;
    }
    /* insert keeping descending order, so the top is the lowest slot */
    for (i = hub->ident_nfree; i > 0 && hub->ident_free[i - 1] < slot; i--)
        hub->ident_free[i] = hub->ident_free[i - 1];
    hub->ident_free[i] = slot;
    hub->ident_nfree++;
}

uintptr_t green_ident_real(uintptr_t id)
{
    unsigned idx = (unsigned)((id >> 32) & 0xFFFF);
    uintptr_t real = 0;

    if (!green_ident_is_ours(id) || idx >= HUB_MAX_IDENT_HUBS)
        return 0;
    pthread_mutex_lock(&hub_ident_lock);
    if (hub_ident_hubs[idx])
        real = (uintptr_t)hub_ident_threads[idx];
    pthread_mutex_unlock(&hub_ident_lock);
    return real;
}

/* Calls fn on every registered hub, under the registry's lock (so none
 * is freed meanwhile): the watchdog thread's view of the hubs. */
void hub_ident_each(void (*fn)(struct hub *hub, void *arg), void *arg)
{
    pthread_mutex_lock(&hub_ident_lock);
    for (int i = 0; i < HUB_MAX_IDENT_HUBS; i++)
        if (hub_ident_hubs[i])
            fn(hub_ident_hubs[i], arg);
    pthread_mutex_unlock(&hub_ident_lock);
}

/* ---- fork ------------------------------------------------------------- */

/* Called from hub.c's pthread_atfork handlers: the forking thread holds
 * the lock across fork(), so the child's copy of the table is whole. */
void hub_ident_atfork_prepare(void) { pthread_mutex_lock(&hub_ident_lock); }
void hub_ident_atfork_parent(void) { pthread_mutex_unlock(&hub_ident_lock); }

/* In the child, after hub_tls_current is reset (pthread_self is not a
 * green thread's here). The forking thread still holds the lock. */
void hub_ident_atfork_child(void)
{
    pthread_t self = hub_ident_unwrap_locked((uintptr_t)pthread_self());

    pthread_mutex_init(&hub_ident_lock, NULL);
    for (int i = 0; i < HUB_MAX_IDENT_HUBS; i++)
        if (hub_ident_hubs[i] && hub_ident_threads[i] != self)
            hub_ident_threads[i] = 0; /* taken, and no thread behind it */
}
