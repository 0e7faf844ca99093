/* preload/real.h - libc's own functions behind the ones we interpose.
 *
 * REAL(name) is the function the next object in the lookup order (libc)
 * exports as name, resolved with dlsym(RTLD_NEXT) in our constructor and,
 * failing that, on first use: another library's constructor may call
 * read() before ours ran. Everything inside libgreen (and libev, whose
 * calls reach our wrappers from the hub context and pass straight through)
 * ends up calling only these, never the wrappers themselves (hard rule 4).
 */
#ifndef LIBGREEN_PRELOAD_REAL_H
#define LIBGREEN_PRELOAD_REAL_H

#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PL_HIDDEN __attribute__((visibility("hidden")))
#define PL_EXPORT __attribute__((visibility("default")))

#define PL_SYM(ret, name, params, args)                                     \
    typedef ret(*pl_##name##_fn) params;                                    \
    extern pl_##name##_fn pl_real_##name PL_HIDDEN;                         \
    PL_HIDDEN pl_##name##_fn pl_resolve_##name(void);
#include "preload/symbols.def"
#undef PL_SYM

#define REAL(name)                                                          \
    (__builtin_expect(pl_real_##name != NULL, 1) ? pl_real_##name           \
                                                 : pl_resolve_##name())

/* Nonzero when LIBGREEN_HOOKS=0 turned every wrapper into a pass-through. */
extern int pl_disabled PL_HIDDEN;

#endif
