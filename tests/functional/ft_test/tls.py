# TLS credentials for the logging channel's tests, made with openssl.
#
# make_pki(base) writes the directories QEMU's tls-creds-x509 and
# tls-creds-psk objects read (see QEMU's docs/system/tls.rst):
#   backup/   ca-cert.pem server-cert.pem server-key.pem   (the server)
#   primary/  ca-cert.pem client-cert.pem client-key.pem   (the client)
#   rogue/    ca-cert.pem client-cert.pem client-key.pem   signed by
#             another CA, which the backup does not trust
#   psk/      keys.psk (the primary's identity and key)
#   psk-other/ keys.psk (the same identity, another key)
# and swapped roles for a primary that is the server:
#   primary-server/ and backup-client/.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import os
import secrets
import shutil
import subprocess
import tempfile
import atexit
import json

DAYS = '2'
# Where the tests run their channel: loopback, and the addresses of
# net.Netns pairs.
SAN = 'DNS:localhost,IP:127.0.0.1,IP:::1,IP:10.77.0.1,IP:10.77.0.2'


def _openssl(*args, cwd):
    subprocess.run(['openssl', *args], cwd=cwd, check=True,
                   capture_output=True)


def _ca(d, name):
    os.makedirs(d, exist_ok=True)
    _openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes',
             '-keyout', 'ca-key.pem', '-out', 'ca-cert.pem', '-days', DAYS,
             '-subj', f'/CN={name}',
             '-addext', 'basicConstraints=critical,CA:TRUE',
             '-addext', 'keyUsage=critical,keyCertSign,cRLSign', cwd=d)


def _leaf(ca_dir, d, prefix, cn, purpose):
    """A certificate for @purpose (serverAuth or clientAuth) in @d."""
    os.makedirs(d, exist_ok=True)
    ext = os.path.join(d, f'{prefix}.ext')
    with open(ext, 'w') as f:
        f.write('basicConstraints=critical,CA:FALSE\n'
                'keyUsage=critical,digitalSignature,keyEncipherment\n'
                f'extendedKeyUsage={purpose}\n'
                f'subjectAltName={SAN}\n')
    _openssl('req', '-newkey', 'rsa:2048', '-nodes',
             '-keyout', f'{prefix}-key.pem', '-out', f'{prefix}.csr',
             '-subj', f'/CN={cn}', cwd=d)
    _openssl('x509', '-req', '-in', f'{prefix}.csr', '-days', DAYS,
             '-CA', os.path.join(ca_dir, 'ca-cert.pem'),
             '-CAkey', os.path.join(ca_dir, 'ca-key.pem'),
             '-CAcreateserial', '-extfile', ext,
             '-out', f'{prefix}-cert.pem', cwd=d)
    for f in (f'{prefix}.csr', ext):
        os.unlink(os.path.join(d, f))
    with open(os.path.join(ca_dir, 'ca-cert.pem'), 'rb') as src, \
            open(os.path.join(d, 'ca-cert.pem'), 'wb') as dst:
        dst.write(src.read())


def _psk(d, key):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'keys.psk'), 'w') as f:
        f.write(f'qemu-ft:{key}\n')


def make_pki(base):
    """Write every credential directory under @base; returns @base."""
    ca = os.path.join(base, 'ca')
    _ca(ca, 'qemu-ft test CA')
    _leaf(ca, os.path.join(base, 'backup'), 'server', 'backup',
          'serverAuth')
    _leaf(ca, os.path.join(base, 'primary'), 'client', 'primary',
          'clientAuth')
    _leaf(ca, os.path.join(base, 'primary-server'), 'server', 'primary',
          'serverAuth')
    _leaf(ca, os.path.join(base, 'backup-client'), 'client', 'backup',
          'clientAuth')
    rogue_ca = os.path.join(base, 'rogue-ca')
    _ca(rogue_ca, 'somebody else')
    _leaf(rogue_ca, os.path.join(base, 'rogue'), 'client', 'primary',
          'clientAuth')
    _psk(os.path.join(base, 'psk'), secrets.token_hex(32))
    _psk(os.path.join(base, 'psk-other'), secrets.token_hex(32))
    return base


def creds_args(kind, d, server, obj_id='tls0', authz=None):
    """QEMU arguments for a credentials object named @obj_id.

    @kind is 'x509' (with client certificates: verify-peer=on) or 'psk';
    @d the directory; @server whether this side is the chardev's server.
    With @authz (a list of client certificate names) a server also gets
    an authz-list object 'authz0' that admits only those names.
    """
    endpoint = 'server' if server else 'client'
    if kind == 'x509':
        obj = (f'tls-creds-x509,id={obj_id},dir={d},endpoint={endpoint},'
               'verify-peer=on')
    else:
        obj = f'tls-creds-psk,id={obj_id},dir={d},endpoint={endpoint}'
        if not server:
            obj += ',username=qemu-ft'
    args = ['-object', obj]
    if authz is not None and server:
        args += ['-object', json.dumps({
            'qom-type': 'authz-list', 'id': 'authz0', 'policy': 'deny',
            'rules': [{'match': n, 'policy': 'allow'} for n in authz]})]
    return args


_PKI = None


def pki():
    """The credentials of this test run, made once."""
    global _PKI
    if _PKI is None:
        _PKI = make_pki(tempfile.mkdtemp(prefix='ft-pki.'))
        atexit.register(shutil.rmtree, _PKI, True)
    return _PKI


def pair_args(kind, primary_server=False):
    """(primary's, backup's) -object arguments for a pair under @kind."""
    base = pki()
    if kind == 'x509':
        pdir = os.path.join(base, 'primary-server' if primary_server
                            else 'primary')
        bdir = os.path.join(base, 'backup-client' if primary_server
                            else 'backup')
        client_cn = 'CN=backup' if primary_server else 'CN=primary'
    else:
        pdir = bdir = os.path.join(base, 'psk')
        client_cn = None
    authz = [client_cn] if client_cn else None
    return (creds_args(kind, pdir, primary_server, authz=authz),
            creds_args(kind, bdir, not primary_server, authz=authz))


def chardev_opts(kind, server):
    """The logging chardev's TLS options for the side that is @server."""
    opts = ',tls-creds=tls0'
    if server and kind == 'x509':
        opts += ',tls-authz=authz0'
    return opts
