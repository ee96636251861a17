// m tiny tasks through one oneTBB task_group::run each, from a thread inside
// the arena; the peer of vitte's vt_pool_submit from a worker.
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>

#include "peers.h"
#include "tbb_arena.hpp"

extern "C" void peer_submit_tbb(unsigned char *slots, size_t m, unsigned threads)
{
    tbb::task_arena *arena = peer_tbb_arena(threads);
    if (!arena)
        return; // the caller sees the slots untouched
    arena->execute([slots, m] {
        tbb::task_group g;
        for (size_t i = 0; i < m; i++)
            g.run([p = &slots[i]] { ++*p; });
        g.wait();
    });
}
