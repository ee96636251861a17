/* The task graphs of bench/task/bench_graph.c as OpenMP tasks with depend
 * clauses (gcc's libgomp, or the runtime of whichever compiler builds this):
 * one thread of the team makes every task, in task order, each depending
 * on its predecessors' slots and writing its own, while the team runs them.
 * OpenMP has no graph object: the dependencies are only known to the
 * runtime as the tasks are made, so building and running are one act, and
 * a second run makes every task again. */
#include <omp.h>

#include "graph_peers.h"

/* Task k's body, the same increment as in every other impl. The
 * dependences name the slots' addresses (d); the bodies write through a
 * volatile view of the same bytes (v). */
#define BUMP(k) (v[k] = (unsigned char)(v[k] + 1))

static void chain(unsigned char *d, size_t n)
{
    volatile unsigned char *v = d;
    if (n == 0)
        return;
#pragma omp task firstprivate(v) depend(out : d[0])
    BUMP(0);
    for (size_t k = 1; k < n; k++) {
#pragma omp task firstprivate(v, k) depend(in : d[k - 1]) depend(out : d[k])
        BUMP(k);
    }
}

static void tree(unsigned char *d, size_t n)
{
    volatile unsigned char *v = d;
    if (n == 0)
        return;
#pragma omp task firstprivate(v) depend(out : d[0])
    BUMP(0);
    for (size_t k = 1; k < n; k++) {
#pragma omp task firstprivate(v, k) depend(in : d[(k - 1) / 2]) depend(out : d[k])
        BUMP(k);
    }
}

static void wave(unsigned char *d, size_t rows, size_t cols)
{
    volatile unsigned char *v = d;
    for (size_t i = 0; i < rows; i++) {
        for (size_t j = 0; j < cols; j++) {
            size_t k = i * cols + j;
            if (i == 0 && j == 0) {
#pragma omp task firstprivate(v, k) depend(out : d[k])
                BUMP(k);
            } else if (i == 0) {
#pragma omp task firstprivate(v, k) depend(in : d[k - 1]) depend(out : d[k])
                BUMP(k);
            } else if (j == 0) {
#pragma omp task firstprivate(v, k) depend(in : d[k - cols]) depend(out : d[k])
                BUMP(k);
            } else {
#pragma omp task firstprivate(v, k) depend(in : d[k - cols], d[k - 1]) depend(out : d[k])
                BUMP(k);
            }
        }
    }
}

void peer_graph_openmp_run(const peer_graph_shape *s, unsigned char *slots, unsigned threads)
{
    /* The barrier that ends single waits for every task, the team running
     * them meanwhile. */
#pragma omp parallel num_threads(threads)
#pragma omp single
    {
        switch (s->kind) {
        case PEER_GRAPH_CHAIN:
            chain(slots, s->n);
            break;
        case PEER_GRAPH_TREE:
            tree(slots, s->n);
            break;
        case PEER_GRAPH_WAVE:
            wave(slots, s->rows, s->cols);
            break;
        }
    }
}
