/* Scopes: who cancels whom, and waiting for a group of fibers to end.
 *
 * A fiber belongs to one scope; each fiber has a scope of its own for its
 * children. Scopes form a tree (a child scope is linked under its parent
 * when it first gets a member), and cancelling a scope walks its subtree,
 * parent lock before child lock. Only fibers that wait interruptibly are
 * listed in their scope (to be woken); a running fiber sees the flag at its
 * next suspension point, so spawning and ending a fiber touch no list. */
#include "fiber.h"

void vt__scope_init(struct vt_scope *s, vt_runtime *rt, struct vt_scope *parent)
{
    atomic_store_explicit(&s->lock.locked, 0, memory_order_relaxed);
    atomic_store_explicit(&s->cancelled, 0, memory_order_relaxed);
    atomic_store_explicit(&s->closing, 0, memory_order_relaxed);
    atomic_store_explicit(&s->live, 0, memory_order_relaxed);
    atomic_store_explicit(&s->done_q.lock, 0, memory_order_relaxed);
    s->done_q.n = 0;
    s->done_q.head = s->done_q.tail = NULL;
    s->rt = rt;
    s->parent = parent;
    s->children = s->sib_next = s->sib_prev = NULL;
    s->linked = 0;
    s->heap = 0;
    s->made_scopes = 0;
    s->parked = NULL;
}

void vt__scope_attach(struct vt_scope *s)
{
    struct vt_scope *p = s->parent;
    if (s->linked || !p)
        return;
    vt__spin_lock(&p->lock);
    s->sib_prev = NULL;
    s->sib_next = p->children;
    if (p->children)
        p->children->sib_prev = s;
    p->children = s;
    s->linked = 1;
    if (atomic_load_explicit(&p->cancelled, memory_order_relaxed))
        atomic_store_explicit(&s->cancelled, 1, memory_order_release);
    vt__spin_unlock(&p->lock);
}

/* Unlinks s from p, whose lock the caller holds. */
static void unlink_locked(struct vt_scope *s, struct vt_scope *p)
{
    if (s->sib_prev)
        s->sib_prev->sib_next = s->sib_next;
    else
        p->children = s->sib_next;
    if (s->sib_next)
        s->sib_next->sib_prev = s->sib_prev;
    s->sib_next = s->sib_prev = NULL;
    s->linked = 0;
}

/* A fiber's end: the scopes made with vt_scope_new in it (children of its
 * kids) may outlive it — a stream handed to someone else, say. They move
 * under the runtime's root, so that shutdown still cancels them and the
 * fiber slot's next owner starts with a scope of its own. */
void vt__scope_orphan_children(struct vt_scope *kids)
{
    vt_runtime *rt = kids->rt;
    vt__spin_lock(&rt->tree_lock);
    vt__spin_lock(&kids->lock);
    struct vt_scope *moved = kids->children;
    for (struct vt_scope *c = moved; c; c = c->sib_next)
        c->linked = 0;
    kids->children = NULL;
    vt__spin_unlock(&kids->lock);
    while (moved) {
        struct vt_scope *c = moved;
        moved = c->sib_next;
        c->sib_next = c->sib_prev = NULL;
        c->parent = &rt->root;
        vt__scope_attach(c);
    }
    vt__spin_unlock(&rt->tree_lock);
}

void vt__scope_detach(struct vt_scope *s)
{
    if (s->heap) {
        /* Its parent may be changing (vt__scope_orphan_children). */
        vt_runtime *rt = s->rt;
        vt__spin_lock(&rt->tree_lock);
        struct vt_scope *p = s->parent;
        if (s->linked) {
            vt__spin_lock(&p->lock);
            unlink_locked(s, p);
            vt__spin_unlock(&p->lock);
        }
        vt__spin_unlock(&rt->tree_lock);
        return;
    }
    struct vt_scope *p = s->parent;
    if (!s->linked)
        return;
    vt__spin_lock(&p->lock);
    unlink_locked(s, p);
    vt__spin_unlock(&p->lock);
}

void vt__scope_cancel(struct vt_scope *s)
{
    vt__spin_lock(&s->lock);
    atomic_store_explicit(&s->cancelled, 1, memory_order_release);
    for (vt__fib *f = s->parked; f; f = f->park_next)
        if (!atomic_load_explicit(&f->masked, memory_order_relaxed))
            vt__parker_cancel(&f->pk);
    for (struct vt_scope *c = s->children; c; c = c->sib_next)
        vt__scope_cancel(c);
    vt__spin_unlock(&s->lock);
}

void vt__fiber_cancel_one(vt__fib *f)
{
    atomic_store_explicit(&f->cancelled, 1, memory_order_release);
    vt__scope_cancel(&f->kids);
    struct vt_scope *m = f->member;
    vt__spin_lock(&m->lock);
    if (f->park_linked && !atomic_load_explicit(&f->masked, memory_order_relaxed))
        vt__parker_cancel(&f->pk);
    vt__spin_unlock(&m->lock);
}

int vt__scope_park_link(vt__fib *f)
{
    struct vt_scope *m = f->member;
    vt__spin_lock(&m->lock);
    if (atomic_load_explicit(&m->cancelled, memory_order_relaxed) ||
        atomic_load_explicit(&f->cancelled, memory_order_relaxed)) {
        vt__spin_unlock(&m->lock);
        return 0;
    }
    f->park_prev = NULL;
    f->park_next = m->parked;
    if (m->parked)
        m->parked->park_prev = f;
    m->parked = f;
    f->park_linked = 1;
    vt__spin_unlock(&m->lock);
    return 1;
}

void vt__scope_park_unlink(vt__fib *f)
{
    struct vt_scope *m = f->member;
    vt__spin_lock(&m->lock);
    if (f->park_linked) {
        if (f->park_prev)
            f->park_prev->park_next = f->park_next;
        else
            m->parked = f->park_next;
        if (f->park_next)
            f->park_next->park_prev = f->park_prev;
        f->park_linked = 0;
    }
    vt__spin_unlock(&m->lock);
}

void vt__scope_enter(struct vt_scope *s)
{
    atomic_fetch_add_explicit(&s->live, 1, memory_order_relaxed);
}

void vt__scope_leave(struct vt_scope *s)
{
    int64_t n = atomic_load_explicit(&s->live, memory_order_relaxed);
    while (n > 1)
        if (atomic_compare_exchange_weak_explicit(&s->live, &n, n - 1, memory_order_release, memory_order_relaxed))
            return;
    /* Probably the last: decrement under the lock that waiters check live
     * under, so that nobody who saw zero can free or reuse s before this
     * call is done with it. */
    vt__wq_lock(&s->done_q);
    if (atomic_fetch_sub_explicit(&s->live, 1, memory_order_acq_rel) == 1) {
        vt__waiter *w;
        while ((w = vt__wq_pop(&s->done_q)))
            if (vt__waiter_claim(w))
                vt__waiter_wake(w, VT_OK);
    }
    vt__wq_unlock(&s->done_q);
}

vt_err vt__scope_wait_empty(struct vt_scope *s, int64_t deadline, int interruptible)
{
    vt_err e = VT_OK;
    for (;;) {
        vt__wq_lock(&s->done_q);
        if (!atomic_load_explicit(&s->live, memory_order_acquire)) {
            vt__wq_unlock(&s->done_q);
            break;
        }
        vt__waiter w;
        vt__waiter_init(&w, "scope", s, interruptible ? 0 : VT__WAIT_NOCANCEL);
        vt__wq_push(&s->done_q, &w);
        vt__wq_unlock(&s->done_q);
        e = vt__waiter_wait(&w, deadline);
        if (e != VT_OK) {
            vt__wq_lock(&s->done_q);
            vt__wq_remove(&s->done_q, &w);
            vt__wq_unlock(&s->done_q);
            break;
        }
    }
    return e;
}

/* ---- The public face -------------------------------------------------------------------- */

vt_err vt_scope_new(vt_scope **out, vt_runtime *rt)
{
    if (!out)
        return VT_EINVAL;
    vt__fib *self = vt__fiber_self();
    struct vt_scope *parent;
    if (self && (!rt || rt == self->rt)) {
        rt = self->rt;
        parent = &self->kids;
    } else if (rt) {
        parent = &rt->root;
    } else {
        return VT_EINVAL;
    }
    struct vt_scope *s = vt_alloc(sizeof(*s));
    if (!s)
        return VT_ENOMEM;
    vt__scope_init(s, rt, parent);
    s->heap = 1;
    if (parent != &rt->root)
        parent->made_scopes = 1;
    vt__scope_attach(s);
    *out = s;
    return VT_OK;
}

vt_err vt_scope_cancel(vt_scope *s)
{
    if (!s)
        return VT_EINVAL;
    vt__scope_cancel(s);
    return VT_OK;
}

vt_err vt_scope_wait(vt_scope *s, int64_t deadline)
{
    if (!s)
        return VT_EINVAL;
    return vt__scope_wait_empty(s, deadline, 1);
}

void vt_scope_close(vt_scope *s)
{
    if (!s)
        return;
    atomic_store_explicit(&s->closing, 1, memory_order_release);
    vt__scope_wait_empty(s, VT_FOREVER, 0);
    vt__scope_detach(s);
    if (s->heap)
        vt_free(s, sizeof(*s));
}

uint64_t vt_scope_live(vt_scope *s)
{
    if (!s)
        return 0;
    int64_t n = atomic_load_explicit(&s->live, memory_order_acquire);
    return n > 0 ? (uint64_t)n : 0;
}
