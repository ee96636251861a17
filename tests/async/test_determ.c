/* test_determ.c — fibers in deterministic mode (opts.pool.deterministic):
 * a program of fibers, sleeps, yields, spawns and timeouts replays its
 * event log exactly for the same seed and takes another order for some
 * other seed; virtual sleeps and timeouts end at their deadline exactly,
 * without real waiting; vt_runtime_drive runs everything on the calling
 * thread and reports a deadlock as VT_EBUSY; vt_runtime_main likewise.
 *
 * Everything runs on the test thread, so the log needs no locking. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vt_test.h"
#include "async_test.h"
#include "vitte/async.h"


static vt_runtime_opts det_opts(uint64_t seed)
{
    vt_runtime_opts o;
    vt_runtime_opts_init(&o);
    o.pool.deterministic = 1;
    o.pool.seed = seed;
    return o;
}

static vt_runtime *det_runtime(uint64_t seed)
{
    vt_runtime_opts o = det_opts(seed);
    vt_runtime *rt = NULL;
    return vt_runtime_new(&rt, &o) == VT_OK ? rt : NULL;
}

static vt_err spawn_on(vt_runtime *rt, vt_fiber *out, vt_fiber_fn fn, void *arg)
{
    vt_fiber_opts o;
    memset(&o, 0, sizeof o);
    o.runtime = rt;
    return vt_fiber_spawn_ex(out, fn, arg, &o);
}

/* ---- The event log ------------------------------------------------------------------ */

typedef struct ev {
    uint32_t who;  /* the actor, named by the program, not by the runtime */
    uint32_t what; /* the step */
    int64_t now;   /* virtual time */
    int32_t err;
    int32_t pad;
} ev;

#define LOG_CAP 100000
static struct {
    ev *ev;
    size_t n;
    long errors;
    pthread_t thread;
    long foreign; /* events recorded on another thread than the driver */
} L;

static void log_begin(void)
{
    free(L.ev);
    memset(&L, 0, sizeof L);
    L.ev = calloc(LOG_CAP, sizeof(ev));
    L.thread = pthread_self();
}

static void rec(uint32_t who, uint32_t what, vt_err e)
{
    if (!pthread_equal(pthread_self(), L.thread))
        L.foreign++;
    if (L.n < LOG_CAP)
        L.ev[L.n] = (ev){who, what, vt_fiber_now(), (int32_t)e, 0};
    L.n++;
}

static uint64_t h2(uint64_t a, uint64_t b)
{
    return vt_hash_mix64(a * 0x9e3779b97f4a7c15ull + b + 1);
}

/* ---- The program --------------------------------------------------------------------
 * The root starts W actors; actor w takes J steps, each chosen by a hash of
 * (w, step) alone, so every run does the same things and only their order
 * and timing may differ. Children are named w*1000 + step*10 + k. */
enum {
    W = 12,
    J = 30
};

static void *child(void *arg)
{
    uint32_t id = (uint32_t)P2U(arg);
    uint64_t h = h2(id, 7);
    rec(id, 1, VT_OK);
    for (unsigned k = 0; k < h % 3; k++)
        rec(id, 2, vt_fiber_yield());
    rec(id, 3, vt_sleep_ns((int64_t)(h >> 8) % VT_MS(3)));
    return U2P(id ^ 0x5a5a);
}

static void *actor(void *arg)
{
    uint32_t w = (uint32_t)P2U(arg);
    for (uint32_t j = 0; j < J; j++) {
        uint64_t h = h2(w, j);
        uint32_t tag = j * 16;
        switch (h % 6) {
        case 0:
            rec(w, tag, vt_fiber_yield());
            break;
        case 1:
            rec(w, tag, vt_sleep_ns((int64_t)((h >> 8) % (uint64_t)VT_MS(5))));
            break;
        case 2:
            rec(w, tag, vt_sleep_until(vt_fiber_now() + (int64_t)((h >> 8) % (uint64_t)VT_MS(2))));
            break;
        case 3:
        case 4: {
            /* A child, awaited with a timeout that may or may not pass
             * first, then for good. */
            vt_fiber c;
            uint32_t cid = w * 1000 + j * 10;
            if (vt_fiber_spawn(&c, child, U2P(cid)) != VT_OK) {
                L.errors++;
                break;
            }
            void *r = NULL;
            vt_err e =
                vt_fiber_await(c, &r, vt_fiber_deadline((int64_t)((h >> 8) % (uint64_t)VT_MS(3))));
            rec(w, tag + 1, e);
            if (e == VT_ETIMEDOUT) {
                e = vt_fiber_await(c, &r, VT_FOREVER);
                rec(w, tag + 2, e);
            }
            if (e != VT_OK || P2U(r) != (cid ^ 0x5a5a))
                L.errors++;
            break;
        }
        default: {
            /* Two children at once, awaited in turn. */
            vt_fiber c[2];
            for (uint32_t k = 0; k < 2; k++)
                if (vt_fiber_spawn(&c[k], child, U2P(w * 1000 + j * 10 + 1 + k)) != VT_OK)
                    L.errors++;
            for (uint32_t k = 0; k < 2; k++)
                rec(w, tag + 3 + k, vt_fiber_await(c[k], NULL, VT_FOREVER));
            break;
        }
        }
    }
    return U2P(w);
}

static void *program(void *arg)
{
    (void)arg;
    vt_fiber a[W];
    for (uint32_t w = 0; w < W; w++)
        if (vt_fiber_spawn(&a[w], actor, U2P(w)) != VT_OK)
            L.errors++;
    for (uint32_t w = 0; w < W; w++) {
        vt_err e;
        /* Impatient first: the timeouts of the root are events too. */
        while ((e = vt_fiber_await(a[w], NULL, vt_fiber_deadline(VT_MS(4)))) == VT_ETIMEDOUT)
            rec(9999, w, e);
        rec(9999, w, e);
    }
    return U2P(0xfeed);
}

/* Runs the program with this seed; the log stays in L. */
static int run_program(uint64_t seed)
{
    log_begin();
    vt_runtime_opts o = det_opts(seed);
    void *r = NULL;
    vt_err e = vt_runtime_main(&o, program, NULL, &r);
    return e == VT_OK && P2U(r) == 0xfeed && L.errors == 0 && L.foreign == 0 && L.n <= LOG_CAP;
}

static size_t first_difference(const ev *a, size_t na, const ev *b, size_t nb)
{
    size_t i = 0;
    while (i < na && i < nb && memcmp(&a[i], &b[i], sizeof(ev)) == 0)
        i++;
    return i;
}

/* gcc's TSan spends milliseconds on each new fiber stack: fewer runs there. */
#if defined(VT_SANITIZE_THREAD)
enum {
    SEEDS = 2,
    REPLAYS = 1,
    OTHERS = 2
};
#else
enum {
    SEEDS = 4,
    REPLAYS = 3,
    OTHERS = 4
};
#endif

VT_TEST(same_seed_same_log)
{
    uint64_t seeds[] = {vt_test_rand(), 0, 1, 0xdeadbeefULL};
    for (size_t s = 0; s < SEEDS; s++) {
        VT_CHECK(run_program(seeds[s]));
        size_t n0 = L.n;
        ev *first = malloc(n0 * sizeof(ev));
        memcpy(first, L.ev, n0 * sizeof(ev));
        /* The program does enough to be worth replaying: timeouts that
         * passed, waits that ended at a virtual time. */
        size_t timeouts = 0, later = 0;
        for (size_t i = 0; i < n0; i++) {
            timeouts += first[i].err == VT_ETIMEDOUT;
            later += first[i].now > 0;
        }
        if (s == 0)
            printf("  %zu events, %zu timeouts\n", n0, timeouts);
        VT_CHECK_GT(n0, 500);
        VT_CHECK_GT(timeouts, 10);
        VT_CHECK_GT(later, n0 / 2);
        for (int run = 0; run < REPLAYS; run++) {
            int ok = run_program(seeds[s]);
            int same = ok && L.n == n0 && memcmp(first, L.ev, n0 * sizeof(ev)) == 0;
            if (!same)
                printf("  seed %llu, run %d: %zu events vs %zu, first difference at %zu\n",
                       (unsigned long long)seeds[s], run + 2, n0, L.n,
                       first_difference(first, n0, L.ev, L.n));
            if (!same)
                free(first);
            VT_CHECK(same);
        }
        free(first);
    }
}

VT_TEST(other_seeds_other_logs)
{
    VT_CHECK(run_program(42));
    size_t n0 = L.n;
    ev *first = malloc(n0 * sizeof(ev));
    memcpy(first, L.ev, n0 * sizeof(ev));
    uint64_t others[] = {43, 0, 7, vt_test_rand() | 1};
    int differ = 0;
    for (size_t k = 0; k < OTHERS; k++) {
        VT_CHECK(run_program(others[k]));
        differ += L.n != n0 || memcmp(first, L.ev, n0 * sizeof(ev)) != 0;
    }
    printf("  %d of %d other seeds gave another log\n", differ, (int)OTHERS);
    if (!differ)
        printf("  seed 42 and all the others gave the same log of %zu events\n", n0);
    VT_CHECK_GT(differ, 0);
    free(first);
}

/* ---- Virtual time ---------------------------------------------------------------------- */

static struct {
    int64_t t0, t1, t2, t3;
    vt_err e1, e2;
    int64_t real0, real1;
} VS;

static void *long_sleeps(void *arg)
{
    (void)arg;
    VS.real0 = vt_now_ns();
    VS.t0 = vt_fiber_now();
    VS.e1 = vt_sleep_ns(VT_SEC(10));
    VS.t1 = vt_fiber_now();
    VS.e2 = vt_sleep_until(VS.t1 + VT_SEC(30LL * 86400)); /* a month */
    VS.t2 = vt_fiber_now();
    vt_sleep_ms(1500);
    VS.t3 = vt_fiber_now();
    VS.real1 = vt_now_ns();
    return NULL;
}

VT_TEST(virtual_sleeps_take_no_real_time)
{
    memset(&VS, 0, sizeof VS);
    vt_runtime_opts o = det_opts(5);
    VT_CHECK_OK(vt_runtime_main(&o, long_sleeps, NULL, NULL));
    VT_CHECK_OK(VS.e1);
    VT_CHECK_OK(VS.e2);
    VT_CHECK_EQ(VS.t1 - VS.t0, VT_SEC(10));
    VT_CHECK_EQ(VS.t2 - VS.t1, VT_SEC(30LL * 86400));
    VT_CHECK_EQ(VS.t3 - VS.t2, VT_MS(1500));
    /* A month did not pass on the real clock while the test ran. */
    VT_CHECK_LT(VS.real1 - VS.real0, VS.t2 - VS.t0);
}

/* Sleepers wake in deadline order, each at its deadline exactly. */
enum {
    SO_N = 60
};
static struct {
    int64_t deadline[SO_N];
    int order[SO_N];
    int64_t woke[SO_N];
    int n, bad;
} SO;

static void *sleep_in_line(void *arg)
{
    int i = (int)P2U(arg);
    if (vt_sleep_until(SO.deadline[i]) != VT_OK)
        SO.bad++;
    SO.woke[i] = vt_fiber_now();
    SO.order[SO.n++] = i;
    return NULL;
}

VT_TEST(sleepers_wake_at_their_deadlines_in_order)
{
    memset(&SO, 0, sizeof SO);
    vt_runtime *rt = det_runtime(vt_test_rand());
    VT_CHECK_NOT_NULL(rt);
    for (int i = 0; i < SO_N; i++) {
        int dup;
        do {
            SO.deadline[i] = 1 + (int64_t)(vt_test_rand() % (uint64_t)VT_SEC(100));
            dup = 0;
            for (int k = 0; k < i; k++)
                dup |= SO.deadline[k] == SO.deadline[i];
        } while (dup);
    }
    vt_fiber f[SO_N];
    for (int i = 0; i < SO_N; i++)
        VT_CHECK_OK(spawn_on(rt, &f[i], sleep_in_line, U2P(i)));
    VT_CHECK_EQ(SO.n, 0); /* nothing runs until someone drives */
    VT_CHECK_OK(vt_runtime_drive(rt));
    VT_CHECK_EQ(SO.n, SO_N);
    VT_CHECK_EQ(SO.bad, 0);
    for (int k = 0; k < SO_N; k++) {
        int i = SO.order[k];
        VT_CHECK_EQ(SO.woke[i], SO.deadline[i]);
        if (k)
            VT_CHECK_LT(SO.deadline[SO.order[k - 1]], SO.deadline[i]);
    }
    for (int i = 0; i < SO_N; i++)
        VT_CHECK_OK(vt_fiber_await(f[i], NULL, VT_NOW));
    vt_runtime_free(rt);
}

/* An await that times out does so at its deadline exactly; the fiber
 * awaited is still there, and ends at its own time. */
static struct {
    int64_t t0, t_timeout, t_done;
    vt_err e_timeout, e_done;
    uintptr_t result;
} TO;

static void *sleeps_5s(void *arg)
{
    vt_sleep_ns(VT_SEC(5));
    return arg;
}

static void *awaits_1s(void *arg)
{
    (void)arg;
    vt_fiber c;
    if (vt_fiber_spawn(&c, sleeps_5s, U2P(77)) != VT_OK)
        return NULL;
    TO.t0 = vt_fiber_now();
    TO.e_timeout = vt_fiber_await(c, NULL, TO.t0 + VT_SEC(1));
    TO.t_timeout = vt_fiber_now();
    void *r = NULL;
    TO.e_done = vt_fiber_await(c, &r, VT_FOREVER);
    TO.t_done = vt_fiber_now();
    TO.result = P2U(r);
    return NULL;
}

VT_TEST(timeouts_at_the_virtual_deadline)
{
    for (uint64_t seed = 0; seed < 4; seed++) {
        memset(&TO, 0, sizeof TO);
        vt_runtime_opts o = det_opts(seed);
        VT_CHECK_OK(vt_runtime_main(&o, awaits_1s, NULL, NULL));
        VT_CHECK_ERR(TO.e_timeout, VT_ETIMEDOUT);
        VT_CHECK_EQ(TO.t_timeout - TO.t0, VT_SEC(1));
        VT_CHECK_OK(TO.e_done);
        VT_CHECK_EQ(TO.t_done - TO.t0, VT_SEC(5));
        VT_CHECK_EQ(TO.result, 77);
    }
}

/* ---- Driving ------------------------------------------------------------------------------ */

static struct {
    vt_future *fa, *fb;
    vt_err ea, eb;
    void *va, *vb;
    int ran;
    pthread_t thread;
    int on_driver;
} DL;

static void *await_fa(void *arg)
{
    (void)arg;
    DL.ran++;
    DL.on_driver += pthread_equal(pthread_self(), DL.thread) != 0;
    DL.ea = vt_future_await(DL.fa, &DL.va, VT_FOREVER);
    return U2P(1);
}

static void *await_fb(void *arg)
{
    (void)arg;
    DL.ran++;
    DL.on_driver += pthread_equal(pthread_self(), DL.thread) != 0;
    DL.eb = vt_future_await(DL.fb, &DL.vb, VT_FOREVER);
    return U2P(2);
}

VT_TEST(drive_reports_a_deadlock)
{
    memset(&DL, 0, sizeof DL);
    DL.thread = pthread_self();
    DL.ea = DL.eb = (vt_err)-1;
    vt_runtime *rt = det_runtime(3);
    VT_CHECK_NOT_NULL(rt);
    VT_CHECK_OK(vt_runtime_drive(rt)); /* nothing to do */
    VT_CHECK_OK(vt_future_new(&DL.fa));
    VT_CHECK_OK(vt_future_new(&DL.fb));
    vt_fiber a, b;
    VT_CHECK_OK(spawn_on(rt, &a, await_fa, NULL));
    VT_CHECK_OK(spawn_on(rt, &b, await_fb, NULL));
    VT_CHECK_EQ(DL.ran, 0);
    /* Both wait on futures nobody sets. */
    VT_CHECK_ERR(vt_runtime_drive(rt), VT_EBUSY);
    VT_CHECK_EQ(DL.ran, 2);
    VT_CHECK_EQ(DL.on_driver, 2);
    vt_runtime_stats st;
    VT_CHECK_OK(vt_runtime_stats_get(rt, &st));
    VT_CHECK_EQ(st.live, 2);
    VT_CHECK_ERR(vt_runtime_drive(rt), VT_EBUSY); /* and again */
    VT_CHECK_ERR(vt_fiber_await(a, NULL, VT_NOW), VT_ETIMEDOUT);
    /* Setting one future unblocks one fiber; the other stays stuck. */
    VT_CHECK_OK(vt_future_set(DL.fa, U2P(11)));
    VT_CHECK_ERR(vt_runtime_drive(rt), VT_EBUSY);
    VT_CHECK_OK(DL.ea);
    VT_CHECK_EQ(P2U(DL.va), 11);
    void *r = NULL;
    VT_CHECK_OK(vt_fiber_await(a, &r, VT_NOW));
    VT_CHECK_EQ(P2U(r), 1);
    VT_CHECK_OK(vt_future_set(DL.fb, U2P(22)));
    VT_CHECK_OK(vt_runtime_drive(rt));
    VT_CHECK_OK(DL.eb);
    VT_CHECK_EQ(P2U(DL.vb), 22);
    VT_CHECK_OK(vt_fiber_await(b, &r, VT_NOW));
    VT_CHECK_EQ(P2U(r), 2);
    vt_runtime_free(rt);
    vt_future_free(DL.fa);
    vt_future_free(DL.fb);

    /* Left deadlocked, the runtime's end cancels them. */
    memset(&DL, 0, sizeof DL);
    DL.thread = pthread_self();
    rt = det_runtime(4);
    VT_CHECK_NOT_NULL(rt);
    VT_CHECK_OK(vt_future_new(&DL.fa));
    VT_CHECK_OK(vt_future_new(&DL.fb));
    VT_CHECK_OK(spawn_on(rt, &a, await_fa, NULL));
    VT_CHECK_OK(spawn_on(rt, &b, await_fb, NULL));
    VT_CHECK_ERR(vt_runtime_drive(rt), VT_EBUSY);
    vt_runtime_free(rt);
    VT_CHECK_ERR(DL.ea, VT_ECANCELED);
    VT_CHECK_ERR(DL.eb, VT_ECANCELED);
    vt_future_free(DL.fa);
    vt_future_free(DL.fb);
}

/* Two fibers awaiting each other: a deadlock without any future. */
static vt_fiber mutual[2];
static vt_err mutual_err[2];

static void *await_other(void *arg)
{
    int i = (int)P2U(arg);
    mutual_err[i] = vt_fiber_await(mutual[1 - i], NULL, VT_FOREVER);
    return U2P(i + 1);
}

VT_TEST(drive_reports_fibers_awaiting_each_other)
{
    vt_runtime *rt = det_runtime(9);
    VT_CHECK_NOT_NULL(rt);
    mutual_err[0] = mutual_err[1] = (vt_err)-1;
    VT_CHECK_OK(spawn_on(rt, &mutual[0], await_other, U2P(0)));
    VT_CHECK_OK(spawn_on(rt, &mutual[1], await_other, U2P(1)));
    VT_CHECK_ERR(vt_runtime_drive(rt), VT_EBUSY);
    /* Cancelling one breaks the cycle: its await fails, it ends, and the
     * other's await of it succeeds. */
    VT_CHECK_OK(vt_fiber_cancel(mutual[0]));
    VT_CHECK_OK(vt_runtime_drive(rt));
    VT_CHECK_ERR(mutual_err[0], VT_ECANCELED);
    VT_CHECK_OK(mutual_err[1]);
    /* mutual[0] was awaited by mutual[1]: stale. */
    VT_CHECK_ERR(vt_fiber_await(mutual[0], NULL, VT_NOW), VT_ENOENT);
    void *r = NULL;
    VT_CHECK_OK(vt_fiber_await(mutual[1], &r, VT_NOW));
    VT_CHECK_EQ(P2U(r), 2);
    vt_runtime_free(rt);
}

static vt_future *never;
static vt_err never_err = (vt_err)-1;

static void *stuck_root(void *arg)
{
    (void)arg;
    never_err = vt_future_await(never, NULL, VT_FOREVER);
    return NULL;
}

VT_TEST(runtime_main_reports_a_deadlock)
{
    VT_CHECK_OK(vt_future_new(&never));
    vt_runtime_opts o = det_opts(1);
    VT_CHECK_ERR(vt_runtime_main(&o, stuck_root, NULL, NULL), VT_EBUSY);
    VT_CHECK_ERR(never_err, VT_ECANCELED); /* the runtime's end cancelled it */
    vt_future_free(never);
}

static vt_err drive_inside = (vt_err)-1;

static void *drives_itself(void *arg)
{
    (void)arg;
    drive_inside = vt_runtime_drive(vt_runtime_current());
    return NULL;
}

VT_TEST(drive_errors)
{
    VT_CHECK_ERR(vt_runtime_drive(NULL), VT_EINVAL);
    vt_runtime_opts o;
    vt_runtime_opts_init(&o);
    o.pool.workers = 1;
    vt_runtime *rt = NULL;
    VT_CHECK_OK(vt_runtime_new(&rt, &o));
    VT_CHECK_ERR(vt_runtime_drive(rt), VT_ENOTSUP);
    vt_runtime_free(rt);
    o = det_opts(1);
    o.pool.workers = 2;
    VT_CHECK_ERR(vt_runtime_new(&rt, &o), VT_EINVAL);
    o.pool.workers = 1;
    VT_CHECK_OK(vt_runtime_main(&o, drives_itself, NULL, NULL));
    VT_CHECK_ERR(drive_inside, VT_ESTATE);
}
