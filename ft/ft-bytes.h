/*
 * Little-endian load/store helpers for the FT wire format
 *
 * Copyright (c) 2026 The qemu-ft authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef FT_BYTES_H
#define FT_BYTES_H

#include <stdint.h>

static inline void ft_put_le16(uint8_t *p, uint16_t v)
{
    p[0] = v;
    p[1] = v >> 8;
}

static inline void ft_put_le32(uint8_t *p, uint32_t v)
{
    ft_put_le16(p, v);
    ft_put_le16(p + 2, v >> 16);
}

static inline void ft_put_le64(uint8_t *p, uint64_t v)
{
    ft_put_le32(p, v);
    ft_put_le32(p + 4, v >> 32);
}

static inline uint16_t ft_get_le16(const uint8_t *p)
{
    return p[0] | (p[1] << 8);
}

static inline uint32_t ft_get_le32(const uint8_t *p)
{
    return ft_get_le16(p) | ((uint32_t)ft_get_le16(p + 2) << 16);
}

static inline uint64_t ft_get_le64(const uint8_t *p)
{
    return ft_get_le32(p) | ((uint64_t)ft_get_le32(p + 4) << 32);
}

#endif
