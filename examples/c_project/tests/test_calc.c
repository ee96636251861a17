/* The calculator's tests: each case is an expression and what it gives. */
#include <stdio.h>
#include <string.h>

#include "calc.h"

int main(void)
{
    static const struct {
        const char *expr;
        long want;
        int ok;
    } cases[] = {
        {"1 + 2", 3, 1},     {"2 * 3 + 4", 10, 1}, {"2 * (3 + 4)", 14, 1}, {"-5 + 2", -3, 1},
        {"100 / 7", 14, 1},  {"1 / 0", 0, 0},      {"(1 + 2", 0, 0},       {"1 +", 0, 0},
        {"3 3", 0, 0},
    };
    int failed = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        long v = 0;
        const char *err = NULL;
        int ok = calc_eval(cases[i].expr, &v, &err) == 0;
        if (ok != cases[i].ok || (ok && v != cases[i].want)) {
            printf("FAIL %s: got %s %ld\n", cases[i].expr, ok ? "value" : err, v);
            failed++;
        }
    }
    printf("%zu cases, %d failed\n", sizeof cases / sizeof *cases, failed);
    return failed != 0;
}
