#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "cli/proc.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vitte/async.h>

extern char **environ;

/* ---- Running groups, for Ctrl-C ---------------------------------------------------- */

static pthread_mutex_t running_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t *running;
static size_t nrunning, running_cap;

static void running_add(pid_t pid)
{
    pthread_mutex_lock(&running_lock);
    if (nrunning == running_cap) {
        size_t cap = running_cap ? running_cap * 2 : 64;
        pid_t *p = realloc(running, cap * sizeof *p);
        if (p) {
            running = p;
            running_cap = cap;
        }
    }
    if (nrunning < running_cap)
        running[nrunning++] = pid;
    pthread_mutex_unlock(&running_lock);
}

static void running_remove(pid_t pid)
{
    pthread_mutex_lock(&running_lock);
    for (size_t i = 0; i < nrunning; i++) {
        if (running[i] == pid) {
            running[i] = running[--nrunning];
            break;
        }
    }
    pthread_mutex_unlock(&running_lock);
}

size_t cli_proc_signal_all(int sig)
{
    pthread_mutex_lock(&running_lock);
    size_t n = nrunning;
    for (size_t i = 0; i < nrunning; i++)
        kill(-running[i], sig);
    pthread_mutex_unlock(&running_lock);
    return n;
}

/* ---- Starting ----------------------------------------------------------------------- */

/* Plain words only: anything the shell would treat specially sends the
 * command through /bin/sh. */
static int needs_shell(const char *cmd)
{
    static const char *const builtins[] = {"cd", "exit", "export", "set", "unset", "exec", ".", "source",
                                           "alias", "ulimit", "umask", "eval", "trap", "wait", "read"};
    if (strpbrk(cmd, "|&;<>()$`\\\"'*?[]#~=%{}\n!"))
        return 1;
    size_t n = strcspn(cmd + strspn(cmd, " \t"), " \t");
    const char *first = cmd + strspn(cmd, " \t");
    if (n == 0)
        return 1;
    for (size_t i = 0; i < sizeof builtins / sizeof *builtins; i++)
        if (strlen(builtins[i]) == n && strncmp(first, builtins[i], n) == 0)
            return 1;
    return 0;
}

/* argv of a plain command, in one allocation. */
static char **split_words(const char *cmd)
{
    size_t len = strlen(cmd), words = 0;
    for (size_t i = 0; i < len; i++)
        if (cmd[i] != ' ' && cmd[i] != '\t' && (i == 0 || cmd[i - 1] == ' ' || cmd[i - 1] == '\t'))
            words++;
    char **argv = malloc((words + 1) * sizeof(char *) + len + 1);
    if (!argv)
        return NULL;
    char *buf = (char *)(argv + words + 1);
    memcpy(buf, cmd, len + 1);
    size_t w = 0;
    for (char *p = buf; *p;) {
        while (*p == ' ' || *p == '\t')
            *p++ = 0;
        if (!*p)
            break;
        argv[w++] = p;
        while (*p && *p != ' ' && *p != '\t')
            p++;
    }
    argv[w] = NULL;
    return argv;
}

static char **make_env(char *const *add, size_t nadd)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = malloc((n + nadd + 1) * sizeof *env);
    if (!env)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        size_t name = strcspn(environ[i], "=");
        int replaced = 0;
        for (size_t j = 0; j < nadd && !replaced; j++)
            replaced = strncmp(add[j], environ[i], name) == 0 && add[j][name] == '=';
        if (!replaced)
            env[k++] = environ[i];
    }
    for (size_t j = 0; j < nadd; j++)
        env[k++] = add[j];
    env[k] = NULL;
    return env;
}

static int pidfd_open_(pid_t pid)
{
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

static vt_err start(const cli_proc_opts *o, pid_t *pid, int *out_fd, char *msg, size_t msg_len)
{
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        snprintf(msg, msg_len, "cannot make a pipe: %s", strerror(errno));
        return vt_err_from_errno(errno);
    }
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&at);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
    if (o->dir)
        posix_spawn_file_actions_addchdir_np(&fa, o->dir);
    /* Its own group: a terminal's Ctrl-C reaches vitte only, which decides
     * (let it finish, or kill the whole group). Signals vitte blocks or
     * ignores are back to normal in the child. */
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGINT);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGHUP);
    sigaddset(&defaults, SIGPIPE);
    sigaddset(&defaults, SIGQUIT);
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &defaults);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    char **env = make_env(o->env, o->nenv);
    char **argv = NULL;
    int shell = needs_shell(o->cmd);
    char *sh_argv[] = {"sh", "-c", (char *)o->cmd, NULL};
    if (!shell)
        argv = split_words(o->cmd);
    int rc;
    if (!env || (!shell && !argv))
        rc = ENOMEM;
    else if (shell)
        rc = posix_spawn(pid, "/bin/sh", &fa, &at, sh_argv, env);
    else
        rc = posix_spawnp(pid, argv[0], &fa, &at, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(pipefd[1]);
    if (rc != 0) {
        if (rc == ENOENT && !shell)
            snprintf(msg, msg_len, "command not found: %s", argv[0]);
        else if (rc == ENOENT && o->dir)
            snprintf(msg, msg_len, "cannot start the command in %s: %s", o->dir, strerror(rc));
        else
            snprintf(msg, msg_len, "cannot start the command: %s", strerror(rc));
        close(pipefd[0]);
        free(env);
        free(argv);
        return vt_err_from_errno(rc);
    }
    free(env);
    free(argv);
    *out_fd = pipefd[0];
    return VT_OK;
}

/* ---- Waiting ----------------------------------------------------------------------------- */

static void append(cli_proc_result *r, size_t *cap, const char *buf, size_t n)
{
    size_t room = CLI_OUTPUT_MAX - r->out_len;
    size_t take = n < room ? n : room;
    r->out_dropped += n - take;
    if (!take)
        return;
    if (r->out_len + take + 1 > *cap) {
        size_t c = *cap ? *cap : 4096;
        while (c < r->out_len + take + 1)
            c *= 2;
        char *p = realloc(r->out, c);
        if (!p) {
            r->out_dropped += take;
            return;
        }
        r->out = p;
        *cap = c;
    }
    memcpy(r->out + r->out_len, buf, take);
    r->out_len += take;
    r->out[r->out_len] = 0;
}

vt_err cli_proc_run(const cli_proc_opts *o, cli_proc_result *r, char *msg, size_t msg_len)
{
    memset(r, 0, sizeof *r);
    int64_t t0 = vt_now_ns();
    pid_t pid = 0;
    int fd = -1;
    vt_err e = start(o, &pid, &fd, msg, msg_len);
    if (e)
        return e;
    running_add(pid);
    int pidfd = pidfd_open_(pid);
    /* Started: it is let finish even if the run is cancelled meanwhile. */
    int was_masked = vt_cancel_mask(1);
    int64_t deadline = o->timeout_ns > 0 ? vt_fiber_deadline(o->timeout_ns) : VT_FOREVER;
    size_t cap = 0;
    char buf[16384];
    int sent = 0; /* 0, SIGTERM or SIGKILL */
    int out_open = 1;
    for (;;) {
        vt_err w = VT_OK;
        if (out_open) {
            size_t got = 0;
            w = vt_io_read(fd, buf, sizeof buf, &got, deadline);
            if (w == VT_OK && got)
                append(r, &cap, buf, got);
            else if (w == VT_OK || (w != VT_ETIMEDOUT && w != VT_ECANCELED))
                out_open = 0; /* end of file (or a broken pipe): the process is ending */
        } else if (pidfd >= 0) {
            w = vt_io_wait(pidfd, VT_IO_READ, NULL, deadline);
            if (w == VT_OK)
                break;
        } else {
            break; /* no pidfd: waitpid below blocks this worker, briefly */
        }
        if (w == VT_ETIMEDOUT) {
            /* Past its time: TERM to the group, and KILL if it lingers. */
            r->timed_out = 1;
            sent = sent ? SIGKILL : SIGTERM;
            kill(-pid, sent);
            deadline = sent == SIGKILL ? VT_FOREVER : vt_fiber_deadline(2000000000);
        }
    }
    /* Off the list before it is reaped, so that its id is never signalled
     * once the kernel may give it to another process. */
    running_remove(pid);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    vt_cancel_mask(was_masked);
    if (pidfd >= 0)
        vt_io_close(pidfd);
    vt_io_close(fd);
    if (WIFEXITED(status)) {
        r->status = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        r->signal = WTERMSIG(status);
        r->status = 128 + r->signal;
    }
    if (!r->out && !(r->out = calloc(1, 1))) {
        snprintf(msg, msg_len, "out of memory");
        return VT_ENOMEM;
    }
    r->elapsed_ns = vt_now_ns() - t0;
    return VT_OK;
}

void cli_proc_result_free(cli_proc_result *r)
{
    free(r->out);
    r->out = NULL;
}
