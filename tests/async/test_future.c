/* test_future.c — futures: set or failed once, awaited by any number of
 * fibers (runtimes of 1, 2 and 8 workers) and threads, before or after
 * completion; timeouts, cancellation, allocation failure, freeing while
 * awaited (logged and leaked), and the first awaiter freeing the future
 * while the others are still waking. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "vt_test.h"
#include "async_test.h"
#include "vitte/async.h"
#include "async/async_int.h"

/* ---- Helpers ---------------------------------------------------------------------- */

/* The future's queue, read under its lock: vt__wq is the struct's first
 * member (see future.c), the one thing this test assumes of its layout. */
static uint32_t qlen(vt_future *f)
{
    vt__wq *q = (vt__wq *)f;
    vt__wq_lock(q);
    uint32_t n = q->n;
    vt__wq_unlock(q);
    return n;
}

static void wait_qlen(vt_future *f, uint32_t n)
{
    while (qlen(f) != n)
        vt__sleep_ns(VT_US(20));
}


typedef struct aw_arg {
    vt_future *f;
    int64_t rel; /* < 0: VT_FOREVER, 0: VT_NOW */
    void *value;
    int64_t elapsed;
} aw_arg;

static void *await_body(void *p)
{
    aw_arg *a = p;
    int64_t t0 = now_any();
    a->value = (void *)(intptr_t)-1;
    vt_err e = vt_future_await(a->f, &a->value, a->rel < 0 ? VT_FOREVER : a->rel == 0 ? VT_NOW : t0 + a->rel);
    a->elapsed = now_any() - t0;
    return ERR_RET(e);
}

/* ---- Tests -------------------------------------------------------------------------- */

VT_TEST(future_basic_and_errors)
{
    vt_future *f = NULL;
    void *v = NULL;
    VT_CHECK_ERR(vt_future_new(NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_future_set(NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_future_fail(NULL, VT_EINVAL), VT_EINVAL);
    VT_CHECK_ERR(vt_future_await(NULL, &v, VT_NOW), VT_EINVAL);
    VT_CHECK_EQ(vt_future_ready(NULL), 0);
    vt_future_free(NULL);

    long live = vt_test_alloc_live();
    VT_CHECK_OK(vt_future_new(&f));
    VT_CHECK_EQ(vt_future_ready(f), 0);
    VT_CHECK_ERR(vt_future_await(f, &v, VT_NOW), VT_ETIMEDOUT);
    VT_CHECK_ERR(vt_future_fail(f, VT_OK), VT_EINVAL); /* not a failure */
    VT_CHECK_EQ(vt_future_ready(f), 0);
    VT_CHECK_OK(vt_future_set(f, &live));
    VT_CHECK_EQ(vt_future_ready(f), 1);
    VT_CHECK_ERR(vt_future_set(f, NULL), VT_EEXIST);
    VT_CHECK_ERR(vt_future_fail(f, VT_ECLOSED), VT_EEXIST);
    VT_CHECK_OK(vt_future_await(f, &v, VT_NOW));
    VT_CHECK_PTR_EQ(v, &live); /* the first one stands */
    VT_CHECK_OK(vt_future_await(f, NULL, VT_FOREVER));
    vt_future_free(f);

    VT_CHECK_OK(vt_future_new(&f));
    VT_CHECK_OK(vt_future_fail(f, VT_ECLOSED));
    VT_CHECK_EQ(vt_future_ready(f), 1);
    VT_CHECK_ERR(vt_future_set(f, &v), VT_EEXIST);
    v = &f;
    VT_CHECK_ERR(vt_future_await(f, &v, VT_NOW), VT_ECLOSED);
    VT_CHECK_PTR_EQ(v, &f); /* untouched on failure */
    VT_CHECK_ERR(vt_future_await(f, NULL, VT_FOREVER), VT_ECLOSED);
    vt_future_free(f);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

/* Allocation k fails for k = 1, 2 ... until vt_future_new succeeds: each
 * failure is VT_ENOMEM and leaves nothing allocated. */
VT_TEST(future_new_out_of_memory)
{
    long live = vt_test_alloc_live();
    vt_future *f = NULL;
    long k = 1;
    for (;; k++) {
        vt_test_alloc_fail_at(k);
        vt_err e = vt_future_new(&f);
        if (e == VT_OK)
            break;
        VT_CHECK_ERR(e, VT_ENOMEM);
        VT_CHECK_NULL(f);
        VT_CHECK_EQ(vt_test_alloc_live(), live);
        VT_CHECK_LT(k, 100);
    }
    vt_test_alloc_reset();
    VT_CHECK_GT(k, 1); /* the first allocation was the one that failed */
    VT_CHECK_OK(vt_future_set(f, NULL));
    vt_future_free(f);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

/* Waiters, fibers and threads, queue before the value is set; more come
 * after: all get it. */
VT_TEST(future_many_waiters_before_and_after)
{
    enum { N = 20 };
    static const unsigned workers[] = {1, 2, 8};
    for (unsigned wi = 0; wi < 3; wi++) {
        for (int failing = 0; failing <= 1; failing++) {
            vt_runtime *rt = rt_new(workers[wi]);
            VT_CHECK_NOT_NULL(rt);
            vt_future *f;
            VT_CHECK_OK(vt_future_new(&f));
            aw_arg a[2 * N];
            party p[2 * N];
            int token;
            for (int i = 0; i < N; i++) {
                a[i] = (aw_arg){.f = f, .rel = -1};
                VT_CHECK(party_start(&p[i], rt, i % 4 == 1, await_body, &a[i]));
            }
            wait_qlen(f, N);
            if (failing)
                VT_CHECK_OK(vt_future_fail(f, VT_ECLOSED));
            else
                VT_CHECK_OK(vt_future_set(f, &token));
            VT_CHECK_EQ(qlen(f), 0);
            for (int i = N; i < 2 * N; i++) {
                a[i] = (aw_arg){.f = f, .rel = i % 2 ? 0 : -1};
                VT_CHECK(party_start(&p[i], rt, i % 4 == 1, await_body, &a[i]));
            }
            for (int i = 0; i < 2 * N; i++) {
                VT_CHECK_EQ(party_join(&p[i]), failing ? VT_ECLOSED : VT_OK);
                if (!failing)
                    VT_CHECK_PTR_EQ(a[i].value, &token);
            }
            vt_future_free(f);
            vt_runtime_free(rt);
        }
    }
}

VT_TEST(future_timeouts)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_future *f;
    VT_CHECK_OK(vt_future_new(&f));
    for (int thread = 0; thread <= 1; thread++) {
        aw_arg now = {.f = f, .rel = 0}, dl = {.f = f, .rel = VT_MS(20)};
        party p;
        VT_CHECK(party_start(&p, rt, thread, await_body, &now));
        VT_CHECK_EQ(party_join(&p), VT_ETIMEDOUT);
        VT_CHECK(party_start(&p, rt, thread, await_body, &dl));
        VT_CHECK_EQ(party_join(&p), VT_ETIMEDOUT);
        VT_CHECK_GE(dl.elapsed, VT_MS(20));
        VT_CHECK_EQ(qlen(f), 0);
    }
    VT_CHECK_OK(vt_future_set(f, f));
    void *v = NULL;
    VT_CHECK_OK(vt_future_await(f, &v, VT_NOW));
    VT_CHECK_PTR_EQ(v, f);
    vt_future_free(f);
    vt_runtime_free(rt);
}

/* A cancelled awaiter leaves; the others still get the value. A cancelled
 * fiber's await fails even when the value is there. */
VT_TEST(future_cancel)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_future *f;
    VT_CHECK_OK(vt_future_new(&f));
    aw_arg a = {.f = f, .rel = -1}, b = {.f = f, .rel = -1};
    party pa, pb;
    VT_CHECK(party_start(&pa, rt, 0, await_body, &a));
    wait_qlen(f, 1);
    VT_CHECK(party_start(&pb, rt, 1, await_body, &b));
    wait_qlen(f, 2);
    VT_CHECK_OK(vt_fiber_cancel(pa.f));
    VT_CHECK_EQ(party_join(&pa), VT_ECANCELED);
    VT_CHECK_EQ(qlen(f), 1);
    VT_CHECK_OK(vt_future_set(f, &a));
    VT_CHECK_EQ(party_join(&pb), VT_OK);
    VT_CHECK_PTR_EQ(b.value, &a);
    vt_future_free(f);
    vt_runtime_free(rt);
}

static void *self_cancel_await_body(void *p)
{
    vt_fiber_cancel(vt_fiber_self());
    return await_body(p);
}

VT_TEST(future_cancel_pending_at_entry)
{
    vt_runtime *rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    vt_future *f;
    VT_CHECK_OK(vt_future_new(&f));
    VT_CHECK_OK(vt_future_set(f, NULL));
    aw_arg a = {.f = f, .rel = -1};
    party p;
    VT_CHECK(party_start(&p, rt, 0, self_cancel_await_body, &a));
    VT_CHECK_EQ(party_join(&p), VT_ECANCELED);
    vt_future_free(f);
    vt_runtime_free(rt);
}

static _Atomic int logged_errors;
static char logged_msg[256];

static void capture_log(void *ud, vt_log_level level, const char *module, const char *msg)
{
    (void)ud;
    (void)module;
    if (level == VT_LOG_ERROR && atomic_fetch_add(&logged_errors, 1) == 0)
        snprintf(logged_msg, sizeof logged_msg, "%s", msg);
}

/* Freed while awaited: an error is logged and the memory stays (the
 * waiter still uses it); once nobody awaits, it can be freed for real. */
VT_TEST(future_free_while_awaited_leaks)
{
    long live0 = vt_test_alloc_live();
    vt_runtime *rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    vt_future *f;
    VT_CHECK_OK(vt_future_new(&f));
    aw_arg a = {.f = f, .rel = -1};
    party p;
    VT_CHECK(party_start(&p, rt, 0, await_body, &a));
    wait_qlen(f, 1);
    atomic_store(&logged_errors, 0);
    vt_log_set_handler(capture_log, NULL);
    long live = vt_test_alloc_live(); /* the waiter sleeps: the runtime is still */
    vt_future_free(f);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
    vt_log_set_handler(NULL, NULL);
    VT_CHECK_EQ(atomic_load(&logged_errors), 1);
    VT_CHECK(strstr(logged_msg, "vt_future_free") != NULL);
    VT_CHECK_EQ(qlen(f), 1); /* still intact */
    VT_CHECK_OK(vt_future_set(f, &a));
    VT_CHECK_EQ(party_join(&p), VT_OK);
    VT_CHECK_PTR_EQ(a.value, &a);
    vt_future_free(f);
    vt_runtime_free(rt);
    VT_CHECK_EQ(vt_test_alloc_live(), live0);
}

typedef struct race_arg {
    vt_future *f;
    _Atomic int *done;
    int free_it;
    vt_err e;
    void *value;
} race_arg;

static void *await_maybe_free_body(void *p)
{
    race_arg *a = p;
    a->e = vt_future_await(a->f, &a->value, VT_FOREVER);
    /* The last one back frees it, while the setter may still be waking
     * others: nobody may touch it afterwards (ASan watches). */
    if (atomic_fetch_add(a->done, 1) == a->free_it)
        vt_future_free(a->f);
    return NULL;
}

static void *set_body(void *p)
{
    race_arg *a = p;
    return ERR_RET(vt_future_set(a->f, a->value));
}

/* The pattern of a handle handed to several parties: the value arrives,
 * every awaiter returns, and the last frees the future; round after
 * round, with the setter on a fiber or a thread. */
VT_TEST(future_freed_by_last_awaiter)
{
    enum { W = 3, ROUNDS = 200 };
    for (unsigned workers = 1; workers <= 2; workers++) {
        long live = vt_test_alloc_live();
        vt_runtime *rt = rt_new(workers);
        VT_CHECK_NOT_NULL(rt);
        for (int r = 0; r < ROUNDS; r++) {
            vt_future *f;
            VT_CHECK_OK(vt_future_new(&f));
            _Atomic int done = 0;
            race_arg a[W], s = {.f = f, .value = &done};
            party p[W], ps;
            for (int i = 0; i < W; i++) {
                a[i] = (race_arg){.f = f, .done = &done, .free_it = W - 1};
                VT_CHECK(party_start(&p[i], rt, i == r % W, await_maybe_free_body, &a[i]));
            }
            VT_CHECK(party_start(&ps, rt, r % 2, set_body, &s));
            VT_CHECK_EQ(party_join(&ps), VT_OK);
            for (int i = 0; i < W; i++) {
                party_join(&p[i]);
                VT_CHECK_OK(a[i].e);
                VT_CHECK_PTR_EQ(a[i].value, &done);
            }
        }
        vt_runtime_free(rt);
        VT_CHECK_EQ(vt_test_alloc_live(), live);
    }
}
