/* test_futex.c — vt__futex_wait/vt__futex_wake. All shared data goes through
 * atomics (ThreadSanitizer does not see the futex calls themselves); threads
 * synchronise by atomic handshakes and by watching each other block in the
 * kernel, never by sleeping. */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/platform.h"
#include "vt_test.h"

/* Knowing that a thread is asleep in futex(2) on a given word, from
 * /proc/self/task/<tid>/syscall (the syscall number and arguments of a
 * blocked thread, "running" otherwise), lets a test wake exactly the waiters
 * it knows are queued, with no sleep used as synchronisation.
 * Returns 1: blocked in futex on addr; 0: not (yet); -1: cannot tell here. */
static int futex_blocked_on(uint64_t tid, const void *addr)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/self/task/%llu/syscall", (unsigned long long)tid);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    char *end;
    long nr = strtol(buf, &end, 10);
    if (end == buf)
        return 0; /* "running" */
    if (nr != SYS_futex)
        return 0;
    unsigned long long a = strtoull(end, NULL, 16);
    return a == (unsigned long long)(uintptr_t)addr;
}

/* Waits (yielding) until thread tid sleeps in futex on addr; -1 if this
 * system cannot show it. */
static int futex_wait_until_blocked(uint64_t tid, const void *addr)
{
    for (;;) {
        int r = futex_blocked_on(tid, addr);
        if (r != 0)
            return r;
        vt__thread_yield();
    }
}

VT_TEST(mismatch_returns_eagain)
{
    _Atomic uint32_t w = 5;
    VT_CHECK_ERR(vt__futex_wait(&w, 4, VT_FOREVER), VT_EAGAIN);
    VT_CHECK_ERR(vt__futex_wait(&w, 4, VT_NOW), VT_EAGAIN);
    VT_CHECK_ERR(vt__futex_wait(&w, 4, vt_deadline_after(VT_SEC(60))), VT_EAGAIN);
    VT_CHECK_ERR(vt__futex_wait(&w, 4, 1), VT_EAGAIN);
    VT_CHECK_ERR(vt__futex_wait(&w, 0, INT64_MAX), VT_EAGAIN);
    VT_CHECK_ERR(vt__futex_wait(&w, UINT32_MAX, VT_FOREVER), VT_EAGAIN);
    atomic_store(&w, UINT32_MAX);
    VT_CHECK_ERR(vt__futex_wait(&w, 0, VT_FOREVER), VT_EAGAIN);
}

VT_TEST(now_only_looks)
{
    _Atomic uint32_t w = 7;
    VT_CHECK_ERR(vt__futex_wait(&w, 7, VT_NOW), VT_ETIMEDOUT);
    /* Negative deadlines other than VT_FOREVER are in the past too. */
    VT_CHECK_ERR(vt__futex_wait(&w, 7, -2), VT_ETIMEDOUT);
    VT_CHECK_ERR(vt__futex_wait(&w, 7, INT64_MIN), VT_ETIMEDOUT);
}

VT_TEST(past_deadline_times_out)
{
    _Atomic uint32_t w = 0;
    VT_CHECK_ERR(vt__futex_wait(&w, 0, 1), VT_ETIMEDOUT);
    VT_CHECK_ERR(vt__futex_wait(&w, 0, vt_now_ns() - 1), VT_ETIMEDOUT);
    VT_CHECK_ERR(vt__futex_wait(&w, 0, vt_now_ns()), VT_ETIMEDOUT);
}

/* Waits for a deadline in a loop, as callers must; returns the error that
 * ended it and checks the deadline had really passed. */
static vt_err wait_out(_Atomic uint32_t *w, int64_t deadline)
{
    vt_err e;
    while ((e = vt__futex_wait(w, 0, deadline)) == VT_OK) {
    }
    return e;
}

VT_TEST(future_deadline_times_out_after_it)
{
    _Atomic uint32_t w = 0;
    int64_t delays[] = {1000, VT_US(200), VT_MS(3)};
    for (size_t i = 0; i < sizeof delays / sizeof delays[0]; i++) {
        int64_t d = vt_deadline_after(delays[i]);
        VT_CHECK_ERR(wait_out(&w, d), VT_ETIMEDOUT);
        VT_CHECK_GE(vt_now_ns(), d);
    }
}

VT_TEST(wake_without_waiters)
{
    _Atomic uint32_t w = 0;
    VT_CHECK_EQ(vt__futex_wake(&w, 1), 0);
    VT_CHECK_EQ(vt__futex_wake(&w, INT32_MAX), 0);
    VT_CHECK_EQ(vt__futex_wake(&w, 0), 0);
    VT_CHECK_EQ(vt__futex_wake(&w, -1), 0);
}

/* ---- Waiters on a word -----------------------------------------------------------
 * Each waiter publishes its thread id, then waits while the word is 0,
 * counting every return (woken or spurious) and re-waiting, as real callers
 * do, until the word is non-zero. */
#define WAITERS 4

static _Atomic uint32_t word;
static _Atomic uint64_t waiter_tid[WAITERS];
static _Atomic int returns;
static _Atomic int bad_result;

static void *waiter(void *arg)
{
    int me = (int)(intptr_t)arg;
    atomic_store(&waiter_tid[me], vt__thread_id());
    while (atomic_load(&word) == 0) {
        vt_err e = vt__futex_wait(&word, 0, VT_FOREVER);
        if (e != VT_OK && e != VT_EAGAIN)
            atomic_fetch_add(&bad_result, 1);
        atomic_fetch_add(&returns, 1);
    }
    return NULL;
}

static void start_waiters(vt__thread *t, int n)
{
    atomic_store(&word, 0);
    atomic_store(&returns, 0);
    atomic_store(&bad_result, 0);
    for (int i = 0; i < n; i++)
        atomic_store(&waiter_tid[i], 0);
    for (int i = 0; i < n; i++)
        VT_CHECK_OK(vt__thread_create(&t[i], waiter, (void *)(intptr_t)i, 0, "waiter"));
}

/* 1 when all n waiters sleep in the kernel on word, -1 if not observable. */
static int all_blocked(int n)
{
    for (int i = 0; i < n; i++) {
        uint64_t tid;
        while ((tid = atomic_load(&waiter_tid[i])) == 0)
            vt__thread_yield();
        if (futex_wait_until_blocked(tid, &word) < 0)
            return -1;
    }
    return 1;
}

static void release_and_join(vt__thread *t, int n)
{
    atomic_store(&word, 1);
    vt__futex_wake(&word, INT32_MAX);
    for (int i = 0; i < n; i++)
        vt__thread_join(t[i], NULL);
}

VT_TEST(wake_one_some_all)
{
    vt__thread t[WAITERS];
    start_waiters(t, WAITERS);
    if (all_blocked(WAITERS) < 0) {
        release_and_join(t, WAITERS);
        VT_SKIP("/proc/self/task/*/syscall not readable");
    }
    /* Only the waiters the kernel holds are counted: exactly as many as
     * asked for while enough are asleep. */
    VT_CHECK_EQ(vt__futex_wake(&word, 1), 1);
    while (atomic_load(&returns) < 1)
        vt__thread_yield();
    VT_CHECK_EQ(all_blocked(WAITERS), 1);
    VT_CHECK_EQ(atomic_load(&returns), 1);

    VT_CHECK_EQ(vt__futex_wake(&word, 2), 2);
    while (atomic_load(&returns) < 3)
        vt__thread_yield();
    VT_CHECK_EQ(all_blocked(WAITERS), 1);
    VT_CHECK_EQ(atomic_load(&returns), 3);

    atomic_store(&word, 1);
    VT_CHECK_EQ(vt__futex_wake(&word, INT32_MAX), WAITERS);
    for (int i = 0; i < WAITERS; i++)
        VT_CHECK_OK(vt__thread_join(t[i], NULL));
    VT_CHECK_EQ(atomic_load(&returns), 3 + WAITERS);
    VT_CHECK_EQ(atomic_load(&bad_result), 0);
}

VT_TEST(wake_more_than_waiting)
{
    vt__thread t[2];
    start_waiters(t, 2);
    if (all_blocked(2) < 0) {
        release_and_join(t, 2);
        VT_SKIP("/proc/self/task/*/syscall not readable");
    }
    atomic_store(&word, 1);
    VT_CHECK_EQ(vt__futex_wake(&word, 100), 2);
    for (int i = 0; i < 2; i++)
        VT_CHECK_OK(vt__thread_join(t[i], NULL));
    VT_CHECK_EQ(atomic_load(&bad_result), 0);
}

/* Without /proc: the same protocol still ends, only less is checked. */
VT_TEST(wake_all_releases_everyone)
{
    vt__thread t[WAITERS];
    start_waiters(t, WAITERS);
    for (int i = 0; i < WAITERS; i++)
        while (atomic_load(&waiter_tid[i]) == 0)
            vt__thread_yield();
    atomic_store(&word, 1);
    VT_CHECK_LE(vt__futex_wake(&word, INT32_MAX), WAITERS);
    for (int i = 0; i < WAITERS; i++)
        VT_CHECK_OK(vt__thread_join(t[i], NULL));
    VT_CHECK_EQ(atomic_load(&bad_result), 0);
}

/* Wake-ups on another word do not reach these waiters. */
VT_TEST(wake_is_per_word)
{
    static _Atomic uint32_t other;
    vt__thread t[1];
    start_waiters(t, 1);
    if (all_blocked(1) < 0) {
        release_and_join(t, 1);
        VT_SKIP("/proc/self/task/*/syscall not readable");
    }
    VT_CHECK_EQ(vt__futex_wake(&other, INT32_MAX), 0);
    VT_CHECK_EQ(all_blocked(1), 1);
    VT_CHECK_EQ(atomic_load(&returns), 0);
    release_and_join(t, 1);
    VT_CHECK_EQ(atomic_load(&returns), 1);
}

/* ---- Deadlines while blocked --------------------------------------------------- */

typedef struct timed {
    _Atomic uint32_t *w;
    int64_t deadline;
    _Atomic uint64_t tid;
    _Atomic int result; /* the vt_err that ended the first wait */
    _Atomic int64_t ended_at;
} timed;

static void *timed_waiter(void *arg)
{
    timed *t = arg;
    atomic_store(&t->tid, vt__thread_id());
    vt_err e = vt__futex_wait(t->w, 0, t->deadline);
    atomic_store(&t->ended_at, vt_now_ns());
    atomic_store(&t->result, (int)e);
    return NULL;
}

VT_TEST(far_deadline_is_woken)
{
    /* INT64_MAX is what vt_deadline_after saturates to: it must be a valid
     * timeout for the kernel, and a wake must still end the wait. */
    int64_t deadlines[] = {INT64_MAX, vt_deadline_after(VT_SEC(3600))};
    for (size_t i = 0; i < 2; i++) {
        _Atomic uint32_t w = 0;
        timed tw = {.w = &w, .deadline = deadlines[i], .result = -1};
        vt__thread th;
        VT_CHECK_OK(vt__thread_create(&th, timed_waiter, &tw, 0, NULL));
        uint64_t tid;
        while ((tid = atomic_load(&tw.tid)) == 0)
            vt__thread_yield();
        int seen = futex_wait_until_blocked(tid, &w);
        atomic_store(&w, 1);
        int woke = vt__futex_wake(&w, 1);
        VT_CHECK_OK(vt__thread_join(th, NULL));
        /* Woken, or never asleep if the store came first: never a timeout. */
        int r = atomic_load(&tw.result);
        VT_CHECK(r == VT_OK || r == VT_EAGAIN);
        if (seen == 1) {
            VT_CHECK_EQ(woke, 1);
            VT_CHECK_EQ(r, VT_OK);
        }
    }
}

#define TIMED 4

VT_TEST(timeouts_on_several_threads)
{
    _Atomic uint32_t w = 0;
    timed tw[TIMED];
    vt__thread th[TIMED];
    for (int i = 0; i < TIMED; i++) {
        memset(&tw[i], 0, sizeof tw[i]);
        tw[i].w = &w;
        tw[i].deadline = vt_deadline_after(VT_MS(2) * (i + 1));
        atomic_store(&tw[i].result, -1);
        VT_CHECK_OK(vt__thread_create(&th[i], timed_waiter, &tw[i], 0, NULL));
    }
    for (int i = 0; i < TIMED; i++)
        VT_CHECK_OK(vt__thread_join(th[i], NULL));
    for (int i = 0; i < TIMED; i++) {
        /* Nobody wakes them and nobody signals them: each times out, and
         * not before its deadline. */
        VT_CHECK_EQ(atomic_load(&tw[i].result), VT_ETIMEDOUT);
        VT_CHECK_GE(atomic_load(&tw[i].ended_at), tw[i].deadline);
    }
}

/* ---- Spurious returns -------------------------------------------------------------
 * A signal handled while a thread waits makes the wait return VT_OK with
 * the word unchanged: callers must (and the waiter loop here does) re-check. */
static void on_signal(int sig)
{
    (void)sig;
}

VT_TEST(signal_gives_a_spurious_ok)
{
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    VT_CHECK_EQ(sigaction(SIGUSR1, &sa, &old), 0); /* no SA_RESTART */

    int64_t deadlines[] = {VT_FOREVER, INT64_MAX};
    for (size_t i = 0; i < 2; i++) {
        _Atomic uint32_t w = 0;
        timed tw = {.w = &w, .deadline = deadlines[i], .result = -1};
        vt__thread th;
        VT_CHECK_OK(vt__thread_create(&th, timed_waiter, &tw, 0, NULL));
        uint64_t tid;
        while ((tid = atomic_load(&tw.tid)) == 0)
            vt__thread_yield();
        if (futex_wait_until_blocked(tid, &w) < 0) {
            atomic_store(&w, 1);
            vt__futex_wake(&w, 1);
            vt__thread_join(th, NULL);
            sigaction(SIGUSR1, &old, NULL);
            VT_SKIP("/proc/self/task/*/syscall not readable");
        }
        pthread_t p;
        memcpy(&p, &th.handle, sizeof p);
        VT_CHECK_EQ(pthread_kill(p, SIGUSR1), 0);
        VT_CHECK_OK(vt__thread_join(th, NULL));
        VT_CHECK_EQ(atomic_load(&tw.result), VT_OK);
        VT_CHECK_EQ(atomic_load(&w), 0);
    }
    sigaction(SIGUSR1, &old, NULL);
}

/* ---- Ping-pong: a hand-off that loses no wake-up ------------------------------------
 * Two threads pass a turn back and forth; whoever is not on turn waits on
 * the word. A lost wake-up would hang (the harness's watchdog reports it). */
#define ROUNDS 2000

static _Atomic uint32_t ball;

static void pass_ball(uint32_t mine, uint32_t theirs, int rounds)
{
    for (int i = 0; i < rounds; i++) {
        uint32_t v;
        while ((v = atomic_load(&ball)) != mine)
            vt__futex_wait(&ball, v, VT_FOREVER);
        atomic_store(&ball, theirs);
        vt__futex_wake(&ball, 1);
    }
}

static void *pong(void *arg)
{
    (void)arg;
    pass_ball(1, 0, ROUNDS);
    return NULL;
}

VT_TEST(ping_pong)
{
    vt__thread t;
    atomic_store(&ball, 0);
    VT_CHECK_OK(vt__thread_create(&t, pong, NULL, 0, "pong"));
    pass_ball(0, 1, ROUNDS);
    VT_CHECK_OK(vt__thread_join(t, NULL));
    VT_CHECK_EQ(atomic_load(&ball), 0);
}
