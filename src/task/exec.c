/* exec.c — running a graph.
 *
 * A task is counted down by its dependencies as they finish; the one that
 * brings the count to zero makes it ready. A task with one dependency has
 * no counter to touch at all: its dependency makes it ready. While one
 * thread runs all of the run's tasks, counters are plain loads and stores;
 * once work has been handed to other workers, one atomic decrement per
 * edge (see go_multi).
 *
 * Ready tasks go on a small stack private to the job that made them ready,
 * which runs them itself, newest first (a chain runs as one loop, with no
 * queue in between). When other workers are idle (vt_pool_idle_workers),
 * the oldest half of that stack is handed to the pool as jobs, which the
 * idle workers steal. With priorities (vt_run_opts.priorities, or a task
 * whose priority is not 0), every ready task goes through one heap instead,
 * so the highest always starts first.
 *
 * Everything that is not needed by every task — retries, timeouts, async
 * bodies, groups, subtasks, the store, the monitor — is on a slow path that
 * a task takes when its bits or the run's options say so. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "task/graph.h"

enum {
    STOP_NONE,
    STOP_FAILED,
    STOP_CANCELLED
};

#define WL_CAP 64

/* What one job (or fiber epilogue, or timer job) has made ready and done. */
typedef struct wl {
    vt__run *x;
    vt__wstat *ws;
    int worker;
    int shared;
    unsigned n;
    int64_t done;
    vt_task *stack[WL_CAP];
} wl;

static void drain(void *arg);
static void drain_prio(void *arg);
static void run_one(wl *w, vt_task *t);
static void after_body(wl *w, vt_task *t, vt_err e, unsigned attempt, int64_t started);

/* The run whose body the calling thread is in, for vt_graph_wait's check. */
static _Thread_local vt__run *current_run;

static uint8_t graph_parity(const vt_graph *g)
{
    return atomic_load_explicit(&((vt_graph *)g)->run_parity, memory_order_acquire);
}

int vt__task_state_raw(const vt_task *t)
{
    uint8_t s = atomic_load_explicit(&((vt_task *)t)->state, memory_order_acquire);
    if ((s & VT__ST_PARITY) != graph_parity(t->g))
        return -1;
    return s & VT__ST_MASK;
}

static void set_state(vt__run *x, vt_task *t, int state)
{
    atomic_store_explicit(&t->state, (uint8_t)(x->parity | state), memory_order_release);
}

/* ---- Counters ------------------------------------------------------------------
 * Per worker; the last slot is shared by threads that are not workers
 * (atomic there, plain loads and stores on a worker's own). */

static void wl_init(wl *w, vt__run *x)
{
    w->x = x;
    w->worker = vt_worker_index();
    unsigned i =
        (w->worker >= 0 && (unsigned)w->worker < x->nstat - 1) ? (unsigned)w->worker : x->nstat - 1;
    w->ws = &x->stat[i];
    w->shared = i == x->nstat - 1;
    w->n = 0;
    w->done = 0;
}

static inline void count(wl *w, _Atomic size_t *c)
{
    if (VT_UNLIKELY(w->shared))
        atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
    else
        atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                              memory_order_relaxed);
}

/* ---- Events and records -------------------------------------------------------- */

/* The fields every event has; nb (32 bytes) holds an unnamed task's name. */
void vt__event_init(vt__run *x, vt_event *ev, vt_event_kind kind, vt_task *t, unsigned attempt,
                    char *nb)
{
    memset(ev, 0, sizeof *ev);
    ev->kind = kind;
    ev->ts_ns = vt_pool_now(x->pool);
    ev->graph = x->g;
    ev->task = t;
    ev->name = t ? vt__task_name(t, nb, 32) : "";
    int s = t ? vt__task_state_raw(t) : -1;
    ev->state = s < 0 ? VT_TASK_PENDING : (vt_task_state)s;
    ev->worker = vt_worker_index();
    ev->attempt = attempt;
    ev->msg = "";
}

void vt__run_emit(vt__run *x, vt_event_kind kind, vt_task *t, unsigned attempt, vt_err err,
                  const char *msg)
{
    if (!x->mon)
        return;
    char nb[32];
    vt_event ev;
    vt__event_init(x, &ev, kind, t, attempt, nb);
    ev.err = err;
    ev.msg = msg ? msg : "";
    vt__monitor_emit(x->mon, &ev);
}

static void record(vt__run *x, vt_task *t, int state, unsigned attempts, int64_t started)
{
    if (!x->srun)
        return;
    vt__cold *c = vt__cold_peek(t);
    char nb[32];
    vt__store_rec r;
    memset(&r, 0, sizeof r);
    r.name = vt__task_name(t, nb, sizeof nb);
    r.state = (vt_task_state)state;
    r.attempts = attempts;
    r.restored = c && c->restored;
    r.err = c ? c->err : VT_OK;
    r.error = c && c->errmsg ? c->errmsg : "";
    r.started_unix_ns = started;
    r.ended_unix_ns = vt__wall_ns();
    if (c && c->has_fp) {
        r.fingerprint = c->fp;
        r.fingerprint_len = c->fp_len;
    }
    if (c && c->result) {
        r.result = c->result;
        r.result_len = c->result_len;
    }
    if (vt__store_record(x->srun, &r))
        vt_log(VT_LOG_WARN, "task", "run %s: task \"%s\" could not be queued for the store",
               x->run_id, r.name);
}

static void note_failure(vt__run *x, vt_task *t, vt_err e)
{
    int zero = 0;
    if (!atomic_compare_exchange_strong_explicit(&x->first_failure_set, &zero, 1,
                                                 memory_order_acq_rel, memory_order_relaxed))
        return;
    vt__cold *c = vt__cold_peek(t);
    char nb[32];
    snprintf(x->first_failure, sizeof x->first_failure, "task \"%s\" failed: %s%s%s",
             vt__task_name(t, nb, sizeof nb), vt_strerror(e), c && c->errmsg ? ": " : "",
             c && c->errmsg ? c->errmsg : "");
}

/* ---- Stopping -------------------------------------------------------------------- */

static int group_cancelled(vt__run *x, const vt_group *grp)
{
    return grp && atomic_load_explicit(&((vt_group *)grp)->cancelled_parity,
                                       memory_order_acquire) == (uint8_t)(x->parity | 1);
}

/* With g->lock held and the run live: 1 if this call stopped it. */
static int stop_locked(vt__run *x, int why)
{
    int none = STOP_NONE;
    if (!atomic_compare_exchange_strong_explicit(&x->stop, &none, why, memory_order_acq_rel,
                                                 memory_order_relaxed))
        return 0;
    if (x->scope)
        vt_scope_cancel(x->scope);
    for (vt_group *grp = x->g->groups; grp; grp = grp->next)
        if (grp->scope)
            vt_scope_cancel(grp->scope);
    vt__run_emit(x, VT_EV_CANCELLED, NULL, 0, why == STOP_CANCELLED ? VT_ECANCELED : VT_EFAILED,
                 why == STOP_CANCELLED ? "the run was cancelled" : "stopped at the first failure");
    return 1;
}

/* From the run's own jobs: the run is live until its last task ends. */
static void stop_run(vt__run *x, int why)
{
    vt__spin_lock(&x->g->lock);
    stop_locked(x, why);
    vt__spin_unlock(&x->g->lock);
}

/* ---- Making tasks ready -------------------------------------------------------------- */

static void submit_or_inline(wl *w, vt_job_fn fn, vt_task *t);
static void go_multi(vt__run *x);

static void heap_swap(vt__heap_entry *a, vt__heap_entry *b)
{
    vt__heap_entry tmp = *a;
    *a = *b;
    *b = tmp;
}

static int heap_before(const vt__heap_entry *a, const vt__heap_entry *b)
{
    return a->prio > b->prio || (a->prio == b->prio && a->seq < b->seq);
}

/* With x->heap_lock held. */
static int heap_push_locked(vt__run *x, vt_task *t, uint64_t seq)
{
    if (x->heap_n == x->heap_cap) {
        size_t ncap = x->heap_cap ? x->heap_cap * 2 : 256;
        vt__heap_entry *nh = vt_realloc(x->heap, x->heap_cap * sizeof *nh, ncap * sizeof *nh);
        if (!nh)
            return 0;
        x->heap = nh;
        x->heap_cap = ncap;
    }
    size_t i = x->heap_n++;
    x->heap[i] = (vt__heap_entry){atomic_load_explicit(&t->prio, memory_order_relaxed), seq, t};
    while (i && heap_before(&x->heap[i], &x->heap[(i - 1) / 2])) {
        heap_swap(&x->heap[i], &x->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    return 1;
}

static vt__heap_entry heap_pop_locked(vt__run *x)
{
    vt__heap_entry top = x->heap[0];
    x->heap[0] = x->heap[--x->heap_n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < x->heap_n && heap_before(&x->heap[l], &x->heap[m]))
            m = l;
        if (r < x->heap_n && heap_before(&x->heap[r], &x->heap[m]))
            m = r;
        if (m == i)
            break;
        heap_swap(&x->heap[i], &x->heap[m]);
        i = m;
    }
    return top;
}

static void push_ready(wl *w, vt_task *t)
{
    vt__run *x = w->x;
    uint8_t st = atomic_load_explicit(&t->state, memory_order_relaxed);
    atomic_store_explicit(&t->state, (uint8_t)((st & VT__ST_DOOMED) | x->parity | VT_TASK_READY),
                          memory_order_relaxed);
    if (VT_UNLIKELY(x->slow_all)) {
        vt__run_emit(x, VT_EV_QUEUED, t, 0, VT_OK, NULL);
        if (x->prio_mode) {
            vt__spin_lock(&x->heap_lock);
            int ok = heap_push_locked(x, t, x->heap_seq++);
            vt__spin_unlock(&x->heap_lock);
            go_multi(x);
            if (ok && vt_pool_submit(x->pool, drain_prio, x) == VT_OK)
                return;
            if (ok) {
                /* The entry stays; this thread takes a task itself. */
                drain_prio(x);
                return;
            }
            /* No memory for the heap: run it without its place in line. */
        }
    }
    if (VT_LIKELY(w->n < WL_CAP)) {
        /* t runs soon and then touches its successors: in a graph larger
         * than the caches their lines come from memory, so ask now. */
        __builtin_prefetch(t->succ[0], 1);
        __builtin_prefetch(t->succ[1], 1);
        w->stack[w->n++] = t;
        return;
    }
    submit_or_inline(w, drain, t);
}

/* Counters are decremented with plain loads and stores while one thread
 * runs the run's tasks. Before anything of the run is handed to the pool
 * where another worker may take it, every decrement becomes atomic: the
 * thread that hands work over switches first, and whoever takes that work
 * sees the switch (the pool's queue orders it), so no plain decrement ever
 * races an atomic one. */
static void go_multi(vt__run *x)
{
    if (!x->single && !atomic_load_explicit(&x->multi, memory_order_relaxed))
        atomic_store_explicit(&x->multi, 1, memory_order_relaxed);
}

/* A task that cannot be queued (the pool shut down under the run, or no
 * memory) still has to end, or the run would never finish: the run is
 * cancelled and the task processed here, which then starts no body. */
static void submit_or_inline(wl *w, vt_job_fn fn, vt_task *t)
{
    vt__run *x = w->x;
    go_multi(x);
    if (vt_pool_submit(x->pool, fn, t) == VT_OK)
        return;
    stop_run(x, STOP_CANCELLED);
    run_one(w, t);
}

/* Hands the oldest half of w's stack to the pool for idle workers. */
static void share(wl *w)
{
    go_multi(w->x);
    unsigned half = (w->n + 1) / 2;
    for (unsigned i = 0; i < half; i++)
        submit_or_inline(w, drain, w->stack[i]);
    memmove(w->stack, w->stack + half, (w->n - half) * sizeof *w->stack);
    w->n -= half;
}

/* Marks s to end SKIPPED: one of its dependencies did not succeed. */
static void doom(vt__run *x, vt_task *s)
{
    uint8_t st = atomic_load_explicit(&s->state, memory_order_relaxed);
    for (;;) {
        uint8_t want = (st & VT__ST_PARITY) == x->parity
                           ? (uint8_t)(st | VT__ST_DOOMED)
                           : (uint8_t)(x->parity | VT__ST_DOOMED | VT_TASK_PENDING);
        if (atomic_compare_exchange_weak_explicit(&s->state, &st, want, memory_order_release,
                                                  memory_order_relaxed))
            return;
    }
}

static inline void release_succ(wl *w, vt_task *s, int bad)
{
    vt__run *x = w->x;
    if (VT_UNLIKELY(bad))
        doom(x, s);
    if (s->npred != 1) {
        if (!atomic_load_explicit(&x->multi, memory_order_relaxed)) {
            uint32_t j = atomic_load_explicit(&s->join, memory_order_relaxed) - 1;
            atomic_store_explicit(&s->join, j, memory_order_relaxed);
            if (j)
                return;
        } else if (atomic_fetch_sub_explicit(&s->join, 1, memory_order_acq_rel) != 1) {
            return;
        }
    }
    push_ready(w, s);
}

static void complete_parent(wl *w, vt_task *parent);

/* t has ended in state: its dependants are told, its counter made ready
 * for the next run. */
static void finish(wl *w, vt_task *t, int state, unsigned attempts, int64_t started)
{
    vt__run *x = w->x;
    set_state(x, t, state);
    atomic_store_explicit(&t->join, t->npred, memory_order_relaxed);
    vt__wstat *ws = w->ws;
    count(w, &ws->n[state]);
    if (VT_UNLIKELY(x->slow_all)) {
        vt__cold *c = vt__cold_peek(t);
        if (c && c->restored)
            count(w, &ws->restored);
        record(x, t, state, attempts, started);
        vt__run_emit(x, VT_EV_FINISHED, t, attempts, c ? c->err : VT_OK,
                     c && c->errmsg ? c->errmsg : NULL);
    }
    int bad = state != VT_TASK_SUCCEEDED;
    VT__FOREACH_SUCC(t, s, release_succ(w, s, bad));
    if (VT_UNLIKELY(t->bits & VT__B_SUB)) {
        vt_task *parent = vt__cold_peek(t)->parent;
        vt__cold *pc = vt__cold_peek(parent);
        if (bad) {
            vt_task *none = NULL;
            atomic_compare_exchange_strong_explicit(&pc->sub_failed, &none, t, memory_order_acq_rel,
                                                    memory_order_relaxed);
        }
        if (atomic_fetch_sub_explicit(&pc->subs_left, 1, memory_order_acq_rel) == 1)
            complete_parent(w, parent);
    }
    w->done++;
}

/* Ends t without running its body: skipped, cancelled or restored. */
static void end_unrun(wl *w, vt_task *t, int state, vt_err e, const char *why)
{
    if (e || why) {
        vt__cold *c = vt__cold_get(t);
        if (c) {
            c->err = e;
            if (why && !c->errmsg)
                c->errmsg = vt_strdup(why);
        }
    }
    vt__cold *c = vt__cold_peek(t);
    finish(w, t, state, c ? c->attempts : 0, 0);
}

/* ---- Resume ---------------------------------------------------------------------------- */

struct vt__resume_entry {
    vt__resume_entry *next;
    char *name;
    uint8_t *fp;
    size_t fp_len;
    void *result;
    size_t result_len;
};

static size_t resume_slot(vt__run *x, const char *name)
{
    return vt_hash64(name, strlen(name), 0x72657375u) & (x->resume_cap - 1);
}

static vt_err resume_add(void *ud, const char *name, const void *fp, size_t fp_len,
                         const void *result, size_t result_len)
{
    vt__run *x = ud;
    vt__resume_entry *r = vt_calloc(1, sizeof *r);
    if (!r)
        return VT_ENOMEM;
    r->name = vt_strdup(name);
    r->fp = fp_len ? vt_alloc(fp_len) : NULL;
    r->result = result_len ? vt_alloc(result_len) : NULL;
    if (!r->name || (fp_len && !r->fp) || (result_len && !r->result)) {
        if (r->name)
            vt_free(r->name, strlen(r->name) + 1);
        if (r->fp)
            vt_free(r->fp, fp_len);
        if (r->result)
            vt_free(r->result, result_len);
        vt_free(r, sizeof *r);
        return VT_ENOMEM;
    }
    if (fp_len)
        memcpy(r->fp, fp, fp_len);
    if (result_len)
        memcpy(r->result, result, result_len);
    r->fp_len = fp_len;
    r->result_len = result_len;
    size_t i = resume_slot(x, name);
    r->next = x->resume[i];
    x->resume[i] = r;
    return VT_OK;
}

static void resume_free(vt__run *x)
{
    if (!x->resume)
        return;
    for (size_t i = 0; i < x->resume_cap; i++) {
        vt__resume_entry *r = x->resume[i];
        while (r) {
            vt__resume_entry *next = r->next;
            vt_free(r->name, strlen(r->name) + 1);
            if (r->fp)
                vt_free(r->fp, r->fp_len);
            if (r->result)
                vt_free(r->result, r->result_len);
            vt_free(r, sizeof *r);
            r = next;
        }
    }
    vt_free(x->resume, x->resume_cap * sizeof *x->resume);
    x->resume = NULL;
    x->resume_cap = 0;
}

/* 1 when the store says t succeeded with the same fingerprint: t then
 * takes that success (and its result) instead of running. */
static int try_restore(vt__run *x, vt_task *t)
{
    char nb[32];
    const char *name = vt__task_name(t, nb, sizeof nb);
    vt__resume_entry *r = x->resume[resume_slot(x, name)];
    while (r && strcmp(r->name, name))
        r = r->next;
    if (!r)
        return 0;
    vt__cold *c = vt__cold_peek(t);
    if (c && c->has_fp && (c->fp_len != r->fp_len || memcmp(c->fp, r->fp, r->fp_len)))
        return 0;
    c = vt__cold_get(t);
    if (!c)
        return 0;
    if (r->result_len) {
        c->result = vt_alloc(r->result_len);
        if (!c->result)
            return 0;
        memcpy(c->result, r->result, r->result_len);
        c->result_len = r->result_len;
    }
    c->restored = 1;
    return 1;
}

/* ---- Timeouts -------------------------------------------------------------------------
 * A timeout's job carries the task and the attempt's tag in the pointer's
 * low bits (tasks are 64-byte aligned): the one that clears timer_armed
 * from that tag — the job, or the body returning — decides. */

static uint32_t attempt_tag(unsigned attempt)
{
    return (attempt & 63u) + 1;
}

static void timeout_fired(void *arg)
{
    vt_task *t = (vt_task *)((uintptr_t)arg & ~(uintptr_t)63);
    uint32_t tag = (uint32_t)((uintptr_t)arg & 63) + 1;
    vt__run *x = &t->g->run;
    vt__cold *c = vt__cold_peek(t);
    uint32_t want = tag;
    if (atomic_compare_exchange_strong_explicit(&c->timer_armed, &want, 0, memory_order_acq_rel,
                                                memory_order_relaxed)) {
        atomic_store_explicit(&c->timed_out, (uint8_t)tag, memory_order_release);
        atomic_store_explicit(&c->stopped, 1, memory_order_release);
        vt__run_emit(x, VT_EV_TIMEOUT, t, c->attempts, VT_ETIMEDOUT, NULL);
        if (t->bits & VT__B_ASYNC)
            vt_fiber_cancel(c->fiber);
    }
    atomic_fetch_sub_explicit(&x->side_jobs, 1, memory_order_release);
}

static void arm_timeout(vt__run *x, vt_task *t, vt__cold *c, unsigned attempt)
{
    if (!c || !c->timeout_ns)
        return;
    atomic_store_explicit(&c->timer_armed, attempt_tag(attempt), memory_order_release);
    atomic_fetch_add_explicit(&x->side_jobs, 1, memory_order_relaxed);
    void *arg = (void *)((uintptr_t)t | (attempt & 63u));
    if (vt_pool_submit_after(x->pool, c->timeout_ns, timeout_fired, arg, &c->timer) != VT_OK) {
        atomic_store_explicit(&c->timer_armed, 0, memory_order_relaxed);
        atomic_fetch_sub_explicit(&x->side_jobs, 1, memory_order_relaxed);
    }
}

static void disarm_timeout(vt__run *x, vt__cold *c, unsigned attempt)
{
    if (!c || !c->timeout_ns)
        return;
    uint32_t want = attempt_tag(attempt);
    if (atomic_compare_exchange_strong_explicit(&c->timer_armed, &want, 0, memory_order_acq_rel,
                                                memory_order_relaxed) &&
        vt_timer_cancel(x->pool, c->timer) == VT_OK)
        atomic_fetch_sub_explicit(&x->side_jobs, 1, memory_order_release);
}

/* ---- Retries ----------------------------------------------------------------------------- */

static uint64_t run_rand(vt__run *x)
{
    vt__spin_lock(&x->rng_lock);
    uint64_t r = vt__rand_next(&x->rng);
    vt__spin_unlock(&x->rng_lock);
    return r;
}

static int64_t backoff_ns(vt__run *x, const vt_retry *p, unsigned failed_attempt)
{
    int64_t d = p->delay_ns;
    if (p->backoff == VT_BACKOFF_EXPONENTIAL) {
        int64_t cap = p->max_delay_ns ? p->max_delay_ns : VT_SEC(86400);
        for (unsigned i = 1; i < failed_attempt && d < cap; i++)
            d = d > cap / 2 ? cap : d * 2;
        if (d > cap)
            d = cap;
    }
    if (p->jitter > 0 && d > 0) {
        double u = (double)(run_rand(x) >> 11) / (double)(1ull << 53); /* [0, 1) */
        double f = 1.0 - p->jitter + 2.0 * p->jitter * u;
        d = (int64_t)((double)d * f);
    }
    return d < 0 ? 0 : d;
}

static void retry_now(void *arg)
{
    drain(arg);
}

/* ---- Running a task ----------------------------------------------------------------------- */

static void *fiber_body(void *arg);

static int64_t wall_if_store(vt__run *x)
{
    return x->srun ? vt__wall_ns() : 0;
}

/* Everything but the plain case: doomed, stopped, restored, async, retried,
 * timed, grouped, watched or recorded tasks. */
static void run_slow(wl *w, vt_task *t)
{
    vt__run *x = w->x;
    uint8_t st = atomic_load_explicit(&t->state, memory_order_acquire);
    vt__cold *c = vt__cold_peek(t);
    if ((st & VT__ST_PARITY) == x->parity && (st & VT__ST_DOOMED)) {
        end_unrun(w, t, VT_TASK_SKIPPED, VT_OK, "a dependency did not succeed");
        return;
    }
    int stop = atomic_load_explicit(&x->stop, memory_order_acquire);
    if (stop) {
        end_unrun(w, t, VT_TASK_CANCELLED, VT_ECANCELED,
                  stop == STOP_CANCELLED ? "the run was cancelled"
                                         : "the run stopped at a failure");
        return;
    }
    if (c && group_cancelled(x, c->group)) {
        end_unrun(w, t, VT_TASK_CANCELLED, VT_ECANCELED, "its group was cancelled");
        return;
    }
    if (x->resume && !(c && c->attempts) && try_restore(x, t)) {
        finish(w, t, VT_TASK_SUCCEEDED, 0, 0);
        return;
    }
    unsigned attempt = 1;
    if (c || (t->bits & VT__B_ASYNC)) {
        c = vt__cold_get(t);
        if (!c) {
            end_unrun(w, t, VT_TASK_FAILED, VT_ENOMEM, NULL);
            return;
        }
        attempt = ++c->attempts;
        c->nsubs = 0; /* subtasks of an earlier attempt are not this one's */
        c->sub_error = VT_OK;
        atomic_store_explicit(&c->stopped, 0, memory_order_relaxed);
        if (c->errmsg) {
            vt_free(c->errmsg, strlen(c->errmsg) + 1);
            c->errmsg = NULL;
        }
        c->err = VT_OK;
    }
    set_state(x, t, VT_TASK_RUNNING);
    int64_t started = wall_if_store(x);
    vt__run_emit(x, VT_EV_STARTED, t, attempt, VT_OK, NULL);
    if (t->bits & VT__B_ASYNC) {
        c->started_wall = started;
        vt_fiber_opts fo;
        memset(&fo, 0, sizeof fo);
        char nb[32];
        fo.name = vt__task_name(t, nb, sizeof nb);
        fo.detached = 1;
        fo.runtime = x->rt;
        fo.scope = c->group && c->group->scope ? c->group->scope : x->scope;
        go_multi(x);
        vt_err e = vt_fiber_spawn_ex(NULL, fiber_body, t, &fo);
        if (e)
            after_body(w, t, e, attempt, started);
        return;
    }
    arm_timeout(x, t, c, attempt);
    vt_task_ctx ctx = {x, t, attempt, w->worker};
    vt_err e = t->fn(&ctx, t->data);
    disarm_timeout(x, c, attempt);
    after_body(w, t, e, attempt, started);
}

static void run_one(wl *w, vt_task *t)
{
    vt__run *x = w->x;
    uint8_t st = atomic_load_explicit(&t->state, memory_order_relaxed);
    if (VT_UNLIKELY(x->slow_all | (t->bits & VT__B_SLOW) | (st & VT__ST_DOOMED) |
                    atomic_load_explicit(&x->stop, memory_order_relaxed))) {
        run_slow(w, t);
        return;
    }
    atomic_store_explicit(&t->state, (uint8_t)(x->parity | VT_TASK_RUNNING), memory_order_relaxed);
    /* The successors' lines are needed as soon as the body returns: in a
     * graph larger than the caches they come from memory, and the body
     * can run meanwhile. */
    __builtin_prefetch(t->succ[0], 1);
    __builtin_prefetch(t->succ[1], 1);
    vt_task_ctx ctx = {x, t, 1, w->worker};
    vt_err e = t->fn(&ctx, t->data);
    if (VT_UNLIKELY(e || atomic_load_explicit(&t->cold, memory_order_relaxed))) {
        after_body(w, t, e, 1, 0);
        return;
    }
    finish(w, t, VT_TASK_SUCCEEDED, 1, 0);
}

static void flush_done(wl *w);

static void *fiber_body(void *arg)
{
    vt_task *t = arg;
    vt__run *x = &t->g->run;
    vt__cold *c = vt__cold_peek(t);
    unsigned attempt = c->attempts;
    c->fiber = vt_fiber_self();
    arm_timeout(x, t, c, attempt);
    vt_task_ctx ctx = {x, t, attempt, vt_worker_index()};
    vt_err e = t->fn(&ctx, t->data);
    disarm_timeout(x, c, attempt);
    wl w;
    wl_init(&w, x);
    after_body(&w, t, e, attempt, c->started_wall);
    /* Sync bodies do not run on a fiber's stack: what became ready is
     * queued for the workers. */
    for (unsigned i = 0; i < w.n; i++)
        submit_or_inline(&w, drain, w.stack[i]);
    w.n = 0;
    flush_done(&w);
    return NULL;
}

/* Depth-first search over a parent's new subtasks; 1 and a message in buf
 * when their edges close a cycle. */
static int subs_cycle(vt__cold *pc, char *buf, size_t size)
{
    uint32_t n = pc->nsubs;
    uint8_t *colour = vt_calloc(n, 1);
    uint32_t *stack = vt_alloc((size_t)n * sizeof *stack);
    uint32_t *next = vt_calloc(n, sizeof *next);
    int found = 0;
    if (!colour || !stack || !next) {
        snprintf(buf, size, "out of memory checking subtasks for cycles");
        found = 1;
        goto out;
    }
    for (uint32_t root = 0; root < n && !found; root++) {
        if (colour[root])
            continue;
        uint32_t top = 0;
        stack[top++] = root;
        colour[root] = 1;
        while (top && !found) {
            uint32_t i = stack[top - 1];
            vt_task *t = pc->subs[i];
            unsigned ninl = t->bits & VT__B_NINLINE;
            vt__cold *c = vt__cold_peek(t);
            uint32_t total = ninl + ((t->bits & VT__B_MORE) ? c->nmore : 0);
            if (next[i] == total) {
                colour[i] = 2;
                top--;
                continue;
            }
            uint32_t k = next[i]++;
            vt_task *s = k < ninl ? t->succ[k] : c->more[k - ninl];
            uint32_t j = vt__cold_peek(s)->sub_pos;
            if (colour[j] == 2)
                continue;
            if (colour[j] == 1) {
                uint32_t from = top;
                while (from > 0 && stack[from - 1] != j)
                    from--;
                from--;
                size_t len = (size_t)snprintf(buf, size, "cycle: ");
                for (uint32_t q = from; q < top && len < size; q++)
                    len += (size_t)snprintf(buf + len, size - len, "%s -> ",
                                            vt__cold_peek(pc->subs[stack[q]])->name);
                if (len < size)
                    snprintf(buf + len, size - len, "%s", vt__cold_peek(s)->name);
                found = 1;
                break;
            }
            colour[j] = 1;
            stack[top++] = j;
        }
    }
out:
    if (colour)
        vt_free(colour, n);
    if (stack)
        vt_free(stack, (size_t)n * sizeof *stack);
    if (next)
        vt_free(next, (size_t)n * sizeof *next);
    return found;
}

static void launch_subs(wl *w, vt_task *t, vt__cold *c, unsigned attempt, int64_t started)
{
    vt__run *x = w->x;
    char msg[512];
    if (subs_cycle(c, msg, sizeof msg)) {
        for (uint32_t i = 0; i < c->nsubs; i++)
            set_state(x, c->subs[i], VT_TASK_CANCELLED);
        c->nsubs = 0;
        if (!c->errmsg)
            c->errmsg = vt_strdup(msg);
        after_body(w, t, VT_ECYCLE, attempt, started);
        return;
    }
    c->started_wall = started;
    uint32_t n = c->nsubs;
    for (uint32_t i = 0; i < n; i++)
        vt__cold_peek(c->subs[i])->launched = 1;
    atomic_store_explicit(&c->subs_left, n, memory_order_relaxed);
    atomic_store_explicit(&c->sub_failed, NULL, memory_order_relaxed);
    atomic_fetch_add_explicit(&x->remaining, n, memory_order_relaxed);
    atomic_fetch_add_explicit(&x->total, n, memory_order_relaxed);
    /* Read the list before making any ready: a subtask that ends at once
     * may complete the parent, whose next attempt reuses the list. */
    vt_task *roots[WL_CAP];
    uint32_t nroots = 0;
    for (uint32_t i = 0; i < n; i++) {
        vt_task *s = c->subs[i];
        if (s->npred)
            continue;
        if (nroots == WL_CAP) {
            for (uint32_t k = 0; k < nroots; k++)
                push_ready(w, roots[k]);
            nroots = 0;
        }
        roots[nroots++] = s;
    }
    for (uint32_t k = 0; k < nroots; k++)
        push_ready(w, roots[k]);
}

static void complete_parent(wl *w, vt_task *parent)
{
    vt__cold *pc = vt__cold_peek(parent);
    vt_task *failed = atomic_load_explicit(&pc->sub_failed, memory_order_acquire);
    if (!failed) {
        finish(w, parent, VT_TASK_SUCCEEDED, pc->attempts, pc->started_wall);
        return;
    }
    vt__cold *fc = vt__cold_peek(failed);
    char msg[512];
    snprintf(msg, sizeof msg, "subtask \"%s\" %s%s%s", fc->name,
             vt_task_state_name((vt_task_state)vt__task_state_raw(failed)), fc->errmsg ? ": " : "",
             fc->errmsg ? fc->errmsg : "");
    if (!pc->errmsg)
        pc->errmsg = vt_strdup(msg);
    pc->nsubs = 0;
    after_body(w, parent, VT_EFAILED, pc->attempts, pc->started_wall);
}

static int may_retry(vt__run *x, vt__cold *c, vt_err e, unsigned attempt)
{
    if (!c || attempt >= c->retry.max_attempts ||
        atomic_load_explicit(&x->stop, memory_order_acquire))
        return 0;
    if (e == VT_ECANCELED && group_cancelled(x, c->group))
        return 0;
    return 1;
}

static void after_body(wl *w, vt_task *t, vt_err e, unsigned attempt, int64_t started)
{
    vt__run *x = w->x;
    vt__cold *c = vt__cold_peek(t);
    if (c && c->attempts < attempt)
        c->attempts = attempt; /* a body of the fast path that made its record */
    if (c && !e && c->sub_error)
        e = c->sub_error;
    if (c && atomic_load_explicit(&c->timed_out, memory_order_acquire) == attempt_tag(attempt)) {
        e = VT_ETIMEDOUT;
        atomic_store_explicit(&c->timed_out, 0, memory_order_relaxed);
    }
    if (!e) {
        if (c && c->nsubs)
            launch_subs(w, t, c, attempt, started);
        else
            finish(w, t, VT_TASK_SUCCEEDED, attempt, started);
        return;
    }
    if (c && c->nsubs) {
        for (uint32_t i = 0; i < c->nsubs; i++)
            set_state(x, c->subs[i], VT_TASK_CANCELLED);
        c->nsubs = 0;
    }
    if (!c)
        c = vt__cold_get(t);
    if (c)
        c->err = e;
    if (e == VT_ECANCELED && (atomic_load_explicit(&x->stop, memory_order_acquire) ||
                              (c && group_cancelled(x, c->group)))) {
        finish(w, t, VT_TASK_CANCELLED, attempt, started);
        return;
    }
    if (may_retry(x, c, e, attempt)) {
        int64_t delay = backoff_ns(x, &c->retry, attempt);
        count(w, &w->ws->retries);
        set_state(x, t, VT_TASK_PENDING);
        if (x->mon) {
            char nb[32];
            vt_event ev;
            vt__event_init(x, &ev, VT_EV_RETRIED, t, attempt, nb);
            ev.err = e;
            ev.delay_ns = delay;
            ev.msg = c->errmsg ? c->errmsg : "";
            vt__monitor_emit(x->mon, &ev);
        }
        go_multi(x);
        if (vt_pool_submit_after(x->pool, delay, retry_now, t, NULL) == VT_OK)
            return;
    }
    finish(w, t, VT_TASK_FAILED, attempt, started);
    note_failure(x, t, e);
    if (x->mode == VT_FAIL_FAST)
        stop_run(x, STOP_FAILED);
}

/* ---- Jobs ------------------------------------------------------------------------------ */

static void run_done(vt__run *x);

static void flush_done(wl *w)
{
    vt__run *x = w->x;
    if (w->done &&
        atomic_fetch_sub_explicit(&x->remaining, w->done, memory_order_acq_rel) == w->done)
        run_done(x);
    w->done = 0;
}

static void drain(void *arg)
{
    vt_task *t = arg;
    vt__run *x = &t->g->run;
    wl w;
    wl_init(&w, x);
    /* Set once per job, not per task: bodies run only inside these jobs. */
    vt__run *outer = current_run;
    current_run = x;
    for (;;) {
        run_one(&w, t);
        if (!w.n)
            break;
        t = w.stack[--w.n];
        if (w.n && !x->single && vt_pool_idle_workers(x->pool))
            share(&w);
    }
    current_run = outer;
    flush_done(&w);
}

static void drain_prio(void *arg)
{
    vt__run *x = arg;
    vt_task *t = NULL;
    vt__spin_lock(&x->heap_lock);
    while (x->heap_n) {
        vt__heap_entry top = heap_pop_locked(x);
        uint8_t st = atomic_load_explicit(&top.t->state, memory_order_relaxed);
        if ((st & VT__ST_PARITY) != x->parity || (st & VT__ST_MASK) != VT_TASK_READY)
            continue; /* taken through a newer entry */
        int prio = atomic_load_explicit(&top.t->prio, memory_order_relaxed);
        if (prio != top.prio) {
            heap_push_locked(x, top.t, top.seq); /* cannot fail: one was popped */
            continue;
        }
        atomic_store_explicit(&top.t->state,
                              (uint8_t)((st & VT__ST_DOOMED) | x->parity | VT_TASK_RUNNING),
                              memory_order_relaxed);
        t = top.t;
        break;
    }
    vt__spin_unlock(&x->heap_lock);
    if (!t)
        return;
    wl w;
    wl_init(&w, x);
    vt__run *outer = current_run;
    current_run = x;
    run_one(&w, t);
    /* Whatever became ready went into the heap; the stack stays empty
     * unless the heap had no memory. */
    while (w.n)
        run_one(&w, w.stack[--w.n]);
    current_run = outer;
    flush_done(&w);
}

/* A priority that changes while its task waits in the heap: a new entry
 * goes in; the old one is passed over when it comes up. */
void vt__task_reprioritize(vt_task *t, int priority)
{
    vt_graph *g = t->g;
    int old = atomic_exchange_explicit(&t->prio, (int16_t)priority, memory_order_relaxed);
    if ((old == 0) != (priority == 0) && !(t->bits & VT__B_SUB))
        atomic_fetch_add_explicit(&g->nonzero_prios, priority ? 1 : -1, memory_order_relaxed);
    if (old == priority || !atomic_load_explicit(&g->running, memory_order_acquire))
        return;
    vt__run *x = &g->run;
    vt__spin_lock(&g->lock);
    if (g->live && x->prio_mode) {
        vt__spin_lock(&x->heap_lock);
        uint8_t st = atomic_load_explicit(&t->state, memory_order_relaxed);
        if ((st & VT__ST_PARITY) == x->parity && (st & VT__ST_MASK) == VT_TASK_READY)
            heap_push_locked(x, t, x->heap_seq++);
        vt__spin_unlock(&x->heap_lock);
    }
    vt__spin_unlock(&g->lock);
}

/* Starts the roots from a job, so that they go on a worker's own deque. */
static void seed(void *arg)
{
    vt__run *x = arg;
    vt_graph *g = x->g;
    wl w;
    wl_init(&w, x);
    for (size_t i = 0; i < g->nroots; i++) {
        if (x->prio_mode || x->slow_all) {
            push_ready(&w, g->roots[i]);
            while (w.n)
                submit_or_inline(&w, drain, w.stack[--w.n]);
        } else if (g->nroots == 1 && vt_pool_submit(x->pool, drain, g->roots[0]) == VT_OK) {
            /* One root: its job is the only thread of the run so far. */
        } else {
            submit_or_inline(&w, drain, g->roots[i]);
        }
    }
    flush_done(&w);
    atomic_fetch_sub_explicit(&x->side_jobs, 1, memory_order_release);
}

static void run_done(vt__run *x)
{
    atomic_store_explicit(&x->ended_ns, vt_pool_now(x->pool), memory_order_release);
    vt_future_set(x->done, NULL);
}

/* ---- Starting and ending ----------------------------------------------------------------- */

static vt_err fail_start(vt_graph *g, vt_err e)
{
    vt__run *x = &g->run;
    if (x->scope) {
        vt_scope_close(x->scope);
        x->scope = NULL;
    }
    for (vt_group *grp = g->groups; grp; grp = grp->next)
        if (grp->scope) {
            vt_scope_close(grp->scope);
            grp->scope = NULL;
        }
    if (x->done) {
        vt_future_free(x->done);
        x->done = NULL;
    }
    if (x->srun) {
        vt__store_run_end(x->srun, VT_RUN_FAILED, NULL);
        x->srun = NULL;
    }
    resume_free(x);
    atomic_store_explicit(&g->running, 0, memory_order_release);
    return e;
}

/* Drops what the roots list holds that is not a root any more. */
static void compact_roots(vt_graph *g)
{
    size_t k = 0;
    for (size_t i = 0; i < g->nroots; i++)
        if (g->roots[i]->npred == 0)
            g->roots[k++] = g->roots[i];
    g->nroots = k;
    g->stale_roots = 0;
}

vt_err vt_graph_start(vt_graph *g, vt_runtime *rt, const vt_run_opts *opts)
{
    if (!g || !rt)
        return VT_EINVAL;
    vt_run_opts o;
    memset(&o, 0, sizeof o);
    if (opts)
        o = *opts;
    if ((o.on_failure != VT_FAIL_FAST && o.on_failure != VT_KEEP_GOING) ||
        (o.run_id && (!*o.run_id || strlen(o.run_id) >= VT_RUN_ID_MAX)))
        return VT_EINVAL;
    if (current_run && current_run->g == g)
        return VT_EBUSY;
    int idle = 0;
    if (!atomic_compare_exchange_strong_explicit(&g->running, &idle, 1, memory_order_acq_rel,
                                                 memory_order_relaxed))
        return VT_EBUSY;
    /* Validation refuses a running graph: it runs before the flag counts. */
    atomic_store_explicit(&g->running, 0, memory_order_release);
    vt_err e = vt_graph_validate(g);
    if (e)
        return e;
    idle = 0;
    if (!atomic_compare_exchange_strong_explicit(&g->running, &idle, 1, memory_order_acq_rel,
                                                 memory_order_relaxed))
        return VT_EBUSY;

    vt__run *x = &g->run;
    vt_pool *pool = vt_runtime_pool(rt);
    if (g->ran)
        vt__graph_reset_run(g);
    if (x->heap)
        vt_free(x->heap, x->heap_cap * sizeof *x->heap);
    /* The counters stay where they are (vt_graph_summary may be reading
     * them from another thread); zeroed, or replaced for another size. */
    vt__wstat *stat = x->stat;
    unsigned nstat = x->nstat, need = vt_pool_workers(pool) + 2;
    if (stat && nstat != need) {
        vt_free(stat, nstat * sizeof *stat);
        stat = NULL;
    }
    if (!stat) {
        stat = vt_calloc(need, sizeof *stat);
        if (!stat) {
            x->stat = NULL;
            x->nstat = 0;
            atomic_store_explicit(&g->running, 0, memory_order_release);
            return VT_ENOMEM;
        }
    } else {
        for (unsigned i = 0; i < nstat; i++) {
            for (int k = 0; k < VT_TASK_STATES; k++)
                atomic_store_explicit(&stat[i].n[k], 0, memory_order_relaxed);
            atomic_store_explicit(&stat[i].restored, 0, memory_order_relaxed);
            atomic_store_explicit(&stat[i].retries, 0, memory_order_relaxed);
        }
    }
    memset(x, 0, sizeof *x);
    x->stat = stat;
    x->nstat = need;
    x->g = g;
    x->rt = rt;
    x->pool = pool;
    x->mode = o.on_failure;
    x->determ = (uint8_t)vt_pool_is_deterministic(pool);
    x->single = vt_pool_workers(pool) <= 1;
    x->prio_mode =
        o.priorities || atomic_load_explicit(&g->nonzero_prios, memory_order_relaxed) > 0;
    x->store = o.store;
    x->mon = o.monitor;
    x->slow_all = x->prio_mode || o.store || o.monitor;
    /* Jitter replays with the pool's seed in deterministic mode; elsewhere
     * runs of one graph should not all back off in step. */
    x->rng = x->determ ? vt_hash_mix64(vt_pool_seed(pool) ^ 0x6a09e667f3bcc909ull)
                       : vt_hash_mix64((uint64_t)vt_now_ns() ^ (uint64_t)(uintptr_t)g);
    if (o.run_id) {
        snprintf(x->run_id, sizeof x->run_id, "%s", o.run_id);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        static _Atomic uint32_t serial;
        snprintf(x->run_id, sizeof x->run_id, "%s-%lld%09ld-%u", g->name, (long long)ts.tv_sec,
                 ts.tv_nsec, atomic_fetch_add_explicit(&serial, 1, memory_order_relaxed));
    }
    if ((e = vt_future_new(&x->done)))
        return fail_start(g, e);
    if ((e = vt_scope_new(&x->scope, rt)))
        return fail_start(g, e);
    for (vt_group *grp = g->groups; grp; grp = grp->next) {
        grp->scope = NULL;
        for (size_t i = 0; i < grp->n; i++)
            if (grp->members[i]->bits & VT__B_ASYNC) {
                if ((e = vt_scope_new(&grp->scope, rt)))
                    return fail_start(g, e);
                break;
            }
    }
    if (o.store) {
        int resumed = 0;
        if ((e = vt__store_run_begin(o.store, x->run_id, g->name, g->ntasks, &x->srun, &resumed))) {
            vt__graph_errmsg(g, "run %s: the store refused it: %s", x->run_id,
                             *vt_store_last_error() ? vt_store_last_error() : vt_strerror(e));
            return fail_start(g, e);
        }
        if (resumed) {
            x->resume_cap = 1024;
            while (x->resume_cap < g->ntasks)
                x->resume_cap *= 2;
            x->resume = vt_calloc(x->resume_cap, sizeof *x->resume);
            if (!x->resume)
                return fail_start(g, VT_ENOMEM);
            if ((e = vt__store_load_succeeded(x->srun, resume_add, x))) {
                vt__graph_errmsg(g, "run %s: reading the store failed: %s", x->run_id,
                                 vt_strerror(e));
                return fail_start(g, e);
            }
        }
    }
    if (g->stale_roots)
        compact_roots(g);
    /* Several roots may start on several workers at once. */
    atomic_store_explicit(&x->multi, !x->single && g->nroots > 1, memory_order_relaxed);

    /* From here the run cannot fail to start. */
    uint8_t parity = (uint8_t)(graph_parity(g) ^ VT__ST_PARITY);
    x->parity = parity;
    atomic_store_explicit(&g->run_parity, parity, memory_order_release);
    uint8_t ran_before = g->ran;
    g->ran = 1;
    atomic_store_explicit(&g->end_state, 0, memory_order_relaxed);
    for (vt_group *grp = g->groups; grp; grp = grp->next)
        atomic_store_explicit(&grp->cancelled_parity, 0, memory_order_relaxed);
    atomic_store_explicit(&x->remaining, (int64_t)g->ntasks + 1, memory_order_relaxed);
    atomic_store_explicit(&x->total, g->ntasks, memory_order_relaxed);
    x->started_ns = vt_pool_now(pool);
    if (x->mon) {
        vt__monitor_attach(x->mon);
        vt_event ev;
        vt__event_init(x, &ev, VT_EV_RUN_STARTED, NULL, 0, NULL);
        ev.ts_ns = x->started_ns;
        ev.name = g->name;
        ev.msg = x->run_id;
        ev.tasks = g->ntasks;
        vt__monitor_emit(x->mon, &ev);
    }
    /* remaining holds one more than the tasks until this call is done, and
     * side_jobs counts the seed job until it is. */
    atomic_store_explicit(&x->side_jobs, 1, memory_order_relaxed);
    vt__spin_lock(&g->lock);
    g->live = 1;
    vt__spin_unlock(&g->lock);
    if ((e = vt_pool_submit(pool, seed, x)) != VT_OK) {
        vt__spin_lock(&g->lock);
        g->live = 0;
        vt__spin_unlock(&g->lock);
        /* The pool is shut (or out of memory): nothing ran, the run did
         * not start, and the previous run's states stand. */
        if (x->mon) {
            vt_event ev;
            vt__event_init(x, &ev, VT_EV_RUN_FINISHED, NULL, 0, NULL);
            ev.name = g->name;
            ev.msg = x->run_id;
            ev.err = e;
            vt__monitor_emit(x->mon, &ev);
            vt__monitor_detach(x->mon);
        }
        atomic_store_explicit(&g->run_parity, (uint8_t)(parity ^ VT__ST_PARITY),
                              memory_order_release);
        g->ran = ran_before;
        atomic_store_explicit(&g->end_state, 2, memory_order_relaxed);
        vt__graph_errmsg(g, "run %s could not start: %s", x->run_id, vt_strerror(e));
        return fail_start(g, e);
    }
    wl w;
    wl_init(&w, x);
    w.done = 1;
    flush_done(&w);
    return VT_OK;
}

static vt_run_status status_of(vt_err e)
{
    switch (e) {
    case VT_OK:
        return VT_RUN_SUCCEEDED;
    case VT_ECANCELED:
        return VT_RUN_CANCELLED;
    default:
        return VT_RUN_FAILED;
    }
}

/* The end of a run, once: every task is final. Waits for what may still
 * touch the run (timeout jobs, fibers returning), then the store and the
 * monitor catch up. */
static vt_err end_run(vt_graph *g)
{
    vt__run *x = &g->run;
    vt__spin_lock(&g->lock);
    g->live = 0;
    vt__spin_unlock(&g->lock);
    int fiber = vt_fiber_in();
    while (atomic_load_explicit(&x->side_jobs, memory_order_acquire)) {
        if (fiber)
            vt_fiber_yield(); /* the job may need this very worker */
        else if (x->determ)
            vt_pool_run_until(x->pool, VT_FOREVER);
        else
            vt__sleep_ns(VT_US(50));
    }
    if (x->determ && !fiber)
        vt_pool_run_until(x->pool, VT_FOREVER);
    vt__spin_lock(&g->lock);
    vt_scope *main_scope = x->scope;
    x->scope = NULL;
    vt__spin_unlock(&g->lock);
    vt_scope_close(main_scope);
    for (vt_group *grp = g->groups; grp; grp = grp->next) {
        vt__spin_lock(&g->lock);
        vt_scope *s = grp->scope;
        grp->scope = NULL;
        vt__spin_unlock(&g->lock);
        if (s)
            vt_scope_close(s);
    }
    vt_future_free(x->done);
    x->done = NULL;

    vt_run_summary sum;
    vt_graph_summary(g, &sum);
    vt_err result = VT_OK;
    int stop = atomic_load_explicit(&x->stop, memory_order_acquire);
    if (stop == STOP_CANCELLED) {
        result = VT_ECANCELED;
        vt__graph_errmsg(g, "run %s was cancelled", x->run_id);
    } else if (sum.failed || sum.cancelled || sum.skipped) {
        result = VT_EFAILED;
        if (atomic_load_explicit(&x->first_failure_set, memory_order_acquire))
            vt__graph_errmsg(g, "%s", x->first_failure);
        else
            vt__graph_errmsg(g, "run %s: %zu tasks failed, %zu cancelled, %zu skipped", x->run_id,
                             sum.failed, sum.cancelled, sum.skipped);
    }
    if (x->srun) {
        vt_err se = vt__store_run_end(x->srun, status_of(result), &sum);
        x->srun = NULL;
        if (se && !result) {
            result = se;
            vt__graph_errmsg(g, "run %s: writing to the store failed: %s", x->run_id,
                             *vt_store_last_error() ? vt_store_last_error() : vt_strerror(se));
        }
    }
    resume_free(x);
    if (x->mon) {
        vt_event ev;
        vt__event_init(x, &ev, VT_EV_RUN_FINISHED, NULL, 0, NULL);
        ev.ts_ns = atomic_load_explicit(&x->ended_ns, memory_order_acquire);
        ev.name = g->name;
        ev.msg = x->run_id;
        ev.err = result;
        ev.tasks = sum.total;
        vt__monitor_emit(x->mon, &ev);
        vt_monitor_flush(x->mon, VT_FOREVER);
        vt__monitor_detach(x->mon);
    }
    g->result = result;
    return result;
}

vt_err vt_graph_wait(vt_graph *g, int64_t deadline)
{
    if (!g)
        return VT_EINVAL;
    if (!g->ran)
        return VT_ESTATE;
    vt__run *x = &g->run;
    if (current_run == x)
        return VT_EDEADLK;
    for (;;) {
        int es = atomic_load_explicit(&g->end_state, memory_order_acquire);
        if (es == 2)
            return g->result;
        if (es == 1) {
            /* Another waiter is ending the run. */
            if (deadline != VT_FOREVER && vt_now_ns() >= deadline)
                return VT_ETIMEDOUT;
            vt__sleep_ns(VT_US(100));
            continue;
        }
        vt_err e;
        /* A deterministic run goes on only while this thread drives the
         * pool; a fiber of that pool waits as fibers do. */
        if (x->determ && !vt_fiber_in()) {
            e = vt_pool_run_until(x->pool, deadline == VT_FOREVER ? VT_FOREVER : deadline);
            if (e)
                return e;
            e = vt_future_await(x->done, NULL, VT_NOW);
            if (e == VT_ETIMEDOUT && deadline == VT_FOREVER) {
                vt__graph_errmsg(g,
                                 "run %s cannot go on: its tasks wait for something that no "
                                 "task will do (a deadlock)",
                                 x->run_id);
                return VT_EDEADLK;
            }
        } else {
            e = vt_future_await(x->done, NULL, deadline);
        }
        if (e)
            return e;
        es = 0;
        if (!atomic_compare_exchange_strong_explicit(&g->end_state, &es, 1, memory_order_acq_rel,
                                                     memory_order_relaxed))
            continue;
        vt_err r = end_run(g);
        atomic_store_explicit(&g->end_state, 2, memory_order_release);
        atomic_store_explicit(&g->running, 0, memory_order_release);
        return r;
    }
}

vt_err vt_graph_run(vt_graph *g, vt_runtime *rt, const vt_run_opts *opts)
{
    vt_err e = vt_graph_start(g, rt, opts);
    if (e)
        return e;
    return vt_graph_wait(g, VT_FOREVER);
}

/* Calls from other threads touch the run only while it is live, under
 * g->lock: vt_graph_start makes it live once it is set up, and the end of
 * the run makes it not live before anything of it goes. */
vt_err vt_graph_cancel(vt_graph *g)
{
    if (!g)
        return VT_EINVAL;
    vt__spin_lock(&g->lock);
    if (g->live)
        stop_locked(&g->run, STOP_CANCELLED);
    vt__spin_unlock(&g->lock);
    return VT_OK;
}

vt_err vt_group_cancel(vt_group *grp)
{
    if (!grp)
        return VT_EINVAL;
    vt_graph *g = grp->g;
    vt__run *x = &g->run;
    vt__spin_lock(&g->lock);
    if (g->live && atomic_exchange_explicit(&grp->cancelled_parity, (uint8_t)(x->parity | 1),
                                            memory_order_acq_rel) != (uint8_t)(x->parity | 1)) {
        if (grp->scope)
            vt_scope_cancel(grp->scope);
        if (x->mon) {
            vt_event ev;
            vt__event_init(x, &ev, VT_EV_CANCELLED, NULL, 0, NULL);
            ev.msg = grp->name;
            ev.err = VT_ECANCELED;
            vt__monitor_emit(x->mon, &ev);
        }
    }
    vt__spin_unlock(&g->lock);
    return VT_OK;
}

vt_err vt_graph_summary(const vt_graph *g, vt_run_summary *out)
{
    if (!g || !out)
        return VT_EINVAL;
    memset(out, 0, sizeof *out);
    const vt__run *x = &g->run;
    if (!g->ran || !x->stat) {
        out->total = g->ntasks;
        return VT_OK;
    }
    size_t n[VT_TASK_STATES] = {0};
    for (unsigned i = 0; i < x->nstat; i++) {
        for (int s = 0; s < VT_TASK_STATES; s++)
            n[s] += atomic_load_explicit(&x->stat[i].n[s], memory_order_relaxed);
        out->restored += atomic_load_explicit(&x->stat[i].restored, memory_order_relaxed);
        out->retries += atomic_load_explicit(&x->stat[i].retries, memory_order_relaxed);
    }
    out->total = atomic_load_explicit(&((vt__run *)x)->total, memory_order_relaxed);
    out->succeeded = n[VT_TASK_SUCCEEDED];
    out->failed = n[VT_TASK_FAILED];
    out->cancelled = n[VT_TASK_CANCELLED];
    out->skipped = n[VT_TASK_SKIPPED];
    out->started_ns = x->started_ns;
    out->ended_ns = atomic_load_explicit(&((vt__run *)x)->ended_ns, memory_order_acquire);
    return VT_OK;
}

const char *vt_graph_run_id(const vt_graph *g)
{
    return g && g->ran ? g->run.run_id : "";
}

/* ---- Subtasks ------------------------------------------------------------------------- */

vt_task *vt__sub_new(vt_task *parent, const char *name, vt_task_fn fn, void *data, uint8_t bits,
                     vt_err *err)
{
    vt_graph *g = parent->g;
    vt__cold *pc = vt__cold_get(parent);
    if (!pc) {
        *err = VT_ENOMEM;
        return NULL;
    }
    if (pc->nsubs == pc->cap_subs) {
        uint32_t ncap = pc->cap_subs ? pc->cap_subs * 2 : 8;
        vt_task **ns = vt_realloc(pc->subs, pc->cap_subs * sizeof *ns, ncap * sizeof *ns);
        if (!ns) {
            *err = VT_ENOMEM;
            return NULL;
        }
        pc->subs = ns;
        pc->cap_subs = ncap;
    }
    char pnb[32];
    const char *pname = vt__task_name(parent, pnb, sizeof pnb);
    vt__spin_lock(&g->lock);
    uint32_t index = g->nsubs_total;
    char own[32];
    if (!name) {
        snprintf(own, sizeof own, "#%" PRIu32, pc->nsubs);
        name = own;
    }
    size_t len = strlen(pname) + 1 + strlen(name) + 1;
    char *full = vt__arena_alloc(&g->run_arena, len);
    void *raw = vt__arena_alloc(&g->run_arena, sizeof(vt_task) + VT_CACHE_LINE);
    vt__spin_unlock(&g->lock);
    if (!full || !raw) {
        *err = VT_ENOMEM;
        return NULL;
    }
    snprintf(full, len, "%s/%s", pname, name);
    vt_task *t =
        (vt_task *)(((uintptr_t)raw + VT_CACHE_LINE - 1) & ~(uintptr_t)(VT_CACHE_LINE - 1));
    memset(t, 0, sizeof *t);
    t->fn = fn;
    t->data = data;
    t->g = g;
    t->index = index;
    t->bits = (uint8_t)(VT__B_SUB | bits);
    atomic_store_explicit(&t->state, (uint8_t)(g->run.parity | VT_TASK_PENDING),
                          memory_order_relaxed);
    vt__cold *c = vt__cold_get(t);
    if (!c) {
        *err = VT_ENOMEM;
        return NULL;
    }
    vt__spin_lock(&g->lock);
    g->nsubs_total++;
    vt__spin_unlock(&g->lock);
    c->name = full;
    c->parent = parent;
    c->sub_pos = pc->nsubs;
    c->group = pc->group;
    pc->subs[pc->nsubs++] = t;
    *err = VT_OK;
    return t;
}
