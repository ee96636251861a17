/* Channels: four exchanges, each timed from the moment all its parties
 * have been started until the consumer has taken the last element, and
 * divided by the elements (round trips for the ping-pong). Elements are
 * 64-bit integers; the buffered channels hold 1024 of them.
 *
 *   chan_pingpong  two parties, two rendezvous (unbuffered) channels: one
 *                  sends i, the other answers i + 1; median_ns is per ROUND
 *                  TRIP (two hand-offs), as unit=round_trip says
 *   chan_spsc      one producer sends 0 .. N-1 into a buffered channel and
 *                  closes it, the consumer receives to the end (vitte:
 *                  VT_CHAN_SPSC); ns per message
 *   chan_mpsc4     four producers, one buffered channel (vitte:
 *                  VT_CHAN_MPSC), the last producer to finish closes it;
 *                  ns per message
 *   chan_select4   four producers, each with a buffered channel of its own
 *                  that it closes when done; the consumer selects over the
 *                  four receives (dropping a channel when it ends); ns per
 *                  message (vitte: each channel is VT_CHAN_SPSC, which it is)
 *
 * The consumer checks every element as it comes (producer p of P sends
 * i * P + p, so each producer's order is checked, and with select that it
 * came from p's channel), then the count and the sum: a wrong one fails the
 * case and the program exits non-zero.
 *
 * impls, and what threads=T means for each — the CPU budget of the run:
 *   vitte  fibers on a runtime of T workers (one runtime per T, shared by
 *          the four benchmarks); the consumer is the root fiber
 *   go     goroutines with GOMAXPROCS = T (the Go peer, one process per rep:
 *          bench/peers/async_go, same element type, capacities and checks)
 *   mutex  one OS thread per party, the queues a pthread mutex with
 *          condition variables (bench/peers/chan_mutex.c), every thread's
 *          affinity set to T CPUs: the parties outnumber the CPUs as fibers
 *          outnumber workers. chan_pingpong uses two queues of capacity 1
 *          (as each side waits for the answer, that is a rendezvous);
 *          chan_select4 four rings under one mutex, the consumer waiting on
 *          one condition variable for any of them.
 * parties= says how many fibers, goroutines or threads take part.
 *
 * Extras: cpu_ns (the process's CPU time per unit, every thread counted),
 * and for vitte switches_per_op (context switches per unit).
 *
 * n= is the count of a case's reps: 10M messages for chan_spsc and
 * chan_mpsc4, 4M for chan_select4 and 1M round trips for chan_pingpong with
 * vitte and go; for mutex, whose parties wake each other through the
 * kernel, 1M messages and 20k round trips, lest a rep last many seconds.
 *
 * --only NAME[,NAME...] runs just those benchmarks (for profiling);
 * --n-* and --mutex-n-* set the counts. */
#include "bench.h"

#include <stdatomic.h>

#include "../peers/async_peers.h"
#include "../peers/chan_mutex.h"
#include "async_bench.h"

#define CAP 1024
#define PRODUCERS 4 /* a power of two: the checks take p = v & (P - 1) */

enum {
    B_PINGPONG,
    B_SPSC,
    B_MPSC4,
    B_SELECT4,
    N_BENCHES
};

/* Elements (round trips) per rep: vitte and go, then mutex, whose threads
 * wake each other through the kernel, one to two orders of magnitude
 * slower: the same counts would make its reps last many seconds. */
static long counts[N_BENCHES] = {1000000, 10000000, 10000000, 4000000};
static long mutex_counts[N_BENCHES] = {20000, 1000000, 1000000, 1000000};

static const struct {
    const char *name;
    const char *unit;
    unsigned parties;
} benches[N_BENCHES] = {
    {"chan_pingpong", "round_trip", 2},
    {"chan_spsc", "message", 2},
    {"chan_mpsc4", "message", PRODUCERS + 1},
    {"chan_select4", "message", PRODUCERS + 1},
};

/* ---- vitte ---------------------------------------------------------------------------------- */

typedef struct chan_run chan_run;

typedef struct producer {
    chan_run *run;
    unsigned id;
    vt_err err;
    const char *what;
} producer;

struct chan_run {
    int bench;
    long n;
    vt_chan *ch[PRODUCERS]; /* ping-pong: ping, pong; spsc and mpsc4: one */
    atomic_uint live;       /* mpsc4: producers still sending */
    producer prod[PRODUCERS];
    vt_err err;
    const char *what;
    char why[160]; /* a wrong element */
    uint64_t count, sum;
    int64_t ns;
};

static void wrong(chan_run *r, uint64_t at, int64_t v, int64_t want)
{
    if (!r->why[0])
        snprintf(r->why, sizeof r->why, "element %llu is %lld, expected %lld", (unsigned long long)at,
                 (long long)v, (long long)want);
}

static void *ponger(void *arg)
{
    producer *p = arg;
    chan_run *r = p->run;
    int64_t v;
    vt_err e;
    while ((e = vt_chan_recv(r->ch[0], &v, VT_FOREVER)) == VT_OK) {
        v++;
        if ((e = vt_chan_send(r->ch[1], &v, VT_FOREVER)) != VT_OK) {
            p->what = "vt_chan_send";
            break;
        }
    }
    if (e != VT_ECLOSED) {
        p->err = e;
        p->what = p->what ? p->what : "vt_chan_recv";
    }
    return NULL;
}

static void *sender(void *arg)
{
    producer *p = arg;
    chan_run *r = p->run;
    int own = r->bench == B_SELECT4; /* a channel of its own */
    unsigned np = r->bench == B_SPSC ? 1 : PRODUCERS;
    vt_chan *ch = r->ch[own ? p->id : 0];
    long m = r->n / np;
    for (long i = 0; i < m; i++) {
        int64_t v = (int64_t)i * np + p->id;
        vt_err e = vt_chan_send(ch, &v, VT_FOREVER);
        if (e != VT_OK) {
            p->err = e;
            p->what = "vt_chan_send";
            break;
        }
    }
    if (own || np == 1 || atomic_fetch_sub(&r->live, 1) == 1)
        vt_chan_close(ch);
    return NULL;
}

static void pingpong(chan_run *r)
{
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < r->n; i++) {
        int64_t v = i;
        vt_err e = vt_chan_send(r->ch[0], &v, VT_FOREVER);
        if (e != VT_OK) {
            r->err = e;
            r->what = "vt_chan_send";
            break;
        }
        if ((e = vt_chan_recv(r->ch[1], &v, VT_FOREVER)) != VT_OK) {
            r->err = e;
            r->what = "vt_chan_recv";
            break;
        }
        if (v != i + 1)
            wrong(r, r->count, v, i + 1);
        r->count++;
        r->sum += (uint64_t)v;
    }
    r->ns = bench_now_ns() - t0;
}

static void receive_all(chan_run *r)
{
    vt_chan *ch = r->ch[0];
    unsigned mask = r->bench == B_SPSC ? 0 : PRODUCERS - 1;
    unsigned shift = r->bench == B_SPSC ? 0 : 2;
    int64_t next[PRODUCERS] = {0};
    uint64_t count = 0, sum = 0;
    int64_t t0 = bench_now_ns();
    for (;;) {
        int64_t v;
        vt_err e = vt_chan_recv(ch, &v, VT_FOREVER);
        if (e != VT_OK) {
            if (e != VT_ECLOSED) {
                r->err = e;
                r->what = "vt_chan_recv";
            }
            break;
        }
        unsigned p = (unsigned)v & mask;
        if (VT_UNLIKELY(v >> shift != next[p]))
            wrong(r, count, v, (next[p] << shift) + p);
        next[p]++;
        count++;
        sum += (uint64_t)v;
    }
    r->ns = bench_now_ns() - t0;
    r->count = count;
    r->sum = sum;
}

static void select_all(chan_run *r)
{
    vt_select_case cs[PRODUCERS];
    int64_t slot[PRODUCERS], next[PRODUCERS] = {0};
    for (unsigned k = 0; k < PRODUCERS; k++)
        cs[k] = (vt_select_case){.chan = r->ch[k], .op = VT_SELECT_RECV, .elem = &slot[k]};
    unsigned open = PRODUCERS;
    uint64_t count = 0, sum = 0;
    int64_t t0 = bench_now_ns();
    while (open) {
        size_t k;
        vt_err e = vt_select(cs, PRODUCERS, &k, VT_FOREVER);
        if (e == VT_ECLOSED) {
            cs[k].chan = NULL;
            open--;
            continue;
        }
        if (e != VT_OK) {
            r->err = e;
            r->what = "vt_select";
            break;
        }
        int64_t v = slot[k];
        if (VT_UNLIKELY((v & (PRODUCERS - 1)) != (int64_t)k || v >> 2 != next[k]))
            wrong(r, count, v, (next[k] << 2) + (int64_t)k);
        next[k]++;
        count++;
        sum += (uint64_t)v;
    }
    r->ns = bench_now_ns() - t0;
    r->count = count;
    r->sum = sum;
}

/* The consumer (the pinger): makes the channels, starts the other parties,
 * takes part, then closes everything so that no party is left waiting if
 * something went wrong, and awaits them. */
static void *chan_root(void *arg)
{
    chan_run *r = arg;
    unsigned nch = r->bench == B_PINGPONG ? 2 : r->bench == B_SELECT4 ? PRODUCERS : 1;
    unsigned nparties = benches[r->bench].parties - 1;
    unsigned flags = r->bench == B_MPSC4 ? VT_CHAN_MPSC : VT_CHAN_SPSC;
    size_t cap = r->bench == B_PINGPONG ? 0 : CAP;
    unsigned made = 0, spawned = 0;
    vt_fiber h[PRODUCERS];
    atomic_init(&r->live, PRODUCERS);
    for (; made < nch; made++) {
        r->err = vt_chan_new(&r->ch[made], sizeof(int64_t), cap, flags);
        if (r->err != VT_OK) {
            r->what = "vt_chan_new";
            goto out;
        }
    }
    for (; spawned < nparties; spawned++) {
        r->prod[spawned] = (producer){.run = r, .id = spawned};
        r->err = vt_fiber_spawn(&h[spawned], r->bench == B_PINGPONG ? ponger : sender,
                                &r->prod[spawned]);
        if (r->err != VT_OK) {
            r->what = "vt_fiber_spawn";
            goto out;
        }
    }
    if (r->bench == B_PINGPONG)
        pingpong(r);
    else if (r->bench == B_SELECT4)
        select_all(r);
    else
        receive_all(r);
out:
    for (unsigned k = 0; k < made; k++)
        (void)vt_chan_close(r->ch[k]); /* VT_ECLOSED when its producer did it */
    for (unsigned i = 0; i < spawned; i++) {
        vt_err e = vt_fiber_await(h[i], NULL, VT_FOREVER);
        if (e != VT_OK && r->err == VT_OK) {
            r->err = e;
            r->what = "vt_fiber_await";
        }
    }
    for (unsigned k = 0; k < made; k++)
        vt_chan_free(r->ch[k]);
    return NULL;
}

typedef struct chan_ctx {
    int bench;
    long n; /* elements (round trips) per rep */
    vt_runtime *rt;
    uint64_t reps, switches;
    cpu_samples cpu;
} chan_ctx;

/* The count and sum the consumer must see. */
static void expected(int bench, long n, uint64_t *count, uint64_t *sum)
{
    uint64_t m = (uint64_t)n;
    *count = m;
    *sum = bench == B_PINGPONG ? m * (m + 1) / 2 : m * (m - 1) / 2;
}

static int rep_vitte(bench_case *c, double *ns)
{
    chan_ctx *x = c->ctx;
    chan_run r = {.bench = x->bench, .n = x->n};
    vt_runtime_stats s0, s1;
    if (vt_runtime_stats_get(x->rt, &s0) != VT_OK)
        return bench_fail(c, "vt_runtime_stats_get failed");
    int64_t cpu0 = vt_process_cpu_ns();
    vt_err e = async_run_root(x->rt, chan_root, &r, NULL);
    int64_t cpu1 = vt_process_cpu_ns();
    if (e != VT_OK)
        return bench_fail(c, "root fiber: %s", vt_strerror(e));
    if (r.err != VT_OK)
        return bench_fail(c, "%s: %s", r.what, vt_strerror(r.err));
    for (unsigned i = 0; i < PRODUCERS; i++)
        if (r.prod[i].err != VT_OK)
            return bench_fail(c, "party %u: %s: %s", i + 1, r.prod[i].what, vt_strerror(r.prod[i].err));
    if (r.why[0])
        return bench_fail(c, "%s", r.why);
    uint64_t count, sum;
    expected(x->bench, r.n, &count, &sum);
    if (r.count != count || r.sum != sum)
        return bench_fail(c, "received %llu elements summing to %llu, expected %llu and %llu",
                          (unsigned long long)r.count, (unsigned long long)r.sum,
                          (unsigned long long)count, (unsigned long long)sum);
    if (vt_runtime_stats_get(x->rt, &s1) != VT_OK)
        return bench_fail(c, "vt_runtime_stats_get failed");
    if (!c->warmup) {
        x->reps++;
        x->switches += s1.switches - s0.switches;
    }
    *ns = (double)r.ns / (double)r.n;
    cpu_add(&x->cpu, c, (double)(cpu1 - cpu0) / (double)r.n);
    return 0;
}

/* ---- The peers ---------------------------------------------------------------------------------- */

#ifdef VT_HAVE_GO
static int rep_go(bench_case *c, double *ns)
{
    chan_ctx *x = c->ctx;
    return go_rep(c, benches[x->bench].name, x->n, &x->cpu, ns);
}
#endif

static int rep_mutex(bench_case *c, double *ns)
{
    chan_ctx *x = c->ctx;
    long n = x->n;
    peer_mq_result r;
    int64_t cpu0 = vt_process_cpu_ns();
    int st = x->bench == B_PINGPONG ? peer_mq_pingpong(n, c->threads, &r)
             : x->bench == B_SPSC   ? peer_mq_mpsc(n, 1, CAP, c->threads, &r)
             : x->bench == B_MPSC4  ? peer_mq_mpsc(n, PRODUCERS, CAP, c->threads, &r)
                                    : peer_mq_select(n, PRODUCERS, CAP, c->threads, &r);
    int64_t cpu1 = vt_process_cpu_ns();
    if (st != 0)
        return bench_fail(c, "%s", r.why);
    *ns = (double)r.ns / (double)n;
    cpu_add(&x->cpu, c, (double)(cpu1 - cpu0) / (double)n);
    return 0;
}

/* ---- main ------------------------------------------------------------------------------------------ */

enum {
    IMPL_VITTE,
    IMPL_GO,
    IMPL_MUTEX,
    N_IMPLS
};

static const bench_impl impls[N_IMPLS] = {
    {"vitte", 1},
#ifdef VT_HAVE_GO
    {"go", 1},
#else
    {"go", 0},
#endif
    {"mutex", 1},
};

static bench_case cases[BENCH_MAX_CASES];
static chan_ctx ctxs[BENCH_MAX_CASES];

/* Takes "--only NAME[,NAME...]" out of argv (bench_parse knows only
 * integer options) into on[]; every benchmark is on without it. */
static int take_only(int *argc, char **argv, int on[N_BENCHES])
{
    int j = 1, given = 0;
    for (int b = 0; b < N_BENCHES; b++)
        on[b] = 1;
    for (int i = 1; i < *argc; i++) {
        if (strcmp(argv[i], "--only") != 0) {
            argv[j++] = argv[i];
            continue;
        }
        if (i + 1 == *argc)
            return -1;
        if (!given)
            for (int b = 0; b < N_BENCHES; b++)
                on[b] = 0;
        given = 1;
        char buf[128];
        snprintf(buf, sizeof buf, "%s", argv[++i]);
        for (char *save, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            int b = 0;
            while (b < N_BENCHES && strcmp(benches[b].name, t))
                b++;
            if (b == N_BENCHES)
                return -1;
            on[b] = 1;
        }
    }
    *argc = j;
    argv[j] = NULL;
    return 0;
}

int main(int argc, char **argv)
{
    int on[N_BENCHES];
    if (take_only(&argc, argv, on) != 0) {
        fprintf(stderr, "%s: --only takes chan_pingpong, chan_spsc, chan_mpsc4, chan_select4\n",
                argv[0]);
        return 2;
    }
    const bench_opt opts[] = {
        {"--n-pingpong", &counts[B_PINGPONG], "chan_pingpong: round trips per rep"},
        {"--n-spsc", &counts[B_SPSC], "chan_spsc: messages per rep"},
        {"--n-mpsc", &counts[B_MPSC4], "chan_mpsc4: messages per rep (a multiple of 4)"},
        {"--n-select", &counts[B_SELECT4], "chan_select4: messages per rep (a multiple of 4)"},
        {"--mutex-n-pingpong", &mutex_counts[B_PINGPONG], "the same for impl=mutex"},
        {"--mutex-n-spsc", &mutex_counts[B_SPSC], "the same for impl=mutex"},
        {"--mutex-n-mpsc", &mutex_counts[B_MPSC4], "the same for impl=mutex"},
        {"--mutex-n-select", &mutex_counts[B_SELECT4], "the same for impl=mutex"},
        {NULL, NULL, NULL}};
    bench_args a;
    bench_parse(&a, argc, argv, impls, N_IMPLS, 1, opts);
    if (counts[B_MPSC4] % PRODUCERS || counts[B_SELECT4] % PRODUCERS ||
        mutex_counts[B_MPSC4] % PRODUCERS || mutex_counts[B_SELECT4] % PRODUCERS) {
        fprintf(stderr, "%s: the counts of mpsc and select must be multiples of %d\n", argv[0],
                PRODUCERS);
        return 2;
    }

    int nc = 0, status = 0;
    vt_runtime *rts[BENCH_MAX_THREADS] = {NULL};
    for (int t = 0; t < a.n_threads; t++) {
        unsigned th = a.threads[t];
        if (a.impl_on[IMPL_VITTE] && !(rts[t] = async_runtime_new(th)))
            status = 1;
        for (int b = 0; b < N_BENCHES; b++) {
            if (!on[b])
                continue;
            for (int i = 0; i < N_IMPLS; i++) {
                bench_rep_fn rep = NULL;
                if (!a.impl_on[i])
                    continue;
                if (i == IMPL_VITTE && rts[t])
                    rep = rep_vitte;
#ifdef VT_HAVE_GO
                if (i == IMPL_GO)
                    rep = rep_go;
#endif
                if (i == IMPL_MUTEX)
                    rep = rep_mutex;
                if (!rep)
                    continue;
                ctxs[nc] = (chan_ctx){.bench = b,
                                      .n = i == IMPL_MUTEX ? mutex_counts[b] : counts[b],
                                      .rt = i == IMPL_VITTE ? rts[t] : NULL};
                cases[nc] = (bench_case){.name = benches[b].name,
                                         .impl = impls[i].name,
                                         .threads = th,
                                         .rep = rep,
                                         .ctx = &ctxs[nc]};
                nc++;
            }
        }
    }

    bench_run(cases, nc, &a);
    for (int i = 0; i < nc; i++) {
        chan_ctx *x = cases[i].ctx;
        bench_extra(&cases[i], "unit=%s n=%ld parties=%u", benches[x->bench].unit, x->n,
                    benches[x->bench].parties);
        cpu_report(&cases[i], &x->cpu);
        if (x->reps)
            bench_extra(&cases[i], "switches_per_op=%.4f",
                        (double)x->switches / ((double)x->reps * (double)x->n));
    }
    status |= bench_report(cases, nc);
    for (int t = 0; t < a.n_threads; t++)
        vt_runtime_free(rts[t]);
    return status;
}
