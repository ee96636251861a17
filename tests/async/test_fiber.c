/* test_fiber.c — fibers and their runtime (include/vitte/async.h, without
 * futures, synchronisation and IO, which have tests of their own): the
 * runtime's life and options, vt_runtime_main and vt_main, spawn and await
 * from threads and fibers on 1, 2 and 8 workers, detached fibers, stale
 * handles and the errors of every call, names, vt_runtime_dump and the
 * statistics, yield fairness, sleeps (never early, woken in deadline
 * order), timeouts on await, a million fibers in total and 100k alive at
 * once, migration between workers, deep recursion, allocation failures.
 *
 * Fibers report through the structs below (atomics where several workers
 * write); the checks run on the test thread. Waits for a fiber to reach a
 * point poll without a deadline: the harness names a test that hangs. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vt_test.h"
#include "async_test.h"
#include "vitte/async.h"

/* Sanitizers run this code several times slower (TSan an order of
 * magnitude): the big tests shrink there. TSan also keeps a fiber state of
 * its own per stack, which gcc 12's runtime takes about 9 ms to make (and
 * clang 14's 0.07 ms): what is alive at once, and so the number of stacks
 * made, shrinks most. */
#if defined(VT_SANITIZE_THREAD)
#define SCALE_DIV 50
#define ALIVE_DIV 400
#elif defined(VT_SANITIZE_ADDRESS)
#define SCALE_DIV 4
#define ALIVE_DIV 4
#else
#define SCALE_DIV 1
#define ALIVE_DIV 1
#endif

static long scaled_by(long n, long div)
{
    long v = n * (long)vt_test_stress() / div;
    return v < 1 ? 1 : v;
}

static long scaled(long n)
{
    return scaled_by(n, SCALE_DIV);
}


static vt_err spawn_on(vt_runtime *rt, vt_fiber *out, vt_fiber_fn fn, void *arg, const char *name)
{
    vt_fiber_opts o;
    memset(&o, 0, sizeof o);
    o.runtime = rt;
    o.name = name;
    return vt_fiber_spawn_ex(out, fn, arg, &o);
}

/* The line of a dump that names `name`, copied (free it), or NULL. */
static char *line_of(const char *text, const char *name)
{
    const char *p = text ? strstr(text, name) : NULL;
    if (!p)
        return NULL;
    const char *b = p, *e = p;
    while (b > text && b[-1] != '\n')
        b--;
    while (*e && *e != '\n')
        e++;
    char *s = malloc((size_t)(e - b) + 1);
    memcpy(s, b, (size_t)(e - b));
    s[e - b] = 0;
    return s;
}

static char *dump_text(vt_runtime *rt, vt_err *err)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    *err = vt_runtime_dump(rt, f);
    fclose(f);
    return buf;
}

/* ---- Small fiber bodies ------------------------------------------------------------ */

static void *times3(void *arg)
{
    return U2P(P2U(arg) * 3);
}

static void *plus_one(void *arg)
{
    return U2P(P2U(arg) + 1);
}

/* Runs until G.release is set, sleeping a millisecond at a time; returns
 * its argument. */
static struct {
    _Atomic int release;
    _Atomic long entered;
    _Atomic long errors;
} G;

static void gate_reset(void)
{
    atomic_store(&G.release, 0);
    atomic_store(&G.entered, 0);
    atomic_store(&G.errors, 0);
}

static void *gated(void *arg)
{
    atomic_fetch_add(&G.entered, 1);
    while (!atomic_load(&G.release))
        if (vt_sleep_ms(1) != VT_OK)
            atomic_fetch_add(&G.errors, 1);
    return arg;
}

/* ---- Options and the runtime's life --------------------------------------------------- */

VT_TEST(opts_defaults_and_bad_values)
{
    vt_runtime_opts o;
    memset(&o, 0xff, sizeof o);
    vt_runtime_opts_init(&o);
    VT_CHECK_EQ(o.stack_size, 0);
    VT_CHECK_EQ(o.no_guard_pages, 0);
    VT_CHECK_EQ(o.blocking_threads, 0);
    VT_CHECK_EQ(o.pool.workers, 0);
    VT_CHECK_EQ(o.pool.deterministic, 0);
    VT_CHECK_NULL(o.pool.name);

    vt_runtime *rt = NULL;
    VT_CHECK_ERR(vt_runtime_new(NULL, &o), VT_EINVAL);
    static const size_t bad_sizes[] = {
        1, 4096, VT_STACK_MIN - 1, VT_STACK_MAX + 1, (size_t)1 << 40, SIZE_MAX};
    for (size_t i = 0; i < sizeof bad_sizes / sizeof bad_sizes[0]; i++) {
        vt_runtime_opts_init(&o);
        o.stack_size = bad_sizes[i];
        vt_err e = vt_runtime_new(&rt, &o);
        if (e != VT_EINVAL)
            printf("  stack_size %zu\n", bad_sizes[i]);
        VT_CHECK_ERR(e, VT_EINVAL);
    }
    vt_runtime_opts_init(&o);
    o.pool.workers = VT_POOL_MAX_WORKERS + 1;
    VT_CHECK_ERR(vt_runtime_new(&rt, &o), VT_EINVAL);
    vt_runtime_opts_init(&o);
    o.pool.deterministic = 1;
    o.pool.workers = 2;
    VT_CHECK_ERR(vt_runtime_new(&rt, &o), VT_EINVAL);

    /* The limits themselves are fine, and sizes that are not page
     * multiples are rounded up. */
    static const size_t good_sizes[] = {VT_STACK_MIN, VT_STACK_MIN + 1, 100000, VT_STACK_MAX};
    for (size_t i = 0; i < sizeof good_sizes / sizeof good_sizes[0]; i++) {
        vt_runtime_opts_init(&o);
        o.pool.workers = 1;
        o.stack_size = good_sizes[i];
        rt = NULL;
        VT_CHECK_OK(vt_runtime_new(&rt, &o));
        vt_fiber f;
        void *r = NULL;
        VT_CHECK_OK(spawn_on(rt, &f, times3, U2P(i + 5), NULL));
        VT_CHECK_OK(vt_fiber_await(f, &r, VT_FOREVER));
        VT_CHECK_EQ(P2U(r), (i + 5) * 3);
        vt_runtime_free(rt);
    }
}

static struct {
    _Atomic(vt_runtime *) seen;
    _Atomic int in_fiber;
    _Atomic int job_in_fiber;
} WH;

static void *whoami(void *arg)
{
    (void)arg;
    atomic_store(&WH.in_fiber, vt_fiber_in());
    return vt_runtime_current();
}

static void whoami_job(void *arg)
{
    (void)arg;
    atomic_store(&WH.job_in_fiber, vt_fiber_in());
    atomic_store(&WH.seen, vt_runtime_current());
}

VT_TEST(runtime_life)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_pool *p = vt_runtime_pool(rt);
    VT_CHECK_NOT_NULL(p);
    VT_CHECK_EQ(vt_pool_workers(p), 2);
    VT_CHECK_NULL(vt_runtime_current());

    /* A fiber and a closure job of the runtime's pool both see it. */
    vt_fiber f;
    void *r = NULL;
    VT_CHECK_OK(spawn_on(rt, &f, whoami, NULL, "whoami"));
    VT_CHECK_NE(f.id, 0);
    VT_CHECK_OK(vt_fiber_await(f, &r, VT_FOREVER));
    VT_CHECK_PTR_EQ(r, rt);
    VT_CHECK_EQ(atomic_load(&WH.in_fiber), 1);
    atomic_store(&WH.seen, NULL);
    atomic_store(&WH.job_in_fiber, -1);
    VT_CHECK_OK(vt_pool_submit(p, whoami_job, NULL));
    while (!atomic_load(&WH.seen))
        nap();
    VT_CHECK_PTR_EQ(atomic_load(&WH.seen), rt);
    VT_CHECK_EQ(atomic_load(&WH.job_in_fiber), 0);

    VT_CHECK_OK(vt_runtime_shutdown(rt, VT_FOREVER));
    VT_CHECK_ERR(vt_runtime_shutdown(rt, VT_FOREVER), VT_ECLOSED);
    VT_CHECK_ERR(spawn_on(rt, &f, whoami, NULL, NULL), VT_ECLOSED);
    vt_runtime_free(rt);
    vt_runtime_free(NULL);
}

/* Fibers blocked for ever when the runtime shuts down are cancelled: the
 * sleep returns VT_ECANCELED, they return, and their handles can still be
 * awaited until the runtime is freed. */
#define SD_N 50
static struct {
    _Atomic long entered;
    _Atomic int result[SD_N];
} SD;

static void *sleep_for_ever(void *arg)
{
    uintptr_t i = P2U(arg);
    atomic_fetch_add(&SD.entered, 1);
    /* Half wait for ever, half for an hour: both kinds of sleep end. */
    vt_err e = i % 2 ? vt_sleep_until(VT_FOREVER) : vt_sleep_ns(VT_SEC(3600));
    atomic_store(&SD.result[i], (int)e);
    return U2P(i + 1000);
}

VT_TEST(shutdown_cancels_blocked_fibers)
{
    memset(&SD, 0, sizeof SD);
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_fiber f[SD_N];
    for (int i = 0; i < SD_N; i++) {
        atomic_store(&SD.result[i], -1);
        VT_CHECK_OK(spawn_on(rt, &f[i], sleep_for_ever, U2P(i), "sleeper"));
    }
    wait_for(&SD.entered, SD_N);
    VT_CHECK_OK(vt_runtime_shutdown(rt, VT_FOREVER));
    for (int i = 0; i < SD_N; i++)
        VT_CHECK_ERR((vt_err)atomic_load(&SD.result[i]), VT_ECANCELED);
    for (int i = 0; i < SD_N; i++) {
        void *r = NULL;
        VT_CHECK_OK(vt_fiber_await(f[i], &r, VT_NOW));
        VT_CHECK_EQ(P2U(r), (uintptr_t)i + 1000);
    }
    vt_runtime_free(rt);

    /* vt_runtime_free alone does the same. */
    memset(&SD, 0, sizeof SD);
    rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    for (int i = 0; i < 4; i++) {
        atomic_store(&SD.result[i], -1);
        VT_CHECK_OK(spawn_on(rt, &f[i], sleep_for_ever, U2P(i), "sleeper"));
    }
    wait_for(&SD.entered, 4);
    vt_runtime_free(rt);
    for (int i = 0; i < 4; i++)
        VT_CHECK_ERR((vt_err)atomic_load(&SD.result[i]), VT_ECANCELED);
}

static void *shutdown_self(void *arg)
{
    (void)arg;
    return U2P(vt_runtime_shutdown(vt_runtime_current(), VT_FOREVER));
}

static _Atomic int job_shutdown_err = -1;
static void shutdown_job(void *arg)
{
    atomic_store(&job_shutdown_err, (int)vt_runtime_shutdown(arg, VT_FOREVER));
}

VT_TEST(shutdown_from_inside_is_refused)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_fiber f;
    void *r = NULL;
    VT_CHECK_OK(spawn_on(rt, &f, shutdown_self, NULL, NULL));
    VT_CHECK_OK(vt_fiber_await(f, &r, VT_FOREVER));
    VT_CHECK_ERR((vt_err)P2U(r), VT_ESTATE);
    atomic_store(&job_shutdown_err, -1);
    VT_CHECK_OK(vt_pool_submit(vt_runtime_pool(rt), shutdown_job, rt));
    while (atomic_load(&job_shutdown_err) == -1)
        nap();
    VT_CHECK_ERR((vt_err)atomic_load(&job_shutdown_err), VT_ESTATE);
    /* Still running. */
    VT_CHECK_OK(spawn_on(rt, &f, times3, U2P(4), NULL));
    VT_CHECK_OK(vt_fiber_await(f, &r, VT_FOREVER));
    VT_CHECK_EQ(P2U(r), 12);
    vt_runtime_free(rt);
}

/* A fiber that masks cancellation and keeps working until told: shutdown
 * times out, leaving the runtime running; once the fiber ends, shutdown
 * again succeeds. */
static struct {
    _Atomic long started;
    _Atomic int release;
    _Atomic long errors;
} ST;

static void *stubborn(void *arg)
{
    (void)arg;
    vt_cancel_mask(1);
    atomic_store(&ST.started, 1);
    while (!atomic_load(&ST.release))
        if (vt_sleep_ms(1) != VT_OK)
            atomic_fetch_add(&ST.errors, 1);
    return U2P(vt_cancelled());
}

VT_TEST(shutdown_deadline_leaves_the_runtime_running)
{
    memset(&ST, 0, sizeof ST);
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_fiber f;
    VT_CHECK_OK(spawn_on(rt, &f, stubborn, NULL, "stubborn"));
    wait_for(&ST.started, 1);
    VT_CHECK_ERR(vt_runtime_shutdown(rt, vt_deadline_after(VT_MS(20))), VT_ETIMEDOUT);
    VT_CHECK_ERR(vt_runtime_shutdown(rt, VT_NOW), VT_ETIMEDOUT);
    atomic_store(&ST.release, 1);
    VT_CHECK_OK(vt_runtime_shutdown(rt, VT_FOREVER));
    VT_CHECK_ERR(vt_runtime_shutdown(rt, VT_FOREVER), VT_ECLOSED);
    VT_CHECK_EQ(atomic_load(&ST.errors), 0);
    void *r = NULL;
    VT_CHECK_OK(vt_fiber_await(f, &r, VT_NOW));
    VT_CHECK_EQ(P2U(r), 1); /* it was cancelled, masked */
    vt_runtime_free(rt);
}

/* ---- vt_runtime_main and vt_main -------------------------------------------------------- */

static struct {
    int in_fiber;
    char name[VT_FIBER_NAME_MAX];
    vt_runtime *rt;
    _Atomic int child_done;
} RM;

/* 1 when its sleep ended normally: a runtime that cancelled it at shutdown
 * instead of letting the root wait for it leaves 2. */
static void *late_child(void *arg)
{
    (void)arg;
    atomic_store(&RM.child_done, vt_sleep_ms(2) == VT_OK ? 1 : 2);
    return NULL;
}

static void *main_body(void *arg)
{
    RM.in_fiber = vt_fiber_in();
    snprintf(RM.name, sizeof RM.name, "%s", vt_fiber_name());
    RM.rt = vt_runtime_current();
    vt_fiber kids[8];
    uintptr_t sum = 0;
    for (int i = 0; i < 8; i++)
        if (vt_fiber_spawn(&kids[i], times3, U2P(i)) != VT_OK)
            return NULL;
    for (int i = 0; i < 8; i++) {
        void *r = NULL;
        if (vt_fiber_await(kids[i], &r, VT_FOREVER) != VT_OK)
            return NULL;
        sum += P2U(r);
    }
    /* Left running: the root does not finish before it, so neither does
     * vt_runtime_main. */
    vt_fiber_opts o;
    memset(&o, 0, sizeof o);
    o.detached = 1;
    if (vt_fiber_spawn_ex(NULL, late_child, NULL, &o) != VT_OK)
        return NULL;
    return U2P(P2U(arg) + sum);
}

VT_TEST(runtime_main_runs_a_root_fiber)
{
    memset(&RM, 0, sizeof RM);
    void *r = NULL;
    VT_CHECK_OK(vt_runtime_main(NULL, main_body, U2P(1000), &r));
    VT_CHECK_EQ(P2U(r), 1000 + 3 * 28);
    VT_CHECK_EQ(RM.in_fiber, 1);
    VT_CHECK_STR_EQ(RM.name, "main");
    VT_CHECK_NOT_NULL(RM.rt);
    VT_CHECK_EQ(atomic_load(&RM.child_done), 1);
    VT_CHECK_NULL(vt_runtime_current());

    vt_runtime_opts o;
    vt_runtime_opts_init(&o);
    o.pool.workers = 1;
    memset(&RM, 0, sizeof RM);
    VT_CHECK_OK(vt_runtime_main(&o, main_body, U2P(1), NULL));
    VT_CHECK_EQ(atomic_load(&RM.child_done), 1);

    VT_CHECK_ERR(vt_runtime_main(NULL, NULL, NULL, NULL), VT_EINVAL);
    o.stack_size = 1;
    VT_CHECK_ERR(vt_runtime_main(&o, main_body, NULL, NULL), VT_EINVAL);
}

static int app(int argc, char **argv)
{
    int ok = vt_fiber_in() && strcmp(vt_fiber_name(), "main") == 0 && argc == 3 &&
             strcmp(argv[1], "alpha") == 0 && strcmp(argv[2], "beta") == 0 && vt_runtime_current();
    return ok ? 7 : 3;
}

/* vt_main runs in a fresh copy of this program, so that one that exits
 * instead of returning cannot end the test run, and so that the child may
 * start threads (a forked child of a threaded process may not, under TSan).
 * The copy finds the variable below before main and answers through the
 * pipe it names. */
#define VT_MAIN_CHILD "VT_TEST_FIBER_VT_MAIN_FD"

__attribute__((constructor)) static void vt_main_child(void)
{
    const char *fd = getenv(VT_MAIN_CHILD);
    if (!fd)
        return;
    char a0[] = "prog", a1[] = "alpha", a2[] = "beta";
    char *argv[] = {a0, a1, a2, NULL};
    int st = vt_main(app, 3, argv);
    ssize_t w = write(atoi(fd), &st, sizeof st);
    _exit(w == (ssize_t)sizeof st ? 0 : 1);
}

extern char **environ;

VT_TEST(vt_main_returns_the_app_status)
{
    /* readlink rather than exec of /proc/self/exe itself: under a tool
     * that runs us (valgrind), the link names our program, not the tool. */
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    VT_CHECK_GT(len, 0);
    self[len] = 0;
    int fds[2];
    VT_CHECK_EQ(pipe(fds), 0);
    /* The environment is built before fork: the child only execs. */
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 2, sizeof *env);
    char var[64];
    VT_CHECK_NOT_NULL(env);
    memcpy(env, environ, n * sizeof *env);
    snprintf(var, sizeof var, "%s=%d", VT_MAIN_CHILD, fds[1]);
    env[n] = var;
    fflush(stdout);
    pid_t pid = fork();
    VT_CHECK_GE(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        execle(self, self, (char *)NULL, env);
        _exit(127);
    }
    free(env);
    close(fds[1]);
    int st = -1;
    ssize_t r;
    while ((r = read(fds[0], &st, sizeof st)) < 0 && errno == EINTR) {
    }
    close(fds[0]);
    int ws = 0;
    while (waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
    }
    if (r != (ssize_t)sizeof st)
        printf("  vt_main did not return (child status %#x)\n", ws);
    VT_CHECK_EQ(r, (ssize_t)sizeof st);
    VT_CHECK_EQ(st, 7);
}

/* ---- Spawn and await -------------------------------------------------------------------- */

typedef struct thread_arg {
    vt_runtime *rt;
    int base;
    long bad;
} thread_arg;

static void *spawn_await_thread(void *arg)
{
    thread_arg *ta = arg;
    for (int i = 0; i < 200; i++) {
        vt_fiber f;
        void *r = NULL;
        uintptr_t v = (uintptr_t)(ta->base + i);
        if (spawn_on(ta->rt, &f, times3, U2P(v), "t") != VT_OK ||
            vt_fiber_await(f, &r, VT_FOREVER) != VT_OK || P2U(r) != v * 3)
            ta->bad++;
    }
    return NULL;
}

VT_TEST(spawn_and_await_from_threads)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    /* From the test thread: many at once, awaited in another order. */
    enum {
        N = 300
    };
    vt_fiber f[N];
    for (int i = 0; i < N; i++)
        VT_CHECK_OK(spawn_on(rt, &f[i], times3, U2P(i), NULL));
    for (int i = N - 1; i >= 0; i--) {
        void *r = NULL;
        VT_CHECK_OK(vt_fiber_await(f[i], &r, VT_FOREVER));
        VT_CHECK_EQ(P2U(r), (uintptr_t)i * 3);
    }
    /* A fiber long finished is awaited at once; a NULL result is fine. */
    VT_CHECK_OK(spawn_on(rt, &f[0], times3, U2P(1), NULL));
    vt_sleep_ms(5);
    VT_CHECK_OK(vt_fiber_await(f[0], NULL, VT_FOREVER));
    /* From four threads at once. */
    pthread_t th[4];
    thread_arg ta[4];
    for (int t = 0; t < 4; t++) {
        ta[t] = (thread_arg){rt, t * 1000, 0};
        VT_CHECK_EQ(pthread_create(&th[t], NULL, spawn_await_thread, &ta[t]), 0);
    }
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        VT_CHECK_EQ(ta[t].bad, 0);
    }
    vt_runtime_free(rt);
}

/* A tree of fibers, each awaiting its children and returning the size of
 * its subtree. */
#define TREE_FAN 6
static _Atomic long tree_errors;

static void *tree_node(void *arg)
{
    int depth = (int)P2U(arg);
    if (depth == 0)
        return U2P(1);
    vt_fiber kids[TREE_FAN];
    int n = 0;
    for (int k = 0; k < TREE_FAN; k++) {
        if (vt_fiber_spawn(&kids[n], tree_node, U2P(depth - 1)) == VT_OK)
            n++;
        else
            atomic_fetch_add(&tree_errors, 1);
        if (k == TREE_FAN / 2 && vt_fiber_yield() != VT_OK)
            atomic_fetch_add(&tree_errors, 1);
    }
    uintptr_t sum = 1;
    for (int k = 0; k < n; k++) {
        void *r = NULL;
        if (vt_fiber_await(kids[k], &r, VT_FOREVER) != VT_OK)
            atomic_fetch_add(&tree_errors, 1);
        sum += P2U(r);
    }
    return U2P(sum);
}

VT_TEST(await_from_fibers_on_1_2_8_workers)
{
    static const unsigned workers[] = {1, 2, 8};
#if defined(VT_SANITIZE_THREAD)
    const int depth = 3; /* 259 fibers, each with a TSan fiber of its own */
#else
    const int depth = 4; /* 1555 fibers */
#endif
    uintptr_t want = 0, level = 1;
    for (int d = 0; d <= depth; d++, level *= TREE_FAN)
        want += level;
    for (int w = 0; w < 3; w++) {
        vt_runtime_opts o;
        vt_runtime_opts_init(&o);
        o.pool.workers = workers[w];
        atomic_store(&tree_errors, 0);
        void *r = NULL;
        VT_CHECK_OK(vt_runtime_main(&o, tree_node, U2P(depth), &r));
        if (P2U(r) != want)
            printf("  %u workers\n", workers[w]);
        VT_CHECK_EQ(P2U(r), want);
        VT_CHECK_EQ(atomic_load(&tree_errors), 0);
    }
}

/* ---- Detached fibers -------------------------------------------------------------- */

static _Atomic long detached_ran;

static void *detached_body(void *arg)
{
    if (P2U(arg) % 3 == 0)
        vt_fiber_yield();
    else if (P2U(arg) % 3 == 1)
        vt_sleep_ns(VT_US(50));
    atomic_fetch_add(&detached_ran, 1);
    return NULL;
}

VT_TEST(detached_fibers_run_and_give_back_their_handle)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_scope *s = NULL;
    VT_CHECK_OK(vt_scope_new(&s, rt));
    atomic_store(&detached_ran, 0);
    enum {
        N = 500
    };
    vt_fiber_opts o;
    memset(&o, 0, sizeof o);
    o.runtime = rt;
    o.scope = s;
    o.detached = 1;
    for (int i = 0; i < N; i++)
        VT_CHECK_OK(vt_fiber_spawn_ex(NULL, detached_body, U2P(i), &o));
    VT_CHECK_OK(vt_scope_wait(s, VT_FOREVER));
    VT_CHECK_EQ(atomic_load(&detached_ran), N);
    VT_CHECK_EQ(vt_scope_live(s), 0);
    vt_scope_close(s);

    /* Detaching a handle: it can be neither awaited nor detached again,
     * the fiber runs on, and once it finished the handle is stale for
     * cancel too. */
    gate_reset();
    vt_fiber f;
    VT_CHECK_OK(spawn_on(rt, &f, gated, U2P(5), "detachee"));
    VT_CHECK_OK(vt_fiber_detach(f));
    VT_CHECK_ERR(vt_fiber_detach(f), VT_ENOENT);
    VT_CHECK_ERR(vt_fiber_await(f, NULL, VT_NOW), VT_ENOENT);
    VT_CHECK_ERR(vt_fiber_await(f, NULL, VT_FOREVER), VT_ENOENT);
    wait_for(&G.entered, 1);
    vt_runtime_stats st;
    VT_CHECK_OK(vt_runtime_stats_get(rt, &st));
    VT_CHECK_EQ(st.live, 1);
    atomic_store(&G.release, 1);
    do {
        nap();
        VT_CHECK_OK(vt_runtime_stats_get(rt, &st));
    } while (st.live != 0);
    VT_CHECK_EQ(st.spawned, st.finished);
    VT_CHECK_EQ(atomic_load(&G.errors), 0);
    /* Finished (a cancel is a no-op) until its slot is given back (stale). */
    vt_err e;
    while ((e = vt_fiber_cancel(f)) == VT_OK)
        nap();
    VT_CHECK_ERR(e, VT_ENOENT);
    vt_runtime_free(rt);
}

/* ---- Handles: stale, self, several awaiters ------------------------------------------ */

VT_TEST(stale_handles_are_enoent)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_fiber f, zero = {0}, junk = {0x7777777777ull};
    void *r = NULL;
    VT_CHECK_OK(spawn_on(rt, &f, times3, U2P(2), NULL));
    VT_CHECK_OK(vt_fiber_await(f, &r, VT_FOREVER));
    VT_CHECK_EQ(P2U(r), 6);
    r = U2P(99);
    VT_CHECK_ERR(vt_fiber_await(f, &r, VT_FOREVER), VT_ENOENT);
    VT_CHECK_EQ(P2U(r), 99); /* a failed await stores nothing */
    VT_CHECK_ERR(vt_fiber_detach(f), VT_ENOENT);
    VT_CHECK_ERR(vt_fiber_cancel(f), VT_ENOENT);
    VT_CHECK_ERR(vt_fiber_await(zero, NULL, VT_FOREVER), VT_ENOENT);
    VT_CHECK_ERR(vt_fiber_detach(zero), VT_ENOENT);
    VT_CHECK_ERR(vt_fiber_cancel(zero), VT_ENOENT);
    VT_CHECK_ERR(vt_fiber_await(junk, NULL, VT_FOREVER), VT_ENOENT);
    VT_CHECK_ERR(vt_fiber_cancel(junk), VT_ENOENT);

    /* The slot of an awaited fiber is reused: its old handle must not
     * reach the new fiber. */
    gate_reset();
    for (int round = 0; round < 50; round++) {
        vt_fiber old, young;
        VT_CHECK_OK(spawn_on(rt, &old, times3, U2P(1), NULL));
        VT_CHECK_OK(vt_fiber_await(old, NULL, VT_FOREVER));
        VT_CHECK_OK(spawn_on(rt, &young, gated, U2P(round), "young"));
        VT_CHECK_NE(old.id, young.id);
        VT_CHECK_ERR(vt_fiber_cancel(old), VT_ENOENT);
        VT_CHECK_ERR(vt_fiber_await(old, NULL, VT_NOW), VT_ENOENT);
        VT_CHECK_ERR(vt_fiber_detach(old), VT_ENOENT);
        VT_CHECK_ERR(vt_fiber_await(young, NULL, VT_NOW), VT_ETIMEDOUT);
        atomic_store(&G.release, 1);
        VT_CHECK_OK(vt_fiber_await(young, &r, VT_FOREVER));
        VT_CHECK_EQ(P2U(r), (uintptr_t)round);
        atomic_store(&G.release, 0);
    }
    VT_CHECK_EQ(atomic_load(&G.errors), 0); /* nobody cancelled the young ones */
    vt_runtime_free(rt);
}

static void *await_self(void *arg)
{
    (void)arg;
    vt_err e = vt_fiber_await(vt_fiber_self(), NULL, VT_FOREVER);
    vt_err e2 = vt_fiber_await(vt_fiber_self(), NULL, VT_NOW);
    return U2P((uintptr_t)e | (uintptr_t)e2 << 16);
}

VT_TEST(await_self_is_edeadlk)
{
    vt_runtime *rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    vt_fiber f;
    void *r = NULL;
    VT_CHECK_OK(spawn_on(rt, &f, await_self, NULL, NULL));
    VT_CHECK_OK(vt_fiber_await(f, &r, VT_FOREVER)); /* the handle survived */
    VT_CHECK_ERR((vt_err)(P2U(r) & 0xffff), VT_EDEADLK);
    VT_CHECK_ERR((vt_err)(P2U(r) >> 16), VT_EDEADLK);
    vt_runtime_free(rt);
}

/* Three parties await one fiber at once: two fibers and a thread. Exactly
 * one waits and gets the result; the others get VT_EBUSY at once. */
static struct {
    vt_fiber target;
    _Atomic long busy, ok, other;
    _Atomic uintptr_t result;
} CA;

static void ca_record(vt_err e, void *r)
{
    if (e == VT_EBUSY)
        atomic_fetch_add(&CA.busy, 1);
    else if (e == VT_OK) {
        atomic_fetch_add(&CA.ok, 1);
        atomic_store(&CA.result, P2U(r));
    } else
        atomic_fetch_add(&CA.other, 1);
}

static void *ca_fiber(void *arg)
{
    (void)arg;
    void *r = NULL;
    vt_err e = vt_fiber_await(CA.target, &r, VT_FOREVER);
    ca_record(e, r);
    return NULL;
}

static void *ca_thread(void *arg)
{
    (void)arg;
    void *r = NULL;
    vt_err e = vt_fiber_await(CA.target, &r, VT_FOREVER);
    ca_record(e, r);
    return NULL;
}

VT_TEST(one_awaiter_at_a_time)
{
    for (int round = 0; round < 20; round++) {
        vt_runtime *rt = rt_new(2);
        VT_CHECK_NOT_NULL(rt);
        memset(&CA, 0, sizeof CA);
        gate_reset();
        VT_CHECK_OK(spawn_on(rt, &CA.target, gated, U2P(77), "target"));
        vt_fiber a, b;
        VT_CHECK_OK(spawn_on(rt, &a, ca_fiber, NULL, "awaiter-a"));
        VT_CHECK_OK(spawn_on(rt, &b, ca_fiber, NULL, "awaiter-b"));
        pthread_t th;
        VT_CHECK_EQ(pthread_create(&th, NULL, ca_thread, NULL), 0);
        /* Released only once two have been turned away: the third is
         * waiting, since the target cannot have finished. */
        while (atomic_load(&CA.busy) + atomic_load(&CA.other) < 2)
            nap();
        atomic_store(&G.release, 1);
        pthread_join(th, NULL);
        VT_CHECK_OK(vt_fiber_await(a, NULL, VT_FOREVER));
        VT_CHECK_OK(vt_fiber_await(b, NULL, VT_FOREVER));
        VT_CHECK_EQ(atomic_load(&CA.other), 0);
        VT_CHECK_EQ(atomic_load(&CA.busy), 2);
        VT_CHECK_EQ(atomic_load(&CA.ok), 1);
        VT_CHECK_EQ(atomic_load(&CA.result), 77);
        VT_CHECK_ERR(vt_fiber_await(CA.target, NULL, VT_NOW), VT_ENOENT);
        vt_runtime_free(rt);
    }
}

/* A fiber awaiting with VT_FOREVER; probes from the test thread with VT_NOW
 * tell when it is there (VT_EBUSY), and may themselves make its await
 * VT_EBUSY, which it retries. */
static void *patient_awaiter(void *arg)
{
    (void)arg;
    void *r = NULL;
    vt_err e;
    while ((e = vt_fiber_await(CA.target, &r, VT_FOREVER)) == VT_EBUSY)
        vt_sleep_ns(VT_US(20));
    ca_record(e, r);
    return NULL;
}

VT_TEST(detach_while_awaited_is_ebusy)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    memset(&CA, 0, sizeof CA);
    gate_reset();
    VT_CHECK_OK(spawn_on(rt, &CA.target, gated, U2P(31), "target"));
    vt_fiber a;
    VT_CHECK_OK(spawn_on(rt, &a, patient_awaiter, NULL, "awaiter"));
    vt_err e;
    while ((e = vt_fiber_await(CA.target, NULL, VT_NOW)) == VT_ETIMEDOUT)
        nap();
    VT_CHECK_ERR(e, VT_EBUSY);
    VT_CHECK_ERR(vt_fiber_detach(CA.target), VT_EBUSY);
    atomic_store(&G.release, 1);
    VT_CHECK_OK(vt_fiber_await(a, NULL, VT_FOREVER));
    VT_CHECK_EQ(atomic_load(&CA.ok), 1);
    VT_CHECK_EQ(atomic_load(&CA.result), 31);
    VT_CHECK_ERR(vt_fiber_detach(CA.target), VT_ENOENT);
    vt_runtime_free(rt);
}

/* ---- Bad arguments and calls from the wrong place ------------------------------------- */

VT_TEST(bad_arguments)
{
    vt_runtime *rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    vt_fiber f = {0};
    vt_fiber_opts o;
    memset(&o, 0, sizeof o);
    o.runtime = rt;
    VT_CHECK_ERR(vt_fiber_spawn_ex(&f, NULL, NULL, &o), VT_EINVAL);
    VT_CHECK_ERR(vt_fiber_spawn_ex(NULL, times3, NULL, &o), VT_EINVAL);
    static const size_t bad_sizes[] = {1, VT_STACK_MIN - 1, VT_STACK_MAX + 1, (size_t)1 << 40};
    for (size_t i = 0; i < sizeof bad_sizes / sizeof bad_sizes[0]; i++) {
        o.stack_size = bad_sizes[i];
        VT_CHECK_ERR(vt_fiber_spawn_ex(&f, times3, NULL, &o), VT_EINVAL);
    }
    o.stack_size = VT_STACK_MIN + 1;
    void *r = NULL;
    VT_CHECK_OK(vt_fiber_spawn_ex(&f, times3, U2P(3), &o));
    VT_CHECK_OK(vt_fiber_await(f, &r, VT_FOREVER));
    VT_CHECK_EQ(P2U(r), 9);
    /* From a plain thread there is no current runtime. */
    VT_CHECK_ERR(vt_fiber_spawn(&f, times3, NULL), VT_ESTATE);
    VT_CHECK_ERR(vt_fiber_spawn_ex(&f, times3, NULL, NULL), VT_ESTATE);
    memset(&o, 0, sizeof o);
    VT_CHECK_ERR(vt_fiber_spawn_ex(&f, times3, NULL, &o), VT_ESTATE);

    VT_CHECK_ERR(vt_runtime_dump(rt, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_runtime_dump(NULL, stdout), VT_EINVAL); /* no current runtime */
    VT_CHECK_ERR(vt_runtime_stats_get(rt, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_scope_new(NULL, rt), VT_EINVAL);
    vt_scope *s = NULL;
    VT_CHECK_ERR(vt_scope_new(&s, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_scope_wait(NULL, VT_NOW), VT_EINVAL);
    vt_scope_close(NULL);
    VT_CHECK_ERR(vt_runtime_drive(NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_runtime_drive(rt), VT_ENOTSUP);
    vt_runtime_free(rt);
}

static struct {
    vt_err set_null, set_ok;
    int mask_prev, mask_prev2;
    char name[64];
} FO;

static void *fiber_only_body(void *arg)
{
    (void)arg;
    FO.set_null = vt_fiber_set_name(NULL);
    FO.set_ok = vt_fiber_set_name("renamed");
    snprintf(FO.name, sizeof FO.name, "%s", vt_fiber_name());
    FO.mask_prev = vt_cancel_mask(1);
    FO.mask_prev2 = vt_cancel_mask(0);
    return NULL;
}

VT_TEST(fiber_only_calls_from_a_thread)
{
    VT_CHECK_ERR(vt_fiber_yield(), VT_ESTATE);
    VT_CHECK_ERR(vt_fiber_set_name("x"), VT_ESTATE);
    VT_CHECK_EQ(vt_fiber_self().id, 0);
    VT_CHECK_EQ(vt_fiber_in(), 0);
    VT_CHECK_STR_EQ(vt_fiber_name(), "");
    VT_CHECK_EQ(vt_cancel_mask(1), -1);
    VT_CHECK_EQ(vt_cancel_mask(0), -1);
    VT_CHECK_EQ(vt_cancelled(), 0);
    VT_CHECK_NULL(vt_runtime_current());
    /* The thread's clock is vt_now_ns. */
    int64_t a = vt_now_ns();
    int64_t t = vt_fiber_now();
    int64_t b = vt_now_ns();
    VT_CHECK_LE(a, t);
    VT_CHECK_LE(t, b);
    VT_CHECK_EQ(vt_fiber_deadline(-1), VT_FOREVER);
    int64_t d = vt_fiber_deadline(VT_SEC(5));
    VT_CHECK_GE(d, b + VT_SEC(5));
    /* And in a fiber, they work. */
    vt_runtime *rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    vt_fiber f;
    VT_CHECK_OK(spawn_on(rt, &f, fiber_only_body, NULL, "original"));
    VT_CHECK_OK(vt_fiber_await(f, NULL, VT_FOREVER));
    VT_CHECK_ERR(FO.set_null, VT_EINVAL);
    VT_CHECK_OK(FO.set_ok);
    VT_CHECK_STR_EQ(FO.name, "renamed");
    VT_CHECK_EQ(FO.mask_prev, 0);
    VT_CHECK_EQ(FO.mask_prev2, 1);
    vt_runtime_free(rt);
}

/* ---- Names, the dump, the statistics ---------------------------------------------------- */

static struct {
    char seen[4][64];
    _Atomic long read;
} NM;

static void *report_name(void *arg)
{
    int slot = (int)P2U(arg);
    if (slot == 3) /* waits until the spawner scribbled over its buffer */
        while (!atomic_load(&G.release))
            vt_sleep_ms(1);
    snprintf(NM.seen[slot], sizeof NM.seen[slot], "%s", vt_fiber_name());
    atomic_fetch_add(&NM.read, 1);
    return NULL;
}

VT_TEST(names)
{
    memset(&NM, 0, sizeof NM);
    gate_reset();
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_fiber f[4];
    const char *long_name = "a-name-much-longer-than-thirty-one-bytes";
    char buf[32];
    snprintf(buf, sizeof buf, "copied");
    VT_CHECK_OK(spawn_on(rt, &f[0], report_name, U2P(0), NULL));
    VT_CHECK_OK(spawn_on(rt, &f[1], report_name, U2P(1), "worker-7"));
    VT_CHECK_OK(spawn_on(rt, &f[2], report_name, U2P(2), long_name));
    VT_CHECK_OK(spawn_on(rt, &f[3], report_name, U2P(3), buf));
    memset(buf, 'X', sizeof buf - 1);
    atomic_store(&G.release, 1);
    for (int i = 0; i < 4; i++)
        VT_CHECK_OK(vt_fiber_await(f[i], NULL, VT_FOREVER));
    VT_CHECK_STR_EQ(NM.seen[0], "fiber");
    VT_CHECK_STR_EQ(NM.seen[1], "worker-7");
    VT_CHECK_EQ(strlen(NM.seen[2]), VT_FIBER_NAME_MAX - 1);
    VT_CHECK_EQ(strncmp(NM.seen[2], long_name, VT_FIBER_NAME_MAX - 1), 0);
    VT_CHECK_STR_EQ(NM.seen[3], "copied");
    vt_runtime_free(rt);
}

static struct {
    vt_fiber sleeper;
    _Atomic long ready;
    char self_dump_line[256];
    vt_err self_dump_err;
} DU;

static void *dump_sleeper(void *arg)
{
    (void)arg;
    atomic_fetch_add(&DU.ready, 1);
    vt_sleep_until(VT_FOREVER);
    return NULL;
}

static void *dump_awaiter(void *arg)
{
    (void)arg;
    atomic_fetch_add(&DU.ready, 1);
    vt_fiber_await(DU.sleeper, NULL, VT_FOREVER);
    return NULL;
}

static void *dump_self(void *arg)
{
    (void)arg;
    char *text = dump_text(NULL, &DU.self_dump_err);
    char *line = line_of(text, "dump-self-xyz");
    snprintf(DU.self_dump_line, sizeof DU.self_dump_line, "%s", line ? line : "");
    free(line);
    free(text);
    return NULL;
}

/* Polls the dump until both fibers show as waiting: they said they were
 * about to block, and nothing wakes them. */
VT_TEST(dump_lists_names_and_states)
{
    memset(&DU, 0, sizeof DU);
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_fiber aw;
    VT_CHECK_OK(spawn_on(rt, &DU.sleeper, dump_sleeper, NULL, "dumped-sleeper"));
    VT_CHECK_OK(spawn_on(rt, &aw, dump_awaiter, NULL, "dumped-awaiter"));
    wait_for(&DU.ready, 2);
    char *text = NULL, *l1 = NULL, *l2 = NULL;
    for (;;) {
        vt_err e = VT_EINVAL;
        free(text);
        free(l1);
        free(l2);
        text = dump_text(rt, &e);
        VT_CHECK_OK(e);
        l1 = line_of(text, "dumped-sleeper");
        l2 = line_of(text, "dumped-awaiter");
        if (l1 && l2 && strstr(l1, "waiting") && strstr(l2, "waiting"))
            break;
        nap();
    }
    /* One line per fiber. */
    const char *at = strstr(text, "dumped-sleeper");
    VT_CHECK(at && !strstr(at + 1, "dumped-sleeper"));
    free(text);
    free(l1);
    free(l2);

    /* From a fiber, NULL is its own runtime, where it is running. */
    vt_fiber me;
    VT_CHECK_OK(spawn_on(rt, &me, dump_self, NULL, "dump-self-xyz"));
    VT_CHECK_OK(vt_fiber_await(me, NULL, VT_FOREVER));
    VT_CHECK_OK(DU.self_dump_err);
    VT_CHECK(strstr(DU.self_dump_line, "running") != NULL);

    VT_CHECK_OK(vt_fiber_cancel(DU.sleeper));
    VT_CHECK_OK(vt_fiber_await(aw, NULL, VT_FOREVER));
    vt_runtime_free(rt);
}

static _Atomic long stats_blocked;

static void *yield_thrice(void *arg)
{
    (void)arg;
    for (int i = 0; i < 3; i++)
        vt_fiber_yield();
    return NULL;
}

static void *block_until_cancelled(void *arg)
{
    (void)arg;
    atomic_fetch_add(&stats_blocked, 1);
    vt_sleep_until(VT_FOREVER);
    return NULL;
}

VT_TEST(stats_count_fibers_stacks_and_switches)
{
    for (int guards = 0; guards < 2; guards++) {
        vt_runtime_opts o;
        vt_runtime_opts_init(&o);
        o.pool.workers = 2;
        o.no_guard_pages = !guards;
        vt_runtime *rt = NULL;
        VT_CHECK_OK(vt_runtime_new(&rt, &o));
        vt_runtime_stats s0, s1, s2;
        VT_CHECK_OK(vt_runtime_stats_get(rt, &s0));
        VT_CHECK_EQ(s0.live, s0.spawned - s0.finished);
        enum {
            N = 100
        };
        vt_fiber f[N];
        for (int i = 0; i < N; i++)
            VT_CHECK_OK(spawn_on(rt, &f[i], yield_thrice, NULL, NULL));
        for (int i = 0; i < N; i++)
            VT_CHECK_OK(vt_fiber_await(f[i], NULL, VT_FOREVER));
        VT_CHECK_OK(vt_runtime_stats_get(rt, &s1));
        VT_CHECK_EQ(s1.spawned - s0.spawned, N);
        VT_CHECK_EQ(s1.finished - s0.finished, N);
        VT_CHECK_EQ(s1.live, 0);
        /* Each fiber was switched to and away from at least once. */
        VT_CHECK_GE(s1.switches - s0.switches, 2 * N);
        VT_CHECK_GE(s1.stacks, 1);
        VT_CHECK_LE(s1.stacks, N + 8); /* never more than were alive, and caches */
        VT_CHECK_GE(s1.stack_bytes, s1.stacks * VT_STACK_MIN);
        VT_CHECK_LE(s1.guard_pages, s1.stacks);
        if (!guards)
            VT_CHECK_EQ(s1.guard_pages, 0);

        /* Blocked fibers are live. */
        atomic_store(&stats_blocked, 0);
        for (int i = 0; i < 10; i++)
            VT_CHECK_OK(spawn_on(rt, &f[i], block_until_cancelled, NULL, NULL));
        wait_for(&stats_blocked, 10);
        VT_CHECK_OK(vt_runtime_stats_get(rt, &s2));
        VT_CHECK_EQ(s2.live, 10);
        VT_CHECK_EQ(s2.spawned - s1.spawned, 10);
        VT_CHECK_EQ(s2.live, s2.spawned - s2.finished);
        for (int i = 0; i < 10; i++)
            VT_CHECK_OK(vt_fiber_cancel(f[i]));
        for (int i = 0; i < 10; i++)
            VT_CHECK_OK(vt_fiber_await(f[i], NULL, VT_FOREVER));
        VT_CHECK_OK(vt_runtime_stats_get(rt, &s2));
        VT_CHECK_EQ(s2.live, 0);
        vt_runtime_free(rt);
    }
}

/* ---- Yield -------------------------------------------------------------------------
 * N fibers on one worker, all ready from the start, each recording its id
 * and yielding K times: between two turns of a fiber, every other fiber
 * that still has turns to take runs exactly once (round robin), so no fiber
 * runs twice in a row while others are ready. */
enum {
    RR_N = 10,
    RR_K = 60
};
static struct {
    int log[RR_N * RR_K];
    int n;
    int bad;
} RR;

static void *rr_fiber(void *arg)
{
    int id = (int)P2U(arg);
    for (int k = 0; k < RR_K; k++) {
        if (RR.n < RR_N * RR_K)
            RR.log[RR.n] = id;
        RR.n++;
        if (vt_fiber_yield() != VT_OK)
            RR.bad++;
    }
    return NULL;
}

static void *rr_root(void *arg)
{
    (void)arg;
    vt_fiber f[RR_N];
    /* Spawned without yielding in between: none runs before the root
     * suspends in its first await, so all are ready together. */
    for (int i = 0; i < RR_N; i++)
        if (vt_fiber_spawn(&f[i], rr_fiber, U2P(i)) != VT_OK)
            RR.bad++;
    for (int i = 0; i < RR_N; i++)
        if (vt_fiber_await(f[i], NULL, VT_FOREVER) != VT_OK)
            RR.bad++;
    return NULL;
}

VT_TEST(yield_is_round_robin)
{
    for (int round = 0; round < 3; round++) {
        memset(&RR, 0, sizeof RR);
        vt_runtime_opts o;
        vt_runtime_opts_init(&o);
        o.pool.workers = 1;
        VT_CHECK_OK(vt_runtime_main(&o, rr_root, NULL, NULL));
        VT_CHECK_EQ(RR.bad, 0);
        VT_CHECK_EQ(RR.n, RR_N * RR_K);
        int last[RR_N];
        for (int i = 0; i < RR_N; i++)
            last[i] = -1;
        for (int p = 0; p < RR.n; p++)
            last[RR.log[p]] = p;
        int violations = 0, first_bad = -1;
        for (int p = 0; p < RR.n; p++) {
            int a = RR.log[p], q = p + 1;
            while (q < RR.n && RR.log[q] != a)
                q++;
            if (q == RR.n)
                continue;
            int cnt[RR_N] = {0};
            for (int x = p + 1; x < q; x++)
                cnt[RR.log[x]]++;
            for (int b = 0; b < RR_N; b++) {
                if (b == a)
                    continue;
                int ok = last[b] > q ? cnt[b] == 1 : cnt[b] <= 1;
                if (!ok && violations++ == 0)
                    first_bad = p;
            }
        }
        if (violations) {
            printf("  %d violations; the turns from %d:", violations, first_bad);
            for (int x = first_bad; x < RR.n && x < first_bad + 3 * RR_N; x++)
                printf(" %d", RR.log[x]);
            printf("\n");
        }
        VT_CHECK_EQ(violations, 0);
    }
}

static void *lone_yielder(void *arg)
{
    (void)arg;
    uintptr_t bad = 0;
    for (int i = 0; i < 1000; i++)
        bad += vt_fiber_yield() != VT_OK;
    return U2P(bad);
}

VT_TEST(yield_alone_returns)
{
    vt_runtime *rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    vt_fiber f;
    void *r = U2P(1);
    VT_CHECK_OK(spawn_on(rt, &f, lone_yielder, NULL, NULL));
    VT_CHECK_OK(vt_fiber_await(f, &r, VT_FOREVER));
    VT_CHECK_EQ(P2U(r), 0);
    vt_runtime_free(rt);
}

/* ---- Sleep ---------------------------------------------------------------------------- */

static _Atomic long early, sleep_errors;

static void *sleepy(void *arg)
{
    uint64_t h = vt_hash_mix64(P2U(arg));
    for (int i = 0; i < 20; i++, h = vt_hash_mix64(h)) {
        int64_t d = (int64_t)(h % (uint64_t)VT_US(300));
        int64_t before = vt_fiber_now(), after;
        vt_err e;
        switch (i % 4) {
        case 0:
            e = vt_sleep_ns(d);
            break;
        case 1:
            e = vt_sleep_until(before + d);
            break;
        case 2:
            e = vt_sleep_until(vt_fiber_deadline(d));
            break;
        default:
            d = VT_MS((int64_t)(h % 2));
            e = vt_sleep_ms(d / 1000000);
            break;
        }
        after = vt_fiber_now();
        if (e != VT_OK)
            atomic_fetch_add(&sleep_errors, 1);
        if (after - before < d)
            atomic_fetch_add(&early, 1);
    }
    return NULL;
}

VT_TEST(sleep_never_wakes_early)
{
    atomic_store(&early, 0);
    atomic_store(&sleep_errors, 0);
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    enum {
        N = 64
    };
    vt_fiber f[N];
    uint64_t salt = vt_test_rand();
    for (int i = 0; i < N; i++)
        VT_CHECK_OK(spawn_on(rt, &f[i], sleepy, U2P(salt + (uint64_t)i), "sleepy"));
    for (int i = 0; i < N; i++)
        VT_CHECK_OK(vt_fiber_await(f[i], NULL, VT_FOREVER));
    VT_CHECK_EQ(atomic_load(&early), 0);
    VT_CHECK_EQ(atomic_load(&sleep_errors), 0);
    /* From a plain thread, on vt_now_ns. */
    for (int i = 0; i < 20; i++) {
        int64_t d = (int64_t)(vt_test_rand() % (uint64_t)VT_US(500));
        int64_t before = vt_now_ns();
        VT_CHECK_OK(i % 2 ? vt_sleep_ns(d) : vt_sleep_until(before + d));
        VT_CHECK_GE(vt_now_ns() - before, d);
    }
    VT_CHECK_OK(vt_sleep_ns(0));
    VT_CHECK_OK(vt_sleep_ms(0));
    vt_runtime_free(rt);
}

/* N fibers on one worker sleep until distinct deadlines, given in shuffled
 * order; they wake in deadline order. The premise — every fiber went to
 * sleep before the first deadline — is checked, and the run repeated with
 * more slack when a stalled machine broke it. One worker taking ready
 * fibers oldest first (a FIFO pool) runs them in the order they woke. */
enum {
    SO_N = 40
};
static struct {
    int64_t deadline[SO_N];
    int order[SO_N];
    _Atomic int n;
    _Atomic int64_t latest_start;
    _Atomic long bad;
} SO;

static void *sleep_in_line(void *arg)
{
    int i = (int)P2U(arg);
    int64_t now = vt_fiber_now();
    int64_t prev = atomic_load(&SO.latest_start);
    while (now > prev && !atomic_compare_exchange_weak(&SO.latest_start, &prev, now)) {
    }
    vt_err e = vt_sleep_until(SO.deadline[i]);
    if (e != VT_OK || vt_fiber_now() < SO.deadline[i])
        atomic_fetch_add(&SO.bad, 1);
    SO.order[atomic_fetch_add(&SO.n, 1)] = i;
    return NULL;
}

VT_TEST(sleepers_wake_in_deadline_order)
{
    int64_t slack = VT_MS(50);
    for (int attempt = 0;; attempt++) {
        memset(&SO, 0, sizeof SO);
        vt_runtime_opts o;
        vt_runtime_opts_init(&o);
        o.pool.workers = 1;
        o.pool.policy = VT_POLICY_FIFO;
        vt_runtime *rt = NULL;
        VT_CHECK_OK(vt_runtime_new(&rt, &o));
        int perm[SO_N];
        for (int i = 0; i < SO_N; i++)
            perm[i] = i;
        for (int i = SO_N - 1; i > 0; i--) {
            int j = (int)(vt_test_rand() % (uint64_t)(i + 1)), t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        int64_t base = vt_now_ns() + slack;
        for (int i = 0; i < SO_N; i++)
            SO.deadline[i] = base + perm[i] * VT_US(400);
        vt_fiber f[SO_N];
        for (int i = 0; i < SO_N; i++)
            VT_CHECK_OK(spawn_on(rt, &f[i], sleep_in_line, U2P(i), "in-line"));
        for (int i = 0; i < SO_N; i++)
            VT_CHECK_OK(vt_fiber_await(f[i], NULL, VT_FOREVER));
        vt_runtime_free(rt);
        VT_CHECK_EQ(atomic_load(&SO.bad), 0);
        VT_CHECK_EQ(atomic_load(&SO.n), SO_N);
        if (atomic_load(&SO.latest_start) < base) {
            for (int k = 1; k < SO_N; k++)
                VT_CHECK_LT(SO.deadline[SO.order[k - 1]], SO.deadline[SO.order[k]]);
            break;
        }
        VT_CHECK_LT(attempt, 5); /* a machine stalled for seconds, five times */
        slack *= 4;
    }
}

/* ---- Timeouts on await ------------------------------------------------------------------ */

static void *await_with_timeout(void *arg)
{
    vt_fiber target = {(uint64_t)P2U(arg)};
    void *r = NULL;
    int64_t d = vt_fiber_deadline(VT_MS(2));
    vt_err e = vt_fiber_await(target, &r, d);
    int late_enough = vt_fiber_now() >= d;
    /* Short ones too, never early either. */
    uint64_t h = vt_hash_mix64(target.id);
    for (int i = 0; i < 20 && e == VT_ETIMEDOUT; i++, h = vt_hash_mix64(h)) {
        int64_t dd = vt_fiber_deadline((int64_t)(h % (uint64_t)VT_US(300)));
        if (vt_fiber_await(target, &r, dd) != VT_ETIMEDOUT || vt_fiber_now() < dd)
            late_enough = 0;
    }
    vt_err e2 = vt_fiber_await(target, &r, VT_NOW);
    return U2P((uintptr_t)e | (uintptr_t)e2 << 8 | (uintptr_t)late_enough << 16);
}

VT_TEST(await_timeout_keeps_the_handle)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    gate_reset();
    vt_fiber target, w;
    VT_CHECK_OK(spawn_on(rt, &target, gated, U2P(123), "slow"));
    /* From a thread. */
    int64_t d = vt_deadline_after(VT_MS(2));
    VT_CHECK_ERR(vt_fiber_await(target, NULL, d), VT_ETIMEDOUT);
    VT_CHECK_GE(vt_now_ns(), d);
    for (int i = 0; i < 20; i++) {
        d = vt_deadline_after((int64_t)(vt_test_rand() % (uint64_t)VT_US(300)));
        VT_CHECK_ERR(vt_fiber_await(target, NULL, d), VT_ETIMEDOUT);
        VT_CHECK_GE(vt_now_ns(), d);
    }
    VT_CHECK_ERR(vt_fiber_await(target, NULL, VT_NOW), VT_ETIMEDOUT);
    /* From a fiber. */
    void *r = NULL;
    VT_CHECK_OK(spawn_on(rt, &w, await_with_timeout, U2P(target.id), "impatient"));
    VT_CHECK_OK(vt_fiber_await(w, &r, VT_FOREVER));
    VT_CHECK_ERR((vt_err)(P2U(r) & 0xff), VT_ETIMEDOUT);
    VT_CHECK_ERR((vt_err)((P2U(r) >> 8) & 0xff), VT_ETIMEDOUT);
    VT_CHECK_EQ(P2U(r) >> 16, 1);
    /* The handle is still good. */
    atomic_store(&G.release, 1);
    r = NULL;
    VT_CHECK_OK(vt_fiber_await(target, &r, VT_FOREVER));
    VT_CHECK_EQ(P2U(r), 123);
    VT_CHECK_ERR(vt_fiber_await(target, &r, VT_FOREVER), VT_ENOENT);
    vt_runtime_free(rt);
}

/* ---- Many fibers ------------------------------------------------------------------------ */

static struct {
    long total, batch;
    uintptr_t sum;
    long errors;
    vt_runtime_stats stats;
} MF;

static void *million_root(void *arg)
{
    (void)arg;
    vt_fiber *h = malloc((size_t)MF.batch * sizeof *h);
    if (!h)
        return NULL;
    for (long done = 0; done < MF.total; done += MF.batch) {
        long n = MF.total - done < MF.batch ? MF.total - done : MF.batch;
        for (long i = 0; i < n; i++)
            if (vt_fiber_spawn(&h[i], plus_one, U2P(done + i)) != VT_OK)
                MF.errors++;
        for (long i = 0; i < n; i++) {
            void *r = NULL;
            if (vt_fiber_await(h[i], &r, VT_FOREVER) != VT_OK)
                MF.errors++;
            MF.sum += P2U(r);
        }
    }
    free(h);
    vt_runtime_stats_get(vt_runtime_current(), &MF.stats);
    return U2P(1);
}

VT_TEST(a_million_fibers)
{
    memset(&MF, 0, sizeof MF);
    MF.total = scaled(1000000);
    MF.batch = scaled_by(10000, ALIVE_DIV);
    void *r = NULL;
    VT_CHECK_OK(vt_runtime_main(NULL, million_root, NULL, &r));
    VT_CHECK_EQ(P2U(r), 1);
    VT_CHECK_EQ(MF.errors, 0);
    uintptr_t n = (uintptr_t)MF.total;
    VT_CHECK_EQ(MF.sum, n * (n + 1) / 2);
    VT_CHECK_GE(MF.stats.spawned, n + 1);
    VT_CHECK_EQ(MF.stats.live, 1); /* the root */
    /* Stacks are reused, not one per fiber. */
    VT_CHECK_LT(MF.stats.stacks, n / 4 + 2 * (uintptr_t)MF.batch);
}

/* Once warm, a spawn allocates nothing: one worker, so nothing else runs
 * while the root spawns. */
static long warm_allocs = -1;

static void *warm_root(void *arg)
{
    (void)arg;
#if defined(VT_SANITIZE_THREAD)
    enum {
        B = 100
    };
#else
    enum {
        B = 1000
    };
#endif
    static vt_fiber h[B];
    for (int round = 0; round < 3; round++) {
        if (round == 2)
            vt_test_alloc_reset();
        for (int i = 0; i < B; i++)
            if (vt_fiber_spawn(&h[i], plus_one, U2P(i)) != VT_OK)
                return NULL;
        if (round == 2)
            warm_allocs = vt_test_alloc_count();
        for (int i = 0; i < B; i++)
            if (vt_fiber_await(h[i], NULL, VT_FOREVER) != VT_OK)
                return NULL;
    }
    return U2P(1);
}

VT_TEST(spawn_allocates_nothing_once_warm)
{
    vt_runtime_opts o;
    vt_runtime_opts_init(&o);
    o.pool.workers = 1;
    void *r = NULL;
    warm_allocs = -1;
    VT_CHECK_OK(vt_runtime_main(&o, warm_root, NULL, &r));
    VT_CHECK_EQ(P2U(r), 1);
    VT_CHECK_EQ(warm_allocs, 0);
}

/* 100k fibers alive at once, each asleep until an hour from now, in one
 * scope; cancelling the scope ends every sleep early. */
static struct {
    _Atomic long entered, cancelled, other;
} HK;

static void *far_sleeper(void *arg)
{
    atomic_fetch_add(&HK.entered, 1);
    vt_err e = vt_sleep_until(vt_fiber_deadline(VT_SEC(3600)));
    atomic_fetch_add(e == VT_ECANCELED ? &HK.cancelled : &HK.other, 1);
    return arg;
}

VT_TEST(a_hundred_thousand_alive_at_once)
{
    memset(&HK, 0, sizeof HK);
    const long n = scaled_by(100000, ALIVE_DIV);
    vt_runtime_opts o;
    vt_runtime_opts_init(&o);
    o.pool.workers = 2;
    o.stack_size = VT_STACK_MIN;
    vt_runtime *rt = NULL;
    VT_CHECK_OK(vt_runtime_new(&rt, &o));
    vt_scope *s = NULL;
    VT_CHECK_OK(vt_scope_new(&s, rt));
    vt_fiber *h = malloc((size_t)n * sizeof *h);
    VT_CHECK_NOT_NULL(h);
    vt_fiber_opts fo;
    memset(&fo, 0, sizeof fo);
    fo.runtime = rt;
    fo.scope = s;
    fo.name = "far";
    long spawned = 0;
    for (long i = 0; i < n; i++) {
        if (vt_fiber_spawn_ex(&h[i], far_sleeper, U2P(i), &fo) != VT_OK)
            break;
        spawned++;
    }
    VT_CHECK_EQ(spawned, n);
    wait_for(&HK.entered, n);
    VT_CHECK_EQ(vt_scope_live(s), (uint64_t)n);
    vt_runtime_stats st;
    VT_CHECK_OK(vt_runtime_stats_get(rt, &st));
    VT_CHECK_GE(st.live, (uint64_t)n);
    VT_CHECK_GE(st.stacks, (uint64_t)n);
    VT_CHECK_OK(vt_scope_cancel(s));
    long bad = 0;
    for (long i = 0; i < n; i++) {
        void *r = NULL;
        if (vt_fiber_await(h[i], &r, VT_FOREVER) != VT_OK || P2U(r) != (uintptr_t)i)
            bad++;
    }
    VT_CHECK_EQ(bad, 0);
    VT_CHECK_EQ(atomic_load(&HK.cancelled), n);
    VT_CHECK_EQ(atomic_load(&HK.other), 0);
    VT_CHECK_EQ(vt_scope_live(s), 0);
    vt_scope_close(s);
    free(h);
    vt_runtime_free(rt);
}

/* ---- Migration ------------------------------------------------------------------------
 * A fiber that yields may resume on another worker: allowed, not
 * required, so it is counted and shown, never asserted. Each observed
 * index must be a worker's. */
static _Atomic long migrations, bad_index;

static void *wanderer(void *arg)
{
    (void)arg;
    int at = vt_worker_index();
    for (int i = 0; i < 2000; i++) {
        if (i % 100 == 99)
            vt_sleep_ns(VT_US(10));
        else
            vt_fiber_yield();
        int now = vt_worker_index();
        if (now < 0 || now >= 2)
            atomic_fetch_add(&bad_index, 1);
        if (now != at)
            atomic_fetch_add(&migrations, 1);
        at = now;
    }
    return NULL;
}

VT_TEST(fibers_may_migrate)
{
    atomic_store(&migrations, 0);
    atomic_store(&bad_index, 0);
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    enum {
        N = 8
    };
    vt_fiber f[N];
    for (int i = 0; i < N; i++)
        VT_CHECK_OK(spawn_on(rt, &f[i], wanderer, NULL, "wanderer"));
    for (int i = 0; i < N; i++)
        VT_CHECK_OK(vt_fiber_await(f[i], NULL, VT_FOREVER));
    VT_CHECK_EQ(atomic_load(&bad_index), 0);
    printf("  %ld migrations in %d resumptions\n", atomic_load(&migrations), N * 2000);
    vt_runtime_free(rt);
}

/* ---- Stacks ---------------------------------------------------------------------------- */

static __attribute__((noinline)) uint64_t burn(int n, uint64_t acc)
{
    volatile unsigned char buf[256];
    buf[0] = (unsigned char)n;
    buf[255] = (unsigned char)acc;
    if (n == 0)
        return acc;
    uint64_t r = burn(n - 1, acc * 31 + (uint64_t)n);
    return r + buf[0] + buf[255];
}

static void *burner(void *arg)
{
    return U2P(burn((int)P2U(arg), 1));
}

VT_TEST(deep_recursion_fits_the_stack)
{
    /* 32 KiB of frames in the default 64 KiB stack (ASan's redzones make
     * each frame larger: half as many there), and 512 KiB in a 1 MiB one. */
#if defined(VT_SANITIZE_ADDRESS)
    const int in_default = 64;
#else
    const int in_default = 128;
#endif
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_fiber f;
    void *r = NULL;
    VT_CHECK_OK(spawn_on(rt, &f, burner, U2P(in_default), "burner"));
    VT_CHECK_OK(vt_fiber_await(f, &r, VT_FOREVER));
    VT_CHECK_EQ(P2U(r), burn(in_default, 1));
    vt_fiber_opts o;
    memset(&o, 0, sizeof o);
    o.runtime = rt;
    o.stack_size = 1 << 20;
    VT_CHECK_OK(vt_fiber_spawn_ex(&f, burner, U2P(2000), &o));
    VT_CHECK_OK(vt_fiber_await(f, &r, VT_FOREVER));
    VT_CHECK_EQ(P2U(r), burn(2000, 1));
    vt_runtime_free(rt);
}

/* ---- Allocation failures and leaks ------------------------------------------------------ */

VT_TEST(runtime_leaks_nothing)
{
    /* One runtime first: whatever is set up once per process stays. */
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_runtime_free(rt);
    long live0 = vt_test_alloc_live();
    for (int round = 0; round < 10; round++) {
        rt = rt_new(round % 3 + 1);
        VT_CHECK_NOT_NULL(rt);
        vt_fiber f[20];
        for (int i = 0; i < 20; i++)
            VT_CHECK_OK(spawn_on(rt, &f[i], yield_thrice, NULL, "leak?"));
        for (int i = 0; i < 20; i++)
            VT_CHECK_OK(vt_fiber_await(f[i], NULL, VT_FOREVER));
        vt_scope *s = NULL;
        VT_CHECK_OK(vt_scope_new(&s, rt));
        vt_scope_close(s);
        vt_runtime_free(rt);
        VT_CHECK_EQ(vt_test_alloc_live(), live0);
    }
}

VT_TEST(runtime_new_out_of_memory)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_runtime_free(rt);
    long live0 = vt_test_alloc_live();
    vt_runtime_opts o;
    vt_runtime_opts_init(&o);
    o.pool.workers = 2;
    for (long k = 1;; k++) {
        VT_CHECK_LT(k, 10000);
        rt = NULL;
        vt_test_alloc_fail_at(k);
        vt_err e = vt_runtime_new(&rt, &o);
        long made = vt_test_alloc_count();
        vt_test_alloc_reset();
        if (e == VT_OK) {
            vt_fiber f;
            void *r = NULL;
            VT_CHECK_OK(spawn_on(rt, &f, times3, U2P(5), NULL));
            VT_CHECK_OK(vt_fiber_await(f, &r, VT_FOREVER));
            VT_CHECK_EQ(P2U(r), 15);
            vt_runtime_free(rt);
            break;
        }
        if (e != VT_ENOMEM)
            printf("  allocation %ld of %ld failed\n", k, made);
        VT_CHECK_ERR(e, VT_ENOMEM);
        VT_CHECK_EQ(vt_test_alloc_live(), live0);
    }
    VT_CHECK_EQ(vt_test_alloc_live(), live0);
}

static _Atomic long oom_ran;

static void *count_run(void *arg)
{
    (void)arg;
    atomic_fetch_add(&oom_ran, 1);
    return U2P(8);
}

VT_TEST(spawn_out_of_memory)
{
    vt_runtime *rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    atomic_store(&oom_ran, 0);
    vt_runtime_stats s0, s1;
    VT_CHECK_OK(vt_runtime_stats_get(rt, &s0));
    vt_fiber f;
    for (long k = 1;; k++) {
        VT_CHECK_LT(k, 1000);
        vt_test_alloc_fail_at(k);
        vt_err e = spawn_on(rt, &f, count_run, NULL, "oom");
        vt_test_alloc_reset();
        if (e == VT_OK)
            break;
        VT_CHECK_ERR(e, VT_ENOMEM);
    }
    void *r = NULL;
    VT_CHECK_OK(vt_fiber_await(f, &r, VT_FOREVER));
    VT_CHECK_EQ(P2U(r), 8);
    VT_CHECK_OK(vt_runtime_stats_get(rt, &s1));
    VT_CHECK_EQ(s1.spawned - s0.spawned, 1); /* a failed spawn started nothing */
    vt_runtime_free(rt);
    VT_CHECK_EQ(atomic_load(&oom_ran), 1);
}
