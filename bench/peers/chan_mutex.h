/* chan_mutex.h — the pthread peer of the channel benchmarks
 * (bench/async/bench_chan.c): bounded queues of int64 built from one
 * pthread mutex and condition variables, one OS thread per party.
 *
 * Each function below runs one repetition: it starts its parties as
 * threads whose affinity is the first `cpus` CPUs the process may run on
 * (all of them when it may run on fewer), so that `cpus` is the CPU budget
 * of the run as a vitte runtime's workers and Go's GOMAXPROCS are; times
 * the exchange from the moment every party has started until the consumer
 * has taken the last element; joins the threads; and fills *r. The
 * consumer (the pinger for the ping-pong) checks what it receives as it
 * goes. Returns 0, or -1 with the reason in r->why (a thread that cannot
 * start, a wrong sequence, count or sum). */
#ifndef VITTE_BENCH_CHAN_MUTEX_H
#define VITTE_BENCH_CHAN_MUTEX_H

#include <stddef.h>
#include <stdint.h>

typedef struct peer_mq_result {
    int64_t ns;     /* the timed exchange */
    uint64_t count; /* elements (round trips) the consumer received */
    uint64_t sum;   /* their sum */
    char why[160];  /* the failure, when -1 */
} peer_mq_result;

/* Two threads and two queues of capacity 1: the pinger sends i and waits
 * for the ponger's i + 1, round_trips times. count = round trips, sum = the
 * replies' sum. */
int peer_mq_pingpong(long round_trips, unsigned cpus, peer_mq_result *r);

/* producers threads each send n / producers values into one queue of
 * capacity cap, producer p sending i * producers + p for i = 0, 1, ... (so
 * that the consumer can check each producer's order), and the last one to
 * finish closes it; the consumer thread receives until the end. producers
 * must be a power of two below 64 (the check takes p = v & (producers - 1))
 * and n a multiple of it. producers == 1 is the SPSC case. */
int peer_mq_mpsc(long n, unsigned producers, size_t cap, unsigned cpus, peer_mq_result *r);

/* As peer_mq_mpsc, but each producer has a queue of its own (capacity cap,
 * closed by its producer when it is done) and the consumer takes from
 * whichever has an element — a select over `producers` queues. The queues
 * are a set under one mutex, with one condition variable for the consumer
 * and one per queue for its producer: the plain way to wait for any of
 * several queues with pthreads (queues with locks of their own would need
 * an event count on top). The consumer starts its scan one queue further
 * each time, so that none starves. */
int peer_mq_select(long n, unsigned producers, size_t cap, unsigned cpus, peer_mq_result *r);

#endif
