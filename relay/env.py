"""Reading settings from environment variables.

Every helper rejects a malformed value at start-up with the variable's name,
so that a typo stops the process instead of silently using a default.
"""

import os

from django.core.exceptions import ImproperlyConfigured


def env_str(name, default=""):
    return os.environ.get(name, default)


def env_int(name, default, minimum=None):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}")
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_bool(name, default):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, got {raw!r}")


def env_secret(name, default=""):
    """A secret from NAME, or from the file named by NAME_FILE."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE: cannot read {path}: {exc}")
    return os.environ.get(name, default)


def parse_hostport(name, raw, default_port):
    """'host:port', '[v6]:port' or 'host' into (host, port)."""
    raw = raw.strip()
    if raw.startswith("["):
        host, _, rest = raw[1:].partition("]")
        port = rest.removeprefix(":")
    elif raw.count(":") == 1:
        host, port = raw.split(":")
    else:
        host, port = raw, ""
    if not host:
        raise ImproperlyConfigured(f"{name}: missing host in {raw!r}")
    if not port:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ImproperlyConfigured(f"{name}: bad port in {raw!r}")
    return host, int(port)


def env_hostport(name, default, default_port):
    return parse_hostport(name, os.environ.get(name) or default, default_port)


def env_transport_map(name):
    """'domain=host:port,domain2=host:port' into {domain: (host, port)}."""
    raw = os.environ.get(name, "").strip()
    routes = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        domain, sep, target = item.partition("=")
        if not sep or not domain.strip():
            raise ImproperlyConfigured(
                f"{name}: expected domain=host:port, got {item!r}"
            )
        routes[domain.strip().lower()] = parse_hostport(name, target, 25)
    return routes
