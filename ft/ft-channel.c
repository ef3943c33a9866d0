/*
 * FT logging channel: the record/replay log as a live stream between a
 * primary and a backup
 *
 * Copyright (c) 2026 The qemu-ft authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The primary records with -icount rr=record,rrchardev=<id>; its log is a
 * ReplayStream whose backend is this channel.  Every commit of the replay
 * core (an event boundary) is appended to a buffer; a sender thread sends
 * it as DATA frames, a receiver thread takes the backup's ACKs.  The vCPU
 * stalls in the throttle op while the backup lags beyond the bound.
 *
 * The backup plays with rr=replay,rrchardev=<id>.  A receiver thread
 * verifies DATA frames, appends them and acknowledges them on receipt.
 * Replay sees bytes only up to the end of a frame that ends on an event
 * boundary (no FT_FRAME_F_MORE), and never blocks for them (avail op).
 *
 * Locking: ch->lock protects everything below it in FtChannel.  No
 * socket I/O is done with it held.  The replay core calls the stream
 * ops with the replay mutex held (write, avail, read, diverged) or with
 * no lock (throttle, wait).  Events go to the main loop through a BH.
 */

#include "qemu/osdep.h"
#include <poll.h>
#include "qapi/error.h"
#include "qapi/qapi-commands-ft.h"
#include "qapi/qapi-events-ft.h"
#include "qapi/qapi-visit-sockets.h"
#include "qemu/config-file.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/iov.h"
#include "qemu/main-loop.h"
#include "qemu/option.h"
#include "qemu/sockets.h"
#include "qemu/thread.h"
#include "qemu/timer.h"
#include "qemu/units.h"
#include "qemu/uuid.h"
#include "chardev/char.h"
#include "io/channel-socket.h"
#include "hw/core/cpu.h"
#include "system/cpu-timers.h"
#include "system/replay.h"
#include "system/replay-stream.h"
#include "system/runstate.h"
#include "system/system.h"
#include "exec/cpu-common.h"
#include "hw/boards.h"
#include "ft-bytes.h"
#include "ft-frame.h"
#include "ft-proto.h"
#include "ft-lock.h"
#include "ft-output.h"
#include "ft-disks.h"
#include "migration/misc.h"
#include "net/announce.h"

/* Must follow REPLAY_VERSION in replay/replay.c: checked in the HELLO. */
#define FT_REPLAY_VERSION       0xe0200d

#define FT_TX_PAYLOAD           (256 * KiB)
#define FT_RX_BUFFER_MAX        (256 * MiB)
#define FT_BOUNDARIES           8192
#define FT_HANDSHAKE_MS         10000
#define FT_CLOSE_DRAIN_MS       2000
#define FT_DIGEST_SIZE          32
/* ft_read_frame(): socket errors, apart from the frame decoder's */
#define FT_SOCK_ERR(e)          (-1000 - (e))
#define FT_REPORT_NS            (10 * SCALE_MS)
/*
 * Log with no output waiting for it goes out in frames at most this often:
 * each frame costs the backup a wake-up, a read and an ACK, which at 1 ms
 * took 6-8 % of the backup's core from its vCPU.  Output that waits for
 * its log wakes the sender at once.
 */
#define FT_TX_BATCH_NS          (5 * SCALE_MS)
/* Console output a backup keeps back, at most */
#define FT_KEPT_MAX             (1 * MiB)
#define FT_ARB_RETRY_MS         100
#define FT_HALT_EXIT_MS         500
#define FT_DELAYS               1024

typedef struct FtChannel FtChannel;

typedef enum FtEventKind {
    FT_EV_UP,
    FT_EV_LOST,
    FT_EV_DIVERGED,
    FT_EV_ARB_WON,
    FT_EV_ARB_LOST,
    FT_EV_ALONE,            /* a primary runs on alone */
    FT_EV_HALT,
} FtEventKind;

/* Output held by the output rule, or kept back by a backup */
typedef struct FtHeld {
    Chardev *chr;           /* console bytes, or ... */
    QEMUBHFunc *cb;         /* ... an output that waits (a disk write), or */
    void *opaque;
    NetFilterState *nf;     /* ... a packet for the filter's next hop */
    NetClientState *sender;
    unsigned flags;
    uint64_t tag;           /* log offset just past the write's event */
    int64_t t_ns;           /* when it was written */
    int len;
    uint8_t data[];
} FtHeld;

/* The sink a backup records into once it went live */
typedef struct FtLiveStream {
    ReplayStream stream;
    FtChannel *ch;
} FtLiveStream;

typedef struct FtEvent {
    FtEventKind kind;
    char *text;
    uint64_t pos;
} FtEvent;

/*
 * Wait up to @timeout_ms for the next frame.  Returns FT_DEC_FRAME, 0 on
 * timeout, or a negative error (FT_SOCK_ERR(EPIPE): the peer closed it;
 * FT_DEC_ERR_*: a bad frame).  @r holds input not yet decoded.
 */
typedef struct FtReader {
    FtFrameDecoder dec;
    uint8_t buf[64 * KiB];
    size_t len;
    size_t pos;
} FtReader;

struct FtChannel {
    ReplayStream stream;

    /* Configuration, fixed after open */
    FtRole role;
    uint32_t gen;
    uint8_t vm_id[16];
    SocketAddress *addr;
    char *addr_str;
    bool server;
    bool wait;
    uint32_t heartbeat_ms;
    uint32_t timeout_ms;
    uint64_t max_lag_ms;
    uint64_t max_lag_insns;
    uint64_t max_lag_bytes;
    uint64_t digest_ms;
    uint64_t digest_insns;
    uint32_t digest_pages;
    bool insns_ready;               /* set on the vCPU thread */

    QIOChannelSocket *listener;
    QemuThread accept_thread;
    bool accept_started;
    QemuThread rx_thread;
    QemuThread tx_thread;
    bool rx_started;
    bool tx_started;
    QEMUBH *bh;

    QemuMutex lock;
    QemuCond cond;
    QemuCond tx_cond;               /* wakes the primary's sender */
    bool tx_sleeping;
    int64_t tx_wake_ns;
    FtState state;
    char *error;
    QIOChannelSocket *conn;
    int fd;
    char *peer_str;
    FtProto proto;
    FtReader *reader;               /* input of the connection */
    bool closing;

    /* The log buffer: buf[0] is at log offset base. */
    uint8_t *buf;
    size_t cap;
    uint64_t base;

    /* Primary: [base, written) buffered, acked <= sent <= written */
    uint64_t written;
    uint64_t sent;
    uint64_t acked;
    uint64_t bounds[FT_BOUNDARIES];     /* commit points not yet sent */
    unsigned bounds_head;
    unsigned bounds_count;
    uint64_t throttle_ns;

    /* Backup: [base, received) buffered, consumed <= avail_end */
    uint64_t received;
    uint64_t avail_end;                 /* also read without the lock */
    uint64_t consumed;
    bool starved;
    bool drained_stop;

    /* Both */
    uint64_t peer_icount;               /* from the peer's ACK/heartbeat */
    uint64_t bw_bytes;
    uint64_t bw_prev_bytes;
    int64_t bw_prev_ns;
    double bw_mbps;

    /* Divergence checks */
    uint64_t next_digest;
    uint64_t digest_checks;
    uint64_t digest_mismatches;
    uint64_t digest_last;
    uint64_t mismatch_icount;
    char *mismatch;

    GQueue events;

    /* Failover (the arbitration thread runs once) */
    char *lock_dir;
    QemuThread arb_thread;
    bool arb_started;
    bool arb_manual;                    /* x-ft-go-live */
    bool detaching;                     /* x-ft-detach on the primary */
    char *lock_holder;
    int64_t lost_ns;                    /* when the peer was lost */
    int64_t last_rx_ns;                 /* newest frame from the peer */
    int64_t gap_max_ns;                 /* longest silence of the peer */
    bool golive_pending;                /* backup: won, go live when drained */
    bool drained;                       /* backup: played all it received */
    FtLiveStream *live;
    uint64_t live_icount;
    double failover_ms;
    QEMUTimer *exit_timer;

    /*
     * Output rule.  Primary: output held until acked reaches its tag;
     * released is how far it was let out.  Backup: output kept back until
     * the primary reports it released (peer_released), in case the
     * primary died before it could.
     */
    GQueue held;
    uint64_t held_bytes;
    uint64_t released;
    uint64_t peer_released;
    /*
     * The disks: the primary sends its description (config) once per
     * connection; the backup checks it (peer_config) against its own
     * before its machine runs.
     */
    char *config;
    bool config_sent;
    char *peer_config;
    Notifier machine_done;
    QEMUBH *release_bh;
    int64_t delays[FT_DELAYS];          /* output held, ns, newest last */
    unsigned ndelays;
    uint64_t held_packets;
    uint64_t held_writes;
    AnnounceTimer announce;
};

static FtChannel *ft_channel;

static void ft_setup_insns(FtChannel *ch);
static void ft_start_arbitration_locked(FtChannel *ch);

/* Instructions executed, as of the newest release of the replay mutex */
static uint64_t ft_icount(FtChannel *ch)
{
    return qatomic_read(&(ch->live ? &ch->live->stream : &ch->stream)->icount);
}

/* Does this side (still) hold back the guest's output? */
static bool ft_holding_state(FtState st)
{
    return st == FT_STATE_WAITING || st == FT_STATE_STREAMING ||
           st == FT_STATE_ARBITRATING || st == FT_STATE_HALTED;
}

static const char *ft_role_name(FtRole role)
{
    return role == FT_ROLE_PRIMARY ? "primary" : "backup";
}

static FtChannelRole ft_role_qapi(FtChannel *ch)
{
    return ch->role == FT_ROLE_PRIMARY ? FT_CHANNEL_ROLE_PRIMARY
                                       : FT_CHANNEL_ROLE_BACKUP;
}

static int64_t now_ns(void)
{
    return qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
}

/* Events: queued by any thread, sent from the main loop. */

static void ft_queue_event(FtChannel *ch, FtEventKind kind,
                           const char *text, uint64_t pos)
{
    FtEvent *ev = g_new0(FtEvent, 1);

    ev->kind = kind;
    ev->text = g_strdup(text);
    ev->pos = pos;
    g_queue_push_tail(&ch->events, ev);
    qemu_bh_schedule(ch->bh);
}

static void ft_release_bh(void *opaque);
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
    error_report("ft: %s: HALTING: %s", ft_role_name(ch->role), reason);
    qapi_event_send_ft_halted(reason);
    /* Give the monitor a moment to deliver the event. */
    ch->exit_timer = timer_new_ms(QEMU_CLOCK_REALTIME, ft_exit_cb, ch);
    timer_mod(ch->exit_timer,
              qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + FT_HALT_EXIT_MS);
}

static void ft_bh(void *opaque)
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
            go_live = ch->golive_pending && ch->drained;
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

/* Socket I/O, without ch->lock */

static int ft_send_frame(int fd, uint8_t type, uint16_t flags, uint32_t gen,
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

static int ft_send_u64(FtChannel *ch, int fd, uint8_t type, uint64_t offset,
                       uint64_t value)
{
    uint8_t p[8];

    ft_put_le64(p, value);
    return ft_send_frame(fd, type, 0, ch->gen, offset, p, sizeof(p));
}

static int ft_read_frame(int fd, FtReader *r, int timeout_ms,
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

static char *ft_read_error(int ret)
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

/* Connection state, with ch->lock held */

static uint64_t ft_position_locked(FtChannel *ch)
{
    return ch->role == FT_ROLE_PRIMARY ? ch->acked : ch->received;
}

/* A frame came from the peer. */
static void ft_heard_locked(FtChannel *ch)
{
    int64_t now = now_ns();

    if (ch->last_rx_ns && now - ch->last_rx_ns > ch->gap_max_ns) {
        ch->gap_max_ns = now - ch->last_rx_ns;
    }
    ch->last_rx_ns = now;
}

/* Backup: drop kept output that the primary is known to have let out. */
static void ft_trim_kept_locked(FtChannel *ch)
{
    FtHeld *h;

    while ((h = g_queue_peek_head(&ch->held)) &&
           (h->tag <= ch->peer_released || ch->held_bytes > FT_KEPT_MAX)) {
        if (h->tag > ch->peer_released) {
            warn_report_once("ft: backup: more than %d bytes of console "
                             "output not known to be released; dropping "
                             "the oldest", (int)FT_KEPT_MAX);
        }
        g_queue_pop_head(&ch->held);
        ch->held_bytes -= h->len;
        g_free(h);
    }
}

/* The peer is gone or broke the protocol. */
static void ft_lost_locked(FtChannel *ch, const char *reason)
{
    if (ch->state != FT_STATE_STREAMING && ch->state != FT_STATE_WAITING) {
        return;
    }
    error_report("ft: %s: %s %s", ft_role_name(ch->role),
                 ch->role == FT_ROLE_PRIMARY ? "lost the backup:" :
                 "lost the primary:", reason);
    ch->lost_ns = now_ns();
    if (ch->lock_dir && ch->state == FT_STATE_STREAMING) {
        /* Nobody goes live or runs on alone without the lock. */
        ch->state = FT_STATE_ARBITRATING;
        ft_start_arbitration_locked(ch);
    } else {
        if (ch->role == FT_ROLE_PRIMARY) {
            error_report("ft: primary: running on unprotected");
            qemu_bh_schedule(ch->release_bh);
        }
        ch->state = FT_STATE_PEER_LOST;
    }
    g_free(ch->error);
    ch->error = g_strdup(reason);
    ft_queue_event(ch, FT_EV_LOST, reason, ft_position_locked(ch));
    if (ch->fd >= 0) {
        shutdown(ch->fd, SHUT_RDWR);
    }
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

static void ft_lost(FtChannel *ch, const char *reason)
{
    qemu_mutex_lock(&ch->lock);
    ft_lost_locked(ch, reason);
    qemu_mutex_unlock(&ch->lock);
}

static void ft_bw_update_locked(FtChannel *ch, uint64_t bytes)
{
    int64_t now = now_ns();

    ch->bw_bytes += bytes;
    if (now - ch->bw_prev_ns >= NANOSECONDS_PER_SECOND) {
        ch->bw_mbps = (ch->bw_bytes - ch->bw_prev_bytes) * 8.0 * 1000.0 /
                      (now - ch->bw_prev_ns);
        ch->bw_prev_bytes = ch->bw_bytes;
        ch->bw_prev_ns = now;
    }
}

/* Grow ch->buf so that it holds @need bytes from ch->base on. */
static void ft_buf_reserve(FtChannel *ch, uint64_t keep_from, size_t need)
{
    size_t drop = keep_from - ch->base;

    if (drop && (drop >= ch->cap / 2 || need > ch->cap)) {
        size_t used = (ch->role == FT_ROLE_PRIMARY ? ch->written
                                                    : ch->received) - ch->base;

        memmove(ch->buf, ch->buf + drop, used - drop);
        ch->base += drop;
        need -= drop;
    }
    if (need > ch->cap) {
        ch->cap = MAX(pow2ceil(need), 256 * KiB);
        ch->buf = g_realloc(ch->buf, ch->cap);
    }
}

/* Handshake, without ch->lock: send our HELLO and check the peer's. */
static int ft_handshake(FtChannel *ch, int fd, FtProto *proto, FtReader *r,
                        char **why)
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
        *why = g_strdup_printf("sending HELLO: %s", strerror(-ret));
        goto out;
    }
    ret = ft_read_frame(fd, r, MAX(FT_HANDSHAKE_MS, ch->timeout_ms), &h,
                        &payload);
    if (ret == 0) {
        *why = g_strdup("no HELLO from the peer");
        ret = -ETIMEDOUT;
        goto out;
    } else if (ret < 0) {
        *why = ft_read_error(ret);
        goto out;
    }
    ret = ft_proto_receive(proto, &h, payload);
    if (ret < 0) {
        *why = g_strdup_printf("handshake refused: %s",
                               ft_proto_strerror(ret));
        goto out;
    }
    /* Anything the peer sent after its HELLO is left in @r for the rx. */
out:
    return ret < 0 ? ret : 0;
}

/* Primary threads */

static void ft_bound_push_locked(FtChannel *ch, uint64_t off)
{
    unsigned i;

    if (ch->bounds_count == FT_BOUNDARIES) {
        /* Fewer boundaries are still correct: replace the newest. */
        i = (ch->bounds_head + ch->bounds_count - 1) % FT_BOUNDARIES;
        ch->bounds[i] = off;
        return;
    }
    i = (ch->bounds_head + ch->bounds_count) % FT_BOUNDARIES;
    ch->bounds[i] = off;
    ch->bounds_count++;
}

/*
 * The next DATA frame: from ch->sent to the furthest commit point within
 * FT_TX_PAYLOAD, or FT_TX_PAYLOAD with FT_FRAME_F_MORE if there is none.
 */
static uint32_t ft_next_frame_locked(FtChannel *ch, uint16_t *flags)
{
    uint64_t limit = ch->sent + FT_TX_PAYLOAD;
    uint64_t end = 0;

    while (ch->bounds_count) {
        uint64_t b = ch->bounds[ch->bounds_head];

        if (b > limit) {
            break;
        }
        end = b;
        ch->bounds_head = (ch->bounds_head + 1) % FT_BOUNDARIES;
        ch->bounds_count--;
    }
    if (end > ch->sent) {
        *flags = 0;
        return end - ch->sent;
    }
    *flags = FT_FRAME_F_MORE;
    return MIN(FT_TX_PAYLOAD, ch->written - ch->sent);
}

static void *ft_primary_tx_thread(void *opaque)
{
    FtChannel *ch = opaque;
    uint8_t *frame = g_malloc(FT_TX_PAYLOAD);
    int64_t last_hb = now_ns();
    int64_t last_data = 0;
    uint64_t hb_released = 0;

    qemu_mutex_lock(&ch->lock);
    while (ch->state == FT_STATE_STREAMING) {
        int fd = ch->fd;
        uint64_t off = ch->sent;
        uint64_t icount = qatomic_read(&ch->stream.icount);
        uint64_t released = ch->released;
        g_autofree char *config = NULL;
        /*
         * Heartbeats go out while data flows too: the backup watches
         * them, and they tell it how far output was released.
         */
        int64_t hb_due = last_hb + ch->heartbeat_ms * SCALE_MS;
        uint16_t flags = 0;
        uint32_t len = 0;
        int ret;

        if (released != hb_released) {
            hb_due = MIN(hb_due, last_hb + FT_REPORT_NS);
        }

        if (ch->config && !ch->config_sent) {
            config = g_strdup(ch->config);
            ch->config_sent = true;
        } else if (ch->sent < ch->written && now_ns() < hb_due) {
            len = ft_next_frame_locked(ch, &flags);
            memcpy(frame, ch->buf + (ch->sent - ch->base), len);
            /* before the send: the ACK may come back at once */
            ch->sent += len;
            ft_proto_sent(&ch->proto, off, len);
            ft_bw_update_locked(ch, len);
        } else if (now_ns() < hb_due && !ch->closing &&
                   ch->sent == ch->written) {
            /* While data flows, poll for more every FT_TX_BATCH_NS. */
            int ms = now_ns() - last_data < 5 * FT_TX_BATCH_NS ?
                     FT_TX_BATCH_NS / SCALE_MS :
                     (hb_due - now_ns()) / SCALE_MS + 1;

            ch->tx_sleeping = true;
            qemu_cond_timedwait(&ch->tx_cond, &ch->lock, ms);
            ch->tx_sleeping = false;
            continue;
        } else if (ch->closing && ch->sent == ch->written) {
            break;
        }
        qemu_mutex_unlock(&ch->lock);

        if (config) {
            ret = ft_send_frame(fd, FT_FRAME_CONFIG, 0, ch->gen, off,
                                (uint8_t *)config, strlen(config));
        } else if (len) {
            ret = ft_send_frame(fd, FT_FRAME_DATA, flags, ch->gen, off,
                                frame, len);
            last_data = now_ns();
        } else {
            uint8_t p[16];

            ft_put_le64(p, icount);
            ft_put_le64(p + 8, released);
            ret = ft_send_frame(fd, FT_FRAME_HEARTBEAT, 0, ch->gen, off,
                                p, sizeof(p));
            last_hb = now_ns();
            hb_released = released;
        }

        qemu_mutex_lock(&ch->lock);
        if (ret < 0) {
            g_autofree char *why = g_strdup_printf("sending: %s",
                                                   strerror(-ret));
            ft_lost_locked(ch, why);
            break;
        }
    }
    qemu_mutex_unlock(&ch->lock);
    g_free(frame);
    return NULL;
}

static void *ft_primary_rx_thread(void *opaque)
{
    FtChannel *ch = opaque;
    FtReader *r = ch->reader;
    int fd = ch->fd;

    for (;;) {
        FtFrameHeader h;
        const uint8_t *payload;
        int ret = ft_read_frame(fd, r, ch->timeout_ms, &h, &payload);

        qemu_mutex_lock(&ch->lock);
        if (ch->state != FT_STATE_STREAMING) {
            qemu_mutex_unlock(&ch->lock);
            break;
        }
        if (ret <= 0) {
            g_autofree char *why = ret == 0 ?
                g_strdup_printf("no ACK or heartbeat for %u ms",
                                ch->timeout_ms) :
                ft_read_error(ret);

            if (ch->closing && ret == FT_SOCK_ERR(EPIPE)) {
                qemu_mutex_unlock(&ch->lock);
                break;
            }
            ft_lost_locked(ch, why);
            qemu_mutex_unlock(&ch->lock);
            break;
        }
        ret = ft_proto_receive(&ch->proto, &h, payload);
        if (ret < 0) {
            g_autofree char *why = g_strdup_printf("protocol error: %s",
                                                   ft_proto_strerror(ret));
            ft_lost_locked(ch, why);
            qemu_mutex_unlock(&ch->lock);
            break;
        }
        ch->acked = ch->proto.tx_acked;
        if (h.len >= 8) {
            ch->peer_icount = ft_get_le64(payload);
        }
        ft_heard_locked(ch);
        if (!g_queue_is_empty(&ch->held) &&
            ((FtHeld *)g_queue_peek_head(&ch->held))->tag <= ch->acked) {
            qemu_bh_schedule(ch->release_bh);
        }
        qemu_cond_broadcast(&ch->cond);
        qemu_mutex_unlock(&ch->lock);
    }
    return NULL;
}

/* Backup thread */

static void *ft_backup_rx_thread(void *opaque)
{
    FtChannel *ch = opaque;
    FtReader *r = ch->reader;
    int fd = ch->fd;
    int64_t last_rx = now_ns();
    int64_t last_tx = 0;
    uint64_t acked = 0;
    uint64_t reported = 0;

    for (;;) {
        FtFrameHeader h;
        const uint8_t *payload;
        int wait_ms = MIN(ch->heartbeat_ms, FT_REPORT_NS / SCALE_MS);
        uint64_t icount;
        int ret;
        uint64_t pos;
        bool delivered = false;

        ret = ft_read_frame(fd, r, r->pos < r->len ? 0 : wait_ms, &h,
                            &payload);
        qemu_mutex_lock(&ch->lock);
        if (ch->state != FT_STATE_STREAMING) {
            qemu_mutex_unlock(&ch->lock);
            break;
        }
        if (ret < 0) {
            g_autofree char *why = ft_read_error(ret);

            ft_lost_locked(ch, why);
            qemu_mutex_unlock(&ch->lock);
            break;
        }
        if (ret == 0) {
            if (now_ns() - last_rx > ch->timeout_ms * SCALE_MS) {
                g_autofree char *why =
                    g_strdup_printf("no data or heartbeat for %u ms",
                                    ch->timeout_ms);

                ft_lost_locked(ch, why);
                qemu_mutex_unlock(&ch->lock);
                break;
            }
        } else {
            last_rx = now_ns();
            ft_heard_locked(ch);
            ret = ft_proto_receive(&ch->proto, &h, payload);
            if (ret < 0) {
                g_autofree char *why =
                    g_strdup_printf("protocol error: %s",
                                    ft_proto_strerror(ret));

                ft_lost_locked(ch, why);
                qemu_mutex_unlock(&ch->lock);
                break;
            }
            if (h.type == FT_FRAME_DATA) {
                /* Bound what replay has not consumed yet: stop reading. */
                while (ch->received - ch->consumed + h.len >
                       FT_RX_BUFFER_MAX &&
                       ch->state == FT_STATE_STREAMING) {
                    qemu_cond_timedwait(&ch->cond, &ch->lock, 100);
                }
                ft_buf_reserve(ch, ch->consumed,
                               ch->received - ch->base + h.len);
                memcpy(ch->buf + (ch->received - ch->base), payload, h.len);
                ch->received += h.len;
                ft_bw_update_locked(ch, h.len);
                if (!(h.flags & FT_FRAME_F_MORE)) {
                    qatomic_store_release(&ch->avail_end, ch->received);
                    delivered = true;
                }
            } else if (h.type == FT_FRAME_HEARTBEAT && h.len >= 8) {
                ch->peer_icount = ft_get_le64(payload);
                if (h.len >= 16) {
                    ch->peer_released = ft_get_le64(payload + 8);
                    ft_trim_kept_locked(ch);
                }
            } else if (h.type == FT_FRAME_CONFIG) {
                g_free(ch->peer_config);
                ch->peer_config = g_strndup((char *)payload, h.len);
                qemu_cond_broadcast(&ch->cond);
            } else if (h.type == FT_FRAME_END) {
                ch->state = FT_STATE_ENDED;
                info_report("ft: backup: the primary ended the stream at "
                            "offset %" PRIu64, ch->received);
            }
        }
        pos = ch->received;
        if (delivered) {
            qemu_cond_broadcast(&ch->cond);
            if (ch->starved) {
                ch->starved = false;
                qemu_mutex_unlock(&ch->lock);
                qemu_notify_event();
                if (first_cpu) {
                    qemu_cpu_kick(first_cpu);
                }
                qemu_mutex_lock(&ch->lock);
            }
        }
        qemu_mutex_unlock(&ch->lock);
        if (ret > 0 && h.type == FT_FRAME_END) {
            break;
        }

        /*
         * Acknowledge on receipt, once the input read so far is handled;
         * report how far replay got, which the primary's flow control
         * needs, every FT_REPORT_NS while it moves; heartbeat otherwise.
         */
        icount = qatomic_read(&ch->stream.icount);
        if (r->pos >= r->len &&
            (pos != acked ||
             (icount != reported && now_ns() - last_tx >= FT_REPORT_NS) ||
             now_ns() - last_tx >= ch->heartbeat_ms * SCALE_MS)) {
            uint8_t type = pos != acked ? FT_FRAME_ACK : FT_FRAME_HEARTBEAT;

            reported = icount;
            ret = ft_send_u64(ch, fd, type, pos, icount);
            if (ret < 0) {
                g_autofree char *why = g_strdup_printf("sending: %s",
                                                       strerror(-ret));
                ft_lost(ch, why);
                break;
            }
            acked = pos;
            last_tx = now_ns();
        }
    }
    qemu_mutex_lock(&ch->lock);
    qemu_cond_broadcast(&ch->cond);
    qemu_mutex_unlock(&ch->lock);
    qemu_notify_event();
    if (first_cpu) {
        qemu_cpu_kick(first_cpu);
    }
    return NULL;
}

/* Failover: arbitration, going live, the output rule */

/* Let held output out to where it was going, and free it. */
static void ft_emit(FtHeld *h)
{
    if (h->chr) {
        qemu_chr_write_held(h->chr, h->data, h->len);
    } else if (h->cb) {
        h->cb(h->opaque);
    } else {
        struct iovec iov = { .iov_base = h->data, .iov_len = h->len };

        qemu_netfilter_pass_to_next(h->sender, h->flags, &iov, 1, h->nf);
    }
    g_free(h);
}

/*
 * The primary lets out the output whose log the backup acknowledged, or
 * all of it once it runs on alone.  Runs in the main loop, as does every
 * write to a chardev, so held output cannot overtake newer output.
 */
static void ft_release_bh(void *opaque)
{
    FtChannel *ch = opaque;
    GQueue out = G_QUEUE_INIT;
    uint64_t upto;
    FtHeld *h;
    bool all;

    qemu_mutex_lock(&ch->lock);
    if (ch->role != FT_ROLE_PRIMARY || ch->state == FT_STATE_HALTED) {
        qemu_mutex_unlock(&ch->lock);
        return;
    }
    all = !ft_holding_state(ch->state);
    /*
     * Only on fresh news from the backup: a primary that was stalled
     * (SIGSTOP) may have been replaced meanwhile; the receiver decides.
     */
    if (!all && now_ns() - ch->last_rx_ns > ch->timeout_ms * SCALE_MS) {
        qemu_mutex_unlock(&ch->lock);
        return;
    }
    upto = all ? UINT64_MAX : ch->acked;
    while ((h = g_queue_peek_head(&ch->held)) && h->tag <= upto) {
        g_queue_pop_head(&ch->held);
        ch->held_bytes -= h->len;
        g_queue_push_tail(&out, h);
        if (!all) {
            ch->delays[ch->ndelays++ % FT_DELAYS] = now_ns() - h->t_ns;
        }
    }
    qemu_mutex_unlock(&ch->lock);

    while ((h = g_queue_pop_head(&out))) {
        ft_emit(h);
    }

    if (!all) {
        qemu_mutex_lock(&ch->lock);
        ch->released = MAX(ch->released, upto);
        qemu_mutex_unlock(&ch->lock);
    }
}

static bool ft_out_holding(void)
{
    FtChannel *ch = ft_channel;
    bool holding;

    qemu_mutex_lock(&ch->lock);
    holding = ft_holding_state(ch->state) || !g_queue_is_empty(&ch->held);
    qemu_mutex_unlock(&ch->lock);
    return holding;
}

static bool ft_out_hold(Chardev *chr, const uint8_t *buf, int len)
{
    FtChannel *ch = ft_channel;
    FtHeld *h;
    bool playing;

    if (!ch || len <= 0) {
        return false;
    }
    playing = ch->role == FT_ROLE_BACKUP && !ch->live;
    if (!playing && ch->live) {
        return false;
    }
    h = g_malloc0(sizeof(*h) + len);
    h->chr = chr;
    h->len = len;
    memcpy(h->data, buf, len);
    /* Just past the write's CHAR_WRITE event in the log */
    h->tag = replay_stream_tell(&ch->stream);
    h->t_ns = now_ns();

    qemu_mutex_lock(&ch->lock);
    g_queue_push_tail(&ch->held, h);
    ch->held_bytes += len;
    if (playing) {
        ft_trim_kept_locked(ch);
    } else if (!ft_holding_state(ch->state)) {
        qemu_bh_schedule(ch->release_bh);
    }
    qemu_mutex_unlock(&ch->lock);

    /* End the slice soon, so that the log up to here is committed. */
    if (!playing && current_cpu) {
        cpu_exit(current_cpu);
    }
    return true;
}

/*
 * A recorder holds @h, tagged with the log written so far.  Returns false,
 * and frees @h, when nothing holds output any more: it may go at once.
 */
static bool ft_hold_push(FtChannel *ch, FtHeld *h, uint64_t *count)
{
    h->tag = replay_stream_tell(&ch->stream);
    h->t_ns = now_ns();

    qemu_mutex_lock(&ch->lock);
    if (!ft_holding_state(ch->state) && g_queue_is_empty(&ch->held)) {
        qemu_mutex_unlock(&ch->lock);
        g_free(h);
        return false;
    }
    g_queue_push_tail(&ch->held, h);
    ch->held_bytes += h->len;
    (*count)++;
    if (!ft_holding_state(ch->state)) {
        qemu_bh_schedule(ch->release_bh);
    }
    qemu_mutex_unlock(&ch->lock);

    /* End the slice soon, so that the log up to here is committed. */
    if (current_cpu) {
        cpu_exit(current_cpu);
    }
    return true;
}

bool ft_output_available(void)
{
    return ft_channel != NULL;
}

bool ft_output_hold_packet(NetFilterState *nf, NetClientState *sender,
                           unsigned flags, const struct iovec *iov,
                           int iovcnt)
{
    FtChannel *ch = ft_channel;
    size_t len = iov_size(iov, iovcnt);
    FtHeld *h;

    if (!ch || ch->live || !len || len > INT_MAX) {
        return false;
    }
    h = g_malloc0(sizeof(*h) + len);
    h->nf = nf;
    h->sender = sender;
    h->flags = flags;
    h->len = len;
    iov_to_buf(iov, iovcnt, 0, h->data, len);
    return ft_hold_push(ch, h, &ch->held_packets);
}

/* Disk writes wait here until the log up to their issue is acknowledged. */
static bool ft_out_when_safe(QEMUBHFunc *cb, void *opaque)
{
    FtChannel *ch = ft_channel;
    FtHeld *h;

    if (!ch || ch->live) {
        return false;
    }
    h = g_new0(FtHeld, 1);
    h->cb = cb;
    h->opaque = opaque;
    return ft_hold_push(ch, h, &ch->held_writes);
}

void ft_output_forget(NetFilterState *nf)
{
    FtChannel *ch = ft_channel;
    GList *l, *next;

    if (!ch) {
        return;
    }
    qemu_mutex_lock(&ch->lock);
    for (l = ch->held.head; l; l = next) {
        FtHeld *h = l->data;

        next = l->next;
        if (h->nf == nf) {
            ch->held_bytes -= h->len;
            g_queue_delete_link(&ch->held, l);
            g_free(h);
        }
    }
    qemu_mutex_unlock(&ch->lock);
}

static const ReplayOutputOps ft_output_ops = {
    .holding = ft_out_holding,
    .chr_hold = ft_out_hold,
    .when_safe = ft_out_when_safe,
};

/* The primary leaves the backup in an orderly way: END, then close. */
static void ft_detach_end(FtChannel *ch)
{
    uint64_t end;
    int fd;

    /* The sender stops once the state is not streaming. */
    if (ch->tx_started) {
        qemu_thread_join(&ch->tx_thread);
        ch->tx_started = false;
    }
    qemu_mutex_lock(&ch->lock);
    fd = ch->fd;
    end = ch->sent;
    qemu_mutex_unlock(&ch->lock);
    if (fd >= 0) {
        ft_send_frame(fd, FT_FRAME_END, 0, ch->gen, end, NULL, 0);
        shutdown(fd, SHUT_RDWR);
    }
}

static void ft_arb_decided(FtChannel *ch, bool won, const char *holder)
{
    bool detach = false;

    qemu_mutex_lock(&ch->lock);
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

        ch->state = FT_STATE_HALTED;
        ft_queue_event(ch, FT_EV_HALT, why, 0);
        if (ch->fd >= 0) {
            shutdown(ch->fd, SHUT_RDWR);
        }
    } else if (ch->role == FT_ROLE_PRIMARY) {
        info_report("ft: primary: won the lock of generation %u; running on "
                    "alone, unprotected", ch->gen);
        detach = ch->detaching;
        ch->state = FT_STATE_LIVE;
        ft_queue_event(ch, FT_EV_ALONE, NULL, ft_icount(ch));
        qemu_bh_schedule(ch->release_bh);
    } else {
        info_report("ft: backup: won the lock of generation %u; going live "
                    "once all log received is played", ch->gen);
        ch->golive_pending = true;
        if (ch->fd >= 0) {
            /* A planned switch-over: let the primary go now. */
            shutdown(ch->fd, SHUT_RDWR);
        }
        qemu_bh_schedule(ch->bh);
    }
    qemu_cond_broadcast(&ch->cond);
    qemu_cond_broadcast(&ch->tx_cond);
    qemu_mutex_unlock(&ch->lock);
    if (detach) {
        ft_detach_end(ch);
    }
}

static void *ft_arb_thread(void *opaque)
{
    FtChannel *ch = opaque;
    g_autofree char *path = ft_lock_path(ch->lock_dir, ch->vm_id, ch->gen);
    g_autofree char *last = NULL;
    FtLockRecord mine = { 0 };
    FtLockRecord holder;

    memcpy(mine.vm_id, ch->vm_id, sizeof(mine.vm_id));
    mine.epoch = ch->gen;
    mine.role = ch->role;
    mine.nonce = ((uint64_t)g_random_int() << 32) | g_random_int();
    mine.pid = getpid();
    mine.time_ns = g_get_real_time() * 1000;
    if (gethostname(mine.host, sizeof(mine.host) - 1) < 0) {
        pstrcpy(mine.host, sizeof(mine.host), "unknown");
    }
    if (!ch->lock_dir) {
        /* Only a detach without rrlock gets here: nothing to win. */
        ft_arb_decided(ch, true, "nobody (no rrlock)");
        return NULL;
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

        r = ft_lock_test_and_set(ch->lock_dir, &mine, &holder, &err);
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
    return NULL;
}

static void ft_start_arbitration_locked(FtChannel *ch)
{
    if (ch->arb_started) {
        return;
    }
    if (ch->lock_dir) {
        error_report("ft: %s: arbitrating for generation %u on %s",
                     ft_role_name(ch->role), ch->gen, ch->lock_dir);
    }
    ch->arb_started = true;
    qemu_thread_create(&ch->arb_thread, "ft-arb", ft_arb_thread, ch,
                       QEMU_THREAD_DETACHED);
}

static int ft_live_write(ReplayStream *s, const uint8_t *buf, size_t len)
{
    /* Unprotected: the log goes nowhere until a new backup comes. */
    return 0;
}

static void ft_live_close(ReplayStream *s)
{
    FtLiveStream *ls = container_of(s, FtLiveStream, stream);
    FtChannel *ch = ls->ch;

    ch->stream.ops->close(&ch->stream);
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
    g_autofree char *name = g_strdup_printf("%s (live)", ch->stream.name);
    FtLiveStream *ls = g_new0(FtLiveStream, 1);
    Error *err = NULL;
    GQueue kept = G_QUEUE_INIT;
    int64_t own_rt;
    FtHeld *h;
    double ms;

    if (runstate_is_running()) {
        vm_stop(RUN_STATE_PAUSED);
    }
    replay_stream_init(&ls->stream, &ft_live_ops, name, true);
    ls->stream.base = replay_stream_tell(&ch->stream);
    ls->ch = ch;
    own_rt = cpu_get_clock();
    if (!replay_go_live(&ls->stream, &err)) {
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
    ch->live = ls;
    ch->live_icount = qatomic_read(&ch->stream.icount);
    qatomic_set(&ls->stream.icount, ch->live_icount);
    ch->golive_pending = false;
    ch->state = FT_STATE_LIVE;
    ms = (now_ns() - ch->lost_ns) / (double)SCALE_MS;
    ch->failover_ms = ms;
    kept = ch->held;
    g_queue_init(&ch->held);
    ch->held_bytes = 0;
    qemu_mutex_unlock(&ch->lock);

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
    qemu_announce_self(&ch->announce, migrate_announce_params());
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
    g_autofree char *why = NULL;
    FtProto proto;
    FtReader *r;
    int fd = sioc->fd;

    qemu_mutex_lock(&ch->lock);
    if (ch->state != FT_STATE_WAITING) {
        const char *st = FtState_str(ch->state);

        qemu_mutex_unlock(&ch->lock);
        error_setg(errp, "refusing connection from %s: channel is %s%s",
                   peer, st, ch->state == FT_STATE_STREAMING ?
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
    if (ft_handshake(ch, fd, &proto, r, &why) < 0) {
        ft_frame_decoder_destroy(&r->dec);
        g_free(r);
        error_setg(errp, "connection with %s refused: %s", peer, why);
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
    ch->state = FT_STATE_STREAMING;
    ch->config_sent = false;
    ch->last_rx_ns = now_ns();
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

static bool ft_connect(FtChannel *ch, Error **errp)
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
            while (ch->state == FT_STATE_WAITING) {
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

/* ReplayStream ops */

static int ft_write(ReplayStream *s, const uint8_t *buf, size_t len)
{
    FtChannel *ch = container_of(s, FtChannel, stream);

    qemu_mutex_lock(&ch->lock);
    if (ch->state == FT_STATE_WAITING && !ch->wait &&
        ch->written + len - ch->base > ch->max_lag_bytes) {
        ft_lost_locked(ch, "no backup connected before the log outgrew "
                       "rrlagbytes");
    }
    if (ch->state == FT_STATE_WAITING || ch->state == FT_STATE_STREAMING) {
        ft_buf_reserve(ch, ch->acked, ch->written - ch->base + len);
        memcpy(ch->buf + (ch->written - ch->base), buf, len);
        ch->written += len;
        ft_bound_push_locked(ch, ch->written);
        /*
         * Wake the sender at most every FT_TX_BATCH_NS, or once a frame's
         * worth is pending: tens of thousands of commits a second must
         * not each cost a thread switch.  While data flows the sender
         * polls every FT_TX_BATCH_NS by itself.
         */
        if (ch->state == FT_STATE_STREAMING && ch->tx_sleeping) {
            int64_t now = now_ns();

            /* Held output waits for this log: no batching then. */
            if (ch->written - ch->sent >= FT_TX_PAYLOAD ||
                now - ch->tx_wake_ns >= FT_TX_BATCH_NS ||
                !g_queue_is_empty(&ch->held)) {
                ch->tx_wake_ns = now;
                qemu_cond_signal(&ch->tx_cond);
            }
        }
    } else {
        ch->written += len;
        ch->base = ch->written;
    }
    qemu_mutex_unlock(&ch->lock);
    return 0;
}

/*
 * The backup lags too far: in unacknowledged log, or in execution (the
 * icount its replay reached, as of its newest ACK or heartbeat).
 */
static bool ft_over_bound_locked(FtChannel *ch)
{
    uint64_t icount = qatomic_read(&ch->stream.icount);

    return ch->written - ch->acked > ch->max_lag_bytes ||
           (icount > ch->peer_icount &&
            icount - ch->peer_icount > ch->max_lag_insns);
}

static void ft_throttle(ReplayStream *s)
{
    FtChannel *ch = container_of(s, FtChannel, stream);
    int64_t start = 0;

    ft_setup_insns(ch);
    qemu_mutex_lock(&ch->lock);
    while (ch->state == FT_STATE_STREAMING && ft_over_bound_locked(ch) &&
           !qatomic_read(&first_cpu->stop) &&
           !qatomic_read(&first_cpu->exit_request)) {
        if (!start) {
            start = now_ns();
        }
        qemu_cond_timedwait(&ch->cond, &ch->lock, 10);
    }
    if (start) {
        ch->throttle_ns += now_ns() - start;
    }
    qemu_mutex_unlock(&ch->lock);
}

static size_t ft_avail(ReplayStream *s)
{
    FtChannel *ch = container_of(s, FtChannel, stream);
    uint64_t end = qatomic_load_acquire(&ch->avail_end);

    if (end > ch->consumed) {
        return end - ch->consumed;
    }
    qemu_mutex_lock(&ch->lock);
    ch->starved = true;
    if (ch->state != FT_STATE_STREAMING && ch->state != FT_STATE_WAITING &&
        ch->avail_end == ch->consumed && !ch->drained) {
        /*
         * Played everything the primary sent up to its last event
         * boundary: stop there, or go live once the lock is won.  The
         * start of an event cut off by the failure is never played.
         */
        info_report("ft: backup: played all %" PRIu64 " bytes of log "
                    "received up to an event boundary%s", ch->consumed,
                    ch->received > ch->consumed ?
                    "; dropping the incomplete rest" : "");
        ch->drained = true;
        ch->drained_stop = true;
        qemu_bh_schedule(ch->bh);
    }
    qemu_mutex_unlock(&ch->lock);
    return 0;
}

static ssize_t ft_read(ReplayStream *s, uint8_t *buf, size_t len)
{
    FtChannel *ch = container_of(s, FtChannel, stream);
    size_t n;

    qemu_mutex_lock(&ch->lock);
    /* Only the log header is read before data is known to be there. */
    while (ch->avail_end == ch->consumed &&
           (ch->state == FT_STATE_STREAMING ||
            ch->state == FT_STATE_WAITING)) {
        qemu_cond_wait(&ch->cond, &ch->lock);
    }
    n = MIN(len, ch->avail_end - ch->consumed);
    memcpy(buf, ch->buf + (ch->consumed - ch->base), n);
    ch->consumed += n;
    qemu_cond_broadcast(&ch->cond);
    qemu_mutex_unlock(&ch->lock);
    return n;
}

static bool ft_wait(ReplayStream *s, int64_t timeout_ns)
{
    FtChannel *ch = container_of(s, FtChannel, stream);
    int64_t deadline = now_ns() + timeout_ns;
    bool more;

    qemu_mutex_lock(&ch->lock);
    while (ch->avail_end == ch->consumed &&
           ch->state == FT_STATE_STREAMING &&
           !(first_cpu && qatomic_read(&first_cpu->stop)) &&
           !(first_cpu && qatomic_read(&first_cpu->exit_request))) {
        int64_t left = deadline - now_ns();

        if (left <= 0) {
            break;
        }
        qemu_cond_timedwait(&ch->cond, &ch->lock, left / SCALE_MS + 1);
    }
    more = ch->avail_end > ch->consumed || ch->state == FT_STATE_STREAMING ||
           ch->state == FT_STATE_WAITING;
    qemu_mutex_unlock(&ch->lock);
    return more;
}

static void ft_diverged_locked(FtChannel *ch, uint64_t icount,
                               const char *what)
{
    ch->digest_mismatches++;
    if (ch->state == FT_STATE_DIVERGED) {
        return;
    }
    error_report("ft: backup: DIVERGED from the primary at icount %" PRIu64
                 ": %s", icount, what);
    ch->mismatch_icount = icount;
    ch->mismatch = g_strdup(what);
    ch->state = FT_STATE_DIVERGED;
    g_free(ch->error);
    ch->error = g_strdup_printf("diverged: %s", what);
    ft_queue_event(ch, FT_EV_DIVERGED, what, icount);
    /* A diverged backup is of no use to the primary: let it go. */
    if (ch->fd >= 0) {
        shutdown(ch->fd, SHUT_RDWR);
    }
    qemu_cond_broadcast(&ch->cond);
}

static void ft_diverged(ReplayStream *s, const char *msg)
{
    FtChannel *ch = container_of(s, FtChannel, stream);

    qemu_mutex_lock(&ch->lock);
    ft_diverged_locked(ch, s->icount, msg);
    qemu_mutex_unlock(&ch->lock);
}

static void ft_close(ReplayStream *s)
{
    FtChannel *ch = container_of(s, FtChannel, stream);
    int64_t deadline = now_ns() + FT_CLOSE_DRAIN_MS * SCALE_MS;

    qemu_mutex_lock(&ch->lock);
    ch->closing = true;
    if (ch->role == FT_ROLE_PRIMARY && ch->state == FT_STATE_STREAMING) {
        /* Orderly end: everything sent and acknowledged, then END. */
        qemu_cond_broadcast(&ch->tx_cond);
        while (ch->state == FT_STATE_STREAMING && ch->acked < ch->written &&
               now_ns() < deadline) {
            qemu_cond_timedwait(&ch->cond, &ch->lock, 10);
        }
        if (ch->state == FT_STATE_STREAMING && ch->acked == ch->written) {
            int fd = ch->fd;
            uint64_t end = ch->written;

            ch->state = FT_STATE_ENDED;
            qemu_cond_broadcast(&ch->tx_cond);
            qemu_mutex_unlock(&ch->lock);
            if (ch->tx_started) {
                qemu_thread_join(&ch->tx_thread);
                ch->tx_started = false;
            }
            ft_send_frame(fd, FT_FRAME_END, 0, ch->gen, end, NULL, 0);
            qemu_mutex_lock(&ch->lock);
        }
    }
    if (ch->state == FT_STATE_STREAMING || ch->state == FT_STATE_WAITING) {
        ch->state = FT_STATE_ENDED;
    }
    qemu_cond_broadcast(&ch->tx_cond);
    if (ch->fd >= 0) {
        shutdown(ch->fd, SHUT_RDWR);
    }
    if (ch->listener) {
        shutdown(ch->listener->fd, SHUT_RDWR);
    }
    qemu_cond_broadcast(&ch->cond);
    qemu_mutex_unlock(&ch->lock);
    if (ch->tx_started) {
        qemu_thread_join(&ch->tx_thread);
    }
    if (ch->rx_started) {
        qemu_thread_join(&ch->rx_thread);
    }
    /* The accept thread may be blocked in accept(); leave it. */
}

static const ReplayStreamOps ft_primary_ops = {
    .write = ft_write,
    .throttle = ft_throttle,
    .close = ft_close,
};

static const ReplayStreamOps ft_backup_ops = {
    .read = ft_read,
    .avail = ft_avail,
    .wait = ft_wait,
    .diverged = ft_diverged,
    .close = ft_close,
};

/* Divergence digests */

static bool ft_digest_due(uint64_t icount)
{
    FtChannel *ch = ft_channel;

    ft_setup_insns(ch);
    if (!ch->digest_insns || icount < ch->next_digest ||
        qatomic_read(&ch->state) == FT_STATE_LIVE) {
        return false;
    }
    ch->next_digest = icount + ch->digest_insns;
    return true;
}

static size_t ft_digest_compute_for(FtChannel *ch, uint64_t icount,
                                    uint8_t *buf, size_t size)
{
    g_autofree char *text = NULL;
    size_t text_len = 0;
    FILE *f = open_memstream(&text, &text_len);
    GChecksum *c = g_checksum_new(G_CHECKSUM_SHA256);
    uint8_t sum[32];
    gsize sum_len = sizeof(sum);

    assert(size >= FT_DIGEST_SIZE);
    cpu_dump_state(first_cpu, f, CPU_DUMP_FPU);
    fclose(f);
    g_checksum_update(c, (const guchar *)text, text_len);
    g_checksum_get_digest(c, sum, &sum_len);
    memcpy(buf, sum, 16);
    g_checksum_free(c);

    memset(buf + 16, 0, 16);
    if (ch->digest_pages) {
        uint64_t pages = MIN(current_machine->ram_size, 2 * GiB) >> 12;
        g_autofree uint8_t *page = g_malloc(4096);
        uint64_t x = icount ^ 0x9e3779b97f4a7c15ULL;

        c = g_checksum_new(G_CHECKSUM_SHA256);
        for (uint32_t i = 0; i < ch->digest_pages; i++) {
            /* splitmix64: the same pages on both sides */
            uint64_t z = (x += 0x9e3779b97f4a7c15ULL);

            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
            z ^= z >> 31;
            cpu_physical_memory_read((z % pages) << 12, page, 4096);
            g_checksum_update(c, page, 4096);
        }
        sum_len = sizeof(sum);
        g_checksum_get_digest(c, sum, &sum_len);
        memcpy(buf + 16, sum, 16);
        g_checksum_free(c);
    }
    return FT_DIGEST_SIZE;
}

static size_t ft_digest_compute(uint8_t *buf, size_t size)
{
    FtChannel *ch = ft_channel;
    uint64_t icount = ch->next_digest - ch->digest_insns;

    qemu_mutex_lock(&ch->lock);
    ch->digest_checks++;
    ch->digest_last = icount;
    qemu_mutex_unlock(&ch->lock);
    return ft_digest_compute_for(ch, icount, buf, size);
}

static void ft_digest_check(uint64_t icount, const uint8_t *digest,
                            size_t len)
{
    FtChannel *ch = ft_channel;
    uint8_t mine[FT_DIGEST_SIZE];

    ft_digest_compute_for(ch, icount, mine, sizeof(mine));
    qemu_mutex_lock(&ch->lock);
    ch->digest_checks++;
    ch->digest_last = icount;
    if (len != FT_DIGEST_SIZE || memcmp(mine, digest, 16)) {
        ft_diverged_locked(ch, icount, "cpu state differs");
    } else if (memcmp(mine + 16, digest + 16, 16)) {
        ft_diverged_locked(ch, icount, "sampled guest RAM differs");
    }
    qemu_mutex_unlock(&ch->lock);
}

static const ReplayDigestOps ft_digest_ops = {
    .due = ft_digest_due,
    .compute = ft_digest_compute,
    .check = ft_digest_check,
};

/* Configuration */

static bool ft_parse_chardev(FtChannel *ch, const char *id, Error **errp)
{
    QemuOpts *copts = qemu_opts_find(qemu_find_opts("chardev"), id);
    g_autoptr(ChardevBackend) backend = NULL;
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
    if (sock->tls_creds || sock->has_telnet || sock->has_tn3270 ||
        sock->has_websocket || sock->has_reconnect_ms ||
        sock->has_reconnect) {
        error_setg(errp, "rrchardev: chardev '%s': only the address, "
                   "server and wait options are supported", id);
        return false;
    }
    ch->addr = socket_address_flatten(sock->addr);
    ch->server = sock->has_server && sock->server;
    ch->wait = !sock->has_wait || sock->wait;
    if (ch->addr->type == SOCKET_ADDRESS_TYPE_UNIX) {
        ch->addr_str = g_strdup_printf("unix:%s", ch->addr->u.q_unix.path);
    } else {
        ch->addr_str = socket_uri(ch->addr);
    }
    /* The chardev only names the address: do not create it. */
    qemu_opts_del(copts);
    return true;
}

static bool ft_parse_opts(FtChannel *ch, QemuOpts *opts, Error **errp)
{
    uint64_t gen = qemu_opt_get_number(opts, "rrgen", 1);
    uint64_t hb = qemu_opt_get_number(opts, "rrheartbeat", 50);
    uint64_t to = qemu_opt_get_number(opts, "rrtimeout", 300);
    uint64_t pages = qemu_opt_get_number(opts, "rrdigestpages", 0);

    ch->max_lag_ms = qemu_opt_get_number(opts, "rrlag", 1000);
    ch->max_lag_bytes = qemu_opt_get_size(opts, "rrlagbytes", 64 * MiB);
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
    if (ch->digest_ms > 600000 || pages > 1024) {
        error_setg(errp, "rrdigest must be at most 600000 ms and "
                   "rrdigestpages at most 1024");
        return false;
    }
    if (qemu_opt_get(opts, "rrlock")) {
        FtLockRecord rec;
        int err = 0;
        int ret;

        ch->lock_dir = g_strdup(qemu_opt_get(opts, "rrlock"));
        if (buffer_is_zero(ch->vm_id, sizeof(ch->vm_id))) {
            error_setg(errp, "rrlock needs the VM's -uuid: the lock record "
                       "is kept per VM");
            return false;
        }
        ret = ft_lock_check_dir(ch->lock_dir);
        if (ret < 0) {
            error_setg(errp, "rrlock: %s: %s", ch->lock_dir, strerror(-ret));
            return false;
        }
        ret = ft_lock_read(ch->lock_dir, ch->vm_id, gen, &rec, &err);
        if (ret == FT_LOCK_WON) {
            char desc[256];

            ft_lock_describe(&rec, desc, sizeof(desc));
            error_setg(errp, "rrlock: generation %" PRIu64 " of this VM "
                       "was already decided (the lock is held by %s); "
                       "start the pair with a higher rrgen", gen, desc);
            return false;
        } else if (ret != FT_LOCK_ERR_IO || err != ENOENT) {
            g_autofree char *path = ft_lock_path(ch->lock_dir, ch->vm_id,
                                                 gen);

            error_setg(errp, "rrlock: %s: %s", path,
                       ret == FT_LOCK_ERR_IO ? strerror(err) :
                       ft_lock_strerror(ret));
            return false;
        }
    }
    ch->gen = gen;
    ch->heartbeat_ms = hb;
    ch->timeout_ms = to;
    ch->digest_pages = pages;
    return true;
}

/* icount_to_ns() needs the shift, which is set once -icount is parsed. */
static void ft_setup_insns(FtChannel *ch)
{
    uint64_t ns_per_insn;

    if (ch->insns_ready) {
        return;
    }
    ch->insns_ready = true;
    ns_per_insn = MAX(icount_to_ns(1), 1);

    ch->max_lag_insns = ch->max_lag_ms * SCALE_MS / ns_per_insn;
    ch->digest_insns = ch->digest_ms * SCALE_MS / ns_per_insn;
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

    qemu_mutex_lock(&ch->lock);
    if (ch->role == FT_ROLE_PRIMARY) {
        ch->config = g_steal_pointer(&mine);
        qemu_cond_broadcast(&ch->tx_cond);
        qemu_mutex_unlock(&ch->lock);
        return;
    }
    while (!ch->peer_config && (ch->state == FT_STATE_WAITING ||
                                ch->state == FT_STATE_STREAMING)) {
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

ReplayStream *replay_stream_open_channel(const char *chardev, QemuOpts *opts,
                                         bool writer, Error **errp)
{
    FtChannel *ch = g_new0(FtChannel, 1);

    replay_stream_init(&ch->stream, writer ? &ft_primary_ops : &ft_backup_ops,
                       chardev, writer);
    /* Every commit point goes to the channel at once. */
    ch->stream.flush_bytes = 0;
    ch->stream.flush_ns = 0;
    ch->role = writer ? FT_ROLE_PRIMARY : FT_ROLE_BACKUP;
    ch->fd = -1;
    ch->state = FT_STATE_WAITING;
    qemu_mutex_init(&ch->lock);
    qemu_cond_init(&ch->cond);
    qemu_cond_init(&ch->tx_cond);
    g_queue_init(&ch->events);
    g_queue_init(&ch->held);
    ch->bw_prev_ns = now_ns();
    if (qemu_uuid_set) {
        memcpy(ch->vm_id, qemu_uuid.data, sizeof(ch->vm_id));
    }
    if (!ft_parse_opts(ch, opts, errp) ||
        !ft_parse_chardev(ch, chardev, errp)) {
        goto fail;
    }
    g_free(ch->stream.name);
    ch->stream.name = g_strdup_printf("ft:%s", ch->addr_str);
    ch->bh = qemu_bh_new(ft_bh, ch);
    ch->release_bh = qemu_bh_new(ft_release_bh, ch);
    g_queue_init(&ch->held);
    replay_set_output_ops(&ft_output_ops);
    ft_channel = ch;
    replay_set_digest_ops(&ft_digest_ops);

    /*
     * The backup needs the log from the start, so it always waits for
     * the primary.  The primary waits for the backup unless wait=off;
     * then it buffers the log until a backup comes, up to rrlagbytes.
     */
    if (!writer) {
        ch->wait = true;
    }
    if (!ft_connect(ch, errp)) {
        goto fail;
    }
    ch->machine_done.notify = ft_machine_done;
    qemu_add_machine_init_done_notifier(&ch->machine_done);
    return &ch->stream;

fail:
    ft_channel = NULL;
    replay_set_digest_ops(NULL);
    replay_set_output_ops(NULL);
    /* Leave the rest to process exit: startup fails after this. */
    return NULL;
}

/* QMP */

static int ft_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return x < y ? -1 : x > y;
}

FtInfo *qmp_x_query_ft(Error **errp)
{
    FtChannel *ch = ft_channel;
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
        info->throttle_ms = ch->throttle_ns / SCALE_MS;
        /* execution lag: the backup's icount as of its newest ACK */
        lag = ch->state == FT_STATE_STREAMING && icount > ch->peer_icount ?
              icount - ch->peer_icount : 0;
    } else {
        info->has_log_received = info->has_log_consumed = true;
        info->log_received = ch->received;
        info->log_consumed = ch->consumed;
        /* as of the primary's newest heartbeat */
        lag = ch->peer_icount > icount ? ch->peer_icount - icount : 0;
    }
    info->lag_instructions = lag;
    info->lag_ms = icount_to_ns(lag) / 1e6;
    info->max_lag_ms = ch->max_lag_ms;
    if (now_ns() - ch->bw_prev_ns > 3 * NANOSECONDS_PER_SECOND) {
        ch->bw_mbps = 0;
    }
    info->bandwidth_mbps = ch->bw_mbps;
    info->digest->interval_ms = ch->digest_insns ? ch->digest_ms : 0;
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
    info->heartbeat_gap_max_ms = ch->gap_max_ns / SCALE_MS;
    if (ch->ndelays) {
        unsigned n = MIN(ch->ndelays, FT_DELAYS);
        g_autofree int64_t *d = g_memdup2(ch->delays, n * sizeof(*d));

        qsort(d, n, sizeof(*d), ft_cmp_i64);
        info->has_output_delay_p50_ms = info->has_output_delay_p99_ms = true;
        info->output_delay_p50_ms = d[n / 2] / 1e6;
        info->output_delay_p99_ms = d[MIN(n - 1, n * 99 / 100)] / 1e6;
    }
    if (ch->live) {
        info->has_went_live_icount = info->has_failover_ms = true;
        info->went_live_icount = ch->live_icount;
        info->failover_ms = ch->failover_ms;
    }
    qemu_mutex_unlock(&ch->lock);
    return info;
}

void qmp_x_ft_go_live(Error **errp)
{
    FtChannel *ch = ft_channel;

    if (!ch) {
        error_setg(errp, "the record/replay log is not streamed "
                   "(no rrchardev in -icount)");
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
    info_report("ft: backup: go-live requested");
    ch->arb_manual = true;
    ch->lost_ns = now_ns();
    /* Stop taking log: the receiver ends when the state changes. */
    ch->state = FT_STATE_ARBITRATING;
    ft_start_arbitration_locked(ch);
    qemu_cond_broadcast(&ch->cond);
    qemu_mutex_unlock(&ch->lock);
}

void qmp_x_ft_detach(Error **errp)
{
    FtChannel *ch = ft_channel;

    if (!ch) {
        error_setg(errp, "the record/replay log is not streamed "
                   "(no rrchardev in -icount)");
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
        info_report("ft: primary: detaching the backup");
        ch->detaching = true;
        ch->state = FT_STATE_ARBITRATING;
        ft_start_arbitration_locked(ch);
    } else {
        info_report("ft: backup: detaching from the primary; stopping");
        ch->state = FT_STATE_DETACHED;
        if (ch->fd >= 0) {
            shutdown(ch->fd, SHUT_RDWR);
        }
        if (first_cpu) {
            qemu_cpu_kick(first_cpu);
        }
    }
    qemu_cond_broadcast(&ch->cond);
    qemu_cond_broadcast(&ch->tx_cond);
    qemu_mutex_unlock(&ch->lock);
}
