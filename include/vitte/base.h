/* vitte/base.h — what every layer needs from the platform: error codes,
 * the monotonic clock, CPU count, cache-line alignment, the allocator hook,
 * levelled logging and a fast hash.
 *
 * Thread safety: every function here may be called from any thread, except
 * vt_set_allocator, which must be called before any other vitte call. */
#ifndef VITTE_BASE_H
#define VITTE_BASE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define VT_API __attribute__((visibility("default")))
#define VT_LIKELY(x) __builtin_expect(!!(x), 1)
#define VT_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define VT_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define VT_API
#define VT_LIKELY(x) (x)
#define VT_UNLIKELY(x) (x)
#define VT_PRINTF(f, a)
#endif

/* The size that keeps two independently written fields off one cache line
 * (x86-64 and most AArch64 parts; Apple's M series use 128, where this only
 * costs some false sharing, never correctness). */
#define VT_CACHE_LINE 64
#define VT_CACHE_ALIGNED _Alignas(VT_CACHE_LINE)

/* ---- Errors ----------------------------------------------------------------
 * Functions that can fail return vt_err: 0 (VT_OK) on success. A failed call
 * took nothing: it changed no state the caller can see and no callback of it
 * will ever run. A failure of the operating system carries its errno:
 * (VT_ESYSERR | errno); vt_strerror names both kinds. */
#define VT_ERRORS(X)                                                  \
    X(OK, "success")                                                  \
    X(EINVAL, "invalid argument")                                     \
    X(ENOMEM, "out of memory")                                        \
    X(ETIMEDOUT, "deadline passed")                                   \
    X(ECANCELED, "cancelled")                                         \
    X(ECLOSED, "closed")                                              \
    X(ECYCLE, "dependency cycle")                                     \
    X(EBUSY, "busy")                                                  \
    X(ENOENT, "no such item (finished, cancelled or never existed)")  \
    X(ERANGE, "value out of range")                                   \
    X(EAGAIN, "not ready, try again")                                 \
    X(EEXIST, "already exists")                                       \
    X(ENOTSUP, "not supported")                                       \
    X(ESTATE, "not allowed in the current state")                     \
    X(EDEADLK, "would wait for itself")                              \
    X(EFAILED, "a task failed")                                       \
    X(EFORMAT, "not in the expected format")                          \
    X(ECORRUPT, "damaged data")                                       \
    X(EIO, "input/output error")                                      \
    X(ETYPE, "value of another type")

typedef enum vt_err {
#define VT__ERR_ENUM(name, text) VT_##name,
    VT_ERRORS(VT__ERR_ENUM)
#undef VT__ERR_ENUM
    VT__ERR_COUNT,
    VT_ESYSERR = 0x10000000
} vt_err;

/* "deadline passed", "system error: Connection refused", ... Never NULL; the
 * string is static. An unknown code gives "unknown error". */
VT_API const char *vt_strerror(vt_err err);
/* "VT_ETIMEDOUT", "VT_ESYSERR" ... Never NULL; static. */
VT_API const char *vt_errname(vt_err err);
/* VT_ESYSERR | e for an errno value e (a negative e, as raw system calls
 * return, counts as -e); VT_OK for e == 0. */
VT_API vt_err vt_err_from_errno(int e);

/* ---- Time ------------------------------------------------------------------
 * Every blocking call in vitte takes an absolute deadline in nanoseconds of
 * this clock: VT_FOREVER waits without end, VT_NOW (0) only tries. */
#define VT_FOREVER ((int64_t)-1)
#define VT_NOW ((int64_t)0)
#define VT_MS(n) ((int64_t)(n) * 1000000)
#define VT_US(n) ((int64_t)(n) * 1000)
#define VT_SEC(n) ((int64_t)(n) * 1000000000)

/* Monotonic nanoseconds (CLOCK_MONOTONIC; never 0, never goes back). */
VT_API int64_t vt_now_ns(void);
/* vt_now_ns() + delay_ns, saturating; a negative delay means now. */
VT_API int64_t vt_deadline_after(int64_t delay_ns);
/* CPU time used by the whole process, in ns (for idle-cost measurements). */
VT_API int64_t vt_process_cpu_ns(void);

/* Number of CPUs this process may run on (affinity mask), at least 1. */
VT_API unsigned vt_cpu_count(void);

/* ---- Allocation ------------------------------------------------------------
 * Every allocation of vitte goes through one function, as Lua's lua_Alloc:
 * fn(ud, ptr, old_size, new_size) frees ptr when new_size == 0 (returning
 * NULL), otherwise returns a block of new_size bytes holding the first
 * min(old,new) bytes of ptr (ptr may be NULL), or NULL on failure, leaving
 * ptr untouched. Blocks are aligned for any type (max_align_t); vitte asks
 * for larger alignment itself. A request for 0 bytes is made as 1 byte, since
 * new_size == 0 means "free" to the hook. */
typedef void *(*vt_alloc_fn)(void *ud, void *ptr, size_t old_size, size_t new_size);

/* Replaces the allocator (NULL restores malloc/realloc/free). Call it before
 * any other vitte call, or after every vitte object is freed: a block must
 * be freed by the allocator that made it. Thread: not thread-safe. */
VT_API void vt_set_allocator(vt_alloc_fn fn, void *ud);
/* The block is the caller's; free it with vt_free. NULL on failure. */
VT_API void *vt_alloc(size_t size);
/* Zeroed; NULL on failure or if n * size overflows. */
VT_API void *vt_calloc(size_t n, size_t size);
/* NULL on failure, and then ptr is still the caller's and unchanged. */
VT_API void *vt_realloc(void *ptr, size_t old_size, size_t new_size);
/* size is the size the block was allocated with; ptr may be NULL. */
VT_API void vt_free(void *ptr, size_t size);
/* A copy of s (NULL for NULL or on failure); free with vt_free(p, strlen(p)+1). */
VT_API char *vt_strdup(const char *s);

/* ---- Logging ---------------------------------------------------------------
 * Messages below the current level are dropped before any formatting. The
 * default level is VT_LOG_WARN, or the value of the environment variable
 * VITTE_LOG (error, warn, info, debug, trace) read at the first log call. */
typedef enum vt_log_level {
    VT_LOG_ERROR,
    VT_LOG_WARN,
    VT_LOG_INFO,
    VT_LOG_DEBUG,
    VT_LOG_TRACE
} vt_log_level;

/* Receives one formatted message without a trailing newline. Called on the
 * thread that logged, possibly from several threads at once. */
typedef void (*vt_log_fn)(void *ud, vt_log_level level, const char *module, const char *msg);

/* Levels outside ERROR..TRACE are clamped into that range. */
VT_API void vt_log_set_level(vt_log_level level);
VT_API vt_log_level vt_log_get_level(void);
/* NULL restores the default handler (stderr: "vitte LEVEL module: msg").
 * The previous handler may still be running on another thread when this
 * returns: free its ud only once no thread can be logging. */
VT_API void vt_log_set_handler(vt_log_fn fn, void *ud);
VT_API int vt_log_enabled(vt_log_level level);
VT_API void vt_log(vt_log_level level, const char *module, const char *fmt, ...) VT_PRINTF(3, 4);
VT_API void vt_logv(vt_log_level level, const char *module, const char *fmt, va_list ap) VT_PRINTF(3, 0);
/* "error", "warn", ... */
VT_API const char *vt_log_level_name(vt_log_level level);

/* ---- Hashing ---------------------------------------------------------------
 * A fast, well-mixed 64-bit hash for hash tables and fingerprints that need
 * no cryptographic strength (content hashes use SHA-256 elsewhere). Stable
 * across runs and machines of either endianness for the same bytes and seed. */
VT_API uint64_t vt_hash64(const void *data, size_t len, uint64_t seed);
/* Mixes one 64-bit value (a bijection): for integer keys and seeds. */
VT_API uint64_t vt_hash_mix64(uint64_t x);

#ifdef __cplusplus
}
#endif
#endif
