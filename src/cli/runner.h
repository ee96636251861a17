/* `vitte run`: the task file's tasks as a vt_graph whose tasks run the
 * commands, in parallel, skipping what is up to date. */
#ifndef VITTE_CLI_RUNNER_H
#define VITTE_CLI_RUNNER_H

#include <stddef.h>

#include "cli/taskfile.h"

typedef struct cli_run_opts {
    const char *file;     /* the task file */
    const char *const *targets;
    size_t ntargets;      /* 0: the file's default (build) */
    unsigned jobs;        /* commands at once; 0: the number of CPUs */
    int keep_going;       /* -k */
    int dry_run;          /* -n */
    int explain;          /* --explain */
    int force;            /* --force */
    int verbose;          /* -v */
    int quiet;            /* -q: no status line, failures and summary only */
} cli_run_opts;

/* Exit codes of the command. */
enum { CLI_OK = 0, CLI_FAILED = 1, CLI_USAGE = 2, CLI_INTERRUPTED = 130 };

/* Runs the targets; returns the exit code. */
int cli_run(const cli_run_opts *o);

/* Loads the task file at path, printing its error. NULL on error. */
vt_taskfile *cli_load(const char *path);

/* Marks in sel (ntasks bytes, zeroed) the targets and everything they
 * depend on. Targets are task names or entry names (every task of the
 * entry). 0, or -1 after printing what is unknown. */
int cli_select(const vt_taskfile *tf, const char *const *targets, size_t n, unsigned char *sel);

/* The directory of the command's own files beside the task file
 * (".vitte" under tf->root), created when create is 1. 0 or -1 (printed). */
int cli_dot_dir(const vt_taskfile *tf, char *out, size_t n, int create);

#endif
