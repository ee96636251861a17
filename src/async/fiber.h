/* fiber.h — the fiber core's own types, shared by fiber.c, wait.c, scope.c,
 * stack.c and runtime.c (the rest of the layer sees async_int.h only). */
#ifndef VITTE_ASYNC_FIBER_H
#define VITTE_ASYNC_FIBER_H

#include "async_int.h"

/* A fiber's run state, for the race between suspending and being woken: a
 * fiber that decides to wait is PARKING until it is off its stack; a waker
 * that comes in between leaves NOTIFIED, and the context that took over
 * schedules the fiber again instead of parking it. */
enum { VT__RUN_RUNNING = 0, VT__RUN_PARKING, VT__RUN_PARKED, VT__RUN_NOTIFIED };

/* What a fiber is doing, for vt_runtime_dump. */
enum { VT__FS_FREE = 0, VT__FS_READY, VT__FS_RUNNING, VT__FS_WAITING, VT__FS_DONE };

/* The join word. A waiter pointer (8-aligned) while one awaits it; else a
 * code in the low 3 bits. OPEN (nobody awaits yet) and DONE (off its
 * stack, not reaped) carry the fiber's life (the generation in its handle),
 * so that an awaiter or detacher holding a handle to an earlier life of a
 * recycled slot fails its compare-and-swap instead of taking the new
 * fiber. */
#define VT__JOIN_CODE(j) ((j) & 7u)
#define VT__JOIN_DONE_CODE 1u
#define VT__JOIN_DETACHED ((uintptr_t)2)
#define VT__JOIN_BUSY ((uintptr_t)3)   /* the finisher is reading the waiter */
#define VT__JOIN_INLINE ((uintptr_t)4) /* its awaiter runs it, and is resumed by its end */
#define VT__JOIN_REAPED ((uintptr_t)5) /* an awaiter (or detach) took it: the handle is spent */
#define VT__JOIN_OPEN_CODE 6u
#define VT__JOIN_OPEN(life) (((uintptr_t)(life) << 3) | VT__JOIN_OPEN_CODE)
#define VT__JOIN_DONE(life) (((uintptr_t)(life) << 3) | VT__JOIN_DONE_CODE)
#define VT__LIFE_MASK 0xffffffu /* the generation bits a handle holds */

struct vt_scope {
    vt__spinlock lock;
    _Atomic uint32_t cancelled;
    _Atomic uint32_t closing;
    _Atomic int64_t live;       /* fibers of this scope not yet finished */
    vt__wq done_q;              /* parties waiting for live == 0; its lock
                                   also covers the last decrement of live */
    vt_runtime *rt;
    struct vt_scope *parent;    /* whose cancellation reaches this one, or NULL */
    struct vt_scope *children;  /* child scopes, linked through sib_* */
    struct vt_scope *sib_next, *sib_prev;
    uint8_t linked;             /* on parent's children list */
    uint8_t heap;               /* made by vt_scope_new */
    uint8_t made_scopes;        /* a fiber's kids: vt_scope_new was called under it
                                   (written by that fiber only) */
    vt__fib *parked;            /* interruptibly waiting members, through park_* */
};

struct vt__fib {
    vt__ctx ctx;
    vt__parker pk;
    _Atomic uint32_t run;       /* VT__RUN_* */
    _Atomic uint32_t gen;       /* handle generation */
    _Atomic uint32_t pins;      /* callers using it through a handle (cancel) */
    uint32_t index;             /* in the stack directory */
    _Atomic uint8_t fstate;     /* VT__FS_* */
    _Atomic uint8_t cancelled;
    _Atomic uint8_t masked;
    uint8_t park_linked;
    uint8_t inited;             /* stack slot prepared (guard, tools) */
    uint8_t guarded;
    vt_fiber_fn fn;
    void *arg;
    void *result;
    _Atomic uintptr_t join;
    vt_runtime *rt;
    vt__fworker *fw;            /* the worker it runs on now */
    struct vt_scope *member;    /* the scope it belongs to */
    struct vt_scope kids;       /* its children */
    vt__fib *park_next, *park_prev;
    _Atomic(const char *) wait_what; /* for the dump */
    _Atomic(const void *) wait_obj;
    char *stack_lo;             /* lowest usable byte */
    size_t stack_size;          /* usable bytes */
    struct vt__stack_class *cls;
    vt__fib *free_next;
    vt__fib *inline_joiner; /* the fiber to resume when it ends (VT__JOIN_INLINE) */
    void *asan_fake;
    void *tsan_fiber;
    unsigned tsan_lives; /* since tsan_fiber was made (stack.c says why) */
    unsigned valgrind_id;
    char name[VT_FIBER_NAME_MAX];
};

/* One per worker slot (workers, then the guest): the worker's own stack
 * while it runs fibers, the fiber it runs, and what to do with the fiber it
 * just left (done by whichever context runs next, once off that stack). */
enum { VT__ACT_NONE = 0, VT__ACT_PARK, VT__ACT_YIELD, VT__ACT_EXIT };

struct vt__fworker {
    VT_CACHE_ALIGNED vt__ctx host;
    vt_runtime *rt;
    vt__fib *current;
    vt__fib *prev;
    int prev_action;
    vt_job_fn pending_fn; /* a closure job taken while suspending: the host runs it */
    void *pending_arg;
    vt__fib *cache;       /* free fibers of the default stack size */
    unsigned ncache;
    _Atomic uint64_t switches, spawned, finished; /* written by this worker only */
    void *host_fake;
    const void *host_stack_lo;
    size_t host_stack_size;
    void *host_tsan;
    int host_ready;
    uint64_t rng;         /* vt__rand's state (this worker only) */
};

/* ---- Stacks (stack.c) ------------------------------------------------------------
 * Fibers live at the top of their stacks, in slots carved from large
 * reservations: [guard][usable stack][struct vt__fib]. A fiber's index
 * names its slot, so a handle or a timer can find it without a table of
 * pointers, and the memory of a finished fiber is reused, never freed,
 * while the runtime lives (a stale handle reads a newer generation). */
typedef struct vt__stack_class vt__stack_class;
typedef struct vt__stacks vt__stacks;

/* owner: the runtime every slot of s belongs to (set once per slot, so
 * that reading f->rt never races the reuse of a slot). */
VT_INTERNAL vt_err vt__stacks_new(vt__stacks **out, size_t default_size, int guards, vt_runtime *owner);
VT_INTERNAL void vt__stacks_free(vt__stacks *s);
/* A free fiber slot with a usable stack of at least size bytes (0: the
 * default), prepared; from fw's cache when it has one. */
VT_INTERNAL vt__fib *vt__stacks_get(vt__stacks *s, vt__fworker *fw, size_t size);
VT_INTERNAL void vt__stacks_put(vt__stacks *s, vt__fworker *fw, vt__fib *f);
/* The fiber of a slot index, or NULL if no such slot exists. Thread: any. */
VT_INTERNAL vt__fib *vt__stacks_lookup(vt__stacks *s, uint32_t index);
/* Calls fn on every slot handed out at least once. */
VT_INTERNAL void vt__stacks_each(vt__stacks *s, void (*fn)(vt__fib *f, void *ud), void *ud);
VT_INTERNAL void vt__stacks_stats(vt__stacks *s, vt_runtime_stats *out);

/* ---- The runtime (runtime.c) ------------------------------------------------------- */
struct vt_runtime {
    vt_runtime_opts opts;
    vt_pool *pool;
    unsigned nfw;
    vt__fworker *fw; /* nfw slots */
    void *fw_raw;
    vt__stacks *stacks;
    struct vt_scope root;
    vt__spinlock tree_lock; /* moves of scopes made by vt_scope_new */
    _Atomic int closing;
    int shut;
    _Atomic uint64_t spawned, finished; /* from plain threads */
    unsigned slot;  /* in the registry: handles and timers name the runtime by it */
    uint64_t uid;
    _Atomic(struct vt__netpoll *) netpoll;
    _Atomic(struct vt__blocking *) blocking;
};

/* fiber.c */
VT_INTERNAL void vt__fiber_job(void *arg);
VT_INTERNAL vt__fib *vt__fiber_self(void);
/* Suspends the calling fiber until vt__fiber_unpark (run must be PARKING). */
VT_INTERNAL void vt__fiber_park(vt__fib *self);
VT_INTERNAL void vt__fiber_unpark(vt__fib *f);
VT_INTERNAL int vt__fiber_cancel_seen(vt__fib *f);

/* scope.c */
VT_INTERNAL void vt__scope_init(struct vt_scope *s, vt_runtime *rt, struct vt_scope *parent);
/* Links s under its parent (once), inheriting a cancellation. */
VT_INTERNAL void vt__scope_attach(struct vt_scope *s);
VT_INTERNAL void vt__scope_detach(struct vt_scope *s);
/* Moves the scopes under kids (made by vt_scope_new in its fiber) under the
 * runtime's root, at the fiber's end. */
VT_INTERNAL void vt__scope_orphan_children(struct vt_scope *kids);
VT_INTERNAL void vt__scope_cancel(struct vt_scope *s);
VT_INTERNAL void vt__scope_enter(struct vt_scope *s);
VT_INTERNAL void vt__scope_leave(struct vt_scope *s);
/* Waits (NOCANCEL unless interruptible) until s has no live fiber. */
VT_INTERNAL vt_err vt__scope_wait_empty(struct vt_scope *s, int64_t deadline, int interruptible);
/* Registers f as waiting interruptibly (0 when cancellation is already
 * pending: then it must not wait), and the reverse. */
VT_INTERNAL int vt__scope_park_link(vt__fib *f);
VT_INTERNAL void vt__scope_park_unlink(vt__fib *f);
VT_INTERNAL void vt__fiber_cancel_one(vt__fib *f);

/* wait.c */
/* Ends the current wait of pk with VT_ECANCELED if it is still waiting. */
VT_INTERNAL void vt__parker_cancel(vt__parker *pk);

/* runtime.c */
/* 127, not 255: thread owner ids of the sync primitives set the top bit,
 * which no handle of runtime slot < 128 has. */
#define VT__RUNTIMES_MAX 127
VT_INTERNAL vt_runtime *vt__runtime_by_slot(unsigned slot);

#endif
