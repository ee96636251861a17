/* store.c — the task store: runs and the tasks they finished, in one SQLite
 * file in WAL mode, written off the workers by one thread per store.
 *
 * Recording. vt__store_record copies the record into one block (from its
 * shard's pool when it is small, see POOL_BLOCK) and pushes it on a
 * lock-free stack (a Treiber stack that only its one consumer empties,
 * all at once, so there is no ABA). There is one stack per shard, each on
 * its own cache line, and a thread keeps to the shard its first record
 * picked, so workers do not share a line on the common path. The
 * writer thread empties the shards, sorts what it took by end time, and
 * commits it in transactions of at most opts.batch_tasks records. It
 * sleeps on a futex word: indefinitely when nothing is pending (the first
 * record after that wakes it, one system call), else until the oldest
 * pending record is batch_ns old (a shard reaching a quarter of a batch
 * wakes it sooner). Flushes are tickets: vt__store_flush takes the next
 * one and waits until the writer has committed everything it drained after
 * seeing that ticket.
 *
 * Locks. s->mu guards the connection (opened SQLITE_OPEN_NOMUTEX) and the
 * store's state: the writer holds it for one transaction at a time, the
 * other calls for theirs. vt__store_load_succeeded calls its callback with
 * it held, so the callback must not call the store. Waits for another
 * process's lock go through busy_wait (fine-grained, unlike SQLite's).
 * vt_store_last_error is reset by each call that sets it, so it always
 * describes the last such call of the thread ("" when that one worked).
 *
 * Latest wins: a run has one row per task name; a new record of a name (a
 * resumed run running a task again) replaces the old one and takes a new,
 * larger seq. So vt__store_load_succeeded sees the latest record of each
 * name, and vt_store_run_tasks lists each name once, in the order of their
 * latest records; the table stays as large as the graph however many times
 * a run resumes.
 *
 * Who runs a run. A RUNNING row names its process: host name, boot id,
 * pid, the process's start time (/proc/<pid>/stat, so a recycled pid is
 * not taken for the old process) and a token unique to that run in that
 * process. The process is gone when it ran on this host and the boot id
 * differs, kill(pid, 0) says ESRCH, the pid's start time differs or it is
 * a zombie. In this process, the run is alive while a vt__store_run with
 * its token exists (any store object on the file). A process on another
 * host cannot be checked and is taken as alive. Without /proc, only
 * kill(pid, 0) and the token are used.
 *
 * On disk (format 1):
 *   PRAGMA application_id = 0x76745453 ("vtTS"), PRAGMA user_version = 1
 *   meta(key TEXT PRIMARY KEY, value)      'application' = 'vitte task store',
 *                                           'format' = 1, 'created_unix_ns'
 *   runs(id INTEGER PRIMARY KEY, run_id TEXT UNIQUE, graph, status TEXT,
 *        started_ns, last_started_ns, ended_ns, starts, total, succeeded,
 *        failed, cancelled, skipped, restored, owner_host, owner_boot,
 *        owner_pid, owner_pstart, owner_token)
 *   tasks(seq INTEGER PRIMARY KEY, run REFERENCES runs(id) ON DELETE
 *         CASCADE, name, state TEXT, attempts, restored, err, error,
 *         started_ns, ended_ns, fingerprint BLOB, result BLOB,
 *         UNIQUE(run, name))
 * States and statuses are stored by name ("succeeded"), so that the file
 * reads well in the sqlite3 shell and does not depend on enum order; times
 * are ns since the epoch. History is listed newest first by runs.id, the
 * order of creation, which a clock set back cannot disturb. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "task_int.h"

#define STORE_APP_ID 0x76745453 /* "vtTS" */
#define STORE_APP_NAME "vitte task store"
#define STORE_FORMAT 1
/* How long a call waits for a lock another process holds: opening (the
 * header promises a few seconds), then writing, where a wait is better
 * than failing a run: another run's writer may hold the lock often. */
#define BUSY_TIMEOUT_NS VT_SEC(5)
#define WRITE_BUSY_TIMEOUT_NS VT_SEC(30)
/* A writer that has held the write lock back to back this long leaves it
 * free for WRITER_GAP_NS, longer than busy_wait's longest nap, so that
 * another process waiting for it gets its turn. */
#define WRITER_STREAK_NS VT_MS(50)
#define WRITER_GAP_NS VT_MS(2)
/* BEGIN IMMEDIATE that found the file locked for WRITE_BUSY_TIMEOUT_NS is tried
 * again this many times by the writer before its batch fails. */
#define WRITER_BUSY_TRIES 3
#define DEFAULT_BATCH_NS VT_MS(10)
#define DEFAULT_BATCH_TASKS 4096
#define MAX_BATCH_TASKS (1u << 20)
#define MAX_BATCH_NS VT_SEC(3600)
#define MAX_SHARDS 64
#define MSG_SIZE 768
/* Messages start "store <path>: "; in the log the module names the store. */
#define LOG_SKIP (sizeof "store " - 1)

/* ---- Messages ----------------------------------------------------------------- */

static _Thread_local char tl_msg[MSG_SIZE];

const char *vt_store_last_error(void)
{
    return tl_msg;
}

static void msg_set(const char *fmt, ...) VT_PRINTF(1, 2);
static void msg_set(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_msg, sizeof tl_msg, fmt, ap);
    va_end(ap);
}

static const char *const status_names[] = {"running", "succeeded", "failed", "cancelled",
                                           "interrupted"};
static const char *const state_names[VT_TASK_STATES] = {
    "pending", "ready", "running", "succeeded", "failed", "cancelled", "skipped"};

const char *vt_run_status_name(vt_run_status s)
{
    return (unsigned)s < sizeof status_names / sizeof *status_names ? status_names[s] : "?";
}

static int name_index(const char *const *names, int n, const char *s)
{
    for (int i = 0; s && i < n; i++)
        if (strcmp(names[i], s) == 0)
            return i;
    return -1;
}

int64_t vt__wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- Processes ---------------------------------------------------------------- */

typedef struct owner {
    char host[256];
    char boot[40];
    int64_t pstart; /* start time in clock ticks since boot; 0: unknown */
} owner;

static void owner_self(owner *o)
{
    memset(o, 0, sizeof *o);
    if (gethostname(o->host, sizeof o->host - 1) != 0)
        o->host[0] = 0;
    vt__boot_id(o->boot, sizeof o->boot);
    char st;
    if (vt__process_stat((long)getpid(), &o->pstart, &st) != 0)
        o->pstart = 0;
}

/* Runs that exist in this process, by token, whatever store object made
 * them: a RUNNING row of this process whose token is not here was left by
 * a run that never ended (its run_end failed to write), so it is over. */
static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static vt__store_run *live_head;
static _Atomic uint64_t token_seq;

/* ---- Queued records ------------------------------------------------------------- */

typedef struct qrec {
    struct qrec *next;
    vt__store_run *run;
    size_t size; /* of the whole block */
    uint64_t order;
    int64_t queued_ns;
    int64_t started_ns, ended_ns;
    int64_t err;
    unsigned attempts;
    int state;
    int restored;
    unsigned char has_fp, has_result;
    uint16_t shard; /* where a pooled block goes back to */
    size_t name_len, error_len, fp_len, result_len;
    char data[]; /* name NUL, error NUL, fingerprint, result */
} qrec;

/* Records that fit take a block of this size from their shard's pool,
 * which the writer refills with the blocks it is done with: after warm-up
 * a record allocates nothing, and the heap does not grow and shrink with
 * each batch (glibc trims freed memory at once, and the next batch pays
 * its page faults again). A pool keeps POOL_BYTES / POOL_BLOCK blocks over
 * all its shards at most. */
#define POOL_BLOCK 384
#define POOL_BYTES (4u << 20)

typedef struct shard {
    _Atomic(qrec *) head;
    _Atomic uint32_t count; /* pushed and not drained yet; at least the list's length */
    vt__spinlock pool_lock; /* taken by this shard's thread(s), and by the writer
                               once per batch */
    qrec *pool;
    uint32_t npool;
    char pad[VT_CACHE_LINE - 2 * sizeof(void *) - 3 * sizeof(uint32_t)];
} shard;
_Static_assert(sizeof(shard) == VT_CACHE_LINE, "one shard per cache line");

enum {
    WRITER_BUSY,
    WRITER_IDLE,
    WRITER_TIMED
};

struct vt__store_run {
    vt_store *s;
    vt__store_run *next;      /* the store's active runs (s->mu) */
    vt__store_run *live_next; /* live_head (live_mu) */
    int64_t rowid;
    uint64_t token;
    vt_err err; /* first write error since the last flush (s->mu) */
    char errmsg[MSG_SIZE];
    char id[VT_RUN_ID_MAX];
};

struct vt_store {
    /* Read by the recording threads, written only at open. */
    shard *shards;
    unsigned nshards;
    uint32_t wake_at;
    uint32_t pool_cap; /* blocks per shard */
    char pad0[VT_CACHE_LINE];
    /* Read by every record, written when the writer sleeps and wakes. */
    _Atomic int idle;
    _Atomic uint32_t wake; /* futex word: bumped to end the writer's sleep */
    char pad1[VT_CACHE_LINE];
    void *shards_mem;
    size_t shards_size;
    pthread_mutex_t mu; /* the connection and everything below */
    pthread_cond_t cv;  /* flush_done moved, or a run ended */
    sqlite3 *db;
    sqlite3_stmt *ins;
    uint64_t flush_req, flush_done;
    int closing;
    vt__store_run *runs;
    char *path;
    size_t path_size;
    vt_store_opts opts;
    owner me;
    vt__thread writer;
    int writer_started;
    int64_t busy_since;                /* busy_wait's current wait began (mu) */
    int64_t busy_limit;                /* and may last this long (mu) */
    int64_t streak_start, last_commit; /* the writer's own */
};

static _Thread_local unsigned tl_slot;
static _Atomic unsigned slot_seq;

/* ---- SQLite helpers ------------------------------------------------------------- */

/* The vt_err of a SQLite result code. The errno of an IO failure goes in
 * the message: the header promises VT_EIO for those (open's are mapped to
 * VT_ESYSERR|errno apart, see db_open). */
static vt_err err_of(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW:
        return VT_OK;
    case SQLITE_NOMEM:
        return VT_ENOMEM;
    case SQLITE_NOTADB:
        return VT_EFORMAT;
    case SQLITE_CORRUPT:
        return VT_ECORRUPT;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return VT_EBUSY;
    default:
        return VT_EIO;
    }
}

/* "database disk image is malformed (errno: Input/output error)" */
static const char *db_msg(sqlite3 *db, char *buf, size_t size)
{
    int e = db ? sqlite3_system_errno(db) : 0;
    const char *m = db ? sqlite3_errmsg(db) : "out of memory";
    int rc = db ? sqlite3_extended_errcode(db) : SQLITE_NOMEM;
    if (e && ((rc & 0xff) == SQLITE_IOERR || (rc & 0xff) == SQLITE_CANTOPEN ||
              (rc & 0xff) == SQLITE_FULL))
        snprintf(buf, size, "%s (%s)", m, strerror(e));
    else
        snprintf(buf, size, "%s", m);
    return buf;
}

/* Sets the thread's message for a failed step of what, and returns the code. */
static vt_err fail_db(vt_store *s, int rc, const char *what)
{
    char m[512];
    vt_err e = err_of(rc);
    if (e == VT_ECORRUPT)
        msg_set("store %s is damaged: %s: %s", s->path, what, db_msg(s->db, m, sizeof m));
    else if (e == VT_EBUSY)
        msg_set("store %s: %s: locked by another process for more than %d s", s->path, what,
                (int)(s->busy_limit / VT_SEC(1)));
    else
        msg_set("store %s: %s: %s", s->path, what, db_msg(s->db, m, sizeof m));
    return e;
}

static int exec_sql(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

static void rollback(sqlite3 *db)
{
    if (!sqlite3_get_autocommit(db))
        exec_sql(db, "ROLLBACK");
}

/* Runs sql with one integer result into *v (0 when there is no row). */
static int query_int(sqlite3 *db, const char *sql, int64_t *v)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    *v = 0;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *v = sqlite3_column_int64(st, 0);
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

/* SQLite's own busy handler naps up to 100 ms between tries, and so can
 * wait out its whole timeout while another process commits back to back
 * with gaps far shorter than that. This one tries every 50 us at first and
 * every 1 ms at most, which finds the gaps writers leave (WRITER_GAP_NS). */
static int busy_wait(void *arg, int count)
{
    vt_store *s = arg;
    int64_t now = vt_now_ns();
    if (count == 0)
        s->busy_since = now;
    if (now - s->busy_since >= s->busy_limit)
        return 0;
    vt__sleep_ns(count < 5 ? VT_US(50) << count : VT_MS(1));
    return 1;
}

/* Copies s into dst[size], cut at a character boundary of UTF-8. */
static void copy_utf8(char *dst, size_t size, const char *s)
{
    size_t len = s ? strlen(s) : 0;
    if (len >= size) {
        len = size - 1;
        while (len > 0 && ((unsigned char)s[len] & 0xC0) == 0x80)
            len--;
    }
    if (len)
        memcpy(dst, s, len);
    dst[len] = 0;
}

/* ---- Liveness ----------------------------------------------------------------------- */

static int live_has(uint64_t token)
{
    int found = 0;
    pthread_mutex_lock(&live_mu);
    for (vt__store_run *r = live_head; r && !found; r = r->live_next)
        found = r->token == token;
    pthread_mutex_unlock(&live_mu);
    return found;
}

static void live_add(vt__store_run *r)
{
    pthread_mutex_lock(&live_mu);
    r->live_next = live_head;
    live_head = r;
    pthread_mutex_unlock(&live_mu);
}

static void live_remove(vt__store_run *r)
{
    pthread_mutex_lock(&live_mu);
    for (vt__store_run **p = &live_head; *p; p = &(*p)->live_next)
        if (*p == r) {
            *p = r->live_next;
            break;
        }
    pthread_mutex_unlock(&live_mu);
}

/* 1 when the process named by a RUNNING row may still run it. */
static int owner_alive(const vt_store *s, const char *host, const char *boot, int64_t pid,
                       int64_t pstart, uint64_t token)
{
    if (strcmp(host ? host : "", s->me.host) != 0)
        return 1;
    if (boot && boot[0] && s->me.boot[0] && strcmp(boot, s->me.boot) != 0)
        return 0;
    if (pid <= 0 || pid > INT_MAX)
        return 0;
    if (pid == (int64_t)getpid()) {
        if (pstart && s->me.pstart && pstart != s->me.pstart)
            return 0; /* an earlier process that had our pid */
        return live_has(token);
    }
    if (kill((pid_t)pid, 0) != 0 && errno == ESRCH)
        return 0;
    int64_t st;
    char state;
    if (vt__process_stat((long)pid, &st, &state) == 0) {
        if (state == 'Z' || state == 'X')
            return 0;
        if (pstart && st != pstart)
            return 0;
    }
    /* No entry: /proc may be missing or hide other users' processes
     * (hidepid), so kill(2)'s word stands. */
    return 1;
}

/* ---- Opening ------------------------------------------------------------------------ */

static const char schema_sql[] =
    "CREATE TABLE meta(key TEXT PRIMARY KEY NOT NULL, value NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE runs("
    " id INTEGER PRIMARY KEY,"
    " run_id TEXT NOT NULL UNIQUE,"
    " graph TEXT NOT NULL,"
    " status TEXT NOT NULL CHECK(status IN"
    "  ('running','succeeded','failed','cancelled','interrupted')),"
    " started_ns INTEGER NOT NULL,"
    " last_started_ns INTEGER NOT NULL,"
    " ended_ns INTEGER NOT NULL DEFAULT 0,"
    " starts INTEGER NOT NULL DEFAULT 1,"
    " total INTEGER NOT NULL DEFAULT 0,"
    " succeeded INTEGER NOT NULL DEFAULT 0,"
    " failed INTEGER NOT NULL DEFAULT 0,"
    " cancelled INTEGER NOT NULL DEFAULT 0,"
    " skipped INTEGER NOT NULL DEFAULT 0,"
    " restored INTEGER NOT NULL DEFAULT 0,"
    " owner_host TEXT NOT NULL DEFAULT '',"
    " owner_boot TEXT NOT NULL DEFAULT '',"
    " owner_pid INTEGER NOT NULL DEFAULT 0,"
    " owner_pstart INTEGER NOT NULL DEFAULT 0,"
    " owner_token INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE tasks("
    " seq INTEGER PRIMARY KEY,"
    " run INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    " name TEXT NOT NULL,"
    " state TEXT NOT NULL CHECK(state IN"
    "  ('pending','ready','running','succeeded','failed','cancelled','skipped')),"
    " attempts INTEGER NOT NULL,"
    " restored INTEGER NOT NULL,"
    " err INTEGER NOT NULL,"
    " error TEXT NOT NULL,"
    " started_ns INTEGER NOT NULL,"
    " ended_ns INTEGER NOT NULL,"
    " fingerprint BLOB,"
    " result BLOB,"
    " UNIQUE(run, name));";

/* Creates the schema if the file is still empty, all in one transaction:
 * a crash or an error leaves the file as empty as it was. */
static vt_err create_schema(vt_store *s)
{
    sqlite3 *db = s->db;
    int rc = exec_sql(db, "BEGIN IMMEDIATE");
    if (rc != SQLITE_OK)
        return fail_db(s, rc, "creating the store");
    int64_t n;
    if ((rc = query_int(db, "SELECT count(*) FROM sqlite_master", &n)) != SQLITE_OK)
        goto fail;
    if (n == 0) {
        char sql[256];
        if ((rc = exec_sql(db, schema_sql)) != SQLITE_OK)
            goto fail;
        snprintf(sql, sizeof sql,
                 "INSERT INTO meta VALUES('application','" STORE_APP_NAME "'),"
                 "('format',%d),('created_unix_ns',%lld);"
                 "PRAGMA application_id=%d; PRAGMA user_version=%d;",
                 STORE_FORMAT, (long long)vt__wall_ns(), STORE_APP_ID, STORE_FORMAT);
        if ((rc = exec_sql(db, sql)) != SQLITE_OK)
            goto fail;
    }
    if ((rc = exec_sql(db, "COMMIT")) != SQLITE_OK)
        goto fail;
    return VT_OK;
fail:;
    vt_err e = fail_db(s, rc, "creating the store");
    rollback(db);
    return e;
}

/* Checks that the open file is a store this code reads (creating the
 * schema in an empty one) and sets the connection up. */
static vt_err check_and_setup(vt_store *s)
{
    sqlite3 *db = s->db;
    int64_t app, nobj;
    int rc = query_int(db, "PRAGMA application_id", &app);
    if (rc == SQLITE_OK)
        rc = query_int(db, "SELECT count(*) FROM sqlite_master", &nobj);
    if ((rc & 0xff) == SQLITE_NOTADB) {
        msg_set("store %s: not a SQLite database (so not a vitte task store)", s->path);
        return VT_EFORMAT;
    }
    if (rc != SQLITE_OK)
        return fail_db(s, rc, "reading the header");
    if (nobj == 0 && app == 0) {
        if (s->opts.read_only) {
            msg_set("store %s: empty file, not a vitte task store (opened read-only, so not "
                    "created)",
                    s->path);
            return VT_EFORMAT;
        }
        /* WAL before the first page exists, so the schema's transaction
         * is already a WAL one. */
        if ((rc = exec_sql(db, "PRAGMA journal_mode=WAL")) != SQLITE_OK)
            return fail_db(s, rc, "switching to WAL");
        vt_err e = create_schema(s);
        if (e)
            return e;
        if ((rc = query_int(db, "PRAGMA application_id", &app)) != SQLITE_OK)
            return fail_db(s, rc, "reading the header");
    }
    if (app != STORE_APP_ID) {
        msg_set("store %s: a SQLite database, but not a vitte task store", s->path);
        return VT_EFORMAT;
    }
    sqlite3_stmt *st;
    rc = sqlite3_prepare_v2(db, "SELECT key, value FROM meta WHERE key IN ('application','format')",
                            -1, &st, NULL);
    if (rc != SQLITE_OK) {
        vt_err e = fail_db(s, rc, "reading its meta table");
        if (e == VT_EIO) {
            msg_set("store %s is damaged: marked as a vitte task store but its meta table is "
                    "unreadable: %s",
                    s->path, sqlite3_errmsg(db));
            e = VT_ECORRUPT;
        }
        return e;
    }
    int named = 0;
    int64_t format = -1;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(st, 0);
        if (k && strcmp(k, "application") == 0) {
            const char *v = (const char *)sqlite3_column_text(st, 1);
            named = v && strcmp(v, STORE_APP_NAME) == 0;
        } else if (k && strcmp(k, "format") == 0 && sqlite3_column_type(st, 1) == SQLITE_INTEGER) {
            format = sqlite3_column_int64(st, 1);
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return fail_db(s, rc, "reading its meta table");
    if (!named) {
        msg_set("store %s: a SQLite database, but not a vitte task store (meta names another "
                "application)",
                s->path);
        return VT_EFORMAT;
    }
    if (format > STORE_FORMAT) {
        msg_set("store %s: format %lld, newer than this vitte reads (%d): use a newer vitte",
                s->path, (long long)format, STORE_FORMAT);
        return VT_EFORMAT;
    }
    if (format < 1) {
        msg_set("store %s is damaged: no valid format number in its meta table", s->path);
        return VT_ECORRUPT;
    }
    /* Both tables with the columns this code uses, else the file is not
     * what its meta says. */
    rc = sqlite3_prepare_v2(db,
                            "SELECT r.id, r.run_id, r.graph, r.status, r.started_ns, "
                            "r.last_started_ns, r.ended_ns, r.starts, r.total, r.succeeded, "
                            "r.failed, r.cancelled, r.skipped, r.restored, r.owner_host, "
                            "r.owner_boot, r.owner_pid, r.owner_pstart, r.owner_token, t.seq, "
                            "t.name, t.state, t.attempts, t.restored, t.err, t.error, "
                            "t.started_ns, t.ended_ns, t.fingerprint, t.result "
                            "FROM runs r, tasks t WHERE t.run = r.id LIMIT 0",
                            -1, &st, NULL);
    if (rc != SQLITE_OK) {
        vt_err e = fail_db(s, rc, "checking its tables");
        if (e == VT_EIO) {
            msg_set("store %s is damaged: its tables are not those of a vitte task store: %s",
                    s->path, sqlite3_errmsg(db));
            e = VT_ECORRUPT;
        }
        return e;
    }
    sqlite3_finalize(st);
    if (s->opts.read_only)
        return VT_OK;

    if ((rc = query_int(db, "PRAGMA journal_mode=WAL", &app)) != SQLITE_OK)
        return fail_db(s, rc, "switching to WAL");
    if ((rc = exec_sql(db, s->opts.synchronous_full ? "PRAGMA synchronous=FULL"
                                                    : "PRAGMA synchronous=NORMAL")) != SQLITE_OK ||
        (rc = exec_sql(db, "PRAGMA foreign_keys=ON")) != SQLITE_OK)
        return fail_db(s, rc, "setting the connection up");
    if (sqlite3_db_readonly(db, "main") == 1) {
        /* SQLite opens a file it cannot write read-only without a word. */
        int e = access(s->path, W_OK) != 0 ? errno : EACCES;
        msg_set("store %s: cannot write to it: %s", s->path, strerror(e));
        return vt_err_from_errno(e);
    }
    rc = sqlite3_prepare_v3(db,
                            "INSERT OR REPLACE INTO tasks(run, name, state, attempts, restored, "
                            "err, error, started_ns, ended_ns, fingerprint, result) "
                            "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                            -1, SQLITE_PREPARE_PERSISTENT, &s->ins, NULL);
    if (rc != SQLITE_OK)
        return fail_db(s, rc, "preparing its statements");
    return VT_OK;
}

/* Why open(2) of path fails, for SQLite's "unable to open database file",
 * whose errno may be that of a read-only retry rather than the cause. */
static int open_errno(const char *path, int read_only, int fallback)
{
    int fd = open(path, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd >= 0) {
        close(fd);
        return fallback ? fallback : EIO;
    }
    return errno;
}

/* Why a file SQLite opened cannot be used: the store itself is not
 * readable (or writable), or its folder refuses the -wal and -shm files
 * WAL needs beside it. 0 when neither. */
static int access_errno(const char *path, int read_only)
{
    if (access(path, read_only ? R_OK : R_OK | W_OK) != 0)
        return errno;
    size_t n = strlen(path);
    while (n > 0 && path[n - 1] != '/')
        n--;
    char dir[PATH_MAX];
    if (n == 0)
        snprintf(dir, sizeof dir, ".");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(n > 1 ? n - 1 : 1), path);
    return access(dir, W_OK) != 0 ? errno : 0;
}

/* "file:<path>?immutable=1", the path percent-encoded as URIs want. NULL
 * if it does not fit. */
static char *immutable_uri(const char *path, char *buf, size_t size)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = (size_t)snprintf(buf, size, "file:");
    for (const unsigned char *c = (const unsigned char *)path; *c; c++) {
        if (o + 4 >= size)
            return NULL;
        if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
            strchr("/-._~", *c)) {
            buf[o++] = (char)*c;
        } else {
            buf[o++] = '%';
            buf[o++] = hex[*c >> 4];
            buf[o++] = hex[*c & 15];
        }
    }
    if (o + sizeof "?immutable=1" > size)
        return NULL;
    memcpy(buf + o, "?immutable=1", sizeof "?immutable=1");
    return buf;
}

static int cant_open(sqlite3 *db)
{
    int rc = sqlite3_extended_errcode(db) & 0xff;
    return rc == SQLITE_CANTOPEN || rc == SQLITE_READONLY || rc == SQLITE_PERM ||
           rc == SQLITE_IOERR;
}

static vt_err db_open(vt_store *s, int *created)
{
    struct stat st;
    *created = 0;
    if (!s->opts.read_only && stat(s->path, &st) != 0 && errno == ENOENT) {
        /* Created here rather than by SQLite, for the real errno (SQLite
         * retries read-only and reports that attempt's) and to know that a
         * failed open must remove it. */
        int fd = open(s->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST) {
            int e = errno;
            msg_set("store %s: cannot create it: %s", s->path, strerror(e));
            return vt_err_from_errno(e);
        }
        if (fd >= 0) {
            close(fd);
            *created = 1;
        }
    }
    int flags =
        (s->opts.read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(s->path, &s->db, flags, NULL);
    if (rc != SQLITE_OK) {
        vt_err e;
        if ((rc & 0xff) == SQLITE_NOMEM || !s->db) {
            msg_set("store %s: out of memory opening it", s->path);
            e = VT_ENOMEM;
        } else if ((rc & 0xff) == SQLITE_CANTOPEN) {
            int en = open_errno(s->path, s->opts.read_only, sqlite3_system_errno(s->db));
            msg_set("store %s: cannot open it: %s", s->path, strerror(en));
            e = vt_err_from_errno(en);
        } else {
            e = fail_db(s, rc, "opening it");
        }
        return e;
    }
    sqlite3_extended_result_codes(s->db, 1);
    s->busy_limit = BUSY_TIMEOUT_NS;
    sqlite3_busy_handler(s->db, busy_wait, s);
    vt_err e = check_and_setup(s);
    struct statvfs vfs;
    char uri[PATH_MAX + 32];
    if (e == VT_EIO && cant_open(s->db) && s->opts.read_only && statvfs(s->path, &vfs) == 0 &&
        (vfs.f_flag & ST_RDONLY) && immutable_uri(s->path, uri, sizeof uri)) {
        /* A WAL store closed cleanly has no -shm, and a read-only file
         * system cannot get one; since nothing can change the file there,
         * SQLite may read it as immutable. */
        sqlite3_close_v2(s->db);
        s->db = NULL;
        rc = sqlite3_open_v2(uri, &s->db,
                             SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI, NULL);
        if (rc != SQLITE_OK)
            return fail_db(s, rc, "opening it");
        sqlite3_extended_result_codes(s->db, 1);
        e = check_and_setup(s);
    }
    if (e == VT_EIO && cant_open(s->db)) {
        int en = access_errno(s->path, s->opts.read_only);
        if (en) {
            msg_set("store %s: cannot open it: %s", s->path, strerror(en));
            e = vt_err_from_errno(en);
        }
    }
    if (e == VT_EBUSY)
        msg_set("store %s: locked by another process for more than %d s", s->path,
                (int)(BUSY_TIMEOUT_NS / VT_SEC(1)));
    s->busy_limit = WRITE_BUSY_TIMEOUT_NS;
    return e;
}

/* ---- The writer ----------------------------------------------------------------------- */

static void writer_wake(vt_store *s)
{
    atomic_fetch_add_explicit(&s->wake, 1, memory_order_release);
    vt__futex_wake(&s->wake, 1);
}

/* Takes every shard's records, appending them to *tail in the order they
 * were pushed. */
static size_t drain(vt_store *s, qrec ***tail, int64_t *oldest, uint64_t *order)
{
    size_t total = 0;
    for (unsigned i = 0; i < s->nshards; i++) {
        shard *sh = &s->shards[i];
        if (!atomic_load_explicit(&sh->head, memory_order_relaxed))
            continue;
        qrec *h = atomic_exchange_explicit(&sh->head, NULL, memory_order_seq_cst);
        qrec *rev = NULL;
        uint32_t n = 0;
        while (h) {
            qrec *next = h->next;
            h->next = rev;
            rev = h;
            h = next;
            n++;
        }
        atomic_fetch_sub_explicit(&sh->count, n, memory_order_relaxed);
        for (qrec *q = rev; q; q = q->next) {
            q->order = (*order)++;
            if (!*oldest || q->queued_ns < *oldest)
                *oldest = q->queued_ns;
        }
        **tail = rev;
        while (**tail)
            *tail = &(**tail)->next;
        total += n;
    }
    return total;
}

static int shards_empty(vt_store *s)
{
    for (unsigned i = 0; i < s->nshards; i++)
        if (atomic_load_explicit(&s->shards[i].head, memory_order_seq_cst))
            return 0;
    return 1;
}

static int rec_before(const qrec *a, const qrec *b)
{
    return a->ended_ns != b->ended_ns ? a->ended_ns < b->ended_ns : a->order < b->order;
}

/* Sorts a list by end time (stable: ties keep their order), so that seq
 * follows the order tasks finished in, across shards. */
static qrec *sort_recs(qrec *l, size_t n)
{
    if (n < 2)
        return l;
    qrec *mid = l;
    for (size_t i = 1; i < n / 2; i++)
        mid = mid->next;
    qrec *b = mid->next;
    mid->next = NULL;
    qrec *a = sort_recs(l, n / 2);
    b = sort_recs(b, n - n / 2);
    qrec *head = NULL, **t = &head;
    while (a && b) {
        if (rec_before(b, a)) {
            *t = b;
            b = b->next;
        } else {
            *t = a;
            a = a->next;
        }
        t = &(*t)->next;
    }
    *t = a ? a : b;
    return head;
}

/* Gives the records of a list back: pooled blocks to their shards (one
 * lock per shard), the others to the allocator. */
static void free_recs(vt_store *s, qrec *list)
{
    qrec *back[MAX_SHARDS] = {0}, *tail[MAX_SHARDS];
    uint32_t nback[MAX_SHARDS] = {0};
    while (list) {
        qrec *q = list;
        list = q->next;
        if (q->size != POOL_BLOCK) {
            vt_free(q, q->size);
            continue;
        }
        if (!back[q->shard])
            tail[q->shard] = q;
        q->next = back[q->shard];
        back[q->shard] = q;
        nback[q->shard]++;
    }
    for (unsigned i = 0; i < s->nshards; i++) {
        if (!back[i])
            continue;
        shard *sh = &s->shards[i];
        vt__spin_lock(&sh->pool_lock);
        uint32_t room = sh->npool < s->pool_cap ? s->pool_cap - sh->npool : 0;
        qrec *keep = NULL;
        if (room >= nback[i]) {
            tail[i]->next = sh->pool;
            sh->pool = back[i];
            sh->npool += nback[i];
        } else {
            while (room--) {
                qrec *q = back[i];
                back[i] = q->next;
                q->next = sh->pool;
                sh->pool = q;
                sh->npool++;
            }
            keep = back[i];
        }
        vt__spin_unlock(&sh->pool_lock);
        while (keep) {
            qrec *q = keep;
            keep = q->next;
            vt_free(q, q->size);
        }
    }
}

static void run_fail(vt__store_run *r, vt_err e, const char *msg)
{
    if (r->err)
        return;
    r->err = e;
    snprintf(r->errmsg, sizeof r->errmsg, "%s", msg);
}

static int insert_rec(vt_store *s, const qrec *q)
{
    sqlite3_stmt *st = s->ins;
    const char *name = q->data;
    const char *error = name + q->name_len + 1;
    const char *fp = error + q->error_len + 1;
    const char *res = fp + q->fp_len;
    sqlite3_bind_int64(st, 1, q->run->rowid);
    sqlite3_bind_text(st, 2, name, (int)q->name_len, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, state_names[q->state], -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, q->attempts);
    sqlite3_bind_int(st, 5, q->restored != 0);
    sqlite3_bind_int64(st, 6, q->err);
    sqlite3_bind_text(st, 7, error, (int)q->error_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, q->started_ns);
    sqlite3_bind_int64(st, 9, q->ended_ns);
    if (q->has_fp)
        sqlite3_bind_blob(st, 10, fp, (int)q->fp_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 10);
    if (q->has_result)
        sqlite3_bind_blob(st, 11, res, (int)q->result_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 11);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Commits the n records from *list in one transaction, sets the errors of
 * the runs whose records could not be written, frees the records and
 * advances *list. Called with s->mu held. */
static void commit_chunk(vt_store *s, qrec **list, size_t n)
{
    sqlite3 *db = s->db;
    int64_t t0 = vt_now_ns();
    int rc;
    for (int tries = 0;; tries++) {
        rc = exec_sql(db, "BEGIN IMMEDIATE");
        if ((rc & 0xff) != SQLITE_BUSY || tries + 1 >= WRITER_BUSY_TRIES)
            break;
    }
    qrec *q = *list;
    size_t written = 0;
    char m[512], full[MSG_SIZE];
    if (rc == SQLITE_OK) {
        for (size_t i = 0; i < n; i++, q = q->next) {
            int r = insert_rec(s, q);
            if (r == SQLITE_OK) {
                written++;
            } else if ((r & 0xff) == SQLITE_CONSTRAINT) {
                /* One bad record (its run deleted by another process)
                 * costs only itself: the statement rolled back alone. */
                snprintf(full, sizeof full, "store %s: task \"%s\" of run %s not recorded: %s",
                         s->path, q->data, q->run->id, db_msg(db, m, sizeof m));
                run_fail(q->run, VT_EIO, full);
                vt_log(VT_LOG_ERROR, "store", "%s", full + LOG_SKIP);
            } else {
                rc = r;
                break;
            }
        }
        if (rc == SQLITE_OK)
            rc = exec_sql(db, "COMMIT");
    }
    if (rc != SQLITE_OK) {
        vt_err e = err_of(rc);
        snprintf(full, sizeof full, "store %s: committing %zu task records failed: %s", s->path, n,
                 db_msg(db, m, sizeof m));
        rollback(db);
        vt_log(VT_LOG_ERROR, "store", "%s", full + LOG_SKIP);
        q = *list;
        for (size_t i = 0; i < n; i++, q = q->next)
            run_fail(q->run, e, full);
        written = 0;
    } else if (vt_log_enabled(VT_LOG_TRACE)) {
        vt_log(VT_LOG_TRACE, "store", "%s: committed %zu records in one transaction (%lld us)",
               s->path, written, (long long)((vt_now_ns() - t0) / 1000));
    }
    qrec *done = *list, **end = list;
    for (size_t i = 0; i < n; i++)
        end = &(*end)->next;
    *list = *end;
    *end = NULL;
    free_recs(s, done);
}

static void commit_all(vt_store *s, qrec *list, size_t n)
{
    list = sort_recs(list, n);
    size_t batch = s->opts.batch_tasks;
    while (n) {
        size_t k = n < batch ? n : batch;
        int64_t now = vt_now_ns();
        if (now - s->last_commit > WRITER_GAP_NS) {
            s->streak_start = now;
        } else if (now - s->streak_start > WRITER_STREAK_NS) {
            vt__sleep_ns(WRITER_GAP_NS);
            s->streak_start = vt_now_ns();
        }
        pthread_mutex_lock(&s->mu);
        commit_chunk(s, &list, k);
        pthread_mutex_unlock(&s->mu);
        s->last_commit = vt_now_ns();
        n -= k;
    }
}

static void *writer_main(void *arg)
{
    vt_store *s = arg;
    qrec *pend = NULL, **tail = &pend;
    size_t npend = 0;
    int64_t oldest = 0;
    uint64_t order = 0;
    for (;;) {
        uint32_t w = atomic_load_explicit(&s->wake, memory_order_acquire);
        pthread_mutex_lock(&s->mu);
        uint64_t target = s->flush_req, done = s->flush_done;
        int closing = s->closing;
        pthread_mutex_unlock(&s->mu);
        npend += drain(s, &tail, &oldest, &order);
        if (npend && (target != done || closing || npend >= s->opts.batch_tasks ||
                      vt_now_ns() - oldest >= s->opts.batch_ns)) {
            commit_all(s, pend, npend);
            pend = NULL;
            tail = &pend;
            npend = 0;
            oldest = 0;
        }
        if (target != done) {
            pthread_mutex_lock(&s->mu);
            s->flush_done = target;
            pthread_cond_broadcast(&s->cv);
            pthread_mutex_unlock(&s->mu);
        }
        if (closing)
            break;
        if (npend) {
            /* Records that come meanwhile ride with these at the deadline;
             * only a shard filling up ends the wait early. */
            atomic_store_explicit(&s->idle, WRITER_TIMED, memory_order_seq_cst);
            vt__futex_wait(&s->wake, w, oldest + s->opts.batch_ns);
        } else {
            atomic_store_explicit(&s->idle, WRITER_IDLE, memory_order_seq_cst);
            /* A record pushed before the store above was not told to wake
             * us: look once more (the other half is in vt__store_record). */
            if (shards_empty(s))
                vt__futex_wait(&s->wake, w, VT_FOREVER);
        }
        atomic_store_explicit(&s->idle, WRITER_BUSY, memory_order_seq_cst);
    }
    return NULL;
}

/* ---- Open and close --------------------------------------------------------------- */

static void store_destroy(vt_store *s, int unlink_files)
{
    if (s->ins)
        sqlite3_finalize(s->ins);
    if (s->db)
        sqlite3_close_v2(s->db);
    if (unlink_files) {
        char extra[PATH_MAX + 8];
        unlink(s->path);
        snprintf(extra, sizeof extra, "%s-wal", s->path);
        unlink(extra);
        snprintf(extra, sizeof extra, "%s-shm", s->path);
        unlink(extra);
    }
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    for (unsigned i = 0; s->shards && i < s->nshards; i++)
        while (s->shards[i].pool) {
            qrec *q = s->shards[i].pool;
            s->shards[i].pool = q->next;
            vt_free(q, q->size);
        }
    vt_free(s->shards_mem, s->shards_size);
    vt_free(s->path, s->path_size);
    vt_free(s, sizeof *s);
}

vt_err vt_store_open(vt_store **out, const char *path, const vt_store_opts *opts)
{
    tl_msg[0] = 0;
    if (!out) {
        msg_set("store: NULL out");
        return VT_EINVAL;
    }
    *out = NULL;
    if (!path || !*path) {
        msg_set("store: no path");
        return VT_EINVAL;
    }
    vt_store_opts o = {0};
    if (opts)
        o = *opts;
    if ((o.read_only != 0 && o.read_only != 1) ||
        (o.synchronous_full != 0 && o.synchronous_full != 1) || o.batch_ns < 0 ||
        o.batch_ns > MAX_BATCH_NS || o.batch_tasks > MAX_BATCH_TASKS) {
        msg_set("store %s: bad options (read_only and synchronous_full are 0 or 1, batch_ns "
                "0 .. 1 h, batch_tasks 0 .. %u)",
                path, MAX_BATCH_TASKS);
        return VT_EINVAL;
    }
    if (!o.batch_ns)
        o.batch_ns = DEFAULT_BATCH_NS;
    if (!o.batch_tasks)
        o.batch_tasks = DEFAULT_BATCH_TASKS;
    if (!sqlite3_threadsafe()) {
        msg_set("store %s: this SQLite was built without thread support", path);
        return VT_ENOTSUP;
    }

    vt_store *s = vt_calloc(1, sizeof *s);
    if (!s) {
        msg_set("store %s: out of memory", path);
        return VT_ENOMEM;
    }
    s->opts = o;
    unsigned n = 8;
    while (n < 2 * vt_cpu_count() && n < MAX_SHARDS)
        n *= 2;
    s->nshards = n;
    s->wake_at = o.batch_tasks / 4 ? o.batch_tasks / 4 : 1;
    s->pool_cap = POOL_BYTES / POOL_BLOCK / n;
    s->shards_size = n * sizeof(shard) + VT_CACHE_LINE - 1;
    s->path_size = strlen(path) + 1;
    s->shards_mem = vt_calloc(1, s->shards_size);
    s->path = vt_alloc(s->path_size);
    if (!s->shards_mem || !s->path) {
        vt_free(s->shards_mem, s->shards_size);
        vt_free(s->path, s->path_size);
        vt_free(s, sizeof *s);
        msg_set("store %s: out of memory", path);
        return VT_ENOMEM;
    }
    memcpy(s->path, path, s->path_size);
    s->shards =
        (shard *)(((uintptr_t)s->shards_mem + VT_CACHE_LINE - 1) & ~(uintptr_t)(VT_CACHE_LINE - 1));
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    owner_self(&s->me);

    int created;
    vt_err e = db_open(s, &created);
    if (!e && !o.read_only) {
        e = vt__thread_create(&s->writer, writer_main, s, 0, "vt-store");
        if (e)
            msg_set("store %s: cannot start its writer thread: %s", path, vt_strerror(e));
        s->writer_started = !e;
    }
    if (e) {
        store_destroy(s, created);
        return e;
    }
    tl_msg[0] = 0; /* a first attempt's message (see db_open) is no error */
    *out = s;
    return VT_OK;
}

void vt_store_close(vt_store *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    if (s->runs) {
        vt_log(VT_LOG_ERROR, "store", "%s: closed while run %s uses it: waiting for its end",
               s->path, s->runs->id);
        while (s->runs)
            pthread_cond_wait(&s->cv, &s->mu);
    }
    s->closing = 1;
    pthread_mutex_unlock(&s->mu);
    if (s->writer_started) {
        writer_wake(s);
        vt__thread_join(s->writer, NULL);
    }
    store_destroy(s, 0);
}

/* ---- Runs ------------------------------------------------------------------------------ */

static void run_free(vt__store_run *r)
{
    vt_free(r, sizeof *r);
}

vt_err vt__store_run_begin(vt_store *s, const char *run_id, const char *graph, size_t total,
                           vt__store_run **out, int *resumed)
{
    tl_msg[0] = 0;
    if (out)
        *out = NULL;
    if (resumed)
        *resumed = 0;
    if (!s || !run_id || !out) {
        msg_set("store: NULL argument");
        return VT_EINVAL;
    }
    size_t idl = strlen(run_id);
    if (idl == 0 || idl >= VT_RUN_ID_MAX) {
        msg_set("store %s: run id must be 1 to %d bytes long", s->path, VT_RUN_ID_MAX - 1);
        return VT_EINVAL;
    }
    if (s->opts.read_only) {
        msg_set("store %s: opened read-only, it cannot record a run", s->path);
        return VT_ESTATE;
    }
    if (!graph)
        graph = "graph";
    vt__store_run *r = vt_calloc(1, sizeof *r);
    if (!r) {
        msg_set("store %s: out of memory", s->path);
        return VT_ENOMEM;
    }
    r->s = s;
    memcpy(r->id, run_id, idl + 1);
    r->token = vt_hash_mix64(atomic_fetch_add(&token_seq, 1) + 1 + ((uint64_t)vt__wall_ns() << 1) +
                             ((uint64_t)getpid() << 40));

    pthread_mutex_lock(&s->mu);
    vt_err e = VT_OK;
    for (vt__store_run *a = s->runs; a; a = a->next)
        if (strcmp(a->id, run_id) == 0) {
            msg_set("store %s: run %s is running already in this process", s->path, run_id);
            e = VT_EBUSY;
        }
    if (e) {
        pthread_mutex_unlock(&s->mu);
        run_free(r);
        return e;
    }
    /* In the live set before the row says RUNNING, so that another store
     * object of this process never takes the row for a dead run's. */
    live_add(r);
    sqlite3 *db = s->db;
    sqlite3_stmt *st = NULL;
    int64_t now = vt__wall_ns();
    int rc = exec_sql(db, "BEGIN IMMEDIATE");
    if (rc != SQLITE_OK)
        goto db_fail;
    rc = sqlite3_prepare_v2(db,
                            "SELECT id, status, owner_host, owner_boot, owner_pid, owner_pstart, "
                            "owner_token FROM runs WHERE run_id = ?1",
                            -1, &st, NULL);
    if (rc != SQLITE_OK)
        goto db_fail;
    sqlite3_bind_text(st, 1, run_id, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        r->rowid = sqlite3_column_int64(st, 0);
        const char *status = (const char *)sqlite3_column_text(st, 1);
        const char *host = (const char *)sqlite3_column_text(st, 2);
        int64_t pid = sqlite3_column_int64(st, 4);
        if (status && strcmp(status, "running") == 0 &&
            owner_alive(s, host, (const char *)sqlite3_column_text(st, 3), pid,
                        sqlite3_column_int64(st, 5), (uint64_t)sqlite3_column_int64(st, 6))) {
            msg_set("store %s: run %s is running in process %lld on %s", s->path, run_id,
                    (long long)pid, host ? host : "?");
            e = VT_EBUSY;
            goto fail;
        }
        sqlite3_finalize(st);
        rc = sqlite3_prepare_v2(db,
                                "UPDATE runs SET graph = ?2, status = 'running', "
                                "last_started_ns = ?3, starts = starts + 1, total = ?4, "
                                "owner_host = ?5, owner_boot = ?6, owner_pid = ?7, "
                                "owner_pstart = ?8, owner_token = ?9 WHERE id = ?1",
                                -1, &st, NULL);
        if (resumed)
            *resumed = 1;
    } else if (rc == SQLITE_DONE) {
        sqlite3_finalize(st);
        rc = sqlite3_prepare_v2(db,
                                "INSERT INTO runs(id, graph, last_started_ns, total, owner_host, "
                                "owner_boot, owner_pid, owner_pstart, owner_token, run_id, status, "
                                "started_ns, starts) "
                                "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'running', ?3, 1)",
                                -1, &st, NULL);
    } else {
        goto db_fail;
    }
    if (rc != SQLITE_OK)
        goto db_fail;
    if (r->rowid)
        sqlite3_bind_int64(st, 1, r->rowid);
    else
        sqlite3_bind_null(st, 1);
    sqlite3_bind_text(st, 2, graph, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now);
    sqlite3_bind_int64(st, 4, (int64_t)total);
    sqlite3_bind_text(st, 5, s->me.host, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, s->me.boot, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, (int64_t)getpid());
    sqlite3_bind_int64(st, 8, s->me.pstart);
    sqlite3_bind_int64(st, 9, (int64_t)r->token);
    if (!r->rowid)
        sqlite3_bind_text(st, 10, run_id, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        goto db_fail;
    if (!r->rowid)
        r->rowid = sqlite3_last_insert_rowid(db);
    sqlite3_finalize(st);
    st = NULL;
    if ((rc = exec_sql(db, "COMMIT")) != SQLITE_OK)
        goto db_fail;
    r->next = s->runs;
    s->runs = r;
    pthread_mutex_unlock(&s->mu);
    *out = r;
    return VT_OK;

db_fail:
    e = fail_db(s, rc, "starting a run");
fail:
    sqlite3_finalize(st);
    rollback(db);
    live_remove(r);
    pthread_mutex_unlock(&s->mu);
    if (resumed)
        *resumed = 0;
    run_free(r);
    return e;
}

vt_err vt__store_load_succeeded(vt__store_run *r, vt__store_done_fn fn, void *ud)
{
    if (!r || !fn)
        return VT_EINVAL;
    vt_store *s = r->s;
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    vt_err e = VT_OK;
    int rc = sqlite3_prepare_v2(s->db,
                                "SELECT name, fingerprint, result FROM tasks "
                                "WHERE run = ?1 AND state = 'succeeded' ORDER BY seq",
                                -1, &st, NULL);
    if (rc != SQLITE_OK) {
        e = fail_db(s, rc, "reading the tasks that succeeded");
        pthread_mutex_unlock(&s->mu);
        return e;
    }
    sqlite3_bind_int64(st, 1, r->rowid);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        const void *fp = NULL, *res = NULL;
        size_t fpl = 0, resl = 0;
        if (sqlite3_column_type(st, 1) != SQLITE_NULL) {
            fp = sqlite3_column_blob(st, 1);
            fpl = (size_t)sqlite3_column_bytes(st, 1);
            if (!fp)
                fp = "";
        }
        if (sqlite3_column_type(st, 2) != SQLITE_NULL) {
            res = sqlite3_column_blob(st, 2);
            resl = (size_t)sqlite3_column_bytes(st, 2);
            if (!res)
                res = "";
        }
        if (!name) {
            rc = SQLITE_NOMEM;
            break;
        }
        if ((e = fn(ud, name, fp, fpl, res, resl)) != VT_OK)
            break;
    }
    if (!e && rc != SQLITE_DONE)
        e = fail_db(s, rc, "reading the tasks that succeeded");
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->mu);
    return e;
}

static unsigned my_slot(void)
{
    unsigned v = tl_slot;
    if (VT_UNLIKELY(!v))
        tl_slot = v = atomic_fetch_add_explicit(&slot_seq, 1, memory_order_relaxed) + 1;
    return v - 1;
}

vt_err vt__store_record(vt__store_run *r, const vt__store_rec *rec)
{
    if (!r || !rec || !rec->name || (unsigned)rec->state >= VT_TASK_STATES ||
        rec->fingerprint_len > VT_FINGERPRINT_MAX || rec->result_len > VT_RESULT_MAX ||
        (rec->fingerprint_len && !rec->fingerprint) || (rec->result_len && !rec->result))
        return VT_EINVAL;
    const char *error = rec->error ? rec->error : "";
    size_t nl = strlen(rec->name), el = strlen(error);
    size_t size = sizeof(qrec) + nl + 1 + el + 1 + rec->fingerprint_len + rec->result_len;
    vt_store *s = r->s;
    unsigned si = my_slot() & (s->nshards - 1);
    shard *sh = &s->shards[si];
    qrec *q = NULL;
    if (size <= POOL_BLOCK) {
        size = POOL_BLOCK;
        vt__spin_lock(&sh->pool_lock);
        if ((q = sh->pool)) {
            sh->pool = q->next;
            sh->npool--;
        }
        vt__spin_unlock(&sh->pool_lock);
    }
    if (!q && !(q = vt_alloc(size)))
        return VT_ENOMEM;
    q->run = r;
    q->size = size;
    q->shard = (uint16_t)si;
    q->started_ns = rec->started_unix_ns;
    q->ended_ns = rec->ended_unix_ns;
    q->err = (int64_t)rec->err;
    q->attempts = rec->attempts;
    q->state = (int)rec->state;
    q->restored = rec->restored;
    q->has_fp = rec->fingerprint != NULL;
    q->has_result = rec->result != NULL;
    q->name_len = nl;
    q->error_len = el;
    q->fp_len = rec->fingerprint_len;
    q->result_len = rec->result_len;
    char *p = q->data;
    memcpy(p, rec->name, nl + 1);
    p += nl + 1;
    memcpy(p, error, el + 1);
    p += el + 1;
    if (q->fp_len)
        memcpy(p, rec->fingerprint, q->fp_len);
    p += q->fp_len;
    if (q->result_len)
        memcpy(p, rec->result, q->result_len);
    q->queued_ns = vt_now_ns();

    /* Counted before it is pushed, so the writer never subtracts more than
     * was added. */
    uint32_t c = atomic_fetch_add_explicit(&sh->count, 1, memory_order_relaxed) + 1;
    qrec *h = atomic_load_explicit(&sh->head, memory_order_relaxed);
    do
        q->next = h;
    while (!atomic_compare_exchange_weak_explicit(&sh->head, &h, q, memory_order_seq_cst,
                                                  memory_order_relaxed));
    /* Pairs with the writer's store of WRITER_IDLE and its look at the
     * shards: one of the two sees the other (both seq_cst). */
    int idle = atomic_load_explicit(&s->idle, memory_order_seq_cst);
    if (VT_UNLIKELY(idle == WRITER_IDLE || (idle == WRITER_TIMED && c >= s->wake_at)) &&
        atomic_compare_exchange_strong_explicit(&s->idle, &idle, WRITER_BUSY, memory_order_seq_cst,
                                                memory_order_relaxed))
        writer_wake(s);
    return VT_OK;
}

vt_err vt__store_flush(vt__store_run *r)
{
    if (!r)
        return VT_EINVAL;
    vt_store *s = r->s;
    pthread_mutex_lock(&s->mu);
    uint64_t t = ++s->flush_req;
    pthread_mutex_unlock(&s->mu);
    writer_wake(s);
    pthread_mutex_lock(&s->mu);
    while (s->flush_done < t)
        pthread_cond_wait(&s->cv, &s->mu);
    vt_err e = r->err;
    if (e)
        snprintf(tl_msg, sizeof tl_msg, "%s", r->errmsg);
    r->err = VT_OK;
    pthread_mutex_unlock(&s->mu);
    return e;
}

vt_err vt__store_run_end(vt__store_run *r, vt_run_status status, const vt_run_summary *sum)
{
    if (!r)
        return VT_EINVAL;
    vt_store *s = r->s;
    tl_msg[0] = 0;
    vt_err e = vt__store_flush(r);
    vt_err bad = VT_OK;
    if (status == VT_RUN_RUNNING ||
        (unsigned)status >= sizeof status_names / sizeof *status_names) {
        /* The row stays RUNNING, and reads as INTERRUPTED once r is gone. */
        bad = VT_EINVAL;
        if (!e)
            msg_set("store %s: run %s ended with status %d, which is no end", s->path, r->id,
                    (int)status);
    }
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st = NULL;
    int rc = SQLITE_OK;
    if (!bad) {
        if (sum)
            rc = sqlite3_prepare_v2(s->db,
                                    "UPDATE runs SET status = ?2, ended_ns = ?3, total = ?4, "
                                    "succeeded = ?5, failed = ?6, cancelled = ?7, skipped = ?8, "
                                    "restored = ?9 WHERE id = ?1",
                                    -1, &st, NULL);
        else
            rc = sqlite3_prepare_v2(
                s->db,
                "UPDATE runs SET status = ?2, ended_ns = ?3, "
                "total = max(total, (SELECT count(*) FROM tasks WHERE run = ?1)), "
                "succeeded = (SELECT count(*) FROM tasks WHERE run = ?1 AND state = 'succeeded'), "
                "failed = (SELECT count(*) FROM tasks WHERE run = ?1 AND state = 'failed'), "
                "cancelled = (SELECT count(*) FROM tasks WHERE run = ?1 AND state = 'cancelled'), "
                "skipped = (SELECT count(*) FROM tasks WHERE run = ?1 AND state = 'skipped'), "
                "restored = (SELECT count(*) FROM tasks WHERE run = ?1 AND restored != 0) "
                "WHERE id = ?1",
                -1, &st, NULL);
        if (rc == SQLITE_OK) {
            sqlite3_bind_int64(st, 1, r->rowid);
            sqlite3_bind_text(st, 2, status_names[status], -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 3, vt__wall_ns());
            if (sum) {
                sqlite3_bind_int64(st, 4, (int64_t)sum->total);
                sqlite3_bind_int64(st, 5, (int64_t)sum->succeeded);
                sqlite3_bind_int64(st, 6, (int64_t)sum->failed);
                sqlite3_bind_int64(st, 7, (int64_t)sum->cancelled);
                sqlite3_bind_int64(st, 8, (int64_t)sum->skipped);
                sqlite3_bind_int64(st, 9, (int64_t)sum->restored);
            }
            rc = sqlite3_step(st);
            if (rc == SQLITE_DONE)
                rc = SQLITE_OK;
        }
        sqlite3_finalize(st);
        if (rc != SQLITE_OK) {
            char keep[MSG_SIZE];
            snprintf(keep, sizeof keep, "%s", tl_msg);
            vt_err we = fail_db(s, rc, "writing the end of a run");
            if (e)
                snprintf(tl_msg, sizeof tl_msg, "%s", keep);
            else
                e = we;
        }
    }
    for (vt__store_run **p = &s->runs; *p; p = &(*p)->next)
        if (*p == r) {
            *p = r->next;
            break;
        }
    live_remove(r);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    run_free(r);
    return e ? e : bad;
}

/* ---- History --------------------------------------------------------------------------- */

vt_err vt_store_runs(vt_store *s, size_t max, vt_run_info **out, size_t *n)
{
    tl_msg[0] = 0;
    if (out)
        *out = NULL;
    if (n)
        *n = 0;
    if (!s || !out || !n) {
        msg_set("store: NULL argument");
        return VT_EINVAL;
    }
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st = NULL, *cnt = NULL;
    vt_run_info *v = NULL;
    size_t len = 0, cap = 0;
    vt_err e = VT_OK;
    int64_t rows = 0;
    /* One read transaction: the count and the rows agree. */
    int rc = exec_sql(s->db, "BEGIN");
    if (rc == SQLITE_OK)
        rc = query_int(s->db, "SELECT count(*) FROM runs", &rows);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(s->db,
                                "SELECT id, run_id, graph, status, started_ns, ended_ns, starts, "
                                "total, succeeded, failed, cancelled, skipped, restored, "
                                "owner_host, owner_boot, owner_pid, owner_pstart, owner_token "
                                "FROM runs ORDER BY id DESC",
                                -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(s->db,
                                "SELECT state, count(*), sum(restored != 0) FROM tasks "
                                "WHERE run = ?1 GROUP BY state",
                                -1, &cnt, NULL);
    if (rc != SQLITE_OK)
        goto db_fail;
    cap = (size_t)rows;
    if (max && max < cap)
        cap = max;
    if (cap && !(v = vt_calloc(cap, sizeof *v))) {
        msg_set("store %s: out of memory", s->path);
        e = VT_ENOMEM;
        goto fail;
    }
    while (len < cap && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        vt_run_info *ri = &v[len];
        copy_utf8(ri->id, sizeof ri->id, (const char *)sqlite3_column_text(st, 1));
        copy_utf8(ri->graph, sizeof ri->graph, (const char *)sqlite3_column_text(st, 2));
        int status = name_index(status_names, 5, (const char *)sqlite3_column_text(st, 3));
        if (status < 0) {
            msg_set("store %s is damaged: run %s has an unknown status", s->path, ri->id);
            e = VT_ECORRUPT;
            goto fail;
        }
        ri->status = (vt_run_status)status;
        ri->started_unix_ns = sqlite3_column_int64(st, 4);
        ri->ended_unix_ns = sqlite3_column_int64(st, 5);
        ri->starts = (unsigned)sqlite3_column_int64(st, 6);
        ri->total = (size_t)sqlite3_column_int64(st, 7);
        if (ri->status == VT_RUN_RUNNING) {
            if (!owner_alive(s, (const char *)sqlite3_column_text(st, 13),
                             (const char *)sqlite3_column_text(st, 14),
                             sqlite3_column_int64(st, 15), sqlite3_column_int64(st, 16),
                             (uint64_t)sqlite3_column_int64(st, 17)))
                ri->status = VT_RUN_INTERRUPTED;
            /* No summary was written yet: count what was recorded. */
            sqlite3_bind_int64(cnt, 1, sqlite3_column_int64(st, 0));
            while ((rc = sqlite3_step(cnt)) == SQLITE_ROW) {
                const char *sn = (const char *)sqlite3_column_text(cnt, 0);
                size_t k = (size_t)sqlite3_column_int64(cnt, 1);
                switch (name_index(state_names, VT_TASK_STATES, sn)) {
                case VT_TASK_SUCCEEDED:
                    ri->succeeded = k;
                    break;
                case VT_TASK_FAILED:
                    ri->failed = k;
                    break;
                case VT_TASK_CANCELLED:
                    ri->cancelled = k;
                    break;
                case VT_TASK_SKIPPED:
                    ri->skipped = k;
                    break;
                default:
                    break;
                }
                ri->restored += (size_t)sqlite3_column_int64(cnt, 2);
            }
            sqlite3_reset(cnt);
            if (rc != SQLITE_DONE)
                goto db_fail;
        } else {
            ri->succeeded = (size_t)sqlite3_column_int64(st, 8);
            ri->failed = (size_t)sqlite3_column_int64(st, 9);
            ri->cancelled = (size_t)sqlite3_column_int64(st, 10);
            ri->skipped = (size_t)sqlite3_column_int64(st, 11);
            ri->restored = (size_t)sqlite3_column_int64(st, 12);
        }
        len++;
    }
    if (len < cap) {
        if (rc == SQLITE_DONE || rc == SQLITE_ROW) {
            msg_set("store %s is damaged: it counts %zu runs but lists %zu", s->path, cap, len);
            e = VT_ECORRUPT;
            goto fail;
        }
        goto db_fail;
    }
    sqlite3_finalize(st);
    sqlite3_finalize(cnt);
    exec_sql(s->db, "COMMIT");
    pthread_mutex_unlock(&s->mu);
    *out = v;
    *n = len;
    return VT_OK;

db_fail:
    e = fail_db(s, rc, "reading the runs");
fail:
    sqlite3_finalize(st);
    sqlite3_finalize(cnt);
    rollback(s->db);
    pthread_mutex_unlock(&s->mu);
    vt_free(v, cap * sizeof *v);
    return e;
}

void vt_store_runs_free(vt_run_info *runs, size_t n)
{
    vt_free(runs, n * sizeof *runs);
}

static void record_free(vt_task_record *t)
{
    if (t->name)
        vt_free(t->name, strlen(t->name) + 1);
    if (t->error)
        vt_free(t->error, strlen(t->error) + 1);
    vt_free(t->fingerprint, t->fingerprint_len);
    vt_free(t->result, t->result_len);
}

void vt_store_run_tasks_free(vt_task_record *tasks, size_t n)
{
    if (!tasks)
        return;
    for (size_t i = 0; i < n; i++)
        record_free(&tasks[i]);
    vt_free(tasks, n * sizeof *tasks);
}

/* A copy of column c (a blob or NULL) into *p, *len. 0, or -1 out of memory. */
static int copy_blob(sqlite3_stmt *st, int c, void **p, size_t *len)
{
    *p = NULL;
    *len = 0;
    if (sqlite3_column_type(st, c) == SQLITE_NULL)
        return 0;
    const void *b = sqlite3_column_blob(st, c);
    size_t l = (size_t)sqlite3_column_bytes(st, c);
    if (!(*p = vt_alloc(l)))
        return -1;
    if (l)
        memcpy(*p, b, l);
    *len = l;
    return 0;
}

static int64_t run_rowid(vt_store *s, const char *run_id, int *rc)
{
    sqlite3_stmt *st;
    int64_t id = 0;
    *rc = sqlite3_prepare_v2(s->db, "SELECT id FROM runs WHERE run_id = ?1", -1, &st, NULL);
    if (*rc != SQLITE_OK)
        return 0;
    sqlite3_bind_text(st, 1, run_id, -1, SQLITE_STATIC);
    *rc = sqlite3_step(st);
    if (*rc == SQLITE_ROW) {
        id = sqlite3_column_int64(st, 0);
        *rc = SQLITE_OK;
    } else if (*rc == SQLITE_DONE) {
        *rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return id;
}

vt_err vt_store_run_tasks(vt_store *s, const char *run_id, vt_task_record **out, size_t *n)
{
    tl_msg[0] = 0;
    if (out)
        *out = NULL;
    if (n)
        *n = 0;
    if (!s || !run_id || !out || !n) {
        msg_set("store: NULL argument");
        return VT_EINVAL;
    }
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st = NULL;
    vt_task_record *v = NULL;
    size_t len = 0, cap = 0;
    vt_err e = VT_OK;
    int64_t id = 0, rows = 0;
    int rc = exec_sql(s->db, "BEGIN");
    if (rc == SQLITE_OK)
        id = run_rowid(s, run_id, &rc);
    if (rc != SQLITE_OK)
        goto db_fail;
    if (!id) {
        msg_set("store %s: no run %s", s->path, run_id);
        e = VT_ENOENT;
        goto fail;
    }
    rc = sqlite3_prepare_v2(s->db, "SELECT count(*) FROM tasks WHERE run = ?1", -1, &st, NULL);
    if (rc != SQLITE_OK)
        goto db_fail;
    sqlite3_bind_int64(st, 1, id);
    if ((rc = sqlite3_step(st)) != SQLITE_ROW)
        goto db_fail;
    rows = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    st = NULL;
    rc = sqlite3_prepare_v2(s->db,
                            "SELECT name, state, attempts, restored, err, error, started_ns, "
                            "ended_ns, fingerprint, result FROM tasks WHERE run = ?1 ORDER BY seq",
                            -1, &st, NULL);
    if (rc != SQLITE_OK)
        goto db_fail;
    sqlite3_bind_int64(st, 1, id);
    cap = (size_t)rows;
    if (cap && !(v = vt_calloc(cap, sizeof *v)))
        goto oom;
    while (len < cap && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        vt_task_record *t = &v[len];
        int state =
            name_index(state_names, VT_TASK_STATES, (const char *)sqlite3_column_text(st, 1));
        if (state < 0) {
            msg_set("store %s is damaged: a task of run %s has an unknown state", s->path, run_id);
            e = VT_ECORRUPT;
            goto fail;
        }
        const char *name = (const char *)sqlite3_column_text(st, 0);
        const char *error = (const char *)sqlite3_column_text(st, 5);
        t->state = (vt_task_state)state;
        t->attempts = (unsigned)sqlite3_column_int64(st, 2);
        t->restored = sqlite3_column_int(st, 3) != 0;
        t->err = (vt_err)sqlite3_column_int64(st, 4);
        t->started_unix_ns = sqlite3_column_int64(st, 6);
        t->ended_unix_ns = sqlite3_column_int64(st, 7);
        len++; /* counted now so that the failure paths free its parts */
        if (!(t->name = vt_strdup(name ? name : "")) ||
            !(t->error = vt_strdup(error ? error : "")) ||
            copy_blob(st, 8, &t->fingerprint, &t->fingerprint_len) ||
            copy_blob(st, 9, &t->result, &t->result_len))
            goto oom;
    }
    if (len < cap) {
        if (rc == SQLITE_DONE || rc == SQLITE_ROW) {
            msg_set("store %s is damaged: run %s counts %zu tasks but lists %zu", s->path, run_id,
                    cap, len);
            e = VT_ECORRUPT;
            goto fail;
        }
        goto db_fail;
    }
    sqlite3_finalize(st);
    exec_sql(s->db, "COMMIT");
    pthread_mutex_unlock(&s->mu);
    *out = v;
    *n = len;
    return VT_OK;

oom:
    msg_set("store %s: out of memory", s->path);
    e = VT_ENOMEM;
    goto fail;
db_fail:
    e = fail_db(s, rc, "reading the tasks of a run");
fail:
    sqlite3_finalize(st);
    rollback(s->db);
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; i < len; i++)
        record_free(&v[i]);
    vt_free(v, cap * sizeof *v);
    return e;
}

vt_err vt_store_delete_run(vt_store *s, const char *run_id)
{
    tl_msg[0] = 0;
    if (!s || !run_id) {
        msg_set("store: NULL argument");
        return VT_EINVAL;
    }
    if (s->opts.read_only) {
        msg_set("store %s: opened read-only, it cannot delete a run", s->path);
        return VT_ESTATE;
    }
    pthread_mutex_lock(&s->mu);
    vt_err e = VT_OK;
    sqlite3_stmt *st = NULL;
    for (vt__store_run *a = s->runs; a; a = a->next)
        if (strcmp(a->id, run_id) == 0) {
            msg_set("store %s: run %s is running in this process", s->path, run_id);
            pthread_mutex_unlock(&s->mu);
            return VT_EBUSY;
        }
    int rc = exec_sql(s->db, "BEGIN IMMEDIATE");
    if (rc != SQLITE_OK)
        goto db_fail;
    rc = sqlite3_prepare_v2(s->db,
                            "SELECT id, status, owner_host, owner_boot, owner_pid, owner_pstart, "
                            "owner_token FROM runs WHERE run_id = ?1",
                            -1, &st, NULL);
    if (rc != SQLITE_OK)
        goto db_fail;
    sqlite3_bind_text(st, 1, run_id, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        msg_set("store %s: no run %s", s->path, run_id);
        e = VT_ENOENT;
        goto fail;
    }
    if (rc != SQLITE_ROW)
        goto db_fail;
    int64_t id = sqlite3_column_int64(st, 0);
    const char *status = (const char *)sqlite3_column_text(st, 1);
    /* A live run elsewhere would go on recording into a run that is gone. */
    if (status && strcmp(status, "running") == 0 &&
        owner_alive(s, (const char *)sqlite3_column_text(st, 2),
                    (const char *)sqlite3_column_text(st, 3), sqlite3_column_int64(st, 4),
                    sqlite3_column_int64(st, 5), (uint64_t)sqlite3_column_int64(st, 6))) {
        msg_set("store %s: run %s is running in process %lld", s->path, run_id,
                (long long)sqlite3_column_int64(st, 4));
        e = VT_EBUSY;
        goto fail;
    }
    sqlite3_finalize(st);
    st = NULL;
    char sql[128];
    snprintf(sql, sizeof sql,
             "DELETE FROM tasks WHERE run = %lld; DELETE FROM runs WHERE id = %lld", (long long)id,
             (long long)id);
    if ((rc = exec_sql(s->db, sql)) != SQLITE_OK || (rc = exec_sql(s->db, "COMMIT")) != SQLITE_OK)
        goto db_fail;
    pthread_mutex_unlock(&s->mu);
    return VT_OK;

db_fail:
    e = fail_db(s, rc, "deleting a run");
fail:
    sqlite3_finalize(st);
    rollback(s->db);
    pthread_mutex_unlock(&s->mu);
    return e;
}
