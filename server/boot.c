/* server/boot.c - how `import libgreen` comes to work under the preload.
 *
 * Part of libgreen.so, and so free of any Python symbol (hard rule 13).
 * Its constructor looks for PyImport_AppendInittab in the process; in a
 * program that is not Python the lookup fails and nothing else happens
 * (hard rule 12). In Python it registers "libgreen" as a built-in module
 * before the interpreter starts, so the import works from any directory
 * with nothing installed. The module's init function, run at import time,
 * opens libgreen_pyXY.so from the directory libgreen.so was loaded from
 * (XY = the running interpreter's version) and hands over to its
 * PyInit_libgreen. It also exports the hub API table that object uses.
 */
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "server/api.h"

static struct green *srv_api_current(void) { return green_current(); }

static const struct libgreen_api srv_api = {
    .version = LIBGREEN_API_VERSION,
    .size = sizeof(struct libgreen_api),
    .current = srv_api_current,
    .hub = green_hub,
    .hub_run = green_hub_run,
    .hub_poke = green_hub_poke,
    .hub_post = green_hub_post,
    .hub_loop = green_hub_loop,
    .spawn = green_spawn,
    .join = green_join,
    .detach = green_detach,
    .yield = green_yield,
    .sleep = green_sleep,
    .id = green_id,
    .get_local = green_get_local,
    .set_local = green_set_local,
    .interrupt = green_interrupt,
    .wait_fd = green_wait_fd,
    .fd_closing = green_fd_closing,
    .wq_wait = green_wq_wait,
    .wq_wake_one = green_wq_wake_one,
    .wq_wake_all = green_wq_wake_all,
    .set_park_hooks = green_set_park_hooks,
    .get_stats = green_get_stats,
    .default_stack_size = green_default_stack_size,
    .hub_run_until = green_hub_run_until,
};

__attribute__((visibility("default"))) const struct libgreen_api *
libgreen_api(void)
{
    return &srv_api;
}

/* Raises ImportError in the running interpreter, found by name. */
static void *srv_boot_fail(const char *msg)
{
    void (*set)(void *, const char *) =
        (void (*)(void *, const char *))dlsym(RTLD_DEFAULT, "PyErr_SetString");
    void **exc = dlsym(RTLD_DEFAULT, "PyExc_ImportError");

    if (set && exc)
        set(*exc, msg);
    else
        fprintf(stderr, "libgreen: %s\n", msg);
    return NULL;
}

static void *srv_boot_init(void)
{
    const char *(*version)(void) =
        (const char *(*)(void))dlsym(RTLD_DEFAULT, "Py_GetVersion");
    void *(*init)(void);
    char path[PATH_MAX + 64], msg[PATH_MAX + 512], *slash;
    unsigned major = 0, minor = 0;
    Dl_info self;
    void *h;

    if (!version || sscanf(version(), "%u.%u", &major, &minor) != 2)
        return srv_boot_fail("libgreen: cannot tell the Python version");
    if (!dladdr((void *)srv_boot_init, &self) || !self.dli_fname)
        return srv_boot_fail("libgreen: cannot find where libgreen.so is");
    snprintf(path, sizeof path, "%s", self.dli_fname);
    slash = strrchr(path, '/');
    snprintf(slash ? slash + 1 : path,
             sizeof path - (size_t)(slash ? slash + 1 - path : 0),
             "libgreen_py%u%u.so", major, minor);
    h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(msg, sizeof msg,
                 "libgreen has no server module for Python %u.%u: %s. "
                 "Build it with 'make' on a machine with this Python's "
                 "headers (python%u.%u-dev), next to libgreen.so",
                 major, minor, dlerror(), major, minor);
        return srv_boot_fail(msg);
    }
    init = (void *(*)(void))dlsym(h, "PyInit_libgreen");
    if (!init)
        return srv_boot_fail("libgreen: the server module has no PyInit_libgreen");
    return init();
}

__attribute__((constructor)) static void srv_boot(void)
{
    int (*append)(const char *, void *(*)(void)) =
        (int (*)(const char *, void *(*)(void)))dlsym(RTLD_DEFAULT,
                                                      "PyImport_AppendInittab");

    if (append)
        append("libgreen", srv_boot_init);
}
