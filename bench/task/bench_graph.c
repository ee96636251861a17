/* Task graphs of trivial tasks in Taskflow's benchmark shapes: what it costs
 * to build a graph, run it, run it again and free it, per task.
 *
 *   graph_chain  2^20 tasks, each after the one before
 *   graph_tree   2^20 - 1 tasks, a binary tree: each node before its two
 *                children
 *   graph_wave   a 1000 x 1000 wavefront: (i, j) after (i - 1, j) and
 *                (i, j - 1)
 *
 * The task numbering, the order in which tasks and edges are made (the
 * same in every impl) and the body — one increment of the task's own byte
 * through a volatile pointer — are those of bench/peers/graph_peers.h.
 * After every run each byte must have grown by exactly one: a task that
 * ran twice or not at all fails the case and the program exits non-zero.
 *
 * One repetition of a (shape, impl, threads) case does every phase in turn,
 * --gap-ms apart so that each starts from sleeping threads, and each phase
 * is a line of its own, phase=<phase>; median_ns is per task (per=task),
 * but for teardown, per whole graph (per=graph):
 *   build     vitte: vt_graph_new, vt_task_add (unnamed tasks) and
 *             vt_task_precede for every task and edge, vt_graph_validate;
 *             tbb: the flow::graph, a continue_node per task, make_edge
 *   run       the first run of the graph just built (vitte: vt_graph_run;
 *             tbb: try_put into the source, wait_for_all)
 *   rerun     the same graph run again
 *   teardown  vt_graph_free; tbb: the nodes, then the graph, destroyed
 * openmp (`omp task depend`) has only phase=run: OpenMP has no graph
 * object, its dependences exist only as the tasks are made while the
 * region runs, so build and run are one act, timed as one (from the
 * parallel region's start to its end), and nothing can be run again.
 *
 * threads=T: vitte runs on a runtime of T workers (the thread that calls
 * vt_graph_run waits); tbb in a task_arena of T slots, the calling thread in
 * one of them; openmp in a team of T threads, the calling thread among them.
 *
 *   store_overhead  vitte only: a 316 x 316 wavefront (99856 tasks) run with
 *                   a store attached (vt_store_open on a temporary file, a
 *                   fresh run id each time) and without, in turn, in each
 *                   repetition (which one goes first alternates); median_ns
 *                   is the median over repetitions of the extra ns per task
 *                   the store costs, plain_ns and store_ns the medians of
 *                   the two runs per task. The store's run is checked (every
 *                   task recorded, nothing restored) and forgotten after
 *                   each repetition, outside the timing, so each rep writes
 *                   into a store of the same size.
 *
 * Memory: freed memory stays in the process (no mmap'd blocks, no trimming
 * of glibc's heaps; see keep_heap), so that no phase pays page faults for
 * memory an earlier phase or impl gave back to the kernel — 13 us a fault
 * on this VM, more than some impls' whole work per task. --fresh-pages 1
 * leaves glibc's defaults. minflt= says how many faults a phase still took.
 *
 * Extras: tasks=; minflt= (page faults per repetition of the phase);
 * malloc_bytes_per_task on build lines (what malloc holds for the built
 * graph, measured at the warm-up; memory a runtime maps by itself, as
 * vitte's task blocks, is not in it); vitte's run and rerun lines, steals= and
 * parks= per run (the pool's counters); lines of T > 1 threads, vs_1thread=
 * (median / the same line's median on 1 thread).
 *
 * --only NAME[,NAME...] runs just those (graph_chain, graph_tree,
 * graph_wave, store_overhead); --tasks, --wave and --store-wave set the
 * sizes (the tree has tasks - 1 tasks); --fresh-pages 1, above. */
#include "bench.h"

#include <limits.h>
#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>

#include "vitte/task.h"

#include "../peers/graph_peers.h"
#include "../peers/peers.h"

enum {
    SHAPE_CHAIN,
    SHAPE_TREE,
    SHAPE_WAVE,
    N_SHAPES
};
#define ONLY_STORE N_SHAPES /* --only's index of store_overhead */

static const char *const shape_names[N_SHAPES + 1] = {"graph_chain", "graph_tree", "graph_wave",
                                                      "store_overhead"};

enum {
    PH_BUILD,
    PH_RUN,
    PH_RERUN,
    PH_TEARDOWN,
    N_PHASES
};

static const char *const phase_names[N_PHASES] = {"build", "run", "rerun", "teardown"};

enum {
    IMPL_VITTE,
    IMPL_TBB,
    IMPL_OPENMP,
    N_IMPLS
};

static const bench_impl impls[N_IMPLS] = {
    {"vitte", 1},
#ifdef VT_HAVE_TBB
    {"tbb", 1},
#else
    {"tbb", 0},
#endif
#ifdef VT_HAVE_OPENMP
    {"openmp", 1},
#else
    {"openmp", 0},
#endif
};

/* One (shape, impl, threads): the case bench_run interleaves with the
 * others, whose repetition fills the phase cases that are reported. */
typedef struct graph_ctx {
    const peer_graph_shape *shape;
    int impl;
    vt_runtime *rt;                  /* vitte */
    bench_case *phase[N_PHASES];     /* NULL: not measured by this impl */
    uint64_t reps, faults[N_PHASES]; /* over timed repetitions */
    uint64_t runs, steals, parks;    /* vitte: over timed runs and reruns */
    long heap_bytes;                 /* malloc's for the built graph, at the warm-up; -1 unknown */
} graph_ctx;

typedef struct store_ctx {
    vt_runtime *rt;
    double plain[BENCH_MAX_REPS], stored[BENCH_MAX_REPS]; /* ns per task */
    int n;
    unsigned round;
} store_ctx;

static peer_graph_shape shapes[N_SHAPES];
static peer_graph_shape store_shape;
static unsigned char *slots; /* one per task of the largest graph */
static vt_task **task_of;    /* vitte's build: the tasks made so far */
static int64_t gap_ns;

/* The store_overhead graph, built once and run by every store case. */
static vt_graph *store_graph;
static vt_store *store;
static char store_dir[64], store_path[96];
static unsigned store_runs;

#define MAX_DRIVERS (N_SHAPES * N_IMPLS * BENCH_MAX_THREADS + BENCH_MAX_THREADS)
#define MAX_LINES (N_SHAPES * N_IMPLS * N_PHASES * BENCH_MAX_THREADS)

static bench_case drivers[MAX_DRIVERS];
static graph_ctx graph_ctxs[MAX_DRIVERS];
static store_ctx store_ctxs[BENCH_MAX_THREADS];
static bench_case lines[MAX_LINES];
static int line_phase[MAX_LINES];

static void gap(void)
{
    if (gap_ns)
        bench_sleep_ns(gap_ns);
}

/* What malloc holds now, in bytes (-1 where glibc cannot say). */
static long heap_in_use(void)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
    struct mallinfo2 mi = mallinfo2();
    return (long)(mi.uordblks + mi.hblkhd);
#else
    return -1;
#endif
}

/* Page faults of the process so far: a phase that touches memory the
 * kernel has not handed out yet pays for it, ~13 us a page on this kind of
 * VM, which can outweigh the runtime's own work. */
static long minflt(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_minflt : 0;
}

/* The figures of one repetition of a graph case. */
typedef struct rep_figs {
    double ns[N_PHASES];
    long faults[N_PHASES];
    int64_t t0;
    long f0;
} rep_figs;

static void phase_start(rep_figs *r)
{
    r->f0 = minflt();
    r->t0 = bench_now_ns();
}

static void phase_stop(rep_figs *r, int phase)
{
    int64_t t1 = bench_now_ns();
    r->ns[phase] = (double)(t1 - r->t0);
    r->faults[phase] = minflt() - r->f0;
}

/* Hands the phases this impl measures to their lines (per task but for
 * teardown) and returns the whole repetition's time. */
static double record(bench_case *c, const rep_figs *r)
{
    graph_ctx *x = c->ctx;
    const double n = (double)peer_graph_tasks(x->shape);
    double total = 0;
    for (int ph = 0; ph < N_PHASES; ph++) {
        bench_case *p = x->phase[ph];
        if (!p)
            continue;
        total += r->ns[ph];
        if (c->warmup)
            continue;
        p->samples[p->n++] = ph == PH_TEARDOWN ? r->ns[ph] : r->ns[ph] / n;
        x->faults[ph] += (uint64_t)r->faults[ph];
    }
    if (!c->warmup)
        x->reps++;
    return total;
}

/* Every slot of the first n must hold want: each task ran once per run. */
static int check_slots(bench_case *c, size_t n, unsigned want, const char *phase)
{
    for (size_t k = 0; k < n; k++)
        if (slots[k] != want)
            return bench_fail(c, "after %s: task %zu ran %d times in all, expected %u", phase, k,
                              slots[k], want);
    return 0;
}

static vt_err bump(vt_task_ctx *ctx, void *data)
{
    (void)ctx;
    volatile unsigned char *slot = data;
    *slot = (unsigned char)(*slot + 1);
    return VT_OK;
}

/* Builds s into a new graph, validated; NULL after bench_fail. */
static vt_graph *vitte_build(bench_case *c, const peer_graph_shape *s)
{
    vt_graph *g;
    vt_err e = vt_graph_new(&g, c->name);
    if (e != VT_OK) {
        bench_fail(c, "vt_graph_new: %s", vt_strerror(e));
        return NULL;
    }
    const size_t n = peer_graph_tasks(s), cols = s->cols;
    vt_task **t = task_of;
    for (size_t k = 0; k < n; k++) {
        if (!(t[k] = vt_task_add(g, NULL, bump, &slots[k])))
            goto failed; /* validate returns the error, as the header says */
        switch (s->kind) {
        case PEER_GRAPH_CHAIN:
            e = k > 0 ? vt_task_precede(t[k - 1], t[k]) : VT_OK;
            break;
        case PEER_GRAPH_TREE:
            e = k > 0 ? vt_task_precede(t[(k - 1) / 2], t[k]) : VT_OK;
            break;
        case PEER_GRAPH_WAVE:
            e = k >= cols ? vt_task_precede(t[k - cols], t[k]) : VT_OK;
            if (e == VT_OK && k % cols)
                e = vt_task_precede(t[k - 1], t[k]);
            break;
        }
        if (e != VT_OK)
            goto failed;
    }
failed:
    e = vt_graph_validate(g);
    if (e != VT_OK) {
        bench_fail(c, "building: %s (%s)", vt_strerror(e), vt_graph_error(g));
        vt_graph_free(g);
        return NULL;
    }
    if (vt_graph_size(g) != n) {
        bench_fail(c, "the graph has %zu tasks, %zu were added", vt_graph_size(g), n);
        vt_graph_free(g);
        return NULL;
    }
    return g;
}

/* One run of g, timed into r->ns[phase] and checked: every task
 * succeeded, and ran once more (slots at want). */
static int vitte_run(bench_case *c, vt_graph *g, vt_runtime *rt, const vt_run_opts *o,
                     unsigned want, const char *what, rep_figs *r, int phase)
{
    const size_t n = vt_graph_size(g);
    phase_start(r);
    vt_err e = vt_graph_run(g, rt, o);
    phase_stop(r, phase);
    if (e != VT_OK)
        return bench_fail(c, "%s: vt_graph_run: %s (%s)", what, vt_strerror(e), vt_graph_error(g));
    vt_run_summary sum;
    if ((e = vt_graph_summary(g, &sum)) != VT_OK)
        return bench_fail(c, "%s: vt_graph_summary: %s", what, vt_strerror(e));
    if (sum.total != n || sum.succeeded != n || sum.restored != 0)
        return bench_fail(c, "%s: %zu tasks, %zu succeeded, %zu restored; expected %zu, %zu, 0",
                          what, sum.total, sum.succeeded, sum.restored, n, n);
    return check_slots(c, n, want, what);
}

static int rep_vitte(bench_case *c, double *ns)
{
    graph_ctx *x = c->ctx;
    const size_t n = peer_graph_tasks(x->shape);
    vt_pool *pool = vt_runtime_pool(x->rt);
    rep_figs r;
    memset(slots, 0, n);

    long heap0 = c->warmup ? heap_in_use() : -1;
    phase_start(&r);
    vt_graph *g = vitte_build(c, x->shape);
    phase_stop(&r, PH_BUILD);
    if (!g)
        return -1;
    if (heap0 >= 0)
        x->heap_bytes = heap_in_use() - heap0;

    for (int ph = PH_RUN; ph <= PH_RERUN; ph++) {
        vt_pool_metrics m0, m1;
        gap();
        int bad = vt_pool_metrics_get(pool, &m0, NULL, 0) != VT_OK;
        bad = bad || vitte_run(c, g, x->rt, NULL, (unsigned)ph, phase_names[ph], &r, ph) != 0;
        bad = bad || vt_pool_metrics_get(pool, &m1, NULL, 0) != VT_OK;
        if (bad) {
            if (!c->failed)
                bench_fail(c, "vt_pool_metrics_get failed");
            vt_graph_free(g);
            return -1;
        }
        if (!c->warmup) {
            x->runs++;
            x->steals += m1.total.stolen - m0.total.stolen;
            x->parks += m1.total.parks - m0.total.parks;
        }
    }

    gap();
    phase_start(&r);
    vt_graph_free(g);
    phase_stop(&r, PH_TEARDOWN);
    *ns = record(c, &r);
    return 0;
}

#ifdef VT_HAVE_TBB
static int rep_tbb(bench_case *c, double *ns)
{
    graph_ctx *x = c->ctx;
    const size_t n = peer_graph_tasks(x->shape);
    rep_figs r;
    memset(slots, 0, n);

    long heap0 = c->warmup ? heap_in_use() : -1;
    phase_start(&r);
    peer_graph_tbb *g = peer_graph_tbb_build(x->shape, slots, c->threads);
    phase_stop(&r, PH_BUILD);
    if (!g)
        return bench_fail(c, "building the flow graph failed (out of memory?)");
    if (heap0 >= 0)
        x->heap_bytes = heap_in_use() - heap0;

    for (int ph = PH_RUN; ph <= PH_RERUN; ph++) {
        gap();
        phase_start(&r);
        int e = peer_graph_tbb_run(g);
        phase_stop(&r, ph);
        if (e != 0 || check_slots(c, n, (unsigned)ph, phase_names[ph]) != 0) {
            if (!c->failed)
                bench_fail(c, "%s: the flow graph threw", phase_names[ph]);
            peer_graph_tbb_free(g);
            return -1;
        }
    }

    gap();
    phase_start(&r);
    peer_graph_tbb_free(g);
    phase_stop(&r, PH_TEARDOWN);
    *ns = record(c, &r);
    return 0;
}
#endif

#ifdef VT_HAVE_OPENMP
static int rep_openmp(bench_case *c, double *ns)
{
    graph_ctx *x = c->ctx;
    const size_t n = peer_graph_tasks(x->shape);
    rep_figs r;
    memset(slots, 0, n);
    phase_start(&r);
    peer_graph_openmp_run(x->shape, slots, c->threads);
    phase_stop(&r, PH_RUN);
    if (check_slots(c, n, 1, "run"))
        return -1;
    *ns = record(c, &r);
    return 0;
}
#endif

/* The warm-up's check that the store holds the run: n records, each a
 * success that ran once. */
static int check_store(bench_case *c, const char *run_id, size_t n)
{
    vt_task_record *recs;
    size_t got;
    vt_err e = vt_store_run_tasks(store, run_id, &recs, &got);
    if (e != VT_OK)
        return bench_fail(c, "vt_store_run_tasks: %s (%s)", vt_strerror(e), vt_store_last_error());
    size_t bad = 0;
    for (size_t i = 0; i < got; i++)
        bad += recs[i].state != VT_TASK_SUCCEEDED || recs[i].attempts != 1 || recs[i].restored;
    vt_store_run_tasks_free(recs, got);
    if (got != n || bad)
        return bench_fail(c,
                          "the store recorded %zu tasks (%zu not a first-attempt success), "
                          "expected %zu successes",
                          got, bad, n);
    return 0;
}

static int rep_store(bench_case *c, double *ns)
{
    store_ctx *x = c->ctx;
    const size_t n = peer_graph_tasks(&store_shape);
    double t[2]; /* [0] without the store, [1] with it */
    for (unsigned k = 0; k < 2; k++) {
        unsigned with = (k + x->round) & 1;
        char run_id[VT_RUN_ID_MAX];
        snprintf(run_id, sizeof run_id, "bench-%ld-%u", (long)getpid(), store_runs++);
        vt_run_opts o = {.on_failure = VT_FAIL_FAST};
        if (with) {
            o.store = store;
            o.run_id = run_id;
        }
        memset(slots, 0, n);
        rep_figs r;
        if (vitte_run(c, store_graph, x->rt, &o, 1, with ? "run with store" : "run", &r, PH_RUN))
            return -1;
        t[with] = r.ns[PH_RUN];
        if (with) {
            if (c->warmup && check_store(c, run_id, n))
                return -1;
            vt_err e = vt_store_delete_run(store, run_id);
            if (e != VT_OK)
                return bench_fail(c, "vt_store_delete_run: %s (%s)", vt_strerror(e),
                                  vt_store_last_error());
        }
        gap();
    }
    x->round++;
    if (!c->warmup) {
        x->plain[x->n] = t[0] / (double)n;
        x->stored[x->n] = t[1] / (double)n;
        x->n++;
    }
    *ns = (t[1] - t[0]) / (double)n;
    return 0;
}

/* Keeps what a phase frees inside the process, for every impl alike: left
 * to its defaults, glibc maps big blocks on their own and gives them, and
 * the top of its heaps, back to the kernel when they are freed, and the
 * next graph pays a page fault per 4 KiB it touches again (13 us each on
 * this VM: a few hundred ns per task), a cost that then also depends on
 * which impl ran before and how much it left free in the heap. With no
 * mmap'd blocks and no trimming, every impl reuses, after its warm-up,
 * memory it or another freed. (Memory a runtime maps by itself, as vitte's
 * task blocks, is its own business.) */
static void keep_heap(int keep)
{
#ifdef __GLIBC__
    if (keep && mallopt(M_MMAP_MAX, 0) && mallopt(M_TRIM_THRESHOLD, INT_MAX)) {
        printf("malloc: freed memory kept for reuse (M_MMAP_MAX 0, M_TRIM_THRESHOLD INT_MAX)\n");
        return;
    }
#endif
    printf("malloc: defaults (freed memory may go back to the kernel)\n");
}

/* Takes "--only NAME[,NAME...]" out of argv (bench_parse knows only
 * integer options) into on[]; everything is on without it. */
static int take_only(int *argc, char **argv, int on[N_SHAPES + 1])
{
    int j = 1, given = 0;
    for (int b = 0; b <= N_SHAPES; b++)
        on[b] = 1;
    for (int i = 1; i < *argc; i++) {
        if (strcmp(argv[i], "--only") != 0) {
            argv[j++] = argv[i];
            continue;
        }
        if (i + 1 == *argc)
            return -1;
        if (!given)
            for (int b = 0; b <= N_SHAPES; b++)
                on[b] = 0;
        given = 1;
        char buf[128];
        snprintf(buf, sizeof buf, "%s", argv[++i]);
        for (char *save, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            int b = 0;
            while (b <= N_SHAPES && strcmp(shape_names[b], t))
                b++;
            if (b > N_SHAPES)
                return -1;
            on[b] = 1;
        }
    }
    *argc = j;
    argv[j] = NULL;
    return 0;
}

/* A temporary directory for the store; 0, or -1 with a message. */
static int store_setup(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(store_dir, sizeof store_dir, "%s/vitte-bench-XXXXXX",
             tmp && *tmp && strlen(tmp) < 32 ? tmp : "/tmp");
    if (!mkdtemp(store_dir)) {
        fprintf(stderr, "error: mkdtemp(%s): %s\n", store_dir, strerror(errno));
        store_dir[0] = '\0';
        return -1;
    }
    snprintf(store_path, sizeof store_path, "%s/store.db", store_dir);
    vt_err e = vt_store_open(&store, store_path, NULL);
    if (e != VT_OK) {
        fprintf(stderr, "error: vt_store_open(%s): %s (%s)\n", store_path, vt_strerror(e),
                vt_store_last_error());
        store = NULL;
        return -1;
    }
    return 0;
}

static void store_cleanup(void)
{
    vt_store_close(store);
    if (!store_dir[0])
        return;
    /* SQLite's companions of a WAL database, gone after a clean close but
     * left by a run that stopped half-way. */
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
        char path[128];
        snprintf(path, sizeof path, "%s%s", store_path, suffixes[i]);
        if (unlink(path) != 0 && errno != ENOENT)
            fprintf(stderr, "warning: cannot remove %s: %s\n", path, strerror(errno));
    }
    if (rmdir(store_dir) != 0)
        fprintf(stderr, "warning: cannot remove %s: %s\n", store_dir, strerror(errno));
}

static const bench_rep_fn rep_fns[N_IMPLS] = {
    rep_vitte,
#ifdef VT_HAVE_TBB
    rep_tbb,
#else
    NULL,
#endif
#ifdef VT_HAVE_OPENMP
    rep_openmp,
#else
    NULL,
#endif
};

static void add_runtime(bench_case *c, int impl)
{
#ifdef VT_HAVE_TBB
    if (impl == IMPL_TBB)
        bench_extra(c, "runtime=%s", peer_tbb_runtime());
#endif
#ifdef VT_HAVE_OPENMP
    if (impl == IMPL_OPENMP)
        bench_extra(c, "runtime=%s", peer_openmp_runtime());
#endif
    (void)c;
    (void)impl;
}

/* drivers[0 .. ng - 1] are the graph cases, drivers[ng .. nd - 1] the
 * store cases. */
static void add_extras(int ng, int nd, int nl)
{
    for (int i = 0; i < ng; i++) {
        graph_ctx *x = drivers[i].ctx;
        if (drivers[i].failed) {
            /* Its lines have samples of the reps before it failed, or none. */
            for (int ph = 0; ph < N_PHASES; ph++)
                if (x->phase[ph])
                    x->phase[ph]->failed = 1;
            continue;
        }
        const size_t n = peer_graph_tasks(x->shape);
        for (int ph = 0; ph < N_PHASES; ph++)
            if (x->phase[ph] && x->reps)
                bench_extra(x->phase[ph], "minflt=%.0f", (double)x->faults[ph] / (double)x->reps);
        if (x->phase[PH_BUILD] && x->heap_bytes >= 0)
            bench_extra(x->phase[PH_BUILD], "malloc_bytes_per_task=%.1f",
                        (double)x->heap_bytes / (double)n);
        if (x->runs)
            for (int ph = PH_RUN; ph <= PH_RERUN; ph++)
                bench_extra(x->phase[ph], "steals=%.1f parks=%.1f",
                            (double)x->steals / (double)x->runs,
                            (double)x->parks / (double)x->runs);
    }
    for (int i = 0; i < nl; i++) {
        bench_case *c = &lines[i];
        if (c->threads == 1 || c->failed || !c->n)
            continue;
        for (int j = 0; j < nl; j++) {
            bench_case *one = &lines[j];
            if (one->threads == 1 && line_phase[j] == line_phase[i] && !one->failed && one->n &&
                !strcmp(one->name, c->name) && !strcmp(one->impl, c->impl)) {
                bench_extra(c, "vs_1thread=%.2f",
                            bench_median(c->samples, c->n) / bench_median(one->samples, one->n));
                break;
            }
        }
    }
    for (int i = ng; i < nd; i++) {
        store_ctx *x = drivers[i].ctx;
        if (!drivers[i].failed && x->n)
            bench_extra(&drivers[i], "plain_ns=%.2f store_ns=%.2f", bench_median(x->plain, x->n),
                        bench_median(x->stored, x->n));
    }
}

int main(int argc, char **argv)
{
    int on[N_SHAPES + 1];
    if (take_only(&argc, argv, on) != 0) {
        fprintf(stderr, "%s: --only takes graph_chain, graph_tree, graph_wave, store_overhead\n",
                argv[0]);
        return 2;
    }
    long tasks = 1L << 20, wave = 1000, store_wave = 316, fresh_pages = 0;
    const bench_opt opts[] = {
        {"--tasks", &tasks, "graph_chain's tasks (graph_tree: one fewer)"},
        {"--wave", &wave, "graph_wave's side: side x side tasks"},
        {"--store-wave", &store_wave, "store_overhead's wavefront side"},
        {"--fresh-pages", &fresh_pages, "1: leave malloc's defaults (see the top of the file)"},
        {NULL, NULL, NULL}};
    bench_args a;
    bench_parse(&a, argc, argv, impls, N_IMPLS, 1, opts);
    keep_heap(fresh_pages == 0);
    if (tasks < 2 || wave > 1L << 15 || store_wave > 1L << 15) {
        fprintf(stderr, "%s: --tasks at least 2, --wave and --store-wave at most 32768\n", argv[0]);
        return 2;
    }
    gap_ns = (int64_t)a.gap_ms * 1000000;
    shapes[SHAPE_CHAIN] = (peer_graph_shape){.kind = PEER_GRAPH_CHAIN, .n = (size_t)tasks};
    shapes[SHAPE_TREE] = (peer_graph_shape){.kind = PEER_GRAPH_TREE, .n = (size_t)tasks - 1};
    shapes[SHAPE_WAVE] =
        (peer_graph_shape){.kind = PEER_GRAPH_WAVE, .rows = (size_t)wave, .cols = (size_t)wave};
    store_shape = (peer_graph_shape){
        .kind = PEER_GRAPH_WAVE, .rows = (size_t)store_wave, .cols = (size_t)store_wave};
    size_t most = peer_graph_tasks(&store_shape);
    for (int s = 0; s < N_SHAPES; s++)
        if (peer_graph_tasks(&shapes[s]) > most)
            most = peer_graph_tasks(&shapes[s]);
    slots = malloc(most);
    task_of = malloc(most * sizeof *task_of);
    if (!slots || !task_of) {
        fprintf(stderr, "error: out of memory\n");
        return 1;
    }

    int status = 0, nd = 0, nl = 0;
    vt_runtime *rts[BENCH_MAX_THREADS] = {NULL};
    int peer_ok[N_IMPLS][BENCH_MAX_THREADS];
    for (int t = 0; t < a.n_threads; t++) {
        unsigned th = a.threads[t];
        peer_ok[IMPL_VITTE][t] = 0;
        if (a.impl_on[IMPL_VITTE]) {
            vt_runtime_opts o;
            vt_runtime_opts_init(&o);
            o.pool.workers = th;
            o.pool.name = "bench";
            vt_err e = vt_runtime_new(&rts[t], &o);
            if (e != VT_OK) {
                fprintf(stderr, "error: vt_runtime_new(%u workers): %s\n", th, vt_strerror(e));
                rts[t] = NULL;
                status = 1;
            }
            peer_ok[IMPL_VITTE][t] = e == VT_OK;
        }
        peer_ok[IMPL_TBB][t] = 0;
#ifdef VT_HAVE_TBB
        if (a.impl_on[IMPL_TBB] && !(peer_ok[IMPL_TBB][t] = peer_tbb_prepare(th) == 0)) {
            fprintf(stderr, "error: oneTBB would not give %u threads\n", th);
            status = 1;
        }
#endif
        peer_ok[IMPL_OPENMP][t] = 0;
#ifdef VT_HAVE_OPENMP
        if (a.impl_on[IMPL_OPENMP] && !(peer_ok[IMPL_OPENMP][t] = peer_openmp_prepare(th) == 0)) {
            fprintf(stderr, "error: OpenMP would not give %u threads\n", th);
            status = 1;
        }
#endif
    }

    /* The reported lines, grouped by shape, then phase, then threads. */
    for (int s = 0; s < N_SHAPES; s++) {
        if (!on[s])
            continue;
        const size_t n = peer_graph_tasks(&shapes[s]);
        int first = nd;
        for (int t = 0; t < a.n_threads; t++) {
            for (int k = 0; k < N_IMPLS; k++) {
                if (!peer_ok[k][t])
                    continue;
                graph_ctx *x = &graph_ctxs[nd];
                *x = (graph_ctx){.shape = &shapes[s], .impl = k, .rt = rts[t], .heap_bytes = -1};
                drivers[nd++] = (bench_case){.name = shape_names[s],
                                             .impl = impls[k].name,
                                             .threads = a.threads[t],
                                             .rep = rep_fns[k],
                                             .ctx = x};
            }
        }
        for (int ph = 0; ph < N_PHASES; ph++) {
            for (int d = first; d < nd; d++) {
                graph_ctx *x = drivers[d].ctx;
                if (x->impl == IMPL_OPENMP && ph != PH_RUN)
                    continue;
                bench_case *c = &lines[nl];
                *c = (bench_case){.name = drivers[d].name,
                                  .impl = drivers[d].impl,
                                  .threads = drivers[d].threads};
                bench_extra(c, "phase=%s per=%s tasks=%zu", phase_names[ph],
                            ph == PH_TEARDOWN ? "graph" : "task", n);
                add_runtime(c, x->impl);
                line_phase[nl++] = ph;
                x->phase[ph] = c;
            }
        }
    }
    int first_store = nd;
    if (on[ONLY_STORE] && a.impl_on[IMPL_VITTE]) {
        if (store_setup() != 0) {
            status = 1;
        } else if (!(store_graph = vitte_build(
                         &(bench_case){.name = "store_overhead", .impl = "vitte"}, &store_shape))) {
            status = 1;
        } else {
            for (int t = 0; t < a.n_threads; t++) {
                if (!rts[t])
                    continue;
                store_ctxs[t] = (store_ctx){.rt = rts[t]};
                bench_case *c = &drivers[nd++];
                *c = (bench_case){.name = "store_overhead",
                                  .impl = "vitte",
                                  .threads = a.threads[t],
                                  .rep = rep_store,
                                  .ctx = &store_ctxs[t]};
                bench_extra(c, "per=task tasks=%zu shape=wave%zux%zu",
                            peer_graph_tasks(&store_shape), store_shape.rows, store_shape.cols);
            }
        }
    }

    bench_run(drivers, nd, &a);
    add_extras(first_store, nd, nl);
    status |= bench_report(lines, nl);
    status |= bench_report(&drivers[first_store], nd - first_store);

    vt_graph_free(store_graph);
    store_cleanup();
    for (int t = 0; t < a.n_threads; t++)
        vt_runtime_free(rts[t]);
    free(task_of);
    free(slots);
    return status;
}
