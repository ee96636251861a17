/* Timers with a million outstanding: the cost of starting one, of
 * cancelling one, and of firing one. median_ns is ns per timer.
 *   name=timer_insert  M timers started, deadlines drawn from a fixed seed
 *                      between 1 s and 1 h ahead. vitte: vt_pool_submit_at on
 *                      a pool of 1 worker (its timer thread sleeps through);
 *                      libuv: uv_timer_init + uv_timer_start on one loop
 *                      (handles preallocated by the benchmark).
 *   name=timer_cancel  those M timers cancelled in a random order: vitte
 *                      vt_timer_cancel, libuv uv_timer_stop.
 *   name=timer_expire  M timers all made due, then fired, each running a
 *                      no-op: vitte, a deterministic pool whose virtual clock
 *                      starts at 0, with deadlines spread over its first
 *                      second, driven by vt_pool_run_until(p, VT_FOREVER)
 *                      (each timer queues a job that then runs); libuv,
 *                      timeouts spread over 1 s, a sleep until all are due,
 *                      then uv_run(UV_RUN_NOWAIT), which fires them all.
 * vitte alone also reports its timer service without the pool (the internal
 * vt__timers API, no thread, the owner's clock): timer_wheel_insert,
 * timer_wheel_cancel, and timer_wheel_expire, where one
 * vt__timers_expire call fires M timers spread over 1 s .. 1 h.
 * --threads is accepted for bench/run and ignored: this is one thread.
 *
 * Each repetition starts a new pool, whose slab of timer nodes (72 MB for a
 * million) glibc would hand back to the kernel at vt_pool_free and fault in
 * again, page by page, inside the next timed loop: the benchmark keeps freed
 * memory in malloc's heap (mallopt), so that it measures the timers, not the
 * page-fault path (libuv's handles are one array, allocated once). */
#include "bench.h"

#include <malloc.h>

#include "vitte/sched.h"

#include "../../src/sched/timer.h"

#ifdef VT_HAVE_LIBUV
#include <uv.h>
#endif

enum {
    IMPL_VITTE,
    IMPL_LIBUV,
    N_IMPLS
};

static const bench_impl impls[N_IMPLS] = {
    {"vitte", 1},
#ifdef VT_HAVE_LIBUV
    {"libuv", 1},
#else
    {"libuv", 0},
#endif
};

static size_t n_timers;
static int64_t *ahead;    /* 1 s .. 1 h, ns */
static int64_t *within1s; /* 0 .. 1 s, ns */
static uint32_t *order;   /* the cancel order */
static vt_timer *handles, *permuted;
static uint64_t ran;

static void noop(void *arg)
{
    (void)arg;
    ran++;
}

static void draw(void)
{
    uint64_t s = 0x7469636b;
    for (size_t i = 0; i < n_timers; i++) {
        ahead[i] = VT_SEC(1) + (int64_t)(vt__rand_next(&s) % (uint64_t)VT_SEC(3599));
        within1s[i] = (int64_t)(vt__rand_next(&s) % (uint64_t)VT_SEC(1));
        order[i] = (uint32_t)i;
    }
    for (size_t i = n_timers - 1; i > 0; i--) {
        size_t j = vt__rand_next(&s) % (i + 1);
        uint32_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

/* ---- vitte, public API ---------------------------------------------------- */

static vt_pool *pool_new(int deterministic)
{
    vt_pool_opts o;
    vt_pool_opts_init(&o);
    o.workers = 1;
    o.deterministic = deterministic;
    o.name = "bench";
    vt_pool *p = NULL;
    return vt_pool_new(&p, &o) == VT_OK ? p : NULL;
}

static int submit_all(bench_case *c, vt_pool *p, const int64_t *dl, int64_t base, double *ns)
{
    int64_t t0 = bench_now_ns();
    for (size_t i = 0; i < n_timers; i++) {
        vt_err e = vt_pool_submit_at(p, base + dl[i], noop, NULL, &handles[i]);
        if (e != VT_OK)
            return bench_fail(c, "vt_pool_submit_at: %s", vt_strerror(e));
    }
    if (ns)
        *ns = (double)(bench_now_ns() - t0) / (double)n_timers;
    return 0;
}

static int rep_insert(bench_case *c, double *ns)
{
    vt_pool *p = pool_new(0);
    if (!p)
        return bench_fail(c, "vt_pool_new failed");
    int r = submit_all(c, p, ahead, vt_pool_now(p), ns);
    vt_pool_free(p);
    return r;
}

static int rep_cancel(bench_case *c, double *ns)
{
    vt_pool *p = pool_new(0);
    if (!p)
        return bench_fail(c, "vt_pool_new failed");
    int r = submit_all(c, p, ahead, vt_pool_now(p), NULL);
    if (r == 0) {
        for (size_t i = 0; i < n_timers; i++)
            permuted[i] = handles[order[i]];
        int64_t t0 = bench_now_ns();
        for (size_t i = 0; i < n_timers; i++) {
            vt_err e = vt_timer_cancel(p, permuted[i]);
            if (e != VT_OK) {
                r = bench_fail(c, "vt_timer_cancel: %s", vt_strerror(e));
                break;
            }
        }
        *ns = (double)(bench_now_ns() - t0) / (double)n_timers;
    }
    vt_pool_free(p);
    return r;
}

static int rep_expire(bench_case *c, double *ns)
{
    vt_pool *p = pool_new(1);
    if (!p)
        return bench_fail(c, "vt_pool_new failed");
    int r = submit_all(c, p, within1s, vt_pool_now(p), NULL);
    if (r == 0) {
        ran = 0;
        int64_t t0 = bench_now_ns();
        vt_err e = vt_pool_run_until(p, VT_FOREVER);
        *ns = (double)(bench_now_ns() - t0) / (double)n_timers;
        if (e != VT_OK)
            r = bench_fail(c, "vt_pool_run_until: %s", vt_strerror(e));
        else if (ran != n_timers)
            r = bench_fail(c, "%llu of %zu timer jobs ran", (unsigned long long)ran, n_timers);
    }
    vt_pool_free(p);
    return r;
}

/* ---- vitte, the timer service alone ------------------------------------------ */

static void count_dispatch(void *ud, vt_job_fn fn, void *arg)
{
    (void)ud;
    fn(arg);
}

static vt__timers *wheel_fill(bench_case *c, double *ns)
{
    vt__timers *t = NULL;
    if (vt__timers_new(&t, 0, count_dispatch, NULL, NULL) != VT_OK) {
        bench_fail(c, "vt__timers_new failed");
        return NULL;
    }
    int64_t t0 = bench_now_ns();
    for (size_t i = 0; i < n_timers; i++) {
        if (vt__timers_add(t, ahead[i], noop, NULL, &handles[i]) != VT_OK) {
            bench_fail(c, "vt__timers_add failed");
            vt__timers_free(t, NULL, NULL);
            return NULL;
        }
    }
    if (ns)
        *ns = (double)(bench_now_ns() - t0) / (double)n_timers;
    return t;
}

static int rep_wheel_insert(bench_case *c, double *ns)
{
    vt__timers *t = wheel_fill(c, ns);
    if (!t)
        return -1;
    vt__timers_free(t, NULL, NULL);
    return 0;
}

static int rep_wheel_cancel(bench_case *c, double *ns)
{
    vt__timers *t = wheel_fill(c, NULL);
    if (!t)
        return -1;
    for (size_t i = 0; i < n_timers; i++)
        permuted[i] = handles[order[i]];
    int r = 0;
    int64_t t0 = bench_now_ns();
    for (size_t i = 0; i < n_timers; i++)
        if (vt__timers_cancel(t, permuted[i]) != VT_OK) {
            r = bench_fail(c, "vt__timers_cancel failed");
            break;
        }
    *ns = (double)(bench_now_ns() - t0) / (double)n_timers;
    vt__timers_free(t, NULL, NULL);
    return r;
}

static int rep_wheel_expire(bench_case *c, double *ns)
{
    vt__timers *t = wheel_fill(c, NULL);
    if (!t)
        return -1;
    ran = 0;
    int64_t t0 = bench_now_ns();
    size_t n = vt__timers_expire(t, VT_SEC(3601));
    *ns = (double)(bench_now_ns() - t0) / (double)n_timers;
    vt__timers_free(t, NULL, NULL);
    if (n != n_timers || ran != n_timers)
        return bench_fail(c, "%zu of %zu timers fired", n, n_timers);
    return 0;
}

/* ---- libuv --------------------------------------------------------------------- */

#ifdef VT_HAVE_LIBUV
static uv_timer_t *uvt;

static void uv_noop(uv_timer_t *h)
{
    (void)h;
    ran++;
}

static int uv_start_all(bench_case *c, uv_loop_t *loop, const int64_t *dl, double *ns)
{
    if (uv_loop_init(loop) != 0)
        return bench_fail(c, "uv_loop_init failed");
    int64_t t0 = bench_now_ns();
    for (size_t i = 0; i < n_timers; i++) {
        uv_timer_init(loop, &uvt[i]);
        if (uv_timer_start(&uvt[i], uv_noop, (uint64_t)(dl[i] / 1000000), 0) != 0)
            return bench_fail(c, "uv_timer_start failed");
    }
    if (ns)
        *ns = (double)(bench_now_ns() - t0) / (double)n_timers;
    return 0;
}

static void uv_finish(uv_loop_t *loop)
{
    for (size_t i = 0; i < n_timers; i++)
        uv_close((uv_handle_t *)&uvt[i], NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
}

static int rep_uv_insert(bench_case *c, double *ns)
{
    uv_loop_t loop;
    int r = uv_start_all(c, &loop, ahead, ns);
    uv_finish(&loop);
    return r;
}

static int rep_uv_cancel(bench_case *c, double *ns)
{
    uv_loop_t loop;
    int r = uv_start_all(c, &loop, ahead, NULL);
    if (r == 0) {
        int64_t t0 = bench_now_ns();
        for (size_t i = 0; i < n_timers; i++)
            uv_timer_stop(&uvt[order[i]]);
        *ns = (double)(bench_now_ns() - t0) / (double)n_timers;
    }
    uv_finish(&loop);
    return r;
}

static int rep_uv_expire(bench_case *c, double *ns)
{
    uv_loop_t loop;
    int r = uv_start_all(c, &loop, within1s, NULL);
    if (r == 0) {
        /* Until the last timeout (under 1 s after the loop's time) passed. */
        bench_sleep_ns(VT_MS(1010));
        ran = 0;
        int64_t t0 = bench_now_ns();
        uv_run(&loop, UV_RUN_NOWAIT);
        *ns = (double)(bench_now_ns() - t0) / (double)n_timers;
        if (ran != n_timers)
            r = bench_fail(c, "%llu of %zu timers fired", (unsigned long long)ran, n_timers);
    }
    uv_finish(&loop);
    return r;
}
#endif

static bench_case cases[16];

int main(int argc, char **argv)
{
    long timers = 1000000;
    const bench_opt opts[] = {{"--timers", &timers, "timers outstanding"}, {NULL, NULL, NULL}};
    bench_args a;
    bench_parse(&a, argc, argv, impls, N_IMPLS, 1, opts);
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    n_timers = (size_t)timers;
    ahead = malloc(n_timers * sizeof *ahead);
    within1s = malloc(n_timers * sizeof *within1s);
    order = malloc(n_timers * sizeof *order);
    handles = malloc(n_timers * sizeof *handles);
    permuted = malloc(n_timers * sizeof *permuted);
#ifdef VT_HAVE_LIBUV
    uvt = malloc(n_timers * sizeof *uvt);
    if (!uvt) {
        fprintf(stderr, "error: out of memory\n");
        return 1;
    }
#endif
    if (!ahead || !within1s || !order || !handles || !permuted) {
        fprintf(stderr, "error: out of memory\n");
        return 1;
    }
    draw();

    /* Interleaved: insert vitte, insert libuv, cancel vitte, ... so that
     * each round runs every case once (bench.h rotates the start). */
    static const char *names[3] = {"timer_insert", "timer_cancel", "timer_expire"};
    bench_rep_fn vitte_fns[3] = {rep_insert, rep_cancel, rep_expire};
    bench_rep_fn wheel_fns[3] = {rep_wheel_insert, rep_wheel_cancel, rep_wheel_expire};
    static const char *wheel_names[3] = {"timer_wheel_insert", "timer_wheel_cancel",
                                         "timer_wheel_expire"};
    int nc = 0;
    for (int k = 0; k < 3; k++) {
        if (a.impl_on[IMPL_VITTE])
            cases[nc++] =
                (bench_case){.name = names[k], .impl = "vitte", .threads = 1, .rep = vitte_fns[k]};
#ifdef VT_HAVE_LIBUV
        bench_rep_fn uv_fns[3] = {rep_uv_insert, rep_uv_cancel, rep_uv_expire};
        if (a.impl_on[IMPL_LIBUV])
            cases[nc++] =
                (bench_case){.name = names[k], .impl = "libuv", .threads = 1, .rep = uv_fns[k]};
#endif
    }
    if (a.impl_on[IMPL_VITTE])
        for (int k = 0; k < 3; k++)
            cases[nc++] = (bench_case){
                .name = wheel_names[k], .impl = "vitte", .threads = 1, .rep = wheel_fns[k]};
    for (int i = 0; i < nc; i++) {
        bench_extra(&cases[i], "outstanding=%zu", n_timers);
        if (!strcmp(cases[i].name, "timer_expire"))
            bench_extra(&cases[i], "spread_ms=1000");
        else
            bench_extra(&cases[i], "spread_ms=1000..3600000");
        if (!strncmp(cases[i].name, "timer_wheel", 11))
            bench_extra(&cases[i], "api=internal");
    }
    bench_run(cases, nc, &a);
    int status = bench_report(cases, nc);
    free(ahead);
    free(within1s);
    free(order);
    free(handles);
    free(permuted);
#ifdef VT_HAVE_LIBUV
    free(uvt);
#endif
    return status;
}
