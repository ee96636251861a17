/* async_bench.h — what the async benchmarks share: a runtime per thread
 * count, made outside every timed region, and running a function as a
 * root fiber from the benchmark's main thread. Include after bench.h. */
#ifndef VITTE_BENCH_ASYNC_H
#define VITTE_BENCH_ASYNC_H

#include "vitte/async.h"

/* CPU time per operation of the timed reps, next to their wall-clock
 * figure: on a shared machine a rep whose threads were descheduled shows a
 * wall time far above its CPU time, and the CPU figure stays readable.
 * Process CPU (every thread: workers, timer thread, a Go peer's runtime),
 * so a worker that spins shows too. */
typedef struct cpu_samples {
    double v[BENCH_MAX_REPS];
    int n;
} cpu_samples;

static inline void cpu_add(cpu_samples *s, const bench_case *c, double ns_per_op)
{
    if (!c->warmup && s->n < BENCH_MAX_REPS)
        s->v[s->n++] = ns_per_op;
}

static inline void cpu_report(bench_case *c, const cpu_samples *s)
{
    if (s->n)
        bench_extra(c, "cpu_ns=%.2f", bench_median(s->v, s->n));
}

/* A runtime of `workers` workers; NULL after printing why. */
static inline vt_runtime *async_runtime_new(unsigned workers)
{
    vt_runtime_opts o;
    vt_runtime_opts_init(&o);
    o.pool.workers = workers;
    o.pool.name = "bench";
    vt_runtime *rt = NULL;
    vt_err e = vt_runtime_new(&rt, &o);
    if (e != VT_OK) {
        fprintf(stderr, "error: vt_runtime_new(%u workers): %s\n", workers, vt_strerror(e));
        return NULL;
    }
    return rt;
}

/* Runs fn(arg) as a fiber of rt and waits for it from this thread (which
 * is not one of rt's workers): the fiber is the root of the measurement and
 * times itself, so the wake-up of this thread is not counted. */
static inline vt_err async_run_root(vt_runtime *rt, vt_fiber_fn fn, void *arg, void **result)
{
    vt_fiber_opts o = {.name = "bench-root", .runtime = rt};
    vt_fiber h;
    vt_err e = vt_fiber_spawn_ex(&h, fn, arg, &o);
    if (e != VT_OK)
        return e;
    return vt_fiber_await(h, result, VT_FOREVER);
}

/* One rep of a Go peer that prints ns= and cpu_ns= per operation (and
 * go=<version>, kept as an extra). Needs ../peers/async_peers.h first. */
#if defined(VT_HAVE_GO) && defined(VITTE_BENCH_ASYNC_PEERS_H)
static inline int go_rep(bench_case *c, const char *bench, long n, cpu_samples *cpu, double *ns)
{
    char out[512], why[256];
    if (peer_go_run(bench, n, c->threads, out, sizeof out, why, sizeof why) != 0)
        return bench_fail(c, "Go peer: %s", why);
    double cpu_ns;
    if (peer_kv(out, "ns", ns) != 0 || peer_kv(out, "cpu_ns", &cpu_ns) != 0)
        return bench_fail(c, "Go peer printed no ns= or cpu_ns=: %s", out);
    cpu_add(cpu, c, cpu_ns);
    if (!c->extra[0]) {
        char ver[64];
        peer_kv_word(out, "go", ver, sizeof ver);
        bench_extra(c, "go=%s", ver);
    }
    return 0;
}
#endif

#endif
