/* stress_fiber.c — fibers under load, counted exactly: a tree of ~100k
 * fibers spawning their children recursively with random yields, sleeps,
 * detached subtrees and cancellations (from parents and from an outside
 * thread), on 2 and 8 workers; awaits with timeouts racing the end of the
 * fibers they wait for, from threads and fibers; scopes created, filled,
 * cancelled and closed from several threads at once.
 *
 * VT_TEST_STRESS=N multiplies the work. Sanitizer builds divide it: ASan
 * runs this code several times slower; gcc's TSan also spends about 9 ms
 * making its own state for each fiber stack, so there the trees are small
 * (every fiber of a tree may be alive at once: parents wait for children). */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vt_test.h"
#include "async_test.h"
#include "vitte/async.h"

/* ALIVE_DIV scales what may be alive at once (stacks made). */
#if defined(VT_SANITIZE_THREAD)
#define TREE_NODES 1500
#define SCALE_DIV 20
#define ALIVE_DIV 100
#define STACK (32 << 10)
#elif defined(VT_SANITIZE_ADDRESS)
#define TREE_NODES 50000
#define SCALE_DIV 4
#define ALIVE_DIV 4
#define STACK (32 << 10)
#else
#define TREE_NODES 100000
#define SCALE_DIV 1
#define ALIVE_DIV 1
#define STACK VT_STACK_MIN
#endif


static long scaled_by(long n, long div)
{
    long v = n * (long)vt_test_stress() / div;
    return v < 1 ? 1 : v;
}

static long scaled(long n)
{
    return scaled_by(n, SCALE_DIV);
}

/* ---- A tree of fibers -------------------------------------------------------------------
 * Node i's children are i*FAN+1 .. i*FAN+FAN below n. What a node does
 * follows from a hash of (seed, i): how often it yields, whether it
 * sleeps, whether each child is detached, whether it cancels a child right
 * after spawning it. The nodes under a cancelled child form the cancelled
 * region, known in advance: an outside thread cancels more nodes of the
 * region while the tree runs, and no node outside it may ever see a
 * cancellation. Every node returns the size of the part of its subtree it
 * awaited; a detached node adds its own to a counter instead; so the root's
 * result plus that counter is n. Parents await with cancellation masked,
 * as cleanup must. */
#define FAN 4

static struct {
    long n;
    uint64_t seed;
    _Atomic unsigned char *visits;
    _Atomic unsigned char *saw_cancel;
    unsigned char *detached, *target, *region;
    _Atomic uint64_t *handle; /* 0 until spawned; awaited ones go stale */
    _Atomic long detached_total, errors, sleeps, yields;
    _Atomic int stop;
    _Atomic long chaos_ok, chaos_stale, chaos_bad;
} T;

static uint64_t th(long i, uint64_t salt)
{
    return vt_hash_mix64(T.seed ^ ((uint64_t)i * 0x9e3779b97f4a7c15ull + salt));
}

static void note(vt_err e, long i)
{
    if (e == VT_ECANCELED)
        atomic_store(&T.saw_cancel[i], 1);
    else if (e != VT_OK)
        atomic_fetch_add(&T.errors, 1);
}

static void *node(void *arg)
{
    long i = (long)P2U(arg);
    atomic_fetch_add(&T.visits[i], 1);
    uint64_t h = th(i, 1);
    for (unsigned k = 0; k < h % 3; k++) {
        note(vt_fiber_yield(), i);
        atomic_fetch_add(&T.yields, 1);
    }
    if ((h >> 8) % 8 == 0) {
        note(vt_sleep_ns((int64_t)((h >> 16) % 20000)), i);
        atomic_fetch_add(&T.sleeps, 1);
    }
    vt_fiber kids[FAN];
    int nk = 0;
    for (int k = 0; k < FAN; k++) {
        long c = i * FAN + k + 1;
        if (c >= T.n)
            break;
        if (T.detached[c]) {
            vt_fiber_opts o;
            memset(&o, 0, sizeof o);
            o.detached = 1;
            if (vt_fiber_spawn_ex(NULL, node, U2P(c), &o) != VT_OK)
                atomic_fetch_add(&T.errors, 1);
        } else {
            if (vt_fiber_spawn(&kids[nk], node, U2P(c)) != VT_OK) {
                atomic_fetch_add(&T.errors, 1);
                continue;
            }
            atomic_store(&T.handle[c], kids[nk].id);
            if (T.target[c] && vt_fiber_cancel(kids[nk]) != VT_OK)
                atomic_fetch_add(&T.errors, 1);
            nk++;
        }
        if ((h >> (24 + k)) & 1)
            note(vt_fiber_yield(), i);
    }
    if (vt_cancelled())
        atomic_store(&T.saw_cancel[i], 1);
    int prev = vt_cancel_mask(1);
    uintptr_t sum = 1;
    for (int k = 0; k < nk; k++) {
        void *r = NULL;
        if (vt_fiber_await(kids[k], &r, VT_FOREVER) != VT_OK)
            atomic_fetch_add(&T.errors, 1);
        sum += P2U(r);
    }
    vt_cancel_mask(prev);
    if (T.detached[i])
        atomic_fetch_add(&T.detached_total, (long)sum);
    return U2P(sum);
}

/* Cancels random nodes of the region from outside while the tree runs. */
static void *chaos(void *arg)
{
    uint64_t h = P2U(arg);
    while (!atomic_load(&T.stop)) {
        h = vt_hash_mix64(h);
        long c = (long)(h % (uint64_t)T.n);
        uint64_t id = atomic_load(&T.handle[c]);
        if (!T.region[c] || !id)
            continue;
        vt_err e = vt_fiber_cancel((vt_fiber){id});
        if (e == VT_OK)
            atomic_fetch_add(&T.chaos_ok, 1);
        else if (e == VT_ENOENT)
            atomic_fetch_add(&T.chaos_stale, 1);
        else
            atomic_fetch_add(&T.chaos_bad, 1);
        if (h % 16 == 0)
            nap();
    }
    return NULL;
}

static void tree(unsigned workers)
{
    memset(&T, 0, sizeof T);
    T.n = TREE_NODES * (long)vt_test_stress(); /* already sized per build */
    T.seed = vt_test_rand();
    long n = T.n;
    T.visits = calloc((size_t)n, 1);
    T.saw_cancel = calloc((size_t)n, 1);
    T.detached = calloc((size_t)n, 1);
    T.target = calloc((size_t)n, 1);
    T.region = calloc((size_t)n, 1);
    T.handle = calloc((size_t)n, sizeof *T.handle);
    VT_CHECK(T.visits && T.saw_cancel && T.detached && T.target && T.region && T.handle);
    long region = 0;
    for (long c = 1; c < n; c++) {
        uint64_t h = th(c, 2);
        T.detached[c] = h % 7 == 0;
        T.target[c] = !T.detached[c] && (h >> 8) % 40 == 0;
        T.region[c] = T.target[c] || T.region[(c - 1) / FAN];
        region += T.region[c];
    }

    vt_runtime *rt = rt_new_with(workers, STACK);
    VT_CHECK_NOT_NULL(rt);
    vt_runtime_stats s0, s1;
    VT_CHECK_OK(vt_runtime_stats_get(rt, &s0));
    pthread_t th_chaos;
    VT_CHECK_EQ(pthread_create(&th_chaos, NULL, chaos, U2P(T.seed + 1)), 0);
    vt_fiber root;
    vt_fiber_opts o;
    memset(&o, 0, sizeof o);
    o.runtime = rt;
    o.name = "root";
    VT_CHECK_OK(vt_fiber_spawn_ex(&root, node, U2P(0), &o));
    void *r = NULL;
    VT_CHECK_OK(vt_fiber_await(root, &r, VT_FOREVER));

    /* Counted at once: nothing of the tree outlives its root. */
    long not_once = 0, outside = 0, seen = 0;
    for (long i = 0; i < n; i++) {
        not_once += atomic_load(&T.visits[i]) != 1;
        seen += atomic_load(&T.saw_cancel[i]);
        outside += atomic_load(&T.saw_cancel[i]) && !T.region[i];
    }
    long total = (long)P2U(r) + atomic_load(&T.detached_total);
    atomic_store(&T.stop, 1);
    pthread_join(th_chaos, NULL);
    printf("  %u workers, %ld fibers: %ld in the cancelled region, %ld saw a cancellation; "
           "%ld yields, %ld sleeps; outside cancels %ld (stale %ld)\n",
           workers, n, region, seen, atomic_load(&T.yields), atomic_load(&T.sleeps),
           atomic_load(&T.chaos_ok), atomic_load(&T.chaos_stale));
    VT_CHECK_EQ(atomic_load(&T.errors), 0);
    VT_CHECK_EQ(not_once, 0);
    VT_CHECK_EQ(total, n);
    VT_CHECK_EQ(outside, 0);
    VT_CHECK_EQ(atomic_load(&T.chaos_bad), 0);
    do {
        VT_CHECK_OK(vt_runtime_stats_get(rt, &s1));
        if (s1.live)
            nap();
    } while (s1.live);
    VT_CHECK_EQ(s1.spawned - s0.spawned, (uint64_t)n);
    VT_CHECK_EQ(s1.finished - s0.finished, (uint64_t)n);
    vt_runtime_free(rt);
    free((void *)T.visits);
    free((void *)T.saw_cancel);
    free(T.detached);
    free(T.target);
    free(T.region);
    free((void *)T.handle);
}

VT_TEST(tree_on_2_workers)
{
    tree(2);
}

VT_TEST(tree_on_8_workers)
{
    tree(8);
}

/* ---- Timeouts racing completion ----------------------------------------------------------
 * Short fibers are awaited with deadlines that pass around the moment they
 * end, from plain threads and from fibers: every await returns VT_OK once
 * (with the right value) or VT_ETIMEDOUT before that, then VT_ENOENT; some
 * targets are cancelled meanwhile, which changes nothing of that. */
static struct {
    vt_runtime *rt;
    long n;
    vt_fiber *h;
    _Atomic long next;    /* the next target to claim */
    _Atomic long spawned; /* targets spawned so far */
    _Atomic long ok, timeouts, bad;
} RC;

static void *short_life(void *arg)
{
    uint64_t h = vt_hash_mix64(P2U(arg) + 99);
    if (h % 3 == 0)
        vt_sleep_ns((int64_t)(h % 30000));
    else if (h % 3 == 1)
        vt_fiber_yield();
    return U2P(P2U(arg) * 7);
}

static void await_until_done(long i, int in_fiber)
{
    uint64_t h = vt_hash_mix64((uint64_t)i);
    while (atomic_load(&RC.spawned) <= i)
        if (in_fiber)
            vt_fiber_yield();
        else
            nap();
    for (;;) {
        void *r = NULL;
        int64_t wait_ns = (int64_t)(h % 20000);
        h = vt_hash_mix64(h);
        int64_t d = h % 4 == 0 ? VT_NOW
                    : in_fiber ? vt_fiber_deadline(wait_ns)
                               : vt_deadline_after(wait_ns);
        vt_err e = vt_fiber_await(RC.h[i], &r, d);
        if (e == VT_ETIMEDOUT) {
            atomic_fetch_add(&RC.timeouts, 1);
            continue;
        }
        if (e != VT_OK || P2U(r) != (uintptr_t)i * 7 ||
            vt_fiber_await(RC.h[i], NULL, VT_NOW) != VT_ENOENT)
            atomic_fetch_add(&RC.bad, 1);
        else
            atomic_fetch_add(&RC.ok, 1);
        return;
    }
}

static void *await_thread(void *arg)
{
    (void)arg;
    long i;
    while ((i = atomic_fetch_add(&RC.next, 1)) < RC.n)
        await_until_done(i, 0);
    return NULL;
}

static void *await_fiber(void *arg)
{
    (void)arg;
    long i;
    while ((i = atomic_fetch_add(&RC.next, 1)) < RC.n)
        await_until_done(i, 1);
    return NULL;
}

static void *cancel_some(void *arg)
{
    (void)arg;
    for (long i = 0; i < RC.n; i += 3) {
        while (atomic_load(&RC.spawned) <= i)
            nap();
        vt_err e = vt_fiber_cancel(RC.h[i]);
        if (e != VT_OK && e != VT_ENOENT)
            atomic_fetch_add(&RC.bad, 1);
    }
    return NULL;
}

VT_TEST(await_timeouts_race_completion)
{
    static const unsigned workers[] = {2, 8};
    for (int w = 0; w < 2; w++) {
        memset(&RC, 0, sizeof RC);
        RC.n = scaled_by(50000, ALIVE_DIV);
        RC.rt = rt_new_with(workers[w], STACK);
        VT_CHECK_NOT_NULL(RC.rt);
        RC.h = calloc((size_t)RC.n, sizeof *RC.h);
        VT_CHECK_NOT_NULL(RC.h);
        vt_fiber_opts o;
        memset(&o, 0, sizeof o);
        o.runtime = RC.rt;
        enum {
            THREADS = 3,
            FIBERS = 4
        };
        pthread_t th[THREADS + 1];
        vt_fiber af[FIBERS];
        /* The awaiters start first and follow the spawner closely, so
         * that most targets are still running when awaited. */
        for (int t = 0; t < THREADS; t++)
            VT_CHECK_EQ(pthread_create(&th[t], NULL, await_thread, NULL), 0);
        VT_CHECK_EQ(pthread_create(&th[THREADS], NULL, cancel_some, NULL), 0);
        for (int f = 0; f < FIBERS; f++)
            VT_CHECK_OK(vt_fiber_spawn_ex(&af[f], await_fiber, NULL, &o));
        long failed = 0;
        for (long i = 0; i < RC.n; i++) {
            if (vt_fiber_spawn_ex(&RC.h[i], short_life, U2P(i), &o) != VT_OK)
                failed++; /* a zero handle: its awaiter reports it */
            atomic_store(&RC.spawned, i + 1);
        }
        VT_CHECK_EQ(failed, 0);
        for (int t = 0; t <= THREADS; t++)
            pthread_join(th[t], NULL);
        for (int f = 0; f < FIBERS; f++)
            VT_CHECK_OK(vt_fiber_await(af[f], NULL, VT_FOREVER));
        printf("  %u workers: %ld awaited, %ld timeouts on the way\n", workers[w],
               atomic_load(&RC.ok), atomic_load(&RC.timeouts));
        VT_CHECK_EQ(atomic_load(&RC.bad), 0);
        VT_CHECK_EQ(atomic_load(&RC.ok), RC.n);
        vt_runtime_free(RC.rt);
        free(RC.h);
    }
}

/* ---- Two awaiters, one handle ---------------------------------------------------------------
 * Two threads await the same fiber at the same moment, over and over,
 * while a third spawns and awaits fibers of its own so that slots are
 * reused at once: for each fiber exactly one await returns VT_OK with its
 * value, the other VT_EBUSY or VT_ENOENT; nobody ever receives the result
 * of the third party's fibers, which always get their own. Half the
 * targets have finished before the awaits start, half are running. */
#define SENTINEL ((uintptr_t)0xbadbad)

static struct {
    vt_runtime *rt;
    long n;
    _Atomic uint64_t handle; /* the current target */
    _Atomic long round;      /* published rounds */
    _Atomic long arrived[2]; /* per awaiter: the last round it arrived at */
    _Atomic long ok[2], busy, stale, bad, wrong_value;
    _Atomic int done_flag;
    _Atomic int stop;
    _Atomic long recycled, recycle_bad;
    long *ok_per_round;
} AA;

static void *aa_target(void *arg)
{
    atomic_store(&AA.done_flag, 1);
    return arg;
}

static void *aa_awaiter(void *arg)
{
    int me = (int)P2U(arg);
    for (long r = 1; r <= AA.n; r++) {
        while (atomic_load(&AA.round) < r)
            ;
        /* Meet the other awaiter, then go together. */
        atomic_store(&AA.arrived[me], r);
        while (atomic_load(&AA.arrived[1 - me]) < r)
            ;
        void *res = NULL;
        vt_err e = vt_fiber_await((vt_fiber){atomic_load(&AA.handle)}, &res, VT_FOREVER);
        if (e == VT_OK) {
            atomic_fetch_add(&AA.ok[me], 1);
            /* Said at once: a runtime that gave one fiber to two awaiters
             * is corrupt, and the test may hang after this. */
            if (__atomic_fetch_add(&AA.ok_per_round[r - 1], 1, __ATOMIC_RELAXED) != 0)
                printf("  round %ld: both awaits of one fiber returned VT_OK\n", r);
            if (P2U(res) != (uintptr_t)r)
                atomic_fetch_add(&AA.wrong_value, 1);
        } else if (e == VT_EBUSY)
            atomic_fetch_add(&AA.busy, 1);
        else if (e == VT_ENOENT)
            atomic_fetch_add(&AA.stale, 1);
        else
            atomic_fetch_add(&AA.bad, 1);
    }
    return NULL;
}

static void *recycler(void *arg)
{
    (void)arg;
    vt_fiber_opts o;
    memset(&o, 0, sizeof o);
    o.runtime = AA.rt;
    while (!atomic_load(&AA.stop)) {
        vt_fiber f;
        void *r = NULL;
        if (vt_fiber_spawn_ex(&f, aa_target, U2P(SENTINEL), &o) != VT_OK ||
            vt_fiber_await(f, &r, VT_FOREVER) != VT_OK || P2U(r) != SENTINEL)
            atomic_fetch_add(&AA.recycle_bad, 1);
        atomic_fetch_add(&AA.recycled, 1);
    }
    return NULL;
}

VT_TEST(two_awaiters_one_handle)
{
    memset(&AA, 0, sizeof AA);
    AA.n = scaled(1000); /* each round waits for five spinning threads on two cores */
    AA.ok_per_round = calloc((size_t)AA.n, sizeof(long));
    VT_CHECK_NOT_NULL(AA.ok_per_round);
    AA.rt = rt_new_with(2, STACK);
    VT_CHECK_NOT_NULL(AA.rt);
    pthread_t th[3];
    for (int t = 0; t < 2; t++)
        VT_CHECK_EQ(pthread_create(&th[t], NULL, aa_awaiter, U2P(t)), 0);
    VT_CHECK_EQ(pthread_create(&th[2], NULL, recycler, NULL), 0);
    vt_fiber_opts o;
    memset(&o, 0, sizeof o);
    o.runtime = AA.rt;
    long spawn_failed = 0;
    for (long r = 1; r <= AA.n; r++) {
        vt_fiber f = {0};
        atomic_store(&AA.done_flag, 0);
        if (vt_fiber_spawn_ex(&f, aa_target, U2P(r), &o) != VT_OK)
            spawn_failed++;
        if (r % 2)
            while (!atomic_load(&AA.done_flag))
                ;
        atomic_store(&AA.handle, f.id);
        atomic_store(&AA.round, r);
        /* The next round waits until both have come back. */
        while (atomic_load(&AA.ok[0]) + atomic_load(&AA.ok[1]) + atomic_load(&AA.busy) +
                   atomic_load(&AA.stale) + atomic_load(&AA.bad) <
               2 * r)
            ;
    }
    atomic_store(&AA.stop, 1);
    for (int t = 0; t < 3; t++)
        pthread_join(th[t], NULL);
    long not_one = 0;
    for (long r = 0; r < AA.n; r++)
        not_one += AA.ok_per_round[r] != 1;
    printf("  %ld rounds: %ld + %ld won, %ld busy, %ld stale; %ld fibers recycled meanwhile\n",
           AA.n, atomic_load(&AA.ok[0]), atomic_load(&AA.ok[1]), atomic_load(&AA.busy),
           atomic_load(&AA.stale), atomic_load(&AA.recycled));
    VT_CHECK_EQ(spawn_failed, 0);
    VT_CHECK_EQ(not_one, 0);
    VT_CHECK_EQ(atomic_load(&AA.wrong_value), 0);
    VT_CHECK_EQ(atomic_load(&AA.bad), 0);
    VT_CHECK_EQ(atomic_load(&AA.recycle_bad), 0);
    vt_runtime_free(AA.rt);
    free(AA.ok_per_round);
}

/* ---- Scopes from several threads ---------------------------------------------------------
 * Each thread makes scopes, fills them with fibers (some spawning more
 * into the same scope), cancels about half of them at a random moment and
 * closes them all: every fiber runs exactly once, and a closed scope has
 * nothing left alive. */
static struct {
    vt_runtime *rt;
    long per_thread;
    _Atomic unsigned char *ran;
    _Atomic long errors, cancelled_seen;
} SS;

typedef struct scoped_arg {
    vt_scope *s;
    long id;
} scoped_arg;

static void *scoped_worker(void *arg)
{
    long id = (long)P2U(arg);
    atomic_fetch_add(&SS.ran[id], 1);
    uint64_t h = vt_hash_mix64((uint64_t)id + 5);
    vt_err e = h % 2 ? vt_sleep_ns((int64_t)(h % 50000)) : vt_fiber_yield();
    if (e == VT_ECANCELED)
        atomic_fetch_add(&SS.cancelled_seen, 1);
    else if (e != VT_OK)
        atomic_fetch_add(&SS.errors, 1);
    return NULL;
}

static void *scope_thread(void *arg)
{
    long t = (long)P2U(arg);
    long base = t * SS.per_thread;
    uint64_t h = vt_hash_mix64((uint64_t)t + 77);
    for (long done = 0; done < SS.per_thread;) {
        vt_scope *s = NULL;
        if (vt_scope_new(&s, SS.rt) != VT_OK) {
            atomic_fetch_add(&SS.errors, 1);
            return NULL;
        }
        long batch = 1 + (long)((h = vt_hash_mix64(h)) % 200);
        if (batch > SS.per_thread - done)
            batch = SS.per_thread - done;
        long cancel_at = (h >> 20) % 2 ? (long)((h >> 32) % (uint64_t)batch) : -1;
        vt_fiber_opts o;
        memset(&o, 0, sizeof o);
        o.runtime = SS.rt;
        o.scope = s;
        o.detached = 1;
        for (long k = 0; k < batch; k++) {
            if (k == cancel_at && vt_scope_cancel(s) != VT_OK)
                atomic_fetch_add(&SS.errors, 1);
            if (vt_fiber_spawn_ex(NULL, scoped_worker, U2P(base + done + k), &o) != VT_OK)
                atomic_fetch_add(&SS.errors, 1);
        }
        done += batch;
        vt_scope_close(s);
    }
    return NULL;
}

VT_TEST(scopes_from_several_threads)
{
    enum {
        THREADS = 4
    };
    memset(&SS, 0, sizeof SS);
    SS.per_thread = scaled_by(20000, ALIVE_DIV);
    long n = SS.per_thread * THREADS;
    SS.ran = calloc((size_t)n, 1);
    VT_CHECK_NOT_NULL(SS.ran);
    SS.rt = rt_new_with(2, STACK);
    VT_CHECK_NOT_NULL(SS.rt);
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++)
        VT_CHECK_EQ(pthread_create(&th[t], NULL, scope_thread, U2P(t)), 0);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    /* Every scope was closed: all its fibers ended. */
    long not_once = 0;
    for (long i = 0; i < n; i++)
        not_once += atomic_load(&SS.ran[i]) != 1;
    vt_runtime_stats st;
    VT_CHECK_OK(vt_runtime_stats_get(SS.rt, &st));
    printf("  %ld fibers in scopes, %ld saw their scope cancelled\n", n,
           atomic_load(&SS.cancelled_seen));
    VT_CHECK_EQ(not_once, 0);
    VT_CHECK_EQ(atomic_load(&SS.errors), 0);
    VT_CHECK_EQ(st.spawned, (uint64_t)n);
    VT_CHECK_EQ(st.live, 0);
    vt_runtime_free(SS.rt);
    free((void *)SS.ran);
}

/* ---- One slot, many lives ----------------------------------------------------------------
 * A fiber slot is reused by the next spawn, over and over: from a thread
 * (the slot goes back to the shared free list) and from a fiber (the
 * child runs inline and its slot stays in the worker's cache). Each life
 * returns its own value. Under TSan this once died after some 20,000
 * lives of one slot: every life left entries on TSan's shadow call stack. */
static void *identity(void *arg)
{
    return arg;
}

static void *spawn_await_loop(void *arg)
{
    long n = (long)P2U(arg), wrong = 0;
    for (long i = 0; i < n; i++) {
        vt_fiber f;
        void *r = NULL;
        if (vt_fiber_spawn(&f, identity, U2P((uintptr_t)i + 1)) != VT_OK ||
            vt_fiber_await(f, &r, VT_FOREVER) != VT_OK || P2U(r) != (uintptr_t)i + 1)
            wrong++;
    }
    return U2P((uintptr_t)wrong);
}

VT_TEST(one_slot_many_lives)
{
    long n = scaled_by(50000, 1); /* not fewer under sanitizers: it is for them */
    vt_runtime *rt = rt_new_with(1, STACK);
    VT_CHECK_NOT_NULL(rt);
    vt_fiber_opts o;
    memset(&o, 0, sizeof o);
    o.runtime = rt;
    long wrong = 0;
    for (long i = 0; i < n; i++) {
        vt_fiber f;
        void *r = NULL;
        if (vt_fiber_spawn_ex(&f, identity, U2P((uintptr_t)i + 1), &o) != VT_OK ||
            vt_fiber_await(f, &r, VT_FOREVER) != VT_OK || P2U(r) != (uintptr_t)i + 1)
            wrong++;
    }
    VT_CHECK_EQ(wrong, 0);
    vt_fiber parent;
    void *r = NULL;
    VT_CHECK_EQ(vt_fiber_spawn_ex(&parent, spawn_await_loop, U2P((uintptr_t)n), &o), VT_OK);
    VT_CHECK_EQ(vt_fiber_await(parent, &r, VT_FOREVER), VT_OK);
    VT_CHECK_EQ(P2U(r), 0);
    vt_runtime_free(rt);
}
