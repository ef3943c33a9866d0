#!/usr/bin/env python3
#
# Restoring redundancy (x-ft-protect, docs/restoring-redundancy.md) over
# many re-protections, for each guest memory size and load.  One protected
# pair boots per (memory, load); then, --runs times in a row on the same
# primary:
#   - x-ft-detach on the primary: it wins the lock of its generation and
#     runs on alone (x-query-ft state 'live'); the old backup, stopped in
#     'ended', is killed;
#   - a new backup joins (rrjoin=on, -incoming), started before anything
#     is measured so that its start-up does not weigh on the figures;
#   - the primary's speed alone is sampled over --before seconds;
#   - x-ft-protect, then query-migrate every --poll-ms (50) until the
#     migration completed (the transfer), then FT_PROTECTED;
#   - the pair streams for --settle seconds, and the new backup's digest
#     checks are read before the next detach.
# Loads (guest/init workloads, all with the ticker): idle (the ticker
# alone), cpu (sha256 loop), disk (4 MiB written with fsync and read back,
# forever, on one image shared through blkreplay ft=on), network (the
# guest's TCP echo server on a bridged tap, with ft_test.client streaming
# through 4 connections for the whole series).
# Prints per run, then per (memory, load):
#   - the pause at the switchover (FT_PROTECTED pause-ms), p50 and p99;
#   - x-ft-protect to FT_PROTECTED (total-ms), p50 and max;
#   - bytes migrated (FT_PROTECTED bytes), p50;
#   - the primary's speed during the transfer (from the command until
#     query-migrate says 'completed') as a ratio to its speed alone just
#     before, in guest instructions per wall second (icount), p50 and
#     min; and the same ratio in guest clock (query-replay clock-ns) per
#     wall second, p50: an idle guest executes too few instructions for
#     their rate to mean much, its clock is what shows a stall;
#   - how many runs had QEMU processes of somebody else on the host
#     (this host is shared: their load shows in the pauses).
# The pause is mostly the migration's stop-and-copy: QEMU stops the VM
# once what is left to send fits its downtime-limit at the bandwidth it
# measured, so on a loaded host it can last longer; x-ft-protect sets
# that limit to its max-pause-ms (50 ms by default; --downtime-ms).
# query-migrate's figures of each run are in the JSON: downtime,
# downtime-bytes, mbps.
# A run that fails (FT_PROTECT_FAILED, a timeout, a new backup that
# diverged) is printed with the lines of the VMs' logs that tell why, the
# series goes on, and the work directory is kept.
# The QEMU binary is build/qemu's, or $FT_QEMU's (ft_test.config): on
# a host where somebody may relink build/qemu meanwhile, run a copy of it
# there so that every VM of the run is of one build.
# Not a test: nothing is timed against a limit.
#
#   python3 tests/bench/bench_protect.py [--runs N] [--memory 256,1024]
#       [--loads idle,cpu,disk,network] [--before S] [--settle S]
#       [--downtime-ms MS] [--rrx ,opt=v] [--json FILE]
#   quick: python3 tests/bench/bench_protect.py --runs 3 --memory 256 \
#              --loads idle
#
# SPDX-License-Identifier: GPL-2.0-or-later

import argparse
import glob
import json
import os
import re
import sys
import time

# The ft_test package (tests/functional/ft_test); see docs/development.md.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'functional'))
from ft_test import QEMU_BIN, WORKLOADS, BridgeNet, Pair, Workdir, \
    guest_args, percentile as pct, query_replay, shared_drive  # noqa: E402
from ft_test.protect import protect_cmd, start_joiner  # noqa: E402
from ft_test.vm import kill  # noqa: E402

LOADS = ('idle', 'cpu', 'disk', 'network')
# query-migrate states of a migration under way
MOVING = ('setup', 'active', 'pre-switchover', 'device', 'wait-unplug')
# Lines of a VM's log worth showing when a run fails
TELLING = re.compile(r'differs|diverg|mismatch|error|fail|lost|halt',
                     re.I)


class RunFailed(Exception):
    pass


def foreign_qemus(wd):
    """QEMU processes on this host that are not ours (not in @wd): the
    host is shared, and they weigh on the figures."""
    n = 0
    for pid in os.listdir('/proc'):
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                cmd = f.read()
        except (OSError, ValueError):
            continue
        if b'qemu-system' in cmd.split(b'\0')[0] and \
                wd.path.encode() not in cmd:
            n += 1
    return n


def qemu_build(timeout=300):
    """The mtime of the QEMU binary, once it can be run: this host is
    shared, and somebody may be relinking it (it is not executable
    meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            st = os.stat(QEMU_BIN)
            if os.access(QEMU_BIN, os.X_OK) and \
                    time.time() - st.st_mtime > 2:
                return st.st_mtime
        except FileNotFoundError:
            pass
        if time.monotonic() > deadline:
            raise RunFailed(f'{QEMU_BIN} not executable for {timeout}s')
        time.sleep(1)


def joiner(wd, name, append, pair, args, memory, rrx, tries=3):
    """start_joiner(), again if the binary was being relinked."""
    for n in range(1, tries + 1):
        qemu_build()
        try:
            return start_joiner(wd, name if n == 1 else f'{name}.{n}',
                                append, pair.lock_dir, pair.vm_uuid,
                                args=args, memory=memory, icount_extra=rrx)
        except Exception as e:  # noqa: BLE001  VMLaunchFailure
            if n == tries or 'Permission denied' not in str(e):
                raise
            print(f'      {QEMU_BIN} not executable (being rebuilt?): '
                  'starting the new backup again', flush=True)


def answers(vm):
    """Whether @vm still answers QMP (a QEMU that aborted may take a while
    to exit: it dumps its core)."""
    try:
        vm.cmd('query-status')
        return True
    except Exception:   # noqa: BLE001  gone, or going
        return False


def bridge_tag():
    """A BridgeNet tag whose bridge does not exist yet (BridgeNet tears
    down whatever has its names, another user's included)."""
    for i in range(1000):
        tag = (os.getpid() + i) % 1000
        if not os.path.exists(f'/sys/class/net/ftbr{tag}'):
            return tag
    raise RuntimeError('no free BridgeNet tag')


def load_setup(load, wd, net):
    """(kernel command line, primary's args, backup's args) of @load."""
    if load == 'idle':
        return WORKLOADS['ticker'].append(), [], []
    if load == 'cpu':
        return WORKLOADS['cpu'].append(), [], []
    if load == 'disk':
        img = wd.make_disk('shared.img', 16)
        return (WORKLOADS['disk'].append(), shared_drive(img, False),
                shared_drive(img, True))
    if load == 'network':
        return (guest_args(ip=net.GUEST_IP + '/24', work='echo,ticker'),
                net.nic_args(0), net.nic_args(1))
    raise ValueError(load)


def rate(a, b):
    """Instructions and guest clock (s) per wall second between two
    query_replay() samples."""
    dt = b[0] - a[0]
    return {'insns': (b[1] - a[1]) / dt, 'clock': (b[2] - a[2]) / dt / 1e9,
            'seconds': dt}


def wait_state(vm, state, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        info = vm.cmd('x-query-ft')
        if info['state'] == state:
            return info
        if time.monotonic() > deadline:
            raise RunFailed(f'{vm._name}: x-query-ft state '
                            f'{info["state"]!r}, not {state!r} after '
                            f'{timeout}s')
        time.sleep(0.05)


def poll_event(vm, gen):
    """FT_PROTECTED of generation @gen or FT_PROTECT_FAILED, if one came
    (events of other generations, such as a pair's own at boot, are
    dropped)."""
    while True:
        ev = vm.events_wait([('FT_PROTECTED', None),
                             ('FT_PROTECT_FAILED', None)], 0)
        if ev is None or ev['event'] == 'FT_PROTECT_FAILED' or \
                ev['data']['generation'] == gen:
            return ev


def transfer(p, port, mig, timeout, poll=0.05, pause_ms=None):
    """x-ft-protect on @p towards a joiner on @port/@mig, sampling @p's
    speed until the migration completed; then wait for FT_PROTECTED.
    Returns (event data, figures)."""
    prev = p.cmd('query-migrate')
    a = query_replay(p)
    gen = protect_cmd(p, port, mig, **({} if pause_ms is None else
                                       {'max-pause-ms': pause_ms}))
    deadline = a[0] + timeout
    ev, seen, polls = None, set(), 0
    while True:
        time.sleep(poll)
        ev = poll_event(p, gen)
        st = p.cmd('query-migrate')
        status = st.get('status')
        polls += 1
        seen.add(status)
        # Until the new migration shows, query-migrate tells the last one
        fresh = bool(seen & set(MOVING)) or \
            st.get('total-time') != prev.get('total-time')
        if ev or status in ('failed', 'cancelled') or \
                (status == 'completed' and fresh):
            break
        if time.monotonic() > deadline:
            raise RunFailed(f'migration still {status!r} after {timeout}s')
    b = query_replay(p)
    while ev is None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RunFailed(f'no FT_PROTECTED for generation {gen} after '
                            f'{timeout}s (migration {status!r})')
        try:
            ev = p.events_wait([('FT_PROTECTED',
                                 {'data': {'generation': gen}}),
                                ('FT_PROTECT_FAILED', None)],
                               float(min(left, 5)))
        except TimeoutError:
            pass
    if ev['event'] == 'FT_PROTECT_FAILED':
        raise RunFailed(f'FT_PROTECT_FAILED: {ev["data"]["reason"]}')
    fig = {'generation': gen, 'during': rate(a, b), 'migrate_status': status,
           'migrate_states': sorted(s for s in seen if s),
           'polls': polls, 'protected_s': time.monotonic() - a[0]}
    if status == 'completed':
        fig['migrate'] = {k: st.get(k) for k in ('total-time', 'downtime',
                                                 'setup-time')}
        for k in ('dirty-sync-count', 'downtime-bytes', 'transferred',
                  'mbps', 'dirty-pages-rate'):
            fig['migrate'][k] = st.get('ram', {}).get(k)
    return ev['data'], fig


def log_lines(wd, limit=12):
    """The telling lines of every VM log in @wd, for a failure."""
    out = []
    for path in sorted(glob.glob(os.path.join(wd.path, '*.log'))):
        with open(path, errors='replace') as f:
            hits = [ln.rstrip() for ln in f if TELLING.search(ln)]
        out += [f'{os.path.basename(path)}: {ln}' for ln in hits[-limit:]]
    return out


def one_run(wd, pair, state, append, backup_args, memory, a, fig):
    """One detach and re-protection of @pair's primary; @state holds the
    VM that is its backup now ('backup').  Puts the run's figures in
    @fig as they come (a failed run keeps those it got)."""
    p = pair.primary
    found = p.cmd('x-query-ft')['state']
    if found == 'streaming':
        p.cmd('x-ft-detach')
    # (after a failed run, or a false failover on a loaded host, the
    # primary may be arbitrating, or live already)
    info = wait_state(p, 'live')
    kill(state['backup'])
    gen = info['generation'] + 1
    fig.update(state_found=found, generation=gen)
    j, _, port, mig = joiner(wd, f'backup{gen}-run{state["run"]}', append,
                             pair, backup_args, memory, a.rrx)
    state['backup'] = j
    fig['other_build'] = os.stat(QEMU_BIN).st_mtime != state['build']
    time.sleep(0.5)
    others = foreign_qemus(wd)
    s0 = query_replay(p)
    time.sleep(a.before)
    before = rate(s0, query_replay(p))
    fig['before'] = before
    data, got = transfer(p, port, mig, a.timeout, a.poll_ms / 1000,
                         a.downtime_ms)
    fig.update(got)
    fig['foreign_qemus'] = max(others, foreign_qemus(wd))
    fig.update(pause_ms=data['pause-ms'],
               total_ms=data['total-ms'], bytes=data['bytes'])
    d = fig['during']
    fig['ratio_insns'] = d['insns'] / before['insns'] \
        if before['insns'] else float('nan')
    fig['ratio_clock'] = d['clock'] / before['clock'] \
        if before['clock'] else float('nan')
    time.sleep(a.settle)
    ji, pi = j.cmd('x-query-ft'), p.cmd('x-query-ft')
    fig['backup'] = {'state': ji['state'], 'protected': ji.get('protected'),
                     'checks': ji['digest']['checks'],
                     'mismatches': ji['digest']['mismatches'],
                     'mismatch': ji['digest'].get('mismatch')}
    fig['primary_state'] = pi['state']
    if ji['state'] != 'streaming' or ji['digest']['mismatches'] or \
            pi['state'] != 'streaming':
        raise RunFailed(f'after FT_PROTECTED: primary {pi["state"]}, new '
                        f'backup {ji["state"]}, digest {ji["digest"]}')


def series(memory, load, a, net, boots=3):
    """--runs re-protections of one pair running @load with @memory MiB.
    Returns the list of runs (failed ones with 'error').  A pair that
    fails before its first run (a false failover while it boots on a
    loaded host, say) is booted again, up to @boots times in all."""
    runs = []       # (a failed boot's record too)
    for boot in range(1, boots + 1):
        wd = Workdir(f'bench_protect.{memory}.{load}')
        ok = False
        try:
            append, p_args, b_args = load_setup(load, wd, net)
            build = qemu_build()
            with Pair(append, workdir=wd, protected=True, memory=memory,
                      rrx=a.rrx, primary_args=p_args,
                      backup_args=b_args) as pair:
                pair.pcon.wait(r'FT-READY', 300, pair.primary)
                pair.pcon.wait(r'TICK 2\b', 120, pair.primary)
                protect_runs(wd, pair, append, b_args, memory, load, a,
                             net, runs, build)
            ok = True
            return runs
        except Exception as e:     # noqa: BLE001  the pair itself failed
            print(f'{memory:5} {load:8} FAILED to run the pair: {e} '
                  f'(logs: {wd.path})', flush=True)
            for ln in log_lines(wd):
                print(f'      {ln}', flush=True)
            runs.append({'memory': memory, 'load': load, 'run': 0,
                         'boot': boot, 'error': f'{type(e).__name__}: {e}',
                         'log': log_lines(wd)})
            if any(r['run'] for r in runs) or boot == boots:
                return runs
            print(f'{memory:5} {load:8} booting the pair again', flush=True)
        finally:
            # every VM killed (the joiners too); the logs kept on failure
            wd.close(keep=not ok)


def protect_runs(wd, pair, append, b_args, memory, load, a, net, runs,
                 pair_build):
    """--runs re-protections of @pair (started, its guest ready), into
    the list @runs."""
    p = pair.primary
    client = stop = None
    try:
        if load == 'network':
            client, stop = net.client(wd.path, conns=4)
            time.sleep(2)
        state = {'backup': pair.backup, 'build': pair_build}
        for n in range(1, a.runs + 1):
            state['run'] = n
            r = {'memory': memory, 'load': load, 'run': n}
            try:
                one_run(wd, pair, state, append, b_args, memory, a, r)
            except Exception as e:  # noqa: BLE001  reported, go on
                r['error'] = f'{type(e).__name__}: {e}'
                r['log'] = log_lines(wd)
                wd.keep = True
                print(f'{memory:5} {load:8} {n:3} FAILED: {r["error"]}'
                      f' (logs: {wd.path})', flush=True)
                for ln in r['log']:
                    print(f'      {ln}', flush=True)
                runs.append(r)
                if not answers(p):
                    print(f'{memory:5} {load:8} the primary is gone: '
                          'series ends', flush=True)
                    break
                continue
            runs.append(r)
            print(f'{memory:5} {load:8} {n:3} gen {r["generation"]:3}: '
                  f'pause {r["pause_ms"]:7.1f} ms, protected after '
                  f'{r["total_ms"]:7.1f} ms, {r["bytes"] / 1e6:6.1f} MB, '
                  f'speed during/before {r["ratio_insns"]:5.2f} (clock '
                  f'{r["ratio_clock"]:4.2f}), backup '
                  f'{r["backup"]["checks"]} checks' +
                  (f'; {r["foreign_qemus"]} other QEMUs on the host'
                   if r['foreign_qemus'] else '') +
                  ('; the primary was found live (no detach)'
                   if r['state_found'] != 'streaming' else '') +
                  ('; the new backup runs a QEMU rebuilt since the pair '
                   'started' if r['other_build'] else ''), flush=True)
        if client:
            res = net.client_result(client, stop)
            client = None
            errs = [e['error'] for e in res['echo'] if e['error']]
            for r in runs:
                r['echo_errors'] = errs
            print(f'{memory:5} {load:8} echo client: '
                  f'{sum(e["verified"] for e in res["echo"]) / 1e6:.1f} MB '
                  f'echoed over {res["seconds"]:.0f} s, errors: '
                  f'{errs or "none"}', flush=True)
    finally:
        if client:
            with open(stop, 'w'):
                pass
            client.kill()
            client.wait()


def table(results, memories, loads):
    print()
    print('| memory | load | ok/runs | pause p50 ms | pause p99 ms '
          '| protected p50 ms | protected max ms | MB p50 '
          '| speed during/before p50 (min) | guest clock p50 '
          '| runs beside other QEMUs |')
    print('|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for memory in memories:
        for load in loads:
            rs = [r for r in results
                  if r['memory'] == memory and r['load'] == load]
            ok = [r for r in rs if 'error' not in r]
            n = f'{len(ok)}/{len([r for r in rs if r["run"]])}'
            if not ok:
                print(f'| {memory} MiB | {load} | {n} |' + ' - |' * 8)
                continue
            pause = [r['pause_ms'] for r in ok]
            total = [r['total_ms'] for r in ok]
            ins = [r['ratio_insns'] for r in ok]
            clk = [r['ratio_clock'] for r in ok]
            print(f'| {memory} MiB | {load} | {n} | {pct(pause, 50):.1f} '
                  f'| {pct(pause, 99):.1f} | {pct(total, 50):.0f} '
                  f'| {max(total):.0f} '
                  f'| {pct([r["bytes"] for r in ok], 50) / 1e6:.1f} '
                  f'| {pct(ins, 50):.2f} ({min(ins):.2f}) '
                  f'| {pct(clk, 50):.2f} '
                  f'| {len([r for r in ok if r["foreign_qemus"]])} |')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--runs', type=int, default=10,
                    help='re-protections per memory size and load')
    ap.add_argument('--memory', default='256,1024',
                    help='guest memory sizes in MiB, comma-separated')
    ap.add_argument('--loads', default=','.join(LOADS),
                    help=f'comma-separated, of {",".join(LOADS)}')
    ap.add_argument('--before', type=float, default=2.0,
                    help='seconds of the primary alone sampled before '
                    'each x-ft-protect')
    ap.add_argument('--settle', type=float, default=1.0,
                    help='seconds the new pair streams before the next '
                    'detach')
    ap.add_argument('--timeout', type=float, default=120,
                    help='seconds from x-ft-protect to FT_PROTECTED')
    ap.add_argument('--downtime-ms', type=int,
                    help="x-ft-protect's max-pause-ms, the migration's "
                    "downtime-limit for the transfer (default 50)")
    ap.add_argument('--poll-ms', type=float, default=50,
                    help='query-migrate period during the transfer')
    ap.add_argument('--rrx', default='',
                    help='more -icount options for every VM, such as '
                    ',rrtimeout=1000 on an overloaded host')
    ap.add_argument('--json', help='write all runs here')
    a = ap.parse_args()
    memories = [int(m) for m in a.memory.split(',')]
    loads = a.loads.split(',')
    for load in loads:
        if load not in LOADS:
            ap.error(f'unknown load {load!r}: one of {", ".join(LOADS)}')
    if 'network' in loads and os.geteuid() != 0:
        sys.exit('the network load needs root (taps, bridge, namespace)')
    results = []
    t0 = time.monotonic()
    for memory in memories:
        for load in loads:
            if load == 'network':
                with BridgeNet(bridge_tag()) as net:
                    results += series(memory, load, a, net)
            else:
                results += series(memory, load, a, None)
    failed = [r for r in results if 'error' in r]
    print(f'\n{len(results) - len(failed)} re-protections, {len(failed)} '
          f'failed, in {time.monotonic() - t0:.0f} s')
    rebuilt = [r for r in results if r.get('other_build')]
    if rebuilt:
        print(f'{len(rebuilt)} runs: the new backup ran a QEMU binary '
              'rebuilt since its pair started')
    table(results, memories, loads)
    if a.json:
        with open(a.json, 'w') as f:
            json.dump(results, f, indent=1)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
