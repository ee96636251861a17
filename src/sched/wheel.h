/* wheel.h — the data structure under the timer service (timer.c): a
 * hierarchical timing wheel over a slab of intrusive nodes. Not thread-safe:
 * the service calls everything here with its lock held, except
 * vt__wheel_init and vt__wheel_destroy. Private to sched.
 *
 * Ticks and levels. Time is cut into ticks of 2^VT__WHEEL_TICK_SHIFT ns
 * (2^12 ns, 4.1 us). The wheel has 7 levels of 256 slots; a slot of level k
 * spans 256^k ticks (level 0: 4.1 us, 1: 1.05 ms, 2: 268 ms, 3: 68.7 s,
 * 4: 4.9 h, 5: 52 days, 6: 36 years), so the wheel spans 2^56 ticks, more
 * than the 2^51 that a non-negative int64_t deadline can reach: no overflow
 * list, no deadline too far. `cur` is the wheel's position. A timer whose
 * tick is after cur sits on the level of the highest 8-bit group in which
 * its tick differs from cur, in the slot that group names; a timer whose
 * tick is not after cur (added late, or due now) sits in level 0's slot of
 * cur. So the slots of a lower level all come before those of a higher one,
 * and within a level the lowest occupied slot is the earliest: the next slot
 * is two ctz, on a summary word and on one word of the occupancy bitmap.
 * The tick is small so that a level 0 slot, which must be sorted, holds few
 * timers even at a million timers a second (4 on average); the levels are
 * wide so that few cascades remain (a timer an hour away is moved three
 * times before it fires).
 *
 * Cascades. When cur reaches a slot of level k > 0, its timers are filed
 * again relative to the new cur, on lower levels. To overlap the cache
 * misses of that walk, a slot of level k > 0 keeps VT__WHEEL_WAYS lists (a
 * node goes on list index % WAYS) that a cascade walks side by side. A level
 * 0 slot is one list, one tick's timers with different ns deadlines: it is
 * sorted by (deadline, seq) before its head is compared to "now" (appending
 * in order, the usual case, keeps it sorted at no cost), so a timer never
 * fires before its exact deadline and ties fire in start order.
 *
 * Cancellation is lazy: it only marks the node dead and bumps its
 * generation, one cache line touched and no neighbour. Dead nodes are freed
 * when the wheel meets them (cascade, expiry, scans), or by a sweep over the
 * slab that adds run while dead nodes outnumber live ones (plus a slack), so
 * the slab stays within about twice the live timers.
 *
 * Slab. Nodes are named by 32-bit indices and live in chunks that never
 * move: chunk k holds 64 << k nodes up to 2^18, then every chunk holds 2^18
 * (18 MiB with their free stack entries: growth in steps that malloc can
 * serve from its heap rather than from fresh mmaps), 2^28 + 2^19 - 64 nodes
 * at most. A timer's handle is (generation << 32) | (index + 1): a stale or
 * forged handle fails the generation check instead of touching another
 * timer, and the handle 0 is never issued. */
#ifndef VITTE_SCHED_WHEEL_H
#define VITTE_SCHED_WHEEL_H

#include "vitte/sched.h"
#include "../base/platform.h"

#define VT__WHEEL_TICK_SHIFT 12
#define VT__WHEEL_BITS 8
#define VT__WHEEL_SLOTS 256
#define VT__WHEEL_WORDS (VT__WHEEL_SLOTS / 64)
#define VT__WHEEL_LEVELS 7
#define VT__WHEEL_WAYS 8
#define VT__WHEEL_NIL UINT32_MAX
#define VT__WHEEL_CHUNK0_SHIFT 6
#define VT__WHEEL_CHUNK_MAX_SHIFT 18
/* 13 doubling chunks, then 1024 of the largest size: 2^28 + 2^19 - 64
 * nodes in all. */
#define VT__WHEEL_DOUBLING (VT__WHEEL_CHUNK_MAX_SHIFT - VT__WHEEL_CHUNK0_SHIFT + 1)
#define VT__WHEEL_MAX_CHUNKS (VT__WHEEL_DOUBLING + 1024)
/* Index of the first node of the first chunk of the largest size. */
#define VT__WHEEL_BIG_START (((1u << VT__WHEEL_DOUBLING) - 1) << VT__WHEEL_CHUNK0_SHIFT)
/* Lists: level 0's slots, then WAYS per slot of the other levels. */
#define VT__WHEEL_LISTS \
    (VT__WHEEL_SLOTS + (VT__WHEEL_LEVELS - 1) * VT__WHEEL_SLOTS * VT__WHEEL_WAYS)

/* A timer: one cache line (the chunk is 64-byte aligned), so that each
 * visit of the wheel, cascade or expiry, costs at most one miss. Links are
 * indices. */
typedef struct vt__wnode {
    int64_t deadline;
    uint64_t seq; /* start order, for ties */
    uint32_t next;
    uint32_t prev;
    uint32_t gen;
    uint16_t where; /* slot number (level * 256 + slot), or VT__WHEEL_FREE */
    uint16_t dead;  /* cancelled, still linked until the wheel frees it */
    vt_job_fn fn;
    void *arg;
    unsigned char unused[16];
} vt__wnode;

#define VT__WHEEL_FREE 0xffffu

/* What expiry copies out of a node, under the lock, so that the node can be
 * reused before the job is dispatched. */
typedef struct vt__wrec {
    vt_job_fn fn;
    void *arg;
} vt__wrec;

/* A free stack entry: a free node and the generation of its next handle, so
 * that an add builds the handle without waiting for the node's line. */
typedef struct vt__wfree {
    uint32_t index;
    uint32_t gen;
} vt__wfree;

typedef struct vt__wheel {
    uint64_t cur;
    uint64_t seq;
    uint32_t summary;                                 /* bit w: occ[w] != 0 */
    int cascading;                                    /* slot number being cascaded, or -1 */
    uint64_t occ[VT__WHEEL_LEVELS * VT__WHEEL_WORDS]; /* occupied slots */
    uint64_t sorted0[VT__WHEEL_WORDS];                /* level 0 slots in (deadline, seq) order */
    unsigned nchunks;
    uint32_t hwm;   /* indices below hwm were handed out at least once */
    uint32_t cap;   /* indices below cap exist */
    uint32_t nfree; /* entries on the free stack */
    uint32_t sweep; /* the sweep's next index */
    uint64_t dead;  /* cancelled nodes not yet freed */
    vt__wnode *nodes[VT__WHEEL_MAX_CHUNKS];
    vt__wfree *stacks[VT__WHEEL_MAX_CHUNKS];
    void *mem[VT__WHEEL_MAX_CHUNKS];                  /* as vt_alloc returned them */
    uint8_t ways[VT__WHEEL_LEVELS * VT__WHEEL_SLOTS]; /* non-empty lists of a slot (k > 0) */
    uint32_t tail0[VT__WHEEL_SLOTS];
    uint32_t head[VT__WHEEL_LISTS];
} vt__wheel;

VT_INTERNAL void vt__wheel_init(vt__wheel *w);
/* Frees the slab; the timers in it are forgotten (pop them first). */
VT_INTERNAL void vt__wheel_destroy(vt__wheel *w);

/* Bytes of chunk number `chunk`, or 0 past the last one. */
VT_INTERNAL size_t vt__wheel_chunk_bytes(unsigned chunk);
/* Makes room for one more timer without allocating, if the slab allows
 * (reclaiming dead nodes when they are many); 0 when a chunk is needed. */
VT_INTERNAL int vt__wheel_reserve(vt__wheel *w);
/* Adds chunk number w->nchunks: vt__wheel_chunk_bytes(w->nchunks) bytes
 * from vt_alloc, which the wheel owns from now on. */
VT_INTERNAL void vt__wheel_add_chunk(vt__wheel *w, void *mem);

/* Requires a successful vt__wheel_reserve. deadline >= 0. Returns the
 * handle, never 0. */
VT_INTERNAL uint64_t vt__wheel_add(vt__wheel *w, int64_t deadline, vt_job_fn fn, void *arg);
/* The chunk of node (or free stack entry) i, and its offset there. */
static inline unsigned vt__wheel_chunk_of(uint32_t i, uint64_t *off)
{
    if (VT_LIKELY(i < VT__WHEEL_BIG_START)) {
        uint64_t j = (uint64_t)i + (1u << VT__WHEEL_CHUNK0_SHIFT);
        unsigned k = (unsigned)(63 - __builtin_clzll(j)) - VT__WHEEL_CHUNK0_SHIFT;
        *off = j - ((uint64_t)1 << (k + VT__WHEEL_CHUNK0_SHIFT));
        return k;
    }
    uint32_t r = i - VT__WHEEL_BIG_START;
    *off = r & ((1u << VT__WHEEL_CHUNK_MAX_SHIFT) - 1);
    return VT__WHEEL_DOUBLING + (r >> VT__WHEEL_CHUNK_MAX_SHIFT);
}

static inline vt__wnode *vt__wheel_node(const vt__wheel *w, uint32_t i)
{
    uint64_t off;
    unsigned k = vt__wheel_chunk_of(i, &off);
    return &w->nodes[k][off];
}

/* VT_OK, or VT_ENOENT for a handle that is not a pending timer of w.
 * Inline: at a million timers a cancel is one cache miss, and the fewer
 * instructions around it, the more cancels' misses a core overlaps. */
static inline vt_err vt__wheel_cancel(vt__wheel *w, uint64_t id)
{
    uint32_t lo = (uint32_t)id;
    if (lo == 0 || lo - 1 >= w->hwm)
        return VT_ENOENT;
    vt__wnode *n = vt__wheel_node(w, lo - 1);
    if (n->gen != (uint32_t)(id >> 32) || n->where == VT__WHEEL_FREE || n->dead)
        return VT_ENOENT;
    /* Lazy: unlinking would touch both neighbours, two more misses; the
     * wheel frees the node when it meets it. Nothing stored depends on the
     * node's load (gen comes from the handle), so the next cancel's miss can
     * start before this one's ends. */
    n->dead = 1;
    n->gen = (uint32_t)(id >> 32) + 1;
    w->dead++;
    return VT_OK;
}

/* One bounded step of expiry: copies into out[] (at most max) the timers
 * with deadline <= now and seq < seq_end, in (deadline, seq) order, freeing
 * their nodes; moves or frees a bounded number of nodes on the way. *more is
 * 1 when it stopped on a bound with work perhaps left. */
VT_INTERNAL size_t vt__wheel_take(vt__wheel *w, int64_t now, uint64_t seq_end, vt__wrec *out,
                                  size_t max, int *more);
/* The earliest deadline, or VT_FOREVER. advance = 1 lets it move the wheel
 * ahead of the owner's clock to the earliest slot (cheap: that cascade is
 * due anyway); advance = 0 scans that slot instead, for a wheel on real
 * time, where moving ahead would file nearer timers added later as late. */
VT_INTERNAL int64_t vt__wheel_next(vt__wheel *w, int advance);
/* A lower bound of the earliest deadline, exact when that timer is on level
 * 0 (else the start of its slot, where a cascade is due): how long the
 * firing thread may sleep. VT_FOREVER when empty. */
VT_INTERNAL int64_t vt__wheel_bound(vt__wheel *w);
/* Removes up to max pending timers, in no particular order (cancel-all);
 * *more as for vt__wheel_take. */
VT_INTERNAL size_t vt__wheel_pop_any(vt__wheel *w, vt__wrec *out, size_t max, int *more);

#endif
