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
 * thief asks (`want`), and the owner gives at its next push or take. Single
 * steals still happen meanwhile, so a busy owner delays nobody's progress. */
#include "sched_int.h"

void vt__donate_ask(vt__wk *self, vt__wk *victim)
{
    if (vt__deque_size(&victim->dq) < 4 || atomic_load_explicit(&victim->want, memory_order_relaxed) ||
        atomic_load_explicit(&self->inbox_state, memory_order_relaxed) != VT__INBOX_EMPTY)
        return;
    uint32_t none = 0;
    atomic_compare_exchange_strong_explicit(&victim->want, &none, self->index + 1, memory_order_relaxed,
                                            memory_order_relaxed);
}

void vt__donate(vt__wk *w)
{
    uint32_t who = atomic_exchange_explicit(&w->want, 0, memory_order_relaxed);
    vt_pool *p = w->pool;
    if (!who || who > p->nworkers || who - 1 == w->index)
        return;
    vt__wk *thief = &p->workers[who - 1];
    uint32_t empty = VT__INBOX_EMPTY;
    if (!atomic_compare_exchange_strong_explicit(&thief->inbox_state, &empty, VT__INBOX_FILLING,
                                                 memory_order_acquire, memory_order_relaxed))
        return;
    vt__deque *d = &w->dq;
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
    vt__dq_buf *a = atomic_load_explicit(&d->buf, memory_order_relaxed);
    uint32_t k = 0;
    for (int tries = 0; tries < 4; tries++) {
        int64_t t = atomic_load_explicit(&d->top, memory_order_acquire);
        int64_t n = b - t;
        if (n < 4)
            break;
        int64_t take = n / 2 < VT__DONATE_MAX ? n / 2 : VT__DONATE_MAX;
        for (int64_t i = 0; i < take; i++) {
            vt__dq_slot *s = &a->slot[(t + i) & a->mask];
            thief->inbox[i].fn = atomic_load_explicit(&s->fn, memory_order_relaxed);
            thief->inbox[i].arg = atomic_load_explicit(&s->arg, memory_order_relaxed);
            thief->inbox[i].tag = 0;
        }
        if (atomic_compare_exchange_strong_explicit(&d->top, &t, t + take, memory_order_seq_cst,
                                                    memory_order_relaxed)) {
            k = (uint32_t)take;
            d->top_seen = t + take;
            break;
        }
    }
    if (!k) {
        atomic_store_explicit(&thief->inbox_state, VT__INBOX_EMPTY, memory_order_release);
        return;
    }
    thief->inbox_n = k;
    atomic_store_explicit(&thief->inbox_state, VT__INBOX_FULL, memory_order_release);
    /* The thief may have given up and parked in the meantime. */
    vt__pool_wake_worker(p, thief);
}

int vt__inbox_take(vt__wk *w, vt__job *job)
{
    if (atomic_load_explicit(&w->inbox_state, memory_order_acquire) != VT__INBOX_FULL)
        return 0;
    uint32_t n = w->inbox_n;
    *job = w->inbox[0];
    uint32_t i = 1;
    for (; i < n; i++)
        if (vt__deque_push(&w->dq, w->inbox[i].fn, w->inbox[i].arg) != VT_OK)
            break;
    if (i < n) {
        /* No memory to queue them: keep the rest in the inbox for the next
         * look (the first is handed back now). */
        for (uint32_t j = i; j < n; j++)
            w->inbox[j - i] = w->inbox[j];
        w->inbox_n = n - i;
        /* The job handed back is not in the inbox any more. */
        return 1;
    }
    atomic_store_explicit(&w->inbox_state, VT__INBOX_EMPTY, memory_order_release);
    return 1;
}
