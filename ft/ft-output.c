/*
 * FT logging channel: the output rule
 *
 * Copyright (c) 2026 The qemu-ft authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A primary holds the guest's output (console bytes, packets, disk
 * writes) until the backup has acknowledged the log that produced it;
 * a backup keeps its console output back until the primary reports it
 * released, and lets out the rest if it goes live.
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qemu/iov.h"
#include "qemu/main-loop.h"
#include "hw/core/cpu.h"
#include "ft-output.h"
#include "ft-internal.h"
#include "trace.h"

/* Backup: drop kept output that the primary is known to have let out. */
void ft_trim_kept_locked(FtChannel *ch)
{
    FtHeld *h;

    while ((h = g_queue_peek_head(&ch->held)) &&
           (h->tag <= ch->peer_released || ch->held_bytes > FT_KEPT_MAX)) {
        if (h->tag > ch->peer_released) {
            warn_report_once("ft: backup: more than %d bytes of console "
                             "output not known to be released; dropping "
                             "the oldest", (int)FT_KEPT_MAX);
        }
        g_queue_pop_head(&ch->held);
        ch->held_bytes -= h->len;
        g_free(h);
    }
}

/* Let held output out to where it was going, and free it. */
void ft_emit(FtHeld *h)
{
    if (h->chr) {
        qemu_chr_write_held(h->chr, h->data, h->len);
    } else if (h->cb) {
        h->cb(h->opaque);
    } else {
        struct iovec iov = { .iov_base = h->data, .iov_len = h->len };

        qemu_netfilter_pass_to_next(h->sender, h->flags, &iov, 1, h->nf);
    }
    g_free(h);
}

/*
 * The primary lets out the output whose log the backup acknowledged, or
 * all of it once it runs on alone.  Runs in the main loop, as does every
 * write to a chardev, so held output cannot overtake newer output.
 */
void ft_release_bh(void *opaque)
{
    FtChannel *ch = opaque;
    GQueue out = G_QUEUE_INIT;
    uint64_t upto;
    FtHeld *h;
    bool all;

    qemu_mutex_lock(&ch->lock);
    if (ch->role != FT_ROLE_PRIMARY || ch->state == FT_STATE_HALTED) {
        qemu_mutex_unlock(&ch->lock);
        return;
    }
    all = !ft_holding_state(ch->state);
    /*
     * Only on fresh news from the backup: a primary that was stalled
     * (SIGSTOP) may have been replaced meanwhile; the receiver decides.
     */
    if (!all &&
        ft_now_ns() - ch->last_rx_ns > (int64_t)ch->timeout_ms * SCALE_MS) {
        qemu_mutex_unlock(&ch->lock);
        return;
    }
    upto = all ? UINT64_MAX : ch->acked;
    while ((h = g_queue_peek_head(&ch->held)) && h->tag <= upto) {
        g_queue_pop_head(&ch->held);
        ch->held_bytes -= h->len;
        g_queue_push_tail(&out, h);
        if (!all) {
            int64_t held_ns = ft_now_ns() - h->t_ns;

            ch->delays[ch->ndelays++ % FT_DELAYS] = held_ns;
            trace_ft_out_released(h->tag, held_ns / SCALE_US);
        }
    }
    qemu_mutex_unlock(&ch->lock);

    trace_ft_output_release(upto, all, g_queue_get_length(&out));
    while ((h = g_queue_pop_head(&out))) {
        ft_emit(h);
    }

    if (!all) {
        qemu_mutex_lock(&ch->lock);
        ch->released = MAX(ch->released, upto);
        qemu_mutex_unlock(&ch->lock);
    }
}

static bool ft_out_holding(void *opaque)
{
    FtChannel *ch = opaque;
    bool holding;

    qemu_mutex_lock(&ch->lock);
    holding = ft_holding_state(ch->state) || !g_queue_is_empty(&ch->held);
    qemu_mutex_unlock(&ch->lock);
    return holding;
}

static bool ft_out_hold(void *opaque, Chardev *chr, const uint8_t *buf,
                        int len)
{
    FtChannel *ch = opaque;
    FtHeld *h;
    bool playing, live;

    if (!ch || len <= 0) {
        return false;
    }
    live = qatomic_load_acquire(&ch->live) != NULL;
    playing = ch->role == FT_ROLE_BACKUP && !live;
    if (!playing && live) {
        return false;
    }
    h = g_malloc0(sizeof(*h) + len);
    h->chr = chr;
    h->len = len;
    memcpy(h->data, buf, len);
    /* Just past the write's CHAR_WRITE event in the log */
    h->tag = replay_stream_tell(&ch->stream->stream);
    h->t_ns = ft_now_ns();
    if (!playing) {
        trace_ft_out_hold("console", h->tag, len);
    }

    qemu_mutex_lock(&ch->lock);
    g_queue_push_tail(&ch->held, h);
    ch->held_bytes += len;
    if (playing) {
        ft_trim_kept_locked(ch);
    } else if (!ft_holding_state(ch->state)) {
        qemu_bh_schedule(ch->release_bh);
    }
    qemu_mutex_unlock(&ch->lock);

    /* End the slice soon, so that the log up to here is committed. */
    if (!playing && current_cpu) {
        cpu_exit(current_cpu);
    }
    return true;
}

/*
 * A recorder holds @h, tagged with the log written so far.  Returns false,
 * and frees @h, when nothing holds output any more: it may go at once.
 */
static bool ft_hold_push(FtChannel *ch, FtHeld *h, uint64_t *count)
{
    h->tag = replay_stream_tell(&ch->stream->stream);
    h->t_ns = ft_now_ns();

    qemu_mutex_lock(&ch->lock);
    if (!ft_holding_state(ch->state) && g_queue_is_empty(&ch->held)) {
        qemu_mutex_unlock(&ch->lock);
        g_free(h);
        return false;
    }
    g_queue_push_tail(&ch->held, h);
    ch->held_bytes += h->len;
    (*count)++;
    trace_ft_out_hold(h->cb ? "write" : "packet", h->tag, h->len);
    if (!ft_holding_state(ch->state)) {
        qemu_bh_schedule(ch->release_bh);
    }
    qemu_mutex_unlock(&ch->lock);

    /* End the slice soon, so that the log up to here is committed. */
    if (current_cpu) {
        cpu_exit(current_cpu);
    }
    return true;
}

bool ft_output_available(void)
{
    return ft_current() != NULL;
}

bool ft_output_hold_packet(NetFilterState *nf, NetClientState *sender,
                           unsigned flags, const struct iovec *iov,
                           int iovcnt)
{
    FtChannel *ch = ft_current();
    size_t len = iov_size(iov, iovcnt);
    FtHeld *h;

    if (!ch || qatomic_load_acquire(&ch->live) || !len || len > INT_MAX) {
        return false;
    }
    h = g_malloc0(sizeof(*h) + len);
    h->nf = nf;
    h->sender = sender;
    h->flags = flags;
    h->len = len;
    iov_to_buf(iov, iovcnt, 0, h->data, len);
    return ft_hold_push(ch, h, &ch->held_packets);
}

/* Disk writes wait here until the log up to their issue is acknowledged. */
static bool ft_out_when_safe(void *opaque, QEMUBHFunc *cb, void *cb_opaque,
                             int *ret)
{
    FtChannel *ch = opaque;
    FtHeld *h;

    if (ft_fence_hold(ch, cb, cb_opaque, ret)) {
        return true;
    }
    if (qatomic_load_acquire(&ch->live)) {
        return false;
    }
    h = g_new0(FtHeld, 1);
    h->cb = cb;
    h->opaque = cb_opaque;
    return ft_hold_push(ch, h, &ch->held_writes);
}

void ft_output_forget(NetFilterState *nf)
{
    FtChannel *ch = ft_current();
    GList *l, *next;

    if (!ch) {
        return;
    }
    qemu_mutex_lock(&ch->lock);
    for (l = ch->held.head; l; l = next) {
        FtHeld *h = l->data;

        next = l->next;
        if (h->nf == nf) {
            ch->held_bytes -= h->len;
            g_queue_delete_link(&ch->held, l);
            g_free(h);
        }
    }
    qemu_mutex_unlock(&ch->lock);
}

const ReplayOutputOps ft_output_ops = {
    .holding = ft_out_holding,
    .chr_hold = ft_out_hold,
    .when_safe = ft_out_when_safe,
};
