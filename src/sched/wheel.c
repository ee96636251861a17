/* wheel.c — the hierarchical timing wheel under the timer service (see
 * wheel.h for the layout and its invariants). */
#include "sched_int.h"

#include "wheel.h"

#define NIL VT__WHEEL_NIL
#define SHIFT VT__WHEEL_TICK_SHIFT
#define BITS VT__WHEEL_BITS
#define LEVELS VT__WHEEL_LEVELS
#define SLOTS VT__WHEEL_SLOTS
#define WORDS VT__WHEEL_WORDS
#define WAYS VT__WHEEL_WAYS
#define CHUNK0 VT__WHEEL_CHUNK0_SHIFT
#define BIG_START VT__WHEEL_BIG_START
#define BIG_SHIFT VT__WHEEL_CHUNK_MAX_SHIFT

/* Nodes moved or freed per vt__wheel_take call, so that the lock is never
 * held for the whole cascade of a crowded slot. */
#define BUDGET 512
/* Dead nodes tolerated beyond the live count before adds sweep. */
#define SWEEP_SLACK 1024
/* Nodes each add examines while sweeping: with more than half of the slab
 * dead, 4 frees about 2 per add, faster than cancels can add dead ones. */
#define SWEEP_STEP 4

_Static_assert(SHIFT + (LEVELS * BITS) >= 63, "the wheel must span every int64_t deadline");
_Static_assert((LEVELS * SLOTS) <= VT__WHEEL_FREE, "slot numbers fit in where");
_Static_assert((LEVELS * WORDS) <= 32, "the summary is a uint32_t");
_Static_assert(WAYS <= 8 && (WAYS & (WAYS - 1)) == 0, "ways fit a uint8_t mask");
_Static_assert(sizeof(vt__wnode) == VT_CACHE_LINE, "a node is a cache line");
/* The last chunk ends below NIL. */
#define INDEX_END \
    ((uint64_t)BIG_START + ((uint64_t)(VT__WHEEL_MAX_CHUNKS - VT__WHEEL_DOUBLING) << BIG_SHIFT))
_Static_assert(INDEX_END < VT__WHEEL_NIL, "every index is below NIL");

static inline size_t chunk_nodes(unsigned k)
{
    return (size_t)1 << (k < VT__WHEEL_DOUBLING ? k + CHUNK0 : BIG_SHIFT);
}

static inline vt__wfree *stack_at(const vt__wheel *w, uint32_t p)
{
    uint64_t off;
    unsigned k = vt__wheel_chunk_of(p, &off);
    return &w->stacks[k][off];
}

static inline int before(const vt__wnode *a, const vt__wnode *b)
{
    return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
}

static inline uint64_t tick_of(int64_t deadline)
{
    return (uint64_t)deadline >> SHIFT;
}

/* First tick of slot idx of level lvl, in cur's block of level lvl + 1 (the
 * only block that this level's slots can stand for). */
static inline uint64_t slot_start(const vt__wheel *w, unsigned lvl, unsigned idx)
{
    unsigned above = BITS * (lvl + 1);
    return (w->cur >> above << above) | ((uint64_t)idx << (BITS * lvl));
}

/* The earliest occupied slot number, or -1. */
static inline int first_slot(const vt__wheel *w)
{
    if (!w->summary)
        return -1;
    unsigned word = (unsigned)__builtin_ctz(w->summary);
    return (int)(word * 64 + (unsigned)__builtin_ctzll(w->occ[word]));
}

static inline void occ_set(vt__wheel *w, unsigned slot)
{
    w->occ[slot / 64] |= 1ull << (slot % 64);
    w->summary |= 1u << (slot / 64);
}

static inline int sorted(const vt__wheel *w, unsigned slot)
{
    return (int)(w->sorted0[slot / 64] >> (slot % 64) & 1);
}

static inline void set_sorted(vt__wheel *w, unsigned slot, int on)
{
    if (on)
        w->sorted0[slot / 64] |= 1ull << (slot % 64);
    else
        w->sorted0[slot / 64] &= ~(1ull << (slot % 64));
}

/* The list of way 0 of slot (level > 0); way j is the j-th after it. */
static inline unsigned ways_base(unsigned slot)
{
    return SLOTS + (slot - SLOTS) * WAYS;
}

static inline unsigned list_of(unsigned slot, uint32_t i)
{
    return slot < SLOTS ? slot : ways_base(slot) + i % WAYS;
}

/* Moves cur forward to `to` if that is ahead. Valid whenever `to` is at or
 * before the first tick of the earliest occupied slot: every timer then
 * keeps its level and slot. */
static inline void advance(vt__wheel *w, uint64_t to)
{
    if (to > w->cur)
        w->cur = to;
}

static inline void slot_emptied(vt__wheel *w, unsigned slot)
{
    uint64_t *word = &w->occ[slot / 64];
    *word &= ~(1ull << (slot % 64));
    if (!*word)
        w->summary &= ~(1u << (slot / 64));
    if (slot < SLOTS)
        set_sorted(w, slot, 1);
    if ((int)slot == w->cascading)
        w->cascading = -1;
}

/* The list of slot that held node i just became empty. */
static inline void list_emptied(vt__wheel *w, unsigned slot, uint32_t i)
{
    if (slot < SLOTS) {
        w->tail0[slot] = NIL;
    } else {
        w->ways[slot] &= (uint8_t) ~(1u << (i % WAYS));
        if (w->ways[slot])
            return;
    }
    slot_emptied(w, slot);
}

static inline void push(vt__wheel *w, unsigned slot, uint32_t i, vt__wnode *n)
{
    n->where = (uint16_t)slot;
    if (slot < SLOTS) {
        /* Level 0 appends, so that timers added in deadline order (the
         * usual "now + timeout", or equal deadlines) keep it sorted. */
        uint32_t t = w->tail0[slot];
        n->next = NIL;
        n->prev = t;
        if (t == NIL) {
            w->head[slot] = i;
            occ_set(w, slot);
        } else {
            vt__wnode *tn = vt__wheel_node(w, t);
            tn->next = i;
            if (before(n, tn))
                set_sorted(w, slot, 0);
        }
        w->tail0[slot] = i;
        return;
    }
    unsigned way = i % WAYS, l = ways_base(slot) + way;
    uint32_t h = w->head[l];
    n->prev = NIL;
    n->next = h;
    if (h != NIL) {
        vt__wheel_node(w, h)->prev = i;
    } else {
        if (!w->ways[slot])
            occ_set(w, slot);
        w->ways[slot] |= (uint8_t)(1u << way);
    }
    w->head[l] = i;
}

/* Files node i by its tick relative to cur (see wheel.h). */
static inline __attribute__((always_inline)) void place(vt__wheel *w, uint32_t i, vt__wnode *n)
{
    uint64_t tick = tick_of(n->deadline), cur = w->cur;
    unsigned slot;
    if (tick <= cur) {
        slot = (unsigned)(cur % SLOTS);
    } else {
        unsigned lvl = (unsigned)(63 - __builtin_clzll(tick ^ cur)) / BITS;
        slot = lvl * SLOTS + (unsigned)((tick >> (BITS * lvl)) % SLOTS);
    }
    push(w, slot, i, n);
}

/* Node i, n is the head of list l of slot. */
static inline void pop_head(vt__wheel *w, unsigned l, unsigned slot, uint32_t i, vt__wnode *n)
{
    w->head[l] = n->next;
    if (n->next != NIL)
        vt__wheel_node(w, n->next)->prev = NIL;
    else
        list_emptied(w, slot, i);
}

static inline void unlink_node(vt__wheel *w, uint32_t i, vt__wnode *n)
{
    unsigned slot = n->where, l = list_of(slot, i);
    if (n->prev == NIL) {
        pop_head(w, l, slot, i, n);
        return;
    }
    vt__wheel_node(w, n->prev)->next = n->next;
    if (n->next != NIL)
        vt__wheel_node(w, n->next)->prev = n->prev;
    else if (slot < SLOTS)
        w->tail0[slot] = n->prev;
}

/* n is unlinked; the caller adjusts dead if it was. */
static inline void free_node(vt__wheel *w, uint32_t i, vt__wnode *n)
{
    uint32_t gen = n->gen + 1;
    n->where = VT__WHEEL_FREE;
    n->gen = gen;
    vt__wfree *f = stack_at(w, w->nfree++);
    f->index = i;
    f->gen = gen;
}

/* Frees the dead node i, n, which is linked. */
static inline void reap(vt__wheel *w, uint32_t i, vt__wnode *n)
{
    unlink_node(w, i, n);
    free_node(w, i, n);
    w->dead--;
}

void vt__wheel_init(vt__wheel *w)
{
    w->cur = 0;
    w->seq = 0;
    w->summary = 0;
    w->cascading = -1;
    for (unsigned i = 0; i < LEVELS * WORDS; i++)
        w->occ[i] = 0;
    for (unsigned i = 0; i < WORDS; i++)
        w->sorted0[i] = ~0ull;
    w->nchunks = 0;
    w->hwm = w->cap = w->nfree = w->sweep = 0;
    w->dead = 0;
    for (unsigned k = 0; k < VT__WHEEL_MAX_CHUNKS; k++) {
        w->nodes[k] = NULL;
        w->stacks[k] = NULL;
        w->mem[k] = NULL;
    }
    for (unsigned s = 0; s < LEVELS * SLOTS; s++)
        w->ways[s] = 0;
    for (unsigned s = 0; s < SLOTS; s++)
        w->tail0[s] = NIL;
    for (unsigned l = 0; l < VT__WHEEL_LISTS; l++)
        w->head[l] = NIL;
}

void vt__wheel_destroy(vt__wheel *w)
{
    for (unsigned k = 0; k < w->nchunks; k++)
        vt_free(w->mem[k], vt__wheel_chunk_bytes(k));
    w->nchunks = 0;
    w->hwm = w->cap = w->nfree = w->sweep = 0;
}

size_t vt__wheel_chunk_bytes(unsigned chunk)
{
    if (chunk >= VT__WHEEL_MAX_CHUNKS)
        return 0;
    /* + a cache line to align the nodes on one. */
    return VT_CACHE_LINE + (sizeof(vt__wnode) + sizeof(vt__wfree)) * chunk_nodes(chunk);
}

void vt__wheel_add_chunk(vt__wheel *w, void *mem)
{
    unsigned k = w->nchunks++;
    uintptr_t base = ((uintptr_t)mem + VT_CACHE_LINE - 1) & ~(uintptr_t)(VT_CACHE_LINE - 1);
    w->mem[k] = mem;
    w->nodes[k] = (vt__wnode *)base;
    w->stacks[k] = (vt__wfree *)(base + chunk_nodes(k) * sizeof(vt__wnode));
    w->cap += (uint32_t)chunk_nodes(k);
}

/* Examines `steps` nodes of the slab, round robin, freeing the dead ones. */
static void sweep(vt__wheel *w, unsigned steps)
{
    while (steps--) {
        uint32_t i = w->sweep;
        if (++w->sweep >= w->hwm)
            w->sweep = 0;
        vt__wnode *n = vt__wheel_node(w, i);
        if (n->dead && n->where != VT__WHEEL_FREE)
            reap(w, i, n);
    }
}

int vt__wheel_reserve(vt__wheel *w)
{
    /* Linked nodes are hwm - nfree; the live ones, those less the dead. */
    uint64_t live = (uint64_t)(w->hwm - w->nfree) - w->dead;
    if (w->dead > live + SWEEP_SLACK) {
        sweep(w, SWEEP_STEP);
        /* More than half of the slab is dead: reuse rather than grow. */
        while (!w->nfree && w->hwm == w->cap)
            sweep(w, 1);
    }
    return w->nfree || w->hwm < w->cap;
}

uint64_t vt__wheel_add(vt__wheel *w, int64_t deadline, vt_job_fn fn, void *arg)
{
    uint32_t i, gen = 1;
    if (w->nfree) {
        vt__wfree *f = stack_at(w, --w->nfree);
        i = f->index;
        gen = f->gen;
    } else {
        i = w->hwm++;
    }
    /* Only stores to the node, none of its old contents needed: at a
     * million timers its line is a cache miss that need not be waited for. */
    vt__wnode *n = vt__wheel_node(w, i);
    n->deadline = deadline;
    n->seq = w->seq++;
    n->gen = gen;
    n->dead = 0;
    n->fn = fn;
    n->arg = arg;
    place(w, i, n);
    return ((uint64_t)gen << 32) | ((uint64_t)i + 1);
}

/* Sorts level 0's slot by (deadline, seq): a bottom-up merge sort of the
 * list (Simon Tatham's), linear on a list that is one run already. */
static void sort_slot(vt__wheel *w, unsigned slot)
{
    uint32_t list = w->head[slot], tail = NIL;
    for (uint32_t width = 1;; width *= 2) {
        uint32_t p = list;
        unsigned merges = 0;
        list = tail = NIL;
        while (p != NIL) {
            merges++;
            uint32_t q = p, psize = 0, qsize = width;
            while (psize < width && q != NIL) {
                psize++;
                q = vt__wheel_node(w, q)->next;
            }
            while (psize > 0 || (qsize > 0 && q != NIL)) {
                uint32_t e;
                vt__wnode *en;
                if (psize == 0) {
                    e = q;
                    en = vt__wheel_node(w, e);
                    q = en->next;
                    qsize--;
                } else if (qsize == 0 || q == NIL) {
                    e = p;
                    en = vt__wheel_node(w, e);
                    p = en->next;
                    psize--;
                } else {
                    vt__wnode *pn = vt__wheel_node(w, p), *qn = vt__wheel_node(w, q);
                    if (!before(qn, pn)) {
                        e = p;
                        en = pn;
                        p = pn->next;
                        psize--;
                    } else {
                        e = q;
                        en = qn;
                        q = qn->next;
                        qsize--;
                    }
                }
                en->prev = tail;
                if (tail != NIL)
                    vt__wheel_node(w, tail)->next = e;
                else
                    list = e;
                tail = e;
            }
            p = q;
        }
        vt__wheel_node(w, tail)->next = NIL;
        if (merges <= 1)
            break;
    }
    w->head[slot] = list;
    w->tail0[slot] = tail;
    set_sorted(w, slot, 1);
}

/* Moves the cascading slot's timers down (freeing dead ones), at most
 * *budget nodes. The ways are walked side by side, one node of each per
 * round, so that their cache misses overlap; each node's successor is
 * prefetched as soon as it is known, a round ahead of its turn. A popped
 * node's successor keeps a stale prev while the walk goes on (nobody else
 * sees the lists meanwhile): the heads are made proper again before the
 * lock can be let go. Returns 1 when the slot is empty. */
static int cascade(vt__wheel *w, unsigned *budget)
{
    unsigned slot = (unsigned)w->cascading, base = ways_base(slot);
    unsigned m;
    while ((m = w->ways[slot]) != 0) {
        do {
            if (!*budget) {
                for (unsigned j = 0; j < WAYS; j++)
                    if (w->head[base + j] != NIL)
                        vt__wheel_node(w, w->head[base + j])->prev = NIL;
                return 0;
            }
            --*budget;
            unsigned way = (unsigned)__builtin_ctz(m);
            m &= m - 1;
            uint32_t h = w->head[base + way];
            vt__wnode *n = vt__wheel_node(w, h);
            uint32_t next = n->next;
            w->head[base + way] = next;
            if (next != NIL)
                __builtin_prefetch(vt__wheel_node(w, next), 1);
            else
                list_emptied(w, slot, h);
            if (!n->dead) {
                place(w, h, n);
            } else {
                free_node(w, h, n);
                w->dead--;
            }
        } while (m);
    }
    return 1;
}

size_t vt__wheel_take(vt__wheel *w, int64_t now, uint64_t seq_end, vt__wrec *out, size_t max,
                      int *more)
{
    uint64_t now_tick = now < 0 ? 0 : tick_of(now);
    unsigned budget = BUDGET;
    size_t n = 0;
    *more = 0;
    for (;;) {
        if (w->cascading >= 0) {
            if (!cascade(w, &budget)) {
                *more = 1;
                return n;
            }
            continue;
        }
        int first = first_slot(w);
        if (first < 0) {
            advance(w, now_tick);
            return n;
        }
        unsigned slot = (unsigned)first, lvl = slot / SLOTS, idx = slot % SLOTS;
        if (lvl == 0) {
            uint64_t u = slot_start(w, 0, idx);
            if (!sorted(w, slot))
                sort_slot(w, slot);
            uint32_t h;
            while ((h = w->head[slot]) != NIL) {
                vt__wnode *x = vt__wheel_node(w, h);
                if (x->dead) {
                    if (!budget) {
                        *more = 1;
                        return n;
                    }
                    budget--;
                    pop_head(w, slot, slot, h, x);
                    free_node(w, h, x);
                    w->dead--;
                    continue;
                }
                if (x->deadline > now || x->seq >= seq_end) {
                    advance(w, u < now_tick ? u : now_tick);
                    return n;
                }
                if (n == max) {
                    *more = 1;
                    return n;
                }
                out[n].fn = x->fn;
                out[n].arg = x->arg;
                n++;
                pop_head(w, slot, slot, h, x);
                free_node(w, h, x);
            }
            advance(w, u < now_tick ? u : now_tick);
            continue;
        }
        uint64_t s = slot_start(w, lvl, idx);
        if (s > now_tick) {
            advance(w, now_tick);
            return n;
        }
        w->cur = s;
        w->cascading = (int)slot;
    }
}


/* The deadline at the head of level-0 slot `slot` (sorted first), or
 * INT64_MIN when that head was a cancelled timer, now reaped: look again.
 * (Deadlines are stored as 0 or more, so INT64_MIN is never one.) */
static int64_t level0_first(vt__wheel *w, unsigned slot)
{
    if (!sorted(w, slot))
        sort_slot(w, slot);
    uint32_t h = w->head[slot];
    vt__wnode *x = vt__wheel_node(w, h);
    if (!x->dead)
        return x->deadline;
    reap(w, h, x);
    return INT64_MIN;
}

int64_t vt__wheel_next(vt__wheel *w, int advance_ok)
{
    for (;;) {
        if (w->cascading >= 0) {
            unsigned unbounded = UINT32_MAX;
            cascade(w, &unbounded);
            continue;
        }
        int first = first_slot(w);
        if (first < 0)
            return VT_FOREVER;
        unsigned slot = (unsigned)first, lvl = slot / SLOTS, idx = slot % SLOTS;
        if (lvl == 0) {
            int64_t d = level0_first(w, slot);
            if (d != INT64_MIN)
                return d;
            continue;
        }
        if (advance_ok) {
            w->cur = slot_start(w, lvl, idx);
            w->cascading = (int)slot;
            continue;
        }
        int64_t m = INT64_MAX;
        int found = 0;
        for (unsigned way = 0; way < WAYS; way++) {
            for (uint32_t h = w->head[ways_base(slot) + way]; h != NIL;) {
                vt__wnode *x = vt__wheel_node(w, h);
                uint32_t next = x->next;
                if (x->dead) {
                    reap(w, h, x);
                } else {
                    found = 1;
                    if (x->deadline < m)
                        m = x->deadline;
                }
                h = next;
            }
        }
        if (found)
            return m;
    }
}

int64_t vt__wheel_bound(vt__wheel *w)
{
    for (;;) {
        if (w->cascading >= 0)
            return (int64_t)(w->cur << SHIFT);
        int first = first_slot(w);
        if (first < 0)
            return VT_FOREVER;
        unsigned slot = (unsigned)first, lvl = slot / SLOTS;
        if (lvl > 0)
            return (int64_t)(slot_start(w, lvl, slot % SLOTS) << SHIFT);
        int64_t d = level0_first(w, slot);
        if (d != INT64_MIN)
            return d;
    }
}

size_t vt__wheel_pop_any(vt__wheel *w, vt__wrec *out, size_t max, int *more)
{
    unsigned budget = BUDGET;
    size_t n = 0;
    *more = 1;
    while (n < max && budget--) {
        int first = first_slot(w);
        if (first < 0) {
            *more = 0;
            break;
        }
        unsigned slot = (unsigned)first;
        unsigned l = slot < SLOTS ? slot : ways_base(slot) + (unsigned)__builtin_ctz(w->ways[slot]);
        uint32_t h = w->head[l];
        vt__wnode *x = vt__wheel_node(w, h);
        pop_head(w, l, slot, h, x);
        if (!x->dead) {
            out[n].fn = x->fn;
            out[n].arg = x->arg;
            n++;
        } else {
            w->dead--;
        }
        free_node(w, h, x);
    }
    return n;
}
