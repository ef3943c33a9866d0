/*
 * FT: the shared disks a backup must see as its primary does
 *
 * Copyright (c) 2026 The qemu-ft authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef FT_DISKS_H
#define FT_DISKS_H

/*
 * Text describing the disks under blkreplay (ft-disks.c), for the CONFIG
 * frame.  Main loop, once the machine is built.  g_free() the result.
 */
char *ft_disks_describe(void);

/*
 * Compare the backup's description @mine with the @primary's: NULL when
 * they match, else what differs (g_free() it).
 */
char *ft_disks_compare(const char *mine, const char *primary);

#endif
