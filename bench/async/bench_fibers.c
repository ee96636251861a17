/* What a blocked fiber costs in memory. N fibers (--fibers, 100,000) are
 * started and each blocks: it counts itself, then awaits one shared
 * future, as a server's connection fibers wait for their next request. The
 * process's resident memory (/proc/self/statm) is read before the first
 * spawn and once all N are blocked:
 *   bytes=      (RSS after - RSS before) / N, the median over the reps
 *   median_ns   per fiber, from the first spawn until all N are blocked
 *   spawn_ns=   per fiber, the spawn calls alone (median)
 * Then the future is set, every fiber is awaited and its result checked.
 * Each rep runs in a fresh child process (vitte: forked before any runtime
 * exists; go: the Go peer), so that RSS starts clean and no stack cache or
 * heap of an earlier rep is reused: the figures include the first touch of
 * every page, which on a virtual machine can cost far more than the spawn.
 *   name=fibers_100k_rss  interleaved reps, as every benchmark
 *   name=fibers_1m_live   once per impl, after them: --live fibers (1,000,000)
 *                         alive and blocked at once, to show that they fit
 *   impl=vitte  a runtime of one worker, default stacks (64 KiB reserved
 *               each, committed as touched; guard pages as the runtime
 *               places them), spawned by a root fiber
 *   impl=go     goroutines blocked receiving from one channel, GOMAXPROCS=1
 * --threads is accepted for bench/run and sets the workers / GOMAXPROCS. */
#include "bench.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <unistd.h>

#include "async_bench.h"

#include "../peers/async_peers.h"

static long n_fibers = 100000;
static long n_live = 1000000;

/* ---- The child process (vitte) ---------------------------------------------- */

typedef struct child_job {
    long n;
    unsigned workers;
} child_job;

typedef struct child_state {
    long n;
    vt_fiber *h;
    vt_future *fut;
    _Atomic long blocked;
    vt_err err;
    const char *what;
    int64_t rss_before, rss_after, t_spawn, t_ready;
    vt_runtime_stats stats;
} child_state;

/* Resident bytes of this process, or -1. */
static int64_t rss_bytes(void)
{
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t r = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (r <= 0)
        return -1;
    buf[r] = '\0';
    long size, resident;
    if (sscanf(buf, "%ld %ld", &size, &resident) != 2)
        return -1;
    return (int64_t)resident * (int64_t)sysconf(_SC_PAGESIZE);
}

static child_state *blocker_state;

static void *blocker(void *arg)
{
    child_state *s = blocker_state;
    void *v = NULL;
    atomic_fetch_add_explicit(&s->blocked, 1, memory_order_relaxed);
    vt_err e = vt_future_await(s->fut, &v, VT_FOREVER);
    if (e != VT_OK)
        return NULL;
    /* The future's value plus this fiber's argument: each result differs,
     * so a mixed-up handle shows. */
    return (void *)((uintptr_t)v + (uintptr_t)arg);
}

static void *child_root(void *arg)
{
    child_state *s = arg;
    long n = s->n, spawned = 0;
    s->rss_before = rss_bytes();
    int64_t t0 = bench_now_ns();
    for (; spawned < n; spawned++) {
        s->err = vt_fiber_spawn(&s->h[spawned], blocker, (void *)(uintptr_t)spawned);
        if (s->err != VT_OK) {
            s->what = "vt_fiber_spawn";
            break;
        }
    }
    int64_t t1 = bench_now_ns();
    /* Each yield puts the root behind the ready fibers: once all have
     * counted themselves, each has run up to its await and suspended. */
    while (s->err == VT_OK && atomic_load_explicit(&s->blocked, memory_order_relaxed) < n) {
        vt_err e = vt_fiber_yield();
        if (e != VT_OK) {
            s->err = e;
            s->what = "vt_fiber_yield";
        }
    }
    int64_t t2 = bench_now_ns();
    s->rss_after = rss_bytes();
    vt_runtime_stats_get(vt_runtime_current(), &s->stats);
    s->t_spawn = t1 - t0;
    s->t_ready = t2 - t0;
    vt_err e = vt_future_set(s->fut, (void *)(uintptr_t)1000);
    if (e != VT_OK && s->err == VT_OK) {
        s->err = e;
        s->what = "vt_future_set";
    }
    for (long i = 0; i < spawned; i++) {
        void *res = NULL;
        e = vt_fiber_await(s->h[i], &res, VT_FOREVER);
        if (e != VT_OK && s->err == VT_OK) {
            s->err = e;
            s->what = "vt_fiber_await";
        }
        if (e == VT_OK && (uintptr_t)res != 1000 + (uintptr_t)i && s->err == VT_OK) {
            s->err = VT_ESTATE;
            s->what = "a fiber's result";
        }
    }
    return NULL;
}

/* In the child: prints the line the parent parses, returns the exit status. */
static int child_vitte(void *arg, int fd)
{
    child_job *j = arg;
    FILE *out = fdopen(fd, "w");
    if (!out)
        return 1;
    child_state s = {.n = j->n};
    /* The handles are the caller's memory, not the fibers': touched before
     * the first reading. */
    s.h = malloc((size_t)j->n * sizeof *s.h);
    if (!s.h) {
        fprintf(stderr, "error: out of memory\n");
        return 1;
    }
    memset(s.h, 0, (size_t)j->n * sizeof *s.h);
    blocker_state = &s;
    vt_runtime *rt = async_runtime_new(j->workers);
    if (!rt)
        return 1;
    vt_err e = vt_future_new(&s.fut);
    if (e == VT_OK)
        e = async_run_root(rt, child_root, &s, NULL);
    if (e != VT_OK) {
        fprintf(stderr, "error: %s\n", vt_strerror(e));
        return 1;
    }
    if (s.err != VT_OK) {
        fprintf(stderr, "error: %s: %s\n", s.what, vt_strerror(s.err));
        return 1;
    }
    if (s.rss_before < 0 || s.rss_after < 0) {
        fprintf(stderr, "error: cannot read /proc/self/statm\n");
        return 1;
    }
    double n = (double)j->n;
    fprintf(out,
            "ns=%.3f spawn_ns=%.3f bytes=%.1f rss_before=%lld rss_after=%lld stacks=%llu "
            "stack_bytes=%llu guard_pages=%llu\n",
            (double)s.t_ready / n, (double)s.t_spawn / n, (double)(s.rss_after - s.rss_before) / n,
            (long long)s.rss_before, (long long)s.rss_after, (unsigned long long)s.stats.stacks,
            (unsigned long long)s.stats.stack_bytes, (unsigned long long)s.stats.guard_pages);
    fclose(out);
    vt_future_free(s.fut);
    vt_runtime_free(rt);
    free(s.h);
    return 0;
}

/* ---- The parent --------------------------------------------------------------- */

typedef struct fib_ctx {
    long n;
    double bytes[BENCH_MAX_REPS], spawn_ns[BENCH_MAX_REPS];
    int reps;
    char last[512]; /* the last child's line, for the counters */
} fib_ctx;

/* Records one child's line; the figure, or -1 after bench_fail. */
static int record(bench_case *c, const char *out, double *ns)
{
    fib_ctx *x = c->ctx;
    double bytes, spawn;
    if (peer_kv(out, "ns", ns) != 0 || peer_kv(out, "bytes", &bytes) != 0 ||
        peer_kv(out, "spawn_ns", &spawn) != 0)
        return bench_fail(c, "the child printed no ns=, bytes= or spawn_ns=: %s", out);
    if (!c->warmup && x->reps < BENCH_MAX_REPS) {
        x->bytes[x->reps] = bytes;
        x->spawn_ns[x->reps] = spawn;
        x->reps++;
    }
    snprintf(x->last, sizeof x->last, "%s", out);
    return 0;
}

static int rep_vitte(bench_case *c, double *ns)
{
    fib_ctx *x = c->ctx;
    child_job j = {.n = x->n, .workers = c->threads};
    char out[512], why[256];
    if (peer_fork_capture(child_vitte, &j, out, sizeof out, why, sizeof why) != 0)
        return bench_fail(c, "%s", why);
    return record(c, out, ns);
}

#ifdef VT_HAVE_GO
static int rep_go(bench_case *c, double *ns)
{
    fib_ctx *x = c->ctx;
    char out[512], why[256];
    if (peer_go_run("fibers", x->n, c->threads, out, sizeof out, why, sizeof why) != 0)
        return bench_fail(c, "Go peer: %s", why);
    return record(c, out, ns);
}
#endif

static void add_extras(bench_case *c)
{
    fib_ctx *x = c->ctx;
    if (!x->reps)
        return;
    char word[64];
    bench_extra(c, "bytes=%.0f spawn_ns=%.2f fibers=%ld", bench_median(x->bytes, x->reps),
                bench_median(x->spawn_ns, x->reps), x->n);
    static const char *const keys[] = {"stacks", "stack_bytes", "guard_pages", "go"};
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
        peer_kv_word(x->last, keys[k], word, sizeof word);
        if (word[0])
            bench_extra(c, "%s=%s", keys[k], word);
    }
}

enum {
    IMPL_VITTE,
    IMPL_GO,
    N_IMPLS
};

static const bench_impl impls[N_IMPLS] = {
    {"vitte", 1},
#ifdef VT_HAVE_GO
    {"go", 1},
#else
    {"go", 0},
#endif
};

static const bench_rep_fn rep_fns[N_IMPLS] = {
    rep_vitte,
#ifdef VT_HAVE_GO
    rep_go,
#else
    NULL,
#endif
};

static bench_case cases[BENCH_MAX_CASES], live[BENCH_MAX_CASES];
static fib_ctx ctxs[BENCH_MAX_CASES], live_ctxs[BENCH_MAX_CASES];

int main(int argc, char **argv)
{
    const bench_opt opts[] = {
        {"--fibers", &n_fibers, "blocked fibers per rep (name=fibers_100k_rss)"},
        {"--live", &n_live, "blocked fibers of the one-off check (name=fibers_1m_live)"},
        {NULL, NULL, NULL}};
    bench_args a;
    bench_parse(&a, argc, argv, impls, N_IMPLS, 1, opts);

    int nc = 0;
    for (int t = 0; t < a.n_threads; t++) {
        for (int k = 0; k < N_IMPLS; k++) {
            if (!a.impl_on[k])
                continue;
            ctxs[nc].n = n_fibers;
            live_ctxs[nc].n = n_live;
            cases[nc] = (bench_case){.name = "fibers_100k_rss",
                                     .impl = impls[k].name,
                                     .threads = a.threads[t],
                                     .rep = rep_fns[k],
                                     .ctx = &ctxs[nc]};
            live[nc] = (bench_case){.name = "fibers_1m_live",
                                    .impl = impls[k].name,
                                    .threads = a.threads[t],
                                    .rep = rep_fns[k],
                                    .ctx = &live_ctxs[nc]};
            nc++;
        }
    }

    bench_run(cases, nc, &a);
    for (int i = 0; i < nc; i++)
        add_extras(&cases[i]);
    int status = bench_report(cases, nc);

    /* One rep each, no warm-up: a check that they fit, with its figures. */
    for (int i = 0; i < nc; i++) {
        bench_case *c = &live[i];
        double ns;
        c->warmup = 0;
        c->n = 0;
        if (c->rep(c, &ns) == 0)
            c->samples[c->n++] = ns;
        add_extras(c);
        if (a.gap_ms)
            bench_sleep_ns((int64_t)a.gap_ms * 1000000);
    }
    status |= bench_report(live, nc);
    return status;
}
