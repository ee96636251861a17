/* dot.c — a flow as Graphviz DOT: its nodes in their states' colours with
 * their values, and an edge from each input. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "flow_int.h"

/* A DOT string. DOT escapes only the quote (\"); a backslash that would
 * escape the quote after it is doubled; control characters are dropped
 * but for newlines, which become DOT's own line break (\n). */
void vt__dot_str(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        if (*s == '\n') {
            fputs("\\n", out);
            continue;
        }
        if (*s == '"')
            fputc('\\', out);
        else if (*s == '\\' && (s[1] == '"' || s[1] == '\0' || s[1] == '\n'))
            fputc('\\', out);
        if ((unsigned char)*s >= 0x20)
            fputc(*s, out);
    }
    fputc('"', out);
}

/* "name" or "name\n= value" into buf. */
static void label(const vt_flow_node *n, int ended, char *buf, size_t size)
{
    const char *name = vt_flow_node_name(n);
    vt__fval v;
    if (!ended || vt_task_state_get(n->t) != VT_TASK_SUCCEEDED ||
        vt__flow_node_view(n, n->f->gen, &v)) {
        snprintf(buf, size, "%s", name);
        return;
    }
    switch (v.type) {
    case VT_VALUE_INT:
        snprintf(buf, size, "%s\n= %" PRId64, name, v.u.i);
        break;
    case VT_VALUE_DOUBLE:
        snprintf(buf, size, "%s\n= %g", name, v.u.d);
        break;
    case VT_VALUE_STR:
        if (v.len <= 40)
            snprintf(buf, size, "%s\n= \"%s\"", name, (const char *)v.u.p);
        else
            snprintf(buf, size, "%s\n= \"%.37s...\"", name, (const char *)v.u.p);
        break;
    case VT_VALUE_BYTES:
        snprintf(buf, size, "%s\n= (%zu bytes)", name, v.len);
        break;
    case VT_VALUE_PTR:
        snprintf(buf, size, "%s\n= (pointer)", name);
        break;
    default:
        snprintf(buf, size, "%s\n(no value)", name);
        break;
    }
}

vt_err vt_flow_write_dot(const vt_flow *f, FILE *out)
{
    if (!f || !out)
        return VT_EINVAL;
    int ended = f->started && !atomic_load_explicit(&((vt_flow *)f)->running, memory_order_acquire);
    fputs("digraph ", out);
    vt__dot_str(out, f->name);
    fputs(" {\n  node [shape=box, style=\"rounded,filled\"];\n", out);
    char buf[512];
    for (size_t i = 0; i < f->n; i++) {
        const vt_flow_node *n = vt__flow_node_at(f, i);
        vt_task_state s = vt_task_state_get(n->t);
        fputs("  ", out);
        vt__dot_str(out, vt_flow_node_name(n));
        fputs(" [label=", out);
        label(n, ended, buf, sizeof buf);
        vt__dot_str(out, buf);
        fprintf(out, ", fillcolor=%s, tooltip=\"%s\"];\n", vt_task_state_colour(s),
                vt_task_state_name(s));
    }
    for (size_t i = 0; i < f->n; i++) {
        const vt_flow_node *n = vt__flow_node_at(f, i);
        for (uint32_t k = 0; k < n->nin; k++) {
            fputs("  ", out);
            vt__dot_str(out, vt_flow_node_name(n->in[k]));
            fputs(" -> ", out);
            vt__dot_str(out, vt_flow_node_name(n));
            if (n->nin > 1)
                fprintf(out, " [label=\"%u\"]", k);
            fputs(";\n", out);
        }
    }
    fputs("}\n", out);
    if (fflush(out) || ferror(out))
        return vt_err_from_errno(errno ? errno : EIO);
    return VT_OK;
}
