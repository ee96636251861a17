/* What a value graph's node costs over a plain task of the task graph it
 * runs on: the same graph, built both ways, run again and again, in ns per
 * node, on 1 and 2 threads.
 *
 *   flow_node        a binary tree reduction of 2^18 - 1 nodes: 2^17 leaves
 *                    holding their index, each inner node the sum of its two
 *                    children; the root must hold the sum of the leaves
 *   flow_node_chain  2^18 nodes in a line: the first holds 0, each next one
 *                    its input plus one; the last must hold 2^18 - 1
 *
 * Impls:
 *   vitte  a vt_flow: constants (vt_flow_add_int) for the leaves and the
 *          chain's head, vt_flow_add nodes whose body reads its inputs with
 *          vt_flow_in_int and sets vt_flow_set_int; unnamed nodes, no store
 *   task   a vt_graph of the same shape, unnamed tasks whose body reads its
 *          predecessors' values from an array the benchmark keeps and writes
 *          its own there: the work a value graph does, without the flow
 *   task_result  the same graph with values passed the task layer's way:
 *          named tasks ("n<k>"), each sets its value as its result blob
 *          (vt_ctx_set_result) and reads its inputs' with vt_ctx_dep_result
 *          by name — what a flow built on task's results alone would cost
 *          (the flow keeps values in its nodes instead, see docs/flow.md)
 *
 * Both are built once per case (outside the timing) and each repetition is
 * one run (vt_flow_run / vt_graph_run) of the whole graph; the figure is
 * the run's time per node. The result is checked after every run.
 *
 * Extras: nodes=; vitte lines: task_ns= (the task line's median, same
 * threads) and overhead_ns= (the difference: what a node adds to a task);
 * build_ns= (per node, from the warm-up's build); T > 1 threads:
 * vs_1thread=. --nodes sets the size (the tree has nodes - 1). */
#include "bench.h"

#include "vitte/flow.h"

enum {
    IMPL_VITTE,
    IMPL_TASK,
    IMPL_TASK_RESULT,
    N_IMPLS
};

static const bench_impl impls[N_IMPLS] = {{"vitte", 1}, {"task", 1}, {"task_result", 1}};

enum {
    SHAPE_TREE,
    SHAPE_CHAIN,
    N_SHAPES
};

static const char *const shape_names[N_SHAPES] = {"flow_node", "flow_node_chain"};

typedef struct node_ctx {
    int shape, impl;
    size_t n;
    vt_runtime *rt;
    vt_flow *f;
    vt_flow_node *last; /* the root or the chain's end */
    vt_graph *g;
    int64_t *val;     /* task: each task's value */
    struct tnode *tn; /* task: each task's data */
    double build_ns;
} node_ctx;

#define MAX_CASES (N_SHAPES * N_IMPLS * BENCH_MAX_THREADS)
static bench_case cases[MAX_CASES];
static node_ctx ctxs[MAX_CASES];

/* ---- The flow ------------------------------------------------------------------------ */

static vt_err flow_sum2(vt_flow_ctx *ctx, void *ud)
{
    (void)ud;
    int64_t a, b;
    vt_err e;
    if ((e = vt_flow_in_int(ctx, 0, &a)) || (e = vt_flow_in_int(ctx, 1, &b)))
        return e;
    return vt_flow_set_int(ctx, a + b);
}

static vt_err flow_next(vt_flow_ctx *ctx, void *ud)
{
    (void)ud;
    int64_t a;
    vt_err e = vt_flow_in_int(ctx, 0, &a);
    return e ? e : vt_flow_set_int(ctx, a + 1);
}

/* The tree in breadth-first order: node k's children are 2k+1 and 2k+2;
 * built from the leaves up, so that inputs exist before their node. */
static int build_flow(node_ctx *x)
{
    if (vt_flow_new(&x->f, shape_names[x->shape]))
        return -1;
    vt_flow_node **nodes = malloc(x->n * sizeof *nodes);
    if (!nodes)
        return -1;
    if (x->shape == SHAPE_TREE) {
        size_t inner = x->n / 2;
        for (size_t k = x->n; k-- > 0;) {
            if (k >= inner)
                nodes[k] = vt_flow_add_int(x->f, NULL, (int64_t)(k - inner));
            else
                nodes[k] = vt_flow_add(x->f, NULL, flow_sum2, NULL, &nodes[2 * k + 1], 2);
        }
        x->last = nodes[0];
    } else {
        nodes[0] = vt_flow_add_int(x->f, NULL, 0);
        for (size_t k = 1; k < x->n; k++)
            nodes[k] = vt_flow_add(x->f, NULL, flow_next, NULL, &nodes[k - 1], 1);
        x->last = nodes[x->n - 1];
    }
    free(nodes);
    if (vt_flow_validate(x->f)) {
        fprintf(stderr, "error: building the flow: %s\n", vt_flow_error(x->f));
        return -1;
    }
    return 0;
}

/* ---- The task graph ---------------------------------------------------------------------- */

typedef struct tnode {
    int64_t *val;
    size_t k, inner;
} tnode;

static vt_err task_tree(vt_task_ctx *ctx, void *data)
{
    (void)ctx;
    tnode *t = data;
    if (t->k >= t->inner)
        t->val[t->k] = (int64_t)(t->k - t->inner);
    else
        t->val[t->k] = t->val[2 * t->k + 1] + t->val[2 * t->k + 2];
    return VT_OK;
}

static vt_err task_chain(vt_task_ctx *ctx, void *data)
{
    (void)ctx;
    tnode *t = data;
    t->val[t->k] = t->k ? t->val[t->k - 1] + 1 : 0;
    return VT_OK;
}

/* Values through the task layer's result blobs, inputs found by name. */
static vt_err result_tree(vt_task_ctx *ctx, void *data)
{
    tnode *t = data;
    int64_t v;
    if (t->k >= t->inner) {
        v = (int64_t)(t->k - t->inner);
    } else {
        char name[32];
        const void *a, *b;
        size_t la, lb;
        snprintf(name, sizeof name, "n%zu", 2 * t->k + 1);
        vt_err e = vt_ctx_dep_result(ctx, name, &a, &la);
        snprintf(name, sizeof name, "n%zu", 2 * t->k + 2);
        if (e || (e = vt_ctx_dep_result(ctx, name, &b, &lb)))
            return e;
        int64_t x, y;
        memcpy(&x, a, sizeof x);
        memcpy(&y, b, sizeof y);
        v = x + y;
    }
    t->val[t->k] = v;
    return vt_ctx_set_result(ctx, &v, sizeof v);
}

static vt_err result_chain(vt_task_ctx *ctx, void *data)
{
    tnode *t = data;
    int64_t v = 0;
    if (t->k) {
        char name[32];
        const void *a;
        size_t la;
        snprintf(name, sizeof name, "n%zu", t->k - 1);
        vt_err e = vt_ctx_dep_result(ctx, name, &a, &la);
        if (e)
            return e;
        memcpy(&v, a, sizeof v);
        v++;
    }
    t->val[t->k] = v;
    return vt_ctx_set_result(ctx, &v, sizeof v);
}

static int build_graph(node_ctx *x)
{
    if (vt_graph_new(&x->g, shape_names[x->shape]) || !(x->val = calloc(x->n, sizeof *x->val)) ||
        !(x->tn = calloc(x->n, sizeof *x->tn)))
        return -1;
    tnode *tn = x->tn;
    vt_task **t = malloc(x->n * sizeof *t);
    if (!t)
        return -1;
    size_t inner = x->n / 2;
    int bad = 0;
    for (size_t i = 0; i < x->n && !bad; i++) {
        /* The flow's order of addition: leaves first for the tree. */
        size_t k = x->shape == SHAPE_TREE ? x->n - 1 - i : i;
        tn[k] = (tnode){.val = x->val, .k = k, .inner = inner};
        if (x->impl == IMPL_TASK_RESULT) {
            char name[32];
            snprintf(name, sizeof name, "n%zu", k);
            t[k] = vt_task_add(x->g, name, x->shape == SHAPE_TREE ? result_tree : result_chain,
                               &tn[k]);
        } else {
            t[k] = vt_task_add(x->g, NULL, x->shape == SHAPE_TREE ? task_tree : task_chain, &tn[k]);
        }
        if (!t[k])
            bad = 1;
        else if (x->shape == SHAPE_TREE && k < inner)
            bad = vt_task_precede(t[2 * k + 1], t[k]) || vt_task_precede(t[2 * k + 2], t[k]);
        else if (x->shape == SHAPE_CHAIN && k)
            bad = vt_task_precede(t[k - 1], t[k]) != VT_OK;
    }
    free(t);
    if (bad || vt_graph_validate(x->g)) {
        fprintf(stderr, "error: building the task graph: %s\n", vt_graph_error(x->g));
        return -1;
    }
    return 0;
}

/* ---- Repetitions --------------------------------------------------------------------------- */

static int64_t want(const node_ctx *x)
{
    if (x->shape == SHAPE_CHAIN)
        return (int64_t)x->n - 1;
    int64_t leaves = (int64_t)(x->n - x->n / 2);
    return leaves * (leaves - 1) / 2;
}

static int rep_vitte(bench_case *c, double *ns)
{
    node_ctx *x = c->ctx;
    int64_t t0 = bench_now_ns();
    vt_err e = vt_flow_run(x->f, x->rt, NULL);
    int64_t t1 = bench_now_ns();
    if (e)
        return bench_fail(c, "vt_flow_run: %s (%s)", vt_strerror(e), vt_flow_error(x->f));
    int64_t v;
    if ((e = vt_flow_node_get_int(x->last, &v)))
        return bench_fail(c, "reading the result: %s", vt_flow_error(x->f));
    if (v != want(x))
        return bench_fail(c, "the result is %lld, expected %lld", (long long)v, (long long)want(x));
    *ns = (double)(t1 - t0) / (double)x->n;
    return 0;
}

static int rep_task(bench_case *c, double *ns)
{
    node_ctx *x = c->ctx;
    memset(x->val, 0xff, x->n * sizeof *x->val);
    int64_t t0 = bench_now_ns();
    vt_err e = vt_graph_run(x->g, x->rt, NULL);
    int64_t t1 = bench_now_ns();
    if (e)
        return bench_fail(c, "vt_graph_run: %s (%s)", vt_strerror(e), vt_graph_error(x->g));
    int64_t v = x->shape == SHAPE_TREE ? x->val[0] : x->val[x->n - 1];
    if (v != want(x))
        return bench_fail(c, "the result is %lld, expected %lld", (long long)v, (long long)want(x));
    *ns = (double)(t1 - t0) / (double)x->n;
    return 0;
}

static void add_extras(int nc)
{
    for (int i = 0; i < nc; i++) {
        bench_case *c = &cases[i];
        node_ctx *x = c->ctx;
        if (c->failed || !c->n)
            continue;
        bench_extra(c, "nodes=%zu build_ns=%.1f", x->n, x->build_ns);
        for (int j = 0; j < nc; j++) {
            bench_case *o = &cases[j];
            if (o->failed || !o->n || strcmp(o->name, c->name))
                continue;
            double me = bench_median(c->samples, c->n), it = bench_median(o->samples, o->n);
            if (x->impl == IMPL_VITTE && ((node_ctx *)o->ctx)->impl == IMPL_TASK &&
                o->threads == c->threads)
                bench_extra(c, "task_ns=%.2f overhead_ns=%.2f", it, me - it);
            if (c->threads > 1 && o->threads == 1 && !strcmp(o->impl, c->impl))
                bench_extra(c, "vs_1thread=%.2f", me / it);
        }
    }
}

int main(int argc, char **argv)
{
    long nodes = 1L << 18;
    const bench_opt opts[] = {{"--nodes", &nodes, "nodes per graph (the tree: one fewer)"},
                              {NULL, NULL, NULL}};
    bench_args a;
    bench_parse(&a, argc, argv, impls, N_IMPLS, 1, opts);
    if (nodes < 3 || nodes > (1L << 26)) {
        fprintf(stderr, "%s: --nodes between 3 and 2^26\n", argv[0]);
        return 2;
    }
    int status = 0, nc = 0;
    vt_runtime *rts[BENCH_MAX_THREADS] = {NULL};
    for (int t = 0; t < a.n_threads; t++) {
        vt_runtime_opts o;
        vt_runtime_opts_init(&o);
        o.pool.workers = a.threads[t];
        o.pool.name = "bench";
        if (vt_runtime_new(&rts[t], &o)) {
            fprintf(stderr, "error: vt_runtime_new(%u workers)\n", a.threads[t]);
            rts[t] = NULL;
            status = 1;
        }
    }
    for (int s = 0; s < N_SHAPES; s++) {
        for (int t = 0; t < a.n_threads; t++) {
            if (!rts[t])
                continue;
            for (int k = 0; k < N_IMPLS; k++) {
                if (!a.impl_on[k])
                    continue;
                node_ctx *x = &ctxs[nc];
                *x = (node_ctx){.shape = s,
                                .impl = k,
                                .n = s == SHAPE_TREE ? (size_t)nodes - 1 : (size_t)nodes,
                                .rt = rts[t]};
                int64_t t0 = bench_now_ns();
                int bad = k == IMPL_VITTE ? build_flow(x) : build_graph(x);
                x->build_ns = (double)(bench_now_ns() - t0) / (double)x->n;
                if (bad) {
                    status = 1;
                    continue;
                }
                cases[nc++] = (bench_case){.name = shape_names[s],
                                           .impl = impls[k].name,
                                           .threads = a.threads[t],
                                           .rep = k == IMPL_VITTE ? rep_vitte : rep_task,
                                           .ctx = x};
            }
        }
    }
    bench_run(cases, nc, &a);
    add_extras(nc);
    status |= bench_report(cases, nc);
    for (int i = 0; i < MAX_CASES; i++) {
        vt_flow_free(ctxs[i].f);
        vt_graph_free(ctxs[i].g);
        free(ctxs[i].val);
        free(ctxs[i].tn);
    }
    for (int t = 0; t < a.n_threads; t++)
        vt_runtime_free(rts[t]);
    return status;
}
