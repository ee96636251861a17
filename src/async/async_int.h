/* async_int.h — the async layer's private contract, shared by the files of
 * src/async/ and by nothing else.
 *
 * Everything that waits (await, sleep, the sync primitives, channels, IO)
 * waits the same way: a vt__waiter on the object's queue, claimed exactly
 * once by whoever ends the wait — a waker (with a result), the deadline
 * (VT_ETIMEDOUT) or a cancellation (VT_ECANCELED). The claim is a CAS on the
 * waiting party's parker word, so a wake-up that races a timeout is never
 * lost and never doubled:
 *
 *     vt__wq_lock(&q);
 *     if (resource free) { take it; vt__wq_unlock(&q); return VT_OK; }
 *     vt__waiter w;
 *     vt__waiter_init(&w, "mutex", obj, 0);
 *     vt__wq_push(&q, &w);
 *     vt__wq_unlock(&q);
 *     vt_err e = vt__waiter_wait(&w, deadline);  // suspends the fiber / blocks the thread
 *     if (e != VT_OK) {                          // timed out or cancelled:
 *         vt__wq_lock(&q);                       // nobody handed us anything,
 *         vt__wq_remove(&q, &w);                 // leave the queue (if still on it)
 *         vt__wq_unlock(&q);
 *     }
 *
 * and a waker, with the queue locked:
 *
 *     vt__waiter *w;
 *     while ((w = vt__wq_pop(&q))) {
 *         if (!vt__waiter_claim(w)) continue;   // it timed out / was cancelled: skip it
 *         hand the resource to w (w->data, w->want ...);
 *         vt__waiter_wake(w, VT_OK);            // may be called after unlocking
 *         break;
 *     }
 *
 * Every vt__waiter_init must be followed by vt__waiter_wait (with VT_NOW
 * if the caller changed its mind before publishing w): a fiber counts as
 * parking from init until its wait returns.
 *
 * A waiter lives on the waiting party's stack: after vt__waiter_claim
 * succeeded, the claimer must not touch *w once it called vt__waiter_wake. */
#ifndef VITTE_ASYNC_INT_H
#define VITTE_ASYNC_INT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "vitte/async.h"
#include "../base/platform.h"

typedef struct vt__fib vt__fib;
typedef struct vt__parker vt__parker;

/* ---- Waiting ---------------------------------------------------------------------- */

/* Who sleeps: a fiber (embedded in it) or a thread (thread-local). word
 * holds the wait's sequence number (bits 8..31) and its state (bits 0..7):
 * a claim is a CAS from (seq, WAITING) to (seq, CLAIMED), so a stale claim
 * — a timer of an earlier wait — fails. */
enum { VT__PK_IDLE = 0, VT__PK_WAITING = 1, VT__PK_CLAIMED = 2, VT__PK_DONE = 3 };

struct vt__parker {
    _Atomic uint32_t word;
    vt_err result;
    vt__fib *fiber; /* NULL for a thread */
};

enum {
    VT__WAIT_NOCANCEL = 1 /* cancellation does not end this wait */
};

typedef struct vt__waiter {
    struct vt__waiter *next, *prev;
    vt__parker *parker;
    uint32_t seq;
    uint8_t linked;
    uint8_t flags;
    const char *what; /* for vt_runtime_dump: "mutex", "sleep", ... */
    const void *obj;
    /* The primitive's own: permits wanted, read or write, a buffer ... */
    uint64_t want;
    void *data;
} vt__waiter;

/* Binds w to the calling fiber or thread for one wait. */
VT_INTERNAL void vt__waiter_init(vt__waiter *w, const char *what, const void *obj, unsigned flags);
/* Suspends until w is claimed, the deadline passes or the caller is
 * cancelled (unless NOCANCEL or masked). Returns the waker's result, or
 * VT_ETIMEDOUT / VT_ECANCELED. A deadline of VT_NOW returns VT_ETIMEDOUT
 * at once unless w was claimed already. */
VT_INTERNAL vt_err vt__waiter_wait(vt__waiter *w, int64_t deadline);
/* Claims w: 1 if this call won (the caller must then vt__waiter_wake it),
 * 0 if its wait ended already. Thread: any. */
VT_INTERNAL int vt__waiter_claim(vt__waiter *w);
/* 1 while w's wait has not ended (a hint: it may end at any moment). */
VT_INTERNAL int vt__waiter_pending(const vt__waiter *w);
/* Ends a claimed wait with result. Thread: any (a worker, a plain thread,
 * the poller). After it, *w may be gone. */
VT_INTERNAL void vt__waiter_wake(vt__waiter *w, vt_err result);

/* The queue of a sync object (vt__wq in vitte/async.h): a FIFO of waiters
 * behind a spinlock held for a few instructions at a time. */
VT_INTERNAL void vt__wq_lock_slow(vt__wq *q);
static inline void vt__wq_lock(vt__wq *q)
{
    uint32_t free_ = 0;
    if (VT_LIKELY(atomic_compare_exchange_weak_explicit(&q->lock, &free_, 1, memory_order_acquire,
                                                        memory_order_relaxed)))
        return;
    vt__wq_lock_slow(q);
}
static inline void vt__wq_unlock(vt__wq *q)
{
    atomic_store_explicit(&q->lock, 0, memory_order_release);
}
static inline vt__waiter *vt__wq_first(vt__wq *q)
{
    return (vt__waiter *)q->head;
}
VT_INTERNAL void vt__wq_push(vt__wq *q, vt__waiter *w);
VT_INTERNAL vt__waiter *vt__wq_pop(vt__wq *q);
/* No-op when w is not on q (a waker popped it). */
VT_INTERNAL void vt__wq_remove(vt__wq *q, vt__waiter *w);

/* 1 when the caller (fiber) is cancelled and not masked: what a
 * suspension point that does not wait checks. */
VT_INTERNAL int vt__cancel_pending(void);

/* A pseudo-random number: per worker (seeded from opts.pool.seed in
 * deterministic mode, so that choices replay), else per thread. */
VT_INTERNAL uint64_t vt__rand(void);

/* ---- The runtime -------------------------------------------------------------------- */
struct vt__stacks;
struct vt__netpoll;
struct vt__blocking;

typedef struct vt__fworker vt__fworker;

/* The runtime of the calling fiber or worker, or NULL. */
VT_INTERNAL vt_runtime *vt__runtime_self(void);
/* 1 when the runtime is shutting down (new waits on IO and blocking
 * threads should fail with VT_ECLOSED). */
VT_INTERNAL int vt__runtime_closing(vt_runtime *rt);
VT_INTERNAL const vt_runtime_opts *vt__runtime_opts(vt_runtime *rt);
/* Lazily created per runtime by netpoll.c / blocking.c: the slot the
 * creator CASes from NULL, and released by vt__netpoll_free /
 * vt__blocking_free when the runtime is freed (after every fiber ended). */
VT_INTERNAL _Atomic(struct vt__netpoll *) *vt__runtime_netpoll_slot(vt_runtime *rt);
VT_INTERNAL _Atomic(struct vt__blocking *) *vt__runtime_blocking_slot(vt_runtime *rt);
VT_INTERNAL void vt__netpoll_free(struct vt__netpoll *np);

/* netpoll.c, for io.c: a descriptor's entry in the calling fiber's
 * runtime's poller (contracts with the definitions). */
typedef struct vt__fdent vt__fdent;
VT_INTERNAL vt_err vt__netpoll_fd(int fd, vt__fdent **out, int *is_socket);
VT_INTERNAL vt_err vt__netpoll_wait(vt__fdent *e, unsigned events, unsigned *ready, int64_t deadline);
VT_INTERNAL void vt__netpoll_clear(vt__fdent *e, unsigned events);
VT_INTERNAL void vt__netpoll_renew(vt__fdent *e, int is_socket);
VT_INTERNAL void vt__netpoll_fresh(int fd);
VT_INTERNAL void vt__netpoll_unregister(int fd);
VT_INTERNAL void vt__netpoll_forget(int fd);
VT_INTERNAL void vt__blocking_free(struct vt__blocking *b);

/* ---- Context switch (arch/) ----------------------------------------------------------
 * A suspended context is its stack pointer: the callee-saved registers and
 * the floating-point control words are on its stack. vt__ctx_switch saves
 * the caller into *from and resumes *to, which returns `arg` from its own
 * vt__ctx_switch (or, on the first switch into a new context, starts
 * entry(arg)). entry must never return. */
typedef struct vt__ctx {
    void *sp;
} vt__ctx;
typedef void (*vt__ctx_entry)(void *arg);

/* The build's backend: assembly for x86-64 and AArch64, ucontext elsewhere
 * (or with -DVITTE_CONTEXT=ucontext). */
VT_INTERNAL void *vt__ctx_switch(vt__ctx *from, vt__ctx *to, void *arg);
/* Prepares a context on [stack, stack + size) that starts entry. */
VT_INTERNAL void vt__ctx_make(vt__ctx *c, void *stack, size_t size, vt__ctx_entry entry);

/* The ucontext backend, always built where <ucontext.h> exists, so that
 * tests compare it with the assembly one. */
VT_INTERNAL void *vt__uctx_switch(vt__ctx *from, vt__ctx *to, void *arg);
VT_INTERNAL void vt__uctx_make(vt__ctx *c, void *stack, size_t size, vt__ctx_entry entry);
VT_INTERNAL int vt__uctx_available(void);

#endif
