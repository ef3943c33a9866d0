# The benchmark report's rendering (tests/bench/report.py --render-only):
# from a results file of every part, it writes summary.md with each table
# and a PNG per plot.  The measuring parts are benchmarks, run by hand.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import json
import os
import random
import subprocess
import sys
import tempfile
import unittest

REPORT = os.path.join(os.path.dirname(__file__), '..', 'bench', 'report.py')
PNG = b'\x89PNG\r\n\x1a\n'


def results():
    """Results of every part, shaped as report.py's parts return them."""
    rnd = random.Random(1)

    def ms(base, n=200):
        return [base * (1 + rnd.expovariate(4)) for _ in range(n)]

    def net(rtt):
        return {'rtt': {'n': 200, 'rtt_p50_ms': rtt, 'rtt_p99_ms': rtt * 3,
                        'rtts_ms': ms(rtt)},
                'rx': {'mbps': 900.0}, 'tx': {'mbps': 700.0},
                'log_mbps': 50.0}
    speed = {'speed': 1.0, 'backup': 1.01, 'mbps': 12.0, 'lag_p50': 5.0,
             'lag_p99': 40.0, 'wall_p50': 8.0, 'wall_p99': 90.0,
             'throttle_ms': 30, 'seconds': 6}
    return {
        'meta': {'date': '2026-12-03T12:00:00', 'host': 'h', 'cpus': 2,
                 'mode': 'quick'},
        'speed': {'idle': speed, 'cpu': speed},
        'tax': {'tcg': {'boot': [2.0], 'cpu': [4.0], 'disk': [3.0],
                        'net': [1.0]},
                'protected': {'boot': [3.0], 'cpu': [8.0], 'disk': [4.5],
                              'net': [1.5]}},
        'network': {'unprotected': [net(0.18)], 'protected': [net(0.35)]},
        'disk': {k: {'fsync_ms': ms(b), 'write_mibs': [4.0, 5.0],
                     'read_mibs': [6.0], 'log_mbps': None}
                 for k, b in (('unprotected', 8.0), ('protected', 12.0))},
        'failover': [{'total_ms': 50.0 + i, 'detect_ms': 1.0}
                     for i in range(3)],
        'output': {'console': ms(1500), 'packet': ms(170)},
        'series': {'t': [i / 10 for i in range(50)],
                   'lag_ms': ms(10, 50), 'wall_lag_ms': ms(20, 50),
                   'mbps': ms(5, 50), 'throttle_ms': [0] * 50,
                   'rss_primary_kib': 400 << 10, 'rss_backup_kib': 380 << 10,
                   'rss_unprotected_kib': 300 << 10},
        'colo': {c: colo_runs(c, *f) for c, f in (
            ('tcg', (4.0, 0.2, 4000)), ('icount', (8.0, 0.25, 2400)),
            ('ft', (7.0, 0.4, 1600)), ('colo', (5.0, 0.4, 2000)))} | {
            # every run of it failed: shown as such, nothing computed
            'colo:1000': {'net': [{'error': 'boom'}],
                          'cpu': [{'error': 'boom'}], 'failover': []}},
    }


def colo_runs(config, cpu_s, rtt, rx):
    """bench_colo.measure()'s runs of @config: one round."""
    net = {'boot_s': 3.0, 'rtt_p50_ms': rtt, 'rtt_p99_ms': rtt * 2,
           'rtts_ms': [rtt] * 20, 'rx_mbps': rx, 'tx_mbps': rx / 2,
           'rss_mib': [280.0] if config in ('tcg', 'icount')
           else [290.0, 470.0 if config == 'colo' else 300.0]}
    # fsync p50 and write throughput scale with the CPU job's time
    disk = {'fsync_p50_ms': cpu_s, 'fsync_p99_ms': cpu_s * 3,
            'fsyncs_ms': [cpu_s] * 10, 'write_mibs': 40 / cpu_s,
            'read_mibs': 80 / cpu_s}
    if config == 'colo':
        disk['replicated'] = True
    out = {'net': [net], 'cpu': [{'cpu_s': cpu_s}], 'disk': [disk],
           'failover': []}
    if config == 'colo':
        net['checkpoints'] = 2
        out['cpu'][0]['checkpoints'] = 1
    if config in ('ft', 'colo'):
        out['failover'] = [{'live_ms': 5.0, 'conns_kept': 2 * (config == 'ft'),
                            'conns': 2, 'max_stall_s': 0.2, 'errors': []}]
    return out


class ReportRender(unittest.TestCase):

    def render(self, res):
        out = tempfile.mkdtemp(prefix='ft-report-')
        with open(os.path.join(out, 'results.json'), 'w') as f:
            json.dump(res, f)
        subprocess.run([sys.executable, REPORT, '--out', out,
                        '--render-only'], check=True, capture_output=True,
                       timeout=120)
        with open(os.path.join(out, 'summary.md')) as f:
            return out, f.read()

    def test_every_part(self):
        """Every part's table is in the summary, with the ratios computed
        from the samples, and every plot is a PNG."""
        out, md = self.render(results())
        for title in ('The pair against the same VM unprotected',
                      'The icount tax', 'Network', 'Shared disk',
                      'Failover', 'The output rule', 'over time',
                      "QEMU's COLO, side by side"):
            self.assertIn(title, md)
        # COLO against plain TCG, ours against -icount shift=5: CPU speed
        # is the baseline's time over its time, RTT and rx the ratio
        self.assertIn('| colo / tcg | 0.80 | 2.00 | 2.00 | 0.50 | 0.50 |', md)
        self.assertIn('| ft / tcg | 0.57 | 2.00 | 2.00 | 0.40 | 0.40 |', md)
        self.assertIn('| ft / icount | 1.14 | 1.60 | 1.60 | 0.67 | 0.67 |',
                      md)
        self.assertIn('| TCP connections kept at failover | - | - '
                      '| 2 of 2 | 0 of 2 | - |', md)
        self.assertIn('| runs failed | 0 | 0 | 0 | 0 | 2 |', md)
        self.assertIn("| COLO: secondary's disk matching the primary's "
                      "| - | - | - | 1 of 1 | - |", md)
        self.assertIn('| colo:1000 / tcg | - | - | - | - | - |', md)
        # the disk: fsync latency over the baseline's, throughput too
        self.assertIn('| ft / icount | 0.88 | 0.88 | 1.14 | 1.14 |', md)
        self.assertIn('| colo / tcg | 1.25 | 1.25 | 0.80 | 0.80 |', md)
        self.assertIn('| colo:1000 / tcg | - | - | - | - |\n', md)
        self.assertIn('| fsync p50 ms | 4.00 | 8.00 | 7.00 | 5.00 | - |',
                      md)
        # tax: plain TCG's time over the pair's (cpu 4 s / 8 s)
        self.assertRegex(md, r'\| protected \| 0\.67 \| 0\.50 \| 0\.67 '
                             r'\| 0\.67 \|')
        # throttled: 30 ms of 6 s
        self.assertIn('| 0.50 % |', md)
        for png in ('rtt_cdf.png', 'fsync_cdf.png', 'hold_cdf.png',
                    'lag_bandwidth.png', 'colo_rtt_cdf.png'):
            self.assertIn(f']({png})', md)
            with open(os.path.join(out, png), 'rb') as f:
                self.assertEqual(f.read(8), PNG)

    def test_parts_left_out(self):
        """A run of some parts renders those alone."""
        res = results()
        for part in ('speed', 'tax', 'disk', 'failover', 'output', 'series'):
            del res[part]
        # without the COLO build, the part says why it measured nothing
        res['colo'] = {'skipped': 'qemu-colo is not built'}
        out, md = self.render(res)
        self.assertIn('Network', md)
        self.assertNotIn('Shared disk', md)
        self.assertIn('Not measured: qemu-colo is not built.', md)
        self.assertEqual(sorted(f for f in os.listdir(out)
                                if f.endswith('.png')), ['rtt_cdf.png'])


class OutputPathJoin(unittest.TestCase):

    def test_stamps_out_of_order(self):
        """bench_output_path joins each output's stages by log offset.
        The backup may stamp its recv line before the primary stamps its
        sent line: the join must still take that output's own events,
        not the next output's a second later."""
        sys.path.insert(0, os.path.dirname(REPORT))
        import bench_output_path as bop
        us = 1e-6
        holds = [(1.0, 'console', 100), (2.0, 'console', 200)]
        # per stage, microseconds after each hold; recv before sent
        after = {'commit': 2, 'sent': 90, 'recv': 60, 'ack': 70,
                 'acked': 100, 'release': 200}
        stages = {s: [(t + after[s] * us, tag) for t, _, tag in holds]
                  for s in bop.STAGES}
        rows = bop.breakdown(holds, stages, {'console'})
        self.assertEqual(len(rows), 2)
        for row in rows:
            self.assertAlmostEqual(row['total'], 200, delta=1)
            self.assertAlmostEqual(row['release'], 100, delta=1)


if __name__ == '__main__':
    unittest.main()
