/* sched_demo — the scheduler at work, in one short run:
 *   1. fork–join: a parallel quicksort of 4M integers against its serial
 *      twin, and fib(32) with one spawn per call (3.5 million spawns);
 *   2. closures: a million tiny jobs that fan out from one job;
 *   3. timers: three jobs due at 30, 10 and 20 ms, which fire in deadline
 *      order, and one cancelled before it fires;
 *   4. the pool's metrics.
 * Usage: sched_demo [workers]   (default: one per CPU) */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vitte/sched.h"

/* ---- Fork–join ------------------------------------------------------------- */

VT_TASK(long, fib, int, n)
{
    if (n < 2)
        return n;
    VT_SPAWN(fib, n - 1);
    long b = VT_CALL(fib, n - 2);
    return VT_SYNC(fib) + b;
}

static long fib_check(int n)
{
    long a = 0, b = 1;
    for (int i = 0; i < n; i++) {
        long t = a + b;
        a = b;
        b = t;
    }
    return a;
}

static size_t partition(int *a, size_t n)
{
    int pivot = a[(n - 1) / 2];
    ptrdiff_t i = -1, j = (ptrdiff_t)n;
    for (;;) {
        do
            i++;
        while (a[i] < pivot);
        do
            j--;
        while (a[j] > pivot);
        if (i >= j)
            return (size_t)j + 1;
        int t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

static void sort_serial(int *a, size_t n)
{
    while (n > 1) {
        size_t m = partition(a, n);
        sort_serial(a, m);
        a += m;
        n -= m;
    }
}

/* Below this size a sub-array is sorted serially: spawning costs little,
 * but not nothing. */
#define SORT_CUTOFF 2048

VT_VOID_TASK(psort, int *, a, size_t, n)
{
    if (n <= SORT_CUTOFF) {
        sort_serial(a, n);
        return;
    }
    size_t m = partition(a, n);
    VT_SPAWN(psort, a, m);
    VT_CALL(psort, a + m, n - m);
    VT_SYNC(psort);
}

static int is_sorted(const int *a, size_t n)
{
    for (size_t i = 1; i < n; i++)
        if (a[i - 1] > a[i])
            return 0;
    return 1;
}

/* ---- Closures ---------------------------------------------------------------- */

typedef struct fanout {
    vt_pool *pool;
    long jobs;
    unsigned char *ran; /* one byte per job: jobs share no counter */
} fanout;

static void leaf_job(void *arg)
{
    ++*(unsigned char *)arg;
}

static void fanout_job(void *arg)
{
    fanout *f = arg;
    for (long i = 0; i < f->jobs; i++) {
        vt_err e = vt_pool_submit(f->pool, leaf_job, &f->ran[i]);
        if (e) {
            fprintf(stderr, "submit: %s\n", vt_strerror(e));
            return;
        }
    }
}

/* ---- Timers -------------------------------------------------------------------- */

typedef struct tick {
    const char *name;
    vt_pool *pool;
    int64_t start;
} tick;

static void tick_job(void *arg)
{
    tick *t = arg;
    printf("  timer %-9s fired at %5.1f ms\n", t->name, (double)(vt_pool_now(t->pool) - t->start) / 1e6);
}

static double ms_since(int64_t t0)
{
    return (double)(vt_now_ns() - t0) / 1e6;
}

static int fail(const char *what, vt_err e)
{
    fprintf(stderr, "sched_demo: %s: %s\n", what, vt_strerror(e));
    return 1;
}

int main(int argc, char **argv)
{
    vt_pool_opts opts;
    vt_pool_opts_init(&opts);
    if (argc > 1)
        opts.workers = (unsigned)strtoul(argv[1], NULL, 10);
    opts.name = "demo";
    vt_pool *pool;
    vt_err e = vt_pool_new(&pool, &opts);
    if (e)
        return fail("vt_pool_new", e);
    printf("vitte scheduler demo: %u workers on %u CPUs\n\n", vt_pool_workers(pool), vt_cpu_count());

    /* 1. Fork–join. */
    size_t n = (size_t)4 << 20;
    int *a = malloc(n * sizeof(*a)), *b = malloc(n * sizeof(*b));
    if (!a || !b)
        return fail("malloc", VT_ENOMEM);
    uint64_t seed = 42;
    for (size_t i = 0; i < n; i++)
        a[i] = (int)(vt_hash_mix64(seed + i) >> 33);
    memcpy(b, a, n * sizeof(*a));
    int64_t t0 = vt_now_ns();
    sort_serial(b, n);
    double serial_ms = ms_since(t0);
    t0 = vt_now_ns();
    if ((e = VT_RUN(pool, psort, NULL, a, n)))
        return fail("VT_RUN(psort)", e);
    double par_ms = ms_since(t0);
    printf("fork-join quicksort of %zu ints: serial %.1f ms, vitte %.1f ms (%.2fx), %s\n", n, serial_ms, par_ms,
           serial_ms / par_ms, is_sorted(a, n) && !memcmp(a, b, n * sizeof(*a)) ? "sorted" : "WRONG");
    free(a);
    free(b);

    long got = 0;
    t0 = vt_now_ns();
    if ((e = VT_RUN(pool, fib, &got, 32)))
        return fail("VT_RUN(fib)", e);
    par_ms = ms_since(t0);
    /* fib(n) spawns once per call with n >= 2: fib(n + 1) - 1 times. */
    double spawns = (double)fib_check(33) - 1;
    printf("fork-join fib(32), one spawn per call: %.2f million spawns and syncs in %.1f ms (%.2f ns each), %s\n",
           spawns / 1e6, par_ms, par_ms * 1e6 / spawns, got == fib_check(32) ? "correct" : "WRONG");

    /* 2. Closures: the first round grows the deques (and faults their
     * pages in); the second shows the steady state. */
    fanout f = {pool, 1000000, calloc(1000000, 1)};
    if (!f.ran)
        return fail("calloc", VT_ENOMEM);
    for (int round = 0; round < 2; round++) {
        memset(f.ran, 0, (size_t)f.jobs);
        t0 = vt_now_ns();
        if ((e = vt_pool_submit(pool, fanout_job, &f)))
            return fail("vt_pool_submit", e);
        if ((e = vt_pool_wait_idle(pool, VT_FOREVER)))
            return fail("vt_pool_wait_idle", e);
        double dt = ms_since(t0);
        long ran = 0;
        for (long i = 0; i < f.jobs; i++)
            ran += f.ran[i];
        printf("closures (%s): %ld jobs fanned out from one job in %.1f ms (%.1f ns per job)\n",
               round == 0 ? "first, deques grow" : "again", ran, dt, dt * 1e6 / (double)f.jobs);
    }
    free(f.ran);

    /* 3. Timers. */
    printf("timers, started in the order 30, 10, 20 ms (and one of 15 ms cancelled):\n");
    int64_t start = vt_pool_now(pool);
    tick ticks[] = {{"30ms", pool, start}, {"10ms", pool, start}, {"20ms", pool, start}, {"cancelled", pool, start}};
    int64_t delays[] = {VT_MS(30), VT_MS(10), VT_MS(20), VT_MS(15)};
    vt_timer timers[4];
    for (int i = 0; i < 4; i++)
        if ((e = vt_pool_submit_at(pool, start + delays[i], tick_job, &ticks[i], &timers[i])))
            return fail("vt_pool_submit_at", e);
    if ((e = vt_timer_cancel(pool, timers[3])))
        return fail("vt_timer_cancel", e);
    if ((e = vt_pool_wait_idle(pool, VT_FOREVER)))
        return fail("vt_pool_wait_idle", e);
    e = vt_timer_cancel(pool, timers[0]);
    printf("  cancelling a timer that fired: %s (%s)\n\n", vt_errname(e), vt_strerror(e));

    /* 4. Metrics. */
    vt_pool_metrics_print(pool, stdout);
    vt_pool_free(pool);
    return 0;
}
