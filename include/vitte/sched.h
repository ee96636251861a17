/* vitte/sched.h — the work-stealing scheduler.
 *
 * A pool of worker threads. Each worker owns two deques:
 *  - a Chase–Lev deque of closure jobs (fn, arg), for vt_pool_submit;
 *  - a split deque of fork–join frames (Lace's design), for VT_SPAWN/VT_SYNC,
 *    on which a spawn and a sync that nobody stole cost no locked
 *    instruction and no allocation.
 * Threads that are not workers submit through an injection queue. An idle
 * worker steals from random victims, spins a bounded number of rounds, then
 * parks on a futex: an idle pool uses no CPU.
 *
 * Thread safety: every vt_pool_* and vt_timer_* call may be made from any
 * thread, workers included, unless its comment says otherwise. The VT_SPAWN,
 * VT_SYNC and VT_CALL macros are for task bodies only (see VT_TASK). */
#ifndef VITTE_SCHED_H
#define VITTE_SCHED_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "vitte/base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vt_pool vt_pool;

/* A closure job. arg is the caller's: vitte never reads or frees it. */
typedef void (*vt_job_fn)(void *arg);

#define VT_POOL_MAX_WORKERS 256
#define VT_PRIORITY_MAX_LEVELS 32

/* How a pool orders closure jobs. Fork–join frames are always work-first
 * (the spawning worker runs its newest frame; thieves take the oldest),
 * whatever the policy.
 *
 * VT_POLICY_LIFO  (default) each worker runs its own newest job first;
 *                 thieves take a victim's oldest. Jobs from non-workers enter
 *                 a FIFO injection queue. Best cache locality and throughput;
 *                 no ordering promise between jobs.
 * VT_POLICY_FIFO  one pool-wide queue: jobs are taken in submission order
 *                 (whoever submits them, workers or not), so with one worker
 *                 they start in that order, and with several no job starts
 *                 before every job submitted earlier has been taken. Costs a
 *                 short lock per submit and per take.
 * VT_POLICY_PRIORITY  one pool-wide queue per level (0 = lowest, the level
 *                 of vt_pool_submit); a worker takes the oldest job of the
 *                 highest non-empty level, unless some non-empty level has
 *                 been passed over starvation_limit times or more: then of
 *                 the level passed over most often (the higher on a tie).
 *                 So no level waits for ever: a non-empty level is served
 *                 within starvation_limit + levels picks. Within a level: FIFO.
 * VT_POLICY_FAIR  one pool-wide FIFO queue per group; workers serve the
 *                 groups with queued jobs in round robin, one job per group
 *                 per turn, so a group that floods the pool delays another
 *                 group's job by at most one job per other active group.
 *                 A job's group is vt_job_opts.group, or by default the
 *                 submitting thread (a job submitted from a job inherits the
 *                 group of the job that submitted it). */
typedef enum vt_policy {
    VT_POLICY_LIFO = 0,
    VT_POLICY_FIFO,
    VT_POLICY_PRIORITY,
    VT_POLICY_FAIR
} vt_policy;

/* Called once for each closure job that is discarded instead of run
 * (shutdown with VT_SHUTDOWN_CANCEL, pending timers at shutdown), so that the
 * owner of arg can release it. Runs on the thread that shuts the pool down. */
typedef void (*vt_cancel_fn)(void *ud, vt_job_fn fn, void *arg);

typedef struct vt_pool_opts {
    unsigned workers;          /* 0: vt_cpu_count(); at most VT_POOL_MAX_WORKERS */
    vt_policy policy;          /* VT_POLICY_LIFO */
    unsigned priority_levels;  /* PRIORITY: 1..VT_PRIORITY_MAX_LEVELS; 0: 4 */
    unsigned starvation_limit; /* PRIORITY: 1..1000000; 0: 16 */
    int deterministic;         /* 1: deterministic mode, see below */
    uint64_t seed;             /* deterministic mode's seed */
    uint32_t frames;           /* fork–join frames per worker, 0: 1Mi (64 MiB
                                  of address space, committed as touched);
                                  at least 64, at most 2^28 */
    unsigned spin_rounds;      /* steal rounds before parking; 0: 64 */
    const char *name;          /* thread names "<name>-<i>"; NULL: "vitte" */
    vt_cancel_fn on_cancel;    /* NULL: discarded jobs are dropped silently */
    void *on_cancel_ud;
    int no_guest;              /* 1: VT_RUN from a thread that is not a
                                  worker always queues the root and waits;
                                  0 (default): that thread runs the root
                                  itself as a guest worker while it waits
                                  (one such thread at a time; others queue) */
} vt_pool_opts;

/* Fills *opts with the defaults above (every field 0 or NULL). */
VT_API void vt_pool_opts_init(vt_pool_opts *opts);

/* Starts a pool. opts may be NULL for the defaults. On VT_OK *out is the
 * caller's, to be released with vt_pool_free. Errors: VT_EINVAL (NULL out, a
 * field out of range: workers > VT_POOL_MAX_WORKERS, an unknown policy, ...;
 * deterministic mode with workers other than 0 or 1), VT_ENOMEM,
 * VT_ESYSERR|errno (a thread could not be started).
 *
 * Deterministic mode: the pool has one worker and no thread of its own; its
 * jobs run on the thread that calls vt_pool_wait_idle, vt_pool_run_until,
 * vt_pool_shutdown or VT_RUN, which picks the next job among all ready ones
 * with a generator seeded by opts.seed, and whose clock (vt_pool_now) is
 * virtual: it starts at 0 and, when no job is ready, jumps to the earliest
 * timer. The same seed and the same program give the same order of
 * execution every time; timers fire without any real waiting. */
VT_API vt_err vt_pool_new(vt_pool **out, const vt_pool_opts *opts);

/* Shuts the pool down as vt_pool_shutdown(p, VT_SHUTDOWN_DRAIN, VT_FOREVER)
 * unless that was done already, joins its threads and frees it. p may be
 * NULL. Called from one of p's own workers it would wait for itself: it
 * logs an error and leaves the pool as it is. */
VT_API void vt_pool_free(vt_pool *p);

/* Queues fn(arg), to run once on some worker. On a LIFO pool, from one of
 * p's workers the job goes on that worker's own deque (no lock, no
 * allocation once the deque has grown); from any other thread, or on a pool
 * of another policy, it goes into the pool-wide queue. A parked worker is
 * woken when nobody is looking for work already.
 * Errors: VT_EINVAL (NULL p or fn), VT_ECLOSED (after shutdown began),
 * VT_ENOMEM (a queue had to grow and could not: the job was not queued). */
VT_API vt_err vt_pool_submit(vt_pool *p, vt_job_fn fn, void *arg);

typedef struct vt_job_opts {
    int priority;   /* PRIORITY: 0 .. levels-1, higher runs first */
    uint32_t group; /* FAIR: 0 = the submitter's group (see VT_POLICY_FAIR) */
} vt_job_opts;

/* As vt_pool_submit, with options that the pool's policy uses (and the
 * others ignore). opts may be NULL. Extra error: VT_ERANGE (priority outside
 * 0 .. levels-1 on a PRIORITY pool). */
VT_API vt_err vt_pool_submit_ex(vt_pool *p, vt_job_fn fn, void *arg, const vt_job_opts *opts);

/* From one of p's workers (LIFO pool): queues fn(arg) behind every job that
 * worker has queued, to run once it has nothing newer (a yield: the
 * caller's continuation goes to the back). Not stealable while it waits
 * unless other workers sleep (then it goes to the pool-wide queue).
 * Elsewhere, or on a pool of another policy, it is vt_pool_submit.
 * Errors: as vt_pool_submit. */
VT_API vt_err vt_pool_submit_later(vt_pool *p, vt_job_fn fn, void *arg);

/* For runtimes that switch stacks on the workers (async's fibers): from a
 * job running on a worker, takes the job that worker would run next from
 * its own queues (never steals, never waits) into *fn and *arg, counted as
 * run: the caller must run it now. Lets a fiber that suspends go straight
 * to the next fiber without returning to the worker loop. Returns 0 when
 * there is none, or when not called from a worker's job. */
VT_API int vt_worker_take(vt_job_fn *fn, void **arg);

/* Waits until the pool is quiet: no job queued or running, no timer
 * pending. Jobs may keep being submitted meanwhile; it returns at a moment
 * when none was left. deadline: absolute ns of vt_now_ns (of the virtual
 * clock in deterministic mode, where this call runs the jobs), VT_FOREVER or
 * VT_NOW. Errors: VT_EINVAL (NULL p), VT_ETIMEDOUT, VT_ESTATE (called from
 * one of p's workers: it would wait for itself). */
VT_API vt_err vt_pool_wait_idle(vt_pool *p, int64_t deadline);

typedef enum vt_shutdown_mode {
    /* Stop accepting jobs from outside the pool (and timers); run every job
     * already queued, and those that running jobs submit, until the pool is
     * quiet; then stop. Pending timers are cancelled (see on_cancel). */
    VT_SHUTDOWN_DRAIN = 0,
    /* Stop accepting jobs; discard the jobs not yet started (each reported
     * to opts.on_cancel); let the running ones finish; then stop. */
    VT_SHUTDOWN_CANCEL
} vt_shutdown_mode;

/* Stops the pool as mode says and joins its workers. Afterwards every
 * submission fails with VT_ECLOSED; statistics stay readable until vt_pool_free. A second
 * call returns VT_ECLOSED. deadline bounds the wait for running jobs: on
 * VT_ETIMEDOUT the pool is shut (no new job starts) but jobs still run;
 * vt_pool_free waits for them. Errors: VT_EINVAL, VT_ECLOSED, VT_ETIMEDOUT,
 * VT_ESTATE (called from one of p's workers). */
VT_API vt_err vt_pool_shutdown(vt_pool *p, vt_shutdown_mode mode, int64_t deadline);

/* Number of workers (1 in deterministic mode). */
VT_API unsigned vt_pool_workers(const vt_pool *p);

/* 1 when p runs in deterministic mode (0 for NULL). */
VT_API int vt_pool_is_deterministic(const vt_pool *p);
/* The seed of a deterministic pool (opts.seed), for layers above that draw
 * random numbers and must replay them; 0 for other pools and NULL. */
VT_API uint64_t vt_pool_seed(const vt_pool *p);

/* Workers looking for work or asleep right now (a relaxed snapshot, 0 for
 * NULL): for runtimes that keep ready work private, as a hint of when to
 * share it (vt_pool_submit it) so that idle workers can steal it. */
VT_API unsigned vt_pool_idle_workers(const vt_pool *p);
/* The pool whose worker (or guest, see VT_RUN) is the calling thread, or
 * NULL. */
VT_API vt_pool *vt_pool_current(void);
/* Index of the calling thread in its pool: 0 .. workers-1 for a worker,
 * workers for a thread running a VT_RUN root as a guest (see VT_RUN), -1
 * elsewhere. Per-thread arrays indexed by it need vt_pool_workers(p) + 1
 * entries. */
VT_API int vt_worker_index(void);

/* The pool's clock in ns: vt_now_ns(), or the virtual clock in deterministic
 * mode. Timer deadlines are in this clock. */
VT_API int64_t vt_pool_now(const vt_pool *p);

/* Deterministic mode only: runs jobs and timers on the calling thread until
 * the virtual clock reaches `until` (or the pool is quiet, if until is
 * VT_FOREVER). Errors: VT_EINVAL (NULL p), VT_ENOTSUP (not deterministic),
 * VT_ESTATE (called from a job). */
VT_API vt_err vt_pool_run_until(vt_pool *p, int64_t until);

/* ---- Timers ----------------------------------------------------------------
 * A timer queues fn(arg) as a closure job once the pool's clock reaches its
 * deadline: never before, and timers fire in deadline order (equal deadlines:
 * in the order they were started). A hierarchical timing wheel keeps insert
 * and cancel O(1). */
typedef struct vt_timer {
    uint64_t id; /* 0 is never a valid timer */
} vt_timer;

/* Starts a timer for the absolute deadline (pool clock; a deadline in the
 * past fires at once). *out (may be NULL) receives its handle.
 * Errors: VT_EINVAL (NULL p or fn), VT_ECLOSED (shut down), VT_ENOMEM. */
VT_API vt_err vt_pool_submit_at(vt_pool *p, int64_t deadline, vt_job_fn fn, void *arg,
                                vt_timer *out);
/* As vt_pool_submit_at(p, vt_pool_now(p) + delay_ns, ...); delay_ns >= 0,
 * else VT_EINVAL. */
VT_API vt_err vt_pool_submit_after(vt_pool *p, int64_t delay_ns, vt_job_fn fn, void *arg,
                                   vt_timer *out);
/* Cancels a timer that has not fired: its job will not be queued. Errors:
 * VT_EINVAL (NULL p), VT_ENOENT (it fired already, was cancelled already, or
 * never existed: handles are generation-checked, so a stale one is safe). */
VT_API vt_err vt_timer_cancel(vt_pool *p, vt_timer t);

/* ---- Metrics ---------------------------------------------------------------
 * Counted by each worker in its own cache line, without locked instructions:
 * always on. Reads are snapshots taken while the pool runs. */
typedef struct vt_worker_metrics {
    uint64_t executed;       /* closure jobs and stolen frames run */
    uint64_t stolen;         /* successful steals (jobs and frames) */
    uint64_t received;       /* jobs received in batches from busy workers */
    uint64_t steal_attempts; /* victims probed */
    uint64_t parks;          /* times the worker went to sleep */
    uint64_t idle_ns;        /* time spent searching and parked */
    uint64_t queue_depth;    /* closure jobs in its deque now */
} vt_worker_metrics;

typedef struct vt_pool_metrics {
    unsigned workers;
    vt_worker_metrics total;   /* the sum over workers */
    uint64_t injected;         /* jobs submitted by non-workers */
    uint64_t inject_depth;     /* jobs waiting in the pool-wide queue now (the
                                  injection queue of LIFO, the queue of the
                                  other policies, the ready jobs of a
                                  deterministic pool) */
    uint64_t timers_pending;
    uint64_t timers_fired;
    uint64_t cancelled;        /* jobs discarded at shutdown */
} vt_pool_metrics;

/* Fills *out, and per_worker[0 .. min(n, workers)-1] if per_worker is not
 * NULL. Errors: VT_EINVAL (NULL p or out). */
VT_API vt_err vt_pool_metrics_get(vt_pool *p, vt_pool_metrics *out, vt_worker_metrics *per_worker,
                                  size_t n);
/* Writes a readable table of the metrics to f (one row per worker and a
 * total). Errors: VT_EINVAL. */
VT_API vt_err vt_pool_metrics_print(vt_pool *p, FILE *f);

/* ---- Fork–join -------------------------------------------------------------
 * A task is a function whose calls can be spawned: VT_SPAWN queues a call on
 * the worker's own deque and returns at once; VT_SYNC returns its result,
 * running it inline if nobody stole it, else helping the thief (stealing
 * back from it) until it finishes. Spawns and syncs pair up like brackets:
 * VT_SYNC completes the most recent VT_SPAWN not yet synced, of the same
 * task. VT_CALL is a plain call that keeps the fork–join context.
 *
 *     VT_TASK(long, fib, int, n)
 *     {
 *         if (n < 2) return n;
 *         VT_SPAWN(fib, n - 1);
 *         long b = VT_CALL(fib, n - 2);
 *         long a = VT_SYNC(fib);
 *         return a + b;
 *     }
 *     ...
 *     long r;
 *     vt_err e = VT_RUN(pool, fib, &r, 30);
 *
 * VT_TASK(R, name, T1, a1, ..., T4, a4): up to four parameters, whose total
 * size (and the result's) fits VT_FRAME_DATA bytes. VT_VOID_TASK(name, ...)
 * for tasks without a result. A task is static to its file.
 *
 * VT_RUN(pool, name, result_ptr, args...) runs a task to completion on the
 * pool and stores its result (result_ptr may be NULL); it returns vt_err:
 * VT_EINVAL (NULL pool), VT_ECLOSED (pool shut down). From a plain thread it
 * returns when the task is done: that thread runs the root itself as a
 * guest worker whose spawns the workers steal (unless opts.no_guest, or
 * another thread is the guest already: then it queues the root and
 * sleeps). From a job of the same pool it runs inline. It must not be
 * called from inside a task body: use VT_CALL there.
 *
 * A worker that runs out of frames (opts.frames spawns pending at once on
 * one worker) aborts the process with a message naming that limit, as a
 * stack overflow would. */
#define VT_FRAME_DATA 48

typedef struct vt__worker vt__worker;
typedef struct vt__frame vt__frame;

struct vt__frame {
    void (*run)(vt__worker *w, vt__frame *head, vt__frame *self);
    _Atomic(uintptr_t) thief; /* VT__THIEF_*, or the thief's worker address */
    union {
        unsigned char bytes[VT_FRAME_DATA];
        void *align_p;
        long double align_ld;
        uint64_t align_u;
    } d;
};

/* A frame's thief is EMPTY until a thief claims it and writes its own
 * address there, then DONE when it finished; the owner sets it back to
 * EMPTY after syncing a stolen frame. Frames start zeroed, so a spawn never
 * has to write it. */
#define VT__THIEF_EMPTY ((uintptr_t)0)
#define VT__THIEF_DONE ((uintptr_t)2)

/* The part of a worker's fork–join state that thieves touch. ts packs the
 * index of the oldest unstolen frame (tail, low 32 bits) and of the first
 * private frame (split, high 32 bits) so that one CAS claims a frame. */
typedef struct vt__fj_shared {
    VT_CACHE_ALIGNED _Atomic uint64_t ts;
    vt__frame *dq; /* frame 0, read-only: thieves find it on ts's line */
} vt__fj_shared;

/* The owner's view; the library's worker begins with this. movesplit,
 * which thieves set to ask for more shared frames, sits on the same line as
 * the owner's fields: the owner reads it at every spawn and sync, and a
 * thief's write costs that line one miss wherever the flag lives. */
struct vt__worker {
    vt__frame *split;  /* frames at and above split are private */
    vt__frame *dq;     /* frame 0 */
    vt__frame *end;    /* one past the last frame */
    vt__fj_shared *shared;
    uint32_t allstolen; /* every shared frame is stolen (owner's copy) */
    _Atomic uint32_t movesplit;
};

VT_API void vt__fj_spawn_slow(vt__worker *w, vt__frame *head);
/* Returns 1 when the frame at head was stolen and has completed (its result
 * is in the frame), 0 when it is private again and the caller runs it. */
VT_API int vt__fj_sync_slow(vt__worker *w, vt__frame *head);
VT_API void vt__fj_overflow(vt__worker *w) __attribute__((noreturn));
VT_API vt_err vt__fj_run_root(vt_pool *p, vt__frame *root);

static inline void vt__fj_publish(vt__worker *w, vt__frame *head)
{
    if (VT_UNLIKELY(w->allstolen | atomic_load_explicit(&w->movesplit, memory_order_relaxed)))
        vt__fj_spawn_slow(w, head);
}

/* A frame at or above split is private: nobody can have stolen it. (A
 * thief's request for more is answered at the next spawn, which every
 * sync follows soon enough.) */
static inline int vt__fj_is_private(vt__worker *w, vt__frame *head)
{
    return VT_LIKELY(w->split <= head);
}

/* Parameter-list helpers over (T1, a1, T2, a2, ...) pairs. VT__NPAIRS(x, ...)
 * counts the pairs after a leading dummy, (x) -> 0, (x, T, a) -> 1, ...: the
 * dummy keeps the list non-empty when a task has no parameter. */
#define VT__NPAIRS(...) VT__NPAIRS_(__VA_ARGS__, x, 4, x, 3, x, 2, x, 1, x, 0)
#define VT__NPAIRS_(_0, _1, _2, _3, _4, _5, _6, _7, _8, _9, N, ...) N
#define VT__CAT(a, b) VT__CAT_(a, b)
#define VT__CAT_(a, b) a##b

#define VT__PARAMS_0(...)
#define VT__PARAMS_1(T1, a1) , T1 a1
#define VT__PARAMS_2(T1, a1, T2, a2) , T1 a1, T2 a2
#define VT__PARAMS_3(T1, a1, T2, a2, T3, a3) , T1 a1, T2 a2, T3 a3
#define VT__PARAMS_4(T1, a1, T2, a2, T3, a3, T4, a4) , T1 a1, T2 a2, T3 a3, T4 a4
#define VT__FIELDS_0(...)
#define VT__FIELDS_1(T1, a1) T1 a1;
#define VT__FIELDS_2(T1, a1, T2, a2) T1 a1; T2 a2;
#define VT__FIELDS_3(T1, a1, T2, a2, T3, a3) T1 a1; T2 a2; T3 a3;
#define VT__FIELDS_4(T1, a1, T2, a2, T3, a3, T4, a4) T1 a1; T2 a2; T3 a3; T4 a4;
#define VT__STORE_0(t, ...)
#define VT__STORE_1(t, T1, a1) (t)->d.args.a1 = a1;
#define VT__STORE_2(t, T1, a1, T2, a2) VT__STORE_1(t, T1, a1)(t)->d.args.a2 = a2;
#define VT__STORE_3(t, T1, a1, T2, a2, T3, a3) VT__STORE_2(t, T1, a1, T2, a2)(t)->d.args.a3 = a3;
#define VT__STORE_4(t, T1, a1, T2, a2, T3, a3, T4, a4)                                             \
    VT__STORE_3(t, T1, a1, T2, a2, T3, a3)(t)->d.args.a4 = a4;
#define VT__LOAD_0(t, ...)
#define VT__LOAD_1(t, T1, a1) , (t)->d.args.a1
#define VT__LOAD_2(t, T1, a1, T2, a2) VT__LOAD_1(t, T1, a1), (t)->d.args.a2
#define VT__LOAD_3(t, T1, a1, T2, a2, T3, a3) VT__LOAD_2(t, T1, a1, T2, a2), (t)->d.args.a3
#define VT__LOAD_4(t, T1, a1, T2, a2, T3, a3, T4, a4)                                              \
    VT__LOAD_3(t, T1, a1, T2, a2, T3, a3), (t)->d.args.a4

#define VT__PARAMS(...) VT__CAT(VT__PARAMS_, VT__NPAIRS(x, ##__VA_ARGS__))(__VA_ARGS__)
#define VT__FIELDS(...) VT__CAT(VT__FIELDS_, VT__NPAIRS(x, ##__VA_ARGS__))(__VA_ARGS__)
#define VT__STORE(t, ...) VT__CAT(VT__STORE_, VT__NPAIRS(x, ##__VA_ARGS__))(t, ##__VA_ARGS__)
#define VT__LOAD(t, ...) VT__CAT(VT__LOAD_, VT__NPAIRS(x, ##__VA_ARGS__))(t, ##__VA_ARGS__)


#define VT__TASK_SPAWN(name, ...)                                                                  \
    static inline __attribute__((unused)) void vt__fj_spawn_##name(                                \
        vt__worker *w, vt__frame *head VT__PARAMS(__VA_ARGS__))                                    \
    {                                                                                              \
        if (VT_UNLIKELY(head == w->end))                                                           \
            vt__fj_overflow(w);                                                                    \
        vt__fj_td_##name *t = (vt__fj_td_##name *)head;                                            \
        t->run = vt__fj_run_##name;                                                                \
        VT__STORE(t, ##__VA_ARGS__)                                                                \
        vt__fj_publish(w, head);                                                                   \
    }

/* Typed tasks. */
#define VT_TASK(R, name, ...)                                                                      \
    static R vt__fj_call_##name(vt__worker *vt__w, vt__frame *vt__head VT__PARAMS(__VA_ARGS__));  \
    typedef struct vt__fj_td_##name {                                                              \
        void (*run)(vt__worker *, vt__frame *, vt__frame *);                                       \
        _Atomic(uintptr_t) thief;                                                                  \
        union {                                                                                    \
            struct {                                                                               \
                char vt__pad;                                                                      \
                VT__FIELDS(__VA_ARGS__)                                                            \
            } args;                                                                                \
            R res;                                                                                 \
        } d;                                                                                       \
    } vt__fj_td_##name;                                                                            \
    _Static_assert(sizeof(vt__fj_td_##name) <= sizeof(vt__frame),                                  \
                   "task " #name ": arguments or result exceed VT_FRAME_DATA bytes");              \
    static void vt__fj_run_##name(vt__worker *w, vt__frame *head, vt__frame *f)                    \
    {                                                                                              \
        vt__fj_td_##name *t = (vt__fj_td_##name *)f;                                               \
        t->d.res = vt__fj_call_##name(w, head VT__LOAD(t, ##__VA_ARGS__));                         \
    }                                                                                              \
    VT__TASK_SPAWN(name, ##__VA_ARGS__)                                                            \
    static __attribute__((noinline, unused)) R vt__fj_sync_slow_##name(vt__worker *w,             \
                                                                       vt__frame *head)            \
    {                                                                                              \
        vt__fj_td_##name *t = (vt__fj_td_##name *)head;                                            \
        if (vt__fj_sync_slow(w, head))                                                             \
            return t->d.res;                                                                       \
        return vt__fj_call_##name(w, head VT__LOAD(t, ##__VA_ARGS__));                             \
    }                                                                                              \
    static inline __attribute__((unused)) R vt__fj_sync_##name(vt__worker *w, vt__frame *head)    \
    {                                                                                              \
        if (vt__fj_is_private(w, head)) {                                                          \
            vt__fj_td_##name *t __attribute__((unused)) = (vt__fj_td_##name *)head;                \
            return vt__fj_call_##name(w, head VT__LOAD(t, ##__VA_ARGS__));                         \
        }                                                                                          \
        return vt__fj_sync_slow_##name(w, head);                                                   \
    }                                                                                              \
    static __attribute__((unused)) vt_err vt__fj_root_##name(vt_pool *p,                           \
                                                             R *res VT__PARAMS(__VA_ARGS__))       \
    {                                                                                              \
        vt__fj_td_##name f;                                                                        \
        f.run = vt__fj_run_##name;                                                                 \
        atomic_init(&f.thief, VT__THIEF_EMPTY);                                                     \
        VT__STORE(&f, ##__VA_ARGS__)                                                               \
        vt_err e = vt__fj_run_root(p, (vt__frame *)&f);                                            \
        if (e == VT_OK && res)                                                                     \
            *res = f.d.res;                                                                        \
        return e;                                                                                  \
    }                                                                                              \
    static R vt__fj_call_##name(vt__worker *vt__w __attribute__((unused)),                         \
                                vt__frame *vt__head __attribute__((unused)) VT__PARAMS(__VA_ARGS__))

/* Tasks without a result: VT_SYNC(name) is then a statement. */
#define VT_VOID_TASK(name, ...)                                                                    \
    static void vt__fj_call_##name(vt__worker *vt__w, vt__frame *vt__head VT__PARAMS(__VA_ARGS__)); \
    typedef struct vt__fj_td_##name {                                                              \
        void (*run)(vt__worker *, vt__frame *, vt__frame *);                                       \
        _Atomic(uintptr_t) thief;                                                                  \
        union {                                                                                    \
            struct {                                                                               \
                char vt__pad;                                                                      \
                VT__FIELDS(__VA_ARGS__)                                                            \
            } args;                                                                                \
        } d;                                                                                       \
    } vt__fj_td_##name;                                                                            \
    _Static_assert(sizeof(vt__fj_td_##name) <= sizeof(vt__frame),                                  \
                   "task " #name ": arguments exceed VT_FRAME_DATA bytes");                        \
    static void vt__fj_run_##name(vt__worker *w, vt__frame *head, vt__frame *f)                    \
    {                                                                                              \
        vt__fj_td_##name *t __attribute__((unused)) = (vt__fj_td_##name *)f;                       \
        vt__fj_call_##name(w, head VT__LOAD(t, ##__VA_ARGS__));                                    \
    }                                                                                              \
    VT__TASK_SPAWN(name, ##__VA_ARGS__)                                                            \
    static __attribute__((noinline, unused)) void vt__fj_sync_slow_##name(vt__worker *w,          \
                                                                          vt__frame *head)         \
    {                                                                                              \
        vt__fj_td_##name *t __attribute__((unused)) = (vt__fj_td_##name *)head;                    \
        if (!vt__fj_sync_slow(w, head))                                                            \
            vt__fj_call_##name(w, head VT__LOAD(t, ##__VA_ARGS__));                                \
    }                                                                                              \
    static inline __attribute__((unused)) void vt__fj_sync_##name(vt__worker *w, vt__frame *head) \
    {                                                                                              \
        if (vt__fj_is_private(w, head)) {                                                          \
            vt__fj_td_##name *t __attribute__((unused)) = (vt__fj_td_##name *)head;                \
            vt__fj_call_##name(w, head VT__LOAD(t, ##__VA_ARGS__));                                \
            return;                                                                                \
        }                                                                                          \
        vt__fj_sync_slow_##name(w, head);                                                          \
    }                                                                                              \
    static __attribute__((unused)) vt_err vt__fj_root_##name(vt_pool *p,                           \
                                                             void *unused VT__PARAMS(__VA_ARGS__)) \
    {                                                                                              \
        (void)unused;                                                                              \
        vt__fj_td_##name f;                                                                        \
        f.run = vt__fj_run_##name;                                                                 \
        atomic_init(&f.thief, VT__THIEF_EMPTY);                                                     \
        VT__STORE(&f, ##__VA_ARGS__)                                                               \
        return vt__fj_run_root(p, (vt__frame *)&f);                                                \
    }                                                                                              \
    static void vt__fj_call_##name(vt__worker *vt__w __attribute__((unused)),                      \
                                   vt__frame *vt__head __attribute__((unused)) VT__PARAMS(__VA_ARGS__))

#define VT_SPAWN(name, ...) (vt__fj_spawn_##name(vt__w, vt__head, ##__VA_ARGS__), (void)vt__head++)
#define VT_SYNC(name) (vt__head--, vt__fj_sync_##name(vt__w, vt__head))
#define VT_CALL(name, ...) vt__fj_call_##name(vt__w, vt__head, ##__VA_ARGS__)
#define VT_RUN(pool, name, result_ptr, ...) vt__fj_root_##name((pool), (result_ptr), ##__VA_ARGS__)

#ifdef __cplusplus
}
#endif
#endif
