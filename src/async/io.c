/* io.c — reads, writes, accepts and connects that suspend the calling fiber
 * instead of blocking its worker (see "IO readiness" in vitte/async.h).
 *
 * Every call tries the system call first and waits only when it says
 * "would block", so a descriptor that is ready costs exactly that call.
 * A fiber waits in the netpoller (netpoll.c); a thread that is not a fiber
 * — a plain thread, or a worker running a closure job — blocks in the
 * platform's poll, since it has nothing else to run. */
#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include "async_int.h"

/* How the calling context waits on fd. */
typedef struct io_ctx {
    int fd;
    int socket;
    vt__fdent *ent; /* a fiber's entry; NULL on a thread */
} io_ctx;

/* Checks that the caller may go on (a cancelled fiber may not: each of
 * these calls is a suspension point), makes fd non-blocking and finds out
 * whether it is a socket. A fiber does the last two once per descriptor. */
static vt_err io_open(io_ctx *c, int fd)
{
    c->fd = fd;
    c->socket = 0;
    c->ent = NULL;
    if (vt_fiber_in()) {
        if (vt__cancel_pending())
            return VT_ECANCELED;
        return vt__netpoll_fd(fd, &c->ent, &c->socket);
    }
    return vt__fd_prepare(fd, &c->socket);
}

static vt_err io_wait(io_ctx *c, unsigned events, unsigned *ready, int64_t deadline)
{
    unsigned got = 0;
    vt_err e = c->ent ? vt__netpoll_wait(c->ent, events, &got, deadline)
                      : vt__fd_wait(c->fd, events, &got, deadline);
    if (ready)
        *ready = got;
    return e;
}

static int would_block(int e)
{
    return e == EAGAIN || e == EWOULDBLOCK;
}

vt_err vt_io_wait(int fd, unsigned events, unsigned *ready, int64_t deadline)
{
    if (ready)
        *ready = 0;
    if (fd < 0 || !events || (events & ~(unsigned)(VT_IO_READ | VT_IO_WRITE)))
        return VT_EINVAL;
    io_ctx c;
    vt_err e = io_open(&c, fd);
    if (e != VT_OK)
        return e;
    if (!c.ent)
        return vt__fd_wait(fd, events, ready, deadline);
    /* The netpoller reports edges, and fd may have been ready for a long
     * time: look at the present first. Edges older than this look are
     * forgotten first, so that one cannot pass for readiness that came
     * since. */
    vt__netpoll_clear(c.ent, events);
    for (;;) {
        e = vt__fd_wait(fd, events, ready, VT_NOW);
        if (e != VT_ETIMEDOUT || deadline == VT_NOW)
            return e;
        /* An edge that was on its way when the flags were cleared can
         * still arrive: hence the look again after each one. */
        if ((e = io_wait(&c, events, NULL, deadline)) != VT_OK)
            return e;
    }
}

vt_err vt_io_read(int fd, void *buf, size_t n, size_t *got, int64_t deadline)
{
    if (got)
        *got = 0;
    if (fd < 0 || !got || (!buf && n))
        return VT_EINVAL;
    io_ctx c;
    vt_err e = io_open(&c, fd);
    if (e != VT_OK)
        return e;
    for (;;) {
        ssize_t r = read(fd, buf, n);
        if (r >= 0) {
            *got = (size_t)r;
            return VT_OK;
        }
        if (errno == EINTR)
            continue;
        if (!would_block(errno))
            return vt_err_from_errno(errno);
        if ((e = io_wait(&c, VT_IO_READ, NULL, deadline)) != VT_OK)
            return e;
    }
}

vt_err vt_io_write(int fd, const void *buf, size_t n, size_t *put, int64_t deadline)
{
    if (put)
        *put = 0;
    if (fd < 0 || (!buf && n))
        return VT_EINVAL;
    io_ctx c;
    vt_err e = io_open(&c, fd);
    if (e != VT_OK)
        return e;
    const char *p = buf;
    size_t done = 0;
    while (done < n) {
        /* A socket whose peer is gone reports EPIPE instead of raising
         * SIGPIPE. A pipe has no such flag: as with write(2), the process
         * gets SIGPIPE unless it ignores or blocks that signal. */
        ssize_t r = c.socket ? send(fd, p + done, n - done, MSG_NOSIGNAL) : write(fd, p + done, n - done);
        if (r > 0) {
            done += (size_t)r;
            if (put)
                *put = done;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && !would_block(errno))
            return vt_err_from_errno(errno);
        /* Would block (or wrote nothing, which only a full descriptor does). */
        if ((e = io_wait(&c, VT_IO_WRITE, NULL, deadline)) != VT_OK)
            return e;
    }
    return VT_OK;
}

vt_err vt_io_accept(int fd, int *out, struct sockaddr *addr, unsigned *addrlen, int64_t deadline)
{
    if (out)
        *out = -1;
    if (fd < 0 || !out || (addr && !addrlen))
        return VT_EINVAL;
    io_ctx c;
    vt_err e = io_open(&c, fd);
    if (e != VT_OK)
        return e;
    for (;;) {
        int s;
        e = vt__fd_accept(fd, &s, addr, addrlen);
        if (e == VT_OK) {
            /* The number may be that of a descriptor closed without
             * vt_io_close: what the entry knew of it is stale. */
            if (c.ent)
                vt__netpoll_fresh(s);
            *out = s;
            return VT_OK;
        }
        if (e != VT_EAGAIN)
            return e;
        if ((e = io_wait(&c, VT_IO_READ, NULL, deadline)) != VT_OK)
            return e;
    }
}

/* The outcome of a connection attempt that fd was reported writable for:
 * VT_OK once connected, VT_EAGAIN while it is still under way (a stale
 * edge), or its error. */
static vt_err connect_outcome(int fd)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        return vt_err_from_errno(errno);
    if (err != 0)
        return vt_err_from_errno(err);
    struct sockaddr_storage peer;
    socklen_t plen = sizeof peer;
    if (getpeername(fd, (struct sockaddr *)&peer, &plen) == 0)
        return VT_OK;
    return errno == ENOTCONN ? VT_EAGAIN : vt_err_from_errno(errno);
}

vt_err vt_io_connect(int fd, const struct sockaddr *addr, unsigned addrlen, int64_t deadline)
{
    if (fd < 0 || !addr || !addrlen)
        return VT_EINVAL;
    io_ctx c;
    vt_err e = io_open(&c, fd);
    if (e != VT_OK)
        return e;
    /* A socket about to connect is new, whatever its number was before. */
    if (c.ent)
        vt__netpoll_renew(c.ent, c.socket);
    if (connect(fd, addr, (socklen_t)addrlen) == 0)
        return VT_OK;
    switch (errno) {
    case EISCONN:
        return VT_OK;
    case EINPROGRESS: /* the usual case */
    case EALREADY:    /* an earlier call started it */
    case EINTR:       /* it goes on in the background */
        break;
    default:
        return vt_err_from_errno(errno);
    }
    for (;;) {
        if ((e = io_wait(&c, VT_IO_WRITE, NULL, deadline)) != VT_OK)
            return e;
        if ((e = connect_outcome(fd)) != VT_EAGAIN)
            return e;
    }
}

vt_err vt_io_close(int fd)
{
    if (fd < 0)
        return VT_EINVAL;
    /* Waiters are woken once fd is closed: one that comes between the
     * unregistering and the close is still woken, and one that comes
     * after the close finds it closed. */
    vt__netpoll_unregister(fd);
    vt_err e = vt__fd_close(fd);
    vt__netpoll_forget(fd);
    return e;
}
