# ft_test: the Python side of qemu-ft's tests, benchmarks and demo, in
# the manner of QEMU's tests/functional/qemu_test.
#
#   config     paths, binaries, FAST_BOOT (and the tree's python/qemu)
#   wire       logging-channel frames, CRC32C, lock records
#   workloads  THE table of guest workloads and their device arguments
#   console    the guest's console; splicing a failover's two consoles
#   vm         Workdir (scratch directory and its VMs), QMP helpers
#   pair       Pair: a primary and its backup, started and torn down
#   failover   one kill -9 / SIGSTOP trial and its checks
#   net        ports, Netns (the logging link), BridgeNet (guest network)
#   echo       Echo: THE client of the guest's echo server
#   client     the network client run in BridgeNet's client namespace
#   tls        the logging channel's PKI (openssl)
#   case       the unittest base classes FTTestCase, FailoverCase,
#              BridgedCase
#   replaylog  a short replay log of the guest, its event layout, and
#              LogCase, the base of the tests that corrupt it
#   utils      sha256_file, make_disk, percentile, rss_kib
#   colo       ColoPair: QEMU's own COLO pair, for the COLO benchmark
#
# Tests, benchmarks and the demo import it; none imports a test module.
# See docs/development.md for how each finds it.
#
# SPDX-License-Identifier: GPL-2.0-or-later

# config first: it puts the tree's python/ (package qemu) on sys.path.
from .config import BUILD, FAST_BOOT, GUEST_DIR, LOG_DIR, QEMU_BIN, \
    QEMU_IMG, TOP
from .console import Console, splice_consoles, ticks
from .echo import Echo
from .net import BridgeNet, ClientNet, Netns, free_tcp_port, wait_port
from .pair import Pair
from .utils import make_disk, percentile, rss_kib, sha256_file
from .vm import Workdir, query_ft, query_replay, wait_event, wait_exit, \
    wait_runstate
from .workloads import WORKLOADS, devices, guest_args, pattern, \
    plain_drive, shared_drive
from .case import BridgedCase, FailoverCase, FTTestCase

__all__ = ['BUILD', 'FAST_BOOT', 'GUEST_DIR', 'LOG_DIR', 'QEMU_BIN',
           'QEMU_IMG', 'TOP', 'Console', 'splice_consoles', 'ticks', 'Echo',
           'BridgeNet', 'ClientNet', 'Netns', 'free_tcp_port', 'wait_port',
           'Pair', 'make_disk', 'percentile', 'rss_kib', 'sha256_file',
           'Workdir',
           'query_ft', 'query_replay', 'wait_event', 'wait_exit',
           'wait_runstate',
           'WORKLOADS', 'devices', 'guest_args', 'pattern', 'plain_drive', 'shared_drive',
           'BridgedCase', 'FailoverCase', 'FTTestCase']
