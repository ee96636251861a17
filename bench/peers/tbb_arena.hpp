// One task_arena per thread count, made on first use and kept for the life
// of the process (as the vitte pools are), so no timed region pays for it.
#ifndef VITTE_BENCH_TBB_ARENA_HPP
#define VITTE_BENCH_TBB_ARENA_HPP

#include <oneapi/tbb/task_arena.h>

tbb::task_arena *peer_tbb_arena(unsigned threads);

#endif
