/* err.c — names and texts of vt_err codes, generated from VT_ERRORS. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "platform.h"

#define ERRNO_MASK 0x0FFFFFFFu

static const char *const err_text[] = {
#define VT__ERR_TEXT(name, text) text,
    VT_ERRORS(VT__ERR_TEXT)
#undef VT__ERR_TEXT
};

static const char *const err_name[] = {
#define VT__ERR_NAME(name, text) "VT_" #name,
    VT_ERRORS(VT__ERR_NAME)
#undef VT__ERR_NAME
};

_Static_assert(sizeof err_text / sizeof err_text[0] == VT__ERR_COUNT, "one text per code");
_Static_assert(VT__ERR_COUNT < VT_ESYSERR, "codes stay below the errno space");

/* Texts of system errors live in a static table, filled once on first need,
 * so that the pointer vt_strerror returns stays valid and unchanged for the
 * life of the process, on every thread, as the header promises. Linux errno
 * values end well below SYS_TABLE (EHWPOISON is 133); a larger value
 * (another OS, or a bogus code) is formatted into a thread-local buffer,
 * which the next such call on the same thread overwrites. */
#define SYS_TABLE 160
#define SYS_TEXT 96
#define SYS_PREFIX "system error: "

static char sys_text[SYS_TABLE][SYS_TEXT];
static pthread_once_t sys_once = PTHREAD_ONCE_INIT;
static _Thread_local char sys_spare[SYS_TEXT];

/* glibc declares the GNU strerror_r (returns char *) or the POSIX one
 * (returns int, fills buf) depending on feature macros that the build may
 * set; _Generic takes whichever we got. */
static const char *strerror_posix(int r, const char *buf)
{
    return r == 0 ? buf : NULL;
}

static const char *strerror_gnu(const char *r, const char *buf)
{
    (void)buf;
    return r;
}

#define STRERROR_RESULT(r, buf) \
    _Generic((r), int: strerror_posix, char *: strerror_gnu, const char *: strerror_gnu)(r, buf)

static void sys_format(char *out, size_t size, int e)
{
    char buf[SYS_TEXT];
    buf[0] = '\0';
    const char *s = STRERROR_RESULT(strerror_r(e, buf, sizeof buf), buf);
    if (s && s[0])
        snprintf(out, size, SYS_PREFIX "%s", s);
    else
        snprintf(out, size, SYS_PREFIX "errno %d", e);
}

static void sys_fill(void)
{
    for (int e = 1; e < SYS_TABLE; e++)
        sys_format(sys_text[e], SYS_TEXT, e);
}

vt_err vt_err_from_errno(int e)
{
    if (e == 0)
        return VT_OK;
    /* Raw syscalls and some libraries report -errno; accept both signs. */
    unsigned u = e < 0 ? 0u - (unsigned)e : (unsigned)e;
    return (vt_err)((unsigned)VT_ESYSERR | (u & ERRNO_MASK));
}

static int sys_errno(vt_err err, int *e)
{
    unsigned u = (unsigned)err;
    if ((u & ~ERRNO_MASK) != (unsigned)VT_ESYSERR)
        return 0;
    *e = (int)(u & ERRNO_MASK);
    return 1;
}

const char *vt_strerror(vt_err err)
{
    int e;
    if ((unsigned)err < (unsigned)VT__ERR_COUNT)
        return err_text[err];
    if (!sys_errno(err, &e))
        return "unknown error";
    if (e == 0)
        return "system error";
    if (e < SYS_TABLE) {
        pthread_once(&sys_once, sys_fill);
        return sys_text[e];
    }
    sys_format(sys_spare, sizeof sys_spare, e);
    return sys_spare;
}

const char *vt_errname(vt_err err)
{
    int e;
    if ((unsigned)err < (unsigned)VT__ERR_COUNT)
        return err_name[err];
    if (sys_errno(err, &e))
        return "VT_ESYSERR";
    return "VT_EUNKNOWN";
}
