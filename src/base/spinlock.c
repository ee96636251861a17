/* spinlock.c — the contended path of vt__spin_lock.
 *
 * Spin on a plain load (test-and-test-and-set: waiting costs no cache-line
 * ping-pong) for a bounded number of rounds, then give the CPU away with
 * vt__thread_yield between tries. The lock guards critical sections of a few
 * dozen instructions, where the holder is almost always running and releases
 * within the spin; if the holder was preempted or the section is long,
 * waiters degrade to yield-spinning, which burns CPU without making progress
 * any faster: such sections need a mutex, not this lock. */
#include "platform.h"

#define SPIN_ROUNDS 128

void vt__spin_lock_slow(vt__spinlock *l)
{
    for (int i = 0; i < SPIN_ROUNDS; i++) {
        if (vt__spin_trylock(l))
            return;
        vt__cpu_relax();
    }
    while (!vt__spin_trylock(l))
        vt__thread_yield();
}
