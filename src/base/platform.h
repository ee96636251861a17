/* platform.h — the contract an operating system port must fulfil. The one
 * private header every layer may include; the OS-specific code behind it
 * lives in src/base/<os>/ and nowhere else. */
#ifndef VITTE_PLATFORM_H
#define VITTE_PLATFORM_H

#include <stdatomic.h>
#include <stdint.h>

#include "vitte/base.h"

/* Internal symbols shared between files of libvitte but not exported. */
#define VT_INTERNAL __attribute__((visibility("hidden")))

/* ---- Threads ---------------------------------------------------------------
 * A thin layer over pthreads so that no other file includes <pthread.h> for
 * thread creation. Stack size 0 means the platform default. */
typedef struct vt__thread {
    uintptr_t handle;
} vt__thread;

typedef void *(*vt__thread_fn)(void *arg);

VT_INTERNAL vt_err vt__thread_create(vt__thread *t, vt__thread_fn fn, void *arg, size_t stack_size,
                                     const char *name);
VT_INTERNAL vt_err vt__thread_join(vt__thread t, void **result);
/* Names the calling thread as tools show it (at most 15 characters kept). */
VT_INTERNAL void vt__thread_set_name(const char *name);
/* The calling thread's stack: lowest address and size (0 when unknown). */
VT_INTERNAL void vt__thread_stack_bounds(void **lo, size_t *size);
VT_INTERNAL void vt__thread_yield(void);
/* A small integer id of the calling thread (the kernel's tid on Linux). */
VT_INTERNAL uint64_t vt__thread_id(void);

/* ---- Futex-style wait and wake ---------------------------------------------
 * vt__futex_wait blocks while *addr == expected, until woken or the absolute
 * deadline (ns of vt_now_ns, VT_FOREVER for none) passes. It may return
 * spuriously: callers re-check their condition in a loop. Returns VT_OK when
 * woken (or spuriously), VT_EAGAIN when *addr != expected on entry,
 * VT_ETIMEDOUT when the deadline passed, VT_ESYSERR|errno for a bad address.
 * Wakes are process-private. */
VT_INTERNAL vt_err vt__futex_wait(_Atomic uint32_t *addr, uint32_t expected, int64_t deadline);
/* Wakes up to n waiters (n == INT32_MAX: all). Returns how many it woke. */
VT_INTERNAL int vt__futex_wake(_Atomic uint32_t *addr, int n);

/* ---- CPU hints ---------------------------------------------------------------- */
static inline void vt__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

/* Sleeps the calling thread for ns nanoseconds (for tests and back-off, never
 * on a hot path). */
VT_INTERNAL void vt__sleep_ns(int64_t ns);

/* CPU time of the calling thread in ns. */
VT_INTERNAL int64_t vt__thread_cpu_ns(void);

/* ---- A lock for tiny critical sections -------------------------------------
 * Test-and-test-and-set with back-off to the scheduler: one locked
 * instruction to take it, a plain store to release it. For sections of a few
 * dozen instructions only; anything longer uses a mutex. */
typedef struct vt__spinlock {
    _Atomic uint32_t locked;
} vt__spinlock;

#define VT__SPINLOCK_INIT {0}

VT_INTERNAL void vt__spin_lock_slow(vt__spinlock *l);

static inline void vt__spin_lock(vt__spinlock *l)
{
    if (VT_LIKELY(!atomic_exchange_explicit(&l->locked, 1, memory_order_acquire)))
        return;
    vt__spin_lock_slow(l);
}

static inline int vt__spin_trylock(vt__spinlock *l)
{
    return atomic_load_explicit(&l->locked, memory_order_relaxed) == 0 &&
           !atomic_exchange_explicit(&l->locked, 1, memory_order_acquire);
}

static inline void vt__spin_unlock(vt__spinlock *l)
{
    atomic_store_explicit(&l->locked, 0, memory_order_release);
}

/* ---- Random numbers for schedulers -------------------------------------------
 * splitmix64: fast, per-thread state, not for cryptography. */
static inline uint64_t vt__rand_next(uint64_t *state)
{
    /* splitmix64: passes BigCrush, and any seed (even 0) is a good one. */
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A number in [0, n) without division bias that matters for n < 2^32. */
static inline uint32_t vt__rand_below(uint64_t *state, uint32_t n)
{
    return (uint32_t)(((vt__rand_next(state) >> 32) * (uint64_t)n) >> 32);
}

/* ---- Virtual memory ----------------------------------------------------------
 * Reserves size bytes of zeroed, readable and writable address space whose
 * pages are committed only when first touched (so a large reservation costs
 * what is used). NULL on failure (errno set). Release with vt__vm_release. */
VT_INTERNAL void *vt__vm_reserve(size_t size);
VT_INTERNAL void vt__vm_release(void *p, size_t size);
VT_INTERNAL size_t vt__page_size(void);

/* A reservation of VT__HUGE_BLOCK bytes aligned to it, for large arrays
 * written soon after (task graphs): the system is asked to back it with
 * huge pages where it can, since first touching memory page by page costs
 * a fault per 4 KiB (on some virtual machines, 15 us each). NULL on
 * failure. Release with vt__vm_release(p, VT__HUGE_BLOCK). */
#define VT__HUGE_BLOCK ((size_t)2 << 20)
VT_INTERNAL void *vt__vm_reserve_huge(void);

/* Makes the page-aligned range [p, p + size) of a reservation fault on any
 * access (a guard). Prefers a guard that does not split the mapping (Linux
 * 6.13's MADV_GUARD_INSTALL), so a million guarded stacks fit in one
 * mapping; else mprotect, which costs one more mapping each and is refused
 * once the process nears its mapping limit. Returns VT__GUARD_MARKER,
 * VT__GUARD_MPROTECT, or VT__GUARD_NONE (no guard could be placed). */
enum { VT__GUARD_NONE = 0, VT__GUARD_MARKER = 1, VT__GUARD_MPROTECT = 2 };
VT_INTERNAL int vt__vm_guard(void *p, size_t size);
/* Gives the pages of [p, p + size) back to the system; they read as zero
 * when touched again. */
VT_INTERNAL void vt__vm_decommit(void *p, size_t size);

/* ---- Processes ---------------------------------------------------------------
 * To tell whether the process that wrote a record still runs: its start
 * time (clock ticks since boot, so a recycled pid is told apart) and state
 * letter ('R', 'S', 'Z' ...), from /proc; -1 when pid has no entry (gone,
 * or hidden). The boot's id ("" when unknown), so that a pid of an earlier
 * boot is not taken for a live one. */
VT_INTERNAL int vt__process_stat(long pid, int64_t *start_ticks, char *state);
VT_INTERNAL void vt__boot_id(char *buf, size_t size);

/* ---- Faults ------------------------------------------------------------------
 * A handler for SIGSEGV/SIGBUS that runs on an alternate signal stack (so a
 * stack overflow can be reported). handler(addr) returns 1 when it reported
 * the fault (the process then dies of the signal, as it would have), 0 to
 * let the previous disposition handle it. vt__fault_thread_init gives the
 * calling thread its alternate stack (once per thread; ENOMEM is logged
 * and leaves the thread without one). */
typedef int (*vt__fault_fn)(void *addr);
VT_INTERNAL vt_err vt__fault_install(vt__fault_fn handler);
VT_INTERNAL void vt__fault_thread_init(void);
/* write(2) to stderr, async-signal-safe. */
VT_INTERNAL void vt__write_stderr(const char *s, size_t n);

/* ---- Sanitizer awareness -------------------------------------------------- */
#if defined(__SANITIZE_THREAD__)
#define VT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define VT_TSAN 1
#endif
#endif
#ifndef VT_TSAN
#define VT_TSAN 0
#endif

/* A full fence for store-load (Dekker) ordering. ThreadSanitizer does not
 * model fences (gcc refuses them under -fsanitize=thread); there a locked
 * RMW on a thread-local word gives the same hardware barrier without adding
 * happens-before edges that could hide a real race. */
static inline void vt__fence_seq_cst(void)
{
#if VT_TSAN
    static _Thread_local _Atomic int word;
    atomic_fetch_add_explicit(&word, 0, memory_order_seq_cst);
#else
    atomic_thread_fence(memory_order_seq_cst);
#endif
}

/* ---- Readiness poller ----------------------------------------------------------
 * What async's netpoller needs from the system: a set of descriptors watched
 * edge-triggered for both directions (epoll on Linux), a wait on the set
 * that another thread can interrupt, and the descriptor calls whose flags
 * or error rules differ between systems. One thread at a time waits on a
 * poller; add, del and interrupt may come from any thread meanwhile. */
typedef struct vt__poller vt__poller;
struct sockaddr;

/* The same values as VT_IO_READ and VT_IO_WRITE. */
enum { VT__POLL_IN = 1, VT__POLL_OUT = 2 };

/* Most events one vt__poller_wait returns. */
#define VT__POLLER_BATCH 128

typedef struct vt__poll_event {
    void *data;      /* as given to vt__poller_add */
    unsigned events; /* VT__POLL_IN | VT__POLL_OUT: an error or a hang-up
                        reports both, so each side retries its call and
                        gets the error (or the end of file) from it */
} vt__poll_event;

/* On VT_OK *out is the caller's (vt__poller_free). Errors: VT_EINVAL,
 * VT_ENOMEM, VT_ESYSERR|errno (out of descriptors). */
VT_INTERNAL vt_err vt__poller_new(vt__poller **out);
/* p may be NULL. No thread may be waiting on it. The descriptors it
 * watched stay open. */
VT_INTERNAL void vt__poller_free(vt__poller *p);
/* Watches fd for reading and writing, edge-triggered: an event comes when
 * fd becomes ready (and one at once if it is ready already), not for as
 * long as it stays ready. Its events come back with data. Adding a watched
 * descriptor again only updates data. Errors: VT_ENOTSUP (a descriptor
 * that cannot be polled, e.g. a regular file, which is always ready),
 * VT_ESYSERR|errno (EBADF, ENOMEM, ENOSPC: the user's epoll limit). */
VT_INTERNAL vt_err vt__poller_add(vt__poller *p, int fd, void *data);
/* Stops watching fd (not watched: VT_OK). Closing fd does it too, unless
 * a duplicate of it stays open. */
VT_INTERNAL vt_err vt__poller_del(vt__poller *p, int fd);
/* Waits until a watched descriptor has events, the deadline passes
 * (VT_ETIMEDOUT) or vt__poller_interrupt is called, and stores up to max
 * (at most VT__POLLER_BATCH) events in ev[0 .. *n). VT_OK with *n == 0 is
 * an interrupt or a signal: the caller looks at its state and waits
 * again. Errors: VT_EINVAL, VT_ETIMEDOUT, VT_ESYSERR|errno. */
VT_INTERNAL vt_err vt__poller_wait(vt__poller *p, vt__poll_event *ev, int max, int *n,
                                   int64_t deadline);
/* Ends the current vt__poller_wait, or the next one if none waits now.
 * Thread: any. */
VT_INTERNAL void vt__poller_interrupt(vt__poller *p);

/* Sets O_NONBLOCK on fd if it lacks it; *is_socket (may be NULL) gets 1
 * when fd is a socket. Errors: VT_ESYSERR|errno (EBADF). */
VT_INTERNAL vt_err vt__fd_prepare(int fd, int *is_socket);
/* Blocks the calling thread (not a fiber: the worker) until fd is ready
 * for events (VT__POLL_*), or until the deadline (ns of vt_now_ns,
 * VT_FOREVER, VT_NOW) has passed — never before. *ready (may be NULL) gets
 * what is ready: an error or a hang-up counts as every requested event.
 * Signals do not end the wait early. Errors: VT_ETIMEDOUT,
 * VT_ESYSERR|errno (EBADF for a descriptor that is not open). */
VT_INTERNAL vt_err vt__fd_wait(int fd, unsigned events, unsigned *ready, int64_t deadline);
/* Accepts a connection on the listening socket fd: *out is a new
 * non-blocking, close-on-exec socket, addr/addrlen (may be NULL) as for
 * accept(2). VT_EAGAIN: none pending. Signals and connections that died
 * while queued are retried. Errors: VT_EAGAIN, VT_ESYSERR|errno. */
VT_INTERNAL vt_err vt__fd_accept(int fd, int *out, struct sockaddr *addr, unsigned *addrlen);
/* Closes fd once; a signal does not leave it open (nor does it report an
 * error). Errors: VT_ESYSERR|errno (EBADF, EIO ...: fd is closed anyway
 * except for EBADF). */
VT_INTERNAL vt_err vt__fd_close(int fd);

#endif
