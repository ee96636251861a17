// The 3-stage pipeline of bench/flow/bench_pipeline.c with oneTBB's
// parallel_pipeline: one filter per stage, items handed over one by one as
// tokens, the form oneTBB's documentation gives for this shape. The source's
// counter and the sink's sum sit on cache lines of their own, as in vitte's
// impl, so that neither pays for the other's writes.
#include <oneapi/tbb/parallel_pipeline.h>
#include <oneapi/tbb/task_arena.h>

#include "pipeline_peers.h"
#include "tbb_arena.hpp"

namespace
{
struct alignas(64) source_state {
    uint64_t next, n;
};
struct alignas(64) sink_state {
    uint64_t sum;
};
} // namespace

extern "C" uint64_t peer_pipeline_tbb(uint64_t n, int parallel, unsigned threads, size_t tokens,
                                      int *failed)
{
    *failed = 0;
    tbb::task_arena *arena = peer_tbb_arena(threads);
    if (!arena) {
        *failed = 1;
        return 0;
    }
    source_state src{0, n};
    sink_state out{0};
    const tbb::filter_mode mid =
        parallel ? tbb::filter_mode::parallel : tbb::filter_mode::serial_in_order;
    try {
        arena->execute([&] {
            tbb::parallel_pipeline(
                tokens,
                tbb::make_filter<void, uint64_t>(tbb::filter_mode::serial_in_order,
                                                 [&src](tbb::flow_control &fc) -> uint64_t {
                                                     if (src.next == src.n) {
                                                         fc.stop();
                                                         return 0;
                                                     }
                                                     return src.next++;
                                                 }) &
                    tbb::make_filter<uint64_t, uint64_t>(mid, [](uint64_t x) { return 2 * x + 1; }) &
                    tbb::make_filter<uint64_t, void>(tbb::filter_mode::serial_in_order,
                                                     [&out](uint64_t x) { out.sum += x; }));
        });
    } catch (...) {
        *failed = 1;
        return 0;
    }
    return out.sum;
}
