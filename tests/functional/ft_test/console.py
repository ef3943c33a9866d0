# The guest's serial console, and what the outside world saw of it.
#
# The outside world's view of a protected pair's console is what the
# primary let out (its console file) followed by what the backup wrote
# after it went live (the backup's console file; with ft-hold the backup
# writes nothing while it replays).  splice_consoles() joins the two and
# checks that the only anomaly is a repeat at the switch point.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import re
import time


class Console:
    """The guest's serial console, written by QEMU to a file."""

    def __init__(self, path):
        self.path = path

    def text(self):
        try:
            with open(self.path, 'rb') as f:
                return f.read().decode('utf-8', 'replace')
        except FileNotFoundError:
            return ''

    def lines(self):
        return self.text().replace('\r', '').splitlines()

    def wait(self, pattern, timeout, vm=None):
        """Wait for a regex on the console; return its match."""
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.text().replace('\r', ''))
            if m:
                return m
            if vm is not None and not vm.is_running():
                raise AssertionError(
                    f'QEMU exited (rc={vm.exitcode()}) before {pattern!r}; '
                    f'console tail: {self.text()[-2000:]!r}; '
                    f'log: {vm.get_log()!r}')
            if time.monotonic() > deadline:
                raise AssertionError(
                    f'timeout ({timeout}s) waiting for {pattern!r}; '
                    f'console tail: {self.text()[-2000:]!r}')
            time.sleep(0.05)


def splice_consoles(primary, backup):
    """Join what the primary let out with what the backup wrote.

    The backup's output must begin inside, or right after, the primary's:
    backup = S[b:] and primary = S[:a] with b <= a for the real stream S.
    Returns (S, repeated bytes).  Raises AssertionError on a gap or on
    output that does not match.
    """
    for b in range(0, len(primary) + 1):
        tail = primary[b:]
        if backup.startswith(tail) or tail.startswith(backup):
            if not backup.startswith(tail):
                # The backup wrote less than the overlap: still consistent
                return primary, len(backup)
            return primary + backup[len(tail):], len(tail)
    raise AssertionError('the backup\'s console does not continue the '
                         'primary\'s: primary ends %r, backup starts %r'
                         % (primary[-200:], backup[:200]))


def ticks(stream):
    """TICK numbers in order; asserts they are 1, 2, ... with no gap."""
    seen = [int(n) for n in re.findall(r'^TICK (\d+)\r?$', stream, re.M)]
    if seen != list(range(1, len(seen) + 1)):
        raise AssertionError(f'ticks out of order or with a gap: {seen}')
    return seen
