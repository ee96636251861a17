/* The cost of one closure job: submitting it and running it. M tiny jobs
 * (job i increments byte i of an array: no shared counter, so the figure is
 * the scheduler's and not cache-line ping-pong) are submitted, then waited
 * for; median_ns is the whole time divided by M.
 *   name=submit           from a job running on a worker (vt_pool_submit
 *                         onto that worker's own deque); peers: a task per
 *                         job from inside an OpenMP parallel region, and
 *                         oneTBB task_group::run from inside the arena.
 *   name=submit_external  from a thread that is not a worker (the injection
 *                         queue); vitte only.
 * For vitte the extra counters are per repetition, averaged over the timed
 * ones. */
#include "bench.h"

#include <stdatomic.h>

#include "vitte/sched.h"

#include "../peers/peers.h"

typedef struct submit_ctx {
    vt_pool *pool;
    int external;
    uint64_t reps, stolen, parks, injected;
} submit_ctx;

static unsigned char *slots;
static size_t n_jobs;

/* What the driver job saw, read after vt_pool_wait_idle. */
static _Atomic int driver_err;

static void tiny(void *arg)
{
    ++*(unsigned char *)arg;
}

static void driver(void *arg)
{
    vt_pool *p = arg;
    for (size_t i = 0; i < n_jobs; i++) {
        vt_err e = vt_pool_submit(p, tiny, &slots[i]);
        if (e != VT_OK) {
            atomic_store(&driver_err, (int)e);
            return;
        }
    }
}

static int check_slots(bench_case *c)
{
    for (size_t i = 0; i < n_jobs; i++)
        if (slots[i] != 1)
            return bench_fail(c, "job %zu ran %u times", i, slots[i]);
    return 0;
}

static int rep_vitte(bench_case *c, double *ns)
{
    submit_ctx *x = c->ctx;
    vt_pool_metrics m0, m1;
    vt_err e;
    memset(slots, 0, n_jobs);
    atomic_store(&driver_err, 0);
    if (vt_pool_metrics_get(x->pool, &m0, NULL, 0) != VT_OK)
        return bench_fail(c, "vt_pool_metrics_get failed");
    int64_t t0 = bench_now_ns();
    if (x->external) {
        for (size_t i = 0; i < n_jobs; i++)
            if ((e = vt_pool_submit(x->pool, tiny, &slots[i])) != VT_OK)
                return bench_fail(c, "vt_pool_submit: %s", vt_strerror(e));
    } else if ((e = vt_pool_submit(x->pool, driver, x->pool)) != VT_OK) {
        return bench_fail(c, "vt_pool_submit: %s", vt_strerror(e));
    }
    e = vt_pool_wait_idle(x->pool, VT_FOREVER);
    int64_t t1 = bench_now_ns();
    if (e != VT_OK)
        return bench_fail(c, "vt_pool_wait_idle: %s", vt_strerror(e));
    if (atomic_load(&driver_err))
        return bench_fail(c, "vt_pool_submit from a worker: %s",
                          vt_strerror((vt_err)atomic_load(&driver_err)));
    if (vt_pool_metrics_get(x->pool, &m1, NULL, 0) != VT_OK)
        return bench_fail(c, "vt_pool_metrics_get failed");
    if (check_slots(c))
        return -1;
    if (!c->warmup) {
        x->reps++;
        x->stolen += m1.total.stolen - m0.total.stolen;
        x->parks += m1.total.parks - m0.total.parks;
        x->injected += m1.injected - m0.injected;
    }
    *ns = (double)(t1 - t0) / (double)n_jobs;
    return 0;
}

#if defined(VT_HAVE_OPENMP) || defined(VT_HAVE_TBB)
typedef void (*peer_submit_fn)(unsigned char *slots, size_t m, unsigned threads);

static int rep_peer(bench_case *c, double *ns)
{
    peer_submit_fn run = *(const peer_submit_fn *)c->ctx;
    memset(slots, 0, n_jobs);
    int64_t t0 = bench_now_ns();
    run(slots, n_jobs, c->threads);
    int64_t t1 = bench_now_ns();
    if (check_slots(c))
        return -1;
    *ns = (double)(t1 - t0) / (double)n_jobs;
    return 0;
}
#endif

enum {
    IMPL_VITTE,
    IMPL_OPENMP,
    IMPL_TBB,
    N_IMPLS
};

static const bench_impl impls[N_IMPLS] = {
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

#ifdef VT_HAVE_OPENMP
static peer_submit_fn openmp_fn = peer_submit_openmp;
#endif
#ifdef VT_HAVE_TBB
static peer_submit_fn tbb_fn = peer_submit_tbb;
#endif

static bench_case cases[BENCH_MAX_CASES];
static submit_ctx ctxs[BENCH_MAX_THREADS][2];

int main(int argc, char **argv)
{
    long jobs = 1L << 20;
    const bench_opt opts[] = {{"--jobs", &jobs, "jobs per repetition"}, {NULL, NULL, NULL}};
    bench_args a;
    bench_parse(&a, argc, argv, impls, N_IMPLS, 1, opts);
    n_jobs = (size_t)jobs;
    slots = malloc(n_jobs);
    if (!slots) {
        fprintf(stderr, "error: out of memory\n");
        return 1;
    }

    int nc = 0, status = 0;
    for (int t = 0; t < a.n_threads; t++) {
        unsigned th = a.threads[t];
        if (a.impl_on[IMPL_VITTE]) {
            vt_pool_opts o;
            vt_pool_opts_init(&o);
            o.workers = th;
            o.name = "bench";
            vt_pool *p;
            vt_err e = vt_pool_new(&p, &o);
            if (e != VT_OK) {
                fprintf(stderr, "error: vt_pool_new(%u workers): %s\n", th, vt_strerror(e));
                status = 1;
            } else {
                ctxs[t][0] = (submit_ctx){.pool = p, .external = 0};
                ctxs[t][1] = (submit_ctx){.pool = p, .external = 1};
                cases[nc++] = (bench_case){.name = "submit",
                                           .impl = "vitte",
                                           .threads = th,
                                           .rep = rep_vitte,
                                           .ctx = &ctxs[t][0]};
                cases[nc++] = (bench_case){.name = "submit_external",
                                           .impl = "vitte",
                                           .threads = th,
                                           .rep = rep_vitte,
                                           .ctx = &ctxs[t][1]};
            }
        }
#ifdef VT_HAVE_OPENMP
        if (a.impl_on[IMPL_OPENMP]) {
            if (peer_openmp_prepare(th) != 0) {
                fprintf(stderr, "error: OpenMP would not give %u threads\n", th);
                status = 1;
            } else {
                cases[nc] = (bench_case){.name = "submit",
                                         .impl = "openmp",
                                         .threads = th,
                                         .rep = rep_peer,
                                         .ctx = &openmp_fn};
                bench_extra(&cases[nc++], "runtime=%s", peer_openmp_runtime());
            }
        }
#endif
#ifdef VT_HAVE_TBB
        if (a.impl_on[IMPL_TBB]) {
            if (peer_tbb_prepare(th) != 0) {
                fprintf(stderr, "error: oneTBB would not give %u threads\n", th);
                status = 1;
            } else {
                cases[nc] = (bench_case){.name = "submit",
                                         .impl = "tbb",
                                         .threads = th,
                                         .rep = rep_peer,
                                         .ctx = &tbb_fn};
                bench_extra(&cases[nc++], "runtime=%s", peer_tbb_runtime());
            }
        }
#endif
    }

    bench_run(cases, nc, &a);
    for (int i = 0; i < nc; i++) {
        if (cases[i].rep != rep_vitte)
            continue;
        submit_ctx *x = cases[i].ctx;
        if (x->reps)
            bench_extra(&cases[i], "steals=%.1f parks=%.1f injected=%.0f",
                        (double)x->stolen / (double)x->reps, (double)x->parks / (double)x->reps,
                        (double)x->injected / (double)x->reps);
    }
    status |= bench_report(cases, nc);
    for (int t = 0; t < a.n_threads; t++)
        vt_pool_free(ctxs[t][0].pool);
    free(slots);
    return status;
}
