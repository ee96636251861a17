/* SIGSEGV/SIGBUS on an alternate stack, so that a fiber that ran off its
 * stack into its guard page is reported by name instead of dying silently
 * (the faulting stack itself has no room left to run a handler on). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../platform.h"

static _Atomic(vt__fault_fn) fault_handler;
static struct sigaction previous_segv, previous_bus;
static _Atomic int installed;

void vt__write_stderr(const char *s, size_t n)
{
    while (n) {
        ssize_t w = write(STDERR_FILENO, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

static void on_fault(int sig, siginfo_t *info, void *uctx)
{
    (void)uctx;
    vt__fault_fn fn = atomic_load_explicit(&fault_handler, memory_order_acquire);
    int reported = fn && fn(info->si_addr);
    /* Reported or not, the previous disposition decides what happens next:
     * returning re-runs the faulting access, which faults again under it. */
    struct sigaction *prev = sig == SIGBUS ? &previous_bus : &previous_segv;
    if (reported || !(prev->sa_flags & SA_SIGINFO) || !prev->sa_sigaction) {
        sigaction(sig, prev, NULL);
        return;
    }
    prev->sa_sigaction(sig, info, uctx);
}

vt_err vt__fault_install(vt__fault_fn handler)
{
    atomic_store_explicit(&fault_handler, handler, memory_order_release);
    int expected = 0;
    if (!atomic_compare_exchange_strong(&installed, &expected, 1))
        return VT_OK;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &previous_segv) != 0 || sigaction(SIGBUS, &sa, &previous_bus) != 0) {
        atomic_store(&installed, 0);
        return vt_err_from_errno(errno);
    }
    return VT_OK;
}

void vt__fault_thread_init(void)
{
    static _Thread_local int done;
    if (done)
        return;
    done = 1;
    stack_t cur;
    if (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE))
        return; /* the thread has one already (a sanitizer's, or the application's) */
    /* Never freed: the thread may take a signal until its last instruction,
     * and one small block per worker thread is not worth a destructor race. */
    size_t size = 64 << 10;
    void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        vt_log(VT_LOG_WARN, "base", "no alternate signal stack for this thread: %s", strerror(errno));
        return;
    }
    stack_t ss = {.ss_sp = mem, .ss_size = size, .ss_flags = 0};
    if (sigaltstack(&ss, NULL) != 0)
        munmap(mem, size);
}
