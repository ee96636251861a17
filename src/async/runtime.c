/* The runtime: a pool of workers, the fibers' stacks, the root scope; and
 * the ways in (vt_runtime_main, vt_main) and out (shutdown). */
#include <stdio.h>
#include <string.h>

#include "fiber.h"

/* Handles and timer arguments name a runtime by a small slot number, so
 * that a stale one finds nothing rather than freed memory. */
static _Atomic(vt_runtime *) registry[VT__RUNTIMES_MAX + 1];
static _Atomic uint64_t next_uid = 1;

vt_runtime *vt__runtime_by_slot(unsigned slot)
{
    if (slot == 0 || slot > VT__RUNTIMES_MAX)
        return NULL;
    return atomic_load_explicit(&registry[slot], memory_order_acquire);
}

void vt_runtime_opts_init(vt_runtime_opts *opts)
{
    if (opts)
        memset(opts, 0, sizeof(*opts));
}

vt_runtime *vt__runtime_self(void)
{
    vt__fib *self = vt__fiber_self();
    if (self)
        return self->rt;
    vt_pool *p = vt_pool_current();
    if (!p)
        return NULL;
    for (unsigned i = 1; i <= VT__RUNTIMES_MAX; i++) {
        vt_runtime *rt = atomic_load_explicit(&registry[i], memory_order_acquire);
        if (rt && rt->pool == p)
            return rt;
    }
    return NULL;
}

vt_runtime *vt_runtime_current(void)
{
    return vt__runtime_self();
}

vt_pool *vt_runtime_pool(vt_runtime *rt)
{
    return rt ? rt->pool : NULL;
}

int vt__runtime_closing(vt_runtime *rt)
{
    return atomic_load_explicit(&rt->closing, memory_order_acquire);
}

const vt_runtime_opts *vt__runtime_opts(vt_runtime *rt)
{
    return &rt->opts;
}

_Atomic(struct vt__netpoll *) *vt__runtime_netpoll_slot(vt_runtime *rt)
{
    return &rt->netpoll;
}

_Atomic(struct vt__blocking *) *vt__runtime_blocking_slot(vt_runtime *rt)
{
    return &rt->blocking;
}

static void runtime_release(vt_runtime *rt)
{
    vt__netpoll_free(atomic_exchange(&rt->netpoll, NULL));
    vt__blocking_free(atomic_exchange(&rt->blocking, NULL));
    vt_pool_free(rt->pool);
    vt__stacks_free(rt->stacks);
    if (rt->slot)
        atomic_store_explicit(&registry[rt->slot], NULL, memory_order_release);
    vt_free(rt->fw_raw, sizeof(vt__fworker) * rt->nfw + VT_CACHE_LINE);
    vt_free(rt, sizeof(*rt));
}

vt_err vt_runtime_new(vt_runtime **out, const vt_runtime_opts *opts)
{
    if (!out)
        return VT_EINVAL;
    vt_runtime_opts o;
    if (opts)
        o = *opts;
    else
        vt_runtime_opts_init(&o);
    if (o.stack_size && (o.stack_size < VT_STACK_MIN || o.stack_size > VT_STACK_MAX))
        return VT_EINVAL;
    if (!o.stack_size)
        o.stack_size = VT_STACK_DEFAULT;
    if (!o.blocking_threads)
        o.blocking_threads = 16;
    vt_runtime *rt = vt_calloc(1, sizeof(*rt));
    if (!rt)
        return VT_ENOMEM;
    rt->opts = o;
    vt_err e = vt_pool_new(&rt->pool, &o.pool);
    if (e) {
        vt_free(rt, sizeof(*rt));
        return e;
    }
    rt->nfw = vt_pool_workers(rt->pool) + 1; /* workers, then VT_RUN's guest */
    rt->fw_raw = vt_calloc(1, sizeof(vt__fworker) * rt->nfw + VT_CACHE_LINE);
    if (!rt->fw_raw) {
        runtime_release(rt);
        return VT_ENOMEM;
    }
    rt->fw = (vt__fworker *)(((uintptr_t)rt->fw_raw + VT_CACHE_LINE - 1) & ~(uintptr_t)(VT_CACHE_LINE - 1));
    for (unsigned i = 0; i < rt->nfw; i++) {
        rt->fw[i].rt = rt;
        /* Deterministic mode replays from the seed; else any start will do. */
        rt->fw[i].rng = (o.pool.deterministic ? o.pool.seed : (uint64_t)vt_now_ns()) * 0x100000001b3u + i;
    }
    e = vt__stacks_new(&rt->stacks, o.stack_size, !o.no_guard_pages, rt);
    if (e) {
        runtime_release(rt);
        return e;
    }
    vt__scope_init(&rt->root, rt, NULL);
    rt->uid = atomic_fetch_add(&next_uid, 1);
    for (unsigned i = 1; i <= VT__RUNTIMES_MAX && !rt->slot; i++) {
        vt_runtime *none = NULL;
        if (atomic_compare_exchange_strong(&registry[i], &none, rt))
            rt->slot = i;
    }
    if (!rt->slot) {
        vt_log(VT_LOG_ERROR, "async", "more than %d runtimes at once", VT__RUNTIMES_MAX);
        runtime_release(rt);
        return VT_EBUSY;
    }
    *out = rt;
    return VT_OK;
}

static int own_worker(vt_runtime *rt)
{
    return vt_pool_current() == rt->pool;
}

vt_err vt_runtime_drive(vt_runtime *rt)
{
    if (!rt)
        return VT_EINVAL;
    if (!rt->opts.pool.deterministic)
        return VT_ENOTSUP;
    if (own_worker(rt) || vt__fiber_self())
        return VT_ESTATE;
    vt_err e = vt_pool_wait_idle(rt->pool, VT_FOREVER);
    if (e)
        return e;
    return atomic_load_explicit(&rt->root.live, memory_order_acquire) ? VT_EBUSY : VT_OK;
}

vt_err vt_runtime_shutdown(vt_runtime *rt, int64_t deadline)
{
    if (!rt)
        return VT_EINVAL;
    if (own_worker(rt) || vt__fiber_self())
        return VT_ESTATE;
    if (rt->shut)
        return VT_ECLOSED;
    atomic_store_explicit(&rt->closing, 1, memory_order_release);
    vt__scope_cancel(&rt->root);
    vt_err e;
    if (rt->opts.pool.deterministic) {
        e = vt_pool_run_until(rt->pool, deadline == VT_FOREVER ? VT_FOREVER : deadline);
        if (!e && atomic_load_explicit(&rt->root.live, memory_order_acquire))
            e = VT_ETIMEDOUT;
    } else {
        e = vt__scope_wait_empty(&rt->root, deadline, 0);
        /* Fibers of scopes made by vt_scope_new are not counted in the
         * root's; cancelled with it, they end soon. A rare path: poll. */
        vt_runtime_stats st;
        while (!e && vt_runtime_stats_get(rt, &st) == VT_OK && st.live) {
            if (deadline != VT_FOREVER && vt_now_ns() >= deadline)
                e = VT_ETIMEDOUT;
            else
                vt__sleep_ns(200 * 1000);
        }
    }
    if (e)
        return e;
    e = vt_pool_shutdown(rt->pool, VT_SHUTDOWN_DRAIN, deadline);
    if (e && e != VT_ECLOSED)
        return e;
    rt->shut = 1;
    return VT_OK;
}

void vt_runtime_free(vt_runtime *rt)
{
    if (!rt)
        return;
    if (own_worker(rt) || vt__fiber_self()) {
        vt_log(VT_LOG_ERROR, "async", "vt_runtime_free called from inside the runtime; runtime not freed");
        return;
    }
    if (!rt->shut)
        vt_runtime_shutdown(rt, VT_FOREVER);
    runtime_release(rt);
}

vt_err vt_runtime_main(const vt_runtime_opts *opts, vt_fiber_fn fn, void *arg, void **result)
{
    if (!fn)
        return VT_EINVAL;
    vt_runtime *rt;
    vt_err e = vt_runtime_new(&rt, opts);
    if (e)
        return e;
    vt_fiber_opts fo = {.name = "main", .runtime = rt};
    vt_fiber root;
    e = vt_fiber_spawn_ex(&root, fn, arg, &fo);
    if (!e) {
        if (rt->opts.pool.deterministic) {
            e = vt_runtime_drive(rt);
            vt_err a = vt_fiber_await(root, result, VT_NOW);
            if (!e)
                e = a == VT_ETIMEDOUT ? VT_EBUSY : a;
        } else {
            e = vt_fiber_await(root, result, VT_FOREVER);
        }
    }
    vt_runtime_free(rt);
    return e;
}

typedef struct main_call {
    int (*app)(int, char **);
    int argc;
    char **argv;
    int status;
} main_call;

static void *run_app(void *arg)
{
    main_call *c = arg;
    c->status = c->app(c->argc, c->argv);
    return NULL;
}

int vt_main(int (*app)(int argc, char **argv), int argc, char **argv)
{
    if (!app)
        return 1;
    main_call c = {app, argc, argv, 0};
    vt_err e = vt_runtime_main(NULL, run_app, &c, NULL);
    if (e) {
        fprintf(stderr, "vitte: %s\n", vt_strerror(e));
        return 1;
    }
    return c.status;
}
