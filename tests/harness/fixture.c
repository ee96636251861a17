/* fixture.c — tests that fail, hang, crash and skip on purpose, run as a
 * child by test_harness.c to check what the harness reports. Not a ctest
 * test of its own: most of these are meant to fail. */
#include <stdlib.h>

#include "vt_test.h"

VT_TEST(pass_one)
{
    VT_CHECK_EQ(1 + 1, 2);
}

VT_TEST(pass_two)
{
    VT_CHECK(1);
}

VT_TEST(fail_eq)
{
    int three = 3;
    VT_CHECK_EQ(three, 4);
    VT_CHECK(!"unreachable: a failed check returns");
}

VT_TEST(fail_unsigned)
{
    VT_CHECK_LT(UINT64_MAX, (uint64_t)1);
}

VT_TEST(fail_str)
{
    VT_CHECK_STR_EQ("abc", NULL);
}

VT_TEST(fail_ok)
{
    VT_CHECK_OK(VT_ENOMEM);
}

VT_TEST(fail_err)
{
    VT_CHECK_ERR(VT_OK, VT_ETIMEDOUT);
}

VT_TEST(fail_wrong_size)
{
    void *p = vt_alloc(24);
    VT_CHECK_NOT_NULL(p);
    vt_free(p, 16);
}

VT_TEST(skip_me)
{
    VT_SKIP("not on this machine");
}

VT_TEST(hang)
{
    for (;;)
        pause();
}

VT_TEST(crash)
{
    abort();
}

VT_TEST(print_rand)
{
    printf("rand %llu %llu\n", (unsigned long long)vt_test_rand(),
           (unsigned long long)vt_test_rand());
}

VT_TEST(print_rand_other)
{
    printf("rand %llu\n", (unsigned long long)vt_test_rand());
}
