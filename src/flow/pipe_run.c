/* pipe_run.c — running a pipeline.
 *
 * Items travel in batches, and a batch is carried through the stages by
 * one job (or fiber) at a time: the job runs the batch through a stage,
 * leaves the stage and goes straight on to the next one, so an item's data
 * stays in the cache of the worker that made it, and nothing is queued,
 * woken or locked per item. What crosses between workers is per batch: a
 * stage's turn, a batch waiting for it, a free batch for the source.
 *
 * Stages are entered, not fed:
 *  - the source is taken in turn: the batch that holds it starts the next
 *    source job at once (if a batch is free: free batches are the
 *    pipeline's tokens, so the items in flight never pass max_batches x
 *    batch; with none free the source is parked, and the next batch to
 *    come home restarts it), so that another worker takes that job while
 *    this one fills, and takes the source over as soon as it is left;
 *  - a SERIAL stage takes batches in the order of their seq (numbered by
 *    the source, or again by an unordered PARALLEL stage as they leave it):
 *    a batch that comes early waits in the stage's ring, at seq modulo
 *    max_batches — every seq between the stage's turn and the waiting one
 *    belongs to a live batch, so two waiting batches never share a slot —
 *    and the batch leaving the stage hands it to the next one in order;
 *  - a PARALLEL stage with a limit takes batches up to it, the others wait
 *    in arrival order; without one, it takes every batch at once.
 * A batch that waits costs no job: whoever hands it the stage schedules
 * it. A batch that is next in line behind one being worked on (at a serial
 * stage or the source) spins for its turn instead, briefly: the hand-over
 * would cost more, and move its items to another cache. Free batches are
 * kept per worker, so that the buffers a worker fills are ones in its
 * cache. On one worker, the LIFO deque makes all this a loop — source,
 * stages, sink, next source.
 *
 * A failed item is retried in place (its batch keeps its stage; the
 * backoff is a timer that resumes the batch, no worker waits), skipped, or
 * stops the pipeline: the stop is a flag checked before every item; the
 * stopper also takes the batches waiting in stages and the sleepers whose
 * timer it could cancel, so that every batch comes home, and the run ends
 * when the last one does. */
#include <stdio.h>
#include <string.h>

#include "flow_int.h"

enum {
    R_DONE,  /* the stage is done with the batch */
    R_SLEEP, /* a timer resumes it (a retry's backoff) */
    R_STOP   /* the pipeline stops: drop it */
};

enum {
    F_NEXT,  /* skip the item */
    F_RETRY, /* call again now */
    F_SLEEP,
    F_STOP
};

/* The longest a batch spins for its turn at a serial stage (or the
 * source); a stage that keeps a batch longer is waited for by parking the
 * batch, handed over (with its data, to the other worker's cache) when its
 * turn comes. */
#define SPIN_MAX_NS VT_US(20)

/* The pipeline whose job the calling thread runs (sync pipelines): a wait
 * from there would wait for itself. */
static _Thread_local vt_pipeline *current;

static void go(vt__pbatch *b);

static inline int stopped(const vt_pipeline *p)
{
    return atomic_load_explicit(&((vt_pipeline *)p)->stop, memory_order_relaxed) != VT__STOP_NONE;
}

/* Counters of a serial stage have one writer at a time (the stage's
 * holder, handed over under the stage's lock): a load and a store. A
 * parallel stage's are shared. */
static inline void count(const vt_pipe_stage *s, _Atomic uint64_t *c, uint64_t v)
{
    if (!v)
        return;
    /* Release: a reader that sees this count sees the ones counted before
     * it (items taken before items passed on). */
    if (s->kind == VT_PIPE_SERIAL)
        atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
                              memory_order_release);
    else
        atomic_fetch_add_explicit(c, v, memory_order_release);
}

static inline void count_ns(const vt_pipe_stage *s, int64_t v)
{
    if (s->kind == VT_PIPE_SERIAL)
        atomic_store_explicit(&((vt_pipe_stage *)s)->c_busy_ns,
                              atomic_load_explicit(&s->c_busy_ns, memory_order_relaxed) + v,
                              memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&((vt_pipe_stage *)s)->c_busy_ns, v, memory_order_relaxed);
}

/* ---- Scheduling ----------------------------------------------------------------------- */

static void job_main(void *arg)
{
    vt__pbatch *b = arg;
    vt_pipeline *outer = current;
    current = b->p;
    go(b); /* b and its pipeline may be gone when it returns */
    current = outer;
}

static void *fiber_main(void *arg)
{
    vt__pbatch *b = arg;
    atomic_store_explicit(&b->fiber, vt_fiber_self().id, memory_order_relaxed);
    go(b);
    return NULL;
}

static void abandon(vt__pbatch *b);

/* Hands b to a worker (later: behind that worker's queued jobs). When the
 * pool refuses (shut down, out of memory), the pipeline stops and b is
 * dropped here. */
static void schedule(vt__pbatch *b, int later)
{
    vt_pipeline *p = b->p;
    vt_err e;
    if (p->async) {
        vt_fiber_opts fo;
        memset(&fo, 0, sizeof fo);
        fo.name = p->st[b->stage]->name;
        fo.detached = 1;
        fo.scope = p->scope;
        fo.runtime = p->rt;
        e = vt_fiber_spawn_ex(NULL, fiber_main, b, &fo);
    } else if (later) {
        e = vt_pool_submit_later(p->pool, job_main, b);
    } else {
        e = vt_pool_submit(p->pool, job_main, b);
    }
    if (VT_UNLIKELY(e)) {
        char msg[256];
        snprintf(msg, sizeof msg, "pipeline \"%s\": a batch could not be scheduled: %s", p->name,
                 vt_strerror(e));
        vt__pipe_stop(p, VT__STOP_FAILED, e, msg);
        abandon(b);
    }
}

/* ---- Batches and the source --------------------------------------------------------------- */

static void finish(vt_pipeline *p)
{
    int why = atomic_load_explicit(&p->stop, memory_order_acquire);
    p->result = why == VT__STOP_CANCELLED ? VT_ECANCELED : why ? VT_EFAILED : VT_OK;
    if (why)
        vt__pipe_msg(p, "%s", p->stop_msg);
    atomic_store_explicit(&p->ended_ns, vt_pool_now(p->pool), memory_order_release);
    vt_future *done = p->done;
    /* The last touch of p: a waiter may free it from here on. */
    vt_future_set(done, NULL);
}

static void source_reset(vt__pbatch *b)
{
    b->stage = 0;
    b->entered = 0;
    b->src_handed = 0;
    b->n = 0;
}

static unsigned free_list_of_caller(const vt_pipeline *p)
{
    int w = vt_worker_index();
    return w >= 0 && (unsigned)w < p->nfree_lists ? (unsigned)w : p->nfree_lists - 1;
}

/* With p->lock held. */
static void free_push(vt_pipeline *p, vt__pbatch *b)
{
    unsigned i = free_list_of_caller(p);
    b->next = p->free[i];
    p->free[i] = b;
}

/* With p->lock held, and a batch promised (one is free). */
static vt__pbatch *free_pop(vt_pipeline *p)
{
    unsigned mine = free_list_of_caller(p);
    for (unsigned k = 0; k < p->nfree_lists; k++) {
        unsigned i = (mine + k) % p->nfree_lists;
        vt__pbatch *b = p->free[i];
        if (b) {
            p->free[i] = b->next;
            return b;
        }
    }
    return NULL;
}

static void source_job(void *arg);
static void *source_fiber(void *arg);

/* Starts a source job holding the promise of a batch (counted in used),
 * which it takes from the free lists where it runs. */
static void start_source(vt_pipeline *p)
{
    vt_err e;
    if (p->async) {
        vt_fiber_opts fo;
        memset(&fo, 0, sizeof fo);
        fo.name = p->st[0]->name;
        fo.detached = 1;
        fo.scope = p->scope;
        fo.runtime = p->rt;
        e = vt_fiber_spawn_ex(NULL, source_fiber, p, &fo);
    } else {
        e = vt_pool_submit(p->pool, source_job, p);
    }
    if (VT_UNLIKELY(e)) {
        char msg[256];
        snprintf(msg, sizeof msg, "pipeline \"%s\": the source could not be scheduled: %s", p->name,
                 vt_strerror(e));
        vt__pipe_stop(p, VT__STOP_FAILED, e, msg);
        source_job(p); /* takes its batch and, stopped, gives it back */
    }
}

/* b comes home: it goes back to the free lists, and its place in the
 * count of batches in use restarts a parked source, or is given up; the
 * last one home after the end of the stream ends the run. */
static void release(vt__pbatch *b)
{
    vt_pipeline *p = b->p;
    vt__spin_lock(&p->lock);
    free_push(p, b);
    if (p->src_parked && !p->src_ended && !stopped(p)) {
        p->src_parked = 0; /* the promise passes to the source */
        vt__spin_unlock(&p->lock);
        start_source(p);
        return;
    }
    p->used--;
    atomic_store_explicit(&p->c_used, p->used, memory_order_relaxed);
    if (!atomic_load_explicit(&p->batches_done, memory_order_relaxed))
        atomic_store_explicit(&p->batches_done, 1, memory_order_relaxed);
    int end = !p->used && (p->src_ended || stopped(p)) && !p->end_signalled;
    if (end)
        p->end_signalled = 1;
    vt__spin_unlock(&p->lock);
    if (end)
        finish(p);
}

/* Lost to a stop: the items b still carries at its stage. */
static void lose(vt__pbatch *b)
{
    vt_pipe_stage *s = b->p->st[b->stage];
    if (s->role == VT__ROLE_SOURCE)
        return; /* what it made of this batch was never counted as made */
    uint64_t n = b->n;
    if (b->entered) {
        /* The items the stage took are counted as usual (by the holder:
         * count()); of them, those a transform passed on are lost now,
         * with the items it had not taken yet. */
        n = (uint64_t)(b->n - b->pos) + (s->role == VT__ROLE_SINK ? 0 : b->nout);
        count(s, &s->c_in, b->pos);
        count(s, &s->c_out, b->nout);
        count(s, &s->c_dropped, b->ndrop);
        count(s, &s->c_skipped, b->nskip);
        b->ndrop = b->nskip = 0;
    }
    if (n)
        atomic_fetch_add_explicit(&s->c_lost, n, memory_order_relaxed);
}

/* Starts the next source job, if a batch is free; else the source waits
 * for the next batch to come home. */
static void next_source(vt_pipeline *p)
{
    vt__spin_lock(&p->lock);
    int go_on = !stopped(p) && p->used < p->nb;
    if (go_on) {
        p->used++;
        atomic_store_explicit(&p->c_used, p->used, memory_order_relaxed);
    } else if (!stopped(p)) {
        p->src_parked = 1;
    }
    vt__spin_unlock(&p->lock);
    if (go_on)
        start_source(p);
}

/* ---- Retries -------------------------------------------------------------------------------- */

static void wake_job(void *arg);

/* Puts b to sleep for ns; 0 when it cannot (stopped, or no timer): the
 * caller goes on at once. */
static int sleep_batch(vt__pbatch *b, int64_t ns)
{
    vt_pipeline *p = b->p;
    vt__spin_lock(&p->lock);
    if (stopped(p)) {
        vt__spin_unlock(&p->lock);
        return 0;
    }
    b->asleep = 1;
    b->next = p->sleepers;
    p->sleepers = b;
    vt_err e = vt_pool_submit_after(p->pool, ns, wake_job, b, &b->timer);
    if (e) {
        p->sleepers = b->next;
        b->asleep = 0;
    }
    vt__spin_unlock(&p->lock);
    return e == VT_OK;
}

static void unlink_sleeper(vt_pipeline *p, vt__pbatch *b)
{
    for (vt__pbatch **pp = &p->sleepers; *pp; pp = &(*pp)->next)
        if (*pp == b) {
            *pp = b->next;
            return;
        }
}

static void wake_job(void *arg)
{
    vt__pbatch *b = arg;
    vt_pipeline *p = b->p;
    vt__spin_lock(&p->lock);
    int mine = b->asleep;
    if (mine) {
        unlink_sleeper(p, b);
        b->asleep = 0;
    }
    vt__spin_unlock(&p->lock);
    if (!mine)
        return; /* a stop took it first */
    if (p->async)
        schedule(b, 0);
    else
        job_main(b);
}

static int64_t backoff_ns(const vt_pipe_stage *s, const vt__pbatch *b, unsigned failed)
{
    const vt_retry *r = &s->retry;
    int64_t d = r->delay_ns;
    if (r->backoff == VT_BACKOFF_EXPONENTIAL) {
        int64_t cap = r->max_delay_ns ? r->max_delay_ns : VT_SEC(86400);
        for (unsigned i = 1; i < failed && d < cap; i++)
            d = d > cap / 2 ? cap : d * 2;
        if (d > cap)
            d = cap;
    }
    if (r->jitter > 0 && d > 0) {
        /* Drawn from the item's place and attempt (and the pool's seed in
         * deterministic mode): no shared generator to contend on, and a
         * deterministic run replays. */
        uint64_t h = vt_hash_mix64(vt_pool_seed(b->p->pool) ^ vt_hash_mix64(b->seq) ^
                                   ((uint64_t)s->index << 48) ^ ((uint64_t)b->pos << 16) ^ failed);
        double u = (double)(h >> 11) / (double)(1ull << 53);
        d = (int64_t)((double)d * (1.0 - r->jitter + 2.0 * r->jitter * u));
    }
    return d < 0 ? 0 : d;
}

/* The item at b->pos failed with e on its attempt *att. */
static int item_failed(vt_pipe_stage *s, vt__pbatch *b, const void *in, vt_err e, unsigned *att)
{
    vt_pipeline *p = s->p;
    if (stopped(p))
        return F_STOP; /* most likely its cancellation: not the item's fault */
    count(s, &s->c_failures, 1);
    atomic_store_explicit(&s->c_last_err, (int)e, memory_order_relaxed);
    if (*att < s->retry.max_attempts) {
        count(s, &s->c_retries, 1);
        int64_t d = backoff_ns(s, b, *att);
        (*att)++;
        if (d > 0) {
            b->attempt = *att;
            if (sleep_batch(b, d))
                return F_SLEEP;
        }
        return F_RETRY;
    }
    unsigned attempts = *att;
    *att = 1;
    if (s->on_fail == VT_PIPE_SKIP) {
        b->nskip++;
        if (s->on_skip)
            s->on_skip(s->on_skip_ud, s->name, in, e);
        return F_NEXT;
    }
    char msg[512];
    snprintf(msg, sizeof msg, "stage \"%s\" of pipeline \"%s\" failed on an item: %s%s", s->name,
             p->name, vt_strerror(e), attempts > 1 ? " (every attempt)" : "");
    vt__pipe_stop(p, VT__STOP_FAILED, e, msg);
    return F_STOP;
}

/* ---- The stages' loops ------------------------------------------------------------------------
 * Each keeps its place in locals and writes it back to the batch when it
 * stops (done, asleep, stopped), so that a resumed batch picks up at the
 * item that failed. */

static int run_source(vt_pipe_stage *s, vt__pbatch *b)
{
    vt_pipeline *p = s->p;
    const size_t os = s->out_size;
    const uint32_t cap = p->fill;
    vt_pipe_source_fn fn = s->fn.source;
    void *ud = s->ud;
    uint32_t n = b->n;
    unsigned att = b->attempt;
    unsigned char *out = b->in + (size_t)n * os;
    int r = R_DONE;
    while (n < cap) {
        if (VT_UNLIKELY(stopped(p))) {
            r = R_STOP;
            break;
        }
        vt_err e = fn(ud, out);
        if (VT_LIKELY(e == VT_OK)) {
            out += os;
            n++;
            att = 1;
            continue;
        }
        if (e == VT_ECLOSED) {
            b->src_end = 1;
            break;
        }
        if (e == VT_EAGAIN) {
            b->src_again = 1;
            break;
        }
        b->n = n;
        int f = item_failed(s, b, NULL, e, &att);
        if (f == F_NEXT || f == F_RETRY)
            continue;
        if (f == F_SLEEP)
            return R_SLEEP; /* b is the timer's now: not a write more */
        r = R_STOP;
        break;
    }
    b->n = n;
    return r;
}

/* A transform or the sink over the rest of batch b. One loop for both: the
 * sink test is the same for every item, so the branch costs nothing. */
static int run_stage(vt_pipe_stage *s, vt__pbatch *b)
{
    vt_pipeline *p = s->p;
    const int sink = s->role == VT__ROLE_SINK;
    const size_t is = s->in_size, os = sink ? 0 : s->out_size;
    void *ud = s->ud;
    uint32_t i = b->pos, o = b->nout;
    const uint32_t n = b->n;
    unsigned att = b->attempt;
    const unsigned char *in = b->in + (size_t)i * is;
    unsigned char *out = sink ? NULL : b->out + (size_t)o * os;
    int r = R_DONE;
    while (i < n) {
        if (VT_UNLIKELY(stopped(p))) {
            r = R_STOP;
            break;
        }
        vt_err e = sink ? s->fn.sink(ud, in) : s->fn.stage(ud, in, out);
        if (VT_LIKELY(e == VT_OK)) {
            if (!sink)
                out += os;
            o++;
            att = 1;
        } else if (e == VT_ENOENT) {
            b->ndrop++;
            att = 1;
        } else {
            b->pos = i;
            b->nout = o;
            int f = item_failed(s, b, in, e, &att);
            if (f == F_RETRY)
                continue;
            if (f == F_SLEEP)
                return R_SLEEP; /* b is the timer's now: not a write more */
            if (f == F_STOP) {
                r = R_STOP;
                break;
            }
        }
        in += is;
        i++;
    }
    b->pos = i;
    b->nout = o;
    return r;
}

/* ---- Entering and leaving stages ----------------------------------------------------------------
 */

static void begin(vt_pipe_stage *s, vt__pbatch *b)
{
    b->entered = 1;
    b->pos = 0;
    b->nout = 0;
    b->ndrop = 0;
    b->nskip = 0;
    b->attempt = 1;
    b->t0 = vt_now_ns();
    if (s->kind != VT_PIPE_SERIAL) /* a serial stage's is its turn's low bit */
        atomic_fetch_add_explicit(&s->c_active, 1, memory_order_relaxed);
}

static void note_queued(vt_pipe_stage *s, uint64_t n)
{
    uint64_t q = atomic_load_explicit(&s->c_queued, memory_order_relaxed) + n;
    atomic_store_explicit(&s->c_queued, q, memory_order_relaxed);
    if (q > atomic_load_explicit(&s->c_queue_max, memory_order_relaxed))
        atomic_store_explicit(&s->c_queue_max, q, memory_order_relaxed);
}

/* b is next after the batch inside s: spins until that one leaves, unless
 * it takes much longer than the stage usually keeps a batch (it may be
 * asleep in a retry's backoff). */
static void spin_for_turn(vt_pipe_stage *s, vt__pbatch *b)
{
    const uint64_t want = b->seq << 1;
    int64_t est = atomic_load_explicit(&s->batch_ns, memory_order_relaxed);
    if (est > SPIN_MAX_NS)
        return;
    int64_t limit = 0;
    for (unsigned i = 0; atomic_load_explicit(&s->turn, memory_order_acquire) != want; i++) {
        if ((i & 63) == 63) {
            int64_t now = vt_now_ns();
            if (!limit)
                limit = now + 2 * est + VT_US(1);
            else if (now > limit || stopped(s->p))
                return;
        }
        vt__cpu_relax();
    }
}

/* 1: b is in s; 0: it waits (someone will hand it the stage); -1: the
 * pipeline stops, drop it. */
static int stage_enter(vt_pipe_stage *s, vt__pbatch *b)
{
    vt_pipeline *p = s->p;
    if (s->kind == VT_PIPE_PARALLEL && !s->conc) {
        if (stopped(p))
            return -1;
        begin(s, b);
        return 1;
    }
    vt__spin_lock(&s->lock);
    /* Checked under the lock: a stop drains waiting batches under it too,
     * so none is left waiting after a stop. */
    if (stopped(p)) {
        vt__spin_unlock(&s->lock);
        return -1;
    }
    if (s->kind == VT_PIPE_SERIAL) {
        uint64_t turn = atomic_load_explicit(&s->turn, memory_order_relaxed);
        if (turn == b->seq << 1) {
            atomic_store_explicit(&s->turn, turn | 1, memory_order_relaxed);
            vt__spin_unlock(&s->lock);
            begin(s, b);
            return 1;
        }
        /* Next in line, behind a batch being worked on: with other workers
         * to take it on, the wait is shorter than a hand-over, which would
         * move b's items to another cache. */
        if (turn == (((b->seq - 1) << 1) | 1) && p->spin) {
            vt__spin_unlock(&s->lock);
            spin_for_turn(s, b); /* whatever came of it, the lock decides */
            vt__spin_lock(&s->lock);
            if (stopped(p)) {
                vt__spin_unlock(&s->lock);
                return -1;
            }
            turn = atomic_load_explicit(&s->turn, memory_order_relaxed);
            if (turn == b->seq << 1) {
                atomic_store_explicit(&s->turn, turn | 1, memory_order_relaxed);
                vt__spin_unlock(&s->lock);
                begin(s, b);
                return 1;
            }
        }
        s->ring[b->seq % p->nb] = b;
    } else {
        if (s->inside < s->conc) {
            s->inside++;
            vt__spin_unlock(&s->lock);
            begin(s, b);
            return 1;
        }
        b->next = NULL;
        if (s->wait_tail)
            s->wait_tail->next = b;
        else
            s->wait_head = b;
        s->wait_tail = b;
    }
    note_queued(s, b->n);
    vt__spin_unlock(&s->lock);
    return 0;
}

/* b leaves s; returns the batch that takes its place, now in s, or NULL. */
static vt__pbatch *stage_leave(vt_pipe_stage *s, vt__pbatch *b)
{
    vt_pipeline *p = s->p;
    b->entered = 0;
    if (s->kind != VT_PIPE_SERIAL)
        atomic_fetch_sub_explicit(&s->c_active, 1, memory_order_relaxed);
    if (s->unordered)
        b->seq = atomic_fetch_add_explicit(&s->renum, 1, memory_order_relaxed);
    if (s->kind == VT_PIPE_PARALLEL && !s->conc)
        return NULL;
    vt__pbatch *h = NULL;
    vt__spin_lock(&s->lock);
    if (s->kind == VT_PIPE_SERIAL) {
        uint64_t next = (atomic_load_explicit(&s->turn, memory_order_relaxed) >> 1) + 1;
        vt__pbatch **slot = &s->ring[next % p->nb];
        if (*slot && (*slot)->seq == next && !stopped(p)) {
            h = *slot;
            *slot = NULL;
            atomic_store_explicit(&s->turn, next << 1 | 1, memory_order_relaxed);
        } else {
            atomic_store_explicit(&s->turn, next << 1, memory_order_release);
        }
    } else {
        if (s->wait_head && !stopped(p)) {
            h = s->wait_head;
            if (!(s->wait_head = h->next))
                s->wait_tail = NULL;
        } else {
            s->inside--;
        }
    }
    if (h)
        atomic_store_explicit(&s->c_queued,
                              atomic_load_explicit(&s->c_queued, memory_order_relaxed) - h->n,
                              memory_order_relaxed);
    vt__spin_unlock(&s->lock);
    if (h)
        begin(s, h);
    return h;
}

/* The stage's figures for what b did in it. */
static void account(vt_pipe_stage *s, vt__pbatch *b, uint32_t taken)
{
    int64_t now = vt_now_ns(), ns = now - b->t0;
    count_ns(s, ns);
    if (s->kind == VT_PIPE_SERIAL) {
        int64_t est = atomic_load_explicit(&s->batch_ns, memory_order_relaxed);
        atomic_store_explicit(&s->batch_ns, est ? est + (ns - est) / 8 : ns, memory_order_relaxed);
    }
    count(s, &s->c_in, taken);
    count(s, &s->c_out, b->nout);
    count(s, &s->c_dropped, b->ndrop);
    count(s, &s->c_skipped, b->nskip);
    b->ndrop = b->nskip = 0;
}

/* Drops b, which the pipeline's stop reached: it leaves its stage (with
 * nobody to hand it to, since the pipeline stops) and comes home. */
static void abandon(vt__pbatch *b)
{
    lose(b);
    if (b->entered && b->stage > 0)
        stage_leave(b->p->st[b->stage], b);
    b->entered = 0;
    release(b);
}

/* ---- Carrying a batch
 * ---------------------------------------------------------------------------- */

/* The source is taken in turn, as a serial stage is: the batch that holds
 * it starts the next source job as soon as it has it, so that another
 * worker takes that job while this one fills its batch, and waits (spins,
 * as at a serial stage) to take the source over the moment it is left:
 * the hand-over of a job between workers is paid while the source runs,
 * not after. 1: b holds the source; 0: b waits for it (the holder will
 * hand it over); -1: the stream ended or stops, b goes home. */
static int source_enter(vt_pipeline *p, vt__pbatch *b)
{
    vt__spin_lock(&p->lock);
    for (int spun = 0;; spun = 1) {
        if (stopped(p) || p->src_ended) {
            vt__spin_unlock(&p->lock);
            return -1;
        }
        if (!atomic_load_explicit(&p->src_busy, memory_order_relaxed)) {
            atomic_store_explicit(&p->src_busy, 1, memory_order_relaxed);
            vt__spin_unlock(&p->lock);
            return 1;
        }
        int64_t est = atomic_load_explicit(&p->st[0]->batch_ns, memory_order_relaxed);
        if (spun || !p->spin || est > SPIN_MAX_NS)
            break;
        vt__spin_unlock(&p->lock);
        int64_t limit = 0;
        for (unsigned i = 0; atomic_load_explicit(&p->src_busy, memory_order_acquire); i++) {
            if ((i & 63) == 63) {
                int64_t now = vt_now_ns();
                if (!limit)
                    limit = now + 2 * est + VT_US(1);
                else if (now > limit || stopped(p))
                    break;
            }
            vt__cpu_relax();
        }
        vt__spin_lock(&p->lock);
    }
    p->src_waiter = b;
    vt__spin_unlock(&p->lock);
    return 0;
}

/* The holder leaves the source: to the waiting batch, if any. */
static void source_leave(vt_pipeline *p)
{
    vt__spin_lock(&p->lock);
    vt__pbatch *w = p->src_waiter;
    p->src_waiter = NULL;
    int pass = w && !stopped(p) && !p->src_ended;
    if (!pass)
        atomic_store_explicit(&p->src_busy, 0, memory_order_release);
    vt__spin_unlock(&p->lock);
    if (pass) {
        w->src_handed = 1;
        schedule(w, 0);
    } else if (w) {
        release(w);
    }
}

/* How many items the next batch gets: about TARGET_NS of work in all
 * stages, as measured so far, within 1 .. p->batch. Until a first batch
 * has gone through, batches of one: a pipeline of slow stages does not
 * have a large first batch to wait for, and with trivial stages a few
 * single items cost nothing. */
#define TARGET_NS VT_US(50)

static uint32_t fill_size(vt_pipeline *p)
{
    if (!atomic_load_explicit(&p->batches_done, memory_order_relaxed))
        return 1;
    double per_item = 0;
    for (size_t i = 0; i < p->n; i++) {
        const vt_pipe_stage *s = p->st[i];
        uint64_t in = atomic_load_explicit(&s->c_in, memory_order_relaxed);
        if (in)
            per_item +=
                (double)atomic_load_explicit(&s->c_busy_ns, memory_order_relaxed) / (double)in;
    }
    double n = per_item > 0 ? (double)TARGET_NS / per_item : (double)p->batch;
    return n >= (double)p->batch ? (uint32_t)p->batch : n < 1 ? 1 : (uint32_t)n;
}

/* Runs the source on b; 1 when b goes on to the stages (0: b went home,
 * waits, sleeps or was rescheduled, and is not the caller's any more). */
static int source_go(vt__pbatch *b)
{
    vt_pipeline *p = b->p;
    vt_pipe_stage *s = p->st[0];
    if (!b->entered) {
        if (!b->src_handed) {
            int in = source_enter(p, b);
            if (in < 0) {
                release(b);
                return 0;
            }
            if (!in)
                return 0;
        }
        b->src_handed = 0;
        b->entered = 1;
        b->n = 0;
        b->attempt = 1;
        b->src_again = b->src_end = 0;
        b->nskip = 0;
        b->t0 = vt_now_ns();
        p->fill = fill_size(p);
        next_source(p);
    }
    int r = stopped(p) ? R_STOP : run_source(s, b);
    if (r == R_SLEEP)
        return 0;
    if (r == R_DONE && !b->n && b->src_again && !b->src_end) {
        /* VT_EAGAIN with nothing made: ask again a little later, longer
         * each time nothing comes (10 us up to 1 ms), holding the source. */
        p->src_idle_ns = p->src_idle_ns ? p->src_idle_ns * 2 : VT_US(10);
        if (p->src_idle_ns > VT_MS(1))
            p->src_idle_ns = VT_MS(1);
        b->src_again = 0;
        if (!sleep_batch(b, p->src_idle_ns))
            schedule(b, 1);
        return 0;
    }
    int64_t ns = vt_now_ns() - b->t0;
    count_ns(s, ns);
    int64_t est = atomic_load_explicit(&s->batch_ns, memory_order_relaxed);
    atomic_store_explicit(&s->batch_ns, est ? est + (ns - est) / 8 : ns, memory_order_relaxed);
    count(s, &s->c_skipped, b->nskip);
    b->nskip = 0;
    b->entered = 0;
    int go_on = r == R_DONE && b->n;
    if (go_on) {
        count(s, &s->c_in, b->n);
        count(s, &s->c_out, b->n);
        if (!b->src_again)
            p->src_idle_ns = 0;
        b->seq = p->src_seq++;
    }
    if (b->src_end) {
        vt__spin_lock(&p->lock);
        p->src_ended = 1;
        vt__spin_unlock(&p->lock);
    }
    source_leave(p);
    if (!go_on) {
        release(b);
        return 0;
    }
    b->stage = 1;
    return 1;
}

static void batch_go(vt__pbatch *b)
{
    vt_pipeline *p = b->p;
    for (;;) {
        vt_pipe_stage *s = p->st[b->stage];
        if (!b->entered) {
            int in = stage_enter(s, b);
            if (in == 0)
                return;
            if (in < 0) {
                lose(b);
                release(b);
                return;
            }
        }
        uint32_t taken = b->n;
        int r = stopped(p) ? R_STOP : run_stage(s, b);
        if (r == R_SLEEP)
            return;
        if (r == R_STOP) {
            abandon(b);
            return;
        }
        account(s, b, taken);
        vt__pbatch *h = stage_leave(s, b);
        if (h)
            schedule(h, 0);
        if (s->role == VT__ROLE_SINK) {
            release(b);
            return;
        }
        unsigned char *t = b->in;
        b->in = b->out;
        b->out = t;
        b->n = b->nout;
        b->stage++;
    }
}

static void go(vt__pbatch *b)
{
    if (b->stage == 0 && !source_go(b))
        return;
    batch_go(b);
}

/* A new source job: takes the batch promised to it, one this worker freed
 * if it can. */
static void source_job(void *arg)
{
    vt_pipeline *p = arg;
    vt_pipeline *outer = current;
    current = p;
    vt__spin_lock(&p->lock);
    vt__pbatch *b = free_pop(p);
    vt__spin_unlock(&p->lock);
    source_reset(b);
    go(b); /* b and p may be gone when it returns */
    current = outer;
}

static void *source_fiber(void *arg)
{
    vt_pipeline *p = arg;
    vt__spin_lock(&p->lock);
    vt__pbatch *b = free_pop(p);
    vt__spin_unlock(&p->lock);
    source_reset(b);
    atomic_store_explicit(&b->fiber, vt_fiber_self().id, memory_order_relaxed);
    go(b);
    return NULL;
}

/* ---- Stopping
 * ------------------------------------------------------------------------------------ */

void vt__pipe_stop(vt_pipeline *p, int why, vt_err err, const char *msg)
{
    vt__spin_lock(&p->lock);
    if (!p->live || p->end_signalled || stopped(p)) {
        vt__spin_unlock(&p->lock);
        return;
    }
    p->stop_err = err;
    snprintf(p->stop_msg, sizeof p->stop_msg, "%s", msg);
    atomic_store_explicit(&p->stop, why, memory_order_release);
    /* Sleepers whose timer is cancelled here are resumed to leave their
     * stage; the others' timers fire and find the stop. */
    vt__pbatch *wake = NULL;
    for (vt__pbatch **pp = &p->sleepers; *pp;) {
        vt__pbatch *b = *pp;
        if (vt_timer_cancel(p->pool, b->timer) == VT_OK) {
            *pp = b->next;
            b->asleep = 0;
            b->next = wake;
            wake = b;
        } else {
            pp = &b->next;
        }
    }
    vt__pbatch *drop = p->src_waiter;
    if (drop)
        drop->next = NULL;
    p->src_waiter = NULL;
    /* Held while draining: a batch cannot come home (and end the run) before
     * the stopper is done with p. */
    p->used++;
    vt__spin_unlock(&p->lock);
    if (p->async && p->scope)
        vt_scope_cancel(p->scope);
    for (size_t i = 1; i < p->n; i++) {
        vt_pipe_stage *s = p->st[i];
        vt__spin_lock(&s->lock);
        if (s->ring)
            for (unsigned k = 0; k < p->nb; k++)
                if (s->ring[k]) {
                    s->ring[k]->next = drop;
                    drop = s->ring[k];
                    s->ring[k] = NULL;
                }
        while (s->wait_head) {
            vt__pbatch *b = s->wait_head;
            s->wait_head = b->next;
            b->next = drop;
            drop = b;
        }
        s->wait_tail = NULL;
        atomic_store_explicit(&s->c_queued, 0, memory_order_relaxed);
        vt__spin_unlock(&s->lock);
    }
    while (wake) {
        vt__pbatch *b = wake;
        wake = b->next;
        schedule(b, 0);
    }
    while (drop) {
        vt__pbatch *b = drop;
        drop = b->next;
        lose(b);
        release(b);
    }
    /* The stopper's hold, last: from here on the run may end. */
    vt__spin_lock(&p->lock);
    p->used--;
    atomic_store_explicit(&p->c_used, p->used, memory_order_relaxed);
    int end = !p->used && !p->end_signalled;
    if (end)
        p->end_signalled = 1;
    vt__spin_unlock(&p->lock);
    if (end)
        finish(p);
}

/* ---- Starting, waiting, releasing
 * ------------------------------------------------------------------ */

static void free_run(vt_pipeline *p)
{
    if (p->scope) {
        vt_scope_close(p->scope);
        p->scope = NULL;
    }
    if (p->done) {
        vt_future_free(p->done);
        p->done = NULL;
    }
}

void vt__pipe_release(vt_pipeline *p)
{
    free_run(p);
    for (size_t i = 0; i < p->n; i++) {
        vt_pipe_stage *s = p->st[i];
        if (s->ring) {
            vt_free(s->ring, p->nb * sizeof *s->ring);
            s->ring = NULL;
        }
    }
    if (p->batches) {
        vt_free(p->batches, p->batches_bytes);
        p->batches = NULL;
    }
    if (p->free) {
        vt_free(p->free, p->nfree_lists * sizeof *p->free);
        p->free = NULL;
    }
}

/* Batches and their buffers in one block; rings for the serial stages. */
static vt_err setup(vt_pipeline *p, unsigned nb, size_t batch, size_t buf_size)
{
    int same = p->batches && p->nb == nb && p->batch == batch && p->buf_size == buf_size;
    if (!same) {
        vt__pipe_release(p);
        size_t head = ((size_t)nb * sizeof(vt__pbatch) + 63) & ~(size_t)63;
        size_t bytes = head + (size_t)nb * 2 * buf_size;
        unsigned char *mem = vt_alloc(bytes);
        if (!mem)
            return VT_ENOMEM;
        p->batches = (vt__pbatch *)mem;
        p->batches_bytes = bytes;
        p->nb = nb;
        p->batch = batch;
        p->buf_size = buf_size;
        memset(p->batches, 0, (size_t)nb * sizeof(vt__pbatch));
        unsigned char *buf = mem + head;
        for (unsigned i = 0; i < nb; i++) {
            p->batches[i].in = buf + (size_t)2 * i * buf_size;
            p->batches[i].out = p->batches[i].in + buf_size;
        }
    }
    /* After the batches: releasing them frees the lists. */
    unsigned lists = vt_pool_workers(p->pool) + 1;
    if (p->free && p->nfree_lists != lists) {
        vt_free(p->free, p->nfree_lists * sizeof *p->free);
        p->free = NULL;
    }
    if (!p->free) {
        if (!(p->free = vt_calloc(lists, sizeof *p->free)))
            return VT_ENOMEM;
        p->nfree_lists = lists;
    }
    for (size_t i = 1; i < p->n; i++) {
        vt_pipe_stage *s = p->st[i];
        if (s->kind == VT_PIPE_SERIAL && !s->ring) {
            if (!(s->ring = vt_calloc(nb, sizeof *s->ring)))
                return VT_ENOMEM;
        } else if (s->kind != VT_PIPE_SERIAL && s->ring) {
            vt_free(s->ring, nb * sizeof *s->ring);
            s->ring = NULL;
        }
    }
    return VT_OK;
}

vt_err vt__pipe_start(vt_pipeline *p, vt_runtime *rt)
{
    vt__spin_lock(&p->lock);
    p->live = 0;
    vt__spin_unlock(&p->lock);
    free_run(p);
    vt_pool *pool = vt_runtime_pool(rt);
    size_t most = 1;
    for (size_t i = 0; i < p->n; i++)
        if (p->st[i]->out_size > most)
            most = p->st[i]->out_size;
    size_t batch = p->batch_opt;
    if (!batch) {
        /* 16 KiB a buffer, 2048 items at most: a batch of small items is
         * worth handing to another worker (see the guide's figures), and
         * a batch's two buffers stay in the L1 cache. */
        batch = ((size_t)16 << 10) / most;
        batch = batch < 1 ? 1 : batch > 2048 ? 2048 : batch;
    }
    unsigned nb = p->max_batches_opt;
    if (!nb) {
        /* Enough for every worker to hold one while another is queued,
         * and for each parallel stage to fill its concurrency. */
        unsigned w = vt_pool_workers(pool);
        nb = w * 2 < 4 ? 4 : w * 2;
        for (size_t i = 1; i < p->n; i++)
            if (p->st[i]->kind == VT_PIPE_PARALLEL && p->st[i]->conc + 2 > nb)
                nb = p->st[i]->conc + 2 > 1024 ? 1024 : p->st[i]->conc + 2;
    }
    /* A bound on the memory one pipeline takes: 4 GiB of buffers. */
    if (batch * most > ((size_t)1 << 30) || (size_t)nb * 2 * batch * most > ((size_t)4 << 30)) {
        vt__pipe_msg(p,
                     "pipeline \"%s\": %u batches of %zu items of %zu bytes would take more than "
                     "4 GiB",
                     p->name, nb, batch, most);
        return VT_ERANGE;
    }
    p->rt = rt;
    p->pool = pool;
    vt_err e = setup(p, nb, batch, batch * most);
    if (!e)
        e = vt_future_new(&p->done);
    if (!e && p->async)
        e = vt_scope_new(&p->scope, rt);
    if (e) {
        free_run(p);
        vt__pipe_msg(p, "pipeline \"%s\": %s", p->name, vt_strerror(e));
        return e;
    }
    /* Spinning helps only when another worker runs the batch ahead; a
     * fiber in a stage may block for any time. */
    p->spin = !p->async && vt_pool_workers(pool) > 1 && !vt_pool_is_deterministic(pool);
    memset(p->free, 0, p->nfree_lists * sizeof *p->free);
    for (unsigned i = nb; i-- > 0;) {
        vt__pbatch *b = &p->batches[i];
        b->p = p;
        b->asleep = 0;
        b->entered = 0;
        b->src_handed = 0;
        atomic_store_explicit(&b->fiber, 0, memory_order_relaxed);
        b->next = p->free[p->nfree_lists - 1];
        p->free[p->nfree_lists - 1] = b;
    }
    p->sleepers = NULL;
    p->used = 1; /* promised to the first source job */
    p->src_parked = 0;
    p->src_ended = 0;
    atomic_store_explicit(&p->src_busy, 0, memory_order_relaxed);
    p->src_waiter = NULL;
    p->end_signalled = 0;
    p->src_idle_ns = 0;
    p->src_seq = 0;
    p->fill = 1;
    atomic_store_explicit(&p->batches_done, 0, memory_order_relaxed);
    p->stop_err = VT_OK;
    p->stop_msg[0] = '\0';
    atomic_store_explicit(&p->stop, VT__STOP_NONE, memory_order_relaxed);
    atomic_store_explicit(&p->c_used, 1, memory_order_relaxed);
    for (size_t i = 0; i < p->n; i++) {
        vt_pipe_stage *s = p->st[i];
        atomic_store_explicit(&s->turn, 0, memory_order_relaxed);
        atomic_store_explicit(&s->batch_ns, 0, memory_order_relaxed);
        s->inside = 0;
        s->wait_head = s->wait_tail = NULL;
        if (s->ring)
            memset(s->ring, 0, nb * sizeof *s->ring);
        atomic_store_explicit(&s->renum, 0, memory_order_relaxed);
        _Atomic uint64_t *c[] = {&s->c_in,       &s->c_out,       &s->c_dropped,
                                 &s->c_failures, &s->c_retries,   &s->c_skipped,
                                 &s->c_queued,   &s->c_queue_max, &s->c_lost};
        for (size_t k = 0; k < sizeof c / sizeof *c; k++)
            atomic_store_explicit(c[k], 0, memory_order_relaxed);
        atomic_store_explicit(&s->c_busy_ns, 0, memory_order_relaxed);
        atomic_store_explicit(&s->c_active, 0, memory_order_relaxed);
        atomic_store_explicit(&s->c_last_err, 0, memory_order_relaxed);
    }
    atomic_store_explicit(&p->ended_ns, 0, memory_order_relaxed);
    atomic_store_explicit(&p->started_ns, vt_pool_now(pool), memory_order_relaxed);
    p->result = VT_OK;
    p->ran = 1;
    if (p->msg) {
        vt_free(p->msg, strlen(p->msg) + 1);
        p->msg = NULL;
    }
    vt__spin_lock(&p->lock);
    p->live = 1;
    vt__spin_unlock(&p->lock);
    if (p->async) {
        vt_fiber_opts fo;
        memset(&fo, 0, sizeof fo);
        fo.name = p->st[0]->name;
        fo.detached = 1;
        fo.scope = p->scope;
        fo.runtime = rt;
        e = vt_fiber_spawn_ex(NULL, source_fiber, p, &fo);
    } else {
        e = vt_pool_submit(pool, source_job, p);
    }
    if (e) {
        /* Nothing ran: the pipeline is as before the call. */
        vt__spin_lock(&p->lock);
        p->live = 0;
        vt__spin_unlock(&p->lock);
        free_run(p);
        vt__pipe_msg(p, "pipeline \"%s\": %s", p->name, vt_strerror(e));
        return e;
    }
    return VT_OK;
}

vt_err vt__pipe_wait(vt_pipeline *p, int64_t deadline)
{
    if (!p->ran)
        return VT_ESTATE;
    if (current == p)
        return VT_EDEADLK;
    if (p->async && vt_fiber_in() && atomic_load_explicit(&p->running, memory_order_acquire)) {
        uint64_t self = vt_fiber_self().id;
        for (unsigned i = 0; i < p->nb; i++)
            if (atomic_load_explicit(&p->batches[i].fiber, memory_order_relaxed) == self) {
                vt__pipe_msg(p, "pipeline \"%s\": waited for from one of its own stages", p->name);
                return VT_EDEADLK;
            }
    }
    for (;;) {
        if (!atomic_load_explicit(&p->running, memory_order_acquire))
            return p->result;
        vt_future *done = p->done;
        vt_err e;
        if (vt_pool_is_deterministic(p->pool) && !vt_fiber_in()) {
            /* A deterministic pool runs only while this thread drives it. */
            e = vt_pool_run_until(p->pool, deadline);
            if (e && e != VT_ETIMEDOUT)
                return e;
            e = vt_future_await(done, NULL, VT_NOW);
            if (e == VT_ETIMEDOUT && deadline == VT_FOREVER) {
                vt__pipe_msg(p,
                             "pipeline \"%s\" cannot go on: its stages wait for something "
                             "that nothing will do (a deadlock)",
                             p->name);
                return VT_EDEADLK;
            }
        } else {
            e = vt_future_await(done, NULL, deadline);
        }
        if (e)
            return e;
        int one = 1;
        if (!atomic_compare_exchange_strong_explicit(&p->running, &one, 2, memory_order_acq_rel,
                                                     memory_order_relaxed)) {
            /* Another waiter ends it (closing the scope takes a moment). */
            if (vt_fiber_in())
                vt_fiber_yield();
            else
                vt__thread_yield();
            continue;
        }
        /* The fibers of the run have all returned or are returning: wait
         * for them before anyone may free or restart the pipeline. */
        if (p->scope) {
            vt_scope_close(p->scope);
            p->scope = NULL;
        }
        vt_err r = p->result;
        atomic_store_explicit(&p->running, 0, memory_order_release);
        return r;
    }
}
