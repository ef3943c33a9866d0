#!/usr/bin/env python3
# A simulated corosync + Pacemaker cluster on one machine: every node is a
# network namespace plus a private mount and UTS namespace, joined to the
# others through a Linux bridge.  Used by the tests and the demo of the
# cluster agent; Python 3 standard library only.
#
#   root netns:  bridge ftcbr<T>  <-  veth ftc<T>v<i>  ->  node n<i>: eth0
#                                 <-  veth ftc<T>c     ->  client ns: eth0
#   node n<i>:   br0 = eth0 + fttap0 (tap for the node's VM), IP on br0
#
# A node is "anchored" by a `sleep infinity` that holds its namespaces;
# corosync and pacemakerd are started inside them with nsenter.  Fencing
# uses scripts/fence_ftsim, which reads <workdir>/nodes/<node>.json.
#
# Library use:
#     sys.path.insert(0, 'scripts'); import ftcluster
#     with ftcluster.Cluster(7, '/tmp/ftc7') as cl:
#         print(cl.status())
# CLI:
#     ftcluster.py up --tag T --dir D      (runs until SIGINT/SIGTERM)
#     ftcluster.py down --tag T --dir D
#     ftcluster.py mon --dir D
#     ftcluster.py exec --dir D NODE CMD...
#
# SPDX-License-Identifier: GPL-2.0-or-later

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.realpath(__file__))
FENCE_AGENT_SRC = os.path.join(HERE, 'fence_ftsim')
FENCE_AGENT = '/usr/sbin/fence_ftsim'
OCF_AGENT = '/usr/lib/ocf/resource.d/qemu-ft/vm'

# Totem timing (ms).  The token timeout is how long a node may stay
# silent before it is declared lost; consensus is then spent agreeing on the
# new membership (corosync's default, 1.2 * token).  corosync adds
# token_coefficient (650 ms) per node beyond two to the token, so that is
# zeroed to make the token really TOKEN_MS.  Measured on a 2-core machine
# (corosync runs SCHED_RR, so CPU hogs or TCG guests do not starve it):
# with 1000/1200 not one late token in minutes of two busy cores, and a
# lost node is fenced 2.9-5.3 s after it dies.  Below ~500 ms knet's link
# heartbeat (derived from the token) starts flapping: at 300 ms every link
# went down every ~9 s even on an idle machine.
TOKEN_MS = 1000
CONSENSUS_MS = 1200

# How long a starting controller waits for a DC before an election.
DC_DEADTIME = '2s'

CLIENT_IP = '10.0.3.1/24'

# The package defaults (and owners) that each node gets a private copy of.
PRIVATE_DIRS = [
    ('pacemaker', '/var/lib/pacemaker'),
    ('corosync', '/var/lib/corosync'),
    ('log', '/var/log/pacemaker'),
    ('etc', '/etc/corosync'),
]

DAEMON_ENV = {
    'PATH': '/usr/sbin:/usr/bin:/sbin:/bin',
    'LANG': 'C.UTF-8',
    'HOME': '/root',
}


class ClusterError(Exception):
    """Something in the simulated cluster did not come up or answer."""


def _sh(*cmd, check=True, timeout=60, input=None):
    """Run a command in the root namespaces, output captured as text."""
    return subprocess.run([str(c) for c in cmd], check=check, text=True,
                          capture_output=True, timeout=timeout, input=input)


def _quiet(*cmd):
    """Run a clean-up command, ignoring any failure."""
    try:
        subprocess.run([str(c) for c in cmd], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30)
    except (OSError, subprocess.SubprocessError):
        pass


def _ns_ino(pid, ns='net'):
    """Inode of a process's namespace, or None if it is gone."""
    try:
        return os.stat('/proc/%s/ns/%s' % (pid, ns)).st_ino
    except OSError:
        return None


def _pids_in(inos, ns='net'):
    """Pids of the processes whose `ns` namespace is one of `inos`."""
    me = os.getpid()
    found = []
    for entry in os.listdir('/proc'):
        if entry.isdigit() and int(entry) != me:
            if _ns_ino(entry, ns) in inos:
                found.append(int(entry))
    return found


def kill_namespace(inos, rounds=50):
    """SIGKILL every process living in one of the given net namespaces (by
    inode) until none is left or `rounds` passes are done; returns the
    number of signals sent."""
    inos = {i for i in inos if i}
    sent = 0
    for _ in range(rounds):
        pids = _pids_in(inos)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                sent += 1
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    return sent


def _replace_symlink(link, target):
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if os.path.islink(link) and os.readlink(link) == target:
        return
    tmp = link + '.ftcluster-new'
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def install_fence_agent(src=FENCE_AGENT_SRC):
    """Make Pacemaker's fencer find fence_ftsim (a symlink into the repo)."""
    _replace_symlink(FENCE_AGENT, os.path.realpath(src))


def install_ocf_agent(src):
    """Install the FT resource agent as ocf:qemu-ft:vm (a symlink)."""
    _replace_symlink(OCF_AGENT, os.path.realpath(src))


def _nvpairs(set_id, pairs):
    return ''.join('<nvpair id="%s-%s" name="%s" value="%s"/>'
                   % (set_id, k, k, _xml_attr(v)) for k, v in pairs)


def _xml_attr(value):
    return (str(value).replace('&', '&amp;').replace('"', '&quot;')
            .replace('<', '&lt;').replace('>', '&gt;'))


class Cluster:
    """A simulated cluster of `nodes` nodes named n1..nN.

    `tag` (0..255) keeps several clusters apart: it is in every link,
    namespace and bridge name, and in the default node subnet."""

    def __init__(self, tag, workdir, nodes=3, subnet='10.78.{tag}.',
                 token_ms=TOKEN_MS, consensus_ms=CONSENSUS_MS,
                 client_ip=CLIENT_IP):
        self.tag = str(tag)
        self.workdir = os.path.realpath(workdir)
        self.names = ['n%d' % i for i in range(1, nodes + 1)]
        self.subnet = subnet.format(tag=self.tag)
        self.token_ms = token_ms
        self.consensus_ms = consensus_ms
        self.client_ip = client_ip
        self.bridge = 'ftcbr%s' % self.tag
        self.client_ns = 'ftc%scl' % self.tag
        self.client_veth = 'ftc%sc' % self.tag
        self.nodedir = os.path.join(self.workdir, 'nodes')
        self.fence_log = os.path.join(self.workdir, 'fence.log')
        self._procs = []            # every Popen we started, to reap them
        self._info = {}             # node -> the JSON record
        self.formed_in = None       # seconds up() took to a quorate cluster
        self.up_in = None           # ... and until ftfence was started
        for name in self.names:
            self._load_info(name)

    # --- naming -----------------------------------------------------------

    def _index(self, node):
        if node not in self.names:
            raise ValueError('no node %r in %s' % (node, self.names))
        return self.names.index(node) + 1

    def netns(self, node):
        return 'ftc%sn%d' % (self.tag, self._index(node))

    def veth(self, node):
        return 'ftc%sv%d' % (self.tag, self._index(node))

    def node_ip(self, node):
        return self.subnet + str(self._index(node))

    def node_dir(self, node):
        return os.path.join(self.nodedir, node)

    def _info_path(self, node):
        return os.path.join(self.nodedir, node + '.json')

    def _load_info(self, node):
        try:
            with open(self._info_path(node)) as f:
                self._info[node] = json.load(f)
        except (OSError, ValueError):
            pass

    def anchor_pid(self, node):
        info = self._info.get(node)
        if info is None:
            raise ClusterError('node %s was never started' % node)
        return info['anchor_pid']

    # --- running things inside nodes -------------------------------------

    def wrapper(self, node):
        """argv prefix running a command in the node's namespaces (the
        node must be alive: a dead anchor's pid may be someone else's)."""
        if not self.alive(node):
            raise ClusterError('node %s is not running' % node)
        return ['nsenter', '-t', str(self.anchor_pid(node)),
                '-m', '-n', '-u', '--wd=/', '--']

    def _env(self, extra=None):
        env = dict(DAEMON_ENV)
        if extra:
            env.update(extra)
        return env

    def run(self, node, *cmd, check=True, timeout=60, input=None, env=None):
        """Run cmd inside `node`; a CompletedProcess with text output."""
        argv = self.wrapper(node) + [str(c) for c in cmd]
        return subprocess.run(argv, check=check, text=True,
                              capture_output=True, timeout=timeout,
                              input=input, env=self._env(env))

    def popen(self, node, *cmd, env=None, **kw):
        """Start cmd inside `node` (a Popen, kept to be reaped later)."""
        kw.setdefault('stdin', subprocess.DEVNULL)
        kw.setdefault('start_new_session', True)
        argv = self.wrapper(node) + [str(c) for c in cmd]
        proc = subprocess.Popen(argv, env=self._env(env), **kw)
        self._procs.append(proc)
        return proc

    def _reap(self):
        self._procs = [p for p in self._procs if p.poll() is None]

    # --- liveness -------------------------------------------------------

    def netns_ino(self, node):
        """Inode of the node's network namespace as /run/netns has it now
        (None: gone).  Only this is trusted for killing: the inode in a
        stale record may have been reused by someone else's namespace."""
        return self._netns_file_ino(self.netns(node))

    def alive(self, node):
        """The node's anchor process still lives in the node's netns."""
        info = self._info.get(node)
        self._reap()
        return bool(info) and \
            _ns_ino(info['anchor_pid']) == info['netns_ino'] == \
            self.netns_ino(node)

    def link_up(self, node):
        try:
            with open('/sys/class/net/%s/flags' % self.veth(node)) as f:
                return bool(int(f.read(), 16) & 1)
        except OSError:
            return False

    def live_nodes(self):
        """Nodes that run and are connected, in name order."""
        return [n for n in self.names if self.alive(n) and self.link_up(n)]

    def any_node(self):
        nodes = self.live_nodes()
        if not nodes:
            raise ClusterError('no live node')
        return nodes[0]

    def tool(self, *cmd, node=None, **kw):
        """Run a cluster tool (crm_resource, cibadmin...) on a live node."""
        return self.run(node or self.any_node(), *cmd, **kw)

    def cib(self, *args, node=None, **kw):
        """cibadmin with these arguments, e.g.
        cl.cib('--create', '--scope', 'resources', '--xml-text', xml)."""
        return self.tool('cibadmin', *args, node=node, **kw)

    def status(self, node=None):
        """crm_mon -1 text, from `node` or any live node."""
        return self.tool('crm_mon', '-1', '-r', node=node, check=False).stdout

    def status_xml(self, node=None):
        out = self.tool('crm_mon', '--output-as=xml', node=node,
                        check=False, timeout=30).stdout
        try:
            return ET.fromstring(out)
        except ET.ParseError as e:
            raise ClusterError('crm_mon gave no XML: %s: %r'
                               % (e, out[:200])) from None

    def online(self, node=None, root=None):
        """Names of the nodes online in the view of `node` / a live node
        (or in `root`, a status_xml())."""
        if root is None:
            root = self.status_xml(node)
        return {n.get('name') for n in root.iterfind('./nodes/node')
                if n.get('online') == 'true' and n.get('type') != 'remote'
                and n.get('unclean') != 'true'}

    def quorate(self, node=None):
        dc = self.status_xml(node).find('./summary/current_dc')
        return dc is not None and dc.get('with_quorum') == 'true'

    def where(self, rsc, role=None, root=None):
        """Nodes running resource `rsc` (a primitive, or any instance in a
        clone/group/bundle `rsc`), optionally only in `role` ('Promoted',
        'Unpromoted', 'Started').  `root`: a status_xml() to look at."""
        if root is None:
            root = self.status_xml()
        resources = root.find('resources')
        if resources is None:
            return []
        prims = []
        for el in resources.iter():
            if el.tag == 'resource':
                if el.get('id', '').split(':')[0] == rsc:
                    prims.append(el)
            elif el.get('id') == rsc:
                prims += el.iter('resource')
        found = []
        for r in dict.fromkeys(prims):
            if r.get('active') != 'true' or r.get('failed') == 'true':
                continue
            if role and r.get('role') != role:
                continue
            found += [n.get('name') for n in r.findall('node')]
        return found

    def wait(self, predicate, timeout=60, interval=0.25, what='condition'):
        """Poll predicate() until true (returns its value) or time out."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                value = predicate()
                if value:
                    return value
            except (ClusterError, subprocess.SubprocessError) as e:
                last = e
            if time.monotonic() > deadline:
                raise ClusterError('timed out waiting for %s (%s)'
                                   % (what, last))
            time.sleep(interval)

    # --- failures -------------------------------------------------------

    def cut(self, node, storage=()):
        """Disconnect the node (its root-side link down); it keeps running.
        The directories in @storage (shared storage reached over that
        network, such as an NFS lock directory) become unusable in the
        node: an empty read-only file system covers each."""
        _sh('ip', 'link', 'set', self.veth(node), 'down')
        for path in storage:
            self.run(node, 'mount', '-t', 'tmpfs', '-o', 'ro,size=4k',
                     'ftcut', path)

    def heal(self, node):
        _sh('ip', 'link', 'set', self.veth(node), 'up')

    def kill_node(self, node):
        """Lose the node as a power failure would: link down, then SIGKILL
        every process in its network namespace."""
        _quiet('ip', 'link', 'set', self.veth(node), 'down')
        ino = self.netns_ino(node)
        if ino:
            kill_namespace([ino])
        self._reap()

    # --- bringing it up -------------------------------------------------

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()
        return False

    def up(self, timeout=120):
        """Build the network and the nodes, start the daemons, wait for a
        quorate cluster, configure fencing; returns self."""
        start = time.monotonic()
        self.down()                         # leftovers of the same tag
        install_fence_agent()
        os.makedirs(self.nodedir, exist_ok=True)
        with open(self.fence_log, 'w'):
            pass
        try:
            self._make_authkey()
            self._make_network()
            for node in self.names:
                self._make_node(node)
            for node in self.names:
                self._start_corosync(node)
            for node in self.names:
                self.wait(lambda n=node: self.run(
                    n, 'corosync-cfgtool', '-s', check=False).returncode == 0,
                    timeout=30, what='corosync on %s' % node)
            for node in self.names:
                self._start_pacemaker(node)
            self.wait(self._formed, timeout=timeout - (time.monotonic()
                                                       - start),
                      interval=0.5, what='all nodes online and quorate')
            self.formed_in = time.monotonic() - start
            self._configure()
            self.wait(lambda: self.where('ftfence', 'Started'),
                      timeout=60, what='ftfence started')
        except BaseException:
            self.down()
            raise
        self.up_in = time.monotonic() - start
        return self

    def _formed(self):
        root = self.status_xml()
        dc = root.find('./summary/current_dc')
        return (dc is not None and dc.get('with_quorum') == 'true'
                and self.online(root=root) == set(self.names))

    def _make_authkey(self):
        path = os.path.join(self.workdir, 'authkey')
        if not os.path.exists(path):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, 'wb') as f:
                f.write(os.urandom(256))
        self.authkey = path

    def _make_network(self):
        _sh('ip', 'link', 'add', self.bridge, 'type', 'bridge',
            'stp_state', '0', 'forward_delay', '0')
        _sh('ip', 'link', 'set', self.bridge, 'up')
        _sh('ip', 'netns', 'add', self.client_ns)
        self._add_veth(self.client_veth, self.client_ns)
        _sh('ip', '-n', self.client_ns, 'addr', 'add', self.client_ip,
            'dev', 'eth0')
        _sh('ip', '-n', self.client_ns, 'link', 'set', 'eth0', 'up')
        _sh('ip', '-n', self.client_ns, 'link', 'set', 'lo', 'up')

    def _add_veth(self, root_end, ns):
        """A veth from the root bridge to `eth0` inside netns `ns`."""
        tmp = root_end + 'p'
        _sh('ip', 'link', 'add', root_end, 'type', 'veth', 'peer', 'name', tmp)
        _sh('ip', 'link', 'set', tmp, 'netns', ns)
        _sh('ip', '-n', ns, 'link', 'set', tmp, 'name', 'eth0')
        _sh('ip', 'link', 'set', root_end, 'master', self.bridge)
        _sh('ip', 'link', 'set', root_end, 'up')

    def _make_node(self, node):
        ns, d = self.netns(node), self.node_dir(node)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for sub, orig in PRIVATE_DIRS:
            _sh('cp', '-a', orig, os.path.join(d, sub))
        self._seed_cib(os.path.join(d, 'pacemaker', 'cib', 'cib.xml'))
        etc = os.path.join(d, 'etc')
        with open(os.path.join(etc, 'corosync.conf'), 'w') as f:
            f.write(self._corosync_conf(node))
        shutil.copy(self.authkey, os.path.join(etc, 'authkey'))
        os.chmod(os.path.join(etc, 'authkey'), 0o400)

        _sh('ip', 'netns', 'add', ns)
        self._add_veth(self.veth(node), ns)
        for cmd in (['link', 'add', 'br0', 'type', 'bridge', 'stp_state', '0',
                     'forward_delay', '0'],
                    ['tuntap', 'add', 'dev', 'fttap0', 'mode', 'tap'],
                    ['link', 'set', 'eth0', 'master', 'br0'],
                    ['link', 'set', 'fttap0', 'master', 'br0'],
                    ['addr', 'add', self.node_ip(node) + '/24', 'dev', 'br0'],
                    ['link', 'set', 'lo', 'up'],
                    ['link', 'set', 'eth0', 'up'],
                    ['link', 'set', 'fttap0', 'up'],
                    ['link', 'set', 'br0', 'up']):
            _sh('ip', '-n', ns, *cmd)

        ready = os.path.join(d, 'anchor.ready')
        mounts = ''.join('mount --bind %s %s\n' % (os.path.join(d, sub), orig)
                         for sub, orig in PRIVATE_DIRS)
        keep = os.path.join(d, 'netns.mnt')
        os.makedirs(keep)
        script = f'''set -e
hostname {node}
{mounts}mount --rbind /run/netns {keep}
mount -t tmpfs -o mode=0755,nosuid,nodev ftc-run /run
mount -t tmpfs -o mode=1777,nosuid,nodev ftc-shm /dev/shm
mkdir /run/netns
mount --move {keep} /run/netns
mkdir -m 1777 /run/lock
ln -s /dev/shm /run/shm
install -d -o hacluster -g haclient -m 0750 /run/crm
install -d -m 1755 /run/resource-agents
echo $$ > {ready}
exec sleep infinity
'''
        # ip netns exec gives the node its own /sys; unshare its own mount
        # and UTS namespaces.  Slave propagation: the node sees the mounts
        # and unmounts done in the root namespace (`ip netns add/del` of
        # any namespace) but its own mounts stay private.  /run is private
        # to the node, except /run/netns: the fence agent, running inside
        # a node, checks there that a record still names a live namespace
        # (nsfs inode numbers get reused).
        with open(os.path.join(d, 'anchor.out'), 'w') as out:
            proc = subprocess.Popen(
                ['ip', 'netns', 'exec', ns, 'unshare', '-m', '-u',
                 '--propagation', 'slave', 'sh', '-c', script],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True, env=self._env())
        self._procs.append(proc)
        self.wait(lambda: os.path.exists(ready) or proc.poll() is not None,
                  timeout=20, interval=0.05, what='anchor of %s' % node)
        if proc.poll() is not None:
            with open(os.path.join(d, 'anchor.out')) as f:
                raise ClusterError('anchor of %s failed: %s'
                                   % (node, f.read()))
        info = {
            'name': node,
            'tag': self.tag,
            'ip': self.node_ip(node),
            'anchor_pid': proc.pid,
            'netns': ns,
            'netns_ino': _ns_ino(proc.pid, 'net'),
            'mntns_ino': _ns_ino(proc.pid, 'mnt'),
            'veth': self.veth(node),
            'root_netns_ino': _ns_ino('self', 'net'),
            'dir': d,
        }
        tmp = self._info_path(node) + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(info, f, indent=1)
        os.replace(tmp, self._info_path(node))
        self._info[node] = info

    def _seed_cib(self, path):
        """An initial CIB with a short dc-deadtime: with the default 20 s
        the controllers wait that long before their first election."""
        cib = ET.fromstring(_sh('cibadmin', '--empty').stdout)
        props = ET.SubElement(cib.find('./configuration/crm_config'),
                              'cluster_property_set',
                              id='cib-bootstrap-options')
        ET.SubElement(props, 'nvpair', name='dc-deadtime', value=DC_DEADTIME,
                      id='cib-bootstrap-options-dc-deadtime')
        with open(path, 'wb') as f:
            f.write(ET.tostring(cib))
        os.chmod(path, 0o600)
        shutil.chown(path, 'hacluster', 'haclient')

    def _corosync_conf(self, node):
        nodes = ''.join('''    node {
        name: %s
        nodeid: %d
        ring0_addr: %s
    }
''' % (n, self._index(n), self.node_ip(n)) for n in self.names)
        return f'''# Generated by scripts/ftcluster.py for node {node}
totem {{
    version: 2
    cluster_name: ftc{self.tag}
    transport: knet
    token: {self.token_ms}
    token_coefficient: 0
    consensus: {self.consensus_ms}
    crypto_cipher: aes256
    crypto_hash: sha256
}}

nodelist {{
{nodes}}}

quorum {{
    provider: corosync_votequorum
}}

logging {{
    to_logfile: yes
    logfile: {self.node_dir(node)}/corosync.log
    to_stderr: no
    to_syslog: no
    timestamp: hires
    fileline: off
    debug: off
}}
'''

    def _start_corosync(self, node):
        with open(os.path.join(self.node_dir(node), 'corosync.out'), 'w') as o:
            self.popen(node, 'corosync', '-f', stdout=o, stderr=o)

    def _start_pacemaker(self, node):
        with open(os.path.join(self.node_dir(node), 'pacemakerd.out'),
                  'w') as o:
            self.popen(node, 'pacemakerd', '-f', stdout=o, stderr=o)

    def _configure(self):
        props = [('stonith-enabled', 'true'),
                 ('no-quorum-policy', 'stop'),
                 ('cluster-recheck-interval', '30s'),
                 ('stonith-timeout', '30s'),
                 ('dc-deadtime', DC_DEADTIME)]
        self.cib('--modify', '--scope', 'crm_config', '--xml-text',
                 '<crm_config><cluster_property_set id="cib-bootstrap-options">'
                 + _nvpairs('cib-bootstrap-options', props)
                 + '</cluster_property_set></crm_config>')
        params = [('simdir', self.workdir),
                  ('pcmk_host_list', ' '.join(self.names)),
                  ('pcmk_reboot_action', 'off')]
        self.cib('--create', '--scope', 'resources', '--xml-text',
                 '<primitive id="ftfence" class="stonith" type="fence_ftsim">'
                 '<instance_attributes id="ftfence-params">'
                 + _nvpairs('ftfence-params', params)
                 + '</instance_attributes><operations>'
                 '<op id="ftfence-monitor-10s" name="monitor" interval="10s"'
                 ' timeout="20s"/></operations></primitive>')

    # --- tearing down ---------------------------------------------------

    def down(self):
        """Kill every process of every node and of the client namespace,
        remove links, bridge and namespaces.  Idempotent; never raises."""
        try:
            inos = {self.netns_ino(node) for node in self.names}
            inos.add(self._netns_file_ino(self.client_ns))
            inos.discard(None)
            inos.discard(_ns_ino('self'))       # never the root netns
            kill_namespace(inos)
            for proc in self._procs:
                try:
                    proc.kill()
                    proc.wait(timeout=5)
                except (OSError, subprocess.SubprocessError):
                    pass
            self._procs = []
            for node in self.names:
                _quiet('ip', 'link', 'del', self.veth(node))
                _quiet('ip', 'netns', 'del', self.netns(node))
            _quiet('ip', 'link', 'del', self.client_veth)
            _quiet('ip', 'netns', 'del', self.client_ns)
            _quiet('ip', 'link', 'del', self.bridge)
        except Exception as e:              # never raise from clean-up
            print('ftcluster: down: %s' % e, file=sys.stderr)

    @staticmethod
    def _netns_file_ino(name):
        try:
            return os.stat('/run/netns/' + name).st_ino
        except OSError:
            return None


# --- CLI ------------------------------------------------------------------

def _cluster_from_dir(workdir, tag=None):
    if tag is None:
        try:
            with open(os.path.join(workdir, 'nodes', 'n1.json')) as f:
                tag = json.load(f)['tag']
        except (OSError, ValueError, KeyError):
            sys.exit('ftcluster: no cluster in %s (give --tag)' % workdir)
    names = sorted(f[:-5] for f in os.listdir(os.path.join(workdir, 'nodes'))
                   if f.endswith('.json')) if os.path.isdir(
                       os.path.join(workdir, 'nodes')) else []
    return Cluster(tag, workdir, nodes=max(len(names), 3))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest='cmd', required=True)
    p = sub.add_parser('up', help='start a cluster, run until signalled')
    p.add_argument('--tag', required=True)
    p.add_argument('--dir', required=True)
    p.add_argument('--nodes', type=int, default=3)
    p = sub.add_parser('down', help='tear a cluster down')
    p.add_argument('--tag')
    p.add_argument('--dir', required=True)
    p = sub.add_parser('mon', help='crm_mon -1 from a live node')
    p.add_argument('--dir', required=True)
    p = sub.add_parser('exec', help='run a command inside a node')
    p.add_argument('--dir', required=True)
    p.add_argument('node')
    p.add_argument('command', nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)

    if args.cmd == 'up':
        cl = Cluster(args.tag, args.dir, nodes=args.nodes)
        stop = []

        def on_signal(signum, frame):
            stop.append(signum)
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        try:
            cl.up()
            print('cluster ftc%s up in %.1f s (quorate in %.1f s); client '
                  'netns %s' % (cl.tag, cl.up_in, cl.formed_in, cl.client_ns),
                  flush=True)
            print(cl.status(), flush=True)
            while not stop:
                time.sleep(0.5)
                cl._reap()
        finally:
            cl.down()
        return 0
    if args.cmd == 'down':
        if args.tag is None:
            _cluster_from_dir(args.dir).down()
        else:
            Cluster(args.tag, args.dir).down()
        return 0
    cl = _cluster_from_dir(args.dir)
    if args.cmd == 'mon':
        sys.stdout.write(cl.status())
        return 0
    if not args.command:
        sys.exit('ftcluster: exec: no command')
    return subprocess.call(cl.wrapper(args.node) + args.command,
                           env=cl._env())


if __name__ == '__main__':
    sys.exit(main())
