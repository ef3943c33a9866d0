/*
 * FT logging channel: the primary's sender and receiver threads
 *
 * Copyright (c) 2026 The qemu-ft authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The sender sends the log as DATA frames, cut at commit points, and
 * heartbeats that say how far output was released; the receiver takes
 * the backup's ACKs, which release held output and let the vCPU run on.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "ft-bytes.h"
#include "ft-internal.h"
#include "trace.h"

/*
 * The next DATA frame: from ch->sent to the furthest commit point within
 * FT_TX_PAYLOAD, or FT_TX_PAYLOAD with FT_FRAME_F_MORE if there is none.
 */
static uint32_t ft_next_frame_locked(FtChannel *ch, uint16_t *flags)
{
    uint64_t limit = ch->sent + FT_TX_PAYLOAD;
    uint64_t end = 0;

    while (ch->bounds_count) {
        uint64_t b = ch->bounds[ch->bounds_head];

        if (b > limit) {
            break;
        }
        end = b;
        ch->bounds_head = (ch->bounds_head + 1) % FT_BOUNDARIES;
        ch->bounds_count--;
    }
    if (end > ch->sent) {
        *flags = 0;
        return end - ch->sent;
    }
    *flags = FT_FRAME_F_MORE;
    return MIN(FT_TX_PAYLOAD, ch->written - ch->sent);
}

void *ft_primary_tx_thread(void *opaque)
{
    FtChannel *ch = opaque;
    uint8_t *frame = g_malloc(FT_TX_PAYLOAD);
    int64_t last_hb = ft_now_ns();
    int64_t last_data = 0;
    uint64_t hb_released = 0;

    qemu_mutex_lock(&ch->lock);
    while (ch->state == FT_STATE_STREAMING) {
        QIOChannel *ioc = ch->ioc;
        Error *err = NULL;
        uint64_t off = ch->sent;
        uint64_t icount = qatomic_read(&ch->stream->stream.icount);
        uint64_t released = ch->released;
        g_autofree char *config = NULL;
        /*
         * Heartbeats go out while data flows too: the backup watches
         * them, and they tell it how far output was released.
         */
        int64_t hb_due = last_hb + (int64_t)ch->heartbeat_ms * SCALE_MS;
        uint16_t flags = 0;
        uint32_t len = 0;
        bool ok;

        if (released != hb_released) {
            hb_due = MIN(hb_due, last_hb + FT_REPORT_NS);
        }

        if (ch->config && !ch->config_sent) {
            config = g_strdup(ch->config);
            ch->config_sent = true;
        } else if (ch->sent < ch->written && ft_now_ns() < hb_due) {
            len = ft_next_frame_locked(ch, &flags);
            memcpy(frame, ch->buf + (ch->sent - ch->base), len);
            /* before the send: the ACK may come back at once */
            ch->sent += len;
            ft_proto_sent(&ch->proto, off, len);
            ft_bw_update_locked(ch, len);
        } else if (ft_now_ns() < hb_due && !ch->closing &&
                   ch->sent == ch->written) {
            /* While data flows, poll for more every FT_TX_BATCH_NS. */
            int ms = ft_now_ns() - last_data < 5 * FT_TX_BATCH_NS ?
                     FT_TX_BATCH_NS / SCALE_MS :
                     (hb_due - ft_now_ns()) / SCALE_MS + 1;

            ch->tx_sleeping = true;
            trace_ft_out_tx_sleep(ms);
            qemu_cond_timedwait(&ch->tx_cond, &ch->lock, ms);
            ch->tx_sleeping = false;
            trace_ft_out_tx_wake(ch->written - ch->sent);
            continue;
        } else if (ch->closing && ch->sent == ch->written) {
            break;
        }
        qemu_mutex_unlock(&ch->lock);

        if (config) {
            ok = ft_send_frame(ioc, FT_FRAME_CONFIG, 0, ch->gen, off,
                               (uint8_t *)config, strlen(config), &err);
        } else if (len) {
            ok = ft_send_frame(ioc, FT_FRAME_DATA, flags, ch->gen, off,
                               frame, len, &err);
            last_data = ft_now_ns();
            trace_ft_out_sent(off + len);
        } else {
            uint8_t p[16];

            ft_put_le64(p, icount);
            ft_put_le64(p + 8, released);
            ok = ft_send_frame(ioc, FT_FRAME_HEARTBEAT, 0, ch->gen, off,
                               p, sizeof(p), &err);
            last_hb = ft_now_ns();
            hb_released = released;
        }

        qemu_mutex_lock(&ch->lock);
        if (!ok) {
            g_autofree char *why = g_strdup_printf("sending: %s",
                                                   error_get_pretty(err));

            error_free(err);
            ft_lost_locked(ch, why);
            break;
        }
    }
    qemu_mutex_unlock(&ch->lock);
    g_free(frame);
    return NULL;
}

void *ft_primary_rx_thread(void *opaque)
{
    FtChannel *ch = opaque;
    FtReader *r = ch->reader;
    QIOChannel *ioc = ch->ioc;

    for (;;) {
        FtFrameHeader h;
        const uint8_t *payload;
        unsigned silence = ft_silence_ms(ch);
        int ret = ft_read_frame(ioc, r, silence, &h, &payload);

        qemu_mutex_lock(&ch->lock);
        if (ch->state != FT_STATE_STREAMING) {
            qemu_mutex_unlock(&ch->lock);
            break;
        }
        if (ret <= 0) {
            g_autofree char *why = ret == 0 ?
                g_strdup_printf("no ACK or heartbeat for %u ms",
                                silence) :
                ft_read_error(r, ret);

            if (ch->closing && ret == FT_SOCK_ERR(EPIPE)) {
                qemu_mutex_unlock(&ch->lock);
                break;
            }
            ft_lost_locked(ch, why);
            qemu_mutex_unlock(&ch->lock);
            break;
        }
        ret = ft_proto_receive(&ch->proto, &h, payload);
        if (ret < 0) {
            g_autofree char *why = g_strdup_printf("protocol error: %s",
                                                   ft_proto_strerror(ret));
            ft_lost_locked(ch, why);
            qemu_mutex_unlock(&ch->lock);
            break;
        }
        if (ch->acked != ch->proto.tx_acked) {
            trace_ft_out_acked(ch->proto.tx_acked);
        }
        ch->acked = ch->proto.tx_acked;
        if (h.len >= 8) {
            /*
             * Replay only goes forward; a backup that joins reports 0
             * until it has the VM's state.
             */
            ch->peer_icount = MAX(ch->peer_icount, ft_get_le64(payload));
        }
        /*
         * The backup replayed past the first digest of this pairing, and
         * is still here: it matched.  Without digests, past its start.
         */
        if (!ch->verified && !ch->pre_switch &&
            (ch->verify_icount ? ch->peer_icount > ch->verify_icount :
             !qatomic_read(&ch->digest_insns) &&
             ch->peer_icount > ch->start_icount)) {
            ch->verified = true;
            ft_queue_event(ch, FT_EV_VERIFIED, NULL, ch->peer_icount);
        }
        ft_heard_locked(ch);
        if (!g_queue_is_empty(&ch->held) &&
            ((FtHeld *)g_queue_peek_head(&ch->held))->tag <= ch->acked) {
            qemu_bh_schedule(ch->release_bh);
        }
        qemu_cond_broadcast(&ch->cond);
        qemu_mutex_unlock(&ch->lock);
    }
    return NULL;
}
