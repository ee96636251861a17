/* The command's build state, .vitte/state.db (SQLite): for each file the
 * content hash of what it held when last seen (with the stat fields that
 * tell whether it may have changed since), and for each task what its last
 * success ran on: a hash of its command and, per input and output, the
 * path and content hash. This is what "up to date" is checked against. A
 * task's success is committed (durably against a crash of the process)
 * before the command reports it. Thread: any (one lock inside). */
#ifndef VITTE_CLI_STATE_H
#define VITTE_CLI_STATE_H

#include <stddef.h>
#include <stdint.h>

#include <vitte/base.h>

#include "cli/hash.h"

typedef struct cli_state cli_state;

typedef struct cli_task_rec {
    uint8_t cmd[CLI_HASH_LEN]; /* command, environment, directory, output paths */
    uint8_t *io;               /* malloc'd: see cli_io_* below */
    size_t io_len;
    char run_id[64]; /* the run it succeeded in */
} cli_task_rec;

/* Opens (creating it and its directory's last component) the state at path.
 * Errors: VT_EFORMAT (not a state file), VT_EBUSY (locked), VT_EIO,
 * VT_ENOMEM; msg gets a sentence with the path. */
vt_err cli_state_open(cli_state **out, const char *path, char *msg, size_t msg_len);
/* Saves what was learnt about files and closes. st may be NULL. */
void cli_state_close(cli_state *st);

/* The content hash of the file at path (absolute), from the cache when its
 * stat fields say it has not changed since it was hashed, else read. 0, or
 * an errno (ENOENT when missing). */
int cli_state_hash(cli_state *st, const char *path, uint8_t out[CLI_HASH_LEN]);

/* The last success of task name: 1 and *out filled (free out->io), 0 if
 * none. */
int cli_state_task_get(cli_state *st, const char *name, cli_task_rec *out);
/* Records a success, committed before it returns. Errors: VT_EIO (msg),
 * VT_ENOMEM, VT_EBUSY. */
vt_err cli_state_task_put(cli_state *st, const char *name, const cli_task_rec *rec, char *msg, size_t msg_len);

/* Small settings: the value of key (a copy, free it) or NULL. */
char *cli_state_meta_get(cli_state *st, const char *key);
/* value NULL deletes. Errors as cli_state_task_put. */
vt_err cli_state_meta_set(cli_state *st, const char *key, const char *value);

/* The io blob: entries of kind ('i' input, 'o' output), hash and path. */
typedef struct cli_io_buf {
    uint8_t *data;
    size_t len, cap;
} cli_io_buf;
int cli_io_add(cli_io_buf *b, char kind, const uint8_t hash[CLI_HASH_LEN], const char *path);
/* Walks a blob: returns the offset of the next entry, or 0 at the end or
 * on a damaged entry. *path points into the blob (not NUL-terminated). */
size_t cli_io_next(const uint8_t *io, size_t len, size_t off, char *kind, const uint8_t **hash,
                   const char **path, size_t *path_len);

#endif
