"""TLS Secrets as the lab's proxies use them.

``load_certificate`` takes a Secret of type ``kubernetes.io/tls`` and gives its PEM
certificate (chain) and key as a ``Certificate`` when OpenSSL loads the pair as nginx
will (no encrypted keys), else why not. A missing or unusable Secret leaves an Ingress
host on the default (fake) certificate and makes a Gateway's HTTPS listener unresolved.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import ssl
import tempfile

from services.l7.routes import Certificate, name_of, namespace_of

TLS_SECRET_TYPE = 'kubernetes.io/tls'


def _no_password():
    raise ValueError('encrypted keys are not supported')


@functools.lru_cache(maxsize=256)
def _pair_problem(cert: bytes, key: bytes) -> str:
    """'' when OpenSSL loads the pair as nginx will, else why not."""
    if b'-----BEGIN' not in cert or b'-----BEGIN' not in key:
        return 'tls.crt and tls.key must be PEM'
    with tempfile.TemporaryDirectory(prefix='kubelab-tls-') as tmp:
        cert_path, key_path = os.path.join(tmp, 'c.pem'), os.path.join(tmp, 'k.pem')
        with open(cert_path, 'wb') as f:
            f.write(cert)
        with open(key_path, 'wb') as f:
            f.write(key)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
                cert_path, key_path, password=_no_password)
        except (ssl.SSLError, ValueError, OSError) as exc:
            return f'unusable certificate or key: {exc}'
    return ''


def load_certificate(secret: dict | None) -> tuple[Certificate | None, str]:
    """(Certificate, '') for a usable kubernetes.io/tls Secret, else (None, why)."""
    if secret is None:
        return None, 'not found'
    if secret.get('type') != TLS_SECRET_TYPE:
        return None, f'type is {secret.get("type")!r}, not {TLS_SECRET_TYPE!r}'
    data = secret.get('data') or {}
    try:
        cert = base64.b64decode(data.get('tls.crt') or '', validate=True)
        key = base64.b64decode(data.get('tls.key') or '', validate=True)
    except (binascii.Error, TypeError, ValueError):
        return None, 'data is not base64'
    problem = _pair_problem(cert, key)
    if problem:
        return None, problem
    return Certificate(namespace_of(secret), name_of(secret), cert, key), ''
