/* poller.c — readiness of file descriptors on Linux: an epoll set watched
 * edge-triggered, an eventfd that interrupts a wait on it, and the
 * descriptor calls whose flags differ between systems (accept4, close's
 * EINTR, ppoll's nanosecond timeout).
 *
 * Edge-triggered, because the netpoller registers a descriptor once and
 * keeps it registered for its whole life: level-triggered, a descriptor
 * that stays readable while nobody reads it would be reported on every
 * wait; with one-shot, every wait would cost an epoll_ctl to re-arm. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4, ppoll */
#endif

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../platform.h"

struct vt__poller {
    int epfd;
    int evfd;
    /* Only one thread waits at a time, so the kernel's batch lives here
     * rather than on that thread's stack (3 KiB). */
    struct epoll_event buf[VT__POLLER_BATCH];
};

/* EPOLLRDHUP: a peer that shut down its writing side makes the socket
 * readable (read returns 0), which plain EPOLLIN also reports, but only
 * RDHUP is reported on its own when nothing else changed. */
#define WATCH (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)

static unsigned events_of(uint32_t ev)
{
    unsigned r = 0;
    if (ev & (EPOLLIN | EPOLLRDHUP))
        r |= VT__POLL_IN;
    if (ev & EPOLLOUT)
        r |= VT__POLL_OUT;
    /* An error or a hang-up ends waits in both directions: each side then
     * retries its call and gets the error (or end of file) from it. */
    if (ev & (EPOLLERR | EPOLLHUP))
        r |= VT__POLL_IN | VT__POLL_OUT;
    return r;
}

vt_err vt__poller_new(vt__poller **out)
{
    if (!out)
        return VT_EINVAL;
    *out = NULL;
    vt__poller *p = vt_alloc(sizeof *p);
    if (!p)
        return VT_ENOMEM;
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (p->epfd < 0) {
        vt_err e = vt_err_from_errno(errno);
        vt_free(p, sizeof *p);
        return e;
    }
    p->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->evfd < 0) {
        vt_err e = vt_err_from_errno(errno);
        close(p->epfd);
        vt_free(p, sizeof *p);
        return e;
    }
    /* Level-triggered: the eventfd stays ready until a wait drains it, so
     * an interrupt that comes before the wait still ends it. The poller
     * itself is the marker: no caller's data can be its address. */
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = p};
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->evfd, &ev) != 0) {
        vt_err e = vt_err_from_errno(errno);
        close(p->evfd);
        close(p->epfd);
        vt_free(p, sizeof *p);
        return e;
    }
    *out = p;
    return VT_OK;
}

void vt__poller_free(vt__poller *p)
{
    if (!p)
        return;
    close(p->evfd);
    close(p->epfd);
    vt_free(p, sizeof *p);
}

vt_err vt__poller_add(vt__poller *p, int fd, void *data)
{
    struct epoll_event ev = {.events = WATCH, .data.ptr = data};
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) == 0)
        return VT_OK;
    if (errno == EPERM)
        return VT_ENOTSUP; /* a regular file, a directory: always ready */
    if (errno != EEXIST)
        return vt_err_from_errno(errno);
    /* Watched already (e.g. registered again after the caller lost track):
     * make sure it reports to data, edge-triggered. */
    if (epoll_ctl(p->epfd, EPOLL_CTL_MOD, fd, &ev) != 0)
        return vt_err_from_errno(errno);
    return VT_OK;
}

vt_err vt__poller_del(vt__poller *p, int fd)
{
    /* The event argument is ignored, but kernels before 2.6.9 wanted one. */
    struct epoll_event ev = {0};
    if (epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, &ev) == 0 || errno == ENOENT)
        return VT_OK;
    return vt_err_from_errno(errno);
}

/* Milliseconds until deadline for epoll_wait, rounded up so that a wait
 * never ends before it; -1 for VT_FOREVER. */
static int timeout_ms(int64_t deadline)
{
    if (deadline == VT_FOREVER)
        return -1;
    int64_t left = deadline - vt_now_ns();
    if (left <= 0)
        return 0;
    int64_t ms = (left + 999999) / 1000000;
    return ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

vt_err vt__poller_wait(vt__poller *p, vt__poll_event *ev, int max, int *n, int64_t deadline)
{
    *n = 0;
    if (max <= 0)
        return VT_EINVAL;
    if (max > VT__POLLER_BATCH)
        max = VT__POLLER_BATCH;
    int tmo = timeout_ms(deadline);
    int r = epoll_wait(p->epfd, p->buf, max, tmo);
    if (r < 0) {
        if (errno == EINTR)
            return VT_OK;
        return vt_err_from_errno(errno);
    }
    if (r == 0)
        return tmo == -1 || vt_now_ns() < deadline ? VT_OK : VT_ETIMEDOUT;
    int k = 0;
    for (int i = 0; i < r; i++) {
        if (p->buf[i].data.ptr == p) {
            uint64_t count;
            /* EAGAIN: another wait drained it first; nothing else can fail. */
            (void)!read(p->evfd, &count, sizeof count);
            continue;
        }
        ev[k].data = p->buf[i].data.ptr;
        ev[k].events = events_of(p->buf[i].events);
        k++;
    }
    *n = k;
    return VT_OK;
}

void vt__poller_interrupt(vt__poller *p)
{
    uint64_t one = 1;
    /* EAGAIN means the counter is near overflow: it is non-zero, so a wait
     * ends anyway. */
    (void)!write(p->evfd, &one, sizeof one);
}

/* ---- Descriptors ------------------------------------------------------------------ */

vt_err vt__fd_prepare(int fd, int *is_socket)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return vt_err_from_errno(errno);
    if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0)
        return vt_err_from_errno(errno);
    if (is_socket) {
        struct stat st;
        if (fstat(fd, &st) != 0)
            return vt_err_from_errno(errno);
        *is_socket = S_ISSOCK(st.st_mode) ? 1 : 0;
    }
    return VT_OK;
}

vt_err vt__fd_wait(int fd, unsigned events, unsigned *ready, int64_t deadline)
{
    struct pollfd pfd = {.fd = fd, .events = 0};
    if (events & VT__POLL_IN)
        pfd.events |= POLLIN | POLLRDHUP;
    if (events & VT__POLL_OUT)
        pfd.events |= POLLOUT;
    for (;;) {
        struct timespec ts, *tsp = NULL;
        if (deadline != VT_FOREVER) {
            int64_t left = deadline - vt_now_ns();
            if (left < 0)
                left = 0;
            ts.tv_sec = (time_t)(left / 1000000000);
            ts.tv_nsec = (long)(left % 1000000000);
            tsp = &ts;
        }
        pfd.revents = 0;
        int r = ppoll(&pfd, 1, tsp, NULL);
        if (r < 0) {
            if (errno == EINTR)
                continue; /* the deadline is absolute: the next round waits what is left */
            return vt_err_from_errno(errno);
        }
        if (r == 0) {
            /* The kernel never ends a timeout early, but the clock it
             * counts on and ours are read at different moments. */
            if (deadline != VT_FOREVER && vt_now_ns() >= deadline)
                return VT_ETIMEDOUT;
            continue;
        }
        if (pfd.revents & POLLNVAL)
            return vt_err_from_errno(EBADF);
        unsigned got = 0;
        if (pfd.revents & (POLLIN | POLLRDHUP))
            got |= VT__POLL_IN;
        if (pfd.revents & POLLOUT)
            got |= VT__POLL_OUT;
        if (pfd.revents & (POLLERR | POLLHUP))
            got |= events;
        got &= events;
        if (!got)
            continue; /* e.g. POLLPRI alone */
        if (ready)
            *ready = got;
        return VT_OK;
    }
}

vt_err vt__fd_accept(int fd, int *out, struct sockaddr *addr, unsigned *addrlen)
{
    for (;;) {
        socklen_t len = addrlen ? (socklen_t)*addrlen : 0;
        int c = accept4(fd, addr, addr && addrlen ? &len : NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c >= 0) {
            if (addr && addrlen)
                *addrlen = (unsigned)len;
            *out = c;
            return VT_OK;
        }
        switch (errno) {
        case EAGAIN:
#if EWOULDBLOCK != EAGAIN
        case EWOULDBLOCK:
#endif
            return VT_EAGAIN;
        /* A signal, or a connection that died while it was queued (Linux
         * reports the pending network errors of that connection on
         * accept: accept(2) says to treat them as "try again"); the next
         * call takes the next connection or says none is pending. */
        case EINTR:
        case ECONNABORTED:
        case EPROTO:
        case ENETDOWN:
        case ENOPROTOOPT:
        case EHOSTDOWN:
        case ENONET:
        case EHOSTUNREACH:
        case ENETUNREACH:
            continue;
        default:
            return vt_err_from_errno(errno);
        }
    }
}

vt_err vt__fd_close(int fd)
{
    /* On Linux the descriptor is gone even when close reports EINTR:
     * retrying could close a descriptor another thread just opened. */
    if (close(fd) == 0 || errno == EINTR)
        return VT_OK;
    return vt_err_from_errno(errno);
}
