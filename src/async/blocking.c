/* blocking.c — vt_blocking_run: calls that block a thread run on threads of
 * their own, while the fiber that made the call is suspended and its
 * worker runs other fibers.
 *
 * The threads come from sched pools (FIFO), started as they are needed
 * rather than all at once: a pool starts every worker when it is created,
 * and sched's API cannot add workers later, so the runtime keeps a few
 * pools ("tiers") of growing size — 1 thread, then 3, 12, 48 ... (each
 * tier makes the total 4 times larger) until opts.blocking_threads (16 by
 * default: tiers of 1, 3 and 12). Each tier also has its pool's timer
 * thread, idle here: 3 extra threads at most by default, against 16
 * threads started at the first call with one pool.
 *
 * Calls wait in one FIFO queue of this file, not in the pools' queues: a
 * pool job is a "drainer" that runs queued calls until the queue is empty,
 * so a call waits only until the first thread of any tier is free, and the
 * calls start in the order they were made. A drainer holds one worker of
 * its tier while it runs. Each queued call gets a drainer of its own
 * unless drainers between two calls are there to take it, or every
 * started thread runs a drainer already (which takes it before it leaves:
 * the drainers leave under the queue's lock), or a new tier is being made
 * (whose maker then starts the drainers the queue lacks).
 *
 * A call record lives on the calling fiber's stack: the fiber waits for it
 * without cancellation (fn cannot be stopped), so the record outlives its
 * run. */
#include <stdio.h>

#include "async_int.h"

#define DEFAULT_THREADS 16

typedef struct bcall {
    struct bcall *next;
    void *(*fn)(void *arg);
    void *arg;
    void *result;
    vt__waiter w;
} bcall;

typedef struct tier {
    struct vt__blocking *b;
    vt_pool *pool;
    unsigned size;
    unsigned busy; /* drainers on its workers; under b->lock */
    char name[16];
} tier;

struct vt__blocking {
    vt__spinlock lock;
    bcall *head, *tail; /* calls not yet taken, oldest first */
    unsigned max;       /* threads at most, over all tiers */
    unsigned started;   /* threads of the tiers made so far */
    unsigned busy;      /* drainers started and not yet gone, over all tiers */
    unsigned running;   /* of them, those running a call */
    unsigned queued;    /* calls in the queue */
    unsigned ntiers;
    unsigned cap;       /* room in tiers[] */
    uint8_t growing;    /* someone makes the next tier */
    tier tiers[];
};

/* The size of the tier that follows tiers totalling `started` threads. */
static unsigned next_size(unsigned started, unsigned max)
{
    if (started >= max)
        return 0;
    unsigned n = started ? started * 3 : 1;
    if (n / 3 != started && started)
        n = max; /* overflow */
    if (n > max - started)
        n = max - started;
    if (n > VT_POOL_MAX_WORKERS)
        n = VT_POOL_MAX_WORKERS;
    return n;
}

static unsigned tiers_needed(unsigned max)
{
    unsigned k = 0;
    for (unsigned total = 0, n; (n = next_size(total, max)) != 0; total += n)
        k++;
    return k;
}

static size_t blocking_bytes(unsigned cap)
{
    return sizeof(struct vt__blocking) + (size_t)cap * sizeof(tier);
}

/* Starts the pool of tier t (not yet visible to anyone but the caller). */
static vt_err tier_start(tier *t, unsigned index, unsigned size)
{
    snprintf(t->name, sizeof t->name, "vt-blk%u", index);
    vt_pool_opts o;
    vt_pool_opts_init(&o);
    o.workers = size;
    o.policy = VT_POLICY_FIFO;
    o.frames = 64;    /* no fork–join here: the least address space */
    o.spin_rounds = 1; /* a blocking thread has nobody to steal from */
    o.no_guest = 1;
    o.name = t->name;
    vt_err e = vt_pool_new(&t->pool, &o);
    if (e == VT_OK)
        t->size = size;
    return e;
}

static bcall *pop(struct vt__blocking *b)
{
    bcall *c = b->head;
    if (c) {
        b->head = c->next;
        if (!b->head)
            b->tail = NULL;
        b->queued--;
    }
    return c;
}

static void drain(void *arg)
{
    tier *t = arg;
    struct vt__blocking *b = t->b;
    vt__spin_lock(&b->lock);
    for (;;) {
        bcall *c = pop(b);
        if (!c) {
            t->busy--;
            b->busy--;
            vt__spin_unlock(&b->lock);
            return;
        }
        b->running++;
        vt__spin_unlock(&b->lock);
        void *r = c->fn(c->arg);
        /* Always won: the wait has no deadline and ignores cancellation. */
        if (vt__waiter_claim(&c->w)) {
            c->result = r;
            vt__waiter_wake(&c->w, VT_OK);
        }
        vt__spin_lock(&b->lock);
        b->running--;
    }
}

/* With b locked: reserves workers for the drainers the queue lacks (one
 * per queued call beyond the drainers between two calls), at most max,
 * into out[]. */
static unsigned reserve(struct vt__blocking *b, tier **out, unsigned max)
{
    unsigned k = 0;
    while (k < max && b->busy < b->started && b->queued > b->busy - b->running) {
        tier *t = b->tiers;
        while (t->busy >= t->size)
            t++;
        t->busy++;
        b->busy++;
        out[k++] = t;
    }
    return k;
}

/* Makes the next tier; called with b->growing set and b unlocked. Returns
 * 0 when it could not. */
static int grow(struct vt__blocking *b)
{
    vt__spin_lock(&b->lock);
    unsigned k = b->ntiers;
    unsigned size = next_size(b->started, b->max);
    vt__spin_unlock(&b->lock);
    tier *t = &b->tiers[k];
    t->b = b;
    t->busy = 0;
    vt_err e = size && k < b->cap ? tier_start(t, k, size) : VT_EINVAL;
    vt__spin_lock(&b->lock);
    if (e == VT_OK) {
        b->ntiers = k + 1;
        b->started += size;
    } else {
        /* The calls queue for the threads there are; a later call tries
         * again. */
        vt_log(VT_LOG_WARN, "async", "blocking threads: cannot start %u more: %s", size,
               vt_strerror(e));
    }
    b->growing = 0;
    vt__spin_unlock(&b->lock);
    return e == VT_OK;
}

/* Queues c and makes sure drainers will take every queued call. Returns 1
 * when the caller ran c itself (see below), 0 when c is to be waited for. */
static int submit(struct vt__blocking *b, bcall *c)
{
    int grow_failed = 0;
    vt__spin_lock(&b->lock);
    c->next = NULL;
    if (b->tail)
        b->tail->next = c;
    else
        b->head = c;
    b->tail = c;
    b->queued++;
    for (;;) {
        tier *ts[8];
        unsigned k = reserve(b, ts, 8);
        if (k == 0) {
            /* Every thread runs a drainer (which takes the queued calls
             * before it leaves), or enough drainers are between calls, or
             * a new tier is on its way (its maker goes on starting
             * drainers, and tiers, while the queue needs them). */
            if (grow_failed || b->growing || b->started >= b->max || b->queued <= b->busy - b->running) {
                vt__spin_unlock(&b->lock);
                return 0;
            }
            b->growing = 1;
            vt__spin_unlock(&b->lock);
            grow_failed = !grow(b);
            vt__spin_lock(&b->lock);
            continue;
        }
        vt__spin_unlock(&b->lock);
        int failed = 0;
        for (unsigned i = 0; i < k; i++) {
            if (vt_pool_submit(ts[i]->pool, drain, ts[i]) == VT_OK)
                continue;
            vt__spin_lock(&b->lock);
            ts[i]->busy--;
            b->busy--;
            vt__spin_unlock(&b->lock);
            failed = 1;
        }
        if (failed)
            break;
        vt__spin_lock(&b->lock);
    }

    /* No memory to queue a drainer: this fiber drains the queue itself, on
     * its worker (blocking it, but leaving no call behind). */
    int ran_own = 0;
    for (;;) {
        vt__spin_lock(&b->lock);
        bcall *x = pop(b);
        vt__spin_unlock(&b->lock);
        if (!x)
            break;
        void *r = x->fn(x->arg);
        if (x == c) {
            c->result = r;
            ran_own = 1;
        } else if (vt__waiter_claim(&x->w)) {
            x->result = r;
            vt__waiter_wake(&x->w, VT_OK);
        }
    }
    return ran_own;
}

static vt_err blocking_get(vt_runtime *rt, struct vt__blocking **out)
{
    _Atomic(struct vt__blocking *) *slot = vt__runtime_blocking_slot(rt);
    struct vt__blocking *b = atomic_load_explicit(slot, memory_order_acquire);
    if (VT_LIKELY(b != NULL)) {
        *out = b;
        return VT_OK;
    }
    const vt_runtime_opts *o = vt__runtime_opts(rt);
    unsigned max = o && o->blocking_threads ? o->blocking_threads : DEFAULT_THREADS;
    unsigned cap = tiers_needed(max);
    b = vt_calloc(1, blocking_bytes(cap));
    if (!b)
        return VT_ENOMEM;
    b->lock = (vt__spinlock)VT__SPINLOCK_INIT;
    b->max = max;
    b->cap = cap;
    b->tiers[0].b = b;
    vt_err e = tier_start(&b->tiers[0], 0, next_size(0, max));
    if (e != VT_OK) {
        vt_free(b, blocking_bytes(cap));
        return e;
    }
    b->ntiers = 1;
    b->started = b->tiers[0].size;
    struct vt__blocking *seen = NULL;
    if (!atomic_compare_exchange_strong_explicit(slot, &seen, b, memory_order_acq_rel,
                                                 memory_order_acquire)) {
        vt__blocking_free(b); /* another fiber was first */
        b = seen;
    }
    *out = b;
    return VT_OK;
}

void vt__blocking_free(struct vt__blocking *b)
{
    if (!b)
        return;
    /* Every caller has its result by now; the pools finish the drainers
     * that are on their way out and join their threads. */
    for (unsigned i = 0; i < b->ntiers; i++)
        vt_pool_free(b->tiers[i].pool);
    vt_free(b, blocking_bytes(b->cap));
}

vt_err vt_blocking_run(void *(*fn)(void *arg), void *arg, void **result)
{
    if (!fn)
        return VT_EINVAL;
    if (!vt_fiber_in()) {
        void *r = fn(arg);
        if (result)
            *result = r;
        return VT_OK;
    }
    vt_runtime *rt = vt__runtime_self();
    if (vt__runtime_closing(rt))
        return VT_ECLOSED;
    struct vt__blocking *b;
    vt_err e = blocking_get(rt, &b);
    if (e != VT_OK)
        return e;
    bcall c = {.fn = fn, .arg = arg};
    vt__waiter_init(&c.w, "blocking call", b, VT__WAIT_NOCANCEL);
    if (submit(b, &c)) {
        /* Ran here: nobody else can claim the wait, and ending it keeps
         * the parker from looking like it waits. */
        (void)vt__waiter_claim(&c.w);
    } else if ((e = vt__waiter_wait(&c.w, VT_FOREVER)) != VT_OK) {
        /* A wait without deadline or cancellation ends only when claimed. */
        vt_log(VT_LOG_ERROR, "async", "blocking call: wait ended with %s", vt_errname(e));
        return e;
    }
    if (result)
        *result = c.result;
    return VT_OK;
}
