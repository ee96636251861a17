/* test_stream.c — streams: sources (push and generate), map, filter,
 * batch (by count and by time), merge and par_map (ordered and not),
 * consumed from fibers and plain threads on runtimes of 1, 2 and 8
 * workers; errors that end a stream mid-way, freeing chains mid-flight
 * with nothing leaked, bad input, timeouts, allocation failures, and the
 * memory bound: elements produced minus consumed never exceed the chain's
 * capacities plus what its stages hold in hand (and, in deterministic
 * mode, reach exactly that).
 *
 * Waits for a condition poll without a time limit; the harness's watchdog
 * names a test that hangs. Checks never depend on how long anything took,
 * only on lower bounds the clock guarantees (a deadline never fires early). */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vt_test.h"
#include "async_test.h"
#include "vitte/async.h"

static const unsigned worker_counts[] = {1, 2, 8};
#define NWORKER_COUNTS (sizeof(worker_counts) / sizeof(worker_counts[0]))

static vt_stream_opts opts_rt(vt_runtime *rt, size_t capacity)
{
    vt_stream_opts o;
    memset(&o, 0, sizeof o);
    o.runtime = rt;
    o.capacity = capacity;
    return o;
}

static vt_stream_opts opts_cap(size_t capacity)
{
    return opts_rt(NULL, capacity);
}

static vt_runtime_opts det_opts(uint64_t seed)
{
    vt_runtime_opts o;
    vt_runtime_opts_init(&o);
    o.pool.deterministic = 1;
    o.pool.seed = seed;
    return o;
}

/* ---- Generators and callbacks ----------------------------------------------------------- */

/* 0, 1, 2 ... n-1 (n == 0: for ever); fails with fail_err instead of
 * element fail_at when fail_err is set. */
typedef struct counter {
    uint64_t next, n;
    vt_err fail_err;
    uint64_t fail_at;
    int64_t delay_ns;       /* a sleep before each element */
    _Atomic long *produced; /* counted when generated (may be NULL) */
    _Atomic long *consumed; /* for the bound: checked at each element */
    long bound;
    _Atomic long *max_inflight;
    _Atomic long *violations;
} counter;

static void note_max(_Atomic long *max, long v)
{
    long m = atomic_load(max);
    while (v > m && !atomic_compare_exchange_weak(max, &m, v))
        ;
}

static vt_err count_gen(void *ud, void *elem)
{
    counter *c = ud;
    if (c->fail_err && c->next == c->fail_at)
        return c->fail_err;
    if (c->n && c->next >= c->n)
        return VT_ECLOSED;
    if (c->delay_ns) {
        vt_err e = vt_sleep_ns(c->delay_ns);
        if (e)
            return e;
    }
    uint64_t v = c->next++;
    memcpy(elem, &v, sizeof v);
    if (c->produced) {
        long p = atomic_fetch_add(c->produced, 1) + 1;
        if (c->consumed) {
            long inflight = p - atomic_load(c->consumed);
            note_max(c->max_inflight, inflight);
            if (inflight > c->bound)
                atomic_fetch_add(c->violations, 1);
        }
    }
    return VT_OK;
}

static counter counter_of(uint64_t n)
{
    counter c;
    memset(&c, 0, sizeof c);
    c.n = n;
    return c;
}

static vt_err times3(void *ud, const void *in, void *out)
{
    (void)ud;
    uint64_t v;
    memcpy(&v, in, sizeof v);
    v *= 3;
    memcpy(out, &v, sizeof v);
    return VT_OK;
}

static vt_err plus1(void *ud, const void *in, void *out)
{
    (void)ud;
    uint64_t v;
    memcpy(&v, in, sizeof v);
    v += 1;
    memcpy(out, &v, sizeof v);
    return VT_OK;
}

static int is_even(void *ud, const void *elem)
{
    (void)ud;
    uint64_t v;
    memcpy(&v, elem, sizeof v);
    return (v & 1) == 0;
}

/* A wider element, so that map changes the size. */
typedef struct wide {
    uint64_t v, sq;
    uint32_t tag;
} wide;

static vt_err widen(void *ud, const void *in, void *out)
{
    (void)ud;
    uint64_t v;
    memcpy(&v, in, sizeof v);
    wide w = {v, v * v, (uint32_t)(v ^ 0x5a5a)};
    memcpy(out, &w, sizeof w);
    return VT_OK;
}

static vt_err narrow(void *ud, const void *in, void *out)
{
    (void)ud;
    wide w;
    memcpy(&w, in, sizeof w);
    if (w.sq != w.v * w.v || w.tag != (uint32_t)(w.v ^ 0x5a5a))
        return VT_ERANGE;
    memcpy(out, &w.v, sizeof w.v);
    return VT_OK;
}

/* Fails on element fail_at with err. */
typedef struct failing {
    uint64_t fail_at;
    vt_err err;
} failing;

static vt_err fail_at_fn(void *ud, const void *in, void *out)
{
    failing *f = ud;
    uint64_t v;
    memcpy(&v, in, sizeof v);
    if (v == f->fail_at)
        return f->err;
    memcpy(out, &v, sizeof v);
    return VT_OK;
}

/* par_map's callback: sleeps delays[v % ndelays] ns, counts how many run
 * at once, and fails on fail_at with err (err == 0: never). */
typedef struct slow {
    const int64_t *delays;
    size_t ndelays;
    _Atomic long active, max_active;
    _Atomic long calls;
    uint64_t fail_at;
    vt_err err;
} slow;

static vt_err slow_fn(void *ud, const void *in, void *out)
{
    slow *s = ud;
    uint64_t v;
    memcpy(&v, in, sizeof v);
    atomic_fetch_add(&s->calls, 1);
    long a = atomic_fetch_add(&s->active, 1) + 1;
    note_max(&s->max_active, a);
    vt_err e = VT_OK;
    if (s->ndelays && s->delays[v % s->ndelays])
        e = vt_sleep_ns(s->delays[v % s->ndelays]);
    atomic_fetch_sub(&s->active, 1);
    if (e)
        return e;
    if (s->err && v == s->fail_at)
        return s->err;
    v = v * 2 + 1;
    memcpy(out, &v, sizeof v);
    return VT_OK;
}

static int64_t *random_delays(size_t n, int64_t max_ns)
{
    int64_t *d = malloc(n * sizeof *d);
    for (size_t i = 0; d && i < n; i++)
        d[i] = (int64_t)(vt_test_rand() % (uint64_t)max_ns);
    return d;
}

/* ---- Consumers --------------------------------------------------------------------------- */

/* Reads s to its end: every element (u64) into got, then the end's error. */
typedef struct sink {
    vt_stream *s;
    uint64_t *got;
    size_t cap, n;
    vt_err end;
    int64_t nap_ns; /* a sleep after each element */
    _Atomic long *consumed;
} sink;

static void *sink_body(void *arg)
{
    sink *k = arg;
    uint64_t v;
    vt_err e;
    while ((e = vt_stream_next(k->s, &v, VT_FOREVER)) == VT_OK) {
        if (k->n < k->cap)
            k->got[k->n] = v;
        k->n++;
        if (k->consumed)
            atomic_fetch_add(k->consumed, 1);
        if (k->nap_ns)
            vt_sleep_ns(k->nap_ns);
    }
    k->end = e;
    return NULL;
}

static sink sink_of(vt_stream *s, size_t cap)
{
    sink k;
    memset(&k, 0, sizeof k);
    k.s = s;
    k.cap = cap;
    k.got = calloc(cap ? cap : 1, sizeof(uint64_t));
    k.end = VT_EINVAL;
    return k;
}

/* Runs sink_body as a fiber of rt or a plain thread, to the end. */
static int drain(vt_runtime *rt, int thread, sink *k)
{
    party p;
    if (!party_start(&p, rt, thread, sink_body, k))
        return 0;
    return party_join(&p) == 0;
}

/* ---- Sources: vt_stream_new, push, end ---------------------------------------------------- */

typedef struct pusher {
    vt_stream *s;
    uint64_t n;
    vt_err end_with;
    vt_err push_err, end_err;
    uint64_t pushed;
    int64_t delay_ns;
    int64_t *push_times; /* when each element was pushed (may be NULL) */
} pusher;

static void *pusher_body(void *arg)
{
    pusher *p = arg;
    p->push_err = VT_OK;
    for (uint64_t i = 0; i < p->n; i++) {
        if (p->delay_ns)
            vt_sleep_ns(p->delay_ns);
        if (p->push_times)
            p->push_times[i] = now_any();
        vt_err e = vt_stream_push(p->s, &i, VT_FOREVER);
        if (e) {
            p->push_err = e;
            break;
        }
        p->pushed++;
    }
    p->end_err = vt_stream_end(p->s, p->push_err ? VT_OK : p->end_with);
    return NULL;
}

VT_TEST(source_push_next_end)
{
    for (size_t w = 0; w < NWORKER_COUNTS; w++)
        for (int prod_thread = 0; prod_thread < 2; prod_thread++)
            for (int cons_thread = 0; cons_thread < 2; cons_thread++) {
                vt_runtime *rt = rt_new(worker_counts[w]);
                VT_CHECK_NOT_NULL(rt);
                vt_stream_opts o = opts_rt(rt, 4);
                vt_stream *s = NULL;
                VT_CHECK_OK(vt_stream_new(&s, sizeof(uint64_t), &o));
                VT_CHECK_EQ(vt_stream_elem_size(s), sizeof(uint64_t));
                pusher pu = {s, 1000, VT_OK, VT_EINVAL, VT_EINVAL, 0, 0, NULL};
                party p;
                VT_CHECK(party_start(&p, rt, prod_thread, pusher_body, &pu));
                sink k = sink_of(s, 1000);
                VT_CHECK(drain(rt, cons_thread, &k));
                VT_CHECK_EQ(party_join(&p), 0);
                VT_CHECK_OK(pu.push_err);
                VT_CHECK_OK(pu.end_err);
                VT_CHECK_ERR(k.end, VT_ECLOSED);
                VT_CHECK_EQ(k.n, 1000);
                for (uint64_t i = 0; i < 1000; i++)
                    VT_CHECK_EQ(k.got[i], i);
                uint64_t v;
                VT_CHECK_ERR(vt_stream_next(s, &v, VT_FOREVER), VT_ECLOSED); /* the end stays */
                free(k.got);
                vt_stream_free(s);
                vt_runtime_free(rt);
            }
}

VT_TEST(source_ends_with_error)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_stream_opts o = opts_rt(rt, 8);
    vt_stream *s = NULL;
    VT_CHECK_OK(vt_stream_new(&s, sizeof(uint64_t), &o));
    for (uint64_t i = 0; i < 3; i++)
        VT_CHECK_OK(vt_stream_push(s, &i, VT_NOW));
    VT_CHECK_OK(vt_stream_end(s, VT_ERANGE));
    uint64_t v;
    for (uint64_t i = 0; i < 3; i++) {
        VT_CHECK_OK(vt_stream_next(s, &v, VT_NOW));
        VT_CHECK_EQ(v, i);
    }
    VT_CHECK_ERR(vt_stream_next(s, &v, VT_NOW), VT_ERANGE);
    VT_CHECK_ERR(vt_stream_next(s, &v, VT_FOREVER), VT_ERANGE);
    VT_CHECK_ERR(vt_stream_push(s, &v, VT_NOW), VT_ECLOSED);
    VT_CHECK_ERR(vt_stream_end(s, VT_OK), VT_ECLOSED);
    vt_stream_free(s);
    vt_runtime_free(rt);
}

static vt_err never_called(void *ud, const void *in, void *out)
{
    (void)ud;
    (void)in;
    (void)out;
    return VT_ENOTSUP;
}

static int keep_all(void *ud, const void *elem)
{
    (void)ud;
    (void)elem;
    return 1;
}

static vt_err gen_nothing(void *ud, void *elem)
{
    (void)ud;
    (void)elem;
    return VT_ECLOSED;
}

static void *new_in_fiber(void *arg)
{
    (void)arg;
    vt_stream *s = NULL;
    vt_err e = vt_stream_new(&s, 8, NULL); /* the calling fiber's runtime */
    if (e == VT_OK) {
        if (vt_stream_end(s, VT_OK) != VT_OK)
            e = VT_EBUSY;
        uint64_t v;
        if (vt_stream_next(s, &v, VT_NOW) != VT_ECLOSED)
            e = VT_EBUSY;
        vt_stream_free(s);
    }
    return ERR_RET(e);
}

VT_TEST(bad_input)
{
    long live = vt_test_alloc_live();
    vt_runtime *rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    vt_stream_opts o = opts_rt(rt, 0);
    vt_stream *s = NULL, *m = NULL, *x = NULL;
    uint64_t v = 0;
    /* vt_stream_new */
    VT_CHECK_ERR(vt_stream_new(NULL, 8, &o), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_new(&s, 0, &o), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_new(&s, VT_CHAN_ELEM_MAX + 1, &o), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_new(&s, 8, NULL), VT_ESTATE); /* a thread, no runtime */
    vt_stream_opts unb = opts_rt(rt, VT_CHAN_UNBOUNDED);
    VT_CHECK_ERR(vt_stream_new(&s, 8, &unb), VT_EINVAL);
    VT_CHECK_NULL(s);
    party p;
    VT_CHECK(party_start(&p, rt, 0, new_in_fiber, NULL));
    VT_CHECK_EQ(party_join(&p), VT_OK);
    /* vt_stream_generate */
    VT_CHECK_ERR(vt_stream_generate(NULL, 8, gen_nothing, NULL, &o), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_generate(&x, 0, gen_nothing, NULL, &o), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_generate(&x, 8, NULL, NULL, &o), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_generate(&x, 8, gen_nothing, NULL, NULL), VT_ESTATE);
    VT_CHECK_ERR(vt_stream_generate(&x, 8, gen_nothing, NULL, &unb), VT_EINVAL);
    /* stages */
    VT_CHECK_OK(vt_stream_new(&s, 8, &o));
    VT_CHECK_ERR(vt_stream_map(NULL, s, 8, times3, NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_map(&x, NULL, 8, times3, NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_map(&x, s, 0, times3, NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_map(&x, s, VT_CHAN_ELEM_MAX + 1, times3, NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_map(&x, s, 8, NULL, NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_map(&x, s, 8, times3, NULL, &unb), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_filter(NULL, s, keep_all, NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_filter(&x, NULL, keep_all, NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_filter(&x, s, NULL, NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_batch(NULL, s, 4, -1, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_batch(&x, NULL, 4, -1, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_batch(&x, s, 0, -1, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_batch(&x, s, SIZE_MAX / 4, -1, NULL),
                 VT_EINVAL); /* count x size overflows */
    VT_CHECK_ERR(vt_stream_par_map(NULL, s, 8, 2, 0, times3, NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_par_map(&x, NULL, 8, 2, 0, times3, NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_par_map(&x, s, 8, 0, 0, times3, NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_par_map(&x, s, 8, 0, 1, times3, NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_par_map(&x, s, 0, 2, 0, times3, NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_par_map(&x, s, 8, 2, 0, NULL, NULL, NULL), VT_EINVAL);
    VT_CHECK_NULL(x);
    /* Refused calls took nothing: s is still free to be taken. */
    VT_CHECK_OK(vt_stream_map(&m, s, 8, never_called, NULL, NULL));
    /* A stream that is a stage's input is the stage's. */
    VT_CHECK_ERR(vt_stream_map(&x, s, 8, times3, NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_filter(&x, s, keep_all, NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_next(s, &v, VT_NOW), VT_EINVAL);
    vt_stream *pair[2] = {m, m};
    VT_CHECK_ERR(vt_stream_merge(&x, pair, 2, NULL), VT_EINVAL); /* the same input twice */
    VT_CHECK_ERR(vt_stream_next(m, &v, VT_NOW), VT_ETIMEDOUT);   /* still m's own */
    /* push and end are a source's only */
    VT_CHECK_ERR(vt_stream_push(m, &v, VT_NOW), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_end(m, VT_OK), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_push(NULL, &v, VT_NOW), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_push(s, NULL, VT_NOW), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_end(NULL, VT_OK), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_next(NULL, &v, VT_NOW), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_next(m, NULL, VT_NOW), VT_EINVAL);
    VT_CHECK_EQ(vt_stream_elem_size(NULL), 0);
    /* merge */
    vt_stream *y = NULL, *w16 = NULL;
    VT_CHECK_OK(vt_stream_new(&y, 8, &o));
    VT_CHECK_OK(vt_stream_new(&w16, 16, &o));
    vt_stream *mixed[2] = {y, w16};
    vt_stream *withnull[2] = {y, NULL};
    VT_CHECK_ERR(vt_stream_merge(NULL, mixed, 1, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_merge(&x, NULL, 1, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_merge(&x, mixed, 0, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_merge(&x, mixed, 2, NULL), VT_EINVAL); /* sizes differ */
    VT_CHECK_ERR(vt_stream_merge(&x, withnull, 2, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_stream_merge(&x, &y, 1, &unb), VT_EINVAL);
    VT_CHECK_NULL(x);
    VT_CHECK_OK(vt_stream_push(y, &v, VT_NOW)); /* y was not taken */
    VT_CHECK_OK(vt_stream_next(y, &v, VT_NOW));
    VT_CHECK_OK(vt_stream_end(y, VT_OK));
    VT_CHECK_OK(vt_stream_end(w16, VT_OK));
    vt_stream_free(y);
    vt_stream_free(w16);
    /* Freeing an inner stream of a chain is refused (logged), not done. */
    vt_stream_free(s);
    VT_CHECK_OK(vt_stream_push(s, &v, VT_NOW));
    vt_stream_free(NULL);
    vt_batch_free(NULL);
    vt_batch empty = {0, NULL};
    vt_batch_free(&empty);
    VT_CHECK_OK(vt_stream_end(s, VT_OK));
    VT_CHECK_ERR(vt_stream_next(m, &v, VT_FOREVER), VT_ENOTSUP); /* never_called's error */
    vt_stream_free(m);
    vt_runtime_free(rt);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

/* ---- Timeouts --------------------------------------------------------------------------- */

typedef struct timeouts {
    vt_stream *s; /* a source of capacity 2, empty */
    vt_err e[6];
    int64_t late[2]; /* return time minus deadline: never negative */
} timeouts;

static void *timeouts_body(void *arg)
{
    timeouts *t = arg;
    uint64_t v = 7;
    t->e[0] = vt_stream_next(t->s, &v, VT_NOW);
    int64_t d = now_any() + VT_MS(2);
    t->e[1] = vt_stream_next(t->s, &v, d);
    t->late[0] = now_any() - d;
    t->e[2] = vt_stream_push(t->s, &v, VT_NOW);
    t->e[3] = vt_stream_push(t->s, &v, VT_NOW);
    t->e[4] = vt_stream_push(t->s, &v, VT_NOW); /* full */
    d = now_any() + VT_MS(2);
    t->e[5] = vt_stream_push(t->s, &v, d);
    t->late[1] = now_any() - d;
    return NULL;
}

VT_TEST(timeouts_on_next_and_push)
{
    for (int thread = 0; thread < 2; thread++) {
        vt_runtime *rt = rt_new(2);
        VT_CHECK_NOT_NULL(rt);
        vt_stream_opts o = opts_rt(rt, 2);
        timeouts t;
        memset(&t, 0, sizeof t);
        VT_CHECK_OK(vt_stream_new(&t.s, 8, &o));
        party p;
        VT_CHECK(party_start(&p, rt, thread, timeouts_body, &t));
        VT_CHECK_EQ(party_join(&p), 0);
        VT_CHECK_ERR(t.e[0], VT_ETIMEDOUT);
        VT_CHECK_ERR(t.e[1], VT_ETIMEDOUT);
        VT_CHECK_OK(t.e[2]);
        VT_CHECK_OK(t.e[3]);
        VT_CHECK_ERR(t.e[4], VT_ETIMEDOUT);
        VT_CHECK_ERR(t.e[5], VT_ETIMEDOUT);
        VT_CHECK_GE(t.late[0], 0);
        VT_CHECK_GE(t.late[1], 0);
        /* A timeout changed nothing: both elements are there. */
        uint64_t v;
        VT_CHECK_OK(vt_stream_end(t.s, VT_OK));
        VT_CHECK_OK(vt_stream_next(t.s, &v, VT_NOW));
        VT_CHECK_OK(vt_stream_next(t.s, &v, VT_NOW));
        VT_CHECK_ERR(vt_stream_next(t.s, &v, VT_NOW), VT_ECLOSED);
        vt_stream_free(t.s);
        vt_runtime_free(rt);
    }
}

/* The smallest stream holds one element: a second push waits. */
VT_TEST(capacity_one)
{
    vt_runtime *rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    vt_stream_opts o = opts_rt(rt, 1);
    vt_stream *s = NULL, *m = NULL;
    VT_CHECK_OK(vt_stream_new(&s, 8, &o));
    uint64_t v = 1;
    VT_CHECK_OK(vt_stream_push(s, &v, VT_NOW));
    v = 2;
    vt_err second = vt_stream_push(s, &v, VT_NOW);
    if (second != VT_ETIMEDOUT) {
        /* Two in a one-element ring: do not read it (that could spin). */
        vt_stream_free(s);
        vt_stream_end(s, VT_OK);
        vt_runtime_free(rt);
        VT_CHECK_ERR(second, VT_ETIMEDOUT);
    }
    VT_CHECK_OK(vt_stream_next(s, &v, VT_NOW));
    VT_CHECK_EQ(v, 1);
    VT_CHECK_ERR(vt_stream_next(s, &v, VT_NOW), VT_ETIMEDOUT);
    /* A chain of capacity-1 stages carries everything through. */
    vt_stream_opts one = opts_cap(1);
    VT_CHECK_OK(vt_stream_map(&m, s, 8, plus1, NULL, &one));
    for (uint64_t i = 0; i < 3; i++) {
        vt_stream *next = NULL;
        VT_CHECK_OK(vt_stream_map(&next, m, 8, plus1, NULL, &one));
        m = next;
    }
    pusher pu = {s, 200, VT_OK, VT_EINVAL, VT_EINVAL, 0, 0, NULL};
    party p;
    VT_CHECK(party_start(&p, rt, 0, pusher_body, &pu));
    sink k = sink_of(m, 200);
    VT_CHECK(drain(rt, 1, &k));
    VT_CHECK_EQ(party_join(&p), 0);
    VT_CHECK_ERR(k.end, VT_ECLOSED);
    VT_CHECK_EQ(k.n, 200);
    for (uint64_t i = 0; i < k.n; i++)
        VT_CHECK_EQ(k.got[i], i + 4);
    free(k.got);
    vt_stream_free(m);
    vt_runtime_free(rt);
}

/* A consumer cancelled while it waits gets VT_ECANCELED; the stream is
 * unharmed and another consumer carries on. */
static void *cancelled_consumer(void *arg)
{
    vt_stream *s = arg;
    uint64_t v;
    return ERR_RET(vt_stream_next(s, &v, VT_FOREVER));
}

VT_TEST(consumer_cancelled)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_stream_opts o = opts_rt(rt, 4);
    vt_stream *s = NULL;
    VT_CHECK_OK(vt_stream_new(&s, 8, &o));
    vt_fiber_opts fo = {.runtime = rt};
    vt_fiber f;
    VT_CHECK_OK(vt_fiber_spawn_ex(&f, cancelled_consumer, s, &fo));
    VT_CHECK_ERR(vt_fiber_await(f, NULL, vt_now_ns() + VT_MS(1)), VT_ETIMEDOUT); /* it waits */
    VT_CHECK_OK(vt_fiber_cancel(f));
    void *r = NULL;
    VT_CHECK_OK(vt_fiber_await(f, &r, VT_FOREVER));
    VT_CHECK_EQ((intptr_t)r, VT_ECANCELED);
    uint64_t v = 41;
    VT_CHECK_OK(vt_stream_push(s, &v, VT_NOW));
    VT_CHECK_OK(vt_stream_end(s, VT_OK));
    VT_CHECK_OK(vt_stream_next(s, &v, VT_NOW));
    VT_CHECK_EQ(v, 41);
    VT_CHECK_ERR(vt_stream_next(s, &v, VT_NOW), VT_ECLOSED);
    vt_stream_free(s);
    vt_runtime_free(rt);
}

/* ---- generate, map, filter ----------------------------------------------------------------- */

VT_TEST(generate_map_filter_chain)
{
    const uint64_t n = 3000;
    for (size_t w = 0; w < NWORKER_COUNTS; w++)
        for (int thread = 0; thread < 2; thread++) {
            vt_runtime *rt = rt_new(worker_counts[w]);
            VT_CHECK_NOT_NULL(rt);
            counter c = counter_of(n);
            vt_stream_opts o = opts_rt(rt, 16);
            vt_stream *g = NULL, *a = NULL, *b = NULL, *f = NULL, *d = NULL;
            VT_CHECK_OK(vt_stream_generate(&g, sizeof(uint64_t), count_gen, &c, &o));
            vt_stream_opts small = opts_cap(3);
            VT_CHECK_OK(vt_stream_map(&a, g, sizeof(uint64_t), times3, NULL, &small));
            VT_CHECK_OK(vt_stream_map(&b, a, sizeof(wide), widen, NULL, NULL));
            VT_CHECK_EQ(vt_stream_elem_size(b), sizeof(wide));
            VT_CHECK_OK(vt_stream_map(&d, b, sizeof(uint64_t), narrow, NULL, &small));
            VT_CHECK_OK(vt_stream_filter(&f, d, is_even, NULL, NULL));
            VT_CHECK_EQ(vt_stream_elem_size(f), sizeof(uint64_t));
            sink k = sink_of(f, n);
            VT_CHECK(drain(rt, thread, &k));
            VT_CHECK_ERR(k.end, VT_ECLOSED);
            VT_CHECK_EQ(k.n, n / 2);
            for (uint64_t i = 0; i < k.n; i++)
                VT_CHECK_EQ(k.got[i], 3 * (2 * i)); /* 3v is even iff v is */
            free(k.got);
            vt_stream_free(f);
            vt_runtime_free(rt);
        }
}

VT_TEST(filter_keeps_none_and_empty_source)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    counter c = counter_of(501);
    vt_stream_opts o = opts_rt(rt, 0);
    vt_stream *g = NULL, *m = NULL, *f = NULL, *e = NULL;
    VT_CHECK_OK(vt_stream_generate(&g, sizeof(uint64_t), count_gen, &c, &o));
    VT_CHECK_OK(vt_stream_map(&m, g, sizeof(uint64_t), times3, NULL, NULL));
    VT_CHECK_OK(vt_stream_map(&e, m, sizeof(uint64_t), plus1, NULL, NULL));
    VT_CHECK_OK(vt_stream_filter(&f, e, is_even, NULL, NULL)); /* 3(2j)+1 is odd, 3(2j+1)+1 even */
    sink k = sink_of(f, 501);
    VT_CHECK(drain(rt, 1, &k));
    VT_CHECK_ERR(k.end, VT_ECLOSED);
    VT_CHECK_EQ(k.n, 250);
    for (uint64_t i = 0; i < k.n; i++)
        VT_CHECK_EQ(k.got[i], 3 * (2 * i + 1) + 1);
    free(k.got);
    vt_stream_free(f);
    /* A generator with nothing to give ends at once; a filter that keeps
     * nothing ends when its input does. */
    vt_stream *z = NULL, *fz = NULL;
    VT_CHECK_OK(vt_stream_generate(&z, 8, gen_nothing, NULL, &o));
    VT_CHECK_OK(vt_stream_filter(&fz, z, keep_all, NULL, NULL));
    uint64_t v;
    VT_CHECK_ERR(vt_stream_next(fz, &v, VT_FOREVER), VT_ECLOSED);
    vt_stream_free(fz);
    vt_runtime_free(rt);
}

VT_TEST(generator_error_mid_stream)
{
    for (int thread = 0; thread < 2; thread++) {
        vt_runtime *rt = rt_new(2);
        VT_CHECK_NOT_NULL(rt);
        counter c = counter_of(0);
        c.fail_err = VT_ERANGE;
        c.fail_at = 10;
        vt_stream_opts o = opts_rt(rt, 4);
        vt_stream *g = NULL, *m = NULL;
        VT_CHECK_OK(vt_stream_generate(&g, sizeof(uint64_t), count_gen, &c, &o));
        VT_CHECK_OK(vt_stream_map(&m, g, sizeof(uint64_t), plus1, NULL, NULL));
        sink k = sink_of(m, 100);
        VT_CHECK(drain(rt, thread, &k));
        VT_CHECK_ERR(k.end, VT_ERANGE);
        VT_CHECK_EQ(k.n, 10);
        for (uint64_t i = 0; i < k.n; i++)
            VT_CHECK_EQ(k.got[i], i + 1);
        uint64_t v;
        VT_CHECK_ERR(vt_stream_next(m, &v, VT_NOW), VT_ERANGE); /* and it stays so */
        free(k.got);
        vt_stream_free(m);
        vt_runtime_free(rt);
    }
}

VT_TEST(map_error_mid_stream)
{
    for (size_t w = 0; w < NWORKER_COUNTS; w++)
        for (int thread = 0; thread < 2; thread++) {
            vt_runtime *rt = rt_new(worker_counts[w]);
            VT_CHECK_NOT_NULL(rt);
            counter c = counter_of(0); /* endless: the error ends it */
            failing fl = {37, VT_EEXIST};
            vt_stream_opts o = opts_rt(rt, 5);
            vt_stream *g = NULL, *m = NULL, *f = NULL, *b = NULL;
            VT_CHECK_OK(vt_stream_generate(&g, sizeof(uint64_t), count_gen, &c, &o));
            VT_CHECK_OK(vt_stream_map(&m, g, sizeof(uint64_t), fail_at_fn, &fl, NULL));
            /* The error travels through the stages after it. */
            VT_CHECK_OK(vt_stream_filter(&f, m, keep_all, NULL, NULL));
            VT_CHECK_OK(vt_stream_map(&b, f, sizeof(uint64_t), plus1, NULL, NULL));
            sink k = sink_of(b, 100);
            VT_CHECK(drain(rt, thread, &k));
            VT_CHECK_ERR(k.end, VT_EEXIST);
            VT_CHECK_EQ(k.n, 37);
            for (uint64_t i = 0; i < k.n; i++)
                VT_CHECK_EQ(k.got[i], i + 1);
            free(k.got);
            vt_stream_free(b);
            vt_runtime_free(rt);
        }
}

/* ---- batch -------------------------------------------------------------------------------- */

typedef struct batch_sink {
    vt_stream *s;
    size_t esz;
    uint64_t next; /* the element expected next (u64 elements) */
    size_t batches, over, out_of_order, empty;
    size_t *sizes;  /* of the first cap batches */
    int64_t *times; /* when each was received */
    size_t cap;
    vt_err end;
} batch_sink;

static void *batch_sink_body(void *arg)
{
    batch_sink *k = arg;
    vt_batch b;
    vt_err e;
    while ((e = vt_stream_next(k->s, &b, VT_FOREVER)) == VT_OK) {
        if (k->batches < k->cap) {
            k->sizes[k->batches] = b.count;
            if (k->times)
                k->times[k->batches] = now_any();
        }
        k->batches++;
        if (b.count == 0 || !b.items)
            k->empty++;
        for (size_t i = 0; i < b.count; i++) {
            uint64_t v;
            memcpy(&v, (unsigned char *)b.items + i * sizeof v, sizeof v);
            if (v != k->next)
                k->out_of_order++;
            k->next = v + 1;
        }
        vt_batch_free(&b);
        if (b.items || b.count)
            k->over++; /* vt_batch_free clears it */
    }
    k->end = e;
    return NULL;
}

static batch_sink batch_sink_of(vt_stream *s, size_t cap)
{
    batch_sink k;
    memset(&k, 0, sizeof k);
    k.s = s;
    k.cap = cap;
    k.sizes = calloc(cap, sizeof(size_t));
    k.times = calloc(cap, sizeof(int64_t));
    k.end = VT_EINVAL;
    return k;
}

VT_TEST(batch_by_count)
{
    const uint64_t n = 1000;
    for (size_t w = 0; w < NWORKER_COUNTS; w++)
        for (int thread = 0; thread < 2; thread++) {
            vt_runtime *rt = rt_new(worker_counts[w]);
            VT_CHECK_NOT_NULL(rt);
            counter c = counter_of(n);
            vt_stream_opts o = opts_rt(rt, 0);
            vt_stream *g = NULL, *b = NULL;
            VT_CHECK_OK(vt_stream_generate(&g, sizeof(uint64_t), count_gen, &c, &o));
            vt_stream_opts bo = opts_cap(2);
            VT_CHECK_OK(vt_stream_batch(&b, g, 7, -1, &bo));
            VT_CHECK_EQ(vt_stream_elem_size(b), sizeof(vt_batch));
            batch_sink k = batch_sink_of(b, 200);
            party p;
            VT_CHECK(party_start(&p, rt, thread, batch_sink_body, &k));
            VT_CHECK_EQ(party_join(&p), 0);
            VT_CHECK_ERR(k.end, VT_ECLOSED);
            VT_CHECK_EQ(k.next, n);
            VT_CHECK_EQ(k.out_of_order, 0);
            VT_CHECK_EQ(k.empty, 0);
            VT_CHECK_EQ(k.over, 0);
            VT_CHECK_EQ(k.batches, (n + 6) / 7);
            for (size_t i = 0; i + 1 < k.batches; i++)
                VT_CHECK_EQ(k.sizes[i], 7); /* no time limit: only full batches, then the rest */
            VT_CHECK_EQ(k.sizes[k.batches - 1], n % 7);
            free(k.sizes);
            free(k.times);
            vt_stream_free(b);
            vt_runtime_free(rt);
        }
}

/* Batches close by time: a slow producer (one element every delay), a
 * generous max_count. Never early: a batch that is not full was received
 * at least max_wait after its first element was pushed. */
VT_TEST(batch_by_time)
{
    for (int thread = 0; thread < 2; thread++) {
        const uint64_t n = 60;
        const size_t max_count = 16;
        const int64_t max_wait = VT_MS(3);
        vt_runtime *rt = rt_new(2);
        VT_CHECK_NOT_NULL(rt);
        vt_stream_opts o = opts_rt(rt, 0);
        vt_stream *s = NULL, *b = NULL;
        VT_CHECK_OK(vt_stream_new(&s, sizeof(uint64_t), &o));
        VT_CHECK_OK(vt_stream_batch(&b, s, max_count, max_wait, NULL));
        int64_t push_times[60];
        pusher pu = {s, n, VT_OK, VT_EINVAL, VT_EINVAL, 0, VT_US(500), push_times};
        party prod;
        VT_CHECK(party_start(&prod, rt, 0, pusher_body, &pu));
        batch_sink k = batch_sink_of(b, n);
        party p;
        VT_CHECK(party_start(&p, rt, thread, batch_sink_body, &k));
        VT_CHECK_EQ(party_join(&p), 0);
        VT_CHECK_EQ(party_join(&prod), 0);
        VT_CHECK_OK(pu.push_err);
        VT_CHECK_ERR(k.end, VT_ECLOSED);
        VT_CHECK_EQ(k.next, n); /* all arrived, in order */
        VT_CHECK_EQ(k.out_of_order, 0);
        VT_CHECK_EQ(k.empty, 0);
        size_t first = 0;
        for (size_t i = 0; i < k.batches; i++) {
            VT_CHECK_LE(k.sizes[i], max_count);
            if (k.sizes[i] < max_count && first + k.sizes[i] < n) /* not full, not the last */
                VT_CHECK_GE(k.times[i], push_times[first] + max_wait);
            first += k.sizes[i];
        }
        VT_CHECK_EQ(first, n);
        free(k.sizes);
        free(k.times);
        vt_stream_free(b);
        vt_runtime_free(rt);
    }
}

/* On the virtual clock, batch times are exact: elements every 2 ms, a
 * batch closes 5 ms after its first, so each holds the elements of t, t+2,
 * t+4: batches of 3. */
typedef struct det_batch {
    batch_sink k;
    pusher pu;
    vt_err err;
} det_batch;

static void *det_batch_root(void *arg)
{
    det_batch *d = arg;
    vt_stream *s = NULL, *b = NULL;
    if ((d->err = vt_stream_new(&s, sizeof(uint64_t), NULL)) != VT_OK)
        return NULL;
    if ((d->err = vt_stream_batch(&b, s, 100, VT_MS(5), NULL)) != VT_OK)
        return NULL;
    d->pu.s = s;
    d->k.s = b;
    vt_fiber f;
    vt_fiber_spawn(&f, pusher_body, &d->pu);
    batch_sink_body(&d->k);
    vt_fiber_await(f, NULL, VT_FOREVER);
    vt_stream_free(b);
    return NULL;
}

VT_TEST(batch_by_time_virtual_clock)
{
    det_batch d;
    memset(&d, 0, sizeof d);
    d.pu.n = 30;
    d.pu.delay_ns = VT_MS(2);
    d.k = batch_sink_of(NULL, 30);
    vt_runtime_opts o = det_opts(vt_test_seed());
    VT_CHECK_OK(vt_runtime_main(&o, det_batch_root, &d, NULL));
    VT_CHECK_OK(d.err);
    VT_CHECK_OK(d.pu.push_err);
    VT_CHECK_ERR(d.k.end, VT_ECLOSED);
    VT_CHECK_EQ(d.k.next, 30);
    VT_CHECK_EQ(d.k.out_of_order, 0);
    VT_CHECK_EQ(d.k.batches, 10);
    for (size_t i = 0; i < d.k.batches; i++)
        VT_CHECK_EQ(d.k.sizes[i], 3);
    free(d.k.sizes);
    free(d.k.times);
}

/* An input that fails mid-batch: the partial batch first, then the error. */
VT_TEST(batch_input_error)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    counter c = counter_of(0);
    c.fail_err = VT_EEXIST;
    c.fail_at = 23;
    vt_stream_opts o = opts_rt(rt, 0);
    vt_stream *g = NULL, *b = NULL;
    VT_CHECK_OK(vt_stream_generate(&g, sizeof(uint64_t), count_gen, &c, &o));
    VT_CHECK_OK(vt_stream_batch(&b, g, 10, -1, NULL));
    batch_sink k = batch_sink_of(b, 10);
    batch_sink_body(&k);
    VT_CHECK_ERR(k.end, VT_EEXIST);
    VT_CHECK_EQ(k.next, 23);
    VT_CHECK_EQ(k.batches, 3);
    VT_CHECK_EQ(k.sizes[2], 3);
    VT_CHECK_EQ(k.out_of_order, 0);
    free(k.sizes);
    free(k.times);
    vt_stream_free(b);
    vt_runtime_free(rt);
}

/* Batches of elements larger than a word keep their bytes, and a filter
 * or merge after a batch stage frees the batches it drops. */
static int keep_odd_batches(void *ud, const void *elem)
{
    _Atomic long *seen = ud;
    (void)elem;
    return (atomic_fetch_add(seen, 1) & 1) != 0;
}

VT_TEST(batch_wide_elements_and_filter_drops)
{
    long live = vt_test_alloc_live();
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    counter c = counter_of(500);
    vt_stream_opts o = opts_rt(rt, 0);
    vt_stream *g = NULL, *w = NULL, *b = NULL, *f = NULL;
    VT_CHECK_OK(vt_stream_generate(&g, sizeof(uint64_t), count_gen, &c, &o));
    VT_CHECK_OK(vt_stream_map(&w, g, sizeof(wide), widen, NULL, NULL));
    VT_CHECK_OK(vt_stream_batch(&b, w, 10, -1, NULL));
    _Atomic long seen = 0;
    VT_CHECK_OK(vt_stream_filter(&f, b, keep_odd_batches, &seen, NULL));
    vt_batch bt;
    size_t batches = 0;
    vt_err e;
    while ((e = vt_stream_next(f, &bt, VT_FOREVER)) == VT_OK) {
        VT_CHECK_EQ(bt.count, 10);
        for (size_t i = 0; i < bt.count; i++) {
            wide x;
            memcpy(&x, (unsigned char *)bt.items + i * sizeof x, sizeof x);
            uint64_t want = (2 * batches + 1) * 10 + i;
            VT_CHECK_EQ(x.v, want);
            VT_CHECK_EQ(x.sq, want * want);
            VT_CHECK_EQ(x.tag, (uint32_t)(want ^ 0x5a5a));
        }
        vt_batch_free(&bt);
        batches++;
    }
    VT_CHECK_ERR(e, VT_ECLOSED);
    VT_CHECK_EQ(batches, 25);
    vt_stream_free(f);
    vt_runtime_free(rt);
    VT_CHECK_EQ(vt_test_alloc_live(), live); /* the 25 dropped batches too */
}

/* ---- merge -------------------------------------------------------------------------------- */

/* Input i gives (i << 32) | seq for seq < n. */
typedef struct tagged {
    uint64_t id, seq, n;
    vt_err fail_err;
    uint64_t fail_at;
} tagged;

static vt_err tagged_gen(void *ud, void *elem)
{
    tagged *t = ud;
    if (t->fail_err && t->seq == t->fail_at)
        return t->fail_err;
    if (t->n && t->seq >= t->n)
        return VT_ECLOSED;
    uint64_t v = (t->id << 32) | t->seq++;
    memcpy(elem, &v, sizeof v);
    return VT_OK;
}

VT_TEST(merge_keeps_each_inputs_order)
{
    enum {
        NIN = 5,
        PER = 700
    };
    for (size_t w = 0; w < NWORKER_COUNTS; w++)
        for (int thread = 0; thread < 2; thread++) {
            vt_runtime *rt = rt_new(worker_counts[w]);
            VT_CHECK_NOT_NULL(rt);
            tagged t[NIN];
            vt_stream *ins[NIN];
            vt_stream_opts o = opts_rt(rt, 3);
            for (uint64_t i = 0; i < NIN; i++) {
                t[i] = (tagged){i, 0, PER, VT_OK, 0};
                VT_CHECK_OK(vt_stream_generate(&ins[i], sizeof(uint64_t), tagged_gen, &t[i], &o));
            }
            vt_stream *m = NULL;
            VT_CHECK_OK(vt_stream_merge(&m, ins, NIN, NULL));
            memset(ins, 0, sizeof ins); /* ins is the caller's, and may go */
            sink k = sink_of(m, NIN * PER);
            VT_CHECK(drain(rt, thread, &k));
            VT_CHECK_ERR(k.end, VT_ECLOSED);
            VT_CHECK_EQ(k.n, NIN * PER);
            uint64_t next[NIN] = {0};
            for (size_t i = 0; i < k.n; i++) {
                uint64_t id = k.got[i] >> 32, seq = k.got[i] & 0xffffffffu;
                VT_CHECK_LT(id, NIN);
                VT_CHECK_EQ(seq, next[id]); /* in order, once each */
                next[id]++;
            }
            for (int i = 0; i < NIN; i++)
                VT_CHECK_EQ(next[i], PER);
            free(k.got);
            vt_stream_free(m);
            vt_runtime_free(rt);
        }
}

VT_TEST(merge_one_input_and_sources)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_stream_opts o = opts_rt(rt, 4);
    vt_stream *a = NULL, *b = NULL, *m = NULL, *one = NULL;
    VT_CHECK_OK(vt_stream_new(&a, 8, &o));
    VT_CHECK_OK(vt_stream_new(&b, 8, &o));
    vt_stream *ins[2] = {a, b};
    VT_CHECK_OK(vt_stream_merge(&m, ins, 2, NULL));
    VT_CHECK_OK(vt_stream_merge(&one, &m, 1, NULL));
    pusher pa = {a, 300, VT_OK, VT_EINVAL, VT_EINVAL, 0, 0, NULL};
    pusher pb = {b, 200, VT_OK, VT_EINVAL, VT_EINVAL, 0, 0, NULL};
    party p1, p2;
    VT_CHECK(party_start(&p1, rt, 1, pusher_body, &pa));
    VT_CHECK(party_start(&p2, rt, 0, pusher_body, &pb));
    sink k = sink_of(one, 500);
    VT_CHECK(drain(rt, 0, &k));
    VT_CHECK_EQ(party_join(&p1), 0);
    VT_CHECK_EQ(party_join(&p2), 0);
    VT_CHECK_ERR(k.end, VT_ECLOSED);
    VT_CHECK_EQ(k.n, 500);
    /* Both count 0, 1, ...: each value appears twice below 200, once above. */
    int seen[300] = {0};
    for (size_t i = 0; i < k.n; i++) {
        VT_CHECK_LT(k.got[i], 300);
        seen[k.got[i]]++;
    }
    for (int i = 0; i < 300; i++)
        VT_CHECK_EQ(seen[i], i < 200 ? 2 : 1);
    free(k.got);
    vt_stream_free(one);
    vt_runtime_free(rt);
}

/* One input fails: the merged stream ends with its error; what it gave of
 * that input came in order and before the failure. */
VT_TEST(merge_error_in_one_input)
{
    for (int thread = 0; thread < 2; thread++) {
        vt_runtime *rt = rt_new(2);
        VT_CHECK_NOT_NULL(rt);
        tagged t[3] = {
            {0, 0, 0, VT_OK, 0}, {1, 0, 0, VT_ERANGE, 40}, {2, 0, 0, VT_OK, 0}}; /* 0, 2: endless */
        vt_stream *ins[3];
        vt_stream_opts o = opts_rt(rt, 4);
        for (int i = 0; i < 3; i++)
            VT_CHECK_OK(vt_stream_generate(&ins[i], sizeof(uint64_t), tagged_gen, &t[i], &o));
        vt_stream *m = NULL;
        VT_CHECK_OK(vt_stream_merge(&m, ins, 3, NULL));
        sink k = sink_of(m, 1 << 20);
        VT_CHECK(drain(rt, thread, &k));
        VT_CHECK_ERR(k.end, VT_ERANGE);
        uint64_t next[3] = {0};
        for (size_t i = 0; i < k.n && i < k.cap; i++) {
            uint64_t id = k.got[i] >> 32, seq = k.got[i] & 0xffffffffu;
            VT_CHECK_EQ(seq, next[id]);
            next[id]++;
        }
        VT_CHECK_LE(next[1], 40);
        free(k.got);
        vt_stream_free(m);
        vt_runtime_free(rt);
    }
}

/* ---- par_map ------------------------------------------------------------------------------- */

static void par_map_case(unsigned workers, int thread, unsigned conc, int unordered)
{
    const uint64_t n = 400;
    vt_runtime *rt = rt_new(workers);
    VT_CHECK_NOT_NULL(rt);
    counter c = counter_of(n);
    int64_t *delays = random_delays(97, VT_US(300));
    VT_CHECK_NOT_NULL(delays);
    slow sl;
    memset(&sl, 0, sizeof sl);
    sl.delays = delays;
    sl.ndelays = 97;
    vt_stream_opts o = opts_rt(rt, 0);
    vt_stream *g = NULL, *pm = NULL;
    VT_CHECK_OK(vt_stream_generate(&g, sizeof(uint64_t), count_gen, &c, &o));
    vt_stream_opts po = opts_cap(2);
    VT_CHECK_OK(vt_stream_par_map(&pm, g, sizeof(uint64_t), conc, unordered, slow_fn, &sl, &po));
    sink k = sink_of(pm, n);
    VT_CHECK(drain(rt, thread, &k));
    VT_CHECK_ERR(k.end, VT_ECLOSED);
    VT_CHECK_EQ(k.n, n);
    VT_CHECK_EQ(atomic_load(&sl.calls), (long)n);
    VT_CHECK_LE(atomic_load(&sl.max_active), (long)conc);
    if (!unordered) {
        for (uint64_t i = 0; i < n; i++)
            VT_CHECK_EQ(k.got[i], 2 * i + 1);
    } else {
        char *seen = calloc(n, 1);
        for (uint64_t i = 0; i < n; i++) {
            uint64_t v = k.got[i];
            VT_CHECK_EQ(v & 1, 1);
            VT_CHECK_LT(v / 2, n);
            VT_CHECK_EQ(seen[v / 2], 0);
            seen[v / 2] = 1;
        }
        free(seen);
    }
    free(k.got);
    vt_stream_free(pm);
    free(delays); /* fn may run until the stream is freed */
    vt_runtime_free(rt);
}

VT_TEST(par_map_ordered_keeps_order)
{
    static const unsigned concs[] = {1, 3, 8};
    for (size_t w = 0; w < NWORKER_COUNTS; w++)
        for (int thread = 0; thread < 2; thread++)
            for (size_t c = 0; c < 3; c++)
                par_map_case(worker_counts[w], thread, concs[c], 0);
}

VT_TEST(par_map_unordered_all_once)
{
    static const unsigned concs[] = {1, 3, 8};
    for (size_t w = 0; w < NWORKER_COUNTS; w++)
        for (int thread = 0; thread < 2; thread++)
            for (size_t c = 0; c < 3; c++)
                par_map_case(worker_counts[w], thread, concs[c], 1);
}

/* On the virtual clock every worker is busy at once (each sleeps in fn),
 * and a slow element holds back the later ones, in order. */
typedef struct det_par {
    slow sl;
    sink k;
    unsigned conc;
    int unordered;
    vt_err err;
} det_par;

static void *det_par_root(void *arg)
{
    det_par *d = arg;
    static counter c;
    c = counter_of(200);
    vt_stream *g = NULL, *pm = NULL;
    if ((d->err = vt_stream_generate(&g, sizeof(uint64_t), count_gen, &c, NULL)) != VT_OK)
        return NULL;
    if ((d->err = vt_stream_par_map(&pm, g, sizeof(uint64_t), d->conc, d->unordered, slow_fn,
                                    &d->sl, NULL)))
        return NULL;
    d->k.s = pm;
    sink_body(&d->k);
    vt_stream_free(pm);
    return NULL;
}

VT_TEST(par_map_virtual_clock)
{
    int64_t delays[7] = {VT_MS(9), VT_MS(1), VT_MS(4), VT_MS(2), VT_MS(7), VT_MS(3), VT_MS(5)};
    for (int unordered = 0; unordered < 2; unordered++) {
        det_par d;
        memset(&d, 0, sizeof d);
        d.sl.delays = delays;
        d.sl.ndelays = 7;
        d.conc = 4;
        d.unordered = unordered;
        d.k = sink_of(NULL, 200);
        vt_runtime_opts o = det_opts(vt_test_seed() + (uint64_t)unordered);
        VT_CHECK_OK(vt_runtime_main(&o, det_par_root, &d, NULL));
        VT_CHECK_OK(d.err);
        VT_CHECK_ERR(d.k.end, VT_ECLOSED);
        VT_CHECK_EQ(d.k.n, 200);
        VT_CHECK_EQ(atomic_load(&d.sl.max_active), 4);
        int in_order = 1;
        for (uint64_t i = 0; i < 200; i++)
            in_order &= d.k.got[i] == 2 * i + 1;
        if (!unordered)
            VT_CHECK(in_order);
        else
            VT_CHECK(!in_order); /* the 1 ms elements overtake the 9 ms one */
        free(d.k.got);
    }
}

/* fn fails on one element: ordered, the consumer gets exactly the elements
 * before it, in order, then the error; unordered, distinct elements and
 * then the error. VT_ECLOSED from fn is the end of the stream, for every
 * worker (the generator is endless: nothing else ends it). */
VT_TEST(par_map_fn_error)
{
    static const vt_err errs[] = {VT_EEXIST, VT_ECLOSED};
    for (int unordered = 0; unordered < 2; unordered++)
        for (size_t w = 0; w < NWORKER_COUNTS * 2; w++) {
            vt_err err = errs[w / NWORKER_COUNTS];
            vt_runtime *rt = rt_new(worker_counts[w % NWORKER_COUNTS]);
            VT_CHECK_NOT_NULL(rt);
            counter c = counter_of(0);
            int64_t *delays = random_delays(31, VT_US(200));
            slow sl;
            memset(&sl, 0, sizeof sl);
            sl.delays = delays;
            sl.ndelays = 31;
            sl.fail_at = 50;
            sl.err = err;
            vt_stream_opts o = opts_rt(rt, 4);
            vt_stream *g = NULL, *pm = NULL;
            VT_CHECK_OK(vt_stream_generate(&g, sizeof(uint64_t), count_gen, &c, &o));
            VT_CHECK_OK(
                vt_stream_par_map(&pm, g, sizeof(uint64_t), 5, unordered, slow_fn, &sl, NULL));
            sink k = sink_of(pm, 10000);
            VT_CHECK(drain(rt, (int)w & 1, &k));
            VT_CHECK_ERR(k.end, err);
            if (!unordered) {
                VT_CHECK_EQ(k.n, 50);
                for (uint64_t i = 0; i < k.n; i++)
                    VT_CHECK_EQ(k.got[i], 2 * i + 1);
            } else {
                char seen[200] = {0};
                for (uint64_t i = 0; i < k.n; i++) {
                    uint64_t v = k.got[i] / 2;
                    VT_CHECK_LT(v, 200);
                    VT_CHECK_NE(v, 50);
                    VT_CHECK_EQ(seen[v], 0);
                    seen[v] = 1;
                }
            }
            free(k.got);
            vt_stream_free(pm);
            free(delays); /* fn may run until the stream is freed */
            vt_runtime_free(rt);
        }
}

/* The input fails after 20 elements: all 20 come out (in order when
 * ordered), then the input's error. */
VT_TEST(par_map_input_error)
{
    for (int unordered = 0; unordered < 2; unordered++)
        for (int thread = 0; thread < 2; thread++) {
            vt_runtime *rt = rt_new(2);
            VT_CHECK_NOT_NULL(rt);
            vt_stream_opts o = opts_rt(rt, 32);
            vt_stream *s = NULL, *pm = NULL;
            VT_CHECK_OK(vt_stream_new(&s, sizeof(uint64_t), &o));
            int64_t *delays = random_delays(13, VT_US(300));
            slow sl;
            memset(&sl, 0, sizeof sl);
            sl.delays = delays;
            sl.ndelays = 13;
            VT_CHECK_OK(
                vt_stream_par_map(&pm, s, sizeof(uint64_t), 6, unordered, slow_fn, &sl, NULL));
            for (uint64_t i = 0; i < 20; i++)
                VT_CHECK_OK(vt_stream_push(s, &i, VT_FOREVER));
            VT_CHECK_OK(vt_stream_end(s, VT_ERANGE));
            sink k = sink_of(pm, 100);
            VT_CHECK(drain(rt, thread, &k));
            VT_CHECK_ERR(k.end, VT_ERANGE);
            VT_CHECK_EQ(k.n, 20);
            uint64_t sum = 0;
            for (uint64_t i = 0; i < k.n; i++) {
                if (!unordered)
                    VT_CHECK_EQ(k.got[i], 2 * i + 1);
                sum += k.got[i];
            }
            VT_CHECK_EQ(sum, 20 * 20); /* the odd numbers 1 .. 39 */
            free(k.got);
            vt_stream_free(pm);
            free(delays); /* fn may run until the stream is freed */
            vt_runtime_free(rt);
        }
}

/* ---- Chains --------------------------------------------------------------------------------- */

VT_TEST(long_chain_of_every_stage)
{
    for (size_t w = 0; w < NWORKER_COUNTS; w++) {
        vt_runtime *rt = rt_new(worker_counts[w]);
        VT_CHECK_NOT_NULL(rt);
        tagged t[3];
        vt_stream *ins[3];
        vt_stream_opts o = opts_rt(rt, 2);
        for (uint64_t i = 0; i < 3; i++) {
            t[i] = (tagged){0, 0, 300, VT_OK, 0};
            t[i].seq = i * 300; /* 0..899 over three inputs */
            t[i].n = (i + 1) * 300;
            VT_CHECK_OK(vt_stream_generate(&ins[i], sizeof(uint64_t), tagged_gen, &t[i], &o));
        }
        vt_stream *s = NULL;
        VT_CHECK_OK(vt_stream_merge(&s, ins, 3, NULL));
        for (int i = 0; i < 20; i++) {
            vt_stream *next = NULL;
            vt_stream_opts so = opts_cap((size_t)(i % 4) + 2);
            if (i % 5 == 3)
                VT_CHECK_OK(
                    vt_stream_par_map(&next, s, sizeof(uint64_t), 3, i % 2, plus1, NULL, &so));
            else
                VT_CHECK_OK(vt_stream_map(&next, s, sizeof(uint64_t), plus1, NULL, &so));
            s = next;
        }
        vt_stream *f = NULL, *b = NULL;
        VT_CHECK_OK(vt_stream_filter(&f, s, keep_all, NULL, NULL));
        VT_CHECK_OK(vt_stream_batch(&b, f, 32, VT_MS(1), NULL));
        char *seen = calloc(900, 1);
        size_t total = 0;
        vt_batch bt;
        vt_err e;
        while ((e = vt_stream_next(b, &bt, VT_FOREVER)) == VT_OK) {
            VT_CHECK_LE(bt.count, 32);
            for (size_t i = 0; i < bt.count; i++) {
                uint64_t v;
                memcpy(&v, (unsigned char *)bt.items + i * 8, 8);
                VT_CHECK_GE(v, 20);
                VT_CHECK_LT(v - 20, 900);
                VT_CHECK_EQ(seen[v - 20], 0);
                seen[v - 20] = 1;
            }
            total += bt.count;
            vt_batch_free(&bt);
        }
        VT_CHECK_ERR(e, VT_ECLOSED);
        VT_CHECK_EQ(total, 900);
        free(seen);
        vt_stream_free(b);
        vt_runtime_free(rt);
    }
}

/* Stages may run on another runtime than their input, and carry a name. */
VT_TEST(stage_runtime_and_name)
{
    vt_runtime *rt1 = rt_new(1), *rt2 = rt_new(2);
    VT_CHECK_NOT_NULL(rt1);
    VT_CHECK_NOT_NULL(rt2);
    vt_stream_opts o = opts_rt(rt1, 0);
    vt_stream *s = NULL, *m = NULL;
    VT_CHECK_OK(vt_stream_new(&s, 8, &o));
    vt_stream_opts mo = opts_rt(rt2, 0);
    mo.name = "triple-stage";
    VT_CHECK_OK(vt_stream_map(&m, s, 8, times3, NULL, &mo));
    /* The map's fiber waits for input on rt2: the dump names it. */
    char *buf = NULL;
    size_t len = 0;
    int found = 0;
    for (int tries = 0; tries < 100000 && !found; tries++) {
        FILE *f = open_memstream(&buf, &len);
        VT_CHECK_NOT_NULL(f);
        VT_CHECK_OK(vt_runtime_dump(rt2, f));
        fclose(f);
        found = strstr(buf, "'triple-stage' waiting") != NULL;
        free(buf);
        buf = NULL;
        if (!found)
            nap();
    }
    VT_CHECK(found);
    uint64_t v = 5;
    VT_CHECK_OK(vt_stream_push(s, &v, VT_FOREVER));
    VT_CHECK_OK(vt_stream_end(s, VT_OK));
    VT_CHECK_OK(vt_stream_next(m, &v, VT_FOREVER));
    VT_CHECK_EQ(v, 15);
    VT_CHECK_ERR(vt_stream_next(m, &v, VT_FOREVER), VT_ECLOSED);
    vt_stream_free(m);
    vt_runtime_free(rt2);
    vt_runtime_free(rt1);
}

/* ---- Freeing ------------------------------------------------------------------------------- */

static vt_err sleep_forever(void *ud, const void *in, void *out)
{
    _Atomic long *entered = ud;
    (void)in;
    (void)out;
    atomic_fetch_add(entered, 1);
    return vt_sleep_until(VT_FOREVER); /* until cancelled */
}

/* Builds an endless chain of every kind of stage, reads some, frees it. */
typedef struct midflight {
    vt_runtime *rt;
    long take;
    int where; /* 0: finished chain; 1: mid-flight; 2: stuck in a callback */
    vt_err err;
    counter c[2];
    _Atomic long entered;
} midflight;

static void *midflight_body(void *arg)
{
    midflight *m = arg;
    vt_stream_opts o = opts_rt(m->rt, 4);
    vt_stream *g[2], *mg = NULL, *a = NULL, *pm = NULL, *pu = NULL, *b = NULL, *f = NULL,
                     *last = NULL;
    m->c[0] = counter_of(m->where == 0 ? 100 : 0);
    m->c[1] = counter_of(m->where == 0 ? 100 : 0);
    vt_err e;
    if ((e = vt_stream_generate(&g[0], 8, count_gen, &m->c[0], &o)) ||
        (e = vt_stream_generate(&g[1], 8, count_gen, &m->c[1], &o)) ||
        (e = vt_stream_merge(&mg, g, 2, &o)) || (e = vt_stream_map(&a, mg, 8, times3, NULL, &o)) ||
        (e = vt_stream_par_map(&pm, a, 8, 3, 0, m->where == 2 ? sleep_forever : plus1,
                               (void *)&m->entered, &o)) ||
        (e = vt_stream_par_map(&pu, pm, 8, 2, 1, plus1, NULL, &o)) ||
        (e = vt_stream_batch(&b, pu, 5, VT_MS(1), &o)) ||
        (e = vt_stream_filter(&f, b, keep_all, NULL, &o))) {
        m->err = e;
        return NULL;
    }
    last = f;
    vt_batch bt;
    for (long i = 0; i < m->take; i++) {
        if ((e = vt_stream_next(last, &bt, VT_FOREVER)) != VT_OK) {
            m->err = e;
            break;
        }
        vt_batch_free(&bt);
    }
    if (m->where == 0) {
        while ((e = vt_stream_next(last, &bt, VT_FOREVER)) == VT_OK)
            vt_batch_free(&bt);
        m->err = e == VT_ECLOSED ? VT_OK : e;
    }
    if (m->where == 2)
        while (atomic_load(&m->entered) < 3)
            relax(); /* every worker sleeps in fn */
    vt_stream_free(last);
    return NULL;
}

VT_TEST(free_chain_finished_midflight_or_stuck)
{
    long live = vt_test_alloc_live();
    for (int where = 0; where < 3; where++)
        for (size_t w = 0; w < NWORKER_COUNTS; w++)
            for (int thread = 0; thread < 2; thread++) {
                vt_runtime *rt = rt_new(worker_counts[w]);
                VT_CHECK_NOT_NULL(rt);
                midflight m;
                memset(&m, 0, sizeof m);
                m.rt = rt;
                m.where = where;
                m.take = where == 1 ? 7 : 0;
                party p;
                VT_CHECK(party_start(&p, rt, thread, midflight_body, &m));
                VT_CHECK_EQ(party_join(&p), 0);
                VT_CHECK_OK(m.err);
                vt_runtime_stats st;
                VT_CHECK_OK(vt_runtime_stats_get(rt, &st));
                VT_CHECK_EQ(st.live, 0); /* every stage's fiber is gone */
                vt_runtime_free(rt);
                VT_CHECK_EQ(vt_test_alloc_live(), live);
            }
}

/* Batches waiting in a batch stage's channel go with the chain. */
VT_TEST(free_frees_buffered_batches)
{
    long live = vt_test_alloc_live();
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    counter c = counter_of(1000);
    _Atomic long produced = 0;
    c.produced = &produced;
    vt_stream_opts o = opts_rt(rt, 0);
    vt_stream *g = NULL, *b = NULL, *m = NULL, *ins[1];
    VT_CHECK_OK(vt_stream_generate(&g, 8, count_gen, &c, &o));
    vt_stream_opts bo = opts_cap(8);
    VT_CHECK_OK(vt_stream_batch(&b, g, 10, -1, &bo));
    ins[0] = b;
    VT_CHECK_OK(vt_stream_merge(&m, ins, 1, &bo));
    /* Nobody reads: with 200 produced, batches wait in both channels (the
     * generator's holds 64 + 1 at most, each batch stage 8 + 1). */
    while (atomic_load(&produced) < 200)
        nap();
    vt_stream_free(m);
    vt_runtime_free(rt);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

/* A producer still pushing when the consumer frees the chain gets
 * VT_ECLOSED and ends; the source goes when both have let go. */
VT_TEST(push_after_consumer_freed)
{
    long live = vt_test_alloc_live();
    for (int thread = 0; thread < 2; thread++) {
        vt_runtime *rt = rt_new(2);
        VT_CHECK_NOT_NULL(rt);
        vt_stream_opts o = opts_rt(rt, 4);
        vt_stream *s = NULL, *m = NULL;
        VT_CHECK_OK(vt_stream_new(&s, 8, &o));
        VT_CHECK_OK(vt_stream_map(&m, s, 8, plus1, NULL, NULL));
        pusher pu = {s, 1u << 30, VT_OK, VT_EINVAL, VT_EINVAL, 0, 0, NULL};
        party p;
        VT_CHECK(party_start(&p, rt, thread, pusher_body, &pu));
        uint64_t v;
        for (uint64_t i = 0; i < 10; i++) {
            VT_CHECK_OK(vt_stream_next(m, &v, VT_FOREVER));
            VT_CHECK_EQ(v, i + 1);
        }
        vt_stream_free(m); /* the producer is blocked on a full stream, or about to be */
        VT_CHECK_EQ(party_join(&p), 0);
        VT_CHECK_ERR(pu.push_err, VT_ECLOSED);
        VT_CHECK_ERR(pu.end_err, VT_ECLOSED);
        vt_runtime_free(rt);
        VT_CHECK_EQ(vt_test_alloc_live(), live);
    }
}

/* The fiber that built a chain is cancelled: the stages go with it, and
 * the consumer (not cancelled itself) gets what was buffered, then
 * VT_ECANCELED. The builder stays (masked) until the chain is freed, so
 * that the stages' scope never outlives the fiber it belongs to. */
typedef struct builder {
    vt_future *go, *done;
    _Atomic(vt_stream *) out;
    _Atomic int failed;
    counter c;
    vt_err err;
} builder;

static void *builder_body(void *arg)
{
    builder *b = arg;
    b->c = counter_of(0);
    vt_stream *g = NULL, *m = NULL;
    if ((b->err = vt_stream_generate(&g, 8, count_gen, &b->c, NULL)) ||
        (b->err = vt_stream_map(&m, g, 8, plus1, NULL, NULL))) {
        atomic_store(&b->failed, 1);
        return NULL;
    }
    atomic_store(&b->out, m);
    b->err = vt_future_await(b->go, NULL, VT_FOREVER); /* until cancelled */
    vt_cancel_mask(1);
    vt_future_await(b->done, NULL, VT_FOREVER);
    return NULL;
}

VT_TEST(builder_cancelled)
{
    for (int round = 0; round < 2; round++) {
        vt_runtime *rt = rt_new(2);
        VT_CHECK_NOT_NULL(rt);
        builder b;
        memset(&b, 0, sizeof b);
        VT_CHECK_OK(vt_future_new(&b.go));
        VT_CHECK_OK(vt_future_new(&b.done));
        vt_fiber_opts fo = {.runtime = rt};
        vt_fiber f;
        VT_CHECK_OK(vt_fiber_spawn_ex(&f, builder_body, &b, &fo));
        vt_stream *m;
        while (!(m = atomic_load(&b.out)) && !atomic_load(&b.failed))
            nap();
        if (!m)
            VT_CHECK_OK(vt_fiber_await(f, NULL, VT_FOREVER));
        VT_CHECK_OK(b.err);
        VT_CHECK_NOT_NULL(m);
        uint64_t v;
        uint64_t i = 0;
        for (; round == 1 && i < 100; i++) {
            VT_CHECK_OK(vt_stream_next(m, &v, VT_FOREVER));
            VT_CHECK_EQ(v, i + 1);
        }
        VT_CHECK_OK(vt_fiber_cancel(f));
        vt_err e;
        while ((e = vt_stream_next(m, &v, VT_FOREVER)) == VT_OK) {
            VT_CHECK_EQ(v, i + 1); /* the buffered rest, in order */
            i++;
        }
        VT_CHECK_ERR(e, VT_ECANCELED);
        vt_stream_free(m);
        VT_CHECK_OK(vt_future_set(b.done, NULL));
        VT_CHECK_OK(vt_fiber_await(f, NULL, VT_FOREVER));
        VT_CHECK_ERR(b.err, VT_ECANCELED);
        vt_future_free(b.go);
        vt_future_free(b.done);
        vt_runtime_free(rt);
    }
}

/* A stream may outlive the fiber that built it. Its stages' scope then
 * outlives that fiber's own: freeing it must not disturb the fiber that
 * reuses the builder's slot — whose own stream must still be cancelled
 * with it. */
static void *build_and_return(void *arg)
{
    counter *c = arg;
    vt_stream *g = NULL, *m = NULL;
    if (vt_stream_generate(&g, 8, count_gen, c, NULL) || vt_stream_map(&m, g, 8, plus1, NULL, NULL))
        return NULL;
    return m;
}

typedef struct second {
    counter c;
    vt_future *go;
    _Atomic int ready;
    vt_err end;
    long got;
} second;

static void *build_and_wait(void *arg)
{
    second *b = arg;
    vt_stream *g = NULL, *m = NULL;
    b->end = VT_EINVAL;
    if (vt_stream_generate(&g, 8, count_gen, &b->c, NULL) ||
        vt_stream_map(&m, g, 8, plus1, NULL, NULL)) {
        atomic_store(&b->ready, 2);
        return NULL;
    }
    atomic_store(&b->ready, 1);
    vt_future_await(b->go, NULL, VT_FOREVER); /* until cancelled */
    vt_cancel_mask(1);                        /* read on: what ends m? */
    uint64_t v;
    vt_err e;
    while ((e = vt_stream_next(m, &v, VT_FOREVER)) == VT_OK)
        b->got++;
    b->end = e;
    vt_stream_free(m);
    return NULL;
}

VT_TEST(stream_outlives_its_builder)
{
    vt_runtime *rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    vt_fiber_opts fo = {.runtime = rt};
    counter ca = counter_of(0);
    vt_fiber a, b;
    VT_CHECK_OK(vt_fiber_spawn_ex(&a, build_and_return, &ca, &fo));
    void *r = NULL;
    VT_CHECK_OK(vt_fiber_await(a, &r, VT_FOREVER));
    vt_stream *sa = r;
    VT_CHECK_NOT_NULL(sa);
    second sb;
    memset(&sb, 0, sizeof sb);
    sb.c = counter_of(200000); /* ends by itself if the cancel never reaches it */
    VT_CHECK_OK(vt_future_new(&sb.go));
    VT_CHECK_OK(vt_fiber_spawn_ex(&b, build_and_wait, &sb, &fo));
    while (!atomic_load(&sb.ready))
        nap();
    uint64_t v;
    for (uint64_t i = 0; i < 3; i++) {
        VT_CHECK_OK(vt_stream_next(sa, &v, VT_FOREVER));
        VT_CHECK_EQ(v, i + 1);
    }
    vt_stream_free(sa);
    VT_CHECK_OK(vt_fiber_cancel(b));
    VT_CHECK_OK(vt_fiber_await(b, NULL, VT_FOREVER));
    vt_future_free(sb.go);
    vt_runtime_free(rt);
    VT_CHECK_EQ(atomic_load(&sb.ready), 1);
    VT_CHECK_ERR(sb.end, VT_ECANCELED);
    VT_CHECK_LT(sb.got, 200000);
}

/* ---- The memory bound ---------------------------------------------------------------------------
 * generate (cap 8) -> map (cap 4) -> par_map x3 (cap 5) -> batch of 4 (cap 2 batches).
 * Held at most: 8+1, 4+1, 5+3, 2*4+4 elements: 34. */
enum {
    BOUND = (8 + 1) + (4 + 1) + (5 + 3) + (2 * 4 + 4)
};

typedef struct bound {
    vt_runtime *rt; /* NULL: the calling fiber's */
    uint64_t n;     /* elements, a multiple of 4 */
    counter c;
    _Atomic long produced, consumed, max_inflight, violations;
    int64_t nap_ns;  /* the consumer's sleep per batch */
    int64_t slow_ns; /* the map's sleep per element */
    vt_err err;
    long batches;
} bound;

static vt_err slow_identity(void *ud, const void *in, void *out)
{
    bound *b = ud;
    if (b->slow_ns) {
        vt_err e = vt_sleep_ns(b->slow_ns);
        if (e)
            return e;
    }
    memcpy(out, in, 8);
    return VT_OK;
}

static void *bound_body(void *arg)
{
    bound *b = arg;
    b->c = counter_of(b->n);
    b->c.produced = &b->produced;
    b->c.consumed = &b->consumed;
    b->c.bound = BOUND;
    b->c.max_inflight = &b->max_inflight;
    b->c.violations = &b->violations;
    vt_stream_opts o8 = opts_rt(b->rt, 8), o4 = opts_cap(4), o5 = opts_cap(5), o2 = opts_cap(2);
    vt_stream *g = NULL, *m = NULL, *pm = NULL, *bt = NULL;
    if ((b->err = vt_stream_generate(&g, 8, count_gen, &b->c, &o8)) ||
        (b->err = vt_stream_map(&m, g, 8, slow_identity, b, &o4)) ||
        (b->err = vt_stream_par_map(&pm, m, 8, 3, 0, plus1, NULL, &o5)) ||
        (b->err = vt_stream_batch(&bt, pm, 4, -1, &o2)))
        return NULL;
    vt_batch x;
    vt_err e;
    while ((e = vt_stream_next(bt, &x, VT_FOREVER)) == VT_OK) {
        long consumed = atomic_fetch_add(&b->consumed, (long)x.count) + (long)x.count;
        if (atomic_load(&b->produced) - consumed > BOUND)
            atomic_fetch_add(&b->violations, 1);
        vt_batch_free(&x);
        b->batches++;
        if (b->nap_ns)
            vt_sleep_ns(b->nap_ns);
    }
    b->err = e == VT_ECLOSED ? VT_OK : e;
    vt_stream_free(bt);
    return NULL;
}

VT_TEST(memory_bound_virtual_clock)
{
    bound b;
    memset(&b, 0, sizeof b);
    b.nap_ns = VT_MS(1);
    b.n = 3000;
    vt_runtime_opts o = det_opts(vt_test_seed());
    VT_CHECK_OK(vt_runtime_main(&o, bound_body, &b, NULL));
    VT_CHECK_OK(b.err);
    VT_CHECK_EQ(atomic_load(&b.consumed), 3000);
    VT_CHECK_EQ(b.batches, 750);
    VT_CHECK_EQ(atomic_load(&b.violations), 0);
    /* The consumer sleeps while everything else runs until it blocks: the
     * chain fills to its bound, and not one element further. */
    VT_CHECK_EQ(atomic_load(&b.max_inflight), BOUND);
}

VT_TEST(memory_bound_slow_stage)
{
    for (size_t w = 0; w < NWORKER_COUNTS; w++)
        for (int thread = 0; thread < 2; thread++) {
            vt_runtime *rt = rt_new(worker_counts[w]);
            VT_CHECK_NOT_NULL(rt);
            bound b;
            memset(&b, 0, sizeof b);
            b.rt = rt;
            b.n = 600;
            b.slow_ns = VT_US(20);
            b.nap_ns = (w + (unsigned)thread) % 2 ? VT_US(100) : 0;
            party p;
            VT_CHECK(party_start(&p, rt, thread, bound_body, &b));
            VT_CHECK_EQ(party_join(&p), 0);
            VT_CHECK_OK(b.err);
            VT_CHECK_EQ(atomic_load(&b.consumed), 600);
            VT_CHECK_EQ(atomic_load(&b.violations), 0);
            VT_CHECK_LE(atomic_load(&b.max_inflight), BOUND);
            VT_CHECK_GE(atomic_load(&b.max_inflight), 1);
            vt_runtime_free(rt);
        }
}

/* ---- Allocation failures
 * ------------------------------------------------------------------------- Each builder, with the
 * k-th allocation failing: VT_ENOMEM with its input untouched (still the caller's, every element
 * still there), or a working stage; nothing leaks. */
enum {
    B_NEW,
    B_GENERATE,
    B_MAP,
    B_FILTER,
    B_BATCH,
    B_MERGE,
    B_PAR_ORDERED,
    B_PAR_UNORDERED,
    B_COUNT
};

static vt_stream *filled_source(vt_runtime *rt, uint64_t from, uint64_t n)
{
    vt_stream_opts o = opts_rt(rt, 16);
    vt_stream *s = NULL;
    if (vt_stream_new(&s, 8, &o))
        return NULL;
    for (uint64_t i = from; i < from + n; i++)
        vt_stream_push(s, &i, VT_NOW);
    vt_stream_end(s, VT_OK);
    return s;
}

/* Sum of a stream's u64 elements (batches opened), or -1 on a bad end. */
static long long sum_of(vt_stream *s, int batches, vt_err *end)
{
    long long sum = 0;
    vt_err e;
    if (batches) {
        vt_batch b;
        while ((e = vt_stream_next(s, &b, VT_FOREVER)) == VT_OK) {
            for (size_t i = 0; i < b.count; i++) {
                uint64_t v;
                memcpy(&v, (unsigned char *)b.items + 8 * i, 8);
                sum += (long long)v;
            }
            vt_batch_free(&b);
        }
    } else {
        uint64_t v;
        while ((e = vt_stream_next(s, &v, VT_FOREVER)) == VT_OK)
            sum += (long long)v;
    }
    *end = e;
    return sum;
}

static vt_err identity(void *ud, const void *in, void *out)
{
    (void)ud;
    memcpy(out, in, 8);
    return VT_OK;
}

VT_TEST(allocation_failures)
{
    long live = vt_test_alloc_live();
    for (int kind = 0; kind < B_COUNT; kind++) {
        int ok_in_a_row = 0, failures = 0;
        for (long k = 1; k < 1000 && ok_in_a_row < 3; k++) {
            vt_runtime *rt = rt_new(1);
            VT_CHECK_NOT_NULL(rt);
            vt_stream *in[2] = {filled_source(rt, 1, 10), filled_source(rt, 11, 10)};
            VT_CHECK_NOT_NULL(in[0]);
            VT_CHECK_NOT_NULL(in[1]);
            vt_stream_opts o = opts_rt(rt, 0);
            vt_stream *out = NULL;
            counter c = counter_of(20);
            c.next = 1;
            c.n = 21;
            vt_test_alloc_fail_at(k);
            vt_err e = VT_EINVAL;
            switch (kind) {
            case B_NEW:
                e = vt_stream_new(&out, 8, &o);
                break;
            case B_GENERATE:
                e = vt_stream_generate(&out, 8, count_gen, &c, &o);
                break;
            case B_MAP:
                e = vt_stream_map(&out, in[0], 8, identity, NULL, NULL);
                break;
            case B_FILTER:
                e = vt_stream_filter(&out, in[0], keep_all, NULL, NULL);
                break;
            case B_BATCH:
                e = vt_stream_batch(&out, in[0], 3, -1, NULL);
                break;
            case B_MERGE:
                e = vt_stream_merge(&out, in, 2, NULL);
                break;
            case B_PAR_ORDERED:
                e = vt_stream_par_map(&out, in[0], 8, 4, 0, identity, NULL, NULL);
                break;
            case B_PAR_UNORDERED:
                e = vt_stream_par_map(&out, in[0], 8, 4, 1, identity, NULL, NULL);
                break;
            }
            vt_test_alloc_fail_at(0);
            vt_err end = VT_EINVAL;
            if (e == VT_OK) {
                ok_in_a_row++;
                if (kind == B_NEW) {
                    VT_CHECK_OK(vt_stream_end(out, VT_OK));
                    VT_CHECK_EQ(sum_of(out, 0, &end), 0);
                    VT_CHECK_ERR(end, VT_ECLOSED);
                } else {
                    long long want = kind == B_MERGE || kind == B_GENERATE ? 210 : 55;
                    long long got = sum_of(out, kind == B_BATCH, &end);
                    if (kind == B_BATCH && end == VT_ENOMEM) {
                        VT_CHECK_LE(got, want); /* the batch fiber's own allocation failed */
                    } else {
                        VT_CHECK_ERR(end, VT_ECLOSED);
                        VT_CHECK_EQ(got, want);
                    }
                }
                vt_stream_free(out);
            } else {
                ok_in_a_row = 0;
                failures++;
                VT_CHECK_ERR(e, VT_ENOMEM);
                VT_CHECK_NULL(out);
            }
            /* The inputs a stage did not take are whole and still ours. */
            for (int i = 0; i < 2; i++) {
                int taken = e == VT_OK && (i == 0 ? kind >= B_MAP : kind == B_MERGE);
                if (taken)
                    continue;
                VT_CHECK_EQ(sum_of(in[i], 0, &end), i == 0 ? 55 : 155);
                VT_CHECK_ERR(end, VT_ECLOSED);
                vt_stream_free(in[i]);
            }
            vt_runtime_free(rt);
            VT_CHECK_EQ(vt_test_alloc_live(), live);
        }
        VT_CHECK_EQ(ok_in_a_row, 3);
        VT_CHECK_GT(failures, 0);
    }
}
