/* stress_timer.c — the threaded timer service under concurrent adds,
 * cancels (of one's own timers and of other threads'), cancel-all and
 * extra expiry calls, while its thread fires. The accounting is exact:
 * every timer fired once, or was cancelled (by a successful cancel or by
 * cancel-all / free, each reporting it once), never two of these; and none
 * fired before its deadline. */
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vt_test.h"
#include "sched/sched_int.h"

enum {
    ADDERS = 3
};

typedef struct tinfo {
    int64_t deadline;
    _Atomic uint64_t handle; /* 0 until published */
    _Atomic uint32_t fired, cancelled, reported;
} tinfo;

typedef struct world {
    vt__timers *t;
    tinfo *ti;
    size_t per_thread;
    uint64_t seed;
    _Atomic int adders_done;
    _Atomic uint64_t early;
    _Atomic uint64_t bad_errors;
    _Atomic uint64_t dispatched;
    int with_cancel_all;
} world;

static void job_fn(void *arg)
{
    (void)arg;
}

static void dispatch(void *ud, vt_job_fn fn, void *arg)
{
    world *w = ud;
    tinfo *x = &w->ti[(uintptr_t)arg];
    (void)fn;
    if (vt_now_ns() < x->deadline)
        atomic_fetch_add(&w->early, 1);
    atomic_fetch_add(&x->fired, 1);
    atomic_fetch_add(&w->dispatched, 1);
}

static void on_cancel(void *ud, vt_job_fn fn, void *arg)
{
    world *w = ud;
    (void)fn;
    atomic_fetch_add(&w->ti[(uintptr_t)arg].reported, 1);
}

typedef struct adder {
    world *w;
    unsigned id;
    pthread_t th;
} adder;

static void *adder_main(void *arg)
{
    adder *a = arg;
    world *w = a->w;
    uint64_t rng = w->seed ^ (0x9e3779b97f4a7c15ull * (a->id + 1));
    size_t base = a->id * w->per_thread, total = ADDERS * w->per_thread;
    for (size_t k = 0; k < w->per_thread; k++) {
        size_t i = base + k;
        tinfo *x = &w->ti[i];
        int64_t now = vt_now_ns();
        uint32_t r = vt__rand_below(&rng, 100);
        /* Mostly within 2 ms, some in the past, a few far (cancelled or
         * reported at the end). */
        x->deadline = r < 10   ? now - (int64_t)vt__rand_below(&rng, 1000000)
                      : r < 95 ? now + (int64_t)vt__rand_below(&rng, 2000000)
                               : now + VT_SEC(3600);
        vt_timer h;
        if (vt__timers_add(w->t, x->deadline, job_fn, (void *)(uintptr_t)i, &h) != VT_OK) {
            atomic_fetch_add(&w->bad_errors, 1);
            continue;
        }
        atomic_store_explicit(&x->handle, h.id, memory_order_release);
        /* Cancel some timer, ours or another thread's. */
        if (vt__rand_below(&rng, 2)) {
            size_t j = vt__rand_below(&rng, (uint32_t)total);
            uint64_t hid = atomic_load_explicit(&w->ti[j].handle, memory_order_acquire);
            if (hid) {
                vt_err e = vt__timers_cancel(w->t, (vt_timer){hid});
                if (e == VT_OK)
                    atomic_fetch_add(&w->ti[j].cancelled, 1);
                else if (e != VT_ENOENT)
                    atomic_fetch_add(&w->bad_errors, 1);
            }
        }
        if (k % 1024 == 0)
            sched_yield();
    }
    return NULL;
}

/* Fires along with the service's own thread, and clears everything from
 * time to time when asked to. */
static void *meddler_main(void *arg)
{
    world *w = arg;
    unsigned round = 0;
    while (!atomic_load(&w->adders_done)) {
        vt__timers_expire(w->t, vt_now_ns());
        (void)vt__timers_next_deadline(w->t);
        if (w->with_cancel_all && ++round % 64 == 0)
            vt__timers_cancel_all(w->t, on_cancel, w);
        sched_yield();
    }
    return NULL;
}

static void run(int with_cancel_all)
{
    world w;
    memset(&w, 0, sizeof w);
    w.per_thread = 20000 * vt_test_stress();
    w.seed = vt_test_rand();
    w.with_cancel_all = with_cancel_all;
    size_t total = ADDERS * w.per_thread;
    w.ti = calloc(total, sizeof *w.ti);
    VT_CHECK_NOT_NULL(w.ti);
    VT_CHECK_OK(vt__timers_new(&w.t, 1, dispatch, &w, "stress-timer"));
    adder a[ADDERS];
    for (unsigned i = 0; i < ADDERS; i++) {
        a[i].w = &w;
        a[i].id = i;
        VT_CHECK_EQ(pthread_create(&a[i].th, NULL, adder_main, &a[i]), 0);
    }
    pthread_t meddler;
    VT_CHECK_EQ(pthread_create(&meddler, NULL, meddler_main, &w), 0);
    for (unsigned i = 0; i < ADDERS; i++)
        pthread_join(a[i].th, NULL);
    atomic_store(&w.adders_done, 1);
    pthread_join(meddler, NULL);

    /* Everything due fires; the far ones are left: cancel half of them by
     * handle, and let free report the others. */
    for (size_t i = 0; i < total; i++) {
        tinfo *x = &w.ti[i];
        if (x->deadline > vt_now_ns() + VT_SEC(60) && i % 2 &&
            vt__timers_cancel(w.t, (vt_timer){atomic_load(&x->handle)}) == VT_OK)
            atomic_fetch_add(&x->cancelled, 1);
    }
    uint64_t far = 0;
    for (size_t i = 0; i < total; i++) {
        tinfo *x = &w.ti[i];
        far += x->deadline > vt_now_ns() + VT_SEC(60) && !atomic_load(&x->cancelled) &&
               !atomic_load(&x->reported);
    }
    while (vt__timers_pending(w.t) > far)
        vt__sleep_ns(VT_US(500));
    VT_CHECK_EQ(vt__timers_pending(w.t), far);
    VT_CHECK_EQ(vt__timers_fired(w.t), atomic_load(&w.dispatched));
    vt__timers_free(w.t, on_cancel, &w);

    VT_CHECK_EQ(atomic_load(&w.bad_errors), 0);
    VT_CHECK_EQ(atomic_load(&w.early), 0);
    size_t fired = 0, cancelled = 0, reported = 0;
    for (size_t i = 0; i < total; i++) {
        tinfo *x = &w.ti[i];
        uint32_t f = atomic_load(&x->fired), c = atomic_load(&x->cancelled),
                 r = atomic_load(&x->reported);
        if (f + c + r != 1)
            printf("  timer %zu: fired %u, cancelled %u, reported %u\n", i, f, c, r);
        VT_CHECK_EQ(f + c + r, 1);
        fired += f;
        cancelled += c;
        reported += r;
    }
    /* The premise: each way of ending was exercised. */
    VT_CHECK_GT(fired, 0);
    VT_CHECK_GT(cancelled, 0);
    VT_CHECK_GT(reported, 0);
    free(w.ti);
}

VT_TEST(concurrent_adds_cancels_and_firing_account_exactly)
{
    run(0);
}

VT_TEST(concurrent_cancel_all_accounts_exactly)
{
    run(1);
}
