/*
 * FT logging channel: frame encoding and incremental decoding
 *
 * Copyright (c) 2026 The qemu-ft authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <stdlib.h>
#include <string.h>
#include "ft-crc32c.h"
#include "ft-bytes.h"
#include "ft-frame.h"

size_t ft_frame_encode(uint8_t out[FT_FRAME_HDR_SIZE], FtFrameHeader *h,
                       const void *payload)
{
    uint32_t crc;

    ft_put_le32(out, FT_FRAME_MAGIC);
    out[4] = h->version;
    out[5] = h->type;
    ft_put_le16(out + 6, h->flags);
    ft_put_le32(out + 8, h->gen);
    ft_put_le32(out + 12, h->len);
    ft_put_le64(out + 16, h->offset);
    crc = ft_crc32c(0, out, 24);
    if (h->len) {
        crc = ft_crc32c(crc, payload, h->len);
    }
    h->crc = crc;
    ft_put_le32(out + 24, crc);
    ft_put_le32(out + 28, ft_crc32c(0, out, 28));
    return FT_FRAME_HDR_SIZE;
}

int ft_frame_parse_header(const uint8_t in[FT_FRAME_HDR_SIZE],
                          FtFrameHeader *h, uint32_t max_payload)
{
    if (ft_get_le32(in) != FT_FRAME_MAGIC) {
        return FT_DEC_ERR_MAGIC;
    }
    h->version = in[4];
    if (h->version != FT_PROTO_VERSION) {
        return FT_DEC_ERR_VERSION;
    }
    if (ft_get_le32(in + 28) != ft_crc32c(0, in, 28)) {
        return FT_DEC_ERR_HCRC;
    }
    h->type = in[5];
    h->flags = ft_get_le16(in + 6);
    h->gen = ft_get_le32(in + 8);
    h->len = ft_get_le32(in + 12);
    h->offset = ft_get_le64(in + 16);
    h->crc = ft_get_le32(in + 24);
    if (h->type == 0 || h->type > FT_FRAME_TYPE_MAX) {
        return FT_DEC_ERR_TYPE;
    }
    if (h->flags & ~(h->type == FT_FRAME_DATA ? FT_FRAME_F_MORE : 0)) {
        return FT_DEC_ERR_FLAGS;
    }
    if (h->len > max_payload) {
        return FT_DEC_ERR_LEN;
    }
    return 0;
}

void ft_frame_decoder_init(FtFrameDecoder *d, uint32_t max_payload)
{
    memset(d, 0, sizeof(*d));
    if (max_payload == 0 || max_payload > FT_FRAME_MAX_PAYLOAD) {
        max_payload = FT_FRAME_MAX_PAYLOAD;
    }
    d->max_payload = max_payload;
}

void ft_frame_decoder_destroy(FtFrameDecoder *d)
{
    free(d->payload);
    d->payload = NULL;
    d->payload_cap = 0;
}

int ft_frame_decoder_feed(FtFrameDecoder *d, const uint8_t *buf, size_t len,
                          size_t *consumed, FtFrameHeader *h,
                          const uint8_t **payload)
{
    size_t used = 0, n;
    int ret;

    *consumed = 0;
    if (d->error) {
        return d->error;
    }
    if (d->hdr_fill < FT_FRAME_HDR_SIZE) {
        n = FT_FRAME_HDR_SIZE - d->hdr_fill;
        n = n < len ? n : len;
        memcpy(d->hdr_buf + d->hdr_fill, buf, n);
        d->hdr_fill += n;
        used += n;
        if (d->hdr_fill < FT_FRAME_HDR_SIZE) {
            *consumed = used;
            return FT_DEC_NEED_MORE;
        }
        ret = ft_frame_parse_header(d->hdr_buf, &d->hdr, d->max_payload);
        if (ret < 0) {
            *consumed = used;
            return d->error = ret;
        }
        if (d->hdr.len > d->payload_cap) {
            uint8_t *p = realloc(d->payload, d->hdr.len);

            if (!p) {
                *consumed = used;
                return d->error = FT_DEC_ERR_NOMEM;
            }
            d->payload = p;
            d->payload_cap = d->hdr.len;
        }
        d->payload_fill = 0;
    }
    n = d->hdr.len - d->payload_fill;
    n = n < len - used ? n : len - used;
    if (n) {
        memcpy(d->payload + d->payload_fill, buf + used, n);
        d->payload_fill += n;
        used += n;
    }
    *consumed = used;
    if (d->payload_fill < d->hdr.len) {
        return FT_DEC_NEED_MORE;
    }
    {
        uint32_t crc = ft_crc32c(0, d->hdr_buf, 24);

        crc = ft_crc32c(crc, d->payload, d->hdr.len);
        if (crc != d->hdr.crc) {
            return d->error = FT_DEC_ERR_CRC;
        }
    }
    d->hdr_fill = 0;
    *h = d->hdr;
    *payload = d->payload;
    return FT_DEC_FRAME;
}

const char *ft_frame_strerror(int err)
{
    switch (err) {
    case FT_DEC_NEED_MORE:
        return "incomplete frame";
    case FT_DEC_FRAME:
        return "complete frame";
    case FT_DEC_ERR_MAGIC:
        return "bad frame magic (not an FT logging channel peer?)";
    case FT_DEC_ERR_VERSION:
        return "unsupported protocol version";
    case FT_DEC_ERR_TYPE:
        return "unknown frame type";
    case FT_DEC_ERR_FLAGS:
        return "reserved frame bits set";
    case FT_DEC_ERR_LEN:
        return "frame payload too large";
    case FT_DEC_ERR_CRC:
        return "frame checksum mismatch";
    case FT_DEC_ERR_HCRC:
        return "frame header checksum mismatch";
    case FT_DEC_ERR_NOMEM:
        return "out of memory for frame payload";
    }
    return "unknown frame error";
}

const char *ft_frame_type_name(unsigned type)
{
    static const char *const names[] = {
        [FT_FRAME_HELLO] = "HELLO",
        [FT_FRAME_DATA] = "DATA",
        [FT_FRAME_ACK] = "ACK",
        [FT_FRAME_HEARTBEAT] = "HEARTBEAT",
        [FT_FRAME_END] = "END",
        [FT_FRAME_CONFIG] = "CONFIG",
    };

    if (type > 0 && type <= FT_FRAME_TYPE_MAX) {
        return names[type];
    }
    return "?";
}
