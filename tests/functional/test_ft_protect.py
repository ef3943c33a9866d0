#!/usr/bin/env python3
#
# Restoring redundancy (issue 15): a VM that runs alone gets a new backup
# with x-ft-protect, by a live migration of its state to a backup that
# joins (rrjoin=on, -incoming), and is protected again: the new backup
# passes its divergence checks, and takes over when the VM is killed.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import os
import re
import signal
import socket
import time
import uuid

from ft_test import BridgedCase, FailoverCase, Netns, free_tcp_port, \
    shared_drive, splice_consoles, ticks, wait_event
from ft_test import tls as ft_tls
from ft_test.ext4 import check_image, fs_checked, mkfs_ext4
from ft_test.failover import trial_append
from ft_test.protect import protect, protect_cmd, start_joiner, \
    wait_protected

# Failovers in a row, each followed by a new backup (more: FT_PROTECT_CYCLES)
CYCLES = int(os.environ.get('FT_PROTECT_CYCLES', '3'))


class ProtectChecks:
    """What the tests of this file wait for and check."""

    @staticmethod
    def last_tick(*cons):
        seen = [int(n) for c in cons
                for n in re.findall(r'^TICK (\d+)', c.text(), re.M)]
        return max(seen, default=0)

    def ticks_after(self, con, vm, more=3, since=()):
        """Wait for @more ticks on console @con past the last one on @con
        and the consoles @since (its predecessors)."""
        want = self.last_tick(con, *since) + more
        deadline = time.monotonic() + 120
        while self.last_tick(con) < want:
            self.assertTrue(vm.is_running(), f'{vm._name} exited')
            self.assertLess(time.monotonic(), deadline,
                            f'{vm._name}: no TICK {want}')
            time.sleep(0.1)

    def status(self):
        """Each running VM's channel, for a failure's message."""
        out = []
        for vm in self.vms:
            try:
                i = vm.cmd('x-query-ft')
                r = vm.cmd('query-replay')
                out.append(f"{vm._name}: {i['role']} {i['state']} gen "
                           f"{i['generation']} icount {i['icount']} log "
                           f"{i.get('log-written', i.get('log-received'))}/"
                           f"{i.get('log-acked', i.get('log-consumed'))} "
                           f"replay {r}")
            except Exception:   # noqa: BLE001  a dead VM
                pass
        return '; '.join(out)

    def protect_until_protected(self, live, lcon, start, tries=3):
        """Protect @live with new backups from @start(attempt) until one
        is protected and still streams after a verified round of the
        guest's writes.  A failed attempt (the new backup failed a check:
        see docs/known-limits.md) must be clean: FT_PROTECT_FAILED or the
        backup's divergence, @live running on alone in a generation of
        its own.  Returns (FT_PROTECTED data, backup, its console); the
        failures go to self.protect_failures."""
        for n in range(tries):
            j, jcon, port, mig = start(n)
            try:
                data = protect(live, port, mig)
                self.wait_fs_rounds(live, lcon, fs_checked(lcon.text()) + 1)
                info = j.cmd('x-query-ft')
                if info['state'] == 'streaming' and info['protected']:
                    return data, j, jcon
                why = f'the new backup is {info["state"]}: {info["error"]}'
            except RuntimeError as e:
                why = str(e)
            self.log.warning('protection attempt %d failed: %s', n + 1, why)
            self.protect_failures.append(why)
            os.kill(j.get_pid(), signal.SIGKILL)
            deadline = time.monotonic() + 30
            while live.cmd('x-query-ft')['state'] != 'live':
                self.assertLess(time.monotonic(), deadline,
                                f'not alone after a failed protection: '
                                f'{self.status()}')
                time.sleep(0.1)
            # Take the FT_WENT_LIVE of running on alone now: left queued,
            # a later wait for the VM's next FT_WENT_LIVE returned it at
            # once, before the VM had lost its next backup.
            wait_event(live, 'FT_WENT_LIVE', 30)
        self.fail(f'{tries} protection attempts failed: '
                  f'{self.protect_failures}')

    def wait_fs_rounds(self, vm, con, n, timeout=120):
        deadline = time.monotonic() + timeout
        while fs_checked(con.text()) < n:
            self.assertTrue(vm.is_running(), f'{vm._name} exited')
            if time.monotonic() > deadline:
                raise AssertionError(f'{vm._name}: fewer than {n} verified '
                                     f'rounds: {self.status()}')
            time.sleep(0.2)


class ProtectTest(ProtectChecks, FailoverCase):

    timeout = 900

    def joiner(self, name, append, args=()):
        """A backup that waits to join the running VM."""
        return start_joiner(self.wd, name, append, self.pair.lock_dir,
                            self.pair.vm_uuid, args)

    @staticmethod
    def protect(live, port, mig):
        return protect(live, port, mig)

    def protect_watching_lag(self, live, joiner, port, mig, timeout=120):
        """protect(), asking @joiner for its lag-ms all the while, from
        before it has the VM's state to a second past its protection;
        returns (FT_PROTECTED data, the largest lag-ms it reported)."""
        gen = protect_cmd(live, port, mig)
        deadline, data, until, most = time.monotonic() + timeout, None, 0, 0
        while data is None or time.monotonic() < until:
            self.assertLess(time.monotonic(), deadline,
                            f'no FT_PROTECTED: {self.status()}')
            # often: the switch of streams is brief
            most = max(most, joiner.cmd('x-query-ft')['lag-ms'])
            time.sleep(0.005)
            ev = None if data else live.events_wait(
                [('FT_PROTECTED', None), ('FT_PROTECT_FAILED', None)], 0)
            if ev and ev['event'] == 'FT_PROTECT_FAILED':
                self.fail(f'x-ft-protect failed: {ev["data"]["reason"]}')
            if ev and ev['data']['generation'] == gen:
                data, until = ev['data'], time.monotonic() + 1
        return data, most

    def alone(self, victim='primary', sig=signal.SIGKILL):
        """A protected pair running the ticker, whose @victim gets @sig:
        the other side runs alone (after a failover, or on winning the
        lock).  Returns (append, pair, the VM alone, its console)."""
        append = trial_append('ticker')
        p, pcon, b, bcon = self.make_ft_pair(append)
        pcon.wait(r'TICK 2\b', 120, p)
        gone, live, lcon = (p, b, bcon) if victim == 'primary' else \
            (b, p, pcon)
        os.kill(gone.get_pid(), sig)
        wait_event(live, 'FT_WENT_LIVE', 60)
        return append, (p, pcon, b, bcon), live, lcon

    def test_reprotect_after_failover(self):
        """kill -9 of the primary; the backup goes live; a new backup
        joins it, is protected, and takes over when it is killed in
        turn.  The console's ticks stay complete and in order."""
        append, (p, pcon, b, bcon), _, _ = self.alone()
        j, jcon, port, mig = self.joiner('backup2', append)
        data, most = self.protect_watching_lag(b, j, port, mig)
        self.log.info('protected: %s; largest lag %.1f ms', data, most)
        # Behind by at most rrlag (1000 ms), which the VM's own guest time
        # exceeds: a joiner without the state may not count from zero.
        self.assertLessEqual(most, 2000)
        self.assertEqual(data['generation'], 2)
        info = j.cmd('x-query-ft')
        self.assertEqual(info['state'], 'streaming')
        self.assertEqual(info['generation'], 2)
        self.assertTrue(info['protected'])
        self.assertTrue(b.cmd('x-query-ft')['protected'])
        self.ticks_after(bcon, b, more=5, since=[pcon])

        os.kill(b.get_pid(), signal.SIGKILL)
        wait_event(j, 'FT_WENT_LIVE', 60)
        self.ticks_after(jcon, j, more=5, since=[pcon, bcon])
        stream, _ = splice_consoles(pcon.text(), bcon.text())
        stream, _ = splice_consoles(stream, jcon.text())
        seen = ticks(stream)
        info = j.cmd('x-query-ft')
        self.assertEqual(info['state'], 'live')
        self.assertEqual(info['digest']['mismatches'], 0)
        self.assertGreater(info['digest']['checks'], 0)
        self.log.info('ticks %d..%d through two failovers', seen[0],
                      seen[-1])

    def test_reprotect_after_backup_loss(self):
        """kill -9 of the backup: the primary wins the lock and runs on
        alone; a new backup joins it in the next generation, and takes
        over when the primary is killed."""
        append, (p, pcon, b, bcon), _, _ = self.alone('backup')
        self.assertEqual(p.cmd('x-query-ft')['state'], 'live')
        j, jcon, port, mig = self.joiner('backup2', append)
        self.assertEqual(self.protect(p, port, mig)['generation'], 2)
        self.ticks_after(pcon, p)
        os.kill(p.get_pid(), signal.SIGKILL)
        wait_event(j, 'FT_WENT_LIVE', 60)
        self.ticks_after(jcon, j, since=[pcon])
        stream, _ = splice_consoles(pcon.text(), jcon.text())
        ticks(stream)

    def test_old_generation_backup(self):
        """The backup hangs (SIGSTOP); the primary wins generation 1 and
        gets a new backup in generation 2.  When the old backup comes back
        it loses the lock and halts: it never goes live, and the new pair
        stays protected."""
        append, (p, pcon, b, bcon), _, _ = self.alone('backup',
                                                      signal.SIGSTOP)
        j, jcon, port, mig = self.joiner('backup2', append)
        self.protect(p, port, mig)
        os.kill(b.get_pid(), signal.SIGCONT)
        self.assertEqual(self.wait_exit(b, 60), 1)
        self.assertRegex(self.log_text(b), r'HALTING: lost the lock of '
                         r'generation 1')
        self.assertNotIn('went live', self.log_text(b))
        self.ticks_after(pcon, p)
        info = j.cmd('x-query-ft')
        self.assertEqual((info['state'], info['generation']),
                         ('streaming', 2))
        self.assertTrue(info['protected'])

    def slow_transfer(self):
        """A failover, then x-ft-protect to a new backup with the
        migration slowed to 20 MB/s, 1 s into the transfer.  Returns the
        guest's command line, the VM that runs alone, its console and the
        new backup."""
        append, _, b, bcon = self.alone()
        b.cmd('migrate-set-parameters', **{'max-bandwidth': 20 << 20})
        j, jcon, port, mig = self.joiner('backup2', append)
        b.cmd('x-ft-protect',
              address={'type': 'inet', 'host': '127.0.0.1',
                       'port': str(port)}, uri=f'tcp:127.0.0.1:{mig}')
        time.sleep(1)
        return append, b, bcon, j

    def test_new_backup_killed_during_transfer(self):
        """kill -9 of the new backup while the state is migrated (slowed
        down to 20 MB/s): the VM runs on alone (FT_PROTECT_FAILED), its
        console goes on, and a second attempt protects it."""
        append, b, bcon, j = self.slow_transfer()
        self.assertEqual(b.cmd('query-migrate')['status'], 'active')
        os.kill(j.get_pid(), signal.SIGKILL)
        failed = wait_event(b, 'FT_PROTECT_FAILED', 60)
        self.log.info('failed: %s', failed['data']['reason'])
        self.assertEqual(b.cmd('query-status')['status'], 'running')
        self.assertEqual(b.cmd('x-query-ft')['state'], 'live')
        self.ticks_after(bcon, b)
        b.cmd('migrate-set-parameters', **{'max-bandwidth': 1 << 30})
        j2, j2con, port, mig = self.joiner('backup3', append)
        self.assertEqual(self.protect(b, port, mig)['generation'], 2)
        self.ticks_after(bcon, b)

    def test_primary_killed_during_transfer(self):
        """kill -9 of the VM while its state is migrated to a new backup:
        the new backup, which has no state to run, halts and never goes
        live."""
        append, b, bcon, j = self.slow_transfer()
        os.kill(b.get_pid(), signal.SIGKILL)
        self.assertNotEqual(self.wait_exit(j, 60), 0)
        self.assertNotIn('went live', self.log_text(j))

    def test_link_cut_during_transfer(self):
        """A VM started alone (rralone=on) and its new backup in two
        network namespaces; the link between them is cut while the state
        is migrated (slowed to 20 MB/s).  The VM notices the lost channel,
        cancels the migration and runs on alone (FT_PROTECT_FAILED); the
        new backup, which has no state, halts and never goes live.  With
        the link back, a second new backup protects it."""
        append = trial_append('ticker')
        lock = self.scratch('lock')
        os.makedirs(lock)
        vm_uuid = str(uuid.uuid4())
        with Netns(os.getpid() % 10000) as ns:
            a, acon = self.make_vm(
                'alone', append, rr='record', wrapper=ns.wrapper(0),
                icount_extra=f',rralone=on,rrinsecure=on,rrlock={lock}',
                args=['-uuid', vm_uuid])
            a.launch()
            acon.wait(r'TICK 2\b', 120, a)
            a.cmd('migrate-set-parameters', **{'max-bandwidth': 20 << 20})
            host = ns.addrs[1]
            j, jcon, port, mig = start_joiner(
                self.wd, 'backup', append, lock, vm_uuid, host=host,
                icount_extra=',rrinsecure=on', wrapper=ns.wrapper(1))
            protect_cmd(a, port, mig, host)
            time.sleep(1)
            self.assertEqual(a.cmd('query-migrate')['status'], 'active')
            ns.link(False)
            failed = wait_event(a, 'FT_PROTECT_FAILED', 30)
            self.log.info('failed: %s', failed['data']['reason'])
            self.assertIn('runs on alone in generation 1',
                          failed['data']['reason'])
            self.assertNotEqual(self.wait_exit(j, 30), 0)
            self.assertNotIn('went live', self.log_text(j))
            info = a.cmd('x-query-ft')
            self.assertEqual((info['state'], info['generation']),
                             ('live', 1))
            self.ticks_after(acon, a)
            ns.link(True)
            a.cmd('migrate-set-parameters', **{'max-bandwidth': 1 << 30})
            j2, _, port, mig = start_joiner(
                self.wd, 'backup2', append, lock, vm_uuid, host=host,
                icount_extra=',rrinsecure=on', wrapper=ns.wrapper(1))
            self.assertEqual(protect(a, port, mig, host=host)['generation'],
                             2)
            self.ticks_after(acon, a)

    def test_protect_silent_backup(self):
        """x-ft-protect towards a "backup" that accepts the connection
        and never answers: the command fails after the handshake timeout,
        and meanwhile the VM runs (its console ticks on)."""
        append = trial_append('ticker')
        a, acon = self.make_vm('alone', append, rr='record',
                               icount_extra=',rralone=on')
        a.launch()
        acon.wait(r'TICK 2\b', 120, a)
        with socket.socket() as srv:
            srv.bind(('127.0.0.1', 0))
            srv.listen()
            port = srv.getsockname()[1]
            before = self.last_tick(acon)
            t0 = time.monotonic()
            r = a.qmp('x-ft-protect',
                      address={'type': 'inet', 'host': '127.0.0.1',
                               'port': str(port)},
                      uri='tcp:127.0.0.1:1')
            waited = time.monotonic() - t0
        self.log.info('refused after %.1f s: %s', waited, r)
        self.assertIn('error', r)
        self.assertGreater(waited, 5)
        # The guest clock ran on while the monitor waited
        self.assertGreater(self.last_tick(acon), before + 2)
        self.assertEqual(a.cmd('x-query-ft')['state'], 'live')

    def test_protect_tls(self):
        """x-ft-protect under x509 TLS, for the logging channel (the
        chardev's tls-creds and tls-authz on the new backup) and for the
        migration (its tls-creds and tls-authz parameters on both
        sides): the VM started alone is protected, and its new backup
        takes over when it is killed."""
        base = ft_tls.pki()
        append = trial_append('ticker')
        lock = self.scratch('lock')
        os.makedirs(lock)
        vm_uuid = str(uuid.uuid4())
        a, acon = self.make_vm(
            'alone', append, rr='record',
            icount_extra=f',rralone=on,rrlock={lock}',
            args=['-uuid', vm_uuid, *ft_tls.creds_args(
                'x509', os.path.join(base, 'primary'), False)])
        a.launch()
        acon.wait(r'TICK 2\b', 120, a)
        port, mig = free_tcp_port(), free_tcp_port()
        j, jcon = self.make_vm(
            'backup', append, rr='replay', hold=True,
            icount_extra=f',rrchardev=ftlog,rrjoin=on,rrlock={lock}',
            args=['-uuid', vm_uuid,
                  *ft_tls.creds_args('x509', os.path.join(base, 'backup'),
                                     True, authz=['CN=primary']),
                  '-chardev', f'socket,id=ftlog,host=127.0.0.1,port={port},'
                  'server=on,wait=off,tls-creds=tls0,tls-authz=authz0',
                  '-incoming', 'defer'])
        j.launch()
        j.cmd('migrate-set-parameters', **{'tls-creds': 'tls0',
                                           'tls-authz': 'authz0'})
        j.cmd('migrate-incoming', uri=f'tcp:127.0.0.1:{mig}')
        a.cmd('migrate-set-parameters', **{'tls-creds': 'tls0'})
        gen = protect_cmd(a, port, mig, **{'tls-creds': 'tls0'})
        data = wait_protected(a, gen)
        self.log.info('protected under TLS: %s', data)
        self.assertEqual(data['generation'], 2)
        self.assertEqual(a.cmd('query-migrate')['status'], 'completed')
        self.ticks_after(acon, a)
        os.kill(a.get_pid(), signal.SIGKILL)
        wait_event(j, 'FT_WENT_LIVE', 60)
        self.ticks_after(jcon, j, since=[acon])
        stream, _ = splice_consoles(acon.text(), jcon.text())
        ticks(stream)

    def test_protect_refused(self):
        """x-ft-protect on a VM that is protected already, and on a
        backup, is refused with a clear error."""
        p, pcon, b, bcon = self.make_ft_pair(trial_append('ticker'))
        args = dict(address={'type': 'inet', 'host': '127.0.0.1',
                             'port': '1'}, uri='tcp:127.0.0.1:1')
        for vm in (p, b):
            r = vm.qmp('x-ft-protect', **args)
            self.assertIn('does not run alone: its channel is streaming',
                          r['error']['desc'])


class ProtectNetTest(ProtectChecks, BridgedCase):
    """On the bridged network, with a TCP echo client: a VM started
    recording with no backup (rralone=on) and protected later; and
    failovers in a row, each followed by a re-protection."""

    timeout = 900

    def test_reprotect_cycles_ext4(self):
        """ext4 on the shared disk, the ticker and 2 TCP echo connections
        from a client; CYCLES times in a row: a new backup joins the VM
        running alone, the pair is protected, and the VM is killed with
        kill -9, and the backup takes over; or, every third cycle, the
        backup is killed, and the VM wins the lock and runs on.  The
        guest verifies every file it
        wrote in each round, on every host; the client verifies every
        echoed byte and no connection resets; after the guest's clean
        shutdown the ticks are complete and in order, the image checks
        clean and holds the right data."""
        kib, loops = 256, 3 * CYCLES + 4
        img = mkfs_ext4(self.scratch('shared.img'), 32)
        append = self.guest_args(work='echo,fs,ticker', disk_loops=loops,
                                 fs_kb=kib, poweroff=1,
                                 ip=f'{self.net.GUEST_IP}/24')
        p, pcon, b, bcon = self.make_ft_pair(
            append, primary_args=[*shared_drive(img, False),
                                  *self.net.nic_args(0)],
            backup_args=[*shared_drive(img, True), *self.net.nic_args(1)])
        pcon.wait(r'FT-READY', 120, p)
        client, stop = self.net.client(self.workdir, conns=2, wait=0.01)
        self.addCleanup(client.kill)
        self.wait_fs_rounds(p, pcon, 1)
        os.kill(p.get_pid(), signal.SIGKILL)
        wait_event(b, 'FT_WENT_LIVE', 60)
        live, lcon, tap, cons, report = b, bcon, 1, [pcon, bcon], []
        self.protect_failures = []
        for c in range(CYCLES):
            def start(n, c=c, tap=tap):
                return start_joiner(
                    self.wd, f'backup{c + 2}-{n}', append,
                    self.pair.lock_dir, self.pair.vm_uuid,
                    [*shared_drive(img, True), *self.net.nic_args(1 - tap)])
            gen = live.cmd('x-query-ft')['generation']
            data, j, jcon = self.protect_until_protected(live, lcon, start)
            self.assertGreater(data['generation'], gen)
            report.append(data)
            if c % 3 == 1:
                # The backup's loss: the VM wins the lock and runs on
                os.kill(j.get_pid(), signal.SIGKILL)
                wait_event(live, 'FT_WENT_LIVE', 60)
                self.assertEqual(live.cmd('x-query-ft')['state'], 'live')
                continue
            os.kill(live.get_pid(), signal.SIGKILL)
            wait_event(j, 'FT_WENT_LIVE', 60)
            live, lcon, tap = j, jcon, 1 - tap
            cons.append(jcon)
        self.ticks_after(lcon, live, since=cons[:-1])
        res = self.net.client_result(client, stop)
        self.log.info('client: %s', res)
        for e in res['echo']:
            self.assertIsNone(e['error'], f'echo connection {e["id"]}')
            self.assertGreater(e['verified'], 0)
        self.assertEqual(self.wait_exit(live, 600), 0)
        stream = cons[0].text()
        for con in cons[1:]:
            stream, _ = splice_consoles(stream, con.text())
        seen = ticks(stream)
        rounds = fs_checked(stream)
        self.assertIn(f'FS done loops={loops}', stream)
        files = re.findall(r'^FS file (\d+) sha256=([0-9a-f]+)', stream,
                           re.M)
        self.assertEqual(len(files), min(loops, 8))
        check_image(img, 'raw', files, loops, kib)
        self.log.info('%d failovers, %d backups lost, %d re-protections: '
                      'pauses %s ms, '
                      'protected after %s ms; %d verified rounds, %d ticks, '
                      'echo %s bytes verified, longest stall %s s; '
                      'failed protection attempts: %d %s',
                      len(cons) - 1, CYCLES + 2 - len(cons), CYCLES,
                      [round(r['pause-ms'], 1) for r in report],
                      [round(r['total-ms']) for r in report], rounds,
                      len(seen), [e['verified'] for e in res['echo']],
                      [round(e['max_stall_s'], 2) for e in res['echo']],
                      len(self.protect_failures), self.protect_failures)


    def test_protect_vm_started_alone(self):
        """A VM starts alone under CPU, disk (ext4 on the shared disk) and
        network load (2 TCP echo connections).  It keeps no log: its
        memory does not grow with what it records.  x-ft-protect gives it
        a backup (generation 2), which takes over when the VM is killed
        with kill -9.  Every echoed byte is verified, the ticks are
        complete and in order, and the files and the image check clean
        after the guest's own poweroff."""
        lock = self.scratch('lock')
        os.makedirs(lock)
        vm_uuid = str(uuid.uuid4())
        kib, loops = 256, 8
        img = mkfs_ext4(self.scratch('shared.img'), 32)
        append = self.guest_args(work='echo,fs,cpu,ticker', disk_loops=loops,
                                 fs_kb=kib, cpu_iters=60, poweroff=1,
                                 ip=f'{self.net.GUEST_IP}/24')
        a, acon = self.make_vm(
            'alone', append, rr='record',
            icount_extra=f',rralone=on,rrlock={lock}',
            args=['-uuid', vm_uuid, *shared_drive(img, False),
                  *self.net.nic_args(0)])
        a.launch()
        acon.wait(r'FT-READY', 120, a)
        info = a.cmd('x-query-ft')
        self.assertEqual((info['role'], info['state'], info['generation']),
                         ('primary', 'live', 1))
        self.assertNotIn('address', info)
        client, stop = self.net.client(self.workdir, conns=2, wait=0.01)
        self.addCleanup(client.kill)
        # Recording on, under load: the log is dropped as it is written
        # (a round writes about 1 MiB of log; wait for more than 1 MiB,
        # however many rounds that takes)
        self.wait_fs_rounds(a, acon, 1)
        w0 = a.cmd('x-query-ft')['log-written']
        rounds = 0
        while True:
            self.wait_fs_rounds(a, acon, fs_checked(acon.text()) + 1)
            rounds += 1
            info = a.cmd('x-query-ft')
            self.assertEqual(info['log-buffer-bytes'], 0)
            if info['log-written'] - w0 > 1 << 20 or rounds == 6:
                break
        self.log.info('alone: %d KiB of log written and dropped in %d '
                      'rounds', (info['log-written'] - w0) >> 10, rounds)
        self.assertGreater(info['log-written'] - w0, 1 << 20)

        j, jcon, port, mig = start_joiner(
            self.wd, 'backup', append, lock, vm_uuid,
            [*shared_drive(img, True), *self.net.nic_args(1)])
        data = protect(a, port, mig)
        self.log.info('protected: %s', data)
        self.assertEqual(data['generation'], 2)
        self.wait_fs_rounds(a, acon, fs_checked(acon.text()) + 1)
        self.assertTrue(j.cmd('x-query-ft')['protected'])
        os.kill(a.get_pid(), signal.SIGKILL)
        wait_event(j, 'FT_WENT_LIVE', 60)
        self.ticks_after(jcon, j, since=[acon])
        res = self.net.client_result(client, stop)
        self.log.info('client: %s', res)
        for e in res['echo']:
            self.assertIsNone(e['error'], f'echo connection {e["id"]}')
            self.assertGreater(e['verified'], 0)
        self.assertEqual(self.wait_exit(j, 600), 0)
        stream, _ = splice_consoles(acon.text(), jcon.text())
        ticks(stream)
        self.assertIn(f'FS done loops={loops}', stream)
        files = re.findall(r'^FS file (\d+) sha256=([0-9a-f]+)', stream,
                           re.M)
        self.assertEqual(len(files), min(loops, 8))
        check_image(img, 'raw', files, loops, kib)


if __name__ == '__main__':
    import unittest
    unittest.main()
