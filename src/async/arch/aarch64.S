/* Context switch for AArch64 (AAPCS64).
 *
 * void *vt__ctx_switch(vt__ctx *from, vt__ctx *to, void *arg)
 *   x0 = from, x1 = to, x2 = arg; returns arg of the switch that resumes us.
 * Saves only what the ABI makes callee-saved: x19-x28, the frame pointer
 * x29, the link register x30, d8-d15 (the low halves of v8-v15), the stack
 * pointer, and FPCR (rounding mode and traps, which the ABI treats as
 * preserved across calls).
 *
 * Frame, 176 bytes from sp: x19..x30 at 0..95, d8..d15 at 96..159,
 * FPCR at 160. A new context (vt__ctx_make) holds such a frame with
 * x19 = entry and x30 = vt__ctx_start. */
#if defined(__aarch64__) && !defined(VITTE_CONTEXT_UCONTEXT)

        .text
        .p2align 4
        .globl  vt__ctx_switch
        .hidden vt__ctx_switch
        .type   vt__ctx_switch, %function
vt__ctx_switch:
        .cfi_startproc
        sub     sp, sp, #176
        stp     x19, x20, [sp, #0]
        stp     x21, x22, [sp, #16]
        stp     x23, x24, [sp, #32]
        stp     x25, x26, [sp, #48]
        stp     x27, x28, [sp, #64]
        stp     x29, x30, [sp, #80]
        stp     d8, d9, [sp, #96]
        stp     d10, d11, [sp, #112]
        stp     d12, d13, [sp, #128]
        stp     d14, d15, [sp, #144]
        mrs     x9, fpcr
        str     x9, [sp, #160]
        mov     x9, sp
        str     x9, [x0]
        ldr     x9, [x1]
        mov     sp, x9
        ldr     x9, [sp, #160]
        msr     fpcr, x9
        ldp     x19, x20, [sp, #0]
        ldp     x21, x22, [sp, #16]
        ldp     x23, x24, [sp, #32]
        ldp     x25, x26, [sp, #48]
        ldp     x27, x28, [sp, #64]
        ldp     x29, x30, [sp, #80]
        ldp     d8, d9, [sp, #96]
        ldp     d10, d11, [sp, #112]
        ldp     d12, d13, [sp, #128]
        ldp     d14, d15, [sp, #144]
        add     sp, sp, #176
        mov     x0, x2
        ret
        .cfi_endproc
        .size   vt__ctx_switch, .-vt__ctx_switch

        .p2align 4
        .globl  vt__ctx_start
        .hidden vt__ctx_start
        .type   vt__ctx_start, %function
vt__ctx_start:
        .cfi_startproc
        .cfi_undefined x30      /* the outermost frame: backtraces stop here */
        blr     x19             /* x0 already holds arg */
        brk     #0              /* entry returned: a bug, stop at once */
        .cfi_endproc
        .size   vt__ctx_start, .-vt__ctx_start

#endif

#if defined(__linux__) && defined(__ELF__)
        .section .note.GNU-stack, "", %progbits
#endif
