/* m tiny OpenMP tasks started from inside a parallel region; the peer of
 * vitte's vt_pool_submit from a worker (bench/sched/bench_submit.c). */
#include <omp.h>

#include "peers.h"

void peer_submit_openmp(unsigned char *slots, size_t m, unsigned threads)
{
#pragma omp parallel num_threads(threads)
#pragma omp single
    {
        for (size_t i = 0; i < m; i++) {
#pragma omp task firstprivate(i)
            slots[i]++;
        }
#pragma omp taskwait
    }
}
