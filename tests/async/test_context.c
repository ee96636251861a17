/* test_context.c — the context switch under the fibers (src/async/arch/):
 * vt__ctx_make / vt__ctx_switch, and the ucontext backend (vt__uctx_*)
 * wherever it is built. Values through arg in both directions, rings of
 * contexts switching straight to each other, callee-saved registers and the
 * floating-point control state kept per context, 16-byte stack alignment at
 * entry, deep recursion on a context's stack.
 *
 * Every test runs once per backend. The contexts run on the test thread
 * only; the sanitizers are told of every switch, as the fiber core tells
 * them, so that their reports stay meaningful. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fenv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vt_test.h"
#include "async/async_int.h"

/* ---- The backends ------------------------------------------------------------ */

typedef struct backend {
    const char *name;
    void (*make)(vt__ctx *c, void *stack, size_t size, vt__ctx_entry entry);
    void *(*swtch)(vt__ctx *from, vt__ctx *to, void *arg);
} backend;

static const backend backends[] = {
    {"native", vt__ctx_make, vt__ctx_switch},
    {"ucontext", vt__uctx_make, vt__uctx_switch},
};

static int backend_count(void)
{
    return vt__uctx_available() ? 2 : 1;
}

/* ---- What the sanitizers need to hear ----------------------------------------
 * Declared here rather than through the sanitizer headers, which not every
 * compiler installs. */
#if defined(VT_SANITIZE_ADDRESS)
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old,
                                     size_t *size_old);
void __asan_unpoison_memory_region(void const volatile *addr, size_t size);
#endif
#if defined(VT_SANITIZE_THREAD)
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
#endif

/* ---- Contexts ------------------------------------------------------------------ */

typedef struct co co;
typedef void *(*co_body)(co *self, void *arg);

struct co {
    vt__ctx ctx;
    char *map; /* the mapping: a guard page, then the stack */
    size_t map_size;
    char *stack; /* NULL: the test thread's own stack */
    size_t size;
    co_body body;
    co *exit_to; /* where the body's return value goes */
    int started, done;
    uintptr_t entry_frame; /* __builtin_frame_address(0) of the entry */
    uintptr_t entry_local; /* address of a 16-aligned local of the entry */
    void *user;
    /* Sanitizer state. */
    const void *bottom; /* the stack's lowest address, as ASan knows it */
    size_t bsize;
    void *fake;
    void *tsan;
};

static const backend *B; /* the backend under test */
static co main_co;       /* the test thread */
static co *cur;          /* the running context */
static co *switching_from;

/* Inlined into the function that switches: TSan's fiber switch must come
 * in the same frame as the stack switch, or the entry of one function and
 * its exit land on different fibers' shadow stacks. */
static inline __attribute__((always_inline)) void tools_leave(co *from, co *to, int last)
{
#if defined(VT_SANITIZE_ADDRESS)
    __sanitizer_start_switch_fiber(last ? NULL : &from->fake, to->bottom, to->bsize);
#else
    (void)from;
    (void)last;
#endif
#if defined(VT_SANITIZE_THREAD)
    __tsan_switch_to_fiber(to->tsan, 0);
#else
    (void)to;
#endif
}

static void tools_arrive(co *me)
{
#if defined(VT_SANITIZE_ADDRESS)
    const void *old_bottom = NULL;
    size_t old_size = 0;
    __sanitizer_finish_switch_fiber(me->fake, &old_bottom, &old_size);
    /* The thread's own stack is learnt from the first switch away from it. */
    if (switching_from && !switching_from->bottom) {
        switching_from->bottom = old_bottom;
        switching_from->bsize = old_size;
    }
#else
    (void)me;
#endif
}

/* Switches from the running context to `to`; returns what the switch that
 * resumes us passes. */
static void *co_switch(co *to, void *arg)
{
    co *me = cur;
    tools_leave(me, to, 0);
    switching_from = me;
    cur = to;
    void *r = B->swtch(&me->ctx, &to->ctx, arg);
    tools_arrive(me);
    return r;
}

/* The last switch of a context: it is never resumed. */
static __attribute__((noreturn)) void co_exit(co *to, void *arg)
{
    co *me = cur;
    tools_leave(me, to, 1);
    switching_from = me;
    cur = to;
    B->swtch(&me->ctx, &to->ctx, arg);
    fprintf(stderr, "test_context: a finished context was resumed\n");
    abort();
}

static void co_entry(void *arg)
{
    _Alignas(16) volatile char local[16];
    co *me = cur;
    me->entry_frame = (uintptr_t)__builtin_frame_address(0);
    me->entry_local = (uintptr_t)local;
    local[0] = 1;
    tools_arrive(me);
    me->started = 1;
    void *r = me->body(me, arg);
    me->done = 1;
    co_exit(me->exit_to, r);
}

static void co_begin(void)
{
    memset(&main_co, 0, sizeof main_co);
    cur = &main_co;
    switching_from = NULL;
#if defined(VT_SANITIZE_THREAD)
    main_co.tsan = __tsan_get_current_fiber();
#endif
}

/* A context on a fresh mapping of size bytes (a guard page below); the
 * context proper gets [stack, stack + size - trim). */
static int co_new(co *c, size_t size, size_t trim, co_body body, co *exit_to)
{
    memset(c, 0, sizeof *c);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size = (size + page - 1) / page * page;
    c->map_size = size + page;
    c->map = mmap(NULL, c->map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (c->map == MAP_FAILED)
        return 0;
    if (mprotect(c->map, page, PROT_NONE) != 0)
        return 0;
    c->stack = c->map + page;
    c->size = size - trim;
    c->body = body;
    c->exit_to = exit_to;
    c->bottom = c->stack;
    c->bsize = c->size;
#if defined(VT_SANITIZE_THREAD)
    c->tsan = __tsan_create_fiber(0);
#endif
    B->make(&c->ctx, c->stack, c->size, co_entry);
    return 1;
}

static void co_free(co *c)
{
    if (!c->map || c->map == MAP_FAILED)
        return;
#if defined(VT_SANITIZE_THREAD)
    if (c->tsan)
        __tsan_destroy_fiber(c->tsan);
#endif
#if defined(VT_SANITIZE_ADDRESS)
    /* The frames left on it keep their redzones poisoned; a later mapping
     * at this address must not inherit them. */
    __asan_unpoison_memory_region(c->stack, c->size);
#endif
    munmap(c->map, c->map_size);
    c->map = NULL;
}

#define EACH_BACKEND(i) \
    for (int i = 0; i < backend_count() && (B = &backends[i], co_begin(), 1); i++)

/* ---- Ping-pong ------------------------------------------------------------------ */

#define PINGS 20000

static void *pong_body(co *self, void *arg)
{
    /* The first switch's arg starts the body; each reply is 2x+1 of what
     * came in, and the next request must be the reply plus one. */
    uintptr_t v = (uintptr_t)arg;
    uintptr_t *bad = self->user;
    for (;;) {
        if (v == 0)
            return (void *)(uintptr_t)0xd0e;
        uintptr_t next = (uintptr_t)co_switch(self->exit_to, (void *)(v * 2 + 1));
        if (next != 0 && next != v * 2 + 2)
            (*bad)++;
        v = next;
    }
}

VT_TEST(ping_pong_passes_values_both_ways)
{
    EACH_BACKEND(b)
    {
        co c;
        uintptr_t bad = 0;
        VT_CHECK(co_new(&c, 64 << 10, 0, pong_body, &main_co));
        c.user = &bad;
        VT_CHECK_EQ(c.started, 0); /* make runs nothing */
        uintptr_t v = 1;
        for (int i = 0; i < PINGS; i++) {
            uintptr_t r = (uintptr_t)co_switch(&c, (void *)v);
            if (r != v * 2 + 1) {
                printf("  %s: sent %lu, got %lu\n", B->name, (unsigned long)v, (unsigned long)r);
                VT_CHECK_EQ(r, v * 2 + 1);
            }
            v = r + 1;
        }
        VT_CHECK_EQ(c.started, 1);
        VT_CHECK_EQ(c.done, 0);
        VT_CHECK_EQ((uintptr_t)co_switch(&c, NULL), 0xd0e);
        VT_CHECK_EQ(c.done, 1);
        VT_CHECK_EQ(bad, 0);
        VT_CHECK_PTR_EQ(cur, &main_co);
        co_free(&c);
    }
}

/* ---- Stack alignment at entry ----------------------------------------------------
 * The ABI wants the stack 16-byte aligned at every call: a misaligned entry
 * shows in the entry's frame address, in a 16-aligned local the compiler
 * places without realigning, and in code that uses aligned SSE stores
 * (printf of a double). Stacks whose top is not aligned are given too:
 * make must align them itself. */
static __attribute__((noinline)) uintptr_t callee_frame(void)
{
    _Alignas(16) volatile char probe[16];
    probe[0] = 0;
    return (uintptr_t)__builtin_frame_address(0) | ((uintptr_t)probe & 15);
}

static void *align_body(co *self, void *arg)
{
    (void)arg;
    uintptr_t *out = self->user;
    out[0] = callee_frame();
    /* Only on an aligned stack: on a misaligned one this would crash
     * instead of failing the checks. */
    if (self->entry_frame % 16 == 0 && out[0] % 16 == 0) {
        char text[64];
        snprintf(text, sizeof text, "%.3f %Lf", 2.0 / 3.0, (long double)1 / 7);
        out[1] = strncmp(text, "0.667 0.142857", 14) == 0;
    }
    return NULL;
}

VT_TEST(stack_aligned_at_entry)
{
    static const size_t trims[] = {0, 1, 4, 8, 12, 15, 24, 33};
    EACH_BACKEND(b)
    {
        for (size_t t = 0; t < sizeof trims / sizeof trims[0]; t++) {
            co c;
            uintptr_t out[2] = {0, 0};
            VT_CHECK(co_new(&c, 64 << 10, trims[t], align_body, &main_co));
            c.user = out;
            co_switch(&c, NULL);
            VT_CHECK(c.done);
            if (c.entry_frame % 16 || c.entry_local % 16 || out[0] % 16)
                printf("  %s, top trimmed by %zu: entry frame %#lx, local %#lx, callee %#lx\n",
                       B->name, trims[t], (unsigned long)c.entry_frame,
                       (unsigned long)c.entry_local, (unsigned long)out[0]);
            VT_CHECK_EQ(c.entry_frame % 16, 0);
            VT_CHECK_EQ(c.entry_local % 16, 0);
            VT_CHECK_EQ(out[0] % 16, 0);
            VT_CHECK_EQ(out[1], 1);
            /* Everything the context used lies inside its stack. */
            VT_CHECK_GE(c.entry_frame, (uintptr_t)c.stack);
            VT_CHECK_LE(c.entry_frame, (uintptr_t)c.stack + c.size);
            co_free(&c);
        }
    }
}

/* Pointers, not only small integers, go through arg unchanged. */
static void *echo_body(co *self, void *arg)
{
    while (arg)
        arg = co_switch(self->exit_to, arg);
    return self;
}

VT_TEST(arg_carries_any_pointer)
{
    void *vals[] = {(void *)(uintptr_t)1, (void *)&main_co, (void *)(uintptr_t)UINTPTR_MAX,
                    (void *)(uintptr_t)0x8000000000000001ull, (void *)(uintptr_t)0xfffff000u};
    EACH_BACKEND(b)
    {
        co c;
        VT_CHECK(co_new(&c, 64 << 10, 0, echo_body, &main_co));
        for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
            VT_CHECK_PTR_EQ(co_switch(&c, vals[i]), vals[i]);
        VT_CHECK_PTR_EQ(co_switch(&c, NULL), &c);
        co_free(&c);
    }
}

/* ---- A ring of contexts switching to each other -------------------------------
 * Context i receives the hop count h (h % n == i), checks it and passes h+1
 * to context i+1, never through the test thread. The last hop goes to the
 * test thread; then each context is resumed once more with QUIT and ends. */
#define QUIT ((void *)(uintptr_t)-1)

typedef struct ring {
    co *cs;
    int n;
    uintptr_t hops;  /* total hops before returning to the test thread */
    uintptr_t *seen; /* receipts per context */
    uintptr_t bad;
} ring;

static ring R;

static void *ring_body(co *self, void *arg)
{
    int i = (int)(self - R.cs);
    for (;;) {
        if (arg == QUIT)
            return (void *)(uintptr_t)(i + 1000);
        uintptr_t h = (uintptr_t)arg;
        if (h % (uintptr_t)R.n != (uintptr_t)i)
            R.bad++;
        R.seen[i]++;
        co *next = h + 1 == R.hops ? &main_co : &R.cs[(i + 1) % R.n];
        arg = co_switch(next, (void *)(h + 1));
    }
}

VT_TEST(ring_of_many_contexts)
{
#if defined(VT_SANITIZE_THREAD)
    const int n = 100, rounds = 50; /* a TSan fiber per context costs milliseconds */
#else
    const int n = 1000, rounds = 20;
#endif
    EACH_BACKEND(b)
    {
        memset(&R, 0, sizeof R);
        R.n = n;
        R.hops = (uintptr_t)n * rounds;
        R.cs = calloc((size_t)n, sizeof(co));
        R.seen = calloc((size_t)n, sizeof(uintptr_t));
        VT_CHECK(R.cs && R.seen);
        for (int i = 0; i < n; i++)
            VT_CHECK(co_new(&R.cs[i], 32 << 10, 0, ring_body, &main_co));
        VT_CHECK_EQ((uintptr_t)co_switch(&R.cs[0], (void *)0), R.hops);
        VT_CHECK_EQ(R.bad, 0);
        for (int i = 0; i < n; i++)
            VT_CHECK_EQ(R.seen[i], (uintptr_t)rounds);
        for (int i = 0; i < n; i++) {
            VT_CHECK_EQ((uintptr_t)co_switch(&R.cs[i], QUIT), (uintptr_t)(i + 1000));
            VT_CHECK(R.cs[i].done);
        }
        for (int i = 0; i < n; i++)
            co_free(&R.cs[i]);
        free(R.cs);
        free(R.seen);
    }
}

/* ---- Callee-saved registers, as the compiler uses them --------------------------
 * Eight values live across each switch: at -O1 and above the compiler keeps
 * as many as it can in callee-saved registers (x86-64 has six, AArch64 ten),
 * and the peer does the same with its own values. The result is compared
 * with the same computation made with a switch that only returns what the
 * peer would have answered. */
typedef void *(*answer_fn)(co *peer, void *arg);

static uintptr_t peer_answer(uintptr_t x)
{
    return x * 0x9e3779b97f4a7c15ull + 7;
}

static void *answer_by_switch(co *peer, void *arg)
{
    return co_switch(peer, arg);
}

static void *answer_in_place(co *peer, void *arg)
{
    (void)peer;
    return (void *)peer_answer((uintptr_t)arg);
}

static __attribute__((noinline)) uint64_t keep_live(answer_fn ask, co *peer, uint64_t s, int n)
{
    uint64_t a = s * 3 + 1, b = a ^ (s << 7), c = b * 0xff51afd7ed558ccdull, d = c ^ (c >> 29);
    uint64_t e = d + 0x2545f4914f6cdd1dull, f = e * 5 ^ a, g = f + b * 11, h = g ^ (d << 3);
    for (int i = 0; i < n; i++) {
        uint64_t r = (uint64_t)(uintptr_t)ask(peer, (void *)(uintptr_t)(a ^ h ^ (uint64_t)i));
        a += b ^ r;
        b = (b << 13 | b >> 51) + c;
        c ^= d * 3;
        d += e ^ (e >> 11);
        e = e * 7 + f;
        f ^= g + r;
        g += h << 1;
        h = (h ^ a) * 0x9e3779b97f4a7c15ull;
    }
    return a ^ b ^ c ^ d ^ e ^ f ^ g ^ h;
}

/* One step of the peer's own computation: a macro, so that the peer keeps
 * its eight values in locals and the check replays the same arithmetic. */
#define PEER_STEP(a, b, c, d, e, f, g, h, x) \
    do {                                     \
        a += (x);                            \
        b ^= a * 3;                          \
        c += b >> 5;                         \
        d ^= c * 7;                          \
        e += d >> 3;                         \
        f ^= e * 11;                         \
        g += f >> 7;                         \
        h ^= g * 13;                         \
    } while (0)
#define PEER_INIT(a, b, c, d, e, f, g, h)                                            \
    uint64_t a = 0xabcdef * 5 + 3, b = a ^ 0x1234567, c = b * 0xc4ceb9fe1a85ec53ull; \
    uint64_t d = c ^ (c >> 31), e = d + 99, f = e * 3 ^ b, g = f + c, h = g ^ a

typedef struct peer_log {
    uint64_t xs[256];
    int n;
    uint64_t sum;
} peer_log;

/* The peer answers each request, with its own eight live values. */
static void *busy_peer_body(co *self, void *arg)
{
    PEER_INIT(a, b, c, d, e, f, g, h);
    peer_log *log = self->user;
    while (arg != QUIT) {
        uint64_t x = (uint64_t)(uintptr_t)arg;
        if (log->n < 256)
            log->xs[log->n++] = x;
        PEER_STEP(a, b, c, d, e, f, g, h, x);
        arg = co_switch(self->exit_to, (void *)peer_answer((uintptr_t)x));
    }
    log->sum = a ^ b ^ c ^ d ^ e ^ f ^ g ^ h;
    return NULL;
}

VT_TEST(callee_saved_values_survive_switches)
{
    EACH_BACKEND(bk)
    {
        for (int round = 0; round < 20; round++) {
            uint64_t seed = vt_test_rand();
            peer_log log;
            memset(&log, 0, sizeof log);
            co peer;
            VT_CHECK(co_new(&peer, 64 << 10, 0, busy_peer_body, &main_co));
            peer.user = &log;
            uint64_t want = keep_live(answer_in_place, NULL, seed, 200);
            uint64_t got = keep_live(answer_by_switch, &peer, seed, 200);
            co_switch(&peer, QUIT);
            VT_CHECK(peer.done);
            co_free(&peer);
            if (got != want)
                printf("  %s: seed %llu\n", B->name, (unsigned long long)seed);
            VT_CHECK_EQ(got, want);
            /* The peer's values, recomputed from what it was sent. */
            VT_CHECK_EQ(log.n, 200);
            PEER_INIT(a, b, c, d, e, f, g, h);
            for (int i = 0; i < log.n; i++)
                PEER_STEP(a, b, c, d, e, f, g, h, log.xs[i]);
            VT_CHECK_EQ(log.sum, a ^ b ^ c ^ d ^ e ^ f ^ g ^ h);
        }
    }
}

/* ---- Callee-saved registers, set by hand (x86-64) -------------------------------
 * Both sides load known values into rbx, rbp and r12-r15, switch, and read
 * the registers back when they are resumed: each must find its own values,
 * whatever the other side left in them. */
#if defined(__x86_64__)
typedef struct regblk {
    uint64_t in[6];  /* rbx rbp r12 r13 r14 r15 loaded before the switch */
    uint64_t out[6]; /* the same registers when resumed */
    vt__ctx *from;   /* 96 */
    vt__ctx *to;     /* 104 */
    void *arg;       /* 112 */
    void *ret;       /* 120 */
    void *(*fn)(vt__ctx *, vt__ctx *, void *); /* 128 */
} regblk;
_Static_assert(offsetof(regblk, from) == 96 && offsetof(regblk, fn) == 128, "asm offsets");

static __attribute__((noinline)) void reg_switch_raw(regblk *blk)
{
    /* Below the red zone, aligned for the call; the original stack pointer
     * and the frame pointer come back from the stack afterwards. */
    __asm__ volatile("leaq -128(%%rsp), %%rsp\n\t"
                     "pushq %%rbp\n\t"
                     "movq %%rsp, %%rax\n\t"
                     "andq $-16, %%rsp\n\t"
                     "pushq %%rax\n\t"
                     "pushq %%rcx\n\t"
                     "movq 0(%%rcx), %%rbx\n\t"
                     "movq 8(%%rcx), %%rbp\n\t"
                     "movq 16(%%rcx), %%r12\n\t"
                     "movq 24(%%rcx), %%r13\n\t"
                     "movq 32(%%rcx), %%r14\n\t"
                     "movq 40(%%rcx), %%r15\n\t"
                     "movq 96(%%rcx), %%rdi\n\t"
                     "movq 104(%%rcx), %%rsi\n\t"
                     "movq 112(%%rcx), %%rdx\n\t"
                     "callq *128(%%rcx)\n\t"
                     "movq (%%rsp), %%rcx\n\t"
                     "movq %%rax, 120(%%rcx)\n\t"
                     "movq %%rbx, 48(%%rcx)\n\t"
                     "movq %%rbp, 56(%%rcx)\n\t"
                     "movq %%r12, 64(%%rcx)\n\t"
                     "movq %%r13, 72(%%rcx)\n\t"
                     "movq %%r14, 80(%%rcx)\n\t"
                     "movq %%r15, 88(%%rcx)\n\t"
                     "popq %%rcx\n\t"
                     "popq %%rsp\n\t"
                     "popq %%rbp\n\t"
                     "leaq 128(%%rsp), %%rsp\n\t"
                     : "+c"(blk)
                     :
                     : "rax", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "rbx", "r12", "r13",
                       "r14", "r15", "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5",
                       "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14",
                       "xmm15");
}

/* co_switch with the registers set by hand; returns 1 when all six came
 * back as they were loaded. */
static int reg_switch(co *to, void *arg, void **ret, uint64_t salt)
{
    co *me = cur;
    regblk blk;
    memset(&blk, 0, sizeof blk);
    for (int i = 0; i < 6; i++)
        blk.in[i] = vt_hash_mix64(salt * 8 + (uint64_t)i) | 1;
    blk.from = &me->ctx;
    blk.to = &to->ctx;
    blk.arg = arg;
    blk.fn = B->swtch;
    tools_leave(me, to, 0);
    switching_from = me;
    cur = to;
    reg_switch_raw(&blk);
    tools_arrive(me);
    *ret = blk.ret;
    return memcmp(blk.in, blk.out, sizeof blk.in) == 0;
}

static void *reg_peer_body(co *self, void *arg)
{
    int *bad = self->user;
    uint64_t salt = 1u << 20;
    while (arg != QUIT) {
        void *next;
        /* Compiled code in between, to disturb whatever it likes. */
        char text[64];
        snprintf(text, sizeof text, "%p %f", arg, (double)(uintptr_t)arg / 3.0);
        if (!reg_switch(self->exit_to, (void *)((uintptr_t)arg + 1), &next, salt++))
            (*bad)++;
        if ((uintptr_t)next != (uintptr_t)arg + 2 && next != QUIT)
            (*bad)++;
        arg = next;
    }
    return NULL;
}
#endif

VT_TEST(callee_saved_registers_exact)
{
#if defined(__x86_64__)
    EACH_BACKEND(b)
    {
        int peer_bad = 0, bad = 0;
        co c;
        VT_CHECK(co_new(&c, 64 << 10, 0, reg_peer_body, &main_co));
        c.user = &peer_bad;
        uintptr_t v = 10;
        for (int i = 0; i < 500; i++) {
            void *r;
            if (!reg_switch(&c, (void *)v, &r, (uint64_t)i))
                bad++;
            if ((uintptr_t)r != v + 1)
                bad++;
            v = (uintptr_t)r + 1;
        }
        co_switch(&c, QUIT);
        VT_CHECK(c.done);
        co_free(&c);
        if (bad || peer_bad)
            printf("  %s: %d bad resumptions here, %d in the peer\n", B->name, bad, peer_bad);
        VT_CHECK_EQ(bad, 0);
        VT_CHECK_EQ(peer_bad, 0);
    }
#else
    VT_SKIP("registers set by hand on x86-64 only; callee_saved_values_survive_switches covers the "
            "rest");
#endif
}

/* ---- Floating-point control state ------------------------------------------------
 * Each context sets its own rounding mode; after every switch it must still
 * have it, both in the control word that fegetround reads and in the one
 * the arithmetic uses: 1/3, 1/10 and -1/3 round differently under each of
 * the four modes (to nearest, 1/3 rounds down and 1/10 up). x87 and SSE
 * keep separate control words on x86-64; fegetround reads the x87 one. */
static const int modes[4] = {FE_TONEAREST, FE_UPWARD, FE_DOWNWARD, FE_TOWARDZERO};
static double quot[4][3]; /* the three quotients under each mode */

static void quotients(double q[3])
{
    volatile double one = 1.0, three = 3.0, ten = 10.0, minus_one = -1.0;
    volatile double r;
    r = one / three;
    q[0] = r;
    r = one / ten;
    q[1] = r;
    r = minus_one / three;
    q[2] = r;
}

static int mode_holds(int m)
{
    double q[3];
    quotients(q);
    return fegetround() == modes[m] && q[0] == quot[m][0] && q[1] == quot[m][1] &&
           q[2] == quot[m][2];
}

typedef struct fp_state {
    int bad;
    int initial_mode; /* the mode the context found at its start */
} fp_state;

static void *fp_body(co *self, void *arg)
{
    fp_state *st = self->user;
    st->initial_mode = fegetround();
    int m = (int)(uintptr_t)arg;
    fesetround(modes[m]);
    while ((arg = co_switch(self->exit_to, NULL)) != QUIT)
        if (!mode_holds(m))
            st->bad++;
    fesetround(FE_TONEAREST);
    return NULL;
}

VT_TEST(fp_rounding_mode_is_per_context)
{
    for (int m = 0; m < 4; m++) {
        VT_CHECK_EQ(fesetround(modes[m]), 0);
        quotients(quot[m]);
    }
    VT_CHECK_EQ(fesetround(FE_TONEAREST), 0);
    /* The premise: the four modes are told apart by the quotients. */
    for (int m = 0; m < 4; m++)
        for (int k = m + 1; k < 4; k++)
            VT_CHECK(memcmp(quot[m], quot[k], sizeof quot[m]) != 0);

    enum {
        N = 8
    };
    EACH_BACKEND(bk)
    {
        co cs[N];
        fp_state st[N];
        memset(st, 0, sizeof st);
        /* Made under FE_UPWARD, started under FE_DOWNWARD: a new context
         * starts with the mode its maker had at vt__ctx_make. */
        VT_CHECK_EQ(fesetround(FE_UPWARD), 0);
        for (int i = 0; i < N; i++) {
            VT_CHECK(co_new(&cs[i], 64 << 10, 0, fp_body, &main_co));
            cs[i].user = &st[i];
        }
        VT_CHECK_EQ(fesetround(FE_DOWNWARD), 0);
        for (int i = 0; i < N; i++)
            co_switch(&cs[i], (void *)(uintptr_t)(i % 4));
        for (int i = 0; i < N; i++)
            VT_CHECK_EQ(st[i].initial_mode, FE_UPWARD);
        /* The test thread keeps its own mode meanwhile. */
        VT_CHECK_EQ(fesetround(FE_TOWARDZERO), 0);
        int bad = 0;
        for (int round = 0; round < 50; round++) {
            for (int k = 0; k < N; k++) {
                int i = (int)(vt_test_rand() % N);
                co_switch(&cs[i], NULL);
                bad += !mode_holds(3);
            }
        }
        VT_CHECK_EQ(fesetround(FE_TONEAREST), 0);
        for (int i = 0; i < N; i++) {
            co_switch(&cs[i], QUIT);
            VT_CHECK(cs[i].done);
            co_free(&cs[i]);
        }
        VT_CHECK(mode_holds(0));
        for (int i = 0; i < N; i++)
            VT_CHECK_EQ(st[i].bad, 0);
        VT_CHECK_EQ(bad, 0);
    }
    fesetround(FE_TONEAREST);
}

/* ---- Deep recursion on a context's stack ------------------------------------------
 * A recursion a few thousand frames deep, which switches to the test thread
 * at its deepest point and unwinds after being resumed; the result is the
 * same as on the thread's own stack. */
static int deep_switch; /* 1: switch out at the bottom */
static co *deep_partner;
static uintptr_t deep_seen;

static __attribute__((noinline)) uint64_t deep(int n, uint64_t acc)
{
    volatile uint64_t pad[8];
    for (int i = 0; i < 8; i++)
        pad[i] = acc + (uint64_t)(i * n);
    if (n == 0) {
        if (deep_switch)
            deep_seen = (uintptr_t)co_switch(deep_partner, (void *)(uintptr_t)acc);
        return acc;
    }
    uint64_t r = deep(n - 1, vt_hash_mix64(acc + (uint64_t)n));
    return r ^ pad[n % 8] ^ (uint64_t)n;
}

static void *deep_body(co *self, void *arg)
{
    uint64_t *out = self->user;
    *out = deep((int)(uintptr_t)arg, 77);
    return NULL;
}

VT_TEST(deep_recursion_inside_a_context)
{
    const int depth = 5000;
    deep_switch = 0;
    uint64_t want = deep(depth, 77);
    EACH_BACKEND(b)
    {
        co c;
        uint64_t got = 0;
        VT_CHECK(co_new(&c, 4 << 20, 0, deep_body, &main_co));
        c.user = &got;
        deep_switch = 1;
        deep_partner = &main_co;
        deep_seen = 0;
        /* Out at the bottom, carrying the accumulator... */
        uintptr_t acc = (uintptr_t)co_switch(&c, (void *)(uintptr_t)depth);
        VT_CHECK_EQ(c.done, 0);
        VT_CHECK_NE(acc, 0);
        /* ...and back in to unwind all of it. */
        co_switch(&c, (void *)(uintptr_t)0x5eed);
        deep_switch = 0;
        VT_CHECK(c.done);
        VT_CHECK_EQ(deep_seen, 0x5eed);
        VT_CHECK_EQ(got, want);
        co_free(&c);
    }
}

/* ---- Contexts made, run and dropped in a loop ------------------------------------
 * A context that finished leaves nothing behind that the next one made on
 * the same memory could trip over. */
static void *short_body(co *self, void *arg)
{
    (void)self;
    return (void *)((uintptr_t)arg * 3);
}

/* TSan makes a fiber of its own for each context, which costs milliseconds. */
#if defined(VT_SANITIZE_THREAD)
#define REMAKES 100
#else
#define REMAKES 2000
#endif

VT_TEST(remake_on_the_same_stack)
{
    EACH_BACKEND(b)
    {
        co c;
        VT_CHECK(co_new(&c, 32 << 10, 0, short_body, &main_co));
        for (uintptr_t i = 1; i <= REMAKES; i++) {
            c.done = 0;
#if defined(VT_SANITIZE_ADDRESS)
            /* The finished context's last frames never returned: their
             * redzones are still poisoned, as a fiber's are when its stack
             * goes back to the pool. */
            __asan_unpoison_memory_region(c.stack, c.size);
#endif
            B->make(&c.ctx, c.stack, c.size, co_entry);
#if defined(VT_SANITIZE_THREAD)
            __tsan_destroy_fiber(c.tsan);
            c.tsan = __tsan_create_fiber(0);
#endif
            VT_CHECK_EQ((uintptr_t)co_switch(&c, (void *)i), i * 3);
            VT_CHECK(c.done);
        }
        co_free(&c);
    }
}
