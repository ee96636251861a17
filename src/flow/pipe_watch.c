/* pipe_watch.c — what can be seen of a pipeline while it runs: a snapshot
 * of its counters, and its stages as Graphviz DOT. Both only read the
 * counters the workers keep (relaxed atomics): no lock a worker takes. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "flow_int.h"

static uint64_t ld(const _Atomic uint64_t *c)
{
    return atomic_load_explicit((_Atomic uint64_t *)c, memory_order_acquire);
}

static void stage_stats(const vt_pipe_stage *s, vt_pipe_stage_stats *o)
{
    memset(o, 0, sizeof *o);
    o->name = s->name;
    o->kind = s->kind;
    o->concurrency = s->kind == VT_PIPE_PARALLEL ? s->conc : 1;
    /* Out before in: a stage counts what it took before what it passed on,
     * so a snapshot never shows more out than in. */
    o->items_out = ld(&s->c_out);
    o->items_in = ld(&s->c_in);
    o->dropped = ld(&s->c_dropped);
    o->failures = ld(&s->c_failures);
    o->retries = ld(&s->c_retries);
    o->skipped = ld(&s->c_skipped);
    o->queued = ld(&s->c_queued);
    o->queue_max = ld(&s->c_queue_max);
    o->active =
        s->kind == VT_PIPE_SERIAL
            ? (unsigned)(atomic_load_explicit((_Atomic uint64_t *)&s->turn, memory_order_relaxed) &
                         1)
            : atomic_load_explicit((_Atomic unsigned *)&s->c_active, memory_order_relaxed);
    o->busy_ns = atomic_load_explicit((_Atomic int64_t *)&s->c_busy_ns, memory_order_relaxed);
    o->ns_per_item = o->items_in ? (double)o->busy_ns / (double)o->items_in : 0;
    o->last_error =
        (vt_err)atomic_load_explicit((_Atomic int *)&s->c_last_err, memory_order_relaxed);
}

vt_err vt_pipeline_stats_get(vt_pipeline *p, vt_pipeline_stats *out, vt_pipe_stage_stats *stages,
                             size_t n)
{
    if (!p || !out || (n && !stages))
        return VT_EINVAL;
    memset(out, 0, sizeof *out);
    out->stages = p->n;
    int64_t ended = atomic_load_explicit(&p->ended_ns, memory_order_acquire);
    out->running = atomic_load_explicit(&p->running, memory_order_acquire) && !ended;
    out->started_ns = atomic_load_explicit(&p->started_ns, memory_order_relaxed);
    out->ended_ns = ended;
    if (p->ran) {
        out->batch = p->batch;
        out->max_batches = p->nb;
        out->max_items = (uint64_t)p->nb * p->batch;
        out->batches_used = atomic_load_explicit(&p->c_used, memory_order_relaxed);
    }
    /* In flight: made by the source, and not yet consumed, dropped,
     * skipped or lost to a stop anywhere after it. Counters are read one
     * by one while they move: what was made first, then what is gone, so
     * that the figure never exceeds what was in flight when "made" was
     * read — never above the bound — at the price of being low (0 at
     * worst) when items came and went during the reading. */
    uint64_t made = p->n ? ld(&p->st[0]->c_out) : 0;
    uint64_t gone = 0;
    for (size_t i = 1; i < p->n; i++) {
        const vt_pipe_stage *s = p->st[i];
        gone += ld(&s->c_dropped) + ld(&s->c_skipped) + ld(&s->c_lost);
        if (s->role == VT__ROLE_SINK)
            gone += ld(&s->c_out);
    }
    out->items_in_flight = made > gone ? made - gone : 0;
    for (size_t i = 0; i < n && i < p->n; i++)
        stage_stats(p->st[i], &stages[i]);
    return VT_OK;
}

static const char *kind_name(const vt_pipe_stage *s)
{
    if (s->role == VT__ROLE_SOURCE)
        return "source";
    if (s->kind == VT_PIPE_SERIAL)
        return s->role == VT__ROLE_SINK ? "sink, serial" : "serial";
    return s->role == VT__ROLE_SINK
               ? (s->unordered ? "sink, parallel, unordered" : "sink, parallel")
               : (s->unordered ? "parallel, unordered" : "parallel");
}

vt_err vt_pipeline_write_dot(vt_pipeline *p, FILE *out)
{
    if (!p || !out)
        return VT_EINVAL;
    fputs("digraph ", out);
    vt__dot_str(out, p->name);
    fputs(" {\n  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\"];\n", out);
    char buf[512];
    for (size_t i = 0; i < p->n; i++) {
        const vt_pipe_stage *s = p->st[i];
        vt_pipe_stage_stats st;
        stage_stats(s, &st);
        char conc[32] = "";
        if (s->kind == VT_PIPE_PARALLEL) {
            if (s->conc)
                snprintf(conc, sizeof conc, " x%u", s->conc);
            else
                snprintf(conc, sizeof conc, " x any");
        }
        int n = snprintf(buf, sizeof buf, "%s\n(%s%s)\nin %" PRIu64 ", out %" PRIu64, s->name,
                         kind_name(s), conc, st.items_in, st.items_out);
        if (n > 0 && (size_t)n < sizeof buf && (st.dropped || st.skipped))
            n += snprintf(buf + n, sizeof buf - (size_t)n,
                          "\ndropped %" PRIu64 ", skipped %" PRIu64, st.dropped, st.skipped);
        if (n > 0 && (size_t)n < sizeof buf && st.items_in)
            snprintf(buf + n, sizeof buf - (size_t)n, "\n%.1f ns/item", st.ns_per_item);
        fprintf(out, "  s%zu [label=", i);
        vt__dot_str(out, buf);
        /* A failure that was neither retried nor skipped stopped the run. */
        int stopped_it = st.failures > st.retries + st.skipped;
        fprintf(out, ", fillcolor=%s];\n",
                stopped_it    ? "tomato"
                : st.skipped  ? "lightyellow"
                : st.active   ? "gold"
                : st.items_in ? "palegreen"
                              : "white");
    }
    for (size_t i = 1; i < p->n; i++) {
        vt_pipe_stage_stats st;
        stage_stats(p->st[i], &st);
        fprintf(out, "  s%zu -> s%zu [label=\"queue %" PRIu64 "\"];\n", i - 1, i, st.queued);
    }
    fputs("}\n", out);
    if (fflush(out) || ferror(out))
        return vt_err_from_errno(errno ? errno : EIO);
    return VT_OK;
}
