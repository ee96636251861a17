/* stress_futex.c — protocols built on vt__futex_wait/wake, run long enough
 * that a lost wake-up (a hang, which the harness's watchdog reports) or a
 * broken exclusion (a wrong count) shows up. More threads than CPUs. Data
 * passes through atomics only, so ThreadSanitizer checks the protocols. */
#include "base/platform.h"
#include "vt_test.h"

#define THREADS 8

/* ---- A futex mutex ----------------------------------------------------------------
 * 0 free, 1 held, 2 held and maybe waited for: unlock enters the kernel only
 * in state 2. */
typedef struct fmutex {
    _Atomic uint32_t state;
} fmutex;

static void fmutex_lock(fmutex *m)
{
    uint32_t c = 0;
    if (atomic_compare_exchange_strong(&m->state, &c, 1))
        return;
    if (c != 2)
        c = atomic_exchange(&m->state, 2);
    while (c != 0) {
        vt__futex_wait(&m->state, 2, VT_FOREVER);
        c = atomic_exchange(&m->state, 2);
    }
}

static void fmutex_unlock(fmutex *m)
{
    if (atomic_exchange(&m->state, 0) == 2)
        vt__futex_wake(&m->state, 1);
}

static fmutex mu;
static long guarded; /* plain: only under mu */
static _Atomic int go;

static void *mutex_worker(void *arg)
{
    long m = (long)(intptr_t)arg;
    while (!atomic_load(&go))
        vt__thread_yield();
    for (long i = 0; i < m; i++) {
        fmutex_lock(&mu);
        guarded++;
        fmutex_unlock(&mu);
    }
    return NULL;
}

VT_TEST(futex_mutex_exact_count)
{
    vt__thread t[THREADS];
    long m = 50000L * (long)vt_test_stress();
    guarded = 0;
    atomic_store(&go, 0);
    for (int i = 0; i < THREADS; i++)
        VT_CHECK_OK(vt__thread_create(&t[i], mutex_worker, (void *)(intptr_t)m, 0, NULL));
    atomic_store(&go, 1);
    for (int i = 0; i < THREADS; i++)
        VT_CHECK_OK(vt__thread_join(t[i], NULL));
    VT_CHECK_EQ(guarded, THREADS * m);
    VT_CHECK_EQ(atomic_load(&mu.state), 0);
}

/* ---- Ping-pong --------------------------------------------------------------------- */
static _Atomic uint32_t ball;

static void pass_ball(uint32_t mine, uint32_t theirs, long rounds)
{
    for (long i = 0; i < rounds; i++) {
        uint32_t v;
        while ((v = atomic_load(&ball)) != mine)
            vt__futex_wait(&ball, v, VT_FOREVER);
        atomic_store(&ball, theirs);
        vt__futex_wake(&ball, 1);
    }
}

static void *pong(void *arg)
{
    pass_ball(1, 0, (long)(intptr_t)arg);
    return NULL;
}

VT_TEST(ping_pong_long)
{
    long rounds = 100000L * (long)vt_test_stress();
    vt__thread t;
    atomic_store(&ball, 0);
    VT_CHECK_OK(vt__thread_create(&t, pong, (void *)(intptr_t)rounds, 0, "pong"));
    pass_ball(0, 1, rounds);
    VT_CHECK_OK(vt__thread_join(t, NULL));
    VT_CHECK_EQ(atomic_load(&ball), 0);
}

/* ---- A counting semaphore: producers post, consumers wait at zero ------------------
 * Every post wakes one waiter; all posted tokens get consumed, none twice. */
static _Atomic uint32_t tokens;
static _Atomic long consumed;
static _Atomic long produced_total;

static void sem_post(void)
{
    atomic_fetch_add(&tokens, 1);
    vt__futex_wake(&tokens, 1);
}

static void sem_wait(void)
{
    for (;;) {
        uint32_t v = atomic_load(&tokens);
        while (v > 0)
            if (atomic_compare_exchange_weak(&tokens, &v, v - 1))
                return;
        vt__futex_wait(&tokens, 0, VT_FOREVER);
    }
}

static void *producer(void *arg)
{
    long n = (long)(intptr_t)arg;
    for (long i = 0; i < n; i++) {
        sem_post();
        atomic_fetch_add(&produced_total, 1);
    }
    return NULL;
}

static void *consumer(void *arg)
{
    long n = (long)(intptr_t)arg;
    for (long i = 0; i < n; i++) {
        sem_wait();
        atomic_fetch_add(&consumed, 1);
    }
    return NULL;
}

VT_TEST(semaphore_no_lost_wakeups)
{
    enum { PRODUCERS = 3, CONSUMERS = 5 };
    long per_consumer = 20000L * (long)vt_test_stress();
    long total = per_consumer * CONSUMERS;
    vt__thread p[PRODUCERS], c[CONSUMERS];
    atomic_store(&tokens, 0);
    atomic_store(&consumed, 0);
    atomic_store(&produced_total, 0);
    for (int i = 0; i < CONSUMERS; i++)
        VT_CHECK_OK(vt__thread_create(&c[i], consumer, (void *)(intptr_t)per_consumer, 0, NULL));
    for (int i = 0; i < PRODUCERS; i++) {
        long share = total / PRODUCERS + (i < total % PRODUCERS);
        VT_CHECK_OK(vt__thread_create(&p[i], producer, (void *)(intptr_t)share, 0, NULL));
    }
    for (int i = 0; i < PRODUCERS; i++)
        VT_CHECK_OK(vt__thread_join(p[i], NULL));
    for (int i = 0; i < CONSUMERS; i++)
        VT_CHECK_OK(vt__thread_join(c[i], NULL));
    VT_CHECK_EQ(atomic_load(&produced_total), total);
    VT_CHECK_EQ(atomic_load(&consumed), total);
    VT_CHECK_EQ(atomic_load(&tokens), 0);
}

/* ---- Deadlines racing with wakes ----------------------------------------------------
 * Waiters with short random deadlines on a word that a toggler keeps changing
 * and waking: each wait returns one of the three documented results, and a
 * timeout only once its deadline has passed. */
static _Atomic uint32_t flicker;
static _Atomic int toggling;
static _Atomic long early_timeouts, bad_results, outcomes[3];

static void *toggler(void *arg)
{
    (void)arg;
    while (atomic_load(&toggling)) {
        atomic_fetch_add(&flicker, 1);
        vt__futex_wake(&flicker, INT32_MAX);
        vt__thread_yield();
    }
    return NULL;
}

static void *timed_waiter(void *arg)
{
    uint64_t rng = (uint64_t)(uintptr_t)arg;
    long n = 5000L * (long)vt_test_stress();
    for (long i = 0; i < n; i++) {
        uint32_t v = atomic_load(&flicker);
        int64_t d = vt_deadline_after((int64_t)vt__rand_below(&rng, 50000));
        vt_err e = vt__futex_wait(&flicker, v, d);
        if (e == VT_OK)
            atomic_fetch_add(&outcomes[0], 1);
        else if (e == VT_EAGAIN)
            atomic_fetch_add(&outcomes[1], 1);
        else if (e == VT_ETIMEDOUT) {
            atomic_fetch_add(&outcomes[2], 1);
            if (vt_now_ns() < d)
                atomic_fetch_add(&early_timeouts, 1);
        } else
            atomic_fetch_add(&bad_results, 1);
    }
    return NULL;
}

VT_TEST(deadlines_race_wakes)
{
    enum { WAITERS = 6 };
    vt__thread w[WAITERS], tog;
    atomic_store(&toggling, 1);
    VT_CHECK_OK(vt__thread_create(&tog, toggler, NULL, 0, "toggler"));
    for (int i = 0; i < WAITERS; i++)
        VT_CHECK_OK(vt__thread_create(&w[i], timed_waiter, (void *)(uintptr_t)vt_test_rand(), 0, NULL));
    for (int i = 0; i < WAITERS; i++)
        VT_CHECK_OK(vt__thread_join(w[i], NULL));
    atomic_store(&toggling, 0);
    VT_CHECK_OK(vt__thread_join(tog, NULL));
    VT_CHECK_EQ(atomic_load(&bad_results), 0);
    VT_CHECK_EQ(atomic_load(&early_timeouts), 0);
    long n = 5000L * (long)vt_test_stress() * WAITERS;
    VT_CHECK_EQ(atomic_load(&outcomes[0]) + atomic_load(&outcomes[1]) + atomic_load(&outcomes[2]), n);
    printf("  woken %ld, changed %ld, timed out %ld\n", atomic_load(&outcomes[0]),
           atomic_load(&outcomes[1]), atomic_load(&outcomes[2]));
}
