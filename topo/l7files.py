"""The machine side of the lab's L7 controller: the proxies' files on disk.

services/l7/controller.py decides which configuration each proxy gets; this module
puts it where the proxy pods read it (``$KUBELAB_STATE_DIR/l7/``, see
``services.addons.config_dir``) and reads back what they loaded:

* ``fake_certificate``: ingress-nginx's self-signed certificate for TLS hosts without
  a usable Secret, made once per lab with openssl;
* ``write_if_changed``: a file written by rename (a reader never sees half a file) and
  only when its bytes change, so nginx reloads only for a real change (the daemon
  writes the DNS records file with it too);
* ``write_config``: a configuration's files, then its nginx.conf, and the removal of
  files it no longer has;
* ``L7Files``: the above for one lab's L7 directory, plus the removal of a gone
  Gateway's directory and ``pending``, which reads the digest each proxy pod wrote
  into ``pods/<pod>/loaded`` when it loaded its configuration
  (``topo/images/nginx_proxy.py``).
"""

from __future__ import annotations

import os
import shutil
import subprocess

#: ingress-nginx's certificate for TLS hosts without a usable Secret (its subject).
FAKE_CERT_SUBJECT = '/O=Acme Co/CN=Kubernetes Ingress Controller Fake Certificate'


def fake_certificate(directory: str) -> tuple[str, str]:
    """A self-signed certificate and key (PEM paths), made once per lab with openssl."""
    os.makedirs(directory, exist_ok=True)
    cert, key = os.path.join(directory, 'fake.crt'), os.path.join(directory, 'fake.key')
    if not (os.path.exists(cert) and os.path.exists(key)):
        subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes',
                        '-days', '3650', '-subj', FAKE_CERT_SUBJECT,
                        '-keyout', key, '-out', cert], check=True, capture_output=True)
    return cert, key


def write_if_changed(path: str, data: bytes) -> bool:
    """Write ``data`` to ``path`` by rename (a reader never sees half a file), unless
    the file already holds it. True when it was written."""
    try:
        with open(path, 'rb') as f:
            if f.read() == data:
                return False
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + '.tmp'
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'wb') as f:
        f.write(data)
    os.replace(tmp, path)
    return True


def write_config(directory: str, config) -> bool:
    """Write ``config``'s files, then its nginx.conf (atomically, last), where they
    differ; remove files it no longer has. True when anything changed."""
    os.makedirs(directory, exist_ok=True)
    changed = False
    wanted = dict(config.files)
    wanted['nginx.conf'] = config.text.encode()
    for name in sorted(wanted, key=lambda n: n == 'nginx.conf'):
        changed |= write_if_changed(os.path.join(directory, name), wanted[name])
    for root, _, names in os.walk(directory):
        if os.path.relpath(root, directory).split(os.sep)[0] == 'pods':
            continue                               # the pods' own runtime files
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), directory)
            if rel not in wanted:
                os.unlink(os.path.join(root, name))
                changed = True
    return changed


class L7Files:
    """The L7 directory of one lab, as the L7 controller uses it."""

    def __init__(self, l7_dir: str):
        self.l7_dir = l7_dir

    def default_certificate(self) -> tuple[str, str]:
        return fake_certificate(os.path.join(self.l7_dir, 'default-certificate'))

    def write_config(self, directory: str, config) -> bool:
        return write_config(directory, config)

    def remove_stale(self, keep: set[str]) -> None:
        """Remove the configuration directory of every Gateway not in ``keep``."""
        root = os.path.join(self.l7_dir, 'gateway')
        if not os.path.isdir(root):
            return
        for ns in os.listdir(root):
            for name in os.listdir(os.path.join(root, ns)):
                path = os.path.join(root, ns, name)
                if path not in keep:
                    shutil.rmtree(path, ignore_errors=True)

    def pending(self, wanted: dict[str, str], ready: set[str]) -> list[str]:
        """The ready proxy pods (by name, of ``ready``) that have not loaded the
        configuration of their directory yet: ``wanted`` maps a config directory to
        the digest its pods report once they loaded it."""
        pending = []
        for directory, digest in sorted(wanted.items()):
            pods = os.path.join(directory, 'pods')
            for pod in sorted(os.listdir(pods)) if os.path.isdir(pods) else ():
                if pod not in ready:
                    continue
                try:
                    with open(os.path.join(pods, pod, 'loaded')) as f:
                        loaded = f.read()
                except OSError:
                    loaded = None
                if loaded != digest:
                    pending.append(f'pod {pod} has not loaded '
                                   f'{os.path.relpath(directory, self.l7_dir)} yet')
        return pending
