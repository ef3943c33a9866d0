#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Check that QEMU without ft/ still links.

Usage: scripts/check-seam.py [BUILD_DIR]   (default build/qemu)

The patched QEMU must build and link for users who leave the ft/
subsystem out.  That holds exactly when no object outside ft/ needs a
symbol that only ft/ defines: every such reference must go through a
registration (the replay core's channel backend, output and digest
ops) or have a stub (stubs/ft.c).  This reads the objects that make
qemu-system-x86_64 with nm, so it needs no second build.
"""

import glob
import os
import subprocess
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def symbols(objs, *flags):
    out = subprocess.run(['nm', '-g', '--format=posix'] + list(flags) + objs,
                         check=True, capture_output=True, text=True).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split()
        # "name type [value size]"; lines ending in ':' name the object
        if len(parts) >= 2 and not parts[0].endswith(':'):
            names.add(parts[0])
    return names


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else os.path.join(TOP, 'build',
                                                               'qemu')
    objs = []
    for d in ['qemu-system-x86_64.p', 'lib*.a.p']:
        objs += glob.glob(os.path.join(build, d, '**', '*.o'), recursive=True)
    ft = [o for o in objs
          if os.path.basename(os.path.dirname(o)) == 'libcommon.a.p' and
          os.path.basename(o).startswith('ft_')]
    core = sorted(set(objs) - set(ft))
    if not ft or not core:
        print(f'check-seam: no ft/ objects or no others in {build}')
        return 1
    ft_defined = symbols(ft, '--defined-only')
    core_defined = symbols(core, '--defined-only')
    core_needed = symbols(core, '--undefined-only')
    bad = sorted((core_needed & ft_defined) - core_defined)
    for name in bad:
        print(f'check-seam: QEMU outside ft/ needs {name}, defined only in ft/')
    print(f'check-seam: {len(core)} objects outside ft/, {len(ft)} in it; '
          f'{len(bad)} symbols would be missing without ft/')
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
