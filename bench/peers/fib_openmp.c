/* fib(n) with an OpenMP task per call (gcc's libgomp, or the runtime of
 * whichever compiler builds this): the same shape as the vitte task in
 * bench/sched/bench_fib.c — spawn fib(n-1), compute fib(n-2) inline, wait. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* dladdr */
#endif
#include <dlfcn.h>
#include <omp.h>
#include <string.h>

#include "peers.h"

static long fib_task(int n)
{
    if (n < 2)
        return n;
    long a, b;
#pragma omp task shared(a) firstprivate(n)
    a = fib_task(n - 1);
    b = fib_task(n - 2);
#pragma omp taskwait
    return a + b;
}

long peer_fib_openmp(int n, unsigned threads)
{
    long r = -1;
#pragma omp parallel num_threads(threads) shared(r)
#pragma omp single
    r = fib_task(n);
    return r;
}

int peer_openmp_prepare(unsigned threads)
{
    /* Without this the runtime may hand out fewer threads than asked. */
    omp_set_dynamic(0);
    int got = 0;
#pragma omp parallel num_threads(threads) shared(got)
#pragma omp single
    got = omp_get_num_threads();
    return got == (int)threads ? 0 : -1;
}

const char *peer_openmp_runtime(void)
{
    /* Clang's -fopenmp brings LLVM's libomp, gcc's libgomp: the figures
     * differ a lot, so the line says which one ran. */
    Dl_info info;
    if (!dladdr((void *)omp_get_num_threads, &info) || !info.dli_fname)
        return "unknown";
    const char *slash = strrchr(info.dli_fname, '/');
    return slash ? slash + 1 : info.dli_fname;
}
