/* stress_run.c — the executor under load and races (meant for TSan too):
 * random DAGs of 10k+ tasks, sync and async, edges by handle and by name,
 * added in an order unrelated to the dependencies, on 2 and 8 workers,
 * checking that every task ran exactly once and only after all its
 * dependencies had finished; the same graph run again; a cancel racing the
 * run (from the test thread and from a body), a group cancel racing it,
 * priority changes racing it, and subtasks adding subtasks. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vt_test.h"
#include "task_test.h"

/* ---- A random DAG whose bodies check their dependencies ------------------------------- */

typedef struct dag dag;

typedef struct node {
    dag *d;
    uint32_t i;
} node;

struct dag {
    size_t n;
    uint32_t *off, *preds;     /* predecessors of rank i: preds[off[i] .. off[i+1]) */
    node *nodes;
    vt_task **t;               /* by rank */
    _Atomic uint32_t *runs;    /* body runs by rank */
    _Atomic uint8_t *done;     /* 1 once the body ended with VT_OK */
    _Atomic long violations;   /* a body started before a dependency was done */
    _Atomic long started;
    long cancel_at;            /* the body that starts this many-th cancels the run (-1: none) */
    vt_group *grp[4];
    vt_graph *g;
};

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static vt_err body_node(vt_task_ctx *ctx, void *data)
{
    node *nd = data;
    dag *d = nd->d;
    uint32_t i = nd->i;
    atomic_fetch_add(&d->runs[i], 1);
    for (uint32_t k = d->off[i]; k < d->off[i + 1]; k++)
        if (!atomic_load_explicit(&d->done[d->preds[k]], memory_order_acquire))
            atomic_fetch_add(&d->violations, 1);
    long s = atomic_fetch_add(&d->started, 1);
    if (s == d->cancel_at)
        vt_graph_cancel(d->g);
    if (vt_fiber_in() && (mix(i) & 3) == 0)
        vt_fiber_yield();
    if (vt_ctx_cancelled(ctx))
        return VT_ECANCELED;
    atomic_store_explicit(&d->done[i], 1, memory_order_release);
    return VT_OK;
}

/* n tasks; rank r may depend on lower ranks only; tasks are added in a
 * shuffled order of ranks, some named "n<rank>" and depended on by name. */
static dag *dag_new(size_t n, uint64_t seed)
{
    dag *d = calloc(1, sizeof *d);
    d->n = n;
    d->off = calloc(n + 1, sizeof *d->off);
    size_t cap = n * 4 + 1024, m = 0;
    d->preds = malloc(cap * sizeof *d->preds);
    d->nodes = calloc(n, sizeof *d->nodes);
    d->t = calloc(n, sizeof *d->t);
    d->runs = calloc(n, sizeof *d->runs);
    d->done = calloc(n, sizeof *d->done);
    d->cancel_at = -1;
    uint64_t x = seed;
    for (size_t r = 0; r < n; r++) {
        d->off[r] = (uint32_t)m;
        x = mix(x);
        size_t k = r == 0 ? 0 : (x % 5 == 0 ? 0 : 1 + (x >> 8) % 4);
        if (r > 0 && (x >> 20) % 997 == 0)
            k = 150; /* a wide join now and then */
        for (size_t j = 0; j < k; j++) {
            x = mix(x);
            /* mostly near, sometimes anywhere before */
            uint32_t p = (x & 7) ? (uint32_t)(r - 1 - (x >> 8) % (r < 64 ? r : 64))
                                 : (uint32_t)((x >> 8) % r);
            int dup = 0;
            for (size_t q = d->off[r]; q < m; q++)
                dup |= d->preds[q] == p;
            if (dup)
                continue;
            if (m == cap) {
                cap *= 2;
                d->preds = realloc(d->preds, cap * sizeof *d->preds);
            }
            d->preds[m++] = p;
        }
    }
    d->off[n] = (uint32_t)m;
    return d;
}

/* TSan makes every fiber switch and atomic costly, the more so the more
 * fibers were ever made: fewer rounds and fewer async tasks there, graphs
 * as large. */
#ifdef VT_SANITIZE_THREAD
#define ROUNDS(n) ((n) / 8 > 0 ? (n) / 8 : 1)
#define ASYNC_EVERY 40
#else
#define ROUNDS(n) (n)
#define ASYNC_EVERY 5
#endif

/* Builds d's graph: tasks added in a shuffled order, one in ASYNC_EVERY async,
 * every other edge of named tasks by name. 0 on failure. */
static int dag_build(dag *d, uint64_t seed)
{
    if (vt_graph_new(&d->g, "stress"))
        return 0;
    size_t n = d->n;
    uint32_t *order_add = malloc(n * sizeof *order_add);
    for (size_t i = 0; i < n; i++)
        order_add[i] = (uint32_t)i;
    uint64_t x = seed;
    for (size_t i = n - 1; i > 0; i--) {
        x = mix(x);
        size_t j = x % (i + 1);
        uint32_t tmp = order_add[i];
        order_add[i] = order_add[j];
        order_add[j] = tmp;
    }
    for (int k = 0; k < 4; k++) {
        char gname[16];
        snprintf(gname, sizeof gname, "g%d", k);
        d->grp[k] = vt_graph_group(d->g, gname);
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t r = order_add[i];
        d->nodes[r] = (node){d, r};
        char name[24];
        snprintf(name, sizeof name, "n%u", r);
        int named = r % 3 == 0;
        d->t[r] = mix(r ^ seed) % ASYNC_EVERY == 0 ? vt_task_add_async(d->g, named ? name : NULL, body_node, &d->nodes[r])
                                        : vt_task_add(d->g, named ? name : NULL, body_node, &d->nodes[r]);
        if (!d->t[r]) {
            free(order_add);
            return 0;
        }
    }
    free(order_add);
    for (size_t r = 0; r < n; r++)
        for (uint32_t k = d->off[r]; k < d->off[r + 1]; k++) {
            uint32_t p = d->preds[k];
            vt_err e;
            if (p % 3 == 0 && k % 2 == 0) {
                char name[24];
                snprintf(name, sizeof name, "n%u", p);
                e = vt_task_depend(d->t[r], name);
            } else {
                e = vt_task_precede(d->t[p], d->t[r]);
            }
            if (e)
                return 0;
        }
    return vt_graph_validate(d->g) == VT_OK;
}

static void dag_reset(dag *d)
{
    for (size_t i = 0; i < d->n; i++) {
        atomic_store(&d->runs[i], 0);
        atomic_store(&d->done[i], 0);
    }
    atomic_store(&d->violations, 0);
    atomic_store(&d->started, 0);
    d->cancel_at = -1;
}

static void dag_free(dag *d)
{
    vt_graph_free(d->g);
    free(d->off);
    free(d->preds);
    free(d->nodes);
    free(d->t);
    free((void *)d->runs);
    free((void *)d->done);
    free(d);
}

/* After a complete run: each task ran once, after its dependencies. */
static void check_complete(dag *d)
{
    size_t bad_runs = 0, bad_state = 0;
    for (size_t i = 0; i < d->n; i++) {
        bad_runs += atomic_load(&d->runs[i]) != 1;
        bad_state += vt_task_state_get(d->t[i]) != VT_TASK_SUCCEEDED;
    }
    VT_CHECK_EQ(bad_runs, 0);
    VT_CHECK_EQ(bad_state, 0);
    VT_CHECK_EQ(atomic_load(&d->violations), 0);
    vt_run_summary s = summary_of(d->g);
    VT_CHECK_EQ(s.total, d->n);
    VT_CHECK_EQ(s.succeeded, d->n);
}

/* After a run that may have been stopped: no task ran twice or early,
 * every task ended, a success had successful dependencies, and the
 * summary adds up. */
static void check_partial(dag *d, int group_only)
{
    size_t twice = 0, unended = 0, bad_success = 0, ran_not_started = 0, failed = 0;
    size_t count[VT_TASK_STATES] = {0};
    for (size_t i = 0; i < d->n; i++) {
        uint32_t runs = atomic_load(&d->runs[i]);
        twice += runs > 1;
        vt_task_state st = vt_task_state_get(d->t[i]);
        count[st]++;
        unended += st == VT_TASK_PENDING || st == VT_TASK_READY || st == VT_TASK_RUNNING;
        failed += st == VT_TASK_FAILED;
        if (st == VT_TASK_SUCCEEDED) {
            ran_not_started += runs != 1 || !atomic_load(&d->done[i]);
            for (uint32_t k = d->off[i]; k < d->off[i + 1]; k++)
                bad_success += vt_task_state_get(d->t[d->preds[k]]) != VT_TASK_SUCCEEDED;
        }
        if (st == VT_TASK_SKIPPED) {
            /* Skipped: a dependency did not succeed; it never ran. */
            int some = 0;
            for (uint32_t k = d->off[i]; k < d->off[i + 1]; k++)
                some |= vt_task_state_get(d->t[d->preds[k]]) != VT_TASK_SUCCEEDED;
            bad_success += !some || runs != 0;
        }
        if (group_only && st == VT_TASK_CANCELLED) {
            /* Only the cancelled group's tasks end CANCELLED. */
            bad_success += (mix(i) & 3) != 2;
        }
    }
    VT_CHECK_EQ(twice, 0);
    VT_CHECK_EQ(unended, 0);
    VT_CHECK_EQ(bad_success, 0);
    VT_CHECK_EQ(ran_not_started, 0);
    VT_CHECK_EQ(failed, 0);
    VT_CHECK_EQ(atomic_load(&d->violations), 0);
    vt_run_summary s = summary_of(d->g);
    VT_CHECK_EQ(s.total, d->n);
    VT_CHECK_EQ(s.succeeded, count[VT_TASK_SUCCEEDED]);
    VT_CHECK_EQ(s.cancelled, count[VT_TASK_CANCELLED]);
    VT_CHECK_EQ(s.skipped, count[VT_TASK_SKIPPED]);
    VT_CHECK_EQ(s.failed, 0);
    VT_CHECK_EQ(s.succeeded + s.cancelled + s.skipped, d->n);
}

static size_t stress_n(void)
{
    return (size_t)12000 * vt_test_stress();
}

static void random_dags(unsigned workers)
{
    vt_runtime *rt = rt_new(workers);
    VT_CHECK_NOT_NULL(rt);
    for (int round = 0; round < ROUNDS(8); round++) {
        uint64_t seed = vt_test_rand();
        dag *d = dag_new(stress_n(), seed);
        VT_CHECK(dag_build(d, seed));
        VT_CHECK_OK(vt_graph_run(d->g, rt, NULL));
        check_complete(d);
        /* The same graph again: fresh states, every task once more. */
        dag_reset(d);
        vt_run_opts o = {.on_failure = VT_KEEP_GOING};
        VT_CHECK_OK(vt_graph_run(d->g, rt, &o));
        check_complete(d);
        dag_free(d);
    }
    vt_runtime_free(rt);
}

VT_TEST(random_dags_on_2_workers)
{
    random_dags(2);
}

VT_TEST(random_dags_on_8_workers)
{
    random_dags(8);
}

VT_TEST(many_small_runs_back_to_back)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    dag *d = dag_new(64, vt_test_rand());
    VT_CHECK(dag_build(d, 5));
    for (unsigned i = 0; i < ROUNDS(300) * vt_test_stress(); i++) {
        dag_reset(d);
        VT_CHECK_OK(vt_graph_run(d->g, rt, NULL));
        check_complete(d);
    }
    dag_free(d);
    vt_runtime_free(rt);
}

static void cancel_racing(unsigned workers)
{
    vt_runtime *rt = rt_new(workers);
    VT_CHECK_NOT_NULL(rt);
    uint64_t seed = vt_test_rand();
    dag *d = dag_new(stress_n(), seed);
    VT_CHECK(dag_build(d, seed));
    for (int round = 0; round < ROUNDS(16); round++) {
        dag_reset(d);
        long at = (long)(vt_test_rand() % d->n);
        vt_err e;
        if (round % 2) {
            /* From a body. */
            d->cancel_at = at;
            e = vt_graph_run(d->g, rt, NULL);
            VT_CHECK_ERR(e, VT_ECANCELED);
        } else {
            /* From this thread, once `at` bodies have started. */
            VT_CHECK_OK(vt_graph_start(d->g, rt, NULL));
            while (atomic_load(&d->started) < at && vt_graph_wait(d->g, VT_NOW) == VT_ETIMEDOUT)
                sched_yield();
            VT_CHECK_OK(vt_graph_cancel(d->g));
            e = vt_graph_wait(d->g, VT_FOREVER);
            VT_CHECK(e == VT_ECANCELED || e == VT_OK);
        }
        check_partial(d, 0);
        /* The body that cancelled saw it and did not succeed. */
        if (round % 2)
            VT_CHECK_LT(summary_of(d->g).succeeded, d->n);
    }
    /* And after all that, a clean run. */
    dag_reset(d);
    VT_CHECK_OK(vt_graph_run(d->g, rt, NULL));
    check_complete(d);
    dag_free(d);
    vt_runtime_free(rt);
}

VT_TEST(cancel_racing_the_run_on_2_workers)
{
    cancel_racing(2);
}

VT_TEST(cancel_racing_the_run_on_8_workers)
{
    cancel_racing(8);
}

VT_TEST(group_cancel_racing_the_run)
{
    vt_runtime *rt = rt_new(8);
    VT_CHECK_NOT_NULL(rt);
    uint64_t seed = vt_test_rand();
    dag *d = dag_new(stress_n(), seed);
    VT_CHECK(dag_build(d, seed));
    for (size_t i = 0; i < d->n; i++)
        VT_CHECK_OK(vt_task_set_group(d->t[i], d->grp[mix(i) & 3]));
    for (int round = 0; round < ROUNDS(12); round++) {
        dag_reset(d);
        long at = (long)(vt_test_rand() % d->n);
        vt_run_opts o = {.on_failure = round % 2 ? VT_KEEP_GOING : VT_FAIL_FAST};
        VT_CHECK_OK(vt_graph_start(d->g, rt, &o));
        while (atomic_load(&d->started) < at && vt_graph_wait(d->g, VT_NOW) == VT_ETIMEDOUT)
            sched_yield();
        VT_CHECK_OK(vt_group_cancel(d->grp[2]));
        vt_err e = vt_graph_wait(d->g, VT_FOREVER);
        VT_CHECK(e == VT_OK || e == VT_EFAILED);
        check_partial(d, 1);
        /* What depends on no task of group 2 succeeded. */
        size_t wrong = 0;
        for (size_t i = 0; i < d->n; i++) {
            if ((mix(i) & 3) == 2)
                continue;
            int deps_ok = 1;
            for (uint32_t k = d->off[i]; k < d->off[i + 1]; k++)
                deps_ok &= vt_task_state_get(d->t[d->preds[k]]) == VT_TASK_SUCCEEDED;
            wrong += deps_ok && vt_task_state_get(d->t[i]) != VT_TASK_SUCCEEDED;
        }
        VT_CHECK_EQ(wrong, 0);
    }
    dag_free(d);
    vt_runtime_free(rt);
}

typedef struct prio_racer {
    dag *d;
    _Atomic int stop;
    uint64_t seed;
    long changes;
    long errors;
} prio_racer;

static void *race_priorities(void *arg)
{
    prio_racer *p = arg;
    uint64_t x = p->seed;
    while (!atomic_load(&p->stop)) {
        x = mix(x);
        vt_task *t = p->d->t[x % p->d->n];
        int prio = (int)((x >> 32) % 2001) - 1000;
        p->errors += vt_task_set_priority(t, prio) != VT_OK;
        p->changes++;
    }
    return NULL;
}

static void priority_racing(unsigned workers)
{
    vt_runtime *rt = rt_new(workers);
    VT_CHECK_NOT_NULL(rt);
    uint64_t seed = vt_test_rand();
    dag *d = dag_new(stress_n(), seed);
    VT_CHECK(dag_build(d, seed));
    for (int round = 0; round < ROUNDS(6); round++) {
        dag_reset(d);
        /* Every third round starts at priority 0 (opts.priorities keeps
         * changes honoured), the others with priorities set. */
        for (size_t i = 0; i < d->n; i++)
            VT_CHECK_OK(vt_task_set_priority(d->t[i], round % 3 ? (int)(mix(i + round) % 200) - 100 : 0));
        prio_racer pr = {.d = d, .seed = vt_test_rand()};
        pthread_t th[2];
        VT_CHECK_EQ(pthread_create(&th[0], NULL, race_priorities, &pr), 0);
        prio_racer pr2 = {.d = d, .seed = vt_test_rand()};
        VT_CHECK_EQ(pthread_create(&th[1], NULL, race_priorities, &pr2), 0);
        vt_run_opts o = {.priorities = round % 3 == 0};
        vt_err e = vt_graph_run(d->g, rt, &o);
        atomic_store(&pr.stop, 1);
        atomic_store(&pr2.stop, 1);
        pthread_join(th[0], NULL);
        pthread_join(th[1], NULL);
        VT_CHECK_OK(e);
        VT_CHECK_EQ(pr.errors + pr2.errors, 0);
        check_complete(d);
    }
    dag_free(d);
    vt_runtime_free(rt);
}

VT_TEST(priority_changes_racing_the_run_on_2_workers)
{
    priority_racing(2);
}

VT_TEST(priority_changes_racing_the_run_on_8_workers)
{
    priority_racing(8);
}

/* ---- Subtasks that add subtasks ---------------------------------------------------------- */

enum { SUB_MAX = 1 << 18 };

typedef struct sub_node {
    int32_t parent;        /* -1: a graph task */
    int32_t pred[2];       /* earlier siblings it depends on, -1: none */
    uint32_t depth;
    uint64_t seed;
    _Atomic uint32_t runs;
    _Atomic uint8_t body_done;  /* its body returned */
} sub_node;

typedef struct sub_world {
    sub_node *nodes;
    _Atomic int32_t n;
    _Atomic long violations;   /* started before its parent's body or a sibling ended */
    _Atomic long overflow;
    uint32_t max_depth;
    _Atomic long seen_at_end;  /* bodies done when the final task started */
} sub_world;

static sub_world W;

static vt_err body_sub(vt_task_ctx *ctx, void *data)
{
    sub_node *me = data;
    atomic_fetch_add(&me->runs, 1);
    if (me->parent >= 0 && !atomic_load(&W.nodes[me->parent].body_done))
        atomic_fetch_add(&W.violations, 1);
    for (int k = 0; k < 2; k++)
        if (me->pred[k] >= 0 && !atomic_load(&W.nodes[me->pred[k]].body_done))
            atomic_fetch_add(&W.violations, 1);
    uint64_t x = mix(me->seed);
    unsigned kids = me->depth < W.max_depth ? (unsigned)(x % 5) : 0;
    vt_task *made[4];
    int32_t idx[4];
    for (unsigned k = 0; k < kids; k++) {
        int32_t i = atomic_fetch_add(&W.n, 1);
        if (i >= SUB_MAX) {
            atomic_fetch_add(&W.overflow, 1);
            break;
        }
        sub_node *c = &W.nodes[i];
        x = mix(x);
        c->parent = (int32_t)(me - W.nodes);
        c->depth = me->depth + 1;
        c->seed = x;
        c->pred[0] = c->pred[1] = -1;
        /* A sibling edge now and then. */
        int32_t dep = k > 0 && (x & 1) ? idx[(x >> 8) % k] : -1;
        c->pred[0] = dep;
        made[k] = (x >> 16) & 1 ? vt_ctx_add_async(ctx, NULL, body_sub, c) : vt_ctx_add(ctx, NULL, body_sub, c);
        if (!made[k])
            return VT_ENOMEM;
        idx[k] = i;
        if (dep >= 0) {
            vt_err e = vt_task_precede(made[(x >> 8) % k], made[k]);
            if (e)
                return e;
        }
    }
    if (vt_fiber_in())
        vt_fiber_yield();
    atomic_store(&me->body_done, 1);
    return VT_OK;
}

static vt_err body_final(vt_task_ctx *ctx, void *data)
{
    (void)ctx;
    (void)data;
    int32_t n = atomic_load(&W.n);
    long done = 0;
    for (int32_t i = 0; i < n && i < SUB_MAX; i++)
        done += atomic_load(&W.nodes[i].body_done);
    atomic_store(&W.seen_at_end, done);
    return VT_OK;
}

static void subtasks_adding(unsigned workers)
{
    W.nodes = calloc(SUB_MAX, sizeof *W.nodes);
    VT_CHECK_NOT_NULL(W.nodes);
    W.max_depth = 6;
    vt_runtime *rt = rt_new(workers);
    VT_CHECK_NOT_NULL(rt);
    for (int round = 0; round < ROUNDS(6); round++) {
        memset(W.nodes, 0, SUB_MAX * sizeof *W.nodes);
        atomic_store(&W.n, 0);
        atomic_store(&W.violations, 0);
        atomic_store(&W.overflow, 0);
        vt_graph *g;
        VT_CHECK_OK(vt_graph_new(&g, "subs"));
        enum { ROOTS = 64 };
        vt_task *fin = vt_task_add(g, "final", body_final, NULL);
        for (int r = 0; r < ROOTS; r++) {
            int32_t i = atomic_fetch_add(&W.n, 1);
            W.nodes[i].parent = -1;
            W.nodes[i].pred[0] = W.nodes[i].pred[1] = -1;
            W.nodes[i].seed = vt_test_rand();
            vt_task *t = r % 2 ? vt_task_add_async(g, NULL, body_sub, &W.nodes[i])
                               : vt_task_add(g, NULL, body_sub, &W.nodes[i]);
            VT_CHECK_NOT_NULL(t);
            VT_CHECK_OK(vt_task_precede(t, fin));
        }
        VT_CHECK_OK(vt_graph_run(g, rt, NULL));
        int32_t n = atomic_load(&W.n);
        VT_CHECK_EQ(atomic_load(&W.overflow), 0);
        VT_CHECK_EQ(atomic_load(&W.violations), 0);
        size_t bad = 0;
        for (int32_t i = 0; i < n; i++)
            bad += atomic_load(&W.nodes[i].runs) != 1 || !atomic_load(&W.nodes[i].body_done);
        VT_CHECK_EQ(bad, 0);
        /* The graph tasks ended after all their descendants. */
        VT_CHECK_EQ(atomic_load(&W.seen_at_end), n);
        vt_run_summary s = summary_of(g);
        VT_CHECK_EQ(s.total, (size_t)n + 1);
        VT_CHECK_EQ(s.succeeded, (size_t)n + 1);
        VT_CHECK_GT(n, ROOTS * 4);
        vt_graph_free(g);
    }
    vt_runtime_free(rt);
    free(W.nodes);
    W.nodes = NULL;
}

VT_TEST(subtasks_adding_subtasks_on_2_workers)
{
    subtasks_adding(2);
}

VT_TEST(subtasks_adding_subtasks_on_8_workers)
{
    subtasks_adding(8);
}
