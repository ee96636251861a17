/* What an idle pool costs: a pool of N workers (default 2) runs a little
 * work, goes quiet (vt_pool_wait_idle), and then the whole process's CPU
 * time is read over a wall-clock window. median_ns is CPU ns used per wall
 * second: 0 for workers that park and never wake, 1e9 per worker that spins.
 * Extra counters, per window: parks (a parked worker that wakes and parks
 * again shows here), executed. */
#include "bench.h"

#include "vitte/sched.h"

typedef struct idle_ctx {
    vt_pool *pool;
    uint64_t reps, parks, executed;
} idle_ctx;

static long window_ms = 1000;

static void nop(void *arg)
{
    (void)arg;
}

static int rep_idle(bench_case *c, double *ns)
{
    idle_ctx *x = c->ctx;
    vt_pool_metrics m0, m1;
    /* The warm-up window only lets the workers finish spinning and park. */
    int64_t window = c->warmup ? (int64_t)200 * 1000000 : (int64_t)window_ms * 1000000;
    if (vt_pool_metrics_get(x->pool, &m0, NULL, 0) != VT_OK)
        return bench_fail(c, "vt_pool_metrics_get failed");
    int64_t cpu0 = vt_process_cpu_ns(), t0 = bench_now_ns();
    bench_sleep_ns(window);
    int64_t cpu1 = vt_process_cpu_ns(), t1 = bench_now_ns();
    if (vt_pool_metrics_get(x->pool, &m1, NULL, 0) != VT_OK)
        return bench_fail(c, "vt_pool_metrics_get failed");
    if (!c->warmup) {
        x->reps++;
        x->parks += m1.total.parks - m0.total.parks;
        x->executed += m1.total.executed - m0.total.executed;
    }
    *ns = (double)(cpu1 - cpu0) * 1e9 / (double)(t1 - t0);
    return 0;
}

static const bench_impl impls[] = {{"vitte", 1}};

static bench_case cases[BENCH_MAX_THREADS];
static idle_ctx ctxs[BENCH_MAX_THREADS];

int main(int argc, char **argv)
{
    const bench_opt opts[] = {{"--window-ms", &window_ms, "wall-clock window per repetition"},
                              {NULL, NULL, NULL}};
    bench_args a;
    bench_parse(&a, argc, argv, impls, 1, 2, opts);
    if (!a.impl_on[0])
        return 0;

    int nc = 0, status = 0;
    for (int t = 0; t < a.n_threads; t++) {
        unsigned th = a.threads[t];
        vt_pool_opts o;
        vt_pool_opts_init(&o);
        o.workers = th;
        o.name = "bench";
        vt_err e = vt_pool_new(&ctxs[t].pool, &o);
        if (e != VT_OK) {
            fprintf(stderr, "error: vt_pool_new(%u workers): %s\n", th, vt_strerror(e));
            status = 1;
            continue;
        }
        /* Some work first, so the workers have run, stolen and gone back
         * to sleep, as in a pool between two bursts. */
        for (int i = 0; i < 1000 && e == VT_OK; i++)
            e = vt_pool_submit(ctxs[t].pool, nop, NULL);
        if (e == VT_OK)
            e = vt_pool_wait_idle(ctxs[t].pool, VT_FOREVER);
        if (e != VT_OK) {
            fprintf(stderr, "error: %u-worker pool: %s\n", th, vt_strerror(e));
            status = 1;
            continue;
        }
        cases[nc++] = (bench_case){
            .name = "idle", .impl = "vitte", .threads = th, .rep = rep_idle, .ctx = &ctxs[t]};
    }

    /* The gap between windows would only be more idle time. */
    a.gap_ms = 0;
    bench_run(cases, nc, &a);
    for (int i = 0; i < nc; i++) {
        idle_ctx *x = cases[i].ctx;
        if (x->reps)
            bench_extra(&cases[i], "parks=%.1f executed=%.1f", (double)x->parks / (double)x->reps,
                        (double)x->executed / (double)x->reps);
    }
    status |= bench_report(cases, nc);
    for (int t = 0; t < a.n_threads; t++)
        vt_pool_free(ctxs[t].pool);
    return status;
}
