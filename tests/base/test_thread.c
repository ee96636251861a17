/* test_thread.c — vt__thread_create/join/set_name/id/yield. Results computed
 * on a thread are stored and checked after the join. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/platform.h"
#include "vt_test.h"

static void *twice(void *arg)
{
    return (void *)((intptr_t)arg * 2);
}

VT_TEST(create_join_returns_result)
{
    vt__thread t;
    void *res = NULL;
    VT_CHECK_OK(vt__thread_create(&t, twice, (void *)(intptr_t)21, 0, NULL));
    VT_CHECK_OK(vt__thread_join(t, &res));
    VT_CHECK_EQ((intptr_t)res, 42);
    /* The result may be ignored. */
    VT_CHECK_OK(vt__thread_create(&t, twice, (void *)(intptr_t)1, 0, NULL));
    VT_CHECK_OK(vt__thread_join(t, NULL));
}

VT_TEST(many_threads)
{
    enum { N = 32 };
    vt__thread t[N];
    for (intptr_t i = 0; i < N; i++)
        VT_CHECK_OK(vt__thread_create(&t[i], twice, (void *)i, 0, i % 2 ? "odd" : NULL));
    for (intptr_t i = 0; i < N; i++) {
        void *res;
        VT_CHECK_OK(vt__thread_join(t[i], &res));
        VT_CHECK_EQ((intptr_t)res, 2 * i);
    }
}

VT_TEST(bad_arguments)
{
    vt__thread t;
    VT_CHECK_ERR(vt__thread_create(&t, NULL, NULL, 0, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt__thread_create(NULL, twice, NULL, 0, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt__thread_create(&t, twice, NULL, SIZE_MAX, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt__thread_create(&t, twice, NULL, SIZE_MAX, "named"), VT_EINVAL);
}

/* ---- Names ------------------------------------------------------------------------ */

typedef struct named {
    char name[32];
    int rc;
} named;

static void *read_name(void *arg)
{
    named *n = arg;
    n->rc = pthread_getname_np(pthread_self(), n->name, sizeof n->name);
    return NULL;
}

static void expect_thread_name(const char *give, const char *want)
{
    named n = {{0}, -1};
    vt__thread t;
    VT_CHECK_OK(vt__thread_create(&t, read_name, &n, 0, give));
    VT_CHECK_OK(vt__thread_join(t, NULL));
    VT_CHECK_EQ(n.rc, 0);
    VT_CHECK_STR_EQ(n.name, want);
}

VT_TEST(thread_names)
{
    expect_thread_name("worker-1", "worker-1");
    expect_thread_name("exactly15chars!", "exactly15chars!");
    /* The kernel keeps 15 characters. */
    expect_thread_name("0123456789abcdefghij", "0123456789abcde");
}

VT_TEST(unnamed_thread_keeps_the_inherited_name)
{
    char mine[32];
    VT_CHECK_EQ(pthread_getname_np(pthread_self(), mine, sizeof mine), 0);
    expect_thread_name(NULL, mine);
    expect_thread_name("", mine);
}

VT_TEST(set_name_of_the_calling_thread)
{
    char saved[32], now[32];
    VT_CHECK_EQ(pthread_getname_np(pthread_self(), saved, sizeof saved), 0);
    vt__thread_set_name("vt-main");
    VT_CHECK_EQ(pthread_getname_np(pthread_self(), now, sizeof now), 0);
    VT_CHECK_STR_EQ(now, "vt-main");
    vt__thread_set_name("a-name-far-longer-than-fifteen");
    VT_CHECK_EQ(pthread_getname_np(pthread_self(), now, sizeof now), 0);
    VT_CHECK_STR_EQ(now, "a-name-far-long");
    vt__thread_set_name(NULL); /* ignored */
    VT_CHECK_EQ(pthread_getname_np(pthread_self(), now, sizeof now), 0);
    VT_CHECK_STR_EQ(now, "a-name-far-long");
    vt__thread_set_name(saved);
}

static _Atomic int ran;

static void *mark_ran(void *arg)
{
    (void)arg;
    atomic_store(&ran, 1);
    return NULL;
}

VT_TEST(named_creation_out_of_memory)
{
    atomic_store(&ran, 0);
    long live = vt_test_alloc_live();
    /* Naming takes one allocation; when it fails nothing starts. */
    vt__thread t;
    vt_test_alloc_fail_at(1);
    VT_CHECK_ERR(vt__thread_create(&t, mark_ran, NULL, 0, "oom"), VT_ENOMEM);
    VT_CHECK_EQ(vt_test_alloc_count(), 1);
    VT_CHECK_EQ(atomic_load(&ran), 0);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
    /* ... and the next try succeeds; the block is gone once it runs. */
    named n = {{0}, -1};
    VT_CHECK_OK(vt__thread_create(&t, read_name, &n, 0, "oom"));
    VT_CHECK_OK(vt__thread_join(t, NULL));
    VT_CHECK_STR_EQ(n.name, "oom");
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

/* ---- Stacks ----------------------------------------------------------------------- */

typedef struct stackinfo {
    size_t size;
    int rc;
} stackinfo;

static void *read_stack(void *arg)
{
    stackinfo *s = arg;
    pthread_attr_t attr;
    s->rc = pthread_getattr_np(pthread_self(), &attr);
    if (s->rc == 0) {
        s->rc = pthread_attr_getstacksize(&attr, &s->size);
        pthread_attr_destroy(&attr);
    }
    return NULL;
}

static void expect_stack_at_least(size_t ask, size_t want)
{
    stackinfo s = {0, -1};
    vt__thread t;
    VT_CHECK_OK(vt__thread_create(&t, read_stack, &s, ask, "stack"));
    VT_CHECK_OK(vt__thread_join(t, NULL));
    VT_CHECK_EQ(s.rc, 0);
    VT_CHECK_GE(s.size, want);
}

VT_TEST(stack_size_honoured)
{
    expect_stack_at_least(1 << 20, 1 << 20);
    expect_stack_at_least(64 << 20, 64 << 20);
    /* Odd sizes round up, never down. */
    expect_stack_at_least((1 << 20) + 1, (1 << 20) + 1);
    /* Below the minimum: the minimum. */
    expect_stack_at_least(1, 1);
}

/* A stack the address space cannot hold: the call fails, the function
 * never runs and nothing leaks. */
VT_TEST(impossible_stack_fails_cleanly)
{
    long live = vt_test_alloc_live();
    vt__thread t;
    atomic_store(&ran, 0);
    size_t huge = (size_t)1 << 62;
    vt_err e = vt__thread_create(&t, mark_ran, NULL, huge, "huge");
    VT_CHECK_NE(e, VT_OK);
    VT_CHECK_STR_EQ(vt_errname(e), "VT_ESYSERR");
    VT_CHECK_EQ(atomic_load(&ran), 0);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

/* ---- Ids ------------------------------------------------------------------------- */

typedef struct ids {
    uint64_t first, second, kernel;
} ids;

static void *read_ids(void *arg)
{
    ids *i = arg;
    i->first = vt__thread_id();
    i->second = vt__thread_id();
    i->kernel = (uint64_t)syscall(SYS_gettid);
    return NULL;
}

VT_TEST(thread_ids)
{
    uint64_t me = vt__thread_id();
    VT_CHECK_NE(me, 0);
    VT_CHECK_EQ(me, (uint64_t)syscall(SYS_gettid));
    VT_CHECK_EQ(vt__thread_id(), me);

    ids a, b;
    vt__thread ta, tb;
    VT_CHECK_OK(vt__thread_create(&ta, read_ids, &a, 0, NULL));
    VT_CHECK_OK(vt__thread_create(&tb, read_ids, &b, 0, NULL));
    VT_CHECK_OK(vt__thread_join(ta, NULL));
    VT_CHECK_OK(vt__thread_join(tb, NULL));
    VT_CHECK_EQ(a.first, a.kernel);
    VT_CHECK_EQ(a.second, a.kernel);
    VT_CHECK_EQ(b.first, b.kernel);
    VT_CHECK_NE(a.first, b.first);
    VT_CHECK_NE(a.first, me);
}

VT_TEST(thread_id_after_fork)
{
    uint64_t parent = vt__thread_id();
    /* The child answers through a pipe, not its exit status: under valgrind
     * the status of a child that _exits with the parent's blocks still
     * allocated is valgrind's error code. */
    int fds[2];
    VT_CHECK_EQ(pipe(fds), 0);
    pid_t pid = fork();
    VT_CHECK_GE(pid, 0);
    if (pid == 0) {
        /* The cached id is the parent thread's; the child must not see it. */
        uint64_t child = vt__thread_id();
        char ok = child == (uint64_t)getpid() && child != parent ? 'y' : 'n';
        ssize_t w = write(fds[1], &ok, 1);
        _exit(w == 1 ? 0 : 1);
    }
    close(fds[1]);
    char answer = 0;
    ssize_t r;
    while ((r = read(fds[0], &answer, 1)) < 0 && errno == EINTR) {
    }
    close(fds[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    VT_CHECK_EQ(r, 1);
    VT_CHECK_EQ(answer, 'y');
    VT_CHECK_EQ(vt__thread_id(), parent);
}

/* ---- Yield ----------------------------------------------------------------------- */

/* Two threads take turns through a shared counter, each yielding while it
 * is not its turn: every turn is taken exactly once, in order. */
static _Atomic int turn;
#define TURNS 2000

static void *take_turns(void *arg)
{
    int me = (int)(intptr_t)arg;
    for (;;) {
        int t = atomic_load(&turn);
        if (t >= TURNS)
            return NULL;
        if (t % 2 == me)
            atomic_store(&turn, t + 1);
        else
            vt__thread_yield();
    }
}

VT_TEST(yield_lets_the_other_thread_run)
{
    vt__thread a, b;
    atomic_store(&turn, 0);
    VT_CHECK_OK(vt__thread_create(&a, take_turns, (void *)(intptr_t)0, 0, NULL));
    VT_CHECK_OK(vt__thread_create(&b, take_turns, (void *)(intptr_t)1, 0, NULL));
    VT_CHECK_OK(vt__thread_join(a, NULL));
    VT_CHECK_OK(vt__thread_join(b, NULL));
    VT_CHECK_EQ(atomic_load(&turn), TURNS);
}
