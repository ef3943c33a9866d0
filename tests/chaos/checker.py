#!/usr/bin/python3
#
# The chaos run's independent checker.  It knows nothing of how the pair
# works: it reads only what the outside world saw in a run directory of
# ftchaos.py, and judges it.
#
#   client.json    the TCP echo and HTTP client's results (every byte it
#                  sent came back unchanged; every download's sha256)
#   console-*.log  each VM's console bytes: the ticks, spliced across the
#                  VMs that were live one after the other, must be
#                  complete and in order
#   wire-N.pcap    frames on each node's link to the network, captured
#                  outside the node: frames from the guest's MAC address
#                  from two nodes, interleaved, mean two live VMs, unless
#                  the old one's are TCP data the new one sent too (late)
#   samples.jsonl  each VM's own state (x-query-ft), sampled four times a
#                  second: two "live" at once is split brain too; the
#                  backups' divergence digest mismatches must stay 0
#   events.jsonl   the faults injected, failovers, re-protections (only
#                  for the report and the plot)
#
#   python3 tests/chaos/checker.py RUN_DIR      (exit 1 on a violation)
#
# Writes RUN_DIR/report.json, report.txt and timeline.png.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import collections
import glob
import heapq
import json
import os
import re
import shutil
import struct
import subprocess
import sys

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(TOP, 'tests', 'functional'))
sys.path.insert(0, os.path.join(TOP, 'scripts'))
from ft_test.console import splice_consoles  # noqa: E402
from ft_test.ext4 import fs_pattern_sha, image_file_sha  # noqa: E402
from ftresource import consoles  # noqa: E402

# A frame from a node that is no longer the sender, this soon after
# another took over, and not a late delivery: two VMs were sending.
SWITCH_S = 5.0


def read_jsonl(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    out.append(json.loads(line))
    except FileNotFoundError:
        pass
    return out


def pcap_frames(path, mac, sizes=False):
    """(time, frame) of the frames in the pcap file @path whose source is
    @mac (bytes), one at a time; with @sizes, (time, frame, its length on
    the wire) (the capture keeps only a frame's start)."""
    with open(path, 'rb') as f:
        head = f.read(24)
        if len(head) < 24:
            return
        magic = struct.unpack('<I', head[:4])[0]
        if magic in (0xa1b2c3d4, 0xa1b23c4d):
            endian = '<'
        else:
            endian = '>'
            magic = struct.unpack('>I', head[:4])[0]
        scale = 1e-9 if magic == 0xa1b23c4d else 1e-6
        while True:
            rec = f.read(16)
            if len(rec) < 16:
                break
            sec, frac, incl, orig = struct.unpack(endian + 'IIII', rec)
            data = f.read(incl)
            if len(data) < incl:
                break
            if data[6:12] == mac:
                yield (sec + frac * scale, data) + ((orig,) if sizes else ())


def tcp_segment(frame):
    """(flow, first seq, end seq) of an IPv4 TCP segment, else None."""
    if len(frame) < 34 or frame[12:14] != b'\x08\x00':
        return None
    ip = frame[14:]
    ihl = (ip[0] & 15) * 4
    if ip[9] != 6 or len(ip) < ihl + 20:
        return None
    total = struct.unpack('>H', ip[2:4])[0]
    tcp = ip[ihl:]
    sport, dport, seq = struct.unpack('>HHI', tcp[:8])
    doff = (tcp[12] >> 4) * 4
    flags = tcp[13]
    length = total - ihl - doff + (1 if flags & 3 else 0)   # SYN, FIN
    return (ip[12:16], sport, ip[16:20], dport), seq, \
        (seq + length) & 0xffffffff, bytes(tcp[doff:total - ihl])


class Suspect:
    """A frame from an old sender after another took over."""

    def __init__(self, t, node, new, after, data):
        self.t, self.node, self.new, self.after = t, node, new, after
        self.seg = tcp_segment(data)
        n = len(self.seg[3]) if self.seg else 0
        self.got, self.have = bytearray(n), [False] * n
        self.differs = False
        # The new sender sent the flow's data from this segment's end on
        self.beyond = False

    def take(self, other):
        """Bytes the new sender sent on the same flow."""
        flow, seq, end, payload = self.seg
        if other[0] != flow or not other[3]:
            return
        if (other[1] - end) & 0xffffffff < 0x80000000:
            self.beyond = True
        off = (other[1] - seq) & 0xffffffff
        if off >= 0x80000000:
            off -= 1 << 32
        lo, hi = max(0, -off), min(len(other[3]), len(payload) - off)
        for i in range(lo, hi):
            j, b = off + i, other[3][i]
            if self.have[j] and self.got[j] != b:
                self.differs = True
            self.got[j], self.have[j] = b, True

    def late(self):
        """TCP that the new sender sent too, byte for byte (as far as
        the capture holds them), or a bare ACK: a late delivery.  Or TCP
        that the new sender did not send again, the bytes it did send of
        it the same, because its stream went on past it: the receiver had
        the segment, from the old sender, and acknowledged it.  Its bytes
        are then judged by the client, which checks every byte it got."""
        if not self.seg:
            return False
        payload = self.seg[3]
        if not payload:
            return True
        if self.differs or any(h and g != p for h, g, p in
                               zip(self.have, self.got, payload)):
            return False
        return all(self.have) or self.beyond

    def resent(self):
        return not self.seg or all(self.have)


def judge_wire(run, mac):
    """Frames from the guest's MAC per node, and the ones that show two
    VMs sending.  One live VM at a time means one change of sender per
    failover.  An old primary may still deliver, late, TCP data that the
    new one sent too, byte for byte (output the backup had acknowledged,
    released from a queue after a stop): that is network delay, and TCP
    takes it.  Anything else from a node other than the newest sender,
    within SWITCH_S of the switch, is a second VM sending: a frame that
    is not TCP, or TCP data the new sender never sent.  Streams the
    captures: twice through, holding only the suspects.  Also counts the
    guest's bytes on the wire per second (all senders), for the plot."""
    paths = {}
    for path in sorted(glob.glob(os.path.join(run, 'wire-*.pcap'))):
        node = re.match(r'wire-(.+)\.pcap$', os.path.basename(path)).group(1)
        paths[node] = path

    def tagged(node):
        for t, data, size in pcap_frames(paths[node], mac, sizes=True):
            yield t, node, data, size
    per_node = collections.Counter()
    rate = collections.Counter()
    switches = []
    suspects = []
    current = None      # the newest sender
    since = 0.0         # when it took over
    for t, node, data, size in heapq.merge(*map(tagged, paths),
                                           key=lambda x: x[0]):
        per_node[node] += 1
        rate[int(t)] += size
        if current is None:
            current = node
        elif node != current:
            if switches and t - since < SWITCH_S:
                suspects.append(Suspect(t, node, current, t - since, data))
                continue
            switches.append((t, f'{current}->{node}'))
            current, since = node, t
    for node in paths:
        mine = [s for s in suspects if s.new == node and s.seg and
                s.seg[3]]
        if not mine:
            continue
        lo = min(s.t - s.after for s in mine) - 60
        hi = max(s.t for s in mine) + 60
        for t, data in pcap_frames(paths[node], mac):
            if lo <= t <= hi:
                other = tcp_segment(data)
                if other:
                    for s in mine:
                        s.take(other)
    violations = []
    late = unsent = 0
    for s in suspects:
        if s.late():
            late += 1
            unsent += not s.resent()
            continue
        violations.append(
            f'{s.node} sent a guest frame at {s.t:.3f}, {s.after:.3f} s '
            f'after {s.new} took over: ' +
            (f'TCP data that differs from what {s.new} sent, or that '
             f'{s.new} did not send while its stream did not go past it'
             if s.seg else 'not TCP'))
    return dict(per_node), sum(per_node.values()), \
        [s for _, s in switches], late, unsent, violations[:20], rate


def judge_ticks(run):
    """The ticks across the consoles, in the order their VMs went live
    (ftresource.consoles()), each continuing the one before
    (splice_consoles(): a live backup's console repeats what the primary
    printed, then goes on)."""
    stream = ''
    violations = []
    files = consoles(run)
    for path in files:
        with open(path, 'rb') as f:
            text = f.read().decode('utf-8', 'replace').replace('\r', '')
        try:
            stream = splice_consoles(stream, text)[0] if stream else text
        except AssertionError as e:
            violations.append(f'console {os.path.basename(path)}: {e}')
            stream += text
    seen = [int(x) for x in re.findall(r'^TICK (\d+)$', stream, re.M)]
    for a, b in zip(seen, seen[1:]):
        if b != a + 1:
            violations.append(f'console ticks: {b} follows {a}')
            if len(violations) > 10:
                break
    if not seen:
        violations.append('console ticks: none')
    return len(files), seen, violations, stream


# The guest's ext4 workload (ftchaos.py: ft.fs_kb, and guest/init's
# default of 8 files)
FS_KB = 64
FS_FILES = 8


def judge_fs(run, stream):
    """The shared disk after the run, which ends with every QEMU killed:
    a crash, as far as the file system knows.  Its journal replayed, it
    must check clean (e2fsck -fn), and each file must hold what the
    guest last reported writing to it (fsync, rename, sync: durable),
    or the next loop's data, written but not reported before the end."""
    img = os.path.join(run, 'shared.img')
    if not os.path.exists(img):
        return {}, []
    violations = [f'guest: {f}' for f in re.findall(
        r'^(?:FS (?:verify|write) FAIL|FT-ERROR).*$', stream, re.M)][:10]
    last = {}
    writes = re.findall(r'^FS write ok loop=(\d+) file=(\d+) '
                        r'sha256=([0-9a-f]{64})$', stream, re.M)
    for k, j, sha in writes:
        last[int(j)] = (int(k), sha)
    copy = img + '.checked'
    shutil.copyfile(img, copy)
    replay = subprocess.run(['e2fsck', '-E', 'journal_only', '-y', copy],
                            capture_output=True, text=True)
    fsck = subprocess.run(['e2fsck', '-fn', copy], capture_output=True,
                          text=True)
    if replay.returncode > 1 or fsck.returncode:
        violations.append('e2fsck: ' + (fsck.stdout + fsck.stderr)[-500:])
    ok = 0
    for j, (k, sha) in sorted(last.items()):
        got = image_file_sha(copy, f'f{j}')
        if got in (sha, fs_pattern_sha(k + FS_FILES, j, FS_KB)):
            ok += 1
        else:
            violations.append(f'file f{j}: last reported loop {k}, the '
                              f'disk holds neither it nor the next')
    os.unlink(copy)
    return {'fs writes reported': len(writes), 'fs files checked': ok,
            'e2fsck': 'clean' if not fsck.returncode else 'errors'}, \
        violations


def judge_client(run):
    violations = []
    try:
        with open(os.path.join(run, 'client.json')) as f:
            res = json.load(f)
    except (OSError, ValueError) as e:
        return {}, [f'client: no result ({e})']
    for e in res.get('echo', []):
        if e.get('error'):
            violations.append(f'TCP echo connection {e["id"]}: {e["error"]}')
        elif not e.get('verified'):
            violations.append(f'TCP echo connection {e["id"]}: nothing '
                              'echoed')
    http = res.get('http')
    if http and http.get('error'):
        violations.append(f'HTTP: {http["error"]}')
    return res, violations


def judge_samples(samples):
    """Two VMs that said "live" in one sample; the largest digest
    mismatch count any VM reported."""
    violations = []
    mismatches = 0
    for s in samples:
        live = [n for n, i in s['vms'].items() if i and i['state'] == 'live']
        if len(live) > 1:
            violations.append(f'two VMs live at {s["t"]:.3f}: {live}')
        for i in s['vms'].values():
            if i:
                mismatches = max(mismatches, i.get('mismatches', 0))
    if mismatches:
        violations.append(f'divergence digests: {mismatches} mismatches')
    return mismatches, violations[:20]


def plot(run, events, samples, path, rate=None):
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    if not samples:
        return False
    t0 = samples[0]['t']
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, sharex=True, figsize=(12, 8))
    ts = [(s['t'] - t0) / 60 for s in samples]
    ax1.plot(ts, [s.get('lag_ms') or 0 for s in samples], lw=0.7,
             label='backup lag (ms)')
    ax1.set_ylabel('lag ms (log scale)')
    ax1.set_yscale('symlog', linthresh=10)
    ax2.plot(ts, [s.get('log_mbps') or 0 for s in samples], lw=0.7,
             color='tab:green', label='log Mbit/s')
    ax2.set_ylabel('log Mbit/s')
    secs = sorted(rate or ())
    ax3.plot([(x - t0) / 60 for x in secs],
             [rate[x] * 8 / 1e6 for x in secs], lw=0.5, color='tab:purple')
    ax3.set_ylabel('guest out Mbit/s')
    ax3.set_xlabel('minutes (guest out: its frames on the wire, per s)')
    colours = {}
    for e in events:
        x = (e['t'] - t0) / 60
        if e['kind'] == 'fault':
            c = colours.setdefault(e['fault'], f'C{len(colours) % 10}')
            for ax in (ax1, ax2, ax3):
                ax.axvline(x, color=c, lw=0.8, ls='--')
            ax1.annotate(e['fault'], (x, 1.0), xycoords=('data',
                         'axes fraction'), rotation=90, fontsize=6,
                         va='top', color=c)
        elif e['kind'] == 'live':
            ax2.plot([x], [0], marker='^', color='red')
        elif e['kind'] == 'protected':
            ax2.plot([x], [0], marker='o', color='black', ms=3)
    ax1.set_title('chaos run: faults (dashed), go-live (red), protected '
                  'again (black)')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def check(run):
    with open(os.path.join(run, 'run.json')) as f:
        meta = json.load(f)
    mac = bytes.fromhex(meta['mac'].replace(':', ''))
    events = read_jsonl(os.path.join(run, 'events.jsonl'))
    samples = read_jsonl(os.path.join(run, 'samples.jsonl'))
    report = {'seconds': meta.get('seconds'), 'seed': meta.get('seed')}
    violations = []

    client, v = judge_client(run)
    violations += v
    echo = client.get('echo', [])
    report['echo connections'] = len(echo)
    report['echo bytes verified'] = sum(e.get('verified', 0) for e in echo)
    report['echo longest stall s'] = max(
        [e.get('max_stall_s', 0) for e in echo] or [0])
    http = client.get('http') or {}
    report['http downloads verified'] = http.get('downloads', 0)
    report['http bytes verified'] = http.get('bytes', 0)

    n, seen, v, stream = judge_ticks(run)
    violations += v
    report['consoles'] = n
    report['ticks'] = len(seen)
    report['ticks first..last'] = [seen[0], seen[-1]] if seen else []
    fs, v = judge_fs(run, stream)
    violations += v
    report.update(fs)

    per_node, frames, switches, late, unsent, v, rate = judge_wire(run, mac)
    violations += v
    report['guest frames captured'] = frames
    report['guest frames per node'] = per_node
    report['sender switches'] = len(switches)
    report['late TCP segments from an old sender'] = late
    report['... of them not sent again by the new sender'] = unsent
    report['sender switch list'] = switches[:50]

    mismatches, v = judge_samples(samples)
    violations += v
    report['digest mismatches'] = mismatches
    report['state samples'] = len(samples)
    lag = sorted(s['lag_ms'] for s in samples if s.get('lag_ms') is not None)
    if lag:
        report['backup lag ms p50/p99/max'] = [
            round(lag[len(lag) // 2], 1),
            round(lag[min(len(lag) - 1, len(lag) * 99 // 100)], 1),
            round(lag[-1], 1)]

    faults = collections.Counter(e['fault'] for e in events
                                 if e['kind'] == 'fault')
    report['faults'] = dict(sorted(faults.items()))
    report['faults total'] = sum(faults.values())
    report['failovers'] = sum(1 for e in events if e['kind'] == 'live')
    # the first is the pair that booted
    report['re-protections'] = max(0, sum(1 for e in events
                                          if e['kind'] == 'protected') - 1)
    fence = sorted(e['ms'] for e in events if e['kind'] == 'fenced')
    if fence:
        report['survivor writes held ms p50/p99/max'] = [
            fence[len(fence) // 2], fence[min(len(fence) - 1,
                                              len(fence) * 99 // 100)],
            fence[-1]]
    report['not protected again'] = [e for e in events
                                     if e['kind'] == 'stuck']
    for e in events:
        if e['kind'] == 'stuck':
            violations.append(f'not protected again after {e["fault"]}: '
                              f'{e.get("why", "")}')
    report['violations'] = violations
    report['plot'] = plot(run, events, samples,
                          os.path.join(run, 'timeline.png'), rate)
    with open(os.path.join(run, 'report.json'), 'w') as f:
        json.dump(report, f, indent=1)
    lines = [f'{k}: {v}' for k, v in report.items() if k != 'violations']
    lines.append(f'violations: {len(violations)}')
    lines += [f'  - {v}' for v in violations]
    with open(os.path.join(run, 'report.txt'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return report


def main():
    report = check(sys.argv[1])
    with open(os.path.join(sys.argv[1], 'report.txt')) as f:
        print(f.read(), end='')
    return 1 if report['violations'] else 0


if __name__ == '__main__':
    sys.exit(main())
