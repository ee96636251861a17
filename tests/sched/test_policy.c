/* test_policy.c — the order of execution each vt_policy promises
 * (vitte/sched.h), checked against a model of the documented rule.
 *
 * Order is made observable on a one-worker pool: a gate job holds the only
 * worker while a batch is queued (by the gate itself, or by outside threads
 * while the gate spins), so the whole batch waits before the first pick.
 * Each job then records its id and submits its children, which the models
 * replay. With more workers only counts are checked: nothing more is
 * promised. */
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vt_test.h"
#include "vitte/sched.h"

/* Fails the helper it is in with a message; the caller wraps the helper in
 * VT_CHECK, which then names it. */
#define REQUIRE(c, ...)                                                       \
    do {                                                                      \
        if (!(c)) {                                                           \
            printf("  %s:%d: ", __FILE__, __LINE__);                          \
            printf(__VA_ARGS__);                                              \
            printf("\n");                                                     \
            return 0;                                                         \
        }                                                                     \
    } while (0)

static unsigned rnd(unsigned n)
{
    return (unsigned)(vt_test_rand() % n);
}

static void spin_until(_Atomic int *flag)
{
    while (!atomic_load_explicit(flag, memory_order_acquire))
        sched_yield();
}

static vt_pool *new_pool(unsigned workers, vt_policy policy, unsigned levels, unsigned limit)
{
    vt_pool_opts o;
    vt_pool_opts_init(&o);
    o.workers = workers;
    o.policy = policy;
    o.priority_levels = levels;
    o.starvation_limit = limit;
    vt_pool *p = NULL;
    return vt_pool_new(&p, &o) == VT_OK ? p : NULL;
}

/* ---- Scenarios: a forest of jobs, queued behind a gate ------------------ */

typedef struct job {
    int level;      /* PRIORITY level */
    uint32_t group; /* FAIR: explicit group (with plain = 0) */
    int plain;      /* submitted with vt_pool_submit, without options */
    int parent;     /* -1 for a root */
    int submitter;  /* roots queued from outside: 0 the test thread, k > 0 thread k */
    int nchild, child0;
} job;

enum { GATE_INSIDE, GATE_OUTSIDE };

static struct scen {
    vt_pool *p;
    job *jobs;
    int njobs, cap;
    int *kids;
    int *roots;
    int nroots;
    int gate_mode;
    vt_job_opts gate_opts; /* the gate's own options (FAIR: its group) */
    int *trace;
    int *where;
    _Atomic int n;
    _Atomic int errors;
    _Atomic int entered, open;
} S;

static void scen_begin(vt_pool *p, int cap, int gate_mode)
{
    free(S.jobs);
    free(S.kids);
    free(S.roots);
    free(S.trace);
    free(S.where);
    memset(&S, 0, sizeof(S));
    S.p = p;
    S.cap = cap;
    S.gate_mode = gate_mode;
    S.jobs = calloc((size_t)cap, sizeof(*S.jobs));
    S.kids = calloc((size_t)cap, sizeof(*S.kids));
    S.roots = calloc((size_t)cap, sizeof(*S.roots));
    S.trace = calloc((size_t)cap, sizeof(*S.trace));
    S.where = calloc((size_t)cap, sizeof(*S.where));
}

static void scen_end(void)
{
    vt_pool_free(S.p);
    free(S.jobs);
    free(S.kids);
    free(S.roots);
    free(S.trace);
    free(S.where);
    memset(&S, 0, sizeof(S));
}

/* A job; parent -1 makes it a root, queued in the order of these calls. */
static int scen_add(int parent, int level, uint32_t group, int plain, int submitter)
{
    int id = S.njobs++;
    job *j = &S.jobs[id];
    j->level = level;
    j->group = group;
    j->plain = plain;
    j->parent = parent;
    j->submitter = submitter;
    if (parent < 0)
        S.roots[S.nroots++] = id;
    return id;
}

/* Children in increasing id order: each job submits them in that order. */
static void scen_link(void)
{
    for (int i = 0; i < S.njobs; i++)
        if (S.jobs[i].parent >= 0)
            S.jobs[S.jobs[i].parent].nchild++;
    int at = 0;
    for (int i = 0; i < S.njobs; i++) {
        S.jobs[i].child0 = at;
        at += S.jobs[i].nchild;
        S.jobs[i].nchild = 0;
    }
    for (int i = 0; i < S.njobs; i++) {
        job *par = S.jobs[i].parent >= 0 ? &S.jobs[S.jobs[i].parent] : NULL;
        if (par)
            S.kids[par->child0 + par->nchild++] = i;
    }
}

static void run_job(void *arg);

static void submit_job(int id)
{
    job *j = &S.jobs[id];
    vt_err e;
    if (j->plain) {
        e = vt_pool_submit(S.p, run_job, (void *)(intptr_t)id);
    } else {
        vt_job_opts o = {.priority = j->level, .group = j->group};
        e = vt_pool_submit_ex(S.p, run_job, (void *)(intptr_t)id, &o);
    }
    if (e != VT_OK)
        atomic_fetch_add(&S.errors, 1);
}

static void run_job(void *arg)
{
    int id = (int)(intptr_t)arg;
    int pos = atomic_fetch_add(&S.n, 1);
    if (pos < S.cap) {
        S.trace[pos] = id;
        S.where[pos] = vt_worker_index();
    }
    job *j = &S.jobs[id];
    for (int k = 0; k < j->nchild; k++)
        submit_job(S.kids[j->child0 + k]);
}

static void gate_inside(void *arg)
{
    (void)arg;
    for (int i = 0; i < S.nroots; i++)
        submit_job(S.roots[i]);
}

static void gate_outside(void *arg)
{
    (void)arg;
    atomic_store_explicit(&S.entered, 1, memory_order_release);
    spin_until(&S.open);
}

static void *submitter_main(void *arg)
{
    int who = (int)(intptr_t)arg;
    for (int i = 0; i < S.nroots; i++)
        if (S.jobs[S.roots[i]].submitter == who)
            submit_job(S.roots[i]);
    return NULL;
}

/* Queues the roots behind the gate, opens it and waits until every job ran
 * exactly once. Outside roots are queued submitter by submitter, in the
 * order in which submitters first appear among the roots. */
static int scen_run(void)
{
    scen_link();
    vt_err e;
    if (S.gate_mode == GATE_INSIDE) {
        e = vt_pool_submit_ex(S.p, gate_inside, NULL, &S.gate_opts);
        REQUIRE(e == VT_OK, "gate: %s", vt_errname(e));
    } else {
        e = vt_pool_submit_ex(S.p, gate_outside, NULL, &S.gate_opts);
        REQUIRE(e == VT_OK, "gate: %s", vt_errname(e));
        spin_until(&S.entered);
        int done[64] = {0};
        for (int i = 0; i < S.nroots; i++) {
            int who = S.jobs[S.roots[i]].submitter;
            if (done[who])
                continue;
            done[who] = 1;
            if (who == 0) {
                submitter_main((void *)(intptr_t)0);
            } else {
                pthread_t t;
                REQUIRE(pthread_create(&t, NULL, submitter_main, (void *)(intptr_t)who) == 0,
                        "pthread_create");
                pthread_join(t, NULL);
            }
        }
        atomic_store_explicit(&S.open, 1, memory_order_release);
    }
    e = vt_pool_wait_idle(S.p, VT_FOREVER);
    REQUIRE(e == VT_OK, "wait_idle: %s", vt_errname(e));
    REQUIRE(atomic_load(&S.errors) == 0, "%d submissions failed", atomic_load(&S.errors));
    int n = atomic_load(&S.n);
    REQUIRE(n == S.njobs, "%d jobs ran, %d were queued", n, S.njobs);
    char *seen = calloc((size_t)S.njobs, 1);
    for (int i = 0; i < n; i++) {
        if (seen[S.trace[i]]) {
            free(seen);
            REQUIRE(0, "job %d ran twice", S.trace[i]);
        }
        seen[S.trace[i]] = 1;
    }
    free(seen);
    return 1;
}

/* Compares the trace with an expected order; prints the neighbourhood of
 * the first difference. */
static int same_order(const int *want, const char *what)
{
    for (int i = 0; i < S.njobs; i++) {
        if (S.trace[i] != want[i]) {
            printf("  %s: first difference at position %d of %d\n    expected:", what, i, S.njobs);
            for (int k = i < 3 ? 0 : i - 3; k < S.njobs && k < i + 8; k++)
                printf(" %d", want[k]);
            printf("\n    actual:  ");
            for (int k = i < 3 ? 0 : i - 3; k < S.njobs && k < i + 8; k++)
                printf(" %d", S.trace[k]);
            printf("\n");
            return 0;
        }
    }
    return 1;
}

/* "each worker runs its own newest job first": one worker is a stack. */
static int check_lifo_model(void)
{
    int *stack = malloc((size_t)S.njobs * sizeof(int)), *want = malloc((size_t)S.njobs * sizeof(int));
    int sp = 0, out = 0;
    for (int i = 0; i < S.nroots; i++)
        stack[sp++] = S.roots[i];
    while (sp) {
        int id = stack[--sp];
        want[out++] = id;
        for (int k = 0; k < S.jobs[id].nchild; k++)
            stack[sp++] = S.kids[S.jobs[id].child0 + k];
    }
    int ok = out == S.njobs && same_order(want, "LIFO");
    free(stack);
    free(want);
    return ok;
}

/* "With one worker, jobs start in submission order": one worker is a queue. */
static int check_fifo_model(void)
{
    int *q = malloc((size_t)S.njobs * sizeof(int));
    int head = 0, tail = 0;
    for (int i = 0; i < S.nroots; i++)
        q[tail++] = S.roots[i];
    while (head < tail) {
        int id = q[head++];
        for (int k = 0; k < S.jobs[id].nchild; k++)
            q[tail++] = S.kids[S.jobs[id].child0 + k];
    }
    int ok = tail == S.njobs && same_order(q, "FIFO");
    free(q);
    return ok;
}

/* A random forest: n jobs, each a root with probability 1/roots_every,
 * else the child of an earlier job. */
static void random_forest(int n, int roots_every, int levels, int groups, int submitters)
{
    for (int i = 0; i < n; i++) {
        int parent = (i == 0 || rnd((unsigned)roots_every) == 0) ? -1 : (int)rnd((unsigned)i);
        int level = levels ? (int)rnd((unsigned)levels) : 0;
        uint32_t group = groups ? 1 + rnd((unsigned)groups) : 0;
        scen_add(parent, level, group, 0, parent < 0 && submitters ? (int)rnd((unsigned)submitters) : 0);
    }
}

/* ---- LIFO ------------------------------------------------------------------ */

VT_TEST(lifo_own_jobs_newest_first)
{
    vt_pool *p = new_pool(1, VT_POLICY_LIFO, 0, 0);
    VT_CHECK_NOT_NULL(p);
    scen_begin(p, 1000, GATE_INSIDE);
    for (int i = 0; i < 1000; i++)
        scen_add(-1, 0, 0, 1, 0);
    VT_CHECK(scen_run());
    for (int i = 0; i < 1000; i++)
        VT_CHECK_EQ(S.trace[i], 999 - i);
    scen_end();
}

VT_TEST(lifo_job_tree_one_worker_is_a_stack)
{
    for (int round = 0; round < 4; round++) {
        vt_pool *p = new_pool(1, VT_POLICY_LIFO, 0, 0);
        VT_CHECK_NOT_NULL(p);
        scen_begin(p, 3000, GATE_INSIDE);
        random_forest(3000, round == 0 ? 1000000 : 20, 0, 0, 0);
        for (int i = 0; i < S.njobs; i++)
            S.jobs[i].plain = round & 1; /* vt_pool_submit, or vt_pool_submit_ex */
        VT_CHECK(scen_run());
        VT_CHECK(check_lifo_model());
        scen_end();
    }
}

/* ---- Another worker: LIFO thieves take the oldest, FIFO is one queue ---- */

#define THIEF_N 2000
static struct {
    _Atomic int done, n;
    int trace[THIEF_N], where[THIEF_N];
    int gate_worker;
    int wait_all; /* the gate waits for every job, else for the first */
    vt_pool *p;
    _Atomic int errors;
} TH;

static void thief_job(void *arg)
{
    /* Some work, so that neither worker can run them all before the other
     * gets a CPU on a loaded machine. */
    for (volatile int spin = 0; spin < 3000; spin++)
        ;
    int pos = atomic_fetch_add(&TH.n, 1);
    TH.trace[pos] = (int)(intptr_t)arg;
    TH.where[pos] = vt_worker_index();
    atomic_fetch_add_explicit(&TH.done, 1, memory_order_release);
}

/* Queues THIEF_N jobs from its worker and keeps that worker busy until the
 * other worker has run one of them (with wait_all: all of them). */
static void thief_gate(void *arg)
{
    (void)arg;
    TH.gate_worker = vt_worker_index();
    for (int i = 0; i < THIEF_N; i++)
        if (vt_pool_submit(TH.p, thief_job, (void *)(intptr_t)i) != VT_OK)
            atomic_fetch_add(&TH.errors, 1);
    while (atomic_load_explicit(&TH.done, memory_order_acquire) < (TH.wait_all ? THIEF_N : 1))
        sched_yield();
}

static int thief_run(vt_policy policy, int wait_all)
{
    memset(&TH, 0, sizeof(TH));
    TH.wait_all = wait_all;
    TH.p = new_pool(2, policy, 0, 0);
    REQUIRE(TH.p, "vt_pool_new");
    vt_err e = vt_pool_submit(TH.p, thief_gate, NULL);
    REQUIRE(e == VT_OK, "submit: %s", vt_errname(e));
    e = vt_pool_wait_idle(TH.p, VT_FOREVER);
    REQUIRE(e == VT_OK, "wait_idle: %s", vt_errname(e));
    vt_pool_free(TH.p);
    REQUIRE(atomic_load(&TH.errors) == 0, "submissions failed");
    REQUIRE(atomic_load(&TH.n) == THIEF_N, "%d jobs ran of %d", atomic_load(&TH.n), THIEF_N);
    return 1;
}

/* The gate's worker, once free, runs its own jobs newest first while the
 * other worker takes the oldest: the owner runs N-1, N-2, ... down to some k
 * (where its deque ran dry), the thief only jobs below k, whatever order it
 * runs its takings in. After k the owner may steal back from the thief:
 * jobs below k. */
VT_TEST(lifo_owner_runs_newest_thief_takes_oldest)
{
    int informative = 0;
    for (int round = 0; round < 10; round++) {
        VT_CHECK(thief_run(VT_POLICY_LIFO, 0));
        int k = THIEF_N, own = 1, owner_runs = 0;
        for (int i = 0; i < THIEF_N; i++) {
            if (TH.where[i] != TH.gate_worker)
                continue;
            owner_runs++;
            if (own && TH.trace[i] == k - 1) {
                k--;
            } else {
                own = 0;
                VT_CHECK_LT(TH.trace[i], k);
            }
        }
        for (int i = 0; i < THIEF_N; i++)
            if (TH.where[i] != TH.gate_worker)
                VT_CHECK_LT(TH.trace[i], k);
        /* Both workers ran some: the owner's deque was not emptied by the
         * thief before the owner was free, nor by the owner alone. */
        informative += k < THIEF_N && k > 0 && owner_runs < THIEF_N;
    }
    VT_CHECK_GT(informative, 0);
}

/* FIFO has one pool-wide queue: the worker that did not queue the jobs takes
 * them, in submission order. */
VT_TEST(fifo_other_worker_takes_in_submission_order)
{
    VT_CHECK(thief_run(VT_POLICY_FIFO, 1));
    for (int i = 0; i < THIEF_N; i++) {
        VT_CHECK_NE(TH.where[i], TH.gate_worker);
        VT_CHECK_EQ(TH.trace[i], i);
    }
}

/* ---- FIFO -------------------------------------------------------------------- */

VT_TEST(fifo_one_worker_from_job_in_submission_order)
{
    vt_pool *p = new_pool(1, VT_POLICY_FIFO, 0, 0);
    VT_CHECK_NOT_NULL(p);
    scen_begin(p, 1000, GATE_INSIDE);
    for (int i = 0; i < 1000; i++)
        scen_add(-1, 0, 0, 1, 0);
    VT_CHECK(scen_run());
    for (int i = 0; i < 1000; i++)
        VT_CHECK_EQ(S.trace[i], i);
    scen_end();
}

VT_TEST(fifo_job_tree_one_worker_is_a_queue)
{
    for (int round = 0; round < 4; round++) {
        vt_pool *p = new_pool(1, VT_POLICY_FIFO, 0, 0);
        VT_CHECK_NOT_NULL(p);
        scen_begin(p, 3000, GATE_INSIDE);
        random_forest(3000, round == 0 ? 1000000 : 20, 0, 0, 0);
        for (int i = 0; i < S.njobs; i++)
            S.jobs[i].plain = round & 1;
        VT_CHECK(scen_run());
        VT_CHECK(check_fifo_model());
        scen_end();
    }
}

/* Jobs queued from outside while the worker is held, then released. */
VT_TEST(fifo_one_worker_from_outside_in_submission_order)
{
    vt_pool *p = new_pool(1, VT_POLICY_FIFO, 0, 0);
    VT_CHECK_NOT_NULL(p);
    scen_begin(p, 1000, GATE_OUTSIDE);
    for (int i = 0; i < 1000; i++)
        scen_add(-1, 0, 0, 1, 0);
    VT_CHECK(scen_run());
    VT_CHECK(check_fifo_model());
    scen_end();
}

/* Jobs queued from outside while the worker runs them. */
static struct {
    _Atomic int n;
    int trace[5000];
} STREAM;

static void stream_job(void *arg)
{
    int pos = atomic_fetch_add(&STREAM.n, 1);
    STREAM.trace[pos] = (int)(intptr_t)arg;
}

VT_TEST(fifo_one_worker_streamed_from_outside_in_submission_order)
{
    memset(&STREAM, 0, sizeof(STREAM));
    vt_pool *p = new_pool(1, VT_POLICY_FIFO, 0, 0);
    VT_CHECK_NOT_NULL(p);
    for (int i = 0; i < 5000; i++) {
        VT_CHECK_OK(vt_pool_submit(p, stream_job, (void *)(intptr_t)i));
        if (i % 97 == 0)
            sched_yield(); /* let the worker catch up now and then */
    }
    VT_CHECK_OK(vt_pool_wait_idle(p, VT_FOREVER));
    VT_CHECK_EQ(STREAM.n, 5000);
    for (int i = 0; i < 5000; i++)
        VT_CHECK_EQ(STREAM.trace[i], i);
    vt_pool_free(p);
}

/* Submission order across sources: the worker's gate job and an outside
 * thread take turns, each submission returning before the next starts. */
#define MIX_N 200
static struct {
    vt_pool *p;
    _Atomic int turn;  /* outside submissions done */
    _Atomic int gturn; /* the gate's submissions done */
    _Atomic int n, errors;
    int trace[2 * MIX_N];
} MIX;

static void mix_job(void *arg)
{
    int pos = atomic_fetch_add(&MIX.n, 1);
    MIX.trace[pos] = (int)(intptr_t)arg;
}

static void mix_gate(void *arg)
{
    (void)arg;
    for (int k = 0; k < MIX_N; k++) {
        while (atomic_load_explicit(&MIX.turn, memory_order_acquire) <= k)
            sched_yield();
        /* Outside job 2k was queued before this one. */
        if (vt_pool_submit(MIX.p, mix_job, (void *)(intptr_t)(2 * k + 1)) != VT_OK)
            atomic_fetch_add(&MIX.errors, 1);
        atomic_store_explicit(&MIX.gturn, k + 1, memory_order_release);
    }
}

VT_TEST(fifo_one_worker_mixed_sources_in_submission_order)
{
    memset(&MIX, 0, sizeof(MIX));
    MIX.p = new_pool(1, VT_POLICY_FIFO, 0, 0);
    VT_CHECK_NOT_NULL(MIX.p);
    VT_CHECK_OK(vt_pool_submit(MIX.p, mix_gate, NULL));
    for (int k = 0; k < MIX_N; k++) {
        VT_CHECK_OK(vt_pool_submit(MIX.p, mix_job, (void *)(intptr_t)(2 * k)));
        atomic_store_explicit(&MIX.turn, k + 1, memory_order_release);
        /* The next one goes behind the gate's. */
        while (atomic_load_explicit(&MIX.gturn, memory_order_acquire) <= k)
            sched_yield();
    }
    VT_CHECK_OK(vt_pool_wait_idle(MIX.p, VT_FOREVER));
    VT_CHECK_EQ(MIX.errors, 0);
    VT_CHECK_EQ(MIX.n, 2 * MIX_N);
    for (int i = 0; i < 2 * MIX_N; i++)
        VT_CHECK_EQ(MIX.trace[i], i);
    vt_pool_free(MIX.p);
}

/* "with several [workers] no job starts before every job submitted earlier
 * has been taken": a job taken but not yet started is held by a worker, one
 * at most each, so when a job starts, at most workers-1 jobs submitted
 * before it have not started yet. Start order is counted at each job's
 * first instruction. */
static struct {
    vt_pool *p;
    int n;
    int *start;
    _Atomic int started;
    _Atomic int errors;
} FS;

static void fs_job(void *arg)
{
    FS.start[(intptr_t)arg] = atomic_fetch_add(&FS.started, 1);
}

static void fs_gate(void *arg)
{
    (void)arg;
    for (intptr_t i = 0; i < FS.n; i++)
        if (vt_pool_submit(FS.p, fs_job, (void *)i) != VT_OK)
            atomic_fetch_add(&FS.errors, 1);
}

/* The largest number of jobs submitted before some job that started after
 * it (a Fenwick tree over start positions). */
static int max_overtaken(const int *start, int n)
{
    int *bit = calloc((size_t)n + 1, sizeof(int)), worst = 0;
    for (int i = 0; i < n; i++) {
        int below = 0;
        for (int k = start[i]; k > 0; k -= k & -k)
            below += bit[k];
        if (i - below > worst)
            worst = i - below;
        for (int k = start[i] + 1; k <= n; k += k & -k)
            bit[k]++;
    }
    free(bit);
    return worst;
}

VT_TEST(fifo_several_workers_take_in_submission_order)
{
    static const unsigned workers[] = {2, 8};
    for (int w = 0; w < 2; w++) {
        for (int from_job = 0; from_job < 2; from_job++) {
            memset(&FS, 0, sizeof(FS));
            FS.n = 20000;
            FS.start = calloc((size_t)FS.n, sizeof(int));
            FS.p = new_pool(workers[w], VT_POLICY_FIFO, 0, 0);
            VT_CHECK_NOT_NULL(FS.p);
            if (from_job) {
                VT_CHECK_OK(vt_pool_submit(FS.p, fs_gate, NULL));
            } else {
                for (intptr_t i = 0; i < FS.n; i++)
                    VT_CHECK_OK(vt_pool_submit(FS.p, fs_job, (void *)i));
            }
            VT_CHECK_OK(vt_pool_wait_idle(FS.p, VT_FOREVER));
            VT_CHECK_EQ(FS.errors, 0);
            VT_CHECK_EQ(FS.started, FS.n);
            int worst = max_overtaken(FS.start, FS.n);
            if (worst > (int)workers[w] - 1)
                printf("  %u workers, queued from %s: a job started while %d jobs submitted before it "
                       "had not\n",
                       workers[w], from_job ? "a job" : "outside", worst);
            VT_CHECK_LE(worst, (int)workers[w] - 1);
            vt_pool_free(FS.p);
            free(FS.start);
        }
    }
}

/* ---- PRIORITY ---------------------------------------------------------------
 * The rule: take the oldest job of the highest non-empty level, unless some
 * non-empty level has been passed over starvation_limit (K) times or more
 * since it was last served; then take from the level passed over most often,
 * the higher on a tie. The model replays it pick by pick, with the children
 * each job queued while it ran. */

typedef struct prio_check {
    unsigned L, K;
    unsigned max_streak[VT_PRIORITY_MAX_LEVELS]; /* longest run of picks passing a non-empty level */
} prio_check;

static int check_priority_model(prio_check *pc)
{
    unsigned L = pc->L, K = pc->K;
    int *q[VT_PRIORITY_MAX_LEVELS];
    int head[VT_PRIORITY_MAX_LEVELS] = {0}, tail[VT_PRIORITY_MAX_LEVELS] = {0};
    unsigned age[VT_PRIORITY_MAX_LEVELS] = {0};
    int ok = 0;
    for (unsigned l = 0; l < L; l++)
        q[l] = malloc((size_t)S.njobs * sizeof(int));
    memset(pc->max_streak, 0, sizeof(pc->max_streak));
    for (int i = 0; i < S.nroots; i++) {
        int id = S.roots[i];
        q[S.jobs[id].level][tail[S.jobs[id].level]++] = id;
    }
    for (int t = 0; t < S.njobs; t++) {
        int id = S.trace[t], lv = S.jobs[id].level;
        int top = -1, aged = -1;
        for (int l = (int)L - 1; l >= 0; l--) {
            if (head[l] == tail[l])
                continue;
            if (top < 0)
                top = l;
            if (age[l] >= K && (aged < 0 || age[l] > age[aged]))
                aged = l;
        }
        int pick = aged >= 0 ? aged : top;
        if (lv != pick) {
            printf("  PRIORITY L=%u K=%u: pick %d ran job %d of level %d; the rule says level %d "
                   "(non-empty levels, passed over:",
                   L, K, t, id, lv, pick);
            for (int l = (int)L - 1; l >= 0; l--)
                if (head[l] != tail[l])
                    printf(" %d:%u", l, age[l]);
            printf(")\n");
            goto out;
        }
        if (q[lv][head[lv]] != id) {
            printf("  PRIORITY L=%u K=%u: pick %d ran job %d, the oldest of level %d is %d\n", L, K, t, id,
                   lv, q[lv][head[lv]]);
            goto out;
        }
        for (unsigned l = 0; l < L; l++) {
            if ((int)l == lv || head[l] == tail[l]) {
                age[l] = 0;
            } else if (++age[l] > pc->max_streak[l]) {
                pc->max_streak[l] = age[l];
            }
        }
        head[lv]++;
        for (int k = 0; k < S.jobs[id].nchild; k++) {
            int c = S.kids[S.jobs[id].child0 + k];
            q[S.jobs[c].level][tail[S.jobs[c].level]++] = c;
        }
    }
    ok = 1;
out:
    for (unsigned l = 0; l < L; l++)
        free(q[l]);
    return ok;
}

/* (levels, starvation_limit); 0 means the default (4 and 16). */
static const unsigned prio_cfg[][2] = {{0, 0}, {1, 1},  {2, 1},   {2, 3},  {3, 1},  {3, 2},
                                       {4, 1}, {4, 3},  {5, 4},   {8, 2},  {8, 7},  {8, 20},
                                       {16, 15}, {32, 1}, {32, 4}, {32, 31}, {32, 1000}};

static void priority_exact(int gate_mode, int dynamic)
{
    for (size_t c = 0; c < sizeof(prio_cfg) / sizeof(prio_cfg[0]); c++) {
        unsigned L = prio_cfg[c][0] ? prio_cfg[c][0] : 4;
        unsigned K = prio_cfg[c][1] ? prio_cfg[c][1] : 16;
        for (int round = 0; round < 3; round++) {
            vt_pool *p = new_pool(1, VT_POLICY_PRIORITY, prio_cfg[c][0], prio_cfg[c][1]);
            VT_CHECK_NOT_NULL(p);
            /* Enough jobs per level that the limit comes into play. */
            int n = (int)(L * (K + L) * 2);
            if (n > 4000)
                n = 4000;
            if (n < 50)
                n = 50;
            scen_begin(p, n, gate_mode);
            if (round == 0) {
                /* Every level full, lowest first. */
                for (int i = 0; i < n; i++)
                    scen_add(-1, (int)((unsigned)i * L / (unsigned)n), 0, 0, 0);
            } else {
                random_forest(n, dynamic ? 3 : 1000000, (int)L, 0, 0);
                if (!dynamic)
                    for (int i = 0; i < n; i++)
                        if (S.jobs[i].parent >= 0) {
                            S.jobs[i].parent = -1;
                            S.roots[S.nroots++] = i;
                        }
            }
            VT_CHECK(scen_run());
            prio_check pc = {.L = L, .K = K};
            VT_CHECK(check_priority_model(&pc));
            scen_end();
        }
    }
}

VT_TEST(priority_order_queued_from_job)
{
    priority_exact(GATE_INSIDE, 0);
}

VT_TEST(priority_order_queued_from_outside)
{
    priority_exact(GATE_OUTSIDE, 0);
}

VT_TEST(priority_order_with_jobs_submitting_jobs)
{
    priority_exact(GATE_INSIDE, 1);
}

/* "So no level waits for ever: a non-empty level is served within
 * starvation_limit + levels picks", for limits small and large. */
VT_TEST(priority_no_level_waits_for_ever)
{
    static const unsigned cfg[][2] = {{4, 16}, {4, 3}, {8, 7}, {2, 1}, {3, 1},
                                      {4, 1},  {8, 2}, {32, 4}, {32, 1}, {16, 40}};
    int bad = 0;
    for (size_t c = 0; c < sizeof(cfg) / sizeof(cfg[0]); c++) {
        unsigned L = cfg[c][0], K = cfg[c][1];
        for (int round = 0; round < 2; round++) {
            vt_pool *p = new_pool(1, VT_POLICY_PRIORITY, L, K);
            VT_CHECK_NOT_NULL(p);
            int per = (int)(3 * (K + L));
            scen_begin(p, per * (int)L, GATE_INSIDE);
            if (round == 0) {
                for (unsigned l = 0; l < L; l++)
                    for (int i = 0; i < per; i++)
                        scen_add(-1, (int)l, 0, 0, 0);
            } else {
                random_forest(per * (int)L, 3, (int)L, 0, 0);
            }
            VT_CHECK(scen_run());
            prio_check pc = {.L = L, .K = K};
            /* The order itself is checked elsewhere; here only the bound. */
            check_priority_model(&pc);
            unsigned worst = 0;
            for (unsigned l = 1; l < L; l++)
                if (pc.max_streak[l] > pc.max_streak[worst])
                    worst = l;
            if (pc.max_streak[worst] > K + L - 1) {
                printf("  levels %u, starvation_limit %u: level %u was passed over %u picks in a row "
                       "while queued (promised: served within %u picks)\n",
                       L, K, worst, pc.max_streak[worst], K + L);
                bad++;
            }
            scen_end();
        }
    }
    VT_CHECK_EQ(bad, 0);
}

static struct {
    _Atomic int n;
    char trace[16];
} DL;

static void dl_job(void *arg)
{
    int pos = atomic_fetch_add(&DL.n, 1);
    if (pos < 16)
        DL.trace[pos] = (char)(intptr_t)arg;
}

static vt_pool *DL_pool;
static _Atomic int DL_errors;

static void dl_gate(void *arg)
{
    (void)arg;
    vt_job_opts one = {.priority = 1}, zero = {.priority = 0};
    vt_err e = VT_OK;
    e |= vt_pool_submit(DL_pool, dl_job, (void *)(intptr_t)'A');
    e |= vt_pool_submit_ex(DL_pool, dl_job, (void *)(intptr_t)'B', &one);
    e |= vt_pool_submit_ex(DL_pool, dl_job, (void *)(intptr_t)'C', NULL);
    e |= vt_pool_submit_ex(DL_pool, dl_job, (void *)(intptr_t)'D', &zero);
    e |= vt_pool_submit_ex(DL_pool, dl_job, (void *)(intptr_t)'E', &one);
    if (e != VT_OK)
        atomic_fetch_add(&DL_errors, 1);
}

VT_TEST(priority_default_level_is_zero)
{
    memset(&DL, 0, sizeof(DL));
    atomic_store(&DL_errors, 0);
    DL_pool = new_pool(1, VT_POLICY_PRIORITY, 4, 1000000);
    VT_CHECK_NOT_NULL(DL_pool);
    VT_CHECK_OK(vt_pool_submit(DL_pool, dl_gate, NULL));
    VT_CHECK_OK(vt_pool_wait_idle(DL_pool, VT_FOREVER));
    VT_CHECK_EQ(DL_errors, 0);
    VT_CHECK_EQ(DL.n, 5);
    DL.trace[5] = 0;
    VT_CHECK_STR_EQ(DL.trace, "BEACD");
    vt_pool_free(DL_pool);
}

static void count_job(void *arg)
{
    atomic_fetch_add((_Atomic int *)arg, 1);
}

static struct {
    vt_pool *p;
    vt_err lo, hi, ok;
    _Atomic int *ran;
} RG;

static void range_from_job(void *arg)
{
    (void)arg;
    vt_job_opts o = {.priority = -1};
    RG.lo = vt_pool_submit_ex(RG.p, count_job, RG.ran, &o);
    o.priority = 8;
    RG.hi = vt_pool_submit_ex(RG.p, count_job, RG.ran, &o);
    o.priority = 7;
    RG.ok = vt_pool_submit_ex(RG.p, count_job, RG.ran, &o);
}

VT_TEST(priority_range_and_levels)
{
    static const struct {
        unsigned opt, levels;
    } cfg[] = {{0, 4}, {1, 1}, {2, 2}, {8, 8}, {VT_PRIORITY_MAX_LEVELS, VT_PRIORITY_MAX_LEVELS}};
    for (size_t c = 0; c < sizeof(cfg) / sizeof(cfg[0]); c++) {
        vt_pool *p = new_pool(1, VT_POLICY_PRIORITY, cfg[c].opt, 0);
        VT_CHECK_NOT_NULL(p);
        _Atomic int ran = 0;
        int want = 0;
        int bad_prio[] = {-1, (int)cfg[c].levels, (int)cfg[c].levels + 1, INT_MAX, INT_MIN};
        for (size_t i = 0; i < sizeof(bad_prio) / sizeof(bad_prio[0]); i++) {
            vt_job_opts o = {.priority = bad_prio[i]};
            VT_CHECK_ERR(vt_pool_submit_ex(p, count_job, &ran, &o), VT_ERANGE);
        }
        for (unsigned l = 0; l < cfg[c].levels; l++) {
            vt_job_opts o = {.priority = (int)l};
            VT_CHECK_OK(vt_pool_submit_ex(p, count_job, &ran, &o));
            want++;
        }
        VT_CHECK_OK(vt_pool_wait_idle(p, VT_FOREVER));
        /* A refused job took nothing: it never runs. */
        VT_CHECK_EQ(ran, want);
        vt_pool_free(p);
    }
    vt_pool *p = NULL;
    vt_pool_opts o;
    vt_pool_opts_init(&o);
    o.policy = VT_POLICY_PRIORITY;
    o.workers = 1;
    o.priority_levels = VT_PRIORITY_MAX_LEVELS + 1;
    VT_CHECK_ERR(vt_pool_new(&p, &o), VT_EINVAL);
    o.priority_levels = 0;
    o.starvation_limit = 1000001;
    VT_CHECK_ERR(vt_pool_new(&p, &o), VT_EINVAL);
    o.starvation_limit = 1000000;
    VT_CHECK_OK(vt_pool_new(&p, &o));
    vt_pool_free(p);

    /* The same checks from a worker. */
    _Atomic int ran = 0;
    memset(&RG, 0, sizeof(RG));
    RG.p = new_pool(1, VT_POLICY_PRIORITY, 8, 0);
    RG.ran = &ran;
    VT_CHECK_NOT_NULL(RG.p);
    VT_CHECK_OK(vt_pool_submit(RG.p, range_from_job, NULL));
    VT_CHECK_OK(vt_pool_wait_idle(RG.p, VT_FOREVER));
    VT_CHECK_ERR(RG.lo, VT_ERANGE);
    VT_CHECK_ERR(RG.hi, VT_ERANGE);
    VT_CHECK_OK(RG.ok);
    VT_CHECK_EQ(ran, 1);
    vt_pool_free(RG.p);
}

VT_TEST(priority_option_ignored_by_other_policies)
{
    vt_policy pol[] = {VT_POLICY_LIFO, VT_POLICY_FIFO, VT_POLICY_FAIR};
    for (size_t i = 0; i < 3; i++) {
        vt_pool *p = new_pool(2, pol[i], 0, 0);
        VT_CHECK_NOT_NULL(p);
        _Atomic int ran = 0;
        vt_job_opts o = {.priority = -7};
        VT_CHECK_OK(vt_pool_submit_ex(p, count_job, &ran, &o));
        o.priority = 1000;
        VT_CHECK_OK(vt_pool_submit_ex(p, count_job, &ran, &o));
        o.priority = INT_MAX;
        o.group = 99;
        VT_CHECK_OK(vt_pool_submit_ex(p, count_job, &ran, &o));
        VT_CHECK_OK(vt_pool_wait_idle(p, VT_FOREVER));
        VT_CHECK_EQ(ran, 3);
        vt_pool_free(p);
    }
}

/* ---- FAIR ------------------------------------------------------------------
 * The model: a job's group is its explicit group, else its parent job's,
 * else (a root) the gate's when the gate queued it, or its submitting
 * thread's. The rule checked at every pick: the job is the oldest of its
 * group, and while a group has a job waiting, no other group is served twice
 * ("round robin, one job per group per turn": a group that floods the pool
 * delays another group's job by at most one job per other active group). */

#define MAX_GROUPS 64
static int fair_key_index(uint64_t *keys, int *nkeys, uint64_t key)
{
    for (int i = 0; i < *nkeys; i++)
        if (keys[i] == key)
            return i;
    keys[*nkeys] = key;
    return (*nkeys)++;
}

/* gate_key: the group of the gate job (its explicit group, or a key standing
 * for the test thread). Outside roots: submitter k's thread is key 1<<40|k. */
static int check_fair_model(uint64_t gate_key)
{
    uint64_t keys[MAX_GROUPS];
    int nkeys = 0, ok = 0;
    int *gidx = malloc((size_t)S.njobs * sizeof(int));
    int *q[MAX_GROUPS];
    int head[MAX_GROUPS] = {0}, tail[MAX_GROUPS] = {0};
    static unsigned served[MAX_GROUPS][MAX_GROUPS]; /* served[g][h]: h's turns since g waits */
    memset(served, 0, sizeof(served));
    for (int g = 0; g < MAX_GROUPS; g++)
        q[g] = NULL;

#define FAIR_PUSH(id, key)                                                    \
    do {                                                                      \
        int g_ = fair_key_index(keys, &nkeys, (key));                         \
        if (!q[g_])                                                           \
            q[g_] = malloc((size_t)S.njobs * sizeof(int));                    \
        if (head[g_] == tail[g_])                                             \
            memset(served[g_], 0, sizeof(served[g_]));                        \
        gidx[(id)] = g_;                                                      \
        q[g_][tail[g_]++] = (id);                                             \
    } while (0)

    uint64_t *key_of = malloc((size_t)S.njobs * sizeof(uint64_t));
    for (int i = 0; i < S.nroots; i++) {
        int id = S.roots[i];
        job *j = &S.jobs[id];
        uint64_t key = !j->plain && j->group ? j->group
                       : S.gate_mode == GATE_INSIDE ? gate_key
                       : j->submitter ? ((uint64_t)1 << 40 | (uint64_t)j->submitter)
                                      : gate_key;
        key_of[id] = key;
        FAIR_PUSH(id, key);
    }
    for (int t = 0; t < S.njobs; t++) {
        int id = S.trace[t], g = gidx[id];
        if (q[g][head[g]] != id) {
            printf("  FAIR: pick %d ran job %d; the oldest of its group is job %d\n", t, id, q[g][head[g]]);
            goto out;
        }
        head[g]++;
        for (int a = 0; a < nkeys; a++) {
            if (a == g || head[a] == tail[a])
                continue;
            if (++served[a][g] > 1) {
                printf("  FAIR: pick %d served group %llu a second time while job %d of group %llu "
                       "waited\n",
                       t, (unsigned long long)keys[g], q[a][head[a]], (unsigned long long)keys[a]);
                goto out;
            }
        }
        memset(served[g], 0, sizeof(served[g]));
        for (int k = 0; k < S.jobs[id].nchild; k++) {
            int c = S.kids[S.jobs[id].child0 + k];
            job *j = &S.jobs[c];
            key_of[c] = !j->plain && j->group ? j->group : key_of[id];
            FAIR_PUSH(c, key_of[c]);
        }
    }
#undef FAIR_PUSH
    ok = 1;
out:
    for (int g = 0; g < MAX_GROUPS; g++)
        free(q[g]);
    free(gidx);
    free(key_of);
    return ok;
}

/* A key that no explicit group uses: the test thread's own group. */
#define TEST_THREAD_KEY ((uint64_t)1 << 40)

VT_TEST(fair_round_robin_between_explicit_groups)
{
    for (int round = 0; round < 6; round++) {
        vt_pool *p = new_pool(1, VT_POLICY_FAIR, 0, 0);
        VT_CHECK_NOT_NULL(p);
        int n = 600;
        scen_begin(p, n, round & 1 ? GATE_OUTSIDE : GATE_INSIDE);
        /* Groups of very different sizes, interleaved at random. */
        int groups = 2 + (int)rnd(10);
        for (int i = 0; i < n; i++) {
            unsigned g = rnd((unsigned)groups);
            g = rnd(2) ? g : g / 2; /* skew towards low groups */
            scen_add(-1, 0, 1 + g, 0, 0);
        }
        VT_CHECK(scen_run());
        VT_CHECK(check_fair_model(TEST_THREAD_KEY));
        scen_end();
    }
}

VT_TEST(fair_round_robin_with_jobs_submitting_jobs)
{
    for (int round = 0; round < 6; round++) {
        vt_pool *p = new_pool(1, VT_POLICY_FAIR, 0, 0);
        VT_CHECK_NOT_NULL(p);
        scen_begin(p, 1500, GATE_INSIDE);
        S.gate_opts.group = 77;
        random_forest(1500, 4, 0, 6, 0);
        /* A third of the jobs give no group: they inherit their parent's. */
        for (int i = 0; i < S.njobs; i++)
            if (rnd(3) == 0)
                S.jobs[i].plain = 1;
            else if (rnd(4) == 0)
                S.jobs[i].group = 0; /* vt_job_opts with group 0: also inherits */
        VT_CHECK(scen_run());
        VT_CHECK(check_fair_model(77));
        scen_end();
    }
}

/* The gate is in group 5. Group 5 gets, in this order, X (no options), Z
 * (group 5), W (group 0: the submitter's); group 6 gets Y. Each X submits a
 * child C without options. If the X, W and C inherit group 5, the pool
 * alternates between two groups, and group 5's jobs run in the order
 * X0 Z0 W0 X1 Z1 W1 ... C0 C1 ...; any other grouping shows up as a third
 * group. */
VT_TEST(fair_job_inherits_group_of_its_submitter)
{
    enum { K = 50 };
    vt_pool *p = new_pool(1, VT_POLICY_FAIR, 0, 0);
    VT_CHECK_NOT_NULL(p);
    scen_begin(p, 8 * K, GATE_INSIDE);
    S.gate_opts.group = 5;
    int x[K];
    for (int k = 0; k < K; k++) {
        x[k] = scen_add(-1, 0, 0, 1, 0);
        scen_add(-1, 0, 5, 0, 0);
        scen_add(-1, 0, 0, 0, 0);
    }
    for (int k = 0; k < 4 * K; k++)
        scen_add(-1, 0, 6, 0, 0);
    for (int k = 0; k < K; k++)
        scen_add(x[k], 0, 0, 1, 0);
    VT_CHECK(scen_run());
    /* Exact: strict alternation, group 5 in submission order. */
    int in5 = 0, in6 = 0;
    int first5 = S.jobs[S.trace[0]].group != 6;
    for (int t = 0; t < S.njobs; t++) {
        int id = S.trace[t];
        int is5 = S.jobs[id].group != 6;
        VT_CHECK_EQ(is5, (t % 2 == 0) == first5);
        if (is5) {
            int want = in5 < 3 * K ? in5 : 3 * K + 4 * K + (in5 - 3 * K);
            VT_CHECK_EQ(id, want);
            in5++;
        } else {
            VT_CHECK_EQ(id, 3 * K + in6);
            in6++;
        }
    }
    VT_CHECK(check_fair_model(5));
    scen_end();
}

/* Two outside threads queue a flood each, then a third queues one job: with
 * the groups by submitting thread, that job waits for at most one job of each
 * flooding group, and the floods alternate. */
VT_TEST(fair_default_group_is_the_submitting_thread)
{
    enum { N = 400 };
    vt_pool *p = new_pool(1, VT_POLICY_FAIR, 0, 0);
    VT_CHECK_NOT_NULL(p);
    scen_begin(p, 2 * N + 1, GATE_OUTSIDE);
    for (int i = 0; i < N; i++)
        scen_add(-1, 0, 0, 1, 1);
    for (int i = 0; i < N; i++)
        scen_add(-1, 0, 0, 1, 2);
    int j = scen_add(-1, 0, 0, 1, 0);
    VT_CHECK(scen_run());
    int pos = -1;
    for (int t = 0; t < S.njobs; t++)
        if (S.trace[t] == j)
            pos = t;
    VT_CHECK_GE(pos, 0);
    VT_CHECK_LE(pos, 2);
    VT_CHECK(check_fair_model(TEST_THREAD_KEY));
    scen_end();
}

/* The same promise while the floods run: after the lone job's submission
 * returned, at most one job per flooding group starts before it, plus the
 * one the worker may have taken already. */
static struct {
    vt_pool *p;
    _Atomic int started;
    _Atomic int queued[3];
    _Atomic int lone_at; /* start index of the lone job, -1 until it ran */
    _Atomic int errors;
} FL;

static void flood_job(void *arg)
{
    (void)arg;
    atomic_fetch_add(&FL.started, 1);
}

static void lone_job(void *arg)
{
    (void)arg;
    atomic_store(&FL.lone_at, atomic_fetch_add(&FL.started, 1));
}

#define FLOOD_CAP 1000000
static _Atomic int flood_stop;

static void *flooder(void *arg)
{
    int who = (int)(intptr_t)arg;
    for (int i = 0; i < FLOOD_CAP && !atomic_load(&flood_stop); i++) {
        if (vt_pool_submit(FL.p, flood_job, NULL) != VT_OK)
            atomic_fetch_add(&FL.errors, 1);
        atomic_fetch_add(&FL.queued[who], 1);
    }
    return NULL;
}

VT_TEST(fair_flood_delays_a_lone_job_boundedly)
{
    memset(&FL, 0, sizeof(FL));
    atomic_store(&flood_stop, 0);
    FL.p = new_pool(1, VT_POLICY_FAIR, 0, 0);
    VT_CHECK_NOT_NULL(FL.p);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        VT_CHECK_EQ(pthread_create(&t[i], NULL, flooder, (void *)(intptr_t)(i + 1)), 0);
    while (atomic_load(&FL.queued[1]) < 1000 || atomic_load(&FL.queued[2]) < 1000)
        sched_yield();
    int worst = 0;
    for (int k = 0; k < 20; k++) {
        int q1 = atomic_load(&FL.queued[1]);
        while (atomic_load(&FL.queued[1]) < q1 + 300 && atomic_load(&FL.queued[1]) < FLOOD_CAP)
            sched_yield();
        atomic_store(&FL.lone_at, -1);
        VT_CHECK_OK(vt_pool_submit(FL.p, lone_job, NULL));
        int c0 = atomic_load(&FL.started);
        while (atomic_load(&FL.lone_at) < 0)
            sched_yield();
        int delay = atomic_load(&FL.lone_at) - c0;
        if (delay > worst)
            worst = delay;
    }
    atomic_store(&flood_stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    VT_CHECK_OK(vt_pool_wait_idle(FL.p, VT_FOREVER));
    VT_CHECK_EQ(FL.errors, 0);
    /* two other active groups + the job the worker may hold already */
    VT_CHECK_LE(worst, 3);
    vt_pool_free(FL.p);
}

/* ---- More workers: every job runs exactly once ----------------------------- */

static struct {
    vt_pool *p;
    vt_policy policy;
    unsigned levels;
    _Atomic unsigned char *ran;
    int roots, fan;
    _Atomic int errors;
} CNT;

static void cnt_leaf(void *arg)
{
    atomic_fetch_add(&CNT.ran[(intptr_t)arg], 1);
}

static void cnt_root(void *arg)
{
    intptr_t id = (intptr_t)arg;
    atomic_fetch_add(&CNT.ran[id], 1);
    for (int k = 0; k < CNT.fan; k++) {
        intptr_t c = CNT.roots + id * CNT.fan + k;
        vt_job_opts o = {.priority = (int)((uint64_t)c * 7 % CNT.levels), .group = (uint32_t)(c % 5)};
        vt_err e = k % 2 ? vt_pool_submit(CNT.p, cnt_leaf, (void *)c)
                         : vt_pool_submit_ex(CNT.p, cnt_leaf, (void *)c, &o);
        if (e != VT_OK)
            atomic_fetch_add(&CNT.errors, 1);
    }
}

VT_TEST(every_policy_runs_each_job_once_on_2_and_8_workers)
{
    static const unsigned workers[] = {2, 8};
    for (int policy = VT_POLICY_LIFO; policy <= VT_POLICY_FAIR; policy++) {
        for (size_t w = 0; w < 2; w++) {
            memset(&CNT, 0, sizeof(CNT));
            CNT.policy = (vt_policy)policy;
            CNT.levels = 4;
            CNT.roots = 3000;
            CNT.fan = 5;
            int total = CNT.roots * (1 + CNT.fan);
            CNT.ran = calloc((size_t)total, 1);
            CNT.p = new_pool(workers[w], (vt_policy)policy, 4, 0);
            VT_CHECK_NOT_NULL(CNT.p);
            for (intptr_t i = 0; i < CNT.roots; i++) {
                vt_job_opts o = {.priority = (int)(i % 4), .group = (uint32_t)(i % 3)};
                VT_CHECK_OK(i % 2 ? vt_pool_submit(CNT.p, cnt_root, (void *)i)
                                  : vt_pool_submit_ex(CNT.p, cnt_root, (void *)i, &o));
            }
            VT_CHECK_OK(vt_pool_wait_idle(CNT.p, VT_FOREVER));
            VT_CHECK_EQ(CNT.errors, 0);
            for (int i = 0; i < total; i++)
                VT_CHECK_EQ(CNT.ran[i], 1);
            vt_pool_metrics m;
            VT_CHECK_OK(vt_pool_metrics_get(CNT.p, &m, NULL, 0));
            VT_CHECK_EQ(m.total.executed, (uint64_t)total);
            VT_CHECK_EQ(m.injected, (uint64_t)CNT.roots);
            vt_pool_free(CNT.p);
            free((void *)CNT.ran);
        }
    }
}
