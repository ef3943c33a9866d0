/*
 * FT logging channel: frame encoding and incremental decoding
 *
 * Copyright (c) 2026 The qemu-ft authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Wire format (docs/wire-format.md): every frame is a 32-byte
 * little-endian header followed by @len payload bytes.
 *
 *   0  u32 magic    "QFTL"
 *   4  u8  version  FT_PROTO_VERSION
 *   5  u8  type     FtFrameType
 *   6  u16 flags    DATA: FT_FRAME_F_MORE; other types: 0
 *   8  u32 gen      stream generation
 *  12  u32 len      payload length, <= FT_FRAME_MAX_PAYLOAD
 *  16  u64 offset   DATA: log offset of the first payload byte
 *                   ACK: log offset received up to (exclusive)
 *                   others: sender's current log position
 *  24  u32 crc      CRC32C of header bytes 0..23 and the payload
 *  28  u32 hcrc     CRC32C of header bytes 0..27, so that a damaged
 *                   length is caught before waiting for its payload
 *
 * Self-contained (no QEMU headers) so it is unit-tested and fuzzed
 * without building QEMU.
 */

#ifndef FT_FRAME_H
#define FT_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define FT_FRAME_MAGIC          0x4c544651u /* "QFTL" */
#define FT_PROTO_VERSION        2
#define FT_FRAME_HDR_SIZE       32
#define FT_FRAME_MAX_PAYLOAD    (1u << 20)

typedef enum FtFrameType {
    FT_FRAME_HELLO = 1,     /* handshake; payload is FtHello */
    FT_FRAME_DATA = 2,      /* replay log bytes */
    FT_FRAME_ACK = 3,       /* backup -> primary: received up to offset */
    FT_FRAME_HEARTBEAT = 4, /* either way when idle */
    FT_FRAME_END = 5,       /* orderly end of the stream at offset */
    FT_FRAME_CONFIG = 6,    /* primary -> backup: what it must match */
    FT_FRAME_TYPE_MAX = FT_FRAME_CONFIG,
} FtFrameType;

/*
 * DATA flag: the payload ends inside an event, the rest follows in the
 * next frame.  The backup hands data to replay only up to the end of a
 * frame without it, so replay never sees a partial event.
 */
#define FT_FRAME_F_MORE         0x0001

typedef struct FtFrameHeader {
    uint8_t version;
    uint8_t type;
    uint16_t flags;
    uint32_t gen;
    uint32_t len;
    uint64_t offset;
    uint32_t crc;
} FtFrameHeader;

/* Decoder results: > 0 progress codes, < 0 errors (sticky). */
enum {
    FT_DEC_NEED_MORE = 0,   /* all input consumed, no complete frame */
    FT_DEC_FRAME = 1,       /* a complete, verified frame is available */
    FT_DEC_ERR_MAGIC = -1,
    FT_DEC_ERR_VERSION = -2,
    FT_DEC_ERR_TYPE = -3,
    FT_DEC_ERR_FLAGS = -4,
    FT_DEC_ERR_LEN = -5,
    FT_DEC_ERR_CRC = -6,
    FT_DEC_ERR_NOMEM = -7,
    FT_DEC_ERR_HCRC = -8,
};

typedef struct FtFrameDecoder {
    uint8_t hdr_buf[FT_FRAME_HDR_SIZE];
    size_t hdr_fill;
    FtFrameHeader hdr;
    uint8_t *payload;
    size_t payload_cap;
    size_t payload_fill;
    uint32_t max_payload;
    int error;
} FtFrameDecoder;

/*
 * Write the header of a frame with @payload (h->len bytes) into @out,
 * computing h->crc.  Returns FT_FRAME_HDR_SIZE.
 */
size_t ft_frame_encode(uint8_t out[FT_FRAME_HDR_SIZE], FtFrameHeader *h,
                       const void *payload);

/* Parse a header without verifying the payload CRC.  Returns 0 or < 0. */
int ft_frame_parse_header(const uint8_t in[FT_FRAME_HDR_SIZE],
                          FtFrameHeader *h, uint32_t max_payload);

void ft_frame_decoder_init(FtFrameDecoder *d, uint32_t max_payload);
void ft_frame_decoder_destroy(FtFrameDecoder *d);

/*
 * Feed up to @len bytes.  *@consumed is set to the bytes used.  On
 * FT_DEC_FRAME, *@h and *@payload describe the frame; the payload stays
 * valid until the next call.  Call again with the remaining bytes.
 * After an error every call returns the same error.
 */
int ft_frame_decoder_feed(FtFrameDecoder *d, const uint8_t *buf, size_t len,
                          size_t *consumed, FtFrameHeader *h,
                          const uint8_t **payload);

const char *ft_frame_strerror(int err);
const char *ft_frame_type_name(unsigned type);

#endif
