/* Waiting: waiters, wait queues and the two kinds of parker (see the
 * protocol at the top of async_int.h). */
#include "fiber.h"

#define SEQ_SHIFT 8
#define STATE_MASK 0xffu

static inline uint32_t word_of(uint32_t seq, uint32_t state)
{
    return (seq << SEQ_SHIFT) | state;
}

/* ---- Parkers ---------------------------------------------------------------------- */

static _Thread_local vt__parker thread_parker;

void vt__waiter_init(vt__waiter *w, const char *what, const void *obj, unsigned flags)
{
    vt__fib *self = vt__fiber_self();
    vt__parker *pk = self ? &self->pk : &thread_parker;
    uint32_t seq = (atomic_load_explicit(&pk->word, memory_order_relaxed) >> SEQ_SHIFT) + 1;
    seq &= (UINT32_MAX >> SEQ_SHIFT);
    pk->result = VT_OK;
    /* Release: a claimer that reads this word sees the waiter's fields. */
    atomic_store_explicit(&pk->word, word_of(seq, VT__PK_WAITING), memory_order_release);
    /* A fiber counts as parking from now on: a waker may claim the wait
     * as soon as w is on a queue, before the fiber has got to park. */
    if (self)
        atomic_store_explicit(&self->run, VT__RUN_PARKING, memory_order_relaxed);
    w->next = w->prev = NULL;
    w->parker = pk;
    w->seq = seq;
    w->linked = 0;
    w->flags = (uint8_t)flags;
    w->what = what;
    w->obj = obj;
    w->want = 0;
    w->data = NULL;
}

static int claim(vt__parker *pk, uint32_t seq, uint32_t to)
{
    uint32_t expected = word_of(seq, VT__PK_WAITING);
    return atomic_compare_exchange_strong_explicit(&pk->word, &expected, word_of(seq, to), memory_order_acq_rel,
                                                   memory_order_acquire);
}

int vt__waiter_claim(vt__waiter *w)
{
    return claim(w->parker, w->seq, VT__PK_CLAIMED);
}

int vt__waiter_pending(const vt__waiter *w)
{
    return atomic_load_explicit(&w->parker->word, memory_order_acquire) == word_of(w->seq, VT__PK_WAITING);
}

/* Wakes the parker of a claimed wait of sequence seq. */
static void finish(vt__parker *pk, uint32_t seq, vt_err result)
{
    pk->result = result;
    vt__fib *f = pk->fiber;
    atomic_store_explicit(&pk->word, word_of(seq, VT__PK_DONE), memory_order_release);
    if (f)
        vt__fiber_unpark(f);
    else
        vt__futex_wake(&pk->word, 1);
}

void vt__waiter_wake(vt__waiter *w, vt_err result)
{
    finish(w->parker, w->seq, result);
}

/* A timed-out fiber wait: the timer's argument names the fiber (its slot
 * index) and the wait (its sequence number), never a pointer into a stack
 * that may have moved on. */
static void on_timeout(void *arg)
{
    uint64_t v = (uint64_t)(uintptr_t)arg;
    vt_runtime *rt = vt__runtime_by_slot((unsigned)(v >> 56));
    if (!rt)
        return;
    vt__fib *f = vt__stacks_lookup(rt->stacks, (uint32_t)(v >> 24));
    uint32_t seq = (uint32_t)(v & 0xffffff);
    if (f && claim(&f->pk, seq, VT__PK_CLAIMED))
        finish(&f->pk, seq, VT_ETIMEDOUT);
}

/* The fiber ended its own wait (self-claim): nobody will unpark it. */
static vt_err unparked(vt__fib *self, vt_err e)
{
    atomic_store_explicit(&self->run, VT__RUN_RUNNING, memory_order_relaxed);
    return e;
}

static vt_err fiber_wait(vt__fib *self, vt__waiter *w, int64_t deadline)
{
    vt__parker *pk = &self->pk;
    int interruptible = !(w->flags & VT__WAIT_NOCANCEL);
    if (interruptible && !self->masked && vt__fiber_cancel_seen(self) && claim(pk, w->seq, VT__PK_DONE))
        return unparked(self, VT_ECANCELED);
    vt_timer timer = {0};
    vt_pool *pool = self->rt->pool;
    if (deadline != VT_FOREVER) {
        if (deadline <= vt_pool_now(pool)) {
            if (claim(pk, w->seq, VT__PK_DONE))
                return unparked(self, VT_ETIMEDOUT);
        } else {
            _Static_assert(sizeof(uintptr_t) >= 8, "timer arguments pack 64 bits");
            uintptr_t arg = ((uintptr_t)self->rt->slot << 56) | ((uintptr_t)self->index << 24) | w->seq;
            if (vt_pool_submit_at(pool, deadline, on_timeout, (void *)arg, &timer) != VT_OK &&
                claim(pk, w->seq, VT__PK_DONE))
                return unparked(self, VT_ENOMEM);
        }
    }
    int linked = 0;
    if (interruptible && !self->masked) {
        linked = vt__scope_park_link(self);
        if (!linked && claim(pk, w->seq, VT__PK_DONE)) {
            if (timer.id)
                vt_timer_cancel(pool, timer);
            return unparked(self, VT_ECANCELED);
        }
    }
    atomic_store_explicit(&self->wait_what, w->what, memory_order_relaxed);
    atomic_store_explicit(&self->wait_obj, w->obj, memory_order_relaxed);
    /* Claimed by someone else or not, exactly one vt__fiber_unpark follows
     * such a claim; if it came already (NOTIFIED), there is no need to go. */
    if (atomic_load_explicit(&self->run, memory_order_acquire) == VT__RUN_NOTIFIED)
        atomic_store_explicit(&self->run, VT__RUN_RUNNING, memory_order_relaxed);
    else
        vt__fiber_park(self);
    atomic_store_explicit(&self->wait_what, NULL, memory_order_relaxed);
    if (linked)
        vt__scope_park_unlink(self);
    if (timer.id && pk->result != VT_ETIMEDOUT)
        vt_timer_cancel(pool, timer);
    return pk->result;
}

static vt_err thread_wait(vt__parker *pk, vt__waiter *w, int64_t deadline)
{
    for (;;) {
        uint32_t word = atomic_load_explicit(&pk->word, memory_order_acquire);
        if ((word >> SEQ_SHIFT) == w->seq && (word & STATE_MASK) == VT__PK_DONE)
            return pk->result;
        if ((word & STATE_MASK) == VT__PK_WAITING && deadline != VT_FOREVER && vt_now_ns() >= deadline) {
            if (claim(pk, w->seq, VT__PK_DONE))
                return VT_ETIMEDOUT;
            continue;
        }
        /* CLAIMED: the waker is about to store DONE; wait for it (without
         * a deadline, which no longer applies). */
        vt__futex_wait(&pk->word, word, (word & STATE_MASK) == VT__PK_WAITING ? deadline : VT_FOREVER);
    }
}

vt_err vt__waiter_wait(vt__waiter *w, int64_t deadline)
{
    vt__parker *pk = w->parker;
    if (pk->fiber)
        return fiber_wait(pk->fiber, w, deadline);
    if (deadline == VT_NOW && claim(pk, w->seq, VT__PK_DONE))
        return VT_ETIMEDOUT;
    return thread_wait(pk, w, deadline);
}

void vt__parker_cancel(vt__parker *pk)
{
    uint32_t word = atomic_load_explicit(&pk->word, memory_order_acquire);
    if ((word & STATE_MASK) == VT__PK_WAITING && claim(pk, word >> SEQ_SHIFT, VT__PK_CLAIMED))
        finish(pk, word >> SEQ_SHIFT, VT_ECANCELED);
}

int vt__cancel_pending(void)
{
    vt__fib *self = vt__fiber_self();
    return self && !self->masked && vt__fiber_cancel_seen(self);
}

/* ---- Wait queues ---------------------------------------------------------------------- */

void vt__wq_lock_slow(vt__wq *q)
{
    for (unsigned spins = 0;; spins++) {
        uint32_t free_ = 0;
        if (atomic_load_explicit(&q->lock, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_weak_explicit(&q->lock, &free_, 1, memory_order_acquire, memory_order_relaxed))
            return;
        if (spins < 64)
            vt__cpu_relax();
        else
            vt__thread_yield();
    }
}

void vt__wq_push(vt__wq *q, vt__waiter *w)
{
    w->next = NULL;
    w->prev = q->tail;
    if (q->tail)
        ((vt__waiter *)q->tail)->next = w;
    else
        q->head = w;
    q->tail = w;
    q->n++;
    w->linked = 1;
}

void vt__wq_remove(vt__wq *q, vt__waiter *w)
{
    if (!w->linked)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        q->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        q->tail = w->prev;
    w->next = w->prev = NULL;
    w->linked = 0;
    q->n--;
}

vt__waiter *vt__wq_pop(vt__wq *q)
{
    vt__waiter *w = q->head;
    if (w)
        vt__wq_remove(q, w);
    return w;
}
