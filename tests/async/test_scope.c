/* test_scope.c — cancellation and scopes: vt_fiber_cancel on sleeping,
 * running and finished fibers, trees of fibers cancelled from the top,
 * scopes (new, cancel, wait, close, live), scopes made inside a fiber,
 * vt_cancel_mask, and the structured rule: a fiber does not finish, and
 * its await does not return, before all its children have finished.
 *
 * Fibers report through the structs below; the checks run on the test
 * thread. Waits for a fiber to reach a point poll without a deadline: the
 * harness names a test that hangs. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vt_test.h"
#include "async_test.h"
#include "vitte/async.h"


static vt_err spawn_in(vt_runtime *rt, vt_scope *s, vt_fiber *out, vt_fiber_fn fn, void *arg,
                       int detached)
{
    vt_fiber_opts o;
    memset(&o, 0, sizeof o);
    o.runtime = rt;
    o.scope = s;
    o.detached = detached;
    return vt_fiber_spawn_ex(out, fn, arg, &o);
}

/* ---- Cancelling one fiber ------------------------------------------------------------ */

static struct {
    _Atomic long entered;
    _Atomic int sleep_err, cancelled, yield_err, sleep2_err;
} CS;

/* Sleeps (for ever or an hour); then every later suspension point
 * reports the cancellation too. */
static void *sleeper(void *arg)
{
    atomic_fetch_add(&CS.entered, 1);
    vt_err e = P2U(arg) ? vt_sleep_until(VT_FOREVER) : vt_sleep_ns(VT_SEC(3600));
    atomic_store(&CS.sleep_err, (int)e);
    atomic_store(&CS.cancelled, vt_cancelled());
    atomic_store(&CS.yield_err, (int)vt_fiber_yield());
    atomic_store(&CS.sleep2_err, (int)vt_sleep_ms(1));
    return U2P(55);
}

static void *canceller(void *arg)
{
    vt_fiber f = {(uint64_t)P2U(arg)};
    return U2P(vt_fiber_cancel(f));
}

VT_TEST(cancel_a_sleeping_fiber)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    /* For ever, an hour, and cancelled by another fiber. */
    for (int kind = 0; kind < 3; kind++) {
        memset(&CS, 0, sizeof CS);
        vt_fiber f;
        void *r = NULL;
        VT_CHECK_OK(spawn_in(rt, NULL, &f, sleeper, U2P(kind != 1), 0));
        wait_for(&CS.entered, 1);
        if (kind < 2) {
            VT_CHECK_OK(vt_fiber_cancel(f));
        } else {
            vt_fiber c;
            VT_CHECK_OK(spawn_in(rt, NULL, &c, canceller, U2P(f.id), 0));
            VT_CHECK_OK(vt_fiber_await(c, &r, VT_FOREVER));
            VT_CHECK_OK((vt_err)P2U(r));
        }
        VT_CHECK_OK(vt_fiber_await(f, &r, VT_FOREVER));
        VT_CHECK_EQ(P2U(r), 55);
        VT_CHECK_ERR((vt_err)atomic_load(&CS.sleep_err), VT_ECANCELED);
        VT_CHECK_EQ(atomic_load(&CS.cancelled), 1);
        VT_CHECK_ERR((vt_err)atomic_load(&CS.yield_err), VT_ECANCELED);
        VT_CHECK_ERR((vt_err)atomic_load(&CS.sleep2_err), VT_ECANCELED);
        VT_CHECK_ERR(vt_fiber_cancel(f), VT_ENOENT); /* awaited: stale */
    }
    vt_runtime_free(rt);
}

static _Atomic long quick_done;

static void *quick(void *arg)
{
    atomic_fetch_add(&quick_done, 1);
    return U2P(P2U(arg) * 2);
}

VT_TEST(cancelling_a_finished_fiber_is_a_no_op)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    atomic_store(&quick_done, 0);
    vt_fiber f;
    VT_CHECK_OK(spawn_in(rt, NULL, &f, quick, U2P(21), 0));
    wait_for(&quick_done, 1);
    vt_sleep_ms(2); /* most likely finished by now; VT_OK either way */
    VT_CHECK_OK(vt_fiber_cancel(f));
    VT_CHECK_OK(vt_fiber_cancel(f));
    void *r = NULL;
    VT_CHECK_OK(vt_fiber_await(f, &r, VT_FOREVER));
    VT_CHECK_EQ(P2U(r), 42); /* its result is untouched */

    /* Cancels racing the end of short fibers: always VT_OK, never a lost
     * result. (gcc's TSan spends milliseconds on each new fiber stack.) */
#if defined(VT_SANITIZE_THREAD)
    enum {
        N = 200
    };
#else
    enum {
        N = 2000
    };
#endif
    static vt_fiber h[N];
    for (int i = 0; i < N; i++) {
        VT_CHECK_OK(spawn_in(rt, NULL, &h[i], quick, U2P(i), 0));
        if (i % 2)
            VT_CHECK_OK(vt_fiber_cancel(h[i]));
    }
    for (int i = 0; i < N; i++) {
        VT_CHECK_OK(vt_fiber_cancel(h[i]));
        VT_CHECK_OK(vt_fiber_await(h[i], &r, VT_FOREVER));
        VT_CHECK_EQ(P2U(r), (uintptr_t)i * 2);
    }
    vt_runtime_free(rt);
}

static void *cancel_self(void *arg)
{
    (void)arg;
    int before = vt_cancelled();
    vt_err c = vt_fiber_cancel(vt_fiber_self());
    int after = vt_cancelled();
    vt_err y = vt_fiber_yield();
    return U2P((uintptr_t)before | (uintptr_t)after << 1 | (uintptr_t)c << 8 | (uintptr_t)y << 16);
}

VT_TEST(a_fiber_cancels_itself)
{
    vt_runtime *rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    vt_fiber f;
    void *r = NULL;
    VT_CHECK_OK(spawn_in(rt, NULL, &f, cancel_self, NULL, 0));
    VT_CHECK_OK(vt_fiber_await(f, &r, VT_FOREVER));
    VT_CHECK_EQ(P2U(r) & 1, 0);
    VT_CHECK_EQ((P2U(r) >> 1) & 1, 1);
    VT_CHECK_OK((vt_err)((P2U(r) >> 8) & 0xff));
    VT_CHECK_ERR((vt_err)(P2U(r) >> 16), VT_ECANCELED);
    vt_runtime_free(rt);
}

/* A fiber waiting in an await is cancelled: the await returns VT_ECANCELED
 * and the awaited fiber, which is not under the canceller, runs on. */
static struct {
    _Atomic int release;
    _Atomic long entered, errors;
    vt_fiber target;
    _Atomic int await_err;
} AW;

static void *aw_target(void *arg)
{
    atomic_fetch_add(&AW.entered, 1);
    while (!atomic_load(&AW.release))
        if (vt_sleep_ms(1) != VT_OK)
            atomic_fetch_add(&AW.errors, 1);
    return arg;
}

static void *aw_waiter(void *arg)
{
    (void)arg;
    atomic_fetch_add(&AW.entered, 1);
    atomic_store(&AW.await_err, (int)vt_fiber_await(AW.target, NULL, VT_FOREVER));
    return NULL;
}

VT_TEST(cancel_an_awaiting_fiber)
{
    memset(&AW, 0, sizeof AW);
    atomic_store(&AW.await_err, -1);
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_fiber w;
    VT_CHECK_OK(spawn_in(rt, NULL, &AW.target, aw_target, U2P(9), 0));
    VT_CHECK_OK(spawn_in(rt, NULL, &w, aw_waiter, NULL, 0));
    wait_for(&AW.entered, 2);
    vt_sleep_ms(1);
    VT_CHECK_OK(vt_fiber_cancel(w));
    VT_CHECK_OK(vt_fiber_await(w, NULL, VT_FOREVER));
    VT_CHECK_ERR((vt_err)atomic_load(&AW.await_err), VT_ECANCELED);
    atomic_store(&AW.release, 1);
    void *r = NULL;
    VT_CHECK_OK(vt_fiber_await(AW.target, &r, VT_FOREVER)); /* the handle survived */
    VT_CHECK_EQ(P2U(r), 9);
    VT_CHECK_EQ(atomic_load(&AW.errors), 0);
    vt_runtime_free(rt);
}

/* ---- Trees ----------------------------------------------------------------------------
 * A top fiber with KIDS children, each with GRAND grandchildren, all
 * asleep for ever. Cancelling the top reaches every one of them, and the
 * top's await returns only once all have ended. */
enum {
    KIDS = 6,
    GRAND = 5,
    NODES = 1 + KIDS + KIDS * GRAND
};

static struct {
    _Atomic long entered;
    _Atomic int result[NODES];
    _Atomic int done[NODES];
    _Atomic long errors;
    int await_kids; /* 1: parents await their children (masked) */
} TR;

static void *tree_node(void *arg)
{
    int id = (int)P2U(arg);
    vt_fiber kids[KIDS];
    int nk = 0;
    int first = id == 0 ? 1 : id <= KIDS ? 1 + KIDS + (id - 1) * GRAND : 0;
    int count = id == 0 ? KIDS : id <= KIDS ? GRAND : 0;
    vt_fiber_opts o;
    memset(&o, 0, sizeof o);
    o.detached = !TR.await_kids;
    for (int k = 0; k < count; k++) {
        if (vt_fiber_spawn_ex(TR.await_kids ? &kids[nk] : NULL, tree_node, U2P(first + k), &o) ==
            VT_OK)
            nk++;
        else
            atomic_fetch_add(&TR.errors, 1);
    }
    atomic_fetch_add(&TR.entered, 1);
    atomic_store(&TR.result[id], (int)vt_sleep_until(VT_FOREVER));
    if (TR.await_kids) {
        /* A cancelled fiber's own await would return VT_ECANCELED at once:
         * masked, it waits for its children as cleanup must. */
        vt_cancel_mask(1);
        for (int k = 0; k < nk; k++)
            if (vt_fiber_await(kids[k], NULL, VT_FOREVER) != VT_OK)
                atomic_fetch_add(&TR.errors, 1);
        vt_cancel_mask(0);
    }
    atomic_store(&TR.done[id], 1);
    return U2P(id + 100);
}

VT_TEST(cancel_a_tree_from_its_top)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    for (int await_kids = 0; await_kids < 2; await_kids++) {
        memset(&TR, 0, sizeof TR);
        TR.await_kids = await_kids;
        for (int i = 0; i < NODES; i++)
            atomic_store(&TR.result[i], -1);
        vt_fiber top;
        VT_CHECK_OK(spawn_in(rt, NULL, &top, tree_node, U2P(0), 0));
        wait_for(&TR.entered, NODES);
        VT_CHECK_OK(vt_fiber_cancel(top));
        void *r = NULL;
        VT_CHECK_OK(vt_fiber_await(top, &r, VT_FOREVER));
        /* Read at once: every node ended before the top's await returned. */
        int not_done = 0, not_cancelled = 0;
        for (int i = 0; i < NODES; i++) {
            not_done += atomic_load(&TR.done[i]) != 1;
            not_cancelled += atomic_load(&TR.result[i]) != VT_ECANCELED;
        }
        if (not_done || not_cancelled)
            printf("  %s: %d of %d nodes not done, %d not cancelled\n",
                   await_kids ? "awaited children" : "detached children", not_done, NODES,
                   not_cancelled);
        VT_CHECK_EQ(not_done, 0);
        VT_CHECK_EQ(not_cancelled, 0);
        VT_CHECK_EQ(P2U(r), 100);
        VT_CHECK_EQ(atomic_load(&TR.errors), 0);
    }
    vt_runtime_stats st;
    VT_CHECK_OK(vt_runtime_stats_get(rt, &st));
    VT_CHECK_EQ(st.live, 0);
    vt_runtime_free(rt);
}

/* ---- A fiber does not finish before its children ---------------------------------------- */

static struct {
    _Atomic int a_done, b_done;
    vt_fiber b;
    _Atomic long errors;
} PC;

static void *slow_child(void *arg)
{
    /* Set only when the sleep ended normally: nothing cancels it. */
    vt_err e = vt_sleep_ms(5);
    atomic_store(P2U(arg) ? &PC.b_done : &PC.a_done, e == VT_OK ? 1 : 2);
    return U2P(42);
}

static void *hasty_parent(void *arg)
{
    (void)arg;
    vt_fiber_opts o;
    memset(&o, 0, sizeof o);
    o.detached = 1;
    if (vt_fiber_spawn_ex(NULL, slow_child, U2P(0), &o) != VT_OK)
        atomic_fetch_add(&PC.errors, 1);
    if (vt_fiber_spawn(&PC.b, slow_child, U2P(1)) != VT_OK)
        atomic_fetch_add(&PC.errors, 1);
    return U2P(7); /* at once, children still asleep */
}

VT_TEST(a_fiber_does_not_finish_before_its_children)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    for (int round = 0; round < 20; round++) {
        memset(&PC, 0, sizeof PC);
        vt_fiber p;
        void *r = NULL;
        VT_CHECK_OK(spawn_in(rt, NULL, &p, hasty_parent, NULL, 0));
        VT_CHECK_OK(vt_fiber_await(p, &r, VT_FOREVER));
        VT_CHECK_EQ(P2U(r), 7);
        VT_CHECK_EQ(atomic_load(&PC.errors), 0);
        VT_CHECK_EQ(atomic_load(&PC.a_done), 1);
        VT_CHECK_EQ(atomic_load(&PC.b_done), 1);
        /* The child's handle outlives its parent. */
        VT_CHECK_OK(vt_fiber_await(PC.b, &r, VT_FOREVER));
        VT_CHECK_EQ(P2U(r), 42);
    }
    vt_runtime_free(rt);
}

/* A fiber spawned by a cancelled fiber is under it: it starts cancelled. */
static struct {
    _Atomic int child_cancelled, child_sleep, parent_sleep, await_err;
} CC;

static void *born_late(void *arg)
{
    (void)arg;
    atomic_store(&CC.child_cancelled, vt_cancelled());
    atomic_store(&CC.child_sleep, (int)vt_sleep_ns(VT_SEC(3600)));
    return NULL;
}

static void *cancelled_parent(void *arg)
{
    (void)arg;
    atomic_store(&CC.parent_sleep, (int)vt_sleep_until(VT_FOREVER));
    vt_fiber c;
    if (vt_fiber_spawn(&c, born_late, NULL) != VT_OK)
        return U2P(1);
    vt_cancel_mask(1);
    atomic_store(&CC.await_err, (int)vt_fiber_await(c, NULL, VT_FOREVER));
    return NULL;
}

VT_TEST(children_of_a_cancelled_fiber_start_cancelled)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    memset(&CC, 0, sizeof CC);
    atomic_store(&CC.parent_sleep, -1);
    vt_fiber p;
    VT_CHECK_OK(spawn_in(rt, NULL, &p, cancelled_parent, NULL, 0));
    VT_CHECK_OK(vt_fiber_cancel(p));
    void *r = U2P(9);
    VT_CHECK_OK(vt_fiber_await(p, &r, VT_FOREVER));
    VT_CHECK_NULL(r);
    VT_CHECK_ERR((vt_err)atomic_load(&CC.parent_sleep), VT_ECANCELED);
    VT_CHECK_OK((vt_err)atomic_load(&CC.await_err));
    VT_CHECK_EQ(atomic_load(&CC.child_cancelled), 1);
    VT_CHECK_ERR((vt_err)atomic_load(&CC.child_sleep), VT_ECANCELED);
    vt_runtime_free(rt);
}

/* ---- Scopes ---------------------------------------------------------------------------- */

enum {
    SC_N = 20
};
static struct {
    _Atomic long entered;
    _Atomic int result[SC_N + 1];
    _Atomic int born_cancelled;
} SC;

static void *scoped_sleeper(void *arg)
{
    int i = (int)P2U(arg);
    if (i == SC_N)
        atomic_store(&SC.born_cancelled, vt_cancelled());
    atomic_fetch_add(&SC.entered, 1);
    atomic_store(&SC.result[i],
                 (int)vt_sleep_until(i % 2 ? VT_FOREVER : vt_fiber_deadline(VT_SEC(3600))));
    return U2P(i);
}

static struct {
    _Atomic int release;
    _Atomic long entered, errors;
} BY; /* a bystander in another scope */

static void *bystander(void *arg)
{
    atomic_fetch_add(&BY.entered, 1);
    while (!atomic_load(&BY.release))
        if (vt_sleep_ms(1) != VT_OK)
            atomic_fetch_add(&BY.errors, 1);
    return arg;
}

VT_TEST(scope_cancel_wait_close)
{
    memset(&SC, 0, sizeof SC);
    memset(&BY, 0, sizeof BY);
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_scope *s = NULL, *other = NULL;
    VT_CHECK_OK(vt_scope_new(&s, rt));
    VT_CHECK_OK(vt_scope_new(&other, rt));
    VT_CHECK_EQ(vt_scope_live(s), 0);
    VT_CHECK_OK(vt_scope_wait(s, VT_NOW)); /* empty */

    vt_fiber f[SC_N + 1], b;
    VT_CHECK_OK(spawn_in(rt, other, &b, bystander, U2P(3), 0));
    for (int i = 0; i < SC_N; i++) {
        atomic_store(&SC.result[i], -1);
        VT_CHECK_OK(spawn_in(rt, s, &f[i], scoped_sleeper, U2P(i), 0));
    }
    wait_for(&SC.entered, SC_N);
    wait_for(&BY.entered, 1);
    VT_CHECK_EQ(vt_scope_live(s), SC_N);
    VT_CHECK_EQ(vt_scope_live(other), 1);
    int64_t d = vt_deadline_after(VT_MS(2));
    VT_CHECK_ERR(vt_scope_wait(s, d), VT_ETIMEDOUT);
    VT_CHECK_GE(vt_now_ns(), d);
    VT_CHECK_ERR(vt_scope_wait(s, VT_NOW), VT_ETIMEDOUT);

    VT_CHECK_OK(vt_scope_cancel(s));
    VT_CHECK_OK(vt_scope_cancel(s)); /* idempotent */
    VT_CHECK_OK(vt_scope_wait(s, VT_FOREVER));
    VT_CHECK_EQ(vt_scope_live(s), 0);
    for (int i = 0; i < SC_N; i++) {
        void *r = NULL;
        VT_CHECK_ERR((vt_err)atomic_load(&SC.result[i]), VT_ECANCELED);
        VT_CHECK_OK(vt_fiber_await(f[i], &r, VT_FOREVER));
        VT_CHECK_EQ(P2U(r), (uintptr_t)i);
    }
    /* Cancelled for the future too: a newcomer starts cancelled. */
    atomic_store(&SC.result[SC_N], -1);
    VT_CHECK_OK(spawn_in(rt, s, &f[SC_N], scoped_sleeper, U2P(SC_N), 0));
    VT_CHECK_OK(vt_fiber_await(f[SC_N], NULL, VT_FOREVER));
    VT_CHECK_EQ(atomic_load(&SC.born_cancelled), 1);
    VT_CHECK_ERR((vt_err)atomic_load(&SC.result[SC_N]), VT_ECANCELED);
    VT_CHECK_OK(vt_scope_cancel(s)); /* nothing left in it: still fine */
    vt_scope_close(s);

    /* The bystander in the other scope was never disturbed. */
    VT_CHECK_EQ(vt_scope_live(other), 1);
    atomic_store(&BY.release, 1);
    void *r = NULL;
    VT_CHECK_OK(vt_fiber_await(b, &r, VT_FOREVER));
    VT_CHECK_EQ(P2U(r), 3);
    VT_CHECK_EQ(atomic_load(&BY.errors), 0);
    VT_CHECK_OK(vt_scope_wait(other, VT_FOREVER));
    vt_scope_close(other);
    vt_runtime_free(rt);
}

/* vt_scope_close refuses new fibers while it waits for the live ones: a
 * fiber of the scope keeps spawning into it until that fails, with
 * VT_ECLOSED; close returns once the fiber gave up. Not a cancellation. */
static struct {
    vt_scope *s;
    _Atomic long entered, spawned, sleep_errors;
    _Atomic int final;
} CL;

static void *nothing(void *arg)
{
    return arg;
}

static void *spawner_in_scope(void *arg)
{
    (void)arg;
    atomic_fetch_add(&CL.entered, 1);
    vt_fiber_opts o;
    memset(&o, 0, sizeof o);
    o.scope = CL.s;
    o.detached = 1;
    vt_err e;
    while ((e = vt_fiber_spawn_ex(NULL, nothing, NULL, &o)) == VT_OK) {
        atomic_fetch_add(&CL.spawned, 1);
        if (vt_sleep_ms(1) != VT_OK)
            atomic_fetch_add(&CL.sleep_errors, 1);
    }
    atomic_store(&CL.final, (int)e);
    return NULL;
}

static void *closer(void *arg)
{
    vt_scope_close(arg);
    return NULL;
}

VT_TEST(scope_close_refuses_new_fibers)
{
    memset(&CL, 0, sizeof CL);
    atomic_store(&CL.final, -1);
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    VT_CHECK_OK(vt_scope_new(&CL.s, rt));
    VT_CHECK_OK(spawn_in(rt, CL.s, NULL, spawner_in_scope, NULL, 1));
    wait_for(&CL.entered, 1);
    wait_for(&CL.spawned, 3);
    pthread_t th;
    VT_CHECK_EQ(pthread_create(&th, NULL, closer, CL.s), 0);
    pthread_join(th, NULL); /* returns once the spawner gave up */
    VT_CHECK_ERR((vt_err)atomic_load(&CL.final), VT_ECLOSED);
    VT_CHECK_EQ(atomic_load(&CL.sleep_errors), 0);
    vt_runtime_free(rt);
}

/* A scope made inside a fiber is cancelled with that fiber. */
enum {
    IN_N = 5
};
static struct {
    _Atomic long entered;
    _Atomic int result[IN_N];
    _Atomic int own, scope_new_err;
} IN;

static void *inner_sleeper(void *arg)
{
    atomic_fetch_add(&IN.entered, 1);
    atomic_store(&IN.result[P2U(arg)], (int)vt_sleep_until(VT_FOREVER));
    return NULL;
}

static void *scope_owner(void *arg)
{
    (void)arg;
    vt_scope *s = NULL;
    vt_err e = vt_scope_new(&s, NULL);
    atomic_store(&IN.scope_new_err, (int)e);
    if (e != VT_OK)
        return NULL;
    vt_fiber_opts o;
    memset(&o, 0, sizeof o);
    o.scope = s;
    o.detached = 1;
    for (int i = 0; i < IN_N; i++)
        vt_fiber_spawn_ex(NULL, inner_sleeper, U2P(i), &o);
    atomic_fetch_add(&IN.entered, 1);
    atomic_store(&IN.own, (int)vt_sleep_until(VT_FOREVER));
    vt_scope_close(s);
    return NULL;
}

VT_TEST(scope_made_in_a_fiber_is_cancelled_with_it)
{
    memset(&IN, 0, sizeof IN);
    for (int i = 0; i < IN_N; i++)
        atomic_store(&IN.result[i], -1);
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_fiber p;
    VT_CHECK_OK(spawn_in(rt, NULL, &p, scope_owner, NULL, 0));
    wait_for(&IN.entered, IN_N + 1);
    VT_CHECK_OK(vt_fiber_cancel(p));
    VT_CHECK_OK(vt_fiber_await(p, NULL, VT_FOREVER));
    VT_CHECK_OK((vt_err)atomic_load(&IN.scope_new_err));
    VT_CHECK_ERR((vt_err)atomic_load(&IN.own), VT_ECANCELED);
    for (int i = 0; i < IN_N; i++)
        VT_CHECK_ERR((vt_err)atomic_load(&IN.result[i]), VT_ECANCELED);
    vt_runtime_free(rt);
}

/* vt_scope_wait from a fiber that gets cancelled returns VT_ECANCELED. */
static struct {
    vt_scope *s;
    _Atomic long entered;
    _Atomic int wait_err;
} SW;

static void *scope_waiter(void *arg)
{
    (void)arg;
    atomic_fetch_add(&SW.entered, 1);
    atomic_store(&SW.wait_err, (int)vt_scope_wait(SW.s, VT_FOREVER));
    return NULL;
}

static void *sw_sleeper(void *arg)
{
    atomic_fetch_add(&SW.entered, 1);
    vt_sleep_until(VT_FOREVER);
    return arg;
}

VT_TEST(scope_wait_is_a_suspension_point)
{
    memset(&SW, 0, sizeof SW);
    atomic_store(&SW.wait_err, -1);
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    VT_CHECK_OK(vt_scope_new(&SW.s, rt));
    vt_fiber sl, w;
    VT_CHECK_OK(spawn_in(rt, SW.s, &sl, sw_sleeper, NULL, 0));
    VT_CHECK_OK(spawn_in(rt, NULL, &w, scope_waiter, NULL, 0));
    wait_for(&SW.entered, 2);
    vt_sleep_ms(1);
    VT_CHECK_OK(vt_fiber_cancel(w));
    VT_CHECK_OK(vt_fiber_await(w, NULL, VT_FOREVER));
    VT_CHECK_ERR((vt_err)atomic_load(&SW.wait_err), VT_ECANCELED);
    VT_CHECK_EQ(vt_scope_live(SW.s), 1); /* the waiter's cancellation did not reach the scope */
    VT_CHECK_OK(vt_scope_cancel(SW.s));
    VT_CHECK_OK(vt_fiber_await(sl, NULL, VT_FOREVER));
    vt_scope_close(SW.s);
    vt_runtime_free(rt);
}

/* ---- Masking ---------------------------------------------------------------------------- */

static struct {
    _Atomic long entered, errors;
    int prev0, prev1;
    vt_err masked_sleep, masked_yield, after_yield, after_sleep;
    int cancelled_seen;
    int64_t deadline, woke;
} MK;

/* Masked, it works on while cancelled; unmasked, the next suspension
 * point reports it. */
static void *masker(void *arg)
{
    (void)arg;
    MK.prev0 = vt_cancel_mask(1);
    atomic_fetch_add(&MK.entered, 1);
    while (!vt_cancelled())
        if (vt_sleep_ms(1) != VT_OK)
            atomic_fetch_add(&MK.errors, 1);
    MK.cancelled_seen = 1;
    MK.masked_sleep = vt_sleep_ms(1);
    MK.masked_yield = vt_fiber_yield();
    MK.prev1 = vt_cancel_mask(0);
    MK.after_yield = vt_fiber_yield();
    MK.after_sleep = vt_sleep_until(VT_FOREVER); /* returns at once */
    return NULL;
}

/* A sleep started masked runs to its deadline even when the cancellation
 * comes in the middle of it. */
static void *masked_sleeper(void *arg)
{
    (void)arg;
    vt_cancel_mask(1);
    MK.deadline = vt_fiber_deadline(VT_MS(20));
    atomic_fetch_add(&MK.entered, 1);
    MK.masked_sleep = vt_sleep_until(MK.deadline);
    MK.woke = vt_fiber_now();
    MK.cancelled_seen = vt_cancelled();
    vt_cancel_mask(0);
    MK.after_yield = vt_fiber_yield();
    return NULL;
}

VT_TEST(cancel_mask)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    memset(&MK, 0, sizeof MK);
    vt_fiber f;
    VT_CHECK_OK(spawn_in(rt, NULL, &f, masker, NULL, 0));
    wait_for(&MK.entered, 1);
    VT_CHECK_OK(vt_fiber_cancel(f));
    VT_CHECK_OK(vt_fiber_await(f, NULL, VT_FOREVER));
    VT_CHECK_EQ(MK.prev0, 0);
    VT_CHECK_EQ(MK.prev1, 1);
    VT_CHECK_EQ(MK.cancelled_seen, 1);
    VT_CHECK_EQ(atomic_load(&MK.errors), 0);
    VT_CHECK_OK(MK.masked_sleep);
    VT_CHECK_OK(MK.masked_yield);
    VT_CHECK_ERR(MK.after_yield, VT_ECANCELED);
    VT_CHECK_ERR(MK.after_sleep, VT_ECANCELED);

    memset(&MK, 0, sizeof MK);
    VT_CHECK_OK(spawn_in(rt, NULL, &f, masked_sleeper, NULL, 0));
    wait_for(&MK.entered, 1);
    VT_CHECK_OK(vt_fiber_cancel(f));
    VT_CHECK_OK(vt_fiber_await(f, NULL, VT_FOREVER));
    VT_CHECK_OK(MK.masked_sleep);
    VT_CHECK_GE(MK.woke, MK.deadline);
    VT_CHECK_EQ(MK.cancelled_seen, 1);
    VT_CHECK_ERR(MK.after_yield, VT_ECANCELED);
    vt_runtime_free(rt);
}
