/* async_peers.h — the peers of the async benchmarks (bench/async/):
 *   boost     Boost.Context's fcontext, a raw context switch (switch_boost.cpp,
 *             built when CMake finds Boost's context library: VT_HAVE_BOOST_CONTEXT)
 *   go        goroutines, a Go program (async_go/main.go) that CMake builds
 *             with `go build` when it finds a Go toolchain (VT_HAVE_GO, the
 *             binary's path in VT_GO_PEER). It runs one repetition per
 *             process and prints one line of key=value figures.
 * plus what the benchmarks need to run a child process and read its line:
 * the Go peer, and the vitte measurements that want a fresh process (RSS). */
#ifndef VITTE_BENCH_ASYNC_PEERS_H
#define VITTE_BENCH_ASYNC_PEERS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Makes the partner context on a stack of stack_size bytes (once per
 * process); 0, or -1 when out of memory. */
int peer_switch_boost_prepare(size_t stack_size);
/* Switches to the partner and back round_trips times; returns the value the
 * partner handed back last, which is round_trips when every switch ran. */
unsigned long peer_switch_boost_run(unsigned long round_trips);

#ifdef __cplusplus
}
#endif

#ifndef __cplusplus
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* Reads fd to its end into out (NUL-terminated, truncated to size - 1
 * bytes), closes it, reaps pid; 0 when the child exited with status 0,
 * else -1 with the reason in why. */
static inline int peer_collect(pid_t pid, int fd, char *out, size_t size, char *why,
                               size_t why_size)
{
    size_t len = 0;
    for (;;) {
        char buf[512];
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        size_t take = (size_t)r < size - 1 - len ? (size_t)r : size - 1 - len;
        memcpy(out + len, buf, take);
        len += take;
    }
    out[len] = '\0';
    close(fd);
    int st;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR) {
            snprintf(why, why_size, "waitpid: %s", strerror(errno));
            return -1;
        }
    }
    if (WIFSIGNALED(st)) {
        snprintf(why, why_size, "child killed by signal %d (%s)", WTERMSIG(st),
                 strsignal(WTERMSIG(st)));
        return -1;
    }
    if (WEXITSTATUS(st) != 0) {
        snprintf(why, why_size, "child exited with status %d", WEXITSTATUS(st));
        return -1;
    }
    return 0;
}

/* Runs argv[0] (a path) with argv, its standard output captured into out
 * and its standard error passed through. 0, or -1 with why. */
static inline int peer_spawn_capture(char *const argv[], char *out, size_t size, char *why,
                                     size_t why_size)
{
    int p[2];
    if (pipe(p) != 0) {
        snprintf(why, why_size, "pipe: %s", strerror(errno));
        return -1;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    posix_spawn_file_actions_addclose(&fa, p[0]);
    posix_spawn_file_actions_addclose(&fa, p[1]);
    pid_t pid;
    int e = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(p[1]);
    if (e != 0) {
        close(p[0]);
        snprintf(why, why_size, "cannot start %s: %s", argv[0], strerror(e));
        return -1;
    }
    return peer_collect(pid, p[0], out, size, why, why_size);
}

/* Runs fn(arg, fd) in a forked child, which writes its figures to fd and
 * whose return value is its exit status; out gets what it wrote. For
 * measurements that need a clean process (RSS): call it only while the
 * process has no other thread, as fork copies just the calling one. */
static inline int peer_fork_capture(int (*fn)(void *arg, int fd), void *arg, char *out, size_t size,
                                    char *why, size_t why_size)
{
    int p[2];
    if (pipe(p) != 0) {
        snprintf(why, why_size, "pipe: %s", strerror(errno));
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        snprintf(why, why_size, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        close(p[0]);
        int st = fn(arg, p[1]);
        fflush(NULL);
        _exit(st);
    }
    close(p[1]);
    return peer_collect(pid, p[0], out, size, why, why_size);
}

/* The number after " key=" (or at the start of line) in line; 0, or -1
 * when it is missing. */
static inline int peer_kv(const char *line, const char *key, double *v)
{
    size_t klen = strlen(key);
    for (const char *s = line; (s = strstr(s, key)) != NULL; s += klen) {
        if ((s == line || s[-1] == ' ' || s[-1] == '\n') && s[klen] == '=') {
            char *end;
            double x = strtod(s + klen + 1, &end);
            if (end == s + klen + 1)
                return -1;
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* The value after " key=" as a word (up to a space or the line's end). */
static inline void peer_kv_word(const char *line, const char *key, char *out, size_t size)
{
    size_t klen = strlen(key);
    out[0] = '\0';
    for (const char *s = line; (s = strstr(s, key)) != NULL; s += klen) {
        if ((s == line || s[-1] == ' ' || s[-1] == '\n') && s[klen] == '=') {
            const char *v = s + klen + 1;
            size_t n = strcspn(v, " \n");
            n = n < size - 1 ? n : size - 1;
            memcpy(out, v, n);
            out[n] = '\0';
            return;
        }
    }
}

#ifdef VT_HAVE_GO
/* One repetition of the Go peer: `vitte_async_go <bench> -n N -threads T`;
 * out gets its line. 0, or -1 with why. */
static inline int peer_go_run(const char *bench, long n, unsigned threads, char *out, size_t size,
                              char *why, size_t why_size)
{
    char nbuf[32], tbuf[32];
    snprintf(nbuf, sizeof nbuf, "%ld", n);
    snprintf(tbuf, sizeof tbuf, "%u", threads);
    char *argv[] = {(char *)VT_GO_PEER, (char *)bench, (char *)"-n", nbuf,
                    (char *)"-threads", tbuf,          NULL};
    return peer_spawn_capture(argv, out, size, why, why_size);
}
#endif
#endif /* !__cplusplus */

#endif
