/* graph_peers.h — the task graphs of bench/task/bench_graph.c, written with
 * other runtimes: oneTBB's flow graph (graph_tbb.cpp, built when CMake finds
 * TBB: VT_HAVE_TBB) and OpenMP tasks with depend clauses (graph_openmp.c,
 * VT_HAVE_OPENMP).
 *
 * Every impl builds the same graph, in the same order: task k = 0, 1, ...
 * is made, then the edges into it, from tasks made before it.
 *   CHAIN  n tasks; k - 1 -> k.
 *   TREE   n tasks, a complete binary tree in breadth-first order:
 *          (k - 1) / 2 -> k (node k's children are 2k + 1 and 2k + 2).
 *   WAVE   rows x cols tasks, task (i, j) = i * cols + j;
 *          (i - 1, j) -> (i, j) and (i, j - 1) -> (i, j).
 * Task k's body is one increment of slots[k] through a volatile pointer
 * (the same work in every impl, which no compiler can drop): after a run
 * every slot has grown by one exactly when every task ran once. */
#ifndef VITTE_BENCH_GRAPH_PEERS_H
#define VITTE_BENCH_GRAPH_PEERS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum peer_graph_kind {
    PEER_GRAPH_CHAIN,
    PEER_GRAPH_TREE,
    PEER_GRAPH_WAVE
} peer_graph_kind;

typedef struct peer_graph_shape {
    peer_graph_kind kind;
    size_t n;          /* CHAIN, TREE: tasks */
    size_t rows, cols; /* WAVE */
} peer_graph_shape;

static inline size_t peer_graph_tasks(const peer_graph_shape *s)
{
    return s->kind == PEER_GRAPH_WAVE ? s->rows * s->cols : s->n;
}

/* oneTBB: a tbb::flow::graph of continue_node<continue_msg>, one per task,
 * joined by make_edge, made and run inside the task_arena of `threads`
 * threads (tbb_arena.hpp; the calling thread takes its master slot).
 * build makes the graph (NULL when out of memory or without such an
 * arena); run puts a message into the source (task 0) and waits for every
 * node: 0, or -1 on an exception. It can be called again: a continue_node
 * counts its predecessors afresh after it fired. free destroys the nodes,
 * then the graph. */
typedef struct peer_graph_tbb peer_graph_tbb;
peer_graph_tbb *peer_graph_tbb_build(const peer_graph_shape *s, unsigned char *slots,
                                     unsigned threads);
int peer_graph_tbb_run(peer_graph_tbb *g);
void peer_graph_tbb_free(peer_graph_tbb *g);

/* OpenMP: one parallel region of `threads` threads in which one thread
 * makes every task, `#pragma omp task depend(in: <its predecessors' slots>)
 * depend(out: <its slot>)`, and the team runs them. Making and running the
 * graph are one act: nothing is built beforehand and nothing can be run
 * again. */
void peer_graph_openmp_run(const peer_graph_shape *s, unsigned char *slots, unsigned threads);

#ifdef __cplusplus
}
#endif
#endif
