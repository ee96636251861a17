// The task graphs of bench/task/bench_graph.c as oneTBB flow graphs: one
// continue_node<continue_msg> per task — the node a dependency graph is made
// of in oneTBB, and the one Taskflow's own benchmarks set against it — joined
// by make_edge. Everything, teardown included, happens inside the arena of
// the thread count measured (tbb_arena.hpp), so that the graph attaches to
// that arena and its tasks run on its threads.
#include <oneapi/tbb/flow_graph.h>
#include <oneapi/tbb/task_arena.h>

#include <memory>
#include <vector>

#include "graph_peers.h"
#include "tbb_arena.hpp"

namespace
{
using msg_t = tbb::flow::continue_msg;
using node_t = tbb::flow::continue_node<msg_t>;

// The body of task k: one increment of its slot, as in every other impl.
struct bump {
    volatile unsigned char *slot;
    msg_t operator()(const msg_t &) const
    {
        *slot = static_cast<unsigned char>(*slot + 1);
        return msg_t();
    }
};
} // namespace

struct peer_graph_tbb {
    tbb::task_arena *arena = nullptr;
    // Declared before the nodes, so destroyed after them: a node must not
    // outlive its graph.
    std::unique_ptr<tbb::flow::graph> graph;
    std::vector<std::unique_ptr<node_t>> nodes;
};

extern "C" peer_graph_tbb *peer_graph_tbb_build(const peer_graph_shape *s, unsigned char *slots,
                                                unsigned threads)
{
    tbb::task_arena *arena = peer_tbb_arena(threads);
    if (!arena)
        return nullptr;
    peer_graph_tbb *out = nullptr;
    try {
        arena->execute([&] {
            auto g = std::make_unique<peer_graph_tbb>();
            g->arena = arena;
            g->graph = std::make_unique<tbb::flow::graph>();
            const size_t n = peer_graph_tasks(s);
            g->nodes.reserve(n);
            auto &v = g->nodes;
            for (size_t k = 0; k < n; k++) {
                v.push_back(std::make_unique<node_t>(*g->graph, bump{&slots[k]}));
                switch (s->kind) {
                case PEER_GRAPH_CHAIN:
                    if (k > 0)
                        tbb::flow::make_edge(*v[k - 1], *v[k]);
                    break;
                case PEER_GRAPH_TREE:
                    if (k > 0)
                        tbb::flow::make_edge(*v[(k - 1) / 2], *v[k]);
                    break;
                case PEER_GRAPH_WAVE:
                    if (k >= s->cols)
                        tbb::flow::make_edge(*v[k - s->cols], *v[k]);
                    if (k % s->cols)
                        tbb::flow::make_edge(*v[k - 1], *v[k]);
                    break;
                }
            }
            out = g.release();
        });
    } catch (...) {
        // bad_alloc: whatever was made is gone with the unique_ptrs.
        return nullptr;
    }
    return out;
}

extern "C" int peer_graph_tbb_run(peer_graph_tbb *g)
{
    if (g->nodes.empty())
        return 0;
    try {
        g->arena->execute([g] {
            g->nodes[0]->try_put(msg_t());
            g->graph->wait_for_all();
        });
    } catch (...) {
        return -1;
    }
    return 0;
}

extern "C" void peer_graph_tbb_free(peer_graph_tbb *g)
{
    if (!g)
        return;
    g->arena->execute([g] { delete g; });
}
