/* vitte/async.h — fibers on the scheduler's workers, and what they wait on.
 *
 * A fiber is a stackful coroutine: a function with a stack of its own that
 * runs on one of a runtime's workers (sched's threads), suspends when it
 * waits — for another fiber, a lock, a timer, a file descriptor — and
 * resumes on whichever worker is free, so thousands of fibers share a few
 * threads (M:N). Suspending costs a register switch, not a system call.
 *
 * Every call that can block takes a deadline (absolute ns of vt_now_ns, or
 * the pool's virtual clock in deterministic mode; VT_FOREVER; VT_NOW only
 * tries) and returns VT_ETIMEDOUT when it passes. Called from a fiber, it
 * suspends the fiber; from a plain thread, it blocks the thread, unless its
 * comment says "Thread: fiber only" (then VT_ESTATE from a thread).
 *
 * Cancellation is structured: a fiber belongs to a scope (by default, the
 * children of the fiber that spawned it); cancelling a fiber or a scope
 * cancels everything under it. A cancelled fiber keeps running: every
 * suspension point (a blocking call, vt_fiber_yield) returns VT_ECANCELED
 * from then on, except when cancellation is masked (vt_cancel_mask), and the
 * fiber returns when it has cleaned up. A fiber does not finish — its await
 * does not return — before all its children have finished: nothing leaks
 * past the end of the fiber that started it.
 *
 * Deterministic mode: with opts.pool.deterministic, fibers, sleeps and
 * timeouts run on the thread that drives the runtime (vt_runtime_main,
 * vt_runtime_drive) in an order fixed by the seed, on a virtual clock.
 * File-descriptor readiness and vt_blocking_run depend on the outside world
 * and are not deterministic. */
#ifndef VITTE_ASYNC_H
#define VITTE_ASYNC_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "vitte/base.h"
#include "vitte/sched.h"

#ifdef __cplusplus
extern "C" {
#endif

struct sockaddr;

typedef struct vt_runtime vt_runtime;
typedef struct vt_scope vt_scope;

/* A fiber's body. Its return value is what vt_fiber_await hands back. */
typedef void *(*vt_fiber_fn)(void *arg);

/* ---- The runtime -------------------------------------------------------------- */

#define VT_STACK_DEFAULT ((size_t)64 << 10)
#define VT_STACK_MIN ((size_t)16 << 10)
#define VT_STACK_MAX ((size_t)1 << 30)

typedef struct vt_runtime_opts {
    vt_pool_opts pool;        /* the workers (see vt_pool_opts); the runtime's own pool */
    size_t stack_size;        /* default fiber stack: 0 = VT_STACK_DEFAULT (64 KiB);
                                 VT_STACK_MIN .. VT_STACK_MAX, rounded up to pages.
                                 Reserved address space, committed as touched. */
    int no_guard_pages;       /* 1: no guard page below each stack (an overflow
                                 then corrupts memory silently: for tests only) */
    unsigned blocking_threads; /* most threads running vt_blocking_run at once;
                                 0 = 16. Started when first needed. */
} vt_runtime_opts;

/* Fills *opts with the defaults (every field 0). */
VT_API void vt_runtime_opts_init(vt_runtime_opts *opts);

/* Starts a runtime: a pool of workers for fibers (and closure jobs), its
 * stack pool, and (when first needed) a poller thread and blocking threads.
 * On VT_OK *out is the caller's (vt_runtime_free). Errors: VT_EINVAL (NULL
 * out, a stack size out of range, a bad pool option), VT_ENOMEM,
 * VT_EBUSY (127 runtimes exist already), VT_ESYSERR|errno. */
VT_API vt_err vt_runtime_new(vt_runtime **out, const vt_runtime_opts *opts);

/* Cancels every fiber still alive, waits until all have finished (they see
 * VT_ECANCELED and return), then stops the pool. deadline bounds the wait:
 * VT_ETIMEDOUT leaves the runtime running (call again, or free it).
 * A second call returns VT_ECLOSED. Thread: any thread but the runtime's
 * own workers (VT_ESTATE). */
VT_API vt_err vt_runtime_shutdown(vt_runtime *rt, int64_t deadline);

/* vt_runtime_shutdown(rt, VT_FOREVER) if not done yet, then releases
 * everything. rt may be NULL. */
VT_API void vt_runtime_free(vt_runtime *rt);

/* The runtime's pool: closure jobs and timers may be submitted to it. */
VT_API vt_pool *vt_runtime_pool(vt_runtime *rt);

/* The runtime of the calling fiber or worker, or NULL. */
VT_API vt_runtime *vt_runtime_current(void);

/* Deterministic mode: runs fibers and timers on the calling thread until
 * every fiber has finished or is blocked with nothing left to wake it.
 * Returns VT_OK when no fiber is left alive, VT_EBUSY when some are still
 * blocked (a deadlock, or a wait on a file descriptor). Errors: VT_EINVAL,
 * VT_ENOTSUP (not deterministic), VT_ESTATE (called from a fiber or job). */
VT_API vt_err vt_runtime_drive(vt_runtime *rt);

/* The simple way in: starts a runtime with opts (NULL: defaults), runs
 * fn(arg) as its root fiber (named "main"), waits for it, shuts the runtime
 * down and frees it. *result (may be NULL) gets fn's return value.
 * Errors: as vt_runtime_new and vt_fiber_spawn; VT_EBUSY in deterministic
 * mode when fibers were left blocked for ever (a deadlock). */
VT_API vt_err vt_runtime_main(const vt_runtime_opts *opts, vt_fiber_fn fn, void *arg, void **result);

/* int main(argc, argv) that runs app(argc, argv) as the root fiber of a
 * default runtime and exits with its status (1 if the runtime cannot
 * start, with a message on stderr):
 *
 *     static int app(int argc, char **argv) { ... }
 *     VT_MAIN(app)
 */
VT_API int vt_main(int (*app)(int argc, char **argv), int argc, char **argv);
#define VT_MAIN(app)                                                                               \
    int main(int argc, char **argv)                                                                \
    {                                                                                              \
        return vt_main((app), argc, argv);                                                         \
    }

/* ---- Fibers ----------------------------------------------------------------------
 * A join handle. Handles are generation-checked: a handle whose fiber was
 * awaited (or detached and finished) is stale, and calls with it fail with
 * VT_ENOENT instead of touching another fiber. {0} is never valid. */
typedef struct vt_fiber {
    uint64_t id;
} vt_fiber;

#define VT_FIBER_NAME_MAX 32 /* bytes kept of a name, the terminator included */

typedef struct vt_fiber_opts {
    const char *name;     /* copied (truncated to VT_FIBER_NAME_MAX - 1); NULL: "fiber" */
    size_t stack_size;    /* 0: the runtime's default; else as vt_runtime_opts */
    vt_scope *scope;      /* NULL: the children of the calling fiber, or the
                             runtime's root scope when called from a thread */
    int detached;         /* 1: no handle; its resources go back when it ends */
    vt_runtime *runtime;  /* NULL: the calling fiber's or worker's runtime */
} vt_fiber_opts;

/* Starts fn(arg) in a new fiber and returns at once (the caller keeps
 * running; the fiber runs when a worker is free, possibly this one right
 * after). *out receives the join handle, to be awaited or detached exactly
 * once. No system call and, once warm, no allocation: stacks are reused.
 * Thread: any (from a plain thread, opts->runtime is required).
 * Errors: VT_EINVAL (NULL fn, NULL out without detached, bad stack size),
 * VT_ESTATE (no runtime given and none current), VT_ECLOSED (the runtime
 * or the scope is shutting down / closed), VT_ENOMEM. */
VT_API vt_err vt_fiber_spawn(vt_fiber *out, vt_fiber_fn fn, void *arg);
VT_API vt_err vt_fiber_spawn_ex(vt_fiber *out, vt_fiber_fn fn, void *arg, const vt_fiber_opts *opts);

/* Waits until fiber f has finished, then stores its return value in
 * *result (may be NULL) and releases the handle (f is stale afterwards).
 * Thread: any. Errors: VT_ENOENT (stale or invalid handle: awaited or
 * detached already), VT_EBUSY (another caller awaits f at the moment),
 * VT_EDEADLK (a fiber awaiting itself), VT_ETIMEDOUT (f still runs; the
 * handle stays valid), VT_ECANCELED (the caller was cancelled; the handle
 * stays valid). */
VT_API vt_err vt_fiber_await(vt_fiber f, void **result, int64_t deadline);

/* Gives up the handle: the fiber runs on and its resources go back when it
 * ends. Thread: any. Errors: VT_ENOENT (stale), VT_EBUSY (being awaited). */
VT_API vt_err vt_fiber_detach(vt_fiber f);

/* Cancels f and everything under it (see the top of this file). A fiber
 * that finished already is not an error: VT_OK. Thread: any.
 * Errors: VT_ENOENT (stale handle). */
VT_API vt_err vt_fiber_cancel(vt_fiber f);

/* The calling fiber's handle ({0} outside a fiber). It may be passed to
 * vt_fiber_cancel; awaiting it from itself is VT_EDEADLK. */
VT_API vt_fiber vt_fiber_self(void);
/* 1 when called from a fiber. */
VT_API int vt_fiber_in(void);
/* The calling fiber's name ("" outside a fiber). Valid while it runs. */
VT_API const char *vt_fiber_name(void);
/* Renames the calling fiber. Thread: fiber only. Errors: VT_EINVAL (NULL),
 * VT_ESTATE. */
VT_API vt_err vt_fiber_set_name(const char *name);

/* Lets the other ready fibers of this worker run first; returns when the
 * caller's turn comes again (at once if none is ready). A suspension point.
 * Thread: fiber only. Errors: VT_ESTATE, VT_ECANCELED. */
VT_API vt_err vt_fiber_yield(void);

/* Sleeps until the deadline (never wakes before it), on the pool's timer
 * wheel (from a plain thread: the thread sleeps). A suspension point.
 * Thread: any. Errors: VT_ECANCELED (woken early by cancellation),
 * VT_EINVAL (a negative duration; VT_FOREVER from a plain thread). */
VT_API vt_err vt_sleep_until(int64_t deadline);
VT_API vt_err vt_sleep_ns(int64_t ns);
VT_API vt_err vt_sleep_ms(int64_t ms);
/* The runtime's clock (virtual in deterministic mode): the clock of every
 * deadline given to a fiber's blocking calls. vt_now_ns() outside a fiber. */
VT_API int64_t vt_fiber_now(void);
/* vt_fiber_now() + ns, or VT_FOREVER for ns < 0. */
VT_API int64_t vt_fiber_deadline(int64_t ns);

/* 1 when the calling fiber has been cancelled (whether masked or not). */
VT_API int vt_cancelled(void);
/* masked = 1: suspension points no longer report cancellation (for cleanup
 * that must wait, e.g. flushing a file); 0: they do again. Returns the
 * previous setting. Thread: fiber only (-1 elsewhere). */
VT_API int vt_cancel_mask(int masked);

/* Writes every live fiber of rt (NULL: the current runtime) to f, one per
 * line: id, name, state (ready, running, waiting, done) and, for a waiting
 * fiber, what it waits on. Thread: any. Errors: VT_EINVAL. */
VT_API vt_err vt_runtime_dump(vt_runtime *rt, FILE *f);

typedef struct vt_runtime_stats {
    uint64_t spawned;      /* fibers started */
    uint64_t finished;     /* fibers that returned */
    uint64_t live;         /* spawned - finished */
    uint64_t stacks;       /* stacks mapped (live and cached) */
    uint64_t stack_bytes;  /* their address space */
    uint64_t guard_pages;  /* stacks with a guard page */
    uint64_t switches;     /* context switches */
} vt_runtime_stats;
VT_API vt_err vt_runtime_stats_get(vt_runtime *rt, vt_runtime_stats *out);

/* ---- Scopes ---------------------------------------------------------------------
 * A scope groups fibers for cancellation and waiting, as a nursery does:
 * fibers spawned with opts.scope = s belong to s; cancelling s cancels them
 * and their children; closing s waits for all of them. A scope created in a
 * fiber is cancelled with that fiber. */

/* Thread: any (from a fiber the scope is a child of the fiber; elsewhere of
 * the runtime rt, which may then not be NULL). Errors: VT_EINVAL, VT_ENOMEM. */
VT_API vt_err vt_scope_new(vt_scope **out, vt_runtime *rt);
/* Cancels every fiber of s, present and future. Idempotent. Thread: any. */
VT_API vt_err vt_scope_cancel(vt_scope *s);
/* Waits until no fiber of s is alive. Thread: any. Errors: VT_EINVAL,
 * VT_ETIMEDOUT, VT_ECANCELED. */
VT_API vt_err vt_scope_wait(vt_scope *s, int64_t deadline);
/* Refuses new fibers, waits for the live ones (not interruptible: cancel
 * first for a prompt end) and frees s. NULL is a no-op. Thread: any. */
VT_API void vt_scope_close(vt_scope *s);
/* Live fibers of s. */
VT_API uint64_t vt_scope_live(vt_scope *s);

/* ---- Futures ---------------------------------------------------------------------
 * A one-shot value: set (or failed) once by one party, awaited by any
 * number of fibers and threads, before or after it is set. */
typedef struct vt_future vt_future;

VT_API vt_err vt_future_new(vt_future **out);
/* f may be NULL. Must not be called while someone awaits f (it then logs an
 * error and leaks f rather than free memory in use). */
VT_API void vt_future_free(vt_future *f);
/* Sets the value and wakes every waiter. Thread: any. Errors: VT_EINVAL,
 * VT_EEXIST (set or failed already: the first one stands). */
VT_API vt_err vt_future_set(vt_future *f, void *value);
/* Completes f with an error instead of a value (err != VT_OK). */
VT_API vt_err vt_future_fail(vt_future *f, vt_err err);
/* Waits until f is complete; VT_OK and *value, or the error it failed
 * with. Thread: any. Errors: VT_EINVAL, VT_ETIMEDOUT, VT_ECANCELED. */
VT_API vt_err vt_future_await(vt_future *f, void **value, int64_t deadline);
/* 1 when set or failed. */
VT_API int vt_future_ready(const vt_future *f);

/* ---- Synchronisation ---------------------------------------------------------------
 * Each suspends a waiting fiber (a waiting thread blocks), and wakes waiters
 * in arrival order, handing the resource to the first (FIFO hand-off): no
 * waiter starves, nobody barges in. All are usable from fibers and threads
 * at once. Storage is the caller's; zero-initialised storage (or the _INIT
 * macro) is a ready, unlocked / empty object, except semaphores and barriers
 * (vt_sem_init, vt_barrier_init). Destroying one that has waiters or is held
 * is VT_EBUSY. Blocking calls are suspension points (VT_ECANCELED), except
 * where noted: in a cancelled fiber they return VT_ECANCELED even when the
 * resource is free (a cancelled fiber stops taking locks; vt_cancel_mask
 * lets cleanup code take them). Thread: any, for every call below. */
typedef struct vt__wq {
    _Atomic uint32_t lock;
    uint32_t n;   /* waiters queued */
    void *head;
    void *tail;
} vt__wq;

typedef struct vt_mutex {
    vt__wq q;
    _Atomic uint32_t state;
    uint32_t reserved;
    _Atomic(uint64_t) owner;
} vt_mutex;
#define VT_MUTEX_INIT {{0, 0, NULL, NULL}, 0, 0, 0}

VT_API vt_err vt_mutex_init(vt_mutex *m);
/* Errors: VT_EBUSY (locked or waited on). */
VT_API vt_err vt_mutex_destroy(vt_mutex *m);
/* Errors: VT_EINVAL, VT_ETIMEDOUT, VT_ECANCELED, VT_EDEADLK (the caller
 * holds it already). */
VT_API vt_err vt_mutex_lock(vt_mutex *m, int64_t deadline);
/* Errors: VT_EBUSY (held by someone, or others wait for it). */
VT_API vt_err vt_mutex_trylock(vt_mutex *m);
/* Errors: VT_ESTATE (not locked by the caller). */
VT_API vt_err vt_mutex_unlock(vt_mutex *m);

/* Readers share, writers are alone; in arrival order (a waiting writer
 * holds back readers that come after it). */
typedef struct vt_rwlock {
    vt__wq q;
    _Atomic uint32_t readers;
    _Atomic uint32_t writer;
} vt_rwlock;
#define VT_RWLOCK_INIT {{0, 0, NULL, NULL}, 0, 0}
VT_API vt_err vt_rwlock_init(vt_rwlock *l);
VT_API vt_err vt_rwlock_destroy(vt_rwlock *l);
VT_API vt_err vt_rwlock_rdlock(vt_rwlock *l, int64_t deadline);
VT_API vt_err vt_rwlock_wrlock(vt_rwlock *l, int64_t deadline);
VT_API vt_err vt_rwlock_tryrdlock(vt_rwlock *l);
VT_API vt_err vt_rwlock_trywrlock(vt_rwlock *l);
/* Releases a read or the write lock. Errors: VT_ESTATE (not held). */
VT_API vt_err vt_rwlock_unlock(vt_rwlock *l);

/* Condition variable over a vt_mutex. */
typedef struct vt_cond {
    vt__wq q;
} vt_cond;
#define VT_COND_INIT {{0, 0, NULL, NULL}}
VT_API vt_err vt_cond_init(vt_cond *c);
VT_API vt_err vt_cond_destroy(vt_cond *c);
/* Releases m (which the caller holds), waits for a signal, and takes m
 * back before returning, whatever the result (the re-lock itself is not
 * interruptible). With VT_NOW it returns VT_ETIMEDOUT at once without
 * releasing m. Errors: VT_EINVAL, VT_ESTATE (m not held), VT_ETIMEDOUT,
 * VT_ECANCELED. */
VT_API vt_err vt_cond_wait(vt_cond *c, vt_mutex *m, int64_t deadline);
/* Wakes the longest waiter / every waiter. */
VT_API vt_err vt_cond_signal(vt_cond *c);
VT_API vt_err vt_cond_broadcast(vt_cond *c);

/* Counting semaphore. */
typedef struct vt_sem {
    vt__wq q;
    _Atomic uint64_t count;
} vt_sem;
VT_API vt_err vt_sem_init(vt_sem *s, uint64_t count);
VT_API vt_err vt_sem_destroy(vt_sem *s);
/* Takes n permits at once (n >= 1), waiting until there are (FIFO: a large
 * request at the head holds back smaller ones behind it). Errors:
 * VT_EINVAL (n == 0), VT_ETIMEDOUT, VT_ECANCELED. */
VT_API vt_err vt_sem_acquire(vt_sem *s, uint64_t n, int64_t deadline);
VT_API vt_err vt_sem_tryacquire(vt_sem *s, uint64_t n);
/* Errors: VT_ERANGE (the count would pass 2^63 - 1). */
VT_API vt_err vt_sem_release(vt_sem *s, uint64_t n);
VT_API uint64_t vt_sem_value(vt_sem *s);

/* Barrier for n parties, reusable: the n-th arrival releases the others
 * and the barrier starts over. */
typedef struct vt_barrier {
    vt__wq q;
    uint32_t parties;
    uint32_t arrived;
    uint64_t generation;
} vt_barrier;
/* Errors: VT_EINVAL (n == 0). */
VT_API vt_err vt_barrier_init(vt_barrier *b, uint32_t parties);
VT_API vt_err vt_barrier_destroy(vt_barrier *b);
/* *leader (may be NULL) is 1 for exactly one party per round (the last to
 * arrive). A party that times out or is cancelled leaves the round (it no
 * longer counts). Errors: VT_ETIMEDOUT, VT_ECANCELED. */
VT_API vt_err vt_barrier_wait(vt_barrier *b, int64_t deadline, int *leader);

/* Wait group: wait until a counter of outstanding work drops to zero. */
typedef struct vt_waitgroup {
    vt__wq q;
    _Atomic int64_t count;
} vt_waitgroup;
#define VT_WAITGROUP_INIT {{0, 0, NULL, NULL}, 0}
VT_API vt_err vt_waitgroup_init(vt_waitgroup *wg);
/* Errors: VT_EBUSY (waiters, or a count above zero). */
VT_API vt_err vt_waitgroup_destroy(vt_waitgroup *wg);
/* Adds delta (may be negative). Errors: VT_ERANGE (the count would go
 * below zero: nothing changes). */
VT_API vt_err vt_waitgroup_add(vt_waitgroup *wg, int64_t delta);
VT_API vt_err vt_waitgroup_done(vt_waitgroup *wg);
VT_API vt_err vt_waitgroup_wait(vt_waitgroup *wg, int64_t deadline);

/* Runs fn(arg) exactly once over all callers; the others wait until it has
 * returned (not interruptible: fn's effects are there when vt_once
 * returns). fn calling vt_once_run on the same o waits for itself for
 * ever, as pthread_once does. */
typedef struct vt_once {
    vt__wq q;
    _Atomic uint32_t state;
} vt_once;
#define VT_ONCE_INIT {{0, 0, NULL, NULL}, 0}
VT_API vt_err vt_once_run(vt_once *o, void (*fn)(void *arg), void *arg);

/* ---- Channels -------------------------------------------------------------------
 * A channel carries elements of a fixed size (copied in and out) from
 * senders to receivers, fibers and threads alike, in order: what one sender
 * sends arrives in the order it was sent. Three kinds, by capacity:
 *   0                   rendezvous: a send waits until a receiver takes the
 *                       element from it;
 *   1 .. 2^30 / size    bounded: a ring of that many elements; a send waits
 *                       while it is full, a receive while it is empty;
 *   VT_CHAN_UNBOUNDED   a send never waits (the buffer grows).
 * Any number of senders and receivers; a channel created with
 * VT_CHAN_SINGLE_SENDER (or _RECEIVER) promises that sends (receives) never
 * overlap in time — one fiber or thread does them all, or the callers order
 * them — and gets a faster path for it. A bounded channel's send and
 * receive take no lock and make no system call unless they wait.
 *
 * Close ends the stream: sends fail with VT_ECLOSED from then on, receivers
 * get what is buffered and then VT_ECLOSED ("end of channel"). Whatever a
 * send returned VT_OK for before the close is received.
 *
 * A channel call that can complete at once does so, even in a cancelled
 * fiber; one that would wait is a suspension point (VT_ECANCELED). Blocking
 * calls take a deadline (VT_NOW: VT_ETIMEDOUT at once when it would wait);
 * try_ calls never wait and say VT_EAGAIN instead.
 *
 * Lifetime: vt_chan_new gives the caller one reference; vt_chan_retain adds
 * one for another party (a producer fiber, say) and vt_chan_release drops
 * one; the last release frees the channel. vt_chan_free(ch) is close (if
 * still open) and release: parties holding a reference then drain what is
 * buffered and see VT_ECLOSED. A party blocked in a call keeps the channel
 * alive until it returns. Thread: any, for every call below. */
typedef struct vt_chan vt_chan;

#define VT_CHAN_UNBOUNDED SIZE_MAX
#define VT_CHAN_ELEM_MAX ((size_t)1 << 20) /* largest element: 1 MiB */

enum {
    VT_CHAN_SINGLE_SENDER = 1,   /* sends never overlap in time */
    VT_CHAN_SINGLE_RECEIVER = 2, /* receives never overlap in time */
    VT_CHAN_SPSC = 3,
    VT_CHAN_MPSC = VT_CHAN_SINGLE_RECEIVER,
    VT_CHAN_SPMC = VT_CHAN_SINGLE_SENDER,
    VT_CHAN_MPMC = 0
};

/* Errors: VT_EINVAL (NULL out, elem_size 0 or above VT_CHAN_ELEM_MAX,
 * unknown flags), VT_ERANGE (a bounded ring above 1 GiB: use an unbounded
 * channel), VT_ENOMEM. */
VT_API vt_err vt_chan_new(vt_chan **out, size_t elem_size, size_t capacity, unsigned flags);
/* Close (if open) and release. NULL is a no-op. */
VT_API void vt_chan_free(vt_chan *ch);
/* Returns ch. */
VT_API vt_chan *vt_chan_retain(vt_chan *ch);
/* Drops a reference; the last one frees the channel and what it buffers. */
VT_API void vt_chan_release(vt_chan *ch);

/* Copies the element at elem into the channel, waiting for room (bounded)
 * or for a receiver (rendezvous). Errors: VT_EINVAL (NULL ch or elem),
 * VT_ECLOSED (closed, before or while waiting: the element was not sent),
 * VT_ETIMEDOUT, VT_ECANCELED, VT_ENOMEM (unbounded, the buffer cannot grow). */
VT_API vt_err vt_chan_send(vt_chan *ch, const void *elem, int64_t deadline);
/* Takes the oldest element into elem, waiting for one. Errors: VT_EINVAL,
 * VT_ECLOSED (closed and drained: the end), VT_ETIMEDOUT, VT_ECANCELED. */
VT_API vt_err vt_chan_recv(vt_chan *ch, void *elem, int64_t deadline);
/* Never wait: VT_EAGAIN when the call would. A rendezvous try_send succeeds
 * only when a receiver waits; a try_recv only when a sender waits. */
VT_API vt_err vt_chan_try_send(vt_chan *ch, const void *elem);
VT_API vt_err vt_chan_try_recv(vt_chan *ch, void *elem);
/* Errors: VT_EINVAL, VT_ECLOSED (closed already). Wakes every waiter:
 * senders fail with VT_ECLOSED, receivers drain and then see VT_ECLOSED. */
VT_API vt_err vt_chan_close(vt_chan *ch);
/* 1 once closed. */
VT_API int vt_chan_closed(const vt_chan *ch);
/* Elements buffered now (a snapshot when others use the channel). */
VT_API size_t vt_chan_len(const vt_chan *ch);
/* The capacity given to vt_chan_new; the element size. */
VT_API size_t vt_chan_cap(const vt_chan *ch);
VT_API size_t vt_chan_elem_size(const vt_chan *ch);

/* ---- Select ----------------------------------------------------------------------
 * Waits until one of several channel operations can complete, completes
 * exactly that one and says which. A case with chan == NULL is disabled
 * (never ready), so a loop can turn cases off. When several are ready, the
 * choice is uniformly random (in deterministic mode, from the seed): no case
 * starves. A closed channel is ready: its case completes with VT_ECLOSED. */
enum { VT_SELECT_SEND = 1, VT_SELECT_RECV = 2 };

typedef struct vt_select_case {
    vt_chan *chan;  /* NULL: disabled */
    int op;         /* VT_SELECT_SEND or VT_SELECT_RECV */
    void *elem;     /* send: the element to send; receive: where it goes */
} vt_select_case;

/* Completes one case and sets *chosen to its index. Returns that case's
 * result: VT_OK, or VT_ECLOSED (its channel is closed; for a receive: and
 * drained), or VT_ENOMEM (a send case of an unbounded channel that cannot
 * grow). Errors (no case completed, *chosen untouched): VT_EINVAL (NULL
 * cases or chosen, n above 64 or 0, an enabled case with a bad op or NULL
 * elem; a disabled case's op and elem are not looked at), VT_ETIMEDOUT,
 * VT_ECANCELED; VT_EAGAIN from vt_select_try (the default case: nothing
 * was ready). cases stays the caller's. Thread: any. */
#define VT_SELECT_MAX 64
VT_API vt_err vt_select(vt_select_case *cases, size_t n, size_t *chosen, int64_t deadline);
VT_API vt_err vt_select_try(vt_select_case *cases, size_t n, size_t *chosen);

/* ---- Streams --------------------------------------------------------------------
 * An asynchronous sequence of fixed-size elements, built as a chain of
 * stages: a source, then stages that each run in fibers of their own and
 * pass elements on through a bounded channel (opts.capacity elements). A
 * slow stage fills the channel before it and so slows everything upstream
 * (backpressure): a chain never buffers more than the sum of its
 * capacities, plus the elements its stages hold in hand (a par_map's
 * concurrency, a batch being filled).
 *
 * A stage takes its input stream(s) over: the stream it returns owns the
 * chain behind it, and vt_stream_free on the last one cancels and frees the
 * whole chain. The consumer pulls with vt_stream_next, from a fiber or a
 * thread. An error in a stage (a callback returned one) ends the stream:
 * the consumer gets what was produced before it, then that error.
 *
 * A builder that fails takes nothing (its input stays the caller's). A
 * stream that is already a stage's input is VT_EINVAL for vt_stream_next,
 * for other builders and for vt_stream_free. Stages built in a fiber are
 * cancelled with that fiber; free a chain before its runtime. Builders'
 * errors: VT_EINVAL (NULL arguments, a zero element size, an unbounded
 * capacity, and as each says below),
 * VT_ERANGE (a ring above 1 GiB), VT_ENOMEM. Thread: any. */
typedef struct vt_stream vt_stream;

typedef struct vt_stream_opts {
    size_t capacity;     /* elements buffered after this stage; 0: 64 */
    const char *name;    /* the stage's name, for its fibers; NULL: the kind ("map", ...) */
    vt_runtime *runtime; /* where its fibers run; NULL: the input's runtime, else the
                            calling fiber's (from a thread, a source needs it) */
} vt_stream_opts;

/* A source that the caller feeds with vt_stream_push and ends with
 * vt_stream_end, exactly once: the producer holds the stream until then,
 * even after the consumer freed the chain (its pushes then fail with
 * VT_ECLOSED). Errors: VT_EINVAL (NULL out, elem_size 0 or above
 * VT_CHAN_ELEM_MAX), VT_ESTATE (no runtime), VT_ENOMEM. */
VT_API vt_err vt_stream_new(vt_stream **out, size_t elem_size, const vt_stream_opts *opts);
/* Waits while the stream is full. Errors: VT_EINVAL (NULL, or s is not a
 * stream made by vt_stream_new), VT_ECLOSED (ended, or its consumer freed
 * it), VT_ETIMEDOUT, VT_ECANCELED. */
VT_API vt_err vt_stream_push(vt_stream *s, const void *elem, int64_t deadline);
/* Ends the stream: VT_OK for a normal end, or the error its consumer gets
 * after the elements pushed before. Errors: VT_EINVAL, VT_ECLOSED (ended). */
VT_API vt_err vt_stream_end(vt_stream *s, vt_err err);

/* A source fiber: gen(ud, elem) writes the next element and returns VT_OK,
 * or VT_ECLOSED when there are no more, or an error that ends the stream. */
typedef vt_err (*vt_stream_gen_fn)(void *ud, void *elem);
VT_API vt_err vt_stream_generate(vt_stream **out, size_t elem_size, vt_stream_gen_fn gen, void *ud,
                                 const vt_stream_opts *opts);

/* out = fn(in), one element at a time, in order. An error from fn ends the
 * stream. */
typedef vt_err (*vt_stream_map_fn)(void *ud, const void *in, void *out);
VT_API vt_err vt_stream_map(vt_stream **out, vt_stream *in, size_t out_elem_size, vt_stream_map_fn fn, void *ud,
                            const vt_stream_opts *opts);
/* Keeps the elements for which keep returns non-zero. */
typedef int (*vt_stream_pred_fn)(void *ud, const void *elem);
VT_API vt_err vt_stream_filter(vt_stream **out, vt_stream *in, vt_stream_pred_fn keep, void *ud,
                               const vt_stream_opts *opts);

/* Groups elements into batches of up to max_count, sending a batch early
 * when max_wait_ns have passed since its first element (max_wait_ns < 0:
 * never early); a partial batch goes before the end or an error. Its
 * elements are vt_batch; the consumer owns each batch it receives and gives
 * it back with vt_batch_free (a map's fn owns the batches it gets; batches
 * a filter or merge drops are freed). Errors: VT_EINVAL (max_count 0, or
 * max_count elements overflow). */
typedef struct vt_batch {
    size_t count;
    void *items; /* count elements of the input's size */
} vt_batch;
VT_API vt_err vt_stream_batch(vt_stream **out, vt_stream *in, size_t max_count, int64_t max_wait_ns,
                              const vt_stream_opts *opts);
VT_API void vt_batch_free(vt_batch *b);

/* Interleaves n streams of the same element size, as their elements come
 * (each input's own order is kept). Ends when all have ended; an error in
 * any ends it. Takes the inputs over (ins itself stays the caller's).
 * Errors: VT_EINVAL (n 0, element sizes that differ, an input twice). */
VT_API vt_err vt_stream_merge(vt_stream **out, vt_stream **ins, size_t n, const vt_stream_opts *opts);

/* As vt_stream_map, with up to concurrency calls of fn running at once in
 * fibers of their own. Ordered (unordered = 0): elements leave in the order
 * they came (memory stays at concurrency elements however slow one is);
 * unordered: as they are done. An error from fn ends the stream at its
 * place in the order (ordered) or at once (unordered). Errors: VT_EINVAL
 * (concurrency 0). */
VT_API vt_err vt_stream_par_map(vt_stream **out, vt_stream *in, size_t out_elem_size, unsigned concurrency,
                                int unordered, vt_stream_map_fn fn, void *ud, const vt_stream_opts *opts);

/* The next element. Errors: VT_EINVAL, VT_ECLOSED (the end), the error
 * that ended the stream, VT_ETIMEDOUT, VT_ECANCELED. */
VT_API vt_err vt_stream_next(vt_stream *s, void *elem, int64_t deadline);
VT_API size_t vt_stream_elem_size(const vt_stream *s);
/* Cancels every stage of the chain, waits for their fibers and frees it
 * all (and the batches still buffered). NULL is a no-op. */
VT_API void vt_stream_free(vt_stream *s);

/* ---- IO readiness -----------------------------------------------------------------
 * For non-blocking file descriptors (sockets, pipes: O_NONBLOCK, which these
 * calls set when missing on a descriptor given to them). A fiber that would
 * block suspends until the poller (epoll) reports the descriptor ready; a
 * thread blocks in poll(2). A descriptor may have one reader and one writer
 * waiting at a time (more: VT_EBUSY). Closing a descriptor that a fiber
 * waits on: call vt_io_close, which wakes the waiters with VT_ECLOSED (a
 * plain close(2) leaves them waiting until their deadline). Writing to a
 * pipe or socket whose reader is gone raises SIGPIPE unless the program
 * ignores it (then VT_ESYSERR|EPIPE); sockets may use send(MSG_NOSIGNAL)
 * through vt_io_wait. After a vt_io_connect that timed out, close the
 * socket: its state is unspecified. */
enum { VT_IO_READ = 1, VT_IO_WRITE = 2 };

/* Waits until fd is ready for events (VT_IO_READ, VT_IO_WRITE or both).
 * *ready (may be NULL) gets what is ready. Errors: VT_EINVAL, VT_ETIMEDOUT,
 * VT_ECANCELED, VT_ECLOSED, VT_EBUSY, VT_ESYSERR|errno. */
VT_API vt_err vt_io_wait(int fd, unsigned events, unsigned *ready, int64_t deadline);
/* Reads up to n bytes (at least one unless at end of file: then *got = 0).
 * Errors: as vt_io_wait. */
VT_API vt_err vt_io_read(int fd, void *buf, size_t n, size_t *got, int64_t deadline);
/* Writes all n bytes, waiting as often as needed. *put (may be NULL) gets
 * what was written, also on error. Errors: as vt_io_wait (VT_ESYSERR|EPIPE
 * when the reader is gone). */
VT_API vt_err vt_io_write(int fd, const void *buf, size_t n, size_t *put, int64_t deadline);
/* Accepts a connection; *out is a new non-blocking, close-on-exec socket.
 * addr/len may be NULL. */
VT_API vt_err vt_io_accept(int fd, int *out, struct sockaddr *addr, unsigned *addrlen,
                           int64_t deadline);
/* Connects a non-blocking socket; VT_OK once connected, or the connection's
 * error (VT_ESYSERR|ECONNREFUSED, ...). */
VT_API vt_err vt_io_connect(int fd, const struct sockaddr *addr, unsigned addrlen, int64_t deadline);
/* Wakes whoever waits on fd with VT_ECLOSED, forgets fd, and closes it. */
VT_API vt_err vt_io_close(int fd);

/* Runs fn(arg), a call that may block (a file read, a DNS lookup, a
 * library that sleeps), on one of the runtime's blocking threads, and
 * suspends the calling fiber until it returns: the worker runs other fibers
 * meanwhile. *result (may be NULL) gets fn's return value. From a plain
 * thread, fn runs on the calling thread. Not interruptible (fn cannot be
 * stopped); a cancelled caller still waits for fn. Errors: VT_EINVAL,
 * VT_ENOMEM, VT_ECLOSED (runtime shutting down), VT_ESYSERR|errno (no
 * thread could be started). */
VT_API vt_err vt_blocking_run(void *(*fn)(void *arg), void *arg, void **result);

#ifdef __cplusplus
}
#endif
#endif
