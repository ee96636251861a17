/* flow.c — value graphs: building a flow on its private task graph,
 * running it, and reading the nodes' values afterwards. The bodies' side
 * (reading inputs, setting values) is ctx.c; DOT is dot.c. */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "flow_int.h"

/* ---- Messages -----------------------------------------------------------------------
 * Two channels, as SQLite's: the code from the call, and a message. A
 * flow's own message (building, validation, the last run) lives in the
 * flow; a failed getter's goes to a per-thread record, since getters may
 * be called from several threads at once. */

static _Atomic uint64_t next_flow_id = 1;

static _Thread_local struct {
    uint64_t id; /* the flow the message is about, 0: none */
    char msg[512];
} thread_err;

void vt__flow_thread_error(const vt_flow *f, const char *fmt, ...)
{
    if (!f)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(thread_err.msg, sizeof thread_err.msg, fmt, ap);
    va_end(ap);
    thread_err.id = f->id;
}

void vt__flow_thread_clear(const vt_flow *f)
{
    if (f && thread_err.id == f->id)
        thread_err.id = 0;
}

static void set_msg(vt_flow *f, const char *fmt, ...) VT_PRINTF(2, 3);
static void set_msg(vt_flow *f, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char *m = vt_strdup(buf);
    if (!m)
        return; /* the code still says what happened */
    if (f->msg)
        vt_free(f->msg, strlen(f->msg) + 1);
    f->msg = m;
}

/* The first building error is remembered (with its message) for
 * validation and every run; VT_EBUSY is not (the call changed nothing
 * and the flow is fine). */
static void build_error(vt_flow *f, vt_err e, const char *fmt, ...) VT_PRINTF(3, 4);
static void build_error(vt_flow *f, vt_err e, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    vt__flow_thread_error(f, "%s", buf);
    if (e == VT_EBUSY || f->first_err)
        return;
    f->first_err = e;
    set_msg(f, "%s", buf);
}

const char *vt_flow_error(const vt_flow *f)
{
    if (!f)
        return "";
    if (thread_err.id == f->id)
        return thread_err.msg;
    return f->msg ? f->msg : "";
}

/* ---- Flows ------------------------------------------------------------------------- */

vt_err vt_flow_new(vt_flow **out, const char *name)
{
    if (!out || (name && !*name))
        return VT_EINVAL;
    vt_flow *f = vt_calloc(1, sizeof *f);
    if (!f)
        return VT_ENOMEM;
    f->name = vt_strdup(name ? name : "flow");
    vt_err e = f->name ? vt_graph_new(&f->g, f->name) : VT_ENOMEM;
    if (e) {
        if (f->name)
            vt_free(f->name, strlen(f->name) + 1);
        vt_free(f, sizeof *f);
        return e;
    }
    f->id = atomic_fetch_add_explicit(&next_flow_id, 1, memory_order_relaxed);
    *out = f;
    return VT_OK;
}

_Static_assert(offsetof(struct vt_flow_node, t) == VT_CACHE_LINE,
               "what a run touches of a node fills its first cache line, and no more");
_Static_assert(sizeof(struct vt_flow_node) == 2 * VT_CACHE_LINE, "a node is two cache lines");

vt_flow_node *vt__flow_node_at(const vt_flow *f, size_t i)
{
    if (i < VT__NODE_BLOCK0)
        return &f->blocks[0].nodes[i];
    i -= VT__NODE_BLOCK0;
    return &f->blocks[1 + i / VT__NODES_HUGE].nodes[i % VT__NODES_HUGE];
}

static void drop_values(vt_flow *f)
{
    for (size_t i = 0; i < f->n; i++) {
        vt_flow_node *n = vt__flow_node_at(f, i);
        if (n->fn && n->val.type >= VT_VALUE_STR)
            vt__fval_drop(&n->val);
    }
    atomic_store_explicit(&f->heap_values, 0, memory_order_relaxed);
}

void vt_flow_free(vt_flow *f)
{
    if (!f)
        return;
    if (atomic_load_explicit(&f->running, memory_order_acquire)) {
        if (vt_flow_wait(f, VT_NOW) == VT_EDEADLK) {
            vt_log(VT_LOG_ERROR, "flow",
                   "vt_flow_free(\"%s\") from one of its own nodes: leaking it", f->name);
            return;
        }
        vt_log(VT_LOG_ERROR, "flow", "vt_flow_free(\"%s\") while it runs: waiting for the run",
               f->name);
        vt_flow_wait(f, VT_FOREVER);
    }
    /* The graph first: it waits for a run it may still be ending. */
    vt_graph_free(f->g);
    for (size_t i = 0; i < f->n; i++) {
        vt_flow_node *n = vt__flow_node_at(f, i);
        vt__fval_drop(&n->val);
        if (n->in != n->in_inline)
            vt_free(n->in, n->cap_in * sizeof *n->in);
        if (n->key)
            vt_free(n->key, n->key_len ? n->key_len : 1);
    }
    for (size_t b = 0; b < f->nblocks; b++) {
        if (f->blocks[b].huge)
            vt__vm_release(f->blocks[b].nodes, VT__HUGE_BLOCK);
        else
            vt_free(f->blocks[b].raw,
                    (b ? VT__NODES_HUGE : VT__NODE_BLOCK0) * sizeof(vt_flow_node) + VT_CACHE_LINE);
    }
    if (f->blocks)
        vt_free(f->blocks, f->cap_blocks * sizeof *f->blocks);
    if (f->by_task)
        vt_free(f->by_task, f->by_task_cap * sizeof *f->by_task);
    if (f->msg)
        vt_free(f->msg, strlen(f->msg) + 1);
    vt__flow_thread_clear(f);
    vt_free(f->name, strlen(f->name) + 1);
    vt_free(f, sizeof *f);
}

const char *vt_flow_name(const vt_flow *f)
{
    return f ? f->name : "";
}

size_t vt_flow_size(const vt_flow *f)
{
    return f ? f->n : 0;
}

vt_graph *vt_flow_graph(const vt_flow *f)
{
    return f ? f->g : NULL;
}

/* ---- The task -> node map ------------------------------------------------------------- */

static size_t task_slot(const vt_task *t, size_t cap)
{
    return (size_t)vt_hash_mix64((uint64_t)(uintptr_t)t) & (cap - 1);
}

static void map_put(vt_flow_node **map, size_t cap, vt_flow_node *n)
{
    size_t i = task_slot(n->t, cap);
    while (map[i])
        i = (i + 1) & (cap - 1);
    map[i] = n;
}

/* The map is made when first needed (vt_flow_node_of, vt_flow_find, a run
 * with a monitor), not while building: an insertion is a cache miss in a
 * table larger than the caches, which would double what a node costs to
 * add (see docs/flow.md) for flows that never look a task up. Readers
 * may be several threads at once (monitor callbacks, the caller): the
 * first one that finds it behind brings it up to date, under the lock. */
static vt_err map_sync(vt_flow *f)
{
    if (atomic_load_explicit(&f->mapped, memory_order_acquire) == f->n)
        return VT_OK;
    vt__spin_lock(&f->map_lock);
    size_t done = atomic_load_explicit(&f->mapped, memory_order_relaxed);
    vt_err e = VT_OK;
    if (done != f->n && f->n * 2 > f->by_task_cap) {
        size_t cap = f->by_task_cap ? f->by_task_cap : 64;
        while (cap < f->n * 2)
            cap *= 2;
        vt_flow_node **map = vt_calloc(cap, sizeof *map);
        if (!map) {
            e = VT_ENOMEM;
        } else {
            if (f->by_task)
                vt_free(f->by_task, f->by_task_cap * sizeof *f->by_task);
            f->by_task = map;
            f->by_task_cap = cap;
            done = 0;
        }
    }
    if (!e) {
        for (size_t i = done; i < f->n; i++)
            map_put(f->by_task, f->by_task_cap, vt__flow_node_at(f, i));
        atomic_store_explicit(&f->mapped, f->n, memory_order_release);
    }
    vt__spin_unlock(&f->map_lock);
    return e;
}

vt_flow_node *vt_flow_node_of(const vt_flow *f, const vt_task *t)
{
    if (!f || !t || map_sync((vt_flow *)f))
        return NULL;
    for (size_t i = task_slot(t, f->by_task_cap);; i = (i + 1) & (f->by_task_cap - 1)) {
        vt_flow_node *n = f->by_task[i];
        if (!n)
            return NULL;
        if (n->t == t)
            return n;
    }
}

vt_flow_node *vt_flow_find(const vt_flow *f, const char *name)
{
    if (!f || !name)
        return NULL;
    return vt_flow_node_of(f, vt_graph_find(f->g, name));
}

/* ---- Building -------------------------------------------------------------------------- */

static int running(const vt_flow *f)
{
    return atomic_load_explicit(&((vt_flow *)f)->running, memory_order_acquire);
}

static const char *shown(const char *name)
{
    return name ? name : "(unnamed)";
}

/* Room for node number f->n. */
static vt_err node_reserve(vt_flow *f)
{
    size_t have = f->nblocks ? VT__NODE_BLOCK0 + (f->nblocks - 1) * VT__NODES_HUGE : 0;
    if (f->n < have)
        return VT_OK;
    if (f->nblocks == f->cap_blocks) {
        size_t cap = f->cap_blocks ? f->cap_blocks * 2 : 8;
        vt__node_block *b = vt_realloc(f->blocks, f->cap_blocks * sizeof *b, cap * sizeof *b);
        if (!b)
            return VT_ENOMEM;
        f->blocks = b;
        f->cap_blocks = cap;
    }
    /* Not zeroed (but a fresh mapping is): each node is, when it is added. */
    vt_flow_node *blk = NULL;
    void *raw = NULL;
    uint8_t huge = 0;
    if (f->nblocks && (blk = vt__vm_reserve_huge())) {
        huge = 1;
    } else {
        /* A line more, to put the nodes on line boundaries. */
        raw =
            vt_alloc((f->nblocks ? VT__NODES_HUGE : VT__NODE_BLOCK0) * sizeof *blk + VT_CACHE_LINE);
        if (!raw)
            return VT_ENOMEM;
        blk = (vt_flow_node *)(((uintptr_t)raw + VT_CACHE_LINE - 1) &
                               ~(uintptr_t)(VT_CACHE_LINE - 1));
    }
    if (!blk)
        return VT_ENOMEM;
    f->blocks[f->nblocks].nodes = blk;
    f->blocks[f->nblocks].raw = raw;
    f->blocks[f->nblocks++].huge = huge;
    return VT_OK;
}

/* Makes n->in hold at least need inputs. */
static vt_err inputs_reserve(vt_flow_node *n, size_t need)
{
    if (need <= n->cap_in)
        return VT_OK;
    size_t cap = n->cap_in * 2;
    if (cap < need)
        cap = need;
    vt_flow_node **in = vt_alloc(cap * sizeof *in);
    if (!in)
        return VT_ENOMEM;
    if (n->nin)
        memcpy(in, n->in, n->nin * sizeof *in);
    if (n->in != n->in_inline)
        vt_free(n->in, n->cap_in * sizeof *n->in);
    n->in = in;
    n->cap_in = (uint32_t)cap;
    return VT_OK;
}

/* Checks what a task name must be, for a message of the flow's own. */
static int bad_name(const char *name)
{
    return name && (!*name || strchr(name, '/'));
}

static vt_flow_node *add_node(vt_flow *f, const char *what, const char *name, vt_flow_fn fn,
                              void *ud, vt_flow_node *const *inputs, size_t ninputs, int async,
                              const vt__fval *konst)
{
    if (!f)
        return NULL;
    if (running(f)) {
        build_error(f, VT_EBUSY, "%s: node \"%s\": the flow runs", what, shown(name));
        return NULL;
    }
    if (!konst && !fn) {
        build_error(f, VT_EINVAL, "%s: node \"%s\" has no function (NULL)", what, shown(name));
        return NULL;
    }
    if (bad_name(name)) {
        build_error(f, VT_EINVAL, "%s: bad node name \"%s\" (empty, or holds '/')", what, name);
        return NULL;
    }
    if (ninputs && !inputs) {
        build_error(f, VT_EINVAL, "%s: node \"%s\": %zu inputs but a NULL array", what, shown(name),
                    ninputs);
        return NULL;
    }
    if (ninputs > VT_FLOW_INPUTS_MAX) {
        build_error(f, VT_ERANGE, "%s: node \"%s\": %zu inputs (at most %zu)", what, shown(name),
                    ninputs, VT_FLOW_INPUTS_MAX);
        return NULL;
    }
    for (size_t i = 0; i < ninputs; i++) {
        if (!inputs[i]) {
            build_error(f, VT_EINVAL, "%s: node \"%s\": input %zu is NULL", what, shown(name), i);
            return NULL;
        }
        if (inputs[i]->f != f) {
            build_error(f, VT_EINVAL,
                        "%s: node \"%s\" of flow \"%s\" cannot take node \"%s\" of flow \"%s\" "
                        "as input %zu",
                        what, shown(name), f->name, vt_flow_node_name(inputs[i]),
                        inputs[i]->f->name, i);
            return NULL;
        }
    }
    /* Everything that can fail before the task exists, so that a failure
     * leaves no node behind. */
    vt_flow_node **in = NULL;
    if (ninputs > 2 && !(in = vt_alloc(ninputs * sizeof *in))) {
        build_error(f, VT_ENOMEM, "%s: node \"%s\": out of memory", what, shown(name));
        return NULL;
    }
    if (node_reserve(f)) {
        if (in)
            vt_free(in, ninputs * sizeof *in);
        build_error(f, VT_ENOMEM, "%s: node \"%s\": out of memory", what, shown(name));
        return NULL;
    }
    vt_flow_node *n = vt__flow_node_at(f, f->n);
    memset(n, 0, sizeof *n);
    n->f = f;
    n->fn = fn;
    n->ud = ud;
    n->in = in ? in : n->in_inline;
    n->cap_in = in ? (uint32_t)ninputs : 2;
    n->t = async ? vt_task_add_async(f->g, name, vt__flow_node_body, n)
                 : vt_task_add(f->g, name, vt__flow_node_body, n);
    if (!n->t) {
        if (in)
            vt_free(in, ninputs * sizeof *in);
        /* Arguments were checked above: the graph ran out of memory (and
         * remembers it, as this flow does). */
        build_error(f, VT_ENOMEM, "%s: node \"%s\": out of memory (%s)", what, shown(name),
                    vt_graph_error(f->g));
        return NULL;
    }
    if (konst)
        n->val = *konst;
    f->n++;
    for (size_t i = 0; i < ninputs; i++) {
        vt_err e = vt_task_precede(inputs[i]->t, n->t);
        if (e) {
            /* The node stays (the graph has its task) with the inputs whose
             * edge exists; the flow remembers the failure. */
            build_error(f, e, "%s: node \"%s\": %s", what, vt_flow_node_name(n), vt_strerror(e));
            return NULL;
        }
        n->in[n->nin++] = inputs[i];
    }
    vt__flow_thread_clear(f);
    return n;
}

vt_flow_node *vt_flow_add(vt_flow *f, const char *name, vt_flow_fn fn, void *ud,
                          vt_flow_node *const *inputs, size_t ninputs)
{
    return add_node(f, "vt_flow_add", name, fn, ud, inputs, ninputs, 0, NULL);
}

vt_flow_node *vt_flow_add_async(vt_flow *f, const char *name, vt_flow_fn fn, void *ud,
                                vt_flow_node *const *inputs, size_t ninputs)
{
    return add_node(f, "vt_flow_add_async", name, fn, ud, inputs, ninputs, 1, NULL);
}

vt_flow_node *vt_flow_add_int(vt_flow *f, const char *name, int64_t v)
{
    vt__fval k = {.type = VT_VALUE_INT, .u.i = v};
    return add_node(f, "vt_flow_add_int", name, NULL, NULL, NULL, 0, 0, &k);
}

vt_flow_node *vt_flow_add_double(vt_flow *f, const char *name, double v)
{
    vt__fval k = {.type = VT_VALUE_DOUBLE, .u.d = v};
    return add_node(f, "vt_flow_add_double", name, NULL, NULL, NULL, 0, 0, &k);
}

static vt_flow_node *add_blob(vt_flow *f, const char *what, const char *name, vt_value_type type,
                              const void *p, size_t len)
{
    if (!f)
        return NULL;
    if (!p && (len || type == VT_VALUE_STR)) {
        build_error(f, VT_EINVAL, "%s: node \"%s\": NULL value", what, shown(name));
        return NULL;
    }
    if (len > VT_FLOW_VALUE_MAX) {
        build_error(f, VT_ERANGE, "%s: node \"%s\": %zu bytes (at most %zu)", what, shown(name),
                    len, VT_FLOW_VALUE_MAX);
        return NULL;
    }
    if (running(f)) {
        build_error(f, VT_EBUSY, "%s: node \"%s\": the flow runs", what, shown(name));
        return NULL;
    }
    vt__fval k = {0};
    if (vt__fval_copy(&k, type, p, len)) {
        build_error(f, VT_ENOMEM, "%s: node \"%s\": out of memory", what, shown(name));
        return NULL;
    }
    /* A constant has no input: add_node either made the node, which owns
     * k from then on, or failed before. */
    vt_flow_node *n = add_node(f, what, name, NULL, NULL, NULL, 0, 0, &k);
    if (!n)
        vt__fval_drop(&k);
    return n;
}

vt_flow_node *vt_flow_add_str(vt_flow *f, const char *name, const char *s)
{
    return add_blob(f, "vt_flow_add_str", name, VT_VALUE_STR, s, s ? strlen(s) : 0);
}

vt_flow_node *vt_flow_add_bytes(vt_flow *f, const char *name, const void *p, size_t len)
{
    return add_blob(f, "vt_flow_add_bytes", name, VT_VALUE_BYTES, p, len);
}

vt_err vt_flow_node_add_input(vt_flow_node *n, vt_flow_node *in)
{
    if (!n)
        return VT_EINVAL;
    vt_flow *f = n->f;
    const char *what = "vt_flow_node_add_input";
    if (running(f)) {
        build_error(f, VT_EBUSY, "%s: node \"%s\": the flow runs", what, vt_flow_node_name(n));
        return VT_EBUSY;
    }
    if (!in) {
        build_error(f, VT_EINVAL, "%s: node \"%s\": NULL input", what, vt_flow_node_name(n));
        return VT_EINVAL;
    }
    if (in->f != f) {
        build_error(
            f, VT_EINVAL,
            "%s: node \"%s\" of flow \"%s\" cannot take node \"%s\" of flow \"%s\" as input", what,
            vt_flow_node_name(n), f->name, vt_flow_node_name(in), in->f->name);
        return VT_EINVAL;
    }
    if (in == n) {
        build_error(f, VT_EINVAL, "%s: node \"%s\" cannot be its own input", what,
                    vt_flow_node_name(n));
        return VT_EINVAL;
    }
    if (!n->fn) {
        build_error(f, VT_EINVAL, "%s: node \"%s\" is a constant: it takes no input", what,
                    vt_flow_node_name(n));
        return VT_EINVAL;
    }
    if (n->nin >= VT_FLOW_INPUTS_MAX) {
        build_error(f, VT_ERANGE, "%s: node \"%s\" has %zu inputs already", what,
                    vt_flow_node_name(n), VT_FLOW_INPUTS_MAX);
        return VT_ERANGE;
    }
    if (inputs_reserve(n, (size_t)n->nin + 1)) {
        build_error(f, VT_ENOMEM, "%s: node \"%s\": out of memory", what, vt_flow_node_name(n));
        return VT_ENOMEM;
    }
    vt_err e = vt_task_precede(in->t, n->t);
    if (e) {
        build_error(f, e, "%s: node \"%s\": %s", what, vt_flow_node_name(n), vt_strerror(e));
        return e;
    }
    n->in[n->nin++] = in;
    vt__flow_thread_clear(f);
    return VT_OK;
}

vt_err vt_flow_node_set_retry(vt_flow_node *n, const vt_retry *policy)
{
    if (!n)
        return VT_EINVAL;
    vt_err e = vt_task_set_retry(n->t, policy);
    if (e)
        vt__flow_thread_error(n->f, "vt_flow_node_set_retry: node \"%s\": %s", vt_flow_node_name(n),
                              e == VT_EBUSY ? "the flow runs" : vt_strerror(e));
    else
        vt__flow_thread_clear(n->f);
    return e;
}

vt_err vt_flow_node_set_timeout(vt_flow_node *n, int64_t timeout_ns)
{
    if (!n)
        return VT_EINVAL;
    vt_err e = vt_task_set_timeout(n->t, timeout_ns);
    if (e)
        vt__flow_thread_error(n->f, "vt_flow_node_set_timeout: node \"%s\": %s",
                              vt_flow_node_name(n),
                              e == VT_EBUSY ? "the flow runs" : vt_strerror(e));
    else
        vt__flow_thread_clear(n->f);
    return e;
}

/* ---- Fingerprints -----------------------------------------------------------------------
 * See VT__FP_* in flow_int.h: a node's task fingerprint is its key, or its
 * key and one of two suffixes, which no key the user gives can be taken
 * for (they start with a NUL and are as long as the slack the flow keeps).
 */

#define FP_SUFFIX_LEN 16
static const unsigned char fp_suffix[2][FP_SUFFIX_LEN] = {
    {0, 'v', 'i', 't', 't', 'e', '-', 'f', 'l', 'o', 'w', ':', 'r', 'u', 'n', '1'},
    {0, 'v', 'i', 't', 't', 'e', '-', 'f', 'l', 'o', 'w', ':', 'r', 'u', 'n', '2'},
};

static vt_err fp_apply(vt_flow_node *n, int state)
{
    unsigned char buf[VT_FINGERPRINT_MAX];
    size_t len = n->key_len;
    if (len)
        memcpy(buf, n->key, len);
    if (state != VT__FP_KEY) {
        memcpy(buf + len, fp_suffix[state - 1], FP_SUFFIX_LEN);
        len += FP_SUFFIX_LEN;
    }
    vt_err e = vt_task_set_fingerprint(n->t, buf, len);
    if (e == VT_OK) {
        n->fp_state = (uint8_t)state;
        n->fp_set = 1;
    }
    return e;
}

/* Which fingerprint of n's family fp is, or -1 when none. */
static int fp_which(const vt_flow_node *n, const void *fp, size_t len)
{
    if (len < n->key_len || (n->key_len && memcmp(fp, n->key, n->key_len)))
        return -1;
    if (len == n->key_len)
        return VT__FP_KEY;
    if (len != n->key_len + FP_SUFFIX_LEN)
        return -1;
    for (int s = 0; s < 2; s++)
        if (!memcmp((const unsigned char *)fp + n->key_len, fp_suffix[s], FP_SUFFIX_LEN))
            return VT__FP_ALT1 + s;
    return -1;
}

vt_err vt_flow_node_set_fingerprint(vt_flow_node *n, const void *key, size_t len)
{
    if (!n)
        return VT_EINVAL;
    vt_flow *f = n->f;
    const char *what = "vt_flow_node_set_fingerprint";
    if ((!key && len) || len > VT_FLOW_FINGERPRINT_MAX) {
        vt__flow_thread_error(f, "%s: node \"%s\": %s", what, vt_flow_node_name(n),
                              len > VT_FLOW_FINGERPRINT_MAX ? "key too long" : "NULL key");
        return VT_EINVAL;
    }
    if (running(f)) {
        vt__flow_thread_error(f, "%s: node \"%s\": the flow runs", what, vt_flow_node_name(n));
        return VT_EBUSY;
    }
    unsigned char *copy = vt_alloc(len ? len : 1);
    if (!copy) {
        build_error(f, VT_ENOMEM, "%s: node \"%s\": out of memory", what, vt_flow_node_name(n));
        return VT_ENOMEM;
    }
    if (len)
        memcpy(copy, key, len);
    unsigned char *old = n->key;
    uint32_t old_len = n->key_len;
    n->key = copy;
    n->key_len = (uint32_t)len;
    vt_err e = fp_apply(n, VT__FP_KEY);
    if (e) {
        n->key = old;
        n->key_len = old_len;
        vt_free(copy, len ? len : 1);
        build_error(f, e, "%s: node \"%s\": %s", what, vt_flow_node_name(n), vt_strerror(e));
        return e;
    }
    if (old)
        vt_free(old, old_len ? old_len : 1);
    vt__flow_thread_clear(f);
    return VT_OK;
}

/* A resumed run: for every node the store has as succeeded, the task's
 * fingerprint is made to match the record when the record holds the
 * node's value (the task layer then restores it), and to differ from it
 * when it does not (the node runs again: its value was a pointer, or too
 * big to keep). A record whose fingerprint is not of the node's family
 * was made with another key: the task runs again by itself. */
static vt_err resume_prepare(vt_flow *f, vt_store *store, const char *run_id)
{
    vt_task_record *recs;
    size_t nrec;
    vt_err e = vt_store_run_tasks(store, run_id, &recs, &nrec);
    if (e == VT_ENOENT)
        return VT_OK; /* a new run */
    if (e) {
        set_msg(f, "flow \"%s\": reading run %s from the store: %s (%s)", f->name, run_id,
                vt_strerror(e), vt_store_last_error());
        return e;
    }
    for (size_t i = 0; i < nrec && !e; i++) {
        const vt_task_record *r = &recs[i];
        if (r->state != VT_TASK_SUCCEEDED)
            continue;
        vt_flow_node *n = vt_flow_node_of(f, vt_graph_find(f->g, r->name));
        if (!n)
            continue;
        int s = fp_which(n, r->fingerprint, r->fingerprint_len);
        if (s < 0)
            continue;
        vt__fval v;
        int kept = vt__fval_decode(r->result, r->result_len, &v);
        int want = kept ? s : (s == VT__FP_ALT1 ? VT__FP_ALT2 : VT__FP_ALT1);
        int now = n->fp_set ? n->fp_state : VT__FP_KEY;
        if (want != now)
            e = fp_apply(n, want);
    }
    vt_store_run_tasks_free(recs, nrec);
    if (e)
        set_msg(f, "flow \"%s\": %s", f->name, vt_strerror(e));
    return e;
}

/* ---- Runs --------------------------------------------------------------------------------- */

vt_err vt_flow_validate(vt_flow *f)
{
    if (!f)
        return VT_EINVAL;
    if (running(f)) {
        vt__flow_thread_error(f, "flow \"%s\" runs", f->name);
        return VT_EBUSY;
    }
    vt__flow_thread_clear(f);
    if (f->first_err)
        return f->first_err;
    vt_err e = vt_graph_validate(f->g);
    if (e)
        set_msg(f, "%s", vt_graph_error(f->g));
    return e;
}

vt_err vt_flow_start(vt_flow *f, vt_runtime *rt, const vt_run_opts *opts)
{
    if (!f)
        return VT_EINVAL;
    vt__flow_thread_clear(f);
    if (!rt) {
        vt__flow_thread_error(f, "vt_flow_start: flow \"%s\": NULL runtime", f->name);
        return VT_EINVAL;
    }
    int idle = 0;
    if (!atomic_compare_exchange_strong_explicit(&f->running, &idle, 1, memory_order_acq_rel,
                                                 memory_order_relaxed)) {
        vt__flow_thread_error(f, "vt_flow_start: flow \"%s\" runs already", f->name);
        return VT_EBUSY;
    }
    vt_err e = f->first_err;
    if (!e && (e = vt_graph_validate(f->g)))
        set_msg(f, "%s", vt_graph_error(f->g));
    if (!e && opts && opts->store && opts->run_id)
        e = resume_prepare(f, opts->store, opts->run_id);
    /* Made now, so that the monitor's subscribers find nodes at once. */
    if (!e && opts && opts->monitor && (e = map_sync(f)))
        set_msg(f, "flow \"%s\": out of memory", f->name);
    if (e) {
        atomic_store_explicit(&f->running, 0, memory_order_release);
        return e;
    }
    if (atomic_load_explicit(&f->heap_values, memory_order_relaxed))
        drop_values(f);
    if (!++f->gen)
        f->gen = 1; /* 0 means "no value" in a node */
    f->persist = opts && opts->store;
    f->started = 1;
    e = vt_graph_start(f->g, rt, opts);
    if (e) {
        set_msg(f, "%s", *vt_graph_error(f->g) ? vt_graph_error(f->g) : vt_strerror(e));
        atomic_store_explicit(&f->running, 0, memory_order_release);
        return e;
    }
    return VT_OK;
}

vt_err vt_flow_wait(vt_flow *f, int64_t deadline)
{
    if (!f)
        return VT_EINVAL;
    vt__flow_thread_clear(f);
    if (!f->started)
        return VT_ESTATE;
    vt_err e = vt_graph_wait(f->g, deadline);
    if (e == VT_ETIMEDOUT || e == VT_EDEADLK) {
        if (e == VT_EDEADLK)
            vt__flow_thread_error(f, "flow \"%s\": %s", f->name,
                                  *vt_graph_error(f->g) ? vt_graph_error(f->g)
                                                        : "waiting for itself, from a node's body");
        return e;
    }
    if (e)
        set_msg(f, "%s", *vt_graph_error(f->g) ? vt_graph_error(f->g) : vt_strerror(e));
    atomic_store_explicit(&f->running, 0, memory_order_release);
    return e;
}

vt_err vt_flow_run(vt_flow *f, vt_runtime *rt, const vt_run_opts *opts)
{
    vt_err e = vt_flow_start(f, rt, opts);
    if (e)
        return e;
    return vt_flow_wait(f, VT_FOREVER);
}

vt_err vt_flow_cancel(vt_flow *f)
{
    if (!f)
        return VT_EINVAL;
    return vt_graph_cancel(f->g);
}

/* ---- Nodes ------------------------------------------------------------------------------- */

const char *vt_flow_node_name(const vt_flow_node *n)
{
    return n ? vt_task_name(n->t) : "";
}

vt_flow *vt_flow_node_flow(const vt_flow_node *n)
{
    return n ? n->f : NULL;
}

vt_task *vt_flow_node_task(const vt_flow_node *n)
{
    return n ? n->t : NULL;
}

size_t vt_flow_node_inputs(const vt_flow_node *n)
{
    return n ? n->nin : 0;
}

vt_flow_node *vt_flow_node_input(const vt_flow_node *n, size_t i)
{
    return n && i < n->nin ? n->in[i] : NULL;
}

vt_task_state vt_flow_node_state(const vt_flow_node *n)
{
    return n ? vt_task_state_get(n->t) : VT_TASK_PENDING;
}

vt_err vt__flow_node_view(const vt_flow_node *n, uint32_t gen, vt__fval *v)
{
    if (n->gen == gen && gen) {
        *v = n->val;
        return VT_OK;
    }
    const void *data;
    size_t len;
    if (vt_task_restored(n->t) && vt_task_result(n->t, &data, &len) == VT_OK &&
        vt__fval_decode(data, len, v))
        return VT_OK;
    return VT_ESTATE;
}

/* The value of n after a run, or an error with its message. */
static vt_err value_of(const vt_flow_node *n, const char *what, vt__fval *v)
{
    if (!n)
        return VT_EINVAL;
    const vt_flow *f = n->f;
    const char *name = vt_flow_node_name(n);
    if (running(f)) {
        vt__flow_thread_error(f,
                              "%s: node \"%s\": the flow runs; its values are read after "
                              "vt_flow_wait",
                              what, name);
        return VT_EBUSY;
    }
    if (!f->started) {
        vt__flow_thread_error(f, "%s: node \"%s\" has no value: the flow has not run", what, name);
        return VT_ESTATE;
    }
    vt_task_state s = vt_task_state_get(n->t);
    if (s != VT_TASK_SUCCEEDED) {
        const char *msg = "";
        vt_err err = vt_task_error(n->t, &msg);
        const char *how = s == VT_TASK_FAILED      ? "failed"
                          : s == VT_TASK_SKIPPED   ? "was skipped"
                          : s == VT_TASK_CANCELLED ? "was cancelled"
                                                   : "did not run";
        if (err)
            vt__flow_thread_error(f, "%s: node \"%s\" has no value: it %s (%s%s%s)", what, name,
                                  how, vt_strerror(err), *msg ? ": " : "", msg);
        else
            vt__flow_thread_error(f, "%s: node \"%s\" has no value: it %s%s%s", what, name, how,
                                  *msg ? ": " : "", msg);
        return VT_ESTATE;
    }
    if (vt__flow_node_view(n, f->gen, v)) {
        vt__flow_thread_error(f,
                              "%s: node \"%s\" was restored from the store without a value "
                              "this flow can read",
                              what, name);
        return VT_ESTATE;
    }
    return VT_OK;
}

static vt_err typed(const vt_flow_node *n, const char *what, vt_value_type want, vt__fval *v)
{
    vt_err e = value_of(n, what, v);
    if (e)
        return e;
    if (v->type != want) {
        vt__flow_thread_error(n->f, "%s: node \"%s\" holds %s %s, not %s %s", what,
                              vt_flow_node_name(n),
                              v->type == VT_VALUE_INT || v->type == VT_VALUE_NONE ? "an" : "a",
                              vt_value_type_name((vt_value_type)v->type),
                              want == VT_VALUE_INT ? "an" : "a", vt_value_type_name(want));
        return VT_ETYPE;
    }
    vt__flow_thread_clear(n->f);
    return VT_OK;
}

vt_err vt_flow_node_type(const vt_flow_node *n, vt_value_type *type)
{
    vt__fval v;
    if (!type)
        return VT_EINVAL;
    vt_err e = value_of(n, "vt_flow_node_type", &v);
    if (e)
        return e;
    vt__flow_thread_clear(n->f);
    *type = (vt_value_type)v.type;
    return VT_OK;
}

vt_err vt_flow_node_get_int(const vt_flow_node *n, int64_t *out)
{
    vt__fval v;
    if (!out)
        return VT_EINVAL;
    vt_err e = typed(n, "vt_flow_node_get_int", VT_VALUE_INT, &v);
    if (!e)
        *out = v.u.i;
    return e;
}

vt_err vt_flow_node_get_double(const vt_flow_node *n, double *out)
{
    vt__fval v;
    if (!out)
        return VT_EINVAL;
    vt_err e = typed(n, "vt_flow_node_get_double", VT_VALUE_DOUBLE, &v);
    if (!e)
        *out = v.u.d;
    return e;
}

vt_err vt_flow_node_get_str(const vt_flow_node *n, const char **s, size_t *len)
{
    vt__fval v;
    if (!s)
        return VT_EINVAL;
    vt_err e = typed(n, "vt_flow_node_get_str", VT_VALUE_STR, &v);
    if (!e) {
        *s = v.u.p;
        if (len)
            *len = v.len;
    }
    return e;
}

vt_err vt_flow_node_get_bytes(const vt_flow_node *n, const void **p, size_t *len)
{
    vt__fval v;
    if (!p)
        return VT_EINVAL;
    vt_err e = typed(n, "vt_flow_node_get_bytes", VT_VALUE_BYTES, &v);
    if (!e) {
        *p = v.u.p;
        if (len)
            *len = v.len;
    }
    return e;
}

vt_err vt_flow_node_get_ptr(const vt_flow_node *n, void **p)
{
    vt__fval v;
    if (!p)
        return VT_EINVAL;
    vt_err e = typed(n, "vt_flow_node_get_ptr", VT_VALUE_PTR, &v);
    if (!e)
        *p = v.u.p;
    return e;
}
