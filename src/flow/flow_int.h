/* flow_int.h — the flow layer's private contract between its parts: values
 * and their record format (value.c), value graphs (flow.c, ctx.c, dot.c)
 * and pipelines (pipeline.c, pipe_run.c, pipe_watch.c). Shared by the files
 * of src/flow/ and by nothing else. */
#ifndef VITTE_FLOW_INT_H
#define VITTE_FLOW_INT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "vitte/flow.h"
#include "../base/platform.h"

/* ---- Values (value.c) ------------------------------------------------------------
 * A value as a node holds it. Strings and blobs the flow copied are owned
 * (freed when dropped); a constant node's run value points at the
 * constant's own copy instead (not owned). A string's buffer always has a
 * NUL after its len bytes. */
typedef struct vt__fval {
    union {
        int64_t i;
        double d;
        void *p; /* STR, BYTES: the bytes; PTR: the user's pointer */
    } u;
    union {
        size_t len;         /* STR, BYTES */
        vt_value_dtor dtor; /* PTR */
    };
    uint8_t type;  /* vt_value_type */
    uint8_t owned; /* u.p is the flow's allocation of len (+1 for strings) bytes */
} vt__fval;

/* Releases what v owns (a copy, or a pointer through its destructor) and
 * leaves it NONE. */
VT_INTERNAL void vt__fval_drop(vt__fval *v);
/* *v = a copy of len bytes at p as type (STR or BYTES; a string gets its
 * NUL). v must hold nothing. Errors: VT_ENOMEM. */
VT_INTERNAL vt_err vt__fval_copy(vt__fval *v, vt_value_type type, const void *p, size_t len);

/* The record of a value in a task's result blob: 'v', the type, the
 * payload (int64 and double little-endian, a string with its NUL, a
 * blob's bytes). A value that is not recorded (a pointer, or a string or
 * blob above VT_FLOW_PERSIST_MAX) is recorded as "unkept", so that the
 * next resume knows to run its node again. */
#define VT__REC_HEAD 2
#define VT__REC_UNKEPT 0x7f

/* The record of v: in buf (size bytes) when it fits, else in a block the
 * caller frees with vt_free(*out, *len) (*heap = 1). Errors: VT_ENOMEM. */
VT_INTERNAL vt_err vt__fval_encode(const vt__fval *v, unsigned char *buf, size_t size,
                                   unsigned char **out, size_t *len, int *heap);
/* A view of the value recorded in data[0 .. len) (nothing is copied: a
 * string or blob points into data). 0 when data is not the record of a
 * kept value. */
VT_INTERNAL int vt__fval_decode(const void *data, size_t len, vt__fval *v);

/* ---- Value graphs (flow.c) ---------------------------------------------------------- */

/* Nodes live in blocks that never move: a first one of VT__NODE_BLOCK0
 * nodes (from vt_alloc), then 2 MiB blocks backed by huge pages where the
 * system allows (as task's blocks are: first touching memory a 4 KiB page
 * at a time costs a page fault per page, which on some virtual machines
 * outweighs the rest of building a node many times). */
#define VT__NODE_BLOCK0 256u

/* What the task fingerprint of a node is, of the three the flow uses: the
 * user's key, or the key followed by one of two fixed suffixes. A resume
 * that must run a node again although the store says it succeeded (its
 * value was not kept) switches the node to a suffix that differs from the
 * recorded one; one that may restore it switches to the recorded one. */
enum {
    VT__FP_KEY = 0,
    VT__FP_ALT1 = 1,
    VT__FP_ALT2 = 2
};

/* The first cache line holds what a run touches: the body, its inputs,
 * the value and the run that set it (a node's inputs read their lines
 * only); the second, what building and the store use. A constant node
 * (fn NULL) keeps its constant in val for good: its runs only stamp gen. */
struct vt_flow_node {
    VT_CACHE_ALIGNED vt_flow *f;
    vt_flow_fn fn; /* NULL: a constant node */
    void *ud;
    vt_flow_node **in; /* in_inline while nin <= 2 */
    uint32_t gen;      /* the run that set val (0: none; wraps after 2^32 runs) */
    uint32_t nin;
    vt__fval val; /* this run's value (set by the body) */

    vt_task *t;
    vt_flow_node *in_inline[2];
    uint32_t cap_in;
    uint32_t key_len;
    unsigned char *key; /* the user's key (NULL: none) */
    uint8_t fp_state;   /* VT__FP_*: what the task's fingerprint is now */
    uint8_t fp_set;     /* the task has a fingerprint at all */
};

typedef struct vt__node_block {
    vt_flow_node *nodes;
    void *raw;    /* what vt_alloc gave (nodes is raw aligned to a line) */
    uint8_t huge; /* from vt__vm_reserve_huge, else vt_alloc */
} vt__node_block;

struct vt_flow {
    char *name;
    vt_graph *g;
    uint64_t id; /* tells flows apart in the per-thread error record */
    vt__node_block *blocks;
    size_t nblocks, cap_blocks;
    size_t n;
    vt_flow_node **by_task; /* open addressing on the task pointer */
    size_t by_task_cap;
    _Atomic size_t mapped; /* nodes in by_task (see map_sync) */
    vt__spinlock map_lock;
    vt_err first_err;
    char *msg;                   /* the flow's own message: building, validation, run */
    uint32_t gen;                /* runs started (0 skipped when it wraps) */
    uint8_t persist;             /* this run records values in the store */
    uint8_t started;             /* a run was started once */
    _Atomic uint8_t heap_values; /* some node set a value that must be dropped */
    _Atomic int running;
};

/* Nodes per block after the first. */
#define VT__NODES_HUGE (VT__HUGE_BLOCK / sizeof(struct vt_flow_node))

struct vt_flow_ctx {
    vt_flow_node *n;
    vt_task_ctx *tc;
    uint32_t gen; /* the run's */
};

VT_INTERNAL vt_flow_node *vt__flow_node_at(const vt_flow *f, size_t i);
/* The value n has for readers of run gen: its own (set in that run), or
 * the one restored from the store. VT_ESTATE when neither. */
VT_INTERNAL vt_err vt__flow_node_view(const vt_flow_node *n, uint32_t gen, vt__fval *v);
/* Records msg as the calling thread's last error on f (NULL f: none). */
VT_INTERNAL void vt__flow_thread_error(const vt_flow *f, const char *fmt, ...) VT_PRINTF(2, 3);
VT_INTERNAL void vt__flow_thread_clear(const vt_flow *f);
/* The body every node's task runs (ctx.c). */
VT_INTERNAL vt_err vt__flow_node_body(vt_task_ctx *tc, void *data);
/* A DOT string (dot.c). */
VT_INTERNAL void vt__dot_str(FILE *out, const char *s);

/* ---- Pipelines (pipeline.c builds, pipe_run.c runs, pipe_watch.c reports) ------------ */

typedef struct vt__pbatch vt__pbatch;

enum {
    VT__ROLE_SOURCE,
    VT__ROLE_STAGE,
    VT__ROLE_SINK
};

struct vt__pbatch {
    vt__pbatch *next; /* free list, a parallel stage's queue, sleepers */
    vt_pipeline *p;
    uint64_t seq;          /* its place at the next serial stage */
    uint32_t n;            /* items in `in` */
    uint32_t stage;        /* the stage it is at */
    uint32_t pos;          /* the stage's next item (a backoff resumes there) */
    uint32_t nout;         /* items the stage has written to `out` */
    uint32_t ndrop, nskip; /* items the stage dropped and skipped, not yet counted */
    unsigned attempt;      /* of the item at pos, from 1 */
    uint8_t entered;       /* holds its place in the stage (serial: owns it) */
    uint8_t asleep;        /* on p->sleepers, a timer will resume it */
    uint8_t src_again;     /* source: it said VT_EAGAIN */
    uint8_t src_end;       /* source: it said VT_ECLOSED */
    uint8_t src_handed;    /* source: handed the source by the batch before */
    int64_t t0;            /* when it entered the stage */
    unsigned char *in, *out;
    vt_timer timer;
    _Atomic uint64_t fiber; /* async: the fiber running it (for VT_EDEADLK) */
};

struct vt_pipe_stage {
    vt_pipeline *p;
    char *name;
    uint32_t index;
    uint8_t role;
    vt_pipe_kind kind;
    unsigned conc; /* PARALLEL: the limit, 0 none */
    int unordered;
    vt_retry retry; /* max_attempts >= 1 */
    vt_pipe_on_fail on_fail;
    vt_pipe_skip_fn on_skip;
    void *on_skip_ud;
    size_t in_size, out_size; /* out_size 0 for the sink */
    union {
        vt_pipe_source_fn source;
        vt_pipe_fn stage;
        vt_pipe_sink_fn sink;
    } fn;
    void *ud;

    /* The run: who may enter. */
    VT_CACHE_ALIGNED vt__spinlock lock;
    /* SERIAL: the seq it takes next, shifted left by one, | 1 while a
     * batch is in it. Written under the lock, read without it by a batch
     * that waits for its turn spinning. */
    _Atomic uint64_t turn;
    unsigned inside;                   /* PARALLEL with a limit: batches in it */
    vt__pbatch **ring;                 /* SERIAL: batches waiting, at seq % max_batches */
    vt__pbatch *wait_head, *wait_tail; /* PARALLEL: batches waiting, in arrival order */
    _Atomic uint64_t renum;            /* PARALLEL unordered: seq of the next batch out */

    /* The run: counters (relaxed; read by vt_pipeline_stats_get). */
    VT_CACHE_ALIGNED _Atomic uint64_t c_in, c_out, c_dropped, c_failures, c_retries, c_skipped;
    _Atomic uint64_t c_queued, c_queue_max, c_lost;
    _Atomic int64_t c_busy_ns;
    _Atomic unsigned c_active;
    _Atomic int c_last_err;
    _Atomic int64_t batch_ns; /* SERIAL: how long a batch stays in it, smoothed */
};

enum {
    VT__STOP_NONE = 0,
    VT__STOP_FAILED = 1,
    VT__STOP_CANCELLED = 2
};

struct vt_pipeline {
    char *name;
    size_t batch_opt;
    unsigned max_batches_opt;
    int async;
    vt_pipe_stage **st;
    size_t n, cap;
    vt_err first_err;
    char *msg; /* building error, or why the last run failed */

    /* Set up by start, fixed during the run. */
    vt_runtime *rt;
    vt_pool *pool;
    int spin; /* wait for a serial stage's turn spinning */
    size_t batch;
    unsigned nb;
    size_t buf_size;     /* bytes of one batch buffer */
    vt__pbatch *batches; /* nb, and their buffers behind them */
    size_t batches_bytes;
    vt_scope *scope; /* async: the run's fibers */
    vt_future *done; /* set by whoever ends the run */

    /* The run's state, under lock. */
    VT_CACHE_ALIGNED vt__spinlock lock;
    /* Free batches, one list per worker (and one for other threads): a
     * worker takes back the batches it freed, whose buffers are still in
     * its cache, rather than ones another worker's cache holds. */
    vt__pbatch **free;
    unsigned nfree_lists;
    vt__pbatch *sleepers;
    unsigned used;            /* batches in use, or promised to a source job */
    uint8_t src_parked;       /* the source waits for a free batch */
    uint8_t src_ended;        /* the source said VT_ECLOSED: no more source jobs */
    _Atomic uint8_t src_busy; /* a batch holds the source (read unlocked by spinners) */
    vt__pbatch *src_waiter;   /* the next source job's batch, waiting its turn */
    uint8_t end_signalled;
    uint8_t live;                 /* set up: a stop may touch the run */
    int64_t src_idle_ns;          /* the source's wait after an empty VT_EAGAIN */
    uint64_t src_seq;             /* these two: the source's holder's alone */
    uint32_t fill;                /* items the batch being filled gets at most */
    _Atomic uint8_t batches_done; /* a batch has come home */

    VT_CACHE_ALIGNED _Atomic int stop; /* VT__STOP_* */
    vt_err stop_err;
    char stop_msg[512];
    _Atomic int running;     /* start .. a wait that saw the end */
    _Atomic unsigned c_used; /* batches in use, for the stats */
    _Atomic int64_t started_ns, ended_ns;
    uint8_t ran;
    vt_err result; /* of the last run, once ended */
};

/* pipe_run.c */
VT_INTERNAL vt_err vt__pipe_start(vt_pipeline *p, vt_runtime *rt);
VT_INTERNAL vt_err vt__pipe_wait(vt_pipeline *p, int64_t deadline);
VT_INTERNAL void vt__pipe_stop(vt_pipeline *p, int why, vt_err err, const char *msg);
/* Frees what start set up (batches, scope, future); not while running. */
VT_INTERNAL void vt__pipe_release(vt_pipeline *p);
/* pipeline.c */
VT_INTERNAL void vt__pipe_msg(vt_pipeline *p, const char *fmt, ...) VT_PRINTF(2, 3);

#endif
