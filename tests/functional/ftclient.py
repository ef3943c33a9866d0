#!/usr/bin/env python3
#
# A network client for the failover tests, run inside the client's network
# namespace.  It holds several TCP connections to the guest's echo server
# (port 7), each streaming deterministic data and checking every byte that
# comes back, plus HTTP downloads of /big.bin checked against its sha256,
# until the stop file appears.  It prints one JSON object with the results.
#
#   ftclient.py --host IP --conns N --stop FILE [--http-sha HEX]
#   ftclient.py --host IP --measure rtt|rx|tx [--seconds S]
#
# SPDX-License-Identifier: GPL-2.0-or-later

import argparse
import hashlib
import json
import os
import socket
import threading
import time

CHUNK = 4096
TIMEOUT = 90        # a failover takes far less; TCP retransmits meanwhile


def pattern(conn_id, n):
    """Bytes n*CHUNK .. of connection conn_id's stream: deterministic."""
    return hashlib.sha256(f'{conn_id}:{n}'.encode()).digest() * (CHUNK // 32)


class Echo(threading.Thread):
    def __init__(self, host, conn_id, stop, chunk_wait):
        super().__init__(daemon=True)
        self.host, self.id, self.stop, self.wait = host, conn_id, stop, \
            chunk_wait
        self.sent = self.verified = 0
        self.error = None
        self.rtts = []
        self.max_stall = 0.0
        self.started = threading.Event()

    def run(self):
        try:
            s = socket.create_connection((self.host, 7), timeout=TIMEOUT)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            n = 0
            while not os.path.exists(self.stop):
                data = pattern(self.id, n)
                t0 = time.monotonic()
                s.sendall(data)
                self.sent += len(data)
                got = b''
                while len(got) < len(data):
                    part = s.recv(len(data) - len(got))
                    if not part:
                        raise ConnectionError('connection closed by the '
                                              f'guest after {self.verified}'
                                              ' bytes')
                    got += part
                dt = time.monotonic() - t0
                self.rtts.append(dt * 1000)
                self.max_stall = max(self.max_stall, dt)
                if got != data:
                    raise ValueError(f'echoed bytes differ at offset '
                                     f'{self.verified}')
                self.verified += len(data)
                self.started.set()
                n += 1
                if self.wait:
                    time.sleep(self.wait)
            s.close()
        except Exception as e:      # noqa: BLE001  reported in the JSON
            self.error = f'{type(e).__name__}: {e}'
        self.started.set()

    def result(self):
        r = sorted(self.rtts)
        return {'id': self.id, 'sent': self.sent, 'verified': self.verified,
                'error': self.error, 'max_stall_s': round(self.max_stall, 3),
                'rtt_p50_ms': r[len(r) // 2] if r else None,
                'rtt_p99_ms': r[min(len(r) - 1, len(r) * 99 // 100)]
                if r else None}


class Http(threading.Thread):
    def __init__(self, host, sha, stop):
        super().__init__(daemon=True)
        self.host, self.sha, self.stop = host, sha, stop
        self.done = 0
        self.bytes = 0
        self.error = None

    def run(self):
        try:
            while not os.path.exists(self.stop):
                s = socket.create_connection((self.host, 80), timeout=TIMEOUT)
                s.sendall(b'GET /big.bin HTTP/1.0\r\nHost: guest\r\n\r\n')
                buf = b''
                while True:
                    part = s.recv(65536)
                    if not part:
                        break
                    buf += part
                s.close()
                head, _, body = buf.partition(b'\r\n\r\n')
                if not head.startswith(b'HTTP/1.') or b' 200 ' not in \
                        head.split(b'\r\n')[0] + b' ':
                    raise ValueError(f'bad HTTP reply: {head[:80]!r}')
                got = hashlib.sha256(body).hexdigest()
                if got != self.sha:
                    raise ValueError(f'download {self.done + 1}: sha256 '
                                     f'{got}, expected {self.sha}')
                self.done += 1
                self.bytes += len(body)
        except Exception as e:      # noqa: BLE001  reported in the JSON
            self.error = f'{type(e).__name__}: {e}'


def measure(host, mode, seconds):
    """Benchmarks: rtt (64-byte echo round trips), rx (bulk to the guest's
    discard port), tx (HTTP downloads from the guest)."""
    if mode == 'rtt':
        s = socket.create_connection((host, 7), timeout=TIMEOUT)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rtts = []
        end = time.monotonic() + seconds
        msg = b'x' * 64
        while time.monotonic() < end:
            t0 = time.monotonic()
            s.sendall(msg)
            got = b''
            while len(got) < len(msg):
                got += s.recv(len(msg) - len(got))
            rtts.append((time.monotonic() - t0) * 1000)
        s.close()
        rtts.sort()
        return {'n': len(rtts), 'rtt_p50_ms': rtts[len(rtts) // 2],
                'rtt_p99_ms': rtts[min(len(rtts) - 1, len(rtts) * 99 // 100)]}
    total = 0
    t0 = time.monotonic()
    if mode == 'rx':
        s = socket.create_connection((host, 9), timeout=TIMEOUT)
        buf = b'\xa5' * 65536
        while time.monotonic() - t0 < seconds:
            s.sendall(buf)
            total += len(buf)
        s.close()
    else:
        while time.monotonic() - t0 < seconds:
            s = socket.create_connection((host, 80), timeout=TIMEOUT)
            s.sendall(b'GET /big.bin HTTP/1.0\r\nHost: guest\r\n\r\n')
            while True:
                part = s.recv(262144)
                if not part:
                    break
                total += len(part)
            s.close()
    dt = time.monotonic() - t0
    return {'bytes': total, 'seconds': dt, 'mbps': total * 8 / dt / 1e6}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--host', required=True)
    ap.add_argument('--measure', choices=('rtt', 'rx', 'tx'),
                    help='run one benchmark instead')
    ap.add_argument('--seconds', type=float, default=10)
    ap.add_argument('--conns', type=int, default=4)
    ap.add_argument('--stop')
    ap.add_argument('--http-sha')
    ap.add_argument('--wait', type=float, default=0.0,
                    help='pause between echo chunks (s)')
    a = ap.parse_args()
    if a.measure:
        print(json.dumps(measure(a.host, a.measure, a.seconds)))
        return
    echoes = [Echo(a.host, i, a.stop, a.wait) for i in range(a.conns)]
    threads = list(echoes)
    http = None
    if a.http_sha:
        http = Http(a.host, a.http_sha, a.stop)
        threads.append(http)
    t0 = time.monotonic()
    # One connection at a time: busybox 'nc -ll' resets connections that
    # arrive while it is still forking the server of the previous one.
    for e in echoes:
        e.start()
        e.started.wait(TIMEOUT)
    if http:
        http.start()
    for t in threads:
        t.join()
    out = {'seconds': time.monotonic() - t0,
           'echo': [e.result() for e in echoes]}
    if http:
        out['http'] = {'downloads': http.done, 'bytes': http.bytes,
                       'error': http.error}
    print(json.dumps(out))


if __name__ == '__main__':
    main()
