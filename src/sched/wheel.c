/* wheel.c — the hierarchical timing wheel under the timer service (see
 * wheel.h for the layout and its invariants). */
#include "wheel.h"

#define NIL VT__WHEEL_NIL
#define SHIFT VT__WHEEL_TICK_SHIFT
#define BITS VT__WHEEL_BITS
#define LEVELS VT__WHEEL_LEVELS

/* Nodes moved to lower levels per vt__wheel_take call, so that the lock is
 * never held for a whole cascade of a crowded slot. */
#define CASCADE_BUDGET 512

_Static_assert(LEVELS * BITS + SHIFT >= 63, "the wheel must span every int64_t deadline");
_Static_assert(LEVELS * VT__WHEEL_SLOTS <= VT__WHEEL_FREE, "slot numbers fit in where");
_Static_assert(sizeof(vt__wnode) == 48, "a node is 48 bytes");

/* Level of the group holding bit b of a tick: b / 6 without the division. */
static const uint8_t level_of_bit[64] = {
    0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3,
    3, 3, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
};

static inline vt__wnode *node_at(const vt__wheel *w, uint32_t i)
{
    uint64_t j = (uint64_t)i + (1u << VT__WHEEL_CHUNK0_SHIFT);
    unsigned k = (unsigned)(63 - __builtin_clzll(j)) - VT__WHEEL_CHUNK0_SHIFT;
    return &w->chunks[k][j - ((uint64_t)1 << (k + VT__WHEEL_CHUNK0_SHIFT))];
}

static inline int before(const vt__wnode *a, const vt__wnode *b)
{
    return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
}

static inline uint64_t tick_of(int64_t deadline)
{
    return (uint64_t)deadline >> SHIFT;
}

/* First tick of slot idx of level lvl, which is in cur's block of level
 * lvl + 1 (the only block that level's slots can stand for). */
static inline uint64_t slot_start(const vt__wheel *w, unsigned lvl, unsigned idx)
{
    unsigned above = BITS * (lvl + 1);
    return (w->cur >> above << above) | ((uint64_t)idx << (BITS * lvl));
}

/* The lowest occupied level, or LEVELS. */
static inline unsigned first_level(const vt__wheel *w)
{
    unsigned lvl = 0;
    while (lvl < LEVELS && !w->occupied[lvl])
        lvl++;
    return lvl;
}

static inline void slot_emptied(vt__wheel *w, unsigned slot)
{
    w->occupied[slot / VT__WHEEL_SLOTS] &= ~(1ull << (slot % VT__WHEEL_SLOTS));
    if (slot < VT__WHEEL_SLOTS)
        w->sorted0 |= 1ull << slot;
    if ((int)slot == w->cascading)
        w->cascading = -1;
}

static inline void push(vt__wheel *w, unsigned slot, uint32_t i, vt__wnode *n)
{
    uint32_t h = w->head[slot];
    n->where = (uint16_t)slot;
    n->prev = NIL;
    n->next = h;
    if (h == NIL) {
        w->occupied[slot / VT__WHEEL_SLOTS] |= 1ull << (slot % VT__WHEEL_SLOTS);
    } else {
        vt__wnode *hn = node_at(w, h);
        hn->prev = i;
        /* A level 0 list stays sorted when the newcomer goes first anyway:
         * the common case of timers added in deadline order. */
        if (slot < VT__WHEEL_SLOTS && !before(n, hn))
            w->sorted0 &= ~(1ull << slot);
    }
    w->head[slot] = i;
}

/* Files node i by its tick relative to cur (see wheel.h). */
static inline void place(vt__wheel *w, uint32_t i, vt__wnode *n)
{
    uint64_t tick = tick_of(n->deadline), cur = w->cur;
    unsigned slot;
    if (tick <= cur) {
        slot = (unsigned)(cur % VT__WHEEL_SLOTS);
    } else {
        unsigned lvl = level_of_bit[63 - __builtin_clzll(tick ^ cur)];
        slot = lvl * VT__WHEEL_SLOTS + (unsigned)((tick >> (BITS * lvl)) % VT__WHEEL_SLOTS);
    }
    push(w, slot, i, n);
}

static inline void pop_head(vt__wheel *w, unsigned slot, vt__wnode *n)
{
    w->head[slot] = n->next;
    if (n->next != NIL)
        node_at(w, n->next)->prev = NIL;
    else
        slot_emptied(w, slot);
}

static inline void unlink_node(vt__wheel *w, vt__wnode *n)
{
    unsigned slot = n->where;
    if (n->prev == NIL) {
        pop_head(w, slot, n);
        return;
    }
    node_at(w, n->prev)->next = n->next;
    if (n->next != NIL)
        node_at(w, n->next)->prev = n->prev;
}

static inline void free_node(vt__wheel *w, uint32_t i, vt__wnode *n)
{
    n->where = VT__WHEEL_FREE;
    n->gen++;
    n->next = w->free_head;
    w->free_head = i;
    w->live--;
}

void vt__wheel_init(vt__wheel *w)
{
    w->cur = 0;
    w->seq = 0;
    for (unsigned l = 0; l < LEVELS; l++)
        w->occupied[l] = 0;
    w->sorted0 = ~0ull;
    w->cascading = -1;
    w->free_head = NIL;
    w->hwm = 0;
    w->cap = 0;
    w->nchunks = 0;
    w->live = 0;
    for (unsigned s = 0; s < LEVELS * VT__WHEEL_SLOTS; s++)
        w->head[s] = NIL;
    for (unsigned k = 0; k < VT__WHEEL_MAX_CHUNKS; k++)
        w->chunks[k] = NULL;
}

void vt__wheel_destroy(vt__wheel *w)
{
    for (unsigned k = 0; k < w->nchunks; k++)
        vt_free(w->chunks[k], vt__wheel_chunk_bytes(w, k));
    w->nchunks = 0;
    w->cap = w->hwm = 0;
    w->free_head = NIL;
}

size_t vt__wheel_chunk_bytes(const vt__wheel *w, unsigned chunk)
{
    (void)w;
    if (chunk >= VT__WHEEL_MAX_CHUNKS)
        return 0;
    return sizeof(vt__wnode) << (chunk + VT__WHEEL_CHUNK0_SHIFT);
}

void vt__wheel_add_chunk(vt__wheel *w, vt__wnode *mem)
{
    w->chunks[w->nchunks++] = mem;
    w->cap = (uint32_t)((((uint64_t)1 << w->nchunks) - 1) << VT__WHEEL_CHUNK0_SHIFT);
}

uint64_t vt__wheel_add(vt__wheel *w, int64_t deadline, vt_job_fn fn, void *arg)
{
    uint32_t i;
    vt__wnode *n;
    if (w->free_head != NIL) {
        i = w->free_head;
        n = node_at(w, i);
        w->free_head = n->next;
    } else {
        i = w->hwm++;
        n = node_at(w, i);
        n->gen = 1;
    }
    n->deadline = deadline;
    n->seq = w->seq++;
    n->fn = fn;
    n->arg = arg;
    place(w, i, n);
    w->live++;
    return ((uint64_t)n->gen << 32) | ((uint64_t)i + 1);
}

vt_err vt__wheel_cancel(vt__wheel *w, uint64_t id)
{
    uint32_t lo = (uint32_t)id;
    if (lo == 0 || lo - 1 >= w->hwm)
        return VT_ENOENT;
    uint32_t i = lo - 1;
    vt__wnode *n = node_at(w, i);
    if (n->gen != (uint32_t)(id >> 32) || n->where == VT__WHEEL_FREE)
        return VT_ENOENT;
    unlink_node(w, n);
    free_node(w, i, n);
    return VT_OK;
}

/* Sorts level 0's slot by (deadline, seq): a bottom-up merge sort of the
 * list (Simon Tatham's), linear on a list that is one run already. */
static void sort_slot(vt__wheel *w, unsigned slot)
{
    uint32_t list = w->head[slot];
    for (uint32_t width = 1;; width *= 2) {
        uint32_t p = list, tail = NIL;
        unsigned merges = 0;
        list = NIL;
        while (p != NIL) {
            merges++;
            uint32_t q = p, psize = 0, qsize = width;
            while (psize < width && q != NIL) {
                psize++;
                q = node_at(w, q)->next;
            }
            while (psize > 0 || (qsize > 0 && q != NIL)) {
                uint32_t e;
                vt__wnode *en;
                if (psize == 0) {
                    e = q;
                    en = node_at(w, e);
                    q = en->next;
                    qsize--;
                } else if (qsize == 0 || q == NIL) {
                    e = p;
                    en = node_at(w, e);
                    p = en->next;
                    psize--;
                } else {
                    vt__wnode *pn = node_at(w, p), *qn = node_at(w, q);
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
                    node_at(w, tail)->next = e;
                else
                    list = e;
                tail = e;
            }
            p = q;
        }
        node_at(w, tail)->next = NIL;
        if (merges <= 1)
            break;
    }
    w->head[slot] = list;
    w->sorted0 |= 1ull << slot;
}

/* Moves the cascading slot's timers down, at most *budget of them. Returns 1
 * when the slot is empty. */
static int cascade(vt__wheel *w, unsigned *budget)
{
    unsigned slot = (unsigned)w->cascading;
    uint32_t h;
    while ((h = w->head[slot]) != NIL) {
        if (*budget == 0)
            return 0;
        --*budget;
        vt__wnode *n = node_at(w, h);
        pop_head(w, slot, n);
        place(w, h, n);
    }
    return 1;
}

/* Moves cur forward to `to` if that is ahead: valid whenever `to` is at or
 * before the earliest occupied slot's first tick, since every timer then
 * keeps its level and slot. */
static inline void advance(vt__wheel *w, uint64_t to)
{
    if (to > w->cur)
        w->cur = to;
}

size_t vt__wheel_take(vt__wheel *w, int64_t now, uint64_t seq_end, vt__wrec *out, size_t max,
                      int *more)
{
    uint64_t now_tick = now < 0 ? 0 : tick_of(now);
    unsigned budget = CASCADE_BUDGET;
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
        unsigned lvl = first_level(w);
        if (lvl == LEVELS) {
            advance(w, now_tick);
            return n;
        }
        unsigned idx = (unsigned)__builtin_ctzll(w->occupied[lvl]);
        if (lvl == 0) {
            if (!(w->sorted0 >> idx & 1))
                sort_slot(w, idx);
            uint32_t h;
            while ((h = w->head[idx]) != NIL) {
                vt__wnode *x = node_at(w, h);
                if (x->deadline > now || x->seq >= seq_end) {
                    uint64_t u = slot_start(w, 0, idx);
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
                pop_head(w, idx, x);
                free_node(w, h, x);
            }
            /* All of it was due, so its tick is not after now's. */
            advance(w, slot_start(w, 0, idx));
            continue;
        }
        uint64_t s = slot_start(w, lvl, idx);
        if (s > now_tick) {
            advance(w, now_tick);
            return n;
        }
        w->cur = s;
        w->cascading = (int)(lvl * VT__WHEEL_SLOTS + idx);
    }
}

int64_t vt__wheel_next(vt__wheel *w, int advance_ok)
{
    for (;;) {
        if (w->cascading >= 0) {
            unsigned unbounded = UINT32_MAX;
            cascade(w, &unbounded);
            continue;
        }
        unsigned lvl = first_level(w);
        if (lvl == LEVELS)
            return VT_FOREVER;
        unsigned idx = (unsigned)__builtin_ctzll(w->occupied[lvl]);
        if (lvl == 0) {
            if (!(w->sorted0 >> idx & 1))
                sort_slot(w, idx);
            return node_at(w, w->head[idx])->deadline;
        }
        unsigned slot = lvl * VT__WHEEL_SLOTS + idx;
        if (advance_ok) {
            w->cur = slot_start(w, lvl, idx);
            w->cascading = (int)slot;
            continue;
        }
        int64_t m = INT64_MAX;
        for (uint32_t h = w->head[slot]; h != NIL;) {
            vt__wnode *x = node_at(w, h);
            if (x->deadline < m)
                m = x->deadline;
            h = x->next;
        }
        return m;
    }
}

int64_t vt__wheel_bound(vt__wheel *w)
{
    if (w->cascading >= 0)
        return (int64_t)(w->cur << SHIFT);
    unsigned lvl = first_level(w);
    if (lvl == LEVELS)
        return VT_FOREVER;
    unsigned idx = (unsigned)__builtin_ctzll(w->occupied[lvl]);
    if (lvl == 0) {
        if (!(w->sorted0 >> idx & 1))
            sort_slot(w, idx);
        return node_at(w, w->head[idx])->deadline;
    }
    return (int64_t)(slot_start(w, lvl, idx) << SHIFT);
}

size_t vt__wheel_pop_any(vt__wheel *w, vt__wrec *out, size_t max)
{
    size_t n = 0;
    for (unsigned lvl = 0; lvl < LEVELS && n < max; lvl++) {
        while (w->occupied[lvl] && n < max) {
            unsigned slot = lvl * VT__WHEEL_SLOTS + (unsigned)__builtin_ctzll(w->occupied[lvl]);
            uint32_t h = w->head[slot];
            vt__wnode *x = node_at(w, h);
            out[n].fn = x->fn;
            out[n].arg = x->arg;
            n++;
            pop_head(w, slot, x);
            free_node(w, h, x);
        }
    }
    return n;
}
