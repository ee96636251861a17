/* test_select.c — vt_select and vt_select_try: arguments, disabled cases,
 * the default case, deadlines, closed channels, cancellation, send and
 * receive cases mixed over every kind of channel, fairness (a statistical
 * check of the random choice, never a timing one), rendezvous between a
 * select and a plain call or another select (and never with itself), no
 * lost wake-up when a select woken by one channel takes another, and a
 * deterministic run that replays its trace for the same seed.
 *
 * A party "waits" when the test has seen it blocked: a fiber in
 * vt_runtime_dump's "waiting on select", a thread asleep in the kernel
 * (/proc/self/task/<tid>/stat says S; a probe that can be early, so tests
 * using it are right either way). */
#include <pthread.h>
#include <sched.h>
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

static const size_t caps[] = {0, 1, 3, 1024, VT_CHAN_UNBOUNDED};
#define NCAPS (sizeof caps / sizeof caps[0])

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

/* mix: 0 fibers, 1 threads, 2 both. */
static int is_thread_mix(int mix, int i)
{
    return mix == 2 ? i % 2 : mix;
}

static vt_chan *chan_of(size_t cap)
{
    vt_chan *ch = NULL;
    return vt_chan_new(&ch, sizeof(uint64_t), cap, 0) == VT_OK ? ch : NULL;
}

/* A bounded channel made full of 1000 + i (NULL if it takes more: a
 * broken channel fails the test here rather than hang it later). */
static vt_chan *full_chan(size_t cap)
{
    vt_chan *ch = chan_of(cap);
    for (uint64_t i = 0; ch && i < cap; i++)
        if (vt_chan_try_send(ch, &(uint64_t){1000 + i}) != VT_OK) {
            vt_chan_free(ch);
            return NULL;
        }
    if (ch && cap && vt_chan_try_send(ch, &(uint64_t){0}) != VT_EAGAIN) {
        vt_chan_free(ch);
        return NULL;
    }
    return ch;
}

/* ---- One select in a party --------------------------------------------------------------- */

#define SEL_MAX 12

typedef struct sel {
    vt_select_case c[SEL_MAX];
    uint64_t v[SEL_MAX]; /* the cases' elements */
    size_t n;
    int64_t rel; /* < 0 VT_FOREVER, 0 VT_NOW, > 0 ns from the start, INT64_MIN past */
    int trying, cancel_self;
    size_t chosen;
    int64_t deadline, end;
    _Atomic int started, done, tid;
} sel;

/* Case i: op on ch, its element in s->v[i] (value v). */
static void sel_case(sel *s, vt_chan *ch, int op, uint64_t v)
{
    size_t i = s->n++;
    s->c[i] = (vt_select_case){ch, op, &s->v[i]};
    s->v[i] = v;
}

static void sel_init(sel *s, int64_t rel)
{
    memset(s, 0, sizeof(*s));
    s->rel = rel;
    s->chosen = 4242;
}

static void *sel_body(void *arg)
{
    sel *s = arg;
    atomic_store(&s->tid, (int)syscall(SYS_gettid));
    if (s->cancel_self)
        vt_fiber_cancel(vt_fiber_self());
    if (s->rel == INT64_MIN)
        s->deadline = now_any() - VT_MS(1);
    else if (s->rel < 0)
        s->deadline = VT_FOREVER;
    else if (s->rel == 0)
        s->deadline = VT_NOW;
    else
        s->deadline = vt_fiber_in() ? vt_fiber_deadline(s->rel) : vt_deadline_after(s->rel);
    atomic_store(&s->started, 1);
    vt_err e = s->trying ? vt_select_try(s->c, s->n, &s->chosen)
                         : vt_select(s->c, s->n, &s->chosen, s->deadline);
    s->end = now_any();
    atomic_store(&s->done, 1);
    return ERR_RET(e);
}

/* Waits until the parties p[i] running s[i] all wait in their selects, or
 * one has returned instead (its checks then say what went wrong). */
static void wait_selecting(vt_runtime *rt, const party *p, sel *s, int n)
{
    for (;;) {
        unsigned fibers = 0, threads = 0, sleeping = 0, started = 0;
        for (int i = 0; i < n; i++) {
            if (atomic_load(&s[i].done))
                return;
            started += atomic_load(&s[i].started) != 0;
            if (!p[i].thread)
                fibers++;
            else if (threads++,
                     atomic_load(&s[i].started) && thread_sleeping(atomic_load(&s[i].tid)))
                sleeping++;
        }
        if (started == (unsigned)n && sleeping == threads && fibers_waiting(rt, "select", NULL) >= fibers)
            return;
        nap();
    }
}

/* ---- Arguments --------------------------------------------------------------------------- */

VT_TEST(invalid_arguments)
{
    vt_chan *a = chan_of(4);
    VT_CHECK_NOT_NULL(a);
    for (uint64_t i = 0; i < 4; i++)
        VT_CHECK_OK(vt_chan_try_send(a, &i));
    uint64_t v[VT_SELECT_MAX + 1];
    vt_select_case c[VT_SELECT_MAX + 1];
    for (int trying = 0; trying < 2; trying++) {
        for (size_t i = 0; i <= VT_SELECT_MAX; i++)
            c[i] = (vt_select_case){a, VT_SELECT_RECV, &v[i]};
        size_t chosen = 4242;
#define SEL(cs, n, ch) \
    (trying ? vt_select_try((cs), (n), (ch)) : vt_select((cs), (n), (ch), VT_FOREVER))
        VT_CHECK_ERR(SEL(NULL, 1, &chosen), VT_EINVAL);
        VT_CHECK_ERR(SEL(c, 1, NULL), VT_EINVAL);
        VT_CHECK_ERR(SEL(c, 0, &chosen), VT_EINVAL);
        VT_CHECK_ERR(SEL(c, VT_SELECT_MAX + 1, &chosen), VT_EINVAL);
        VT_CHECK_ERR(SEL(c, SIZE_MAX, &chosen), VT_EINVAL);
        /* A bad case anywhere refuses the whole select, though others are
         * ready and come first. */
        const int bad_ops[] = {0, 3, -1, VT_SELECT_SEND | VT_SELECT_RECV};
        for (size_t b = 0; b < sizeof bad_ops / sizeof bad_ops[0]; b++)
            for (size_t at = 0; at < 3; at++) {
                c[at].op = bad_ops[b];
                VT_CHECK_ERR(SEL(c, 3, &chosen), VT_EINVAL);
                c[at].op = VT_SELECT_RECV;
            }
        for (size_t at = 0; at < 3; at++) {
            c[at].elem = NULL;
            VT_CHECK_ERR(SEL(c, 3, &chosen), VT_EINVAL);
            c[at].op = VT_SELECT_SEND;
            VT_CHECK_ERR(SEL(c, 3, &chosen), VT_EINVAL);
            c[at] = (vt_select_case){a, VT_SELECT_RECV, &v[at]};
        }
#undef SEL
        VT_CHECK_EQ(chosen, 4242);
        VT_CHECK_EQ(vt_chan_len(a), 4); /* nothing was taken */
    }
    /* VT_SELECT_MAX cases is the limit, not beyond it. */
    vt_chan *e = chan_of(4);
    VT_CHECK_NOT_NULL(e);
    for (int round = 0; round < 20; round++) {
        size_t ready = vt_test_rand() % VT_SELECT_MAX;
        for (size_t i = 0; i < VT_SELECT_MAX; i++)
            c[i] = (vt_select_case){i == ready ? a : e, VT_SELECT_RECV, &v[i]};
        size_t chosen = 4242;
        VT_CHECK_OK(vt_select(c, VT_SELECT_MAX, &chosen, VT_FOREVER));
        VT_CHECK_EQ(chosen, ready);
        VT_CHECK_OK(vt_chan_try_send(a, &v[ready]));
    }
    vt_chan_free(e);
    vt_chan_free(a);
}

/* ---- Disabled cases, the default case, deadlines ----------------------------------------- */

VT_TEST(disabled_cases_are_never_chosen)
{
    uint64_t v[4] = {0};
    vt_select_case off[3] = {{NULL, VT_SELECT_RECV, &v[0]},
                             {NULL, VT_SELECT_SEND, &v[1]},
                             {NULL, VT_SELECT_RECV, &v[2]}};
    size_t chosen = 4242;
    VT_CHECK_ERR(vt_select_try(off, 3, &chosen), VT_EAGAIN);
    VT_CHECK_ERR(vt_select(off, 3, &chosen, VT_NOW), VT_ETIMEDOUT);
    int64_t dl = vt_deadline_after(VT_MS(2));
    VT_CHECK_ERR(vt_select(off, 3, &chosen, dl), VT_ETIMEDOUT);
    VT_CHECK_GE(vt_now_ns(), dl);
    VT_CHECK_EQ(chosen, 4242);
    /* One enabled case among disabled ones, always it. */
    vt_chan *a = chan_of(VT_CHAN_UNBOUNDED);
    VT_CHECK_NOT_NULL(a);
    vt_select_case c[4] = {{NULL, VT_SELECT_RECV, &v[0]},
                           {NULL, VT_SELECT_SEND, &v[1]},
                           {a, VT_SELECT_RECV, &v[2]},
                           {NULL, VT_SELECT_RECV, &v[3]}};
    for (uint64_t i = 0; i < 200; i++) {
        VT_CHECK_OK(vt_chan_try_send(a, &i));
        chosen = 4242;
        VT_CHECK_OK(i % 2 ? vt_select(c, 4, &chosen, VT_FOREVER) : vt_select_try(c, 4, &chosen));
        VT_CHECK_EQ(chosen, 2);
        VT_CHECK_EQ(v[2], i);
    }
    vt_chan_free(a);
}

/* Cases that cannot complete: a receive on each empty kind, a send on a
 * full bounded channel and on a rendezvous channel nobody receives from. */
typedef struct blocked_set {
    vt_chan *ch[NCAPS + 3];
    size_t n;
} blocked_set;

static void blocked_set_make(blocked_set *b, sel *s)
{
    memset(b, 0, sizeof(*b));
    for (size_t k = 0; k < NCAPS; k++) {
        b->ch[b->n] = chan_of(caps[k]);
        sel_case(s, b->ch[b->n++], VT_SELECT_RECV, 0xaaaa);
    }
    b->ch[b->n] = full_chan(2);
    sel_case(s, b->ch[b->n++], VT_SELECT_SEND, 0xbbbb);
    b->ch[b->n] = full_chan(3);
    sel_case(s, b->ch[b->n++], VT_SELECT_SEND, 0xcccc);
    b->ch[b->n] = chan_of(0);
    sel_case(s, b->ch[b->n++], VT_SELECT_SEND, 0xdddd);
}

/* Nothing was done: elements untouched, full ones still full, empty ones
 * empty, nobody left waiting on the rendezvous channels. Leaves the set as
 * it found it. */
static void blocked_set_check(blocked_set *b, sel *s)
{
    for (size_t i = 0; i < b->n; i++) {
        VT_CHECK_NOT_NULL(b->ch[i]);
        uint64_t x;
        if (s->c[i].op == VT_SELECT_RECV) {
            VT_CHECK_EQ(s->v[i], 0xaaaa);
            VT_CHECK_EQ(vt_chan_len(b->ch[i]), 0);
            VT_CHECK_ERR(vt_chan_try_recv(b->ch[i], &x), VT_EAGAIN);
        } else {
            size_t cap = vt_chan_cap(b->ch[i]);
            VT_CHECK_EQ(vt_chan_len(b->ch[i]), cap);
            for (size_t k = 0; k < cap; k++) {
                VT_CHECK_OK(vt_chan_try_recv(b->ch[i], &x));
                VT_CHECK_EQ(x, 1000 + k);
            }
            VT_CHECK_ERR(vt_chan_try_recv(b->ch[i], &x), VT_EAGAIN);
            for (size_t k = 0; k < cap; k++)
                VT_CHECK_OK(vt_chan_try_send(b->ch[i], &(uint64_t){1000 + k}));
        }
        if (vt_chan_cap(b->ch[i]) == 0)
            VT_CHECK_ERR(vt_chan_try_send(b->ch[i], &x), VT_EAGAIN);
    }
}

static void blocked_set_free(blocked_set *b)
{
    for (size_t i = 0; i < b->n; i++)
        vt_chan_free(b->ch[i]);
}

VT_TEST(nothing_ready_try_and_deadlines)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    const int64_t rels[] = {-2 /* select_try */, 0, INT64_MIN, VT_MS(3)};
    for (int thread = 0; thread < 2; thread++)
        for (size_t d = 0; d < 4; d++) {
            sel s;
            blocked_set b;
            sel_init(&s, rels[d] == -2 ? VT_FOREVER : rels[d]);
            s.trying = rels[d] == -2;
            blocked_set_make(&b, &s);
            party p;
            VT_CHECK(party_start(&p, rt, thread, sel_body, &s));
            intptr_t r = party_join(&p);
            VT_CHECK_EQ(r, s.trying ? VT_EAGAIN : VT_ETIMEDOUT);
            VT_CHECK_EQ(s.chosen, 4242);
            if (!s.trying && s.deadline != VT_NOW)
                VT_CHECK_GE(s.end, s.deadline);
            blocked_set_check(&b, &s);
            blocked_set_free(&b);
        }
    vt_runtime_free(rt);
}

VT_TEST(cancel_ends_a_waiting_select)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    for (int deadline = 0; deadline < 2; deadline++) {
        sel s;
        blocked_set b;
        sel_init(&s, deadline ? VT_SEC(3600) : -1);
        blocked_set_make(&b, &s);
        party p;
        VT_CHECK(party_start(&p, rt, 0, sel_body, &s));
        wait_selecting(rt, &p, &s, 1);
        VT_CHECK_OK(vt_fiber_cancel(p.f));
        VT_CHECK_EQ(party_join(&p), VT_ECANCELED);
        VT_CHECK_EQ(s.chosen, 4242);
        blocked_set_check(&b, &s);
        blocked_set_free(&b);
    }
    /* Already cancelled: nothing ready is VT_ECANCELED for vt_select and
     * VT_EAGAIN for vt_select_try (it never waits); a ready case completes. */
    for (int trying = 0; trying < 2; trying++) {
        sel s;
        blocked_set b;
        sel_init(&s, -1);
        s.trying = trying;
        s.cancel_self = 1;
        blocked_set_make(&b, &s);
        party p;
        VT_CHECK(party_start(&p, rt, 0, sel_body, &s));
        VT_CHECK_EQ(party_join(&p), trying ? VT_EAGAIN : VT_ECANCELED);
        VT_CHECK_EQ(s.chosen, 4242);
        blocked_set_check(&b, &s);
        /* Make case 2 (bounded 3, empty) ready. */
        VT_CHECK_OK(vt_chan_try_send(b.ch[2], &(uint64_t){77}));
        VT_CHECK(party_start(&p, rt, 0, sel_body, &s));
        VT_CHECK_EQ(party_join(&p), VT_OK);
        VT_CHECK_EQ(s.chosen, 2);
        VT_CHECK_EQ(s.v[2], 77);
        s.v[2] = 0xaaaa;
        blocked_set_check(&b, &s);
        blocked_set_free(&b);
    }
    vt_runtime_free(rt);
}

/* ---- Which case completes ---------------------------------------------------------------- */

VT_TEST(send_and_receive_cases_mixed)
{
    vt_chan *a = chan_of(3), *b = full_chan(3), *r = chan_of(0), *u = chan_of(VT_CHAN_UNBOUNDED);
    VT_CHECK(a && b && r && u);
    uint64_t va = 0, vb = 55, vr = 0, vu = 0;
    vt_select_case c[4] = {{b, VT_SELECT_SEND, &vb},
                           {a, VT_SELECT_RECV, &va},
                           {r, VT_SELECT_RECV, &vr},
                           {u, VT_SELECT_RECV, &vu}};
    size_t chosen = 4242;
    VT_CHECK_ERR(vt_select_try(c, 4, &chosen), VT_EAGAIN);
    /* Only the receive on a is ready. */
    VT_CHECK_OK(vt_chan_try_send(a, &(uint64_t){9}));
    VT_CHECK_OK(vt_select(c, 4, &chosen, VT_FOREVER));
    VT_CHECK_EQ(chosen, 1);
    VT_CHECK_EQ(va, 9);
    VT_CHECK_EQ(vt_chan_len(a), 0);
    /* Only the send on b is ready (room for one). */
    uint64_t x;
    VT_CHECK_OK(vt_chan_try_recv(b, &x));
    VT_CHECK_EQ(x, 1000);
    VT_CHECK_OK(vt_select(c, 4, &chosen, VT_FOREVER));
    VT_CHECK_EQ(chosen, 0);
    VT_CHECK_EQ(vt_chan_len(b), 3);
    VT_CHECK_OK(vt_chan_try_recv(b, &x));
    VT_CHECK_OK(vt_chan_try_recv(b, &x));
    VT_CHECK_OK(vt_chan_try_recv(b, &x));
    VT_CHECK_EQ(x, 55); /* after 1001 and 1002 */
    /* Only the receive on u. */
    VT_CHECK_OK(vt_chan_try_send(u, &(uint64_t){31}));
    VT_CHECK_OK(vt_chan_try_send(b, &x));
    VT_CHECK_OK(vt_chan_try_send(b, &x));
    VT_CHECK_OK(vt_chan_try_send(b, &x));
    VT_CHECK_OK(vt_select_try(c, 4, &chosen));
    VT_CHECK_EQ(chosen, 3);
    VT_CHECK_EQ(vu, 31);
    /* A send on an unbounded channel is always ready. */
    uint64_t s = 8;
    vt_select_case d[2] = {{u, VT_SELECT_RECV, &vu}, {u, VT_SELECT_SEND, &s}};
    VT_CHECK_OK(vt_select_try(d, 2, &chosen));
    VT_CHECK_EQ(chosen, 1);
    VT_CHECK_EQ(vt_chan_len(u), 1);
    /* Both ready now: whichever it picks, it did exactly that. */
    for (int i = 0; i < 100; i++) {
        size_t before = vt_chan_len(u);
        VT_CHECK_OK(vt_select_try(d, 2, &chosen));
        VT_CHECK_EQ(vt_chan_len(u), chosen == 1 ? before + 1 : before - 1);
        if (vt_chan_len(u) == 0)
            VT_CHECK_OK(vt_chan_try_send(u, &s));
    }
    vt_chan_free(a);
    vt_chan_free(b);
    vt_chan_free(r);
    vt_chan_free(u);
}

/* The same bounded channel in two receive cases: either takes the next
 * element, in order. */
VT_TEST(one_channel_in_two_cases)
{
    vt_chan *a = chan_of(3);
    VT_CHECK_NOT_NULL(a);
    uint64_t v[2];
    vt_select_case c[2] = {{a, VT_SELECT_RECV, &v[0]}, {a, VT_SELECT_RECV, &v[1]}};
    long picked[2] = {0, 0};
    for (uint64_t i = 0; i < 400; i++) {
        VT_CHECK_OK(vt_chan_try_send(a, &i));
        size_t chosen = 4242;
        VT_CHECK_OK(vt_select(c, 2, &chosen, VT_FOREVER));
        VT_CHECK_LT(chosen, 2);
        VT_CHECK_EQ(v[chosen], i);
        picked[chosen]++;
    }
    VT_CHECK_GT(picked[0], 0);
    VT_CHECK_GT(picked[1], 0);
    vt_chan_free(a);
}

/* A select waiting on one case of each kind (plus cases that never become
 * ready) is woken by the partner of that case, which completes. */
VT_TEST(waiting_select_woken_by_each_kind)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_chan *never_r = chan_of(3), *never_s = full_chan(3);
    VT_CHECK(never_r && never_s);
    for (size_t k = 0; k < NCAPS; k++)
        for (int op = VT_SELECT_SEND; op <= VT_SELECT_RECV; op++)
            for (int thread = 0; thread < 2; thread++) {
                if (op == VT_SELECT_SEND && caps[k] == VT_CHAN_UNBOUNDED)
                    continue; /* never waits */
                vt_chan *ch = op == VT_SELECT_SEND ? full_chan(caps[k]) : chan_of(caps[k]);
                VT_CHECK_NOT_NULL(ch);
                sel s;
                sel_init(&s, -1);
                sel_case(&s, never_r, VT_SELECT_RECV, 0);
                sel_case(&s, ch, op, 606);
                sel_case(&s, never_s, VT_SELECT_SEND, 0);
                party p;
                VT_CHECK(party_start(&p, rt, thread, sel_body, &s));
                wait_selecting(rt, &p, &s, 1);
                uint64_t x = 707;
                if (op == VT_SELECT_SEND)
                    VT_CHECK_OK(vt_chan_recv(ch, &x, VT_FOREVER));
                else
                    VT_CHECK_OK(vt_chan_send(ch, &x, VT_FOREVER));
                intptr_t r = party_join(&p);
                if (r != VT_OK || s.chosen != 1)
                    printf("  %s %s, %s\n", op == VT_SELECT_SEND ? "send" : "recv",
                           cap_name(caps[k]), thread ? "thread" : "fiber");
                VT_CHECK_EQ(r, VT_OK);
                VT_CHECK_EQ(s.chosen, 1);
                if (op == VT_SELECT_RECV) {
                    VT_CHECK_EQ(s.v[1], 707);
                } else if (caps[k] == 0) {
                    VT_CHECK_EQ(x, 606);
                } else {
                    VT_CHECK_EQ(x, 1000);
                    for (size_t i = 1; i < caps[k]; i++)
                        VT_CHECK_OK(vt_chan_try_recv(ch, &x));
                    VT_CHECK_OK(vt_chan_try_recv(ch, &x));
                    VT_CHECK_EQ(x, 606);
                }
                VT_CHECK_EQ(vt_chan_len(never_r), 0);
                VT_CHECK_EQ(vt_chan_len(never_s), 3);
                vt_chan_free(ch);
            }
    vt_chan_free(never_r);
    vt_chan_free(never_s);
    vt_runtime_free(rt);
}

/* ---- Closed channels --------------------------------------------------------------------- */

VT_TEST(closed_channel_case_is_chosen)
{
    for (size_t k = 0; k < NCAPS; k++)
        for (int op = VT_SELECT_SEND; op <= VT_SELECT_RECV; op++) {
            sel s;
            blocked_set b;
            sel_init(&s, -1);
            blocked_set_make(&b, &s);
            vt_chan *ch = chan_of(caps[k]);
            VT_CHECK_NOT_NULL(ch);
            /* Buffered elements come first, then the end. */
            size_t buffered = (op == VT_SELECT_RECV && caps[k]) ? (caps[k] < 3 ? caps[k] : 3) : 0;
            for (uint64_t i = 0; i < buffered; i++)
                VT_CHECK_OK(vt_chan_try_send(ch, &(uint64_t){500 + i}));
            VT_CHECK_OK(vt_chan_close(ch));
            size_t at = vt_test_rand() % (s.n + 1);
            memmove(&s.c[at + 1], &s.c[at], (s.n - at) * sizeof s.c[0]);
            uint64_t v = 808;
            s.c[at] = (vt_select_case){ch, op, &v};
            s.n++;
            for (size_t i = 0; i <= buffered; i++) {
                size_t chosen = 4242;
                vt_err e = i % 2 ? vt_select(s.c, s.n, &chosen, VT_FOREVER)
                                 : vt_select_try(s.c, s.n, &chosen);
                VT_CHECK_EQ(chosen, at);
                if (i < buffered) {
                    VT_CHECK_OK(e);
                    VT_CHECK_EQ(v, 500 + i);
                } else {
                    VT_CHECK_ERR(e, VT_ECLOSED);
                }
            }
            /* The other cases were left alone. */
            memmove(&s.c[at], &s.c[at + 1], (s.n - at - 1) * sizeof s.c[0]);
            s.n--;
            blocked_set_check(&b, &s);
            blocked_set_free(&b);
            vt_chan_free(ch);
        }
}

VT_TEST(close_wakes_a_waiting_select)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    for (size_t k = 0; k < NCAPS; k++)
        for (int op = VT_SELECT_SEND; op <= VT_SELECT_RECV; op++)
            for (int thread = 0; thread < 2; thread++) {
                if (op == VT_SELECT_SEND && caps[k] == VT_CHAN_UNBOUNDED)
                    continue;
                sel s;
                blocked_set b;
                sel_init(&s, -1);
                blocked_set_make(&b, &s);
                vt_chan *ch = op == VT_SELECT_SEND ? full_chan(caps[k]) : chan_of(caps[k]);
                VT_CHECK_NOT_NULL(ch);
                sel_case(&s, ch, op, 909);
                party p;
                VT_CHECK(party_start(&p, rt, thread, sel_body, &s));
                wait_selecting(rt, &p, &s, 1);
                VT_CHECK_OK(vt_chan_close(ch));
                intptr_t r = party_join(&p);
                if (r != VT_ECLOSED || s.chosen != s.n - 1)
                    printf("  %s %s, %s\n", op == VT_SELECT_SEND ? "send" : "recv",
                           cap_name(caps[k]), thread ? "thread" : "fiber");
                VT_CHECK_EQ(r, VT_ECLOSED);
                VT_CHECK_EQ(s.chosen, s.n - 1);
                s.n--;
                blocked_set_check(&b, &s);
                blocked_set_free(&b);
                vt_chan_free(ch);
            }
    vt_runtime_free(rt);
}

/* vt_chan_free while a select waits on the channel: the select wakes with
 * that case and VT_ECLOSED; the channel's memory goes once the select is
 * out (the ASan build checks that nothing touches it after). */
VT_TEST(free_while_a_select_waits)
{
    long live = vt_test_alloc_live();
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_chan *never = chan_of(3);
    VT_CHECK_NOT_NULL(never);
    for (size_t k = 0; k < NCAPS; k++)
        for (int op = VT_SELECT_SEND; op <= VT_SELECT_RECV; op++)
            for (int alone = 0; alone < 2; alone++) {
                if (op == VT_SELECT_SEND && caps[k] == VT_CHAN_UNBOUNDED)
                    continue;
                vt_chan *ch = op == VT_SELECT_SEND ? full_chan(caps[k]) : chan_of(caps[k]);
                VT_CHECK_NOT_NULL(ch);
                sel s;
                sel_init(&s, -1);
                if (!alone)
                    sel_case(&s, never, VT_SELECT_RECV, 0);
                sel_case(&s, ch, op, 1);
                party p;
                VT_CHECK(party_start(&p, rt, 0, sel_body, &s));
                wait_selecting(rt, &p, &s, 1);
                vt_chan_free(ch);
                intptr_t r = party_join(&p);
                if (r != VT_ECLOSED)
                    printf("  %s %s%s\n", op == VT_SELECT_SEND ? "send" : "recv", cap_name(caps[k]),
                           alone ? ", alone" : "");
                VT_CHECK_EQ(r, VT_ECLOSED);
                VT_CHECK_EQ(s.chosen, s.n - 1);
            }
    vt_chan_free(never);
    vt_runtime_free(rt);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

/* The partner of a waiting select hands over and drops the last
 * reference at once; the select still returns what it got, and the
 * channel is freed once it is out. */
typedef struct hand_and_go {
    vt_chan *ch;
    int send;
    uint64_t v;
    vt_err err;
} hand_and_go;

static void *hand_and_go_body(void *arg)
{
    hand_and_go *h = arg;
    h->err =
        h->send ? vt_chan_send(h->ch, &h->v, VT_FOREVER) : vt_chan_recv(h->ch, &h->v, VT_FOREVER);
    vt_chan_free(h->ch);
    return NULL;
}

VT_TEST(partner_frees_after_handing_over_to_a_select)
{
    long live = vt_test_alloc_live();
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_chan *never = chan_of(3);
    VT_CHECK_NOT_NULL(never);
    for (size_t k = 0; k < NCAPS; k++)
        for (int op = VT_SELECT_SEND; op <= VT_SELECT_RECV; op++)
            for (int thread = 0; thread < 2; thread++) {
                if (op == VT_SELECT_SEND && caps[k] == VT_CHAN_UNBOUNDED)
                    continue;
                vt_chan *ch = op == VT_SELECT_SEND ? full_chan(caps[k]) : chan_of(caps[k]);
                VT_CHECK_NOT_NULL(ch);
                sel s;
                sel_init(&s, -1);
                sel_case(&s, never, VT_SELECT_RECV, 0);
                sel_case(&s, ch, op, 5150);
                party p, q;
                VT_CHECK(party_start(&p, rt, 0, sel_body, &s));
                wait_selecting(rt, &p, &s, 1);
                /* The select is in: the partner takes the creator's
                 * reference over and lets it go when done. */
                hand_and_go h = {ch, op == VT_SELECT_RECV, 6160, VT_OK};
                VT_CHECK(party_start(&q, rt, thread, hand_and_go_body, &h));
                party_join(&q);
                intptr_t r = party_join(&p);
                VT_CHECK_OK(h.err);
                VT_CHECK_EQ(s.chosen, 1);
                /* A bounded sender woken by the room made retries, and may
                 * find the close first: its element was then not sent. */
                if (op == VT_SELECT_SEND && caps[k] != 0 && r == VT_ECLOSED)
                    continue;
                VT_CHECK_EQ(r, VT_OK);
                if (op == VT_SELECT_RECV)
                    VT_CHECK_EQ(s.v[1], 6160);
                else
                    VT_CHECK_EQ(h.v, caps[k] ? 1000u : 5150u);
            }
    vt_chan_free(never);
    vt_runtime_free(rt);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

/* A select whose wait was just ended by a cancellation, and that has not
 * run yet, is still in its call: freeing its channels then must not pull
 * them from under it. One worker: the fiber that cancels and frees runs
 * on; the select gets to run only after the frees. */
typedef struct ctf {
    vt_chan *ch[2];
    vt_err sel_err, join_err;
} ctf;

static void *ctf_select(void *arg)
{
    ctf *c = arg;
    uint64_t v[2];
    vt_select_case cs[2] = {{c->ch[0], VT_SELECT_RECV, &v[0]}, {c->ch[1], VT_SELECT_SEND, &v[1]}};
    size_t chosen;
    return ERR_RET(vt_select(cs, 2, &chosen, VT_FOREVER));
}

static void *ctf_body(void *arg)
{
    ctf *c = arg;
    vt_fiber f;
    c->join_err = vt_fiber_spawn(&f, ctf_select, c);
    if (c->join_err)
        return NULL;
    while (fibers_waiting(vt_runtime_current(), "select", NULL) == 0)
        vt_fiber_yield();
    vt_fiber_cancel(f);
    vt_chan_free(c->ch[0]);
    vt_chan_free(c->ch[1]);
    void *r = NULL;
    c->join_err = vt_fiber_await(f, &r, VT_FOREVER);
    c->sel_err = (vt_err)(intptr_t)r;
    return NULL;
}

VT_TEST(free_after_a_select_was_cancelled)
{
    long live = vt_test_alloc_live();
    vt_runtime *rt = rt_new(1);
    VT_CHECK_NOT_NULL(rt);
    for (size_t k = 0; k < NCAPS; k++)
        for (size_t j = 0; j + 1 < NCAPS; j++) {
            ctf c = {{chan_of(caps[k]), full_chan(caps[j])}, VT_OK, VT_OK};
            VT_CHECK(c.ch[0] && c.ch[1]);
            party p;
            VT_CHECK(party_start(&p, rt, 0, ctf_body, &c));
            party_join(&p);
            VT_CHECK_OK(c.join_err);
            VT_CHECK_ERR(c.sel_err, VT_ECANCELED);
        }
    vt_runtime_free(rt);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

/* The last reference dropped (no close) while a select waits: it waits on
 * until its deadline, and the memory goes when it is out. */
VT_TEST(last_release_while_a_select_waits)
{
    long live = vt_test_alloc_live();
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    for (size_t k = 0; k < NCAPS; k++)
        for (int thread = 0; thread < 2; thread++) {
            vt_chan *a = chan_of(caps[k]), *b = full_chan(caps[NCAPS - 2 - k % 4]);
            VT_CHECK(a && b);
            sel s;
            sel_init(&s, VT_MS(2));
            sel_case(&s, a, VT_SELECT_RECV, 0);
            sel_case(&s, b, VT_SELECT_SEND, 0);
            party p;
            VT_CHECK(party_start(&p, rt, thread, sel_body, &s));
            wait_selecting(rt, &p, &s, 1);
            /* A thread may not be in yet (the probe can be early): only
             * a fiber's wait is sure to hold the channels. */
            if (!thread) {
                vt_chan_release(a);
                vt_chan_release(b);
            }
            VT_CHECK_EQ(party_join(&p), VT_ETIMEDOUT);
            if (thread) {
                vt_chan_release(a);
                vt_chan_release(b);
            }
        }
    vt_runtime_free(rt);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

/* ---- Fairness ---------------------------------------------------------------------------- */

/* With all n cases ready on every call, each is chosen about 1/n of the
 * time; the check is loose (at least half its share over thousands of
 * calls: many standard deviations from what a fair choice can produce). */
typedef struct fair_run {
    size_t n;
    int sends;
    long count[VT_SELECT_MAX];
    vt_err err;
} fair_run;

enum {
    FAIR_ROUNDS_PER_CASE = 2000
};

static void *fair_body(void *arg)
{
    fair_run *f = arg;
    vt_chan *ch[VT_SELECT_MAX];
    uint64_t v[VT_SELECT_MAX];
    vt_select_case c[VT_SELECT_MAX];
    for (size_t i = 0; i < f->n; i++) {
        /* Receives from bounded channels kept non-empty; sends into
         * unbounded ones (always ready), drained as they go. */
        vt_chan_new(&ch[i], sizeof(uint64_t), f->sends ? VT_CHAN_UNBOUNDED : 4, 0);
        v[i] = i;
        if (!f->sends)
            vt_chan_try_send(ch[i], &v[i]);
        c[i] = (vt_select_case){ch[i], f->sends ? VT_SELECT_SEND : VT_SELECT_RECV, &v[i]};
    }
    long rounds = (long)f->n * FAIR_ROUNDS_PER_CASE;
    for (long r = 0; r < rounds && !f->err; r++) {
        size_t chosen = SIZE_MAX;
        f->err = r % 2 ? vt_select(c, f->n, &chosen, VT_FOREVER) : vt_select_try(c, f->n, &chosen);
        if (f->err || chosen >= f->n) {
            f->err = f->err ? f->err : VT_ESTATE;
            break;
        }
        f->count[chosen]++;
        uint64_t x = chosen;
        f->err = f->sends ? vt_chan_try_recv(ch[chosen], &x) : vt_chan_try_send(ch[chosen], &x);
    }
    for (size_t i = 0; i < f->n; i++)
        vt_chan_free(ch[i]);
    return NULL;
}

VT_TEST(fair_choice_when_all_are_ready)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    const size_t ns[] = {2, 3, 5, 8};
    for (size_t z = 0; z < sizeof ns / sizeof ns[0]; z++)
        for (int sends = 0; sends < 2; sends++)
            for (int thread = 0; thread < 2; thread++) {
                fair_run f;
                memset(&f, 0, sizeof f);
                f.n = ns[z];
                f.sends = sends;
                party p;
                VT_CHECK(party_start(&p, rt, thread, fair_body, &f));
                party_join(&p);
                VT_CHECK_OK(f.err);
                long total = (long)f.n * FAIR_ROUNDS_PER_CASE;
                for (size_t i = 0; i < f.n; i++) {
                    if (f.count[i] < total / (2 * (long)f.n))
                        printf("  n %zu, %s, %s: case %zu chosen %ld times of %ld\n", f.n,
                               sends ? "sends" : "receives", thread ? "thread" : "fiber", i,
                               f.count[i], total);
                    VT_CHECK_GE(f.count[i], total / (2 * (long)f.n));
                }
            }
    vt_runtime_free(rt);
}

/* "When several are ready, the choice is uniformly random": also when the
 * ready cases sit among disabled or blocked ones. Two ready cases (first
 * and last) with six that cannot complete between them: each ready one
 * must get at least a quarter of the calls. */
VT_TEST(fair_choice_among_the_ready_ones)
{
    enum {
        ROUNDS = 8000
    };
    vt_chan *a = chan_of(4), *b = chan_of(4), *empty = chan_of(4);
    VT_CHECK(a && b && empty);
    VT_CHECK_OK(vt_chan_try_send(a, &(uint64_t){0}));
    VT_CHECK_OK(vt_chan_try_send(b, &(uint64_t){1}));
    for (int disabled = 0; disabled < 2; disabled++) {
        uint64_t v[8];
        vt_select_case c[8];
        for (int i = 0; i < 8; i++)
            c[i] = (vt_select_case){disabled ? NULL : empty, VT_SELECT_RECV, &v[i]};
        c[0].chan = a;
        c[7].chan = b;
        long count[8] = {0};
        for (int r = 0; r < ROUNDS; r++) {
            size_t chosen = 4242;
            VT_CHECK_OK(vt_select_try(c, 8, &chosen));
            VT_CHECK(chosen == 0 || chosen == 7);
            count[chosen]++;
            VT_CHECK_OK(vt_chan_try_send(c[chosen].chan, &v[chosen]));
        }
        printf("  %s between: case 0 chosen %ld, case 7 %ld times\n",
               disabled ? "disabled" : "blocked", count[0], count[7]);
        VT_CHECK_GE(count[0], ROUNDS / 4);
        VT_CHECK_GE(count[7], ROUNDS / 4);
    }
    vt_chan_free(a);
    vt_chan_free(b);
    vt_chan_free(empty);
}

/* ---- Rendezvous -------------------------------------------------------------------------- */

/* One side of a rendezvous stream of N values: plain calls, or selects
 * whose other cases never complete. */
typedef struct side {
    vt_chan *ch, *never_r, *never_s;
    int sender, selects;
    uint32_t n;
    uint32_t bad;
    vt_err err;
} side;

static void *side_body(void *arg)
{
    side *s = arg;
    for (uint32_t i = 0; i < s->n && !s->err; i++) {
        uint64_t v = s->sender ? 0xabc00000u + i : 0;
        if (s->selects) {
            uint64_t junk = 0;
            vt_select_case c[3] = {{s->never_r, VT_SELECT_RECV, &junk},
                                   {s->ch, s->sender ? VT_SELECT_SEND : VT_SELECT_RECV, &v},
                                   {s->never_s, VT_SELECT_SEND, &junk}};
            size_t chosen = 4242;
            s->err = vt_select(c, 3, &chosen, VT_FOREVER);
            if (!s->err && chosen != 1)
                s->bad++;
        } else {
            s->err = s->sender ? vt_chan_send(s->ch, &v, VT_FOREVER)
                               : vt_chan_recv(s->ch, &v, VT_FOREVER);
        }
        if (!s->err && !s->sender && v != 0xabc00000u + i)
            s->bad++;
    }
    return NULL;
}

VT_TEST(rendezvous_select_against_plain_and_select)
{
    enum {
        N = 300
    };
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_chan *never_r = chan_of(0), *never_s = chan_of(0);
    VT_CHECK(never_r && never_s);
    /* selects: bit 0 the sender selects, bit 1 the receiver. */
    for (int selects = 1; selects < 4; selects++)
        for (int mix = 0; mix < 4; mix++) {
            vt_chan *ch = chan_of(0);
            VT_CHECK_NOT_NULL(ch);
            side tx = {ch, never_r, never_s, 1, selects & 1, N, 0, VT_OK};
            side rx = {ch, never_r, never_s, 0, (selects >> 1) & 1, N, 0, VT_OK};
            party pt, pr;
            VT_CHECK(party_start(&pr, rt, mix & 1, side_body, &rx));
            VT_CHECK(party_start(&pt, rt, (mix >> 1) & 1, side_body, &tx));
            party_join(&pt);
            party_join(&pr);
            VT_CHECK_OK(tx.err);
            VT_CHECK_OK(rx.err);
            VT_CHECK_EQ(tx.bad, 0);
            VT_CHECK_EQ(rx.bad, 0);
            vt_chan_free(ch);
        }
    /* Nothing ever went through the never-ready channels. */
    uint64_t x;
    VT_CHECK_ERR(vt_chan_try_recv(never_r, &x), VT_EAGAIN);
    VT_CHECK_ERR(vt_chan_try_send(never_s, &x), VT_EAGAIN);
    vt_chan_free(never_r);
    vt_chan_free(never_s);
    vt_runtime_free(rt);
}

VT_TEST(select_never_meets_itself)
{
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    vt_chan *ch = chan_of(0);
    VT_CHECK_NOT_NULL(ch);
    const int64_t rels[] = {-2, 0, VT_MS(3)};
    for (int thread = 0; thread < 2; thread++)
        for (size_t d = 0; d < 3; d++) {
            sel s;
            sel_init(&s, rels[d] == -2 ? VT_FOREVER : rels[d]);
            s.trying = rels[d] == -2;
            sel_case(&s, ch, VT_SELECT_SEND, 1);
            sel_case(&s, ch, VT_SELECT_RECV, 2);
            sel_case(&s, ch, VT_SELECT_SEND, 3);
            party p;
            VT_CHECK(party_start(&p, rt, thread, sel_body, &s));
            VT_CHECK_EQ(party_join(&p), s.trying ? VT_EAGAIN : VT_ETIMEDOUT);
            VT_CHECK_EQ(s.chosen, 4242);
            VT_CHECK_EQ(s.v[1], 2);
        }
    /* Waiting with both cases, it meets a plain receiver with its send and
     * a plain sender with its receive. */
    for (int thread = 0; thread < 2; thread++)
        for (int partner_sends = 0; partner_sends < 2; partner_sends++) {
            sel s;
            sel_init(&s, -1);
            sel_case(&s, ch, VT_SELECT_SEND, 11);
            sel_case(&s, ch, VT_SELECT_RECV, 0);
            party p;
            VT_CHECK(party_start(&p, rt, thread, sel_body, &s));
            wait_selecting(rt, &p, &s, 1);
            uint64_t x = 22;
            VT_CHECK_OK(partner_sends ? vt_chan_send(ch, &x, VT_FOREVER)
                                      : vt_chan_recv(ch, &x, VT_FOREVER));
            VT_CHECK_EQ(party_join(&p), VT_OK);
            VT_CHECK_EQ(s.chosen, partner_sends ? 1u : 0u);
            VT_CHECK_EQ(partner_sends ? s.v[1] : x, partner_sends ? 22u : 11u);
        }
    vt_chan_free(ch);
    vt_runtime_free(rt);
}

/* Two parties, each selecting {send mine, receive} on one rendezvous
 * channel, round after round: each round pairs them, one sends and the
 * other receives what it sent; a select that met itself would complete a
 * round alone and the counts would part. */
typedef struct twin {
    vt_chan *ch;
    uint32_t id, rounds;
    uint32_t sent, got, foreign, bad;
    vt_err err;
} twin;

static void *twin_body(void *arg)
{
    twin *t = arg;
    for (uint32_t r = 0; r < t->rounds; r++) {
        uint64_t out = ((uint64_t)t->id << 32) | t->sent, in = 0;
        vt_select_case c[2] = {{t->ch, VT_SELECT_SEND, &out}, {t->ch, VT_SELECT_RECV, &in}};
        if (r % 2)
            c[0] = (vt_select_case){t->ch, VT_SELECT_RECV, &in},
            c[1] = (vt_select_case){t->ch, VT_SELECT_SEND, &out};
        size_t chosen = 4242;
        vt_err e = vt_select(c, 2, &chosen, VT_FOREVER);
        if (e) {
            t->err = e;
            return NULL;
        }
        if (chosen > 1) {
            t->bad++;
            continue;
        }
        if (c[chosen].op == VT_SELECT_SEND) {
            t->sent++;
        } else {
            t->foreign += (uint32_t)(in >> 32) == t->id;
            t->got++;
        }
    }
    return NULL;
}

VT_TEST(two_selects_on_both_sides_pair_up)
{
    enum {
        ROUNDS = 400
    };
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    for (int mix = 0; mix < 3; mix++) {
        vt_chan *ch = chan_of(0);
        VT_CHECK_NOT_NULL(ch);
        twin a = {ch, 1, ROUNDS, 0, 0, 0, 0, VT_OK}, b = {ch, 2, ROUNDS, 0, 0, 0, 0, VT_OK};
        party pa, pb;
        VT_CHECK(party_start(&pa, rt, mix == 1, twin_body, &a));
        VT_CHECK(party_start(&pb, rt, mix >= 1, twin_body, &b));
        /* When a is done, b's last round was paired with a's (a claimed
         * b or b claimed a): closing cannot take it from b. */
        party_join(&pa);
        VT_CHECK_OK(vt_chan_close(ch));
        party_join(&pb);
        vt_chan_free(ch);
        VT_CHECK_OK(a.err);
        VT_CHECK_OK(b.err);
        VT_CHECK_EQ(a.bad + b.bad, 0);
        VT_CHECK_EQ(a.foreign + b.foreign, 0);
        VT_CHECK_EQ(a.sent, b.got);
        VT_CHECK_EQ(b.sent, a.got);
        VT_CHECK_EQ(a.sent + a.got, ROUNDS);
        /* Both directions happened: the choice is random on both sides. */
        VT_CHECK_GT(a.sent, 0);
        VT_CHECK_GT(b.sent, 0);
    }
    vt_runtime_free(rt);
}

/* ---- No lost wake-up ------------------------------------------------------------------------
 * Selecting consumers over two small bounded channels, plain consumers on
 * each, producers on each. A select woken for one channel that takes
 * from the other must pass the wake-up on: else an element sits in a
 * channel while its consumers sleep, and the test never ends (the
 * harness's watchdog names it). The channels are closed only once every
 * element has been received. */
typedef struct lw {
    vt_chan *ch[2];
    uint32_t per_producer;
    _Atomic long received;
    _Atomic unsigned char *seen; /* [producer][n] */
} lw;

typedef struct lw_party {
    lw *w;
    int role;  /* 0 producer, 1 select consumer, 2 plain consumer */
    int which; /* producer: channel and id base; plain consumer: channel */
    uint32_t id;
    long got, bad;
    vt_err err;
} lw_party;

static void lw_note(lw_party *p, uint64_t v)
{
    uint32_t prod = (uint32_t)(v >> 32), n = (uint32_t)v;
    if (prod >= 4 || n >= p->w->per_producer) {
        p->bad++;
        return;
    }
    atomic_fetch_add(&p->w->seen[(size_t)prod * p->w->per_producer + n], 1);
    p->got++;
    atomic_fetch_add(&p->w->received, 1);
}

static void *lw_body(void *arg)
{
    lw_party *p = arg;
    lw *w = p->w;
    if (p->role == 0) {
        for (uint32_t n = 0; n < w->per_producer; n++) {
            uint64_t v = ((uint64_t)p->id << 32) | n;
            vt_err e = vt_chan_send(w->ch[p->which], &v, VT_FOREVER);
            if (e) {
                p->err = e;
                break;
            }
            if (n % 16 == 0)
                relax();
        }
        return NULL;
    }
    for (;;) {
        uint64_t v[2];
        vt_err e;
        if (p->role == 1) {
            vt_select_case c[2] = {{w->ch[0], VT_SELECT_RECV, &v[0]},
                                   {w->ch[1], VT_SELECT_RECV, &v[1]}};
            size_t chosen = 0;
            e = vt_select(c, 2, &chosen, VT_FOREVER);
            if (!e)
                v[0] = v[chosen];
        } else {
            e = vt_chan_recv(w->ch[p->which], &v[0], VT_FOREVER);
        }
        if (e == VT_ECLOSED)
            return NULL;
        if (e) {
            p->err = e;
            return NULL;
        }
        lw_note(p, v[0]);
    }
}

VT_TEST(no_lost_wakeup_between_select_and_plain_consumers)
{
    enum {
        PRODUCERS = 4,
        SELECTORS = 3,
        PLAIN = 4,
        N = 2000 / SAN_DIV
    };
    const size_t chan_caps[][2] = {{1, 1}, {3, 1}, {3, 2}};
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    _Atomic unsigned char *seen = calloc((size_t)PRODUCERS * N, 1);
    VT_CHECK_NOT_NULL(seen);
    for (size_t cc = 0; cc < sizeof chan_caps / sizeof chan_caps[0]; cc++)
        for (int mix = 0; mix < 3; mix++) {
            lw w;
            memset(&w, 0, sizeof w);
            w.per_producer = N;
            w.seen = seen;
            for (size_t i = 0; i < (size_t)PRODUCERS * N; i++)
                atomic_store(&seen[i], 0);
            w.ch[0] = chan_of(chan_caps[cc][0]);
            w.ch[1] = chan_of(chan_caps[cc][1]);
            VT_CHECK(w.ch[0] && w.ch[1]);
            enum {
                ALL = PRODUCERS + SELECTORS + PLAIN
            };
            lw_party lp[ALL];
            party p[ALL];
            int k = 0;
            for (int i = 0; i < SELECTORS; i++, k++)
                lp[k] = (lw_party){&w, 1, 0, 0, 0, 0, VT_OK};
            for (int i = 0; i < PLAIN; i++, k++)
                lp[k] = (lw_party){&w, 2, i % 2, 0, 0, 0, VT_OK};
            for (int i = 0; i < PRODUCERS; i++, k++)
                lp[k] = (lw_party){&w, 0, i % 2, (uint32_t)i, 0, 0, VT_OK};
            for (int i = 0; i < ALL; i++)
                VT_CHECK(party_start(&p[i], rt, is_thread_mix(mix, i), lw_body, &lp[i]));
            wait_for(&w.received, (long)PRODUCERS * N);
            VT_CHECK_OK(vt_chan_close(w.ch[0]));
            VT_CHECK_OK(vt_chan_close(w.ch[1]));
            for (int i = 0; i < ALL; i++)
                party_join(&p[i]);
            vt_chan_free(w.ch[0]);
            vt_chan_free(w.ch[1]);
            long sel_got = 0;
            for (int i = 0; i < ALL; i++) {
                VT_CHECK_OK(lp[i].err);
                VT_CHECK_EQ(lp[i].bad, 0);
                if (lp[i].role == 1)
                    sel_got += lp[i].got;
            }
            VT_CHECK_EQ(atomic_load(&w.received), (long)PRODUCERS * N);
            for (size_t i = 0; i < (size_t)PRODUCERS * N; i++)
                if (atomic_load(&seen[i]) != 1)
                    VT_CHECK_EQ(atomic_load(&seen[i]), 1);
            VT_CHECK_GT(sel_got, 0);
        }
    free((void *)seen);
    vt_runtime_free(rt);
}

/* The race that needs the pass-on, staged: a select waits first on two
 * channels, a plain consumer of each waits behind it; one element goes
 * into each channel. The first send wakes the select; the second finds the
 * select's other waiter already claimed and wakes the plain consumer of
 * its channel. If the select then takes that second element, the plain
 * consumer finds nothing and sleeps again, and the first element stays
 * unless the select passes its wake-up on to the other plain consumer.
 * Each consumer takes one element per round and then waits at its gate,
 * so no later call rescues the element: a lost wake-up hangs the round
 * (the harness's watchdog names the test). Fresh channels every round,
 * closed at its end to release the consumer that got nothing. */
typedef struct gate_msg {
    vt_chan *ch[2];
    int stop;
} gate_msg;

typedef struct staged {
    vt_chan *gate;
    int which; /* -1: select over both; else a plain consumer of ch[which] */
    _Atomic long *received, *back;
    long bad;
} staged;

static void *staged_consume(void *arg)
{
    staged *c = arg;
    for (;;) {
        gate_msg m;
        if (vt_chan_recv(c->gate, &m, VT_FOREVER) != VT_OK || m.stop)
            return NULL;
        uint64_t v[2];
        size_t chosen = 0;
        vt_err e;
        if (c->which < 0) {
            vt_select_case cs[2] = {{m.ch[0], VT_SELECT_RECV, &v[0]},
                                    {m.ch[1], VT_SELECT_RECV, &v[1]}};
            e = vt_select(cs, 2, &chosen, VT_FOREVER);
        } else {
            chosen = (size_t)c->which;
            e = vt_chan_recv(m.ch[chosen], &v[chosen], VT_FOREVER);
        }
        if (e == VT_OK && v[chosen] == chosen)
            atomic_fetch_add(c->received, 1);
        else if (e != VT_ECLOSED)
            c->bad++;
        atomic_fetch_add(c->back, 1);
    }
}

VT_TEST(woken_select_passes_the_wakeup_on)
{
    enum {
        ROUNDS = 600 / SAN_DIV
    };
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    _Atomic long received = 0, back = 0;
    staged c[3] = {{NULL, -1, &received, &back, 0},
                   {NULL, 0, &received, &back, 0},
                   {NULL, 1, &received, &back, 0}};
    party p[3];
    for (int i = 0; i < 3; i++) {
        VT_CHECK_OK(vt_chan_new(&c[i].gate, sizeof(gate_msg), 1, 0));
        VT_CHECK(party_start(&p[i], rt, 0, staged_consume, &c[i]));
    }
    for (long r = 0; r < ROUNDS; r++) {
        gate_msg m = {{chan_of(1), chan_of(r % 2 ? 1 : 3)}, 0};
        VT_CHECK(m.ch[0] && m.ch[1]);
        /* The select first in both queues, the plain consumers behind. */
        VT_CHECK_OK(vt_chan_send(c[0].gate, &m, VT_FOREVER));
        while (fibers_waiting(rt, "select", NULL) < 1)
            nap();
        VT_CHECK_OK(vt_chan_send(c[1].gate, &m, VT_FOREVER));
        VT_CHECK_OK(vt_chan_send(c[2].gate, &m, VT_FOREVER));
        while (fibers_waiting(rt, "chan recv", m.ch[0]) < 1 || fibers_waiting(rt, "chan recv", m.ch[1]) < 1)
            nap();
        int first = (int)(vt_test_rand() & 1);
        VT_CHECK_OK(vt_chan_send(m.ch[first], &(uint64_t){(uint64_t)first}, VT_FOREVER));
        VT_CHECK_OK(vt_chan_send(m.ch[!first], &(uint64_t){(uint64_t)!first}, VT_FOREVER));
        while (atomic_load(&received) < 2 * (r + 1))
            sched_yield();
        VT_CHECK_OK(vt_chan_close(m.ch[0]));
        VT_CHECK_OK(vt_chan_close(m.ch[1]));
        while (atomic_load(&back) < 3 * (r + 1))
            sched_yield();
        vt_chan_free(m.ch[0]);
        vt_chan_free(m.ch[1]);
    }
    gate_msg stop = {{NULL, NULL}, 1};
    for (int i = 0; i < 3; i++) {
        VT_CHECK_OK(vt_chan_send(c[i].gate, &stop, VT_FOREVER));
        party_join(&p[i]);
        vt_chan_free(c[i].gate);
        VT_CHECK_EQ(c[i].bad, 0);
    }
    VT_CHECK_EQ(atomic_load(&received), 2 * (long)ROUNDS);
    vt_runtime_free(rt);
}

/* ---- Deterministic mode ---------------------------------------------------------------------
 * Producers select-send over two bounded channels and a rendezvous one;
 * consumers select-receive over those and an unbounded one fed by a plain
 * sender, with deadlines that pass now and then, disabling each case as
 * its channel ends. Every step goes into a trace; the same seed must give
 * the same trace. Choices of the program itself come from a hash of
 * (fiber, step), never from the clock. */
typedef struct tev {
    uint32_t who, step;
    int32_t chosen, err;
    uint64_t value;
    int64_t now;
} tev;

#define TRACE_CAP 20000
static struct {
    tev *ev;
    size_t n;
    long errors;
    vt_chan *ch[4]; /* bounded 3, bounded 2, rendezvous, unbounded */
    long sent, received;
    unsigned char seen[8][64];
} T;

enum {
    T_PRODUCERS = 4,
    T_CONSUMERS = 3,
    T_PER_PRODUCER = 48
};

static void trace(uint32_t who, uint32_t step, size_t chosen, vt_err e, uint64_t value)
{
    if (T.n < TRACE_CAP)
        T.ev[T.n] = (tev){who, step, (int32_t)chosen, (int32_t)e, value, vt_fiber_now()};
    T.n++;
}

static uint64_t h2(uint64_t a, uint64_t b)
{
    return vt_hash_mix64(a * 0x9e3779b97f4a7c15ull + b + 1);
}

static void *t_producer(void *arg)
{
    uint32_t id = (uint32_t)P2U(arg);
    for (uint32_t n = 0; n < T_PER_PRODUCER; n++) {
        uint64_t v[3];
        vt_select_case c[3];
        for (int i = 0; i < 3; i++) {
            v[i] = ((uint64_t)id << 32) | n;
            c[i] = (vt_select_case){T.ch[i], VT_SELECT_SEND, &v[i]};
        }
        size_t chosen = 4242;
        vt_err e = vt_select(c, 3, &chosen, VT_FOREVER);
        trace(id, n, chosen, e, v[0]);
        if (e != VT_OK) {
            T.errors++;
            return NULL;
        }
        T.sent++;
        uint64_t h = h2(id, n);
        if (h % 4 == 0)
            vt_sleep_ns((int64_t)(h >> 40) % VT_US(300));
        else if (h % 4 == 1)
            vt_fiber_yield();
    }
    return NULL;
}

static void *t_feeder(void *arg)
{
    uint32_t id = (uint32_t)P2U(arg);
    for (uint32_t n = 0; n < T_PER_PRODUCER; n++) {
        uint64_t v = ((uint64_t)id << 32) | n;
        vt_err e = vt_chan_send(T.ch[3], &v, VT_FOREVER);
        trace(id, n, 3, e, v);
        if (e != VT_OK)
            T.errors++;
        T.sent++;
        vt_sleep_ns((int64_t)(h2(id, n) % (uint64_t)VT_US(200)));
    }
    return NULL;
}

static void *t_consumer(void *arg)
{
    uint32_t id = (uint32_t)P2U(arg);
    uint64_t v[4];
    vt_select_case c[4];
    for (int i = 0; i < 4; i++)
        c[i] = (vt_select_case){T.ch[i], VT_SELECT_RECV, &v[i]};
    int open = 4;
    for (uint32_t step = 0; open; step++) {
        size_t chosen = 4242;
        int64_t wait = (int64_t)(h2(id, step) % (uint64_t)VT_US(250));
        vt_err e = vt_select(c, 4, &chosen, vt_fiber_deadline(wait));
        trace(id, step, chosen, e, e == VT_OK ? v[chosen] : 0);
        if (e == VT_OK) {
            uint32_t p = (uint32_t)(v[chosen] >> 32), n = (uint32_t)v[chosen];
            if (p < 8 && n < 64)
                T.seen[p][n]++;
            else
                T.errors++;
            T.received++;
        } else if (e == VT_ECLOSED) {
            c[chosen].chan = NULL; /* that one has ended: turn its case off */
            open--;
        } else if (e != VT_ETIMEDOUT) {
            T.errors++;
            return NULL;
        }
    }
    return NULL;
}

static void *t_program(void *arg)
{
    (void)arg;
    vt_fiber prod[T_PRODUCERS + 1], cons[T_CONSUMERS];
    for (uint32_t i = 0; i < T_CONSUMERS; i++)
        if (vt_fiber_spawn(&cons[i], t_consumer, U2P(100 + i)) != VT_OK)
            T.errors++;
    for (uint32_t i = 0; i < T_PRODUCERS; i++)
        if (vt_fiber_spawn(&prod[i], t_producer, U2P(i)) != VT_OK)
            T.errors++;
    if (vt_fiber_spawn(&prod[T_PRODUCERS], t_feeder, U2P(T_PRODUCERS)) != VT_OK)
        T.errors++;
    for (uint32_t i = 0; i <= T_PRODUCERS; i++)
        if (vt_fiber_await(prod[i], NULL, VT_FOREVER) != VT_OK)
            T.errors++;
    for (int i = 0; i < 4; i++)
        if (vt_chan_close(T.ch[i]) != VT_OK)
            T.errors++;
    for (uint32_t i = 0; i < T_CONSUMERS; i++)
        if (vt_fiber_await(cons[i], NULL, VT_FOREVER) != VT_OK)
            T.errors++;
    return U2P(0xcafe);
}

/* Runs the program once with this seed; the trace stays in T. */
static int run_traced(uint64_t seed)
{
    free(T.ev);
    memset(&T, 0, sizeof T);
    T.ev = calloc(TRACE_CAP, sizeof(tev));
    const size_t tcaps[4] = {3, 2, 0, VT_CHAN_UNBOUNDED};
    for (int i = 0; i < 4; i++)
        T.ch[i] = chan_of(tcaps[i]);
    vt_runtime_opts o;
    vt_runtime_opts_init(&o);
    o.pool.deterministic = 1;
    o.pool.seed = seed;
    void *r = NULL;
    vt_err e = vt_runtime_main(&o, t_program, NULL, &r);
    for (int i = 0; i < 4; i++)
        vt_chan_free(T.ch[i]);
    int exact = 1;
    for (int p = 0; p <= T_PRODUCERS; p++)
        for (int n = 0; n < T_PER_PRODUCER; n++)
            exact &= T.seen[p][n] == 1;
    if (e != VT_OK || P2U(r) != 0xcafe || T.errors || !exact || T.n > TRACE_CAP)
        printf("  seed %llu: %s, %ld errors, exact %d, %zu events\n", (unsigned long long)seed,
               vt_errname(e), T.errors, exact, T.n);
    return T.ev && e == VT_OK && P2U(r) == 0xcafe && T.errors == 0 && exact && T.n <= TRACE_CAP &&
           T.received == T.sent && T.sent == (T_PRODUCERS + 1) * T_PER_PRODUCER;
}

VT_TEST(deterministic_mode_replays_the_trace)
{
    const uint64_t seeds[] = {vt_test_rand(), 0, 1, 0xdeadbeefULL};
    const size_t nseeds = SAN_DIV > 1 ? 2 : sizeof seeds / sizeof seeds[0];
    for (size_t s = 0; s < nseeds; s++) {
        VT_CHECK(run_traced(seeds[s]));
        size_t n0 = T.n;
        tev *first = malloc(n0 * sizeof(tev));
        VT_CHECK_NOT_NULL(first);
        memcpy(first, T.ev, n0 * sizeof(tev));
        /* Worth replaying: timeouts passed, and every case was chosen. */
        size_t timeouts = 0, per_case[4] = {0};
        for (size_t i = 0; i < n0; i++) {
            timeouts += first[i].err == VT_ETIMEDOUT;
            if (first[i].err == VT_OK && first[i].who >= 100 && first[i].chosen < 4)
                per_case[first[i].chosen]++;
        }
        int ok = run_traced(seeds[s]);
        int same = ok && T.n == n0 && memcmp(first, T.ev, n0 * sizeof(tev)) == 0;
        if (!same) {
            size_t i = 0;
            while (i < n0 && i < T.n && memcmp(&first[i], &T.ev[i], sizeof(tev)) == 0)
                i++;
            printf("  seed %llu: %zu events vs %zu, first difference at %zu\n",
                   (unsigned long long)seeds[s], n0, T.n, i);
        }
        free(first);
        VT_CHECK(same);
        VT_CHECK_GT(timeouts, 0);
        for (int c = 0; c < 4; c++)
            VT_CHECK_GT(per_case[c], 0);
    }
    free(T.ev);
    T.ev = NULL;
}

/* In deterministic mode a deadline is on the virtual clock: every kind of
 * wait that times out does so at its deadline exactly, without real
 * waiting. */
static struct {
    vt_chan *ch[4];
    int64_t late[16];
    vt_err err[16];
    int n;
} VD;

static void *virtual_deadlines(void *arg)
{
    (void)arg;
    uint64_t v = 0;
    for (int i = 0; i < 4; i++) {
        /* recv on each (empty) kind: rendezvous, bounded 1, bounded 3, unbounded */
        int64_t dl = vt_fiber_deadline(VT_SEC(5) + i);
        VD.err[VD.n] = vt_chan_recv(VD.ch[i], &v, dl);
        VD.late[VD.n++] = vt_fiber_now() - dl;
    }
    /* send on the rendezvous one, and on the bounded ones made full */
    for (int i = 0; i < 3; i++) {
        size_t cap = vt_chan_cap(VD.ch[i]);
        for (size_t k = 0; k < cap; k++)
            vt_chan_try_send(VD.ch[i], &v);
        int64_t dl = vt_fiber_deadline(VT_MS(250) * (i + 1));
        VD.err[VD.n] = vt_chan_send(VD.ch[i], &v, dl);
        VD.late[VD.n++] = vt_fiber_now() - dl;
    }
    /* a select over sends that cannot complete and a receive that cannot */
    uint64_t x[4] = {0};
    vt_select_case c[4] = {{VD.ch[0], VT_SELECT_SEND, &x[0]},
                           {VD.ch[1], VT_SELECT_SEND, &x[1]},
                           {VD.ch[2], VT_SELECT_SEND, &x[2]},
                           {VD.ch[3], VT_SELECT_RECV, &x[3]}};
    size_t chosen = 4242;
    int64_t dl = vt_fiber_deadline(VT_SEC(3600));
    VD.err[VD.n] = vt_select(c, 4, &chosen, dl);
    VD.late[VD.n++] = vt_fiber_now() - dl;
    return NULL;
}

VT_TEST(deterministic_deadlines_are_exact)
{
    memset(&VD, 0, sizeof VD);
    const size_t vcaps[4] = {0, 1, 3, VT_CHAN_UNBOUNDED};
    for (int i = 0; i < 4; i++)
        VT_CHECK_NOT_NULL(VD.ch[i] = chan_of(vcaps[i]));
    vt_runtime_opts o;
    vt_runtime_opts_init(&o);
    o.pool.deterministic = 1;
    o.pool.seed = vt_test_rand();
    int64_t real0 = vt_now_ns();
    vt_err e = vt_runtime_main(&o, virtual_deadlines, NULL, NULL);
    int64_t real = vt_now_ns() - real0;
    for (int i = 0; i < 4; i++)
        vt_chan_free(VD.ch[i]);
    VT_CHECK_OK(e);
    VT_CHECK_EQ(VD.n, 8);
    for (int i = 0; i < VD.n; i++) {
        VT_CHECK_ERR(VD.err[i], VT_ETIMEDOUT);
        VT_CHECK_EQ(VD.late[i], 0);
    }
    /* An hour of virtual waiting did not pass on the real clock. */
    VT_CHECK_LT(real, VT_SEC(3600));
}

/* A wait that nothing can ever end is a deadlock that the deterministic
 * runtime reports, for a plain call as for a select. */
static void *waits_for_ever(void *arg)
{
    vt_chan *ch = arg;
    uint64_t v;
    vt_select_case c[2] = {{ch, VT_SELECT_RECV, &v}, {NULL, VT_SELECT_SEND, &v}};
    size_t chosen;
    if (vt_chan_cap(ch) == 0)
        vt_select(c, 2, &chosen, VT_FOREVER);
    else
        vt_chan_recv(ch, &v, VT_FOREVER);
    return NULL;
}

VT_TEST(deterministic_deadlock_is_reported)
{
    for (int kind = 0; kind < 2; kind++) {
        vt_chan *ch = chan_of(kind ? 3 : 0);
        VT_CHECK_NOT_NULL(ch);
        vt_runtime_opts o;
        vt_runtime_opts_init(&o);
        o.pool.deterministic = 1;
        o.pool.seed = 7;
        vt_runtime *rt = NULL;
        VT_CHECK_OK(vt_runtime_new(&rt, &o));
        vt_fiber f;
        vt_fiber_opts fo = {.runtime = rt};
        VT_CHECK_OK(vt_fiber_spawn_ex(&f, waits_for_ever, ch, &fo));
        VT_CHECK_ERR(vt_runtime_drive(rt), VT_EBUSY);
        /* The close ends the wait; the fiber then finishes. */
        VT_CHECK_OK(vt_chan_close(ch));
        VT_CHECK_OK(vt_runtime_drive(rt));
        VT_CHECK_OK(vt_fiber_await(f, NULL, VT_NOW));
        vt_runtime_free(rt);
        vt_chan_free(ch);
    }
}
