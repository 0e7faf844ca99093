/* hub/ctx.h - the machine context of a green thread, and the switch.
 *
 * This is the one place that chooses how stacks are switched. On x86-64
 * the switch is hub/ctx_x86_64.S: it saves the callee-saved registers,
 * MXCSR and the x87 control word on the old stack, swaps the stack
 * pointer and restores the same set from the new stack - about a dozen
 * instructions and no system call. Everywhere else (or with
 * -DHUB_CTX_UCONTEXT, which the test suite builds once to keep the path
 * alive) it falls back to ucontext, whose swapcontext also saves the
 * signal mask with a system call (about 360 ns a switch on the reference
 * machine, against a few ns for the assembly).
 *
 * A context is made once per green thread run, on a stack the caller
 * owns; entry() must never return (it switches away for the last time).
 */
#ifndef LIBGREEN_HUB_CTX_H
#define LIBGREEN_HUB_CTX_H

#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__) && !defined(HUB_CTX_UCONTEXT)
#define HUB_CTX_ASM 1

struct hub_ctx {
    void *sp;   /* saved stack pointer; the registers sit on that stack */
};

/* Saves the caller's registers into from, resumes to. Implemented in
 * hub/ctx_x86_64.S. */
void hub_ctx_switch(struct hub_ctx *from, struct hub_ctx *to)
    __attribute__((visibility("hidden")));
void hub_ctx_trampoline(void) __attribute__((visibility("hidden")));

/* Prepares ctx so that the first switch to it calls entry() on the stack
 * [lo, lo + size). The frame mirrors what hub_ctx_switch pops: control
 * words, r15..r12, rbx, rbp, then the address `ret` jumps to. */
static inline void hub_ctx_make(struct hub_ctx *ctx, void *lo, size_t size,
                                void (*entry)(void))
{
    uintptr_t top = ((uintptr_t)lo + size) & ~(uintptr_t)15;
    uint64_t *sp = (uint64_t *)top;
    uint32_t mxcsr;
    uint16_t fpucw;

    __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
    __asm__ volatile("fnstcw %0" : "=m"(fpucw));
    *--sp = (uint64_t)(uintptr_t)hub_ctx_trampoline; /* ret lands here    */
    *--sp = 0;                                       /* rbp               */
    *--sp = 0;                                       /* rbx               */
    *--sp = (uint64_t)(uintptr_t)entry;              /* r12: called by it */
    *--sp = 0;                                       /* r13               */
    *--sp = 0;                                       /* r14               */
    *--sp = 0;                                       /* r15               */
    *--sp = (uint64_t)mxcsr | ((uint64_t)fpucw << 32);
    ctx->sp = sp;
}

#else
#define HUB_CTX_ASM 0
#include <ucontext.h>

struct hub_ctx {
    ucontext_t uc;
};

static inline void hub_ctx_switch(struct hub_ctx *from, struct hub_ctx *to)
{
    swapcontext(&from->uc, &to->uc);
}

static inline void hub_ctx_make(struct hub_ctx *ctx, void *lo, size_t size,
                                void (*entry)(void))
{
    getcontext(&ctx->uc);
    ctx->uc.uc_stack.ss_sp = lo;
    ctx->uc.uc_stack.ss_size = size;
    ctx->uc.uc_link = NULL;
    makecontext(&ctx->uc, entry, 0);
}
#endif

#endif
