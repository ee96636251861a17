/* vt_blocking_run: a blocking call runs on a thread of its own while the
 * calling fiber's worker runs other fibers; inline on a plain thread; many
 * at once up to opts.blocking_threads, started in the order they were
 * made; not interruptible. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pipe2 */
#endif
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vt_test.h"
#include "vitte/async.h"

#define ERR_PTR(e) ((void *)(intptr_t)(e))

static vt_runtime_opts opts_of(unsigned workers, unsigned blocking_threads)
{
    vt_runtime_opts o;
    vt_runtime_opts_init(&o);
    o.pool.workers = workers;
    o.blocking_threads = blocking_threads;
    return o;
}

static void nap_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* Waits (on a blocking thread) until *flag != 0; gives up after 30 s so a
 * bug fails the test instead of hanging it. Returns the flag. */
static int wait_flag(_Atomic int *flag)
{
    int64_t give_up = vt_deadline_after(VT_SEC(30));
    int v;
    while (!(v = atomic_load(flag)) && vt_now_ns() < give_up)
        nap_us(200);
    return v;
}

static void *self_thread(void *arg)
{
    (void)arg;
    pthread_t *t = malloc(sizeof *t);
    if (t)
        *t = pthread_self();
    return t;
}

static void *nested_free(void *arg)
{
    pthread_t **out = arg;
    *out = self_thread(NULL);
    return *out;
}

VT_TEST(bad_input)
{
    VT_CHECK_ERR(vt_blocking_run(NULL, NULL, NULL), VT_EINVAL);
}

VT_TEST(plain_thread_runs_inline)
{
    void *r = NULL;
    VT_CHECK_OK(vt_blocking_run(self_thread, NULL, &r));
    VT_CHECK_NOT_NULL(r);
    VT_CHECK(pthread_equal(*(pthread_t *)r, pthread_self()));
    free(r);
    /* result may be NULL (the call's value is then dropped: freed here). */
    pthread_t *mine = NULL;
    VT_CHECK_OK(vt_blocking_run(nested_free, &mine, NULL));
    VT_CHECK_NOT_NULL(mine);
    free(mine);
}

/* ---- From a fiber: another thread, the result handed back ------------------------ */

typedef struct where {
    pthread_t fiber_thread;
    pthread_t *call_thread;
    vt_err err;
    void *nested;
} where;

static void *nested_inline(void *arg)
{
    /* On a blocking thread, which is no fiber: a nested call runs inline. */
    void *r = NULL;
    vt_err e = vt_blocking_run(self_thread, arg, &r);
    return e == VT_OK ? r : NULL;
}

static void *where_body(void *arg)
{
    where *w = arg;
    w->fiber_thread = pthread_self();
    void *r = NULL;
    w->err = vt_blocking_run(self_thread, NULL, &r);
    w->call_thread = r;
    if (w->err == VT_OK)
        w->err = vt_blocking_run(nested_inline, NULL, &w->nested);
    return NULL;
}

VT_TEST(fiber_call_runs_elsewhere)
{
    where w;
    memset(&w, 0, sizeof w);
    vt_runtime_opts o = opts_of(1, 0);
    VT_CHECK_OK(vt_runtime_main(&o, where_body, &w, NULL));
    VT_CHECK_OK(w.err);
    VT_CHECK_NOT_NULL(w.call_thread);
    VT_CHECK_NOT_NULL(w.nested);
    VT_CHECK(!pthread_equal(*w.call_thread, w.fiber_thread));
    VT_CHECK(!pthread_equal(*(pthread_t *)w.nested, w.fiber_thread));
    free(w.call_thread);
    free(w.nested);
}

/* ---- Other fibers progress during a blocking call ------------------------------------ */

typedef struct progress {
    _Atomic uint64_t count;
    _Atomic int stop;
    uint64_t during;  /* the others' progress while the call blocked */
    int kind;         /* 0: sleeps, 1: reads a file */
    vt_err err;
    char file_head[8];
} progress;

/* The blocking call: notes the others' progress, blocks in the system
 * (nanosleep, or file reads) until they made some, and reports it. */
static void *blocking_call(void *arg)
{
    progress *p = arg;
    uint64_t start = atomic_load(&p->count);
    int64_t give_up = vt_deadline_after(VT_SEC(30));
    while (atomic_load(&p->count) < start + 100 && vt_now_ns() < give_up) {
        if (p->kind == 0) {
            nap_us(500);
        } else {
            int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
            if (fd >= 0) {
                char buf[256];
                ssize_t n = read(fd, buf, sizeof buf);
                if (n >= (ssize_t)sizeof p->file_head)
                    memcpy(p->file_head, buf, sizeof p->file_head);
                close(fd);
            }
            nap_us(100);
        }
    }
    p->during = atomic_load(&p->count) - start;
    return p;
}

static void *counter(void *arg)
{
    progress *p = arg;
    while (!atomic_load(&p->stop)) {
        atomic_fetch_add(&p->count, 1);
        if (vt_fiber_yield() != VT_OK)
            break;
    }
    return NULL;
}

static void *progress_body(void *arg)
{
    progress *p = arg;
    vt_fiber c[3];
    int n = 0;
    for (; n < 3; n++)
        if (vt_fiber_spawn(&c[n], counter, p) != VT_OK)
            break;
    void *r = NULL;
    p->err = vt_blocking_run(blocking_call, p, &r);
    if (p->err == VT_OK && r != p)
        p->err = VT_ERANGE;
    atomic_store(&p->stop, 1);
    for (int i = 0; i < n; i++)
        vt_fiber_await(c[i], NULL, VT_FOREVER);
    return NULL;
}

static void progress_run(int kind)
{
    progress p;
    memset(&p, 0, sizeof p);
    p.kind = kind;
    vt_runtime_opts o = opts_of(1, 0);
    VT_CHECK_OK(vt_runtime_main(&o, progress_body, &p, NULL));
    VT_CHECK_OK(p.err);
    /* One worker: the counters ran only because the caller was suspended. */
    VT_CHECK_GT(p.during, 0);
    if (kind == 1)
        VT_CHECK_NE(p.file_head[0], 0);
}

VT_TEST(others_progress_during_sleep)
{
    progress_run(0);
}

VT_TEST(others_progress_during_file_reads)
{
    progress_run(1);
}

/* ---- Many at once -------------------------------------------------------------------- */

typedef struct crowd {
    unsigned calls;       /* fibers making a call */
    unsigned want_inside; /* calls that must run at once before any returns */
    _Atomic unsigned inside, max_inside, done;
    _Atomic int all_in;
    _Atomic unsigned failures;
} crowd;

static void *crowd_call(void *arg)
{
    crowd *c = arg;
    unsigned now = atomic_fetch_add(&c->inside, 1) + 1;
    unsigned m = atomic_load(&c->max_inside);
    while (now > m && !atomic_compare_exchange_weak(&c->max_inside, &m, now)) {
    }
    if (now >= c->want_inside)
        atomic_store(&c->all_in, 1);
    if (!wait_flag(&c->all_in))
        atomic_fetch_add(&c->failures, 1);
    nap_us(100);
    atomic_fetch_sub(&c->inside, 1);
    return NULL;
}

static void *crowd_fiber(void *arg)
{
    crowd *c = arg;
    if (vt_blocking_run(crowd_call, c, NULL) != VT_OK)
        atomic_fetch_add(&c->failures, 1);
    atomic_fetch_add(&c->done, 1);
    return NULL;
}

static void *crowd_body(void *arg)
{
    crowd *c = arg;
    vt_fiber *f = calloc(c->calls, sizeof *f);
    unsigned n = 0;
    if (f)
        for (; n < c->calls; n++)
            if (vt_fiber_spawn(&f[n], crowd_fiber, c) != VT_OK)
                break;
    for (unsigned i = 0; i < n; i++)
        vt_fiber_await(f[i], NULL, VT_FOREVER);
    free(f);
    return NULL;
}

/* With the default 16 threads, 16 calls that each wait for all the others
 * can only finish if 16 threads run them at once. */
VT_TEST(default_threads_run_16_at_once)
{
    crowd c;
    memset(&c, 0, sizeof c);
    c.calls = 16;
    c.want_inside = 16;
    vt_runtime_opts o = opts_of(2, 0);
    VT_CHECK_OK(vt_runtime_main(&o, crowd_body, &c, NULL));
    VT_CHECK_EQ(atomic_load(&c.failures), 0);
    VT_CHECK_EQ(atomic_load(&c.done), 16);
    VT_CHECK_EQ(atomic_load(&c.max_inside), 16);
}

/* blocking_threads bounds the calls that run at once; the rest queue. */
VT_TEST(threads_bound_concurrency)
{
    crowd c;
    memset(&c, 0, sizeof c);
    c.calls = 40;
    c.want_inside = 5;
    vt_runtime_opts o = opts_of(2, 5);
    VT_CHECK_OK(vt_runtime_main(&o, crowd_body, &c, NULL));
    VT_CHECK_EQ(atomic_load(&c.failures), 0);
    VT_CHECK_EQ(atomic_load(&c.done), 40);
    VT_CHECK_EQ(atomic_load(&c.max_inside), 5);
}

/* ---- Order ----------------------------------------------------------------------------- */

typedef struct order {
    _Atomic int gate;
    _Atomic unsigned next_made, next_run;
    unsigned n;
    unsigned made[64], ran[64];
    _Atomic unsigned bad;
} order;

typedef struct order_call {
    order *o;
    unsigned made;
} order_call;

static void *gate_call(void *arg)
{
    order *o = arg;
    if (!wait_flag(&o->gate))
        atomic_fetch_add(&o->bad, 1);
    return NULL;
}

static void *order_call_fn(void *arg)
{
    order_call *c = arg;
    unsigned k = atomic_fetch_add(&c->o->next_run, 1);
    if (k < 64)
        c->o->ran[k] = c->made;
    return NULL;
}

static void *order_fiber(void *arg)
{
    order *o = arg;
    order_call c = {o, 0};
    /* No suspension between taking a number and queueing the call (one
     * worker): the numbers are the queue's order. */
    c.made = atomic_fetch_add(&o->next_made, 1);
    if (vt_blocking_run(order_call_fn, &c, NULL) != VT_OK)
        atomic_fetch_add(&o->bad, 1);
    return NULL;
}

static void *gate_fiber(void *arg)
{
    order *o = arg;
    if (vt_blocking_run(gate_call, o, NULL) != VT_OK)
        atomic_fetch_add(&o->bad, 1);
    return NULL;
}

static void *order_root(void *arg)
{
    order *o = arg;
    vt_fiber g, f[64];
    if (vt_fiber_spawn(&g, gate_fiber, o) != VT_OK) {
        atomic_fetch_add(&o->bad, 1);
        return NULL;
    }
    vt_fiber_yield(); /* the gate call is queued (one worker) */
    unsigned n = 0;
    for (; n < o->n; n++)
        if (vt_fiber_spawn(&f[n], order_fiber, o) != VT_OK)
            break;
    /* Let every fiber queue its call behind the gate. */
    while (atomic_load(&o->next_made) < n)
        vt_fiber_yield();
    atomic_store(&o->gate, 1);
    for (unsigned i = 0; i < n; i++)
        vt_fiber_await(f[i], NULL, VT_FOREVER);
    vt_fiber_await(g, NULL, VT_FOREVER);
    if (n < o->n)
        atomic_fetch_add(&o->bad, 1);
    return NULL;
}

VT_TEST(calls_start_in_order)
{
    order o;
    memset(&o, 0, sizeof o);
    o.n = 32;
    vt_runtime_opts opts = opts_of(1, 1);
    VT_CHECK_OK(vt_runtime_main(&opts, order_root, &o, NULL));
    VT_CHECK_EQ(atomic_load(&o.bad), 0);
    VT_CHECK_EQ(atomic_load(&o.next_run), o.n);
    for (unsigned i = 0; i < o.n; i++)
        VT_CHECK_EQ(o.ran[i], i);
}

/* ---- Not interruptible ---------------------------------------------------------------- */

typedef struct uncancel {
    _Atomic int started, release, finished;
    vt_err err;
    void *result;
    int finished_before_return;
} uncancel;

static void *slow_call(void *arg)
{
    uncancel *u = arg;
    atomic_store(&u->started, 1);
    wait_flag(&u->release);
    atomic_store(&u->finished, 1);
    return u;
}

static void *uncancel_body(void *arg)
{
    uncancel *u = arg;
    u->err = vt_blocking_run(slow_call, u, &u->result);
    u->finished_before_return = atomic_load(&u->finished);
    return NULL;
}

VT_TEST(cancelled_caller_still_waits)
{
    uncancel u;
    memset(&u, 0, sizeof u);
    vt_runtime *rt = NULL;
    vt_runtime_opts o = opts_of(1, 0);
    VT_CHECK_OK(vt_runtime_new(&rt, &o));
    vt_fiber_opts fo;
    memset(&fo, 0, sizeof fo);
    fo.runtime = rt;
    vt_fiber f;
    VT_CHECK_OK(vt_fiber_spawn_ex(&f, uncancel_body, &u, &fo));
    while (!atomic_load(&u.started))
        nap_us(100);
    VT_CHECK_OK(vt_fiber_cancel(f));
    /* Still running: the await cannot end before the call does. */
    VT_CHECK_ERR(vt_fiber_await(f, NULL, VT_NOW), VT_ETIMEDOUT);
    atomic_store(&u.release, 1);
    VT_CHECK_OK(vt_fiber_await(f, NULL, VT_FOREVER));
    VT_CHECK_OK(u.err);
    VT_CHECK_PTR_EQ(u.result, &u);
    VT_CHECK_EQ(u.finished_before_return, 1);
    vt_runtime_free(rt);
}

/* ---- Runtime life ---------------------------------------------------------------------- */

static void *one_call(void *arg)
{
    return vt_blocking_run(self_thread, NULL, arg) == VT_OK ? arg : NULL;
}

/* A runtime whose blocking threads started frees them; one that never
 * needed them starts none (nothing to check but that both free cleanly,
 * with nothing leaked: the harness counts live blocks). */
VT_TEST(runtime_frees_its_threads)
{
    long live = vt_test_alloc_live();
    void *r = NULL, *res = NULL;
    VT_CHECK_OK(vt_runtime_main(NULL, one_call, &r, &res));
    VT_CHECK_PTR_EQ(res, &r);
    VT_CHECK_NOT_NULL(r);
    free(r);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

/* Allocation failures: each call made while the k-th allocation fails
 * either works or says VT_ENOMEM, and nothing leaks. */
typedef struct oom {
    long k;
    vt_err err;
    int ran;
    int ran_inline;           /* on the fiber's own worker: no drainer could be queued */
    pthread_t fiber_thread;
} oom;

static void *oom_call(void *arg)
{
    oom *o = arg;
    o->ran = 1;
    o->ran_inline = pthread_equal(pthread_self(), o->fiber_thread);
    return NULL;
}

static void *oom_body(void *arg)
{
    oom *o = arg;
    o->fiber_thread = pthread_self();
    vt_test_alloc_fail_at(o->k);
    o->err = vt_blocking_run(oom_call, o, NULL);
    vt_test_alloc_fail_at(0);
    return NULL;
}

VT_TEST(allocation_failures)
{
    long live = vt_test_alloc_live();
    int succeeded_after_failure = 0, inline_runs = 0;
    for (long k = 1; k < 400; k++) {
        vt_runtime *rt = NULL;
        vt_runtime_opts o = opts_of(1, 0);
        VT_CHECK_OK(vt_runtime_new(&rt, &o));
        oom x;
        memset(&x, 0, sizeof x);
        x.k = k;
        x.err = VT_EINVAL;
        vt_fiber_opts fo;
        memset(&fo, 0, sizeof fo);
        fo.runtime = rt;
        vt_fiber f;
        VT_CHECK_OK(vt_fiber_spawn_ex(&f, oom_body, &x, &fo));
        VT_CHECK_OK(vt_fiber_await(f, NULL, VT_FOREVER));
        vt_runtime_free(rt);
        vt_test_alloc_reset();
        if (x.err == VT_OK) {
            VT_CHECK_EQ(x.ran, 1);
            inline_runs += x.ran_inline;
            if (++succeeded_after_failure == 3)
                break; /* past every allocation of the first call */
            continue;
        }
        succeeded_after_failure = 0;
        VT_CHECK_ERR(x.err, VT_ENOMEM);
        VT_CHECK_EQ(x.ran, 0);
        VT_CHECK_EQ(vt_test_alloc_live(), live);
    }
    VT_CHECK_EQ(succeeded_after_failure, 3);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
    /* Not a check (it depends on when sched's queues allocate): how often
     * the caller had to run the call itself. */
    printf("    %d calls ran on the caller's worker\n", inline_runs);
}
