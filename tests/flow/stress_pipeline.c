/* stress_pipeline.c — pipelines at the same time on one runtime, from
 * several threads: random shapes and options (serial, parallel, ordered or
 * not, sync or async, batch sizes), stops from failing items racing with
 * cancellations from outside, frees of running pipelines. Every run must
 * end with its counts exact (or, when stopped, with nothing in flight and
 * every batch home). Scaled by VT_TEST_STRESS. */
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vt_test.h"
#include "flow_test.h"

typedef struct src {
    _Alignas(64) uint64_t next, n;
} src;

typedef struct snk {
    _Alignas(64) uint64_t sum, count, last;
    int out_of_order;
} snk;

typedef struct mid_opts {
    uint64_t fail_at; /* the item that fails for ever (UINT64_MAX: none) */
    int sleep;        /* async: items nap in their fiber */
} mid_opts;

static vt_err src_fn(void *ud, void *out)
{
    src *s = ud;
    if (s->next == s->n)
        return VT_ECLOSED;
    *(uint64_t *)out = s->next++;
    return VT_OK;
}

static vt_err mid_fn(void *ud, const void *in, void *out)
{
    const mid_opts *m = ud;
    uint64_t v = *(const uint64_t *)in;
    if (v == m->fail_at)
        return VT_EIO;
    if (m->sleep && v % 97 == 0) {
        vt_err e = vt_sleep_ns((int64_t)(vt_hash_mix64(v) % 50000));
        if (e)
            return e;
    } else if (v % 13 == 0) {
        spin((unsigned)(vt_hash_mix64(v) % 500));
    }
    *(uint64_t *)out = v;
    return VT_OK;
}

static vt_err snk_fn(void *ud, const void *in)
{
    snk *s = ud;
    uint64_t v = *(const uint64_t *)in;
    if (s->count && v <= s->last)
        s->out_of_order++;
    s->last = v;
    s->sum += v;
    s->count++;
    return VT_OK;
}

typedef struct job {
    vt_runtime *rt;
    unsigned id, rounds;
    uint64_t seed;
    /* results */
    int bad;
    char why[256];
} job;

static void fail_job(job *j, const char *fmt, ...) VT_PRINTF(2, 3);
static void fail_job(job *j, const char *fmt, ...)
{
    if (j->bad++)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->why, sizeof j->why, fmt, ap);
    va_end(ap);
}

/* One pipeline of random shape, run to its end or cancelled midway. */
static void one_run(job *j, uint64_t *rng)
{
    uint64_t r = ft_rand(rng);
    int async = r & 1, par = (r >> 1) & 1, unordered = par && ((r >> 2) & 1);
    int two_mids = (r >> 3) & 1, fails = ((r >> 4) & 7) == 0, cancel = ((r >> 7) & 7) == 0;
    uint64_t n = 1000 + (r >> 10) % (async ? 3000 : 60000);
    size_t batch = (r >> 30) % 3 == 0 ? 1 + (r >> 32) % 64 : 0;
    unsigned nb = (r >> 40) % 3 == 0 ? 1 + (unsigned)((r >> 42) % 8) : 0;
    src s = {.n = n};
    snk k = {0};
    mid_opts mo = {.fail_at = fails ? (r >> 20) % n : UINT64_MAX, .sleep = async};
    mid_opts mo2 = {.fail_at = UINT64_MAX}; /* lives as long as the run */
    vt_pipeline *p;
    if (vt_pipeline_new(&p, "stress",
                        &(vt_pipeline_opts){.batch = batch, .max_batches = nb, .async = async})) {
        fail_job(j, "vt_pipeline_new");
        return;
    }
    vt_pipe_stage_opts o = {.kind = par ? VT_PIPE_PARALLEL : VT_PIPE_SERIAL,
                            .concurrency = (unsigned)((r >> 50) % 4),
                            .unordered = unordered};
    vt_pipeline_add_source(p, "src", 8, src_fn, &s, NULL);
    vt_pipeline_add_stage(p, "mid", 8, mid_fn, &mo, &o);
    if (two_mids)
        vt_pipeline_add_stage(p, "mid2", 8, mid_fn, &mo2, NULL);
    vt_pipeline_add_sink(p, "sink", snk_fn, &k, NULL);
    vt_err e = vt_pipeline_start(p, j->rt);
    if (e) {
        fail_job(j, "start: %s", vt_strerror(e));
        vt_pipeline_free(p);
        return;
    }
    if (cancel) {
        for (unsigned i = (unsigned)((r >> 55) % 4); i; i--)
            nap();
        vt_pipeline_cancel(p);
    }
    e = vt_pipeline_wait(p, VT_FOREVER);
    vt_pipeline_stats st;
    vt_pipeline_stats_get(p, &st, NULL, 0);
    if (st.batches_used || st.items_in_flight || st.running)
        fail_job(j, "after the end: %llu batches used, %llu items in flight, running %d",
                 (unsigned long long)st.batches_used, (unsigned long long)st.items_in_flight,
                 st.running);
    int ordered = !unordered;
    if (e == VT_OK) {
        if (fails || k.count != n || k.sum != n * (n - 1) / 2)
            fail_job(j, "ended well with %llu items of %llu (sum %llu)%s",
                     (unsigned long long)k.count, (unsigned long long)n, (unsigned long long)k.sum,
                     fails ? " despite a failing item" : "");
    } else if (e == VT_EFAILED) {
        if (!fails || !strstr(vt_pipeline_error(p), "stage \"mid\""))
            fail_job(j, "failed without a failing item: %s", vt_pipeline_error(p));
        /* Ordered: nothing at or after the failing item reached the sink. */
        if (ordered && k.count && k.last >= mo.fail_at)
            fail_job(j, "item %llu reached the sink after item %llu failed",
                     (unsigned long long)k.last, (unsigned long long)mo.fail_at);
    } else if (e != VT_ECANCELED || !cancel) {
        fail_job(j, "wait: %s (%s)", vt_strerror(e), vt_pipeline_error(p));
    }
    if (ordered && k.out_of_order)
        fail_job(j, "%d items out of order", k.out_of_order);
    vt_pipeline_free(p);
}

static void *worker(void *arg)
{
    job *j = arg;
    uint64_t rng = j->seed;
    for (unsigned i = 0; i < j->rounds && !j->bad; i++)
        one_run(j, &rng);
    return NULL;
}

VT_TEST(concurrent_pipelines)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    enum {
        THREADS = 4
    };
    job jobs[THREADS];
    pthread_t th[THREADS];
    for (unsigned i = 0; i < THREADS; i++) {
        jobs[i] = (job){.rt = rt, .id = i, .rounds = 25 * vt_test_stress(), .seed = vt_test_rand()};
        VT_CHECK_EQ(pthread_create(&th[i], NULL, worker, &jobs[i]), 0);
    }
    for (unsigned i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    for (unsigned i = 0; i < THREADS; i++) {
        if (jobs[i].bad)
            fprintf(stderr, "  thread %u: %s\n", i, jobs[i].why);
        VT_CHECK_EQ(jobs[i].bad, 0);
    }
    vt_runtime_free(rt);
}

/* Cancellations racing with the end of the stream and with a failure. */
VT_TEST(cancel_races_the_end)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    uint64_t rng = vt_test_rand();
    for (unsigned round = 0; round < 200 * vt_test_stress(); round++) {
        uint64_t r = ft_rand(&rng);
        uint64_t n = 1 + r % 2000;
        src s = {.n = n};
        snk k = {0};
        mid_opts mo = {.fail_at = (r >> 16) % 2 ? (r >> 20) % n : UINT64_MAX};
        vt_pipeline *p;
        VT_CHECK_OK(vt_pipeline_new(
            &p, "race", &(vt_pipeline_opts){.batch = 1 + (r >> 30) % 32, .async = (r >> 40) & 1}));
        vt_pipeline_add_source(p, "src", 8, src_fn, &s, NULL);
        vt_pipeline_add_stage(p, "mid", 8, mid_fn, &mo,
                              &(vt_pipe_stage_opts){.kind = VT_PIPE_PARALLEL});
        vt_pipeline_add_sink(p, "sink", snk_fn, &k, NULL);
        VT_CHECK_OK(vt_pipeline_start(p, rt));
        if ((r >> 45) & 1)
            spin((unsigned)((r >> 46) % 20000));
        VT_CHECK_OK(vt_pipeline_cancel(p));
        vt_err e = vt_pipeline_wait(p, VT_FOREVER);
        VT_CHECK(e == VT_OK || e == VT_ECANCELED || (e == VT_EFAILED && mo.fail_at != UINT64_MAX));
        if (e == VT_OK)
            VT_CHECK_EQ(k.count, n);
        vt_pipeline_stats st;
        VT_CHECK_OK(vt_pipeline_stats_get(p, &st, NULL, 0));
        VT_CHECK_EQ(st.batches_used, 0);
        VT_CHECK_EQ(st.items_in_flight, 0);
        /* Freed right away, or run again first. */
        if ((r >> 50) & 1) {
            s.next = 0;
            k = (snk){0};
            mo.fail_at = UINT64_MAX;
            VT_CHECK_OK(vt_pipeline_run(p, rt));
            VT_CHECK_EQ(k.count, n);
        }
        vt_pipeline_free(p);
    }
    vt_runtime_free(rt);
}

/* Pipelines freed while they run (free cancels and waits). */
VT_TEST(free_while_running)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    uint64_t rng = vt_test_rand();
    for (unsigned round = 0; round < 100 * vt_test_stress(); round++) {
        uint64_t r = ft_rand(&rng);
        src s = {.n = UINT64_MAX};
        snk k = {0};
        mid_opts mo = {.fail_at = UINT64_MAX, .sleep = (int)(r & 1)};
        vt_pipeline *p;
        VT_CHECK_OK(vt_pipeline_new(&p, "freed", &(vt_pipeline_opts){.async = (int)(r & 1)}));
        vt_pipeline_add_source(p, "src", 8, src_fn, &s, NULL);
        vt_pipeline_add_stage(
            p, "mid", 8, mid_fn, &mo,
            &(vt_pipe_stage_opts){.kind = (r >> 1) & 1 ? VT_PIPE_PARALLEL : VT_PIPE_SERIAL});
        vt_pipeline_add_sink(p, "sink", snk_fn, &k, NULL);
        VT_CHECK_OK(vt_pipeline_start(p, rt));
        spin((unsigned)((r >> 8) % 50000));
        vt_pipeline_free(p);
    }
    vt_runtime_free(rt);
}
