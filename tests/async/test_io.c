/* IO readiness: reads, writes, accepts and connects from fibers (which
 * suspend) and from plain threads (which block), over pipes and loopback
 * TCP; deadlines, cancellation, vt_io_close, one reader per descriptor,
 * refused connections, bad input. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pipe2 */
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vt_test.h"
#include "async_test.h"
#include "vitte/async.h"

/* ---- Helpers -------------------------------------------------------------------- */

static vt_err spawn_on(vt_runtime *rt, vt_fiber *f, vt_fiber_fn fn, void *arg)
{
    vt_fiber_opts o;
    memset(&o, 0, sizeof o);
    o.runtime = rt;
    return vt_fiber_spawn_ex(f, fn, arg, &o);
}

#define ERR_PTR(e) ((void *)(intptr_t)(e))

/* The fiber's result, which these tests make a vt_err. */
static vt_err await_err(vt_fiber f)
{
    void *r = NULL;
    vt_err e = vt_fiber_await(f, &r, VT_FOREVER);
    return e != VT_OK ? e : (vt_err)(intptr_t)r;
}

/* A pipe, blocking unless nonblock. */
static int pipe_of(int fds[2], int nonblock)
{
    return pipe2(fds, O_CLOEXEC | (nonblock ? O_NONBLOCK : 0));
}

/* A TCP socket listening on 127.0.0.1 at a port the kernel picks. */
static int listener(int backlog, struct sockaddr_in *addr)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof a;
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, backlog) != 0 ||
        getsockname(s, (struct sockaddr *)&a, &len) != 0) {
        close(s);
        return -1;
    }
    *addr = a;
    return s;
}

static int tcp_socket(void)
{
    return socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
}

static void fill(unsigned char *p, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)((seed + i * 131u) ^ (i >> 9));
}

/* Reads exactly n bytes (VT_ECLOSED at an early end of file). */
static vt_err read_full(int fd, void *buf, size_t n, int64_t deadline)
{
    size_t done = 0;
    while (done < n) {
        size_t got = 0;
        vt_err e = vt_io_read(fd, (char *)buf + done, n - done, &got, deadline);
        if (e != VT_OK)
            return e;
        if (got == 0)
            return VT_ECLOSED;
        done += got;
    }
    return VT_OK;
}

/* ---- Bad input ------------------------------------------------------------------ */

VT_TEST(bad_input)
{
    char buf[8];
    size_t got = 99, put = 99;
    unsigned ready = 99;
    int out = 99;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    VT_CHECK_ERR(vt_io_wait(-1, VT_IO_READ, &ready, VT_NOW), VT_EINVAL);
    VT_CHECK_EQ(ready, 0);
    VT_CHECK_ERR(vt_io_read(-1, buf, sizeof buf, &got, VT_NOW), VT_EINVAL);
    VT_CHECK_EQ(got, 0);
    VT_CHECK_ERR(vt_io_write(-1, buf, sizeof buf, &put, VT_NOW), VT_EINVAL);
    VT_CHECK_EQ(put, 0);
    VT_CHECK_ERR(vt_io_accept(-1, &out, NULL, NULL, VT_NOW), VT_EINVAL);
    VT_CHECK_EQ(out, -1);
    VT_CHECK_ERR(vt_io_connect(-1, (struct sockaddr *)&a, sizeof a, VT_NOW), VT_EINVAL);
    VT_CHECK_ERR(vt_io_close(-1), VT_EINVAL);

    int p[2];
    VT_CHECK_EQ(pipe_of(p, 1), 0);
    VT_CHECK_ERR(vt_io_wait(p[0], 0, NULL, VT_NOW), VT_EINVAL);
    VT_CHECK_ERR(vt_io_wait(p[0], 4, NULL, VT_NOW), VT_EINVAL);
    VT_CHECK_ERR(vt_io_read(p[0], NULL, 4, &got, VT_NOW), VT_EINVAL);
    VT_CHECK_ERR(vt_io_read(p[0], buf, sizeof buf, NULL, VT_NOW), VT_EINVAL);
    VT_CHECK_ERR(vt_io_write(p[1], NULL, 4, NULL, VT_NOW), VT_EINVAL);
    VT_CHECK_ERR(vt_io_accept(p[0], NULL, NULL, NULL, VT_NOW), VT_EINVAL);
    VT_CHECK_ERR(vt_io_accept(p[0], &out, (struct sockaddr *)&a, NULL, VT_NOW), VT_EINVAL);
    VT_CHECK_ERR(vt_io_connect(p[0], NULL, sizeof a, VT_NOW), VT_EINVAL);
    VT_CHECK_ERR(vt_io_connect(p[0], (struct sockaddr *)&a, 0, VT_NOW), VT_EINVAL);
    /* Zero bytes are no error, and touch nothing. */
    VT_CHECK_OK(vt_io_read(p[0], NULL, 0, &got, VT_NOW));
    VT_CHECK_EQ(got, 0);
    VT_CHECK_OK(vt_io_write(p[1], NULL, 0, &put, VT_NOW));
    VT_CHECK_EQ(put, 0);
    /* Not a socket: the system says so. */
    VT_CHECK_ERR(vt_io_accept(p[0], &out, NULL, NULL, VT_NOW), vt_err_from_errno(ENOTSOCK));
    VT_CHECK_OK(vt_io_close(p[0]));
    VT_CHECK_OK(vt_io_close(p[1]));
    /* Closed descriptors. */
    VT_CHECK_ERR(vt_io_read(p[0], buf, sizeof buf, &got, VT_NOW), vt_err_from_errno(EBADF));
    VT_CHECK_ERR(vt_io_wait(p[0], VT_IO_READ, NULL, VT_NOW), vt_err_from_errno(EBADF));
    VT_CHECK_ERR(vt_io_close(p[0]), vt_err_from_errno(EBADF));
}

typedef struct bad_fiber {
    vt_err wait_closed, read_closed, events0, accept_null;
} bad_fiber;

static void *bad_input_fiber_body(void *arg)
{
    bad_fiber *b = arg;
    char buf[4];
    size_t got;
    int p[2];
    if (pipe_of(p, 1) != 0)
        return ERR_PTR(VT_ESYSERR);
    /* The first call starts the netpoller, whose descriptors would take
     * the numbers closed below. */
    vt_io_wait(p[1], VT_IO_WRITE, NULL, VT_NOW);
    close(p[0]);
    close(p[1]);
    b->wait_closed = vt_io_wait(p[0], VT_IO_READ, NULL, vt_fiber_deadline(VT_MS(5)));
    b->read_closed = vt_io_read(p[0], buf, sizeof buf, &got, vt_fiber_deadline(VT_MS(5)));
    b->events0 = vt_io_wait(0, 0, NULL, VT_NOW);
    b->accept_null = vt_io_accept(0, NULL, NULL, NULL, VT_NOW);
    return ERR_PTR(VT_OK);
}

VT_TEST(bad_input_from_fiber)
{
    bad_fiber b;
    VT_CHECK_OK(vt_runtime_main(NULL, bad_input_fiber_body, &b, NULL));
    VT_CHECK_ERR(b.wait_closed, vt_err_from_errno(EBADF));
    VT_CHECK_ERR(b.read_closed, vt_err_from_errno(EBADF));
    VT_CHECK_ERR(b.events0, VT_EINVAL);
    VT_CHECK_ERR(b.accept_null, VT_EINVAL);
}

/* ---- Echo between fibers --------------------------------------------------------- */

typedef struct echo {
    int lsock;
    struct sockaddr_in addr;
    unsigned rounds;
    uint64_t seed;
    _Atomic uint64_t bytes;
    vt_err server, client;
} echo;

static void *echo_server(void *arg)
{
    echo *x = arg;
    int c;
    vt_err e = vt_io_accept(x->lsock, &c, NULL, NULL, VT_FOREVER);
    if (e != VT_OK)
        return ERR_PTR(e);
    char buf[8192];
    for (;;) {
        size_t got;
        if ((e = vt_io_read(c, buf, sizeof buf, &got, VT_FOREVER)) != VT_OK || got == 0)
            break;
        if ((e = vt_io_write(c, buf, got, NULL, VT_FOREVER)) != VT_OK)
            break;
    }
    vt_io_close(c);
    return ERR_PTR(e);
}

static void *echo_client(void *arg)
{
    echo *x = arg;
    int s = tcp_socket();
    if (s < 0)
        return ERR_PTR(vt_err_from_errno(errno));
    vt_err e = vt_io_connect(s, (struct sockaddr *)&x->addr, sizeof x->addr, VT_FOREVER);
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* On the fiber's stack: a fiber may move between workers, so no
     * thread-local buffer. */
    unsigned char out[6000], in[6000];
    uint64_t rng = x->seed;
    for (unsigned i = 0; e == VT_OK && i < x->rounds; i++) {
        size_t n = 1 + (size_t)(vt_hash_mix64(rng++) % sizeof out);
        fill(out, n, (uint32_t)i);
        size_t put = 0;
        if ((e = vt_io_write(s, out, n, &put, VT_FOREVER)) != VT_OK)
            break;
        if (put != n) {
            e = VT_ERANGE;
            break;
        }
        memset(in, 0, n);
        if ((e = read_full(s, in, n, VT_FOREVER)) != VT_OK)
            break;
        if (memcmp(in, out, n) != 0)
            e = VT_ERANGE;
        atomic_fetch_add(&x->bytes, n);
    }
    vt_io_close(s);
    return ERR_PTR(e);
}

static void *echo_root(void *arg)
{
    echo *x = arg;
    vt_fiber s, c;
    vt_err e = vt_fiber_spawn(&s, echo_server, x);
    if (e != VT_OK)
        return ERR_PTR(e);
    if ((e = vt_fiber_spawn(&c, echo_client, x)) != VT_OK) {
        vt_fiber_cancel(s);
        await_err(s);
        return ERR_PTR(e);
    }
    x->client = await_err(c);
    x->server = await_err(s);
    return ERR_PTR(VT_OK);
}

static void echo_on(unsigned workers)
{
    echo x;
    memset(&x, 0, sizeof x);
    x.lsock = listener(16, &x.addr);
    VT_CHECK_GE(x.lsock, 0);
    x.rounds = 300 * vt_test_stress();
    x.seed = vt_test_rand();
    vt_runtime_opts o;
    vt_runtime_opts_init(&o);
    o.pool.workers = workers;
    void *r = NULL;
    VT_CHECK_OK(vt_runtime_main(&o, echo_root, &x, &r));
    VT_CHECK_OK((vt_err)(intptr_t)r);
    VT_CHECK_OK(x.client);
    VT_CHECK_OK(x.server);
    VT_CHECK_GE(atomic_load(&x.bytes), x.rounds);
    VT_CHECK_OK(vt_io_close(x.lsock));
}

VT_TEST(tcp_echo_1_worker)
{
    echo_on(1);
}

VT_TEST(tcp_echo_2_workers)
{
    echo_on(2);
}

/* Ping-pong over two pipes: the reader of each suspends until the other
 * fiber writes. */
typedef struct pingpong {
    int a[2], b[2];
    unsigned rounds;
    vt_err ping, pong;
} pingpong;

static void *pong_fiber(void *arg)
{
    pingpong *x = arg;
    uint32_t v;
    vt_err e = VT_OK;
    for (unsigned i = 0; i < x->rounds; i++) {
        if ((e = read_full(x->a[0], &v, sizeof v, VT_FOREVER)) != VT_OK)
            break;
        v++;
        if ((e = vt_io_write(x->b[1], &v, sizeof v, NULL, VT_FOREVER)) != VT_OK)
            break;
    }
    x->pong = e;
    return NULL;
}

static void *ping_fiber(void *arg)
{
    pingpong *x = arg;
    vt_fiber f;
    vt_err e = vt_fiber_spawn(&f, pong_fiber, x);
    if (e != VT_OK) {
        x->ping = e;
        return NULL;
    }
    uint32_t v = 0;
    for (unsigned i = 0; i < x->rounds && e == VT_OK; i++) {
        uint32_t back;
        if ((e = vt_io_write(x->a[1], &v, sizeof v, NULL, VT_FOREVER)) != VT_OK ||
            (e = read_full(x->b[0], &back, sizeof back, VT_FOREVER)) != VT_OK)
            break;
        if (back != v + 1)
            e = VT_ERANGE;
        v = back;
    }
    x->ping = e;
    vt_fiber_await(f, NULL, VT_FOREVER);
    return NULL;
}

static void pingpong_on(unsigned workers)
{
    pingpong x;
    memset(&x, 0, sizeof x);
    VT_CHECK_EQ(pipe_of(x.a, 0), 0);
    VT_CHECK_EQ(pipe_of(x.b, 0), 0);
    x.rounds = 2000 * vt_test_stress();
    vt_runtime_opts o;
    vt_runtime_opts_init(&o);
    o.pool.workers = workers;
    VT_CHECK_OK(vt_runtime_main(&o, ping_fiber, &x, NULL));
    VT_CHECK_OK(x.ping);
    VT_CHECK_OK(x.pong);
    for (int i = 0; i < 2; i++) {
        VT_CHECK_OK(vt_io_close(x.a[i]));
        VT_CHECK_OK(vt_io_close(x.b[i]));
    }
}

VT_TEST(pipe_pingpong_1_worker)
{
    pingpong_on(1);
}

VT_TEST(pipe_pingpong_2_workers)
{
    pingpong_on(2);
}

/* ---- Many connections -------------------------------------------------------------- */

typedef struct many {
    int lsock;
    struct sockaddr_in addr;
    unsigned n;
    _Atomic unsigned served, ok;
    _Atomic int first_err;
} many;

static void note_err(many *m, vt_err e)
{
    int zero = 0;
    if (e != VT_OK)
        atomic_compare_exchange_strong(&m->first_err, &zero, (int)e);
}

typedef struct conn {
    many *m;
    int fd;
    unsigned id;
} conn;

static void *serve_conn(void *arg)
{
    conn *c = arg;
    char buf[256];
    vt_err e;
    for (;;) {
        size_t got;
        if ((e = vt_io_read(c->fd, buf, sizeof buf, &got, VT_FOREVER)) != VT_OK || got == 0)
            break;
        if ((e = vt_io_write(c->fd, buf, got, NULL, VT_FOREVER)) != VT_OK)
            break;
    }
    note_err(c->m, e);
    atomic_fetch_add(&c->m->served, 1);
    vt_io_close(c->fd);
    vt_free(c, sizeof *c);
    return NULL;
}

static void *accept_loop(void *arg)
{
    many *m = arg;
    for (unsigned i = 0; i < m->n; i++) {
        int fd;
        vt_err e = vt_io_accept(m->lsock, &fd, NULL, NULL, VT_FOREVER);
        if (e != VT_OK) {
            note_err(m, e);
            return NULL;
        }
        conn *c = vt_alloc(sizeof *c);
        if (!c) {
            vt_io_close(fd);
            note_err(m, VT_ENOMEM);
            return NULL;
        }
        c->m = m;
        c->fd = fd;
        vt_fiber_opts o;
        memset(&o, 0, sizeof o);
        o.detached = 1;
        o.name = "conn";
        if ((e = vt_fiber_spawn_ex(NULL, serve_conn, c, &o)) != VT_OK) {
            vt_io_close(fd);
            vt_free(c, sizeof *c);
            note_err(m, e);
            return NULL;
        }
    }
    return NULL;
}

static void *client(void *arg)
{
    conn *c = arg;
    many *m = c->m;
    int s = tcp_socket();
    if (s < 0) {
        note_err(m, vt_err_from_errno(errno));
        return NULL;
    }
    vt_err e = vt_io_connect(s, (struct sockaddr *)&m->addr, sizeof m->addr, VT_FOREVER);
    char msg[64], back[64];
    memset(msg, ' ', sizeof msg);
    int len = snprintf(msg, sizeof msg, "client %u says hello", c->id);
    if (len > 0 && (size_t)len < sizeof msg)
        msg[len] = ' ';
    for (int round = 0; e == VT_OK && round < 3; round++) {
        msg[0] = (char)('a' + round);
        if ((e = vt_io_write(s, msg, sizeof msg, NULL, VT_FOREVER)) == VT_OK &&
            (e = read_full(s, back, sizeof back, VT_FOREVER)) == VT_OK && memcmp(msg, back, sizeof msg) != 0)
            e = VT_ERANGE;
    }
    if (e == VT_OK)
        atomic_fetch_add(&m->ok, 1);
    note_err(m, e);
    vt_io_close(s);
    return NULL;
}

static void *many_root(void *arg)
{
    many *m = arg;
    vt_fiber acc;
    vt_err e = vt_fiber_spawn(&acc, accept_loop, m);
    if (e != VT_OK)
        return ERR_PTR(e);
    vt_fiber *cl = vt_calloc(m->n, sizeof *cl);
    conn *cs = vt_calloc(m->n, sizeof *cs);
    unsigned started = 0;
    if (cl && cs) {
        for (; started < m->n; started++) {
            cs[started].m = m;
            cs[started].id = started;
            if ((e = vt_fiber_spawn(&cl[started], client, &cs[started])) != VT_OK)
                break;
        }
    }
    for (unsigned i = 0; i < started; i++)
        vt_fiber_await(cl[i], NULL, VT_FOREVER);
    if (started < m->n)
        vt_fiber_cancel(acc);
    vt_fiber_await(acc, NULL, VT_FOREVER);
    vt_free(cl, m->n * sizeof *cl);
    vt_free(cs, m->n * sizeof *cs);
    return ERR_PTR(started == m->n ? VT_OK : e ? e : VT_ENOMEM);
}

VT_TEST(many_connections)
{
    many m;
    memset(&m, 0, sizeof m);
    m.n = 200 * vt_test_stress();
    /* Two descriptors a connection, and some room. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && m.n > (rl.rlim_cur - 64) / 2)
        m.n = (unsigned)((rl.rlim_cur - 64) / 2);
    m.lsock = listener(1024, &m.addr);
    VT_CHECK_GE(m.lsock, 0);
    vt_runtime_opts o;
    vt_runtime_opts_init(&o);
    o.pool.workers = 2;
    void *r = NULL;
    VT_CHECK_OK(vt_runtime_main(&o, many_root, &m, &r));
    VT_CHECK_OK((vt_err)(intptr_t)r);
    VT_CHECK_OK((vt_err)atomic_load(&m.first_err));
    VT_CHECK_EQ(atomic_load(&m.ok), m.n);
    VT_CHECK_EQ(atomic_load(&m.served), m.n);
    VT_CHECK_OK(vt_io_close(m.lsock));
}

/* ---- A reader fiber suspends; a thread writes ------------------------------------ */
/* On a runtime of one worker, a fiber that another fiber sees running is
 * one that is suspended: so "armed" (set just before a blocking call)
 * seen by a second fiber means the first is in that call's wait. */

typedef struct suspend {
    int p[2];
    vt_runtime *rt;
    _Atomic int armed;     /* the reader is about to read */
    _Atomic int blocked;   /* a fiber saw the reader suspended */
    _Atomic int done;
    _Atomic uint64_t progress;
    uint64_t progress_at_block;
    char got[32];
    size_t ngot;
    vt_err read_err;
    vt_fiber reader;
} suspend;

static void *suspended_reader(void *arg)
{
    suspend *s = arg;
    atomic_store(&s->armed, 1);
    s->read_err = vt_io_read(s->p[0], s->got, sizeof s->got, &s->ngot, VT_FOREVER);
    return NULL;
}

/* Runs beside the reader: notes when it is blocked, then keeps counting. */
static void *watcher(void *arg)
{
    suspend *s = arg;
    while (!atomic_load(&s->armed))
        vt_fiber_yield();
    s->progress_at_block = atomic_load(&s->progress);
    atomic_store(&s->blocked, 1);
    while (!atomic_load(&s->done)) {
        atomic_fetch_add(&s->progress, 1);
        if (vt_fiber_yield() != VT_OK)
            break;
        if ((atomic_load(&s->progress) & 1023) == 0)
            vt_sleep_ns(VT_US(50)); /* let the thread in on a busy machine */
    }
    return NULL;
}

VT_TEST(reader_suspends_until_thread_writes)
{
    suspend s;
    memset(&s, 0, sizeof s);
    VT_CHECK_EQ(pipe_of(s.p, 0), 0); /* blocking: vt_io_read must make it non-blocking */
    s.rt = rt_new(1);
    VT_CHECK_NOT_NULL(s.rt);
    vt_fiber w;
    VT_CHECK_OK(spawn_on(s.rt, &s.reader, suspended_reader, &s));
    VT_CHECK_OK(spawn_on(s.rt, &w, watcher, &s));
    while (!atomic_load(&s.blocked))
        vt_sleep_ns(VT_US(100));
    /* The one worker keeps running the watcher while the reader waits. */
    uint64_t p0 = atomic_load(&s.progress);
    while (atomic_load(&s.progress) < p0 + 100)
        vt_sleep_ns(VT_US(100));
    VT_CHECK_EQ(write(s.p[1], "hello", 5), 5);
    VT_CHECK_OK(vt_fiber_await(s.reader, NULL, VT_FOREVER));
    atomic_store(&s.done, 1);
    VT_CHECK_OK(vt_fiber_await(w, NULL, VT_FOREVER));
    VT_CHECK_OK(s.read_err);
    VT_CHECK_EQ(s.ngot, 5);
    VT_CHECK(memcmp(s.got, "hello", 5) == 0);
    VT_CHECK(fcntl(s.p[0], F_GETFL) & O_NONBLOCK);
    vt_runtime_free(s.rt);
    VT_CHECK_OK(vt_io_close(s.p[0]));
    VT_CHECK_OK(vt_io_close(s.p[1]));
}

/* ---- Cancellation, close, one reader ------------------------------------------------ */

typedef enum { ACT_CANCEL, ACT_CLOSE, ACT_SECOND_READER } action;

typedef struct blocked {
    suspend s;
    action act;
    vt_err second; /* the second reader's result */
    vt_err close_err;
} blocked;

static void *actor(void *arg)
{
    blocked *b = arg;
    while (!atomic_load(&b->s.armed))
        vt_fiber_yield();
    /* The reader is suspended in vt_io_read now (one worker). */
    char buf[4];
    size_t got;
    switch (b->act) {
    case ACT_CANCEL:
        vt_fiber_cancel(b->s.reader);
        break;
    case ACT_CLOSE:
        b->close_err = vt_io_close(b->s.p[0]);
        break;
    case ACT_SECOND_READER:
        b->second = vt_io_read(b->s.p[0], buf, sizeof buf, &got, VT_FOREVER);
        b->close_err = vt_io_close(b->s.p[0]);
        break;
    }
    return NULL;
}

static void blocked_reader(action act, vt_err want_reader)
{
    blocked b;
    memset(&b, 0, sizeof b);
    b.act = act;
    VT_CHECK_EQ(pipe_of(b.s.p, 1), 0);
    vt_runtime *rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    vt_fiber a;
    VT_CHECK_OK(spawn_on(rt, &b.s.reader, suspended_reader, &b.s));
    VT_CHECK_OK(spawn_on(rt, &a, actor, &b));
    VT_CHECK_OK(vt_fiber_await(a, NULL, VT_FOREVER));
    VT_CHECK_OK(vt_fiber_await(b.s.reader, NULL, VT_FOREVER));
    vt_runtime_free(rt);
    VT_CHECK_ERR(b.s.read_err, want_reader);
    VT_CHECK_EQ(b.s.ngot, 0);
    if (act == ACT_SECOND_READER)
        VT_CHECK_ERR(b.second, VT_EBUSY);
    if (act == ACT_CANCEL) {
        VT_CHECK_OK(vt_io_close(b.s.p[0]));
    } else {
        VT_CHECK_OK(b.close_err);
        VT_CHECK_EQ(fcntl(b.s.p[0], F_GETFD), -1); /* closed */
    }
    VT_CHECK_OK(vt_io_close(b.s.p[1]));
}

VT_TEST(cancel_blocked_read)
{
    blocked_reader(ACT_CANCEL, VT_ECANCELED);
}

VT_TEST(close_wakes_reader_from_fiber)
{
    blocked_reader(ACT_CLOSE, VT_ECLOSED);
}

VT_TEST(second_reader_is_busy)
{
    blocked_reader(ACT_SECOND_READER, VT_ECLOSED);
}

VT_TEST(close_from_thread_wakes_reader)
{
    suspend s;
    memset(&s, 0, sizeof s);
    VT_CHECK_EQ(pipe_of(s.p, 1), 0);
    s.rt = rt_new(1);
    VT_CHECK_NOT_NULL(s.rt);
    vt_fiber w;
    VT_CHECK_OK(spawn_on(s.rt, &s.reader, suspended_reader, &s));
    VT_CHECK_OK(spawn_on(s.rt, &w, watcher, &s));
    while (!atomic_load(&s.blocked))
        vt_sleep_ns(VT_US(100));
    VT_CHECK_OK(vt_io_close(s.p[0]));
    VT_CHECK_OK(vt_fiber_await(s.reader, NULL, VT_FOREVER));
    atomic_store(&s.done, 1);
    VT_CHECK_OK(vt_fiber_await(w, NULL, VT_FOREVER));
    VT_CHECK_ERR(s.read_err, VT_ECLOSED);
    vt_runtime_free(s.rt);
    VT_CHECK_OK(vt_io_close(s.p[1]));
}

/* A fiber blocked in a read when the runtime shuts down is cancelled. */
VT_TEST(shutdown_cancels_blocked_read)
{
    blocked b;
    memset(&b, 0, sizeof b);
    b.act = ACT_SECOND_READER; /* unused: no actor */
    VT_CHECK_EQ(pipe_of(b.s.p, 1), 0);
    vt_runtime *rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    vt_fiber w;
    VT_CHECK_OK(spawn_on(rt, &b.s.reader, suspended_reader, &b.s));
    VT_CHECK_OK(spawn_on(rt, &w, watcher, &b.s));
    while (!atomic_load(&b.s.blocked))
        vt_sleep_ns(VT_US(100));
    atomic_store(&b.s.done, 1);
    VT_CHECK_OK(vt_fiber_await(w, NULL, VT_FOREVER));
    vt_runtime_free(rt); /* cancels the reader and waits for it */
    VT_CHECK_ERR(b.s.read_err, VT_ECANCELED);
    VT_CHECK_OK(vt_io_close(b.s.p[0]));
    VT_CHECK_OK(vt_io_close(b.s.p[1]));
}

/* ---- Deadlines ------------------------------------------------------------------------ */

typedef struct timeouts {
    int p[2];
    int lsock;
    int64_t read_deadline, read_returned;
    int64_t accept_deadline, accept_returned;
    int64_t wait_deadline, wait_returned;
    vt_err read_err, accept_err, wait_err, now_err;
} timeouts;

static void *timeouts_body(void *arg)
{
    timeouts *t = arg;
    char buf[8];
    size_t got;
    int c;
    t->now_err = vt_io_read(t->p[0], buf, sizeof buf, &got, VT_NOW);
    t->read_deadline = vt_fiber_deadline(VT_MS(20));
    t->read_err = vt_io_read(t->p[0], buf, sizeof buf, &got, t->read_deadline);
    t->read_returned = vt_fiber_now();
    t->accept_deadline = vt_fiber_deadline(VT_MS(20));
    t->accept_err = vt_io_accept(t->lsock, &c, NULL, NULL, t->accept_deadline);
    t->accept_returned = vt_fiber_now();
    t->wait_deadline = vt_fiber_deadline(VT_MS(20));
    t->wait_err = vt_io_wait(t->p[0], VT_IO_READ, NULL, t->wait_deadline);
    t->wait_returned = vt_fiber_now();
    return NULL;
}

static void check_timeouts(timeouts *t)
{
    VT_CHECK_ERR(t->now_err, VT_ETIMEDOUT);
    VT_CHECK_ERR(t->read_err, VT_ETIMEDOUT);
    VT_CHECK_GE(t->read_returned, t->read_deadline);
    VT_CHECK_ERR(t->accept_err, VT_ETIMEDOUT);
    VT_CHECK_GE(t->accept_returned, t->accept_deadline);
    VT_CHECK_ERR(t->wait_err, VT_ETIMEDOUT);
    VT_CHECK_GE(t->wait_returned, t->wait_deadline);
}

VT_TEST(deadlines_read_accept_wait)
{
    timeouts t;
    memset(&t, 0, sizeof t);
    struct sockaddr_in a;
    VT_CHECK_EQ(pipe_of(t.p, 1), 0);
    t.lsock = listener(4, &a);
    VT_CHECK_GE(t.lsock, 0);
    /* From a fiber. */
    VT_CHECK_OK(vt_runtime_main(NULL, timeouts_body, &t, NULL));
    check_timeouts(&t);
    /* From a plain thread (the same calls, on the thread's clock). */
    memset(&t.read_deadline, 0, sizeof t - offsetof(timeouts, read_deadline));
    timeouts_body(&t);
    check_timeouts(&t);
    VT_CHECK_OK(vt_io_close(t.p[0]));
    VT_CHECK_OK(vt_io_close(t.p[1]));
    VT_CHECK_OK(vt_io_close(t.lsock));
}

/* A connection that cannot complete: the listener's accept queue is full,
 * so the kernel drops the SYNs of newcomers and their connects stay in
 * progress. */
typedef struct conn_to {
    struct sockaddr_in addr;
    int socks[16];
    int nsocks;
    int timed_out;
    int64_t deadline, returned;
    vt_err other;
} conn_to;

static void *connect_timeout_body(void *arg)
{
    conn_to *c = arg;
    for (c->nsocks = 0; c->nsocks < 16 && !c->timed_out; c->nsocks++) {
        int s = tcp_socket();
        c->socks[c->nsocks] = s;
        if (s < 0) {
            c->other = vt_err_from_errno(errno);
            return NULL;
        }
        c->deadline = vt_fiber_deadline(VT_MS(30));
        vt_err e = vt_io_connect(s, (struct sockaddr *)&c->addr, sizeof c->addr, c->deadline);
        c->returned = vt_fiber_now();
        if (e == VT_ETIMEDOUT)
            c->timed_out = 1;
        else if (e != VT_OK)
            c->other = e;
        if (e != VT_OK && e != VT_ETIMEDOUT)
            return NULL;
    }
    return NULL;
}

static void connect_timeout(int in_fiber)
{
    conn_to c;
    memset(&c, 0, sizeof c);
    int l = listener(0, &c.addr);
    VT_CHECK_GE(l, 0);
    if (in_fiber)
        VT_CHECK_OK(vt_runtime_main(NULL, connect_timeout_body, &c, NULL));
    else
        connect_timeout_body(&c);
    for (int i = 0; i < c.nsocks; i++)
        if (c.socks[i] >= 0)
            VT_CHECK_OK(vt_io_close(c.socks[i]));
    VT_CHECK_OK(vt_io_close(l));
    VT_CHECK_OK(c.other);
    if (!c.timed_out)
        VT_SKIP("the kernel completed 16 connections to a listener that accepts none");
    VT_CHECK_GE(c.returned, c.deadline);
}

VT_TEST(deadline_connect_fiber)
{
    connect_timeout(1);
}

VT_TEST(deadline_connect_thread)
{
    connect_timeout(0);
}

/* ---- Connections refused, peers gone ------------------------------------------------- */

static void *refused_body(void *arg)
{
    struct sockaddr_in *a = arg;
    int s = tcp_socket();
    vt_err e = vt_io_connect(s, (struct sockaddr *)a, sizeof *a, vt_fiber_deadline(VT_SEC(10)));
    vt_io_close(s);
    return ERR_PTR(e);
}

VT_TEST(connect_refused)
{
    struct sockaddr_in a;
    int l = listener(1, &a);
    VT_CHECK_GE(l, 0);
    VT_CHECK_OK(vt_io_close(l)); /* nobody listens on that port now */
    void *r = NULL;
    VT_CHECK_OK(vt_runtime_main(NULL, refused_body, &a, &r));
    VT_CHECK_ERR((vt_err)(intptr_t)r, vt_err_from_errno(ECONNREFUSED));
    r = refused_body(&a);
    VT_CHECK_ERR((vt_err)(intptr_t)r, vt_err_from_errno(ECONNREFUSED));
}

static void *epipe_body(void *arg)
{
    int *sv = arg;
    static char big[1 << 16];
    vt_err e = VT_OK;
    /* The first writes may still be buffered; the peer's end is gone, so
     * one of them fails, without a SIGPIPE. */
    for (int i = 0; i < 64 && e == VT_OK; i++)
        e = vt_io_write(sv[0], big, sizeof big, NULL, vt_fiber_deadline(VT_SEC(10)));
    return ERR_PTR(e);
}

VT_TEST(write_to_closed_socket_is_epipe)
{
    int sv[2];
    VT_CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    VT_CHECK_EQ(close(sv[1]), 0);
    void *r = NULL;
    VT_CHECK_OK(vt_runtime_main(NULL, epipe_body, sv, &r));
    VT_CHECK_ERR((vt_err)(intptr_t)r, vt_err_from_errno(EPIPE));
    r = epipe_body(sv);
    VT_CHECK_ERR((vt_err)(intptr_t)r, vt_err_from_errno(EPIPE));
    VT_CHECK_OK(vt_io_close(sv[0]));
}

/* ---- Large writes, end of file ------------------------------------------------------------ */

typedef struct bulk {
    int p[2];
    size_t n;
    unsigned char *out, *in;
    size_t put, got;
    vt_err w, r;
    int writer_closes;
} bulk;

static void *bulk_writer(void *arg)
{
    bulk *b = arg;
    b->w = vt_io_write(b->p[1], b->out, b->n, &b->put, VT_FOREVER);
    if (b->writer_closes)
        vt_io_close(b->p[1]);
    return NULL;
}

static void *bulk_reader(void *arg)
{
    bulk *b = arg;
    for (;;) {
        size_t got = 0;
        size_t room = b->n + 1 - b->got;
        b->r = vt_io_read(b->p[0], b->in + b->got, room, &got, VT_FOREVER);
        if (b->r != VT_OK || got == 0)
            break;
        b->got += got;
    }
    return NULL;
}

static void *bulk_root(void *arg)
{
    vt_fiber w, r;
    vt_err e = vt_fiber_spawn(&r, bulk_reader, arg);
    if (e != VT_OK)
        return ERR_PTR(e);
    if ((e = vt_fiber_spawn(&w, bulk_writer, arg)) != VT_OK) {
        vt_fiber_cancel(r);
        vt_fiber_await(r, NULL, VT_FOREVER);
        return ERR_PTR(e);
    }
    vt_fiber_await(w, NULL, VT_FOREVER);
    vt_fiber_await(r, NULL, VT_FOREVER);
    return ERR_PTR(VT_OK);
}

static void *bulk_thread_writer(void *arg)
{
    bulk_writer(arg);
    return NULL;
}

static void bulk_check(bulk *b)
{
    VT_CHECK_OK(b->w);
    VT_CHECK_OK(b->r);
    VT_CHECK_EQ(b->put, b->n);
    VT_CHECK_EQ(b->got, b->n);
    VT_CHECK(memcmp(b->in, b->out, b->n) == 0);
}

static void bulk_run(unsigned workers, int thread_writer)
{
    bulk b;
    memset(&b, 0, sizeof b);
    b.n = ((size_t)4 << 20) * vt_test_stress(); /* 64 times a pipe's buffer */
    b.out = malloc(b.n);
    b.in = malloc(b.n + 1);
    VT_CHECK(b.out && b.in);
    fill(b.out, b.n, (uint32_t)vt_test_rand());
    VT_CHECK_EQ(pipe_of(b.p, 0), 0);
    b.writer_closes = 1;
    vt_runtime_opts o;
    vt_runtime_opts_init(&o);
    o.pool.workers = workers;
    if (thread_writer) {
        pthread_t t;
        VT_CHECK_EQ(pthread_create(&t, NULL, bulk_thread_writer, &b), 0);
        VT_CHECK_OK(vt_runtime_main(&o, bulk_reader, &b, NULL));
        pthread_join(t, NULL);
    } else {
        void *r = NULL;
        VT_CHECK_OK(vt_runtime_main(&o, bulk_root, &b, &r));
        VT_CHECK_OK((vt_err)(intptr_t)r);
    }
    bulk_check(&b);
    VT_CHECK_OK(vt_io_close(b.p[0]));
    free(b.out);
    free(b.in);
}

VT_TEST(large_write_1_worker)
{
    bulk_run(1, 0);
}

VT_TEST(large_write_2_workers)
{
    bulk_run(2, 0);
}

VT_TEST(large_write_from_thread_to_fiber)
{
    bulk_run(1, 1);
}

/* ---- Plain threads ----------------------------------------------------------------------- */

static void *thread_echo(void *arg)
{
    int *fds = arg; /* read fds[0], write back to fds[1] */
    char buf[4096];
    vt_err e;
    for (;;) {
        size_t got;
        if ((e = vt_io_read(fds[0], buf, sizeof buf, &got, VT_FOREVER)) != VT_OK || got == 0)
            break;
        if ((e = vt_io_write(fds[1], buf, got, NULL, VT_FOREVER)) != VT_OK)
            break;
    }
    return ERR_PTR(e);
}

VT_TEST(plain_threads)
{
    int a[2], b[2];
    VT_CHECK_EQ(pipe_of(a, 0), 0);
    VT_CHECK_EQ(pipe_of(b, 0), 0);
    unsigned ready = 0;
    VT_CHECK_ERR(vt_io_wait(a[0], VT_IO_READ, &ready, VT_NOW), VT_ETIMEDOUT);
    VT_CHECK_OK(vt_io_wait(a[1], VT_IO_WRITE | VT_IO_READ, &ready, VT_NOW));
    VT_CHECK_EQ(ready, VT_IO_WRITE);
    int fds[2] = {a[0], b[1]};
    pthread_t t;
    VT_CHECK_EQ(pthread_create(&t, NULL, thread_echo, fds), 0);
    unsigned char out[3000], in[3000];
    for (unsigned i = 0; i < 100; i++) {
        size_t n = 1 + (size_t)(vt_test_rand() % sizeof out);
        fill(out, n, i);
        VT_CHECK_OK(vt_io_write(a[1], out, n, NULL, VT_FOREVER));
        VT_CHECK_OK(read_full(b[0], in, n, vt_deadline_after(VT_SEC(30))));
        VT_CHECK(memcmp(in, out, n) == 0);
    }
    VT_CHECK_OK(vt_io_close(a[1])); /* the echo thread reads the end */
    void *r;
    pthread_join(t, &r);
    VT_CHECK_OK((vt_err)(intptr_t)r);
    VT_CHECK(fcntl(a[0], F_GETFL) & O_NONBLOCK);
    VT_CHECK(fcntl(b[1], F_GETFL) & O_NONBLOCK);
    VT_CHECK_OK(vt_io_close(b[1]));
    size_t got = 9;
    VT_CHECK_OK(vt_io_read(b[0], in, sizeof in, &got, VT_FOREVER));
    VT_CHECK_EQ(got, 0); /* end of file */
    VT_CHECK_OK(vt_io_close(a[0]));
    VT_CHECK_OK(vt_io_close(b[0]));
}

typedef struct tcp_thread {
    int lsock;
    struct sockaddr_in addr;
    vt_err err;
} tcp_thread;

static void *thread_server(void *arg)
{
    tcp_thread *t = arg;
    struct sockaddr_in peer;
    unsigned len = sizeof peer;
    int c;
    vt_err e = vt_io_accept(t->lsock, &c, (struct sockaddr *)&peer, &len, vt_deadline_after(VT_SEC(30)));
    if (e == VT_OK) {
        if (len != sizeof peer || peer.sin_addr.s_addr != htonl(INADDR_LOOPBACK))
            e = VT_ERANGE;
        else if (!(fcntl(c, F_GETFL) & O_NONBLOCK) || !(fcntl(c, F_GETFD) & FD_CLOEXEC))
            e = VT_ESTATE;
        int fds[2] = {c, c};
        if (e == VT_OK)
            e = (vt_err)(intptr_t)thread_echo(fds);
        vt_io_close(c);
    }
    t->err = e;
    return NULL;
}

VT_TEST(plain_threads_tcp)
{
    tcp_thread t;
    memset(&t, 0, sizeof t);
    t.lsock = listener(4, &t.addr);
    VT_CHECK_GE(t.lsock, 0);
    pthread_t th;
    VT_CHECK_EQ(pthread_create(&th, NULL, thread_server, &t), 0);
    int s = tcp_socket();
    VT_CHECK_OK(vt_io_connect(s, (struct sockaddr *)&t.addr, sizeof t.addr, vt_deadline_after(VT_SEC(30))));
    char msg[] = "over loopback";
    char back[sizeof msg];
    VT_CHECK_OK(vt_io_write(s, msg, sizeof msg, NULL, VT_FOREVER));
    VT_CHECK_OK(read_full(s, back, sizeof back, vt_deadline_after(VT_SEC(30))));
    VT_CHECK(memcmp(msg, back, sizeof msg) == 0);
    VT_CHECK_OK(vt_io_close(s));
    pthread_join(th, NULL);
    VT_CHECK_OK(t.err);
    VT_CHECK_OK(vt_io_close(t.lsock));
}

/* ---- Readiness, edges and descriptors reused ----------------------------------------- */

typedef struct level {
    int p[2];
    vt_err first, wait_now, wait_now_after, rest, regular;
    unsigned ready, ready_regular;
    size_t got1, got2;
} level;

static void *level_body(void *arg)
{
    level *l = arg;
    char buf[16];
    if (write(l->p[1], "0123456789", 10) != 10)
        return NULL;
    /* The netpoller sees edges: after a partial read the descriptor is
     * still readable though no new edge comes, and vt_io_wait must say so. */
    l->first = vt_io_read(l->p[0], buf, 4, &l->got1, VT_FOREVER);
    l->wait_now = vt_io_wait(l->p[0], VT_IO_READ, &l->ready, VT_NOW);
    l->rest = vt_io_read(l->p[0], buf, sizeof buf, &l->got2, VT_FOREVER);
    l->wait_now_after = vt_io_wait(l->p[0], VT_IO_READ, NULL, VT_NOW);
    /* A regular file cannot be polled: it is always ready. */
    FILE *f = tmpfile();
    int fd = f ? dup(fileno(f)) : -1;
    if (fd >= 0) {
        l->regular = vt_io_wait(fd, VT_IO_READ | VT_IO_WRITE, &l->ready_regular, VT_FOREVER);
        vt_io_close(fd);
    }
    if (f)
        fclose(f);
    return NULL;
}

VT_TEST(wait_sees_present_readiness)
{
    level l;
    memset(&l, 0, sizeof l);
    l.regular = VT_EBUSY;
    VT_CHECK_EQ(pipe_of(l.p, 1), 0);
    VT_CHECK_OK(vt_runtime_main(NULL, level_body, &l, NULL));
    VT_CHECK_OK(l.first);
    VT_CHECK_EQ(l.got1, 4);
    VT_CHECK_OK(l.wait_now);
    VT_CHECK_EQ(l.ready, VT_IO_READ);
    VT_CHECK_OK(l.rest);
    VT_CHECK_EQ(l.got2, 6);
    VT_CHECK_ERR(l.wait_now_after, VT_ETIMEDOUT);
    VT_CHECK_OK(l.regular);
    VT_CHECK_EQ(l.ready_regular, VT_IO_READ | VT_IO_WRITE);
    VT_CHECK_OK(vt_io_close(l.p[0]));
    VT_CHECK_OK(vt_io_close(l.p[1]));
}

/* A descriptor number closed with vt_io_close and handed out again by the
 * kernel is registered anew: a reader of the new pipe is woken. */
typedef struct reuse {
    int rounds;
    int reused; /* rounds whose pipe got the previous numbers */
    vt_err err;
} reuse;

typedef struct reuse_round {
    int p[2];
    char got[4];
    size_t n;
    vt_err r;
} reuse_round;

static void *reuse_reader(void *arg)
{
    reuse_round *x = arg;
    x->r = vt_io_read(x->p[0], x->got, sizeof x->got, &x->n, VT_FOREVER);
    return NULL;
}

static void *reuse_body(void *arg)
{
    reuse *u = arg;
    int prev = -1;
    for (int i = 0; i < u->rounds; i++) {
        reuse_round x;
        memset(&x, 0, sizeof x);
        if (pipe_of(x.p, 1) != 0) {
            u->err = vt_err_from_errno(errno);
            return NULL;
        }
        if (x.p[0] == prev)
            u->reused++;
        prev = x.p[0];
        vt_fiber r;
        vt_err e = vt_fiber_spawn(&r, reuse_reader, &x);
        if (e == VT_OK) {
            vt_fiber_yield(); /* let it wait (on two workers it may not have yet: fine) */
            e = vt_io_write(x.p[1], "abc", 3, NULL, VT_FOREVER);
            vt_fiber_await(r, NULL, VT_FOREVER);
            if (e == VT_OK && (x.r != VT_OK || x.n != 3))
                e = x.r != VT_OK ? x.r : VT_ERANGE;
        }
        vt_io_close(x.p[0]);
        vt_io_close(x.p[1]);
        if (e != VT_OK) {
            u->err = e;
            return NULL;
        }
    }
    return NULL;
}

VT_TEST(descriptor_numbers_reused)
{
    reuse u = {.rounds = 200};
    vt_runtime_opts o;
    vt_runtime_opts_init(&o);
    o.pool.workers = 1;
    VT_CHECK_OK(vt_runtime_main(&o, reuse_body, &u, NULL));
    VT_CHECK_OK(u.err);
    VT_CHECK_GT(u.reused, 0);
}

/* Waiting for both directions at once; writable at once, readable later. */
static void *both_body(void *arg)
{
    int *sv = arg;
    unsigned ready = 0;
    vt_err e = vt_io_wait(sv[0], VT_IO_READ | VT_IO_WRITE, &ready, VT_FOREVER);
    if (e != VT_OK)
        return ERR_PTR(e);
    if (ready != VT_IO_WRITE)
        return ERR_PTR(VT_ERANGE);
    if (vt_io_write(sv[1], "x", 1, NULL, VT_FOREVER) != VT_OK)
        return ERR_PTR(VT_ESTATE);
    e = vt_io_wait(sv[0], VT_IO_READ, &ready, VT_FOREVER);
    if (e == VT_OK && ready != VT_IO_READ)
        e = VT_ERANGE;
    return ERR_PTR(e);
}

VT_TEST(wait_both_directions)
{
    int sv[2];
    VT_CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    void *r = NULL;
    VT_CHECK_OK(vt_runtime_main(NULL, both_body, sv, &r));
    VT_CHECK_OK((vt_err)(intptr_t)r);
    VT_CHECK_OK(vt_io_close(sv[0]));
    VT_CHECK_OK(vt_io_close(sv[1]));
}

/* Descriptor numbers beyond the netpoller's first table (4096 entries)
 * grow it; entries already handed out stay where they are. */
typedef struct high {
    int low[2], high_r, high_w;
    vt_err low_err, high_err;
    size_t low_got, high_got;
} high;

static void *high_writer(void *arg)
{
    high *h = arg;
    vt_fiber_yield();
    vt_io_write(h->low[1], "lo", 2, NULL, VT_FOREVER);
    vt_io_write(h->high_w, "high", 4, NULL, VT_FOREVER);
    return NULL;
}

static void *high_body(void *arg)
{
    high *h = arg;
    char buf[8];
    vt_fiber w;
    if (vt_fiber_spawn(&w, high_writer, h) != VT_OK)
        return NULL;
    h->low_err = vt_io_read(h->low[0], buf, sizeof buf, &h->low_got, VT_FOREVER);
    h->high_err = vt_io_read(h->high_r, buf, sizeof buf, &h->high_got, VT_FOREVER);
    vt_fiber_await(w, NULL, VT_FOREVER);
    return NULL;
}

VT_TEST(high_descriptor_numbers)
{
    struct rlimit rl;
    VT_CHECK_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < 9002)
        VT_SKIP("RLIMIT_NOFILE is below 9002: no descriptor numbers that high");
    high h;
    memset(&h, 0, sizeof h);
    int p[2];
    VT_CHECK_EQ(pipe_of(h.low, 1), 0);
    VT_CHECK_EQ(pipe_of(p, 1), 0);
    h.high_r = dup2(p[0], 9000);
    h.high_w = dup2(p[1], 9001);
    VT_CHECK_EQ(h.high_r, 9000);
    VT_CHECK_EQ(h.high_w, 9001);
    close(p[0]);
    close(p[1]);
    vt_runtime_opts o;
    vt_runtime_opts_init(&o);
    o.pool.workers = 1;
    VT_CHECK_OK(vt_runtime_main(&o, high_body, &h, NULL));
    VT_CHECK_OK(h.low_err);
    VT_CHECK_EQ(h.low_got, 2);
    VT_CHECK_OK(h.high_err);
    VT_CHECK_EQ(h.high_got, 4);
    VT_CHECK_OK(vt_io_close(h.low[0]));
    VT_CHECK_OK(vt_io_close(h.low[1]));
    VT_CHECK_OK(vt_io_close(h.high_r));
    VT_CHECK_OK(vt_io_close(h.high_w));
}

/* Allocation failures while the netpoller starts and registers a
 * descriptor: each wait either works (here: times out) or says
 * VT_ENOMEM, and nothing leaks. */
typedef struct oom {
    long k;
    vt_err err;
} oom;

static void *oom_body(void *arg)
{
    oom *o = arg;
    int p[2];
    if (pipe_of(p, 1) != 0) {
        o->err = vt_err_from_errno(errno);
        return NULL;
    }
    int64_t deadline = vt_fiber_deadline(VT_MS(1));
    vt_test_alloc_fail_at(o->k);
    char c;
    size_t got;
    o->err = vt_io_read(p[0], &c, 1, &got, deadline);
    vt_test_alloc_fail_at(0);
    vt_io_close(p[0]);
    vt_io_close(p[1]);
    return NULL;
}

VT_TEST(allocation_failures)
{
    long live = vt_test_alloc_live();
    int passed = 0;
    for (long k = 1; k < 400 && passed < 3; k++) {
        vt_runtime *rt = rt_new(1);
        VT_CHECK_NOT_NULL(rt);
        oom x = {k, VT_EINVAL};
        vt_fiber f;
        VT_CHECK_OK(spawn_on(rt, &f, oom_body, &x));
        VT_CHECK_OK(vt_fiber_await(f, NULL, VT_FOREVER));
        vt_runtime_free(rt);
        vt_test_alloc_reset();
        if (x.err == VT_ETIMEDOUT) {
            passed++;
            continue;
        }
        passed = 0;
        VT_CHECK_ERR(x.err, VT_ENOMEM);
        VT_CHECK_EQ(vt_test_alloc_live(), live);
    }
    VT_CHECK_EQ(passed, 3);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}
