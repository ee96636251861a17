/* libFuzzer target for the task file parser: any bytes give a task file or
 * an error with a message, never a crash, a leak or a hang. Globs look
 * into an empty directory made once. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/taskfile.h"

static char root[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!root[0]) {
        snprintf(root, sizeof root, "/tmp/vitte-fuzz-XXXXXX");
        if (!mkdtemp(root))
            abort();
    }
    vt_taskfile *tf = NULL;
    vt_tf_error err;
    vt_err e = vt_tf_parse((const char *)data, size, "fuzz.yaml", root, &tf, &err);
    if (e == VT_OK) {
        /* What the runner relies on. */
        if (!tf)
            abort();
        for (size_t i = 0; i < tf->ntasks; i++) {
            const vt_tf_task *t = &tf->tasks[i];
            if (!t->name || !t->name[0] || strchr(t->name, '/') || !t->dir || !t->desc)
                abort();
            for (size_t d = 0; d < t->ndeps; d++)
                if (t->deps[d] >= tf->ntasks || t->deps[d] == i)
                    abort();
            if (vt_tf_find(tf, t->name) < 0)
                abort();
        }
        vt_tf_free(tf);
    } else if (tf || !err.msg[0]) {
        abort(); /* an error leaves nothing and always says what */
    }
    return 0;
}
