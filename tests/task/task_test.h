/* task_test.h — what the task layer's tests share: runtimes (threaded and
 * deterministic), a configurable body (counts its attempts, fails as told,
 * waits on a gate or until cancelled, records when it starts), the log of
 * the order tasks start in, the check of a cycle's message and a DOT
 * parser (Graphviz's cgraph). Include after vt_test.h.
 *
 * Bodies never use VT_CHECK (they return a vt_err, and run on workers):
 * they record what they saw, and the test checks it after the run. */
#ifndef VITTE_TASK_TEST_H
#define VITTE_TASK_TEST_H

#include <graphviz/cgraph.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vitte/async.h"
#include "vitte/task.h"

#define VT__TEST_UNUSED __attribute__((unused))

#define U2P(u) ((void *)(uintptr_t)(u))
#define P2U(p) ((uintptr_t)(p))

#define MS ((int64_t)1000000)

/* ---- Runtimes ---------------------------------------------------------------------- */

static VT__TEST_UNUSED vt_runtime *rt_new(unsigned workers)
{
    vt_runtime_opts o;
    vt_runtime_opts_init(&o);
    o.pool.workers = workers;
    vt_runtime *rt = NULL;
    return vt_runtime_new(&rt, &o) == VT_OK ? rt : NULL;
}

/* One worker driven by the thread that waits for the run, on a virtual
 * clock: backoffs and timeouts pass without real waiting. */
static VT__TEST_UNUSED vt_runtime *rt_det(uint64_t seed)
{
    vt_runtime_opts o;
    vt_runtime_opts_init(&o);
    o.pool.deterministic = 1;
    o.pool.seed = seed;
    vt_runtime *rt = NULL;
    return vt_runtime_new(&rt, &o) == VT_OK ? rt : NULL;
}

/* ---- Small waits that work from a sync body (a worker thread) or an async
 * one (a fiber) ----------------------------------------------------------------------- */

/* 200 µs: a nap for a thread, a (virtual, in deterministic mode) sleep for a
 * fiber. VT_ECANCELED when the fiber was cancelled. */
static VT__TEST_UNUSED vt_err pause_any(void)
{
    if (vt_fiber_in())
        return vt_sleep_ns(200000);
    struct timespec ts = {0, 200000};
    nanosleep(&ts, NULL);
    return VT_OK;
}

/* A plain thread's nap, for the test thread's polling loops. */
static VT__TEST_UNUSED void nap(void)
{
    struct timespec ts = {0, 200000};
    nanosleep(&ts, NULL);
}

static VT__TEST_UNUSED void wait_for(_Atomic long *v, long want)
{
    while (atomic_load(v) < want)
        nap();
}

typedef struct gate {
    _Atomic int open;
} gate;

static VT__TEST_UNUSED void gate_open(gate *g)
{
    atomic_store(&g->open, 1);
}

/* Waits until g opens (1), or until ctx (may be NULL) is cancelled (0). */
static VT__TEST_UNUSED int gate_wait(gate *g, vt_task_ctx *ctx)
{
    while (!atomic_load(&g->open)) {
        if (ctx && vt_ctx_cancelled(ctx))
            return 0;
        if (pause_any() == VT_ECANCELED)
            return 0;
    }
    return 1;
}

/* ---- The order tasks start in -------------------------------------------------------- */

#define ORDER_CAP 65536

typedef struct order {
    _Atomic size_t n;
    const vt_task *t[ORDER_CAP];
} order;

static VT__TEST_UNUSED order *order_new(void)
{
    return calloc(1, sizeof(order));
}

static VT__TEST_UNUSED void order_push(order *o, const vt_task *t)
{
    size_t i = atomic_fetch_add(&o->n, 1);
    if (i < ORDER_CAP)
        o->t[i] = t;
}

static VT__TEST_UNUSED size_t order_len(order *o)
{
    size_t n = atomic_load(&o->n);
    return n < ORDER_CAP ? n : ORDER_CAP;
}

/* Position of t's first start, -1 if it never started. */
static VT__TEST_UNUSED long order_pos(order *o, const vt_task *t)
{
    size_t n = order_len(o);
    for (size_t i = 0; i < n; i++)
        if (o->t[i] == t)
            return (long)i;
    return -1;
}

/* ---- A configurable body --------------------------------------------------------------
 * tb is what one task does: the body "tb_body" (sync or async alike) reads
 * it. Fields after the marker are what the body records. */

#define TB_TIMES 32

typedef struct tb {
    order *log;              /* pushed at each attempt's start (NULL: none) */
    gate *gate;              /* waited for first (NULL: none) */
    int until_cancelled;     /* 1: waits (sync: polls vt_ctx_cancelled; async:
                                sleeps) until cancelled, then returns VT_ECANCELED */
    int ok_when_cancelled;   /* with until_cancelled: returns VT_OK instead */
    unsigned fail_attempts;  /* attempts 1..fail_attempts fail */
    vt_err fail_with;        /* their code; VT_EFAILED goes through vt_ctx_fail */
    const char *result;      /* set as the task's result when not NULL */
    vt_pool *pool;           /* when set: attempt start times (vt_pool_now) */
    int64_t sleep_ns;        /* async: sleeps this long first (0: no) */
    /* ---- recorded ---- */
    _Atomic int starts, ends, cancels_seen;
    vt_err sleep_err;        /* what the last sleep returned */
    int64_t at[TB_TIMES];    /* vt_pool_now at attempt k+1's start */
    int64_t woke_at;         /* vt_pool_now when the last sleep returned */
    unsigned attempt_seen[TB_TIMES];
} tb;

static VT__TEST_UNUSED vt_err tb_body(vt_task_ctx *ctx, void *data)
{
    tb *b = data;
    int k = atomic_fetch_add(&b->starts, 1);
    if (k < TB_TIMES) {
        b->attempt_seen[k] = vt_ctx_attempt(ctx);
        if (b->pool)
            b->at[k] = vt_pool_now(b->pool);
    }
    if (b->log)
        order_push(b->log, vt_ctx_task(ctx));
    vt_err ret = VT_OK;
    if (b->gate && !gate_wait(b->gate, ctx)) {
        atomic_fetch_add(&b->cancels_seen, 1);
        ret = VT_ECANCELED;
        goto out;
    }
    if (b->sleep_ns > 0) {
        b->sleep_err = vt_fiber_in() ? vt_sleep_ns(b->sleep_ns) : VT_ESTATE;
        if (b->pool)
            b->woke_at = vt_pool_now(b->pool);
        if (b->sleep_err) {
            atomic_fetch_add(&b->cancels_seen, b->sleep_err == VT_ECANCELED);
            ret = b->sleep_err;
            goto out;
        }
    }
    if (b->until_cancelled) {
        for (;;) {
            if (vt_ctx_cancelled(ctx))
                break;
            vt_err e = vt_fiber_in() ? vt_sleep_ms(1000000) : pause_any();
            if (b->pool)
                b->woke_at = vt_pool_now(b->pool);
            b->sleep_err = e;
            if (e == VT_ECANCELED)
                break;
        }
        atomic_fetch_add(&b->cancels_seen, 1);
        ret = b->ok_when_cancelled ? VT_OK : VT_ECANCELED;
        goto out;
    }
    if (vt_ctx_attempt(ctx) <= b->fail_attempts) {
        if (b->fail_with == VT_EFAILED || b->fail_with == VT_OK)
            ret = vt_ctx_fail(ctx, "boom %s attempt %u", vt_task_name(vt_ctx_task(ctx)),
                              vt_ctx_attempt(ctx));
        else
            ret = b->fail_with;
        goto out;
    }
    if (b->result)
        ret = vt_ctx_set_result(ctx, b->result, strlen(b->result) + 1);
out:
    atomic_fetch_add(&b->ends, 1);
    return ret;
}

/* A body that does nothing. */
static VT__TEST_UNUSED vt_err body_ok(vt_task_ctx *ctx, void *data)
{
    (void)ctx;
    (void)data;
    return VT_OK;
}

/* Counts its runs in *(_Atomic long *)data. */
static VT__TEST_UNUSED vt_err body_count(vt_task_ctx *ctx, void *data)
{
    (void)ctx;
    atomic_fetch_add((_Atomic long *)data, 1);
    return VT_OK;
}

/* Pushes its task on the order log data. */
static VT__TEST_UNUSED vt_err body_log(vt_task_ctx *ctx, void *data)
{
    order_push(data, vt_ctx_task(ctx));
    return VT_OK;
}

/* Fails with "boom". */
static VT__TEST_UNUSED vt_err body_fail(vt_task_ctx *ctx, void *data)
{
    (void)data;
    return vt_ctx_fail(ctx, "boom");
}

/* ---- Checks on messages ---------------------------------------------------------------- */

/* 1 when msg is "cycle: " and the n tasks of names[] in edge order, read
 * from any one of them and closing on it: for {a, b, c}, "cycle: a -> b ->
 * c -> a" or "cycle: b -> c -> a -> b" or "cycle: c -> a -> b -> c". */
static VT__TEST_UNUSED int cycle_msg_is(const char *msg, const char *const *names, size_t n)
{
    if (!msg || n == 0)
        return 0;
    size_t cap = 16;
    for (size_t i = 0; i < n; i++)
        cap += strlen(names[i]) + 4;
    cap += 64;
    char *want = malloc(cap);
    if (!want)
        return 0;
    int found = 0;
    for (size_t r = 0; r < n && !found; r++) {
        size_t len = (size_t)snprintf(want, cap, "cycle: ");
        for (size_t i = 0; i <= n; i++)
            len += (size_t)snprintf(want + len, cap - len, i ? " -> %s" : "%s", names[(r + i) % n]);
        found = strcmp(want, msg) == 0;
    }
    free(want);
    return found;
}

/* 1 when s contains sub. */
static VT__TEST_UNUSED int has(const char *s, const char *sub)
{
    return s && sub && strstr(s, sub) != NULL;
}

/* ---- DOT --------------------------------------------------------------------------------- */

/* g written as DOT and parsed by cgraph (agclose it), NULL when either fails.
 * *err (may be NULL) gets what vt_graph_write_dot returned. */
static VT__TEST_UNUSED Agraph_t *dot_of(vt_graph *g, vt_err *err, char **text)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    vt_err e = vt_graph_write_dot(g, f);
    fclose(f);
    if (err)
        *err = e;
    Agraph_t *ag = e == VT_OK && buf ? agmemread(buf) : NULL;
    if (text)
        *text = buf;
    else
        free(buf);
    return ag;
}

/* The node's fill colour, "" when it has none. */
static VT__TEST_UNUSED const char *dot_fill(Agraph_t *ag, const char *node)
{
    Agnode_t *n = agnode(ag, (char *)node, 0);
    if (!n)
        return NULL;
    char *c = agget(n, (char *)"fillcolor");
    return c ? c : "";
}

/* ---- Summaries ---------------------------------------------------------------------------- */

static VT__TEST_UNUSED vt_run_summary summary_of(const vt_graph *g)
{
    vt_run_summary s;
    memset(&s, 0xff, sizeof s);
    if (vt_graph_summary(g, &s) != VT_OK)
        memset(&s, 0xff, sizeof s);
    return s;
}

#endif
