/* preload/real.c - resolving libc's functions, once, at load time.
 *
 * The constructor resolves every symbol of symbols.def before main() and
 * reads LIBGREEN_HOOKS. A symbol libc lacks (close_range on an old glibc)
 * resolves to a stub that fails with ENOSYS, as libc itself would if it
 * had the entry point but not the system call.
 *
 * LIBGREEN_HOOKS=off (or 0, false, no) makes every wrapper pass straight
 * through, so a fault can be told apart from green switching: the hub
 * and the bundled server still run (the server waits on the hub
 * directly), but each blocking call of the app blocks its whole worker.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hub/report.h"
#include "preload/real.h"

int pl_disabled;

static long pl_enosys(void)
{
    errno = ENOSYS;
    return -1;
}

#define PL_SYM(ret, name, params, args)                                     \
    pl_##name##_fn pl_real_##name;                                          \
    pl_##name##_fn pl_resolve_##name(void)                                  \
    {                                                                       \
        void *p = dlsym(RTLD_NEXT, #name);                                  \
        if (!p)                                                             \
            p = (void *)pl_enosys;                                          \
        __atomic_store_n((void **)&pl_real_##name, p, __ATOMIC_RELEASE);    \
        return (pl_##name##_fn)p;                                           \
    }
#include "preload/symbols.def"
#undef PL_SYM

/* 1 if LIBGREEN_HOOKS turns the wrappers off. */
static int pl_hooks_off(const char *v)
{
    static const char *const off[] = {"0", "off", "false", "no"};
    static const char *const on[] = {"", "1", "on", "true", "yes"};
    static const char bad[] = "libgreen: LIBGREEN_HOOKS is not understood "
                              "(use on or off); the hooks stay on\n";

    if (!v)
        return 0;
    for (size_t i = 0; i < sizeof off / sizeof *off; i++)
        if (strcasecmp(v, off[i]) == 0)
            return 1;
    for (size_t i = 0; i < sizeof on / sizeof *on; i++)
        if (strcasecmp(v, on[i]) == 0)
            return 0;
    hub_report_write(2, bad, sizeof bad - 1);
    return 0;
}

__attribute__((constructor(101))) static void pl_real_init(void)
{
#define PL_SYM(ret, name, params, args) pl_resolve_##name();
#include "preload/symbols.def"
#undef PL_SYM
    pl_disabled = pl_hooks_off(getenv("LIBGREEN_HOOKS"));
}
