#include "cli/hash.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

/* A cli_hasher is libcrypto's digest context under another name. */
cli_hasher *cli_hasher_new(void)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md)
        return NULL;
    if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(md);
        return NULL;
    }
    /* The context is the hasher: one allocation, not two. */
    return (cli_hasher *)md;
}

void cli_hasher_update(cli_hasher *h, const void *data, size_t len)
{
    EVP_DigestUpdate((EVP_MD_CTX *)h, data, len);
}

void cli_hasher_str(cli_hasher *h, const char *s)
{
    cli_hasher_update(h, s ? s : "", s ? strlen(s) + 1 : 1);
}

void cli_hasher_end(cli_hasher *h, uint8_t out[CLI_HASH_LEN])
{
    unsigned n = CLI_HASH_LEN;
    EVP_DigestFinal_ex((EVP_MD_CTX *)h, out, &n);
    EVP_MD_CTX_free((EVP_MD_CTX *)h);
}

int cli_hash_file(const char *path, uint8_t out[CLI_HASH_LEN])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    cli_hasher *h = cli_hasher_new();
    if (!h) {
        close(fd);
        return ENOMEM;
    }
    static _Thread_local unsigned char buf[64 << 10];
    int err = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            err = errno;
            break;
        }
        if (n == 0)
            break;
        cli_hasher_update(h, buf, (size_t)n);
    }
    close(fd);
    cli_hasher_end(h, out);
    return err;
}

void cli_hash_hex(const uint8_t h[CLI_HASH_LEN], char out[2 * CLI_HASH_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < CLI_HASH_LEN; i++) {
        out[2 * i] = digits[h[i] >> 4];
        out[2 * i + 1] = digits[h[i] & 15];
    }
    out[2 * CLI_HASH_LEN] = 0;
}
