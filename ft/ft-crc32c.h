/*
 * CRC32C (Castagnoli) for the FT logging channel
 *
 * Copyright (c) 2026 The qemu-ft authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Self-contained (no QEMU headers) so that it is unit-tested and fuzzed
 * without building QEMU.
 */

#ifndef FT_CRC32C_H
#define FT_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/*
 * Continue a CRC32C over @len bytes at @buf.  Start with crc = 0; the
 * pre- and post-inversion are done inside, so calls chain:
 * ft_crc32c(ft_crc32c(0, a, n), b, m) == ft_crc32c(0, a || b, n + m).
 */
uint32_t ft_crc32c(uint32_t crc, const void *buf, size_t len);

/* The same, never using CPU-specific instructions (for tests). */
uint32_t ft_crc32c_portable(uint32_t crc, const void *buf, size_t len);

#endif
