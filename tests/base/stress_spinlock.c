/* stress_spinlock.c — many threads hammering one vt__spinlock: more threads
 * than CPUs, so holders get preempted and waiters reach the yield loop. */
#include "base/platform.h"
#include "vt_test.h"

#define THREADS 8

static vt__spinlock lock = VT__SPINLOCK_INIT;
static long counter;     /* plain: only ever touched under the lock */
static long per_thread[THREADS];
static _Atomic int inside, overlap, go;

static void *hammer(void *arg)
{
    int me = (int)(intptr_t)arg;
    long m = 200000L * (long)vt_test_stress();
    while (!atomic_load(&go))
        vt__thread_yield();
    for (long i = 0; i < m; i++) {
        /* Mix in trylock, which must never let two in either. */
        if (i % 7 == 0) {
            while (!vt__spin_trylock(&lock))
                vt__cpu_relax();
        } else {
            vt__spin_lock(&lock);
        }
        if (atomic_fetch_add_explicit(&inside, 1, memory_order_relaxed) != 0)
            atomic_fetch_add(&overlap, 1);
        counter++;
        per_thread[me]++;
        atomic_fetch_sub_explicit(&inside, 1, memory_order_relaxed);
        vt__spin_unlock(&lock);
    }
    return NULL;
}

VT_TEST(exact_count_many_threads)
{
    vt__thread t[THREADS];
    long m = 200000L * (long)vt_test_stress();
    for (int i = 0; i < THREADS; i++)
        VT_CHECK_OK(vt__thread_create(&t[i], hammer, (void *)(intptr_t)i, 0, "hammer"));
    atomic_store(&go, 1);
    for (int i = 0; i < THREADS; i++)
        VT_CHECK_OK(vt__thread_join(t[i], NULL));
    VT_CHECK_EQ(atomic_load(&overlap), 0);
    VT_CHECK_EQ(counter, THREADS * m);
    for (int i = 0; i < THREADS; i++)
        VT_CHECK_EQ(per_thread[i], m);
}
