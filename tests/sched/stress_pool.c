/* stress_pool.c — the pool under load: millions of jobs counted exactly for
 * every policy at 1, 2 and 8 workers, job trees, outside threads and
 * workers submitting at once, wait_idle while submissions continue,
 * shutdown with work queued (drain and cancel), and pools created and freed
 * in a loop without leaks.
 *
 * VT_TEST_STRESS=N multiplies the work. Sanitizer builds divide it (TSan
 * runs this code an order of magnitude slower), and so do the 8-worker runs,
 * which oversubscribe a small machine. */
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vt_test.h"
#include "vitte/sched.h"

#if defined(VT_SANITIZE_THREAD)
#define SCALE_DIV 20
#elif defined(VT_SANITIZE_ADDRESS)
#define SCALE_DIV 4
#else
#define SCALE_DIV 1
#endif

static long scaled(long n)
{
    long v = n * (long)vt_test_stress() / SCALE_DIV;
    return v < 1 ? 1 : v;
}

static const char *policy_name[] = {"lifo", "fifo", "priority", "fair"};

static vt_pool *new_pool(unsigned workers, vt_policy policy, vt_cancel_fn on_cancel, void *ud)
{
    vt_pool_opts o;
    vt_pool_opts_init(&o);
    o.workers = workers;
    o.policy = policy;
    o.on_cancel = on_cancel;
    o.on_cancel_ud = ud;
    vt_pool *p = NULL;
    return vt_pool_new(&p, &o) == VT_OK ? p : NULL;
}

/* Submits with the options each policy uses: PRIORITY levels 0..3, FAIR
 * explicit groups or (one in three) the submitter's, and for LIFO/FIFO both
 * entry points. */
static vt_err submit_any(vt_pool *p, vt_policy policy, vt_job_fn fn, long i)
{
    vt_job_opts o = {0};
    switch (policy) {
    case VT_POLICY_PRIORITY:
        o.priority = (int)(i % 4);
        return i % 5 == 0 ? vt_pool_submit(p, fn, (void *)i) : vt_pool_submit_ex(p, fn, (void *)i, &o);
    case VT_POLICY_FAIR:
        o.group = (uint32_t)(1 + i % 7);
        return i % 3 == 0 ? vt_pool_submit(p, fn, (void *)i) : vt_pool_submit_ex(p, fn, (void *)i, &o);
    default:
        return i & 1 ? vt_pool_submit(p, fn, (void *)i) : vt_pool_submit_ex(p, fn, (void *)i, NULL);
    }
}

/* ---- Exact counts over job trees ---------------------------------------------
 * Jobs 0 .. roots-1 are submitted from outside; job i submits its children
 * i*fan+1 .. i*fan+fan that are roots or more and below n, so every job is
 * submitted exactly once, most of them by other jobs. Each job bumps its own
 * slot: a job lost or run twice shows as a slot other than 1. */
static struct {
    vt_pool *p;
    vt_policy policy;
    long n, roots;
    int fan;
    _Atomic unsigned char *slot;
    _Atomic long errors;
} TR;

static void tree_job(void *arg)
{
    long i = (long)arg;
    atomic_fetch_add_explicit(&TR.slot[i], 1, memory_order_relaxed);
    for (int k = 1; k <= TR.fan; k++) {
        long c = i * TR.fan + k;
        if (c >= TR.n)
            break;
        if (c >= TR.roots && submit_any(TR.p, TR.policy, tree_job, c) != VT_OK)
            atomic_fetch_add(&TR.errors, 1);
    }
}

/* Returns the number of slots not equal to 1 (and checks the metrics). */
static long tree_run(vt_policy policy, unsigned workers, long n, long roots, int fan)
{
    memset(&TR, 0, sizeof(TR));
    TR.policy = policy;
    TR.n = n;
    TR.roots = roots;
    TR.fan = fan;
    TR.slot = calloc((size_t)n, 1);
    TR.p = new_pool(workers, policy, NULL, NULL);
    if (!TR.p || !TR.slot)
        return -1;
    for (long i = 0; i < roots; i++)
        if (submit_any(TR.p, policy, tree_job, i) != VT_OK)
            atomic_fetch_add(&TR.errors, 1);
    long bad = 0;
    if (vt_pool_wait_idle(TR.p, VT_FOREVER) != VT_OK)
        bad++;
    for (long i = 0; i < n; i++)
        bad += TR.slot[i] != 1;
    vt_pool_metrics m;
    vt_pool_metrics_get(TR.p, &m, NULL, 0);
    if (m.total.executed != (uint64_t)n || m.injected != (uint64_t)roots) {
        printf("  %s, %u workers: executed %llu of %ld, injected %llu of %ld\n", policy_name[policy], workers,
               (unsigned long long)m.total.executed, n, (unsigned long long)m.injected, roots);
        bad++;
    }
    bad += atomic_load(&TR.errors);
    vt_pool_free(TR.p);
    free((void *)TR.slot);
    return bad;
}

static void exact_counts(vt_policy policy)
{
    static const unsigned workers[] = {1, 2, 8};
    for (int w = 0; w < 3; w++) {
        long n = scaled(workers[w] == 8 ? 200000 : 1000000);
        for (int shape = 0; shape < 2; shape++) {
            /* Narrow deep trees from one root; bushy ones from many. */
            long roots = shape ? n / 64 + 1 : 1;
            int fan = shape ? 8 : 2;
            long bad = tree_run(policy, workers[w], n, roots, fan);
            if (bad)
                printf("  %s, %u workers, %ld jobs from %ld roots: %ld wrong\n", policy_name[policy],
                       workers[w], n, roots, bad);
            VT_CHECK_EQ(bad, 0);
        }
    }
}

VT_TEST(exact_counts_lifo)
{
    exact_counts(VT_POLICY_LIFO);
}

VT_TEST(exact_counts_fifo)
{
    exact_counts(VT_POLICY_FIFO);
}

VT_TEST(exact_counts_priority)
{
    exact_counts(VT_POLICY_PRIORITY);
}

VT_TEST(exact_counts_fair)
{
    exact_counts(VT_POLICY_FAIR);
}

/* ---- Outside threads and workers submitting at once ---------------------------- */

#define SUBMITTERS 4
static struct {
    vt_pool *p;
    vt_policy policy;
    long per; /* roots per outside thread; each root has 3 children */
    _Atomic unsigned char *slot;
    _Atomic long errors;
} CC;

static void cc_leaf(void *arg)
{
    atomic_fetch_add_explicit(&CC.slot[(long)arg], 1, memory_order_relaxed);
}

static void cc_root(void *arg)
{
    long i = (long)arg;
    atomic_fetch_add_explicit(&CC.slot[i], 1, memory_order_relaxed);
    long total_roots = CC.per * SUBMITTERS;
    for (long k = 0; k < 3; k++)
        if (submit_any(CC.p, CC.policy, cc_leaf, total_roots + i * 3 + k) != VT_OK)
            atomic_fetch_add(&CC.errors, 1);
}

static void *cc_submitter(void *arg)
{
    long who = (long)arg;
    for (long j = 0; j < CC.per; j++)
        if (submit_any(CC.p, CC.policy, cc_root, who * CC.per + j) != VT_OK)
            atomic_fetch_add(&CC.errors, 1);
    return NULL;
}

VT_TEST(outside_threads_and_workers_submit_at_once)
{
    static const unsigned workers[] = {2, 8};
    for (int policy = VT_POLICY_LIFO; policy <= VT_POLICY_FAIR; policy++) {
        for (int w = 0; w < 2; w++) {
            memset(&CC, 0, sizeof(CC));
            CC.policy = (vt_policy)policy;
            CC.per = scaled(workers[w] == 8 ? 10000 : 40000);
            long total = CC.per * SUBMITTERS * 4;
            CC.slot = calloc((size_t)total, 1);
            CC.p = new_pool(workers[w], (vt_policy)policy, NULL, NULL);
            VT_CHECK_NOT_NULL(CC.p);
            pthread_t th[SUBMITTERS];
            for (long i = 0; i < SUBMITTERS; i++)
                VT_CHECK_EQ(pthread_create(&th[i], NULL, cc_submitter, (void *)i), 0);
            for (int i = 0; i < SUBMITTERS; i++)
                pthread_join(th[i], NULL);
            VT_CHECK_OK(vt_pool_wait_idle(CC.p, VT_FOREVER));
            VT_CHECK_EQ(CC.errors, 0);
            long bad = 0;
            for (long i = 0; i < total; i++)
                bad += CC.slot[i] != 1;
            if (bad)
                printf("  %s, %u workers: %ld of %ld jobs ran other than once\n", policy_name[policy],
                       workers[w], bad, total);
            VT_CHECK_EQ(bad, 0);
            vt_pool_metrics m;
            VT_CHECK_OK(vt_pool_metrics_get(CC.p, &m, NULL, 0));
            VT_CHECK_EQ(m.injected, (uint64_t)(CC.per * SUBMITTERS));
            VT_CHECK_EQ(m.total.executed, (uint64_t)total);
            vt_pool_free(CC.p);
            free((void *)CC.slot);
        }
    }
}

/* ---- wait_idle while submissions continue ----------------------------------------
 * A thread submits roots 0, 1, 2, ... (each submits one child from its
 * worker) and publishes how many it queued. A waiter reads that number s,
 * calls vt_pool_wait_idle, and on return roots 0 .. s-1 and their children
 * must all have run: the quiet moment came after the call began. */
static struct {
    vt_pool *p;
    vt_policy policy;
    long n;
    _Atomic long queued;
    _Atomic unsigned char *root_done, *child_done;
    _Atomic long errors, violations, waits;
} WI;

static void wi_child(void *arg)
{
    atomic_store_explicit(&WI.child_done[(long)arg], 1, memory_order_relaxed);
}

static void wi_root(void *arg)
{
    long i = (long)arg;
    if (submit_any(WI.p, WI.policy, wi_child, i) != VT_OK)
        atomic_fetch_add(&WI.errors, 1);
    atomic_store_explicit(&WI.root_done[i], 1, memory_order_relaxed);
}

static void *wi_submitter(void *arg)
{
    (void)arg;
    for (long i = 0; i < WI.n; i++) {
        if (submit_any(WI.p, WI.policy, wi_root, i) != VT_OK)
            atomic_fetch_add(&WI.errors, 1);
        atomic_store_explicit(&WI.queued, i + 1, memory_order_release);
        if (i % 256 == 255)
            sched_yield(); /* let the pool run dry now and then */
    }
    return NULL;
}

static void *wi_waiter(void *arg)
{
    (void)arg;
    long checked = 0;
    for (;;) {
        long s = atomic_load_explicit(&WI.queued, memory_order_acquire);
        if (vt_pool_wait_idle(WI.p, VT_FOREVER) != VT_OK)
            atomic_fetch_add(&WI.errors, 1);
        atomic_fetch_add(&WI.waits, 1);
        for (long i = checked; i < s; i++)
            if (!atomic_load_explicit(&WI.root_done[i], memory_order_relaxed) ||
                !atomic_load_explicit(&WI.child_done[i], memory_order_relaxed))
                atomic_fetch_add(&WI.violations, 1);
        checked = s;
        if (s == WI.n)
            return NULL;
    }
}

VT_TEST(wait_idle_repeatedly_while_submissions_continue)
{
    for (int policy = VT_POLICY_LIFO; policy <= VT_POLICY_FAIR; policy++) {
        memset(&WI, 0, sizeof(WI));
        WI.policy = (vt_policy)policy;
        WI.n = scaled(25000);
        WI.root_done = calloc((size_t)WI.n, 1);
        WI.child_done = calloc((size_t)WI.n, 1);
        WI.p = new_pool(2, (vt_policy)policy, NULL, NULL);
        VT_CHECK_NOT_NULL(WI.p);
        pthread_t sub, waiters[2];
        VT_CHECK_EQ(pthread_create(&sub, NULL, wi_submitter, NULL), 0);
        for (int i = 0; i < 2; i++)
            VT_CHECK_EQ(pthread_create(&waiters[i], NULL, wi_waiter, NULL), 0);
        wi_waiter(NULL);
        pthread_join(sub, NULL);
        for (int i = 0; i < 2; i++)
            pthread_join(waiters[i], NULL);
        VT_CHECK_EQ(WI.errors, 0);
        VT_CHECK_EQ(WI.violations, 0);
        VT_CHECK_GE(WI.waits, 3);
        vt_pool_free(WI.p);
        free((void *)WI.root_done);
        free((void *)WI.child_done);
    }
}

/* ---- Shutdown with work queued ---------------------------------------------------- */

static struct {
    vt_pool *p;
    vt_policy policy;
    _Atomic long ran, submitted, errors, cancelled, after;
    _Atomic int closed;
    int depth;
} SD;

static void sd_job(void *arg)
{
    long d = (long)arg;
    if (atomic_load(&SD.closed))
        atomic_fetch_add(&SD.after, 1);
    atomic_fetch_add_explicit(&SD.ran, 1, memory_order_relaxed);
    if (d < SD.depth) {
        for (int k = 0; k < 2; k++) {
            vt_err e = submit_any(SD.p, SD.policy, sd_job, d + 1);
            if (e == VT_OK)
                atomic_fetch_add(&SD.submitted, 1);
            else if (e != VT_ECLOSED)
                atomic_fetch_add(&SD.errors, 1);
        }
    }
}

static void sd_on_cancel(void *ud, vt_job_fn fn, void *arg)
{
    (void)ud;
    (void)arg;
    if (fn != sd_job)
        atomic_fetch_add(&SD.errors, 1);
    atomic_fetch_add(&SD.cancelled, 1);
}

static void shutdown_with_work(vt_shutdown_mode mode)
{
    static const unsigned workers[] = {1, 2, 8};
    for (int policy = VT_POLICY_LIFO; policy <= VT_POLICY_FAIR; policy++) {
        for (int w = 0; w < 3; w++) {
            memset(&SD, 0, sizeof(SD));
            SD.policy = (vt_policy)policy;
            SD.depth = 3;
            SD.p = new_pool(workers[w], (vt_policy)policy, sd_on_cancel, NULL);
            VT_CHECK_NOT_NULL(SD.p);
            long roots = scaled(workers[w] == 8 ? 10000 : 40000);
            for (long i = 0; i < roots; i++) {
                VT_CHECK_OK(submit_any(SD.p, SD.policy, sd_job, 0));
                atomic_fetch_add(&SD.submitted, 1);
            }
            VT_CHECK_OK(vt_pool_shutdown(SD.p, mode, VT_FOREVER));
            atomic_store(&SD.closed, 1);
            VT_CHECK_ERR(vt_pool_submit(SD.p, sd_job, (void *)100L), VT_ECLOSED);
            vt_pool_metrics m;
            VT_CHECK_OK(vt_pool_metrics_get(SD.p, &m, NULL, 0));
            vt_pool_free(SD.p);
            long ran = atomic_load(&SD.ran), sub = atomic_load(&SD.submitted);
            long canc = atomic_load(&SD.cancelled);
            VT_CHECK_EQ(SD.errors, 0);
            VT_CHECK_EQ(SD.after, 0);
            VT_CHECK_EQ(m.cancelled, (uint64_t)canc);
            if (mode == VT_SHUTDOWN_DRAIN) {
                /* Everything ran, with all that the running jobs queued. */
                VT_CHECK_EQ(canc, 0);
                VT_CHECK_EQ(ran, roots * 15);
                VT_CHECK_EQ(sub, roots * 15);
            } else {
                VT_CHECK_EQ(ran + canc, sub);
            }
        }
    }
}

VT_TEST(shutdown_drain_with_work_queued_runs_everything)
{
    shutdown_with_work(VT_SHUTDOWN_DRAIN);
}

VT_TEST(shutdown_cancel_with_work_queued_accounts_for_every_job)
{
    shutdown_with_work(VT_SHUTDOWN_CANCEL);
}

/* Exactly which jobs VT_SHUTDOWN_CANCEL discards: a gate holds the only
 * worker while jobs queue (on its own deque, and from outside); shutdown
 * begins (seen from outside as VT_ECLOSED); then the gate returns. None of
 * the queued jobs had started when shutdown began, so none may run. */
static struct {
    vt_pool *p;
    _Atomic int entered, queued, open;
    _Atomic long ran, cancelled, submitted, errors;
    vt_err shutdown;
} GC;

static void gc_job(void *arg)
{
    (void)arg;
    atomic_fetch_add(&GC.ran, 1);
}

static void gc_on_cancel(void *ud, vt_job_fn fn, void *arg)
{
    (void)ud;
    (void)arg;
    if (fn != gc_job)
        atomic_fetch_add(&GC.errors, 1);
    atomic_fetch_add(&GC.cancelled, 1);
}

static void gc_gate(void *arg)
{
    (void)arg;
    atomic_store(&GC.entered, 1);
    for (int i = 0; i < 1000; i++) {
        if (vt_pool_submit(GC.p, gc_job, NULL) == VT_OK)
            atomic_fetch_add(&GC.submitted, 1);
        else
            atomic_fetch_add(&GC.errors, 1);
    }
    atomic_store(&GC.queued, 1);
    while (!atomic_load(&GC.open))
        sched_yield();
}

static void *gc_shutter(void *arg)
{
    (void)arg;
    GC.shutdown = vt_pool_shutdown(GC.p, VT_SHUTDOWN_CANCEL, VT_FOREVER);
    return NULL;
}

VT_TEST(shutdown_cancel_discards_jobs_not_yet_started)
{
    for (int policy = VT_POLICY_LIFO; policy <= VT_POLICY_FAIR; policy++) {
        memset(&GC, 0, sizeof(GC));
        GC.p = new_pool(1, (vt_policy)policy, gc_on_cancel, NULL);
        VT_CHECK_NOT_NULL(GC.p);
        VT_CHECK_OK(vt_pool_submit(GC.p, gc_gate, NULL));
        while (!atomic_load(&GC.queued))
            sched_yield();
        for (int i = 0; i < 1000; i++) {
            VT_CHECK_OK(vt_pool_submit(GC.p, gc_job, NULL));
            atomic_fetch_add(&GC.submitted, 1);
        }
        pthread_t th;
        VT_CHECK_EQ(pthread_create(&th, NULL, gc_shutter, NULL), 0);
        for (;;) {
            vt_err e = vt_pool_submit(GC.p, gc_job, NULL);
            if (e == VT_ECLOSED)
                break;
            VT_CHECK_OK(e);
            atomic_fetch_add(&GC.submitted, 1);
            sched_yield();
        }
        atomic_store(&GC.open, 1);
        pthread_join(th, NULL);
        VT_CHECK_OK(GC.shutdown);
        vt_pool_free(GC.p);
        long ran = atomic_load(&GC.ran), cancelled = atomic_load(&GC.cancelled);
        long submitted = atomic_load(&GC.submitted), errors = atomic_load(&GC.errors);
        VT_CHECK_EQ(errors, 0);
        if (ran)
            printf("  %s: %ld of %ld jobs queued before shutdown ran anyway (%ld reported to on_cancel)\n",
                   policy_name[policy], ran, submitted, cancelled);
        VT_CHECK_EQ(ran, 0);
        VT_CHECK_EQ(cancelled, submitted);
    }
}

/* ---- Pools created and freed in a loop ------------------------------------------------ */

static _Atomic long churn_ran;

static void churn_job(void *arg)
{
    long k = (long)arg;
    atomic_fetch_add_explicit(&churn_ran, 1, memory_order_relaxed);
    if (k > 0) {
        vt_pool *p = vt_pool_current();
        vt_pool_submit(p, churn_job, (void *)(k - 1));
    }
}

VT_TEST(create_and_free_many_pools)
{
    long live = vt_test_alloc_live();
    long rounds = scaled(400);
    for (long r = 0; r < rounds; r++) {
        vt_pool_opts o;
        vt_pool_opts_init(&o);
        o.workers = 1 + (unsigned)(vt_test_rand() % 8);
        o.policy = (vt_policy)(vt_test_rand() % 4);
        o.deterministic = r % 7 == 0;
        if (o.deterministic)
            o.workers = 1;
        o.frames = 64 + (uint32_t)(vt_test_rand() % 1024);
        o.seed = (uint64_t)r;
        vt_pool *p = NULL;
        VT_CHECK_OK(vt_pool_new(&p, &o));
        atomic_store(&churn_ran, 0);
        long jobs = (long)(vt_test_rand() % 64), want = 0;
        for (long i = 0; i < jobs; i++) {
            long chain = i % 4;
            VT_CHECK_OK(vt_pool_submit(p, churn_job, (void *)chain));
            want += chain + 1;
        }
        switch (r % 4) {
        case 0: /* free straight away: it drains */
            break;
        case 1:
            VT_CHECK_OK(vt_pool_wait_idle(p, VT_FOREVER));
            VT_CHECK_EQ(churn_ran, want);
            break;
        case 2:
            VT_CHECK_OK(vt_pool_shutdown(p, VT_SHUTDOWN_DRAIN, VT_FOREVER));
            VT_CHECK_EQ(churn_ran, want);
            break;
        case 3:
            VT_CHECK_OK(vt_pool_shutdown(p, VT_SHUTDOWN_CANCEL, VT_FOREVER));
            VT_CHECK_LE(churn_ran, want);
            break;
        }
        vt_pool_free(p);
        if (r % 4 == 0)
            VT_CHECK_EQ(churn_ran, want);
    }
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

static _Atomic long timer_cancels;

static void count_cancel(void *ud, vt_job_fn fn, void *arg)
{
    (void)ud;
    (void)fn;
    (void)arg;
    atomic_fetch_add(&timer_cancels, 1);
}

VT_TEST(create_and_free_pools_with_pending_timers)
{
    long live = vt_test_alloc_live();
    long rounds = scaled(100);
    for (long r = 0; r < rounds; r++) {
        vt_pool *p = new_pool(1 + (unsigned)(r % 3), (vt_policy)(r % 4), count_cancel, NULL);
        VT_CHECK_NOT_NULL(p);
        atomic_store(&timer_cancels, 0);
        atomic_store(&churn_ran, 0);
        int far = (int)(vt_test_rand() % 200), near = (int)(vt_test_rand() % 50);
        for (int i = 0; i < far; i++)
            VT_CHECK_OK(vt_pool_submit_after(p, VT_SEC(3600), churn_job, (void *)0L, NULL));
        for (int i = 0; i < near; i++)
            VT_CHECK_OK(vt_pool_submit_after(p, (int64_t)(vt_test_rand() % (uint64_t)VT_MS(1)), churn_job,
                                             (void *)0L, NULL));
        vt_pool_free(p);
        /* Every timer either fired (and its job ran) or was reported. */
        VT_CHECK_EQ(churn_ran + timer_cancels, far + near);
        VT_CHECK_GE(timer_cancels, far);
    }
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}
