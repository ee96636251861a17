/* graph.c — building and checking task graphs, and what can be read of a
 * task after a run. Running them is exec.c. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "task/graph.h"

/* ---- Arenas: what a graph allocates in many small pieces goes in blocks
 * freed all at once, so that freeing a graph never walks its tasks. */

struct vt__arena_block {
    vt__arena_block *next;
    size_t size;
    max_align_t data[];
};

void *vt__arena_alloc(vt__arena *a, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    if ((size_t)(a->end - a->cur) < size) {
        size_t bsize = size > 16384 ? size : 65536 - sizeof(vt__arena_block);
        vt__arena_block *b = vt_alloc(sizeof *b + bsize);
        if (!b)
            return NULL;
        b->next = a->head;
        b->size = sizeof *b + bsize;
        a->head = b;
        a->cur = (char *)b->data;
        a->end = a->cur + bsize;
    }
    void *p = a->cur;
    a->cur += size;
    return p;
}

char *vt__arena_strdup(vt__arena *a, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = vt__arena_alloc(a, n);
    if (d)
        memcpy(d, s, n);
    return d;
}

void vt__arena_free(vt__arena *a)
{
    vt__arena_block *b = a->head;
    while (b) {
        vt__arena_block *next = b->next;
        vt_free(b, b->size);
        b = next;
    }
    a->head = NULL;
    a->cur = a->end = NULL;
}

/* ---- Errors ------------------------------------------------------------------------ */

static void set_errmsg(vt_graph *g, const char *fmt, va_list ap)
{
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    char *m = n >= 0 ? vt_alloc((size_t)n + 1) : NULL;
    if (m)
        vsnprintf(m, (size_t)n + 1, fmt, again);
    va_end(again);
    if (!m)
        return; /* the code still says what happened */
    if (g->errmsg)
        vt_free(g->errmsg, strlen(g->errmsg) + 1);
    g->errmsg = m;
}

void vt__graph_errmsg(vt_graph *g, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_errmsg(g, fmt, ap);
    va_end(ap);
}

/* A building error: returned, and remembered if it is the first. */
vt_err vt__graph_fail(vt_graph *g, vt_err e, const char *fmt, ...)
{
    /* A call refused because the graph runs changed nothing, and the run
     * owns the message: it is neither remembered nor reported there. */
    if (e == VT_EBUSY)
        return e;
    va_list ap;
    va_start(ap, fmt);
    if (!g->first_err) {
        g->first_err = e;
        set_errmsg(g, fmt, ap);
    }
    va_end(ap);
    return e;
}

const char *vt_graph_error(const vt_graph *g)
{
    return g && g->errmsg ? g->errmsg : "";
}

const char *vt_task_state_name(vt_task_state s)
{
    static const char *const names[] = {"pending", "ready",     "running", "succeeded",
                                        "failed",  "cancelled", "skipped"};
    return (unsigned)s < VT_TASK_STATES ? names[s] : "?";
}

/* ---- Graphs ------------------------------------------------------------------------ */

vt_err vt_graph_new(vt_graph **out, const char *name)
{
    if (!out)
        return VT_EINVAL;
    *out = NULL;
    vt_graph *g = vt_calloc(1, sizeof *g);
    if (!g)
        return VT_ENOMEM;
    g->name = vt_strdup(name ? name : "graph");
    if (!g->name) {
        vt_free(g, sizeof *g);
        return VT_ENOMEM;
    }
    *out = g;
    return VT_OK;
}

/* Freed huge blocks kept warm for the next graphs: a block touched once
 * costs no page fault again. At most CACHE_BLOCKS (64 MiB). */
#define CACHE_BLOCKS 32
static vt__spinlock cache_lock;
static void *cache[CACHE_BLOCKS];
static unsigned ncache;

static void *block_get(void)
{
    vt__spin_lock(&cache_lock);
    void *b = ncache ? cache[--ncache] : NULL;
    vt__spin_unlock(&cache_lock);
    return b ? b : vt__vm_reserve_huge();
}

static void block_put(void *b)
{
    vt__spin_lock(&cache_lock);
    if (ncache < CACHE_BLOCKS) {
        cache[ncache++] = b;
        b = NULL;
    }
    vt__spin_unlock(&cache_lock);
    if (b)
        vt__vm_release(b, VT__HUGE_BLOCK);
}

static size_t block0_bytes(void)
{
    return VT__BLOCK0 * sizeof(vt_task) + VT_CACHE_LINE;
}

vt_task *vt__graph_task_at(const vt_graph *g, size_t i)
{
    if (i >= g->ntasks)
        return NULL;
    if (i < VT__BLOCK0)
        return (vt_task *)(((uintptr_t)g->blocks[0] + VT_CACHE_LINE - 1) &
                           ~(uintptr_t)(VT_CACHE_LINE - 1)) +
               i;
    i -= VT__BLOCK0;
    return g->blocks[1 + i / VT__BLOCK_TASKS] + i % VT__BLOCK_TASKS;
}

static void free_subs(vt_graph *g);

/* vt__graph_task_at for the slot about to be added. */
static vt_task *vt__graph_task_at_grow(vt_graph *g, size_t i)
{
    size_t n = g->ntasks;
    g->ntasks = i + 1;
    vt_task *t = vt__graph_task_at(g, i);
    g->ntasks = n;
    return t;
}

void vt_graph_free(vt_graph *g)
{
    if (!g)
        return;
    if (atomic_load_explicit(&g->running, memory_order_acquire)) {
        vt_log(VT_LOG_ERROR, "task",
               "vt_graph_free(\"%s\") while it runs: waiting for the run to end", g->name);
        vt_graph_wait(g, VT_FOREVER);
    }
    free_subs(g);
    for (size_t i = 0; i < g->ncolds; i++)
        vt__cold_reset(g->colds[i]);
    for (unsigned k = 0; k < g->nblocks; k++) {
        if (k == 0)
            vt_free(g->blocks[0], block0_bytes());
        else
            block_put(g->blocks[k]);
    }
    if (g->blocks)
        vt_free(g->blocks, g->cap_blocks * sizeof *g->blocks);
    if (g->colds)
        vt_free(g->colds, g->cap_colds * sizeof *g->colds);
    if (g->roots)
        vt_free(g->roots, g->cap_roots * sizeof *g->roots);
    if (g->run.stat)
        vt_free(g->run.stat, g->run.nstat * sizeof *g->run.stat);
    if (g->run.heap)
        vt_free(g->run.heap, g->run.heap_cap * sizeof *g->run.heap);
    if (g->by_name)
        vt_free(g->by_name, g->by_name_cap * sizeof *g->by_name);
    for (vt_group *grp = g->groups; grp; grp = grp->next)
        if (grp->members)
            vt_free(grp->members, grp->cap * sizeof *grp->members);
    vt__arena_free(&g->arena);
    vt__arena_free(&g->run_arena);
    if (g->errmsg)
        vt_free(g->errmsg, strlen(g->errmsg) + 1);
    vt_free(g->name, strlen(g->name) + 1);
    vt_free(g, sizeof *g);
}

const char *vt_graph_name(const vt_graph *g)
{
    return g ? g->name : "";
}

size_t vt_graph_size(const vt_graph *g)
{
    return g ? g->ntasks : 0;
}

/* ---- Tasks ------------------------------------------------------------------------- */

static int busy(const vt_graph *g)
{
    return atomic_load_explicit(&g->running, memory_order_acquire);
}

static int name_ok(const char *name)
{
    return name && *name && !strchr(name, '/');
}

/* The cold record of t, made on first need (building, or a run that writes
 * a result or an error for an anonymous task: then under the graph's lock,
 * since several workers may make colds at once). */
vt__cold *vt__cold_get(vt_task *t)
{
    vt__cold *c = vt__cold_peek(t);
    if (c)
        return c;
    vt_graph *g = t->g;
    vt__spin_lock(&g->lock);
    c = atomic_load_explicit(&t->cold, memory_order_relaxed);
    if (c) {
        vt__spin_unlock(&g->lock);
        return c;
    }
    int sub = t->bits & VT__B_SUB;
    vt__cold ***list = sub ? &g->sub_colds : &g->colds;
    size_t *n = sub ? &g->nsub_colds : &g->ncolds, *cap = sub ? &g->cap_sub_colds : &g->cap_colds;
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;
        vt__cold **nl = vt_realloc(*list, *cap * sizeof **list, ncap * sizeof **list);
        if (!nl) {
            vt__spin_unlock(&g->lock);
            return NULL;
        }
        *list = nl;
        *cap = ncap;
    }
    c = vt__arena_alloc(sub ? &g->run_arena : &g->arena, sizeof *c);
    if (c) {
        memset(c, 0, sizeof *c);
        c->self = t;
        (*list)[(*n)++] = c;
        atomic_store_explicit(&t->cold, c, memory_order_release);
    }
    vt__spin_unlock(&g->lock);
    return c;
}

/* Drops what a run left in c: results, messages, logs, subtasks. */
void vt__cold_reset(vt__cold *c)
{
    if (c->errmsg)
        vt_free(c->errmsg, strlen(c->errmsg) + 1);
    if (c->result)
        vt_free(c->result, c->result_len);
    if (c->log)
        vt_free(c->log, c->log_cap);
    if (c->subs)
        vt_free(c->subs, c->cap_subs * sizeof *c->subs);
    c->err = VT_OK;
    c->errmsg = NULL;
    c->attempts = 0;
    c->restored = 0;
    c->result = NULL;
    c->result_len = 0;
    c->log = NULL;
    c->log_len = c->log_cap = 0;
    c->subs = NULL;
    c->nsubs = c->cap_subs = 0;
    c->sub_error = VT_OK;
    atomic_store_explicit(&c->subs_left, 0, memory_order_relaxed);
    atomic_store_explicit(&c->sub_failed, NULL, memory_order_relaxed);
    c->started_wall = c->ended_wall = 0;
    c->fiber.id = 0;
    c->timer.id = 0;
    atomic_store_explicit(&c->timer_armed, 0, memory_order_relaxed);
    atomic_store_explicit(&c->timed_out, 0, memory_order_relaxed);
    atomic_store_explicit(&c->stopped, 0, memory_order_relaxed);
}

/* Subtasks belong to a run: the next run (or the end of the graph) drops
 * them, with the per-run part of every cold. */
static void free_subs(vt_graph *g)
{
    for (size_t i = 0; i < g->nsub_colds; i++)
        vt__cold_reset(g->sub_colds[i]);
    if (g->sub_colds)
        vt_free(g->sub_colds, g->cap_sub_colds * sizeof *g->sub_colds);
    g->sub_colds = NULL;
    g->nsub_colds = g->cap_sub_colds = 0;
    g->nsubs_total = 0;
    vt__arena_free(&g->run_arena);
}

void vt__graph_reset_run(vt_graph *g)
{
    free_subs(g);
    for (size_t i = 0; i < g->ncolds; i++)
        vt__cold_reset(g->colds[i]);
}

static vt_task *new_task(vt_graph *g)
{
    size_t i = g->ntasks;
    /* Blocks needed to hold index i; a block stays when the task that
     * made it is taken back, so this does not follow from i alone. */
    size_t need = i < VT__BLOCK0 ? 1 : 2 + (i - VT__BLOCK0) / VT__BLOCK_TASKS;
    if (g->nblocks < need) {
        if (g->nblocks == g->cap_blocks) {
            uint32_t ncap = g->cap_blocks ? g->cap_blocks * 2 : 8;
            vt_task **nb = vt_realloc(g->blocks, g->cap_blocks * sizeof *nb, ncap * sizeof *nb);
            if (!nb)
                return NULL;
            g->blocks = nb;
            g->cap_blocks = ncap;
        }
        void *b = g->nblocks == 0 ? vt_alloc(block0_bytes()) : block_get();
        if (!b)
            return NULL;
        g->blocks[g->nblocks++] = b;
    }
    vt_task *t = vt__graph_task_at_grow(g, i);
    g->ntasks = i + 1;
    t->index = (uint32_t)i;
    return t;
}

static vt_task *add(vt_graph *g, const char *name, vt_task_fn fn, void *data, uint8_t bits)
{
    if (!g)
        return NULL;
    if (busy(g)) {
        vt__graph_fail(g, VT_EBUSY, "vt_task_add: the graph \"%s\" is running", g->name);
        return NULL;
    }
    if (!fn) {
        vt__graph_fail(g, VT_EINVAL, "vt_task_add: task \"%s\" has no body (NULL function)",
                       name ? name : "(unnamed)");
        return NULL;
    }
    if (name && !name_ok(name)) {
        vt__graph_fail(g, VT_EINVAL, "vt_task_add: bad task name \"%s\" (empty, or holds '/')",
                       name);
        return NULL;
    }
    if (g->ntasks >= UINT32_MAX - 1) {
        vt__graph_fail(g, VT_ENOMEM, "vt_task_add: too many tasks");
        return NULL;
    }
    vt_task *t = new_task(g);
    if (!t) {
        vt__graph_fail(g, VT_ENOMEM, "vt_task_add: out of memory");
        return NULL;
    }
    t->fn = fn;
    t->data = data;
    t->succ[0] = t->succ[1] = NULL;
    t->g = g;
    atomic_store_explicit(&t->cold, NULL, memory_order_relaxed);
    t->npred = 0;
    atomic_store_explicit(&t->join, 0, memory_order_relaxed);
    atomic_store_explicit(&t->prio, 0, memory_order_relaxed);
    atomic_store_explicit(&t->state, atomic_load_explicit(&g->run_parity, memory_order_relaxed),
                          memory_order_relaxed);
    t->bits = bits;
    if (g->nroots == g->cap_roots) {
        size_t ncap = g->cap_roots ? g->cap_roots * 2 : 64;
        vt_task **nr = vt_realloc(g->roots, g->cap_roots * sizeof *nr, ncap * sizeof *nr);
        if (!nr) {
            g->ntasks--;
            vt__graph_fail(g, VT_ENOMEM, "vt_task_add: out of memory");
            return NULL;
        }
        g->roots = nr;
        g->cap_roots = ncap;
    }
    if (name) {
        vt__cold *c = vt__cold_get(t);
        char *copy = c ? vt__arena_strdup(&g->arena, name) : NULL;
        if (!copy) {
            /* Not added after all: the last task slot is taken back. */
            g->ntasks--;
            if (c)
                g->ncolds--;
            vt__graph_fail(g, VT_ENOMEM, "vt_task_add: out of memory");
            return NULL;
        }
        c->name = copy;
        g->has_names = 1;
    }
    g->roots[g->nroots++] = t;
    g->sealed = 0;
    return t;
}

vt_task *vt_task_add(vt_graph *g, const char *name, vt_task_fn fn, void *data)
{
    return add(g, name, fn, data, 0);
}

vt_task *vt_task_add_async(vt_graph *g, const char *name, vt_task_fn fn, void *data)
{
    return add(g, name, fn, data, VT__B_ASYNC | VT__B_SLOW);
}

/* Whether t may still be changed: a graph task while the graph is idle, or
 * a subtask whose parent's body has not returned yet. */
static int frozen(const vt_task *t)
{
    if (t->bits & VT__B_SUB)
        return vt__cold_peek(t)->launched;
    return busy(t->g);
}

static vt_err add_succ(vt_task *a, vt_task *b)
{
    unsigned n = a->bits & VT__B_NINLINE;
    if (n < 2) {
        a->succ[n] = b;
        a->bits = (uint8_t)((a->bits & ~VT__B_NINLINE) | (n + 1));
        return VT_OK;
    }
    vt__cold *c = vt__cold_get(a);
    if (!c)
        return VT_ENOMEM;
    if (c->nmore == c->cap_more) {
        uint32_t ncap = c->cap_more ? c->cap_more * 2 : 4;
        vt_task **nm;
        if (a->bits & VT__B_SUB) {
            /* Bodies on other workers add subtasks to the same arena. */
            vt__spin_lock(&a->g->lock);
            nm = vt__arena_alloc(&a->g->run_arena, ncap * sizeof *nm);
            vt__spin_unlock(&a->g->lock);
        } else {
            nm = vt__arena_alloc(&a->g->arena, ncap * sizeof *nm);
        }
        if (!nm)
            return VT_ENOMEM;
        if (c->nmore)
            memcpy(nm, c->more, c->nmore * sizeof *nm);
        c->more = nm; /* the old array stays in the arena until the graph goes */
        c->cap_more = ncap;
    }
    c->more[c->nmore++] = b;
    a->bits |= VT__B_MORE;
    return VT_OK;
}

vt_err vt_task_precede(vt_task *before, vt_task *after)
{
    if (!before || !after)
        return VT_EINVAL;
    vt_graph *g = before->g;
    char n1[32], n2[32];
    if (after->g != g)
        return vt__graph_fail(
            g, VT_EINVAL, "vt_task_precede: \"%s\" and \"%s\" are tasks of different graphs",
            vt__task_name(before, n1, sizeof n1), vt__task_name(after, n2, sizeof n2));
    if (before == after)
        return vt__graph_fail(g, VT_EINVAL, "vt_task_precede: task \"%s\" cannot depend on itself",
                              vt__task_name(before, n1, sizeof n1));
    int sub = (before->bits & VT__B_SUB) || (after->bits & VT__B_SUB);
    if (sub) {
        /* Subtasks: both of the same parent, neither launched yet. */
        vt__cold *cb = vt__cold_peek(before), *ca = vt__cold_peek(after);
        if (!(before->bits & VT__B_SUB) || !(after->bits & VT__B_SUB) || cb->parent != ca->parent)
            return VT_EINVAL;
        if (frozen(before) || frozen(after))
            return VT_EBUSY;
    } else if (busy(g)) {
        return vt__graph_fail(g, VT_EBUSY, "vt_task_precede: the graph \"%s\" is running", g->name);
    }
    if (after->npred == UINT32_MAX - 1)
        return vt__graph_fail(g, VT_ERANGE, "vt_task_precede: too many dependencies");
    if (add_succ(before, after))
        return vt__graph_fail(g, VT_ENOMEM, "vt_task_precede: out of memory");
    after->npred++;
    atomic_store_explicit(&after->join, after->npred, memory_order_relaxed);
    if (!sub && after->npred == 1) {
        /* No longer a root; usually the task just added, else dropped later. */
        if (g->nroots && g->roots[g->nroots - 1] == after)
            g->nroots--;
        else
            g->stale_roots++;
    }
    if (!sub) {
        if (before->index > after->index)
            g->backward_edges++;
        g->sealed = 0;
    }
    return VT_OK;
}

vt_err vt_task_depend(vt_task *t, const char *dep)
{
    if (!t || !dep)
        return VT_EINVAL;
    vt_graph *g = t->g;
    if (t->bits & VT__B_SUB)
        return VT_EINVAL; /* subtasks depend on each other by handle */
    if (busy(g))
        return vt__graph_fail(g, VT_EBUSY, "vt_task_depend: the graph \"%s\" is running", g->name);
    vt__cold *c0 = vt__cold_peek(t);
    char nb[32];
    if (!*dep || (c0 && c0->name && !strcmp(c0->name, dep)))
        return vt__graph_fail(g, VT_EINVAL, "vt_task_depend: task \"%s\" cannot depend on \"%s\"%s",
                              vt__task_name(t, nb, sizeof nb), dep,
                              *dep ? " (itself)" : " (an empty name)");
    vt__cold *c = vt__cold_get(t);
    if (!c)
        return vt__graph_fail(g, VT_ENOMEM, "vt_task_depend: out of memory");
    if (c->ndeps == c->cap_deps) {
        uint32_t ncap = c->cap_deps ? c->cap_deps * 2 : 4;
        char **nd = vt__arena_alloc(&g->arena, ncap * sizeof *nd);
        if (!nd)
            return vt__graph_fail(g, VT_ENOMEM, "vt_task_depend: out of memory");
        if (c->ndeps)
            memcpy(nd, c->deps, c->ndeps * sizeof *nd);
        c->deps = nd;
        c->cap_deps = ncap;
    }
    char *copy = vt__arena_strdup(&g->arena, dep);
    if (!copy)
        return vt__graph_fail(g, VT_ENOMEM, "vt_task_depend: out of memory");
    c->deps[c->ndeps++] = copy;
    g->has_deps = 1;
    g->sealed = 0;
    return VT_OK;
}

/* Setters share their checks: a task that may change, and its cold record. */
static vt_err settable(vt_task *t, const char *what, vt__cold **c)
{
    if (!t)
        return VT_EINVAL;
    if (frozen(t))
        return (t->bits & VT__B_SUB)
                   ? VT_EBUSY
                   : vt__graph_fail(t->g, VT_EBUSY, "%s: the graph \"%s\" is running", what,
                                    t->g->name);
    *c = vt__cold_get(t);
    if (!*c)
        return vt__graph_fail(t->g, VT_ENOMEM, "%s: out of memory", what);
    return VT_OK;
}

vt_err vt_task_set_priority(vt_task *t, int priority)
{
    if (!t)
        return VT_EINVAL;
    if (priority < VT_PRIORITY_MIN || priority > VT_PRIORITY_MAX)
        return VT_ERANGE;
    vt__task_reprioritize(t, priority);
    return VT_OK;
}

int vt_task_priority(const vt_task *t)
{
    return t ? atomic_load_explicit(&((vt_task *)t)->prio, memory_order_relaxed) : 0;
}

vt_err vt_task_set_retry(vt_task *t, const vt_retry *p)
{
    if (!t)
        return VT_EINVAL;
    if (p && (p->max_attempts < 1 || p->max_attempts > 1000 ||
              (p->backoff != VT_BACKOFF_FIXED && p->backoff != VT_BACKOFF_EXPONENTIAL) ||
              p->delay_ns < 0 || p->delay_ns > VT_SEC(86400) || p->max_delay_ns < 0 ||
              p->max_delay_ns > VT_SEC(86400) || !(p->jitter >= 0 && p->jitter <= 1)))
        return VT_EINVAL;
    vt__cold *c;
    vt_err e = settable(t, "vt_task_set_retry", &c);
    if (e)
        return e;
    if (p) {
        c->retry = *p;
        t->bits |= VT__B_SLOW;
    } else {
        memset(&c->retry, 0, sizeof c->retry);
    }
    return VT_OK;
}

vt_err vt_task_set_timeout(vt_task *t, int64_t timeout_ns)
{
    if (!t || timeout_ns < 0)
        return VT_EINVAL;
    vt__cold *c;
    vt_err e = settable(t, "vt_task_set_timeout", &c);
    if (e)
        return e;
    c->timeout_ns = timeout_ns;
    if (timeout_ns)
        t->bits |= VT__B_SLOW;
    return VT_OK;
}

vt_err vt_task_set_fingerprint(vt_task *t, const void *key, size_t len)
{
    if (!t || (!key && len) || len > VT_FINGERPRINT_MAX)
        return VT_EINVAL;
    vt__cold *c;
    vt_err e = settable(t, "vt_task_set_fingerprint", &c);
    if (e)
        return e;
    int sub = t->bits & VT__B_SUB;
    if (sub)
        vt__spin_lock(&t->g->lock);
    uint8_t *copy = vt__arena_alloc(sub ? &t->g->run_arena : &t->g->arena, len ? len : 1);
    if (sub)
        vt__spin_unlock(&t->g->lock);
    if (!copy)
        return vt__graph_fail(t->g, VT_ENOMEM, "vt_task_set_fingerprint: out of memory");
    if (len)
        memcpy(copy, key, len);
    c->fp = copy;
    c->fp_len = (uint32_t)len;
    c->has_fp = 1;
    return VT_OK;
}

vt_group *vt_graph_group(vt_graph *g, const char *name)
{
    if (!g || !name || !*name)
        return NULL;
    for (vt_group *grp = g->groups; grp; grp = grp->next)
        if (!strcmp(grp->name, name))
            return grp;
    vt__spin_lock(&g->lock);
    vt_group *grp = vt__arena_alloc(&g->arena, sizeof *grp);
    char *copy = grp ? vt__arena_strdup(&g->arena, name) : NULL;
    if (copy) {
        memset(grp, 0, sizeof *grp);
        grp->g = g;
        grp->name = copy;
        grp->next = g->groups;
        g->groups = grp;
    }
    vt__spin_unlock(&g->lock);
    return copy ? grp : NULL;
}

vt_err vt_task_set_group(vt_task *t, vt_group *grp)
{
    if (!t || !grp || grp->g != t->g)
        return VT_EINVAL;
    vt__cold *c;
    vt_err e = settable(t, "vt_task_set_group", &c);
    if (e)
        return e;
    if (c->group == grp)
        return VT_OK;
    if (c->group)
        return VT_EEXIST;
    if (grp->n == grp->cap) {
        size_t ncap = grp->cap ? grp->cap * 2 : 8;
        vt_task **nm = vt_realloc(grp->members, grp->cap * sizeof *nm, ncap * sizeof *nm);
        if (!nm)
            return vt__graph_fail(t->g, VT_ENOMEM, "vt_task_set_group: out of memory");
        grp->members = nm;
        grp->cap = ncap;
    }
    grp->members[grp->n++] = t;
    c->group = grp;
    t->bits |= VT__B_SLOW;
    return VT_OK;
}

const char *vt__task_name(const vt_task *t, char *buf, size_t size)
{
    vt__cold *c = vt__cold_peek(t);
    if (c && c->name)
        return c->name;
    snprintf(buf, size, "#%" PRIu32, t->index);
    return buf;
}

const char *vt_task_name(const vt_task *t)
{
    if (!t)
        return "";
    vt__cold *c = vt__cold_peek(t);
    if (c && c->name)
        return c->name;
    /* Unnamed: the name is made once, kept in the cold record. */
    char buf[32];
    vt__task_name(t, buf, sizeof buf);
    c = vt__cold_get((vt_task *)t);
    if (!c)
        return "#?";
    vt_graph *g = t->g;
    vt__spin_lock(&g->lock);
    if (!c->name) {
        c->name = vt__arena_strdup((t->bits & VT__B_SUB) ? &g->run_arena : &g->arena, buf);
        c->auto_name = 1;
    }
    vt__spin_unlock(&g->lock);
    return c->name ? c->name : "#?";
}

vt_graph *vt_task_graph(const vt_task *t)
{
    return t ? t->g : NULL;
}

/* ---- Finding tasks by name ------------------------------------------------------- */

static uint64_t name_hash(const char *s)
{
    return vt_hash64(s, strlen(s), 0x7461736bu);
}

/* Builds the name table; VT_EEXIST names the first duplicate. */
static vt_err index_names(vt_graph *g)
{
    size_t need = 16;
    while (need < g->ncolds * 2)
        need *= 2;
    if (g->by_name)
        vt_free(g->by_name, g->by_name_cap * sizeof *g->by_name);
    g->by_name = vt_calloc(need, sizeof *g->by_name);
    if (!g->by_name) {
        g->by_name_cap = 0;
        vt__graph_errmsg(g, "validation: out of memory");
        return VT_ENOMEM;
    }
    g->by_name_cap = need;
    for (size_t i = 0; i < g->ncolds; i++) {
        vt__cold *c = g->colds[i];
        if (!c->name || c->auto_name)
            continue;
        size_t j = name_hash(c->name) & (need - 1);
        while (g->by_name[j]) {
            if (!strcmp(vt__cold_peek(g->by_name[j])->name, c->name)) {
                vt__graph_errmsg(g,
                                 "duplicate task name \"%s\" (tasks #%" PRIu32 " and #%" PRIu32 ")",
                                 c->name, g->by_name[j]->index, c->self->index);
                return VT_EEXIST;
            }
            j = (j + 1) & (need - 1);
        }
        g->by_name[j] = c->self;
    }
    return VT_OK;
}

static vt_task *lookup(const vt_graph *g, const char *name)
{
    if (!g->by_name_cap)
        return NULL;
    size_t j = name_hash(name) & (g->by_name_cap - 1);
    while (g->by_name[j]) {
        if (!strcmp(vt__cold_peek(g->by_name[j])->name, name))
            return g->by_name[j];
        j = (j + 1) & (g->by_name_cap - 1);
    }
    return NULL;
}

vt_task *vt__graph_lookup(const vt_graph *g, const char *name)
{
    if (name[0] == '#') {
        char *end;
        unsigned long long i = strtoull(name + 1, &end, 10);
        if (end != name + 1 && !*end && i < g->ntasks) {
            vt_task *t = vt__graph_task_at(g, (size_t)i);
            vt__cold *c = vt__cold_peek(t);
            if (!c || !c->name || c->auto_name)
                return t;
        }
    }
    return lookup(g, name);
}

vt_task *vt_graph_find(vt_graph *g, const char *name)
{
    if (!g || !name)
        return NULL;
    if (strchr(name, '/')) {
        /* A subtask of the current or last run; the latest of that name. */
        vt__spin_lock(&g->lock);
        vt_task *found = NULL;
        for (size_t i = g->nsub_colds; i-- > 0;)
            if (g->sub_colds[i]->name && !strcmp(g->sub_colds[i]->name, name)) {
                found = g->sub_colds[i]->self;
                break;
            }
        vt__spin_unlock(&g->lock);
        return found;
    }
    if (!g->sealed && !busy(g) && g->has_names && index_names(g))
        return NULL;
    return vt__graph_lookup(g, name);
}

/* ---- Validation ------------------------------------------------------------------- */

static vt_err resolve_deps(vt_graph *g)
{
    for (size_t i = 0; i < g->ncolds; i++) {
        vt__cold *c = g->colds[i];
        for (; c->deps_resolved < c->ndeps; c->deps_resolved++) {
            const char *dep = c->deps[c->deps_resolved];
            vt_task *d = lookup(g, dep);
            char nb[32];
            if (!d) {
                vt__graph_errmsg(g, "task \"%s\" depends on \"%s\", and no task has that name",
                                 vt__task_name(c->self, nb, sizeof nb), dep);
                return VT_ENOENT;
            }
            if (d == c->self) {
                vt__graph_errmsg(g, "task \"%s\" depends on itself", dep);
                return VT_ECYCLE;
            }
            vt_err e = vt_task_precede(d, c->self);
            if (e) {
                g->first_err = VT_OK; /* a resolution error is not a building error */
                return e;
            }
        }
    }
    return VT_OK;
}

/* Depth-first search with colours over the graph's tasks; a grey successor
 * closes a cycle, which is the stack from that successor up. */
static vt_err find_cycle(vt_graph *g)
{
    size_t n = g->ntasks;
    uint8_t *colour = vt_calloc(n ? n : 1, 1);
    typedef struct {
        vt_task *t;
        uint32_t next; /* successor to visit next */
    } frame;
    size_t cap = 256, top = 0;
    frame *stack = vt_alloc(cap * sizeof *stack);
    if (!colour || !stack) {
        if (colour)
            vt_free(colour, n ? n : 1);
        if (stack)
            vt_free(stack, cap * sizeof *stack);
        vt__graph_errmsg(g, "validation: out of memory");
        return VT_ENOMEM;
    }
    vt_err result = VT_OK;
    for (size_t root = 0; root < n && !result; root++) {
        vt_task *r = vt__graph_task_at(g, root);
        if (colour[root])
            continue;
        colour[root] = 1;
        stack[top++] = (frame){r, 0};
        while (top && !result) {
            frame *f = &stack[top - 1];
            vt_task *t = f->t;
            unsigned ninl = t->bits & VT__B_NINLINE;
            vt__cold *c = (t->bits & VT__B_MORE) ? vt__cold_peek(t) : NULL;
            uint32_t total = ninl + (c ? c->nmore : 0);
            if (f->next == total) {
                colour[t->index] = 2;
                top--;
                continue;
            }
            uint32_t k = f->next++;
            vt_task *s = k < ninl ? t->succ[k] : c->more[k - ninl];
            if (colour[s->index] == 2)
                continue;
            if (colour[s->index] == 1) {
                /* The cycle: s, ..., t, s. */
                size_t from = top;
                while (from > 0 && stack[from - 1].t != s)
                    from--;
                from--;
                size_t len = 0, cap_msg = 64;
                for (size_t i = from; i < top; i++) {
                    char nb[32];
                    cap_msg += strlen(vt__task_name(stack[i].t, nb, sizeof nb)) + 4;
                }
                char nb[32];
                cap_msg += strlen(vt__task_name(s, nb, sizeof nb));
                char *msg = vt_alloc(cap_msg);
                if (msg) {
                    len += (size_t)snprintf(msg, cap_msg, "cycle: ");
                    for (size_t i = from; i < top; i++)
                        len += (size_t)snprintf(msg + len, cap_msg - len, "%s -> ",
                                                vt__task_name(stack[i].t, nb, sizeof nb));
                    snprintf(msg + len, cap_msg - len, "%s", vt__task_name(s, nb, sizeof nb));
                    vt__graph_errmsg(g, "%s", msg);
                    vt_free(msg, cap_msg);
                } else {
                    vt__graph_errmsg(g, "cycle through task \"%s\"",
                                     vt__task_name(s, nb, sizeof nb));
                }
                result = VT_ECYCLE;
                break;
            }
            if (top == cap) {
                frame *ns = vt_realloc(stack, cap * sizeof *stack, cap * 2 * sizeof *stack);
                if (!ns) {
                    vt__graph_errmsg(g, "validation: out of memory");
                    result = VT_ENOMEM;
                    break;
                }
                stack = ns;
                cap *= 2;
            }
            colour[s->index] = 1;
            stack[top++] = (frame){s, 0};
        }
        top = 0;
    }
    vt_free(colour, n ? n : 1);
    vt_free(stack, cap * sizeof *stack);
    return result;
}

vt_err vt_graph_validate(vt_graph *g)
{
    if (!g)
        return VT_EINVAL;
    if (busy(g))
        return VT_EBUSY;
    if (g->first_err) {
        /* The message of the first building error may have been replaced
         * by a later one: the code is what stays. */
        return g->first_err;
    }
    if (g->sealed)
        return VT_OK;
    vt_err e = VT_OK;
    if (g->has_names || g->has_deps)
        e = index_names(g);
    if (!e && g->has_deps)
        e = resolve_deps(g);
    /* Edges that all go from an earlier task to a later one cannot close a
     * cycle: the order of addition is then an order to run them in. */
    if (!e && g->backward_edges)
        e = find_cycle(g);
    if (!e)
        g->sealed = 1;
    return e;
}

/* ---- Reading a task after (or during) a run -------------------------------------- */

vt_task_state vt_task_state_get(const vt_task *t)
{
    if (!t)
        return VT_TASK_PENDING;
    int s = vt__task_state_raw(t);
    return s < 0 ? VT_TASK_PENDING : (vt_task_state)s;
}

vt_err vt_task_error(const vt_task *t, const char **msg)
{
    if (msg)
        *msg = "";
    if (!t)
        return VT_EINVAL;
    vt__cold *c = vt__cold_peek(t);
    if (!c || vt__task_state_raw(t) < 0)
        return VT_OK;
    if (msg && c->errmsg)
        *msg = c->errmsg;
    return c->err;
}

unsigned vt_task_attempts(const vt_task *t)
{
    if (!t || vt__task_state_raw(t) < 0)
        return 0;
    vt__cold *c = vt__cold_peek(t);
    if (c && (c->attempts || c->restored))
        return c->attempts;
    int s = vt__task_state_raw(t);
    /* A task without a record ran once if it got as far as running. */
    return s == VT_TASK_RUNNING || s == VT_TASK_SUCCEEDED || s == VT_TASK_FAILED;
}

int vt_task_restored(const vt_task *t)
{
    vt__cold *c = t ? vt__cold_peek(t) : NULL;
    return c && c->restored && vt__task_state_raw(t) >= 0;
}

vt_err vt_task_result(const vt_task *t, const void **data, size_t *len)
{
    if (!t)
        return VT_EINVAL;
    vt__cold *c = vt__cold_peek(t);
    if (!c || !c->result || vt__task_state_raw(t) < 0)
        return VT_ENOENT;
    if (data)
        *data = c->result;
    if (len)
        *len = c->result_len;
    return VT_OK;
}

const char *vt_task_log(const vt_task *t)
{
    vt__cold *c = t ? vt__cold_peek(t) : NULL;
    return c && c->log && vt__task_state_raw(t) >= 0 ? c->log : "";
}

/* ---- DOT ------------------------------------------------------------------------------ */

const char *vt_task_state_colour(vt_task_state s)
{
    switch (s) {
    case VT_TASK_PENDING:
        return "white";
    case VT_TASK_READY:
        return "lightyellow";
    case VT_TASK_RUNNING:
        return "gold";
    case VT_TASK_SUCCEEDED:
        return "palegreen";
    case VT_TASK_FAILED:
        return "tomato";
    case VT_TASK_CANCELLED:
        return "orange";
    case VT_TASK_SKIPPED:
        return "lightgrey";
    default:
        return "white";
    }
}

/* A DOT string. DOT escapes only the quote (\"): every other backslash
 * stands for itself, except one that would escape the quote after it, which
 * is doubled. Control characters are dropped. */
static void dot_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('\\', f);
        else if (*s == '\\' && (s[1] == '"' || s[1] == '\0'))
            fputc('\\', f);
        if ((unsigned char)*s >= 0x20)
            fputc(*s, f);
    }
    fputc('"', f);
}

static void dot_node(FILE *f, vt_task *t)
{
    char nb[32];
    int s = vt__task_state_raw(t);
    if (s < 0)
        s = VT_TASK_PENDING;
    fputs("  ", f);
    dot_str(f, vt__task_name(t, nb, sizeof nb));
    fprintf(f, " [fillcolor=%s, tooltip=\"%s\"];\n", vt_task_state_colour(s), vt_task_state_name(s));
}

static void dot_edges(FILE *f, vt_task *t)
{
    char na[32], nb[32];
    VT__FOREACH_SUCC(t, s, {
        fputs("  ", f);
        dot_str(f, vt__task_name(t, na, sizeof na));
        fputs(" -> ", f);
        dot_str(f, vt__task_name(s, nb, sizeof nb));
        fputs(";\n", f);
    });
    /* Dependencies by name that validation has not made edges yet. */
    vt__cold *c = vt__cold_peek(t);
    for (uint32_t i = c ? c->deps_resolved : 0; c && i < c->ndeps; i++) {
        fputs("  ", f);
        dot_str(f, c->deps[i]);
        fputs(" -> ", f);
        dot_str(f, vt__task_name(t, na, sizeof na));
        fputs(";\n", f);
    }
}

vt_err vt_graph_write_dot(vt_graph *g, FILE *f)
{
    if (!g || !f)
        return VT_EINVAL;
    fputs("digraph ", f);
    dot_str(f, g->name);
    fputs(" {\n  node [shape=box, style=\"rounded,filled\"];\n", f);
    for (size_t i = 0; i < g->ntasks; i++)
        dot_node(f, vt__graph_task_at(g, i));
    for (size_t i = 0; i < g->ntasks; i++)
        dot_edges(f, vt__graph_task_at(g, i));
    /* Subtasks, in a cluster per parent (the first subtask of a parent
     * opens it), with a dashed edge from the parent. */
    /* A copy of the list: a running graph may grow it meanwhile. */
    vt__spin_lock(&g->lock);
    size_t nsub = g->nsub_colds;
    vt__cold **subs = nsub ? vt_alloc(nsub * sizeof *subs) : NULL;
    if (subs)
        memcpy(subs, g->sub_colds, nsub * sizeof *subs);
    vt__spin_unlock(&g->lock);
    if (!subs)
        nsub = 0;
    for (size_t i = 0; i < nsub; i++) {
        vt__cold *c = subs[i];
        vt__cold *pc = vt__cold_peek(c->parent);
        if (c->sub_pos != 0 || !pc->nsubs || pc->subs[0] != c->self)
            continue;
        char nb[32];
        fprintf(f, "  subgraph \"cluster_%zu\" {\n    label=", i);
        dot_str(f, vt__task_name(c->parent, nb, sizeof nb));
        fputs(";\n", f);
        for (uint32_t k = 0; k < pc->nsubs; k++) {
            fputs("  ", f);
            dot_node(f, pc->subs[k]);
        }
        fputs("  }\n", f);
    }
    for (size_t i = 0; i < nsub; i++) {
        vt__cold *c = subs[i];
        vt__cold *pc = vt__cold_peek(c->parent);
        if (c->sub_pos >= pc->nsubs || pc->subs[c->sub_pos] != c->self)
            continue; /* of an earlier attempt */
        char na[32];
        dot_edges(f, c->self);
        fputs("  ", f);
        dot_str(f, vt__task_name(c->parent, na, sizeof na));
        fputs(" -> ", f);
        dot_str(f, c->name);
        fputs(" [style=dashed];\n", f);
    }
    if (subs)
        vt_free(subs, nsub * sizeof *subs);
    fputs("}\n", f);
    if (fflush(f) || ferror(f))
        return vt_err_from_errno(errno ? errno : EIO);
    return VT_OK;
}
