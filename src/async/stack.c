/* Fiber stacks: slots of [guard][stack][struct vt__fib] carved from large
 * reservations (chunks), so that
 *  - a fiber costs the pages it touches: its struct shares the top page
 *    with its first frames, and a blocked fiber that used little stack is
 *    one page;
 *  - guard pages do not split mappings where the kernel has guard markers
 *    (a million stacks stay in a few thousand mappings, far below
 *    vm.max_map_count; with mprotect guards a process runs out at ~32k);
 *  - a finished fiber's slot goes to its worker's cache and is reused by
 *    the next spawn there with no lock, no system call and no allocation.
 * Slots are never unmapped while the runtime lives: a stale handle or a late
 * timer finds a slot whose generation moved on, never freed memory. */
#include <string.h>

#include "fiber.h"

#if defined(VT_HAVE_VALGRIND_H)
#include <valgrind/valgrind.h>
#endif
#if defined(VT_SANITIZE_THREAD)
#include <sanitizer/tsan_interface.h>
#endif

#define CHUNK_TARGET ((size_t)16 << 20) /* address space per chunk */
#define SLOTS_MAX 65536u                /* slots per chunk (16 bits of an index) */
#define CHUNKS_MAX 65536u
#define GUARD_BYTES ((size_t)16 << 10)  /* catches frames up to 16 KiB that skip a page */
#define CACHE_MAX 256u                  /* free slots a worker keeps */
#define CLASSES_MAX 32u

typedef struct chunk {
    _Atomic(char *) base;
    size_t stride;
    uint32_t slots;
    uint32_t used; /* slots handed out at least once */
    vt__stack_class *cls;
} chunk;

struct vt__stack_class {
    size_t usable;   /* stack bytes per slot */
    size_t stride;   /* slot size */
    uint32_t chunk;  /* chunk being carved, or UINT32_MAX */
    vt__fib *free;   /* released slots, through free_next */
    size_t nfree;
};

struct vt__stacks {
    vt__spinlock lock;
    size_t page;
    int guards;
    size_t default_size;
    vt_runtime *owner;
    vt__stack_class classes[CLASSES_MAX];
    unsigned nclasses;
    chunk *chunks; /* CHUNKS_MAX entries, committed as used */
    _Atomic uint32_t nchunks;
    _Atomic uint64_t guard_count, bytes;
};

/* Every live pool, for the fault handler (which must not lock). */
#define POOLS_MAX 64
static _Atomic(vt__stacks *) pools[POOLS_MAX];

static size_t round_up(size_t n, size_t to)
{
    return (n + to - 1) / to * to;
}

static size_t fib_bytes(void)
{
    return round_up(sizeof(vt__fib), 64);
}

/* ---- Overflow reports ------------------------------------------------------------- */

static void put_str(char *buf, size_t *n, size_t cap, const char *s)
{
    while (*s && *n + 1 < cap)
        buf[(*n)++] = *s++;
}

static void put_num(char *buf, size_t *n, size_t cap, uint64_t v, int hex)
{
    char tmp[24];
    int k = 0;
    do {
        unsigned d = (unsigned)(hex ? v % 16 : v % 10);
        tmp[k++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
        v = hex ? v / 16 : v / 10;
    } while (v && k < 24);
    if (hex)
        put_str(buf, n, cap, "0x");
    while (k && *n + 1 < cap)
        buf[(*n)++] = tmp[--k];
}

/* Async-signal-safe: reads the chunk tables only. */
static int on_fault(void *addr)
{
    uintptr_t a = (uintptr_t)addr;
    for (unsigned p = 0; p < POOLS_MAX; p++) {
        vt__stacks *s = atomic_load_explicit(&pools[p], memory_order_acquire);
        if (!s || !s->guards)
            continue;
        uint32_t n = atomic_load_explicit(&s->nchunks, memory_order_acquire);
        for (uint32_t c = 0; c < n; c++) {
            chunk *ch = &s->chunks[c];
            uintptr_t base = (uintptr_t)atomic_load_explicit(&ch->base, memory_order_acquire);
            if (!base || a < base || a >= base + ch->stride * ch->slots)
                continue;
            size_t slot = (a - base) / ch->stride;
            uintptr_t lo = base + slot * ch->stride;
            if (a >= lo + GUARD_BYTES)
                return 0; /* inside a stack or a struct: not an overflow */
            vt__fib *f = (vt__fib *)(lo + ch->stride - fib_bytes());
            char msg[256];
            size_t k = 0;
            put_str(msg, &k, sizeof(msg), "vitte: fiber '");
            put_str(msg, &k, sizeof(msg), f->name);
            put_str(msg, &k, sizeof(msg), "' overflowed its stack of ");
            put_num(msg, &k, sizeof(msg), ch->cls->usable >> 10, 0);
            put_str(msg, &k, sizeof(msg), " KiB (fault at ");
            put_num(msg, &k, sizeof(msg), a, 1);
            put_str(msg, &k, sizeof(msg), " in its guard page); give it a larger stack_size\n");
            vt__write_stderr(msg, k);
            return 1;
        }
    }
    return 0;
}

/* ---- The pool ---------------------------------------------------------------------- */

vt_err vt__stacks_new(vt__stacks **out, size_t default_size, int guards, vt_runtime *owner)
{
    vt__stacks *s = vt_calloc(1, sizeof(*s));
    if (!s)
        return VT_ENOMEM;
    s->chunks = vt_calloc(CHUNKS_MAX, sizeof(chunk));
    if (!s->chunks) {
        vt_free(s, sizeof(*s));
        return VT_ENOMEM;
    }
    s->page = vt__page_size();
    s->guards = guards;
    s->owner = owner;
    s->default_size = round_up(default_size, s->page);
    if (guards) {
        vt_err e = vt__fault_install(on_fault);
        if (e)
            vt_log(VT_LOG_WARN, "async", "stack overflows will not be reported: %s", vt_strerror(e));
        unsigned i = 0;
        for (; i < POOLS_MAX; i++) {
            vt__stacks *none = NULL;
            if (atomic_compare_exchange_strong(&pools[i], &none, s))
                break;
        }
        if (i == POOLS_MAX)
            vt_log(VT_LOG_WARN, "async", "more than %d runtimes: overflows of this one's fibers are not named",
                   POOLS_MAX);
    }
    *out = s;
    return VT_OK;
}

void vt__stacks_free(vt__stacks *s)
{
    if (!s)
        return;
    for (unsigned i = 0; i < POOLS_MAX; i++) {
        vt__stacks *me = s;
        atomic_compare_exchange_strong(&pools[i], &me, NULL);
    }
    uint32_t n = atomic_load(&s->nchunks);
    for (uint32_t c = 0; c < n; c++) {
        chunk *ch = &s->chunks[c];
        char *base = atomic_load(&ch->base);
        if (!base)
            continue;
        for (uint32_t i = 0; i < ch->used; i++) {
            vt__fib *f = (vt__fib *)(base + (size_t)(i + 1) * ch->stride - fib_bytes());
            (void)f;
#if defined(VT_HAVE_VALGRIND_H)
            if (f->valgrind_id)
                VALGRIND_STACK_DEREGISTER(f->valgrind_id);
#endif
#if defined(VT_SANITIZE_THREAD)
            if (f->tsan_fiber)
                __tsan_destroy_fiber(f->tsan_fiber);
#endif
        }
        vt__vm_release(base, ch->stride * ch->slots);
    }
    vt_free(s->chunks, CHUNKS_MAX * sizeof(chunk));
    vt_free(s, sizeof(*s));
}

static vt__stack_class *class_for(vt__stacks *s, size_t usable)
{
    for (unsigned i = 0; i < s->nclasses; i++)
        if (s->classes[i].usable == usable)
            return &s->classes[i];
    if (s->nclasses == CLASSES_MAX)
        return NULL;
    vt__stack_class *c = &s->classes[s->nclasses++];
    c->usable = usable;
    c->stride = round_up((s->guards ? GUARD_BYTES : 0) + usable + fib_bytes(), s->page);
    c->chunk = UINT32_MAX;
    return c;
}

/* A never-used slot of class c, carving a new chunk when needed. Lock held. */
static vt__fib *carve(vt__stacks *s, vt__stack_class *c)
{
    chunk *ch = c->chunk == UINT32_MAX ? NULL : &s->chunks[c->chunk];
    if (!ch || ch->used == ch->slots) {
        uint32_t n = atomic_load_explicit(&s->nchunks, memory_order_relaxed);
        if (n == CHUNKS_MAX)
            return NULL;
        size_t slots = CHUNK_TARGET / c->stride;
        if (slots < 1)
            slots = 1;
        if (slots > SLOTS_MAX)
            slots = SLOTS_MAX;
        char *base = vt__vm_reserve(c->stride * slots);
        if (!base)
            return NULL;
        ch = &s->chunks[n];
        ch->stride = c->stride;
        ch->slots = (uint32_t)slots;
        ch->used = 0;
        ch->cls = c;
        atomic_store_explicit(&ch->base, base, memory_order_release);
        atomic_store_explicit(&s->nchunks, n + 1, memory_order_release);
        atomic_fetch_add_explicit(&s->bytes, c->stride * slots, memory_order_relaxed);
        c->chunk = n;
    }
    uint32_t slot = ch->used++;
    char *lo = atomic_load_explicit(&ch->base, memory_order_relaxed) + (size_t)slot * ch->stride;
    vt__fib *f = (vt__fib *)(lo + ch->stride - fib_bytes());
    /* Fresh pages read as zero: f->inited is 0, so the slot is prepared
     * (guard, tools) below, outside the lock. */
    f->index = (c->chunk << 16) | slot;
    f->rt = s->owner;
    f->cls = c;
    f->stack_lo = lo + (s->guards ? GUARD_BYTES : 0);
    f->stack_size = (size_t)((char *)f - f->stack_lo);
    return f;
}

static void prepare(vt__stacks *s, vt__fib *f)
{
    if (f->inited)
        return;
    f->inited = 1;
    if (s->guards) {
        char *lo = f->stack_lo - GUARD_BYTES;
        int kind = vt__vm_guard(lo, GUARD_BYTES);
        f->guarded = kind != VT__GUARD_NONE;
        if (f->guarded) {
            atomic_fetch_add_explicit(&s->guard_count, 1, memory_order_relaxed);
        } else {
            static _Atomic int warned;
            if (!atomic_exchange(&warned, 1))
                vt_log(VT_LOG_WARN, "async",
                       "no more guard pages (the mapping limit is near): later fiber stacks are unguarded");
        }
    }
#if defined(VT_SANITIZE_THREAD)
    f->tsan_fiber = __tsan_create_fiber(0);
    f->tsan_lives = 0;
#endif
#if defined(VT_HAVE_VALGRIND_H)
    f->valgrind_id = VALGRIND_STACK_REGISTER(f->stack_lo, (char *)f);
#endif
    atomic_store_explicit(&f->pk.word, 0, memory_order_relaxed);
    f->pk.fiber = f;
}

vt__fib *vt__stacks_get(vt__stacks *s, vt__fworker *fw, size_t size)
{
    size_t usable = size ? round_up(size, s->page) : s->default_size;
    vt__fib *f;
    if (usable == s->default_size && fw && fw->cache) {
        f = fw->cache;
        fw->cache = f->free_next;
        fw->ncache--;
        return f;
    }
    vt__spin_lock(&s->lock);
    vt__stack_class *c = class_for(s, usable);
    if (!c) {
        vt__spin_unlock(&s->lock);
        return NULL;
    }
    if (c->free) {
        f = c->free;
        c->free = f->free_next;
        c->nfree--;
        /* Refill the worker's cache while the lock is held anyway. */
        if (fw && usable == s->default_size) {
            while (c->free && fw->ncache < CACHE_MAX / 2) {
                vt__fib *g = c->free;
                c->free = g->free_next;
                c->nfree--;
                g->free_next = fw->cache;
                fw->cache = g;
                fw->ncache++;
            }
        }
        vt__spin_unlock(&s->lock);
        return f;
    }
    f = carve(s, c);
    vt__spin_unlock(&s->lock);
    if (f)
        prepare(s, f);
    return f;
}

#if defined(VT_SANITIZE_THREAD)
/* TSan keeps a shadow call stack per fiber, and a fiber that ends never
 * returns from the frames it switched away in: every life of a slot leaves
 * a few entries behind, and after some ten thousand lives the shadow stack
 * overruns into TSan's own state and the process dies inside TSan. A fresh
 * TSan fiber every so many lives starts it empty again. */
#define TSAN_LIVES_MAX 1024u

static void renew_tsan_fiber(vt__fib *f)
{
    if (++f->tsan_lives < TSAN_LIVES_MAX)
        return;
    f->tsan_lives = 0;
    __tsan_destroy_fiber(f->tsan_fiber);
    f->tsan_fiber = __tsan_create_fiber(0);
}
#endif

void vt__stacks_put(vt__stacks *s, vt__fworker *fw, vt__fib *f)
{
#if defined(VT_SANITIZE_THREAD)
    renew_tsan_fiber(f);
#endif
    if (fw && f->cls->usable == s->default_size && fw->ncache < CACHE_MAX) {
        f->free_next = fw->cache;
        fw->cache = f;
        fw->ncache++;
        return;
    }
    vt__spin_lock(&s->lock);
    vt__stack_class *c = f->cls;
    f->free_next = c->free;
    c->free = f;
    c->nfree++;
    /* A full cache gives half back, so that a worker that only finishes
     * fibers does not hold the slots a spawning worker needs. */
    if (fw && fw->ncache >= CACHE_MAX) {
        while (fw->ncache > CACHE_MAX / 2) {
            vt__fib *g = fw->cache;
            fw->cache = g->free_next;
            fw->ncache--;
            g->free_next = g->cls->free;
            g->cls->free = g;
            g->cls->nfree++;
        }
    }
    vt__spin_unlock(&s->lock);
}

vt__fib *vt__stacks_lookup(vt__stacks *s, uint32_t index)
{
    uint32_t c = index >> 16, slot = index & 0xffff;
    if (c >= atomic_load_explicit(&s->nchunks, memory_order_acquire))
        return NULL;
    chunk *ch = &s->chunks[c];
    char *base = atomic_load_explicit(&ch->base, memory_order_acquire);
    if (!base || slot >= ch->slots)
        return NULL;
    return (vt__fib *)(base + (size_t)(slot + 1) * ch->stride - fib_bytes());
}

void vt__stacks_each(vt__stacks *s, void (*fn)(vt__fib *f, void *ud), void *ud)
{
    vt__spin_lock(&s->lock);
    uint32_t n = atomic_load_explicit(&s->nchunks, memory_order_relaxed);
    for (uint32_t c = 0; c < n; c++) {
        chunk *ch = &s->chunks[c];
        char *base = atomic_load_explicit(&ch->base, memory_order_relaxed);
        for (uint32_t i = 0; i < ch->used; i++)
            fn((vt__fib *)(base + (size_t)(i + 1) * ch->stride - fib_bytes()), ud);
    }
    vt__spin_unlock(&s->lock);
}

void vt__stacks_stats(vt__stacks *s, vt_runtime_stats *out)
{
    uint64_t used = 0;
    vt__spin_lock(&s->lock);
    uint32_t n = atomic_load_explicit(&s->nchunks, memory_order_relaxed);
    for (uint32_t c = 0; c < n; c++)
        used += s->chunks[c].used;
    vt__spin_unlock(&s->lock);
    out->stacks = used;
    out->stack_bytes = atomic_load_explicit(&s->bytes, memory_order_relaxed);
    out->guard_pages = atomic_load_explicit(&s->guard_count, memory_order_relaxed);
}
