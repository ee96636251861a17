/* Reading and printing the pool's counters. Each worker writes its own
 * (see vt__count); here they are only read, so a snapshot may be a few
 * events old but never torn. */
#include <inttypes.h>
#include <string.h>

#include "sched_int.h"

static void read_worker(vt__wk *w, vt_worker_metrics *m)
{
    m->executed = vt__read(&w->m.finished) + vt__read(&w->m.frames);
    m->stolen = vt__read(&w->m.stolen);
    m->received = vt__read(&w->m.received);
    m->steal_attempts = vt__read(&w->m.steal_attempts);
    m->parks = vt__read(&w->m.parks);
    m->idle_ns = vt__read(&w->m.idle_ns);
    m->queue_depth = (uint64_t)vt__deque_size(&w->dq);
}

vt_err vt_pool_metrics_get(vt_pool *p, vt_pool_metrics *out, vt_worker_metrics *per_worker, size_t n)
{
    if (!p || !out)
        return VT_EINVAL;
    memset(out, 0, sizeof(*out));
    out->workers = p->nworkers;
    for (unsigned i = 0; i < p->nslots; i++) {
        vt_worker_metrics m;
        read_worker(&p->workers[i], &m);
        if (per_worker && i < n && i < p->nworkers)
            per_worker[i] = m;
        out->total.executed += m.executed;
        out->total.stolen += m.stolen;
        out->total.received += m.received;
        out->total.steal_attempts += m.steal_attempts;
        out->total.parks += m.parks;
        out->total.idle_ns += m.idle_ns;
        out->total.queue_depth += m.queue_depth;
    }
    out->injected = atomic_load_explicit(&p->ext_submitted, memory_order_relaxed);
    out->inject_depth = vt__squeue_count(&p->sq);
    if (p->opts.deterministic) {
        vt__spin_lock(&p->det_lock);
        out->inject_depth += p->det_count;
        vt__spin_unlock(&p->det_lock);
    }
    out->timers_pending = vt__timers_pending(p->timers);
    out->timers_fired = vt__timers_fired(p->timers);
    out->cancelled = atomic_load_explicit(&p->cancelled, memory_order_relaxed);
    return VT_OK;
}

static void print_row(FILE *f, const char *name, const vt_worker_metrics *m)
{
    fprintf(f, "%-8s %12" PRIu64 " %10" PRIu64 " %10" PRIu64 " %12" PRIu64 " %8" PRIu64 " %12.3f %8" PRIu64 "\n",
            name, m->executed, m->stolen, m->received, m->steal_attempts, m->parks, (double)m->idle_ns / 1e9,
            m->queue_depth);
}

vt_err vt_pool_metrics_print(vt_pool *p, FILE *f)
{
    if (!p || !f)
        return VT_EINVAL;
    vt_pool_metrics t;
    vt_worker_metrics w[VT_POOL_MAX_WORKERS];
    vt_pool_metrics_get(p, &t, w, VT_POOL_MAX_WORKERS);
    static const char *policies[] = {"lifo", "fifo", "priority", "fair"};
    fprintf(f, "pool: %u worker%s, policy %s%s\n", t.workers, t.workers == 1 ? "" : "s",
            policies[p->opts.policy], p->opts.deterministic ? ", deterministic" : "");
    fprintf(f, "%-8s %12s %10s %10s %12s %8s %12s %8s\n", "worker", "executed", "stolen", "received",
            "steal-tries", "parks", "idle-s", "queued");
    char name[16];
    for (unsigned i = 0; i < t.workers; i++) {
        snprintf(name, sizeof(name), "%u", i);
        print_row(f, name, &w[i]);
    }
    print_row(f, "total", &t.total);
    fprintf(f, "injected %" PRIu64 " (waiting %" PRIu64 "), timers pending %" PRIu64 " fired %" PRIu64
               ", cancelled %" PRIu64 "\n",
            t.injected, t.inject_depth, t.timers_pending, t.timers_fired, t.cancelled);
    return VT_OK;
}
