#!/usr/bin/env python3
#
# Our pair against QEMU's own COLO, side by side in one run, on the same
# guest, the same bridged network and the same host.  Four configurations:
#   tcg     the guest unprotected on plain TCG (COLO's own baseline)
#   icount  the guest unprotected at -icount shift=5 (our pair's baseline)
#   ft      our pair: a primary recording at shift=5, its backup replaying
#           live, the output rule on the NIC (filter-ft-output)
#   colo    QEMU's COLO (docs/COLO-FT.txt, no disk): filter-mirror, the
#           secondary's filter-redirector and filter-rewriter, and
#           colo-compare on the primary; plain TCG; a checkpoint every
#           --checkpoint-ms (QEMU's default 20 s), and whenever
#           colo-compare sees the two sides' packets differ
#   colo:MS the same with a checkpoint every MS ms
#   ft-hostrtc  our pair with -rtc clock=host, the default before
#           2026-12-06: the RTC on the host clock, whose timers put most
#           main-loop events in the log under network load
#           (design-logging-channel.md; not run unless named in
#           --configs)
# For each, per round (the order rotated each round):
#   - a network run: launch to FT-READY (s), echo round trip p50/p99
#     (64-byte messages on one TCP connection), receive and transmit
#     throughput, resident memory of each QEMU after the run, and for
#     COLO the checkpoints it took and how long each paused the primary
#     (its colo_vm_state_change trace);
#   - a CPU run: the guest's sha256 chain (ft.cpu_iters), CPU start to
#     CPU result, wall seconds;
#   - a disk run (unless --fsyncs 0): bench_disk.py's workload on an
#     AHCI disk, a raw image opened with O_DIRECT: fsync latency p50/p99
#     and sequential write and read MiB/s.  tcg and icount use the image
#     directly, ft through blkreplay ft=on as a shared disk, COLO with
#     its block replication (quorum, replication over NBD to the
#     secondary's own copy, docs/COLO-FT.txt), and for COLO the
#     checkpoints taken during the run.
# Then --failovers kill -9 trials of ft and each colo, with 2 echo connections
# open: fault to live (FT_WENT_LIVE; for COLO, out of COLO mode with the
# NIC back on its tap, the secondary's failover commands issued at once,
# since COLO has no heartbeat of its own), and whether the guest's TCP
# connections survived.
# COLO runs from a QEMU built with it (scripts/build-qemu.sh --colo, which
# takes a few minutes; FT_COLO_QEMU overrides), the same source and
# patches as ours.  --machine picks the machine both COLO sides run
# (q35, as ours, by default).
# Not a test: nothing is asserted.
#
#   python3 tests/bench/bench_colo.py [--rounds N] [--seconds S]
#       [--cpu-iters N] [--failovers N] [--checkpoint-ms MS]
#       [--fsyncs N] [--disk-loops N] [--disk-mb N]
#       [--configs tcg,icount,ft,colo] [--json FILE]
#
# SPDX-License-Identifier: GPL-2.0-or-later

import argparse
import json
import os
import signal
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# The ft_test package (tests/functional/ft_test); see docs/development.md.
sys.path.insert(0, os.path.join(HERE, '..', 'functional'))
from ft_test import BridgeNet, Pair, Workdir, guest_args, \
    plain_drive, shared_drive, wait_event  # noqa: E402
from ft_test.colo import COLO_QEMU, ColoPair  # noqa: E402
from ft_test import percentile, rss_kib  # noqa: E402
from bench_icount import Watch  # noqa: E402
import bench_disk  # noqa: E402

CONFIGS = ('tcg', 'icount', 'ft', 'colo')


class Setup:
    """One configuration's VMs on @net in @wd: .vm (the one the client
    talks to), .con (its console), .others (the rest), started by
    launch()."""

    def __init__(self, config, append, net, wd, machine, checkpoint_ms,
                 disk=None):
        """@disk: a raw image for the guest's AHCI disk, if any."""
        self.config, self.pair = config, None
        if config in ('tcg', 'icount'):
            drive = plain_drive(disk) if disk else []
            self.vm, self.con = wd.make_vm(
                'vm', append, shift=None if config == 'tcg' else 5,
                args=net.nic_args(0, filters=False) + drive)
            self.others = []
        elif config in ('ft', 'ft-hostrtc'):
            rtc = ['-rtc', 'clock=host'] if config == 'ft-hostrtc' else []
            pd, bd = (shared_drive(disk, False), shared_drive(disk, True)) \
                if disk else ([], [])
            self.pair = Pair(append, workdir=wd, protected=True,
                             primary_args=net.nic_args(0) + rtc + pd,
                             backup_args=net.nic_args(1) + rtc + bd)
            self.vm, self.con = self.pair.primary, self.pair.pcon
            self.others = [self.pair.backup]
        else:
            # colo, or colo:MS with a checkpoint every MS ms
            ms = config.partition(':')[2]
            self.pair = ColoPair(append, net, wd, machine=machine,
                                 checkpoint_ms=int(ms) if ms
                                 else checkpoint_ms, disk=disk)
            self.vm, self.con = self.pair.primary, self.pair.pcon
            self.others = [self.pair.secondary]

    def launch(self):
        if self.pair:
            self.pair.start()
        else:
            self.vm.launch()

    def checkpoints(self):
        if not self.config.startswith('colo'):
            return None
        return self.pair.checkpoints()

    def mark(self):
        """Start counting checkpoints and their pauses (None: not COLO)."""
        if not self.config.startswith('colo'):
            return None
        return (self.pair.checkpoints(), len(self.pair.pauses_ms()))

    def since(self, mark, res):
        """Put the checkpoints and pauses since @mark into @res."""
        if mark is not None:
            res['checkpoints'] = self.pair.checkpoints() - mark[0]
            res['pauses_ms'] = self.pair.pauses_ms()[mark[1]:]


def net_run(config, seconds, machine, checkpoint_ms):
    with BridgeNet(os.getpid() % 1000) as net, \
            Workdir('bench_colo') as wd:
        append = guest_args(ip=net.GUEST_IP + '/24', work='echo,http',
                            http_mb=8)
        s = Setup(config, append, net, wd, machine, checkpoint_ms)
        t0 = time.monotonic()
        s.launch()
        w = Watch(s.con, ['^FT-READY'])
        w.start()
        try:
            res = {'boot_s': w.wait('^FT-READY', 300, s.vm) - t0}
        finally:
            w.halt.set()
        mark = s.mark()
        rtt = net.measure('rtt', seconds)
        res.update(rtt_p50_ms=rtt['rtt_p50_ms'], rtt_p99_ms=rtt['rtt_p99_ms'],
                   rtts_ms=rtt.get('rtts_ms', []))
        res['rx_mbps'] = net.measure('rx', seconds)['mbps']
        res['tx_mbps'] = net.measure('tx', seconds)['mbps']
        s.since(mark, res)
        res['rss_mib'] = [rss_kib(vm.get_pid()) / 1024
                          for vm in [s.vm] + s.others]
        return res


def cpu_run(config, iters, machine, checkpoint_ms):
    with BridgeNet(os.getpid() % 1000) as net, \
            Workdir('bench_colo') as wd:
        append = guest_args(ip=net.GUEST_IP + '/24', work='cpu',
                            cpu_iters=iters)
        s = Setup(config, append, net, wd, machine, checkpoint_ms)
        w = Watch(s.con, [r'^CPU start', r'^CPU result'])
        s.launch()
        w.start()
        try:
            t1 = w.wait(r'^CPU start', 300, s.vm)
            mark = s.mark()
            res = {'cpu_s': w.wait(r'^CPU result', 900, s.vm) - t1}
            s.since(mark, res)
            return res
        finally:
            w.halt.set()


def disk_run(config, d, machine, checkpoint_ms):
    """bench_disk.py's workload (@d: fsyncs, loops, mb) on @config."""
    with BridgeNet(os.getpid() % 1000) as net, \
            Workdir('bench_colo') as wd:
        disk = wd.make_disk('disk.img', max(16, d.mb * 2 + 1))
        append = guest_args(ip=net.GUEST_IP + '/24', work='disk',
                            disk_loops=d.loops, disk_mb=d.mb,
                            fsyncs=d.fsyncs)
        s = Setup(config, append, net, wd, machine, checkpoint_ms, disk)
        s.launch()
        s.con.wait(r'FT-READY', 300, s.vm)
        mark = s.mark()
        m = bench_disk.measure(s.vm, s.con, config.startswith('ft'), d)
        res = {'fsync_p50_ms': percentile(m['fsync_ms'], 50),
               'fsync_p99_ms': percentile(m['fsync_ms'], 99),
               'fsyncs_ms': m['fsync_ms'],
               'write_mibs': med(m['write_mibs']),
               'read_mibs': med(m['read_mibs'])}
        s.since(mark, res)
        if config.startswith('colo'):
            # the guest's writes reached the secondary's own copy
            res['replicated'] = s.pair.disk_replicated()
        return res


def failover_trial(config, machine, checkpoint_ms):
    with BridgeNet(os.getpid() % 1000) as net, \
            Workdir('bench_colo') as wd:
        append = guest_args(ip=net.GUEST_IP + '/24', work='echo')
        s = Setup(config, append, net, wd, machine, checkpoint_ms)
        s.launch()
        s.con.wait(r'FT-READY', 300, s.vm)
        client, stop = net.client(wd.path, conns=2)
        try:
            time.sleep(3)
            if config.startswith('colo'):
                t_kill, t_live = s.pair.kill_primary_and_fail_over()
            else:
                t_kill = time.time()
                os.kill(s.vm.get_pid(), signal.SIGKILL)
                ev = wait_event(s.pair.backup, 'FT_WENT_LIVE', 60)
                t_live = ev['timestamp']['seconds'] + \
                    ev['timestamp']['microseconds'] / 1e6
            time.sleep(3)
        except BaseException:
            client.kill()
            raise
        res = net.client_result(client, stop)
        errors = [e['error'] for e in res['echo'] if e['error']]
        return {'live_ms': (t_live - t_kill) * 1000,
                'conns_kept': sum(1 for e in res['echo']
                                  if not e['error'] and e['verified']),
                'conns': len(res['echo']),
                'max_stall_s': max(e['max_stall_s'] for e in res['echo']),
                'errors': errors}


def med(v):
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None


def measure(configs, rounds, seconds, cpu_iters, failovers, machine='q35',
            checkpoint_ms=None, log=print, disk=None):
    """Every run of @configs: {config: {'net': [...], 'cpu': [...],
    'disk': [...], 'failover': [...]}}, a run that failed as {'error':
    ...}.  @disk: the disk run's fsyncs, loops and mb (None: no disk
    run)."""
    res = {c: {'net': [], 'cpu': [], 'disk': [], 'failover': []}
           for c in configs}
    runs = [('net', net_run, seconds), ('cpu', cpu_run, cpu_iters)]
    if disk:
        runs.append(('disk', disk_run, disk))
    for r in range(rounds):
        order = configs[r % len(configs):] + configs[:r % len(configs)]
        for c in order:
            for kind, fn, arg in runs:
                try:
                    out = fn(c, arg, machine, checkpoint_ms)
                except Exception as e:   # noqa: BLE001  reported, goes on
                    out = {'error': str(e)[:300]}
                res[c][kind].append(out)
                log(f'round {r + 1} {c:6} {kind}: ' + str(
                    {k: v for k, v in out.items()
                     if k not in ('rtts_ms', 'pauses_ms', 'fsyncs_ms')}))
    for n in range(failovers):
        for c in configs:
            if c in ('tcg', 'icount'):
                continue
            try:
                out = failover_trial(c, machine, checkpoint_ms)
            except Exception as e:       # noqa: BLE001  reported, goes on
                out = {'error': str(e)[:300]}
            res[c]['failover'].append(out)
            log(f'failover {n + 1} {c:6}: {out}')
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--seconds', type=float, default=8,
                    help='each network measurement')
    ap.add_argument('--cpu-iters', type=int, default=400)
    ap.add_argument('--failovers', type=int, default=3,
                    help='kill -9 trials each of ft and colo')
    ap.add_argument('--machine', default='q35')
    ap.add_argument('--checkpoint-ms', type=int, default=None,
                    help="COLO's x-checkpoint-delay (QEMU's default: "
                    "20000)")
    ap.add_argument('--fsyncs', type=int, default=100,
                    help='the disk run\'s fsyncs (0: no disk run)')
    ap.add_argument('--disk-loops', type=int, default=3)
    ap.add_argument('--disk-mb', type=int, default=8)
    ap.add_argument('--configs', default=','.join(CONFIGS))
    ap.add_argument('--json', default=None)
    a = ap.parse_args()
    configs = a.configs.split(',')
    if any(c.startswith('colo') for c in configs) and \
            not os.path.exists(COLO_QEMU):
        sys.exit(f'{COLO_QEMU}: not built; run scripts/build-qemu.sh --colo')
    disk = argparse.Namespace(fsyncs=a.fsyncs, loops=a.disk_loops,
                              mb=a.disk_mb) if a.fsyncs else None
    res = measure(configs, a.rounds, a.seconds, a.cpu_iters, a.failovers,
                  a.machine, a.checkpoint_ms,
                  log=lambda m: print(m, flush=True), disk=disk)
    print_summary(res, configs)
    if a.json:
        with open(a.json, 'w') as f:
            json.dump({'args': vars(a), 'results': res}, f, indent=1)
    return 0


def summary(res, configs):
    """{config: {figure: median}} of the rounds without an error."""
    out = {}
    for c in configs:
        net = [x for x in res[c]['net'] if 'error' not in x]
        cpu = [x for x in res[c]['cpu'] if 'error' not in x]
        disk = [x for x in res[c].get('disk', []) if 'error' not in x]
        fo = [x for x in res[c]['failover'] if 'error' not in x]
        f = {k: med([x[k] for x in net]) for k in
             ('boot_s', 'rtt_p50_ms', 'rtt_p99_ms', 'rx_mbps', 'tx_mbps')}
        f['cpu_s'] = med([x['cpu_s'] for x in cpu])
        for k in ('fsync_p50_ms', 'fsync_p99_ms', 'write_mibs',
                  'read_mibs'):
            f[k] = med([x[k] for x in disk])
        for i, side in enumerate(('rss_primary_mib', 'rss_backup_mib')):
            f[side] = med([x['rss_mib'][i] for x in net
                           if len(x['rss_mib']) > i])
        if c.startswith('colo'):
            f['checkpoints_net'] = med([x.get('checkpoints') for x in net])
            f['checkpoints_cpu'] = med([x.get('checkpoints') for x in cpu])
            f['checkpoints_disk'] = med([x.get('checkpoints')
                                         for x in disk])
            f['disk_replicated'] = (sum(1 for x in disk
                                        if x.get('replicated')), len(disk))
            pauses = sorted(p for x in net + cpu + disk
                            for p in x.get('pauses_ms') or [])
            if pauses:
                f['pause_p50_ms'] = percentile(pauses, 50)
                f['pause_p99_ms'] = percentile(pauses, 99)
                f['pauses'] = len(pauses)
        if fo:
            f['live_ms'] = med([x['live_ms'] for x in fo])
            f['live_ms_max'] = max(x['live_ms'] for x in fo)
            f['conns_kept'] = (sum(x['conns_kept'] for x in fo),
                               sum(x['conns'] for x in fo))
        f['errors'] = sum(1 for k in ('net', 'cpu', 'disk', 'failover')
                          for x in res[c].get(k, []) if 'error' in x)
        out[c] = f
    return out


RATIOS = (('cpu_speed', 'cpu_s', True), ('rtt_p50', 'rtt_p50_ms', False),
          ('rtt_p99', 'rtt_p99_ms', False), ('rx', 'rx_mbps', False),
          ('tx', 'tx_mbps', False), ('fsync_p50', 'fsync_p50_ms', False),
          ('fsync_p99', 'fsync_p99_ms', False),
          ('write', 'write_mibs', False), ('read', 'read_mibs', False))
# The columns of the two ratio tables, as print_summary() and the report
# show them
NET_RATIOS = ('cpu_speed', 'rtt_p50', 'rtt_p99', 'rx', 'tx')
DISK_RATIOS = ('fsync_p50', 'fsync_p99', 'write', 'read')


def ratios(s, configs):
    """[(protected, baseline, {ratio: value or None})] of @s (summary()):
    our pair against the VM at -icount and on plain TCG, and each COLO
    configuration against plain TCG.  The speed is the baseline's time
    over the protected one's; the others are protected over baseline."""
    out = []
    ours = [c for c in configs if c.startswith('ft')]
    pairs = [(c, 'icount') for c in ours] + [(c, 'tcg') for c in ours] + \
        [(c, 'tcg') for c in configs if c.startswith('colo')]
    for prot, base in pairs:
        if prot not in s or base not in s:
            continue
        p, b = s[prot], s[base]
        r = {}
        for name, k, invert in RATIOS:
            if not p.get(k) or not b.get(k):
                r[name] = None
            else:
                r[name] = b[k] / p[k] if invert else p[k] / b[k]
        out.append((prot, base, r))
    return out


def print_summary(res, configs):
    s = summary(res, configs)

    def cell(c, k, nd=2):
        v = s.get(c, {}).get(k)
        return '-' if v is None else f'{v:.{nd}f}'

    print()
    print('medians | ' + ' | '.join(configs))
    for k, nd in (('boot_s', 2), ('cpu_s', 2), ('rtt_p50_ms', 3),
                  ('rtt_p99_ms', 3), ('rx_mbps', 0), ('tx_mbps', 0),
                  ('fsync_p50_ms', 2), ('fsync_p99_ms', 2),
                  ('write_mibs', 2), ('read_mibs', 2),
                  ('rss_primary_mib', 0), ('rss_backup_mib', 0),
                  ('live_ms', 1), ('live_ms_max', 1), ('pause_p50_ms', 1),
                  ('pause_p99_ms', 1)):
        print(f'{k:16} | ' + ' | '.join(cell(c, k, nd) for c in configs))
    for c in configs:
        extra = {k: s[c][k] for k in ('checkpoints_net', 'checkpoints_cpu',
                                      'checkpoints_disk',
                                      'disk_replicated', 'pauses',
                                      'conns_kept', 'errors')
                 if k in s[c]}
        print(f'{c}: {extra}')
    # Each protected configuration against its own unprotected baseline
    print()
    for prot, base, r in ratios(s, configs):
        def cell_r(k):
            return '-' if r[k] is None else f'{r[k]:.2f}'
        print(f'{prot} / {base}: speed (cpu) {cell_r("cpu_speed")}, '
              f'RTT p50 {cell_r("rtt_p50")} p99 {cell_r("rtt_p99")}, '
              f'rx {cell_r("rx")}, tx {cell_r("tx")}, '
              f'fsync p50 {cell_r("fsync_p50")} p99 {cell_r("fsync_p99")}, '
              f'write {cell_r("write")}, read {cell_r("read")}')


if __name__ == '__main__':
    sys.exit(main())
