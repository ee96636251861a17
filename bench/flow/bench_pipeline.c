/* Pipeline throughput: a 3-stage pipeline of trivial stages — a source
 * counting 0, 1, ..., n - 1, a middle stage computing 2x + 1, a sink adding
 * them up — in ns per item, on 1 and 2 threads.
 *
 *   pipeline3      the middle stage serial (in order)
 *   pipeline3_par  the middle stage parallel (ordered: the sink still sees
 *                  the source's order)
 *
 * Every run's sum must be n^2 (the sum of the first n odd numbers): a lost,
 * doubled or changed item fails the case and the program exits non-zero.
 *
 * Impls:
 *   vitte   vt_pipeline: source, stage and sink functions, items in
 *           batches (the pipeline's defaults unless --batch and
 *           --max-batches say otherwise); the pipeline is built once per
 *           case, each repetition is one vt_pipeline_run over n items.
 *   tbb     oneTBB's parallel_pipeline, three filters
 *           (serial_in_order, serial_in_order or parallel, serial_in_order),
 *           --tokens items in flight (0: 4 per thread), in a task_arena of T
 *           threads (bench/peers/pipeline_tbb.cpp).
 *   stream  the same chain with async's streams (vt_stream_generate, then
 *           vt_stream_map or an ordered vt_stream_par_map of concurrency T,
 *           the sum taken by a fiber with vt_stream_next), the structure
 *           the flow layer could have been built on: one channel operation
 *           per item per stage. Over --stream-items items (n / 16 by
 *           default: it is that much slower).
 *
 * threads=T: vitte and stream on a runtime of T workers (the thread that
 * calls vt_pipeline_run waits); tbb in a task_arena of T slots, the calling
 * thread in one of them.
 *
 * Extras: items=; vitte: batch= and max_batches= (what the run used),
 * steals= and parks= per run (the pool's counters); tbb: tokens=, runtime=;
 * lines of T > 1 threads, vs_1thread= (median / the same line's median on
 * 1 thread). */
#include "bench.h"

#include "vitte/flow.h"

#include "../peers/peers.h"
#include "../peers/pipeline_peers.h"

enum {
    IMPL_VITTE,
    IMPL_TBB,
    IMPL_STREAM,
    N_IMPLS
};

static const bench_impl impls[N_IMPLS] = {
    {"vitte", 1},
#ifdef VT_HAVE_TBB
    {"tbb", 1},
#else
    {"tbb", 0},
#endif
    {"stream", 1},
};

static const char *const names[2] = {"pipeline3", "pipeline3_par"};

/* The source's and the sink's states, each on a line of its own: with two
 * threads, the source and the sink of different batches run at once. */
typedef struct src_state {
    _Alignas(64) uint64_t next, n;
} src_state;

typedef struct sink_state {
    _Alignas(64) uint64_t sum;
} sink_state;

typedef struct pipe_ctx {
    int par;
    int impl;
    uint64_t n;
    vt_runtime *rt;
    vt_pipeline *p; /* vitte: built once */
    src_state src;
    sink_state sink;
    uint64_t runs, steals, parks;
    size_t tokens; /* tbb */
} pipe_ctx;

#define MAX_CASES (2 * N_IMPLS * BENCH_MAX_THREADS)
static bench_case cases[MAX_CASES];
static pipe_ctx ctxs[MAX_CASES];

static vt_err count_up(void *ud, void *out)
{
    src_state *s = ud;
    if (s->next == s->n)
        return VT_ECLOSED;
    *(uint64_t *)out = s->next++;
    return VT_OK;
}

static vt_err twice_plus_one(void *ud, const void *in, void *out)
{
    (void)ud;
    *(uint64_t *)out = 2 * *(const uint64_t *)in + 1;
    return VT_OK;
}

static vt_err add_up(void *ud, const void *in)
{
    ((sink_state *)ud)->sum += *(const uint64_t *)in;
    return VT_OK;
}

static int check_sum(bench_case *c, uint64_t n, uint64_t sum)
{
    if (sum != n * n)
        return bench_fail(c, "the sink's sum is %llu, expected %llu", (unsigned long long)sum,
                          (unsigned long long)(n * n));
    return 0;
}

static int rep_vitte(bench_case *c, double *ns)
{
    pipe_ctx *x = c->ctx;
    x->src = (src_state){.next = 0, .n = x->n};
    x->sink.sum = 0;
    vt_pool *pool = vt_runtime_pool(x->rt);
    vt_pool_metrics m0, m1;
    vt_pool_metrics_get(pool, &m0, NULL, 0);
    int64_t t0 = bench_now_ns();
    vt_err e = vt_pipeline_run(x->p, x->rt);
    int64_t t1 = bench_now_ns();
    vt_pool_metrics_get(pool, &m1, NULL, 0);
    if (e)
        return bench_fail(c, "vt_pipeline_run: %s (%s)", vt_strerror(e), vt_pipeline_error(x->p));
    if (check_sum(c, x->n, x->sink.sum))
        return -1;
    if (!c->warmup) {
        x->runs++;
        x->steals += m1.total.stolen - m0.total.stolen;
        x->parks += m1.total.parks - m0.total.parks;
    }
    *ns = (double)(t1 - t0) / (double)x->n;
    return 0;
}

#ifdef VT_HAVE_TBB
static int rep_tbb(bench_case *c, double *ns)
{
    pipe_ctx *x = c->ctx;
    int failed;
    int64_t t0 = bench_now_ns();
    uint64_t sum = peer_pipeline_tbb(x->n, x->par, c->threads, x->tokens, &failed);
    int64_t t1 = bench_now_ns();
    if (failed)
        return bench_fail(c, "parallel_pipeline threw, or no arena of %u threads", c->threads);
    if (check_sum(c, x->n, sum))
        return -1;
    *ns = (double)(t1 - t0) / (double)x->n;
    return 0;
}
#endif

/* The stream chain, built and drained by a fiber of the runtime, so that
 * its T workers do everything. */
static vt_err gen_up(void *ud, void *elem)
{
    return count_up(ud, elem);
}

static vt_err map_twice(void *ud, const void *in, void *out)
{
    return twice_plus_one(ud, in, out);
}

typedef struct stream_run {
    pipe_ctx *x;
    unsigned threads;
    vt_err err;
    uint64_t sum;
} stream_run;

static void *stream_fiber(void *arg)
{
    stream_run *r = arg;
    vt_stream *src, *mid;
    vt_err e = vt_stream_generate(&src, sizeof(uint64_t), gen_up, &r->x->src, NULL);
    if (!e) {
        e = r->x->par ? vt_stream_par_map(&mid, src, sizeof(uint64_t), r->threads, 0, map_twice,
                                          NULL, NULL)
                      : vt_stream_map(&mid, src, sizeof(uint64_t), map_twice, NULL, NULL);
        if (e)
            vt_stream_free(src);
    }
    if (e) {
        r->err = e;
        return NULL;
    }
    uint64_t v, sum = 0;
    while ((e = vt_stream_next(mid, &v, VT_FOREVER)) == VT_OK)
        sum += v;
    vt_stream_free(mid);
    r->err = e == VT_ECLOSED ? VT_OK : e;
    r->sum = sum;
    return NULL;
}

static int rep_stream(bench_case *c, double *ns)
{
    pipe_ctx *x = c->ctx;
    x->src = (src_state){.next = 0, .n = x->n};
    stream_run r = {.x = x, .threads = c->threads};
    vt_fiber_opts fo = {.name = "bench-stream", .runtime = x->rt};
    vt_fiber f;
    int64_t t0 = bench_now_ns();
    vt_err e = vt_fiber_spawn_ex(&f, stream_fiber, &r, &fo);
    if (!e)
        e = vt_fiber_await(f, NULL, VT_FOREVER);
    int64_t t1 = bench_now_ns();
    if (e || r.err)
        return bench_fail(c, "streams: %s", vt_strerror(e ? e : r.err));
    if (check_sum(c, x->n, r.sum))
        return -1;
    *ns = (double)(t1 - t0) / (double)x->n;
    return 0;
}

static const bench_rep_fn rep_fns[N_IMPLS] = {
    rep_vitte,
#ifdef VT_HAVE_TBB
    rep_tbb,
#else
    NULL,
#endif
    rep_stream,
};

static vt_pipeline *build(pipe_ctx *x, const char *name, long batch, long max_batches)
{
    vt_pipeline *p;
    vt_pipeline_opts o = {.batch = (size_t)batch, .max_batches = (unsigned)max_batches};
    if (vt_pipeline_new(&p, name, &o))
        return NULL;
    vt_pipe_stage_opts mid = {.kind = x->par ? VT_PIPE_PARALLEL : VT_PIPE_SERIAL};
    if (!vt_pipeline_add_source(p, "count", sizeof(uint64_t), count_up, &x->src, NULL) ||
        !vt_pipeline_add_stage(p, "twice", sizeof(uint64_t), twice_plus_one, NULL, &mid) ||
        !vt_pipeline_add_sink(p, "sum", add_up, &x->sink, NULL)) {
        fprintf(stderr, "error: building the pipeline: %s\n", vt_pipeline_error(p));
        vt_pipeline_free(p);
        return NULL;
    }
    return p;
}

static void add_extras(int nc)
{
    for (int i = 0; i < nc; i++) {
        bench_case *c = &cases[i];
        pipe_ctx *x = c->ctx;
        if (c->failed || !c->n)
            continue;
        bench_extra(c, "items=%llu", (unsigned long long)x->n);
        if (x->impl == IMPL_VITTE) {
            vt_pipeline_stats st;
            if (vt_pipeline_stats_get(x->p, &st, NULL, 0) == VT_OK)
                bench_extra(c, "batch=%zu max_batches=%u", st.batch, st.max_batches);
            if (x->runs)
                bench_extra(c, "steals=%.1f parks=%.1f", (double)x->steals / (double)x->runs,
                            (double)x->parks / (double)x->runs);
        }
#ifdef VT_HAVE_TBB
        if (x->impl == IMPL_TBB)
            bench_extra(c, "tokens=%zu runtime=%s", x->tokens, peer_tbb_runtime());
#endif
        if (c->threads == 1)
            continue;
        for (int j = 0; j < nc; j++) {
            bench_case *one = &cases[j];
            if (one->threads == 1 && !one->failed && one->n && !strcmp(one->name, c->name) &&
                !strcmp(one->impl, c->impl)) {
                bench_extra(c, "vs_1thread=%.2f",
                            bench_median(c->samples, c->n) / bench_median(one->samples, one->n));
                break;
            }
        }
    }
}

int main(int argc, char **argv)
{
    long items = 1L << 22, stream_items = 0, tokens = 0, batch = 0, max_batches = 0;
    const bench_opt opts[] = {
        {"--items", &items, "items per run"},
        {"--stream-items", &stream_items, "items per run of the stream impl (0: items / 16)"},
        {"--tokens", &tokens, "tbb: items in flight (0: 4 per thread)"},
        {"--batch", &batch, "vitte: items per batch (0: the pipeline's default)"},
        {"--max-batches", &max_batches, "vitte: batches in flight (0: the pipeline's default)"},
        {NULL, NULL, NULL}};
    bench_args a;
    bench_parse(&a, argc, argv, impls, N_IMPLS, 1, opts);
    if (batch > 65536 || max_batches > 65536) {
        fprintf(stderr, "%s: --batch and --max-batches at most 65536\n", argv[0]);
        return 2;
    }
    if (!stream_items)
        stream_items = items / 16 ? items / 16 : 1;

    int status = 0, nc = 0;
    vt_runtime *rts[BENCH_MAX_THREADS] = {NULL};
    int ok[N_IMPLS][BENCH_MAX_THREADS];
    for (int t = 0; t < a.n_threads; t++) {
        unsigned th = a.threads[t];
        ok[IMPL_VITTE][t] = ok[IMPL_STREAM][t] = 0;
        if (a.impl_on[IMPL_VITTE] || a.impl_on[IMPL_STREAM]) {
            vt_runtime_opts o;
            vt_runtime_opts_init(&o);
            o.pool.workers = th;
            o.pool.name = "bench";
            vt_err e = vt_runtime_new(&rts[t], &o);
            if (e) {
                fprintf(stderr, "error: vt_runtime_new(%u workers): %s\n", th, vt_strerror(e));
                rts[t] = NULL;
                status = 1;
            }
            ok[IMPL_VITTE][t] = a.impl_on[IMPL_VITTE] && !e;
            ok[IMPL_STREAM][t] = a.impl_on[IMPL_STREAM] && !e;
        }
        ok[IMPL_TBB][t] = 0;
#ifdef VT_HAVE_TBB
        if (a.impl_on[IMPL_TBB] && !(ok[IMPL_TBB][t] = peer_tbb_prepare(th) == 0)) {
            fprintf(stderr, "error: oneTBB would not give %u threads\n", th);
            status = 1;
        }
#endif
    }

    for (int par = 0; par < 2; par++) {
        for (int t = 0; t < a.n_threads; t++) {
            for (int k = 0; k < N_IMPLS; k++) {
                if (!ok[k][t])
                    continue;
                pipe_ctx *x = &ctxs[nc];
                *x = (pipe_ctx){.par = par,
                                .impl = k,
                                .n = (uint64_t)(k == IMPL_STREAM ? stream_items : items),
                                .rt = rts[t],
                                .tokens = tokens ? (size_t)tokens : 4 * (size_t)a.threads[t]};
                if (k == IMPL_VITTE && !(x->p = build(x, names[par], batch, max_batches))) {
                    status = 1;
                    continue;
                }
                cases[nc++] = (bench_case){.name = names[par],
                                           .impl = impls[k].name,
                                           .threads = a.threads[t],
                                           .rep = rep_fns[k],
                                           .ctx = x};
            }
        }
    }

    bench_run(cases, nc, &a);
    add_extras(nc);
    status |= bench_report(cases, nc);
    for (int i = 0; i < nc; i++)
        vt_pipeline_free(ctxs[i].p);
    for (int t = 0; t < a.n_threads; t++)
        vt_runtime_free(rts[t]);
    return status;
}
