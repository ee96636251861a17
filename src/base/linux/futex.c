/* futex.c — vt__futex_wait/wake on Linux futex(2).
 *
 * Deadlines are vt_now_ns values, which time.c keeps equal to
 * CLOCK_MONOTONIC nanoseconds, the clock FUTEX_WAIT_BITSET measures an
 * absolute timeout on (without FUTEX_CLOCK_REALTIME). An absolute timeout
 * also makes a wait restarted after a spurious wake-up end on time. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "../platform.h"

_Static_assert(sizeof(_Atomic uint32_t) == sizeof(uint32_t), "a futex word is 32 bits");

vt_err vt__futex_wait(_Atomic uint32_t *addr, uint32_t expected, int64_t deadline)
{
    struct timespec ts;
    struct timespec *timeout = NULL;
    if (deadline != VT_FOREVER) {
        /* Don't enter the kernel to wait for a time already gone: VT_NOW and
         * any other deadline that cannot be in the future only look. */
        if (deadline <= 0) {
            if (atomic_load_explicit(addr, memory_order_relaxed) != expected)
                return VT_EAGAIN;
            return VT_ETIMEDOUT;
        }
        ts.tv_sec = (time_t)(deadline / 1000000000);
        ts.tv_nsec = (long)(deadline % 1000000000);
        timeout = &ts;
    }
    long r = syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, expected,
                     timeout, NULL, FUTEX_BITSET_MATCH_ANY);
    if (r == 0)
        return VT_OK;
    switch (errno) {
    case EAGAIN:
        return VT_EAGAIN;
    case ETIMEDOUT:
        return VT_ETIMEDOUT;
    case EINTR:
        return VT_OK; /* a signal: the caller re-checks, as after any wake-up */
    default:
        return vt_err_from_errno(errno);
    }
}

int vt__futex_wake(_Atomic uint32_t *addr, int n)
{
    if (n <= 0)
        return 0;
    long r = syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
    /* Only EFAULT (a bad address) or EINVAL (a misaligned one) can fail it,
     * both caller bugs that a wait on the same word reports. */
    return r > 0 ? (int)r : 0;
}
