# QEMU's own COLO, which the benchmark compares our pair with
# (tests/bench/bench_colo.py), keeps checkpointing a q35 guest: the two
# COLO fixes in patches/ (the RAM of a checkpoint saved with the BQL held;
# the secondary reset before it loads a checkpoint).  Without the first
# the primary deadlocks at its first checkpoint; without the second the
# secondary aborts there.
#
# It needs QEMU built with COLO (scripts/build-qemu.sh --colo), which CI
# does not build: it is skipped without it.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import os
import time
import unittest

from ft_test import BridgeNet, FTTestCase, guest_args
from ft_test.colo import COLO_QEMU, ColoPair


@unittest.skipUnless(os.path.exists(COLO_QEMU),
                     f'{COLO_QEMU} not built (scripts/build-qemu.sh --colo)')
class ColoTest(FTTestCase):

    def test_checkpoints_on_q35(self):
        """With a checkpoint every 500 ms, both sides keep running
        through 6 checkpoints, the guest answers on the network, and
        the secondary's console shows the same guest as the primary's."""
        with BridgeNet(os.getpid() % 1000) as net:
            append = guest_args(ip=net.GUEST_IP + '/24', work='echo')
            pair = ColoPair(append, net, self.wd, machine='q35',
                            checkpoint_ms=500)
            with pair:
                # The trace file, not QMP: a deadlocked primary's QMP
                # would not answer.
                deadline = time.monotonic() + 90
                while pair.checkpoints() < 6:
                    for side in (pair.primary, pair.secondary):
                        self.assertTrue(side.is_running(),
                                        f'{side._name} exited: '
                                        f'{self.log_text(side)}')
                    self.assertLess(time.monotonic(), deadline,
                                    f'{pair.checkpoints()} checkpoints in '
                                    '90 s')
                    time.sleep(0.2)
                pair.pcon.wait(r'FT-READY', 180, pair.primary)
                rtt = net.measure('rtt', 2)
                self.assertGreater(rtt['n'], 0)
                self.assertEqual(pair.secondary.cmd('query-status')['status'],
                                 'running')
                self.assertEqual(pair.status()[0]['mode'], 'primary')
                self.assertEqual(pair.status()[1]['mode'], 'secondary')


if __name__ == '__main__':
    unittest.main()
