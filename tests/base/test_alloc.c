/* test_alloc.c — the allocator hook, vt_alloc/calloc/realloc/free/strdup. */
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#include "vt_test.h"

/* A hook that records every call and forwards to malloc; its blocks are
 * filled with 0xAA so that vt_calloc's zeroing is seen to happen. */
typedef struct rec {
    int calls;
    void *ptr;
    size_t old_size, new_size;
    void *ud_seen;
    int fail; /* the next allocation fails */
} rec;

static void *rec_hook(void *ud, void *ptr, size_t old_size, size_t new_size)
{
    rec *r = ud;
    r->calls++;
    r->ptr = ptr;
    r->old_size = old_size;
    r->new_size = new_size;
    r->ud_seen = ud;
    if (new_size == 0) {
        free(ptr);
        return NULL;
    }
    if (r->fail) {
        r->fail = 0;
        return NULL;
    }
    void *p = realloc(ptr, new_size);
    if (p && !ptr)
        memset(p, 0xAA, new_size);
    return p;
}

VT_TEST(hook_sees_every_call)
{
    rec r = {0};
    vt_set_allocator(rec_hook, &r);

    char *p = vt_alloc(10);
    VT_CHECK_NOT_NULL(p);
    VT_CHECK_EQ(r.calls, 1);
    VT_CHECK_PTR_EQ(r.ud_seen, &r);
    VT_CHECK_NULL(r.ptr);
    VT_CHECK_EQ(r.old_size, 0);
    VT_CHECK_EQ(r.new_size, 10);
    memcpy(p, "012345678", 10);

    char *q = vt_realloc(p, 10, 100);
    VT_CHECK_NOT_NULL(q);
    VT_CHECK_EQ(r.calls, 2);
    VT_CHECK_PTR_EQ(r.ptr, p);
    VT_CHECK_EQ(r.old_size, 10);
    VT_CHECK_EQ(r.new_size, 100);
    VT_CHECK_STR_EQ(q, "012345678");

    vt_free(q, 100);
    VT_CHECK_EQ(r.calls, 3);
    VT_CHECK_PTR_EQ(r.ptr, q);
    VT_CHECK_EQ(r.old_size, 100);
    VT_CHECK_EQ(r.new_size, 0);

    vt_free(NULL, 0);
    vt_free(NULL, 123);
    VT_CHECK_EQ(r.calls, 3);

    vt_test_alloc_install();
}

VT_TEST(zero_sizes_are_one_byte_blocks)
{
    rec r = {0};
    vt_set_allocator(rec_hook, &r);
    /* 0 would mean "free" to the hook: vitte asks for 1 byte instead. */
    void *p = vt_alloc(0);
    VT_CHECK_NOT_NULL(p);
    VT_CHECK_EQ(r.new_size, 1);
    void *q = vt_realloc(p, 0, 0);
    VT_CHECK_NOT_NULL(q);
    VT_CHECK_EQ(r.calls, 2);
    VT_CHECK_EQ(r.old_size, 1);
    VT_CHECK_EQ(r.new_size, 1);
    vt_free(q, 0);
    VT_CHECK_EQ(r.calls, 3);
    VT_CHECK_EQ(r.old_size, 1);
    VT_CHECK_EQ(r.new_size, 0);

    void *z = vt_calloc(0, 16);
    VT_CHECK_NOT_NULL(z);
    VT_CHECK_EQ(r.new_size, 1);
    vt_free(z, 0);
    vt_test_alloc_install();
}

VT_TEST(realloc_of_null_allocates)
{
    rec r = {0};
    vt_set_allocator(rec_hook, &r);
    char *p = vt_realloc(NULL, 0, 32);
    VT_CHECK_NOT_NULL(p);
    VT_CHECK_NULL(r.ptr);
    VT_CHECK_EQ(r.old_size, 0);
    VT_CHECK_EQ(r.new_size, 32);
    vt_free(p, 32);
    vt_test_alloc_install();
}

VT_TEST(calloc_overflow_never_reaches_the_hook)
{
    rec r = {0};
    vt_set_allocator(rec_hook, &r);
    VT_CHECK_NULL(vt_calloc(SIZE_MAX / 2 + 1, 2));
    VT_CHECK_NULL(vt_calloc(2, SIZE_MAX / 2 + 1));
    VT_CHECK_NULL(vt_calloc(SIZE_MAX, SIZE_MAX));
    VT_CHECK_NULL(vt_calloc((size_t)1 << (sizeof(size_t) * 4), (size_t)1 << (sizeof(size_t) * 4)));
    VT_CHECK_EQ(r.calls, 0);

    /* The largest product that fits does reach it (and fails there). */
    r.fail = 1;
    VT_CHECK_NULL(vt_calloc(SIZE_MAX / 16, 16));
    VT_CHECK_EQ(r.calls, 1);
    VT_CHECK_EQ(r.new_size, SIZE_MAX / 16 * 16);
    vt_test_alloc_install();
}

VT_TEST(calloc_zeroes)
{
    rec r = {0};
    vt_set_allocator(rec_hook, &r);
    unsigned char *p = vt_calloc(100, 3);
    VT_CHECK_NOT_NULL(p);
    VT_CHECK_EQ(r.new_size, 300);
    for (int i = 0; i < 300; i++)
        VT_CHECK_EQ(p[i], 0);
    vt_free(p, 300);
    vt_test_alloc_install();
}

VT_TEST(failures_return_null)
{
    vt_test_alloc_fail_at(1);
    VT_CHECK_NULL(vt_alloc(8));
    vt_test_alloc_fail_at(1);
    VT_CHECK_NULL(vt_calloc(4, 8));
    vt_test_alloc_fail_at(1);
    VT_CHECK_NULL(vt_strdup("abc"));
    vt_test_alloc_fail_at(1);
    VT_CHECK_NULL(vt_realloc(NULL, 0, 8));
    VT_CHECK_EQ(vt_test_alloc_count(), 1);
}

VT_TEST(realloc_failure_keeps_the_block)
{
    long live = vt_test_alloc_live();
    unsigned char *p = vt_alloc(64);
    VT_CHECK_NOT_NULL(p);
    for (int i = 0; i < 64; i++)
        p[i] = (unsigned char)(i * 7 + 1);

    vt_test_alloc_fail_at(1);
    VT_CHECK_NULL(vt_realloc(p, 64, 4096));
    vt_test_alloc_fail_at(1);
    VT_CHECK_NULL(vt_realloc(p, 64, 16));
    vt_test_alloc_reset();

    for (int i = 0; i < 64; i++)
        VT_CHECK_EQ(p[i], (unsigned char)(i * 7 + 1));
    VT_CHECK_EQ(vt_test_alloc_live(), live + 1);
    /* Still the caller's, with its old size (the harness checks the size). */
    vt_free(p, 64);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

VT_TEST(realloc_keeps_contents)
{
    size_t size = 1;
    unsigned char *p = vt_alloc(size);
    VT_CHECK_NOT_NULL(p);
    p[0] = 1;
    /* Grow and shrink: the common prefix survives each move. */
    size_t sizes[] = {7, 100, 4096, 33, 1 << 20, 5, 1};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        for (size_t i = 0; i < size; i++)
            p[i] = (unsigned char)(i ^ k);
        unsigned char *q = vt_realloc(p, size, sizes[k]);
        VT_CHECK_NOT_NULL(q);
        size_t keep = size < sizes[k] ? size : sizes[k];
        for (size_t i = 0; i < keep; i++)
            VT_CHECK_EQ(q[i], (unsigned char)(i ^ k));
        p = q;
        size = sizes[k];
    }
    vt_free(p, size);
}

VT_TEST(strdup_copies)
{
    long live = vt_test_alloc_live();
    const char *s = "vitte: a string";
    char *d = vt_strdup(s);
    VT_CHECK_NOT_NULL(d);
    VT_CHECK(d != s);
    VT_CHECK_STR_EQ(d, s);
    VT_CHECK_EQ(vt_test_alloc_live(), live + 1);
    vt_free(d, strlen(d) + 1);

    char *e = vt_strdup("");
    VT_CHECK_NOT_NULL(e);
    VT_CHECK_STR_EQ(e, "");
    vt_free(e, 1);

    VT_CHECK_NULL(vt_strdup(NULL));
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

VT_TEST(alloc_count_and_live)
{
    long live = vt_test_alloc_live();
    vt_test_alloc_reset();
    void *a = vt_alloc(1), *b = vt_calloc(2, 2), *c = vt_strdup("x");
    VT_CHECK_EQ(vt_test_alloc_count(), 3);
    VT_CHECK_EQ(vt_test_alloc_live(), live + 3);
    vt_free(a, 1);
    vt_free(b, 4);
    vt_free(c, 2);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

/* NULL puts malloc back; ASan checks that the blocks are used correctly. */
VT_TEST(default_allocator)
{
    vt_set_allocator(NULL, NULL);
    long live = vt_test_alloc_live();

    unsigned char *p = vt_alloc(1);
    VT_CHECK_NOT_NULL(p);
    VT_CHECK_EQ((uintptr_t)p % alignof(max_align_t), 0);
    p[0] = 9;
    p = vt_realloc(p, 1, 1 << 16);
    VT_CHECK_NOT_NULL(p);
    VT_CHECK_EQ(p[0], 9);
    p[(1 << 16) - 1] = 1;
    vt_free(p, 1 << 16);

    unsigned char *z = vt_calloc(1 << 12, 16);
    VT_CHECK_NOT_NULL(z);
    for (size_t i = 0; i < (1 << 12) * 16; i += 997)
        VT_CHECK_EQ(z[i], 0);
    vt_free(z, (1 << 12) * 16);
    VT_CHECK_NULL(vt_calloc(SIZE_MAX / 3, 4));

    char *d = vt_strdup("default");
    VT_CHECK_STR_EQ(d, "default");
    vt_free(d, 8);
    vt_free(NULL, 0);

    /* None of it went through the test allocator. */
    VT_CHECK_EQ(vt_test_alloc_live(), live);
    vt_test_alloc_install();
}

VT_TEST(blocks_are_aligned)
{
    for (size_t size = 1; size <= 257; size += 16) {
        void *p = vt_alloc(size);
        VT_CHECK_NOT_NULL(p);
        VT_CHECK_EQ((uintptr_t)p % alignof(max_align_t), 0);
        vt_free(p, size);
    }
}
