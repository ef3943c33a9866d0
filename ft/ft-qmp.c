/*
 * FT logging channel: QMP commands
 *
 * Copyright (c) 2026 The qemu-ft authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * x-query-ft (qapi/ft.json) answers at once, without waiting for the
 * channel; x-ft-go-live and x-ft-detach start the transitions that
 * ft-failover.c completes.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-ft.h"
#include "hw/core/cpu.h"
#include "system/cpu-timers.h"
#include "ft-internal.h"
#include "trace.h"

static int ft_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return x < y ? -1 : x > y;
}

/* The channel a command acts on, or NULL (and @errp set) without one */
static FtChannel *ft_qmp_channel(Error **errp)
{
    FtChannel *ch = ft_current();

    if (!ch) {
        error_setg(errp, "the record/replay log is not streamed "
                   "(no rrchardev in -icount)");
    }
    return ch;
}

FtInfo *qmp_x_query_ft(Error **errp)
{
    FtChannel *ch = ft_current();
    FtInfo *info;
    uint64_t icount, lag;

    info = g_new0(FtInfo, 1);
    info->digest = g_new0(FtDigestInfo, 1);
    if (!ch) {
        /* Not fault tolerant: no logging channel */
        info->state = FT_STATE_OFF;
        return info;
    }
    icount = ft_icount(ch);

    qemu_mutex_lock(&ch->lock);
    info->has_role = true;
    info->role = ft_role_qapi(ch);
    info->state = ch->state;
    info->generation = ch->gen;
    info->address = g_strdup(ch->addr_str);
    info->peer = g_strdup(ch->peer_str);
    info->error = g_strdup(ch->error);
    info->icount = icount;
    if (ch->role == FT_ROLE_PRIMARY) {
        info->has_log_written = info->has_log_sent = true;
        info->has_log_acked = info->has_throttle_ms = true;
        info->log_written = ch->written;
        info->log_sent = ch->sent;
        info->log_acked = ch->acked;
        info->has_log_buffer_bytes = true;
        info->log_buffer_bytes = ch->cap;
        info->throttle_ms = ch->throttle_ns / SCALE_MS;
        /* execution lag: the backup's icount as of its newest ACK */
        lag = ch->state == FT_STATE_STREAMING && icount > ch->peer_icount ?
              icount - ch->peer_icount : 0;
    } else {
        info->has_log_received = info->has_log_consumed = true;
        info->log_received = ch->received;
        info->log_consumed = ch->consumed;
        /*
         * As of the primary's newest heartbeat; none for a backup that
         * joins, until its vCPU ran from the VM's state.
         */
        lag = ft_has_state(ch) && (icount || !ch->join) &&
              ch->peer_icount > icount ? ch->peer_icount - icount : 0;
    }
    info->lag_instructions = lag;
    info->lag_ms = icount_to_ns(lag) / 1e6;
    info->max_lag_ms = ch->max_lag_ms;
    if (ft_now_ns() - ch->bw_prev_ns > 3 * NANOSECONDS_PER_SECOND) {
        ch->bw_mbps = 0;
    }
    info->bandwidth_mbps = ch->bw_mbps;
    info->digest->interval_ms =
        qatomic_read(&ch->digest_insns) ? ch->digest_ms : 0;
    info->digest->pages = ch->digest_pages;
    info->digest->checks = ch->digest_checks;
    info->digest->mismatches = ch->digest_mismatches;
    if (ch->digest_checks) {
        info->digest->has_last_icount = true;
        info->digest->last_icount = ch->digest_last;
    }
    if (ch->mismatch) {
        info->digest->has_mismatch_icount = true;
        info->digest->mismatch_icount = ch->mismatch_icount;
        info->digest->mismatch = g_strdup(ch->mismatch);
    }
    info->lock = g_strdup(ch->lock_dir);
    info->lock_holder = g_strdup(ch->lock_holder);
    info->held_bytes = ch->held_bytes;
    if (ch->role == FT_ROLE_PRIMARY) {
        info->has_held_max = info->has_held_cap_stalls = true;
        info->held_max = ch->held_max;
        info->held_cap_stalls = ch->held_cap_hits;
    }
    info->heartbeat_gap_max_ms = ch->gap_max_ns / SCALE_MS;
    if (ch->ndelays) {
        unsigned n = MIN(ch->ndelays, FT_DELAYS);
        g_autofree int64_t *d = g_memdup2(ch->delays, n * sizeof(*d));

        qsort(d, n, sizeof(*d), ft_cmp_i64);
        info->has_output_delay_p50_ms = info->has_output_delay_p99_ms = true;
        info->output_delay_p50_ms = d[n / 2] / 1e6;
        info->output_delay_p99_ms = d[MIN(n - 1, n * 99 / 100)] / 1e6;
    }
    /* The backup knows it passed its first check; the primary, its ACKs */
    info->q_protected = ch->state == FT_STATE_STREAMING &&
        (ch->role == FT_ROLE_PRIMARY ? ch->verified :
         ft_has_state(ch) &&
         (ch->digest_checks || !ch->digest_ms));
    if (ch->live) {
        info->has_went_live_icount = info->has_failover_ms = true;
        info->went_live_icount = ch->live_icount;
        info->failover_ms = ch->failover_ms;
    }
    ft_fence_info(ch, info);
    qemu_mutex_unlock(&ch->lock);
    return info;
}

void qmp_x_ft_go_live(Error **errp)
{
    FtChannel *ch = ft_qmp_channel(errp);

    if (!ch) {
        return;
    }
    if (ch->role != FT_ROLE_BACKUP) {
        error_setg(errp, "this is the primary: only a backup goes live");
        return;
    }
    if (!ch->lock_dir) {
        error_setg(errp, "going live needs the shared lock: start the pair "
                   "with -icount rrlock=<dir>");
        return;
    }
    qemu_mutex_lock(&ch->lock);
    if (ch->state != FT_STATE_STREAMING) {
        error_setg(errp, "the backup is %s: %s", FtState_str(ch->state),
                   ch->state == FT_STATE_LIVE ? "it is already live" :
                   ch->state == FT_STATE_ARBITRATING ?
                   "it is already trying to go live" :
                   "only a streaming backup can go live");
        qemu_mutex_unlock(&ch->lock);
        return;
    }
    trace_ft_qmp_go_live();
    ch->arb_manual = true;
    ch->lost_ns = ft_now_ns();
    /* Stop taking log: the receiver ends when the state changes. */
    ft_set_state(ch, FT_STATE_STREAMING, FT_STATE_ARBITRATING);
    ft_start_arbitration_locked(ch);
    qemu_cond_broadcast(&ch->cond);
    qemu_mutex_unlock(&ch->lock);
}

void qmp_x_ft_detach(Error **errp)
{
    FtChannel *ch = ft_qmp_channel(errp);

    if (!ch) {
        return;
    }
    qemu_mutex_lock(&ch->lock);
    if (ch->state != FT_STATE_STREAMING) {
        error_setg(errp, "no %s is attached (the channel is %s)",
                   ch->role == FT_ROLE_PRIMARY ? "backup" : "primary",
                   FtState_str(ch->state));
        qemu_mutex_unlock(&ch->lock);
        return;
    }
    if (ch->role == FT_ROLE_PRIMARY) {
        /* Win the lock first, so the backup cannot go live. */
        trace_ft_qmp_detach("primary");
        ch->detaching = true;
        ft_set_state(ch, FT_STATE_STREAMING, FT_STATE_ARBITRATING);
        ft_start_arbitration_locked(ch);
    } else {
        trace_ft_qmp_detach("backup");
        ft_set_state(ch, FT_STATE_STREAMING, FT_STATE_DETACHED);
        ft_shutdown_ioc(ch->ioc);
        if (first_cpu) {
            qemu_cpu_kick(first_cpu);
        }
    }
    qemu_cond_broadcast(&ch->cond);
    qemu_cond_broadcast(&ch->tx_cond);
    qemu_mutex_unlock(&ch->lock);
}
