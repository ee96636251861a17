/* The task file (vitte.yaml): what the `vitte` command reads, as a list of
 * concrete tasks. docs/taskfile.md describes the format for users; this
 * header is the contract between the parser (taskfile.c) and the runner.
 *
 * Loading does everything that needs no running: YAML, keys and types,
 * variables, expansion of `each` entries (lists and globs, relative to the
 * file's directory), dependency names, cycles. Input and output patterns
 * are kept as written (variables substituted): they are matched when the
 * task is about to run, since a dependency may create the files. */
#ifndef VITTE_CLI_TASKFILE_H
#define VITTE_CLI_TASKFILE_H

#include <stddef.h>
#include <stdint.h>

#include <vitte/base.h>

typedef struct vt_tf_task {
    char *name;    /* unique: the entry's name, or "entry:key" for an expansion */
    char *entry;   /* the entry of the file it comes from */
    char *desc;    /* "" when none */
    char *run;     /* the shell command, variables substituted; NULL: none
                      (a task that only groups its dependencies) */
    size_t *deps;  /* indexes into vt_taskfile.tasks, no duplicates */
    size_t ndeps;
    char **inputs; /* paths or glob patterns, relative to dir */
    size_t ninputs;
    char **outputs; /* paths (no patterns), relative to dir */
    size_t noutputs;
    char **env;    /* "NAME=value", added to the command's environment */
    size_t nenv;
    char *dir;     /* where the command runs: absolute, normalised (the
                      file's directory unless `dir` says otherwise) */
    unsigned retries;   /* runs after a failure: 0 .. 100 */
    int64_t timeout_ns; /* per attempt; 0: none */
    int priority;       /* -1000 .. 1000, higher first */
    unsigned line, col; /* of the entry in the file (1-based) */
} vt_tf_task;

typedef struct vt_taskfile {
    char *path;        /* as given */
    char *root;        /* the file's directory, absolute */
    vt_tf_task *tasks; /* in the order of the file, expansions in order */
    size_t ntasks;
    char *default_task; /* the file's `default` (a task or entry name), or NULL */
} vt_taskfile;

/* Where an error is and what it is. */
typedef struct vt_tf_error {
    unsigned line, col; /* 0 when the error has no place (an unreadable file) */
    char msg[512];      /* "path:line:col: what is wrong (what was expected)" */
} vt_tf_error;

/* Loads the file at path. On VT_OK *out is the caller's (vt_tf_free).
 * Errors, with *err filled: VT_ESYSERR|errno (cannot read), VT_EFORMAT (not
 * YAML, or not a task file: unknown key, wrong type, bad value, unknown
 * variable, unknown dependency, an expansion that matches nothing,
 * duplicate names), VT_ECYCLE (the message gives the cycle's path and the
 * places of its entries), VT_ENOMEM, VT_EINVAL (NULL). Nothing is
 * allocated on error. */
vt_err vt_tf_load(const char *path, vt_taskfile **out, vt_tf_error *err);

/* As vt_tf_load, from text in memory: name is used in messages, root is
 * the directory globs and relative paths start from. */
vt_err vt_tf_parse(const char *text, size_t len, const char *name, const char *root, vt_taskfile **out,
                   vt_tf_error *err);

void vt_tf_free(vt_taskfile *tf);

/* The edit distance between two names (SIZE_MAX past 63 characters), for
 * "did you mean" suggestions. */
size_t vt_tf_distance(const char *a, const char *b);

/* The index of the task called name, or -1. */
long vt_tf_find(const vt_taskfile *tf, const char *name);

#endif
