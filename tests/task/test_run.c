/* test_run.c — running task graphs: the order dependencies impose, the
 * lifecycle of every task (all seven states), fail-fast and keep-going,
 * vt_graph_wait's results, run and group cancellation, VT_EBUSY and
 * VT_EDEADLK, re-runs, retries and their backoff and timeouts (on a
 * deterministic runtime, whose virtual clock makes every delay exact),
 * priorities, subtasks, what a body can do through its context (attempt,
 * worker, log, results of dependencies, failure messages, progress) and
 * the replay of a deterministic run.
 *
 * No test measures real time: what needs time runs on the virtual clock,
 * and what runs on threads is checked by counts and orders. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vt_test.h"
#include "task_test.h"

/* ---- Before any run ----------------------------------------------------------------- */

VT_TEST(state_names)
{
    VT_CHECK_STR_EQ(vt_task_state_name(VT_TASK_PENDING), "pending");
    VT_CHECK_STR_EQ(vt_task_state_name(VT_TASK_READY), "ready");
    VT_CHECK_STR_EQ(vt_task_state_name(VT_TASK_RUNNING), "running");
    VT_CHECK_STR_EQ(vt_task_state_name(VT_TASK_SUCCEEDED), "succeeded");
    VT_CHECK_STR_EQ(vt_task_state_name(VT_TASK_FAILED), "failed");
    VT_CHECK_STR_EQ(vt_task_state_name(VT_TASK_CANCELLED), "cancelled");
    VT_CHECK_STR_EQ(vt_task_state_name(VT_TASK_SKIPPED), "skipped");
    VT_CHECK_STR_EQ(vt_task_state_name((vt_task_state)VT_TASK_STATES), "?");
    VT_CHECK_STR_EQ(vt_task_state_name((vt_task_state)-1), "?");
}

VT_TEST(state_colours)
{
    /* Distinct for every state, so a drawing tells them apart. */
    for (int a = 0; a < VT_TASK_STATES; a++) {
        VT_CHECK(vt_task_state_colour((vt_task_state)a)[0] != '\0');
        for (int b = a + 1; b < VT_TASK_STATES; b++)
            VT_CHECK(strcmp(vt_task_state_colour((vt_task_state)a), vt_task_state_colour((vt_task_state)b)));
    }
    VT_CHECK_STR_EQ(vt_task_state_colour(VT_TASK_FAILED), "tomato");
    VT_CHECK_STR_EQ(vt_task_state_colour((vt_task_state)VT_TASK_STATES), "white");
}

VT_TEST(before_any_run)
{
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "fresh"));
    vt_task *a = vt_task_add(g, "a", body_ok, NULL);
    VT_CHECK_EQ(vt_task_state_get(a), VT_TASK_PENDING);
    const char *msg = "x";
    VT_CHECK_OK(vt_task_error(a, &msg));
    VT_CHECK_STR_EQ(msg, "");
    VT_CHECK_OK(vt_task_error(a, NULL));
    VT_CHECK_EQ(vt_task_attempts(a), 0);
    VT_CHECK_EQ(vt_task_restored(a), 0);
    const void *data;
    size_t len;
    VT_CHECK_ERR(vt_task_result(a, &data, &len), VT_ENOENT);
    VT_CHECK_STR_EQ(vt_task_log(a), "");
    VT_CHECK_ERR(vt_graph_wait(g, VT_FOREVER), VT_ESTATE);
    VT_CHECK_ERR(vt_graph_wait(g, VT_NOW), VT_ESTATE);
    VT_CHECK_OK(vt_graph_cancel(g));
    VT_CHECK_STR_EQ(vt_graph_run_id(g), "");
    vt_run_summary s;
    VT_CHECK_ERR(vt_graph_summary(NULL, &s), VT_EINVAL);
    VT_CHECK_ERR(vt_graph_summary(g, NULL), VT_EINVAL);
    vt_graph_free(g);
}

/* ---- Order --------------------------------------------------------------------------- */

VT_TEST(run_chain_and_diamond)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "diamond"));
    order *o = order_new();
    /* top -> {l, r} -> bottom -> tail, l and r async on alternate builds. */
    vt_task *top = vt_task_add(g, "top", body_log, o);
    vt_task *l = vt_task_add_async(g, "l", body_log, o);
    vt_task *r = vt_task_add(g, "r", body_log, o);
    vt_task *bottom = vt_task_add_async(g, "bottom", body_log, o);
    vt_task *tail = vt_task_add(g, "tail", body_log, o);
    VT_CHECK_OK(vt_task_precede(top, l));
    VT_CHECK_OK(vt_task_precede(top, r));
    VT_CHECK_OK(vt_task_depend(bottom, "l"));
    VT_CHECK_OK(vt_task_depend(bottom, "r"));
    VT_CHECK_OK(vt_task_precede(bottom, tail));
    VT_CHECK_OK(vt_graph_run(g, rt, NULL));
    VT_CHECK_EQ(order_len(o), 5);
    VT_CHECK_PTR_EQ(o->t[0], top);
    VT_CHECK_LT(order_pos(o, l), order_pos(o, bottom));
    VT_CHECK_LT(order_pos(o, r), order_pos(o, bottom));
    VT_CHECK_PTR_EQ(o->t[3], bottom);
    VT_CHECK_PTR_EQ(o->t[4], tail);
    vt_task *all[] = {top, l, r, bottom, tail};
    for (int i = 0; i < 5; i++) {
        VT_CHECK_EQ(vt_task_state_get(all[i]), VT_TASK_SUCCEEDED);
        VT_CHECK_EQ(vt_task_attempts(all[i]), 1);
        VT_CHECK_OK(vt_task_error(all[i], NULL));
        VT_CHECK_EQ(vt_task_restored(all[i]), 0);
    }
    vt_run_summary s = summary_of(g);
    VT_CHECK_EQ(s.total, 5);
    VT_CHECK_EQ(s.succeeded, 5);
    VT_CHECK_EQ(s.failed + s.cancelled + s.skipped + s.restored + s.retries, 0);
    VT_CHECK_GT(s.ended_ns, 0);
    VT_CHECK_GE(s.ended_ns, s.started_ns);
    /* Waiting again gives the same answer. */
    VT_CHECK_OK(vt_graph_wait(g, VT_FOREVER));
    VT_CHECK_OK(vt_graph_wait(g, VT_NOW));
    vt_graph_free(g);
    vt_runtime_free(rt);
    free(o);
}

VT_TEST(run_empty_graph_and_bad_arguments)
{
    vt_runtime *rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "empty"));
    VT_CHECK_OK(vt_graph_run(g, rt, NULL));
    vt_run_summary s = summary_of(g);
    VT_CHECK_EQ(s.total, 0);
    VT_CHECK_EQ(s.succeeded, 0);
    VT_CHECK_GE(s.ended_ns, s.started_ns);
    VT_CHECK_OK(vt_graph_wait(g, VT_FOREVER));

    VT_CHECK_ERR(vt_graph_run(NULL, rt, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_graph_run(g, NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_graph_start(NULL, rt, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_graph_start(g, NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_graph_wait(NULL, VT_FOREVER), VT_EINVAL);
    vt_run_opts o = {.on_failure = (vt_failure_mode)7};
    VT_CHECK_ERR(vt_graph_run(g, rt, &o), VT_EINVAL);
    vt_graph_free(g);

    /* A runtime that was shut down. */
    VT_CHECK_OK(vt_graph_new(&g, "closed"));
    _Atomic long runs = 0;
    vt_task_add(g, "a", body_count, &runs);
    VT_CHECK_OK(vt_runtime_shutdown(rt, VT_FOREVER));
    VT_CHECK_ERR(vt_graph_run(g, rt, NULL), VT_ECLOSED);
    VT_CHECK_EQ(atomic_load(&runs), 0);
    vt_graph_free(g);
    vt_runtime_free(rt);
}

static vt_err body_where(vt_task_ctx *ctx, void *data)
{
    int *w = data;
    w[0] = vt_fiber_in();
    w[1] = vt_ctx_worker(ctx);
    w[2] = vt_worker_index();
    w[3] = vt_ctx_cancelled(ctx);
    w[4] = (int)vt_ctx_attempt(ctx);
    w[5] = vt_ctx_task(ctx) == vt_graph_find(vt_task_graph(vt_ctx_task(ctx)), "async") ||
           vt_ctx_task(ctx) == vt_graph_find(vt_task_graph(vt_ctx_task(ctx)), "sync");
    return VT_OK;
}

VT_TEST(sync_and_async_bodies)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "where"));
    int ws[6], wa[6];
    memset(ws, 0x7f, sizeof ws);
    memset(wa, 0x7f, sizeof wa);
    vt_task_add(g, "sync", body_where, ws);
    vt_task_add_async(g, "async", body_where, wa);
    VT_CHECK_OK(vt_graph_run(g, rt, NULL));
    VT_CHECK_EQ(wa[0], 1);
    VT_CHECK_GE(ws[1], 0);
    VT_CHECK_LT(ws[1], 2);
    VT_CHECK_EQ(ws[1], ws[2]);
    VT_CHECK_GE(wa[1], 0);
    VT_CHECK_LT(wa[1], 2);
    VT_CHECK_EQ(ws[3], 0);
    VT_CHECK_EQ(wa[3], 0);
    VT_CHECK_EQ(ws[4], 1);
    VT_CHECK_EQ(wa[4], 1);
    VT_CHECK_EQ(ws[5], 1);
    VT_CHECK_EQ(wa[5], 1);
    vt_graph_free(g);
    vt_runtime_free(rt);
}

/* ---- Failures -------------------------------------------------------------------------- */

typedef struct waiter {
    tb *others[4];
    int n;
} waiter;

/* Fails once every task of w has started. */
static vt_err body_fail_after(vt_task_ctx *ctx, void *data)
{
    waiter *w = data;
    for (int i = 0; i < w->n; i++)
        while (atomic_load(&w->others[i]->starts) == 0)
            pause_any();
    return vt_ctx_fail(ctx, "disk full on %s", "/dev/sda1");
}

VT_TEST(fail_fast)
{
    /* Three workers: two held by sync tasks that run until cancelled, the
     * third for the fibers. */
    vt_runtime *rt = rt_new(3);
    VT_CHECK_NOT_NULL(rt);
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "failfast"));
    tb spin = {.until_cancelled = 1};
    tb block = {.until_cancelled = 1, .ok_when_cancelled = 1};
    tb sleep = {.until_cancelled = 1};
    tb late = {0}, d1 = {0}, d2 = {0};
    waiter w = {{&spin, &block, &sleep}, 3};
    vt_task *t_spin = vt_task_add(g, "spin", tb_body, &spin);
    vt_task *t_block = vt_task_add(g, "block", tb_body, &block);
    vt_task *t_late = vt_task_add(g, "late", tb_body, &late);
    vt_task *t_sleep = vt_task_add_async(g, "sleep", tb_body, &sleep);
    vt_task *t_fetch = vt_task_add_async(g, "fetch", body_fail_after, &w);
    vt_task *t_d1 = vt_task_add(g, "d1", tb_body, &d1);
    vt_task *t_d2 = vt_task_add(g, "d2", tb_body, &d2);
    VT_CHECK_OK(vt_task_precede(t_block, t_late));
    VT_CHECK_OK(vt_task_precede(t_fetch, t_d1));
    VT_CHECK_OK(vt_task_precede(t_d1, t_d2));
    /* A retry policy does not retry what the failure cancelled. */
    vt_retry pol = {.max_attempts = 5, .backoff = VT_BACKOFF_FIXED, .delay_ns = 1000};
    VT_CHECK_OK(vt_task_set_retry(t_spin, &pol));
    VT_CHECK_OK(vt_task_set_retry(t_sleep, &pol));

    VT_CHECK_ERR(vt_graph_run(g, rt, NULL), VT_EFAILED);
    VT_CHECK_EQ(vt_task_state_get(t_fetch), VT_TASK_FAILED);
    VT_CHECK_EQ(vt_task_state_get(t_d1), VT_TASK_SKIPPED);
    VT_CHECK_EQ(vt_task_state_get(t_d2), VT_TASK_SKIPPED);
    VT_CHECK_EQ(vt_task_state_get(t_spin), VT_TASK_CANCELLED);
    VT_CHECK_EQ(vt_task_state_get(t_sleep), VT_TASK_CANCELLED);
    VT_CHECK_EQ(vt_task_state_get(t_block), VT_TASK_SUCCEEDED);
    VT_CHECK_EQ(vt_task_state_get(t_late), VT_TASK_CANCELLED);
    VT_CHECK_EQ(atomic_load(&late.starts) + atomic_load(&d1.starts) + atomic_load(&d2.starts), 0);
    VT_CHECK_EQ(atomic_load(&spin.cancels_seen), 1);
    VT_CHECK_EQ(atomic_load(&sleep.cancels_seen), 1);
    VT_CHECK_ERR(sleep.sleep_err, VT_ECANCELED);
    VT_CHECK_EQ(atomic_load(&block.cancels_seen), 1);
    VT_CHECK_EQ(vt_task_attempts(t_spin), 1);
    VT_CHECK_EQ(vt_task_attempts(t_sleep), 1);
    VT_CHECK_EQ(vt_task_attempts(t_late), 0);
    VT_CHECK_EQ(vt_task_attempts(t_d1), 0);

    const char *msg = NULL;
    VT_CHECK_ERR(vt_task_error(t_fetch, &msg), VT_EFAILED);
    VT_CHECK_STR_EQ(msg, "disk full on /dev/sda1");
    VT_CHECK_ERR(vt_task_error(t_spin, NULL), VT_ECANCELED);
    VT_CHECK_ERR(vt_task_error(t_sleep, NULL), VT_ECANCELED);
    VT_CHECK_ERR(vt_task_error(t_late, NULL), VT_ECANCELED);
    VT_CHECK_OK(vt_task_error(t_block, NULL));
    VT_CHECK(has(vt_graph_error(g), "fetch"));
    VT_CHECK(has(vt_graph_error(g), "disk full on /dev/sda1"));

    vt_run_summary s = summary_of(g);
    VT_CHECK_EQ(s.total, 7);
    VT_CHECK_EQ(s.succeeded, 1);
    VT_CHECK_EQ(s.failed, 1);
    VT_CHECK_EQ(s.cancelled, 3);
    VT_CHECK_EQ(s.skipped, 2);
    VT_CHECK_EQ(s.retries, 0);
    VT_CHECK_EQ(s.restored, 0);
    vt_graph_free(g);
    vt_runtime_free(rt);
}

VT_TEST(keep_going)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "keepgoing"));
    enum { CHAIN = 20 };
    tb bad = {.fail_attempts = 1, .fail_with = VT_EIO};
    tb d[3] = {{0}}, ok[CHAIN] = {{0}};
    vt_task *t_bad = vt_task_add(g, "bad", tb_body, &bad);
    vt_task *t_d[3], *t_ok[CHAIN];
    char name[16];
    for (int i = 0; i < CHAIN; i++) {
        snprintf(name, sizeof name, "ok%d", i);
        t_ok[i] = i % 2 ? vt_task_add_async(g, name, tb_body, &ok[i]) : vt_task_add(g, name, tb_body, &ok[i]);
        if (i)
            VT_CHECK_OK(vt_task_precede(t_ok[i - 1], t_ok[i]));
    }
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "d%d", i);
        t_d[i] = vt_task_add(g, name, tb_body, &d[i]);
    }
    VT_CHECK_OK(vt_task_precede(t_bad, t_d[0]));
    VT_CHECK_OK(vt_task_precede(t_d[0], t_d[1]));
    VT_CHECK_OK(vt_task_precede(t_bad, t_d[2]));
    VT_CHECK_OK(vt_task_precede(t_ok[0], t_d[2]));
    /* The chain's second task starts only once bad has failed. */
    gate g_bad_done = {0};
    ok[1].gate = &g_bad_done;

    vt_run_opts o = {.on_failure = VT_KEEP_GOING};
    VT_CHECK_OK(vt_graph_start(g, rt, &o));
    while (atomic_load(&bad.ends) == 0)
        nap();
    gate_open(&g_bad_done);
    VT_CHECK_ERR(vt_graph_wait(g, VT_FOREVER), VT_EFAILED);
    VT_CHECK_EQ(vt_task_state_get(t_bad), VT_TASK_FAILED);
    VT_CHECK_ERR(vt_task_error(t_bad, NULL), VT_EIO);
    for (int i = 0; i < CHAIN; i++) {
        VT_CHECK_EQ(vt_task_state_get(t_ok[i]), VT_TASK_SUCCEEDED);
        VT_CHECK_EQ(atomic_load(&ok[i].starts), 1);
    }
    for (int i = 0; i < 3; i++) {
        VT_CHECK_EQ(vt_task_state_get(t_d[i]), VT_TASK_SKIPPED);
        VT_CHECK_EQ(atomic_load(&d[i].starts), 0);
    }
    VT_CHECK(has(vt_graph_error(g), "bad"));
    vt_run_summary s = summary_of(g);
    VT_CHECK_EQ(s.total, CHAIN + 4);
    VT_CHECK_EQ(s.succeeded, CHAIN);
    VT_CHECK_EQ(s.failed, 1);
    VT_CHECK_EQ(s.skipped, 3);
    VT_CHECK_EQ(s.cancelled, 0);
    vt_graph_free(g);
    vt_runtime_free(rt);
}

/* The first failure is the one the run names. */
VT_TEST(first_failure_named)
{
    vt_runtime *rt = rt_det(7);
    VT_CHECK_NOT_NULL(rt);
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "first"));
    tb a = {.fail_attempts = 1}, b = {.fail_attempts = 1, .sleep_ns = 5 * MS}, c = {0};
    vt_task *ta = vt_task_add(g, "early-one", tb_body, &a);
    vt_task *tb_ = vt_task_add_async(g, "later-one", tb_body, &b);
    vt_task *tc = vt_task_add(g, "skipped-one", tb_body, &c);
    VT_CHECK_OK(vt_task_precede(ta, tc));
    vt_run_opts o = {.on_failure = VT_KEEP_GOING};
    VT_CHECK_ERR(vt_graph_run(g, rt, &o), VT_EFAILED);
    VT_CHECK_EQ(vt_task_state_get(tb_), VT_TASK_FAILED);
    VT_CHECK(has(vt_graph_error(g), "early-one"));
    VT_CHECK(has(vt_graph_error(g), "boom early-one attempt 1"));
    VT_CHECK(!has(vt_graph_error(g), "later-one"));
    const char *msg;
    VT_CHECK_ERR(vt_task_error(ta, &msg), VT_EFAILED);
    VT_CHECK_STR_EQ(msg, "boom early-one attempt 1");
    VT_CHECK_ERR(vt_task_error(tb_, &msg), VT_EFAILED);
    VT_CHECK_STR_EQ(msg, "boom later-one attempt 1");
    vt_graph_free(g);
    vt_runtime_free(rt);
}

/* ---- Cancellation ----------------------------------------------------------------------- */

VT_TEST(run_cancel)
{
    vt_runtime *rt = rt_new(3);
    VT_CHECK_NOT_NULL(rt);
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "cancel"));
    tb early = {0}, spin = {.until_cancelled = 1}, sleep = {.until_cancelled = 1};
    tb block = {.until_cancelled = 1, .ok_when_cancelled = 1}, late = {0}, after_spin = {0};
    vt_task *t_early = vt_task_add(g, "early", tb_body, &early);
    vt_task *t_spin = vt_task_add(g, "spin", tb_body, &spin);
    vt_task *t_sleep = vt_task_add_async(g, "sleep", tb_body, &sleep);
    vt_task *t_block = vt_task_add(g, "block", tb_body, &block);
    vt_task *t_late = vt_task_add(g, "late", tb_body, &late);
    vt_task *t_after = vt_task_add(g, "after-spin", tb_body, &after_spin);
    VT_CHECK_OK(vt_task_precede(t_block, t_late));
    VT_CHECK_OK(vt_task_precede(t_spin, t_after));
    vt_retry pol = {.max_attempts = 3, .backoff = VT_BACKOFF_FIXED};
    VT_CHECK_OK(vt_task_set_retry(t_spin, &pol));
    VT_CHECK_OK(vt_task_set_retry(t_sleep, &pol));
    VT_CHECK_OK(vt_graph_start(g, rt, NULL));
    while (!atomic_load(&early.ends) || !atomic_load(&spin.starts) || !atomic_load(&sleep.starts) ||
           !atomic_load(&block.starts))
        nap();
    VT_CHECK_EQ(vt_task_state_get(t_spin), VT_TASK_RUNNING);
    VT_CHECK_EQ(vt_task_state_get(t_late), VT_TASK_PENDING);
    VT_CHECK_OK(vt_graph_cancel(g));
    VT_CHECK_OK(vt_graph_cancel(g)); /* twice is harmless */
    VT_CHECK_ERR(vt_graph_wait(g, VT_FOREVER), VT_ECANCELED);
    VT_CHECK_EQ(vt_task_state_get(t_early), VT_TASK_SUCCEEDED);
    VT_CHECK_EQ(vt_task_state_get(t_spin), VT_TASK_CANCELLED);
    VT_CHECK_EQ(vt_task_state_get(t_sleep), VT_TASK_CANCELLED);
    VT_CHECK_EQ(vt_task_state_get(t_block), VT_TASK_SUCCEEDED);
    VT_CHECK_EQ(vt_task_state_get(t_late), VT_TASK_CANCELLED);
    vt_task_state sa = vt_task_state_get(t_after);
    VT_CHECK(sa == VT_TASK_CANCELLED || sa == VT_TASK_SKIPPED);
    VT_CHECK_EQ(atomic_load(&late.starts) + atomic_load(&after_spin.starts), 0);
    VT_CHECK_EQ(vt_task_attempts(t_spin), 1);
    VT_CHECK_EQ(vt_task_attempts(t_sleep), 1);
    VT_CHECK_ERR(sleep.sleep_err, VT_ECANCELED);
    VT_CHECK_ERR(vt_task_error(t_sleep, NULL), VT_ECANCELED);
    vt_run_summary s = summary_of(g);
    VT_CHECK_EQ(s.total, 6);
    VT_CHECK_EQ(s.succeeded, 2);
    VT_CHECK_EQ(s.cancelled + s.skipped, 4);
    VT_CHECK_EQ(s.failed, 0);
    VT_CHECK_EQ(s.retries, 0);
    /* After the run: nothing to cancel. */
    VT_CHECK_OK(vt_graph_cancel(g));
    VT_CHECK_ERR(vt_graph_wait(g, VT_FOREVER), VT_ECANCELED);
    vt_graph_free(g);
    vt_runtime_free(rt);
}

static vt_err body_cancel_own_run(vt_task_ctx *ctx, void *data)
{
    (void)data;
    return vt_graph_cancel(vt_task_graph(vt_ctx_task(ctx)));
}

VT_TEST(run_cancel_from_a_body)
{
    vt_runtime *rt = rt_det(3);
    VT_CHECK_NOT_NULL(rt);
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "selfcancel"));
    tb after = {0};
    vt_task *c = vt_task_add(g, "canceller", body_cancel_own_run, NULL);
    vt_task *a = vt_task_add(g, "after", tb_body, &after);
    VT_CHECK_OK(vt_task_precede(c, a));
    VT_CHECK_ERR(vt_graph_run(g, rt, NULL), VT_ECANCELED);
    VT_CHECK_EQ(vt_task_state_get(c), VT_TASK_SUCCEEDED);
    VT_CHECK_EQ(vt_task_state_get(a), VT_TASK_CANCELLED);
    VT_CHECK_EQ(atomic_load(&after.starts), 0);
    vt_graph_free(g);
    vt_runtime_free(rt);
}

VT_TEST(group_cancel)
{
    vt_runtime *rt = rt_new(3);
    VT_CHECK_NOT_NULL(rt);
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "groups"));
    VT_CHECK_NULL(vt_graph_group(g, NULL));
    VT_CHECK_NULL(vt_graph_group(g, ""));
    VT_CHECK_NULL(vt_graph_group(NULL, "x"));
    vt_group *grp = vt_graph_group(g, "victims");
    VT_CHECK_NOT_NULL(grp);
    VT_CHECK_PTR_EQ(vt_graph_group(g, "victims"), grp);
    vt_group *other_grp = vt_graph_group(g, "others");
    VT_CHECK_NOT_NULL(other_grp);
    VT_CHECK(other_grp != grp);
    VT_CHECK_OK(vt_group_cancel(grp)); /* not running: nothing to do */

    gate release = {0};
    tb gspin = {.until_cancelled = 1}, gsleep = {.until_cancelled = 1}, gblock = {.gate = &release};
    tb glate = {0}, gdep = {0}, other = {.gate = &release}, after_other = {0};
    vt_task *t_gspin = vt_task_add(g, "gspin", tb_body, &gspin);
    vt_task *t_gsleep = vt_task_add_async(g, "gsleep", tb_body, &gsleep);
    vt_task *t_gblock = vt_task_add_async(g, "gblock", tb_body, &gblock);
    vt_task *t_glate = vt_task_add(g, "glate", tb_body, &glate);
    vt_task *t_gdep = vt_task_add(g, "gdep", tb_body, &gdep);
    vt_task *t_other = vt_task_add_async(g, "other", tb_body, &other);
    vt_task *t_after = vt_task_add(g, "after-other", tb_body, &after_other);
    VT_CHECK_OK(vt_task_precede(t_gblock, t_glate));
    VT_CHECK_OK(vt_task_precede(t_gspin, t_gdep));
    VT_CHECK_OK(vt_task_precede(t_other, t_after));
    VT_CHECK_OK(vt_task_set_group(t_gspin, grp));
    VT_CHECK_OK(vt_task_set_group(t_gsleep, grp));
    VT_CHECK_OK(vt_task_set_group(t_glate, grp));
    VT_CHECK_OK(vt_task_set_group(t_gspin, grp)); /* again: the same group */
    VT_CHECK_OK(vt_task_set_group(t_other, other_grp));
    VT_CHECK_ERR(vt_task_set_group(NULL, grp), VT_EINVAL);
    VT_CHECK_ERR(vt_task_set_group(t_gdep, NULL), VT_EINVAL);
    vt_retry pol = {.max_attempts = 4, .backoff = VT_BACKOFF_FIXED};
    VT_CHECK_OK(vt_task_set_retry(t_gspin, &pol));

    /* Fail-fast (the default): a cancelled group is no failure of the run. */
    VT_CHECK_OK(vt_graph_start(g, rt, NULL));
    while (!atomic_load(&gspin.starts) || !atomic_load(&gsleep.starts) || !atomic_load(&gblock.starts))
        nap();
    VT_CHECK_OK(vt_group_cancel(grp));
    VT_CHECK_OK(vt_group_cancel(grp));
    gate_open(&release);
    VT_CHECK_ERR(vt_graph_wait(g, VT_FOREVER), VT_EFAILED); /* gdep was skipped */
    VT_CHECK_EQ(vt_task_state_get(t_gspin), VT_TASK_CANCELLED);
    VT_CHECK_EQ(vt_task_state_get(t_gsleep), VT_TASK_CANCELLED);
    VT_CHECK_EQ(vt_task_state_get(t_glate), VT_TASK_CANCELLED);
    VT_CHECK_EQ(vt_task_state_get(t_gdep), VT_TASK_SKIPPED);
    VT_CHECK_EQ(vt_task_state_get(t_gblock), VT_TASK_SUCCEEDED);
    VT_CHECK_EQ(vt_task_state_get(t_other), VT_TASK_SUCCEEDED);
    VT_CHECK_EQ(vt_task_state_get(t_after), VT_TASK_SUCCEEDED);
    VT_CHECK_EQ(atomic_load(&glate.starts) + atomic_load(&gdep.starts), 0);
    VT_CHECK_EQ(atomic_load(&after_other.starts), 1);
    VT_CHECK_EQ(vt_task_attempts(t_gspin), 1);
    VT_CHECK_EQ(atomic_load(&gspin.cancels_seen), 1);
    VT_CHECK_ERR(gsleep.sleep_err, VT_ECANCELED);
    VT_CHECK_ERR(vt_task_error(t_gspin, NULL), VT_ECANCELED);
    vt_run_summary s = summary_of(g);
    VT_CHECK_EQ(s.total, 7);
    VT_CHECK_EQ(s.succeeded, 3);
    VT_CHECK_EQ(s.cancelled, 3);
    VT_CHECK_EQ(s.skipped, 1);
    VT_CHECK_EQ(s.failed, 0);

    /* The cancel lasted until the end of that run only. */
    gspin.until_cancelled = 0;
    gsleep.until_cancelled = 0;
    VT_CHECK_OK(vt_graph_run(g, rt, NULL));
    VT_CHECK_EQ(vt_task_state_get(t_gspin), VT_TASK_SUCCEEDED);
    VT_CHECK_EQ(vt_task_state_get(t_glate), VT_TASK_SUCCEEDED);
    VT_CHECK_EQ(atomic_load(&glate.starts), 1);
    vt_graph_free(g);
    vt_runtime_free(rt);
}

/* ---- Waiting, and what a running graph refuses ----------------------------------------- */

typedef struct inner {
    vt_runtime *rt;
    vt_err start, wait, add_sub;
} inner;

static vt_err body_inner(vt_task_ctx *ctx, void *data)
{
    inner *in = data;
    vt_graph *g = vt_task_graph(vt_ctx_task(ctx));
    in->start = vt_graph_start(g, in->rt, NULL);
    in->wait = vt_graph_wait(g, VT_NOW);
    return VT_OK;
}

VT_TEST(wait_timeout_and_busy)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "busy"));
    gate release = {0};
    tb held = {.gate = &release};
    inner in = {.rt = rt, .start = -1, .wait = -1};
    vt_task *t = vt_task_add(g, "held", tb_body, &held);
    vt_task *t2 = vt_task_add(g, "inner", body_inner, &in);
    VT_CHECK_OK(vt_task_precede(t2, t));
    VT_CHECK_OK(vt_graph_start(g, rt, NULL));
    while (!atomic_load(&held.starts))
        nap();
    VT_CHECK_ERR(vt_graph_wait(g, VT_NOW), VT_ETIMEDOUT);
    VT_CHECK_ERR(vt_graph_wait(g, vt_now_ns() + 2 * MS), VT_ETIMEDOUT);
    VT_CHECK_EQ(vt_task_state_get(t), VT_TASK_RUNNING);
    VT_CHECK_EQ(vt_task_state_get(t2), VT_TASK_SUCCEEDED);
    vt_run_summary s = summary_of(g);
    VT_CHECK_EQ(s.total, 2);
    VT_CHECK_EQ(s.succeeded, 1);
    VT_CHECK_EQ(s.ended_ns, 0);

    VT_CHECK_ERR(vt_graph_start(g, rt, NULL), VT_EBUSY);
    VT_CHECK_ERR(vt_graph_run(g, rt, NULL), VT_EBUSY);
    VT_CHECK_ERR(vt_graph_validate(g), VT_EBUSY);
    VT_CHECK_NULL(vt_task_add(g, "new", body_ok, NULL));
    VT_CHECK_NULL(vt_task_add_async(g, "new", body_ok, NULL));
    VT_CHECK_ERR(vt_task_precede(t2, t), VT_EBUSY);
    VT_CHECK_ERR(vt_task_depend(t, "inner"), VT_EBUSY);
    vt_retry pol = {.max_attempts = 2};
    VT_CHECK_ERR(vt_task_set_retry(t, &pol), VT_EBUSY);
    VT_CHECK_ERR(vt_task_set_timeout(t, MS), VT_EBUSY);
    VT_CHECK_ERR(vt_task_set_fingerprint(t, "k", 1), VT_EBUSY);
    VT_CHECK_OK(vt_task_set_priority(t, 5)); /* any time */
    VT_CHECK_EQ(vt_task_priority(t), 5);
    VT_CHECK_EQ(vt_graph_size(g), 2);

    gate_open(&release);
    VT_CHECK_OK(vt_graph_wait(g, VT_FOREVER));
    VT_CHECK_OK(vt_graph_wait(g, VT_NOW));
    VT_CHECK_ERR(in.start, VT_EBUSY);
    VT_CHECK_ERR(in.wait, VT_EDEADLK);
    VT_CHECK_EQ(vt_task_state_get(t), VT_TASK_SUCCEEDED);
    s = summary_of(g);
    VT_CHECK_GE(s.ended_ns, s.started_ns);
    VT_CHECK_GT(s.ended_ns, 0);
    vt_graph_free(g);
    vt_runtime_free(rt);
}

typedef struct errlog {
    _Atomic long errors;
} errlog;

static void count_errors(void *ud, vt_log_level level, const char *module, const char *msg)
{
    (void)module;
    (void)msg;
    if (level == VT_LOG_ERROR)
        atomic_fetch_add(&((errlog *)ud)->errors, 1);
}

typedef struct opener {
    errlog *log;
    gate *gate;
} opener;

/* Opens the gate once vt_graph_free has complained. */
static void *open_after_error(void *arg)
{
    opener *o = arg;
    while (atomic_load(&o->log->errors) == 0)
        nap();
    gate_open(o->gate);
    return NULL;
}

VT_TEST(free_while_running_waits)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "freed"));
    static _Atomic long runs;
    atomic_store(&runs, 0);
    gate release = {0};
    static tb held;
    memset(&held, 0, sizeof held);
    held.gate = &release;
    vt_task *h = vt_task_add_async(g, "held", tb_body, &held);
    vt_task *prev = h;
    for (int i = 0; i < 200; i++) {
        vt_task *t = i % 3 ? vt_task_add(g, NULL, body_count, &runs) : vt_task_add_async(g, NULL, body_count, &runs);
        if (i % 4)
            vt_task_precede(prev, t);
        prev = t;
    }
    static errlog el;
    atomic_store(&el.errors, 0);
    opener op = {&el, &release};
    pthread_t th;
    VT_CHECK_EQ(pthread_create(&th, NULL, open_after_error, &op), 0);
    VT_CHECK_OK(vt_graph_start(g, rt, NULL));
    vt_log_set_handler(count_errors, &el);
    vt_graph_free(g); /* complains, waits for the run */
    vt_log_set_handler(NULL, NULL);
    pthread_join(th, NULL);
    VT_CHECK_EQ(atomic_load(&runs), 200);
    VT_CHECK_EQ(atomic_load(&held.ends), 1);
    VT_CHECK_GE(atomic_load(&el.errors), 1);
    vt_runtime_free(rt);
}

VT_TEST(two_graphs_at_once_on_one_runtime)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_graph *g1, *g2;
    VT_CHECK_OK(vt_graph_new(&g1, "one"));
    VT_CHECK_OK(vt_graph_new(&g2, "two"));
    _Atomic long r1 = 0, r2 = 0;
    for (int i = 0; i < 500; i++) {
        vt_task_add(g1, NULL, body_count, &r1);
        vt_task_add_async(g2, NULL, body_count, &r2);
    }
    VT_CHECK_OK(vt_graph_start(g1, rt, NULL));
    VT_CHECK_OK(vt_graph_start(g2, rt, NULL));
    VT_CHECK_OK(vt_graph_wait(g2, VT_FOREVER));
    VT_CHECK_OK(vt_graph_wait(g1, VT_FOREVER));
    VT_CHECK_EQ(atomic_load(&r1), 500);
    VT_CHECK_EQ(atomic_load(&r2), 500);
    vt_graph_free(g1);
    vt_graph_free(g2);
    vt_runtime_free(rt);
}

/* ---- Out of memory -------------------------------------------------------------------- */

static vt_err body_busy_ctx(vt_task_ctx *ctx, void *data)
{
    (void)data;
    vt_ctx_log(ctx, VT_LOG_DEBUG, "a line");
    vt_err e = vt_ctx_set_result(ctx, "result", 7);
    if (e)
        return e;
    return vt_ctx_add(ctx, "sub", body_ok, NULL) ? VT_OK : VT_ENOMEM;
}

static vt_graph *oom_graph(void)
{
    vt_graph *g;
    if (vt_graph_new(&g, "oom"))
        return NULL;
    vt_task *a = vt_task_add(g, "a", body_busy_ctx, NULL);
    vt_task *b = vt_task_add_async(g, "b", body_busy_ctx, NULL);
    vt_task *c = vt_task_add(g, NULL, body_ok, NULL);
    vt_task *d = vt_task_add(g, "d", body_ok, NULL);
    if (!a || !b || !c || !d || vt_task_precede(a, b) || vt_task_precede(a, c) || vt_task_depend(d, "b") ||
        vt_task_precede(a, d)) {
        vt_graph_free(g);
        return NULL;
    }
    return g;
}

/* Every allocation of a run failing in turn: the run reports it (at its
 * start, or as a task's failure), leaks nothing, and the graph runs
 * cleanly afterwards. */
VT_TEST(run_out_of_memory)
{
    vt_runtime *rt = rt_det(13);
    VT_CHECK_NOT_NULL(rt);
    /* Warm the runtime up (stacks, timers): their caches are not leaks. */
    vt_graph *g = oom_graph();
    VT_CHECK_NOT_NULL(g);
    VT_CHECK_OK(vt_graph_run(g, rt, NULL));
    vt_graph_free(g);
    for (long k = 1;; k++) {
        long live = vt_test_alloc_live();
        g = oom_graph();
        VT_CHECK_NOT_NULL(g);
        vt_test_alloc_fail_at(k);
        vt_err e = vt_graph_run(g, rt, NULL);
        long count = vt_test_alloc_count();
        vt_test_alloc_reset();
        if (e != VT_OK && e != VT_ENOMEM && e != VT_EFAILED)
            printf("    allocation %ld failing: %s\n", k, vt_errname(e));
        VT_CHECK(e == VT_OK || e == VT_ENOMEM || e == VT_EFAILED);
        /* Whatever failed, a clean run of the same graph succeeds. */
        VT_CHECK_OK(vt_graph_run(g, rt, NULL));
        VT_CHECK_EQ(summary_of(g).succeeded, 6);
        vt_graph_free(g);
        VT_CHECK_EQ(vt_test_alloc_live(), live);
        if (count < k)
            break; /* the run made fewer than k allocations: all were tried */
        VT_CHECK_LT(k, 10000);
    }
    vt_runtime_free(rt);
}

/* ---- Re-runs -------------------------------------------------------------------------------- */

static _Atomic int rerun_round;

static vt_err body_log_in_round_one(vt_task_ctx *ctx, void *data)
{
    (void)data;
    if (atomic_load(&rerun_round) == 1) {
        vt_ctx_log(ctx, VT_LOG_DEBUG, "round one");
        return vt_ctx_set_result(ctx, "r1", 3);
    }
    return VT_OK;
}

VT_TEST(rerun_gives_fresh_states)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "rerun"));
    tb flaky = {.fail_attempts = 1}, dep = {0};
    vt_task *t_flaky = vt_task_add(g, "flaky", tb_body, &flaky);
    vt_task *t_dep = vt_task_add(g, "dep", tb_body, &dep);
    vt_task *t_res = vt_task_add_async(g, "res", body_log_in_round_one, NULL);
    VT_CHECK_OK(vt_task_precede(t_flaky, t_dep));
    vt_run_opts o = {.on_failure = VT_KEEP_GOING};
    atomic_store(&rerun_round, 1);
    VT_CHECK_ERR(vt_graph_run(g, rt, &o), VT_EFAILED);
    VT_CHECK_EQ(vt_task_state_get(t_flaky), VT_TASK_FAILED);
    VT_CHECK_EQ(vt_task_state_get(t_dep), VT_TASK_SKIPPED);
    VT_CHECK(has(vt_task_log(t_res), "round one"));
    VT_CHECK_OK(vt_task_result(t_res, NULL, NULL));

    /* Second run: flaky's attempt counter restarts, so it fails again... */
    atomic_store(&rerun_round, 2);
    VT_CHECK_ERR(vt_graph_run(g, rt, &o), VT_EFAILED);
    VT_CHECK_EQ(vt_task_attempts(t_flaky), 1);
    VT_CHECK_STR_EQ(vt_task_log(t_res), "");
    VT_CHECK_ERR(vt_task_result(t_res, NULL, NULL), VT_ENOENT);

    /* ...and once it does not, everything is fresh. */
    flaky.fail_attempts = 0;
    VT_CHECK_OK(vt_graph_run(g, rt, NULL));
    VT_CHECK_EQ(vt_task_state_get(t_flaky), VT_TASK_SUCCEEDED);
    VT_CHECK_EQ(vt_task_state_get(t_dep), VT_TASK_SUCCEEDED);
    const char *msg = "x";
    VT_CHECK_OK(vt_task_error(t_flaky, &msg));
    VT_CHECK_STR_EQ(msg, "");
    VT_CHECK_EQ(vt_task_attempts(t_flaky), 1);
    VT_CHECK_EQ(atomic_load(&flaky.starts), 3);
    VT_CHECK_EQ(atomic_load(&dep.starts), 1);
    vt_run_summary s = summary_of(g);
    VT_CHECK_EQ(s.total, 3);
    VT_CHECK_EQ(s.succeeded, 3);
    VT_CHECK_EQ(s.failed + s.skipped, 0);

    /* Many quick re-runs, on another runtime too. */
    vt_runtime *rt2 = rt_det(11);
    VT_CHECK_NOT_NULL(rt2);
    for (int i = 0; i < 50; i++) {
        VT_CHECK_OK(vt_graph_run(g, i % 2 ? rt : rt2, NULL));
        VT_CHECK_EQ(vt_task_state_get(t_dep), VT_TASK_SUCCEEDED);
        VT_CHECK_EQ(summary_of(g).succeeded, 3);
    }
    VT_CHECK_EQ(atomic_load(&dep.starts), 51);
    vt_graph_free(g);
    vt_runtime_free(rt);
    vt_runtime_free(rt2);
}

/* ---- Retries and backoff, on the virtual clock -------------------------------------------- */

/* Runs one task that fails fail_attempts times under policy pol on a
 * deterministic runtime; fills b. Returns the run's result. */
static vt_err run_retried(tb *b, const vt_retry *pol, uint64_t seed, vt_task **out_task, vt_graph **out_g,
                          vt_runtime **out_rt)
{
    vt_runtime *rt = rt_det(seed);
    if (!rt)
        return VT_ENOMEM;
    b->pool = vt_runtime_pool(rt);
    vt_graph *g;
    if (vt_graph_new(&g, "retry"))
        return VT_ENOMEM;
    vt_task *t = vt_task_add(g, "flaky", tb_body, b);
    vt_err e = vt_task_set_retry(t, pol);
    if (e == VT_OK)
        e = vt_graph_run(g, rt, NULL);
    *out_task = t;
    *out_g = g;
    *out_rt = rt;
    return e;
}

static void check_gaps(const tb *b, const int64_t *want, int n)
{
    for (int k = 0; k < n; k++) {
        if (b->at[k + 1] - b->at[k] != want[k])
            printf("    gap %d: %lld ns, want %lld\n", k, (long long)(b->at[k + 1] - b->at[k]),
                   (long long)want[k]);
        VT_CHECK_EQ(b->at[k + 1] - b->at[k], want[k]);
    }
}

VT_TEST(retry_fixed_backoff)
{
    tb b = {.fail_attempts = 100};
    vt_retry pol = {.max_attempts = 4, .backoff = VT_BACKOFF_FIXED, .delay_ns = 5 * MS};
    vt_task *t;
    vt_graph *g;
    vt_runtime *rt;
    VT_CHECK_ERR(run_retried(&b, &pol, 1, &t, &g, &rt), VT_EFAILED);
    VT_CHECK_EQ(vt_task_state_get(t), VT_TASK_FAILED);
    VT_CHECK_EQ(vt_task_attempts(t), 4);
    VT_CHECK_EQ(atomic_load(&b.starts), 4);
    for (unsigned k = 0; k < 4; k++)
        VT_CHECK_EQ(b.attempt_seen[k], k + 1);
    int64_t want[] = {5 * MS, 5 * MS, 5 * MS};
    check_gaps(&b, want, 3);
    const char *msg;
    VT_CHECK_ERR(vt_task_error(t, &msg), VT_EFAILED);
    VT_CHECK_STR_EQ(msg, "boom flaky attempt 4"); /* the last attempt's */
    vt_run_summary s = summary_of(g);
    VT_CHECK_EQ(s.retries, 3);
    VT_CHECK_EQ(s.failed, 1);
    vt_graph_free(g);
    vt_runtime_free(rt);
}

VT_TEST(retry_exponential_backoff_with_cap)
{
    tb b = {.fail_attempts = 100};
    vt_retry pol = {.max_attempts = 6, .backoff = VT_BACKOFF_EXPONENTIAL, .delay_ns = 1 * MS,
                    .max_delay_ns = 5 * MS};
    vt_task *t;
    vt_graph *g;
    vt_runtime *rt;
    VT_CHECK_ERR(run_retried(&b, &pol, 2, &t, &g, &rt), VT_EFAILED);
    VT_CHECK_EQ(vt_task_attempts(t), 6);
    int64_t want[] = {1 * MS, 2 * MS, 4 * MS, 5 * MS, 5 * MS};
    check_gaps(&b, want, 5);
    VT_CHECK_EQ(summary_of(g).retries, 5);
    vt_graph_free(g);
    vt_runtime_free(rt);

    /* No cap: doubling all the way. */
    tb b2 = {.fail_attempts = 100};
    vt_retry pol2 = {.max_attempts = 5, .backoff = VT_BACKOFF_EXPONENTIAL, .delay_ns = 3 * MS};
    VT_CHECK_ERR(run_retried(&b2, &pol2, 3, &t, &g, &rt), VT_EFAILED);
    int64_t want2[] = {3 * MS, 6 * MS, 12 * MS, 24 * MS};
    check_gaps(&b2, want2, 4);
    vt_graph_free(g);
    vt_runtime_free(rt);

    /* A zero delay retries at once. */
    tb b3 = {.fail_attempts = 100};
    vt_retry pol3 = {.max_attempts = 3, .backoff = VT_BACKOFF_EXPONENTIAL};
    VT_CHECK_ERR(run_retried(&b3, &pol3, 3, &t, &g, &rt), VT_EFAILED);
    int64_t want3[] = {0, 0};
    check_gaps(&b3, want3, 2);
    vt_graph_free(g);
    vt_runtime_free(rt);
}

/* The gaps of a run with jitter, for a seed. The graph and runtime are
 * left to the caller, so that the next run's live at other addresses:
 * nothing but the seed may decide the delays. */
static void jitter_gaps(uint64_t seed, vt_backoff bo, int64_t *gaps, int n, int *failed, vt_graph **g,
                        vt_runtime **rt)
{
    tb b = {.fail_attempts = 1000};
    vt_retry pol = {.max_attempts = (unsigned)n + 1, .backoff = bo, .delay_ns = 10 * MS,
                    .max_delay_ns = 100 * MS, .jitter = 0.5};
    vt_task *t;
    *failed = run_retried(&b, &pol, seed, &t, g, rt) != VT_EFAILED || vt_task_attempts(t) != (unsigned)n + 1;
    for (int k = 0; k < n; k++)
        gaps[k] = b.at[k + 1] - b.at[k];
}

VT_TEST(retry_jitter_within_bounds_and_seeded)
{
    enum { N = 12 };
    for (int bo = 0; bo < 2; bo++) {
        int64_t g1[N], g2[N];
        int f1, f2;
        vt_graph *gr1, *gr2;
        vt_runtime *rt1, *rt2;
        jitter_gaps(99, (vt_backoff)bo, g1, N, &f1, &gr1, &rt1);
        jitter_gaps(99, (vt_backoff)bo, g2, N, &f2, &gr2, &rt2);
        vt_graph_free(gr1);
        vt_graph_free(gr2);
        vt_runtime_free(rt1);
        vt_runtime_free(rt2);
        VT_CHECK(!f1 && !f2);
        int differs_from_base = 0;
        int64_t base = 10 * MS;
        for (int k = 0; k < N; k++) {
            /* Each delay in [base (1 - j), base (1 + j)], a nanosecond either
             * side for rounding. */
            VT_CHECK_GE(g1[k], base / 2 - 1);
            VT_CHECK_LE(g1[k], base + base / 2 + 1);
            VT_CHECK_EQ(g1[k], g2[k]); /* same seed, same delays */
            differs_from_base |= g1[k] != base;
            if (bo == VT_BACKOFF_EXPONENTIAL)
                base = base * 2 > 100 * MS ? 100 * MS : base * 2;
        }
        VT_CHECK(differs_from_base);
    }
}

VT_TEST(retry_succeeds_on_third_attempt)
{
    vt_runtime *rt = rt_det(5);
    VT_CHECK_NOT_NULL(rt);
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "third"));
    order *o = order_new();
    tb b = {.fail_attempts = 2, .log = o, .pool = vt_runtime_pool(rt), .result = "made it"};
    tb after = {.log = o};
    vt_task *t = vt_task_add(g, "flaky", tb_body, &b);
    vt_task *a = vt_task_add(g, "after", tb_body, &after);
    VT_CHECK_OK(vt_task_precede(t, a));
    vt_retry pol = {.max_attempts = 5, .backoff = VT_BACKOFF_FIXED, .delay_ns = MS};
    VT_CHECK_OK(vt_task_set_retry(t, &pol));
    VT_CHECK_OK(vt_graph_run(g, rt, NULL));
    VT_CHECK_EQ(vt_task_state_get(t), VT_TASK_SUCCEEDED);
    VT_CHECK_EQ(vt_task_attempts(t), 3);
    VT_CHECK_OK(vt_task_error(t, NULL));
    const void *data;
    size_t len;
    VT_CHECK_OK(vt_task_result(t, &data, &len));
    VT_CHECK_EQ(len, 8);
    VT_CHECK_STR_EQ((const char *)data, "made it");
    /* after starts once, after the success. */
    VT_CHECK_EQ(order_len(o), 4);
    VT_CHECK_PTR_EQ(o->t[3], a);
    vt_run_summary s = summary_of(g);
    VT_CHECK_EQ(s.retries, 2);
    VT_CHECK_EQ(s.succeeded, 2);
    VT_CHECK_EQ(s.failed, 0);
    vt_graph_free(g);
    vt_runtime_free(rt);
    free(o);
}

VT_TEST(retry_of_a_body_returning_ecanceled)
{
    /* VT_ECANCELED that no cancellation caused is a failure like another. */
    tb b = {.fail_attempts = 2, .fail_with = VT_ECANCELED};
    vt_retry pol = {.max_attempts = 3, .backoff = VT_BACKOFF_FIXED, .delay_ns = MS};
    vt_task *t;
    vt_graph *g;
    vt_runtime *rt;
    VT_CHECK_OK(run_retried(&b, &pol, 4, &t, &g, &rt));
    VT_CHECK_EQ(vt_task_attempts(t), 3);
    VT_CHECK_EQ(vt_task_state_get(t), VT_TASK_SUCCEEDED);
    vt_graph_free(g);
    vt_runtime_free(rt);

    /* Without retries the task fails with that code (VT_ECANCELED). */
    tb b2 = {.fail_attempts = 1, .fail_with = VT_ETIMEDOUT};
    vt_retry one = {.max_attempts = 1};
    VT_CHECK_ERR(run_retried(&b2, &one, 4, &t, &g, &rt), VT_EFAILED);
    VT_CHECK_EQ(vt_task_attempts(t), 1);
    VT_CHECK_ERR(vt_task_error(t, NULL), VT_ETIMEDOUT);
    vt_graph_free(g);
    vt_runtime_free(rt);
}

VT_TEST(retry_policy_errors)
{
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "policies"));
    vt_task *t = vt_task_add(g, "t", body_ok, NULL);
    const int64_t day = 86400LL * 1000000000LL;
    vt_retry ok[] = {
        {.max_attempts = 1},
        {.max_attempts = 1000, .backoff = VT_BACKOFF_EXPONENTIAL, .delay_ns = day, .max_delay_ns = day},
        {.max_attempts = 3, .jitter = 1.0},
        {.max_attempts = 3, .jitter = 0.0, .delay_ns = 0},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        VT_CHECK_OK(vt_task_set_retry(t, &ok[i]));
    VT_CHECK_OK(vt_task_set_retry(t, NULL));
    vt_retry bad[] = {
        {.max_attempts = 0},
        {.max_attempts = 1001},
        {.max_attempts = 2, .delay_ns = -1},
        {.max_attempts = 2, .delay_ns = day + 1},
        {.max_attempts = 2, .max_delay_ns = -1},
        {.max_attempts = 2, .max_delay_ns = day + 1},
        {.max_attempts = 2, .jitter = -0.01},
        {.max_attempts = 2, .jitter = 1.01},
        {.max_attempts = 2, .jitter = NAN},
        {.max_attempts = 2, .backoff = (vt_backoff)2},
        {.max_attempts = 2, .backoff = (vt_backoff)-1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        vt_graph *g2;
        VT_CHECK_OK(vt_graph_new(&g2, "bad"));
        vt_task *t2 = vt_task_add(g2, "t", body_ok, NULL);
        if (vt_task_set_retry(t2, &bad[i]) != VT_EINVAL)
            printf("    bad policy %zu accepted\n", i);
        VT_CHECK_ERR(vt_task_set_retry(t2, &bad[i]), VT_EINVAL);
        vt_graph_free(g2);
    }
    VT_CHECK_ERR(vt_task_set_retry(NULL, &ok[0]), VT_EINVAL);
    vt_graph_free(g);

    /* NULL removes the policy. */
    tb b = {.fail_attempts = 100};
    vt_retry pol = {.max_attempts = 4};
    vt_runtime *rt = rt_det(1);
    VT_CHECK_NOT_NULL(rt);
    VT_CHECK_OK(vt_graph_new(&g, "none"));
    t = vt_task_add(g, "t", tb_body, &b);
    VT_CHECK_OK(vt_task_set_retry(t, &pol));
    VT_CHECK_OK(vt_task_set_retry(t, NULL));
    VT_CHECK_ERR(vt_graph_run(g, rt, NULL), VT_EFAILED);
    VT_CHECK_EQ(vt_task_attempts(t), 1);
    VT_CHECK_OK(vt_task_set_retry(t, &pol));
    VT_CHECK_ERR(vt_graph_run(g, rt, NULL), VT_EFAILED);
    VT_CHECK_EQ(vt_task_attempts(t), 4);
    vt_graph_free(g);
    vt_runtime_free(rt);
}

/* ---- Timeouts ------------------------------------------------------------------------------ */

VT_TEST(timeout_cancels_an_async_task)
{
    vt_runtime *rt = rt_det(21);
    VT_CHECK_NOT_NULL(rt);
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "timeout"));
    tb slow = {.sleep_ns = 10000 * MS, .pool = vt_runtime_pool(rt)};
    tb dep = {0};
    vt_task *t = vt_task_add_async(g, "slow", tb_body, &slow);
    vt_task *d = vt_task_add(g, "dep", tb_body, &dep);
    VT_CHECK_OK(vt_task_precede(t, d));
    VT_CHECK_OK(vt_task_set_timeout(t, 5 * MS));
    VT_CHECK_ERR(vt_graph_run(g, rt, NULL), VT_EFAILED);
    VT_CHECK_EQ(vt_task_state_get(t), VT_TASK_FAILED);
    VT_CHECK_ERR(vt_task_error(t, NULL), VT_ETIMEDOUT);
    VT_CHECK_ERR(slow.sleep_err, VT_ECANCELED);
    VT_CHECK_EQ(slow.woke_at - slow.at[0], 5 * MS);
    VT_CHECK_EQ(vt_task_state_get(d), VT_TASK_SKIPPED);
    VT_CHECK_EQ(vt_task_attempts(t), 1);

    /* Retried per policy: every attempt gets its own deadline. */
    tb slow2 = {.sleep_ns = 10000 * MS, .pool = vt_runtime_pool(rt)};
    vt_graph *g2;
    VT_CHECK_OK(vt_graph_new(&g2, "timeout-retry"));
    vt_task *t2 = vt_task_add_async(g2, "slow", tb_body, &slow2);
    VT_CHECK_OK(vt_task_set_timeout(t2, 5 * MS));
    vt_retry pol = {.max_attempts = 3, .backoff = VT_BACKOFF_FIXED, .delay_ns = 1 * MS};
    VT_CHECK_OK(vt_task_set_retry(t2, &pol));
    VT_CHECK_ERR(vt_graph_run(g2, rt, NULL), VT_EFAILED);
    VT_CHECK_EQ(vt_task_attempts(t2), 3);
    VT_CHECK_ERR(vt_task_error(t2, NULL), VT_ETIMEDOUT);
    VT_CHECK_EQ(slow2.at[1] - slow2.at[0], 6 * MS);
    VT_CHECK_EQ(slow2.at[2] - slow2.at[1], 6 * MS);
    VT_CHECK_EQ(atomic_load(&slow2.cancels_seen), 3);
    VT_CHECK_EQ(summary_of(g2).retries, 2);

    /* A task done before its deadline succeeds, and its timer does not
     * outlive the run. */
    tb quick = {.sleep_ns = 1 * MS, .pool = vt_runtime_pool(rt)};
    vt_graph *g3;
    VT_CHECK_OK(vt_graph_new(&g3, "quick"));
    vt_task *t3 = vt_task_add_async(g3, "quick", tb_body, &quick);
    VT_CHECK_OK(vt_task_set_timeout(t3, 5000 * MS));
    vt_task *t4 = vt_task_add(g3, "quick-sync", body_ok, NULL);
    VT_CHECK_OK(vt_task_set_timeout(t4, 5000 * MS));
    VT_CHECK_OK(vt_graph_run(g3, rt, NULL));
    VT_CHECK_EQ(vt_task_state_get(t3), VT_TASK_SUCCEEDED);
    VT_CHECK_OK(quick.sleep_err);
    vt_graph_free(g);
    vt_graph_free(g2);
    vt_graph_free(g3);
    vt_runtime_free(rt);
}

VT_TEST(timeout_stops_a_sync_task_that_checks)
{
    /* A sync body holds its thread: the deadline can only be seen on a
     * threaded runtime, through vt_ctx_cancelled. */
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "sync-timeout"));
    tb spin = {.until_cancelled = 1}, other = {0};
    vt_task *t = vt_task_add(g, "spin", tb_body, &spin);
    vt_task *o = vt_task_add(g, "other", tb_body, &other);
    VT_CHECK_OK(vt_task_set_timeout(t, 3 * MS));
    vt_retry pol = {.max_attempts = 2, .backoff = VT_BACKOFF_FIXED, .delay_ns = MS};
    VT_CHECK_OK(vt_task_set_retry(t, &pol));
    vt_run_opts opts = {.on_failure = VT_KEEP_GOING};
    VT_CHECK_ERR(vt_graph_run(g, rt, &opts), VT_EFAILED);
    VT_CHECK_EQ(vt_task_state_get(t), VT_TASK_FAILED);
    VT_CHECK_ERR(vt_task_error(t, NULL), VT_ETIMEDOUT);
    VT_CHECK_EQ(vt_task_attempts(t), 2);
    VT_CHECK_EQ(atomic_load(&spin.cancels_seen), 2);
    VT_CHECK_EQ(vt_task_state_get(o), VT_TASK_SUCCEEDED);
    vt_graph_free(g);
    vt_runtime_free(rt);

    /* Setter errors. */
    VT_CHECK_OK(vt_graph_new(&g, "errs"));
    t = vt_task_add(g, "t", body_ok, NULL);
    VT_CHECK_ERR(vt_task_set_timeout(NULL, MS), VT_EINVAL);
    VT_CHECK_ERR(vt_task_set_timeout(t, -1), VT_EINVAL);
    VT_CHECK_OK(vt_task_set_timeout(t, 0));
    VT_CHECK_OK(vt_task_set_timeout(t, INT64_MAX));
    vt_graph_free(g);
}

/* ---- Priorities --------------------------------------------------------------------------- */

enum { NPRIO = 24 };

typedef struct prio_run {
    vt_task *t[NPRIO];
    order *o;
    vt_task *raise_first;  /* the first of t[] to start raises this one */
    int raise_to;
    vt_task *raise_in_gate;
    _Atomic int raised;
    vt_err raise_err;
} prio_run;

static vt_err body_prio(vt_task_ctx *ctx, void *data)
{
    prio_run *p = data;
    order_push(p->o, vt_ctx_task(ctx));
    if (p->raise_first && !atomic_exchange(&p->raised, 1))
        p->raise_err = vt_task_set_priority(p->raise_first, p->raise_to);
    return VT_OK;
}

static vt_err body_prio_gate(vt_task_ctx *ctx, void *data)
{
    prio_run *p = data;
    (void)ctx;
    if (p->raise_in_gate)
        p->raise_err = vt_task_set_priority(p->raise_in_gate, p->raise_to);
    return VT_OK;
}

/* A gate task, then NPRIO tasks behind it (ready all at once when it ends)
 * with the priorities prio[], on a one-worker runtime. */
static vt_graph *prio_graph(prio_run *p, const int *prio)
{
    vt_graph *g;
    if (vt_graph_new(&g, "prio"))
        return NULL;
    vt_task *gate_t = vt_task_add(g, "gate", body_prio_gate, p);
    for (int i = 0; i < NPRIO; i++) {
        char name[16];
        snprintf(name, sizeof name, "p%d", i);
        p->t[i] = vt_task_add(g, name, body_prio, p);
        vt_task_precede(gate_t, p->t[i]);
        if (prio)
            vt_task_set_priority(p->t[i], prio[i]);
    }
    return g;
}

/* The priorities in start order never increase. */
static void check_prio_order(prio_run *p, size_t from)
{
    VT_CHECK_EQ(order_len(p->o), NPRIO);
    for (size_t i = from + 1; i < NPRIO; i++) {
        int a = vt_task_priority(p->o->t[i - 1]), b = vt_task_priority(p->o->t[i]);
        if (a < b)
            printf("    start %zu: priority %d before %d\n", i, a, b);
        VT_CHECK_GE(a, b);
    }
}

static void shuffled_prios(int *prio)
{
    for (int i = 0; i < NPRIO; i++)
        prio[i] = (i - NPRIO / 2) * 100;
    for (int i = NPRIO - 1; i > 0; i--) {
        int j = (int)(vt_test_rand() % (uint64_t)(i + 1));
        int x = prio[i];
        prio[i] = prio[j];
        prio[j] = x;
    }
}

VT_TEST(priority_orders_ready_tasks)
{
    for (int det = 0; det < 2; det++) {
        vt_runtime *rt = det ? rt_det(vt_test_rand()) : rt_new(1);
        VT_CHECK_NOT_NULL(rt);
        prio_run p;
        memset(&p, 0, sizeof p);
        p.o = order_new();
        int prio[NPRIO];
        shuffled_prios(prio);
        vt_graph *g = prio_graph(&p, prio);
        VT_CHECK_NOT_NULL(g);
        VT_CHECK_OK(vt_graph_run(g, rt, NULL));
        check_prio_order(&p, 0);
        /* Extremes and equal priorities. */
        VT_CHECK_OK(vt_task_set_priority(p.t[0], VT_PRIORITY_MIN));
        VT_CHECK_OK(vt_task_set_priority(p.t[1], VT_PRIORITY_MAX));
        VT_CHECK_OK(vt_task_set_priority(p.t[2], 0));
        VT_CHECK_OK(vt_task_set_priority(p.t[3], 0));
        atomic_store(&p.o->n, 0);
        VT_CHECK_OK(vt_graph_run(g, rt, NULL));
        check_prio_order(&p, 0);
        VT_CHECK_PTR_EQ(p.o->t[0], p.t[1]);
        VT_CHECK_PTR_EQ(p.o->t[NPRIO - 1], p.t[0]);
        vt_graph_free(g);
        vt_runtime_free(rt);
        free(p.o);
    }
}

VT_TEST(priority_changed_during_the_run)
{
    for (int det = 0; det < 2; det++) {
        vt_runtime *rt = det ? rt_det(vt_test_rand()) : rt_new(1);
        VT_CHECK_NOT_NULL(rt);
        prio_run p;
        memset(&p, 0, sizeof p);
        p.o = order_new();
        p.raise_err = -1;
        int prio[NPRIO];
        shuffled_prios(prio);
        /* The first to start lifts the lowest, ready and waiting, to the top. */
        int lo = 0;
        for (int i = 1; i < NPRIO; i++)
            if (prio[i] < prio[lo])
                lo = i;
        vt_graph *g = prio_graph(&p, prio);
        VT_CHECK_NOT_NULL(g);
        p.raise_first = p.t[lo];
        p.raise_to = VT_PRIORITY_MAX;
        VT_CHECK_OK(vt_graph_run(g, rt, NULL));
        VT_CHECK_OK(p.raise_err);
        VT_CHECK_EQ(order_len(p.o), NPRIO);
        VT_CHECK_PTR_EQ(p.o->t[1], p.t[lo]);
        VT_CHECK_EQ(vt_task_priority(p.t[lo]), VT_PRIORITY_MAX);
        check_prio_order(&p, 1);
        vt_graph_free(g);
        free(p.o);

        /* Raised while still pending (by the gate task): first to start. */
        memset(&p, 0, sizeof p);
        p.o = order_new();
        g = prio_graph(&p, prio);
        VT_CHECK_NOT_NULL(g);
        p.raise_in_gate = p.t[lo];
        p.raise_to = 30000;
        p.raise_err = -1;
        VT_CHECK_OK(vt_graph_run(g, rt, NULL));
        VT_CHECK_OK(p.raise_err);
        VT_CHECK_PTR_EQ(p.o->t[0], p.t[lo]);
        check_prio_order(&p, 0);
        vt_graph_free(g);
        free(p.o);

        /* Every task at 0 when the run starts: opts.priorities keeps the
         * changes honoured. */
        memset(&p, 0, sizeof p);
        p.o = order_new();
        g = prio_graph(&p, NULL);
        VT_CHECK_NOT_NULL(g);
        p.raise_in_gate = p.t[NPRIO - 3];
        p.raise_to = 7;
        p.raise_err = -1;
        vt_run_opts o = {.priorities = 1};
        VT_CHECK_OK(vt_graph_run(g, rt, &o));
        VT_CHECK_OK(p.raise_err);
        VT_CHECK_PTR_EQ(p.o->t[0], p.t[NPRIO - 3]);
        vt_graph_free(g);
        free(p.o);
        vt_runtime_free(rt);
    }
}

VT_TEST(priority_errors)
{
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "prio-errors"));
    vt_task *t = vt_task_add(g, "t", body_ok, NULL);
    VT_CHECK_ERR(vt_task_set_priority(NULL, 1), VT_EINVAL);
    VT_CHECK_ERR(vt_task_set_priority(t, VT_PRIORITY_MAX + 1), VT_ERANGE);
    VT_CHECK_ERR(vt_task_set_priority(t, VT_PRIORITY_MIN - 1), VT_ERANGE);
    VT_CHECK_ERR(vt_task_set_priority(t, INT32_MAX), VT_ERANGE);
    VT_CHECK_EQ(vt_task_priority(t), 0);
    VT_CHECK_OK(vt_task_set_priority(t, VT_PRIORITY_MAX));
    VT_CHECK_EQ(vt_task_priority(t), VT_PRIORITY_MAX);
    VT_CHECK_OK(vt_task_set_priority(t, VT_PRIORITY_MIN));
    VT_CHECK_EQ(vt_task_priority(t), VT_PRIORITY_MIN);
    /* A range error is no building error. */
    VT_CHECK_OK(vt_graph_validate(g));
    vt_graph_free(g);
}

/* ---- Subtasks ---------------------------------------------------------------------------- */

typedef struct subs {
    order *o;
    int depth;          /* levels of subtasks below this one */
    int fanout;
    int chain;          /* the subtasks run one after another */
    int fail_leaf;      /* the leaf named "c1" fails */
    int async;
    _Atomic long bodies;
    _Atomic long parent_running;  /* subtasks that saw their parent RUNNING */
    _Atomic long parent_checked;
    vt_err add_err;
} subs;

static vt_err body_subs(vt_task_ctx *ctx, void *data)
{
    subs *s = data;
    vt_task *me = vt_ctx_task(ctx);
    order_push(s->o, me);
    atomic_fetch_add(&s->bodies, 1);
    const char *name = vt_task_name(me);
    /* My parent is the name up to the last '/'. */
    const char *slash = strrchr(name, '/');
    if (slash) {
        char parent[256];
        snprintf(parent, sizeof parent, "%.*s", (int)(slash - name), name);
        vt_task *p = vt_graph_find(vt_task_graph(me), parent);
        atomic_fetch_add(&s->parent_checked, 1);
        if (p && vt_task_state_get(p) == VT_TASK_RUNNING)
            atomic_fetch_add(&s->parent_running, 1);
    }
    if (s->fail_leaf && !strcmp(slash ? slash + 1 : name, "c1") && s->depth == 1)
        return vt_ctx_fail(ctx, "leaf failed");
    int level = 0;
    for (const char *c = name; *c; c++)
        level += *c == '/';
    if (level >= s->depth)
        return VT_OK;
    vt_task *prev = NULL;
    for (int i = 0; i < s->fanout; i++) {
        char sub[16];
        snprintf(sub, sizeof sub, "c%d", i);
        vt_task *t = s->async && i % 2 ? vt_ctx_add_async(ctx, sub, body_subs, s)
                                       : vt_ctx_add(ctx, sub, body_subs, s);
        if (!t)
            return VT_ENOMEM;
        if (s->chain && prev) {
            vt_err e = vt_task_precede(prev, t);
            if (e)
                s->add_err = e;
        }
        prev = t;
    }
    return VT_OK;
}

VT_TEST(subtasks_run_before_the_parent_ends)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "subs"));
    subs s = {.o = order_new(), .depth = 1, .fanout = 3, .async = 1};
    tb after = {.log = s.o};
    vt_task *p = vt_task_add(g, "P", body_subs, &s);
    vt_task *d = vt_task_add(g, "D", tb_body, &after);
    VT_CHECK_OK(vt_task_precede(p, d));
    VT_CHECK_OK(vt_graph_run(g, rt, NULL));
    VT_CHECK_EQ(atomic_load(&s.bodies), 4);
    VT_CHECK_EQ(order_len(s.o), 5);
    VT_CHECK_PTR_EQ(s.o->t[0], p);
    VT_CHECK_PTR_EQ(s.o->t[4], d);
    VT_CHECK_EQ(vt_graph_size(g), 2);
    const char *names[] = {"P/c0", "P/c1", "P/c2"};
    for (int i = 0; i < 3; i++) {
        vt_task *c = vt_graph_find(g, names[i]);
        VT_CHECK_NOT_NULL(c);
        VT_CHECK_STR_EQ(vt_task_name(c), names[i]);
        VT_CHECK_EQ(vt_task_state_get(c), VT_TASK_SUCCEEDED);
        VT_CHECK_GT(order_pos(s.o, c), 0);
    }
    VT_CHECK_NULL(vt_graph_find(g, "P/c3"));
    VT_CHECK_NULL(vt_graph_find(g, "c0"));
    VT_CHECK_EQ(atomic_load(&s.parent_running), atomic_load(&s.parent_checked));
    VT_CHECK_EQ(atomic_load(&s.parent_checked), 3);
    VT_CHECK_EQ(vt_task_state_get(p), VT_TASK_SUCCEEDED);
    vt_run_summary sum = summary_of(g);
    VT_CHECK_EQ(sum.total, 5);
    VT_CHECK_EQ(sum.succeeded, 5);
    vt_graph_free(g);
    vt_runtime_free(rt);
    free(s.o);
}

VT_TEST(subtasks_in_a_chain_and_nested)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "nested"));
    subs s = {.o = order_new(), .depth = 3, .fanout = 3, .chain = 1, .async = 1};
    tb after = {.log = s.o};
    vt_task *p = vt_task_add_async(g, "P", body_subs, &s);
    vt_task *d = vt_task_add(g, "D", tb_body, &after);
    VT_CHECK_OK(vt_task_precede(p, d));
    VT_CHECK_OK(vt_graph_run(g, rt, NULL));
    VT_CHECK_OK(s.add_err);
    VT_CHECK_EQ(atomic_load(&s.bodies), 1 + 3 + 9 + 27);
    VT_CHECK_PTR_EQ(s.o->t[order_len(s.o) - 1], d);
    VT_CHECK_EQ(atomic_load(&s.parent_running), atomic_load(&s.parent_checked));
    /* Every subtask found by its full name; siblings ran in their chain's
     * order, a parent's subtasks (all its descendants) before its next
     * sibling. */
    char name[64];
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
            for (int c = 0; c < 3; c++) {
                snprintf(name, sizeof name, "P/c%d/c%d/c%d", a, b, c);
                vt_task *t = vt_graph_find(g, name);
                VT_CHECK_NOT_NULL(t);
                VT_CHECK_EQ(vt_task_state_get(t), VT_TASK_SUCCEEDED);
                if (a < 2) {
                    snprintf(name, sizeof name, "P/c%d", a + 1);
                    VT_CHECK_LT(order_pos(s.o, t), order_pos(s.o, vt_graph_find(g, name)));
                }
                if (c) {
                    snprintf(name, sizeof name, "P/c%d/c%d/c%d", a, b, c - 1);
                    VT_CHECK_GT(order_pos(s.o, t), order_pos(s.o, vt_graph_find(g, name)));
                }
            }
    vt_run_summary sum = summary_of(g);
    VT_CHECK_EQ(sum.total, 41);
    VT_CHECK_EQ(sum.succeeded, 41);
    vt_graph_free(g);
    vt_runtime_free(rt);
    free(s.o);
}

VT_TEST(subtask_failure_fails_the_parent)
{
    for (int mode = 0; mode < 2; mode++) {
        vt_runtime *rt = rt_new(2);
        VT_CHECK_NOT_NULL(rt);
        vt_graph *g;
        VT_CHECK_OK(vt_graph_new(&g, "subfail"));
        subs s = {.o = order_new(), .depth = 1, .fanout = 3, .fail_leaf = 1, .chain = 1};
        tb after = {0}, indep = {0};
        vt_task *p = vt_task_add(g, "P", body_subs, &s);
        vt_task *d = vt_task_add(g, "D", tb_body, &after);
        vt_task *i = vt_task_add(g, "I", tb_body, &indep);
        VT_CHECK_OK(vt_task_precede(p, d));
        vt_run_opts o = {.on_failure = mode ? VT_KEEP_GOING : VT_FAIL_FAST};
        VT_CHECK_ERR(vt_graph_run(g, rt, &o), VT_EFAILED);
        VT_CHECK_EQ(vt_task_state_get(p), VT_TASK_FAILED);
        VT_CHECK_EQ(vt_task_state_get(d), VT_TASK_SKIPPED);
        VT_CHECK_EQ(atomic_load(&after.starts), 0);
        VT_CHECK_EQ(vt_task_state_get(vt_graph_find(g, "P/c0")), VT_TASK_SUCCEEDED);
        VT_CHECK_EQ(vt_task_state_get(vt_graph_find(g, "P/c1")), VT_TASK_FAILED);
        vt_task_state c2 = vt_task_state_get(vt_graph_find(g, "P/c2"));
        VT_CHECK(c2 == VT_TASK_SKIPPED || (mode == 0 && c2 == VT_TASK_CANCELLED));
        const char *msg;
        VT_CHECK_ERR(vt_task_error(vt_graph_find(g, "P/c1"), &msg), VT_EFAILED);
        VT_CHECK_STR_EQ(msg, "leaf failed");
        VT_CHECK(has(vt_graph_error(g), "P/c1"));
        if (mode == 1)
            VT_CHECK_EQ(vt_task_state_get(i), VT_TASK_SUCCEEDED);
        vt_graph_free(g);
        vt_runtime_free(rt);
        free(s.o);
    }
}

typedef struct bad_add {
    int what;
    _Atomic int got_null;
} bad_add;

static vt_err body_bad_add(vt_task_ctx *ctx, void *data)
{
    bad_add *b = data;
    vt_task *t = NULL;
    switch (b->what) {
    case 0: t = vt_ctx_add(ctx, "x", NULL, NULL); break;
    case 1: t = vt_ctx_add(ctx, "x/y", body_ok, NULL); break;
    case 2: t = vt_ctx_add_async(ctx, "", body_ok, NULL); break;
    default: t = vt_ctx_add_async(ctx, "ok", NULL, NULL); break;
    }
    atomic_store(&b->got_null, t == NULL);
    return VT_OK;
}

VT_TEST(subtask_add_errors_fail_the_parent)
{
    vt_runtime *rt = rt_det(8);
    VT_CHECK_NOT_NULL(rt);
    for (int w = 0; w < 4; w++) {
        vt_graph *g;
        VT_CHECK_OK(vt_graph_new(&g, "badsub"));
        bad_add b = {.what = w};
        vt_task *p = vt_task_add(g, "P", body_bad_add, &b);
        VT_CHECK_ERR(vt_graph_run(g, rt, NULL), VT_EFAILED);
        VT_CHECK_EQ(atomic_load(&b.got_null), 1);
        VT_CHECK_EQ(vt_task_state_get(p), VT_TASK_FAILED);
        VT_CHECK_ERR(vt_task_error(p, NULL), VT_EINVAL);
        vt_graph_free(g);
    }
    vt_runtime_free(rt);
}

typedef struct sub_edges {
    vt_task *graph_task;
    vt_task *saved[2];
    vt_err cross_graph, cross_parent, self;
} sub_edges;

static vt_err body_sub_edges(vt_task_ctx *ctx, void *data)
{
    sub_edges *s = data;
    vt_task *a = vt_ctx_add(ctx, "a", body_ok, NULL);
    vt_task *b = vt_ctx_add(ctx, "b", body_ok, NULL);
    if (!a || !b)
        return VT_ENOMEM;
    s->cross_graph = vt_task_precede(a, s->graph_task);
    s->self = vt_task_precede(a, a);
    s->saved[0] = a;
    s->saved[1] = b;
    return VT_OK;
}

static vt_err body_late_edge(vt_task_ctx *ctx, void *data)
{
    sub_edges *s = data;
    (void)ctx;
    /* The subtasks' parent has returned long ago. */
    s->cross_parent = vt_task_precede(s->saved[0], s->saved[1]);
    return VT_OK;
}

VT_TEST(subtask_edge_errors)
{
    vt_runtime *rt = rt_det(9);
    VT_CHECK_NOT_NULL(rt);
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "subedges"));
    sub_edges s = {.cross_graph = -1, .cross_parent = -1, .self = -1};
    s.graph_task = vt_task_add(g, "plain", body_ok, NULL);
    vt_task *p = vt_task_add(g, "P", body_sub_edges, &s);
    vt_task *l = vt_task_add(g, "L", body_late_edge, &s);
    VT_CHECK_OK(vt_task_precede(p, l));
    vt_err e = vt_graph_run(g, rt, NULL);
    VT_CHECK_ERR(s.cross_graph, VT_EINVAL);
    VT_CHECK_ERR(s.self, VT_EINVAL);
    VT_CHECK_NE(s.cross_parent, VT_OK);
    VT_CHECK_NE(s.cross_parent, -1);
    /* Whether a refused edge fails the parent is not said; the run ends. */
    VT_CHECK(e == VT_OK || e == VT_EFAILED);
    vt_graph_free(g);
    vt_runtime_free(rt);
}

static _Atomic int sub_round;

static vt_err body_round_subs(vt_task_ctx *ctx, void *data)
{
    (void)data;
    if (!vt_ctx_add(ctx, atomic_load(&sub_round) == 1 ? "one" : "two", body_ok, NULL))
        return VT_ENOMEM;
    if (atomic_load(&sub_round) == 1 && !vt_ctx_add(ctx, NULL, body_ok, NULL))
        return VT_ENOMEM;
    return VT_OK;
}

VT_TEST(rerun_drops_old_subtasks)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "subrerun"));
    vt_task_add(g, "P", body_round_subs, NULL);
    atomic_store(&sub_round, 1);
    VT_CHECK_OK(vt_graph_run(g, rt, NULL));
    VT_CHECK_NOT_NULL(vt_graph_find(g, "P/one"));
    VT_CHECK_EQ(summary_of(g).total, 3);
    atomic_store(&sub_round, 2);
    VT_CHECK_OK(vt_graph_run(g, rt, NULL));
    VT_CHECK_NULL(vt_graph_find(g, "P/one"));
    vt_task *two = vt_graph_find(g, "P/two");
    VT_CHECK_NOT_NULL(two);
    VT_CHECK_EQ(vt_task_state_get(two), VT_TASK_SUCCEEDED);
    VT_CHECK_EQ(summary_of(g).total, 2);
    VT_CHECK_EQ(vt_graph_size(g), 1);
    vt_graph_free(g);
    vt_runtime_free(rt);
}

static vt_err body_unnamed_subs(vt_task_ctx *ctx, void *data)
{
    vt_task **out = data;
    out[0] = vt_ctx_add(ctx, NULL, body_ok, NULL);
    out[1] = vt_ctx_add_async(ctx, NULL, body_ok, NULL);
    return out[0] && out[1] ? VT_OK : VT_ENOMEM;
}

VT_TEST(unnamed_subtasks)
{
    vt_runtime *rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "anonsubs"));
    /* A named parent and an unnamed one ("#1"), two unnamed subtasks each. */
    vt_task *named[2] = {NULL, NULL}, *anon[2] = {NULL, NULL};
    vt_task_add(g, "P", body_unnamed_subs, named);
    vt_task_add_async(g, NULL, body_unnamed_subs, anon);
    VT_CHECK_OK(vt_graph_run(g, rt, NULL));
    /* Names "<parent>/#<n>", different, and found again by them. */
    vt_task *all[] = {named[0], named[1], anon[0], anon[1]};
    const char *prefix[] = {"P/#", "P/#", "#1/#", "#1/#"};
    for (int i = 0; i < 4; i++) {
        VT_CHECK_NOT_NULL(all[i]);
        const char *n = vt_task_name(all[i]);
        if (strncmp(n, prefix[i], strlen(prefix[i])))
            printf("    subtask %d named \"%s\"\n", i, n);
        VT_CHECK(!strncmp(n, prefix[i], strlen(prefix[i])));
        VT_CHECK_GT(strlen(n), strlen(prefix[i]));
        VT_CHECK_PTR_EQ(vt_graph_find(g, n), all[i]);
        VT_CHECK_EQ(vt_task_state_get(all[i]), VT_TASK_SUCCEEDED);
    }
    VT_CHECK(strcmp(vt_task_name(named[0]), vt_task_name(named[1])) != 0);
    VT_CHECK(strcmp(vt_task_name(anon[0]), vt_task_name(anon[1])) != 0);
    VT_CHECK_EQ(summary_of(g).total, 6);
    vt_graph_free(g);
    vt_runtime_free(rt);
}

/* ---- Context ------------------------------------------------------------------------------ */

static vt_err body_logs(vt_task_ctx *ctx, void *data)
{
    (void)data;
    vt_ctx_log(ctx, VT_LOG_DEBUG, "first line");
    vt_ctx_log(ctx, VT_LOG_TRACE, "second %d %s", 42, "x");
    return VT_OK;
}

/* The lines of a log, trailing newline or not. */
static size_t log_lines(const char *log, char lines[][128], size_t max)
{
    size_t n = 0;
    const char *p = log;
    while (*p && n < max) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        snprintf(lines[n++], 128, "%.*s", (int)len, p);
        p += len + (e != NULL);
    }
    return n;
}

VT_TEST(ctx_log)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "logs"));
    vt_task *s = vt_task_add(g, "sync", body_logs, NULL);
    vt_task *a = vt_task_add_async(g, "async", body_logs, NULL);
    vt_task *q = vt_task_add(g, "quiet", body_ok, NULL);
    VT_CHECK_OK(vt_graph_run(g, rt, NULL));
    vt_task *both[] = {s, a};
    for (int i = 0; i < 2; i++) {
        char lines[4][128];
        size_t n = log_lines(vt_task_log(both[i]), lines, 4);
        VT_CHECK_EQ(n, 2);
        VT_CHECK_STR_EQ(lines[0], "first line");
        VT_CHECK_STR_EQ(lines[1], "second 42 x");
    }
    VT_CHECK_STR_EQ(vt_task_log(q), "");
    VT_CHECK_STR_EQ(vt_task_log(NULL), "");
    vt_graph_free(g);
    vt_runtime_free(rt);
}

enum { LOG_LINES = 3000 };

static vt_err body_big_log(vt_task_ctx *ctx, void *data)
{
    (void)data;
    for (int i = 0; i < LOG_LINES; i++)
        vt_ctx_log(ctx, VT_LOG_TRACE, "line %05d %s", i,
                   "................................................................................");
    return VT_OK;
}

VT_TEST(ctx_log_keeps_the_last_64k)
{
    vt_runtime *rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "biglog"));
    vt_task *t = vt_task_add(g, "big", body_big_log, NULL);
    VT_CHECK_OK(vt_graph_run(g, rt, NULL));
    const char *log = vt_task_log(t);
    size_t len = strlen(log);
    size_t line = strlen("line 00000 ") + 80 + 1;
    VT_CHECK_LE(len, (size_t)64 << 10);
    VT_CHECK_GT(len, ((size_t)64 << 10) - 2 * line);
    /* Whole lines, consecutive, ending with the last one. */
    VT_CHECK(!strncmp(log, "line ", 5));
    int first = atoi(log + 5);
    VT_CHECK_GT(first, 0);
    int expect = first;
    for (const char *p = log; *p;) {
        VT_CHECK(!strncmp(p, "line ", 5));
        VT_CHECK_EQ(atoi(p + 5), expect);
        expect++;
        const char *e = strchr(p, '\n');
        if (!e)
            break;
        p = e + 1;
    }
    VT_CHECK_EQ(expect, LOG_LINES);
    vt_graph_free(g);
    vt_runtime_free(rt);
}

typedef struct results {
    const char *value;
    size_t big;
    vt_err set_too_big, set_null, set_max;
    vt_err dep_a, dep_c, dep_u, dep_nope, dep_null, dep_none, dep_null_out;
    char got_a[32], got_c[32];
    size_t len_a, len_c;
} results;

static vt_err body_result(vt_task_ctx *ctx, void *data)
{
    const char *v = data;
    vt_err e = vt_ctx_set_result(ctx, "first value", 12);
    if (e)
        return e;
    return vt_ctx_set_result(ctx, v, strlen(v) + 1); /* the last one counts */
}

static vt_err body_big_result(vt_task_ctx *ctx, void *data)
{
    results *r = data;
    unsigned char *buf = malloc(VT_RESULT_MAX + 1);
    if (!buf)
        return VT_ENOMEM;
    for (size_t i = 0; i <= VT_RESULT_MAX; i++)
        buf[i] = (unsigned char)(i * 7 + 3);
    r->set_too_big = vt_ctx_set_result(ctx, buf, VT_RESULT_MAX + 1);
    r->set_null = vt_ctx_set_result(ctx, NULL, 5);
    r->set_max = vt_ctx_set_result(ctx, buf, VT_RESULT_MAX);
    free(buf);
    return VT_OK;
}

static vt_err body_read_deps(vt_task_ctx *ctx, void *data)
{
    results *r = data;
    const void *d;
    size_t len;
    r->dep_a = vt_ctx_dep_result(ctx, "A", &d, &len);
    if (!r->dep_a) {
        snprintf(r->got_a, sizeof r->got_a, "%s", (const char *)d);
        r->len_a = len;
    }
    r->dep_c = vt_ctx_dep_result(ctx, "C", &d, &len);
    if (!r->dep_c) {
        snprintf(r->got_c, sizeof r->got_c, "%s", (const char *)d);
        r->len_c = len;
    }
    r->dep_u = vt_ctx_dep_result(ctx, "U", &d, &len);    /* not a dependency */
    r->dep_nope = vt_ctx_dep_result(ctx, "nope", &d, &len);
    r->dep_none = vt_ctx_dep_result(ctx, "N", &d, &len); /* a dependency without result */
    r->dep_null = vt_ctx_dep_result(ctx, NULL, &d, &len);
    r->dep_null_out = vt_ctx_dep_result(ctx, "A", NULL, NULL);
    return VT_OK;
}

VT_TEST(ctx_results)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "results"));
    results r;
    memset(&r, 0x55, sizeof r);
    vt_task *a = vt_task_add(g, "A", body_result, "from A");
    vt_task *c = vt_task_add_async(g, "C", body_result, "from C");
    vt_task *u = vt_task_add(g, "U", body_result, "from U");
    vt_task *n = vt_task_add(g, "N", body_ok, NULL);
    vt_task *b = vt_task_add_async(g, "B", body_read_deps, &r);
    vt_task *big = vt_task_add(g, "big", body_big_result, &r);
    VT_CHECK_OK(vt_task_precede(a, b)); /* by handle */
    VT_CHECK_OK(vt_task_depend(b, "C")); /* by name */
    VT_CHECK_OK(vt_task_depend(b, "N"));
    VT_CHECK_OK(vt_graph_run(g, rt, NULL));
    VT_CHECK_OK(r.dep_a);
    VT_CHECK_STR_EQ(r.got_a, "from A");
    VT_CHECK_EQ(r.len_a, 7);
    VT_CHECK_OK(r.dep_c);
    VT_CHECK_STR_EQ(r.got_c, "from C");
    VT_CHECK_EQ(vt_task_state_get(c), VT_TASK_SUCCEEDED);
    VT_CHECK_ERR(r.dep_u, VT_ENOENT);
    VT_CHECK_ERR(r.dep_nope, VT_ENOENT);
    VT_CHECK_ERR(r.dep_none, VT_ENOENT);
    VT_CHECK_ERR(r.dep_null, VT_EINVAL);
    VT_CHECK(r.dep_null_out == VT_OK || r.dep_null_out == VT_EINVAL);

    const void *d;
    size_t len;
    VT_CHECK_OK(vt_task_result(u, &d, &len));
    VT_CHECK_EQ(len, 7);
    VT_CHECK_STR_EQ((const char *)d, "from U");
    VT_CHECK_ERR(vt_task_result(n, &d, &len), VT_ENOENT);
    VT_CHECK_ERR(vt_task_result(b, &d, &len), VT_ENOENT);
    VT_CHECK_ERR(vt_task_result(NULL, &d, &len), VT_EINVAL);

    VT_CHECK_ERR(r.set_too_big, VT_ERANGE);
    VT_CHECK_ERR(r.set_null, VT_EINVAL);
    VT_CHECK_OK(r.set_max);
    VT_CHECK_OK(vt_task_result(big, &d, &len));
    VT_CHECK_EQ(len, VT_RESULT_MAX);
    const unsigned char *bytes = d;
    size_t bad = 0;
    for (size_t i = 0; i < len; i++)
        bad += bytes[i] != (unsigned char)(i * 7 + 3);
    VT_CHECK_EQ(bad, 0);
    vt_graph_free(g);
    vt_runtime_free(rt);
}

static vt_err body_fail_fmt(vt_task_ctx *ctx, void *data)
{
    (void)data;
    return vt_ctx_fail(ctx, "no such file %s (%d)", "in.txt", 2);
}

static vt_err body_code(vt_task_ctx *ctx, void *data)
{
    (void)ctx;
    return (vt_err)(intptr_t)data;
}

VT_TEST(ctx_fail_and_error_codes)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "fails"));
    vt_task *f = vt_task_add(g, "f", body_fail_fmt, NULL);
    vt_task *fa = vt_task_add_async(g, "fa", body_fail_fmt, NULL);
    vt_task *io = vt_task_add(g, "io", body_code, U2P(VT_EIO));
    vt_task *sys = vt_task_add_async(g, "sys", body_code, U2P(vt_err_from_errno(ENOENT)));
    vt_run_opts o = {.on_failure = VT_KEEP_GOING};
    VT_CHECK_ERR(vt_graph_run(g, rt, &o), VT_EFAILED);
    const char *msg;
    VT_CHECK_ERR(vt_task_error(f, &msg), VT_EFAILED);
    VT_CHECK_STR_EQ(msg, "no such file in.txt (2)");
    VT_CHECK_ERR(vt_task_error(fa, &msg), VT_EFAILED);
    VT_CHECK_STR_EQ(msg, "no such file in.txt (2)");
    VT_CHECK_ERR(vt_task_error(io, &msg), VT_EIO);
    VT_CHECK_NOT_NULL(msg);
    VT_CHECK_ERR(vt_task_error(sys, NULL), vt_err_from_errno(ENOENT));
    VT_CHECK_ERR(vt_task_error(NULL, &msg), VT_EINVAL);
    VT_CHECK_EQ(summary_of(g).failed, 4);
    vt_graph_free(g);
    vt_runtime_free(rt);
}

/* Progress and log lines reach a monitor's subscribers. */
typedef struct seen {
    pthread_mutex_t mu;
    double progress[16];
    int nprogress;
    char logs[4][64];
    int nlogs;
    int finished;
} seen;

static void on_event(void *ud, const vt_event *ev)
{
    seen *s = ud;
    if (strcmp(ev->name, "reporter"))
        return;
    pthread_mutex_lock(&s->mu);
    if (ev->kind == VT_EV_PROGRESS && s->nprogress < 16)
        s->progress[s->nprogress++] = ev->progress;
    if (ev->kind == VT_EV_LOG && s->nlogs < 4)
        snprintf(s->logs[s->nlogs++], 64, "%s", ev->msg);
    if (ev->kind == VT_EV_FINISHED)
        s->finished++;
    pthread_mutex_unlock(&s->mu);
}

static vt_err body_progress(vt_task_ctx *ctx, void *data)
{
    (void)data;
    vt_ctx_progress(ctx, 0.25);
    vt_ctx_log(ctx, VT_LOG_DEBUG, "half %s", "way");
    vt_ctx_progress(ctx, 0.5);
    vt_ctx_progress(ctx, 1.0);
    return VT_OK;
}

VT_TEST(ctx_progress_reaches_the_monitor)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_monitor *m;
    VT_CHECK_OK(vt_monitor_new(&m, NULL));
    seen s;
    memset(&s, 0, sizeof s);
    pthread_mutex_init(&s.mu, NULL);
    VT_CHECK_OK(vt_monitor_subscribe(m, on_event, &s));
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "progress"));
    vt_task_add(g, "reporter", body_progress, NULL);
    vt_task_add(g, "silent", body_progress, NULL);
    vt_run_opts o = {.monitor = m};
    VT_CHECK_OK(vt_graph_run(g, rt, &o));
    /* vt_graph_wait delivered the run's events. */
    pthread_mutex_lock(&s.mu);
    int np = s.nprogress, nl = s.nlogs, fin = s.finished;
    double p[3] = {s.progress[0], s.progress[1], s.progress[2]};
    char l0[64];
    snprintf(l0, sizeof l0, "%s", s.logs[0]);
    pthread_mutex_unlock(&s.mu);
    VT_CHECK_EQ(np, 3);
    VT_CHECK(p[0] == 0.25 && p[1] == 0.5 && p[2] == 1.0);
    VT_CHECK_EQ(nl, 1);
    VT_CHECK_STR_EQ(l0, "half way");
    VT_CHECK_EQ(fin, 1);
    /* Without a monitor the calls are harmless, out of range values too. */
    vt_graph_free(g);
    VT_CHECK_OK(vt_monitor_unsubscribe(m, on_event, &s));
    vt_monitor_free(m);
    VT_CHECK_OK(vt_graph_new(&g, "no-monitor"));
    vt_task *t = vt_task_add(g, "reporter", body_progress, NULL);
    VT_CHECK_OK(vt_graph_run(g, rt, NULL));
    VT_CHECK(has(vt_task_log(t), "half way"));
    vt_graph_free(g);
    vt_runtime_free(rt);
    pthread_mutex_destroy(&s.mu);
}

/* ---- Deterministic replay ------------------------------------------------------------------ */

enum { DET_N = 300 };

typedef struct det_task {
    uint32_t id;
    int64_t sleep_ns;
    uint32_t *log;
    int64_t *at;
    _Atomic size_t *n;
    vt_pool *pool;
} det_task;

static vt_err body_det(vt_task_ctx *ctx, void *data)
{
    det_task *d = data;
    size_t i = atomic_fetch_add(d->n, 1);
    if (i < 2 * DET_N) {
        d->log[i] = d->id;
        d->at[i] = vt_pool_now(d->pool);
    }
    if (vt_fiber_in()) {
        if (d->sleep_ns)
            vt_sleep_ns(d->sleep_ns);
        else
            vt_fiber_yield();
        i = atomic_fetch_add(d->n, 1);
        if (i < 2 * DET_N) {
            d->log[i] = d->id | 0x80000000u;
            d->at[i] = vt_pool_now(d->pool);
        }
    }
    if (d->id % 17 == 0 && vt_ctx_attempt(ctx) == 1)
        return VT_EIO; /* retried with jitter */
    return VT_OK;
}

/* One run of the same random graph on a fresh deterministic runtime:
 * fills log/at with the order of starts (and async resumptions). The graph
 * and runtime stay alive (freed by the caller): the next run's live at
 * other addresses, which must not matter. */
static size_t det_run(uint64_t graph_seed, uint64_t rt_seed, uint32_t *log, int64_t *at, vt_err *res,
                      vt_graph **out_g, vt_runtime **out_rt, det_task *d)
{
    *out_g = NULL;
    vt_runtime *rt = *out_rt = rt_det(rt_seed);
    if (!rt)
        return 0;
    vt_graph *g;
    if (vt_graph_new(&g, "det"))
        return 0;
    *out_g = g;
    static _Atomic size_t n;
    atomic_store(&n, 0);
    vt_task *t[DET_N];
    uint64_t x = graph_seed;
    for (uint32_t i = 0; i < DET_N; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        int async = (x >> 33) % 3 == 0;
        d[i] = (det_task){i, async ? (int64_t)((x >> 40) % 5) * MS : 0, log, at, &n, vt_runtime_pool(rt)};
        t[i] = async ? vt_task_add_async(g, NULL, body_det, &d[i]) : vt_task_add(g, NULL, body_det, &d[i]);
        vt_retry pol = {.max_attempts = 2, .backoff = VT_BACKOFF_FIXED, .delay_ns = 3 * MS, .jitter = 0.9};
        vt_task_set_retry(t[i], &pol);
        for (int k = 0; k < 3 && i > 0; k++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            if ((x >> 35) % 2)
                vt_task_precede(t[(x >> 20) % i], t[i]);
        }
    }
    *res = vt_graph_run(g, rt, NULL);
    size_t len = atomic_load(&n);
    return len < 2 * DET_N ? len : 2 * DET_N;
}

VT_TEST(deterministic_replay)
{
    static uint32_t l1[2 * DET_N], l2[2 * DET_N];
    static int64_t a1[2 * DET_N], a2[2 * DET_N];
    static det_task d1[DET_N], d2[DET_N];
    uint64_t gs = vt_test_rand(), rs = vt_test_rand();
    vt_err e1 = -1, e2 = -1;
    vt_graph *g1, *g2;
    vt_runtime *rt1, *rt2;
    size_t n1 = det_run(gs, rs, l1, a1, &e1, &g1, &rt1, d1);
    size_t n2 = det_run(gs, rs, l2, a2, &e2, &g2, &rt2, d2);
    vt_graph_free(g1);
    vt_graph_free(g2);
    vt_runtime_free(rt1);
    vt_runtime_free(rt2);
    VT_CHECK_OK(e1);
    VT_CHECK_OK(e2);
    VT_CHECK_GE(n1, DET_N + DET_N / 17);
    VT_CHECK_EQ(n1, n2);
    size_t first_diff = n1;
    for (size_t i = 0; i < n1; i++)
        if (l1[i] != l2[i] || a1[i] != a2[i]) {
            first_diff = i;
            break;
        }
    if (first_diff != n1)
        printf("    runs differ at event %zu: %x@%lld vs %x@%lld\n", first_diff, l1[first_diff],
               (long long)a1[first_diff], l2[first_diff], (long long)a2[first_diff]);
    VT_CHECK_EQ(first_diff, n1);
}
