/*
 * FT logging channel: the state shared by its files
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
 * The files, one concern each:
 *   ft-options.c    -icount rr* options, the chardev, opening the channel,
 *                   the disks' CONFIG check once the machine is built
 *   ft-transport.c  connect, accept, handshake, frame I/O: every socket
 *                   call of the channel
 *   ft-stream.c     the ReplayStream ops: log buffer, flow control
 *   ft-primary.c    the primary's sender and receiver threads
 *   ft-backup.c     the backup's receiver thread
 *   ft-output.c     the output rule: held output and its release
 *   ft-failover.c   the state machine, events, arbitration, go-live,
 *                   halt, detach
 *   ft-digest.c     divergence digests
 *   ft-qmp.c        x-query-ft, x-ft-go-live, x-ft-detach
 *
 * Locking: each field of FtChannel says who owns it.  Most are under
 * ch->lock; no socket I/O is done with it held.  The replay core calls
 * the stream ops with the replay mutex held (write, avail, read,
 * diverged) or with no lock (throttle, wait).  Events go to the main
 * loop through a BH.  Lock order: the replay mutex, then ch->lock;
 * ch->join_lock is never taken with ch->lock held.
 */

#ifndef FT_INTERNAL_H
#define FT_INTERNAL_H

#include "qapi/qapi-types-ft.h"
#include "qapi/qapi-types-sockets.h"
#include "qemu/thread.h"
#include "qemu/timer.h"
#include "qemu/units.h"
#include "chardev/char.h"
#include "io/channel-socket.h"
#include "net/announce.h"
#include "net/filter.h"
#include "system/replay.h"
#include "ft-lock.h"
#include "system/replay-stream.h"
#include "ft-frame.h"
#include "ft-proto.h"

/* Must follow REPLAY_VERSION in replay/replay-internal.h: in the HELLO. */
#define FT_REPLAY_VERSION       0xe0200f

#define FT_TX_PAYLOAD           (256 * KiB)
/* Default bound of the backup's log received but not yet replayed */
#define FT_RX_BUFFER_DEFAULT    (256 * MiB)
/* Default cap of the primary's held output: the vCPU stops there */
#define FT_HELD_DEFAULT         (16 * MiB)
#define FT_BOUNDARIES           8192
#define FT_HANDSHAKE_MS         10000
/* Handshakes in progress at once; later connections are refused */
#define FT_MAX_HANDSHAKES       4
#define FT_CLOSE_DRAIN_MS       2000
#define FT_DIGEST_SIZE          32
/* ft_read_frame(): socket errors, apart from the frame decoder's */
#define FT_SOCK_ERR(e)          (-1000 - (e))
/*
 * A backup reports how far its replay got this often while it moves: the
 * primary's lag bound (rrlag) acts on that report.  2 ms cut the stalls
 * under a tight bound but cost the backup's core under network load
 * (docs/design-logging-channel.md, 2026-12-07).
 */
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
    FT_EV_VERIFIED,         /* the backup passed its first check */
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

/*
 * A ReplayStream handed to the replay core, which frees it when it closes
 * it: the channel's own, and the sink a backup records into once it went
 * live.  The channel lives apart, and is freed by ft_channel_free().
 */
typedef struct FtStream {
    ReplayStream stream;
    FtChannel *ch;
} FtStream;

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
    Error *err;             /* why the last read failed (FT_SOCK_ERR(EIO)) */
} FtReader;

/*
 * Owners, in the comment next to each field:
 *   fixed     set while the channel is opened (main thread, before any
 *             other thread of the channel exists), read-only after
 *   lock      ch->lock, for reads and writes
 *   join      ch->join_lock
 *   BQL       the main loop, with the BQL held
 *   vCPU      the vCPU thread (the first CPU's) alone
 *   rx        the receiver thread of the connection, alone
 *   atomic    written under ch->lock, and read without it only with
 *             qatomic_read() or qatomic_load_acquire()
 */
struct FtChannel {
    /*
     * The replay core's stream (replay mutex).  The core frees it when it
     * closes it, unless the backup went live: then the core holds @live
     * instead and this one is the channel's to free.
     */
    FtStream *stream;

    /* Configuration */
    FtRole role;                    /* fixed */
    uint32_t gen;                   /* fixed */
    uint8_t vm_id[16];              /* fixed */
    SocketAddress *addr;            /* fixed */
    char *addr_str;                 /* fixed */
    bool server;                    /* fixed */
    bool wait;                      /* fixed */
    bool insecure;                  /* fixed: rrinsecure */
    /*
     * Backup: joins a running primary (rrjoin=on): its state comes by
     * migration, and it takes the generation of the primary's HELLO
     * (gen is then set in the first handshake, before anything reads it).
     */
    bool join;                      /* fixed */
    bool joined;                    /* lock: the state was loaded */
    /*
     * Primary: a channel that x-ft-protect opened, not yet the replay
     * core's stream (until the switchover): losing its peer then ends
     * the protection, and decides no lock.
     */
    bool pre_switch;                /* lock */
    char *tls_creds;                /* fixed: the chardev's tls-creds */
    char *tls_authz;                /* fixed: the chardev's tls-authz */
    char *tls_hostname;             /* fixed: the server name a client checks */
    uint32_t heartbeat_ms;          /* fixed */
    uint32_t timeout_ms;            /* fixed */
    uint64_t max_lag_ms;            /* fixed */
    uint64_t max_lag_bytes;         /* fixed */
    uint64_t held_max;              /* fixed: rrheldbytes */
    uint64_t rx_max;                /* fixed: rrbufbytes */
    uint64_t digest_ms;             /* fixed */
    uint32_t digest_pages;          /* fixed */
    /*
     * Derived from the icount shift on first use (ft_setup_insns()), by
     * the throttle and digest ops: on the vCPU thread only.
     */
    bool insns_ready;               /* vCPU */
    uint64_t max_lag_insns;         /* vCPU */
    uint64_t digest_insns;          /* vCPU; QMP reads it with qatomic_read */

    /* Threads */
    QIOChannelSocket *listener;     /* fixed */
    QemuThread accept_thread;       /* fixed; joined by ft_teardown() */
    bool accept_started;            /* fixed */
    /*
     * Connections in their handshake, each in a detached ft-handshake
     * thread that holds a reference and removes it here when done.
     */
    GPtrArray *handshaking;         /* lock */
    QemuThread rx_thread;           /* lock; joined by ft_close() */
    bool rx_started;                /* lock */
    QemuMutex join_lock;            /* serialises joining the sender */
    /*
     * The sender: set with ch->lock held by ft_start_threads() before the
     * state becomes streaming; joined (ft_join_tx()) once it left it,
     * under join_lock.
     */
    QemuThread tx_thread;
    bool tx_started;
    QEMUBH *bh;                     /* fixed */

    QemuMutex lock;
    QemuCond cond;                  /* with lock */
    QemuCond tx_cond;               /* with lock: wakes the primary's sender */
    bool tx_sleeping;               /* lock */
    int64_t tx_wake_ns;             /* lock */
    /* atomic: changed only by ft_set_state(), with ch->lock held */
    FtState state;
    char *error;                    /* lock */
    QIOChannelSocket *conn;         /* lock */
    /*
     * The connection's I/O channel: @conn itself, or a TLS channel over
     * it.  Set once per connection with ch->lock held, and holds its
     * reference until the channel is freed; the threads copy it at start.
     */
    QIOChannel *ioc;                /* lock */
    char *peer_str;                 /* lock */
    FtProto proto;                  /* lock */
    FtReader *reader;               /* lock to attach; then rx */
    bool closing;                   /* lock */

    /* The log buffer: buf[0] is at log offset base. */
    uint8_t *buf;                   /* lock */
    size_t cap;                     /* lock */
    uint64_t base;                  /* lock */

    /* Primary: [base, written) buffered, acked <= sent <= written */
    uint64_t written;               /* lock */
    uint64_t sent;                  /* lock */
    uint64_t acked;                 /* lock */
    uint64_t bounds[FT_BOUNDARIES]; /* lock: commit points not yet sent */
    unsigned bounds_head;           /* lock */
    unsigned bounds_count;          /* lock */
    uint64_t throttle_ns;           /* lock */

    /* Backup: [base, received) buffered, consumed <= avail_end */
    uint64_t received;              /* lock */
    /*
     * atomic: stored with qatomic_store_release() under ch->lock by the
     * receiver; ft_avail() reads it with qatomic_load_acquire() alone.
     */
    uint64_t avail_end;
    /*
     * lock, and the replay mutex to write (ft_read()): readers hold one
     * of them (ft_avail() only the replay mutex).
     */
    uint64_t consumed;
    bool read_started;              /* replay mutex: ft_read() returned */
    int64_t startup_deadline;       /* main thread, before the machine */
    bool starved;                   /* lock */
    bool drained_stop;              /* lock */

    /* Both */
    uint64_t peer_icount;           /* lock: from the peer's ACK/heartbeat */
    uint64_t bw_bytes;              /* lock */
    uint64_t bw_prev_bytes;         /* lock */
    int64_t bw_prev_ns;             /* lock */
    double bw_mbps;                 /* lock */

    /* Divergence checks */
    uint64_t next_digest;           /* vCPU */
    uint64_t digest_checks;         /* lock */
    uint64_t digest_mismatches;     /* lock */
    /*
     * Protected: the backup passed its first check.  The primary knows
     * it once the backup's replay reached past the first digest it
     * logged (verify_icount; without digests, past start_icount).
     */
    bool verified;                  /* lock */
    uint64_t verify_icount;         /* lock */
    uint64_t start_icount;          /* lock */
    uint64_t digest_last;           /* lock */
    uint64_t mismatch_icount;       /* lock */
    char *mismatch;                 /* lock */

    GQueue events;                  /* lock */

    /* Failover (the arbitration thread runs once) */
    char *lock_dir;                 /* fixed */
    QemuThread arb_thread;          /* lock (detached, with arb_started) */
    bool arb_started;               /* lock */
    bool arb_running;               /* lock: until ft-arb's last access */
    bool arb_manual;                /* lock: x-ft-go-live */
    bool detaching;                 /* lock: x-ft-detach on the primary */
    char *lock_holder;              /* lock */
    int64_t lost_ns;                /* lock: when the peer was lost */
    int64_t last_rx_ns;             /* lock: newest frame from the peer */
    int64_t gap_max_ns;             /* lock: longest silence of the peer */
    bool golive_pending;            /* lock: backup won, live when drained */
    bool drained;                   /* lock: backup played all it got */
    /*
     * atomic: set once, NULL to the live stream, by ft_go_live() (BQL)
     * with qatomic_store_release() under ch->lock; the output rule and
     * ft_icount() read it with qatomic_load_acquire() without the lock.
     */
    FtStream *live;
    uint64_t live_icount;           /* lock */
    double failover_ms;             /* lock */
    /*
     * rrfence=on: a backup that went live holds its disk writes in
     * fenced until x-ft-release-writes (ft-fence.c).
     */
    bool fence_writes;              /* fixed: rrfence */
    bool writes_fenced;             /* lock */
    bool fence_refuse;              /* lock: stopped: writes fail at once */
    GQueue fenced;                  /* lock: FtFenced */
    int64_t fence_start_ns;         /* lock */
    double fence_ms;                /* lock */
    VMChangeStateEntry *fence_vmstate;  /* BQL */
    QEMUTimer *exit_timer;          /* BQL */

    /*
     * Output rule.  Primary: output held until acked reaches its tag;
     * released is how far it was let out.  Backup: output kept back until
     * the primary reports it released (peer_released), in case the
     * primary died before it could.
     */
    GQueue held;                    /* lock */
    uint64_t held_bytes;            /* lock */
    bool held_capped;               /* lock: the vCPU stalls at held_max */
    uint64_t held_cap_hits;         /* lock */
    uint64_t released;              /* lock */
    uint64_t peer_released;         /* lock */
    /*
     * The disks: the primary sends its description (config) once per
     * connection; the backup checks it (peer_config) against its own
     * before its machine runs.
     */
    char *config;                   /* lock */
    bool config_sent;               /* lock */
    char *peer_config;              /* lock */
    Notifier machine_done;          /* BQL */
    QEMUBH *release_bh;             /* fixed */
    int64_t delays[FT_DELAYS];      /* lock: output held, ns, newest last */
    unsigned ndelays;               /* lock */
    uint64_t held_packets;          /* lock */
    uint64_t held_writes;           /* lock */
    AnnounceTimer announce;         /* BQL */
    /* A backup that joins: the announce settings, kept for going live */
    AnnounceParameters *join_announce;
};

/*
 * The channel, once opened, or NULL: the opaque of the output ops that
 * it sets in the replay core before any vCPU runs and clears at exit in
 * ft_channel_free().  For QMP and the filters (BQL), which have no
 * opaque of their own.
 */
extern const ReplayOutputOps ft_output_ops;

static inline FtChannel *ft_current(void)
{
    return replay_output_opaque(&ft_output_ops);
}

/* Does this side (still) hold back the guest's output? */
static inline bool ft_holding_state(FtState st)
{
    return st == FT_STATE_WAITING || st == FT_STATE_STREAMING ||
           st == FT_STATE_ARBITRATING || st == FT_STATE_HALTED;
}

/*
 * The silence after which the peer is lost.  While x-ft-protect moves the
 * VM's state, the migration loads both hosts, and a new backup lost then
 * costs nothing (the VM runs on alone): it gets FT_TRANSFER_TIMEOUT_MS.
 */
#define FT_TRANSFER_TIMEOUT_MS 5000

/* A backup whose replay stands still this long with log waiting diverged */
#define FT_STALL_MS 5000
/* ... counted afresh after a gap this long in its watch: it was stopped */
#define FT_STALL_GAP_MS 1000

/* The VM's state is here: a backup from the start, or a joiner's, loaded */
static inline bool ft_has_state(FtChannel *ch)
{
    return !ch->join || qatomic_read(&ch->joined);
}

static inline unsigned ft_silence_ms(FtChannel *ch)
{
    bool transfer = qatomic_read(&ch->pre_switch) || !ft_has_state(ch);

    return transfer ? MAX(ch->timeout_ms, FT_TRANSFER_TIMEOUT_MS)
                    : ch->timeout_ms;
}

/* The bound of each wait at startup: HELLO, the header, CONFIG... */
static inline int ft_startup_wait_ms(FtChannel *ch)
{
    return MAX(FT_HANDSHAKE_MS, ch->timeout_ms);
}

static inline int64_t ft_now_ns(void)
{
    return qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
}

static inline const char *ft_role_name(FtRole role)
{
    return role == FT_ROLE_PRIMARY ? "primary" : "backup";
}

static inline FtChannelRole ft_role_qapi(FtChannel *ch)
{
    return ch->role == FT_ROLE_PRIMARY ? FT_CHANNEL_ROLE_PRIMARY
                                       : FT_CHANNEL_ROLE_BACKUP;
}

/* Instructions executed, as of the newest release of the replay mutex */
static inline uint64_t ft_icount(FtChannel *ch)
{
    FtStream *live = qatomic_load_acquire(&ch->live);

    return qatomic_read(&(live ? live : ch->stream)->stream.icount);
}

/* ft-options.c */
void ft_setup_insns(FtChannel *ch);
FtChannel *ft_channel_new(bool writer);
bool ft_check_transport(FtChannel *ch, const char *what, Error **errp);
void ft_set_address(FtChannel *ch, SocketAddress *addr,
                    const char *tls_creds, const char *tls_hostname);
bool ft_lock_gen_free(FtChannel *ch, uint64_t gen, Error **errp);
void ft_lock_record_init(FtChannel *ch, FtRole role, FtLockRecord *mine);

/* ft-protect.c */
void ft_protect_machine_done(void);
void ft_protect_verified(FtChannel *ch);
void ft_protect_lost(FtChannel *ch, const char *reason);
void ft_join_machine_done(FtChannel *ch);
bool ft_join_gen(FtChannel *ch, uint32_t gen, Error **errp);

/* ft-transport.c: every socket call; none with ch->lock held */
bool ft_connect(FtChannel *ch, Error **errp);
bool ft_send_frame(QIOChannel *ioc, uint8_t type, uint16_t flags,
                   uint32_t gen, uint64_t offset, const void *payload,
                   uint32_t len, Error **errp);
bool ft_send_u64(FtChannel *ch, QIOChannel *ioc, uint8_t type,
                 uint64_t offset, uint64_t value, Error **errp);
int ft_read_frame(QIOChannel *ioc, FtReader *r, int timeout_ms,
                  FtFrameHeader *h, const uint8_t **payload);
FtReader *ft_reader_new(void);
void ft_reader_free(FtReader *r);
char *ft_read_error(FtReader *r, int ret);
/* Wake whoever waits on @ioc, and end the connection (NULL: nothing). */
void ft_shutdown_ioc(QIOChannel *ioc);
void ft_shutdown_listener(FtChannel *ch);

/* ft-stream.c */
extern const ReplayStreamOps ft_primary_ops;
extern const ReplayStreamOps ft_backup_ops;
void ft_heard_locked(FtChannel *ch);
void ft_bw_update_locked(FtChannel *ch, uint64_t bytes);
void ft_buf_reserve(FtChannel *ch, uint64_t keep_from, size_t need);
void ft_join_tx(FtChannel *ch);
void ft_teardown(FtChannel *ch);
void ft_end_handshakes(FtChannel *ch);
void ft_channel_free(FtChannel *ch);

/* ft-primary.c, ft-backup.c */
void *ft_primary_tx_thread(void *opaque);
void *ft_primary_rx_thread(void *opaque);
void *ft_backup_rx_thread(void *opaque);

/* ft-output.c */
void ft_release_bh(void *opaque);
void ft_trim_kept_locked(FtChannel *ch);
void ft_emit(FtHeld *h);

/* ft-failover.c */
bool ft_set_state(FtChannel *ch, FtState old, FtState new);
void ft_bh(void *opaque);
void ft_queue_event(FtChannel *ch, FtEventKind kind, const char *text,
                    uint64_t pos);
void ft_lost_locked(FtChannel *ch, const char *reason);
void ft_lost(FtChannel *ch, const char *reason);
void ft_start_arbitration_locked(FtChannel *ch);

/* ft-digest.c */
extern const ReplayDigestOps ft_digest_ops;
void ft_diverged_locked(FtChannel *ch, uint64_t icount, const char *what);

/* ft-fence.c: a survivor's writes wait until its old primary is fenced */
void ft_fence_begin(FtChannel *ch);
bool ft_fence_hold(FtChannel *ch, QEMUBHFunc *cb, void *opaque, int *ret);
bool ft_fence_busy(FtChannel *ch);
void ft_fence_cleanup(FtChannel *ch);
void ft_fence_info(FtChannel *ch, FtInfo *info);

#endif
