/* Streams: chains of stages joined by bounded channels.
 *
 * Every stream is one bounded channel — its output — plus what fills it:
 * the caller's vt_stream_push (a source), or fibers of its own that read
 * the stage's input stream(s) with the same receive a consumer uses. A
 * stage's fibers live in a scope of their own, so that freeing the chain
 * can cancel them and wait for them; the channel's capacity is all a stage
 * buffers, and each fiber holds at most one element in hand (a batch
 * stage: the batch it fills), which is where the memory bound comes from.
 *
 * The end travels with the channel: a stage that ends stores its error (if
 * any) and then closes its channel, so a receiver that sees VT_ECLOSED
 * reads the error after the elements sent before it — the close's atomic
 * orders the two.
 *
 * A stage with several fibers (merge, par_map) closes its channel when the
 * last one leaves; an error ends it at once (close, and cancel the
 * siblings, which may wait on inputs that never deliver again). Ordered
 * par_map hands the right to send from one sequence number to the next
 * through one semaphore per worker: at most `concurrency` numbers are
 * taken and not yet sent, so number k's semaphore is k % concurrency and
 * nobody else's.
 *
 * A stage's fibers are spawned before any of them may touch the input (a
 * wait group opens the gate), so a stage that fails to start took no
 * element and leaves its input as it was. */
#include <stddef.h>
#include <string.h>

#include "async_int.h"

enum {
    K_SOURCE = 0,
    K_GENERATE,
    K_MAP,
    K_FILTER,
    K_BATCH,
    K_MERGE,
    K_PAR_MAP
};

static const char *const kind_names[] = {"stream", "generate", "map",    "filter",
                                         "batch",  "merge",    "par_map"};

#define CAPACITY_DEFAULT 64
#define ALIGN_MAX _Alignof(max_align_t)
/* A batch's items are preceded by their allocation's byte count, so that
 * vt_batch_free needs nothing but the batch (vt_free wants the size). */
#define BATCH_HDR ((sizeof(size_t) + ALIGN_MAX - 1) / ALIGN_MAX * ALIGN_MAX)

typedef struct worker {
    vt_stream *st;
    size_t index;        /* merge: which input */
    unsigned char *ibuf; /* the element in hand, aligned for any type */
    unsigned char *obuf;
} worker;

struct vt_stream {
    uint8_t kind;
    uint8_t batches; /* elements are vt_batch that the chain frees when it drops them */
    uint8_t unordered;
    _Atomic uint8_t taken; /* the input of a stage now */
    size_t esz;
    vt_chan *ch;
    vt_runtime *rt;
    vt_scope *scope; /* the stage's fibers; NULL for a source */
    _Atomic int err; /* what ended it: stored before ch is closed */
    vt_stream **ins;
    vt_stream *in1; /* ins's storage for one input */
    size_t nin;
    /* A source: one hold for the chain, one for the producer (dropped by
     * vt_stream_end), so a push after the consumer freed it is safe. */
    _Atomic uint32_t refs;
    _Atomic uint32_t ended;
    /* The stage's work. */
    union {
        vt_stream_gen_fn gen;
        vt_stream_map_fn map;
        vt_stream_pred_fn keep;
    } fn;
    void *ud;
    size_t in_esz;
    size_t max_count;
    int64_t max_wait;
    size_t nworkers;
    worker *wk; /* nworkers, then their buffers: one block */
    size_t wk_bytes;
    _Atomic int64_t running; /* fibers not yet gone: the last one closes ch */
    vt_waitgroup gate;
    _Atomic int aborted; /* creation failed: the fibers leave without a word */
    /* Ordered par_map. */
    vt_mutex in_lock;
    uint64_t next_seq; /* under in_lock */
    int in_done;       /* under in_lock */
    vt_sem *turns;
    /* vt_stream_free's walk over the chain. */
    vt_stream *walk_next, *all_next;
};

/* ---- Batches ------------------------------------------------------------------------------ */

static unsigned char *batch_alloc(size_t bytes)
{
    unsigned char *p = vt_alloc(BATCH_HDR + bytes);
    if (!p)
        return NULL;
    memcpy(p, &bytes, sizeof(bytes));
    return p + BATCH_HDR;
}

static void batch_release(unsigned char *items)
{
    unsigned char *p = items - BATCH_HDR;
    size_t bytes;
    memcpy(&bytes, p, sizeof(bytes));
    vt_free(p, BATCH_HDR + bytes);
}

void vt_batch_free(vt_batch *b)
{
    if (!b || !b->items)
        return;
    batch_release(b->items);
    b->items = NULL;
    b->count = 0;
}

/* ---- Ending ------------------------------------------------------------------------------- */

static void record(vt_stream *st, vt_err e)
{
    int none = VT_OK;
    atomic_compare_exchange_strong_explicit(&st->err, &none, (int)e, memory_order_release,
                                            memory_order_relaxed);
}

/* Ends st with e now: what was sent before stays receivable. */
static void fail(vt_stream *st, vt_err e)
{
    record(st, e);
    (void)vt_chan_close(st->ch);
    if (st->nworkers > 1)
        vt_scope_cancel(st->scope);
}

/* A fiber of st is done with e: VT_OK or VT_ECLOSED (its input ended, or
 * its channel was closed under it) end nothing by themselves. */
static void leave(vt_stream *st, vt_err e)
{
    if (e != VT_OK && e != VT_ECLOSED)
        fail(st, e);
    if (atomic_fetch_sub_explicit(&st->running, 1, memory_order_acq_rel) == 1)
        (void)vt_chan_close(st->ch);
}

/* 1 when the fiber may run: the stage started (it was not torn down while
 * its fibers were being spawned). */
static int pass_gate(vt_stream *st, vt_err *e)
{
    *e = vt_waitgroup_wait(&st->gate, VT_FOREVER);
    return !atomic_load_explicit(&st->aborted, memory_order_acquire);
}

/* The next element of an input: its error once it ended with one. */
static vt_err next_in(vt_stream *s, void *elem, int64_t deadline)
{
    vt_err e = vt_chan_recv(s->ch, elem, deadline);
    if (e == VT_ECLOSED) {
        int err = atomic_load_explicit(&s->err, memory_order_acquire);
        if (err != VT_OK)
            e = (vt_err)err;
    }
    return e;
}

/* An element in hand that will not be sent. */
static void drop(vt_stream *st, void *elem)
{
    if (st->batches) {
        vt_batch b;
        memcpy(&b, elem, sizeof(b));
        vt_batch_free(&b);
    }
}

/* ---- The stages' fibers -------------------------------------------------------------------- */

static void *generate_main(void *arg)
{
    worker *w = arg;
    vt_stream *st = w->st;
    vt_err e;
    if (!pass_gate(st, &e))
        return NULL;
    while (e == VT_OK) {
        /* Sends into a channel with room complete even when cancelled:
         * without this, a generator that never waits would never stop. */
        if (vt_cancelled())
            e = VT_ECANCELED;
        else if ((e = st->fn.gen(st->ud, w->obuf)) == VT_OK)
            e = vt_chan_send(st->ch, w->obuf, VT_FOREVER);
    }
    leave(st, e);
    return NULL;
}

static void *map_main(void *arg)
{
    worker *w = arg;
    vt_stream *st = w->st;
    vt_stream *in = st->ins[0];
    vt_err e;
    if (!pass_gate(st, &e))
        return NULL;
    while (e == VT_OK) {
        if (vt_cancelled())
            e = VT_ECANCELED;
        else if ((e = next_in(in, w->ibuf, VT_FOREVER)) == VT_OK &&
                 (e = st->fn.map(st->ud, w->ibuf, w->obuf)) == VT_OK)
            e = vt_chan_send(st->ch, w->obuf, VT_FOREVER);
    }
    leave(st, e);
    return NULL;
}

static void *filter_main(void *arg)
{
    worker *w = arg;
    vt_stream *st = w->st;
    vt_stream *in = st->ins[0];
    vt_err e;
    if (!pass_gate(st, &e))
        return NULL;
    while (e == VT_OK) {
        if (vt_cancelled()) {
            e = VT_ECANCELED;
        } else if ((e = next_in(in, w->ibuf, VT_FOREVER)) == VT_OK) {
            if (!st->fn.keep(st->ud, w->ibuf))
                drop(st, w->ibuf);
            else if ((e = vt_chan_send(st->ch, w->ibuf, VT_FOREVER)) != VT_OK)
                drop(st, w->ibuf);
        }
    }
    leave(st, e);
    return NULL;
}

static int64_t deadline_after(int64_t t, int64_t ns)
{
    return ns > INT64_MAX - t ? VT_FOREVER : t + ns;
}

/* Sends the batch being filled (shrunk to its count when it can be). */
static vt_err batch_send(vt_stream *st, unsigned char **items, size_t *n)
{
    size_t full = st->max_count * st->in_esz, used = *n * st->in_esz;
    unsigned char *p = *items;
    if (used < full) {
        unsigned char *q = vt_realloc(p - BATCH_HDR, BATCH_HDR + full, BATCH_HDR + used);
        if (q) {
            memcpy(q, &used, sizeof(used));
            p = q + BATCH_HDR;
        }
    }
    vt_batch b = {*n, p};
    *items = NULL;
    *n = 0;
    vt_err e = vt_chan_send(st->ch, &b, VT_FOREVER);
    if (e != VT_OK)
        vt_batch_free(&b);
    return e;
}

static void *batch_main(void *arg)
{
    worker *w = arg;
    vt_stream *st = w->st;
    vt_stream *in = st->ins[0];
    unsigned char *items = NULL;
    size_t n = 0;
    int64_t deadline = VT_FOREVER;
    vt_err e;
    if (!pass_gate(st, &e))
        return NULL;
    while (e == VT_OK) {
        if (vt_cancelled()) {
            e = VT_ECANCELED;
            break;
        }
        /* Elements that keep coming must not hold a batch past its time. */
        if (n && deadline != VT_FOREVER && vt_fiber_now() >= deadline) {
            e = batch_send(st, &items, &n);
            continue;
        }
        if (!items && !(items = batch_alloc(st->max_count * st->in_esz))) {
            e = VT_ENOMEM;
            break;
        }
        e = next_in(in, items + n * st->in_esz, n ? deadline : VT_FOREVER);
        if (e == VT_ETIMEDOUT) {
            e = batch_send(st, &items, &n);
        } else if (e != VT_OK) {
            /* The input ended (or failed): what it gave before goes first. */
            if (n)
                (void)batch_send(st, &items, &n);
        } else {
            if (n++ == 0 && st->max_wait >= 0)
                deadline = deadline_after(vt_fiber_now(), st->max_wait);
            if (n == st->max_count)
                e = batch_send(st, &items, &n);
        }
    }
    if (items)
        batch_release(items);
    leave(st, e);
    return NULL;
}

static void *merge_main(void *arg)
{
    worker *w = arg;
    vt_stream *st = w->st;
    vt_stream *in = st->ins[w->index];
    vt_err e;
    if (!pass_gate(st, &e))
        return NULL;
    while (e == VT_OK) {
        if (vt_cancelled()) {
            e = VT_ECANCELED;
        } else if ((e = next_in(in, w->ibuf, VT_FOREVER)) == VT_OK) {
            if ((e = vt_chan_send(st->ch, w->ibuf, VT_FOREVER)) != VT_OK)
                drop(st, w->ibuf);
        }
    }
    leave(st, e);
    return NULL;
}

static void *par_unordered_main(void *arg)
{
    worker *w = arg;
    vt_stream *st = w->st;
    vt_stream *in = st->ins[0];
    vt_err e;
    if (!pass_gate(st, &e))
        return NULL;
    while (e == VT_OK) {
        if (vt_cancelled()) {
            e = VT_ECANCELED;
        } else if ((e = next_in(in, w->ibuf, VT_FOREVER)) != VT_OK) {
            /* Every sibling gets the same end from the input, after it has
             * sent what it holds: an input error needs no cancel. */
            if (e != VT_ECLOSED)
                record(st, e);
            e = VT_ECLOSED;
        } else if ((e = st->fn.map(st->ud, w->ibuf, w->obuf)) != VT_OK) {
            fail(st, e); /* even VT_ECLOSED: fn ended the stream, not this fiber */
            e = VT_ECLOSED;
        } else {
            e = vt_chan_send(st->ch, w->obuf, VT_FOREVER);
        }
    }
    leave(st, e);
    return NULL;
}

static void *par_ordered_main(void *arg)
{
    worker *w = arg;
    vt_stream *st = w->st;
    vt_stream *in = st->ins[0];
    size_t c = st->nworkers;
    vt_err e;
    if (!pass_gate(st, &e))
        return NULL;
    while (e == VT_OK) {
        if (vt_cancelled()) {
            e = VT_ECANCELED;
            break;
        }
        if ((e = vt_mutex_lock(&st->in_lock, VT_FOREVER)) != VT_OK)
            break;
        if (st->in_done) {
            vt_mutex_unlock(&st->in_lock);
            e = VT_ECLOSED;
            break;
        }
        e = next_in(in, w->ibuf, VT_FOREVER);
        uint64_t seq = st->next_seq;
        if (e != VT_OK) {
            st->in_done = 1;
            /* The normal end, or our own cancellation, needs no turn. */
            if (e == VT_ECLOSED || vt_cancelled()) {
                vt_mutex_unlock(&st->in_lock);
                break;
            }
        }
        st->next_seq++;
        vt_mutex_unlock(&st->in_lock);
        if (e == VT_OK)
            e = st->fn.map(st->ud, w->ibuf, w->obuf);
        vt_err t = vt_sem_acquire(&st->turns[seq % c], 1, VT_FOREVER);
        if (t != VT_OK) {
            e = t;
            break;
        }
        if (e != VT_OK) {
            /* Everything before it is out: the error takes its place in line. */
            fail(st, e);
            break;
        }
        e = vt_chan_send(st->ch, w->obuf, VT_FOREVER);
        vt_sem_release(&st->turns[(seq + 1) % c], 1);
    }
    leave(st, e);
    return NULL;
}

/* ---- Building ------------------------------------------------------------------------------- */

static vt_err capacity_of(const vt_stream_opts *opts, size_t *cap)
{
    *cap = opts && opts->capacity ? opts->capacity : CAPACITY_DEFAULT;
    /* An unbounded channel would void the memory bound. */
    return *cap == VT_CHAN_UNBOUNDED ? VT_EINVAL : VT_OK;
}

static int elem_size_ok(size_t n)
{
    return n != 0 && n <= VT_CHAN_ELEM_MAX;
}

static size_t round_up(size_t n)
{
    return (n + ALIGN_MAX - 1) / ALIGN_MAX * ALIGN_MAX;
}

/* Releases a stream whose fibers are gone. A source is released twice,
 * by the chain and by its producer's vt_stream_end: the second goes. */
static void destroy(vt_stream *st)
{
    if (st->kind == K_SOURCE && atomic_fetch_sub_explicit(&st->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (st->batches) {
        vt_batch b;
        while (vt_chan_try_recv(st->ch, &b) == VT_OK)
            vt_batch_free(&b);
    }
    if (st->turns) {
        for (size_t i = 0; i < st->nworkers; i++)
            (void)vt_sem_destroy(&st->turns[i]);
        vt_free(st->turns, st->nworkers * sizeof(vt_sem));
    }
    (void)vt_mutex_destroy(&st->in_lock);
    (void)vt_waitgroup_destroy(&st->gate);
    if (st->wk)
        vt_free(st->wk, st->wk_bytes);
    if (st->ins && st->ins != &st->in1)
        vt_free(st->ins, st->nin * sizeof(vt_stream *));
    vt_chan_free(st->ch);
    vt_free(st, sizeof(*st));
}

typedef struct stage_spec {
    int kind;
    vt_stream **ins;
    size_t nin;
    vt_runtime *rt; /* when opts names none */
    size_t esz;     /* of the output */
    size_t nworkers;
    size_t ibytes; /* per worker */
    size_t obytes;
    vt_fiber_fn body;
} stage_spec;

static void untake(vt_stream **ins, size_t n)
{
    for (size_t i = 0; i < n; i++)
        atomic_store_explicit(&ins[i]->taken, 0, memory_order_release);
}

/* Builds a stage of sp, starting from *proto (fn, ud and the like). On
 * error it took nothing: the inputs are as they were. */
static vt_err stage_new(vt_stream **out, const stage_spec *sp, const vt_stream *proto,
                        const vt_stream_opts *opts)
{
    size_t cap;
    vt_err e = capacity_of(opts, &cap);
    if (e)
        return e;
    for (size_t i = 0; i < sp->nin; i++)
        if (atomic_exchange_explicit(&sp->ins[i]->taken, 1, memory_order_acq_rel)) {
            untake(sp->ins, i);
            return VT_EINVAL; /* already a stage's input, or given twice */
        }
    vt_stream *st = vt_alloc(sizeof(*st));
    if (!st) {
        untake(sp->ins, sp->nin);
        return VT_ENOMEM;
    }
    *st = *proto;
    st->kind = (uint8_t)sp->kind;
    st->esz = sp->esz;
    st->rt = opts && opts->runtime ? opts->runtime : sp->rt;
    st->nworkers = sp->nworkers;
    st->nin = sp->nin;
    atomic_init(&st->running, (int64_t)sp->nworkers);
    (void)vt_waitgroup_init(&st->gate);
    (void)vt_waitgroup_add(&st->gate, 1);
    (void)vt_mutex_init(&st->in_lock);
    size_t ib = round_up(sp->ibytes), ob = round_up(sp->obytes),
           head = round_up(sp->nworkers * sizeof(worker));
    size_t per = ib + ob;
    if (sp->nin == 1) {
        st->in1 = sp->ins[0];
        st->ins = &st->in1;
    } else if (sp->nin > 1) {
        if (!(st->ins = vt_alloc(sp->nin * sizeof(vt_stream *)))) {
            e = VT_ENOMEM;
            goto undo;
        }
        memcpy(st->ins, sp->ins, sp->nin * sizeof(vt_stream *));
    }
    /* One fiber sends into it, except in merge and par_map. */
    if ((e = vt_chan_new(&st->ch, sp->esz, cap, sp->nworkers == 1 ? VT_CHAN_SINGLE_SENDER : 0)) !=
        VT_OK)
        goto undo;
    if (per && sp->nworkers > (SIZE_MAX - head) / per) {
        e = VT_ENOMEM;
        goto undo;
    }
    st->wk_bytes = head + sp->nworkers * per;
    if (!(st->wk = vt_alloc(st->wk_bytes))) {
        e = VT_ENOMEM;
        goto undo;
    }
    for (size_t i = 0; i < sp->nworkers; i++) {
        unsigned char *b = (unsigned char *)st->wk + head + i * per;
        st->wk[i] = (worker){st, i, b, b + ib};
    }
    if (sp->kind == K_PAR_MAP && !st->unordered) {
        if (!(st->turns = vt_alloc(sp->nworkers * sizeof(vt_sem)))) {
            e = VT_ENOMEM;
            goto undo;
        }
        for (size_t i = 0; i < sp->nworkers; i++)
            (void)vt_sem_init(&st->turns[i], i == 0);
    }
    if ((e = vt_scope_new(&st->scope, st->rt)) != VT_OK)
        goto undo;
    vt_fiber_opts fo;
    memset(&fo, 0, sizeof(fo));
    fo.name = opts && opts->name ? opts->name : kind_names[sp->kind];
    fo.scope = st->scope;
    fo.detached = 1;
    fo.runtime = st->rt;
    for (size_t i = 0; i < sp->nworkers && e == VT_OK; i++)
        e = vt_fiber_spawn_ex(NULL, sp->body, &st->wk[i], &fo);
    if (e != VT_OK)
        atomic_store_explicit(&st->aborted, 1, memory_order_release);
    (void)vt_waitgroup_done(&st->gate);
    if (e == VT_OK) {
        *out = st;
        return VT_OK;
    }
undo:
    vt_scope_close(st->scope); /* the fibers that started leave at the gate */
    st->scope = NULL;
    untake(sp->ins, sp->nin);
    destroy(st);
    return e;
}

/* ---- The public face ---------------------------------------------------------------------------
 */

static vt_runtime *runtime_of(const vt_stream_opts *opts)
{
    return opts && opts->runtime ? opts->runtime : vt_runtime_current();
}

vt_err vt_stream_new(vt_stream **out, size_t elem_size, const vt_stream_opts *opts)
{
    if (!out || !elem_size_ok(elem_size))
        return VT_EINVAL;
    size_t cap;
    vt_err e = capacity_of(opts, &cap);
    if (e)
        return e;
    vt_runtime *rt = runtime_of(opts);
    if (!rt)
        return VT_ESTATE;
    vt_stream *st = vt_calloc(1, sizeof(*st));
    if (!st)
        return VT_ENOMEM;
    st->kind = K_SOURCE;
    st->esz = elem_size;
    st->rt = rt;
    atomic_init(&st->refs, 2);
    if ((e = vt_chan_new(&st->ch, elem_size, cap, 0)) != VT_OK) {
        vt_free(st, sizeof(*st));
        return e;
    }
    *out = st;
    return VT_OK;
}

vt_err vt_stream_push(vt_stream *s, const void *elem, int64_t deadline)
{
    if (!s || !elem || s->kind != K_SOURCE)
        return VT_EINVAL;
    return vt_chan_send(s->ch, elem, deadline);
}

vt_err vt_stream_end(vt_stream *s, vt_err err)
{
    if (!s || s->kind != K_SOURCE)
        return VT_EINVAL;
    if (atomic_exchange_explicit(&s->ended, 1, memory_order_acq_rel))
        return VT_ECLOSED;
    if (err != VT_OK)
        record(s, err);
    /* VT_ECLOSED: the consumer freed the chain first. */
    vt_err e = vt_chan_close(s->ch);
    destroy(s);
    return e;
}

vt_err vt_stream_generate(vt_stream **out, size_t elem_size, vt_stream_gen_fn gen, void *ud,
                          const vt_stream_opts *opts)
{
    if (!out || !gen || !elem_size_ok(elem_size))
        return VT_EINVAL;
    vt_runtime *rt = runtime_of(opts);
    if (!rt)
        return VT_ESTATE;
    vt_stream proto;
    memset(&proto, 0, sizeof(proto));
    proto.fn.gen = gen;
    proto.ud = ud;
    stage_spec sp = {K_GENERATE, NULL, 0, rt, elem_size, 1, 0, elem_size, generate_main};
    return stage_new(out, &sp, &proto, opts);
}

vt_err vt_stream_map(vt_stream **out, vt_stream *in, size_t out_elem_size, vt_stream_map_fn fn,
                     void *ud, const vt_stream_opts *opts)
{
    if (!out || !in || !fn || !elem_size_ok(out_elem_size))
        return VT_EINVAL;
    vt_stream proto;
    memset(&proto, 0, sizeof(proto));
    proto.fn.map = fn;
    proto.ud = ud;
    stage_spec sp = {K_MAP, &in, 1, in->rt, out_elem_size, 1, in->esz, out_elem_size, map_main};
    return stage_new(out, &sp, &proto, opts);
}

vt_err vt_stream_filter(vt_stream **out, vt_stream *in, vt_stream_pred_fn keep, void *ud,
                        const vt_stream_opts *opts)
{
    if (!out || !in || !keep)
        return VT_EINVAL;
    vt_stream proto;
    memset(&proto, 0, sizeof(proto));
    proto.fn.keep = keep;
    proto.ud = ud;
    proto.batches = in->batches;
    stage_spec sp = {K_FILTER, &in, 1, in->rt, in->esz, 1, in->esz, 0, filter_main};
    return stage_new(out, &sp, &proto, opts);
}

vt_err vt_stream_batch(vt_stream **out, vt_stream *in, size_t max_count, int64_t max_wait_ns,
                       const vt_stream_opts *opts)
{
    if (!out || !in || max_count == 0 || max_count > (SIZE_MAX - BATCH_HDR) / in->esz)
        return VT_EINVAL;
    vt_stream proto;
    memset(&proto, 0, sizeof(proto));
    proto.batches = 1;
    proto.in_esz = in->esz;
    proto.max_count = max_count;
    proto.max_wait = max_wait_ns;
    stage_spec sp = {K_BATCH, &in, 1, in->rt, sizeof(vt_batch), 1, 0, 0, batch_main};
    return stage_new(out, &sp, &proto, opts);
}

vt_err vt_stream_merge(vt_stream **out, vt_stream **ins, size_t n, const vt_stream_opts *opts)
{
    if (!out || !ins || n == 0)
        return VT_EINVAL;
    int batches = 1;
    for (size_t i = 0; i < n; i++) {
        if (!ins[i] || ins[i]->esz != ins[0]->esz)
            return VT_EINVAL;
        batches &= ins[i]->batches;
    }
    vt_stream proto;
    memset(&proto, 0, sizeof(proto));
    proto.batches = (uint8_t)batches;
    stage_spec sp = {K_MERGE, ins, n, ins[0]->rt, ins[0]->esz, n, ins[0]->esz, 0, merge_main};
    return stage_new(out, &sp, &proto, opts);
}

vt_err vt_stream_par_map(vt_stream **out, vt_stream *in, size_t out_elem_size, unsigned concurrency,
                         int unordered, vt_stream_map_fn fn, void *ud, const vt_stream_opts *opts)
{
    if (!out || !in || !fn || concurrency == 0 || !elem_size_ok(out_elem_size))
        return VT_EINVAL;
    vt_stream proto;
    memset(&proto, 0, sizeof(proto));
    proto.fn.map = fn;
    proto.ud = ud;
    proto.unordered = unordered != 0;
    stage_spec sp = {K_PAR_MAP, &in,           1,
                     in->rt,    out_elem_size, concurrency,
                     in->esz,   out_elem_size, unordered ? par_unordered_main : par_ordered_main};
    return stage_new(out, &sp, &proto, opts);
}

vt_err vt_stream_next(vt_stream *s, void *elem, int64_t deadline)
{
    if (!s || !elem || atomic_load_explicit(&s->taken, memory_order_relaxed))
        return VT_EINVAL;
    return next_in(s, elem, deadline);
}

size_t vt_stream_elem_size(const vt_stream *s)
{
    return s ? s->esz : 0;
}

void vt_stream_free(vt_stream *s)
{
    if (!s)
        return;
    if (atomic_load_explicit(&s->taken, memory_order_acquire)) {
        vt_log(VT_LOG_ERROR, "async",
               "vt_stream_free(%p): a stage's input; free the chain's last stream", (void *)s);
        return;
    }
    /* The chain is a tree (merge has several inputs): list it without
     * recursing, for chains longer than a fiber's stack is deep. */
    vt_stream *all = NULL, *unvisited = s;
    s->walk_next = NULL;
    while (unvisited) {
        vt_stream *x = unvisited;
        unvisited = x->walk_next;
        x->all_next = all;
        all = x;
        for (size_t i = 0; i < x->nin; i++) {
            x->ins[i]->walk_next = unvisited;
            unvisited = x->ins[i];
        }
    }
    /* Stop everything before waiting for anything: a closed channel fails
     * a stage's send at once, the cancel wakes receives and callbacks. */
    for (vt_stream *x = all; x; x = x->all_next) {
        if (x->scope)
            vt_scope_cancel(x->scope);
        (void)vt_chan_close(x->ch);
    }
    /* Every fiber gone before any stream it reads goes. */
    for (vt_stream *x = all; x; x = x->all_next)
        if (x->scope) {
            vt_scope_close(x->scope);
            x->scope = NULL;
        }
    while (all) {
        vt_stream *x = all;
        all = x->all_next;
        destroy(x);
    }
}
