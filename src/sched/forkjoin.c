/* Fork–join on a split deque, after Lace (van Dijk and van de Pol, 2014).
 *
 * Each worker keeps its frames in one array. Frames below `split` are
 * shared: thieves claim the oldest with one CAS on the word (tail, split).
 * Frames at and above `split` are private: the owner spawns and syncs them
 * with plain loads and stores (the inline half lives in vitte/sched.h). A
 * thief that finds nothing shared raises `movesplit`; the owner answers at
 * its next spawn or sync by sharing half of its private frames, and takes
 * frames back (shrinking the shared part) only when it syncs one that is
 * shared. So the cost of stealing falls on the thieves and on the rare
 * moments the owner meets them, never on a spawn or sync that nobody saw.
 *
 * Unlike Lace, the owner moves split with atomic read-modify-writes on the
 * whole word instead of 32-bit stores into half of it: that keeps the
 * protocol inside the C11 memory model (and visible to ThreadSanitizer), at
 * the price of one locked instruction on those rare moments. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "sched_int.h"

#define TS_TAIL(v) ((uint32_t)(v))
#define TS_SPLIT(v) ((uint32_t)((v) >> 32))
#define TS(tail, split) ((uint64_t)(tail) | ((uint64_t)(split) << 32))

/* Failed leapfrog attempts before a random steal, and before yielding the
 * CPU to the thief (which may be waiting for it on an oversubscribed box). */
#define LEAP_RANDOM_EVERY 32
#define LEAP_YIELD_AFTER 256

vt_err vt__fj_init(vt__wk *w, uint32_t frames)
{
    w->frames_bytes = (size_t)frames * sizeof(vt__frame);
    vt__frame *dq = vt__vm_reserve(w->frames_bytes);
    if (!dq)
        return errno == ENOMEM ? VT_ENOMEM : vt_err_from_errno(errno);
    w->fj.dq = dq;
    w->fj.end = dq + frames;
    w->fj.split = dq;
    w->fj.shared = &w->fjs;
    w->fj.allstolen = 1;
    w->fjs.dq = dq;
    atomic_init(&w->fjs.ts, 0);
    atomic_init(&w->fj.movesplit, 0);
    return VT_OK;
}

void vt__fj_destroy(vt__wk *w)
{
    vt__vm_release(w->fj.dq, w->frames_bytes);
    w->fj.dq = NULL;
}

void vt__fj_overflow(vt__worker *w)
{
    fprintf(stderr,
            "vitte: fork-join frames exhausted on a worker: %u spawns pending at once "
            "(raise vt_pool_opts.frames, or sync sooner)\n",
            (unsigned)(w->end - w->dq));
    abort();
}

/* Shares half of the private frames below head (all of [split, head) when
 * one is left), answering a thief's request. */
static void grow_shared(vt__worker *w, vt__frame *head)
{
    uint32_t s = (uint32_t)(w->split - w->dq);
    uint32_t h = (uint32_t)(head - w->dq);
    uint32_t add = (h - s + 1) / 2;
    if (add) {
        /* Only the owner writes the split half and the tail half never
         * exceeds it, so adding to the high word cannot carry: one RMW,
         * and release publishes the frames' contents to the thieves. */
        atomic_fetch_add_explicit(&w->shared->ts, (uint64_t)add << 32, memory_order_release);
        w->split += add;
        /* The thief that asked may have given up and parked since. */
        vt__pool_maybe_wake(((vt__wk *)w)->pool);
    }
    atomic_store_explicit(&w->movesplit, 0, memory_order_relaxed);
}

void vt__fj_spawn_slow(vt__worker *w, vt__frame *head)
{
    if (w->allstolen) {
        /* Nothing of ours is left for thieves (tail == split), so no thief
         * can succeed a CAS now and a plain store may restart the shared
         * part with this frame alone. */
        uint32_t h = (uint32_t)(head - w->dq);
        atomic_store_explicit(&w->movesplit, 0, memory_order_relaxed);
        atomic_store_explicit(&w->shared->ts, TS(h, h + 1), memory_order_release);
        w->split = head + 1;
        w->allstolen = 0;
        /* New stealable work after none: make sure someone comes for it. */
        vt__wk *self = (vt__wk *)w;
        vt__pool_maybe_wake(self->pool);
    } else {
        grow_shared(w, head + 1);
    }
}

/* Takes back half of the shared frames (those nearest head), or finds that
 * all were stolen. Returns 1 when all were. */
static int shrink_shared(vt__worker *w)
{
    uint64_t v = atomic_load_explicit(&w->shared->ts, memory_order_relaxed);
    for (;;) {
        uint32_t t = TS_TAIL(v), s = TS_SPLIT(v);
        if (t == s) {
            w->allstolen = 1;
            return 1;
        }
        uint32_t ns = t + (s - t) / 2;
        if (atomic_compare_exchange_weak_explicit(&w->shared->ts, &v, TS(t, ns), memory_order_acq_rel,
                                                  memory_order_relaxed)) {
            w->split = w->dq + ns;
            return 0;
        }
    }
}

int vt__fj_steal(vt__wk *self, vt__frame *self_head, vt__wk *victim)
{
    vt__fj_shared *sh = &victim->fjs;
    uint64_t v = atomic_load_explicit(&sh->ts, memory_order_acquire);
    uint32_t t = TS_TAIL(v), s = TS_SPLIT(v);
    if (t >= s) {
        if (!atomic_load_explicit(&victim->fj.movesplit, memory_order_relaxed))
            atomic_store_explicit(&victim->fj.movesplit, 1, memory_order_relaxed);
        return VT__STEAL_NONE;
    }
    if (!atomic_compare_exchange_strong_explicit(&sh->ts, &v, TS(t + 1, s), memory_order_acq_rel,
                                                 memory_order_relaxed))
        return VT__STEAL_BUSY;
    vt__frame *f = sh->dq + t;
    /* The owner, if it syncs this frame while we run it, steals back from
     * us: tell it who we are. */
    atomic_store_explicit(&f->thief, (uintptr_t)self, memory_order_relaxed);
    vt__count(&self->m.stolen, 1);
    vt__count(&self->m.frames, 1);
    f->run(&self->fj, self_head, f);
    atomic_store_explicit(&f->thief, VT__THIEF_DONE, memory_order_release);
    return VT__STEAL_DONE;
}

int vt__fj_has_work(vt__wk *w)
{
    uint64_t v = atomic_load_explicit(&w->fjs.ts, memory_order_relaxed);
    return TS_TAIL(v) < TS_SPLIT(v);
}

/* The frame at head was stolen: until its thief is done, steal back from
 * the thief (whose frames are parts of our frame's work, so we only ever
 * help our own computation and the stack stays bounded), now and then from
 * anyone. */
static void leapfrog(vt__wk *self, vt__frame *head)
{
    uintptr_t th = atomic_load_explicit(&head->thief, memory_order_acquire);
    unsigned spins = 0;
    while (th == VT__THIEF_EMPTY) {
        /* Claimed, but the thief has not written its name yet. */
        if (++spins > LEAP_YIELD_AFTER)
            vt__thread_yield();
        else
            vt__cpu_relax();
        th = atomic_load_explicit(&head->thief, memory_order_acquire);
    }
    vt_pool *p = self->pool;
    unsigned fails = 0;
    while (th != VT__THIEF_DONE) {
        vt__wk *thief = (vt__wk *)th;
        int r = vt__fj_steal(self, head + 1, thief);
        if (r == VT__STEAL_NONE) {
            fails++;
            if (fails % LEAP_RANDOM_EVERY == 0 && p->nworkers > 2) {
                vt__wk *v = &p->workers[vt__rand_below(&self->rng, p->nworkers)];
                if (v != self && v != thief)
                    vt__fj_steal(self, head + 1, v);
            }
            if (fails > LEAP_YIELD_AFTER)
                vt__thread_yield();
            else
                vt__cpu_relax();
        } else {
            fails = 0;
        }
        th = atomic_load_explicit(&head->thief, memory_order_acquire);
    }
    /* Ready for the next spawn into this slot. */
    atomic_store_explicit(&head->thief, VT__THIEF_EMPTY, memory_order_relaxed);
}

int vt__fj_sync_slow(vt__worker *w, vt__frame *head)
{
    if (w->allstolen || (w->split > head && shrink_shared(w))) {
        leapfrog((vt__wk *)w, head);
        /* Work stolen back while waiting may have left split anywhere above
         * head; every live frame below head is stolen, so the next spawn
         * must restart the shared part (see vt__fj_spawn_slow). */
        w->allstolen = 1;
        return 1;
    }
    if (atomic_load_explicit(&w->movesplit, memory_order_relaxed))
        grow_shared(w, head);
    return 0;
}

/* ---- Running a task from outside a task body -------------------------------- */

typedef struct root_ctx {
    vt__frame *frame;
    _Atomic uint32_t done;
} root_ctx;

static void run_root_job(void *arg)
{
    root_ctx *c = arg;
    vt__wk *w = vt__worker_self();
    c->frame->run(&w->fj, w->fj.dq, c->frame);
    atomic_store_explicit(&c->done, 1, memory_order_release);
    vt__futex_wake(&c->done, 1);
}

static int root_done(void *arg)
{
    root_ctx *c = arg;
    return atomic_load_explicit(&c->done, memory_order_acquire) != 0;
}

/* Runs root on the calling thread in a guest slot: VT_EBUSY when none is
 * free. The root counts as a job of the guest (so vt_pool_wait_idle sees
 * it), and closure jobs its tasks submitted are handed to the pool before
 * the guest leaves. */
static vt_err run_as_guest(vt_pool *p, vt__frame *root)
{
    vt__wk *g = NULL;
    for (unsigned i = p->nworkers; i < p->nslots && !g; i++) {
        uint32_t free_slot = 0;
        if (atomic_compare_exchange_strong_explicit(&p->workers[i].guest_busy, &free_slot, 1,
                                                    memory_order_acquire, memory_order_relaxed))
            g = &p->workers[i];
    }
    if (!g)
        return VT_EBUSY;
    if (atomic_load_explicit(&p->state, memory_order_acquire) != VT__RUNNING) {
        atomic_store_explicit(&g->guest_busy, 0, memory_order_release);
        return VT_ECLOSED;
    }
    atomic_store_explicit(&g->m.submitted, atomic_load_explicit(&g->m.submitted, memory_order_relaxed) + 1,
                          memory_order_release);
    vt__wk *saved = vt__self;
    vt__self = g;
    /* FAIR: what the root's tasks submit is in the calling thread's group. */
    g->group = ((uint64_t)1 << 32) | vt__thread_id();
    /* Our CPU is awake; a thief's is probably not: wake one now. */
    vt__pool_wake_one(p);
    root->run(&g->fj, g->fj.dq, root);
    vt__job job;
    while (vt__deque_take(&g->dq, &job)) {
        /* Already counted as submitted by the guest: queue without recount. */
        if (vt__squeue_push(&p->sq, job, 0) != VT_OK)
            vt__pool_run_job(g, &job); /* no memory to queue it: run it here */
    }
    vt__pool_maybe_wake(p);
    atomic_store_explicit(&g->m.finished, atomic_load_explicit(&g->m.finished, memory_order_relaxed) + 1,
                          memory_order_release);
    vt__self = saved;
    atomic_store_explicit(&g->guest_busy, 0, memory_order_release);
    vt__pool_notify_quiet(p);
    return VT_OK;
}

vt_err vt__fj_run_root(vt_pool *p, vt__frame *root)
{
    if (!p)
        return VT_EINVAL;
    vt__wk *w = vt__worker_self();
    if (w && w->pool == p) {
        /* A job of this pool: its frames start at the bottom of the deque,
         * which is empty between jobs. */
        if (atomic_load_explicit(&p->state, memory_order_relaxed) >= VT__CANCELLING)
            return VT_ECLOSED;
        vt__pool_maybe_wake(p);
        root->run(&w->fj, w->fj.dq, root);
        return VT_OK;
    }
    if (p->nslots > p->nworkers) {
        vt_err e = run_as_guest(p, root);
        if (e != VT_EBUSY)
            return e;
    }
    root_ctx c = {.frame = root};
    atomic_init(&c.done, 0);
    vt_err e = vt_pool_submit(p, run_root_job, &c);
    if (e)
        return e;
    /* The submission woke one worker for the root; a fork–join tree will
     * want a thief too. Waking it now overlaps the two wake-ups, which on a
     * machine whose idle CPUs sleep cost tens of microseconds each. */
    if (p->nworkers > 1)
        vt__pool_wake_one(p);
    if (p->opts.deterministic)
        return vt__det_drive(p, VT_FOREVER, root_done, &c) == VT_OK && root_done(&c) ? VT_OK : VT_ECLOSED;
    while (!atomic_load_explicit(&c.done, memory_order_acquire))
        vt__futex_wait(&c.done, 0, VT_FOREVER);
    return VT_OK;
}
