/* Runs a task's command as a process in its own process group, its output
 * (stdout and stderr together) captured, from a fiber: the fiber waits on
 * the pipe and on the process's pidfd, the worker runs other fibers. */
#ifndef VITTE_CLI_PROC_H
#define VITTE_CLI_PROC_H

#include <stddef.h>
#include <stdint.h>

#include <vitte/base.h>

typedef struct cli_proc_opts {
    const char *cmd;   /* run by /bin/sh -c, or exec'd directly when it is
                          plain words with no shell syntax (as make does) */
    const char *dir;   /* working directory */
    char *const *env;  /* "NAME=value" added to (or replacing in) the
                          environment */
    size_t nenv;
    int64_t timeout_ns; /* 0: none. Then SIGTERM to the group, SIGKILL 2 s later */
} cli_proc_opts;

typedef struct cli_proc_result {
    int status;     /* exit status when exited, else 128 + signal */
    int signal;     /* the signal that ended it, 0 if it exited */
    int timed_out;  /* 1: killed at its timeout */
    char *out;      /* malloc'd, NUL-terminated; the first CLI_OUTPUT_MAX bytes */
    size_t out_len;
    size_t out_dropped; /* bytes beyond CLI_OUTPUT_MAX, read and dropped */
    int64_t elapsed_ns;
} cli_proc_result;

#define CLI_OUTPUT_MAX ((size_t)4 << 20)

/* Runs o->cmd to its end (a cancelled fiber still waits for its process:
 * it is a task that was started and is let finish). VT_OK when it ran,
 * whatever its status; else the process could not be started (msg says
 * why: "command not found: cc", a missing directory ...). Fiber only. */
vt_err cli_proc_run(const cli_proc_opts *o, cli_proc_result *r, char *msg, size_t msg_len);
void cli_proc_result_free(cli_proc_result *r);

/* Sends sig to every process group started here that still runs.
 * Thread: any (not a signal handler). Returns how many. */
size_t cli_proc_signal_all(int sig);

#endif
