/*
 * FT logging channel: connect, accept, handshake and frame I/O
 *
 * Copyright (c) 2026 The qemu-ft authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Every socket call of the channel is in this file.  None is made with
 * ch->lock held.
 */

#include "qemu/osdep.h"
#include <poll.h>
#include "qapi/error.h"
#include "qemu/error-report.h"
#include "qemu/iov.h"
#include "qemu/sockets.h"
#include "crypto/tlscreds.h"
#include "io/channel-socket.h"
#include "io/channel-tls.h"
#include "qom/object_interfaces.h"
#include "ft-bytes.h"
#include "ft-internal.h"
#include "trace.h"

/*
 * Wait up to @timeout_ms (-1: for ever) for @events (POLLIN, POLLOUT) or
 * the end on @ioc.  Called only after a read or write found it would
 * block, in the socket or in the TLS session, so the socket underneath
 * tells.  A poll() of it: the threads wait here at every frame, and a
 * GMainContext per wait, as qio_channel_wait() makes, cost them enough
 * that heartbeats were late under load, and the log's bandwidth fell.
 */
static bool ft_wait_io(QIOChannel *ioc, short events, int timeout_ms)
{
    QIOChannelSocket *sioc;
    struct pollfd pfd;

    if (timeout_ms == 0) {
        return false;
    }
    if (object_dynamic_cast(OBJECT(ioc), TYPE_QIO_CHANNEL_TLS)) {
        ioc = QIO_CHANNEL_TLS(ioc)->master;
    }
    sioc = QIO_CHANNEL_SOCKET(ioc);
    pfd = (struct pollfd) { .fd = sioc->fd, .events = events };
    return poll(&pfd, 1, timeout_ms) != 0;
}

/*
 * Frame I/O goes through the connection's QIOChannel, a socket or TLS
 * over it, in non-blocking mode: a sender whose peer stops reading waits
 * for room until ft_shutdown_ioc() ends the connection; a reader reads
 * first and waits only when nothing is buffered, in the socket or in the
 * TLS session, with a deadline.
 */
bool ft_send_frame(QIOChannel *ioc, uint8_t type, uint16_t flags,
                   uint32_t gen, uint64_t offset, const void *payload,
                   uint32_t len, Error **errp)
{
    uint8_t hdr[FT_FRAME_HDR_SIZE];
    FtFrameHeader h = {
        .version = FT_PROTO_VERSION,
        .type = type,
        .flags = flags,
        .gen = gen,
        .len = len,
        .offset = offset,
    };
    struct iovec iov[2] = {
        { .iov_base = hdr, .iov_len = sizeof(hdr) },
        { .iov_base = (void *)payload, .iov_len = len },
    };
    struct iovec *v = iov;
    unsigned int n = len ? 2 : 1;

    ft_frame_encode(hdr, &h, payload);
    while (n) {
        ssize_t done = qio_channel_writev(ioc, v, n, errp);

        if (done == QIO_CHANNEL_ERR_BLOCK) {
            ft_wait_io(ioc, POLLOUT, -1);
            continue;
        }
        if (done < 0) {
            return false;
        }
        iov_discard_front(&v, &n, done);
    }
    return true;
}

bool ft_send_u64(FtChannel *ch, QIOChannel *ioc, uint8_t type,
                 uint64_t offset, uint64_t value, Error **errp)
{
    uint8_t p[8];

    ft_put_le64(p, value);
    return ft_send_frame(ioc, type, 0, ch->gen, offset, p, sizeof(p), errp);
}

static gboolean ft_flag(gpointer flag)
{
    *(bool *)flag = true;
    return G_SOURCE_REMOVE;
}

/*
 * Run @ctx until *@done, or for @timeout_ms; returns *@done.  A
 * private context, so that the channel's threads never touch the main
 * loop's.
 */
static bool ft_run_until(GMainContext *ctx, bool *done, int timeout_ms)
{
    GSource *timer = g_timeout_source_new(timeout_ms);
    bool expired = false;

    g_source_set_callback(timer, ft_flag, &expired, NULL);
    g_source_attach(timer, ctx);
    while (!*done && !expired) {
        g_main_context_iteration(ctx, TRUE);
    }
    g_source_destroy(timer);
    g_source_unref(timer);
    return *done;
}

int ft_read_frame(QIOChannel *ioc, FtReader *r, int timeout_ms,
                  FtFrameHeader *h, const uint8_t **payload)
{
    int64_t deadline = ft_now_ns() + (int64_t)timeout_ms * SCALE_MS;

    for (;;) {
        Error *err = NULL;
        ssize_t got;

        if (r->pos < r->len) {
            size_t used = 0;
            int ret = ft_frame_decoder_feed(&r->dec, r->buf + r->pos,
                                            r->len - r->pos, &used, h,
                                            payload);

            r->pos += used;
            if (ret != FT_DEC_NEED_MORE) {
                return ret;
            }
        }
        got = qio_channel_read(ioc, (char *)r->buf, sizeof(r->buf), &err);
        if (got == QIO_CHANNEL_ERR_BLOCK) {
            int64_t left_ms = (deadline - ft_now_ns()) / SCALE_MS;

            if (left_ms <= 0 || !ft_wait_io(ioc, POLLIN, left_ms)) {
                return 0;
            }
            continue;
        }
        if (got < 0) {
            error_free(r->err);
            r->err = err;
            return FT_SOCK_ERR(EIO);
        }
        if (got == 0) {
            return FT_SOCK_ERR(EPIPE);
        }
        r->len = got;
        r->pos = 0;
    }
}

FtReader *ft_reader_new(void)
{
    FtReader *r = g_new0(FtReader, 1);

    ft_frame_decoder_init(&r->dec, FT_FRAME_MAX_PAYLOAD);
    return r;
}

void ft_reader_free(FtReader *r)
{
    if (r) {
        error_free(r->err);
        ft_frame_decoder_destroy(&r->dec);
        g_free(r);
    }
}

char *ft_read_error(FtReader *r, int ret)
{
    if (ret == FT_SOCK_ERR(EPIPE)) {
        return g_strdup("connection closed by peer");
    }
    if (ret == FT_SOCK_ERR(EIO) && r->err) {
        return g_strdup(error_get_pretty(r->err));
    }
    if (ret <= FT_SOCK_ERR(0)) {
        return g_strdup_printf("socket error: %s",
                               strerror(FT_SOCK_ERR(0) - ret));
    }
    return g_strdup_printf("bad frame: %s", ft_frame_strerror(ret));
}

void ft_shutdown_ioc(QIOChannel *ioc)
{
    if (ioc) {
        qio_channel_shutdown(ioc, QIO_CHANNEL_SHUTDOWN_BOTH, NULL);
    }
}

/* Wake the accept thread, which may be blocked in accept(). */
void ft_shutdown_listener(FtChannel *ch)
{
    if (ch->listener) {
        qio_channel_shutdown(QIO_CHANNEL(ch->listener),
                             QIO_CHANNEL_SHUTDOWN_BOTH, NULL);
    }
}

/* The peer's first frame, which must be its HELLO */
static bool ft_read_hello(FtChannel *ch, QIOChannel *ioc, FtReader *r,
                          FtFrameHeader *h, const uint8_t **payload,
                          Error **errp)
{
    int ret = ft_read_frame(ioc, r, ft_startup_wait_ms(ch), h, payload);

    if (ret == 0) {
        error_setg(errp, "no HELLO from the peer");
        return false;
    } else if (ret < 0) {
        g_autofree char *why = ft_read_error(r, ret);

        error_setg(errp, "%s", why);
        return false;
    }
    return true;
}

/*
 * Handshake, without ch->lock: send our HELLO and check the peer's.  A
 * backup that joins a running primary reads the primary's first, and
 * takes its generation (*gen).
 */
static bool ft_handshake(FtChannel *ch, QIOChannel *ioc, FtProto *proto,
                         FtReader *r, uint32_t *gen, Error **errp)
{
    FtHello local = {
        .role = ch->role,
        .replay_version = FT_REPLAY_VERSION,
        .gen = ch->gen,
        .offset = 0,
        .max_payload = FT_FRAME_MAX_PAYLOAD,
        .heartbeat_ms = ch->heartbeat_ms,
    };
    uint8_t hello[FT_HELLO_SIZE];
    FtFrameHeader h;
    const uint8_t *payload;
    bool have_hello = false;
    int ret;

    if (ch->join) {
        FtHello peer;

        if (!ft_read_hello(ch, ioc, r, &h, &payload, errp)) {
            return false;
        }
        have_hello = true;
        /* Anything else is refused below, as from any peer */
        if (h.type == FT_FRAME_HELLO &&
            ft_hello_decode(payload, h.len, &peer) == 0) {
            if (!ft_join_gen(ch, peer.gen, errp)) {
                return false;
            }
            local.gen = peer.gen;
        }
    }
    *gen = local.gen;
    memcpy(local.vm_id, ch->vm_id, sizeof(local.vm_id));
    ft_proto_init(proto, &local);
    ft_hello_encode(hello, &local);
    if (!ft_send_frame(ioc, FT_FRAME_HELLO, 0, local.gen, 0, hello,
                       sizeof(hello), errp)) {
        error_prepend(errp, "sending HELLO: ");
        return false;
    }
    if (!have_hello && !ft_read_hello(ch, ioc, r, &h, &payload, errp)) {
        return false;
    }
    ret = ft_proto_receive(proto, &h, payload);
    if (ret < 0) {
        error_setg(errp, "handshake refused: %s", ft_proto_strerror(ret));
        return false;
    }
    /* Anything the peer sent after its HELLO is left in @r for the rx. */
    return true;
}

/* TLS, with the socket chardev's tls-creds and tls-authz */

typedef struct FtTlsHandshake {
    bool done;
    Error *err;
} FtTlsHandshake;

static void ft_tls_done(QIOTask *task, gpointer opaque)
{
    FtTlsHandshake *hs = opaque;

    qio_task_propagate_error(task, &hs->err);
    hs->done = true;
}

/*
 * Put @sioc under TLS and run the TLS handshake, within FT_HANDSHAKE_MS:
 * a peer that stalls it has its connection shut down.  The server checks
 * the client's certificate (x509 with verify-peer) and, with tls-authz,
 * its name; the client checks the server's certificate and name.
 */
static QIOChannel *ft_tls_start(FtChannel *ch, QIOChannelSocket *sioc,
                                Error **errp)
{
    Object *obj = object_resolve_path_component(object_get_objects_root(),
                                                ch->tls_creds);
    QCryptoTLSCreds *creds;
    QIOChannelTLS *tioc;
    GMainContext *ctx;
    FtTlsHandshake hs = { 0 };

    creds = obj ? (QCryptoTLSCreds *)object_dynamic_cast(
                      obj, TYPE_QCRYPTO_TLS_CREDS) : NULL;
    if (!creds) {
        error_setg(errp, "no TLS credentials object '%s'", ch->tls_creds);
        return NULL;
    }
    if (ch->server) {
        tioc = qio_channel_tls_new_server(QIO_CHANNEL(sioc), creds,
                                          ch->tls_authz, errp);
    } else {
        tioc = qio_channel_tls_new_client(QIO_CHANNEL(sioc), creds,
                                          ch->tls_hostname, errp);
    }
    if (!tioc) {
        return NULL;
    }
    qio_channel_set_name(QIO_CHANNEL(tioc), "ft-tls");
    ctx = g_main_context_new();
    qio_channel_tls_handshake(tioc, ft_tls_done, &hs, NULL, ctx);
    if (!ft_run_until(ctx, &hs.done, FT_HANDSHAKE_MS)) {
        /* The handshake fails at once on a shut-down socket. */
        qio_channel_shutdown(QIO_CHANNEL(sioc), QIO_CHANNEL_SHUTDOWN_BOTH,
                             NULL);
        while (!hs.done) {
            g_main_context_iteration(ctx, TRUE);
        }
        error_free(hs.err);
        hs.err = NULL;
        error_setg(&hs.err, "no TLS handshake within %d ms", FT_HANDSHAKE_MS);
    }
    g_main_context_unref(ctx);
    if (hs.err) {
        error_propagate_prepend(errp, hs.err, "TLS: ");
        object_unref(OBJECT(tioc));
        return NULL;
    }
    trace_ft_tls_up(ch->server ? "server" : "client");
    return QIO_CHANNEL(tioc);
}

/* Connections */

static void ft_start_threads(FtChannel *ch)
{
    if (ch->role == FT_ROLE_PRIMARY) {
        qemu_thread_create(&ch->tx_thread, "ft-tx", ft_primary_tx_thread,
                           ch, QEMU_THREAD_JOINABLE);
        ch->tx_started = true;
        qemu_thread_create(&ch->rx_thread, "ft-rx", ft_primary_rx_thread,
                           ch, QEMU_THREAD_JOINABLE);
    } else {
        qemu_thread_create(&ch->rx_thread, "ft-rx", ft_backup_rx_thread,
                           ch, QEMU_THREAD_JOINABLE);
    }
    ch->rx_started = true;
}

static char *ft_peer_name(QIOChannelSocket *sioc)
{
    g_autoptr(SocketAddress) sa =
        qio_channel_socket_get_remote_address(sioc, NULL);

    if (!sa) {
        return g_strdup("unknown");
    }
    if (sa->type == SOCKET_ADDRESS_TYPE_UNIX) {
        return g_strdup_printf("unix:%s", sa->u.q_unix.path);
    }
    return socket_uri(sa);
}

/*
 * A new connection: handshake, then stream.  Returns false (and refuses
 * the connection) if the handshake fails or a peer is already there.
 */
static bool ft_attach(FtChannel *ch, QIOChannelSocket *sioc, Error **errp)
{
    g_autofree char *peer = ft_peer_name(sioc);
    FtProto proto;
    FtReader *r;
    QIOChannel *ioc;
    uint32_t gen;

    qemu_mutex_lock(&ch->lock);
    if (ch->state != FT_STATE_WAITING) {
        FtState st = ch->state;

        qemu_mutex_unlock(&ch->lock);
        error_setg(errp, "refusing connection from %s: channel is %s%s",
                   peer, FtState_str(st), st == FT_STATE_STREAMING ?
                   " with another peer" : "");
        return false;
    }
    if (ch->role == FT_ROLE_PRIMARY && ch->base > 0) {
        qemu_mutex_unlock(&ch->lock);
        error_setg(errp, "refusing connection from %s: the start of the "
                   "log is no longer buffered", peer);
        return false;
    }
    qemu_mutex_unlock(&ch->lock);

    /* Non-blocking: every wait on the connection has a deadline. */
    qio_channel_set_blocking(QIO_CHANNEL(sioc), false, NULL);
    /*
     * Frames are small and each one is waited for: an ACK releases held
     * output, a commit carries the event that output waits on.  Nagle's
     * algorithm would hold a frame back until the previous one is
     * acknowledged, which with delayed ACKs costs up to 40 ms.
     */
    qio_channel_set_delay(QIO_CHANNEL(sioc), false);
    if (ch->tls_creds) {
        ioc = ft_tls_start(ch, sioc, errp);
        if (!ioc) {
            error_prepend(errp, "connection with %s refused: ", peer);
            return false;
        }
    } else {
        ioc = QIO_CHANNEL(sioc);
        object_ref(OBJECT(ioc));
    }
    r = ft_reader_new();
    if (!ft_handshake(ch, ioc, &proto, r, &gen, errp)) {
        error_prepend(errp, "connection with %s refused: ", peer);
        goto refuse;
    }
    qemu_mutex_lock(&ch->lock);
    if (ch->state != FT_STATE_WAITING) {
        qemu_mutex_unlock(&ch->lock);
        error_setg(errp, "refusing connection from %s: channel is %s",
                   peer, FtState_str(ch->state));
        goto refuse;
    }
    ch->gen = gen;
    ch->proto = proto;
    ch->reader = r;
    ch->conn = sioc;
    object_ref(OBJECT(sioc));
    ch->ioc = ioc;
    ch->peer_str = g_strdup(peer);
    ft_set_state(ch, FT_STATE_WAITING, FT_STATE_STREAMING);
    ch->config_sent = false;
    ch->last_rx_ns = ft_now_ns();
    trace_ft_attach(ft_role_name(ch->role), peer);
    info_report("ft: %s: streaming with %s", ft_role_name(ch->role), peer);
    ft_queue_event(ch, FT_EV_UP, peer, 0);
    ft_start_threads(ch);
    qemu_cond_broadcast(&ch->cond);
    qemu_mutex_unlock(&ch->lock);
    return true;

refuse:
    ft_reader_free(r);
    object_unref(OBJECT(ioc));
    return false;
}

typedef struct FtHandshake {
    FtChannel *ch;
    QIOChannelSocket *sioc;     /* a reference */
} FtHandshake;

static void *ft_handshake_thread(void *opaque)
{
    g_autofree FtHandshake *hs = opaque;
    FtChannel *ch = hs->ch;
    QIOChannelSocket *sioc = hs->sioc;
    Error *err = NULL;

    if (!ft_attach(ch, sioc, &err)) {
        error_report_err(err);
    }
    qemu_mutex_lock(&ch->lock);
    g_ptr_array_remove_fast(ch->handshaking, sioc);
    qemu_cond_broadcast(&ch->cond);
    qemu_mutex_unlock(&ch->lock);
    object_unref(OBJECT(sioc));
    return NULL;
}

/*
 * Every connection has its handshake in a thread of its own, within its
 * own deadline (FT_HANDSHAKE_MS for TLS, as much again for HELLO): a
 * slow or silent peer never holds up the next one, which may be the
 * real primary.  At most FT_MAX_HANDSHAKES run at once.
 */
static void ft_accepted(FtChannel *ch, QIOChannelSocket *sioc)
{
    FtHandshake *hs;
    QemuThread thread;

    qemu_mutex_lock(&ch->lock);
    if (ch->closing) {
        qemu_mutex_unlock(&ch->lock);
        return;
    }
    if (ch->handshaking->len >= FT_MAX_HANDSHAKES) {
        g_autofree char *peer = ft_peer_name(sioc);

        qemu_mutex_unlock(&ch->lock);
        error_report("ft: %s: refusing connection from %s: %d handshakes "
                     "are already in progress", ft_role_name(ch->role), peer,
                     FT_MAX_HANDSHAKES);
        return;
    }
    hs = g_new(FtHandshake, 1);
    hs->ch = ch;
    hs->sioc = sioc;
    object_ref(OBJECT(sioc));
    g_ptr_array_add(ch->handshaking, sioc);
    qemu_thread_create(&thread, "ft-handshake", ft_handshake_thread, hs,
                       QEMU_THREAD_DETACHED);
    qemu_mutex_unlock(&ch->lock);
}

/*
 * A server keeps accepting: the first peer to complete its handshake
 * streams, later ones are refused with a clear error.
 */
static void *ft_accept_thread(void *opaque)
{
    FtChannel *ch = opaque;

    for (;;) {
        QIOChannelSocket *sioc;
        Error *err = NULL;

        sioc = qio_channel_socket_accept(ch->listener, &err);
        if (!sioc) {
            error_free(err);
            qemu_mutex_lock(&ch->lock);
            if (ch->closing) {
                qemu_mutex_unlock(&ch->lock);
                break;
            }
            qemu_mutex_unlock(&ch->lock);
            g_usleep(100 * 1000);
            continue;
        }
        ft_accepted(ch, sioc);
        object_unref(OBJECT(sioc));
    }
    return NULL;
}

/*
 * At exit, with the listener shut down and the accept thread joined: end
 * the handshakes still running and wait for their threads to let go.
 */
void ft_end_handshakes(FtChannel *ch)
{
    qemu_mutex_lock(&ch->lock);
    for (guint i = 0; i < ch->handshaking->len; i++) {
        qio_channel_shutdown(QIO_CHANNEL(ch->handshaking->pdata[i]),
                             QIO_CHANNEL_SHUTDOWN_BOTH, NULL);
    }
    while (ch->handshaking->len) {
        qemu_cond_wait(&ch->cond, &ch->lock);
    }
    qemu_mutex_unlock(&ch->lock);
}

bool ft_connect(FtChannel *ch, Error **errp)
{
    if (ch->server) {
        ch->listener = qio_channel_socket_new();
        if (qio_channel_socket_listen_sync(ch->listener, ch->addr,
                                           FT_MAX_HANDSHAKES, errp) < 0) {
            return false;
        }
        qio_channel_set_blocking(QIO_CHANNEL(ch->listener), true, NULL);
        qemu_thread_create(&ch->accept_thread, "ft-accept", ft_accept_thread,
                           ch, QEMU_THREAD_JOINABLE);
        ch->accept_started = true;
        if (ch->wait) {
            info_report("ft: %s: waiting for the %s on %s",
                        ft_role_name(ch->role),
                        ch->role == FT_ROLE_PRIMARY ? "backup" : "primary",
                        ch->addr_str);
            /* At startup, for as long as it takes, as -incoming does */
            qemu_mutex_lock(&ch->lock);
            while (ch->state == FT_STATE_WAITING) {
                qemu_cond_wait(&ch->cond, &ch->lock);
            }
            qemu_mutex_unlock(&ch->lock);
        }
        return true;
    } else {
        g_autoptr(QIOChannelSocket) sioc = qio_channel_socket_new();

        if (qio_channel_socket_connect_sync(sioc, ch->addr, errp) < 0) {
            return false;
        }
        return ft_attach(ch, sioc, errp);
    }
}
