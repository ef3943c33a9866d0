/*
 * The fault-tolerance output rule, between ft-output.c and the output
 * filters
 *
 * Copyright (c) 2026 The qemu-ft authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef FT_OUTPUT_H
#define FT_OUTPUT_H

#include "net/filter.h"

/* Is the log streamed over the logging channel (-icount rrchardev)? */
bool ft_output_available(void);

/*
 * A recorder: hold a packet the guest sent, tagged with the current log
 * position, until the backup has acknowledged it.  Returns false if it
 * may go at once (nobody to wait for).  With the replay mutex held.
 */
bool ft_output_hold_packet(NetFilterState *nf, NetClientState *sender,
                           unsigned flags, const struct iovec *iov,
                           int iovcnt);

/* Drop the packets held for @nf, which goes away. */
void ft_output_forget(NetFilterState *nf);

#endif
