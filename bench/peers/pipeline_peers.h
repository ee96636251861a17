/* pipeline_peers.h — the 3-stage pipeline of bench/flow/bench_pipeline.c,
 * written with oneTBB's parallel_pipeline (pipeline_tbb.cpp, built when
 * CMake finds TBB: VT_HAVE_TBB).
 *
 * The pipeline of every impl: a source counting 0, 1, ..., n - 1, a middle
 * stage computing 2x + 1, a sink adding them up (the result is n^2). The
 * middle stage is serial (in order), or parallel when `parallel` is set;
 * the source and the sink are serial, in order. */
#ifndef VITTE_BENCH_PIPELINE_PEERS_H
#define VITTE_BENCH_PIPELINE_PEERS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Runs the pipeline over n items inside the task_arena of `threads`
 * threads (tbb_arena.hpp; the calling thread takes its master slot), with
 * at most `tokens` items in flight, and returns the sink's sum (0 and
 * *failed = 1 when oneTBB threw, or no such arena). */
uint64_t peer_pipeline_tbb(uint64_t n, int parallel, unsigned threads, size_t tokens, int *failed);

#ifdef __cplusplus
}
#endif
#endif
