/* ctx.c — a node's body: the task body every node runs, which calls the
 * user's function and records its value, and the calls that function
 * makes to read its inputs and set its value. */
#include <string.h>

#include "flow_int.h"

vt_err vt__flow_node_body(vt_task_ctx *tc, void *data)
{
    vt_flow_node *n = data;
    vt_flow *f = n->f;
    n->gen = 0;
    if (VT_LIKELY(n->fn)) {
        /* The value of an earlier attempt or run goes: a retry starts
         * afresh. (A constant keeps its value for good.) */
        if (n->val.type >= VT_VALUE_STR)
            vt__fval_drop(&n->val);
        else
            n->val.type = VT_VALUE_NONE;
        vt_flow_ctx ctx = {n, tc, f->gen};
        vt_err e = n->fn(&ctx, n->ud);
        if (VT_UNLIKELY(e)) {
            vt__fval_drop(&n->val);
            return e;
        }
    }
    if (f->persist) {
        unsigned char buf[64], *rec;
        size_t len;
        int heap;
        vt_err e = vt__fval_encode(&n->val, buf, sizeof buf, &rec, &len, &heap);
        if (!e) {
            e = vt_ctx_set_result(tc, rec, len);
            if (heap)
                vt_free(rec, len);
        }
        if (e) {
            if (n->fn)
                vt__fval_drop(&n->val);
            vt_ctx_fail(tc, "node \"%s\": its value could not be recorded: %s",
                        vt_flow_node_name(n), vt_strerror(e));
            return e;
        }
    }
    n->gen = f->gen;
    return VT_OK;
}

vt_flow_node *vt_flow_ctx_node(vt_flow_ctx *ctx)
{
    return ctx ? ctx->n : NULL;
}

vt_task_ctx *vt_flow_ctx_task(vt_flow_ctx *ctx)
{
    return ctx ? ctx->tc : NULL;
}

size_t vt_flow_ctx_inputs(vt_flow_ctx *ctx)
{
    return ctx ? ctx->n->nin : 0;
}

/* Input i's value, or an error that is also the attempt's message (so a
 * body that returns the error fails with a message naming the nodes). */
static vt_err input(vt_flow_ctx *ctx, size_t i, const char *what, vt__fval *v)
{
    if (!ctx)
        return VT_EINVAL;
    vt_flow_node *n = ctx->n;
    if (i >= n->nin) {
        vt_ctx_fail(ctx->tc, "%s: node \"%s\" has no input %zu (it has %u)", what,
                    vt_flow_node_name(n), i, n->nin);
        return VT_ERANGE;
    }
    vt_flow_node *in = n->in[i];
    if (VT_UNLIKELY(vt__flow_node_view(in, ctx->gen, v))) {
        /* Cannot happen through the task layer, which starts a node only
         * once its inputs succeeded, but for a record that was damaged
         * between the resume's check and the run. */
        vt_ctx_fail(ctx->tc, "%s: node \"%s\": input %zu (\"%s\") has no value", what,
                    vt_flow_node_name(n), i, vt_flow_node_name(in));
        return VT_ESTATE;
    }
    return VT_OK;
}

/* Input i's value when it is there, set in this run, of type want: what
 * a body reads nearly every time, without a call. NULL otherwise (then the
 * slow path says why). */
static inline const vt__fval *fast_input(vt_flow_ctx *ctx, size_t i, vt_value_type want)
{
    if (VT_UNLIKELY(!ctx || i >= ctx->n->nin))
        return NULL;
    const vt_flow_node *in = ctx->n->in[i];
    return VT_LIKELY(in->gen == ctx->gen && in->val.type == want) ? &in->val : NULL;
}

static vt_err typed_input(vt_flow_ctx *ctx, size_t i, const char *what, vt_value_type want,
                          vt__fval *v)
{
    vt_err e = input(ctx, i, what, v);
    if (e)
        return e;
    if (VT_UNLIKELY(v->type != want)) {
        vt_ctx_fail(ctx->tc, "%s: node \"%s\": input %zu (\"%s\") holds %s %s, not %s %s", what,
                    vt_flow_node_name(ctx->n), i, vt_flow_node_name(ctx->n->in[i]),
                    v->type == VT_VALUE_INT || v->type == VT_VALUE_NONE ? "an" : "a",
                    vt_value_type_name((vt_value_type)v->type), want == VT_VALUE_INT ? "an" : "a",
                    vt_value_type_name(want));
        return VT_ETYPE;
    }
    return VT_OK;
}

vt_err vt_flow_in_type(vt_flow_ctx *ctx, size_t i, vt_value_type *type)
{
    vt__fval v;
    if (!type)
        return VT_EINVAL;
    vt_err e = input(ctx, i, "vt_flow_in_type", &v);
    if (!e)
        *type = (vt_value_type)v.type;
    return e;
}

vt_err vt_flow_in_int(vt_flow_ctx *ctx, size_t i, int64_t *out)
{
    vt__fval v;
    if (!out)
        return VT_EINVAL;
    const vt__fval *fv = fast_input(ctx, i, VT_VALUE_INT);
    if (VT_LIKELY(fv)) {
        *out = fv->u.i;
        return VT_OK;
    }
    vt_err e = typed_input(ctx, i, "vt_flow_in_int", VT_VALUE_INT, &v);
    if (!e)
        *out = v.u.i;
    return e;
}

vt_err vt_flow_in_double(vt_flow_ctx *ctx, size_t i, double *out)
{
    vt__fval v;
    if (!out)
        return VT_EINVAL;
    const vt__fval *fv = fast_input(ctx, i, VT_VALUE_DOUBLE);
    if (VT_LIKELY(fv)) {
        *out = fv->u.d;
        return VT_OK;
    }
    vt_err e = typed_input(ctx, i, "vt_flow_in_double", VT_VALUE_DOUBLE, &v);
    if (!e)
        *out = v.u.d;
    return e;
}

vt_err vt_flow_in_str(vt_flow_ctx *ctx, size_t i, const char **s, size_t *len)
{
    vt__fval v;
    if (!s)
        return VT_EINVAL;
    const vt__fval *fv = fast_input(ctx, i, VT_VALUE_STR);
    if (VT_LIKELY(fv)) {
        *s = fv->u.p;
        if (len)
            *len = fv->len;
        return VT_OK;
    }
    vt_err e = typed_input(ctx, i, "vt_flow_in_str", VT_VALUE_STR, &v);
    if (!e) {
        *s = v.u.p;
        if (len)
            *len = v.len;
    }
    return e;
}

vt_err vt_flow_in_bytes(vt_flow_ctx *ctx, size_t i, const void **p, size_t *len)
{
    vt__fval v;
    if (!p)
        return VT_EINVAL;
    const vt__fval *fv = fast_input(ctx, i, VT_VALUE_BYTES);
    if (VT_LIKELY(fv)) {
        *p = fv->u.p;
        if (len)
            *len = fv->len;
        return VT_OK;
    }
    vt_err e = typed_input(ctx, i, "vt_flow_in_bytes", VT_VALUE_BYTES, &v);
    if (!e) {
        *p = v.u.p;
        if (len)
            *len = v.len;
    }
    return e;
}

vt_err vt_flow_in_ptr(vt_flow_ctx *ctx, size_t i, void **p)
{
    vt__fval v;
    if (!p)
        return VT_EINVAL;
    const vt__fval *fv = fast_input(ctx, i, VT_VALUE_PTR);
    if (VT_LIKELY(fv)) {
        *p = fv->u.p;
        return VT_OK;
    }
    vt_err e = typed_input(ctx, i, "vt_flow_in_ptr", VT_VALUE_PTR, &v);
    if (!e)
        *p = v.u.p;
    return e;
}

/* The next start must drop this value (the node may not run again to do
 * it). Read before written, so that nodes do not all write the flag's
 * line, which every worker would then keep taking from the others. */
static void note_heap(vt_flow *f)
{
    if (!atomic_load_explicit(&f->heap_values, memory_order_relaxed))
        atomic_store_explicit(&f->heap_values, 1, memory_order_relaxed);
}

static void replace(vt_flow_ctx *ctx, const vt__fval *v)
{
    vt_flow_node *n = ctx->n;
    if (n->val.type >= VT_VALUE_STR)
        vt__fval_drop(&n->val);
    n->val = *v;
    if (v->type >= VT_VALUE_STR)
        note_heap(n->f);
}

/* Scalars are written field by field: a value built on the stack and
 * copied whole is read back as one 16-byte load from two smaller stores,
 * which the store buffer cannot forward (a stall of a dozen cycles, a
 * good part of what a node costs). */
static vt__fval *scalar_slot(vt_flow_ctx *ctx)
{
    vt__fval *v = &ctx->n->val;
    if (VT_UNLIKELY(v->type >= VT_VALUE_STR))
        vt__fval_drop(v);
    v->owned = 0;
    return v;
}

vt_err vt_flow_set_int(vt_flow_ctx *ctx, int64_t x)
{
    if (!ctx)
        return VT_EINVAL;
    vt__fval *v = scalar_slot(ctx);
    v->u.i = x;
    v->type = VT_VALUE_INT;
    return VT_OK;
}

vt_err vt_flow_set_double(vt_flow_ctx *ctx, double x)
{
    if (!ctx)
        return VT_EINVAL;
    vt__fval *v = scalar_slot(ctx);
    v->u.d = x;
    v->type = VT_VALUE_DOUBLE;
    return VT_OK;
}

static vt_err set_blob(vt_flow_ctx *ctx, vt_value_type type, const void *p, size_t len)
{
    if (len > VT_FLOW_VALUE_MAX)
        return VT_ERANGE;
    vt__fval v = {0};
    vt_err e = vt__fval_copy(&v, type, p, len);
    if (e)
        return e;
    replace(ctx, &v);
    return VT_OK;
}

vt_err vt_flow_set_str(vt_flow_ctx *ctx, const char *s)
{
    if (!ctx || !s)
        return VT_EINVAL;
    return set_blob(ctx, VT_VALUE_STR, s, strlen(s));
}

vt_err vt_flow_set_bytes(vt_flow_ctx *ctx, const void *p, size_t len)
{
    if (!ctx || (!p && len))
        return VT_EINVAL;
    return set_blob(ctx, VT_VALUE_BYTES, p, len);
}

vt_err vt_flow_set_ptr(vt_flow_ctx *ctx, void *p, vt_value_dtor dtor)
{
    if (!ctx)
        return VT_EINVAL;
    replace(ctx, &(vt__fval){.type = VT_VALUE_PTR, .u.p = p, .dtor = dtor});
    return VT_OK;
}
