/* SHA-256 content hashes (OpenSSL's libcrypto) for the command's
 * up-to-date checks. */
#ifndef VITTE_CLI_HASH_H
#define VITTE_CLI_HASH_H

#include <stddef.h>
#include <stdint.h>

#define CLI_HASH_LEN 32

typedef struct cli_hasher cli_hasher;

/* NULL when out of memory. */
cli_hasher *cli_hasher_new(void);
void cli_hasher_update(cli_hasher *h, const void *data, size_t len);
/* A string with its terminating NUL, so that ("ab","c") and ("a","bc") differ. */
void cli_hasher_str(cli_hasher *h, const char *s);
/* Writes the digest and frees h. */
void cli_hasher_end(cli_hasher *h, uint8_t out[CLI_HASH_LEN]);

/* The hash of a file's contents: 0, or an errno (ENOENT, EISDIR, EACCES ...). */
int cli_hash_file(const char *path, uint8_t out[CLI_HASH_LEN]);

/* 64 hex digits and a NUL. */
void cli_hash_hex(const uint8_t h[CLI_HASH_LEN], char out[2 * CLI_HASH_LEN + 1]);

#endif
