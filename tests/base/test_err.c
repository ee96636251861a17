/* test_err.c — vt_strerror, vt_errname, vt_err_from_errno. */
#include <errno.h>
#include <string.h>

#include "base/platform.h"
#include "vt_test.h"

/* The codes as the table lists them, to walk all of them. */
static const struct {
    vt_err code;
    const char *name;
    const char *text;
} all[] = {
#define ROW(name, text) {VT_##name, "VT_" #name, text},
    VT_ERRORS(ROW)
#undef ROW
};
#define N_ALL (sizeof all / sizeof all[0])

VT_TEST(codes_are_dense_from_zero)
{
    VT_CHECK_EQ(N_ALL, (size_t)VT__ERR_COUNT);
    for (size_t i = 0; i < N_ALL; i++)
        VT_CHECK_EQ(all[i].code, i);
    VT_CHECK_EQ(VT_OK, 0);
}

VT_TEST(every_code_has_its_name_and_text)
{
    for (size_t i = 0; i < N_ALL; i++) {
        VT_CHECK_STR_EQ(vt_errname(all[i].code), all[i].name);
        VT_CHECK_STR_EQ(vt_strerror(all[i].code), all[i].text);
        VT_CHECK_GT(strlen(vt_strerror(all[i].code)), 0);
    }
    VT_CHECK_STR_EQ(vt_strerror(VT_OK), "success");
    VT_CHECK_STR_EQ(vt_errname(VT_ETIMEDOUT), "VT_ETIMEDOUT");
    VT_CHECK_STR_EQ(vt_strerror(VT_ETIMEDOUT), "deadline passed");
}

VT_TEST(names_and_texts_are_distinct)
{
    for (size_t i = 0; i < N_ALL; i++) {
        for (size_t j = i + 1; j < N_ALL; j++) {
            VT_CHECK(strcmp(vt_errname(all[i].code), vt_errname(all[j].code)) != 0);
            VT_CHECK(strcmp(vt_strerror(all[i].code), vt_strerror(all[j].code)) != 0);
        }
        VT_CHECK(strcmp(vt_strerror(all[i].code), "unknown error") != 0);
        VT_CHECK(strcmp(vt_errname(all[i].code), "VT_EUNKNOWN") != 0);
    }
}

VT_TEST(from_errno)
{
    VT_CHECK_EQ(vt_err_from_errno(0), VT_OK);
    VT_CHECK_EQ(vt_err_from_errno(ENOENT), (unsigned)VT_ESYSERR | ENOENT);
    VT_CHECK_EQ(vt_err_from_errno(EINTR), (unsigned)VT_ESYSERR | EINTR);
    /* The -errno of a raw system call means the same error. */
    VT_CHECK_EQ(vt_err_from_errno(-EPIPE), (unsigned)VT_ESYSERR | EPIPE);
    VT_CHECK_NE(vt_err_from_errno(EINVAL), VT_EINVAL);
}

/* The text libc gives for e, as vt_strerror must embed it. */
static void expect_sys_text(int e)
{
    char want[256];
    char buf[200];
    /* strerror is not thread-safe; this test is the only thread running. */
    snprintf(buf, sizeof buf, "%s", strerror(e));
    snprintf(want, sizeof want, "system error: %s", buf);
    VT_CHECK_STR_EQ(vt_strerror(vt_err_from_errno(e)), want);
    VT_CHECK_STR_EQ(vt_errname(vt_err_from_errno(e)), "VT_ESYSERR");
}

VT_TEST(syserr_text_embeds_strerror)
{
    int codes[] = {EPERM, ENOENT, EINTR, EAGAIN, ENOMEM, EACCES, EINVAL, EPIPE, ECONNREFUSED, ETIMEDOUT};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        expect_sys_text(codes[i]);
    VT_CHECK_STR_EQ(vt_strerror(vt_err_from_errno(ECONNREFUSED)), "system error: Connection refused");
}

VT_TEST(syserr_strings_stay_valid)
{
    /* The header says the string is static: an earlier result must survive
     * later calls for other system errors. */
    const char *a = vt_strerror(vt_err_from_errno(EPERM));
    const char *b = vt_strerror(vt_err_from_errno(EACCES));
    const char *c = vt_strerror(vt_err_from_errno(ENOENT));
    VT_CHECK_STR_EQ(a, "system error: Operation not permitted");
    VT_CHECK_STR_EQ(b, "system error: Permission denied");
    VT_CHECK_STR_EQ(c, "system error: No such file or directory");
    VT_CHECK_PTR_EQ(vt_strerror(vt_err_from_errno(EPERM)), a);
}

VT_TEST(syserr_limits)
{
    /* Beyond any errno the table holds: still prefixed and numbered. */
    const char *s = vt_strerror(vt_err_from_errno(5000));
    VT_CHECK_EQ(strncmp(s, "system error: ", 14), 0);
    VT_CHECK_NOT_NULL(strstr(s, "5000"));
    VT_CHECK_STR_EQ(vt_errname(vt_err_from_errno(5000)), "VT_ESYSERR");
    /* The largest errno that fits beside the VT_ESYSERR bit. */
    s = vt_strerror((vt_err)0x1FFFFFFF);
    VT_CHECK_EQ(strncmp(s, "system error: ", 14), 0);
    VT_CHECK_NOT_NULL(strstr(s, "268435455"));
    VT_CHECK_STR_EQ(vt_strerror(VT_ESYSERR), "system error");
    VT_CHECK_STR_EQ(vt_errname(VT_ESYSERR), "VT_ESYSERR");
}

VT_TEST(unknown_codes)
{
    vt_err bad[] = {VT__ERR_COUNT, (vt_err)(VT__ERR_COUNT + 1), (vt_err)12345, (vt_err)0x0FFFFFFF,
                    (vt_err)0x20000000, (vt_err)0x30000005, (vt_err)-1};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        VT_CHECK_STR_EQ(vt_strerror(bad[i]), "unknown error");
        VT_CHECK_STR_EQ(vt_errname(bad[i]), "VT_EUNKNOWN");
    }
}

/* Many threads asking at once for system error texts (the first request
 * fills the table): each must read the right text. Checks run after join. */
#define THREADS 8
static _Atomic int go;
static _Atomic int wrong;

static void *ask(void *arg)
{
    (void)arg;
    while (!atomic_load(&go))
        vt__thread_yield();
    const int codes[] = {EPERM, EACCES, ENOENT, EIO};
    const char *want[] = {"system error: Operation not permitted", "system error: Permission denied",
                          "system error: No such file or directory", "system error: Input/output error"};
    for (int round = 0; round < 200; round++) {
        for (int i = 0; i < 4; i++)
            if (strcmp(vt_strerror(vt_err_from_errno(codes[i])), want[i]) != 0)
                atomic_fetch_add(&wrong, 1);
        /* Past the table: formatted per thread, so no other thread's
         * number may show up in ours. */
        char num[16];
        snprintf(num, sizeof num, "%d", 7000 + round);
        const char *s = vt_strerror(vt_err_from_errno(7000 + round));
        if (strncmp(s, "system error: ", 14) != 0 || !strstr(s, num))
            atomic_fetch_add(&wrong, 1);
    }
    return NULL;
}

VT_TEST(syserr_from_many_threads)
{
    vt__thread t[THREADS];
    for (int i = 0; i < THREADS; i++)
        VT_CHECK_OK(vt__thread_create(&t[i], ask, NULL, 0, NULL));
    atomic_store(&go, 1);
    for (int i = 0; i < THREADS; i++)
        VT_CHECK_OK(vt__thread_join(t[i], NULL));
    VT_CHECK_EQ(atomic_load(&wrong), 0);
}
