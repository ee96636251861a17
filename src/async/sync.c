/* Synchronisation for fibers and threads alike: mutex, rwlock, condition,
 * semaphore, barrier, wait group, once. Every one waits through the waiter
 * protocol of async_int.h, so a fiber suspends where a thread blocks, and a
 * wake-up that races a timeout or a cancellation is neither lost nor
 * doubled.
 *
 * Rules kept throughout:
 * - Every change of state that involves waiters happens under the object's
 *   queue lock; lock-free fast paths exist only where a word can say "no
 *   waiters" (mutex, semaphore, wait group, once), and they fail over to the
 *   locked path as soon as anyone waits.
 * - Hand-off: a releaser gives the resource to the claimed waiter itself,
 *   under the lock, before waking it. The woken party finds it owns the
 *   resource already and never touches the object to learn it, and nobody
 *   can take it in between (no barging, no stolen wake-up).
 * - A waiter whose wait ended by timeout or cancellation leaves the queue
 *   and, where its leaving can unblock the ones behind it (rwlock,
 *   semaphore), grants them what they now can have.
 * - Wakes happen after the queue lock is released; the claimed waiters are
 *   chained through their own (unlinked) next pointers meanwhile. After the
 *   unlock a releaser touches only those waiters, never the object, which
 *   the woken may destroy at once.
 * - A blocking call made by a cancelled fiber returns VT_ECANCELED even
 *   when it would not have to wait (every blocking call is a suspension
 *   point); try calls and the NOCANCEL paths (the re-lock of vt_cond_wait,
 *   vt_once_run) never do. */
#include <string.h>

#include "async_int.h"

/* ---- Shared helpers -------------------------------------------------------------- */

/* Who holds a mutex: the fiber's handle inside a fiber (never 0, and
 * generation-checked, so a later fiber in the same slot is someone else),
 * else a per-thread number with the top bit set. A fiber moves between
 * threads, so a thread id cannot name it. */
#define THREAD_ID_BIT ((uint64_t)1 << 63)

static uint64_t self_id(void)
{
    static _Atomic uint64_t next_thread_id;
    static _Thread_local uint64_t thread_id;
    uint64_t fiber = vt_fiber_self().id;
    if (fiber)
        return fiber;
    if (!thread_id)
        thread_id = THREAD_ID_BIT | (atomic_fetch_add_explicit(&next_thread_id, 1, memory_order_relaxed) + 1);
    return thread_id;
}

/* Claimed waiters waiting for their wake, in claim order. */
typedef struct wake_list {
    vt__waiter *head, **tail;
} wake_list;

static inline void wl_init(wake_list *l)
{
    l->head = NULL;
    l->tail = &l->head;
}

/* w was popped and claimed: off every queue, its owner blocked until the
 * wake, so its link is ours to use. */
static inline void wl_add(wake_list *l, vt__waiter *w)
{
    w->next = NULL;
    *l->tail = w;
    l->tail = &w->next;
}

static void wl_wake(wake_list *l)
{
    vt__waiter *w = l->head;
    while (w) {
        vt__waiter *next = w->next; /* *w may be gone once woken */
        vt__waiter_wake(w, VT_OK);
        w = next;
    }
}

/* Pops waiters until one can be claimed; NULL when none can. */
static vt__waiter *pop_claimed(vt__wq *q)
{
    vt__waiter *w;
    while ((w = vt__wq_pop(q)))
        if (vt__waiter_claim(w))
            return w;
    return NULL;
}

/* Claims every waiter of q into l (those whose wait ended are dropped). */
static void pop_all_claimed(vt__wq *q, wake_list *l)
{
    vt__waiter *w;
    while ((w = vt__wq_pop(q)))
        if (vt__waiter_claim(w))
            wl_add(l, w);
}

/* A waiter whose wait failed leaves q (a no-op when a waker popped it and
 * lost the claim). The caller holds q's lock. */
static inline void leave_locked(vt__wq *q, vt__waiter *w)
{
    vt__wq_remove(q, w);
}

static void leave(vt__wq *q, vt__waiter *w)
{
    vt__wq_lock(q);
    leave_locked(q, w);
    vt__wq_unlock(q);
}

/* ---- Mutex -------------------------------------------------------------------------
 * state: LOCKED, and WAITERS while the queue is not empty (set and cleared
 * under the queue lock). The fast paths are a CAS 0 -> LOCKED and
 * LOCKED -> 0, so both fail once WAITERS is set and every exchange with a
 * waiter happens under the lock. Invariants (under the lock): WAITERS
 * implies LOCKED; state 0 implies an empty queue. */
enum { M_LOCKED = 1, M_WAITERS = 2 };

vt_err vt_mutex_init(vt_mutex *m)
{
    if (!m)
        return VT_EINVAL;
    memset(m, 0, sizeof(*m));
    return VT_OK;
}

vt_err vt_mutex_destroy(vt_mutex *m)
{
    if (!m)
        return VT_EINVAL;
    vt__wq_lock(&m->q);
    int busy = atomic_load_explicit(&m->state, memory_order_relaxed) != 0 || vt__wq_first(&m->q);
    vt__wq_unlock(&m->q);
    return busy ? VT_EBUSY : VT_OK;
}

static inline int mutex_try_fast(vt_mutex *m, uint64_t me)
{
    uint32_t s = 0;
    if (!atomic_compare_exchange_strong_explicit(&m->state, &s, M_LOCKED, memory_order_acquire,
                                                 memory_order_relaxed))
        return 0;
    atomic_store_explicit(&m->owner, me, memory_order_relaxed);
    return 1;
}

static vt_err mutex_lock_slow(vt_mutex *m, uint64_t me, int64_t deadline, unsigned flags)
{
    vt__waiter w;
    vt__wq_lock(&m->q);
    uint32_t s = atomic_load_explicit(&m->state, memory_order_relaxed);
    for (;;) {
        if (s == 0) {
            if (atomic_compare_exchange_weak_explicit(&m->state, &s, M_LOCKED, memory_order_acquire,
                                                      memory_order_relaxed)) {
                atomic_store_explicit(&m->owner, me, memory_order_relaxed);
                vt__wq_unlock(&m->q);
                return VT_OK;
            }
            continue;
        }
        if (deadline == VT_NOW) {
            vt__wq_unlock(&m->q);
            return VT_ETIMEDOUT;
        }
        if (s & M_WAITERS)
            break;
        /* Fails when the owner's fast unlock got in first: look again. */
        if (atomic_compare_exchange_weak_explicit(&m->state, &s, s | M_WAITERS, memory_order_relaxed,
                                                  memory_order_relaxed))
            break;
    }
    vt__waiter_init(&w, "mutex", m, flags);
    w.want = me;
    vt__wq_push(&m->q, &w);
    vt__wq_unlock(&m->q);

    vt_err e = vt__waiter_wait(&w, deadline);
    if (e == VT_OK)
        return VT_OK; /* handed over: owner and state were set for us */
    vt__wq_lock(&m->q);
    leave_locked(&m->q, &w);
    /* The mutex is held (WAITERS implies LOCKED) and nobody else changes
     * state while WAITERS is set, so clearing it here races with nothing. */
    if (!vt__wq_first(&m->q))
        atomic_fetch_and_explicit(&m->state, ~(uint32_t)M_WAITERS, memory_order_relaxed);
    vt__wq_unlock(&m->q);
    return e;
}

vt_err vt_mutex_lock(vt_mutex *m, int64_t deadline)
{
    if (!m)
        return VT_EINVAL;
    uint64_t me = self_id();
    if (atomic_load_explicit(&m->owner, memory_order_relaxed) == me)
        return VT_EDEADLK;
    if (vt__cancel_pending())
        return VT_ECANCELED;
    if (mutex_try_fast(m, me))
        return VT_OK;
    return mutex_lock_slow(m, me, deadline, 0);
}

vt_err vt_mutex_trylock(vt_mutex *m)
{
    if (!m)
        return VT_EINVAL;
    return mutex_try_fast(m, self_id()) ? VT_OK : VT_EBUSY;
}

/* Releases m, which the caller holds. */
static void mutex_release(vt_mutex *m)
{
    atomic_store_explicit(&m->owner, 0, memory_order_relaxed);
    uint32_t s = M_LOCKED;
    if (atomic_compare_exchange_strong_explicit(&m->state, &s, 0, memory_order_release, memory_order_relaxed))
        return;
    /* WAITERS was set. Under the lock the state is ours alone (a waiter
     * that left meanwhile may have cleared WAITERS: then nobody is left). */
    vt__wq_lock(&m->q);
    vt__waiter *w = pop_claimed(&m->q);
    if (w) {
        atomic_store_explicit(&m->owner, w->want, memory_order_relaxed);
        atomic_store_explicit(&m->state, vt__wq_first(&m->q) ? M_LOCKED | M_WAITERS : M_LOCKED,
                              memory_order_relaxed);
    } else {
        atomic_store_explicit(&m->state, 0, memory_order_release);
    }
    vt__wq_unlock(&m->q);
    if (w)
        vt__waiter_wake(w, VT_OK);
}

vt_err vt_mutex_unlock(vt_mutex *m)
{
    if (!m)
        return VT_EINVAL;
    /* Only the owner itself ever reads its own id here: coherence makes a
     * stale read of it impossible for anyone else. */
    if (atomic_load_explicit(&m->owner, memory_order_relaxed) != self_id())
        return VT_ESTATE;
    mutex_release(m);
    return VT_OK;
}

/* ---- Readers-writer lock -------------------------------------------------------------
 * Everything under the queue lock: its critical sections are a few
 * instructions, and the two counters could not say "nobody waits" in one
 * word without making every path a Dekker dance. Waiters carry want = RD or
 * WR; grant() serves the queue from its head while it can: a run of
 * readers together, or one writer alone. */
enum { RW_RD = 1, RW_WR = 2 };

vt_err vt_rwlock_init(vt_rwlock *l)
{
    if (!l)
        return VT_EINVAL;
    memset(l, 0, sizeof(*l));
    return VT_OK;
}

vt_err vt_rwlock_destroy(vt_rwlock *l)
{
    if (!l)
        return VT_EINVAL;
    vt__wq_lock(&l->q);
    int busy = atomic_load_explicit(&l->readers, memory_order_relaxed) ||
               atomic_load_explicit(&l->writer, memory_order_relaxed) || vt__wq_first(&l->q);
    vt__wq_unlock(&l->q);
    return busy ? VT_EBUSY : VT_OK;
}

static inline int rw_can_read(vt_rwlock *l)
{
    return !atomic_load_explicit(&l->writer, memory_order_relaxed) &&
           atomic_load_explicit(&l->readers, memory_order_relaxed) < UINT32_MAX;
}

static inline int rw_can_write(vt_rwlock *l)
{
    return !atomic_load_explicit(&l->writer, memory_order_relaxed) &&
           !atomic_load_explicit(&l->readers, memory_order_relaxed);
}

static void rw_grant(vt_rwlock *l, wake_list *wl)
{
    vt__waiter *w;
    while ((w = vt__wq_first(&l->q))) {
        if (w->want == RW_WR ? !rw_can_write(l) : !rw_can_read(l))
            break;
        vt__wq_pop(&l->q);
        if (!vt__waiter_claim(w))
            continue;
        if (w->want == RW_WR)
            atomic_store_explicit(&l->writer, 1, memory_order_relaxed);
        else
            atomic_fetch_add_explicit(&l->readers, 1, memory_order_relaxed);
        wl_add(wl, w);
    }
}

static vt_err rw_lock(vt_rwlock *l, unsigned kind, int64_t deadline)
{
    if (!l)
        return VT_EINVAL;
    if (vt__cancel_pending())
        return VT_ECANCELED;
    vt__wq_lock(&l->q);
    /* Anyone queued goes first, readers included: a waiting writer holds
     * back the readers that come after it. */
    if (!vt__wq_first(&l->q) && (kind == RW_WR ? rw_can_write(l) : rw_can_read(l))) {
        if (kind == RW_WR)
            atomic_store_explicit(&l->writer, 1, memory_order_relaxed);
        else
            atomic_fetch_add_explicit(&l->readers, 1, memory_order_relaxed);
        vt__wq_unlock(&l->q);
        return VT_OK;
    }
    if (deadline == VT_NOW) {
        vt__wq_unlock(&l->q);
        return VT_ETIMEDOUT;
    }
    vt__waiter w;
    vt__waiter_init(&w, kind == RW_WR ? "rwlock write" : "rwlock read", l, 0);
    w.want = kind;
    vt__wq_push(&l->q, &w);
    vt__wq_unlock(&l->q);

    vt_err e = vt__waiter_wait(&w, deadline);
    if (e == VT_OK)
        return VT_OK;
    /* A writer that leaves the head may let the readers behind it in. */
    wake_list wl;
    wl_init(&wl);
    vt__wq_lock(&l->q);
    leave_locked(&l->q, &w);
    rw_grant(l, &wl);
    vt__wq_unlock(&l->q);
    wl_wake(&wl);
    return e;
}

vt_err vt_rwlock_rdlock(vt_rwlock *l, int64_t deadline)
{
    return rw_lock(l, RW_RD, deadline);
}

vt_err vt_rwlock_wrlock(vt_rwlock *l, int64_t deadline)
{
    return rw_lock(l, RW_WR, deadline);
}

static vt_err rw_try(vt_rwlock *l, unsigned kind)
{
    if (!l)
        return VT_EINVAL;
    vt__wq_lock(&l->q);
    vt_err e = VT_EBUSY;
    if (!vt__wq_first(&l->q) && (kind == RW_WR ? rw_can_write(l) : rw_can_read(l))) {
        if (kind == RW_WR)
            atomic_store_explicit(&l->writer, 1, memory_order_relaxed);
        else
            atomic_fetch_add_explicit(&l->readers, 1, memory_order_relaxed);
        e = VT_OK;
    }
    vt__wq_unlock(&l->q);
    return e;
}

vt_err vt_rwlock_tryrdlock(vt_rwlock *l)
{
    return rw_try(l, RW_RD);
}

vt_err vt_rwlock_trywrlock(vt_rwlock *l)
{
    return rw_try(l, RW_WR);
}

vt_err vt_rwlock_unlock(vt_rwlock *l)
{
    if (!l)
        return VT_EINVAL;
    wake_list wl;
    wl_init(&wl);
    vt__wq_lock(&l->q);
    if (atomic_load_explicit(&l->writer, memory_order_relaxed))
        atomic_store_explicit(&l->writer, 0, memory_order_relaxed);
    else if (atomic_load_explicit(&l->readers, memory_order_relaxed))
        atomic_fetch_sub_explicit(&l->readers, 1, memory_order_relaxed);
    else {
        vt__wq_unlock(&l->q);
        return VT_ESTATE;
    }
    rw_grant(l, &wl);
    vt__wq_unlock(&l->q);
    wl_wake(&wl);
    return VT_OK;
}

/* ---- Condition variable ------------------------------------------------------------ */

vt_err vt_cond_init(vt_cond *c)
{
    if (!c)
        return VT_EINVAL;
    memset(c, 0, sizeof(*c));
    return VT_OK;
}

vt_err vt_cond_destroy(vt_cond *c)
{
    if (!c)
        return VT_EINVAL;
    vt__wq_lock(&c->q);
    int busy = vt__wq_first(&c->q) != NULL;
    vt__wq_unlock(&c->q);
    return busy ? VT_EBUSY : VT_OK;
}

vt_err vt_cond_wait(vt_cond *c, vt_mutex *m, int64_t deadline)
{
    if (!c || !m)
        return VT_EINVAL;
    uint64_t me = self_id();
    if (atomic_load_explicit(&m->owner, memory_order_relaxed) != me)
        return VT_ESTATE;
    if (vt__cancel_pending())
        return VT_ECANCELED;
    /* No signal can have come for a wait not begun: VT_NOW keeps m. */
    if (deadline == VT_NOW)
        return VT_ETIMEDOUT;
    vt__waiter w;
    vt__wq_lock(&c->q);
    vt__waiter_init(&w, "cond", c, 0);
    vt__wq_push(&c->q, &w);
    vt__wq_unlock(&c->q);
    /* Queued before m is released: a signal sent by whoever takes m next
     * finds us. */
    mutex_release(m);

    vt_err e = vt__waiter_wait(&w, deadline);
    if (e != VT_OK)
        leave(&c->q, &w);
    /* Taken back whatever happened; a cancellation must not leave the
     * caller without the mutex it believes it holds. */
    if (!mutex_try_fast(m, me)) {
        vt_err le = mutex_lock_slow(m, me, VT_FOREVER, VT__WAIT_NOCANCEL);
        (void)le; /* NOCANCEL and no deadline: it can only succeed */
    }
    return e;
}

vt_err vt_cond_signal(vt_cond *c)
{
    if (!c)
        return VT_EINVAL;
    vt__wq_lock(&c->q);
    vt__waiter *w = pop_claimed(&c->q);
    vt__wq_unlock(&c->q);
    if (w)
        vt__waiter_wake(w, VT_OK);
    return VT_OK;
}

vt_err vt_cond_broadcast(vt_cond *c)
{
    if (!c)
        return VT_EINVAL;
    wake_list wl;
    wl_init(&wl);
    vt__wq_lock(&c->q);
    pop_all_claimed(&c->q, &wl);
    vt__wq_unlock(&c->q);
    wl_wake(&wl);
    return VT_OK;
}

/* ---- Semaphore ---------------------------------------------------------------------------
 * count holds the permits in its low 63 bits and, in bit 63, WAITERS: set
 * under the queue lock while anyone is queued, so the lock-free fast paths
 * (a CAS on count) stand aside as soon as someone waits, and permits go to
 * the queue in order. */
#define SEM_WAITERS ((uint64_t)1 << 63)
#define SEM_MAX (SEM_WAITERS - 1)

vt_err vt_sem_init(vt_sem *s, uint64_t count)
{
    if (!s)
        return VT_EINVAL;
    if (count > SEM_MAX)
        return VT_ERANGE;
    memset(s, 0, sizeof(*s));
    atomic_store_explicit(&s->count, count, memory_order_relaxed);
    return VT_OK;
}

vt_err vt_sem_destroy(vt_sem *s)
{
    if (!s)
        return VT_EINVAL;
    vt__wq_lock(&s->q);
    int busy = vt__wq_first(&s->q) != NULL;
    vt__wq_unlock(&s->q);
    return busy ? VT_EBUSY : VT_OK;
}

uint64_t vt_sem_value(vt_sem *s)
{
    return s ? atomic_load_explicit(&s->count, memory_order_relaxed) & SEM_MAX : 0;
}

static int sem_try_fast(vt_sem *s, uint64_t n)
{
    uint64_t c = atomic_load_explicit(&s->count, memory_order_relaxed);
    while (!(c & SEM_WAITERS) && c >= n)
        if (atomic_compare_exchange_weak_explicit(&s->count, &c, c - n, memory_order_acquire,
                                                  memory_order_relaxed))
            return 1;
    return 0;
}

/* Serves the queue from its head while the permits suffice; keeps WAITERS
 * in step with the queue. Under the lock. */
static void sem_grant(vt_sem *s, wake_list *wl)
{
    vt__waiter *w;
    while ((w = vt__wq_first(&s->q))) {
        if ((atomic_load_explicit(&s->count, memory_order_relaxed) & SEM_MAX) < w->want)
            break;
        vt__wq_pop(&s->q);
        if (!vt__waiter_claim(w))
            continue;
        atomic_fetch_sub_explicit(&s->count, w->want, memory_order_relaxed);
        wl_add(wl, w);
    }
    if (!vt__wq_first(&s->q))
        atomic_fetch_and_explicit(&s->count, SEM_MAX, memory_order_relaxed);
}

vt_err vt_sem_acquire(vt_sem *s, uint64_t n, int64_t deadline)
{
    if (!s || n == 0 || n > SEM_MAX)
        return VT_EINVAL;
    if (vt__cancel_pending())
        return VT_ECANCELED;
    if (sem_try_fast(s, n))
        return VT_OK;
    vt__wq_lock(&s->q);
    uint64_t c = atomic_load_explicit(&s->count, memory_order_relaxed);
    for (;;) {
        if (!(c & SEM_WAITERS) && c >= n) {
            if (atomic_compare_exchange_weak_explicit(&s->count, &c, c - n, memory_order_acquire,
                                                      memory_order_relaxed)) {
                vt__wq_unlock(&s->q);
                return VT_OK;
            }
            continue;
        }
        if (deadline == VT_NOW) {
            vt__wq_unlock(&s->q);
            return VT_ETIMEDOUT;
        }
        if (c & SEM_WAITERS)
            break;
        if (atomic_compare_exchange_weak_explicit(&s->count, &c, c | SEM_WAITERS, memory_order_relaxed,
                                                  memory_order_relaxed))
            break;
    }
    vt__waiter w;
    vt__waiter_init(&w, "semaphore", s, 0);
    w.want = n;
    vt__wq_push(&s->q, &w);
    vt__wq_unlock(&s->q);

    vt_err e = vt__waiter_wait(&w, deadline);
    if (e == VT_OK)
        return VT_OK;
    /* A large request leaving the head may let smaller ones through. */
    wake_list wl;
    wl_init(&wl);
    vt__wq_lock(&s->q);
    leave_locked(&s->q, &w);
    sem_grant(s, &wl);
    vt__wq_unlock(&s->q);
    wl_wake(&wl);
    return e;
}

vt_err vt_sem_tryacquire(vt_sem *s, uint64_t n)
{
    if (!s || n == 0 || n > SEM_MAX)
        return VT_EINVAL;
    return sem_try_fast(s, n) ? VT_OK : VT_EBUSY;
}

vt_err vt_sem_release(vt_sem *s, uint64_t n)
{
    if (!s)
        return VT_EINVAL;
    if (n == 0)
        return VT_OK;
    uint64_t c = atomic_load_explicit(&s->count, memory_order_relaxed);
    while (!(c & SEM_WAITERS)) {
        if (n > SEM_MAX - c)
            return VT_ERANGE;
        if (atomic_compare_exchange_weak_explicit(&s->count, &c, c + n, memory_order_release,
                                                  memory_order_relaxed))
            return VT_OK;
    }
    wake_list wl;
    wl_init(&wl);
    vt__wq_lock(&s->q);
    c = atomic_load_explicit(&s->count, memory_order_relaxed);
    do {
        if (n > SEM_MAX - (c & SEM_MAX)) {
            vt__wq_unlock(&s->q);
            return VT_ERANGE;
        }
    } while (!atomic_compare_exchange_weak_explicit(&s->count, &c, c + n, memory_order_release,
                                                    memory_order_relaxed));
    sem_grant(s, &wl);
    vt__wq_unlock(&s->q);
    wl_wake(&wl);
    return VT_OK;
}

/* ---- Barrier ---------------------------------------------------------------------------
 * Plain fields under the queue lock. A party remembers the generation it
 * arrived in; if its wait fails while that generation still runs, it leaves
 * (arrived--). If the round completed first (its last party counted it),
 * it passed the barrier like the others: VT_OK, not the leader. */

vt_err vt_barrier_init(vt_barrier *b, uint32_t parties)
{
    if (!b || parties == 0)
        return VT_EINVAL;
    memset(b, 0, sizeof(*b));
    b->parties = parties;
    return VT_OK;
}

vt_err vt_barrier_destroy(vt_barrier *b)
{
    if (!b)
        return VT_EINVAL;
    vt__wq_lock(&b->q);
    int busy = b->arrived != 0 || vt__wq_first(&b->q);
    vt__wq_unlock(&b->q);
    return busy ? VT_EBUSY : VT_OK;
}

vt_err vt_barrier_wait(vt_barrier *b, int64_t deadline, int *leader)
{
    if (leader)
        *leader = 0;
    if (!b)
        return VT_EINVAL;
    if (vt__cancel_pending())
        return VT_ECANCELED;
    vt__wq_lock(&b->q);
    if (b->parties == 0) { /* never initialised */
        vt__wq_unlock(&b->q);
        return VT_EINVAL;
    }
    uint64_t gen = b->generation;
    if (++b->arrived == b->parties) {
        wake_list wl;
        wl_init(&wl);
        b->arrived = 0;
        b->generation++;
        pop_all_claimed(&b->q, &wl);
        vt__wq_unlock(&b->q);
        wl_wake(&wl);
        if (leader)
            *leader = 1;
        return VT_OK;
    }
    if (deadline == VT_NOW) {
        b->arrived--;
        vt__wq_unlock(&b->q);
        return VT_ETIMEDOUT;
    }
    vt__waiter w;
    vt__waiter_init(&w, "barrier", b, 0);
    vt__wq_push(&b->q, &w);
    vt__wq_unlock(&b->q);

    vt_err e = vt__waiter_wait(&w, deadline);
    if (e == VT_OK)
        return VT_OK;
    vt__wq_lock(&b->q);
    leave_locked(&b->q, &w);
    if (b->generation == gen)
        b->arrived--;
    else
        e = VT_OK;
    vt__wq_unlock(&b->q);
    return e;
}

/* ---- Wait group ------------------------------------------------------------------------
 * Changes that keep the count above zero are a lock-free CAS. Reaching zero
 * happens only under the queue lock, and a waiter reads the count under it
 * too: a waiter that sees zero and frees the group (often on its stack)
 * then cannot do so while the last vt_waitgroup_done still holds the lock. */

vt_err vt_waitgroup_init(vt_waitgroup *wg)
{
    if (!wg)
        return VT_EINVAL;
    memset(wg, 0, sizeof(*wg));
    return VT_OK;
}

vt_err vt_waitgroup_destroy(vt_waitgroup *wg)
{
    if (!wg)
        return VT_EINVAL;
    vt__wq_lock(&wg->q);
    int busy = atomic_load_explicit(&wg->count, memory_order_relaxed) != 0 || vt__wq_first(&wg->q);
    vt__wq_unlock(&wg->q);
    return busy ? VT_EBUSY : VT_OK;
}

/* c + delta into *out; 0 when it would leave 0 .. INT64_MAX. */
static int wg_next(int64_t c, int64_t delta, int64_t *out)
{
    if (delta > 0 ? c > INT64_MAX - delta : c + delta < 0)
        return 0;
    *out = c + delta;
    return 1;
}

vt_err vt_waitgroup_add(vt_waitgroup *wg, int64_t delta)
{
    if (!wg)
        return VT_EINVAL;
    if (delta == 0)
        return VT_OK;
    int64_t c = atomic_load_explicit(&wg->count, memory_order_relaxed), n;
    for (;;) {
        if (!wg_next(c, delta, &n))
            return VT_ERANGE;
        if (n == 0)
            break;
        /* acq_rel: the work done before a done() reaches whoever sees zero
         * through the chain of updates. */
        if (atomic_compare_exchange_weak_explicit(&wg->count, &c, n, memory_order_acq_rel,
                                                  memory_order_relaxed))
            return VT_OK;
    }
    wake_list wl;
    wl_init(&wl);
    vt__wq_lock(&wg->q);
    c = atomic_load_explicit(&wg->count, memory_order_relaxed);
    do {
        if (!wg_next(c, delta, &n)) {
            vt__wq_unlock(&wg->q);
            return VT_ERANGE;
        }
    } while (!atomic_compare_exchange_weak_explicit(&wg->count, &c, n, memory_order_acq_rel,
                                                    memory_order_relaxed));
    if (n == 0)
        pop_all_claimed(&wg->q, &wl);
    vt__wq_unlock(&wg->q);
    wl_wake(&wl);
    return VT_OK;
}

vt_err vt_waitgroup_done(vt_waitgroup *wg)
{
    return vt_waitgroup_add(wg, -1);
}

vt_err vt_waitgroup_wait(vt_waitgroup *wg, int64_t deadline)
{
    if (!wg)
        return VT_EINVAL;
    if (vt__cancel_pending())
        return VT_ECANCELED;
    vt__wq_lock(&wg->q);
    if (atomic_load_explicit(&wg->count, memory_order_acquire) == 0) {
        vt__wq_unlock(&wg->q);
        return VT_OK;
    }
    if (deadline == VT_NOW) {
        vt__wq_unlock(&wg->q);
        return VT_ETIMEDOUT;
    }
    vt__waiter w;
    vt__waiter_init(&w, "waitgroup", wg, 0);
    vt__wq_push(&wg->q, &w);
    vt__wq_unlock(&wg->q);
    vt_err e = vt__waiter_wait(&w, deadline);
    if (e != VT_OK)
        leave(&wg->q, &w);
    return e;
}

/* ---- Once -------------------------------------------------------------------------------- */
enum { ONCE_NEW = 0, ONCE_RUNNING = 1, ONCE_DONE = 2 };

vt_err vt_once_run(vt_once *o, void (*fn)(void *arg), void *arg)
{
    if (!o || !fn)
        return VT_EINVAL;
    if (atomic_load_explicit(&o->state, memory_order_acquire) == ONCE_DONE)
        return VT_OK;
    vt__wq_lock(&o->q);
    for (;;) {
        uint32_t st = atomic_load_explicit(&o->state, memory_order_acquire);
        if (st == ONCE_DONE) {
            vt__wq_unlock(&o->q);
            return VT_OK;
        }
        if (st == ONCE_NEW) {
            atomic_store_explicit(&o->state, ONCE_RUNNING, memory_order_relaxed);
            vt__wq_unlock(&o->q);
            fn(arg);
            wake_list wl;
            wl_init(&wl);
            vt__wq_lock(&o->q);
            atomic_store_explicit(&o->state, ONCE_DONE, memory_order_release);
            pop_all_claimed(&o->q, &wl);
            vt__wq_unlock(&o->q);
            wl_wake(&wl);
            return VT_OK;
        }
        vt__waiter w;
        vt__waiter_init(&w, "once", o, VT__WAIT_NOCANCEL);
        vt__wq_push(&o->q, &w);
        vt__wq_unlock(&o->q);
        if (vt__waiter_wait(&w, VT_FOREVER) == VT_OK)
            return VT_OK;
        /* Not expected without a deadline or cancellation; look again. */
        vt__wq_lock(&o->q);
        leave_locked(&o->q, &w);
    }
}
