/* server/api.h - the hub API as libgreen.so hands it to the Python side.
 *
 * The Python-facing server lives in a second object, libgreen_pyXY.so,
 * opened by libgreen.so only inside a Python process (hard rule 13: the
 * preloaded object itself must never name a Python symbol). The hub's
 * functions are hidden inside libgreen.so, so they cross over as this
 * table, fetched once with dlsym(RTLD_DEFAULT, "libgreen_api"). A changed
 * layout bumps LIBGREEN_API_VERSION; the two objects refuse to mix.
 */
#ifndef LIBGREEN_SERVER_API_H
#define LIBGREEN_SERVER_API_H

#include <stddef.h>
#include <stdint.h>

#include "hub/green.h"

#define LIBGREEN_API_VERSION 1

struct libgreen_api {
    int version;
    size_t size; /* sizeof(struct libgreen_api) as libgreen.so knows it */

    struct green *(*current)(void);
    struct hub *(*hub)(void);
    int (*hub_run)(int (*done)(void *), void *arg);
    void (*hub_poke)(struct hub *hub);
    int (*hub_post)(struct hub *hub, void (*fn)(void *), void *arg);
    struct ev_loop *(*hub_loop)(struct hub *hub);

    struct green *(*spawn)(green_fn fn, void *arg, const struct green_attr *attr);
    int (*join)(struct green *g, double timeout);
    void (*detach)(struct green *g);
    void (*yield)(void);
    int (*sleep)(double seconds);
    uint64_t (*id)(const struct green *g);
    void *(*get_local)(const struct green *g);
    void (*set_local)(struct green *g, void *value);
    void (*interrupt)(struct green *g);

    int (*wait_fd)(int fd, int events, double timeout);
    void (*fd_closing)(int fd);

    int (*wq_wait)(struct green_wq *wq, double timeout);
    int (*wq_wake_one)(struct green_wq *wq);
    int (*wq_wake_all)(struct green_wq *wq);

    void (*set_park_hooks)(const struct green_park_hooks *hooks);
    void (*get_stats)(struct green_stats *out);
    size_t (*default_stack_size)(void);
    int (*hub_run_until)(int (*done)(void *), void *arg, double timeout, void (*tick)(void *), double period);
};

/* Exported by libgreen.so; the Python side finds it with dlsym. */
__attribute__((visibility("default"))) const struct libgreen_api *
libgreen_api(void);

#endif
