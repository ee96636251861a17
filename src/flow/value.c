/* value.c — a node's value: copies, release, and the record of a value in
 * a task's result blob, which is what the store keeps and a resumed run
 * reads back. */
#include <string.h>

#include "flow_int.h"

const char *vt_value_type_name(vt_value_type t)
{
    switch (t) {
    case VT_VALUE_NONE:
        return "none";
    case VT_VALUE_INT:
        return "int";
    case VT_VALUE_DOUBLE:
        return "double";
    case VT_VALUE_STR:
        return "string";
    case VT_VALUE_BYTES:
        return "bytes";
    case VT_VALUE_PTR:
        return "pointer";
    }
    return "?";
}

void vt__fval_drop(vt__fval *v)
{
    if (v->type == VT_VALUE_PTR) {
        if (v->dtor)
            v->dtor(v->u.p);
    } else if (v->owned) {
        vt_free(v->u.p, v->len + (v->type == VT_VALUE_STR));
    }
    memset(v, 0, sizeof *v);
}

vt_err vt__fval_copy(vt__fval *v, vt_value_type type, const void *p, size_t len)
{
    size_t size = len + (type == VT_VALUE_STR);
    unsigned char *c = vt_alloc(size ? size : 1);
    if (!c)
        return VT_ENOMEM;
    if (len)
        memcpy(c, p, len);
    if (type == VT_VALUE_STR)
        c[len] = '\0';
    v->type = (uint8_t)type;
    v->owned = 1;
    v->len = len;
    v->u.p = c;
    return VT_OK;
}

/* Little-endian whatever the machine, so a store moves between machines. */
static void put64(unsigned char *b, uint64_t x)
{
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(x >> (8 * i));
}

static uint64_t get64(const unsigned char *b)
{
    uint64_t x = 0;
    for (int i = 0; i < 8; i++)
        x |= (uint64_t)b[i] << (8 * i);
    return x;
}

vt_err vt__fval_encode(const vt__fval *v, unsigned char *buf, size_t size, unsigned char **out,
                       size_t *len, int *heap)
{
    size_t payload = 0;
    int kept = 1;
    switch (v->type) {
    case VT_VALUE_INT:
    case VT_VALUE_DOUBLE:
        payload = 8;
        break;
    case VT_VALUE_STR:
        payload = v->len + 1;
        kept = v->len <= VT_FLOW_PERSIST_MAX;
        break;
    case VT_VALUE_BYTES:
        payload = v->len;
        kept = v->len <= VT_FLOW_PERSIST_MAX;
        break;
    case VT_VALUE_PTR:
        kept = 0;
        break;
    default:
        break;
    }
    if (!kept)
        payload = 0;
    size_t need = VT__REC_HEAD + payload;
    unsigned char *b = buf;
    *heap = 0;
    if (need > size) {
        if (!(b = vt_alloc(need)))
            return VT_ENOMEM;
        *heap = 1;
    }
    b[0] = 'v';
    b[1] = kept ? v->type : VT__REC_UNKEPT;
    if (kept) {
        if (v->type == VT_VALUE_INT) {
            put64(b + 2, (uint64_t)v->u.i);
        } else if (v->type == VT_VALUE_DOUBLE) {
            uint64_t bits;
            memcpy(&bits, &v->u.d, 8);
            put64(b + 2, bits);
        } else if (v->type == VT_VALUE_STR || v->type == VT_VALUE_BYTES) {
            if (v->len)
                memcpy(b + 2, v->u.p, v->len);
            if (v->type == VT_VALUE_STR)
                b[2 + v->len] = '\0';
        }
    }
    *out = b;
    *len = need;
    return VT_OK;
}

int vt__fval_decode(const void *data, size_t len, vt__fval *v)
{
    const unsigned char *b = data;
    memset(v, 0, sizeof *v);
    if (!b || len < VT__REC_HEAD || b[0] != 'v')
        return 0;
    size_t n = len - VT__REC_HEAD;
    switch (b[1]) {
    case VT_VALUE_NONE:
        if (n)
            return 0;
        break;
    case VT_VALUE_INT:
        if (n != 8)
            return 0;
        v->u.i = (int64_t)get64(b + 2);
        break;
    case VT_VALUE_DOUBLE: {
        if (n != 8)
            return 0;
        uint64_t bits = get64(b + 2);
        memcpy(&v->u.d, &bits, 8);
        break;
    }
    case VT_VALUE_STR:
        /* The NUL recorded last, and none before it: a string read back
         * is the string that was set. */
        if (n < 1 || b[len - 1] != '\0' || memchr(b + 2, '\0', n - 1))
            return 0;
        v->u.p = (void *)(b + 2);
        v->len = n - 1;
        break;
    case VT_VALUE_BYTES:
        v->u.p = (void *)(b + 2);
        v->len = n;
        break;
    default:
        return 0; /* unkept, or not a record of ours */
    }
    v->type = b[1];
    return 1;
}
