/*
 * FT: a survivor's disk writes wait until its old primary is fenced
 *
 * Copyright (c) 2026 The qemu-ft authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The lock decides which side goes live, but it cannot recall a write
 * that a hung primary already handed to its host's storage stack: such
 * a write can land after the survivor wrote newer data to the same
 * block.  With rrfence=on a backup that went live holds its writes to
 * the shared disks (the writes it redoes first among them) until
 * x-ft-release-writes says that the old primary can write no more,
 * which a cluster manager knows once that process has exited or its
 * host was fenced.  Reads, packets and console output do not wait.
 *
 * A VM that stops meanwhile fails the held writes with EIO, and those
 * that come while it is stopped: a stop drains the disks, and the
 * release cannot come while it waits.  The writes that come once it runs
 * again are held as before.  A write redone at go-live that waits here
 * holds the disk's other requests, reads too, until the release.
 * docs/fencing.md has the design and what each case costs.
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-ft.h"
#include "system/runstate.h"
#include "ft-internal.h"
#include "trace.h"

typedef struct FtFenced {
    QEMUBHFunc *cb;
    void *opaque;
    int *ret;
} FtFenced;

/* Call held writes' callbacks, after setting their outcome to @ret. */
static void ft_fence_wake(GQueue *q, int ret)
{
    FtFenced *f;

    while ((f = g_queue_pop_head(q))) {
        if (ret < 0) {
            *f->ret = ret;
        }
        f->cb(f->opaque);
        g_free(f);
    }
}

/* Take the held writes out of @ch (ch->lock held). */
static GQueue ft_fence_take_locked(FtChannel *ch)
{
    GQueue q = ch->fenced;

    g_queue_init(&ch->fenced);
    return q;
}

static void ft_fence_unwatch(FtChannel *ch)
{
    if (ch->fence_vmstate) {
        qemu_del_vm_change_state_handler(ch->fence_vmstate);
        ch->fence_vmstate = NULL;
    }
}

/*
 * A stop drains the disks, then flushes them, in the main loop, which
 * cannot run x-ft-release-writes meanwhile: while the VM is stopped, the
 * held writes fail, and so do those that come (the flush among them).
 */
static void ft_fence_vm_state(void *opaque, bool running, RunState state)
{
    FtChannel *ch = opaque;
    GQueue q = G_QUEUE_INIT;

    qemu_mutex_lock(&ch->lock);
    ch->fence_refuse = !running;
    if (!running) {
        q = ft_fence_take_locked(ch);
    }
    qemu_mutex_unlock(&ch->lock);
    if (q.length) {
        warn_report("ft: the VM stopped (%s) while %u disk writes waited "
                    "for x-ft-release-writes: they fail", RunState_str(state),
                    q.length);
        trace_ft_fence_fail(q.length);
    }
    ft_fence_wake(&q, -EIO);
}

/*
 * Going live (BQL), before the replay core reissues what was in flight:
 * from now on, writes wait for the release.  The VM is paused.
 */
void ft_fence_begin(FtChannel *ch)
{
    if (!ch->fence_writes) {
        return;
    }
    qemu_mutex_lock(&ch->lock);
    ch->writes_fenced = true;
    ch->fence_refuse = false;
    ch->fence_start_ns = ft_now_ns();
    qemu_mutex_unlock(&ch->lock);
    ch->fence_vmstate = qemu_add_vm_change_state_handler(ft_fence_vm_state,
                                                         ch);
    info_report("ft: backup: writes to the shared disks wait until "
                "x-ft-release-writes (rrfence=on)");
}

/* The output seam, on a survivor: hold the write (true) or not. */
bool ft_fence_hold(FtChannel *ch, QEMUBHFunc *cb, void *opaque, int *ret)
{
    FtFenced *f;

    qemu_mutex_lock(&ch->lock);
    if (!ch->writes_fenced) {
        qemu_mutex_unlock(&ch->lock);
        return false;
    }
    if (ch->fence_refuse) {
        /* After the caller yields: it has not yet */
        qemu_mutex_unlock(&ch->lock);
        *ret = -EIO;
        aio_bh_schedule_oneshot(qemu_get_aio_context(), cb, opaque);
        return true;
    }
    f = g_new0(FtFenced, 1);
    f->cb = cb;
    f->opaque = opaque;
    f->ret = ret;
    g_queue_push_tail(&ch->fenced, f);
    trace_ft_fence_hold(ch->fenced.length);
    qemu_mutex_unlock(&ch->lock);
    return true;
}

bool ft_fence_busy(FtChannel *ch)
{
    bool busy;

    qemu_mutex_lock(&ch->lock);
    busy = ch->writes_fenced;
    qemu_mutex_unlock(&ch->lock);
    return busy;
}

/*
 * At exit, or when going live failed: a survivor that never got its
 * release lets nothing out.
 */
void ft_fence_cleanup(FtChannel *ch)
{
    GQueue q = G_QUEUE_INIT;

    ft_fence_unwatch(ch);
    qemu_mutex_lock(&ch->lock);
    if (!ch->live) {
        ch->writes_fenced = false;
    }
    q = ft_fence_take_locked(ch);
    qemu_mutex_unlock(&ch->lock);
    ft_fence_wake(&q, -EIO);
}

void ft_fence_info(FtChannel *ch, FtInfo *info)
{
    /* ch->lock is held */
    if (!ch->fence_writes || !ch->live) {
        return;
    }
    info->has_writes_fenced = info->has_fenced_writes = true;
    info->writes_fenced = ch->writes_fenced;
    info->fenced_writes = ch->fenced.length;
    if (!ch->writes_fenced) {
        info->has_fence_ms = true;
        info->fence_ms = ch->fence_ms;
    }
}

void qmp_x_ft_release_writes(Error **errp)
{
    FtChannel *ch = ft_current();
    GQueue q = G_QUEUE_INIT;
    double ms;

    if (!ch || !ch->fence_writes || !qatomic_load_acquire(&ch->live)) {
        error_setg(errp, "this VM is not a backup that went live with "
                   "rrfence=on");
        return;
    }
    qemu_mutex_lock(&ch->lock);
    if (!ch->writes_fenced) {
        qemu_mutex_unlock(&ch->lock);
        return;
    }
    ch->writes_fenced = false;
    ms = (ft_now_ns() - ch->fence_start_ns) / (double)SCALE_MS;
    ch->fence_ms = ms;
    q = ft_fence_take_locked(ch);
    qemu_mutex_unlock(&ch->lock);
    ft_fence_unwatch(ch);
    trace_ft_fence_release(q.length, (int64_t)(ms * 1000));
    info_report("ft: backup: the old primary is fenced: %u held disk writes "
                "go, %.1f ms after going live", q.length, ms);
    ft_fence_wake(&q, 0);
}
