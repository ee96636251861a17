/* vitte/flow.h — dataflow: value graphs and pipelines.
 *
 * VALUE GRAPHS. A flow is a graph of nodes that compute values from the
 * values of the nodes they take as inputs:
 *
 *     static vt_err add(vt_flow_ctx *ctx, void *ud)
 *     {
 *         int64_t a, b;
 *         vt_err e;
 *         if ((e = vt_flow_in_int(ctx, 0, &a)) || (e = vt_flow_in_int(ctx, 1, &b)))
 *             return e;
 *         return vt_flow_set_int(ctx, a + b);
 *     }
 *
 *     vt_flow *f;
 *     vt_flow_new(&f, "seed");
 *     vt_flow_node *a = vt_flow_add_int(f, "a", 1);
 *     vt_flow_node *b = vt_flow_add_int(f, "b", 2);
 *     vt_flow_node *sum = vt_flow_add(f, "sum", add, NULL, VT_FLOW_INPUTS(a, b));
 *     vt_flow_run(f, rt, NULL);               // VT_OK: every node succeeded
 *     int64_t v;
 *     vt_flow_node_get_int(sum, &v);          // 3
 *     vt_flow_free(f);
 *
 * Each node is one task of a private task graph (vitte/task.h), made ready
 * once its inputs have succeeded, so everything task does carries over:
 * cycles are refused before anything runs (VT_ECYCLE, with the path),
 * the lifecycle and its states, retries with backoff, timeouts,
 * cancellation, fail-fast or keep-going, the monitor's events and trace,
 * and the store. vt_flow_graph gives that graph, and vt_flow_node_task a
 * node's task, for whatever of task.h this header does not repeat.
 *
 * Values are typed (vt_value_type) and owned by the flow: strings and
 * byte blobs are copied, user pointers are freed with the destructor given
 * with them. A node's value lives from the moment its body sets it until
 * the next run of the flow starts (or the flow is freed). Reading a value
 * of another type is VT_ETYPE; reading one of a node that did not succeed,
 * or before any run, is VT_ESTATE; in both cases the message names the node
 * (vt_flow_error).
 *
 * Persistence: with a store (vt_run_opts.store), each node's value is
 * recorded with its success when it is a plain value (none, int, double,
 * string or bytes) of at most VT_FLOW_PERSIST_MAX bytes. A run started
 * again with the same run id takes those nodes as done (vt_task_restored)
 * without running them, and their values come back from the store. A
 * node whose value was a user pointer, or too big to record, runs again.
 *
 * Thread safety: building (adding nodes and inputs, the setters) is for
 * one thread at a time and not while the flow runs (VT_EBUSY). Reading
 * values, states and vt_flow_find/vt_flow_node_of may be done from any
 * thread once the run has ended (vt_flow_wait returned); vt_flow_cancel
 * from any thread at any time. The vt_flow_in_* and vt_flow_set_* calls are
 * for a node's own body (Thread: the body's).
 *
 * PIPELINES (further down). A pipeline carries an unbounded stream of
 * fixed-size items from a source through transform stages to a sink, on a
 * runtime's workers, with bounded memory whatever the input's length. */
#ifndef VITTE_FLOW_H
#define VITTE_FLOW_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "vitte/async.h"
#include "vitte/base.h"
#include "vitte/task.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Values ------------------------------------------------------------------- */

typedef enum vt_value_type {
    VT_VALUE_NONE,   /* a node that succeeded without setting a value */
    VT_VALUE_INT,    /* int64_t */
    VT_VALUE_DOUBLE, /* double */
    VT_VALUE_STR,    /* a string, copied (read back NUL-terminated) */
    VT_VALUE_BYTES,  /* a blob, copied */
    VT_VALUE_PTR     /* a user pointer, released with its destructor */
} vt_value_type;

/* "none", "int", "double", "string", "bytes", "pointer" ("?" out of
 * range). Static. */
VT_API const char *vt_value_type_name(vt_value_type t);

/* Releases a pointer value: called once, when the value is dropped (the
 * node's next attempt or run, its failure, vt_flow_free), on the thread
 * that drops it. */
typedef void (*vt_value_dtor)(void *ptr);

/* Largest string or blob a node may hold (strings: without the NUL). */
#define VT_FLOW_VALUE_MAX ((size_t)1 << 30)
/* Largest string or blob recorded in a store; bigger ones are kept in
 * memory only, and their node runs again when its run is resumed. */
#define VT_FLOW_PERSIST_MAX ((size_t)64 << 10)
/* Largest fingerprint of a node (vt_flow_node_set_fingerprint): what a
 * task takes, less what the flow adds to it. */
#define VT_FLOW_FINGERPRINT_MAX (VT_FINGERPRINT_MAX - 32)
/* Most inputs of one node. */
#define VT_FLOW_INPUTS_MAX ((size_t)1 << 20)

/* ---- Flows ---------------------------------------------------------------------- */

typedef struct vt_flow vt_flow;
typedef struct vt_flow_node vt_flow_node;
typedef struct vt_flow_ctx vt_flow_ctx;

/* A node's body: reads its inputs (vt_flow_in_*), sets its value
 * (vt_flow_set_*) and returns VT_OK, or fails with any other code (retried
 * as the node's policy says; vt_ctx_fail(vt_flow_ctx_task(ctx), ...)
 * fails with a message). ud is the pointer given when the node was added. */
typedef vt_err (*vt_flow_fn)(vt_flow_ctx *ctx, void *ud);

/* A new empty flow. name (copied; NULL: "flow") names it and its task
 * graph. On VT_OK *out is the caller's, to be released with vt_flow_free.
 * Errors: VT_EINVAL (NULL out, empty name), VT_ENOMEM. */
VT_API vt_err vt_flow_new(vt_flow **out, const char *name);

/* Frees the flow, its nodes and their values (pointer values through their
 * destructors). f may be NULL. Not while f runs: it waits for the run to
 * end first (as vt_graph_free does); from a node's body it logs an error
 * and leaks f rather than wait for itself. */
VT_API void vt_flow_free(vt_flow *f);

VT_API const char *vt_flow_name(const vt_flow *f);
/* Nodes added (0 for NULL). */
VT_API size_t vt_flow_size(const vt_flow *f);

/* The message of the last error: of a call of this thread on f that failed
 * (a getter's, "node \"sum\" holds a string, not an int"), else of
 * building ("vt_flow_add: node \"x\" has no function"), validation
 * ("cycle: a -> b -> a") or the last run ("task \"sum\" failed: ...").
 * "" when none. Valid until the next call on f from this thread. */
VT_API const char *vt_flow_error(const vt_flow *f);

/* The task graph underneath: for vt_graph_write_dot, vt_graph_summary,
 * groups, and to recognise the flow's events in a monitor (ev->graph).
 * Do not add tasks or edges to it, nor set fingerprints on its tasks (the
 * flow manages them: vt_flow_node_set_fingerprint). */
VT_API vt_graph *vt_flow_graph(const vt_flow *f);

/* Checks the flow as vt_graph_validate does, plus the flow's own building
 * errors. Runs do it themselves. Errors: the first building error
 * (VT_EINVAL: a NULL function, an input of another flow ...; VT_ENOMEM),
 * VT_EEXIST (two nodes share a name), VT_ECYCLE, VT_EBUSY (f runs); the
 * message is vt_flow_error(f). */
VT_API vt_err vt_flow_validate(vt_flow *f);

/* ---- Building ------------------------------------------------------------------
 * As with task graphs, building calls never leave a flow half-changed and
 * the first one that fails is remembered: vt_flow_validate and every run
 * return it (with its message), so a flow built without checking each
 * call still reports its first mistake. A call refused with VT_EBUSY
 * (the flow runs) changed nothing and is not remembered.
 *
 * Names follow task's rules: copied, unique in the flow, not empty, no
 * '/'; NULL leaves the node unnamed ("#<n>", n its order of addition). */

/* Adds a node computing fn(ctx, ud) from inputs[0 .. ninputs-1], which
 * must be nodes of f (they become its dependencies; the same node may be
 * given twice). inputs may be NULL when ninputs is 0. Returns the node,
 * owned by f, or NULL on error: VT_EINVAL (NULL f or fn, NULL inputs with
 * ninputs > 0, a NULL input, an input of another flow, a bad name),
 * VT_ERANGE (ninputs above VT_FLOW_INPUTS_MAX), VT_ENOMEM, VT_EBUSY. */
VT_API vt_flow_node *vt_flow_add(vt_flow *f, const char *name, vt_flow_fn fn, void *ud,
                                 vt_flow_node *const *inputs, size_t ninputs);
/* As vt_flow_add, the body running as a fiber (vt_task_add_async): it may
 * block on channels, sleeps, locks and IO without holding a worker. */
VT_API vt_flow_node *vt_flow_add_async(vt_flow *f, const char *name, vt_flow_fn fn, void *ud,
                                       vt_flow_node *const *inputs, size_t ninputs);

/* "inputs, ninputs" from a list of nodes: vt_flow_add(f, "s", fn, ud,
 * VT_FLOW_INPUTS(a, b)). C only (a compound literal). */
#define VT_FLOW_INPUTS(...)                 \
    ((vt_flow_node *const[]){__VA_ARGS__}), \
        (sizeof((vt_flow_node *const[]){__VA_ARGS__}) / sizeof(vt_flow_node *))

/* Nodes whose value is a constant (copied), with no inputs. They are tasks
 * too: they show in the monitor, DOT and the store like any node. Errors
 * (NULL returned): VT_EINVAL (NULL f, NULL s, NULL p with len > 0, bad
 * name), VT_ERANGE (longer than VT_FLOW_VALUE_MAX), VT_ENOMEM, VT_EBUSY. */
VT_API vt_flow_node *vt_flow_add_int(vt_flow *f, const char *name, int64_t v);
VT_API vt_flow_node *vt_flow_add_double(vt_flow *f, const char *name, double v);
VT_API vt_flow_node *vt_flow_add_str(vt_flow *f, const char *name, const char *s);
VT_API vt_flow_node *vt_flow_add_bytes(vt_flow *f, const char *name, const void *p, size_t len);

/* Appends in to n's inputs (read as input vt_flow_node_inputs(n) - 1). A
 * node cannot be its own input. Errors: VT_EINVAL (NULL, nodes of different
 * flows, n == in, n a constant node), VT_ERANGE (n has VT_FLOW_INPUTS_MAX
 * inputs), VT_ENOMEM, VT_EBUSY. */
VT_API vt_err vt_flow_node_add_input(vt_flow_node *n, vt_flow_node *in);

/* The retry policy of n's body (NULL: none), as vt_task_set_retry.
 * Errors: VT_EINVAL (NULL n, a field out of range), VT_EBUSY. */
VT_API vt_err vt_flow_node_set_retry(vt_flow_node *n, const vt_retry *policy);
/* Each attempt may take timeout_ns (0: no limit), as vt_task_set_timeout.
 * Errors: VT_EINVAL, VT_EBUSY. */
VT_API vt_err vt_flow_node_set_timeout(vt_flow_node *n, int64_t timeout_ns);
/* A key for n's inputs from outside the flow (a file's hash, a version):
 * a resumed run restores n only if it succeeded with the same key (copied,
 * at most VT_FLOW_FINGERPRINT_MAX bytes; NULL, 0: no key). Errors:
 * VT_EINVAL (NULL n, NULL key with len > 0, len too big), VT_ENOMEM,
 * VT_EBUSY. */
VT_API vt_err vt_flow_node_set_fingerprint(vt_flow_node *n, const void *key, size_t len);

VT_API const char *vt_flow_node_name(const vt_flow_node *n); /* "#<n>" when unnamed */
VT_API vt_flow *vt_flow_node_flow(const vt_flow_node *n);
/* n's task in vt_flow_graph (for vt_task_set_priority, vt_task_set_group,
 * vt_task_attempts, vt_task_error ...). */
VT_API vt_task *vt_flow_node_task(const vt_flow_node *n);
VT_API size_t vt_flow_node_inputs(const vt_flow_node *n);
/* Input i of n, or NULL. */
VT_API vt_flow_node *vt_flow_node_input(const vt_flow_node *n, size_t i);

/* The node named name ("#<n>" for unnamed ones), or NULL. Thread: any,
 * once f was validated or run, while no call builds f (the first lookup
 * before that indexes the names). */
VT_API vt_flow_node *vt_flow_find(const vt_flow *f, const char *name);
/* The node whose task is t (ev->task of a monitor event), or NULL when t
 * is not one of f's (or there was no memory for the index that the first
 * call makes; a run with a monitor makes it when it starts). Thread: any,
 * while no call builds f. */
VT_API vt_flow_node *vt_flow_node_of(const vt_flow *f, const vt_task *t);

/* ---- Runs ------------------------------------------------------------------------ */

/* Starts a run of f on rt's workers and returns at once, as
 * vt_graph_start (opts as there; NULL: fail fast, no store, no monitor).
 * The values of the previous run are dropped. With a store and a run id
 * seen before, nodes recorded as succeeded with their value are restored
 * (see the top of the file). Thread: any (not a body of f). Errors: the
 * first building error, vt_flow_validate's, vt_graph_start's (VT_EINVAL,
 * VT_EBUSY: f runs, VT_ECLOSED, VT_ENOMEM, store errors). */
VT_API vt_err vt_flow_start(vt_flow *f, vt_runtime *rt, const vt_run_opts *opts);
/* Waits for the run to end, as vt_graph_wait: VT_OK when every node
 * succeeded, VT_EFAILED (vt_flow_error names the first failure),
 * VT_ECANCELED, VT_ETIMEDOUT (still running), VT_ESTATE (never started),
 * VT_EDEADLK (from a body of f). */
VT_API vt_err vt_flow_wait(vt_flow *f, int64_t deadline);
/* vt_flow_start, then vt_flow_wait(f, VT_FOREVER). */
VT_API vt_err vt_flow_run(vt_flow *f, vt_runtime *rt, const vt_run_opts *opts);
/* As vt_graph_cancel. Thread: any. */
VT_API vt_err vt_flow_cancel(vt_flow *f);

/* ---- Values after a run --------------------------------------------------------
 * A node has a value once its run has ended (vt_flow_wait returned) and
 * it succeeded — ran, or was restored from the store. Pointers into a
 * value (strings, bytes) stay valid until the next run starts or f is
 * freed. Errors of every getter: VT_EINVAL (NULL), VT_ESTATE (no value:
 * never run, failed, skipped or cancelled; the message says which),
 * VT_EBUSY (the flow runs now), VT_ETYPE (a value of another type). The
 * message is vt_flow_error(vt_flow_node_flow(n)). Thread: any. */

/* The state of n in the current or last run (vt_task_state_get). */
VT_API vt_task_state vt_flow_node_state(const vt_flow_node *n);
VT_API vt_err vt_flow_node_type(const vt_flow_node *n, vt_value_type *type);
VT_API vt_err vt_flow_node_get_int(const vt_flow_node *n, int64_t *v);
VT_API vt_err vt_flow_node_get_double(const vt_flow_node *n, double *v);
/* *s is NUL-terminated; *len (may be NULL) its length without the NUL. */
VT_API vt_err vt_flow_node_get_str(const vt_flow_node *n, const char **s, size_t *len);
VT_API vt_err vt_flow_node_get_bytes(const vt_flow_node *n, const void **p, size_t *len);
/* The pointer stays the flow's (its destructor runs when it is dropped). */
VT_API vt_err vt_flow_node_get_ptr(const vt_flow_node *n, void **p);

/* Writes f as a Graphviz digraph: a box per node, filled with the colour
 * of its state in the current or last run (task's colours), labelled with
 * its name and, once the run has ended, its value ("sum = 3"); an edge
 * from each input to its node, labelled with the input's index when the
 * node has several. Errors: VT_EINVAL, VT_ESYSERR|errno. */
VT_API vt_err vt_flow_write_dot(const vt_flow *f, FILE *out);

/* ---- Inside a node's body -------------------------------------------------------
 * Thread: the node's body only (ctx is valid during the call). Inputs are
 * numbered in the order they were given (vt_flow_add's array, then
 * vt_flow_node_add_input). Reading one that does not exist is VT_ERANGE;
 * of another type, VT_ETYPE (the message, naming both nodes, is the
 * attempt's failure message when the body returns that error). */

VT_API vt_flow_node *vt_flow_ctx_node(vt_flow_ctx *ctx);
/* The task context: vt_ctx_attempt, vt_ctx_log, vt_ctx_fail,
 * vt_ctx_cancelled, vt_ctx_progress ... */
VT_API vt_task_ctx *vt_flow_ctx_task(vt_flow_ctx *ctx);
VT_API size_t vt_flow_ctx_inputs(vt_flow_ctx *ctx);

VT_API vt_err vt_flow_in_type(vt_flow_ctx *ctx, size_t i, vt_value_type *type);
VT_API vt_err vt_flow_in_int(vt_flow_ctx *ctx, size_t i, int64_t *v);
VT_API vt_err vt_flow_in_double(vt_flow_ctx *ctx, size_t i, double *v);
/* *s NUL-terminated, valid during the body. */
VT_API vt_err vt_flow_in_str(vt_flow_ctx *ctx, size_t i, const char **s, size_t *len);
VT_API vt_err vt_flow_in_bytes(vt_flow_ctx *ctx, size_t i, const void **p, size_t *len);
VT_API vt_err vt_flow_in_ptr(vt_flow_ctx *ctx, size_t i, void **p);

/* Sets the node's value (a second call replaces the first). Strings and
 * blobs are copied. Errors: VT_EINVAL (NULL ctx, NULL s, NULL p with
 * len > 0), VT_ERANGE (longer than VT_FLOW_VALUE_MAX), VT_ENOMEM. */
VT_API vt_err vt_flow_set_int(vt_flow_ctx *ctx, int64_t v);
VT_API vt_err vt_flow_set_double(vt_flow_ctx *ctx, double v);
VT_API vt_err vt_flow_set_str(vt_flow_ctx *ctx, const char *s);
VT_API vt_err vt_flow_set_bytes(vt_flow_ctx *ctx, const void *p, size_t len);
/* On VT_OK the flow owns p and calls dtor(p) (dtor may be NULL: nothing to
 * release) when the value is dropped; on error p is still the caller's.
 * Errors: VT_EINVAL (NULL ctx). */
VT_API vt_err vt_flow_set_ptr(vt_flow_ctx *ctx, void *p, vt_value_dtor dtor);

/* ---- Pipelines -------------------------------------------------------------------
 * A source, transform stages and a sink, in a chain:
 *
 *     static vt_err count(void *ud, void *out)          // the source
 *     {
 *         uint64_t *next = ud;
 *         if (*next == 1000000)
 *             return VT_ECLOSED;                        // the end
 *         *(uint64_t *)out = (*next)++;
 *         return VT_OK;
 *     }
 *     static vt_err twice(void *ud, const void *in, void *out)
 *     {
 *         *(uint64_t *)out = 2 * *(const uint64_t *)in + 1;
 *         return VT_OK;
 *     }
 *     static vt_err sum(void *ud, const void *in)       // the sink
 *     {
 *         *(uint64_t *)ud += *(const uint64_t *)in;
 *         return VT_OK;
 *     }
 *
 *     vt_pipeline *p;
 *     vt_pipeline_new(&p, "sum", NULL);
 *     vt_pipeline_add_source(p, "count", sizeof(uint64_t), count, &next, NULL);
 *     vt_pipeline_add_stage(p, "twice", sizeof(uint64_t), twice, NULL,
 *                           &(vt_pipe_stage_opts){.kind = VT_PIPE_PARALLEL});
 *     vt_pipeline_add_sink(p, "sum", sum, &total, NULL);
 *     vt_pipeline_run(p, rt);
 *     vt_pipeline_free(p);
 *
 * Items are fixed-size elements, copied from stage to stage. They travel
 * in batches of up to opts.batch items, and at most opts.max_batches
 * batches exist at once: whatever the length of the input and the speed of
 * each stage, the pipeline holds at most max_batches x batch items (the
 * source stops while they are all in use: backpressure), allocated when it
 * starts. Between two stages, the batches waiting for the next one are its
 * queue. A batch is carried through the stages by one worker at a time
 * (its items stay in that worker's cache), and nothing is queued, locked
 * or woken per item.
 *
 * A SERIAL stage (the source always is) takes one batch at a time, and
 * sees the items in the order the source made them. A PARALLEL stage
 * works on up to `concurrency` batches at once, on several workers;
 * ordered (the default), the items it passes on still reach the serial
 * stages after it in the source's order; unordered, in the order it
 * finished them.
 *
 * A stage function returns VT_OK (the item goes on), VT_ENOENT (the item
 * is dropped: a filter; not a failure), or a failure, handled as the
 * stage's policy says: retry the item (vt_retry: attempts, backoff, waited
 * on the pool's timer wheel without holding a worker), then either skip it
 * (counted, reported to on_skip) or stop the pipeline (the default: no
 * item enters any more, batches in flight are dropped, and
 * vt_pipeline_wait returns VT_EFAILED with a message naming the stage).
 *
 * Stage functions run on the runtime's workers, one item at a time per
 * batch. With opts.async they run in fibers, and may block (channels,
 * sleeps, IO) without holding a worker; a parallel stage's concurrency then
 * counts batches that may all be blocked at once.
 *
 * Thread safety: building is for one thread at a time and not while the
 * pipeline runs (VT_EBUSY). vt_pipeline_stats_get, vt_pipeline_cancel and
 * vt_pipeline_write_dot may be called from any thread at any time. A
 * stage's functions are never called concurrently for a serial stage;
 * for a parallel one they are (from up to concurrency threads or fibers). */

typedef struct vt_pipeline vt_pipeline;
typedef struct vt_pipe_stage vt_pipe_stage;

/* The source: writes the next item to out and returns VT_OK; VT_ECLOSED
 * when there are no more (the end of the stream); VT_EAGAIN when none is
 * ready yet (the items made so far go on at once, and the source is
 * called again shortly: at once, then, while it keeps having nothing,
 * after a pause growing from 10 us to 1 ms, during which no worker is
 * held); any other code is a failure of that item, handled as the
 * source's policy says. */
typedef vt_err (*vt_pipe_source_fn)(void *ud, void *out);
/* A transform: writes the item made from in to out (out is the stage's
 * item size, in the previous stage's). VT_OK, VT_ENOENT (drop in), or a
 * failure. */
typedef vt_err (*vt_pipe_fn)(void *ud, const void *in, void *out);
/* The sink: consumes in. VT_OK, VT_ENOENT (counted as dropped), or a
 * failure. */
typedef vt_err (*vt_pipe_sink_fn)(void *ud, const void *in);
/* Told about an item the stage skipped after its attempts failed, with the
 * last attempt's error. On the thread that ran the stage, which waits for
 * it. in is the item the stage was given (NULL for the source). */
typedef void (*vt_pipe_skip_fn)(void *ud, const char *stage, const void *in, vt_err err);

typedef struct vt_pipeline_opts {
    size_t batch;         /* most items per batch: 1 .. 65536; 0: as many as
                             fit 16 KiB (of the largest item size), at most
                             2048. Batches are made smaller when the stages
                             are slow: about 50 us of work each, as measured
                             while running, and single items until a first
                             batch went through */
    unsigned max_batches; /* batches in flight: 1 .. 65536; 0: twice the
                             runtime's workers, at least 4, and at least each
                             parallel stage's concurrency + 2 (up to 1024) */
    int async;            /* 1: stage functions run in fibers (may block) */
} vt_pipeline_opts;

typedef enum vt_pipe_kind {
    VT_PIPE_SERIAL,  /* one batch at a time, in the source's order */
    VT_PIPE_PARALLEL /* up to concurrency batches at once */
} vt_pipe_kind;

typedef enum vt_pipe_on_fail {
    VT_PIPE_STOP, /* stop the pipeline (the default) */
    VT_PIPE_SKIP  /* drop the item, count it, tell on_skip, go on */
} vt_pipe_on_fail;

typedef struct vt_pipe_stage_opts {
    vt_pipe_kind kind;       /* SERIAL (the default); the source is always serial */
    unsigned concurrency;    /* PARALLEL: batches in the stage at once, 1 ..
                                65536; 0: as many as there can be */
    int unordered;           /* PARALLEL: 1 = pass items on as they are done */
    vt_retry retry;          /* attempts per item and backoff, as task's;
                                max_attempts 0 (or 1): no retry */
    vt_pipe_on_fail on_fail; /* once the attempts are spent */
    vt_pipe_skip_fn on_skip; /* may be NULL */
    void *on_skip_ud;
} vt_pipe_stage_opts;

/* A new pipeline. name (copied; NULL: "pipeline") names it in messages and
 * DOT. opts may be NULL. On VT_OK *out is the caller's (vt_pipeline_free).
 * Errors: VT_EINVAL (NULL out, empty name, an option out of range),
 * VT_ENOMEM. */
VT_API vt_err vt_pipeline_new(vt_pipeline **out, const char *name, const vt_pipeline_opts *opts);
/* Cancels the run if there is one, waits for it, and frees everything.
 * p may be NULL. Not from a stage function (it logs an error and leaks p
 * rather than wait for itself). */
VT_API void vt_pipeline_free(vt_pipeline *p);

/* Stages are added in order: the source first, the sink last, transforms
 * between. name is copied (NULL: "source", "stage<i>", "sink"); opts may
 * be NULL (serial, no retry, stop on failure). Each returns the stage,
 * owned by p, or NULL on error: VT_EINVAL (NULL p or fn, an item size of 0
 * or above VT_CHAN_ELEM_MAX, a source that is not first, a stage after the
 * sink, a bad option), VT_ENOMEM, VT_EBUSY (p runs). As with flows, the
 * first building error is remembered and returned by vt_pipeline_start. */
VT_API vt_pipe_stage *vt_pipeline_add_source(vt_pipeline *p, const char *name, size_t item_size,
                                             vt_pipe_source_fn fn, void *ud,
                                             const vt_pipe_stage_opts *opts);
VT_API vt_pipe_stage *vt_pipeline_add_stage(vt_pipeline *p, const char *name, size_t item_size,
                                            vt_pipe_fn fn, void *ud,
                                            const vt_pipe_stage_opts *opts);
VT_API vt_pipe_stage *vt_pipeline_add_sink(vt_pipeline *p, const char *name, vt_pipe_sink_fn fn,
                                           void *ud, const vt_pipe_stage_opts *opts);

VT_API const char *vt_pipeline_name(const vt_pipeline *p);
VT_API size_t vt_pipeline_stages(const vt_pipeline *p);
VT_API const char *vt_pipe_stage_name(const vt_pipe_stage *s);

/* Starts the stream on rt's workers and returns at once. The pipeline
 * must have a source and a sink. Its statistics start from zero. A
 * pipeline that ran may be started again (its functions then start from
 * whatever state their ud holds). Thread: any but a stage function of p.
 * Errors: the first building error, VT_EINVAL (NULL, no source or no
 * sink: the message says which), VT_EBUSY (it runs), VT_ECLOSED (rt shut
 * down), VT_ENOMEM. */
VT_API vt_err vt_pipeline_start(vt_pipeline *p, vt_runtime *rt);
/* Waits until the stream has ended: the source said VT_ECLOSED and every
 * item made has been consumed, dropped or skipped — or the pipeline
 * stopped. Returns VT_OK, VT_EFAILED (a stage stopped it:
 * vt_pipeline_error says which and why), VT_ECANCELED (vt_pipeline_cancel),
 * VT_ETIMEDOUT (still running), VT_ESTATE (never started), VT_EDEADLK
 * (from a stage function of p). On a deterministic runtime the calling
 * thread runs the pipeline. Thread: any. */
VT_API vt_err vt_pipeline_wait(vt_pipeline *p, int64_t deadline);
/* vt_pipeline_start, then vt_pipeline_wait(p, VT_FOREVER). */
VT_API vt_err vt_pipeline_run(vt_pipeline *p, vt_runtime *rt);
/* Stops the stream: no item enters any more, batches in flight are
 * dropped (a stage function running finishes its item; in an async
 * pipeline, its blocking calls return VT_ECANCELED). Returns at once; not
 * running: VT_OK, nothing done. Thread: any. */
VT_API vt_err vt_pipeline_cancel(vt_pipeline *p);
/* Why the last start or run failed ("stage \"parse\" failed on an item:
 * invalid argument"), or a building error; "" when none. Valid until the
 * next start or building call. */
VT_API const char *vt_pipeline_error(const vt_pipeline *p);

/* ---- Watching a pipeline ----------------------------------------------------------- */

typedef struct vt_pipe_stage_stats {
    const char *name; /* the stage's (valid while p lives) */
    vt_pipe_kind kind;
    unsigned concurrency; /* PARALLEL: its limit (0: none) */
    uint64_t items_in;    /* items the stage took (the source: items it made) */
    uint64_t items_out;   /* items it passed on (the sink: items consumed) */
    uint64_t dropped;     /* items its function dropped (VT_ENOENT) */
    uint64_t failures;    /* failed attempts */
    uint64_t retries;     /* attempts beyond the first */
    uint64_t skipped;     /* items given up (VT_PIPE_SKIP) */
    uint64_t queued;      /* items waiting to enter the stage now: its queue */
    uint64_t queue_max;   /* the most that queue has held in this run */
    unsigned active;      /* batches in the stage now */
    int64_t busy_ns;      /* time spent in the stage's batches */
    double ns_per_item;   /* busy_ns / items_in (0 before any item) */
    vt_err last_error;    /* of the last failed attempt, VT_OK if none */
} vt_pipe_stage_stats;

typedef struct vt_pipeline_stats {
    int running; /* 1 between start and the end of the stream */
    size_t stages;
    size_t batch; /* items per batch */
    unsigned max_batches;
    uint64_t max_items;           /* the bound: max_batches x batch */
    uint64_t batches_used;        /* batches in flight now */
    uint64_t items_in_flight;     /* made by the source, not yet consumed, dropped
                                     or skipped (never above max_items; low
                                     rather than high while items move) */
    int64_t started_ns, ended_ns; /* vt_now_ns (pool clock); ended 0 while running */
} vt_pipeline_stats;

/* A snapshot of p and of its first n stages (stages may be NULL when n
 * is 0): counters are read one by one, while the workers update them.
 * Thread: any, at any time. Errors: VT_EINVAL. */
VT_API vt_err vt_pipeline_stats_get(vt_pipeline *p, vt_pipeline_stats *out,
                                    vt_pipe_stage_stats *stages, size_t n);
/* Writes p as a Graphviz digraph, left to right: a box per stage with its
 * kind and its counters at this moment (in, out, skipped, ns per item),
 * an edge to the next labelled with that stage's queue ("queue 12"). Thread:
 * any. Errors: VT_EINVAL, VT_ESYSERR|errno. */
VT_API vt_err vt_pipeline_write_dot(vt_pipeline *p, FILE *out);

#ifdef __cplusplus
}
#endif
#endif
