/* Fibers: spawn, await, yield, park and unpark, on sched's workers.
 *
 * A ready fiber is a closure job vt__fiber_job(fiber) on the pool, so it
 * is stolen, balanced and counted like any job. The job switches from the
 * worker's own stack (its host context) into the fiber. When the fiber
 * suspends, it takes the worker's next job itself (vt_worker_take): if
 * that is another fiber it switches straight to it, without passing
 * through the host; otherwise back to the host, which runs the job. What
 * must happen to the fiber that was left — marking it parked, queueing it
 * behind the others after a yield, recycling it after it ended — happens in
 * the context that runs next, once nobody is on the old stack any more:
 * a waker on another worker may resume a parking fiber at any moment after
 * that, never before. */
#include <string.h>

#include "fiber.h"

#if defined(VT_SANITIZE_ADDRESS)
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(VT_SANITIZE_THREAD)
#include <sanitizer/tsan_interface.h>
#endif

static _Thread_local vt__fworker *tls_fw __attribute__((tls_model("initial-exec")));

/* Not inlined, and opaque to the optimiser: a fiber that suspends may come
 * back on another thread, so a thread-local address computed before a
 * switch must never be reused after it. */
static __attribute__((noinline)) vt__fworker *fw_here(void)
{
    vt__fworker *fw = tls_fw;
    __asm__ volatile("" : "+r"(fw));
    return fw;
}

vt__fib *vt__fiber_self(void)
{
    vt__fworker *fw = fw_here();
    return fw ? fw->current : NULL;
}

static uint64_t splitmix(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

uint64_t vt__rand(void)
{
    static _Thread_local uint64_t thread_state;
    vt__fworker *fw = fw_here();
    if (fw)
        return splitmix(&fw->rng);
    if (!thread_state)
        thread_state = (uint64_t)(uintptr_t)&thread_state ^ (uint64_t)vt_now_ns();
    return splitmix(&thread_state);
}

/* The life a fiber is in: known to whoever owns that life (its spawner,
 * its finisher, its reaper). */
static inline uint32_t life_of(vt__fib *f)
{
    return atomic_load_explicit(&f->gen, memory_order_relaxed) & VT__LIFE_MASK;
}

static inline void count(_Atomic uint64_t *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1, memory_order_relaxed);
}

/* ---- Switching ------------------------------------------------------------------------ */

static void on_resume(vt__fworker *fw);

/* From the running context (fiber self, or the host when NULL) to fiber to
 * (or the host when NULL). Returns, once this context runs again, the
 * worker it runs on. */
static vt__fworker *switch_to(vt__fworker *fw, vt__fib *self, vt__fib *to, int exiting)
{
    vt__ctx *from_ctx = self ? &self->ctx : &fw->host;
    vt__ctx *to_ctx = to ? &to->ctx : &fw->host;
    fw->current = to;
    if (to)
        to->fw = fw;
    count(&fw->switches);
#if defined(VT_SANITIZE_ADDRESS)
    void **fake = self ? &self->asan_fake : &fw->host_fake;
    __sanitizer_start_switch_fiber(exiting ? NULL : fake, to ? (const void *)to->stack_lo : fw->host_stack_lo,
                                   to ? to->stack_size : fw->host_stack_size);
#else
    (void)exiting;
#endif
#if defined(VT_SANITIZE_THREAD)
    __tsan_switch_to_fiber(to ? to->tsan_fiber : fw->host_tsan, 0);
#endif
    vt__fworker *now = vt__ctx_switch(from_ctx, to_ctx, fw);
#if defined(VT_SANITIZE_ADDRESS)
    __sanitizer_finish_switch_fiber(*fake, NULL, NULL);
#endif
    return now;
}

static void fiber_main(void *arg);

static void make_ready(vt__fib *f)
{
    atomic_store_explicit(&f->fstate, VT__FS_READY, memory_order_relaxed);
    vt_err e;
    while ((e = vt_pool_submit(f->rt->pool, vt__fiber_job, f)) == VT_ENOMEM)
        vt__thread_yield(); /* a deque could not grow: wait for memory rather than lose the fiber */
    if (e)
        vt_log(VT_LOG_ERROR, "async", "fiber '%s' could not be queued: %s", f->name, vt_strerror(e));
}

/* Suspends self (act says why) and runs the worker's next fiber, or
 * returns to the host. A yield with nothing else to run returns at once. */
static void suspend(vt__fib *self, int act)
{
    vt__fworker *fw = self->fw;
    vt_job_fn fn;
    void *arg;
    vt__fib *next = NULL;
    if (vt_worker_take(&fn, &arg)) {
        if (fn == vt__fiber_job) {
            next = arg;
        } else {
            fw->pending_fn = fn;
            fw->pending_arg = arg;
        }
    } else if (act == VT__ACT_YIELD) {
        return;
    }
    fw->prev = self;
    fw->prev_action = act;
    if (next)
        atomic_store_explicit(&next->fstate, VT__FS_RUNNING, memory_order_relaxed);
    vt__fworker *now = switch_to(fw, self, next, act == VT__ACT_EXIT);
    on_resume(now);
}

void vt__fiber_park(vt__fib *self)
{
    atomic_store_explicit(&self->fstate, VT__FS_WAITING, memory_order_relaxed);
    suspend(self, VT__ACT_PARK);
    atomic_store_explicit(&self->fstate, VT__FS_RUNNING, memory_order_relaxed);
}

void vt__fiber_unpark(vt__fib *f)
{
    uint32_t s = atomic_load_explicit(&f->run, memory_order_acquire);
    for (;;) {
        if (s == VT__RUN_PARKING) {
            if (atomic_compare_exchange_weak_explicit(&f->run, &s, VT__RUN_NOTIFIED, memory_order_acq_rel,
                                                      memory_order_acquire))
                return;
        } else if (s == VT__RUN_PARKED) {
            if (atomic_compare_exchange_weak_explicit(&f->run, &s, VT__RUN_RUNNING, memory_order_acq_rel,
                                                      memory_order_acquire)) {
                make_ready(f);
                return;
            }
        } else {
            vt_log(VT_LOG_ERROR, "async", "fiber '%s' woken while not waiting", f->name);
            return;
        }
    }
}

static void release(vt__fworker *fw, vt__fib *f)
{
    atomic_store_explicit(&f->fstate, VT__FS_FREE, memory_order_relaxed);
    /* Only the one who gave the handle up gets here: no RMW needed. Then
     * wait out any vt_fiber_cancel that pinned it before the handle went
     * stale (seq_cst: of the two, one sees the other's write). */
    atomic_store_explicit(&f->gen, atomic_load_explicit(&f->gen, memory_order_relaxed) + 1, memory_order_seq_cst);
    while (atomic_load_explicit(&f->pins, memory_order_seq_cst))
        vt__cpu_relax();
    vt__fworker *here = fw_here();
    if (!fw && here && here->rt == f->rt)
        fw = here;
    vt__stacks_put(f->rt->stacks, fw, f);
}

/* The fiber is off its stack: publish that it ended, to its awaiter or, if
 * nobody will await it, by recycling it. */
static void fiber_exited(vt__fworker *fw, vt__fib *f)
{
    uintptr_t j = atomic_load_explicit(&f->join, memory_order_acquire);
    for (;;) {
        if (j == VT__JOIN_DETACHED) {
            release(fw, f);
            return;
        }
        if (VT__JOIN_CODE(j) == VT__JOIN_OPEN_CODE) {
            if (atomic_compare_exchange_weak_explicit(&f->join, &j, VT__JOIN_DONE(life_of(f)), memory_order_acq_rel,
                                                      memory_order_acquire))
                return;
            continue;
        }
        if (atomic_compare_exchange_weak_explicit(&f->join, &j, VT__JOIN_BUSY, memory_order_acq_rel,
                                                  memory_order_acquire))
            break;
    }
    vt__waiter *w = (vt__waiter *)j;
    int won = vt__waiter_claim(w);
    atomic_store_explicit(&f->join, VT__JOIN_DONE(life_of(f)), memory_order_release);
    if (won)
        vt__waiter_wake(w, VT_OK);
}

static void on_resume(vt__fworker *fw)
{
    vt__fib *prev = fw->prev;
    if (!prev)
        return;
    int act = fw->prev_action;
    fw->prev = NULL;
    fw->prev_action = VT__ACT_NONE;
    switch (act) {
    case VT__ACT_PARK: {
        uint32_t s = VT__RUN_PARKING;
        if (!atomic_compare_exchange_strong_explicit(&prev->run, &s, VT__RUN_PARKED, memory_order_acq_rel,
                                                     memory_order_acquire)) {
            /* Woken while it was still on its stack. */
            atomic_store_explicit(&prev->run, VT__RUN_RUNNING, memory_order_relaxed);
            make_ready(prev);
        }
        break;
    }
    case VT__ACT_YIELD:
        atomic_store_explicit(&prev->fstate, VT__FS_READY, memory_order_relaxed);
        while (vt_pool_submit_later(prev->rt->pool, vt__fiber_job, prev) == VT_ENOMEM)
            vt__thread_yield();
        break;
    case VT__ACT_EXIT:
        fiber_exited(fw, prev);
        break;
    default:
        break;
    }
}

/* ---- The host: a worker's own stack ------------------------------------------------------- */

static _Thread_local uint64_t tls_host_uid;
static _Thread_local unsigned tls_host_index;

static vt__fworker *host_enter(vt_runtime *rt)
{
    int idx = vt_worker_index();
    if (idx < 0 || (unsigned)idx >= rt->nfw)
        idx = 0; /* the deterministic driver */
    vt__fworker *fw = &rt->fw[idx];
    if (tls_host_uid != rt->uid || tls_host_index != (unsigned)idx) {
        tls_host_uid = rt->uid;
        tls_host_index = (unsigned)idx;
        vt__fault_thread_init();
#if defined(VT_SANITIZE_ADDRESS)
        void *lo;
        size_t size;
        vt__thread_stack_bounds(&lo, &size);
        fw->host_stack_lo = lo;
        fw->host_stack_size = size;
#endif
#if defined(VT_SANITIZE_THREAD)
        fw->host_tsan = __tsan_get_current_fiber();
#endif
    }
    fw->rt = rt;
    return fw;
}

void vt__fiber_job(void *arg)
{
    vt__fib *f = arg;
    vt__fworker *saved = tls_fw;
    vt__fworker *fw = host_enter(f->rt);
    tls_fw = fw;
    atomic_store_explicit(&f->fstate, VT__FS_RUNNING, memory_order_relaxed);
    vt__fworker *now = switch_to(fw, NULL, f, 0);
    on_resume(now);
    while (fw->pending_fn) {
        vt_job_fn fn = fw->pending_fn;
        fw->pending_fn = NULL;
        fn(fw->pending_arg);
    }
    tls_fw = saved;
}

/* ---- A fiber's life ------------------------------------------------------------------------- */

static void fiber_main(void *arg)
{
    vt__fworker *fw = arg;
#if defined(VT_SANITIZE_ADDRESS)
    __sanitizer_finish_switch_fiber(NULL, NULL, NULL);
#endif
    on_resume(fw);
    vt__fib *self = fw->current;
    self->result = self->fn(self->arg);
    /* Structured: nothing it started outlives it. */
    if (self->kids.linked) {
        vt__scope_wait_empty(&self->kids, VT_FOREVER, 0);
        vt__scope_detach(&self->kids);
    }
    if (self->kids.made_scopes)
        vt__scope_orphan_children(&self->kids);
    atomic_store_explicit(&self->fstate, VT__FS_DONE, memory_order_relaxed);
    count(&self->fw->finished);
    vt__fib *joiner = self->inline_joiner;
    if (joiner) {
        /* Its scope is the joiner's children, whose only waiter is the
         * joiner at its end: busy here, so no wake-up is due. */
        atomic_fetch_sub_explicit(&self->member->live, 1, memory_order_release);
        /* Its awaiter is suspended in await_inline: hand it the result
         * straight away (it recycles this fiber once we are off its stack). */
        self->inline_joiner = NULL;
        atomic_store_explicit(&self->join, VT__JOIN_DONE(life_of(self)), memory_order_release);
        atomic_store_explicit(&joiner->fstate, VT__FS_RUNNING, memory_order_relaxed);
        switch_to(self->fw, self, joiner, 1);
    } else {
        vt__scope_leave(self->member);
        suspend(self, VT__ACT_EXIT);
    }
    __builtin_unreachable();
}

int vt__fiber_cancel_seen(vt__fib *f)
{
    return atomic_load_explicit(&f->cancelled, memory_order_acquire) ||
           atomic_load_explicit(&f->member->cancelled, memory_order_acquire);
}

/* ---- Handles ---------------------------------------------------------------------------------
 * A handle is runtime slot (8 bits) | generation (24) | fiber index (32). */
static vt_fiber handle_of(vt__fib *f)
{
    return (vt_fiber){((uint64_t)f->rt->slot << 56) | ((uint64_t)life_of(f) << 32) | f->index};
}

static uint32_t handle_life(vt_fiber h)
{
    return (uint32_t)(h.id >> 32) & VT__LIFE_MASK;
}

static vt__fib *lookup(vt_fiber h)
{
    vt_runtime *rt = vt__runtime_by_slot((unsigned)(h.id >> 56));
    if (!rt)
        return NULL;
    vt__fib *f = vt__stacks_lookup(rt->stacks, (uint32_t)h.id);
    if (!f || (atomic_load_explicit(&f->gen, memory_order_acquire) & VT__LIFE_MASK) != handle_life(h) ||
        atomic_load_explicit(&f->fstate, memory_order_acquire) == VT__FS_FREE)
        return NULL;
    return f;
}

vt_err vt_fiber_spawn(vt_fiber *out, vt_fiber_fn fn, void *arg)
{
    return vt_fiber_spawn_ex(out, fn, arg, NULL);
}

vt_err vt_fiber_spawn_ex(vt_fiber *out, vt_fiber_fn fn, void *arg, const vt_fiber_opts *opts)
{
    static const vt_fiber_opts defaults;
    if (!opts)
        opts = &defaults;
    if (!fn || (!out && !opts->detached))
        return VT_EINVAL;
    if (opts->stack_size && (opts->stack_size < VT_STACK_MIN || opts->stack_size > VT_STACK_MAX))
        return VT_EINVAL;
    vt__fib *self = vt__fiber_self();
    vt_runtime *rt = opts->runtime ? opts->runtime : self ? self->rt : vt__runtime_self();
    if (!rt)
        return VT_ESTATE;
    struct vt_scope *scope = opts->scope;
    if (scope && scope->rt != rt)
        return VT_EINVAL;
    if (!scope)
        scope = self && self->rt == rt ? &self->kids : &rt->root;
    if (atomic_load_explicit(&rt->closing, memory_order_acquire) && scope == &rt->root)
        return VT_ECLOSED;
    if (atomic_load_explicit(&scope->closing, memory_order_acquire))
        return VT_ECLOSED;
    vt__fworker *fw = fw_here();
    if (fw && fw->rt != rt)
        fw = NULL;
    vt__fib *f = vt__stacks_get(rt->stacks, fw, opts->stack_size);
    if (!f)
        return VT_ENOMEM;
    if (!atomic_load_explicit(&f->gen, memory_order_relaxed))
        atomic_store_explicit(&f->gen, 1, memory_order_relaxed);
    f->fn = fn;
    f->arg = arg;
    f->result = NULL;
    f->fw = NULL;
    f->member = scope;
    /* Release: a stale handle's awaiter that reads this sees the new
     * generation too (join_refused). */
    atomic_store_explicit(&f->join, opts->detached ? VT__JOIN_DETACHED : VT__JOIN_OPEN(life_of(f)),
                          memory_order_release);
    atomic_store_explicit(&f->cancelled, 0, memory_order_relaxed);
    atomic_store_explicit(&f->masked, 0, memory_order_relaxed);
    atomic_store_explicit(&f->run, VT__RUN_RUNNING, memory_order_relaxed);
    atomic_store_explicit(&f->wait_what, NULL, memory_order_relaxed);
    f->park_linked = 0;
    f->inline_joiner = NULL;
    vt__scope_init(&f->kids, rt, scope);
    const char *name = opts->name ? opts->name : "fiber";
    size_t n = strlen(name);
    if (n >= VT_FIBER_NAME_MAX)
        n = VT_FIBER_NAME_MAX - 1;
    memcpy(f->name, name, n);
    f->name[n] = 0;
    if (self && scope == &self->kids && !self->kids.linked)
        vt__scope_attach(&self->kids);
    vt__scope_enter(scope);
    vt__ctx_make(&f->ctx, f->stack_lo, f->stack_size, fiber_main);
    if (out)
        *out = handle_of(f);
    if (fw)
        count(&fw->spawned);
    else
        atomic_fetch_add_explicit(&rt->spawned, 1, memory_order_relaxed);
    atomic_store_explicit(&f->fstate, VT__FS_READY, memory_order_release);
    vt_err e = vt_pool_submit(rt->pool, vt__fiber_job, f);
    if (e) {
        vt__scope_leave(scope);
        if (fw)
            atomic_store_explicit(&fw->spawned, atomic_load(&fw->spawned) - 1, memory_order_relaxed);
        else
            atomic_fetch_sub_explicit(&rt->spawned, 1, memory_order_relaxed);
        release(fw, f);
        if (out)
            out->id = 0;
        return e;
    }
    return VT_OK;
}

/* Await's fast path: a child of the caller that has not started and is
 * the newest job of this worker runs right here, and its end switches
 * straight back: no parking, no wake-up, no queueing. 1 when done. */
static int await_inline(vt__fib *self, vt__fib *f, uintptr_t open)
{
    vt_job_fn fn;
    void *arg;
    if (!vt_worker_take(&fn, &arg))
        return 0;
    if (fn != vt__fiber_job || arg != f) {
        /* Not it: back where it was (the newest end of this worker's deque). */
        while (vt_pool_submit(self->rt->pool, fn, arg) == VT_ENOMEM)
            vt__thread_yield();
        return 0;
    }
    uintptr_t expected = open;
    if (!atomic_compare_exchange_strong_explicit(&f->join, &expected, VT__JOIN_INLINE, memory_order_acq_rel,
                                                 memory_order_acquire)) {
        /* Detached or awaited elsewhere meanwhile: it runs as a job. */
        make_ready(f);
        return 0;
    }
    f->inline_joiner = self;
    atomic_store_explicit(&self->wait_what, "await", memory_order_relaxed);
    atomic_store_explicit(&self->wait_obj, f, memory_order_relaxed);
    atomic_store_explicit(&self->fstate, VT__FS_WAITING, memory_order_relaxed);
    atomic_store_explicit(&f->fstate, VT__FS_RUNNING, memory_order_relaxed);
    vt__fworker *fw = self->fw;
    fw->prev = NULL;
    vt__fworker *now = switch_to(fw, self, f, 0);
    on_resume(now);
    atomic_store_explicit(&self->wait_what, NULL, memory_order_relaxed);
    atomic_store_explicit(&self->fstate, VT__FS_RUNNING, memory_order_relaxed);
    return 1;
}

/* Why a handle of life `life` cannot be awaited or detached, the join word
 * being j: spent (VT_ENOENT), or someone else's (VT_EBUSY). A word of a
 * later life means the handle went stale since it was looked up. */
static vt_err join_refused(vt__fib *f, uintptr_t j, uint32_t life)
{
    if (j == VT__JOIN_DETACHED || j == VT__JOIN_REAPED)
        return VT_ENOENT;
    if ((atomic_load_explicit(&f->gen, memory_order_acquire) & VT__LIFE_MASK) != life)
        return VT_ENOENT;
    return VT_EBUSY;
}

vt_err vt_fiber_await(vt_fiber h, void **result, int64_t deadline)
{
    vt__fib *f = lookup(h);
    if (!f)
        return VT_ENOENT;
    if (f == vt__fiber_self())
        return VT_EDEADLK;
    vt__fib *self = vt__fiber_self();
    /* Everything below compares against words of this handle's life: the
     * slot may be reaped and reused by another fiber at any moment. */
    const uint32_t life = handle_life(h);
    const uintptr_t open = VT__JOIN_OPEN(life), done = VT__JOIN_DONE(life);
    uintptr_t j = atomic_load_explicit(&f->join, memory_order_acquire);
    /* Only for its own child and without a deadline: while the child runs
     * here, the caller cannot time out, and is cancelled with it. */
    if (j == open && self && deadline == VT_FOREVER && f->member == &self->kids &&
        atomic_load_explicit(&f->fstate, memory_order_acquire) == VT__FS_READY && await_inline(self, f, open))
        j = done;
    if (j != done) {
        if (j != open)
            return join_refused(f, j, life);
        vt__waiter w;
        vt__waiter_init(&w, "await", f, 0);
        uintptr_t expected = open;
        if (!atomic_compare_exchange_strong_explicit(&f->join, &expected, (uintptr_t)&w, memory_order_acq_rel,
                                                     memory_order_acquire)) {
            /* Never published, so nobody else can end this wait. */
            vt__waiter_wait(&w, VT_NOW);
            if (expected != done)
                return join_refused(f, expected, life);
        } else {
            vt_err e = vt__waiter_wait(&w, deadline);
            if (e != VT_OK) {
                /* Take the waiter back, unless the fiber ended and its
                 * finisher holds it for a moment. */
                for (;;) {
                    expected = (uintptr_t)&w;
                    if (atomic_compare_exchange_weak_explicit(&f->join, &expected, open, memory_order_acq_rel,
                                                              memory_order_acquire))
                        return e;
                    if (expected != VT__JOIN_BUSY && expected != (uintptr_t)&w)
                        return e;
                    vt__cpu_relax();
                }
            }
        }
    }
    /* Two awaiters may both have seen it done: one reaps. */
    j = done;
    if (!atomic_compare_exchange_strong_explicit(&f->join, &j, VT__JOIN_REAPED, memory_order_acq_rel,
                                                 memory_order_acquire))
        return VT_ENOENT;
    if (result)
        *result = f->result;
    release(NULL, f);
    return VT_OK;
}

vt_err vt_fiber_detach(vt_fiber h)
{
    vt__fib *f = lookup(h);
    if (!f)
        return VT_ENOENT;
    const uint32_t life = handle_life(h);
    uintptr_t expected = VT__JOIN_OPEN(life);
    if (atomic_compare_exchange_strong_explicit(&f->join, &expected, VT__JOIN_DETACHED, memory_order_acq_rel,
                                                memory_order_acquire))
        return VT_OK;
    if (expected == VT__JOIN_DONE(life)) {
        if (!atomic_compare_exchange_strong_explicit(&f->join, &expected, VT__JOIN_REAPED, memory_order_acq_rel,
                                                     memory_order_acquire))
            return VT_ENOENT;
        release(NULL, f);
        return VT_OK;
    }
    return join_refused(f, expected, life);
}

vt_err vt_fiber_cancel(vt_fiber h)
{
    vt__fib *f = lookup(h);
    if (!f)
        return VT_ENOENT;
    /* Pinned, the slot cannot be reused under us even if its awaiter
     * reaps it meanwhile; checked again once pinned. */
    atomic_fetch_add_explicit(&f->pins, 1, memory_order_seq_cst);
    if (lookup(h) != f) {
        atomic_fetch_sub_explicit(&f->pins, 1, memory_order_release);
        return VT_ENOENT;
    }
    if (atomic_load_explicit(&f->fstate, memory_order_acquire) != VT__FS_DONE)
        vt__fiber_cancel_one(f);
    atomic_fetch_sub_explicit(&f->pins, 1, memory_order_release);
    return VT_OK;
}

vt_fiber vt_fiber_self(void)
{
    vt__fib *self = vt__fiber_self();
    return self ? handle_of(self) : (vt_fiber){0};
}

int vt_fiber_in(void)
{
    return vt__fiber_self() != NULL;
}

const char *vt_fiber_name(void)
{
    vt__fib *self = vt__fiber_self();
    return self ? self->name : "";
}

vt_err vt_fiber_set_name(const char *name)
{
    vt__fib *self = vt__fiber_self();
    if (!self)
        return VT_ESTATE;
    if (!name)
        return VT_EINVAL;
    size_t n = strlen(name);
    if (n >= VT_FIBER_NAME_MAX)
        n = VT_FIBER_NAME_MAX - 1;
    memcpy(self->name, name, n);
    self->name[n] = 0;
    return VT_OK;
}

vt_err vt_fiber_yield(void)
{
    vt__fib *self = vt__fiber_self();
    if (!self)
        return VT_ESTATE;
    if (vt__cancel_pending())
        return VT_ECANCELED;
    suspend(self, VT__ACT_YIELD);
    return vt__cancel_pending() ? VT_ECANCELED : VT_OK;
}

int64_t vt_fiber_now(void)
{
    vt__fib *self = vt__fiber_self();
    return self ? vt_pool_now(self->rt->pool) : vt_now_ns();
}

int64_t vt_fiber_deadline(int64_t ns)
{
    return ns < 0 ? VT_FOREVER : vt_fiber_now() + ns;
}

vt_err vt_sleep_until(int64_t deadline)
{
    vt__fib *self = vt__fiber_self();
    if (!self) {
        if (deadline == VT_FOREVER)
            return VT_EINVAL;
        int64_t now;
        while ((now = vt_now_ns()) < deadline)
            vt__sleep_ns(deadline - now);
        return VT_OK;
    }
    if (deadline == VT_FOREVER)
        deadline = INT64_MAX;
    vt__waiter w;
    vt__waiter_init(&w, "sleep", NULL, 0);
    vt_err e = vt__waiter_wait(&w, deadline);
    return e == VT_ETIMEDOUT ? VT_OK : e;
}

vt_err vt_sleep_ns(int64_t ns)
{
    if (ns < 0)
        return VT_EINVAL;
    return vt_sleep_until(vt_fiber_now() + ns);
}

vt_err vt_sleep_ms(int64_t ms)
{
    if (ms < 0 || ms > INT64_MAX / 1000000)
        return VT_EINVAL;
    return vt_sleep_ns(ms * 1000000);
}

int vt_cancelled(void)
{
    vt__fib *self = vt__fiber_self();
    return self && vt__fiber_cancel_seen(self);
}

int vt_cancel_mask(int masked)
{
    vt__fib *self = vt__fiber_self();
    if (!self)
        return -1;
    return atomic_exchange_explicit(&self->masked, masked ? 1 : 0, memory_order_relaxed);
}

/* ---- Introspection ------------------------------------------------------------------------------ */

static const char *state_name(unsigned s)
{
    switch (s) {
    case VT__FS_READY:
        return "ready";
    case VT__FS_RUNNING:
        return "running";
    case VT__FS_WAITING:
        return "waiting";
    case VT__FS_DONE:
        return "done";
    default:
        return "free";
    }
}

typedef struct dump_ctx {
    FILE *out;
    uint64_t n;
} dump_ctx;

static void dump_one(vt__fib *f, void *ud)
{
    dump_ctx *d = ud;
    unsigned s = atomic_load_explicit(&f->fstate, memory_order_acquire);
    if (s == VT__FS_FREE)
        return;
    d->n++;
    fprintf(d->out, "  fiber %#llx '%s' %s", (unsigned long long)handle_of(f).id, f->name, state_name(s));
    const char *what = atomic_load_explicit(&f->wait_what, memory_order_relaxed);
    if (s == VT__FS_WAITING && what) {
        const void *obj = atomic_load_explicit(&f->wait_obj, memory_order_relaxed);
        fprintf(d->out, " on %s", what);
        if (obj)
            fprintf(d->out, " %p", obj);
    }
    if (atomic_load_explicit(&f->cancelled, memory_order_relaxed) || f->member->cancelled)
        fprintf(d->out, " (cancelled)");
    fputc('\n', d->out);
}

vt_err vt_runtime_dump(vt_runtime *rt, FILE *f)
{
    if (!rt)
        rt = vt__runtime_self();
    if (!rt || !f)
        return VT_EINVAL;
    dump_ctx d = {f, 0};
    fprintf(f, "vitte runtime %u: live fibers\n", rt->slot);
    vt__stacks_each(rt->stacks, dump_one, &d);
    fprintf(f, "  (%llu live)\n", (unsigned long long)d.n);
    return VT_OK;
}

vt_err vt_runtime_stats_get(vt_runtime *rt, vt_runtime_stats *out)
{
    if (!rt || !out)
        return VT_EINVAL;
    memset(out, 0, sizeof(*out));
    out->spawned = atomic_load_explicit(&rt->spawned, memory_order_relaxed);
    out->finished = atomic_load_explicit(&rt->finished, memory_order_relaxed);
    for (unsigned i = 0; i < rt->nfw; i++) {
        out->spawned += atomic_load_explicit(&rt->fw[i].spawned, memory_order_relaxed);
        out->finished += atomic_load_explicit(&rt->fw[i].finished, memory_order_relaxed);
        out->switches += atomic_load_explicit(&rt->fw[i].switches, memory_order_relaxed);
    }
    out->live = out->spawned >= out->finished ? out->spawned - out->finished : 0;
    vt__stacks_stats(rt->stacks, out);
    return VT_OK;
}
