/* ctx.c — what a task's body can do through its context: report, log,
 * fail with a message, leave a result, read its dependencies' results and
 * add subtasks. Every call is made by the body itself, so the task's cold
 * record has one writer. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "task/graph.h"

VT_INTERNAL vt_task *vt__graph_lookup(const vt_graph *g, const char *name);

#define LOG_MAX ((size_t)64 << 10)

vt_task *vt_ctx_task(vt_task_ctx *ctx)
{
    return ctx ? ctx->t : NULL;
}

unsigned vt_ctx_attempt(vt_task_ctx *ctx)
{
    return ctx ? ctx->attempt : 0;
}

int vt_ctx_worker(vt_task_ctx *ctx)
{
    return ctx ? ctx->worker : -1;
}

int vt_ctx_cancelled(vt_task_ctx *ctx)
{
    if (!ctx)
        return 0;
    vt__run *x = ctx->x;
    if (atomic_load_explicit(&x->stop, memory_order_acquire))
        return 1;
    vt__cold *c = vt__cold_peek(ctx->t);
    if (c && (atomic_load_explicit(&c->stopped, memory_order_acquire) ||
              (c->group && atomic_load_explicit(&c->group->cancelled_parity,
                                                memory_order_acquire) == (uint8_t)(x->parity | 1))))
        return 1;
    return (ctx->t->bits & VT__B_ASYNC) && vt_cancelled();
}

void vt_ctx_progress(vt_task_ctx *ctx, double fraction)
{
    if (!ctx || !ctx->x->mon)
        return;
    if (!(fraction >= 0))
        fraction = 0;
    if (fraction > 1)
        fraction = 1;
    char nb[32];
    vt_event ev;
    vt__event_init(ctx->x, &ev, VT_EV_PROGRESS, ctx->t, ctx->attempt, nb);
    ev.progress = fraction;
    vt__monitor_emit(ctx->x->mon, &ev);
}

/* Appends line + '\n' to the task's log, dropping the oldest whole lines
 * beyond LOG_MAX. */
static void log_append(vt__cold *c, const char *line, size_t n)
{
    if (n + 1 > LOG_MAX) {
        line += n + 1 - LOG_MAX + 1;
        n = LOG_MAX - 2;
    }
    size_t need = c->log_len + n + 2;
    if (need > LOG_MAX) {
        size_t drop = need - LOG_MAX;
        char *nl = memchr(c->log + drop, '\n', c->log_len - drop);
        drop = nl ? (size_t)(nl - c->log) + 1 : c->log_len;
        memmove(c->log, c->log + drop, c->log_len - drop);
        c->log_len -= drop;
        need = c->log_len + n + 2;
    }
    if (need > c->log_cap) {
        size_t ncap = c->log_cap ? c->log_cap : 256;
        while (ncap < need)
            ncap *= 2;
        char *nlog = vt_realloc(c->log, c->log_cap, ncap);
        if (!nlog)
            return;
        c->log = nlog;
        c->log_cap = ncap;
    }
    memcpy(c->log + c->log_len, line, n);
    c->log_len += n;
    c->log[c->log_len++] = '\n';
    c->log[c->log_len] = '\0';
}

void vt_ctx_log(vt_task_ctx *ctx, vt_log_level level, const char *fmt, ...)
{
    if (!ctx || !fmt)
        return;
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1;
    vt__cold *c = vt__cold_get(ctx->t);
    if (c)
        log_append(c, buf, len);
    char nb[32];
    const char *name = vt__task_name(ctx->t, nb, sizeof nb);
    if (vt_log_enabled(level))
        vt_log(level, "task", "%s: %s", name, buf);
    if (ctx->x->mon) {
        vt_event ev;
        vt__event_init(ctx->x, &ev, VT_EV_LOG, ctx->t, ctx->attempt, nb);
        ev.level = level;
        ev.msg = buf;
        vt__monitor_emit(ctx->x->mon, &ev);
    }
}

vt_err vt_ctx_fail(vt_task_ctx *ctx, const char *fmt, ...)
{
    if (!ctx)
        return VT_EFAILED;
    vt__cold *c = vt__cold_get(ctx->t);
    if (!c || !fmt)
        return VT_EFAILED;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char *m = vt_strdup(buf);
    if (m) {
        if (c->errmsg)
            vt_free(c->errmsg, strlen(c->errmsg) + 1);
        c->errmsg = m;
    }
    return VT_EFAILED;
}

vt_err vt_ctx_set_result(vt_task_ctx *ctx, const void *data, size_t len)
{
    if (!ctx || (!data && len))
        return VT_EINVAL;
    if (len > VT_RESULT_MAX)
        return VT_ERANGE;
    vt__cold *c = vt__cold_get(ctx->t);
    if (!c)
        return VT_ENOMEM;
    void *copy = vt_alloc(len ? len : 1);
    if (!copy)
        return VT_ENOMEM;
    if (len)
        memcpy(copy, data, len);
    if (c->result)
        vt_free(c->result, c->result_len ? c->result_len : 1);
    c->result = copy;
    c->result_len = len;
    return VT_OK;
}

static int precedes(vt_task *d, vt_task *t)
{
    int found = 0;
    VT__FOREACH_SUCC(d, s, found |= s == t);
    return found;
}

vt_err vt_ctx_dep_result(vt_task_ctx *ctx, const char *dep, const void **data, size_t *len)
{
    if (!ctx || !dep)
        return VT_EINVAL;
    vt_task *t = ctx->t;
    vt_graph *g = t->g;
    vt_task *d = NULL;
    vt__cold *c = vt__cold_peek(t);
    if (t->bits & VT__B_SUB) {
        /* A sibling, by its short name or its full one. */
        vt__cold *pc = vt__cold_peek(c->parent);
        size_t dl = strlen(dep);
        for (uint32_t i = 0; i < pc->nsubs && !d; i++) {
            const char *full = vt__cold_peek(pc->subs[i])->name;
            const char *slash = strrchr(full, '/');
            if (!strcmp(full, dep) || (slash && strlen(slash + 1) == dl && !strcmp(slash + 1, dep)))
                d = pc->subs[i];
        }
    } else {
        d = vt__graph_lookup(g, dep);
    }
    if (!d || !precedes(d, t))
        return VT_ENOENT;
    vt__cold *dc = vt__cold_peek(d);
    if (!dc || !dc->result)
        return VT_ENOENT;
    if (data)
        *data = dc->result;
    if (len)
        *len = dc->result_len;
    return VT_OK;
}

static vt_task *ctx_add(vt_task_ctx *ctx, const char *name, vt_task_fn fn, void *data, uint8_t bits)
{
    if (!ctx)
        return NULL;
    vt_err e = VT_EINVAL;
    vt_task *s = NULL;
    if (fn && (!name || (*name && !strchr(name, '/'))))
        s = vt__sub_new(ctx->t, name, fn, data, bits, &e);
    if (!s) {
        /* Recorded as the parent's failure: its body's success will not
         * stand without the subtask it asked for. */
        vt__cold *c = vt__cold_get(ctx->t);
        if (c && !c->errmsg) {
            char buf[256];
            snprintf(buf, sizeof buf, "vt_ctx_add(\"%s\"): %s", name ? name : "(unnamed)",
                     !fn ? "no body (NULL function)" : vt_strerror(e));
            c->errmsg = vt_strdup(buf);
        }
        if (c)
            c->sub_error = e;
    }
    return s;
}

vt_task *vt_ctx_add(vt_task_ctx *ctx, const char *name, vt_task_fn fn, void *data)
{
    return ctx_add(ctx, name, fn, data, 0);
}

vt_task *vt_ctx_add_async(vt_task_ctx *ctx, const char *name, vt_task_fn fn, void *data)
{
    return ctx_add(ctx, name, fn, data, VT__B_ASYNC | VT__B_SLOW);
}
