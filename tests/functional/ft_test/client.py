# The network client of the bridged tests, benchmarks and demo, run in the
# client's network namespace (net.BridgeNet.client_cmd()).  It holds
# several TCP connections to the guest's echo server, each streaming
# deterministic data and checking every byte that comes back, plus HTTP
# downloads of /big.bin checked against its sha256, until the stop file
# appears.  It prints one JSON object with the results.
#
#   python3 -m ft_test.client --host IP --conns N --stop FILE [--http-sha HEX]
#   python3 -m ft_test.client --host IP --measure rtt|rx|tx [--seconds S]
#
# SPDX-License-Identifier: GPL-2.0-or-later

import argparse
import hashlib
import json
import os
import socket
import threading
import time

from .echo import Echo, TIMEOUT


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
        end = time.monotonic() + seconds
        echo = Echo(host, chunk=64, stop=lambda: time.monotonic() >= end)
        echo.run()
        if echo.error:
            raise RuntimeError(echo.error)
        r = echo.result()
        # every sample too (at most 20000, evenly spread), for plots
        step = max(1, len(echo.rtts) // 20000)
        return {'n': len(echo.rtts), 'rtt_p50_ms': r['rtt_p50_ms'],
                'rtt_p99_ms': r['rtt_p99_ms'],
                'rtts_ms': [round(x, 4) for x in echo.rtts[::step]]}
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

    def stop():
        return os.path.exists(a.stop)
    echoes = [Echo(a.host, conn_id=i, stop=stop, wait=a.wait)
              for i in range(a.conns)]
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
