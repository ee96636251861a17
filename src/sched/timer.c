/* timer.c — the pool's timer service: the wheel (wheel.c) behind a
 * spinlock, and in threaded mode the thread that fires it.
 *
 * Every wheel operation is a few dozen instructions under the lock; jobs are
 * dispatched outside it, from batches of at most BATCH timers copied out
 * under it, so adders and cancellers wait for one batch at most, never for a
 * whole expiry. The slab grows outside the lock too.
 *
 * The firing thread sleeps on a futex until a lower bound of the earliest
 * deadline (the exact deadline when it is on level 0 of the wheel, else the
 * start of its slot, where a cascade is due), or for ever when no timer is
 * pending: no periodic tick. An add wakes it only when it files a deadline
 * before the one it sleeps until.
 *
 * An expiry fires the timers due at `now` that were pending when it began.
 * A timer added during it (by a dispatch, or by another thread) waits for
 * the next call even if already due, so that a dispatch re-adding a due
 * timer cannot keep one call going for ever; and since timers fire in
 * order, a due timer that sorts after such a newcomer waits too. Both
 * callers loop: the thread expires again at once (its bound is then in the
 * past), the deterministic pool asks for the next deadline, which is due. */
#include "sched_int.h"

#include "wheel.h"

/* Timers dispatched per lock round: enough to amortise the lock, few enough
 * that a round holds it for microseconds. */
#define BATCH 64

struct vt__timers {
    vt__spinlock lock;
    /* The firing thread's state, under the lock: it sleeps until
     * sleep_until; INT64_MIN while awake (nobody needs to wake it). */
    int64_t sleep_until;
    int stopping;
    int threaded;
    vt__wheel wheel;
    vt__timer_dispatch_fn dispatch;
    void *ud;
    vt__thread thread;
    _Atomic uint32_t wake_seq;
    _Atomic uint64_t pending;
    _Atomic uint64_t fired;
    vt__timer_announce_fn announce;
};

void vt__timers_set_announce(vt__timers *t, vt__timer_announce_fn announce)
{
    t->announce = announce;
}

/* pending and fired change only under the lock: a load and a store, no
 * locked instruction. Readers outside it load them with acquire. */
static inline void count(_Atomic uint64_t *c, uint64_t delta)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + delta,
                          memory_order_release);
}

size_t vt__timers_expire(vt__timers *t, int64_t now)
{
    if (!t)
        return 0;
    vt__wrec out[BATCH];
    size_t total = 0;
    int more;
    vt__spin_lock(&t->lock);
    /* Timers added from here on wait for the next call (see top). */
    uint64_t seq_end = t->wheel.seq;
    for (;;) {
        size_t n = vt__wheel_take(&t->wheel, now, seq_end, out, BATCH, &more);
        if (n) {
            /* Counted fired, and announced, before the jobs are queued and
             * before pending drops: whoever sees a fired timer's job run, or
             * pending drop, also sees the counts of its owner. */
            count(&t->fired, n);
            if (t->announce)
                t->announce(t->ud, n);
            count(&t->pending, -(uint64_t)n);
            vt__spin_unlock(&t->lock);
            for (size_t i = 0; i < n; i++)
                t->dispatch(t->ud, out[i].fn, out[i].arg);
            total += n;
            vt__spin_lock(&t->lock);
        }
        if (!more)
            break;
        /* Let adders and cancellers in between two bounded steps: a waiter
         * needs a moment to see the lock free before this thread, which
         * still holds its cache line, takes it back. */
        vt__spin_unlock(&t->lock);
        for (int i = 0; i < 8; i++)
            vt__cpu_relax();
        vt__spin_lock(&t->lock);
    }
    vt__spin_unlock(&t->lock);
    return total;
}

static void *timer_thread(void *arg)
{
    vt__timers *t = arg;
    for (;;) {
        vt__timers_expire(t, vt_now_ns());
        vt__spin_lock(&t->lock);
        if (t->stopping) {
            vt__spin_unlock(&t->lock);
            return NULL;
        }
        int64_t until = vt__wheel_bound(&t->wheel);
        if (until == VT_FOREVER)
            until = INT64_MAX;
        uint32_t seen = atomic_load_explicit(&t->wake_seq, memory_order_relaxed);
        t->sleep_until = until;
        vt__spin_unlock(&t->lock);
        /* A deadline that passed meanwhile makes the wait return at once. */
        vt__futex_wait(&t->wake_seq, seen, until == INT64_MAX ? VT_FOREVER : until);
        vt__spin_lock(&t->lock);
        t->sleep_until = INT64_MIN;
        vt__spin_unlock(&t->lock);
    }
}

vt_err vt__timers_new(vt__timers **out, int threaded, vt__timer_dispatch_fn dispatch, void *ud,
                      const char *thread_name)
{
    if (!out || !dispatch)
        return VT_EINVAL;
    *out = NULL;
    vt__timers *t = vt_alloc(sizeof *t);
    if (!t)
        return VT_ENOMEM;
    t->lock = (vt__spinlock)VT__SPINLOCK_INIT;
    t->sleep_until = INT64_MIN;
    t->stopping = 0;
    t->threaded = threaded != 0;
    vt__wheel_init(&t->wheel);
    t->dispatch = dispatch;
    t->announce = NULL;
    t->ud = ud;
    atomic_init(&t->wake_seq, 0);
    atomic_init(&t->pending, 0);
    atomic_init(&t->fired, 0);
    if (t->threaded) {
        vt_err e = vt__thread_create(&t->thread, timer_thread, t, 0,
                                     thread_name ? thread_name : "vitte-timer");
        if (e != VT_OK) {
            vt_free(t, sizeof *t);
            return e;
        }
    }
    *out = t;
    return VT_OK;
}

size_t vt__timers_cancel_all(vt__timers *t, vt_cancel_fn on_cancel, void *cancel_ud)
{
    if (!t)
        return 0;
    vt__wrec out[BATCH];
    size_t total = 0;
    int more;
    do {
        vt__spin_lock(&t->lock);
        size_t n = vt__wheel_pop_any(&t->wheel, out, BATCH, &more);
        vt__spin_unlock(&t->lock);
        if (on_cancel)
            for (size_t i = 0; i < n; i++)
                on_cancel(cancel_ud, out[i].fn, out[i].arg);
        if (n) {
            vt__spin_lock(&t->lock);
            count(&t->pending, -(uint64_t)n);
            vt__spin_unlock(&t->lock);
        }
        total += n;
    } while (more);
    return total;
}

void vt__timers_free(vt__timers *t, vt_cancel_fn on_cancel, void *cancel_ud)
{
    if (!t)
        return;
    if (t->threaded) {
        vt__spin_lock(&t->lock);
        t->stopping = 1;
        atomic_fetch_add_explicit(&t->wake_seq, 1, memory_order_relaxed);
        vt__spin_unlock(&t->lock);
        vt__futex_wake(&t->wake_seq, INT32_MAX);
        vt__thread_join(t->thread, NULL);
    }
    vt__timers_cancel_all(t, on_cancel, cancel_ud);
    vt__wheel_destroy(&t->wheel);
    vt_free(t, sizeof *t);
}

vt_err vt__timers_add(vt__timers *t, int64_t deadline, vt_job_fn fn, void *arg, vt_timer *out)
{
    if (!t || !fn)
        return VT_EINVAL;
    /* Every deadline before the clock's start is equally past; keeping them
     * at 0 keeps VT_FOREVER (-1) free to mean "no timer". */
    if (deadline < 0)
        deadline = 0;
    vt__spin_lock(&t->lock);
    while (VT_UNLIKELY(!vt__wheel_reserve(&t->wheel))) {
        /* Allocate outside the lock; if another adder installed this chunk
         * meanwhile, give ours back and use theirs. */
        unsigned k = t->wheel.nchunks;
        size_t bytes = vt__wheel_chunk_bytes(k);
        vt__spin_unlock(&t->lock);
        void *mem = bytes ? vt_alloc(bytes) : NULL;
        if (!mem)
            return VT_ENOMEM;
        vt__spin_lock(&t->lock);
        if (t->wheel.nchunks == k) {
            vt__wheel_add_chunk(&t->wheel, mem);
        } else {
            vt__spin_unlock(&t->lock);
            vt_free(mem, bytes);
            vt__spin_lock(&t->lock);
        }
    }
    uint64_t id = vt__wheel_add(&t->wheel, deadline, fn, arg);
    int wake = deadline < t->sleep_until;
    if (wake) {
        t->sleep_until = INT64_MIN;
        atomic_fetch_add_explicit(&t->wake_seq, 1, memory_order_relaxed);
    }
    count(&t->pending, 1);
    vt__spin_unlock(&t->lock);
    if (wake)
        vt__futex_wake(&t->wake_seq, 1);
    if (out)
        out->id = id;
    return VT_OK;
}

vt_err vt__timers_cancel(vt__timers *t, vt_timer id)
{
    if (!t)
        return VT_EINVAL;
    vt__spin_lock(&t->lock);
    vt_err e = vt__wheel_cancel(&t->wheel, id.id);
    if (e == VT_OK)
        count(&t->pending, (uint64_t)-1);
    vt__spin_unlock(&t->lock);
    /* The firing thread may now wake for a timer that is gone: it finds
     * nothing due and sleeps again, cheaper than waking it here. */
    return e;
}

int64_t vt__timers_next_deadline(vt__timers *t)
{
    if (!t)
        return VT_FOREVER;
    vt__spin_lock(&t->lock);
    int64_t d = vt__wheel_next(&t->wheel, !t->threaded);
    vt__spin_unlock(&t->lock);
    return d;
}

uint64_t vt__timers_pending(vt__timers *t)
{
    return t ? atomic_load_explicit(&t->pending, memory_order_acquire) : 0;
}

uint64_t vt__timers_fired(vt__timers *t)
{
    return t ? atomic_load_explicit(&t->fired, memory_order_acquire) : 0;
}
