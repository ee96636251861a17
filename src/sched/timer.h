/* timer.h — the pool's timer service: a hierarchical timing wheel behind a
 * small lock, plus (in threaded mode) the thread that fires it. Private to
 * sched; included through sched_int.h. */
#ifndef VITTE_SCHED_TIMER_H
#define VITTE_SCHED_TIMER_H

#include "vitte/sched.h"
#include "../base/platform.h"

typedef struct vt__timers vt__timers;

/* Receives each expired timer's job, outside the service's lock, in
 * deadline order (ties: start order), on the thread that fires timers. */
typedef void (*vt__timer_dispatch_fn)(void *ud, vt_job_fn fn, void *arg);

/* threaded = 1: a thread named thread_name fires timers as vt_now_ns()
 * passes their deadlines and sleeps (no CPU) while none is due.
 * threaded = 0: no thread; the owner calls vt__timers_expire with its own
 * (virtual) clock. Errors: VT_EINVAL, VT_ENOMEM, VT_ESYSERR|errno. */
VT_INTERNAL vt_err vt__timers_new(vt__timers **out, int threaded, vt__timer_dispatch_fn dispatch,
                                  void *ud, const char *thread_name);
/* Stops the thread (if any) and frees everything; each timer still pending
 * is reported to on_cancel (if not NULL). t may be NULL. */
VT_INTERNAL void vt__timers_free(vt__timers *t, vt_cancel_fn on_cancel, void *cancel_ud);
/* Cancels every pending timer, reporting each to on_cancel (if not NULL);
 * returns how many. Later adds still work (the pool refuses them itself). */
VT_INTERNAL size_t vt__timers_cancel_all(vt__timers *t, vt_cancel_fn on_cancel, void *cancel_ud);
/* Starts a timer; *out (may be NULL) gets a generation-checked handle.
 * Thread: any. Errors: VT_ENOMEM. */
VT_INTERNAL vt_err vt__timers_add(vt__timers *t, int64_t deadline, vt_job_fn fn, void *arg,
                                  vt_timer *out);
/* Thread: any. Errors: VT_ENOENT (fired, cancelled, or not a handle of t). */
VT_INTERNAL vt_err vt__timers_cancel(vt__timers *t, vt_timer id);
/* Told, under the service's lock, how many timers are about to be
 * dispatched, before they stop counting as pending: an owner that counts
 * their jobs there never sees a moment when a due timer is in neither count.
 * Set it before the first timer is added. */
typedef void (*vt__timer_announce_fn)(void *ud, size_t n);
VT_INTERNAL void vt__timers_set_announce(vt__timers *t, vt__timer_announce_fn announce);
/* Fires every timer whose deadline is <= now, in order, through dispatch;
 * returns how many. For threaded = 0 (it is also safe, if pointless, with a
 * thread running). A batch is announced, then stops counting as pending,
 * then is dispatched. */
VT_INTERNAL size_t vt__timers_expire(vt__timers *t, int64_t now);
/* The earliest pending deadline, or VT_FOREVER. Thread: any. */
VT_INTERNAL int64_t vt__timers_next_deadline(vt__timers *t);
/* Timers pending now; timers fired since creation. Thread: any (acquire
 * loads, so that a caller that sees pending == 0 also sees every dispatch). */
VT_INTERNAL uint64_t vt__timers_pending(vt__timers *t);
VT_INTERNAL uint64_t vt__timers_fired(vt__timers *t);

#endif
