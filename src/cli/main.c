/* vitte: runs the tasks of a project's vitte.yaml in parallel. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <vitte/vitte.h>

#include "cli/runner.h"

#define VITTE_VERSION "0.1.0"

typedef struct command {
    const char *name;
    int (*fn)(int argc, char **argv, const struct command *cmd);
    const char *usage;
    const char *help;
} command;

static const char general_help[] =
    "usage: vitte [-f FILE] COMMAND [OPTIONS] [TASK...]\n"
    "\n"
    "Runs the tasks of a project's task file (vitte.yaml, looked for in the\n"
    "current directory and its parents) in parallel, skipping what is up to date.\n"
    "\n"
    "commands:\n"
    "  run [TASK...]     run tasks and what they depend on (default: the file's\n"
    "                    default task, else build)\n"
    "  build, test, bench\n"
    "                    vitte run build, vitte run test, vitte run bench\n"
    "  list              the tasks, with their descriptions\n"
    "  graph [TASK...]   the graph as DOT (Graphviz)\n"
    "  trace [-o FILE]   the last run as a Chrome/Perfetto trace (JSON)\n"
    "  history [-n N]    past runs: outcome, counts and duration\n"
    "  help [COMMAND]    this text, or a command's\n"
    "\n"
    "options of every command:\n"
    "  -f, --file FILE   the task file (default: vitte.yaml)\n"
    "  -h, --help        help\n"
    "      --version     vitte's version\n"
    "\n"
    "The format of vitte.yaml is in docs/taskfile.md; man vitte has it all.\n";

static const char run_options[] =
    "options:\n"
    "  -j, --jobs N      commands at once (default: the number of CPUs)\n"
    "  -k, --keep-going  after a failure, run everything that does not depend on it\n"
    "  -n, --dry-run     print what would run, run nothing\n"
    "      --explain     say why each task runs\n"
    "      --force       run every task, up to date or not\n"
    "  -v, --verbose     print each command and its output\n"
    "  -q, --quiet       no progress: failures and the summary only\n"
    "  -f, --file FILE   the task file (default: vitte.yaml)\n"
    "\n"
    "A task is up to date when its command, environment, directory and the\n"
    "contents of its inputs and outputs (SHA-256) are what they were at its last\n"
    "success; a task that declares neither inputs nor outputs always runs, except\n"
    "when an interrupted or failed run is resumed. Ctrl-C once: nothing more\n"
    "starts and running commands finish; twice: they are killed. Exit status: 0\n"
    "when every task succeeded, 1 when one failed, 2 on a bad command line or task\n"
    "file, 130 when interrupted.\n";

static const char *file_opt; /* -f before the command */

static int usage_error(const command *cmd, const char *fmt, const char *arg)
{
    fprintf(stderr, "vitte %s: ", cmd ? cmd->name : "");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n%s(vitte %s --help for more)\n", cmd ? cmd->usage : "", cmd ? cmd->name : "");
    return CLI_USAGE;
}

/* vitte.yaml in the current directory or the nearest parent that has one. */
static const char *find_file(char *buf, size_t n)
{
    if (file_opt)
        return file_opt;
    char dir[PATH_MAX];
    if (access("vitte.yaml", F_OK) == 0 || !getcwd(dir, sizeof dir))
        return "vitte.yaml"; /* here: messages name it as the user would */
    for (;;) {
        if ((size_t)snprintf(buf, n, "%s/vitte.yaml", strcmp(dir, "/") ? dir : "") < n && access(buf, F_OK) == 0)
            return buf;
        char *slash = strrchr(dir, '/');
        if (!slash || slash == dir) {
            if (strcmp(dir, "/") == 0)
                break;
            strcpy(dir, "/");
            continue;
        }
        *slash = 0;
    }
    return "vitte.yaml"; /* not found: the error names the usual place */
}

static int is_help(const char *a)
{
    return strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0;
}

/* -f FILE / --file=FILE anywhere among a command's options. 1 if taken. */
static int take_file(int argc, char **argv, int *i)
{
    if (strcmp(argv[*i], "-f") == 0 || strcmp(argv[*i], "--file") == 0) {
        if (*i + 1 >= argc)
            return -1;
        file_opt = argv[++*i];
        return 1;
    }
    if (strncmp(argv[*i], "--file=", 7) == 0) {
        file_opt = argv[*i] + 7;
        return 1;
    }
    return 0;
}

static int parse_uint(const char *s, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v == 0 || v > 4096 || s[0] == '-')
        return -1;
    *out = (unsigned)v;
    return 0;
}

static int run_like(int argc, char **argv, const command *cmd, const char *implied)
{
    cli_run_opts o;
    memset(&o, 0, sizeof o);
    const char **targets = calloc((size_t)argc + 1, sizeof *targets);
    if (!targets)
        return CLI_FAILED;
    size_t n = 0;
    if (implied)
        targets[n++] = implied;
    int code = -1;
    for (int i = 1; i < argc && code < 0; i++) {
        const char *a = argv[i];
        int f = take_file(argc, argv, &i);
        if (f < 0)
            code = usage_error(cmd, "%s needs a file", a);
        else if (f)
            continue;
        else if (is_help(a)) {
            printf("%s\n%s\n%s", cmd->usage, cmd->help, run_options);
            code = CLI_OK;
        } else if (strcmp(a, "-j") == 0 || strcmp(a, "--jobs") == 0) {
            if (i + 1 >= argc || parse_uint(argv[++i], &o.jobs))
                code = usage_error(cmd, "%s needs a number of jobs from 1 to 4096", a);
        } else if (strncmp(a, "-j", 2) == 0 && a[2]) {
            if (parse_uint(a + 2, &o.jobs))
                code = usage_error(cmd, "%s: the number of jobs is from 1 to 4096", a);
        } else if (strncmp(a, "--jobs=", 7) == 0) {
            if (parse_uint(a + 7, &o.jobs))
                code = usage_error(cmd, "%s: the number of jobs is from 1 to 4096", a);
        } else if (strcmp(a, "-k") == 0 || strcmp(a, "--keep-going") == 0)
            o.keep_going = 1;
        else if (strcmp(a, "-n") == 0 || strcmp(a, "--dry-run") == 0)
            o.dry_run = 1;
        else if (strcmp(a, "--explain") == 0)
            o.explain = 1;
        else if (strcmp(a, "--force") == 0)
            o.force = 1;
        else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0)
            o.verbose = 1;
        else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0)
            o.quiet = 1;
        else if (a[0] == '-' && a[1])
            code = usage_error(cmd, "unknown option %s", a);
        else
            targets[n++] = a;
    }
    if (code >= 0) {
        free(targets);
        return code;
    }
    char buf[PATH_MAX + 16];
    o.file = find_file(buf, sizeof buf);
    vt_taskfile *tf = NULL;
    if (n == 0) {
        /* The file's default task, read once more by cli_run: loading is
         * cheap next to running. */
        if (!(tf = cli_load(o.file))) {
            free(targets);
            return CLI_USAGE;
        }
        targets[n++] = tf->default_task ? tf->default_task : "build";
    }
    o.targets = targets;
    o.ntargets = n;
    code = cli_run(&o);
    vt_tf_free(tf);
    free(targets);
    return code;
}

static int cmd_run(int argc, char **argv, const command *cmd)
{
    return run_like(argc, argv, cmd, NULL);
}

static int cmd_shortcut(int argc, char **argv, const command *cmd)
{
    return run_like(argc, argv, cmd, cmd->name);
}

/* Options of the commands that only read: -f and --help, plus the ones
 * listed in extra (each taking a value), returned in vals. */
static int read_opts(int argc, char **argv, const command *cmd, const char *const *extra, const char **vals,
                     const char **rest, size_t *nrest, int *json)
{
    for (int i = 1; i < argc; i++) {
        int f = take_file(argc, argv, &i);
        if (f < 0)
            return usage_error(cmd, "%s needs a file", argv[i]);
        if (f)
            continue;
        if (is_help(argv[i])) {
            printf("%s\n%s", cmd->usage, cmd->help);
            return CLI_OK;
        }
        if (json && strcmp(argv[i], "--json") == 0) {
            *json = 1;
            continue;
        }
        int taken = 0;
        for (size_t k = 0; extra && extra[k]; k++) {
            if (strcmp(argv[i], extra[k]) == 0) {
                if (i + 1 >= argc)
                    return usage_error(cmd, "%s needs a value", argv[i]);
                vals[k] = argv[++i];
                taken = 1;
            }
        }
        if (taken)
            continue;
        if (argv[i][0] == '-' && argv[i][1])
            return usage_error(cmd, "unknown option %s", argv[i]);
        if (!rest)
            return usage_error(cmd, "unexpected argument %s", argv[i]);
        rest[(*nrest)++] = argv[i];
    }
    return -1;
}

static int cmd_list(int argc, char **argv, const command *cmd)
{
    int code = read_opts(argc, argv, cmd, NULL, NULL, NULL, NULL, NULL);
    if (code >= 0)
        return code;
    char buf[PATH_MAX + 16];
    vt_taskfile *tf = cli_load(find_file(buf, sizeof buf));
    if (!tf)
        return CLI_USAGE;
    /* One line per entry of the file: an expanded entry is one line. */
    size_t width = 0;
    for (size_t i = 0; i < tf->ntasks; i++) {
        size_t w = strlen(tf->tasks[i].entry) + (strcmp(tf->tasks[i].entry, tf->tasks[i].name) ? 2 : 0);
        if (w > width)
            width = w;
    }
    for (size_t i = 0; i < tf->ntasks;) {
        const vt_tf_task *t = &tf->tasks[i];
        size_t n = 1;
        while (i + n < tf->ntasks && strcmp(tf->tasks[i + n].entry, t->entry) == 0)
            n++;
        int expanded = strcmp(t->entry, t->name) != 0;
        char label[300];
        snprintf(label, sizeof label, "%s%s", t->entry, expanded ? ":*" : "");
        printf("%-*s  %s", (int)width, label, t->desc);
        if (expanded)
            printf("%s(%zu task%s)", t->desc[0] ? " " : "", n, n == 1 ? "" : "s");
        putchar('\n');
        i += n;
    }
    vt_tf_free(tf);
    return CLI_OK;
}

static vt_err noop_body(vt_task_ctx *ctx, void *data)
{
    (void)ctx;
    (void)data;
    return VT_OK;
}

static int cmd_graph(int argc, char **argv, const command *cmd)
{
    const char **rest = calloc((size_t)argc + 1, sizeof *rest);
    size_t n = 0;
    static const char *const extra[] = {"-o", NULL};
    const char *vals[1] = {NULL};
    if (!rest)
        return CLI_FAILED;
    int code = read_opts(argc, argv, cmd, extra, vals, rest, &n, NULL);
    if (code >= 0) {
        free(rest);
        return code;
    }
    char buf[PATH_MAX + 16];
    vt_taskfile *tf = cli_load(find_file(buf, sizeof buf));
    unsigned char *sel = tf ? calloc(tf->ntasks + 1, 1) : NULL;
    vt_task **tasks = tf ? calloc(tf->ntasks + 1, sizeof *tasks) : NULL;
    vt_graph *g = NULL;
    code = CLI_USAGE;
    if (!tf || !sel || !tasks)
        goto out;
    if (n == 0)
        memset(sel, 1, tf->ntasks);
    else if (cli_select(tf, rest, n, sel) != 0)
        goto out;
    code = CLI_FAILED;
    if (vt_graph_new(&g, n ? rest[0] : "vitte") != VT_OK)
        goto out;
    for (size_t i = 0; i < tf->ntasks; i++)
        if (sel[i] && !(tasks[i] = vt_task_add(g, tf->tasks[i].name, noop_body, NULL)))
            goto out;
    for (size_t i = 0; i < tf->ntasks; i++)
        for (size_t d = 0; sel[i] && d < tf->tasks[i].ndeps; d++)
            if (vt_task_precede(tasks[tf->tasks[i].deps[d]], tasks[i]) != VT_OK)
                goto out;
    FILE *f = vals[0] ? fopen(vals[0], "w") : stdout;
    if (!f) {
        fprintf(stderr, "vitte graph: cannot write %s: %s\n", vals[0], strerror(errno));
        goto out;
    }
    vt_err e = vt_graph_write_dot(g, f);
    if (vals[0] && fclose(f) != 0 && !e)
        e = vt_err_from_errno(errno);
    if (e) {
        fprintf(stderr, "vitte graph: %s\n", vt_strerror(e));
        goto out;
    }
    code = CLI_OK;
out:
    vt_graph_free(g);
    free(tasks);
    free(sel);
    vt_tf_free(tf);
    free(rest);
    return code;
}

/* The path of one of vitte's files (in .vitte/ beside the task file):
 * CLI_OK, or the exit code after the error was printed. */
static int project_file(const char *name, char *out, size_t n)
{
    char buf[PATH_MAX + 16], dot[PATH_MAX];
    vt_taskfile *tf = cli_load(find_file(buf, sizeof buf));
    if (!tf)
        return CLI_USAGE;
    int bad = cli_dot_dir(tf, dot, sizeof dot, 0);
    vt_tf_free(tf);
    if (bad)
        return CLI_FAILED;
    snprintf(out, n, "%s/%s", dot, name);
    return CLI_OK;
}

static int cmd_trace(int argc, char **argv, const command *cmd)
{
    static const char *const extra[] = {"-o", NULL};
    const char *vals[1] = {NULL};
    int code = read_opts(argc, argv, cmd, extra, vals, NULL, NULL, NULL);
    if (code >= 0)
        return code;
    char path[PATH_MAX + 16];
    if ((code = project_file("trace.json", path, sizeof path)) != CLI_OK)
        return code;
    FILE *in = fopen(path, "r");
    if (!in) {
        fprintf(stderr, "vitte trace: no trace yet (%s: %s): vitte run writes one\n", path, strerror(errno));
        return CLI_FAILED;
    }
    FILE *out = vals[0] ? fopen(vals[0], "w") : stdout;
    if (!out) {
        fprintf(stderr, "vitte trace: cannot write %s: %s\n", vals[0], strerror(errno));
        fclose(in);
        return CLI_FAILED;
    }
    char chunk[65536];
    size_t k;
    int failed = 0;
    while ((k = fread(chunk, 1, sizeof chunk, in)) > 0)
        failed |= fwrite(chunk, 1, k, out) != k;
    fclose(in);
    if (vals[0])
        failed |= fclose(out) != 0;
    else
        failed |= fflush(out) != 0;
    if (failed) {
        fprintf(stderr, "vitte trace: cannot write %s: %s\n", vals[0] ? vals[0] : "the output", strerror(errno));
        return CLI_FAILED;
    }
    if (vals[0])
        fprintf(stderr, "vitte trace: wrote %s (open it in ui.perfetto.dev or chrome://tracing)\n", vals[0]);
    return CLI_OK;
}

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static int cmd_history(int argc, char **argv, const command *cmd)
{
    static const char *const extra[] = {"-n", NULL};
    const char *vals[1] = {NULL};
    int json = 0;
    int code = read_opts(argc, argv, cmd, extra, vals, NULL, NULL, &json);
    if (code >= 0)
        return code;
    unsigned max = 20;
    if (vals[0] && parse_uint(vals[0], &max))
        return usage_error(cmd, "-n %s: a number from 1 to 4096", vals[0]);
    char path[PATH_MAX + 16];
    if ((code = project_file("store.db", path, sizeof path)) != CLI_OK)
        return code;
    if (access(path, F_OK) != 0) {
        if (json)
            printf("[]\n");
        else
            printf("no runs yet\n");
        return CLI_OK;
    }
    vt_store *s;
    vt_store_opts so = {.read_only = 1};
    if (vt_store_open(&s, path, &so) != VT_OK) {
        fprintf(stderr, "vitte history: %s\n", vt_store_last_error());
        return CLI_FAILED;
    }
    vt_run_info *runs;
    size_t n;
    vt_err e = vt_store_runs(s, max, &runs, &n);
    if (e) {
        fprintf(stderr, "vitte history: %s\n", vt_store_last_error());
        vt_store_close(s);
        return CLI_FAILED;
    }
    if (json)
        putchar('[');
    for (size_t i = 0; i < n; i++) {
        const vt_run_info *r = &runs[i];
        double took = r->ended_unix_ns ? (double)(r->ended_unix_ns - r->started_unix_ns) / 1e9 : 0;
        time_t t = (time_t)(r->started_unix_ns / 1000000000);
        struct tm tm;
        char when[32];
        localtime_r(&t, &tm);
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
        if (json) {
            printf("%s\n {\"id\": ", i ? "," : "");
            json_str(r->id);
            printf(", \"tasks\": ");
            json_str(r->graph);
            printf(", \"status\": \"%s\", \"started\": \"%s\", \"seconds\": %.3f, \"total\": %zu, "
                   "\"succeeded\": %zu, \"failed\": %zu, \"cancelled\": %zu, \"skipped\": %zu}",
                   vt_run_status_name(r->status), when, took, r->total, r->succeeded, r->failed, r->cancelled,
                   r->skipped);
        } else {
            printf("%s  %-11s %8.2fs  %5zu tasks, %zu failed  %s\n", when, vt_run_status_name(r->status), took,
                   r->total, r->failed, r->graph);
        }
    }
    if (json)
        printf("%s]\n", n ? "\n" : "");
    else if (!n)
        printf("no runs yet\n");
    vt_store_runs_free(runs, n);
    vt_store_close(s);
    return CLI_OK;
}

static int cmd_help(int argc, char **argv, const command *cmd);

static const command commands[] = {
    {"run", cmd_run, "usage: vitte run [OPTIONS] [TASK...]\n",
     "Runs the tasks (task names, or entry names for all the tasks an entry\n"
     "expands to) and everything they depend on, in parallel. Without a task:\n"
     "the file's `default`, else build.\n"},
    {"build", cmd_shortcut, "usage: vitte build [OPTIONS] [TASK...]\n", "vitte run build [TASK...]\n"},
    {"test", cmd_shortcut, "usage: vitte test [OPTIONS] [TASK...]\n", "vitte run test [TASK...]\n"},
    {"bench", cmd_shortcut, "usage: vitte bench [OPTIONS] [TASK...]\n", "vitte run bench [TASK...]\n"},
    {"list", cmd_list, "usage: vitte list [-f FILE]\n",
     "The tasks of the file, one line per entry (an entry that expands to many\n"
     "tasks is shown as entry:*), with their descriptions.\n"},
    {"graph", cmd_graph, "usage: vitte graph [-f FILE] [-o FILE] [TASK...]\n",
     "Prints the graph of the tasks (all of them, or the given ones and what they\n"
     "depend on) in Graphviz's DOT language: vitte graph | dot -Tsvg > graph.svg\n"},
    {"trace", cmd_trace, "usage: vitte trace [-f FILE] [-o FILE]\n",
     "Writes the last run as a Chrome/Perfetto trace (JSON): one lane per worker,\n"
     "one span per command. Open it in ui.perfetto.dev or chrome://tracing.\n"},
    {"history", cmd_history, "usage: vitte history [-f FILE] [-n N] [--json]\n",
     "Lists the last N runs (20), newest first: when, outcome, duration, counts\n"
     "and the tasks asked for. Kept in .vitte/store.db beside the task file.\n"},
    {"help", cmd_help, "usage: vitte help [COMMAND]\n", "Help on vitte, or on one command.\n"},
};
#define NCOMMANDS (sizeof commands / sizeof *commands)

static const command *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static int cmd_help(int argc, char **argv, const command *cmd)
{
    if (argc < 2) {
        fputs(general_help, stdout);
        return CLI_OK;
    }
    if (is_help(argv[1])) {
        printf("%s\n%s", cmd->usage, cmd->help);
        return CLI_OK;
    }
    const command *c = find_command(argv[1]);
    if (!c) {
        fprintf(stderr, "vitte help: no command \"%s\" (vitte --help lists them)\n", argv[1]);
        return CLI_USAGE;
    }
    char *args[] = {argv[1], "--help", NULL};
    return c->fn(2, args, c);
}

int main(int argc, char **argv)
{
    int i = 1;
    for (; i < argc; i++) {
        int f = take_file(argc, argv, &i);
        if (f < 0) {
            fprintf(stderr, "vitte: %s needs a file\n", argv[i]);
            return CLI_USAGE;
        }
        if (f)
            continue;
        if (is_help(argv[i])) {
            fputs(general_help, stdout);
            return CLI_OK;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("vitte %s\n", VITTE_VERSION);
            return CLI_OK;
        }
        break;
    }
    if (i >= argc) {
        /* Plain `vitte`: what `vitte run` does. */
        char *args[] = {"run", NULL};
        return cmd_run(1, args, find_command("run"));
    }
    const command *c = find_command(argv[i]);
    if (!c) {
        fprintf(stderr, "vitte: unknown command \"%s\" (vitte --help lists them)\n", argv[i]);
        return CLI_USAGE;
    }
    return c->fn(argc - i, argv + i, c);
}
