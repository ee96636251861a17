/* graph.h — the executor's data: graphs, tasks and runs (graph.c builds
 * and checks them, exec.c runs them, ctx.c serves the bodies).
 *
 * A task is one cache line that holds what a run touches for every task:
 * its body, its first two successors, its counters and its state. The rest
 * — name, settings, per-run results — lives in a "cold" record that only
 * tasks that need one get, so that a graph of a million anonymous tasks is
 * a million lines and nothing else. */
#ifndef VITTE_TASK_GRAPH_H
#define VITTE_TASK_GRAPH_H

#include <stdatomic.h>
#include <stdint.h>

#include "task/task_int.h"

/* The state byte: the state in the low bits; DOOMED once a dependency
 * failed (the task will end SKIPPED); the run's parity in the top bit. A
 * state written by an earlier run has the other parity and reads as
 * PENDING, so a new run needs no pass over its tasks to reset them. */
enum {
    VT__ST_MASK = 0x07,
    VT__ST_DOOMED = 0x40,
    VT__ST_PARITY = 0x80
};

/* Bits fixed while the graph is built. */
enum {
    VT__B_NINLINE = 0x03, /* successors in succ[] (0..2) */
    VT__B_MORE = 0x04,    /* more successors in cold->more */
    VT__B_ASYNC = 0x08,   /* the body runs as a fiber */
    VT__B_SLOW = 0x10,    /* settings that the fast path does not handle */
    VT__B_SUB = 0x20      /* a subtask (of the run, not of the graph) */
};

typedef struct vt__cold vt__cold;

struct vt_task {
    vt_task_fn fn;
    void *data;
    vt_task *succ[2];
    vt_graph *g;
    vt__cold *_Atomic cold;
    uint32_t npred;
    _Atomic uint32_t join; /* dependencies not finished in this run */
    uint32_t index;        /* order of addition (subtasks: in their run) */
    _Atomic int16_t prio;
    _Atomic uint8_t state;
    uint8_t bits;
};

struct vt_group {
    vt_graph *g;
    vt_group *next;
    char *name;
    vt_task **members;
    size_t n, cap;
    _Atomic uint8_t cancelled_parity; /* 0x80|parity+1 style tag: see exec.c */
    vt_scope *scope;                  /* async members' fibers in this run */
};

struct vt__cold {
    /* Fixed while building. */
    char *name;        /* NULL: unnamed; subtasks: the full name */
    uint8_t auto_name; /* name is the "#<n>" vt_task_name made */
    vt_task **more;    /* successors beyond succ[] */
    uint32_t nmore, cap_more;
    char **deps; /* dependencies by name */
    uint32_t ndeps, cap_deps, deps_resolved;
    vt_retry retry; /* max_attempts 0: none */
    int64_t timeout_ns;
    uint8_t *fp;
    uint32_t fp_len;
    uint8_t has_fp;
    vt_group *group;
    vt_task *parent; /* subtasks */
    vt_task *self;
    uint32_t sub_pos; /* subtasks: place in the parent's list */
    uint8_t launched; /* subtasks: the parent's body returned */

    /* Per run: cleared by vt__cold_reset. Written by the thread that runs
     * the task (and, for timed_out and the timer, by its timeout's job). */
    vt_err err;
    char *errmsg;
    unsigned attempts;
    uint8_t restored;
    void *result;
    size_t result_len;
    char *log;
    size_t log_len, log_cap;
    vt_err sub_error; /* a vt_ctx_add that failed in this attempt */
    vt_task **subs;   /* subtasks added by the current attempt */
    uint32_t nsubs, cap_subs;
    _Atomic uint32_t subs_left;
    vt_task *_Atomic sub_failed;
    int64_t started_wall, ended_wall;
    vt_fiber fiber;
    vt_timer timer;
    _Atomic uint32_t timer_armed; /* attempt tag while a timeout timer may fire */
    _Atomic uint8_t timed_out;
    _Atomic uint8_t stopped; /* timed out or group-cancelled: ctx_cancelled */
};

/* Tasks live in blocks that never move: a first one of VT__BLOCK0 tasks
 * (from vt_alloc), then huge-page blocks of VT__BLOCK_TASKS. */
#define VT__BLOCK0 1024u
#define VT__BLOCK_TASKS ((uint32_t)(VT__HUGE_BLOCK / sizeof(vt_task)))

typedef struct vt__arena_block vt__arena_block;
typedef struct vt__arena {
    vt__arena_block *head;
    char *cur, *end;
} vt__arena;

typedef struct vt__heap_entry {
    int prio;
    uint64_t seq;
    vt_task *t;
} vt__heap_entry;

/* Per worker counters of a run, each on its own line. */
typedef struct vt__wstat {
    _Atomic size_t n[VT_TASK_STATES];
    _Atomic size_t restored, retries;
    char pad[VT_CACHE_LINE - ((VT_TASK_STATES + 2) * sizeof(size_t)) % VT_CACHE_LINE];
} vt__wstat;

typedef struct vt__resume_entry vt__resume_entry;

typedef struct vt__run {
    vt_graph *g;
    vt_runtime *rt;
    vt_pool *pool;
    uint8_t parity;   /* VT__ST_PARITY or 0 */
    uint8_t slow_all; /* every task takes the slow path (store, monitor, priorities) */
    uint8_t prio_mode;
    uint8_t single;        /* one worker: no two tasks finish at once */
    _Atomic uint8_t multi; /* tasks of the run may finish on several threads */
    uint8_t determ;
    vt_failure_mode mode;
    _Atomic int64_t remaining; /* tasks not finished (subtasks included) */
    _Atomic int stop;          /* 0, STOP_FAILED, STOP_CANCELLED */
    _Atomic int64_t side_jobs; /* timeout jobs that may still run */
    vt_scope *scope;
    vt_future *done;
    vt_store *store;
    vt__store_run *srun;
    vt_monitor *mon;
    unsigned nstat;
    vt__wstat *stat;
    _Atomic size_t total;
    vt__spinlock heap_lock;
    vt__heap_entry *heap;
    size_t heap_n, heap_cap;
    uint64_t heap_seq;
    _Atomic int first_failure_set;
    char first_failure[512];
    int64_t started_ns;
    _Atomic int64_t ended_ns;
    char run_id[VT_RUN_ID_MAX];
    vt__resume_entry **resume; /* hash table of what the store had succeeded */
    size_t resume_cap;
    uint64_t rng; /* jitter in deterministic mode */
    vt__spinlock rng_lock;
} vt__run;

struct vt_graph {
    char *name;
    vt_task **blocks;
    uint32_t nblocks, cap_blocks;
    size_t ntasks;
    vt__arena arena;   /* names, colds, lists: freed with the graph */
    vt__spinlock lock; /* colds made during a run, run-arena, groups */
    vt__cold **colds;  /* every cold of a graph task, to reset per run */
    size_t ncolds, cap_colds;
    vt_group *groups;
    vt_err first_err;
    char *errmsg;             /* vt_graph_error */
    size_t backward_edges;    /* edges from a task to an earlier one: maybe a cycle */
    vt_task **roots;          /* tasks without dependencies, and stale_roots that */
    size_t nroots, cap_roots; /* gained one since (dropped before a run) */
    size_t stale_roots;
    _Atomic size_t nonzero_prios; /* tasks whose priority is not 0 */
    uint8_t sealed;               /* validated since the last change */
    uint8_t has_names, has_deps;
    vt_task **by_name; /* open addressing, built by validation */
    size_t by_name_cap;

    /* The run: one at a time. */
    _Atomic int running;
    int live;                   /* under lock: the run may be touched by others */
    uint8_t ran;                /* a run started once */
    _Atomic uint8_t run_parity; /* of the current or last run */
    vt__run run;
    vt__arena run_arena; /* subtasks and their colds */
    vt__cold **sub_colds;
    size_t nsub_colds, cap_sub_colds;
    uint32_t nsubs_total;
    _Atomic int end_state; /* 0 running, 1 a vt_graph_wait ends it, 2 ended */
    vt_err result;
};

/* graph.c */
VT_INTERNAL void *vt__arena_alloc(vt__arena *a, size_t size);
VT_INTERNAL char *vt__arena_strdup(vt__arena *a, const char *s);
VT_INTERNAL void vt__arena_free(vt__arena *a);
VT_INTERNAL vt__cold *vt__cold_get(vt_task *t);
VT_INTERNAL void vt__cold_reset(vt__cold *c);
VT_INTERNAL vt_err vt__graph_fail(vt_graph *g, vt_err e, const char *fmt, ...) VT_PRINTF(3, 4);
VT_INTERNAL void vt__graph_errmsg(vt_graph *g, const char *fmt, ...) VT_PRINTF(2, 3);
/* The task's name, or "#<index>" written into buf. */
VT_INTERNAL const char *vt__task_name(const vt_task *t, char *buf, size_t size);
VT_INTERNAL vt_task *vt__graph_task_at(const vt_graph *g, size_t index);

static inline vt__cold *vt__cold_peek(const vt_task *t)
{
    return atomic_load_explicit(&((vt_task *)t)->cold, memory_order_acquire);
}

/* Calls fn for every successor of t. */
#define VT__FOREACH_SUCC(t, s, body)                                      \
    do {                                                                  \
        unsigned vt__n_ = (t)->bits & VT__B_NINLINE;                      \
        for (unsigned vt__i_ = 0; vt__i_ < vt__n_; vt__i_++) {            \
            vt_task *s = (t)->succ[vt__i_];                               \
            body;                                                         \
        }                                                                 \
        if ((t)->bits & VT__B_MORE) {                                     \
            vt__cold *vt__c_ = vt__cold_peek(t);                          \
            for (uint32_t vt__i_ = 0; vt__i_ < vt__c_->nmore; vt__i_++) { \
                vt_task *s = vt__c_->more[vt__i_];                        \
                body;                                                     \
            }                                                             \
        }                                                                 \
    } while (0)

VT_INTERNAL void vt__graph_reset_run(vt_graph *g);
VT_INTERNAL vt_task *vt__graph_lookup(const vt_graph *g, const char *name);

/* exec.c */
VT_INTERNAL void vt__task_reprioritize(vt_task *t, int priority);
VT_INTERNAL int vt__task_state_raw(const vt_task *t);
VT_INTERNAL void vt__event_init(vt__run *x, vt_event *ev, vt_event_kind kind, vt_task *t,
                                unsigned attempt, char *nb);
VT_INTERNAL void vt__run_emit(vt__run *x, vt_event_kind kind, vt_task *t, unsigned attempt,
                              vt_err err, const char *msg);
VT_INTERNAL vt_task *vt__sub_new(vt_task *parent, const char *name, vt_task_fn fn, void *data,
                                 uint8_t bits, vt_err *err);

/* The context handed to a body (on the body's stack or fiber). */
struct vt_task_ctx {
    vt__run *x;
    vt_task *t;
    unsigned attempt;
    int worker;
};

#endif
