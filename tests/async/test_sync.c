/* test_sync.c — mutex, rwlock, condition, semaphore, barrier, wait group
 * and once, used from fibers (runtimes of 1, 2 and 8 workers) and plain
 * threads at once: errors, limits, timeouts, cancellation, FIFO hand-off,
 * contention counted exactly, and a deterministic run.
 *
 * Parties queue in a known order by arriving one at a time: the test waits
 * until the object's queue (read under its lock) has grown before it starts
 * the next one. Waits for a condition poll without a time limit; the
 * harness's watchdog names a test that hangs. */
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>

#include "vt_test.h"
#include "async_test.h"
#include "vitte/async.h"
#include "async/async_int.h"

/* ---- Helpers ---------------------------------------------------------------------- */

static uint32_t qlen(vt__wq *q)
{
    vt__wq_lock(q);
    uint32_t n = q->n;
    vt__wq_unlock(q);
    return n;
}

/* Polls from a thread until q holds n waiters. */
static void wait_qlen(vt__wq *q, uint32_t n)
{
    while (qlen(q) != n)
        vt__sleep_ns(VT_US(20));
}

static void wait_atomic(_Atomic int *v, int n)
{
    while (atomic_load(v) < n)
        vt__sleep_ns(VT_US(20));
}

/* Order slots start at -1; a party takes the next slot and writes its
 * index there, so a slot read as set holds its final value. */
static void order_reset(_Atomic int *order, int n)
{
    for (int i = 0; i < n; i++)
        atomic_store(&order[i], -1);
}

static int wait_slot(_Atomic int *slot)
{
    int v;
    while ((v = atomic_load(slot)) == -1)
        vt__sleep_ns(VT_US(20));
    return v;
}


/* ---- One table for the behaviour every blocking primitive shares ---------------------
 * fx_block makes the kind's operation block (the test thread holds the
 * lock, the count is zero ...); fx_op is the operation plus its release. */
enum { K_MUTEX, K_RDLOCK, K_WRLOCK, K_COND, K_SEM, K_BARRIER, K_WG, K_COUNT };
static const char *const kind_name[K_COUNT] = {"mutex", "rdlock", "wrlock", "cond",
                                               "sem",   "barrier", "waitgroup"};

typedef struct fx {
    int kind;
    vt_mutex m;
    vt_rwlock l;
    vt_cond c;
    vt_sem s;
    vt_barrier b;
    vt_waitgroup wg;
} fx;

static void fx_init(fx *x, int kind)
{
    memset(x, 0, sizeof(*x));
    x->kind = kind;
    vt_mutex_init(&x->m);
    vt_rwlock_init(&x->l);
    vt_cond_init(&x->c);
    vt_sem_init(&x->s, 0);
    vt_barrier_init(&x->b, 2);
    vt_waitgroup_init(&x->wg);
}

static vt__wq *fx_queue(fx *x)
{
    switch (x->kind) {
    case K_MUTEX: return &x->m.q;
    case K_RDLOCK:
    case K_WRLOCK: return &x->l.q;
    case K_COND: return &x->c.q;
    case K_SEM: return &x->s.q;
    case K_BARRIER: return &x->b.q;
    default: return &x->wg.q;
    }
}

static vt_err fx_block(fx *x)
{
    switch (x->kind) {
    case K_MUTEX: return vt_mutex_lock(&x->m, VT_FOREVER);
    case K_RDLOCK: return vt_rwlock_wrlock(&x->l, VT_FOREVER);
    case K_WRLOCK: return vt_rwlock_rdlock(&x->l, VT_FOREVER);
    case K_WG: return vt_waitgroup_add(&x->wg, 1);
    default: return VT_OK; /* cond, sem at 0, barrier of 2: block by themselves */
    }
}

/* The destroy of a blocked object that has no waiter: held or counting. */
static vt_err fx_destroy(fx *x)
{
    switch (x->kind) {
    case K_MUTEX: return vt_mutex_destroy(&x->m);
    case K_RDLOCK:
    case K_WRLOCK: return vt_rwlock_destroy(&x->l);
    case K_COND: return vt_cond_destroy(&x->c);
    case K_SEM: return vt_sem_destroy(&x->s);
    case K_BARRIER: return vt_barrier_destroy(&x->b);
    default: return vt_waitgroup_destroy(&x->wg);
    }
}

static int fx_blocked_is_busy(fx *x)
{
    return x->kind == K_MUTEX || x->kind == K_RDLOCK || x->kind == K_WRLOCK || x->kind == K_WG;
}

/* *aux: the result of the release that follows a success (for cond: of the
 * unlock, which proves the waiter holds the mutex whatever the result). */
static vt_err fx_op(fx *x, int64_t deadline, vt_err *aux)
{
    vt_err e;
    *aux = VT_OK;
    switch (x->kind) {
    case K_MUTEX:
        if ((e = vt_mutex_lock(&x->m, deadline)) == VT_OK)
            *aux = vt_mutex_unlock(&x->m);
        return e;
    case K_RDLOCK:
        if ((e = vt_rwlock_rdlock(&x->l, deadline)) == VT_OK)
            *aux = vt_rwlock_unlock(&x->l);
        return e;
    case K_WRLOCK:
        if ((e = vt_rwlock_wrlock(&x->l, deadline)) == VT_OK)
            *aux = vt_rwlock_unlock(&x->l);
        return e;
    case K_COND: {
        /* The mutex is taken with cancellation masked so that a pending
         * cancellation is reported by vt_cond_wait itself. */
        int prev = vt_cancel_mask(1);
        e = vt_mutex_lock(&x->m, VT_FOREVER);
        if (prev >= 0)
            vt_cancel_mask(prev);
        if (e != VT_OK)
            return VT_ENOTSUP; /* not a result any check expects */
        e = vt_cond_wait(&x->c, &x->m, deadline);
        *aux = vt_mutex_unlock(&x->m);
        return e;
    }
    case K_SEM:
        if ((e = vt_sem_acquire(&x->s, 1, deadline)) == VT_OK)
            *aux = vt_sem_release(&x->s, 1);
        return e;
    case K_BARRIER: return vt_barrier_wait(&x->b, deadline, NULL);
    default: return vt_waitgroup_wait(&x->wg, deadline);
    }
}

typedef struct opctx {
    fx *x;
    int64_t rel; /* < 0: VT_FOREVER, 0: VT_NOW, else ns after the start */
    int cancel_self, mask;
    vt_err aux;
    int64_t elapsed;
} opctx;

static void *op_body(void *p)
{
    opctx *c = p;
    if (c->cancel_self) {
        vt_fiber_cancel(vt_fiber_self());
        if (c->mask)
            vt_cancel_mask(1);
    }
    int64_t t0 = now_any();
    int64_t dl = c->rel < 0 ? VT_FOREVER : c->rel == 0 ? VT_NOW : t0 + c->rel;
    vt_err e = fx_op(c->x, dl, &c->aux);
    c->elapsed = now_any() - t0;
    if (c->mask)
        vt_cancel_mask(0);
    return ERR_RET(e);
}

/* Leaves x usable and checks that it is: one more operation succeeds. */
static void fx_check_usable(fx *x, vt_runtime *rt)
{
    vt_err aux = VT_ENOTSUP;
    opctx c = {.x = x, .rel = -1};
    party p;
    switch (x->kind) {
    case K_MUTEX: VT_CHECK_OK(vt_mutex_unlock(&x->m)); break;
    case K_RDLOCK:
    case K_WRLOCK: VT_CHECK_OK(vt_rwlock_unlock(&x->l)); break;
    case K_SEM: VT_CHECK_OK(vt_sem_release(&x->s, 1)); break;
    case K_WG: VT_CHECK_OK(vt_waitgroup_done(&x->wg)); break;
    default: break;
    }
    switch (x->kind) {
    case K_COND:
        VT_CHECK(party_start(&p, rt, 0, op_body, &c));
        wait_qlen(&x->c.q, 1);
        VT_CHECK_OK(vt_mutex_lock(&x->m, VT_FOREVER));
        VT_CHECK_OK(vt_cond_signal(&x->c));
        VT_CHECK_OK(vt_mutex_unlock(&x->m));
        VT_CHECK_EQ(party_join(&p), VT_OK);
        VT_CHECK_OK(c.aux);
        break;
    case K_BARRIER:
        VT_CHECK(party_start(&p, rt, 0, op_body, &c));
        wait_qlen(&x->b.q, 1);
        VT_CHECK_OK(fx_op(x, VT_FOREVER, &aux));
        VT_CHECK_EQ(party_join(&p), VT_OK);
        break;
    default:
        VT_CHECK_OK(fx_op(x, VT_NOW, &aux));
        VT_CHECK_OK(aux);
        break;
    }
    if (x->kind == K_SEM)
        VT_CHECK_EQ(vt_sem_value(&x->s), 1);
    VT_CHECK_EQ(qlen(fx_queue(x)), 0);
    VT_CHECK_OK(fx_destroy(x));
}

/* VT_NOW and a real deadline, from fibers and threads, on every kind. */
VT_TEST(all_timeouts)
{
    for (unsigned workers = 1; workers <= 2; workers++) {
        vt_runtime *rt = rt_new(workers);
        VT_CHECK_NOT_NULL(rt);
        for (int kind = 0; kind < K_COUNT; kind++) {
            for (int thread = 0; thread <= 1; thread++) {
                fx x;
                party p;
                fx_init(&x, kind);
                VT_CHECK_OK(fx_block(&x));
                if (fx_blocked_is_busy(&x))
                    VT_CHECK_ERR(fx_destroy(&x), VT_EBUSY);

                opctx now = {.x = &x, .rel = 0};
                VT_CHECK(party_start(&p, rt, thread, op_body, &now));
                VT_CHECK_EQ(party_join(&p), VT_ETIMEDOUT);
                VT_CHECK_EQ(qlen(fx_queue(&x)), 0);

                opctx dl = {.x = &x, .rel = VT_MS(20)};
                VT_CHECK(party_start(&p, rt, thread, op_body, &dl));
                intptr_t r = party_join(&p);
                if (r != VT_ETIMEDOUT)
                    printf("  kind %s thread %d workers %u\n", kind_name[kind], thread, workers);
                VT_CHECK_EQ(r, VT_ETIMEDOUT);
                VT_CHECK_GE(dl.elapsed, VT_MS(20));
                VT_CHECK_EQ(qlen(fx_queue(&x)), 0);
                if (kind == K_COND) /* timed out, yet holding the mutex again */
                    VT_CHECK_OK(dl.aux);
                fx_check_usable(&x, rt);
            }
        }
        vt_runtime_free(rt);
    }
}

/* A fiber blocked in each kind's operation is cancelled: VT_ECANCELED, and
 * the object works on. While it waits, destroy says VT_EBUSY. */
VT_TEST(all_cancel_blocked)
{
    for (unsigned workers = 1; workers <= 2; workers++) {
        vt_runtime *rt = rt_new(workers);
        VT_CHECK_NOT_NULL(rt);
        for (int kind = 0; kind < K_COUNT; kind++) {
            fx x;
            party p;
            fx_init(&x, kind);
            VT_CHECK_OK(fx_block(&x));
            opctx c = {.x = &x, .rel = -1};
            VT_CHECK(party_start(&p, rt, 0, op_body, &c));
            wait_qlen(fx_queue(&x), 1);
            VT_CHECK_ERR(fx_destroy(&x), VT_EBUSY);
            VT_CHECK_OK(vt_fiber_cancel(p.f));
            intptr_t r = party_join(&p);
            if (r != VT_ECANCELED)
                printf("  kind %s workers %u\n", kind_name[kind], workers);
            VT_CHECK_EQ(r, VT_ECANCELED);
            VT_CHECK_EQ(qlen(fx_queue(&x)), 0);
            if (kind == K_COND)
                VT_CHECK_OK(c.aux);
            fx_check_usable(&x, rt);
        }
        vt_runtime_free(rt);
    }
}

/* A cancelled fiber gets VT_ECANCELED from every blocking call, even one
 * that would not wait; masked, the calls work (VT_NOW where they would
 * have to wait). */
VT_TEST(all_cancel_pending_at_entry)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    for (int kind = 0; kind < K_COUNT; kind++) {
        for (int mask = 0; mask <= 1; mask++) {
            fx x;
            party p;
            fx_init(&x, kind);
            VT_CHECK_OK(vt_sem_release(&x.s, 1));
            opctx c = {.x = &x, .rel = mask ? 0 : -1, .cancel_self = 1, .mask = mask};
            VT_CHECK(party_start(&p, rt, 0, op_body, &c));
            intptr_t r = party_join(&p);
            intptr_t want = !mask ? VT_ECANCELED : (kind == K_COND || kind == K_BARRIER) ? VT_ETIMEDOUT : VT_OK;
            if (r != want)
                printf("  kind %s mask %d\n", kind_name[kind], mask);
            VT_CHECK_EQ(r, want);
            VT_CHECK_EQ(qlen(fx_queue(&x)), 0);
            VT_CHECK_OK(fx_destroy(&x));
        }
    }
    vt_runtime_free(rt);
}

VT_TEST(null_and_bad_arguments)
{
    vt_mutex m;
    vt_sem s;
    vt_barrier b;
    VT_CHECK_ERR(vt_mutex_init(NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_mutex_destroy(NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_mutex_lock(NULL, VT_FOREVER), VT_EINVAL);
    VT_CHECK_ERR(vt_mutex_trylock(NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_mutex_unlock(NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_rwlock_init(NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_rwlock_destroy(NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_rwlock_rdlock(NULL, VT_FOREVER), VT_EINVAL);
    VT_CHECK_ERR(vt_rwlock_wrlock(NULL, VT_FOREVER), VT_EINVAL);
    VT_CHECK_ERR(vt_rwlock_tryrdlock(NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_rwlock_trywrlock(NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_rwlock_unlock(NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_cond_init(NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_cond_destroy(NULL), VT_EINVAL);
    VT_CHECK_OK(vt_mutex_init(&m));
    VT_CHECK_OK(vt_mutex_lock(&m, VT_FOREVER));
    VT_CHECK_ERR(vt_cond_wait(NULL, &m, VT_FOREVER), VT_EINVAL);
    vt_cond c = VT_COND_INIT;
    VT_CHECK_ERR(vt_cond_wait(&c, NULL, VT_FOREVER), VT_EINVAL);
    VT_CHECK_OK(vt_mutex_unlock(&m));
    VT_CHECK_ERR(vt_cond_signal(NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_cond_broadcast(NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_sem_init(NULL, 1), VT_EINVAL);
    VT_CHECK_ERR(vt_sem_destroy(NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_sem_acquire(NULL, 1, VT_FOREVER), VT_EINVAL);
    VT_CHECK_ERR(vt_sem_tryacquire(NULL, 1), VT_EINVAL);
    VT_CHECK_ERR(vt_sem_release(NULL, 1), VT_EINVAL);
    VT_CHECK_EQ(vt_sem_value(NULL), 0);
    VT_CHECK_OK(vt_sem_init(&s, 2));
    VT_CHECK_ERR(vt_sem_acquire(&s, 0, VT_FOREVER), VT_EINVAL);
    VT_CHECK_ERR(vt_sem_tryacquire(&s, 0), VT_EINVAL);
    VT_CHECK_ERR(vt_sem_acquire(&s, UINT64_MAX, VT_FOREVER), VT_EINVAL); /* can never be had */
    VT_CHECK_ERR(vt_sem_init(&s, UINT64_MAX), VT_ERANGE);
    VT_CHECK_ERR(vt_barrier_init(NULL, 2), VT_EINVAL);
    VT_CHECK_ERR(vt_barrier_init(&b, 0), VT_EINVAL);
    VT_CHECK_ERR(vt_barrier_destroy(NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_barrier_wait(NULL, VT_FOREVER, NULL), VT_EINVAL);
    vt_barrier zero_b = {0}; /* a barrier must be initialised */
    int leader = 7;
    VT_CHECK_ERR(vt_barrier_wait(&zero_b, VT_FOREVER, &leader), VT_EINVAL);
    VT_CHECK_EQ(leader, 0);
    VT_CHECK_ERR(vt_waitgroup_init(NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_waitgroup_destroy(NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_waitgroup_add(NULL, 1), VT_EINVAL);
    VT_CHECK_ERR(vt_waitgroup_done(NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_waitgroup_wait(NULL, VT_FOREVER), VT_EINVAL);
    vt_once o = VT_ONCE_INIT;
    VT_CHECK_ERR(vt_once_run(NULL, (void (*)(void *))abort, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_once_run(&o, NULL, NULL), VT_EINVAL);
}

/* ---- Mutex -------------------------------------------------------------------------- */

VT_TEST(mutex_basic_and_errors)
{
    vt_mutex a = VT_MUTEX_INIT, z;
    memset(&z, 0, sizeof z); /* zeroed storage is an unlocked mutex */
    VT_CHECK_OK(vt_mutex_lock(&z, VT_NOW));
    VT_CHECK_ERR(vt_mutex_lock(&z, VT_FOREVER), VT_EDEADLK);
    VT_CHECK_ERR(vt_mutex_trylock(&z), VT_EBUSY);
    VT_CHECK_ERR(vt_mutex_destroy(&z), VT_EBUSY);
    VT_CHECK_OK(vt_mutex_unlock(&z));
    VT_CHECK_ERR(vt_mutex_unlock(&z), VT_ESTATE);
    VT_CHECK_OK(vt_mutex_destroy(&z));

    VT_CHECK_OK(vt_mutex_trylock(&a));
    VT_CHECK_OK(vt_mutex_unlock(&a));
    VT_CHECK_ERR(vt_mutex_unlock(&a), VT_ESTATE);
    VT_CHECK_OK(vt_mutex_init(&a));
    VT_CHECK_OK(vt_mutex_destroy(&a));
}

typedef struct mu_arg {
    vt_mutex *m;
    vt_err r1, r2;
} mu_arg;

static void *unlock_body(void *p)
{
    mu_arg *a = p;
    a->r1 = vt_mutex_unlock(a->m);
    a->r2 = vt_mutex_trylock(a->m);
    return NULL;
}

/* Only the owner unlocks: neither a fiber nor another thread may, whoever
 * holds it (a thread or a fiber). */
VT_TEST(mutex_unlock_by_non_owner)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_mutex m = VT_MUTEX_INIT;
    VT_CHECK_OK(vt_mutex_lock(&m, VT_FOREVER));
    for (int thread = 0; thread <= 1; thread++) {
        mu_arg a = {.m = &m};
        party p;
        VT_CHECK(party_start(&p, rt, thread, unlock_body, &a));
        party_join(&p);
        VT_CHECK_ERR(a.r1, VT_ESTATE);
        VT_CHECK_ERR(a.r2, VT_EBUSY);
    }
    VT_CHECK_OK(vt_mutex_unlock(&m));
    VT_CHECK_OK(vt_mutex_destroy(&m));
    vt_runtime_free(rt);
}

typedef struct order_arg {
    vt_mutex *m;
    int idx;
    _Atomic int *next;
    int *order;
} order_arg;

static void *mutex_order_body(void *p)
{
    order_arg *a = p;
    vt_err e = vt_mutex_lock(a->m, VT_FOREVER);
    if (e != VT_OK)
        return ERR_RET(e);
    a->order[atomic_fetch_add(a->next, 1)] = a->idx;
    return ERR_RET(vt_mutex_unlock(a->m));
}

/* Waiters queued one by one, fibers and threads mixed, get the mutex in
 * their arrival order. */
VT_TEST(mutex_fifo_handoff)
{
    enum { N = 12 };
    static const unsigned workers[] = {1, 2, 8};
    for (unsigned wi = 0; wi < 3; wi++) {
        vt_runtime *rt = rt_new(workers[wi]);
        VT_CHECK_NOT_NULL(rt);
        vt_mutex m = VT_MUTEX_INIT;
        _Atomic int next = 0;
        int order[N];
        order_arg a[N];
        party p[N];
        VT_CHECK_OK(vt_mutex_lock(&m, VT_FOREVER));
        for (int i = 0; i < N; i++) {
            a[i] = (order_arg){.m = &m, .idx = i, .next = &next, .order = order};
            VT_CHECK(party_start(&p[i], rt, i % 3 == 2, mutex_order_body, &a[i]));
            wait_qlen(&m.q, (uint32_t)i + 1);
        }
        VT_CHECK_ERR(vt_mutex_lock(&m, VT_NOW), VT_EDEADLK);
        VT_CHECK_OK(vt_mutex_unlock(&m));
        for (int i = 0; i < N; i++)
            VT_CHECK_EQ(party_join(&p[i]), VT_OK);
        for (int i = 0; i < N; i++)
            VT_CHECK_EQ(order[i], i);
        VT_CHECK_OK(vt_mutex_destroy(&m));
        vt_runtime_free(rt);
    }
}

typedef struct barge_arg {
    vt_mutex *m;
    _Atomic int holding, go;
    vt_err unlock, try_after, lock_now_after, unlock_after;
} barge_arg;

/* Holds m until told, then unlocks with a waiter queued: the unlock hands
 * over, so the mutex is not free for this fiber a moment later. */
static void *hold_then_handoff_body(void *p)
{
    barge_arg *a = p;
    vt_err e = vt_mutex_lock(a->m, VT_FOREVER);
    if (e != VT_OK)
        return ERR_RET(e);
    atomic_store(&a->holding, 1);
    while (!atomic_load(&a->go))
        relax();
    a->unlock = vt_mutex_unlock(a->m);
    a->try_after = vt_mutex_trylock(a->m);
    a->lock_now_after = vt_mutex_lock(a->m, VT_NOW);
    a->unlock_after = vt_mutex_unlock(a->m);
    return ERR_RET(VT_OK);
}

typedef struct hold_arg {
    vt_mutex *m;
    _Atomic int got, release;
} hold_arg;

/* Locks, says so, holds until released: a waiter that cannot hand the
 * mutex on behind the test's back. */
static void *lock_hold_body(void *p)
{
    hold_arg *a = p;
    vt_err e = vt_mutex_lock(a->m, VT_FOREVER);
    if (e != VT_OK)
        return ERR_RET(e);
    atomic_store(&a->got, 1);
    while (!atomic_load(&a->release))
        relax();
    return ERR_RET(vt_mutex_unlock(a->m));
}

/* Nobody barges: while others wait, trylock and VT_NOW fail; an unlock
 * hands the mutex to the first waiter before that waiter even runs. */
VT_TEST(mutex_no_barging)
{
    vt_runtime *rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    vt_mutex m = VT_MUTEX_INIT;
    party h, t;

    /* The test thread hands over to a queued fiber, then to a thread. */
    for (int thread = 0; thread <= 1; thread++) {
        hold_arg w = {.m = &m};
        VT_CHECK_OK(vt_mutex_lock(&m, VT_FOREVER));
        VT_CHECK(party_start(&t, rt, thread, lock_hold_body, &w));
        wait_qlen(&m.q, 1);
        VT_CHECK_OK(vt_mutex_unlock(&m));
        VT_CHECK_ERR(vt_mutex_trylock(&m), VT_EBUSY);
        VT_CHECK_ERR(vt_mutex_lock(&m, VT_NOW), VT_ETIMEDOUT);
        VT_CHECK_ERR(vt_mutex_unlock(&m), VT_ESTATE);
        atomic_store(&w.release, 1);
        VT_CHECK_EQ(party_join(&t), VT_OK);
        VT_CHECK_OK(vt_mutex_trylock(&m));
        VT_CHECK_OK(vt_mutex_unlock(&m));
    }

    /* A fiber hands over to a queued fiber and to a queued thread. */
    for (int thread = 0; thread <= 1; thread++) {
        barge_arg a = {.m = &m};
        hold_arg w = {.m = &m};
        VT_CHECK(party_start(&h, rt, 0, hold_then_handoff_body, &a));
        wait_atomic(&a.holding, 1);
        VT_CHECK(party_start(&t, rt, thread, lock_hold_body, &w));
        wait_qlen(&m.q, 1);
        VT_CHECK_ERR(vt_mutex_trylock(&m), VT_EBUSY);
        atomic_store(&a.go, 1);
        VT_CHECK_EQ(party_join(&h), VT_OK);
        VT_CHECK_OK(a.unlock);
        VT_CHECK_ERR(a.try_after, VT_EBUSY);
        VT_CHECK_ERR(a.lock_now_after, VT_ETIMEDOUT);
        VT_CHECK_ERR(a.unlock_after, VT_ESTATE);
        atomic_store(&w.release, 1);
        VT_CHECK_EQ(party_join(&t), VT_OK);
    }
    VT_CHECK_OK(vt_mutex_destroy(&m));
    vt_runtime_free(rt);
}

typedef struct count_arg {
    vt_mutex *m;
    long iters;
    long *counter; /* plain: the mutex is its only protection */
    _Atomic long *errors;
} count_arg;

static void *count_body(void *p)
{
    count_arg *a = p;
    for (long i = 0; i < a->iters; i++) {
        vt_err e = vt_mutex_lock(a->m, VT_FOREVER);
        if (e != VT_OK) {
            atomic_fetch_add(a->errors, 1);
            continue;
        }
        long v = *a->counter;
        if (i % 8 == 0) /* be preempted inside, so that others queue */
            relax();
        *a->counter = v + 1;
        if (vt_mutex_unlock(a->m) != VT_OK)
            atomic_fetch_add(a->errors, 1);
    }
    return NULL;
}

/* N fibers and 2 threads x M increments under the mutex: the total is
 * exact, so no wake-up was lost and no two held it at once. */
VT_TEST(mutex_contention_exact)
{
    enum { NF = 16, NT = 2, M = 400 };
    static const unsigned workers[] = {1, 2, 8};
    for (unsigned wi = 0; wi < 3; wi++) {
        vt_runtime *rt = rt_new(workers[wi]);
        VT_CHECK_NOT_NULL(rt);
        vt_mutex m = VT_MUTEX_INIT;
        long counter = 0;
        _Atomic long errors = 0;
        count_arg a = {.m = &m, .iters = M, .counter = &counter, .errors = &errors};
        party p[NF + NT];
        for (int i = 0; i < NF + NT; i++)
            VT_CHECK(party_start(&p[i], rt, i >= NF, count_body, &a));
        for (int i = 0; i < NF + NT; i++)
            party_join(&p[i]);
        VT_CHECK_EQ(atomic_load(&errors), 0);
        VT_CHECK_EQ(counter, (long)(NF + NT) * M);
        VT_CHECK_OK(vt_mutex_destroy(&m));
        vt_runtime_free(rt);
    }
}

/* ---- Deterministic mode: the same primitives on one thread and a virtual
 * clock; a deadline passes without real waiting. */
typedef struct det_state {
    vt_mutex m;
    vt_sem s;
    long counter;
    _Atomic long errors;
    vt_err timed;
    int64_t timed_elapsed;
    vt_err fifo_ok;
} det_state;

static void *det_holder(void *p)
{
    det_state *d = p;
    if (vt_mutex_lock(&d->m, VT_FOREVER) != VT_OK)
        return ERR_RET(VT_ESTATE);
    vt_sleep_ms(1000); /* virtual */
    return ERR_RET(vt_mutex_unlock(&d->m));
}

static void *det_timed(void *p)
{
    det_state *d = p;
    int64_t t0 = vt_fiber_now();
    d->timed = vt_mutex_lock(&d->m, vt_fiber_deadline(VT_MS(10)));
    d->timed_elapsed = vt_fiber_now() - t0;
    return NULL;
}

static void *det_root(void *p)
{
    det_state *d = p;
    enum { N = 8, M = 200 };
    vt_fiber f[N], h, t;
    count_arg a = {.m = &d->m, .iters = M, .counter = &d->counter, .errors = &d->errors};
    for (int i = 0; i < N; i++)
        if (vt_fiber_spawn(&f[i], count_body, &a) != VT_OK)
            return ERR_RET(VT_ENOMEM);
    for (int i = 0; i < N; i++)
        vt_fiber_await(f[i], NULL, VT_FOREVER);
    if (vt_fiber_spawn(&h, det_holder, d) != VT_OK)
        return ERR_RET(VT_ENOMEM);
    while (vt_mutex_trylock(&d->m) == VT_OK) { /* until the holder has it */
        vt_mutex_unlock(&d->m);
        vt_fiber_yield();
    }
    if (vt_fiber_spawn(&t, det_timed, d) != VT_OK)
        return ERR_RET(VT_ENOMEM);
    vt_fiber_await(t, NULL, VT_FOREVER);
    void *r;
    vt_fiber_await(h, &r, VT_FOREVER);
    return r;
}

VT_TEST(deterministic_mode)
{
    vt_runtime_opts o;
    vt_runtime_opts_init(&o);
    o.pool.deterministic = 1;
    o.pool.seed = vt_test_seed();
    det_state d;
    memset(&d, 0, sizeof d);
    vt_mutex_init(&d.m);
    void *r = ERR_RET(VT_ENOTSUP);
    VT_CHECK_OK(vt_runtime_main(&o, det_root, &d, &r));
    VT_CHECK_EQ((intptr_t)r, VT_OK);
    VT_CHECK_EQ(atomic_load(&d.errors), 0);
    VT_CHECK_EQ(d.counter, 8L * 200);
    VT_CHECK_ERR(d.timed, VT_ETIMEDOUT);
    VT_CHECK_GE(d.timed_elapsed, VT_MS(10));
    VT_CHECK_OK(vt_mutex_destroy(&d.m));
}

/* ---- Readers-writer lock ------------------------------------------------------------- */

VT_TEST(rwlock_basic_and_errors)
{
    vt_rwlock l;
    memset(&l, 0, sizeof l);
    VT_CHECK_ERR(vt_rwlock_unlock(&l), VT_ESTATE);
    VT_CHECK_OK(vt_rwlock_rdlock(&l, VT_FOREVER));
    VT_CHECK_OK(vt_rwlock_rdlock(&l, VT_NOW));
    VT_CHECK_OK(vt_rwlock_tryrdlock(&l));
    VT_CHECK_ERR(vt_rwlock_trywrlock(&l), VT_EBUSY);
    VT_CHECK_ERR(vt_rwlock_wrlock(&l, VT_NOW), VT_ETIMEDOUT);
    VT_CHECK_ERR(vt_rwlock_destroy(&l), VT_EBUSY);
    VT_CHECK_OK(vt_rwlock_unlock(&l));
    VT_CHECK_OK(vt_rwlock_unlock(&l));
    VT_CHECK_OK(vt_rwlock_unlock(&l));
    VT_CHECK_ERR(vt_rwlock_unlock(&l), VT_ESTATE);
    VT_CHECK_OK(vt_rwlock_trywrlock(&l));
    VT_CHECK_ERR(vt_rwlock_tryrdlock(&l), VT_EBUSY);
    VT_CHECK_ERR(vt_rwlock_rdlock(&l, VT_NOW), VT_ETIMEDOUT);
    VT_CHECK_ERR(vt_rwlock_trywrlock(&l), VT_EBUSY);
    VT_CHECK_ERR(vt_rwlock_destroy(&l), VT_EBUSY);
    VT_CHECK_OK(vt_rwlock_unlock(&l));
    VT_CHECK_ERR(vt_rwlock_unlock(&l), VT_ESTATE);
    VT_CHECK_OK(vt_rwlock_destroy(&l));
    vt_rwlock i = VT_RWLOCK_INIT;
    VT_CHECK_OK(vt_rwlock_wrlock(&i, VT_FOREVER));
    VT_CHECK_OK(vt_rwlock_unlock(&i));
    VT_CHECK_OK(vt_rwlock_init(&i));
}

typedef struct rw_arg {
    vt_rwlock *l;
    int write, idx, batch; /* readers of one batch wait for each other inside */
    _Atomic int *next, *inside_r, *inside_w, *batch_in, *violations;
    int *order;
} rw_arg;

static void *rw_order_body(void *p)
{
    rw_arg *a = p;
    vt_err e = a->write ? vt_rwlock_wrlock(a->l, VT_FOREVER) : vt_rwlock_rdlock(a->l, VT_FOREVER);
    if (e != VT_OK)
        return ERR_RET(e);
    if (a->write) {
        if (atomic_fetch_add(a->inside_w, 1) != 0 || atomic_load(a->inside_r) != 0)
            atomic_fetch_add(a->violations, 1);
    } else {
        atomic_fetch_add(a->inside_r, 1);
        if (atomic_load(a->inside_w) != 0)
            atomic_fetch_add(a->violations, 1);
    }
    a->order[atomic_fetch_add(a->next, 1)] = a->idx;
    if (a->batch > 1) {
        /* Granted together, or this never ends (the watchdog says so). */
        atomic_fetch_add(a->batch_in, 1);
        while (atomic_load(a->batch_in) < a->batch)
            relax();
    }
    if (a->write)
        atomic_fetch_sub(a->inside_w, 1);
    else
        atomic_fetch_sub(a->inside_r, 1);
    return ERR_RET(vt_rwlock_unlock(a->l));
}

/* Behind a writer: R0 W1 R2 R3 W4 queue in that order and are served so:
 * R0, then W1 alone, then R2 and R3 together, then W4. */
VT_TEST(rwlock_fifo_mixed)
{
    enum { N = 5 };
    static const int is_write[N] = {0, 1, 0, 0, 1};
    for (unsigned workers = 1; workers <= 2; workers++) {
        vt_runtime *rt = rt_new(workers);
        VT_CHECK_NOT_NULL(rt);
        vt_rwlock l = VT_RWLOCK_INIT;
        _Atomic int next = 0, inside_r = 0, inside_w = 0, batch_in = 0, violations = 0;
        int order[N];
        rw_arg a[N];
        party p[N];
        VT_CHECK_OK(vt_rwlock_wrlock(&l, VT_FOREVER));
        for (int i = 0; i < N; i++) {
            a[i] = (rw_arg){.l = &l, .write = is_write[i], .idx = i, .batch = (i == 2 || i == 3) ? 2 : 1,
                            .next = &next, .inside_r = &inside_r, .inside_w = &inside_w,
                            .batch_in = &batch_in, .violations = &violations, .order = order};
            VT_CHECK(party_start(&p[i], rt, i == 3, rw_order_body, &a[i]));
            wait_qlen(&l.q, (uint32_t)i + 1);
        }
        VT_CHECK_ERR(vt_rwlock_tryrdlock(&l), VT_EBUSY);
        VT_CHECK_OK(vt_rwlock_unlock(&l));
        for (int i = 0; i < N; i++)
            VT_CHECK_EQ(party_join(&p[i]), VT_OK);
        VT_CHECK_EQ(atomic_load(&violations), 0);
        VT_CHECK_EQ(order[0], 0);
        VT_CHECK_EQ(order[1], 1);
        VT_CHECK((order[2] == 2 && order[3] == 3) || (order[2] == 3 && order[3] == 2));
        VT_CHECK_EQ(order[4], 4);
        VT_CHECK_OK(vt_rwlock_destroy(&l));
        vt_runtime_free(rt);
    }
}

typedef struct stream_arg {
    vt_rwlock *l;
    _Atomic int *stop, *inside, *violations;
    _Atomic long *reads;
} stream_arg;

/* Readers that overlap without a gap: a lock that let new readers in
 * ahead of a waiting writer would never be free for it. */
static void *reader_stream_body(void *p)
{
    stream_arg *a = p;
    while (!atomic_load(a->stop)) {
        vt_err e = vt_rwlock_rdlock(a->l, VT_FOREVER);
        if (e != VT_OK)
            return ERR_RET(e);
        atomic_fetch_add(a->inside, 1);
        atomic_fetch_add(a->reads, 1);
        relax();
        relax();
        atomic_fetch_sub(a->inside, 1);
        vt_rwlock_unlock(a->l);
    }
    return ERR_RET(VT_OK);
}

typedef struct writer_arg {
    vt_rwlock *l;
    _Atomic int *stop, *inside, *violations;
} writer_arg;

static void *stream_writer_body(void *p)
{
    writer_arg *a = p;
    vt_err e = vt_rwlock_wrlock(a->l, VT_FOREVER);
    if (e != VT_OK)
        return ERR_RET(e);
    if (atomic_load(a->inside) != 0)
        atomic_fetch_add(a->violations, 1);
    atomic_store(a->stop, 1);
    return ERR_RET(vt_rwlock_unlock(a->l));
}

VT_TEST(rwlock_writer_not_starved)
{
    enum { R = 6 };
    for (unsigned workers = 1; workers <= 2; workers++) {
        for (int thread = 0; thread <= 1; thread++) {
            vt_runtime *rt = rt_new(workers);
            VT_CHECK_NOT_NULL(rt);
            vt_rwlock l = VT_RWLOCK_INIT;
            _Atomic int stop = 0, inside = 0, violations = 0;
            _Atomic long reads = 0;
            stream_arg sa = {.l = &l, .stop = &stop, .inside = &inside, .violations = &violations,
                             .reads = &reads};
            writer_arg wa = {.l = &l, .stop = &stop, .inside = &inside, .violations = &violations};
            party r[R], w;
            for (int i = 0; i < R; i++)
                VT_CHECK(party_start(&r[i], rt, i == 0, reader_stream_body, &sa));
            while (atomic_load(&reads) < 100)
                vt__sleep_ns(VT_US(50));
            VT_CHECK(party_start(&w, rt, thread, stream_writer_body, &wa));
            VT_CHECK_EQ(party_join(&w), VT_OK);
            for (int i = 0; i < R; i++)
                VT_CHECK_EQ(party_join(&r[i]), VT_OK);
            VT_CHECK_EQ(atomic_load(&violations), 0);
            VT_CHECK_OK(vt_rwlock_destroy(&l));
            vt_runtime_free(rt);
        }
    }
}

typedef struct rw_one {
    vt_rwlock *l;
    int write;
    int64_t rel;
    _Atomic int got;
    _Atomic int release;
} rw_one;

static void *rw_one_body(void *p)
{
    rw_one *a = p;
    int64_t dl = a->rel < 0 ? VT_FOREVER : now_any() + a->rel;
    vt_err e = a->write ? vt_rwlock_wrlock(a->l, dl) : vt_rwlock_rdlock(a->l, dl);
    if (e != VT_OK)
        return ERR_RET(e);
    atomic_store(&a->got, 1);
    while (!atomic_load(&a->release))
        relax();
    return ERR_RET(vt_rwlock_unlock(a->l));
}

/* A writer that leaves the head of the queue (cancelled, or timed out)
 * lets in the readers it was holding back. */
VT_TEST(rwlock_writer_leaving_lets_readers_in)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    for (int how = 0; how <= 1; how++) {
        vt_rwlock l = VT_RWLOCK_INIT;
        rw_one w = {.l = &l, .write = 1, .rel = how ? VT_MS(30) : -1};
        rw_one r = {.l = &l, .rel = -1};
        party pw, pr;
        VT_CHECK_OK(vt_rwlock_rdlock(&l, VT_FOREVER));
        VT_CHECK(party_start(&pw, rt, 0, rw_one_body, &w));
        wait_qlen(&l.q, 1);
        VT_CHECK(party_start(&pr, rt, 0, rw_one_body, &r));
        wait_qlen(&l.q, 2);
        if (!how)
            VT_CHECK_OK(vt_fiber_cancel(pw.f));
        VT_CHECK_EQ(party_join(&pw), how ? VT_ETIMEDOUT : VT_ECANCELED);
        wait_atomic(&r.got, 1); /* while the test thread still reads */
        VT_CHECK_EQ(qlen(&l.q), 0);
        atomic_store(&r.release, 1);
        VT_CHECK_EQ(party_join(&pr), VT_OK);
        VT_CHECK_OK(vt_rwlock_unlock(&l));
        VT_CHECK_OK(vt_rwlock_trywrlock(&l));
        VT_CHECK_OK(vt_rwlock_unlock(&l));
        VT_CHECK_OK(vt_rwlock_destroy(&l));
    }
    vt_runtime_free(rt);
}

/* ---- Condition variable ------------------------------------------------------------------- */

VT_TEST(cond_errors)
{
    vt_cond c = VT_COND_INIT;
    vt_mutex m = VT_MUTEX_INIT;
    VT_CHECK_ERR(vt_cond_wait(&c, &m, VT_FOREVER), VT_ESTATE); /* m not held */
    VT_CHECK_OK(vt_cond_signal(&c));                          /* nobody waits: fine */
    VT_CHECK_OK(vt_cond_broadcast(&c));
    VT_CHECK_OK(vt_mutex_lock(&m, VT_FOREVER));
    VT_CHECK_ERR(vt_cond_wait(&c, &m, VT_NOW), VT_ETIMEDOUT);
    VT_CHECK_OK(vt_mutex_unlock(&m)); /* still held after the timeout */
    VT_CHECK_OK(vt_cond_destroy(&c));
    VT_CHECK_OK(vt_cond_init(&c));
}

typedef struct cv_arg {
    vt_cond *c;
    vt_mutex *m;
    int idx;
    _Atomic int *next;
    _Atomic int *order;
    vt_err unlock;
} cv_arg;

static void *cv_order_body(void *p)
{
    cv_arg *a = p;
    vt_err e = vt_mutex_lock(a->m, VT_FOREVER);
    if (e != VT_OK)
        return ERR_RET(VT_ENOTSUP);
    e = vt_cond_wait(a->c, a->m, VT_FOREVER);
    if (e == VT_OK)
        atomic_store(&a->order[atomic_fetch_add(a->next, 1)], a->idx);
    a->unlock = vt_mutex_unlock(a->m);
    return ERR_RET(e);
}

/* signal wakes the longest waiter; broadcast all, each holding the mutex
 * when it returns. */
VT_TEST(cond_signal_fifo_and_broadcast)
{
    enum { N = 8 };
    static const unsigned workers[] = {1, 2, 8};
    for (unsigned wi = 0; wi < 3; wi++) {
        vt_runtime *rt = rt_new(workers[wi]);
        VT_CHECK_NOT_NULL(rt);
        vt_cond c = VT_COND_INIT;
        vt_mutex m = VT_MUTEX_INIT;
        _Atomic int next = 0;
        _Atomic int order[N];
        order_reset(order, N);
        cv_arg a[N];
        party p[N];
        for (int i = 0; i < N; i++) {
            a[i] = (cv_arg){.c = &c, .m = &m, .idx = i, .next = &next, .order = order};
            VT_CHECK(party_start(&p[i], rt, i % 4 == 3, cv_order_body, &a[i]));
            wait_qlen(&c.q, (uint32_t)i + 1);
        }
        VT_CHECK_ERR(vt_cond_destroy(&c), VT_EBUSY);
        for (int k = 0; k < N / 2; k++) {
            VT_CHECK_OK(vt_cond_signal(&c));
            VT_CHECK_EQ(wait_slot(&order[k]), k);
        }
        VT_CHECK_OK(vt_mutex_lock(&m, VT_FOREVER));
        VT_CHECK_OK(vt_cond_broadcast(&c));
        VT_CHECK_EQ(qlen(&c.q), 0);
        VT_CHECK_OK(vt_mutex_unlock(&m));
        for (int i = 0; i < N; i++) {
            VT_CHECK_EQ(party_join(&p[i]), VT_OK);
            VT_CHECK_OK(a[i].unlock);
        }
        VT_CHECK_EQ(atomic_load(&next), N);
        VT_CHECK_OK(vt_cond_destroy(&c));
        VT_CHECK_OK(vt_mutex_destroy(&m));
        vt_runtime_free(rt);
    }
}

/* Signalled, then cancelled before it could take the mutex back: the
 * re-lock is not interrupted; it waits for the mutex and returns VT_OK. */
VT_TEST(cond_relock_not_interruptible)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_cond c = VT_COND_INIT;
    vt_mutex m = VT_MUTEX_INIT;
    _Atomic int next = 0;
    _Atomic int order[1];
    order_reset(order, 1);
    cv_arg a = {.c = &c, .m = &m, .next = &next, .order = order};
    party p;
    VT_CHECK(party_start(&p, rt, 0, cv_order_body, &a));
    wait_qlen(&c.q, 1);
    VT_CHECK_OK(vt_mutex_lock(&m, VT_FOREVER));
    VT_CHECK_OK(vt_cond_signal(&c));
    wait_qlen(&m.q, 1); /* it queued for the mutex */
    VT_CHECK_OK(vt_fiber_cancel(p.f));
    vt_sleep_ms(20); /* room for a wrong early return to show */
    VT_CHECK_ERR(vt_fiber_await(p.f, NULL, VT_NOW), VT_ETIMEDOUT);
    VT_CHECK_EQ(qlen(&m.q), 1);
    VT_CHECK_OK(vt_mutex_unlock(&m));
    VT_CHECK_EQ(party_join(&p), VT_OK);
    VT_CHECK_OK(a.unlock);
    VT_CHECK_EQ(atomic_load(&next), 1);
    VT_CHECK_OK(vt_mutex_destroy(&m));
    vt_runtime_free(rt);
}

typedef struct pc_state {
    vt_mutex m;
    vt_cond not_empty, not_full;
    long buf[4];
    int head, len;
    long sum, taken;
} pc_state;

typedef struct pc_arg {
    pc_state *s;
    long from, count;
    _Atomic long *errors;
} pc_arg;

static void *producer_body(void *p)
{
    pc_arg *a = p;
    pc_state *s = a->s;
    for (long i = a->from; i < a->from + a->count; i++) {
        if (vt_mutex_lock(&s->m, VT_FOREVER) != VT_OK) {
            atomic_fetch_add(a->errors, 1);
            return NULL;
        }
        while (s->len == 4)
            if (vt_cond_wait(&s->not_full, &s->m, VT_FOREVER) != VT_OK)
                atomic_fetch_add(a->errors, 1);
        s->buf[(s->head + s->len++) % 4] = i;
        vt_cond_signal(&s->not_empty);
        vt_mutex_unlock(&s->m);
    }
    return NULL;
}

static void *consumer_body(void *p)
{
    pc_arg *a = p;
    pc_state *s = a->s;
    for (long k = 0; k < a->count; k++) {
        if (vt_mutex_lock(&s->m, VT_FOREVER) != VT_OK) {
            atomic_fetch_add(a->errors, 1);
            return NULL;
        }
        while (s->len == 0)
            if (vt_cond_wait(&s->not_empty, &s->m, VT_FOREVER) != VT_OK)
                atomic_fetch_add(a->errors, 1);
        s->sum += s->buf[s->head];
        s->head = (s->head + 1) % 4;
        s->len--;
        s->taken++;
        vt_cond_signal(&s->not_full);
        vt_mutex_unlock(&s->m);
    }
    return NULL;
}

/* A bounded buffer: producers and consumers, fibers and threads; every item
 * arrives exactly once (signal is enough: no wake-up is lost). */
VT_TEST(cond_bounded_buffer)
{
    enum { P = 4, C = 4, ITEMS = 500 };
    static const unsigned workers[] = {1, 2, 8};
    for (unsigned wi = 0; wi < 3; wi++) {
        vt_runtime *rt = rt_new(workers[wi]);
        VT_CHECK_NOT_NULL(rt);
        pc_state s;
        memset(&s, 0, sizeof s);
        _Atomic long errors = 0;
        pc_arg pa[P], ca[C];
        party pp[P], cp[C];
        for (int i = 0; i < C; i++) {
            ca[i] = (pc_arg){.s = &s, .count = ITEMS, .errors = &errors};
            VT_CHECK(party_start(&cp[i], rt, i == 0, consumer_body, &ca[i]));
        }
        for (int i = 0; i < P; i++) {
            pa[i] = (pc_arg){.s = &s, .from = (long)i * ITEMS, .count = ITEMS, .errors = &errors};
            VT_CHECK(party_start(&pp[i], rt, i == 1, producer_body, &pa[i]));
        }
        for (int i = 0; i < P; i++)
            party_join(&pp[i]);
        for (int i = 0; i < C; i++)
            party_join(&cp[i]);
        long n = (long)P * ITEMS;
        VT_CHECK_EQ(atomic_load(&errors), 0);
        VT_CHECK_EQ(s.taken, n);
        VT_CHECK_EQ(s.sum, n * (n - 1) / 2);
        vt_runtime_free(rt);
    }
}

/* ---- Semaphore ---------------------------------------------------------------------------- */

VT_TEST(sem_basic_and_limits)
{
    vt_sem s;
    VT_CHECK_OK(vt_sem_init(&s, 3));
    VT_CHECK_EQ(vt_sem_value(&s), 3);
    VT_CHECK_OK(vt_sem_tryacquire(&s, 2));
    VT_CHECK_EQ(vt_sem_value(&s), 1);
    VT_CHECK_ERR(vt_sem_tryacquire(&s, 2), VT_EBUSY);
    VT_CHECK_ERR(vt_sem_acquire(&s, 2, VT_NOW), VT_ETIMEDOUT);
    VT_CHECK_OK(vt_sem_acquire(&s, 1, VT_NOW));
    VT_CHECK_OK(vt_sem_release(&s, 5));
    VT_CHECK_OK(vt_sem_release(&s, 0));
    VT_CHECK_EQ(vt_sem_value(&s), 5);
    VT_CHECK_OK(vt_sem_acquire(&s, 5, VT_FOREVER));
    VT_CHECK_EQ(vt_sem_value(&s), 0);
    /* The largest count there may be, then one more is out of range and
     * changes nothing. */
    VT_CHECK_OK(vt_sem_release(&s, UINT64_MAX >> 1));
    VT_CHECK_ERR(vt_sem_release(&s, 1), VT_ERANGE);
    VT_CHECK_EQ(vt_sem_value(&s), UINT64_MAX >> 1);
    VT_CHECK_OK(vt_sem_acquire(&s, UINT64_MAX >> 1, VT_NOW));
    VT_CHECK_ERR(vt_sem_release(&s, UINT64_MAX), VT_ERANGE);
    VT_CHECK_EQ(vt_sem_value(&s), 0);
    VT_CHECK_OK(vt_sem_destroy(&s));
}

typedef struct sem_arg {
    vt_sem *s;
    uint64_t n;
    int idx;
    int64_t rel;
    _Atomic int *next;
    _Atomic int *order;
} sem_arg;

static void *sem_order_body(void *p)
{
    sem_arg *a = p;
    vt_err e = vt_sem_acquire(a->s, a->n, a->rel < 0 ? VT_FOREVER : now_any() + a->rel);
    if (e == VT_OK && a->order)
        atomic_store(&a->order[atomic_fetch_add(a->next, 1)], a->idx);
    return ERR_RET(e);
}

/* A large request at the head holds back smaller ones: permits go to the
 * queue in order, and a try cannot take them while others wait. */
VT_TEST(sem_multi_permit_fifo)
{
    for (unsigned workers = 1; workers <= 2; workers++) {
        vt_runtime *rt = rt_new(workers);
        VT_CHECK_NOT_NULL(rt);
        vt_sem s;
        VT_CHECK_OK(vt_sem_init(&s, 0));
        _Atomic int next = 0;
        _Atomic int order[3];
        order_reset(order, 3);
        sem_arg a[3] = {{.s = &s, .n = 5, .idx = 0, .rel = -1, .next = &next, .order = order},
                        {.s = &s, .n = 2, .idx = 1, .rel = -1, .next = &next, .order = order},
                        {.s = &s, .n = 1, .idx = 2, .rel = -1, .next = &next, .order = order}};
        party p[3];
        for (int i = 0; i < 3; i++) {
            VT_CHECK(party_start(&p[i], rt, i == 1, sem_order_body, &a[i]));
            wait_qlen(&s.q, (uint32_t)i + 1);
        }
        VT_CHECK_OK(vt_sem_release(&s, 3)); /* enough for 2 and 1, not for the head's 5 */
        VT_CHECK_EQ(vt_sem_value(&s), 3);
        VT_CHECK_EQ(qlen(&s.q), 3);
        VT_CHECK_ERR(vt_sem_tryacquire(&s, 1), VT_EBUSY);
        VT_CHECK_ERR(vt_sem_acquire(&s, 1, VT_NOW), VT_ETIMEDOUT);
        VT_CHECK_OK(vt_sem_release(&s, 2)); /* 5: the head's */
        VT_CHECK_EQ(wait_slot(&order[0]), 0);
        VT_CHECK_EQ(vt_sem_value(&s), 0);
        VT_CHECK_EQ(qlen(&s.q), 2);
        VT_CHECK_OK(vt_sem_release(&s, 1)); /* not for 2; 1 behind it waits */
        VT_CHECK_EQ(vt_sem_value(&s), 1);
        VT_CHECK_EQ(qlen(&s.q), 2);
        VT_CHECK_OK(vt_sem_release(&s, 1));
        VT_CHECK_EQ(wait_slot(&order[1]), 1);
        VT_CHECK_EQ(vt_sem_value(&s), 0);
        VT_CHECK_EQ(qlen(&s.q), 1);
        VT_CHECK_OK(vt_sem_release(&s, 1));
        for (int i = 0; i < 3; i++)
            VT_CHECK_EQ(party_join(&p[i]), VT_OK);
        VT_CHECK_EQ(atomic_load(&order[2]), 2);
        VT_CHECK_EQ(vt_sem_value(&s), 0);
        VT_CHECK_OK(vt_sem_destroy(&s));
        vt_runtime_free(rt);
    }
}

/* A large request that leaves the head (timeout, cancel) lets the smaller
 * ones behind it take the permits that are there. */
VT_TEST(sem_head_leaving_lets_others_in)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    for (int how = 0; how <= 1; how++) {
        vt_sem s;
        VT_CHECK_OK(vt_sem_init(&s, 2));
        sem_arg big = {.s = &s, .n = 5, .rel = how ? VT_MS(30) : -1};
        sem_arg small = {.s = &s, .n = 2, .rel = -1};
        party pb, ps;
        VT_CHECK(party_start(&pb, rt, 0, sem_order_body, &big));
        wait_qlen(&s.q, 1);
        VT_CHECK(party_start(&ps, rt, how, sem_order_body, &small));
        wait_qlen(&s.q, 2);
        VT_CHECK_EQ(vt_sem_value(&s), 2);
        if (!how)
            VT_CHECK_OK(vt_fiber_cancel(pb.f));
        VT_CHECK_EQ(party_join(&pb), how ? VT_ETIMEDOUT : VT_ECANCELED);
        VT_CHECK_EQ(party_join(&ps), VT_OK);
        VT_CHECK_EQ(vt_sem_value(&s), 0);
        VT_CHECK_EQ(qlen(&s.q), 0);
        VT_CHECK_OK(vt_sem_release(&s, 1));
        VT_CHECK_OK(vt_sem_tryacquire(&s, 1)); /* no waiter bit left behind */
        VT_CHECK_OK(vt_sem_destroy(&s));
    }
    vt_runtime_free(rt);
}

typedef struct limit_arg {
    vt_sem *s;
    int iters;
    _Atomic int *inside, *max_inside;
    _Atomic long *errors;
} limit_arg;

static void *sem_limit_body(void *p)
{
    limit_arg *a = p;
    for (int i = 0; i < a->iters; i++) {
        uint64_t n = 1 + (uint64_t)(i % 2);
        if (vt_sem_acquire(a->s, n, VT_FOREVER) != VT_OK) {
            atomic_fetch_add(a->errors, 1);
            continue;
        }
        int in = atomic_fetch_add(a->inside, (int)n) + (int)n;
        int mx = atomic_load(a->max_inside);
        while (in > mx && !atomic_compare_exchange_weak(a->max_inside, &mx, in))
            ;
        relax();
        atomic_fetch_sub(a->inside, (int)n);
        if (vt_sem_release(a->s, n) != VT_OK)
            atomic_fetch_add(a->errors, 1);
    }
    return NULL;
}

/* Permits are never over-granted, and all come back. */
VT_TEST(sem_contention_limit)
{
    enum { N = 12, M = 300, K = 3 };
    static const unsigned workers[] = {1, 2, 8};
    for (unsigned wi = 0; wi < 3; wi++) {
        vt_runtime *rt = rt_new(workers[wi]);
        VT_CHECK_NOT_NULL(rt);
        vt_sem s;
        VT_CHECK_OK(vt_sem_init(&s, K));
        _Atomic int inside = 0, max_inside = 0;
        _Atomic long errors = 0;
        limit_arg a = {.s = &s, .iters = M, .inside = &inside, .max_inside = &max_inside, .errors = &errors};
        party p[N];
        for (int i = 0; i < N; i++)
            VT_CHECK(party_start(&p[i], rt, i % 6 == 5, sem_limit_body, &a));
        for (int i = 0; i < N; i++)
            party_join(&p[i]);
        VT_CHECK_EQ(atomic_load(&errors), 0);
        VT_CHECK_LE(atomic_load(&max_inside), K);
        VT_CHECK_EQ(vt_sem_value(&s), K);
        VT_CHECK_OK(vt_sem_destroy(&s));
        vt_runtime_free(rt);
    }
}

/* ---- Barrier ------------------------------------------------------------------------------ */

VT_TEST(barrier_single_party)
{
    vt_barrier b;
    int leader = 0;
    VT_CHECK_OK(vt_barrier_init(&b, 1));
    for (int i = 0; i < 3; i++) {
        VT_CHECK_OK(vt_barrier_wait(&b, VT_NOW, &leader));
        VT_CHECK_EQ(leader, 1);
    }
    VT_CHECK_OK(vt_barrier_wait(&b, VT_FOREVER, NULL));
    VT_CHECK_OK(vt_barrier_destroy(&b));
}

typedef struct bar_arg {
    vt_barrier *b;
    int rounds, parties;
    _Atomic int *arrived;  /* per round */
    _Atomic int *leaders;  /* per round */
    _Atomic long *errors;
} bar_arg;

static void *barrier_rounds_body(void *p)
{
    bar_arg *a = p;
    for (int r = 0; r < a->rounds; r++) {
        atomic_fetch_add(&a->arrived[r], 1);
        int leader = -1;
        vt_err e = vt_barrier_wait(a->b, VT_FOREVER, &leader);
        if (e != VT_OK || (leader != 0 && leader != 1))
            atomic_fetch_add(a->errors, 1);
        if (leader == 1)
            atomic_fetch_add(&a->leaders[r], 1);
        /* Nobody passes round r before all have arrived in it. */
        if (atomic_load(&a->arrived[r]) != a->parties)
            atomic_fetch_add(a->errors, 1);
    }
    return NULL;
}

/* Reuse over many rounds, fibers and threads together: nobody passes early,
 * exactly one leader a round. */
VT_TEST(barrier_rounds)
{
    enum { P = 6, R = 200 };
    static const unsigned workers[] = {1, 2, 8};
    for (unsigned wi = 0; wi < 3; wi++) {
        vt_runtime *rt = rt_new(workers[wi]);
        VT_CHECK_NOT_NULL(rt);
        vt_barrier b;
        VT_CHECK_OK(vt_barrier_init(&b, P));
        static _Atomic int arrived[R], leaders[R];
        for (int r = 0; r < R; r++) {
            atomic_store(&arrived[r], 0);
            atomic_store(&leaders[r], 0);
        }
        _Atomic long errors = 0;
        bar_arg a = {.b = &b, .rounds = R, .parties = P, .arrived = arrived, .leaders = leaders,
                     .errors = &errors};
        party p[P];
        for (int i = 0; i < P; i++)
            VT_CHECK(party_start(&p[i], rt, i == 0 || i == 3, barrier_rounds_body, &a));
        for (int i = 0; i < P; i++)
            party_join(&p[i]);
        VT_CHECK_EQ(atomic_load(&errors), 0);
        for (int r = 0; r < R; r++)
            VT_CHECK_EQ(atomic_load(&leaders[r]), 1);
        VT_CHECK_OK(vt_barrier_destroy(&b));
        vt_runtime_free(rt);
    }
}

typedef struct bar_one {
    vt_barrier *b;
    int64_t rel;
    int leader;
    int64_t elapsed;
} bar_one;

static void *barrier_one_body(void *p)
{
    bar_one *a = p;
    int64_t t0 = now_any();
    vt_err e = vt_barrier_wait(a->b, a->rel < 0 ? VT_FOREVER : t0 + a->rel, &a->leader);
    a->elapsed = now_any() - t0;
    return ERR_RET(e);
}

/* A party that times out or is cancelled leaves the round: the next round
 * still needs all its parties. */
VT_TEST(barrier_leaving_party)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    for (int how = 0; how <= 2; how++) { /* timeout fiber, timeout thread, cancel */
        vt_barrier b;
        VT_CHECK_OK(vt_barrier_init(&b, 3));
        bar_one x = {.b = &b, .rel = how < 2 ? VT_MS(20) : -1}, y = {.b = &b, .rel = -1},
                z = {.b = &b, .rel = -1}, w = {.b = &b, .rel = -1};
        party px, py, pz, pw;
        VT_CHECK(party_start(&px, rt, how == 1, barrier_one_body, &x));
        if (how == 2) {
            wait_qlen(&b.q, 1);
            VT_CHECK_ERR(vt_barrier_destroy(&b), VT_EBUSY);
            VT_CHECK_OK(vt_fiber_cancel(px.f));
        }
        VT_CHECK_EQ(party_join(&px), how < 2 ? VT_ETIMEDOUT : VT_ECANCELED);
        if (how < 2)
            VT_CHECK_GE(x.elapsed, VT_MS(20));
        VT_CHECK_EQ(x.leader, 0);
        VT_CHECK_OK(vt_barrier_destroy(&b)); /* nobody counted any more */
        VT_CHECK(party_start(&py, rt, 0, barrier_one_body, &y));
        wait_qlen(&b.q, 1);
        VT_CHECK(party_start(&pz, rt, 1, barrier_one_body, &z));
        wait_qlen(&b.q, 2); /* two of three: the leaver no longer counts */
        VT_CHECK(party_start(&pw, rt, 0, barrier_one_body, &w));
        VT_CHECK_EQ(party_join(&pw), VT_OK);
        VT_CHECK_EQ(party_join(&py), VT_OK);
        VT_CHECK_EQ(party_join(&pz), VT_OK);
        VT_CHECK_EQ(y.leader + z.leader + w.leader, 1);
        VT_CHECK_EQ(w.leader, 1);
        VT_CHECK_OK(vt_barrier_destroy(&b));
    }
    vt_runtime_free(rt);
}

/* ---- Wait group --------------------------------------------------------------------------- */

VT_TEST(waitgroup_basic_and_limits)
{
    vt_waitgroup wg;
    memset(&wg, 0, sizeof wg);
    VT_CHECK_OK(vt_waitgroup_wait(&wg, VT_NOW));
    VT_CHECK_OK(vt_waitgroup_wait(&wg, VT_FOREVER));
    VT_CHECK_ERR(vt_waitgroup_done(&wg), VT_ERANGE);
    VT_CHECK_ERR(vt_waitgroup_add(&wg, -1), VT_ERANGE);
    VT_CHECK_OK(vt_waitgroup_add(&wg, 0));
    VT_CHECK_OK(vt_waitgroup_add(&wg, 2));
    VT_CHECK_ERR(vt_waitgroup_add(&wg, -3), VT_ERANGE); /* nothing changes */
    VT_CHECK_ERR(vt_waitgroup_wait(&wg, VT_NOW), VT_ETIMEDOUT);
    VT_CHECK_ERR(vt_waitgroup_destroy(&wg), VT_EBUSY);
    VT_CHECK_OK(vt_waitgroup_done(&wg));
    VT_CHECK_ERR(vt_waitgroup_wait(&wg, VT_NOW), VT_ETIMEDOUT);
    VT_CHECK_OK(vt_waitgroup_done(&wg));
    VT_CHECK_OK(vt_waitgroup_wait(&wg, VT_NOW));
    VT_CHECK_OK(vt_waitgroup_add(&wg, INT64_MAX));
    VT_CHECK_ERR(vt_waitgroup_add(&wg, 1), VT_ERANGE);
    VT_CHECK_OK(vt_waitgroup_add(&wg, -INT64_MAX));
    VT_CHECK_OK(vt_waitgroup_destroy(&wg));
    vt_waitgroup i = VT_WAITGROUP_INIT;
    VT_CHECK_OK(vt_waitgroup_wait(&i, VT_NOW));
    VT_CHECK_OK(vt_waitgroup_init(&i));
}

typedef struct wg_arg {
    vt_waitgroup *wg;
    _Atomic long *work;
    long *plain; /* written before done(), read after wait() */
    int idx;
} wg_arg;

static void *wg_worker_body(void *p)
{
    wg_arg *a = p;
    relax();
    a->plain[a->idx] = a->idx + 1;
    atomic_fetch_add(a->work, 1);
    return ERR_RET(vt_waitgroup_done(a->wg));
}

static void *wg_waiter_body(void *p)
{
    wg_arg *a = p;
    vt_err e = vt_waitgroup_wait(a->wg, VT_FOREVER);
    if (e == VT_OK && atomic_load(a->work) != a->idx)
        return ERR_RET(VT_ESTATE);
    return ERR_RET(e);
}

/* Several waiters (fibers and threads) all wake once the count is zero,
 * seeing all the work; over several rounds of the same group. */
VT_TEST(waitgroup_many_waiters_rounds)
{
    enum { W = 16, WAITERS = 4, ROUNDS = 20 };
    static const unsigned workers[] = {1, 2, 8};
    for (unsigned wi = 0; wi < 3; wi++) {
        vt_runtime *rt = rt_new(workers[wi]);
        VT_CHECK_NOT_NULL(rt);
        vt_waitgroup wg = VT_WAITGROUP_INIT;
        for (int round = 0; round < ROUNDS; round++) {
            _Atomic long work = 0;
            long plain[W];
            memset(plain, 0, sizeof plain);
            wg_arg wa[W], ra = {.wg = &wg, .work = &work, .plain = plain, .idx = W};
            party pw[W], pr[WAITERS];
            VT_CHECK_OK(vt_waitgroup_add(&wg, W));
            for (int i = 0; i < WAITERS; i++)
                VT_CHECK(party_start(&pr[i], rt, i == 0, wg_waiter_body, &ra));
            for (int i = 0; i < W; i++) {
                wa[i] = (wg_arg){.wg = &wg, .work = &work, .plain = plain, .idx = i};
                VT_CHECK(party_start(&pw[i], rt, i == 5, wg_worker_body, &wa[i]));
            }
            VT_CHECK_OK(vt_waitgroup_wait(&wg, VT_FOREVER));
            for (int i = 0; i < W; i++)
                VT_CHECK_EQ(plain[i], i + 1);
            for (int i = 0; i < WAITERS; i++)
                VT_CHECK_EQ(party_join(&pr[i]), VT_OK);
            for (int i = 0; i < W; i++)
                VT_CHECK_EQ(party_join(&pw[i]), VT_OK);
        }
        VT_CHECK_OK(vt_waitgroup_destroy(&wg));
        vt_runtime_free(rt);
    }
}

/* ---- Once --------------------------------------------------------------------------------- */

static _Atomic int once_runs;
static int once_effect; /* plain: visible to every caller once vt_once_run returns */

static void once_fn(void *arg)
{
    atomic_fetch_add(&once_runs, 1);
    vt_sleep_ms(20); /* the others come in meanwhile and wait */
    once_effect = (int)(intptr_t)arg;
}

VT_TEST(once_basic)
{
    vt_once o;
    memset(&o, 0, sizeof o);
    atomic_store(&once_runs, 0);
    once_effect = 0;
    VT_CHECK_OK(vt_once_run(&o, once_fn, (void *)(intptr_t)5));
    VT_CHECK_EQ(once_effect, 5);
    VT_CHECK_OK(vt_once_run(&o, once_fn, (void *)(intptr_t)6));
    VT_CHECK_EQ(once_effect, 5);
    VT_CHECK_EQ(atomic_load(&once_runs), 1);
}

typedef struct once_arg {
    vt_once *o;
    int seen;
} once_arg;

static void *once_body(void *p)
{
    once_arg *a = p;
    vt_err e = vt_once_run(a->o, once_fn, (void *)(intptr_t)42);
    a->seen = once_effect;
    return ERR_RET(e);
}

/* Many callers race, fibers and threads: fn runs once, all return after it
 * did and see its effect. */
VT_TEST(once_racing_callers)
{
    enum { N = 24 };
    static const unsigned workers[] = {1, 2, 8};
    for (unsigned wi = 0; wi < 3; wi++) {
        vt_runtime *rt = rt_new(workers[wi]);
        VT_CHECK_NOT_NULL(rt);
        vt_once o = VT_ONCE_INIT;
        atomic_store(&once_runs, 0);
        once_effect = 0;
        once_arg a[N];
        party p[N];
        for (int i = 0; i < N; i++) {
            a[i] = (once_arg){.o = &o};
            VT_CHECK(party_start(&p[i], rt, i % 5 == 0, once_body, &a[i]));
        }
        for (int i = 0; i < N; i++) {
            VT_CHECK_EQ(party_join(&p[i]), VT_OK);
            VT_CHECK_EQ(a[i].seen, 42);
        }
        VT_CHECK_EQ(atomic_load(&once_runs), 1);
        VT_CHECK_EQ(qlen(&o.q), 0);
        vt_runtime_free(rt);
    }
}

static vt_sem once_gate;

static void gated_fn(void *arg)
{
    (void)arg;
    atomic_fetch_add(&once_runs, 1);
    vt_sem_acquire(&once_gate, 1, VT_FOREVER);
    once_effect = 7;
}

static void *gated_once_body(void *p)
{
    once_arg *a = p;
    vt_err e = vt_once_run(a->o, gated_fn, NULL);
    a->seen = once_effect;
    return ERR_RET(e);
}

/* A caller that waits for fn is not interrupted by cancellation. */
VT_TEST(once_wait_not_interruptible)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_once o = VT_ONCE_INIT;
    VT_CHECK_OK(vt_sem_init(&once_gate, 0));
    atomic_store(&once_runs, 0);
    once_effect = 0;
    once_arg a = {.o = &o}, b = {.o = &o};
    party pa, pb;
    VT_CHECK(party_start(&pa, rt, 0, gated_once_body, &a));
    wait_qlen(&once_gate.q, 1); /* fn runs, blocked on the gate */
    VT_CHECK(party_start(&pb, rt, 0, gated_once_body, &b));
    wait_qlen(&o.q, 1);
    VT_CHECK_OK(vt_fiber_cancel(pb.f));
    vt_sleep_ms(20); /* room for a wrong early return to show */
    VT_CHECK_ERR(vt_fiber_await(pb.f, NULL, VT_NOW), VT_ETIMEDOUT);
    VT_CHECK_OK(vt_sem_release(&once_gate, 1));
    VT_CHECK_EQ(party_join(&pa), VT_OK);
    VT_CHECK_EQ(party_join(&pb), VT_OK);
    VT_CHECK_EQ(a.seen, 7);
    VT_CHECK_EQ(b.seen, 7);
    VT_CHECK_EQ(atomic_load(&once_runs), 1);
    VT_CHECK_OK(vt_sem_destroy(&once_gate));
    vt_runtime_free(rt);
}
