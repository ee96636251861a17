/* test_timer.c — the timer service under the pool (src/sched/timer.c and
 * its wheel, wheel.c), through the internal vt__timers API.
 *
 * Most tests drive a non-threaded service with their own clock, so that
 * "never early" and "in order" are checked exactly, against a reference
 * model where it helps. Threaded tests wait without deadlines (the harness
 * names a hang) and check order and "never early" with the clock the thread
 * uses, never a duration. */
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vt_test.h"
#include "sched/sched_int.h"
#include "sched/wheel.h" /* the tick and the levels, whose boundaries the tests cross */

#define TICK ((int64_t)1 << VT__WHEEL_TICK_SHIFT)
#define LEVELS VT__WHEEL_LEVELS

/* The span of one slot of level lvl, in ns. */
static int64_t level_unit(int lvl)
{
    int shift = VT__WHEEL_TICK_SHIFT + VT__WHEEL_BITS * lvl;
    return (int64_t)1 << (shift < 62 ? shift : 62);
}

/* ---- A dispatch that records what fired ----------------------------------- */

typedef struct rec {
    size_t n, cap;
    uintptr_t *args;
    int64_t *at; /* vt_now_ns() at dispatch, threaded tests */
    _Atomic size_t count;
    int stamp;
} rec;

static void rec_init(rec *r, size_t cap, int stamp)
{
    memset(r, 0, sizeof *r);
    r->cap = cap;
    r->args = calloc(cap, sizeof *r->args);
    r->at = calloc(cap, sizeof *r->at);
    r->stamp = stamp;
    atomic_init(&r->count, 0);
}

static void rec_free(rec *r)
{
    free(r->args);
    free(r->at);
}

static void job_fn(void *arg)
{
    (void)arg;
}

static void other_fn(void *arg)
{
    (void)arg;
}

static void rec_dispatch(void *ud, vt_job_fn fn, void *arg)
{
    rec *r = ud;
    (void)fn;
    if (r->n < r->cap) {
        r->args[r->n] = (uintptr_t)arg;
        if (r->stamp)
            r->at[r->n] = vt_now_ns();
    }
    r->n++;
    atomic_store_explicit(&r->count, r->n, memory_order_release);
}

static vt__timers *new_timers(int threaded, rec *r)
{
    vt__timers *t = NULL;
    return vt__timers_new(&t, threaded, rec_dispatch, r, "test-timer") == VT_OK ? t : NULL;
}

static int64_t rnd(int64_t n)
{
    return n <= 0 ? 0 : (int64_t)(vt_test_rand() % (uint64_t)n);
}

/* a + b for b >= 0, stopping at INT64_MAX. */
static int64_t sat_add(int64_t a, int64_t b)
{
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}

/* ---- Basics ----------------------------------------------------------------- */

VT_TEST(new_and_free_empty)
{
    rec r;
    rec_init(&r, 1, 0);
    vt__timers *t = NULL;
    VT_CHECK_ERR(vt__timers_new(NULL, 0, rec_dispatch, &r, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt__timers_new(&t, 0, NULL, &r, NULL), VT_EINVAL);
    VT_CHECK_OK(vt__timers_new(&t, 0, rec_dispatch, &r, NULL));
    VT_CHECK_EQ(vt__timers_pending(t), 0);
    VT_CHECK_EQ(vt__timers_fired(t), 0);
    VT_CHECK_EQ(vt__timers_next_deadline(t), VT_FOREVER);
    VT_CHECK_EQ(vt__timers_expire(t, INT64_MAX), 0);
    VT_CHECK_EQ(vt__timers_cancel_all(t, NULL, NULL), 0);
    VT_CHECK_ERR(vt__timers_add(t, 5, NULL, NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt__timers_add(NULL, 5, job_fn, NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt__timers_cancel(NULL, (vt_timer){1}), VT_EINVAL);
    vt__timers_free(t, NULL, NULL);
    vt__timers_free(NULL, NULL, NULL);
    /* A threaded service with nothing to do starts and stops. */
    VT_CHECK_OK(vt__timers_new(&t, 1, rec_dispatch, &r, NULL));
    VT_CHECK_EQ(vt__timers_next_deadline(t), VT_FOREVER);
    vt__timers_free(t, NULL, NULL);
    VT_CHECK_EQ(r.n, 0);
    rec_free(&r);
}

/* ---- Order ------------------------------------------------------------------ */

typedef struct tdef {
    int64_t deadline;
    size_t start; /* start order */
    vt_timer h;
} tdef;

static int tdef_cmp(const void *a, const void *b)
{
    const tdef *x = a, *y = b;
    if (x->deadline != y->deadline)
        return x->deadline < y->deadline ? -1 : 1;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* Deadlines that exercise the wheel: equal ones, ones within one tick, on
 * and next to tick and level boundaries, near and very far. */
static int64_t spicy_deadline(int64_t base, const tdef *prev, size_t nprev)
{
    switch (rnd(10)) {
    case 0:
        if (nprev)
            return prev[rnd((int64_t)nprev)].deadline; /* a tie */
        return base;
    case 1:
        return base + rnd(TICK); /* one tick, many ns deadlines */
    case 2: {
        int64_t unit = level_unit((int)rnd(LEVELS));
        int64_t b = (base / unit + 1 + rnd(3)) * unit;
        return b + rnd(3) - 1; /* on a boundary, or 1 ns either side */
    }
    case 3:
        return base + rnd(1000);
    case 4:
        return base + rnd(VT_SEC(3600));
    case 5:
        return base + rnd(VT_SEC(3600) * 24 * 365 * 50); /* decades */
    case 6:
        return INT64_MAX - rnd(3);
    case 7:
        return base + rnd((int64_t)1 << (int)rnd(62));
    default:
        return base + rnd(VT_MS(500));
    }
}

VT_TEST(fire_in_deadline_then_start_order)
{
    size_t n = 20000 * vt_test_stress();
    tdef *d = calloc(n, sizeof *d);
    rec r;
    rec_init(&r, n, 0);
    vt__timers *t = new_timers(0, &r);
    VT_CHECK_NOT_NULL(t);
    int64_t base = VT_SEC(1000) + rnd(VT_SEC(1000));
    for (size_t i = 0; i < n; i++) {
        d[i].deadline = spicy_deadline(base, d, i);
        d[i].start = i;
        VT_CHECK_OK(vt__timers_add(t, d[i].deadline, job_fn, (void *)(uintptr_t)i, &d[i].h));
    }
    VT_CHECK_EQ(vt__timers_pending(t), n);
    qsort(d, n, sizeof *d, tdef_cmp);
    VT_CHECK_EQ(vt__timers_next_deadline(t), d[0].deadline);
    /* Expire at rising instants: each call fires exactly the timers of
     * (previous now, now], in order. */
    size_t done = 0;
    int64_t now = base;
    while (done < n) {
        now = rnd(4) == 0 ? d[done].deadline : sat_add(now, rnd(VT_SEC(7200)));
        if (rnd(50) == 0)
            now = INT64_MAX;
        size_t want = done;
        while (want < n && d[want].deadline <= now)
            want++;
        size_t got = vt__timers_expire(t, now);
        VT_CHECK_EQ(got, want - done);
        VT_CHECK_EQ(r.n, want);
        for (size_t i = done; i < want; i++)
            VT_CHECK_EQ(r.args[i], d[i].start);
        done = want;
        VT_CHECK_EQ(vt__timers_pending(t), n - done);
        VT_CHECK_EQ(vt__timers_fired(t), done);
        VT_CHECK_EQ(vt__timers_next_deadline(t), done < n ? d[done].deadline : VT_FOREVER);
    }
    vt__timers_free(t, NULL, NULL);
    rec_free(&r);
    free(d);
}

/* A whole batch in one tick, and more than a batch with one deadline. */
VT_TEST(one_tick_batches_come_out_sorted)
{
    size_t n = 3000;
    tdef *d = calloc(n, sizeof *d);
    rec r;
    rec_init(&r, n, 0);
    vt__timers *t = new_timers(0, &r);
    VT_CHECK_NOT_NULL(t);
    int64_t base = 77 * TICK;
    for (size_t i = 0; i < n; i++) {
        /* Half share one deadline; the rest are spread over the tick, added
         * in reverse order so that nothing is sorted by luck. */
        d[i].deadline =
            i % 2 ? base + TICK / 2 : base + TICK - 1 - (int64_t)i * (TICK / (int64_t)n);
        d[i].start = i;
        VT_CHECK_OK(vt__timers_add(t, d[i].deadline, job_fn, (void *)(uintptr_t)i, NULL));
    }
    qsort(d, n, sizeof *d, tdef_cmp);
    size_t before_half = 0;
    while (d[before_half].deadline < base + TICK / 2)
        before_half++;
    VT_CHECK_GT(before_half, 100); /* the premise: both calls fire many */
    VT_CHECK_EQ(vt__timers_expire(t, base - 1), 0);
    VT_CHECK_EQ(vt__timers_expire(t, base + TICK / 2 - 1), before_half);
    VT_CHECK_EQ(vt__timers_expire(t, base + TICK - 1), n - before_half);
    VT_CHECK_EQ(r.n, n);
    for (size_t i = 0; i < n; i++)
        VT_CHECK_EQ(r.args[i], d[i].start);
    vt__timers_free(t, NULL, NULL);
    rec_free(&r);
    free(d);
}

/* ---- Never early -------------------------------------------------------------- */

VT_TEST(never_early_across_tick_and_level_boundaries)
{
    /* Deadlines at every boundary of every level (and 1 ns around them),
     * then expire at each of those instants and 1 ns before: exactly the
     * timers at or before now fire. */
    tdef d[LEVELS * 4 * 3 + 8];
    size_t n = 0;
    rec r;
    rec_init(&r, 256, 0);
    vt__timers *t = new_timers(0, &r);
    VT_CHECK_NOT_NULL(t);
    for (int lvl = 0; lvl < LEVELS; lvl++) {
        int64_t unit = level_unit(lvl);
        for (int64_t k = 1; k <= 4; k++)
            for (int64_t e = -1; e <= 1; e++) {
                d[n].deadline = (k * unit + e) > 0 ? k * unit + e : 1;
                d[n].start = n;
                n++;
            }
    }
    const int64_t far[8] = {VT_SEC(3600),
                            VT_SEC(3600) * 24 * 365,
                            VT_SEC(3600) * 24 * 365 * 100,
                            ((int64_t)1 << 62) - 1,
                            (int64_t)1 << 62,
                            INT64_MAX - 1,
                            INT64_MAX,
                            INT64_MAX - TICK};
    for (int i = 0; i < 8; i++) {
        d[n].deadline = far[i];
        d[n].start = n;
        n++;
    }
    for (size_t i = 0; i < n; i++)
        VT_CHECK_OK(vt__timers_add(t, d[i].deadline, job_fn, (void *)(uintptr_t)d[i].start, NULL));
    qsort(d, n, sizeof *d, tdef_cmp);
    size_t done = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t probes[2] = {d[i].deadline - 1, d[i].deadline};
        for (int p = 0; p < 2; p++) {
            size_t want = done;
            while (want < n && d[want].deadline <= probes[p])
                want++;
            VT_CHECK_EQ(vt__timers_expire(t, probes[p]), want - done);
            for (size_t j = done; j < want; j++)
                VT_CHECK_EQ(r.args[j], d[j].start);
            done = want;
            VT_CHECK_EQ(vt__timers_next_deadline(t), done < n ? d[done].deadline : VT_FOREVER);
        }
    }
    VT_CHECK_EQ(done, n);
    vt__timers_free(t, NULL, NULL);
    rec_free(&r);
}

VT_TEST(far_deadlines_wait_and_past_ones_fire_at_once)
{
    rec r;
    rec_init(&r, 16, 0);
    vt__timers *t = new_timers(0, &r);
    VT_CHECK_NOT_NULL(t);
    VT_CHECK_OK(vt__timers_add(t, INT64_MAX, job_fn, (void *)1, NULL));
    VT_CHECK_OK(vt__timers_add(t, VT_SEC(3600) * 24 * 365 * 30, job_fn, (void *)2, NULL));
    VT_CHECK_OK(vt__timers_add(t, VT_SEC(7200), job_fn, (void *)3, NULL));
    VT_CHECK_EQ(vt__timers_next_deadline(t), VT_SEC(7200));
    /* Asking for the next deadline may move the wheel ahead of the owner's
     * clock; what is added behind it must still fire on time. */
    VT_CHECK_OK(vt__timers_add(t, VT_SEC(5), job_fn, (void *)4, NULL));
    VT_CHECK_OK(vt__timers_add(t, -5, job_fn, (void *)5, NULL)); /* the past: as 0 */
    VT_CHECK_OK(vt__timers_add(t, 0, job_fn, (void *)6, NULL));
    VT_CHECK_EQ(vt__timers_next_deadline(t), 0);
    VT_CHECK_EQ(vt__timers_expire(t, 0), 2);
    VT_CHECK_EQ(vt__timers_expire(t, VT_SEC(5) - 1), 0);
    VT_CHECK_EQ(vt__timers_expire(t, VT_SEC(5)), 1);
    VT_CHECK_EQ(vt__timers_expire(t, VT_SEC(7200) - 1), 0);
    VT_CHECK_EQ(vt__timers_expire(t, VT_SEC(7200)), 1);
    VT_CHECK_EQ(vt__timers_next_deadline(t), VT_SEC(3600) * 24 * 365 * 30);
    VT_CHECK_EQ(vt__timers_expire(t, VT_SEC(3600) * 24 * 365 * 30 - 1), 0);
    VT_CHECK_EQ(vt__timers_expire(t, INT64_MAX - 1), 1);
    VT_CHECK_EQ(vt__timers_next_deadline(t), INT64_MAX);
    VT_CHECK_EQ(vt__timers_expire(t, INT64_MAX), 1);
    VT_CHECK_EQ(r.n, 6);
    const uintptr_t order[6] = {5, 6, 4, 3, 2, 1};
    for (int i = 0; i < 6; i++)
        VT_CHECK_EQ(r.args[i], order[i]);
    /* After the clock went far, a timer in the past still fires at once. */
    VT_CHECK_OK(vt__timers_add(t, VT_SEC(1), job_fn, (void *)7, NULL));
    VT_CHECK_EQ(vt__timers_next_deadline(t), VT_SEC(1));
    VT_CHECK_EQ(vt__timers_expire(t, INT64_MAX), 1);
    vt__timers_free(t, NULL, NULL);
    rec_free(&r);
}

/* ---- A reference model ---------------------------------------------------------
 * Random adds (ties, late ones, one-tick ones, far ones), cancels (of live,
 * fired and cancelled timers), next_deadline and expire at rising instants
 * that land on boundaries; the dispatch itself adds and cancels timers while
 * an expiry is under way. Every dispatch must be the earliest (deadline,
 * start) live timer that was started before the call and is due. */

#define MODEL_MAX 4096

typedef struct mtimer {
    int64_t deadline;
    uint64_t seq;
    vt_timer h;
    int state; /* 0 pending, 1 fired, 2 cancelled */
} mtimer;

typedef struct model {
    vt__timers *t;
    mtimer *m;
    size_t n; /* timers ever added */
    size_t live;
    int64_t now; /* the instant of the expiry under way */
    uint64_t seq_end;
    int in_expire;
    size_t fired;
    int bad;
} model;

static int64_t model_deadline(model *md)
{
    int64_t now = md->now;
    switch (rnd(9)) {
    case 0:
        return md->n ? md->m[rnd((int64_t)md->n)].deadline : now;
    case 1:
        return now - rnd(VT_SEC(10)); /* late */
    case 2:
        return (now / TICK) * TICK + rnd(TICK);
    case 3: {
        int64_t unit = level_unit((int)rnd(LEVELS - 1));
        if (now / unit >= INT64_MAX / unit - 3)
            return INT64_MAX;
        return (now / unit + 1 + rnd(2)) * unit + rnd(3) - 1;
    }
    case 4:
        return INT64_MAX - rnd(2);
    case 5:
        return sat_add(now, rnd(VT_SEC(100000)));
    default:
        return sat_add(now, rnd((int64_t)1 << (int)rnd(40)));
    }
}

static void model_add(model *md)
{
    if (md->n == MODEL_MAX)
        return;
    mtimer *x = &md->m[md->n];
    x->deadline = model_deadline(md);
    if (x->deadline < 0)
        x->deadline = 0;
    x->seq = md->n;
    x->state = 0;
    if (vt__timers_add(md->t, x->deadline, job_fn, (void *)(uintptr_t)md->n, &x->h) != VT_OK) {
        md->bad = 1;
        return;
    }
    md->n++;
    md->live++;
}

static void model_cancel(model *md)
{
    if (!md->n)
        return;
    mtimer *x = &md->m[rnd((int64_t)md->n)];
    vt_err e = vt__timers_cancel(md->t, x->h);
    if (x->state != 0) {
        if (e != VT_ENOENT)
            md->bad = 3;
    } else if (e == VT_OK) {
        x->state = 2;
        md->live--;
    } else if (e != VT_ENOENT || !md->in_expire || x->deadline > md->now || x->seq >= md->seq_end) {
        md->bad = 2;
    }
    /* else: taken by the expiry under way, in a batch not yet dispatched; it
     * must still fire in this expiry, which the checks below see to. */
}

/* The live timer that must fire next in an expiry at md->now. */
static mtimer *model_next_due(model *md)
{
    mtimer *best = NULL;
    for (size_t i = 0; i < md->n; i++) {
        mtimer *x = &md->m[i];
        if (x->state || x->deadline > md->now || x->seq >= md->seq_end)
            continue;
        if (!best || x->deadline < best->deadline ||
            (x->deadline == best->deadline && x->seq < best->seq))
            best = x;
    }
    return best;
}

static void model_dispatch(void *ud, vt_job_fn fn, void *arg)
{
    model *md = ud;
    (void)fn;
    mtimer *want = model_next_due(md);
    size_t got = (size_t)(uintptr_t)arg;
    if (!md->in_expire || !want || got != want->seq) {
        if (!md->bad) {
            md->bad = 4;
            printf(
                "  model: at now %lld fired #%zu (deadline %lld), wanted #%lld (deadline %lld)\n",
                (long long)md->now, got, got < md->n ? (long long)md->m[got].deadline : -1LL,
                want ? (long long)want->seq : -1LL, want ? (long long)want->deadline : -1LL);
        }
        return;
    }
    want->state = 1;
    md->live--;
    md->fired++;
    /* Meddle while the expiry is under way (between its batches). */
    switch (rnd(8)) {
    case 0:
        model_add(md);
        break;
    case 1:
        model_cancel(md);
        break;
    default:
        break;
    }
}

static void model_round(int ops)
{
    model md;
    memset(&md, 0, sizeof md);
    md.m = calloc(MODEL_MAX, sizeof *md.m);
    VT_CHECK_OK(vt__timers_new(&md.t, 0, model_dispatch, &md, NULL));
    md.now = rnd(2) ? 0 : rnd(VT_SEC(100000));
    for (int op = 0; op < ops && !md.bad; op++) {
        int64_t r = rnd(100);
        if (r < 45) {
            model_add(&md);
        } else if (r < 60) {
            model_cancel(&md);
        } else if (r < 75) {
            int64_t want = VT_FOREVER;
            for (size_t i = 0; i < md.n; i++)
                if (md.m[i].state == 0 && (want == VT_FOREVER || md.m[i].deadline < want))
                    want = md.m[i].deadline;
            VT_CHECK_EQ(vt__timers_next_deadline(md.t), want);
        } else {
            /* Rise by a little, to a boundary, to the next deadline, or far. */
            int64_t now = md.now;
            switch (rnd(5)) {
            case 0:
                now = sat_add(now, rnd(TICK * 3));
                break;
            case 1: {
                int64_t unit = level_unit((int)rnd(LEVELS - 1));
                if (now / unit < INT64_MAX / unit - 1)
                    now = (now / unit + 1) * unit - rnd(2);
                break;
            }
            case 2: {
                int64_t d = vt__timers_next_deadline(md.t);
                if (d != VT_FOREVER && d >= now)
                    now = d;
                break;
            }
            case 3:
                now = sat_add(now, rnd(VT_SEC(1000)));
                break;
            default:
                now = sat_add(now, rnd((int64_t)1 << (int)rnd(50)));
                break;
            }
            if (now < md.now || rnd(200) == 0)
                now = INT64_MAX - rnd(2);
            md.now = now;
            md.seq_end = md.n;
            md.in_expire = 1;
            size_t before = md.fired;
            size_t got = vt__timers_expire(md.t, now);
            md.in_expire = 0;
            VT_CHECK_EQ(md.bad, 0);
            VT_CHECK_EQ(got, md.fired - before);
            /* Every due timer started before the call fired, unless a timer
             * started during the call (by the dispatch) came first: the
             * expiry stops there and leaves the rest to the next call. */
            mtimer *left = model_next_due(&md);
            if (left) {
                mtimer *first = NULL;
                for (size_t i = 0; i < md.n; i++)
                    if (md.m[i].state == 0 &&
                        (!first || md.m[i].deadline < first->deadline ||
                         (md.m[i].deadline == first->deadline && md.m[i].seq < first->seq)))
                        first = &md.m[i];
                int deferred = first->seq >= md.seq_end && first->deadline <= now;
                if (!deferred)
                    printf("  model: after expire(%lld), #%llu (deadline %lld) is still due; "
                           "next %lld\n",
                           (long long)now, (unsigned long long)left->seq, (long long)left->deadline,
                           (long long)vt__timers_next_deadline(md.t));
                VT_CHECK(deferred);
            }
            if (md.now == INT64_MAX || md.now == INT64_MAX - 1)
                break;
        }
        VT_CHECK_EQ(md.bad, 0);
        VT_CHECK_EQ(vt__timers_pending(md.t), md.live);
        VT_CHECK_EQ(vt__timers_fired(md.t), md.fired);
    }
    VT_CHECK_EQ(md.bad, 0);
    vt__timers_free(md.t, NULL, NULL);
    free(md.m);
}

VT_TEST(matches_a_reference_model)
{
    unsigned rounds = 40 * vt_test_stress();
    for (unsigned i = 0; i < rounds; i++)
        model_round(3000);
}

/* ---- Cancel ----------------------------------------------------------------- */

VT_TEST(cancel_and_handles)
{
    rec r;
    rec_init(&r, 64, 0);
    vt__timers *t = new_timers(0, &r);
    VT_CHECK_NOT_NULL(t);
    vt_timer a, b, c;
    VT_CHECK_OK(vt__timers_add(t, 100, job_fn, (void *)1, &a));
    VT_CHECK_OK(vt__timers_add(t, 200, job_fn, (void *)2, &b));
    VT_CHECK_OK(vt__timers_add(t, 300, job_fn, (void *)3, &c));
    VT_CHECK_NE(a.id, 0);
    VT_CHECK_NE(a.id, b.id);
    /* Cancelled: never fires; twice: VT_ENOENT. */
    VT_CHECK_OK(vt__timers_cancel(t, b));
    VT_CHECK_ERR(vt__timers_cancel(t, b), VT_ENOENT);
    VT_CHECK_EQ(vt__timers_pending(t), 2);
    VT_CHECK_EQ(vt__timers_expire(t, 1000), 2);
    VT_CHECK_EQ(r.n, 2);
    VT_CHECK_EQ(r.args[0], 1);
    VT_CHECK_EQ(r.args[1], 3);
    /* Fired: VT_ENOENT. */
    VT_CHECK_ERR(vt__timers_cancel(t, a), VT_ENOENT);
    VT_CHECK_ERR(vt__timers_cancel(t, c), VT_ENOENT);
    /* A stale handle whose node now holds another timer. */
    vt_timer d;
    VT_CHECK_OK(vt__timers_add(t, 2000, job_fn, (void *)4, &d));
    int reused = (uint32_t)d.id == (uint32_t)a.id || (uint32_t)d.id == (uint32_t)b.id ||
                 (uint32_t)d.id == (uint32_t)c.id;
    VT_CHECK(reused); /* the premise: the free node was reused */
    VT_CHECK_ERR(vt__timers_cancel(t, a), VT_ENOENT);
    VT_CHECK_ERR(vt__timers_cancel(t, b), VT_ENOENT);
    VT_CHECK_ERR(vt__timers_cancel(t, c), VT_ENOENT);
    VT_CHECK_EQ(vt__timers_pending(t), 1);
    /* Handles that never existed. */
    VT_CHECK_ERR(vt__timers_cancel(t, (vt_timer){0}), VT_ENOENT);
    VT_CHECK_ERR(vt__timers_cancel(t, (vt_timer){UINT64_MAX}), VT_ENOENT);
    VT_CHECK_ERR(vt__timers_cancel(t, (vt_timer){d.id + 1}), VT_ENOENT);
    VT_CHECK_ERR(vt__timers_cancel(t, (vt_timer){d.id + ((uint64_t)1 << 32)}), VT_ENOENT);
    VT_CHECK_ERR(vt__timers_cancel(t, (vt_timer){d.id - ((uint64_t)1 << 32)}), VT_ENOENT);
    VT_CHECK_ERR(vt__timers_cancel(t, (vt_timer){d.id & 0xffffffffu}), VT_ENOENT);
    for (int i = 0; i < 10000; i++) {
        vt_timer g = {vt_test_rand()};
        if (g.id != d.id)
            VT_CHECK_ERR(vt__timers_cancel(t, g), VT_ENOENT);
    }
    VT_CHECK_EQ(vt__timers_pending(t), 1);
    VT_CHECK_OK(vt__timers_cancel(t, d));
    VT_CHECK_EQ(vt__timers_pending(t), 0);
    VT_CHECK_EQ(vt__timers_next_deadline(t), VT_FOREVER);
    VT_CHECK_EQ(vt__timers_expire(t, INT64_MAX), 0);
    VT_CHECK_EQ(r.n, 2);
    VT_CHECK_EQ(vt__timers_fired(t), 2);
    vt__timers_free(t, NULL, NULL);
    rec_free(&r);
}

/* A cancelled timer's node is reused only once the wheel let go of it, and
 * its handle stays dead through any number of reuses. */
VT_TEST(stale_handles_stay_dead_through_reuse)
{
    rec r;
    rec_init(&r, 1, 0);
    vt__timers *t = new_timers(0, &r);
    VT_CHECK_NOT_NULL(t);
    vt_timer first;
    VT_CHECK_OK(vt__timers_add(t, 50, job_fn, NULL, &first));
    VT_CHECK_OK(vt__timers_cancel(t, first));
    vt_timer h = first;
    int reuses = 0;
    for (int i = 0; i < 1000; i++) {
        VT_CHECK_EQ(vt__timers_expire(t, INT64_MAX), 0); /* lets go of dead nodes */
        vt_timer n;
        VT_CHECK_OK(vt__timers_add(t, 50, job_fn, NULL, &n));
        reuses += (uint32_t)n.id == (uint32_t)first.id;
        VT_CHECK_ERR(vt__timers_cancel(t, first), VT_ENOENT);
        VT_CHECK_ERR(vt__timers_cancel(t, h), VT_ENOENT);
        VT_CHECK_OK(vt__timers_cancel(t, n));
        h = n;
    }
    VT_CHECK_EQ(reuses, 1000);
    vt__timers_free(t, NULL, NULL);
    rec_free(&r);
}

/* ---- Cancel-all and free ----------------------------------------------------------- */

typedef struct creport {
    size_t n;
    unsigned char seen[4096];
    int wrong_fn;
} creport;

static void on_cancel(void *ud, vt_job_fn fn, void *arg)
{
    creport *c = ud;
    if (fn != other_fn)
        c->wrong_fn = 1;
    c->seen[(uintptr_t)arg]++;
    c->n++;
}

VT_TEST(cancel_all_reports_each_pending_timer_once)
{
    rec r;
    rec_init(&r, 4096, 0);
    vt__timers *t = new_timers(0, &r);
    VT_CHECK_NOT_NULL(t);
    vt_timer h[4000];
    for (uintptr_t i = 0; i < 4000; i++)
        VT_CHECK_OK(vt__timers_add(t, i % 3 == 0 ? (int64_t)i : spicy_deadline(VT_SEC(10), NULL, 0),
                                   other_fn, (void *)i, &h[i]));
    VT_CHECK_EQ(vt__timers_expire(t, 999), 334); /* i % 3 == 0 and i <= 999 */
    for (uintptr_t i = 1; i < 4000; i += 7)
        vt__timers_cancel(t, h[i]);
    creport c;
    memset(&c, 0, sizeof c);
    size_t pending = vt__timers_pending(t);
    VT_CHECK_EQ(vt__timers_cancel_all(t, on_cancel, &c), pending);
    VT_CHECK_EQ(c.n, pending);
    VT_CHECK_EQ(c.wrong_fn, 0);
    for (uintptr_t i = 0; i < 4000; i++) {
        int fired = i % 3 == 0 && i <= 999;
        int cancelled = i % 7 == 1 && !fired;
        VT_CHECK_EQ(c.seen[i], fired || cancelled ? 0 : 1);
    }
    VT_CHECK_EQ(vt__timers_pending(t), 0);
    VT_CHECK_EQ(vt__timers_next_deadline(t), VT_FOREVER);
    VT_CHECK_EQ(vt__timers_expire(t, INT64_MAX), 0);
    for (uintptr_t i = 0; i < 4000; i++)
        VT_CHECK_ERR(vt__timers_cancel(t, h[i]), VT_ENOENT);
    /* The service still works. */
    VT_CHECK_OK(vt__timers_add(t, 5, job_fn, (void *)7, NULL));
    VT_CHECK_EQ(vt__timers_expire(t, 5), 1);
    VT_CHECK_EQ(r.args[r.n - 1], 7);
    VT_CHECK_EQ(vt__timers_cancel_all(t, NULL, NULL), 0);
    vt__timers_free(t, NULL, NULL);
    rec_free(&r);
}

VT_TEST(free_reports_pending_timers)
{
    for (int threaded = 0; threaded <= 1; threaded++) {
        rec r;
        rec_init(&r, 16, 0);
        vt__timers *t = new_timers(threaded, &r);
        VT_CHECK_NOT_NULL(t);
        vt_timer h[3000];
        int64_t base = threaded ? vt_now_ns() + VT_SEC(3600) : 0;
        for (uintptr_t i = 0; i < 3000; i++)
            VT_CHECK_OK(vt__timers_add(t, base + VT_SEC(1) + rnd(VT_SEC(100000)), other_fn,
                                       (void *)i, &h[i]));
        for (uintptr_t i = 0; i < 3000; i += 3)
            VT_CHECK_OK(vt__timers_cancel(t, h[i]));
        creport c;
        memset(&c, 0, sizeof c);
        vt__timers_free(t, on_cancel, &c);
        VT_CHECK_EQ(c.n, 2000);
        VT_CHECK_EQ(c.wrong_fn, 0);
        for (uintptr_t i = 0; i < 3000; i++)
            VT_CHECK_EQ(c.seen[i], i % 3 ? 1 : 0);
        VT_CHECK_EQ(r.n, 0);
        rec_free(&r);
    }
}

/* ---- next_deadline and counts -------------------------------------------------------- */

static int64_t min_live(const int64_t *dl, const int *alive, size_t n)
{
    int64_t m = VT_FOREVER;
    for (size_t i = 0; i < n; i++)
        if (alive[i] && (m == VT_FOREVER || dl[i] < m))
            m = dl[i];
    return m;
}

#define NEXT_N 600
#define CHURN_N 5000
#define ORDER_N 2000

/* The threaded service answers without moving its wheel ahead of real time
 * (it scans the earliest slot instead): check both kinds. */
VT_TEST(next_deadline_follows_adds_cancels_and_expiry)
{
    for (int threaded = 0; threaded <= 1; threaded++) {
        rec r;
        rec_init(&r, NEXT_N, 0);
        vt__timers *t = new_timers(threaded, &r);
        VT_CHECK_NOT_NULL(t);
        int64_t base = threaded ? vt_now_ns() + VT_SEC(3600) : VT_SEC(100);
        int64_t dl[NEXT_N];
        int alive[NEXT_N];
        vt_timer h[NEXT_N];
        size_t live = 0;
        for (size_t i = 0; i < NEXT_N; i++) {
            dl[i] = base + rnd(4) * VT_SEC(10000) + rnd(VT_SEC(3600));
            alive[i] = 1;
            live++;
            VT_CHECK_OK(vt__timers_add(t, dl[i], job_fn, (void *)(uintptr_t)i, &h[i]));
            if (i % 50 == 0)
                VT_CHECK_EQ(vt__timers_next_deadline(t), min_live(dl, alive, i + 1));
        }
        VT_CHECK_EQ(vt__timers_pending(t), live);
        for (size_t k = 0; k < NEXT_N / 2; k++) {
            /* Cancel the earliest every other time, else a random one. */
            size_t i = (size_t)rnd(NEXT_N);
            if (k % 2 == 0) {
                int64_t m = min_live(dl, alive, NEXT_N);
                for (size_t j = 0; j < NEXT_N; j++)
                    if (alive[j] && dl[j] == m)
                        i = j;
            }
            VT_CHECK_ERR(vt__timers_cancel(t, h[i]), alive[i] ? VT_OK : VT_ENOENT);
            live -= (size_t)alive[i];
            alive[i] = 0;
            VT_CHECK_EQ(vt__timers_next_deadline(t), min_live(dl, alive, NEXT_N));
            VT_CHECK_EQ(vt__timers_pending(t), live);
        }
        if (!threaded) {
            /* Expire up to each next deadline in turn. */
            while (live) {
                int64_t m = min_live(dl, alive, NEXT_N);
                VT_CHECK_EQ(vt__timers_next_deadline(t), m);
                size_t due = 0;
                for (size_t j = 0; j < NEXT_N; j++)
                    if (alive[j] && dl[j] == m) {
                        alive[j] = 0;
                        due++;
                    }
                VT_CHECK_EQ(vt__timers_expire(t, m), due);
                live -= due;
                VT_CHECK_EQ(vt__timers_pending(t), live);
            }
            VT_CHECK_EQ(vt__timers_next_deadline(t), VT_FOREVER);
            VT_CHECK_EQ(vt__timers_fired(t), r.n);
        }
        vt__timers_free(t, NULL, NULL);
        rec_free(&r);
    }
}

/* ---- Dispatch that adds timers --------------------------------------------------------- */

typedef struct readd {
    vt__timers *t;
    int64_t deadline;
    size_t calls;
} readd;

static void readd_dispatch(void *ud, vt_job_fn fn, void *arg)
{
    readd *x = ud;
    x->calls++;
    /* Already due: must wait for the next expiry, or expire never ends. */
    vt__timers_add(x->t, x->deadline, fn, arg, NULL);
}

VT_TEST(an_expiry_ends_when_dispatch_adds_due_timers)
{
    readd x = {NULL, 10, 0};
    VT_CHECK_OK(vt__timers_new(&x.t, 0, readd_dispatch, &x, NULL));
    for (int i = 0; i < 200; i++)
        VT_CHECK_OK(vt__timers_add(x.t, 10, job_fn, NULL, NULL));
    VT_CHECK_EQ(vt__timers_expire(x.t, 100), 200);
    VT_CHECK_EQ(x.calls, 200);
    VT_CHECK_EQ(vt__timers_pending(x.t), 200);
    VT_CHECK_EQ(vt__timers_expire(x.t, 100), 200);
    VT_CHECK_EQ(x.calls, 400);
    vt__timers_free(x.t, NULL, NULL);
}

/* ---- Memory ------------------------------------------------------------------------------ */

VT_TEST(out_of_memory_fails_cleanly)
{
    long live0 = vt_test_alloc_live();
    rec r;
    rec_init(&r, 256, 0);
    /* Creation, both kinds: fail allocation k = 1, 2, ... until it works. */
    for (int threaded = 0; threaded <= 1; threaded++) {
        vt__timers *t = NULL;
        vt_err e;
        long k = 1;
        while ((e = (vt_test_alloc_fail_at(k),
                     vt__timers_new(&t, threaded, rec_dispatch, &r, "oom"))) != VT_OK) {
            VT_CHECK_ERR(e, VT_ENOMEM);
            VT_CHECK(t == NULL);
            VT_CHECK_EQ(vt_test_alloc_live(), live0);
            k++;
        }
        vt_test_alloc_reset();
        vt__timers_free(t, NULL, NULL);
        VT_CHECK_EQ(vt_test_alloc_live(), live0);
    }
    /* Adds that need the slab to grow. */
    vt__timers *t = new_timers(0, &r);
    VT_CHECK_NOT_NULL(t);
    size_t added = 0, failures = 0;
    for (uintptr_t i = 0; i < 200; i++) {
        vt_test_alloc_fail_at(1);
        vt_timer h = {12345};
        vt_err e = vt__timers_add(t, 1000 - (int64_t)i, job_fn, (void *)i, &h);
        vt_test_alloc_reset();
        if (e == VT_ENOMEM) {
            failures++;
            VT_CHECK_EQ(h.id, 12345); /* nothing written */
            VT_CHECK_EQ(vt__timers_pending(t), added);
            VT_CHECK_OK(vt__timers_add(t, 1000 - (int64_t)i, job_fn, (void *)i, NULL));
        } else {
            VT_CHECK_OK(e);
        }
        added++;
        VT_CHECK_EQ(vt__timers_pending(t), added);
    }
    VT_CHECK_GE(failures, 2); /* the premise: growth happened (64, 128 nodes) */
    VT_CHECK_EQ(vt__timers_expire(t, INT64_MAX), 200);
    for (size_t i = 0; i < 200; i++)
        VT_CHECK_EQ(r.args[i], 199 - i);
    vt__timers_free(t, NULL, NULL);
    VT_CHECK_EQ(vt_test_alloc_live(), live0);
    rec_free(&r);
}

/* Timers that are added and cancelled without ever firing (timeouts) must
 * not make the slab grow for ever: dead nodes are swept. */
VT_TEST(churn_of_cancelled_timers_keeps_memory_bounded)
{
    rec r;
    rec_init(&r, 1, 0);
    vt__timers *t = new_timers(0, &r);
    VT_CHECK_NOT_NULL(t);
    vt_timer *h = calloc(CHURN_N, sizeof *h);
    long live_at_10 = 0;
    for (int cycle = 0; cycle < 60; cycle++) {
        for (size_t i = 0; i < CHURN_N; i++)
            VT_CHECK_OK(vt__timers_add(t, VT_SEC(3600) + rnd(VT_SEC(3600)), job_fn, NULL, &h[i]));
        for (size_t i = 0; i < CHURN_N; i++)
            VT_CHECK_OK(vt__timers_cancel(t, h[i]));
        if (cycle == 10)
            live_at_10 = vt_test_alloc_live();
    }
    VT_CHECK_EQ(vt_test_alloc_live(), live_at_10);
    VT_CHECK_EQ(vt__timers_pending(t), 0);
    VT_CHECK_EQ(vt__timers_next_deadline(t), VT_FOREVER);
    /* Once the wheel passed them, every node is free for reuse: no growth. */
    VT_CHECK_EQ(vt__timers_expire(t, INT64_MAX), 0);
    vt_test_alloc_reset();
    for (size_t i = 0; i < CHURN_N; i++)
        VT_CHECK_OK(vt__timers_add(t, rnd(VT_SEC(3600)), job_fn, NULL, NULL));
    VT_CHECK_EQ(vt_test_alloc_count(), 0);
    VT_CHECK_EQ(vt__timers_expire(t, INT64_MAX), CHURN_N);
    vt__timers_free(t, NULL, NULL);
    free(h);
    rec_free(&r);
}

/* ---- Threaded mode -------------------------------------------------------------------------- */

static void wait_count(rec *r, size_t n)
{
    while (atomic_load_explicit(&r->count, memory_order_acquire) < n)
        vt__sleep_ns(VT_US(200));
}

typedef struct gate {
    rec r;
    _Atomic uint32_t open;
    _Atomic uint32_t entered;
} gate;

/* Holds the firing thread inside the first dispatch until the test opens
 * the gate: everything added meanwhile is then fired after, in order. */
static void gate_dispatch(void *ud, vt_job_fn fn, void *arg)
{
    gate *g = ud;
    if ((uintptr_t)arg == UINTPTR_MAX) {
        atomic_store(&g->entered, 1);
        while (!atomic_load(&g->open))
            vt__futex_wait(&g->open, 0, VT_FOREVER);
        return;
    }
    rec_dispatch(&g->r, fn, arg);
}

VT_TEST(threaded_fires_in_order_and_never_early)
{
    gate g;
    rec_init(&g.r, ORDER_N, 1);
    atomic_init(&g.open, 0);
    atomic_init(&g.entered, 0);
    vt__timers *t = NULL;
    VT_CHECK_OK(vt__timers_new(&t, 1, gate_dispatch, &g, "t-order"));
    VT_CHECK_OK(vt__timers_add(t, 0, job_fn, (void *)UINTPTR_MAX, NULL));
    while (!atomic_load(&g.entered))
        vt__sleep_ns(VT_US(100));
    tdef *d = calloc(ORDER_N, sizeof *d);
    int64_t now = vt_now_ns();
    for (size_t i = 0; i < ORDER_N; i++) {
        /* Some past, most within 30 ms, ties, one-tick crowds. */
        int64_t k = rnd(10);
        d[i].deadline = k == 0        ? now - rnd(VT_SEC(1))
                        : k == 1 && i ? d[rnd((int64_t)i)].deadline
                        : k == 2      ? now + VT_MS(5) + rnd(TICK)
                                      : now + rnd(VT_MS(30));
        d[i].start = i;
        VT_CHECK_OK(vt__timers_add(t, d[i].deadline, job_fn, (void *)(uintptr_t)i, NULL));
    }
    atomic_store(&g.open, 1);
    vt__futex_wake(&g.open, 1);
    wait_count(&g.r, ORDER_N);
    qsort(d, ORDER_N, sizeof *d, tdef_cmp);
    for (size_t i = 0; i < ORDER_N; i++) {
        VT_CHECK_EQ(g.r.args[i], d[i].start);
        VT_CHECK_GE(g.r.at[i], d[i].deadline);
    }
    /* The pending count drops after the dispatch: wait for it. */
    while (vt__timers_pending(t))
        sched_yield();
    VT_CHECK_EQ(vt__timers_fired(t), ORDER_N + 1);
    vt__timers_free(t, NULL, NULL);
    rec_free(&g.r);
    free(d);
}

VT_TEST(threaded_wakes_for_an_earlier_deadline)
{
    rec r;
    rec_init(&r, 8, 1);
    vt__timers *t = new_timers(1, &r);
    VT_CHECK_NOT_NULL(t);
    int64_t now = vt_now_ns();
    /* The thread goes to sleep for an hour ... */
    VT_CHECK_OK(vt__timers_add(t, now + VT_SEC(3600), other_fn, (void *)1, NULL));
    vt__sleep_ns(VT_MS(2));
    /* ... and must wake for these. */
    int64_t d2 = vt_now_ns() + VT_MS(3);
    VT_CHECK_OK(vt__timers_add(t, d2, job_fn, (void *)2, NULL));
    wait_count(&r, 1);
    VT_CHECK_EQ(r.args[0], 2);
    VT_CHECK_GE(r.at[0], d2);
    VT_CHECK_OK(vt__timers_add(t, 0, job_fn, (void *)3, NULL)); /* long past */
    wait_count(&r, 2);
    VT_CHECK_EQ(r.args[1], 3);
    VT_CHECK_EQ(vt__timers_pending(t), 1);
    VT_CHECK_EQ(vt__timers_next_deadline(t), now + VT_SEC(3600));
    creport c;
    memset(&c, 0, sizeof c);
    vt__timers_free(t, on_cancel, &c);
    VT_CHECK_EQ(c.n, 1);
    VT_CHECK_EQ(c.seen[1], 1);
    VT_CHECK_EQ(c.wrong_fn, 0);
    rec_free(&r);
}

VT_TEST(threaded_cancel_before_the_deadline)
{
    rec r;
    rec_init(&r, 64, 1);
    vt__timers *t = new_timers(1, &r);
    VT_CHECK_NOT_NULL(t);
    vt_timer h;
    /* Far enough that no scheduling delay lets it fire first. */
    VT_CHECK_OK(vt__timers_add(t, vt_now_ns() + VT_SEC(600), job_fn, (void *)1, &h));
    VT_CHECK_OK(vt__timers_cancel(t, h));
    VT_CHECK_OK(vt__timers_add(t, vt_now_ns() + VT_MS(1), job_fn, (void *)2, NULL));
    wait_count(&r, 1);
    VT_CHECK_EQ(r.args[0], 2);
    VT_CHECK_EQ(vt__timers_pending(t), 0);
    VT_CHECK_ERR(vt__timers_cancel(t, h), VT_ENOENT);
    vt__timers_free(t, NULL, NULL);
    VT_CHECK_EQ(r.n, 1);
    rec_free(&r);
}
