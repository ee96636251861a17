/* sched_int.h — the scheduler's private types, shared by the files of
 * src/sched/ and by nothing else. */
#ifndef VITTE_SCHED_INT_H
#define VITTE_SCHED_INT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "vitte/sched.h"
#include "../base/platform.h"
#include "timer.h"

/* Counters that only their worker writes: a relaxed load and store, never
 * a locked instruction, and still race-free for readers on other threads. */
static inline void vt__count(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n, memory_order_relaxed);
}

static inline uint64_t vt__read(const _Atomic uint64_t *c)
{
    return atomic_load_explicit((_Atomic uint64_t *)c, memory_order_relaxed);
}

/* ---- A queued closure job ---------------------------------------------------
 * tag: FAIR's group key (user groups as they are, thread groups with bit 32
 * set), unused elsewhere. */
typedef struct vt__job {
    vt_job_fn fn;
    void *arg;
    uint64_t tag;
} vt__job;

/* Jobs the owner of a deep deque takes per exchange. */
#define VT__CLAIM 8

/* ---- Chase–Lev deque of closure jobs (deque.c) ------------------------------
 * The C11 formulation of Lê, Pop, Cohen and Zappa Nardelli (PPoPP 2013).
 * Indices grow without bound; the buffer is circular and grows by doubling.
 * A buffer that was replaced stays allocated until the deque is destroyed,
 * because a thief may still be reading it (the old ones add up to less than
 * the live one). */
typedef struct vt__dq_slot {
    _Atomic(vt_job_fn) fn;
    _Atomic(void *) arg;
} vt__dq_slot;

typedef struct vt__dq_buf {
    int64_t mask;
    struct vt__dq_buf *retired; /* the buffer this one replaced */
    vt__dq_slot slot[];
} vt__dq_buf;

typedef struct vt__deque {
    VT_CACHE_ALIGNED _Atomic int64_t top; /* thieves (and a donating owner) CAS it */
    VT_CACHE_ALIGNED _Atomic int64_t bottom;
    _Atomic(vt__dq_buf *) buf;
    /* The lowest index whose slot the owner must not overwrite: its last
     * sight of top (a lower bound, since top only grows, so the owner need
     * not touch the thieves' line to know there is room), or the start of
     * a range it donated that the receiving thief has not read yet. */
    int64_t top_seen;
    int64_t hold_local;    /* start of the donated range held, or INT64_MAX */
    _Atomic int64_t hold;  /* the same, or -1 once the thief has read it */
    /* Jobs the owner claimed in one batch off the bottom (see
     * vt__deque_take): claimed[0 .. nclaimed) in index order, taken newest
     * first once the deque is back down to claim_base. Owner only. */
    uint32_t nclaimed;
    int64_t claim_base;
    vt__job claimed[VT__CLAIM];
} vt__deque;

VT_INTERNAL vt_err vt__deque_init(vt__deque *d, int64_t capacity);
VT_INTERNAL void vt__deque_destroy(vt__deque *d);
VT_INTERNAL vt_err vt__deque_push_slow(vt__deque *d, vt_job_fn fn, void *arg);

/* Owner only. VT_ENOMEM when the deque is full and cannot grow. Inline:
 * it is half of every closure job's cost. */
static inline vt_err vt__deque_push(vt__deque *d, vt_job_fn fn, void *arg)
{
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
    vt__dq_buf *a = atomic_load_explicit(&d->buf, memory_order_relaxed);
    if (VT_UNLIKELY(b - d->top_seen > a->mask))
        return vt__deque_push_slow(d, fn, arg);
    vt__dq_slot *s = &a->slot[b & a->mask];
    atomic_store_explicit(&s->fn, fn, memory_order_relaxed);
    atomic_store_explicit(&s->arg, arg, memory_order_relaxed);
    atomic_store_explicit(&d->bottom, b + 1, memory_order_release);
    return VT_OK;
}

VT_INTERNAL int vt__deque_claim(vt__deque *d, vt__job *out);
VT_INTERNAL int vt__deque_take_after_claim(vt__deque *d, vt__job *out);

/* Owner only: the newest job in the deque proper (claimed ones aside). */
static inline int vt__deque_take_one(vt__deque *d, vt__job *out)
{
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed) - 1;
    /* Only the owner adds jobs, so a deque that looks empty is empty: no
     * need for the exchange below (a searching worker asks often). */
    if (b < d->top_seen)
        return 0;
    vt__dq_buf *a = atomic_load_explicit(&d->buf, memory_order_relaxed);
    /* The store of bottom must be visible before top is read, or a thief and
     * the owner could both take the last job. The paper's relaxed store and
     * seq_cst fence become one seq_cst exchange: on x86-64 an xchg, which
     * costs less than an mfence. */
    atomic_exchange_explicit(&d->bottom, b, memory_order_seq_cst);
    int64_t t = atomic_load_explicit(&d->top, memory_order_seq_cst);
    d->top_seen = t < d->hold_local ? t : d->hold_local;
    if (VT_UNLIKELY(t > b)) {
        atomic_store_explicit(&d->bottom, b + 1, memory_order_relaxed);
        return 0;
    }
    vt__dq_slot *s = &a->slot[b & a->mask];
    out->fn = atomic_load_explicit(&s->fn, memory_order_relaxed);
    out->arg = atomic_load_explicit(&s->arg, memory_order_relaxed);
    out->tag = 0;
    if (VT_UNLIKELY(t == b)) {
        /* The last job: a thief may be after it too; the CAS on top decides. */
        int won = atomic_compare_exchange_strong_explicit(&d->top, &t, t + 1, memory_order_seq_cst,
                                                          memory_order_relaxed);
        atomic_store_explicit(&d->bottom, b + 1, memory_order_relaxed);
        return won;
    }
    return 1;
}

/* Owner only: the newest job (LIFO). 0 when empty. A deep deque gives up
 * VT__CLAIM jobs per exchange (vt__deque_claim); they are its newest until
 * something is pushed after them. */
static inline int vt__deque_take(vt__deque *d, vt__job *out)
{
    if (VT_UNLIKELY(d->nclaimed)) {
        if (VT_LIKELY(atomic_load_explicit(&d->bottom, memory_order_relaxed) == d->claim_base)) {
            *out = d->claimed[--d->nclaimed];
            return 1;
        }
        return vt__deque_take_after_claim(d, out);
    }
    if (atomic_load_explicit(&d->bottom, memory_order_relaxed) - d->top_seen >= 4 * VT__CLAIM)
        return vt__deque_claim(d, out);
    return vt__deque_take_one(d, out);
}

/* Any thread: the oldest job. 1 taken, 0 empty, -1 lost a race (retry). */
VT_INTERNAL int vt__deque_steal(vt__deque *d, vt__job *out);
/* Any thread: a snapshot of the number of jobs (never negative). */
VT_INTERNAL int64_t vt__deque_size(vt__deque *d);

/* ---- Growable FIFO ring (queue.c) -------------------------------------------
 * Not thread-safe: its owner locks around it. */
typedef struct vt__ring {
    vt__job *items;
    size_t cap; /* a power of two, or 0 */
    size_t head;
    size_t count;
} vt__ring;

VT_INTERNAL vt_err vt__ring_push(vt__ring *r, vt__job job);
VT_INTERNAL int vt__ring_pop(vt__ring *r, vt__job *out);
VT_INTERNAL void vt__ring_free(vt__ring *r);

/* ---- Pool-wide queues for the injection queue, PRIORITY and FAIR (queue.c) ---
 * One lock for all: each pick is a few dozen instructions. count mirrors
 * the number of queued jobs so that workers can look without locking. */
typedef struct vt__fair_group {
    uint64_t key;
    vt__ring jobs;
    uint32_t active; /* on the round-robin ring */
} vt__fair_group;

typedef struct vt__shared_queue {
    VT_CACHE_ALIGNED vt__spinlock lock;
    _Atomic uint64_t count;
    vt_policy policy;
    /* LIFO's injection queue, FIFO's queue, or PRIORITY's levels (levels[0]
     * lowest). */
    vt__ring *levels;
    unsigned nlevels;
    uint32_t *age; /* PRIORITY: picks that passed over a non-empty level */
    unsigned starvation_limit;
    /* FAIR: groups by key (open addressing), and the round robin of the
     * groups that have jobs, as a ring of group indices. */
    vt__fair_group *groups;
    size_t ngroups, groups_cap;
    uint32_t *gindex; /* hash slot -> group index + 1 (0: empty) */
    size_t gindex_cap;
    uint32_t *rr;
    size_t rr_cap, rr_head, rr_count;
} vt__shared_queue;

VT_INTERNAL vt_err vt__squeue_init(vt__shared_queue *q, vt_policy policy, unsigned levels,
                                   unsigned starvation_limit);
VT_INTERNAL void vt__squeue_destroy(vt__shared_queue *q);
/* level: PRIORITY's level (checked by the caller). VT_ENOMEM leaves q as it
 * was. Thread: any. */
VT_INTERNAL vt_err vt__squeue_push(vt__shared_queue *q, vt__job job, unsigned level);
/* Up to max jobs in the policy's order; returns how many. Thread: any. */
VT_INTERNAL size_t vt__squeue_pop(vt__shared_queue *q, vt__job *out, size_t max);

static inline uint64_t vt__squeue_count(vt__shared_queue *q)
{
    return atomic_load_explicit(&q->count, memory_order_relaxed);
}

/* ---- Workers ------------------------------------------------------------------ */
#define VT__DONATE_MAX 128

typedef struct vt__wmetrics {
    VT_CACHE_ALIGNED _Atomic uint64_t frames; /* stolen fork–join frames run */
    _Atomic uint64_t stolen;
    _Atomic uint64_t received; /* jobs donated to this worker */
    _Atomic uint64_t steal_attempts;
    _Atomic uint64_t parks;
    _Atomic uint64_t idle_ns;
    _Atomic uint64_t submitted; /* jobs queued by this worker */
    _Atomic uint64_t finished;  /* closure jobs this worker ran */
} vt__wmetrics;

typedef struct vt__wk {
    vt__worker fj; /* first: the fork–join macros see only this */
    vt_pool *pool;
    vt_pool *lifo_pool; /* pool when its jobs go on this deque LIFO, else NULL */
    unsigned index;
    uint64_t rng;
    uint64_t group;       /* FAIR: key of the job being run */
    unsigned since_inject; /* LIFO: jobs run since the injection queue was looked at */
    uint64_t later_in, later_out; /* jobs put on / taken from the later ring */
    uint64_t later_old;           /* later_in at the last periodic look: the jobs
                                     before it have waited a whole period */
    size_t frames_bytes;
    vt__fj_shared fjs;
    vt__deque dq;
    /* Jobs queued behind everything else this worker has (vt_pool_submit_later,
     * a fiber's yield): owner only, run when the deque is empty or every
     * INJECT_CHECK_EVERY jobs. later_count mirrors later.count for others. */
    vt__ring later;
    _Atomic uint64_t later_count;
    vt__wmetrics m;
    VT_CACHE_ALIGNED _Atomic uint32_t wake; /* futex word while parked */
    _Atomic uint32_t guest_busy; /* guest slots: claimed by a VT_RUN caller */
    /* Batch donation (LIFO pools, see donate.c): a thief writes its index + 1
     * in the victim's `want`; the victim, at its next push or take, moves up
     * to VT__DONATE_MAX of its oldest jobs into the thief's inbox. */
    VT_CACHE_ALIGNED _Atomic uint32_t want;
    /* The inbox: the slots [start, start + n) of a donor's deque buffer,
     * reserved for this worker, which reads them itself (one line crosses
     * over instead of every job twice). */
    VT_CACHE_ALIGNED _Atomic uint32_t inbox_state; /* VT__INBOX_* */
    uint32_t inbox_n;
    int64_t inbox_start;
    vt__dq_buf *inbox_buf;
    vt__deque *inbox_src;
    vt__thread thread;
    int thread_started;
} vt__wk;

enum {
    VT__RUNNING = 0,
    VT__DRAINING,   /* only workers may submit */
    VT__CANCELLING, /* nobody may submit; workers stop after their job */
    VT__STOPPING,   /* workers exit */
    VT__STOPPED     /* joined */
};

/* Guest slots: a thread that calls VT_RUN from outside claims one and runs
 * the root itself, as a worker whose frames others may steal, instead of
 * queueing it and waiting for a parked worker's CPU to wake. */
#define VT__GUESTS 1

struct vt_pool {
    vt_pool_opts opts;
    unsigned nworkers;
    unsigned nslots; /* workers, then guest slots */
    vt__wk *workers; /* nslots of them */
    unsigned workers_ready; /* initialised (for the unwinding of a failed new) */
    int sq_ready;
    vt__shared_queue sq; /* injection queue, or the PRIORITY/FAIR queues */
    vt__timers *timers;
    void *raw, *workers_raw; /* the unaligned blocks behind p and workers */

    VT_CACHE_ALIGNED _Atomic int state;
    _Atomic uint64_t ext_submitted; /* jobs queued by non-workers and timers */

    /* Parking: a stack of sleeping worker indices under a lock; sleepers
     * and searching are read without it to decide whether to wake. */
    VT_CACHE_ALIGNED vt__spinlock idle_lock;
    unsigned *idle_stack;
    unsigned idle_count;
    _Atomic uint32_t sleepers;
    VT_CACHE_ALIGNED _Atomic uint32_t searching;

    /* wait_idle and shutdown wait on quiet_seq; workers bump it when they
     * run out of work while someone waits. */
    VT_CACHE_ALIGNED _Atomic uint32_t quiet_seq;
    _Atomic uint32_t idle_waiters;
    _Atomic uint32_t exited; /* workers that left their loop */

    /* Deterministic mode: every ready job in one array, picked at random. */
    vt__spinlock det_lock;
    vt__job *det_ready;
    size_t det_count, det_cap;
    uint64_t det_rng;
    _Atomic int64_t det_clock;
    _Atomic int det_driving;

    _Atomic uint64_t cancelled; /* metric: jobs and timers discarded */
    /* Jobs counted as submitted that ended without a worker counting them
     * finished: discarded at shutdown, or run on the timer thread. */
    _Atomic uint64_t settled;
    int shutdown_called;
};

/* The worker running on this thread, or NULL. */
extern VT_INTERNAL _Thread_local vt__wk *vt__self;

static inline vt__wk *vt__worker_self(void)
{
    return vt__self;
}

/* donate.c */
enum { VT__INBOX_EMPTY = 0, VT__INBOX_FILLING, VT__INBOX_FULL };
VT_INTERNAL void vt__donate(vt__wk *w);
/* Asks victim for a batch, if it has enough to share; 1 when asked. */
VT_INTERNAL int vt__donate_ask(vt__wk *self, vt__wk *victim);
/* After asking: waits a moment (a few hundred ns) for the batch, as a
 * working owner answers within nanoseconds; 1 with the first job in *job. */
VT_INTERNAL int vt__inbox_wait(vt__wk *w, vt__job *job);
/* Takes the jobs a donor reserved for w: the first in *job, the others
 * onto w's deque. 1 when there were any. */
VT_INTERNAL int vt__inbox_take(vt__wk *w, vt__job *job);
/* The jobs of a full inbox, for shutdown: calls fn on each and empties it. */
VT_INTERNAL size_t vt__inbox_drain(vt__wk *w, void (*fn)(void *ud, vt__job job), void *ud);

static inline void vt__donate_check(vt__wk *w)
{
    if (VT_UNLIKELY(atomic_load_explicit(&w->want, memory_order_relaxed)))
        vt__donate(w);
}

/* pool.c */
VT_INTERNAL void vt__pool_wake_worker(vt_pool *p, vt__wk *w);
VT_INTERNAL void vt__pool_wake_one(vt_pool *p);
VT_INTERNAL void vt__pool_maybe_wake(vt_pool *p);
VT_INTERNAL void vt__pool_notify_quiet(vt_pool *p);
/* Runs one closure job on w (counting it); shared by the worker loop and the
 * deterministic driver. */
VT_INTERNAL void vt__pool_run_job(vt__wk *w, const vt__job *job);
VT_INTERNAL int vt__pool_is_quiet(vt_pool *p);

/* forkjoin.c */
VT_INTERNAL vt_err vt__fj_init(vt__wk *w, uint32_t frames);
VT_INTERNAL void vt__fj_destroy(vt__wk *w);
enum { VT__STEAL_NONE = 0, VT__STEAL_DONE = 1, VT__STEAL_BUSY = 2 };
/* Steals the oldest shared frame of victim and runs it on self with self's
 * frames from self_head up. VT__STEAL_DONE when it ran one. */
VT_INTERNAL int vt__fj_steal(vt__wk *self, vt__frame *self_head, vt__wk *victim);
VT_INTERNAL int vt__fj_has_work(vt__wk *w);

/* determ.c */
VT_INTERNAL vt_err vt__det_push(vt_pool *p, vt__job job);
/* Takes a ready job, chosen by the seeded generator; 0 when none. */
VT_INTERNAL int vt__det_pick(vt_pool *p, vt__job *job);
/* Runs until stop(ctx) is true, nothing is left, or the virtual clock would
 * pass until. Returns VT_OK when stop(ctx) or quiet, VT_ETIMEDOUT otherwise. */
VT_INTERNAL vt_err vt__det_drive(vt_pool *p, int64_t until, int (*stop)(void *), void *ctx);

#endif
