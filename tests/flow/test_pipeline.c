/* test_pipeline.c — pipelines: sums through serial and parallel stages,
 * order kept by ordered parallel stages (sync and async), unordered ones
 * losing nothing, filters, every failure policy (stop, skip and report,
 * retry with backoff then skip or stop), the memory bound under a slow
 * stage (1M items, items alive counted), statistics and DOT while
 * running, cancellation, a source that says VT_EAGAIN, re-runs, the
 * deterministic runtime, every building error, NULLs and allocation
 * failures. No timing thresholds: everything is checked by counts. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vt_test.h"
#include "flow_test.h"

/* ---- Stage functions --------------------------------------------------------------------- */

/* Counts up to n; on lines of their own, so that the source's and the
 * sink's states do not share one. */
typedef struct counter {
    _Alignas(64) uint64_t next, n;
    _Atomic uint64_t alive; /* made and not consumed */
    _Atomic uint64_t alive_max;
} counter;

typedef struct sink_state {
    _Alignas(64) uint64_t sum, count;
    uint64_t last; /* the previous item, for order checks */
    int out_of_order;
    counter *c; /* alive-- when set */
} sink_state;

static void alive_add(counter *c)
{
    uint64_t a = atomic_fetch_add(&c->alive, 1) + 1;
    uint64_t m = atomic_load(&c->alive_max);
    while (a > m && !atomic_compare_exchange_weak(&c->alive_max, &m, a)) {
    }
}

static vt_err count_up(void *ud, void *out)
{
    counter *c = ud;
    if (c->next == c->n)
        return VT_ECLOSED;
    alive_add(c);
    *(uint64_t *)out = c->next++;
    return VT_OK;
}

static vt_err twice_plus_one(void *ud, const void *in, void *out)
{
    (void)ud;
    *(uint64_t *)out = 2 * *(const uint64_t *)in + 1;
    return VT_OK;
}

static vt_err identity(void *ud, const void *in, void *out)
{
    (void)ud;
    *(uint64_t *)out = *(const uint64_t *)in;
    return VT_OK;
}

static vt_err sum_up(void *ud, const void *in)
{
    sink_state *s = ud;
    uint64_t v = *(const uint64_t *)in;
    if (s->count && v <= s->last)
        s->out_of_order++;
    s->last = v;
    s->sum += v;
    s->count++;
    if (s->c)
        atomic_fetch_sub(&s->c->alive, 1);
    return VT_OK;
}

static vt_pipeline *three(const char *name, counter *c, sink_state *s, const vt_pipeline_opts *po,
                          const vt_pipe_stage_opts *mid, vt_pipe_fn fn, void *fn_ud)
{
    vt_pipeline *p;
    if (vt_pipeline_new(&p, name, po))
        return NULL;
    if (!vt_pipeline_add_source(p, "count", sizeof(uint64_t), count_up, c, NULL) ||
        !vt_pipeline_add_stage(p, "mid", sizeof(uint64_t), fn ? fn : twice_plus_one, fn_ud, mid) ||
        !vt_pipeline_add_sink(p, "sum", sum_up, s, NULL)) {
        vt_pipeline_free(p);
        return NULL;
    }
    return p;
}

/* ---- Sums -------------------------------------------------------------------------------------
 */

VT_TEST(three_stages_sum)
{
    const uint64_t n = 200000;
    for (unsigned workers = 1; workers <= 2; workers++) {
        vt_runtime *rt = rt_new(workers);
        VT_CHECK_NOT_NULL(rt);
        for (int par = 0; par < 2; par++) {
            counter c = {.n = n};
            sink_state s = {0};
            vt_pipe_stage_opts mid = {.kind = par ? VT_PIPE_PARALLEL : VT_PIPE_SERIAL};
            vt_pipeline *p = three("sum", &c, &s, NULL, &mid, NULL, NULL);
            VT_CHECK_NOT_NULL(p);
            VT_CHECK_EQ(vt_pipeline_stages(p), 3);
            VT_CHECK_STR_EQ(vt_pipeline_name(p), "sum");
            VT_CHECK_OK(vt_pipeline_run(p, rt));
            VT_CHECK_EQ(s.count, n);
            VT_CHECK_EQ(s.sum, n * n); /* the sum of the first n odd numbers */
            VT_CHECK_EQ(s.out_of_order, 0);
            vt_pipeline_stats st;
            vt_pipe_stage_stats ss[3];
            VT_CHECK_OK(vt_pipeline_stats_get(p, &st, ss, 3));
            VT_CHECK_EQ(st.running, 0);
            VT_CHECK_EQ(st.stages, 3);
            VT_CHECK_EQ(st.items_in_flight, 0);
            VT_CHECK_EQ(st.batches_used, 0);
            VT_CHECK_GT(st.ended_ns, 0);
            for (int i = 0; i < 3; i++) {
                VT_CHECK_EQ(ss[i].items_in, n);
                VT_CHECK_EQ(ss[i].items_out, n);
                VT_CHECK_EQ(ss[i].failures, 0);
                VT_CHECK_EQ(ss[i].queued, 0);
                VT_CHECK_EQ(ss[i].active, 0);
            }
            VT_CHECK_STR_EQ(ss[1].name, "mid");
            VT_CHECK_EQ(ss[1].kind, par ? VT_PIPE_PARALLEL : VT_PIPE_SERIAL);
            VT_CHECK_STR_EQ(vt_pipeline_error(p), "");
            vt_pipeline_free(p);
        }
        vt_runtime_free(rt);
    }
}

VT_TEST(empty_and_tiny_streams)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    for (uint64_t n = 0; n < 5; n++) {
        counter c = {.n = n};
        sink_state s = {0};
        vt_pipeline *p = three("tiny", &c, &s, &(vt_pipeline_opts){.batch = 2, .max_batches = 1},
                               NULL, NULL, NULL);
        VT_CHECK_NOT_NULL(p);
        VT_CHECK_OK(vt_pipeline_run(p, rt));
        VT_CHECK_EQ(s.count, n);
        VT_CHECK_EQ(s.sum, n * n);
        vt_pipeline_free(p);
    }
    vt_runtime_free(rt);
}

/* ---- Order
 * ---------------------------------------------------------------------------------------- */

/* Works for a pseudo-random while, more for some items than others. */
static vt_err uneven(void *ud, const void *in, void *out)
{
    (void)ud;
    uint64_t v = *(const uint64_t *)in;
    spin((unsigned)(vt_hash_mix64(v) % 2000));
    *(uint64_t *)out = v;
    return VT_OK;
}

/* Sleeps a pseudo-random while in its fiber. */
static vt_err uneven_sleep(void *ud, const void *in, void *out)
{
    (void)ud;
    uint64_t v = *(const uint64_t *)in;
    vt_err e = vt_sleep_ns((int64_t)(vt_hash_mix64(v) % 200000));
    if (e)
        return e;
    *(uint64_t *)out = v;
    return VT_OK;
}

VT_TEST(ordered_parallel_stages_keep_order)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    /* Sync, on workers; small batches, so that many are in the stage. */
    {
        counter c = {.n = 20000};
        sink_state s = {0};
        vt_pipe_stage_opts mid = {.kind = VT_PIPE_PARALLEL, .concurrency = 4};
        vt_pipeline *p =
            three("ordered", &c, &s, &(vt_pipeline_opts){.batch = 8, .max_batches = 16}, &mid,
                  uneven, NULL);
        VT_CHECK_NOT_NULL(p);
        VT_CHECK_OK(vt_pipeline_run(p, rt));
        VT_CHECK_EQ(s.count, 20000);
        VT_CHECK_EQ(s.out_of_order, 0);
        VT_CHECK_EQ(s.sum, 20000ull * 19999 / 2);
        vt_pipeline_free(p);
    }
    /* Async: items that sleep, batches of one, eight at once. */
    {
        counter c = {.n = 400};
        sink_state s = {0};
        vt_pipe_stage_opts mid = {.kind = VT_PIPE_PARALLEL, .concurrency = 8};
        vt_pipeline *p = three("ordered-async", &c, &s,
                               &(vt_pipeline_opts){.batch = 1, .max_batches = 12, .async = 1}, &mid,
                               uneven_sleep, NULL);
        VT_CHECK_NOT_NULL(p);
        VT_CHECK_OK(vt_pipeline_run(p, rt));
        VT_CHECK_EQ(s.count, 400);
        VT_CHECK_EQ(s.out_of_order, 0);
        vt_pipe_stage_stats ss[3];
        vt_pipeline_stats st;
        VT_CHECK_OK(vt_pipeline_stats_get(p, &st, ss, 3));
        VT_CHECK_EQ(ss[1].concurrency, 8);
        VT_CHECK_EQ(st.max_items, 12);
        vt_pipeline_free(p);
    }
    vt_runtime_free(rt);
}

VT_TEST(unordered_parallel_loses_nothing)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    for (int async = 0; async < 2; async++) {
        const uint64_t n = async ? 300 : 20000;
        counter c = {.n = n};
        sink_state s = {0};
        vt_pipe_stage_opts mid = {.kind = VT_PIPE_PARALLEL, .concurrency = 4, .unordered = 1};
        vt_pipeline *p =
            three("unordered", &c, &s,
                  &(vt_pipeline_opts){.batch = async ? 1 : 16, .max_batches = 8, .async = async},
                  &mid, async ? uneven_sleep : uneven, NULL);
        VT_CHECK_NOT_NULL(p);
        VT_CHECK_OK(vt_pipeline_run(p, rt));
        VT_CHECK_EQ(s.count, n);
        VT_CHECK_EQ(s.sum, n * (n - 1) / 2);
        vt_pipeline_free(p);
    }
    vt_runtime_free(rt);
}

/* ---- Filters
 * --------------------------------------------------------------------------------------- */

static vt_err odd_only(void *ud, const void *in, void *out)
{
    (void)ud;
    uint64_t v = *(const uint64_t *)in;
    if (v % 2 == 0)
        return VT_ENOENT;
    *(uint32_t *)out = (uint32_t)v;
    return VT_OK;
}

static vt_err sum32(void *ud, const void *in)
{
    sink_state *s = ud;
    s->sum += *(const uint32_t *)in;
    s->count++;
    return VT_OK;
}

VT_TEST(filters_drop_items)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    counter c = {.n = 10000};
    sink_state s = {0};
    vt_pipeline *p;
    VT_CHECK_OK(vt_pipeline_new(&p, "filter", NULL));
    VT_CHECK_NOT_NULL(vt_pipeline_add_source(p, NULL, sizeof(uint64_t), count_up, &c, NULL));
    /* Items change size from stage to stage. */
    VT_CHECK_NOT_NULL(vt_pipeline_add_stage(p, NULL, sizeof(uint32_t), odd_only, NULL, NULL));
    VT_CHECK_NOT_NULL(vt_pipeline_add_sink(p, NULL, sum32, &s, NULL));
    VT_CHECK_OK(vt_pipeline_run(p, rt));
    VT_CHECK_EQ(s.count, 5000);
    VT_CHECK_EQ(s.sum, 5000ull * 5000);
    vt_pipe_stage_stats ss[3];
    vt_pipeline_stats st;
    VT_CHECK_OK(vt_pipeline_stats_get(p, &st, ss, 3));
    VT_CHECK_STR_EQ(ss[0].name, "source");
    VT_CHECK_STR_EQ(ss[1].name, "stage1");
    VT_CHECK_STR_EQ(ss[2].name, "sink");
    VT_CHECK_EQ(ss[1].items_in, 10000);
    VT_CHECK_EQ(ss[1].items_out, 5000);
    VT_CHECK_EQ(ss[1].dropped, 5000);
    VT_CHECK_EQ(ss[2].items_in, 5000);
    VT_CHECK_EQ(st.items_in_flight, 0);
    vt_pipeline_free(p);
    vt_runtime_free(rt);
}

/* ---- Failure policies
 * --------------------------------------------------------------------------------- */

typedef struct faulty {
    uint64_t every;          /* items v with v % every == 0 fail ... */
    unsigned fails_per_item; /* ... this many times (0: for ever) */
    _Atomic unsigned attempts[64];
    _Atomic uint64_t calls;
} faulty;

static vt_err fail_some(void *ud, const void *in, void *out)
{
    faulty *f = ud;
    uint64_t v = *(const uint64_t *)in;
    atomic_fetch_add(&f->calls, 1);
    if (v % f->every == 0) {
        unsigned a = atomic_fetch_add(&f->attempts[(v / f->every) % 64], 1);
        if (!f->fails_per_item || a < f->fails_per_item)
            return VT_EIO;
    }
    *(uint64_t *)out = v;
    return VT_OK;
}

typedef struct skips {
    _Atomic uint64_t n, sum;
    char stage[32];
    vt_err err;
} skips;

static void on_skip(void *ud, const char *stage, const void *in, vt_err err)
{
    skips *k = ud;
    atomic_fetch_add(&k->n, 1);
    atomic_fetch_add(&k->sum, in ? *(const uint64_t *)in : 0);
    snprintf(k->stage, sizeof k->stage, "%s", stage);
    k->err = err;
}

VT_TEST(failure_stops_the_pipeline)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    counter c = {.n = 1000000};
    sink_state s = {0};
    faulty f = {.every = 5000};
    vt_pipeline *p = three("stops", &c, &s, NULL, NULL, fail_some, &f);
    VT_CHECK_NOT_NULL(p);
    VT_CHECK_ERR(vt_pipeline_run(p, rt), VT_EFAILED);
    VT_CHECK(strstr(vt_pipeline_error(p), "stage \"mid\"") != NULL);
    VT_CHECK(strstr(vt_pipeline_error(p), "input/output error") != NULL);
    /* Item 0 fails: nothing reaches the sink after it, and the source
     * stopped long before the end. */
    VT_CHECK_EQ(s.count, 0);
    VT_CHECK_LT(c.next, c.n);
    vt_pipe_stage_stats ss[3];
    vt_pipeline_stats st;
    VT_CHECK_OK(vt_pipeline_stats_get(p, &st, ss, 3));
    VT_CHECK_EQ(ss[1].failures, 1);
    VT_CHECK_EQ(ss[1].last_error, VT_EIO);
    VT_CHECK_EQ(st.items_in_flight, 0); /* the rest was lost to the stop, and counted */
    mem m;
    VT_CHECK_NOT_NULL(mem_open(&m));
    VT_CHECK_OK(vt_pipeline_write_dot(p, m.f));
    mem_close(&m);
    VT_CHECK(strstr(m.buf, "fillcolor=tomato") != NULL);
    free(m.buf);
    vt_pipeline_free(p);
    vt_runtime_free(rt);
}

VT_TEST(failure_skips_and_reports)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    const uint64_t n = 100000;
    counter c = {.n = n};
    sink_state s = {0};
    faulty f = {.every = 1000};
    skips k = {0};
    vt_pipe_stage_opts mid = {
        .kind = VT_PIPE_PARALLEL, .on_fail = VT_PIPE_SKIP, .on_skip = on_skip, .on_skip_ud = &k};
    vt_pipeline *p = three("skips", &c, &s, NULL, &mid, fail_some, &f);
    VT_CHECK_NOT_NULL(p);
    VT_CHECK_OK(vt_pipeline_run(p, rt));
    VT_CHECK_EQ(atomic_load(&k.n), 100);
    VT_CHECK_EQ(atomic_load(&k.sum), 1000ull * (99 * 100 / 2));
    VT_CHECK_STR_EQ(k.stage, "mid");
    VT_CHECK_EQ(k.err, VT_EIO);
    VT_CHECK_EQ(s.count, n - 100);
    VT_CHECK_EQ(s.sum, n * (n - 1) / 2 - atomic_load(&k.sum));
    VT_CHECK_EQ(s.out_of_order, 0);
    vt_pipe_stage_stats ss[3];
    vt_pipeline_stats st;
    VT_CHECK_OK(vt_pipeline_stats_get(p, &st, ss, 3));
    VT_CHECK_EQ(ss[1].skipped, 100);
    VT_CHECK_EQ(ss[1].failures, 100);
    VT_CHECK_EQ(ss[1].retries, 0);
    VT_CHECK_EQ(st.items_in_flight, 0);
    vt_pipeline_free(p);
    vt_runtime_free(rt);
}

VT_TEST(failure_retries_with_backoff)
{
    /* The deterministic runtime: backoffs on the virtual clock. */
    vt_runtime *rt = rt_det(5);
    VT_CHECK_NOT_NULL(rt);
    const uint64_t n = 3000;
    /* Each failing item fails twice, then succeeds on its third attempt. */
    {
        counter c = {.n = n};
        sink_state s = {0};
        faulty f = {.every = 100, .fails_per_item = 2};
        vt_pipe_stage_opts mid = {.retry = {.max_attempts = 3,
                                            .backoff = VT_BACKOFF_EXPONENTIAL,
                                            .delay_ns = VT_MS(5),
                                            .jitter = 0.5}};
        vt_pipeline *p = three("retries", &c, &s, NULL, &mid, fail_some, &f);
        VT_CHECK_NOT_NULL(p);
        VT_CHECK_OK(vt_pipeline_run(p, rt));
        VT_CHECK_EQ(s.count, n);
        VT_CHECK_EQ(s.sum, n * (n - 1) / 2);
        VT_CHECK_EQ(s.out_of_order, 0);
        vt_pipe_stage_stats ss[3];
        vt_pipeline_stats st;
        VT_CHECK_OK(vt_pipeline_stats_get(p, &st, ss, 3));
        VT_CHECK_EQ(ss[1].failures, 60);
        VT_CHECK_EQ(ss[1].retries, 60);
        VT_CHECK_EQ(ss[1].skipped, 0);
        VT_CHECK_EQ(atomic_load(&f.calls), n + 60);
        /* Every backoff waited on the virtual clock: 30 items, 5 + 10 ms
         * each, give or take the jitter, one at a time (serial stage). */
        VT_CHECK_GE(st.ended_ns - st.started_ns, VT_MS(30 * 15 / 2));
        vt_pipeline_free(p);
    }
    /* Attempts spent, then skipped. */
    {
        counter c = {.n = n};
        sink_state s = {0};
        faulty f = {.every = 100};
        skips k = {0};
        vt_pipe_stage_opts mid = {.retry = {.max_attempts = 2, .delay_ns = VT_MS(1)},
                                  .on_fail = VT_PIPE_SKIP,
                                  .on_skip = on_skip,
                                  .on_skip_ud = &k};
        vt_pipeline *p = three("retries-skip", &c, &s, NULL, &mid, fail_some, &f);
        VT_CHECK_NOT_NULL(p);
        VT_CHECK_OK(vt_pipeline_run(p, rt));
        VT_CHECK_EQ(atomic_load(&k.n), 30);
        VT_CHECK_EQ(s.count, n - 30);
        vt_pipe_stage_stats ss[3];
        VT_CHECK_OK(vt_pipeline_stats_get(p, &(vt_pipeline_stats){0}, ss, 3));
        VT_CHECK_EQ(ss[1].failures, 60);
        VT_CHECK_EQ(ss[1].retries, 30);
        VT_CHECK_EQ(ss[1].skipped, 30);
        vt_pipeline_free(p);
    }
    /* Attempts spent, then stop. */
    {
        counter c = {.n = n};
        sink_state s = {0};
        faulty f = {.every = 1000};
        vt_pipe_stage_opts mid = {.retry = {.max_attempts = 4, .delay_ns = VT_MS(1)}};
        vt_pipeline *p = three("retries-stop", &c, &s, NULL, &mid, fail_some, &f);
        VT_CHECK_NOT_NULL(p);
        VT_CHECK_ERR(vt_pipeline_run(p, rt), VT_EFAILED);
        VT_CHECK(strstr(vt_pipeline_error(p), "every attempt") != NULL);
        VT_CHECK_EQ(atomic_load(&f.attempts[0]), 4);
        VT_CHECK_EQ(s.count, 0);
        vt_pipeline_free(p);
    }
    vt_runtime_free(rt);
}

/* The source's failures follow its policy too. */
static vt_err flaky_source(void *ud, void *out)
{
    counter *c = ud;
    if (c->next == c->n)
        return VT_ECLOSED;
    uint64_t v = c->next++;
    if (v % 10 == 3)
        return VT_EIO; /* that item is lost */
    *(uint64_t *)out = v;
    return VT_OK;
}

VT_TEST(source_failures_follow_its_policy)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    counter c = {.n = 1000};
    sink_state s = {0};
    skips k = {0};
    vt_pipeline *p;
    VT_CHECK_OK(vt_pipeline_new(&p, "src-skip", NULL));
    vt_pipe_stage_opts so = {.on_fail = VT_PIPE_SKIP, .on_skip = on_skip, .on_skip_ud = &k};
    VT_CHECK_NOT_NULL(vt_pipeline_add_source(p, "src", 8, flaky_source, &c, &so));
    VT_CHECK_NOT_NULL(vt_pipeline_add_sink(p, "sum", sum_up, &s, NULL));
    VT_CHECK_OK(vt_pipeline_run(p, rt));
    VT_CHECK_EQ(atomic_load(&k.n), 100);
    VT_CHECK_EQ(atomic_load(&k.sum), 0); /* the source's skips carry no item */
    VT_CHECK_EQ(s.count, 900);
    vt_pipe_stage_stats ss[2];
    VT_CHECK_OK(vt_pipeline_stats_get(p, &(vt_pipeline_stats){0}, ss, 2));
    VT_CHECK_EQ(ss[0].skipped, 100);
    VT_CHECK_EQ(ss[0].items_out, 900);
    vt_pipeline_free(p);
    vt_runtime_free(rt);
}

/* ---- The memory bound
 * ----------------------------------------------------------------------------------- */

/* Slow in spurts: every 4096th item naps. */
static vt_err slow(void *ud, const void *in, void *out)
{
    (void)ud;
    uint64_t v = *(const uint64_t *)in;
    if (v % 4096 == 0)
        nap();
    *(uint64_t *)out = v;
    return VT_OK;
}

typedef struct watcher {
    vt_pipeline *p;
    _Atomic int stop;
    uint64_t max_in_flight, max_queued, snapshots;
    int bad; /* a snapshot that broke a rule */
} watcher;

static void *watch_stats(void *arg)
{
    watcher *w = arg;
    while (!atomic_load(&w->stop)) {
        vt_pipeline_stats st;
        vt_pipe_stage_stats ss[3];
        if (vt_pipeline_stats_get(w->p, &st, ss, 3)) {
            w->bad++;
            break;
        }
        if (st.items_in_flight > w->max_in_flight)
            w->max_in_flight = st.items_in_flight;
        for (int i = 0; i < 3; i++) {
            if (ss[i].queued > w->max_queued)
                w->max_queued = ss[i].queued;
            if (ss[i].items_out > ss[i].items_in)
                w->bad++;
        }
        if (st.batches_used > st.max_batches)
            w->bad++;
        w->snapshots++;
        FILE *devnull = fopen("/dev/null", "w");
        if (devnull) {
            if (vt_pipeline_write_dot(w->p, devnull))
                w->bad++;
            fclose(devnull);
        }
        nap();
    }
    return NULL;
}

VT_TEST(million_items_stay_within_the_bound)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    const uint64_t n = 1000000;
    counter c = {.n = n};
    sink_state s = {.c = &c};
    vt_pipeline *p = three("bounded", &c, &s, &(vt_pipeline_opts){.batch = 64, .max_batches = 6},
                           NULL, slow, NULL);
    VT_CHECK_NOT_NULL(p);
    watcher w = {.p = p};
    VT_CHECK_OK(vt_pipeline_start(p, rt));
    pthread_t th;
    VT_CHECK_EQ(pthread_create(&th, NULL, watch_stats, &w), 0);
    vt_err e = vt_pipeline_wait(p, VT_FOREVER);
    atomic_store(&w.stop, 1);
    pthread_join(th, NULL);
    VT_CHECK_OK(e);
    VT_CHECK_EQ(s.count, n);
    VT_CHECK_EQ(s.sum, n * (n - 1) / 2);
    /* Counted by the stage functions themselves: never more items made
     * and not yet consumed than the pipeline's bound. */
    VT_CHECK_LE(atomic_load(&c.alive_max), 6 * 64);
    VT_CHECK_GT(atomic_load(&c.alive_max), 0);
    VT_CHECK_EQ(atomic_load(&c.alive), 0);
    VT_CHECK_EQ(w.bad, 0);
    VT_CHECK_LE(w.max_in_flight, 6 * 64);
    VT_CHECK_LE(w.max_queued, 6 * 64);
    vt_pipeline_stats st;
    VT_CHECK_OK(vt_pipeline_stats_get(p, &st, NULL, 0));
    VT_CHECK_EQ(st.max_items, 6 * 64);
    VT_CHECK_EQ(st.batch, 64);
    VT_CHECK_EQ(st.max_batches, 6);
    vt_pipeline_free(p);
    vt_runtime_free(rt);
}

/* ---- Cancellation, VT_EAGAIN, re-runs
 * --------------------------------------------------------------------- */

typedef struct endless {
    _Alignas(64) uint64_t next;
    _Atomic uint64_t made;
} endless;

static vt_err forever(void *ud, void *out)
{
    endless *e = ud;
    atomic_fetch_add(&e->made, 1);
    *(uint64_t *)out = e->next++;
    return VT_OK;
}

static vt_err sleepy(void *ud, const void *in, void *out)
{
    (void)ud;
    vt_err e = vt_sleep_ms(1000000);
    if (e)
        return e;
    *(uint64_t *)out = *(const uint64_t *)in;
    return VT_OK;
}

VT_TEST(cancel_stops_an_endless_stream)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    for (int async = 0; async < 2; async++) {
        endless src = {0};
        sink_state s = {0};
        vt_pipeline *p;
        VT_CHECK_OK(vt_pipeline_new(&p, "endless", &(vt_pipeline_opts){.async = async}));
        VT_CHECK_NOT_NULL(vt_pipeline_add_source(p, "src", 8, forever, &src, NULL));
        /* Async: a stage that blocks until cancelled. */
        VT_CHECK_NOT_NULL(
            vt_pipeline_add_stage(p, "mid", 8, async ? sleepy : identity, NULL, NULL));
        VT_CHECK_NOT_NULL(vt_pipeline_add_sink(p, "sum", sum_up, &s, NULL));
        VT_CHECK_OK(vt_pipeline_start(p, rt));
        while (atomic_load(&src.made) < 1000 && !async)
            nap();
        while (async) {
            vt_pipe_stage_stats ss[2];
            VT_CHECK_OK(vt_pipeline_stats_get(p, &(vt_pipeline_stats){0}, ss, 2));
            if (ss[1].active)
                break;
            nap();
        }
        VT_CHECK_ERR(vt_pipeline_wait(p, VT_NOW), VT_ETIMEDOUT);
        VT_CHECK_ERR(vt_pipeline_start(p, rt), VT_EBUSY);
        VT_CHECK_NULL(vt_pipeline_add_sink(p, "late", sum_up, &s, NULL));
        VT_CHECK_OK(vt_pipeline_cancel(p));
        VT_CHECK_ERR(vt_pipeline_wait(p, VT_FOREVER), VT_ECANCELED);
        VT_CHECK_ERR(vt_pipeline_wait(p, VT_FOREVER), VT_ECANCELED);
        VT_CHECK(strstr(vt_pipeline_error(p), "cancelled") != NULL);
        vt_pipeline_stats st;
        VT_CHECK_OK(vt_pipeline_stats_get(p, &st, NULL, 0));
        VT_CHECK_EQ(st.running, 0);
        VT_CHECK_EQ(st.batches_used, 0);
        VT_CHECK_EQ(st.items_in_flight, 0);
        VT_CHECK_OK(vt_pipeline_cancel(p)); /* not running: nothing */
        vt_pipeline_free(p);
    }
    vt_runtime_free(rt);
}

VT_TEST(free_cancels_a_running_pipeline)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    endless src = {0};
    sink_state s = {0};
    vt_pipeline *p;
    VT_CHECK_OK(vt_pipeline_new(&p, "freed", NULL));
    vt_pipeline_add_source(p, "src", 8, forever, &src, NULL);
    vt_pipeline_add_sink(p, "sum", sum_up, &s, NULL);
    VT_CHECK_OK(vt_pipeline_start(p, rt));
    while (atomic_load(&src.made) < 100)
        nap();
    vt_pipeline_free(p);
    vt_runtime_free(rt);
}

/* Items come in spurts: VT_EAGAIN between them. */
typedef struct trickle {
    _Alignas(64) uint64_t next, n;
    unsigned polls;
} trickle;

static vt_err trickle_src(void *ud, void *out)
{
    trickle *t = ud;
    if (t->next == t->n)
        return VT_ECLOSED;
    if (++t->polls % 7 == 0)
        return VT_EAGAIN;
    *(uint64_t *)out = t->next++;
    return VT_OK;
}

VT_TEST(a_source_that_is_not_ready)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    for (int async = 0; async < 2; async++) {
        trickle t = {.n = 5000};
        sink_state s = {0};
        vt_pipeline *p;
        VT_CHECK_OK(vt_pipeline_new(&p, "trickle", &(vt_pipeline_opts){.async = async}));
        VT_CHECK_NOT_NULL(vt_pipeline_add_source(p, "src", 8, trickle_src, &t, NULL));
        VT_CHECK_NOT_NULL(vt_pipeline_add_sink(p, "sum", sum_up, &s, NULL));
        VT_CHECK_OK(vt_pipeline_run(p, rt));
        VT_CHECK_EQ(s.count, 5000);
        VT_CHECK_EQ(s.out_of_order, 0);
        vt_pipeline_free(p);
    }
    vt_runtime_free(rt);
}

VT_TEST(rerun_and_deterministic)
{
    vt_runtime *rts[2] = {rt_new(2), rt_det(11)};
    VT_CHECK_NOT_NULL(rts[0]);
    VT_CHECK_NOT_NULL(rts[1]);
    for (int r = 0; r < 2; r++) {
        counter c = {.n = 5000};
        sink_state s = {0};
        vt_pipe_stage_opts mid = {.kind = VT_PIPE_PARALLEL};
        vt_pipeline *p = three("again", &c, &s, &(vt_pipeline_opts){.async = r}, &mid, NULL, NULL);
        VT_CHECK_NOT_NULL(p);
        for (int run = 0; run < 3; run++) {
            c.next = 0;
            s = (sink_state){0};
            VT_CHECK_OK(vt_pipeline_run(p, rts[r]));
            VT_CHECK_EQ(s.count, 5000);
            VT_CHECK_EQ(s.sum, 5000ull * 5000);
            vt_pipe_stage_stats ss[3];
            VT_CHECK_OK(vt_pipeline_stats_get(p, &(vt_pipeline_stats){0}, ss, 3));
            VT_CHECK_EQ(ss[2].items_in, 5000); /* counted from zero each run */
        }
        vt_pipeline_free(p);
    }
    vt_runtime_free(rts[0]);
    vt_runtime_free(rts[1]);
}

/* A stage that waits for its own pipeline: VT_EDEADLK. */
static vt_err wait_own(void *ud, const void *in, void *out)
{
    vt_pipeline **pp = ud;
    vt_err e = vt_pipeline_wait(*pp, VT_FOREVER);
    *(uint64_t *)out = *(const uint64_t *)in + (e == VT_EDEADLK ? 0 : 1000000);
    return VT_OK;
}

VT_TEST(wait_from_a_stage)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    for (int async = 0; async < 2; async++) {
        counter c = {.n = 10};
        sink_state s = {0};
        vt_pipeline *p = NULL;
        p = three("self", &c, &s, &(vt_pipeline_opts){.async = async}, NULL, wait_own, &p);
        VT_CHECK_NOT_NULL(p);
        VT_CHECK_OK(vt_pipeline_run(p, rt));
        VT_CHECK_EQ(s.sum, 45);
        vt_pipeline_free(p);
    }
    vt_runtime_free(rt);
}

/* ---- Building errors, NULLs, allocation failures
 * --------------------------------------------------------- */

VT_TEST(building_errors)
{
    vt_runtime *rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    counter c = {.n = 10};
    sink_state s = {0};
    vt_pipeline *p;

    VT_CHECK_ERR(vt_pipeline_new(NULL, "x", NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_pipeline_new(&p, "", NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_pipeline_new(&p, "x", &(vt_pipeline_opts){.batch = 65537}), VT_EINVAL);
    VT_CHECK_ERR(vt_pipeline_new(&p, "x", &(vt_pipeline_opts){.max_batches = 65537}), VT_EINVAL);

    /* No source, no sink. */
    VT_CHECK_OK(vt_pipeline_new(&p, NULL, NULL));
    VT_CHECK_STR_EQ(vt_pipeline_name(p), "pipeline");
    VT_CHECK_ERR(vt_pipeline_wait(p, VT_NOW), VT_ESTATE);
    VT_CHECK_ERR(vt_pipeline_start(p, rt), VT_EINVAL);
    VT_CHECK(strstr(vt_pipeline_error(p), "no source") != NULL);
    VT_CHECK_NOT_NULL(vt_pipeline_add_source(p, "src", 8, count_up, &c, NULL));
    VT_CHECK_ERR(vt_pipeline_start(p, rt), VT_EINVAL);
    VT_CHECK(strstr(vt_pipeline_error(p), "no sink") != NULL);
    VT_CHECK_ERR(vt_pipeline_start(p, NULL), VT_EINVAL);
    vt_pipeline_free(p);

    /* Each mistake is remembered, the first one's message kept. */
    struct {
        const char *why;
        int step; /* which call goes wrong */
    } cases[] = {
        {"no function", 0},
        {"the source must be the first", 1},
        {"add the source first", 2},
        {"ends with its sink", 3},
        {"item size", 4},
        {"a source is serial", 5},
        {"concurrency", 6},
        {"unknown on_fail", 7},
        {"max_attempts", 8},
        {"jitter", 9},
        {"retry delays", 10},
        {"unknown kind", 11},
        {"unknown retry.backoff", 12},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        VT_CHECK_OK(vt_pipeline_new(&p, "bad", NULL));
        vt_pipe_stage *st = (vt_pipe_stage *)1;
        switch (cases[i].step) {
        case 0:
            st = vt_pipeline_add_source(p, "src", 8, NULL, NULL, NULL);
            break;
        case 1:
            vt_pipeline_add_source(p, "src", 8, count_up, &c, NULL);
            st = vt_pipeline_add_source(p, "src2", 8, count_up, &c, NULL);
            break;
        case 2:
            st = vt_pipeline_add_stage(p, "mid", 8, identity, NULL, NULL);
            break;
        case 3:
            vt_pipeline_add_source(p, "src", 8, count_up, &c, NULL);
            vt_pipeline_add_sink(p, "sum", sum_up, &s, NULL);
            st = vt_pipeline_add_stage(p, "mid", 8, identity, NULL, NULL);
            break;
        case 4:
            vt_pipeline_add_source(p, "src", 8, count_up, &c, NULL);
            st = vt_pipeline_add_stage(p, "mid", VT_CHAN_ELEM_MAX + 1, identity, NULL, NULL);
            break;
        case 5:
            st = vt_pipeline_add_source(p, "src", 8, count_up, &c,
                                        &(vt_pipe_stage_opts){.kind = VT_PIPE_PARALLEL});
            break;
        default: {
            vt_pipeline_add_source(p, "src", 8, count_up, &c, NULL);
            vt_pipe_stage_opts o = {0};
            if (cases[i].step == 6)
                o = (vt_pipe_stage_opts){.kind = VT_PIPE_PARALLEL, .concurrency = 70000};
            if (cases[i].step == 7)
                o.on_fail = (vt_pipe_on_fail)7;
            if (cases[i].step == 8)
                o.retry.max_attempts = 1001;
            if (cases[i].step == 9)
                o.retry.jitter = 1.5;
            if (cases[i].step == 10)
                o.retry.delay_ns = -1;
            if (cases[i].step == 11)
                o.kind = (vt_pipe_kind)9;
            if (cases[i].step == 12)
                o.retry.backoff = (vt_backoff)9;
            st = vt_pipeline_add_stage(p, "mid", 8, identity, NULL, &o);
            break;
        }
        }
        VT_CHECK_NULL(st);
        VT_CHECK(strstr(vt_pipeline_error(p), cases[i].why) != NULL);
        /* A later correct pipeline still refuses to start. */
        vt_pipeline_add_sink(p, "end", sum_up, &s, NULL);
        VT_CHECK_ERR(vt_pipeline_start(p, rt), VT_EINVAL);
        VT_CHECK(strstr(vt_pipeline_error(p), cases[i].why) != NULL);
        vt_pipeline_free(p);
    }

    /* Absurd sizes are refused at start, with nothing allocated. */
    VT_CHECK_OK(
        vt_pipeline_new(&p, "huge", &(vt_pipeline_opts){.batch = 65536, .max_batches = 65536}));
    vt_pipeline_add_source(p, "src", VT_CHAN_ELEM_MAX, count_up, &c, NULL);
    vt_pipeline_add_sink(p, "sum", sum_up, &s, NULL);
    VT_CHECK_ERR(vt_pipeline_start(p, rt), VT_ERANGE);
    VT_CHECK(strstr(vt_pipeline_error(p), "4 GiB") != NULL);
    VT_CHECK_ERR(vt_pipeline_wait(p, VT_NOW), VT_ESTATE);
    vt_pipeline_free(p);
    vt_runtime_free(rt);
}

VT_TEST(nulls)
{
    vt_pipeline_free(NULL);
    VT_CHECK_STR_EQ(vt_pipeline_name(NULL), "");
    VT_CHECK_EQ(vt_pipeline_stages(NULL), 0);
    VT_CHECK_STR_EQ(vt_pipe_stage_name(NULL), "");
    VT_CHECK_STR_EQ(vt_pipeline_error(NULL), "");
    VT_CHECK_NULL(vt_pipeline_add_source(NULL, "s", 8, count_up, NULL, NULL));
    VT_CHECK_NULL(vt_pipeline_add_stage(NULL, "s", 8, identity, NULL, NULL));
    VT_CHECK_NULL(vt_pipeline_add_sink(NULL, "s", sum_up, NULL, NULL));
    VT_CHECK_ERR(vt_pipeline_start(NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_pipeline_wait(NULL, VT_NOW), VT_EINVAL);
    VT_CHECK_ERR(vt_pipeline_run(NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_pipeline_cancel(NULL), VT_EINVAL);
    vt_pipeline_stats st;
    vt_pipe_stage_stats ss;
    VT_CHECK_ERR(vt_pipeline_stats_get(NULL, &st, NULL, 0), VT_EINVAL);
    VT_CHECK_ERR(vt_pipeline_write_dot(NULL, stdout), VT_EINVAL);
    vt_pipeline *p;
    VT_CHECK_OK(vt_pipeline_new(&p, "nulls", NULL));
    VT_CHECK_ERR(vt_pipeline_stats_get(p, NULL, NULL, 0), VT_EINVAL);
    VT_CHECK_ERR(vt_pipeline_stats_get(p, &st, NULL, 1), VT_EINVAL);
    VT_CHECK_OK(vt_pipeline_stats_get(p, &st, &ss, 1)); /* no stage yet: nothing filled */
    VT_CHECK_EQ(st.stages, 0);
    VT_CHECK_EQ(st.running, 0);
    VT_CHECK_ERR(vt_pipeline_write_dot(p, NULL), VT_EINVAL);
    vt_pipe_stage *src = vt_pipeline_add_source(p, "src", 8, count_up, NULL, NULL);
    VT_CHECK_STR_EQ(vt_pipe_stage_name(src), "src");
    mem m;
    VT_CHECK_NOT_NULL(mem_open(&m));
    VT_CHECK_OK(vt_pipeline_write_dot(p, m.f));
    mem_close(&m);
    VT_CHECK(strstr(m.buf, "digraph \"nulls\"") != NULL);
    VT_CHECK(strstr(m.buf, "rankdir=LR") != NULL);
    free(m.buf);
    vt_pipeline_free(p);
}

VT_TEST(out_of_memory)
{
    long live = vt_test_alloc_live();
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    for (long k = 1;; k++) {
        counter c = {.n = 1000};
        sink_state s = {0};
        vt_pipeline *p = NULL;
        vt_test_alloc_fail_at(k);
        vt_err e = vt_pipeline_new(&p, "oom", NULL);
        vt_pipe_stage *a = e ? NULL : vt_pipeline_add_source(p, "src", 8, count_up, &c, NULL);
        vt_pipe_stage *b = a ? vt_pipeline_add_stage(p, "mid", 8, identity, NULL, NULL) : NULL;
        vt_pipe_stage *d = b ? vt_pipeline_add_sink(p, "sum", sum_up, &s, NULL) : NULL;
        vt_err started = d ? vt_pipeline_start(p, rt) : VT_ENOMEM;
        vt_test_alloc_reset();
        if (!e && d && !started) {
            VT_CHECK_OK(vt_pipeline_wait(p, VT_FOREVER));
            VT_CHECK_EQ(s.count, 1000);
            vt_pipeline_free(p);
            break;
        }
        if (e)
            VT_CHECK_ERR(e, VT_ENOMEM);
        else
            VT_CHECK_ERR(d ? started : vt_pipeline_start(p, rt), VT_ENOMEM);
        vt_pipeline_free(p);
        VT_CHECK_LT(k, 200);
    }
    /* The runtime keeps (and frees) memory of its own as jobs come and go:
     * leaks are counted once it is gone. */
    vt_runtime_free(rt);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}
