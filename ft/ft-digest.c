/*
 * FT logging channel: divergence digests
 *
 * Copyright (c) 2026 The qemu-ft authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The primary logs digests of the CPU state and of sampled guest RAM;
 * the backup compares them with its own and stops at the first mismatch.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/error-report.h"
#include "hw/core/cpu.h"
#include "hw/boards.h"
#include "exec/cpu-common.h"
#include "ft-internal.h"
#include "trace.h"

void ft_diverged_locked(FtChannel *ch, uint64_t icount,
                        const char *what)
{
    ch->digest_mismatches++;
    if (ch->state == FT_STATE_DIVERGED ||
        !ft_set_state(ch, ch->state, FT_STATE_DIVERGED)) {
        return;
    }
    error_report("ft: backup: DIVERGED from the primary at icount %" PRIu64
                 ": %s", icount, what);
    ch->mismatch_icount = icount;
    ch->mismatch = g_strdup(what);
    g_free(ch->error);
    ch->error = g_strdup_printf("diverged: %s", what);
    ft_queue_event(ch, FT_EV_DIVERGED, what, icount);
    /* A diverged backup is of no use to the primary: let it go. */
    ft_shutdown_ioc(ch->ioc);
    qemu_cond_broadcast(&ch->cond);
}

/* Divergence digests */

static bool ft_digest_due(void *opaque, uint64_t icount)
{
    FtChannel *ch = opaque;

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
    CPUState *cpu;

    assert(size >= FT_DIGEST_SIZE);
    CPU_FOREACH(cpu) {
        cpu_dump_state(cpu, f, CPU_DUMP_FPU);
    }
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

static size_t ft_digest_compute(void *opaque, uint8_t *buf, size_t size)
{
    FtChannel *ch = opaque;
    uint64_t icount = ch->next_digest - ch->digest_insns;

    qemu_mutex_lock(&ch->lock);
    ch->digest_checks++;
    ch->digest_last = icount;
    if (!ch->verify_icount) {
        ch->verify_icount = icount;
    }
    qemu_mutex_unlock(&ch->lock);
    return ft_digest_compute_for(ch, icount, buf, size);
}

/*
 * A mismatch is an error: the replay core then stops and reports the
 * divergence through the stream's diverged op (ft-stream.c).
 */
static bool ft_digest_check(void *opaque, uint64_t icount,
                            const uint8_t *digest, size_t len, Error **errp)
{
    FtChannel *ch = opaque;
    uint8_t mine[FT_DIGEST_SIZE];
    bool match;

    ft_digest_compute_for(ch, icount, mine, sizeof(mine));
    match = len == FT_DIGEST_SIZE && !memcmp(mine, digest, sizeof(mine));
    trace_ft_digest_check(icount, match);
    qemu_mutex_lock(&ch->lock);
    ch->digest_checks++;
    ch->digest_last = icount;
    qemu_mutex_unlock(&ch->lock);
    if (len != FT_DIGEST_SIZE || memcmp(mine, digest, 16)) {
        error_setg(errp, "cpu state differs");
        return false;
    }
    if (memcmp(mine + 16, digest + 16, 16)) {
        error_setg(errp, "sampled guest RAM differs");
        return false;
    }
    return true;
}

const ReplayDigestOps ft_digest_ops = {
    .due = ft_digest_due,
    .compute = ft_digest_compute,
    .check = ft_digest_check,
};
