/* The monitor under load: many threads emitting while a subscriber is
 * slow at times, subscribers come and go, flushes and stats run
 * concurrently, threads are created and exit, max_pending drops, and a big
 * trace. Every check is on what was delivered, never on time. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vt_test.h"
#include "task/task_int.h"
#include "vitte/task.h"

#define THREADS 8

static int graph_a;
static int task_objs[THREADS];

static void nap_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* What a checking subscriber saw: each thread's events in order, once. */
typedef struct seen {
    uint64_t next[THREADS]; /* index expected next from each thread */
    uint64_t last_seq;
    uint64_t n;
    uint64_t bad_order, bad_seq, bad_field;
    int gaps_allowed; /* with drops: indices increase, maybe with holes */
    int slow;
} seen;

static void check_cb(void *ud, const vt_event *ev)
{
    seen *s = ud;
    if (ev->seq != s->last_seq + 1)
        s->bad_seq++;
    s->last_seq = ev->seq;
    s->n++;
    int w = ev->worker;
    if (w < 0 || w >= THREADS || ev->task != (const vt_task *)(const void *)&task_objs[w] ||
        ev->name[0] != 'w' || ev->name[1] != '0' + w || ev->name[2]) {
        s->bad_field++;
        return;
    }
    if (s->gaps_allowed ? ev->tasks < s->next[w] : ev->tasks != s->next[w])
        s->bad_order++;
    s->next[w] = ev->tasks + 1;
    if (s->slow) {
        if (ev->seq % 65536 == 0)
            nap_us(2000);
        else if (ev->seq % 4096 == 0)
            nap_us(200);
    }
}

typedef struct emitter {
    vt_monitor *m;
    int id;
    uint64_t n;
    int attach;
    pthread_t th;
} emitter;

static void *emit_main(void *arg)
{
    emitter *e = arg;
    char name[3] = {'w', (char)('0' + e->id), 0};
    if (e->attach)
        vt__monitor_attach(e->m);
    for (uint64_t j = 0; j < e->n; j++) {
        vt_event ev;
        memset(&ev, 0, sizeof ev);
        ev.kind = (vt_event_kind)(j % VT_EVENT_KINDS == VT_EV_RUN_STARTED ? VT_EV_PROGRESS
                                                                          : j % VT_EVENT_KINDS);
        ev.graph = (const vt_graph *)(const void *)&graph_a;
        ev.task = (const vt_task *)(const void *)&task_objs[e->id];
        ev.name = name;
        ev.state = VT_TASK_RUNNING;
        ev.ts_ns = vt_now_ns();
        ev.worker = e->id;
        ev.attempt = 1;
        ev.tasks = j;
        ev.msg = j % 7 ? "" : "a message that is a little longer than the others";
        vt__monitor_emit(e->m, &ev);
    }
    if (e->attach)
        vt__monitor_detach(e->m);
    return NULL;
}

static void run_emitters(vt_monitor *m, int threads, uint64_t per, int attach)
{
    emitter em[THREADS];
    for (int t = 0; t < threads; t++) {
        em[t] = (emitter){m, t, per, attach, 0};
        if (pthread_create(&em[t].th, NULL, emit_main, &em[t]))
            abort();
    }
    for (int t = 0; t < threads; t++)
        pthread_join(em[t].th, NULL);
}

/* 8 threads x 100k events, a subscriber slow now and then: each delivered
 * once, in its thread's order, seqs dense, counters exact. With runs
 * attached (the monitor polls) and without (emitters wake it). */
VT_TEST(eight_threads_slow_subscriber)
{
    uint64_t per = 100000 * (uint64_t)vt_test_stress();
    for (int attach = 0; attach < 2; attach++) {
        vt_monitor *m;
        VT_CHECK_OK(vt_monitor_new(&m, NULL));
        seen s;
        memset(&s, 0, sizeof s);
        s.slow = 1;
        VT_CHECK_OK(vt_monitor_subscribe(m, check_cb, &s));
        run_emitters(m, THREADS, per, attach);
        VT_CHECK_OK(vt_monitor_flush(m, VT_FOREVER));
        VT_CHECK_EQ(s.n, per * THREADS);
        VT_CHECK_EQ(s.bad_seq, 0);
        VT_CHECK_EQ(s.bad_order, 0);
        VT_CHECK_EQ(s.bad_field, 0);
        for (int t = 0; t < THREADS; t++)
            VT_CHECK_EQ(s.next[t], per);
        vt_monitor_stats st;
        VT_CHECK_OK(vt_monitor_stats_get(m, &st));
        uint64_t total = 0;
        for (int k = 0; k < VT_EVENT_KINDS; k++)
            total += st.events[k];
        VT_CHECK_EQ(total, per * THREADS);
        VT_CHECK_EQ(st.dropped, 0);
        VT_CHECK_EQ(st.events[VT_EV_RUN_STARTED], 0);
        vt_monitor_free(m);
    }
}

/* ---- Subscribers that come and go -------------------------------------------------------------
 */

typedef struct churn_sub {
    uint64_t first, last, n, gaps;
    _Atomic int unsubscribed;
    _Atomic long late_calls;
} churn_sub;

static void churn_cb(void *ud, const vt_event *ev)
{
    churn_sub *c = ud;
    if (atomic_load(&c->unsubscribed))
        atomic_fetch_add(&c->late_calls, 1);
    if (c->n && ev->seq != c->last + 1)
        c->gaps++;
    if (!c->n)
        c->first = ev->seq;
    c->last = ev->seq;
    c->n++;
}

typedef struct churner {
    vt_monitor *m;
    _Atomic int *stop;
    uint64_t rounds, gaps, late, errors;
    uint64_t rng;
    pthread_t th;
} churner;

static void *churn_main(void *arg)
{
    churner *c = arg;
    while (!atomic_load(c->stop)) {
        churn_sub *s = calloc(1, sizeof *s);
        if (!s)
            abort();
        if (vt_monitor_subscribe(c->m, churn_cb, s) != VT_OK)
            c->errors++;
        nap_us((long)(vt__rand_next(&c->rng) % 500));
        if (vt_monitor_unsubscribe(c->m, churn_cb, s) != VT_OK)
            c->errors++;
        atomic_store(&s->unsubscribed, 1);
        /* The monitor keeps running: anything called now is a bug. */
        nap_us((long)(vt__rand_next(&c->rng) % 200));
        c->gaps += s->gaps;
        c->late += (uint64_t)atomic_load(&s->late_calls);
        free(s);
        c->rounds++;
    }
    return NULL;
}

typedef struct poker {
    vt_monitor *m;
    _Atomic int *stop;
    uint64_t flushes, errors;
    pthread_t th;
} poker;

static void *poke_main(void *arg)
{
    poker *p = arg;
    while (!atomic_load(p->stop)) {
        if (vt_monitor_flush(p->m, VT_FOREVER) != VT_OK)
            p->errors++;
        vt_monitor_stats st;
        if (vt_monitor_stats_get(p->m, &st) != VT_OK)
            p->errors++;
        p->flushes++;
    }
    return NULL;
}

VT_TEST(subscribers_come_and_go)
{
    vt_monitor *m;
    VT_CHECK_OK(vt_monitor_new(&m, NULL));
    seen s;
    memset(&s, 0, sizeof s);
    VT_CHECK_OK(vt_monitor_subscribe(m, check_cb, &s));
    _Atomic int stop = 0;
    churner ch[2];
    poker pk[2];
    for (int i = 0; i < 2; i++) {
        ch[i] = (churner){m, &stop, 0, 0, 0, 0, vt_test_rand(), 0};
        pk[i] = (poker){m, &stop, 0, 0, 0};
        VT_CHECK_EQ(pthread_create(&ch[i].th, NULL, churn_main, &ch[i]), 0);
        VT_CHECK_EQ(pthread_create(&pk[i].th, NULL, poke_main, &pk[i]), 0);
    }
    uint64_t per = 50000 * (uint64_t)vt_test_stress();
    run_emitters(m, 4, per, 1);
    atomic_store(&stop, 1);
    for (int i = 0; i < 2; i++) {
        pthread_join(ch[i].th, NULL);
        pthread_join(pk[i].th, NULL);
        VT_CHECK_EQ(ch[i].errors, 0);
        VT_CHECK_EQ(ch[i].gaps, 0);
        VT_CHECK_EQ(ch[i].late, 0);
        VT_CHECK_GT(ch[i].rounds, 0);
        VT_CHECK_EQ(pk[i].errors, 0);
    }
    VT_CHECK_OK(vt_monitor_flush(m, VT_FOREVER));
    VT_CHECK_EQ(s.n, per * 4);
    VT_CHECK_EQ(s.bad_seq, 0);
    VT_CHECK_EQ(s.bad_order, 0);
    vt_monitor_free(m);
}

/* ---- Threads that come and go
 * -------------------------------------------------------------------- */

VT_TEST(short_lived_threads)
{
    vt_monitor *m;
    VT_CHECK_OK(vt_monitor_new(&m, NULL));
    _Atomic int stop = 0;
    poker pk = {m, &stop, 0, 0, 0};
    VT_CHECK_EQ(pthread_create(&pk.th, NULL, poke_main, &pk), 0);
    _Atomic long n = 0;
    long rounds = 100 * (long)vt_test_stress();
    for (long r = 0; r < rounds; r++) {
        seen s;
        memset(&s, 0, sizeof s);
        VT_CHECK_OK(vt_monitor_subscribe(m, check_cb, &s));
        run_emitters(m, 4, 500, (int)(r & 1));
        VT_CHECK_OK(vt_monitor_flush(m, VT_FOREVER));
        VT_CHECK_OK(vt_monitor_unsubscribe(m, check_cb, &s));
        VT_CHECK_EQ(s.n, 2000);
        VT_CHECK_EQ(s.bad_order, 0);
        n += (long)s.n;
    }
    atomic_store(&stop, 1);
    pthread_join(pk.th, NULL);
    VT_CHECK_EQ(pk.errors, 0);
    vt_monitor_stats st;
    VT_CHECK_OK(vt_monitor_stats_get(m, &st));
    uint64_t total = 0;
    for (int k = 0; k < VT_EVENT_KINDS; k++)
        total += st.events[k];
    VT_CHECK_EQ(total, (uint64_t)n);
    vt_monitor_free(m);
}

/* ---- Drops --------------------------------------------------------------------------------------
 */

VT_TEST(drops_under_load)
{
    vt_monitor_opts o = {0, 1000};
    vt_monitor *m;
    VT_CHECK_OK(vt_monitor_new(&m, &o));
    seen s;
    memset(&s, 0, sizeof s);
    s.gaps_allowed = 1;
    s.slow = 1;
    VT_CHECK_OK(vt_monitor_subscribe(m, check_cb, &s));
    uint64_t per = 20000 * (uint64_t)vt_test_stress();
    run_emitters(m, THREADS, per, 1);
    VT_CHECK_OK(vt_monitor_flush(m, VT_FOREVER));
    vt_monitor_stats st;
    VT_CHECK_OK(vt_monitor_stats_get(m, &st));
    VT_CHECK_EQ(s.n + st.dropped, per * THREADS);
    VT_CHECK_EQ(s.bad_order, 0);
    VT_CHECK_EQ(s.bad_seq, 0);
    VT_CHECK_EQ(s.bad_field, 0);
    vt_monitor_free(m);
}

/* ---- A big trace
 * ----------------------------------------------------------------------------------- */

static void *span_main(void *arg)
{
    emitter *e = arg;
    char name[3] = {'w', (char)('0' + e->id), 0};
    for (uint64_t j = 0; j < e->n; j++) {
        vt_event ev;
        memset(&ev, 0, sizeof ev);
        ev.kind = VT_EV_STARTED;
        ev.graph = (const vt_graph *)(const void *)&graph_a;
        ev.task = (const vt_task *)(const void *)&task_objs[e->id];
        ev.name = name;
        ev.state = VT_TASK_RUNNING;
        ev.ts_ns = vt_now_ns();
        ev.worker = e->id;
        ev.attempt = (unsigned)(j + 1);
        ev.msg = "";
        vt__monitor_emit(e->m, &ev);
        ev.kind = j % 3 ? VT_EV_FINISHED : VT_EV_RETRIED;
        ev.state = j % 3 ? VT_TASK_SUCCEEDED : VT_TASK_PENDING;
        ev.ts_ns = vt_now_ns();
        vt__monitor_emit(e->m, &ev);
    }
    return NULL;
}

VT_TEST(big_trace)
{
    vt_monitor_opts o = {1, 0};
    vt_monitor *m;
    VT_CHECK_OK(vt_monitor_new(&m, &o));
    uint64_t per = 10000 * (uint64_t)vt_test_stress();
    emitter em[4];
    for (int t = 0; t < 4; t++) {
        em[t] = (emitter){m, t, per, 1, 0};
        VT_CHECK_EQ(pthread_create(&em[t].th, NULL, span_main, &em[t]), 0);
    }
    for (int t = 0; t < 4; t++)
        pthread_join(em[t].th, NULL);
    FILE *f = tmpfile();
    VT_CHECK_NOT_NULL(f);
    VT_CHECK_OK(vt_monitor_write_trace(m, f));
    rewind(f);
    json_error_t jerr;
    json_t *root = json_loadf(f, 0, &jerr);
    fclose(f);
    VT_CHECK_NOT_NULL(root);
    json_t *evs = json_object_get(root, "traceEvents");
    uint64_t spans = 0, instants = 0;
    for (size_t i = 0; i < json_array_size(evs); i++) {
        const char *ph = json_string_value(json_object_get(json_array_get(evs, i), "ph"));
        spans += ph && !strcmp(ph, "X");
        instants += ph && !strcmp(ph, "i");
    }
    json_decref(root);
    VT_CHECK_EQ(spans, per * 4);
    VT_CHECK_EQ(instants, 4 * ((per + 2) / 3));
    vt_monitor_stats st;
    VT_CHECK_OK(vt_monitor_stats_get(m, &st));
    VT_CHECK_EQ(st.attempts.count, per * 4);
    vt_monitor_free(m);
}
