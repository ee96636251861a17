/* test_log.c — levels, VITTE_LOG, handlers, the default stderr handler. */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/platform.h"
#include "vt_test.h"

extern char **environ;

/* ---- VITTE_LOG, read at the first log call of a process ---------------------
 * Only a fresh process has not read it yet, so the test runs this executable
 * again with VT_LOG_PROBE set: the constructor below then does the probing
 * before the harness starts, prints what it saw and exits. */

static char probe_msgs[1024];

static void probe_handler(void *ud, vt_log_level level, const char *module, const char *msg)
{
    (void)ud;
    size_t n = strlen(probe_msgs);
    snprintf(probe_msgs + n, sizeof probe_msgs - n, "[%s %s %s]", vt_log_level_name(level), module, msg);
}

__attribute__((constructor)) static void probe(void)
{
    const char *mode = getenv("VT_LOG_PROBE");
    if (!mode)
        return;
    vt_log_set_handler(probe_handler, NULL);
    if (strcmp(mode, "set-first") == 0)
        vt_log_set_level(VT_LOG_ERROR);
    int level = (int)vt_log_get_level();
    /* Later reads do not go back to the environment. */
    setenv("VITTE_LOG", "trace", 1);
    int again = (int)vt_log_get_level();
    vt_log(VT_LOG_INFO, "probe", "info");
    vt_log(VT_LOG_WARN, "probe", "warn");
    printf("level=%d again=%d msgs=%s\n", level, again, probe_msgs);
    fflush(stdout);
    _exit(0);
}

/* Runs this executable with VITTE_LOG=value (unset if NULL) and the probe
 * mode, capturing its one line of output. */
static int run_probe(const char *value, const char *mode, char *out, size_t size)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return -1;
    self[n] = '\0';

    /* environ minus VITTE_LOG and VT_LOG_PROBE, plus ours. */
    size_t count = 0;
    while (environ[count])
        count++;
    char **env = calloc(count + 3, sizeof *env);
    size_t k = 0;
    for (size_t i = 0; i < count; i++)
        if (strncmp(environ[i], "VITTE_LOG=", 10) != 0 && strncmp(environ[i], "VT_LOG_PROBE=", 13) != 0)
            env[k++] = environ[i];
    char var[256], probe_var[64];
    snprintf(probe_var, sizeof probe_var, "VT_LOG_PROBE=%s", mode);
    env[k++] = probe_var;
    if (value) {
        snprintf(var, sizeof var, "VITTE_LOG=%s", value);
        env[k++] = var;
    }
    env[k] = NULL;

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    char *argv[] = {self, NULL};
    pid_t pid;
    int r = posix_spawn(&pid, self, &fa, NULL, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    free(env);
    close(fds[1]);
    if (r != 0) {
        close(fds[0]);
        return -1;
    }
    size_t got = 0;
    ssize_t m;
    while (got < size - 1 && (m = read(fds[0], out + got, size - 1 - got)) != 0) {
        if (m < 0 && errno == EINTR)
            continue;
        if (m < 0)
            break;
        got += (size_t)m;
    }
    out[got] = '\0';
    close(fds[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (got > 0 && out[got - 1] == '\n')
        out[got - 1] = '\0';
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void expect_probe(const char *value, const char *mode, const char *want)
{
    char out[2048];
    VT_CHECK_EQ(run_probe(value, mode, out, sizeof out), 0);
    VT_CHECK_STR_EQ(out, want);
}

VT_TEST(env_level_names)
{
    expect_probe("error", "env", "level=0 again=0 msgs=");
    expect_probe("warn", "env", "level=1 again=1 msgs=[warn probe warn]");
    expect_probe("info", "env", "level=2 again=2 msgs=[info probe info][warn probe warn]");
    expect_probe("debug", "env", "level=3 again=3 msgs=[info probe info][warn probe warn]");
    expect_probe("trace", "env", "level=4 again=4 msgs=[info probe info][warn probe warn]");
    expect_probe("DEBUG", "env", "level=3 again=3 msgs=[info probe info][warn probe warn]");
}

VT_TEST(env_default_and_bad_values)
{
    expect_probe(NULL, "env", "level=1 again=1 msgs=[warn probe warn]");
    expect_probe("", "env", "level=1 again=1 msgs=[warn probe warn]");
    /* A value not understood gives the default, and says so. */
    expect_probe("loud", "env",
                 "level=1 again=1 msgs=[warn log VITTE_LOG=loud not understood "
                 "(error|warn|info|debug|trace); using warn][warn probe warn]");
    expect_probe("3", "env",
                 "level=1 again=1 msgs=[warn log VITTE_LOG=3 not understood "
                 "(error|warn|info|debug|trace); using warn][warn probe warn]");
}

VT_TEST(set_level_before_first_use_wins)
{
    expect_probe("trace", "set-first", "level=0 again=0 msgs=");
}

/* ---- Levels ------------------------------------------------------------------- */

VT_TEST(level_names)
{
    VT_CHECK_STR_EQ(vt_log_level_name(VT_LOG_ERROR), "error");
    VT_CHECK_STR_EQ(vt_log_level_name(VT_LOG_WARN), "warn");
    VT_CHECK_STR_EQ(vt_log_level_name(VT_LOG_INFO), "info");
    VT_CHECK_STR_EQ(vt_log_level_name(VT_LOG_DEBUG), "debug");
    VT_CHECK_STR_EQ(vt_log_level_name(VT_LOG_TRACE), "trace");
    VT_CHECK_STR_EQ(vt_log_level_name((vt_log_level)5), "unknown");
    VT_CHECK_STR_EQ(vt_log_level_name((vt_log_level)-1), "unknown");
}

VT_TEST(set_get_and_enabled)
{
    vt_log_level saved = vt_log_get_level();
    for (int l = VT_LOG_ERROR; l <= VT_LOG_TRACE; l++) {
        vt_log_set_level((vt_log_level)l);
        VT_CHECK_EQ(vt_log_get_level(), l);
        for (int m = VT_LOG_ERROR; m <= VT_LOG_TRACE; m++)
            VT_CHECK_EQ(vt_log_enabled((vt_log_level)m), m <= l);
        VT_CHECK(!vt_log_enabled((vt_log_level)(VT_LOG_TRACE + 1)));
        VT_CHECK(!vt_log_enabled((vt_log_level)-1));
    }
    /* Out-of-range levels are clamped to the nearest one. */
    vt_log_set_level((vt_log_level)99);
    VT_CHECK_EQ(vt_log_get_level(), VT_LOG_TRACE);
    vt_log_set_level((vt_log_level)-3);
    VT_CHECK_EQ(vt_log_get_level(), VT_LOG_ERROR);
    vt_log_set_level(saved);
}

/* ---- Handlers ----------------------------------------------------------------- */

typedef struct capture {
    int calls;
    vt_log_level level;
    char module[64];
    char *msg; /* malloc'd copy of the last message */
    void *ud_seen;
} capture;

static void capture_fn(void *ud, vt_log_level level, const char *module, const char *msg)
{
    capture *c = ud;
    c->calls++;
    c->level = level;
    c->ud_seen = ud;
    snprintf(c->module, sizeof c->module, "%s", module);
    free(c->msg);
    c->msg = strdup(msg);
}

static void capture_done(capture *c)
{
    vt_log_set_handler(NULL, NULL);
    free(c->msg);
    c->msg = NULL;
}

VT_TEST(handler_receives_filtered_messages)
{
    capture c = {0};
    vt_log_level saved = vt_log_get_level();
    vt_log_set_handler(capture_fn, &c);
    vt_log_set_level(VT_LOG_INFO);

    vt_log(VT_LOG_INFO, "sched", "worker %d parked after %s", 3, "spinning");
    VT_CHECK_EQ(c.calls, 1);
    VT_CHECK_PTR_EQ(c.ud_seen, &c);
    VT_CHECK_EQ(c.level, VT_LOG_INFO);
    VT_CHECK_STR_EQ(c.module, "sched");
    VT_CHECK_STR_EQ(c.msg, "worker 3 parked after spinning");

    vt_log(VT_LOG_DEBUG, "sched", "dropped");
    vt_log(VT_LOG_TRACE, "sched", "dropped");
    VT_CHECK_EQ(c.calls, 1);
    vt_log(VT_LOG_ERROR, "task", "failed: %s", vt_strerror(VT_ETIMEDOUT));
    VT_CHECK_EQ(c.calls, 2);
    VT_CHECK_EQ(c.level, VT_LOG_ERROR);
    VT_CHECK_STR_EQ(c.msg, "failed: deadline passed");

    /* No module: handlers see "", never NULL. */
    vt_log(VT_LOG_WARN, NULL, "plain");
    VT_CHECK_EQ(c.calls, 3);
    VT_CHECK_STR_EQ(c.module, "");
    VT_CHECK_STR_EQ(c.msg, "plain");

    vt_log(VT_LOG_WARN, "x", "%s", "");
    VT_CHECK_EQ(c.calls, 4);
    VT_CHECK_STR_EQ(c.msg, "");

    vt_log_set_level(saved);
    capture_done(&c);
}

static void logv_helper(const char *fmt, ...) VT_PRINTF(1, 2);
static void logv_helper(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vt_logv(VT_LOG_ERROR, "v", fmt, ap);
    va_end(ap);
}

VT_TEST(logv_formats)
{
    capture c = {0};
    vt_log_set_handler(capture_fn, &c);
    logv_helper("%d-%s-%c-%.2f", 42, "x", 'y', 1.5);
    VT_CHECK_EQ(c.calls, 1);
    VT_CHECK_STR_EQ(c.msg, "42-x-y-1.50");
    capture_done(&c);
}

VT_TEST(handler_replaced_and_restored)
{
    capture a = {0}, b = {0};
    vt_log_set_handler(capture_fn, &a);
    vt_log(VT_LOG_ERROR, "m", "one");
    vt_log_set_handler(capture_fn, &b);
    vt_log(VT_LOG_ERROR, "m", "two");
    VT_CHECK_EQ(a.calls, 1);
    VT_CHECK_EQ(b.calls, 1);
    VT_CHECK_STR_EQ(a.msg, "one");
    VT_CHECK_STR_EQ(b.msg, "two");
    capture_done(&a);
    /* Default again: nothing more reaches the captures. */
    int saved = dup(STDERR_FILENO);
    int devnull = open("/dev/null", O_WRONLY);
    VT_CHECK_GE(devnull, 0);
    dup2(devnull, STDERR_FILENO);
    vt_log(VT_LOG_ERROR, "m", "three");
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(devnull);
    VT_CHECK_EQ(a.calls, 1);
    VT_CHECK_EQ(b.calls, 1);
    capture_done(&b);
}

VT_TEST(errno_is_preserved)
{
    capture c = {0};
    vt_log_set_handler(capture_fn, &c);
    errno = EPIPE;
    vt_log(VT_LOG_ERROR, "m", "%s", "x");
    VT_CHECK_EQ(errno, EPIPE);
    VT_CHECK_EQ(c.calls, 1);
    capture_done(&c);
}

static char *long_text(size_t len)
{
    char *s = malloc(len + 1);
    for (size_t i = 0; i < len; i++)
        s[i] = (char)('a' + i % 26);
    s[len] = '\0';
    return s;
}

VT_TEST(long_message_printed_whole)
{
    capture c = {0};
    vt_log_set_handler(capture_fn, &c);
    long live = vt_test_alloc_live();
    char *text = long_text(10000);
    vt_test_alloc_reset();
    vt_log(VT_LOG_ERROR, "m", "<%s>", text);
    VT_CHECK_EQ(c.calls, 1);
    VT_CHECK_EQ(strlen(c.msg), 10002);
    VT_CHECK_EQ(c.msg[0], '<');
    VT_CHECK_EQ(strncmp(c.msg + 1, text, 10000), 0);
    VT_CHECK_EQ(c.msg[10001], '>');
    /* The big buffer came from the hook and went back to it. */
    VT_CHECK_EQ(vt_test_alloc_count(), 1);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
    free(text);
    capture_done(&c);
}

VT_TEST(long_message_truncated_when_out_of_memory)
{
    capture c = {0};
    vt_log_set_handler(capture_fn, &c);
    char *text = long_text(3000);
    vt_test_alloc_fail_at(1);
    vt_log(VT_LOG_ERROR, "m", "%s", text);
    VT_CHECK_EQ(c.calls, 1);
    size_t n = strlen(c.msg);
    const char *mark = "...[truncated]";
    VT_CHECK_GT(n, strlen(mark) + 100);
    VT_CHECK_LT(n, 3000);
    VT_CHECK_STR_EQ(c.msg + n - strlen(mark), mark);
    VT_CHECK_EQ(strncmp(c.msg, text, n - strlen(mark)), 0);
    free(text);
    capture_done(&c);
}

VT_TEST(disabled_levels_cost_nothing)
{
    capture c = {0};
    vt_log_level saved = vt_log_get_level();
    vt_log_set_handler(capture_fn, &c);
    vt_log_set_level(VT_LOG_ERROR);
    char *text = long_text(5000);
    vt_test_alloc_reset();
    vt_log(VT_LOG_WARN, "m", "%s", text);
    vt_log(VT_LOG_TRACE, "m", "%s", text);
    /* Neither called the handler nor formatted into a heap buffer. */
    VT_CHECK_EQ(c.calls, 0);
    VT_CHECK_EQ(vt_test_alloc_count(), 0);
    free(text);
    vt_log_set_level(saved);
    capture_done(&c);
}

/* ---- The default handler -------------------------------------------------------
 * stderr is pointed at a pipe whose other end a reader thread drains. */

typedef struct drain {
    int fd;
    char *buf;
    size_t len, cap;
} drain;

static void *drain_fn(void *arg)
{
    drain *d = arg;
    for (;;) {
        if (d->cap - d->len < 4096) {
            d->cap = d->cap * 2 + 65536;
            d->buf = realloc(d->buf, d->cap);
        }
        ssize_t n = read(d->fd, d->buf + d->len, d->cap - d->len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        d->len += (size_t)n;
    }
    d->buf[d->len] = '\0';
    return NULL;
}

typedef struct redirect {
    int saved;
    drain d;
    vt__thread reader;
} redirect;

static int redirect_start(redirect *r)
{
    int fds[2];
    memset(r, 0, sizeof *r);
    if (pipe(fds) != 0)
        return -1;
    fflush(stderr);
    r->saved = dup(STDERR_FILENO);
    dup2(fds[1], STDERR_FILENO);
    close(fds[1]);
    r->d.fd = fds[0];
    return vt__thread_create(&r->reader, drain_fn, &r->d, 0, "drain") == VT_OK ? 0 : -1;
}

static const char *redirect_end(redirect *r)
{
    dup2(r->saved, STDERR_FILENO); /* closes the pipe's last write end */
    close(r->saved);
    vt__thread_join(r->reader, NULL);
    close(r->d.fd);
    return r->d.buf ? r->d.buf : "";
}

VT_TEST(default_handler_format)
{
    vt_log_level saved = vt_log_get_level();
    vt_log_set_level(VT_LOG_DEBUG);
    redirect r;
    VT_CHECK_EQ(redirect_start(&r), 0);
    vt_log(VT_LOG_WARN, "sched", "pool of %u workers", 4u);
    vt_log(VT_LOG_DEBUG, NULL, "no module");
    vt_log(VT_LOG_ERROR, "", "empty module");
    vt_log(VT_LOG_TRACE, "m", "dropped");
    const char *out = redirect_end(&r);
    VT_CHECK_STR_EQ(out, "vitte warn sched: pool of 4 workers\n"
                         "vitte debug: no module\n"
                         "vitte error: empty module\n");
    free(r.d.buf);
    vt_log_set_level(saved);
}

VT_TEST(default_handler_long_line)
{
    redirect r;
    char *text = long_text(100000);
    VT_CHECK_EQ(redirect_start(&r), 0);
    vt_log(VT_LOG_ERROR, "big", "%s", text);
    const char *out = redirect_end(&r);
    VT_CHECK_EQ(strlen(out), 100000 + strlen("vitte error big: \n"));
    VT_CHECK_EQ(strncmp(out, "vitte error big: ", 17), 0);
    VT_CHECK_EQ(strncmp(out + 17, text, 100000), 0);
    VT_CHECK_EQ(out[strlen(out) - 1], '\n');
    free(text);
    free(r.d.buf);
}

/* Lines logged by several threads at once arrive whole: each line of the
 * output is exactly one that some thread wrote. */
#define LOG_THREADS 4
#define LOG_LINES 500

static _Atomic int log_go;

static void *log_many(void *arg)
{
    int id = (int)(intptr_t)arg;
    while (!atomic_load(&log_go))
        vt__thread_yield();
    for (int i = 0; i < LOG_LINES; i++)
        vt_log(VT_LOG_ERROR, "t", "thread %d line %d %s", id, i,
               "padding-padding-padding-padding-padding-padding-padding-padding");
    return NULL;
}

VT_TEST(default_handler_lines_do_not_interleave)
{
    redirect r;
    vt__thread t[LOG_THREADS];
    VT_CHECK_EQ(redirect_start(&r), 0);
    atomic_store(&log_go, 0);
    for (int i = 0; i < LOG_THREADS; i++)
        VT_CHECK_OK(vt__thread_create(&t[i], log_many, (void *)(intptr_t)i, 0, NULL));
    atomic_store(&log_go, 1);
    for (int i = 0; i < LOG_THREADS; i++)
        VT_CHECK_OK(vt__thread_join(t[i], NULL));
    const char *out = redirect_end(&r);

    int next[LOG_THREADS] = {0};
    int lines = 0;
    for (const char *p = out; *p;) {
        const char *nl = strchr(p, '\n');
        VT_CHECK_NOT_NULL(nl);
        int id, n, used = 0;
        VT_CHECK_EQ(sscanf(p, "vitte error t: thread %d line %d %*s%n", &id, &n, &used), 2);
        VT_CHECK_PTR_EQ(p + used, nl);
        VT_CHECK(id >= 0 && id < LOG_THREADS);
        /* Each thread's lines in its own order. */
        VT_CHECK_EQ(n, next[id]);
        next[id]++;
        lines++;
        p = nl + 1;
    }
    VT_CHECK_EQ(lines, LOG_THREADS * LOG_LINES);
    free(r.d.buf);
}

/* ---- Changing level and handler while other threads log (for TSan) ------------ */

static _Atomic long seen;

static void count_fn(void *ud, vt_log_level level, const char *module, const char *msg)
{
    (void)level;
    (void)module;
    (void)msg;
    atomic_fetch_add((_Atomic long *)ud, 1);
}

static _Atomic int churn_stop;

static void *churn_logger(void *arg)
{
    (void)arg;
    while (!atomic_load(&churn_stop))
        vt_log(VT_LOG_INFO, "churn", "%d", 1);
    return NULL;
}

VT_TEST(level_and_handler_change_under_load)
{
    vt_log_level saved = vt_log_get_level();
    static _Atomic long other;
    vt__thread t[2];
    vt_log_set_handler(count_fn, &seen);
    atomic_store(&churn_stop, 0);
    for (int i = 0; i < 2; i++)
        VT_CHECK_OK(vt__thread_create(&t[i], churn_logger, NULL, 0, NULL));
    for (int round = 0; round < 2000; round++) {
        vt_log_set_level(round % 2 ? VT_LOG_INFO : VT_LOG_ERROR);
        vt_log_set_handler(count_fn, round % 3 ? (void *)&seen : (void *)&other);
        if (round % 100 == 0)
            vt__thread_yield();
    }
    /* Keep going until the loggers demonstrably got through. */
    vt_log_set_level(VT_LOG_INFO);
    long before = atomic_load(&seen) + atomic_load(&other);
    while (atomic_load(&seen) + atomic_load(&other) < before + 100)
        vt__thread_yield();
    atomic_store(&churn_stop, 1);
    for (int i = 0; i < 2; i++)
        VT_CHECK_OK(vt__thread_join(t[i], NULL));
    vt_log_set_handler(NULL, NULL);
    vt_log_set_level(saved);
}
