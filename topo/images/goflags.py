"""Command lines as Go's ``flag`` package parses them, for the emulated images.

A real image's binary is a Go program: ``-flag`` and ``--flag`` are the same,
``--flag=value`` and ``--flag value`` both work, booleans take a value only after
``=``, integers follow ``strconv.ParseInt(s, 0, 64)`` (``0x..``, ``0o..``, a leading 0
is octal), and a bad command line exits 2 with Go's own message. Durations follow
``time.ParseDuration``.
"""

import re


class UsageError(Exception):
    """A bad command line: the message is printed and the exit code is 2."""


def parse_go_bool(text):
    """Go's strconv.ParseBool."""
    if text in ('1', 't', 'T', 'TRUE', 'true', 'True'):
        return True
    if text in ('0', 'f', 'F', 'FALSE', 'false', 'False'):
        return False
    raise ValueError(text)


def parse_go_int(text):
    """Go's strconv.ParseInt(text, 0, 64): decimal, 0x.., 0o.., 0b.., 0.."""
    try:
        return int(text, 0)
    except ValueError:
        if re.fullmatch(r'[+-]?0[0-7_]+', text):
            return int(text, 8)
        raise


def parse_flags(args, defaults):
    """Parse ``args`` against ``{name: default}``; the default's type rules.

    Returns the flag values; positional arguments are an error, since no
    emulated subcommand takes any.
    """
    values = dict(defaults)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == '--':
            i += 1
            break
        if len(arg) < 2 or arg[0] != '-':
            break
        body = arg[2:] if arg.startswith('--') else arg[1:]
        if not body or body[0] in '-=':
            raise UsageError(f'bad flag syntax: {arg}')
        name, has_value, value = body.partition('=')
        if name in ('h', 'help'):
            raise UsageError('')
        if name not in defaults:
            raise UsageError(f'flag provided but not defined: -{name}')
        if isinstance(defaults[name], bool):
            try:
                values[name] = parse_go_bool(value) if has_value else True
            except ValueError:
                raise UsageError(f'invalid boolean value "{value}" for '
                                 f'-{name}: parse error') from None
        else:
            if not has_value:
                i += 1
                if i == len(args):
                    raise UsageError(f'flag needs an argument: -{name}')
                value = args[i]
            try:
                values[name] = parse_go_int(value)
            except ValueError:
                raise UsageError(f'invalid value "{value}" for flag -{name}:'
                                 f' parse error') from None
        i += 1
    if args[i:]:
        raise UsageError(f'accepts 0 arg(s), received {len(args) - i}: '
                         f'{" ".join(args[i:])}')
    return values


def go_duration(text):
    """Seconds in a Go duration string such as ``1.5s``, ``300ms``, ``2m``."""
    units = {'ns': 1e-9, 'us': 1e-6, 'µs': 1e-6, 'μs': 1e-6, 'ms': 1e-3,
             's': 1.0, 'm': 60.0, 'h': 3600.0}
    sign, body = (-1, text[1:]) if text[:1] == '-' else (1, text.lstrip('+'))
    if body == '0':
        return 0.0
    parts = re.findall(r'(\d*\.?\d*)(ns|us|µs|μs|ms|s|m|h)', body)
    if not parts or ''.join(n + u for n, u in parts) != body \
            or any(n in ('', '.') for n, _ in parts):
        raise ValueError(text)
    return sign * sum(float(n) * units[u] for n, u in parts)
