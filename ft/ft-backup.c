/*
 * FT logging channel: the backup's receiver thread
 *
 * Copyright (c) 2026 The qemu-ft authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * It verifies and buffers the primary's frames, lets replay see them up
 * to an event boundary, and acknowledges them on receipt.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/main-loop.h"
#include "hw/core/cpu.h"
#include "ft-bytes.h"
#include "ft-disks.h"
#include "system/replay.h"
#include "system/runstate.h"
#include "ft-internal.h"
#include "trace.h"

/*
 * Replay that stopped moving while log waits to be played: the log holds
 * next an input that this VM's devices never raise (an interrupt, a
 * bottom half), which only a divergence explains.  Without this, the
 * backup would wait for ever, and its primary stall at rrlag.
 *
 * The watch runs only while the VM runs with log waiting: a stopped VM
 * (QMP stop) does not move, and must not be found stalled the moment it
 * runs again.  Moving is either the instruction count or the log read.
 * Nor must a process that was not running at all (SIGSTOP, a host that
 * did not schedule it): a watch not looked at for FT_STALL_GAP_MS starts
 * again.
 */
typedef struct FtStallWatch {
    uint64_t icount;
    uint64_t consumed;
    int64_t since_ns;           /* 0: not watching */
    int64_t seen_ns;            /* when last looked at */
} FtStallWatch;

/*
 * What a stalled replay waited for: the log's next event and the events
 * the devices queued.  In the main loop, which holds the replay mutex.
 */
static void ft_backup_stall_bh(void *opaque)
{
    g_autofree char *what = NULL;

    if (replay_mode == REPLAY_MODE_PLAY) {
        what = replay_describe_wait();
        error_report("ft: backup: the stalled replay waited with %s", what);
    }
}

static bool ft_backup_stalled_locked(FtChannel *ch, FtStallWatch *w)
{
    uint64_t icount = qatomic_read(&ch->stream->stream.icount);
    int64_t now = ft_now_ns();
    g_autofree char *why = NULL;
    bool waiting, gap;

    gap = now - w->seen_ns > (int64_t)FT_STALL_GAP_MS * SCALE_MS;
    w->seen_ns = now;
    waiting = qatomic_read(&ch->avail_end) > ch->consumed &&
              ch->state == FT_STATE_STREAMING &&
              ft_has_state(ch) &&
              (runstate_is_running() || replay_vm_stopped_by_log());
    if (!waiting) {
        w->since_ns = 0;
        return false;
    }
    if (!w->since_ns || gap || icount != w->icount ||
        ch->consumed != w->consumed) {
        w->icount = icount;
        w->consumed = ch->consumed;
        w->since_ns = now;
        return false;
    }
    if (now - w->since_ns < (int64_t)FT_STALL_MS * SCALE_MS) {
        return false;
    }
    why = g_strdup_printf("replay stalled for %d ms at icount %" PRIu64
                          " with %" PRIu64 " bytes of log waiting",
                          FT_STALL_MS, icount,
                          qatomic_read(&ch->avail_end) - ch->consumed);
    ft_diverged_locked(ch, icount, why);
    aio_bh_schedule_oneshot(qemu_get_aio_context(), ft_backup_stall_bh, NULL);
    return true;
}

/*
 * Bound what replay has not consumed yet (rrbufbytes): stop reading the
 * connection until a frame of @len bytes fits.  TCP then holds the
 * primary's sender back, and the primary's vCPU stalls at rrlagbytes.
 * Heartbeats go on meanwhile, so the primary knows its backup is alive
 * and busy, not lost; and so does the stall watch, since a replay that
 * stalled with its buffer full would otherwise hold both sides for ever.
 * False once the connection failed (the backup is then lost) or replay
 * stalled, with ch->lock held throughout except while sending.
 */
static bool ft_backup_room_locked(FtChannel *ch, uint32_t len,
                                  int64_t *last_tx, FtStallWatch *w)
{
    while (ch->received - ch->consumed + len > ch->rx_max &&
           ch->state == FT_STATE_STREAMING) {
        uint64_t pos = ch->received;
        uint64_t icount = qatomic_read(&ch->stream->stream.icount);
        Error *err = NULL;
        bool ok;

        qemu_cond_timedwait(&ch->cond, &ch->lock,
                            MIN(ch->heartbeat_ms, FT_STALL_GAP_MS / 4));
        if (ft_backup_stalled_locked(ch, w)) {
            return false;
        }
        if (ft_now_ns() - *last_tx < (int64_t)ch->heartbeat_ms * SCALE_MS) {
            continue;
        }
        qemu_mutex_unlock(&ch->lock);
        ok = ft_send_u64(ch, ch->ioc, FT_FRAME_HEARTBEAT, pos, icount, &err);
        qemu_mutex_lock(&ch->lock);
        if (!ok) {
            g_autofree char *why = g_strdup_printf(
                "sending: %s", error_get_pretty(err));

            error_free(err);
            ft_lost_locked(ch, why);
            return false;
        }
        *last_tx = ft_now_ns();
        trace_ft_backup_full(ch->received - ch->consumed);
    }
    return ch->state == FT_STATE_STREAMING;
}

void *ft_backup_rx_thread(void *opaque)
{
    FtChannel *ch = opaque;
    FtReader *r = ch->reader;
    QIOChannel *ioc = ch->ioc;
    int64_t last_rx = ft_now_ns();
    int64_t last_tx = 0;
    uint64_t acked = 0;
    uint64_t reported = 0;
    FtStallWatch watch = { 0 };

    for (;;) {
        FtFrameHeader h;
        const uint8_t *payload;
        int wait_ms = MIN(ch->heartbeat_ms, FT_REPORT_NS / SCALE_MS);
        uint64_t icount;
        int ret;
        uint64_t pos;
        bool delivered = false;
        bool starved;

        ret = ft_read_frame(ioc, r, r->pos < r->len ? 0 : wait_ms, &h,
                            &payload);
        qemu_mutex_lock(&ch->lock);
        if (ch->state != FT_STATE_STREAMING) {
            qemu_mutex_unlock(&ch->lock);
            break;
        }
        if (ret < 0) {
            g_autofree char *why = ft_read_error(r, ret);

            ft_lost_locked(ch, why);
            qemu_mutex_unlock(&ch->lock);
            break;
        }
        if (ret == 0) {
            unsigned silence = ft_silence_ms(ch);

            if (ft_now_ns() - last_rx > (int64_t)silence * SCALE_MS) {
                g_autofree char *why =
                    g_strdup_printf("no data or heartbeat for %u ms",
                                    silence);

                ft_lost_locked(ch, why);
                qemu_mutex_unlock(&ch->lock);
                break;
            }
        } else {
            last_rx = ft_now_ns();
            ft_heard_locked(ch);
            ret = ft_proto_receive(&ch->proto, &h, payload);
            if (ret < 0) {
                g_autofree char *why =
                    g_strdup_printf("protocol error: %s",
                                    ft_proto_strerror(ret));

                ft_lost_locked(ch, why);
                qemu_mutex_unlock(&ch->lock);
                break;
            }
            if (h.type == FT_FRAME_DATA &&
                !ft_backup_room_locked(ch, h.len, &last_tx, &watch)) {
                qemu_mutex_unlock(&ch->lock);
                break;
            }
            /* Not reading while the buffer was full is not silence. */
            last_rx = ft_now_ns();
            if (h.type == FT_FRAME_DATA) {
                ft_buf_reserve(ch, ch->consumed,
                               ch->received - ch->base + h.len);
                memcpy(ch->buf + (ch->received - ch->base), payload, h.len);
                ch->received += h.len;
                trace_ft_in_data(ch->received);
                ft_bw_update_locked(ch, h.len);
                if (!(h.flags & FT_FRAME_F_MORE)) {
                    qatomic_store_release(&ch->avail_end, ch->received);
                    delivered = true;
                }
            } else if (h.type == FT_FRAME_HEARTBEAT && h.len >= 8) {
                ch->peer_icount = ft_get_le64(payload);
                if (h.len >= 16) {
                    ch->peer_released = ft_get_le64(payload + 8);
                    ft_trim_kept_locked(ch);
                }
            } else if (h.type == FT_FRAME_CONFIG) {
                size_t n = ft_proto_escape(payload, h.len, NULL, 0);

                /* Printed in messages: no escape sequence gets through */
                g_free(ch->peer_config);
                ch->peer_config = g_malloc(n + 1);
                ft_proto_escape(payload, h.len, ch->peer_config, n + 1);
                qemu_cond_broadcast(&ch->cond);
                if (ch->join && ch->config) {
                    /* Joining: compared here, before any state comes */
                    g_autofree char *why =
                        ft_disks_compare(ch->config, ch->peer_config);

                    if (why) {
                        g_autofree char *msg = g_strdup_printf(
                            "the disks differ from the primary's (%s); "
                            "refusing to replay", why);

                        ft_queue_event(ch, FT_EV_HALT, msg, 0);
                        ft_lost_locked(ch, msg);
                        qemu_mutex_unlock(&ch->lock);
                        break;
                    }
                }
            } else if (h.type == FT_FRAME_END) {
                ft_set_state(ch, FT_STATE_STREAMING, FT_STATE_ENDED);
                trace_ft_backup_end(ch->received);
            }
        }
        pos = ch->received;
        starved = delivered && ch->starved;
        if (starved) {
            ch->starved = false;
        }
        qemu_mutex_unlock(&ch->lock);
        /*
         * Wake replay once ch->lock is free: woken while it is held, the
         * vCPU would only go to sleep again on it.
         */
        if (delivered) {
            qemu_cond_broadcast(&ch->cond);
        }
        if (starved) {
            qemu_notify_event();
            if (first_cpu) {
                qemu_cpu_kick(first_cpu);
            }
        }
        if (ret > 0 && h.type == FT_FRAME_END) {
            break;
        }

        /*
         * Acknowledge on receipt, once the input read so far is handled;
         * report how far replay got, which the primary's flow control
         * needs, every FT_REPORT_NS while it moves; heartbeat otherwise.
         */
        icount = qatomic_read(&ch->stream->stream.icount);
        if (r->pos >= r->len &&
            (pos != acked ||
             (icount != reported && ft_now_ns() - last_tx >= FT_REPORT_NS) ||
             ft_now_ns() - last_tx >= (int64_t)ch->heartbeat_ms * SCALE_MS)) {
            uint8_t type = pos != acked ? FT_FRAME_ACK : FT_FRAME_HEARTBEAT;
            Error *err = NULL;

            reported = icount;
            if (type == FT_FRAME_ACK) {
                trace_ft_in_ack(pos);
            }
            if (!ft_send_u64(ch, ioc, type, pos, icount, &err)) {
                g_autofree char *why = g_strdup_printf(
                    "sending: %s", error_get_pretty(err));

                error_free(err);
                ft_lost(ch, why);
                break;
            }
            acked = pos;
            last_tx = ft_now_ns();
        }
        qemu_mutex_lock(&ch->lock);
        if (ft_backup_stalled_locked(ch, &watch)) {
            qemu_mutex_unlock(&ch->lock);
            break;
        }
        qemu_mutex_unlock(&ch->lock);
    }
    qemu_mutex_lock(&ch->lock);
    qemu_cond_broadcast(&ch->cond);
    qemu_mutex_unlock(&ch->lock);
    qemu_notify_event();
    if (first_cpu) {
        qemu_cpu_kick(first_cpu);
    }
    return NULL;
}
