/* test_graph.c — building and checking task graphs: arguments and their
 * errors, the sticky first building error, names (given, "#<n>" for
 * unnamed tasks), vt_graph_find and vt_graph_size, dependencies by handle
 * and by name, duplicate and unknown names, cycles of every shape with the
 * message that names them, and the DOT export parsed back with Graphviz's
 * cgraph (nodes, edges, clusters of subtasks, fill colours by state). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vt_test.h"
#include "task_test.h"

/* ---- Graphs ------------------------------------------------------------------------- */

VT_TEST(graph_new_and_free)
{
    VT_CHECK_ERR(vt_graph_new(NULL, "x"), VT_EINVAL);
    vt_graph *g = NULL;
    VT_CHECK_OK(vt_graph_new(&g, NULL));
    VT_CHECK_NOT_NULL(g);
    VT_CHECK_STR_EQ(vt_graph_name(g), "graph");
    VT_CHECK_EQ(vt_graph_size(g), 0);
    VT_CHECK_STR_EQ(vt_graph_error(g), "");
    VT_CHECK_OK(vt_graph_validate(g));
    vt_graph_free(g);

    char name[16] = "build";
    VT_CHECK_OK(vt_graph_new(&g, name));
    strcpy(name, "other");
    VT_CHECK_STR_EQ(vt_graph_name(g), "build");
    vt_graph_free(g);
    vt_graph_free(NULL);
    VT_CHECK_ERR(vt_graph_validate(NULL), VT_EINVAL);
}

VT_TEST(graph_new_out_of_memory)
{
    for (long k = 1;; k++) {
        vt_graph *g = (vt_graph *)1;
        long live = vt_test_alloc_live();
        vt_test_alloc_fail_at(k);
        vt_err e = vt_graph_new(&g, "oom");
        vt_test_alloc_reset();
        if (e == VT_OK) {
            VT_CHECK_NOT_NULL(g);
            VT_CHECK_STR_EQ(vt_graph_name(g), "oom");
            vt_graph_free(g);
            break;
        }
        VT_CHECK_ERR(e, VT_ENOMEM);
        VT_CHECK_EQ(vt_test_alloc_live(), live);
        VT_CHECK_LT(k, 100);
    }
}

/* ---- Adding tasks ------------------------------------------------------------------ */

VT_TEST(task_add_and_names)
{
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "names"));
    char name[8] = "a";
    vt_task *a = vt_task_add(g, name, body_ok, NULL);
    strcpy(name, "zz");
    vt_task *u1 = vt_task_add(g, NULL, body_ok, NULL);
    vt_task *b = vt_task_add_async(g, "b", body_ok, NULL);
    vt_task *u3 = vt_task_add_async(g, NULL, body_ok, NULL);
    VT_CHECK(a && u1 && b && u3);
    VT_CHECK_STR_EQ(vt_task_name(a), "a");
    VT_CHECK_STR_EQ(vt_task_name(u1), "#1");
    VT_CHECK_STR_EQ(vt_task_name(b), "b");
    VT_CHECK_STR_EQ(vt_task_name(u3), "#3");
    VT_CHECK_PTR_EQ(vt_task_graph(a), g);
    VT_CHECK_PTR_EQ(vt_task_graph(u3), g);
    VT_CHECK_EQ(vt_graph_size(g), 4);
    VT_CHECK_EQ(vt_task_state_get(a), VT_TASK_PENDING);
    VT_CHECK_EQ(vt_task_priority(a), 0);
    VT_CHECK_OK(vt_graph_validate(g));
    VT_CHECK_STR_EQ(vt_graph_error(g), "");
    vt_graph_free(g);

    /* NULL graph: nothing to record the error on. */
    VT_CHECK_NULL(vt_task_add(NULL, "x", body_ok, NULL));
    VT_CHECK_NULL(vt_task_add_async(NULL, "x", body_ok, NULL));
    VT_CHECK_NULL(vt_task_graph(NULL));
}

/* Each bad call in a graph of its own: it returns NULL, adds nothing, and
 * validation (and a run) return VT_EINVAL with a message naming it. */
static void check_bad_add(const char *name, int null_fn, int async, const char *in_msg)
{
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "bad"));
    VT_CHECK_NOT_NULL(vt_task_add(g, "fine", body_ok, NULL));
    vt_task_fn fn = null_fn ? NULL : body_ok;
    vt_task *t = async ? vt_task_add_async(g, name, fn, NULL) : vt_task_add(g, name, fn, NULL);
    VT_CHECK_NULL(t);
    VT_CHECK_EQ(vt_graph_size(g), 1);
    VT_CHECK_ERR(vt_graph_validate(g), VT_EINVAL);
    VT_CHECK(has(vt_graph_error(g), in_msg));
    /* Still the same, and the graph can go on being built. */
    VT_CHECK_NOT_NULL(vt_task_add(g, "later", body_ok, NULL));
    VT_CHECK_EQ(vt_graph_size(g), 2);
    VT_CHECK_ERR(vt_graph_validate(g), VT_EINVAL);
    VT_CHECK(has(vt_graph_error(g), in_msg));
    vt_graph_free(g);
}

VT_TEST(task_add_errors)
{
    check_bad_add("nobody", 1, 0, "nobody");
    check_bad_add("nobody", 1, 1, "nobody");
    check_bad_add("", 0, 0, "");
    check_bad_add("", 0, 1, "");
    check_bad_add("a/b", 0, 0, "a/b");
    check_bad_add("/", 0, 1, "/");
    check_bad_add("trailing/", 0, 0, "trailing/");
    /* The messages are not empty. */
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "msg"));
    VT_CHECK_NULL(vt_task_add(g, "", body_ok, NULL));
    VT_CHECK_ERR(vt_graph_validate(g), VT_EINVAL);
    VT_CHECK_GT(strlen(vt_graph_error(g)), 0);
    vt_graph_free(g);
}

VT_TEST(task_add_out_of_memory)
{
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "oom"));
    for (long k = 1;; k++) {
        vt_test_alloc_fail_at(k);
        vt_task *t = vt_task_add(g, "named-task", body_ok, NULL);
        vt_test_alloc_reset();
        if (t) {
            VT_CHECK_EQ(vt_graph_size(g), 1);
            VT_CHECK_STR_EQ(vt_task_name(t), "named-task");
            break;
        }
        VT_CHECK_EQ(vt_graph_size(g), 0);
        VT_CHECK_LT(k, 100);
        /* The failure is sticky: a fresh graph for the next attempt. */
        VT_CHECK_ERR(vt_graph_validate(g), VT_ENOMEM);
        vt_graph_free(g);
        VT_CHECK_OK(vt_graph_new(&g, "oom"));
    }
    vt_graph_free(g);
}

/* Building a graph whose every allocation fails in turn: the first
 * failure is VT_ENOMEM, remembered for validation, and nothing leaks. */
static vt_err build_some(vt_graph *g)
{
    vt_task *t[12];
    vt_err first = VT_OK;
    for (int i = 0; i < 12; i++) {
        char name[16];
        snprintf(name, sizeof name, "n%d", i);
        t[i] = i % 3 ? vt_task_add(g, name, body_ok, NULL) : vt_task_add_async(g, i % 2 ? NULL : name, body_ok, NULL);
        if (!t[i] && !first)
            first = VT_ENOMEM;
    }
    for (int i = 0; i < 12; i++)
        for (int j = i + 1; j < 12 && t[i]; j += 1 + i % 2) {
            vt_err e = t[j] ? vt_task_precede(t[i], t[j]) : VT_OK;
            if (e && !first)
                first = e;
        }
    for (int i = 1; i < 12; i++) {
        vt_err e = t[i] ? vt_task_depend(t[i], "n0") : VT_OK;
        if (e && !first)
            first = e;
    }
    vt_retry pol = {.max_attempts = 2};
    vt_err e = t[5] ? vt_task_set_retry(t[5], &pol) : VT_OK;
    if (!first)
        first = e;
    e = t[7] ? vt_task_set_fingerprint(t[7], "key", 3) : VT_OK;
    if (!first)
        first = e;
    vt_group *grp = vt_graph_group(g, "grp");
    e = grp && t[8] ? vt_task_set_group(t[8], grp) : (grp ? VT_OK : VT_ENOMEM);
    if (!first)
        first = e;
    return first;
}

VT_TEST(build_out_of_memory)
{
    for (long k = 1;; k++) {
        long live = vt_test_alloc_live();
        vt_graph *g;
        VT_CHECK_OK(vt_graph_new(&g, "oom"));
        vt_test_alloc_fail_at(k);
        vt_err first = build_some(g);
        vt_err v = vt_graph_validate(g);
        long count = vt_test_alloc_count();
        vt_test_alloc_reset();
        if (first) {
            VT_CHECK_ERR(first, VT_ENOMEM);
            VT_CHECK_ERR(v, VT_ENOMEM);
        } else {
            /* Validation's own allocations may fail too: not sticky. */
            VT_CHECK(v == VT_OK || v == VT_ENOMEM);
            if (v == VT_ENOMEM)
                VT_CHECK_OK(vt_graph_validate(g));
        }
        vt_graph_free(g);
        if (vt_test_alloc_live() != live)
            printf("    allocation %ld failing: %ld blocks leaked (first error %s, validation %s)\n", k,
                   vt_test_alloc_live() - live, vt_errname(first), vt_errname(v));
        VT_CHECK_EQ(vt_test_alloc_live(), live);
        if (count < k)
            break;
        VT_CHECK_LT(k, 10000);
    }
}

/* ---- The first building error is the one reported ----------------------------------- */

VT_TEST(sticky_first_error)
{
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "sticky"));
    _Atomic long runs = 0;
    vt_task *a = vt_task_add(g, "a", body_count, &runs);
    VT_CHECK_NULL(vt_task_add(g, "alpha", NULL, NULL));     /* 1st: NULL body */
    VT_CHECK_NULL(vt_task_add(g, "bad/name", body_ok, NULL)); /* 2nd */
    VT_CHECK_ERR(vt_task_precede(a, a), VT_EINVAL);          /* 3rd */
    vt_task *b = vt_task_add(g, "a", body_count, &runs);     /* a duplicate */
    VT_CHECK_NOT_NULL(b);
    VT_CHECK_OK(vt_task_depend(b, "nowhere"));               /* unknown name */
    VT_CHECK_ERR(vt_graph_validate(g), VT_EINVAL);
    const char *m = vt_graph_error(g);
    VT_CHECK(has(m, "alpha"));
    VT_CHECK(!has(m, "bad/name"));
    VT_CHECK(!has(m, "nowhere"));

    /* A run returns it too, and runs nothing. */
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    VT_CHECK_ERR(vt_graph_run(g, rt, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_graph_start(g, rt, NULL), VT_EINVAL);
    VT_CHECK(has(vt_graph_error(g), "alpha"));
    VT_CHECK_EQ(atomic_load(&runs), 0);
    VT_CHECK_ERR(vt_graph_wait(g, VT_FOREVER), VT_ESTATE);
    VT_CHECK_EQ(vt_task_state_get(a), VT_TASK_PENDING);
    vt_graph_free(g);
    vt_runtime_free(rt);
}

VT_TEST(sticky_error_from_precede_and_depend)
{
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "sticky2"));
    vt_task *a = vt_task_add(g, "first", body_ok, NULL);
    vt_task *b = vt_task_add(g, "second", body_ok, NULL);
    VT_CHECK_ERR(vt_task_depend(b, "second"), VT_EINVAL); /* its own name */
    VT_CHECK_ERR(vt_task_precede(a, a), VT_EINVAL);
    VT_CHECK_ERR(vt_graph_validate(g), VT_EINVAL);
    VT_CHECK(has(vt_graph_error(g), "second"));
    vt_graph_free(g);

    /* Errors that have no graph to go to are only returned. */
    VT_CHECK_ERR(vt_task_precede(NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_task_depend(NULL, "x"), VT_EINVAL);
    VT_CHECK_OK(vt_graph_new(&g, "nulls"));
    a = vt_task_add(g, "a", body_ok, NULL);
    VT_CHECK_ERR(vt_task_precede(a, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_task_precede(NULL, a), VT_EINVAL);
    VT_CHECK_ERR(vt_task_depend(a, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_task_depend(a, ""), VT_EINVAL);
    VT_CHECK_ERR(vt_graph_validate(g), VT_EINVAL);
    vt_graph_free(g);
}

/* ---- Dependencies ----------------------------------------------------------------------- */

VT_TEST(edges_across_graphs)
{
    vt_graph *g1, *g2;
    VT_CHECK_OK(vt_graph_new(&g1, "one"));
    VT_CHECK_OK(vt_graph_new(&g2, "two"));
    vt_task *a = vt_task_add(g1, "a", body_ok, NULL);
    vt_task *b = vt_task_add(g2, "b", body_ok, NULL);
    VT_CHECK_ERR(vt_task_precede(a, b), VT_EINVAL);
    /* Remembered by (at least) one of the two graphs. */
    vt_err e1 = vt_graph_validate(g1), e2 = vt_graph_validate(g2);
    VT_CHECK(e1 == VT_EINVAL || e2 == VT_EINVAL);
    VT_CHECK(e1 == VT_OK || e1 == VT_EINVAL);
    VT_CHECK(e2 == VT_OK || e2 == VT_EINVAL);
    vt_graph_free(g1);
    vt_graph_free(g2);

    /* By name: a name of another graph is an unknown name. */
    VT_CHECK_OK(vt_graph_new(&g1, "one"));
    VT_CHECK_OK(vt_graph_new(&g2, "two"));
    a = vt_task_add(g1, "a", body_ok, NULL);
    b = vt_task_add(g2, "b", body_ok, NULL);
    VT_CHECK_OK(vt_task_depend(a, "b"));
    VT_CHECK_ERR(vt_graph_validate(g1), VT_ENOENT);
    VT_CHECK_OK(vt_graph_validate(g2));
    vt_graph_free(g1);
    vt_graph_free(g2);
}

VT_TEST(depend_unknown_name)
{
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "unknown"));
    vt_task *a = vt_task_add(g, "compile", body_ok, NULL);
    vt_task_add(g, NULL, body_ok, NULL); /* "#1": not a name to depend on */
    VT_CHECK_OK(vt_task_depend(a, "link-step"));
    VT_CHECK_ERR(vt_graph_validate(g), VT_ENOENT);
    VT_CHECK(has(vt_graph_error(g), "link-step"));
    VT_CHECK(has(vt_graph_error(g), "compile"));
    /* Validation errors are not building errors, but they stay until the
     * graph changes, since nothing else resolves the name. */
    VT_CHECK_ERR(vt_graph_validate(g), VT_ENOENT);
    vt_runtime *rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    VT_CHECK_ERR(vt_graph_run(g, rt, NULL), VT_ENOENT);
    VT_CHECK_EQ(vt_task_state_get(a), VT_TASK_PENDING);
    vt_graph_free(g);

    VT_CHECK_OK(vt_graph_new(&g, "hash"));
    vt_task_add(g, NULL, body_ok, NULL);
    a = vt_task_add(g, "a", body_ok, NULL);
    VT_CHECK_OK(vt_task_depend(a, "#0"));
    VT_CHECK_ERR(vt_graph_validate(g), VT_ENOENT);
    vt_graph_free(g);

    /* Adding the missing task later makes the graph valid. */
    VT_CHECK_OK(vt_graph_new(&g, "later"));
    _Atomic long runs = 0;
    a = vt_task_add(g, "a", body_count, &runs);
    VT_CHECK_OK(vt_task_depend(a, "b"));
    VT_CHECK_ERR(vt_graph_validate(g), VT_ENOENT);
    vt_task *b = vt_task_add(g, "b", body_count, &runs);
    VT_CHECK_OK(vt_graph_validate(g));
    VT_CHECK_OK(vt_graph_run(g, rt, NULL));
    VT_CHECK_EQ(atomic_load(&runs), 2);
    VT_CHECK_EQ(vt_task_state_get(b), VT_TASK_SUCCEEDED);
    vt_graph_free(g);
    vt_runtime_free(rt);
}

VT_TEST(duplicate_names)
{
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "dups"));
    vt_task_add(g, "x", body_ok, NULL);
    vt_task_add(g, "y", body_ok, NULL);
    vt_task_add_async(g, "x", body_ok, NULL);
    VT_CHECK_ERR(vt_graph_validate(g), VT_EEXIST);
    VT_CHECK(has(vt_graph_error(g), "\"x\"") || has(vt_graph_error(g), "x"));
    VT_CHECK_ERR(vt_graph_validate(g), VT_EEXIST);
    vt_runtime *rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    VT_CHECK_ERR(vt_graph_run(g, rt, NULL), VT_EEXIST);
    vt_graph_free(g);
    vt_runtime_free(rt);

    /* Unnamed tasks never clash. */
    VT_CHECK_OK(vt_graph_new(&g, "anon"));
    for (int i = 0; i < 100; i++)
        VT_CHECK_NOT_NULL(vt_task_add(g, NULL, body_ok, NULL));
    VT_CHECK_OK(vt_graph_validate(g));
    vt_graph_free(g);
}

VT_TEST(precede_twice_is_harmless)
{
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "twice"));
    order *o = order_new();
    vt_task *a = vt_task_add(g, "a", body_log, o);
    vt_task *b = vt_task_add(g, "b", body_log, o);
    VT_CHECK_OK(vt_task_precede(a, b));
    VT_CHECK_OK(vt_task_precede(a, b));
    VT_CHECK_OK(vt_task_depend(b, "a"));
    VT_CHECK_OK(vt_graph_validate(g));
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    VT_CHECK_OK(vt_graph_run(g, rt, NULL));
    VT_CHECK_EQ(order_len(o), 2);
    VT_CHECK_PTR_EQ(o->t[0], a);
    VT_CHECK_PTR_EQ(o->t[1], b);
    vt_run_summary s = summary_of(g);
    VT_CHECK_EQ(s.total, 2);
    VT_CHECK_EQ(s.succeeded, 2);
    vt_graph_free(g);
    vt_runtime_free(rt);
    free(o);
}

/* An edge from a later task to an earlier one is no cycle. */
VT_TEST(backward_edges_without_cycle)
{
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "backward"));
    order *o = order_new();
    vt_task *t[6];
    for (int i = 0; i < 6; i++)
        t[i] = vt_task_add(g, NULL, body_log, o);
    /* 5 -> 3 -> 1, 4 -> 2 -> 0, 5 -> 0 */
    VT_CHECK_OK(vt_task_precede(t[5], t[3]));
    VT_CHECK_OK(vt_task_precede(t[3], t[1]));
    VT_CHECK_OK(vt_task_precede(t[4], t[2]));
    VT_CHECK_OK(vt_task_precede(t[2], t[0]));
    VT_CHECK_OK(vt_task_precede(t[5], t[0]));
    VT_CHECK_OK(vt_graph_validate(g));
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    VT_CHECK_OK(vt_graph_run(g, rt, NULL));
    VT_CHECK_EQ(order_len(o), 6);
    VT_CHECK_LT(order_pos(o, t[5]), order_pos(o, t[3]));
    VT_CHECK_LT(order_pos(o, t[3]), order_pos(o, t[1]));
    VT_CHECK_LT(order_pos(o, t[4]), order_pos(o, t[2]));
    VT_CHECK_LT(order_pos(o, t[2]), order_pos(o, t[0]));
    VT_CHECK_LT(order_pos(o, t[5]), order_pos(o, t[0]));
    vt_graph_free(g);
    vt_runtime_free(rt);
    free(o);
}

/* ---- vt_graph_find -------------------------------------------------------------------------- */

VT_TEST(graph_find)
{
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "find"));
    vt_task *a = vt_task_add(g, "alpha", body_ok, NULL);
    vt_task_add(g, NULL, body_ok, NULL);
    vt_task *c = vt_task_add_async(g, "gamma", body_ok, NULL);
    /* Before validation too. */
    VT_CHECK_PTR_EQ(vt_graph_find(g, "alpha"), a);
    VT_CHECK_PTR_EQ(vt_graph_find(g, "gamma"), c);
    VT_CHECK_NULL(vt_graph_find(g, "beta"));
    VT_CHECK_NULL(vt_graph_find(g, ""));
    VT_CHECK_NULL(vt_graph_find(g, NULL));
    VT_CHECK_NULL(vt_graph_find(NULL, "alpha"));
    VT_CHECK_NULL(vt_graph_find(g, "alpha/x"));
    /* Tasks added after a find are found as well. */
    vt_task *d = vt_task_add(g, "delta", body_ok, NULL);
    VT_CHECK_PTR_EQ(vt_graph_find(g, "delta"), d);
    VT_CHECK_OK(vt_graph_validate(g));
    VT_CHECK_PTR_EQ(vt_graph_find(g, "alpha"), a);
    VT_CHECK_PTR_EQ(vt_graph_find(g, "delta"), d);
    vt_graph_free(g);

    /* Many names. */
    VT_CHECK_OK(vt_graph_new(&g, "many"));
    vt_task *ts[2000];
    char name[32];
    for (int i = 0; i < 2000; i++) {
        snprintf(name, sizeof name, "task-%d", i);
        ts[i] = vt_task_add(g, name, body_ok, NULL);
        VT_CHECK_NOT_NULL(ts[i]);
    }
    VT_CHECK_EQ(vt_graph_size(g), 2000);
    for (int i = 0; i < 2000; i++) {
        snprintf(name, sizeof name, "task-%d", i);
        VT_CHECK_PTR_EQ(vt_graph_find(g, name), ts[i]);
    }
    VT_CHECK_NULL(vt_graph_find(g, "task-2000"));
    vt_graph_free(g);
}

/* ---- Cycles --------------------------------------------------------------------------------- */

/* Validates g, expecting VT_ECYCLE with one of the cycles given: each a
 * list of names, NULL-terminated; the lists end with an empty one. */
static void check_cycle(vt_graph *g, const char *const *const *cycles)
{
    VT_CHECK_ERR(vt_graph_validate(g), VT_ECYCLE);
    const char *m = vt_graph_error(g);
    int ok = 0;
    for (size_t k = 0; cycles[k][0]; k++) {
        size_t n = 0;
        while (cycles[k][n])
            n++;
        ok |= cycle_msg_is(m, cycles[k], n);
    }
    if (!ok)
        printf("    cycle message: \"%s\"\n", m);
    VT_CHECK(ok);
    /* Again: the same code and message, and a run refuses too. */
    char *copy = strdup(m);
    VT_CHECK_ERR(vt_graph_validate(g), VT_ECYCLE);
    VT_CHECK_STR_EQ(vt_graph_error(g), copy);
    free(copy);
}

#define CYCLES(...) ((const char *const *const[]){__VA_ARGS__, (const char *const[]){NULL}})
#define NAMES(...) ((const char *const[]){__VA_ARGS__, NULL})

VT_TEST(cycle_self_by_name_is_refused)
{
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "self"));
    vt_task *a = vt_task_add(g, "a", body_ok, NULL);
    VT_CHECK_ERR(vt_task_depend(a, "a"), VT_EINVAL);
    VT_CHECK_ERR(vt_graph_validate(g), VT_EINVAL);
    VT_CHECK(has(vt_graph_error(g), "a"));
    vt_graph_free(g);

    VT_CHECK_OK(vt_graph_new(&g, "self2"));
    a = vt_task_add(g, "a", body_ok, NULL);
    VT_CHECK_ERR(vt_task_precede(a, a), VT_EINVAL);
    VT_CHECK_ERR(vt_graph_validate(g), VT_EINVAL);
    vt_graph_free(g);
}

VT_TEST(cycle_of_two)
{
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "two"));
    vt_task *a = vt_task_add(g, "a", body_ok, NULL);
    vt_task *b = vt_task_add(g, "b", body_ok, NULL);
    VT_CHECK_OK(vt_task_precede(a, b));
    VT_CHECK_OK(vt_task_precede(b, a));
    check_cycle(g, CYCLES(NAMES("a", "b")));
    vt_runtime *rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    VT_CHECK_ERR(vt_graph_run(g, rt, NULL), VT_ECYCLE);
    VT_CHECK_ERR(vt_graph_wait(g, VT_FOREVER), VT_ESTATE);
    vt_graph_free(g);

    /* By names. */
    VT_CHECK_OK(vt_graph_new(&g, "two-names"));
    a = vt_task_add(g, "x", body_ok, NULL);
    b = vt_task_add(g, "y", body_ok, NULL);
    VT_CHECK_OK(vt_task_depend(a, "y"));
    VT_CHECK_OK(vt_task_depend(b, "x"));
    /* x depends on y: the edge is y -> x. */
    check_cycle(g, CYCLES(NAMES("y", "x")));
    VT_CHECK_ERR(vt_graph_run(g, rt, NULL), VT_ECYCLE);
    vt_graph_free(g);
    vt_runtime_free(rt);
}

VT_TEST(cycle_of_three_exact_message)
{
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "three"));
    vt_task *a = vt_task_add(g, "a", body_ok, NULL);
    vt_task *b = vt_task_add(g, "b", body_ok, NULL);
    vt_task *c = vt_task_add(g, "c", body_ok, NULL);
    VT_CHECK_OK(vt_task_precede(a, b));
    VT_CHECK_OK(vt_task_precede(b, c));
    VT_CHECK_OK(vt_task_precede(c, a));
    check_cycle(g, CYCLES(NAMES("a", "b", "c")));
    /* The format of the header's example, whatever the first task. */
    const char *m = vt_graph_error(g);
    VT_CHECK(!strcmp(m, "cycle: a -> b -> c -> a") || !strcmp(m, "cycle: b -> c -> a -> b") ||
             !strcmp(m, "cycle: c -> a -> b -> c"));
    vt_graph_free(g);

    /* The same with names and handles mixed, and edges added in another order. */
    VT_CHECK_OK(vt_graph_new(&g, "mixed"));
    a = vt_task_add(g, "a", body_ok, NULL);
    b = vt_task_add(g, "b", body_ok, NULL);
    c = vt_task_add_async(g, "c", body_ok, NULL);
    VT_CHECK_OK(vt_task_depend(a, "c")); /* c -> a */
    VT_CHECK_OK(vt_task_precede(b, c));  /* b -> c */
    VT_CHECK_OK(vt_task_depend(b, "a")); /* a -> b */
    check_cycle(g, CYCLES(NAMES("a", "b", "c")));
    vt_graph_free(g);
}

VT_TEST(cycle_deep_in_the_graph)
{
    /* A long chain, a fan of side branches, and at the far end a cycle
     * that only the chain reaches. */
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "deep"));
    char name[32];
    vt_task *prev = NULL;
    for (int i = 0; i < 200; i++) {
        snprintf(name, sizeof name, "chain%d", i);
        vt_task *t = vt_task_add(g, name, body_ok, NULL);
        if (prev)
            VT_CHECK_OK(vt_task_precede(prev, t));
        if (i % 10 == 0) {
            snprintf(name, sizeof name, "side%d", i);
            vt_task *s = vt_task_add(g, name, body_ok, NULL);
            VT_CHECK_OK(vt_task_precede(t, s));
        }
        prev = t;
    }
    vt_task *c1 = vt_task_add(g, "c1", body_ok, NULL);
    vt_task *c2 = vt_task_add(g, "c2", body_ok, NULL);
    vt_task *c3 = vt_task_add(g, "c3", body_ok, NULL);
    vt_task *c4 = vt_task_add(g, "c4", body_ok, NULL);
    VT_CHECK_OK(vt_task_precede(prev, c1));
    VT_CHECK_OK(vt_task_precede(c1, c2));
    VT_CHECK_OK(vt_task_precede(c2, c3));
    VT_CHECK_OK(vt_task_precede(c3, c4));
    VT_CHECK_OK(vt_task_precede(c4, c2));
    check_cycle(g, CYCLES(NAMES("c2", "c3", "c4")));
    vt_graph_free(g);
}

VT_TEST(cycle_deep_chain_100k)
{
    /* A search that recursed would overflow the stack here. */
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "chain"));
    enum { N = 100000 };
    vt_task **t = malloc(N * sizeof *t);
    VT_CHECK_NOT_NULL(t);
    for (int i = 0; i < N; i++) {
        t[i] = vt_task_add(g, NULL, body_ok, NULL);
        VT_CHECK_NOT_NULL(t[i]);
        if (i)
            VT_CHECK_OK(vt_task_precede(t[i - 1], t[i]));
    }
    VT_CHECK_OK(vt_graph_validate(g));
    VT_CHECK_OK(vt_task_precede(t[N - 1], t[N - 3]));
    check_cycle(g, CYCLES(NAMES("#99997", "#99998", "#99999")));
    vt_graph_free(g);
    free(t);
}

VT_TEST(cycle_one_of_several)
{
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "several"));
    vt_task *p = vt_task_add(g, "p", body_ok, NULL);
    vt_task *q = vt_task_add(g, "q", body_ok, NULL);
    vt_task *r = vt_task_add(g, "r", body_ok, NULL);
    vt_task *s = vt_task_add(g, "s", body_ok, NULL);
    vt_task *u = vt_task_add(g, "u", body_ok, NULL);
    vt_task *ok = vt_task_add(g, "ok", body_ok, NULL);
    VT_CHECK_OK(vt_task_precede(ok, p));
    VT_CHECK_OK(vt_task_precede(p, q));
    VT_CHECK_OK(vt_task_precede(q, p));
    VT_CHECK_OK(vt_task_precede(r, s));
    VT_CHECK_OK(vt_task_precede(s, u));
    VT_CHECK_OK(vt_task_precede(u, r));
    check_cycle(g, CYCLES(NAMES("p", "q"), NAMES("r", "s", "u")));
    vt_graph_free(g);

    /* Two cycles sharing a task: either one, never a mix. */
    VT_CHECK_OK(vt_graph_new(&g, "eight"));
    vt_task *h = vt_task_add(g, "hub", body_ok, NULL);
    vt_task *x = vt_task_add(g, "x", body_ok, NULL);
    vt_task *y = vt_task_add(g, "y", body_ok, NULL);
    VT_CHECK_OK(vt_task_precede(h, x));
    VT_CHECK_OK(vt_task_precede(x, h));
    VT_CHECK_OK(vt_task_precede(h, y));
    VT_CHECK_OK(vt_task_precede(y, h));
    check_cycle(g, CYCLES(NAMES("hub", "x"), NAMES("hub", "y")));
    vt_graph_free(g);
}

VT_TEST(cycle_among_unnamed)
{
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "anon"));
    vt_task *t[6];
    t[0] = vt_task_add(g, "named", body_ok, NULL);
    for (int i = 1; i < 6; i++)
        t[i] = vt_task_add(g, NULL, body_ok, NULL);
    VT_CHECK_OK(vt_task_precede(t[0], t[1]));
    VT_CHECK_OK(vt_task_precede(t[1], t[3]));
    VT_CHECK_OK(vt_task_precede(t[3], t[4]));
    VT_CHECK_OK(vt_task_precede(t[4], t[3]));
    VT_CHECK_OK(vt_task_precede(t[4], t[5]));
    check_cycle(g, CYCLES(NAMES("#3", "#4")));
    vt_graph_free(g);

    /* Named and unnamed in one cycle. */
    VT_CHECK_OK(vt_graph_new(&g, "both"));
    vt_task *a = vt_task_add(g, NULL, body_ok, NULL);
    vt_task *b = vt_task_add(g, "b", body_ok, NULL);
    vt_task *c = vt_task_add(g, NULL, body_ok, NULL);
    VT_CHECK_OK(vt_task_precede(a, b));
    VT_CHECK_OK(vt_task_precede(b, c));
    VT_CHECK_OK(vt_task_depend(a, "b"));
    check_cycle(g, CYCLES(NAMES("#0", "b")));
    vt_graph_free(g);
}

VT_TEST(cycle_long_named_in_full)
{
    /* Every task of a long cycle is in the message, in order. */
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "long"));
    enum { N = 300 };
    char *names[N];
    vt_task *t[N];
    for (int i = 0; i < N; i++) {
        char buf[32];
        snprintf(buf, sizeof buf, "step-%03d", i);
        names[i] = strdup(buf);
        t[i] = vt_task_add(g, names[i], body_ok, NULL);
    }
    for (int i = 0; i < N; i++)
        VT_CHECK_OK(vt_task_precede(t[i], t[(i + 1) % N]));
    VT_CHECK_ERR(vt_graph_validate(g), VT_ECYCLE);
    int ok = cycle_msg_is(vt_graph_error(g), (const char *const *)names, N);
    if (!ok)
        printf("    message (%zu bytes) starts \"%.80s\", ends \"%s\"\n", strlen(vt_graph_error(g)),
               vt_graph_error(g),
               vt_graph_error(g) + (strlen(vt_graph_error(g)) > 60 ? strlen(vt_graph_error(g)) - 60 : 0));
    for (int i = 0; i < N; i++)
        free(names[i]);
    vt_graph_free(g);
    VT_CHECK(ok);
}

VT_TEST(cycle_added_after_valid)
{
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "later"));
    vt_task *a = vt_task_add(g, "a", body_ok, NULL);
    vt_task *b = vt_task_add(g, "b", body_ok, NULL);
    VT_CHECK_OK(vt_task_precede(a, b));
    VT_CHECK_OK(vt_graph_validate(g));
    vt_task *c = vt_task_add(g, "c", body_ok, NULL);
    VT_CHECK_OK(vt_task_precede(b, c));
    VT_CHECK_OK(vt_graph_validate(g));
    VT_CHECK_OK(vt_task_depend(a, "c"));
    check_cycle(g, CYCLES(NAMES("a", "b", "c")));
    vt_graph_free(g);
}

VT_TEST(validate_large_dag)
{
    /* 100k tasks, random edges from earlier to later and (to defeat an
     * order-of-addition shortcut) from later to earlier in a shuffled
     * numbering that stays acyclic. */
    enum { N = 100000 };
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "big"));
    vt_task **t = malloc(N * sizeof *t);
    uint32_t *rank = malloc(N * sizeof *rank);
    VT_CHECK(t && rank);
    for (uint32_t i = 0; i < N; i++)
        rank[i] = i;
    for (uint32_t i = N - 1; i > 0; i--) {
        uint32_t j = (uint32_t)(vt_test_rand() % (i + 1));
        uint32_t x = rank[i];
        rank[i] = rank[j];
        rank[j] = x;
    }
    for (int i = 0; i < N; i++)
        t[i] = vt_task_add(g, NULL, body_ok, NULL);
    for (int k = 0; k < 3 * N; k++) {
        uint32_t i = (uint32_t)(vt_test_rand() % N), j = (uint32_t)(vt_test_rand() % N);
        if (rank[i] == rank[j])
            continue;
        if (rank[i] < rank[j])
            VT_CHECK_OK(vt_task_precede(t[i], t[j]));
        else
            VT_CHECK_OK(vt_task_precede(t[j], t[i]));
    }
    VT_CHECK_OK(vt_graph_validate(g));
    /* One edge against the ranks closes a cycle somewhere. */
    uint32_t lo = 0, hi = 0;
    for (uint32_t i = 0; i < N; i++) {
        if (rank[i] == 0)
            lo = i;
        if (rank[i] == N - 1)
            hi = i;
    }
    VT_CHECK_OK(vt_task_precede(t[lo], t[hi]));
    VT_CHECK_OK(vt_graph_validate(g));
    VT_CHECK_OK(vt_task_precede(t[hi], t[lo]));
    VT_CHECK_ERR(vt_graph_validate(g), VT_ECYCLE);
    VT_CHECK(has(vt_graph_error(g), "cycle: "));
    vt_graph_free(g);
    free(t);
    free(rank);
}

/* ---- DOT ---------------------------------------------------------------------------------------- */

VT_TEST(dot_before_any_run)
{
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "build"));
    vt_task *a = vt_task_add(g, "a", body_ok, NULL);
    vt_task *b = vt_task_add(g, "b", body_ok, NULL);
    vt_task *c = vt_task_add_async(g, "c", body_ok, NULL);
    vt_task *u = vt_task_add(g, NULL, body_ok, NULL);
    VT_CHECK_OK(vt_task_precede(a, b));
    VT_CHECK_OK(vt_task_precede(a, c));
    VT_CHECK_OK(vt_task_precede(b, u));
    VT_CHECK_OK(vt_task_depend(c, "b"));
    VT_CHECK_OK(vt_graph_validate(g)); /* see dot_before_validation */
    vt_err e;
    char *text = NULL;
    Agraph_t *ag = dot_of(g, &e, &text);
    VT_CHECK_OK(e);
    if (!ag)
        printf("    not DOT:\n%s\n", text ? text : "(null)");
    free(text);
    VT_CHECK_NOT_NULL(ag);
    VT_CHECK(agisdirected(ag));
    VT_CHECK_STR_EQ(agnameof(ag), "build");
    VT_CHECK_EQ(agnnodes(ag), 4);
    Agnode_t *na = agnode(ag, "a", 0), *nb = agnode(ag, "b", 0), *nc = agnode(ag, "c", 0),
             *nu = agnode(ag, "#3", 0);
    VT_CHECK(na && nb && nc && nu);
    VT_CHECK_NOT_NULL(agedge(ag, na, nb, NULL, 0));
    VT_CHECK_NOT_NULL(agedge(ag, na, nc, NULL, 0));
    VT_CHECK_NOT_NULL(agedge(ag, nb, nu, NULL, 0));
    VT_CHECK_NOT_NULL(agedge(ag, nb, nc, NULL, 0)); /* c depends on "b" */
    VT_CHECK_NULL(agedge(ag, nb, na, NULL, 0));
    VT_CHECK_EQ(agnedges(ag), 4);
    /* Every task pending: one colour for all. */
    const char *fa = dot_fill(ag, "a");
    VT_CHECK(fa && *fa);
    VT_CHECK_STR_EQ(dot_fill(ag, "b"), fa);
    VT_CHECK_STR_EQ(dot_fill(ag, "c"), fa);
    VT_CHECK_STR_EQ(dot_fill(ag, "#3"), fa);
    agclose(ag);
    vt_graph_free(g);
}

/* A dependency by name is an edge of the graph even before a validation
 * resolved it. */
VT_TEST(dot_before_validation)
{
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "unvalidated"));
    vt_task_add(g, "a", body_ok, NULL);
    vt_task *b = vt_task_add(g, "b", body_ok, NULL);
    VT_CHECK_OK(vt_task_depend(b, "a"));
    Agraph_t *ag = dot_of(g, NULL, NULL);
    VT_CHECK_NOT_NULL(ag);
    VT_CHECK_EQ(agnnodes(ag), 2);
    VT_CHECK_NOT_NULL(agedge(ag, agnode(ag, "a", 0), agnode(ag, "b", 0), NULL, 0));
    agclose(ag);
    vt_graph_free(g);
}

VT_TEST(dot_names_that_need_quoting)
{
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "the \"graph\""));
    const char *names[] = {"a \"quoted\" name", "back\\slash", "spa ce", "-> arrow", "{brace}",
                           "semi;colon", "node", "edge", "digraph", "é"};
    enum { N = sizeof names / sizeof names[0] };
    vt_task *t[N];
    for (int i = 0; i < N; i++) {
        t[i] = vt_task_add(g, names[i], body_ok, NULL);
        VT_CHECK_NOT_NULL(t[i]);
        if (i)
            VT_CHECK_OK(vt_task_precede(t[i - 1], t[i]));
    }
    char *text = NULL;
    Agraph_t *ag = dot_of(g, NULL, &text);
    if (!ag)
        printf("    not DOT:\n%s\n", text ? text : "(null)");
    free(text);
    VT_CHECK_NOT_NULL(ag);
    VT_CHECK_STR_EQ(agnameof(ag), "the \"graph\"");
    VT_CHECK_EQ(agnnodes(ag), N);
    for (int i = 0; i < N; i++) {
        Agnode_t *n = agnode(ag, (char *)names[i], 0);
        if (!n)
            printf("    node \"%s\" missing\n", names[i]);
        VT_CHECK_NOT_NULL(n);
        if (i)
            VT_CHECK_NOT_NULL(agedge(ag, agnode(ag, (char *)names[i - 1], 0), n, NULL, 0));
    }
    VT_CHECK_EQ(agnedges(ag), N - 1);
    agclose(ag);
    vt_graph_free(g);
}

VT_TEST(dot_errors)
{
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "err"));
    for (int i = 0; i < 2000; i++)
        vt_task_add(g, NULL, body_ok, NULL);
    VT_CHECK_ERR(vt_graph_write_dot(NULL, stdout), VT_EINVAL);
    VT_CHECK_ERR(vt_graph_write_dot(g, NULL), VT_EINVAL);
    FILE *f = fopen("/dev/full", "w");
    if (!f) {
        vt_graph_free(g);
        VT_SKIP("no /dev/full");
    }
    VT_CHECK_ERR(vt_graph_write_dot(g, f), vt_err_from_errno(ENOSPC));
    fclose(f);
    vt_graph_free(g);

    /* An empty graph is a valid empty digraph. */
    VT_CHECK_OK(vt_graph_new(&g, "empty"));
    Agraph_t *ag = dot_of(g, NULL, NULL);
    VT_CHECK_NOT_NULL(ag);
    VT_CHECK_EQ(agnnodes(ag), 0);
    agclose(ag);
    vt_graph_free(g);
}

/* A run with every outcome, then the DOT: the colour says the state. */
typedef struct dot_run {
    vt_group *victims;
} dot_run;

static vt_err body_cancel_group(vt_task_ctx *ctx, void *data)
{
    (void)ctx;
    return vt_group_cancel(((dot_run *)data)->victims);
}

static vt_err body_two_subtasks(vt_task_ctx *ctx, void *data)
{
    (void)data;
    vt_task *x = vt_ctx_add(ctx, "x", body_ok, NULL);
    vt_task *y = vt_ctx_add(ctx, "y", body_ok, NULL);
    if (!x || !y)
        return VT_ENOMEM;
    return vt_task_precede(x, y);
}

VT_TEST(dot_after_a_mixed_run)
{
    vt_graph *g;
    VT_CHECK_OK(vt_graph_new(&g, "mixed"));
    dot_run dr;
    dr.victims = vt_graph_group(g, "victims");
    VT_CHECK_NOT_NULL(dr.victims);
    vt_task *ok1 = vt_task_add(g, "ok1", body_ok, NULL);
    vt_task *ok2 = vt_task_add(g, "ok2", body_ok, NULL);
    vt_task *bad = vt_task_add(g, "bad", body_fail, NULL);
    vt_task *skip1 = vt_task_add(g, "skip1", body_ok, NULL);
    vt_task *skip2 = vt_task_add(g, "skip2", body_ok, NULL);
    vt_task *canceller = vt_task_add(g, "canceller", body_cancel_group, &dr);
    vt_task *victim = vt_task_add(g, "victim", body_ok, NULL);
    vt_task *parent = vt_task_add(g, "parent", body_two_subtasks, NULL);
    VT_CHECK_OK(vt_task_precede(ok1, ok2));
    VT_CHECK_OK(vt_task_precede(bad, skip1));
    VT_CHECK_OK(vt_task_precede(skip1, skip2));
    VT_CHECK_OK(vt_task_precede(ok1, skip2));
    VT_CHECK_OK(vt_task_precede(canceller, victim));
    VT_CHECK_OK(vt_task_set_group(victim, dr.victims));
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_run_opts o = {.on_failure = VT_KEEP_GOING};
    VT_CHECK_ERR(vt_graph_run(g, rt, &o), VT_EFAILED);
    VT_CHECK_EQ(vt_task_state_get(ok1), VT_TASK_SUCCEEDED);
    VT_CHECK_EQ(vt_task_state_get(ok2), VT_TASK_SUCCEEDED);
    VT_CHECK_EQ(vt_task_state_get(bad), VT_TASK_FAILED);
    VT_CHECK_EQ(vt_task_state_get(skip1), VT_TASK_SKIPPED);
    VT_CHECK_EQ(vt_task_state_get(skip2), VT_TASK_SKIPPED);
    VT_CHECK_EQ(vt_task_state_get(canceller), VT_TASK_SUCCEEDED);
    VT_CHECK_EQ(vt_task_state_get(victim), VT_TASK_CANCELLED);
    VT_CHECK_EQ(vt_task_state_get(parent), VT_TASK_SUCCEEDED);

    char *text = NULL;
    Agraph_t *ag = dot_of(g, NULL, &text);
    if (!ag)
        printf("    not DOT:\n%s\n", text ? text : "(null)");
    VT_CHECK_NOT_NULL(ag);
    VT_CHECK_EQ(agnnodes(ag), 10);
    const char *c_ok = dot_fill(ag, "ok1"), *c_bad = dot_fill(ag, "bad"),
               *c_skip = dot_fill(ag, "skip1"), *c_cancel = dot_fill(ag, "victim");
    VT_CHECK(c_ok && c_bad && c_skip && c_cancel);
    VT_CHECK(*c_ok && *c_bad && *c_skip && *c_cancel);
    VT_CHECK_STR_EQ(dot_fill(ag, "ok2"), c_ok);
    VT_CHECK_STR_EQ(dot_fill(ag, "canceller"), c_ok);
    VT_CHECK_STR_EQ(dot_fill(ag, "parent"), c_ok);
    VT_CHECK_STR_EQ(dot_fill(ag, "skip2"), c_skip);
    VT_CHECK(strcmp(c_ok, c_bad) && strcmp(c_ok, c_skip) && strcmp(c_ok, c_cancel));
    VT_CHECK(strcmp(c_bad, c_skip) && strcmp(c_bad, c_cancel) && strcmp(c_skip, c_cancel));

    /* Edges of the graph. */
    VT_CHECK_NOT_NULL(agedge(ag, agnode(ag, "ok1", 0), agnode(ag, "ok2", 0), NULL, 0));
    VT_CHECK_NOT_NULL(agedge(ag, agnode(ag, "bad", 0), agnode(ag, "skip1", 0), NULL, 0));
    VT_CHECK_NOT_NULL(agedge(ag, agnode(ag, "canceller", 0), agnode(ag, "victim", 0), NULL, 0));

    /* The subtasks, succeeded, together in one cluster, with their edge. */
    Agnode_t *x = agnode(ag, "parent/x", 0), *y = agnode(ag, "parent/y", 0);
    VT_CHECK(x && y);
    VT_CHECK_STR_EQ(dot_fill(ag, "parent/x"), c_ok);
    VT_CHECK_NOT_NULL(agedge(ag, x, y, NULL, 0));
    Agraph_t *cluster = NULL;
    for (Agraph_t *s = agfstsubg(ag); s; s = agnxtsubg(s))
        if (!strncmp(agnameof(s), "cluster", 7) && agsubnode(s, x, 0))
            cluster = s;
    VT_CHECK_NOT_NULL(cluster);
    VT_CHECK_NOT_NULL(agsubnode(cluster, y, 0));
    VT_CHECK_NULL(agsubnode(cluster, agnode(ag, "ok1", 0), 0));
    agclose(ag);
    free(text);

    /* vt_graph_find knows the subtasks; vt_graph_size does not count them. */
    VT_CHECK_EQ(vt_graph_size(g), 8);
    vt_task *fx = vt_graph_find(g, "parent/x");
    VT_CHECK_NOT_NULL(fx);
    VT_CHECK_STR_EQ(vt_task_name(fx), "parent/x");
    VT_CHECK_EQ(vt_task_state_get(fx), VT_TASK_SUCCEEDED);
    VT_CHECK_PTR_EQ(vt_task_graph(fx), g);
    vt_graph_free(g);
    vt_runtime_free(rt);
}
