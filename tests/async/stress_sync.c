/* stress_sync.c — the sync primitives and futures under load, from fibers
 * on runtimes of 1, 2 and 8 workers and plain threads at once, with random
 * deadlines (VT_NOW, a few microseconds, none) and fibers cancelled while
 * they wait. Every test ends on exact counts: what succeeded is what the
 * protected data shows, permits and waiters all come back, objects can be
 * destroyed.
 *
 * VT_TEST_STRESS=N multiplies the work; sanitizer builds divide it (TSan
 * runs this code an order of magnitude slower). No timing is checked. */
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>

#include "vt_test.h"
#include "async_test.h"
#include "vitte/async.h"
#include "async/async_int.h"

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

/* ---- Helpers ---------------------------------------------------------------------- */

/* VT_NOW, a deadline a few microseconds away, or none. */
static int64_t random_deadline(uint64_t *rng)
{
    switch (vt__rand_below(rng, 4)) {
    case 0: return VT_NOW;
    case 1: return now_any() + (int64_t)vt__rand_below(rng, 20000);
    default: return VT_FOREVER;
    }
}

/* Per party: its own random stream and what it counted. */
typedef struct worker_arg {
    void *shared;
    uint64_t rng;
    long iters;
    int victim; /* loops until cancelled */
    long ok, timedout, cancelled, busy, errors;
    _Atomic int started;
} worker_arg;

static void note(worker_arg *w, vt_err e)
{
    if (e == VT_OK)
        w->ok++;
    else if (e == VT_ETIMEDOUT)
        w->timedout++;
    else if (e == VT_ECANCELED)
        w->cancelled++;
    else if (e == VT_EBUSY)
        w->busy++;
    else
        w->errors++;
}

/* Runs n parties over fn (every fourth a thread, the rest fibers), plus nv
 * victim fibers cancelled one by one once they have begun, and sums what
 * they counted into *sum. */
static void run_parties(vt_runtime *rt, int n, int nv, vt_fiber_fn fn, void *shared, long iters,
                        worker_arg *sum)
{
    int total = n + nv;
    worker_arg *w = vt_calloc((size_t)total, sizeof(*w));
    party *p = vt_calloc((size_t)total, sizeof(*p));
    memset(sum, 0, sizeof(*sum));
    if (!w || !p) {
        sum->errors = 1;
        vt_free(w, (size_t)total * sizeof(*w));
        vt_free(p, (size_t)total * sizeof(*p));
        return;
    }
    for (int i = 0; i < total; i++) {
        w[i].shared = shared;
        w[i].rng = vt_test_rand();
        w[i].iters = iters;
        w[i].victim = i >= n;
        if (!party_start(&p[i], rt, i < n && i % 4 == 3, fn, &w[i]))
            sum->errors++;
    }
    for (int i = n; i < total; i++) {
        while (!atomic_load(&w[i].started))
            vt__sleep_ns(VT_US(50));
        vt__sleep_ns(VT_US(200));
        if (vt_fiber_cancel(p[i].f) != VT_OK)
            sum->errors++;
    }
    for (int i = 0; i < total; i++) {
        party_join(&p[i]);
        sum->ok += w[i].ok;
        sum->timedout += w[i].timedout;
        sum->cancelled += w[i].cancelled;
        sum->busy += w[i].busy;
        sum->errors += w[i].errors;
    }
    vt_free(w, (size_t)total * sizeof(*w));
    vt_free(p, (size_t)total * sizeof(*p));
}

/* One more iteration? Victims run until a call of theirs reports the
 * cancellation (every blocking call does, from then on). */
static int more(worker_arg *w, long i)
{
    return w->victim ? w->cancelled == 0 : i < w->iters;
}

/* ---- Mutex ---------------------------------------------------------------------------- */

typedef struct mutex_shared {
    vt_mutex m;
    long counter;
} mutex_shared;

static void *mutex_worker(void *p)
{
    worker_arg *w = p;
    mutex_shared *s = w->shared;
    atomic_store(&w->started, 1);
    for (long i = 0; more(w, i); i++) {
        vt_err e;
        if (vt__rand_below(&w->rng, 8) == 0)
            e = vt_mutex_trylock(&s->m);
        else
            e = vt_mutex_lock(&s->m, w->victim ? VT_FOREVER : random_deadline(&w->rng));
        note(w, e);
        if (e != VT_OK)
            continue;
        long v = s->counter;
        if (vt__rand_below(&w->rng, 4) == 0)
            relax();
        s->counter = v + 1;
        if (vt_mutex_unlock(&s->m) != VT_OK)
            w->errors++;
    }
    return NULL;
}

VT_TEST(stress_mutex)
{
    for (int wi = 0; wi < NWORKER_COUNTS; wi++) {
        vt_runtime *rt = rt_new(worker_counts[wi]);
        VT_CHECK_NOT_NULL(rt);
        mutex_shared s;
        memset(&s, 0, sizeof s);
        worker_arg sum;
        run_parties(rt, 16, 4, mutex_worker, &s, scaled(3000), &sum);
        VT_CHECK_EQ(sum.errors, 0);
        VT_CHECK_EQ(s.counter, sum.ok);
        VT_CHECK_EQ(sum.cancelled, 4); /* the victims, once each */
        VT_CHECK_OK(vt_mutex_destroy(&s.m));
        VT_CHECK_EQ(s.m.q.n, 0);
        vt_runtime_free(rt);
    }
}

/* ---- Readers-writer lock ----------------------------------------------------------------- */

typedef struct rw_shared {
    vt_rwlock l;
    long a, b; /* equal outside a write */
    _Atomic int readers_in, writers_in;
    _Atomic long violations;
} rw_shared;

static void *rw_worker(void *p)
{
    worker_arg *w = p;
    rw_shared *s = w->shared;
    atomic_store(&w->started, 1);
    for (long i = 0; more(w, i); i++) {
        int write = vt__rand_below(&w->rng, 4) == 0;
        int64_t dl = w->victim ? VT_FOREVER : random_deadline(&w->rng);
        vt_err e = write ? vt_rwlock_wrlock(&s->l, dl) : vt_rwlock_rdlock(&s->l, dl);
        if (e != VT_OK) {
            note(w, e);
            continue;
        }
        if (write) {
            if (atomic_fetch_add(&s->writers_in, 1) || atomic_load(&s->readers_in))
                atomic_fetch_add(&s->violations, 1);
            s->a++;
            if (vt__rand_below(&w->rng, 4) == 0)
                relax();
            s->b++;
            atomic_fetch_sub(&s->writers_in, 1);
            w->ok++; /* counts writes only */
        } else {
            atomic_fetch_add(&s->readers_in, 1);
            if (atomic_load(&s->writers_in) || s->a != s->b)
                atomic_fetch_add(&s->violations, 1);
            if (vt__rand_below(&w->rng, 4) == 0)
                relax();
            atomic_fetch_sub(&s->readers_in, 1);
        }
        if (vt_rwlock_unlock(&s->l) != VT_OK)
            w->errors++;
    }
    return NULL;
}

VT_TEST(stress_rwlock)
{
    for (int wi = 0; wi < NWORKER_COUNTS; wi++) {
        vt_runtime *rt = rt_new(worker_counts[wi]);
        VT_CHECK_NOT_NULL(rt);
        rw_shared s;
        memset(&s, 0, sizeof s);
        worker_arg sum;
        run_parties(rt, 16, 4, rw_worker, &s, scaled(3000), &sum);
        VT_CHECK_EQ(sum.errors, 0);
        VT_CHECK_EQ(atomic_load(&s.violations), 0);
        VT_CHECK_EQ(s.a, sum.ok);
        VT_CHECK_EQ(s.b, sum.ok);
        VT_CHECK_OK(vt_rwlock_destroy(&s.l));
        vt_runtime_free(rt);
    }
}

/* ---- Semaphore ------------------------------------------------------------------------------ */

enum { SEM_K = 5 };

typedef struct sem_shared {
    vt_sem s;
    _Atomic int inside;
    _Atomic long violations;
} sem_shared;

static void *sem_worker(void *p)
{
    worker_arg *w = p;
    sem_shared *s = w->shared;
    atomic_store(&w->started, 1);
    for (long i = 0; more(w, i); i++) {
        uint64_t n = 1 + vt__rand_below(&w->rng, SEM_K);
        vt_err e = vt__rand_below(&w->rng, 8) == 0
                       ? vt_sem_tryacquire(&s->s, n)
                       : vt_sem_acquire(&s->s, n, w->victim ? VT_FOREVER : random_deadline(&w->rng));
        note(w, e);
        if (e != VT_OK)
            continue;
        if (atomic_fetch_add(&s->inside, (int)n) + (int)n > SEM_K)
            atomic_fetch_add(&s->violations, 1);
        if (vt__rand_below(&w->rng, 4) == 0)
            relax();
        atomic_fetch_sub(&s->inside, (int)n);
        if (vt_sem_release(&s->s, n) != VT_OK)
            w->errors++;
    }
    return NULL;
}

VT_TEST(stress_sem)
{
    for (int wi = 0; wi < NWORKER_COUNTS; wi++) {
        vt_runtime *rt = rt_new(worker_counts[wi]);
        VT_CHECK_NOT_NULL(rt);
        sem_shared s;
        memset(&s, 0, sizeof s);
        VT_CHECK_OK(vt_sem_init(&s.s, SEM_K));
        worker_arg sum;
        run_parties(rt, 16, 4, sem_worker, &s, scaled(3000), &sum);
        VT_CHECK_EQ(sum.errors, 0);
        VT_CHECK_EQ(atomic_load(&s.violations), 0);
        VT_CHECK_GT(sum.ok, 0);
        VT_CHECK_EQ(vt_sem_value(&s.s), SEM_K); /* every permit came back */
        VT_CHECK_OK(vt_sem_tryacquire(&s.s, SEM_K));
        VT_CHECK_OK(vt_sem_destroy(&s.s));
        vt_runtime_free(rt);
    }
}

/* ---- Condition variable: a bounded queue whose waits time out -------------------------------- */

enum { CQ_CAP = 8 };

typedef struct cq_shared {
    vt_mutex m;
    vt_cond not_empty, not_full;
    long buf[CQ_CAP];
    int head, len;
    long produced_sum, consumed_sum, consumed;
    long per_consumer, per_producer;
    int use_broadcast;
} cq_shared;

/* Producers (even index) and consumers (odd), the same number of each:
 * items produced equal items consumed. Waits use random deadlines and
 * simply wait again after a timeout. */
static void *cq_worker(void *p)
{
    worker_arg *w = p;
    cq_shared *s = w->shared;
    int producer = (int)(w->rng & 1); /* set by the caller, see stress_cond */
    w->rng = vt__rand_next(&w->rng);
    for (long i = 0; i < w->iters; i++) {
        if (vt_mutex_lock(&s->m, VT_FOREVER) != VT_OK) {
            w->errors++;
            return NULL;
        }
        for (;;) {
            if (producer ? s->len < CQ_CAP : s->len > 0)
                break;
            int64_t dl = random_deadline(&w->rng);
            vt_err e = vt_cond_wait(producer ? &s->not_full : &s->not_empty, &s->m,
                                    dl == VT_NOW ? VT_FOREVER : dl);
            if (e != VT_OK && e != VT_ETIMEDOUT)
                w->errors++;
            note(w, e);
        }
        if (producer) {
            long v = (long)(w->rng % 1000);
            s->buf[(s->head + s->len++) % CQ_CAP] = v;
            s->produced_sum += v;
            w->rng = vt__rand_next(&w->rng);
            if (s->use_broadcast)
                vt_cond_broadcast(&s->not_empty);
            else
                vt_cond_signal(&s->not_empty);
        } else {
            s->consumed_sum += s->buf[s->head];
            s->head = (s->head + 1) % CQ_CAP;
            s->len--;
            s->consumed++;
            if (s->use_broadcast)
                vt_cond_broadcast(&s->not_full);
            else
                vt_cond_signal(&s->not_full);
        }
        if (vt_mutex_unlock(&s->m) != VT_OK)
            w->errors++;
    }
    return NULL;
}

VT_TEST(stress_cond)
{
    enum { N = 12 };
    for (int wi = 0; wi < NWORKER_COUNTS; wi++) {
        for (int bc = 0; bc <= 1; bc++) {
            vt_runtime *rt = rt_new(worker_counts[wi]);
            VT_CHECK_NOT_NULL(rt);
            cq_shared s;
            memset(&s, 0, sizeof s);
            s.use_broadcast = bc;
            long iters = scaled(2000);
            worker_arg w[N];
            party p[N];
            memset(w, 0, sizeof w);
            for (int i = 0; i < N; i++) {
                w[i].shared = &s;
                w[i].iters = iters;
                w[i].rng = (vt_test_rand() & ~(uint64_t)1) | (uint64_t)(i % 2 == 0);
                VT_CHECK(party_start(&p[i], rt, i % 5 == 4, cq_worker, &w[i]));
            }
            long errors = 0;
            for (int i = 0; i < N; i++) {
                party_join(&p[i]);
                errors += w[i].errors;
            }
            VT_CHECK_EQ(errors, 0);
            VT_CHECK_EQ(s.consumed, (long)(N / 2) * iters);
            VT_CHECK_EQ(s.len, 0);
            VT_CHECK_EQ(s.consumed_sum, s.produced_sum);
            VT_CHECK_OK(vt_cond_destroy(&s.not_empty));
            VT_CHECK_OK(vt_cond_destroy(&s.not_full));
            VT_CHECK_OK(vt_mutex_destroy(&s.m));
            vt_runtime_free(rt);
        }
    }
}

/* ---- Barrier: rounds with parties that time out and come back ------------------------------ */

enum { BAR_P = 6, BAR_ROUNDS_MAX = 4000 };

typedef struct bar_shared {
    vt_barrier b;
    long rounds;
    _Atomic int arrived[BAR_ROUNDS_MAX];
    _Atomic int leaders[BAR_ROUNDS_MAX];
    _Atomic long violations;
} bar_shared;

static void *bar_worker(void *p)
{
    worker_arg *w = p;
    bar_shared *s = w->shared;
    for (long r = 0; r < s->rounds; r++) {
        atomic_fetch_add(&s->arrived[r], 1);
        int leader = 0;
        vt_err e;
        /* A party that times out leaves the round and arrives again. */
        while ((e = vt_barrier_wait(&s->b, random_deadline(&w->rng), &leader)) == VT_ETIMEDOUT)
            w->timedout++;
        if (e != VT_OK) {
            w->errors++;
            return NULL;
        }
        if (leader)
            atomic_fetch_add(&s->leaders[r], 1);
        if (atomic_load(&s->arrived[r]) != BAR_P)
            atomic_fetch_add(&s->violations, 1);
    }
    return NULL;
}

VT_TEST(stress_barrier)
{
    for (int wi = 0; wi < NWORKER_COUNTS; wi++) {
        vt_runtime *rt = rt_new(worker_counts[wi]);
        VT_CHECK_NOT_NULL(rt);
        bar_shared *s = vt_calloc(1, sizeof(*s));
        VT_CHECK_NOT_NULL(s);
        s->rounds = scaled(1000);
        if (s->rounds > BAR_ROUNDS_MAX)
            s->rounds = BAR_ROUNDS_MAX;
        VT_CHECK_OK(vt_barrier_init(&s->b, BAR_P));
        worker_arg w[BAR_P];
        party p[BAR_P];
        memset(w, 0, sizeof w);
        for (int i = 0; i < BAR_P; i++) {
            w[i].shared = s;
            w[i].rng = vt_test_rand();
            VT_CHECK(party_start(&p[i], rt, i % 3 == 2, bar_worker, &w[i]));
        }
        long errors = 0, timedout = 0;
        for (int i = 0; i < BAR_P; i++) {
            party_join(&p[i]);
            errors += w[i].errors;
            timedout += w[i].timedout;
        }
        VT_CHECK_EQ(errors, 0);
        VT_CHECK_EQ(atomic_load(&s->violations), 0);
        for (long r = 0; r < s->rounds; r++)
            VT_CHECK_EQ(atomic_load(&s->leaders[r]), 1);
        VT_CHECK_GT(timedout, 0);
        VT_CHECK_OK(vt_barrier_destroy(&s->b));
        vt_free(s, sizeof(*s));
        vt_runtime_free(rt);
    }
}

/* ---- Wait groups on the waiter's stack --------------------------------------------------------
 * The waiter returns, and its frame (the group) is gone, as soon as the
 * count is zero, while the last done() may still be inside the group's
 * code: ASan sees any touch after that. */

typedef struct wg_child {
    vt_waitgroup *wg;
    long *slot;
} wg_child;

static void *wg_child_body(void *p)
{
    wg_child *c = p;
    *c->slot += 1;
    vt_waitgroup_done(c->wg);
    return NULL;
}

enum { WG_KIDS = 4 };

static void *wg_parent(void *p)
{
    worker_arg *w = p;
    vt_runtime *rt = w->shared;
    for (long i = 0; i < w->iters; i++) {
        vt_waitgroup wg = VT_WAITGROUP_INIT;
        long slots[WG_KIDS] = {0};
        wg_child kids[WG_KIDS];
        if (vt_waitgroup_add(&wg, WG_KIDS) != VT_OK) {
            w->errors++;
            return NULL;
        }
        for (int k = 0; k < WG_KIDS; k++) {
            kids[k] = (wg_child){.wg = &wg, .slot = &slots[k]};
            vt_fiber_opts o = {.runtime = rt, .detached = 1};
            if (vt_fiber_spawn_ex(NULL, wg_child_body, &kids[k], &o) != VT_OK) {
                w->errors++;
                vt_waitgroup_done(&wg);
            }
        }
        if (vt_waitgroup_wait(&wg, VT_FOREVER) != VT_OK)
            w->errors++;
        for (int k = 0; k < WG_KIDS; k++)
            w->ok += slots[k];
    }
    return NULL;
}

VT_TEST(stress_waitgroup_on_stack)
{
    enum { N = 8 };
    for (int wi = 0; wi < NWORKER_COUNTS; wi++) {
        vt_runtime *rt = rt_new(worker_counts[wi]);
        VT_CHECK_NOT_NULL(rt);
        long iters = scaled(300);
        worker_arg w[N];
        party p[N];
        memset(w, 0, sizeof w);
        for (int i = 0; i < N; i++) {
            w[i].shared = rt;
            w[i].iters = iters;
            /* One parent is a thread: fibers spawned from threads cost
             * TSan a fiber context each time a new stack slot is made. */
            VT_CHECK(party_start(&p[i], rt, i == N - 1, wg_parent, &w[i]));
        }
        long ok = 0, errors = 0;
        for (int i = 0; i < N; i++) {
            party_join(&p[i]);
            ok += w[i].ok;
            errors += w[i].errors;
        }
        VT_CHECK_EQ(errors, 0);
        VT_CHECK_EQ(ok, (long)N * iters * WG_KIDS);
        vt_runtime_free(rt);
    }
}

/* ---- Once ------------------------------------------------------------------------------------ */

enum { ONCE_N = 64 };

typedef struct once_shared {
    vt_once o[ONCE_N];
    _Atomic int runs[ONCE_N];
    int effect[ONCE_N]; /* plain: published by vt_once_run */
} once_shared;

typedef struct once_call {
    once_shared *s;
    int idx;
} once_call;

static void once_fn(void *arg)
{
    once_call *c = arg;
    atomic_fetch_add(&c->s->runs[c->idx], 1);
    relax();
    c->s->effect[c->idx] = c->idx + 1;
}

static void *once_worker(void *p)
{
    worker_arg *w = p;
    once_shared *s = w->shared;
    for (long i = 0; i < w->iters; i++) {
        once_call c = {.s = s, .idx = (int)vt__rand_below(&w->rng, ONCE_N)};
        if (vt_once_run(&s->o[c.idx], once_fn, &c) != VT_OK || s->effect[c.idx] != c.idx + 1)
            w->errors++;
    }
    return NULL;
}

VT_TEST(stress_once)
{
    enum { N = 16 };
    for (int wi = 0; wi < NWORKER_COUNTS; wi++) {
        long rounds = scaled(20);
        vt_runtime *rt = rt_new(worker_counts[wi]);
        VT_CHECK_NOT_NULL(rt);
        once_shared *s = vt_calloc(1, sizeof(*s));
        VT_CHECK_NOT_NULL(s);
        for (long r = 0; r < rounds; r++) {
            memset(s, 0, sizeof(*s));
            worker_arg w[N];
            party p[N];
            memset(w, 0, sizeof w);
            for (int i = 0; i < N; i++) {
                w[i].shared = s;
                w[i].iters = ONCE_N;
                w[i].rng = vt_test_rand();
                VT_CHECK(party_start(&p[i], rt, i % 4 == 3, once_worker, &w[i]));
            }
            long errors = 0;
            for (int i = 0; i < N; i++) {
                party_join(&p[i]);
                errors += w[i].errors;
            }
            VT_CHECK_EQ(errors, 0);
            for (int k = 0; k < ONCE_N; k++)
                VT_CHECK_LE(atomic_load(&s->runs[k]), 1);
        }
        vt_free(s, sizeof(*s));
        vt_runtime_free(rt);
    }
}

/* ---- Futures: chains across fibers and threads -------------------------------------------------- */

typedef struct chain_link {
    vt_future *in, *out;
    int64_t rel_deadline; /* awaits retry after a timeout */
    long timeouts;
    vt_err e;
} chain_link;

static void *chain_body(void *p)
{
    chain_link *c = p;
    void *v = NULL;
    vt_err e;
    while ((e = vt_future_await(c->in, &v, c->rel_deadline < 0 ? VT_FOREVER : now_any() + c->rel_deadline)) ==
           VT_ETIMEDOUT)
        c->timeouts++;
    if (e != VT_OK) {
        c->e = e;
        vt_future_fail(c->out, e);
        return NULL;
    }
    c->e = vt_future_set(c->out, (void *)((intptr_t)v + 1));
    return NULL;
}

VT_TEST(stress_future_chains)
{
    enum { LEN = 64 };
    for (int wi = 0; wi < NWORKER_COUNTS; wi++) {
        vt_runtime *rt = rt_new(worker_counts[wi]);
        VT_CHECK_NOT_NULL(rt);
        long rounds = scaled(40);
        for (long r = 0; r < rounds; r++) {
            vt_future *f[LEN + 1];
            chain_link c[LEN];
            party p[LEN];
            for (int i = 0; i <= LEN; i++)
                VT_CHECK_OK(vt_future_new(&f[i]));
            /* Started from the end, so most await before their input is set. */
            for (int i = LEN - 1; i >= 0; i--) {
                c[i] = (chain_link){.in = f[i], .out = f[i + 1], .rel_deadline = i % 3 == 0 ? VT_US(50) : -1};
                VT_CHECK(party_start(&p[i], rt, i % 16 == 7, chain_body, &c[i]));
            }
            VT_CHECK_OK(vt_future_set(f[0], (void *)(intptr_t)1000));
            void *v = NULL;
            VT_CHECK_OK(vt_future_await(f[LEN], &v, VT_FOREVER));
            VT_CHECK_EQ((intptr_t)v, 1000 + LEN);
            for (int i = 0; i < LEN; i++) {
                party_join(&p[i]);
                VT_CHECK_OK(c[i].e);
            }
            for (int i = 0; i <= LEN; i++)
                vt_future_free(f[i]);
        }
        vt_runtime_free(rt);
    }
}

/* ---- Cancellation storm: waiters of every kind cancelled at random while others are
 * served; afterwards every object is idle and destroyable. */

typedef struct storm_shared {
    vt_mutex m;
    vt_rwlock l;
    vt_sem s;
    vt_cond c;
    vt_waitgroup wg;
    vt_future *f;
    long counter;
} storm_shared;

static void *storm_worker(void *p)
{
    worker_arg *w = p;
    storm_shared *s = w->shared;
    atomic_store(&w->started, 1);
    for (long i = 0; more(w, i); i++) {
        vt_err e;
        switch (vt__rand_below(&w->rng, 6)) {
        case 0:
            if ((e = vt_mutex_lock(&s->m, VT_FOREVER)) == VT_OK) {
                s->counter++;
                relax();
                vt_mutex_unlock(&s->m);
            }
            break;
        case 1:
            if ((e = vt_rwlock_wrlock(&s->l, VT_FOREVER)) == VT_OK) {
                relax();
                vt_rwlock_unlock(&s->l);
            }
            break;
        case 2:
            if ((e = vt_rwlock_rdlock(&s->l, VT_FOREVER)) == VT_OK) {
                relax();
                vt_rwlock_unlock(&s->l);
            }
            break;
        case 3:
            if ((e = vt_sem_acquire(&s->s, 2, VT_FOREVER)) == VT_OK) {
                relax();
                vt_sem_release(&s->s, 2);
            }
            break;
        case 4:
            /* Signalled by the others' mutex users below, or timed out. */
            if ((e = vt_mutex_lock(&s->m, VT_FOREVER)) == VT_OK) {
                e = vt_cond_wait(&s->c, &s->m, now_any() + VT_US(200));
                if (vt_mutex_unlock(&s->m) != VT_OK)
                    w->errors++;
                if (e == VT_ETIMEDOUT)
                    e = VT_OK;
            }
            break;
        default:
            e = vt_future_await(s->f, NULL, now_any() + VT_US(100));
            if (e == VT_ETIMEDOUT)
                e = VT_OK;
            vt_cond_signal(&s->c);
            break;
        }
        note(w, e);
        if (e != VT_OK && e != VT_ECANCELED)
            w->errors++;
        if (e == VT_ECANCELED && !w->victim)
            w->errors++;
    }
    return NULL;
}

VT_TEST(stress_cancel_storm)
{
    for (int wi = 0; wi < NWORKER_COUNTS; wi++) {
        vt_runtime *rt = rt_new(worker_counts[wi]);
        VT_CHECK_NOT_NULL(rt);
        storm_shared s;
        memset(&s, 0, sizeof s);
        VT_CHECK_OK(vt_sem_init(&s.s, 3));
        VT_CHECK_OK(vt_future_new(&s.f));
        worker_arg sum;
        run_parties(rt, 8, 12, storm_worker, &s, scaled(2000), &sum);
        VT_CHECK_EQ(sum.errors, 0);
        VT_CHECK_EQ(sum.cancelled, 12);
        VT_CHECK_OK(vt_mutex_destroy(&s.m));
        VT_CHECK_OK(vt_rwlock_destroy(&s.l));
        VT_CHECK_OK(vt_cond_destroy(&s.c));
        VT_CHECK_EQ(vt_sem_value(&s.s), 3);
        VT_CHECK_OK(vt_sem_destroy(&s.s));
        VT_CHECK_OK(vt_waitgroup_destroy(&s.wg));
        VT_CHECK_OK(vt_future_set(s.f, NULL));
        vt_future_free(s.f);
        vt_runtime_free(rt);
    }
}
