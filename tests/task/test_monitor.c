/* The monitor on its own: events emitted with vt__monitor_emit from one or
 * several threads (fake graphs and tasks: addresses of static objects, which
 * the monitor never dereferences) are delivered once each, in time order,
 * with dense seqs; the counters and duration statistics of a scripted run;
 * drops beyond max_pending; subscribe, unsubscribe and flush semantics,
 * from callbacks too; free delivering what is pending; the trace parsed
 * with jansson. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vt_test.h"
#include "task/task_int.h"
#include "vitte/task.h"

/* Fake identities. */
static int graph_a, graph_b;
static int task_objs[64];
#define G(x) ((const vt_graph *)(const void *)&(x))
#define T(i) ((const vt_task *)(const void *)&task_objs[i])

static void nap_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* Polls until *flag != 0 or 30 s pass (a bug fails the test instead of
 * hanging it); returns the flag. */
static int wait_flag(_Atomic int *flag)
{
    int64_t give_up = vt_deadline_after(VT_SEC(30));
    int v;
    while (!(v = atomic_load(flag)) && vt_now_ns() < give_up)
        nap_us(100);
    return v;
}

static vt_event mk(vt_event_kind kind, const vt_graph *g, const vt_task *t, const char *name,
                   vt_task_state st, int64_t ts)
{
    vt_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = kind;
    ev.graph = g;
    ev.task = t;
    ev.name = name;
    ev.state = st;
    ev.ts_ns = ts;
    ev.attempt = t ? 1 : 0;
    ev.msg = "";
    return ev;
}

/* ---- A subscriber that keeps copies of what it gets ------------------------------------ */

typedef struct gev {
    vt_event ev;
    char *name, *msg;
} gev;

typedef struct got {
    gev *v;
    size_t n, cap;
} got;

static void collect(void *ud, const vt_event *ev)
{
    got *g = ud;
    if (g->n == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 256;
        g->v = realloc(g->v, g->cap * sizeof *g->v);
        if (!g->v)
            abort();
    }
    gev *e = &g->v[g->n++];
    e->ev = *ev;
    e->name = strdup(ev->name);
    e->msg = strdup(ev->msg);
}

static void got_free(got *g)
{
    for (size_t i = 0; i < g->n; i++) {
        free(g->v[i].name);
        free(g->v[i].msg);
    }
    free(g->v);
    memset(g, 0, sizeof *g);
}

static void count_cb(void *ud, const vt_event *ev)
{
    (void)ev;
    atomic_fetch_add((_Atomic long *)ud, 1);
}

/* Blocks the monitor thread in the callback of the first event until
 * released: events emitted meanwhile pile up. */
typedef struct gate {
    _Atomic int entered, release;
} gate;

static void gate_cb(void *ud, const vt_event *ev)
{
    gate *g = ud;
    if (ev->seq != 1)
        return;
    atomic_store(&g->entered, 1);
    wait_flag(&g->release);
}

static vt_monitor *new_mon(int record, size_t max_pending)
{
    vt_monitor_opts o = {record, max_pending};
    vt_monitor *m = NULL;
    if (vt_monitor_new(&m, &o) != VT_OK)
        return NULL;
    return m;
}

/* ---- Basics ----------------------------------------------------------------------------- */

VT_TEST(kind_names)
{
    static const char *want[VT_EVENT_KINDS] = {"run_started", "queued",      "started", "finished",
                                               "retried",     "cancelled",   "timeout", "progress",
                                               "log",         "run_finished"};
    for (int k = 0; k < VT_EVENT_KINDS; k++)
        VT_CHECK_STR_EQ(vt_event_kind_name((vt_event_kind)k), want[k]);
    VT_CHECK_STR_EQ(vt_event_kind_name((vt_event_kind)VT_EVENT_KINDS), "?");
    VT_CHECK_STR_EQ(vt_event_kind_name((vt_event_kind)-1), "?");
}

static void nop_cb(void *ud, const vt_event *ev)
{
    (void)ud;
    (void)ev;
}

VT_TEST(bad_arguments)
{
    VT_CHECK_ERR(vt_monitor_new(NULL, NULL), VT_EINVAL);
    vt_monitor *m = (vt_monitor *)&graph_a;
    vt_monitor_opts bad = {2, 0};
    VT_CHECK_ERR(vt_monitor_new(&m, &bad), VT_EINVAL);
    VT_CHECK_NULL(m);
    vt_monitor_free(NULL);

    VT_CHECK_OK(vt_monitor_new(&m, NULL));
    vt_monitor_stats st;
    VT_CHECK_ERR(vt_monitor_subscribe(NULL, nop_cb, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_monitor_subscribe(m, NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_monitor_unsubscribe(NULL, nop_cb, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_monitor_unsubscribe(m, NULL, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_monitor_flush(NULL, VT_FOREVER), VT_EINVAL);
    VT_CHECK_ERR(vt_monitor_stats_get(NULL, &st), VT_EINVAL);
    VT_CHECK_ERR(vt_monitor_stats_get(m, NULL), VT_EINVAL);
    VT_CHECK_ERR(vt_monitor_write_trace(NULL, stdout), VT_EINVAL);
    VT_CHECK_ERR(vt_monitor_write_trace(m, NULL), VT_EINVAL);
    /* Not recording. */
    VT_CHECK_ERR(vt_monitor_write_trace(m, stdout), VT_ESTATE);

    VT_CHECK_ERR(vt_monitor_unsubscribe(m, nop_cb, NULL), VT_ENOENT);
    VT_CHECK_OK(vt_monitor_subscribe(m, nop_cb, NULL));
    VT_CHECK_ERR(vt_monitor_subscribe(m, nop_cb, NULL), VT_EEXIST);
    VT_CHECK_OK(vt_monitor_subscribe(m, nop_cb, &graph_a)); /* another ud */
    VT_CHECK_OK(vt_monitor_unsubscribe(m, nop_cb, NULL));
    VT_CHECK_ERR(vt_monitor_unsubscribe(m, nop_cb, NULL), VT_ENOENT);
    VT_CHECK_OK(vt_monitor_unsubscribe(m, nop_cb, &graph_a));

    /* Empty monitor: stats all zero, flush returns. */
    VT_CHECK_OK(vt_monitor_flush(m, VT_FOREVER));
    VT_CHECK_OK(vt_monitor_stats_get(m, &st));
    for (int i = 0; i < VT_TASK_STATES; i++)
        VT_CHECK_EQ(st.by_state[i], 0);
    VT_CHECK_EQ(st.attempts.count, 0);
    VT_CHECK_EQ(st.dropped, 0);
    vt__monitor_emit(NULL, NULL); /* ignored */
    vt__monitor_emit(m, NULL);
    vt_monitor_free(m);
}

/* Every field reaches the subscriber; name and msg are copies (the
 * emitter's buffers are reused at once). */
VT_TEST(fields_and_order_one_thread)
{
    vt_monitor *m = new_mon(0, 0);
    VT_CHECK_NOT_NULL(m);
    got g = {0};
    VT_CHECK_OK(vt_monitor_subscribe(m, collect, &g));
    enum {
        N = 3000
    };
    for (int i = 0; i < N; i++) {
        char name[32], msg[64];
        snprintf(name, sizeof name, "t%d", i);
        snprintf(msg, sizeof msg, "message %d", i);
        vt_event ev = mk((vt_event_kind)(i % VT_EVENT_KINDS), G(graph_a), T(i % 64), name,
                         (vt_task_state)(i % VT_TASK_STATES), 1000 + i);
        ev.worker = i % 5 - 1;
        ev.attempt = (unsigned)i;
        ev.err = (vt_err)(i % 3);
        ev.progress = i / (double)N;
        ev.delay_ns = 7 * i;
        ev.level = (vt_log_level)(i % 5);
        ev.msg = msg;
        ev.tasks = (uint64_t)i * 11;
        ev.seq = 999; /* ignored */
        vt__monitor_emit(m, &ev);
        memset(name, 'x', sizeof name - 1);
        memset(msg, 'y', sizeof msg - 1);
    }
    VT_CHECK_OK(vt_monitor_flush(m, VT_FOREVER));
    VT_CHECK_EQ(g.n, N);
    for (int i = 0; i < N; i++) {
        const vt_event *e = &g.v[i].ev;
        char name[32], msg[64];
        snprintf(name, sizeof name, "t%d", i);
        snprintf(msg, sizeof msg, "message %d", i);
        VT_CHECK_EQ(e->seq, (uint64_t)i + 1);
        VT_CHECK_EQ(e->ts_ns, 1000 + i);
        VT_CHECK_EQ(e->kind, i % VT_EVENT_KINDS);
        VT_CHECK_EQ(e->state, i % VT_TASK_STATES);
        VT_CHECK_PTR_EQ(e->graph, G(graph_a));
        VT_CHECK_PTR_EQ(e->task, T(i % 64));
        VT_CHECK_STR_EQ(g.v[i].name, name);
        VT_CHECK_STR_EQ(g.v[i].msg, msg);
        VT_CHECK_EQ(e->worker, i % 5 - 1);
        VT_CHECK_EQ(e->attempt, (unsigned)i);
        VT_CHECK_EQ(e->err, i % 3);
        VT_CHECK(e->progress == i / (double)N);
        VT_CHECK_EQ(e->delay_ns, 7 * i);
        VT_CHECK_EQ(e->level, i % 5);
        VT_CHECK_EQ(e->tasks, (uint64_t)i * 11);
    }
    vt_monitor_stats st;
    VT_CHECK_OK(vt_monitor_stats_get(m, &st));
    for (int k = 0; k < VT_EVENT_KINDS; k++)
        VT_CHECK_EQ(st.events[k], (N + VT_EVENT_KINDS - 1 - k) / VT_EVENT_KINDS);
    vt_monitor_free(m);
    got_free(&g);
}

/* NULL name and msg arrive as "". A message bigger than a buffer's chunk
 * goes through whole. */
VT_TEST(null_strings_and_huge_message)
{
    vt_monitor *m = new_mon(1, 0);
    VT_CHECK_NOT_NULL(m);
    got g = {0};
    VT_CHECK_OK(vt_monitor_subscribe(m, collect, &g));
    vt_event ev = mk(VT_EV_LOG, G(graph_a), T(0), NULL, VT_TASK_RUNNING, 5);
    ev.msg = NULL;
    vt__monitor_emit(m, &ev);
    size_t big = 300 * 1000;
    char *msg = malloc(big + 1);
    VT_CHECK_NOT_NULL(msg);
    for (size_t i = 0; i < big; i++)
        msg[i] = (char)('a' + i % 26);
    msg[big] = '\0';
    ev = mk(VT_EV_LOG, G(graph_a), T(0), "big", VT_TASK_RUNNING, 6);
    ev.msg = msg;
    vt__monitor_emit(m, &ev);
    ev = mk(VT_EV_LOG, G(graph_a), T(0), "after", VT_TASK_RUNNING, 7);
    vt__monitor_emit(m, &ev);
    VT_CHECK_OK(vt_monitor_flush(m, VT_FOREVER));
    VT_CHECK_EQ(g.n, 3);
    VT_CHECK_STR_EQ(g.v[0].name, "");
    VT_CHECK_STR_EQ(g.v[0].msg, "");
    VT_CHECK_STR_EQ(g.v[1].name, "big");
    VT_CHECK(strcmp(g.v[1].msg, msg) == 0);
    VT_CHECK_STR_EQ(g.v[2].name, "after");
    /* The trace keeps it too. */
    FILE *f = tmpfile();
    VT_CHECK_NOT_NULL(f);
    VT_CHECK_OK(vt_monitor_write_trace(m, f));
    rewind(f);
    json_error_t jerr;
    json_t *root = json_loadf(f, 0, &jerr);
    fclose(f);
    VT_CHECK_NOT_NULL(root);
    json_t *evs = json_object_get(root, "traceEvents");
    int found = 0;
    for (size_t i = 0; i < json_array_size(evs); i++) {
        json_t *e = json_array_get(evs, i);
        json_t *a = json_object_get(e, "args");
        const char *s = json_string_value(json_object_get(a, "msg"));
        if (s && strcmp(s, msg) == 0)
            found++;
    }
    json_decref(root);
    free(msg);
    VT_CHECK_EQ(found, 1);
    vt_monitor_free(m);
    got_free(&g);
}

/* ---- Several threads -------------------------------------------------------------------- */

typedef struct emitter {
    vt_monitor *m;
    int id;
    int n;
    int64_t ts0, step; /* ts = ts0 + j * step; step 0: vt_now_ns() */
    pthread_t th;
} emitter;

static void *emit_main(void *arg)
{
    emitter *e = arg;
    for (int j = 0; j < e->n; j++) {
        vt_event ev = mk(VT_EV_PROGRESS, G(graph_a), T(e->id), "w", VT_TASK_RUNNING,
                         e->step ? e->ts0 + j * e->step : vt_now_ns());
        ev.worker = e->id;
        ev.tasks = (uint64_t)j;
        vt__monitor_emit(e->m, &ev);
    }
    return NULL;
}

/* Each event once, each thread's in its order, seqs 1..N. */
static void check_exactly_once(const got *g, int threads, int per)
{
    VT_CHECK_EQ(g->n, (size_t)threads * per);
    int next[8] = {0};
    for (size_t i = 0; i < g->n; i++) {
        const vt_event *e = &g->v[i].ev;
        VT_CHECK_EQ(e->seq, i + 1);
        VT_CHECK(e->worker >= 0 && e->worker < threads);
        VT_CHECK_EQ(e->tasks, (uint64_t)next[e->worker]);
        next[e->worker]++;
    }
    for (int t = 0; t < threads; t++)
        VT_CHECK_EQ(next[t], per);
}

VT_TEST(threads_exactly_once_in_thread_order)
{
    for (int threads = 1; threads <= 8; threads *= 2) {
        vt_monitor *m = new_mon(0, 0);
        VT_CHECK_NOT_NULL(m);
        got g = {0};
        VT_CHECK_OK(vt_monitor_subscribe(m, collect, &g));
        emitter em[8];
        int per = 20000 / threads;
        for (int t = 0; t < threads; t++) {
            em[t] = (emitter){m, t, per, 0, 0, 0};
            VT_CHECK_EQ(pthread_create(&em[t].th, NULL, emit_main, &em[t]), 0);
        }
        for (int t = 0; t < threads; t++)
            pthread_join(em[t].th, NULL);
        VT_CHECK_OK(vt_monitor_flush(m, VT_FOREVER));
        check_exactly_once(&g, threads, per);
        vt_monitor_stats st;
        VT_CHECK_OK(vt_monitor_stats_get(m, &st));
        VT_CHECK_EQ(st.events[VT_EV_PROGRESS], (uint64_t)threads * per);
        VT_CHECK_EQ(st.dropped, 0);
        vt_monitor_free(m);
        got_free(&g);
    }
}

/* Events that are all buffered when the monitor looks are delivered in
 * timestamp order (ties: each thread's own order): the monitor is held in
 * a callback while the threads emit interleaved, partly equal times. */
VT_TEST(merge_by_timestamp)
{
    for (int threads = 2; threads <= 8; threads *= 2) {
        vt_monitor *m = new_mon(0, 0);
        VT_CHECK_NOT_NULL(m);
        gate gt = {0, 0};
        got g = {0};
        VT_CHECK_OK(vt_monitor_subscribe(m, gate_cb, &gt));
        VT_CHECK_OK(vt_monitor_subscribe(m, collect, &g));
        vt_event ev = mk(VT_EV_LOG, G(graph_b), NULL, "", VT_TASK_PENDING, 0);
        ev.worker = -1;
        vt__monitor_emit(m, &ev);
        VT_CHECK(wait_flag(&gt.entered));
        emitter em[8];
        int per = 3000;
        for (int t = 0; t < threads; t++) {
            /* Thread t: 10 + 3j + t%3 (ties between threads t and t+3),
             * and every tenth event repeats the previous time. */
            em[t] = (emitter){m, t, per, 10 + t % 3, 3, 0};
            VT_CHECK_EQ(pthread_create(&em[t].th, NULL, emit_main, &em[t]), 0);
        }
        for (int t = 0; t < threads; t++)
            pthread_join(em[t].th, NULL);
        atomic_store(&gt.release, 1);
        VT_CHECK_OK(vt_monitor_flush(m, VT_FOREVER));
        VT_CHECK_EQ(g.n, (size_t)threads * per + 1);
        int next[8] = {0};
        for (size_t i = 1; i < g.n; i++) {
            const vt_event *e = &g.v[i].ev;
            VT_CHECK_GE(e->ts_ns, g.v[i - 1].ev.ts_ns);
            VT_CHECK_EQ(e->tasks, (uint64_t)next[e->worker]);
            next[e->worker]++;
            VT_CHECK_EQ(e->seq, i + 1);
        }
        vt_monitor_free(m);
        got_free(&g);
    }
}

/* ---- Counters --------------------------------------------------------------------------- */

static void send(vt_monitor *m, vt_event_kind kind, int task, const char *name, vt_task_state st,
                 int64_t ts, unsigned attempt)
{
    vt_event ev = mk(kind, G(graph_a), task < 0 ? NULL : T(task), name, st, ts);
    ev.attempt = attempt;
    vt__monitor_emit(m, &ev);
}

static void check_states(vt_monitor *m, const uint64_t want[VT_TASK_STATES])
{
    vt_monitor_stats st;
    VT_CHECK_OK(vt_monitor_flush(m, VT_FOREVER));
    VT_CHECK_OK(vt_monitor_stats_get(m, &st));
    for (int s = 0; s < VT_TASK_STATES; s++)
        VT_CHECK_EQ(st.by_state[s], want[s]);
}

/* |got - want| within the histogram's precision (1/256 of the value). */
#define CHECK_NEAR(got, want) \
    VT_CHECK_LE(llabs((long long)(got) - (long long)(want)), (long long)(want) / 256 + 1)

VT_TEST(counters_and_durations)
{
    vt_monitor *m = new_mon(0, 0);
    VT_CHECK_NOT_NULL(m);
    /* A run of 4 tasks a, b, c, d. */
    vt_event ev = mk(VT_EV_RUN_STARTED, G(graph_a), NULL, "", VT_TASK_PENDING, 0);
    ev.tasks = 4;
    ev.msg = "run-1";
    vt__monitor_emit(m, &ev);
    check_states(m, (uint64_t[]){4, 0, 0, 0, 0, 0, 0});
    vt_monitor_stats st;
    VT_CHECK_OK(vt_monitor_stats_get(m, &st));
    VT_CHECK_EQ(st.runs_active, 1);

    send(m, VT_EV_QUEUED, 0, "a", VT_TASK_READY, 10, 0);
    send(m, VT_EV_QUEUED, 1, "b", VT_TASK_READY, 10, 0);
    check_states(m, (uint64_t[]){2, 2, 0, 0, 0, 0, 0});
    send(m, VT_EV_STARTED, 0, "a", VT_TASK_RUNNING, 100, 1);
    send(m, VT_EV_STARTED, 1, "b", VT_TASK_RUNNING, 200, 1);
    send(m, VT_EV_PROGRESS, 0, "a", VT_TASK_RUNNING, 220, 1);
    check_states(m, (uint64_t[]){2, 0, 2, 0, 0, 0, 0});
    /* a: one attempt of 250 ns. */
    send(m, VT_EV_FINISHED, 0, "a", VT_TASK_SUCCEEDED, 350, 1);
    /* b: attempt 1 retried after 300 ns, attempt 2 times out then fails
     * at 1000 (400 ns). */
    send(m, VT_EV_RETRIED, 1, "b", VT_TASK_PENDING, 500, 1);
    check_states(m, (uint64_t[]){3, 0, 0, 1, 0, 0, 0});
    send(m, VT_EV_QUEUED, 1, "b", VT_TASK_READY, 550, 0);
    send(m, VT_EV_STARTED, 1, "b", VT_TASK_RUNNING, 600, 2);
    send(m, VT_EV_TIMEOUT, 1, "b", VT_TASK_RUNNING, 700, 2);
    send(m, VT_EV_LOG, 1, "b", VT_TASK_RUNNING, 800, 2);
    send(m, VT_EV_FINISHED, 1, "b", VT_TASK_FAILED, 1000, 2);
    /* c: skipped, never ran. A subtask of a, not in the run's count, runs. */
    send(m, VT_EV_FINISHED, 2, "c", VT_TASK_SKIPPED, 1100, 0);
    send(m, VT_EV_QUEUED, 10, "a/sub", VT_TASK_READY, 1200, 0);
    send(m, VT_EV_STARTED, 10, "a/sub", VT_TASK_RUNNING, 1300, 1);
    check_states(m, (uint64_t[]){1, 0, 1, 1, 1, 0, 1});
    /* A cancellation of the run: no task moves. */
    send(m, VT_EV_CANCELLED, -1, "", VT_TASK_PENDING, 1400, 0);
    send(m, VT_EV_FINISHED, 10, "a/sub", VT_TASK_CANCELLED, 1500, 1); /* 200 ns */
    send(m, VT_EV_FINISHED, 3, "d", VT_TASK_CANCELLED, 1600, 0);
    check_states(m, (uint64_t[]){0, 0, 0, 1, 1, 2, 1});

    VT_CHECK_OK(vt_monitor_stats_get(m, &st));
    VT_CHECK_EQ(st.runs_active, 1);
    VT_CHECK_EQ(st.events[VT_EV_RUN_STARTED], 1);
    VT_CHECK_EQ(st.events[VT_EV_QUEUED], 4);
    VT_CHECK_EQ(st.events[VT_EV_STARTED], 4);
    VT_CHECK_EQ(st.events[VT_EV_FINISHED], 5);
    VT_CHECK_EQ(st.events[VT_EV_RETRIED], 1);
    VT_CHECK_EQ(st.events[VT_EV_TIMEOUT], 1);
    VT_CHECK_EQ(st.events[VT_EV_CANCELLED], 1);
    VT_CHECK_EQ(st.events[VT_EV_PROGRESS], 1);
    VT_CHECK_EQ(st.events[VT_EV_LOG], 1);
    VT_CHECK_EQ(st.events[VT_EV_RUN_FINISHED], 0);
    /* Attempts: 250, 300, 400, 200. */
    VT_CHECK_EQ(st.attempts.count, 4);
    VT_CHECK_EQ(st.attempts.min_ns, 200);
    VT_CHECK_EQ(st.attempts.max_ns, 400);
    VT_CHECK_EQ(st.attempts.mean_ns, 288); /* 1150 / 4 = 287.5, rounded */
    CHECK_NEAR(st.attempts.p50_ns, 250);
    CHECK_NEAR(st.attempts.p90_ns, 400);
    CHECK_NEAR(st.attempts.p99_ns, 400);
    VT_CHECK_EQ(st.dropped, 0);

    ev = mk(VT_EV_RUN_FINISHED, G(graph_a), NULL, "", VT_TASK_PENDING, 2000);
    ev.tasks = 5;
    ev.err = VT_EFAILED;
    vt__monitor_emit(m, &ev);
    check_states(m, (uint64_t[]){0, 0, 0, 0, 0, 0, 0});
    VT_CHECK_OK(vt_monitor_stats_get(m, &st));
    VT_CHECK_EQ(st.runs_active, 0);
    VT_CHECK_EQ(st.events[VT_EV_RUN_FINISHED], 1);
    VT_CHECK_EQ(st.attempts.count, 4);

    /* A second run of the same graph; tasks never heard of leave the count
     * at its end. Two runs at once add up. */
    ev = mk(VT_EV_RUN_STARTED, G(graph_a), NULL, "", VT_TASK_PENDING, 3000);
    ev.tasks = 3;
    vt__monitor_emit(m, &ev);
    ev.graph = G(graph_b);
    ev.tasks = 2;
    vt__monitor_emit(m, &ev);
    send(m, VT_EV_QUEUED, 0, "a", VT_TASK_READY, 3010, 0);
    check_states(m, (uint64_t[]){4, 1, 0, 0, 0, 0, 0});
    VT_CHECK_OK(vt_monitor_stats_get(m, &st));
    VT_CHECK_EQ(st.runs_active, 2);
    ev = mk(VT_EV_RUN_FINISHED, G(graph_a), NULL, "", VT_TASK_PENDING, 3100);
    vt__monitor_emit(m, &ev);
    check_states(m, (uint64_t[]){2, 0, 0, 0, 0, 0, 0});
    ev.graph = G(graph_b);
    vt__monitor_emit(m, &ev);
    check_states(m, (uint64_t[]){0, 0, 0, 0, 0, 0, 0});
    VT_CHECK_OK(vt_monitor_stats_get(m, &st));
    VT_CHECK_EQ(st.runs_active, 0);
    vt_monitor_free(m);
}

/* Quantiles over many values stay within the stated precision. */
VT_TEST(duration_quantiles)
{
    vt_monitor *m = new_mon(0, 0);
    VT_CHECK_NOT_NULL(m);
    enum {
        N = 1000
    };
    /* Durations 1000, 2000, ..., N * 1000 ns (shuffled order of tasks). */
    int64_t ts = 0;
    for (int i = 0; i < N; i++) {
        int d = (i * 7919) % N + 1;
        vt_event ev = mk(VT_EV_STARTED, G(graph_b), T(i % 64), "q", VT_TASK_RUNNING, ts);
        ev.attempt = (unsigned)(i / 64 + 1);
        vt__monitor_emit(m, &ev);
        ev.kind = VT_EV_FINISHED;
        ev.state = VT_TASK_SUCCEEDED;
        ev.ts_ns = ts + d * 1000;
        vt__monitor_emit(m, &ev);
        ts += d * 1000;
    }
    VT_CHECK_OK(vt_monitor_flush(m, VT_FOREVER));
    vt_monitor_stats st;
    VT_CHECK_OK(vt_monitor_stats_get(m, &st));
    VT_CHECK_EQ(st.attempts.count, N);
    VT_CHECK_EQ(st.attempts.min_ns, 1000);
    VT_CHECK_EQ(st.attempts.max_ns, N * 1000);
    VT_CHECK_EQ(st.attempts.mean_ns, (N + 1) * 500);
    CHECK_NEAR(st.attempts.p50_ns, 500 * 1000);
    CHECK_NEAR(st.attempts.p90_ns, 900 * 1000);
    CHECK_NEAR(st.attempts.p99_ns, 990 * 1000);
    vt_monitor_free(m);
}

/* ---- Dropping ---------------------------------------------------------------------------- */

VT_TEST(drops_beyond_max_pending)
{
    vt_monitor *m = new_mon(0, 100);
    VT_CHECK_NOT_NULL(m);
    gate gt = {0, 0};
    _Atomic long n = 0;
    VT_CHECK_OK(vt_monitor_subscribe(m, gate_cb, &gt));
    VT_CHECK_OK(vt_monitor_subscribe(m, count_cb, (void *)&n));
    vt_event ev = mk(VT_EV_LOG, G(graph_a), T(0), "x", VT_TASK_RUNNING, 1);
    vt__monitor_emit(m, &ev);
    VT_CHECK(wait_flag(&gt.entered));
    /* The first event is still being delivered: 99 more fit, 51 do not. */
    for (int i = 0; i < 150; i++)
        vt__monitor_emit(m, &ev);
    vt_monitor_stats st;
    VT_CHECK_OK(vt_monitor_stats_get(m, &st));
    VT_CHECK_EQ(st.dropped, 51);
    atomic_store(&gt.release, 1);
    VT_CHECK_OK(vt_monitor_flush(m, VT_FOREVER));
    VT_CHECK_EQ(atomic_load(&n), 100);
    /* Delivered events free their slots. */
    for (int i = 0; i < 500; i++) {
        vt__monitor_emit(m, &ev);
        if (i % 50 == 49)
            VT_CHECK_OK(vt_monitor_flush(m, VT_FOREVER));
    }
    VT_CHECK_OK(vt_monitor_flush(m, VT_FOREVER));
    VT_CHECK_EQ(atomic_load(&n), 600);
    VT_CHECK_OK(vt_monitor_stats_get(m, &st));
    VT_CHECK_EQ(st.dropped, 51);
    VT_CHECK_EQ(st.events[VT_EV_LOG], 600);
    vt_monitor_free(m);
}

VT_TEST(drops_from_threads_add_up)
{
    vt_monitor *m = new_mon(0, 64);
    VT_CHECK_NOT_NULL(m);
    gate gt = {0, 0};
    got g = {0};
    VT_CHECK_OK(vt_monitor_subscribe(m, gate_cb, &gt));
    VT_CHECK_OK(vt_monitor_subscribe(m, collect, &g));
    vt_event ev = mk(VT_EV_LOG, G(graph_a), T(0), "x", VT_TASK_RUNNING, 0);
    ev.worker = 7;
    ev.tasks = 0;
    vt__monitor_emit(m, &ev);
    VT_CHECK(wait_flag(&gt.entered));
    emitter em[4];
    for (int t = 0; t < 4; t++) {
        em[t] = (emitter){m, t, 200, 1, 1, 0};
        VT_CHECK_EQ(pthread_create(&em[t].th, NULL, emit_main, &em[t]), 0);
    }
    for (int t = 0; t < 4; t++)
        pthread_join(em[t].th, NULL);
    atomic_store(&gt.release, 1);
    VT_CHECK_OK(vt_monitor_flush(m, VT_FOREVER));
    vt_monitor_stats st;
    VT_CHECK_OK(vt_monitor_stats_get(m, &st));
    VT_CHECK_LE(g.n, 64);
    VT_CHECK_EQ(g.n + st.dropped, 801);
    /* What got through keeps each thread's order. */
    int64_t last[8] = {-1, -1, -1, -1, -1, -1, -1, -1};
    for (size_t i = 1; i < g.n; i++) {
        const vt_event *e = &g.v[i].ev;
        VT_CHECK_GT((int64_t)e->tasks, last[e->worker]);
        last[e->worker] = (int64_t)e->tasks;
    }
    vt_monitor_free(m);
    got_free(&g);
}

/* ---- Subscribers ------------------------------------------------------------------------ */

typedef struct cbtest {
    vt_monitor *m;
    got late; /* subscribed from a callback */
    vt_err unsub, flush, trace;
    uint64_t events_seen; /* stats from inside the callback */
    uint64_t subscribed_at;
    int calls;
} cbtest;

static void late_cb(void *ud, const vt_event *ev)
{
    collect(&((cbtest *)ud)->late, ev);
}

static void inner_cb(void *ud, const vt_event *ev)
{
    cbtest *c = ud;
    c->calls++;
    if (ev->seq != 3)
        return;
    c->unsub = vt_monitor_unsubscribe(c->m, inner_cb, ud);
    c->flush = vt_monitor_flush(c->m, VT_FOREVER);
    c->trace = vt_monitor_write_trace(c->m, stdout); /* not recording */
    vt_monitor_stats st;
    if (vt_monitor_stats_get(c->m, &st) == VT_OK) {
        c->events_seen = 0;
        for (int k = 0; k < VT_EVENT_KINDS; k++)
            c->events_seen += st.events[k];
    }
    if (vt_monitor_subscribe(c->m, late_cb, ud) == VT_OK)
        c->subscribed_at = ev->seq;
}

VT_TEST(calls_from_callbacks)
{
    cbtest c;
    memset(&c, 0, sizeof c);
    c.m = new_mon(0, 0);
    VT_CHECK_NOT_NULL(c.m);
    VT_CHECK_OK(vt_monitor_subscribe(c.m, inner_cb, &c));
    for (int i = 0; i < 10; i++) {
        vt_event ev = mk(VT_EV_QUEUED, G(graph_a), T(i), "t", VT_TASK_READY, i);
        vt__monitor_emit(c.m, &ev);
    }
    VT_CHECK_OK(vt_monitor_flush(c.m, VT_FOREVER));
    VT_CHECK_EQ(c.calls, 10);
    VT_CHECK_ERR(c.unsub, VT_EDEADLK);
    VT_CHECK_ERR(c.flush, VT_EDEADLK);
    VT_CHECK_ERR(c.trace, VT_ESTATE);
    VT_CHECK_EQ(c.events_seen, 3); /* its own event counted */
    VT_CHECK_EQ(c.subscribed_at, 3);
    /* The late subscriber starts with the next event. */
    VT_CHECK_EQ(c.late.n, 7);
    VT_CHECK_EQ(c.late.v[0].ev.seq, 4);
    /* From outside, both go. */
    VT_CHECK_OK(vt_monitor_unsubscribe(c.m, late_cb, &c));
    VT_CHECK_OK(vt_monitor_unsubscribe(c.m, inner_cb, &c));
    vt_event ev = mk(VT_EV_QUEUED, G(graph_a), T(0), "t", VT_TASK_READY, 99);
    vt__monitor_emit(c.m, &ev);
    VT_CHECK_OK(vt_monitor_flush(c.m, VT_FOREVER));
    VT_CHECK_EQ(c.calls, 10);
    VT_CHECK_EQ(c.late.n, 7);
    vt_monitor_free(c.m);
    got_free(&c.late);
}

typedef struct slow {
    _Atomic int inside, entered, release, calls, after_unsub;
    _Atomic int unsub_done;
} slow;

static void slow_cb(void *ud, const vt_event *ev)
{
    slow *s = ud;
    (void)ev;
    atomic_store(&s->inside, 1);
    if (atomic_load(&s->unsub_done))
        atomic_fetch_add(&s->after_unsub, 1);
    atomic_fetch_add(&s->calls, 1);
    if (!atomic_exchange(&s->entered, 1))
        wait_flag(&s->release);
    atomic_store(&s->inside, 0);
}

typedef struct unsub_arg {
    vt_monitor *m;
    slow *s;
    vt_err e;
    _Atomic int returned;
} unsub_arg;

static void *unsub_main(void *arg)
{
    unsub_arg *a = arg;
    a->e = vt_monitor_unsubscribe(a->m, slow_cb, a->s);
    /* fn must not be running any more, nor run again. */
    if (atomic_load(&a->s->inside))
        a->e = VT_EBUSY;
    atomic_store(&a->s->unsub_done, 1);
    atomic_store(&a->returned, 1);
    return NULL;
}

VT_TEST(unsubscribe_waits_for_the_callback)
{
    vt_monitor *m = new_mon(0, 0);
    VT_CHECK_NOT_NULL(m);
    slow s;
    memset(&s, 0, sizeof s);
    VT_CHECK_OK(vt_monitor_subscribe(m, slow_cb, &s));
    vt_event ev = mk(VT_EV_LOG, G(graph_a), T(0), "x", VT_TASK_RUNNING, 1);
    for (int i = 0; i < 5; i++)
        vt__monitor_emit(m, &ev);
    VT_CHECK(wait_flag(&s.entered));
    unsub_arg a = {m, &s, VT_OK, 0};
    pthread_t th;
    VT_CHECK_EQ(pthread_create(&th, NULL, unsub_main, &a), 0);
    /* While the callback runs, unsubscribe cannot have returned. */
    nap_us(20000);
    VT_CHECK_EQ(atomic_load(&a.returned), 0);
    atomic_store(&s.release, 1);
    pthread_join(th, NULL);
    VT_CHECK_OK(a.e);
    for (int i = 0; i < 100; i++)
        vt__monitor_emit(m, &ev);
    VT_CHECK_OK(vt_monitor_flush(m, VT_FOREVER));
    VT_CHECK_EQ(atomic_load(&s.after_unsub), 0);
    VT_CHECK_LE(atomic_load(&s.calls), 5);
    vt_monitor_free(m);
}

/* ---- Flush and free ---------------------------------------------------------------------------
 */

VT_TEST(flush_deadline)
{
    vt_monitor *m = new_mon(0, 0);
    VT_CHECK_NOT_NULL(m);
    gate gt = {0, 0};
    VT_CHECK_OK(vt_monitor_subscribe(m, gate_cb, &gt));
    vt_event ev = mk(VT_EV_LOG, G(graph_a), T(0), "x", VT_TASK_RUNNING, 1);
    vt__monitor_emit(m, &ev);
    VT_CHECK(wait_flag(&gt.entered));
    vt__monitor_emit(m, &ev);
    /* The monitor is held in a callback: the flush cannot finish. */
    VT_CHECK_ERR(vt_monitor_flush(m, VT_NOW), VT_ETIMEDOUT);
    VT_CHECK_ERR(vt_monitor_flush(m, vt_deadline_after(VT_MS(5))), VT_ETIMEDOUT);
    atomic_store(&gt.release, 1);
    VT_CHECK_OK(vt_monitor_flush(m, VT_FOREVER));
    vt_monitor_stats st;
    VT_CHECK_OK(vt_monitor_stats_get(m, &st));
    VT_CHECK_EQ(st.events[VT_EV_LOG], 2);
    vt_monitor_free(m);
}

VT_TEST(free_delivers_pending)
{
    for (int round = 0; round < 20; round++) {
        vt_monitor *m = new_mon(round & 1, 0);
        VT_CHECK_NOT_NULL(m);
        _Atomic long n = 0;
        VT_CHECK_OK(vt_monitor_subscribe(m, count_cb, (void *)&n));
        vt_event ev = mk(VT_EV_QUEUED, G(graph_a), T(1), "x", VT_TASK_READY, 1);
        for (int i = 0; i < 5000; i++)
            vt__monitor_emit(m, &ev);
        vt_monitor_free(m);
        VT_CHECK_EQ(atomic_load(&n), 5000);
    }
}

typedef struct free_arg {
    vt_monitor *m;
    _Atomic int returned;
} free_arg;

static void *free_main(void *arg)
{
    free_arg *a = arg;
    vt_monitor_free(a->m);
    atomic_store(&a->returned, 1);
    return NULL;
}

VT_TEST(free_waits_for_attached_runs)
{
    vt_log_level lv = vt_log_get_level();
    vt_log_set_level(VT_LOG_ERROR); /* free warns that it waits */
    vt_monitor *m = new_mon(0, 0);
    VT_CHECK_NOT_NULL(m);
    _Atomic long n = 0;
    VT_CHECK_OK(vt_monitor_subscribe(m, count_cb, (void *)&n));
    vt__monitor_attach(m);
    vt_event ev = mk(VT_EV_QUEUED, G(graph_a), T(1), "x", VT_TASK_READY, 1);
    vt__monitor_emit(m, &ev);
    free_arg a = {m, 0};
    pthread_t th;
    VT_CHECK_EQ(pthread_create(&th, NULL, free_main, &a), 0);
    nap_us(20000);
    VT_CHECK_EQ(atomic_load(&a.returned), 0);
    for (int i = 0; i < 99; i++)
        vt__monitor_emit(m, &ev);
    vt__monitor_detach(m);
    pthread_join(th, NULL);
    VT_CHECK_EQ(atomic_load(&n), 100);
    vt_log_set_level(lv);
}

/* Delivery without a flush: the monitor thread is woken from its sleep by
 * an emit with no run attached, and polls while one is. */
VT_TEST(delivers_without_flush)
{
    vt_monitor *m = new_mon(0, 0);
    VT_CHECK_NOT_NULL(m);
    _Atomic long n = 0;
    VT_CHECK_OK(vt_monitor_subscribe(m, count_cb, (void *)&n));
    vt_event ev = mk(VT_EV_QUEUED, G(graph_a), T(1), "x", VT_TASK_READY, 1);
    for (int i = 1; i <= 20; i++) {
        if (i == 10)
            vt__monitor_attach(m);
        if (i == 15)
            vt__monitor_detach(m);
        nap_us(2000); /* let the monitor thread go to sleep */
        vt__monitor_emit(m, &ev);
        int64_t give_up = vt_deadline_after(VT_SEC(30));
        while (atomic_load(&n) < i && vt_now_ns() < give_up)
            nap_us(100);
        VT_CHECK_EQ(atomic_load(&n), i);
    }
    vt_monitor_free(m);
}

/* ---- Threads that come and go -------------------------------------------------------------------
 */

static void *burst_main(void *arg)
{
    vt_monitor *m = arg;
    vt_event ev = mk(VT_EV_LOG, G(graph_a), NULL, "", VT_TASK_PENDING, 1);
    for (int i = 0; i < 300; i++)
        vt__monitor_emit(m, &ev);
    return NULL;
}

/* The buffers of threads that exited are freed once drained: memory does
 * not grow with the number of threads that ever emitted. */
VT_TEST(exited_threads_are_reclaimed)
{
    vt_monitor *m = new_mon(0, 0);
    VT_CHECK_NOT_NULL(m);
    _Atomic long n = 0;
    VT_CHECK_OK(vt_monitor_subscribe(m, count_cb, (void *)&n));
    long live_after[12];
    for (int round = 0; round < 12; round++) {
        pthread_t th[8];
        for (int t = 0; t < 8; t++)
            VT_CHECK_EQ(pthread_create(&th[t], NULL, burst_main, m), 0);
        for (int t = 0; t < 8; t++)
            pthread_join(th[t], NULL);
        VT_CHECK_OK(vt_monitor_flush(m, VT_FOREVER));
        live_after[round] = vt_test_alloc_live();
    }
    VT_CHECK_EQ(atomic_load(&n), 12 * 8 * 300);
    VT_CHECK_EQ(live_after[11], live_after[2]);
    vt_monitor_free(m);
}

/* One thread emitting to more monitors than it caches. */
VT_TEST(many_monitors_one_thread)
{
    enum {
        M = 13
    };
    vt_monitor *m[M];
    got g[M];
    memset(g, 0, sizeof g);
    for (int i = 0; i < M; i++) {
        m[i] = new_mon(0, 0);
        VT_CHECK_NOT_NULL(m[i]);
        VT_CHECK_OK(vt_monitor_subscribe(m[i], collect, &g[i]));
    }
    int64_t ts = 0;
    for (int j = 0; j < 200; j++) {
        for (int i = 0; i < M; i++) {
            vt_event ev = mk(VT_EV_LOG, G(graph_a), T(i), "x", VT_TASK_RUNNING, ts++);
            ev.tasks = (uint64_t)j;
            vt__monitor_emit(m[(i * 5 + j) % M], &ev);
        }
    }
    for (int i = 0; i < M; i++) {
        VT_CHECK_OK(vt_monitor_flush(m[i], VT_FOREVER));
        VT_CHECK_EQ(g[i].n, 200);
        for (size_t k = 1; k < g[i].n; k++)
            VT_CHECK_GT(g[i].v[k].ev.ts_ns, g[i].v[k - 1].ev.ts_ns);
        vt_monitor_free(m[i]);
        got_free(&g[i]);
    }
}

/* ---- Out of memory ------------------------------------------------------------------------------
 */

VT_TEST(oom_new_and_subscribe)
{
    long live = vt_test_alloc_live();
    vt_monitor *m = NULL;
    vt_err e = VT_ENOMEM;
    for (long k = 1; k < 100; k++) {
        vt_test_alloc_fail_at(k);
        e = vt_monitor_new(&m, NULL);
        vt_test_alloc_reset();
        if (e == VT_OK)
            break;
        VT_CHECK_ERR(e, VT_ENOMEM);
        VT_CHECK_NULL(m);
        VT_CHECK_EQ(vt_test_alloc_live(), live);
    }
    VT_CHECK_OK(e);
    vt_test_alloc_fail_at(1);
    e = vt_monitor_subscribe(m, nop_cb, NULL);
    vt_test_alloc_reset();
    VT_CHECK_ERR(e, VT_ENOMEM);
    VT_CHECK_ERR(vt_monitor_unsubscribe(m, nop_cb, NULL), VT_ENOENT);
    VT_CHECK_OK(vt_monitor_subscribe(m, nop_cb, NULL));
    vt_monitor_free(m);
    VT_CHECK_EQ(vt_test_alloc_live(), live);
}

typedef struct oom_arg {
    vt_monitor *m;
    long fail_at;
} oom_arg;

static void *oom_emit_main(void *arg)
{
    oom_arg *a = arg;
    vt_event ev = mk(VT_EV_LOG, G(graph_a), T(0), "x", VT_TASK_RUNNING, 1);
    vt_test_alloc_fail_at(a->fail_at);
    vt__monitor_emit(a->m, &ev); /* registers this thread's buffer */
    vt_test_alloc_reset();
    vt__monitor_emit(a->m, &ev);
    return NULL;
}

/* A thread whose buffer cannot be allocated loses its event (counted) and
 * gets a buffer at the next one. */
VT_TEST(oom_emit_counts_a_drop)
{
    for (long k = 1; k <= 2; k++) {
        vt_monitor *m = new_mon(0, 0);
        VT_CHECK_NOT_NULL(m);
        _Atomic long n = 0;
        VT_CHECK_OK(vt_monitor_subscribe(m, count_cb, (void *)&n));
        VT_CHECK_OK(vt_monitor_flush(m, VT_FOREVER)); /* the monitor thread is idle */
        oom_arg a = {m, k};
        pthread_t th;
        VT_CHECK_EQ(pthread_create(&th, NULL, oom_emit_main, &a), 0);
        pthread_join(th, NULL);
        VT_CHECK_OK(vt_monitor_flush(m, VT_FOREVER));
        vt_monitor_stats st;
        VT_CHECK_OK(vt_monitor_stats_get(m, &st));
        VT_CHECK_EQ(st.dropped, 1);
        VT_CHECK_EQ(atomic_load(&n), 1);
        vt_monitor_free(m);
    }
}

/* ---- The trace
 * ------------------------------------------------------------------------------------ */

static json_t *load_trace(vt_monitor *m)
{
    FILE *f = tmpfile();
    if (!f)
        return NULL;
    vt_err e = vt_monitor_write_trace(m, f);
    if (e) {
        fclose(f);
        return NULL;
    }
    rewind(f);
    json_error_t jerr;
    json_t *root = json_loadf(f, 0, &jerr);
    if (!root)
        fprintf(stderr, "trace does not parse: %s at line %d col %d\n", jerr.text, jerr.line,
                jerr.column);
    fclose(f);
    return root;
}

static const char *jstr(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static long long jint(json_t *o, const char *key)
{
    return (long long)json_integer_value(json_object_get(o, key));
}

/* A JSON number in microseconds as integer nanoseconds. */
static long long jns(json_t *o, const char *key)
{
    return llround(json_number_value(json_object_get(o, key)) * 1000.0);
}

/* The n-th event (from 0) with this phase and name, or NULL. */
static json_t *find_ev(json_t *evs, const char *ph, const char *name, int nth)
{
    for (size_t i = 0; i < json_array_size(evs); i++) {
        json_t *e = json_array_get(evs, i);
        if (strcmp(jstr(e, "ph"), ph) == 0 && strcmp(jstr(e, "name"), name) == 0 && nth-- == 0)
            return e;
    }
    return NULL;
}

static int count_ph(json_t *evs, const char *ph, const char *cat)
{
    int n = 0;
    for (size_t i = 0; i < json_array_size(evs); i++) {
        json_t *e = json_array_get(evs, i);
        if (strcmp(jstr(e, "ph"), ph) == 0 && (!cat || strcmp(jstr(e, "cat"), cat) == 0))
            n++;
    }
    return n;
}

static void emit_at(vt_monitor *m, vt_event_kind kind, const vt_graph *g, int task,
                    const char *name, vt_task_state st, int64_t ts, unsigned attempt, int worker)
{
    vt_event ev = mk(kind, g, task < 0 ? NULL : T(task), name, st, ts);
    ev.attempt = attempt;
    ev.worker = worker;
    vt__monitor_emit(m, &ev);
}

#define NAME_QUOTE "quo\"te\\back/slash"
#define NAME_CTL "new\nline\ttab\x01\x1f end"
#define NAME_UNI "unicod\xc3\xa9 \xe6\xbc\xa2 \xf0\x9f\x99\x82"
#define NAME_BAD "bad\xff\xc0\xed\xa0\x80 utf8"
#define NAME_BAD_DECODED "bad\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd utf8"

/* The spans of one lane nest or follow each other, never overlap partly. */
static void check_lanes(json_t *evs)
{
    size_t n = json_array_size(evs);
    for (size_t i = 0; i < n; i++) {
        json_t *a = json_array_get(evs, i);
        if (strcmp(jstr(a, "ph"), "X"))
            continue;
        long long as = jns(a, "ts"), ae = as + jns(a, "dur");
        for (size_t j = i + 1; j < n; j++) {
            json_t *b = json_array_get(evs, j);
            if (strcmp(jstr(b, "ph"), "X") || jint(a, "pid") != jint(b, "pid") ||
                jint(a, "tid") != jint(b, "tid"))
                continue;
            long long bs = jns(b, "ts"), be = bs + jns(b, "dur");
            int apart = ae <= bs || be <= as;
            int nested = (as <= bs && be <= ae) || (bs <= as && ae <= be);
            VT_CHECK(apart || nested);
        }
    }
}

VT_TEST(trace_spans_and_instants)
{
    vt_monitor *m = new_mon(1, 0);
    VT_CHECK_NOT_NULL(m);
    const vt_graph *g = G(graph_a);
    int64_t b = 5000000000; /* 5 s: microseconds with decimals */
    vt_event ev = mk(VT_EV_RUN_STARTED, g, NULL, "", VT_TASK_PENDING, b);
    ev.tasks = 6;
    ev.msg = "r\"1";
    ev.worker = -1;
    vt__monitor_emit(m, &ev);
    /* Worker 0: plain (ok), then quote (retried, then ok). */
    emit_at(m, VT_EV_QUEUED, g, 0, "plain", VT_TASK_READY, b + 10, 0, -1);
    emit_at(m, VT_EV_STARTED, g, 0, "plain", VT_TASK_RUNNING, b + 1001, 1, 0);
    emit_at(m, VT_EV_FINISHED, g, 0, "plain", VT_TASK_SUCCEEDED, b + 2500, 1, 0);
    emit_at(m, VT_EV_STARTED, g, 1, NAME_QUOTE, VT_TASK_RUNNING, b + 3000, 1, 0);
    ev = mk(VT_EV_RETRIED, g, T(1), NAME_QUOTE, VT_TASK_PENDING, b + 4000);
    ev.err = VT_EFAILED;
    ev.msg = "exit \"1\"\n";
    ev.delay_ns = 1500;
    vt__monitor_emit(m, &ev);
    emit_at(m, VT_EV_STARTED, g, 1, NAME_QUOTE, VT_TASK_RUNNING, b + 6000, 2, 0);
    emit_at(m, VT_EV_FINISHED, g, 1, NAME_QUOTE, VT_TASK_SUCCEEDED, b + 7000, 2, 0);
    /* Worker 1: async tasks whose attempts overlap. */
    emit_at(m, VT_EV_STARTED, g, 2, NAME_CTL, VT_TASK_RUNNING, b + 1000, 1, 1);
    emit_at(m, VT_EV_STARTED, g, 3, NAME_UNI, VT_TASK_RUNNING, b + 2000, 1, 1);
    emit_at(m, VT_EV_TIMEOUT, g, 2, NAME_CTL, VT_TASK_RUNNING, b + 2500, 1, 1);
    ev = mk(VT_EV_LOG, g, T(3), NAME_UNI, VT_TASK_RUNNING, b + 2600);
    ev.worker = 1;
    ev.level = VT_LOG_INFO;
    ev.msg = "log line \xe2\x9c\x93";
    vt__monitor_emit(m, &ev);
    ev = mk(VT_EV_FINISHED, g, T(2), NAME_CTL, VT_TASK_FAILED, b + 3000);
    ev.worker = 1;
    ev.err = VT_ETIMEDOUT;
    ev.msg = "timed out";
    vt__monitor_emit(m, &ev);
    emit_at(m, VT_EV_FINISHED, g, 3, NAME_UNI, VT_TASK_SUCCEEDED, b + 4000, 1, 1);
    /* Outside the pool. */
    emit_at(m, VT_EV_STARTED, g, 4, NAME_BAD, VT_TASK_RUNNING, b + 500, 1, -1);
    emit_at(m, VT_EV_FINISHED, g, 4, NAME_BAD, VT_TASK_SUCCEEDED, b + 900, 1, -1);
    /* Still running when the trace is written. */
    emit_at(m, VT_EV_STARTED, g, 5, "longer", VT_TASK_RUNNING, b + 8000, 1, 2);
    ev = mk(VT_EV_CANCELLED, g, NULL, "", VT_TASK_PENDING, b + 9000);
    ev.err = VT_ECANCELED;
    vt__monitor_emit(m, &ev);
    ev = mk(VT_EV_RUN_FINISHED, g, NULL, "", VT_TASK_PENDING, b + 10000);
    ev.err = VT_ECANCELED;
    ev.tasks = 6;
    vt__monitor_emit(m, &ev);
    /* A second run of the same graph: another process. */
    ev = mk(VT_EV_RUN_STARTED, g, NULL, "", VT_TASK_PENDING, b + 20000);
    ev.msg = "";
    vt__monitor_emit(m, &ev);
    emit_at(m, VT_EV_STARTED, g, 0, "plain", VT_TASK_RUNNING, b + 20001, 1, 0);
    emit_at(m, VT_EV_FINISHED, g, 0, "plain", VT_TASK_SUCCEEDED, b + 20002, 1, 0);

    json_t *root = load_trace(m);
    VT_CHECK_NOT_NULL(root);
    VT_CHECK_STR_EQ(jstr(root, "displayTimeUnit"), "ns");
    json_t *evs = json_object_get(root, "traceEvents");
    VT_CHECK(json_is_array(evs));
    /* Attempts: plain, quote x2, ctl, uni, bad, longer, plain again. */
    VT_CHECK_EQ(count_ph(evs, "X", "task"), 8);
    VT_CHECK_EQ(count_ph(evs, "X", "run"), 2);
    VT_CHECK_EQ(count_ph(evs, "i", NULL), 4); /* retried, timeout, log, cancelled */

    struct {
        const char *name;
        int nth;
        long long ts, dur, tid, attempt, pid;
        const char *state, *end;
    } want[] = {
        {"plain", 0, b + 1001, 1499, 0, 1, 1, "succeeded", "finished"},
        {NAME_QUOTE, 0, b + 3000, 1000, 0, 1, 1, "pending", "retried"},
        {NAME_QUOTE, 1, b + 6000, 1000, 0, 2, 1, "succeeded", "finished"},
        {NAME_CTL, 0, b + 1000, 2000, 1, 1, 1, "failed", "finished"},
        {NAME_UNI, 0, b + 2000, 2000, 100001, 1, 1, "succeeded", "finished"},
        {NAME_BAD_DECODED, 0, b + 500, 400, 99999, 1, 1, "succeeded", "finished"},
        {"longer", 0, b + 8000, 12002, 2, 1, 1, "running", "unfinished"},
        {"plain", 1, b + 20001, 1, 0, 1, 2, "succeeded", "finished"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        json_t *e = find_ev(evs, "X", want[i].name, want[i].nth);
        VT_CHECK_NOT_NULL(e);
        VT_CHECK_EQ(jns(e, "ts"), want[i].ts);
        VT_CHECK_EQ(jns(e, "dur"), want[i].dur);
        VT_CHECK_EQ(jint(e, "tid"), want[i].tid);
        VT_CHECK_EQ(jint(e, "pid"), want[i].pid);
        json_t *a = json_object_get(e, "args");
        VT_CHECK_EQ(jint(a, "attempt"), want[i].attempt);
        VT_CHECK_STR_EQ(jstr(a, "state"), want[i].state);
        VT_CHECK_STR_EQ(jstr(a, "end"), want[i].end);
    }
    json_t *e = find_ev(evs, "X", NAME_QUOTE, 0);
    VT_CHECK_STR_EQ(jstr(json_object_get(e, "args"), "msg"), "exit \"1\"\n");
    VT_CHECK_STR_EQ(jstr(json_object_get(e, "args"), "err"), "VT_EFAILED");
    e = find_ev(evs, "X", NAME_CTL, 0);
    VT_CHECK_STR_EQ(jstr(json_object_get(e, "args"), "err"), "VT_ETIMEDOUT");
    VT_CHECK_EQ(jns(json_object_get(e, "args"), "timeout_at_us"), b + 2500);
    /* ts keeps nanoseconds: 5000001.001 us. */
    e = find_ev(evs, "X", "plain", 0);
    VT_CHECK(fabs(json_number_value(json_object_get(e, "ts")) - 5000001.001) < 1e-6);

    e = find_ev(evs, "i", "retried", 0);
    VT_CHECK_NOT_NULL(e);
    VT_CHECK_EQ(jns(e, "ts"), b + 4000);
    VT_CHECK_EQ(jint(e, "tid"), 0);
    VT_CHECK_STR_EQ(jstr(json_object_get(e, "args"), "task"), NAME_QUOTE);
    VT_CHECK_EQ(jns(json_object_get(e, "args"), "delay_us"), 1500);
    e = find_ev(evs, "i", "timeout", 0);
    VT_CHECK_NOT_NULL(e);
    VT_CHECK_EQ(jint(e, "tid"), 1);
    e = find_ev(evs, "i", "log", 0);
    VT_CHECK_NOT_NULL(e);
    VT_CHECK_STR_EQ(jstr(json_object_get(e, "args"), "msg"), "log line \xe2\x9c\x93");
    VT_CHECK_STR_EQ(jstr(json_object_get(e, "args"), "level"), "info");
    e = find_ev(evs, "i", "cancelled", 0);
    VT_CHECK_NOT_NULL(e);
    VT_CHECK_EQ(jint(e, "tid"), 99998);
    VT_CHECK_STR_EQ(jstr(e, "s"), "t");

    /* The runs' spans and names. */
    e = find_ev(evs, "X", "run r\"1", 0);
    VT_CHECK_NOT_NULL(e);
    VT_CHECK_EQ(jns(e, "ts"), b);
    VT_CHECK_EQ(jns(e, "dur"), 10000);
    VT_CHECK_EQ(jint(e, "pid"), 1);
    VT_CHECK_STR_EQ(jstr(json_object_get(e, "args"), "err"), "VT_ECANCELED");
    int names = 0;
    for (size_t i = 0; i < json_array_size(evs); i++) {
        json_t *x = json_array_get(evs, i);
        if (strcmp(jstr(x, "ph"), "M"))
            continue;
        const char *nm = jstr(json_object_get(x, "args"), "name");
        long long pid = jint(x, "pid"), tid = jint(x, "tid");
        if (!strcmp(jstr(x, "name"), "process_name")) {
            VT_CHECK_STR_EQ(nm, pid == 1 ? "run r\"1" : "run #2");
            names++;
        } else if (!strcmp(jstr(x, "name"), "thread_name") && pid == 1) {
            const char *w = tid == 0        ? "worker 0"
                            : tid == 1      ? "worker 1"
                            : tid == 2      ? "worker 2"
                            : tid == 100001 ? "worker 1 (2)"
                            : tid == 99999  ? "outside"
                            : tid == 99998  ? "run"
                                            : "?";
            VT_CHECK_STR_EQ(nm, w);
            names++;
        }
    }
    VT_CHECK_EQ(names, 2 + 6);
    check_lanes(evs);
    json_decref(root);
    vt_monitor_free(m);
}

/* Many overlapping async attempts on one worker: as many lanes as needed,
 * never a partial overlap on a lane. */
VT_TEST(trace_lanes_never_overlap)
{
    vt_monitor *m = new_mon(1, 0);
    VT_CHECK_NOT_NULL(m);
    uint64_t rnd = vt_test_rand();
    int64_t ts = 1000;
    int open[64] = {0};
    for (int step = 0; step < 2000; step++) {
        int t = (int)(vt__rand_next(&rnd) % 64);
        ts += (int64_t)(vt__rand_next(&rnd) % 3);
        if (!open[t])
            emit_at(m, VT_EV_STARTED, G(graph_a), t, "async", VT_TASK_RUNNING, ts, 1, 3);
        else
            emit_at(m, VT_EV_FINISHED, G(graph_a), t, "async", VT_TASK_SUCCEEDED, ts, 1, 3);
        open[t] = !open[t];
    }
    json_t *root = load_trace(m);
    VT_CHECK_NOT_NULL(root);
    json_t *evs = json_object_get(root, "traceEvents");
    check_lanes(evs);
    VT_CHECK_GT(count_ph(evs, "X", "task"), 900);
    json_decref(root);
    vt_monitor_free(m);
}

/* Writing fails cleanly at every allocation; recording counts what it
 * could not keep. */
VT_TEST(oom_trace)
{
    vt_monitor *m = new_mon(1, 0);
    VT_CHECK_NOT_NULL(m);
    for (int i = 0; i < 4; i++) {
        emit_at(m, VT_EV_STARTED, G(graph_a), i, "t", VT_TASK_RUNNING, 10 * i, 1, i);
        emit_at(m, VT_EV_LOG, G(graph_a), i, "t", VT_TASK_RUNNING, 10 * i + 1, 1, i);
        emit_at(m, VT_EV_FINISHED, G(graph_a), i, "t", VT_TASK_SUCCEEDED, 10 * i + 5, 1, i);
    }
    VT_CHECK_OK(vt_monitor_flush(m, VT_FOREVER));
    long live = vt_test_alloc_live();
    vt_err e = VT_ENOMEM;
    for (long k = 1; k < 200; k++) {
        FILE *f = tmpfile();
        VT_CHECK_NOT_NULL(f);
        vt_test_alloc_fail_at(k);
        e = vt_monitor_write_trace(m, f);
        vt_test_alloc_reset();
        fclose(f);
        VT_CHECK_EQ(vt_test_alloc_live(), live);
        if (e == VT_OK)
            break;
        VT_CHECK_ERR(e, VT_ENOMEM);
    }
    VT_CHECK_OK(e);

    /* A record bigger than the trace's blocks: its block cannot be had.
     * Its buffer chunk is the emitter's first allocation, the block the
     * monitor thread's next one. */
    vt_log_level lv = vt_log_get_level();
    vt_log_set_level(VT_LOG_ERROR);
    size_t big = (size_t)3 << 20;
    char *msg = malloc(big + 1);
    VT_CHECK_NOT_NULL(msg);
    memset(msg, 'm', big);
    msg[big] = '\0';
    _Atomic long n = 0;
    VT_CHECK_OK(vt_monitor_subscribe(m, count_cb, (void *)&n));
    vt_event ev = mk(VT_EV_LOG, G(graph_a), NULL, "", VT_TASK_PENDING, 100);
    ev.msg = msg;
    vt_test_alloc_fail_at(2);
    vt__monitor_emit(m, &ev);
    VT_CHECK_OK(vt_monitor_flush(m, VT_FOREVER));
    vt_test_alloc_reset();
    free(msg);
    vt_log_set_level(lv);
    VT_CHECK_EQ(atomic_load(&n), 1);
    json_t *root = load_trace(m);
    VT_CHECK_NOT_NULL(root);
    VT_CHECK_EQ(
        json_integer_value(json_object_get(json_object_get(root, "otherData"), "dropped_events")),
        1);
    VT_CHECK_EQ(count_ph(json_object_get(root, "traceEvents"), "X", "task"), 4);
    json_decref(root);
    vt_monitor_free(m);
}

VT_TEST(trace_write_error)
{
    vt_monitor *m = new_mon(1, 0);
    VT_CHECK_NOT_NULL(m);
    FILE *f = fopen("/dev/full", "w");
    if (!f)
        VT_SKIP("no /dev/full");
    emit_at(m, VT_EV_STARTED, G(graph_a), 0, "x", VT_TASK_RUNNING, 1, 1, 0);
    emit_at(m, VT_EV_FINISHED, G(graph_a), 0, "x", VT_TASK_SUCCEEDED, 2, 1, 0);
    VT_CHECK_ERR(vt_monitor_write_trace(m, f), vt_err_from_errno(ENOSPC));
    fclose(f);
    /* An empty trace is a valid one. */
    vt_monitor *m2 = new_mon(1, 0);
    VT_CHECK_NOT_NULL(m2);
    json_t *root = load_trace(m2);
    VT_CHECK_NOT_NULL(root);
    VT_CHECK_EQ(json_array_size(json_object_get(root, "traceEvents")), 0);
    json_decref(root);
    vt_monitor_free(m2);
    vt_monitor_free(m);
}
