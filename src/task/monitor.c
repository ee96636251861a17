/* monitor.c — the events of task-graph runs, delivered to subscribers on a
 * thread of the monitor's own; counters of task states and attempt
 * durations; the Chrome/Perfetto trace exporter.
 *
 * Emitting (executor workers, once per task event) appends a record to a
 * buffer of the calling thread's own: a list of chunks that this thread
 * fills and the monitor thread drains (one producer, one consumer), each
 * record published by one release store. No lock is shared between
 * emitting threads; nothing is allocated once a thread has its chunks
 * (drained ones go back to it); and no system call is made while a run is
 * attached, because the monitor thread then polls (every 100 us, backing
 * off to 16 ms while nothing comes). With no run attached it polls a few
 * more times after the last event, then sleeps on a futex, and an emitter
 * wakes it, Dekker-style: record published, fence, then the "sleeping"
 * flag, which the monitor sets, fences, then looks for records.
 *
 * The monitor thread merges the buffers by timestamp. A pass takes what
 * every buffer holds at that moment and delivers it in (ts, buffer) order,
 * each buffer in its own emission order. An event later than the horizon
 * (the oldest "newest timestamp" among the buffers with something pending)
 * waits for the next pass, when a thread that was about to publish an
 * older event has done so; it waits one pass at most (events seen by a
 * pass are delivered by the next, whatever their time), so a thread that
 * stops emitting cannot hold the others back. A thread that stamped an
 * event and published it only after a later one was delivered still gets
 * it delivered out of order: without a global counter on the hot path,
 * that is as far as the monitor can know.
 *
 * Threads own their buffers through a small thread-local cache (monitor
 * id -> buffer). A thread that exits marks its buffers closed (a pthread
 * key destructor, under the registry lock that keeps it away from freed
 * monitors); the monitor thread frees a closed buffer once it is drained,
 * so short-lived emitting threads do not pile up. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "task_int.h"

/* ---- Tuning -------------------------------------------------------------------------- */

#define CHUNK_DATA ((size_t)64 * 1024 - 64) /* bytes of records in a standard chunk */
/* Drained chunks kept for a thread (1 MiB): fresh memory costs page faults. */
#define SPARE_MAX 16
#define CREDIT_BATCH 64 /* max_pending slots a thread reserves at once */
#define TLS_SLOTS 8     /* monitors a thread reaches without a lookup */
#define BATCH 64        /* events between two releases of the delivery lock */
#define POLL_MIN_NS VT_US(100)
#define POLL_MAX_NS VT_MS(16)
#define LINGER_POLLS 5 /* timed polls after the last event before an untimed sleep */
#define DEFAULT_MAX_PENDING ((size_t)1 << 22)
#define DUR_BUF 256
#define ARENA_BLOCK ((size_t)1 << 20)
#define STR_MAX ((size_t)1 << 30) /* longer names and messages are cut */
#define NIL UINT32_MAX

/* Attempt durations go to a log-linear histogram: values below 128 ns are
 * exact; above, each power of two is split in 128 buckets and a quantile is
 * reported as its bucket's midpoint, within 1/256 (0.4%) of a value that
 * was recorded, and clamped to [min, max]. min, max and mean are exact. */
#define HIST_SUB_BITS 7
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS (HIST_SUB + (64 - HIST_SUB_BITS) * HIST_SUB)

#ifdef __SIZEOF_INT128__
typedef unsigned __int128 dsum;
#else
typedef long double dsum;
#endif

/* ---- Records and chunks ----------------------------------------------------------------
 * A record is an event as emitted, its name and message following it (each
 * NUL-terminated); the trace keeps the same records, pseq then holding the
 * delivery seq. */
typedef struct rec {
    int64_t ts;
    const vt_graph *graph;
    const vt_task *task;
    uint64_t tasks;
    uint64_t pseq; /* order of emission in its buffer, from 1 */
    int64_t delay_ns;
    double progress;
    int32_t kind, state, worker, err, level;
    uint32_t attempt, name_len, msg_len;
} rec;

static size_t rec_size(size_t name_len, size_t msg_len)
{
    return (sizeof(rec) + name_len + msg_len + 2 + 7) & ~(size_t)7;
}

static size_t rec_bytes(const rec *r)
{
    return rec_size(r->name_len, r->msg_len);
}

static const char *rec_name(const rec *r)
{
    return (const char *)(r + 1);
}

static const char *rec_msg(const rec *r)
{
    return (const char *)(r + 1) + r->name_len + 1;
}

typedef struct chunk {
    _Atomic size_t committed;   /* bytes of whole records, stored last */
    struct chunk *_Atomic next; /* set once the producer moved on */
    struct chunk *spare_next;   /* on a spare list */
    size_t cap;
    char data[];
} chunk;
_Static_assert(offsetof(chunk, data) % 8 == 0, "records in a chunk are 8-aligned");

/* One thread's buffer. The padding keeps the producer's fields, the
 * consumer's and their neighbours in the heap on separate cache lines. */
typedef struct prod {
    char pad0[VT_CACHE_LINE];
    /* The emitting thread's. */
    chunk *wchunk;
    size_t wpos;
    uint64_t wseq;
    size_t credit; /* max_pending slots reserved and not used yet */
    chunk *mine;   /* spares taken back, not yet used */
    _Atomic int64_t last_ts;
    _Atomic uint64_t last_pseq;
    _Atomic uint64_t dropped;
    _Atomic uint64_t taken; /* spares taken back, ever */
    char pad1[VT_CACHE_LINE];
    /* The monitor thread's. */
    chunk *rhead;
    size_t rpos;
    uint64_t mark;   /* pseq seen by the previous pass: delivered now whatever the horizon */
    uint64_t pushed; /* spares given back, ever */
    chunk *_Atomic spares;
    _Atomic int closed; /* its thread exited */
    char pad2[VT_CACHE_LINE];
} prod;

/* A pass's view of one buffer: from where the monitor stopped to what was
 * published when the pass began. */
typedef struct cursor {
    prod *p;
    chunk *c;
    size_t pos;
    chunk *last;
    size_t last_end;
    int64_t head_ts;
    int64_t frontier;
    uint64_t new_mark;
} cursor;

/* ---- Counters ------------------------------------------------------------------------------- */

typedef struct counts {
    uint64_t by_state[VT_TASK_STATES];
    uint64_t events[VT_EVENT_KINDS];
    uint64_t runs_active;
    uint64_t n; /* attempts measured */
    int64_t min, max;
    dsum sum;
} counts;

/* ---- Index tables ---------------------------------------------------------------------------
 * Open addressing (linear probing, backward-shift deletion) over entries
 * kept in an array of the caller's, each starting with its key: slots hold
 * index + 1, so that the entries stay put and may be linked by index. */
typedef struct ikey {
    uintptr_t a, b;
} ikey;

typedef struct itab {
    uint32_t *s;
    size_t cap, n;
} itab;

#define IKEY(base, stride, i) \
    ((const ikey *)(const void *)((const char *)(base) + (size_t)(i) * (stride)))

static uint64_t ihash(uintptr_t a, uintptr_t b)
{
    return vt_hash_mix64((uint64_t)a * 0x9e3779b97f4a7c15ull + (uint64_t)b);
}

/* The slot holding (a, b), or SIZE_MAX. */
static size_t it_find(const itab *t, const void *base, size_t stride, uintptr_t a, uintptr_t b)
{
    if (!t->cap)
        return SIZE_MAX;
    size_t mask = t->cap - 1;
    for (size_t i = ihash(a, b) & mask;; i = (i + 1) & mask) {
        uint32_t v = t->s[i];
        if (!v)
            return SIZE_MAX;
        const ikey *k = IKEY(base, stride, v - 1);
        if (k->a == a && k->b == b)
            return i;
    }
}

/* Room for one more; VT_ENOMEM leaves t unchanged. */
static vt_err it_reserve(itab *t, const void *base, size_t stride)
{
    if ((t->n + 1) * 2 <= t->cap)
        return VT_OK;
    size_t cap = t->cap ? t->cap * 2 : 64;
    uint32_t *s = vt_calloc(cap, sizeof *s);
    if (!s)
        return VT_ENOMEM;
    for (size_t i = 0; i < t->cap; i++) {
        uint32_t v = t->s[i];
        if (!v)
            continue;
        const ikey *k = IKEY(base, stride, v - 1);
        size_t j = ihash(k->a, k->b) & (cap - 1);
        while (s[j])
            j = (j + 1) & (cap - 1);
        s[j] = v;
    }
    vt_free(t->s, t->cap * sizeof *t->s);
    t->s = s;
    t->cap = cap;
    return VT_OK;
}

/* Adds entry idx, whose key is absent, after it_reserve. */
static void it_insert(itab *t, const void *base, size_t stride, uint32_t idx)
{
    const ikey *k = IKEY(base, stride, idx);
    size_t mask = t->cap - 1, i = ihash(k->a, k->b) & mask;
    while (t->s[i])
        i = (i + 1) & mask;
    t->s[i] = idx + 1;
    t->n++;
}

static void it_remove(itab *t, const void *base, size_t stride, size_t i)
{
    size_t mask = t->cap - 1, j = i;
    for (;;) {
        j = (j + 1) & mask;
        uint32_t v = t->s[j];
        if (!v)
            break;
        const ikey *k = IKEY(base, stride, v - 1);
        size_t home = ihash(k->a, k->b) & mask;
        /* v may fill the hole unless its home lies after the hole (up to j). */
        if (((j - home) & mask) >= ((j - i) & mask)) {
            t->s[i] = v;
            i = j;
        }
    }
    t->s[i] = 0;
    t->n--;
}

static void it_free(itab *t)
{
    vt_free(t->s, t->cap * sizeof *t->s);
    t->s = NULL;
    t->cap = t->n = 0;
}

/* ---- Task tracking (monitor thread) -------------------------------------------------------- */

typedef struct tent {
    ikey key;      /* (graph, task) */
    int64_t start; /* the open attempt's STARTED */
    int64_t tmo;   /* its TIMEOUT, if has_tmo */
    uint32_t next; /* next entry of its run, or of the free list */
    uint32_t attempt;
    uint8_t state, has_state, open, has_tmo;
} tent;

typedef struct trun {
    const void *graph;
    uint64_t implicit; /* tasks counted PENDING by RUN_STARTED, not seen since */
    uint32_t head;     /* its entries */
    int started;       /* counted in runs_active */
} trun;

typedef struct sub {
    vt_event_fn fn;
    void *ud;
} sub;

/* The trace's records: appended by the monitor thread, read by writers up
 * to what was published under slock. */
typedef struct ablk {
    struct ablk *next;
    size_t used, cap;
    char data[];
} ablk;
_Static_assert(offsetof(ablk, data) % 8 == 0, "records in a block are 8-aligned");

struct vt_monitor {
    char pad0[VT_CACHE_LINE];
    /* Read by every emit, written rarely. */
    uint64_t id;
    size_t max_pending;
    _Atomic uint32_t attached;
    char pad1[VT_CACHE_LINE];
    _Atomic size_t pending; /* max_pending slots reserved by emitters, not yet delivered */
    char pad2[VT_CACHE_LINE];
    _Atomic uint32_t sleeping;
    _Atomic uint32_t wake;
    char pad3[VT_CACHE_LINE];
    _Atomic uint32_t flush_req, flush_done, flush_waiters;
    _Atomic int stopping;
    _Atomic uint64_t lost; /* dropped before reaching a buffer: no memory for one */

    int record;
    vt__thread thread;
    vt_monitor *reg_prev, *reg_next; /* the registry, under reg_lock */

    /* Buffers, under plock. */
    pthread_mutex_t plock;
    prod **prods;
    size_t nprods, cprods;
    uint64_t dropped_base; /* of the buffers already freed */

    /* Subscribers, under dlock, which the monitor thread holds while it
     * calls them. */
    pthread_mutex_t dlock;
    sub *subs;
    size_t nsubs, csubs;

    /* What other threads read, under slock. */
    pthread_mutex_t slock;
    counts pub;
    uint64_t *hist;
    ablk *rpub_first, *rpub_tail;
    size_t rpub_used;

    /* The monitor thread's. */
    cursor *cur; /* ccur cursors, then ccur heap entries, one block */
    uint32_t *heap;
    size_t ccur;
    uint64_t seq;
    counts live;
    int64_t durs[DUR_BUF];
    size_t ndurs;
    itab tab;
    tent *tents;
    size_t ntents, ctents;
    uint32_t tfree;
    trun *runs;
    size_t nruns, cruns, run_hint;
    ablk *rfirst, *rlast;
    _Atomic uint64_t rec_lost; /* events the trace misses (no memory) */
};

/* ---- Registry and thread-local buffers --------------------------------------------------------
 */

typedef struct tls_slot {
    uint64_t id;
    prod *p;
} tls_slot;

static _Thread_local tls_slot tls_cache[TLS_SLOTS] __attribute__((tls_model("initial-exec")));
static _Thread_local int tls_armed;
/* The monitor whose thread this is: its callbacks run here. */
static _Thread_local vt_monitor *tls_self;

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static vt_monitor *reg_head;
static _Atomic uint64_t next_id;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static pthread_key_t tls_key;
static int key_ok;

/* A thread exits: the buffers it holds are closed, for the monitor thread
 * to free once drained. Monitors freed meanwhile left the registry, so
 * their (freed) buffers are not touched. */
static void thread_gone(void *unused)
{
    (void)unused;
    tls_armed = 0;
    pthread_mutex_lock(&reg_lock);
    for (int i = 0; i < TLS_SLOTS; i++) {
        if (!tls_cache[i].id)
            continue;
        for (vt_monitor *m = reg_head; m; m = m->reg_next) {
            if (m->id == tls_cache[i].id) {
                atomic_store_explicit(&tls_cache[i].p->closed, 1, memory_order_release);
                break;
            }
        }
        tls_cache[i].id = 0;
        tls_cache[i].p = NULL;
    }
    pthread_mutex_unlock(&reg_lock);
}

static void key_init(void)
{
    key_ok = pthread_key_create(&tls_key, thread_gone) == 0;
}

static void reg_unlink(vt_monitor *m)
{
    pthread_mutex_lock(&reg_lock);
    if (m->reg_prev)
        m->reg_prev->reg_next = m->reg_next;
    else
        reg_head = m->reg_next;
    if (m->reg_next)
        m->reg_next->reg_prev = m->reg_prev;
    pthread_mutex_unlock(&reg_lock);
}

static chunk *chunk_new(size_t cap)
{
    chunk *c = vt_alloc(sizeof(chunk) + cap);
    if (!c)
        return NULL;
    atomic_init(&c->committed, 0);
    atomic_init(&c->next, NULL);
    c->spare_next = NULL;
    c->cap = cap;
    return c;
}

static void chunk_free(chunk *c)
{
    vt_free(c, sizeof(chunk) + c->cap);
}

static void chunk_list_free(chunk *c, int by_spare)
{
    while (c) {
        chunk *n = by_spare ? c->spare_next : atomic_load_explicit(&c->next, memory_order_relaxed);
        chunk_free(c);
        c = n;
    }
}

static void prod_free(prod *p)
{
    /* The producer's last writes reached us through a record, a drop or
     * the closed flag; the acquire loads make that explicit. */
    (void)atomic_load_explicit(&p->dropped, memory_order_acquire);
    (void)atomic_load_explicit(&p->closed, memory_order_acquire);
    chunk_list_free(p->rhead, 0);
    chunk_list_free(atomic_exchange_explicit(&p->spares, NULL, memory_order_acquire), 1);
    chunk_list_free(p->mine, 1);
    vt_free(p, sizeof *p);
}

static prod *prod_register(vt_monitor *m)
{
    pthread_once(&key_once, key_init);
    prod *p = vt_calloc(1, sizeof *p);
    if (!p)
        return NULL;
    chunk *c = chunk_new(CHUNK_DATA);
    if (!c) {
        vt_free(p, sizeof *p);
        return NULL;
    }
    p->wchunk = p->rhead = c;
    pthread_mutex_lock(&m->plock);
    if (m->nprods == m->cprods) {
        size_t cap = m->cprods ? m->cprods * 2 : 8;
        prod **a = vt_realloc(m->prods, m->cprods * sizeof *a, cap * sizeof *a);
        if (!a) {
            pthread_mutex_unlock(&m->plock);
            chunk_free(c);
            vt_free(p, sizeof *p);
            return NULL;
        }
        m->prods = a;
        m->cprods = cap;
    }
    m->prods[m->nprods++] = p;
    pthread_mutex_unlock(&m->plock);
    /* The least recently used slot makes room: its buffer stays with its
     * monitor (not closed at exit, freed with the monitor). */
    memmove(&tls_cache[1], &tls_cache[0], (TLS_SLOTS - 1) * sizeof tls_cache[0]);
    tls_cache[0].id = m->id;
    tls_cache[0].p = p;
    if (!tls_armed && key_ok && pthread_setspecific(tls_key, (void *)1) == 0)
        tls_armed = 1;
    return p;
}

static prod *prod_lookup(vt_monitor *m)
{
    for (int i = 1; i < TLS_SLOTS; i++) {
        if (tls_cache[i].id == m->id) {
            tls_slot s = tls_cache[i];
            memmove(&tls_cache[1], &tls_cache[0], (size_t)i * sizeof tls_cache[0]);
            tls_cache[0] = s;
            return s.p;
        }
    }
    return prod_register(m);
}

/* ---- Emitting ----------------------------------------------------------------------------------
 */

static void kick(vt_monitor *m)
{
    atomic_fetch_add_explicit(&m->wake, 1, memory_order_release);
    vt__futex_wake(&m->wake, 1);
}

static void wake_if_sleeping(vt_monitor *m)
{
    vt__fence_seq_cst();
    if (atomic_load_explicit(&m->sleeping, memory_order_relaxed) &&
        atomic_exchange_explicit(&m->sleeping, 0, memory_order_relaxed))
        kick(m);
}

/* Reserves up to CREDIT_BATCH of max_pending for p: one atomic operation on
 * the shared counter per CREDIT_BATCH events. */
static int credit_take(vt_monitor *m, prod *p)
{
    size_t cur = atomic_load_explicit(&m->pending, memory_order_relaxed);
    for (;;) {
        if (cur >= m->max_pending)
            return 0;
        size_t n = m->max_pending - cur;
        if (n > CREDIT_BATCH)
            n = CREDIT_BATCH;
        if (atomic_compare_exchange_weak_explicit(&m->pending, &cur, cur + n, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            p->credit = n;
            return 1;
        }
    }
}

static void drop(prod *p)
{
    atomic_store_explicit(&p->dropped, atomic_load_explicit(&p->dropped, memory_order_relaxed) + 1,
                          memory_order_release);
}

/* The next chunk for a record of need bytes: a drained one given back, or
 * a new one. */
static chunk *chunk_next(prod *p, size_t need)
{
    chunk *n = NULL;
    if (need <= CHUNK_DATA) {
        if (!p->mine)
            p->mine = atomic_exchange_explicit(&p->spares, NULL, memory_order_acquire);
        if (p->mine) {
            n = p->mine;
            p->mine = n->spare_next;
            atomic_store_explicit(&p->taken,
                                  atomic_load_explicit(&p->taken, memory_order_relaxed) + 1,
                                  memory_order_relaxed);
            atomic_store_explicit(&n->committed, 0, memory_order_relaxed);
            atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
        }
    }
    if (!n && !(n = chunk_new(need > CHUNK_DATA ? need : CHUNK_DATA)))
        return NULL;
    atomic_store_explicit(&p->wchunk->next, n, memory_order_release);
    p->wchunk = n;
    p->wpos = 0;
    return n;
}

void vt__monitor_emit(vt_monitor *m, const vt_event *ev)
{
    if (VT_UNLIKELY(!m || !ev))
        return;
    prod *p = VT_LIKELY(tls_cache[0].id == m->id) ? tls_cache[0].p : prod_lookup(m);
    if (VT_UNLIKELY(!p)) {
        atomic_fetch_add_explicit(&m->lost, 1, memory_order_relaxed);
        return;
    }
    if (VT_UNLIKELY(!p->credit) && !credit_take(m, p)) {
        drop(p);
        return;
    }
    const char *name = ev->name ? ev->name : "";
    const char *msg = ev->msg ? ev->msg : "";
    size_t nl = strlen(name), ml = strlen(msg);
    if (VT_UNLIKELY(nl > STR_MAX))
        nl = STR_MAX;
    if (VT_UNLIKELY(ml > STR_MAX))
        ml = STR_MAX;
    size_t need = rec_size(nl, ml);
    chunk *c = p->wchunk;
    if (VT_UNLIKELY(p->wpos + need > c->cap) && !(c = chunk_next(p, need))) {
        drop(p);
        return;
    }
    rec *r = (rec *)(void *)(c->data + p->wpos);
    r->ts = ev->ts_ns;
    r->graph = ev->graph;
    r->task = ev->task;
    r->tasks = ev->tasks;
    r->pseq = ++p->wseq;
    r->delay_ns = ev->delay_ns;
    r->progress = ev->progress;
    r->kind = (int32_t)ev->kind;
    r->state = (int32_t)ev->state;
    r->worker = ev->worker;
    r->err = (int32_t)ev->err;
    r->level = (int32_t)ev->level;
    r->attempt = ev->attempt;
    r->name_len = (uint32_t)nl;
    r->msg_len = (uint32_t)ml;
    char *s = (char *)(r + 1);
    memcpy(s, name, nl);
    s[nl] = '\0';
    memcpy(s + nl + 1, msg, ml);
    s[nl + 1 + ml] = '\0';
    p->credit--;
    atomic_store_explicit(&p->last_ts, ev->ts_ns, memory_order_relaxed);
    atomic_store_explicit(&p->last_pseq, r->pseq, memory_order_relaxed);
    p->wpos += need;
    atomic_store_explicit(&c->committed, p->wpos, memory_order_release);
    /* An attached run keeps the monitor thread polling: no wake needed. */
    if (VT_UNLIKELY(!atomic_load_explicit(&m->attached, memory_order_relaxed)))
        wake_if_sleeping(m);
}

void vt__monitor_attach(vt_monitor *m)
{
    if (!m)
        return;
    atomic_fetch_add_explicit(&m->attached, 1, memory_order_seq_cst);
    kick(m); /* from an untimed sleep to polling */
}

void vt__monitor_detach(vt_monitor *m)
{
    if (!m)
        return;
    if (atomic_fetch_sub_explicit(&m->attached, 1, memory_order_seq_cst) == 1)
        vt__futex_wake(&m->attached, INT32_MAX); /* vt_monitor_free may wait */
}

/* ---- Accounting (monitor thread) ------------------------------------------------------------ */

static void dec(uint64_t *c, uint64_t n)
{
    *c = *c > n ? *c - n : 0;
}

static void publish(vt_monitor *m)
{
    pthread_mutex_lock(&m->slock);
    for (size_t i = 0; i < m->ndurs; i++) {
        uint64_t v = (uint64_t)m->durs[i];
        unsigned b;
        if (v < HIST_SUB) {
            b = (unsigned)v;
        } else {
            unsigned shift = (unsigned)(63 - __builtin_clzll(v)) - HIST_SUB_BITS;
            b = HIST_SUB + shift * HIST_SUB + (unsigned)((v >> shift) - HIST_SUB);
        }
        m->hist[b]++;
    }
    m->ndurs = 0;
    m->pub = m->live;
    m->rpub_first = m->rfirst;
    m->rpub_tail = m->rlast;
    m->rpub_used = m->rlast ? m->rlast->used : 0;
    pthread_mutex_unlock(&m->slock);
}

static void add_dur(vt_monitor *m, int64_t d)
{
    if (d < 0)
        d = 0;
    if (m->ndurs == DUR_BUF) /* before counting d: the histogram holds what pub counts */
        publish(m);
    counts *c = &m->live;
    if (!c->n || d < c->min)
        c->min = d;
    if (!c->n || d > c->max)
        c->max = d;
    c->n++;
    c->sum += (dsum)d;
    m->durs[m->ndurs++] = d;
}

static trun *run_find(vt_monitor *m, const void *g)
{
    if (m->run_hint < m->nruns && m->runs[m->run_hint].graph == g)
        return &m->runs[m->run_hint];
    for (size_t i = 0; i < m->nruns; i++) {
        if (m->runs[i].graph == g) {
            m->run_hint = i;
            return &m->runs[i];
        }
    }
    return NULL;
}

static trun *run_get(vt_monitor *m, const void *g)
{
    trun *r = run_find(m, g);
    if (r)
        return r;
    if (m->nruns == m->cruns) {
        size_t cap = m->cruns ? m->cruns * 2 : 8;
        trun *a = vt_realloc(m->runs, m->cruns * sizeof *a, cap * sizeof *a);
        if (!a)
            return NULL;
        m->runs = a;
        m->cruns = cap;
    }
    r = &m->runs[m->nruns];
    r->graph = g;
    r->implicit = 0;
    r->head = NIL;
    r->started = 0;
    m->run_hint = m->nruns++;
    return r;
}

/* The run's tasks leave the counters; their tracking is dropped. */
static void run_release(vt_monitor *m, trun *r)
{
    counts *c = &m->live;
    for (uint32_t i = r->head; i != NIL;) {
        tent *e = &m->tents[i];
        uint32_t next = e->next;
        if (e->has_state)
            dec(&c->by_state[e->state], 1);
        if (e->open && e->has_tmo)
            add_dur(m, e->tmo - e->start);
        size_t slot = it_find(&m->tab, m->tents, sizeof(tent), e->key.a, e->key.b);
        if (slot != SIZE_MAX)
            it_remove(&m->tab, m->tents, sizeof(tent), slot);
        e->next = m->tfree;
        m->tfree = i;
        i = next;
    }
    r->head = NIL;
    dec(&c->by_state[VT_TASK_PENDING], r->implicit);
    r->implicit = 0;
    if (r->started)
        dec(&c->runs_active, 1);
    r->started = 0;
    if (!m->tab.n && m->ctents > 4096) {
        /* Give the memory of a big run back. */
        it_free(&m->tab);
        vt_free(m->tents, m->ctents * sizeof *m->tents);
        m->tents = NULL;
        m->ntents = m->ctents = 0;
        m->tfree = NIL;
    }
}

static void run_remove(vt_monitor *m, trun *r)
{
    size_t i = (size_t)(r - m->runs);
    m->runs[i] = m->runs[--m->nruns];
    m->run_hint = 0;
}

static tent *task_entry(vt_monitor *m, const vt_event *ev)
{
    uintptr_t a = (uintptr_t)ev->graph, b = (uintptr_t)ev->task;
    size_t slot = it_find(&m->tab, m->tents, sizeof(tent), a, b);
    if (slot != SIZE_MAX)
        return &m->tents[m->tab.s[slot] - 1];
    trun *r = run_get(m, ev->graph);
    if (!r || it_reserve(&m->tab, m->tents, sizeof(tent)))
        return NULL;
    uint32_t i;
    if (m->tfree != NIL) {
        i = m->tfree;
        m->tfree = m->tents[i].next;
    } else {
        if (m->ntents == m->ctents) {
            size_t cap = m->ctents ? m->ctents * 2 : 256;
            if (cap >= NIL)
                return NULL;
            tent *t = vt_realloc(m->tents, m->ctents * sizeof *t, cap * sizeof *t);
            if (!t)
                return NULL;
            m->tents = t;
            m->ctents = cap;
        }
        i = (uint32_t)m->ntents++;
    }
    tent *e = &m->tents[i];
    memset(e, 0, sizeof *e);
    e->key.a = a;
    e->key.b = b;
    e->next = r->head;
    r->head = i;
    it_insert(&m->tab, m->tents, sizeof(tent), i);
    /* A task of the run's count (subtasks, "parent/child", are not in it)
     * leaves the pool RUN_STARTED counted as PENDING. */
    if (r->implicit && !strchr(ev->name, '/')) {
        r->implicit--;
        e->state = VT_TASK_PENDING;
        e->has_state = 1;
    }
    return e;
}

static void account(vt_monitor *m, const vt_event *ev)
{
    counts *c = &m->live;
    if ((unsigned)ev->kind >= VT_EVENT_KINDS)
        return;
    c->events[ev->kind]++;
    if (ev->kind == VT_EV_RUN_STARTED) {
        trun *r = run_get(m, ev->graph);
        if (!r)
            return;
        if (r->started) /* its RUN_FINISHED was lost */
            run_release(m, r);
        r->implicit += ev->tasks;
        c->by_state[VT_TASK_PENDING] += ev->tasks;
        r->started = 1;
        c->runs_active++;
        return;
    }
    if (ev->kind == VT_EV_RUN_FINISHED) {
        trun *r = run_find(m, ev->graph);
        if (r) {
            run_release(m, r);
            run_remove(m, r);
        }
        return;
    }
    if (!ev->task)
        return;
    tent *e = task_entry(m, ev);
    if (!e)
        return;
    if ((unsigned)ev->state < VT_TASK_STATES && (!e->has_state || e->state != ev->state)) {
        if (e->has_state)
            dec(&c->by_state[e->state], 1);
        c->by_state[ev->state]++;
        e->state = (uint8_t)ev->state;
        e->has_state = 1;
    }
    switch (ev->kind) {
    case VT_EV_STARTED:
        /* An attempt still open ended at its timeout, if it had one (the
         * event of its end may have been dropped). */
        if (e->open && e->has_tmo)
            add_dur(m, e->tmo - e->start);
        e->open = 1;
        e->has_tmo = 0;
        e->start = ev->ts_ns;
        e->attempt = ev->attempt;
        break;
    case VT_EV_TIMEOUT:
        if (e->open && e->attempt == ev->attempt) {
            e->tmo = ev->ts_ns;
            e->has_tmo = 1;
        }
        break;
    case VT_EV_FINISHED:
    case VT_EV_RETRIED:
        if (e->open && e->attempt == ev->attempt)
            add_dur(m, ev->ts_ns - e->start);
        e->open = 0;
        break;
    default:
        break;
    }
}

static void record_add(vt_monitor *m, const rec *r, uint64_t seq)
{
    size_t sz = rec_bytes(r);
    ablk *b = m->rlast;
    if (!b || b->cap - b->used < sz) {
        size_t cap = sz > ARENA_BLOCK ? sz : ARENA_BLOCK;
        ablk *n = vt_alloc(sizeof(ablk) + cap);
        if (!n) {
            if (!atomic_fetch_add_explicit(&m->rec_lost, 1, memory_order_relaxed))
                vt_log(VT_LOG_WARN, "task", "monitor: out of memory, the trace will miss events");
            return;
        }
        n->next = NULL;
        n->used = 0;
        n->cap = cap;
        if (b)
            b->next = n;
        else
            m->rfirst = n;
        m->rlast = b = n;
    }
    rec *copy = (rec *)(void *)(b->data + b->used);
    memcpy(copy, r, sz);
    copy->pseq = seq;
    b->used += sz;
}

static void rec_event(const rec *r, vt_event *ev)
{
    ev->kind = (vt_event_kind)r->kind;
    ev->state = (vt_task_state)r->state;
    ev->ts_ns = r->ts;
    ev->graph = r->graph;
    ev->task = r->task;
    ev->name = rec_name(r);
    ev->worker = r->worker;
    ev->attempt = r->attempt;
    ev->err = (vt_err)r->err;
    ev->progress = r->progress;
    ev->delay_ns = r->delay_ns;
    ev->level = (vt_log_level)r->level;
    ev->msg = rec_msg(r);
    ev->tasks = r->tasks;
}

static void deliver(vt_monitor *m, const rec *r)
{
    vt_event ev;
    rec_event(r, &ev);
    ev.seq = ++m->seq;
    account(m, &ev);
    if (m->record)
        record_add(m, r, ev.seq);
    /* A callback may subscribe (appending, maybe moving the array): the
     * newcomer starts with the next event. */
    size_t n = m->nsubs;
    for (size_t i = 0; i < n; i++) {
        sub s = m->subs[i];
        s.fn(s.ud, &ev);
    }
}

/* ---- The merge (monitor thread) ------------------------------------------------------------- */

static rec *cur_rec(const cursor *k)
{
    return (rec *)(void *)(k->c->data + k->pos);
}

static int cur_empty(const cursor *k)
{
    return k->c == k->last && k->pos == k->last_end;
}

/* A drained chunk goes back to its producer, unless it holds enough. */
static void recycle(prod *p, chunk *c)
{
    if (c->cap != CHUNK_DATA ||
        p->pushed - atomic_load_explicit(&p->taken, memory_order_relaxed) >= SPARE_MAX) {
        chunk_free(c);
        return;
    }
    p->pushed++;
    chunk *head = atomic_load_explicit(&p->spares, memory_order_relaxed);
    do
        c->spare_next = head;
    while (!atomic_compare_exchange_weak_explicit(&p->spares, &head, c, memory_order_release,
                                                  memory_order_relaxed));
}

/* Moves past whole chunks: a chunk that is not the last one is complete. */
static void cur_settle(cursor *k)
{
    while (k->c != k->last &&
           k->pos == atomic_load_explicit(&k->c->committed, memory_order_acquire)) {
        chunk *old = k->c;
        k->c = atomic_load_explicit(&old->next, memory_order_acquire);
        k->pos = 0;
        recycle(k->p, old);
    }
    k->p->rhead = k->c;
    k->p->rpos = k->pos;
    if (!cur_empty(k))
        k->head_ts = cur_rec(k)->ts;
}

static void cur_open(cursor *k)
{
    prod *p = k->p;
    k->c = p->rhead;
    k->pos = p->rpos;
    chunk *last = k->c, *n;
    while ((n = atomic_load_explicit(&last->next, memory_order_acquire)))
        last = n;
    k->last = last;
    k->last_end = atomic_load_explicit(&last->committed, memory_order_acquire);
    /* Read after the records: at least as new as the last one taken. */
    k->frontier = atomic_load_explicit(&p->last_ts, memory_order_relaxed);
    k->new_mark = atomic_load_explicit(&p->last_pseq, memory_order_relaxed);
    cur_settle(k);
}

static int heap_less(const vt_monitor *m, uint32_t a, uint32_t b)
{
    int64_t x = m->cur[a].head_ts, y = m->cur[b].head_ts;
    return x < y || (x == y && a < b);
}

static void heap_down(vt_monitor *m, size_t n, size_t i)
{
    uint32_t *h = m->heap;
    for (;;) {
        size_t l = 2 * i + 1, s = i;
        if (l < n && heap_less(m, h[l], h[s]))
            s = l;
        if (l + 1 < n && heap_less(m, h[l + 1], h[s]))
            s = l + 1;
        if (s == i)
            return;
        uint32_t t = h[i];
        h[i] = h[s];
        h[s] = t;
        i = s;
    }
}

static void prod_reclaim(vt_monitor *m, prod *p)
{
    pthread_mutex_lock(&m->plock);
    for (size_t i = 0; i < m->nprods; i++) {
        if (m->prods[i] == p) {
            m->prods[i] = m->prods[--m->nprods];
            break;
        }
    }
    m->dropped_base += atomic_load_explicit(&p->dropped, memory_order_acquire);
    pthread_mutex_unlock(&m->plock);
    if (p->credit)
        atomic_fetch_sub_explicit(&m->pending, p->credit, memory_order_relaxed);
    prod_free(p);
}

static void batch_end(vt_monitor *m, size_t n)
{
    atomic_fetch_sub_explicit(&m->pending, n, memory_order_relaxed);
    publish(m);
}

/* Delivers what the buffers hold now, in time order: all of it if force,
 * else up to the horizon (and what the previous pass held back). *held
 * tells whether something waits for the next pass. Returns how many. */
static size_t pass(vt_monitor *m, int force, int *held)
{
    *held = 0;
    pthread_mutex_lock(&m->plock);
    size_t n = m->nprods;
    if (n > m->ccur) {
        /* Cursors are rebuilt by every pass: nothing to copy. */
        size_t cap = n * 2;
        cursor *c = vt_alloc(cap * (sizeof(cursor) + sizeof(uint32_t)));
        if (c) {
            vt_free(m->cur, m->ccur * (sizeof(cursor) + sizeof(uint32_t)));
            m->cur = c;
            m->heap = (uint32_t *)(void *)(c + cap);
            m->ccur = cap;
        } else {
            n = m->ccur; /* the others wait for memory, not lost */
        }
    }
    for (size_t i = 0; i < n; i++)
        m->cur[i].p = m->prods[i];
    pthread_mutex_unlock(&m->plock);

    size_t nh = 0;
    int64_t horizon = INT64_MAX;
    for (size_t i = 0; i < n; i++) {
        cursor *k = &m->cur[i];
        cur_open(k);
        if (cur_empty(k))
            continue;
        m->heap[nh++] = (uint32_t)i;
        if (k->frontier < horizon)
            horizon = k->frontier;
    }
    for (size_t i = nh / 2; i-- > 0;)
        heap_down(m, nh, i);

    size_t done = 0, batch = 0;
    int locked = 0;
    while (nh) {
        cursor *k = &m->cur[m->heap[0]];
        rec *r = cur_rec(k);
        if (!force && r->ts > horizon && r->pseq > k->p->mark) {
            *held = 1;
            break;
        }
        if (!locked) {
            pthread_mutex_lock(&m->dlock);
            locked = 1;
        }
        size_t sz = rec_bytes(r);
        deliver(m, r);
        done++;
        k->pos += sz;
        cur_settle(k);
        if (cur_empty(k))
            m->heap[0] = m->heap[--nh];
        heap_down(m, nh, 0);
        if (++batch == BATCH) {
            pthread_mutex_unlock(&m->dlock);
            locked = 0;
            batch_end(m, batch);
            batch = 0;
        }
    }
    if (locked)
        pthread_mutex_unlock(&m->dlock);
    if (batch)
        batch_end(m, batch);

    for (size_t i = 0; i < n; i++) {
        cursor *k = &m->cur[i];
        prod *p = k->p;
        p->mark = k->new_mark;
        if (atomic_load_explicit(&p->closed, memory_order_acquire)) {
            cur_open(k); /* its thread is gone: is everything delivered? */
            if (cur_empty(k))
                prod_reclaim(m, p);
        }
    }
    return done;
}

static int has_data(vt_monitor *m)
{
    int any = 0;
    pthread_mutex_lock(&m->plock);
    for (size_t i = 0; i < m->nprods && !any; i++) {
        prod *p = m->prods[i];
        any = p->rpos < atomic_load_explicit(&p->rhead->committed, memory_order_acquire) ||
              atomic_load_explicit(&p->rhead->next, memory_order_acquire) != NULL;
    }
    pthread_mutex_unlock(&m->plock);
    return any;
}

static void *monitor_main(void *arg)
{
    vt_monitor *m = arg;
    tls_self = m;
    int64_t period = POLL_MIN_NS;
    int idle_polls = LINGER_POLLS;
    for (;;) {
        uint32_t w = atomic_load_explicit(&m->wake, memory_order_acquire);
        uint32_t req = atomic_load_explicit(&m->flush_req, memory_order_acquire);
        int stop = atomic_load_explicit(&m->stopping, memory_order_acquire);
        int force = stop || req != atomic_load_explicit(&m->flush_done, memory_order_relaxed);
        int held;
        size_t n = pass(m, force, &held);
        if (force) {
            atomic_store(&m->flush_done, req);
            if (atomic_load(&m->flush_waiters))
                vt__futex_wake(&m->flush_done, INT32_MAX);
            if (stop)
                break;
            continue;
        }
        if (n || held) {
            period = POLL_MIN_NS;
            idle_polls = 0;
            continue;
        }
        /* Runs attached: poll, so that their workers never wake us. With
         * none, still poll a few times after the last event, so that a
         * steady stream does not pay a wake-up per event, and because an
         * emitter may have seen a run attached just before it left. */
        uint32_t att = atomic_load_explicit(&m->attached, memory_order_acquire);
        if (att || idle_polls < LINGER_POLLS) {
            idle_polls = att ? 0 : idle_polls + 1;
            vt__futex_wait(&m->wake, w, vt_deadline_after(period));
            if (period < POLL_MAX_NS)
                period *= 2;
            continue;
        }
        atomic_store_explicit(&m->sleeping, 1, memory_order_relaxed);
        vt__fence_seq_cst();
        if (has_data(m) || atomic_load(&m->flush_req) != atomic_load(&m->flush_done) ||
            atomic_load(&m->stopping) || atomic_load(&m->attached)) {
            atomic_store_explicit(&m->sleeping, 0, memory_order_relaxed);
            continue;
        }
        vt__futex_wait(&m->wake, w, VT_FOREVER);
        atomic_store_explicit(&m->sleeping, 0, memory_order_relaxed);
        period = POLL_MIN_NS;
        idle_polls = 0;
    }
    return NULL;
}

/* ---- The public calls --------------------------------------------------------------------------
 */

const char *vt_event_kind_name(vt_event_kind k)
{
    static const char *const names[VT_EVENT_KINDS] = {
        "run_started", "queued",  "started",  "finished", "retried",
        "cancelled",   "timeout", "progress", "log",      "run_finished"};
    return (unsigned)k < VT_EVENT_KINDS ? names[k] : "?";
}

static void monitor_release(vt_monitor *m)
{
    for (size_t i = 0; i < m->nprods; i++)
        prod_free(m->prods[i]);
    vt_free(m->prods, m->cprods * sizeof *m->prods);
    vt_free(m->subs, m->csubs * sizeof *m->subs);
    vt_free(m->cur, m->ccur * (sizeof(cursor) + sizeof(uint32_t)));
    vt_free(m->hist, HIST_BUCKETS * sizeof *m->hist);
    it_free(&m->tab);
    vt_free(m->tents, m->ctents * sizeof *m->tents);
    vt_free(m->runs, m->cruns * sizeof *m->runs);
    for (ablk *b = m->rfirst, *n; b; b = n) {
        n = b->next;
        vt_free(b, sizeof(ablk) + b->cap);
    }
    pthread_mutex_destroy(&m->plock);
    pthread_mutex_destroy(&m->dlock);
    pthread_mutex_destroy(&m->slock);
    vt_free(m, sizeof *m);
}

vt_err vt_monitor_new(vt_monitor **out, const vt_monitor_opts *opts)
{
    if (!out)
        return VT_EINVAL;
    *out = NULL;
    vt_monitor_opts o = {0, 0};
    if (opts)
        o = *opts;
    if (o.record != 0 && o.record != 1)
        return VT_EINVAL;
    vt_monitor *m = vt_calloc(1, sizeof *m);
    if (!m)
        return VT_ENOMEM;
    m->hist = vt_calloc(HIST_BUCKETS, sizeof *m->hist);
    if (!m->hist) {
        vt_free(m, sizeof *m);
        return VT_ENOMEM;
    }
    pthread_mutex_init(&m->plock, NULL);
    pthread_mutex_init(&m->dlock, NULL);
    pthread_mutex_init(&m->slock, NULL);
    m->id = atomic_fetch_add(&next_id, 1) + 1;
    m->max_pending = o.max_pending ? o.max_pending : DEFAULT_MAX_PENDING;
    m->record = o.record;
    m->tfree = NIL;
    pthread_mutex_lock(&reg_lock);
    m->reg_next = reg_head;
    if (reg_head)
        reg_head->reg_prev = m;
    reg_head = m;
    pthread_mutex_unlock(&reg_lock);
    vt_err e = vt__thread_create(&m->thread, monitor_main, m, 0, "vt-monitor");
    if (e) {
        reg_unlink(m);
        monitor_release(m);
        return e;
    }
    *out = m;
    return VT_OK;
}

void vt_monitor_free(vt_monitor *m)
{
    if (!m)
        return;
    if (tls_self == m) {
        vt_log(VT_LOG_ERROR, "task", "vt_monitor_free called from one of its callbacks: ignored");
        return;
    }
    uint32_t n = atomic_load(&m->attached);
    if (n)
        vt_log(VT_LOG_WARN, "task", "vt_monitor_free: waiting for %u run%s using the monitor", n,
               n == 1 ? "" : "s");
    while ((n = atomic_load(&m->attached)))
        vt__futex_wait(&m->attached, n, VT_FOREVER);
    atomic_store(&m->stopping, 1);
    kick(m);
    vt__thread_join(m->thread, NULL);
    reg_unlink(m);
    monitor_release(m);
}

vt_err vt_monitor_subscribe(vt_monitor *m, vt_event_fn fn, void *ud)
{
    if (!m || !fn)
        return VT_EINVAL;
    /* From a callback the monitor thread holds dlock already. */
    int self = tls_self == m;
    if (!self)
        pthread_mutex_lock(&m->dlock);
    vt_err e = VT_OK;
    for (size_t i = 0; i < m->nsubs; i++) {
        if (m->subs[i].fn == fn && m->subs[i].ud == ud) {
            e = VT_EEXIST;
            goto out;
        }
    }
    if (m->nsubs == m->csubs) {
        size_t cap = m->csubs ? m->csubs * 2 : 4;
        sub *a = vt_realloc(m->subs, m->csubs * sizeof *a, cap * sizeof *a);
        if (!a) {
            e = VT_ENOMEM;
            goto out;
        }
        m->subs = a;
        m->csubs = cap;
    }
    m->subs[m->nsubs].fn = fn;
    m->subs[m->nsubs].ud = ud;
    m->nsubs++;
out:
    if (!self)
        pthread_mutex_unlock(&m->dlock);
    return e;
}

vt_err vt_monitor_unsubscribe(vt_monitor *m, vt_event_fn fn, void *ud)
{
    if (!m || !fn)
        return VT_EINVAL;
    if (tls_self == m)
        return VT_EDEADLK;
    vt_err e = VT_ENOENT;
    pthread_mutex_lock(&m->dlock);
    for (size_t i = 0; i < m->nsubs; i++) {
        if (m->subs[i].fn == fn && m->subs[i].ud == ud) {
            memmove(&m->subs[i], &m->subs[i + 1], (m->nsubs - i - 1) * sizeof *m->subs);
            m->nsubs--;
            e = VT_OK;
            break;
        }
    }
    pthread_mutex_unlock(&m->dlock);
    return e;
}

vt_err vt_monitor_flush(vt_monitor *m, int64_t deadline)
{
    if (!m)
        return VT_EINVAL;
    if (tls_self == m)
        return VT_EDEADLK;
    uint32_t ticket = atomic_fetch_add(&m->flush_req, 1) + 1;
    kick(m);
    atomic_fetch_add(&m->flush_waiters, 1);
    vt_err e = VT_OK;
    for (;;) {
        uint32_t d = atomic_load(&m->flush_done);
        if ((int32_t)(d - ticket) >= 0)
            break;
        if (deadline != VT_FOREVER && vt_now_ns() >= deadline) {
            e = VT_ETIMEDOUT;
            break;
        }
        vt__futex_wait(&m->flush_done, d, deadline);
    }
    atomic_fetch_sub(&m->flush_waiters, 1);
    return e;
}

static int64_t quantile(const uint64_t *hist, const counts *c, unsigned pct)
{
    uint64_t rank = (c->n * pct + 99) / 100, seen = 0;
    if (!rank)
        rank = 1;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += hist[i];
        if (seen < rank)
            continue;
        int64_t v;
        if (i < HIST_SUB) {
            v = (int64_t)i;
        } else {
            unsigned shift = i / HIST_SUB - 1, sub = i % HIST_SUB;
            uint64_t lo = (uint64_t)(HIST_SUB + sub) << shift;
            uint64_t mid = lo + ((1ull << shift) >> 1);
            v = mid > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)mid;
        }
        return v < c->min ? c->min : v > c->max ? c->max : v;
    }
    return c->max;
}

vt_err vt_monitor_stats_get(vt_monitor *m, vt_monitor_stats *out)
{
    if (!m || !out)
        return VT_EINVAL;
    if (tls_self == m)
        publish(m); /* a callback sees the counters of its own event */
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&m->slock);
    const counts *c = &m->pub;
    memcpy(out->by_state, c->by_state, sizeof out->by_state);
    memcpy(out->events, c->events, sizeof out->events);
    out->runs_active = c->runs_active;
    if (c->n) {
        vt_duration_stats *d = &out->attempts;
        d->count = c->n;
        d->min_ns = c->min;
        d->max_ns = c->max;
        d->mean_ns = (int64_t)((c->sum + (dsum)(c->n / 2)) / (dsum)c->n);
        d->p50_ns = quantile(m->hist, c, 50);
        d->p90_ns = quantile(m->hist, c, 90);
        d->p99_ns = quantile(m->hist, c, 99);
    }
    pthread_mutex_unlock(&m->slock);
    uint64_t dropped = atomic_load_explicit(&m->lost, memory_order_relaxed);
    pthread_mutex_lock(&m->plock);
    dropped += m->dropped_base;
    for (size_t i = 0; i < m->nprods; i++)
        dropped += atomic_load_explicit(&m->prods[i]->dropped, memory_order_relaxed);
    pthread_mutex_unlock(&m->plock);
    out->dropped = dropped;
    return VT_OK;
}

/* ---- The trace ---------------------------------------------------------------------------------
 * Chrome's Trace Event Format, object form. Each graph run is a process
 * (pid 1, 2 ... in order of start); each worker a thread (tid = its index)
 * and threads outside the pool one more lane. The format wants the
 * complete events of a thread to nest, and an async task's attempt
 * overlaps the other tasks its worker runs meanwhile: such a span goes to
 * a further lane of its worker (tid + k * LANE_STRIDE), the first one free,
 * so no two spans of a lane overlap. */

#define LANE_STRIDE 100000
#define OUTSIDE_TID 99999
#define RUN_TID 99998
#define MAX_LANES 20000 /* beyond, spans share the last lane (tids stay in 32 bits) */
#define OBUF_SIZE ((size_t)1 << 16)

typedef struct obuf {
    FILE *f;
    size_t n;
    int err;
    int first;
    char buf[OBUF_SIZE];
} obuf;

static void ob_flush(obuf *o)
{
    if (o->n && !o->err) {
        errno = 0;
        if (fwrite(o->buf, 1, o->n, o->f) != o->n)
            o->err = errno ? errno : EIO;
    }
    o->n = 0;
}

static void ob_put(obuf *o, const char *s, size_t n)
{
    while (n) {
        size_t k = OBUF_SIZE - o->n;
        if (k > n)
            k = n;
        memcpy(o->buf + o->n, s, k);
        o->n += k;
        s += k;
        n -= k;
        if (o->n == OBUF_SIZE)
            ob_flush(o);
    }
}

static void ob_s(obuf *o, const char *s)
{
    ob_put(o, s, strlen(s));
}

static void ob_i(obuf *o, long long v)
{
    char t[24];
    int k = snprintf(t, sizeof t, "%lld", v);
    ob_put(o, t, (size_t)k);
}

/* ns as microseconds with three decimals: the format's unit, ns precise. */
static void ob_us(obuf *o, int64_t ns)
{
    char t[32];
    uint64_t a = ns < 0 ? 0 - (uint64_t)ns : (uint64_t)ns;
    int k = snprintf(t, sizeof t, "%s%" PRIu64 ".%03u", ns < 0 ? "-" : "", a / 1000,
                     (unsigned)(a % 1000));
    ob_put(o, t, (size_t)k);
}

/* The length of the valid UTF-8 sequence at s (not ASCII), 0 if invalid:
 * overlong forms, surrogates and values beyond U+10FFFF are. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0], lo = 0x80, hi = 0xbf;
    size_t len;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t k = 2; k < len; k++)
        if ((s[k] & 0xc0) != 0x80)
            return 0;
    return len;
}

/* A JSON string: quotes, backslashes and control characters escaped, valid
 * UTF-8 as it is, an invalid byte as U+FFFD (JSON text must be UTF-8). */
static void ob_str(obuf *o, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, start = 0;
    ob_put(o, "\"", 1);
    while (i < n) {
        unsigned c = u[i];
        size_t len = 0;
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            len = 1;
        else if (c >= 0x80)
            len = utf8_len(u + i, n - i);
        if (len) {
            i += len;
            continue;
        }
        ob_put(o, s + start, i - start);
        char esc[8] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15], 0, 0};
        switch (c) {
        case '"':
            ob_put(o, "\\\"", 2);
            break;
        case '\\':
            ob_put(o, "\\\\", 2);
            break;
        case '\n':
            ob_put(o, "\\n", 2);
            break;
        case '\r':
            ob_put(o, "\\r", 2);
            break;
        case '\t':
            ob_put(o, "\\t", 2);
            break;
        case '\b':
            ob_put(o, "\\b", 2);
            break;
        case '\f':
            ob_put(o, "\\f", 2);
            break;
        default:
            if (c >= 0x80)
                ob_put(o, "\\ufffd", 6);
            else
                ob_put(o, esc, 6);
            break;
        }
        start = ++i;
    }
    ob_put(o, s + start, i - start);
    ob_put(o, "\"", 1);
}

static void ob_cstr(obuf *o, const char *s)
{
    ob_str(o, s, strlen(s));
}

/* Starts an event object: {"name":...,"cat":...,"ph":...,"pid":..,"tid":.. */
static void ob_event(obuf *o, const char *name, size_t name_len, const char *cat, const char *ph,
                     uint32_t pid, long long tid)
{
    ob_s(o, o->first ? "\n{\"name\":" : ",\n{\"name\":");
    o->first = 0;
    ob_str(o, name, name_len);
    ob_s(o, ",\"cat\":\"");
    ob_s(o, cat);
    ob_s(o, "\",\"ph\":\"");
    ob_s(o, ph);
    ob_s(o, "\",\"pid\":");
    ob_i(o, pid);
    ob_s(o, ",\"tid\":");
    ob_i(o, tid);
}

typedef struct tspan {
    ikey key; /* (pid, task) while open */
    int64_t start, end, tmo;
    uint64_t seq;
    const rec *first; /* STARTED */
    const rec *last;  /* FINISHED or RETRIED; NULL: its end is unknown */
    uint32_t pid;
    int32_t worker; /* -1: outside the pool */
    uint32_t lane;
    uint8_t closed, has_tmo;
} tspan;

typedef struct tpid {
    ikey key;     /* (graph, 0) */
    uint32_t pid; /* of the graph's latest run */
} tpid;

typedef struct tproc {
    const rec *start, *end; /* RUN_STARTED, RUN_FINISHED */
    int run_lane;           /* something is on the run's lane */
} tproc;

/* The lanes of one worker in one process: their ends, and a heap of their
 * indices, earliest end first, in one block of cap * 12 bytes. */
typedef struct tlanes {
    ikey key; /* (pid, worker + 1) */
    int64_t *ends;
    uint32_t *heap;
    uint32_t n, cap;
} tlanes;

typedef struct twriter {
    obuf *o;
    tspan *spans;
    size_t nspans, cspans;
    itab open;
    tpid *pids;
    size_t npids, cpids;
    itab pidtab;
    tproc *procs; /* [pid - 1] */
    size_t nprocs, cprocs;
    tlanes *lanes;
    size_t nlanes, clanes;
    itab lanetab;
    int64_t max_ts;
    int nomem;
} twriter;

static int grow(void **a, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 1;
    size_t c = *cap ? *cap * 2 : 64;
    while (c < need)
        c *= 2;
    void *n = vt_realloc(*a, *cap * size, c * size);
    if (!n)
        return 0;
    *a = n;
    *cap = c;
    return 1;
}

static int32_t lane_worker(int32_t w)
{
    return w >= 0 && w < RUN_TID ? w : -1;
}

static long long lane_tid(int32_t worker, uint32_t lane)
{
    return (long long)(worker < 0 ? OUTSIDE_TID : worker) + (long long)lane * LANE_STRIDE;
}

/* The process of graph's current run, a new one for a RUN_STARTED (or the
 * first event of a graph); 0 on ENOMEM. */
static uint32_t pid_of(twriter *w, const void *graph, int new_run)
{
    size_t slot = it_find(&w->pidtab, w->pids, sizeof(tpid), (uintptr_t)graph, 0);
    if (slot != SIZE_MAX && !new_run)
        return w->pids[w->pidtab.s[slot] - 1].pid;
    if (!grow((void **)&w->procs, &w->cprocs, w->nprocs + 1, sizeof *w->procs))
        return 0;
    if (slot == SIZE_MAX) {
        if (!grow((void **)&w->pids, &w->cpids, w->npids + 1, sizeof *w->pids) ||
            it_reserve(&w->pidtab, w->pids, sizeof(tpid)))
            return 0;
        tpid *t = &w->pids[w->npids];
        t->key.a = (uintptr_t)graph;
        t->key.b = 0;
        it_insert(&w->pidtab, w->pids, sizeof(tpid), (uint32_t)w->npids);
        slot = it_find(&w->pidtab, w->pids, sizeof(tpid), (uintptr_t)graph, 0);
        w->npids++;
    }
    uint32_t pid = (uint32_t)++w->nprocs;
    w->pids[w->pidtab.s[slot] - 1].pid = pid;
    w->procs[pid - 1].start = w->procs[pid - 1].end = NULL;
    w->procs[pid - 1].run_lane = 0;
    return pid;
}

static tlanes *lanes_of(twriter *w, uint32_t pid, int32_t worker)
{
    uintptr_t b = (uintptr_t)(worker + 1);
    size_t slot = it_find(&w->lanetab, w->lanes, sizeof(tlanes), pid, b);
    if (slot != SIZE_MAX)
        return &w->lanes[w->lanetab.s[slot] - 1];
    if (!grow((void **)&w->lanes, &w->clanes, w->nlanes + 1, sizeof *w->lanes) ||
        it_reserve(&w->lanetab, w->lanes, sizeof(tlanes)))
        return NULL;
    tlanes *l = &w->lanes[w->nlanes];
    memset(l, 0, sizeof *l);
    l->key.a = pid;
    l->key.b = b;
    it_insert(&w->lanetab, w->lanes, sizeof(tlanes), (uint32_t)w->nlanes);
    w->nlanes++;
    return l;
}

static size_t lanes_bytes(uint32_t cap)
{
    return (size_t)cap * (sizeof(int64_t) + sizeof(uint32_t));
}

static int lane_less(const tlanes *l, uint32_t a, uint32_t b)
{
    return l->ends[a] < l->ends[b] || (l->ends[a] == l->ends[b] && a < b);
}

static void lane_down(tlanes *l, size_t i)
{
    for (;;) {
        size_t c = 2 * i + 1, s = i;
        if (c < l->n && lane_less(l, l->heap[c], l->heap[s]))
            s = c;
        if (c + 1 < l->n && lane_less(l, l->heap[c + 1], l->heap[s]))
            s = c + 1;
        if (s == i)
            return;
        uint32_t t = l->heap[i];
        l->heap[i] = l->heap[s];
        l->heap[s] = t;
        i = s;
    }
}

/* The lane of a span [start, end), spans coming in order of start: the
 * lane that ended first if it is free by then, else a new one. */
static int lane_assign(tlanes *l, int64_t start, int64_t end, uint32_t *lane)
{
    if (l->n && (l->ends[l->heap[0]] <= start || l->n >= MAX_LANES)) {
        uint32_t k = l->heap[0];
        if (end > l->ends[k])
            l->ends[k] = end;
        lane_down(l, 0);
        *lane = k;
        return 1;
    }
    if (l->n == l->cap) {
        uint32_t cap = l->cap ? l->cap * 2 : 4;
        int64_t *e = vt_alloc(lanes_bytes(cap));
        if (!e)
            return 0;
        uint32_t *h = (uint32_t *)(void *)(e + cap);
        if (l->n) {
            memcpy(e, l->ends, l->n * sizeof *e);
            memcpy(h, l->heap, l->n * sizeof *h);
        }
        vt_free(l->ends, lanes_bytes(l->cap));
        l->ends = e;
        l->heap = h;
        l->cap = cap;
    }
    uint32_t k = l->n;
    l->ends[k] = end;
    size_t i = l->n++;
    l->heap[i] = k;
    while (i && lane_less(l, l->heap[i], l->heap[(i - 1) / 2])) {
        uint32_t t = l->heap[i];
        l->heap[i] = l->heap[(i - 1) / 2];
        l->heap[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
    *lane = k;
    return 1;
}

static void instant(twriter *w, const rec *r, uint32_t pid)
{
    obuf *o = w->o;
    const char *kind = vt_event_kind_name((vt_event_kind)r->kind);
    long long tid;
    if (r->task) {
        int32_t wk = lane_worker(r->worker);
        if (!lanes_of(w, pid, wk)) {
            w->nomem = 1;
            return;
        }
        tid = lane_tid(wk, 0);
    } else {
        tid = RUN_TID;
        w->procs[pid - 1].run_lane = 1;
    }
    ob_event(o, kind, strlen(kind), r->task ? "task" : "run", "i", pid, tid);
    ob_s(o, ",\"s\":\"t\",\"ts\":");
    ob_us(o, r->ts);
    ob_s(o, ",\"args\":{\"task\":");
    ob_str(o, rec_name(r), r->name_len);
    if (r->task) {
        ob_s(o, ",\"attempt\":");
        ob_i(o, r->attempt);
    }
    if (r->kind == VT_EV_LOG) {
        ob_s(o, ",\"level\":");
        ob_cstr(o, vt_log_level_name((vt_log_level)r->level));
    } else {
        ob_s(o, ",\"err\":");
        ob_cstr(o, vt_errname((vt_err)r->err));
    }
    if (r->kind == VT_EV_RETRIED) {
        ob_s(o, ",\"delay_us\":");
        ob_us(o, r->delay_ns);
    }
    ob_s(o, ",\"msg\":");
    ob_str(o, rec_msg(r), r->msg_len);
    ob_s(o, "}}");
}

static void span_close(twriter *w, size_t slot, int64_t end, const rec *last)
{
    tspan *s = &w->spans[w->open.s[slot] - 1];
    s->end = end < s->start ? s->start : end;
    s->last = last;
    s->closed = 1;
    it_remove(&w->open, w->spans, sizeof(tspan), slot);
}

static void scan(twriter *w, const rec *r)
{
    if (r->ts > w->max_ts)
        w->max_ts = r->ts;
    uint32_t pid = pid_of(w, r->graph, r->kind == VT_EV_RUN_STARTED);
    if (!pid) {
        w->nomem = 1;
        return;
    }
    tproc *pr = &w->procs[pid - 1];
    size_t slot =
        r->task ? it_find(&w->open, w->spans, sizeof(tspan), pid, (uintptr_t)r->task) : SIZE_MAX;
    tspan *s;
    switch (r->kind) {
    case VT_EV_RUN_STARTED:
        pr->start = r;
        pr->run_lane = 1;
        break;
    case VT_EV_RUN_FINISHED:
        pr->end = r;
        pr->run_lane = 1;
        break;
    case VT_EV_STARTED:
        if (!r->task)
            break;
        if (slot != SIZE_MAX) {
            /* The end of the previous attempt was lost: it ends at its
             * timeout if it had one, else where this one starts. */
            s = &w->spans[w->open.s[slot] - 1];
            span_close(w, slot, s->has_tmo ? s->tmo : r->ts, NULL);
        }
        if (!grow((void **)&w->spans, &w->cspans, w->nspans + 1, sizeof *w->spans) ||
            it_reserve(&w->open, w->spans, sizeof(tspan))) {
            w->nomem = 1;
            break;
        }
        s = &w->spans[w->nspans];
        memset(s, 0, sizeof *s);
        s->key.a = pid;
        s->key.b = (uintptr_t)r->task;
        s->start = r->ts;
        s->seq = r->pseq;
        s->first = r;
        s->pid = pid;
        s->worker = lane_worker(r->worker);
        it_insert(&w->open, w->spans, sizeof(tspan), (uint32_t)w->nspans);
        w->nspans++;
        break;
    case VT_EV_FINISHED:
    case VT_EV_RETRIED:
        if (slot != SIZE_MAX)
            span_close(w, slot, r->ts, r);
        if (r->kind == VT_EV_RETRIED)
            instant(w, r, pid);
        break;
    case VT_EV_TIMEOUT:
        if (slot != SIZE_MAX) {
            s = &w->spans[w->open.s[slot] - 1];
            s->tmo = r->ts;
            s->has_tmo = 1;
        }
        instant(w, r, pid);
        break;
    case VT_EV_CANCELLED:
    case VT_EV_LOG:
        instant(w, r, pid);
        break;
    default:
        break;
    }
}

static int span_cmp(const void *a, const void *b)
{
    const tspan *x = a, *y = b;
    if (x->start != y->start)
        return x->start < y->start ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void write_span(twriter *w, const tspan *s)
{
    obuf *o = w->o;
    const rec *f = s->first, *l = s->last;
    ob_event(o, rec_name(f), f->name_len, "task", "X", s->pid, lane_tid(s->worker, s->lane));
    ob_s(o, ",\"ts\":");
    ob_us(o, s->start);
    ob_s(o, ",\"dur\":");
    ob_us(o, s->end - s->start);
    ob_s(o, ",\"args\":{\"attempt\":");
    ob_i(o, f->attempt);
    ob_s(o, ",\"worker\":");
    ob_i(o, f->worker);
    ob_s(o, ",\"end\":\"");
    ob_s(o, !l                         ? (s->closed ? "lost" : "unfinished")
            : l->kind == VT_EV_RETRIED ? "retried"
                                       : "finished");
    ob_s(o, "\"");
    if (l) {
        ob_s(o, ",\"state\":");
        ob_cstr(o, vt_task_state_name((vt_task_state)l->state));
        ob_s(o, ",\"err\":");
        ob_cstr(o, vt_errname((vt_err)l->err));
        ob_s(o, ",\"msg\":");
        ob_str(o, rec_msg(l), l->msg_len);
    } else {
        ob_s(o, ",\"state\":\"running\",\"err\":\"VT_OK\",\"msg\":\"\"");
    }
    if (s->has_tmo) {
        ob_s(o, ",\"timeout_at_us\":");
        ob_us(o, s->tmo);
    }
    ob_s(o, "}}");
}

/* what_name and what_sort_index metadata for a process or a thread. */
static void write_meta(twriter *w, const char *what, uint32_t pid, long long tid, const char *name,
                       long long sort)
{
    obuf *o = w->o;
    char nm[32];
    snprintf(nm, sizeof nm, "%s_name", what);
    ob_event(o, nm, strlen(nm), "__metadata", "M", pid, tid);
    ob_s(o, ",\"ts\":0,\"args\":{\"name\":");
    ob_cstr(o, name);
    ob_s(o, "}}");
    snprintf(nm, sizeof nm, "%s_sort_index", what);
    ob_event(o, nm, strlen(nm), "__metadata", "M", pid, tid);
    ob_s(o, ",\"ts\":0,\"args\":{\"sort_index\":");
    ob_i(o, sort);
    ob_s(o, "}}");
}

static void write_procs(twriter *w)
{
    obuf *o = w->o;
    char label[160];
    for (uint32_t pid = 1; pid <= w->nprocs; pid++) {
        tproc *pr = &w->procs[pid - 1];
        const rec *st = pr->start;
        if (st && st->msg_len)
            snprintf(label, sizeof label, "run %.140s", rec_msg(st));
        else
            snprintf(label, sizeof label, "run #%u", (unsigned)pid);
        write_meta(w, "process", pid, 0, label, pid);
        if (!pr->run_lane)
            continue;
        write_meta(w, "thread", pid, RUN_TID, "run", -1);
        if (!st)
            continue;
        int64_t end = pr->end ? pr->end->ts : w->max_ts;
        ob_event(o, label, strlen(label), "run", "X", pid, RUN_TID);
        ob_s(o, ",\"ts\":");
        ob_us(o, st->ts);
        ob_s(o, ",\"dur\":");
        ob_us(o, end > st->ts ? end - st->ts : 0);
        ob_s(o, ",\"args\":{\"run_id\":");
        ob_str(o, rec_msg(st), st->msg_len);
        ob_s(o, ",\"tasks\":");
        ob_i(o, (long long)st->tasks);
        if (pr->end) {
            ob_s(o, ",\"tasks_at_end\":");
            ob_i(o, (long long)pr->end->tasks);
            ob_s(o, ",\"err\":");
            ob_cstr(o, vt_errname((vt_err)pr->end->err));
        } else {
            ob_s(o, ",\"end\":\"unfinished\"");
        }
        ob_s(o, "}}");
    }
    for (size_t i = 0; i < w->nlanes; i++) {
        tlanes *l = &w->lanes[i];
        int32_t wk = (int32_t)l->key.b - 1;
        uint32_t n = l->n ? l->n : 1;
        for (uint32_t k = 0; k < n; k++) {
            int at = wk < 0 ? snprintf(label, sizeof label, "outside")
                            : snprintf(label, sizeof label, "worker %d", (int)wk);
            if (k && at > 0 && (size_t)at < sizeof label)
                snprintf(label + at, sizeof label - (size_t)at, " (%u)", (unsigned)(k + 1));
            long long sort = (long long)(wk < 0 ? OUTSIDE_TID : wk) * 1000 + k;
            write_meta(w, "thread", (uint32_t)l->key.a, lane_tid(wk, k), label, sort);
        }
    }
}

static void writer_free(twriter *w)
{
    vt_free(w->spans, w->cspans * sizeof *w->spans);
    it_free(&w->open);
    vt_free(w->pids, w->cpids * sizeof *w->pids);
    it_free(&w->pidtab);
    vt_free(w->procs, w->cprocs * sizeof *w->procs);
    for (size_t i = 0; i < w->nlanes; i++)
        vt_free(w->lanes[i].ends, lanes_bytes(w->lanes[i].cap));
    vt_free(w->lanes, w->clanes * sizeof *w->lanes);
    it_free(&w->lanetab);
    vt_free(w->o, sizeof *w->o);
}

vt_err vt_monitor_write_trace(vt_monitor *m, FILE *f)
{
    if (!m || !f)
        return VT_EINVAL;
    if (!m->record)
        return VT_ESTATE;
    if (tls_self == m) {
        publish(m); /* from a callback: what was delivered so far */
    } else {
        vt_err e = vt_monitor_flush(m, VT_FOREVER);
        if (e)
            return e;
    }
    pthread_mutex_lock(&m->slock);
    ablk *first = m->rpub_first, *tail = m->rpub_tail;
    size_t tail_used = m->rpub_used;
    pthread_mutex_unlock(&m->slock);
    vt_monitor_stats st;
    vt_monitor_stats_get(m, &st);

    twriter w;
    memset(&w, 0, sizeof w);
    w.max_ts = INT64_MIN;
    w.o = vt_alloc(sizeof *w.o);
    if (!w.o)
        return VT_ENOMEM;
    obuf *o = w.o;
    o->f = f;
    o->n = 0;
    o->err = 0;
    o->first = 1;
    ob_s(o,
         "{\"displayTimeUnit\":\"ns\",\"otherData\":{\"generator\":\"vitte\",\"dropped_events\":");
    ob_i(o, (long long)(st.dropped + atomic_load_explicit(&m->rec_lost, memory_order_relaxed)));
    ob_s(o, "},\"traceEvents\":[");
    for (ablk *b = first; b; b = b == tail ? NULL : b->next) {
        size_t end = b == tail ? tail_used : b->used;
        for (size_t off = 0; off < end && !w.nomem;) {
            const rec *r = (const rec *)(const void *)(b->data + off);
            scan(&w, r);
            off += rec_bytes(r);
        }
    }
    if (!w.nomem) {
        for (size_t i = 0; i < w.nspans; i++) {
            tspan *s = &w.spans[i];
            if (!s->closed) /* still running: up to the last event */
                s->end = w.max_ts > s->start ? w.max_ts : s->start;
        }
        if (w.nspans)
            qsort(w.spans, w.nspans, sizeof *w.spans, span_cmp);
        for (size_t i = 0; i < w.nspans && !w.nomem; i++) {
            tspan *s = &w.spans[i];
            tlanes *l = lanes_of(&w, s->pid, s->worker);
            if (!l || !lane_assign(l, s->start, s->end, &s->lane))
                w.nomem = 1;
            else
                write_span(&w, s);
        }
    }
    if (!w.nomem)
        write_procs(&w);
    ob_s(o, "\n]}\n");
    ob_flush(o);
    int err = o->err;
    int nomem = w.nomem;
    writer_free(&w);
    if (nomem)
        return VT_ENOMEM;
    if (!err) {
        errno = 0;
        if (fflush(f) == EOF || ferror(f))
            err = errno ? errno : EIO;
    }
    return err ? vt_err_from_errno(err) : VT_OK;
}
