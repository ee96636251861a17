/* Processes: the start time and state of a pid, and the boot's id, for
 * records that outlive the process that wrote them (the task store). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../platform.h"

static ssize_t read_small(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = 0;
    return n;
}

int vt__process_stat(long pid, int64_t *start_ticks, char *state)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    if (read_small(path, buf, sizeof buf) <= 0)
        return -1;
    /* The command name (field 2) may hold spaces and parentheses: fields
     * are counted from the last ')'. The start time is field 22. */
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ')
        return -1;
    p += 2;
    *state = *p;
    for (int i = 3; i < 22; i++) {
        p = strchr(p, ' ');
        if (!p)
            return -1;
        p++;
    }
    *start_ticks = strtoll(p, NULL, 10);
    return 0;
}

void vt__boot_id(char *buf, size_t size)
{
    if (size == 0)
        return;
    if (read_small("/proc/sys/kernel/random/boot_id", buf, size) <= 0) {
        buf[0] = 0;
        return;
    }
    buf[strcspn(buf, "\n")] = 0;
}
