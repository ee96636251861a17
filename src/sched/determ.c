/* Deterministic mode: one worker, no thread of its own. The thread that
 * waits on the pool runs it: it picks each job at random among all ready
 * ones with a generator seeded by the pool's options, and when nothing is
 * ready it moves the virtual clock to the earliest timer and fires it. So a
 * program's order of execution depends on the seed alone, and a test of
 * timeouts takes no real time. */
#include "sched_int.h"

vt_err vt__det_push(vt_pool *p, vt__job job)
{
    vt__spin_lock(&p->det_lock);
    if (p->det_count == p->det_cap) {
        size_t cap = p->det_cap ? p->det_cap * 2 : 64;
        vt__job *ready = vt_realloc(p->det_ready, p->det_cap * sizeof(*ready), cap * sizeof(*ready));
        if (!ready) {
            vt__spin_unlock(&p->det_lock);
            return VT_ENOMEM;
        }
        p->det_ready = ready;
        p->det_cap = cap;
    }
    p->det_ready[p->det_count++] = job;
    vt__spin_unlock(&p->det_lock);
    return VT_OK;
}

int vt__det_pick(vt_pool *p, vt__job *job)
{
    vt__spin_lock(&p->det_lock);
    size_t n = p->det_count;
    if (!n) {
        vt__spin_unlock(&p->det_lock);
        return 0;
    }
    size_t i = vt__rand_below(&p->det_rng, (uint32_t)(n > UINT32_MAX ? UINT32_MAX : n));
    *job = p->det_ready[i];
    p->det_ready[i] = p->det_ready[n - 1];
    p->det_count = n - 1;
    vt__spin_unlock(&p->det_lock);
    return 1;
}

vt_err vt__det_drive(vt_pool *p, int64_t until, int (*stop)(void *), void *ctx)
{
    vt__wk *w = &p->workers[0];
    if (vt__self == w)
        return VT_ESTATE; /* a job of this pool waiting for the pool */
    int expected = 0;
    if (!atomic_compare_exchange_strong(&p->det_driving, &expected, 1))
        return VT_EBUSY; /* another thread drives it */
    vt__wk *saved = vt__self;
    vt_err e = VT_OK;
    vt__self = w;
    vt__job job;
    for (;;) {
        if (stop && stop(ctx))
            break;
        if (vt__det_pick(p, &job)) {
            vt__pool_run_job(w, &job);
            continue;
        }
        int64_t next = vt__timers_next_deadline(p->timers);
        if (next == VT_FOREVER)
            break; /* quiet */
        int64_t now = atomic_load_explicit(&p->det_clock, memory_order_relaxed);
        if (until != VT_FOREVER && next > until) {
            if (until > now)
                atomic_store_explicit(&p->det_clock, until, memory_order_release);
            e = VT_ETIMEDOUT;
            break;
        }
        if (next > now)
            atomic_store_explicit(&p->det_clock, next, memory_order_release);
        vt__timers_expire(p->timers, next > now ? next : now);
    }
    vt__self = saved;
    atomic_store(&p->det_driving, 0);
    return e;
}
