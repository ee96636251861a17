/* fib(30) with one spawn per call and no cutoff: the cost of fork–join
 * itself, since each task does almost nothing else. Impls: serial (plain
 * recursive C, the baseline of every ratio), vitte (VT_TASK/VT_SPAWN/VT_SYNC
 * on a pool of N workers), openmp (a task per call), tbb (a task_group per
 * call). median_ns is one whole fib(n). */
#include "bench.h"

#include "vitte/sched.h"

#include "../peers/peers.h"

#define FIB_MAX_N 45

/* Left alone, gcc and clang turn one of the two recursive calls of a fib
 * into a loop (tail recursion with an accumulator): in the serial version,
 * and in the vitte one too, whose VT_SYNC runs the unstolen fib(n-1) inline
 * as a plain call. Every version would then do a different number of calls
 * and the ratio would no longer measure spawn and sync. OPAQUE (an empty asm
 * the compiler cannot see through) keeps every call in both. */
#define OPAQUE(x) __asm__("" : "+r"(x))

static __attribute__((noinline)) long fib_serial(int n)
{
    if (n < 2)
        return n;
    long a = fib_serial(n - 1);
    OPAQUE(a);
    long b = fib_serial(n - 2);
    OPAQUE(b);
    return a + b;
}

/* gcc would also split the task in two and copy its leaf test (n < 2) into
 * every caller, saving the call for each leaf, which noinline forbids the
 * serial version (and clang does not do): both make one call per node. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-partial-inlining")
#endif
VT_TASK(long, fib, int, n)
{
    if (n < 2)
        return n;
    VT_SPAWN(fib, n - 1);
    long b = VT_CALL(fib, n - 2);
    OPAQUE(b);
    long a = VT_SYNC(fib);
    OPAQUE(a);
    return a + b;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

/* Read once per run so that the compiler cannot fold fib(30). */
static volatile int fib_n = 30;
static long fib_expect;

typedef struct fib_ctx {
    vt_pool *pool;
    uint64_t reps, stolen, steal_attempts, parks;
} fib_ctx;

static int check(bench_case *c, long got, int64_t t0, int64_t t1, double *ns)
{
    if (got != fib_expect)
        return bench_fail(c, "fib(%d) returned %ld, expected %ld", fib_n, got, fib_expect);
    *ns = (double)(t1 - t0);
    return 0;
}

static int rep_serial(bench_case *c, double *ns)
{
    int n = fib_n;
    int64_t t0 = bench_now_ns();
    long r = fib_serial(n);
    int64_t t1 = bench_now_ns();
    return check(c, r, t0, t1, ns);
}

static int rep_vitte(bench_case *c, double *ns)
{
    fib_ctx *x = c->ctx;
    vt_pool_metrics m0, m1;
    int n = fib_n;
    long r = -1;
    if (vt_pool_metrics_get(x->pool, &m0, NULL, 0) != VT_OK)
        return bench_fail(c, "vt_pool_metrics_get failed");
    int64_t t0 = bench_now_ns();
    vt_err e = VT_RUN(x->pool, fib, &r, n);
    int64_t t1 = bench_now_ns();
    if (e != VT_OK)
        return bench_fail(c, "VT_RUN: %s", vt_strerror(e));
    if (vt_pool_metrics_get(x->pool, &m1, NULL, 0) != VT_OK)
        return bench_fail(c, "vt_pool_metrics_get failed");
    if (!c->warmup) {
        x->reps++;
        x->stolen += m1.total.stolen - m0.total.stolen;
        x->steal_attempts += m1.total.steal_attempts - m0.total.steal_attempts;
        x->parks += m1.total.parks - m0.total.parks;
    }
    return check(c, r, t0, t1, ns);
}

#ifdef VT_HAVE_OPENMP
static int rep_openmp(bench_case *c, double *ns)
{
    int n = fib_n;
    int64_t t0 = bench_now_ns();
    long r = peer_fib_openmp(n, c->threads);
    int64_t t1 = bench_now_ns();
    return check(c, r, t0, t1, ns);
}
#endif

#ifdef VT_HAVE_TBB
static int rep_tbb(bench_case *c, double *ns)
{
    int n = fib_n;
    int64_t t0 = bench_now_ns();
    long r = peer_fib_tbb(n, c->threads);
    int64_t t1 = bench_now_ns();
    return check(c, r, t0, t1, ns);
}
#endif

enum {
    IMPL_SERIAL,
    IMPL_VITTE,
    IMPL_OPENMP,
    IMPL_TBB,
    N_IMPLS
};

static const bench_impl impls[N_IMPLS] = {
    {"serial", 1},
    {"vitte", 1},
#ifdef VT_HAVE_OPENMP
    {"openmp", 1},
#else
    {"openmp", 0},
#endif
#ifdef VT_HAVE_TBB
    {"tbb", 1},
#else
    {"tbb", 0},
#endif
};

static const bench_rep_fn rep_fns[N_IMPLS] = {
    rep_serial,
    rep_vitte,
#ifdef VT_HAVE_OPENMP
    rep_openmp,
#else
    NULL,
#endif
#ifdef VT_HAVE_TBB
    rep_tbb,
#else
    NULL,
#endif
};

static bench_case cases[BENCH_MAX_CASES];
static fib_ctx ctxs[BENCH_MAX_THREADS];

int main(int argc, char **argv)
{
    long n_opt = 30;
    const bench_opt opts[] = {{"--n", &n_opt, "compute fib(N)"}, {NULL, NULL, NULL}};
    bench_args a;
    bench_parse(&a, argc, argv, impls, N_IMPLS, 1, opts);
    if (n_opt > FIB_MAX_N) {
        fprintf(stderr, "%s: --n at most %d\n", argv[0], FIB_MAX_N);
        return 2;
    }
    fib_n = (int)n_opt;
    {
        long x = 0, y = 1;
        for (long i = 0; i < n_opt; i++) {
            long t = x + y;
            x = y;
            y = t;
        }
        fib_expect = x;
    }
    static char name[16];
    snprintf(name, sizeof name, "fib%d", fib_n);

    int nc = 0, status = 0;
    if (a.impl_on[IMPL_SERIAL])
        cases[nc++] = (bench_case){.name = name, .impl = "serial", .threads = 1, .rep = rep_serial};
    for (int t = 0; t < a.n_threads; t++) {
        unsigned th = a.threads[t];
        for (int k = IMPL_VITTE; k < N_IMPLS; k++) {
            if (!a.impl_on[k])
                continue;
            bench_case *c = &cases[nc];
            *c =
                (bench_case){.name = name, .impl = impls[k].name, .threads = th, .rep = rep_fns[k]};
            if (k == IMPL_VITTE) {
                /* One pool per thread count, made here, outside every timed
                 * region; the pools not being measured are parked. */
                vt_pool_opts o;
                vt_pool_opts_init(&o);
                /* th threads in all, as for the peers, whose calling thread
                 * works too: the thread calling VT_RUN is a guest worker, so
                 * the pool gets th - 1 workers; with th = 1, one worker and
                 * a caller that only waits. */
                o.workers = th > 1 ? th - 1 : 1;
                o.no_guest = th == 1;
                o.name = "bench";
                vt_err e = vt_pool_new(&ctxs[t].pool, &o);
                if (e != VT_OK) {
                    fprintf(stderr, "error: vt_pool_new(%u workers): %s\n", th, vt_strerror(e));
                    status = 1;
                    continue;
                }
                c->ctx = &ctxs[t];
            }
#ifdef VT_HAVE_OPENMP
            if (k == IMPL_OPENMP && peer_openmp_prepare(th) != 0) {
                fprintf(stderr, "error: OpenMP would not give %u threads\n", th);
                status = 1;
                continue;
            }
            if (k == IMPL_OPENMP)
                bench_extra(c, "runtime=%s", peer_openmp_runtime());
#endif
#ifdef VT_HAVE_TBB
            if (k == IMPL_TBB && peer_tbb_prepare(th) != 0) {
                fprintf(stderr, "error: oneTBB would not give %u threads\n", th);
                status = 1;
                continue;
            }
            if (k == IMPL_TBB)
                bench_extra(c, "runtime=%s", peer_tbb_runtime());
#endif
            nc++;
        }
    }

    bench_run(cases, nc, &a);
    for (int i = 0; i < nc; i++) {
        fib_ctx *x = cases[i].ctx;
        if (x && x->reps)
            bench_extra(&cases[i], "steals=%.1f steal_attempts=%.1f parks=%.1f",
                        (double)x->stolen / (double)x->reps,
                        (double)x->steal_attempts / (double)x->reps,
                        (double)x->parks / (double)x->reps);
    }
    status |= bench_report(cases, nc);
    for (int t = 0; t < a.n_threads; t++)
        vt_pool_free(ctxs[t].pool);
    return status;
}
