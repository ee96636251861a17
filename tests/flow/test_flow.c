/* test_flow.c — value graphs: the seed's example, diamond, wide and deep
 * graphs, every value type and its ownership, typed reading and its
 * errors, retries, async nodes, failures (fail-fast, keep-going, skipped
 * dependants), cancellation, cycles, every building error and NULL, the
 * monitor's events mapped back to nodes, DOT, resuming a flow from a
 * store, allocation failures, re-runs. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vt_test.h"
#include "flow_test.h"

/* ---- Bodies --------------------------------------------------------------------------- */

/* The sum of every input, ints. */
static vt_err add(vt_flow_ctx *ctx, void *ud)
{
    (void)ud;
    int64_t sum = 0;
    for (size_t i = 0; i < vt_flow_ctx_inputs(ctx); i++) {
        int64_t v;
        vt_err e = vt_flow_in_int(ctx, i, &v);
        if (e)
            return e;
        sum += v;
    }
    return vt_flow_set_int(ctx, sum);
}

/* Input 0 times (intptr_t)ud. */
static vt_err times(vt_flow_ctx *ctx, void *ud)
{
    int64_t v;
    vt_err e = vt_flow_in_int(ctx, 0, &v);
    return e ? e : vt_flow_set_int(ctx, v * (int64_t)(intptr_t)ud);
}

static vt_err plus_one(vt_flow_ctx *ctx, void *ud)
{
    (void)ud;
    int64_t v = 0;
    vt_err e = vt_flow_ctx_inputs(ctx) ? vt_flow_in_int(ctx, 0, &v) : VT_OK;
    return e ? e : vt_flow_set_int(ctx, v + 1);
}

/* A node that counts its runs and fails while *fails > 0. */
typedef struct counted {
    _Atomic int runs;
    _Atomic int fails;
    int64_t value;
} counted;

static vt_err counted_int(vt_flow_ctx *ctx, void *ud)
{
    counted *c = ud;
    atomic_fetch_add(&c->runs, 1);
    if (atomic_load(&c->fails) > 0) {
        atomic_fetch_sub(&c->fails, 1);
        return vt_ctx_fail(vt_flow_ctx_task(ctx), "not yet (%d to go)", atomic_load(&c->fails));
    }
    return vt_flow_set_int(ctx, c->value);
}

/* ---- The seed's example ----------------------------------------------------------------- */

VT_TEST(seed_sum_is_three)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_flow *f;
    VT_CHECK_OK(vt_flow_new(&f, "seed"));
    vt_flow_node *a = vt_flow_add_int(f, "a", 1);
    vt_flow_node *b = vt_flow_add_int(f, "b", 2);
    vt_flow_node *sum = vt_flow_add(f, "sum", add, NULL, VT_FLOW_INPUTS(a, b));
    VT_CHECK_NOT_NULL(a);
    VT_CHECK_NOT_NULL(b);
    VT_CHECK_NOT_NULL(sum);
    VT_CHECK_EQ(vt_flow_size(f), 3);
    VT_CHECK_EQ(vt_flow_node_inputs(sum), 2);
    VT_CHECK_PTR_EQ(vt_flow_node_input(sum, 0), a);
    VT_CHECK_PTR_EQ(vt_flow_node_input(sum, 1), b);
    VT_CHECK_NULL(vt_flow_node_input(sum, 2));
    VT_CHECK_STR_EQ(vt_flow_node_name(sum), "sum");
    VT_CHECK_PTR_EQ(vt_flow_node_flow(sum), f);
    VT_CHECK_OK(vt_flow_run(f, rt, NULL));
    int64_t v = 0;
    VT_CHECK_OK(vt_flow_node_get_int(sum, &v));
    VT_CHECK_EQ(v, 3);
    VT_CHECK_OK(vt_flow_node_get_int(a, &v));
    VT_CHECK_EQ(v, 1);
    VT_CHECK_EQ(vt_flow_node_state(sum), VT_TASK_SUCCEEDED);
    vt_value_type t;
    VT_CHECK_OK(vt_flow_node_type(sum, &t));
    VT_CHECK_EQ(t, VT_VALUE_INT);
    VT_CHECK_STR_EQ(vt_flow_error(f), "");
    vt_flow_free(f);
    vt_runtime_free(rt);
}

/* ---- Shapes ------------------------------------------------------------------------------- */

VT_TEST(diamond)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_flow *f;
    VT_CHECK_OK(vt_flow_new(&f, "diamond"));
    vt_flow_node *a = vt_flow_add_int(f, "a", 7);
    vt_flow_node *l = vt_flow_add(f, "l", times, (void *)(intptr_t)2, VT_FLOW_INPUTS(a));
    vt_flow_node *r = vt_flow_add_async(f, "r", times, (void *)(intptr_t)3, VT_FLOW_INPUTS(a));
    vt_flow_node *d = vt_flow_add(f, "d", add, NULL, VT_FLOW_INPUTS(l, r, a));
    VT_CHECK_NOT_NULL(d);
    for (int run = 0; run < 3; run++) {
        VT_CHECK_OK(vt_flow_run(f, rt, NULL));
        int64_t v;
        VT_CHECK_OK(vt_flow_node_get_int(d, &v));
        VT_CHECK_EQ(v, 14 + 21 + 7);
    }
    vt_flow_free(f);
    vt_runtime_free(rt);
}

VT_TEST(wide_and_deep)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_flow *f;
    VT_CHECK_OK(vt_flow_new(&f, "wide"));
    enum {
        WIDE = 2000,
        DEEP = 5000
    };
    vt_flow_node **leaves = malloc(WIDE * sizeof *leaves);
    VT_CHECK_NOT_NULL(leaves);
    int64_t want = 0;
    for (int i = 0; i < WIDE; i++) {
        leaves[i] = vt_flow_add_int(f, NULL, i);
        want += i;
    }
    vt_flow_node *total = vt_flow_add(f, "total", add, NULL, leaves, WIDE);
    VT_CHECK_NOT_NULL(total);
    VT_CHECK_EQ(vt_flow_node_inputs(total), WIDE);
    /* A chain hanging off the total, the last one added input by input. */
    vt_flow_node *prev = total;
    for (int i = 0; i < DEEP; i++) {
        vt_flow_node *n = vt_flow_add(f, NULL, plus_one, NULL, NULL, 0);
        VT_CHECK_OK(vt_flow_node_add_input(n, prev));
        prev = n;
    }
    VT_CHECK_OK(vt_flow_run(f, rt, NULL));
    int64_t v;
    VT_CHECK_OK(vt_flow_node_get_int(total, &v));
    VT_CHECK_EQ(v, want);
    VT_CHECK_OK(vt_flow_node_get_int(prev, &v));
    VT_CHECK_EQ(v, want + DEEP);
    /* Unnamed nodes are found by their order of addition. */
    VT_CHECK_PTR_EQ(vt_flow_find(f, "#5"), leaves[5]);
    VT_CHECK_STR_EQ(vt_flow_node_name(leaves[5]), "#5");
    VT_CHECK_PTR_EQ(vt_flow_find(f, "total"), total);
    VT_CHECK_NULL(vt_flow_find(f, "nobody"));
    free(leaves);
    vt_flow_free(f);
    vt_runtime_free(rt);
}

/* ---- Values and their types ------------------------------------------------------------------ */

static _Atomic int dtor_calls;

static void count_free(void *p)
{
    atomic_fetch_add(&dtor_calls, 1);
    free(p);
}

static vt_err make_values(vt_flow_ctx *ctx, void *ud)
{
    int which = (int)(intptr_t)ud;
    switch (which) {
    case 0:
        return vt_flow_set_double(ctx, 2.5);
    case 1:
        return vt_flow_set_str(ctx, "hello");
    case 2: {
        unsigned char bytes[5] = {0, 1, 2, 0, 255};
        return vt_flow_set_bytes(ctx, bytes, sizeof bytes);
    }
    case 3: {
        int *p = malloc(sizeof *p);
        if (!p)
            return VT_ENOMEM;
        *p = 42;
        /* The first value set is replaced (and freed) by the second. */
        int *q = malloc(sizeof *q);
        if (!q) {
            free(p);
            return VT_ENOMEM;
        }
        *q = 43;
        vt_err e = vt_flow_set_ptr(ctx, q, count_free);
        if (e)
            return e;
        return vt_flow_set_ptr(ctx, p, count_free);
    }
    default:
        return VT_OK; /* no value: VT_VALUE_NONE */
    }
}

/* Reads every input with its own type and checks them: returns the
 * first mismatch as VT_EFAILED. */
static vt_err read_values(vt_flow_ctx *ctx, void *ud)
{
    (void)ud;
    double d;
    const char *s;
    size_t len;
    const void *b;
    void *p;
    vt_value_type t;
    vt_err e;
    if ((e = vt_flow_in_double(ctx, 0, &d)) || d != 2.5)
        return e ? e : VT_EFAILED;
    if ((e = vt_flow_in_str(ctx, 1, &s, &len)) || strcmp(s, "hello") || len != 5)
        return e ? e : VT_EFAILED;
    if ((e = vt_flow_in_bytes(ctx, 2, &b, &len)) || len != 5 ||
        ((const unsigned char *)b)[4] != 255)
        return e ? e : VT_EFAILED;
    if ((e = vt_flow_in_ptr(ctx, 3, &p)) || *(int *)p != 42)
        return e ? e : VT_EFAILED;
    if ((e = vt_flow_in_type(ctx, 4, &t)) || t != VT_VALUE_NONE)
        return e ? e : VT_EFAILED;
    if (vt_flow_in_int(ctx, 5, NULL) != VT_EINVAL || vt_flow_in_type(ctx, 5, &t) != VT_ERANGE)
        return VT_EFAILED;
    return vt_flow_set_str(ctx, "read");
}

VT_TEST(every_value_type)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_flow *f;
    VT_CHECK_OK(vt_flow_new(&f, "values"));
    vt_flow_node *n[5];
    for (int i = 0; i < 5; i++)
        n[i] = vt_flow_add(f, NULL, make_values, (void *)(intptr_t)i, NULL, 0);
    vt_flow_node *r = vt_flow_add(f, "reader", read_values, NULL, n, 5);
    VT_CHECK_NOT_NULL(r);
    atomic_store(&dtor_calls, 0);
    VT_CHECK_OK(vt_flow_run(f, rt, NULL));
    VT_CHECK_EQ(atomic_load(&dtor_calls), 1); /* the replaced pointer */
    double d;
    VT_CHECK_OK(vt_flow_node_get_double(n[0], &d));
    VT_CHECK(d == 2.5);
    const char *s;
    size_t len;
    VT_CHECK_OK(vt_flow_node_get_str(n[1], &s, &len));
    VT_CHECK_STR_EQ(s, "hello");
    VT_CHECK_EQ(len, 5);
    VT_CHECK_OK(vt_flow_node_get_str(n[1], &s, NULL));
    const void *b;
    VT_CHECK_OK(vt_flow_node_get_bytes(n[2], &b, &len));
    VT_CHECK_EQ(len, 5);
    VT_CHECK_EQ(((const unsigned char *)b)[0], 0);
    void *p;
    VT_CHECK_OK(vt_flow_node_get_ptr(n[3], &p));
    VT_CHECK_EQ(*(int *)p, 42);
    vt_value_type t;
    VT_CHECK_OK(vt_flow_node_type(n[4], &t));
    VT_CHECK_EQ(t, VT_VALUE_NONE);
    VT_CHECK_OK(vt_flow_node_get_str(r, &s, NULL));
    VT_CHECK_STR_EQ(s, "read");
    /* A new run drops the values of the last one: the pointer goes. */
    VT_CHECK_OK(vt_flow_run(f, rt, NULL));
    VT_CHECK_EQ(atomic_load(&dtor_calls), 3);
    vt_flow_free(f);
    VT_CHECK_EQ(atomic_load(&dtor_calls), 4);
    vt_runtime_free(rt);
}

VT_TEST(constant_nodes)
{
    vt_runtime *rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    vt_flow *f;
    VT_CHECK_OK(vt_flow_new(&f, NULL));
    VT_CHECK_STR_EQ(vt_flow_name(f), "flow");
    char text[] = "copied";
    unsigned char blob[3] = {9, 8, 7};
    vt_flow_node *i = vt_flow_add_int(f, "i", INT64_MIN);
    vt_flow_node *d = vt_flow_add_double(f, "d", -0.125);
    vt_flow_node *s = vt_flow_add_str(f, "s", text);
    vt_flow_node *b = vt_flow_add_bytes(f, "b", blob, sizeof blob);
    vt_flow_node *e = vt_flow_add_bytes(f, "empty", NULL, 0);
    vt_flow_node *es = vt_flow_add_str(f, "es", "");
    VT_CHECK_NOT_NULL(e);
    VT_CHECK_NOT_NULL(es);
    text[0] = 'X'; /* the flow kept its own copy */
    blob[0] = 0;
    VT_CHECK_OK(vt_flow_run(f, rt, NULL));
    int64_t iv;
    double dv;
    const char *sv;
    const void *bv;
    size_t len;
    VT_CHECK_OK(vt_flow_node_get_int(i, &iv));
    VT_CHECK_EQ(iv, INT64_MIN);
    VT_CHECK_OK(vt_flow_node_get_double(d, &dv));
    VT_CHECK(dv == -0.125);
    VT_CHECK_OK(vt_flow_node_get_str(s, &sv, &len));
    VT_CHECK_STR_EQ(sv, "copied");
    VT_CHECK_OK(vt_flow_node_get_bytes(b, &bv, &len));
    VT_CHECK_EQ(len, 3);
    VT_CHECK_EQ(((const unsigned char *)bv)[0], 9);
    VT_CHECK_OK(vt_flow_node_get_bytes(e, &bv, &len));
    VT_CHECK_EQ(len, 0);
    VT_CHECK_OK(vt_flow_node_get_str(es, &sv, &len));
    VT_CHECK_STR_EQ(sv, "");
    VT_CHECK_EQ(len, 0);
    vt_flow_free(f);
    vt_runtime_free(rt);
}

/* ---- Typed errors
 * -------------------------------------------------------------------------------- */

static vt_err read_int_of_str(vt_flow_ctx *ctx, void *ud)
{
    (void)ud;
    int64_t v;
    vt_err e = vt_flow_in_int(ctx, 0, &v);
    if (e)
        return e;
    return vt_flow_set_int(ctx, v);
}

VT_TEST(typed_value_errors)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_flow *f;
    VT_CHECK_OK(vt_flow_new(&f, "types"));
    vt_flow_node *s = vt_flow_add_str(f, "text", "not a number");
    vt_flow_node *bad = vt_flow_add(f, "bad", read_int_of_str, NULL, VT_FLOW_INPUTS(s));
    vt_flow_node *after = vt_flow_add(f, "after", plus_one, NULL, VT_FLOW_INPUTS(bad));
    vt_flow_node *alone = vt_flow_add_int(f, "alone", 5);

    /* Before any run. */
    int64_t v;
    VT_CHECK_ERR(vt_flow_node_get_int(alone, &v), VT_ESTATE);
    VT_CHECK(strstr(vt_flow_error(f), "\"alone\"") != NULL);
    VT_CHECK(strstr(vt_flow_error(f), "has not run") != NULL);
    VT_CHECK_ERR(vt_flow_wait(f, VT_NOW), VT_ESTATE);

    vt_run_opts o = {.on_failure = VT_KEEP_GOING};
    VT_CHECK_ERR(vt_flow_run(f, rt, &o), VT_EFAILED);
    VT_CHECK(strstr(vt_flow_error(f), "bad") != NULL);

    /* The body's read of a string as an int: VT_ETYPE, and a message that
     * names both nodes. */
    VT_CHECK_EQ(vt_flow_node_state(bad), VT_TASK_FAILED);
    const char *msg;
    VT_CHECK_ERR(vt_task_error(vt_flow_node_task(bad), &msg), VT_ETYPE);
    VT_CHECK(strstr(msg, "\"bad\"") != NULL);
    VT_CHECK(strstr(msg, "\"text\"") != NULL);
    VT_CHECK(strstr(msg, "string") != NULL);

    /* Reading a failed node, a skipped one, and the wrong type. */
    VT_CHECK_ERR(vt_flow_node_get_int(bad, &v), VT_ESTATE);
    VT_CHECK(strstr(vt_flow_error(f), "\"bad\"") != NULL);
    VT_CHECK(strstr(vt_flow_error(f), "failed") != NULL);
    VT_CHECK_EQ(vt_flow_node_state(after), VT_TASK_SKIPPED);
    VT_CHECK_ERR(vt_flow_node_get_int(after, &v), VT_ESTATE);
    VT_CHECK(strstr(vt_flow_error(f), "skipped") != NULL);
    const char *str;
    VT_CHECK_ERR(vt_flow_node_get_str(alone, &str, NULL), VT_ETYPE);
    VT_CHECK(strstr(vt_flow_error(f), "\"alone\" holds an int, not a string") != NULL);
    double d;
    VT_CHECK_ERR(vt_flow_node_get_double(s, &d), VT_ETYPE);
    const void *bytes;
    VT_CHECK_ERR(vt_flow_node_get_bytes(s, &bytes, NULL), VT_ETYPE);
    void *p;
    VT_CHECK_ERR(vt_flow_node_get_ptr(alone, &p), VT_ETYPE);
    /* A successful call clears this thread's message. */
    VT_CHECK_OK(vt_flow_node_get_int(alone, &v));
    VT_CHECK(strstr(vt_flow_error(f), "\"alone\"") == NULL);
    vt_flow_free(f);
    vt_runtime_free(rt);
}

/* ---- Retries, async nodes, timeouts
 * ---------------------------------------------------------------- */

VT_TEST(retries_with_backoff)
{
    /* The deterministic runtime's virtual clock: backoffs take no time. */
    vt_runtime *rt = rt_det(7);
    VT_CHECK_NOT_NULL(rt);
    vt_flow *f;
    VT_CHECK_OK(vt_flow_new(&f, "retry"));
    counted c = {.fails = 2, .value = 11};
    vt_flow_node *flaky = vt_flow_add(f, "flaky", counted_int, &c, NULL, 0);
    vt_flow_node *next = vt_flow_add(f, "next", plus_one, NULL, VT_FLOW_INPUTS(flaky));
    vt_retry r = {.max_attempts = 3, .backoff = VT_BACKOFF_EXPONENTIAL, .delay_ns = VT_MS(10)};
    VT_CHECK_OK(vt_flow_node_set_retry(flaky, &r));
    VT_CHECK_OK(vt_flow_run(f, rt, NULL));
    VT_CHECK_EQ(atomic_load(&c.runs), 3);
    VT_CHECK_EQ(vt_task_attempts(vt_flow_node_task(flaky)), 3);
    int64_t v;
    VT_CHECK_OK(vt_flow_node_get_int(next, &v));
    VT_CHECK_EQ(v, 12);
    /* Attempts spent: the node fails, with its last message. */
    atomic_store(&c.fails, 5);
    atomic_store(&c.runs, 0);
    VT_CHECK_ERR(vt_flow_run(f, rt, NULL), VT_EFAILED);
    VT_CHECK_EQ(atomic_load(&c.runs), 3);
    VT_CHECK_ERR(vt_flow_node_get_int(flaky, &v), VT_ESTATE);
    VT_CHECK(strstr(vt_flow_error(f), "not yet") != NULL);
    VT_CHECK_ERR(vt_flow_node_set_retry(flaky, &(vt_retry){.max_attempts = 5000}), VT_EINVAL);
    VT_CHECK_ERR(vt_flow_node_set_retry(NULL, &r), VT_EINVAL);
    VT_CHECK_OK(vt_flow_node_set_retry(flaky, NULL));
    vt_flow_free(f);
    vt_runtime_free(rt);
}

static vt_err slow_async(vt_flow_ctx *ctx, void *ud)
{
    int64_t ns = (int64_t)(intptr_t)ud;
    vt_err e = vt_sleep_ns(ns);
    if (e)
        return e;
    return plus_one(ctx, NULL);
}

VT_TEST(async_nodes_and_timeouts)
{
    vt_runtime *rt = rt_det(3);
    VT_CHECK_NOT_NULL(rt);
    vt_flow *f;
    VT_CHECK_OK(vt_flow_new(&f, "async"));
    vt_flow_node *a = vt_flow_add_int(f, "a", 1);
    vt_flow_node *slow =
        vt_flow_add_async(f, "slow", slow_async, (void *)(intptr_t)VT_SEC(5), VT_FLOW_INPUTS(a));
    vt_flow_node *quick =
        vt_flow_add_async(f, "quick", slow_async, (void *)(intptr_t)VT_MS(1), VT_FLOW_INPUTS(a));
    VT_CHECK_OK(vt_flow_node_set_timeout(slow, VT_SEC(1)));
    VT_CHECK_ERR(vt_flow_node_set_timeout(slow, -1), VT_EINVAL);
    VT_CHECK_ERR(vt_flow_node_set_timeout(NULL, 1), VT_EINVAL);
    vt_run_opts o = {.on_failure = VT_KEEP_GOING};
    VT_CHECK_ERR(vt_flow_run(f, rt, &o), VT_EFAILED);
    VT_CHECK_ERR(vt_task_error(vt_flow_node_task(slow), NULL), VT_ETIMEDOUT);
    int64_t v;
    VT_CHECK_OK(vt_flow_node_get_int(quick, &v));
    VT_CHECK_EQ(v, 2);
    VT_CHECK_ERR(vt_flow_node_get_int(slow, &v), VT_ESTATE);
    VT_CHECK(strstr(vt_flow_error(f), "deadline passed") != NULL);
    vt_flow_free(f);
    vt_runtime_free(rt);
}

/* ---- Failures and cancellation
 * ------------------------------------------------------------------------- */

static vt_err always_fails(vt_flow_ctx *ctx, void *ud)
{
    (void)ud;
    /* A value set before failing is dropped with the attempt. */
    int *p = malloc(sizeof *p);
    if (p && vt_flow_set_ptr(ctx, p, count_free))
        free(p);
    return vt_ctx_fail(vt_flow_ctx_task(ctx), "broken on purpose");
}

VT_TEST(fail_fast_and_keep_going)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_flow *f;
    VT_CHECK_OK(vt_flow_new(&f, "fail"));
    vt_flow_node *bad = vt_flow_add(f, "bad", always_fails, NULL, NULL, 0);
    vt_flow_node *dep = vt_flow_add(f, "dep", plus_one, NULL, VT_FLOW_INPUTS(bad));
    vt_flow_node *other = vt_flow_add_int(f, "other", 3);
    vt_flow_node *other2 = vt_flow_add(f, "other2", plus_one, NULL, VT_FLOW_INPUTS(other));
    atomic_store(&dtor_calls, 0);
    vt_run_opts o = {.on_failure = VT_KEEP_GOING};
    VT_CHECK_ERR(vt_flow_run(f, rt, &o), VT_EFAILED);
    VT_CHECK_EQ(atomic_load(&dtor_calls), 1);
    VT_CHECK(strstr(vt_flow_error(f), "\"bad\" failed") != NULL);
    VT_CHECK(strstr(vt_flow_error(f), "broken on purpose") != NULL);
    VT_CHECK_EQ(vt_flow_node_state(dep), VT_TASK_SKIPPED);
    int64_t v;
    VT_CHECK_OK(vt_flow_node_get_int(other2, &v));
    VT_CHECK_EQ(v, 4);
    vt_run_summary sum;
    VT_CHECK_OK(vt_graph_summary(vt_flow_graph(f), &sum));
    VT_CHECK_EQ(sum.failed, 1);
    VT_CHECK_EQ(sum.skipped, 1);
    VT_CHECK_EQ(sum.succeeded, 2);
    /* Fail fast: the default. Whatever did not start is cancelled. */
    VT_CHECK_ERR(vt_flow_run(f, rt, NULL), VT_EFAILED);
    VT_CHECK_EQ(vt_flow_node_state(bad), VT_TASK_FAILED);
    vt_flow_free(f);
    vt_runtime_free(rt);
}

static vt_err sleep_forever(vt_flow_ctx *ctx, void *ud)
{
    _Atomic int *started = ud;
    atomic_store(started, 1);
    vt_err e = vt_sleep_ms(1000000);
    return e ? e : vt_flow_set_int(ctx, 0);
}

VT_TEST(cancel_and_busy)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_flow *f;
    VT_CHECK_OK(vt_flow_new(&f, "cancel"));
    _Atomic int started = 0;
    vt_flow_node *sl = vt_flow_add_async(f, "sleeper", sleep_forever, &started, NULL, 0);
    vt_flow_node *after = vt_flow_add(f, "after", plus_one, NULL, VT_FLOW_INPUTS(sl));
    VT_CHECK_OK(vt_flow_start(f, rt, NULL));
    while (!atomic_load(&started))
        nap();
    /* While it runs: no building, no second start, no reading. */
    int64_t v;
    VT_CHECK_ERR(vt_flow_node_get_int(after, &v), VT_EBUSY);
    VT_CHECK(strstr(vt_flow_error(f), "runs") != NULL);
    VT_CHECK_NULL(vt_flow_add_int(f, "late", 1));
    VT_CHECK_ERR(vt_flow_node_add_input(after, sl), VT_EBUSY);
    VT_CHECK_ERR(vt_flow_node_set_fingerprint(after, "k", 1), VT_EBUSY);
    VT_CHECK_ERR(vt_flow_start(f, rt, NULL), VT_EBUSY);
    VT_CHECK_ERR(vt_flow_validate(f), VT_EBUSY);
    VT_CHECK_ERR(vt_flow_wait(f, VT_NOW), VT_ETIMEDOUT);
    VT_CHECK_OK(vt_flow_cancel(f));
    VT_CHECK_ERR(vt_flow_wait(f, VT_FOREVER), VT_ECANCELED);
    VT_CHECK_EQ(vt_flow_node_state(after), VT_TASK_SKIPPED);
    /* VT_EBUSY was not remembered: the flow runs again. */
    VT_CHECK_OK(vt_flow_validate(f));
    VT_CHECK_EQ(vt_flow_size(f), 2);
    VT_CHECK_OK(vt_flow_cancel(f)); /* not running: nothing to do */
    vt_flow_free(f);
    vt_runtime_free(rt);
}

/* A body that waits for its own flow: VT_EDEADLK. */
static vt_err wait_self(vt_flow_ctx *ctx, void *ud)
{
    vt_err e = vt_flow_wait(ud, VT_FOREVER);
    return vt_flow_set_int(ctx, e);
}

VT_TEST(wait_from_a_body)
{
    vt_runtime *rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    vt_flow *f;
    VT_CHECK_OK(vt_flow_new(&f, "self"));
    vt_flow_node *n = vt_flow_add(f, "n", wait_self, f, NULL, 0);
    VT_CHECK_OK(vt_flow_run(f, rt, NULL));
    int64_t v;
    VT_CHECK_OK(vt_flow_node_get_int(n, &v));
    VT_CHECK_EQ(v, VT_EDEADLK);
    vt_flow_free(f);
    vt_runtime_free(rt);
}

/* ---- Building errors
 * --------------------------------------------------------------------------------- */

VT_TEST(cycle_is_named)
{
    vt_runtime *rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    vt_flow *f;
    VT_CHECK_OK(vt_flow_new(&f, "cycle"));
    vt_flow_node *a = vt_flow_add(f, "a", plus_one, NULL, NULL, 0);
    vt_flow_node *b = vt_flow_add(f, "b", plus_one, NULL, VT_FLOW_INPUTS(a));
    vt_flow_node *c = vt_flow_add(f, "c", plus_one, NULL, VT_FLOW_INPUTS(b));
    VT_CHECK_OK(vt_flow_node_add_input(a, c));
    VT_CHECK_ERR(vt_flow_validate(f), VT_ECYCLE);
    VT_CHECK(strstr(vt_flow_error(f), "cycle") != NULL);
    VT_CHECK(strstr(vt_flow_error(f), "a -> b -> c -> a") != NULL ||
             strstr(vt_flow_error(f), "b -> c -> a -> b") != NULL ||
             strstr(vt_flow_error(f), "c -> a -> b -> c") != NULL);
    VT_CHECK_ERR(vt_flow_run(f, rt, NULL), VT_ECYCLE);
    int64_t v;
    VT_CHECK_ERR(vt_flow_node_get_int(a, &v), VT_ESTATE);
    vt_flow_free(f);
    vt_runtime_free(rt);
}

VT_TEST(building_errors_are_clear_and_remembered)
{
    vt_runtime *rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    vt_flow *f, *g;
    VT_CHECK_OK(vt_flow_new(&f, "mine"));
    VT_CHECK_OK(vt_flow_new(&g, "theirs"));
    vt_flow_node *a = vt_flow_add_int(f, "a", 1);
    vt_flow_node *x = vt_flow_add_int(g, "x", 1);

    /* No function. */
    VT_CHECK_NULL(vt_flow_add(f, "nofn", NULL, NULL, NULL, 0));
    VT_CHECK(strstr(vt_flow_error(f), "\"nofn\" has no function") != NULL);
    /* Remembered, with its message, by validation and runs alike. */
    VT_CHECK_ERR(vt_flow_validate(f), VT_EINVAL);
    VT_CHECK(strstr(vt_flow_error(f), "nofn") != NULL);
    VT_CHECK_ERR(vt_flow_run(f, rt, NULL), VT_EINVAL);
    /* Later mistakes are refused too, but the first one stays. */
    VT_CHECK_NULL(vt_flow_add(f, "foreign", plus_one, NULL, VT_FLOW_INPUTS(x)));
    VT_CHECK(strstr(vt_flow_error(f), "flow \"theirs\"") != NULL);
    VT_CHECK_ERR(vt_flow_validate(f), VT_EINVAL);
    VT_CHECK(strstr(vt_flow_error(f), "nofn") != NULL);
    VT_CHECK_EQ(vt_flow_size(f), 1);
    vt_flow_free(f);

    /* Each mistake on a fresh flow. */
    VT_CHECK_OK(vt_flow_new(&f, "mine"));
    a = vt_flow_add_int(f, "a", 1);
    vt_flow_node *n = vt_flow_add(f, "n", plus_one, NULL, NULL, 0);
    VT_CHECK_ERR(vt_flow_node_add_input(n, x), VT_EINVAL);
    VT_CHECK(strstr(vt_flow_error(f), "of flow \"theirs\"") != NULL);
    VT_CHECK_ERR(vt_flow_validate(f), VT_EINVAL);
    vt_flow_free(f);

    VT_CHECK_OK(vt_flow_new(&f, "mine"));
    a = vt_flow_add_int(f, "a", 1);
    n = vt_flow_add(f, "n", plus_one, NULL, NULL, 0);
    VT_CHECK_ERR(vt_flow_node_add_input(n, n), VT_EINVAL);
    VT_CHECK(strstr(vt_flow_error(f), "its own input") != NULL);
    vt_flow_free(f);

    VT_CHECK_OK(vt_flow_new(&f, "mine"));
    a = vt_flow_add_int(f, "a", 1);
    n = vt_flow_add(f, "n", plus_one, NULL, NULL, 0);
    VT_CHECK_ERR(vt_flow_node_add_input(a, n), VT_EINVAL);
    VT_CHECK(strstr(vt_flow_error(f), "constant") != NULL);
    vt_flow_free(f);

    VT_CHECK_OK(vt_flow_new(&f, "mine"));
    VT_CHECK_NULL(vt_flow_add(f, "in/valid", plus_one, NULL, NULL, 0));
    VT_CHECK_ERR(vt_flow_validate(f), VT_EINVAL);
    vt_flow_free(f);

    VT_CHECK_OK(vt_flow_new(&f, "mine"));
    VT_CHECK_NULL(vt_flow_add(f, "", plus_one, NULL, NULL, 0));
    VT_CHECK_ERR(vt_flow_validate(f), VT_EINVAL);
    vt_flow_free(f);

    VT_CHECK_OK(vt_flow_new(&f, "mine"));
    VT_CHECK_NULL(vt_flow_add(f, "nulls", plus_one, NULL, NULL, 3));
    VT_CHECK(strstr(vt_flow_error(f), "NULL array") != NULL);
    vt_flow_free(f);

    VT_CHECK_OK(vt_flow_new(&f, "mine"));
    vt_flow_node *withnull[2] = {NULL, NULL};
    VT_CHECK_NULL(vt_flow_add(f, "nullin", plus_one, NULL, withnull, 2));
    VT_CHECK(strstr(vt_flow_error(f), "input 0 is NULL") != NULL);
    VT_CHECK_ERR(vt_flow_validate(f), VT_EINVAL);
    vt_flow_free(f);

    /* Absurd sizes: refused before anything is read. */
    VT_CHECK_OK(vt_flow_new(&f, "mine"));
    a = vt_flow_add_int(f, "a", 1);
    VT_CHECK_NULL(vt_flow_add(f, "many", plus_one, NULL, &a, VT_FLOW_INPUTS_MAX + 1));
    VT_CHECK_ERR(vt_flow_validate(f), VT_ERANGE);
    vt_flow_free(f);
    VT_CHECK_OK(vt_flow_new(&f, "mine"));
    VT_CHECK_NULL(vt_flow_add_bytes(f, "huge", "x", VT_FLOW_VALUE_MAX + 1));
    VT_CHECK_ERR(vt_flow_validate(f), VT_ERANGE);
    vt_flow_free(f);
    VT_CHECK_OK(vt_flow_new(&f, "mine"));
    VT_CHECK_NULL(vt_flow_add_bytes(f, "nullbytes", NULL, 4));
    VT_CHECK_ERR(vt_flow_validate(f), VT_EINVAL);
    vt_flow_free(f);
    VT_CHECK_OK(vt_flow_new(&f, "mine"));
    VT_CHECK_NULL(vt_flow_add_str(f, "nullstr", NULL));
    VT_CHECK_ERR(vt_flow_validate(f), VT_EINVAL);
    vt_flow_free(f);

    /* Duplicate names: found by validation, as task does. */
    VT_CHECK_OK(vt_flow_new(&f, "mine"));
    vt_flow_add_int(f, "same", 1);
    vt_flow_add_int(f, "same", 2);
    VT_CHECK_ERR(vt_flow_validate(f), VT_EEXIST);
    VT_CHECK(strstr(vt_flow_error(f), "same") != NULL);
    vt_flow_free(f);

    /* Fingerprints. */
    VT_CHECK_OK(vt_flow_new(&f, "mine"));
    a = vt_flow_add_int(f, "a", 1);
    char big[VT_FLOW_FINGERPRINT_MAX + 1] = {0};
    VT_CHECK_ERR(vt_flow_node_set_fingerprint(a, big, sizeof big), VT_EINVAL);
    VT_CHECK_ERR(vt_flow_node_set_fingerprint(a, NULL, 3), VT_EINVAL);
    VT_CHECK_OK(vt_flow_node_set_fingerprint(a, big, VT_FLOW_FINGERPRINT_MAX));
    VT_CHECK_OK(vt_flow_node_set_fingerprint(a, NULL, 0));
    VT_CHECK_OK(vt_flow_run(f, rt, NULL));
    vt_flow_free(f);

    vt_flow_free(g);
    vt_runtime_free(rt);
}

static vt_err bad_setters(vt_flow_ctx *ctx, void *ud)
{
    (void)ud;
    int bad = 0;
    bad |= vt_flow_set_str(ctx, NULL) != VT_EINVAL;
    bad |= vt_flow_set_bytes(ctx, NULL, 1) != VT_EINVAL;
    bad |= vt_flow_set_bytes(ctx, "x", VT_FLOW_VALUE_MAX + 1) != VT_ERANGE;
    bad |= vt_flow_set_int(NULL, 1) != VT_EINVAL;
    bad |= vt_flow_set_double(NULL, 1) != VT_EINVAL;
    bad |= vt_flow_set_str(NULL, "") != VT_EINVAL;
    bad |= vt_flow_set_ptr(NULL, NULL, NULL) != VT_EINVAL;
    bad |= vt_flow_in_int(NULL, 0, &(int64_t){0}) != VT_EINVAL;
    bad |= vt_flow_in_str(ctx, 0, NULL, NULL) != VT_EINVAL;
    bad |= vt_flow_in_int(ctx, 0, &(int64_t){0}) != VT_ERANGE;
    bad |= vt_flow_ctx_inputs(NULL) != 0;
    bad |= vt_flow_ctx_node(NULL) != NULL || vt_flow_ctx_task(NULL) != NULL;
    bad |= vt_flow_ctx_task(ctx) == NULL;
    /* After the refused calls, the node has no value yet: none. */
    return bad ? VT_EFAILED : VT_OK;
}

VT_TEST(nulls_everywhere)
{
    VT_CHECK_ERR(vt_flow_new(NULL, "x"), VT_EINVAL);
    vt_flow *f = NULL;
    VT_CHECK_ERR(vt_flow_new(&f, ""), VT_EINVAL);
    vt_flow_free(NULL);
    VT_CHECK_STR_EQ(vt_flow_name(NULL), "");
    VT_CHECK_EQ(vt_flow_size(NULL), 0);
    VT_CHECK_STR_EQ(vt_flow_error(NULL), "");
    VT_CHECK_NULL(vt_flow_graph(NULL));
    VT_CHECK_ERR(vt_flow_validate(NULL), VT_EINVAL);
    VT_CHECK_NULL(vt_flow_add(NULL, "a", plus_one, NULL, NULL, 0));
    VT_CHECK_NULL(vt_flow_add_async(NULL, "a", plus_one, NULL, NULL, 0));
    VT_CHECK_NULL(vt_flow_add_int(NULL, "a", 1));
    VT_CHECK_NULL(vt_flow_add_double(NULL, "a", 1));
    VT_CHECK_NULL(vt_flow_add_str(NULL, "a", "s"));
    VT_CHECK_NULL(vt_flow_add_bytes(NULL, "a", "s", 1));
    VT_CHECK_ERR(vt_flow_node_add_input(NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_flow_node_set_fingerprint(NULL, NULL, 0), VT_EINVAL);
    VT_CHECK_STR_EQ(vt_flow_node_name(NULL), "");
    VT_CHECK_NULL(vt_flow_node_flow(NULL));
    VT_CHECK_NULL(vt_flow_node_task(NULL));
    VT_CHECK_EQ(vt_flow_node_inputs(NULL), 0);
    VT_CHECK_NULL(vt_flow_node_input(NULL, 0));
    VT_CHECK_NULL(vt_flow_find(NULL, "a"));
    VT_CHECK_NULL(vt_flow_node_of(NULL, NULL));
    VT_CHECK_ERR(vt_flow_start(NULL, NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_flow_wait(NULL, VT_NOW), VT_EINVAL);
    VT_CHECK_ERR(vt_flow_run(NULL, NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_flow_cancel(NULL), VT_EINVAL);
    VT_CHECK_EQ(vt_flow_node_state(NULL), VT_TASK_PENDING);
    vt_value_type t;
    int64_t i;
    double d;
    const char *s;
    const void *b;
    void *p;
    VT_CHECK_ERR(vt_flow_node_type(NULL, &t), VT_EINVAL);
    VT_CHECK_ERR(vt_flow_node_get_int(NULL, &i), VT_EINVAL);
    VT_CHECK_ERR(vt_flow_node_get_double(NULL, &d), VT_EINVAL);
    VT_CHECK_ERR(vt_flow_node_get_str(NULL, &s, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_flow_node_get_bytes(NULL, &b, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_flow_node_get_ptr(NULL, &p), VT_EINVAL);
    VT_CHECK_ERR(vt_flow_write_dot(NULL, stdout), VT_EINVAL);
    VT_CHECK_STR_EQ(vt_value_type_name(VT_VALUE_PTR), "pointer");
    VT_CHECK_STR_EQ(vt_value_type_name((vt_value_type)99), "?");

    VT_CHECK_OK(vt_flow_new(&f, "nulls"));
    vt_flow_node *a = vt_flow_add_int(f, "a", 1);
    VT_CHECK_ERR(vt_flow_node_add_input(a, NULL), VT_EINVAL);
    vt_flow_free(f);
    VT_CHECK_OK(vt_flow_new(&f, "nulls"));
    a = vt_flow_add_int(f, "a", 1);
    VT_CHECK_ERR(vt_flow_node_type(a, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_flow_node_get_int(a, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_flow_node_get_double(a, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_flow_node_get_str(a, NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_flow_node_get_bytes(a, NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_flow_node_get_ptr(a, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_flow_start(f, NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_flow_write_dot(f, NULL), VT_EINVAL);
    VT_CHECK_NULL(vt_flow_node_of(f, NULL));
    VT_CHECK_NULL(vt_flow_find(f, NULL));
    vt_flow_node *n = vt_flow_add(f, "setters", bad_setters, NULL, NULL, 0);
    vt_runtime *rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    VT_CHECK_OK(vt_flow_run(f, rt, NULL));
    VT_CHECK_OK(vt_flow_node_type(n, &t));
    VT_CHECK_EQ(t, VT_VALUE_NONE);
    vt_flow_free(f);
    vt_runtime_free(rt);
}

/* ---- Watching: the monitor's events, DOT
 * ------------------------------------------------------------ */

typedef struct watch {
    vt_flow *f;
    vt_task_state last[8];
    int unknown; /* events of tasks that are not the flow's nodes */
    int finished;
} watch;

static void on_event(void *ud, const vt_event *ev)
{
    watch *w = ud;
    if (!ev->task || ev->graph != vt_flow_graph(w->f))
        return;
    vt_flow_node *n = vt_flow_node_of(w->f, ev->task);
    if (!n || strcmp(vt_flow_node_name(n), ev->name)) {
        w->unknown++;
        return;
    }
    const char *name = vt_flow_node_name(n);
    int k = name[0] - 'a';
    if (k >= 0 && k < 8)
        w->last[k] = ev->state;
    if (ev->kind == VT_EV_FINISHED)
        w->finished++;
}

VT_TEST(monitor_events_draw_the_graph)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_monitor *m;
    VT_CHECK_OK(vt_monitor_new(&m, NULL));
    vt_flow *f;
    VT_CHECK_OK(vt_flow_new(&f, "watched"));
    watch w = {.f = f};
    VT_CHECK_OK(vt_monitor_subscribe(m, on_event, &w));
    vt_flow_node *a = vt_flow_add_int(f, "a", 1);
    vt_flow_node *b = vt_flow_add(f, "b", always_fails, NULL, NULL, 0);
    vt_flow_node *c = vt_flow_add(f, "c", add, NULL, VT_FLOW_INPUTS(a, b));
    vt_flow_node *d = vt_flow_add(f, "d", plus_one, NULL, VT_FLOW_INPUTS(a));
    atomic_store(&dtor_calls, 0);
    vt_run_opts o = {.on_failure = VT_KEEP_GOING, .monitor = m};
    VT_CHECK_ERR(vt_flow_run(f, rt, &o), VT_EFAILED);
    /* vt_flow_wait delivered every event: the last one of each node gives
     * its state now. */
    VT_CHECK_EQ(w.unknown, 0);
    VT_CHECK_EQ(w.finished, 4);
    VT_CHECK_EQ(w.last[0], vt_flow_node_state(a));
    VT_CHECK_EQ(w.last[1], VT_TASK_FAILED);
    VT_CHECK_EQ(w.last[2], VT_TASK_SKIPPED);
    VT_CHECK_EQ(w.last[3], VT_TASK_SUCCEEDED);
    VT_CHECK_EQ(vt_flow_node_state(c), VT_TASK_SKIPPED);
    VT_CHECK_EQ(vt_flow_node_state(d), VT_TASK_SUCCEEDED);
    VT_CHECK_OK(vt_monitor_unsubscribe(m, on_event, &w));
    vt_flow_free(f);
    vt_monitor_free(m);
    vt_runtime_free(rt);
}

static vt_err quote(vt_flow_ctx *ctx, void *ud)
{
    (void)ud;
    return vt_flow_set_str(ctx, "say \"hi\"\nbye");
}

VT_TEST(dot_shows_states_and_values)
{
    vt_runtime *rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    vt_flow *f;
    VT_CHECK_OK(vt_flow_new(&f, "dot"));
    vt_flow_node *a = vt_flow_add_int(f, "a", 1);
    vt_flow_node *b = vt_flow_add_int(f, "b", 2);
    vt_flow_node *sum = vt_flow_add(f, "sum", add, NULL, VT_FLOW_INPUTS(a, b));
    vt_flow_add(f, "q", quote, NULL, NULL, 0);
    (void)sum;
    mem m;
    VT_CHECK_NOT_NULL(mem_open(&m));
    VT_CHECK_OK(vt_flow_write_dot(f, m.f));
    mem_close(&m);
    VT_CHECK(strstr(m.buf, "digraph \"dot\"") != NULL);
    VT_CHECK(strstr(m.buf, "\"a\" -> \"sum\" [label=\"0\"]") != NULL);
    VT_CHECK(strstr(m.buf, "fillcolor=white") != NULL);
    VT_CHECK(strstr(m.buf, "= 3") == NULL);
    free(m.buf);
    VT_CHECK_OK(vt_flow_run(f, rt, NULL));
    VT_CHECK_NOT_NULL(mem_open(&m));
    VT_CHECK_OK(vt_flow_write_dot(f, m.f));
    mem_close(&m);
    VT_CHECK(strstr(m.buf, "\"sum\" [label=\"sum\\n= 3\", fillcolor=palegreen") != NULL);
    VT_CHECK(strstr(m.buf, "say \\\"hi\\\"\\nbye") != NULL);
    free(m.buf);
    vt_flow_free(f);
    vt_runtime_free(rt);
}

/* ---- Resume from a store
 * ----------------------------------------------------------------------------- */

typedef struct resumable {
    _Atomic int runs[6];
    int fail_last; /* the last node fails while set */
} resumable;

static vt_err res_body(vt_flow_ctx *ctx, void *ud)
{
    resumable *r = ud;
    vt_flow_node *n = vt_flow_ctx_node(ctx);
    const char *name = vt_flow_node_name(n);
    int k = name[0] - 'a';
    atomic_fetch_add(&r->runs[k], 1);
    switch (k) {
    case 0:
        return vt_flow_set_int(ctx, 40);
    case 1:
        return vt_flow_set_str(ctx, "kept");
    case 2: {
        int *p = malloc(sizeof *p);
        if (!p)
            return VT_ENOMEM;
        *p = 2;
        vt_err e = vt_flow_set_ptr(ctx, p, free);
        if (e)
            free(p);
        return e;
    }
    case 3: {
        /* Bigger than what a store keeps. */
        size_t len = VT_FLOW_PERSIST_MAX + 1;
        char *big = malloc(len);
        if (!big)
            return VT_ENOMEM;
        memset(big, 'z', len);
        vt_err e = vt_flow_set_bytes(ctx, big, len);
        free(big);
        return e;
    }
    case 4:
        return vt_flow_set_double(ctx, 0.5);
    default: {
        if (r->fail_last)
            return vt_ctx_fail(vt_flow_ctx_task(ctx), "the last node fails this time");
        int64_t a;
        const char *s;
        void *p;
        const void *big;
        size_t len;
        double d;
        vt_err e;
        if ((e = vt_flow_in_int(ctx, 0, &a)) || (e = vt_flow_in_str(ctx, 1, &s, NULL)) ||
            (e = vt_flow_in_ptr(ctx, 2, &p)) || (e = vt_flow_in_bytes(ctx, 3, &big, &len)) ||
            (e = vt_flow_in_double(ctx, 4, &d)))
            return e;
        return vt_flow_set_int(ctx, a + (int64_t)strlen(s) + *(int *)p + (int64_t)len +
                                        (int64_t)(d * 2));
    }
    }
}

static vt_flow *resumable_flow(resumable *r, vt_flow_node **last)
{
    vt_flow *f;
    if (vt_flow_new(&f, "resume"))
        return NULL;
    vt_flow_node *n[5];
    const char *names[5] = {"a", "b", "c", "d", "e"};
    for (int i = 0; i < 5; i++)
        n[i] = vt_flow_add(f, names[i], res_body, r, NULL, 0);
    *last = vt_flow_add(f, "f", res_body, r, n, 5);
    return f;
}

VT_TEST(resume_restores_kept_values)
{
    scratch sc;
    VT_CHECK_EQ(scratch_make(&sc), 0);
    char path[256];
    scratch_path(&sc, "flow.db", path, sizeof path);
    vt_store *st;
    VT_CHECK_OK(vt_store_open(&st, path, NULL));
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    resumable r = {.fail_last = 1};
    vt_flow_node *last;
    vt_flow *f = resumable_flow(&r, &last);
    VT_CHECK_NOT_NULL(f);
    const int64_t want = 40 + 4 + 2 + (int64_t)VT_FLOW_PERSIST_MAX + 1 + 1;

    /* First run: the last node fails. */
    vt_run_opts o = {.on_failure = VT_KEEP_GOING, .store = st, .run_id = "r1"};
    VT_CHECK_ERR(vt_flow_run(f, rt, &o), VT_EFAILED);
    for (int k = 0; k < 6; k++)
        VT_CHECK_EQ(atomic_load(&r.runs[k]), 1);

    /* The same run again, as a new flow would after a crash: the kept
     * values come back, the pointer and the big blob are made again. */
    vt_flow_free(f);
    r.fail_last = 0;
    f = resumable_flow(&r, &last);
    VT_CHECK_NOT_NULL(f);
    VT_CHECK_OK(vt_flow_run(f, rt, &o));
    VT_CHECK_EQ(atomic_load(&r.runs[0]), 1); /* int: restored */
    VT_CHECK_EQ(atomic_load(&r.runs[1]), 1); /* string: restored */
    VT_CHECK_EQ(atomic_load(&r.runs[2]), 2); /* pointer: made again */
    VT_CHECK_EQ(atomic_load(&r.runs[3]), 2); /* too big to keep: made again */
    VT_CHECK_EQ(atomic_load(&r.runs[4]), 1); /* double: restored */
    VT_CHECK_EQ(atomic_load(&r.runs[5]), 2);
    VT_CHECK(vt_task_restored(vt_flow_node_task(vt_flow_find(f, "a"))));
    VT_CHECK(vt_task_restored(vt_flow_node_task(vt_flow_find(f, "b"))));
    VT_CHECK(!vt_task_restored(vt_flow_node_task(vt_flow_find(f, "c"))));
    int64_t v;
    VT_CHECK_OK(vt_flow_node_get_int(last, &v));
    VT_CHECK_EQ(v, want);
    /* Restored values read as they were set. */
    const char *s;
    size_t len;
    VT_CHECK_OK(vt_flow_node_get_str(vt_flow_find(f, "b"), &s, &len));
    VT_CHECK_STR_EQ(s, "kept");
    VT_CHECK_EQ(len, 4);
    double d;
    VT_CHECK_OK(vt_flow_node_get_double(vt_flow_find(f, "e"), &d));
    VT_CHECK(d == 0.5);
    VT_CHECK_OK(vt_flow_node_get_int(vt_flow_find(f, "a"), &v));
    VT_CHECK_EQ(v, 40);
    mem m;
    VT_CHECK_NOT_NULL(mem_open(&m));
    VT_CHECK_OK(vt_flow_write_dot(f, m.f));
    mem_close(&m);
    VT_CHECK(strstr(m.buf, "b\\n= \\\"kept\\\"") != NULL);
    free(m.buf);

    /* Once more with the same id, on the same flow: everything that can be
     * restored is, the rest runs again — and again after that. */
    for (int round = 0; round < 2; round++) {
        VT_CHECK_OK(vt_flow_run(f, rt, &o));
        VT_CHECK_EQ(atomic_load(&r.runs[0]), 1);
        VT_CHECK_EQ(atomic_load(&r.runs[2]), 3 + round);
        VT_CHECK_EQ(atomic_load(&r.runs[3]), 3 + round);
        VT_CHECK_EQ(atomic_load(&r.runs[5]), 2); /* restored: its int was kept */
        VT_CHECK_OK(vt_flow_node_get_int(last, &v));
        VT_CHECK_EQ(v, want);
    }

    /* A new key on a node: it runs again. */
    VT_CHECK_OK(vt_flow_node_set_fingerprint(vt_flow_find(f, "a"), "v2", 2));
    VT_CHECK_OK(vt_flow_run(f, rt, &o));
    VT_CHECK_EQ(atomic_load(&r.runs[0]), 2);
    VT_CHECK_OK(vt_flow_run(f, rt, &o));
    VT_CHECK_EQ(atomic_load(&r.runs[0]), 2);

    /* Another run id: everything runs. */
    vt_run_opts o2 = {.store = st, .run_id = "r2"};
    VT_CHECK_OK(vt_flow_run(f, rt, &o2));
    VT_CHECK_EQ(atomic_load(&r.runs[0]), 3);
    VT_CHECK_EQ(atomic_load(&r.runs[1]), 2);

    vt_flow_free(f);
    vt_store_close(st);
    vt_runtime_free(rt);
    scratch_remove(&sc);
}

/* ---- Allocation failures
 * ------------------------------------------------------------------------------- */

VT_TEST(out_of_memory_while_building)
{
    long live = vt_test_alloc_live();
    for (long k = 1;; k++) {
        vt_flow *f = NULL;
        vt_test_alloc_fail_at(k);
        vt_err e = vt_flow_new(&f, "oom");
        vt_test_alloc_reset();
        if (e == VT_OK) {
            vt_flow_free(f);
            break;
        }
        VT_CHECK_ERR(e, VT_ENOMEM);
        VT_CHECK_EQ(vt_test_alloc_live(), live);
        VT_CHECK_LT(k, 100);
    }
    for (long k = 1;; k++) {
        vt_flow *f;
        VT_CHECK_OK(vt_flow_new(&f, "oom"));
        vt_flow_node *a = vt_flow_add_int(f, "a", 1);
        vt_flow_node *s = vt_flow_add_str(f, "s", "text");
        VT_CHECK_NOT_NULL(a);
        VT_CHECK_NOT_NULL(s);
        vt_test_alloc_fail_at(k);
        vt_flow_node *n = vt_flow_add(f, "n", add, NULL, VT_FLOW_INPUTS(a, a, a));
        vt_flow_node *c = n ? vt_flow_add_str(f, "c", "copied") : NULL;
        vt_test_alloc_reset();
        if (n && c) {
            VT_CHECK_OK(vt_flow_validate(f));
            vt_flow_free(f);
            break;
        }
        /* The failure is remembered. */
        VT_CHECK_ERR(vt_flow_validate(f), VT_ENOMEM);
        VT_CHECK(strstr(vt_flow_error(f), "out of memory") != NULL);
        vt_flow_free(f);
        VT_CHECK_EQ(vt_test_alloc_live(), live);
        VT_CHECK_LT(k, 200);
    }
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

/* A body whose value cannot be made: the node fails with VT_ENOMEM. */
static vt_err big_str(vt_flow_ctx *ctx, void *ud)
{
    (void)ud;
    vt_test_alloc_fail_at(1);
    vt_err e = vt_flow_set_str(ctx, "no room");
    vt_test_alloc_reset();
    return e;
}

VT_TEST(out_of_memory_in_a_body)
{
    vt_runtime *rt = rt_det(1);
    VT_CHECK_NOT_NULL(rt);
    vt_flow *f;
    VT_CHECK_OK(vt_flow_new(&f, "oom-body"));
    vt_flow_node *n = vt_flow_add(f, "n", big_str, NULL, NULL, 0);
    VT_CHECK_ERR(vt_flow_run(f, rt, NULL), VT_EFAILED);
    VT_CHECK_ERR(vt_task_error(vt_flow_node_task(n), NULL), VT_ENOMEM);
    vt_flow_free(f);
    vt_runtime_free(rt);
}

/* ---- Deterministic runs
 * --------------------------------------------------------------------------------- */

typedef struct seen {
    char order[64];
    _Atomic int n;
} seen;

static vt_err note(vt_flow_ctx *ctx, void *ud)
{
    seen *s = ud;
    int k = atomic_fetch_add(&s->n, 1);
    if (k < 63)
        s->order[k] = vt_flow_node_name(vt_flow_ctx_node(ctx))[0];
    return plus_one(ctx, NULL);
}

VT_TEST(deterministic_runs_replay)
{
    char first[64] = "";
    for (int rep = 0; rep < 3; rep++) {
        vt_runtime *rt = rt_det(99);
        VT_CHECK_NOT_NULL(rt);
        vt_flow *f;
        VT_CHECK_OK(vt_flow_new(&f, "replay"));
        seen s = {0};
        const char *names[] = {"a", "b", "c", "d", "e", "f", "g", "h"};
        vt_flow_node *root = vt_flow_add(f, "r", note, &s, NULL, 0);
        for (int i = 0; i < 8; i++)
            vt_flow_add(f, names[i], note, &s, VT_FLOW_INPUTS(root));
        VT_CHECK_OK(vt_flow_run(f, rt, NULL));
        VT_CHECK_EQ(atomic_load(&s.n), 9);
        if (rep == 0)
            memcpy(first, s.order, sizeof first);
        else
            VT_CHECK_STR_EQ(s.order, first);
        vt_flow_free(f);
        vt_runtime_free(rt);
    }
}
