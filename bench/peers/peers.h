/* peers.h — the same benchmarks written with other runtimes, to compare
 * vitte with: OpenMP tasks (fib_openmp.c, submit_openmp.c, built with
 * -fopenmp when CMake finds OpenMP: VT_HAVE_OPENMP) and oneTBB's task_group
 * (fib_tbb.cpp, submit_tbb.cpp, built when CMake finds TBB: VT_HAVE_TBB).
 * Each entry runs the whole computation on `threads` threads (the calling
 * thread among them) and returns when it is done. */
#ifndef VITTE_BENCH_PEERS_H
#define VITTE_BENCH_PEERS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* fib(n) with one task per call and no cutoff: spawn fib(n-1), call
 * fib(n-2), wait, add. */
long peer_fib_openmp(int n, unsigned threads);
long peer_fib_tbb(int n, unsigned threads);

/* From inside the runtime (a task on one of its threads), starts m tiny
 * tasks, task i incrementing slots[i], and waits for all of them. */
void peer_submit_openmp(unsigned char *slots, size_t m, unsigned threads);
void peer_submit_tbb(unsigned char *slots, size_t m, unsigned threads);

/* Starts the runtime's threads for `threads` (outside timed regions);
 * returns 0, or -1 if it cannot have that many. */
int peer_openmp_prepare(unsigned threads);
int peer_tbb_prepare(unsigned threads);

/* Which runtime answered, for the BENCH line: the file name of the shared
 * object that holds the OpenMP runtime ("libgomp.so.1", "libomp.so.5"), and
 * "oneTBB-<version>". Static strings, never NULL. */
const char *peer_openmp_runtime(void);
const char *peer_tbb_runtime(void);

#ifdef __cplusplus
}
#endif
#endif
