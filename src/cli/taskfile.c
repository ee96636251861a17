/* The task file parser: libyaml's document API gives the tree with the
 * place of every node, which every error message names. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "cli/taskfile.h"

#include <errno.h>
#include <glob.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yaml.h>

#include "cli/map.h"

#define FILE_MAX ((size_t)16 << 20) /* bytes of a task file */
#define TASKS_MAX 500000u
#define STRING_MAX ((size_t)1 << 16) /* a string after substitution */
#define SUBST_DEPTH 16              /* variables within variables */

typedef struct parse {
    const char *name; /* for messages */
    const char *root;
    yaml_document_t doc;
    vt_tf_error *err;
    vt_err code;       /* the first error; VT_OK while there is none */
    yaml_node_t *vars; /* mapping or NULL */
    vt_taskfile *tf;
    size_t cap;
    char ***dep_names; /* per task: names as written, and their nodes */
    yaml_node_t ***dep_nodes;
    size_t *ndep_names;
} parse;

/* ---- Errors ------------------------------------------------------------------------------ */

static void fail_at(parse *p, vt_err code, unsigned line, unsigned col, const char *fmt, ...) VT_PRINTF(5, 6);

static void fail_at(parse *p, vt_err code, unsigned line, unsigned col, const char *fmt, ...)
{
    if (p->code)
        return; /* the first error is the one reported */
    p->code = code;
    if (!p->err)
        return;
    p->err->line = line;
    p->err->col = col;
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (line)
        snprintf(p->err->msg, sizeof p->err->msg, "%s:%u:%u: %s", p->name, line, col, what);
    else
        snprintf(p->err->msg, sizeof p->err->msg, "%s: %s", p->name, what);
}

#define FAIL(p, node, ...)                                                                                 \
    fail_at(p, VT_EFORMAT, (unsigned)(node)->start_mark.line + 1, (unsigned)(node)->start_mark.column + 1, \
            __VA_ARGS__)

static void oom(parse *p)
{
    fail_at(p, VT_ENOMEM, 0, 0, "out of memory");
}

static char *dup_or_fail(parse *p, const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d)
        oom(p);
    return d;
}

static const char *kind_name(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_SCALAR_NODE:
        return "a string";
    case YAML_SEQUENCE_NODE:
        return "a list";
    case YAML_MAPPING_NODE:
        return "a map";
    default:
        return "nothing";
    }
}

static yaml_node_t *node(parse *p, int i)
{
    return yaml_document_get_node(&p->doc, i);
}

static const char *scalar(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* A map's keys must be strings, each once (a hash set for big maps: the
 * tasks of a generated file may be a hundred thousand). */
static int check_map(parse *p, yaml_node_t *m, const char *what)
{
    size_t n = (size_t)(m->data.mapping.pairs.top - m->data.mapping.pairs.start);
    cli_map seen = {0};
    int rc = 0;
    for (yaml_node_pair_t *a = m->data.mapping.pairs.start; a < m->data.mapping.pairs.top && !rc; a++) {
        yaml_node_t *k = node(p, a->key);
        if (!scalar(k)) {
            FAIL(p, k, "a key of %s is %s (expected a name)", what, kind_name(k));
            rc = -1;
            break;
        }
        int twice = 0;
        if (n > 16) {
            twice = cli_map_get(&seen, scalar(k)) != NULL;
            if (!twice && cli_map_put(&seen, scalar(k), k)) {
                oom(p);
                rc = -1;
            }
        } else {
            for (yaml_node_pair_t *b = m->data.mapping.pairs.start; b < a && !twice; b++)
                twice = strcmp(scalar(node(p, b->key)), scalar(k)) == 0;
        }
        if (twice) {
            FAIL(p, k, "\"%s\" appears twice in %s", scalar(k), what);
            rc = -1;
        }
    }
    cli_map_free(&seen, NULL);
    return rc;
}

static yaml_node_t *get(parse *p, yaml_node_t *m, const char *key)
{
    for (yaml_node_pair_t *a = m->data.mapping.pairs.start; a < m->data.mapping.pairs.top; a++)
        if (strcmp(scalar(node(p, a->key)), key) == 0)
            return node(p, a->value);
    return NULL;
}

/* ---- Variables --------------------------------------------------------------------------- */

typedef struct item {
    const char *path; /* NULL outside glob/each entries */
} item;

typedef struct buf {
    char *s;
    size_t len, cap;
} buf;

static int put(parse *p, buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > STRING_MAX)
        return -1;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 128;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *d = realloc(b->s, cap);
        if (!d) {
            oom(p);
            return -1;
        }
        b->s = d;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
    return 0;
}

/* The column in the file of offset off in scalar n, when the scalar is on
 * one line as written; else the scalar's own column. */
static unsigned col_of(const yaml_node_t *n, size_t off)
{
    unsigned col = (unsigned)n->start_mark.column + 1;
    if (n->start_mark.line != n->end_mark.line)
        return col;
    yaml_scalar_style_t st = n->data.scalar.style;
    if (st == YAML_PLAIN_SCALAR_STYLE)
        return col + (unsigned)off;
    if (st == YAML_SINGLE_QUOTED_SCALAR_STYLE || st == YAML_DOUBLE_QUOTED_SCALAR_STYLE)
        return col + 1 + (unsigned)off; /* exact unless escapes come before */
    return col;
}

static int expand(parse *p, const yaml_node_t *where, const char *text, const item *it, buf *out, int depth);

static void item_part(const char *path, const char *part, char *dst, size_t n)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (strcmp(part, "name") == 0) {
        snprintf(dst, n, "%s", base);
    } else if (strcmp(part, "stem") == 0) {
        const char *dot = strrchr(base, '.');
        size_t len = dot && dot != base ? (size_t)(dot - base) : strlen(base);
        snprintf(dst, n, "%.*s", (int)len, base);
    } else { /* dir */
        if (!slash)
            snprintf(dst, n, ".");
        else
            snprintf(dst, n, "%.*s", (int)(slash == path ? 1 : slash - path), path);
    }
}

/* One ${...} reference: its value appended to out. */
static int reference(parse *p, const yaml_node_t *where, size_t off, const char *ref, const item *it, buf *out,
                     int depth)
{
    unsigned line = (unsigned)where->start_mark.line + 1, col = col_of(where, off);
    if (strncmp(ref, "env:", 4) == 0) {
        char name[256];
        const char *dflt = strstr(ref + 4, ":-");
        size_t len = dflt ? (size_t)(dflt - ref - 4) : strlen(ref + 4);
        snprintf(name, sizeof name, "%.*s", (int)len, ref + 4);
        const char *v = getenv(name);
        if (!v && !dflt) {
            fail_at(p, VT_EFORMAT, line, col,
                    "the environment variable %s is not set (write ${env:%s:-default} for a default)", name, name);
            return -1;
        }
        v = v ? v : dflt + 2;
        return put(p, out, v, strlen(v));
    }
    if (strcmp(ref, "item") == 0 || strncmp(ref, "item.", 5) == 0) {
        if (!it || !it->path) {
            fail_at(p, VT_EFORMAT, line, col, "${%s} is only known in an entry with glob or each", ref);
            return -1;
        }
        if (strcmp(ref, "item") == 0)
            return put(p, out, it->path, strlen(it->path));
        const char *part = ref + 5;
        if (strcmp(part, "name") && strcmp(part, "stem") && strcmp(part, "dir")) {
            fail_at(p, VT_EFORMAT, line, col, "unknown ${%s} (expected ${item}, ${item.name}, ${item.stem} or ${item.dir})",
                    ref);
            return -1;
        }
        char v[PATH_MAX];
        item_part(it->path, part, v, sizeof v);
        return put(p, out, v, strlen(v));
    }
    yaml_node_t *v = NULL;
    if (p->vars)
        v = get(p, p->vars, ref);
    if (!v) {
        fail_at(p, VT_EFORMAT, line, col, "unknown variable ${%s} (define it under vars:)", ref);
        return -1;
    }
    if (depth >= SUBST_DEPTH) {
        fail_at(p, VT_EFORMAT, line, col, "variables refer to each other in a loop through ${%s}", ref);
        return -1;
    }
    return expand(p, v, scalar(v), it, out, depth + 1);
}

static int expand(parse *p, const yaml_node_t *where, const char *text, const item *it, buf *out, int depth)
{
    const char *s = text;
    while (*s) {
        const char *d = strstr(s, "${");
        size_t plain = d ? (size_t)(d - s) : strlen(s);
        if (plain && put(p, out, s, plain))
            goto too_long;
        if (!d)
            break;
        if (d > text && d[-1] == '$') {
            /* "$${" is a literal "${": the first $ was copied, drop it. */
            out->s[--out->len] = 0;
            if (put(p, out, "${", 2))
                goto too_long;
            s = d + 2;
            continue;
        }
        const char *end = strchr(d + 2, '}');
        if (!end) {
            fail_at(p, VT_EFORMAT, (unsigned)where->start_mark.line + 1, col_of(where, (size_t)(d - text)),
                    "\"${\" without its closing \"}\" (write $${ for a literal ${)");
            return -1;
        }
        char ref[256];
        if ((size_t)(end - d - 2) >= sizeof ref || end == d + 2) {
            fail_at(p, VT_EFORMAT, (unsigned)where->start_mark.line + 1, col_of(where, (size_t)(d - text)),
                    "a variable name must be 1 to 255 characters");
            return -1;
        }
        snprintf(ref, sizeof ref, "%.*s", (int)(end - d - 2), d + 2);
        if (reference(p, where, (size_t)(d - text), ref, it, out, depth))
            return -1;
        s = end + 1;
    }
    if (!out->s && put(p, out, "", 0))
        return -1;
    return 0;
too_long:
    if (!p->code)
        FAIL(p, where, "the string is longer than %zu bytes once its variables are substituted", STRING_MAX);
    return -1;
}

/* A scalar with its variables substituted (malloc'd), or NULL on error. */
static char *str(parse *p, yaml_node_t *n, const char *what, const item *it)
{
    if (!scalar(n)) {
        FAIL(p, n, "%s must be a string, not %s", what, kind_name(n));
        return NULL;
    }
    buf b = {0};
    if (expand(p, n, scalar(n), it, &b, 0)) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

/* A string or a list of strings, substituted. */
static char **strs(parse *p, yaml_node_t *n, const char *what, const item *it, size_t *count)
{
    *count = 0;
    size_t k = n->type == YAML_SEQUENCE_NODE ? (size_t)(n->data.sequence.items.top - n->data.sequence.items.start)
                                              : 1;
    if (n->type == YAML_MAPPING_NODE) {
        FAIL(p, n, "%s must be a string or a list of strings, not a map", what);
        return NULL;
    }
    char **v = calloc(k + 1, sizeof *v);
    if (!v) {
        oom(p);
        return NULL;
    }
    for (size_t i = 0; i < k; i++) {
        yaml_node_t *e = n->type == YAML_SEQUENCE_NODE ? node(p, n->data.sequence.items.start[i]) : n;
        if (!(v[i] = str(p, e, what, it))) {
            for (size_t j = 0; j < i; j++)
                free(v[j]);
            free(v);
            return NULL;
        }
    }
    *count = k;
    return v;
}

static void free_strs(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

/* ---- Numbers ------------------------------------------------------------------------------- */

static int integer(parse *p, yaml_node_t *n, const char *key, long lo, long hi, long *out)
{
    const char *s = scalar(n);
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || v < lo || v > hi) {
        FAIL(p, n, "\"%s\" must be an integer from %ld to %ld, not %s%s%s", key, lo, hi, s ? "\"" : "",
             s ? s : kind_name(n), s ? "\"" : "");
        return -1;
    }
    *out = v;
    return 0;
}

static int duration(parse *p, yaml_node_t *n, int64_t *out)
{
    const char *s = scalar(n);
    char *end;
    errno = 0;
    double v = s ? strtod(s, &end) : -1;
    double unit = 1e9;
    if (s && end != s) {
        if (strcmp(end, "ms") == 0)
            unit = 1e6;
        else if (strcmp(end, "s") == 0 || *end == 0)
            unit = 1e9;
        else if (strcmp(end, "m") == 0)
            unit = 60e9;
        else if (strcmp(end, "h") == 0)
            unit = 3600e9;
        else
            v = -1;
    }
    if (!s || end == s || errno || v <= 0 || v * unit > 7 * 86400e9) {
        FAIL(p, n, "\"timeout\" must be a duration up to a week: a number of seconds, or 500ms, 30s, 2m, 1h; not %s%s%s",
             s ? "\"" : "", s ? s : kind_name(n), s ? "\"" : "");
        return -1;
    }
    *out = (int64_t)(v * unit);
    return 0;
}

/* ---- Names ----------------------------------------------------------------------------------- */

static int bad_name(const char *s)
{
    return !*s || strpbrk(s, "/ \t\n\r") != NULL;
}

/* ---- Tasks ----------------------------------------------------------------------------------- */

static const char *const task_keys[] = {"desc",    "run",     "deps",     "inputs", "outputs", "env", "dir",
                                        "retries", "timeout", "priority", "glob",   "each",    "name"};
#define NTASK_KEYS (sizeof task_keys / sizeof *task_keys)

static void free_task(vt_tf_task *t)
{
    free(t->name);
    free(t->entry);
    free(t->desc);
    free(t->run);
    free(t->deps);
    free_strs(t->inputs, t->ninputs);
    free_strs(t->outputs, t->noutputs);
    free_strs(t->env, t->nenv);
    free(t->dir);
}

static vt_tf_task *new_task(parse *p)
{
    vt_taskfile *tf = p->tf;
    if (tf->ntasks == TASKS_MAX) {
        fail_at(p, VT_EFORMAT, 0, 0, "more than %u tasks", TASKS_MAX);
        return NULL;
    }
    if (tf->ntasks == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        vt_tf_task *t = realloc(tf->tasks, cap * sizeof *t);
        char ***dn = t ? realloc(p->dep_names, cap * sizeof *dn) : NULL;
        if (t)
            tf->tasks = t;
        if (dn)
            p->dep_names = dn;
        yaml_node_t ***nodes = dn ? realloc(p->dep_nodes, cap * sizeof *nodes) : NULL;
        if (nodes)
            p->dep_nodes = nodes;
        size_t *nd = nodes ? realloc(p->ndep_names, cap * sizeof *nd) : NULL;
        if (!nd) {
            oom(p);
            return NULL;
        }
        p->ndep_names = nd;
        p->cap = cap;
    }
    vt_tf_task *t = &tf->tasks[tf->ntasks];
    memset(t, 0, sizeof *t);
    p->dep_names[tf->ntasks] = NULL;
    p->dep_nodes[tf->ntasks] = NULL;
    p->ndep_names[tf->ntasks] = 0;
    tf->ntasks++;
    return t;
}

static int path_join(char *out, size_t n, const char *dir, const char *rel)
{
    int k = rel[0] == '/' ? snprintf(out, n, "%s", rel) : snprintf(out, n, "%s/%s", dir, rel);
    return k < 0 || (size_t)k >= n ? -1 : 0;
}

/* One task of an entry (it: its item, or none). */
static int add_task(parse *p, const char *entry, yaml_node_t *key, yaml_node_t *m, const item *it)
{
    vt_tf_task *t = new_task(p);
    if (!t)
        return -1;
    size_t index = p->tf->ntasks - 1;
    t->line = (unsigned)key->start_mark.line + 1;
    t->col = (unsigned)key->start_mark.column + 1;
    if (!(t->entry = dup_or_fail(p, entry)))
        return -1;
    if (it->path) {
        yaml_node_t *tmpl = get(p, m, "name");
        char *k;
        if (tmpl) {
            k = str(p, tmpl, "\"name\"", it);
        } else {
            buf b = {0};
            if (get(p, m, "glob")) {
                char stem[PATH_MAX];
                item_part(it->path, "stem", stem, sizeof stem);
                put(p, &b, stem, strlen(stem));
            } else {
                put(p, &b, it->path, strlen(it->path));
            }
            k = b.s;
        }
        if (!k)
            return -1;
        yaml_node_t *where = tmpl ? tmpl : key;
        if (bad_name(k)) {
            FAIL(p, where, "the task named for item \"%s\" would be \"%s:%s\": a name cannot be empty or hold '/' or spaces (set \"name\" to choose one)",
                 it->path, entry, k);
            free(k);
            return -1;
        }
        size_t len = strlen(entry) + 1 + strlen(k) + 1;
        t->name = malloc(len);
        if (!t->name) {
            free(k);
            oom(p);
            return -1;
        }
        snprintf(t->name, len, "%s:%s", entry, k);
        free(k);
    } else if (!(t->name = dup_or_fail(p, entry))) {
        return -1;
    }
    yaml_node_t *n;
    if ((n = get(p, m, "desc")) && !(t->desc = str(p, n, "\"desc\"", it)))
        return -1;
    if (!t->desc && !(t->desc = dup_or_fail(p, "")))
        return -1;
    if ((n = get(p, m, "run")) && !(t->run = str(p, n, "\"run\"", it)))
        return -1;
    if (t->run && !t->run[strspn(t->run, " \t\n")]) {
        FAIL(p, n, "\"run\" is empty (leave it out for a task that only groups its dependencies)");
        return -1;
    }
    if ((n = get(p, m, "inputs")) && !(t->inputs = strs(p, n, "\"inputs\"", it, &t->ninputs)) && p->code)
        return -1;
    if ((n = get(p, m, "outputs")) && !(t->outputs = strs(p, n, "\"outputs\"", it, &t->noutputs)) && p->code)
        return -1;
    for (size_t i = 0; i < t->noutputs; i++) {
        if (strpbrk(t->outputs[i], "*?[") || !t->outputs[i][0]) {
            FAIL(p, n, "output \"%s\" must be a path, not a pattern", t->outputs[i]);
            return -1;
        }
    }
    if ((n = get(p, m, "deps"))) {
        size_t k = 0;
        char **names = strs(p, n, "\"deps\"", it, &k);
        if (!names && p->code)
            return -1;
        yaml_node_t **nodes = calloc(k + 1, sizeof *nodes);
        if (!nodes) {
            free_strs(names, k);
            oom(p);
            return -1;
        }
        for (size_t i = 0; i < k; i++)
            nodes[i] = n->type == YAML_SEQUENCE_NODE ? node(p, n->data.sequence.items.start[i]) : n;
        p->dep_names[index] = names;
        p->dep_nodes[index] = nodes;
        p->ndep_names[index] = k;
    }
    if ((n = get(p, m, "env"))) {
        if (n->type != YAML_MAPPING_NODE) {
            FAIL(p, n, "\"env\" must be a map of NAME: value, not %s", kind_name(n));
            return -1;
        }
        if (check_map(p, n, "\"env\""))
            return -1;
        size_t k = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
        if (!(t->env = calloc(k + 1, sizeof *t->env))) {
            oom(p);
            return -1;
        }
        for (size_t i = 0; i < k; i++) {
            yaml_node_pair_t *pr = &n->data.mapping.pairs.start[i];
            const char *name = scalar(node(p, pr->key));
            if (!*name || strchr(name, '=')) {
                FAIL(p, node(p, pr->key), "\"%s\" is not an environment variable name", name);
                return -1;
            }
            char *v = str(p, node(p, pr->value), "an \"env\" value", it);
            if (!v)
                return -1;
            size_t len = strlen(name) + 1 + strlen(v) + 1;
            t->env[i] = malloc(len);
            if (!t->env[i]) {
                free(v);
                oom(p);
                return -1;
            }
            snprintf(t->env[i], len, "%s=%s", name, v);
            free(v);
            t->nenv = i + 1;
        }
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", p->root);
    if ((n = get(p, m, "dir"))) {
        char *d = str(p, n, "\"dir\"", it);
        if (!d)
            return -1;
        char joined[PATH_MAX];
        struct stat sb;
        int bad = path_join(joined, sizeof joined, p->root, d) != 0;
        if (!bad && (stat(joined, &sb) != 0 || !S_ISDIR(sb.st_mode) || !realpath(joined, dir)))
            bad = 1;
        if (bad) {
            FAIL(p, n, "\"dir\": %s is not a directory (relative paths start at %s)", d, p->root);
            free(d);
            return -1;
        }
        free(d);
    }
    if (!(t->dir = dup_or_fail(p, dir)))
        return -1;
    long v;
    if ((n = get(p, m, "retries"))) {
        if (integer(p, n, "retries", 0, 100, &v))
            return -1;
        t->retries = (unsigned)v;
    }
    if ((n = get(p, m, "priority"))) {
        if (integer(p, n, "priority", -1000, 1000, &v))
            return -1;
        t->priority = (int)v;
    }
    if ((n = get(p, m, "timeout")) && duration(p, n, &t->timeout_ns))
        return -1;
    return 0;
}

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int add_entry(parse *p, yaml_node_t *key, yaml_node_t *m)
{
    const char *entry = scalar(key);
    if (bad_name(entry) || strchr(entry, ':')) {
        FAIL(p, key, "\"%s\" cannot name a task: names hold no '/', ':' or spaces and are not empty", entry);
        return -1;
    }
    if (m->type == YAML_SCALAR_NODE && !*scalar(m)) {
        FAIL(p, m, "task \"%s\" is empty (expected a map with run, deps ...)", entry);
        return -1;
    }
    if (m->type != YAML_MAPPING_NODE) {
        FAIL(p, m, "task \"%s\" must be a map (run, deps, inputs ...), not %s", entry, kind_name(m));
        return -1;
    }
    char what[300];
    snprintf(what, sizeof what, "task \"%s\"", entry);
    if (check_map(p, m, what))
        return -1;
    for (yaml_node_pair_t *a = m->data.mapping.pairs.start; a < m->data.mapping.pairs.top; a++) {
        const char *k = scalar(node(p, a->key));
        size_t i = 0;
        while (i < NTASK_KEYS && strcmp(task_keys[i], k))
            i++;
        if (i == NTASK_KEYS) {
            FAIL(p, node(p, a->key),
                 "unknown key \"%s\" in task \"%s\" (expected one of: desc, run, deps, inputs, outputs, env, dir, "
                 "retries, timeout, priority, glob, each, name)",
                 k, entry);
            return -1;
        }
    }
    yaml_node_t *g = get(p, m, "glob"), *each = get(p, m, "each");
    if (g && each) {
        FAIL(p, each, "task \"%s\" has both glob and each (one or the other)", entry);
        return -1;
    }
    if (get(p, m, "name") && !g && !each) {
        FAIL(p, get(p, m, "name"), "\"name\" only applies to an entry with glob or each");
        return -1;
    }
    if (!g && !each) {
        item none = {NULL};
        return add_task(p, entry, key, m, &none);
    }
    size_t n = 0;
    char **items = NULL;
    if (each) {
        if (each->type == YAML_MAPPING_NODE) {
            FAIL(p, each, "\"each\" must be a list of strings, not a map");
            return -1;
        }
        item none = {NULL};
        items = strs(p, each, "an \"each\" item", &none, &n);
        if (!items)
            return -1;
    } else {
        size_t np = 0;
        item none = {NULL};
        char **pats = strs(p, g, "\"glob\"", &none, &np);
        if (!pats)
            return -1;
        size_t cap = 0;
        for (size_t i = 0; i < np && !p->code; i++) {
            char full[PATH_MAX];
            glob_t gl;
            memset(&gl, 0, sizeof gl);
            if (path_join(full, sizeof full, p->root, pats[i]) ||
                glob(full, GLOB_ERR, NULL, &gl) != 0 || gl.gl_pathc == 0) {
                yaml_node_t *at = g->type == YAML_SEQUENCE_NODE ? node(p, g->data.sequence.items.start[i]) : g;
                FAIL(p, at, "glob \"%s\" matches nothing (relative to %s)", pats[i], p->root);
                globfree(&gl);
                break;
            }
            size_t skip = pats[i][0] == '/' ? 0 : strlen(p->root) + 1;
            for (size_t k = 0; k < gl.gl_pathc && !p->code; k++) {
                if (n == cap) {
                    cap = cap ? 2 * cap : 64;
                    char **d = realloc(items, cap * sizeof *d);
                    if (!d) {
                        oom(p);
                        break;
                    }
                    items = d;
                }
                if (!(items[n] = dup_or_fail(p, gl.gl_pathv[k] + skip)))
                    break;
                n++;
            }
            globfree(&gl);
        }
        free_strs(pats, np);
        if (p->code) {
            free_strs(items, n);
            return -1;
        }
        if (n)
            qsort(items, n, sizeof *items, cmp_cstr);
    }
    if (n == 0) {
        FAIL(p, each ? each : g, "\"%s\" of task \"%s\" is empty: it expands to no task", each ? "each" : "glob", entry);
        free_strs(items, n);
        return -1;
    }
    size_t first = p->tf->ntasks;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        if (i && strcmp(items[i], items[i - 1]) == 0)
            continue; /* two patterns matched the same file */
        item it = {items[i]};
        rc = add_task(p, entry, key, m, &it);
    }
    /* Two items giving one name. */
    for (size_t i = first; !rc && i < p->tf->ntasks; i++) {
        for (size_t j = first; j < i; j++) {
            if (strcmp(p->tf->tasks[i].name, p->tf->tasks[j].name) == 0) {
                FAIL(p, get(p, m, "name") ? get(p, m, "name") : key,
                     "two items of task \"%s\" give the same name \"%s\" (set \"name\" so that they differ)", entry,
                     p->tf->tasks[i].name);
                rc = -1;
                break;
            }
        }
        if (p->tf->ntasks - first > 4096)
            break; /* checked by the name index below instead */
    }
    free_strs(items, n);
    return rc;
}

/* ---- Dependencies and cycles ---------------------------------------------------------------- */

size_t vt_tf_distance(const char *a, const char *b)
{
    size_t n = strlen(b), row[64];
    if (n >= 64 || strlen(a) >= 64)
        return SIZE_MAX;
    for (size_t j = 0; j <= n; j++)
        row[j] = j;
    for (size_t i = 1; a[i - 1]; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= n; j++) {
            size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            if (up + 1 < best)
                best = up + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[n];
}

typedef struct index {
    cli_map by_name;  /* name -> index + 1 */
    cli_map by_entry; /* entry -> first index + 1 (an entry's tasks are contiguous) */
} index_t;

static int resolve(parse *p, index_t *ix)
{
    vt_taskfile *tf = p->tf;
    for (size_t i = 0; i < tf->ntasks; i++) {
        vt_tf_task *t = &tf->tasks[i];
        if (cli_map_get(&ix->by_name, t->name)) {
            fail_at(p, VT_EFORMAT, t->line, t->col, "two tasks are named \"%s\"", t->name);
            return -1;
        }
        if (cli_map_put(&ix->by_name, t->name, (void *)(i + 1)) ||
            (!cli_map_get(&ix->by_entry, t->entry) && cli_map_put(&ix->by_entry, t->entry, (void *)(i + 1)))) {
            oom(p);
            return -1;
        }
    }
    unsigned char *seen = calloc(tf->ntasks, 1);
    if (!seen) {
        oom(p);
        return -1;
    }
    for (size_t i = 0; i < tf->ntasks && !p->code; i++) {
        vt_tf_task *t = &tf->tasks[i];
        size_t cap = 0;
        for (size_t k = 0; k < p->ndep_names[i] && !p->code; k++) {
            const char *dn = p->dep_names[i][k];
            size_t from, to;
            size_t hit = (size_t)cli_map_get(&ix->by_name, dn);
            if (hit) {
                from = hit - 1;
                to = hit;
            } else if ((hit = (size_t)cli_map_get(&ix->by_entry, dn))) {
                from = hit - 1;
                to = from;
                while (to < tf->ntasks && strcmp(tf->tasks[to].entry, dn) == 0)
                    to++;
            } else {
                const char *best = NULL;
                size_t best_d = strlen(dn) / 3 + 2;
                for (size_t j = 0; j < tf->ntasks; j++) {
                    size_t d = vt_tf_distance(dn, tf->tasks[j].entry);
                    if (d < best_d) {
                        best_d = d;
                        best = tf->tasks[j].entry;
                    }
                }
                if (best)
                    FAIL(p, p->dep_nodes[i][k], "task \"%s\" depends on \"%s\", and no task has that name (did you mean \"%s\"?)",
                         t->name, dn, best);
                else
                    FAIL(p, p->dep_nodes[i][k], "task \"%s\" depends on \"%s\", and no task has that name", t->name, dn);
                break;
            }
            for (size_t j = from; j < to; j++) {
                if (j == i) {
                    FAIL(p, p->dep_nodes[i][k], "task \"%s\" depends on itself", t->name);
                    break;
                }
                if (seen[j])
                    continue;
                if (t->ndeps == cap) {
                    cap = cap ? 2 * cap : 4;
                    size_t *d = realloc(t->deps, cap * sizeof *d);
                    if (!d) {
                        oom(p);
                        break;
                    }
                    t->deps = d;
                }
                seen[j] = 1;
                t->deps[t->ndeps++] = j;
            }
        }
        for (size_t k = 0; k < t->ndeps; k++)
            seen[t->deps[k]] = 0;
    }
    free(seen);
    return p->code ? -1 : 0;
}

/* Iterative DFS (a long chain must not exhaust the stack); a back edge is
 * a cycle, reported with its path. */
static int find_cycle(parse *p)
{
    vt_taskfile *tf = p->tf;
    size_t n = tf->ntasks;
    unsigned char *color = calloc(n, 1); /* 0 new, 1 on the path, 2 done */
    size_t *stack = malloc(n * sizeof *stack), *edge = malloc(n * sizeof *edge);
    if (!color || !stack || !edge) {
        free(color);
        free(stack);
        free(edge);
        oom(p);
        return -1;
    }
    int rc = 0;
    for (size_t s = 0; s < n && !rc; s++) {
        if (color[s])
            continue;
        size_t top = 0;
        stack[top] = s;
        edge[top++] = 0;
        color[s] = 1;
        while (top && !rc) {
            size_t v = stack[top - 1];
            if (edge[top - 1] == tf->tasks[v].ndeps) {
                color[v] = 2;
                top--;
                continue;
            }
            size_t w = tf->tasks[v].deps[edge[top - 1]++];
            if (color[w] == 0) {
                color[w] = 1;
                stack[top] = w;
                edge[top++] = 0;
            } else if (color[w] == 1) {
                /* The path from w to v, then back to w: dependencies point
                 * backwards, so print it the way it runs. */
                size_t from = top;
                while (stack[from - 1] != w)
                    from--;
                char msg[sizeof p->err->msg];
                size_t len = 0;
                len += (size_t)snprintf(msg + len, sizeof msg - len, "dependency cycle: ");
                for (size_t k = top; k-- > from - 1 && len < sizeof msg;)
                    len += (size_t)snprintf(msg + len, sizeof msg - len, "%s -> ", tf->tasks[stack[k]].name);
                if (len < sizeof msg)
                    len += (size_t)snprintf(msg + len, sizeof msg - len, "%s (", tf->tasks[v].name);
                for (size_t k = top; k-- > from - 1 && len < sizeof msg;)
                    len += (size_t)snprintf(msg + len, sizeof msg - len, "%s%s at line %u", k + 1 == top ? "" : ", ",
                                            tf->tasks[stack[k]].name, tf->tasks[stack[k]].line);
                if (len < sizeof msg)
                    snprintf(msg + len, sizeof msg - len, ")");
                const vt_tf_task *t = &tf->tasks[v];
                fail_at(p, VT_ECYCLE, t->line, t->col, "%s", msg);
                rc = -1;
            }
        }
    }
    free(color);
    free(stack);
    free(edge);
    return rc;
}

/* ---- The file --------------------------------------------------------------------------------- */

static void free_parse_extras(parse *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free_strs(p->dep_names[i], p->ndep_names[i]);
        free(p->dep_nodes[i]);
    }
    free(p->dep_names);
    free(p->dep_nodes);
    free(p->ndep_names);
}

static vt_err parse_doc(parse *p, const char *text, size_t len)
{
    yaml_parser_t yp;
    if (!yaml_parser_initialize(&yp)) {
        oom(p);
        return p->code;
    }
    yaml_parser_set_input_string(&yp, (const unsigned char *)text, len);
    if (!yaml_parser_load(&yp, &p->doc)) {
        const yaml_mark_t *m = yp.context ? &yp.context_mark : &yp.problem_mark;
        (void)m;
        fail_at(p, yp.error == YAML_MEMORY_ERROR ? VT_ENOMEM : VT_EFORMAT, (unsigned)yp.problem_mark.line + 1,
                (unsigned)yp.problem_mark.column + 1, "not valid YAML: %s%s%s", yp.problem ? yp.problem : "error",
                yp.context ? " " : "", yp.context ? yp.context : "");
        yaml_parser_delete(&yp);
        return p->code;
    }
    yaml_parser_delete(&yp);
    yaml_node_t *root = yaml_document_get_root_node(&p->doc);
    if (!root) {
        fail_at(p, VT_EFORMAT, 1, 1, "the file is empty (expected a map with tasks:)");
        return p->code;
    }
    if (root->type != YAML_MAPPING_NODE) {
        FAIL(p, root, "the file must be a map with tasks: (and optionally vars:, default:), not %s", kind_name(root));
        return p->code;
    }
    if (check_map(p, root, "the file"))
        return p->code;
    for (yaml_node_pair_t *a = root->data.mapping.pairs.start; a < root->data.mapping.pairs.top; a++) {
        const char *k = scalar(node(p, a->key));
        if (strcmp(k, "tasks") && strcmp(k, "vars") && strcmp(k, "default")) {
            FAIL(p, node(p, a->key), "unknown key \"%s\" at the top (expected tasks, vars or default)", k);
            return p->code;
        }
    }
    if ((p->vars = get(p, root, "vars"))) {
        if (p->vars->type == YAML_SCALAR_NODE && !*scalar(p->vars)) {
            p->vars = NULL;
        } else if (p->vars->type != YAML_MAPPING_NODE) {
            FAIL(p, p->vars, "\"vars\" must be a map of name: value, not %s", kind_name(p->vars));
            return p->code;
        } else if (check_map(p, p->vars, "\"vars\"")) {
            return p->code;
        } else {
            for (yaml_node_pair_t *a = p->vars->data.mapping.pairs.start; a < p->vars->data.mapping.pairs.top; a++) {
                if (!scalar(node(p, a->value))) {
                    FAIL(p, node(p, a->value), "variable \"%s\" must be a string or number, not %s",
                         scalar(node(p, a->key)), kind_name(node(p, a->value)));
                    return p->code;
                }
            }
        }
    }
    yaml_node_t *tasks = get(p, root, "tasks");
    if (!tasks) {
        FAIL(p, root, "no \"tasks:\" in the file (expected a map of task names to tasks)");
        return p->code;
    }
    if (tasks->type != YAML_MAPPING_NODE) {
        FAIL(p, tasks, "\"tasks\" must be a map of task names to tasks, not %s", kind_name(tasks));
        return p->code;
    }
    if (check_map(p, tasks, "\"tasks\""))
        return p->code;
    for (yaml_node_pair_t *a = tasks->data.mapping.pairs.start; a < tasks->data.mapping.pairs.top; a++)
        if (add_entry(p, node(p, a->key), node(p, a->value)))
            return p->code;
    index_t ix;
    memset(&ix, 0, sizeof ix);
    if (resolve(p, &ix) == 0)
        find_cycle(p);
    yaml_node_t *d = get(p, root, "default");
    if (!p->code && d) {
        const char *name = scalar(d);
        if (!name || (!cli_map_get(&ix.by_name, name) && !cli_map_get(&ix.by_entry, name)))
            FAIL(p, d, "\"default\" must name a task of the file%s%s%s", name ? " (no task \"" : "",
                 name ? name : "", name ? "\")" : "");
        else if (!(p->tf->default_task = strdup(name)))
            oom(p);
    }
    cli_map_free(&ix.by_name, NULL);
    cli_map_free(&ix.by_entry, NULL);
    return p->code;
}

vt_err vt_tf_parse(const char *text, size_t len, const char *name, const char *root, vt_taskfile **out,
                   vt_tf_error *err)
{
    if (err)
        memset(err, 0, sizeof *err);
    if (!text || !name || !root || !out) {
        if (err)
            snprintf(err->msg, sizeof err->msg, "vt_tf_parse: a NULL argument");
        return VT_EINVAL;
    }
    *out = NULL;
    parse p;
    memset(&p, 0, sizeof p);
    p.name = name;
    p.root = root;
    p.err = err;
    if (len > FILE_MAX) {
        fail_at(&p, VT_EFORMAT, 0, 0, "the file is larger than %zu MiB", FILE_MAX >> 20);
        return p.code;
    }
    p.tf = calloc(1, sizeof *p.tf);
    if (!p.tf || !(p.tf->path = strdup(name)) || !(p.tf->root = strdup(root))) {
        vt_tf_free(p.tf);
        oom(&p);
        return p.code;
    }
    memset(&p.doc, 0, sizeof p.doc);
    vt_err e = parse_doc(&p, text, len);
    size_t n = p.tf->ntasks;
    free_parse_extras(&p, n);
    yaml_document_delete(&p.doc);
    if (e) {
        vt_tf_free(p.tf);
        return e;
    }
    *out = p.tf;
    return VT_OK;
}

vt_err vt_tf_load(const char *path, vt_taskfile **out, vt_tf_error *err)
{
    if (err)
        memset(err, 0, sizeof *err);
    if (!path || !out) {
        if (err)
            snprintf(err->msg, sizeof err->msg, "vt_tf_load: a NULL argument");
        return VT_EINVAL;
    }
    FILE *f = fopen(path, "rb");
    struct stat sb;
    if (!f || fstat(fileno(f), &sb) != 0 || S_ISDIR(sb.st_mode)) {
        int e = !f ? errno : S_ISDIR(sb.st_mode) ? EISDIR : errno;
        if (f)
            fclose(f);
        if (err)
            snprintf(err->msg, sizeof err->msg, "%s: cannot read the task file: %s", path, strerror(e));
        return vt_err_from_errno(e);
    }
    if ((size_t)sb.st_size > FILE_MAX) {
        fclose(f);
        if (err)
            snprintf(err->msg, sizeof err->msg, "%s: the file is larger than %zu MiB", path, FILE_MAX >> 20);
        return VT_EFORMAT;
    }
    char *text = malloc((size_t)sb.st_size + 1);
    size_t len = text ? fread(text, 1, (size_t)sb.st_size, f) : 0;
    int rd = ferror(f);
    fclose(f);
    if (!text || rd) {
        free(text);
        if (err)
            snprintf(err->msg, sizeof err->msg, "%s: %s", path, text ? "read error" : "out of memory");
        return text ? VT_EIO : VT_ENOMEM;
    }
    char real[PATH_MAX], dir[PATH_MAX];
    if (!realpath(path, real)) {
        free(text);
        if (err)
            snprintf(err->msg, sizeof err->msg, "%s: %s", path, strerror(errno));
        return vt_err_from_errno(errno);
    }
    snprintf(dir, sizeof dir, "%s", real);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        dir[1] = 0;
    else if (slash)
        *slash = 0;
    vt_err e = vt_tf_parse(text, len, path, dir, out, err);
    free(text);
    return e;
}

void vt_tf_free(vt_taskfile *tf)
{
    if (!tf)
        return;
    for (size_t i = 0; i < tf->ntasks; i++)
        free_task(&tf->tasks[i]);
    free(tf->tasks);
    free(tf->path);
    free(tf->root);
    free(tf->default_task);
    free(tf);
}

long vt_tf_find(const vt_taskfile *tf, const char *name)
{
    if (!tf || !name)
        return -1;
    for (size_t i = 0; i < tf->ntasks; i++)
        if (strcmp(tf->tasks[i].name, name) == 0)
            return (long)i;
    return -1;
}
