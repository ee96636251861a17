/* netpoll.c — the netpoller: fibers that wait for a file descriptor to be
 * ready suspend here, and one poller thread per runtime wakes them.
 *
 * A descriptor is registered with the platform poller the first time a
 * fiber of the runtime waits on it, edge-triggered for both directions, and
 * stays registered until vt_io_close: later waits cost no system call. Each
 * descriptor has an entry with a ready flag per direction, which the poller
 * thread sets when an edge comes and a waiting fiber consumes; a fiber only
 * waits after its own read, write, accept or connect said "would block", so
 * an edge that came before that call can only make it try once more, and
 * an edge that comes after it is either a flag the fiber finds or a wake-up.
 * At most one reader and one writer wait on a descriptor at a time.
 *
 * Entries live in a two-level table indexed by the descriptor's number
 * (chunks of 256 entries behind a directory that doubles when needed) and
 * are never freed while the runtime lives: the poller's events point at
 * them, and an event may still be in flight for a descriptor that was just
 * closed. A stale event for a number since reused only sets a flag that
 * costs its next waiter one more try.
 *
 * Descriptors must be closed with vt_io_close once a fiber waited on them:
 * a plain close(2) leaves the entry believing the number is registered and
 * non-blocking, and a new descriptor that gets the same number would then
 * never be reported ready. (Accepted sockets and sockets given to
 * vt_io_connect are new by construction, and their entries start over.)
 *
 * vt_io_close may be called from any thread, also one that belongs to no
 * runtime, so the netpollers of all runtimes are on one list that it
 * walks: the only global state of this file. */
#include <stddef.h>

#include "async_int.h"

_Static_assert((int)VT__POLL_IN == (int)VT_IO_READ && (int)VT__POLL_OUT == (int)VT_IO_WRITE,
               "the platform's readiness bits are the public ones");

#define CHUNK_SHIFT 8
#define CHUNK_SIZE (1u << CHUNK_SHIFT)
#define DIR_INITIAL 16 /* chunks: descriptors 0 .. 4095 before the first growth */

struct vt__fdent {
    vt__spinlock lock;
    int fd;
    struct vt__netpoll *np;
    /* Under lock: */
    uint8_t registered;  /* with the platform poller */
    unsigned ready;      /* edges not yet consumed (VT_IO_*) */
    vt__waiter *rd, *wr; /* the reader and the writer waiting (may be one waiter) */
    /* Without lock: O_NONBLOCK set and the kind known (release/acquire). */
    _Atomic uint8_t prepared;
    _Atomic uint8_t socket;
};

typedef struct fddir {
    size_t nchunks;
    struct fddir *older; /* superseded directories, freed with the netpoll */
    _Atomic(vt__fdent *) chunk[];
} fddir;

struct vt__netpoll {
    vt_runtime *rt;
    vt__poller *poller;
    vt__thread thread;
    _Atomic uint32_t stop;
    _Atomic(fddir *) dir;
    vt__spinlock grow;                    /* adding chunks, growing the directory */
    struct vt__netpoll *reg_next, *reg_prev; /* on the list of all netpolls */
};

static vt__spinlock registry_lock = VT__SPINLOCK_INIT;
static struct vt__netpoll *registry;

static void registry_add(struct vt__netpoll *np)
{
    vt__spin_lock(&registry_lock);
    np->reg_prev = NULL;
    np->reg_next = registry;
    if (registry)
        registry->reg_prev = np;
    registry = np;
    vt__spin_unlock(&registry_lock);
}

static void registry_remove(struct vt__netpoll *np)
{
    vt__spin_lock(&registry_lock);
    if (np->reg_prev)
        np->reg_prev->reg_next = np->reg_next;
    else
        registry = np->reg_next;
    if (np->reg_next)
        np->reg_next->reg_prev = np->reg_prev;
    vt__spin_unlock(&registry_lock);
}

/* ---- The table of entries ----------------------------------------------------------- */

static size_t dir_bytes(size_t nchunks)
{
    return sizeof(fddir) + nchunks * sizeof(_Atomic(vt__fdent *));
}

static fddir *dir_new(size_t nchunks)
{
    fddir *d = vt_calloc(1, dir_bytes(nchunks));
    if (d)
        d->nchunks = nchunks;
    return d;
}

static vt__fdent *entry_slow(struct vt__netpoll *np, int fd)
{
    size_t ci = (size_t)fd >> CHUNK_SHIFT;
    vt__fdent *e = NULL;
    vt__spin_lock(&np->grow);
    fddir *d = atomic_load_explicit(&np->dir, memory_order_relaxed);
    if (ci >= d->nchunks) {
        size_t n = d->nchunks * 2;
        while (n <= ci)
            n *= 2;
        fddir *nd = dir_new(n);
        if (!nd)
            goto out;
        for (size_t i = 0; i < d->nchunks; i++)
            atomic_init(&nd->chunk[i], atomic_load_explicit(&d->chunk[i], memory_order_relaxed));
        nd->older = d;
        atomic_store_explicit(&np->dir, nd, memory_order_release);
        d = nd;
    }
    vt__fdent *c = atomic_load_explicit(&d->chunk[ci], memory_order_relaxed);
    if (!c) {
        c = vt_calloc(CHUNK_SIZE, sizeof *c);
        if (!c)
            goto out;
        for (unsigned i = 0; i < CHUNK_SIZE; i++) {
            c[i].lock = (vt__spinlock)VT__SPINLOCK_INIT;
            c[i].fd = (int)((ci << CHUNK_SHIFT) + i);
            c[i].np = np;
        }
        atomic_store_explicit(&d->chunk[ci], c, memory_order_release);
    }
    e = &c[fd & (CHUNK_SIZE - 1)];
out:
    vt__spin_unlock(&np->grow);
    return e;
}

/* The entry of fd, or NULL: none yet and create is 0, or out of memory. */
static vt__fdent *entry(struct vt__netpoll *np, int fd, int create)
{
    size_t ci = (size_t)fd >> CHUNK_SHIFT;
    fddir *d = atomic_load_explicit(&np->dir, memory_order_acquire);
    if (VT_LIKELY(ci < d->nchunks)) {
        vt__fdent *c = atomic_load_explicit(&d->chunk[ci], memory_order_acquire);
        if (VT_LIKELY(c != NULL))
            return &c[fd & (CHUNK_SIZE - 1)];
    }
    return create ? entry_slow(np, fd) : NULL;
}

static void table_free(struct vt__netpoll *np)
{
    fddir *d = atomic_load_explicit(&np->dir, memory_order_relaxed);
    if (!d)
        return;
    /* The newest directory holds every chunk. */
    for (size_t i = 0; i < d->nchunks; i++)
        vt_free(atomic_load_explicit(&d->chunk[i], memory_order_relaxed), CHUNK_SIZE * sizeof(vt__fdent));
    while (d) {
        fddir *older = d->older;
        vt_free(d, dir_bytes(d->nchunks));
        d = older;
    }
}

/* ---- The poller thread ------------------------------------------------------------ */

/* Hands the ready directions of e to its waiters; called with e locked.
 * The woken waiters go to out[], to be woken once e is unlocked. */
static unsigned hand_over(vt__fdent *e, vt__waiter **out)
{
    unsigned n = 0;
    vt__waiter *slots[2] = {e->rd, e->wr};
    for (int i = 0; i < 2; i++) {
        vt__waiter *w = slots[i];
        if (!w || (i == 1 && w == slots[0]))
            continue;
        unsigned got = e->ready & (unsigned)w->want;
        if (!got)
            continue;
        if (e->rd == w)
            e->rd = NULL;
        if (e->wr == w)
            e->wr = NULL;
        /* A waiter whose wait ended already (deadline, cancellation) leaves
         * the flags for the next one. */
        if (vt__waiter_claim(w)) {
            e->ready &= ~got;
            w->data = (void *)(uintptr_t)got;
            out[n++] = w;
        }
    }
    return n;
}

static void deliver(vt__fdent *e, unsigned events)
{
    vt__waiter *wake[2];
    vt__spin_lock(&e->lock);
    e->ready |= events;
    unsigned n = hand_over(e, wake);
    vt__spin_unlock(&e->lock);
    for (unsigned i = 0; i < n; i++)
        vt__waiter_wake(wake[i], VT_OK);
}

static void *poller_main(void *arg)
{
    struct vt__netpoll *np = arg;
    vt__poll_event ev[VT__POLLER_BATCH];
    while (!atomic_load_explicit(&np->stop, memory_order_acquire)) {
        int n = 0;
        vt_err err = vt__poller_wait(np->poller, ev, VT__POLLER_BATCH, &n, VT_FOREVER);
        if (err != VT_OK) {
            /* Only a broken poller fails a wait without a deadline; don't
             * spin on it, and keep serving interrupts (the stop). */
            vt_log(VT_LOG_ERROR, "netpoll", "poller wait failed: %s", vt_strerror(err));
            vt__sleep_ns(VT_MS(10));
            continue;
        }
        for (int i = 0; i < n; i++)
            deliver(ev[i].data, ev[i].events);
    }
    return NULL;
}

/* ---- Life --------------------------------------------------------------------------- */

static void netpoll_destroy(struct vt__netpoll *np, int started)
{
    if (started) {
        atomic_store_explicit(&np->stop, 1, memory_order_release);
        vt__poller_interrupt(np->poller);
        vt__thread_join(np->thread, NULL);
    }
    vt__poller_free(np->poller);
    table_free(np);
    vt_free(np, sizeof *np);
}

static vt_err netpoll_new(vt_runtime *rt, struct vt__netpoll **out)
{
    struct vt__netpoll *np = vt_calloc(1, sizeof *np);
    if (!np)
        return VT_ENOMEM;
    np->rt = rt;
    np->grow = (vt__spinlock)VT__SPINLOCK_INIT;
    atomic_init(&np->stop, 0);
    fddir *d = dir_new(DIR_INITIAL);
    atomic_init(&np->dir, d);
    vt_err err = d ? vt__poller_new(&np->poller) : VT_ENOMEM;
    if (err == VT_OK)
        err = vt__thread_create(&np->thread, poller_main, np, 0, "vitte-netpoll");
    if (err != VT_OK) {
        netpoll_destroy(np, 0);
        return err;
    }
    *out = np;
    return VT_OK;
}

/* The runtime's netpoll, started by the first fiber that needs it. */
static vt_err netpoll_get(vt_runtime *rt, struct vt__netpoll **out)
{
    _Atomic(struct vt__netpoll *) *slot = vt__runtime_netpoll_slot(rt);
    struct vt__netpoll *np = atomic_load_explicit(slot, memory_order_acquire);
    if (VT_LIKELY(np != NULL)) {
        *out = np;
        return VT_OK;
    }
    vt_err err = netpoll_new(rt, &np);
    if (err != VT_OK)
        return err;
    struct vt__netpoll *seen = NULL;
    /* On the list before anyone can wait on it, so that no vt_io_close
     * misses a waiter. */
    registry_add(np);
    if (!atomic_compare_exchange_strong_explicit(slot, &seen, np, memory_order_acq_rel,
                                                 memory_order_acquire)) {
        vt__netpoll_free(np); /* another fiber was first */
        *out = seen;
        return VT_OK;
    }
    *out = np;
    return VT_OK;
}

void vt__netpoll_free(struct vt__netpoll *np)
{
    if (!np)
        return;
    registry_remove(np);
    netpoll_destroy(np, 1);
}

/* ---- What io.c uses ---------------------------------------------------------------- */

/* The calling fiber's entry for fd (its runtime's netpoll started if it
 * was not), with fd made non-blocking the first time. *is_socket (may be
 * NULL) tells whether fd is a socket. Thread: fiber only. Errors:
 * VT_ENOMEM, VT_ESYSERR|errno (EBADF; no poller thread could start). */
vt_err vt__netpoll_fd(int fd, vt__fdent **out, int *is_socket)
{
    struct vt__netpoll *np;
    vt_err err = netpoll_get(vt__runtime_self(), &np);
    if (err != VT_OK)
        return err;
    vt__fdent *e = entry(np, fd, 1);
    if (!e)
        return VT_ENOMEM;
    if (!atomic_load_explicit(&e->prepared, memory_order_acquire)) {
        int sock = 0;
        if ((err = vt__fd_prepare(fd, &sock)) != VT_OK)
            return err;
        atomic_store_explicit(&e->socket, (uint8_t)sock, memory_order_relaxed);
        atomic_store_explicit(&e->prepared, 1, memory_order_release);
    }
    if (is_socket)
        *is_socket = atomic_load_explicit(&e->socket, memory_order_relaxed);
    *out = e;
    return VT_OK;
}

/* Forgets the edges of events seen so far, so that the next wait reports
 * only readiness that comes after (vt_io_wait looks at the present state
 * itself first). */
void vt__netpoll_clear(vt__fdent *e, unsigned events)
{
    vt__spin_lock(&e->lock);
    e->ready &= ~events;
    vt__spin_unlock(&e->lock);
}

/* e's descriptor is a new one that may have the number of an old one:
 * register it again at its first wait. is_socket >= 0: what it is, known
 * already (and non-blocking); < 0: to be found out. */
void vt__netpoll_renew(vt__fdent *e, int is_socket)
{
    vt__spin_lock(&e->lock);
    e->registered = 0;
    e->ready = 0;
    vt__spin_unlock(&e->lock);
    if (is_socket >= 0) {
        atomic_store_explicit(&e->socket, (uint8_t)is_socket, memory_order_relaxed);
        atomic_store_explicit(&e->prepared, 1, memory_order_release);
    } else {
        atomic_store_explicit(&e->prepared, 0, memory_order_release);
    }
}

/* An accepted socket, non-blocking already: its entry (in the calling
 * fiber's runtime) starts over. Best effort: without memory for the entry,
 * its first use makes one. */
void vt__netpoll_fresh(int fd)
{
    vt_runtime *rt = vt__runtime_self();
    struct vt__netpoll *np = rt ? atomic_load_explicit(vt__runtime_netpoll_slot(rt), memory_order_acquire) : NULL;
    vt__fdent *e = np ? entry(np, fd, 1) : NULL;
    if (e)
        vt__netpoll_renew(e, 1);
}

/* Waits, after a call on e's descriptor said it would block, until an edge
 * of events comes (or came since the flags were last consumed). *ready
 * gets the directions that came. Thread: fiber only. Errors: VT_ETIMEDOUT,
 * VT_ECANCELED, VT_ECLOSED (vt_io_close, or the runtime shuts down),
 * VT_EBUSY (another fiber waits in that direction), VT_ESYSERR|errno (the
 * descriptor cannot be registered). */
vt_err vt__netpoll_wait(vt__fdent *e, unsigned events, unsigned *ready, int64_t deadline)
{
    if (vt__runtime_closing(e->np->rt))
        return VT_ECLOSED;
    vt__spin_lock(&e->lock);
    if (!e->registered) {
        vt_err err = vt__poller_add(e->np->poller, e->fd, e);
        if (err != VT_OK) {
            vt__spin_unlock(&e->lock);
            /* A regular file or a directory cannot be polled: like poll(2),
             * call it always ready (its reads and writes never say
             * "would block" anyway). */
            if (err == VT_ENOTSUP) {
                *ready = events;
                return VT_OK;
            }
            return err;
        }
        e->registered = 1;
    }
    unsigned got = e->ready & events;
    if (got) {
        e->ready &= ~got;
        vt__spin_unlock(&e->lock);
        *ready = got;
        return VT_OK;
    }
    if (((events & VT_IO_READ) && e->rd) || ((events & VT_IO_WRITE) && e->wr)) {
        vt__spin_unlock(&e->lock);
        return VT_EBUSY;
    }
    vt__waiter w;
    vt__waiter_init(&w, events == VT_IO_READ ? "io read" : events == VT_IO_WRITE ? "io write" : "io",
                    e, 0);
    w.want = events;
    if (events & VT_IO_READ)
        e->rd = &w;
    if (events & VT_IO_WRITE)
        e->wr = &w;
    vt__spin_unlock(&e->lock);

    vt_err err = vt__waiter_wait(&w, deadline);
    if (err == VT_OK) {
        *ready = (unsigned)(uintptr_t)w.data;
        return VT_OK;
    }
    vt__spin_lock(&e->lock);
    if (e->rd == &w)
        e->rd = NULL;
    if (e->wr == &w)
        e->wr = NULL;
    vt__spin_unlock(&e->lock);
    return err;
}

/* fd is about to be closed: stop watching it in every runtime where a
 * fiber waited on it. Closing fd would do it too, unless a duplicate keeps
 * its file open: then its events would go on reaching the entry. Fibers
 * that wait meanwhile are woken by vt__netpoll_forget. */
void vt__netpoll_unregister(int fd)
{
    vt__spin_lock(&registry_lock);
    for (struct vt__netpoll *np = registry; np; np = np->reg_next) {
        vt__fdent *e = entry(np, fd, 0);
        if (!e)
            continue;
        vt__spin_lock(&e->lock);
        int registered = e->registered;
        vt__spin_unlock(&e->lock);
        if (registered)
            (void)vt__poller_del(np->poller, fd);
    }
    vt__spin_unlock(&registry_lock);
}

/* fd was closed: in every runtime, wake its waiters with VT_ECLOSED and
 * forget what its entry knew (the number's next descriptor is another
 * file). A fiber that starts waiting after this finds fd closed (EBADF),
 * unless the number was reused already: the race of any use of a
 * descriptor with its close. */
void vt__netpoll_forget(int fd)
{
    vt__spin_lock(&registry_lock);
    for (struct vt__netpoll *np = registry; np; np = np->reg_next) {
        vt__fdent *e = entry(np, fd, 0);
        if (!e)
            continue;
        vt__waiter *wake[2];
        unsigned n = 0;
        vt__spin_lock(&e->lock);
        vt__waiter *slots[2] = {e->rd, e->wr};
        e->rd = e->wr = NULL;
        for (int i = 0; i < 2; i++)
            if (slots[i] && !(i == 1 && slots[1] == slots[0]) && vt__waiter_claim(slots[i]))
                wake[n++] = slots[i];
        e->registered = 0;
        e->ready = 0;
        atomic_store_explicit(&e->prepared, 0, memory_order_relaxed);
        vt__spin_unlock(&e->lock);
        for (unsigned i = 0; i < n; i++)
            vt__waiter_wake(wake[i], VT_ECLOSED);
    }
    vt__spin_unlock(&registry_lock);
}
