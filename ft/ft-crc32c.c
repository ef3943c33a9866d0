/*
 * CRC32C (Castagnoli) for the FT logging channel
 *
 * Copyright (c) 2026 The qemu-ft authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Uses the SSE4.2 crc32 instruction when the host has it (the channel
 * checksums every byte of the replay log, so this is on the primary's
 * critical path), and a slicing-by-8 table otherwise.
 */

#include <string.h>
#include "ft-crc32c.h"

#define CRC32C_POLY_REV 0x82f63b78u

static uint32_t crc_table[8][256];
static int crc_table_ready;

static void crc_table_init(void)
{
    uint32_t i, j, c;

    for (i = 0; i < 256; i++) {
        c = i;
        for (j = 0; j < 8; j++) {
            c = (c >> 1) ^ (CRC32C_POLY_REV & -(c & 1));
        }
        crc_table[0][i] = c;
    }
    for (i = 0; i < 256; i++) {
        c = crc_table[0][i];
        for (j = 1; j < 8; j++) {
            c = crc_table[0][c & 0xff] ^ (c >> 8);
            crc_table[j][i] = c;
        }
    }
    __atomic_store_n(&crc_table_ready, 1, __ATOMIC_RELEASE);
}

static uint32_t crc32c_sw(uint32_t crc, const uint8_t *p, size_t len)
{
    if (!__atomic_load_n(&crc_table_ready, __ATOMIC_ACQUIRE)) {
        /* Idempotent: racing initialisers write identical tables. */
        crc_table_init();
    }
    while (len && ((uintptr_t)p & 7)) {
        crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
        len--;
    }
    while (len >= 8) {
        uint64_t w;

        memcpy(&w, p, 8);
        w ^= crc;               /* little-endian hosts only (x86_64) */
        crc = crc_table[7][w & 0xff] ^
              crc_table[6][(w >> 8) & 0xff] ^
              crc_table[5][(w >> 16) & 0xff] ^
              crc_table[4][(w >> 24) & 0xff] ^
              crc_table[3][(w >> 32) & 0xff] ^
              crc_table[2][(w >> 40) & 0xff] ^
              crc_table[1][(w >> 48) & 0xff] ^
              crc_table[0][w >> 56];
        p += 8;
        len -= 8;
    }
    while (len--) {
        crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    }
    return crc;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>

__attribute__((target("sse4.2")))
static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p, size_t len)
{
    uint64_t c = crc;

    while (len && ((uintptr_t)p & 7)) {
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
        len--;
    }
    while (len >= 8) {
        uint64_t w;

        memcpy(&w, p, 8);
        c = __builtin_ia32_crc32di(c, w);
        p += 8;
        len -= 8;
    }
    while (len--) {
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
    }
    return (uint32_t)c;
}

static int host_has_sse42(void)
{
    static int cached = -1;
    unsigned int a, b, c, d;

    if (cached < 0) {
        cached = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_SSE4_2);
    }
    return cached;
}
#endif

uint32_t ft_crc32c_portable(uint32_t crc, const void *buf, size_t len)
{
    return ~crc32c_sw(~crc, buf, len);
}

uint32_t ft_crc32c(uint32_t crc, const void *buf, size_t len)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (host_has_sse42()) {
        return ~crc32c_hw(~crc, buf, len);
    }
#endif
    return ft_crc32c_portable(crc, buf, len);
}
