"""Ages as kubectl prints them (AGE, LAST SEEN): apimachinery's HumanDuration over
RFC 3339 timestamps. Shared by kubelab/printers.py, kubelab/printers_l7.py and
kubelab/printers_more.py."""

from __future__ import annotations

from datetime import datetime, timezone


def human_duration(seconds: float) -> str:
    """kubectl's AGE shorthand (apimachinery's duration.HumanDuration)."""
    whole = int(seconds)  # truncates toward zero, as Go's int() does
    if whole < -1:
        return '<invalid>'
    if whole < 0:
        return '0s'
    if whole < 120:
        return f'{whole}s'
    minutes = whole // 60
    if minutes < 10:
        rest = whole % 60
        return f'{minutes}m{rest}s' if rest else f'{minutes}m'
    if minutes < 180:
        return f'{minutes}m'
    hours = whole // 3600
    if hours < 8:
        rest = minutes % 60
        return f'{hours}h{rest}m' if rest else f'{hours}h'
    if hours < 48:
        return f'{hours}h'
    if hours < 24 * 8:
        rest = hours % 24
        return f'{hours // 24}d{rest}h' if rest else f'{hours // 24}d'
    if hours < 24 * 365 * 2:
        return f'{hours // 24}d'
    if hours < 24 * 365 * 8:
        rest = (hours // 24) % 365
        years = hours // 24 // 365
        return f'{years}y{rest}d' if rest else f'{years}y'
    return f'{hours // 24 // 365}y'


def parse_time(text: str) -> datetime:
    """RFC 3339 (``2026-11-26T03:10:00Z``) as an aware datetime."""
    parsed = datetime.fromisoformat(text.replace('Z', '+00:00'))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def age(timestamp: str | None, now: datetime) -> str:
    """Time since ``timestamp``; ``<unknown>`` when there is none."""
    if not timestamp:
        return '<unknown>'
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    return human_duration((now - parse_time(timestamp)).total_seconds())
