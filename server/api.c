/* server/api.c - the hub, as this object reaches it: the table G.
 *
 * libgreen.so exports its hidden hub functions as one table (hub/api.h,
 * laid out by hub/api.def). Its layout is only known to match ours if
 * both objects come from the same build, so before copying it we compare
 * the build ids the Makefile baked into each (<build dir>/gen/build_id.h).
 * A copied or half-rebuilt pair would otherwise call through the wrong
 * slots and crash far from the cause; here it is an ImportError naming
 * both files and the fix.
 */
#include <dlfcn.h>
#include <string.h>

#include "build_id.h"
#include "server/py.h"

struct libgreen_hub_api G;

/* The path of the object that holds addr, or a placeholder. */
static const char *srv_api_where(const void *addr)
{
    Dl_info info;

    if (dladdr(addr, &info) && info.dli_fname && *info.dli_fname)
        return info.dli_fname;
    return "(unknown path)";
}

int srv_api_init(void)
{
    const struct libgreen_hub_api *(*get)(void) =
        (const struct libgreen_hub_api *(*)(void))dlsym(RTLD_DEFAULT,
                                                        "libgreen_hub_api");
    const struct libgreen_hub_api *api = get ? get() : NULL;

    if (!api) {
        PyErr_Format(PyExc_ImportError,
                     "libgreen: %s needs the preloaded libgreen.so of the "
                     "same build, and this process has none (or an older "
                     "one); start Python as "
                     "LD_PRELOAD=/path/to/build/libgreen.so python3 app.py",
                     srv_api_where((void *)srv_api_init));
        return -1;
    }
    if (strcmp(api->build_id, LIBGREEN_BUILD_ID) != 0) {
        PyErr_Format(PyExc_ImportError,
                     "libgreen: %s is build %s but %s is build %s. Rebuild "
                     "with make; libgreen.so and libgreen_pyXY.so must come "
                     "from the same build",
                     srv_api_where((void *)get), api->build_id,
                     srv_api_where((void *)srv_api_init), LIBGREEN_BUILD_ID);
        return -1;
    }
    G = *api;
    return 0;
}
