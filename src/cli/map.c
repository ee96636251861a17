#include "cli/map.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <vitte/base.h>

struct cli_map_slot {
    char *key; /* NULL: empty */
    uint64_t hash;
    void *value;
};

static uint64_t hash_key(const char *key)
{
    return vt_hash64(key, strlen(key), 0x9e3779b97f4a7c15u);
}

static struct cli_map_slot *find(const cli_map *m, const char *key, uint64_t h)
{
    size_t mask = m->cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        struct cli_map_slot *s = &m->slots[i];
        if (!s->key || (s->hash == h && strcmp(s->key, key) == 0))
            return s;
    }
}

void *cli_map_get(const cli_map *m, const char *key)
{
    if (!m->cap)
        return NULL;
    struct cli_map_slot *s = find(m, key, hash_key(key));
    return s->key ? s->value : NULL;
}

static int grow(cli_map *m)
{
    size_t cap = m->cap ? m->cap * 2 : 64;
    struct cli_map_slot *old = m->slots, *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return ENOMEM;
    size_t old_cap = m->cap;
    m->slots = slots;
    m->cap = cap;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].key)
            *find(m, old[i].key, old[i].hash) = old[i];
    free(old);
    return 0;
}

int cli_map_put(cli_map *m, const char *key, void *value)
{
    /* At most 3/4 full, so that probes stay short. */
    if ((m->len + 1) * 4 > m->cap * 3 && grow(m))
        return ENOMEM;
    uint64_t h = hash_key(key);
    struct cli_map_slot *s = find(m, key, h);
    if (!s->key) {
        char *copy = strdup(key);
        if (!copy)
            return ENOMEM;
        s->key = copy;
        s->hash = h;
        m->len++;
    }
    s->value = value;
    return 0;
}

void cli_map_free(cli_map *m, void (*fn)(void *value))
{
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slots[i].key)
            continue;
        if (fn)
            fn(m->slots[i].value);
        free(m->slots[i].key);
    }
    free(m->slots);
    memset(m, 0, sizeof *m);
}
