#!/usr/bin/env python3
#
# A bounded chaos run (tests/chaos/ftchaos.py): the protected VM on the
# three-node Pacemaker cluster, under TCP echo and HTTP load with the
# console ticker and the ext4 workload, takes random faults (kill -9,
# SIGSTOP, CPU starvation, link flaps, lock storage taken away, on either
# side, and storage outages), each kind once in a random order before any
# again (--deck), every 10-25 s, while Pacemaker restores redundancy after
# each; the independent checker (tests/chaos/checker.py) must find no
# violation.
#
# FT_CHAOS_MINUTES sets its length (default 0: skipped; scripts/test.sh
# sets 8), FT_SEED its faults.  The report, the plot and the fault log
# are copied to build/test-results/chaos-PID, whatever the outcome.
# CheckerTest feeds the checker made-up runs: clean, a second VM sending,
# a lost tick, a wrong byte.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import json
import os
import shutil
import struct
import subprocess
import sys

from ft_test import FTTestCase
from ft_test.config import TOP

sys.path.insert(0, os.path.join(TOP, 'tests', 'chaos'))
import checker  # noqa: E402

MINUTES = float(os.environ.get('FT_CHAOS_MINUTES', '0'))


class ChaosTest(FTTestCase):

    timeout = 600 + int(MINUTES * 60 * 2)

    def test_chaos(self):
        if not MINUTES:
            self.skipTest('FT_CHAOS_MINUTES is not set')
        if os.geteuid() != 0 or not shutil.which('pacemakerd'):
            self.skipTest('needs root and pacemaker (scripts/install-deps.sh)')
        out = self.scratch('chaos')
        cmd = [sys.executable, os.path.join(TOP, 'tests', 'chaos',
                                            'ftchaos.py'),
               '--minutes', str(MINUTES), '--out', out, '--deck',
               '--min-gap', '10', '--max-gap', '25']
        if os.environ.get('FT_SEED'):
            cmd += ['--seed', os.environ['FT_SEED']]
        r = subprocess.run(cmd, capture_output=True, text=True,
                           timeout=self.timeout - 60)
        self.log.info('%s', r.stdout[-4000:])
        with open(os.path.join(out, 'report.json')) as f:
            report = json.load(f)
        # The report and the plot are kept whatever the outcome
        keep = os.path.join(TOP, 'build', 'test-results',
                            f'chaos-{os.getpid()}')
        os.makedirs(keep, exist_ok=True)
        for name in ('report.json', 'report.txt', 'timeline.png',
                     'events.jsonl'):
            if os.path.exists(os.path.join(out, name)):
                shutil.copy(os.path.join(out, name), keep)
        print(f'\nchaos: {report["faults total"]} faults '
              f'{report["faults"]}, {report["failovers"]} failovers, '
              f'{report["re-protections"]} re-protections, '
              f'{report["echo bytes verified"] >> 20} MiB echoed, '
              f'{report["http bytes verified"] >> 20} MiB by HTTP, '
              f'{report["ticks"]} ticks, '
              f'{report.get("fs files checked", 0)} ext4 files checked '
              f'({report.get("e2fsck", "-")}), '
              f'writes held after go-live ms p50/p99/max '
              f'{report.get("survivor writes held ms p50/p99/max")}, '
              f'{len(report["violations"])} '
              'violations', file=sys.stderr)
        self.assertEqual(report['violations'], [], r.stdout[-4000:])
        self.assertGreater(report['faults total'], 0)
        self.assertEqual(r.returncode, 0, r.stderr[-4000:])


MAC = '52:54:00:f7:00:01'
GUEST, CLIENT = bytes([10, 0, 3, 15]), bytes([10, 0, 3, 1])


def frame(payload=b'', seq=1000, arp=False):
    """An Ethernet frame from the guest's MAC: ARP, or IPv4 TCP from port
    7 carrying @payload at @seq."""
    eth = b'\xff' * 6 + bytes.fromhex(MAC.replace(':', ''))
    if arp:
        return eth + b'\x08\x06' + bytes(28)
    tcp = struct.pack('>HHIIBBHHH', 7, 40000, seq, 1, 5 << 4, 0x18, 6000,
                      0, 0)
    ip = struct.pack('>BBHHHBBH4s4s', 0x45, 0, 20 + len(tcp) + len(payload),
                     0, 0, 64, 6, 0, GUEST, CLIENT)
    return eth + b'\x08\x00' + ip + tcp + payload


def write_pcap(path, frames):
    with open(path, 'wb') as f:
        f.write(struct.pack('<IHHiIII', 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1))
        for t, data in frames:
            f.write(struct.pack('<IIII', int(t), int((t % 1) * 1e6),
                                len(data), len(data)))
            f.write(data)


class CheckerTest(FTTestCase):

    def make_run(self, n1, n2, ticks=range(1, 21), echo_error=None,
                 name='run'):
        run = self.scratch(name)
        os.makedirs(run)
        with open(os.path.join(run, 'run.json'), 'w') as f:
            json.dump({'mac': MAC, 'seconds': 60, 'seed': 1}, f)
        with open(os.path.join(run, 'client.json'), 'w') as f:
            json.dump({'echo': [{'id': 0, 'verified': 1 << 20,
                                 'error': echo_error, 'max_stall_s': 0.1}],
                       'http': {'downloads': 3, 'bytes': 3 << 20}}, f)
        text = 'FT-BOOT\n' + ''.join(f'TICK {i}\n' for i in ticks)
        with open(os.path.join(run, 'console-n1-1.log'), 'w') as f:
            f.write(text)
        write_pcap(os.path.join(run, 'wire-n1.pcap'), n1)
        write_pcap(os.path.join(run, 'wire-n2.pcap'), n2)
        return checker.check(run)

    def test_clean(self):
        """n1 sends, then n2 takes over and sends; n1 delivers late a
        segment n2 sent too, byte for byte: no violation."""
        data = bytes(range(256)) * 4
        n1 = [(100 + i, frame(data, seq=1000 + i * 1024)) for i in range(5)]
        n1.append((111, frame(data, seq=1000 + 5 * 1024)))
        n2 = [(110, frame(data[:500], seq=1000 + 5 * 1024)),
              (110.5, frame(data[500:], seq=1000 + 5 * 1024 + 500))]
        n2 += [(112 + i, frame(data, seq=1000 + (6 + i) * 1024))
               for i in range(5)]
        r = self.make_run(n1, n2)
        self.assertEqual(r['violations'], [])
        self.assertEqual(r['late TCP segments from an old sender'], 1)
        self.assertEqual(r['sender switches'], 1)

    def test_late_not_resent(self):
        """n1, stopped, delivers late after n2 took over a segment that n2
        never sends: n2's stream goes on from its end (the receiver had
        it from n1, and acknowledged it).  A late delivery, not a second
        VM; but a late segment that n2's stream never went past is."""
        data = b'x' * 512
        n1 = [(100 + i, frame(data, seq=1000 + i * 512)) for i in range(5)]
        n1.append((110.2, frame(data, seq=1000 + 5 * 512)))
        n2 = [(110, frame(data, seq=1000 + 4 * 512))]
        n2 += [(111 + i, frame(data, seq=1000 + (6 + i) * 512))
               for i in range(3)]
        r = self.make_run(n1, n2)
        self.assertEqual(r['violations'], [])
        self.assertEqual(r['late TCP segments from an old sender'], 1)
        self.assertEqual(
            r['... of them not sent again by the new sender'], 1)
        n2 = [(110, frame(data, seq=1000 + 4 * 512))]
        r = self.make_run(n1, n2, name='run2')
        self.assertEqual(len(r['violations']), 1, r['violations'])

    def test_two_senders(self):
        """n1 goes on sending after n2 took over: new TCP data, and an
        ARP frame, are both found."""
        data = b'x' * 512
        n1 = [(100 + i, frame(data, seq=1000 + i * 512)) for i in range(5)]
        n1 += [(111, frame(b'y' * 512, seq=1000 + 5 * 512)),
               (112, frame(arp=True))]
        n2 = [(110 + i * 0.5, frame(data, seq=1000 + (5 + i) * 512))
              for i in range(8)]
        r = self.make_run(n1, n2)
        self.assertEqual(len(r['violations']), 2, r['violations'])
        self.assertIn('differs', r['violations'][0])
        self.assertIn('not TCP', r['violations'][1])

    def test_ticks_and_bytes(self):
        """A tick missing and an echo connection that saw a wrong byte."""
        n1 = [(100, frame(b'a', seq=1))]
        r = self.make_run(n1, [], ticks=[1, 2, 3, 5, 6],
                          echo_error='byte 77 differs')
        self.assertEqual(len(r['violations']), 2, r['violations'])
        self.assertIn('5 follows 3', r['violations'][1])
