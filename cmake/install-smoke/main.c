/* A consumer of an installed vitte: the headers compile, the library links
 * and its symbols resolve. */
#include <stdio.h>
#include <string.h>

#include <vitte/base.h>

int main(void)
{
    if (strcmp(vt_errname(VT_ETIMEDOUT), "VT_ETIMEDOUT") != 0 || vt_now_ns() <= 0) {
        fprintf(stderr, "install-smoke: the installed library misbehaves\n");
        return 1;
    }
    printf("install-smoke: ok (%s)\n", vt_strerror(VT_ECYCLE));
    return 0;
}
