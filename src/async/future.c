/* Futures: a one-shot value behind a wait queue. The completer hands the
 * value and the error to each claimed waiter through the waiter itself
 * (data, want), so a woken awaiter never reads the future again: the first
 * one back may free it while the others are still waking. */
#include "async_int.h"

struct vt_future {
    vt__wq q;
    _Atomic uint32_t done; /* release-stored once value and err are final */
    vt_err err;
    void *value;
};

vt_err vt_future_new(vt_future **out)
{
    if (!out)
        return VT_EINVAL;
    vt_future *f = vt_calloc(1, sizeof(*f));
    if (!f)
        return VT_ENOMEM;
    *out = f;
    return VT_OK;
}

void vt_future_free(vt_future *f)
{
    if (!f)
        return;
    /* The lock also orders this free after the completer's last touch. */
    vt__wq_lock(&f->q);
    int waited = vt__wq_first(&f->q) != NULL;
    vt__wq_unlock(&f->q);
    if (waited) {
        vt_log(VT_LOG_ERROR, "async", "vt_future_free(%p) while awaited: leaking it", (void *)f);
        return;
    }
    vt_free(f, sizeof(*f));
}

static vt_err complete(vt_future *f, void *value, vt_err err)
{
    vt__waiter *w, *woken = NULL, **tail = &woken;
    vt__wq_lock(&f->q);
    if (atomic_load_explicit(&f->done, memory_order_relaxed)) {
        vt__wq_unlock(&f->q);
        return VT_EEXIST;
    }
    f->value = value;
    f->err = err;
    atomic_store_explicit(&f->done, 1, memory_order_release);
    while ((w = vt__wq_pop(&f->q))) {
        if (!vt__waiter_claim(w))
            continue;
        w->data = value;
        w->want = (uint64_t)err;
        /* Popped and claimed: its link is ours until the wake. */
        w->next = NULL;
        *tail = w;
        tail = &w->next;
    }
    vt__wq_unlock(&f->q);
    while (woken) {
        w = woken;
        woken = w->next; /* *w may be gone once woken */
        vt__waiter_wake(w, VT_OK);
    }
    return VT_OK;
}

vt_err vt_future_set(vt_future *f, void *value)
{
    if (!f)
        return VT_EINVAL;
    return complete(f, value, VT_OK);
}

vt_err vt_future_fail(vt_future *f, vt_err err)
{
    if (!f || err == VT_OK)
        return VT_EINVAL;
    return complete(f, NULL, err);
}

int vt_future_ready(const vt_future *f)
{
    return f && atomic_load_explicit(&f->done, memory_order_acquire);
}

/* Once done is seen, value and err never change again. */
static vt_err result_of(vt_future *f, void **value)
{
    if (f->err == VT_OK && value)
        *value = f->value;
    return f->err;
}

vt_err vt_future_await(vt_future *f, void **value, int64_t deadline)
{
    if (!f)
        return VT_EINVAL;
    if (vt__cancel_pending())
        return VT_ECANCELED;
    if (atomic_load_explicit(&f->done, memory_order_acquire))
        return result_of(f, value);
    vt__wq_lock(&f->q);
    if (atomic_load_explicit(&f->done, memory_order_relaxed)) {
        vt__wq_unlock(&f->q);
        return result_of(f, value);
    }
    if (deadline == VT_NOW) {
        vt__wq_unlock(&f->q);
        return VT_ETIMEDOUT;
    }
    vt__waiter w;
    vt__waiter_init(&w, "future", f, 0);
    vt__wq_push(&f->q, &w);
    vt__wq_unlock(&f->q);

    vt_err e = vt__waiter_wait(&w, deadline);
    if (e != VT_OK) {
        vt__wq_lock(&f->q);
        vt__wq_remove(&f->q, &w);
        vt__wq_unlock(&f->q);
        return e;
    }
    e = (vt_err)w.want;
    if (e == VT_OK && value)
        *value = w.data;
    return e;
}
