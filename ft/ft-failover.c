/*
 * FT logging channel: failover
 *
 * Copyright (c) 2026 The qemu-ft authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Events for the main loop, losing the peer, arbitration on the shared
 * lock, a primary running on alone, a backup going live, halting.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-events-ft.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "hw/core/cpu.h"
#include "hw/qdev-core.h"
#include "system/cpu-timers.h"
#include "system/runstate.h"
#include "migration/misc.h"
#include "ft-lock.h"
#include "ft-internal.h"
#include "trace.h"

/*
 * The state machine (docs/ft-channel.md).  Each state lists the states it
 * may go to:
 *
 * - waiting: a peer attaches (streaming), a primary's log outgrows
 *   rrlagbytes before one came (peer-lost), QEMU exits (ended);
 * - streaming: the peer is lost, with rrlock (arbitrating) or without
 *   (peer-lost); x-ft-go-live on a backup or x-ft-detach on a primary
 *   (arbitrating); x-ft-detach on a backup (detached); an END frame or
 *   QEMU exiting (ended);
 * - arbitrating: the lock is won (live: a primary at once, a backup once
 *   it played all it received) or lost (halted);
 * - a backup replays what it received after it stopped streaming, so it
 *   may find a divergence in any state but live.  A backup that diverged
 *   while arbitrating still takes the outcome of the lock (halted, or
 *   live: it is the only copy of the guest left).
 *
 * live is final.
 */
#define FT_TO(s)    (1u << FT_STATE_##s)

static const unsigned ft_transitions[FT_STATE__MAX] = {
    [FT_STATE_WAITING]      = FT_TO(STREAMING) | FT_TO(PEER_LOST) |
                              FT_TO(ENDED) | FT_TO(DIVERGED),
    [FT_STATE_STREAMING]    = FT_TO(ARBITRATING) | FT_TO(PEER_LOST) |
                              FT_TO(ENDED) | FT_TO(DETACHED) |
                              FT_TO(DIVERGED),
    [FT_STATE_ARBITRATING]  = FT_TO(LIVE) | FT_TO(HALTED) | FT_TO(DIVERGED),
    [FT_STATE_DIVERGED]     = FT_TO(LIVE) | FT_TO(HALTED),
    [FT_STATE_PEER_LOST]    = FT_TO(DIVERGED),
    [FT_STATE_ENDED]        = FT_TO(DIVERGED),
    [FT_STATE_DETACHED]     = FT_TO(DIVERGED),
    [FT_STATE_HALTED]       = FT_TO(DIVERGED),
    [FT_STATE_LIVE]         = 0,
};

/*
 * Move the channel from @old to @new, with ch->lock held.  Refuses, says
 * so and returns false if the channel is not in @old or the table has no
 * such transition.  Readers without ch->lock use qatomic_read().
 */
bool ft_set_state(FtChannel *ch, FtState old, FtState new)
{
    if (ch->state != old || !(ft_transitions[old] & (1u << new))) {
        error_report("ft: %s: refusing the state change from %s to %s "
                     "(the channel is %s)", ft_role_name(ch->role),
                     FtState_str(old), FtState_str(new),
                     FtState_str(ch->state));
        return false;
    }
    qatomic_set(&ch->state, new);
    trace_ft_state(ft_role_name(ch->role), FtState_str(old),
                   FtState_str(new));
    return true;
}

/* Events: queued by any thread, sent from the main loop. */

void ft_queue_event(FtChannel *ch, FtEventKind kind,
                    const char *text, uint64_t pos)
{
    FtEvent *ev = g_new0(FtEvent, 1);

    ev->kind = kind;
    ev->text = g_strdup(text);
    ev->pos = pos;
    g_queue_push_tail(&ch->events, ev);
    qemu_bh_schedule(ch->bh);
}

static void ft_go_live(FtChannel *ch);

static void ft_exit_cb(void *opaque)
{
    error_report("ft: halted: exiting");
    _exit(EXIT_FAILURE);
}

/* Lost the lock: drop held output, stop, say so, and exit. */
static void ft_halt(FtChannel *ch, const char *reason)
{
    FtHeld *h;

    qemu_mutex_lock(&ch->lock);
    while ((h = g_queue_pop_head(&ch->held))) {
        g_free(h);
    }
    ch->held_bytes = 0;
    qemu_mutex_unlock(&ch->lock);
    if (runstate_is_running()) {
        vm_stop(RUN_STATE_PAUSED);
    }
    trace_ft_halt(ft_role_name(ch->role), reason);
    error_report("ft: %s: HALTING: %s", ft_role_name(ch->role), reason);
    qapi_event_send_ft_halted(reason);
    /* Give the monitor a moment to deliver the event. */
    ch->exit_timer = timer_new_ms(QEMU_CLOCK_REALTIME, ft_exit_cb, ch);
    timer_mod(ch->exit_timer,
              qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + FT_HALT_EXIT_MS);
}

void ft_bh(void *opaque)
{
    FtChannel *ch = opaque;
    FtEvent *ev;
    bool stop_diverged = false;
    bool stop_drained = false;
    bool go_live = false;

    for (;;) {
        qemu_mutex_lock(&ch->lock);
        ev = g_queue_pop_head(&ch->events);
        if (!ev) {
            stop_drained = ch->drained_stop;
            ch->drained_stop = false;
            /*
             * Not before the machine exists: a backup that lost its
             * primary while it was starting (the block layer runs bottom
             * halves while it opens the disks) goes live once it does
             * (ft_machine_done() runs this again).
             */
            go_live = ch->golive_pending && ch->drained &&
                      phase_check(PHASE_MACHINE_READY);
        }
        qemu_mutex_unlock(&ch->lock);
        if (!ev) {
            break;
        }
        switch (ev->kind) {
        case FT_EV_UP:
            qapi_event_send_ft_channel_up(ft_role_qapi(ch), ev->text,
                                          ev->pos);
            break;
        case FT_EV_LOST:
            qapi_event_send_ft_peer_lost(ft_role_qapi(ch), ev->text,
                                         ev->pos);
            ft_protect_lost(ch, ev->text);
            break;
        case FT_EV_DIVERGED:
            qapi_event_send_ft_divergence(ev->pos, ev->text);
            stop_diverged = true;
            break;
        case FT_EV_ARB_WON:
        case FT_EV_ARB_LOST:
            qapi_event_send_ft_arbitration(ev->kind == FT_EV_ARB_WON,
                                           ev->pos, ev->text);
            break;
        case FT_EV_ALONE:
            qapi_event_send_ft_went_live(ft_role_qapi(ch), ev->pos, false,
                                         0);
            break;
        case FT_EV_HALT:
            ft_halt(ch, ev->text);
            break;
        case FT_EV_VERIFIED:
            ft_protect_verified(ch);
            break;
        }
        g_free(ev->text);
        g_free(ev);
    }
    if (stop_diverged && runstate_is_running()) {
        vm_stop(RUN_STATE_INTERNAL_ERROR);
    } else if (go_live) {
        ft_go_live(ch);
    } else if (stop_drained && runstate_is_running()) {
        vm_stop(RUN_STATE_PAUSED);
    }
}

/* Losing the peer, with ch->lock held */

static uint64_t ft_position_locked(FtChannel *ch)
{
    return ch->role == FT_ROLE_PRIMARY ? ch->acked : ch->received;
}

/* The peer is gone or broke the protocol. */
void ft_lost_locked(FtChannel *ch, const char *reason)
{
    if (ch->state != FT_STATE_STREAMING && ch->state != FT_STATE_WAITING) {
        return;
    }
    error_report("ft: %s: %s %s", ft_role_name(ch->role),
                 ch->role == FT_ROLE_PRIMARY ? "lost the backup:" :
                 "lost the primary:", reason);
    ch->lost_ns = ft_now_ns();
    if (ch->pre_switch || !ft_has_state(ch)) {
        /*
         * A protection that had not switched over yet: the primary runs
         * on in its own generation; a backup without the VM's state has
         * nothing it could run, so it must never go live: it stops.
         */
        ft_set_state(ch, ch->state, FT_STATE_PEER_LOST);
        if (ch->role == FT_ROLE_BACKUP) {
            ft_queue_event(ch, FT_EV_HALT, "lost the primary before its "
                           "state arrived", 0);
        }
    } else if (ch->lock_dir && ch->state == FT_STATE_STREAMING) {
        /* Nobody goes live or runs on alone without the lock. */
        ft_set_state(ch, FT_STATE_STREAMING, FT_STATE_ARBITRATING);
        ft_start_arbitration_locked(ch);
    } else {
        if (ch->role == FT_ROLE_PRIMARY) {
            error_report("ft: primary: running on unprotected");
            qemu_bh_schedule(ch->release_bh);
        }
        ft_set_state(ch, ch->state, FT_STATE_PEER_LOST);
    }
    g_free(ch->error);
    ch->error = g_strdup(reason);
    ft_queue_event(ch, FT_EV_LOST, reason, ft_position_locked(ch));
    ft_shutdown_ioc(ch->ioc);
    if (ch->role == FT_ROLE_PRIMARY) {
        /* Nobody will read it: free the log, the vCPU runs freely. */
        g_free(ch->buf);
        ch->buf = NULL;
        ch->cap = 0;
        ch->base = ch->written;
        ch->bounds_count = 0;
    }
    qemu_cond_broadcast(&ch->cond);
    qemu_cond_broadcast(&ch->tx_cond);
    if (ch->role == FT_ROLE_BACKUP) {
        qemu_notify_event();
        if (first_cpu) {
            qemu_cpu_kick(first_cpu);
        }
    }
}

void ft_lost(FtChannel *ch, const char *reason)
{
    qemu_mutex_lock(&ch->lock);
    ft_lost_locked(ch, reason);
    qemu_mutex_unlock(&ch->lock);
}

/* The primary leaves the backup in an orderly way: END, then close. */
static void ft_detach_end(FtChannel *ch)
{
    uint64_t end;
    QIOChannel *ioc;

    /* The sender stops once the state is not streaming. */
    ft_join_tx(ch);
    qemu_mutex_lock(&ch->lock);
    ioc = ch->ioc;
    end = ch->sent;
    qemu_mutex_unlock(&ch->lock);
    if (ioc) {
        /* Best effort: the backup detaches on END or on the close. */
        ft_send_frame(ioc, FT_FRAME_END, 0, ch->gen, end, NULL, 0, NULL);
        ft_shutdown_ioc(ioc);
    }
}

static void ft_arb_decided(FtChannel *ch, bool won, const char *holder)
{
    bool detach = false;

    qemu_mutex_lock(&ch->lock);
    trace_ft_arb_decided(ft_role_name(ch->role), won, ch->gen, holder);
    g_free(ch->lock_holder);
    ch->lock_holder = g_strdup(holder);
    if (ch->lock_dir) {
        ft_queue_event(ch, won ? FT_EV_ARB_WON : FT_EV_ARB_LOST, holder,
                       ch->gen);
    }
    if (!won) {
        g_autofree char *why =
            g_strdup_printf("lost the lock of generation %u to %s",
                            ch->gen, holder);

        ft_set_state(ch, ch->state, FT_STATE_HALTED);
        ft_queue_event(ch, FT_EV_HALT, why, 0);
        ft_shutdown_ioc(ch->ioc);
    } else if (ch->role == FT_ROLE_PRIMARY) {
        info_report("ft: primary: won the lock of generation %u; running on "
                    "alone, unprotected", ch->gen);
        detach = ch->detaching;
        ft_set_state(ch, FT_STATE_ARBITRATING, FT_STATE_LIVE);
        ft_queue_event(ch, FT_EV_ALONE, NULL, ft_icount(ch));
        qemu_bh_schedule(ch->release_bh);
    } else {
        /* goes live once all log received is played */
        ch->golive_pending = true;
        /* A planned switch-over: let the primary go now. */
        ft_shutdown_ioc(ch->ioc);
        qemu_bh_schedule(ch->bh);
    }
    qemu_cond_broadcast(&ch->cond);
    qemu_cond_broadcast(&ch->tx_cond);
    qemu_mutex_unlock(&ch->lock);
    if (detach) {
        ft_detach_end(ch);
    }
}

/* This process's lock record for @ch's generation, in @role; no nonce */
void ft_lock_record_init(FtChannel *ch, FtRole role, FtLockRecord *mine)
{
    memset(mine, 0, sizeof(*mine));
    memcpy(mine->vm_id, ch->vm_id, sizeof(mine->vm_id));
    mine->epoch = ch->gen;
    mine->role = role;
    mine->pid = getpid();
    mine->time_ns = g_get_real_time() * 1000;
    if (gethostname(mine->host, sizeof(mine->host) - 1) < 0) {
        pstrcpy(mine->host, sizeof(mine->host), "unknown");
    }
}

static void *ft_arb_thread(void *opaque)
{
    FtChannel *ch = opaque;
    g_autofree char *path = ft_lock_path(ch->lock_dir, ch->vm_id, ch->gen);
    g_autofree char *last = NULL;
    FtLockRecord mine;
    FtLockRecord holder;
    bool have_nonce = false;

    ft_lock_record_init(ch, ch->role, &mine);
    if (!ch->lock_dir) {
        /* Only a detach without rrlock gets here: nothing to win. */
        ft_arb_decided(ch, true, "nobody (no rrlock)");
        goto out;
    }

    for (;;) {
        g_autofree char *msg = NULL;
        char desc[256];
        FtLockResult r;
        int err = 0;

        qemu_mutex_lock(&ch->lock);
        if (ch->closing) {
            qemu_mutex_unlock(&ch->lock);
            break;
        }
        qemu_mutex_unlock(&ch->lock);

        /* One nonce for every retry: a retry then finds its record ours */
        err = have_nonce ? 0 : -ft_lock_new_nonce(&mine.nonce);
        have_nonce = !err;
        r = err ? FT_LOCK_ERR_IO :
            ft_lock_test_and_set(ch->lock_dir, &mine, &holder, &err);
        if (r == FT_LOCK_WON || r == FT_LOCK_LOST) {
            ft_lock_describe(r == FT_LOCK_WON ? &mine : &holder, desc,
                             sizeof(desc));
            ft_arb_decided(ch, r == FT_LOCK_WON, desc);
            break;
        }
        msg = r == FT_LOCK_ERR_IO ?
              g_strdup_printf("%s: %s", path, strerror(err)) :
              g_strdup_printf("%s: %s", path, ft_lock_strerror(r));
        if (g_strcmp0(msg, last)) {
            /* status first: whoever reads the log line finds it there */
            qemu_mutex_lock(&ch->lock);
            g_free(ch->error);
            ch->error = g_strdup_printf("cannot take the lock: %s", msg);
            qemu_mutex_unlock(&ch->lock);
            error_report("ft: %s: cannot take the lock (%s); nobody goes "
                         "live until it can, retrying",
                         ft_role_name(ch->role), msg);
            g_free(last);
            last = g_steal_pointer(&msg);
        }
        g_usleep(FT_ARB_RETRY_MS * 1000);
    }
out:
    /* The channel may be freed once this is false: the last access */
    qemu_mutex_lock(&ch->lock);
    ch->arb_running = false;
    qemu_mutex_unlock(&ch->lock);
    return NULL;
}

void ft_start_arbitration_locked(FtChannel *ch)
{
    if (ch->arb_started) {
        return;
    }
    if (ch->lock_dir) {
        trace_ft_arbitrating(ft_role_name(ch->role), ch->gen, ch->lock_dir);
    }
    ch->arb_started = true;
    ch->arb_running = true;
    qemu_thread_create(&ch->arb_thread, "ft-arb", ft_arb_thread, ch,
                       QEMU_THREAD_DETACHED);
}

static int ft_live_write(ReplayStream *s, const uint8_t *buf, size_t len)
{
    /* Unprotected: the log goes nowhere until a new backup comes. */
    return 0;
}

/* At exit, on a backup that went live: the core frees @s after this. */
static void ft_live_close(ReplayStream *s)
{
    FtChannel *ch = container_of(s, FtStream, stream)->ch;

    ft_teardown(ch);
    ft_channel_free(ch);
}

static const ReplayStreamOps ft_live_ops = {
    .write = ft_live_write,
    .close = ft_live_close,
};

/*
 * The backup won the lock and played all the log it received: it leaves
 * replay, becomes a recorder without a backup, lets out the console
 * output the primary may not have released, and runs.
 */
static void ft_go_live(FtChannel *ch)
{
    g_autofree char *name = g_strdup_printf("%s (live)",
                                            ch->stream->stream.name);
    FtStream *ls = g_new0(FtStream, 1);
    Error *err = NULL;
    GQueue kept = G_QUEUE_INIT;
    int64_t own_rt;
    FtHeld *h;
    double ms;

    if (runstate_is_running()) {
        vm_stop(RUN_STATE_PAUSED);
    }
    replay_stream_init(&ls->stream, &ft_live_ops, name, true);
    ls->stream.base = replay_stream_tell(&ch->stream->stream);
    ls->ch = ch;
    own_rt = cpu_get_clock();
    /* Before the core reissues the requests that were in flight */
    ft_fence_begin(ch);
    if (!replay_go_live(&ls->stream, &err)) {
        ft_fence_cleanup(ch);
        error_report_err(err);
        error_report("ft: backup: cannot go live; it stays stopped");
        qemu_mutex_lock(&ch->lock);
        ch->golive_pending = false;
        qemu_mutex_unlock(&ch->lock);
        g_free(ls->stream.buf);
        g_free(ls->stream.name);
        g_free(ls);
        return;
    }

    qemu_mutex_lock(&ch->lock);
    qatomic_store_release(&ch->live, ls);
    ch->live_icount = qatomic_read(&ch->stream->stream.icount);
    qatomic_set(&ls->stream.icount, ch->live_icount);
    ch->golive_pending = false;
    ft_set_state(ch, ch->state, FT_STATE_LIVE);
    ms = (ft_now_ns() - ch->lost_ns) / (double)SCALE_MS;
    ch->failover_ms = ms;
    kept = ch->held;
    g_queue_init(&ch->held);
    ch->held_bytes = 0;
    qemu_mutex_unlock(&ch->lock);

    trace_ft_go_live(ch->live_icount, (int64_t)(ms * 1000));
    /* What the primary may not have let out: a repeat at most. */
    while ((h = g_queue_pop_head(&kept))) {
        ft_emit(h);
    }
    info_report("ft: backup: went live at icount %" PRIu64 ", %.1f ms after "
                "losing the primary; guest clock %" PRId64 " ns, real-time "
                "clock goes on from the primary's %" PRId64 " ns (this "
                "process's own was %" PRId64 " ns)", ch->live_icount, ms,
                qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL), cpu_get_clock(),
                own_rt);
    qapi_event_send_ft_went_live(FT_CHANNEL_ROLE_BACKUP, ch->live_icount,
                                 true, ms);
    vm_start();
    /* The VM's NICs now answer from this host: tell the switches. */
    qemu_announce_self(&ch->announce, ch->join_announce ?:
                       migrate_announce_params());
}
