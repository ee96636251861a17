/* bench.h — what every bench/<layer>/bench_<what>.c shares: the command
 * line, the clock, interleaved repetitions, medians and the BENCH lines.
 *
 * A benchmark describes its measurements as cases, one per (impl, threads)
 * pair, each with a function that performs one timed repetition and returns
 * its figure in ns. bench_run() does one untimed warm-up of every case, then
 * reps rounds; each round runs every case once, round robin, starting one
 * case further on each round so that no impl always follows the same one
 * (a runtime whose threads still spin after their work is done would
 * otherwise always slow down the same neighbour). Between two measurements
 * it sleeps --gap-ms, long enough for libgomp's and oneTBB's threads to stop
 * spinning and go to sleep: every impl then starts from sleeping threads,
 * as vitte's parked workers do. bench_report() prints, for each case:
 *
 *   BENCH name=<name> impl=<impl> threads=<n> median_ns=<x> min_ns=.. max_ns=.. reps=..
 *         [ratio=<median / serial median>] [extra key=value pairs]
 *
 * ratio appears when a case with impl "serial" and the same name ran in the
 * same process. A measurement that fails (wrong result, error from the
 * library) marks its case failed: bench_report() prints "error: ..." for it
 * and returns 1, and the program must exit non-zero. Never a timing
 * threshold: figures are printed, not judged.
 *
 * Command line (bench_parse): --impl NAME[,NAME...]|all, --threads N[,N...],
 * --reps R (>= 1; default 7), --gap-ms G (default 30), plus the integer
 * options a benchmark declares. Impls the program knows but was built
 * without print "skip: <impl> not found"; impls it does not know at all
 * print "skip: <impl> not in this benchmark". Exit status: 0 fine, 1 a failed
 * measurement, 2 bad usage. */
#ifndef VITTE_BENCH_H
#define VITTE_BENCH_H

/* Include this first: nanosleep, strtok_r and clock_gettime need it before
 * any system header. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define BENCH_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define BENCH_SANITIZED 1
#endif
#endif

#define BENCH_MAX_IMPLS 8
#define BENCH_MAX_THREADS 8
#define BENCH_MAX_REPS 1000
#define BENCH_MAX_CASES (BENCH_MAX_IMPLS * BENCH_MAX_THREADS)

/* An impl a benchmark knows; available = 0 when it was compiled out. */
typedef struct bench_impl {
    const char *name;
    int available;
} bench_impl;

/* An extra integer option, "--jobs 1048576". */
typedef struct bench_opt {
    const char *flag;
    long *value;
    const char *help;
} bench_opt;

typedef struct bench_args {
    const char *prog;
    int impl_on[BENCH_MAX_IMPLS]; /* indexed like the bench's impl table */
    unsigned threads[BENCH_MAX_THREADS];
    int n_threads;
    int reps;
    int gap_ms;
} bench_args;

typedef struct bench_case bench_case;

/* One timed repetition: stores the figure (ns) in *ns and returns 0, or
 * returns -1 after bench_fail(). */
typedef int (*bench_rep_fn)(bench_case *c, double *ns);

struct bench_case {
    const char *name; /* BENCH name= */
    const char *impl; /* impl= */
    unsigned threads;
    bench_rep_fn rep;
    void *ctx;       /* the benchmark's */
    char extra[256]; /* " key=value ..." appended to the BENCH line */
    /* Filled by bench_run: */
    int warmup; /* 1 during the untimed warm-up call of rep */
    double samples[BENCH_MAX_REPS];
    int n;
    int failed;
};

/* Monotonic ns; independent of libvitte so that peers time the same way. */
static inline int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void bench_sleep_ns(int64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Marks c failed with a message; returns -1 for the rep function to return. */
static inline int bench_fail(bench_case *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline int bench_fail(bench_case *c, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "error: %s impl=%s threads=%u: ", c->name, c->impl, c->threads);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    c->failed = 1;
    return -1;
}

/* Appends " key=value" to c->extra (silently truncated past its size). */
static inline void bench_extra(bench_case *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline void bench_extra(bench_case *c, const char *fmt, ...)
{
    size_t len = strlen(c->extra);
    if (len + 2 >= sizeof c->extra)
        return;
    c->extra[len++] = ' ';
    c->extra[len] = '\0';
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->extra + len, sizeof c->extra - len, fmt, ap);
    va_end(ap);
}

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of v[0..n-1] (n >= 1); the mean of the middle two for even n. */
static inline double bench_median(const double *v, int n)
{
    double s[BENCH_MAX_REPS];
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, bench_cmp_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* Enough digits for ns-per-operation figures, none wasted on milliseconds. */
static inline const char *bench_fmt(char *buf, size_t size, double ns)
{
    snprintf(buf, size, ns >= 1000 ? "%.0f" : "%.2f", ns);
    return buf;
}

static inline void bench_usage(const char *prog, const bench_impl *impls, int n_impls,
                               const bench_opt *opts)
{
    fprintf(stderr,
            "usage: %s [--impl NAME[,NAME...]|all] [--threads N[,N...]] [--reps R] [--gap-ms G]",
            prog);
    for (const bench_opt *o = opts; o && o->flag; o++)
        fprintf(stderr, " [%s N]", o->flag);
    fprintf(stderr, "\n  impls:");
    for (int i = 0; i < n_impls; i++)
        fprintf(stderr, " %s%s", impls[i].name, impls[i].available ? "" : " (not built)");
    fputc('\n', stderr);
    for (const bench_opt *o = opts; o && o->flag; o++)
        fprintf(stderr, "  %s N: %s (default %ld)\n", o->flag, o->help, *o->value);
}

static inline int bench_parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* Parses argv into *a. impls lists what the program knows (at most
 * BENCH_MAX_IMPLS); default_threads is used without --threads. Prints
 * "skip: <impl> not found" for impls asked for (or implied by "all") that
 * were not built, and leaves them off. Exits with status 2 on bad usage. */
static inline void bench_parse(bench_args *a, int argc, char **argv, const bench_impl *impls,
                               int n_impls, unsigned default_threads, const bench_opt *opts)
{
#ifdef BENCH_SANITIZED
    fprintf(stderr, "%s: built with a sanitizer: benchmarks run on release builds only\n", argv[0]);
    exit(2);
#endif
    memset(a, 0, sizeof *a);
    a->prog = argv[0];
    a->reps = 7;
    a->gap_ms = 30;
    a->threads[0] = default_threads;
    a->n_threads = 1;
    const char *impl_arg = "all";
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
        if (!strcmp(f, "-h") || !strcmp(f, "--help")) {
            bench_usage(a->prog, impls, n_impls, opts);
            exit(0);
        }
        if (!v)
            goto bad;
        i++;
        if (!strcmp(f, "--impl")) {
            impl_arg = v;
        } else if (!strcmp(f, "--threads")) {
            a->n_threads = 0;
            char buf[128];
            snprintf(buf, sizeof buf, "%s", v);
            for (char *save, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (a->n_threads == BENCH_MAX_THREADS || bench_parse_long(t, 1, 4096, &n))
                    goto bad;
                a->threads[a->n_threads++] = (unsigned)n;
            }
            if (!a->n_threads)
                goto bad;
        } else if (!strcmp(f, "--reps")) {
            if (bench_parse_long(v, 1, BENCH_MAX_REPS, &n))
                goto bad;
            a->reps = (int)n;
        } else if (!strcmp(f, "--gap-ms")) {
            if (bench_parse_long(v, 0, 60000, &n))
                goto bad;
            a->gap_ms = (int)n;
        } else {
            const bench_opt *o = opts;
            while (o && o->flag && strcmp(o->flag, f))
                o++;
            if (!o || !o->flag || bench_parse_long(v, 1, 1L << 40, o->value))
                goto bad;
        }
    }
    if (!strcmp(impl_arg, "all")) {
        for (int k = 0; k < n_impls; k++)
            a->impl_on[k] = 1;
    } else {
        char buf[128];
        snprintf(buf, sizeof buf, "%s", impl_arg);
        for (char *save, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            int k = 0;
            while (k < n_impls && strcmp(impls[k].name, t))
                k++;
            /* Not an error: bench/run --impl vitte,tbb asks every benchmark,
             * and some have no tbb version. */
            if (k == n_impls)
                printf("skip: %s not in this benchmark\n", t);
            else
                a->impl_on[k] = 1;
        }
    }
    for (int k = 0; k < n_impls; k++) {
        if (a->impl_on[k] && !impls[k].available) {
            printf("skip: %s not found\n", impls[k].name);
            a->impl_on[k] = 0;
        }
    }
    fflush(stdout);
    return;
bad:
    bench_usage(a->prog, impls, n_impls, opts);
    exit(2);
}

/* Warm-up, then a->reps interleaved rounds over cases[0..n-1] (see top).
 * A case that fails is not measured again. */
static inline void bench_run(bench_case *cases, int n, const bench_args *a)
{
    for (int i = 0; i < n; i++) {
        double ns;
        cases[i].n = 0;
        cases[i].warmup = 1;
        if (cases[i].rep(&cases[i], &ns) == 0 && a->gap_ms)
            bench_sleep_ns((int64_t)a->gap_ms * 1000000);
        cases[i].warmup = 0;
    }
    for (int r = 0; r < a->reps; r++) {
        for (int j = 0; j < n; j++) {
            bench_case *c = &cases[(r + j) % n];
            double ns;
            if (c->failed)
                continue;
            if (c->rep(c, &ns) == 0)
                c->samples[c->n++] = ns;
            if (a->gap_ms)
                bench_sleep_ns((int64_t)a->gap_ms * 1000000);
        }
    }
}

/* Prints one BENCH line per case measured (see top); returns 1 if a case
 * failed, else 0. */
static inline int bench_report(bench_case *cases, int n)
{
    int status = 0;
    for (int i = 0; i < n; i++) {
        bench_case *c = &cases[i];
        if (c->failed || c->n == 0) {
            printf("error: %s impl=%s threads=%u failed\n", c->name, c->impl, c->threads);
            status = 1;
            continue;
        }
        double med = bench_median(c->samples, c->n), lo = c->samples[0], hi = c->samples[0];
        for (int k = 1; k < c->n; k++) {
            lo = c->samples[k] < lo ? c->samples[k] : lo;
            hi = c->samples[k] > hi ? c->samples[k] : hi;
        }
        char b1[32], b2[32], b3[32], ratio[48] = "";
        for (int j = 0; j < n; j++) {
            bench_case *s = &cases[j];
            if (!strcmp(s->impl, "serial") && !strcmp(s->name, c->name) && !s->failed && s->n) {
                snprintf(ratio, sizeof ratio, " ratio=%.2f", med / bench_median(s->samples, s->n));
                break;
            }
        }
        printf("BENCH name=%s impl=%s threads=%u median_ns=%s min_ns=%s max_ns=%s reps=%d%s%s\n",
               c->name, c->impl, c->threads, bench_fmt(b1, sizeof b1, med),
               bench_fmt(b2, sizeof b2, lo), bench_fmt(b3, sizeof b3, hi), c->n, ratio, c->extra);
    }
    fflush(stdout);
    return status;
}

#endif
