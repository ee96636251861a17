/* time.c — clocks and sleeping on Linux.
 *
 * vt_now_ns is CLOCK_MONOTONIC in nanoseconds with no offset, because
 * futex.c hands deadlines in these units straight to the kernel as absolute
 * CLOCK_MONOTONIC times. The clock counts from boot, so a reading of 0 cannot
 * happen in practice; it is still clamped to 1 so that VT_NOW (0) is never a
 * time vt_now_ns returns. max(clock, 1) of a monotonic clock is monotonic. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <time.h>

#include "../platform.h"

static int64_t ts_ns(const struct timespec *ts)
{
    return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

static int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    /* Fails only for an invalid clock id; these ids always exist on Linux. */
    if (clock_gettime(id, &ts) != 0)
        return 0;
    return ts_ns(&ts);
}

int64_t vt_now_ns(void)
{
    int64_t t = clock_ns(CLOCK_MONOTONIC);
    return t > 0 ? t : 1;
}

int64_t vt_process_cpu_ns(void)
{
    return clock_ns(CLOCK_PROCESS_CPUTIME_ID);
}

int64_t vt__thread_cpu_ns(void)
{
    return clock_ns(CLOCK_THREAD_CPUTIME_ID);
}

void vt__sleep_ns(int64_t ns)
{
    if (ns <= 0)
        return;
    /* An absolute wake-up time makes restarting after a signal exact: a
     * relative sleep restarted with the remainder drifts a little each time. */
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    int64_t sec = ns / 1000000000;
    until.tv_sec += (time_t)sec;
    until.tv_nsec += (long)(ns - sec * 1000000000);
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR) {
    }
}
