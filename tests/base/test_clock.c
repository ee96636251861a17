/* test_clock.c — vt_now_ns, vt_deadline_after, CPU-time clocks, sleeping.
 * No timing thresholds: only the orderings the clocks guarantee. */
#include <pthread.h>
#include <signal.h>
#include <time.h>

#include "base/platform.h"
#include "vt_test.h"

VT_TEST(time_macros)
{
    VT_CHECK_EQ(VT_US(1), 1000);
    VT_CHECK_EQ(VT_MS(1), 1000000);
    VT_CHECK_EQ(VT_SEC(1), 1000000000);
    VT_CHECK_EQ(VT_SEC(10), 10000000000LL);
    VT_CHECK_EQ(VT_MS(3000), VT_SEC(3));
    VT_CHECK_EQ(VT_FOREVER, -1);
    VT_CHECK_EQ(VT_NOW, 0);
}

VT_TEST(now_is_positive_and_monotonic)
{
    int64_t prev = vt_now_ns();
    VT_CHECK_GT(prev, 0);
    for (int i = 0; i < 100000; i++) {
        int64_t t = vt_now_ns();
        VT_CHECK_GE(t, prev);
        prev = t;
    }
}

VT_TEST(now_is_clock_monotonic)
{
    /* Deadlines reach the kernel as CLOCK_MONOTONIC times: the two clocks
     * must agree (a reading of the one lies between two of the other). */
    struct timespec ts;
    int64_t a = vt_now_ns();
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t b = vt_now_ns();
    int64_t m = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    VT_CHECK_LE(a, m);
    VT_CHECK_LE(m, b);
}

/* A reading published by another thread is never later than ours after we
 * saw it: the clock is one clock for all threads. */
static _Atomic int64_t published;
static _Atomic int publish_stop;

static void *publisher(void *arg)
{
    (void)arg;
    while (!atomic_load(&publish_stop))
        atomic_store(&published, vt_now_ns());
    return NULL;
}

VT_TEST(now_is_monotonic_across_threads)
{
    vt__thread t;
    atomic_store(&published, 0);
    atomic_store(&publish_stop, 0);
    VT_CHECK_OK(vt__thread_create(&t, publisher, NULL, 0, NULL));
    int seen = 0, behind = 0;
    for (int i = 0; seen < 1000; i++) {
        int64_t theirs = atomic_load(&published);
        int64_t ours = vt_now_ns();
        if (theirs) {
            seen++;
            behind += ours < theirs;
        }
        if (i % 64 == 0)
            vt__thread_yield();
    }
    atomic_store(&publish_stop, 1);
    VT_CHECK_OK(vt__thread_join(t, NULL));
    VT_CHECK_EQ(behind, 0);
    VT_CHECK_GT(seen, 0);
}

VT_TEST(deadline_after)
{
    int64_t before = vt_now_ns();
    int64_t d = vt_deadline_after(VT_SEC(2));
    int64_t after = vt_now_ns();
    VT_CHECK_GE(d, before + VT_SEC(2));
    VT_CHECK_LE(d, after + VT_SEC(2));

    /* Zero and negative delays mean now. */
    before = vt_now_ns();
    int64_t z = vt_deadline_after(0);
    int64_t n = vt_deadline_after(-5);
    int64_t f = vt_deadline_after(VT_FOREVER);
    int64_t m = vt_deadline_after(INT64_MIN);
    after = vt_now_ns();
    VT_CHECK(z >= before && z <= after);
    VT_CHECK(n >= before && n <= after);
    VT_CHECK(f >= before && f <= after);
    VT_CHECK(m >= before && m <= after);
    VT_CHECK_NE(z, VT_NOW);
}

VT_TEST(deadline_saturates)
{
    VT_CHECK_EQ(vt_deadline_after(INT64_MAX), INT64_MAX);
    VT_CHECK_EQ(vt_deadline_after(INT64_MAX - 1), INT64_MAX);
    int64_t now = vt_now_ns();
    VT_CHECK_EQ(vt_deadline_after(INT64_MAX - now + 1), INT64_MAX);
    /* Just below saturation still adds. */
    int64_t big = INT64_MAX / 2;
    int64_t d = vt_deadline_after(big);
    VT_CHECK_GT(d, big);
    VT_CHECK_LT(d, INT64_MAX);
}

/* Burns CPU on this thread until its CPU clock moves (no time bound: the
 * harness's watchdog catches a clock that never moves). */
static int64_t burn_until_thread_cpu_moves(void)
{
    int64_t start = vt__thread_cpu_ns();
    volatile uint64_t x = 1;
    while (vt__thread_cpu_ns() == start)
        for (int i = 0; i < 10000; i++)
            x = x * 6364136223846793005ull + 1;
    return start;
}

VT_TEST(process_cpu_time_advances)
{
    int64_t a = vt_process_cpu_ns();
    VT_CHECK_GT(a, 0);
    int64_t start = burn_until_thread_cpu_moves();
    int64_t b = vt_process_cpu_ns();
    VT_CHECK_GT(b, a);
    /* This thread's time is part of the process's. */
    VT_CHECK_LE(vt__thread_cpu_ns() - start, b);
}

/* A thread that only sleeps (blocked in the kernel) uses less CPU than the
 * process, which includes the thread that busies itself meanwhile. */
static _Atomic int64_t sleeper_cpu;

static void *sleeper(void *arg)
{
    (void)arg;
    vt__sleep_ns(VT_MS(20));
    atomic_store(&sleeper_cpu, vt__thread_cpu_ns());
    return NULL;
}

VT_TEST(thread_cpu_time_is_per_thread)
{
    vt__thread t;
    atomic_store(&sleeper_cpu, -1);
    VT_CHECK_OK(vt__thread_create(&t, sleeper, NULL, 0, NULL));
    burn_until_thread_cpu_moves();
    int64_t mine = vt__thread_cpu_ns();
    VT_CHECK_OK(vt__thread_join(t, NULL));
    int64_t theirs = atomic_load(&sleeper_cpu);
    VT_CHECK_GE(theirs, 0);
    VT_CHECK_LE(theirs + mine, vt_process_cpu_ns());
    /* Monotonic for the calling thread. */
    int64_t prev = vt__thread_cpu_ns();
    for (int i = 0; i < 1000; i++) {
        int64_t c = vt__thread_cpu_ns();
        VT_CHECK_GE(c, prev);
        prev = c;
    }
}

VT_TEST(sleep_lasts_at_least_its_time)
{
    int64_t sleeps[] = {1, 1000, VT_US(50), VT_MS(1), VT_MS(15)};
    for (size_t i = 0; i < sizeof sleeps / sizeof sleeps[0]; i++) {
        int64_t t0 = vt_now_ns();
        vt__sleep_ns(sleeps[i]);
        VT_CHECK_GE(vt_now_ns() - t0, sleeps[i]);
    }
    /* Nothing to wait for: returns. */
    vt__sleep_ns(0);
    vt__sleep_ns(-1);
    vt__sleep_ns(INT64_MIN);
}

/* Signals that interrupt the sleep do not shorten it. */
static void on_signal(int sig)
{
    (void)sig;
}

static _Atomic int sleep_state; /* 0 starting, 1 sleeping, 2 done */
static _Atomic int64_t slept_ns;

static void *interrupted_sleeper(void *arg)
{
    int64_t ns = *(int64_t *)arg;
    atomic_store(&sleep_state, 1);
    int64_t t0 = vt_now_ns();
    vt__sleep_ns(ns);
    atomic_store(&slept_ns, vt_now_ns() - t0);
    atomic_store(&sleep_state, 2);
    return NULL;
}

VT_TEST(sleep_restarts_after_signals)
{
    struct sigaction sa = {0}, old;
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: the sleep sees EINTR */
    VT_CHECK_EQ(sigaction(SIGUSR1, &sa, &old), 0);

    int64_t ns = VT_MS(100);
    vt__thread t;
    atomic_store(&sleep_state, 0);
    VT_CHECK_OK(vt__thread_create(&t, interrupted_sleeper, &ns, 0, NULL));
    pthread_t p;
    memcpy(&p, &t.handle, sizeof p);
    int sent = 0;
    while (atomic_load(&sleep_state) != 2) {
        if (atomic_load(&sleep_state) == 1) {
            pthread_kill(p, SIGUSR1);
            sent++;
        }
        vt__sleep_ns(VT_MS(2));
    }
    VT_CHECK_OK(vt__thread_join(t, NULL));
    sigaction(SIGUSR1, &old, NULL);
    VT_CHECK_GT(sent, 0);
    VT_CHECK_GE(atomic_load(&slept_ns), ns);
}
