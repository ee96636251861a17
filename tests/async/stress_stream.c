/* stress_stream.c — streams under load, on runtimes of 1, 2 and 8
 * workers: long pipelines of every stage kind, many chains consumed at
 * once by fibers and plain threads, a wide merge of sources fed by
 * fibers and threads, consumers with random deadlines, and chains freed
 * at random points. Every test ends on exact counts (each element once,
 * in order where order is promised), and on nothing leaked.
 *
 * VT_TEST_STRESS=N multiplies the work; sanitizer builds divide it (TSan
 * runs this code an order of magnitude slower). No timing is checked. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vt_test.h"
#include "async_test.h"
#include "vitte/async.h"

#if defined(VT_SANITIZE_THREAD)
#define SCALE_DIV 10
#elif defined(VT_SANITIZE_ADDRESS)
#define SCALE_DIV 3
#else
#define SCALE_DIV 1
#endif

static long scaled(long n)
{
    long v = n * (long)vt_test_stress() / SCALE_DIV;
    return v < 1 ? 1 : v;
}

static const unsigned worker_counts[] = {1, 2, 8};
#define NWORKER_COUNTS 3

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static vt_stream_opts opts_of(vt_runtime *rt, size_t capacity)
{
    vt_stream_opts o;
    memset(&o, 0, sizeof o);
    o.runtime = rt;
    o.capacity = capacity;
    return o;
}

/* ---- Callbacks ------------------------------------------------------------------------------ */

/* from, from + 1, ... below to. */
typedef struct range {
    uint64_t next, to;
} range;

static vt_err range_gen(void *ud, void *elem)
{
    range *r = ud;
    if (r->next >= r->to)
        return VT_ECLOSED;
    memcpy(elem, &r->next, 8);
    r->next++;
    return VT_OK;
}

static vt_err plus1(void *ud, const void *in, void *out)
{
    (void)ud;
    uint64_t v;
    memcpy(&v, in, 8);
    v++;
    memcpy(out, &v, 8);
    return VT_OK;
}

/* Now and then yields, so that workers interleave differently. */
static vt_err plus1_yield(void *ud, const void *in, void *out)
{
    uint64_t v;
    memcpy(&v, in, 8);
    if ((v * 2654435761u) % 7 == 0)
        vt_fiber_yield();
    (void)ud;
    v++;
    memcpy(out, &v, 8);
    return VT_OK;
}

static int keep_all(void *ud, const void *elem)
{
    (void)ud;
    (void)elem;
    return 1;
}

/* ---- Long pipelines
 * ------------------------------------------------------------------------------ */

/* gen -> 48 stages (map, ordered par_map, filter, unordered-free kinds
 * only, so order holds) -> batch: every element once, in order, +48. */
static void *pipeline_body(void *arg)
{
    vt_runtime *rt = ((void **)arg)[0];
    long n = *(long *)((void **)arg)[1];
    range r = {0, (uint64_t)n};
    vt_stream_opts o = opts_of(rt, 3);
    vt_stream *s = NULL;
    if (vt_stream_generate(&s, 8, range_gen, &r, &o))
        return ERR_RET(VT_ENOMEM);
    int stages = 0;
    for (int i = 0; i < 64; i++) {
        vt_stream *next = NULL;
        vt_stream_opts so = opts_of(NULL, (size_t)(i % 5) + 2);
        vt_err e;
        switch (i % 4) {
        case 0:
            e = vt_stream_map(&next, s, 8, plus1, NULL, &so);
            stages++;
            break;
        case 1:
            e = vt_stream_par_map(&next, s, 8, (unsigned)(i % 6) + 1, 0, plus1_yield, NULL, &so);
            stages++;
            break;
        case 2:
            e = vt_stream_filter(&next, s, keep_all, NULL, &so);
            break;
        default:
            e = vt_stream_map(&next, s, 8, plus1_yield, NULL, &so);
            stages++;
            break;
        }
        if (e) {
            vt_stream_free(s);
            return ERR_RET(e);
        }
        s = next;
    }
    vt_stream *b = NULL;
    if (vt_stream_batch(&b, s, 13, VT_US(50), NULL)) {
        vt_stream_free(s);
        return ERR_RET(VT_ENOMEM);
    }
    uint64_t want = (uint64_t)stages;
    vt_batch bt;
    vt_err e;
    intptr_t bad = 0;
    while ((e = vt_stream_next(b, &bt, VT_FOREVER)) == VT_OK) {
        if (bt.count == 0 || bt.count > 13)
            bad++;
        for (size_t i = 0; i < bt.count; i++) {
            uint64_t v;
            memcpy(&v, (unsigned char *)bt.items + 8 * i, 8);
            if (v != want)
                bad++;
            want = v + 1;
        }
        vt_batch_free(&bt);
    }
    vt_stream_free(b);
    if (e != VT_ECLOSED)
        return ERR_RET(e);
    if (want != (uint64_t)(n + stages) || bad)
        return ERR_RET(VT_ERANGE);
    return ERR_RET(VT_OK);
}

VT_TEST(long_pipelines)
{
    long live = vt_test_alloc_live();
    long n = scaled(10000);
    for (size_t w = 0; w < NWORKER_COUNTS; w++)
        for (int thread = 0; thread < 2; thread++) {
            vt_runtime *rt = rt_new(worker_counts[w]);
            VT_CHECK_NOT_NULL(rt);
            void *arg[2] = {rt, &n};
            party p;
            VT_CHECK(party_start(&p, rt, thread, pipeline_body, arg));
            VT_CHECK_EQ(party_join(&p), VT_OK);
            vt_runtime_free(rt);
        }
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

/* ---- Many chains at once
 * --------------------------------------------------------------------------- */

typedef struct chain_job {
    vt_runtime *rt;
    long n;
    int unordered;
    uint64_t seed;
    intptr_t result;
} chain_job;

static void *chain_body(void *arg)
{
    chain_job *j = arg;
    range r = {0, (uint64_t)j->n};
    vt_stream_opts o = opts_of(j->rt, 4);
    vt_stream *g = NULL, *m = NULL, *p = NULL, *f = NULL;
    if (vt_stream_generate(&g, 8, range_gen, &r, &o) ||
        vt_stream_map(&m, g, 8, plus1_yield, NULL, NULL) ||
        vt_stream_par_map(&p, m, 8, 5, j->unordered, plus1_yield, NULL, NULL) ||
        vt_stream_filter(&f, p, keep_all, NULL, NULL))
        return ERR_RET(VT_ENOMEM); /* (a test failure: leaks what was built) */
    char *seen = calloc((size_t)j->n, 1);
    uint64_t want = 2, v;
    long count = 0, bad = 0;
    vt_err e;
    uint64_t rng = j->seed;
    for (;;) {
        /* Random deadlines: a timed-out next takes nothing. */
        uint64_t x = rng_next(&rng) % 8;
        int64_t d = x == 0 ? VT_NOW : x == 1 ? now_any() + VT_US(5) : VT_FOREVER;
        e = vt_stream_next(f, &v, d);
        if (e == VT_ETIMEDOUT)
            continue;
        if (e != VT_OK)
            break;
        if (v < 2 || v - 2 >= (uint64_t)j->n || seen[v - 2])
            bad++;
        else
            seen[v - 2] = 1;
        if (!j->unordered && v != want)
            bad++;
        want = v + 1;
        count++;
    }
    free(seen);
    vt_stream_free(f);
    j->result = e != VT_ECLOSED ? e : count != j->n || bad ? VT_ERANGE : VT_OK;
    return ERR_RET(j->result);
}

VT_TEST(many_chains_at_once)
{
    enum {
        CHAINS = 12
    };
    long live = vt_test_alloc_live();
    for (size_t w = 0; w < NWORKER_COUNTS; w++) {
        vt_runtime *rt = rt_new(worker_counts[w]);
        VT_CHECK_NOT_NULL(rt);
        chain_job jobs[CHAINS];
        party ps[CHAINS];
        for (int i = 0; i < CHAINS; i++) {
            jobs[i] = (chain_job){rt, scaled(3000), i % 2, vt_test_rand(), -1};
            VT_CHECK(party_start(&ps[i], rt, i % 4 == 3, chain_body,
                                 &jobs[i])); /* a quarter on threads */
        }
        for (int i = 0; i < CHAINS; i++)
            VT_CHECK_EQ(party_join(&ps[i]), VT_OK);
        vt_runtime_free(rt);
    }
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

/* ---- A wide merge
 * ---------------------------------------------------------------------------------- */

typedef struct feeder {
    vt_stream *s;
    uint64_t id, n;
    vt_err push_err, end_err;
} feeder;

static void *feeder_body(void *arg)
{
    feeder *f = arg;
    f->push_err = VT_OK;
    for (uint64_t i = 0; i < f->n && !f->push_err; i++) {
        uint64_t v = (f->id << 32) | i;
        f->push_err = vt_stream_push(f->s, &v, VT_FOREVER);
    }
    f->end_err = vt_stream_end(f->s, VT_OK);
    return NULL;
}

static vt_err identity(void *ud, const void *in, void *out)
{
    (void)ud;
    memcpy(out, in, 8);
    return VT_OK;
}

VT_TEST(wide_merge_of_sources)
{
    enum {
        NIN = 32
    };
    long live = vt_test_alloc_live();
    for (size_t w = 0; w < NWORKER_COUNTS; w++) {
        vt_runtime *rt = rt_new(worker_counts[w]);
        VT_CHECK_NOT_NULL(rt);
        uint64_t per = (uint64_t)scaled(1500);
        vt_stream *ins[NIN];
        feeder fs[NIN];
        party ps[NIN];
        vt_stream_opts o = opts_of(rt, 2);
        for (int i = 0; i < NIN; i++)
            VT_CHECK_OK(vt_stream_new(&ins[i], 8, &o));
        vt_stream *m = NULL, *p = NULL;
        VT_CHECK_OK(vt_stream_merge(&m, ins, NIN, &o));
        /* Ordered par_map: each input's order survives it. */
        VT_CHECK_OK(vt_stream_par_map(&p, m, 8, 6, 0, identity, NULL, NULL));
        for (int i = 0; i < NIN; i++) {
            fs[i] = (feeder){ins[i], (uint64_t)i, per, VT_EINVAL, VT_EINVAL};
            VT_CHECK(party_start(&ps[i], rt, i % 8 == 0, feeder_body, &fs[i]));
        }
        uint64_t next[NIN] = {0}, v;
        long bad = 0;
        vt_err e;
        while ((e = vt_stream_next(p, &v, VT_FOREVER)) == VT_OK) {
            uint64_t id = v >> 32, seq = v & 0xffffffffu;
            if (id >= NIN || seq != next[id])
                bad++;
            else
                next[id]++;
        }
        VT_CHECK_ERR(e, VT_ECLOSED);
        VT_CHECK_EQ(bad, 0);
        for (int i = 0; i < NIN; i++) {
            VT_CHECK_EQ(party_join(&ps[i]), 0);
            VT_CHECK_OK(fs[i].push_err);
            VT_CHECK_OK(fs[i].end_err);
            VT_CHECK_EQ(next[i], per);
        }
        vt_stream_free(p);
        vt_runtime_free(rt);
    }
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

/* ---- Freeing at random points
 * -------------------------------------------------------------------------- */

typedef struct freer {
    vt_runtime *rt;
    uint64_t seed;
    long rounds;
    intptr_t result;
} freer;

static void *freer_body(void *arg)
{
    freer *f = arg;
    uint64_t rng = f->seed;
    for (long r = 0; r < f->rounds; r++) {
        range g1 = {0, rng_next(&rng) % 2 ? 500 : UINT64_MAX};
        range g2 = {0, 300};
        vt_stream_opts o = opts_of(f->rt, (size_t)(rng_next(&rng) % 8) + 2);
        vt_stream *a = NULL, *b = NULL, *ins[2], *m = NULL, *p = NULL, *u = NULL, *bt = NULL;
        vt_stream *src = NULL;
        if (vt_stream_generate(&a, 8, range_gen, &g1, &o) ||
            vt_stream_generate(&b, 8, range_gen, &g2, &o) || vt_stream_new(&src, 8, &o))
            return ERR_RET(VT_ENOMEM);
        ins[0] = a;
        ins[1] = b;
        vt_stream *m2 = NULL;
        if (vt_stream_merge(&m2, ins, 2, NULL))
            return ERR_RET(VT_ENOMEM);
        ins[0] = m2;
        ins[1] = src;
        if (vt_stream_merge(&m, ins, 2, NULL) ||
            vt_stream_par_map(&p, m, 8, (unsigned)(rng_next(&rng) % 4) + 1,
                              (int)(rng_next(&rng) % 2), plus1_yield, NULL, NULL) ||
            vt_stream_par_map(&u, p, 8, 3, 1, plus1, NULL, NULL) ||
            vt_stream_batch(&bt, u, 6, VT_US(30), NULL))
            return ERR_RET(VT_ENOMEM);
        /* The source's producer pushes a few and ends, maybe after the free. */
        uint64_t pushes = rng_next(&rng) % 20;
        for (uint64_t i = 0; i < pushes; i++)
            if (vt_stream_push(src, &i, VT_NOW) != VT_OK)
                break;
        uint64_t take = rng_next(&rng) % 64;
        vt_batch x;
        for (uint64_t i = 0; i < take; i++) {
            if (vt_stream_next(bt, &x, VT_FOREVER) != VT_OK)
                break;
            vt_batch_free(&x);
        }
        int end_first = rng_next(&rng) % 2;
        if (end_first)
            vt_stream_end(src, VT_OK);
        vt_stream_free(bt);
        if (!end_first) {
            uint64_t v = 1;
            if (vt_stream_push(src, &v, VT_NOW) != VT_ECLOSED)
                return ERR_RET(VT_EBUSY);
            if (vt_stream_end(src, VT_OK) != VT_ECLOSED)
                return ERR_RET(VT_EBUSY);
        }
    }
    return ERR_RET(VT_OK);
}

VT_TEST(free_at_random_points)
{
    enum {
        PARTIES = 4
    };
    long live = vt_test_alloc_live();
    for (size_t w = 0; w < NWORKER_COUNTS; w++) {
        vt_runtime *rt = rt_new(worker_counts[w]);
        VT_CHECK_NOT_NULL(rt);
        freer fs[PARTIES];
        party ps[PARTIES];
        for (int i = 0; i < PARTIES; i++) {
            fs[i] = (freer){rt, vt_test_rand(), scaled(60), -1};
            VT_CHECK(party_start(&ps[i], rt, i % 2, freer_body, &fs[i]));
        }
        for (int i = 0; i < PARTIES; i++)
            VT_CHECK_EQ(party_join(&ps[i]), VT_OK);
        vt_runtime_stats st;
        VT_CHECK_OK(vt_runtime_stats_get(rt, &st));
        VT_CHECK_EQ(st.live, 0);
        vt_runtime_free(rt);
    }
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

/* ---- Batches by time under a jittery producer
 * ------------------------------------------------------------- */

typedef struct jitter {
    vt_stream *s;
    uint64_t n, seed;
    vt_err err;
} jitter;

static void *jitter_body(void *arg)
{
    jitter *j = arg;
    uint64_t rng = j->seed;
    j->err = VT_OK;
    for (uint64_t i = 0; i < j->n && !j->err; i++) {
        uint64_t x = rng_next(&rng) % 16;
        if (x == 0)
            vt_sleep_ns(VT_US(100));
        else if (x < 4)
            relax();
        j->err = vt_stream_push(j->s, &i, VT_FOREVER);
    }
    vt_stream_end(j->s, VT_OK);
    return NULL;
}

VT_TEST(batch_by_time_and_count)
{
    long live = vt_test_alloc_live();
    for (size_t w = 0; w < NWORKER_COUNTS; w++)
        for (int thread = 0; thread < 2; thread++) {
            vt_runtime *rt = rt_new(worker_counts[w]);
            VT_CHECK_NOT_NULL(rt);
            vt_stream_opts o = opts_of(rt, 8);
            vt_stream *s = NULL, *b = NULL;
            VT_CHECK_OK(vt_stream_new(&s, 8, &o));
            VT_CHECK_OK(vt_stream_batch(&b, s, 7, VT_US(40), &o));
            jitter j = {s, (uint64_t)scaled(20000), vt_test_rand(), VT_EINVAL};
            party p;
            VT_CHECK(party_start(&p, rt, thread, jitter_body, &j));
            uint64_t want = 0;
            long bad = 0;
            vt_batch x;
            vt_err e;
            while ((e = vt_stream_next(b, &x, VT_FOREVER)) == VT_OK) {
                if (x.count == 0 || x.count > 7)
                    bad++;
                for (size_t i = 0; i < x.count; i++) {
                    uint64_t v;
                    memcpy(&v, (unsigned char *)x.items + 8 * i, 8);
                    if (v != want)
                        bad++;
                    want = v + 1;
                }
                vt_batch_free(&x);
            }
            VT_CHECK_ERR(e, VT_ECLOSED);
            VT_CHECK_EQ(party_join(&p), 0);
            VT_CHECK_OK(j.err);
            VT_CHECK_EQ(bad, 0);
            VT_CHECK_EQ(want, j.n);
            vt_stream_free(b);
            vt_runtime_free(rt);
        }
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}
