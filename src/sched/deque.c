/* The Chase–Lev deque of closure jobs, in the C11 formulation of Lê et al.
 * (PPoPP 2013), with two departures that keep ThreadSanitizer able to see
 * every happens-before edge it relies on: push publishes bottom with a
 * release store instead of a release fence and a relaxed store, and the
 * buffer pointer is published with release and read with acquire instead of
 * consume. On x86-64 and AArch64 both compile to the same instructions. */
#include "sched_int.h"

static vt__dq_buf *buf_new(int64_t capacity)
{
    vt__dq_buf *b = vt_alloc(sizeof(*b) + (size_t)capacity * sizeof(vt__dq_slot));
    if (!b)
        return NULL;
    b->mask = capacity - 1;
    b->retired = NULL;
    /* Slots are left uninitialised: a slot is read only at an index below
     * bottom, which push wrote first. */
    return b;
}

static void buf_free(vt__dq_buf *b)
{
    vt_free(b, sizeof(*b) + (size_t)(b->mask + 1) * sizeof(vt__dq_slot));
}

vt_err vt__deque_init(vt__deque *d, int64_t capacity)
{
    atomic_init(&d->top, 0);
    atomic_init(&d->bottom, 0);
    d->top_seen = 0;
    d->hold_local = INT64_MAX;
    atomic_init(&d->hold, -1);
    d->nclaimed = 0;
    d->claim_base = 0;
    vt__dq_buf *b = buf_new(capacity);
    if (!b)
        return VT_ENOMEM;
    atomic_init(&d->buf, b);
    return VT_OK;
}

void vt__deque_destroy(vt__deque *d)
{
    vt__dq_buf *b = atomic_load_explicit(&d->buf, memory_order_relaxed);
    while (b) {
        vt__dq_buf *older = b->retired;
        buf_free(b);
        b = older;
    }
    atomic_store_explicit(&d->buf, NULL, memory_order_relaxed);
}

static vt__dq_buf *grow(vt__deque *d, vt__dq_buf *old, int64_t t, int64_t b)
{
    int64_t cap = (old->mask + 1) * 2;
    if (cap > ((int64_t)1 << 40))
        return NULL;
    vt__dq_buf *n = buf_new(cap);
    if (!n)
        return NULL;
    for (int64_t i = t; i < b; i++) {
        vt__dq_slot *from = &old->slot[i & old->mask];
        vt__dq_slot *to = &n->slot[i & n->mask];
        atomic_store_explicit(&to->fn, atomic_load_explicit(&from->fn, memory_order_relaxed),
                              memory_order_relaxed);
        atomic_store_explicit(&to->arg, atomic_load_explicit(&from->arg, memory_order_relaxed),
                              memory_order_relaxed);
    }
    n->retired = old;
    atomic_store_explicit(&d->buf, n, memory_order_release);
    return n;
}

/* The slow half of vt__deque_push: top moved on, or the buffer is full. */
vt_err vt__deque_push_slow(vt__deque *d, vt_job_fn fn, void *arg)
{
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
    vt__dq_buf *a = atomic_load_explicit(&d->buf, memory_order_relaxed);
    int64_t t = atomic_load_explicit(&d->top, memory_order_acquire);
    if (d->hold_local != INT64_MAX) {
        if (atomic_load_explicit(&d->hold, memory_order_acquire) < 0)
            d->hold_local = INT64_MAX; /* the thief has read its range */
        else if (d->hold_local < t)
            t = d->hold_local;
    }
    d->top_seen = t;
    if (b - d->top_seen > a->mask) {
        a = grow(d, a, d->top_seen, b);
        if (!a)
            return VT_ENOMEM;
    }
    vt__dq_slot *s = &a->slot[b & a->mask];
    atomic_store_explicit(&s->fn, fn, memory_order_relaxed);
    atomic_store_explicit(&s->arg, arg, memory_order_relaxed);
    atomic_store_explicit(&d->bottom, b + 1, memory_order_release);
    return VT_OK;
}

/* Takes the newest VT__CLAIM jobs with one exchange, the first into *out
 * and the others into d->claimed. The argument is the one that makes the
 * paper's take safe for its last job, widened to a range: after the
 * exchange, a thief that still saw the old bottom read top before it (its
 * fence orders the two), so every thief takes an index below the top we
 * read now; if that top lies below the range, no thief can reach the range.
 * Otherwise the old bottom is put back and the caller takes one job. */
int vt__deque_claim(vt__deque *d, vt__job *out)
{
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
    int64_t nb = b - VT__CLAIM;
    vt__dq_buf *a = atomic_load_explicit(&d->buf, memory_order_relaxed);
    atomic_exchange_explicit(&d->bottom, nb, memory_order_seq_cst);
    int64_t t = atomic_load_explicit(&d->top, memory_order_seq_cst);
    d->top_seen = t < d->hold_local ? t : d->hold_local;
    if (t >= nb) {
        /* Thieves are near: give the range back, take one job the usual way. */
        atomic_store_explicit(&d->bottom, b, memory_order_relaxed);
        return vt__deque_take_one(d, out);
    }
    for (int i = 0; i < VT__CLAIM; i++) {
        vt__dq_slot *s = &a->slot[(nb + i) & a->mask];
        d->claimed[i].fn = atomic_load_explicit(&s->fn, memory_order_relaxed);
        d->claimed[i].arg = atomic_load_explicit(&s->arg, memory_order_relaxed);
        d->claimed[i].tag = 0;
    }
    d->claim_base = nb;
    d->nclaimed = VT__CLAIM - 1;
    *out = d->claimed[VT__CLAIM - 1];
    return 1;
}

/* Jobs were pushed after a claim: those are newer, so they go first; once
 * the deque proper is empty (thieves may have taken some of them, leaving
 * bottom above claim_base for good), the claimed ones follow. */
int vt__deque_take_after_claim(vt__deque *d, vt__job *out)
{
    if (vt__deque_take_one(d, out))
        return 1;
    *out = d->claimed[--d->nclaimed];
    return 1;
}

int vt__deque_steal(vt__deque *d, vt__job *out)
{
    int64_t t = atomic_load_explicit(&d->top, memory_order_acquire);
    /* A cheap look first: thieves probe empty deques far more often than
     * full ones, and the fence is the expensive part. */
    if (t >= atomic_load_explicit(&d->bottom, memory_order_relaxed))
        return 0;
    vt__fence_seq_cst();
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_acquire);
    if (t >= b)
        return 0;
    vt__dq_buf *a = atomic_load_explicit(&d->buf, memory_order_acquire);
    vt__dq_slot *s = &a->slot[t & a->mask];
    vt_job_fn fn = atomic_load_explicit(&s->fn, memory_order_relaxed);
    void *arg = atomic_load_explicit(&s->arg, memory_order_relaxed);
    if (!atomic_compare_exchange_strong_explicit(&d->top, &t, t + 1, memory_order_seq_cst,
                                                 memory_order_relaxed))
        return -1;
    out->fn = fn;
    out->arg = arg;
    out->tag = 0;
    return 1;
}

int64_t vt__deque_size(vt__deque *d)
{
    /* Jobs the owner has claimed are its own, not counted: thieves and
     * parkers use this to decide whether there is anything to take. */
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
    int64_t t = atomic_load_explicit(&d->top, memory_order_relaxed);
    return b > t ? b - t : 0;
}
