/* The pool's life: options, submission, quiescence, shutdown, metrics,
 * errors and allocation failures. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <time.h>

#include "vt_test.h"
#include "vitte/sched.h"

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static vt_pool *pool_of(unsigned workers, vt_policy policy)
{
    vt_pool_opts o;
    vt_pool_opts_init(&o);
    o.workers = workers;
    o.policy = policy;
    vt_pool *p = NULL;
    return vt_pool_new(&p, &o) == VT_OK ? p : NULL;
}

static void bump(void *arg)
{
    atomic_fetch_add_explicit((_Atomic uint64_t *)arg, 1, memory_order_relaxed);
}

VT_TEST(opts_defaults_and_limits)
{
    vt_pool_opts o;
    memset(&o, 0xff, sizeof(o));
    vt_pool_opts_init(&o);
    VT_CHECK_EQ(o.workers, 0);
    VT_CHECK_EQ(o.policy, VT_POLICY_LIFO);
    VT_CHECK_NULL(o.name);
    vt_pool_opts_init(NULL); /* harmless */

    vt_pool *p = NULL;
    VT_CHECK_OK(vt_pool_new(&p, NULL));
    VT_CHECK_EQ(vt_pool_workers(p), vt_cpu_count());
    vt_pool_free(p);

    struct {
        const char *what;
        vt_pool_opts o;
    } bad[] = {
        {"too many workers", {.workers = VT_POOL_MAX_WORKERS + 1}},
        {"absurd workers", {.workers = 4000000000u}},
        {"unknown policy", {.policy = (vt_policy)17}},
        {"too many levels", {.policy = VT_POLICY_PRIORITY, .priority_levels = VT_PRIORITY_MAX_LEVELS + 1}},
        {"starvation limit", {.starvation_limit = 1000001}},
        {"too few frames", {.frames = 10}},
        {"too many frames", {.frames = (1u << 28) + 1}},
        {"deterministic with 2 workers", {.deterministic = 1, .workers = 2}},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        p = (vt_pool *)0x1;
        vt_err e = vt_pool_new(&p, &bad[i].o);
        if (e != VT_EINVAL)
            fprintf(stderr, "case: %s\n", bad[i].what);
        VT_CHECK_ERR(e, VT_EINVAL);
        VT_CHECK_NULL(p);
    }
    VT_CHECK_ERR(vt_pool_new(NULL, NULL), VT_EINVAL);
}

VT_TEST(submit_from_outside_and_wait)
{
    for (unsigned policy = VT_POLICY_LIFO; policy <= VT_POLICY_FAIR; policy++) {
        vt_pool *p = pool_of(2, (vt_policy)policy);
        VT_CHECK_NOT_NULL(p);
        _Atomic uint64_t n = 0;
        for (int i = 0; i < 10000; i++)
            VT_CHECK_OK(vt_pool_submit(p, bump, &n));
        VT_CHECK_OK(vt_pool_wait_idle(p, VT_FOREVER));
        VT_CHECK_EQ(atomic_load(&n), 10000);
        vt_pool_metrics m;
        VT_CHECK_OK(vt_pool_metrics_get(p, &m, NULL, 0));
        VT_CHECK_EQ(m.injected, 10000);
        VT_CHECK_EQ(m.total.executed, 10000);
        vt_pool_free(p);
    }
}

typedef struct tree {
    vt_pool *p;
    _Atomic uint64_t *count;
    int depth;
} tree;

static tree tree_nodes[1 << 12];
static _Atomic uint32_t tree_next;

static void tree_job(void *arg)
{
    tree *t = arg;
    atomic_fetch_add_explicit(t->count, 1, memory_order_relaxed);
    if (t->depth == 0)
        return;
    for (int i = 0; i < 2; i++) {
        tree *c = &tree_nodes[atomic_fetch_add(&tree_next, 1)];
        *c = (tree){t->p, t->count, t->depth - 1};
        if (vt_pool_submit(t->p, tree_job, c) != VT_OK)
            abort();
    }
}

VT_TEST(jobs_submit_jobs_and_wait_sees_them_all)
{
    for (unsigned workers = 1; workers <= 8; workers *= 2) {
        vt_pool *p = pool_of(workers, VT_POLICY_LIFO);
        VT_CHECK_NOT_NULL(p);
        _Atomic uint64_t n = 0;
        atomic_store(&tree_next, 1);
        tree_nodes[0] = (tree){p, &n, 10};
        VT_CHECK_OK(vt_pool_submit(p, tree_job, &tree_nodes[0]));
        VT_CHECK_OK(vt_pool_wait_idle(p, VT_FOREVER));
        VT_CHECK_EQ(atomic_load(&n), (1u << 11) - 1);
        vt_pool_free(p);
    }
}

VT_TEST(submit_errors)
{
    vt_pool *p = pool_of(1, VT_POLICY_LIFO);
    VT_CHECK_NOT_NULL(p);
    _Atomic uint64_t n = 0;
    VT_CHECK_ERR(vt_pool_submit(NULL, bump, &n), VT_EINVAL);
    VT_CHECK_ERR(vt_pool_submit(p, NULL, &n), VT_EINVAL);
    VT_CHECK_ERR(vt_pool_submit_ex(p, NULL, &n, NULL), VT_EINVAL);
    VT_CHECK_OK(vt_pool_submit_ex(p, bump, &n, NULL));
    VT_CHECK_ERR(vt_pool_wait_idle(NULL, VT_FOREVER), VT_EINVAL);
    VT_CHECK_OK(vt_pool_wait_idle(p, VT_FOREVER));
    VT_CHECK_OK(vt_pool_shutdown(p, VT_SHUTDOWN_DRAIN, VT_FOREVER));
    VT_CHECK_EQ(atomic_load(&n), 1);
    VT_CHECK_ERR(vt_pool_submit(p, bump, &n), VT_ECLOSED);
    VT_CHECK_ERR(vt_pool_submit_ex(p, bump, &n, NULL), VT_ECLOSED);
    VT_CHECK_ERR(vt_pool_shutdown(p, VT_SHUTDOWN_DRAIN, VT_FOREVER), VT_ECLOSED);
    VT_CHECK_ERR(vt_pool_shutdown(p, (vt_shutdown_mode)9, VT_FOREVER), VT_EINVAL);
    VT_CHECK_ERR(vt_pool_shutdown(NULL, VT_SHUTDOWN_DRAIN, VT_FOREVER), VT_EINVAL);
    /* Still readable after shutdown. */
    vt_pool_metrics m;
    VT_CHECK_OK(vt_pool_metrics_get(p, &m, NULL, 0));
    VT_CHECK_EQ(m.total.executed, 1);
    VT_CHECK_ERR(vt_pool_metrics_get(p, NULL, NULL, 0), VT_EINVAL);
    VT_CHECK_ERR(vt_pool_metrics_get(NULL, &m, NULL, 0), VT_EINVAL);
    VT_CHECK_ERR(vt_pool_metrics_print(NULL, stderr), VT_EINVAL);
    VT_CHECK_ERR(vt_pool_metrics_print(p, NULL), VT_EINVAL);
    VT_CHECK_OK(vt_pool_wait_idle(p, VT_NOW));
    vt_pool_free(p);
    vt_pool_free(NULL);
}

/* A job that waits for its pool, or shuts it, would wait for itself. */
typedef struct self_wait {
    vt_pool *p;
    vt_err wait_err, shutdown_err;
    int index;
    vt_pool *current;
} self_wait;

static void self_wait_job(void *arg)
{
    self_wait *s = arg;
    s->wait_err = vt_pool_wait_idle(s->p, VT_FOREVER);
    s->shutdown_err = vt_pool_shutdown(s->p, VT_SHUTDOWN_DRAIN, VT_FOREVER);
    vt_pool_free(s->p); /* refused (an error is logged): the pool stays usable */
    s->index = vt_worker_index();
    s->current = vt_pool_current();
}

VT_TEST(calls_that_would_wait_for_themselves)
{
    vt_pool *p = pool_of(2, VT_POLICY_LIFO);
    VT_CHECK_NOT_NULL(p);
    self_wait s = {.p = p, .index = -5};
    VT_CHECK_OK(vt_pool_submit(p, self_wait_job, &s));
    VT_CHECK_OK(vt_pool_wait_idle(p, VT_FOREVER));
    VT_CHECK_ERR(s.wait_err, VT_ESTATE);
    VT_CHECK_ERR(s.shutdown_err, VT_ESTATE);
    VT_CHECK(s.index == 0 || s.index == 1);
    VT_CHECK_PTR_EQ(s.current, p);
    _Atomic uint64_t n = 0;
    VT_CHECK_OK(vt_pool_submit(p, bump, &n));
    VT_CHECK_OK(vt_pool_wait_idle(p, VT_FOREVER));
    VT_CHECK_EQ(atomic_load(&n), 1);
    VT_CHECK_EQ(vt_worker_index(), -1);
    VT_CHECK_NULL(vt_pool_current());
    vt_pool_free(p);
}

/* A gate that holds a worker until the test opens it. */
typedef struct gate {
    _Atomic int open;
    _Atomic int entered;
} gate;

static void gate_job(void *arg)
{
    gate *g = arg;
    atomic_store(&g->entered, 1);
    while (!atomic_load(&g->open))
        sleep_ms(1);
}

VT_TEST(wait_idle_times_out_while_busy)
{
    vt_pool *p = pool_of(1, VT_POLICY_LIFO);
    VT_CHECK_NOT_NULL(p);
    gate g = {0};
    VT_CHECK_OK(vt_pool_submit(p, gate_job, &g));
    VT_CHECK_ERR(vt_pool_wait_idle(p, VT_NOW), VT_ETIMEDOUT);
    VT_CHECK_ERR(vt_pool_wait_idle(p, vt_deadline_after(VT_MS(20))), VT_ETIMEDOUT);
    atomic_store(&g.open, 1);
    VT_CHECK_OK(vt_pool_wait_idle(p, VT_FOREVER));
    vt_pool_free(p);
}

static _Atomic uint64_t cancelled_count;
static void count_cancel(void *ud, vt_job_fn fn, void *arg)
{
    (void)fn;
    (void)arg;
    atomic_fetch_add((_Atomic uint64_t *)ud, 1);
}

VT_TEST(shutdown_drain_runs_everything_queued)
{
    vt_pool_opts o;
    vt_pool_opts_init(&o);
    o.workers = 1;
    o.on_cancel = count_cancel;
    o.on_cancel_ud = &cancelled_count;
    atomic_store(&cancelled_count, 0);
    vt_pool *p = NULL;
    VT_CHECK_OK(vt_pool_new(&p, &o));
    gate g = {0};
    _Atomic uint64_t n = 0;
    VT_CHECK_OK(vt_pool_submit(p, gate_job, &g));
    while (!atomic_load(&g.entered))
        sleep_ms(1);
    for (int i = 0; i < 1000; i++)
        VT_CHECK_OK(vt_pool_submit(p, bump, &n));
    atomic_store(&g.open, 1);
    VT_CHECK_OK(vt_pool_shutdown(p, VT_SHUTDOWN_DRAIN, VT_FOREVER));
    VT_CHECK_EQ(atomic_load(&n), 1000);
    VT_CHECK_EQ(atomic_load(&cancelled_count), 0);
    vt_pool_free(p);
}

VT_TEST(shutdown_cancel_discards_queued_jobs)
{
    vt_pool_opts o;
    vt_pool_opts_init(&o);
    o.workers = 1;
    o.on_cancel = count_cancel;
    o.on_cancel_ud = &cancelled_count;
    atomic_store(&cancelled_count, 0);
    vt_pool *p = NULL;
    VT_CHECK_OK(vt_pool_new(&p, &o));
    gate g = {0};
    _Atomic uint64_t n = 0;
    VT_CHECK_OK(vt_pool_submit(p, gate_job, &g));
    while (!atomic_load(&g.entered))
        sleep_ms(1);
    for (int i = 0; i < 1000; i++)
        VT_CHECK_OK(vt_pool_submit(p, bump, &n));
    /* The running job finishes; the queued ones are reported, not run. */
    atomic_store(&g.open, 1);
    VT_CHECK_OK(vt_pool_shutdown(p, VT_SHUTDOWN_CANCEL, VT_FOREVER));
    uint64_t ran = atomic_load(&n);
    VT_CHECK_EQ(ran + atomic_load(&cancelled_count), 1000);
    vt_pool_metrics m;
    VT_CHECK_OK(vt_pool_metrics_get(p, &m, NULL, 0));
    VT_CHECK_EQ(m.cancelled, atomic_load(&cancelled_count));
    VT_CHECK_OK(vt_pool_wait_idle(p, VT_FOREVER)); /* cancelled counts as done */
    vt_pool_free(p);
    VT_CHECK_EQ(atomic_load(&n), ran); /* nothing ran after shutdown returned */
}

VT_TEST(shutdown_deadline_passes_while_a_job_runs)
{
    vt_pool *p = pool_of(1, VT_POLICY_LIFO);
    VT_CHECK_NOT_NULL(p);
    gate g = {0};
    VT_CHECK_OK(vt_pool_submit(p, gate_job, &g));
    while (!atomic_load(&g.entered))
        sleep_ms(1);
    VT_CHECK_ERR(vt_pool_shutdown(p, VT_SHUTDOWN_DRAIN, vt_deadline_after(VT_MS(10))), VT_ETIMEDOUT);
    _Atomic uint64_t n = 0;
    VT_CHECK_ERR(vt_pool_submit(p, bump, &n), VT_ECLOSED);
    atomic_store(&g.open, 1);
    vt_pool_free(p); /* waits for the job */
}

typedef struct drain_chain {
    vt_pool *p;
    _Atomic uint64_t n;
    _Atomic int late; /* the first failed submission, if any */
} drain_chain;

static void chain_job(void *arg)
{
    drain_chain *c = arg;
    if (atomic_fetch_add(&c->n, 1) < 99) {
        vt_err e = vt_pool_submit(c->p, chain_job, c);
        if (e)
            atomic_store(&c->late, (int)e);
    }
}

VT_TEST(drain_accepts_submissions_from_running_jobs)
{
    vt_pool *p = pool_of(2, VT_POLICY_LIFO);
    VT_CHECK_NOT_NULL(p);
    drain_chain c = {.p = p};
    VT_CHECK_OK(vt_pool_submit(p, chain_job, &c));
    VT_CHECK_OK(vt_pool_shutdown(p, VT_SHUTDOWN_DRAIN, VT_FOREVER));
    VT_CHECK_EQ(atomic_load(&c.n), 100);
    VT_CHECK_OK((vt_err)atomic_load(&c.late));
    vt_pool_free(p);
}

VT_TEST(free_without_shutdown_drains)
{
    vt_pool *p = pool_of(2, VT_POLICY_FIFO);
    VT_CHECK_NOT_NULL(p);
    static _Atomic uint64_t n;
    atomic_store(&n, 0);
    for (int i = 0; i < 5000; i++)
        VT_CHECK_OK(vt_pool_submit(p, bump, (void *)&n));
    vt_pool_free(p);
    VT_CHECK_EQ(atomic_load(&n), 5000);
}

VT_TEST(idle_pool_parks_its_workers)
{
    vt_pool *p = pool_of(2, VT_POLICY_LIFO);
    VT_CHECK_NOT_NULL(p);
    _Atomic uint64_t n = 0;
    VT_CHECK_OK(vt_pool_submit(p, bump, &n));
    VT_CHECK_OK(vt_pool_wait_idle(p, VT_FOREVER));
    /* Workers park after a bounded spin: wait until both have. */
    vt_pool_metrics m;
    vt_worker_metrics w[2];
    for (;;) {
        VT_CHECK_OK(vt_pool_metrics_get(p, &m, w, 2));
        if (w[0].parks > 0 && w[1].parks > 0)
            break;
        sleep_ms(1);
    }
    VT_CHECK_EQ(m.workers, 2);
    vt_pool_free(p);
}

VT_TEST(metrics_print_is_readable)
{
    vt_pool *p = pool_of(2, VT_POLICY_LIFO);
    VT_CHECK_NOT_NULL(p);
    _Atomic uint64_t n = 0;
    for (int i = 0; i < 100; i++)
        VT_CHECK_OK(vt_pool_submit(p, bump, &n));
    VT_CHECK_OK(vt_pool_wait_idle(p, VT_FOREVER));
    char buf[4096] = {0};
    FILE *f = fmemopen(buf, sizeof(buf) - 1, "w");
    VT_CHECK_NOT_NULL(f);
    VT_CHECK_OK(vt_pool_metrics_print(p, f));
    fclose(f);
    VT_CHECK(strstr(buf, "2 workers") != NULL);
    VT_CHECK(strstr(buf, "executed") != NULL);
    VT_CHECK(strstr(buf, "total") != NULL);
    VT_CHECK(strstr(buf, "injected 100") != NULL);
    vt_pool_free(p);
}

VT_TEST(priority_range_is_checked)
{
    vt_pool_opts o;
    vt_pool_opts_init(&o);
    o.workers = 1;
    o.policy = VT_POLICY_PRIORITY;
    o.priority_levels = 3;
    vt_pool *p = NULL;
    VT_CHECK_OK(vt_pool_new(&p, &o));
    _Atomic uint64_t n = 0;
    vt_job_opts jo = {.priority = 3};
    VT_CHECK_ERR(vt_pool_submit_ex(p, bump, &n, &jo), VT_ERANGE);
    jo.priority = -1;
    VT_CHECK_ERR(vt_pool_submit_ex(p, bump, &n, &jo), VT_ERANGE);
    jo.priority = 2;
    VT_CHECK_OK(vt_pool_submit_ex(p, bump, &n, &jo));
    VT_CHECK_OK(vt_pool_wait_idle(p, VT_FOREVER));
    VT_CHECK_EQ(atomic_load(&n), 1);
    vt_pool_free(p);
}

/* Allocation failures: fail the k-th allocation for k = 1, 2, ... until
 * creation succeeds; each failure is VT_ENOMEM and leaks nothing. */
VT_TEST(new_fails_cleanly_at_every_allocation)
{
    for (unsigned policy = VT_POLICY_LIFO; policy <= VT_POLICY_FAIR; policy++) {
        long live = vt_test_alloc_live();
        for (long k = 1;; k++) {
            vt_pool_opts o;
            vt_pool_opts_init(&o);
            o.workers = 2;
            o.policy = (vt_policy)policy;
            vt_pool *p = NULL;
            vt_test_alloc_fail_at(k);
            vt_err e = vt_pool_new(&p, &o);
            vt_test_alloc_fail_at(0);
            if (e == VT_OK) {
                vt_pool_free(p);
                break;
            }
            VT_CHECK_ERR(e, VT_ENOMEM);
            VT_CHECK_NULL(p);
            VT_CHECK_EQ(vt_test_alloc_live(), live);
            VT_CHECK_LT(k, 1000);
        }
        VT_CHECK_EQ(vt_test_alloc_live(), live);
    }
}

typedef struct oom_ctx {
    vt_pool *p;
    long k;
    vt_err first_err;
    uint64_t queued;
} oom_ctx;

static void noop(void *arg)
{
    (void)arg;
}

/* From a worker: fill the deque past its first buffer with the k-th
 * allocation failing; the failed submission must report VT_ENOMEM and the
 * jobs queued before it must still run. */
static void oom_job(void *arg)
{
    oom_ctx *c = arg;
    vt_test_alloc_fail_at(c->k);
    for (int i = 0; i < 5000; i++) {
        vt_err e = vt_pool_submit(c->p, noop, NULL);
        if (e) {
            c->first_err = e;
            break;
        }
        c->queued++;
    }
    vt_test_alloc_fail_at(0);
}

VT_TEST(submit_reports_enomem_and_keeps_what_was_queued)
{
    for (unsigned policy = VT_POLICY_LIFO; policy <= VT_POLICY_FAIR; policy++) {
        vt_pool *p = pool_of(1, (vt_policy)policy);
        VT_CHECK_NOT_NULL(p);
        oom_ctx c = {.p = p, .k = 1};
        VT_CHECK_OK(vt_pool_submit(p, oom_job, &c));
        VT_CHECK_OK(vt_pool_wait_idle(p, VT_FOREVER));
        VT_CHECK_ERR(c.first_err, VT_ENOMEM);
        vt_pool_metrics m;
        VT_CHECK_OK(vt_pool_metrics_get(p, &m, NULL, 0));
        VT_CHECK_EQ(m.total.executed, 1 + c.queued);
        /* The pool is still fine. */
        _Atomic uint64_t n = 0;
        VT_CHECK_OK(vt_pool_submit(p, bump, &n));
        VT_CHECK_OK(vt_pool_wait_idle(p, VT_FOREVER));
        VT_CHECK_EQ(atomic_load(&n), 1);
        vt_pool_free(p);
    }
}

/* One job fans out many: an idle worker receives batches from the busy one
 * (donation), and every job still runs exactly once. */
typedef struct fan {
    vt_pool *p;
    size_t n;
    _Atomic uint8_t *ran;
} fan;

static void mark_ran(void *arg)
{
    atomic_fetch_add_explicit((_Atomic uint8_t *)arg, 1, memory_order_relaxed);
}

static void fan_out(void *arg)
{
    fan *f = arg;
    for (size_t i = 0; i < f->n; i++)
        if (vt_pool_submit(f->p, mark_ran, (void *)&f->ran[i]) != VT_OK)
            abort();
}

VT_TEST(fan_out_is_shared_in_batches_and_runs_each_job_once)
{
    vt_pool *p = pool_of(2, VT_POLICY_LIFO);
    VT_CHECK_NOT_NULL(p);
    fan f = {.p = p, .n = 200000};
    f.ran = calloc(f.n, sizeof(*f.ran));
    VT_CHECK_NOT_NULL(f.ran);
    vt_pool_metrics m;
    uint64_t received = 0;
    /* Donation needs the second worker awake while the first fans out:
     * repeat until it happened (the harness's alarm bounds the loop). */
    for (int rep = 0; received == 0; rep++) {
        memset((void *)f.ran, 0, f.n);
        VT_CHECK_OK(vt_pool_submit(p, fan_out, &f));
        VT_CHECK_OK(vt_pool_wait_idle(p, VT_FOREVER));
        for (size_t i = 0; i < f.n; i++)
            VT_CHECK_EQ(atomic_load(&f.ran[i]), 1);
        VT_CHECK_OK(vt_pool_metrics_get(p, &m, NULL, 0));
        received = m.total.received;
    }
    VT_CHECK_GT(received, 0);
    free((void *)f.ran);
    vt_pool_free(p);
}
