/*
 * FT: restoring redundancy (x-ft-protect)
 *
 * Copyright (c) 2026 The qemu-ft authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A VM that records with no backup (a primary that lost its backup, a
 * backup that went live) gets a new one.  The new backup waits, started
 * with -icount ...,rr=replay,rrchardev=...,rrjoin=on and -incoming.
 *
 * 1. x-ft-protect connects a logging channel of the next generation to
 *    it (it takes that generation from the HELLO), and starts QEMU's
 *    live migration to its -incoming address, with pause-before-
 *    switchover: pre-copy, while the VM runs and records on alone.
 * 2. The migration stops the VM and pauses before the switchover.  In
 *    that window the main loop brings the recorder to a point where the
 *    VM's state holds everything (replay_quiesce()) and lets the
 *    migration go on.
 * 3. The devices' state is saved; the last section, "ft-switch", is this
 *    file's: saving it switches the recorder to the new channel
 *    (replay_switch_stream()); loading it on the backup starts its replay
 *    of that channel (replay_join_loaded()).
 * 4. When the migration completed, the VM runs again, recording into the
 *    new channel, whose output rule holds from the first instruction.
 * 5. Once the backup replayed past the first digest of the new pairing,
 *    FT_PROTECTED reports the pause, the total time and the bytes.
 *
 * Before the switchover a failure leaves the VM alone in its generation;
 * after it, the new channel loses its backup, and the lock decides, as
 * for any pair.  A backup that lost its primary before the state came
 * halts: it has nothing it could run.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/clone-visitor.h"
#include "qapi/qapi-commands-ft.h"
#include "qapi/qapi-commands-migration.h"
#include "qapi/qapi-events-ft.h"
#include "qapi/qapi-visit-net.h"
#include "qapi/qapi-visit-sockets.h"
#include "qemu/coroutine.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "block/thread-pool.h"
#include "migration/misc.h"
#include "migration/vmstate.h"
#include "system/runstate.h"
#include "ft-disks.h"
#include "ft-internal.h"
#include "trace.h"

/* The default pause the switchover aims for (x-ft-protect max-pause-ms) */
#define FT_PROTECT_PAUSE_MS 50

typedef struct FtProtect {
    bool active;                /* from the command to the migration's end */
    FtChannel *old;             /* the channel the VM ran alone with */
    FtChannel *nc;              /* the new pairing's, until protected */
    uint32_t gen;               /* "ft-switch": the new generation */
    bool cap_was_set;           /* pause-before-switchover, before us */
    bool downtime_set;          /* downtime-limit is ours for the transfer */
    uint64_t downtime_was;
    bool quiesced;
    bool switched;
    bool migrated;              /* the migration completed */
    ReplayStream *old_stream;   /* to close once the VM runs again */
    char *lost;                 /* why the new channel was lost, if it was */
    int64_t t_start;
    int64_t t_stop;
    double pause_ms;
    uint64_t bytes;
    NotifierWithReturn mig;
    VMChangeStateEntry *vmse;
} FtProtect;

static FtProtect ftp;

/* The migration capability that gives the switchover window */

static bool ft_pause_cap(void)
{
    g_autoptr(MigrationCapabilityStatusList) caps =
        qmp_query_migrate_capabilities(NULL);

    for (MigrationCapabilityStatusList *c = caps; c; c = c->next) {
        if (c->value->capability ==
            MIGRATION_CAPABILITY_PAUSE_BEFORE_SWITCHOVER) {
            return c->value->state;
        }
    }
    return false;
}

static bool ft_set_pause_cap(bool on, Error **errp)
{
    MigrationCapabilityStatus st = {
        .capability = MIGRATION_CAPABILITY_PAUSE_BEFORE_SWITCHOVER,
        .state = on,
    };
    MigrationCapabilityStatusList caps = { .value = &st };
    ERRP_GUARD();

    qmp_migrate_set_capabilities(&caps, errp);
    return !*errp;
}

/* A channel that never became the replay core's stream */
static void ft_channel_discard(FtChannel *ch)
{
    FtStream *st = ch->stream;

    ft_teardown(ch);
    ft_channel_free(ch);
    g_free(st->stream.buf);
    g_free(st->stream.name);
    g_free(st);
}

/* The migration's downtime-limit: the pause the switchover aims for */
static uint64_t ft_set_downtime(uint64_t ms, Error **errp)
{
    g_autoptr(MigrationParameters) cur = qmp_query_migrate_parameters(NULL);
    MigrateSetParameters p = {
        .has_downtime_limit = true,
        .downtime_limit = ms,
    };

    qmp_migrate_set_parameters(&p, errp);
    return cur->downtime_limit;
}

static void ft_protect_end(void)
{
    if (!ftp.cap_was_set) {
        ft_set_pause_cap(false, NULL);
    }
    if (ftp.downtime_set) {
        ft_set_downtime(ftp.downtime_was, NULL);
        ftp.downtime_set = false;
    }
    migration_remove_notifier(&ftp.mig);
    if (ftp.vmse) {
        qemu_del_vm_change_state_handler(ftp.vmse);
        ftp.vmse = NULL;
    }
    if (ftp.old_stream) {
        /* The old channel: its threads end, it is freed */
        replay_stream_close(ftp.old_stream);
        ftp.old_stream = NULL;
    }
    ftp.active = false;
    g_free(ftp.lost);
    ftp.lost = NULL;
}

/* 2. The VM stopped for the switchover; the migration waits for us. */
static void ft_protect_switchover_bh(void *opaque)
{
    g_autoptr(MigrationInfo) info = qmp_query_migrate(NULL);
    Error *err = NULL;

    if (!ftp.active || !info->has_status ||
        info->status != MIGRATION_STATUS_PRE_SWITCHOVER) {
        return;     /* failed or cancelled meanwhile: see the notifier */
    }
    /* What the VM wrote alone and still holds goes out first */
    ft_release_bh(ftp.old);
    replay_quiesce();
    ftp.quiesced = true;
    trace_ft_protect_switchover(replay_get_current_icount());
    qmp_migrate_continue(MIGRATION_STATUS_PRE_SWITCHOVER, &err);
    if (err) {
        error_report_err(err);
    }
}

static void ft_protect_vm_state(void *opaque, bool running, RunState state)
{
    /* In the migration thread, with the BQL and the replay mutex */
    if (ftp.active && !running && state == RUN_STATE_FINISH_MIGRATE &&
        !ftp.t_stop) {
        ftp.t_stop = ft_now_ns();
        aio_bh_schedule_oneshot(qemu_get_aio_context(),
                                ft_protect_switchover_bh, NULL);
    }
}

/* 4. The migration ended, in the main loop. */
static void ft_protect_done_bh(void *opaque)
{
    bool ok = (uintptr_t)opaque;
    g_autoptr(MigrationInfo) info = qmp_query_migrate(NULL);
    FtChannel *nc = ftp.nc;
    Error *err = NULL;

    if (info->ram) {
        ftp.bytes = info->ram->transferred;
    }
    if (ok && ftp.switched) {
        ftp.migrated = true;
        if (!migration_block_activate(&err)) {
            error_report_err(err);
        }
        if (runstate_check(RUN_STATE_POSTMIGRATE)) {
            vm_start();
        }
        ftp.pause_ms = (ft_now_ns() - ftp.t_stop) / (double)SCALE_MS;
        info_report("ft: primary: the new backup has the VM's state "
                    "(generation %u); the VM paused %.1f ms, %" PRIu64
                    " bytes were migrated", nc->gen, ftp.pause_ms,
                    ftp.bytes);
    } else {
        const char *desc = ftp.lost ? ftp.lost :
                           info->error_desc ? info->error_desc :
                           "the migration did not complete";
        g_autofree char *why = NULL;

        if (ftp.switched) {
            /* The new channel loses its backup; the lock decides */
            why = g_strdup(desc);
        } else {
            ft_channel_discard(nc);
            why = g_strdup_printf("%s; the VM runs on alone in generation "
                                  "%u", desc, ftp.old->gen);
        }
        ftp.nc = NULL;
        error_report("ft: x-ft-protect failed: %s", why);
        qapi_event_send_ft_protect_failed(why);
    }
    ft_protect_end();
}

static int ft_protect_mig_cb(NotifierWithReturn *n, MigrationEvent *e,
                             Error **errp)
{
    if (!ftp.active || e->type == MIG_EVENT_PRECOPY_SETUP) {
        return 0;
    }
    /* Not from inside the migration's cleanup */
    aio_bh_schedule_oneshot(qemu_get_aio_context(), ft_protect_done_bh,
                            (void *)(uintptr_t)
                            (e->type == MIG_EVENT_PRECOPY_DONE));
    return 0;
}

/* 3. The last section of the VM's state */

static int ft_switch_pre_save(void *opaque)
{
    FtChannel *nc = ftp.nc;
    bool up;

    if (!ftp.active || !ftp.quiesced) {
        error_report("ft: a VM under fault tolerance migrates only by "
                     "x-ft-protect");
        return -EINVAL;
    }
    qemu_mutex_lock(&nc->lock);
    up = nc->state == FT_STATE_STREAMING;
    if (up) {
        nc->pre_switch = false;
        nc->start_icount = replay_get_current_icount();
        /* where the joiner starts, not the 0 it reports until it loaded */
        nc->peer_icount = nc->start_icount;
    }
    qemu_mutex_unlock(&nc->lock);
    if (!up) {
        error_report("ft: x-ft-protect: the new backup's logging channel "
                     "is down");
        return -EIO;
    }
    ftp.gen = nc->gen;
    ftp.old_stream = replay_switch_stream(&nc->stream->stream);
    replay_set_output_ops(&ft_output_ops, nc);
    replay_set_digest_ops(&ft_digest_ops, nc);
    ftp.switched = true;
    return 0;
}

static int ft_switch_post_load(void *opaque, int version_id)
{
    FtChannel *ch = ft_current();
    bool ok;

    if (!ch || ch->role != FT_ROLE_BACKUP || !ch->join) {
        error_report("ft: this state comes from x-ft-protect: start the "
                     "QEMU that takes it as a backup that joins, with "
                     "-icount ...,rr=replay,rrchardev=...,rrjoin=on");
        return -EINVAL;
    }
    qemu_mutex_lock(&ch->lock);
    ok = ch->state == FT_STATE_STREAMING && ch->gen == ftp.gen;
    if (ok) {
        ch->joined = true;
    }
    qemu_mutex_unlock(&ch->lock);
    if (!ok) {
        error_report("ft: backup: the VM's state is for generation %u, "
                     "but the logging channel is %s in generation %u",
                     ftp.gen, FtState_str(qatomic_read(&ch->state)),
                     ch->gen);
        return -EINVAL;
    }
    replay_join_loaded();
    info_report("ft: backup: joined the primary in generation %u", ftp.gen);
    return 0;
}

static const VMStateDescription vmstate_ft_switch = {
    .name = "ft-switch",
    .version_id = 1,
    .minimum_version_id = 1,
    .pre_save = ft_switch_pre_save,
    .post_load = ft_switch_post_load,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT32(gen, FtProtect),
        VMSTATE_END_OF_LIST()
    },
};

/*
 * Registered once the machine is built, on both sides, so that it comes
 * after every device's section: its pre_save runs after theirs.
 */
void ft_protect_machine_done(void)
{
    vmstate_register(NULL, 0, &vmstate_ft_switch, &ftp);
}

/* 5. The backup of @ch passed its first check (main loop). */
void ft_protect_verified(FtChannel *ch)
{
    if (ch == ftp.nc && ftp.migrated) {
        double total_ms = (ft_now_ns() - ftp.t_start) / (double)SCALE_MS;

        info_report("ft: primary: protected again, generation %u: the VM "
                    "paused %.1f ms, %.0f ms from x-ft-protect", ch->gen,
                    ftp.pause_ms, total_ms);
        qapi_event_send_ft_protected(ch->gen, true, ftp.pause_ms, true,
                                     total_ms, true, ftp.bytes);
        ftp.nc = NULL;
    } else {
        qapi_event_send_ft_protected(ch->gen, false, 0, false, 0, false, 0);
    }
}

/*
 * The backup of @ch was lost (main loop): if that was the new backup of
 * x-ft-protect before it passed its first check, the protection failed.
 * The lock decides who runs on, as for any pair.
 */
void ft_protect_lost(FtChannel *ch, const char *reason)
{
    g_autofree char *why = NULL;

    if (ch == ftp.nc && ftp.active && !ftp.switched) {
        /*
         * Before the switchover: the migration has no one to go to.  On
         * a cut link it would wait for TCP to give up; cancel it now.
         */
        g_free(ftp.lost);
        ftp.lost = g_strdup(reason);
        qmp_migrate_cancel(NULL);
        return;
    }
    if (ch != ftp.nc || !ftp.migrated) {
        return;
    }
    why = g_strdup_printf("the new backup of generation %u was lost before "
                          "its first check: %s", ch->gen, reason);
    error_report("ft: x-ft-protect failed: %s", why);
    qapi_event_send_ft_protect_failed(why);
    ftp.nc = NULL;
}

/*
 * A backup that joins must not announce the VM when its state arrives,
 * as a migration's destination does: a virtio-net guest would be told to
 * announce itself (VIRTIO_NET_F_GUEST_ANNOUNCE) on the backup only, which
 * then diverges.  The settings are kept for when it goes live.
 */
void ft_join_machine_done(FtChannel *ch)
{
    MigrateSetParameters p = {
        .has_announce_rounds = true,
        .announce_rounds = 0,
    };

    ch->join_announce = QAPI_CLONE(AnnounceParameters,
                                   migrate_announce_params());
    qmp_migrate_set_parameters(&p, &error_abort);
}

/* A backup that joins takes the generation of its primary's HELLO. */
bool ft_join_gen(FtChannel *ch, uint32_t gen, Error **errp)
{
    if (gen < ch->gen) {
        error_setg(errp, "the primary's generation %u is older than this "
                   "backup's rrgen %u", gen, ch->gen);
        return false;
    }
    return ft_lock_gen_free(ch, gen, errp);
}

/* 1. The command */

/*
 * The command is a coroutine, so that the monitor can wait for the
 * logging channel to connect (up to the handshake timeout with a backup
 * that does not answer) while the VM and the main loop go on.  Its steps
 * before and after the connection run as main loop bottom halves: they
 * use the block graph and start the migration, which coroutines may not.
 */
typedef struct FtProtectCmd {
    SocketAddress *address;
    const char *uri;
    const char *tls_creds;
    const char *tls_hostname;
    uint64_t max_pause_ms;
    FtChannel *cur;
    FtChannel *nc;
    bool connected;
    Error *err;
    Coroutine *co;
    void (*step)(struct FtProtectCmd *cmd);
} FtProtectCmd;

static void ft_protect_step_bh(void *opaque)
{
    FtProtectCmd *cmd = opaque;

    cmd->step(cmd);
    aio_co_wake(cmd->co);
}

static void coroutine_fn ft_protect_in_main_loop(FtProtectCmd *cmd,
                                                 void (*step)(FtProtectCmd *))
{
    cmd->step = step;
    cmd->co = qemu_coroutine_self();
    aio_bh_schedule_oneshot(qemu_get_aio_context(), ft_protect_step_bh, cmd);
    qemu_coroutine_yield();
}

/* A worker thread of the pool: connect, and shake hands. */
static int ft_protect_connect(void *opaque)
{
    FtProtectCmd *cmd = opaque;

    return ft_connect(cmd->nc, &cmd->err) ? 0 : -1;
}

/* The VM must record alone; the new channel, not connected yet. */
static void ft_protect_prepare(FtProtectCmd *cmd)
{
    FtChannel *cur = ft_current();
    FtChannel *nc;
    FtState st;

    if (!cur) {
        error_setg(&cmd->err, "this VM has no logging channel (-icount "
                   "rrchardev= or rralone=on)");
        return;
    }
    if (ftp.active) {
        error_setg(&cmd->err, "x-ft-protect is already in progress");
        return;
    }
    st = qatomic_read(&cur->state);
    if (replay_mode != REPLAY_MODE_RECORD ||
        !(st == FT_STATE_LIVE ||
          (cur->role == FT_ROLE_PRIMARY && st == FT_STATE_PEER_LOST))) {
        error_setg(&cmd->err, "this VM does not run alone: its channel is "
                   "%s", FtState_str(st));
        return;
    }
    if (!runstate_is_running()) {
        error_setg(&cmd->err, "the VM must be running");
        return;
    }
    if (ft_fence_busy(cur)) {
        error_setg(&cmd->err, "its disk writes wait for "
                   "x-ft-release-writes: the old primary is not known to "
                   "be fenced yet");
        return;
    }
    if (cmd->max_pause_ms < 1 || cmd->max_pause_ms > 10000) {
        error_setg(&cmd->err, "max-pause-ms must be 1..10000");
        return;
    }

    nc = ft_channel_new(true);
    nc->heartbeat_ms = cur->heartbeat_ms;
    nc->timeout_ms = cur->timeout_ms;
    nc->max_lag_ms = cur->max_lag_ms;
    nc->max_lag_bytes = cur->max_lag_bytes;
    nc->held_max = cur->held_max;
    nc->rx_max = cur->rx_max;
    nc->digest_ms = cur->digest_ms;
    nc->digest_pages = cur->digest_pages;
    nc->insecure = cur->insecure;
    nc->lock_dir = g_strdup(cur->lock_dir);
    memcpy(nc->vm_id, cur->vm_id, sizeof(nc->vm_id));
    nc->gen = cur->gen + 1;
    nc->wait = true;
    ft_set_address(nc, QAPI_CLONE(SocketAddress, cmd->address),
                   cmd->tls_creds, cmd->tls_hostname);
    g_free(nc->stream->stream.name);
    nc->stream->stream.name = g_strdup_printf("ft:%s", nc->addr_str);
    nc->pre_switch = true;
    nc->config = ft_disks_describe();
    if (!nc->gen ||
        !ft_check_transport(nc, "address", &cmd->err) ||
        !ft_lock_gen_free(nc, nc->gen, &cmd->err)) {
        ft_channel_discard(nc);
        return;
    }
    cmd->cur = cur;
    cmd->nc = nc;
    /* Nothing else starts meanwhile */
    ftp = (FtProtect) { .active = true };
}

/* Connected (or not): start the migration. */
static void ft_protect_start(FtProtectCmd *cmd)
{
    FtChannel *nc = cmd->nc;

    ftp.active = false;
    if (cmd->connected &&
        (ft_current() != cmd->cur || !runstate_is_running())) {
        error_setg(&cmd->err, "the VM stopped while the logging channel "
                   "connected");
    }
    if (cmd->err) {
        ft_channel_discard(nc);
        return;
    }
    ftp = (FtProtect) {
        .active = true,
        .old = cmd->cur,
        .nc = nc,
        .t_start = ft_now_ns(),
        .cap_was_set = ft_pause_cap(),
    };
    if (!ftp.cap_was_set && !ft_set_pause_cap(true, &cmd->err)) {
        goto fail;
    }
    ftp.downtime_was = ft_set_downtime(cmd->max_pause_ms, &cmd->err);
    if (cmd->err) {
        goto fail;
    }
    ftp.downtime_set = true;
    migration_add_notifier(&ftp.mig, ft_protect_mig_cb);
    ftp.vmse = qemu_add_vm_change_state_handler(ft_protect_vm_state, NULL);
    qmp_migrate(cmd->uri, false, NULL, false, false, false, false,
                &cmd->err);
    if (cmd->err) {
        goto fail;
    }
    info_report("ft: primary: protecting the VM: generation %u with %s, "
                "its state to %s", nc->gen, nc->addr_str, cmd->uri);
    return;

fail:
    ft_protect_end();
    ft_channel_discard(nc);
    ftp.nc = NULL;
}

void coroutine_fn qmp_x_ft_protect(SocketAddress *address, const char *uri,
                                   const char *tls_creds,
                                   const char *tls_hostname,
                                   bool has_max_pause_ms,
                                   uint64_t max_pause_ms, Error **errp)
{
    FtProtectCmd cmd = {
        .address = address,
        .uri = uri,
        .tls_creds = tls_creds,
        .tls_hostname = tls_hostname,
        .max_pause_ms = has_max_pause_ms ? max_pause_ms :
                        FT_PROTECT_PAUSE_MS,
    };

    ft_protect_in_main_loop(&cmd, ft_protect_prepare);
    if (!cmd.err) {
        cmd.connected = thread_pool_submit_co(ft_protect_connect, &cmd) == 0;
        ft_protect_in_main_loop(&cmd, ft_protect_start);
    }
    if (cmd.err) {
        error_propagate_prepend(errp, cmd.err, "x-ft-protect: ");
    }
}
