/* calc "1 + 2 * 3": prints 7. */
#include <stdio.h>

#include "calc.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: calc EXPRESSION\n");
        return 2;
    }
    long v;
    const char *err;
    if (calc_eval(argv[1], &v, &err) != 0) {
        fprintf(stderr, "calc: %s\n", err);
        return 1;
    }
    printf("%ld\n", v);
    return 0;
}
