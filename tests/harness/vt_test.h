/* vt_test.h — vitte's test harness: a table of tests, checks that print both
 * values, a per-test deadline that names the hung test, optional fork
 * isolation, a replayable seed and an allocator that counts and can fail.
 *
 * One test executable per tests/<layer>/test_<module>.c; this header defines
 * main(), so include it from exactly one file of each executable.
 *
 *   VT_TEST(push_pop) { VT_CHECK_EQ(vt_deque_len(d), 0); }
 *
 * A failed check reports and returns from the function it is in: use checks
 * in the test body or in helpers returning void, never in thread entry
 * functions (record a result there and check it after the join). Checks may
 * run on any thread; their failures are counted for the running test.
 *
 * Runner: prog [--list] [--fork] [NAME|GLOB ...]
 *   --list   print the test names, one a line, and exit
 *   --fork   run each test in a child process, so a crash fails one test
 *   NAME     run only the tests matching these names (fnmatch globs)
 * Environment:
 *   VT_TEST_SEED=N          replay a run (the seed is printed first)
 *   VT_TEST_TIMEOUT_MULT=X  scale the per-test deadline (default 1; may be
 *                           fractional); the base is VT_TEST_TIMEOUT_S seconds
 *                           (60 unless the file defines it before including)
 *   VT_TEST_STRESS=N        multiply the work of stress tests (vt_test_stress)
 * Output ends with "N passed, N failed" (", N skipped" when any); the exit
 * status is 1 when a test failed, 2 on a usage error, 0 otherwise. */
#ifndef VT_TEST_H
#define VT_TEST_H

#include <errno.h>
#include <fnmatch.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vitte/base.h"

/* Unused helpers must not warn in a file that does not need them. */
#define VT__FN static __attribute__((unused))

#ifndef VT_TEST_TIMEOUT_S
#define VT_TEST_TIMEOUT_S 60
#endif

/* ---- Public API ---------------------------------------------------------- */

VT__FN uint64_t vt_test_seed(void);
/* A deterministic stream per test, derived from the seed and the test's
 * name: the same seed replays the same values. Thread: any (the order in
 * which threads draw is theirs to make deterministic). */
VT__FN uint64_t vt_test_rand(void);
VT__FN unsigned vt_test_stress(void);

/* The counting allocator, installed with vt_set_allocator before the first
 * test. The k-th allocation (or realloc) from now fails, k >= 1; 0
 * disables. Only that one fails: an OOM loop raises k until the call
 * succeeds. */
VT__FN void vt_test_alloc_fail_at(long k);
/* Allocation attempts (including the failed one) since the last
 * vt_test_alloc_fail_at or vt_test_alloc_reset. */
VT__FN long vt_test_alloc_count(void);
/* Blocks currently allocated through the hook, across tests. */
VT__FN long vt_test_alloc_live(void);
/* Clears the fail point and the count; the live count is never reset. */
VT__FN void vt_test_alloc_reset(void);
/* Reinstalls the counting allocator: a test that replaced it with
 * vt_set_allocator calls this when it is done. */
VT__FN void vt_test_alloc_install(void);

typedef struct vt__test {
    const char *name;
    void (*fn)(void);
    struct vt__test *next;
} vt__test;

VT__FN void vt__register(vt__test *t);
VT__FN void vt__fail(const char *file, int line, const char *fmt, ...) VT_PRINTF(3, 4);
VT__FN void vt__skip(const char *why);
VT__FN int vt__str_eq(const char *a, const char *b);
VT__FN const char *vt__q(const char *s);

/* Registered by a constructor so that a test only has to be written once;
 * tests run in the order of the file. */
#define VT_TEST(name)                                             \
    static void vt__fn_##name(void);                              \
    static vt__test vt__t_##name = {#name, vt__fn_##name, NULL};  \
    __attribute__((constructor)) static void vt__reg_##name(void) \
    {                                                             \
        vt__register(&vt__t_##name);                              \
    }                                                             \
    static void vt__fn_##name(void)

#define VT__FAIL(...)                              \
    do {                                           \
        vt__fail(__FILE__, __LINE__, __VA_ARGS__); \
        return;                                    \
    } while (0)

#define VT_CHECK(c)                              \
    do {                                         \
        if (!(c))                                \
            VT__FAIL("VT_CHECK(%s) failed", #c); \
    } while (0)

/* The usual arithmetic conversions of a + b decide whether both sides are
 * compared as unsigned long long or as long long, as C would compare them;
 * the _Generic operand is not evaluated, so each side runs once. */
#define VT__UNSIGNED(x) \
    _Generic((x), unsigned int : 1, unsigned long : 1, unsigned long long : 1, default : 0)

#define VT__CMP(macro, a, op, b)                                                                  \
    do {                                                                                          \
        if (VT__UNSIGNED((a) + (b))) {                                                            \
            unsigned long long vt__a = (unsigned long long)(a);                                   \
            unsigned long long vt__b = (unsigned long long)(b);                                   \
            if (!(vt__a op vt__b))                                                                \
                VT__FAIL(macro "(%s, %s) failed: %llu vs %llu (0x%llx vs 0x%llx)", #a, #b, vt__a, \
                         vt__b, vt__a, vt__b);                                                    \
        } else {                                                                                  \
            long long vt__a = (long long)(a);                                                     \
            long long vt__b = (long long)(b);                                                     \
            if (!(vt__a op vt__b))                                                                \
                VT__FAIL(macro "(%s, %s) failed: %lld vs %lld", #a, #b, vt__a, vt__b);            \
        }                                                                                         \
    } while (0)

#define VT_CHECK_EQ(a, b) VT__CMP("VT_CHECK_EQ", a, ==, b)
#define VT_CHECK_NE(a, b) VT__CMP("VT_CHECK_NE", a, !=, b)
#define VT_CHECK_LT(a, b) VT__CMP("VT_CHECK_LT", a, <, b)
#define VT_CHECK_LE(a, b) VT__CMP("VT_CHECK_LE", a, <=, b)
#define VT_CHECK_GT(a, b) VT__CMP("VT_CHECK_GT", a, >, b)
#define VT_CHECK_GE(a, b) VT__CMP("VT_CHECK_GE", a, >=, b)

#define VT_CHECK_STR_EQ(a, b)                                                                    \
    do {                                                                                         \
        const char *vt__a = (a), *vt__b = (b);                                                   \
        if (!vt__str_eq(vt__a, vt__b))                                                           \
            VT__FAIL("VT_CHECK_STR_EQ(%s, %s) failed: %s%s%s vs %s%s%s", #a, #b, vt__q(vt__a),   \
                     vt__a ? vt__a : "NULL", vt__q(vt__a), vt__q(vt__b), vt__b ? vt__b : "NULL", \
                     vt__q(vt__b));                                                              \
    } while (0)

#define VT_CHECK_PTR_EQ(a, b)                                                           \
    do {                                                                                \
        const void *vt__a = (a), *vt__b = (b);                                          \
        if (vt__a != vt__b)                                                             \
            VT__FAIL("VT_CHECK_PTR_EQ(%s, %s) failed: %p vs %p", #a, #b, vt__a, vt__b); \
    } while (0)

#define VT_CHECK_NULL(p)                                         \
    do {                                                         \
        const void *vt__p = (p);                                 \
        if (vt__p != NULL)                                       \
            VT__FAIL("VT_CHECK_NULL(%s) failed: %p", #p, vt__p); \
    } while (0)

#define VT_CHECK_NOT_NULL(p)                              \
    do {                                                  \
        if ((p) == NULL)                                  \
            VT__FAIL("VT_CHECK_NOT_NULL(%s) failed", #p); \
    } while (0)

#define VT_CHECK_OK(err)                                                         \
    do {                                                                         \
        vt_err vt__e = (err);                                                    \
        if (vt__e != VT_OK)                                                      \
            VT__FAIL("VT_CHECK_OK(%s) failed: %s (%s)", #err, vt_errname(vt__e), \
                     vt_strerror(vt__e));                                        \
    } while (0)

#define VT_CHECK_ERR(err, want)                                                        \
    do {                                                                               \
        vt_err vt__e = (err), vt__w = (want);                                          \
        if (vt__e != vt__w)                                                            \
            VT__FAIL("VT_CHECK_ERR(%s, %s) failed: got %s (%s), want %s", #err, #want, \
                     vt_errname(vt__e), vt_strerror(vt__e), vt_errname(vt__w));        \
    } while (0)

#define VT_SKIP(why)   \
    do {               \
        vt__skip(why); \
        return;        \
    } while (0)

/* ---- Implementation -------------------------------------------------------
 * All state of the harness lives in this one object; the counters touched
 * by the test's own threads are atomic, the rest belongs to the runner. */
static struct {
    vt__test *first, **tail;
    const vt__test *cur;
    _Atomic int failed; /* failed checks in the current test */
    _Atomic int skipped;
    char skip_why[256];
    uint64_t seed;
    _Atomic uint64_t rand_state;
    unsigned stress;
    double timeout_s;
    int passed_total, failed_total, skipped_total;
    _Atomic long alloc_count, alloc_fail_at, alloc_live;
    /* The watchdog: a thread rather than alarm(), because ThreadSanitizer
     * defers a signal until the thread enters an intercepted call, which a
     * test spinning or blocked in a raw futex never does. */
    pthread_mutex_t wd_mu;
    pthread_cond_t wd_cv;
    pthread_t wd_thread;
    int wd_running, wd_stop, wd_armed, in_child;
    struct timespec wd_deadline;
} vt__h = {.tail = &vt__h.first,
           .wd_mu = PTHREAD_MUTEX_INITIALIZER,
           .stress = 1,
           .timeout_s = VT_TEST_TIMEOUT_S};

VT__FN void vt__register(vt__test *t)
{
    *vt__h.tail = t;
    vt__h.tail = &t->next;
}

VT__FN void vt__fail(const char *file, int line, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    atomic_fetch_add(&vt__h.failed, 1);
    /* One call, so lines from several threads do not interleave. */
    printf("  %s:%d: %s: %s\n", file, line, vt__h.cur ? vt__h.cur->name : "?", msg);
    fflush(stdout);
}

VT__FN void vt__skip(const char *why)
{
    snprintf(vt__h.skip_why, sizeof vt__h.skip_why, "%s", why ? why : "");
    atomic_store(&vt__h.skipped, 1);
}

VT__FN int vt__str_eq(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

VT__FN const char *vt__q(const char *s)
{
    return s ? "\"" : "";
}

VT__FN uint64_t vt__mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

VT__FN uint64_t vt_test_seed(void)
{
    return vt__h.seed;
}

/* SplitMix64: the state is a counter, so one atomic add makes the stream
 * safe to draw from several threads. */
VT__FN uint64_t vt_test_rand(void)
{
    return vt__mix(atomic_fetch_add(&vt__h.rand_state, 0x9e3779b97f4a7c15ULL) +
                   0x9e3779b97f4a7c15ULL);
}

VT__FN unsigned vt_test_stress(void)
{
    return vt__h.stress;
}

/* ---- The counting allocator ----------------------------------------------
 * Each block carries its size in front, so a vt_free or vt_realloc given the
 * wrong old size fails the test instead of passing silently. The header is
 * a max_align_t multiple, keeping the promised alignment. */
#define VT__MAGIC 0x7674616c6c6f6321ULL
typedef union vt__hdr {
    max_align_t align;
    struct {
        size_t size;
        uint64_t magic;
    } h;
} vt__hdr;

VT__FN void *vt__alloc_hook(void *ud, void *ptr, size_t old_size, size_t new_size)
{
    vt__hdr *hdr = ptr ? (vt__hdr *)ptr - 1 : NULL;
    (void)ud;
    if (hdr) {
        if (hdr->h.magic != VT__MAGIC) {
            fprintf(stderr,
                    "vt_test: %p was not allocated by the test allocator "
                    "(freed twice, or by another allocator)\n",
                    ptr);
            abort();
        }
        if (hdr->h.size != old_size) {
            atomic_fetch_add(&vt__h.failed, 1);
            printf("  %s: block %p of %zu bytes released as %zu bytes\n",
                   vt__h.cur ? vt__h.cur->name : "?", ptr, hdr->h.size, old_size);
        }
    }
    if (new_size == 0) {
        if (hdr) {
            hdr->h.magic = 0;
            free(hdr);
            atomic_fetch_sub(&vt__h.alloc_live, 1);
        }
        return NULL;
    }
    long n = atomic_fetch_add(&vt__h.alloc_count, 1) + 1;
    if (n == atomic_load(&vt__h.alloc_fail_at))
        return NULL;
    if (new_size > SIZE_MAX - sizeof(vt__hdr))
        return NULL;
    vt__hdr *nh = realloc(hdr, sizeof(vt__hdr) + new_size);
    if (!nh)
        return NULL;
    nh->h.size = new_size;
    nh->h.magic = VT__MAGIC;
    if (!hdr)
        atomic_fetch_add(&vt__h.alloc_live, 1);
    return nh + 1;
}

VT__FN void vt_test_alloc_fail_at(long k)
{
    atomic_store(&vt__h.alloc_count, 0);
    atomic_store(&vt__h.alloc_fail_at, k > 0 ? k : 0);
}

VT__FN long vt_test_alloc_count(void)
{
    return atomic_load(&vt__h.alloc_count);
}

VT__FN long vt_test_alloc_live(void)
{
    return atomic_load(&vt__h.alloc_live);
}

VT__FN void vt_test_alloc_reset(void)
{
    vt_test_alloc_fail_at(0);
}

VT__FN void vt_test_alloc_install(void)
{
    vt_set_allocator(vt__alloc_hook, NULL);
}

enum {
    VT__PASS,
    VT__FAILED,
    VT__SKIPPED
};
#define VT__EXIT_SKIP 77
#define VT__EXIT_TIMEOUT 124

/* ---- The watchdog ---------------------------------------------------------- */

/* The hung test's thread may hold stdout's lock, so the watchdog formats
 * into its own buffer and writes straight to the descriptor. */
VT__FN void *vt__watchdog(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&vt__h.wd_mu);
    while (!vt__h.wd_stop) {
        if (!vt__h.wd_armed) {
            pthread_cond_wait(&vt__h.wd_cv, &vt__h.wd_mu);
            continue;
        }
        if (pthread_cond_timedwait(&vt__h.wd_cv, &vt__h.wd_mu, &vt__h.wd_deadline) != ETIMEDOUT ||
            !vt__h.wd_armed)
            continue;
        char buf[512];
        int n = snprintf(buf, sizeof buf,
                         "[ FAIL ] %s: TIMEOUT, still running after %.1f s "
                         "(VT_TEST_TIMEOUT_MULT scales it)\n",
                         vt__h.cur->name, vt__h.timeout_s);
        /* A forked child leaves the summary to its parent. */
        if (!vt__h.in_child && n > 0 && (size_t)n < sizeof buf) {
            int k = snprintf(buf + n, sizeof buf - (size_t)n, "%d passed, %d failed",
                             vt__h.passed_total, vt__h.failed_total + 1);
            n += k > 0 ? k : 0;
            if (vt__h.skipped_total && (size_t)n < sizeof buf)
                n += snprintf(buf + n, sizeof buf - (size_t)n, ", %d skipped", vt__h.skipped_total);
            if ((size_t)n < sizeof buf - 1)
                buf[n++] = '\n';
        }
        if (n > 0 && write(1, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1) < 0)
            break;
        _exit(vt__h.in_child ? VT__EXIT_TIMEOUT : 1);
    }
    pthread_mutex_unlock(&vt__h.wd_mu);
    return NULL;
}

VT__FN void vt__watchdog_start(void)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&vt__h.wd_cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&vt__h.wd_thread, NULL, vt__watchdog, NULL) != 0) {
        fprintf(stderr, "vt_test: cannot start the watchdog thread\n");
        exit(2);
    }
    vt__h.wd_running = 1;
}

VT__FN void vt__watchdog_stop(void)
{
    if (!vt__h.wd_running)
        return;
    pthread_mutex_lock(&vt__h.wd_mu);
    vt__h.wd_stop = 1;
    pthread_cond_signal(&vt__h.wd_cv);
    pthread_mutex_unlock(&vt__h.wd_mu);
    pthread_join(vt__h.wd_thread, NULL);
    pthread_cond_destroy(&vt__h.wd_cv);
    vt__h.wd_running = 0;
}

VT__FN void vt__watchdog_arm(int on)
{
    pthread_mutex_lock(&vt__h.wd_mu);
    vt__h.wd_armed = on;
    if (on) {
        /* Capped at a year, so that a huge multiplier cannot overflow. */
        double s = vt__h.timeout_s < 3.2e7 ? vt__h.timeout_s : 3.2e7;
        int64_t ns = (int64_t)(s * 1e9);
        clock_gettime(CLOCK_MONOTONIC, &vt__h.wd_deadline);
        ns += vt__h.wd_deadline.tv_nsec;
        vt__h.wd_deadline.tv_sec += (time_t)(ns / 1000000000);
        vt__h.wd_deadline.tv_nsec = (long)(ns % 1000000000);
    }
    pthread_cond_signal(&vt__h.wd_cv);
    pthread_mutex_unlock(&vt__h.wd_mu);
}

/* ---- The runner ------------------------------------------------------------ */

VT__FN double vt__elapsed_ms(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* Runs t in this process, the watchdog armed around it. */
VT__FN int vt__run_here(const vt__test *t)
{
    struct timespec t0;
    uint64_t h = vt__h.seed;
    for (const char *p = t->name; *p; p++)
        h = vt__mix(h ^ (unsigned char)*p);
    atomic_store(&vt__h.rand_state, h);
    atomic_store(&vt__h.failed, 0);
    atomic_store(&vt__h.skipped, 0);
    vt_test_alloc_reset();
    vt__h.cur = t;
    printf("[ RUN  ] %s\n", t->name);
    fflush(stdout);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    vt__watchdog_arm(1);
    t->fn();
    vt__watchdog_arm(0);
    double ms = vt__elapsed_ms(&t0);
    vt_test_alloc_reset();
    if (atomic_load(&vt__h.failed)) {
        printf("[ FAIL ] %s (%.1f ms)\n", t->name, ms);
        return VT__FAILED;
    }
    if (atomic_load(&vt__h.skipped)) {
        printf("[ SKIP ] %s: %s\n", t->name, vt__h.skip_why);
        return VT__SKIPPED;
    }
    printf("[  OK  ] %s (%.1f ms)\n", t->name, ms);
    return VT__PASS;
}

/* Runs t in a child, which owns the watchdog; a crash fails only t. */
VT__FN int vt__run_forked(const vt__test *t)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("vt_test: fork");
        return VT__FAILED;
    }
    if (pid == 0) {
        vt__h.in_child = 1;
        vt__watchdog_start();
        int r = vt__run_here(t);
        vt__watchdog_stop();
        fflush(stdout);
        /* exit, not _exit: LeakSanitizer checks the child at exit. */
        exit(r == VT__PASS ? 0 : r == VT__SKIPPED ? VT__EXIT_SKIP : 1);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR) {
            perror("vt_test: waitpid");
            return VT__FAILED;
        }
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return VT__PASS;
    if (WIFEXITED(st) && WEXITSTATUS(st) == VT__EXIT_SKIP)
        return VT__SKIPPED;
    if (WIFSIGNALED(st))
        printf("[ FAIL ] %s: killed by signal %d (%s)\n", t->name, WTERMSIG(st),
               strsignal(WTERMSIG(st)));
    else if (WEXITSTATUS(st) != 1 && WEXITSTATUS(st) != VT__EXIT_TIMEOUT)
        printf("[ FAIL ] %s: child exited with status %d\n", t->name, WEXITSTATUS(st));
    return VT__FAILED;
}

VT__FN int vt__selected(const vt__test *t, int argc, char **argv, const int *names)
{
    int any = 0, hit = 0;
    for (int i = 1; i < argc; i++) {
        if (!names[i])
            continue;
        any = 1;
        if (fnmatch(argv[i], t->name, 0) == 0)
            hit = 1;
    }
    return !any || hit;
}

VT__FN int vt__usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s [--list] [--fork] [NAME|GLOB ...]\n"
            "env: VT_TEST_SEED=N VT_TEST_TIMEOUT_MULT=X VT_TEST_STRESS=N\n",
            prog);
    return 2;
}

VT__FN int vt__main(int argc, char **argv)
{
    int list = 0, forked = 0;
    int *names = calloc((size_t)argc + 1, sizeof *names);
    const char *env;
    char *end;

    if (!names)
        return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--list") == 0)
            list = 1;
        else if (strcmp(argv[i], "--fork") == 0)
            forked = 1;
        else if (argv[i][0] == '-') {
            free(names);
            return vt__usage(argv[0]);
        } else
            names[i] = 1;
    }
    /* A name that matches nothing is a typo, not an empty success. */
    for (int i = 1; i < argc; i++) {
        int hit = 0;
        for (const vt__test *t = vt__h.first; names[i] && t && !hit; t = t->next)
            hit = fnmatch(argv[i], t->name, 0) == 0;
        if (names[i] && !hit) {
            fprintf(stderr, "vt_test: no test matches '%s' (see --list)\n", argv[i]);
            free(names);
            return 2;
        }
    }
    if (list) {
        for (const vt__test *t = vt__h.first; t; t = t->next)
            if (vt__selected(t, argc, argv, names))
                printf("%s\n", t->name);
        free(names);
        return 0;
    }

    if ((env = getenv("VT_TEST_SEED")) && *env) {
        errno = 0;
        vt__h.seed = strtoull(env, &end, 0);
        if (errno || *end) {
            fprintf(stderr, "vt_test: VT_TEST_SEED=%s is not a number\n", env);
            free(names);
            return 2;
        }
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        vt__h.seed =
            vt__mix((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^ (uint64_t)getpid();
    }
    if ((env = getenv("VT_TEST_STRESS")) && *env) {
        long v = strtol(env, &end, 10);
        vt__h.stress = (*end || v < 1) ? 1 : (unsigned)v;
    }
    if ((env = getenv("VT_TEST_TIMEOUT_MULT")) && *env) {
        double m = strtod(env, &end);
        if (!*end && m > 0)
            vt__h.timeout_s *= m;
    }
    printf("VT_TEST_SEED=%llu\n", (unsigned long long)vt__h.seed);
    vt_test_alloc_install();

    /* In fork mode the parent stays single-threaded, as fork wants. */
    if (!forked)
        vt__watchdog_start();
    for (const vt__test *t = vt__h.first; t; t = t->next) {
        if (!vt__selected(t, argc, argv, names))
            continue;
        int r = forked ? vt__run_forked(t) : vt__run_here(t);
        pthread_mutex_lock(&vt__h.wd_mu);
        vt__h.passed_total += r == VT__PASS;
        vt__h.failed_total += r == VT__FAILED;
        vt__h.skipped_total += r == VT__SKIPPED;
        pthread_mutex_unlock(&vt__h.wd_mu);
    }
    vt__watchdog_stop();
    free(names);
    if (vt__h.skipped_total)
        printf("%d passed, %d failed, %d skipped\n", vt__h.passed_total, vt__h.failed_total,
               vt__h.skipped_total);
    else
        printf("%d passed, %d failed\n", vt__h.passed_total, vt__h.failed_total);
    return vt__h.failed_total ? 1 : 0;
}

#ifndef VT_TEST_NO_MAIN
int main(int argc, char **argv)
{
    return vt__main(argc, argv);
}
#endif

#endif
