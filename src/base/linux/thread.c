/* thread.c — vt__thread_* over pthreads, on Linux. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../platform.h"

_Static_assert(sizeof(pthread_t) <= sizeof(uintptr_t), "a pthread_t fits in vt__thread.handle");

/* The kernel keeps 16 bytes of a thread's name, the terminating NUL included. */
#define NAME_SIZE 16

/* A named thread names itself as it starts: the other way, naming it from
 * the creator, goes through /proc/self/task/<tid>/comm, which may not be
 * mounted and fails if the thread already exited. */
struct start {
    vt__thread_fn fn;
    void *arg;
    char name[NAME_SIZE];
};

static void *start_named(void *p)
{
    struct start s = *(struct start *)p;
    vt_free(p, sizeof s);
    vt__thread_set_name(s.name);
    return s.fn(s.arg);
}

static pthread_t handle_get(vt__thread t)
{
    pthread_t p;
    memcpy(&p, &t.handle, sizeof p);
    return p;
}

/* The smallest stack of at least size bytes that pthreads accepts, or 0 if
 * there is none. */
static size_t stack_size_for(size_t size)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t psz = page > 0 ? (size_t)page : 4096;
    if (size < (size_t)PTHREAD_STACK_MIN)
        size = (size_t)PTHREAD_STACK_MIN;
    if (size > SIZE_MAX - (psz - 1))
        return 0;
    return (size + psz - 1) / psz * psz;
}

vt_err vt__thread_create(vt__thread *t, vt__thread_fn fn, void *arg, size_t stack_size, const char *name)
{
    if (!t || !fn)
        return VT_EINVAL;
    pthread_attr_t attr;
    int r = pthread_attr_init(&attr);
    if (r != 0)
        return vt_err_from_errno(r);
    if (stack_size != 0) {
        size_t size = stack_size_for(stack_size);
        r = size ? pthread_attr_setstacksize(&attr, size) : EINVAL;
        if (r != 0) {
            pthread_attr_destroy(&attr);
            return r == EINVAL ? VT_EINVAL : vt_err_from_errno(r);
        }
    }

    vt__thread_fn entry = fn;
    void *entry_arg = arg;
    struct start *s = NULL;
    if (name && name[0]) {
        s = vt_alloc(sizeof *s);
        if (!s) {
            pthread_attr_destroy(&attr);
            return VT_ENOMEM;
        }
        s->fn = fn;
        s->arg = arg;
        strncpy(s->name, name, NAME_SIZE - 1);
        s->name[NAME_SIZE - 1] = '\0';
        entry = start_named;
        entry_arg = s;
    }

    pthread_t p;
    r = pthread_create(&p, &attr, entry, entry_arg);
    pthread_attr_destroy(&attr);
    if (r != 0) {
        vt_free(s, sizeof *s);
        return vt_err_from_errno(r);
    }
    t->handle = 0;
    memcpy(&t->handle, &p, sizeof p);
    return VT_OK;
}

vt_err vt__thread_join(vt__thread t, void **result)
{
    void *res = NULL;
    int r = pthread_join(handle_get(t), &res);
    if (r != 0)
        return vt_err_from_errno(r);
    if (result)
        *result = res;
    return VT_OK;
}

void vt__thread_set_name(const char *name)
{
    if (!name)
        return;
    char buf[NAME_SIZE];
    strncpy(buf, name, NAME_SIZE - 1);
    buf[NAME_SIZE - 1] = '\0';
    /* Only a name too long fails, which the truncation rules out. */
    (void)pthread_setname_np(pthread_self(), buf);
}

void vt__thread_yield(void)
{
    sched_yield();
}

/* gettid is a system call; the id is cached per thread. A child of fork()
 * gets a new id for the thread that forked, hence the reset at fork. */
static _Thread_local uint64_t tid_cache;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void tid_forget(void)
{
    tid_cache = 0;
}

static void atfork_register(void)
{
    pthread_atfork(NULL, NULL, tid_forget);
}

uint64_t vt__thread_id(void)
{
    if (VT_LIKELY(tid_cache != 0))
        return tid_cache;
    pthread_once(&atfork_once, atfork_register);
    tid_cache = (uint64_t)syscall(SYS_gettid);
    return tid_cache;
}

void vt__thread_stack_bounds(void **lo, size_t *size)
{
    pthread_attr_t attr;
    *lo = NULL;
    *size = 0;
    if (pthread_getattr_np(pthread_self(), &attr) != 0)
        return;
    void *addr;
    size_t len;
    if (pthread_attr_getstack(&attr, &addr, &len) == 0) {
        *lo = addr;
        *size = len;
    }
    pthread_attr_destroy(&attr);
}
