/* flow_sum.c — the seed's example as a value graph: a = 1, b = 2,
 * sum = a + b; run it, read sum. With an argument, the flow is also
 * written as Graphviz DOT to that file (the values in the nodes).
 *
 *     flow_sum [FLOW.dot] */
#include <inttypes.h>
#include <stdio.h>

#include <vitte/flow.h>

/* A node's body: the sum of its inputs, which must be ints. */
static vt_err add(vt_flow_ctx *ctx, void *ud)
{
    (void)ud;
    int64_t a, b;
    vt_err e;
    if ((e = vt_flow_in_int(ctx, 0, &a)) || (e = vt_flow_in_int(ctx, 1, &b)))
        return e; /* VT_ETYPE if an input is not an int: the node fails, named */
    return vt_flow_set_int(ctx, a + b);
}

int main(int argc, char **argv)
{
    vt_runtime *rt;
    vt_err e = vt_runtime_new(&rt, NULL);
    if (e) {
        fprintf(stderr, "runtime: %s\n", vt_strerror(e));
        return 1;
    }
    vt_flow *f;
    if ((e = vt_flow_new(&f, "seed"))) {
        fprintf(stderr, "flow: %s\n", vt_strerror(e));
        vt_runtime_free(rt);
        return 1;
    }
    vt_flow_node *a = vt_flow_add_int(f, "a", 1);
    vt_flow_node *b = vt_flow_add_int(f, "b", 2);
    vt_flow_node *sum = vt_flow_add(f, "sum", add, NULL, VT_FLOW_INPUTS(a, b));

    int status = 0;
    int64_t v;
    if ((e = vt_flow_run(f, rt, NULL)) || (e = vt_flow_node_get_int(sum, &v))) {
        fprintf(stderr, "%s: %s\n", vt_strerror(e), vt_flow_error(f));
        status = 1;
    } else {
        printf("sum = %" PRId64 "\n", v); /* sum = 3 */
    }
    if (argc > 1) {
        FILE *out = fopen(argv[1], "w");
        if (!out || vt_flow_write_dot(f, out)) {
            perror(argv[1]);
            status = 1;
        }
        if (out)
            fclose(out);
    }
    vt_flow_free(f);
    vt_runtime_free(rt);
    return status;
}
