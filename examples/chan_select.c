/* chan_select: a pool of worker fibers fed through one channel, results
 * gathered through another, a ticker and a quit signal watched with select.
 *
 *     build/release/examples/chan_select [jobs]
 */
#include <stdio.h>
#include <stdlib.h>

#include <vitte/async.h>

enum { WORKERS = 4 };

typedef struct job {
    int id;
    long n;
} job;

typedef struct result {
    int id;
    long collatz_steps;
} result;

typedef struct pool_chans {
    vt_chan *jobs;    /* MPMC: the main fiber sends, every worker receives */
    vt_chan *results; /* MPSC: every worker sends, the main fiber receives */
} pool_chans;

static long collatz_steps(long n)
{
    long steps = 0;
    for (; n > 1; steps++)
        n = n % 2 ? 3 * n + 1 : n / 2;
    return steps;
}

static void *worker(void *arg)
{
    pool_chans *pc = arg;
    job j;
    while (vt_chan_recv(pc->jobs, &j, VT_FOREVER) == VT_OK) {
        result r = {j.id, collatz_steps(j.n)};
        if (vt_chan_send(pc->results, &r, VT_FOREVER) != VT_OK)
            break;
    }
    return NULL;
}

/* Sends a tick every 5 ms until told to stop. */
static void *ticker(void *arg)
{
    vt_chan **chans = arg; /* {ticks, quit} */
    int tick = 0;
    for (;;) {
        char stop;
        vt_select_case cases[] = {
            {chans[1], VT_SELECT_RECV, &stop},
        };
        size_t i;
        vt_err e = vt_select(cases, 1, &i, vt_fiber_deadline(5 * 1000 * 1000));
        if (e != VT_ETIMEDOUT)
            return NULL; /* quit received or closed */
        tick++;
        if (vt_chan_try_send(chans[0], &tick) == VT_ECLOSED)
            return NULL;
    }
}

static int app(int argc, char **argv)
{
    int jobs = argc > 1 ? atoi(argv[1]) : 20000;
    if (jobs <= 0) {
        fprintf(stderr, "usage: chan_select [jobs > 0]\n");
        return 2;
    }
    pool_chans pc;
    vt_chan *ticks, *quit;
    if (vt_chan_new(&pc.jobs, sizeof(job), 256, VT_CHAN_MPMC) ||
        vt_chan_new(&pc.results, sizeof(result), 256, VT_CHAN_MPSC) ||
        vt_chan_new(&ticks, sizeof(int), 1, VT_CHAN_SPSC) || vt_chan_new(&quit, 1, 0, 0)) {
        fprintf(stderr, "chan_select: out of memory\n");
        return 1;
    }
    vt_fiber workers[WORKERS], tick_fiber;
    for (int i = 0; i < WORKERS; i++)
        vt_fiber_spawn(&workers[i], worker, &pc);
    vt_chan *tick_chans[2] = {ticks, quit};
    vt_fiber_spawn(&tick_fiber, ticker, tick_chans);

    /* One loop feeds the jobs, takes the results and counts the ticks: a
     * send case that is switched off (chan = NULL) once every job is out. */
    int sent = 0, received = 0, tick_count = 0;
    long most_steps = 0, most_at = 0;
    job next = {0, 1};
    result r;
    int tick;
    while (received < jobs) {
        vt_select_case cases[] = {
            {sent < jobs ? pc.jobs : NULL, VT_SELECT_SEND, &next},
            {pc.results, VT_SELECT_RECV, &r},
            {ticks, VT_SELECT_RECV, &tick},
        };
        size_t i;
        vt_err e = vt_select(cases, 3, &i, VT_FOREVER);
        if (e != VT_OK) {
            fprintf(stderr, "chan_select: select: %s\n", vt_strerror(e));
            return 1;
        }
        if (i == 0) {
            sent++;
            next = (job){sent, sent + 1};
        } else if (i == 1) {
            received++;
            if (r.collatz_steps > most_steps) {
                most_steps = r.collatz_steps;
                most_at = r.id + 1;
            }
        } else {
            tick_count++;
        }
    }
    vt_chan_close(pc.jobs); /* the workers drain it and end */
    for (int i = 0; i < WORKERS; i++)
        vt_fiber_await(workers[i], NULL, VT_FOREVER);
    char stop = 1;
    vt_chan_send(quit, &stop, VT_FOREVER); /* rendezvous: the ticker has it */
    vt_fiber_await(tick_fiber, NULL, VT_FOREVER);

    printf("%d jobs on %d worker fibers; longest Collatz chain below %d starts at %ld (%ld steps); %d ticks\n",
           jobs, WORKERS, jobs + 1, most_at, most_steps, tick_count);
    vt_chan_free(pc.jobs);
    vt_chan_free(pc.results);
    vt_chan_free(ticks);
    vt_chan_free(quit);
    return 0;
}

VT_MAIN(app)
