/* Batch donation between the closure deques of a LIFO pool.
 *
 * A thief stealing one job at a time from a worker that fans out thousands
 * bounces the victim's cache lines on every job and can make two workers
 * slower than one. A thief cannot safely take a batch itself: with the
 * owner's fence-free take of its newest job, a thief's view of `bottom` may
 * be stale by any number of jobs, so its batch could overlap the job the
 * owner is taking. The owner, though, can move a batch off the other end of
 * its own deque with one CAS on top: that only races single-job thieves,
 * which CAS top too, and never its own takes, which it does itself. So a
 * thief asks (`want`), and the owner reserves up to VT__DONATE_MAX of its
 * oldest jobs for it at its next push or take. The thief then reads those
 * slots from the owner's buffer itself, and tells the owner it is done, so
 * that until then the owner does not reuse them (see top_seen and hold in
 * vt__deque). Single steals still happen meanwhile, so a busy owner delays
 * nobody's progress. */
#include "sched_int.h"

/* How long a thief that asked looks at its inbox before stealing a single
 * job instead: an owner that pushes or takes answers within a few dozen
 * nanoseconds; one that runs a long job does not, and is waited for no
 * more than a few microseconds. */
#define INBOX_WAIT_SPINS 256

int vt__donate_ask(vt__wk *self, vt__wk *victim)
{
    if (vt__deque_size(&victim->dq) < 4 || atomic_load_explicit(&victim->want, memory_order_relaxed) ||
        atomic_load_explicit(&self->inbox_state, memory_order_relaxed) != VT__INBOX_EMPTY)
        return 0;
    uint32_t none = 0;
    return atomic_compare_exchange_strong_explicit(&victim->want, &none, self->index + 1, memory_order_relaxed,
                                                   memory_order_relaxed);
}

int vt__inbox_wait(vt__wk *w, vt__job *job)
{
    for (int i = 0; i < INBOX_WAIT_SPINS; i++) {
        if (atomic_load_explicit(&w->inbox_state, memory_order_relaxed) == VT__INBOX_FULL)
            return vt__inbox_take(w, job);
        vt__cpu_relax();
    }
    return vt__inbox_take(w, job);
}

void vt__donate(vt__wk *w)
{
    uint32_t who = atomic_exchange_explicit(&w->want, 0, memory_order_relaxed);
    vt_pool *p = w->pool;
    vt__deque *d = &w->dq;
    if (!who || who > p->nworkers || who - 1 == w->index)
        return;
    if (d->hold_local != INT64_MAX) {
        /* One range out at a time: the last one must have been read. */
        if (atomic_load_explicit(&d->hold, memory_order_acquire) >= 0)
            return;
        d->hold_local = INT64_MAX;
    }
    vt__wk *thief = &p->workers[who - 1];
    uint32_t empty = VT__INBOX_EMPTY;
    if (!atomic_compare_exchange_strong_explicit(&thief->inbox_state, &empty, VT__INBOX_FILLING,
                                                 memory_order_acquire, memory_order_relaxed))
        return;
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
    for (int tries = 0; tries < 4; tries++) {
        int64_t t = atomic_load_explicit(&d->top, memory_order_acquire);
        int64_t n = b - t;
        if (n < 4)
            break;
        int64_t take = n / 2 < VT__DONATE_MAX ? n / 2 : VT__DONATE_MAX;
        if (atomic_compare_exchange_strong_explicit(&d->top, &t, t + take, memory_order_seq_cst,
                                                    memory_order_relaxed)) {
            /* Hold the range before anything else can reuse its slots. */
            d->hold_local = t;
            atomic_store_explicit(&d->hold, t, memory_order_relaxed);
            thief->inbox_buf = atomic_load_explicit(&d->buf, memory_order_relaxed);
            thief->inbox_start = t;
            thief->inbox_n = (uint32_t)take;
            thief->inbox_src = d;
            atomic_store_explicit(&thief->inbox_state, VT__INBOX_FULL, memory_order_release);
            /* The thief may have given up and parked in the meantime. */
            vt__pool_wake_worker(p, thief);
            return;
        }
    }
    atomic_store_explicit(&thief->inbox_state, VT__INBOX_EMPTY, memory_order_release);
}

static vt__job slot_job(const vt__dq_buf *a, int64_t i)
{
    const vt__dq_slot *s = &a->slot[i & a->mask];
    vt__job j = {atomic_load_explicit((_Atomic(vt_job_fn) *)&s->fn, memory_order_relaxed),
                 atomic_load_explicit((_Atomic(void *) *)&s->arg, memory_order_relaxed), 0};
    return j;
}

static void release_inbox(vt__wk *w)
{
    atomic_store_explicit(&w->inbox_src->hold, -1, memory_order_release);
    atomic_store_explicit(&w->inbox_state, VT__INBOX_EMPTY, memory_order_release);
}

int vt__inbox_take(vt__wk *w, vt__job *job)
{
    if (atomic_load_explicit(&w->inbox_state, memory_order_acquire) != VT__INBOX_FULL)
        return 0;
    const vt__dq_buf *a = w->inbox_buf;
    int64_t start = w->inbox_start, end = start + w->inbox_n;
    vt__count(&w->m.received, w->inbox_n);
    *job = slot_job(a, start);
    for (int64_t i = start + 1; i < end; i++) {
        vt__job j = slot_job(a, i);
        if (vt__deque_push(&w->dq, j.fn, j.arg) != VT_OK) {
            /* No memory to queue them: the rest stay reserved in the inbox
             * for the next look (the first is handed back now). */
            w->inbox_start = i;
            w->inbox_n = (uint32_t)(end - i);
            /* Counted again when the rest is taken. */
            vt__count(&w->m.received, (uint64_t)-(end - i));
            return 1;
        }
    }
    release_inbox(w);
    return 1;
}

size_t vt__inbox_drain(vt__wk *w, void (*fn)(void *ud, vt__job job), void *ud)
{
    if (atomic_load_explicit(&w->inbox_state, memory_order_acquire) != VT__INBOX_FULL)
        return 0;
    for (uint32_t k = 0; k < w->inbox_n; k++)
        fn(ud, slot_job(w->inbox_buf, w->inbox_start + k));
    size_t n = w->inbox_n;
    release_inbox(w);
    return n;
}
