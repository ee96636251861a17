/* Stress for IO readiness and blocking offload: full-duplex streams with a
 * reader and a writer fiber on each socket, deadlines racing readiness,
 * vt_io_close racing blocked readers, and a crowd of blocking calls behind
 * a few threads. VT_TEST_STRESS=N multiplies the work. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pipe2 */
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "vt_test.h"
#include "vitte/async.h"

#define ERR_PTR(e) ((void *)(intptr_t)(e))

static _Atomic int first_err;

static void note(vt_err e)
{
    int zero = 0;
    if (e != VT_OK)
        atomic_compare_exchange_strong(&first_err, &zero, (int)e);
}

static uint64_t mix(uint64_t *s)
{
    return vt_hash_mix64((*s)++);
}

static unsigned char byte_at(uint64_t stream, uint64_t i)
{
    return (unsigned char)(vt_hash_mix64(stream * 0x100000001b3ull + (i >> 3)) >> ((i & 7) * 8));
}

/* ---- Full-duplex streams ------------------------------------------------------------- */

typedef struct duplex {
    int lsock;
    struct sockaddr_in addr;
    unsigned conns;
    uint64_t bytes; /* per connection, each way */
    uint64_t seed;
    _Atomic uint64_t verified;
} duplex;

typedef struct side {
    duplex *d;
    int fd;
    uint64_t stream;
    uint64_t seed;
} side;

/* Writes the connection's stream in chunks of random size. */
static void *stream_writer(void *arg)
{
    side *s = arg;
    unsigned char buf[1 << 15];
    uint64_t rng = s->seed, off = 0;
    while (off < s->d->bytes) {
        size_t n = 1 + (size_t)(mix(&rng) % sizeof buf);
        if (n > s->d->bytes - off)
            n = (size_t)(s->d->bytes - off);
        for (size_t i = 0; i < n; i++)
            buf[i] = byte_at(s->stream, off + i);
        size_t put = 0;
        vt_err e = vt_io_write(s->fd, buf, n, &put, VT_FOREVER);
        if (e != VT_OK) {
            note(e);
            return NULL;
        }
        off += put;
    }
    shutdown(s->fd, SHUT_WR);
    return NULL;
}

/* Reads the peer's echo of the stream and checks every byte. */
static void *stream_reader(void *arg)
{
    side *s = arg;
    unsigned char buf[1 << 14];
    uint64_t rng = s->seed ^ 0x5555, off = 0;
    for (;;) {
        size_t want = 1 + (size_t)(mix(&rng) % sizeof buf), got = 0;
        vt_err e = vt_io_read(s->fd, buf, want, &got, VT_FOREVER);
        if (e != VT_OK) {
            note(e);
            return NULL;
        }
        if (got == 0)
            break;
        for (size_t i = 0; i < got; i++)
            if (buf[i] != byte_at(s->stream, off + i)) {
                note(VT_ERANGE);
                return NULL;
            }
        off += got;
    }
    if (off != s->d->bytes)
        note(VT_ERANGE);
    atomic_fetch_add(&s->d->verified, off);
    return NULL;
}

static void *echo_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    unsigned char buf[1 << 15];
    vt_err e;
    for (;;) {
        size_t got = 0;
        if ((e = vt_io_read(fd, buf, sizeof buf, &got, VT_FOREVER)) != VT_OK || got == 0)
            break;
        if ((e = vt_io_write(fd, buf, got, NULL, VT_FOREVER)) != VT_OK)
            break;
    }
    note(e);
    shutdown(fd, SHUT_WR);
    /* Wait for the peer to close before closing, so that no reset loses
     * bytes still in flight. */
    size_t got;
    while (vt_io_read(fd, buf, sizeof buf, &got, VT_FOREVER) == VT_OK && got > 0) {
    }
    vt_io_close(fd);
    return NULL;
}

static void *duplex_server(void *arg)
{
    duplex *d = arg;
    for (unsigned i = 0; i < d->conns; i++) {
        int fd;
        vt_err e = vt_io_accept(d->lsock, &fd, NULL, NULL, VT_FOREVER);
        if (e != VT_OK) {
            note(e);
            return NULL;
        }
        vt_fiber_opts o;
        memset(&o, 0, sizeof o);
        o.detached = 1;
        if ((e = vt_fiber_spawn_ex(NULL, echo_conn, (void *)(intptr_t)fd, &o)) != VT_OK) {
            note(e);
            vt_io_close(fd);
        }
    }
    return NULL;
}

static void *duplex_client(void *arg)
{
    side *s = arg;
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        note(vt_err_from_errno(errno));
        return NULL;
    }
    vt_err e = vt_io_connect(s->fd, (struct sockaddr *)&s->d->addr, sizeof s->d->addr, VT_FOREVER);
    vt_fiber r, w;
    if (e == VT_OK && (e = vt_fiber_spawn(&r, stream_reader, s)) == VT_OK) {
        if ((e = vt_fiber_spawn(&w, stream_writer, s)) == VT_OK)
            vt_fiber_await(w, NULL, VT_FOREVER);
        else
            vt_fiber_cancel(r);
        vt_fiber_await(r, NULL, VT_FOREVER);
    }
    note(e);
    vt_io_close(s->fd);
    return NULL;
}

static void *duplex_root(void *arg)
{
    duplex *d = arg;
    vt_fiber srv;
    vt_err e = vt_fiber_spawn(&srv, duplex_server, d);
    if (e != VT_OK) {
        note(e);
        return NULL;
    }
    side *sides = calloc(d->conns, sizeof *sides);
    vt_fiber *cl = calloc(d->conns, sizeof *cl);
    unsigned n = 0;
    if (sides && cl) {
        for (; n < d->conns; n++) {
            sides[n].d = d;
            sides[n].stream = n + 1;
            sides[n].seed = d->seed + n * 7919;
            if ((e = vt_fiber_spawn(&cl[n], duplex_client, &sides[n])) != VT_OK) {
                note(e);
                break;
            }
        }
    } else {
        note(VT_ENOMEM);
    }
    for (unsigned i = 0; i < n; i++)
        vt_fiber_await(cl[i], NULL, VT_FOREVER);
    if (n < d->conns)
        vt_fiber_cancel(srv);
    vt_fiber_await(srv, NULL, VT_FOREVER);
    free(sides);
    free(cl);
    return NULL;
}

VT_TEST(full_duplex_streams)
{
    atomic_store(&first_err, 0);
    duplex d;
    memset(&d, 0, sizeof d);
    d.conns = 64 * vt_test_stress();
    d.bytes = (uint64_t)2 << 20;
    d.seed = vt_test_rand();
    d.lsock = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    VT_CHECK_GE(d.lsock, 0);
    d.addr.sin_family = AF_INET;
    d.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof d.addr;
    VT_CHECK_EQ(bind(d.lsock, (struct sockaddr *)&d.addr, sizeof d.addr), 0);
    VT_CHECK_EQ(listen(d.lsock, 1024), 0);
    VT_CHECK_EQ(getsockname(d.lsock, (struct sockaddr *)&d.addr, &len), 0);
    vt_runtime_opts o;
    vt_runtime_opts_init(&o);
    o.pool.workers = 2;
    VT_CHECK_OK(vt_runtime_main(&o, duplex_root, &d, NULL));
    VT_CHECK_OK((vt_err)atomic_load(&first_err));
    VT_CHECK_EQ(atomic_load(&d.verified), d.conns * d.bytes);
    VT_CHECK_OK(vt_io_close(d.lsock));
}

/* ---- Deadlines racing readiness -------------------------------------------------------- */

typedef struct trickle {
    int p[2];
    unsigned bytes;
    uint64_t seed;
    unsigned got, timeouts;
} trickle;

static void *trickle_writer(void *arg)
{
    trickle *t = arg;
    uint64_t rng = t->seed;
    for (unsigned i = 0; i < t->bytes; i++) {
        int64_t d = (int64_t)(mix(&rng) % 150000);
        if (d > 100000)
            vt_fiber_yield();
        else
            vt_sleep_ns(d);
        unsigned char b = (unsigned char)i;
        vt_err e = vt_io_write(t->p[1], &b, 1, NULL, VT_FOREVER);
        if (e != VT_OK) {
            note(e);
            break;
        }
    }
    vt_io_close(t->p[1]);
    return NULL;
}

static void *trickle_reader(void *arg)
{
    trickle *t = arg;
    uint64_t rng = ~t->seed;
    for (;;) {
        unsigned char buf[8];
        size_t got = 0;
        int64_t d = (int64_t)(mix(&rng) % 150000);
        vt_err e = vt_io_read(t->p[0], buf, sizeof buf, &got, vt_fiber_deadline(d));
        if (e == VT_ETIMEDOUT) {
            t->timeouts++;
            continue;
        }
        if (e != VT_OK) {
            note(e);
            break;
        }
        if (got == 0)
            break;
        for (size_t i = 0; i < got; i++)
            if (buf[i] != (unsigned char)(t->got + i))
                note(VT_ERANGE);
        t->got += (unsigned)got;
    }
    vt_io_close(t->p[0]);
    return NULL;
}

static void *trickle_root(void *arg)
{
    trickle *ts = arg;
    unsigned n = 16;
    vt_fiber f[32];
    unsigned k = 0;
    for (unsigned i = 0; i < n; i++) {
        if (vt_fiber_spawn(&f[k], trickle_reader, &ts[i]) == VT_OK)
            k++;
        if (vt_fiber_spawn(&f[k], trickle_writer, &ts[i]) == VT_OK)
            k++;
    }
    for (unsigned i = 0; i < k; i++)
        vt_fiber_await(f[i], NULL, VT_FOREVER);
    return k == 2 * n ? NULL : ERR_PTR(VT_ENOMEM);
}

VT_TEST(deadlines_race_readiness)
{
    atomic_store(&first_err, 0);
    trickle ts[16];
    memset(ts, 0, sizeof ts);
    for (int i = 0; i < 16; i++) {
        VT_CHECK_EQ(pipe2(ts[i].p, O_CLOEXEC | O_NONBLOCK), 0);
        ts[i].bytes = 1000 * vt_test_stress();
        ts[i].seed = vt_test_rand();
    }
    vt_runtime_opts o;
    vt_runtime_opts_init(&o);
    o.pool.workers = 2;
    void *r = NULL;
    VT_CHECK_OK(vt_runtime_main(&o, trickle_root, ts, &r));
    VT_CHECK_OK((vt_err)(intptr_t)r);
    VT_CHECK_OK((vt_err)atomic_load(&first_err));
    unsigned timeouts = 0;
    for (int i = 0; i < 16; i++) {
        VT_CHECK_EQ(ts[i].got, ts[i].bytes);
        timeouts += ts[i].timeouts;
    }
    /* Not a check: how often the race went each way. */
    printf("    %u reads timed out\n", timeouts);
}

/* ---- vt_io_close racing blocked readers ------------------------------------------------- */

typedef struct victim {
    int p[2];
    vt_err r;
    vt_fiber f;
    _Atomic int done;
} victim;

static void *victim_read(void *arg)
{
    victim *v = arg;
    char c;
    size_t got;
    v->r = vt_io_read(v->p[0], &c, 1, &got, VT_FOREVER);
    atomic_store(&v->done, 1);
    return NULL;
}

#if defined(VT_SANITIZE_THREAD)
/* Fibers of rt waiting in vt_io_read, as vt_runtime_dump shows them. */
static unsigned waiting_readers(vt_runtime *rt)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return 0;
    vt_runtime_dump(rt, f);
    fclose(f);
    unsigned n = 0;
    for (const char *p = buf; (p = strstr(p, "on io read")) != NULL; p++)
        n++;
    free(buf);
    return n;
}
#endif

static void *warm_up(void *arg)
{
    victim *v = arg;
    v->r = vt_io_wait(v->p[0], VT_IO_READ, NULL, vt_fiber_deadline(VT_US(10)));
    return NULL;
}

typedef struct closer {
    victim *v;
    unsigned n;
    uint64_t seed;
} closer;

static void *close_thread(void *arg)
{
    closer *c = arg;
    uint64_t rng = c->seed;
    /* Close in a random order, some right away, some a little later. */
    unsigned *order = malloc(c->n * sizeof *order);
    if (!order)
        return NULL;
    for (unsigned i = 0; i < c->n; i++)
        order[i] = i;
    for (unsigned i = c->n; i > 1; i--) {
        unsigned j = (unsigned)(mix(&rng) % i);
        unsigned x = order[i - 1];
        order[i - 1] = order[j];
        order[j] = x;
    }
    for (unsigned i = 0; i < c->n; i++) {
        if (mix(&rng) % 4 == 0) {
            struct timespec ts = {0, (long)(mix(&rng) % 50000)};
            nanosleep(&ts, NULL);
        }
        note(vt_io_close(c->v[order[i]].p[0]));
    }
    free(order);
    return NULL;
}

VT_TEST(close_races_blocked_readers)
{
    atomic_store(&first_err, 0);
    unsigned n = 64;
    victim *v = calloc(n, sizeof *v);
    VT_CHECK_NOT_NULL(v);
    vt_runtime *rt = NULL;
    vt_runtime_opts o;
    vt_runtime_opts_init(&o);
    o.pool.workers = 2;
    VT_CHECK_OK(vt_runtime_new(&rt, &o));
    /* The netpoller's own descriptors are made before the race, so that
     * none takes the number of a pipe closed under a reader. */
    VT_CHECK_EQ(pipe2(v[0].p, O_CLOEXEC | O_NONBLOCK), 0);
    vt_fiber_opts wo;
    memset(&wo, 0, sizeof wo);
    wo.runtime = rt;
    VT_CHECK_OK(vt_fiber_spawn_ex(&v[0].f, warm_up, &v[0], &wo));
    VT_CHECK_OK(vt_fiber_await(v[0].f, NULL, VT_FOREVER));
    VT_CHECK_ERR(v[0].r, VT_ETIMEDOUT);
    VT_CHECK_OK(vt_io_close(v[0].p[0]));
    VT_CHECK_OK(vt_io_close(v[0].p[1]));
    unsigned rounds = 100 * vt_test_stress();
    unsigned closed = 0, early = 0;
    for (unsigned round = 0; round < rounds; round++) {
        for (unsigned i = 0; i < n; i++) {
            VT_CHECK_EQ(pipe2(v[i].p, O_CLOEXEC | O_NONBLOCK), 0);
            v[i].r = VT_EINVAL;
            atomic_store(&v[i].done, 0);
        }
        vt_fiber_opts fo;
        memset(&fo, 0, sizeof fo);
        fo.runtime = rt;
        for (unsigned i = 0; i < n; i++)
            VT_CHECK_OK(vt_fiber_spawn_ex(&v[i].f, victim_read, &v[i], &fo));
        closer c = {v, n, vt_test_rand()};
        /* Some readers are cancelled instead, racing the closer. */
        unsigned ncancel = 0;
        for (unsigned i = 0; i < n; i += 7, ncancel++)
            vt_fiber_cancel(v[i].f);
#if defined(VT_SANITIZE_THREAD)
        /* A read(2) that starts while another thread closes the descriptor
         * is a race of the program's own, which ThreadSanitizer reports
         * (rightly: the number could be reused in between). Under it the
         * closer starts once every reader left waits, so each close is
         * ordered after the read it interrupts; the early closes are
         * tested by the other builds. */
        for (;;) {
            unsigned finished = 0;
            for (unsigned i = 0; i < n; i += 7)
                finished += (unsigned)atomic_load(&v[i].done);
            if (finished == ncancel && waiting_readers(rt) == n - ncancel)
                break;
            struct timespec ts = {0, 100000};
            nanosleep(&ts, NULL);
        }
#endif
        (void)ncancel;
        pthread_t t;
        VT_CHECK_EQ(pthread_create(&t, NULL, close_thread, &c), 0);
        for (unsigned i = 0; i < n; i++)
            VT_CHECK_OK(vt_fiber_await(v[i].f, NULL, VT_FOREVER));
        pthread_join(t, NULL);
        for (unsigned i = 0; i < n; i++) {
            vt_err r = v[i].r;
            /* Closed while waiting, closed before the read began, or
             * cancelled: nothing else. */
            if (r == VT_ECLOSED)
                closed++;
            else if (r == vt_err_from_errno(EBADF))
                early++;
            else
                VT_CHECK_ERR(r, VT_ECANCELED);
            VT_CHECK_OK(vt_io_close(v[i].p[1]));
        }
    }
    vt_runtime_free(rt);
    free(v);
    VT_CHECK_OK((vt_err)atomic_load(&first_err));
    printf("    %u woken by close, %u closed before reading\n", closed, early);
}

/* ---- Blocking calls behind few threads ---------------------------------------------------- */

typedef struct job {
    uint64_t in, out;
    unsigned sleep_us;
} job;

static void *job_run(void *arg)
{
    job *j = arg;
    if (j->sleep_us) {
        struct timespec ts = {0, (long)j->sleep_us * 1000};
        nanosleep(&ts, NULL);
    }
    j->out = vt_hash_mix64(j->in);
    return j;
}

typedef struct crowd {
    unsigned fibers, calls;
    uint64_t seed;
    _Atomic uint64_t ok;
    _Atomic uint64_t yields;
} crowd;

static void *crowd_fiber(void *arg)
{
    crowd *c = arg;
    uint64_t rng = c->seed + (uint64_t)vt_fiber_self().id * 31;
    for (unsigned i = 0; i < c->calls; i++) {
        job j = {mix(&rng), 0, (unsigned)(mix(&rng) % 4 == 0 ? mix(&rng) % 300 : 0)};
        void *r = NULL;
        vt_err e = vt_blocking_run(job_run, &j, &r);
        if (e != VT_OK || r != &j || j.out != vt_hash_mix64(j.in))
            note(e != VT_OK ? e : VT_ERANGE);
        else
            atomic_fetch_add(&c->ok, 1);
        if (mix(&rng) % 3 == 0) {
            vt_fiber_yield();
            atomic_fetch_add(&c->yields, 1);
        }
    }
    return NULL;
}

static void *crowd_root(void *arg)
{
    crowd *c = arg;
    vt_fiber *f = calloc(c->fibers, sizeof *f);
    unsigned n = 0;
    if (f)
        for (; n < c->fibers; n++)
            if (vt_fiber_spawn(&f[n], crowd_fiber, c) != VT_OK)
                break;
    for (unsigned i = 0; i < n; i++)
        vt_fiber_await(f[i], NULL, VT_FOREVER);
    free(f);
    return n == c->fibers ? NULL : ERR_PTR(VT_ENOMEM);
}

VT_TEST(blocking_calls_behind_few_threads)
{
    atomic_store(&first_err, 0);
    crowd c;
    memset(&c, 0, sizeof c);
    c.fibers = 200;
    c.calls = 50 * vt_test_stress();
    c.seed = vt_test_rand();
    vt_runtime_opts o;
    vt_runtime_opts_init(&o);
    o.pool.workers = 2;
    o.blocking_threads = 5; /* tiers of 1 and 4 */
    void *r = NULL;
    VT_CHECK_OK(vt_runtime_main(&o, crowd_root, &c, &r));
    VT_CHECK_OK((vt_err)(intptr_t)r);
    VT_CHECK_OK((vt_err)atomic_load(&first_err));
    VT_CHECK_EQ(atomic_load(&c.ok), (uint64_t)c.fibers * c.calls);
}
