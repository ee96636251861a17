/* pipeline.c — building pipelines: options, stages, names, messages.
 * Running them is pipe_run.c; statistics and DOT are pipe_watch.c. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "flow_int.h"

#define BATCH_MAX 65536u
#define BATCHES_MAX 65536u
#define CONC_MAX 65536u

/* The run's state and a stage's counters are kept on lines of their own
 * (VT_CACHE_ALIGNED), which vt_alloc's alignment does not promise: these
 * objects are allocated one line over and aligned by hand, the offset in
 * the byte before them. */
static void *alloc_lines(size_t size)
{
    unsigned char *raw = vt_alloc(size + VT_CACHE_LINE);
    if (!raw)
        return NULL;
    uintptr_t a = ((uintptr_t)raw + VT_CACHE_LINE) & ~(uintptr_t)(VT_CACHE_LINE - 1);
    unsigned char *p = (unsigned char *)a;
    p[-1] = (unsigned char)(p - raw);
    memset(p, 0, size);
    return p;
}

static void free_lines(void *ptr, size_t size)
{
    if (!ptr)
        return;
    unsigned char *p = ptr;
    vt_free(p - p[-1], size + VT_CACHE_LINE);
}

void vt__pipe_msg(vt_pipeline *p, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char *m = vt_strdup(buf);
    if (!m)
        return;
    if (p->msg)
        vt_free(p->msg, strlen(p->msg) + 1);
    p->msg = m;
}

static void build_error(vt_pipeline *p, vt_err e, const char *fmt, ...) VT_PRINTF(3, 4);
static void build_error(vt_pipeline *p, vt_err e, const char *fmt, ...)
{
    if (e != VT_EBUSY && p->first_err)
        return; /* the first mistake keeps its message */
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    vt__pipe_msg(p, "%s", buf);
    if (e != VT_EBUSY)
        p->first_err = e;
}

vt_err vt_pipeline_new(vt_pipeline **out, const char *name, const vt_pipeline_opts *opts)
{
    if (!out || (name && !*name))
        return VT_EINVAL;
    if (opts && (opts->batch > BATCH_MAX || opts->max_batches > BATCHES_MAX))
        return VT_EINVAL;
    vt_pipeline *p = alloc_lines(sizeof *p);
    if (!p)
        return VT_ENOMEM;
    if (!(p->name = vt_strdup(name ? name : "pipeline"))) {
        free_lines(p, sizeof *p);
        return VT_ENOMEM;
    }
    if (opts) {
        p->batch_opt = opts->batch;
        p->max_batches_opt = opts->max_batches;
        p->async = opts->async != 0;
    }
    *out = p;
    return VT_OK;
}

static void stage_free(vt_pipe_stage *s)
{
    vt_free(s->name, strlen(s->name) + 1);
    free_lines(s, sizeof *s);
}

void vt_pipeline_free(vt_pipeline *p)
{
    if (!p)
        return;
    if (atomic_load_explicit(&p->running, memory_order_acquire)) {
        vt_err e = vt__pipe_wait(p, VT_NOW);
        if (e == VT_EDEADLK) {
            vt_log(VT_LOG_ERROR, "flow",
                   "vt_pipeline_free(\"%s\") from one of its own stages: leaking it", p->name);
            return;
        }
        if (e == VT_ETIMEDOUT) {
            vt_pipeline_cancel(p);
            vt__pipe_wait(p, VT_FOREVER);
        }
    }
    vt__pipe_release(p);
    for (size_t i = 0; i < p->n; i++)
        stage_free(p->st[i]);
    if (p->st)
        vt_free(p->st, p->cap * sizeof *p->st);
    if (p->msg)
        vt_free(p->msg, strlen(p->msg) + 1);
    vt_free(p->name, strlen(p->name) + 1);
    free_lines(p, sizeof *p);
}

const char *vt_pipeline_name(const vt_pipeline *p)
{
    return p ? p->name : "";
}

size_t vt_pipeline_stages(const vt_pipeline *p)
{
    return p ? p->n : 0;
}

const char *vt_pipe_stage_name(const vt_pipe_stage *s)
{
    return s ? s->name : "";
}

const char *vt_pipeline_error(const vt_pipeline *p)
{
    return p && p->msg ? p->msg : "";
}

/* What is wrong with opts for a stage of this role, or NULL. */
static const char *bad_opts(const vt_pipe_stage_opts *o, int role)
{
    if (o->kind != VT_PIPE_SERIAL && o->kind != VT_PIPE_PARALLEL)
        return "unknown kind";
    if (role == VT__ROLE_SOURCE && o->kind != VT_PIPE_SERIAL)
        return "a source is serial";
    if (o->concurrency > CONC_MAX)
        return "concurrency above 65536";
    if (o->on_fail != VT_PIPE_STOP && o->on_fail != VT_PIPE_SKIP)
        return "unknown on_fail";
    const vt_retry *r = &o->retry;
    if (r->max_attempts > 1000)
        return "retry.max_attempts above 1000";
    if (r->backoff != VT_BACKOFF_FIXED && r->backoff != VT_BACKOFF_EXPONENTIAL)
        return "unknown retry.backoff";
    if (r->delay_ns < 0 || r->delay_ns > VT_SEC(86400) || r->max_delay_ns < 0 ||
        r->max_delay_ns > VT_SEC(86400))
        return "retry delays outside 0 .. 1 day";
    if (!(r->jitter >= 0 && r->jitter <= 1))
        return "retry.jitter outside 0 .. 1";
    return NULL;
}

static vt_pipe_stage *add(vt_pipeline *p, const char *what, int role, const char *name,
                          size_t item_size, void *fn, void *ud, const vt_pipe_stage_opts *opts)
{
    if (!p)
        return NULL;
    char defname[32];
    if (!name) {
        if (role == VT__ROLE_STAGE)
            snprintf(defname, sizeof defname, "stage%zu", p->n);
        name = role == VT__ROLE_SOURCE ? "source" : role == VT__ROLE_SINK ? "sink" : defname;
    }
    if (atomic_load_explicit(&p->running, memory_order_acquire)) {
        build_error(p, VT_EBUSY, "%s(\"%s\"): pipeline \"%s\" runs", what, name, p->name);
        return NULL;
    }
    const char *why = NULL;
    vt_pipe_stage_opts o = {0};
    if (opts)
        o = *opts;
    if (!fn)
        why = "no function (NULL)";
    else if (!*name)
        why = "empty name";
    else if (role == VT__ROLE_SOURCE && p->n)
        why = "the source must be the first stage";
    else if (role != VT__ROLE_SOURCE && !p->n)
        why = "add the source first";
    else if (p->n && p->st[p->n - 1]->role == VT__ROLE_SINK)
        why = "the pipeline ends with its sink already";
    else if (role != VT__ROLE_SINK && (item_size == 0 || item_size > VT_CHAN_ELEM_MAX))
        why = "item size outside 1 .. VT_CHAN_ELEM_MAX";
    else
        why = bad_opts(&o, role);
    if (why) {
        build_error(p, VT_EINVAL, "%s(\"%s\"): %s", what, name, why);
        return NULL;
    }
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 4;
        vt_pipe_stage **st = vt_realloc(p->st, p->cap * sizeof *st, cap * sizeof *st);
        if (!st) {
            build_error(p, VT_ENOMEM, "%s(\"%s\"): out of memory", what, name);
            return NULL;
        }
        p->st = st;
        p->cap = cap;
    }
    vt_pipe_stage *s = alloc_lines(sizeof *s);
    char *copy = s ? vt_strdup(name) : NULL;
    if (!copy) {
        free_lines(s, sizeof *s);
        build_error(p, VT_ENOMEM, "%s(\"%s\"): out of memory", what, name);
        return NULL;
    }
    s->p = p;
    s->name = copy;
    s->index = (uint32_t)p->n;
    s->role = (uint8_t)role;
    s->kind = o.kind;
    s->conc = o.kind == VT_PIPE_PARALLEL ? o.concurrency : 1;
    s->unordered = o.kind == VT_PIPE_PARALLEL && o.unordered;
    s->retry = o.retry;
    if (s->retry.max_attempts == 0)
        s->retry.max_attempts = 1;
    s->on_fail = o.on_fail;
    s->on_skip = o.on_skip;
    s->on_skip_ud = o.on_skip_ud;
    s->in_size = p->n ? p->st[p->n - 1]->out_size : 0;
    s->out_size = role == VT__ROLE_SINK ? 0 : item_size;
    s->ud = ud;
    if (role == VT__ROLE_SOURCE)
        s->fn.source = (vt_pipe_source_fn)fn;
    else if (role == VT__ROLE_SINK)
        s->fn.sink = (vt_pipe_sink_fn)fn;
    else
        s->fn.stage = (vt_pipe_fn)fn;
    p->st[p->n++] = s;
    return s;
}

/* Function pointers travel through add() as data pointers: POSIX (dlsym)
 * guarantees the round trip, and every target vitte supports has one
 * pointer size. */
#define FN_AS_DATA(fn) ((void *)(uintptr_t)(fn))

vt_pipe_stage *vt_pipeline_add_source(vt_pipeline *p, const char *name, size_t item_size,
                                      vt_pipe_source_fn fn, void *ud,
                                      const vt_pipe_stage_opts *opts)
{
    return add(p, "vt_pipeline_add_source", VT__ROLE_SOURCE, name, item_size,
               fn ? FN_AS_DATA(fn) : NULL, ud, opts);
}

vt_pipe_stage *vt_pipeline_add_stage(vt_pipeline *p, const char *name, size_t item_size,
                                     vt_pipe_fn fn, void *ud, const vt_pipe_stage_opts *opts)
{
    return add(p, "vt_pipeline_add_stage", VT__ROLE_STAGE, name, item_size,
               fn ? FN_AS_DATA(fn) : NULL, ud, opts);
}

vt_pipe_stage *vt_pipeline_add_sink(vt_pipeline *p, const char *name, vt_pipe_sink_fn fn, void *ud,
                                    const vt_pipe_stage_opts *opts)
{
    return add(p, "vt_pipeline_add_sink", VT__ROLE_SINK, name, 1, fn ? FN_AS_DATA(fn) : NULL, ud,
               opts);
}

vt_err vt_pipeline_start(vt_pipeline *p, vt_runtime *rt)
{
    if (!p)
        return VT_EINVAL;
    if (!rt) {
        vt__pipe_msg(p, "vt_pipeline_start(\"%s\"): NULL runtime", p->name);
        return VT_EINVAL;
    }
    if (p->first_err)
        return p->first_err;
    if (!p->n || p->st[0]->role != VT__ROLE_SOURCE || p->st[p->n - 1]->role != VT__ROLE_SINK) {
        vt__pipe_msg(p, "pipeline \"%s\" has no %s", p->name,
                     p->n && p->st[0]->role == VT__ROLE_SOURCE ? "sink" : "source");
        return VT_EINVAL;
    }
    int idle = 0;
    if (!atomic_compare_exchange_strong_explicit(&p->running, &idle, 1, memory_order_acq_rel,
                                                 memory_order_relaxed)) {
        vt__pipe_msg(p, "pipeline \"%s\" runs already", p->name);
        return VT_EBUSY;
    }
    vt_err e = vt__pipe_start(p, rt);
    if (e)
        atomic_store_explicit(&p->running, 0, memory_order_release);
    return e;
}

vt_err vt_pipeline_wait(vt_pipeline *p, int64_t deadline)
{
    if (!p)
        return VT_EINVAL;
    return vt__pipe_wait(p, deadline);
}

vt_err vt_pipeline_run(vt_pipeline *p, vt_runtime *rt)
{
    vt_err e = vt_pipeline_start(p, rt);
    if (e)
        return e;
    return vt_pipeline_wait(p, VT_FOREVER);
}

vt_err vt_pipeline_cancel(vt_pipeline *p)
{
    if (!p)
        return VT_EINVAL;
    if (atomic_load_explicit(&p->running, memory_order_acquire))
        vt__pipe_stop(p, VT__STOP_CANCELLED, VT_ECANCELED, "the pipeline was cancelled");
    return VT_OK;
}
