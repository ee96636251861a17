/* A map from strings to pointers (open addressing, linear probing): the
 * command's tables of files and tasks, tens of thousands of entries. */
#ifndef VITTE_CLI_MAP_H
#define VITTE_CLI_MAP_H

#include <stddef.h>

typedef struct cli_map {
    struct cli_map_slot *slots;
    size_t cap, len; /* cap is 0 or a power of two */
} cli_map;

/* The value under key, or NULL. */
void *cli_map_get(const cli_map *m, const char *key);
/* Sets key (copied) to value (replacing any). 0, or ENOMEM. */
int cli_map_put(cli_map *m, const char *key, void *value);
/* Calls fn on every value, then frees the map (not the values). */
void cli_map_free(cli_map *m, void (*fn)(void *value));

#endif
