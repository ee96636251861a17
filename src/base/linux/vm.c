/* Address space: reservations committed as touched (fork–join frame
 * deques, fiber stacks), guard pages that make an overflow fault, and
 * decommitting pages a cache keeps. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* MAP_ANONYMOUS, MAP_NORESERVE */
#endif
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

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

void *vt__vm_reserve_huge(void)
{
    /* Twice the size, then the unaligned ends are given back. */
    size_t size = VT__HUGE_BLOCK;
    char *raw = mmap(NULL, 2 * size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    char *p = (char *)(((uintptr_t)raw + size - 1) & ~(uintptr_t)(size - 1));
    if (p > raw)
        munmap(raw, (size_t)(p - raw));
    if (p + size < raw + 2 * size)
        munmap(p + size, (size_t)(raw + 2 * size - (p + size)));
#ifdef MADV_HUGEPAGE
    madvise(p, size, MADV_HUGEPAGE); /* a hint: refused, the block still works */
#endif
    return p;
}

size_t vt__page_size(void)
{
    static _Atomic size_t cached;
    size_t s = atomic_load_explicit(&cached, memory_order_relaxed);
    if (!s) {
        long v = sysconf(_SC_PAGESIZE);
        s = v > 0 ? (size_t)v : 4096;
        atomic_store_explicit(&cached, s, memory_order_relaxed);
    }
    return s;
}

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

/* -1 unknown, 0 the kernel lacks guard markers, 1 it has them. */
static _Atomic int markers_supported = -1;
/* mprotect guards placed, against the mapping limit: each may split a
 * mapping in three, and running out of mappings makes every later mmap of
 * the process fail, far from the cause. */
static _Atomic long mprotect_guards;

static long mprotect_budget(void)
{
    static _Atomic long budget = -1;
    long b = atomic_load_explicit(&budget, memory_order_relaxed);
    if (b >= 0)
        return b;
    long limit = 65530;
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    if (f) {
        if (fscanf(f, "%ld", &limit) != 1)
            limit = 65530;
        fclose(f);
    }
    /* Keep a quarter of the limit, and at least 4096 mappings, for everything else. */
    long keep = limit / 4 > 4096 ? limit / 4 : 4096;
    b = limit > keep ? (limit - keep) / 2 : 0;
    atomic_store_explicit(&budget, b, memory_order_relaxed);
    return b;
}

int vt__vm_guard(void *p, size_t size)
{
    if (atomic_load_explicit(&markers_supported, memory_order_relaxed) != 0) {
        if (madvise(p, size, MADV_GUARD_INSTALL) == 0) {
            atomic_store_explicit(&markers_supported, 1, memory_order_relaxed);
            return VT__GUARD_MARKER;
        }
        if (errno == EINVAL)
            atomic_store_explicit(&markers_supported, 0, memory_order_relaxed);
    }
    if (atomic_fetch_add_explicit(&mprotect_guards, 1, memory_order_relaxed) >= mprotect_budget()) {
        atomic_fetch_sub_explicit(&mprotect_guards, 1, memory_order_relaxed);
        return VT__GUARD_NONE;
    }
    if (mprotect(p, size, PROT_NONE) != 0) {
        atomic_fetch_sub_explicit(&mprotect_guards, 1, memory_order_relaxed);
        return VT__GUARD_NONE;
    }
    return VT__GUARD_MPROTECT;
}

void vt__vm_decommit(void *p, size_t size)
{
    /* MADV_DONTNEED keeps guard markers (they are page-table entries the
     * kernel preserves) and zero-fills on the next touch. */
    madvise(p, size, MADV_DONTNEED);
}
