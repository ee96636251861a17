/* flow_test.h — what the flow layer's tests share: runtimes (threaded and
 * deterministic), naps, scratch directories for stores, and a memstream
 * for DOT. Include after vt_test.h.
 *
 * Bodies and stage functions never use VT_CHECK (they run on workers):
 * they record what they saw, and the test checks it afterwards. */
#ifndef VITTE_FLOW_TEST_H
#define VITTE_FLOW_TEST_H

#include <dirent.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vitte/flow.h"

#define FT_UNUSED __attribute__((unused))

static FT_UNUSED vt_runtime *rt_new(unsigned workers)
{
    vt_runtime_opts o;
    vt_runtime_opts_init(&o);
    o.pool.workers = workers;
    vt_runtime *rt = NULL;
    return vt_runtime_new(&rt, &o) == VT_OK ? rt : NULL;
}

/* One worker driven by the waiting thread, on a virtual clock. */
static FT_UNUSED vt_runtime *rt_det(uint64_t seed)
{
    vt_runtime_opts o;
    vt_runtime_opts_init(&o);
    o.pool.deterministic = 1;
    o.pool.seed = seed;
    vt_runtime *rt = NULL;
    return vt_runtime_new(&rt, &o) == VT_OK ? rt : NULL;
}

/* A plain thread's nap, for polling loops. */
static FT_UNUSED void nap(void)
{
    struct timespec ts = {0, 200000};
    nanosleep(&ts, NULL);
}

/* Burns about n loop iterations without a system call. */
static FT_UNUSED void spin(unsigned n)
{
    for (volatile unsigned i = 0; i < n; i++) {
    }
}

/* splitmix64: a stream of its own for each test thread, from a seed
 * (vt_test_rand()), so that a failing run replays with VT_TEST_SEED. */
static FT_UNUSED uint64_t ft_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ---- Scratch directories ------------------------------------------------------------ */

typedef struct scratch {
    char dir[128];
} scratch;

/* 0, or -1 when no directory could be made. */
static FT_UNUSED int scratch_make(scratch *s)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(s->dir, sizeof s->dir, "%s/vitte-flow-XXXXXX",
             tmp && *tmp && strlen(tmp) < 64 ? tmp : "/tmp");
    return mkdtemp(s->dir) ? 0 : -1;
}

static FT_UNUSED void scratch_path(const scratch *s, const char *name, char *out, size_t size)
{
    snprintf(out, size, "%s/%s", s->dir, name);
}

/* Removes the directory and the files in it (no subdirectories). */
static FT_UNUSED void scratch_remove(scratch *s)
{
    DIR *d = opendir(s->dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char p[512];
            snprintf(p, sizeof p, "%s/%s", s->dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(s->dir);
}

/* ---- DOT into a string ------------------------------------------------------------------ */

typedef struct mem {
    char *buf;
    size_t len;
    FILE *f;
} mem;

static FT_UNUSED FILE *mem_open(mem *m)
{
    m->buf = NULL;
    m->len = 0;
    return m->f = open_memstream(&m->buf, &m->len);
}

/* Closes the stream; m->buf holds what was written (free it with free). */
static FT_UNUSED void mem_close(mem *m)
{
    if (m->f)
        fclose(m->f);
    m->f = NULL;
}

#endif
