/* task_int.h — the task layer's private contract between its parts: the
 * executor (graph.c, exec.c, ctx.c), the store (store.c) and the monitor
 * (monitor.c). Shared by the files of src/task/ and by nothing else.
 *
 * The executor calls the store and the monitor from its workers, once per
 * task event; both must make that call cheap (an append to a per-thread
 * buffer: no lock shared with other workers, no system call, no disk) and
 * do the slow part — SQLite transactions, subscriber callbacks — on a
 * thread of their own. */
#ifndef VITTE_TASK_INT_H
#define VITTE_TASK_INT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "vitte/task.h"
#include "../base/platform.h"

/* ---- Store ------------------------------------------------------------------------
 * A run of a graph with a store: vt__store_run_begin, then any number of
 * vt__store_record from any threads, vt__store_flush whenever the executor
 * needs everything so far committed, and vt__store_run_end once. */

typedef struct vt__store_run vt__store_run;

/* One finished task as the executor hands it over. Every pointer is only
 * valid during the call: vt__store_record copies what it keeps. */
typedef struct vt__store_rec {
    const char *name;    /* full name ("parent/child" for subtasks) */
    vt_task_state state; /* SUCCEEDED, FAILED, CANCELLED or SKIPPED */
    unsigned attempts;
    int restored;
    vt_err err;
    const char *error;       /* "" when none */
    int64_t started_unix_ns; /* 0 if it never started */
    int64_t ended_unix_ns;
    const void *fingerprint;
    size_t fingerprint_len;
    const void *result;
    size_t result_len;
} vt__store_rec;

/* Starts (or resumes, when run_id is known to s) a run: its row says
 * RUNNING, which process runs it, and how many starts it had. *resumed
 * (may be NULL) is 1 when the id existed. Errors: VT_EINVAL, VT_ESTATE
 * (read-only store), VT_EBUSY (that run id runs now, in this process or
 * another live one; or the file stayed locked by another process for 30 s:
 * the message says which), VT_EIO, VT_ENOMEM. *out is released by run_end. */
VT_INTERNAL vt_err vt__store_run_begin(vt_store *s, const char *run_id, const char *graph,
                                       size_t total, vt__store_run **out, int *resumed);

/* Calls fn for every task recorded as SUCCEEDED in the run (the latest
 * record of each name), with the store's lock held: fn must not call the
 * store. Its pointers are valid during the call only.
 * Errors: VT_EIO, VT_ENOMEM; fn's non-zero return stops the walk and is
 * returned. */
typedef vt_err (*vt__store_done_fn)(void *ud, const char *name, const void *fingerprint,
                                    size_t fingerprint_len, const void *result, size_t result_len);
VT_INTERNAL vt_err vt__store_load_succeeded(vt__store_run *r, vt__store_done_fn fn, void *ud);

/* Queues rec to be committed with the next batch (at most opts.batch_ns
 * later). Thread: any, concurrently. Never waits for the disk. Errors:
 * VT_ENOMEM (nothing queued), VT_EINVAL (NULL name, a blob too big, a state
 * that is not final). A later write error is kept for vt__store_flush. */
VT_INTERNAL vt_err vt__store_record(vt__store_run *r, const vt__store_rec *rec);

/* Returns once every record queued before the call is committed (or failed
 * to be). Returns the first write error of the run since the last flush. */
VT_INTERNAL vt_err vt__store_flush(vt__store_run *r);

/* Flushes, writes the run's outcome and counts, and releases r. Returns the
 * first error of the flush or of that write. */
VT_INTERNAL vt_err vt__store_run_end(vt__store_run *r, vt_run_status status,
                                     const vt_run_summary *sum);

/* Wall clock ns since the epoch (CLOCK_REALTIME), for the store's times. */
VT_INTERNAL int64_t vt__wall_ns(void);

/* ---- Monitor -----------------------------------------------------------------------
 * The executor fills a vt_event (seq unset) and emits it. vt__monitor_emit
 * copies ev->name and ev->msg (msg may be a stack buffer). ev->task and
 * ev->graph are identities for the monitor (keys, and what subscribers
 * see): it never dereferences them. They stay valid until the run's
 * vt_graph_wait returns, which flushes the monitor first, so subscribers
 * may use them during their callbacks. */

/* A run starts or stops using m: vt_monitor_free waits while runs use it. */
VT_INTERNAL void vt__monitor_attach(vt_monitor *m);
VT_INTERNAL void vt__monitor_detach(vt_monitor *m);

/* Thread: any, concurrently. Never blocks and makes no system call in the
 * common case; beyond opts.max_pending undelivered events it drops ev and
 * counts it. */
VT_INTERNAL void vt__monitor_emit(vt_monitor *m, const vt_event *ev);

#endif
