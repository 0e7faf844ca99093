/* hub/unwind.c - C stacks in reports, with Debian's libunwind.
 *
 * libunwind is opened with dlopen(RTLD_LOCAL) the first time a report may
 * need it (hub_unwind_load: from the hub context before a dump, or when
 * the watchdog starts - never in a signal handler), not linked. libgreen.so
 * is preloaded into every program a Python app starts (hard rule 12);
 * linked, libunwind.so.8 and liblzma would load into each of them (about
 * 25,000 more cycles in the dynamic loader per process start) and put
 * libunwind's unversioned _Unwind_* functions into every program's global
 * scope, ahead of libgcc_s for any unversioned reference. Opened locally,
 * only a process that asks for a C stack pays, and nothing else sees it.
 *
 * A parked or ready green thread stopped in hub_ctx_switch, which saved
 * its callee-saved registers on its own stack (hub/ctx.h). A
 * unw_context_t filled with those, the stack pointer past them and the
 * return address into hub_switch_out, unwinds as if hub_ctx_switch had
 * just returned; on the ucontext fallback the saved ucontext_t is a
 * unw_context_t already. The walk ends at hub_ctx_trampoline, whose CFI
 * marks the end of the stack. In a signal handler the kernel's
 * ucontext_t of the interrupted code is unwound (UNW_INIT_SIGNAL_FRAME);
 * unw_init_local2, unw_step and unw_get_proc_name are async-signal-safe
 * for local unwinding (libunwind(3)).
 */
#include <dlfcn.h>
#include <pthread.h>
#include <string.h>
#include <ucontext.h>

#include "hub/hub_internal.h"

#if defined(__x86_64__) && __has_include(<libunwind.h>)
#define UNW_LOCAL_ONLY
#include <libunwind.h>
#define HUB_UNWIND 1
#else
#define HUB_UNWIND 0
#endif

#define HUB_UNWIND_MAX_FRAMES 64
#define HUB_UNWIND_SONAME "libunwind.so.8"

#if HUB_UNWIND

/* libunwind's names are macros (unw_step is _ULx86_64_step): dlsym the
 * expansion. */
#define HUB_STR_(x) #x
#define HUB_STR(x) HUB_STR_(x)

static struct {
    int (*init_local2)(unw_cursor_t *, unw_context_t *, int);
    int (*step)(unw_cursor_t *);
    int (*get_reg)(unw_cursor_t *, unw_regnum_t, unw_word_t *);
    int (*get_proc_name)(unw_cursor_t *, char *, size_t, unw_word_t *);
    int (*get_proc_info)(unw_cursor_t *, unw_proc_info_t *);
} hub_unw;
static int hub_unw_state; /* 0: not tried, 1: loaded, -1: missing */
static pthread_mutex_t hub_unw_lock = PTHREAD_MUTEX_INITIALIZER;

int hub_unwind_load(void)
{
    void *h;

    pthread_mutex_lock(&hub_unw_lock);
    if (hub_unw_state == 0) {
        int state = -1;
        h = dlopen(HUB_UNWIND_SONAME, RTLD_NOW | RTLD_LOCAL);
        if (h) {
            *(void **)&hub_unw.init_local2 = dlsym(h, HUB_STR(unw_init_local2));
            *(void **)&hub_unw.step = dlsym(h, HUB_STR(unw_step));
            *(void **)&hub_unw.get_reg = dlsym(h, HUB_STR(unw_get_reg));
            *(void **)&hub_unw.get_proc_name = dlsym(h, HUB_STR(unw_get_proc_name));
            *(void **)&hub_unw.get_proc_info = dlsym(h, HUB_STR(unw_get_proc_info));
            if (hub_unw.init_local2 && hub_unw.step && hub_unw.get_reg &&
                hub_unw.get_proc_name && hub_unw.get_proc_info)
                state = 1;
        }
        hub_unw_state = state;
    }
    pthread_mutex_unlock(&hub_unw_lock);
    return hub_unw_state > 0 ? 0 : -1;
}

/* A fork while another thread was loading libunwind: the child's lock is
 * free, and the child tries again (the state is set only once known). */
void hub_unwind_atfork_child(void)
{
    pthread_mutex_init(&hub_unw_lock, NULL);
}

/* The file name part of the object that holds ip (not in signal
 * handlers: dladdr takes the loader's lock). */
static void hub_unwind_object(struct hub_report *r, unw_word_t ip)
{
    Dl_info info;
    const char *slash;

    if (!dladdr((void *)ip, &info) || !info.dli_fname || !*info.dli_fname)
        return;
    slash = strrchr(info.dli_fname, '/');
    hub_report_str(r, " (");
    hub_report_str(r, slash ? slash + 1 : info.dli_fname);
    hub_report_str(r, ")");
}

/* The name of the function that holds the cursor's ip, or 0. In a
 * stripped object (Debian's python3) libunwind offers the nearest
 * exported symbol below ip, which may belong to another function: the
 * name is kept only if it starts where the unwind tables say the
 * function starts. */
static int hub_unwind_name(unw_cursor_t *cur, unw_word_t ip, char *name,
                           size_t len, unw_word_t *off)
{
    unw_proc_info_t pi;
    int rc;

    name[0] = 0;
    rc = hub_unw.get_proc_name(cur, name, len, off);
    name[len - 1] = 0; /* -UNW_ENOMEM: cut, still a name */
    if ((rc != 0 && rc != -UNW_ENOMEM) || !name[0])
        return 0;
    if (hub_unw.get_proc_info(cur, &pi) == 0 && pi.start_ip &&
        ip - *off != pi.start_ip)
        return 0;
    return 1;
}

/* "  #3  0x7f3a8c1b2c45 hub_park+0x85 (libgreen.so)" per frame. */
static void hub_unwind_walk(struct hub_report *r, unw_context_t *uc, int flags,
                            int in_signal)
{
    unw_cursor_t cur;
    int i = 0;

    if (hub_unw.init_local2(&cur, uc, flags) < 0) {
        hub_report_str(r, "  (libunwind cannot start from this context)\n");
        return;
    }
    do {
        unw_word_t ip = 0, off = 0;
        char name[160];

        if (hub_unw.get_reg(&cur, UNW_REG_IP, &ip) < 0 || ip == 0)
            break;
        hub_report_str(r, "  #");
        hub_report_u64(r, (uint64_t)i);
        hub_report_str(r, i < 10 ? "   " : "  ");
        hub_report_hex(r, ip);
        if (hub_unwind_name(&cur, ip, name, sizeof name, &off)) {
            hub_report_str(r, " ");
            hub_report_str(r, name);
            hub_report_str(r, "+");
            hub_report_hex(r, off);
        } else {
            hub_report_str(r, " ??");
        }
        if (!in_signal)
            hub_unwind_object(r, ip);
        hub_report_str(r, "\n");
    } while (++i < HUB_UNWIND_MAX_FRAMES && hub_unw.step(&cur) > 0);
}

void hub_unwind_green(struct hub_report *r, struct green *g)
{
    unw_context_t uc;

    if (hub_unwind_load() < 0) {
        hub_report_str(r, "  (no C stack: " HUB_UNWIND_SONAME " could not "
                          "be loaded; apt-get install libunwind8)\n");
        return;
    }
    memset(&uc, 0, sizeof uc);
#if HUB_CTX_ASM
    {
        /* hub_ctx_switch's frame: control words, r15..r12, rbx, rbp, and
         * the return address; the stack pointer is past all of them. */
        const uint64_t *sp = g->ctx.sp;
        greg_t *gr = uc.uc_mcontext.gregs;
        gr[REG_R15] = (greg_t)sp[1];
        gr[REG_R14] = (greg_t)sp[2];
        gr[REG_R13] = (greg_t)sp[3];
        gr[REG_R12] = (greg_t)sp[4];
        gr[REG_RBX] = (greg_t)sp[5];
        gr[REG_RBP] = (greg_t)sp[6];
        gr[REG_RIP] = (greg_t)sp[7];
        gr[REG_RSP] = (greg_t)(uintptr_t)(sp + 8);
    }
#else
    memcpy(&uc, &g->ctx.uc, sizeof uc);
#endif
    hub_unwind_walk(r, &uc, 0, 0);
}

void hub_unwind_signal(struct hub_report *r, void *ucontext)
{
    if (hub_unw_state <= 0) { /* loaded when the watchdog started */
        hub_report_str(r, "  (no C stack: " HUB_UNWIND_SONAME " could not "
                          "be loaded; apt-get install libunwind8)\n");
        return;
    }
    hub_unwind_walk(r, ucontext, UNW_INIT_SIGNAL_FRAME, 1);
}

#else /* no libunwind here, or not x86-64 */

int hub_unwind_load(void) { return -1; }
void hub_unwind_atfork_child(void) {}

void hub_unwind_green(struct hub_report *r, struct green *g)
{
    (void)g;
    hub_report_str(r, "  (no C stack: libgreen was built without libunwind "
                      "or for another architecture)\n");
}

void hub_unwind_signal(struct hub_report *r, void *ucontext)
{
    (void)ucontext;
    hub_unwind_green(r, NULL);
}

#endif
