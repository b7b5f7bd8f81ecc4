"""Generated names and identities: template hashes, suffixes, UIDs, times.

Kubernetes names generated objects with a suffix drawn from an alphabet without
vowels and without look-alike characters (so no words and no ``0``/``o`` or
``1``/``l`` confusion): ``web-7c5ddbdf54-x2kqv``. kubelab uses the same.
"""

import datetime
import json
import random
import uuid

#: Alphabet of generated names (Kubernetes' "safe" alphabet, 27 characters).
SAFE_ALPHABET = 'bcdfghjklmnpqrstvwxz2456789'

_FNV32_OFFSET = 0x811C9DC5
_FNV32_PRIME = 0x01000193


def _fnv1a_32(data: bytes) -> int:
    value = _FNV32_OFFSET
    for byte in data:
        value = ((value ^ byte) * _FNV32_PRIME) & 0xFFFFFFFF
    return value


def safe_encode(text: str) -> str:
    """Map every character of ``text`` onto ``SAFE_ALPHABET``."""
    return ''.join(SAFE_ALPHABET[ord(ch) % len(SAFE_ALPHABET)] for ch in text)


def pod_template_hash(template: dict, collision_count: int = 0) -> str:
    """A stable short hash (8-10 characters) of a Deployment's pod template.

    Like Kubernetes, a 32-bit FNV-1a hash of the template, written in decimal
    and each digit mapped onto the safe alphabet. The template is serialised
    as canonical JSON, so key order does not matter.
    """
    canonical = json.dumps(template, sort_keys=True, separators=(',', ':'),
                           default=str)
    if collision_count:
        canonical += f'#{collision_count}'
    digits = str(_fnv1a_32(canonical.encode('utf-8'))).zfill(8)
    return safe_encode(digits)


def random_suffix(n: int = 5, rng: random.Random | None = None) -> str:
    """``n`` random characters of the safe alphabet (as ``generateName``)."""
    rng = rng or random.SystemRandom()
    return ''.join(rng.choice(SAFE_ALPHABET) for _ in range(n))


def new_uid() -> str:
    """A fresh object UID (a random UUID, as the API server assigns)."""
    return str(uuid.uuid4())


def now_rfc3339(now: float | None = None) -> str:
    """The time ``now`` (seconds since the epoch; default: the current time) in
    Kubernetes' timestamp format, e.g. ``2024-05-01T12:00:00Z``."""
    if now is None:
        moment = datetime.datetime.now(datetime.timezone.utc)
    else:
        moment = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    return moment.strftime('%Y-%m-%dT%H:%M:%SZ')


def now_micro(now: float | None = None) -> str:
    """A MicroTime (a Lease's ``renewTime``): ``2024-05-01T12:00:00.123456Z``."""
    if now is None:
        moment = datetime.datetime.now(datetime.timezone.utc)
    else:
        moment = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    return moment.strftime('%Y-%m-%dT%H:%M:%S.%fZ')


def epoch(timestamp: str | None) -> float | None:
    """Seconds since the epoch of an RFC 3339 time (``...Z``, with or without a
    fraction); None for None or a text that is not one."""
    if not timestamp:
        return None
    text = timestamp.replace('Z', '+00:00')
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None
