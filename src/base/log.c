/* log.c — levelled logging with a replaceable handler. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/uio.h>
#include <unistd.h>

#include "platform.h"

/* Messages up to this size are formatted on the stack (which may be a small
 * fiber stack, hence not more). A longer message is formatted again into a
 * block from vt_alloc and printed whole; only if that allocation fails is it
 * cut, ending in TRUNC_MARK. */
#define LOG_STACK 512
#define TRUNC_MARK "...[truncated]"

#define LEVEL_UNSET (-1)

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};
#define LEVEL_COUNT ((int)(sizeof level_names / sizeof level_names[0]))

/* LEVEL_UNSET until the first call that needs it reads VITTE_LOG, or until
 * vt_log_set_level, whichever comes first: an explicit level wins. */
static _Atomic int log_level = LEVEL_UNSET;

static void default_handler(void *ud, vt_log_level level, const char *module, const char *msg);

/* fn and ud change together, so they are read and written under a lock; the
 * handler itself runs outside it, so handlers on several threads run at
 * once, and a handler may still be running on another thread when
 * vt_log_set_handler returns. */
static vt__spinlock handler_lock = VT__SPINLOCK_INIT;
static vt_log_fn handler_fn = default_handler;
static void *handler_ud;

static int parse_level(const char *s, int *level)
{
    for (int i = 0; i < LEVEL_COUNT; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *level = i;
            return 1;
        }
    }
    return 0;
}

static int init_level(void)
{
    const char *env = getenv("VITTE_LOG");
    int level = VT_LOG_WARN;
    int bad = env && env[0] && !parse_level(env, &level);
    int expected = LEVEL_UNSET;
    if (!atomic_compare_exchange_strong(&log_level, &expected, level))
        return expected;
    /* A typo in VITTE_LOG silently giving the default would leave the user
     * wondering why nothing is logged. */
    if (bad)
        vt_log(VT_LOG_WARN, "log", "VITTE_LOG=%s not understood (error|warn|info|debug|trace); using warn",
               env);
    return level;
}

static int current_level(void)
{
    int level = atomic_load_explicit(&log_level, memory_order_relaxed);
    if (VT_LIKELY(level != LEVEL_UNSET))
        return level;
    return init_level();
}

void vt_log_set_level(vt_log_level level)
{
    int l = (int)level;
    if (l < (int)VT_LOG_ERROR)
        l = VT_LOG_ERROR;
    if (l > (int)VT_LOG_TRACE)
        l = VT_LOG_TRACE;
    atomic_store_explicit(&log_level, l, memory_order_relaxed);
}

vt_log_level vt_log_get_level(void)
{
    return (vt_log_level)current_level();
}

int vt_log_enabled(vt_log_level level)
{
    return (unsigned)level <= (unsigned)current_level();
}

const char *vt_log_level_name(vt_log_level level)
{
    if ((unsigned)level < (unsigned)LEVEL_COUNT)
        return level_names[level];
    return "unknown";
}

void vt_log_set_handler(vt_log_fn fn, void *ud)
{
    vt__spin_lock(&handler_lock);
    handler_fn = fn ? fn : default_handler;
    handler_ud = fn ? ud : NULL;
    vt__spin_unlock(&handler_lock);
}

static void write_all(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        ssize_t w = writev(fd, iov, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* nowhere left to report it */
        }
        size_t left = (size_t)w;
        while (n > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
}

static void iov_add(struct iovec *iov, int *n, const char *s)
{
    iov[*n].iov_base = (void *)(uintptr_t)s;
    iov[*n].iov_len = strlen(s);
    (*n)++;
}

/* One writev(2) of the whole line: the kernel writes it as a unit (a pipe
 * does so up to PIPE_BUF bytes), so lines from several threads do not
 * interleave, and no buffer has to be assembled first. */
static void default_handler(void *ud, vt_log_level level, const char *module, const char *msg)
{
    (void)ud;
    struct iovec iov[7];
    int n = 0;
    iov_add(iov, &n, "vitte ");
    iov_add(iov, &n, vt_log_level_name(level));
    if (module[0]) {
        iov_add(iov, &n, " ");
        iov_add(iov, &n, module);
    }
    iov_add(iov, &n, ": ");
    iov_add(iov, &n, msg);
    iov_add(iov, &n, "\n");
    write_all(STDERR_FILENO, iov, n);
}

void vt_logv(vt_log_level level, const char *module, const char *fmt, va_list ap)
{
    if (!vt_log_enabled(level))
        return;
    int saved_errno = errno; /* so that a caller can log, then look at errno */
    char stack[LOG_STACK];
    char *msg = stack;
    char *heap = NULL;
    size_t heap_size = 0;
    va_list again;
    va_copy(again, ap);
    int len = fmt ? vsnprintf(stack, sizeof stack, fmt, ap) : (stack[0] = '\0', 0);
    if (len < 0) {
        snprintf(stack, sizeof stack, "(bad log format: %s)", fmt ? fmt : "");
    } else if ((size_t)len >= sizeof stack) {
        heap_size = (size_t)len + 1;
        heap = vt_alloc(heap_size);
        if (heap) {
            vsnprintf(heap, heap_size, fmt, again);
            msg = heap;
        } else {
            memcpy(stack + sizeof stack - sizeof TRUNC_MARK, TRUNC_MARK, sizeof TRUNC_MARK);
        }
    }
    va_end(again);

    vt__spin_lock(&handler_lock);
    vt_log_fn fn = handler_fn;
    void *ud = handler_ud;
    vt__spin_unlock(&handler_lock);
    fn(ud, level, module ? module : "", msg);

    vt_free(heap, heap_size);
    errno = saved_errno;
}

void vt_log(vt_log_level level, const char *module, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vt_logv(level, module, fmt, ap);
    va_end(ap);
}
