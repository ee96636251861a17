/* The task store under load: many threads recording into several runs of
 * one store while others flush; several processes writing one file at
 * once; stores opened and closed in a loop on one file from many threads;
 * a run resumed many times against a model of "latest record wins"; and
 * kill -9 at random moments of a child that records large results, after
 * which the file must pass integrity_check and hold every record the child
 * said was flushed. VT_TEST_STRESS=N scales the work. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Scaled work under TSan can take minutes on two cores. */
#define VT_TEST_TIMEOUT_S 300
#include "vt_test.h"
#include "task/task_int.h"


/* ---- Helpers -------------------------------------------------------------------- */

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    return remove(p);
}

typedef struct tmp {
    char dir[64];
    char path[128];
} tmp;

static int tmp_make(tmp *t)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/vt-store-stress-XXXXXX");
    if (!mkdtemp(t->dir))
        return -1;
    snprintf(t->path, sizeof t->path, "%s/s.db", t->dir);
    return 0;
}

static void tmp_remove(tmp *t)
{
    nftw(t->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static int integrity_ok(const char *path)
{
    sqlite3 *db;
    int ok = 0;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK) {
            ok = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0) &&
                 strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
            sqlite3_finalize(st);
        }
    }
    sqlite3_close(db);
    return ok;
}

static vt_err record(vt__store_run *r, const char *name, vt_task_state state, const void *fp,
                     size_t fpl, const void *res, size_t resl)
{
    vt__store_rec rec;
    memset(&rec, 0, sizeof rec);
    rec.name = name;
    rec.state = state;
    rec.attempts = 1;
    rec.error = state == VT_TASK_FAILED ? "it broke" : "";
    rec.started_unix_ns = vt__wall_ns();
    rec.ended_unix_ns = rec.started_unix_ns;
    rec.fingerprint = fp;
    rec.fingerprint_len = fpl;
    rec.result = res;
    rec.result_len = resl;
    return vt__store_record(r, &rec);
}

/* Child processes: fork and exec of this program, the role in the
 * environment, run by a constructor (see test_store.c for why). */
extern char **environ;

static pid_t spawn(const char *role, const char *path, int up, int arg)
{
    static char e_role[64], e_path[256], e_up[32], e_arg[32];
    snprintf(e_role, sizeof e_role, "VT_STORE_CHILD=%s", role);
    snprintf(e_path, sizeof e_path, "VT_STORE_PATH=%s", path);
    snprintf(e_up, sizeof e_up, "VT_STORE_UP=%d", up);
    snprintf(e_arg, sizeof e_arg, "VT_STORE_ARG=%d", arg);
    size_t n = 0;
    while (environ[n])
        n++;
    char **envp = calloc(n + 5, sizeof *envp);
    if (!envp)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "VT_STORE_", 9) != 0)
            envp[k++] = environ[i];
    envp[k++] = e_role;
    envp[k++] = e_path;
    envp[k++] = e_up;
    envp[k++] = e_arg;
    char *argv[] = {"stress_store", NULL};
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (up >= 0)
            fcntl(up, F_SETFD, 0);
        /* This program, itself: argv[0] when it is a path, since under
         * Valgrind /proc/self/exe is Valgrind's tool (the child then runs
         * natively, which is all it needs). */
        execve(strchr(program_invocation_name, '/') ? program_invocation_name : "/proc/self/exe",
               argv, envp);
        _exit(126);
    }
    free(envp);
    return pid;
}

/* ---- Threads and runs ------------------------------------------------------------------ */

typedef struct worker {
    vt__store_run *run;
    int id, count;
    uint64_t seed;
    vt_err err;
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    char name[48];
    unsigned char blob[512];
    for (int i = 0; i < w->count && !w->err; i++) {
        uint64_t r = vt__rand_next(&w->seed);
        size_t resl = (size_t)(r % sizeof blob);
        memset(blob, (int)(i & 0xff), resl);
        snprintf(name, sizeof name, "w%d/%d", w->id, i);
        w->err = record(w->run, name, VT_TASK_SUCCEEDED, name, strlen(name), blob, resl);
    }
    return NULL;
}

typedef struct flusher {
    vt__store_run *run;
    _Atomic int *stop;
    long flushes;
    vt_err err;
} flusher;

static void *flush_loop(void *arg)
{
    flusher *f = arg;
    uint64_t seed = (uint64_t)(uintptr_t)f;
    while (!atomic_load(f->stop) && !f->err) {
        f->err = vt__store_flush(f->run);
        f->flushes++;
        /* Flushes at random moments, not back to back: a flush commits
         * whatever is pending, and a loop of them would turn the test
         * into one of tiny transactions. */
        struct timespec ts = {0, (long)(vt__rand_below(&seed, 2000) * 1000)};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

/* Every "w<t>/<i>" for t < threads, i < per, exactly once. */
static int each_once(vt_store *s, const char *id, int threads, int per, int id0)
{
    vt_task_record *tr;
    size_t n;
    if (vt_store_run_tasks(s, id, &tr, &n))
        return 0;
    int ok = n == (size_t)threads * (size_t)per;
    unsigned char *seen = calloc((size_t)threads * (size_t)per + 1, 1);
    ok = ok && seen;
    for (size_t i = 0; ok && i < n; i++) {
        int t, k;
        ok = sscanf(tr[i].name, "w%d/%d", &t, &k) == 2 && t >= id0 && t < id0 + threads &&
             k >= 0 && k < per && !seen[(size_t)(t - id0) * per + k]++ &&
             tr[i].fingerprint_len == strlen(tr[i].name) &&
             memcmp(tr[i].fingerprint, tr[i].name, tr[i].fingerprint_len) == 0;
        for (size_t b = 0; ok && b < tr[i].result_len; b++)
            ok = ((unsigned char *)tr[i].result)[b] == (unsigned char)(k & 0xff);
    }
    free(seen);
    vt_store_run_tasks_free(tr, n);
    return ok;
}

VT_TEST(many_threads_two_runs_and_flushers)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    vt_store *s;
    vt_store_opts o = {.batch_tasks = 1 + (unsigned)(vt_test_rand() % 500),
                       .batch_ns = VT_US(100 + (int64_t)(vt_test_rand() % 5000))};
    VT_CHECK_OK(vt_store_open(&s, t.path, &o));
    vt__store_run *ra, *rb;
    VT_CHECK_OK(vt__store_run_begin(s, "a", "g", 0, &ra, NULL));
    VT_CHECK_OK(vt__store_run_begin(s, "b", "g", 0, &rb, NULL));
    enum { THREADS = 8 };
    int per = 8000 * (int)vt_test_stress();
    worker w[THREADS];
    pthread_t th[THREADS], fth[2];
    _Atomic int stop = 0;
    flusher f[2] = {{ra, &stop, 0, VT_OK}, {rb, &stop, 0, VT_OK}};
    for (int i = 0; i < 2; i++)
        VT_CHECK_EQ(pthread_create(&fth[i], NULL, flush_loop, &f[i]), 0);
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){i < THREADS / 2 ? ra : rb, i, per, vt_test_rand(), VT_OK};
        VT_CHECK_EQ(pthread_create(&th[i], NULL, work, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        VT_CHECK_OK(w[i].err);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 2; i++) {
        pthread_join(fth[i], NULL);
        VT_CHECK_OK(f[i].err);
        VT_CHECK_GT(f[i].flushes, 0);
    }
    VT_CHECK_OK(vt__store_run_end(ra, VT_RUN_SUCCEEDED, NULL));
    VT_CHECK_OK(vt__store_run_end(rb, VT_RUN_SUCCEEDED, NULL));
    VT_CHECK(each_once(s, "a", THREADS / 2, per, 0));
    VT_CHECK(each_once(s, "b", THREADS / 2, per, THREADS / 2));
    vt_run_info *runs;
    size_t n;
    VT_CHECK_OK(vt_store_runs(s, 0, &runs, &n));
    VT_CHECK_EQ(n, 2);
    VT_CHECK_EQ(runs[0].succeeded, (size_t)(THREADS / 2) * per);
    vt_store_runs_free(runs, n);
    vt_store_close(s);
    VT_CHECK(integrity_ok(t.path));
    tmp_remove(&t);
}

/* ---- Several processes, one file --------------------------------------------------------- */

/* Child: its own run "p<arg>", `per` records of it, flushing now and then. */
/* The scale of the work; children run before the harness's main reads
 * VT_TEST_STRESS, so they read it themselves, as main does. */
static unsigned scale(void)
{
    const char *e = getenv("VT_TEST_STRESS");
    long v = e ? strtol(e, NULL, 10) : 1;
    return v < 1 ? 1 : (unsigned)v;
}

static int proc_writer(const char *path, int arg)
{
    vt_store *s;
    vt__store_run *r;
    char id[16], name[48];
    snprintf(id, sizeof id, "p%d", arg);
    if (vt_store_open(&s, path, NULL) || vt__store_run_begin(s, id, "g", 0, &r, NULL)) {
        fprintf(stderr, "writer %d: %s\n", arg, vt_store_last_error());
        return 1;
    }
    int per = 5000 * (int)scale();
    for (int i = 0; i < per; i++) {
        snprintf(name, sizeof name, "w%d/%d", arg, i);
        if (record(r, name, VT_TASK_SUCCEEDED, name, strlen(name), NULL, 0))
            return 2;
        if (i % 997 == 0 && vt__store_flush(r)) {
            fprintf(stderr, "writer %d: %s\n", arg, vt_store_last_error());
            return 3;
        }
    }
    if (vt__store_run_end(r, VT_RUN_SUCCEEDED, NULL)) {
        fprintf(stderr, "writer %d: %s\n", arg, vt_store_last_error());
        return 4;
    }
    vt_store_close(s);
    return 0;
}

VT_TEST(processes_share_one_file)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    /* Created first, so the children race only on writing. */
    vt_store *s;
    VT_CHECK_OK(vt_store_open(&s, t.path, NULL));
    vt_store_close(s);
    enum { PROCS = 3 };
    pid_t pids[PROCS];
    for (int i = 0; i < PROCS; i++)
        VT_CHECK_GE(pids[i] = spawn("writer", t.path, -1, i), 0);
    /* And this process writes its own run meanwhile. */
    VT_CHECK_OK(vt_store_open(&s, t.path, NULL));
    vt__store_run *r;
    VT_CHECK_OK(vt__store_run_begin(s, "parent", "g", 0, &r, NULL));
    int per = 5000 * (int)scale();
    char name[48];
    for (int i = 0; i < per; i++) {
        snprintf(name, sizeof name, "w%d/%d", PROCS, i);
        VT_CHECK_OK(record(r, name, VT_TASK_SUCCEEDED, name, strlen(name), NULL, 0));
    }
    VT_CHECK_OK(vt__store_run_end(r, VT_RUN_SUCCEEDED, NULL));
    for (int i = 0; i < PROCS; i++) {
        int st;
        VT_CHECK_EQ(waitpid(pids[i], &st, 0), pids[i]);
        VT_CHECK(WIFEXITED(st));
        VT_CHECK_EQ(WEXITSTATUS(st), 0);
    }
    for (int i = 0; i < PROCS; i++) {
        char id[16];
        snprintf(id, sizeof id, "p%d", i);
        VT_CHECK(each_once(s, id, 1, per, i));
    }
    VT_CHECK(each_once(s, "parent", 1, per, PROCS));
    vt_run_info *runs;
    size_t n;
    VT_CHECK_OK(vt_store_runs(s, 0, &runs, &n));
    VT_CHECK_EQ(n, PROCS + 1);
    for (size_t i = 0; i < n; i++)
        VT_CHECK_EQ(runs[i].status, VT_RUN_SUCCEEDED);
    vt_store_runs_free(runs, n);
    vt_store_close(s);
    VT_CHECK(integrity_ok(t.path));
    tmp_remove(&t);
}

/* ---- Open and close in a loop -------------------------------------------------------------- */

typedef struct churn {
    const char *path;
    int id, rounds;
    vt_err err;
} churn;

static void *churn_loop(void *arg)
{
    churn *c = arg;
    char id[16], name[32];
    for (int i = 0; i < c->rounds && !c->err; i++) {
        vt_store *s;
        vt__store_run *r;
        snprintf(id, sizeof id, "c%d", c->id);
        if ((c->err = vt_store_open(&s, c->path, NULL)))
            break;
        if (!(c->err = vt__store_run_begin(s, id, "g", 0, &r, NULL))) {
            snprintf(name, sizeof name, "w%d/%d", c->id, i);
            c->err = record(r, name, VT_TASK_SUCCEEDED, name, strlen(name), NULL, 0);
            vt_err e = vt__store_run_end(r, VT_RUN_SUCCEEDED, NULL);
            c->err = c->err ? c->err : e;
        }
        vt_store_close(s);
    }
    return NULL;
}

VT_TEST(stores_opened_and_closed_from_many_threads)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    vt_store *s;
    VT_CHECK_OK(vt_store_open(&s, t.path, NULL));
    enum { THREADS = 4 };
    int rounds = 60 * (int)vt_test_stress();
    churn c[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        c[i] = (churn){t.path, i, rounds, VT_OK};
        VT_CHECK_EQ(pthread_create(&th[i], NULL, churn_loop, &c[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        VT_CHECK_OK(c[i].err);
    }
    for (int i = 0; i < THREADS; i++) {
        char id[16];
        snprintf(id, sizeof id, "c%d", i);
        VT_CHECK(each_once(s, id, 1, rounds, i));
    }
    vt_run_info *runs;
    size_t n;
    VT_CHECK_OK(vt_store_runs(s, 0, &runs, &n));
    VT_CHECK_EQ(n, THREADS);
    for (size_t i = 0; i < n; i++)
        VT_CHECK_EQ(runs[i].starts, (unsigned)rounds);
    vt_store_runs_free(runs, n);
    vt_store_close(s);
    tmp_remove(&t);
}

/* ---- Resume against a model ---------------------------------------------------------------- */

enum { TASKS = 64 };

typedef struct model {
    int state[TASKS]; /* -1: never recorded */
    unsigned gen[TASKS];
    int seen;
} model;

static vt_err check_loaded(void *ud, const char *name, const void *fp, size_t fpl, const void *res,
                           size_t resl)
{
    model *m = ud;
    int k;
    unsigned g;
    if (sscanf(name, "t%d", &k) != 1 || k < 0 || k >= TASKS || m->state[k] != VT_TASK_SUCCEEDED)
        return VT_ERANGE;
    char want[32];
    snprintf(want, sizeof want, "fp-%d-%u", k, m->gen[k]);
    if (fpl != strlen(want) || memcmp(fp, want, fpl) != 0 || resl != sizeof g)
        return VT_ERANGE;
    memcpy(&g, res, sizeof g);
    if (g != m->gen[k])
        return VT_ERANGE;
    m->seen++;
    return VT_OK;
}

VT_TEST(resumed_many_times_latest_record_wins)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    vt_store *s;
    VT_CHECK_OK(vt_store_open(&s, t.path, NULL));
    model m;
    for (int k = 0; k < TASKS; k++)
        m.state[k] = -1;
    memset(m.gen, 0, sizeof m.gen);
    int starts = 40 * (int)vt_test_stress();
    unsigned gen = 0;
    for (int i = 0; i < starts; i++) {
        vt__store_run *r;
        int resumed;
        VT_CHECK_OK(vt__store_run_begin(s, "r", "g", TASKS, &r, &resumed));
        VT_CHECK_EQ(resumed, i > 0);
        int want = 0;
        for (int k = 0; k < TASKS; k++)
            want += m.state[k] == VT_TASK_SUCCEEDED;
        m.seen = 0;
        VT_CHECK_OK(vt__store_load_succeeded(r, check_loaded, &m));
        VT_CHECK_EQ(m.seen, want);
        /* Some tasks run again, each ending in any final state. */
        for (int j = 0; j < 20; j++) {
            int k = (int)(vt_test_rand() % TASKS);
            static const vt_task_state ends[] = {VT_TASK_SUCCEEDED, VT_TASK_SUCCEEDED,
                                                 VT_TASK_FAILED, VT_TASK_CANCELLED,
                                                 VT_TASK_SKIPPED};
            vt_task_state st = ends[vt_test_rand() % 5];
            char name[16], fp[32];
            snprintf(name, sizeof name, "t%d", k);
            m.gen[k] = ++gen;
            snprintf(fp, sizeof fp, "fp-%d-%u", k, gen);
            VT_CHECK_OK(record(r, name, st, fp, strlen(fp), &gen, sizeof gen));
            m.state[k] = (int)st;
        }
        /* Half the starts end; the others are abandoned (as a crash
         * would), which the next start resumes all the same. */
        if (vt_test_rand() % 2)
            VT_CHECK_OK(vt__store_run_end(r, VT_RUN_FAILED, NULL));
        else
            VT_CHECK_ERR(vt__store_run_end(r, VT_RUN_RUNNING, NULL), VT_EINVAL);
    }
    vt_task_record *tr;
    size_t n;
    VT_CHECK_OK(vt_store_run_tasks(s, "r", &tr, &n));
    size_t recorded = 0;
    for (int k = 0; k < TASKS; k++)
        recorded += m.state[k] >= 0;
    VT_CHECK_EQ(n, recorded);
    for (size_t i = 1; i < n; i++) {
        unsigned g0, g1;
        memcpy(&g0, tr[i - 1].result, sizeof g0);
        memcpy(&g1, tr[i].result, sizeof g1);
        VT_CHECK_LT(g0, g1); /* in the order of their latest records */
    }
    vt_store_run_tasks_free(tr, n);
    vt_store_close(s);
    tmp_remove(&t);
}

/* ---- kill -9 ------------------------------------------------------------------------------------ */

/* Child: records batches of large results and flushes, reporting each
 * flushed total on fd; until killed. */
static void kill_child(const char *path, int fd, int big)
{
    vt_store *s;
    vt__store_run *r;
    vt_store_opts o = {.batch_tasks = 16};
    if (vt_store_open(&s, path, &o) || vt__store_run_begin(s, "k", "g", 0, &r, NULL))
        _exit(1);
    size_t resl = big ? 256 * 1024 : 100;
    unsigned char *res = malloc(resl);
    if (!res)
        _exit(2);
    char name[32];
    for (uint64_t i = 0;;) {
        for (int j = 0; j < 37; j++, i++) {
            memset(res, (int)(i & 0xff), resl);
            snprintf(name, sizeof name, "k%llu", (unsigned long long)i);
            if (record(r, name, VT_TASK_SUCCEEDED, NULL, 0, res, resl))
                _exit(3);
        }
        if (vt__store_flush(r))
            _exit(4);
        if (write(fd, &i, sizeof i) != (ssize_t)sizeof i)
            _exit(5);
    }
}

static void kill_round(const char *p, int big)
{
    int fds[2];
    VT_CHECK_EQ(pipe2(fds, O_CLOEXEC), 0);
    pid_t pid = spawn(big ? "kill-big" : "kill", p, fds[1], 0);
    VT_CHECK_GE(pid, 0);
    close(fds[1]);
    uint64_t flushed = 0, v;
    unsigned reports = 1 + (unsigned)(vt_test_rand() % 8);
    for (unsigned i = 0; i < reports && read(fds[0], &v, sizeof v) == (ssize_t)sizeof v; i++)
        flushed = v;
    struct timespec pause = {0, (long)(vt_test_rand() % 5000000)};
    nanosleep(&pause, NULL);
    kill(pid, SIGKILL);
    while (read(fds[0], &v, sizeof v) == (ssize_t)sizeof v)
        flushed = v;
    close(fds[0]);
    int st;
    VT_CHECK_EQ(waitpid(pid, &st, 0), pid);
    VT_CHECK(WIFSIGNALED(st));
    VT_CHECK_GT(flushed, 0);

    VT_CHECK(integrity_ok(p));
    vt_store *s;
    VT_CHECK_OK(vt_store_open(&s, p, NULL));
    vt_task_record *tr;
    size_t n;
    VT_CHECK_OK(vt_store_run_tasks(s, "k", &tr, &n));
    VT_CHECK_GE(n, flushed);
    size_t below = 0;
    int intact = 1;
    for (size_t i = 0; i < n; i++) {
        unsigned long long k;
        if (sscanf(tr[i].name, "k%llu", &k) != 1)
            intact = 0;
        else if (k < flushed)
            below++;
        for (size_t b = 0; intact && b < tr[i].result_len; b += 4096)
            intact = ((unsigned char *)tr[i].result)[b] == (unsigned char)(k & 0xff);
    }
    vt_store_run_tasks_free(tr, n);
    VT_CHECK(intact);
    VT_CHECK_EQ(below, flushed);
    vt_run_info *runs;
    VT_CHECK_OK(vt_store_runs(s, 0, &runs, &n));
    VT_CHECK_EQ(n, 1);
    VT_CHECK_EQ(runs[0].status, VT_RUN_INTERRUPTED);
    vt_store_runs_free(runs, n);
    VT_CHECK_OK(vt_store_delete_run(s, "k"));
    vt_store_close(s);
}

VT_TEST(kill_9_at_random_moments)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    int rounds = 8 * (int)vt_test_stress();
    for (int i = 0; i < rounds; i++)
        kill_round(t.path, i % 2);
    tmp_remove(&t);
}

__attribute__((constructor)) static void child_role(void)
{
    const char *role = getenv("VT_STORE_CHILD");
    if (!role)
        return;
    const char *path = getenv("VT_STORE_PATH");
    int up = atoi(getenv("VT_STORE_UP") ? getenv("VT_STORE_UP") : "-1");
    int arg = atoi(getenv("VT_STORE_ARG") ? getenv("VT_STORE_ARG") : "0");
    if (strcmp(role, "writer") == 0)
        exit(proc_writer(path, arg));
    if (strcmp(role, "kill") == 0 || strcmp(role, "kill-big") == 0)
        kill_child(path, up, strcmp(role, "kill-big") == 0);
    exit(125);
}
