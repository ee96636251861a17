/* The pool: workers, submission, the search for work, parking, quiescence
 * and shutdown. The deques live in deque.c and forkjoin.c, the pool-wide
 * queues in queue.c, timers in timer.c, the deterministic driver in
 * determ.c. */
#include <string.h>

#include "sched_int.h"

VT_INTERNAL _Thread_local vt__wk *vt__self __attribute__((tls_model("initial-exec")));

/* Between two looks at the injection queue a LIFO worker runs at
 * most this many of its own jobs, so that outside submissions are not
 * starved by a job tree that keeps feeding itself (Go's scheduler does the
 * same with 61). */
#define INJECT_CHECK_EVERY 61
/* Jobs a worker moves from the injection queue to its deque at once. */
#define INJECT_BATCH 16
#define DEFAULT_FRAMES (1u << 20)
#define DEFAULT_SPIN_ROUNDS 64
#define DEQUE_INITIAL 256

void vt_pool_opts_init(vt_pool_opts *opts)
{
    if (opts)
        memset(opts, 0, sizeof(*opts));
}

/* ---- Aligned allocation of the pool and its workers ------------------------- */

static void *alloc_aligned(size_t size, void **raw)
{
    *raw = vt_alloc(size + VT_CACHE_LINE);
    if (!*raw)
        return NULL;
    uintptr_t a = ((uintptr_t)*raw + VT_CACHE_LINE - 1) & ~(uintptr_t)(VT_CACHE_LINE - 1);
    memset((void *)a, 0, size);
    return (void *)a;
}

/* ---- Waking and parking ------------------------------------------------------- */

void vt__pool_wake_worker(vt_pool *p, vt__wk *w)
{
    if (!atomic_load_explicit(&p->sleepers, memory_order_relaxed))
        return;
    vt__spin_lock(&p->idle_lock);
    for (unsigned i = 0; i < p->idle_count; i++) {
        if (p->idle_stack[i] == w->index) {
            p->idle_stack[i] = p->idle_stack[--p->idle_count];
            atomic_fetch_sub_explicit(&p->sleepers, 1, memory_order_relaxed);
            atomic_store_explicit(&w->wake, 1, memory_order_release);
            vt__spin_unlock(&p->idle_lock);
            vt__futex_wake(&w->wake, 1);
            return;
        }
    }
    vt__spin_unlock(&p->idle_lock);
}

/* Wakes the most recently parked worker (its cache is the warmest);
 * 0 when none was parked. */
static int wake_last_parked(vt_pool *p)
{
    vt__spin_lock(&p->idle_lock);
    if (!p->idle_count) {
        vt__spin_unlock(&p->idle_lock);
        return 0;
    }
    vt__wk *w = &p->workers[p->idle_stack[--p->idle_count]];
    atomic_fetch_sub_explicit(&p->sleepers, 1, memory_order_relaxed);
    atomic_store_explicit(&w->wake, 1, memory_order_release);
    vt__spin_unlock(&p->idle_lock);
    vt__futex_wake(&w->wake, 1);
    return 1;
}

void vt__pool_wake_one(vt_pool *p)
{
    if (atomic_load_explicit(&p->sleepers, memory_order_relaxed))
        wake_last_parked(p);
}

static void wake_all(vt_pool *p)
{
    while (wake_last_parked(p))
        ;
}

/* Wakes a sleeper when work appeared and nobody is looking for it: one
 * searching worker is enough, and it wakes the next when it finds work. */
void vt__pool_maybe_wake(vt_pool *p)
{
    if (atomic_load_explicit(&p->sleepers, memory_order_relaxed) &&
        !atomic_load_explicit(&p->searching, memory_order_relaxed))
        vt__pool_wake_one(p);
}

/* For work queued by a thread that will not run it itself: the fence pairs
 * with the one in park(), so either we see the sleeper or it sees the job. */
static void wake_for_outside_work(vt_pool *p)
{
    vt__fence_seq_cst();
    vt__pool_maybe_wake(p);
}

static int work_visible(vt_pool *p)
{
    if (vt__squeue_count(&p->sq))
        return 1;
    for (unsigned i = 0; i < p->nslots; i++)
        if (vt__deque_size(&p->workers[i].dq) || vt__fj_has_work(&p->workers[i]) ||
            atomic_load_explicit(&p->workers[i].later_count, memory_order_relaxed) ||
            atomic_load_explicit(&p->workers[i].inbox_state, memory_order_relaxed) == VT__INBOX_FULL)
            return 1;
    return 0;
}

static void notify_if_all_idle(vt_pool *p);

static void park(vt__wk *w)
{
    vt_pool *p = w->pool;
    vt__spin_lock(&p->idle_lock);
    atomic_store_explicit(&w->wake, 0, memory_order_relaxed);
    p->idle_stack[p->idle_count++] = w->index;
    atomic_fetch_add_explicit(&p->sleepers, 1, memory_order_seq_cst);
    vt__spin_unlock(&p->idle_lock);

    vt__fence_seq_cst();
    notify_if_all_idle(p);
    if (work_visible(p) || atomic_load_explicit(&p->state, memory_order_acquire) >= VT__CANCELLING) {
        /* Take ourselves off the stack, unless a waker already did. */
        vt__spin_lock(&p->idle_lock);
        for (unsigned i = 0; i < p->idle_count; i++) {
            if (p->idle_stack[i] == w->index) {
                p->idle_stack[i] = p->idle_stack[--p->idle_count];
                atomic_fetch_sub_explicit(&p->sleepers, 1, memory_order_relaxed);
                atomic_store_explicit(&w->wake, 1, memory_order_relaxed);
                break;
            }
        }
        vt__spin_unlock(&p->idle_lock);
    } else {
        vt__count(&w->m.parks, 1);
    }
    while (!atomic_load_explicit(&w->wake, memory_order_acquire))
        vt__futex_wait(&w->wake, 0, VT_FOREVER);
}

/* ---- Quiescence ---------------------------------------------------------------------
 * Quiet means every job submitted has finished (or was cancelled) and no
 * timer is pending. Counts only grow, and a job is counted as submitted
 * before it is queued, so reading the timers, then every finished count,
 * then every submitted count (acquire loads, in that order) can only see
 * "quiet" if the pool really was quiet at the moment between the two. */
int vt__pool_is_quiet(vt_pool *p)
{
    if (vt__timers_pending(p->timers))
        return 0;
    uint64_t fin = atomic_load_explicit(&p->settled, memory_order_acquire);
    for (unsigned i = 0; i < p->nslots; i++)
        fin += atomic_load_explicit(&p->workers[i].m.finished, memory_order_acquire);
    uint64_t sub = atomic_load_explicit(&p->ext_submitted, memory_order_acquire);
    for (unsigned i = 0; i < p->nslots; i++)
        sub += atomic_load_explicit(&p->workers[i].m.submitted, memory_order_acquire);
    return fin == sub;
}

/* From a worker that found no work: the pool can only be quiet when every
 * worker is searching or parked, so only then read every worker's counters
 * (which would cost each of them a cache miss). A worker calls this on
 * entering the search and again after registering as parked: the counts
 * change by seq_cst RMWs, so of the last two workers to go idle at least
 * one sees them add up. */
static void notify_if_all_idle(vt_pool *p)
{
    if (!atomic_load_explicit(&p->idle_waiters, memory_order_seq_cst))
        return;
    if (atomic_load_explicit(&p->searching, memory_order_seq_cst) +
            atomic_load_explicit(&p->sleepers, memory_order_seq_cst) >=
        p->nworkers)
        vt__pool_notify_quiet(p);
}

void vt__pool_notify_quiet(vt_pool *p)
{
    vt__fence_seq_cst();
    if (atomic_load_explicit(&p->idle_waiters, memory_order_relaxed) && vt__pool_is_quiet(p)) {
        atomic_fetch_add_explicit(&p->quiet_seq, 1, memory_order_release);
        vt__futex_wake(&p->quiet_seq, INT32_MAX);
    }
}

static vt_err wait_quiet(vt_pool *p, int64_t deadline)
{
    vt_err e = VT_OK;
    atomic_fetch_add_explicit(&p->idle_waiters, 1, memory_order_seq_cst);
    for (;;) {
        uint32_t seq = atomic_load_explicit(&p->quiet_seq, memory_order_acquire);
        if (vt__pool_is_quiet(p))
            break;
        if (atomic_load_explicit(&p->state, memory_order_acquire) >= VT__STOPPING) {
            e = VT_ECLOSED;
            break;
        }
        if (deadline != VT_FOREVER && vt_now_ns() >= deadline) {
            e = VT_ETIMEDOUT;
            break;
        }
        vt__futex_wait(&p->quiet_seq, seq, deadline);
    }
    atomic_fetch_sub_explicit(&p->idle_waiters, 1, memory_order_relaxed);
    return e;
}

/* ---- Running jobs ---------------------------------------------------------------- */

void vt__pool_run_job(vt__wk *w, const vt__job *job)
{
    w->group = job->tag;
    job->fn(job->arg);
    /* Release: a reader that sees this count sees everything the job did,
     * including the submissions it made (see vt__pool_is_quiet). */
    atomic_store_explicit(&w->m.finished, atomic_load_explicit(&w->m.finished, memory_order_relaxed) + 1,
                          memory_order_release);
}

static inline void count_submitted(_Atomic uint64_t *c, int64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + (uint64_t)n, memory_order_release);
}

/* Moves a few jobs from the injection queue to w's deque and hands back the
 * first. The jobs were counted when they were injected. */
static int take_injected(vt__wk *w, vt__job *job)
{
    vt_pool *p = w->pool;
    vt__job batch[INJECT_BATCH];
    uint64_t queued = vt__squeue_count(&p->sq);
    if (!queued)
        return 0;
    size_t want = (size_t)(queued / p->nworkers) + 1;
    size_t n = vt__squeue_pop(&p->sq, batch, want < INJECT_BATCH ? want : INJECT_BATCH);
    if (!n)
        return 0;
    *job = batch[0];
    for (size_t i = 1; i < n; i++) {
        if (vt__deque_push(&w->dq, batch[i].fn, batch[i].arg) != VT_OK) {
            /* No memory to queue it: running it now loses nothing. */
            vt__pool_run_job(w, &batch[i]);
        }
    }
    if (n > 1)
        vt__pool_maybe_wake(p);
    return 1;
}

static inline int take_later(vt__wk *w, vt__job *job)
{
    if (VT_LIKELY(!w->later.count))
        return 0;
    vt__ring_pop(&w->later, job);
    w->later_out++;
    atomic_store_explicit(&w->later_count, w->later.count, memory_order_relaxed);
    return 1;
}

/* The next job that w should run from its own queues, in the policy's
 * order: LIFO pools keep a deque per worker; the others one pool-wide
 * queue, whose order is the policy's promise. */
static inline int take_local(vt__wk *w, vt__job *job)
{
    vt_pool *p = w->pool;
    if (VT_UNLIKELY(!w->lifo_pool))
        return vt__squeue_pop(&p->sq, job, 1) == 1;
    if (VT_UNLIKELY(++w->since_inject >= INJECT_CHECK_EVERY)) {
        w->since_inject = 0;
        /* The pool-wide queue first: a worker whose fibers keep yielding
         * always has jobs queued behind its own. A yielded job jumps the
         * deque only once it has waited a whole period, so that a yield
         * still lets the worker's other ready jobs go first. */
        int overdue = w->later_out < w->later_old;
        w->later_old = w->later_in;
        if (take_injected(w, job) || (overdue && take_later(w, job)))
            return 1;
    }
    if (vt__deque_take(&w->dq, job)) {
        vt__donate_check(w);
        return 1;
    }
    return take_later(w, job) || take_injected(w, job);
}

enum { FOUND_NONE, FOUND_JOB, FOUND_FRAME };

/* One look everywhere: own queues, then every other worker from a random
 * one on, jobs first, then fork–join frames. */
static int find_work(vt__wk *w, vt__job *job)
{
    vt_pool *p = w->pool;
    if (take_local(w, job) || vt__inbox_take(w, job))
        return FOUND_JOB;
    unsigned n = p->nslots; /* guests' frames and jobs are stealable too */
    if (n < 2)
        return FOUND_NONE;
    unsigned start = vt__rand_below(&w->rng, n);
    for (unsigned i = 0; i < n; i++) {
        vt__wk *v = &p->workers[(start + i) % n];
        if (v == w)
            continue;
        vt__count(&w->m.steal_attempts, 1);
        if (w->lifo_pool) {
            int r;
            /* While our request is pending, watch only our own inbox:
             * probing the victim's deque would cost every push of its
             * owner a cache miss, and slow the very supply we wait for. */
            if ((vt__donate_ask(w, v) ||
                 atomic_load_explicit(&v->want, memory_order_relaxed) == w->index + 1) &&
                vt__inbox_wait(w, job))
                return FOUND_JOB;
            while ((r = vt__deque_steal(&v->dq, job)) < 0)
                ;
            if (r) {
                vt__count(&w->m.stolen, 1);
                return FOUND_JOB;
            }
        }
        if (vt__fj_steal(w, w->fj.dq, v) == VT__STEAL_DONE)
            return FOUND_FRAME;
    }
    return FOUND_NONE;
}

static int stopping(vt_pool *p)
{
    return atomic_load_explicit(&p->state, memory_order_acquire) >= VT__CANCELLING;
}

/* Searches until it finds work (FOUND_JOB with *job, or FOUND_FRAME when it
 * ran a stolen frame), parking between bounded spins; FOUND_NONE when the
 * pool is stopping. */
static int search(vt__wk *w, vt__job *job)
{
    vt_pool *p = w->pool;
    int64_t t0 = vt_now_ns();
    int found = FOUND_NONE;
    atomic_fetch_add_explicit(&p->searching, 1, memory_order_seq_cst);
    for (unsigned round = 0;; round++) {
        if (stopping(p))
            break;
        if ((found = find_work(w, job)) != FOUND_NONE)
            break;
        /* Nothing anywhere: the pool may have just become quiet. */
        if (round == 0)
            notify_if_all_idle(p);
        if (round >= p->opts.spin_rounds) {
            atomic_fetch_sub_explicit(&p->searching, 1, memory_order_seq_cst);
            park(w);
            atomic_fetch_add_explicit(&p->searching, 1, memory_order_seq_cst);
            round = 0;
        } else if (round % 16 == 15) {
            vt__thread_yield();
        } else {
            vt__cpu_relax();
        }
    }
    /* The last searcher to find work hands the search on. */
    if (atomic_fetch_sub_explicit(&p->searching, 1, memory_order_seq_cst) == 1 && found != FOUND_NONE)
        vt__pool_maybe_wake(p);
    vt__count(&w->m.idle_ns, (uint64_t)(vt_now_ns() - t0));
    return found;
}

static void *worker_main(void *arg)
{
    vt__wk *w = arg;
    vt_pool *p = w->pool;
    vt__self = w;
    vt__job job;
    for (;;) {
        /* On VT_SHUTDOWN_CANCEL no queued job starts any more. */
        if (VT_UNLIKELY(atomic_load_explicit(&p->state, memory_order_acquire) >= VT__CANCELLING))
            break;
        if (take_local(w, &job)) {
            vt__pool_run_job(w, &job);
            continue;
        }
        int found = search(w, &job);
        if (found == FOUND_JOB)
            vt__pool_run_job(w, &job);
        else if (found == FOUND_NONE)
            break;
    }
    vt__self = NULL;
    atomic_fetch_add_explicit(&p->exited, 1, memory_order_release);
    vt__futex_wake(&p->exited, INT32_MAX);
    return NULL;
}

/* ---- Submission -------------------------------------------------------------------- */

static inline int is_mine(vt_pool *p, vt__wk *w)
{
    return w && w->pool == p;
}

/* Queues a job that is already counted in *counter (so a failure must
 * uncount it). */
static vt_err enqueue(vt_pool *p, vt__wk *w, vt__job job, unsigned level)
{
    if (p->opts.deterministic)
        return vt__det_push(p, job);
    if (w && w->lifo_pool) {
        vt_err e = vt__deque_push(&w->dq, job.fn, job.arg);
        if (!e) {
            vt__donate_check(w);
            vt__pool_maybe_wake(p);
        }
        return e;
    }
    vt_err e = vt__squeue_push(&p->sq, job, level);
    if (e)
        return e;
    if (w)
        vt__pool_maybe_wake(p);
    else
        wake_for_outside_work(p);
    return VT_OK;
}

static vt_err submit(vt_pool *p, vt_job_fn fn, void *arg, const vt_job_opts *opts)
{
    if (!p || !fn)
        return VT_EINVAL;
    vt__wk *w = vt__worker_self();
    if (!is_mine(p, w))
        w = NULL;
    int state = atomic_load_explicit(&p->state, memory_order_acquire);
    if (state != VT__RUNNING && !(state == VT__DRAINING && w))
        return VT_ECLOSED;
    unsigned level = 0;
    vt__job job = {fn, arg, 0};
    if (p->opts.policy == VT_POLICY_PRIORITY && opts) {
        if (opts->priority < 0 || (unsigned)opts->priority >= p->opts.priority_levels)
            return VT_ERANGE;
        level = (unsigned)opts->priority;
    } else if (p->opts.policy == VT_POLICY_FAIR) {
        if (opts && opts->group)
            job.tag = opts->group;
        else
            job.tag = w ? w->group : ((uint64_t)1 << 32) | vt__thread_id();
    }
    _Atomic uint64_t *counter = w ? &w->m.submitted : &p->ext_submitted;
    if (w)
        count_submitted(counter, 1);
    else
        atomic_fetch_add_explicit(counter, 1, memory_order_seq_cst);
    vt_err e = enqueue(p, w, job, level);
    if (e) {
        if (w)
            count_submitted(counter, -1);
        else
            atomic_fetch_sub_explicit(counter, 1, memory_order_seq_cst);
    }
    return e;
}

vt_err vt_pool_submit(vt_pool *p, vt_job_fn fn, void *arg)
{
    vt__wk *w = vt__worker_self();
    /* The common case inline: a worker feeding its own LIFO deque. */
    if (VT_LIKELY(w && w->lifo_pool == p && p && fn &&
                  atomic_load_explicit(&p->state, memory_order_relaxed) <= VT__DRAINING)) {
        count_submitted(&w->m.submitted, 1);
        if (VT_UNLIKELY(vt__deque_push(&w->dq, fn, arg) != VT_OK)) {
            count_submitted(&w->m.submitted, -1);
            return VT_ENOMEM;
        }
        vt__donate_check(w);
        vt__pool_maybe_wake(p);
        return VT_OK;
    }
    return submit(p, fn, arg, NULL);
}

vt_err vt_pool_submit_ex(vt_pool *p, vt_job_fn fn, void *arg, const vt_job_opts *opts)
{
    return submit(p, fn, arg, opts);
}

/* ---- Timers ------------------------------------------------------------------------ */

/* From the timer service, under its lock, for a batch about to fire: the
 * jobs count as submitted before the timers stop counting as pending, and
 * are queued only after, so at no moment does the pool look quiet because
 * of them. */
vt_err vt_pool_submit_later(vt_pool *p, vt_job_fn fn, void *arg)
{
    vt__wk *w = vt__worker_self();
    if (!w || w->lifo_pool != p || !fn || p->opts.deterministic ||
        atomic_load_explicit(&p->state, memory_order_relaxed) > VT__DRAINING)
        return submit(p, fn, arg, NULL);
    /* Others are asleep: this worker has more than it runs at once, so
     * share it through the injection queue, where they look. */
    if (w->later.count && atomic_load_explicit(&p->sleepers, memory_order_relaxed))
        return submit(p, fn, arg, NULL);
    count_submitted(&w->m.submitted, 1);
    if (vt__ring_push(&w->later, (vt__job){fn, arg, w->group}) != VT_OK) {
        count_submitted(&w->m.submitted, -1);
        return VT_ENOMEM;
    }
    w->later_in++;
    atomic_store_explicit(&w->later_count, w->later.count, memory_order_relaxed);
    return VT_OK;
}

int vt_worker_take(vt_job_fn *fn, void **arg)
{
    vt__wk *w = vt__worker_self();
    if (!w || !fn || !arg)
        return 0;
    vt_pool *p = w->pool;
    vt__job job;
    if (p->opts.deterministic) {
        if (!vt__det_pick(p, &job))
            return 0;
    } else if (!take_local(w, &job) && !vt__inbox_take(w, &job)) {
        return 0;
    }
    /* Counted as run now: the job that called us is still running, so the
     * pool cannot look quiet before the caller has run this one. */
    w->group = job.tag;
    atomic_store_explicit(&w->m.finished, atomic_load_explicit(&w->m.finished, memory_order_relaxed) + 1,
                          memory_order_release);
    *fn = job.fn;
    *arg = job.arg;
    return 1;
}

static void timer_announce(void *ud, size_t n)
{
    vt_pool *p = ud;
    atomic_fetch_add_explicit(&p->ext_submitted, n, memory_order_seq_cst);
}

/* From the timer service, for each timer that fired (already counted). */
static void timer_dispatch(void *ud, vt_job_fn fn, void *arg)
{
    vt_pool *p = ud;
    if (atomic_load_explicit(&p->state, memory_order_acquire) >= VT__CANCELLING) {
        atomic_fetch_add_explicit(&p->cancelled, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&p->settled, 1, memory_order_release);
        if (p->opts.on_cancel)
            p->opts.on_cancel(p->opts.on_cancel_ud, fn, arg);
        vt__pool_notify_quiet(p);
        return;
    }
    vt__job job = {fn, arg, 0};
    vt__wk *w = vt__worker_self();
    if (enqueue(p, is_mine(p, w) ? w : NULL, job, 0) != VT_OK) {
        /* Out of memory with a due job in hand: run it here rather than
         * drop it. */
        vt_log(VT_LOG_ERROR, "sched", "no memory to queue a fired timer's job; running it on the timer thread");
        fn(arg);
        atomic_fetch_add_explicit(&p->settled, 1, memory_order_release);
        vt__pool_notify_quiet(p);
    }
}

vt_err vt_pool_submit_at(vt_pool *p, int64_t deadline, vt_job_fn fn, void *arg, vt_timer *out)
{
    if (!p || !fn)
        return VT_EINVAL;
    if (atomic_load_explicit(&p->state, memory_order_acquire) != VT__RUNNING)
        return VT_ECLOSED;
    return vt__timers_add(p->timers, deadline < 0 ? 0 : deadline, fn, arg, out);
}

vt_err vt_pool_submit_after(vt_pool *p, int64_t delay_ns, vt_job_fn fn, void *arg, vt_timer *out)
{
    if (!p || delay_ns < 0)
        return VT_EINVAL;
    int64_t now = vt_pool_now(p);
    int64_t deadline = delay_ns > INT64_MAX - now ? INT64_MAX : now + delay_ns;
    return vt_pool_submit_at(p, deadline, fn, arg, out);
}

vt_err vt_timer_cancel(vt_pool *p, vt_timer t)
{
    if (!p)
        return VT_EINVAL;
    vt_err e = vt__timers_cancel(p->timers, t);
    /* Only the cancel of the last pending timer can make the pool quiet. */
    if (!e && vt__timers_pending(p->timers) == 0)
        vt__pool_notify_quiet(p);
    return e;
}

int64_t vt_pool_now(const vt_pool *p)
{
    if (p && p->opts.deterministic)
        return atomic_load_explicit(&((vt_pool *)p)->det_clock, memory_order_acquire);
    return vt_now_ns();
}

/* ---- Creation ------------------------------------------------------------------------ */

static vt_err check_opts(vt_pool_opts *o)
{
    if (o->workers > VT_POOL_MAX_WORKERS || (unsigned)o->policy > VT_POLICY_FAIR ||
        o->priority_levels > VT_PRIORITY_MAX_LEVELS || o->starvation_limit > 1000000 ||
        (o->frames && (o->frames < 64 || o->frames > (1u << 28))) || o->spin_rounds > 1000000 ||
        (o->deterministic && o->workers > 1))
        return VT_EINVAL;
    if (o->deterministic)
        o->workers = 1;
    if (!o->workers)
        o->workers = vt_cpu_count();
    if (o->workers > VT_POOL_MAX_WORKERS)
        o->workers = VT_POOL_MAX_WORKERS;
    if (!o->priority_levels)
        o->priority_levels = 4;
    if (!o->starvation_limit)
        o->starvation_limit = 16;
    if (!o->frames)
        o->frames = DEFAULT_FRAMES;
    if (!o->spin_rounds)
        o->spin_rounds = DEFAULT_SPIN_ROUNDS;
    if (!o->name)
        o->name = "vitte";
    return VT_OK;
}

static void pool_release(vt_pool *p);

vt_err vt_pool_new(vt_pool **out, const vt_pool_opts *opts)
{
    if (!out)
        return VT_EINVAL;
    *out = NULL;
    vt_pool_opts o;
    vt_pool_opts_init(&o);
    if (opts)
        o = *opts;
    vt_err e = check_opts(&o);
    if (e)
        return e;

    void *raw;
    vt_pool *p = alloc_aligned(sizeof(*p), &raw);
    if (!p)
        return VT_ENOMEM;
    p->raw = raw;
    p->opts = o;
    p->nworkers = o.workers;
    p->nslots = o.workers + (o.deterministic || o.no_guest ? 0 : VT__GUESTS);
    atomic_init(&p->state, VT__RUNNING);
    p->det_rng = o.seed;
    char name_buf[32];
    snprintf(name_buf, sizeof(name_buf), "%.10s-timer", o.name);

    p->workers = alloc_aligned(sizeof(vt__wk) * p->nslots, &p->workers_raw);
    p->idle_stack = vt_calloc(p->nworkers, sizeof(*p->idle_stack));
    if (!p->workers || !p->idle_stack) {
        pool_release(p);
        return VT_ENOMEM;
    }
    if ((e = vt__squeue_init(&p->sq, o.policy, o.priority_levels, o.starvation_limit))) {
        pool_release(p);
        return e;
    }
    p->sq_ready = 1;
    for (unsigned i = 0; i < p->nslots; i++) {
        vt__wk *w = &p->workers[i];
        w->pool = p;
        w->lifo_pool = o.policy == VT_POLICY_LIFO && !o.deterministic ? p : NULL;
        w->index = i;
        w->rng = vt_hash_mix64((uint64_t)(uintptr_t)p ^ (i + 1));
        if ((e = vt__deque_init(&w->dq, DEQUE_INITIAL)) || (e = vt__fj_init(w, o.frames))) {
            pool_release(p);
            return e;
        }
        p->workers_ready = i + 1;
    }
    if ((e = vt__timers_new(&p->timers, !o.deterministic, timer_dispatch, p, name_buf))) {
        pool_release(p);
        return e;
    }
    vt__timers_set_announce(p->timers, timer_announce);
    if (!o.deterministic) {
        for (unsigned i = 0; i < p->nworkers; i++) {
            vt__wk *w = &p->workers[i];
            snprintf(name_buf, sizeof(name_buf), "%.10s-%u", o.name, i);
            if ((e = vt__thread_create(&w->thread, worker_main, w, 0, name_buf))) {
                atomic_store_explicit(&p->state, VT__STOPPING, memory_order_release);
                wake_all(p);
                pool_release(p);
                return e;
            }
            w->thread_started = 1;
        }
    }
    *out = p;
    return VT_OK;
}

static void report_cancel(void *ud, vt__job job)
{
    vt_pool *p = ud;
    if (p->opts.on_cancel)
        p->opts.on_cancel(p->opts.on_cancel_ud, job.fn, job.arg);
}

/* Reports every job still queued to on_cancel and counts it cancelled.
 * Only once no worker runs. */
static void cancel_leftovers(vt_pool *p)
{
    vt__job job;
    uint64_t n = 0;
    vt_cancel_fn cb = p->opts.on_cancel;
    for (unsigned i = 0; i < p->workers_ready; i++) {
        vt__wk *w = &p->workers[i];
        while (vt__deque_take(&w->dq, &job) || take_later(w, &job)) {
            if (cb)
                cb(p->opts.on_cancel_ud, job.fn, job.arg);
            n++;
        }
        n += vt__inbox_drain(w, report_cancel, p);
    }
    if (p->sq_ready) {
        while (vt__squeue_pop(&p->sq, &job, 1)) {
            if (cb)
                cb(p->opts.on_cancel_ud, job.fn, job.arg);
            n++;
        }
    }
    for (size_t i = 0; i < p->det_count; i++) {
        if (cb)
            cb(p->opts.on_cancel_ud, p->det_ready[i].fn, p->det_ready[i].arg);
        n++;
    }
    p->det_count = 0;
    atomic_fetch_add_explicit(&p->cancelled, n, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->settled, n, memory_order_release);
}

/* Joins the workers (they must be told to stop already) and frees all. */
static void pool_release(vt_pool *p)
{
    for (unsigned i = 0; p->workers && i < p->nworkers; i++) {
        if (p->workers[i].thread_started) {
            vt__thread_join(p->workers[i].thread, NULL);
            p->workers[i].thread_started = 0;
        }
    }
    cancel_leftovers(p);
    vt__timers_free(p->timers, p->opts.on_cancel, p->opts.on_cancel_ud);
    for (unsigned i = 0; i < p->workers_ready; i++) {
        vt__deque_destroy(&p->workers[i].dq);
        vt__ring_free(&p->workers[i].later);
        vt__fj_destroy(&p->workers[i]);
    }
    if (p->sq_ready)
        vt__squeue_destroy(&p->sq);
    vt_free(p->det_ready, p->det_cap * sizeof(*p->det_ready));
    vt_free(p->idle_stack, p->nworkers * sizeof(*p->idle_stack));
    vt_free(p->workers_raw, sizeof(vt__wk) * p->nslots + VT_CACHE_LINE);
    vt_free(p->raw, sizeof(*p) + VT_CACHE_LINE);
}

/* ---- Waiting and stopping ---------------------------------------------------------------- */

vt_err vt_pool_wait_idle(vt_pool *p, int64_t deadline)
{
    if (!p)
        return VT_EINVAL;
    if (vt__worker_self() && vt__worker_self()->pool == p)
        return VT_ESTATE;
    if (p->opts.deterministic)
        return vt__det_drive(p, deadline, NULL, NULL);
    return wait_quiet(p, deadline);
}

vt_err vt_pool_run_until(vt_pool *p, int64_t until)
{
    if (!p)
        return VT_EINVAL;
    if (!p->opts.deterministic)
        return VT_ENOTSUP;
    vt_err e = vt__det_drive(p, until, NULL, NULL);
    if (e == VT_OK && until != VT_FOREVER && vt_pool_now(p) < until) {
        /* Quiet before until: time still passes up to it. */
        atomic_store_explicit(&p->det_clock, until, memory_order_release);
    }
    return e == VT_ETIMEDOUT ? VT_OK : e;
}

static vt_err wait_exited(vt_pool *p, int64_t deadline)
{
    for (;;) {
        uint32_t n = atomic_load_explicit(&p->exited, memory_order_acquire);
        if (n >= p->nworkers)
            return VT_OK;
        if (deadline != VT_FOREVER && vt_now_ns() >= deadline)
            return VT_ETIMEDOUT;
        vt__futex_wait(&p->exited, n, deadline);
    }
}

vt_err vt_pool_shutdown(vt_pool *p, vt_shutdown_mode mode, int64_t deadline)
{
    if (!p || (mode != VT_SHUTDOWN_DRAIN && mode != VT_SHUTDOWN_CANCEL))
        return VT_EINVAL;
    if (vt__worker_self() && vt__worker_self()->pool == p)
        return VT_ESTATE;
    int expected = VT__RUNNING;
    int next = mode == VT_SHUTDOWN_DRAIN ? VT__DRAINING : VT__CANCELLING;
    if (!atomic_compare_exchange_strong_explicit(&p->state, &expected, next, memory_order_acq_rel,
                                                 memory_order_acquire))
        return VT_ECLOSED;
    p->shutdown_called = 1;
    size_t n = vt__timers_cancel_all(p->timers, p->opts.on_cancel, p->opts.on_cancel_ud);
    atomic_fetch_add_explicit(&p->cancelled, n, memory_order_relaxed);
    /* Those timers may have been all that kept other waiters waiting. */
    if (n)
        vt__pool_notify_quiet(p);

    vt_err e = VT_OK;
    if (p->opts.deterministic) {
        if (mode == VT_SHUTDOWN_DRAIN)
            e = vt__det_drive(p, VT_FOREVER, NULL, NULL);
        atomic_store_explicit(&p->state, VT__STOPPED, memory_order_release);
        cancel_leftovers(p);
        return e;
    }
    if (mode == VT_SHUTDOWN_DRAIN)
        e = wait_quiet(p, deadline);
    atomic_store_explicit(&p->state, VT__STOPPING, memory_order_release);
    wake_all(p);
    vt_err ex = wait_exited(p, deadline);
    if (ex)
        return ex;
    for (unsigned i = 0; i < p->nworkers; i++) {
        if (p->workers[i].thread_started) {
            vt__thread_join(p->workers[i].thread, NULL);
            p->workers[i].thread_started = 0;
        }
    }
    atomic_store_explicit(&p->state, VT__STOPPED, memory_order_release);
    cancel_leftovers(p);
    vt__pool_notify_quiet(p);
    return e;
}

void vt_pool_free(vt_pool *p)
{
    if (!p)
        return;
    if (vt__worker_self() && vt__worker_self()->pool == p) {
        /* It would join the thread it runs on: refuse, and keep the pool. */
        vt_log(VT_LOG_ERROR, "sched", "vt_pool_free called from one of the pool's own workers; pool not freed");
        return;
    }
    if (!p->shutdown_called)
        vt_pool_shutdown(p, VT_SHUTDOWN_DRAIN, VT_FOREVER);
    atomic_store_explicit(&p->state, VT__STOPPING, memory_order_release);
    wake_all(p);
    pool_release(p);
}

unsigned vt_pool_workers(const vt_pool *p)
{
    return p ? p->nworkers : 0;
}

int vt_pool_is_deterministic(const vt_pool *p)
{
    return p && p->opts.deterministic;
}

uint64_t vt_pool_seed(const vt_pool *p)
{
    return p && p->opts.deterministic ? p->opts.seed : 0;
}

unsigned vt_pool_idle_workers(const vt_pool *p)
{
    if (!p)
        return 0;
    return atomic_load_explicit(&((vt_pool *)p)->sleepers, memory_order_relaxed) +
           atomic_load_explicit(&((vt_pool *)p)->searching, memory_order_relaxed);
}

vt_pool *vt_pool_current(void)
{
    vt__wk *w = vt__worker_self();
    return w ? w->pool : NULL;
}

int vt_worker_index(void)
{
    vt__wk *w = vt__worker_self();
    return w ? (int)w->index : -1;
}
