/* The raw context switch: ns per switch between two contexts playing
 * ping-pong on one thread (a round trip is two switches), with no
 * scheduler around it. Each side hands the other a counter that the
 * partner increments, and the count is checked, so no switch can be lost.
 *   impl=vitte     vt__ctx_switch / vt__ctx_make (src/async/arch/: the
 *                  assembly backend of this build)
 *   impl=boost     Boost.Context's jump_fcontext / make_fcontext
 *   impl=ucontext  glibc's swapcontext, which also saves and restores the
 *                  signal mask with a system call: it runs --n / 32 round
 *                  trips so that a repetition takes about as long
 * --threads is accepted for bench/run and ignored: this is one thread. */
#include "bench.h"

#include <stdint.h>
#include <ucontext.h>

#include "../../src/async/async_int.h"
#include "../peers/async_peers.h"
#include "async_bench.h"

#define STACK_SIZE ((size_t)64 << 10)
#define UCONTEXT_DIVISOR 32

static long round_trips = 10000000;

/* The calling thread's CPU time: next to the wall-clock figure, the one a
 * busy machine disturbs less (a descheduled thread burns no CPU time). */
static int64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

typedef struct switch_ctx {
    cpu_samples cpu;
    int64_t cpu0;
} switch_ctx;

static switch_ctx ctxs[3];

static void start(bench_case *c)
{
    ((switch_ctx *)c->ctx)->cpu0 = thread_cpu_ns();
}

static int finish(bench_case *c, unsigned long got, unsigned long n, int64_t t0, int64_t t1,
                  double *ns)
{
    switch_ctx *x = c->ctx;
    int64_t cpu1 = thread_cpu_ns();
    if (got != n)
        return bench_fail(c, "the partner counted %lu round trips of %lu", got, n);
    *ns = (double)(t1 - t0) / (2.0 * (double)n);
    cpu_add(&x->cpu, c, (double)(cpu1 - x->cpu0) / (2.0 * (double)n));
    return 0;
}

/* ---- vitte ----------------------------------------------------------------- */

static vt__ctx v_main, v_partner;
static void *v_stack;

static void v_entry(void *arg)
{
    uintptr_t v = (uintptr_t)arg;
    for (;;)
        v = (uintptr_t)vt__ctx_switch(&v_partner, &v_main, (void *)(v + 1));
}

static int rep_vitte(bench_case *c, double *ns)
{
    unsigned long n = (unsigned long)round_trips;
    uintptr_t v = 0;
    start(c);
    int64_t t0 = bench_now_ns();
    for (unsigned long i = 0; i < n; i++)
        v = (uintptr_t)vt__ctx_switch(&v_main, &v_partner, (void *)v);
    int64_t t1 = bench_now_ns();
    return finish(c, (unsigned long)v, n, t0, t1, ns);
}

/* ---- ucontext ------------------------------------------------------------------ */

static ucontext_t u_main, u_partner;
static void *u_stack;
static volatile unsigned long u_count;

static void u_entry(void)
{
    for (;;) {
        u_count++;
        swapcontext(&u_partner, &u_main);
    }
}

static int rep_ucontext(bench_case *c, double *ns)
{
    unsigned long n = (unsigned long)round_trips / UCONTEXT_DIVISOR;
    n = n ? n : 1;
    u_count = 0;
    start(c);
    int64_t t0 = bench_now_ns();
    for (unsigned long i = 0; i < n; i++)
        swapcontext(&u_main, &u_partner);
    int64_t t1 = bench_now_ns();
    return finish(c, u_count, n, t0, t1, ns);
}

/* ---- Boost.Context ------------------------------------------------------------------ */

#ifdef VT_HAVE_BOOST_CONTEXT
static int rep_boost(bench_case *c, double *ns)
{
    unsigned long n = (unsigned long)round_trips;
    start(c);
    int64_t t0 = bench_now_ns();
    unsigned long got = peer_switch_boost_run(n);
    int64_t t1 = bench_now_ns();
    return finish(c, got, n, t0, t1, ns);
}
#endif

enum {
    IMPL_VITTE,
    IMPL_BOOST,
    IMPL_UCONTEXT,
    N_IMPLS
};

static const bench_impl impls[N_IMPLS] = {
    {"vitte", 1},
#ifdef VT_HAVE_BOOST_CONTEXT
    {"boost", 1},
#else
    {"boost", 0},
#endif
    {"ucontext", 1},
};

static bench_case cases[N_IMPLS];

int main(int argc, char **argv)
{
    const bench_opt opts[] = {{"--n", &round_trips, "round trips (two switches each) per rep"},
                              {NULL, NULL, NULL}};
    bench_args a;
    bench_parse(&a, argc, argv, impls, N_IMPLS, 1, opts);

    int nc = 0;
    if (a.impl_on[IMPL_VITTE]) {
        v_stack = malloc(STACK_SIZE);
        if (!v_stack) {
            fprintf(stderr, "error: out of memory\n");
            return 1;
        }
        vt__ctx_make(&v_partner, v_stack, STACK_SIZE, v_entry);
        cases[nc] = (bench_case){
            .name = "switch", .impl = "vitte", .threads = 1, .rep = rep_vitte, .ctx = &ctxs[nc]};
#if defined(VITTE_CONTEXT_UCONTEXT) || !(defined(__x86_64__) || defined(__aarch64__))
        bench_extra(&cases[nc], "backend=ucontext");
#elif defined(__x86_64__)
        bench_extra(&cases[nc], "backend=x86_64.S");
#else
        bench_extra(&cases[nc], "backend=aarch64.S");
#endif
        bench_extra(&cases[nc], "round_trips=%ld", round_trips);
        nc++;
    }
#ifdef VT_HAVE_BOOST_CONTEXT
    if (a.impl_on[IMPL_BOOST]) {
        if (peer_switch_boost_prepare(STACK_SIZE) != 0) {
            fprintf(stderr, "error: out of memory\n");
            return 1;
        }
        cases[nc] = (bench_case){
            .name = "switch", .impl = "boost", .threads = 1, .rep = rep_boost, .ctx = &ctxs[nc]};
        bench_extra(&cases[nc], "api=fcontext round_trips=%ld", round_trips);
        nc++;
    }
#endif
    if (a.impl_on[IMPL_UCONTEXT]) {
        u_stack = malloc(STACK_SIZE);
        if (!u_stack || getcontext(&u_partner) != 0) {
            fprintf(stderr, "error: cannot prepare a ucontext\n");
            return 1;
        }
        u_partner.uc_stack.ss_sp = u_stack;
        u_partner.uc_stack.ss_size = STACK_SIZE;
        u_partner.uc_link = NULL;
        makecontext(&u_partner, u_entry, 0);
        cases[nc] = (bench_case){.name = "switch",
                                 .impl = "ucontext",
                                 .threads = 1,
                                 .rep = rep_ucontext,
                                 .ctx = &ctxs[nc]};
        long n = round_trips / UCONTEXT_DIVISOR;
        bench_extra(&cases[nc], "api=swapcontext round_trips=%ld", n ? n : 1);
        nc++;
    }

    bench_run(cases, nc, &a);
    for (int i = 0; i < nc; i++)
        cpu_report(&cases[i], &ctxs[i].cpu);
    int status = bench_report(cases, nc);
    free(v_stack);
    free(u_stack);
    return status;
}
