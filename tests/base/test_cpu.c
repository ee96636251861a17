/* test_cpu.c — vt_cpu_count, vt__cpu_relax. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <sched.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/platform.h"
#include "vt_test.h"

extern char **environ;

static int affinity_count(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return -1;
    return CPU_COUNT(&set);
}

VT_TEST(count_is_the_affinity_mask)
{
    unsigned n = vt_cpu_count();
    VT_CHECK_GE(n, 1);
    int want = affinity_count();
    VT_CHECK_GT(want, 0);
    VT_CHECK_EQ(n, (unsigned)want);
    VT_CHECK_LE(n, (unsigned)sysconf(_SC_NPROCESSORS_CONF));
}

VT_TEST(count_is_cached)
{
    unsigned n = vt_cpu_count();
    cpu_set_t old, one;
    VT_CHECK_EQ(sched_getaffinity(0, sizeof old, &old), 0);
    int first = 0;
    while (!CPU_ISSET(first, &old))
        first++;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    VT_CHECK_EQ(sched_setaffinity(0, sizeof one, &one), 0);
    unsigned later = vt_cpu_count();
    sched_setaffinity(0, sizeof old, &old);
    VT_CHECK_EQ(later, n);
}

/* A process whose mask holds one CPU when it first asks counts one: the
 * test runs itself again with VT_CPU_PROBE set, and this constructor narrows
 * the mask, asks, and exits with the answer before the harness starts. */
__attribute__((constructor)) static void probe(void)
{
    if (!getenv("VT_CPU_PROBE"))
        return;
    cpu_set_t set, one;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        _exit(100);
    int last = CPU_SETSIZE - 1;
    while (last > 0 && !CPU_ISSET(last, &set))
        last--;
    CPU_ZERO(&one);
    CPU_SET(last, &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0)
        _exit(101);
    unsigned n = vt_cpu_count();
    _exit(n > 50 ? 50 : (int)n);
}

VT_TEST(count_follows_a_narrowed_mask)
{
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    VT_CHECK_GT(len, 0);
    self[len] = '\0';
    VT_CHECK_EQ(setenv("VT_CPU_PROBE", "1", 1), 0);
    char *argv[] = {self, NULL};
    pid_t pid;
    int r = posix_spawn(&pid, self, NULL, NULL, argv, environ);
    unsetenv("VT_CPU_PROBE");
    VT_CHECK_EQ(r, 0);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    VT_CHECK(WIFEXITED(st));
    VT_CHECK_EQ(WEXITSTATUS(st), 1);
}

/* vt__cpu_relax in both halves of a spin handshake: each side sees the
 * other's store (a hang here is reported by the harness's watchdog). */
static _Atomic int relax_flag;

static void *relax_peer(void *arg)
{
    (void)arg;
    while (atomic_load(&relax_flag) != 1)
        vt__cpu_relax();
    atomic_store(&relax_flag, 2);
    return NULL;
}

VT_TEST(cpu_relax_in_a_spin)
{
    vt__thread t;
    atomic_store(&relax_flag, 0);
    VT_CHECK_OK(vt__thread_create(&t, relax_peer, NULL, 0, NULL));
    atomic_store(&relax_flag, 1);
    while (atomic_load(&relax_flag) != 2)
        vt__cpu_relax();
    VT_CHECK_OK(vt__thread_join(t, NULL));
    VT_CHECK_EQ(atomic_load(&relax_flag), 2);
}
