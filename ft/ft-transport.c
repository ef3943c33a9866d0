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
#include "qemu/sockets.h"
#include "io/channel-socket.h"
#include "ft-bytes.h"
#include "ft-internal.h"
#include "trace.h"

int ft_send_frame(int fd, uint8_t type, uint16_t flags, uint32_t gen,
                  uint64_t offset, const void *payload, uint32_t len)
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
    int cnt = len ? 2 : 1;

    ft_frame_encode(hdr, &h, payload);
    while (cnt) {
        ssize_t n = writev(fd, v, cnt);

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        while (cnt && (size_t)n >= v->iov_len) {
            n -= v->iov_len;
            v++;
            cnt--;
        }
        if (cnt) {
            v->iov_base = (uint8_t *)v->iov_base + n;
            v->iov_len -= n;
        }
    }
    return 0;
}

int ft_send_u64(FtChannel *ch, int fd, uint8_t type, uint64_t offset,
                uint64_t value)
{
    uint8_t p[8];

    ft_put_le64(p, value);
    return ft_send_frame(fd, type, 0, ch->gen, offset, p, sizeof(p));
}

int ft_read_frame(int fd, FtReader *r, int timeout_ms,
                  FtFrameHeader *h, const uint8_t **payload)
{
    for (;;) {
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
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        int n = poll(&pfd, 1, timeout_ms);
        ssize_t got;

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return FT_SOCK_ERR(errno);
        }
        if (n == 0) {
            return 0;
        }
        got = read(fd, r->buf, sizeof(r->buf));
        if (got < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                continue;
            }
            return FT_SOCK_ERR(errno);
        }
        if (got == 0) {
            return FT_SOCK_ERR(EPIPE);
        }
        r->len = got;
        r->pos = 0;
    }
}

char *ft_read_error(int ret)
{
    if (ret == FT_SOCK_ERR(EPIPE)) {
        return g_strdup("connection closed by peer");
    }
    if (ret <= FT_SOCK_ERR(0)) {
        return g_strdup_printf("socket error: %s",
                               strerror(FT_SOCK_ERR(0) - ret));
    }
    return g_strdup_printf("bad frame: %s", ft_frame_strerror(ret));
}

void ft_shutdown_fd(int fd)
{
    if (fd >= 0) {
        shutdown(fd, SHUT_RDWR);
    }
}

/* Wake the accept thread, which may be blocked in accept(). */
void ft_shutdown_listener(FtChannel *ch)
{
    if (ch->listener) {
        shutdown(ch->listener->fd, SHUT_RDWR);
    }
}

/* Handshake, without ch->lock: send our HELLO and check the peer's. */
static bool ft_handshake(FtChannel *ch, int fd, FtProto *proto,
                         FtReader *r, Error **errp)
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
    int ret;

    memcpy(local.vm_id, ch->vm_id, sizeof(local.vm_id));
    ft_proto_init(proto, &local);
    ft_hello_encode(hello, &local);
    ret = ft_send_frame(fd, FT_FRAME_HELLO, 0, ch->gen, 0, hello,
                        sizeof(hello));
    if (ret < 0) {
        error_setg_errno(errp, -ret, "sending HELLO");
        return false;
    }
    ret = ft_read_frame(fd, r, MAX(FT_HANDSHAKE_MS, ch->timeout_ms), &h,
                        &payload);
    if (ret == 0) {
        error_setg(errp, "no HELLO from the peer");
        return false;
    } else if (ret < 0) {
        g_autofree char *why = ft_read_error(ret);

        error_setg(errp, "%s", why);
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
    int fd = sioc->fd;

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

    qio_channel_set_blocking(QIO_CHANNEL(sioc), true, NULL);
    /*
     * Frames are small and each one is waited for: an ACK releases held
     * output, a commit carries the event that output waits on.  Nagle's
     * algorithm would hold a frame back until the previous one is
     * acknowledged, which with delayed ACKs costs up to 40 ms.
     */
    qio_channel_set_delay(QIO_CHANNEL(sioc), false);
    r = g_new0(FtReader, 1);
    ft_frame_decoder_init(&r->dec, FT_FRAME_MAX_PAYLOAD);
    if (!ft_handshake(ch, fd, &proto, r, errp)) {
        ft_frame_decoder_destroy(&r->dec);
        g_free(r);
        error_prepend(errp, "connection with %s refused: ", peer);
        return false;
    }
    qemu_mutex_lock(&ch->lock);
    if (ch->state != FT_STATE_WAITING) {
        qemu_mutex_unlock(&ch->lock);
        ft_frame_decoder_destroy(&r->dec);
        g_free(r);
        error_setg(errp, "refusing connection from %s: channel is %s",
                   peer, FtState_str(ch->state));
        return false;
    }
    ch->proto = proto;
    ch->reader = r;
    ch->conn = sioc;
    object_ref(OBJECT(sioc));
    ch->fd = fd;
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
}

/* A server keeps accepting, to refuse later peers with a clear error. */
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
        if (!ft_attach(ch, sioc, &err)) {
            error_report_err(err);
        }
        object_unref(OBJECT(sioc));
    }
    return NULL;
}

bool ft_connect(FtChannel *ch, Error **errp)
{
    if (ch->server) {
        ch->listener = qio_channel_socket_new();
        if (qio_channel_socket_listen_sync(ch->listener, ch->addr, 1,
                                           errp) < 0) {
            return false;
        }
        qio_channel_set_blocking(QIO_CHANNEL(ch->listener), true, NULL);
        if (ch->wait) {
            info_report("ft: %s: waiting for the %s on %s",
                        ft_role_name(ch->role),
                        ch->role == FT_ROLE_PRIMARY ? "backup" : "primary",
                        ch->addr_str);
            while (qatomic_read(&ch->state) == FT_STATE_WAITING) {
                Error *err = NULL;
                QIOChannelSocket *sioc =
                    qio_channel_socket_accept(ch->listener, errp);

                if (!sioc) {
                    return false;
                }
                if (!ft_attach(ch, sioc, &err)) {
                    error_report_err(err);
                }
                object_unref(OBJECT(sioc));
            }
        }
        qemu_thread_create(&ch->accept_thread, "ft-accept", ft_accept_thread,
                           ch, QEMU_THREAD_JOINABLE);
        ch->accept_started = true;
        return true;
    } else {
        g_autoptr(QIOChannelSocket) sioc = qio_channel_socket_new();

        if (qio_channel_socket_connect_sync(sioc, ch->addr, errp) < 0) {
            return false;
        }
        return ft_attach(ch, sioc, errp);
    }
}
