/* Context switch for x86-64 (System V ABI).
 *
 * void *vt__ctx_switch(vt__ctx *from, vt__ctx *to, void *arg)
 *   rdi = from, rsi = to, rdx = arg; returns arg of the switch that resumes us.
 * Saves only what the ABI makes callee-saved: rbx, rbp, r12-r15, the
 * stack pointer, and the control bits of MXCSR and the x87 control word;
 * everything else is dead across a call anyway.
 *
 * A new context (vt__ctx_make) holds a frame as if it had switched away:
 * r12 = entry, the FP control words of its creator, and a return address
 * that lands in vt__ctx_start, which calls entry(arg) with a 16-byte
 * aligned stack. */
#if defined(__x86_64__) && !defined(VITTE_CONTEXT_UCONTEXT)

        .text
        .p2align 4
        .globl  vt__ctx_switch
        .hidden vt__ctx_switch
        .type   vt__ctx_switch, @function
vt__ctx_switch:
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
        movq    %rdx, %rax
        /* Not ret: after a switch of stacks the return-stack predictor
         * holds the other context's return address and would mispredict
         * every time; an indirect jump is predicted from its history. */
        popq    %rcx
        jmpq    *%rcx
        .cfi_endproc
        .size   vt__ctx_switch, .-vt__ctx_switch

        .p2align 4
        .globl  vt__ctx_start
        .hidden vt__ctx_start
        .type   vt__ctx_start, @function
vt__ctx_start:
        .cfi_startproc
        .cfi_undefined rip      /* the outermost frame: backtraces stop here */
        movq    %rax, %rdi
        callq   *%r12
        ud2                     /* entry returned: a bug, stop at once */
        .cfi_endproc
        .size   vt__ctx_start, .-vt__ctx_start

#endif

#if defined(__linux__) && defined(__ELF__)
        .section .note.GNU-stack, "", @progbits
#endif
