/* test_spinlock.c — vt__spin_lock/trylock/unlock and the contended path. */
#include "base/platform.h"
#include "vt_test.h"

VT_TEST(lock_unlock_trylock)
{
    vt__spinlock l = VT__SPINLOCK_INIT;
    VT_CHECK(vt__spin_trylock(&l));
    VT_CHECK(!vt__spin_trylock(&l));
    vt__spin_unlock(&l);
    vt__spin_lock(&l);
    VT_CHECK(!vt__spin_trylock(&l));
    vt__spin_unlock(&l);
    VT_CHECK(vt__spin_trylock(&l));
    vt__spin_unlock(&l);
    VT_CHECK_EQ(atomic_load(&l.locked), 0);
}

/* A thread that finds the lock held goes through the slow path, spinning
 * and then yielding for as long as the holder keeps it, and gets it as soon
 * as it is released. */
static vt__spinlock held = VT__SPINLOCK_INIT;
static _Atomic int stage; /* 1 trying, 2 got it */

static void *contender(void *arg)
{
    (void)arg;
    atomic_store(&stage, 1);
    vt__spin_lock(&held);
    atomic_store(&stage, 2);
    vt__spin_unlock(&held);
    return NULL;
}

VT_TEST(waits_for_the_holder)
{
    vt__thread t;
    atomic_store(&stage, 0);
    vt__spin_lock(&held);
    VT_CHECK_OK(vt__thread_create(&t, contender, NULL, 0, NULL));
    while (atomic_load(&stage) == 0)
        vt__thread_yield();
    /* Long enough for it to leave the spin rounds for the yield loop
     * (thousands of yields); it cannot get in while we hold the lock. */
    for (int i = 0; i < 5000; i++) {
        VT_CHECK_EQ(atomic_load(&stage), 1);
        vt__thread_yield();
    }
    vt__spin_unlock(&held);
    VT_CHECK_OK(vt__thread_join(t, NULL));
    VT_CHECK_EQ(atomic_load(&stage), 2);
    VT_CHECK(vt__spin_trylock(&held));
    vt__spin_unlock(&held);
}

/* N threads x M increments of a plain counter under the lock: the exact
 * total, and no two holders at once. TSan checks the counter is protected. */
#define THREADS 4
#define INCREMENTS 20000

static vt__spinlock count_lock = VT__SPINLOCK_INIT;
static long counter;
static _Atomic int inside;
static _Atomic int overlap;
static _Atomic int go;

static void *increment(void *arg)
{
    long m = (long)(intptr_t)arg;
    while (!atomic_load(&go))
        vt__thread_yield();
    for (long i = 0; i < m; i++) {
        vt__spin_lock(&count_lock);
        if (atomic_fetch_add_explicit(&inside, 1, memory_order_relaxed) != 0)
            atomic_fetch_add(&overlap, 1);
        counter++;
        atomic_fetch_sub_explicit(&inside, 1, memory_order_relaxed);
        vt__spin_unlock(&count_lock);
    }
    return NULL;
}

VT_TEST(exact_count_under_contention)
{
    vt__thread t[THREADS];
    counter = 0;
    atomic_store(&go, 0);
    atomic_store(&overlap, 0);
    for (int i = 0; i < THREADS; i++)
        VT_CHECK_OK(vt__thread_create(&t[i], increment, (void *)(intptr_t)INCREMENTS, 0, NULL));
    atomic_store(&go, 1);
    for (int i = 0; i < THREADS; i++)
        VT_CHECK_OK(vt__thread_join(t[i], NULL));
    VT_CHECK_EQ(counter, (long)THREADS * INCREMENTS);
    VT_CHECK_EQ(atomic_load(&overlap), 0);
}

/* Releases into a crowd: several threads wait in the slow path when the
 * holder lets go, round after round; only one may get in each time. The
 * holder of a round stays inside a while, so that a second one let in at
 * the same moment would be seen there. */
#define CROWD 3
#define CROWD_ROUNDS 300

static vt__spinlock gate = VT__SPINLOCK_INIT;
static _Atomic int gate_round, gate_waiting, gate_inside, gate_overlap, gate_entries;

static void *crowd_member(void *arg)
{
    (void)arg;
    for (int r = 1; r <= CROWD_ROUNDS; r++) {
        while (atomic_load(&gate_round) < r)
            vt__thread_yield();
        atomic_fetch_add(&gate_waiting, 1);
        vt__spin_lock(&gate);
        if (atomic_fetch_add(&gate_inside, 1) != 0)
            atomic_fetch_add(&gate_overlap, 1);
        atomic_fetch_add(&gate_entries, 1);
        for (int i = 0; i < 200; i++)
            vt__cpu_relax();
        atomic_fetch_sub(&gate_inside, 1);
        vt__spin_unlock(&gate);
    }
    return NULL;
}

VT_TEST(release_into_a_crowd)
{
    vt__thread t[CROWD];
    for (int i = 0; i < CROWD; i++)
        VT_CHECK_OK(vt__thread_create(&t[i], crowd_member, NULL, 0, NULL));
    for (int r = 1; r <= CROWD_ROUNDS; r++) {
        vt__spin_lock(&gate);
        atomic_store(&gate_waiting, 0);
        atomic_store(&gate_round, r);
        while (atomic_load(&gate_waiting) < CROWD)
            vt__thread_yield();
        vt__spin_unlock(&gate);
        while (atomic_load(&gate_entries) < r * CROWD)
            vt__thread_yield();
    }
    for (int i = 0; i < CROWD; i++)
        VT_CHECK_OK(vt__thread_join(t[i], NULL));
    VT_CHECK_EQ(atomic_load(&gate_overlap), 0);
    VT_CHECK_EQ(atomic_load(&gate_entries), CROWD * CROWD_ROUNDS);
}
