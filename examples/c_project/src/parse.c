/* A recursive-descent parser over the expression's characters. */
#include <ctype.h>
#include <stdlib.h>

#include "calc.h"

typedef struct parser {
    const char *p;
    const char *err;
} parser;

static long expr(parser *ps);

static void skip(parser *ps)
{
    while (isspace((unsigned char)*ps->p))
        ps->p++;
}

static long primary(parser *ps)
{
    skip(ps);
    if (*ps->p == '(') {
        ps->p++;
        long v = expr(ps);
        skip(ps);
        if (*ps->p != ')' && !ps->err)
            ps->err = "expected ')'";
        else
            ps->p++;
        return v;
    }
    if (*ps->p == '-') {
        ps->p++;
        return -primary(ps);
    }
    if (!isdigit((unsigned char)*ps->p)) {
        if (!ps->err)
            ps->err = "expected a number";
        return 0;
    }
    char *end;
    long v = strtol(ps->p, &end, 10);
    ps->p = end;
    return v;
}

static long term(parser *ps)
{
    long v = primary(ps);
    for (;;) {
        skip(ps);
        char op = *ps->p;
        if (op != '*' && op != '/')
            return v;
        ps->p++;
        long r = primary(ps);
        if (op == '/' && r == 0) {
            if (!ps->err)
                ps->err = "division by zero";
            return 0;
        }
        v = op == '*' ? v * r : v / r;
    }
}

static long expr(parser *ps)
{
    long v = term(ps);
    for (;;) {
        skip(ps);
        char op = *ps->p;
        if (op != '+' && op != '-')
            return v;
        ps->p++;
        long r = term(ps);
        v = op == '+' ? v + r : v - r;
    }
}

int calc_eval(const char *text, long *out, const char **err)
{
    parser ps = {text, NULL};
    long v = expr(&ps);
    skip(&ps);
    if (!ps.err && *ps.p)
        ps.err = "unexpected characters at the end";
    if (ps.err) {
        *err = ps.err;
        return -1;
    }
    *out = v;
    return 0;
}
