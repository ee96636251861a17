/* test_determ.c — deterministic mode (vt_pool_opts.deterministic): the
 * same seed and program give the same order of execution; the virtual
 * clock starts at 0 and jumps to the next timer; vt_pool_run_until and
 * vt_pool_wait_idle drive the pool on the calling thread; errors; shutdown.
 * Everything runs on the test thread, so traces need no synchronisation. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vt_test.h"
#include "vitte/sched.h"

static vt_pool *det_pool(uint64_t seed, vt_cancel_fn on_cancel, void *ud)
{
    vt_pool_opts o;
    vt_pool_opts_init(&o);
    o.deterministic = 1;
    o.seed = seed;
    o.on_cancel = on_cancel;
    o.on_cancel_ud = ud;
    vt_pool *p = NULL;
    return vt_pool_new(&p, &o) == VT_OK ? p : NULL;
}

/* ---- A trace of (id, virtual time) pairs --------------------------------- */

#define TRACE_CAP 200000
typedef struct ev {
    uint64_t id;
    int64_t now;
} ev;

static struct {
    vt_pool *p;
    ev *ev;
    size_t n;
    int errors;
} T;

static void trace_begin(vt_pool *p)
{
    free(T.ev);
    memset(&T, 0, sizeof(T));
    T.p = p;
    T.ev = calloc(TRACE_CAP, sizeof(ev));
}

static void trace_end(void)
{
    free(T.ev);
    memset(&T, 0, sizeof(T));
}

static void record(uint64_t id)
{
    if (T.n < TRACE_CAP)
        T.ev[T.n] = (ev){id, vt_pool_now(T.p)};
    T.n++;
}

static void record_job(void *arg)
{
    record((uint64_t)(uintptr_t)arg);
}

/* ---- The program: a forest of jobs with timers and fork–join ----------------
 * A job's id names its place in the forest (root * 4096 + path), so the same
 * jobs exist in every run whatever the order; how many children a job has,
 * whether it starts a timer or runs a task, follows from its id alone. */

#define TIMER_BIT ((uint64_t)1 << 40)
#define FIB_BIT ((uint64_t)1 << 41)

VT_TASK(long, dfib, int, n)
{
    if (n < 2)
        return n;
    VT_SPAWN(dfib, n - 1);
    long b = VT_CALL(dfib, n - 2);
    long a = VT_SYNC(dfib);
    return a + b;
}

static long fib_ref(int n)
{
    long a = 0, b = 1;
    for (int i = 0; i < n; i++) {
        long c = a + b;
        a = b;
        b = c;
    }
    return a;
}

static void prog_job(void *arg);

static void prog_timer_job(void *arg)
{
    uint64_t id = (uint64_t)(uintptr_t)arg;
    record(id);
    /* A timer's job may start more work: one plain child. */
    if (vt_hash_mix64(id) % 2 == 0 &&
        vt_pool_submit(T.p, record_job, (void *)(uintptr_t)(id | ((uint64_t)1 << 42))) != VT_OK)
        T.errors++;
}

static void prog_job(void *arg)
{
    uint64_t id = (uint64_t)(uintptr_t)arg;
    uint64_t h = vt_hash_mix64(id * 0x9e3779b97f4a7c15ULL + 1);
    uint64_t path = id % 4096;
    record(id);
    if (path < 4096 / 4 - 1) {
        unsigned kids = (unsigned)(h % 4);
        for (unsigned k = 0; k < kids; k++) {
            uint64_t c = id - path + path * 4 + k + 1;
            if (vt_pool_submit(T.p, prog_job, (void *)(uintptr_t)c) != VT_OK)
                T.errors++;
        }
    }
    if ((h >> 8) % 3 == 0) {
        int64_t delay = (int64_t)((h >> 16) % (uint64_t)VT_MS(50));
        if (vt_pool_submit_after(T.p, delay, prog_timer_job, (void *)(uintptr_t)(id | TIMER_BIT), NULL) !=
            VT_OK)
            T.errors++;
    }
    if ((h >> 24) % 5 == 0) {
        int n = 8 + (int)((h >> 32) % 6);
        long r = -1;
        if (VT_RUN(T.p, dfib, &r, n) != VT_OK || r != fib_ref(n))
            T.errors++;
        record(id | FIB_BIT);
    }
}

/* Runs the program on a fresh pool with this seed; the trace stays in T. */
static int run_program(uint64_t seed)
{
    vt_pool *p = det_pool(seed, NULL, NULL);
    if (!p)
        return 0;
    trace_begin(p);
    for (uint64_t r = 0; r < 24; r++)
        if (vt_pool_submit(p, prog_job, (void *)(uintptr_t)(r * 4096)) != VT_OK)
            T.errors++;
    /* A task from the outside thread drives the pool until it is done... */
    long f = -1;
    if (VT_RUN(p, dfib, &f, 15) != VT_OK || f != fib_ref(15))
        T.errors++;
    record(FIB_BIT);
    /* ...and a few more jobs, queued with the clock already moved. */
    for (uint64_t r = 24; r < 32; r++)
        if (vt_pool_submit(p, prog_job, (void *)(uintptr_t)(r * 4096)) != VT_OK)
            T.errors++;
    vt_err e = vt_pool_wait_idle(p, VT_FOREVER);
    record(0xffffffffffULL);
    vt_pool_free(p);
    return e == VT_OK && T.errors == 0 && T.n <= TRACE_CAP;
}

static int cmp_ev(const void *a, const void *b)
{
    const ev *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

VT_TEST(same_seed_same_trace)
{
    uint64_t seeds[] = {0, 1, 0xdeadbeefULL, vt_test_rand()};
    for (size_t s = 0; s < sizeof(seeds) / sizeof(seeds[0]); s++) {
        VT_CHECK(run_program(seeds[s]));
        size_t n0 = T.n;
        ev *first = malloc(n0 * sizeof(ev));
        memcpy(first, T.ev, n0 * sizeof(ev));
        VT_CHECK_GT(n0, 200); /* the program has enough concurrency */
        /* ...and exercises timers (at virtual times) and tasks. */
        size_t timers = 0, fibs = 0;
        for (size_t i = 0; i < n0; i++) {
            timers += (first[i].id & TIMER_BIT) && first[i].now > 0;
            fibs += (first[i].id & FIB_BIT) != 0;
        }
        VT_CHECK_GT(timers, 20);
        VT_CHECK_GT(fibs, 20);
        for (int run = 0; run < 4; run++) {
            int ok = run_program(seeds[s]);
            int same = ok && T.n == n0 && memcmp(first, T.ev, n0 * sizeof(ev)) == 0;
            if (!same) {
                size_t i = 0;
                while (i < n0 && i < T.n && first[i].id == T.ev[i].id && first[i].now == T.ev[i].now)
                    i++;
                printf("  seed %llu, run %d: %zu events vs %zu, first difference at %zu\n",
                       (unsigned long long)seeds[s], run + 2, n0, T.n, i);
            }
            if (!same)
                free(first);
            VT_CHECK(same);
        }
        free(first);
    }
    trace_end();
}

VT_TEST(different_seeds_different_traces)
{
    uint64_t pairs[][2] = {{1, 2}, {0, 1}, {42, 43}, {0, UINT64_MAX}, {0, 0}};
    pairs[4][0] = vt_test_rand();
    pairs[4][1] = pairs[4][0] ^ 1;
    for (size_t k = 0; k < sizeof(pairs) / sizeof(pairs[0]); k++) {
        VT_CHECK(run_program(pairs[k][0]));
        size_t n0 = T.n;
        ev *first = malloc(n0 * sizeof(ev));
        memcpy(first, T.ev, n0 * sizeof(ev));
        VT_CHECK(run_program(pairs[k][1]));
        int differ = T.n != n0 || memcmp(first, T.ev, n0 * sizeof(ev)) != 0;
        if (!differ)
            printf("  seeds %llu and %llu gave the same trace of %zu events\n",
                   (unsigned long long)pairs[k][0], (unsigned long long)pairs[k][1], n0);
        /* The same jobs ran, only their order differs. */
        int same_jobs = T.n == n0;
        if (same_jobs) {
            qsort(first, n0, sizeof(ev), cmp_ev);
            ev *second = malloc(n0 * sizeof(ev));
            memcpy(second, T.ev, n0 * sizeof(ev));
            qsort(second, n0, sizeof(ev), cmp_ev);
            for (size_t i = 0; i < n0 && same_jobs; i++)
                same_jobs = first[i].id == second[i].id;
            free(second);
        }
        free(first);
        VT_CHECK(differ);
        VT_CHECK(same_jobs);
    }
    trace_end();
}

/* ---- The virtual clock ------------------------------------------------------ */

VT_TEST(clock_starts_at_zero_and_stays_without_timers)
{
    vt_pool *p = det_pool(7, NULL, NULL);
    VT_CHECK_NOT_NULL(p);
    VT_CHECK_EQ(vt_pool_workers(p), 1);
    VT_CHECK_EQ(vt_pool_now(p), 0);
    trace_begin(p);
    for (int i = 0; i < 100; i++)
        VT_CHECK_OK(vt_pool_submit(p, record_job, (void *)(uintptr_t)i));
    VT_CHECK_OK(vt_pool_wait_idle(p, VT_FOREVER));
    VT_CHECK_EQ(T.n, 100);
    for (size_t i = 0; i < T.n; i++)
        VT_CHECK_EQ(T.ev[i].now, 0);
    VT_CHECK_EQ(vt_pool_now(p), 0);
    vt_pool_free(p);
    trace_end();
}

VT_TEST(an_hour_long_timer_fires_without_waiting)
{
    vt_pool *p = det_pool(7, NULL, NULL);
    VT_CHECK_NOT_NULL(p);
    trace_begin(p);
    vt_timer t = {0};
    VT_CHECK_OK(vt_pool_submit_after(p, VT_SEC(3600), record_job, (void *)1, &t));
    VT_CHECK_NE(t.id, 0);
    VT_CHECK_OK(vt_pool_submit_at(p, VT_SEC(7200), record_job, (void *)2, NULL));
    vt_pool_metrics m;
    VT_CHECK_OK(vt_pool_metrics_get(p, &m, NULL, 0));
    VT_CHECK_EQ(m.timers_pending, 2);
    VT_CHECK_EQ(m.timers_fired, 0);
    VT_CHECK_EQ(T.n, 0); /* nothing runs until someone drives the pool */
    VT_CHECK_OK(vt_pool_wait_idle(p, VT_FOREVER));
    VT_CHECK_EQ(T.n, 2);
    VT_CHECK_EQ(T.ev[0].id, 1);
    VT_CHECK_EQ(T.ev[0].now, VT_SEC(3600));
    VT_CHECK_EQ(T.ev[1].id, 2);
    VT_CHECK_EQ(T.ev[1].now, VT_SEC(7200));
    VT_CHECK_EQ(vt_pool_now(p), VT_SEC(7200));
    VT_CHECK_OK(vt_pool_metrics_get(p, &m, NULL, 0));
    VT_CHECK_EQ(m.timers_pending, 0);
    VT_CHECK_EQ(m.timers_fired, 2);
    /* A fired timer cannot be cancelled. */
    VT_CHECK_ERR(vt_timer_cancel(p, t), VT_ENOENT);
    vt_pool_free(p);
    trace_end();
}

/* Timers started from jobs, at virtual times, relative to the clock. */
static int64_t *relay_delays;
static int relay_n;

static void relay_job(void *arg)
{
    int i = (int)(intptr_t)arg;
    record((uint64_t)i);
    if (i + 1 < relay_n &&
        vt_pool_submit_after(T.p, relay_delays[i + 1], relay_job, (void *)(intptr_t)(i + 1), NULL) != VT_OK)
        T.errors++;
}

VT_TEST(timers_fire_in_deadline_order_at_their_deadline)
{
    enum { N = 400 };
    static int64_t deadline[N];
    vt_pool *p = det_pool(vt_test_rand(), NULL, NULL);
    VT_CHECK_NOT_NULL(p);
    trace_begin(p);
    /* Distinct deadlines (the order of jobs made ready at the same moment
     * is the generator's choice), from 1 ns to about 17 minutes, started in
     * random order. */
    for (int i = 0; i < N; i++) {
        int dup;
        do {
            deadline[i] = 1 + (int64_t)(vt_test_rand() % ((uint64_t)1 << 40));
            dup = 0;
            for (int k = 0; k < i; k++)
                dup |= deadline[k] == deadline[i];
        } while (dup);
        VT_CHECK_OK(vt_pool_submit_at(p, deadline[i], record_job, (void *)(intptr_t)i, NULL));
    }
    VT_CHECK_OK(vt_pool_wait_idle(p, VT_FOREVER));
    VT_CHECK_EQ(T.n, N);
    for (int k = 0; k < N; k++) {
        int i = (int)T.ev[k].id;
        VT_CHECK_EQ(T.ev[k].now, deadline[i]);
        if (k)
            VT_CHECK_LT(deadline[(int)T.ev[k - 1].id], deadline[i]);
    }

    /* A chain: each job starts the next timer at (its time + delay). */
    static int64_t delays[50];
    relay_delays = delays;
    relay_n = 50;
    int64_t start = vt_pool_now(p);
    for (int i = 0; i < 50; i++)
        delays[i] = (int64_t)(vt_test_rand() % (uint64_t)VT_SEC(100));
    T.n = 0;
    VT_CHECK_OK(vt_pool_submit_after(p, delays[0], relay_job, (void *)0, NULL));
    VT_CHECK_OK(vt_pool_wait_idle(p, VT_FOREVER));
    VT_CHECK_EQ(T.n, 50);
    VT_CHECK_EQ(T.errors, 0);
    int64_t at = start;
    for (int i = 0; i < 50; i++) {
        at += delays[i];
        VT_CHECK_EQ(T.ev[i].id, (uint64_t)i);
        VT_CHECK_EQ(T.ev[i].now, at);
    }
    vt_pool_free(p);
    trace_end();
}

VT_TEST(equal_deadlines_all_fire_at_that_time)
{
    vt_pool *p = det_pool(3, NULL, NULL);
    VT_CHECK_NOT_NULL(p);
    trace_begin(p);
    static const int64_t d[] = {VT_SEC(5), VT_SEC(1), VT_SEC(5), VT_SEC(3), VT_SEC(1), VT_SEC(5), 0};
    for (int i = 0; i < 7; i++)
        VT_CHECK_OK(vt_pool_submit_at(p, d[i], record_job, (void *)(intptr_t)i, NULL));
    /* A deadline in the past fires at once. */
    VT_CHECK_OK(vt_pool_submit_at(p, -5, record_job, (void *)(intptr_t)7, NULL));
    VT_CHECK_OK(vt_pool_wait_idle(p, VT_FOREVER));
    VT_CHECK_EQ(T.n, 8);
    int64_t prev = 0;
    for (int k = 0; k < 8; k++) {
        int i = (int)T.ev[k].id;
        int64_t want = i == 7 ? 0 : d[i];
        VT_CHECK_EQ(T.ev[k].now, want);
        VT_CHECK_GE(want, prev);
        prev = want;
    }
    vt_pool_free(p);
    trace_end();
}

VT_TEST(run_until_stops_at_the_time_with_later_timers_pending)
{
    vt_pool *p = det_pool(11, NULL, NULL);
    VT_CHECK_NOT_NULL(p);
    trace_begin(p);
    static const int secs[] = {8, 1, 5, 3, 2};
    for (int i = 0; i < 5; i++)
        VT_CHECK_OK(vt_pool_submit_at(p, VT_SEC(secs[i]), record_job, (void *)(intptr_t)secs[i], NULL));
    VT_CHECK_OK(vt_pool_submit(p, record_job, (void *)100));

    VT_CHECK_OK(vt_pool_run_until(p, VT_SEC(4)));
    VT_CHECK_EQ(vt_pool_now(p), VT_SEC(4));
    VT_CHECK_EQ(T.n, 4);
    VT_CHECK_EQ(T.ev[0].id, 100);
    VT_CHECK_EQ(T.ev[0].now, 0);
    for (int k = 1; k < 4; k++) {
        VT_CHECK_EQ(T.ev[k].id, (uint64_t)k);
        VT_CHECK_EQ(T.ev[k].now, VT_SEC(k));
    }
    vt_pool_metrics m;
    VT_CHECK_OK(vt_pool_metrics_get(p, &m, NULL, 0));
    VT_CHECK_EQ(m.timers_pending, 2);
    VT_CHECK_EQ(m.timers_fired, 3);

    VT_CHECK_OK(vt_pool_run_until(p, VT_SEC(6)));
    VT_CHECK_EQ(vt_pool_now(p), VT_SEC(6));
    VT_CHECK_EQ(T.n, 5);
    VT_CHECK_EQ(T.ev[4].id, 5);
    VT_CHECK_EQ(T.ev[4].now, VT_SEC(5));
    VT_CHECK_OK(vt_pool_metrics_get(p, &m, NULL, 0));
    VT_CHECK_EQ(m.timers_pending, 1);

    /* Nothing due before 7 s: time still passes. */
    VT_CHECK_OK(vt_pool_run_until(p, VT_SEC(7)));
    VT_CHECK_EQ(vt_pool_now(p), VT_SEC(7));
    VT_CHECK_EQ(T.n, 5);

    VT_CHECK_OK(vt_pool_run_until(p, VT_FOREVER));
    VT_CHECK_EQ(T.n, 6);
    VT_CHECK_EQ(T.ev[5].id, 8);
    VT_CHECK_EQ(T.ev[5].now, VT_SEC(8));
    VT_CHECK_EQ(vt_pool_now(p), VT_SEC(8));
    VT_CHECK_OK(vt_pool_metrics_get(p, &m, NULL, 0));
    VT_CHECK_EQ(m.timers_pending, 0);
    VT_CHECK_EQ(m.timers_fired, 5);

    /* Jobs queued without timers run too. */
    VT_CHECK_OK(vt_pool_submit(p, record_job, (void *)101));
    VT_CHECK_OK(vt_pool_run_until(p, VT_SEC(9)));
    VT_CHECK_EQ(T.n, 7);
    VT_CHECK_EQ(T.ev[6].id, 101);
    VT_CHECK_EQ(T.ev[6].now, VT_SEC(8));
    vt_pool_free(p);
    trace_end();
}

VT_TEST(wait_idle_times_out_on_a_timer_beyond_the_deadline)
{
    vt_pool *p = det_pool(5, NULL, NULL);
    VT_CHECK_NOT_NULL(p);
    trace_begin(p);
    VT_CHECK_OK(vt_pool_submit(p, record_job, (void *)1));
    VT_CHECK_OK(vt_pool_submit_at(p, VT_SEC(2), record_job, (void *)2, NULL));
    VT_CHECK_OK(vt_pool_submit_at(p, VT_SEC(10), record_job, (void *)3, NULL));

    VT_CHECK_ERR(vt_pool_wait_idle(p, VT_SEC(5)), VT_ETIMEDOUT);
    /* Everything due by the deadline ran, the rest did not. */
    VT_CHECK_EQ(T.n, 2);
    VT_CHECK_EQ(T.ev[0].id, 1);
    VT_CHECK_EQ(T.ev[1].id, 2);
    VT_CHECK_EQ(T.ev[1].now, VT_SEC(2));
    VT_CHECK_LT(vt_pool_now(p), VT_SEC(10));
    vt_pool_metrics m;
    VT_CHECK_OK(vt_pool_metrics_get(p, &m, NULL, 0));
    VT_CHECK_EQ(m.timers_pending, 1);

    VT_CHECK_ERR(vt_pool_wait_idle(p, VT_NOW), VT_ETIMEDOUT);
    VT_CHECK_EQ(T.n, 2);

    VT_CHECK_OK(vt_pool_wait_idle(p, VT_SEC(10)));
    VT_CHECK_EQ(T.n, 3);
    VT_CHECK_EQ(T.ev[2].now, VT_SEC(10));
    VT_CHECK_OK(vt_pool_wait_idle(p, VT_NOW));
    vt_pool_free(p);
    trace_end();
}

VT_TEST(cancelled_timer_never_fires)
{
    vt_pool *p = det_pool(5, NULL, NULL);
    VT_CHECK_NOT_NULL(p);
    trace_begin(p);
    vt_timer a, b;
    VT_CHECK_OK(vt_pool_submit_after(p, VT_SEC(1), record_job, (void *)1, &a));
    VT_CHECK_OK(vt_pool_submit_after(p, VT_SEC(2), record_job, (void *)2, &b));
    VT_CHECK_OK(vt_timer_cancel(p, a));
    VT_CHECK_ERR(vt_timer_cancel(p, a), VT_ENOENT);
    VT_CHECK_OK(vt_pool_wait_idle(p, VT_FOREVER));
    VT_CHECK_EQ(T.n, 1);
    VT_CHECK_EQ(T.ev[0].id, 2);
    VT_CHECK_EQ(T.ev[0].now, VT_SEC(2));
    VT_CHECK_ERR(vt_timer_cancel(p, b), VT_ENOENT);
    vt_pool_free(p);
    trace_end();
}

/* ---- Errors ---------------------------------------------------------------- */

static struct {
    vt_pool *p;
    vt_err run_until, wait_idle, shutdown;
    vt_pool *current;
    int index;
} IN;

static void from_job(void *arg)
{
    (void)arg;
    IN.run_until = vt_pool_run_until(IN.p, VT_FOREVER);
    IN.wait_idle = vt_pool_wait_idle(IN.p, VT_FOREVER);
    IN.shutdown = vt_pool_shutdown(IN.p, VT_SHUTDOWN_DRAIN, VT_FOREVER);
    IN.current = vt_pool_current();
    IN.index = vt_worker_index();
}

VT_TEST(errors)
{
    vt_pool *p = NULL;
    vt_pool_opts o;
    vt_pool_opts_init(&o);
    o.deterministic = 1;
    o.workers = 2;
    VT_CHECK_ERR(vt_pool_new(&p, &o), VT_EINVAL);
    VT_CHECK_NULL(p);
    o.workers = 1;
    VT_CHECK_OK(vt_pool_new(&p, &o));
    VT_CHECK_EQ(vt_pool_workers(p), 1);
    vt_pool_free(p);
    o.workers = 0;
    VT_CHECK_OK(vt_pool_new(&p, &o));
    VT_CHECK_EQ(vt_pool_workers(p), 1);

    VT_CHECK_ERR(vt_pool_run_until(NULL, VT_FOREVER), VT_EINVAL);

    /* From a job of the pool: it would wait for itself. */
    memset(&IN, 0, sizeof(IN));
    IN.p = p;
    IN.index = -2;
    VT_CHECK_OK(vt_pool_submit(p, from_job, NULL));
    VT_CHECK_OK(vt_pool_run_until(p, VT_FOREVER));
    VT_CHECK_ERR(IN.run_until, VT_ESTATE);
    VT_CHECK_ERR(IN.wait_idle, VT_ESTATE);
    VT_CHECK_ERR(IN.shutdown, VT_ESTATE);
    VT_CHECK_PTR_EQ(IN.current, p);
    VT_CHECK_EQ(IN.index, 0);
    /* The driving thread is a worker only while it drives. */
    VT_CHECK_NULL(vt_pool_current());
    VT_CHECK_EQ(vt_worker_index(), -1);
    vt_pool_free(p);

    /* Only deterministic pools have a virtual clock to run. */
    vt_pool_opts_init(&o);
    o.workers = 1;
    VT_CHECK_OK(vt_pool_new(&p, &o));
    VT_CHECK_ERR(vt_pool_run_until(p, VT_FOREVER), VT_ENOTSUP);
    VT_CHECK_ERR(vt_pool_run_until(p, VT_SEC(1)), VT_ENOTSUP);
    vt_pool_free(p);
}

/* ---- Shutdown ------------------------------------------------------------------ */

typedef struct cancel_log {
    int calls;
    int bad_fn;
    unsigned char seen[1024];
} cancel_log;

static void on_cancel(void *ud, vt_job_fn fn, void *arg)
{
    cancel_log *c = ud;
    c->calls++;
    if (fn != record_job)
        c->bad_fn++;
    uintptr_t i = (uintptr_t)arg;
    if (i < sizeof(c->seen))
        c->seen[i]++;
}

static vt_err drain_timer_err;

static void drain_spawner(void *arg)
{
    uintptr_t i = (uintptr_t)arg;
    record(i);
    if (i < 600 && vt_pool_submit(T.p, drain_spawner, (void *)(i + 100)) != VT_OK)
        T.errors++;
    if (i == 5)
        drain_timer_err = vt_pool_submit_after(T.p, 1, record_job, (void *)999, NULL);
}

VT_TEST(shutdown_drain_runs_queued_jobs_and_cancels_timers)
{
    cancel_log cl;
    memset(&cl, 0, sizeof(cl));
    vt_pool *p = det_pool(9, on_cancel, &cl);
    VT_CHECK_NOT_NULL(p);
    trace_begin(p);
    drain_timer_err = VT_OK;
    for (uintptr_t i = 0; i < 100; i++)
        VT_CHECK_OK(vt_pool_submit(p, drain_spawner, (void *)i));
    for (uintptr_t i = 700; i < 720; i++)
        VT_CHECK_OK(vt_pool_submit_after(p, VT_SEC(1) * (int64_t)(i - 699), record_job, (void *)i, NULL));
    VT_CHECK_OK(vt_pool_shutdown(p, VT_SHUTDOWN_DRAIN, VT_FOREVER));
    /* Every queued job ran, with those they submitted (0..699), and no
     * timer fired: the clock never moved. */
    VT_CHECK_EQ(T.errors, 0);
    VT_CHECK_EQ(T.n, 700);
    unsigned char ran[700] = {0};
    for (size_t k = 0; k < T.n; k++) {
        VT_CHECK_LT(T.ev[k].id, 700);
        VT_CHECK_EQ(T.ev[k].now, 0);
        ran[T.ev[k].id]++;
    }
    for (int i = 0; i < 700; i++)
        VT_CHECK_EQ(ran[i], 1);
    /* Timers are refused once shutdown began, and the pending ones are
     * reported, each once. */
    VT_CHECK_ERR(drain_timer_err, VT_ECLOSED);
    VT_CHECK_EQ(cl.calls, 20);
    VT_CHECK_EQ(cl.bad_fn, 0);
    for (int i = 700; i < 720; i++)
        VT_CHECK_EQ(cl.seen[i], 1);
    vt_pool_metrics m;
    VT_CHECK_OK(vt_pool_metrics_get(p, &m, NULL, 0));
    VT_CHECK_EQ(m.cancelled, 20);
    VT_CHECK_EQ(m.timers_pending, 0);
    VT_CHECK_EQ(m.timers_fired, 0);

    VT_CHECK_ERR(vt_pool_submit(p, record_job, (void *)1), VT_ECLOSED);
    VT_CHECK_ERR(vt_pool_submit_at(p, 5, record_job, (void *)1, NULL), VT_ECLOSED);
    VT_CHECK_ERR(vt_pool_submit_after(p, 5, record_job, (void *)1, NULL), VT_ECLOSED);
    VT_CHECK_ERR(vt_pool_shutdown(p, VT_SHUTDOWN_DRAIN, VT_FOREVER), VT_ECLOSED);
    VT_CHECK_ERR(vt_pool_shutdown(p, VT_SHUTDOWN_CANCEL, VT_FOREVER), VT_ECLOSED);
    vt_pool_free(p);
    VT_CHECK_EQ(cl.calls, 20);
    VT_CHECK_EQ(T.n, 700);
    trace_end();
}

VT_TEST(shutdown_cancel_discards_queued_jobs_and_timers)
{
    cancel_log cl;
    memset(&cl, 0, sizeof(cl));
    vt_pool *p = det_pool(9, on_cancel, &cl);
    VT_CHECK_NOT_NULL(p);
    trace_begin(p);
    /* Some ran already: those are not reported. */
    for (uintptr_t i = 0; i < 10; i++)
        VT_CHECK_OK(vt_pool_submit(p, record_job, (void *)i));
    VT_CHECK_OK(vt_pool_wait_idle(p, VT_FOREVER));
    VT_CHECK_EQ(T.n, 10);
    for (uintptr_t i = 10; i < 500; i++)
        VT_CHECK_OK(vt_pool_submit(p, record_job, (void *)i));
    for (uintptr_t i = 500; i < 530; i++)
        VT_CHECK_OK(vt_pool_submit_after(p, (int64_t)i, record_job, (void *)i, NULL));
    VT_CHECK_OK(vt_pool_shutdown(p, VT_SHUTDOWN_CANCEL, VT_FOREVER));
    VT_CHECK_EQ(T.n, 10);
    VT_CHECK_EQ(cl.calls, 520);
    VT_CHECK_EQ(cl.bad_fn, 0);
    for (int i = 0; i < 530; i++)
        VT_CHECK_EQ(cl.seen[i], i < 10 ? 0 : 1);
    vt_pool_metrics m;
    VT_CHECK_OK(vt_pool_metrics_get(p, &m, NULL, 0));
    VT_CHECK_EQ(m.cancelled, 520);
    VT_CHECK_EQ(m.timers_pending, 0);
    VT_CHECK_ERR(vt_pool_submit(p, record_job, (void *)1), VT_ECLOSED);
    vt_pool_free(p);
    VT_CHECK_EQ(T.n, 10);
    VT_CHECK_EQ(cl.calls, 520);
    trace_end();
}

VT_TEST(free_without_shutdown_drains)
{
    cancel_log cl;
    memset(&cl, 0, sizeof(cl));
    vt_pool *p = det_pool(13, on_cancel, &cl);
    VT_CHECK_NOT_NULL(p);
    trace_begin(p);
    for (uintptr_t i = 0; i < 50; i++)
        VT_CHECK_OK(vt_pool_submit(p, record_job, (void *)i));
    VT_CHECK_OK(vt_pool_submit_after(p, VT_SEC(1), record_job, (void *)50, NULL));
    vt_pool_free(p);
    VT_CHECK_EQ(T.n, 50);
    VT_CHECK_EQ(cl.calls, 1);
    VT_CHECK_EQ(cl.seen[50], 1);
    trace_end();
}

VT_TEST(leaks_nothing)
{
    long live = vt_test_alloc_live();
    VT_CHECK(run_program(99));
    VT_CHECK_EQ(vt_test_alloc_live(), live);
    trace_end();
}
