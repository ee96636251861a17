#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "cli/runner.h"

#include <errno.h>
#include <glob.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <vitte/vitte.h>

#include "cli/hash.h"
#include "cli/proc.h"
#include "cli/state.h"

/* ---- Loading and selecting ---------------------------------------------------------- */

vt_taskfile *cli_load(const char *path)
{
    vt_taskfile *tf = NULL;
    vt_tf_error err;
    memset(&err, 0, sizeof err);
    vt_err e = vt_tf_load(path, &tf, &err);
    if (e) {
        fprintf(stderr, "vitte: %s\n", err.msg[0] ? err.msg : vt_strerror(e));
        return NULL;
    }
    return tf;
}

static void mark(const vt_taskfile *tf, size_t i, unsigned char *sel)
{
    /* Iterative: a long chain must not exhaust the stack. */
    size_t *stack = malloc(tf->ntasks * sizeof *stack), top = 0;
    if (!stack) {
        /* Out of memory: select everything, which is never wrong, only more. */
        memset(sel, 1, tf->ntasks);
        return;
    }
    if (!sel[i]) {
        sel[i] = 1;
        stack[top++] = i;
    }
    while (top) {
        const vt_tf_task *t = &tf->tasks[stack[--top]];
        for (size_t d = 0; d < t->ndeps; d++) {
            if (!sel[t->deps[d]]) {
                sel[t->deps[d]] = 1;
                stack[top++] = t->deps[d];
            }
        }
    }
    free(stack);
}

int cli_select(const vt_taskfile *tf, const char *const *targets, size_t n, unsigned char *sel)
{
    int bad = 0;
    for (size_t k = 0; k < n; k++) {
        long i = vt_tf_find(tf, targets[k]);
        int found = i >= 0;
        if (found) {
            mark(tf, (size_t)i, sel);
        } else {
            for (size_t j = 0; j < tf->ntasks; j++) {
                if (strcmp(tf->tasks[j].entry, targets[k]) == 0) {
                    mark(tf, j, sel);
                    found = 1;
                }
            }
        }
        if (found)
            continue;
        const char *best = NULL;
        size_t best_d = 3;
        for (size_t j = 0; j < tf->ntasks; j++) {
            size_t d = vt_tf_distance(targets[k], tf->tasks[j].name);
            if (d < best_d) {
                best_d = d;
                best = tf->tasks[j].name;
            }
        }
        if (best)
            fprintf(stderr, "vitte: %s has no task \"%s\" (did you mean \"%s\"?)\n", tf->path, targets[k], best);
        else
            fprintf(stderr, "vitte: %s has no task \"%s\" (vitte list shows them)\n", tf->path, targets[k]);
        bad = 1;
    }
    return bad ? -1 : 0;
}

int cli_dot_dir(const vt_taskfile *tf, char *out, size_t n, int create)
{
    if ((size_t)snprintf(out, n, "%s/.vitte", tf->root) >= n) {
        fprintf(stderr, "vitte: %s: path too long\n", tf->root);
        return -1;
    }
    if (create && mkdir(out, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "vitte: cannot make %s: %s\n", out, strerror(errno));
        return -1;
    }
    return 0;
}

/* ---- The run ---------------------------------------------------------------------------- */

typedef struct runner runner;

typedef struct job {
    runner *r;
    const vt_tf_task *t;
    vt_task *task;
    int would_run;      /* dry run: would run, so its dependants would too */
    int ran;            /* its command ran (and finished) in this run */
    int up_to_date;
    unsigned attempt;
    int64_t started_ns, ns;
    char reason[320];   /* why it runs (--explain, -n) */
} job;

struct runner {
    const cli_run_opts *o;
    vt_taskfile *tf;
    cli_state *st;
    vt_sem slots; /* commands at once (-j) */
    job *jobs;    /* by index into tf->tasks; only selected ones are used */
    unsigned char *sel;
    size_t total;
    char run_id[64];
    char dot[PATH_MAX];
    vt_graph *g;
    _Atomic int interrupts;

    /* What is shown: under ui_lock. */
    pthread_mutex_t ui_lock;
    int tty;
    int cols; /* of the terminal, 0 if unknown */
    int64_t t0;
    size_t done, ran, up_to_date, failed;
    job **running; /* started commands, oldest first */
    size_t nrunning;
    int line_shown; /* a status line is on the terminal */
};

static double secs(int64_t ns)
{
    return (double)ns / 1e9;
}

/* Progress goes to stdout when it is not a terminal, in one stream with
 * the lines it is read with; on a terminal, beside the status line. */
static FILE *ui_out(runner *r)
{
    return r->tty ? stderr : stdout;
}

/* The status line: "[done/total] elapsed rate  newest-running (+n)". */
static void ui_status(runner *r)
{
    if (!r->tty || r->o->quiet)
        return;
    int64_t el = vt_now_ns() - r->t0;
    char line[512];
    int n = snprintf(line, sizeof line, "\r[%zu/%zu] %d:%02d", r->done, r->total, (int)(el / 60000000000),
                     (int)(el / 1000000000 % 60));
    if (r->ran && el > 0)
        n += snprintf(line + n, sizeof line - (size_t)n, " %.1f/s", (double)r->ran / secs(el));
    if (r->nrunning) {
        n += snprintf(line + n, sizeof line - (size_t)n, "  %s", r->running[r->nrunning - 1]->t->name);
        if (r->nrunning > 1)
            n += snprintf(line + n, sizeof line - (size_t)n, " (+%zu)", r->nrunning - 1);
    }
    if (n > (int)sizeof line - 1)
        n = (int)sizeof line - 1;
    /* One terminal line, or the next redraw starts on a new one. */
    if (r->cols > 1 && n > r->cols)
        line[r->cols] = 0;
    fputs(line, stderr);
    fputs("\x1b[K", stderr);
    fflush(stderr);
    r->line_shown = 1;
}

/* Before printing lines: take the status line off the terminal. */
static void ui_clear(runner *r)
{
    if (r->line_shown) {
        fputs("\r\x1b[K", stderr);
        r->line_shown = 0;
    }
}

static void ui_started(runner *r, job *j)
{
    pthread_mutex_lock(&r->ui_lock);
    job **p = realloc(r->running, (r->nrunning + 1) * sizeof *p);
    if (p) {
        r->running = p;
        r->running[r->nrunning++] = j;
    }
    if (r->o->explain) {
        ui_clear(r);
        fprintf(ui_out(r), "explain: %s: %s\n", j->t->name, j->reason);
        fflush(ui_out(r));
    }
    ui_status(r);
    pthread_mutex_unlock(&r->ui_lock);
}

/* j's command is over (ui_lock held). */
static void ui_not_running(runner *r, const job *j)
{
    for (size_t i = 0; i < r->nrunning; i++) {
        if (r->running[i] == j) {
            memmove(&r->running[i], &r->running[i + 1], (r->nrunning - i - 1) * sizeof *r->running);
            r->nrunning--;
            return;
        }
    }
}

static void save_log(runner *r, const job *j, const cli_proc_result *res)
{
    if (!res->out_len)
        return;
    char path[PATH_MAX + 300];
    snprintf(path, sizeof path, "%s/logs/%s.log", r->dot, j->t->name);
    FILE *f = fopen(path, "w");
    if (!f)
        return; /* the output is also in the terminal for failures */
    fwrite(res->out, 1, res->out_len, f);
    if (res->out_dropped)
        fprintf(f, "\n[vitte: %zu more bytes dropped]\n", res->out_dropped);
    fclose(f);
}

/* A command ended (res NULL: up to date, or a task with no command). */
static void ui_finished(runner *r, job *j, const cli_proc_result *res, const char *failure)
{
    pthread_mutex_lock(&r->ui_lock);
    ui_not_running(r, j);
    r->done++;
    if (res)
        r->ran++;
    else if (j->up_to_date)
        r->up_to_date++;
    if (failure)
        r->failed++;
    int show_output = res && res->out_len && (failure || r->o->verbose);
    if (failure) {
        ui_clear(r);
        fflush(stdout);
        fprintf(stderr, "FAILED: %s: %s\n", j->t->name, failure);
        if (j->t->run)
            fprintf(stderr, "$ %s\n", j->t->run);
    } else if (res && (r->o->verbose || !r->tty) && !r->o->quiet) {
        ui_clear(r);
        fprintf(ui_out(r), "[%zu/%zu] %s %.2fs\n", r->done, r->total, j->t->name, secs(res->elapsed_ns));
        if (r->o->verbose && j->t->run)
            fprintf(ui_out(r), "$ %s\n", j->t->run);
    }
    if (show_output) {
        ui_clear(r);
        FILE *f = failure ? stderr : ui_out(r);
        fwrite(res->out, 1, res->out_len, f);
        if (res->out[res->out_len - 1] != '\n')
            fputc('\n', f);
        if (res->out_dropped)
            fprintf(f, "[vitte: %zu more bytes of output dropped; the first %zu MiB are in %s/logs/%s.log]\n",
                    res->out_dropped, CLI_OUTPUT_MAX >> 20, r->dot, j->t->name);
    }
    fflush(stdout);
    ui_status(r);
    pthread_mutex_unlock(&r->ui_lock);
}

/* An attempt failed and another comes: not done yet. */
static void ui_retrying(runner *r, job *j, const cli_proc_result *res, const char *failure)
{
    pthread_mutex_lock(&r->ui_lock);
    ui_not_running(r, j);
    ui_clear(r);
    fprintf(ui_out(r), "retrying: %s (attempt %u of %u): %s\n", j->t->name, j->attempt, j->t->retries + 1,
            failure);
    fflush(ui_out(r));
    if (res && res->out_len && r->o->verbose) {
        fwrite(res->out, 1, res->out_len, stderr);
        if (res->out[res->out_len - 1] != '\n')
            fputc('\n', stderr);
    }
    ui_status(r);
    pthread_mutex_unlock(&r->ui_lock);
}

/* ---- Up to date? ---------------------------------------------------------------------------- */

static int has_glob(const char *s)
{
    return strpbrk(s, "*?[") != NULL;
}

static int join_path(char *out, size_t n, const char *dir, const char *rel)
{
    if (rel[0] == '/')
        return (size_t)snprintf(out, n, "%s", rel) < n ? 0 : -1;
    return (size_t)snprintf(out, n, "%s/%s", dir, rel) < n ? 0 : -1;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* How many leading bytes of path (len bytes) to leave out when showing it:
 * the project's directory, so that messages read "input src/a.c changed". */
static int shown_from(const runner *r, const char *path, size_t len)
{
    size_t n = strlen(r->tf->root);
    if (len > n + 1 && strncmp(path, r->tf->root, n) == 0 && path[n] == '/')
        return (int)n + 1;
    return 0;
}

/* The task's inputs now: absolute paths, sorted, each with its hash. A
 * plain path that does not exist is an error (msg); a pattern may match
 * nothing. */
static int scan_inputs(runner *r, job *j, cli_io_buf *io, char *msg, size_t msg_len)
{
    const vt_tf_task *t = j->t;
    char **paths = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (size_t i = 0; i < t->ninputs && !rc; i++) {
        char full[PATH_MAX];
        if (join_path(full, sizeof full, t->dir, t->inputs[i])) {
            snprintf(msg, msg_len, "input path too long: %s", t->inputs[i]);
            rc = -1;
            break;
        }
        glob_t gl;
        memset(&gl, 0, sizeof gl);
        size_t add = 1;
        if (has_glob(full)) {
            int g = glob(full, GLOB_NOSORT, NULL, &gl);
            add = g == 0 ? gl.gl_pathc : 0;
        }
        if (n + add > cap) {
            size_t c = cap ? cap * 2 : 16;
            while (c < n + add)
                c *= 2;
            char **p = realloc(paths, c * sizeof *p);
            if (!p) {
                globfree(&gl);
                snprintf(msg, msg_len, "out of memory");
                rc = -1;
                break;
            }
            paths = p;
            cap = c;
        }
        if (has_glob(full)) {
            for (size_t k = 0; k < add; k++)
                if ((paths[n] = strdup(gl.gl_pathv[k])))
                    n++;
        } else if ((paths[n] = strdup(full))) {
            n++;
        }
        globfree(&gl);
    }
    if (!rc && n)
        qsort(paths, n, sizeof *paths, cmp_str);
    for (size_t i = 0; i < n && !rc; i++) {
        if (i && strcmp(paths[i], paths[i - 1]) == 0)
            continue;
        uint8_t h[CLI_HASH_LEN];
        int err = r->st ? cli_state_hash(r->st, paths[i], h) : cli_hash_file(paths[i], h);
        if (err == EISDIR) {
            /* A directory as an input stands for nothing that can be hashed:
             * say what to write instead. */
            const char *p = paths[i] + shown_from(r, paths[i], strlen(paths[i]));
            snprintf(msg, msg_len, "input %s is a directory (name its files, e.g. %s/*)", p, p);
            rc = -1;
        } else if (err) {
            snprintf(msg, msg_len, "input %s: %s", paths[i] + shown_from(r, paths[i], strlen(paths[i])),
                     err == ENOENT ? "no such file" : strerror(err));
            rc = -1;
        } else if (cli_io_add(io, 'i', h, paths[i])) {
            snprintf(msg, msg_len, "out of memory");
            rc = -1;
        }
    }
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
    return rc;
}

/* What the command is, apart from its files. */
static void command_hash(const vt_tf_task *t, uint8_t out[CLI_HASH_LEN])
{
    cli_hasher *h = cli_hasher_new();
    if (!h) {
        memset(out, 0, CLI_HASH_LEN); /* matches nothing recorded: the task runs */
        return;
    }
    cli_hasher_str(h, "vitte-task-1");
    cli_hasher_str(h, t->run);
    cli_hasher_str(h, t->dir);
    for (size_t i = 0; i < t->nenv; i++)
        cli_hasher_str(h, t->env[i]);
    cli_hasher_str(h, "\001outputs");
    for (size_t i = 0; i < t->noutputs; i++)
        cli_hasher_str(h, t->outputs[i]);
    cli_hasher_end(h, out);
}

/* Why the task must run, in j->reason; 0 when it is up to date. */
static int must_run(runner *r, job *j, const uint8_t cmd[CLI_HASH_LEN], const cli_io_buf *inputs)
{
    const vt_tf_task *t = j->t;
    if (r->o->force) {
        snprintf(j->reason, sizeof j->reason, "--force");
        return 1;
    }
    cli_task_rec rec;
    if (!r->st || !cli_state_task_get(r->st, t->name, &rec)) {
        snprintf(j->reason, sizeof j->reason, "it has not succeeded before");
        return 1;
    }
    int run = 1;
    if (memcmp(rec.cmd, cmd, CLI_HASH_LEN) != 0) {
        snprintf(j->reason, sizeof j->reason, "its command, environment, directory or outputs changed");
        goto out;
    }
    if (!t->ninputs && !t->noutputs && strcmp(rec.run_id, r->run_id) != 0) {
        snprintf(j->reason, sizeof j->reason, "it declares no inputs or outputs, so it always runs");
        goto out;
    }
    /* Inputs: both lists are sorted by path. */
    size_t a = 0, b = 0;
    for (;;) {
        char ka = 0, kb = 0;
        const uint8_t *ha = NULL, *hb = NULL;
        const char *pa = NULL, *pb = NULL;
        size_t la = 0, lb = 0, na = 0, nb = 0;
        do {
            na = cli_io_next(rec.io, rec.io_len, a, &ka, &ha, &pa, &la);
            if (na && ka != 'i')
                a = na;
        } while (na && ka != 'i');
        nb = cli_io_next(inputs->data, inputs->len, b, &kb, &hb, &pb, &lb);
        if (!na && !nb)
            break;
        int c = !na ? 1 : !nb ? -1 : strncmp(pa, pb, la < lb ? la : lb);
        if (na && nb && c == 0 && la != lb)
            c = la < lb ? -1 : 1;
        if (c < 0) {
            int k = shown_from(r, pa, la);
            snprintf(j->reason, sizeof j->reason, "input %.*s is gone", (int)la - k, pa + k);
            goto out;
        }
        if (c > 0) {
            int k = shown_from(r, pb, lb);
            snprintf(j->reason, sizeof j->reason, "input %.*s is new", (int)lb - k, pb + k);
            goto out;
        }
        if (memcmp(ha, hb, CLI_HASH_LEN) != 0) {
            int k = shown_from(r, pa, la);
            snprintf(j->reason, sizeof j->reason, "input %.*s changed", (int)la - k, pa + k);
            goto out;
        }
        a = na;
        b = nb;
    }
    /* Outputs: still what the last success made. */
    char kind;
    const uint8_t *h;
    const char *p;
    size_t l;
    for (size_t off = 0, next; (next = cli_io_next(rec.io, rec.io_len, off, &kind, &h, &p, &l)); off = next) {
        if (kind != 'o')
            continue;
        char path[PATH_MAX];
        if (l >= sizeof path)
            continue;
        memcpy(path, p, l);
        path[l] = 0;
        uint8_t now[CLI_HASH_LEN];
        int err = cli_state_hash(r->st, path, now);
        if (err) {
            snprintf(j->reason, sizeof j->reason, "output %.256s is missing", path + shown_from(r, path, l));
            goto out;
        }
        if (memcmp(now, h, CLI_HASH_LEN) != 0) {
            snprintf(j->reason, sizeof j->reason, "output %.256s was changed since it was made",
                     path + shown_from(r, path, l));
            goto out;
        }
    }
    run = 0;
out:
    free(rec.io);
    return run;
}

/* ---- A task's body -------------------------------------------------------------------------- */

static vt_err fail_task(vt_task_ctx *ctx, runner *r, job *j, const cli_proc_result *res, const char *fmt, ...)
    VT_PRINTF(5, 6);

static vt_err fail_task(vt_task_ctx *ctx, runner *r, job *j, const cli_proc_result *res, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (vt_ctx_attempt(ctx) <= j->t->retries && !atomic_load(&r->interrupts))
        ui_retrying(r, j, res, msg);
    else
        ui_finished(r, j, res, msg);
    return vt_ctx_fail(ctx, "%s", msg);
}

static vt_err group_body(vt_task_ctx *ctx, void *data)
{
    (void)ctx;
    job *j = data;
    if (j->r->o->dry_run) {
        for (size_t d = 0; d < j->t->ndeps; d++)
            j->would_run |= j->r->jobs[j->t->deps[d]].would_run;
    }
    ui_finished(j->r, j, NULL, NULL);
    return VT_OK;
}

static vt_err command_body(vt_task_ctx *ctx, void *data)
{
    job *j = data;
    runner *r = j->r;
    const vt_tf_task *t = j->t;
    if (atomic_load(&r->interrupts))
        return VT_ECANCELED;
    char msg[512] = "";
    uint8_t cmd[CLI_HASH_LEN];
    command_hash(t, cmd);
    cli_io_buf io = {0};
    int runs;
    if (r->o->dry_run) {
        const char *dep = NULL;
        for (size_t d = 0; d < t->ndeps && !dep; d++)
            if (r->jobs[t->deps[d]].would_run)
                dep = t->deps[d] < r->tf->ntasks ? r->tf->tasks[t->deps[d]].name : "?";
        if (dep) {
            snprintf(j->reason, sizeof j->reason, "its dependency %s would run", dep);
            runs = 1;
        } else if (scan_inputs(r, j, &io, msg, sizeof msg) != 0) {
            snprintf(j->reason, sizeof j->reason, "%.300s", msg);
            runs = 1;
        } else {
            runs = must_run(r, j, cmd, &io);
        }
        free(io.data);
        j->would_run = runs;
        j->up_to_date = !runs;
        ui_finished(r, j, NULL, NULL);
        return VT_OK;
    }
    if (scan_inputs(r, j, &io, msg, sizeof msg) != 0) {
        free(io.data);
        return fail_task(ctx, r, j, NULL, "%s", msg);
    }
    if (!must_run(r, j, cmd, &io)) {
        free(io.data);
        j->up_to_date = 1;
        ui_finished(r, j, NULL, NULL);
        return VT_OK;
    }
    vt_err e = vt_sem_acquire(&r->slots, 1, VT_FOREVER);
    if (e) {
        free(io.data);
        return e;
    }
    if (atomic_load(&r->interrupts)) {
        vt_sem_release(&r->slots, 1);
        free(io.data);
        return VT_ECANCELED;
    }
    j->started_ns = vt_now_ns();
    j->attempt = vt_ctx_attempt(ctx);
    ui_started(r, j);
    cli_proc_opts po = {
        .cmd = t->run, .dir = t->dir, .env = t->env, .nenv = t->nenv, .timeout_ns = t->timeout_ns};
    cli_proc_result res;
    e = cli_proc_run(&po, &res, msg, sizeof msg);
    vt_sem_release(&r->slots, 1);
    j->ns = vt_now_ns() - j->started_ns;
    if (e) {
        free(io.data);
        return fail_task(ctx, r, j, NULL, "%s", msg);
    }
    j->ran = 1;
    save_log(r, j, &res);
    if (res.timed_out) {
        free(io.data);
        e = fail_task(ctx, r, j, &res, "timed out after %.3g s (killed)", secs(t->timeout_ns));
        cli_proc_result_free(&res);
        return e == VT_EFAILED ? VT_ETIMEDOUT : e;
    }
    if (res.signal || res.status) {
        free(io.data);
        if (res.signal)
            e = fail_task(ctx, r, j, &res, "killed by signal %d (%s) after %.2f s", res.signal,
                          strsignal(res.signal), secs(res.elapsed_ns));
        else
            e = fail_task(ctx, r, j, &res, "exit status %d after %.2f s", res.status, secs(res.elapsed_ns));
        cli_proc_result_free(&res);
        return e;
    }
    /* It succeeded: its outputs must be there, and are what is recorded. */
    for (size_t i = 0; i < t->noutputs; i++) {
        char full[PATH_MAX];
        uint8_t h[CLI_HASH_LEN];
        int err = join_path(full, sizeof full, t->dir, t->outputs[i]) ? ENAMETOOLONG
                                                                         : cli_state_hash(r->st, full, h);
        if (err) {
            free(io.data);
            e = fail_task(ctx, r, j, &res, "the command succeeded but did not make its output %s (%s)",
                          t->outputs[i], err == ENOENT ? "no such file" : strerror(err));
            cli_proc_result_free(&res);
            return e;
        }
        if (cli_io_add(&io, 'o', h, full)) {
            free(io.data);
            cli_proc_result_free(&res);
            return fail_task(ctx, r, j, NULL, "out of memory");
        }
    }
    cli_task_rec rec;
    memset(&rec, 0, sizeof rec);
    memcpy(rec.cmd, cmd, CLI_HASH_LEN);
    rec.io = io.data;
    rec.io_len = io.len;
    snprintf(rec.run_id, sizeof rec.run_id, "%s", r->run_id);
    e = cli_state_task_put(r->st, t->name, &rec, msg, sizeof msg);
    free(io.data);
    if (e) {
        e = fail_task(ctx, r, j, &res, "cannot record its success: %s", msg);
        cli_proc_result_free(&res);
        return e;
    }
    ui_finished(r, j, &res, NULL);
    cli_proc_result_free(&res);
    return VT_OK;
}

/* ---- Signals -------------------------------------------------------------------------------- */

typedef struct sigwatch {
    runner *r;
    sigset_t set;
    pthread_t thread;
    _Atomic int done;
} sigwatch;

/* First Ctrl-C: start nothing more and let what runs finish. Second (or
 * SIGTERM, SIGHUP): kill what runs. */
static void *watch_signals(void *arg)
{
    sigwatch *w = arg;
    for (;;) {
        int sig = 0;
        if (sigwait(&w->set, &sig) != 0)
            continue;
        if (atomic_load(&w->done))
            return NULL;
        runner *r = w->r;
        int n = atomic_fetch_add(&r->interrupts, 1) + 1;
        if (sig == SIGINT && n == 1) {
            pthread_mutex_lock(&r->ui_lock);
            ui_clear(r);
            fprintf(stderr, "vitte: interrupted: waiting for %zu running command%s (Ctrl-C again kills them)\n",
                    r->nrunning, r->nrunning == 1 ? "" : "s");
            pthread_mutex_unlock(&r->ui_lock);
            vt_graph_cancel(r->g);
        } else {
            vt_graph_cancel(r->g);
            size_t k = cli_proc_signal_all(sig == SIGINT ? SIGKILL : SIGTERM);
            pthread_mutex_lock(&r->ui_lock);
            ui_clear(r);
            fprintf(stderr, "vitte: %s: killing %zu running command%s\n", strsignal(sig), k, k == 1 ? "" : "s");
            pthread_mutex_unlock(&r->ui_lock);
        }
    }
}

/* ---- cli_run ---------------------------------------------------------------------------- */

static int cmp_job_time(const void *a, const void *b)
{
    const job *x = *(job *const *)a, *y = *(job *const *)b;
    return x->ns < y->ns ? 1 : x->ns > y->ns ? -1 : 0;
}

static void summary(runner *r, vt_err e)
{
    vt_run_summary s;
    vt_graph_summary(r->g, &s);
    int64_t el = vt_now_ns() - r->t0;
    pthread_mutex_lock(&r->ui_lock);
    ui_clear(r);
    if (r->o->dry_run) {
        size_t n = 0;
        for (size_t i = 0; i < r->tf->ntasks; i++) {
            job *j = &r->jobs[i];
            if (!r->sel[i] || !j->would_run || !j->t->run)
                continue;
            n++;
            if (r->o->explain)
                printf("would run: %s (%s)\n", j->t->name, j->reason);
            else
                printf("would run: %s\n", j->t->name);
        }
        printf("vitte: %zu of %zu tasks would run (dry run: nothing ran)\n", n, r->total);
        pthread_mutex_unlock(&r->ui_lock);
        return;
    }
    FILE *f = ui_out(r);
    fprintf(f, "vitte: %zu task%s: %zu ran, %zu up to date", r->total, r->total == 1 ? "" : "s", r->ran,
            r->up_to_date);
    if (s.failed)
        fprintf(f, ", %zu failed", s.failed);
    if (s.skipped)
        fprintf(f, ", %zu skipped", s.skipped);
    if (s.cancelled)
        fprintf(f, ", %zu not started", s.cancelled);
    if (s.retries)
        fprintf(f, ", %zu retr%s", s.retries, s.retries == 1 ? "y" : "ies");
    fprintf(f, " in %.2f s", secs(el));
    if (e == VT_ECANCELED || atomic_load(&r->interrupts))
        fprintf(f, " (interrupted)");
    fputc('\n', f);
    /* The slowest commands: where the time went. */
    job *slow[3];
    size_t ns = 0;
    job **all = malloc(r->tf->ntasks * sizeof *all);
    if (all) {
        size_t n = 0;
        for (size_t i = 0; i < r->tf->ntasks; i++)
            if (r->sel[i] && r->jobs[i].ran)
                all[n++] = &r->jobs[i];
        if (n)
            qsort(all, n, sizeof *all, cmp_job_time);
        for (; ns < 3 && ns < n; ns++)
            slow[ns] = all[ns];
        free(all);
    }
    if (ns > 1) {
        fprintf(f, "slowest:");
        for (size_t i = 0; i < ns; i++)
            fprintf(f, "%s %s %.2fs", i ? "," : "", slow[i]->t->name, secs(slow[i]->ns));
        fputc('\n', f);
    }
    if (e && e != VT_ECANCELED && !atomic_load(&r->interrupts)) {
        const char *why = vt_graph_error(r->g);
        if (why && *why && s.failed == 0)
            fprintf(stderr, "vitte: %s\n", why);
    }
    fflush(f);
    pthread_mutex_unlock(&r->ui_lock);
}

static void new_run_id(char *out, size_t n)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(out, n, "%lld-%d", (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, (int)getpid());
}

static vt_graph *build_graph(runner *r, const char *name)
{
    vt_graph *g;
    if (vt_graph_new(&g, name) != VT_OK) {
        fprintf(stderr, "vitte: out of memory\n");
        return NULL;
    }
    vt_tf_task *tasks = r->tf->tasks;
    for (size_t i = 0; i < r->tf->ntasks; i++) {
        if (!r->sel[i])
            continue;
        job *j = &r->jobs[i];
        j->r = r;
        j->t = &tasks[i];
        j->task = tasks[i].run ? vt_task_add_async(g, tasks[i].name, command_body, j)
                               : vt_task_add(g, tasks[i].name, group_body, j);
        if (!j->task)
            goto fail;
        if (tasks[i].priority && vt_task_set_priority(j->task, tasks[i].priority) != VT_OK)
            goto fail;
        if (tasks[i].retries && !r->o->dry_run) {
            vt_retry rp = {.max_attempts = tasks[i].retries + 1,
                           .backoff = VT_BACKOFF_EXPONENTIAL,
                           .delay_ns = 100000000,
                           .max_delay_ns = 5000000000,
                           .jitter = 0.2};
            if (vt_task_set_retry(j->task, &rp) != VT_OK)
                goto fail;
        }
    }
    for (size_t i = 0; i < r->tf->ntasks; i++) {
        if (!r->sel[i])
            continue;
        for (size_t d = 0; d < tasks[i].ndeps; d++)
            if (vt_task_precede(r->jobs[tasks[i].deps[d]].task, r->jobs[i].task) != VT_OK)
                goto fail;
    }
    if (vt_graph_validate(g) != VT_OK) {
        fprintf(stderr, "vitte: %s\n", vt_graph_error(g));
        vt_graph_free(g);
        return NULL;
    }
    return g;
fail:
    fprintf(stderr, "vitte: cannot build the graph: %s\n", vt_graph_error(g));
    vt_graph_free(g);
    return NULL;
}

int cli_run(const cli_run_opts *o)
{
    int code = CLI_USAGE;
    runner r;
    memset(&r, 0, sizeof r);
    r.o = o;
    pthread_mutex_init(&r.ui_lock, NULL);
    r.t0 = vt_now_ns();
    r.tty = isatty(STDERR_FILENO) && !o->verbose;
    struct winsize ws;
    if (r.tty && ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0)
        r.cols = ws.ws_col;
    vt_runtime *rt = NULL;
    vt_store *store = NULL;
    vt_monitor *mon = NULL;
    sigwatch sw;
    int watching = 0;
    memset(&sw, 0, sizeof sw);

    /* Signals go to the watcher thread only: blocked here before any other
     * thread starts (the store's, the monitor's, the workers), so that every
     * thread inherits the mask; one that arrives before the watcher runs
     * waits for it. */
    sigemptyset(&sw.set);
    sigaddset(&sw.set, SIGINT);
    sigaddset(&sw.set, SIGTERM);
    sigaddset(&sw.set, SIGHUP);
    sigaddset(&sw.set, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &sw.set, NULL);
    /* A shell starts background commands with SIGINT ignored; vitte's
     * Ctrl-C must work wherever it runs. */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGPIPE, SIG_IGN);

    if (!(r.tf = cli_load(o->file)))
        return CLI_USAGE;
    r.sel = calloc(r.tf->ntasks ? r.tf->ntasks : 1, 1);
    r.jobs = calloc(r.tf->ntasks ? r.tf->ntasks : 1, sizeof *r.jobs);
    if (!r.sel || !r.jobs) {
        fprintf(stderr, "vitte: out of memory\n");
        goto out;
    }
    if (cli_select(r.tf, o->targets, o->ntargets, r.sel) != 0)
        goto out;
    for (size_t i = 0; i < r.tf->ntasks; i++)
        r.total += r.sel[i];

    char path[PATH_MAX + 32], msg[600];
    if (cli_dot_dir(r.tf, r.dot, sizeof r.dot, !o->dry_run) != 0)
        goto out;
    snprintf(path, sizeof path, "%s/state.db", r.dot);
    if (!o->dry_run || access(path, F_OK) == 0) {
        if (cli_state_open(&r.st, path, msg, sizeof msg) != VT_OK) {
            fprintf(stderr, "vitte: %s\n", msg);
            goto out;
        }
    }
    /* A run that did not complete is resumed: tasks that declare no files
     * and succeeded in it are not run again. */
    char *open_run = r.st ? cli_state_meta_get(r.st, "open_run") : NULL;
    if (open_run)
        snprintf(r.run_id, sizeof r.run_id, "%s", open_run);
    else
        new_run_id(r.run_id, sizeof r.run_id);
    free(open_run);
    if (!o->dry_run) {
        snprintf(path, sizeof path, "%s/logs", r.dot);
        if (mkdir(path, 0777) != 0 && errno != EEXIST) {
            fprintf(stderr, "vitte: cannot make %s: %s\n", path, strerror(errno));
            goto out;
        }
        if (cli_state_meta_set(r.st, "open_run", r.run_id) != VT_OK) {
            fprintf(stderr, "vitte: cannot write %s/state.db\n", r.dot);
            goto out;
        }
        snprintf(path, sizeof path, "%s/store.db", r.dot);
        if (vt_store_open(&store, path, NULL) != VT_OK) {
            fprintf(stderr, "vitte: %s\n", vt_store_last_error());
            goto out;
        }
        vt_monitor_opts mo = {.record = 1};
        if (vt_monitor_new(&mon, &mo) != VT_OK) {
            fprintf(stderr, "vitte: cannot start the monitor\n");
            goto out;
        }
    }

    /* The graph's name is what was asked for: history shows it. */
    char name[128] = "";
    for (size_t k = 0; k < o->ntargets; k++) {
        size_t len = strlen(name);
        snprintf(name + len, sizeof name - len, "%s%s", k ? " " : "", o->targets[k]);
    }
    if (!(r.g = build_graph(&r, name[0] ? name : "build")))
        goto out;

    unsigned jobs = o->jobs ? o->jobs : vt_cpu_count();
    vt_sem_init(&r.slots, jobs);
    sw.r = &r;
    if (pthread_create(&sw.thread, NULL, watch_signals, &sw) == 0)
        watching = 1;

    vt_runtime_opts ro;
    memset(&ro, 0, sizeof ro);
    if (vt_runtime_new(&rt, &ro) != VT_OK) {
        fprintf(stderr, "vitte: cannot start the runtime\n");
        goto out;
    }
    vt_run_opts run;
    memset(&run, 0, sizeof run);
    run.on_failure = o->keep_going ? VT_KEEP_GOING : VT_FAIL_FAST;
    run.store = store;
    run.monitor = mon;
    vt_err e = vt_graph_run(r.g, rt, &run);
    if (watching) {
        atomic_store(&sw.done, 1);
        pthread_kill(sw.thread, SIGUSR2);
        pthread_join(sw.thread, NULL);
        watching = 0;
    }
    summary(&r, e);
    if (atomic_load(&r.interrupts))
        code = CLI_INTERRUPTED;
    else
        code = e == VT_OK ? CLI_OK : CLI_FAILED;
    if (!o->dry_run && code == CLI_OK)
        cli_state_meta_set(r.st, "open_run", NULL);
    if (mon) {
        snprintf(path, sizeof path, "%s/trace.json", r.dot);
        FILE *f = fopen(path, "w");
        if (f) {
            vt_monitor_write_trace(mon, f);
            fclose(f);
        }
    }
    vt_sem_destroy(&r.slots);
out:
    if (watching) {
        atomic_store(&sw.done, 1);
        pthread_kill(sw.thread, SIGUSR2);
        pthread_join(sw.thread, NULL);
    }
    vt_graph_free(r.g);
    vt_runtime_free(rt);
    vt_monitor_free(mon);
    vt_store_close(store);
    cli_state_close(r.st);
    free(r.running);
    free(r.jobs);
    free(r.sel);
    vt_tf_free(r.tf);
    pthread_mutex_destroy(&r.ui_lock);
    return code;
}
