/* test_harness.c — the harness checked by itself: passing checks in
 * process, and, by running fixture.c as a child, that failures, skips,
 * hangs and crashes are reported and counted as documented. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "vt_test.h"

#ifndef VT_HARNESS_FIXTURE
#error "the build defines VT_HARNESS_FIXTURE, the path of the fixture executable"
#endif

typedef struct run {
    int status; /* exit status, or 128 + signal */
    char out[16384];
    char last[256]; /* the last line of output */
} run;

/* Runs the fixture with env assignments and args (shell words, ours only). */
static void run_fixture(run *r, const char *env, const char *args)
{
    char cmd[1024];
    size_t n = 0, got;
    snprintf(cmd, sizeof cmd, "env VT_TEST_TIMEOUT_MULT=1 %s '%s' %s 2>&1", env, VT_HARNESS_FIXTURE,
             args);
    FILE *p = popen(cmd, "r");
    r->status = -1;
    r->out[0] = r->last[0] = '\0';
    if (!p)
        return;
    while (n < sizeof r->out - 1 && (got = fread(r->out + n, 1, sizeof r->out - 1 - n, p)) > 0)
        n += got;
    r->out[n] = '\0';
    int st = pclose(p);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    while (n > 0 && r->out[n - 1] == '\n')
        n--;
    size_t b = n;
    while (b > 0 && r->out[b - 1] != '\n')
        b--;
    snprintf(r->last, sizeof r->last, "%.*s", (int)(n - b), r->out + b);
}

static run r; /* large: keep it off the stack */

static int count(const char *s, const char *what)
{
    int n = 0;
    for (; (s = strstr(s, what)) != NULL; s++)
        n++;
    return n;
}

VT_TEST(checks_pass)
{
    int neg = -1;
    unsigned big = 4000000000u;
    size_t zero = 0;
    VT_CHECK(1 == 1);
    VT_CHECK_EQ(neg, -1);
    VT_CHECK_NE(neg, 1);
    VT_CHECK_LT(neg, 0);
    VT_CHECK_LE(neg, neg);
    VT_CHECK_GT(big, 3u);
    VT_CHECK_GE(zero, 0);
    VT_CHECK_GT(UINT64_MAX, (uint64_t)INT64_MAX);
    VT_CHECK_LT((int64_t)INT64_MIN, 0);
    VT_CHECK_STR_EQ("a", "a");
    VT_CHECK_STR_EQ(NULL, NULL);
    VT_CHECK_PTR_EQ(&r, &r);
    VT_CHECK_NULL(NULL);
    VT_CHECK_NOT_NULL(&r);
    VT_CHECK_OK(VT_OK);
    VT_CHECK_ERR(VT_EINVAL, VT_EINVAL);
}

VT_TEST(seed_and_rand)
{
    VT_CHECK_NE(vt_test_rand(), vt_test_rand());
    VT_CHECK_GE(vt_test_stress(), 1u);
    run_fixture(&r, "VT_TEST_SEED=42", "print_rand print_rand_other");
    VT_CHECK_EQ(r.status, 0);
    VT_CHECK(strncmp(r.out, "VT_TEST_SEED=42\n", 16) == 0);
    char first[sizeof r.out];
    memcpy(first, r.out, sizeof first);
    run_fixture(&r, "VT_TEST_SEED=0x2a", "print_rand print_rand_other");
    VT_CHECK(strstr(first, "rand ") != NULL);
    /* Timings differ between runs; the drawn values must not. */
    const char *a = strstr(first, "rand "), *b = strstr(r.out, "rand ");
    VT_CHECK_NOT_NULL(b);
    VT_CHECK_EQ(strcspn(a, "\n"), strcspn(b, "\n"));
    VT_CHECK(strncmp(a, b, strcspn(a, "\n")) == 0);
    run_fixture(&r, "VT_TEST_SEED=43", "print_rand");
    VT_CHECK(strncmp(a, strstr(r.out, "rand "), strcspn(a, "\n")) != 0);
    /* Each test has its own stream. */
    const char *other = strstr(strstr(first, "print_rand_other"), "rand ");
    VT_CHECK_NOT_NULL(other);
    VT_CHECK(strncmp(a, other, strcspn(other, "\n")) != 0);
    run_fixture(&r, "VT_TEST_SEED=nope", "pass_one");
    VT_CHECK_EQ(r.status, 2);
}

VT_TEST(list_and_filter)
{
    run_fixture(&r, "", "--list 'pass_*'");
    VT_CHECK_EQ(r.status, 0);
    VT_CHECK_STR_EQ(r.out, "pass_one\npass_two\n");
    run_fixture(&r, "", "'pass_*'");
    VT_CHECK_EQ(r.status, 0);
    VT_CHECK_STR_EQ(r.last, "2 passed, 0 failed");
    run_fixture(&r, "", "no_such_test");
    VT_CHECK_EQ(r.status, 2);
    VT_CHECK(strstr(r.out, "no_such_test") != NULL);
    run_fixture(&r, "", "--bogus");
    VT_CHECK_EQ(r.status, 2);
}

VT_TEST(failures_reported)
{
    run_fixture(&r, "", "fail_eq pass_one");
    VT_CHECK_EQ(r.status, 1);
    VT_CHECK(strstr(r.out, "VT_CHECK_EQ(three, 4) failed: 3 vs 4") != NULL);
    VT_CHECK(strstr(r.out, "unreachable") == NULL);
    VT_CHECK(strstr(r.out, "[ FAIL ] fail_eq") != NULL);
    VT_CHECK_STR_EQ(r.last, "1 passed, 1 failed");
    run_fixture(&r, "", "fail_unsigned fail_str fail_ok fail_err");
    VT_CHECK_EQ(r.status, 1);
    VT_CHECK(strstr(r.out, "failed: 18446744073709551615 vs 1") != NULL);
    VT_CHECK(strstr(r.out, "\"abc\" vs NULL") != NULL);
    VT_CHECK(strstr(r.out, "VT_ENOMEM") != NULL);
    VT_CHECK(strstr(r.out, "got VT_OK (success), want VT_ETIMEDOUT") != NULL);
    VT_CHECK_STR_EQ(r.last, "0 passed, 4 failed");
}

VT_TEST(skip_counted)
{
    run_fixture(&r, "", "skip_me pass_one");
    VT_CHECK_EQ(r.status, 0);
    VT_CHECK(strstr(r.out, "not on this machine") != NULL);
    VT_CHECK_STR_EQ(r.last, "1 passed, 0 failed, 1 skipped");
}

VT_TEST(hang_named)
{
    /* 60 s x 0.01: the watchdog fires after 0.6 s. */
    run_fixture(&r, "VT_TEST_TIMEOUT_MULT=0.01", "pass_one hang pass_two");
    VT_CHECK_EQ(r.status, 1);
    VT_CHECK(strstr(r.out, "[ FAIL ] hang: TIMEOUT") != NULL);
    VT_CHECK_STR_EQ(r.last, "2 passed, 1 failed");
    /* In a child, the hang fails one test; the run goes on after it. */
    run_fixture(&r, "VT_TEST_TIMEOUT_MULT=0.01", "--fork hang crash");
    VT_CHECK_EQ(r.status, 1);
    VT_CHECK(strstr(r.out, "[ FAIL ] hang: TIMEOUT") != NULL);
    VT_CHECK(strstr(r.out, "[ FAIL ] crash") != NULL);
    VT_CHECK_STR_EQ(r.last, "0 passed, 2 failed");
    VT_CHECK_EQ(count(r.out, " passed, "), 1); /* the parent's summary only */
}

VT_TEST(fork_isolates_crash)
{
    run_fixture(&r, "", "--fork pass_one crash skip_me pass_two");
    VT_CHECK_EQ(r.status, 1);
    VT_CHECK(strstr(r.out, "[ FAIL ] crash") != NULL);
    VT_CHECK_STR_EQ(r.last, "2 passed, 1 failed, 1 skipped");
}

VT_TEST(alloc_hook)
{
    long live = vt_test_alloc_live();
    vt_test_alloc_fail_at(2);
    char *a = vt_alloc(10);
    char *b = vt_alloc(10);
    char *c = vt_alloc(10);
    VT_CHECK_NOT_NULL(a);
    VT_CHECK_NULL(b);
    VT_CHECK_NOT_NULL(c);
    VT_CHECK_EQ(vt_test_alloc_count(), 3);
    VT_CHECK_EQ(vt_test_alloc_live(), live + 2);
    memset(a, 'x', 10);
    vt_test_alloc_fail_at(1);
    VT_CHECK_NULL(vt_realloc(a, 10, 4096));
    VT_CHECK_EQ(a[9], 'x'); /* a failed realloc leaves the block alone */
    a = vt_realloc(a, 10, 4096);
    VT_CHECK_NOT_NULL(a);
    VT_CHECK_EQ(a[9], 'x');
    VT_CHECK_EQ((uintptr_t)a % _Alignof(max_align_t), 0);
    VT_CHECK_EQ(vt_test_alloc_live(), live + 2);
    vt_free(a, 4096);
    vt_free(c, 10);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
    vt_test_alloc_reset();
    VT_CHECK_EQ(vt_test_alloc_count(), 0);
    run_fixture(&r, "", "fail_wrong_size");
    VT_CHECK_EQ(r.status, 1);
    VT_CHECK(strstr(r.out, "24 bytes released as 16 bytes") != NULL);
}
