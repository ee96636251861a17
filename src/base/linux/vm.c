/* Address-space reservations for the fork–join frame deques (and fiber
 * stacks later): MAP_NORESERVE so that a deque sized for the worst case
 * costs only the pages a run touches. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* MAP_ANONYMOUS, MAP_NORESERVE */
#endif
#include <sys/mman.h>

#include "../platform.h"

void *vt__vm_reserve(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void vt__vm_release(void *p, size_t size)
{
    if (p)
        munmap(p, size);
}
