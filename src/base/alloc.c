/* alloc.c — the one allocation hook every vitte allocation goes through.
 *
 * Zero sizes: the hook's protocol reserves new_size == 0 for "free", so a
 * request for 0 bytes would read as a failure (NULL) or, through vt_realloc,
 * free a block the caller still thinks it owns. vitte therefore treats a
 * 0-byte block as a 1-byte one everywhere (vt_alloc, vt_calloc, vt_realloc,
 * vt_free): the hook never sees a block of size 0, and the sizes it sees for
 * one block always agree. */
#include <stdlib.h>
#include <string.h>

#include "platform.h"

static void *default_alloc(void *ud, void *ptr, size_t old_size, size_t new_size)
{
    (void)ud;
    (void)old_size;
    if (new_size == 0) {
        free(ptr);
        return NULL;
    }
    return realloc(ptr, new_size);
}

/* Plain globals, not atomics: vt_set_allocator may only be called while no
 * other vitte call runs, so every call is a plain load of a pointer. */
static vt_alloc_fn alloc_fn = default_alloc;
static void *alloc_ud;

static size_t nonzero(size_t n)
{
    return n ? n : 1;
}

void vt_set_allocator(vt_alloc_fn fn, void *ud)
{
    alloc_fn = fn ? fn : default_alloc;
    alloc_ud = fn ? ud : NULL;
}

void *vt_alloc(size_t size)
{
    return alloc_fn(alloc_ud, NULL, 0, nonzero(size));
}

void *vt_calloc(size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size)
        return NULL;
    size_t total = nonzero(n * size);
    /* calloc can hand out fresh zero pages without touching them. */
    if (alloc_fn == default_alloc)
        return calloc(1, total);
    void *p = alloc_fn(alloc_ud, NULL, 0, total);
    if (p)
        memset(p, 0, total);
    return p;
}

void *vt_realloc(void *ptr, size_t old_size, size_t new_size)
{
    return alloc_fn(alloc_ud, ptr, ptr ? nonzero(old_size) : 0, nonzero(new_size));
}

void vt_free(void *ptr, size_t size)
{
    if (ptr)
        alloc_fn(alloc_ud, ptr, nonzero(size), 0);
}

char *vt_strdup(const char *s)
{
    if (!s)
        return NULL;
    size_t len = strlen(s) + 1;
    char *p = vt_alloc(len);
    if (p)
        memcpy(p, s, len);
    return p;
}
