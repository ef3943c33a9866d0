# The one client of the guest's TCP echo server (guest/init: port 7),
# for the tests, the benchmarks and the network client (client.py).
#
# SPDX-License-Identifier: GPL-2.0-or-later

import collections
import hashlib
import os
import socket
import threading
import time

CHUNK = 4096
TIMEOUT = 90        # a failover takes far less; TCP retransmits meanwhile


def pattern(conn_id, n, size=CHUNK):
    """Chunk @n of connection @conn_id's stream: deterministic."""
    return hashlib.sha256(f'{conn_id}:{n}'.encode()).digest() * (size // 32)


def _percentile_ms(values, q):
    r = sorted(values)
    return r[min(len(r) - 1, len(r) * q // 100)] if r else None


class Echo(threading.Thread):
    """One TCP connection to the echo server, streaming deterministic
    data and checking every byte that comes back.

    Up to @window bytes are in flight (by default one chunk: each chunk
    waits for its echo, so every round trip is timed).  The stream ends
    when @stop() is true or @nbytes were echoed.  Without @reconnect the
    first error ends it (kept in .error); with it (benchmarks, where the
    figure is the rate) a failed connection is opened again.
    Run it as a thread (start()) or in the caller's (run()).
    """

    def __init__(self, host, port=7, conn_id=0, stop=None, nbytes=None,
                 chunk=CHUNK, window=None, wait=0.0, reconnect=False,
                 cpus=None, timeout=TIMEOUT):
        super().__init__(daemon=True)
        self.host, self.port, self.id = host, port, conn_id
        self.stop = stop or (lambda: False)
        self.nbytes, self.chunk = nbytes, chunk
        self.window = window or chunk
        self.wait, self.reconnect = wait, reconnect
        self.cpus, self.timeout = cpus, timeout
        self.sent = self.verified = 0
        self.error = None
        self.rtts = []
        self.max_stall = 0.0
        self.started = threading.Event()

    def done(self):
        return self.stop() or (self.nbytes is not None and
                                self.verified >= self.nbytes)

    def run(self):
        if self.cpus:
            os.sched_setaffinity(0, self.cpus)      # this thread only
        n = 0
        while not self.done():
            try:
                n = self.stream(n)
            except OSError as e:
                if not self.reconnect:
                    self.error = f'{type(e).__name__}: {e}'
                    break
                time.sleep(0.5)
            except Exception as e:      # noqa: BLE001  kept in .error
                self.error = f'{type(e).__name__}: {e}'
                break
        self.started.set()

    def stream(self, n):
        """One connection, from chunk @n on; returns the next chunk's
        number."""
        with socket.create_connection((self.host, self.port),
                                      timeout=self.timeout) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pending = bytearray()               # sent, not echoed yet
            sent_at = collections.deque()       # (end offset, time)
            while not self.done():
                if len(pending) + self.chunk <= self.window and \
                        (self.nbytes is None or self.sent < self.nbytes):
                    data = pattern(self.id, n, self.chunk)
                    n += 1
                    s.sendall(data)
                    pending += data
                    self.sent += len(data)
                    sent_at.append((self.sent, time.monotonic()))
                    continue
                part = s.recv(len(pending))
                if not part:
                    raise ConnectionError('connection closed by the guest '
                                          f'after {self.verified} bytes')
                if part != pending[:len(part)]:
                    raise ValueError('echoed bytes differ at offset '
                                     f'{self.verified}')
                del pending[:len(part)]
                self.verified += len(part)
                while sent_at and sent_at[0][0] <= self.verified:
                    dt = time.monotonic() - sent_at.popleft()[1]
                    self.rtts.append(dt * 1000)
                    self.max_stall = max(self.max_stall, dt)
                self.started.set()
                if not pending and self.wait:
                    time.sleep(self.wait)
        return n

    def result(self):
        return {'id': self.id, 'sent': self.sent, 'verified': self.verified,
                'error': self.error, 'max_stall_s': round(self.max_stall, 3),
                'rtt_p50_ms': _percentile_ms(self.rtts, 50),
                'rtt_p99_ms': _percentile_ms(self.rtts, 99)}
