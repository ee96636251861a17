/* stress_resume.c — resuming a run after kill -9 at random points.
 *
 * A child process runs a graph of a few thousand tasks with a store (one
 * run id throughout); each body takes a little time, reads the results of
 * its dependencies, sets its own, and writes one line to a side file
 * (O_APPEND: lines of several processes never mix) when it starts and when
 * it ends. The parent SIGKILLs the child once a random number of bodies
 * have ended, reads what the store recorded as succeeded, and starts
 * another child, a few times; then it runs the graph to its end itself.
 *
 * Checked: every task ends SUCCEEDED; a task the store had recorded as
 * succeeded before a resume never ran again afterwards (no start line of
 * it after that point of the side file), and the final run reports it
 * restored with its result; results of restored dependencies were readable
 * by every body (vt_ctx_dep_result) after each resume; the run's history
 * counts every start; a new fingerprint makes just its tasks run again.
 *
 * The child is this executable again (posix_spawn with VT_RESUME_CHILD in
 * its environment): a fork of the test process would inherit the harness's
 * watchdog thread, and a fork of a threaded process may not start threads
 * under TSan. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vt_test.h"
#include "task_test.h"

extern char **environ;

#define RUN_ID "resume-run"

/* ---- The graph, the same in every process ----------------------------------------------- */

typedef struct rnode {
    uint32_t rank;
    uint32_t npred;
    uint32_t pred[4];
} rnode;

static struct {
    int side;           /* the side file, O_APPEND */
    uint64_t seed;
    size_t n;
    rnode *nodes;
    _Atomic long bad_results;
} R;

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* The result task r sets: 16 bytes derived from the seed and r. */
static void expected(uint32_t r, uint64_t out[2])
{
    out[0] = mix(R.seed ^ r);
    out[1] = r;
}

static void side_line(const char *fmt, ...) VT_PRINTF(1, 2);
static void side_line(const char *fmt, ...)
{
    char buf[128];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    /* One write per line: O_APPEND keeps it whole. */
    if (write(R.side, buf, (size_t)len) != len)
        atomic_fetch_add(&R.bad_results, 1000000);
}

static vt_err body_resume(vt_task_ctx *ctx, void *data)
{
    rnode *nd = data;
    side_line("S %d %u\n", (int)getpid(), nd->rank);
    uint64_t h = mix(R.seed + nd->rank);
    if (vt_fiber_in()) {
        vt_err e = vt_sleep_ns((int64_t)(200000 + h % 600000));
        if (e)
            return e;
    } else {
        struct timespec ts = {0, (long)(200000 + h % 600000)};
        nanosleep(&ts, NULL);
    }
    for (uint32_t k = 0; k < nd->npred; k++) {
        char name[16];
        snprintf(name, sizeof name, "t%05u", nd->pred[k]);
        const void *d = NULL;
        size_t len = 0;
        vt_err e = vt_ctx_dep_result(ctx, name, &d, &len);
        uint64_t want[2];
        expected(nd->pred[k], want);
        if (e || len != sizeof want || memcmp(d, want, sizeof want)) {
            side_line("X %d %u %u %d\n", (int)getpid(), nd->rank, nd->pred[k], (int)e);
            atomic_fetch_add(&R.bad_results, 1);
        }
    }
    uint64_t mine[2];
    expected(nd->rank, mine);
    vt_err e = vt_ctx_set_result(ctx, mine, sizeof mine);
    if (e)
        return e;
    side_line("E %d %u\n", (int)getpid(), nd->rank);
    return VT_OK;
}

/* Tasks named t00000.., each with up to 4 dependencies among the earlier
 * ones (by name or by handle), a fifth async, fingerprint "v1" but for the
 * ranks in `changed` (every 97th from 5) when changed is set: "v2". */
static vt_graph *build_graph(int changed)
{
    vt_graph *g;
    if (vt_graph_new(&g, "resume"))
        return NULL;
    vt_task **t = calloc(R.n, sizeof *t);
    if (!t)
        return NULL;
    for (uint32_t r = 0; r < R.n; r++) {
        rnode *nd = &R.nodes[r];
        char name[16];
        snprintf(name, sizeof name, "t%05u", r);
        uint64_t x = mix(R.seed * 31 + r);
        t[r] = x % 5 == 0 ? vt_task_add_async(g, name, body_resume, nd) : vt_task_add(g, name, body_resume, nd);
        const char *fp = changed && r % 97 == 5 ? "v2" : "v1";
        if (!t[r] || vt_task_set_fingerprint(t[r], fp, 2))
            goto fail;
        for (uint32_t k = 0; k < nd->npred; k++) {
            vt_err e;
            if (k % 2) {
                char dep[16];
                snprintf(dep, sizeof dep, "t%05u", nd->pred[k]);
                e = vt_task_depend(t[r], dep);
            } else {
                e = vt_task_precede(t[nd->pred[k]], t[r]);
            }
            if (e)
                goto fail;
        }
    }
    free(t);
    return g;
fail:
    free(t);
    vt_graph_free(g);
    return NULL;
}

static int setup(uint64_t seed, size_t n, const char *side_path)
{
    R.seed = seed;
    R.n = n;
    R.nodes = calloc(n, sizeof *R.nodes);
    if (!R.nodes)
        return 0;
    for (uint32_t r = 0; r < n; r++) {
        rnode *nd = &R.nodes[r];
        nd->rank = r;
        uint64_t x = mix(seed ^ ((uint64_t)r << 20));
        uint32_t k = r == 0 ? 0 : (uint32_t)(x % 5);
        for (uint32_t j = 0; j < k && j < 4; j++) {
            x = mix(x);
            uint32_t p = (uint32_t)(r - 1 - x % (r < 50 ? r : 50));
            int dup = 0;
            for (uint32_t q = 0; q < nd->npred; q++)
                dup |= nd->pred[q] == p;
            if (!dup)
                nd->pred[nd->npred++] = p;
        }
    }
    R.side = open(side_path, O_WRONLY | O_APPEND | O_CREAT, 0644);
    return R.side >= 0;
}

/* Runs the graph with the store at path; VT_OK when every task succeeded. */
static vt_err run_with_store(const char *store_path, int changed, vt_graph **out_g, vt_runtime **out_rt,
                             vt_store **out_s)
{
    vt_store *s = NULL;
    vt_err e = vt_store_open(&s, store_path, NULL);
    if (e)
        return e;
    vt_runtime *rt = rt_new(2);
    vt_graph *g = build_graph(changed);
    if (!rt || !g) {
        vt_graph_free(g);
        vt_runtime_free(rt);
        vt_store_close(s);
        return VT_ENOMEM;
    }
    vt_run_opts o = {.on_failure = VT_KEEP_GOING, .store = s, .run_id = RUN_ID};
    e = vt_graph_run(g, rt, &o);
    if (out_g) {
        *out_g = g;
        *out_rt = rt;
        *out_s = s;
    } else {
        vt_graph_free(g);
        vt_runtime_free(rt);
        vt_store_close(s);
    }
    return e;
}

/* ---- The child ------------------------------------------------------------------------------- */

__attribute__((constructor)) static void resume_child(void)
{
    const char *mode = getenv("VT_RESUME_CHILD");
    if (!mode || !*mode)
        return;
    const char *store = getenv("VT_RESUME_STORE"), *side = getenv("VT_RESUME_SIDE");
    const char *seed = getenv("VT_RESUME_SEED"), *n = getenv("VT_RESUME_N");
    if (!store || !side || !seed || !n)
        _exit(10);
    if (!setup(strtoull(seed, NULL, 10), strtoull(n, NULL, 10), side))
        _exit(11);
    vt_err e = run_with_store(store, 0, NULL, NULL, NULL);
    if (e) {
        fprintf(stderr, "resume child: run: %s %s\n", vt_errname(e), vt_store_last_error());
        _exit(12);
    }
    _exit(atomic_load(&R.bad_results) ? 13 : 0);
}

/* ---- The parent ------------------------------------------------------------------------------ */

static pid_t spawn_child(const char *store, const char *side)
{
    char e_mode[] = "VT_RESUME_CHILD=1";
    char e_store[4200], e_side[4200], e_seed[64], e_n[64];
    snprintf(e_store, sizeof e_store, "VT_RESUME_STORE=%s", store);
    snprintf(e_side, sizeof e_side, "VT_RESUME_SIDE=%s", side);
    snprintf(e_seed, sizeof e_seed, "VT_RESUME_SEED=%llu", (unsigned long long)R.seed);
    snprintf(e_n, sizeof e_n, "VT_RESUME_N=%zu", R.n);
    size_t ne = 0;
    while (environ[ne])
        ne++;
    char **envp = calloc(ne + 6, sizeof *envp);
    size_t k = 0;
    for (size_t i = 0; i < ne; i++)
        if (strncmp(environ[i], "VT_RESUME_", 10))
            envp[k++] = environ[i];
    envp[k++] = e_mode;
    envp[k++] = e_store;
    envp[k++] = e_side;
    envp[k++] = e_seed;
    envp[k++] = e_n;
    envp[k] = NULL;
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) {
        free(envp);
        return -1;
    }
    self[len] = 0;
    char *argv[] = {self, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, self, NULL, NULL, argv, envp);
    free(envp);
    return rc == 0 ? pid : -1;
}

/* Reads the side file as it grows, keeping every line with its offset. */
typedef struct side_reader {
    FILE *f;
    long pos;
    char partial[256];
    size_t plen;
} side_reader;

typedef struct line_ev {
    char kind;
    int pid;
    uint32_t rank;
    long off;   /* offset of the line in the side file */
} line_ev;

typedef struct evlist {
    line_ev *v;
    size_t n, cap;
} evlist;

/* Takes the lines appended since the last call into ev; returns how many
 * of them are end lines. */
static long side_poll(side_reader *sr, evlist *ev)
{
    long ends = 0;
    fseek(sr->f, sr->pos, SEEK_SET);
    int c;
    while ((c = fgetc(sr->f)) != EOF) {
        if (sr->plen < sizeof sr->partial - 1)
            sr->partial[sr->plen++] = (char)c;
        sr->pos++;
        if (c != '\n')
            continue;
        sr->partial[sr->plen] = 0;
        line_ev e = {0};
        e.off = sr->pos - (long)sr->plen;
        unsigned rank = 0;
        int pid = 0;
        if (sscanf(sr->partial, "%c %d %u", &e.kind, &pid, &rank) == 3) {
            e.pid = pid;
            e.rank = rank;
            if (ev->n == ev->cap) {
                ev->cap = ev->cap ? ev->cap * 2 : 4096;
                ev->v = realloc(ev->v, ev->cap * sizeof *ev->v);
            }
            ev->v[ev->n++] = e;
            ends += e.kind == 'E';
        }
        sr->plen = 0;
    }
    clearerr(sr->f);
    return ends;
}

/* Marks in known_at[r] the side file's length at the first time the store
 * showed rank r succeeded. Returns how many ranks are known, -1 on error. */
static long read_store(const char *path, long side_len, long *known_at, vt_run_info *info)
{
    vt_store *s = NULL;
    vt_store_opts o = {.read_only = 1};
    if (vt_store_open(&s, path, &o)) {
        printf("    store open: %s\n", vt_store_last_error());
        return -1;
    }
    vt_task_record *recs = NULL;
    size_t n = 0;
    vt_err e = vt_store_run_tasks(s, RUN_ID, &recs, &n);
    long known = 0;
    if (e == VT_ENOENT) {
        n = 0; /* killed before the run was recorded */
    } else if (e) {
        printf("    vt_store_run_tasks: %s %s\n", vt_errname(e), vt_store_last_error());
        vt_store_close(s);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned r;
        if (recs[i].state != VT_TASK_SUCCEEDED || sscanf(recs[i].name, "t%05u", &r) != 1 || r >= R.n)
            continue;
        if (known_at[r] < 0)
            known_at[r] = side_len;
    }
    for (size_t r = 0; r < R.n; r++)
        known += known_at[r] >= 0;
    vt_store_run_tasks_free(recs, n);
    if (info) {
        vt_run_info *runs = NULL;
        size_t nr = 0;
        memset(info, 0, sizeof *info);
        if (vt_store_runs(s, 0, &runs, &nr) == VT_OK) {
            for (size_t i = 0; i < nr; i++)
                if (!strcmp(runs[i].id, RUN_ID))
                    *info = runs[i];
            vt_store_runs_free(runs, nr);
        }
    }
    vt_store_close(s);
    return known;
}

static long file_len(const char *path)
{
    struct stat st;
    return stat(path, &st) ? -1 : (long)st.st_size;
}

VT_TEST(resume_after_kill_9)
{
    char dir[] = "/tmp/vt-resume-XXXXXX";
    VT_CHECK_NOT_NULL(mkdtemp(dir));
    char store[256], side[256];
    snprintf(store, sizeof store, "%s/store.db", dir);
    snprintf(side, sizeof side, "%s/side.log", dir);
    size_t n = 2000 * vt_test_stress();
    VT_CHECK(setup(vt_test_rand(), n, side));
    long *known_at = malloc(n * sizeof *known_at);
    VT_CHECK_NOT_NULL(known_at);
    for (size_t r = 0; r < n; r++)
        known_at[r] = -1;
    side_reader sr = {.f = fopen(side, "r")};
    VT_CHECK_NOT_NULL(sr.f);
    evlist ev = {0};

    enum { KILLS = 5 };
    unsigned starts = 0, killed = 0;
    long known = 0;
    for (int round = 0; round < KILLS; round++) {
        long remaining = (long)n - known;
        long target = 1 + (long)(vt_test_rand() % (uint64_t)(remaining / 2 > 1 ? remaining / 2 : 1));
        pid_t pid = spawn_child(store, side);
        VT_CHECK_GT(pid, 0);
        starts++;
        long ends = 0;
        int status = 0, exited = 0;
        while (ends < target) {
            ends += side_poll(&sr, &ev);
            if (waitpid(pid, &status, WNOHANG) == pid) {
                exited = 1;
                break;
            }
            nap();
        }
        if (!exited) {
            kill(pid, SIGKILL);
            VT_CHECK_EQ(waitpid(pid, &status, 0), pid);
            killed += WIFSIGNALED(status);
        } else {
            if (!WIFEXITED(status) || WEXITSTATUS(status))
                printf("    child status 0x%x\n", status);
            VT_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        }
        side_poll(&sr, &ev);
        long before = known;
        vt_run_info info;
        known = read_store(store, file_len(side), known_at, &info);
        VT_CHECK_GE(known, before);
        if (!exited && info.id[0])
            VT_CHECK_EQ(info.status, VT_RUN_INTERRUPTED);
        printf("    round %d: %ld bodies ended, killed %d, %ld recorded as succeeded\n", round, ends, !exited,
               known);
    }
    VT_CHECK_GT(killed, 0);

    /* The last run, here. */
    vt_graph *g;
    vt_runtime *rt;
    vt_store *s;
    atomic_store(&R.bad_results, 0);
    VT_CHECK_OK(run_with_store(store, 0, &g, &rt, &s));
    starts++;
    side_poll(&sr, &ev);
    size_t not_ok = 0, restored_wrong = 0, result_wrong = 0, restored = 0;
    for (uint32_t r = 0; r < n; r++) {
        char name[16];
        snprintf(name, sizeof name, "t%05u", r);
        vt_task *t = vt_graph_find(g, name);
        not_ok += !t || vt_task_state_get(t) != VT_TASK_SUCCEEDED;
        if (!t)
            continue;
        restored += vt_task_restored(t);
        if (known_at[r] >= 0)
            restored_wrong += !vt_task_restored(t) || vt_task_attempts(t) != 0;
        const void *d;
        size_t len;
        uint64_t want[2];
        expected(r, want);
        result_wrong += vt_task_result(t, &d, &len) != VT_OK || len != sizeof want || memcmp(d, want, len);
    }
    VT_CHECK_EQ(not_ok, 0);
    VT_CHECK_EQ(restored_wrong, 0);
    VT_CHECK_EQ(result_wrong, 0);
    VT_CHECK_EQ(restored, (size_t)known);
    vt_run_summary sum = summary_of(g);
    VT_CHECK_EQ(sum.total, n);
    VT_CHECK_EQ(sum.succeeded, n);
    VT_CHECK_EQ(sum.restored, restored);
    VT_CHECK_EQ(atomic_load(&R.bad_results), 0);
    vt_graph_free(g);
    vt_runtime_free(rt);
    vt_store_close(s);

    /* Nothing recorded as succeeded ran again later; every body could read
     * its dependencies' results (no X line); every task ran to its end at
     * least once over all the processes. */
    size_t again = 0, x_lines = 0;
    unsigned char *ended = calloc(n, 1);
    for (size_t i = 0; i < ev.n; i++) {
        line_ev *e = &ev.v[i];
        if (e->rank >= n)
            continue;
        if (e->kind == 'S' && known_at[e->rank] >= 0 && e->off >= known_at[e->rank]) {
            if (again < 5)
                printf("    t%05u started again at offset %ld (pid %d), known succeeded at %ld\n", e->rank,
                       e->off, e->pid, known_at[e->rank]);
            again++;
        }
        x_lines += e->kind == 'X';
        if (e->kind == 'E')
            ended[e->rank] = 1;
    }
    size_t never = 0;
    for (size_t r = 0; r < n; r++)
        never += !ended[r];
    free(ended);
    VT_CHECK_EQ(again, 0);
    VT_CHECK_EQ(x_lines, 0);
    VT_CHECK_EQ(never, 0);

    /* The history counts every start, and the run ended well. */
    vt_run_info info;
    for (size_t r = 0; r < n; r++)
        known_at[r] = -1;
    VT_CHECK_EQ(read_store(store, 0, known_at, &info), (long)n);
    VT_CHECK_STR_EQ(info.id, RUN_ID);
    VT_CHECK_EQ(info.status, VT_RUN_SUCCEEDED);
    VT_CHECK_EQ(info.starts, starts);
    VT_CHECK_EQ(info.succeeded, n);
    VT_CHECK_STR_EQ(info.graph, "resume");

    /* A new fingerprint runs its task again; the others stay restored. */
    long side_before_fp = file_len(side);
    VT_CHECK_OK(run_with_store(store, 1, &g, &rt, &s));
    side_poll(&sr, &ev);
    size_t changed = 0, rerun_wrong = 0, kept_wrong = 0;
    for (uint32_t r = 0; r < n; r++) {
        char name[16];
        snprintf(name, sizeof name, "t%05u", r);
        vt_task *t = vt_graph_find(g, name);
        if (!t) {
            rerun_wrong++;
            continue;
        }
        if (r % 97 == 5) {
            changed++;
            rerun_wrong += vt_task_restored(t) || vt_task_attempts(t) != 1 ||
                           vt_task_state_get(t) != VT_TASK_SUCCEEDED;
        } else {
            kept_wrong += !vt_task_restored(t) || vt_task_state_get(t) != VT_TASK_SUCCEEDED;
        }
    }
    VT_CHECK_EQ(rerun_wrong, 0);
    VT_CHECK_EQ(kept_wrong, 0);
    sum = summary_of(g);
    VT_CHECK_EQ(sum.restored, n - changed);
    VT_CHECK_EQ(sum.succeeded, n);
    /* Exactly the changed ones started in that run. */
    size_t started_fp = 0, started_unchanged = 0;
    for (size_t i = 0; i < ev.n; i++)
        if (ev.v[i].kind == 'S' && ev.v[i].off >= side_before_fp) {
            started_fp++;
            started_unchanged += ev.v[i].rank % 97 != 5;
        }
    VT_CHECK_EQ(started_fp, changed);
    VT_CHECK_EQ(started_unchanged, 0);
    VT_CHECK_EQ(atomic_load(&R.bad_results), 0);
    vt_graph_free(g);
    vt_runtime_free(rt);
    vt_store_close(s);

    fclose(sr.f);
    free(ev.v);
    free(known_at);
    close(R.side);
    free(R.nodes);
    R.nodes = NULL;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        printf("    could not remove %s\n", dir);
}
