/*
 * FT logging channel: handshake and per-connection protocol state
 *
 * Copyright (c) 2026 The qemu-ft authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <string.h>
#include "ft-bytes.h"
#include "ft-proto.h"

/*
 * HELLO payload layout (little-endian):
 *   0 u8 role, 1..3 reserved (0), 4 u32 replay_version, 8 u32 gen,
 *  12 u32 max_payload, 16 u64 offset, 24 u8[16] vm_id,
 *  40 u32 heartbeat_ms, 44 u32 reserved (0)
 */

size_t ft_hello_encode(uint8_t out[FT_HELLO_SIZE], const FtHello *h)
{
    memset(out, 0, FT_HELLO_SIZE);
    out[0] = h->role;
    ft_put_le32(out + 4, h->replay_version);
    ft_put_le32(out + 8, h->gen);
    ft_put_le32(out + 12, h->max_payload);
    ft_put_le64(out + 16, h->offset);
    memcpy(out + 24, h->vm_id, 16);
    ft_put_le32(out + 40, h->heartbeat_ms);
    return FT_HELLO_SIZE;
}

int ft_hello_decode(const uint8_t *in, size_t len, FtHello *h)
{
    if (len != FT_HELLO_SIZE || in[1] || in[2] || in[3] ||
        ft_get_le32(in + 44)) {
        return FT_PROTO_ERR_HELLO_BAD;
    }
    if (in[0] != FT_ROLE_PRIMARY && in[0] != FT_ROLE_BACKUP) {
        return FT_PROTO_ERR_HELLO_BAD;
    }
    h->role = in[0];
    h->replay_version = ft_get_le32(in + 4);
    h->gen = ft_get_le32(in + 8);
    h->max_payload = ft_get_le32(in + 12);
    h->offset = ft_get_le64(in + 16);
    memcpy(h->vm_id, in + 24, 16);
    h->heartbeat_ms = ft_get_le32(in + 40);
    if (h->max_payload == 0 || h->heartbeat_ms == 0) {
        return FT_PROTO_ERR_HELLO_BAD;
    }
    return FT_PROTO_OK;
}

void ft_proto_init(FtProto *p, const FtHello *local)
{
    memset(p, 0, sizeof(*p));
    p->role = local->role;
    p->local = *local;
    p->state = FT_PROTO_AWAIT_HELLO;
    p->tx_sent = p->tx_acked = p->rx_pos = local->offset;
}

static int fail(FtProto *p, int err)
{
    p->state = FT_PROTO_FAILED;
    p->error = err;
    return err;
}

static int handshake(FtProto *p, const FtFrameHeader *h,
                     const uint8_t *payload)
{
    FtHello peer;
    int ret = ft_hello_decode(payload, h->len, &peer);

    if (ret < 0) {
        return fail(p, ret);
    }
    if (peer.role == p->role) {
        return fail(p, FT_PROTO_ERR_ROLE);
    }
    if (peer.replay_version != p->local.replay_version) {
        return fail(p, FT_PROTO_ERR_REPLAY_VERSION);
    }
    if (memcmp(peer.vm_id, p->local.vm_id, sizeof(peer.vm_id))) {
        return fail(p, FT_PROTO_ERR_VM_ID);
    }
    if (peer.gen != h->gen || peer.gen != p->local.gen) {
        return fail(p, FT_PROTO_ERR_GEN);
    }
    /*
     * Both sides must agree where the stream continues: the backup has
     * everything before local.offset, the primary starts sending there.
     */
    if (peer.offset != p->local.offset) {
        return fail(p, FT_PROTO_ERR_START);
    }
    p->peer = peer;
    p->state = FT_PROTO_STREAMING;
    return FT_PROTO_OK;
}

static int backup_receive(FtProto *p, const FtFrameHeader *h)
{
    switch (h->type) {
    case FT_FRAME_DATA:
        if (h->len == 0) {
            return fail(p, FT_PROTO_ERR_EMPTY);
        }
        if (h->offset < p->rx_pos) {
            return fail(p, FT_PROTO_ERR_REPEAT);
        }
        if (h->offset > p->rx_pos) {
            return fail(p, FT_PROTO_ERR_GAP);
        }
        p->rx_pos += h->len;
        return FT_PROTO_OK;
    case FT_FRAME_HEARTBEAT:
    case FT_FRAME_CONFIG:
        /* The primary's position: anything else means data went missing. */
        if (h->offset != p->rx_pos) {
            return fail(p, h->offset < p->rx_pos ? FT_PROTO_ERR_REPEAT
                                                 : FT_PROTO_ERR_GAP);
        }
        return FT_PROTO_OK;
    case FT_FRAME_END:
        if (h->offset != p->rx_pos) {
            return fail(p, FT_PROTO_ERR_END_OFFSET);
        }
        p->state = FT_PROTO_ENDED;
        return FT_PROTO_OK;
    default:
        return fail(p, FT_PROTO_ERR_DIRECTION);
    }
}

static int primary_receive(FtProto *p, const FtFrameHeader *h)
{
    switch (h->type) {
    case FT_FRAME_ACK:
    case FT_FRAME_HEARTBEAT:
        /* Both carry the backup's received position. */
        if (h->offset > p->tx_sent) {
            return fail(p, FT_PROTO_ERR_ACK_BEYOND);
        }
        if (h->offset < p->tx_acked) {
            return fail(p, FT_PROTO_ERR_ACK_BACKWARDS);
        }
        p->tx_acked = h->offset;
        return FT_PROTO_OK;
    default:
        return fail(p, FT_PROTO_ERR_DIRECTION);
    }
}

int ft_proto_receive(FtProto *p, const FtFrameHeader *h,
                     const uint8_t *payload)
{
    switch (p->state) {
    case FT_PROTO_FAILED:
        return p->error;
    case FT_PROTO_ENDED:
        return fail(p, FT_PROTO_ERR_AFTER_END);
    case FT_PROTO_AWAIT_HELLO:
        if (h->type != FT_FRAME_HELLO) {
            return fail(p, FT_PROTO_ERR_HELLO_FIRST);
        }
        return handshake(p, h, payload);
    case FT_PROTO_STREAMING:
        break;
    }
    if (h->type == FT_FRAME_HELLO) {
        return fail(p, FT_PROTO_ERR_HELLO_TWICE);
    }
    if (h->gen != p->local.gen) {
        return fail(p, FT_PROTO_ERR_GEN);
    }
    return p->role == FT_ROLE_BACKUP ? backup_receive(p, h)
                                     : primary_receive(p, h);
}

void ft_proto_sent(FtProto *p, uint64_t offset, uint32_t len)
{
    /* The sender only ever appends. */
    if (offset == p->tx_sent) {
        p->tx_sent += len;
    }
}

const char *ft_proto_strerror(int err)
{
    switch (err) {
    case FT_PROTO_OK:
        return "ok";
    case FT_PROTO_ERR_HELLO_FIRST:
        return "peer sent a frame before the HELLO handshake";
    case FT_PROTO_ERR_HELLO_BAD:
        return "malformed HELLO";
    case FT_PROTO_ERR_ROLE:
        return "peer has the same role (two primaries or two backups)";
    case FT_PROTO_ERR_REPLAY_VERSION:
        return "peer records/replays another log format version";
    case FT_PROTO_ERR_VM_ID:
        return "peer belongs to another protected VM";
    case FT_PROTO_ERR_GEN:
        return "wrong stream generation";
    case FT_PROTO_ERR_HELLO_TWICE:
        return "second HELLO on one connection";
    case FT_PROTO_ERR_DIRECTION:
        return "frame type not allowed from this peer";
    case FT_PROTO_ERR_REPEAT:
        return "log data repeated (offset already received)";
    case FT_PROTO_ERR_GAP:
        return "log data missing or reordered (offset beyond received)";
    case FT_PROTO_ERR_EMPTY:
        return "DATA frame without payload";
    case FT_PROTO_ERR_ACK_BEYOND:
        return "acknowledgement of log never sent";
    case FT_PROTO_ERR_ACK_BACKWARDS:
        return "acknowledgement went backwards";
    case FT_PROTO_ERR_END_OFFSET:
        return "END before the end of the received log";
    case FT_PROTO_ERR_AFTER_END:
        return "frame after END";
    case FT_PROTO_ERR_START:
        return "peers disagree where the log stream continues";
    }
    return ft_frame_strerror(err);
}

const char *ft_proto_state_name(FtProtoState s)
{
    switch (s) {
    case FT_PROTO_AWAIT_HELLO:
        return "handshake";
    case FT_PROTO_STREAMING:
        return "streaming";
    case FT_PROTO_ENDED:
        return "ended";
    case FT_PROTO_FAILED:
        return "failed";
    }
    return "?";
}

void ft_posmap_init(FtPosMap *m)
{
    memset(m, 0, sizeof(*m));
}

void ft_posmap_add(FtPosMap *m, uint64_t offset, uint64_t icount)
{
    if (m->count) {
        unsigned last = (m->head + FT_POSMAP_SIZE - 1) % FT_POSMAP_SIZE;

        if (offset < m->offset[last] || icount < m->icount[last]) {
            return;             /* marks only move forward */
        }
        if (offset == m->offset[last]) {
            m->icount[last] = icount;
            return;
        }
    }
    m->offset[m->head] = offset;
    m->icount[m->head] = icount;
    m->head = (m->head + 1) % FT_POSMAP_SIZE;
    if (m->count < FT_POSMAP_SIZE) {
        m->count++;
    }
}

bool ft_posmap_icount_at(const FtPosMap *m, uint64_t offset,
                         uint64_t *icount)
{
    unsigned lo = 0, hi = m->count, oldest;

    oldest = (m->head + FT_POSMAP_SIZE - m->count) % FT_POSMAP_SIZE;
    /* Binary search for the last mark with mark.offset <= offset. */
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;

        if (m->offset[(oldest + mid) % FT_POSMAP_SIZE] <= offset) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo == 0) {
        return false;
    }
    *icount = m->icount[(oldest + lo - 1) % FT_POSMAP_SIZE];
    return true;
}

size_t ft_proto_escape(const uint8_t *in, size_t len, char *out,
                       size_t size)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
    char esc[4];

    for (size_t i = 0; i < len; i++) {
        const char *s = esc;
        size_t k;

        if (in[i] == '\\') {
            s = "\\\\";
            k = 2;
        } else if (in[i] == '\n' || (in[i] >= 0x20 && in[i] < 0x7f)) {
            esc[0] = in[i];
            k = 1;
        } else {
            esc[0] = '\\';
            esc[1] = 'x';
            esc[2] = hex[in[i] >> 4];
            esc[3] = hex[in[i] & 15];
            k = 4;
        }
        for (size_t j = 0; j < k; j++, n++) {
            if (n + 1 < size) {
                out[n] = s[j];
            }
        }
    }
    if (size) {
        out[n < size ? n : size - 1] = 0;
    }
    return n;
}
