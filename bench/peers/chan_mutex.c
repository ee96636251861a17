/* The pthread mutex + condition variable peer of the channel benchmarks
 * (see chan_mutex.h). A queue is a set of rings under one mutex: a plain
 * bounded queue is a set of one. A party waits only when it must, and
 * signals only when someone waits (counted under the lock), as a careful
 * hand-written queue does: a signal nobody waits for would still cost
 * glibc's condition variable a locked instruction or two. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include "chan_mutex.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_PARTIES 64

typedef struct ring {
    int64_t *buf;
    size_t cap, head, len;
    int closed;
    unsigned full_waiters;
    pthread_cond_t not_full;
} ring;

typedef struct mq {
    pthread_mutex_t mu;
    pthread_cond_t not_empty;
    unsigned empty_waiters;
    unsigned n, scan; /* rings; where the next scan starts */
    ring *rings;
} mq;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int mq_init(mq *q, unsigned n, size_t cap)
{
    memset(q, 0, sizeof *q);
    q->rings = calloc(n, sizeof *q->rings);
    if (!q->rings)
        return -1;
    q->n = n;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->not_empty, NULL);
    for (unsigned k = 0; k < n; k++) {
        ring *r = &q->rings[k];
        r->cap = cap;
        pthread_cond_init(&r->not_full, NULL);
        r->buf = malloc(cap * sizeof *r->buf);
        if (!r->buf)
            return -1; /* mq_destroy frees what was made */
    }
    return 0;
}

static void mq_destroy(mq *q)
{
    if (!q->rings)
        return;
    for (unsigned k = 0; k < q->n; k++) {
        free(q->rings[k].buf);
        pthread_cond_destroy(&q->rings[k].not_full);
    }
    free(q->rings);
    pthread_cond_destroy(&q->not_empty);
    pthread_mutex_destroy(&q->mu);
}

/* Appends v to ring k, waiting for room; -1 if the ring is closed. */
static int mq_push(mq *q, unsigned k, int64_t v)
{
    ring *r = &q->rings[k];
    pthread_mutex_lock(&q->mu);
    while (r->len == r->cap && !r->closed) {
        r->full_waiters++;
        pthread_cond_wait(&r->not_full, &q->mu);
        r->full_waiters--;
    }
    if (r->closed) {
        pthread_mutex_unlock(&q->mu);
        return -1;
    }
    size_t tail = r->head + r->len;
    r->buf[tail < r->cap ? tail : tail - r->cap] = v;
    r->len++;
    if (q->empty_waiters)
        pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->mu);
    return 0;
}

/* Takes the oldest element of the first ring that has one (scanning from
 * one ring further than last time), waiting while none has; 1 with it in
 * *v and its ring in *k, or 0 when every ring is closed and drained. Single
 * consumer. */
static int mq_pop_any(mq *q, int64_t *v, unsigned *k)
{
    pthread_mutex_lock(&q->mu);
    for (;;) {
        int open = 0;
        for (unsigned j = 0, i = q->scan; j < q->n; j++, i = i + 1 < q->n ? i + 1 : 0) {
            ring *r = &q->rings[i];
            if (r->len) {
                *v = r->buf[r->head];
                r->head = r->head + 1 < r->cap ? r->head + 1 : 0;
                r->len--;
                if (r->full_waiters)
                    pthread_cond_signal(&r->not_full);
                q->scan = i + 1 < q->n ? i + 1 : 0;
                pthread_mutex_unlock(&q->mu);
                *k = i;
                return 1;
            }
            open |= !r->closed;
        }
        if (!open) {
            pthread_mutex_unlock(&q->mu);
            return 0;
        }
        q->empty_waiters++;
        pthread_cond_wait(&q->not_empty, &q->mu);
        q->empty_waiters--;
    }
}

static void mq_close(mq *q, unsigned k)
{
    pthread_mutex_lock(&q->mu);
    q->rings[k].closed = 1;
    pthread_cond_broadcast(&q->rings[k].not_full);
    if (q->empty_waiters)
        pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->mu);
}

/* ---- Running the parties ------------------------------------------------------------------ */

typedef struct run {
    /* The start gate: 0 closed, 1 open, -1 the run is off (a thread could
     * not start). */
    pthread_mutex_t gate_mu;
    pthread_cond_t gate_cv;
    int gate;
    mq *q;             /* mpsc: rings[0]; select: a ring per producer */
    mq *ping, *pong;   /* ping-pong */
    unsigned producers, shift; /* producers = 1 << shift */
    int per_ring;      /* select: producer p sends into ring p */
    long per_producer; /* values each producer sends; ping-pong: round trips */
    atomic_uint live;  /* producers still sending (mpsc: the last closes) */
    atomic_int bad_send;
    peer_mq_result *r;
} run;

typedef struct party {
    run *run;
    unsigned id;
} party;

/* Waits until the gate opens: 0, or -1 when the run is off. */
static int gate_wait(run *x)
{
    pthread_mutex_lock(&x->gate_mu);
    while (x->gate == 0)
        pthread_cond_wait(&x->gate_cv, &x->gate_mu);
    int off = x->gate < 0;
    pthread_mutex_unlock(&x->gate_mu);
    return off ? -1 : 0;
}

static void *producer(void *arg)
{
    party *p = arg;
    run *x = p->run;
    unsigned ring_k = x->per_ring ? p->id : 0;
    if (gate_wait(x))
        return NULL;
    for (long i = 0; i < x->per_producer; i++) {
        if (mq_push(x->q, ring_k, (int64_t)i * x->producers + p->id) != 0) {
            atomic_store(&x->bad_send, 1);
            break;
        }
    }
    if (x->per_ring || atomic_fetch_sub(&x->live, 1) == 1)
        mq_close(x->q, ring_k);
    return NULL;
}

/* Receives to the end, checking each producer's sequence; keeps draining
 * after a wrong element so that no producer is left blocked. */
static void *consumer(void *arg)
{
    run *x = ((party *)arg)->run;
    peer_mq_result *r = x->r;
    int64_t next[MAX_PARTIES] = {0};
    uint64_t count = 0, sum = 0;
    int64_t v;
    unsigned k;
    if (gate_wait(x))
        return NULL;
    int64_t t0 = now_ns();
    while (mq_pop_any(x->q, &v, &k)) {
        unsigned p = (unsigned)v & (x->producers - 1);
        if (v >> x->shift != next[p] || (x->per_ring && k != p)) {
            if (!r->why[0])
                snprintf(r->why, sizeof r->why,
                         "element %llu is %lld (from queue %u), expected %lld from producer %u",
                         (unsigned long long)count, (long long)v, k,
                         (long long)(next[p] << x->shift) + p, p);
        } else {
            next[p]++;
        }
        count++;
        sum += (uint64_t)v;
    }
    r->ns = now_ns() - t0;
    r->count = count;
    r->sum = sum;
    return NULL;
}

static void *pinger(void *arg)
{
    run *x = ((party *)arg)->run;
    peer_mq_result *r = x->r;
    uint64_t sum = 0, count = 0;
    if (gate_wait(x))
        return NULL;
    int64_t t0 = now_ns();
    for (long i = 0; i < x->per_producer; i++) {
        int64_t v;
        unsigned k;
        if (mq_push(x->ping, 0, i) != 0 || !mq_pop_any(x->pong, &v, &k)) {
            snprintf(r->why, sizeof r->why, "a queue closed at round trip %ld", i);
            break;
        }
        if (v != i + 1 && !r->why[0])
            snprintf(r->why, sizeof r->why, "round trip %ld answered %lld", i, (long long)v);
        sum += (uint64_t)v;
        count++;
    }
    r->ns = now_ns() - t0;
    r->count = count;
    r->sum = sum;
    mq_close(x->ping, 0);
    return NULL;
}

static void *ponger(void *arg)
{
    run *x = ((party *)arg)->run;
    int64_t v;
    unsigned k;
    if (gate_wait(x))
        return NULL;
    while (mq_pop_any(x->ping, &v, &k))
        if (mq_push(x->pong, 0, v + 1) != 0)
            break;
    mq_close(x->pong, 0);
    return NULL;
}

/* The first `cpus` CPUs of the process's affinity (all of them if fewer). */
static void budget(unsigned cpus, cpu_set_t *set)
{
    cpu_set_t all;
    CPU_ZERO(set);
    if (sched_getaffinity(0, sizeof all, &all) != 0) {
        CPU_ZERO(&all);
        for (unsigned c = 0; c < cpus && c < CPU_SETSIZE; c++)
            CPU_SET(c, &all);
    }
    unsigned taken = 0;
    for (int c = 0; c < CPU_SETSIZE && taken < cpus; c++)
        if (CPU_ISSET(c, &all)) {
            CPU_SET(c, set);
            taken++;
        }
}

/* Starts fns[i](&parties[i]) for i < n on the budget's CPUs, opens the
 * gate when all have started and joins them; -1 with why when one could
 * not start (the others are let go without running). */
static int run_parties(run *x, void *(**fns)(void *), unsigned n, unsigned cpus)
{
    pthread_t th[MAX_PARTIES];
    party parties[MAX_PARTIES];
    cpu_set_t set;
    pthread_attr_t attr;
    budget(cpus, &set);
    pthread_mutex_init(&x->gate_mu, NULL);
    pthread_cond_init(&x->gate_cv, NULL);
    x->gate = 0;
    int err = pthread_attr_init(&attr);
    if (!err)
        err = pthread_attr_setaffinity_np(&attr, sizeof set, &set);
    unsigned started = 0;
    for (; !err && started < n; started++) {
        parties[started] = (party){x, started};
        err = pthread_create(&th[started], &attr, fns[started], &parties[started]);
        if (err)
            break;
    }
    pthread_attr_destroy(&attr);
    pthread_mutex_lock(&x->gate_mu);
    x->gate = err ? -1 : 1;
    pthread_cond_broadcast(&x->gate_cv);
    pthread_mutex_unlock(&x->gate_mu);
    for (unsigned i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    pthread_cond_destroy(&x->gate_cv);
    pthread_mutex_destroy(&x->gate_mu);
    if (err) {
        snprintf(x->r->why, sizeof x->r->why, "starting the threads: %s", strerror(err));
        return -1;
    }
    return 0;
}

static int check(peer_mq_result *r, uint64_t count, uint64_t sum)
{
    if (r->why[0])
        return -1;
    if (r->count != count || r->sum != sum) {
        snprintf(r->why, sizeof r->why, "received %llu elements summing to %llu, expected %llu and %llu",
                 (unsigned long long)r->count, (unsigned long long)r->sum, (unsigned long long)count,
                 (unsigned long long)sum);
        return -1;
    }
    return 0;
}

int peer_mq_pingpong(long round_trips, unsigned cpus, peer_mq_result *r)
{
    memset(r, 0, sizeof *r);
    mq ping = {0}, pong = {0};
    run x = {.ping = &ping, .pong = &pong, .per_producer = round_trips, .r = r};
    int ok = mq_init(&ping, 1, 1) == 0 && mq_init(&pong, 1, 1) == 0;
    if (ok) {
        void *(*fns[2])(void *) = {pinger, ponger};
        ok = run_parties(&x, fns, 2, cpus) == 0;
    } else {
        snprintf(r->why, sizeof r->why, "out of memory");
    }
    mq_destroy(&ping);
    mq_destroy(&pong);
    if (!ok)
        return -1;
    uint64_t m = (uint64_t)round_trips;
    return check(r, m, m * (m + 1) / 2);
}

static int producers_run(long n, unsigned producers, size_t cap, unsigned cpus, int per_ring,
                         peer_mq_result *r)
{
    memset(r, 0, sizeof *r);
    unsigned shift = 0;
    while ((1u << shift) < producers)
        shift++;
    if (producers != 1u << shift || producers >= MAX_PARTIES || n % producers || cap < 1) {
        snprintf(r->why, sizeof r->why, "bad arguments");
        return -1;
    }
    mq q;
    run x = {.q = &q,
             .producers = producers,
             .shift = shift,
             .per_ring = per_ring,
             .per_producer = n / producers,
             .r = r};
    atomic_init(&x.live, producers);
    atomic_init(&x.bad_send, 0);
    int ok = mq_init(&q, per_ring ? producers : 1, cap) == 0;
    if (ok) {
        /* Producers are parties 0 .. producers - 1, their ids. */
        void *(*fns[MAX_PARTIES])(void *);
        for (unsigned p = 0; p < producers; p++)
            fns[p] = producer;
        fns[producers] = consumer;
        ok = run_parties(&x, fns, producers + 1, cpus) == 0;
    } else {
        snprintf(r->why, sizeof r->why, "out of memory");
    }
    mq_destroy(&q);
    if (!ok)
        return -1;
    if (atomic_load(&x.bad_send) && !r->why[0])
        snprintf(r->why, sizeof r->why, "a producer found its queue closed");
    uint64_t m = (uint64_t)n;
    return check(r, m, m * (m - 1) / 2);
}

int peer_mq_mpsc(long n, unsigned producers, size_t cap, unsigned cpus, peer_mq_result *r)
{
    return producers_run(n, producers, cap, cpus, 0, r);
}

int peer_mq_select(long n, unsigned producers, size_t cap, unsigned cpus, peer_mq_result *r)
{
    return producers_run(n, producers, cap, cpus, 1, r);
}
