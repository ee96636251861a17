/* The portable context backend: POSIX ucontext (getcontext, makecontext,
 * swapcontext). About a hundred times slower than the assembly switch,
 * since glibc's swapcontext saves the signal mask with a system call; it is
 * the build's backend on architectures without assembly, or with
 * -DVITTE_CONTEXT=ucontext, and always built where <ucontext.h> exists so
 * that the tests compare the two. */
#include "../async_int.h"

#if defined(__has_include)
#if __has_include(<ucontext.h>)
#define VT_HAVE_UCONTEXT 1
#endif
#endif

#ifdef VT_HAVE_UCONTEXT
#include <stdint.h>
#include <ucontext.h>

/* A new context keeps its ucontext and entry at the top of its stack; a
 * suspended one's ucontext is a local of its vt__uctx_switch frame. */
typedef struct start_block {
    ucontext_t uc;
    vt__ctx_entry entry;
} start_block;

/* What a switch hands to the context it resumes, through the thread both
 * run on at that moment. */
typedef struct transfer {
    void *arg;
    ucontext_t *to;
} transfer;

static _Thread_local transfer handoff;

/* Not inlined: after a swapcontext the fiber may be on another thread, and
 * a thread-local address computed before it would be the old thread's. */
static __attribute__((noinline)) transfer *handoff_here(void)
{
    transfer *t = &handoff;
    __asm__ volatile("" : "+r"(t));
    return t;
}

static void start(void)
{
    transfer *t = handoff_here();
    start_block *b = (start_block *)t->to;
    b->entry(t->arg);
    __builtin_trap(); /* entry returned */
}

int vt__uctx_available(void)
{
    return 1;
}

void vt__uctx_make(vt__ctx *c, void *stack, size_t size, vt__ctx_entry entry)
{
    uintptr_t top = ((uintptr_t)stack + size - sizeof(start_block)) & ~(uintptr_t)63;
    start_block *b = (start_block *)top;
    getcontext(&b->uc);
    b->uc.uc_stack.ss_sp = stack;
    b->uc.uc_stack.ss_size = top - (uintptr_t)stack;
    b->uc.uc_link = NULL;
    b->entry = entry;
    makecontext(&b->uc, start, 0);
    c->sp = &b->uc;
}

void *vt__uctx_switch(vt__ctx *from, vt__ctx *to, void *arg)
{
    ucontext_t here;
    from->sp = &here;
    transfer *t = handoff_here();
    t->arg = arg;
    t->to = to->sp;
    swapcontext(&here, to->sp);
    return handoff_here()->arg;
}

#if defined(VITTE_CONTEXT_UCONTEXT) || !(defined(__x86_64__) || defined(__aarch64__))
void *vt__ctx_switch(vt__ctx *from, vt__ctx *to, void *arg)
{
    return vt__uctx_switch(from, to, arg);
}

void vt__ctx_make(vt__ctx *c, void *stack, size_t size, vt__ctx_entry entry)
{
    vt__uctx_make(c, stack, size, entry);
}
#endif

#else /* no <ucontext.h> */

int vt__uctx_available(void)
{
    return 0;
}

void vt__uctx_make(vt__ctx *c, void *stack, size_t size, vt__ctx_entry entry)
{
    (void)stack;
    (void)size;
    (void)entry;
    c->sp = NULL;
}

void *vt__uctx_switch(vt__ctx *from, vt__ctx *to, void *arg)
{
    (void)from;
    (void)to;
    return arg;
}
#endif
