/*
 * libFuzzer target: QEMU's replay reader (the files of replay/) plays a
 * hostile log.
 *
 * A backup plays whatever log its primary streams.  Whatever the bytes,
 * the reader must end in one of two ways: it plays the events, or it
 * reports the log as corrupt (replay_log_error(), replay_sync_error())
 * naming the event and the instruction count, and stops reading.  It must
 * never overflow a buffer, allocate without bound, assert, abort or hang.
 *
 * The input: one byte of harness settings, then the events of a log, as
 * they follow the 12-byte header of a file recorded with rr=record
 * (tests/fuzz/replay-corpus/ holds such logs of the test guest).  The
 * harness plays them through a memory stream with the ops of a live
 * stream, as the logging channel's backup does: a corrupt event halts
 * replay through the stream's diverged op instead of exiting, which is
 * what lets one process try millions of logs.  The checks themselves are
 * the same for a file.
 *
 * It stands in for the backup's vCPU and main loop: for the next event in
 * the log it calls the reader's entry point that the device or the vCPU
 * would call for that event, with the buffer sizes a device would pass
 * (a random read of 8..64 bytes, a console write of 1..256 bytes, an
 * audio ring, a block read's bounce buffer).  Settings can make it call
 * the wrong entry point now and then: a guest under a hostile primary
 * does something the log does not expect.  Queued events (bottom halves,
 * block requests) that the log names are created as the device would
 * create them.
 *
 * Copyright (c) 2026 The qemu-ft authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/main-loop.h"
#include "qemu/timer.h"
#include "qapi/error.h"
#include "block/block-global-state.h"
#include "chardev/char.h"
#include "net/filter.h"
#include "hw/core/cpu.h"
#include "system/cpus.h"
#include "system/cpu-timers.h"
#include "system/runstate.h"
#include "system/replay.h"
#include "replay/replay-internal.h"
#include "fuzz.h"

/* The longest log one input may be: more finds nothing new. */
#define FUZZ_MAX_STEPS 100000
#define AUDIO_RING 64
/* vCPUs the harness stands in for (EVENT_VCPU names one of them) */
#define FUZZ_VCPUS 4

/* Settings, from the input's first byte */
#define SET_WRONG_CALLS   0x01  /* call a wrong entry point now and then */
#define SET_DIGEST_FAILS  0x02  /* the digest op reports a mismatch */
#define SET_BLOCK_DATA    0x04  /* block requests carry outcomes (ft=on) */
#define SET_OTHER_SIZES   0x08  /* devices ask for other sizes than logged */

static struct {
    const uint8_t *data;
    size_t size, pos;
    uint8_t settings;
    uint64_t icount;        /* the vCPU's instruction counter */
    unsigned diverged;
    GSList *block_data;     /* ReplayBlockData the harness created */
} fz;

/* -- the stream: the input, with a live stream's ops ------------------- */

static ssize_t fuzz_read(ReplayStream *s, uint8_t *buf, size_t len)
{
    size_t n = MIN(len, fz.size - fz.pos);

    if (!n) {
        /* A live stream cut inside an event: a protocol error (ft_read) */
        return -EPROTO;
    }
    memcpy(buf, fz.data + fz.pos, n);
    fz.pos += n;
    return n;
}

static size_t fuzz_avail(ReplayStream *s)
{
    return fz.size - fz.pos;
}

static void fuzz_diverged(ReplayStream *s, const char *msg)
{
    /* Every report names the instruction count, and the event. */
    assert(strstr(msg, "icount") || strstr(msg, "insn total"));
    assert(strstr(msg, "event"));
    fz.diverged++;
    if (getenv("FUZZ_REPLAY_VERBOSE")) {
        fprintf(stderr, "diverged: %s\n", msg);
    }
}

static const ReplayStreamOps fuzz_stream_ops = {
    .read = fuzz_read,
    .avail = fuzz_avail,
    .diverged = fuzz_diverged,
};

static bool fuzz_digest_check(void *opaque, uint64_t icount,
                              const uint8_t *digest, size_t len,
                              Error **errp)
{
    assert(len <= REPLAY_DIGEST_MAX);
    if (fz.settings & SET_DIGEST_FAILS) {
        error_setg(errp, "digest mismatch at icount %" PRIu64, icount);
        return false;
    }
    return true;
}

static const ReplayDigestOps fuzz_digest_ops = {
    .check = fuzz_digest_check,
};

/* -- what QEMU outside replay/ would provide --------------------------- */

CPUTailQ cpus_queue = QTAILQ_HEAD_INITIALIZER(cpus_queue);
ICountMode use_icount = ICOUNT_PRECISE;

int64_t icount_get_raw(void)
{
    return fz.icount;
}

bool qemu_cpu_is_self(CPUState *cpu)
{
    return true;
}

void qemu_cpu_kick(CPUState *cpu)
{
}

static CPUState fuzz_vcpus[FUZZ_VCPUS];

CPUState *qemu_get_cpu(int index)
{
    return index >= 0 && index < FUZZ_VCPUS ? &fuzz_vcpus[index] : NULL;
}

bool cpu_has_work(CPUState *cpu)
{
    return true;
}

void qemu_notify_event(void)
{
}

void cpu_set_clock(int64_t new_clock)
{
}

void qemu_system_shutdown_request(ShutdownCause reason)
{
}

void qemu_system_vmstop_request_prepare(void)
{
}

void qemu_system_vmstop_request(RunState state)
{
}

/* Stopped and started by the log's events (replay-runstate.c) */
static bool fuzz_running = true;

bool runstate_is_running(void)
{
    return fuzz_running;
}

void runstate_replay_enable(void)
{
}

void replay_vmstate_register(void)
{
}

void aio_bh_call(QEMUBH *bh)
{
}

void qemu_bh_schedule(QEMUBH *bh)
{
}

void aio_bh_schedule_oneshot_full(AioContext *ctx, QEMUBHFunc *cb,
                                  void *opaque, const char *name)
{
}

void bdrv_drain_all(void)
{
}

int bdrv_flush_all(void)
{
    return 0;
}

void timer_mod_ns(QEMUTimer *ts, int64_t expire_time)
{
}

int64_t qemu_clock_get_ns(QEMUClockType type)
{
    return 0;
}

/* The log's stops and starts (replay-runstate.c), taken as the main loop */
int vm_stop(RunState state)
{
    fuzz_running = false;
    return 0;
}

void vm_start(void)
{
    fuzz_running = true;
}

void timer_mod(QEMUTimer *ts, int64_t expire_time)
{
}

void timer_init_full(QEMUTimer *ts, QEMUTimerListGroup *timer_list_group,
                     QEMUClockType type, int scale, int attributes,
                     QEMUTimerCB *cb, void *opaque)
{
}

QEMUBH *qemu_bh_new_full(QEMUBHFunc *cb, void *opaque, const char *name,
                         MemReentrancyGuard *reentrancy_guard)
{
    return NULL;
}

void qemu_chr_be_write_impl(Chardev *s, const uint8_t *buf, int len)
{
    assert(len >= 0 && len <= REPLAY_ARRAY_MAX);
    if (len) {
        /* every byte the reader hands over must be there to read */
        volatile uint8_t x = buf[0] ^ buf[len - 1];
        (void)x;
    }
}

ssize_t qemu_netfilter_pass_to_next(NetClientState *sender, unsigned flags,
                                    const struct iovec *iov, int iovcnt,
                                    void *opaque)
{
    assert(iovcnt == 1 && iov->iov_len <= REPLAY_ARRAY_MAX);
    return iov->iov_len;
}

void qemu_input_event_send_impl(QemuConsole *src, InputEvent *evt)
{
}

void qemu_input_event_sync_impl(void)
{
}

void audio_sample_from_uint64(void *samples, int pos,
                              uint64_t left, uint64_t right)
{
    uint64_t *ring = samples;

    assert(pos >= 0 && pos < AUDIO_RING);
    ring[2 * pos] = left;
    ring[2 * pos + 1] = right;
}

void audio_sample_to_uint64(const void *samples, int pos,
                            uint64_t *left, uint64_t *right)
{
    g_assert_not_reached();     /* recording only */
}

/* -- the vCPU and the devices ------------------------------------------ */

static uint8_t pick(unsigned step, unsigned mod)
{
    /* a byte of the input, as a deterministic choice for this step */
    return fz.size ? fz.data[(step * 31u) % fz.size] % mod : 0;
}

/*
 * The big-endian dword @off bytes past the next unread byte: a size the
 * device asks for is the one the log holds, as when it was recorded,
 * unless the settings say to ask for another.
 */
static uint32_t peek_dword(size_t off)
{
    uint64_t at = replay_stream_tell(replay_stream) + off;

    if (at + 4 > fz.size) {
        return 0;
    }
    return ldl_be_p(fz.data + at);
}

static size_t device_size(unsigned step, size_t logged, size_t max)
{
    size_t size = logged;

    if (fz.settings & SET_OTHER_SIZES) {
        switch (pick(step, 4)) {
        case 0:
            size = logged ? logged - 1 : 0;
            break;
        case 1:
            size = logged + 1;
            break;
        case 2:
            size = pick(step + 3, 64);
            break;
        }
    }
    return MIN(size, max);
}

static void fuzz_oneshot(void *opaque)
{
}

/*
 * A block request or bottom half the log says completed, but that nobody
 * queued: the device creates it, with the id the log named.
 */
static void fuzz_queue_named_event(unsigned kind, unsigned step)
{
    uint64_t id = replay_state.read_event_id;
    ReplayBlockData *d = NULL;

    if (kind == REPLAY_ASYNC_EVENT_BLOCK && (fz.settings & SET_BLOCK_DATA)) {
        uint32_t len = peek_dword(4);   /* after the result */

        d = g_new0(ReplayBlockData, 1);
        /* A read, if what follows looks like its data; else a write */
        if (len && len % 512 == 0 && len <= 1 * MiB) {
            d->len = device_size(step, len, 1 * MiB);
            d->buf = g_malloc(d->len);
        }
        fz.block_data = g_slist_prepend(fz.block_data, d);
    }
    if (kind == REPLAY_ASYNC_EVENT_BH_ONESHOT) {
        /* a one-shot bottom half is its callback */
        replay_add_event(kind, (void *)fuzz_oneshot, d, id);
    } else {
        replay_add_event(kind, (void *)&fz, d, id);
    }
}

static void fuzz_async(unsigned step)
{
    unsigned kind = replay_state.data_kind - EVENT_ASYNC;
    unsigned before = replay_state.current_event;

    replay_async_events();
    if (!replay_halted && replay_state.current_event == before &&
        replay_state.data_kind == EVENT_ASYNC + kind &&
        (kind == REPLAY_ASYNC_EVENT_BH ||
         kind == REPLAY_ASYNC_EVENT_BH_ONESHOT ||
         kind == REPLAY_ASYNC_EVENT_BLOCK)) {
        fuzz_queue_named_event(kind, step);
        replay_async_events();
    }
}

static void fuzz_consume(unsigned kind, unsigned step)
{
    switch (kind) {
    case EVENT_INSTRUCTION: {
        int n = replay_get_instructions();

        assert(n >= 0);
        fz.icount += n;
        replay_account_executed_instructions();
        break;
    }
    case EVENT_INTERRUPT:
        replay_interrupt();
        break;
    case EVENT_EXCEPTION:
        replay_exception();
        break;
    case EVENT_ASYNC ... EVENT_ASYNC_LAST:
        fuzz_async(step);
        break;
    case EVENT_SHUTDOWN ... EVENT_SHUTDOWN_LAST:
        replay_next_event_is(EVENT_INSTRUCTION);
        break;
    case EVENT_CHAR_WRITE: {
        int len = device_size(step, MAX(peek_dword(0), peek_dword(4)),
                              4096), res, offset;

        replay_char_write_event_load(len, &res, &offset);
        assert(offset >= 0 && offset <= len && res <= len);
        break;
    }
    case EVENT_CHAR_READ_ALL:
    case EVENT_CHAR_READ_ALL_ERROR: {
        int len = device_size(step, peek_dword(0), 4096);
        g_autofree uint8_t *buf = g_malloc(len);
        int res = replay_char_read_all_load(buf, len);

        assert(res <= len);
        break;
    }
    case EVENT_AUDIO_OUT: {
        size_t played = 0, max = device_size(step, peek_dword(4), 4096);

        replay_audio_out(&played, max);
        assert(played <= max);
        break;
    }
    case EVENT_AUDIO_IN: {
        g_autofree uint64_t *ring = g_new0(uint64_t, 2 * AUDIO_RING);
        size_t recorded = 0, wpos = 0;

        replay_audio_in(&recorded, ring, &wpos, AUDIO_RING);
        assert(recorded <= AUDIO_RING && wpos < AUDIO_RING);
        break;
    }
    case EVENT_RANDOM: {
        size_t len = device_size(step, peek_dword(4), 64);
        g_autofree uint8_t *buf = g_malloc(len);

        replay_read_random(buf, len);
        break;
    }
    case EVENT_CLOCK ... EVENT_CLOCK_LAST:
        replay_read_clock(kind - EVENT_CLOCK, fz.icount);
        break;
    case EVENT_CHECKPOINT ... EVENT_CHECKPOINT_LAST:
        replay_checkpoint(kind - EVENT_CHECKPOINT);
        break;
    case EVENT_DIGEST:
        /* only right after the vCPU's warp-account checkpoint */
        replay_checkpoint(CHECKPOINT_CLOCK_WARP_ACCOUNT);
        break;
    case EVENT_VCPU:
        /* before a vCPU runs; the one the log named, or another */
        replay_vcpu_turn(qemu_get_cpu(pick(step, FUZZ_VCPUS)));
        break;
    case EVENT_VM_STOP:
    case EVENT_VM_START:
        /* the main loop, once the vCPU stopped at one */
        replay_run_vm_events();
        break;
    default:
        g_assert_not_reached();
    }
}

static void fuzz_reset(const uint8_t *data, size_t size)
{
    memset(&fz, 0, sizeof(fz));
    fuzz_running = true;
    fz.settings = data[0];
    fz.data = data + 1;
    fz.size = size - 1;

    replay_mode = REPLAY_MODE_PLAY;
    replay_halted = false;
    memset(&replay_state, 0, sizeof(replay_state));
    replay_state.data_kind = -1;
    replay_init_events();
    replay_enable_events();
    replay_stream = g_new0(ReplayStream, 1);
    replay_stream_init(replay_stream, &fuzz_stream_ops, "fuzz", false);
    replay_set_digest_ops(&fuzz_digest_ops, NULL);
}

static void fuzz_free_block_data(gpointer p)
{
    ReplayBlockData *d = p;

    g_free(d->buf);
    g_free(d);
}

static void fuzz_finish(void)
{
    replay_finish_events();
    replay_stream_close(replay_stream);
    replay_stream = NULL;
    g_slist_free_full(fz.block_data, fuzz_free_block_data);
    fz.block_data = NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static ReplayNetState *filters[2];
    int i;

    for (i = 0; i < FUZZ_VCPUS; i++) {
        fuzz_vcpus[i].cpu_index = i;
    }

    replay_mode = REPLAY_MODE_PLAY;
    replay_mutex_init();        /* and keep it: one thread, as at start-up */
    /* Two serial ports and two network filters, as a device model has */
    for (i = 0; i < 2; i++) {
        replay_register_char_driver(g_new0(Chardev, 1));
        filters[i] = replay_register_net(g_new0(NetFilterState, 1));
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned step, stalls = 0;

    if (size < 1) {
        return 0;
    }
    fuzz_reset(data, size);
    replay_fetch_data_kind();
    for (step = 0; step < FUZZ_MAX_STEPS && !replay_halted; step++) {
        unsigned kind = replay_state.data_kind;
        uint64_t at = replay_stream_tell(replay_stream);
        unsigned event = replay_state.current_event;
        int insns = replay_state.instruction_count;

        if (kind == EVENT_WAIT || kind == EVENT_END) {
            break;      /* the end of what was sent, or of the log */
        }
        assert(kind < EVENT_COUNT);
        if ((fz.settings & SET_WRONG_CALLS) && pick(step, 5) == 0) {
            kind = pick(step + 7, EVENT_COUNT - 1);
        }
        fuzz_consume(kind, step);
        /*
         * Nothing consumed: the player waits for something the guest or
         * a device has not done yet.  A real backup waits too (and its
         * primary's lag bound holds the primary); here the input ends.
         */
        if (replay_stream_tell(replay_stream) == at &&
            replay_state.current_event == event &&
            replay_state.instruction_count == insns && ++stalls > 3) {
            break;
        }
    }
    if (getenv("FUZZ_REPLAY_VERBOSE")) {
        fprintf(stderr, "%u steps, %u events, icount %" PRIu64 ", %" PRIu64
                " of %zu bytes, %s\n", step, replay_state.current_event,
                fz.icount, replay_stream_tell(replay_stream), fz.size,
                replay_halted ? "halted" : "not halted");
    }
    fuzz_finish();
    return 0;
}
