# The set-up scripts (scripts/*.sh) under a slow producer.
#
# Both README commands begin with install-deps.sh, fetch-qemu.sh,
# build-qemu.sh and build-guest.sh, under set -euo pipefail.  A pipeline
# whose reader exits early (awk ... exit, grep -q, head) kills its writer
# with SIGPIPE whenever the writer has more to write, and pipefail then
# ends the script with status 141: a race that a loaded machine, or gawk
# as /usr/bin/awk, loses every time.  Here apt-cache and dpkg-query are
# replaced on PATH by slow-lines, which writes their real output a line at
# a time with a pause after each, so that every such reader meets SIGPIPE
# deterministically, once with mawk and once with gawk as awk.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import os
import shutil
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.abspath(os.path.join(HERE, '..', '..'))
SCRIPTS = ('install-deps.sh', 'fetch-qemu.sh', 'build-qemu.sh',
           'build-guest.sh')
AWKS = ('mawk', 'gawk')


class SlowProducers(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='ft-shim.')
        self.addCleanup(shutil.rmtree, self.tmp)

    def shim_path(self, awk):
        """A PATH whose apt-cache and dpkg-query are slow and whose awk is
        @awk."""
        real = shutil.which(awk)
        if real is None:
            self.fail(f'{awk} is not installed (scripts/install-deps.sh '
                      'installs it)')
        d = tempfile.mkdtemp(prefix=f'{awk}.', dir=self.tmp)
        for name in ('apt-cache', 'dpkg-query'):
            os.symlink(os.path.join(HERE, 'slow-lines'),
                       os.path.join(d, name))
        os.symlink(real, os.path.join(d, 'awk'))
        return d + os.pathsep + os.environ['PATH']

    def run_script(self, path, script, *args):
        return subprocess.run(['bash', script, *args], capture_output=True,
                              text=True, timeout=600,
                              env=dict(os.environ, PATH=path))

    def probe(self, awk, pipeline):
        """Run @pipeline as the set-up scripts run commands."""
        probe = os.path.join(self.tmp, 'probe.sh')
        with open(probe, 'w') as f:
            f.write('set -euo pipefail\n'
                    f'. {TOP}/scripts/lib.sh\n'
                    f'{pipeline}\n'
                    'echo survived\n')
        return self.run_script(self.shim_path(awk), probe)

    def assert_sigpipe(self, r):
        self.assertEqual(r.returncode, 141, r.stderr)
        self.assertNotIn('survived', r.stdout)
        self.assertRegex(r.stderr, r'error: .*probe\.sh:3: .* '
                         r'exited with status 141 .*SIGPIPE')

    def test_shim_kills_an_early_reader(self):
        """The shim is sharp enough: the pipelines the set-up used to have
        die of SIGPIPE under it, and lib.sh's ERR trap says where."""
        self.assert_sigpipe(self.probe(
            'gawk', "apt-cache policy bash | "
            "awk '/^  Candidate:/ { print $2; exit }'"))
        self.assert_sigpipe(self.probe(
            'mawk', "dpkg-query -W -f='${Status}\\n' bash coreutils | "
            "grep -q 'ok installed'"))

    def test_setup_scripts_survive_slow_producers(self):
        """Every set-up step of the README commands succeeds."""
        for awk in AWKS:
            path = self.shim_path(awk)
            for script in SCRIPTS:
                with self.subTest(awk=awk, script=script):
                    r = self.run_script(path,
                                        os.path.join(TOP, 'scripts', script))
                    self.assertEqual(r.returncode, 0,
                                     f'{script} with {awk}:\n{r.stderr}')
                    self.assertNotIn('error:', r.stderr)


if __name__ == '__main__':
    unittest.main()
