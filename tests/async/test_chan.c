/* test_chan.c — channels, one call at a time: arguments and limits, the
 * three kinds (rendezvous, bounded, unbounded) against a model FIFO, close
 * (drain, then the end; waiters woken), deadlines and try_ calls,
 * cancellation, allocation failure, references and vt_chan_free while a
 * fiber waits, elements of odd and large sizes, and small exact-delivery
 * runs between fibers and threads. The heavy loops are in stress_chan.c.
 *
 * A party "waits" when the test has seen it blocked: a fiber in
 * vt_runtime_dump's "waiting on chan recv <ch>", a thread asleep in the
 * kernel (/proc/self/task/<tid>/stat says S). The thread probe can be fooled
 * (a sanitizer's own lock), so tests that use it are right whether or not
 * the thread was asleep yet; tests whose correctness needs a waiting party
 * use fibers. No timing is checked beyond "a deadline never ends a wait
 * before it has passed". */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "vt_test.h"
#include "async_test.h"
#include "vitte/async.h"

/* TSan runs this code an order of magnitude slower: the loops that only
 * add repetitions do fewer there. */
#if defined(VT_SANITIZE_THREAD)
#define SAN_DIV 4
#else
#define SAN_DIV 1
#endif

/* Every kind: rendezvous, bounded of 1, of 3 (not a power of two), of 1024,
 * unbounded. */
static const size_t caps[] = {0, 1, 3, 1024, VT_CHAN_UNBOUNDED};
#define NCAPS (sizeof caps / sizeof caps[0])
static const unsigned flag_sets[] = {VT_CHAN_MPMC, VT_CHAN_SPSC, VT_CHAN_MPSC, VT_CHAN_SPMC};
#define NFLAGS (sizeof flag_sets / sizeof flag_sets[0])

static const char *cap_name(size_t cap)
{
    static char buf[4][32];
    static int next;
    if (cap == 0)
        return "rendezvous";
    if (cap == VT_CHAN_UNBOUNDED)
        return "unbounded";
    char *b = buf[next++ & 3];
    snprintf(b, sizeof buf[0], "bounded %zu", cap);
    return b;
}

/* The element of producer p's n-th send. */
static uint64_t elem_of(uint32_t p, uint32_t n)
{
    return ((uint64_t)p << 32) | n;
}

/* ---- One call in a party ----------------------------------------------------------------- */

enum {
    OP_SEND = 1,
    OP_RECV
};

typedef struct op {
    vt_chan *ch;
    int what;
    int64_t rel; /* the deadline: < 0 VT_FOREVER, 0 VT_NOW, > 0 that many ns from the start,
                    INT64_MIN one already past */
    int cancel_self, mask;
    uint64_t val; /* send: the element; receive: what arrived */
    int64_t deadline, end;
    _Atomic int started, done;
    _Atomic int tid;
} op;

static void op_init(op *o, vt_chan *ch, int what, int64_t rel, uint64_t val)
{
    memset(o, 0, sizeof(*o));
    o->ch = ch;
    o->what = what;
    o->rel = rel;
    o->val = val;
}

static void *op_body(void *arg)
{
    op *o = arg;
    atomic_store(&o->tid, (int)syscall(SYS_gettid));
    if (o->cancel_self) {
        vt_fiber_cancel(vt_fiber_self());
        if (o->mask)
            vt_cancel_mask(1);
    }
    if (o->rel == INT64_MIN)
        o->deadline = now_any() - VT_MS(1);
    else if (o->rel < 0)
        o->deadline = VT_FOREVER;
    else if (o->rel == 0)
        o->deadline = VT_NOW;
    else
        o->deadline = vt_fiber_in() ? vt_fiber_deadline(o->rel) : vt_deadline_after(o->rel);
    atomic_store(&o->started, 1);
    vt_err e = o->what == OP_SEND ? vt_chan_send(o->ch, &o->val, o->deadline)
                                  : vt_chan_recv(o->ch, &o->val, o->deadline);
    o->end = now_any();
    if (o->mask)
        vt_cancel_mask(0);
    atomic_store(&o->done, 1);
    return ERR_RET(e);
}

/* Waits until the n parties p[i], running o[i] on one channel, all wait in
 * their calls (see the top), or one of them has returned instead (the
 * test's checks then say what went wrong, rather than a hang). */
static void wait_blocked_n(vt_runtime *rt, const party *p, op *o, int n)
{
    for (;;) {
        unsigned fsend = 0, frecv = 0, started = 0, sleeping = 0, threads = 0;
        for (int i = 0; i < n; i++) {
            if (atomic_load(&o[i].done))
                return;
            started += atomic_load(&o[i].started) != 0;
            if (!p[i].thread)
                *(o[i].what == OP_SEND ? &fsend : &frecv) += 1;
            else if (threads++,
                     atomic_load(&o[i].started) && thread_sleeping(atomic_load(&o[i].tid)))
                sleeping++;
        }
        if (started == (unsigned)n && sleeping == threads &&
            fibers_waiting(rt, "chan send", o[0].ch) >= fsend &&
            fibers_waiting(rt, "chan recv", o[0].ch) >= frecv)
            return;
        nap();
    }
}

/* Waits until o's fiber has returned or n fibers wait in o's call. */
static void wait_fibers_or_done(vt_runtime *rt, op *o, unsigned n)
{
    const char *what = o->what == OP_SEND ? "chan send" : "chan recv";
    while (!atomic_load(&o->done) && fibers_waiting(rt, what, o->ch) < n)
        nap();
}

static void wait_blocked(vt_runtime *rt, const party *p, op *o)
{
    wait_blocked_n(rt, p, o, 1);
}

/* Makes a bounded channel hold cap elements 1000 + i (other kinds are
 * left alone); 0 if it does not, or takes one more (a broken channel then
 * fails the test here rather than hang it later). */
static int fill(vt_chan *ch, size_t cap)
{
    if (cap == 0 || cap == VT_CHAN_UNBOUNDED)
        return 1;
    for (size_t i = 0; i < cap; i++) {
        uint64_t v = 1000 + i;
        if (vt_chan_try_send(ch, &v) != VT_OK)
            return 0;
    }
    uint64_t v = 0;
    return vt_chan_try_send(ch, &v) == VT_EAGAIN;
}

/* ---- Arguments and limits ---------------------------------------------------------------- */

VT_TEST(new_rejects_bad_arguments)
{
    long live = vt_test_alloc_live();
    vt_chan *ch = NULL;
    for (size_t k = 0; k < NCAPS; k++) {
        VT_CHECK_ERR(vt_chan_new(NULL, 8, caps[k], 0), VT_EINVAL);
        VT_CHECK_ERR(vt_chan_new(&ch, 0, caps[k], 0), VT_EINVAL);
        VT_CHECK_ERR(vt_chan_new(&ch, VT_CHAN_ELEM_MAX + 1, caps[k], 0), VT_EINVAL);
        VT_CHECK_ERR(vt_chan_new(&ch, SIZE_MAX, caps[k], 0), VT_EINVAL);
        const unsigned bad_flags[] = {4, 8, 0x100, 1u << 31, VT_CHAN_SPSC | 4, ~0u};
        for (size_t f = 0; f < sizeof bad_flags / sizeof bad_flags[0]; f++)
            VT_CHECK_ERR(vt_chan_new(&ch, 8, caps[k], bad_flags[f]), VT_EINVAL);
    }
    /* Rings above 1 GiB of elements. */
    VT_CHECK_ERR(vt_chan_new(&ch, 1, ((size_t)1 << 30) + 1, 0), VT_ERANGE);
    VT_CHECK_ERR(vt_chan_new(&ch, 8, ((size_t)1 << 27) + 1, 0), VT_ERANGE);
    VT_CHECK_ERR(vt_chan_new(&ch, VT_CHAN_ELEM_MAX, ((size_t)1 << 30) / VT_CHAN_ELEM_MAX + 1, 0),
                 VT_ERANGE);
    VT_CHECK_ERR(vt_chan_new(&ch, 1, SIZE_MAX - 1, 0), VT_ERANGE);
    VT_CHECK_ERR(vt_chan_new(&ch, 4096, SIZE_MAX / 2, VT_CHAN_SPSC), VT_ERANGE);
    VT_CHECK_ERR(vt_chan_new(&ch, 3, SIZE_MAX / 3 + 1, 0), VT_ERANGE);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

VT_TEST(new_accepts_the_limits)
{
    long live = vt_test_alloc_live();
    for (size_t k = 0; k < NCAPS; k++)
        for (size_t f = 0; f < NFLAGS; f++) {
            const size_t sizes[] = {1, VT_CHAN_ELEM_MAX};
            for (size_t s = 0; s < 2; s++) {
                if (sizes[s] == VT_CHAN_ELEM_MAX && caps[k] == 1024)
                    continue; /* a 1 GiB ring: largest_bounded_ring */
                vt_chan *ch = NULL;
                VT_CHECK_OK(vt_chan_new(&ch, sizes[s], caps[k], flag_sets[f]));
                VT_CHECK_NOT_NULL(ch);
                VT_CHECK_EQ(vt_chan_cap(ch), caps[k]);
                VT_CHECK_EQ(vt_chan_elem_size(ch), sizes[s]);
                vt_chan_free(ch);
            }
        }
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

/* The header: a bounded ring holds 1 .. 2^30 / size elements. At the
 * largest element that is 1024 of them (1 GiB of address space, of which
 * the test touches a few pages). */
VT_TEST(largest_bounded_ring)
{
#if defined(VT_SANITIZE_THREAD)
    /* TSan resets the shadow of a freed block: seconds for 1 GiB. The
     * other builds cover it. */
    VT_SKIP("a 1 GiB ring is too slow to free under TSan");
#endif
    long live = vt_test_alloc_live();
    size_t cap = ((size_t)1 << 30) / VT_CHAN_ELEM_MAX;
    unsigned char *buf = malloc(VT_CHAN_ELEM_MAX);
    VT_CHECK_NOT_NULL(buf);
    /* The two layouts: cells with sequence numbers, and SPSC's bare ring
     * (under ASan, whose poisoning of 1 GiB takes a second, the first). */
    const unsigned layouts[] = {VT_CHAN_MPMC, VT_CHAN_SPSC};
#if defined(VT_SANITIZE_ADDRESS)
    const size_t nlayouts = 1;
#else
    const size_t nlayouts = 2;
#endif
    for (size_t f = 0; f < nlayouts; f++) {
        vt_chan *ch = NULL;
        vt_err e = vt_chan_new(&ch, VT_CHAN_ELEM_MAX, cap, layouts[f]);
        if (e != VT_OK) {
            free(buf);
            VT_CHECK_OK(e);
        }
        memset(buf, 0x5a, VT_CHAN_ELEM_MAX);
        buf[VT_CHAN_ELEM_MAX - 1] = 0x33;
        vt_err s = vt_chan_try_send(ch, buf);
        memset(buf, 0, VT_CHAN_ELEM_MAX);
        vt_err r = vt_chan_try_recv(ch, buf);
        int same = buf[0] == 0x5a && buf[VT_CHAN_ELEM_MAX / 2] == 0x5a &&
                   buf[VT_CHAN_ELEM_MAX - 1] == 0x33;
        size_t got_cap = vt_chan_cap(ch);
        vt_chan_free(ch);
        if (s || r || !same || got_cap != cap)
            free(buf);
        VT_CHECK_OK(s);
        VT_CHECK_OK(r);
        VT_CHECK(same);
        VT_CHECK_EQ(got_cap, cap);
    }
    free(buf);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

VT_TEST(null_arguments)
{
    uint64_t v = 1;
    VT_CHECK_ERR(vt_chan_send(NULL, &v, VT_FOREVER), VT_EINVAL);
    VT_CHECK_ERR(vt_chan_recv(NULL, &v, VT_FOREVER), VT_EINVAL);
    VT_CHECK_ERR(vt_chan_try_send(NULL, &v), VT_EINVAL);
    VT_CHECK_ERR(vt_chan_try_recv(NULL, &v), VT_EINVAL);
    VT_CHECK_ERR(vt_chan_close(NULL), VT_EINVAL);
    VT_CHECK_EQ(vt_chan_closed(NULL), 0);
    VT_CHECK_EQ(vt_chan_len(NULL), 0);
    VT_CHECK_EQ(vt_chan_cap(NULL), 0);
    VT_CHECK_EQ(vt_chan_elem_size(NULL), 0);
    VT_CHECK_NULL(vt_chan_retain(NULL));
    vt_chan_release(NULL);
    vt_chan_free(NULL);
    for (size_t k = 0; k < NCAPS; k++) {
        vt_chan *ch;
        VT_CHECK_OK(vt_chan_new(&ch, sizeof v, caps[k], 0));
        for (uint64_t i = 0; caps[k] != VT_CHAN_UNBOUNDED && i < caps[k] / 2; i++)
            VT_CHECK_OK(vt_chan_try_send(ch, &i));
        size_t len = vt_chan_len(ch);
        /* NULL elements are refused before anything is tried, even when
         * the call could complete or must wait. */
        VT_CHECK_ERR(vt_chan_send(ch, NULL, VT_FOREVER), VT_EINVAL);
        VT_CHECK_ERR(vt_chan_send(ch, NULL, VT_NOW), VT_EINVAL);
        VT_CHECK_ERR(vt_chan_try_send(ch, NULL), VT_EINVAL);
        VT_CHECK_ERR(vt_chan_recv(ch, NULL, VT_FOREVER), VT_EINVAL);
        VT_CHECK_ERR(vt_chan_recv(ch, NULL, VT_NOW), VT_EINVAL);
        VT_CHECK_ERR(vt_chan_try_recv(ch, NULL), VT_EINVAL);
        VT_CHECK_EQ(vt_chan_len(ch), len);
        VT_CHECK_OK(vt_chan_close(ch));
        VT_CHECK_ERR(vt_chan_send(ch, NULL, VT_FOREVER), VT_EINVAL);
        VT_CHECK_ERR(vt_chan_recv(ch, NULL, VT_FOREVER), VT_EINVAL);
        vt_chan_free(ch);
    }
}

VT_TEST(accessors)
{
    for (size_t k = 0; k < NCAPS; k++)
        for (size_t f = 0; f < NFLAGS; f++) {
            vt_chan *ch;
            VT_CHECK_OK(vt_chan_new(&ch, 12, caps[k], flag_sets[f]));
            VT_CHECK_EQ(vt_chan_cap(ch), caps[k]);
            VT_CHECK_EQ(vt_chan_elem_size(ch), 12);
            VT_CHECK_EQ(vt_chan_len(ch), 0);
            VT_CHECK_EQ(vt_chan_closed(ch), 0);
            char e[12] = "elevenbytes";
            size_t want = 0;
            for (int i = 0; i < 5; i++) {
                vt_err r = vt_chan_try_send(ch, e);
                if (caps[k] == 0) {
                    VT_CHECK_ERR(r, VT_EAGAIN);
                } else if (want < caps[k]) {
                    VT_CHECK_OK(r);
                    want++;
                } else {
                    VT_CHECK_ERR(r, VT_EAGAIN);
                }
                VT_CHECK_EQ(vt_chan_len(ch), want);
            }
            VT_CHECK_OK(vt_chan_close(ch));
            VT_CHECK_EQ(vt_chan_closed(ch), 1);
            /* Closing keeps what is buffered, and the shape. */
            VT_CHECK_EQ(vt_chan_len(ch), want);
            VT_CHECK_EQ(vt_chan_cap(ch), caps[k]);
            VT_CHECK_EQ(vt_chan_elem_size(ch), 12);
            while (want) {
                char got[12];
                VT_CHECK_OK(vt_chan_try_recv(ch, got));
                VT_CHECK_EQ(memcmp(got, e, 12), 0);
                VT_CHECK_EQ(vt_chan_len(ch), --want);
            }
            VT_CHECK_EQ(vt_chan_closed(ch), 1);
            vt_chan_free(ch);
        }
}

/* ---- Against a model --------------------------------------------------------------------- */

/* Random try_send / try_recv / send(VT_NOW) / recv(VT_NOW) on one thread,
 * compared with a plain FIFO: order, fullness, emptiness and len, across
 * many turns of the ring and, unbounded, across its growth with the head
 * anywhere. */
VT_TEST(buffered_kinds_match_a_fifo)
{
    enum {
        STEPS = 20000,
        MODEL = 4096
    };
    static uint64_t model[MODEL];
    for (size_t k = 1; k < NCAPS; k++)
        for (size_t f = 0; f < NFLAGS; f++) {
            vt_chan *ch;
            VT_CHECK_OK(vt_chan_new(&ch, sizeof(uint64_t), caps[k], flag_sets[f]));
            size_t head = 0, n = 0, limit = caps[k] == VT_CHAN_UNBOUNDED ? MODEL : caps[k];
            uint64_t next = 1;
            for (int s = 0; s < STEPS; s++) {
                uint64_t r = vt_test_rand();
                /* Drift toward full, then toward empty, so that both ends
                 * are reached whatever the capacity. */
                int filling = (s / 1500) % 2 == 0;
                int send = (r % 8) < (filling ? 6u : 2u);
                int blocking = (r >> 8) & 1;
                if (send) {
                    vt_err e =
                        blocking ? vt_chan_send(ch, &next, VT_NOW) : vt_chan_try_send(ch, &next);
                    if (n < limit) {
                        VT_CHECK_OK(e);
                        model[(head + n) % MODEL] = next++;
                        n++;
                    } else if (caps[k] == VT_CHAN_UNBOUNDED) {
                        /* The model is full, the channel is not: it must
                         * take it; drop it again at once to stay in step. */
                        VT_CHECK_OK(e);
                        uint64_t v;
                        VT_CHECK_OK(vt_chan_try_recv(ch, &v));
                        VT_CHECK_EQ(v, model[head]);
                        head = (head + 1) % MODEL;
                        model[(head + n - 1) % MODEL] = next++;
                    } else {
                        VT_CHECK_ERR(e, blocking ? VT_ETIMEDOUT : VT_EAGAIN);
                    }
                } else {
                    uint64_t v = 0xdead;
                    vt_err e = blocking ? vt_chan_recv(ch, &v, VT_NOW) : vt_chan_try_recv(ch, &v);
                    if (n) {
                        VT_CHECK_OK(e);
                        VT_CHECK_EQ(v, model[head]);
                        head = (head + 1) % MODEL;
                        n--;
                    } else {
                        VT_CHECK_ERR(e, blocking ? VT_ETIMEDOUT : VT_EAGAIN);
                        VT_CHECK_EQ(v, 0xdead);
                    }
                }
                VT_CHECK_EQ(vt_chan_len(ch), n);
            }
            vt_chan_free(ch);
        }
}

VT_TEST(unbounded_never_waits)
{
    enum {
        N = 100000
    };
    long live = vt_test_alloc_live();
    vt_chan *ch;
    VT_CHECK_OK(vt_chan_new(&ch, sizeof(uint32_t), VT_CHAN_UNBOUNDED, VT_CHAN_SPSC));
    for (uint32_t i = 0; i < N; i++) {
        vt_err e = (i % 3 == 0) ? vt_chan_send(ch, &i, VT_NOW) : vt_chan_try_send(ch, &i);
        if (e != VT_OK)
            VT_CHECK_OK(e);
    }
    VT_CHECK_EQ(vt_chan_len(ch), N);
    for (uint32_t i = 0; i < N; i++) {
        uint32_t v;
        vt_err e = vt_chan_recv(ch, &v, VT_FOREVER);
        if (e != VT_OK || v != i) {
            VT_CHECK_OK(e);
            VT_CHECK_EQ(v, i);
        }
    }
    VT_CHECK_EQ(vt_chan_len(ch), 0);
    vt_chan_free(ch);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

VT_TEST(rendezvous_needs_a_partner)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_chan *ch;
    VT_CHECK_OK(vt_chan_new(&ch, sizeof(uint64_t), 0, 0));
    uint64_t v = 7;
    VT_CHECK_ERR(vt_chan_try_send(ch, &v), VT_EAGAIN);
    VT_CHECK_ERR(vt_chan_try_recv(ch, &v), VT_EAGAIN);
    VT_CHECK_ERR(vt_chan_send(ch, &v, VT_NOW), VT_ETIMEDOUT);
    VT_CHECK_ERR(vt_chan_recv(ch, &v, VT_NOW), VT_ETIMEDOUT);
    VT_CHECK_EQ(v, 7);
    VT_CHECK_EQ(vt_chan_len(ch), 0);
    for (int thread = 0; thread < 2; thread++) {
        /* A receiver waits: try_send and send(VT_NOW) hand over to it. */
        for (int how = 0; how < 2; how++) {
            op o;
            party p;
            op_init(&o, ch, OP_RECV, -1, 0);
            VT_CHECK(party_start(&p, rt, thread, op_body, &o));
            wait_blocked(rt, &p, &o);
            uint64_t x = 100 + (uint64_t)how;
            vt_err e;
            if (thread) {
                /* The thread probe may be early: poll until it took it. */
                while ((e = how ? vt_chan_send(ch, &x, VT_NOW) : vt_chan_try_send(ch, &x)) !=
                           VT_OK &&
                       e == (how ? VT_ETIMEDOUT : VT_EAGAIN))
                    nap();
            } else {
                e = how ? vt_chan_send(ch, &x, VT_NOW) : vt_chan_try_send(ch, &x);
            }
            VT_CHECK_OK(e);
            VT_CHECK_EQ(party_join(&p), VT_OK);
            VT_CHECK_EQ(o.val, x);
            VT_CHECK_EQ(vt_chan_len(ch), 0);
        }
        /* A sender waits: try_recv and recv(VT_NOW) take from it. */
        for (int how = 0; how < 2; how++) {
            op o;
            party p;
            op_init(&o, ch, OP_SEND, -1, 200 + (uint64_t)how);
            VT_CHECK(party_start(&p, rt, thread, op_body, &o));
            wait_blocked(rt, &p, &o);
            VT_CHECK_EQ(vt_chan_len(ch), 0);
            uint64_t x = 0;
            vt_err e;
            while ((e = how ? vt_chan_recv(ch, &x, VT_NOW) : vt_chan_try_recv(ch, &x)) != VT_OK &&
                   e == (how ? VT_ETIMEDOUT : VT_EAGAIN) && thread)
                nap();
            VT_CHECK_OK(e);
            VT_CHECK_EQ(party_join(&p), VT_OK);
            VT_CHECK_EQ(x, 200 + (uint64_t)how);
        }
    }
    vt_chan_free(ch);
    vt_runtime_free(rt);
}

/* ---- Close ------------------------------------------------------------------------------- */

VT_TEST(close_drains_then_ends)
{
    for (size_t k = 0; k < NCAPS; k++) {
        vt_chan *ch;
        VT_CHECK_OK(vt_chan_new(&ch, sizeof(uint64_t), caps[k], 0));
        size_t n = caps[k] == VT_CHAN_UNBOUNDED ? 50 : caps[k];
        for (uint64_t i = 0; i < n; i++)
            VT_CHECK_OK(vt_chan_try_send(ch, &i));
        VT_CHECK_OK(vt_chan_close(ch));
        VT_CHECK_EQ(vt_chan_closed(ch), 1);
        VT_CHECK_ERR(vt_chan_close(ch), VT_ECLOSED);
        uint64_t x = 99;
        /* Closed wins over full and over "would wait". */
        VT_CHECK_ERR(vt_chan_send(ch, &x, VT_FOREVER), VT_ECLOSED);
        VT_CHECK_ERR(vt_chan_send(ch, &x, VT_NOW), VT_ECLOSED);
        VT_CHECK_ERR(vt_chan_try_send(ch, &x), VT_ECLOSED);
        VT_CHECK_EQ(vt_chan_len(ch), n);
        for (uint64_t i = 0; i < n; i++) {
            uint64_t v = 12345;
            VT_CHECK_OK(i % 2 ? vt_chan_recv(ch, &v, VT_FOREVER) : vt_chan_try_recv(ch, &v));
            VT_CHECK_EQ(v, i);
        }
        x = 777;
        VT_CHECK_ERR(vt_chan_recv(ch, &x, VT_FOREVER), VT_ECLOSED);
        VT_CHECK_ERR(vt_chan_recv(ch, &x, VT_NOW), VT_ECLOSED);
        VT_CHECK_ERR(vt_chan_try_recv(ch, &x), VT_ECLOSED);
        VT_CHECK_EQ(x, 777);
        VT_CHECK_ERR(vt_chan_close(ch), VT_ECLOSED);
        VT_CHECK_EQ(vt_chan_len(ch), 0);
        vt_chan_free(ch); /* closed already: only the release */
    }
}

/* mix: 0 fibers, 1 threads, 2 both. */
static int is_thread(int mix, int i)
{
    return mix == 2 ? i % 2 : mix;
}

VT_TEST(close_wakes_waiting_receivers)
{
    enum {
        R = 4
    };
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    for (size_t k = 0; k < NCAPS; k++)
        for (int mix = 0; mix < 3; mix++) {
            vt_chan *ch;
            VT_CHECK_OK(vt_chan_new(&ch, sizeof(uint64_t), caps[k], 0));
            op o[R];
            party p[R];
            for (int i = 0; i < R; i++) {
                op_init(&o[i], ch, OP_RECV, -1, 5);
                VT_CHECK(party_start(&p[i], rt, is_thread(mix, i), op_body, &o[i]));
            }
            wait_blocked_n(rt, p, o, R);
            VT_CHECK_OK(vt_chan_close(ch));
            intptr_t r[R];
            for (int i = 0; i < R; i++)
                r[i] = party_join(&p[i]);
            vt_chan_free(ch);
            for (int i = 0; i < R; i++) {
                if (r[i] != VT_ECLOSED)
                    printf("  %s, mix %d, receiver %d\n", cap_name(caps[k]), mix, i);
                VT_CHECK_EQ(r[i], VT_ECLOSED);
                VT_CHECK_EQ(o[i].val, 5);
            }
        }
    vt_runtime_free(rt);
}

/* Senders waiting on a full bounded channel or a rendezvous one fail with
 * VT_ECLOSED; what was buffered before is still received, and nothing of
 * theirs is. */
VT_TEST(close_wakes_waiting_senders)
{
    enum {
        S = 4
    };
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    for (size_t k = 0; k < 3; k++)
        for (int mix = 0; mix < 3; mix++) {
            vt_chan *ch;
            VT_CHECK_OK(vt_chan_new(&ch, sizeof(uint64_t), caps[k], 0));
            VT_CHECK(fill(ch, caps[k]));
            op o[S];
            party p[S];
            for (int i = 0; i < S; i++) {
                op_init(&o[i], ch, OP_SEND, -1, 50 + (uint64_t)i);
                VT_CHECK(party_start(&p[i], rt, is_thread(mix, i), op_body, &o[i]));
            }
            wait_blocked_n(rt, p, o, S);
            VT_CHECK_OK(vt_chan_close(ch));
            intptr_t r[S];
            for (int i = 0; i < S; i++)
                r[i] = party_join(&p[i]);
            for (int i = 0; i < S; i++)
                VT_CHECK_EQ(r[i], VT_ECLOSED);
            for (size_t i = 0; i < caps[k]; i++) {
                uint64_t v;
                VT_CHECK_OK(vt_chan_recv(ch, &v, VT_NOW));
                VT_CHECK_EQ(v, 1000 + i);
            }
            uint64_t v;
            VT_CHECK_ERR(vt_chan_recv(ch, &v, VT_NOW), VT_ECLOSED);
            vt_chan_free(ch);
        }
    vt_runtime_free(rt);
}

/* Senders that keep sending distinct elements while the channel is closed
 * under them: every send that returned VT_OK is received, once; every
 * sender ends on VT_ECLOSED. */
#define SEEN_MAX 200000

typedef struct racer {
    vt_chan *ch;
    uint32_t id;
    long ok;
    vt_err last;
} racer;

static void *racer_body(void *arg)
{
    racer *r = arg;
    for (uint32_t n = 0;; n++) {
        uint64_t v = elem_of(r->id, n);
        vt_err e;
        if (n + 1 >= SEEN_MAX) {
            /* An unbounded channel lets a sender run far ahead: stop
             * short of the table's end, then see the close. */
            while (!vt_chan_closed(r->ch))
                relax();
            e = vt_chan_send(r->ch, &v, VT_FOREVER);
        } else if (n % 4 == 3) {
            while ((e = vt_chan_try_send(r->ch, &v)) == VT_EAGAIN)
                relax();
        } else {
            e = vt_chan_send(r->ch, &v, VT_FOREVER);
        }
        if (e != VT_OK) {
            r->last = e;
            return NULL;
        }
        r->ok++;
    }
}

typedef struct drainer {
    vt_chan *ch;
    uint32_t nprod;
    _Atomic long got;
    long bad_order;
    uint32_t last[8];
    vt_err end;
    unsigned char *seen; /* [producer][n] counts, n < SEEN_MAX */
} drainer;

static void *drainer_body(void *arg)
{
    drainer *d = arg;
    for (uint32_t p = 0; p < 8; p++)
        d->last[p] = UINT32_MAX;
    for (;;) {
        uint64_t v;
        vt_err e = vt_chan_recv(d->ch, &v, VT_FOREVER);
        if (e != VT_OK) {
            d->end = e;
            return NULL;
        }
        uint32_t p = (uint32_t)(v >> 32), n = (uint32_t)v;
        if (p >= d->nprod || n >= SEEN_MAX) {
            d->bad_order++;
            continue;
        }
        if (d->last[p] != UINT32_MAX && n <= d->last[p])
            d->bad_order++;
        d->last[p] = n;
        d->seen[(size_t)p * SEEN_MAX + n]++;
        atomic_fetch_add(&d->got, 1);
    }
}

VT_TEST(close_keeps_every_accepted_send)
{
    enum {
        P = 3
    };
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    unsigned char *seen = calloc((size_t)P * SEEN_MAX, 1);
    VT_CHECK_NOT_NULL(seen);
    for (size_t k = 0; k < NCAPS; k++)
        for (int mix = 0; mix < 3; mix++) {
            vt_chan *ch;
            VT_CHECK_OK(vt_chan_new(&ch, sizeof(uint64_t), caps[k], 0));
            memset(seen, 0, (size_t)P * SEEN_MAX);
            drainer d;
            memset(&d, 0, sizeof d);
            d.ch = ch;
            d.nprod = P;
            d.seen = seen;
            racer r[P];
            party pr[P], pd;
            VT_CHECK(party_start(&pd, rt, mix == 1, drainer_body, &d));
            for (int i = 0; i < P; i++) {
                r[i] = (racer){ch, (uint32_t)i, 0, VT_OK};
                VT_CHECK(party_start(&pr[i], rt, is_thread(mix, i + 1), racer_body, &r[i]));
            }
            /* Close in the middle of the traffic: after the consumer has
             * seen a few hundred elements. */
            wait_for(&d.got, 300 + (long)(vt_test_rand() % 300));
            VT_CHECK_OK(vt_chan_close(ch));
            for (int i = 0; i < P; i++)
                party_join(&pr[i]);
            party_join(&pd);
            vt_chan_free(ch);
            long sent = 0;
            for (int i = 0; i < P; i++) {
                VT_CHECK_ERR(r[i].last, VT_ECLOSED);
                sent += r[i].ok;
                for (long n = 0; n < r[i].ok; n++)
                    if (seen[(size_t)i * SEEN_MAX + (size_t)n] != 1)
                        VT_CHECK_EQ(seen[(size_t)i * SEEN_MAX + (size_t)n], 1);
            }
            VT_CHECK_ERR(d.end, VT_ECLOSED);
            VT_CHECK_EQ(d.bad_order, 0);
            VT_CHECK_EQ(atomic_load(&d.got), sent);
        }
    free(seen);
    vt_runtime_free(rt);
}

/* ---- Deadlines --------------------------------------------------------------------------- */

/* What waits: a receive on each empty kind, a send on each full kind. */
typedef struct waitcase {
    size_t cap;
    int what;
} waitcase;
static const waitcase waitcases[] = {
    {0, OP_RECV}, {1, OP_RECV}, {3, OP_RECV}, {1024, OP_RECV}, {VT_CHAN_UNBOUNDED, OP_RECV},
    {0, OP_SEND}, {1, OP_SEND}, {3, OP_SEND}, {1024, OP_SEND},
};
#define NWAITCASES (sizeof waitcases / sizeof waitcases[0])

/* After a failed wait the channel is as before: full of 1000 + i when it
 * was filled (fill), else empty, and nobody waits. */
static void check_untouched(vt_chan *ch, size_t cap, int filled)
{
    uint64_t v = 4242;
    if (filled && cap != 0 && cap != VT_CHAN_UNBOUNDED) {
        VT_CHECK_EQ(vt_chan_len(ch), cap);
        VT_CHECK_ERR(vt_chan_try_send(ch, &v), VT_EAGAIN);
        for (size_t i = 0; i < cap; i++) {
            VT_CHECK_OK(vt_chan_try_recv(ch, &v));
            VT_CHECK_EQ(v, 1000 + i);
        }
    }
    VT_CHECK_EQ(vt_chan_len(ch), 0);
    VT_CHECK_ERR(vt_chan_try_recv(ch, &v), VT_EAGAIN);
    if (cap == 0)
        VT_CHECK_ERR(vt_chan_try_send(ch, &v), VT_EAGAIN); /* no receiver left behind */
}

VT_TEST(deadlines_end_every_wait)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    const int64_t rels[] = {VT_MS(3), 0, INT64_MIN};
    for (size_t c = 0; c < NWAITCASES; c++)
        for (int thread = 0; thread < 2; thread++)
            for (size_t d = 0; d < 3; d++) {
                const waitcase *wc = &waitcases[c];
                vt_chan *ch;
                VT_CHECK_OK(vt_chan_new(&ch, sizeof(uint64_t), wc->cap, 0));
                if (wc->what == OP_SEND)
                    VT_CHECK(fill(ch, wc->cap));
                op o;
                party p;
                op_init(&o, ch, wc->what, rels[d], 31337);
                VT_CHECK(party_start(&p, rt, thread, op_body, &o));
                intptr_t r = party_join(&p);
                if (r != VT_ETIMEDOUT)
                    printf("  %s %s from a %s, deadline %lld\n",
                           wc->what == OP_SEND ? "send" : "recv", cap_name(wc->cap),
                           thread ? "thread" : "fiber", (long long)rels[d]);
                VT_CHECK_EQ(r, VT_ETIMEDOUT);
                if (o.deadline != VT_NOW)
                    VT_CHECK_GE(o.end, o.deadline);
                VT_CHECK_EQ(o.val, 31337);
                check_untouched(ch, wc->cap, wc->what == OP_SEND);
                vt_chan_free(ch);
            }
    vt_runtime_free(rt);
}

/* A deadline that has not passed when the partner comes is no obstacle. */
VT_TEST(deadline_not_reached_completes)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    for (size_t c = 0; c < NWAITCASES; c++)
        for (int thread = 0; thread < 2; thread++) {
            const waitcase *wc = &waitcases[c];
            vt_chan *ch;
            VT_CHECK_OK(vt_chan_new(&ch, sizeof(uint64_t), wc->cap, 0));
            if (wc->what == OP_SEND)
                VT_CHECK(fill(ch, wc->cap));
            op o;
            party p;
            op_init(&o, ch, wc->what, VT_SEC(3600), 777);
            VT_CHECK(party_start(&p, rt, thread, op_body, &o));
            wait_blocked(rt, &p, &o);
            uint64_t v = 888;
            if (wc->what == OP_SEND)
                VT_CHECK_OK(vt_chan_recv(ch, &v, VT_FOREVER));
            else
                VT_CHECK_OK(vt_chan_send(ch, &v, VT_FOREVER));
            VT_CHECK_EQ(party_join(&p), VT_OK);
            if (wc->what == OP_SEND) {
                VT_CHECK_EQ(v, wc->cap ? 1000 : 777);
                if (wc->cap) { /* the sender's element went in last */
                    for (size_t i = 1; i < wc->cap; i++)
                        VT_CHECK_OK(vt_chan_try_recv(ch, &v));
                    VT_CHECK_OK(vt_chan_try_recv(ch, &v));
                    VT_CHECK_EQ(v, 777);
                }
            } else {
                VT_CHECK_EQ(o.val, 888);
            }
            VT_CHECK_EQ(vt_chan_len(ch), 0);
            vt_chan_free(ch);
        }
    vt_runtime_free(rt);
}

/* ---- Cancellation ------------------------------------------------------------------------ */

VT_TEST(cancel_ends_a_waiting_call)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    for (size_t c = 0; c < NWAITCASES; c++)
        for (int deadline = 0; deadline < 2; deadline++) {
            const waitcase *wc = &waitcases[c];
            vt_chan *ch;
            VT_CHECK_OK(vt_chan_new(&ch, sizeof(uint64_t), wc->cap, 0));
            if (wc->what == OP_SEND)
                VT_CHECK(fill(ch, wc->cap));
            op o;
            party p;
            op_init(&o, ch, wc->what, deadline ? VT_SEC(3600) : -1, 31337);
            VT_CHECK(party_start(&p, rt, 0, op_body, &o));
            wait_blocked(rt, &p, &o);
            VT_CHECK_OK(vt_fiber_cancel(p.f));
            VT_CHECK_EQ(party_join(&p), VT_ECANCELED);
            VT_CHECK_EQ(o.val, 31337);
            check_untouched(ch, wc->cap, wc->what == OP_SEND);
            vt_chan_free(ch);
        }
    vt_runtime_free(rt);
}

/* A cancelled fiber's channel calls that can complete at once do; those
 * that would wait say VT_ECANCELED; try_ calls are unaffected. */
typedef struct cancelled_run {
    vt_chan *ch;
    size_t cap;
    vt_err e[16];
    uint64_t got[4];
} cancelled_run;

static void *cancelled_body(void *arg)
{
    cancelled_run *c = arg;
    vt_fiber_cancel(vt_fiber_self());
    int i = 0;
    uint64_t v;
    /* Room for three, bounded or unbounded. */
    for (uint64_t k = 0; k < 3; k++)
        c->e[i++] = vt_chan_send(c->ch, &k, VT_FOREVER);
    if (c->cap == 3) {
        v = 9;
        c->e[i++] = vt_chan_send(c->ch, &v, VT_FOREVER); /* full: would wait */
        c->e[i++] = vt_chan_try_send(c->ch, &v);
    }
    for (int k = 0; k < 3; k++)
        c->e[i++] = vt_chan_recv(c->ch, &c->got[k], VT_FOREVER);
    c->e[i++] = vt_chan_recv(c->ch, &v, VT_FOREVER); /* empty: would wait */
    c->e[i++] = vt_chan_try_recv(c->ch, &v);
    c->e[i++] = vt_chan_close(c->ch);
    c->e[i++] = vt_chan_recv(c->ch, &v, VT_FOREVER); /* closed: completes */
    c->e[i++] = vt_chan_send(c->ch, &v, VT_FOREVER);
    return NULL;
}

VT_TEST(cancelled_fiber_completes_what_is_ready)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    const size_t kinds[] = {3, VT_CHAN_UNBOUNDED};
    for (size_t k = 0; k < 2; k++) {
        cancelled_run c;
        memset(&c, 0, sizeof c);
        c.cap = kinds[k];
        VT_CHECK_OK(vt_chan_new(&c.ch, sizeof(uint64_t), c.cap, 0));
        party p;
        VT_CHECK(party_start(&p, rt, 0, cancelled_body, &c));
        party_join(&p);
        vt_chan_free(c.ch);
        int i = 0;
        for (int n = 0; n < 3; n++)
            VT_CHECK_OK(c.e[i++]);
        if (c.cap == 3) {
            VT_CHECK_ERR(c.e[i++], VT_ECANCELED);
            VT_CHECK_ERR(c.e[i++], VT_EAGAIN);
        }
        for (int n = 0; n < 3; n++) {
            VT_CHECK_OK(c.e[i++]);
            VT_CHECK_EQ(c.got[n], (uint64_t)n);
        }
        VT_CHECK_ERR(c.e[i++], VT_ECANCELED);
        VT_CHECK_ERR(c.e[i++], VT_EAGAIN);
        VT_CHECK_OK(c.e[i++]);
        VT_CHECK_ERR(c.e[i++], VT_ECLOSED);
        VT_CHECK_ERR(c.e[i++], VT_ECLOSED);
    }

    /* Rendezvous: with a partner already waiting, the hand-over completes
     * at once; without one, it would wait. */
    vt_chan *ch;
    VT_CHECK_OK(vt_chan_new(&ch, sizeof(uint64_t), 0, 0));
    for (int what = OP_SEND; what <= OP_RECV; what++) {
        op partner, me;
        party pp, pm;
        op_init(&partner, ch, what == OP_SEND ? OP_RECV : OP_SEND, -1, 66);
        VT_CHECK(party_start(&pp, rt, 0, op_body, &partner));
        wait_blocked(rt, &pp, &partner);
        op_init(&me, ch, what, -1, 55);
        me.cancel_self = 1;
        VT_CHECK(party_start(&pm, rt, 0, op_body, &me));
        VT_CHECK_EQ(party_join(&pm), VT_OK);
        VT_CHECK_EQ(party_join(&pp), VT_OK);
        VT_CHECK_EQ(what == OP_SEND ? partner.val : me.val, what == OP_SEND ? 55u : 66u);
        /* Nobody waits now: the cancelled fiber's call would wait. */
        op_init(&me, ch, what, -1, 55);
        me.cancel_self = 1;
        VT_CHECK(party_start(&pm, rt, 0, op_body, &me));
        VT_CHECK_EQ(party_join(&pm), VT_ECANCELED);
        uint64_t v;
        VT_CHECK_ERR(vt_chan_try_recv(ch, &v), VT_EAGAIN);
        VT_CHECK_ERR(vt_chan_try_send(ch, &v), VT_EAGAIN);
    }
    vt_chan_free(ch);
    vt_runtime_free(rt);
}

/* With cancellation masked, a cancelled fiber waits as any other. */
VT_TEST(masked_cancellation_waits)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    for (size_t c = 0; c < NWAITCASES; c++) {
        const waitcase *wc = &waitcases[c];
        vt_chan *ch;
        VT_CHECK_OK(vt_chan_new(&ch, sizeof(uint64_t), wc->cap, 0));
        if (wc->what == OP_SEND)
            VT_CHECK(fill(ch, wc->cap));
        op o;
        party p;
        op_init(&o, ch, wc->what, -1, 99);
        o.cancel_self = o.mask = 1;
        VT_CHECK(party_start(&p, rt, 0, op_body, &o));
        wait_blocked(rt, &p, &o);
        uint64_t v = 11;
        if (wc->what == OP_SEND)
            VT_CHECK_OK(vt_chan_recv(ch, &v, VT_FOREVER));
        else
            VT_CHECK_OK(vt_chan_send(ch, &v, VT_FOREVER));
        VT_CHECK_EQ(party_join(&p), VT_OK);
        if (wc->what == OP_RECV)
            VT_CHECK_EQ(o.val, 11);
        vt_chan_free(ch);
    }
    vt_runtime_free(rt);
}

/* ---- Allocation failure ------------------------------------------------------------------ */

VT_TEST(new_out_of_memory)
{
    long live = vt_test_alloc_live();
    for (size_t k = 0; k < NCAPS; k++)
        for (size_t f = 0; f < NFLAGS; f++) {
            long fails = 0;
            for (long n = 1;; n++) {
                vt_chan *ch = NULL;
                vt_test_alloc_fail_at(n);
                vt_err e = vt_chan_new(&ch, 24, caps[k], flag_sets[f]);
                vt_test_alloc_fail_at(0);
                if (e == VT_OK) {
                    /* Usable, and freed without a trace. */
                    char x[24] = "a channel of 24 bytes..", y[24];
                    if (caps[k]) {
                        VT_CHECK_OK(vt_chan_try_send(ch, x));
                        VT_CHECK_OK(vt_chan_try_recv(ch, y));
                        VT_CHECK_EQ(memcmp(x, y, 24), 0);
                    }
                    vt_chan_free(ch);
                    break;
                }
                VT_CHECK_ERR(e, VT_ENOMEM);
                VT_CHECK_EQ(vt_test_alloc_live(), live);
                fails++;
                VT_CHECK_LT(n, 100);
            }
            VT_CHECK_GE(fails, 1); /* the channel is allocated through the hook */
            VT_CHECK_EQ(vt_test_alloc_live(), live);
        }
}

/* An unbounded channel that cannot grow fails the send with VT_ENOMEM
 * and keeps everything it holds, in order, wherever its head was. */
VT_TEST(unbounded_growth_out_of_memory)
{
    long live = vt_test_alloc_live();
    vt_chan *ch;
    VT_CHECK_OK(vt_chan_new(&ch, 12, VT_CHAN_UNBOUNDED, 0));
    char e[12];
    uint32_t next_in = 0, next_out = 0;
#define PUT(v) (memset(e, 0, 12), memcpy(e, &(v), 4), memcpy(e + 8, &(v), 4))
    /* The first buffer. */
    for (int how = 0; how < 2; how++) {
        PUT(next_in);
        vt_test_alloc_fail_at(1);
        vt_err r = how ? vt_chan_try_send(ch, e) : vt_chan_send(ch, e, VT_FOREVER);
        vt_test_alloc_fail_at(0);
        VT_CHECK_ERR(r, VT_ENOMEM);
        VT_CHECK_EQ(vt_chan_len(ch), 0);
    }
    PUT(next_in);
    VT_CHECK_OK(vt_chan_send(ch, e, VT_NOW));
    next_in++;
    uint32_t failures = 0;
    for (int round = 0; round < 6; round++) {
        /* Send until a send needs memory: that one fails. */
        for (;;) {
            PUT(next_in);
            vt_test_alloc_fail_at(1);
            vt_err r = (next_in % 2) ? vt_chan_try_send(ch, e) : vt_chan_send(ch, e, VT_NOW);
            long allocs = vt_test_alloc_count();
            vt_test_alloc_fail_at(0);
            if (r == VT_ENOMEM) {
                VT_CHECK_EQ(allocs, 1);
                failures++;
                break;
            }
            VT_CHECK_OK(r);
            VT_CHECK_EQ(allocs, 0);
            next_in++;
        }
        VT_CHECK_EQ(vt_chan_len(ch), next_in - next_out);
        /* Take a few out, so that the head moves before the next growth. */
        for (int i = 0; i < 5; i++) {
            char g[12];
            uint32_t a, b;
            VT_CHECK_OK(vt_chan_try_recv(ch, g));
            memcpy(&a, g, 4);
            memcpy(&b, g + 8, 4);
            VT_CHECK_EQ(a, next_out);
            VT_CHECK_EQ(b, next_out);
            next_out++;
        }
        /* Refill the room, then grow for real. */
        for (int i = 0; i < 5; i++) {
            PUT(next_in);
            VT_CHECK_OK(vt_chan_try_send(ch, e));
            next_in++;
        }
        PUT(next_in);
        VT_CHECK_OK(vt_chan_try_send(ch, e));
        next_in++;
    }
#undef PUT
    VT_CHECK_EQ(failures, 6);
    VT_CHECK_OK(vt_chan_close(ch));
    for (;;) {
        char g[12];
        uint32_t a;
        vt_err r = vt_chan_recv(ch, g, VT_FOREVER);
        if (r == VT_ECLOSED)
            break;
        VT_CHECK_OK(r);
        memcpy(&a, g, 4);
        VT_CHECK_EQ(a, next_out);
        next_out++;
    }
    VT_CHECK_EQ(next_out, next_in);
    vt_chan_free(ch);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

/* ---- Lifetime ---------------------------------------------------------------------------- */

VT_TEST(references)
{
    long live = vt_test_alloc_live();
    for (size_t k = 0; k < NCAPS; k++) {
        vt_chan *ch;
        VT_CHECK_OK(vt_chan_new(&ch, sizeof(uint64_t), caps[k], 0));
        VT_CHECK_PTR_EQ(vt_chan_retain(ch), ch);
        VT_CHECK_PTR_EQ(vt_chan_retain(ch), ch);
        vt_chan_release(ch);
        vt_chan_release(ch);
        /* Still the creator's, open and working. */
        VT_CHECK_EQ(vt_chan_closed(ch), 0);
        uint64_t v = 5;
        if (caps[k]) {
            VT_CHECK_OK(vt_chan_try_send(ch, &v));
            VT_CHECK_EQ(vt_chan_len(ch), 1);
        }
        /* A producer's reference outlives the creator's vt_chan_free: it
         * sees the close and drains. */
        vt_chan *held = vt_chan_retain(ch);
        vt_chan_free(ch);
        VT_CHECK_EQ(vt_chan_closed(held), 1);
        VT_CHECK_ERR(vt_chan_try_send(held, &v), VT_ECLOSED);
        if (caps[k]) {
            v = 0;
            VT_CHECK_OK(vt_chan_recv(held, &v, VT_FOREVER));
            VT_CHECK_EQ(v, 5);
        }
        VT_CHECK_ERR(vt_chan_recv(held, &v, VT_FOREVER), VT_ECLOSED);
        VT_CHECK_ERR(vt_chan_close(held), VT_ECLOSED);
        vt_chan_release(held); /* the last: frees it, and the element it held */
        VT_CHECK_EQ(vt_test_alloc_live(), live);
    }
    /* The last release frees what is still buffered, growth included. */
    vt_chan *ch;
    VT_CHECK_OK(vt_chan_new(&ch, 100, VT_CHAN_UNBOUNDED, 0));
    char big[100] = {0};
    for (int i = 0; i < 1000; i++)
        VT_CHECK_OK(vt_chan_try_send(ch, big));
    vt_chan_release(ch);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

/* vt_chan_free while fibers wait in it: they wake with VT_ECLOSED (a
 * sender's element not sent), the memory goes when the last one is out. */
VT_TEST(free_while_fibers_wait)
{
    enum {
        N = 3
    };
    long live = vt_test_alloc_live();
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    for (size_t c = 0; c < NWAITCASES; c++) {
        const waitcase *wc = &waitcases[c];
        vt_chan *ch;
        VT_CHECK_OK(vt_chan_new(&ch, sizeof(uint64_t), wc->cap, 0));
        if (wc->what == OP_SEND)
            VT_CHECK(fill(ch, wc->cap));
        op o[N];
        party p[N];
        for (int i = 0; i < N; i++) {
            op_init(&o[i], ch, wc->what, i == 1 ? VT_SEC(3600) : -1, 3);
            VT_CHECK(party_start(&p[i], rt, 0, op_body, &o[i]));
        }
        wait_blocked_n(rt, p, o, N);
        vt_chan_free(ch);
        intptr_t r[N];
        for (int i = 0; i < N; i++)
            r[i] = party_join(&p[i]);
        for (int i = 0; i < N; i++) {
            VT_CHECK_EQ(r[i], VT_ECLOSED);
            VT_CHECK_EQ(o[i].val, 3);
        }
    }
    vt_runtime_free(rt);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

/* A fiber whose wait has just ended (cancelled) but that has not run yet
 * is still in its call: freeing the channel then must not pull the memory
 * from under it. One worker: the fiber that cancels and frees runs on,
 * the cancelled one gets to run only after the free. */
typedef struct cancel_then_free {
    vt_chan *ch;
    int what;
    vt_err victim_err, join_err;
} cancel_then_free;

static void *ctf_body(void *arg)
{
    cancel_then_free *c = arg;
    op o;
    op_init(&o, c->ch, c->what, -1, 1);
    vt_fiber f;
    c->join_err = vt_fiber_spawn(&f, op_body, &o);
    if (c->join_err)
        return NULL;
    while (!atomic_load(&o.started) ||
           fibers_waiting(vt_runtime_current(), c->what == OP_SEND ? "chan send" : "chan recv",
                          c->ch) == 0)
        vt_fiber_yield();
    vt_fiber_cancel(f);
    vt_chan_free(c->ch);
    void *r = NULL;
    c->join_err = vt_fiber_await(f, &r, VT_FOREVER);
    c->victim_err = (vt_err)(intptr_t)r;
    return NULL;
}

VT_TEST(free_after_a_waiter_was_cancelled)
{
    long live = vt_test_alloc_live();
    vt_runtime *rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    for (size_t c = 0; c < NWAITCASES; c++) {
        const waitcase *wc = &waitcases[c];
        cancel_then_free x = {NULL, wc->what, VT_OK, VT_OK};
        VT_CHECK_OK(vt_chan_new(&x.ch, sizeof(uint64_t), wc->cap, 0));
        if (wc->what == OP_SEND)
            VT_CHECK(fill(x.ch, wc->cap));
        party p;
        VT_CHECK(party_start(&p, rt, 0, ctf_body, &x));
        party_join(&p);
        VT_CHECK_OK(x.join_err);
        VT_CHECK_ERR(x.victim_err, VT_ECANCELED);
    }
    vt_runtime_free(rt);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

/* The last reference dropped (no close) while fibers wait: they wait on
 * until their deadline or their cancellation, and the memory goes when
 * the last of them is out. */
VT_TEST(last_release_while_fibers_wait)
{
    long live = vt_test_alloc_live();
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    for (size_t c = 0; c < NWAITCASES; c++) {
        const waitcase *wc = &waitcases[c];
        vt_chan *ch;
        VT_CHECK_OK(vt_chan_new(&ch, sizeof(uint64_t), wc->cap, 0));
        if (wc->what == OP_SEND)
            VT_CHECK(fill(ch, wc->cap));
        op o[2];
        party p[2];
        op_init(&o[0], ch, wc->what, VT_MS(2), 1);
        op_init(&o[1], ch, wc->what, -1, 2);
        /* The one without a deadline must be in its wait when the last
         * reference goes; the other may have timed out already. */
        VT_CHECK(party_start(&p[1], rt, 0, op_body, &o[1]));
        wait_blocked(rt, &p[1], &o[1]);
        VT_CHECK(party_start(&p[0], rt, 0, op_body, &o[0]));
        wait_fibers_or_done(rt, &o[0], 2);
        vt_chan_release(ch);
        VT_CHECK_EQ(party_join(&p[0]), VT_ETIMEDOUT);
        VT_CHECK_OK(vt_fiber_cancel(p[1].f));
        VT_CHECK_EQ(party_join(&p[1]), VT_ECANCELED);
    }
    vt_runtime_free(rt);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

/* ---- Elements of every size -------------------------------------------------------------- */

typedef struct sized {
    vt_chan *ch;
    size_t size;
    uint32_t count;
    uint32_t seed;
    vt_err err;
} sized;

static void pattern(unsigned char *b, size_t size, uint32_t seed, uint32_t n)
{
    uint64_t x = vt_hash_mix64(((uint64_t)seed << 32) | n);
    for (size_t i = 0; i < size; i++) {
        if (i % 8 == 0)
            x = vt_hash_mix64(x + i);
        b[i] = (unsigned char)(x >> (8 * (i % 8)));
    }
}

static void *sized_producer(void *arg)
{
    sized *s = arg;
    unsigned char *b = malloc(s->size), *copy = malloc(s->size);
    if (!b || !copy) {
        s->err = VT_ENOMEM;
        free(b);
        free(copy);
        return NULL;
    }
    for (uint32_t n = 0; n < s->count && !s->err; n++) {
        pattern(b, s->size, s->seed, n);
        memcpy(copy, b, s->size);
        s->err = vt_chan_send(s->ch, b, VT_FOREVER);
        if (!s->err && memcmp(copy, b, s->size) != 0)
            s->err = VT_ESTATE; /* the channel wrote to the sender's element */
    }
    free(b);
    free(copy);
    return NULL;
}

VT_TEST(odd_and_large_elements)
{
    enum {
        CANARY = 32,
        COUNT = 40
    };
    const size_t sizes[] = {1, 2, 3, 5, 7, 12, 16, 17, 24, 100, 4096, 4099};
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++)
        for (size_t k = 0; k < NCAPS; k++) {
            size_t size = sizes[z];
            vt_chan *ch;
            VT_CHECK_OK(vt_chan_new(&ch, size, caps[k], VT_CHAN_SPSC));
            sized s = {ch, size, COUNT, (uint32_t)vt_test_rand(), VT_OK};
            party p;
            VT_CHECK(party_start(&p, rt, (int)(z + k) % 2, sized_producer, &s));
            unsigned char *got = malloc(size + CANARY), *want = malloc(size);
            VT_CHECK_NOT_NULL(got);
            VT_CHECK_NOT_NULL(want);
            long bad = 0, canary = 0;
            vt_err err = VT_OK;
            for (uint32_t n = 0; n < COUNT && !err; n++) {
                memset(got, 0xa5, size + CANARY);
                err = vt_chan_recv(ch, got, VT_FOREVER);
                pattern(want, size, s.seed, n);
                bad += memcmp(got, want, size) != 0;
                for (size_t i = size; i < size + CANARY; i++)
                    canary += got[i] != 0xa5;
            }
            party_join(&p);
            free(got);
            free(want);
            vt_chan_free(ch);
            if (bad || canary || err || s.err)
                printf("  size %zu, %s\n", size, cap_name(caps[k]));
            VT_CHECK_OK(err);
            VT_CHECK_OK(s.err);
            VT_CHECK_EQ(bad, 0);
            VT_CHECK_EQ(canary, 0);
        }
    vt_runtime_free(rt);
}

/* ---- Exact delivery, small --------------------------------------------------------------- */

typedef struct prod {
    vt_chan *ch;
    uint32_t id, count;
    vt_err err;
} prod;

static void *prod_body(void *arg)
{
    prod *p = arg;
    for (uint32_t n = 0; n < p->count; n++) {
        uint64_t v = elem_of(p->id, n);
        vt_err e;
        if (n % 5 == 4) {
            while ((e = vt_chan_try_send(p->ch, &v)) == VT_EAGAIN)
                relax();
        } else {
            e = vt_chan_send(p->ch, &v, VT_FOREVER);
        }
        if (e) {
            p->err = e;
            return NULL;
        }
    }
    return NULL;
}

typedef struct cons {
    vt_chan *ch;
    uint32_t nprod, count;
    uint32_t *last;              /* [nprod], next expected floor */
    _Atomic unsigned char *seen; /* [nprod * count] */
    long got, bad;
    vt_err end;
} cons;

static void *cons_body(void *arg)
{
    cons *c = arg;
    for (;;) {
        uint64_t v;
        vt_err e = vt_chan_recv(c->ch, &v, VT_FOREVER);
        if (e) {
            c->end = e;
            return NULL;
        }
        uint32_t p = (uint32_t)(v >> 32), n = (uint32_t)v;
        if (p >= c->nprod || n >= c->count || (c->last[p] != UINT32_MAX && n <= c->last[p])) {
            c->bad++;
            continue;
        }
        c->last[p] = n;
        atomic_fetch_add(&c->seen[(size_t)p * c->count + n], 1);
        c->got++;
    }
}

/* Producers and consumers as fibers, threads and both, on every kind:
 * each element arrives once, each consumer sees each producer's elements
 * in the order they were sent. */
VT_TEST(fibers_and_threads_exchange_exactly)
{
    enum {
        P = 3,
        C = 3,
        COUNT = 300 / SAN_DIV
    };
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    _Atomic unsigned char *seen = calloc((size_t)P * COUNT, 1);
    VT_CHECK_NOT_NULL(seen);
    for (size_t k = 0; k < NCAPS; k++)
        for (int pm = 0; pm < 3; pm++)
            for (int cm = 0; cm < 3; cm++) {
                vt_chan *ch;
                VT_CHECK_OK(vt_chan_new(&ch, sizeof(uint64_t), caps[k], 0));
                for (size_t i = 0; i < (size_t)P * COUNT; i++)
                    atomic_store(&seen[i], 0);
                prod pr[P];
                cons co[C];
                uint32_t last[C][P];
                party pp[P], pc[C];
                for (int i = 0; i < C; i++) {
                    for (int j = 0; j < P; j++)
                        last[i][j] = UINT32_MAX;
                    co[i] = (cons){ch, P, COUNT, last[i], seen, 0, 0, VT_OK};
                    VT_CHECK(party_start(&pc[i], rt, is_thread(cm, i), cons_body, &co[i]));
                }
                for (int i = 0; i < P; i++) {
                    pr[i] = (prod){ch, (uint32_t)i, COUNT, VT_OK};
                    VT_CHECK(party_start(&pp[i], rt, is_thread(pm, i), prod_body, &pr[i]));
                }
                for (int i = 0; i < P; i++)
                    party_join(&pp[i]);
                VT_CHECK_OK(vt_chan_close(ch));
                for (int i = 0; i < C; i++)
                    party_join(&pc[i]);
                vt_chan_free(ch);
                long got = 0;
                for (int i = 0; i < P; i++)
                    VT_CHECK_OK(pr[i].err);
                for (int i = 0; i < C; i++) {
                    VT_CHECK_ERR(co[i].end, VT_ECLOSED);
                    VT_CHECK_EQ(co[i].bad, 0);
                    got += co[i].got;
                }
                VT_CHECK_EQ(got, P * COUNT);
                for (size_t i = 0; i < (size_t)P * COUNT; i++)
                    if (atomic_load(&seen[i]) != 1)
                        VT_CHECK_EQ(atomic_load(&seen[i]), 1);
            }
    free((void *)seen);
    vt_runtime_free(rt);
}

/* The single-party flags, with the single side one party (a fiber on one
 * side, a thread on the other), the other side several. */
VT_TEST(single_party_flags)
{
    enum {
        COUNT = 2000 / SAN_DIV,
        MANY = 3
    };
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    _Atomic unsigned char *seen = calloc((size_t)MANY * COUNT, 1);
    VT_CHECK_NOT_NULL(seen);
    for (size_t k = 0; k < NCAPS; k++)
        for (size_t f = 1; f < NFLAGS; f++)
            for (int flip = 0; flip < 2; flip++) {
                unsigned flags = flag_sets[f];
                int np = (flags & VT_CHAN_SINGLE_SENDER) ? 1 : MANY;
                int nc = (flags & VT_CHAN_SINGLE_RECEIVER) ? 1 : MANY;
                vt_chan *ch;
                VT_CHECK_OK(vt_chan_new(&ch, sizeof(uint64_t), caps[k], flags));
                for (size_t i = 0; i < (size_t)MANY * COUNT; i++)
                    atomic_store(&seen[i], 0);
                prod pr[MANY];
                cons co[MANY];
                uint32_t last[MANY][MANY];
                party pp[MANY], pc[MANY];
                for (int i = 0; i < nc; i++) {
                    for (int j = 0; j < MANY; j++)
                        last[i][j] = UINT32_MAX;
                    co[i] = (cons){ch, (uint32_t)np, COUNT, last[i], seen, 0, 0, VT_OK};
                    VT_CHECK(party_start(&pc[i], rt, (i + flip) % 2, cons_body, &co[i]));
                }
                for (int i = 0; i < np; i++) {
                    pr[i] = (prod){ch, (uint32_t)i, COUNT, VT_OK};
                    VT_CHECK(party_start(&pp[i], rt, (i + flip + 1) % 2, prod_body, &pr[i]));
                }
                for (int i = 0; i < np; i++)
                    party_join(&pp[i]);
                VT_CHECK_OK(vt_chan_close(ch));
                for (int i = 0; i < nc; i++)
                    party_join(&pc[i]);
                vt_chan_free(ch);
                long got = 0;
                for (int i = 0; i < np; i++)
                    VT_CHECK_OK(pr[i].err);
                for (int i = 0; i < nc; i++) {
                    VT_CHECK_ERR(co[i].end, VT_ECLOSED);
                    VT_CHECK_EQ(co[i].bad, 0);
                    got += co[i].got;
                }
                VT_CHECK_EQ(got, (long)np * COUNT);
                for (size_t i = 0; i < (size_t)np * COUNT; i++)
                    if (atomic_load(&seen[i]) != 1)
                        VT_CHECK_EQ(atomic_load(&seen[i]), 1);
            }
    free((void *)seen);
    vt_runtime_free(rt);
}
