/*
 * filter-ft-output: the fault-tolerance output rule for network packets
 *
 * Copyright (c) 2026 The qemu-ft authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * On a primary whose record/replay log is streamed to a backup, every
 * packet the guest sends is held, tagged with the log position at which
 * it was produced, and let out as soon as the backup has acknowledged
 * that position (ft-output.c releases it from the ACK, not on a timer).
 * Packets from the outside are left alone: filter-replay logs them.  On
 * the backup, filter-replay drops everything while it replays; once it
 * went live, or a primary runs on alone, packets pass straight through.
 *
 *   -netdev tap,id=n0,... -object filter-replay,id=fr,netdev=n0
 *   -object filter-ft-output,id=ft0,netdev=n0
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/iov.h"
#include "qemu/module.h"
#include "net/filter.h"
#include "net/net.h"
#include "net/tap.h"
#include "system/replay.h"
#include "qom/object.h"
#include "ft-output.h"

#define TYPE_FILTER_FT_OUTPUT "filter-ft-output"

OBJECT_DECLARE_SIMPLE_TYPE(FtOutputFilter, FILTER_FT_OUTPUT)

struct FtOutputFilter {
    NetFilterState parent_obj;
};

static ssize_t filter_ft_receive_iov(NetFilterState *nf,
                                     NetClientState *sender,
                                     unsigned flags,
                                     const struct iovec *iov,
                                     int iovcnt, NetPacketSent *sent_cb)
{
    /* Only what the guest sends is output; filter-replay logs the rest. */
    if (sender == nf->netdev || replay_mode != REPLAY_MODE_RECORD) {
        return 0;
    }
    if (!ft_output_hold_packet(nf, sender, flags, iov, iovcnt)) {
        return 0;
    }
    /* Taken: the sender counts it as sent, sent_cb is not called. */
    return iov_size(iov, iovcnt);
}

static void filter_ft_setup(NetFilterState *nf, Error **errp)
{
    NetClientState *nc = nf->netdev;

    if (replay_mode == REPLAY_MODE_NONE || !ft_output_available()) {
        error_setg(errp, "filter-ft-output needs a streamed record/replay "
                   "log: -icount rr=record|replay,rrchardev=<id>");
        return;
    }
    if (nc->info->type == NET_CLIENT_DRIVER_VHOST_USER ||
        nc->info->type == NET_CLIENT_DRIVER_VHOST_VDPA ||
        (nc->info->type == NET_CLIENT_DRIVER_TAP && tap_get_vhost_net(nc))) {
        error_setg(errp, "filter-ft-output cannot work on netdev '%s': with "
                   "vhost the guest's packets bypass QEMU; use a tap "
                   "without vhost", nf->netdev_id);
        return;
    }
    /* filter.c already refuses multiqueue netdevs. */
}

static void filter_ft_cleanup(NetFilterState *nf)
{
    ft_output_forget(nf);
}

static void filter_ft_class_init(ObjectClass *oc, void *data)
{
    NetFilterClass *nfc = NETFILTER_CLASS(oc);

    nfc->setup = filter_ft_setup;
    nfc->cleanup = filter_ft_cleanup;
    nfc->receive_iov = filter_ft_receive_iov;
}

static const TypeInfo filter_ft_info = {
    .name = TYPE_FILTER_FT_OUTPUT,
    .parent = TYPE_NETFILTER,
    .class_init = filter_ft_class_init,
    .instance_size = sizeof(FtOutputFilter),
};

static void filter_ft_register_types(void)
{
    type_register_static(&filter_ft_info);
}

type_init(filter_ft_register_types);
