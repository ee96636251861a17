/* test_overflow.c — a fiber that runs off its stack hits the guard page
 * below it, and the process dies of SIGSEGV after a message on stderr that
 * names the fiber and says "overflow".
 *
 * The overflow happens in a fresh copy of this program (fork, then exec of
 * our own executable with a variable in the environment that a constructor
 * looks for before main): a forked child of a threaded process may not
 * start threads under TSan, and the copy starts a runtime. Its stderr
 * comes back through a pipe. Under ASan, whose own handler may speak
 * first, its "stack-overflow" report is accepted too. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vt_test.h"
#include "async_test.h"
#include "vitte/async.h"

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

#define CHILD_ENV "VT_TEST_OVERFLOW_SCENARIO"

/* ---- The child ---------------------------------------------------------------------- */

static volatile int stop_recursing; /* never set: keeps the compiler from
                                       proving the recursion endless */

static __attribute__((noinline)) int runaway(volatile char *prev, int depth)
{
    volatile char buf[512];
    buf[0] = (char)depth;
    buf[511] = prev ? prev[0] : 0;
    if (depth < 0 || stop_recursing)
        return buf[511];
    return runaway(buf, depth + 1) + buf[0];
}

static void *deep_body(void *arg)
{
    (void)arg;
    return U2P(runaway(NULL, 0));
}

static void *bystander(void *arg)
{
    for (;;)
        if (vt_sleep_ms(1) != VT_OK)
            return arg;
}

/* Scenario 1: one small-stack fiber alone. Scenario 2: a fiber with a
 * larger stack on a busy two-worker runtime. */
static void *child_root(void *arg)
{
    int scenario = (int)(uintptr_t)arg;
    vt_fiber_opts o;
    memset(&o, 0, sizeof o);
    if (scenario == 2) {
        vt_fiber_opts b;
        memset(&b, 0, sizeof b);
        b.detached = 1;
        for (int i = 0; i < 50; i++)
            vt_fiber_spawn_ex(NULL, bystander, NULL, &b);
        o.name = "deep-big";
        o.stack_size = 256 << 10;
    } else {
        o.name = "deep";
        o.stack_size = VT_STACK_MIN;
    }
    vt_fiber f;
    if (vt_fiber_spawn_ex(&f, deep_body, NULL, &o) != VT_OK)
        return NULL;
    vt_fiber_await(f, NULL, VT_FOREVER);
    return NULL;
}

__attribute__((constructor)) static void overflow_child(void)
{
    const char *s = getenv(CHILD_ENV);
    if (!s)
        return;
    vt_runtime_opts o;
    vt_runtime_opts_init(&o);
    o.pool.workers = 2;
    vt_err e = vt_runtime_main(&o, child_root, U2P(atoi(s)), NULL);
    fprintf(stderr, "survived the overflow: %s\n", vt_strerror(e));
    _exit(3);
}

/* ---- The parent ----------------------------------------------------------------------- */

extern char **environ;

typedef struct outcome {
    int status;
    char err[16384]; /* the child's stderr */
} outcome;

static int run_child(int scenario, outcome *out)
{
    char self[PATH_MAX];
    /* readlink rather than exec of /proc/self/exe itself: under a tool
     * that runs us (valgrind), the link names our program, not the tool. */
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return 0;
    self[n] = 0;
    size_t ne = 0;
    while (environ[ne])
        ne++;
    char **env = calloc(ne + 2, sizeof *env);
    char var[64];
    if (!env)
        return 0;
    memcpy(env, environ, ne * sizeof *env);
    snprintf(var, sizeof var, "%s=%d", CHILD_ENV, scenario);
    env[ne] = var;
    int fds[2];
    if (pipe(fds) != 0) {
        free(env);
        return 0;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        free(env);
        return 0;
    }
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], STDERR_FILENO);
        close(fds[1]);
        execle(self, self, (char *)NULL, env);
        _exit(127);
    }
    free(env);
    close(fds[1]);
    size_t got = 0;
    for (;;) {
        ssize_t r = read(fds[0], out->err + got, sizeof out->err - 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
        if (got == sizeof out->err - 1) {
            char sink[4096]; /* keep draining so the child is not blocked */
            while (read(fds[0], sink, sizeof sink) > 0) {
            }
            break;
        }
    }
    out->err[got] = 0;
    close(fds[0]);
    while (waitpid(pid, &out->status, 0) < 0)
        if (errno != EINTR)
            return 0;
    return 1;
}

/* The fiber's name and "overflow" on one line of what the child wrote. */
static int names_the_overflow(const char *text, const char *name)
{
    for (const char *line = text; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char buf[1024];
        snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf - 1 ? len : sizeof buf - 1), line);
        if (strstr(buf, name) && strstr(buf, "overflow"))
            return 1;
        line = end ? end + 1 : NULL;
    }
    return 0;
}

static void check_scenario(int scenario, const char *name)
{
    outcome *o = calloc(1, sizeof *o);
    VT_CHECK_NOT_NULL(o);
    int ran = run_child(scenario, o);
    if (!ran)
        free(o);
    VT_CHECK(ran);
    int st = o->status;
    int segv = WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV;
    int named = names_the_overflow(o->err, name);
#if defined(VT_SANITIZE_ADDRESS) || defined(VT_SANITIZE_THREAD)
    /* The sanitizer's handler may end the process (exit status) after ours
     * or instead of it. */
    int died = segv || (WIFEXITED(st) && WEXITSTATUS(st) != 0 && WEXITSTATUS(st) != 3);
    int reported = named || strstr(o->err, "stack-overflow") != NULL;
#else
    int died = segv;
    int reported = named;
#endif
    if (!died || !reported)
        printf("  scenario %d: status %#x (%s %d); stderr:\n%s\n", scenario, st,
               WIFSIGNALED(st) ? "signal" : "exit",
               WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st), o->err);
    free(o);
    VT_CHECK(died);
    VT_CHECK(reported);
}

VT_TEST(overflow_of_a_small_stack_is_reported)
{
    if (RUNNING_ON_VALGRIND)
        VT_SKIP("valgrind reports stack overflows its own way");
    check_scenario(1, "deep");
}

VT_TEST(overflow_on_a_busy_runtime_is_reported)
{
    if (RUNNING_ON_VALGRIND)
        VT_SKIP("valgrind reports stack overflows its own way");
    check_scenario(2, "deep-big");
}
