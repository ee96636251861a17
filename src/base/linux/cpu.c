/* cpu.c — how many CPUs this process may use, on Linux. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

#include "../platform.h"

/* Room for 8192 CPUs on the stack, so counting needs no allocation; a kernel
 * built for more makes sched_getaffinity fail with EINVAL and we fall back
 * to the number of online CPUs. */
#define MASK_WORDS 128

/* Counted once: the affinity mask seldom changes, and callers size pools
 * from it on hot-ish paths. 0 means not counted yet. */
static _Atomic unsigned cpu_count;

static unsigned count_cpus(void)
{
    unsigned long mask[MASK_WORDS] = {0};
    long r = sched_getaffinity(0, sizeof mask, (cpu_set_t *)(void *)mask);
    if (r == 0) {
        unsigned n = 0;
        for (int i = 0; i < MASK_WORDS; i++)
            n += (unsigned)__builtin_popcountl(mask[i]);
        if (n > 0)
            return n;
    }
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online > 0 ? (unsigned)online : 1u;
}

unsigned vt_cpu_count(void)
{
    unsigned n = atomic_load_explicit(&cpu_count, memory_order_relaxed);
    if (VT_LIKELY(n != 0))
        return n;
    n = count_cpus();
    atomic_store_explicit(&cpu_count, n, memory_order_relaxed);
    return n;
}
