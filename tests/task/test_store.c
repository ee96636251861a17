/* The task store: opening (new, existing, read-only, and every way a file
 * can be wrong), runs and their records, resume (latest record of a name
 * wins), history, liveness of a run's process (EBUSY while it lives,
 * INTERRUPTED once it died), batching, flush errors, allocation failures,
 * and that a record flushed before a kill -9 is in the file afterwards.
 * The store's internal calls (task_int.h) are driven directly, without an
 * executor. Files live under a mkdtemp directory removed at the end. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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
} tmp;

static int tmp_make(tmp *t)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/vt-store-XXXXXX");
    return mkdtemp(t->dir) ? 0 : -1;
}

static void tmp_remove(tmp *t)
{
    nftw(t->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *tmp_path(tmp *t, const char *name, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", t->dir, name);
    return buf;
}

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static int file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* One integer from sql on a connection of our own; -1 on error. */
static long long raw_int(const char *path, const char *sql)
{
    sqlite3 *db;
    long long v = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
            if (sqlite3_step(st) == SQLITE_ROW)
                v = sqlite3_column_int64(st, 0);
            sqlite3_finalize(st);
        }
    }
    sqlite3_close(db);
    return v;
}

/* The first text column of sql's first row into buf ("" on error). */
static const char *raw_text(const char *path, const char *sql, char *buf, size_t size)
{
    sqlite3 *db;
    buf[0] = 0;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
            if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
                snprintf(buf, size, "%s", (const char *)sqlite3_column_text(st, 0));
            sqlite3_finalize(st);
        }
    }
    sqlite3_close(db);
    return buf;
}

static int raw_exec(const char *path, const char *sql)
{
    sqlite3 *db;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(db, 5000);
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    }
    sqlite3_close(db);
    return rc;
}

static int integrity_ok(const char *path)
{
    char buf[64];
    return strcmp(raw_text(path, "PRAGMA integrity_check", buf, sizeof buf), "ok") == 0;
}

static vt__store_rec rec_of(const char *name, vt_task_state state)
{
    vt__store_rec r;
    memset(&r, 0, sizeof r);
    r.name = name;
    r.state = state;
    r.attempts = 1;
    r.error = "";
    r.started_unix_ns = vt__wall_ns();
    r.ended_unix_ns = r.started_unix_ns + 1000;
    return r;
}

static vt_err record_simple(vt__store_run *r, const char *name, vt_task_state state, const char *fp,
                            const char *res)
{
    vt__store_rec rec = rec_of(name, state);
    rec.fingerprint = fp;
    rec.fingerprint_len = fp ? strlen(fp) : 0;
    rec.result = res;
    rec.result_len = res ? strlen(res) : 0;
    return vt__store_record(r, &rec);
}

static int contains(const char *hay, const char *needle)
{
    return hay && strstr(hay, needle) != NULL;
}

/* The tasks of run id as a freshly opened read-only store sees them. */
static vt_err tasks_seen(const char *path, const char *id, size_t *n)
{
    vt_store *ro;
    vt_store_opts o = {.read_only = 1};
    vt_err e = vt_store_open(&ro, path, &o);
    if (e)
        return e;
    vt_task_record *t;
    e = vt_store_run_tasks(ro, id, &t, n);
    if (!e)
        vt_store_run_tasks_free(t, *n);
    vt_store_close(ro);
    return e;
}

static const vt_run_info *find_run(const vt_run_info *v, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].id, id) == 0)
            return &v[i];
    return NULL;
}

/* Child processes are fresh ones (fork, then exec of this very program),
 * not bare forks: a store starts a thread, which ThreadSanitizer does not
 * allow in a fork of a threaded process, and a real second process of a
 * vitte user is a fresh one too. The child's role comes in the
 * environment and runs from a constructor, before the harness's main. */
extern char **environ;

static pid_t spawn(const char *role, const char *path, int up, int down, int arg)
{
    static char e_role[64], e_path[256], e_up[32], e_down[32], e_arg[32];
    snprintf(e_role, sizeof e_role, "VT_STORE_CHILD=%s", role);
    snprintf(e_path, sizeof e_path, "VT_STORE_PATH=%s", path);
    snprintf(e_up, sizeof e_up, "VT_STORE_UP=%d", up);
    snprintf(e_down, sizeof e_down, "VT_STORE_DOWN=%d", down);
    snprintf(e_arg, sizeof e_arg, "VT_STORE_ARG=%d", arg);
    size_t n = 0;
    while (environ[n])
        n++;
    char **envp = calloc(n + 6, sizeof *envp);
    if (!envp)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "VT_STORE_", 9) != 0)
            envp[k++] = environ[i];
    envp[k++] = e_role;
    envp[k++] = e_path;
    envp[k++] = e_up;
    envp[k++] = e_down;
    envp[k++] = e_arg;
    char *argv[] = {"test_store", NULL};
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        /* The test's pipes are close-on-exec but for the child's ends. */
        if (up >= 0)
            fcntl(up, F_SETFD, 0);
        if (down >= 0)
            fcntl(down, F_SETFD, 0);
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

/* ---- Names and clock --------------------------------------------------------------- */

VT_TEST(status_names)
{
    VT_CHECK_STR_EQ(vt_run_status_name(VT_RUN_RUNNING), "running");
    VT_CHECK_STR_EQ(vt_run_status_name(VT_RUN_SUCCEEDED), "succeeded");
    VT_CHECK_STR_EQ(vt_run_status_name(VT_RUN_FAILED), "failed");
    VT_CHECK_STR_EQ(vt_run_status_name(VT_RUN_CANCELLED), "cancelled");
    VT_CHECK_STR_EQ(vt_run_status_name(VT_RUN_INTERRUPTED), "interrupted");
    VT_CHECK_STR_EQ(vt_run_status_name((vt_run_status)5), "?");
    VT_CHECK_STR_EQ(vt_run_status_name((vt_run_status)-1), "?");
}

VT_TEST(wall_clock_is_realtime)
{
    struct timespec a, b;
    clock_gettime(CLOCK_REALTIME, &a);
    int64_t w = vt__wall_ns();
    clock_gettime(CLOCK_REALTIME, &b);
    VT_CHECK_LE((int64_t)a.tv_sec * 1000000000 + a.tv_nsec, w);
    VT_CHECK_LE(w, (int64_t)b.tv_sec * 1000000000 + b.tv_nsec);
}

/* ---- Opening ----------------------------------------------------------------------- */

VT_TEST(open_bad_arguments)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    char p[128];
    tmp_path(&t, "s.db", p, sizeof p);
    vt_store *s = (vt_store *)&t;
    VT_CHECK_ERR(vt_store_open(NULL, p, NULL), VT_EINVAL);
    VT_CHECK_NE(vt_store_last_error()[0], 0);
    VT_CHECK_ERR(vt_store_open(&s, NULL, NULL), VT_EINVAL);
    VT_CHECK_NULL(s);
    VT_CHECK_ERR(vt_store_open(&s, "", NULL), VT_EINVAL);
    vt_store_opts bad[] = {{.read_only = 2},      {.synchronous_full = -1}, {.batch_ns = -1},
                           {.batch_ns = VT_SEC(3601)}, {.batch_tasks = (1u << 20) + 1}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        VT_CHECK_ERR(vt_store_open(&s, p, &bad[i]), VT_EINVAL);
        VT_CHECK(contains(vt_store_last_error(), p));
    }
    VT_CHECK(!file_exists(p));
    vt_store_close(NULL);
    tmp_remove(&t);
}

VT_TEST(open_creates_a_wal_store)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    char p[128], buf[64];
    tmp_path(&t, "s.db", p, sizeof p);
    vt_store *s;
    VT_CHECK_OK(vt_store_open(&s, p, NULL));
    VT_CHECK_STR_EQ(vt_store_last_error(), "");
    VT_CHECK(file_exists(p));
    vt_run_info *runs;
    size_t n = 99;
    VT_CHECK_OK(vt_store_runs(s, 0, &runs, &n));
    VT_CHECK_EQ(n, 0);
    vt_store_runs_free(runs, n);
    vt_store_close(s);

    VT_CHECK_EQ(raw_int(p, "PRAGMA application_id"), 0x76745453);
    VT_CHECK_EQ(raw_int(p, "SELECT value FROM meta WHERE key = 'format'"), 1);
    VT_CHECK_STR_EQ(raw_text(p, "SELECT value FROM meta WHERE key = 'application'", buf, sizeof buf),
                    "vitte task store");
    VT_CHECK_STR_EQ(raw_text(p, "PRAGMA journal_mode", buf, sizeof buf), "wal");
    VT_CHECK(integrity_ok(p));
    /* Opened again: the same store, nothing re-created. */
    long long created = raw_int(p, "SELECT value FROM meta WHERE key = 'created_unix_ns'");
    VT_CHECK_GT(created, 0);
    VT_CHECK_OK(vt_store_open(&s, p, NULL));
    vt_store_close(s);
    VT_CHECK_EQ(raw_int(p, "SELECT value FROM meta WHERE key = 'created_unix_ns'"), created);
    tmp_remove(&t);
}

VT_TEST(open_empty_file)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    char p[128];
    tmp_path(&t, "empty.db", p, sizeof p);
    int fd = open(p, O_CREAT | O_WRONLY, 0644);
    VT_CHECK_GE(fd, 0);
    close(fd);
    vt_store *s;
    vt_store_opts ro = {.read_only = 1};
    VT_CHECK_ERR(vt_store_open(&s, p, &ro), VT_EFORMAT);
    VT_CHECK(contains(vt_store_last_error(), p));
    VT_CHECK_OK(vt_store_open(&s, p, NULL)); /* an empty file becomes a store */
    vt_store_close(s);
    VT_CHECK_OK(vt_store_open(&s, p, &ro));
    vt_store_close(s);
    tmp_remove(&t);
}

VT_TEST(open_missing_parent_directory)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    char p[128];
    tmp_path(&t, "no/such/dir/s.db", p, sizeof p);
    vt_store *s = NULL;
    VT_CHECK_ERR(vt_store_open(&s, p, NULL), VT_ESYSERR | ENOENT);
    VT_CHECK_NULL(s);
    VT_CHECK(contains(vt_store_last_error(), p));
    VT_CHECK(contains(vt_store_last_error(), strerror(ENOENT)));
    vt_store_opts ro = {.read_only = 1};
    tmp_path(&t, "absent.db", p, sizeof p);
    VT_CHECK_ERR(vt_store_open(&s, p, &ro), VT_ESYSERR | ENOENT);
    VT_CHECK(contains(vt_store_last_error(), p));
    VT_CHECK(!file_exists(p)); /* read-only never creates */
    tmp_remove(&t);
}

VT_TEST(open_where_nothing_can_be_created)
{
    /* /proc refuses new files whoever asks, root included. */
    const char *p = "/proc/self/vitte-store.db";
    vt_store *s = NULL;
    vt_err e = vt_store_open(&s, p, NULL);
    VT_CHECK_NULL(s);
    VT_CHECK_EQ(e & VT_ESYSERR, VT_ESYSERR);
    VT_CHECK(contains(vt_store_last_error(), p));
    VT_CHECK(contains(vt_store_last_error(), "cannot"));
}

VT_TEST(open_a_directory)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    vt_store *s = NULL;
    VT_CHECK_ERR(vt_store_open(&s, t.dir, NULL), VT_ESYSERR | EISDIR);
    VT_CHECK(contains(vt_store_last_error(), t.dir));
    tmp_remove(&t);
}

/* In a child with a mount namespace of its own: a tmpfs holding a store,
 * remounted read-only. Exit codes: 0 pass, 77 cannot set up, else the
 * number of the failed step. */
static int read_only_fs_child(const char *dir)
{
    if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("tmpfs", dir, "tmpfs", 0, "size=8m") != 0)
        return 77;
    char p[128], q[128];
    snprintf(p, sizeof p, "%s/s.db", dir);
    snprintf(q, sizeof q, "%s/new.db", dir);
    vt_store *s;
    if (vt_store_open(&s, p, NULL))
        return 1;
    vt__store_run *r;
    if (vt__store_run_begin(s, "r1", "g", 1, &r, NULL) || record_simple(r, "a", VT_TASK_SUCCEEDED, NULL, "x") ||
        vt__store_run_end(r, VT_RUN_SUCCEEDED, NULL))
        return 2;
    vt_store_close(s);
    if (mount(NULL, dir, NULL, MS_REMOUNT | MS_RDONLY, NULL) != 0)
        return 77;
    if (vt_store_open(&s, p, NULL) != (VT_ESYSERR | EROFS))
        return 3;
    if (!contains(vt_store_last_error(), p))
        return 4;
    if (vt_store_open(&s, q, NULL) != (VT_ESYSERR | EROFS))
        return 5;
    if (!contains(vt_store_last_error(), q))
        return 6;
    /* History stays readable from a read-only file system. */
    vt_store_opts ro = {.read_only = 1};
    if (vt_store_open(&s, p, &ro))
        return 7;
    vt_run_info *runs;
    size_t n;
    if (vt_store_runs(s, 0, &runs, &n) || n != 1 || runs[0].status != VT_RUN_SUCCEEDED)
        return 8;
    vt_store_runs_free(runs, n);
    vt_store_close(s);
    return 0;
}

VT_TEST(open_on_a_read_only_file_system)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    if (geteuid() != 0) {
        /* Without root, permissions are enough. */
        char p[128];
        tmp_path(&t, "s.db", p, sizeof p);
        VT_CHECK_EQ(chmod(t.dir, 0555), 0);
        vt_store *s;
        VT_CHECK_ERR(vt_store_open(&s, p, NULL), VT_ESYSERR | EACCES);
        VT_CHECK(contains(vt_store_last_error(), p));
        chmod(t.dir, 0755);
        tmp_remove(&t);
        return;
    }
    pid_t pid = spawn("rofs", t.dir, -1, -1, 0);
    VT_CHECK_GE(pid, 0);
    int st;
    VT_CHECK_EQ(waitpid(pid, &st, 0), pid);
    tmp_remove(&t);
    VT_CHECK(WIFEXITED(st));
    if (WEXITSTATUS(st) == 77)
        VT_SKIP("no mount namespace here (needs CAP_SYS_ADMIN)");
    VT_CHECK_EQ(WEXITSTATUS(st), 0);
}

VT_TEST(open_a_file_that_is_not_sqlite)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    char p[128];
    tmp_path(&t, "notes.txt", p, sizeof p);
    static const char text[] =
        "These are my notes, not a database. They go on for a while so that the file is longer "
        "than SQLite's 100-byte header, which is where it would look for its magic string.\n";
    FILE *f = fopen(p, "w");
    VT_CHECK_NOT_NULL(f);
    fputs(text, f);
    fclose(f);
    vt_store *s = NULL;
    VT_CHECK_ERR(vt_store_open(&s, p, NULL), VT_EFORMAT);
    VT_CHECK_NULL(s);
    VT_CHECK(contains(vt_store_last_error(), p));
    VT_CHECK(contains(vt_store_last_error(), "not a SQLite database"));
    vt_store_opts ro = {.read_only = 1};
    VT_CHECK_ERR(vt_store_open(&s, p, &ro), VT_EFORMAT);
    /* Untouched, and no WAL files beside it. */
    char buf[512] = {0};
    f = fopen(p, "r");
    VT_CHECK_NOT_NULL(f);
    size_t got = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    VT_CHECK_EQ(got, strlen(text));
    VT_CHECK_STR_EQ(buf, text);
    char w[160];
    snprintf(w, sizeof w, "%s-wal", p);
    VT_CHECK(!file_exists(w));
    tmp_remove(&t);
}

VT_TEST(open_another_sqlite_database)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    char p[128], buf[64];
    tmp_path(&t, "other.db", p, sizeof p);
    VT_CHECK_EQ(raw_exec(p, "CREATE TABLE people(name TEXT); INSERT INTO people VALUES('ada');"),
                SQLITE_OK);
    vt_store *s = NULL;
    VT_CHECK_ERR(vt_store_open(&s, p, NULL), VT_EFORMAT);
    VT_CHECK(contains(vt_store_last_error(), p));
    VT_CHECK(contains(vt_store_last_error(), "not a vitte task store"));
    /* Its journal mode and content are as they were. */
    VT_CHECK_STR_EQ(raw_text(p, "PRAGMA journal_mode", buf, sizeof buf), "delete");
    VT_CHECK_STR_EQ(raw_text(p, "SELECT name FROM people", buf, sizeof buf), "ada");
    VT_CHECK_EQ(raw_int(p, "SELECT count(*) FROM sqlite_master"), 1);

    /* Ours by its application id but with a meta naming someone else. */
    tmp_path(&t, "liar.db", p, sizeof p);
    VT_CHECK_EQ(raw_exec(p, "PRAGMA application_id = 1987335251;"
                            "CREATE TABLE meta(key TEXT PRIMARY KEY, value);"
                            "INSERT INTO meta VALUES('application','someone else'),('format',1);"),
                SQLITE_OK);
    VT_CHECK_ERR(vt_store_open(&s, p, NULL), VT_EFORMAT);
    VT_CHECK(contains(vt_store_last_error(), p));
    tmp_remove(&t);
}

VT_TEST(open_a_newer_format)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    char p[128];
    tmp_path(&t, "s.db", p, sizeof p);
    vt_store *s;
    VT_CHECK_OK(vt_store_open(&s, p, NULL));
    vt_store_close(s);
    VT_CHECK_EQ(raw_exec(p, "UPDATE meta SET value = 2 WHERE key = 'format'"), SQLITE_OK);
    VT_CHECK_ERR(vt_store_open(&s, p, NULL), VT_EFORMAT);
    VT_CHECK(contains(vt_store_last_error(), p));
    VT_CHECK(contains(vt_store_last_error(), "newer"));
    vt_store_opts ro = {.read_only = 1};
    VT_CHECK_ERR(vt_store_open(&s, p, &ro), VT_EFORMAT);
    /* A store whose meta lost its format number is damaged. */
    VT_CHECK_EQ(raw_exec(p, "DELETE FROM meta WHERE key = 'format'"), SQLITE_OK);
    VT_CHECK_ERR(vt_store_open(&s, p, NULL), VT_ECORRUPT);
    VT_CHECK(contains(vt_store_last_error(), p));
    /* And one whose tables are gone. */
    VT_CHECK_EQ(raw_exec(p, "INSERT INTO meta VALUES('format', 1); DROP TABLE tasks"), SQLITE_OK);
    VT_CHECK_ERR(vt_store_open(&s, p, NULL), VT_ECORRUPT);
    tmp_remove(&t);
}

/* A store of many runs and tasks, checkpointed into the main file. */
static vt_err fill_store(const char *p, int runs, int tasks)
{
    vt_store *s;
    vt_err e = vt_store_open(&s, p, NULL);
    if (e)
        return e;
    char id[32], name[32], res[200];
    memset(res, 'r', sizeof res - 1);
    res[sizeof res - 1] = 0;
    for (int i = 0; i < runs && !e; i++) {
        vt__store_run *r;
        snprintf(id, sizeof id, "run-%d", i);
        if ((e = vt__store_run_begin(s, id, "g", (size_t)tasks, &r, NULL)))
            break;
        for (int k = 0; k < tasks && !e; k++) {
            snprintf(name, sizeof name, "task-%d", k);
            e = record_simple(r, name, VT_TASK_SUCCEEDED, name, res);
        }
        vt_err e2 = vt__store_run_end(r, VT_RUN_SUCCEEDED, NULL);
        e = e ? e : e2;
    }
    vt_store_close(s);
    return e;
}

/* Everything a reader can ask of the store at p: the first error. */
static vt_err read_everything(const char *p)
{
    vt_store *s;
    vt_err e = vt_store_open(&s, p, NULL);
    if (e)
        return e;
    vt_run_info *runs;
    size_t n;
    if (!(e = vt_store_runs(s, 0, &runs, &n))) {
        for (size_t i = 0; i < n && !e; i++) {
            vt_task_record *t;
            size_t m;
            if (!(e = vt_store_run_tasks(s, runs[i].id, &t, &m)))
                vt_store_run_tasks_free(t, m);
        }
        vt_store_runs_free(runs, n);
    }
    vt_store_close(s);
    return e;
}

VT_TEST(damaged_store_is_reported)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    char p[128];
    tmp_path(&t, "s.db", p, sizeof p);
    VT_CHECK_OK(fill_store(p, 4, 300));
    VT_CHECK(integrity_ok(p));
    VT_CHECK_OK(read_everything(p));
    struct stat st;
    VT_CHECK_EQ(stat(p, &st), 0);
    VT_CHECK_GT(st.st_size, 64 * 4096);
    /* Garbage over the middle third: table pages, whatever they hold. */
    int fd = open(p, O_WRONLY);
    VT_CHECK_GE(fd, 0);
    off_t from = st.st_size / 3, to = 2 * st.st_size / 3;
    char junk[4096];
    for (off_t o = from; o < to; o += (off_t)sizeof junk) {
        for (size_t i = 0; i < sizeof junk; i += 8) {
            uint64_t r = vt_test_rand();
            memcpy(junk + i, &r, 8);
        }
        VT_CHECK_EQ(pwrite(fd, junk, sizeof junk, o), (ssize_t)sizeof junk);
    }
    close(fd);
    VT_CHECK(!integrity_ok(p));
    VT_CHECK_ERR(read_everything(p), VT_ECORRUPT);
    VT_CHECK(contains(vt_store_last_error(), p));
    VT_CHECK(contains(vt_store_last_error(), "damaged"));

    /* A damaged first page (past the header: the schema) fails the open. */
    tmp_path(&t, "s2.db", p, sizeof p);
    VT_CHECK_OK(fill_store(p, 1, 10));
    fd = open(p, O_WRONLY);
    VT_CHECK_GE(fd, 0);
    /* Everything after the 100-byte file header: the page holding the
     * schema, cells included (they sit at the page's end). */
    memset(junk, 0x5a, sizeof junk);
    VT_CHECK_EQ(pwrite(fd, junk, 4096 - 100, 100), 4096 - 100);
    close(fd);
    vt_store *s = NULL;
    VT_CHECK_ERR(vt_store_open(&s, p, NULL), VT_ECORRUPT);
    VT_CHECK(contains(vt_store_last_error(), p));
    tmp_remove(&t);
}

VT_TEST(read_only_store)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    char p[128];
    tmp_path(&t, "s.db", p, sizeof p);
    VT_CHECK_OK(fill_store(p, 2, 3));
    vt_store *s;
    vt_store_opts ro = {.read_only = 1};
    VT_CHECK_OK(vt_store_open(&s, p, &ro));
    vt__store_run *r = (vt__store_run *)&t;
    VT_CHECK_ERR(vt__store_run_begin(s, "run-9", "g", 1, &r, NULL), VT_ESTATE);
    VT_CHECK_NULL(r);
    VT_CHECK(contains(vt_store_last_error(), "read-only"));
    VT_CHECK_ERR(vt_store_delete_run(s, "run-0"), VT_ESTATE);
    vt_run_info *runs;
    size_t n;
    VT_CHECK_OK(vt_store_runs(s, 0, &runs, &n));
    VT_CHECK_EQ(n, 2);
    vt_store_runs_free(runs, n);
    vt_task_record *tr;
    VT_CHECK_OK(vt_store_run_tasks(s, "run-1", &tr, &n));
    VT_CHECK_EQ(n, 3);
    vt_store_run_tasks_free(tr, n);
    vt_store_close(s);
    tmp_remove(&t);
}

static void *last_error_of_new_thread(void *arg)
{
    snprintf(arg, 8, "%s", vt_store_last_error());
    return NULL;
}

VT_TEST(last_error_is_per_thread)
{
    VT_CHECK_ERR(vt_store_open(NULL, "x", NULL), VT_EINVAL);
    VT_CHECK_NE(vt_store_last_error()[0], 0);
    char other[8] = "?";
    pthread_t th;
    VT_CHECK_EQ(pthread_create(&th, NULL, last_error_of_new_thread, other), 0);
    pthread_join(th, NULL);
    VT_CHECK_STR_EQ(other, "");
    VT_CHECK_NE(vt_store_last_error()[0], 0);
}

/* ---- Runs and records ---------------------------------------------------------------- */

VT_TEST(run_begin_bad_arguments)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    char p[128];
    tmp_path(&t, "s.db", p, sizeof p);
    vt_store *s;
    VT_CHECK_OK(vt_store_open(&s, p, NULL));
    vt__store_run *r = (vt__store_run *)&t;
    int resumed = 7;
    VT_CHECK_ERR(vt__store_run_begin(NULL, "a", "g", 0, &r, &resumed), VT_EINVAL);
    VT_CHECK_NULL(r);
    VT_CHECK_EQ(resumed, 0);
    VT_CHECK_ERR(vt__store_run_begin(s, NULL, "g", 0, &r, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt__store_run_begin(s, "a", "g", 0, NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt__store_run_begin(s, "", "g", 0, &r, NULL), VT_EINVAL);
    char id[VT_RUN_ID_MAX + 1];
    memset(id, 'i', VT_RUN_ID_MAX);
    id[VT_RUN_ID_MAX] = 0;
    VT_CHECK_ERR(vt__store_run_begin(s, id, "g", 0, &r, NULL), VT_EINVAL);
    VT_CHECK(contains(vt_store_last_error(), p));
    id[VT_RUN_ID_MAX - 1] = 0; /* the longest id there is */
    VT_CHECK_OK(vt__store_run_begin(s, id, NULL, 0, &r, &resumed));
    VT_CHECK_EQ(resumed, 0);
    VT_CHECK_ERR(vt__store_record(NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt__store_record(r, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt__store_flush(NULL), VT_EINVAL);
    VT_CHECK_ERR(vt__store_load_succeeded(NULL, NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt__store_load_succeeded(r, NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt__store_run_end(NULL, VT_RUN_SUCCEEDED, NULL), VT_EINVAL);
    VT_CHECK_OK(vt__store_run_end(r, VT_RUN_SUCCEEDED, NULL));
    vt_run_info *runs;
    size_t n;
    VT_CHECK_OK(vt_store_runs(s, 0, &runs, &n));
    VT_CHECK_EQ(n, 1);
    VT_CHECK_STR_EQ(runs[0].id, id);
    VT_CHECK_STR_EQ(runs[0].graph, "graph");
    vt_store_runs_free(runs, n);
    VT_CHECK_ERR(vt_store_runs(NULL, 0, &runs, &n), VT_EINVAL);
    VT_CHECK_ERR(vt_store_runs(s, 0, NULL, &n), VT_EINVAL);
    VT_CHECK_ERR(vt_store_runs(s, 0, &runs, NULL), VT_EINVAL);
    vt_task_record *tr;
    VT_CHECK_ERR(vt_store_run_tasks(NULL, "a", &tr, &n), VT_EINVAL);
    VT_CHECK_ERR(vt_store_run_tasks(s, NULL, &tr, &n), VT_EINVAL);
    VT_CHECK_ERR(vt_store_run_tasks(s, "a", NULL, &n), VT_EINVAL);
    VT_CHECK_ERR(vt_store_run_tasks(s, "a", &tr, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_store_run_tasks(s, "no-such-run", &tr, &n), VT_ENOENT);
    VT_CHECK(contains(vt_store_last_error(), "no-such-run"));
    VT_CHECK_ERR(vt_store_delete_run(NULL, "a"), VT_EINVAL);
    VT_CHECK_ERR(vt_store_delete_run(s, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_store_delete_run(s, "no-such-run"), VT_ENOENT);
    vt_store_run_tasks_free(NULL, 0);
    vt_store_runs_free(NULL, 0);
    vt_store_close(s);
    tmp_remove(&t);
}

VT_TEST(records_round_trip)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    char p[128];
    tmp_path(&t, "s.db", p, sizeof p);
    vt_store *s;
    VT_CHECK_OK(vt_store_open(&s, p, NULL));
    vt__store_run *r;
    int64_t t0 = vt__wall_ns();
    VT_CHECK_OK(vt__store_run_begin(s, "r1", "build", 5, &r, NULL));
    /* Every field, and the three kinds of blob: none, empty, some bytes. */
    static const unsigned char bin[] = {0, 1, 2, 0xff, 0, 7};
    vt__store_rec a = rec_of("compile", VT_TASK_SUCCEEDED);
    a.attempts = 3;
    a.started_unix_ns = 1000;
    a.ended_unix_ns = 2000;
    a.fingerprint = bin;
    a.fingerprint_len = sizeof bin;
    a.result = "obj";
    a.result_len = 3;
    vt__store_rec b = rec_of("link", VT_TASK_FAILED);
    b.err = VT_ESYSERR | EPIPE;
    b.error = "ld: broken pipe — ünïcode kept";
    b.started_unix_ns = 2100;
    b.ended_unix_ns = 3000;
    b.fingerprint = "";
    b.fingerprint_len = 0;
    vt__store_rec c = rec_of("compile/sub", VT_TASK_SKIPPED);
    c.attempts = 0;
    c.started_unix_ns = 0;
    c.ended_unix_ns = 3100;
    c.result = "";
    c.result_len = 0;
    vt__store_rec d = rec_of("restored-one", VT_TASK_SUCCEEDED);
    d.restored = 1;
    d.attempts = 0;
    d.ended_unix_ns = 3200;
    vt__store_rec e = rec_of("cancelled-one", VT_TASK_CANCELLED);
    e.err = VT_ECANCELED;
    e.error = NULL; /* NULL reads as "" */
    e.ended_unix_ns = 3300;
    VT_CHECK_OK(vt__store_record(r, &a));
    VT_CHECK_OK(vt__store_record(r, &b));
    VT_CHECK_OK(vt__store_record(r, &c));
    VT_CHECK_OK(vt__store_record(r, &d));
    VT_CHECK_OK(vt__store_record(r, &e));
    VT_CHECK_OK(vt__store_flush(r));
    /* A flush with nothing queued returns at once. */
    VT_CHECK_OK(vt__store_flush(r));

    vt_task_record *tr;
    size_t n;
    VT_CHECK_OK(vt_store_run_tasks(s, "r1", &tr, &n));
    VT_CHECK_EQ(n, 5);
    VT_CHECK_STR_EQ(tr[0].name, "compile");
    VT_CHECK_EQ(tr[0].state, VT_TASK_SUCCEEDED);
    VT_CHECK_EQ(tr[0].attempts, 3);
    VT_CHECK_EQ(tr[0].restored, 0);
    VT_CHECK_EQ(tr[0].err, VT_OK);
    VT_CHECK_STR_EQ(tr[0].error, "");
    VT_CHECK_EQ(tr[0].started_unix_ns, 1000);
    VT_CHECK_EQ(tr[0].ended_unix_ns, 2000);
    VT_CHECK_EQ(tr[0].fingerprint_len, sizeof bin);
    VT_CHECK_EQ(memcmp(tr[0].fingerprint, bin, sizeof bin), 0);
    VT_CHECK_EQ(tr[0].result_len, 3);
    VT_CHECK_EQ(memcmp(tr[0].result, "obj", 3), 0);
    VT_CHECK_STR_EQ(tr[1].name, "link");
    VT_CHECK_EQ(tr[1].state, VT_TASK_FAILED);
    VT_CHECK_EQ(tr[1].err, VT_ESYSERR | EPIPE);
    VT_CHECK_STR_EQ(tr[1].error, "ld: broken pipe — ünïcode kept");
    VT_CHECK_NOT_NULL(tr[1].fingerprint); /* empty, not absent */
    VT_CHECK_EQ(tr[1].fingerprint_len, 0);
    VT_CHECK_NULL(tr[1].result);
    VT_CHECK_STR_EQ(tr[2].name, "compile/sub");
    VT_CHECK_EQ(tr[2].state, VT_TASK_SKIPPED);
    VT_CHECK_EQ(tr[2].started_unix_ns, 0);
    VT_CHECK_NULL(tr[2].fingerprint);
    VT_CHECK_NOT_NULL(tr[2].result);
    VT_CHECK_EQ(tr[2].result_len, 0);
    VT_CHECK_STR_EQ(tr[3].name, "restored-one");
    VT_CHECK_EQ(tr[3].restored, 1);
    VT_CHECK_STR_EQ(tr[4].name, "cancelled-one");
    VT_CHECK_EQ(tr[4].state, VT_TASK_CANCELLED);
    VT_CHECK_EQ(tr[4].err, VT_ECANCELED);
    VT_CHECK_STR_EQ(tr[4].error, "");
    vt_store_run_tasks_free(tr, n);

    /* While it runs, history counts what was recorded. */
    vt_run_info *runs;
    VT_CHECK_OK(vt_store_runs(s, 0, &runs, &n));
    VT_CHECK_EQ(n, 1);
    VT_CHECK_EQ(runs[0].status, VT_RUN_RUNNING);
    VT_CHECK_STR_EQ(runs[0].graph, "build");
    VT_CHECK_EQ(runs[0].total, 5);
    VT_CHECK_EQ(runs[0].succeeded, 2);
    VT_CHECK_EQ(runs[0].failed, 1);
    VT_CHECK_EQ(runs[0].skipped, 1);
    VT_CHECK_EQ(runs[0].cancelled, 1);
    VT_CHECK_EQ(runs[0].restored, 1);
    VT_CHECK_EQ(runs[0].ended_unix_ns, 0);
    vt_store_runs_free(runs, n);

    vt_run_summary sum = {.total = 6, .succeeded = 2, .restored = 1, .failed = 1, .cancelled = 1,
                          .skipped = 1};
    VT_CHECK_OK(vt__store_run_end(r, VT_RUN_FAILED, &sum));
    int64_t t1 = vt__wall_ns();
    VT_CHECK_OK(vt_store_runs(s, 0, &runs, &n));
    VT_CHECK_EQ(n, 1);
    VT_CHECK_STR_EQ(runs[0].id, "r1");
    VT_CHECK_EQ(runs[0].status, VT_RUN_FAILED);
    VT_CHECK_EQ(runs[0].starts, 1);
    VT_CHECK_EQ(runs[0].total, 6);
    VT_CHECK_EQ(runs[0].succeeded, 2);
    VT_CHECK_EQ(runs[0].restored, 1);
    VT_CHECK_LE(t0, runs[0].started_unix_ns);
    VT_CHECK_LE(runs[0].started_unix_ns, runs[0].ended_unix_ns);
    VT_CHECK_LE(runs[0].ended_unix_ns, t1);
    vt_store_runs_free(runs, n);
    vt_store_close(s);
    VT_CHECK(integrity_ok(p));
    tmp_remove(&t);
}

VT_TEST(record_limits)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    char p[128];
    tmp_path(&t, "s.db", p, sizeof p);
    vt_store *s;
    VT_CHECK_OK(vt_store_open(&s, p, NULL));
    vt__store_run *r;
    VT_CHECK_OK(vt__store_run_begin(s, "r", "g", 2, &r, NULL));
    unsigned char *big = malloc(VT_RESULT_MAX + 1);
    VT_CHECK_NOT_NULL(big);
    for (size_t i = 0; i <= VT_RESULT_MAX; i++)
        big[i] = (unsigned char)(i * 131 + (i >> 9));
    vt__store_rec rec = rec_of("max", VT_TASK_SUCCEEDED);
    rec.fingerprint = big;
    rec.fingerprint_len = VT_FINGERPRINT_MAX;
    rec.result = big;
    rec.result_len = VT_RESULT_MAX;
    VT_CHECK_OK(vt__store_record(r, &rec));
    rec.name = "too-big";
    rec.result_len = VT_RESULT_MAX + 1;
    VT_CHECK_ERR(vt__store_record(r, &rec), VT_EINVAL);
    rec.result_len = VT_RESULT_MAX;
    rec.fingerprint_len = VT_FINGERPRINT_MAX + 1;
    VT_CHECK_ERR(vt__store_record(r, &rec), VT_EINVAL);
    rec.fingerprint_len = 4;
    rec.fingerprint = NULL;
    VT_CHECK_ERR(vt__store_record(r, &rec), VT_EINVAL);
    rec.fingerprint = big;
    rec.result = NULL;
    VT_CHECK_ERR(vt__store_record(r, &rec), VT_EINVAL);
    rec.result = big;
    rec.state = (vt_task_state)VT_TASK_STATES;
    VT_CHECK_ERR(vt__store_record(r, &rec), VT_EINVAL);
    rec.state = VT_TASK_SUCCEEDED;
    rec.name = NULL;
    VT_CHECK_ERR(vt__store_record(r, &rec), VT_EINVAL);
    /* A long name is fine. */
    char longname[5000];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    VT_CHECK_OK(record_simple(r, longname, VT_TASK_SUCCEEDED, NULL, NULL));
    VT_CHECK_OK(vt__store_run_end(r, VT_RUN_SUCCEEDED, NULL));
    vt_task_record *tr;
    size_t n;
    VT_CHECK_OK(vt_store_run_tasks(s, "r", &tr, &n));
    VT_CHECK_EQ(n, 2);
    VT_CHECK_STR_EQ(tr[0].name, "max");
    VT_CHECK_EQ(tr[0].result_len, VT_RESULT_MAX);
    VT_CHECK_EQ(memcmp(tr[0].result, big, VT_RESULT_MAX), 0);
    VT_CHECK_EQ(tr[0].fingerprint_len, VT_FINGERPRINT_MAX);
    VT_CHECK_EQ(memcmp(tr[0].fingerprint, big, VT_FINGERPRINT_MAX), 0);
    VT_CHECK_STR_EQ(tr[1].name, longname);
    vt_store_run_tasks_free(tr, n);
    free(big);
    vt_store_close(s);
    tmp_remove(&t);
}

typedef struct loaded {
    int n;
    char names[8][32];
    char fp[8][32];
    char res[8][32];
    int stop_at; /* return VT_ECANCELED at this call (1-based); 0 never */
} loaded;

static vt_err collect(void *ud, const char *name, const void *fp, size_t fpl, const void *res,
                      size_t resl)
{
    loaded *l = ud;
    if (l->n >= 8)
        return VT_ERANGE;
    snprintf(l->names[l->n], 32, "%s", name);
    snprintf(l->fp[l->n], 32, "%.*s", fp ? (int)fpl : 4, fp ? (const char *)fp : "null");
    snprintf(l->res[l->n], 32, "%.*s", res ? (int)resl : 4, res ? (const char *)res : "null");
    l->n++;
    return l->stop_at == l->n ? VT_ECANCELED : VT_OK;
}

VT_TEST(resume_restores_the_latest_successes)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    char p[128];
    tmp_path(&t, "s.db", p, sizeof p);
    vt_store *s;
    VT_CHECK_OK(vt_store_open(&s, p, NULL));
    vt__store_run *r;
    int resumed = -1;
    VT_CHECK_OK(vt__store_run_begin(s, "r1", "g", 4, &r, &resumed));
    VT_CHECK_EQ(resumed, 0);
    loaded l = {0};
    VT_CHECK_OK(vt__store_load_succeeded(r, collect, &l));
    VT_CHECK_EQ(l.n, 0);
    VT_CHECK_OK(record_simple(r, "a", VT_TASK_SUCCEEDED, "fa1", "ra1"));
    VT_CHECK_OK(record_simple(r, "b", VT_TASK_FAILED, "fb1", NULL));
    VT_CHECK_OK(record_simple(r, "c", VT_TASK_SUCCEEDED, NULL, "rc1"));
    VT_CHECK_OK(record_simple(r, "d", VT_TASK_SKIPPED, NULL, NULL));
    VT_CHECK_OK(vt__store_run_end(r, VT_RUN_FAILED, NULL));

    /* Another run's successes are not this one's. */
    VT_CHECK_OK(vt__store_run_begin(s, "other", "g", 1, &r, NULL));
    VT_CHECK_OK(record_simple(r, "z", VT_TASK_SUCCEEDED, NULL, NULL));
    VT_CHECK_OK(vt__store_run_end(r, VT_RUN_SUCCEEDED, NULL));

    VT_CHECK_OK(vt__store_run_begin(s, "r1", "g", 4, &r, &resumed));
    VT_CHECK_EQ(resumed, 1);
    VT_CHECK_OK(vt__store_load_succeeded(r, collect, &l));
    VT_CHECK_EQ(l.n, 2);
    VT_CHECK_STR_EQ(l.names[0], "a");
    VT_CHECK_STR_EQ(l.fp[0], "fa1");
    VT_CHECK_STR_EQ(l.res[0], "ra1");
    VT_CHECK_STR_EQ(l.names[1], "c");
    VT_CHECK_STR_EQ(l.fp[1], "null");
    VT_CHECK_STR_EQ(l.res[1], "rc1");
    /* The walk stops at the callback's error, which it returns. */
    loaded stop = {.stop_at = 1};
    VT_CHECK_ERR(vt__store_load_succeeded(r, collect, &stop), VT_ECANCELED);
    VT_CHECK_EQ(stop.n, 1);

    /* This start: b now succeeds, a runs again (new fingerprint) and fails. */
    VT_CHECK_OK(record_simple(r, "b", VT_TASK_SUCCEEDED, "fb2", "rb2"));
    VT_CHECK_OK(record_simple(r, "a", VT_TASK_FAILED, "fa2", NULL));
    VT_CHECK_OK(vt__store_run_end(r, VT_RUN_FAILED, NULL));

    VT_CHECK_OK(vt__store_run_begin(s, "r1", "g", 4, &r, &resumed));
    VT_CHECK_EQ(resumed, 1);
    memset(&l, 0, sizeof l);
    VT_CHECK_OK(vt__store_load_succeeded(r, collect, &l));
    VT_CHECK_EQ(l.n, 2);
    VT_CHECK_STR_EQ(l.names[0], "c");
    VT_CHECK_STR_EQ(l.names[1], "b");
    VT_CHECK_STR_EQ(l.fp[1], "fb2");
    VT_CHECK_STR_EQ(l.res[1], "rb2");
    vt_run_summary sum = {.total = 4, .succeeded = 4, .restored = 2};
    VT_CHECK_OK(record_simple(r, "a", VT_TASK_SUCCEEDED, "fa2", "ra3"));
    VT_CHECK_OK(record_simple(r, "d", VT_TASK_SUCCEEDED, NULL, NULL));
    VT_CHECK_OK(vt__store_run_end(r, VT_RUN_SUCCEEDED, &sum));

    /* One record per name, in the order of their latest records. */
    vt_task_record *tr;
    size_t n;
    VT_CHECK_OK(vt_store_run_tasks(s, "r1", &tr, &n));
    VT_CHECK_EQ(n, 4);
    VT_CHECK_STR_EQ(tr[0].name, "c");
    VT_CHECK_STR_EQ(tr[1].name, "b");
    VT_CHECK_STR_EQ(tr[2].name, "a");
    VT_CHECK_EQ(tr[2].state, VT_TASK_SUCCEEDED);
    VT_CHECK_EQ(memcmp(tr[2].result, "ra3", 3), 0);
    VT_CHECK_STR_EQ(tr[3].name, "d");
    vt_store_run_tasks_free(tr, n);
    vt_run_info *runs;
    VT_CHECK_OK(vt_store_runs(s, 0, &runs, &n));
    const vt_run_info *ri = find_run(runs, n, "r1");
    VT_CHECK_NOT_NULL(ri);
    VT_CHECK_EQ(ri->starts, 3);
    VT_CHECK_EQ(ri->status, VT_RUN_SUCCEEDED);
    VT_CHECK_EQ(ri->restored, 2);
    vt_store_runs_free(runs, n);
    vt_store_close(s);
    tmp_remove(&t);
}

VT_TEST(end_without_summary_counts_the_records)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    char p[128];
    tmp_path(&t, "s.db", p, sizeof p);
    vt_store *s;
    VT_CHECK_OK(vt_store_open(&s, p, NULL));
    vt__store_run *r;
    VT_CHECK_OK(vt__store_run_begin(s, "r", "g", 2, &r, NULL));
    VT_CHECK_OK(record_simple(r, "a", VT_TASK_SUCCEEDED, NULL, NULL));
    VT_CHECK_OK(record_simple(r, "b", VT_TASK_FAILED, NULL, NULL));
    VT_CHECK_OK(record_simple(r, "c", VT_TASK_CANCELLED, NULL, NULL));
    VT_CHECK_OK(vt__store_run_end(r, VT_RUN_CANCELLED, NULL));
    vt_run_info *runs;
    size_t n;
    VT_CHECK_OK(vt_store_runs(s, 0, &runs, &n));
    VT_CHECK_EQ(n, 1);
    VT_CHECK_EQ(runs[0].status, VT_RUN_CANCELLED);
    VT_CHECK_EQ(runs[0].total, 3); /* more recorded than it began with */
    VT_CHECK_EQ(runs[0].succeeded, 1);
    VT_CHECK_EQ(runs[0].failed, 1);
    VT_CHECK_EQ(runs[0].cancelled, 1);
    vt_store_runs_free(runs, n);
    vt_store_close(s);
    tmp_remove(&t);
}

VT_TEST(history_is_newest_first)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    char p[128];
    tmp_path(&t, "s.db", p, sizeof p);
    vt_store *s;
    VT_CHECK_OK(vt_store_open(&s, p, NULL));
    static const char *ids[] = {"first", "second", "third", "fourth"};
    for (int i = 0; i < 4; i++) {
        vt__store_run *r;
        VT_CHECK_OK(vt__store_run_begin(s, ids[i], ids[i], 0, &r, NULL));
        VT_CHECK_OK(vt__store_run_end(r, VT_RUN_SUCCEEDED, NULL));
    }
    /* A resume does not move a run: history is in order of creation. */
    vt__store_run *r;
    VT_CHECK_OK(vt__store_run_begin(s, "second", "second", 0, &r, NULL));
    VT_CHECK_OK(vt__store_run_end(r, VT_RUN_SUCCEEDED, NULL));
    vt_run_info *runs;
    size_t n;
    VT_CHECK_OK(vt_store_runs(s, 0, &runs, &n));
    VT_CHECK_EQ(n, 4);
    for (int i = 0; i < 4; i++)
        VT_CHECK_STR_EQ(runs[i].id, ids[3 - i]);
    VT_CHECK_EQ(runs[2].starts, 2);
    VT_CHECK_LE(runs[3].started_unix_ns, runs[0].started_unix_ns);
    vt_store_runs_free(runs, n);
    VT_CHECK_OK(vt_store_runs(s, 2, &runs, &n));
    VT_CHECK_EQ(n, 2);
    VT_CHECK_STR_EQ(runs[0].id, "fourth");
    VT_CHECK_STR_EQ(runs[1].id, "third");
    vt_store_runs_free(runs, n);
    VT_CHECK_OK(vt_store_runs(s, 100, &runs, &n));
    VT_CHECK_EQ(n, 4);
    vt_store_runs_free(runs, n);

    /* A graph name longer than vt_run_info holds is cut, not overrun,
     * and never inside a UTF-8 character. */
    char g[300];
    size_t k = 0;
    while (k + 2 < sizeof g - 1) {
        g[k++] = (char)0xc3;
        g[k++] = (char)0xa9; /* é */
    }
    g[k] = 0;
    VT_CHECK_OK(vt__store_run_begin(s, "long", g, 0, &r, NULL));
    VT_CHECK_OK(vt__store_run_end(r, VT_RUN_SUCCEEDED, NULL));
    VT_CHECK_OK(vt_store_runs(s, 1, &runs, &n));
    VT_CHECK_EQ(n, 1);
    VT_CHECK_EQ(strlen(runs[0].graph), 126);
    VT_CHECK_EQ(memcmp(runs[0].graph, g, 126), 0);
    vt_store_runs_free(runs, n);
    vt_store_close(s);
    tmp_remove(&t);
}

VT_TEST(delete_run)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    char p[128];
    tmp_path(&t, "s.db", p, sizeof p);
    VT_CHECK_OK(fill_store(p, 3, 5));
    vt_store *s;
    VT_CHECK_OK(vt_store_open(&s, p, NULL));
    VT_CHECK_OK(vt_store_delete_run(s, "run-1"));
    VT_CHECK_ERR(vt_store_delete_run(s, "run-1"), VT_ENOENT);
    vt_task_record *tr;
    size_t n;
    VT_CHECK_ERR(vt_store_run_tasks(s, "run-1", &tr, &n), VT_ENOENT);
    VT_CHECK_OK(vt_store_run_tasks(s, "run-2", &tr, &n));
    VT_CHECK_EQ(n, 5);
    vt_store_run_tasks_free(tr, n);
    vt_run_info *runs;
    VT_CHECK_OK(vt_store_runs(s, 0, &runs, &n));
    VT_CHECK_EQ(n, 2);
    VT_CHECK_STR_EQ(runs[0].id, "run-2");
    VT_CHECK_STR_EQ(runs[1].id, "run-0");
    vt_store_runs_free(runs, n);
    vt_store_close(s);
    VT_CHECK_EQ(raw_int(p, "SELECT count(*) FROM tasks"), 10);
    /* The id can be used again, for a new run. */
    VT_CHECK_OK(vt_store_open(&s, p, NULL));
    vt__store_run *r;
    int resumed = -1;
    VT_CHECK_OK(vt__store_run_begin(s, "run-1", "g", 0, &r, &resumed));
    VT_CHECK_EQ(resumed, 0);
    VT_CHECK_OK(vt__store_run_end(r, VT_RUN_SUCCEEDED, NULL));
    vt_store_close(s);
    VT_CHECK(integrity_ok(p));
    tmp_remove(&t);
}

/* ---- Who runs a run ---------------------------------------------------------------------- */

VT_TEST(busy_in_this_process)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    char p[128];
    tmp_path(&t, "s.db", p, sizeof p);
    vt_store *s, *s2;
    VT_CHECK_OK(vt_store_open(&s, p, NULL));
    VT_CHECK_OK(vt_store_open(&s2, p, NULL));
    vt__store_run *r, *r2 = (vt__store_run *)&t;
    VT_CHECK_OK(vt__store_run_begin(s, "x", "g", 1, &r, NULL));
    VT_CHECK_ERR(vt__store_run_begin(s, "x", "g", 1, &r2, NULL), VT_EBUSY);
    VT_CHECK_NULL(r2);
    VT_CHECK(contains(vt_store_last_error(), "x"));
    /* Another store object on the same file knows too. */
    VT_CHECK_ERR(vt__store_run_begin(s2, "x", "g", 1, &r2, NULL), VT_EBUSY);
    VT_CHECK_ERR(vt_store_delete_run(s, "x"), VT_EBUSY);
    VT_CHECK_ERR(vt_store_delete_run(s2, "x"), VT_EBUSY);
    vt_run_info *runs;
    size_t n;
    VT_CHECK_OK(vt_store_runs(s2, 0, &runs, &n));
    VT_CHECK_EQ(n, 1);
    VT_CHECK_EQ(runs[0].status, VT_RUN_RUNNING);
    vt_store_runs_free(runs, n);
    /* Other ids run side by side. */
    VT_CHECK_OK(vt__store_run_begin(s2, "y", "g", 1, &r2, NULL));
    VT_CHECK_OK(record_simple(r, "a", VT_TASK_SUCCEEDED, NULL, NULL));
    VT_CHECK_OK(record_simple(r2, "a", VT_TASK_SUCCEEDED, NULL, NULL));
    VT_CHECK_OK(vt__store_run_end(r2, VT_RUN_SUCCEEDED, NULL));
    VT_CHECK_OK(vt__store_run_end(r, VT_RUN_SUCCEEDED, NULL));
    int resumed = 0;
    VT_CHECK_OK(vt__store_run_begin(s2, "x", "g", 1, &r2, &resumed));
    VT_CHECK_EQ(resumed, 1);
    VT_CHECK_OK(vt__store_run_end(r2, VT_RUN_SUCCEEDED, NULL));
    VT_CHECK_OK(vt_store_delete_run(s, "x"));
    vt_store_close(s2);
    vt_store_close(s);
    tmp_remove(&t);
}

VT_TEST(run_left_running_by_this_process_reads_as_interrupted)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    char p[128];
    tmp_path(&t, "s.db", p, sizeof p);
    vt_store *s;
    VT_CHECK_OK(vt_store_open(&s, p, NULL));
    vt__store_run *r;
    VT_CHECK_OK(vt__store_run_begin(s, "x", "g", 1, &r, NULL));
    VT_CHECK_OK(record_simple(r, "a", VT_TASK_SUCCEEDED, NULL, NULL));
    /* RUNNING is no end: r is released, the row stays RUNNING, and with
     * nothing of this process running it, it is over. */
    VT_CHECK_ERR(vt__store_run_end(r, VT_RUN_RUNNING, NULL), VT_EINVAL);
    vt_run_info *runs;
    size_t n;
    VT_CHECK_OK(vt_store_runs(s, 0, &runs, &n));
    VT_CHECK_EQ(n, 1);
    VT_CHECK_EQ(runs[0].status, VT_RUN_INTERRUPTED);
    VT_CHECK_EQ(runs[0].succeeded, 1);
    vt_store_runs_free(runs, n);
    int resumed = 0;
    VT_CHECK_OK(vt__store_run_begin(s, "x", "g", 1, &r, &resumed));
    VT_CHECK_EQ(resumed, 1);
    VT_CHECK_OK(vt__store_run_end(r, VT_RUN_SUCCEEDED, NULL));
    vt_store_close(s);
    tmp_remove(&t);
}

/* Child: begins run id, records k tasks, flushes, then tells the parent
 * (one byte on up) and waits for a byte on down (or its end) before ending
 * the run — or not, when end is 0. */
static int child_run(const char *path, const char *id, int k, int up, int down, int end)
{
    vt_store *s;
    vt__store_run *r;
    if (vt_store_open(&s, path, NULL) || vt__store_run_begin(s, id, "g", (size_t)k, &r, NULL))
        return 1;
    char name[32];
    for (int i = 0; i < k; i++) {
        snprintf(name, sizeof name, "t%d", i);
        if (record_simple(r, name, VT_TASK_SUCCEEDED, name, "ok"))
            return 2;
    }
    if (vt__store_flush(r))
        return 3;
    char c = 'r';
    if (write(up, &c, 1) != 1)
        return 4;
    if (down >= 0 && read(down, &c, 1) < 0)
        return 5;
    if (!end)
        _exit(0); /* as if killed: no run_end, no close */
    if (vt__store_run_end(r, VT_RUN_SUCCEEDED, NULL))
        return 6;
    vt_store_close(s);
    return 0;
}

VT_TEST(busy_in_another_process)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    char p[128];
    tmp_path(&t, "s.db", p, sizeof p);
    int up[2], down[2];
    VT_CHECK_EQ(pipe2(up, O_CLOEXEC), 0);
    VT_CHECK_EQ(pipe2(down, O_CLOEXEC), 0);
    pid_t pid = spawn("run", p, up[1], down[0], 1);
    VT_CHECK_GE(pid, 0);
    close(up[1]);
    close(down[0]);
    char c;
    VT_CHECK_EQ(read(up[0], &c, 1), 1);
    vt_store *s;
    VT_CHECK_OK(vt_store_open(&s, p, NULL));
    vt__store_run *r;
    VT_CHECK_ERR(vt__store_run_begin(s, "x", "g", 3, &r, NULL), VT_EBUSY);
    char pidtxt[32];
    snprintf(pidtxt, sizeof pidtxt, "%ld", (long)pid);
    VT_CHECK(contains(vt_store_last_error(), pidtxt));
    VT_CHECK_ERR(vt_store_delete_run(s, "x"), VT_EBUSY);
    vt_run_info *runs;
    size_t n;
    VT_CHECK_OK(vt_store_runs(s, 0, &runs, &n));
    VT_CHECK_EQ(n, 1);
    VT_CHECK_EQ(runs[0].status, VT_RUN_RUNNING);
    VT_CHECK_EQ(runs[0].succeeded, 3);
    vt_store_runs_free(runs, n);
    /* Meanwhile this process runs its own id in the same file. */
    VT_CHECK_OK(vt__store_run_begin(s, "mine", "g", 1, &r, NULL));
    VT_CHECK_OK(record_simple(r, "m", VT_TASK_SUCCEEDED, NULL, NULL));
    VT_CHECK_OK(vt__store_run_end(r, VT_RUN_SUCCEEDED, NULL));
    VT_CHECK_EQ(write(down[1], "go", 1), 1);
    int st;
    VT_CHECK_EQ(waitpid(pid, &st, 0), pid);
    VT_CHECK(WIFEXITED(st));
    VT_CHECK_EQ(WEXITSTATUS(st), 0);
    int resumed = 0;
    VT_CHECK_OK(vt__store_run_begin(s, "x", "g", 3, &r, &resumed));
    VT_CHECK_EQ(resumed, 1);
    VT_CHECK_OK(vt__store_run_end(r, VT_RUN_SUCCEEDED, NULL));
    vt_store_close(s);
    close(up[0]);
    close(down[1]);
    tmp_remove(&t);
}

VT_TEST(dead_process_run_is_interrupted_and_resumes)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    char p[128];
    tmp_path(&t, "s.db", p, sizeof p);
    int up[2];
    VT_CHECK_EQ(pipe2(up, O_CLOEXEC), 0);
    pid_t pid = spawn("run", p, up[1], -1, 0);
    VT_CHECK_GE(pid, 0);
    close(up[1]);
    int st;
    VT_CHECK_EQ(waitpid(pid, &st, 0), pid);
    VT_CHECK(WIFEXITED(st));
    VT_CHECK_EQ(WEXITSTATUS(st), 0);
    close(up[0]);
    VT_CHECK(integrity_ok(p));
    vt_store *s;
    VT_CHECK_OK(vt_store_open(&s, p, NULL));
    vt_run_info *runs;
    size_t n;
    VT_CHECK_OK(vt_store_runs(s, 0, &runs, &n));
    VT_CHECK_EQ(n, 1);
    VT_CHECK_EQ(runs[0].status, VT_RUN_INTERRUPTED);
    VT_CHECK_EQ(runs[0].succeeded, 5);
    VT_CHECK_EQ(runs[0].total, 5);
    VT_CHECK_EQ(runs[0].ended_unix_ns, 0);
    vt_store_runs_free(runs, n);
    vt__store_run *r;
    int resumed = 0;
    VT_CHECK_OK(vt__store_run_begin(s, "x", "g", 5, &r, &resumed));
    VT_CHECK_EQ(resumed, 1);
    loaded l = {0};
    VT_CHECK_OK(vt__store_load_succeeded(r, collect, &l));
    VT_CHECK_EQ(l.n, 5);
    for (int i = 0; i < 5; i++) {
        char want[16];
        snprintf(want, sizeof want, "t%d", i);
        VT_CHECK_STR_EQ(l.names[i], want);
        VT_CHECK_STR_EQ(l.fp[i], want);
        VT_CHECK_STR_EQ(l.res[i], "ok");
    }
    VT_CHECK_OK(vt__store_run_end(r, VT_RUN_SUCCEEDED, NULL));
    VT_CHECK_OK(vt_store_runs(s, 0, &runs, &n));
    VT_CHECK_EQ(runs[0].status, VT_RUN_SUCCEEDED);
    VT_CHECK_EQ(runs[0].starts, 2);
    vt_store_runs_free(runs, n);
    vt_store_close(s);
    tmp_remove(&t);
}

/* ---- Batching and the writer ----------------------------------------------------------- */

typedef struct rec_thread {
    vt__store_run *r;
    int id, count;
    vt_err err;
} rec_thread;

static void *recorder(void *arg)
{
    rec_thread *a = arg;
    char name[32];
    for (int i = 0; i < a->count && !a->err; i++) {
        snprintf(name, sizeof name, "w%d/%d", a->id, i);
        a->err = record_simple(a->r, name, i % 5 ? VT_TASK_SUCCEEDED : VT_TASK_FAILED, name, NULL);
    }
    return NULL;
}

/* Every name "w<thread>/<i>" exactly once among tr. */
static int each_once(const vt_task_record *tr, size_t n, int threads, int per)
{
    if (n != (size_t)threads * (size_t)per)
        return 0;
    unsigned char *seen = calloc(n, 1);
    int ok = seen != NULL;
    for (size_t i = 0; ok && i < n; i++) {
        int th, k;
        if (sscanf(tr[i].name, "w%d/%d", &th, &k) != 2 || th < 0 || th >= threads || k < 0 ||
            k >= per || seen[(size_t)th * per + k]++ ||
            tr[i].state != (k % 5 ? VT_TASK_SUCCEEDED : VT_TASK_FAILED) ||
            tr[i].fingerprint_len != strlen(tr[i].name) ||
            memcmp(tr[i].fingerprint, tr[i].name, tr[i].fingerprint_len) != 0)
            ok = 0;
    }
    free(seen);
    return ok;
}

VT_TEST(concurrent_records_from_eight_threads)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    char p[128];
    tmp_path(&t, "s.db", p, sizeof p);
    vt_store *s;
    vt_store_opts o = {.batch_tasks = 100};
    VT_CHECK_OK(vt_store_open(&s, p, &o));
    vt__store_run *r;
    VT_CHECK_OK(vt__store_run_begin(s, "r", "g", 0, &r, NULL));
    enum { THREADS = 8, PER = 1500 };
    rec_thread a[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        a[i] = (rec_thread){r, i, PER, VT_OK};
        VT_CHECK_EQ(pthread_create(&th[i], NULL, recorder, &a[i]), 0);
    }
    /* Flushes while they record: each returns with no error. */
    for (int i = 0; i < 5; i++)
        VT_CHECK_OK(vt__store_flush(r));
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        VT_CHECK_OK(a[i].err);
    }
    VT_CHECK_OK(vt__store_flush(r));
    vt_task_record *tr;
    size_t n;
    VT_CHECK_OK(vt_store_run_tasks(s, "r", &tr, &n));
    VT_CHECK(each_once(tr, n, THREADS, PER));
    /* Each thread's records keep their order (one thread = one shard). */
    int last[THREADS];
    for (int i = 0; i < THREADS; i++)
        last[i] = -1;
    for (size_t i = 0; i < n; i++) {
        int w, k;
        sscanf(tr[i].name, "w%d/%d", &w, &k);
        VT_CHECK_LT(last[w], k);
        last[w] = k;
    }
    vt_store_run_tasks_free(tr, n);
    VT_CHECK_OK(vt__store_run_end(r, VT_RUN_SUCCEEDED, NULL));
    vt_store_close(s);
    VT_CHECK(integrity_ok(p));
    tmp_remove(&t);
}

VT_TEST(a_record_is_committed_within_batch_ns_without_a_flush)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    char p[128];
    tmp_path(&t, "s.db", p, sizeof p);
    vt_store *s;
    vt_store_opts o = {.batch_ns = VT_MS(1)};
    VT_CHECK_OK(vt_store_open(&s, p, &o));
    vt__store_run *r;
    VT_CHECK_OK(vt__store_run_begin(s, "r", "g", 0, &r, NULL));
    VT_CHECK_OK(record_simple(r, "a", VT_TASK_SUCCEEDED, NULL, NULL));
    size_t n = 0;
    /* Another connection sees it once committed; no flush asked for.
     * The bound only turns a hang into a failure. */
    int64_t give_up = vt_deadline_after(VT_SEC(30));
    while (n == 0 && vt_now_ns() < give_up) {
        VT_CHECK_OK(tasks_seen(p, "r", &n));
        if (!n)
            nap_ms(1);
    }
    VT_CHECK_EQ(n, 1);
    VT_CHECK_OK(vt__store_run_end(r, VT_RUN_SUCCEEDED, NULL));
    vt_store_close(s);
    tmp_remove(&t);
}

VT_TEST(a_record_waits_for_its_batch_until_flushed)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    char p[128];
    tmp_path(&t, "s.db", p, sizeof p);
    vt_store *s;
    vt_store_opts o = {.batch_ns = VT_SEC(3600), .batch_tasks = 1000};
    VT_CHECK_OK(vt_store_open(&s, p, &o));
    vt__store_run *r;
    VT_CHECK_OK(vt__store_run_begin(s, "r", "g", 0, &r, NULL));
    VT_CHECK_OK(record_simple(r, "a", VT_TASK_SUCCEEDED, NULL, NULL));
    VT_CHECK_OK(record_simple(r, "b", VT_TASK_SUCCEEDED, NULL, NULL));
    nap_ms(30);
    size_t n = 99;
    VT_CHECK_OK(tasks_seen(p, "r", &n));
    VT_CHECK_EQ(n, 0); /* an hour is far off, and a batch far from full */
    VT_CHECK_OK(vt__store_flush(r));
    VT_CHECK_OK(tasks_seen(p, "r", &n));
    VT_CHECK_EQ(n, 2);
    /* Closing commits what is pending too (run_end flushes first). */
    VT_CHECK_OK(record_simple(r, "c", VT_TASK_SUCCEEDED, NULL, NULL));
    VT_CHECK_OK(vt__store_run_end(r, VT_RUN_SUCCEEDED, NULL));
    vt_store_close(s);
    VT_CHECK_OK(tasks_seen(p, "r", &n));
    VT_CHECK_EQ(n, 3);
    tmp_remove(&t);
}

/* Commits the writer reports at trace level, for one store path. */
typedef struct commit_log {
    pthread_mutex_t mu;
    const char *path;
    int commits;
    int records;
    int max_batch;
} commit_log;

static void on_log(void *ud, vt_log_level level, const char *module, const char *msg)
{
    commit_log *c = ud;
    (void)level;
    const char *m;
    int k;
    if (strcmp(module, "store") != 0 || strncmp(msg, c->path, strlen(c->path)) != 0 ||
        !(m = strstr(msg, ": committed ")) || sscanf(m, ": committed %d records", &k) != 1)
        return;
    pthread_mutex_lock(&c->mu);
    c->commits++;
    c->records += k;
    if (k > c->max_batch)
        c->max_batch = k;
    pthread_mutex_unlock(&c->mu);
}

VT_TEST(transactions_hold_at_most_batch_tasks)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    char p[128];
    tmp_path(&t, "s.db", p, sizeof p);
    commit_log c = {PTHREAD_MUTEX_INITIALIZER, p, 0, 0, 0};
    vt_log_level old = vt_log_get_level();
    vt_log_set_handler(on_log, &c);
    vt_log_set_level(VT_LOG_TRACE);
    vt_store *s;
    vt_store_opts o = {.batch_tasks = 7, .batch_ns = VT_SEC(3600)};
    vt_err e = vt_store_open(&s, p, &o);
    vt__store_run *r = NULL;
    if (!e)
        e = vt__store_run_begin(s, "r", "g", 0, &r, NULL);
    char name[16];
    for (int i = 0; i < 100 && !e; i++) {
        snprintf(name, sizeof name, "t%d", i);
        e = record_simple(r, name, VT_TASK_SUCCEEDED, NULL, NULL);
    }
    if (!e)
        e = vt__store_flush(r);
    vt_err e2 = r ? vt__store_run_end(r, VT_RUN_SUCCEEDED, NULL) : VT_OK;
    if (s)
        vt_store_close(s);
    vt_log_set_level(old);
    vt_log_set_handler(NULL, NULL);
    VT_CHECK_OK(e);
    VT_CHECK_OK(e2);
    VT_CHECK_EQ(c.records, 100);
    VT_CHECK_LE(c.max_batch, 7);
    VT_CHECK_GE(c.commits, 15);
    tmp_remove(&t);
}

/* The writer thread's context switches (voluntary + not), from
 * /proc/self/task; -1 when it cannot be found. */
static long long writer_switches(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    long long v = -1;
    struct dirent *de;
    while ((de = readdir(d))) {
        char path[300], buf[64];
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        int is = fgets(buf, sizeof buf, f) && strncmp(buf, "vt-store", 8) == 0;
        fclose(f);
        if (!is)
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/status", de->d_name);
        if (!(f = fopen(path, "r")))
            continue;
        char line[256];
        long long sum = 0, x;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "voluntary_ctxt_switches: %lld", &x) == 1 ||
                sscanf(line, "nonvoluntary_ctxt_switches: %lld", &x) == 1)
                sum += x;
        fclose(f);
        v = sum;
    }
    closedir(d);
    return v;
}

VT_TEST(idle_writer_sleeps)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    char p[128];
    tmp_path(&t, "s.db", p, sizeof p);
    vt_store *s;
    vt_store_opts o = {.batch_ns = VT_MS(1)};
    VT_CHECK_OK(vt_store_open(&s, p, &o));
    vt__store_run *r;
    VT_CHECK_OK(vt__store_run_begin(s, "r", "g", 0, &r, NULL));
    VT_CHECK_OK(record_simple(r, "a", VT_TASK_SUCCEEDED, NULL, NULL));
    VT_CHECK_OK(vt__store_flush(r));
    /* Settled first: once it has gone back to sleep after the flush, its
     * count stops moving (a writer that polled never settles, and fails
     * here after 100 tries). */
    long long before = writer_switches(), again = -2;
    for (int i = 0; i < 100 && before >= 0 && again != before; i++) {
        if (again >= 0)
            before = again;
        nap_ms(20);
        again = writer_switches();
    }
    if (before < 0) {
        vt__store_run_end(r, VT_RUN_SUCCEEDED, NULL);
        vt_store_close(s);
        tmp_remove(&t);
        VT_SKIP("no /proc/self/task");
    }
    VT_CHECK_EQ(again, before);
    /* Idle, it waits on its futex: not one wake-up in the meantime (a
     * thread that polled would be switched in at every tick). */
    nap_ms(200);
    long long after = writer_switches();
    VT_CHECK_OK(vt__store_run_end(r, VT_RUN_SUCCEEDED, NULL));
    vt_store_close(s);
    tmp_remove(&t);
    VT_CHECK_EQ(after, before);
}

static void quiet(void *ud, vt_log_level level, const char *module, const char *msg)
{
    (void)ud;
    (void)level;
    (void)module;
    (void)msg;
}

VT_TEST(write_errors_come_back_from_flush)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    char p[128];
    tmp_path(&t, "s.db", p, sizeof p);
    vt_store *s;
    VT_CHECK_OK(vt_store_open(&s, p, NULL));
    vt__store_run *r, *r2;
    VT_CHECK_OK(vt__store_run_begin(s, "doomed", "g", 0, &r, NULL));
    VT_CHECK_OK(vt__store_run_begin(s, "fine", "g", 0, &r2, NULL));
    VT_CHECK_OK(record_simple(r, "before", VT_TASK_SUCCEEDED, NULL, NULL));
    VT_CHECK_OK(vt__store_flush(r));
    /* Someone else removes the run behind the store's back: its records
     * can no longer be written, and only its own. */
    VT_CHECK_EQ(raw_exec(p, "PRAGMA foreign_keys=ON; DELETE FROM runs WHERE run_id = 'doomed'"),
                SQLITE_OK);
    VT_CHECK_OK(record_simple(r, "after", VT_TASK_SUCCEEDED, NULL, NULL));
    VT_CHECK_OK(record_simple(r2, "other", VT_TASK_SUCCEEDED, NULL, NULL));
    vt_log_set_handler(quiet, NULL); /* the writer logs the failure too */
    vt_err e = vt__store_flush(r);
    vt_log_set_handler(NULL, NULL);
    VT_CHECK_ERR(e, VT_EIO);
    VT_CHECK(contains(vt_store_last_error(), "after"));
    VT_CHECK(contains(vt_store_last_error(), p));
    /* Reported once: the next flush has nothing new to say. */
    VT_CHECK_OK(vt__store_flush(r));
    VT_CHECK_OK(vt__store_flush(r2));
    VT_CHECK_OK(vt__store_run_end(r, VT_RUN_FAILED, NULL));
    VT_CHECK_OK(vt__store_run_end(r2, VT_RUN_SUCCEEDED, NULL));
    vt_task_record *tr;
    size_t n;
    VT_CHECK_OK(vt_store_run_tasks(s, "fine", &tr, &n));
    VT_CHECK_EQ(n, 1);
    vt_store_run_tasks_free(tr, n);
    VT_CHECK_ERR(vt_store_run_tasks(s, "doomed", &tr, &n), VT_ENOENT);
    vt_store_close(s);
    VT_CHECK(integrity_ok(p));
    tmp_remove(&t);
}

VT_TEST(synchronous_full_store)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    char p[128];
    tmp_path(&t, "s.db", p, sizeof p);
    vt_store *s;
    vt_store_opts o = {.synchronous_full = 1, .batch_tasks = 1};
    VT_CHECK_OK(vt_store_open(&s, p, &o));
    vt__store_run *r;
    VT_CHECK_OK(vt__store_run_begin(s, "r", "g", 0, &r, NULL));
    for (int i = 0; i < 5; i++) {
        char name[16];
        snprintf(name, sizeof name, "t%d", i);
        VT_CHECK_OK(record_simple(r, name, VT_TASK_SUCCEEDED, NULL, NULL));
    }
    VT_CHECK_OK(vt__store_run_end(r, VT_RUN_SUCCEEDED, NULL));
    size_t n;
    VT_CHECK_OK(tasks_seen(p, "r", &n));
    VT_CHECK_EQ(n, 5);
    vt_store_close(s);
    tmp_remove(&t);
}

/* ---- Allocation failures ------------------------------------------------------------------ */

VT_TEST(out_of_memory_leaves_nothing_behind)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    char p[128];
    tmp_path(&t, "s.db", p, sizeof p);
    long live = vt_test_alloc_live();
    vt_store *s = NULL;
    vt_err e = VT_ENOMEM;
    for (long k = 1; e == VT_ENOMEM && k < 1000; k++) {
        vt_test_alloc_fail_at(k);
        e = vt_store_open(&s, p, NULL);
        vt_test_alloc_fail_at(0);
        if (e) {
            VT_CHECK_ERR(e, VT_ENOMEM);
            VT_CHECK_NULL(s);
            VT_CHECK_EQ(vt_test_alloc_live(), live);
            VT_CHECK(!file_exists(p)); /* a store it created is removed again */
        }
    }
    VT_CHECK_OK(e);

    vt__store_run *r = NULL;
    e = VT_ENOMEM;
    for (long k = 1; e == VT_ENOMEM && k < 1000; k++) {
        vt_test_alloc_fail_at(k);
        e = vt__store_run_begin(s, "r", "g", 0, &r, NULL);
        vt_test_alloc_fail_at(0);
        if (e) {
            VT_CHECK_ERR(e, VT_ENOMEM);
            VT_CHECK_NULL(r);
        }
    }
    VT_CHECK_OK(e);
    /* A record too large for the store's pool of blocks allocates. */
    char large[1024];
    memset(large, 'l', sizeof large - 1);
    large[sizeof large - 1] = 0;
    vt_test_alloc_fail_at(1);
    e = record_simple(r, "lost", VT_TASK_SUCCEEDED, NULL, large);
    vt_test_alloc_fail_at(0);
    VT_CHECK_ERR(e, VT_ENOMEM);
    for (int i = 0; i < 20; i++) {
        char name[16];
        snprintf(name, sizeof name, "t%d", i);
        VT_CHECK_OK(record_simple(r, name, VT_TASK_SUCCEEDED, "fp", "res"));
    }
    VT_CHECK_OK(vt__store_flush(r));

    vt_task_record *tr = NULL;
    size_t n = 0;
    e = VT_ENOMEM;
    for (long k = 1; e == VT_ENOMEM && k < 1000; k++) {
        vt_test_alloc_fail_at(k);
        e = vt_store_run_tasks(s, "r", &tr, &n);
        vt_test_alloc_fail_at(0);
        if (e) {
            VT_CHECK_ERR(e, VT_ENOMEM);
            VT_CHECK_NULL(tr);
            VT_CHECK_EQ(n, 0);
        }
    }
    VT_CHECK_OK(e);
    VT_CHECK_EQ(n, 20); /* "lost" was never queued */
    vt_store_run_tasks_free(tr, n);
    vt_run_info *runs = NULL;
    vt_test_alloc_fail_at(1);
    e = vt_store_runs(s, 0, &runs, &n);
    vt_test_alloc_fail_at(0);
    VT_CHECK_ERR(e, VT_ENOMEM);
    VT_CHECK_NULL(runs);
    VT_CHECK_OK(vt_store_runs(s, 0, &runs, &n));
    VT_CHECK_EQ(n, 1);
    vt_store_runs_free(runs, n);
    VT_CHECK_OK(vt__store_run_end(r, VT_RUN_SUCCEEDED, NULL));
    vt_store_close(s);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
    tmp_remove(&t);
}

/* ---- Durability ------------------------------------------------------------------------------ */

/* Child of the kill test: records batches of 20 tasks and flushes, then
 * reports on fd how many are committed; until killed. */
static void kill_child(const char *path, int fd)
{
    vt_store *s;
    vt__store_run *r;
    if (vt_store_open(&s, path, NULL) || vt__store_run_begin(s, "k", "g", 0, &r, NULL))
        _exit(1);
    char name[32], res[300];
    memset(res, 'x', sizeof res);
    for (uint64_t i = 0;;) {
        for (int j = 0; j < 20; j++, i++) {
            snprintf(name, sizeof name, "k%llu", (unsigned long long)i);
            vt__store_rec rec = rec_of(name, VT_TASK_SUCCEEDED);
            rec.result = res;
            rec.result_len = sizeof res;
            if (vt__store_record(r, &rec))
                _exit(2);
        }
        if (vt__store_flush(r))
            _exit(3);
        if (write(fd, &i, sizeof i) != (ssize_t)sizeof i)
            _exit(4);
    }
}

/* Forks a recording child, kills it after `reports` flushes and a random
 * pause, and checks the file. */
static void kill_once(const char *p, unsigned reports)
{
    int fds[2];
    VT_CHECK_EQ(pipe2(fds, O_CLOEXEC), 0);
    pid_t pid = spawn("kill", p, fds[1], -1, 0);
    VT_CHECK_GE(pid, 0);
    close(fds[1]);
    uint64_t flushed = 0, v;
    for (unsigned i = 0; i < reports && read(fds[0], &v, sizeof v) == (ssize_t)sizeof v; i++)
        flushed = v;
    struct timespec pause = {0, (long)(vt_test_rand() % 3000000)};
    nanosleep(&pause, NULL);
    kill(pid, SIGKILL);
    while (read(fds[0], &v, sizeof v) == (ssize_t)sizeof v)
        flushed = v;
    close(fds[0]);
    int st;
    VT_CHECK_EQ(waitpid(pid, &st, 0), pid);
    VT_CHECK(WIFSIGNALED(st));
    VT_CHECK_EQ(WTERMSIG(st), SIGKILL);
    VT_CHECK_GT(flushed, 0);

    VT_CHECK(integrity_ok(p));
    vt_store *s;
    VT_CHECK_OK(vt_store_open(&s, p, NULL));
    vt_task_record *tr;
    size_t n;
    VT_CHECK_OK(vt_store_run_tasks(s, "k", &tr, &n));
    VT_CHECK_GE(n, flushed);
    unsigned char *seen = calloc(n, 1);
    VT_CHECK_NOT_NULL(seen);
    size_t below = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned long long k;
        if (sscanf(tr[i].name, "k%llu", &k) == 1 && k < n && !seen[k]++ && k < flushed)
            below++;
    }
    free(seen);
    vt_store_run_tasks_free(tr, n);
    VT_CHECK_EQ(below, flushed);
    vt_run_info *runs;
    VT_CHECK_OK(vt_store_runs(s, 0, &runs, &n));
    VT_CHECK_EQ(n, 1);
    VT_CHECK_EQ(runs[0].status, VT_RUN_INTERRUPTED);
    vt_store_runs_free(runs, n);
    VT_CHECK_OK(vt_store_delete_run(s, "k"));
    vt_store_close(s);
}

VT_TEST(records_flushed_before_kill_9_survive)
{
    tmp t;
    VT_CHECK_EQ(tmp_make(&t), 0);
    char p[128];
    tmp_path(&t, "s.db", p, sizeof p);
    for (int i = 0; i < 3; i++) {
        kill_once(p, 1 + (unsigned)(vt_test_rand() % 20));
    }
    tmp_remove(&t);
}

/* The child roles of spawn(). */
__attribute__((constructor)) static void child_role(void)
{
    const char *role = getenv("VT_STORE_CHILD");
    if (!role)
        return;
    const char *path = getenv("VT_STORE_PATH");
    int up = atoi(getenv("VT_STORE_UP") ? getenv("VT_STORE_UP") : "-1");
    int down = atoi(getenv("VT_STORE_DOWN") ? getenv("VT_STORE_DOWN") : "-1");
    int arg = atoi(getenv("VT_STORE_ARG") ? getenv("VT_STORE_ARG") : "0");
    if (strcmp(role, "rofs") == 0)
        exit(read_only_fs_child(path));
    if (strcmp(role, "run") == 0)
        exit(child_run(path, "x", arg ? 3 : 5, up, down, arg));
    if (strcmp(role, "kill") == 0)
        kill_child(path, up);
    exit(125);
}
