/* hub/ctx_x86_64.S - the register-only context switch for x86-64 (SysV).
 *
 * hub_ctx_switch(from, to): pushes the callee-saved registers (rbp, rbx,
 * r12-r15) and an 8-byte slot holding MXCSR and the x87 control word,
 * stores rsp in from->sp, loads to->sp and pops the same frame. Caller-
 * saved registers need no saving: the switch is an ordinary call to the C
 * code on both sides. No system call, so no signal mask is touched - the
 * mask is per OS thread and every green thread shares it, as it should.
 *
 * hub_ctx_trampoline: where a fresh context (hub_ctx_make) first returns
 * to. rsp is 16-byte aligned there, so the call leaves entry() with the
 * alignment the ABI promises. The CFI marks the end of the stack for
 * debuggers and unwinders.
 */
#if defined(__x86_64__) && !defined(HUB_CTX_UCONTEXT)

    .text
    .p2align 4
    .globl  hub_ctx_switch
    .hidden hub_ctx_switch
    .type   hub_ctx_switch, @function
hub_ctx_switch:
    .cfi_startproc
    pushq   %rbp
    pushq   %rbx
    pushq   %r12
    pushq   %r13
    pushq   %r14
    pushq   %r15
    subq    $8, %rsp
    stmxcsr (%rsp)
    fnstcw  4(%rsp)
    movq    %rsp, (%rdi)
    movq    (%rsi), %rsp
    ldmxcsr (%rsp)
    fldcw   4(%rsp)
    addq    $8, %rsp
    popq    %r15
    popq    %r14
    popq    %r13
    popq    %r12
    popq    %rbx
    popq    %rbp
    ret
    .cfi_endproc
    .size   hub_ctx_switch, .-hub_ctx_switch

    .p2align 4
    .globl  hub_ctx_trampoline
    .hidden hub_ctx_trampoline
    .type   hub_ctx_trampoline, @function
hub_ctx_trampoline:
    .cfi_startproc
    .cfi_undefined rip
    xorl    %ebp, %ebp
    callq   *%r12
    ud2
    .cfi_endproc
    .size   hub_ctx_trampoline, .-hub_ctx_trampoline

#endif
    .section .note.GNU-stack,"",@progbits
