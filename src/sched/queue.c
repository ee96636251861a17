/* The pool-wide queues: the injection queue of LIFO pools, the one queue of
 * FIFO pools, the levels of a PRIORITY pool and the groups of a FAIR pool.
 * All sit behind one small lock; what they promise about order is documented with
 * vt_policy in vitte/sched.h. */
#include <string.h>

#include "sched_int.h"

/* ---- vt__ring ------------------------------------------------------------- */

static vt_err ring_grow(vt__ring *r)
{
    size_t cap = r->cap ? r->cap * 2 : 64;
    vt__job *items = vt_alloc(cap * sizeof(*items));
    if (!items)
        return VT_ENOMEM;
    for (size_t i = 0; i < r->count; i++)
        items[i] = r->items[(r->head + i) & (r->cap - 1)];
    vt_free(r->items, r->cap * sizeof(*r->items));
    r->items = items;
    r->cap = cap;
    r->head = 0;
    return VT_OK;
}

vt_err vt__ring_push(vt__ring *r, vt__job job)
{
    if (r->count == r->cap) {
        vt_err e = ring_grow(r);
        if (e)
            return e;
    }
    r->items[(r->head + r->count) & (r->cap - 1)] = job;
    r->count++;
    return VT_OK;
}

int vt__ring_pop(vt__ring *r, vt__job *out)
{
    if (!r->count)
        return 0;
    *out = r->items[r->head];
    r->head = (r->head + 1) & (r->cap - 1);
    r->count--;
    return 1;
}

void vt__ring_free(vt__ring *r)
{
    vt_free(r->items, r->cap * sizeof(*r->items));
    memset(r, 0, sizeof(*r));
}

/* ---- FAIR's groups ------------------------------------------------------------ */

static size_t gslot(const vt__shared_queue *q, uint64_t key)
{
    return (size_t)vt_hash_mix64(key) & (q->gindex_cap - 1);
}

static vt_err gindex_rebuild(vt__shared_queue *q, size_t cap)
{
    uint32_t *idx = vt_calloc(cap, sizeof(*idx));
    if (!idx)
        return VT_ENOMEM;
    vt_free(q->gindex, q->gindex_cap * sizeof(*q->gindex));
    q->gindex = idx;
    q->gindex_cap = cap;
    for (size_t g = 0; g < q->ngroups; g++) {
        size_t s = gslot(q, q->groups[g].key);
        while (idx[s])
            s = (s + 1) & (cap - 1);
        idx[s] = (uint32_t)g + 1;
    }
    return VT_OK;
}

/* The group of key, created if needed; NULL when out of memory. Groups are
 * never removed: a pool sees as many as it has submitters and user groups. */
static vt__fair_group *group_get(vt__shared_queue *q, uint64_t key)
{
    if (q->gindex_cap) {
        for (size_t s = gslot(q, key); q->gindex[s]; s = (s + 1) & (q->gindex_cap - 1)) {
            vt__fair_group *g = &q->groups[q->gindex[s] - 1];
            if (g->key == key)
                return g;
        }
    }
    if (q->ngroups == q->groups_cap) {
        size_t cap = q->groups_cap ? q->groups_cap * 2 : 16;
        vt__fair_group *groups = vt_realloc(q->groups, q->groups_cap * sizeof(*groups), cap * sizeof(*groups));
        if (!groups)
            return NULL;
        q->groups = groups;
        q->groups_cap = cap;
    }
    if (q->ngroups == q->rr_cap) {
        /* Every group may be on the round robin at once. */
        size_t cap = q->rr_cap ? q->rr_cap * 2 : 16;
        uint32_t *rr = vt_realloc(q->rr, q->rr_cap * sizeof(*rr), cap * sizeof(*rr));
        if (!rr)
            return NULL;
        /* The ring is indexed modulo its capacity: unwrap what wrapped. */
        if (q->rr_head + q->rr_count > q->rr_cap)
            memcpy(rr + q->rr_cap, rr, (q->rr_head + q->rr_count - q->rr_cap) * sizeof(*rr));
        q->rr = rr;
        q->rr_cap = cap;
    }
    if ((q->ngroups + 1) * 2 > q->gindex_cap) {
        if (gindex_rebuild(q, q->gindex_cap ? q->gindex_cap * 2 : 32))
            return NULL;
    }
    vt__fair_group *g = &q->groups[q->ngroups];
    memset(g, 0, sizeof(*g));
    g->key = key;
    size_t s = gslot(q, key);
    while (q->gindex[s])
        s = (s + 1) & (q->gindex_cap - 1);
    q->gindex[s] = (uint32_t)q->ngroups + 1;
    q->ngroups++;
    return g;
}

static void rr_push(vt__shared_queue *q, uint32_t g)
{
    q->rr[(q->rr_head + q->rr_count) % q->rr_cap] = g;
    q->rr_count++;
}

static uint32_t rr_pop(vt__shared_queue *q)
{
    uint32_t g = q->rr[q->rr_head];
    q->rr_head = (q->rr_head + 1) % q->rr_cap;
    q->rr_count--;
    return g;
}

/* ---- The shared queue ---------------------------------------------------------- */

vt_err vt__squeue_init(vt__shared_queue *q, vt_policy policy, unsigned levels, unsigned starvation_limit)
{
    memset(q, 0, sizeof(*q));
    q->policy = policy;
    q->nlevels = policy == VT_POLICY_PRIORITY ? levels : 1;
    q->starvation_limit = starvation_limit;
    q->levels = vt_calloc(q->nlevels, sizeof(*q->levels));
    q->age = vt_calloc(q->nlevels, sizeof(*q->age));
    if (!q->levels || !q->age) {
        vt__squeue_destroy(q);
        return VT_ENOMEM;
    }
    return VT_OK;
}

void vt__squeue_destroy(vt__shared_queue *q)
{
    if (q->levels)
        for (unsigned i = 0; i < q->nlevels; i++)
            vt__ring_free(&q->levels[i]);
    vt_free(q->levels, q->nlevels * sizeof(*q->levels));
    vt_free(q->age, q->nlevels * sizeof(*q->age));
    for (size_t g = 0; g < q->ngroups; g++)
        vt__ring_free(&q->groups[g].jobs);
    vt_free(q->groups, q->groups_cap * sizeof(*q->groups));
    vt_free(q->gindex, q->gindex_cap * sizeof(*q->gindex));
    vt_free(q->rr, q->rr_cap * sizeof(*q->rr));
    memset(q, 0, sizeof(*q));
}

vt_err vt__squeue_push(vt__shared_queue *q, vt__job job, unsigned level)
{
    vt_err e = VT_OK;
    vt__spin_lock(&q->lock);
    if (q->policy == VT_POLICY_FAIR) {
        vt__fair_group *g = group_get(q, job.tag);
        if (!g) {
            e = VT_ENOMEM;
        } else if ((e = vt__ring_push(&g->jobs, job)) == VT_OK && !g->active) {
            g->active = 1;
            rr_push(q, (uint32_t)(g - q->groups));
        }
    } else {
        e = vt__ring_push(&q->levels[q->policy == VT_POLICY_PRIORITY ? level : 0], job);
    }
    if (e == VT_OK)
        atomic_store_explicit(&q->count, atomic_load_explicit(&q->count, memory_order_relaxed) + 1,
                              memory_order_relaxed);
    vt__spin_unlock(&q->lock);
    return e;
}

/* PRIORITY's pick: the highest non-empty level, unless some non-empty
 * level has been passed over starvation_limit times or more; then the one
 * passed over most often (the higher on a tie). Serving the longest-waiting
 * aged level, not the highest, is what bounds the wait: an aged level has at
 * most levels-1 others ahead of it, each served once before it. */
static int pick_level(vt__shared_queue *q)
{
    int top = -1, aged = -1;
    for (int l = (int)q->nlevels - 1; l >= 0; l--) {
        if (!q->levels[l].count)
            continue;
        if (top < 0)
            top = l;
        if (q->age[l] >= q->starvation_limit && (aged < 0 || q->age[l] > q->age[aged]))
            aged = l;
    }
    if (top < 0)
        return -1;
    int pick = aged >= 0 ? aged : top;
    for (unsigned l = 0; l < q->nlevels; l++) {
        if ((int)l == pick || !q->levels[l].count)
            q->age[l] = 0;
        else
            q->age[l]++;
    }
    return pick;
}

size_t vt__squeue_pop(vt__shared_queue *q, vt__job *out, size_t max)
{
    size_t n = 0;
    if (!atomic_load_explicit(&q->count, memory_order_relaxed))
        return 0;
    vt__spin_lock(&q->lock);
    while (n < max) {
        if (q->policy == VT_POLICY_FAIR) {
            if (!q->rr_count)
                break;
            uint32_t gi = rr_pop(q);
            vt__fair_group *g = &q->groups[gi];
            vt__ring_pop(&g->jobs, &out[n++]);
            if (g->jobs.count)
                rr_push(q, gi);
            else
                g->active = 0;
        } else if (q->policy == VT_POLICY_PRIORITY) {
            int l = pick_level(q);
            if (l < 0)
                break;
            vt__ring_pop(&q->levels[l], &out[n++]);
        } else if (!vt__ring_pop(&q->levels[0], &out[n])) {
            break;
        } else {
            n++;
        }
    }
    atomic_store_explicit(&q->count, atomic_load_explicit(&q->count, memory_order_relaxed) - n,
                          memory_order_relaxed);
    vt__spin_unlock(&q->lock);
    return n;
}
