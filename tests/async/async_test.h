/* async_test.h — what the async layer's tests share: a runtime of n
 * workers, "parties" that run one body as a fiber or as a plain thread, and
 * small waits and clocks that work from either. Include after vt_test.h. */
#ifndef VITTE_ASYNC_TEST_H
#define VITTE_ASYNC_TEST_H

#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include "vitte/async.h"

#define VT__TEST_UNUSED __attribute__((unused))

#define U2P(u) ((void *)(uintptr_t)(u))
#define P2U(p) ((uintptr_t)(p))
/* A body's vt_err as its return value. */
#define ERR_RET(e) ((void *)(intptr_t)(e))

/* A runtime of `workers` workers and fiber stacks of stack_size (0: the
 * default), default otherwise; NULL on failure. */
static VT__TEST_UNUSED vt_runtime *rt_new_with(unsigned workers, size_t stack_size)
{
    vt_runtime_opts o;
    vt_runtime_opts_init(&o);
    o.pool.workers = workers;
    o.stack_size = stack_size;
    vt_runtime *rt = NULL;
    return vt_runtime_new(&rt, &o) == VT_OK ? rt : NULL;
}

static VT__TEST_UNUSED vt_runtime *rt_new(unsigned workers)
{
    return rt_new_with(workers, 0);
}

/* The clock of the caller's deadlines: the runtime's in a fiber. */
static VT__TEST_UNUSED int64_t now_any(void)
{
    return vt_fiber_in() ? vt_fiber_now() : vt_now_ns();
}

/* Lets others run, from a fiber or a thread. */
static VT__TEST_UNUSED void relax(void)
{
    if (vt_fiber_in())
        vt_fiber_yield();
    else
        sched_yield();
}

/* 200 µs of a plain thread's sleep, for polling loops. */
static VT__TEST_UNUSED void nap(void)
{
    struct timespec ts = {0, 200000};
    nanosleep(&ts, NULL);
}

static VT__TEST_UNUSED void wait_for(_Atomic long *v, long want)
{
    while (atomic_load(v) < want)
        nap();
}

/* A party is a fiber of rt or a plain thread running the same body. */
typedef struct party {
    int thread;
    vt_fiber f;
    pthread_t t;
    vt_fiber_fn fn;
    void *arg, *ret;
} party;

static VT__TEST_UNUSED void *party_thread(void *p)
{
    party *pt = p;
    pt->ret = pt->fn(pt->arg);
    return NULL;
}

/* 1 when started. */
static VT__TEST_UNUSED int party_start(party *p, vt_runtime *rt, int thread, vt_fiber_fn fn, void *arg)
{
    memset(p, 0, sizeof(*p));
    p->thread = thread;
    p->fn = fn;
    p->arg = arg;
    if (thread)
        return pthread_create(&p->t, NULL, party_thread, p) == 0;
    vt_fiber_opts o = {.runtime = rt};
    return vt_fiber_spawn_ex(&p->f, fn, arg, &o) == VT_OK;
}

/* The body's return value (a vt_err for most bodies); -1 if the join failed. */
static VT__TEST_UNUSED intptr_t party_join(party *p)
{
    if (p->thread)
        return pthread_join(p->t, NULL) == 0 ? (intptr_t)p->ret : -1;
    void *r = NULL;
    return vt_fiber_await(p->f, &r, VT_FOREVER) == VT_OK ? (intptr_t)r : -1;
}

/* ---- Seeing a party wait --------------------------------------------------------------- */

/* Fibers of rt that vt_runtime_dump shows waiting in `what` ("chan recv",
 * "select", ...) on obj, or on anything when obj is NULL. */
static VT__TEST_UNUSED unsigned fibers_waiting(vt_runtime *rt, const char *what, const void *obj)
{
    char pat[128];
    if (obj)
        snprintf(pat, sizeof pat, "on %s %p", what, obj);
    else
        snprintf(pat, sizeof pat, "on %s ", what);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return 0;
    vt_runtime_dump(rt, f);
    fclose(f);
    unsigned n = 0;
    size_t pl = strlen(pat);
    for (const char *p = buf; (p = strstr(p, pat)) != NULL; p += pl)
        n += !obj || p[pl] == '\n' || p[pl] == ' ';
    free(buf);
    return n;
}

/* 1 when thread tid is asleep in the kernel (a hint: it may be asleep for
 * another reason, so a test must be right either way). */
static VT__TEST_UNUSED int thread_sleeping(pid_t tid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')');
    return p && p[1] == ' ' && p[2] == 'S';
}

#endif
