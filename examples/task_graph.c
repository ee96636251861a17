/* task_graph.c — a small build as a task graph: named tasks with
 * dependencies, a flaky step with retries, a result handed to a dependant,
 * subtasks, a store so that a second run resumes instead of redoing, and a
 * Perfetto trace of the run.
 *
 *     task_graph [STORE.db [TRACE.json]]
 *
 * Run it twice with the same store: the second run restores every task. */
#define _POSIX_C_SOURCE 200809L /* strtok_r */
#include <stdio.h>
#include <string.h>

#include <vitte/task.h>

static vt_err fetch(vt_task_ctx *ctx, void *data)
{
    (void)data;
    /* A network that fails twice before it answers. */
    if (vt_ctx_attempt(ctx) < 3)
        return vt_ctx_fail(ctx, "connection reset (attempt %u)", vt_ctx_attempt(ctx));
    const char *sources = "main.c util.c io.c";
    vt_ctx_log(ctx, VT_LOG_INFO, "fetched %s", sources);
    return vt_ctx_set_result(ctx, sources, strlen(sources) + 1);
}

static vt_err compile_one(vt_task_ctx *ctx, void *data)
{
    vt_ctx_log(ctx, VT_LOG_INFO, "cc -c %s", (const char *)data);
    vt_ctx_progress(ctx, 1.0);
    return VT_OK;
}

/* One subtask per source file named by fetch's result. */
static vt_err compile(vt_task_ctx *ctx, void *data)
{
    (void)data;
    const void *res;
    size_t len;
    vt_err e = vt_ctx_dep_result(ctx, "fetch", &res, &len);
    if (e)
        return vt_ctx_fail(ctx, "no sources from fetch: %s", vt_strerror(e));
    static char files[256];
    snprintf(files, sizeof files, "%s", (const char *)res);
    char *save;
    for (char *f = strtok_r(files, " ", &save); f; f = strtok_r(NULL, " ", &save))
        if (!vt_ctx_add(ctx, f, compile_one, f))
            return VT_ENOMEM;
    return VT_OK;
}

static vt_err step(vt_task_ctx *ctx, void *data)
{
    vt_ctx_log(ctx, VT_LOG_INFO, "%s", (const char *)data);
    return VT_OK;
}

static void show(const vt_graph *g, vt_err e)
{
    vt_run_summary s;
    vt_graph_summary(g, &s);
    printf("run %s: %s — %zu tasks, %zu succeeded (%zu restored), %zu failed, %zu retries\n",
           vt_graph_run_id(g), e ? vt_strerror(e) : "ok", s.total, s.succeeded, s.restored,
           s.failed, s.retries);
    if (e)
        printf("  %s\n", vt_graph_error(g));
}

int main(int argc, char **argv)
{
    const char *store_path = argc > 1 ? argv[1] : NULL;
    const char *trace_path = argc > 2 ? argv[2] : NULL;

    vt_runtime *rt;
    vt_err e = vt_runtime_new(&rt, NULL);
    if (e) {
        fprintf(stderr, "runtime: %s\n", vt_strerror(e));
        return 1;
    }
    vt_graph *g;
    vt_graph_new(&g, "build");
    vt_task *fetch_t = vt_task_add(g, "fetch", fetch, NULL);
    vt_task_add(g, "configure", step, "./configure --prefix=/usr");
    vt_task *cc = vt_task_add(g, "compile", compile, NULL);
    vt_task *ld = vt_task_add(g, "link", step, "cc -o app *.o");
    vt_task_add(g, "test", step, "./app --self-test");
    vt_task_precede(fetch_t, cc);
    vt_task_depend(cc, "configure");
    vt_task_precede(cc, ld);
    vt_task_depend(vt_graph_find(g, "test"), "link");
    vt_task_set_retry(fetch_t, &(vt_retry){.max_attempts = 5,
                                           .backoff = VT_BACKOFF_EXPONENTIAL,
                                           .delay_ns = VT_MS(1),
                                           .max_delay_ns = VT_MS(20),
                                           .jitter = 0.2});
    if ((e = vt_graph_validate(g))) {
        fprintf(stderr, "graph: %s\n", vt_graph_error(g));
        return 1;
    }

    vt_store *store = NULL;
    if (store_path && (e = vt_store_open(&store, store_path, NULL))) {
        fprintf(stderr, "store: %s\n", vt_store_last_error());
        return 1;
    }
    vt_monitor *mon = NULL;
    if (trace_path)
        vt_monitor_new(&mon, &(vt_monitor_opts){.record = 1});

    vt_run_opts opts = {.store = store, .run_id = store ? "example" : NULL, .monitor = mon};
    e = vt_graph_run(g, rt, &opts);
    show(g, e);
    printf("fetch ran %u times; its log:\n%s", vt_task_attempts(fetch_t), vt_task_log(fetch_t));

    if (mon) {
        FILE *f = fopen(trace_path, "w");
        if (f && vt_monitor_write_trace(mon, f) == VT_OK)
            printf("trace written to %s (open it in ui.perfetto.dev)\n", trace_path);
        if (f)
            fclose(f);
    }
    vt_graph_write_dot(g, stdout);

    vt_monitor_free(mon);
    vt_store_close(store);
    vt_graph_free(g);
    vt_runtime_free(rt);
    return e ? 1 : 0;
}
