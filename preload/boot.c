/* preload/boot.c - how `import libgreen` comes to work under the preload.
 *
 * Part of libgreen.so, and so free of any Python symbol (hard rule 13):
 * every Python function it calls is found by name at run time. Its
 * constructor looks for PyImport_AppendInittab in the process; in a
 * program that is not Python the lookup fails and nothing else happens
 * (hard rule 12). In Python it registers "libgreen" as a built-in module
 * before the interpreter starts, so the import works from any directory
 * with nothing installed. The module's init function, run at import time,
 * opens libgreen_pyXY.so from the directory libgreen.so was loaded from
 * (XY = the running interpreter's version) and hands over to its
 * PyInit_libgreen, which fetches the hub table exported here and checks
 * that both objects come from the same build (server/api.c).
 */
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "build_id.h"
#include "hub/api.h"

/* A line of hub/api.def whose types differ from hub/green.h would make
 * the server call through the wrong prototype: refuse to compile. */
#define GREEN_CALL(ret, name, params)                                       \
    _Static_assert(__builtin_types_compatible_p(__typeof__(green_##name),   \
                                                ret params),                \
                   "hub/api.def: green_" #name " differs from hub/green.h");
#include "hub/api.def"
#undef GREEN_CALL

static const struct libgreen_hub_api pl_hub_api = {
    .build_id = LIBGREEN_BUILD_ID,
#define GREEN_CALL(ret, name, params) .name = green_##name,
#include "hub/api.def"
#undef GREEN_CALL
};

const struct libgreen_hub_api *libgreen_hub_api(void)
{
    return &pl_hub_api;
}

/* Raises ImportError in the running interpreter, found by name. */
static void *pl_boot_fail(const char *msg)
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

static void *pl_boot_init(void)
{
    const char *(*version)(void) =
        (const char *(*)(void))dlsym(RTLD_DEFAULT, "Py_GetVersion");
    void *(*init)(void);
    char path[PATH_MAX + 64], msg[PATH_MAX + 512], *slash;
    unsigned major = 0, minor = 0;
    Dl_info self;
    void *h;

    if (!version || sscanf(version(), "%u.%u", &major, &minor) != 2)
        return pl_boot_fail("libgreen: cannot tell the Python version");
    if (!dladdr((void *)pl_boot_init, &self) || !self.dli_fname)
        return pl_boot_fail("libgreen: cannot find where libgreen.so is");
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
        return pl_boot_fail(msg);
    }
    init = (void *(*)(void))dlsym(h, "PyInit_libgreen");
    if (!init)
        return pl_boot_fail("libgreen: the server module has no PyInit_libgreen");
    return init();
}

__attribute__((constructor)) static void pl_boot(void)
{
    int (*append)(const char *, void *(*)(void)) =
        (int (*)(const char *, void *(*)(void)))dlsym(RTLD_DEFAULT,
                                                      "PyImport_AppendInittab");

    if (append)
        append("libgreen", pl_boot_init);
}
