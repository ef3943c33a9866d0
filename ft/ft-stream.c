/*
 * FT logging channel: the ReplayStream backend
 *
 * Copyright (c) 2026 The qemu-ft authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The log buffer, and flow control: the primary's vCPU stalls in the
 * throttle op while the backup lags beyond the bound; the backup's replay
 * sees log only up to an event boundary and never blocks for it.
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qapi/error.h"
#include "hw/core/cpu.h"
#include "system/runstate.h"
#include "system/system.h"
#include "ft-internal.h"
#include "trace.h"

/* A frame came from the peer. */
void ft_heard_locked(FtChannel *ch)
{
    int64_t now = ft_now_ns();

    if (ch->last_rx_ns && now - ch->last_rx_ns > ch->gap_max_ns) {
        ch->gap_max_ns = now - ch->last_rx_ns;
    }
    ch->last_rx_ns = now;
}

void ft_bw_update_locked(FtChannel *ch, uint64_t bytes)
{
    int64_t now = ft_now_ns();

    ch->bw_bytes += bytes;
    if (now - ch->bw_prev_ns >= NANOSECONDS_PER_SECOND) {
        ch->bw_mbps = (ch->bw_bytes - ch->bw_prev_bytes) * 8.0 * 1000.0 /
                      (now - ch->bw_prev_ns);
        ch->bw_prev_bytes = ch->bw_bytes;
        ch->bw_prev_ns = now;
    }
}

/* Grow ch->buf so that it holds @need bytes from ch->base on. */
void ft_buf_reserve(FtChannel *ch, uint64_t keep_from, size_t need)
{
    size_t drop = keep_from - ch->base;

    if (drop && (drop >= ch->cap / 2 || need > ch->cap)) {
        size_t used = (ch->role == FT_ROLE_PRIMARY ? ch->written
                                                    : ch->received) - ch->base;

        memmove(ch->buf, ch->buf + drop, used - drop);
        ch->base += drop;
        need -= drop;
    }
    if (need > ch->cap) {
        ch->cap = MAX(pow2ceil(need), 256 * KiB);
        ch->buf = g_realloc(ch->buf, ch->cap);
    }
}

static void ft_bound_push_locked(FtChannel *ch, uint64_t off)
{
    unsigned i;

    if (ch->bounds_count == FT_BOUNDARIES) {
        /* Fewer boundaries are still correct: replace the newest. */
        i = (ch->bounds_head + ch->bounds_count - 1) % FT_BOUNDARIES;
        ch->bounds[i] = off;
        return;
    }
    i = (ch->bounds_head + ch->bounds_count) % FT_BOUNDARIES;
    ch->bounds[i] = off;
    ch->bounds_count++;
}

/* ReplayStream ops */

static int ft_write(ReplayStream *s, const uint8_t *buf, size_t len)
{
    FtChannel *ch = container_of(s, FtStream, stream)->ch;
    bool wake = false;

    qemu_mutex_lock(&ch->lock);
    if (ch->state == FT_STATE_WAITING && !ch->wait &&
        ch->written + len - ch->base > ch->max_lag_bytes) {
        ft_lost_locked(ch, "no backup connected before the log outgrew "
                       "rrlagbytes");
    }
    if (ch->state == FT_STATE_WAITING || ch->state == FT_STATE_STREAMING) {
        ft_buf_reserve(ch, ch->acked, ch->written - ch->base + len);
        memcpy(ch->buf + (ch->written - ch->base), buf, len);
        ch->written += len;
        ft_bound_push_locked(ch, ch->written);
        /*
         * Wake the sender at most every FT_TX_BATCH_NS, or once a frame's
         * worth is pending: tens of thousands of commits a second must
         * not each cost a thread switch.  While data flows the sender
         * polls every FT_TX_BATCH_NS by itself.
         */
        if (ch->state == FT_STATE_STREAMING && !g_queue_is_empty(&ch->held)) {
            trace_ft_out_commit(ch->written, ch->tx_sleeping);
        }
        if (ch->state == FT_STATE_STREAMING && ch->tx_sleeping) {
            int64_t now = ft_now_ns();

            /* Held output waits for this log: no batching then. */
            if (ch->written - ch->sent >= FT_TX_PAYLOAD ||
                now - ch->tx_wake_ns >= FT_TX_BATCH_NS ||
                !g_queue_is_empty(&ch->held)) {
                ch->tx_wake_ns = now;
                wake = true;
            }
        }
    } else {
        ch->written += len;
        ch->base = ch->written;
    }
    qemu_mutex_unlock(&ch->lock);
    /*
     * Once ch->lock is free: woken while it is held, the sender would
     * only go to sleep again on it.  It waits for tx_cond only after
     * checking, under the lock, for the data written above.
     */
    if (wake) {
        qemu_cond_signal(&ch->tx_cond);
    }
    return 0;
}

/*
 * The backup lags too far: in unacknowledged log, or in execution (the
 * icount its replay reached, as of its newest ACK or heartbeat).
 */
static bool ft_over_bound_locked(FtChannel *ch)
{
    uint64_t icount = qatomic_read(&ch->stream->stream.icount);

    return ch->written - ch->acked > ch->max_lag_bytes ||
           (icount > ch->peer_icount &&
            icount - ch->peer_icount > ch->max_lag_insns);
}

/*
 * The primary's vCPU stalls while the backup lags beyond the bounds, and,
 * in every state that holds output (the backup lost, the lock not yet
 * won...), while the held output reaches rrheldbytes: a guest that floods
 * its network cannot grow the primary's memory without bound.
 */
static bool ft_must_stall_locked(FtChannel *ch)
{
    if (ch->held_bytes >= ch->held_max && ft_holding_state(ch->state)) {
        if (!ch->held_capped) {
            ch->held_capped = true;
            ch->held_cap_hits++;
            trace_ft_held_cap(ch->held_bytes, ch->held_max);
        }
        return true;
    }
    ch->held_capped = false;
    return ch->state == FT_STATE_STREAMING && ft_over_bound_locked(ch);
}

/*
 * Has somebody asked the vCPU thread to stop, or to come out of the
 * guest?  Kicks go to the vCPU the round-robin thread runs: current_cpu,
 * on that thread.
 */
static bool ft_vcpu_called(void)
{
    CPUState *cpu = current_cpu ? current_cpu : first_cpu;

    return cpu && (qatomic_read(&cpu->stop) ||
                   qatomic_read(&cpu->exit_request));
}

/*
 * How long the vCPU was held here (throttle-ms).  Each wait counts at most
 * twice what it asked for: one that took longer found the process stopped
 * (SIGSTOP, a debugger) or not scheduled, which is not the bound's doing.
 */
#define FT_THROTTLE_WAIT_MS 10

static void ft_throttle(ReplayStream *s)
{
    FtChannel *ch = container_of(s, FtStream, stream)->ch;
    int64_t ns = 0;
    bool held = false;

    ft_setup_insns(ch);
    qemu_mutex_lock(&ch->lock);
    while (ft_must_stall_locked(ch) && !ft_vcpu_called()) {
        int64_t t0 = ft_now_ns();

        /*
         * The backup must catch up: it gets the log that is still
         * batched now, not at the sender's next poll.
         */
        if (!held && ch->tx_sleeping && ch->sent < ch->written) {
            qemu_cond_signal(&ch->tx_cond);
        }
        held = true;
        qemu_cond_timedwait(&ch->cond, &ch->lock, FT_THROTTLE_WAIT_MS);
        ns += MIN(ft_now_ns() - t0, 2 * FT_THROTTLE_WAIT_MS * SCALE_MS);
    }
    if (held) {
        ch->throttle_ns += ns;
        trace_ft_throttled(ns);
    }
    qemu_mutex_unlock(&ch->lock);
}

static size_t ft_avail(ReplayStream *s)
{
    FtChannel *ch = container_of(s, FtStream, stream)->ch;
    uint64_t end = qatomic_load_acquire(&ch->avail_end);

    if (end > ch->consumed) {
        return end - ch->consumed;
    }
    qemu_mutex_lock(&ch->lock);
    ch->starved = true;
    if (ch->state != FT_STATE_STREAMING && ch->state != FT_STATE_WAITING &&
        ch->avail_end == ch->consumed && !ch->drained) {
        /*
         * Played everything the primary sent up to its last event
         * boundary: stop there, or go live once the lock is won.  The
         * start of an event cut off by the failure is never played.
         */
        trace_ft_backup_drained(ch->consumed, ch->received - ch->consumed);
        ch->drained = true;
        ch->drained_stop = true;
        qemu_bh_schedule(ch->bh);
    }
    qemu_mutex_unlock(&ch->lock);
    return 0;
}

/*
 * Only the log's header is read before data is known to be there: every
 * later read is for an event that replay started because ft_avail() said
 * it had begun, and a primary sends whole events up to each frame without
 * MORE.  A read that finds nothing more after that means the primary cut
 * an event at the end of a frame: a protocol error, never a wait (with
 * the replay mutex held, and often the BQL).  The replay core then halts
 * as for a corrupt log (a divergence).
 */
static ssize_t ft_read(ReplayStream *s, uint8_t *buf, size_t len)
{
    FtChannel *ch = container_of(s, FtStream, stream)->ch;
    int64_t deadline;
    int wait_ms;
    size_t n;

    qemu_mutex_lock(&ch->lock);
    if (ch->read_started && ch->avail_end == ch->consumed) {
        error_report("ft: backup: protocol error: the primary ended a frame "
                     "inside an event, at log offset %" PRIu64
                     " (a frame without MORE must end on an event boundary)",
                     ch->consumed);
        qemu_mutex_unlock(&ch->lock);
        return -EPROTO;
    }
    /* The header: a primary sends it right after the handshake. */
    wait_ms = ft_startup_wait_ms(ch);
    deadline = ft_now_ns() + (int64_t)wait_ms * SCALE_MS;
    while (ch->avail_end == ch->consumed &&
           (ch->state == FT_STATE_STREAMING ||
            ch->state == FT_STATE_WAITING)) {
        int64_t left_ms = (deadline - ft_now_ns()) / SCALE_MS;

        if (left_ms <= 0) {
            error_report("ft: backup: the primary sent no log within %d ms "
                         "of its HELLO", wait_ms);
            qemu_mutex_unlock(&ch->lock);
            return -ETIMEDOUT;
        }
        qemu_cond_timedwait(&ch->cond, &ch->lock, left_ms);
    }
    n = MIN(len, ch->avail_end - ch->consumed);
    memcpy(buf, ch->buf + (ch->consumed - ch->base), n);
    ch->consumed += n;
    ch->read_started = true;
    qemu_cond_broadcast(&ch->cond);
    qemu_mutex_unlock(&ch->lock);
    return n;
}

/*
 * At startup (no vCPU yet) replay waits here for the log's first event,
 * in the main thread, before the machine exists.  A primary sends one
 * as soon as it builds its machine, so this has a deadline: a peer that
 * keeps the connection up with heartbeats and nothing else must not
 * hang QEMU.  Later, a backup waits for as long as its primary is alive
 * and has nothing to say (an idle or stopped guest).
 */
static void ft_startup_deadline(FtChannel *ch)
{
    int wait_ms = ft_startup_wait_ms(ch);

    if (!ch->startup_deadline) {
        ch->startup_deadline = ft_now_ns() + (int64_t)wait_ms * SCALE_MS;
    } else if (ft_now_ns() > ch->startup_deadline &&
               qatomic_load_acquire(&ch->avail_end) == ch->consumed) {
        error_report("ft: backup: the primary sent no event within %d ms "
                     "of its log's header; refusing to replay", wait_ms);
        exit(1);
    }
}

static bool ft_wait(ReplayStream *s, int64_t timeout_ns)
{
    FtChannel *ch = container_of(s, FtStream, stream)->ch;
    int64_t deadline = ft_now_ns() + timeout_ns;
    bool more;

    if (!first_cpu) {
        ft_startup_deadline(ch);
    }
    qemu_mutex_lock(&ch->lock);
    while (ch->avail_end == ch->consumed &&
           ch->state == FT_STATE_STREAMING && !ft_vcpu_called()) {
        int64_t left = deadline - ft_now_ns();

        if (left <= 0) {
            break;
        }
        qemu_cond_timedwait(&ch->cond, &ch->lock, left / SCALE_MS + 1);
    }
    more = ch->avail_end > ch->consumed || ch->state == FT_STATE_STREAMING ||
           ch->state == FT_STATE_WAITING;
    qemu_mutex_unlock(&ch->lock);
    return more;
}

/* From the replay core, with the replay mutex held */
static void ft_diverged(ReplayStream *s, const char *msg)
{
    FtChannel *ch = container_of(s, FtStream, stream)->ch;

    qemu_mutex_lock(&ch->lock);
    ft_diverged_locked(ch, replay_get_current_icount(), msg);
    qemu_mutex_unlock(&ch->lock);
}

/*
 * Join the primary's sender once it stopped (the state is no longer
 * streaming), whichever of ft_close() and a detach comes first; the
 * other waits for it.  Without ch->lock, which the sender needs.
 */
void ft_join_tx(FtChannel *ch)
{
    qemu_mutex_lock(&ch->join_lock);
    if (ch->tx_started) {
        qemu_thread_join(&ch->tx_thread);
        ch->tx_started = false;
    }
    qemu_mutex_unlock(&ch->join_lock);
}

/*
 * End the channel: an orderly END to a backup that has everything, the
 * connection and the listener shut down, every thread of the channel
 * joined but a running arbitration (see ft_channel_free()).
 */
void ft_teardown(FtChannel *ch)
{
    int64_t deadline = ft_now_ns() + FT_CLOSE_DRAIN_MS * SCALE_MS;
    bool rx_started;

    qemu_mutex_lock(&ch->lock);
    ch->closing = true;
    if (ch->role == FT_ROLE_PRIMARY && ch->state == FT_STATE_STREAMING) {
        /* Orderly end: everything sent and acknowledged, then END. */
        qemu_cond_broadcast(&ch->tx_cond);
        while (ch->state == FT_STATE_STREAMING && ch->acked < ch->written &&
               ft_now_ns() < deadline) {
            qemu_cond_timedwait(&ch->cond, &ch->lock, 10);
        }
        if (ch->state == FT_STATE_STREAMING && ch->acked == ch->written) {
            QIOChannel *ioc = ch->ioc;
            uint64_t end = ch->written;

            ft_set_state(ch, FT_STATE_STREAMING, FT_STATE_ENDED);
            qemu_cond_broadcast(&ch->tx_cond);
            qemu_mutex_unlock(&ch->lock);
            ft_join_tx(ch);
            /* Best effort: without END the backup sees the close. */
            ft_send_frame(ioc, FT_FRAME_END, 0, ch->gen, end, NULL, 0, NULL);
            qemu_mutex_lock(&ch->lock);
        }
    }
    if (ch->state == FT_STATE_STREAMING || ch->state == FT_STATE_WAITING) {
        ft_set_state(ch, ch->state, FT_STATE_ENDED);
    }
    qemu_cond_broadcast(&ch->tx_cond);
    ft_shutdown_ioc(ch->ioc);
    ft_shutdown_listener(ch);
    qemu_cond_broadcast(&ch->cond);
    /* No connection is attached once the state left waiting. */
    rx_started = ch->rx_started;
    qemu_mutex_unlock(&ch->lock);
    ft_join_tx(ch);
    if (rx_started) {
        qemu_thread_join(&ch->rx_thread);
    }
    /* The listener is shut down: accept() fails, and it sees closing. */
    if (ch->accept_started) {
        qemu_thread_join(&ch->accept_thread);
        ch->accept_started = false;
    }
    ft_end_handshakes(ch);
}

/*
 * The one place the channel is freed, at exit, once its threads are
 * joined.  The replay core, the filters and QMP find it only through
 * the output and digest ops, which are cleared first, so none of them
 * reaches it after.
 * An arbitration still running (its lock storage hangs) keeps the
 * channel: that thread may touch it until it returns, so it is left to
 * the process's exit.
 */
void ft_channel_free(FtChannel *ch)
{
    FtHeld *h;
    FtEvent *ev;

    if (ft_current() == ch) {
        replay_set_output_ops(NULL, NULL);
        replay_set_digest_ops(NULL, NULL);
    }
    qemu_mutex_lock(&ch->lock);
    if (ch->arb_running) {
        qemu_mutex_unlock(&ch->lock);
        return;
    }
    qemu_mutex_unlock(&ch->lock);

    if (ch->live) {
        /* The core closed the live sink; the channel's own is ours. */
        g_free(ch->stream->stream.buf);
        g_free(ch->stream->stream.name);
        g_free(ch->stream);
    }
    if (ch->machine_done.notify) {
        qemu_remove_machine_init_done_notifier(&ch->machine_done);
    }
    ft_fence_cleanup(ch);
    qemu_bh_delete(ch->bh);
    qemu_bh_delete(ch->release_bh);
    if (ch->exit_timer) {
        timer_free(ch->exit_timer);
    }
    qemu_announce_timer_del(&ch->announce, false);
    qapi_free_AnnounceParameters(ch->join_announce);
    while ((h = g_queue_pop_head(&ch->held))) {
        g_free(h);
    }
    while ((ev = g_queue_pop_head(&ch->events))) {
        g_free(ev->text);
        g_free(ev);
    }
    ft_reader_free(ch->reader);
    if (ch->ioc) {
        object_unref(OBJECT(ch->ioc));
    }
    if (ch->conn) {
        object_unref(OBJECT(ch->conn));
    }
    if (ch->listener) {
        object_unref(OBJECT(ch->listener));
    }
    qapi_free_SocketAddress(ch->addr);
    g_free(ch->addr_str);
    g_free(ch->tls_creds);
    g_free(ch->tls_authz);
    g_free(ch->tls_hostname);
    g_free(ch->error);
    g_free(ch->peer_str);
    g_free(ch->buf);
    g_free(ch->mismatch);
    g_free(ch->lock_dir);
    g_free(ch->lock_holder);
    g_free(ch->config);
    g_free(ch->peer_config);
    g_ptr_array_free(ch->handshaking, true);
    qemu_cond_destroy(&ch->cond);
    qemu_cond_destroy(&ch->tx_cond);
    qemu_mutex_destroy(&ch->join_lock);
    qemu_mutex_destroy(&ch->lock);
    g_free(ch);
}

/* At exit: the core frees @s after this. */
static void ft_close(ReplayStream *s)
{
    FtChannel *ch = container_of(s, FtStream, stream)->ch;

    ft_teardown(ch);
    ft_channel_free(ch);
}

const ReplayStreamOps ft_primary_ops = {
    .write = ft_write,
    .throttle = ft_throttle,
    .close = ft_close,
};

const ReplayStreamOps ft_backup_ops = {
    .read = ft_read,
    .avail = ft_avail,
    .wait = ft_wait,
    .diverged = ft_diverged,
    .close = ft_close,
};
