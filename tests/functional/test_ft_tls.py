# The logging channel under TLS: the socket chardev's tls-creds and
# tls-authz, x509 with client certificates and PSK; peers without the
# right credentials are refused while the backup keeps waiting for the
# real primary; clear text off loopback only with rrinsecure=on.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import os
import re
import threading
import unittest

import test_ft_network as net_tests
from ft_test import FailoverCase, free_tcp_port, wait_port
from ft_test import tls as fttls


class TlsFailover(FailoverCase):
    """A pair under x509 TLS with client certificates fails over."""

    tls = 'x509'

    def test_kill_primary_x509(self):
        r = self.kill_primary_trial('ticker', 2)
        self.log.info('x509: detected in %.0f ms, live in %.0f ms',
                      r['detect_ms'], r['golive_ms'])

    def test_lockstep_psk(self):
        """PSK: the pair streams and checks digests."""
        p, pcon, b, bcon = self.make_ft_pair(self.guest_args(work='ticker'),
                                             tls='psk')
        pcon.wait(r'TICK 3\b', 120, p)
        info, _ = self.ft(b)
        self.assertEqual(info['state'], 'streaming')
        self.assertGreater(info['digest']['checks'], 0)
        self.assertEqual(info['digest']['mismatches'], 0)


class TlsNetwork(net_tests.NetworkFailoverTest):
    """The network test under x509: TCP connections survive a kill -9 of
    the primary, every byte checked (the other network tests run in
    clear text only)."""

    tls = 'x509'
    test_kill_backup = None
    test_nothing_leaves_unacknowledged = None
    test_bad_filter_config = None


class TlsRefusals(FailoverCase):
    """Who may not talk to a TLS backup, and what they see."""

    def backup_waiting(self, tls='x509'):
        """A TLS backup (x509 with authz, or PSK) waiting for its primary,
        and that primary, not launched yet."""
        p, pcon, b, bcon = self.make_ft_pair(
            self.guest_args(work='ticker'), tls=tls, launch=False)
        t = threading.Thread(target=b.launch)
        t.start()
        wait_port(self.ft_port, 30)
        self.addCleanup(t.join, 60)
        return p, pcon, b, bcon, t

    def intruder(self, name, creds=(), chardev_tls=''):
        """A primary of the same VM with other credentials."""
        vm, _ = self.make_vm(
            name, self.guest_args(), rr='record',
            icount_extra=',rrchardev=ftlog',
            args=[*creds, '-uuid', self.vm_uuid, '-chardev',
                  f'socket,id=ftlog,host=127.0.0.1,port={self.ft_port}'
                  + chardev_tls])
        return vm

    def finish(self, p, pcon, b, t, refusals):
        """The real primary still gets in; the backup logged @refusals."""
        p.launch()
        t.join(60)
        pcon.wait(r'TICK 2\b', 120, p)
        info, _ = self.ft(b)
        self.assertEqual(info['state'], 'streaming')
        b.shutdown(hard=True)
        log = b.get_log() or ''
        self.assertEqual(len(re.findall(r'connection with .* refused', log)),
                         refusals, log)
        return log

    def test_bad_certificates(self):
        """A client whose certificate another CA signed, and one with a
        good certificate but another name, are refused."""
        p, pcon, b, bcon, t = self.backup_waiting()
        base = fttls.pki()
        rogue = self.intruder('rogue', fttls.creds_args(
            'x509', os.path.join(base, 'rogue'), False), ',tls-creds=tls0')
        self.assert_refused(rogue, 'TLS')
        # The backup's own certificate as a client: right CA, wrong name
        other = self.intruder('other', fttls.creds_args(
            'x509', os.path.join(base, 'backup-client'), False),
            ',tls-creds=tls0')
        # Its handshake completes; then the backup denies it and closes.
        self.assert_refused(other, 'refused')
        log = self.finish(p, pcon, b, t, 2)
        self.assertRegex(log, r'refused: TLS: .*(certificate|verif)')
        self.assertRegex(log, r'refused: TLS: .*(authoriz|access|denied)')

    def test_plaintext_primary(self):
        """A primary in clear text is refused by a TLS backup."""
        p, pcon, b, bcon, t = self.backup_waiting()
        plain = self.intruder('plain')
        self.assert_refused(plain, 'connection with')
        self.finish(p, pcon, b, t, 1)

    def test_wrong_psk(self):
        """A primary with another pre-shared key is refused."""
        p, pcon, b, bcon, t = self.backup_waiting('psk')
        wrong = self.intruder('wrongkey', fttls.creds_args(
            'psk', os.path.join(fttls.pki(), 'psk-other'), False),
            ',tls-creds=tls0')
        self.assert_refused(wrong, 'TLS')
        self.finish(p, pcon, b, t, 1)

    def test_plaintext_backup(self):
        """A TLS primary is refused by a backup in clear text (which
        logs it), and refuses it in turn."""
        p, pcon, b, bcon, t = self.backup_waiting(tls=None)
        tlsp = self.intruder('tlsprimary', fttls.creds_args(
            'x509', os.path.join(fttls.pki(), 'primary'), False),
            ',tls-creds=tls0')
        self.assert_refused(tlsp, 'TLS')
        log = self.finish(p, pcon, b, t, 1)
        self.assertIn('bad frame', log)


class Insecure(FailoverCase):
    """Clear text is for loopback, or by explicit choice."""

    def test_refused_off_loopback(self):
        vm, _ = self.make_vm(
            'open', self.guest_args(), rr='replay',
            icount_extra=',rrchardev=ftlog',
            args=['-chardev', f'socket,id=ftlog,host=0.0.0.0,'
                  f'port={free_tcp_port()},server=on'])
        self.assert_refused(vm, 'without TLS')

    def test_insecure_by_choice(self):
        """rrinsecure=on: a warning naming the risk, and the pair runs."""
        p, pcon, b, bcon = self.make_pair(
            self.guest_args(work='ticker'), host='0.0.0.0',
            client_host='127.0.0.1', rrx=',rrinsecure=on')
        pcon.wait(r'TICK 2\b', 120, p)
        b.shutdown(hard=True)
        self.assertIn('neither encrypted nor authenticated',
                      b.get_log() or '')


if __name__ == '__main__':
    unittest.main()
