/* stress_chan.c — channels and select under load, from fibers on runtimes
 * of 1, 2 and 8 workers and from plain threads at once: every kind
 * (rendezvous, bounded 1, 3 and 1024, unbounded) with every promise
 * (SPSC, MPSC, SPMC, MPMC), producers and consumers that mix blocking
 * calls, try_ calls and deadlines. Each element carries its producer, its
 * sequence number and a checksum; consumers check that each producer's
 * elements come in order, and the test that each arrived exactly once.
 * Close races sends (what a send returned VT_OK for is received), fibers
 * are cancelled in their calls, selects share channels with plain
 * consumers (no wake-up may be lost: the channels are closed only once
 * everything has arrived), and channels are freed while timeouts end the
 * waits of fibers in them.
 *
 * VT_TEST_STRESS=N multiplies the work; sanitizer builds divide it (TSan
 * runs this code an order of magnitude slower). No timing is checked. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vt_test.h"
#include "async_test.h"
#include "vitte/async.h"
#include "async/async_int.h"

#if defined(VT_SANITIZE_THREAD)
#define SCALE_DIV 25
#elif defined(VT_SANITIZE_ADDRESS)
#define SCALE_DIV 4
#else
#define SCALE_DIV 1
#endif

static uint32_t scaled(long n)
{
    long v = n * (long)vt_test_stress() / SCALE_DIV;
    return v < 2 ? 2 : (uint32_t)v;
}

static const unsigned worker_counts[] = {1, 2, 8};
#define NWORKER_COUNTS 3
static const size_t caps[] = {0, 1, 3, 1024, VT_CHAN_UNBOUNDED};
#define NCAPS 5
static const unsigned flag_sets[] = {VT_CHAN_SPSC, VT_CHAN_MPSC, VT_CHAN_SPMC, VT_CHAN_MPMC};
static const char *const flag_names[] = {"spsc", "mpsc", "spmc", "mpmc"};
#define NFLAGS 4
static const char *const mix_names[] = {"fibers", "threads", "fibers+threads"};

_Static_assert(VT_CHAN_MPMC == 0, "MPMC is the absence of promises: flags 0");

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

/* mix 0: all fibers, 1: all threads, 2: alternating. */
static int is_thread(int mix, int i)
{
    return mix == 2 ? i % 2 : mix;
}

/* Under TSan each combination runs with one mix of parties (in turn), not
 * all three: its cost there is in starting threads and fibers. */
static int mix_skipped(unsigned combination, int mix)
{
#if defined(VT_SANITIZE_THREAD)
    return (unsigned)mix != combination % 3;
#else
    (void)combination;
    (void)mix;
    return 0;
#endif
}

/* ---- Elements and their accounting ------------------------------------------------------- */

typedef struct item {
    uint32_t prod, seq;
    uint64_t check;
} item;

static uint64_t check_of(uint32_t prod, uint32_t seq)
{
    return vt_hash_mix64((((uint64_t)prod << 32) | seq) ^ 0x2545f4914f6cdd1dull);
}

/* One run's ledger: seen[p * per + s] counts the arrivals of (p, s). */
typedef struct ledger {
    uint32_t nprod, per;
    _Atomic unsigned char *seen;
    _Atomic long received;
    _Atomic long corrupt;  /* bad checksum or out of range */
    _Atomic long disorder; /* a producer's elements out of order at one consumer */
} ledger;

static int ledger_init(ledger *l, uint32_t nprod, uint32_t per)
{
    memset(l, 0, sizeof(*l));
    l->nprod = nprod;
    l->per = per;
    l->seen = calloc((size_t)nprod * per, 1);
    return l->seen != NULL;
}

static void ledger_free(ledger *l)
{
    free((void *)l->seen);
    l->seen = NULL;
}

/* last[p]: the consumer's last sequence number from p (UINT32_MAX: none). */
static void ledger_note(ledger *l, uint32_t *last, const item *it)
{
    if (it->prod >= l->nprod || it->seq >= l->per || it->check != check_of(it->prod, it->seq)) {
        atomic_fetch_add(&l->corrupt, 1);
        return;
    }
    if (last) {
        if (last[it->prod] != UINT32_MAX && it->seq <= last[it->prod])
            atomic_fetch_add(&l->disorder, 1);
        last[it->prod] = it->seq;
    }
    atomic_fetch_add(&l->seen[(size_t)it->prod * l->per + it->seq], 1);
    atomic_fetch_add(&l->received, 1);
}

/* Elements of producer p below sent[p] arrived once, the others never.
 * Returns the number of wrong entries (and prints the first). */
static long ledger_wrong(ledger *l, const uint32_t *sent)
{
    long wrong = 0;
    for (uint32_t p = 0; p < l->nprod; p++)
        for (uint32_t s = 0; s < l->per; s++) {
            unsigned want = s < sent[p], got = atomic_load(&l->seen[(size_t)p * l->per + s]);
            if (got != want && wrong++ == 0)
                printf("    producer %u element %u arrived %u times, not %u\n", p, s, got, want);
        }
    return wrong;
}

/* ---- Producers and consumers ------------------------------------------------------------- */

typedef struct actor {
    vt_chan *ch;
    ledger *l;
    uint32_t id;
    uint32_t count; /* producer: elements to send (UINT32_MAX: until the channel fails) */
    int victim;     /* cancelled while it works: blocking calls only */
    int patient;    /* consumer: blocking receives only */
    uint64_t rng;
    uint32_t sent; /* producer: sends that returned VT_OK */
    long got;
    vt_err end;     /* the error that ended it (VT_OK: it finished its count) */
    uint32_t *last; /* consumer: [nprod] */
    _Atomic int started;
} actor;

/* A deadline for one attempt: VT_NOW, a few microseconds away, or none. */
static int64_t some_deadline(uint64_t *rng)
{
    switch (vt__rand_below(rng, 6)) {
    case 0:
        return VT_NOW;
    case 1:
        return now_any() + (int64_t)vt__rand_below(rng, 30000);
    default:
        return VT_FOREVER;
    }
}

/* One element through, however long it takes; VT_OK or the error that
 * ended the actor. A failed try or a passed deadline tries again with a
 * new choice, so two sides in try mode cannot spin for ever. */
static vt_err attempt(actor *a, int send, item *it)
{
    for (;;) {
        vt_err e;
        int how = a->victim || a->patient ? 9 : (int)vt__rand_below(&a->rng, 10);
        if (how == 0) {
            e = send ? vt_chan_try_send(a->ch, it) : vt_chan_try_recv(a->ch, it);
        } else {
            int64_t dl = how < 4 ? some_deadline(&a->rng) : VT_FOREVER;
            e = send ? vt_chan_send(a->ch, it, dl) : vt_chan_recv(a->ch, it, dl);
        }
        if (e == VT_EAGAIN || e == VT_ETIMEDOUT) {
            relax();
            continue;
        }
        return e;
    }
}

static void *producer(void *arg)
{
    actor *a = arg;
    atomic_store(&a->started, 1);
    for (uint32_t s = 0; s < a->count; s++) {
        if (s >= a->l->per) {
            /* The ledger is full: wait for the close, which the next send
             * must see (an unbounded channel lets a producer run ahead). */
            while (!vt_chan_closed(a->ch))
                relax();
        }
        item it = {a->id, s, check_of(a->id, s)};
        vt_err e = attempt(a, 1, &it);
        if (e != VT_OK) {
            a->end = e;
            return NULL;
        }
        a->sent++;
    }
    return NULL;
}

static void *consumer(void *arg)
{
    actor *a = arg;
    atomic_store(&a->started, 1);
    for (;;) {
        item it;
        vt_err e = attempt(a, 0, &it);
        if (e != VT_OK) {
            a->end = e;
            return NULL;
        }
        ledger_note(a->l, a->last, &it);
        a->got++;
    }
}

/* ---- Exact delivery ---------------------------------------------------------------------- */

enum {
    MAXP = 4,
    MAXC = 3
};

typedef struct outcome {
    long wrong, corrupt, disorder, bad_end, received, sent;
} outcome;

/* Producers (count each) and consumers on one channel of the kind; close
 * once the producers are done, consumers drain it. */
static void exact_run(vt_runtime *rt, size_t cap, unsigned flags, int mix, uint32_t count,
                      outcome *o)
{
    memset(o, 0, sizeof(*o));
    int np = (flags & VT_CHAN_SINGLE_SENDER) ? 1 : MAXP;
    int nc = (flags & VT_CHAN_SINGLE_RECEIVER) ? 1 : MAXC;
    ledger l;
    vt_chan *ch = NULL;
    if (!ledger_init(&l, (uint32_t)np, count) ||
        vt_chan_new(&ch, sizeof(item), cap, flags) != VT_OK) {
        o->bad_end = 1;
        ledger_free(&l);
        return;
    }
    actor pa[MAXP], ca[MAXC];
    party pp[MAXP], pc[MAXC];
    uint32_t last[MAXC][MAXP];
    for (int i = 0; i < nc; i++) {
        for (int p = 0; p < MAXP; p++)
            last[i][p] = UINT32_MAX;
        ca[i] =
            (actor){.ch = ch, .l = &l, .id = (uint32_t)i, .rng = vt_test_rand(), .last = last[i]};
        if (!party_start(&pc[i], rt, is_thread(mix, i), consumer, &ca[i]))
            o->bad_end++;
    }
    for (int i = 0; i < np; i++) {
        pa[i] =
            (actor){.ch = ch, .l = &l, .id = (uint32_t)i, .count = count, .rng = vt_test_rand()};
        if (!party_start(&pp[i], rt, is_thread(mix, i + 1), producer, &pa[i]))
            o->bad_end++;
    }
    uint32_t sent[MAXP] = {0};
    for (int i = 0; i < np; i++) {
        party_join(&pp[i]);
        sent[i] = pa[i].sent;
        o->sent += pa[i].sent;
        o->bad_end += pa[i].end != VT_OK || pa[i].sent != count;
    }
    if (vt_chan_close(ch) != VT_OK)
        o->bad_end++;
    for (int i = 0; i < nc; i++) {
        party_join(&pc[i]);
        o->bad_end += ca[i].end != VT_ECLOSED;
    }
    vt_chan_free(ch);
    o->received = atomic_load(&l.received);
    o->corrupt = atomic_load(&l.corrupt);
    o->disorder = atomic_load(&l.disorder);
    o->wrong = ledger_wrong(&l, sent);
    ledger_free(&l);
}

VT_TEST(exact_delivery_every_kind_and_promise)
{
    uint32_t count = scaled(2000);
    for (int wi = 0; wi < NWORKER_COUNTS; wi++) {
        vt_runtime *rt = rt_new(worker_counts[wi]);
        VT_CHECK_NOT_NULL(rt);
        for (size_t k = 0; k < NCAPS; k++)
            for (int f = 0; f < NFLAGS; f++)
                for (int mix = 0; mix < 3; mix++) {
                    if (mix_skipped((unsigned)(wi + k + (size_t)f), mix))
                        continue;
                    outcome o;
                    exact_run(rt, caps[k], flag_sets[f], mix, count, &o);
                    if (o.wrong || o.corrupt || o.disorder || o.bad_end || o.received != o.sent)
                        printf("  %u workers, %s, %s, %s: %ld sent, %ld received, %ld wrong, %ld "
                               "corrupt, "
                               "%ld out of order, %ld bad ends\n",
                               worker_counts[wi], cap_name(caps[k]), flag_names[f], mix_names[mix],
                               o.sent, o.received, o.wrong, o.corrupt, o.disorder, o.bad_end);
                    VT_CHECK_EQ(o.bad_end, 0);
                    VT_CHECK_EQ(o.corrupt, 0);
                    VT_CHECK_EQ(o.disorder, 0);
                    VT_CHECK_EQ(o.wrong, 0);
                    VT_CHECK_EQ(o.received, o.sent);
                }
        vt_runtime_free(rt);
    }
}

/* ---- Close racing sends ------------------------------------------------------------------ */

/* Producers send until the channel fails them; the closer (the test
 * thread, or a fiber) closes once the consumers have seen some traffic.
 * Every send that returned VT_OK is received, exactly once. */
typedef struct closer {
    vt_chan *ch;
    ledger *l;
    long after;
    vt_err err;
} closer;

static void *closer_fiber(void *arg)
{
    closer *c = arg;
    while (atomic_load(&c->l->received) < c->after)
        vt_fiber_yield();
    c->err = vt_chan_close(c->ch);
    return NULL;
}

VT_TEST(close_races_sends)
{
    uint32_t limit = scaled(20000);
    for (int wi = 0; wi < NWORKER_COUNTS; wi++) {
        vt_runtime *rt = rt_new(worker_counts[wi]);
        VT_CHECK_NOT_NULL(rt);
        for (size_t k = 0; k < NCAPS; k++)
            for (int mix = 0; mix < 3; mix++)
                for (int by_fiber = 0; by_fiber < 2; by_fiber++) {
                    if (mix_skipped((unsigned)(wi + k + (size_t)by_fiber), mix))
                        continue;
                    ledger l;
                    vt_chan *ch;
                    VT_CHECK(ledger_init(&l, MAXP, limit));
                    VT_CHECK_OK(vt_chan_new(&ch, sizeof(item), caps[k], 0));
                    actor pa[MAXP], ca[2];
                    party pp[MAXP], pc[2], pcl;
                    uint32_t last[2][MAXP];
                    for (int i = 0; i < 2; i++) {
                        for (int p = 0; p < MAXP; p++)
                            last[i][p] = UINT32_MAX;
                        ca[i] = (actor){.ch = ch, .l = &l, .rng = vt_test_rand(), .last = last[i]};
                        VT_CHECK(party_start(&pc[i], rt, is_thread(mix, i), consumer, &ca[i]));
                    }
                    for (int i = 0; i < MAXP; i++) {
                        pa[i] = (actor){.ch = ch,
                                        .l = &l,
                                        .id = (uint32_t)i,
                                        .count = UINT32_MAX,
                                        .rng = vt_test_rand()};
                        VT_CHECK(party_start(&pp[i], rt, is_thread(mix, i + 1), producer, &pa[i]));
                    }
                    closer c = {ch, &l, 1 + (long)(vt_test_rand() % (limit / 4 + 1)), VT_OK};
                    if (by_fiber) {
                        VT_CHECK(party_start(&pcl, rt, 0, closer_fiber, &c));
                        party_join(&pcl);
                    } else {
                        wait_for(&l.received, c.after);
                        c.err = vt_chan_close(ch);
                    }
                    uint32_t sent[MAXP];
                    long nsent = 0, bad_end = c.err != VT_OK;
                    for (int i = 0; i < MAXP; i++) {
                        party_join(&pp[i]);
                        sent[i] = pa[i].sent;
                        nsent += pa[i].sent;
                        bad_end += pa[i].end != VT_ECLOSED;
                    }
                    for (int i = 0; i < 2; i++) {
                        party_join(&pc[i]);
                        bad_end += ca[i].end != VT_ECLOSED;
                    }
                    vt_chan_free(ch);
                    long wrong = ledger_wrong(&l, sent);
                    if (wrong || bad_end || l.corrupt || l.disorder || l.received != nsent)
                        printf("  %u workers, %s, %s, closed by a %s: %ld sent, %ld received, %ld "
                               "wrong\n",
                               worker_counts[wi], cap_name(caps[k]), mix_names[mix],
                               by_fiber ? "fiber" : "thread", nsent, atomic_load(&l.received),
                               wrong);
                    long corrupt = atomic_load(&l.corrupt), disorder = atomic_load(&l.disorder),
                         received = atomic_load(&l.received);
                    ledger_free(&l);
                    VT_CHECK_EQ(bad_end, 0);
                    VT_CHECK_EQ(corrupt, 0);
                    VT_CHECK_EQ(disorder, 0);
                    VT_CHECK_EQ(wrong, 0);
                    VT_CHECK_EQ(received, nsent);
                }
        vt_runtime_free(rt);
    }
}

/* ---- Cancellation under load ------------------------------------------------------------- */

/* Besides producers and consumers that run to the end, victim fibers on
 * both sides are cancelled in the middle of the traffic. A victim's
 * cancelled send sent nothing; what a victim received counts like any
 * other reception. */
VT_TEST(cancel_under_load)
{
    enum {
        NP = 2,
        NVP = 2,
        NC = 2,
        NVC = 2
    };
    uint32_t count = scaled(3000);
    for (int wi = 0; wi < NWORKER_COUNTS; wi++) {
        vt_runtime *rt = rt_new(worker_counts[wi]);
        VT_CHECK_NOT_NULL(rt);
        for (size_t k = 0; k < NCAPS; k++)
            for (int mix = 0; mix < 3; mix++) {
                if (mix_skipped((unsigned)(wi + k), mix))
                    continue;
                ledger l;
                vt_chan *ch;
                VT_CHECK(ledger_init(&l, NP + NVP, count));
                VT_CHECK_OK(vt_chan_new(&ch, sizeof(item), caps[k], 0));
                actor pa[NP + NVP], ca[NC + NVC];
                party pp[NP + NVP], pc[NC + NVC];
                uint32_t last[NC + NVC][NP + NVP];
                for (int i = 0; i < NC + NVC; i++) {
                    for (int p = 0; p < NP + NVP; p++)
                        last[i][p] = UINT32_MAX;
                    ca[i] = (actor){.ch = ch,
                                    .l = &l,
                                    .rng = vt_test_rand(),
                                    .last = last[i],
                                    .victim = i >= NC};
                    VT_CHECK(
                        party_start(&pc[i], rt, i < NC && is_thread(mix, i), consumer, &ca[i]));
                }
                for (int i = 0; i < NP + NVP; i++) {
                    pa[i] = (actor){.ch = ch,
                                    .l = &l,
                                    .id = (uint32_t)i,
                                    .count = count,
                                    .rng = vt_test_rand(),
                                    .victim = i >= NP};
                    VT_CHECK(
                        party_start(&pp[i], rt, i < NP && is_thread(mix, i + 1), producer, &pa[i]));
                }
                /* Cancel the victims one by one as the traffic goes on. */
                long step = (long)count / 4 + 1;
                for (int v = 0; v < NVP + NVC; v++) {
                    wait_for(&l.received, step * (v + 1));
                    party *victim = v < NVP ? &pp[NP + v] : &pc[NC + v - NVP];
                    VT_CHECK_OK(vt_fiber_cancel(victim->f));
                }
                uint32_t sent[NP + NVP];
                long nsent = 0, bad_end = 0;
                for (int i = 0; i < NP + NVP; i++) {
                    party_join(&pp[i]);
                    sent[i] = pa[i].sent;
                    nsent += pa[i].sent;
                    /* A victim ends on its cancellation, unless it had sent
                     * everything first. */
                    bad_end += i < NP ? pa[i].end != VT_OK
                                      : !(pa[i].end == VT_ECANCELED ||
                                          (pa[i].end == VT_OK && pa[i].sent == count));
                }
                VT_CHECK_OK(vt_chan_close(ch));
                for (int i = 0; i < NC + NVC; i++) {
                    party_join(&pc[i]);
                    /* A cancelled consumer that never had to wait again
                     * drains to the end like the others. */
                    bad_end += i < NC ? ca[i].end != VT_ECLOSED
                                      : !(ca[i].end == VT_ECANCELED || ca[i].end == VT_ECLOSED);
                }
                vt_chan_free(ch);
                long wrong = ledger_wrong(&l, sent);
                long corrupt = atomic_load(&l.corrupt), disorder = atomic_load(&l.disorder),
                     received = atomic_load(&l.received);
                if (wrong || bad_end || corrupt || disorder || received != nsent)
                    printf(
                        "  %u workers, %s, %s: %ld sent, %ld received, %ld wrong, %ld bad ends\n",
                        worker_counts[wi], cap_name(caps[k]), mix_names[mix], nsent, received,
                        wrong, bad_end);
                ledger_free(&l);
                VT_CHECK_EQ(bad_end, 0);
                VT_CHECK_EQ(corrupt, 0);
                VT_CHECK_EQ(disorder, 0);
                VT_CHECK_EQ(wrong, 0);
                VT_CHECK_EQ(received, nsent);
            }
        vt_runtime_free(rt);
    }
}

/* ---- Select among several channels ----------------------------------------------------------
 * Producers select-send over three channels (one plain producer too),
 * consumers select-receive over them beside a plain consumer per channel.
 * Consumers only ever wait without a deadline and the channels are closed
 * only once every element has arrived: a wake-up lost between a select
 * and the others leaves an element behind and the test hangs (the
 * harness's watchdog names it). After the close, select consumers turn
 * each ended channel's case off until none is left. */
enum {
    SEL_CH = 3,
    SEL_PROD = 4,
    SEL_SCONS = 3
};

typedef struct sel_world {
    vt_chan *ch[SEL_CH];
    ledger l;
} sel_world;

typedef struct sel_actor {
    sel_world *w;
    uint32_t id, count;
    int plain; /* producer: sends on ch[plain - 1] only; consumer: receives from it only */
    uint64_t rng;
    uint32_t sent;
    vt_err end;
    uint32_t last[SEL_CH][SEL_PROD];
    long bad;
} sel_actor;

static void *sel_producer(void *arg)
{
    sel_actor *a = arg;
    for (uint32_t s = 0; s < a->count; s++) {
        item it = {a->id, s, check_of(a->id, s)};
        vt_err e;
        if (a->plain) {
            e = vt_chan_send(a->w->ch[a->plain - 1], &it, VT_FOREVER);
        } else {
            for (;;) {
                item copy[SEL_CH];
                vt_select_case c[SEL_CH];
                for (int i = 0; i < SEL_CH; i++) {
                    copy[i] = it;
                    c[i] = (vt_select_case){a->w->ch[i], VT_SELECT_SEND, &copy[i]};
                }
                size_t chosen;
                unsigned how = vt__rand_below(&a->rng, 6);
                e = how == 0   ? vt_select_try(c, SEL_CH, &chosen)
                    : how == 1 ? vt_select(c, SEL_CH, &chosen, some_deadline(&a->rng))
                               : vt_select(c, SEL_CH, &chosen, VT_FOREVER);
                if (e == VT_EAGAIN || e == VT_ETIMEDOUT) {
                    relax();
                    continue;
                }
                if (e == VT_OK && chosen >= SEL_CH)
                    a->bad++;
                break;
            }
        }
        if (e != VT_OK) {
            a->end = e;
            return NULL;
        }
        a->sent++;
    }
    return NULL;
}

static void *sel_consumer(void *arg)
{
    sel_actor *a = arg;
    item v[SEL_CH];
    vt_select_case c[SEL_CH];
    for (int i = 0; i < SEL_CH; i++)
        c[i] = (vt_select_case){a->w->ch[i], VT_SELECT_RECV, &v[i]};
    int open = SEL_CH;
    while (open) {
        size_t chosen = SIZE_MAX;
        vt_err e;
        if (a->plain) {
            chosen = (size_t)a->plain - 1;
            e = vt_chan_recv(a->w->ch[chosen], &v[chosen], VT_FOREVER);
            if (e == VT_ECLOSED)
                break;
        } else {
            e = vt_select(c, SEL_CH, &chosen, VT_FOREVER);
            if (e == VT_ECLOSED && chosen < SEL_CH && c[chosen].chan) {
                c[chosen].chan = NULL;
                open--;
                continue;
            }
        }
        if (e != VT_OK || chosen >= SEL_CH) {
            a->end = e ? e : VT_ESTATE;
            return NULL;
        }
        ledger_note(&a->w->l, a->last[chosen], &v[chosen]);
    }
    a->end = VT_ECLOSED;
    return NULL;
}

VT_TEST(select_producers_and_consumers_over_three_channels)
{
    const size_t sets[][SEL_CH] = {
        {0, 3, VT_CHAN_UNBOUNDED}, {1, 1024, 0}, {3, 3, 1}, {0, 0, 0}, {1, 1, 1}};
    uint32_t count = scaled(2000);
    for (int wi = 0; wi < NWORKER_COUNTS; wi++) {
        vt_runtime *rt = rt_new(worker_counts[wi]);
        VT_CHECK_NOT_NULL(rt);
        for (size_t set = 0; set < sizeof sets / sizeof sets[0]; set++)
            for (int mix = 0; mix < 3; mix++) {
                if (mix_skipped((unsigned)(wi + set), mix))
                    continue;
                sel_world w;
                VT_CHECK(ledger_init(&w.l, SEL_PROD, count));
                for (int i = 0; i < SEL_CH; i++)
                    VT_CHECK_OK(vt_chan_new(&w.ch[i], sizeof(item), sets[set][i], 0));
                enum {
                    NA = SEL_PROD + SEL_SCONS + SEL_CH
                };
                sel_actor *a = calloc(NA, sizeof(sel_actor));
                party p[NA];
                VT_CHECK_NOT_NULL(a);
                for (int i = 0; i < NA; i++) {
                    a[i].w = &w;
                    a[i].rng = vt_test_rand();
                    for (int c = 0; c < SEL_CH; c++)
                        for (int q = 0; q < SEL_PROD; q++)
                            a[i].last[c][q] = UINT32_MAX;
                }
                /* Consumers first: SEL_SCONS selecting, then one plain per channel. */
                for (int i = 0; i < SEL_SCONS + SEL_CH; i++) {
                    a[i].plain = i < SEL_SCONS ? 0 : i - SEL_SCONS + 1;
                    VT_CHECK(party_start(&p[i], rt, is_thread(mix, i), sel_consumer, &a[i]));
                }
                for (int i = 0; i < SEL_PROD; i++) {
                    sel_actor *pa = &a[SEL_SCONS + SEL_CH + i];
                    pa->id = (uint32_t)i;
                    pa->count = count;
                    pa->plain = i == SEL_PROD - 1 ? 1 : 0; /* the last one sends on ch[0] only */
                    VT_CHECK(party_start(&p[SEL_SCONS + SEL_CH + i], rt, is_thread(mix, i + 1),
                                         sel_producer, pa));
                }
                wait_for(&w.l.received, (long)SEL_PROD * count);
                for (int i = 0; i < SEL_CH; i++)
                    VT_CHECK_OK(vt_chan_close(w.ch[i]));
                uint32_t sent[SEL_PROD];
                long bad = 0;
                for (int i = 0; i < NA; i++) {
                    party_join(&p[i]);
                    bad += a[i].bad;
                    if (i >= SEL_SCONS + SEL_CH) {
                        sent[i - SEL_SCONS - SEL_CH] = a[i].sent;
                        bad += a[i].end != VT_OK;
                    } else {
                        bad += a[i].end != VT_ECLOSED;
                    }
                }
                for (int i = 0; i < SEL_CH; i++)
                    vt_chan_free(w.ch[i]);
                long wrong = ledger_wrong(&w.l, sent);
                long corrupt = atomic_load(&w.l.corrupt), disorder = atomic_load(&w.l.disorder);
                if (wrong || bad || corrupt || disorder)
                    printf("  %u workers, channels %s/%s/%s, %s: %ld wrong, %ld bad, %ld corrupt, "
                           "%ld disorder\n",
                           worker_counts[wi], cap_name(sets[set][0]), cap_name(sets[set][1]),
                           cap_name(sets[set][2]), mix_names[mix], wrong, bad, corrupt, disorder);
                free(a);
                ledger_free(&w.l);
                VT_CHECK_EQ(bad, 0);
                VT_CHECK_EQ(corrupt, 0);
                VT_CHECK_EQ(disorder, 0);
                VT_CHECK_EQ(wrong, 0);
            }
        vt_runtime_free(rt);
    }
}

/* ---- Pairs of selects on one rendezvous channel ---------------------------------------------
 * Every party selects {send its next element, receive} on the same
 * rendezvous channel until it has sent all its elements: parties pair
 * up (never with themselves). Once every element has arrived the channel
 * is closed and the parties, now only receiving, see the end. */
typedef struct swap_party {
    vt_chan *ch;
    ledger *l;
    uint32_t id, count;
    uint32_t sent, self;
    uint32_t last[8];
    vt_err end;
} swap_party;

static void *swap_body(void *arg)
{
    swap_party *s = arg;
    for (;;) {
        item out = {s->id, s->sent, check_of(s->id, s->sent)}, in;
        vt_select_case c[2] = {{s->sent < s->count ? s->ch : NULL, VT_SELECT_SEND, &out},
                               {s->ch, VT_SELECT_RECV, &in}};
        size_t chosen = SIZE_MAX;
        vt_err e = vt_select(c, 2, &chosen, VT_FOREVER);
        if (e != VT_OK) {
            s->end = e;
            return NULL;
        }
        if (chosen == 0) {
            s->sent++;
        } else {
            s->self += in.prod == s->id;
            ledger_note(s->l, s->last, &in);
        }
    }
}

VT_TEST(selects_pair_up_on_a_rendezvous_channel)
{
    enum {
        N = 6
    };
    uint32_t count = scaled(1500);
    for (int wi = 0; wi < NWORKER_COUNTS; wi++) {
        vt_runtime *rt = rt_new(worker_counts[wi]);
        VT_CHECK_NOT_NULL(rt);
        for (int mix = 0; mix < 3; mix++) {
            if (mix_skipped((unsigned)wi, mix))
                continue;
            ledger l;
            vt_chan *ch;
            VT_CHECK(ledger_init(&l, N, count));
            VT_CHECK_OK(vt_chan_new(&ch, sizeof(item), 0, 0));
            swap_party s[N];
            party p[N];
            for (int i = 0; i < N; i++) {
                memset(&s[i], 0, sizeof s[i]);
                s[i].ch = ch;
                s[i].l = &l;
                s[i].id = (uint32_t)i;
                s[i].count = count;
                for (int q = 0; q < 8; q++)
                    s[i].last[q] = UINT32_MAX;
                VT_CHECK(party_start(&p[i], rt, is_thread(mix, i), swap_body, &s[i]));
            }
            wait_for(&l.received, (long)N * count);
            VT_CHECK_OK(vt_chan_close(ch));
            uint32_t sent[N];
            long bad = 0, self = 0;
            for (int i = 0; i < N; i++) {
                party_join(&p[i]);
                sent[i] = s[i].sent;
                bad += s[i].end != VT_ECLOSED || s[i].sent != count;
                self += s[i].self;
            }
            vt_chan_free(ch);
            long wrong = ledger_wrong(&l, sent);
            long corrupt = atomic_load(&l.corrupt), disorder = atomic_load(&l.disorder);
            ledger_free(&l);
            VT_CHECK_EQ(bad, 0);
            VT_CHECK_EQ(self, 0);
            VT_CHECK_EQ(corrupt, 0);
            VT_CHECK_EQ(disorder, 0);
            VT_CHECK_EQ(wrong, 0);
        }
        vt_runtime_free(rt);
    }
}

/* ---- Freeing a channel while timeouts end waits in it ---------------------------------------
 * Fibers each wait once in the channel (a receive, or a send on a full or
 * rendezvous channel) with a deadline a few microseconds away; as soon as
 * each is either waiting or done, the test frees the channel, so that
 * some deadlines pass while the close wakes the others (a canceller thread
 * adds cancellations to the race; party 0 waits without a deadline, so the
 * close ends at least its wait, however slow the build). Each call ends with VT_ETIMEDOUT,
 * VT_ECANCELED or VT_ECLOSED, and nothing touches the channel after its
 * memory went (the ASan build checks it). */
typedef struct fw {
    vt_chan *ch;
    int send;
    int64_t rel;
    vt_err err;
    _Atomic int done;
} fw;

static void *fw_body(void *arg)
{
    fw *f = arg;
    uint64_t v = 1;
    int64_t dl = vt_fiber_deadline(f->rel);
    f->err = f->send ? vt_chan_send(f->ch, &v, dl) : vt_chan_recv(f->ch, &v, dl);
    atomic_store(&f->done, 1);
    return NULL;
}

typedef struct canceller {
    party *p;
    int n;
    _Atomic int begun;
} canceller;

static void *cancel_thread(void *arg)
{
    canceller *c = arg;
    atomic_store(&c->begun, 1);
    for (int i = c->n - 1; i >= 0; i -= 2)
        vt_fiber_cancel(c->p[i].f);
    return NULL;
}

VT_TEST(free_races_timeouts_and_cancellation)
{
    enum {
        N = 8
    };
    const struct {
        size_t cap;
        int send;
    } kinds[] = {{0, 0}, {0, 1}, {3, 0}, {3, 1}, {1024, 0}, {VT_CHAN_UNBOUNDED, 0}};
    long live = vt_test_alloc_live();
    uint32_t rounds = scaled(60);
    vt_runtime *rt = rt_new(2);
    VT_CHECK_NOT_NULL(rt);
    long ends[3] = {0, 0, 0}, bad = 0;
    for (uint32_t r = 0; r < rounds; r++)
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
            vt_chan *ch;
            VT_CHECK_OK(vt_chan_new(&ch, sizeof(uint64_t), kinds[k].cap, 0));
            if (kinds[k].send)
                for (uint64_t i = 0; i < kinds[k].cap; i++)
                    VT_CHECK_OK(vt_chan_try_send(ch, &i));
            fw f[N];
            party p[N];
            for (int i = 0; i < N; i++) {
                /* Party 0 (never cancelled) has no deadline: whatever the
                 * timing, at least one wait is ended by the close. */
                int64_t rel = i == 0 ? -1 : 1 + (int64_t)(vt_test_rand() % (uint64_t)VT_US(300));
                f[i] = (fw){ch, kinds[k].send, rel, VT_OK, 0};
                VT_CHECK(party_start(&p[i], rt, 0, fw_body, &f[i]));
            }
            /* Only once each is in its call (or out of it) may the channel
             * go: a party blocked in a call keeps it alive. */
            const char *what = kinds[k].send ? "chan send" : "chan recv";
            for (;;) {
                unsigned done = 0;
                for (int i = 0; i < N; i++)
                    done += atomic_load(&f[i].done) != 0;
                if (done == N || fibers_waiting(rt, what, ch) + done >= N)
                    break;
                nap();
            }
            canceller c = {p, N, 0};
            pthread_t ct;
            int with_cancel = r % 2;
            if (with_cancel) {
                VT_CHECK(pthread_create(&ct, NULL, cancel_thread, &c) == 0);
                while (!atomic_load(&c.begun))
                    vt__cpu_relax(); /* no sleep: the cancellations should meet the close */
            }
            vt_chan_free(ch);
            if (with_cancel)
                pthread_join(ct, NULL);
            for (int i = 0; i < N; i++) {
                party_join(&p[i]);
                if (f[i].err == VT_ETIMEDOUT)
                    ends[0]++;
                else if (f[i].err == VT_ECLOSED)
                    ends[1]++;
                else if (f[i].err == VT_ECANCELED)
                    ends[2]++;
                else
                    bad++;
            }
        }
    vt_runtime_free(rt);
    printf("  %ld timed out, %ld closed, %ld cancelled\n", ends[0], ends[1], ends[2]);
    VT_CHECK_EQ(bad, 0);
    VT_CHECK_GT(ends[1], 0);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}
