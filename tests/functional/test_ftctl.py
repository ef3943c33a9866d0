#!/usr/bin/env python3
#
# ftctl, the operator's command line (scripts/ftctl), on a real pair
# through extra QMP sockets: status of each VM and of a directory of
# sockets, protect after the backup's loss, detach with the events as
# they come, and its exit status on bad input.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import json
import os
import signal
import subprocess
import time

from ft_test import TOP, FailoverCase, wait_event
from ft_test.failover import trial_append
from ft_test.protect import start_joiner

FTCTL = os.path.join(TOP, 'scripts', 'ftctl')


class FtctlTest(FailoverCase):

    timeout = 300

    def ftctl(self, *args, rc=0):
        r = subprocess.run([FTCTL, '--json', *args], capture_output=True,
                           text=True, timeout=180)
        self.log.info('ftctl %s -> %d: %s%s', ' '.join(args), r.returncode,
                      r.stdout[-2000:], r.stderr[-2000:])
        self.assertEqual(r.returncode, rc, r.stderr)
        return json.loads(r.stdout) if rc == 0 and r.stdout else r

    def qmp_sock(self, name):
        path = os.path.join(self.socks, f'{name}.qmp')
        return path, ['-qmp', f'unix:{path},server=on,wait=off']

    def test_ftctl(self):
        self.socks = self.scratch('qmp')
        os.makedirs(self.socks)
        ps, pargs = self.qmp_sock('primary')
        # A second monitor for the events: a QMP socket takes one client
        evs = self.scratch('primary-events.qmp')
        pargs += ['-qmp', f'unix:{evs},server=on,wait=off']
        bs, bargs = self.qmp_sock('backup')
        append = trial_append('ticker')
        p, pcon, b, bcon = self.make_ft_pair(append, primary_args=pargs,
                                             backup_args=bargs)
        pcon.wait(r'TICK 2\b', 120, p)
        deadline = time.monotonic() + 60
        while not b.cmd('x-query-ft')['protected']:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.2)

        rows = self.ftctl('status', ps, bs)
        self.assertEqual([(r['role'], r['state'], r['protected'])
                          for r in rows],
                         [('primary', 'streaming', True),
                          ('backup', 'streaming', True)])
        self.assertGreater(rows[1]['digest-checks'], 0)
        rows = self.ftctl('status', '--dir', self.socks)
        self.assertEqual(sorted(r['role'] for r in rows),
                         ['backup', 'primary'])

        # The backup is lost: the primary wins the lock and runs alone
        os.kill(b.get_pid(), signal.SIGKILL)
        wait_event(p, 'FT_WENT_LIVE', 60)
        self.assertEqual(self.ftctl('status', ps)[0]['state'], 'live')

        js, jargs = self.qmp_sock('joiner')
        j, jcon, port, mig = start_joiner(self.wd, 'joiner', append,
                                          self.lock_dir, self.vm_uuid,
                                          jargs)
        out = self.ftctl('protect', ps, '--address', f'127.0.0.1:{port}',
                         '--uri', f'tcp:127.0.0.1:{mig}')
        self.assertEqual(out['generation'], 2)
        self.assertLess(out['pause-ms'], 10000)
        self.assertTrue(self.ftctl('status', js)[0]['protected'])

        # detach, with the events watched from another ftctl
        ev = subprocess.Popen([FTCTL, '--json', 'events', evs, '--timeout',
                               '10'],
                              stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        out = self.ftctl('detach', ps, '--backup', js)
        self.assertIn('ended', out['backup_state'])
        seen = [json.loads(ln)['event']
                for ln in ev.communicate(timeout=60)[0].splitlines()]
        self.assertIn('FT_ARBITRATION', seen)
        self.assertIn('FT_WENT_LIVE', seen)
        self.assertEqual(self.ftctl('status', ps)[0]['state'], 'live')

        # A protection that cannot work, and a socket that is not there
        r = self.ftctl('protect', ps, '--address', '127.0.0.1:1', '--uri',
                       'tcp:127.0.0.1:1', rc=1)
        self.assertIn('Connection refused', r.stdout)
        r = self.ftctl('status', os.path.join(self.socks, 'none.qmp'),
                       rc=1)
        self.assertIn('cannot connect', r.stderr)


if __name__ == '__main__':
    import unittest
    unittest.main()
