/*
 * FT logging channel: handshake and per-connection protocol state
 *
 * Copyright (c) 2026 The qemu-ft authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Above the frame layer (ft-frame.h): the HELLO handshake, the checks that
 * every frame fits the stream so far (generation, contiguous offsets,
 * direction), acknowledgement tracking and the primary's flow-control
 * window.  Pure state, no I/O and no QEMU headers, so it is unit-tested
 * alone; the channel threads in QEMU drive it.
 */

#ifndef FT_PROTO_H
#define FT_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "ft-frame.h"

typedef enum FtRole {
    FT_ROLE_PRIMARY = 1,
    FT_ROLE_BACKUP = 2,
} FtRole;

/* HELLO payload, little-endian on the wire (FT_HELLO_SIZE bytes). */
typedef struct FtHello {
    uint8_t role;               /* FtRole of the sender */
    uint32_t replay_version;    /* record/replay log format version */
    uint32_t gen;               /* stream generation */
    /* primary: where its stream starts; backup: received up to here */
    uint64_t offset;
    uint8_t vm_id[16];          /* which protected VM (both sides equal) */
    uint32_t max_payload;       /* largest DATA payload accepted */
    uint32_t heartbeat_ms;      /* sender's heartbeat interval */
} FtHello;

#define FT_HELLO_SIZE 48

size_t ft_hello_encode(uint8_t out[FT_HELLO_SIZE], const FtHello *h);
int ft_hello_decode(const uint8_t *in, size_t len, FtHello *h);

typedef enum FtProtoState {
    FT_PROTO_AWAIT_HELLO,
    FT_PROTO_STREAMING,
    FT_PROTO_ENDED,
    FT_PROTO_FAILED,
} FtProtoState;

/* Protocol errors, < 0.  ft_proto_strerror() explains them. */
enum {
    FT_PROTO_OK = 0,
    FT_PROTO_ERR_HELLO_FIRST = -20,  /* a frame before the handshake */
    FT_PROTO_ERR_HELLO_BAD = -21,    /* HELLO payload malformed */
    FT_PROTO_ERR_ROLE = -22,         /* peer has the same role as we do */
    FT_PROTO_ERR_REPLAY_VERSION = -23,
    FT_PROTO_ERR_VM_ID = -24,        /* peer protects another VM */
    FT_PROTO_ERR_GEN = -25,          /* wrong stream generation */
    FT_PROTO_ERR_HELLO_TWICE = -26,  /* second HELLO on a connection */
    FT_PROTO_ERR_DIRECTION = -27,    /* frame type not valid from peer */
    FT_PROTO_ERR_REPEAT = -28,       /* DATA offset already received */
    FT_PROTO_ERR_GAP = -29,          /* DATA offset beyond what we have */
    FT_PROTO_ERR_EMPTY = -30,        /* DATA with no payload */
    FT_PROTO_ERR_ACK_BEYOND = -31,   /* ACK of bytes never sent */
    FT_PROTO_ERR_ACK_BACKWARDS = -32,
    FT_PROTO_ERR_END_OFFSET = -33,   /* END not at the end of the data */
    FT_PROTO_ERR_AFTER_END = -34,
    FT_PROTO_ERR_START = -35,        /* backup cannot resume there */
};

/*
 * One side of one connection.  The primary (sender) uses tx_*; the
 * backup (receiver) uses rx_pos.
 */
typedef struct FtProto {
    FtRole role;                /* our role */
    FtProtoState state;
    int error;                  /* first error, sticky */
    FtHello local;              /* what we announce */
    FtHello peer;               /* what the peer announced */

    /* primary */
    uint64_t tx_sent;           /* end of the DATA sent */
    uint64_t tx_acked;          /* end of the data the backup confirmed */

    /* backup */
    uint64_t rx_pos;            /* end of the DATA received */
} FtProto;

void ft_proto_init(FtProto *p, const FtHello *local);

/*
 * Check an incoming frame (already verified by the frame decoder) against
 * the connection state and apply it.  Returns FT_PROTO_OK or an error,
 * after which the connection must be dropped.
 */
int ft_proto_receive(FtProto *p, const FtFrameHeader *h,
                     const uint8_t *payload);

/* Primary: record that DATA [offset, offset + len) was sent. */
void ft_proto_sent(FtProto *p, uint64_t offset, uint32_t len);

/* Primary: bytes sent and not yet acknowledged. */
static inline uint64_t ft_proto_unacked(const FtProto *p)
{
    return p->tx_sent - p->tx_acked;
}

const char *ft_proto_strerror(int err);
const char *ft_proto_state_name(FtProtoState s);

/*
 * Map log offsets to guest instruction counts, to express lag in
 * instructions and guest time.  The writer adds a mark (offset, icount)
 * now and then, in increasing order; a fixed ring keeps the newest ones.
 */
#define FT_POSMAP_SIZE 1024

typedef struct FtPosMap {
    uint64_t offset[FT_POSMAP_SIZE];
    uint64_t icount[FT_POSMAP_SIZE];
    unsigned head;              /* next slot */
    unsigned count;
} FtPosMap;

void ft_posmap_init(FtPosMap *m);
void ft_posmap_add(FtPosMap *m, uint64_t offset, uint64_t icount);
/*
 * The icount of the newest mark at or before @offset, i.e. guest
 * execution known to be covered by the log up to @offset.  Returns false
 * if @offset is older than every mark kept.
 */
bool ft_posmap_icount_at(const FtPosMap *m, uint64_t offset,
                         uint64_t *icount);

/*
 * Text from the peer (a CONFIG frame), made safe to print: '\n' and
 * printable ASCII stay, '\\' becomes "\\\\" and every other byte "\\xHH",
 * so no terminal escape sequence or NUL passes.  Writes at most @size
 * bytes including a NUL into @out (which may be NULL when @size is 0)
 * and, like snprintf(), returns the length of the whole result.
 */
size_t ft_proto_escape(const uint8_t *in, size_t len, char *out,
                       size_t size);

#endif
