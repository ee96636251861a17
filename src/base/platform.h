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

#endif
