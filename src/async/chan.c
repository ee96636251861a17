/* Channels and select.
 *
 * Bounded channels are a ring of cells, each with a sequence number
 * (Vyukov's bounded MPMC queue): the sender of position p waits for the
 * cell's number to say 2p (free), writes the element and publishes 2p + 1;
 * the receiver of p waits for 2p + 1, reads, and frees the cell for the
 * sender of p + cap with 2(p + cap). (Vyukov's p / p + 1 would make "full
 * for p" and "free for p + 1" the same number when cap is 1.) Positions are claimed with a CAS on enq (senders) or
 * deq (receivers) — a plain store on the side that was declared single.
 * Closing sets the top bit of enq, so a claim and the close are ordered by
 * the same word: every claim that made it in is received, none comes after.
 * A channel with a single sender and a single receiver needs no sequence
 * numbers (Lamport's ring): the sender writes the element and then moves
 * enq, the receiver reads and moves deq, and each side keeps a copy of the
 * other's position so that it reads the other's cache line only once per
 * run of elements; the elements are packed, several to a cache line.
 *
 * Waiting uses the async layer's waiters (async_int.h) on two queues, and
 * a count of each queue's waiters that the fast paths read. The race
 * between a party going to sleep and the other side's fast path is
 * Dekker's: the sleeper counts itself in (seq_cst RMW) and then re-reads the
 * positions (seq_cst); the fast path moves a position (seq_cst RMW or
 * store) and then reads the count (seq_cst). One of the two sees the other,
 * so a wake-up is never lost, and the fast path pays one locked instruction
 * — nothing else, no lock, no system call. A woken party of a bounded
 * channel retries its operation ("wake to retry"): the element is in the
 * ring, not handed over.
 *
 * Rendezvous and unbounded channels keep everything under one lock and hand
 * elements over directly: a sender that finds a receiver waiting claims it
 * and copies into its buffer (and the reverse for a waiting sender of a
 * rendezvous channel).
 *
 * Select registers one waiter per case, all on the caller's one parker:
 * the claim is a CAS on the parker, so at most one case completes. */
#include <string.h>

#include "async_int.h"

enum { KIND_RENDEZVOUS = 0, KIND_BOUNDED, KIND_UNBOUNDED };

#define CLOSED_BIT ((uint64_t)1 << 63)
#define RING_BYTES_MAX ((size_t)1 << 30)
#define UNBOUNDED_FIRST 16
#define SPIN_ROUNDS 64

/* A waiter's want bits, set by whoever claimed it. */
#define W_WOKEN 1u /* bounded: something changed, retry */
#define W_DONE 2u  /* rendezvous/unbounded: the element was handed over */

struct vt_chan {
    /* Read by every fast path; written once, or when a party waits. */
    uint8_t kind;
    uint8_t single_send;
    uint8_t single_recv;
    uint8_t pow2;
    uint8_t spsc;  /* Lamport's ring: cells are bare elements */
    size_t esz;
    size_t stride; /* bytes per cell: the sequence number and the element, or
                      (spsc) the element alone */
    size_t cap;
    uint64_t mask;
    unsigned char *cells;
    _Atomic uint32_t nrecvw; /* waiters on recvq (bounded) */
    _Atomic uint32_t nsendw; /* waiters on sendq (bounded) */
    _Atomic uint32_t refs;
    _Atomic uint32_t closed;
    uint32_t dead; /* rendezvous/unbounded: released while waiters are linked (lock) */
    char pad0[64];
    _Atomic uint64_t enq; /* sends claimed, | CLOSED_BIT */
    uint64_t deq_seen;    /* spsc: the sender's copy of deq */
    char pad1[64 - 2 * sizeof(uint64_t)];
    _Atomic uint64_t deq; /* receives claimed */
    uint64_t enq_seen;    /* spsc: the receiver's copy of enq (without CLOSED_BIT) */
    char pad2[64 - 2 * sizeof(uint64_t)];
    /* recvq's lock is the whole channel's lock for rendezvous and
     * unbounded channels; sendq's is then unused. */
    vt__wq recvq;
    vt__wq sendq;
    /* Unbounded: a ring that doubles. */
    unsigned char *ubuf;
    size_t ucap, uhead, ulen;
};

/* ---- Copying elements ---------------------------------------------------------------- */

static inline void copy_elem(void *dst, const void *src, size_t n)
{
    switch (n) {
    case 1: memcpy(dst, src, 1); break;
    case 2: memcpy(dst, src, 2); break;
    case 4: memcpy(dst, src, 4); break;
    case 8: memcpy(dst, src, 8); break;
    case 16: memcpy(dst, src, 16); break;
    default: memcpy(dst, src, n); break;
    }
}

/* ---- Lifetime --------------------------------------------------------------------------- */

vt_err vt_chan_new(vt_chan **out, size_t elem_size, size_t capacity, unsigned flags)
{
    if (!out || elem_size == 0 || elem_size > VT_CHAN_ELEM_MAX || (flags & ~(unsigned)VT_CHAN_SPSC))
        return VT_EINVAL;
    vt_chan *ch = vt_calloc(1, sizeof(*ch));
    if (!ch)
        return VT_ENOMEM;
    ch->esz = elem_size;
    ch->cap = capacity;
    ch->single_send = (flags & VT_CHAN_SINGLE_SENDER) != 0;
    ch->single_recv = (flags & VT_CHAN_SINGLE_RECEIVER) != 0;
    atomic_init(&ch->refs, 1);
    if (capacity == 0) {
        ch->kind = KIND_RENDEZVOUS;
    } else if (capacity == VT_CHAN_UNBOUNDED) {
        ch->kind = KIND_UNBOUNDED;
    } else {
        ch->kind = KIND_BOUNDED;
        ch->spsc = ch->single_send && ch->single_recv;
        ch->stride = ch->spsc ? elem_size : sizeof(uint64_t) + ((elem_size + 7) & ~(size_t)7);
        if (capacity > RING_BYTES_MAX / elem_size) {
            vt_free(ch, sizeof(*ch));
            return VT_ERANGE;
        }
        ch->cells = vt_alloc(capacity * ch->stride);
        if (!ch->cells) {
            vt_free(ch, sizeof(*ch));
            return VT_ENOMEM;
        }
        ch->pow2 = (capacity & (capacity - 1)) == 0;
        ch->mask = capacity - 1;
        for (size_t i = 0; i < capacity && !ch->spsc; i++)
            atomic_init((_Atomic uint64_t *)(void *)(ch->cells + i * ch->stride), 2 * (uint64_t)i);
    }
    *out = ch;
    return VT_OK;
}

vt_chan *vt_chan_retain(vt_chan *ch)
{
    if (ch)
        atomic_fetch_add_explicit(&ch->refs, 1, memory_order_relaxed);
    return ch;
}

static void destroy(vt_chan *ch)
{
    if (ch->cells)
        vt_free(ch->cells, ch->cap * ch->stride);
    if (ch->ubuf)
        vt_free(ch->ubuf, ch->ucap * ch->esz);
    vt_free(ch, sizeof(*ch));
}

/* A waiter of a rendezvous or unbounded channel holds no reference (a
 * reference per wait costs a locked instruction on every hand-off):
 * instead the channel stays while waiters are linked, and the last to leave
 * a released channel frees it. A select that waits retries after a
 * wake-up, unlinked meanwhile, so it retains all its channels (run_select). */
static int linked_waiters(const vt_chan *ch)
{
    return ch->recvq.n + ch->sendq.n != 0;
}

void vt_chan_release(vt_chan *ch)
{
    if (!ch || atomic_fetch_sub_explicit(&ch->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (ch->kind != KIND_BOUNDED) {
        vt__wq_lock(&ch->recvq);
        int stay = linked_waiters(ch);
        ch->dead = (uint32_t)stay;
        vt__wq_unlock(&ch->recvq);
        if (stay)
            return;
    }
    destroy(ch);
}

/* Takes w off q of a rendezvous or unbounded channel (a no-op if a waker
 * took it off already); frees a released channel that it was the last to
 * wait on. */
static void leave_locked_queue(vt_chan *ch, vt__wq *q, vt__waiter *w)
{
    vt__wq_lock(&ch->recvq);
    vt__wq_remove(q, w);
    int last = ch->dead && !linked_waiters(ch);
    vt__wq_unlock(&ch->recvq);
    if (last)
        destroy(ch);
}

void vt_chan_free(vt_chan *ch)
{
    if (!ch)
        return;
    (void)vt_chan_close(ch);
    vt_chan_release(ch);
}

int vt_chan_closed(const vt_chan *ch)
{
    return ch && atomic_load_explicit(&ch->closed, memory_order_acquire);
}

size_t vt_chan_cap(const vt_chan *ch)
{
    return ch ? ch->cap : 0;
}

size_t vt_chan_elem_size(const vt_chan *ch)
{
    return ch ? ch->esz : 0;
}

size_t vt_chan_len(const vt_chan *ch)
{
    if (!ch)
        return 0;
    vt_chan *c = (vt_chan *)ch;
    if (ch->kind == KIND_BOUNDED) {
        uint64_t d = atomic_load_explicit(&c->deq, memory_order_acquire);
        uint64_t e = atomic_load_explicit(&c->enq, memory_order_acquire) & ~CLOSED_BIT;
        return e > d ? (size_t)(e - d < ch->cap ? e - d : ch->cap) : 0;
    }
    if (ch->kind == KIND_RENDEZVOUS)
        return 0;
    vt__wq_lock(&c->recvq);
    size_t n = c->ulen;
    vt__wq_unlock(&c->recvq);
    return n;
}

/* ---- Waiter queues ------------------------------------------------------------------------ */

/* Ends the wait of the first claimable waiter of q with "retry". */
static void wake_one(vt__wq *q, _Atomic uint32_t *count)
{
    vt__waiter *w;
    vt__wq_lock(q);
    while ((w = vt__wq_pop(q))) {
        atomic_fetch_sub_explicit(count, 1, memory_order_relaxed);
        if (vt__waiter_claim(w)) {
            w->want |= W_WOKEN;
            vt__wq_unlock(q);
            vt__waiter_wake(w, VT_OK);
            return;
        }
    }
    vt__wq_unlock(q);
}

/* Claims and takes off every waiter of q still waiting (the caller holds
 * its lock), marking each with bits, onto *list; they are woken after the
 * unlock. */
static void claim_all(vt__wq *q, _Atomic uint32_t *count, unsigned bits, vt__waiter **list)
{
    for (vt__waiter *w = vt__wq_first(q), *next; w; w = next) {
        next = w->next;
        if (!vt__waiter_claim(w))
            continue; /* ending its own wait: it takes itself off */
        vt__wq_remove(q, w);
        if (count)
            atomic_fetch_sub_explicit(count, 1, memory_order_relaxed);
        w->want |= bits;
        w->next = *list; /* popped and claimed: its link is ours until the wake */
        *list = w;
    }
}

static void wake_list(vt__waiter *list, vt_err result)
{
    while (list) {
        vt__waiter *w = list;
        list = w->next; /* *w may be gone once woken */
        vt__waiter_wake(w, result);
    }
}

/* ---- Bounded: the ring ---------------------------------------------------------------------- */

static inline unsigned char *cell_at(const vt_chan *ch, uint64_t pos)
{
    uint64_t i = ch->pow2 ? (pos & ch->mask) : (pos % ch->cap);
    return ch->cells + (size_t)i * ch->stride;
}

static inline _Atomic uint64_t *cell_seq(unsigned char *cell)
{
    return (_Atomic uint64_t *)(void *)cell;
}

static inline unsigned char *slot_at(const vt_chan *ch, uint64_t pos)
{
    uint64_t i = ch->pow2 ? (pos & ch->mask) : (pos % ch->cap);
    return ch->cells + (size_t)i * ch->esz;
}

/* Lamport's ring. The sender's CAS publishes the element and claims the
 * position at once; it fails only to a close (then the element written
 * into the free slot is simply not counted). */
static inline vt_err spsc_send(vt_chan *ch, const void *elem)
{
    uint64_t pos = atomic_load_explicit(&ch->enq, memory_order_relaxed);
    if (pos & CLOSED_BIT)
        return VT_ECLOSED;
    if (pos - ch->deq_seen >= ch->cap) {
        ch->deq_seen = atomic_load_explicit(&ch->deq, memory_order_acquire);
        if (pos - ch->deq_seen >= ch->cap)
            return VT_EAGAIN;
    }
    copy_elem(slot_at(ch, pos), elem, ch->esz);
    if (!atomic_compare_exchange_strong_explicit(&ch->enq, &pos, pos + 1, memory_order_seq_cst,
                                                 memory_order_relaxed))
        return VT_ECLOSED;
    if (VT_UNLIKELY(atomic_load_explicit(&ch->nrecvw, memory_order_seq_cst)))
        wake_one(&ch->recvq, &ch->nrecvw);
    return VT_OK;
}

static inline vt_err spsc_recv(vt_chan *ch, void *elem)
{
    uint64_t pos = atomic_load_explicit(&ch->deq, memory_order_relaxed);
    if (pos == ch->enq_seen) {
        uint64_t e = atomic_load_explicit(&ch->enq, memory_order_acquire);
        ch->enq_seen = e & ~CLOSED_BIT;
        if (pos == ch->enq_seen)
            return (e & CLOSED_BIT) ? VT_ECLOSED : VT_EAGAIN;
    }
    copy_elem(elem, slot_at(ch, pos), ch->esz);
    atomic_store_explicit(&ch->deq, pos + 1, memory_order_seq_cst);
    if (VT_UNLIKELY(atomic_load_explicit(&ch->nsendw, memory_order_seq_cst)))
        wake_one(&ch->sendq, &ch->nsendw);
    return VT_OK;
}

/* VT_OK, VT_EAGAIN (full) or VT_ECLOSED. */
static inline vt_err ring_send(vt_chan *ch, const void *elem)
{
    if (ch->spsc)
        return spsc_send(ch, elem);
    uint64_t pos = atomic_load_explicit(&ch->enq, memory_order_relaxed);
    for (;;) {
        if (pos & CLOSED_BIT)
            return VT_ECLOSED;
        unsigned char *cell = cell_at(ch, pos);
        int64_t d = (int64_t)(atomic_load_explicit(cell_seq(cell), memory_order_acquire) - 2 * pos);
        if (d == 0) {
            /* seq_cst: the sleeper's side of the Dekker pair reads enq. A
             * single sender's CAS fails only to a close. */
            if (atomic_compare_exchange_weak_explicit(&ch->enq, &pos, pos + 1, memory_order_seq_cst,
                                                      memory_order_relaxed)) {
                copy_elem(cell + sizeof(uint64_t), elem, ch->esz);
                atomic_store_explicit(cell_seq(cell), 2 * pos + 1, memory_order_release);
                if (VT_UNLIKELY(atomic_load_explicit(&ch->nrecvw, memory_order_seq_cst)))
                    wake_one(&ch->recvq, &ch->nrecvw);
                return VT_OK;
            }
        } else if (d < 0) {
            return VT_EAGAIN; /* the cell still holds the element of pos - cap */
        } else {
            pos = atomic_load_explicit(&ch->enq, memory_order_relaxed); /* another sender took pos */
        }
    }
}

/* VT_OK, VT_EAGAIN (empty, or the next element is still being written) or
 * VT_ECLOSED (closed and drained). */
static inline vt_err ring_recv(vt_chan *ch, void *elem)
{
    if (ch->spsc)
        return spsc_recv(ch, elem);
    uint64_t pos = atomic_load_explicit(&ch->deq, memory_order_relaxed);
    for (;;) {
        unsigned char *cell = cell_at(ch, pos);
        int64_t d = (int64_t)(atomic_load_explicit(cell_seq(cell), memory_order_acquire) - (2 * pos + 1));
        if (d == 0) {
            if (ch->single_recv) {
                copy_elem(elem, cell + sizeof(uint64_t), ch->esz);
                atomic_store_explicit(cell_seq(cell), 2 * (pos + ch->cap), memory_order_release);
                atomic_store_explicit(&ch->deq, pos + 1, memory_order_seq_cst);
            } else {
                if (!atomic_compare_exchange_weak_explicit(&ch->deq, &pos, pos + 1, memory_order_seq_cst,
                                                           memory_order_relaxed))
                    continue;
                copy_elem(elem, cell + sizeof(uint64_t), ch->esz);
                atomic_store_explicit(cell_seq(cell), 2 * (pos + ch->cap), memory_order_release);
            }
            if (VT_UNLIKELY(atomic_load_explicit(&ch->nsendw, memory_order_seq_cst)))
                wake_one(&ch->sendq, &ch->nsendw);
            return VT_OK;
        }
        if (d > 0) {
            pos = atomic_load_explicit(&ch->deq, memory_order_relaxed); /* another receiver took pos */
            continue;
        }
        uint64_t e = atomic_load_explicit(&ch->enq, memory_order_acquire);
        if ((e & ~CLOSED_BIT) <= pos && (e & CLOSED_BIT))
            return VT_ECLOSED;
        return VT_EAGAIN;
    }
}

/* Whether a retry could succeed (or see the close): the sleeper's re-read,
 * after it counted itself in. */
static int ring_send_ready(vt_chan *ch)
{
    uint64_t e = atomic_load_explicit(&ch->enq, memory_order_seq_cst);
    uint64_t d = atomic_load_explicit(&ch->deq, memory_order_seq_cst);
    return (e & CLOSED_BIT) || (e - d) < ch->cap;
}

static int ring_recv_ready(vt_chan *ch)
{
    uint64_t e = atomic_load_explicit(&ch->enq, memory_order_seq_cst);
    uint64_t d = atomic_load_explicit(&ch->deq, memory_order_seq_cst);
    return (e & CLOSED_BIT) || (e & ~CLOSED_BIT) > d;
}

/* ---- Rendezvous and unbounded: under the lock ------------------------------------------------ */

/* Pops and claims the first waiter of q that is not the caller's own
 * (self: the caller's parker, or NULL). NULL when there is none. */
static vt__waiter *claim_partner(vt__wq *q, const vt__parker *self)
{
    for (vt__waiter *w = vt__wq_first(q); w; w = w->next) {
        /* One whose wait ended already stays linked: it takes itself off,
         * and until then keeps the channel alive (linked_waiters). */
        if (w->parker != self && vt__waiter_claim(w)) {
            vt__wq_remove(q, w);
            return w;
        }
    }
    return NULL;
}

static int has_partner(vt__wq *q, const vt__parker *self)
{
    for (vt__waiter *w = vt__wq_first(q); w; w = w->next)
        if (w->parker != self && vt__waiter_pending(w))
            return 1;
    return 0;
}

static vt_err ub_grow(vt_chan *ch)
{
    size_t ncap = ch->ucap ? ch->ucap * 2 : UNBOUNDED_FIRST;
    if (ncap < ch->ucap || ncap > SIZE_MAX / ch->esz)
        return VT_ENOMEM;
    unsigned char *nb = vt_alloc(ncap * ch->esz);
    if (!nb)
        return VT_ENOMEM;
    for (size_t i = 0; i < ch->ulen; i++)
        memcpy(nb + i * ch->esz, ch->ubuf + ((ch->uhead + i) % ch->ucap) * ch->esz, ch->esz);
    if (ch->ubuf)
        vt_free(ch->ubuf, ch->ucap * ch->esz);
    ch->ubuf = nb;
    ch->ucap = ncap;
    ch->uhead = 0;
    return VT_OK;
}

/* Send without waiting, lock held: VT_OK with *wake set to the receiver to
 * wake after the unlock (or NULL), VT_EAGAIN, VT_ECLOSED, VT_ENOMEM. */
static vt_err locked_send(vt_chan *ch, const void *elem, const vt__parker *self, vt__waiter **wake)
{
    *wake = NULL;
    if (atomic_load_explicit(&ch->closed, memory_order_relaxed))
        return VT_ECLOSED;
    vt__waiter *w = ch->ulen == 0 ? claim_partner(&ch->recvq, self) : NULL;
    if (w) {
        copy_elem(w->data, elem, ch->esz);
        w->want |= W_DONE;
        *wake = w;
        return VT_OK;
    }
    if (ch->kind == KIND_RENDEZVOUS)
        return VT_EAGAIN;
    if (ch->ulen == ch->ucap) {
        vt_err e = ub_grow(ch);
        if (e)
            return e;
    }
    copy_elem(ch->ubuf + ((ch->uhead + ch->ulen) % ch->ucap) * ch->esz, elem, ch->esz);
    ch->ulen++;
    return VT_OK;
}

static vt_err locked_recv(vt_chan *ch, void *elem, const vt__parker *self, vt__waiter **wake)
{
    *wake = NULL;
    if (ch->ulen) {
        copy_elem(elem, ch->ubuf + ch->uhead * ch->esz, ch->esz);
        ch->uhead = (ch->uhead + 1) % ch->ucap;
        ch->ulen--;
        return VT_OK;
    }
    vt__waiter *w = claim_partner(&ch->sendq, self);
    if (w) {
        copy_elem(elem, w->data, ch->esz);
        w->want |= W_DONE;
        *wake = w;
        return VT_OK;
    }
    return atomic_load_explicit(&ch->closed, memory_order_relaxed) ? VT_ECLOSED : VT_EAGAIN;
}

/* ---- One operation, without waiting ------------------------------------------------------------ */

static vt_err try_op(vt_chan *ch, int op, void *elem, const vt__parker *self)
{
    if (ch->kind == KIND_BOUNDED)
        return op == VT_SELECT_SEND ? ring_send(ch, elem) : ring_recv(ch, elem);
    vt__waiter *wake;
    vt__wq_lock(&ch->recvq);
    vt_err e = op == VT_SELECT_SEND ? locked_send(ch, elem, self, &wake) : locked_recv(ch, elem, self, &wake);
    vt__wq_unlock(&ch->recvq);
    if (wake)
        vt__waiter_wake(wake, VT_OK);
    return e;
}

vt_err vt_chan_try_send(vt_chan *ch, const void *elem)
{
    if (!ch || !elem)
        return VT_EINVAL;
    return try_op(ch, VT_SELECT_SEND, (void *)elem, NULL);
}

vt_err vt_chan_try_recv(vt_chan *ch, void *elem)
{
    if (!ch || !elem)
        return VT_EINVAL;
    return try_op(ch, VT_SELECT_RECV, elem, NULL);
}

/* ---- Close ---------------------------------------------------------------------------------------- */

vt_err vt_chan_close(vt_chan *ch)
{
    if (!ch)
        return VT_EINVAL;
    vt__waiter *senders = NULL, *receivers = NULL;
    if (ch->kind == KIND_BOUNDED) {
        uint64_t e = atomic_load_explicit(&ch->enq, memory_order_relaxed);
        do {
            if (e & CLOSED_BIT)
                return VT_ECLOSED;
        } while (!atomic_compare_exchange_weak_explicit(&ch->enq, &e, e | CLOSED_BIT, memory_order_seq_cst,
                                                        memory_order_relaxed));
        atomic_store_explicit(&ch->closed, 1, memory_order_release);
        /* Everyone retries and sees the close (the queue locks order this
         * with a waiter that registers meanwhile: it reads enq after). */
        vt__wq_lock(&ch->sendq);
        claim_all(&ch->sendq, &ch->nsendw, W_WOKEN, &senders);
        vt__wq_unlock(&ch->sendq);
        vt__wq_lock(&ch->recvq);
        claim_all(&ch->recvq, &ch->nrecvw, W_WOKEN, &receivers);
        vt__wq_unlock(&ch->recvq);
        wake_list(senders, VT_OK);
        wake_list(receivers, VT_OK);
        return VT_OK;
    }
    vt__wq_lock(&ch->recvq);
    if (atomic_load_explicit(&ch->closed, memory_order_relaxed)) {
        vt__wq_unlock(&ch->recvq);
        return VT_ECLOSED;
    }
    atomic_store_explicit(&ch->closed, 1, memory_order_release);
    /* Waiting receivers mean an empty buffer: they are at the end. */
    claim_all(&ch->sendq, NULL, W_DONE, &senders);
    claim_all(&ch->recvq, NULL, W_DONE, &receivers);
    vt__wq_unlock(&ch->recvq);
    wake_list(senders, VT_ECLOSED);
    wake_list(receivers, VT_ECLOSED);
    return VT_OK;
}

/* ---- Waiting: select, and the slow path of send and receive ------------------------------------- */

static uint32_t spin_rounds(void)
{
    vt_runtime *rt = vt__runtime_self();
    if (!rt)
        return SPIN_ROUNDS; /* a thread: its partner runs elsewhere */
    return vt_pool_workers(vt_runtime_pool(rt)) > 1 ? SPIN_ROUNDS : 0;
}

static int case_ready(vt_select_case *c)
{
    vt_chan *ch = c->chan;
    if (ch->kind == KIND_BOUNDED)
        return c->op == VT_SELECT_SEND ? ring_send_ready(ch) : ring_recv_ready(ch);
    return 0; /* looked at under the lock when registering */
}

/* Puts w on the queue of case c. For a rendezvous or unbounded channel, 0
 * instead when the case is ready already (nothing registered). */
static int enlist(vt_select_case *c, vt__waiter *w)
{
    vt_chan *ch = c->chan;
    int send = c->op == VT_SELECT_SEND;
    if (ch->kind == KIND_BOUNDED) {
        vt__wq *q = send ? &ch->sendq : &ch->recvq;
        vt__wq_lock(q);
        vt__wq_push(q, w);
        atomic_fetch_add_explicit(send ? &ch->nsendw : &ch->nrecvw, 1, memory_order_seq_cst);
        vt__wq_unlock(q);
        return 1;
    }
    vt__wq_lock(&ch->recvq);
    int ready = atomic_load_explicit(&ch->closed, memory_order_relaxed) ||
                (send ? ch->kind == KIND_UNBOUNDED || has_partner(&ch->recvq, w->parker)
                      : ch->ulen || has_partner(&ch->sendq, w->parker));
    if (!ready)
        vt__wq_push(send ? &ch->sendq : &ch->recvq, w);
    vt__wq_unlock(&ch->recvq);
    return !ready;
}

static void delist(vt_select_case *c, vt__waiter *w)
{
    vt_chan *ch = c->chan;
    int send = c->op == VT_SELECT_SEND;
    if (ch->kind == KIND_BOUNDED) {
        vt__wq *q = send ? &ch->sendq : &ch->recvq;
        vt__wq_lock(q);
        if (w->linked) {
            vt__wq_remove(q, w);
            atomic_fetch_sub_explicit(send ? &ch->nsendw : &ch->nrecvw, 1, memory_order_relaxed);
        }
        vt__wq_unlock(q);
        return;
    }
    leave_locked_queue(ch, send ? &ch->sendq : &ch->recvq, w);
}

/* A woken party of a bounded channel that took something else passes the
 * wake-up on, so that another waiter sees what it was woken for. */
static void pass_on(vt_select_case *c)
{
    vt_chan *ch = c->chan;
    if (c->op == VT_SELECT_RECV && ring_recv_ready(ch) && atomic_load_explicit(&ch->nrecvw, memory_order_seq_cst))
        wake_one(&ch->recvq, &ch->nrecvw);
    else if (c->op == VT_SELECT_SEND && ring_send_ready(ch) &&
             atomic_load_explicit(&ch->nsendw, memory_order_seq_cst))
        wake_one(&ch->sendq, &ch->nsendw);
}

static uint32_t rand_below(uint32_t n)
{
    return (uint32_t)(((vt__rand() >> 32) * (uint64_t)n) >> 32);
}

/* The whole of select; a blocking send or receive is a select of one case
 * (fair = 0: no random start). */
static vt_err run_select(vt_select_case *cases, size_t n, size_t *chosen, int64_t deadline, int trying, int fair,
                         const char *what)
{
    if (!cases || !chosen || n == 0 || n > VT_SELECT_MAX)
        return VT_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (cases[i].chan && ((cases[i].op != VT_SELECT_SEND && cases[i].op != VT_SELECT_RECV) || !cases[i].elem))
            return VT_EINVAL;
    /* Cases are tried in a random order: the first ready case of a random
     * permutation is uniform among the ready ones (a random starting point
     * would favour a ready case that follows unready ones). */
    uint8_t order[VT_SELECT_MAX];
    for (size_t k = 0; k < n; k++) {
        size_t j = fair ? rand_below((uint32_t)(k + 1)) : k;
        if (j != k)
            order[k] = order[j];
        order[j] = (uint8_t)k;
    }
    size_t woke_by = SIZE_MAX; /* the bounded case whose wake-up we hold */
    uint32_t spins = trying || deadline == VT_NOW ? 0 : spin_rounds();
    uint64_t retained = 0; /* the cases' channels, once waiting */
    int waited = 0;
    vt_err result;
    vt__waiter ws[VT_SELECT_MAX];
    for (;;) {
        size_t i = SIZE_MAX;
        for (size_t k = 0; k < n; k++) {
            size_t j = order[k];
            if (!cases[j].chan)
                continue;
            vt_err e = try_op(cases[j].chan, cases[j].op, cases[j].elem, NULL);
            if (e != VT_EAGAIN) {
                i = j;
                result = e;
                break;
            }
        }
        if (i != SIZE_MAX) {
            *chosen = i;
            if (woke_by != SIZE_MAX && woke_by != i)
                pass_on(&cases[woke_by]);
            break;
        }
        if (trying) {
            result = VT_EAGAIN;
            break;
        }
        if (deadline == VT_NOW) {
            result = VT_ETIMEDOUT;
            break;
        }
        if (spins) {
            /* The other side may be running on another worker: a short
             * spin is cheaper than a sleep and a wake-up. */
            int ready = 0;
            for (; spins && !ready; spins--) {
                vt__cpu_relax();
                for (size_t k = 0; k < n && !ready; k++)
                    ready = cases[k].chan && case_ready(&cases[k]);
            }
            spins = 0;
            if (ready)
                continue;
        }
        if (!waited) {
            waited = 1;
            /* A select that waits keeps every channel alive until it
             * returns: woken to retry, it tries all its cases again,
             * rendezvous and unbounded ones too, which it is no longer
             * linked to (linked_waiters protects only linked waiters). One
             * locked instruction per case, on a path that parks anyway. */
            for (size_t k = 0; k < n; k++)
                if (cases[k].chan) {
                    vt_chan_retain(cases[k].chan);
                    retained |= (uint64_t)1 << k;
                }
        }
        woke_by = SIZE_MAX;
        /* One wait, one parker: every case's waiter is a copy made before
         * any is on a queue (a waker may write to the first at once). */
        vt__waiter proto;
        vt__waiter_init(&proto, what, cases[0].chan, 0);
        size_t enlisted = 0;
        int ready = 0;
        for (size_t k = 0; k < n && !ready; k++, enlisted++) {
            ws[k] = proto;
            ws[k].obj = cases[k].chan;
            ws[k].data = cases[k].elem;
            if (cases[k].chan && !enlist(&cases[k], &ws[k]))
                ready = 1;
        }
        for (size_t k = 0; k < enlisted && !ready; k++)
            ready = cases[k].chan && case_ready(&cases[k]);
        vt_err e = vt__waiter_wait(&proto, ready ? VT_NOW : deadline);
        /* The case that was handed its element is off its queue already,
         * and its channel may be gone (a close that released it). */
        for (size_t k = 0; k < enlisted; k++)
            if (cases[k].chan && !(ws[k].want & W_DONE))
                delist(&cases[k], &ws[k]);
        for (size_t k = 0; k < enlisted; k++)
            if (ws[k].want & W_DONE) {
                i = k;
                break;
            } else if (ws[k].want & W_WOKEN) {
                woke_by = k;
            }
        if (i != SIZE_MAX) {
            *chosen = i;
            result = e;
            break;
        }
        if (e == VT_ETIMEDOUT || e == VT_ECANCELED) {
            if (ready)
                continue; /* we ended our own wait: something is ready */
            result = e;
            break;
        }
        /* Woken to retry: a bounded channel changed, or a close. */
    }
    /* Not cases[k].chan->kind: another channel may be gone by now. */
    for (size_t k = 0; k < n; k++)
        if (retained & ((uint64_t)1 << k))
            vt_chan_release(cases[k].chan);
    return result;
}

vt_err vt_select(vt_select_case *cases, size_t n, size_t *chosen, int64_t deadline)
{
    return run_select(cases, n, chosen, deadline, 0, 1, "select");
}

vt_err vt_select_try(vt_select_case *cases, size_t n, size_t *chosen)
{
    return run_select(cases, n, chosen, VT_NOW, 1, 1, "select");
}

/* A plain send or receive on a rendezvous or unbounded channel: one lock
 * round to try and to queue up; a partner that hands the element over
 * takes the waiter off the queue, so a completed wait touches the channel
 * no more. */
static vt_err locked_op(vt_chan *ch, int op, void *elem, int64_t deadline)
{
    int send = op == VT_SELECT_SEND;
    vt__wq *q = send ? &ch->sendq : &ch->recvq;
    vt__waiter *wake, w;
    vt__wq_lock(&ch->recvq);
    vt_err e = send ? locked_send(ch, elem, NULL, &wake) : locked_recv(ch, elem, NULL, &wake);
    if (e != VT_EAGAIN || deadline == VT_NOW) {
        vt__wq_unlock(&ch->recvq);
        if (wake)
            vt__waiter_wake(wake, VT_OK);
        return e == VT_EAGAIN ? VT_ETIMEDOUT : e;
    }
    vt__waiter_init(&w, send ? "chan send" : "chan recv", ch, 0);
    w.data = elem;
    vt__wq_push(q, &w);
    vt__wq_unlock(&ch->recvq);
    e = vt__waiter_wait(&w, deadline);
    if (!(w.want & W_DONE))
        leave_locked_queue(ch, q, &w); /* timed out or cancelled */
    return e;
}

vt_err vt_chan_send(vt_chan *ch, const void *elem, int64_t deadline)
{
    if (!ch || !elem)
        return VT_EINVAL;
    if (ch->kind != KIND_BOUNDED)
        return locked_op(ch, VT_SELECT_SEND, (void *)elem, deadline);
    vt_err e = ring_send(ch, elem);
    if (e != VT_EAGAIN)
        return e;
    vt_select_case c = {ch, VT_SELECT_SEND, (void *)elem};
    size_t chosen;
    return run_select(&c, 1, &chosen, deadline, 0, 0, "chan send");
}

vt_err vt_chan_recv(vt_chan *ch, void *elem, int64_t deadline)
{
    if (!ch || !elem)
        return VT_EINVAL;
    if (ch->kind != KIND_BOUNDED)
        return locked_op(ch, VT_SELECT_RECV, elem, deadline);
    vt_err e = ring_recv(ch, elem);
    if (e != VT_EAGAIN)
        return e;
    vt_select_case c = {ch, VT_SELECT_RECV, elem};
    size_t chosen;
    return run_select(&c, 1, &chosen, deadline, 0, 0, "chan recv");
}
