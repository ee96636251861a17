/* stress_flow.c — value graphs at the same time on one runtime, from
 * several threads: random DAGs of sync and async nodes whose values are
 * checked against a sequential evaluation, re-run, cancelled midway, and
 * flows whose nodes hold strings and pointers (their destructors counted).
 * Scaled by VT_TEST_STRESS. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vt_test.h"
#include "flow_test.h"

/* Each node: its own constant plus the sum of its inputs, modulo 2^61. */
typedef struct spec {
    int64_t k;
    int async;
} spec;

static const int64_t MOD = (int64_t)1 << 61;

static vt_err body(vt_flow_ctx *ctx, void *ud)
{
    const spec *sp = ud;
    int64_t sum = sp->k;
    for (size_t i = 0; i < vt_flow_ctx_inputs(ctx); i++) {
        int64_t v;
        vt_err e = vt_flow_in_int(ctx, i, &v);
        if (e)
            return e;
        sum = (sum + v) % MOD;
    }
    if (sp->async && sum % 5 == 0) {
        vt_err e = vt_fiber_yield();
        if (e)
            return e;
    }
    return vt_flow_set_int(ctx, sum);
}

typedef struct job {
    vt_runtime *rt;
    uint64_t seed;
    unsigned rounds;
    int bad;
    char why[256];
} job;

static void one_flow(job *j, uint64_t *rng)
{
    enum {
        MAXN = 300
    };
    uint64_t r = ft_rand(rng);
    size_t n = 2 + r % MAXN;
    spec *sp = calloc(n, sizeof *sp);
    int64_t *want = calloc(n, sizeof *want);
    vt_flow_node **nodes = calloc(n, sizeof *nodes);
    vt_flow *f = NULL;
    if (!sp || !want || !nodes || vt_flow_new(&f, "stress")) {
        j->bad++;
        snprintf(j->why, sizeof j->why, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        sp[i] = (spec){.k = (int64_t)(ft_rand(rng) % 1000), .async = (ft_rand(rng) % 4) == 0};
        nodes[i] = sp[i].async ? vt_flow_add_async(f, NULL, body, &sp[i], NULL, 0)
                               : vt_flow_add(f, NULL, body, &sp[i], NULL, 0);
        want[i] = sp[i].k;
        /* Up to three inputs among the nodes before: a DAG. */
        unsigned nin = i ? (unsigned)(ft_rand(rng) % 4) : 0;
        for (unsigned k = 0; k < nin; k++) {
            size_t in = ft_rand(rng) % i;
            if (vt_flow_node_add_input(nodes[i], nodes[in])) {
                j->bad++;
                snprintf(j->why, sizeof j->why, "add_input: %s", vt_flow_error(f));
                goto out;
            }
            want[i] = (want[i] + want[in]) % MOD;
        }
    }
    int cancel = (r >> 20) % 5 == 0;
    for (int run = 0; run < 2; run++) {
        vt_err e = vt_flow_start(f, j->rt, NULL);
        if (e) {
            j->bad++;
            snprintf(j->why, sizeof j->why, "start: %s", vt_flow_error(f));
            goto out;
        }
        if (cancel && run == 1)
            vt_flow_cancel(f);
        e = vt_flow_wait(f, VT_FOREVER);
        if (e == VT_ECANCELED && cancel && run == 1)
            break;
        if (e) {
            j->bad++;
            snprintf(j->why, sizeof j->why, "run %d: %s (%s)", run, vt_strerror(e),
                     vt_flow_error(f));
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            int64_t v;
            if (vt_flow_node_get_int(nodes[i], &v) || v != want[i]) {
                j->bad++;
                snprintf(j->why, sizeof j->why, "node %zu of %zu: %lld, expected %lld", i, n,
                         (long long)v, (long long)want[i]);
                goto out;
            }
        }
    }
out:
    vt_flow_free(f);
    free(sp);
    free(want);
    free(nodes);
}

static void *worker(void *arg)
{
    job *j = arg;
    uint64_t rng = j->seed;
    for (unsigned i = 0; i < j->rounds && !j->bad; i++)
        one_flow(j, &rng);
    return NULL;
}

VT_TEST(concurrent_random_dags)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    enum {
        THREADS = 4
    };
    job jobs[THREADS];
    pthread_t th[THREADS];
    for (unsigned i = 0; i < THREADS; i++) {
        jobs[i] = (job){.rt = rt, .seed = vt_test_rand(), .rounds = 30 * vt_test_stress()};
        VT_CHECK_EQ(pthread_create(&th[i], NULL, worker, &jobs[i]), 0);
    }
    for (unsigned i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    for (unsigned i = 0; i < THREADS; i++) {
        if (jobs[i].bad)
            fprintf(stderr, "  thread %u: %s\n", i, jobs[i].why);
        VT_CHECK_EQ(jobs[i].bad, 0);
    }
    vt_runtime_free(rt);
}

/* Values that own memory, dropped by runs, failures and frees. */
static _Atomic long dtors, made;

static void drop(void *p)
{
    atomic_fetch_add(&dtors, 1);
    free(p);
}

static vt_err owner(vt_flow_ctx *ctx, void *ud)
{
    uint64_t r = (uint64_t)(uintptr_t)ud;
    vt_err e;
    if (r % 3 == 0) {
        e = vt_flow_set_str(ctx, "a string that is copied");
    } else {
        long *p = malloc(sizeof *p);
        if (!p)
            return VT_ENOMEM;
        atomic_fetch_add(&made, 1);
        if ((e = vt_flow_set_ptr(ctx, p, drop))) {
            free(p);
            atomic_fetch_add(&dtors, 1);
        }
    }
    /* Some attempts fail after setting their value, which is dropped. */
    if (!e && vt_ctx_attempt(vt_flow_ctx_task(ctx)) == 1 && r % 7 == 0)
        return VT_EIO;
    return e;
}

VT_TEST(owned_values_are_released)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    uint64_t rng = vt_test_rand();
    atomic_store(&dtors, 0);
    atomic_store(&made, 0);
    for (unsigned round = 0; round < 40 * vt_test_stress(); round++) {
        vt_flow *f;
        VT_CHECK_OK(vt_flow_new(&f, "owners"));
        vt_retry again = {.max_attempts = 2};
        vt_flow_node *prev = NULL;
        for (int i = 0; i < 50; i++) {
            uint64_t r = ft_rand(&rng);
            vt_flow_node *n = (r >> 8) & 1
                                  ? vt_flow_add_async(f, NULL, owner, (void *)(uintptr_t)r, NULL, 0)
                                  : vt_flow_add(f, NULL, owner, (void *)(uintptr_t)r, NULL, 0);
            if (prev && (r >> 9) & 1)
                VT_CHECK_OK(vt_flow_node_add_input(n, prev));
            if ((r >> 10) & 1)
                VT_CHECK_OK(vt_flow_node_set_retry(n, &again));
            prev = n;
        }
        for (int run = 0; run < 3; run++) {
            vt_err e = vt_flow_run(f, rt, &(vt_run_opts){.on_failure = VT_KEEP_GOING});
            VT_CHECK(e == VT_OK || e == VT_EFAILED);
        }
        vt_flow_free(f);
        VT_CHECK_EQ(atomic_load(&dtors), atomic_load(&made));
    }
    vt_runtime_free(rt);
}
