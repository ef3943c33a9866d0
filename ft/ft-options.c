/*
 * FT logging channel: options, and opening the channel
 *
 * Copyright (c) 2026 The qemu-ft authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * -icount rr=record|replay,rrchardev=<id> opens the channel here: the
 * rr* options, the socket chardev that names the address (never created
 * as a chardev), the connection, and once the machine is built, the
 * primary's description of its disks that a backup checks.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-visit-sockets.h"
#include "qemu/config-file.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/module.h"
#include "qemu/option.h"
#include "qemu/sockets.h"
#include "qemu/uuid.h"
#include "chardev/char.h"
#include "system/cpu-timers.h"
#include "system/system.h"
#include "system/runstate.h"
#include "ft-lock.h"
#include "ft-disks.h"
#include "ft-internal.h"

/* Is @addr reachable only from this host: loopback or a UNIX socket? */
static bool ft_addr_is_local(const SocketAddress *addr)
{
    struct in_addr a4;
    struct in6_addr a6;
    const char *host;

    switch (addr->type) {
    case SOCKET_ADDRESS_TYPE_UNIX:
        return true;
    case SOCKET_ADDRESS_TYPE_INET:
        host = addr->u.inet.host;
        if (!strcmp(host, "localhost")) {
            return true;
        }
        if (inet_pton(AF_INET, host, &a4) == 1) {
            return (ntohl(a4.s_addr) >> 24) == 127;
        }
        return inet_pton(AF_INET6, host, &a6) == 1 &&
               IN6_IS_ADDR_LOOPBACK(&a6);
    default:
        /* A passed file descriptor or vsock: could lead anywhere */
        return false;
    }
}

/*
 * The log carries every input of the guest, and whoever speaks on the
 * channel drives the backup: without TLS, only a local address, unless
 * the user says the network is trusted.
 */
bool ft_check_transport(FtChannel *ch, const char *what, Error **errp)
{
    if (ch->tls_creds || ft_addr_is_local(ch->addr)) {
        return true;
    }
    if (!ch->insecure) {
        error_setg(errp, "%s is on %s without TLS: anyone who can reach it "
                   "could read every input of the guest, or drive a "
                   "backup", what, ch->addr_str);
        error_append_hint(errp, "Give the chardev tls-creds (and "
                          "tls-authz on its server), or add rrinsecure=on "
                          "to -icount if that network is trusted.\n");
        return false;
    }
    warn_report("ft: the logging channel on %s is neither encrypted nor "
                "authenticated (rrinsecure=on): anyone on that network can "
                "read the guest's inputs or impersonate the peer",
                ch->addr_str);
    return true;
}

/*
 * The address (@addr, which the channel keeps), its name in messages,
 * and the TLS credentials; a client checks that the server's certificate
 * carries @tls_hostname, by default the address's host.
 */
void ft_set_address(FtChannel *ch, SocketAddress *addr,
                    const char *tls_creds, const char *tls_hostname)
{
    ch->addr = addr;
    ch->addr_str = addr->type == SOCKET_ADDRESS_TYPE_UNIX ?
        g_strdup_printf("unix:%s", addr->u.q_unix.path) : socket_uri(addr);
    ch->tls_creds = g_strdup(tls_creds);
    if (tls_hostname) {
        ch->tls_hostname = g_strdup(tls_hostname);
    } else if (tls_creds && !ch->server &&
               addr->type == SOCKET_ADDRESS_TYPE_INET) {
        ch->tls_hostname = g_strdup(addr->u.inet.host);
    }
}

static bool ft_parse_chardev(FtChannel *ch, const char *id, Error **errp)
{
    QemuOpts *copts = qemu_opts_find(qemu_find_opts("chardev"), id);
    g_autoptr(ChardevBackend) backend = NULL;
    g_autofree char *what = NULL;
    ChardevSocket *sock;

    if (!copts) {
        error_setg(errp, "rrchardev: no -chardev with id '%s'", id);
        return false;
    }
    backend = qemu_chr_parse_opts(copts, errp);
    if (!backend) {
        return false;
    }
    if (backend->type != CHARDEV_BACKEND_KIND_SOCKET) {
        error_setg(errp, "rrchardev: chardev '%s' must be a socket", id);
        return false;
    }
    sock = backend->u.socket.data;
    if (sock->has_telnet || sock->has_tn3270 || sock->has_websocket ||
        sock->has_reconnect_ms || sock->has_reconnect) {
        error_setg(errp, "rrchardev: chardev '%s': only the address, "
                   "server, wait, tls-creds and tls-authz options are "
                   "supported", id);
        return false;
    }
    ch->server = sock->has_server && sock->server;
    ch->wait = !sock->has_wait || sock->wait;
    ft_set_address(ch, socket_address_flatten(sock->addr), sock->tls_creds,
                   NULL);
    if (sock->tls_authz && (!sock->tls_creds || !ch->server)) {
        error_setg(errp, "rrchardev: chardev '%s': tls-authz needs "
                   "tls-creds, on the server side", id);
        return false;
    }
    ch->tls_authz = g_strdup(sock->tls_authz);
    what = g_strdup_printf("rrchardev: chardev '%s'", id);
    if (!ft_check_transport(ch, what, errp)) {
        return false;
    }
    /* The chardev only names the address: do not create it. */
    qemu_opts_del(copts);
    return true;
}

static bool ft_parse_opts(FtChannel *ch, QemuOpts *opts, Error **errp)
{
    uint64_t gen = qemu_opt_get_number(opts, "rrgen", 1);
    uint64_t hb = qemu_opt_get_number(opts, "rrheartbeat", 20);
    uint64_t to = qemu_opt_get_number(opts, "rrtimeout", 120);
    uint64_t pages = qemu_opt_get_number(opts, "rrdigestpages", 0);

    ch->max_lag_ms = qemu_opt_get_number(opts, "rrlag", 1000);
    ch->max_lag_bytes = qemu_opt_get_size(opts, "rrlagbytes", 64 * MiB);
    ch->held_max = qemu_opt_get_size(opts, "rrheldbytes", FT_HELD_DEFAULT);
    ch->rx_max = qemu_opt_get_size(opts, "rrbufbytes", FT_RX_BUFFER_DEFAULT);
    ch->digest_ms = qemu_opt_get_number(opts, "rrdigest", 100);
    if (gen == 0 || gen > UINT32_MAX) {
        error_setg(errp, "rrgen must be between 1 and %u", UINT32_MAX);
        return false;
    }
    if (hb == 0 || hb > 60000 || to < 2 * hb || to > 600000) {
        error_setg(errp, "rrheartbeat must be 1..60000 ms and rrtimeout "
                   "at least twice rrheartbeat (at most 600000 ms)");
        return false;
    }
    if (ch->max_lag_ms == 0 || ch->max_lag_ms > 600000 ||
        ch->max_lag_bytes < 64 * KiB || ch->max_lag_bytes > 16 * GiB) {
        error_setg(errp, "rrlag must be 1..600000 ms and rrlagbytes "
                   "64K..16G");
        return false;
    }
    if (ch->held_max < 64 * KiB || ch->held_max > 16 * GiB ||
        ch->rx_max < 2 * FT_FRAME_MAX_PAYLOAD || ch->rx_max > 16 * GiB) {
        error_setg(errp, "rrheldbytes must be 64K..16G and rrbufbytes "
                   "2M..16G");
        return false;
    }
    if (ch->digest_ms > 600000 || pages > 1024) {
        error_setg(errp, "rrdigest must be at most 600000 ms and "
                   "rrdigestpages at most 1024");
        return false;
    }
    ch->insecure = qemu_opt_get_bool(opts, "rrinsecure", false);
    ch->join = qemu_opt_get_bool(opts, "rrjoin", false);
    ch->fence_writes = qemu_opt_get_bool(opts, "rrfence", false);
    if (ch->join && ch->role != FT_ROLE_BACKUP) {
        error_setg(errp, "rrjoin=on is for a backup (rr=replay) that joins "
                   "a running primary");
        return false;
    }
    if (qemu_opt_get(opts, "rrlock")) {
        const char *why;
        int ret;

        ch->lock_dir = g_strdup(qemu_opt_get(opts, "rrlock"));
        if (buffer_is_zero(ch->vm_id, sizeof(ch->vm_id))) {
            error_setg(errp, "rrlock needs the VM's -uuid: the lock record "
                       "is kept per VM");
            return false;
        }
        ret = ft_lock_check_dir(ch->lock_dir, &why);
        if (ret < 0) {
            error_setg(errp, "rrlock: %s: %s", ch->lock_dir,
                       why ? why : strerror(-ret));
            return false;
        }
        /* A backup that joins takes its primary's, checked then */
        if (!ch->join && !ft_lock_gen_free(ch, gen, errp)) {
            error_append_hint(errp, "Start the pair with a higher rrgen.\n");
            return false;
        }
    }
    ch->gen = gen;
    ch->heartbeat_ms = hb;
    ch->timeout_ms = to;
    ch->digest_pages = pages;
    return true;
}

/*
 * Nobody decided generation @gen of this VM yet: its lock record does not
 * exist.  A pairing of that generation can start.
 */
bool ft_lock_gen_free(FtChannel *ch, uint64_t gen, Error **errp)
{
    FtLockRecord rec;
    int err = 0;
    int ret;

    if (!ch->lock_dir) {
        return true;
    }
    ret = ft_lock_read(ch->lock_dir, ch->vm_id, gen, &rec, &err);
    if (ret == FT_LOCK_WON) {
        char desc[256];

        ft_lock_describe(&rec, desc, sizeof(desc));
        error_setg(errp, "rrlock: generation %" PRIu64 " of this VM was "
                   "already decided (the lock is held by %s)", gen, desc);
        return false;
    } else if (ret != FT_LOCK_ERR_IO || err != ENOENT) {
        g_autofree char *path = ft_lock_path(ch->lock_dir, ch->vm_id, gen);

        error_setg(errp, "rrlock: %s: %s", path,
                   ret == FT_LOCK_ERR_IO ? strerror(err) :
                   ft_lock_strerror(ret));
        return false;
    }
    return true;
}

/* icount_to_ns() needs the shift, which is set once -icount is parsed. */
void ft_setup_insns(FtChannel *ch)
{
    uint64_t ns_per_insn;

    if (ch->insns_ready) {
        return;
    }
    ch->insns_ready = true;
    ns_per_insn = MAX(icount_to_ns(1), 1);

    ch->max_lag_insns = ch->max_lag_ms * SCALE_MS / ns_per_insn;
    qatomic_set(&ch->digest_insns, ch->digest_ms * SCALE_MS / ns_per_insn);
    ch->next_digest = ch->digest_insns;
}

/*
 * The machine is built, its disks are open.  The primary describes them
 * to its backups; a backup waits for that and refuses to run on disks
 * that differ: it would replay reads of another disk, then write to it.
 */
static void ft_machine_done(Notifier *n, void *data)
{
    FtChannel *ch = container_of(n, FtChannel, machine_done);
    g_autofree char *mine = ft_disks_describe();
    g_autofree char *theirs = NULL;
    g_autofree char *why = NULL;
    int wait_ms = ft_startup_wait_ms(ch);
    int64_t deadline = ft_now_ns() + (int64_t)wait_ms * SCALE_MS;

    ft_protect_machine_done();
    /* A go-live that waited for the machine (ft_bh()) */
    qemu_bh_schedule(ch->bh);
    qemu_mutex_lock(&ch->lock);
    if (ch->role == FT_ROLE_PRIMARY) {
        ch->config = g_steal_pointer(&mine);
        qemu_cond_broadcast(&ch->tx_cond);
        qemu_mutex_unlock(&ch->lock);
        return;
    }
    if (ch->join) {
        /*
         * Its primary connects later, at x-ft-protect; the receiver
         * compares the CONFIG it then sends with this.
         */
        ch->config = g_steal_pointer(&mine);
        qemu_mutex_unlock(&ch->lock);
        ft_join_machine_done(ch);
        if (!runstate_check(RUN_STATE_INMIGRATE)) {
            error_report("ft: backup: rrjoin=on takes the VM's state from "
                         "its primary: it needs -incoming");
            exit(1);
        }
        return;
    }
    /*
     * With the BQL held: a primary that keeps the connection up (with
     * heartbeats, say) but never describes its disks must not hang this
     * QEMU at startup.
     */
    while (!ch->peer_config && (ch->state == FT_STATE_WAITING ||
                                ch->state == FT_STATE_STREAMING)) {
        if (ft_now_ns() >= deadline) {
            qemu_mutex_unlock(&ch->lock);
            error_report("ft: backup: the primary sent no CONFIG (the "
                         "description of its disks) within %d ms; refusing "
                         "to replay", wait_ms);
            exit(1);
        }
        qemu_cond_timedwait(&ch->cond, &ch->lock, 100);
    }
    theirs = g_strdup(ch->peer_config);
    qemu_mutex_unlock(&ch->lock);
    if (!theirs) {
        return;     /* lost the primary already: reported as such */
    }
    why = ft_disks_compare(mine, theirs);
    if (why) {
        error_report("ft: backup: the disks differ from the primary's "
                     "(%s); refusing to replay", why);
        exit(1);
    }
}

/*
 * A channel and the stream it hands to the replay core, in the waiting
 * state, neither configured nor connected.
 */
FtChannel *ft_channel_new(bool writer)
{
    FtChannel *ch = g_new0(FtChannel, 1);

    ch->stream = g_new0(FtStream, 1);
    ch->stream->ch = ch;
    replay_stream_init(&ch->stream->stream,
                       writer ? &ft_primary_ops : &ft_backup_ops,
                       "ft", writer);
    /* Every commit point goes to the channel at once. */
    ch->stream->stream.flush_bytes = 0;
    ch->stream->stream.flush_ns = 0;
    ch->role = writer ? FT_ROLE_PRIMARY : FT_ROLE_BACKUP;
    qatomic_set(&ch->state, FT_STATE_WAITING);  /* the initial state */
    qemu_mutex_init(&ch->lock);
    qemu_mutex_init(&ch->join_lock);
    qemu_cond_init(&ch->cond);
    qemu_cond_init(&ch->tx_cond);
    g_queue_init(&ch->events);
    ch->handshaking = g_ptr_array_new();
    g_queue_init(&ch->held);
    ch->bw_prev_ns = ft_now_ns();
    if (qemu_uuid_set) {
        memcpy(ch->vm_id, qemu_uuid.data, sizeof(ch->vm_id));
    }
    ch->bh = qemu_bh_new(ft_bh, ch);
    ch->release_bh = qemu_bh_new(ft_release_bh, ch);
    return ch;
}

/*
 * rralone=on: a VM that records with no backup yet.  Its channel starts
 * as one that runs on alone after a failover: live, with no address and
 * no connection; what the VM records is dropped as it is written, and
 * its output goes out at once.  x-ft-protect gives it a backup.
 */
/*
 * A VM that starts alone is live from its first instruction, so with a
 * lock directory it must win its generation's record first, as a side
 * that goes live after a failure does.  Two VMs of one -uuid started
 * alone in one generation (two cluster nodes booting the VM at once), or
 * one started in a generation older than a record there, cannot both run.
 */
static bool ft_alone_take_lock(FtChannel *ch, Error **errp)
{
    FtLockRecord mine;
    FtLockRecord holder;
    char desc[256];
    FtLockResult r;
    int err;

    if (!ch->lock_dir) {
        return true;
    }
    ft_lock_record_init(ch, FT_ROLE_PRIMARY, &mine);
    err = -ft_lock_new_nonce(&mine.nonce);
    r = err ? FT_LOCK_ERR_IO :
        ft_lock_test_and_set(ch->lock_dir, &mine, &holder, &err);
    if (r == FT_LOCK_WON) {
        ft_lock_describe(&mine, desc, sizeof(desc));
        info_report("ft: primary: won the lock of generation %u: %s",
                    ch->gen, desc);
        return true;
    }
    if (r == FT_LOCK_LOST) {
        ft_lock_describe(&holder, desc, sizeof(desc));
        error_setg(errp, "rralone: this VM cannot start alone in "
                   "generation %u: the lock is held by %s", ch->gen, desc);
        return false;
    }
    error_setg(errp, "rralone: cannot take the lock of generation %u in "
               "%s: %s", ch->gen, ch->lock_dir,
               r == FT_LOCK_ERR_IO ? strerror(err) : ft_lock_strerror(r));
    return false;
}

static ReplayStream *ft_open_alone(FtChannel *ch, Error **errp)
{
    if (!ft_alone_take_lock(ch, errp)) {
        return NULL;
    }
    ch->stream->stream.name = g_strdup("ft:alone");
    qatomic_set(&ch->state, FT_STATE_LIVE);
    replay_set_output_ops(&ft_output_ops, ch);
    replay_set_digest_ops(&ft_digest_ops, ch);
    ch->machine_done.notify = ft_machine_done;
    qemu_add_machine_init_done_notifier(&ch->machine_done);
    info_report("ft: primary: recording alone in generation %u, with no "
                "backup until x-ft-protect", ch->gen);
    return &ch->stream->stream;
}

static ReplayStream *ft_open(const char *chardev, QemuOpts *opts,
                             bool writer, Error **errp)
{
    FtChannel *ch = ft_channel_new(writer);

    if (!ft_parse_opts(ch, opts, errp)) {
        goto fail;
    }
    if (!chardev) {
        ReplayStream *rs;

        g_free(ch->stream->stream.name);
        ch->stream->stream.name = NULL;
        rs = ft_open_alone(ch, errp);
        if (!rs) {
            goto fail;
        }
        return rs;
    }
    if (!ft_parse_chardev(ch, chardev, errp)) {
        goto fail;
    }
    g_free(ch->stream->stream.name);
    ch->stream->stream.name = g_strdup_printf("ft:%s", ch->addr_str);
    replay_set_output_ops(&ft_output_ops, ch);
    replay_set_digest_ops(&ft_digest_ops, ch);

    /*
     * The backup needs the log from the start, so it always waits for
     * the primary, unless it joins a running one (rrjoin=on): that one
     * connects later.  The primary waits for the backup unless wait=off;
     * then it buffers the log until a backup comes, up to rrlagbytes.
     */
    if (!writer) {
        ch->wait = !ch->join;
        ch->stream->stream.join = ch->join;
    }
    if (!ft_connect(ch, errp)) {
        goto fail;
    }
    ch->machine_done.notify = ft_machine_done;
    qemu_add_machine_init_done_notifier(&ch->machine_done);
    return &ch->stream->stream;

fail:
    replay_set_digest_ops(NULL, NULL);
    replay_set_output_ops(NULL, NULL);
    /* Leave the rest to process exit: startup fails after this. */
    return NULL;
}

static const ReplayChannelBackend ft_channel_backend = {
    .name = "ft",
    .open = ft_open,
};

static void ft_register(void)
{
    replay_register_channel_backend(&ft_channel_backend);
}

module_init(ft_register, MODULE_INIT_QOM);
