#!/usr/bin/env python3
#
# The seed corpus of fuzz-replay-log (tests/fuzz/fuzz-replay-log.c):
# windows of real replay logs recorded from the test guest, each a
# settings byte and up to WINDOW bytes of events from an event boundary.
#
#   char  -cpu max and a second serial port reading a file: RANDOM,
#         CHAR_READ, CHAR_WRITE, clocks, checkpoints, bottom halves
#   disk  an AHCI disk behind blkreplay, written and verified: BLOCK
#   net   virtio-net behind filter-replay, a host client streaming through
#         the guest's echo server: NET
#
# The logging channel's own formats are made from those: BLOCK events
# with their outcome (blkreplay ft=on: a result, and a read's data), and
# DIGEST events after the vCPU's warp-account checkpoints.
#
# It writes the seeds to a directory (default build/fuzz/replay-seeds);
# the corpus in the tree, tests/fuzz/replay-corpus, keeps those that add
# coverage, and what campaigns found:
#
#   build/fuzz/fuzz-replay-log -merge=1 tests/fuzz/replay-corpus DIR
#
# Run it again when the log format changes (REPLAY_VERSION); then start
# the tree's corpus afresh.  Needs the QEMU build and the guest
# (scripts/build-qemu.sh, scripts/build-guest.sh).
#
# SPDX-License-Identifier: GPL-2.0-or-later

import hashlib
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'functional'))

from ft_test import WORKLOADS, Echo, Workdir, free_tcp_port  # noqa: E402
from ft_test.replaylog import (ASYNC_BLOCK, EV_ASYNC,  # noqa: E402
                               EV_CHECKPOINT, EV_DIGEST, EV_INSTRUCTION,
                               LogCase, parse_log)
from ft_test.workloads import disk_args, user_net_args  # noqa: E402

OUT = os.path.join(HERE, '..', '..', 'build', 'fuzz', 'replay-seeds')
WINDOW = 4096
SET_BLOCK_DATA = 0x04
WARP_ACCOUNT = EV_CHECKPOINT + 1


def record(wd, name, append, args, traffic=None):
    log = wd.scratch(name + '.rr')
    vm, _ = wd.make_vm(name, append, rr='record', rrfile=log, args=args)
    vm.launch()
    if traffic:
        traffic()
        vm.shutdown()
    else:
        vm.wait(timeout=600)
    return open(log, 'rb').read()


def record_all(wd):
    logs = {}
    case = LogCase.__new__(LogCase)     # its record_args(), without a test
    case.wd = wd
    logs['char'] = record(wd, 'char', case.record_append(),
                          case.record_args())
    logs['disk'] = record(
        wd, 'disk', WORKLOADS['disk'].append(disk_loops=1, disk_mb=1,
                                             poweroff=1),
        disk_args(wd.make_disk('disk.img', 16)) + ['-net', 'none'])
    port = free_tcp_port()

    def echo():
        Echo('127.0.0.1', port, nbytes=32768, timeout=300).run()
    logs['net'] = record(wd, 'net', WORKLOADS['network'].append(),
                         user_net_args(port), traffic=echo)
    return logs


def events_of(data):
    """[(event id, start, end)] of a log (plain blkreplay, if any)."""
    starts = [(ev, p - 1) for ev, p in parse_log(data, block_ids=True)]
    out = []
    for i, (ev, s) in enumerate(starts):
        end = starts[i + 1][1] if i + 1 < len(starts) else len(data)
        out.append((ev, s, end))
    return out


def ft_format(data, events, start, end):
    """Events [start, end) in the logging channel's format: each BLOCK
    with a result (and every third one as a read of 512 bytes), and a
    DIGEST after each warp-account checkpoint."""
    out = bytearray()
    icount = 0
    nblock = 0
    for ev, s, e in events[start:end]:
        out += data[s:e]
        if ev == EV_INSTRUCTION:
            icount += struct.unpack_from('>I', data, s + 1)[0]
        elif ev == EV_ASYNC + ASYNC_BLOCK:
            nblock += 1
            if nblock % 3 == 0:
                out += struct.pack('>iI', 0, 512) + bytes(range(256)) * 2
            else:
                out += struct.pack('>i', 0)
        elif ev == WARP_ACCOUNT:
            digest = hashlib.sha256(struct.pack('>Q', icount)).digest()
            out += bytes([EV_DIGEST]) + struct.pack('>QI', icount, 32)
            out += digest
    return bytes(out)


def windows(data, events):
    """Start indices of the windows: every event kind's first few
    occurrences (from a few events before), and a stride through the log."""
    starts = set()
    seen = {}
    for i, (ev, _, _) in enumerate(events):
        seen.setdefault(ev, []).append(i)
    for ev, idx in seen.items():
        for i in idx[:3]:
            starts.add(max(0, i - 4))
    stride = max(1, len(events) // 24)
    starts.update(range(0, len(events), stride))
    return sorted(starts)


def main():
    out = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else OUT)
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):
        if f.startswith('seed-'):
            os.unlink(os.path.join(out, f))
    n = 0
    with Workdir('replay-corpus') as wd:
        for name, data in record_all(wd).items():
            events = events_of(data)
            for i in windows(data, events):
                j = i
                while (j < len(events) and
                       events[j][2] - events[i][1] <= WINDOW):
                    j += 1
                body = data[events[i][1]:events[j - 1][2]] if j > i else b''
                seeds = [(0, body)]
                if name == 'disk' or i % 4 == 0:
                    seeds.append((SET_BLOCK_DATA,
                                  ft_format(data, events, i, j)[:WINDOW]))
                for settings, b in seeds:
                    path = os.path.join(
                        out, f'seed-{name}-{i:06d}-{settings:02x}')
                    with open(path, 'wb') as f:
                        f.write(bytes([settings]) + b)
                    n += 1
    print(f'{n} seeds in {out}')


if __name__ == '__main__':
    main()
