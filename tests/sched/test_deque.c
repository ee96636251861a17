/* The scheduler's internal queues: the Chase–Lev deque, the ring and the
 * pool-wide queues of the injection, PRIORITY and FAIR policies. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "vt_test.h"
#include "sched/sched_int.h"

static void f0(void *arg)
{
    (void)arg;
}

VT_TEST(deque_owner_is_lifo_thief_is_fifo)
{
    vt__deque d;
    VT_CHECK_OK(vt__deque_init(&d, 4));
    vt__job j;
    VT_CHECK_EQ(vt__deque_take(&d, &j), 0);
    VT_CHECK_EQ(vt__deque_steal(&d, &j), 0);
    /* Past the initial capacity: the buffer grows and keeps the order. */
    for (uintptr_t i = 1; i <= 100; i++)
        VT_CHECK_OK(vt__deque_push(&d, f0, (void *)i));
    VT_CHECK_EQ(vt__deque_size(&d), 100);
    VT_CHECK_EQ(vt__deque_steal(&d, &j), 1);
    VT_CHECK_EQ((uintptr_t)j.arg, 1);
    VT_CHECK_PTR_EQ((void *)j.fn, (void *)f0);
    VT_CHECK_EQ(vt__deque_take(&d, &j), 1);
    VT_CHECK_EQ((uintptr_t)j.arg, 100);
    for (uintptr_t i = 99; i >= 2; i--) {
        VT_CHECK_EQ(vt__deque_take(&d, &j), 1);
        VT_CHECK_EQ((uintptr_t)j.arg, i);
    }
    VT_CHECK_EQ(vt__deque_take(&d, &j), 0);
    VT_CHECK_EQ(vt__deque_size(&d), 0);
    vt__deque_destroy(&d);
}

VT_TEST(deque_grow_failure_keeps_contents)
{
    vt__deque d;
    VT_CHECK_OK(vt__deque_init(&d, 4));
    for (uintptr_t i = 0; i < 4; i++)
        VT_CHECK_OK(vt__deque_push(&d, f0, (void *)i));
    vt_test_alloc_fail_at(1);
    VT_CHECK_ERR(vt__deque_push(&d, f0, (void *)99), VT_ENOMEM);
    vt_test_alloc_fail_at(0);
    VT_CHECK_EQ(vt__deque_size(&d), 4);
    vt__job j;
    for (uintptr_t i = 4; i-- > 0;) {
        VT_CHECK_EQ(vt__deque_take(&d, &j), 1);
        VT_CHECK_EQ((uintptr_t)j.arg, i);
    }
    vt__deque_destroy(&d);
}

/* One owner pushes and takes, thieves steal: every item comes out exactly
 * once. Items are indices into a table of take counts. */
typedef struct race {
    vt__deque d;
    _Atomic uint32_t *seen;
    size_t n;
    _Atomic int done;
    _Atomic uint64_t stolen;
} race;

static void *thief_main(void *arg)
{
    race *r = arg;
    vt__job j;
    uint64_t mine = 0;
    for (;;) {
        int got = vt__deque_steal(&r->d, &j);
        if (got == 1) {
            atomic_fetch_add(&r->seen[(uintptr_t)j.arg], 1);
            mine++;
        } else if (got == 0 && atomic_load(&r->done)) {
            break;
        }
    }
    atomic_fetch_add(&r->stolen, mine);
    return NULL;
}

VT_TEST(deque_exactly_once_under_concurrent_steals)
{
    race r;
    r.n = 200000 * vt_test_stress();
    r.seen = calloc(r.n, sizeof(*r.seen));
    VT_CHECK_NOT_NULL(r.seen);
    atomic_init(&r.done, 0);
    atomic_init(&r.stolen, 0);
    VT_CHECK_OK(vt__deque_init(&r.d, 8));
    enum { THIEVES = 3 };
    pthread_t th[THIEVES];
    for (int i = 0; i < THIEVES; i++)
        VT_CHECK_EQ(pthread_create(&th[i], NULL, thief_main, &r), 0);
    vt__job j;
    uint64_t taken = 0;
    for (size_t i = 0; i < r.n; i++) {
        VT_CHECK_OK(vt__deque_push(&r.d, f0, (void *)(uintptr_t)i));
        /* Take now and then, so that owner and thieves meet at the last item. */
        if ((vt_test_rand() & 3) == 0 && vt__deque_take(&r.d, &j)) {
            atomic_fetch_add(&r.seen[(uintptr_t)j.arg], 1);
            taken++;
        }
    }
    while (vt__deque_take(&r.d, &j)) {
        atomic_fetch_add(&r.seen[(uintptr_t)j.arg], 1);
        taken++;
    }
    atomic_store(&r.done, 1);
    for (int i = 0; i < THIEVES; i++)
        pthread_join(th[i], NULL);
    VT_CHECK_EQ(taken + atomic_load(&r.stolen), r.n);
    for (size_t i = 0; i < r.n; i++)
        VT_CHECK_EQ(atomic_load(&r.seen[i]), 1);
    vt__deque_destroy(&r.d);
    free(r.seen);
}

VT_TEST(ring_fifo_and_growth)
{
    vt__ring r = {0};
    vt__job j;
    VT_CHECK_EQ(vt__ring_pop(&r, &j), 0);
    /* Interleave pushes and pops so the ring wraps before it grows. */
    uintptr_t next_in = 0, next_out = 0;
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < 37; i++)
            VT_CHECK_OK(vt__ring_push(&r, (vt__job){f0, (void *)next_in++, 0}));
        for (int i = 0; i < 30; i++) {
            VT_CHECK_EQ(vt__ring_pop(&r, &j), 1);
            VT_CHECK_EQ((uintptr_t)j.arg, next_out++);
        }
    }
    while (vt__ring_pop(&r, &j))
        VT_CHECK_EQ((uintptr_t)j.arg, next_out++);
    VT_CHECK_EQ(next_out, next_in);
    vt_test_alloc_fail_at(1);
    vt__ring full = {0};
    VT_CHECK_ERR(vt__ring_push(&full, (vt__job){f0, NULL, 0}), VT_ENOMEM);
    vt_test_alloc_fail_at(0);
    vt__ring_free(&r);
    vt__ring_free(&full);
}

static size_t pop_all(vt__shared_queue *q, uintptr_t *out, size_t max)
{
    vt__job j;
    size_t n = 0;
    while (n < max && vt__squeue_pop(q, &j, 1) == 1)
        out[n++] = (uintptr_t)j.arg;
    return n;
}

VT_TEST(squeue_priority_order_and_aging)
{
    vt__shared_queue q;
    VT_CHECK_OK(vt__squeue_init(&q, VT_POLICY_PRIORITY, 3, 2));
    /* Level in the tens digit, sequence in the units. */
    uintptr_t items[] = {1, 2, 21, 22, 11, 23, 12, 24, 25};
    for (size_t i = 0; i < sizeof(items) / sizeof(items[0]); i++)
        VT_CHECK_OK(vt__squeue_push(&q, (vt__job){f0, (void *)items[i], 0}, (unsigned)(items[i] / 10)));
    VT_CHECK_EQ(vt__squeue_count(&q), 9);
    uintptr_t got[16];
    VT_CHECK_EQ(pop_all(&q, got, 16), 9);
    /* Limit 2: after two picks that passed over levels 1 and 0, both are
     * aged; the higher (1) is served first, then 0, then the top level
     * again until another level has been passed over twice. */
    uintptr_t want[] = {21, 22, 11, 1, 23, 12, 2, 24, 25};
    for (size_t i = 0; i < 9; i++)
        VT_CHECK_EQ(got[i], want[i]);
    VT_CHECK_EQ(vt__squeue_count(&q), 0);
    vt__squeue_destroy(&q);
}

VT_TEST(squeue_fair_round_robin)
{
    vt__shared_queue q;
    VT_CHECK_OK(vt__squeue_init(&q, VT_POLICY_FAIR, 1, 1));
    /* Group a floods first, then b and c arrive. */
    for (uintptr_t i = 0; i < 5; i++)
        VT_CHECK_OK(vt__squeue_push(&q, (vt__job){f0, (void *)(100 + i), 7}, 0));
    for (uintptr_t i = 0; i < 2; i++)
        VT_CHECK_OK(vt__squeue_push(&q, (vt__job){f0, (void *)(200 + i), 8}, 0));
    VT_CHECK_OK(vt__squeue_push(&q, (vt__job){f0, (void *)300, (uint64_t)1 << 32 | 9}, 0));
    uintptr_t got[16];
    VT_CHECK_EQ(pop_all(&q, got, 16), 8);
    uintptr_t want[] = {100, 200, 300, 101, 201, 102, 103, 104};
    for (size_t i = 0; i < 8; i++)
        VT_CHECK_EQ(got[i], want[i]);
    /* Many groups: the index and the round robin grow. */
    for (uintptr_t g = 0; g < 1000; g++)
        for (uintptr_t i = 0; i < 2; i++)
            VT_CHECK_OK(vt__squeue_push(&q, (vt__job){f0, (void *)(g * 2 + i), g + 1}, 0));
    vt__job j;
    for (uintptr_t k = 0; k < 2000; k++) {
        VT_CHECK_EQ(vt__squeue_pop(&q, &j, 1), 1);
        uintptr_t g = k % 1000, i = k / 1000;
        VT_CHECK_EQ((uintptr_t)j.arg, g * 2 + i);
    }
    VT_CHECK_EQ(vt__squeue_pop(&q, &j, 1), 0);
    vt__squeue_destroy(&q);
}

VT_TEST(squeue_push_failure_leaves_queue_intact)
{
    for (vt_policy pol = VT_POLICY_LIFO; pol <= VT_POLICY_FAIR; pol++) {
        vt__shared_queue q;
        VT_CHECK_OK(vt__squeue_init(&q, pol, 2, 4));
        long live = vt_test_alloc_live();
        size_t ok = 0;
        for (long k = 1; k < 6; k++) {
            vt_test_alloc_fail_at(k);
            for (uintptr_t i = 0; i < 100; i++) {
                vt_err e = vt__squeue_push(&q, (vt__job){f0, (void *)i, i % 5}, (unsigned)(i & 1));
                if (e) {
                    VT_CHECK_ERR(e, VT_ENOMEM);
                    break;
                }
                ok++;
            }
            vt_test_alloc_fail_at(0);
        }
        VT_CHECK_EQ(vt__squeue_count(&q), ok);
        vt__job j;
        size_t popped = 0;
        while (vt__squeue_pop(&q, &j, 1))
            popped++;
        VT_CHECK_EQ(popped, ok);
        vt__squeue_destroy(&q);
        VT_CHECK_LE(vt_test_alloc_live(), live);
    }
}

VT_TEST(squeue_batch_pop)
{
    vt__shared_queue q;
    VT_CHECK_OK(vt__squeue_init(&q, VT_POLICY_FIFO, 1, 1));
    for (uintptr_t i = 0; i < 10; i++)
        VT_CHECK_OK(vt__squeue_push(&q, (vt__job){f0, (void *)i, 0}, 0));
    vt__job b[4];
    VT_CHECK_EQ(vt__squeue_pop(&q, b, 4), 4);
    for (uintptr_t i = 0; i < 4; i++)
        VT_CHECK_EQ((uintptr_t)b[i].arg, i);
    VT_CHECK_EQ(vt__squeue_pop(&q, b, 4), 4);
    VT_CHECK_EQ(vt__squeue_pop(&q, b, 4), 2);
    VT_CHECK_EQ(vt__squeue_pop(&q, b, 4), 0);
    vt__squeue_destroy(&q);
}

/* A deep deque gives its owner VT__CLAIM jobs per exchange. Order stays
 * newest first, jobs pushed after a claim come before the claimed ones, and
 * if thieves take those later pushes (leaving bottom above the claim for
 * good), the claimed jobs still come out. */
VT_TEST(deque_claim_keeps_lifo_order_and_strands_nothing)
{
    vt__deque d;
    VT_CHECK_OK(vt__deque_init(&d, 16));
    vt__job j;
    uintptr_t n = 4 * VT__CLAIM + 8;
    for (uintptr_t i = 0; i < n; i++)
        VT_CHECK_OK(vt__deque_push(&d, f0, (void *)i));
    /* Deep: this take claims the newest VT__CLAIM and returns the newest. */
    VT_CHECK_EQ(vt__deque_take(&d, &j), 1);
    VT_CHECK_EQ((uintptr_t)j.arg, n - 1);
    VT_CHECK_EQ(d.nclaimed, VT__CLAIM - 1);
    VT_CHECK_EQ(vt__deque_size(&d), n - VT__CLAIM); /* claimed jobs are the owner's */
    /* Pushed after the claim: newer, so first. */
    VT_CHECK_OK(vt__deque_push(&d, f0, (void *)2000));
    VT_CHECK_OK(vt__deque_push(&d, f0, (void *)2001));
    VT_CHECK_EQ(vt__deque_take(&d, &j), 1);
    VT_CHECK_EQ((uintptr_t)j.arg, 2001);
    /* Thieves take everything left in the deque proper, 2000 included. */
    uintptr_t stolen = 0;
    while (vt__deque_steal(&d, &j) == 1)
        stolen++;
    VT_CHECK_EQ(stolen, n - VT__CLAIM + 1);
    /* The claimed ones still come out, newest first. */
    for (uintptr_t k = 2; k <= VT__CLAIM; k++) {
        VT_CHECK_EQ(vt__deque_take(&d, &j), 1);
        VT_CHECK_EQ((uintptr_t)j.arg, n - k);
    }
    VT_CHECK_EQ(d.nclaimed, 0);
    VT_CHECK_EQ(vt__deque_take(&d, &j), 0);
    vt__deque_destroy(&d);
}
