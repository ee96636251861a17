/* A yield through the scheduler: two fibers on one worker, each calling
 * vt_fiber_yield N times, so that every yield hands the worker to the
 * other one. median_ns is the whole time, measured by a root fiber that
 * spawns and awaits the two, divided by the 2N yields.
 *   impl=vitte  a runtime of --threads workers (1 by default: the figure
 *               the issue asks for; with more, the two may run apart)
 *   impl=go     two goroutines calling runtime.Gosched N times each, with
 *               GOMAXPROCS = --threads (the Go peer, one process per rep)
 * vitte's extra counter: switches per yield (vt_runtime_stats). */
#include "bench.h"

#include "../peers/async_peers.h"
#include "async_bench.h"

static long n_yields = 1000000;

typedef struct yielder {
    long done;
    vt_err err;
} yielder;

typedef struct yield_run {
    yielder y[2];
    vt_err err;
    const char *what;
    int64_t ns;
} yield_run;

typedef struct yield_ctx {
    vt_runtime *rt;
    uint64_t reps, switches;
    cpu_samples cpu;
} yield_ctx;

static void *yield_body(void *arg)
{
    yielder *y = arg;
    for (long i = 0; i < n_yields; i++) {
        vt_err e = vt_fiber_yield();
        if (e != VT_OK) {
            y->err = e;
            break;
        }
        y->done++;
    }
    return NULL;
}

static void *yield_root(void *arg)
{
    yield_run *r = arg;
    vt_fiber h[2];
    int spawned = 0;
    int64_t t0 = bench_now_ns();
    for (; spawned < 2; spawned++) {
        r->err = vt_fiber_spawn(&h[spawned], yield_body, &r->y[spawned]);
        if (r->err != VT_OK) {
            r->what = "vt_fiber_spawn";
            break;
        }
    }
    for (int i = 0; i < spawned; i++) {
        vt_err e = vt_fiber_await(h[i], NULL, VT_FOREVER);
        if (e != VT_OK && r->err == VT_OK) {
            r->err = e;
            r->what = "vt_fiber_await";
        }
    }
    r->ns = bench_now_ns() - t0;
    return NULL;
}

static int rep_vitte(bench_case *c, double *ns)
{
    yield_ctx *x = c->ctx;
    yield_run r = {0};
    vt_runtime_stats s0, s1;
    if (vt_runtime_stats_get(x->rt, &s0) != VT_OK)
        return bench_fail(c, "vt_runtime_stats_get failed");
    int64_t cpu0 = vt_process_cpu_ns();
    vt_err e = async_run_root(x->rt, yield_root, &r, NULL);
    int64_t cpu1 = vt_process_cpu_ns();
    if (e != VT_OK)
        return bench_fail(c, "root fiber: %s", vt_strerror(e));
    if (r.err != VT_OK)
        return bench_fail(c, "%s: %s", r.what, vt_strerror(r.err));
    for (int i = 0; i < 2; i++) {
        if (r.y[i].err != VT_OK)
            return bench_fail(c, "vt_fiber_yield: %s", vt_strerror(r.y[i].err));
        if (r.y[i].done != n_yields)
            return bench_fail(c, "fiber %d yielded %ld times of %ld", i, r.y[i].done, n_yields);
    }
    if (vt_runtime_stats_get(x->rt, &s1) != VT_OK)
        return bench_fail(c, "vt_runtime_stats_get failed");
    if (!c->warmup) {
        x->reps++;
        x->switches += s1.switches - s0.switches;
    }
    *ns = (double)r.ns / (2.0 * (double)n_yields);
    cpu_add(&x->cpu, c, (double)(cpu1 - cpu0) / (2.0 * (double)n_yields));
    return 0;
}

#ifdef VT_HAVE_GO
static int rep_go(bench_case *c, double *ns)
{
    return go_rep(c, "yield", n_yields, &((yield_ctx *)c->ctx)->cpu, ns);
}
#endif

enum {
    IMPL_VITTE,
    IMPL_GO,
    N_IMPLS
};

static const bench_impl impls[N_IMPLS] = {
    {"vitte", 1},
#ifdef VT_HAVE_GO
    {"go", 1},
#else
    {"go", 0},
#endif
};

static bench_case cases[BENCH_MAX_CASES];
static yield_ctx ctxs[BENCH_MAX_CASES];

int main(int argc, char **argv)
{
    const bench_opt opts[] = {{"--n", &n_yields, "yields per fiber"}, {NULL, NULL, NULL}};
    bench_args a;
    bench_parse(&a, argc, argv, impls, N_IMPLS, 1, opts);

    int nc = 0, status = 0;
    for (int t = 0; t < a.n_threads; t++) {
        unsigned th = a.threads[t];
        if (a.impl_on[IMPL_VITTE]) {
            ctxs[nc].rt = async_runtime_new(th);
            if (!ctxs[nc].rt) {
                status = 1;
            } else {
                cases[nc] = (bench_case){.name = "yield",
                                         .impl = "vitte",
                                         .threads = th,
                                         .rep = rep_vitte,
                                         .ctx = &ctxs[nc]};
                nc++;
            }
        }
#ifdef VT_HAVE_GO
        if (a.impl_on[IMPL_GO]) {
            cases[nc] = (bench_case){
                .name = "yield", .impl = "go", .threads = th, .rep = rep_go, .ctx = &ctxs[nc]};
            nc++;
        }
#endif
    }

    bench_run(cases, nc, &a);
    for (int i = 0; i < nc; i++) {
        yield_ctx *x = cases[i].ctx;
        cpu_report(&cases[i], &x->cpu);
        if (x->reps)
            bench_extra(&cases[i], "switches_per_yield=%.2f",
                        (double)x->switches / ((double)x->reps * 2.0 * (double)n_yields));
    }
    status |= bench_report(cases, nc);
    for (int i = 0; i < nc; i++)
        vt_runtime_free(ctxs[i].rt);
    return status;
}
