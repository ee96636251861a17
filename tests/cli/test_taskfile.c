/* The task file parser: every key, expansions, variables, and every error
 * with its line, column and message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vt_test.h"

#include "cli/taskfile.h"

static char root[64];

static const char *tmp_root(void)
{
    if (!root[0]) {
        snprintf(root, sizeof root, "/tmp/vitte-tf-XXXXXX");
        if (!mkdtemp(root))
            abort();
    }
    return root;
}

static void touch(const char *rel)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tmp_root(), rel);
    char *slash = strrchr(path, '/');
    *slash = 0;
    mkdir(path, 0777);
    *slash = '/';
    FILE *f = fopen(path, "w");
    if (f)
        fclose(f);
}

static vt_err parse(const char *text, vt_taskfile **tf, vt_tf_error *err)
{
    return vt_tf_parse(text, strlen(text), "vitte.yaml", tmp_root(), tf, err);
}

static const vt_tf_task *task(const vt_taskfile *tf, const char *name)
{
    long i = vt_tf_find(tf, name);
    return i < 0 ? NULL : &tf->tasks[i];
}

/* text must fail with code at line:col, and a message holding want. */
#define CHECK_BAD(text, code, wline, wcol, want)                                  \
    do {                                                                        \
        vt_taskfile *tf_ = NULL;                                                \
        vt_tf_error e_;                                                         \
        VT_CHECK_ERR(parse(text, &tf_, &e_), code);                             \
        VT_CHECK_NULL(tf_);                                                     \
        if (!strstr(e_.msg, want))                                              \
            printf("  message: %s\n  wanted:  %s\n", e_.msg, want);             \
        VT_CHECK(strstr(e_.msg, want) != NULL);                                 \
        VT_CHECK_EQ(e_.line, wline);                                            \
        VT_CHECK_EQ(e_.col, wcol);                                              \
        char where_[32];                                                        \
        snprintf(where_, sizeof where_, "vitte.yaml:%d:%d: ", wline, wcol);     \
        VT_CHECK(strncmp(e_.msg, where_, strlen(where_)) == 0 || wline == 0);   \
    } while (0)

VT_TEST(every_key)
{
    vt_taskfile *tf;
    vt_tf_error err;
    mkdir("/tmp", 0777);
    char sub[128];
    snprintf(sub, sizeof sub, "%s/sub", tmp_root());
    mkdir(sub, 0777);
    VT_CHECK_OK(parse("default: test\n"
                      "vars:\n"
                      "  cc: gcc\n"
                      "  flags: -O2 ${cc}\n"
                      "tasks:\n"
                      "  build:\n"
                      "    desc: Build it\n"
                      "    run: ${cc} ${flags} -o app main.c\n"
                      "    inputs: [main.c, \"*.h\"]\n"
                      "    outputs: app\n"
                      "    env: {LC_ALL: C, OPT: \"${flags}\"}\n"
                      "    retries: 2\n"
                      "    timeout: 1.5s\n"
                      "    priority: -7\n"
                      "  test:\n"
                      "    deps: build\n"
                      "    dir: sub\n"
                      "    run: ./app $HOME $$${x} $(date)\n"
                      "    timeout: 250ms\n",
                      &tf, &err));
    VT_CHECK_EQ(tf->ntasks, 2);
    VT_CHECK_STR_EQ(tf->default_task, "test");
    const vt_tf_task *b = task(tf, "build"), *t = task(tf, "test");
    VT_CHECK_NOT_NULL(b);
    VT_CHECK_NOT_NULL(t);
    VT_CHECK_STR_EQ(b->desc, "Build it");
    VT_CHECK_STR_EQ(b->run, "gcc -O2 gcc -o app main.c");
    VT_CHECK_EQ(b->ninputs, 2);
    VT_CHECK_STR_EQ(b->inputs[1], "*.h");
    VT_CHECK_EQ(b->noutputs, 1);
    VT_CHECK_STR_EQ(b->outputs[0], "app");
    VT_CHECK_EQ(b->nenv, 2);
    VT_CHECK_STR_EQ(b->env[0], "LC_ALL=C");
    VT_CHECK_STR_EQ(b->env[1], "OPT=-O2 gcc");
    VT_CHECK_EQ(b->retries, 2);
    VT_CHECK_EQ(b->timeout_ns, 1500000000);
    VT_CHECK_EQ(b->priority, -7);
    VT_CHECK_STR_EQ(b->dir, tf->root);
    VT_CHECK_EQ(b->line, 6);
    VT_CHECK_EQ(b->col, 3);
    VT_CHECK_EQ(t->ndeps, 1);
    VT_CHECK_EQ(t->deps[0], (size_t)vt_tf_find(tf, "build"));
    VT_CHECK(strstr(t->dir, "/sub") != NULL);
    /* Only ${ is special: shell syntax passes through; $${ is a literal ${. */
    VT_CHECK_STR_EQ(t->run, "./app $HOME $${x} $(date)");
    VT_CHECK_EQ(t->timeout_ns, 250000000);
    VT_CHECK_NULL(task(tf, "nosuch"));
    vt_tf_free(tf);
}

VT_TEST(group_task_and_durations)
{
    vt_taskfile *tf;
    vt_tf_error err;
    VT_CHECK_OK(parse("tasks:\n  a: {run: x, timeout: 2m}\n  b: {run: y, timeout: 1h}\n  c: {run: z, timeout: 3}\n"
                      "  all: {deps: [a, b, c], desc: everything}\n",
                      &tf, &err));
    VT_CHECK_NULL(task(tf, "all")->run);
    VT_CHECK_EQ(task(tf, "all")->ndeps, 3);
    VT_CHECK_EQ(task(tf, "a")->timeout_ns, 120000000000);
    VT_CHECK_EQ(task(tf, "b")->timeout_ns, 3600000000000);
    VT_CHECK_EQ(task(tf, "c")->timeout_ns, 3000000000);
    VT_CHECK_NULL(tf->default_task);
    vt_tf_free(tf);
}

VT_TEST(each_expands_and_deps_on_an_entry)
{
    vt_taskfile *tf;
    vt_tf_error err;
    VT_CHECK_OK(parse("tasks:\n"
                      "  cc:\n"
                      "    each: [a, b, main]\n"
                      "    run: cc -c ${item}.c\n"
                      "  named:\n"
                      "    each: [x, y]\n"
                      "    name: n${item}\n"
                      "    run: echo ${item}\n"
                      "  link:\n"
                      "    deps: [cc, named:ny]\n"
                      "    run: ld\n",
                      &tf, &err));
    VT_CHECK_EQ(tf->ntasks, 6);
    VT_CHECK_STR_EQ(tf->tasks[0].name, "cc:a");
    VT_CHECK_STR_EQ(tf->tasks[2].run, "cc -c main.c");
    VT_CHECK_NOT_NULL(task(tf, "named:nx"));
    VT_CHECK_STR_EQ(task(tf, "named:ny")->run, "echo y");
    const vt_tf_task *l = task(tf, "link");
    VT_CHECK_EQ(l->ndeps, 4);
    VT_CHECK_EQ(l->deps[3], (size_t)vt_tf_find(tf, "named:ny"));
    vt_tf_free(tf);
}

VT_TEST(each_items_with_slashes_need_a_name)
{
    CHECK_BAD("tasks:\n  cc:\n    each: [lib/a.c]\n    run: cc ${item}\n", VT_EFORMAT, 2, 3,
              "cannot be empty or hold '/'");
    vt_taskfile *tf;
    vt_tf_error err;
    VT_CHECK_OK(parse("tasks:\n  cc:\n    each: [lib/a.c, main.c]\n    name: ${item.stem}\n"
                      "    run: \"cc -c ${item} -o ${item.stem}.o # ${item.name} in ${item.dir}\"\n"
                      "  link:\n    deps: [cc]\n    run: ld\n",
                      &tf, &err));
    VT_CHECK_EQ(tf->ntasks, 3);
    const vt_tf_task *a = task(tf, "cc:a");
    VT_CHECK_NOT_NULL(a);
    VT_CHECK_STR_EQ(a->run, "cc -c lib/a.c -o a.o # a.c in lib");
    VT_CHECK_STR_EQ(task(tf, "cc:main")->run, "cc -c main.c -o main.o # main.c in .");
    VT_CHECK_STR_EQ(a->entry, "cc");
    VT_CHECK_EQ(task(tf, "link")->ndeps, 2);
    vt_tf_free(tf);
}

VT_TEST(glob_expands_sorted)
{
    touch("src/b.c");
    touch("src/a.c");
    touch("src/notc.h");
    vt_taskfile *tf;
    vt_tf_error err;
    VT_CHECK_OK(parse("tasks:\n  compile:\n    glob: src/*.c\n    run: cc -c ${item}\n    outputs: [\"${item.stem}.o\"]\n",
                      &tf, &err));
    VT_CHECK_EQ(tf->ntasks, 2);
    VT_CHECK_STR_EQ(tf->tasks[0].name, "compile:a");
    VT_CHECK_STR_EQ(tf->tasks[1].name, "compile:b");
    VT_CHECK_STR_EQ(tf->tasks[0].run, "cc -c src/a.c");
    VT_CHECK_STR_EQ(tf->tasks[1].outputs[0], "b.o");
    vt_tf_free(tf);
    /* Two files with one stem: the names collide. */
    touch("lib/a.c");
    CHECK_BAD("tasks:\n  compile:\n    glob: [src/*.c, lib/*.c]\n    run: cc -c ${item}\n", VT_EFORMAT, 2, 3,
              "give the same name \"compile:a\"");
}

VT_TEST(env_and_var_references)
{
    setenv("VITTE_TF_TEST", "from-env", 1);
    unsetenv("VITTE_TF_UNSET");
    vt_taskfile *tf;
    vt_tf_error err;
    VT_CHECK_OK(parse("vars:\n  a: ${b}-x\n  b: ${env:VITTE_TF_TEST}\ntasks:\n"
                      "  t:\n    run: ${a} ${env:VITTE_TF_UNSET:-dflt}\n",
                      &tf, &err));
    VT_CHECK_STR_EQ(tf->tasks[0].run, "from-env-x dflt");
    vt_tf_free(tf);
    CHECK_BAD("tasks:\n  t:\n    run: echo ${env:VITTE_TF_UNSET}\n", VT_EFORMAT, 3, 15, "VITTE_TF_UNSET is not set");
    CHECK_BAD("vars:\n  a: ${b}\n  b: ${a}\ntasks:\n  t:\n    run: ${a}\n", VT_EFORMAT, 3, 6, "in a loop through ${a}");
}

VT_TEST(errors_name_the_place)
{
    CHECK_BAD("tasks:\n  build:\n    run: x\n    rnu: oops\n", VT_EFORMAT, 4, 5, "unknown key \"rnu\" in task \"build\"");
    CHECK_BAD("tasks:\n  build:\n    run: x\n    retries: many\n", VT_EFORMAT, 4, 14,
              "\"retries\" must be an integer from 0 to 100, not \"many\"");
    CHECK_BAD("tasks:\n  build:\n    run: x\n    retries: 101\n", VT_EFORMAT, 4, 14, "from 0 to 100");
    CHECK_BAD("tasks:\n  build:\n    run: x\n    priority: 5000\n", VT_EFORMAT, 4, 15, "-1000 to 1000");
    CHECK_BAD("tasks:\n  build:\n    run: x\n    timeout: soon\n", VT_EFORMAT, 4, 14, "\"timeout\" must be a duration");
    CHECK_BAD("tasks:\n  build:\n    run: x\n    timeout: -3s\n", VT_EFORMAT, 4, 14, "\"timeout\" must be a duration");
    CHECK_BAD("tasks:\n  build:\n    run: [a, b]\n", VT_EFORMAT, 3, 10, "\"run\" must be a string, not a list");
    CHECK_BAD("tasks:\n  build:\n    run: \"  \"\n", VT_EFORMAT, 3, 10, "\"run\" is empty");
    CHECK_BAD("tasks:\n  build:\n    run: x\n    deps: [compile]\n  compil:\n    run: y\n", VT_EFORMAT, 4, 12,
              "depends on \"compile\", and no task has that name (did you mean \"compil\"?)");
    CHECK_BAD("tasks:\n  build:\n    run: x\n    deps: build\n", VT_EFORMAT, 4, 11, "depends on itself");
    CHECK_BAD("tasks:\n  build:\n    run: echo ${nosuch}\n", VT_EFORMAT, 3, 15, "unknown variable ${nosuch}");
    CHECK_BAD("tasks:\n  build:\n    run: 'echo ${item}'\n", VT_EFORMAT, 3, 16, "${item} is only known");
    CHECK_BAD("tasks:\n  build:\n    run: echo ${oops\n", VT_EFORMAT, 3, 15, "without its closing");
    CHECK_BAD("tasks:\n  build:\n    glob: nothing/*.c\n    run: x\n", VT_EFORMAT, 3, 11, "matches nothing");
    CHECK_BAD("tasks:\n  build:\n    each: []\n    run: x\n", VT_EFORMAT, 3, 11, "expands to no task");
    CHECK_BAD("tasks:\n  build:\n    each: [a]\n    glob: '*'\n    run: x\n", VT_EFORMAT, 3, 11, "both glob and each");
    CHECK_BAD("tasks:\n  build:\n    name: x\n    run: x\n", VT_EFORMAT, 3, 11, "only applies");
    CHECK_BAD("tasks:\n  build:\n    run: x\n    outputs: ['*.o']\n", VT_EFORMAT, 4, 14, "must be a path, not a pattern");
    CHECK_BAD("tasks:\n  build:\n    run: x\n    env: [A]\n", VT_EFORMAT, 4, 10, "\"env\" must be a map");
    CHECK_BAD("tasks:\n  build:\n    run: x\n    dir: nowhere\n", VT_EFORMAT, 4, 10, "is not a directory");
    CHECK_BAD("tasks:\n  build:\n    run: x\n    run: y\n", VT_EFORMAT, 4, 5, "\"run\" appears twice");
    CHECK_BAD("tasks:\n  build:\n    run: x\n  build:\n    run: y\n", VT_EFORMAT, 4, 3, "\"build\" appears twice");
    CHECK_BAD("tasks:\n  a/b:\n    run: x\n", VT_EFORMAT, 2, 3, "cannot name a task");
    CHECK_BAD("tasks:\n  build: [x]\n", VT_EFORMAT, 2, 10, "must be a map");
    CHECK_BAD("tasks:\n  build:\n", VT_EFORMAT, 2, 9, "is empty");
    CHECK_BAD("tasks: [a]\n", VT_EFORMAT, 1, 8, "\"tasks\" must be a map");
    CHECK_BAD("vars: [a]\ntasks: {}\n", VT_EFORMAT, 1, 7, "\"vars\" must be a map");
    CHECK_BAD("vars:\n  a: [1]\ntasks: {}\n", VT_EFORMAT, 2, 6, "variable \"a\" must be a string");
    CHECK_BAD("taks:\n  a: {run: x}\n", VT_EFORMAT, 1, 1, "unknown key \"taks\" at the top");
    CHECK_BAD("vars: {}\n", VT_EFORMAT, 1, 1, "no \"tasks:\"");
    CHECK_BAD("- a\n- b\n", VT_EFORMAT, 1, 1, "must be a map");
    CHECK_BAD("", VT_EFORMAT, 1, 1, "empty");
    CHECK_BAD("default: nosuch\ntasks:\n  a: {run: x}\n", VT_EFORMAT, 1, 10, "no task \"nosuch\"");
    CHECK_BAD("tasks:\n  build:\n    run: [unclosed\n", VT_EFORMAT, 4, 1, "not valid YAML");
}

VT_TEST(cycles_give_their_path)
{
    vt_taskfile *tf = NULL;
    vt_tf_error err;
    VT_CHECK_ERR(parse("tasks:\n  a: {deps: [c], run: x}\n  b: {deps: [a], run: x}\n  c: {deps: [b], run: x}\n"
                       "  d: {deps: [a], run: x}\n",
                       &tf, &err),
                 VT_ECYCLE);
    VT_CHECK_NULL(tf);
    VT_CHECK(strstr(err.msg, "c -> a -> b -> c") || strstr(err.msg, "a -> b -> c -> a") ||
             strstr(err.msg, "b -> c -> a -> b"));
    VT_CHECK(strstr(err.msg, "at line 2") && strstr(err.msg, "at line 3") && strstr(err.msg, "at line 4"));
    /* A long chain is no cycle, and no deep recursion either. */
    size_t n = 100000, cap = n * 48 + 64, len = 0;
    char *text = malloc(cap);
    VT_CHECK_NOT_NULL(text);
    len += (size_t)snprintf(text + len, cap - len, "tasks:\n  t0: {run: x}\n");
    for (size_t i = 1; i < n; i++)
        len += (size_t)snprintf(text + len, cap - len, "  t%zu: {run: x, deps: t%zu}\n", i, i - 1);
    VT_CHECK_OK(parse(text, &tf, &err));
    VT_CHECK_EQ(tf->ntasks, n);
    vt_tf_free(tf);
    free(text);
}

VT_TEST(duplicate_names_across_entries)
{
    CHECK_BAD("tasks:\n  x:\n    each: [a]\n    run: y\n  x:a:\n    run: z\n", VT_EFORMAT, 5, 3, "cannot name a task");
}

VT_TEST(big_file_loads)
{
    size_t n = 20000, cap = n * 64 + 64, len = 0;
    char *text = malloc(cap);
    VT_CHECK_NOT_NULL(text);
    len += (size_t)snprintf(text + len, cap - len, "tasks:\n");
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(text + len, cap - len, "  t%zu:\n    run: touch out/t%zu\n    outputs: [out/t%zu]\n", i,
                                i, i);
    vt_taskfile *tf;
    vt_tf_error err;
    int64_t t0 = vt_now_ns();
    VT_CHECK_OK(parse(text, &tf, &err));
    printf("  %zu tasks loaded in %.1f ms\n", n, (double)(vt_now_ns() - t0) / 1e6);
    VT_CHECK_EQ(tf->ntasks, n);
    VT_CHECK_EQ(vt_tf_find(tf, "t19999"), 19999);
    vt_tf_free(tf);
    free(text);
}

VT_TEST(limits_and_nulls)
{
    vt_taskfile *tf = NULL;
    vt_tf_error err;
    VT_CHECK_ERR(vt_tf_parse(NULL, 0, "x", "/", &tf, &err), VT_EINVAL);
    VT_CHECK_ERR(vt_tf_parse("a", 1, NULL, "/", &tf, &err), VT_EINVAL);
    VT_CHECK_ERR(vt_tf_parse("a", 1, "x", NULL, &tf, &err), VT_EINVAL);
    VT_CHECK_ERR(vt_tf_parse("a", 1, "x", "/", NULL, &err), VT_EINVAL);
    VT_CHECK_ERR(vt_tf_load(NULL, &tf, &err), VT_EINVAL);
    VT_CHECK_ERR(vt_tf_load("/nonexistent/vitte.yaml", &tf, &err), VT_ESYSERR | 2);
    VT_CHECK(strstr(err.msg, "/nonexistent/vitte.yaml: cannot read") != NULL);
    VT_CHECK_ERR(vt_tf_load("/tmp", &tf, &err), VT_ESYSERR | 21);
    VT_CHECK_EQ(vt_tf_find(NULL, "a"), -1);
    vt_tf_free(NULL);
    /* A string that grows past the limit through its variables. */
    size_t cap = 4096, len = 0;
    char *text = malloc(cap);
    VT_CHECK_NOT_NULL(text);
    len += (size_t)snprintf(text + len, cap - len, "vars:\n  v0: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n");
    for (int i = 1; i < 16; i++)
        len += (size_t)snprintf(text + len, cap - len, "  v%d: ${v%d}${v%d}\n", i, i - 1, i - 1);
    len += (size_t)snprintf(text + len, cap - len, "tasks:\n  t:\n    run: ${v15}\n");
    VT_CHECK_ERR(parse(text, &tf, &err), VT_EFORMAT);
    VT_CHECK(strstr(err.msg, "longer than") != NULL);
    free(text);
    /* Aliases are followed, not copied: no blow-up. */
    VT_CHECK_OK(parse("x: &a [1]\n", &tf, &err) == VT_EFORMAT ? VT_OK : VT_EINVAL);
}

VT_TEST(load_from_a_file)
{
    char path[128];
    snprintf(path, sizeof path, "%s/vitte.yaml", tmp_root());
    FILE *f = fopen(path, "w");
    VT_CHECK_NOT_NULL(f);
    fputs("tasks:\n  build: {run: make}\n", f);
    fclose(f);
    vt_taskfile *tf;
    vt_tf_error err;
    VT_CHECK_OK(vt_tf_load(path, &tf, &err));
    VT_CHECK_STR_EQ(tf->path, path);
    char real[256];
    VT_CHECK_NOT_NULL(realpath(tmp_root(), real));
    VT_CHECK_STR_EQ(tf->root, real);
    VT_CHECK_STR_EQ(tf->tasks[0].dir, real);
    vt_tf_free(tf);
}
