/* pipeline_stats.c — a pipeline watched while it runs: a source of
 * numbers, a parallel stage that "parses" them (one in a thousand fails,
 * is retried once, then skipped and reported), a filter, and a sink; the
 * main thread prints a snapshot of every stage's counters while the
 * stream flows, then the totals and, if asked, the stages as DOT.
 *
 *     pipeline_stats [ITEMS [PIPELINE.dot]] */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include <vitte/flow.h>

/* The source's and the sink's states on lines of their own: two workers
 * may run the source and the sink at the same time. */
typedef struct numbers {
    _Alignas(64) uint64_t next, count;
} numbers;

typedef struct totals {
    _Alignas(64) uint64_t sum, items;
} totals;

static vt_err produce(void *ud, void *out)
{
    numbers *n = ud;
    if (n->next == n->count)
        return VT_ECLOSED; /* the end of the stream */
    *(uint64_t *)out = n->next++;
    return VT_OK;
}

/* Some work per item; items ending in 999 fail (a bad record). */
static vt_err parse(void *ud, const void *in, void *out)
{
    (void)ud;
    uint64_t v = *(const uint64_t *)in;
    if (v % 1000 == 999)
        return VT_EFORMAT;
    uint64_t h = v;
    for (int i = 0; i < 64; i++)
        h = h * 6364136223846793005ull + 1442695040888963407ull;
    *(uint64_t *)out = h;
    return VT_OK;
}

/* Keeps one item in four: VT_ENOENT drops an item (not a failure). */
static vt_err keep_some(void *ud, const void *in, void *out)
{
    (void)ud;
    uint64_t h = *(const uint64_t *)in;
    if (h >> 62)
        return VT_ENOENT;
    *(uint64_t *)out = h;
    return VT_OK;
}

static vt_err consume(void *ud, const void *in)
{
    totals *t = ud;
    t->sum += *(const uint64_t *)in;
    t->items++;
    return VT_OK;
}

/* Told about every item the parser gave up on. */
static void report(void *ud, const char *stage, const void *in, vt_err err)
{
    uint64_t *shown = ud;
    if ((*shown)++ < 3)
        fprintf(stderr, "skipped item %" PRIu64 " in %s: %s\n", *(const uint64_t *)in, stage,
                vt_strerror(err));
}

static void show(vt_pipeline *p)
{
    vt_pipeline_stats st;
    vt_pipe_stage_stats ss[4];
    if (vt_pipeline_stats_get(p, &st, ss, 4))
        return;
    printf("%s: %" PRIu64 " in flight (at most %" PRIu64 ")\n", st.running ? "running" : "ended",
           st.items_in_flight, st.max_items);
    for (size_t i = 0; i < st.stages && i < 4; i++)
        printf("  %-6s in %9" PRIu64 "  out %9" PRIu64 "  dropped %8" PRIu64 "  skipped %4" PRIu64
               "  queued %5" PRIu64 "  %6.1f ns/item\n",
               ss[i].name, ss[i].items_in, ss[i].items_out, ss[i].dropped, ss[i].skipped,
               ss[i].queued, ss[i].ns_per_item);
}

int main(int argc, char **argv)
{
    numbers src = {.count = argc > 1 ? strtoull(argv[1], NULL, 10) : 2000000};
    totals sink = {0};
    uint64_t shown = 0;

    vt_runtime *rt;
    vt_err e = vt_runtime_new(&rt, NULL);
    if (e) {
        fprintf(stderr, "runtime: %s\n", vt_strerror(e));
        return 1;
    }
    vt_pipeline *p;
    if ((e = vt_pipeline_new(&p, "numbers", NULL))) {
        fprintf(stderr, "pipeline: %s\n", vt_strerror(e));
        vt_runtime_free(rt);
        return 1;
    }
    vt_pipeline_add_source(p, "source", sizeof(uint64_t), produce, &src, NULL);
    vt_pipeline_add_stage(p, "parse", sizeof(uint64_t), parse, NULL,
                          &(vt_pipe_stage_opts){.kind = VT_PIPE_PARALLEL,
                                                .retry = {.max_attempts = 2},
                                                .on_fail = VT_PIPE_SKIP,
                                                .on_skip = report,
                                                .on_skip_ud = &shown});
    vt_pipeline_add_stage(p, "filter", sizeof(uint64_t), keep_some, NULL, NULL);
    vt_pipeline_add_sink(p, "sink", consume, &sink, NULL);

    if ((e = vt_pipeline_start(p, rt))) {
        fprintf(stderr, "%s: %s\n", vt_strerror(e), vt_pipeline_error(p));
        vt_pipeline_free(p);
        vt_runtime_free(rt);
        return 1;
    }
    /* Watch it: every 20 ms, until the stream has ended. */
    while ((e = vt_pipeline_wait(p, vt_deadline_after(VT_MS(20)))) == VT_ETIMEDOUT)
        show(p);
    show(p);
    int status = 0;
    if (e) {
        fprintf(stderr, "%s: %s\n", vt_strerror(e), vt_pipeline_error(p));
        status = 1;
    }
    printf("%" PRIu64 " items kept, sum %" PRIu64 "\n", sink.items, sink.sum);
    if (argc > 2) {
        FILE *out = fopen(argv[2], "w");
        if (!out || vt_pipeline_write_dot(p, out)) {
            perror(argv[2]);
            status = 1;
        }
        if (out)
            fclose(out);
    }
    vt_pipeline_free(p);
    vt_runtime_free(rt);
    return status;
}
