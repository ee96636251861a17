/* The first frame of a new context, as the assembly switch of its
 * architecture expects to find it (see x86_64.S, aarch64.S). */
#include <stdint.h>
#include <string.h>

#include "../async_int.h"

#if !defined(VITTE_CONTEXT_UCONTEXT) && (defined(__x86_64__) || defined(__aarch64__))

void vt__ctx_start(void);

void vt__ctx_make(vt__ctx *c, void *stack, size_t size, vt__ctx_entry entry)
{
    uintptr_t top = ((uintptr_t)stack + size) & ~(uintptr_t)15;
#if defined(__x86_64__)
    /* [fp control][r15 r14 r13][r12 = entry][rbx][rbp][return: start]; after
     * the final ret the stack pointer is 16-aligned, as a call expects. */
    uint64_t *f = (uint64_t *)(top - 24 - 7 * 8);
    uint32_t mxcsr;
    uint16_t fpucw;
    __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
    __asm__ volatile("fnstcw %0" : "=m"(fpucw));
    memset(f, 0, 8 * 8);
    memcpy(&f[0], &mxcsr, 4);
    memcpy((char *)&f[0] + 4, &fpucw, 2);
    f[4] = (uint64_t)(uintptr_t)entry;
    f[7] = (uint64_t)(uintptr_t)vt__ctx_start;
#else
    uint64_t *f = (uint64_t *)(top - 176);
    uint64_t fpcr;
    __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
    memset(f, 0, 176);
    f[0] = (uint64_t)(uintptr_t)entry; /* x19 */
    f[11] = (uint64_t)(uintptr_t)vt__ctx_start; /* x30 */
    f[20] = fpcr;
#endif
    c->sp = f;
}

#endif
