# Logging channel: a primary streams its replay log live to a backup that
# replays it in lockstep.
#
# Real QEMU processes boot the real test guest; the channel runs over TCP
# on 127.0.0.1.  Faults are real: kill -9, SIGSTOP, and a man-in-the-middle
# proxy that damages the frames on the wire.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import os
import random
import signal
import socket
import struct
import threading
import time
import unittest

from ft_test import WORKLOADS, Echo, FTTestCase, devices, free_tcp_port, \
    ticks, wait_port, wait_runstate
from ft_test.wire import FRAME_DATA, FRAME_HELLO, PROTO_VERSION, frame, \
    hello

# How long the lockstep tests run once the guest is ready (longer runs:
# FT_PAIR_SECONDS)
PAIR_SECONDS = int(os.environ.get('FT_PAIR_SECONDS', '15'))


class FrameProxy:
    """TCP proxy primary -> backup that can damage one DATA frame.

    mode: None, 'corrupt' (flip a payload byte), 'repeat' (send it twice),
    'drop' (leave it out), 'truncate' (send half of it, then cut both
    connections).
    """

    def __init__(self, listen_port, target_port, mode=None, nth=200):
        self.mode, self.nth = mode, nth
        self.target_port = target_port
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(('127.0.0.1', listen_port))
        self.lsock.listen(1)
        self.done = threading.Event()
        self.data_frames = 0
        self.damaged = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        a, _ = self.lsock.accept()
        b = socket.create_connection(('127.0.0.1', self.target_port))
        threading.Thread(target=self._pipe, args=(b, a), daemon=True).start()
        buf = b''
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                buf += d
                while len(buf) >= 32:
                    ln = struct.unpack_from('<I', buf, 12)[0]
                    if len(buf) < 32 + ln:
                        break
                    f, buf = buf[:32 + ln], buf[32 + ln:]
                    if f[5] == FRAME_DATA:
                        self.data_frames += 1
                        if self.data_frames == self.nth and self.mode:
                            self.damaged = True
                            if self.mode == 'corrupt':
                                f = f[:-1] + bytes([f[-1] ^ 0x40])
                            elif self.mode == 'repeat':
                                b.sendall(f)
                            elif self.mode == 'drop':
                                continue
                            elif self.mode == 'truncate':
                                b.sendall(f[:16 + ln // 2])
                                return
                    b.sendall(f)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.done.set()

    @staticmethod
    def _pipe(src, dst):
        try:
            while True:
                d = src.recv(65536)
                if not d:
                    break
                dst.sendall(d)
        except OSError:
            pass


class FTChannelTest(FTTestCase):

    def lockstep(self, workload, seconds=PAIR_SECONDS):
        """Run a pair of @workload (ft_test.WORKLOADS) for @seconds after
        the guest is ready; check that the backup keeps in lockstep.  A
        guest with a network echoes a stream meanwhile (self.echo).
        Returns the samples."""
        port = free_tcp_port()
        p, pcon, b, bcon = self.make_pair(
            WORKLOADS[workload].append(),
            primary_args=devices(workload, 'primary', self.make_disk, port),
            backup_args=devices(workload, 'backup', self.make_disk))
        pcon.wait(r'FT-READY', 120, p)
        stop = threading.Event()
        if WORKLOADS[workload].net:
            self.echo = Echo('127.0.0.1', port, stop=stop.is_set,
                             reconnect=True, timeout=10)
            self.echo.start()
        samples = []
        clocks = []
        slowest = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(1)
            pi, pt = self.ft(p)
            bi, bt = self.ft(b)
            slowest = max(slowest, pt, bt)
            samples.append((pi, bi))
            clocks.append((p.cmd('query-replay')['clock-ns'],
                           b.cmd('query-replay')['clock-ns']))
            self.assertEqual(pi['state'], 'streaming', pi)
            self.assertEqual(bi['state'], 'streaming', bi)
            self.assertEqual(bi['digest']['mismatches'], 0, bi)
        stop.set()
        pi, bi = samples[-1]
        self.log.info('primary %s', pi)
        self.log.info('backup %s', bi)
        # The backup checked digests all along (one per 100 ms of guest
        # execution: an idle guest executes little) and kept playing
        self.assertGreater(bi['digest']['checks'], seconds)
        self.assertGreater(bi['log-consumed'], samples[0][1]['log-consumed'])
        # Lag stayed within the bound (plus the staleness of the report)
        worst = max(s[0]['lag-ms'] for s in samples)
        self.assertLess(worst, pi['max-lag-ms'] + 500, samples)
        # x-query-ft answered promptly on both sides
        self.assertLess(slowest, 500)
        # Both guests' clocks moved on, at least as fast as the wall clock
        # (icount runs the clock faster when busy, the warp as fast when
        # idle), less the lag bound and the reports' staleness
        for side in (0, 1):
            moved = (clocks[-1][side] - clocks[0][side]) / 1e9
            self.assertGreater(moved, (len(clocks) - 1) * 0.9 - 1.5,
                               [c[side] for c in clocks])
        # What the backup printed, the primary printed first
        time.sleep(2)
        ptext, btext = pcon.text(), bcon.text()
        self.assertTrue(ptext.startswith(btext[:len(btext) - 200]),
                        'backup console is not a prefix of the primary')
        return samples

    def test_lockstep_idle(self):
        self.lockstep('idle')

    def test_lockstep_ticker(self):
        self.lockstep('ticker')

    def test_lockstep_cpu(self):
        self.lockstep('cpu')

    def test_lockstep_disk(self):
        # Until the shared disk (issue 6) each side has its own copy.
        self.lockstep('disk')

    def test_lockstep_network(self):
        self.lockstep('network')
        self.assertGreater(self.echo.verified, 64 * 1024, 'no echo traffic')

    # -- divergence -----------------------------------------------------

    def test_divergence_is_detected(self):
        append = self.guest_args(work='ticker')
        p, pcon, b, bcon = self.make_pair(append,
                                          backup_append=append + ' ft.x=1')
        ev = self.wait_event(b, 'FT_DIVERGENCE', 120)
        self.log.info('divergence: %s', ev)
        bi, _ = self.ft(b)
        self.assertEqual(bi['state'], 'diverged')
        self.assertGreaterEqual(bi['digest']['mismatches'], 1)
        self.assertEqual(bi['digest']['mismatch-icount'],
                         ev['data']['icount'])
        self.wait_runstate(b, ['internal-error'], 30)
        # The primary loses its backup and runs on unprotected
        self.wait_event(p, 'FT_PEER_LOST', 30)
        n = len(pcon.lines())
        pcon.wait(r'TICK \d+', 60, p)
        time.sleep(3)
        self.assertGreater(len(pcon.lines()), n)
        self.assertEqual(self.ft(p)[0]['state'], 'peer-lost')

    # -- failures -------------------------------------------------------

    def test_kill_backup(self):
        p, pcon, b, bcon = self.make_pair(self.guest_args(work='ticker'))
        pcon.wait(r'TICK 2\b', 120, p)
        os.kill(b.get_pid(), signal.SIGKILL)
        ev = self.wait_event(p, 'FT_PEER_LOST', 30)
        self.log.info('%s', ev)
        pi, t = self.ft(p)
        self.assertEqual(pi['state'], 'peer-lost')
        self.assertLess(t, 500)
        m = pcon.wait(r'TICK (\d+)', 30, p)
        pcon.wait(rf'TICK {int(m.group(1)) + 3}\b', 60, p)

    def test_sigstop_backup(self):
        p, pcon, b, bcon = self.make_pair(
            self.guest_args(work='ticker'), rrx=',rrtimeout=1000')
        pcon.wait(r'TICK 2\b', 120, p)
        os.kill(b.get_pid(), signal.SIGSTOP)
        try:
            ev = self.wait_event(p, 'FT_PEER_LOST', 30)
            self.assertIn('no ACK or heartbeat', ev['data']['reason'])
            m = pcon.wait(r'TICK (\d+)', 30, p)
            pcon.wait(rf'TICK {int(m.group(1)) + 3}\b', 60, p)
        finally:
            os.kill(b.get_pid(), signal.SIGCONT)

    def backup_follows(self, p, pcon, b, bcon):
        """The backup plays past the primary's newest tick, streaming and
        with every digest matched, and the primary streams too."""
        last = ticks(pcon.text())[-1]
        bcon.wait(rf'TICK {last + 2}\b', 60, b)
        bi, _ = self.ft(b)
        self.assertEqual(bi['state'], 'streaming', bi)
        self.assertEqual(bi['digest']['mismatches'], 0, bi)
        pi, _ = self.ft(p)
        self.assertEqual(pi['state'], 'streaming', pi)

    def test_primary_stop_cont(self):
        """QMP stop and cont on a primary, as a management tool does
        (suspend and resume, a snapshot), with a disk and a network busy:
        the backup stops where its primary stopped (the log says where),
        and starts where it started, so that its devices act at cont
        where the primary's did; it keeps in lockstep through several of
        them."""
        rnd = random.Random(os.environ.get('FT_SEED'))
        port = free_tcp_port()
        p, pcon, b, bcon = self.make_pair(
            WORKLOADS['baseline'].append(work='echo,ticker,disk', ticks=0,
                                         disk_loops=0),
            primary_args=devices('baseline', 'primary', self.make_disk,
                                 port),
            backup_args=devices('baseline', 'backup', self.make_disk),
            rrx=',rrtimeout=10000')
        pcon.wait(r'FT-READY', 120, p)
        for _ in range(4):
            time.sleep(rnd.uniform(0.5, 2))
            p.cmd('stop')
            self.assertEqual(wait_runstate(b, ('paused',), 30), 'paused')
            time.sleep(rnd.uniform(0.1, 1.5))
            p.cmd('cont')
        self.assertEqual(wait_runstate(b, ('running',), 30), 'running')
        self.backup_follows(p, pcon, b, bcon)
        ptext, btext = pcon.text(), bcon.text()
        self.assertTrue(ptext.startswith(btext[:len(btext) - 200]),
                        'backup console is not a prefix of the primary')

    def test_stopped_backup_not_diverged(self):
        """A backup stopped for longer than the stall watch's 5 s, within
        its primary's rrtimeout, goes on streaming when it continues: a
        replay that could not run has not stalled.  The guest computes,
        so that log waits to be played when the backup stops."""
        p, pcon, b, bcon = self.make_pair(
            WORKLOADS['cpu'].append(), rrx=',rrtimeout=30000')
        pcon.wait(r'TICK 2\b', 120, p)
        os.kill(b.get_pid(), signal.SIGSTOP)
        try:
            time.sleep(7)
        finally:
            os.kill(b.get_pid(), signal.SIGCONT)
        time.sleep(6)
        bi, _ = self.ft(b)
        self.assertEqual(bi['state'], 'streaming', bi)
        self.backup_follows(p, pcon, b, bcon)

    def test_starved_backup_answers(self):
        """A primary stopped for less than rrtimeout starves the backup;
        QMP on the backup answers promptly all along, and the pair goes
        on streaming afterwards."""
        p, pcon, b, bcon = self.make_pair(
            self.guest_args(work='ticker'), rrx=',rrtimeout=4000')
        pcon.wait(r'TICK 2\b', 120, p)
        os.kill(p.get_pid(), signal.SIGSTOP)
        try:
            times = []
            end = time.monotonic() + 2.5
            while time.monotonic() < end:
                bi, t = self.ft(b)
                times.append(t)
                time.sleep(0.05)
            consumed = bi['log-consumed']
            self.assertEqual(bi['log-consumed'], bi['log-received'])
        finally:
            os.kill(p.get_pid(), signal.SIGCONT)
        self.log.info('x-query-ft on a starved backup: max %.1f ms of %d',
                      max(times), len(times))
        self.assertLess(max(times), 500)
        m = pcon.wait(r'TICK (\d+)', 30, p)
        bcon.wait(rf'TICK {int(m.group(1)) + 2}\b', 60, b)
        bi, _ = self.ft(b)
        self.assertEqual(bi['state'], 'streaming')
        self.assertGreater(bi['log-consumed'], consumed)

    def test_kill_primary(self):
        p, pcon, b, bcon = self.make_pair(self.guest_args(work='ticker'))
        pcon.wait(r'TICK 3\b', 120, p)
        os.kill(p.get_pid(), signal.SIGKILL)
        ev = self.wait_event(b, 'FT_PEER_LOST', 30)
        self.log.info('%s', ev)
        self.wait_runstate(b, ['paused'], 60)
        bi, t = self.ft(b)
        self.assertEqual(bi['state'], 'peer-lost')
        self.assertEqual(bi['log-consumed'], bi['log-received'])
        self.assertLess(t, 500)
        self.assertIn('TICK 2', bcon.text())
        # The backup played all it acknowledged; the primary let out at
        # most that, and may have died between an ACK and the release.
        self.assertTrue(bcon.text().startswith(pcon.text()))

    # -- bad input on the wire ------------------------------------------

    def damaged_stream(self, mode, reason):
        proxy_port = free_tcp_port()
        p, pcon, b, bcon = self.make_pair(self.guest_args(work='ticker'),
                                          launch=False,
                                          client_port=proxy_port)
        self.proxy = FrameProxy(proxy_port, self.ft_port, mode)
        self.pair.start()
        ev = self.wait_event(b, 'FT_PEER_LOST', 120)
        self.log.info('%s', ev)
        self.assertTrue(self.proxy.damaged)
        self.assertIn(reason, ev['data']['reason'])
        self.wait_runstate(b, ['paused'], 60)
        bi, _ = self.ft(b)
        self.assertEqual(bi['state'], 'peer-lost')
        self.assertEqual(bi['digest']['mismatches'], 0)
        # Nothing after the damage was played
        self.assertLessEqual(bi['log-consumed'], bi['log-received'])
        # The primary loses its backup and runs on
        self.wait_event(p, 'FT_PEER_LOST', 30)
        pcon.wait(r'TICK 2\b', 120, p)
        self.assertTrue(pcon.text().startswith(bcon.text()))

    def test_corrupted_frame(self):
        self.damaged_stream('corrupt', 'checksum')

    def test_repeated_frame(self):
        self.damaged_stream('repeat', 'already received')

    def test_dropped_frame(self):
        self.damaged_stream('drop', 'beyond')

    def test_truncated_frame(self):
        self.damaged_stream('truncate', 'connection closed')

    def test_mttcg_refused(self):
        """Multi-threaded TCG is refused at startup with upstream's error,
        with one vCPU or several: record/replay runs all vCPUs on one
        round-robin thread (test_ft_smp.py runs -smp 2 and 4)."""
        for args in (['-accel', 'tcg,thread=multi'],
                     ['-accel', 'tcg,thread=multi', '-smp', '2']):
            vm, _ = self.make_vm('cpus', self.guest_args(), rr='record',
                                 icount_extra=',rralone=on,rrinsecure=on',
                                 args=args)
            self.assert_refused(vm, 'No MTTCG when icount is enabled')

    def test_refused_peers(self):
        """Peers that speak another version, generation or role, garbage,
        and a second primary are refused; the real primary still gets in."""
        append = self.guest_args(work='ticker')
        p, pcon, b, bcon = self.make_pair(append, launch=False)
        t = threading.Thread(target=b.launch)
        t.start()
        wait_port(self.ft_port, 30)

        def attempt(data):
            with socket.create_connection(('127.0.0.1', self.ft_port)) as s:
                s.sendall(data)
                s.settimeout(15)
                try:
                    while s.recv(4096):
                        pass
                except OSError:
                    pass
        attempt(b'GET / HTTP/1.0\r\n\r\n' + bytes(64))
        attempt(frame(FRAME_HELLO, payload=hello(1),
                      version=PROTO_VERSION + 1))
        attempt(frame(FRAME_HELLO, gen=7, payload=hello(1, gen=7)))
        attempt(frame(FRAME_HELLO, payload=hello(2)))
        attempt(frame(FRAME_HELLO, payload=hello(1, replay_version=1)))
        attempt(frame(FRAME_DATA, payload=b'x'))
        p.launch()
        t.join(60)
        pcon.wait(r'TICK 2\b', 120, p)
        # A second primary while streaming
        attempt(frame(FRAME_HELLO, payload=hello(1)))
        bi, _ = self.ft(b)
        self.assertEqual(bi['state'], 'streaming')
        b.shutdown(hard=True)
        log = b.get_log() or ''
        for msg in ('bad frame magic', 'unsupported protocol version',
                    'generation', 'same role', 'log format',
                    'HELLO', 'with another peer'):
            self.assertIn(msg, log)


if __name__ == '__main__':
    unittest.main()
