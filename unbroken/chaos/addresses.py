"""``host:port`` addresses: parsing and formatting (IPv6 in brackets)."""

from __future__ import annotations

from ..errors import ConfigError

Address = tuple[str, int]


def parse_address(text: str, default_host: str = "127.0.0.1") -> Address:
    """``"host:port"``, ``":port"`` or ``"[v6]:port"`` -> ``(host, port)``."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
    else:
        host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(f"address {text!r} is not HOST:PORT (e.g. 127.0.0.1:8080)")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(f"port {port} of {text!r} is out of range 0-65535")
    return (host or default_host, port)


def format_address(address: Address) -> str:
    """``(host, port)`` -> ``"host:port"`` (IPv6 hosts in brackets)."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def to_address(value: Address | str) -> Address:
    """``(host, port)`` or ``"host:port"`` -> ``(host, port)``."""
    if isinstance(value, str):
        return parse_address(value)
    return (value[0], int(value[1]))
