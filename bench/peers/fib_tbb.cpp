// fib(n) with a oneTBB task_group per call, no cutoff: the same shape as the
// vitte task in bench/sched/bench_fib.c. Threads are bounded by a task_arena
// per thread count (the calling thread takes the arena's master slot), so
// that 1 and 2 threads can be measured in turn in one process.
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>

#include "peers.h"
#include "tbb_arena.hpp"

static long fib_task(int n)
{
    if (n < 2)
        return n;
    long a = 0;
    tbb::task_group g;
    g.run([&a, n] { a = fib_task(n - 1); });
    long b = fib_task(n - 2);
    g.wait();
    return a + b;
}

extern "C" long peer_fib_tbb(int n, unsigned threads)
{
    tbb::task_arena *arena = peer_tbb_arena(threads);
    if (!arena)
        return -1;
    long r = -1;
    arena->execute([&r, n] { r = fib_task(n); });
    return r;
}
