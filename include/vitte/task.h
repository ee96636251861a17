/* vitte/task.h — task graphs: named tasks with dependencies, run in parallel.
 *
 * A graph holds tasks (a body and its data) and the edges between them. It
 * is built, validated (unknown names, duplicates and cycles are errors
 * before anything runs), then run on a runtime's workers: each task starts
 * once every task it depends on has succeeded. A graph can be run again.
 *
 *     vt_graph *g;
 *     vt_graph_new(&g, "build");
 *     vt_task *cc = vt_task_add(g, "compile", compile, NULL);
 *     vt_task *ld = vt_task_add(g, "link", link, NULL);
 *     vt_task_precede(cc, ld);                 // link after compile
 *     vt_err e = vt_graph_run(g, rt, NULL);    // VT_OK: every task succeeded
 *     vt_graph_free(g);
 *
 * Lifecycle of a task in a run:
 *
 *     PENDING -> READY -> RUNNING -> SUCCEEDED
 *                           |  ^  -> FAILED     (its body failed, retries spent)
 *                           v  |  -> CANCELLED  (the run, or its group, was cancelled)
 *                         (retry wait)
 *     PENDING -> SKIPPED    (a task it depends on failed, was cancelled or skipped)
 *     PENDING -> CANCELLED  (the run stopped before it could start)
 *
 * Bodies are plain functions run on a worker, or (vt_task_add_async) fibers
 * that may block on channels, sleeps and IO without holding a worker.
 *
 * Thread safety: building a graph (vt_task_add, vt_task_precede, the
 * setters but vt_task_set_priority) is for one thread at a time and not
 * while the graph runs (VT_EBUSY). vt_task_set_priority, vt_graph_cancel,
 * vt_group_cancel and the readers (state, summary) may be called from any
 * thread at any time. Context calls (vt_ctx_*) are for the task's own body. */
#ifndef VITTE_TASK_H
#define VITTE_TASK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "vitte/async.h"
#include "vitte/base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vt_graph vt_graph;
typedef struct vt_task vt_task;
typedef struct vt_group vt_group;
typedef struct vt_task_ctx vt_task_ctx;
typedef struct vt_store vt_store;
typedef struct vt_monitor vt_monitor;

/* A task's body. VT_OK is success; any other code is a failure (retried as
 * the task's policy says). vt_ctx_fail returns VT_EFAILED with a message. */
typedef vt_err (*vt_task_fn)(vt_task_ctx *ctx, void *data);

typedef enum vt_task_state {
    VT_TASK_PENDING, /* waiting for its dependencies (or a retry) */
    VT_TASK_READY,   /* dependencies done, waiting for a worker */
    VT_TASK_RUNNING, /* its body runs, or it waits for its subtasks */
    VT_TASK_SUCCEEDED,
    VT_TASK_FAILED,
    VT_TASK_CANCELLED,
    VT_TASK_SKIPPED
} vt_task_state;
#define VT_TASK_STATES 7

/* "pending", "ready", ... ("?" for a value out of range). Static. */
VT_API const char *vt_task_state_name(vt_task_state s);
/* The X11 colour name DOT export fills a task in state s with ("white" when
 * pending, and out of range), so that every view of a graph (flow's, a live view) colours
 * states alike. Static. */
VT_API const char *vt_task_state_colour(vt_task_state s);

/* ---- Graphs ------------------------------------------------------------------ */

/* A new empty graph. name (copied; NULL: "graph") names it in traces, DOT
 * and the store's history. On VT_OK *out is the caller's, to be released
 * with vt_graph_free. Errors: VT_EINVAL (NULL out), VT_ENOMEM. */
VT_API vt_err vt_graph_new(vt_graph **out, const char *name);

/* Frees the graph, its tasks and everything a run left (results, logs,
 * subtasks). g may be NULL. Must not be called while g runs: it logs an
 * error and waits for the run to end first. */
VT_API void vt_graph_free(vt_graph *g);

VT_API const char *vt_graph_name(const vt_graph *g);

/* Tasks added with vt_task_add* (subtasks not counted). */
VT_API size_t vt_graph_size(const vt_graph *g);

/* The message of the last error on g: a building error, a validation
 * error ("cycle: a -> b -> c -> a"), why a run failed ("task \"x\" failed:
 * ..."). "" when there was none. Valid until the next call on g. */
VT_API const char *vt_graph_error(const vt_graph *g);

/* The task named name, or NULL (unknown name, NULL arguments). "#<n>"
 * finds the unnamed task n; subtasks of the last run are found by their
 * full name "parent/child" (the latest, if an attempt was retried). */
VT_API vt_task *vt_graph_find(vt_graph *g, const char *name);

/* Checks the graph: every dependency by name resolves, no two tasks share
 * a name, no cycle. Runs do it themselves; calling it first gets the error
 * without starting anything. Errors: the first error of building (a NULL
 * body, a self-dependency ...: building calls record it, see vt_task_add),
 * VT_ENOENT (unknown dependency name), VT_EEXIST (duplicate name),
 * VT_ECYCLE (message: the cycle, "a -> b -> a"), VT_EBUSY (g runs). The
 * message is vt_graph_error(g). */
VT_API vt_err vt_graph_validate(vt_graph *g);

/* ---- Tasks ---------------------------------------------------------------------
 * Building calls never leave a graph half-changed, and the first one that
 * fails is remembered: vt_graph_validate and every run return it, so a
 * graph built without checking each call still reports the first mistake
 * (with its message in vt_graph_error). A call refused with VT_EBUSY
 * because the graph runs is the exception: it changed nothing and is not
 * remembered. */

/* Adds a task with body fn(ctx, data). name is copied; NULL leaves the task
 * unnamed (shown as "#<n>", n its order of addition from 0; it cannot be a
 * dependency by name). Returns the task, owned by g, or NULL on error:
 * VT_EINVAL (NULL g or fn; a name that is empty or holds '/'),
 * VT_ENOMEM, VT_EBUSY (g runs). */
VT_API vt_task *vt_task_add(vt_graph *g, const char *name, vt_task_fn fn, void *data);

/* As vt_task_add, the body running as a fiber of the run's runtime: it may
 * block (channels, vt_sleep_*, IO, locks) without holding a worker, and is
 * cancelled (its blocking calls return VT_ECANCELED) when its run, its group
 * or its timeout cancels it. */
VT_API vt_task *vt_task_add_async(vt_graph *g, const char *name, vt_task_fn fn, void *data);

/* after runs only once before has succeeded. Both of one graph; adding an
 * edge twice is harmless. Errors: VT_EINVAL (NULL, tasks of different
 * graphs, before == after: a task cannot depend on itself), VT_ENOMEM,
 * VT_EBUSY (the graph runs; see vt_ctx_add for subtasks). */
VT_API vt_err vt_task_precede(vt_task *before, vt_task *after);

/* t runs only once the task named dep has succeeded; the name is resolved
 * when the graph is validated (VT_ENOENT then if no task has it). Errors:
 * VT_EINVAL (NULL, empty name, t's own name), VT_ENOMEM, VT_EBUSY. */
VT_API vt_err vt_task_depend(vt_task *t, const char *dep);

/* Higher runs first among ready tasks. Any thread, any time, also while the
 * graph runs: a ready task waiting for a worker moves to its new place.
 * A run whose tasks all have priority 0 when it starts uses a faster
 * scheduler that ignores priorities until it ends, unless its options ask
 * for priorities (vt_run_opts.priorities). Errors: VT_EINVAL, VT_ERANGE
 * (outside VT_PRIORITY_MIN .. VT_PRIORITY_MAX). */
#define VT_PRIORITY_MIN (-32768)
#define VT_PRIORITY_MAX 32767
VT_API vt_err vt_task_set_priority(vt_task *t, int priority);
VT_API int vt_task_priority(const vt_task *t);

typedef enum vt_backoff {
    VT_BACKOFF_FIXED,      /* delay_ns before every retry */
    VT_BACKOFF_EXPONENTIAL /* delay_ns, then doubled each retry up to max_delay_ns */
} vt_backoff;

typedef struct vt_retry {
    unsigned max_attempts; /* runs of the body at most, the first included
                              (1: no retry); 1 .. 1000 */
    vt_backoff backoff;
    int64_t delay_ns;     /* 0 .. 1 day */
    int64_t max_delay_ns; /* EXPONENTIAL's cap; 0: no cap but 1 day */
    double jitter;        /* 0 .. 1: each delay is scaled by a random factor
                             in [1 - jitter, 1 + jitter] (seeded by the pool's
                             seed in deterministic mode) */
} vt_retry;

/* The retry policy of t; NULL: no retry (the default). A failure is
 * retried unless it is VT_ECANCELED from a cancelled run or group. Errors:
 * VT_EINVAL (NULL t, a field out of range), VT_EBUSY (the graph runs). */
VT_API vt_err vt_task_set_retry(vt_task *t, const vt_retry *policy);

/* Each attempt of t's body may run timeout_ns at most (0: no limit; the
 * time its subtasks take afterwards is not counted). At the
 * deadline an async task is cancelled and a sync one is reported (a
 * VT_EV_TIMEOUT event; vt_ctx_cancelled turns true so that a body that
 * checks it can stop early); either way the attempt fails with
 * VT_ETIMEDOUT, and is retried as the policy says. Errors: VT_EINVAL
 * (NULL, negative), VT_EBUSY. */
VT_API vt_err vt_task_set_timeout(vt_task *t, int64_t timeout_ns);

/* A key for the inputs of t (say a hash of its input files and command),
 * copied (at most VT_FINGERPRINT_MAX bytes). A run resumed from a store
 * skips t when t succeeded in that run with the same key; without a key, t
 * is skipped when it succeeded at all. Errors: VT_EINVAL (NULL t, NULL key
 * with len > 0, len too big), VT_ENOMEM, VT_EBUSY. */
#define VT_FINGERPRINT_MAX 256
VT_API vt_err vt_task_set_fingerprint(vt_task *t, const void *key, size_t len);

/* Groups: tasks that can be cancelled together. vt_graph_group returns the
 * group of that name, created at the first call (NULL on VT_ENOMEM or a
 * NULL/empty argument); a task is in one group at most. Subtasks are in
 * their parent's group. */
VT_API vt_group *vt_graph_group(vt_graph *g, const char *name);
/* Errors: VT_EINVAL (NULL, a group of another graph), VT_EEXIST (t is in
 * another group already; setting the same group again is VT_OK), VT_ENOMEM,
 * VT_EBUSY. */
VT_API vt_err vt_task_set_group(vt_task *t, vt_group *grp);
/* During a run: the group's tasks that have not started end CANCELLED (and
 * their dependants SKIPPED), running async ones are cancelled, running sync
 * ones see vt_ctx_cancelled. Other tasks go on. Outside a run: nothing to
 * do, VT_OK. It lasts until the end of the run. Thread: any. */
VT_API vt_err vt_group_cancel(vt_group *grp);

VT_API const char *vt_task_name(const vt_task *t); /* "#<n>" when unnamed */
VT_API vt_graph *vt_task_graph(const vt_task *t);

/* ---- Results of the current or last run --------------------------------------- */

/* The state of t in the current or last run (PENDING before any run).
 * Thread: any. */
VT_API vt_task_state vt_task_state_get(const vt_task *t);
/* Why t failed or was cancelled: the code its body returned (VT_ETIMEDOUT,
 * VT_ECANCELED ...) and, in *msg (may be NULL), a message ("" when none).
 * VT_OK for a task that did not fail; a SKIPPED one has VT_OK and the
 * message "a dependency did not succeed". Valid until the next run or
 * free. */
VT_API vt_err vt_task_error(const vt_task *t, const char **msg);
/* Body runs in the last run (0 if it did not run, or was restored). */
VT_API unsigned vt_task_attempts(const vt_task *t);
/* 1 when the last run did not run t but took its success from the store. */
VT_API int vt_task_restored(const vt_task *t);
/* The result blob t set with vt_ctx_set_result (or restored from the
 * store). VT_ENOENT when it has none. *data stays valid until the next run
 * or free. */
VT_API vt_err vt_task_result(const vt_task *t, const void **data, size_t *len);
/* The lines t logged with vt_ctx_log in the last run, oldest first, one per
 * line ("" when none); the oldest are dropped beyond 64 KiB per task. */
VT_API const char *vt_task_log(const vt_task *t);

/* ---- Runs -------------------------------------------------------------------------- */

typedef enum vt_failure_mode {
    VT_FAIL_FAST, /* at the first failure: start nothing more, cancel what runs */
    VT_KEEP_GOING /* run everything that does not depend on a failure */
} vt_failure_mode;

typedef struct vt_run_opts {
    vt_failure_mode on_failure; /* VT_FAIL_FAST */
    vt_store *store;            /* NULL: nothing recorded. Else every finished
                                   task is recorded, in batches, and a run id
                                   seen before resumes (see vt_store_open) */
    const char *run_id;         /* with a store: the run's id (copied, at most
                                   VT_RUN_ID_MAX - 1 bytes); NULL: a new id,
                                   see vt_graph_run_id */
    vt_monitor *monitor;        /* NULL: no events */
    int priorities;             /* 1: honour priority changes even when every
                                   task starts at priority 0 */
} vt_run_opts;
#define VT_RUN_ID_MAX 64

typedef struct vt_run_summary {
    size_t total;     /* tasks of the run, subtasks included */
    size_t succeeded; /* restored ones included */
    size_t restored;  /* taken from the store without running */
    size_t failed;
    size_t cancelled;
    size_t skipped;
    size_t retries;     /* attempts beyond the first, over all tasks */
    int64_t started_ns; /* vt_now_ns (or the virtual clock) at start */
    int64_t ended_ns;   /* 0 while running */
} vt_run_summary;

/* Starts a run of g on rt's workers and returns at once. Validates g first
 * (the errors of vt_graph_validate). The tasks' states and results of the
 * previous run are dropped, as are its subtasks. Thread: any (a body of g
 * itself: VT_EBUSY). Errors: VT_EINVAL (NULL g or rt, bad opts), VT_EBUSY
 * (g runs already), VT_ECLOSED (rt shut down), VT_ENOMEM, store errors. */
VT_API vt_err vt_graph_start(vt_graph *g, vt_runtime *rt, const vt_run_opts *opts);

/* Waits for the run to end: every task finished, its records committed to
 * the store and its events delivered to the monitor's subscribers. A run
 * ends in this call (as a thread ends in pthread_join): until one
 * vt_graph_wait has returned its result, g counts as running.
 * Returns VT_OK when every task succeeded, VT_EFAILED when some failed,
 * were skipped or were cancelled with their group (vt_graph_error names
 * the first failure), VT_ECANCELED when
 * the run was cancelled (vt_graph_cancel), VT_ETIMEDOUT (still running), or
 * the error of writing to the store (the run itself finished). A graph
 * that never ran: VT_ESTATE. On a deterministic runtime the calling thread
 * runs the tasks. Thread: any but a body of g's run (VT_EDEADLK). */
VT_API vt_err vt_graph_wait(vt_graph *g, int64_t deadline);

/* vt_graph_start, then vt_graph_wait(g, VT_FOREVER). */
VT_API vt_err vt_graph_run(vt_graph *g, vt_runtime *rt, const vt_run_opts *opts);

/* Stops the run: nothing more starts (tasks not started end CANCELLED),
 * async tasks that run are cancelled, sync ones see vt_ctx_cancelled.
 * Returns at once (wait with vt_graph_wait). Not running: VT_OK, nothing
 * done. Thread: any. */
VT_API vt_err vt_graph_cancel(vt_graph *g);

/* Counts of the current or last run (before any run: total is the number
 * of tasks, the rest 0). Thread: any. Errors: VT_EINVAL. */
VT_API vt_err vt_graph_summary(const vt_graph *g, vt_run_summary *out);

/* The current or last run's id ("" before any run with a store). */
VT_API const char *vt_graph_run_id(const vt_graph *g);

/* ---- Inside a task's body ---------------------------------------------------------- */

VT_API vt_task *vt_ctx_task(vt_task_ctx *ctx);
/* 1..max_attempts: which attempt of the body this is. */
VT_API unsigned vt_ctx_attempt(vt_task_ctx *ctx);
/* The worker running the body (vt_worker_index). */
VT_API int vt_ctx_worker(vt_task_ctx *ctx);
/* 1 once the run or the task's group was cancelled, or its timeout passed:
 * a long sync body should check it and return VT_ECANCELED. */
VT_API int vt_ctx_cancelled(vt_task_ctx *ctx);
/* Reports progress in [0, 1] to the monitor (a VT_EV_PROGRESS event). */
VT_API void vt_ctx_progress(vt_task_ctx *ctx, double fraction);
/* Appends a line to the task's log (vt_task_log) and sends it to the
 * monitor (VT_EV_LOG); it also goes to vt_log at level if that is enabled. */
VT_API void vt_ctx_log(vt_task_ctx *ctx, vt_log_level level, const char *fmt, ...) VT_PRINTF(3, 4);
/* Records why the task fails and returns VT_EFAILED, for
 * `return vt_ctx_fail(ctx, "no such file %s", path);`. */
VT_API vt_err vt_ctx_fail(vt_task_ctx *ctx, const char *fmt, ...) VT_PRINTF(2, 3);
/* Sets the task's result blob (copied; at most VT_RESULT_MAX bytes),
 * recorded in the store with its success. Errors: VT_EINVAL, VT_ERANGE
 * (too big), VT_ENOMEM. */
#define VT_RESULT_MAX ((size_t)1 << 20)
VT_API vt_err vt_ctx_set_result(vt_task_ctx *ctx, const void *data, size_t len);
/* The result of the dependency named dep (also after a resume, when dep
 * was restored from the store). Errors: VT_EINVAL, VT_ENOENT (no such
 * dependency of this task, or it set no result). */
VT_API vt_err vt_ctx_dep_result(vt_task_ctx *ctx, const char *dep, const void **data, size_t *len);
/* Adds a subtask, named "<parent>/<name>" (name NULL: "<parent>/#<n>", n
 * its order among the attempt's subtasks),
 * that starts once the body returns VT_OK; the parent succeeds when all
 * its subtasks have succeeded, and fails when one of them fails. Subtasks
 * may depend on each other (vt_task_precede between subtasks of the same
 * parent, before the body returns) and may add subtasks in turn. They
 * belong to this run only. Returns NULL on error (VT_EINVAL: NULL fn, bad
 * name; VT_ENOMEM), recorded as the parent's failure. */
VT_API vt_task *vt_ctx_add(vt_task_ctx *ctx, const char *name, vt_task_fn fn, void *data);
VT_API vt_task *vt_ctx_add_async(vt_task_ctx *ctx, const char *name, vt_task_fn fn, void *data);

/* ---- Exporters ----------------------------------------------------------------------- */

/* Writes g as a Graphviz digraph: one node per task (subtasks of the last
 * run in a cluster under their parent), filled with the colour of its state
 * in the current or last run, and its edges. Errors: VT_EINVAL,
 * VT_ESYSERR|errno (writing failed). */
VT_API vt_err vt_graph_write_dot(vt_graph *g, FILE *f);

/* ---- The store: persistence, resume, history ------------------------------------------
 * One SQLite file in WAL mode. A run with a store records each task that
 * finishes (state, attempts, times, error, fingerprint, result) in batched
 * transactions, off the workers. Started again with the same run id — after
 * a crash, kill -9 or a cancel — a run restores every task recorded as
 * succeeded with the same fingerprint (its result blob included) and runs
 * the others. SQLite's transactions keep the file consistent whenever the
 * process dies.
 *
 * Thread: every store call may be made from any thread (one lock inside).
 * vt_store_last_error describes the calling thread's last store call. A
 * store must not be used across fork() (SQLite's rule): open it again in
 * the child. */

typedef struct vt_store_opts {
    int read_only;        /* 1: open for history only (runs then fail: VT_ESTATE) */
    int64_t batch_ns;     /* most time a finished task waits to be committed;
                             0: 10 ms */
    unsigned batch_tasks; /* most tasks per transaction; 0: 4096 */
    int synchronous_full; /* 1: fsync every commit (survives power loss,
                             not only process death); 0: WAL's NORMAL */
} vt_store_opts;

/* Opens (creating it unless read_only) the store at path. On VT_OK *out is
 * the caller's, to be released with vt_store_close. Errors:
 * VT_EINVAL (NULL out or path, bad opts), VT_EFORMAT (the file is not a
 * SQLite database, or one that is not a vitte store, or a store of a newer
 * format), VT_ECORRUPT (damaged), VT_ESYSERR|errno (cannot open or create:
 * EACCES, EROFS, ENOENT ...), VT_EBUSY (locked by another process beyond a
 * few seconds), VT_ENOMEM. The message (with the path) is in
 * vt_store_last_error() of the calling thread. */
VT_API vt_err vt_store_open(vt_store **out, const char *path, const vt_store_opts *opts);

/* Commits what is pending and closes. s may be NULL. Not while a run uses
 * it (it waits for that run's records first). */
VT_API void vt_store_close(vt_store *s);

/* The message of the last store error on this thread ("" when none). */
VT_API const char *vt_store_last_error(void);

typedef enum vt_run_status {
    VT_RUN_RUNNING, /* started; its process is alive */
    VT_RUN_SUCCEEDED,
    VT_RUN_FAILED,
    VT_RUN_CANCELLED,
    VT_RUN_INTERRUPTED /* started, never ended: its process died */
} vt_run_status;
VT_API const char *vt_run_status_name(vt_run_status s);

typedef struct vt_run_info {
    char id[VT_RUN_ID_MAX];
    char graph[128];
    vt_run_status status;
    int64_t started_unix_ns; /* wall clock of the first start */
    int64_t ended_unix_ns;   /* of the last end; 0 if none */
    unsigned starts;         /* 1 + resumes */
    size_t total, succeeded, failed, cancelled, skipped, restored;
} vt_run_info;

/* The runs of the store, newest first, at most max (0: all). *out is the
 * caller's, released with vt_store_runs_free; *n its length. Errors: VT_EINVAL,
 * VT_ENOMEM, VT_EIO (a read failed), VT_ECORRUPT, VT_EBUSY (locked by
 * another process too long). */
VT_API vt_err vt_store_runs(vt_store *s, size_t max, vt_run_info **out, size_t *n);
VT_API void vt_store_runs_free(vt_run_info *runs, size_t n);

typedef struct vt_task_record {
    char *name; /* full name, subtasks as "parent/child" */
    vt_task_state state;
    unsigned attempts;
    int restored;
    vt_err err;
    char *error; /* message, "" when none */
    int64_t started_unix_ns, ended_unix_ns;
    void *fingerprint;
    size_t fingerprint_len;
    void *result;
    size_t result_len;
} vt_task_record;

/* The tasks recorded for run id, one per name (the latest record of
 * each), in the order they finished. *out is the caller's, released with
 * vt_store_run_tasks_free. Errors: VT_EINVAL, VT_ENOENT (no such run),
 * VT_ENOMEM, VT_EIO, VT_ECORRUPT, VT_EBUSY. */
VT_API vt_err vt_store_run_tasks(vt_store *s, const char *run_id, vt_task_record **out, size_t *n);
VT_API void vt_store_run_tasks_free(vt_task_record *tasks, size_t n);

/* Forgets run id and its tasks. Errors: VT_EINVAL, VT_ENOENT, VT_EBUSY (a
 * live run, in this process or another, uses it), VT_ESTATE (read-only
 * store), VT_EIO. */
VT_API vt_err vt_store_delete_run(vt_store *s, const char *run_id);

/* ---- The monitor: events, counters, trace ----------------------------------------------
 * A monitor attached to runs (vt_run_opts.monitor) receives their events.
 * The executor only appends each event to a per-thread buffer (no lock, no
 * system call); the monitor's own thread delivers them to subscribers, in
 * order of time, keeps counters and statistics and, if asked, a record for
 * the trace exporter. A slow subscriber delays only the monitor thread. */

typedef enum vt_event_kind {
    VT_EV_RUN_STARTED,
    VT_EV_QUEUED,    /* the task is ready */
    VT_EV_STARTED,   /* an attempt's body starts */
    VT_EV_FINISHED,  /* the task ended: state SUCCEEDED/FAILED/CANCELLED/SKIPPED */
    VT_EV_RETRIED,   /* an attempt failed (it ends there; state PENDING);
                        another comes after the backoff */
    VT_EV_CANCELLED, /* cancellation asked: run (task NULL), group or timeout */
    VT_EV_TIMEOUT,   /* an attempt passed its timeout */
    VT_EV_PROGRESS,
    VT_EV_LOG,
    VT_EV_RUN_FINISHED
} vt_event_kind;
#define VT_EVENT_KINDS 10
VT_API const char *vt_event_kind_name(vt_event_kind k);

typedef struct vt_event {
    vt_event_kind kind;
    vt_task_state state; /* the task's state after the event */
    uint64_t seq;        /* delivery order within the monitor, from 1 */
    int64_t ts_ns;       /* the run's clock (vt_pool_now) */
    const vt_graph *graph;
    const vt_task *task; /* NULL for run events; valid during the callback */
    const char *name;    /* task name (the graph's for run events, "" for a
                            run's or group's CANCELLED); valid during the callback */
    int worker;          /* vt_worker_index of the thread, -1 if none */
    unsigned attempt;    /* 1.. for task events */
    vt_err err;          /* FINISHED/RETRIED: the failure; RUN_FINISHED: the run's */
    double progress;     /* PROGRESS */
    int64_t delay_ns;    /* RETRIED: the backoff */
    vt_log_level level;  /* LOG */
    const char *msg;     /* LOG text, FINISHED/RETRIED error message, or "" */
    uint64_t tasks;      /* RUN_STARTED: tasks in the run; RUN_FINISHED: in
                            the run at its end (subtasks included) */
} vt_event;

typedef void (*vt_event_fn)(void *ud, const vt_event *ev);

typedef struct vt_monitor_opts {
    int record;         /* 1: keep every event for vt_monitor_write_trace */
    size_t max_pending; /* events buffered but not delivered, beyond which
                           new ones are dropped (counted). Approximate with
                           several threads: each reserves room 64 events
                           at a time. 0: 1 << 22 */
} vt_monitor_opts;

/* Starts a monitor (and its thread). opts may be NULL. On VT_OK *out is the
 * caller's, to be released with vt_monitor_free. Errors: VT_EINVAL,
 * VT_ENOMEM, VT_ESYSERR|errno. */
VT_API vt_err vt_monitor_new(vt_monitor **out, const vt_monitor_opts *opts);
/* Delivers what is pending, stops the thread, frees. m may be NULL. Not
 * while a run uses m (it waits for that run to end); not from a callback
 * (it logs an error and does nothing). */
VT_API void vt_monitor_free(vt_monitor *m);

/* fn(ud, ev) for every event from now on, on the monitor's thread, one
 * call at a time. Errors: VT_EINVAL, VT_ENOMEM, VT_EEXIST (fn, ud
 * subscribed already). */
VT_API vt_err vt_monitor_subscribe(vt_monitor *m, vt_event_fn fn, void *ud);
/* After it returns, fn(ud, ...) is not running and will not be called.
 * Not from a callback (VT_EDEADLK). Errors: VT_EINVAL, VT_ENOENT. */
VT_API vt_err vt_monitor_unsubscribe(vt_monitor *m, vt_event_fn fn, void *ud);
/* Waits until every event emitted before the call has been delivered.
 * Errors: VT_EINVAL, VT_ETIMEDOUT, VT_EDEADLK (from a callback). */
VT_API vt_err vt_monitor_flush(vt_monitor *m, int64_t deadline);

typedef struct vt_duration_stats {
    uint64_t count;
    int64_t min_ns, max_ns, mean_ns, p50_ns, p90_ns, p99_ns;
} vt_duration_stats;

typedef struct vt_monitor_stats {
    uint64_t by_state[VT_TASK_STATES]; /* tasks now in each state, over the
                                          runs the monitor watches */
    uint64_t events[VT_EVENT_KINDS];   /* delivered, by kind */
    uint64_t dropped;                  /* lost to max_pending, or to a
                                          buffer that could not be allocated */
    uint64_t runs_active;
    vt_duration_stats attempts; /* attempt durations: STARTED to the
                                   FINISHED or RETRIED of that attempt */
} vt_monitor_stats;

/* Counters as of the last delivered event (call vt_monitor_flush first
 * for an exact view). Errors: VT_EINVAL. */
VT_API vt_err vt_monitor_stats_get(vt_monitor *m, vt_monitor_stats *out);

/* Writes the recorded events (opts.record) in the Chrome/Perfetto trace
 * format (JSON; opens in ui.perfetto.dev and chrome://tracing): one span per
 * attempt on its worker's lane, instants for retries, timeouts and
 * cancellations, logs as instant events. Flushes first (from a callback:
 * writes what was delivered so far). Errors: VT_EINVAL, VT_ESTATE (not
 * recording), VT_ENOMEM, VT_ESYSERR|errno (writing failed). */
VT_API vt_err vt_monitor_write_trace(vt_monitor *m, FILE *f);

#ifdef __cplusplus
}
#endif
#endif
