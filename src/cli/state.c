#include "cli/state.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <sqlite3.h>

#include "cli/map.h"

#define STATE_VERSION 1

/* What a file was when it was hashed. */
typedef struct file_rec {
    int64_t mtime_ns, ctime_ns, size, ino;
    int64_t seen_ns; /* wall clock when hashed */
    uint8_t hash[CLI_HASH_LEN];
    int dirty; /* on the dirty list: not in the database yet */
    char path[];
} file_rec;

struct cli_state {
    pthread_mutex_t lock;
    sqlite3 *db;
    cli_map files; /* path -> file_rec */
    cli_map tasks; /* name -> cli_task_rec */
    file_rec **dirty;
    size_t ndirty, dirty_cap;
};

/* A file changed within this long before it was hashed may change again
 * with the same timestamps (the kernel stamps files at a coarse clock): its
 * hash is not trusted from the cache, it is read again. */
#define RACY_NS 20000000

static int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static vt_err fail(sqlite3 *db, char *msg, size_t n, const char *what)
{
    int code = db ? sqlite3_errcode(db) : SQLITE_ERROR;
    snprintf(msg, n, "%s: %s", what, db ? sqlite3_errmsg(db) : "cannot open");
    if (code == SQLITE_BUSY || code == SQLITE_LOCKED)
        return VT_EBUSY;
    if (code == SQLITE_NOMEM)
        return VT_ENOMEM;
    if (code == SQLITE_NOTADB || code == SQLITE_CORRUPT)
        return VT_EFORMAT;
    return VT_EIO;
}

static void free_task(void *v)
{
    cli_task_rec *t = v;
    free(t->io);
    free(t);
}

static int load(cli_state *st)
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(st->db, "SELECT path, mtime_ns, ctime_ns, size, ino, seen_ns, hash FROM files", -1, &q,
                           NULL) != SQLITE_OK)
        return -1;
    while (sqlite3_step(q) == SQLITE_ROW) {
        if (sqlite3_column_bytes(q, 6) != CLI_HASH_LEN)
            continue;
        const char *path = (const char *)sqlite3_column_text(q, 0);
        file_rec *f = path ? calloc(1, sizeof *f + strlen(path) + 1) : NULL;
        if (!f) {
            sqlite3_finalize(q);
            return -1;
        }
        f->mtime_ns = sqlite3_column_int64(q, 1);
        f->ctime_ns = sqlite3_column_int64(q, 2);
        f->size = sqlite3_column_int64(q, 3);
        f->ino = sqlite3_column_int64(q, 4);
        f->seen_ns = sqlite3_column_int64(q, 5);
        memcpy(f->hash, sqlite3_column_blob(q, 6), CLI_HASH_LEN);
        strcpy(f->path, path);
        if (cli_map_put(&st->files, path, f)) {
            free(f);
            sqlite3_finalize(q);
            return -1;
        }
    }
    if (sqlite3_finalize(q) != SQLITE_OK)
        return -1;
    if (sqlite3_prepare_v2(st->db, "SELECT name, cmd, io, run_id FROM tasks", -1, &q, NULL) != SQLITE_OK)
        return -1;
    while (sqlite3_step(q) == SQLITE_ROW) {
        if (sqlite3_column_bytes(q, 1) != CLI_HASH_LEN)
            continue;
        cli_task_rec *t = calloc(1, sizeof *t);
        size_t n = (size_t)sqlite3_column_bytes(q, 2);
        if (!t || (n && !(t->io = malloc(n)))) {
            free(t);
            sqlite3_finalize(q);
            return -1;
        }
        memcpy(t->cmd, sqlite3_column_blob(q, 1), CLI_HASH_LEN);
        if (n)
            memcpy(t->io, sqlite3_column_blob(q, 2), n);
        t->io_len = n;
        const char *run = (const char *)sqlite3_column_text(q, 3);
        snprintf(t->run_id, sizeof t->run_id, "%s", run ? run : "");
        if (cli_map_put(&st->tasks, (const char *)sqlite3_column_text(q, 0), t)) {
            free_task(t);
            sqlite3_finalize(q);
            return -1;
        }
    }
    return sqlite3_finalize(q) == SQLITE_OK ? 0 : -1;
}

vt_err cli_state_open(cli_state **out, const char *path, char *msg, size_t msg_len)
{
    cli_state *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(msg, msg_len, "%s: out of memory", path);
        return VT_ENOMEM;
    }
    pthread_mutex_init(&st->lock, NULL);
    char what[512];
    snprintf(what, sizeof what, "%s", path);
    vt_err e = VT_OK;
    if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        e = fail(st->db, msg, msg_len, what);
        goto out;
    }
    sqlite3_busy_timeout(st->db, 5000);
    static const char schema[] =
        "PRAGMA journal_mode=WAL;"
        "PRAGMA synchronous=NORMAL;"
        "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;"
        "CREATE TABLE IF NOT EXISTS files(path TEXT PRIMARY KEY, mtime_ns INTEGER, ctime_ns INTEGER,"
        " size INTEGER, ino INTEGER, seen_ns INTEGER, hash BLOB) WITHOUT ROWID;"
        "CREATE TABLE IF NOT EXISTS tasks(name TEXT PRIMARY KEY, cmd BLOB, io BLOB, run_id TEXT) WITHOUT ROWID;"
        "INSERT OR IGNORE INTO meta VALUES('version', '1');";
    if (sqlite3_exec(st->db, schema, NULL, NULL, NULL) != SQLITE_OK) {
        e = fail(st->db, msg, msg_len, what);
        goto out;
    }
    char *version = cli_state_meta_get(st, "version");
    int ok = version && atoi(version) == STATE_VERSION;
    free(version);
    if (!ok) {
        snprintf(msg, msg_len, "%s: not a vitte state file of version %d (remove it to start afresh)", path,
                 STATE_VERSION);
        e = VT_EFORMAT;
        goto out;
    }
    if (load(st) != 0) {
        e = fail(st->db, msg, msg_len, what);
        goto out;
    }
    *out = st;
    return VT_OK;
out:
    cli_state_close(st);
    return e;
}

/* Writes the files learnt since the last save, inside the caller's
 * transaction (lock held). */
static int save_files(cli_state *st)
{
    if (!st->ndirty)
        return 0;
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(st->db, "INSERT OR REPLACE INTO files VALUES(?,?,?,?,?,?,?)", -1, &q, NULL) != SQLITE_OK)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < st->ndirty && !rc; i++) {
        file_rec *f = st->dirty[i];
        sqlite3_bind_text(q, 1, f->path, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 2, f->mtime_ns);
        sqlite3_bind_int64(q, 3, f->ctime_ns);
        sqlite3_bind_int64(q, 4, f->size);
        sqlite3_bind_int64(q, 5, f->ino);
        sqlite3_bind_int64(q, 6, f->seen_ns);
        sqlite3_bind_blob(q, 7, f->hash, CLI_HASH_LEN, SQLITE_STATIC);
        if (sqlite3_step(q) != SQLITE_DONE)
            rc = -1;
        sqlite3_reset(q);
    }
    sqlite3_finalize(q);
    if (!rc) {
        for (size_t i = 0; i < st->ndirty; i++)
            st->dirty[i]->dirty = 0;
        st->ndirty = 0;
    }
    return rc;
}

void cli_state_close(cli_state *st)
{
    if (!st)
        return;
    if (st->db) {
        /* What was learnt about files only saves hashing next time: an
         * error here loses nothing else. */
        if (sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK) {
            if (save_files(st) == 0)
                sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL);
            else
                sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
        }
        sqlite3_close(st->db);
    }
    cli_map_free(&st->files, free);
    cli_map_free(&st->tasks, free_task);
    free(st->dirty);
    pthread_mutex_destroy(&st->lock);
    free(st);
}

int cli_state_hash(cli_state *st, const char *path, uint8_t out[CLI_HASH_LEN])
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return errno;
    if (!S_ISREG(sb.st_mode))
        return S_ISDIR(sb.st_mode) ? EISDIR : EINVAL;
    int64_t mtime = (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
    int64_t ctime = (int64_t)sb.st_ctim.tv_sec * 1000000000 + sb.st_ctim.tv_nsec;
    pthread_mutex_lock(&st->lock);
    file_rec *f = cli_map_get(&st->files, path);
    if (f && f->mtime_ns == mtime && f->ctime_ns == ctime && f->size == (int64_t)sb.st_size &&
        f->ino == (int64_t)sb.st_ino && f->seen_ns - RACY_NS > mtime && f->seen_ns - RACY_NS > ctime) {
        memcpy(out, f->hash, CLI_HASH_LEN);
        pthread_mutex_unlock(&st->lock);
        return 0;
    }
    pthread_mutex_unlock(&st->lock);
    int64_t seen = wall_ns();
    int err = cli_hash_file(path, out);
    if (err)
        return err;
    pthread_mutex_lock(&st->lock);
    f = cli_map_get(&st->files, path);
    if (!f) {
        f = calloc(1, sizeof *f + strlen(path) + 1);
        if (!f || cli_map_put(&st->files, path, f)) {
            free(f);
            pthread_mutex_unlock(&st->lock);
            return 0; /* the hash is right; only the cache missed it */
        }
        strcpy(f->path, path);
    }
    f->mtime_ns = mtime;
    f->ctime_ns = ctime;
    f->size = (int64_t)sb.st_size;
    f->ino = (int64_t)sb.st_ino;
    f->seen_ns = seen;
    memcpy(f->hash, out, CLI_HASH_LEN);
    if (!f->dirty) {
        if (st->ndirty == st->dirty_cap) {
            size_t cap = st->dirty_cap ? 2 * st->dirty_cap : 256;
            file_rec **d = realloc(st->dirty, cap * sizeof *d);
            if (d) {
                st->dirty = d;
                st->dirty_cap = cap;
            }
        }
        if (st->ndirty < st->dirty_cap) {
            st->dirty[st->ndirty++] = f;
            f->dirty = 1;
        }
    }
    pthread_mutex_unlock(&st->lock);
    return 0;
}

int cli_state_task_get(cli_state *st, const char *name, cli_task_rec *out)
{
    pthread_mutex_lock(&st->lock);
    cli_task_rec *t = cli_map_get(&st->tasks, name);
    int found = 0;
    if (t) {
        *out = *t;
        out->io = t->io_len ? malloc(t->io_len) : NULL;
        if (t->io_len && !out->io) {
            out->io_len = 0; /* as if unknown: the task runs again */
        } else {
            if (t->io_len)
                memcpy(out->io, t->io, t->io_len);
            found = 1;
        }
    }
    pthread_mutex_unlock(&st->lock);
    return found;
}

vt_err cli_state_task_put(cli_state *st, const char *name, const cli_task_rec *rec, char *msg, size_t msg_len)
{
    cli_task_rec *t = calloc(1, sizeof *t);
    if (!t || (rec->io_len && !(t->io = malloc(rec->io_len)))) {
        free(t);
        snprintf(msg, msg_len, "out of memory");
        return VT_ENOMEM;
    }
    memcpy(t->cmd, rec->cmd, CLI_HASH_LEN);
    if (rec->io_len)
        memcpy(t->io, rec->io, rec->io_len);
    t->io_len = rec->io_len;
    snprintf(t->run_id, sizeof t->run_id, "%s", rec->run_id);
    pthread_mutex_lock(&st->lock);
    vt_err e = VT_OK;
    sqlite3_stmt *q = NULL;
    if (sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        e = fail(st->db, msg, msg_len, "state");
        goto out;
    }
    if (save_files(st) != 0 ||
        sqlite3_prepare_v2(st->db, "INSERT OR REPLACE INTO tasks VALUES(?,?,?,?)", -1, &q, NULL) != SQLITE_OK) {
        e = fail(st->db, msg, msg_len, "state");
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
        goto out;
    }
    sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_blob(q, 2, t->cmd, CLI_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_blob(q, 3, t->io ? (const void *)t->io : "", (int)t->io_len, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, t->run_id, -1, SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_DONE || sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        e = fail(st->db, msg, msg_len, "state");
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
        goto out;
    }
    cli_task_rec *old = cli_map_get(&st->tasks, name);
    if (cli_map_put(&st->tasks, name, t) == 0) {
        if (old)
            free_task(old);
        t = NULL;
    }
out:
    sqlite3_finalize(q);
    pthread_mutex_unlock(&st->lock);
    if (t)
        free_task(t);
    return e;
}

char *cli_state_meta_get(cli_state *st, const char *key)
{
    char *v = NULL;
    sqlite3_stmt *q;
    pthread_mutex_lock(&st->lock);
    if (sqlite3_prepare_v2(st->db, "SELECT value FROM meta WHERE key = ?", -1, &q, NULL) == SQLITE_OK) {
        sqlite3_bind_text(q, 1, key, -1, SQLITE_STATIC);
        if (sqlite3_step(q) == SQLITE_ROW && sqlite3_column_text(q, 0))
            v = strdup((const char *)sqlite3_column_text(q, 0));
        sqlite3_finalize(q);
    }
    pthread_mutex_unlock(&st->lock);
    return v;
}

vt_err cli_state_meta_set(cli_state *st, const char *key, const char *value)
{
    sqlite3_stmt *q;
    vt_err e = VT_OK;
    char msg[256];
    pthread_mutex_lock(&st->lock);
    const char *sql = value ? "INSERT OR REPLACE INTO meta VALUES(?, ?)" : "DELETE FROM meta WHERE key = ?";
    if (sqlite3_prepare_v2(st->db, sql, -1, &q, NULL) != SQLITE_OK) {
        e = fail(st->db, msg, sizeof msg, "state");
    } else {
        sqlite3_bind_text(q, 1, key, -1, SQLITE_STATIC);
        if (value)
            sqlite3_bind_text(q, 2, value, -1, SQLITE_STATIC);
        if (sqlite3_step(q) != SQLITE_DONE)
            e = fail(st->db, msg, sizeof msg, "state");
        sqlite3_finalize(q);
    }
    pthread_mutex_unlock(&st->lock);
    return e;
}

int cli_io_add(cli_io_buf *b, char kind, const uint8_t hash[CLI_HASH_LEN], const char *path)
{
    size_t plen = strlen(path);
    if (plen > 0xffff)
        return EINVAL;
    size_t need = 1 + CLI_HASH_LEN + 2 + plen;
    if (b->len + need > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->len + need)
            cap *= 2;
        uint8_t *d = realloc(b->data, cap);
        if (!d)
            return ENOMEM;
        b->data = d;
        b->cap = cap;
    }
    uint8_t *p = b->data + b->len;
    p[0] = (uint8_t)kind;
    memcpy(p + 1, hash, CLI_HASH_LEN);
    p[1 + CLI_HASH_LEN] = (uint8_t)(plen & 0xff);
    p[2 + CLI_HASH_LEN] = (uint8_t)(plen >> 8);
    memcpy(p + 3 + CLI_HASH_LEN, path, plen);
    b->len += need;
    return 0;
}

size_t cli_io_next(const uint8_t *io, size_t len, size_t off, char *kind, const uint8_t **hash,
                   const char **path, size_t *path_len)
{
    if (off + 3 + CLI_HASH_LEN > len)
        return 0;
    size_t plen = (size_t)io[off + 1 + CLI_HASH_LEN] | (size_t)io[off + 2 + CLI_HASH_LEN] << 8;
    if (off + 3 + CLI_HASH_LEN + plen > len)
        return 0;
    *kind = (char)io[off];
    *hash = io + off + 1;
    *path = (const char *)io + off + 3 + CLI_HASH_LEN;
    *path_len = plen;
    return off + 3 + CLI_HASH_LEN + plen;
}
