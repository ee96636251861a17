/* Spawn and join, one fiber at a time: a root fiber starts a trivial fiber
 * (it returns its argument plus one), awaits it, and goes on, M times;
 * median_ns is the root's whole loop divided by M, the cost of one fiber's
 * life: spawn, first switch in, return, join. The results are summed and
 * checked.
 *   impl=vitte  vt_fiber_spawn + vt_fiber_await on a runtime of --threads
 *               workers (bench/run asks for 1 and 2: with 2 the other
 *               worker may steal the new fiber)
 *   impl=go     go func + receiving its result on a channel, GOMAXPROCS =
 *               --threads (the Go peer, one process per rep)
 * vitte's extra counters: switches per fiber, and the stacks mapped by the
 * runtime at the end (the stack cache keeps reusing a few). */
#include "bench.h"

#include "../peers/async_peers.h"
#include "async_bench.h"

static long n_fibers = 1000000;

typedef struct spawn_run {
    uint64_t sum;
    vt_err err;
    const char *what;
    int64_t ns;
} spawn_run;

typedef struct spawn_ctx {
    vt_runtime *rt;
    uint64_t reps, switches, stacks;
    cpu_samples cpu;
} spawn_ctx;

static void *trivial(void *arg)
{
    return (void *)((uintptr_t)arg + 1);
}

static void *spawn_root(void *arg)
{
    spawn_run *r = arg;
    uint64_t sum = 0;
    long n = n_fibers;
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < n; i++) {
        vt_fiber h;
        void *res;
        vt_err e = vt_fiber_spawn(&h, trivial, (void *)(uintptr_t)i);
        if (e != VT_OK) {
            r->err = e;
            r->what = "vt_fiber_spawn";
            break;
        }
        e = vt_fiber_await(h, &res, VT_FOREVER);
        if (e != VT_OK) {
            r->err = e;
            r->what = "vt_fiber_await";
            break;
        }
        sum += (uintptr_t)res;
    }
    r->ns = bench_now_ns() - t0;
    r->sum = sum;
    return NULL;
}

static int rep_vitte(bench_case *c, double *ns)
{
    spawn_ctx *x = c->ctx;
    spawn_run r = {0};
    vt_runtime_stats s0, s1;
    if (vt_runtime_stats_get(x->rt, &s0) != VT_OK)
        return bench_fail(c, "vt_runtime_stats_get failed");
    int64_t cpu0 = vt_process_cpu_ns();
    vt_err e = async_run_root(x->rt, spawn_root, &r, NULL);
    int64_t cpu1 = vt_process_cpu_ns();
    if (e != VT_OK)
        return bench_fail(c, "root fiber: %s", vt_strerror(e));
    if (r.err != VT_OK)
        return bench_fail(c, "%s: %s", r.what, vt_strerror(r.err));
    uint64_t m = (uint64_t)n_fibers, want = m * (m + 1) / 2;
    if (r.sum != want)
        return bench_fail(c, "the fibers' results sum to %llu, expected %llu",
                          (unsigned long long)r.sum, (unsigned long long)want);
    if (vt_runtime_stats_get(x->rt, &s1) != VT_OK)
        return bench_fail(c, "vt_runtime_stats_get failed");
    if (s1.finished - s0.finished < m)
        return bench_fail(c, "%llu fibers finished of %llu",
                          (unsigned long long)(s1.finished - s0.finished), (unsigned long long)m);
    if (!c->warmup) {
        x->reps++;
        x->switches += s1.switches - s0.switches;
        x->stacks = s1.stacks;
    }
    *ns = (double)r.ns / (double)m;
    cpu_add(&x->cpu, c, (double)(cpu1 - cpu0) / (double)m);
    return 0;
}

#ifdef VT_HAVE_GO
static int rep_go(bench_case *c, double *ns)
{
    return go_rep(c, "spawn_join", n_fibers, &((spawn_ctx *)c->ctx)->cpu, ns);
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
static spawn_ctx ctxs[BENCH_MAX_CASES];

int main(int argc, char **argv)
{
    const bench_opt opts[] = {{"--n", &n_fibers, "fibers spawned and joined per rep"},
                              {NULL, NULL, NULL}};
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
                cases[nc] = (bench_case){.name = "spawn_join",
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
                .name = "spawn_join", .impl = "go", .threads = th, .rep = rep_go, .ctx = &ctxs[nc]};
            nc++;
        }
#endif
    }

    bench_run(cases, nc, &a);
    for (int i = 0; i < nc; i++) {
        spawn_ctx *x = cases[i].ctx;
        cpu_report(&cases[i], &x->cpu);
        if (x->reps)
            bench_extra(&cases[i], "switches_per_fiber=%.2f stacks=%llu",
                        (double)x->switches / ((double)x->reps * (double)n_fibers),
                        (unsigned long long)x->stacks);
    }
    status |= bench_report(cases, nc);
    for (int i = 0; i < nc; i++)
        vt_runtime_free(ctxs[i].rt);
    return status;
}
