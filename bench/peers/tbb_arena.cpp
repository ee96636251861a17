// The arenas of fib_tbb.cpp and submit_tbb.cpp, one per thread count.
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/version.h>

#include <cstdio>
#include <mutex>

#include "peers.h"
#include "tbb_arena.hpp"

namespace
{
constexpr unsigned max_threads = 256;
std::mutex arenas_lock;
// Never deleted: they live as long as the process, and destroying them from
// static destructors could race oneTBB's own teardown.
tbb::task_arena *arenas[max_threads + 1];
unsigned parallelism_now;
} // namespace

tbb::task_arena *peer_tbb_arena(unsigned threads)
{
    if (threads == 0 || threads > max_threads)
        return nullptr;
    std::lock_guard<std::mutex> hold(arenas_lock);
    // oneTBB starts one worker fewer than the CPUs by default; more threads
    // than CPUs (oversubscription) need the limit raised.
    if (threads > parallelism_now &&
        threads > static_cast<unsigned>(tbb::info::default_concurrency())) {
        new tbb::global_control(tbb::global_control::max_allowed_parallelism, threads);
        parallelism_now = threads;
    }
    if (!arenas[threads]) {
        arenas[threads] = new tbb::task_arena(static_cast<int>(threads));
        arenas[threads]->initialize();
    }
    return arenas[threads];
}

extern "C" int peer_tbb_prepare(unsigned threads)
{
    tbb::task_arena *a = peer_tbb_arena(threads);
    if (!a)
        return -1;
    // Sets the arena up now; the benchmark's untimed warm-up run then brings
    // its worker in.
    a->execute([] {});
    return a->max_concurrency() == static_cast<int>(threads) ? 0 : -1;
}

extern "C" const char *peer_tbb_runtime(void)
{
    static char name[64];
    std::snprintf(name, sizeof name, "oneTBB-%s", TBB_runtime_version());
    return name;
}
