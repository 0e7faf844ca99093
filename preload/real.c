/* preload/real.c - resolving libc's functions, once, at load time.
 *
 * The constructor resolves every symbol of symbols.def before main() and
 * reads LIBGREEN_HOOKS. A symbol libc lacks (close_range on an old glibc)
 * resolves to a stub that fails with ENOSYS, as libc itself would if it
 * had the entry point but not the system call.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

__attribute__((constructor(101))) static void pl_real_init(void)
{
    const char *hooks = getenv("LIBGREEN_HOOKS");

#define PL_SYM(ret, name, params, args) pl_resolve_##name();
#include "preload/symbols.def"
#undef PL_SYM
    if (hooks && strcmp(hooks, "0") == 0)
        pl_disabled = 1;
}
