# Small helpers: files, statistics.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import hashlib


def sha256_file(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def make_disk(path, size_mb):
    """A sparse raw image of @size_mb MiB at @path."""
    with open(path, 'wb') as f:
        f.truncate(size_mb << 20)
    return path


def percentile(values, q):
    """The @q-th percentile of @values (nearest rank), NaN if empty."""
    v = sorted(values)
    if not v:
        return float('nan')
    return v[min(len(v) - 1, int(round(q / 100 * (len(v) - 1))))]


def rss_kib(pid):
    """Resident memory of process @pid, KiB."""
    with open(f'/proc/{pid}/status') as f:
        for ln in f:
            if ln.startswith('VmRSS:'):
                return int(ln.split()[1])
    return 0
