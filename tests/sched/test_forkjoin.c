/* Fork–join: VT_TASK / VT_SPAWN / VT_SYNC / VT_CALL / VT_RUN. */
#include <sched.h>
#include <stdint.h>
#include <string.h>

#include "vt_test.h"
#include "vitte/sched.h"

VT_TASK(long, fib, int, n)
{
    if (n < 2)
        return n;
    VT_SPAWN(fib, n - 1);
    long b = VT_CALL(fib, n - 2);
    long a = VT_SYNC(fib);
    return a + b;
}

static long fib_serial(int n)
{
    return n < 2 ? n : fib_serial(n - 1) + fib_serial(n - 2);
}

/* Sum of a[lo..hi) by halving: a wide tree, spawns of a pointer argument. */
VT_TASK(uint64_t, psum, const uint64_t *, a, size_t, lo, size_t, hi)
{
    if (hi - lo <= 16) {
        uint64_t s = 0;
        for (size_t i = lo; i < hi; i++)
            s += a[i];
        return s;
    }
    size_t mid = lo + (hi - lo) / 2;
    VT_SPAWN(psum, a, lo, mid);
    uint64_t right = VT_CALL(psum, a, mid, hi);
    return VT_SYNC(psum) + right;
}

/* Many spawns before the syncs: exercises the split moving both ways. */
VT_TASK(uint64_t, leaf, uint64_t, x)
{
    return x * x;
}

VT_TASK(uint64_t, fan, unsigned, width, unsigned, depth)
{
    if (depth == 0)
        return 1;
    for (unsigned i = 0; i < width; i++)
        VT_SPAWN(fan, width, depth - 1);
    uint64_t total = 0;
    for (unsigned i = 0; i < width; i++)
        total += VT_SYNC(fan);
    return total;
}

VT_TASK(uint64_t, squares, unsigned, n)
{
    for (unsigned i = 0; i < n; i++)
        VT_SPAWN(leaf, i);
    uint64_t s = 0;
    for (unsigned i = n; i-- > 0;)
        s += VT_SYNC(leaf);
    return s;
}

/* Every arity, void tasks, and arguments of mixed sizes. */
static _Atomic uint64_t void_hits;

VT_VOID_TASK(touch0)
{
    atomic_fetch_add(&void_hits, 1);
}

VT_VOID_TASK(touch_tree, int, depth)
{
    atomic_fetch_add(&void_hits, 1);
    if (depth == 0)
        return;
    VT_SPAWN(touch_tree, depth - 1);
    VT_SPAWN(touch0);
    VT_CALL(touch_tree, depth - 1);
    VT_SYNC(touch0);
    VT_SYNC(touch_tree);
}

VT_TASK(int, arity0)
{
    return 42;
}

VT_TASK(double, arity4, char, c, short, s, double, d, uint64_t, u)
{
    return (double)c + (double)s + d + (double)u;
}

VT_TASK(double, mixed, int, n)
{
    VT_SPAWN(arity4, 1, 2, 0.5, (uint64_t)n);
    VT_SPAWN(arity0);
    double b = VT_SYNC(arity0);
    double a = VT_SYNC(arity4);
    return a + b;
}

static vt_pool *pool_of(unsigned workers)
{
    vt_pool_opts o;
    vt_pool_opts_init(&o);
    o.workers = workers;
    vt_pool *p = NULL;
    if (vt_pool_new(&p, &o) != VT_OK)
        return NULL;
    return p;
}

static const unsigned worker_counts[] = {1, 2, 8};

VT_TEST(fib_matches_serial_at_1_2_8_workers)
{
    for (size_t k = 0; k < sizeof(worker_counts) / sizeof(worker_counts[0]); k++) {
        vt_pool *p = pool_of(worker_counts[k]);
        VT_CHECK_NOT_NULL(p);
        for (int n = 0; n <= 24; n += 3) {
            long r = -1;
            VT_CHECK_OK(VT_RUN(p, fib, &r, n));
            VT_CHECK_EQ(r, fib_serial(n));
        }
        vt_pool_free(p);
    }
}

VT_TEST(parallel_sum_at_1_2_8_workers)
{
    size_t n = 100000;
    uint64_t *a = vt_alloc(n * sizeof(*a));
    VT_CHECK_NOT_NULL(a);
    uint64_t want = 0;
    for (size_t i = 0; i < n; i++) {
        a[i] = vt_test_rand() & 0xffff;
        want += a[i];
    }
    for (size_t k = 0; k < sizeof(worker_counts) / sizeof(worker_counts[0]); k++) {
        vt_pool *p = pool_of(worker_counts[k]);
        VT_CHECK_NOT_NULL(p);
        for (int rep = 0; rep < 5; rep++) {
            uint64_t got = 0;
            VT_CHECK_OK(VT_RUN(p, psum, &got, a, (size_t)0, n));
            VT_CHECK_EQ(got, want);
        }
        vt_pool_free(p);
    }
    vt_free(a, n * sizeof(*a));
}

VT_TEST(wide_spawns_then_syncs)
{
    for (size_t k = 0; k < sizeof(worker_counts) / sizeof(worker_counts[0]); k++) {
        vt_pool *p = pool_of(worker_counts[k]);
        VT_CHECK_NOT_NULL(p);
        uint64_t leaves = 0;
        VT_CHECK_OK(VT_RUN(p, fan, &leaves, 6u, 5u));
        VT_CHECK_EQ(leaves, 6u * 6 * 6 * 6 * 6);
        uint64_t s = 0;
        VT_CHECK_OK(VT_RUN(p, squares, &s, 1000u));
        uint64_t want = 0;
        for (uint64_t i = 0; i < 1000; i++)
            want += i * i;
        VT_CHECK_EQ(s, want);
        vt_pool_free(p);
    }
}

VT_TEST(void_tasks_and_every_arity)
{
    vt_pool *p = pool_of(2);
    VT_CHECK_NOT_NULL(p);
    atomic_store(&void_hits, 0);
    VT_CHECK_OK(VT_RUN(p, touch_tree, NULL, 10));
    /* touch_tree(d) = 1 + 1 (touch0) + 2 * touch_tree(d-1), touch_tree(0) = 1. */
    uint64_t want = 1;
    for (int d = 1; d <= 10; d++)
        want = 2 + 2 * want;
    VT_CHECK_EQ(atomic_load(&void_hits), want);
    int v = 0;
    VT_CHECK_OK(VT_RUN(p, arity0, &v));
    VT_CHECK_EQ(v, 42);
    double d = 0;
    VT_CHECK_OK(VT_RUN(p, mixed, &d, 7));
    VT_CHECK(d == 1 + 2 + 0.5 + 7 + 42);
    VT_CHECK_OK(VT_RUN(p, fib, NULL, 10)); /* a NULL result pointer discards it */
    vt_pool_free(p);
}

/* VT_RUN from a job of the same pool runs inline; from a job of another
 * pool it waits like any thread. */
typedef struct nested_ctx {
    vt_pool *self, *other;
    long inline_result, cross_result;
    vt_err inline_err, cross_err;
} nested_ctx;

static void nested_job(void *arg)
{
    nested_ctx *c = arg;
    c->inline_err = VT_RUN(c->self, fib, &c->inline_result, 20);
    c->cross_err = VT_RUN(c->other, fib, &c->cross_result, 18);
}

VT_TEST(run_from_a_job)
{
    vt_pool *a = pool_of(2), *b = pool_of(2);
    VT_CHECK_NOT_NULL(a);
    VT_CHECK_NOT_NULL(b);
    nested_ctx c = {.self = a, .other = b};
    VT_CHECK_OK(vt_pool_submit(a, nested_job, &c));
    VT_CHECK_OK(vt_pool_wait_idle(a, VT_FOREVER));
    VT_CHECK_OK(c.inline_err);
    VT_CHECK_OK(c.cross_err);
    VT_CHECK_EQ(c.inline_result, fib_serial(20));
    VT_CHECK_EQ(c.cross_result, fib_serial(18));
    vt_pool_free(a);
    vt_pool_free(b);
}

typedef struct runner {
    vt_pool *p;
    int n;
    long result;
    vt_err err;
} runner;

static void *run_from_thread(void *arg)
{
    runner *r = arg;
    r->err = VT_RUN(r->p, fib, &r->result, r->n);
    return NULL;
}

VT_TEST(concurrent_runs_from_many_threads)
{
    vt_pool *p = pool_of(2);
    VT_CHECK_NOT_NULL(p);
    enum { T = 6 };
    pthread_t th[T];
    runner r[T];
    for (int i = 0; i < T; i++) {
        r[i] = (runner){.p = p, .n = 14 + i, .result = -1, .err = VT_EINVAL};
        VT_CHECK_EQ(pthread_create(&th[i], NULL, run_from_thread, &r[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        VT_CHECK_OK(r[i].err);
        VT_CHECK_EQ(r[i].result, fib_serial(14 + i));
    }
    vt_pool_free(p);
}

/* The parent spawns a child and waits for it without syncing: only a
 * thief can run the child, so this finishes only if stealing works (a hang
 * is reported by the harness's alarm). */
static _Atomic int child_ran;

VT_VOID_TASK(mark_child)
{
    atomic_store(&child_ran, 1);
}

VT_TASK(int, wait_for_thief)
{
    VT_SPAWN(mark_child);
    while (!atomic_load(&child_ran))
        sched_yield();
    VT_SYNC(mark_child);
    return 1;
}

VT_TEST(a_spawned_frame_is_stolen_by_an_idle_worker)
{
    for (unsigned workers = 2; workers <= 8; workers *= 2) {
        vt_pool *p = pool_of(workers);
        VT_CHECK_NOT_NULL(p);
        for (int rep = 0; rep < 20; rep++) {
            atomic_store(&child_ran, 0);
            int r = 0;
            VT_CHECK_OK(VT_RUN(p, wait_for_thief, &r));
            VT_CHECK_EQ(r, 1);
        }
        vt_pool_metrics m;
        VT_CHECK_OK(vt_pool_metrics_get(p, &m, NULL, 0));
        VT_CHECK_GE(m.total.stolen, 20);
        vt_pool_free(p);
    }
}

VT_TEST(run_errors)
{
    long r = 7;
    VT_CHECK_ERR(VT_RUN((vt_pool *)NULL, fib, &r, 5), VT_EINVAL);
    VT_CHECK_EQ(r, 7);
    vt_pool *p = pool_of(1);
    VT_CHECK_NOT_NULL(p);
    VT_CHECK_OK(vt_pool_shutdown(p, VT_SHUTDOWN_DRAIN, VT_FOREVER));
    VT_CHECK_ERR(VT_RUN(p, fib, &r, 5), VT_ECLOSED);
    VT_CHECK_EQ(r, 7);
    vt_pool_free(p);
}

VT_TEST(small_frame_deque_is_enough_for_deep_recursion)
{
    /* fib(n) keeps at most n frames pending per worker. */
    vt_pool_opts o;
    vt_pool_opts_init(&o);
    o.workers = 2;
    o.frames = 64;
    vt_pool *p = NULL;
    VT_CHECK_OK(vt_pool_new(&p, &o));
    long r;
    VT_CHECK_OK(VT_RUN(p, fib, &r, 25));
    VT_CHECK_EQ(r, fib_serial(25));
    vt_pool_free(p);
}

VT_TEST(deterministic_pool_runs_tasks)
{
    vt_pool_opts o;
    vt_pool_opts_init(&o);
    o.deterministic = 1;
    o.seed = 99;
    vt_pool *p = NULL;
    VT_CHECK_OK(vt_pool_new(&p, &o));
    long r;
    VT_CHECK_OK(VT_RUN(p, fib, &r, 20));
    VT_CHECK_EQ(r, fib_serial(20));
    vt_pool_free(p);
}

/* A task running on the guest (the thread that called VT_RUN) submits
 * closure jobs: they are handed to the pool when the guest leaves, and
 * vt_pool_wait_idle sees them run. */
static _Atomic uint64_t closures_ran;

static void closure_from_task(void *arg)
{
    (void)arg;
    atomic_fetch_add(&closures_ran, 1);
}

VT_TASK(int, spawn_and_submit, int, depth)
{
    if (depth == 0) /* a failed submission spoils the count the test checks */
        return vt_pool_submit(vt_pool_current(), closure_from_task, NULL) == VT_OK ? 1 : -100000;
    VT_SPAWN(spawn_and_submit, depth - 1);
    int b = VT_CALL(spawn_and_submit, depth - 1);
    return VT_SYNC(spawn_and_submit) + b;
}

VT_TEST(guest_and_queued_roots_both_work)
{
    for (int no_guest = 0; no_guest <= 1; no_guest++) {
        vt_pool_opts o;
        vt_pool_opts_init(&o);
        o.workers = 2;
        o.no_guest = no_guest;
        vt_pool *p = NULL;
        VT_CHECK_OK(vt_pool_new(&p, &o));
        atomic_store(&closures_ran, 0);
        int leaves = 0;
        VT_CHECK_OK(VT_RUN(p, spawn_and_submit, &leaves, 10));
        VT_CHECK_EQ(leaves, 1024);
        VT_CHECK_OK(vt_pool_wait_idle(p, VT_FOREVER));
        VT_CHECK_EQ(atomic_load(&closures_ran), 1024);
        long r = 0;
        VT_CHECK_OK(VT_RUN(p, fib, &r, 20));
        VT_CHECK_EQ(r, fib_serial(20));
        /* The caller is not a worker before or after. */
        VT_CHECK_EQ(vt_worker_index(), -1);
        VT_CHECK_NULL(vt_pool_current());
        vt_pool_free(p);
    }
}
