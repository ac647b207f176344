"""`OLLAMA_HOST` read exactly as Ollama reads it: a port of `Host()` in
ollama/ollama envconfig/config.go (with the `Var()` it calls), so
`OLLAMA_HOST=0.0.0.0`, `:11434`, `example.com`, `[::1]` and
`https://example.com/ollama` mean here what they mean to `ollama`.

No scheme means http on port 11434 ("ollama.com" alone means
https://ollama.com:443); an explicit http:// or https:// without a port means
80 or 443; an invalid port falls back to that default; a path is kept.
"""

from __future__ import annotations

import ipaddress

DEFAULT_PORT = "11434"


def _var(value: str) -> str:
    """envconfig.Var: spaces, then quotes, trimmed from both ends."""
    return value.strip().strip("\"'")


def _split_host_port(hostport: str) -> tuple[str, str]:
    """Go's net.SplitHostPort: "host:port" or "[v6]:port"; ValueError when
    there is no port, or an IPv6 address is not in brackets."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or not hostport[end + 1:].startswith(":"):
            raise ValueError(f"missing port in address {hostport!r}")
        host, port = hostport[1:end], hostport[end + 2:]
        if ":" in port:
            raise ValueError(f"too many colons in address {hostport!r}")
    else:
        host, colon, port = hostport.rpartition(":")
        if not colon:
            raise ValueError(f"missing port in address {hostport!r}")
        if ":" in host:
            raise ValueError(f"too many colons in address {hostport!r}")
    if "[" in host or "]" in host or "[" in port or "]" in port:
        raise ValueError(f"unexpected bracket in address {hostport!r}")
    return host, port


def _join_host_port(host: str, port: str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _valid_port(port: str) -> bool:
    """strconv.ParseInt(port, 10, 32) succeeds and 0 <= n <= 65535."""
    digits = port[1:] if port[:1] in "+-" else port
    return digits.isascii() and digits.isdigit() and 0 <= int(port) <= 65535


def ollama_host(value: str) -> str:
    """The URL `ollama` would use for this OLLAMA_HOST value."""
    s = _var(value).strip()
    default_port = DEFAULT_PORT
    scheme, sep, hostport = s.partition("://")
    if not sep:
        scheme, hostport = "http", s
        if s == "ollama.com":
            scheme, hostport = "https", "ollama.com:443"
    elif scheme == "http":
        default_port = "80"
    elif scheme == "https":
        default_port = "443"
    hostport, _, path = hostport.partition("/")
    try:
        host, port = _split_host_port(hostport)
    except ValueError:
        host, port = "127.0.0.1", default_port
        try:
            host = str(ipaddress.ip_address(hostport.strip("[]")))
        except ValueError:
            if hostport:
                host = hostport
    if not _valid_port(port):
        port = default_port
    return f"{scheme}://{_join_host_port(host, port)}" + (f"/{path}" if path else "")


def ollama_base_url(value: str) -> str:
    """`ollama_host`, made dialable as Go's dialer would: an empty host (the
    ":11434" form) is the local system."""
    url = ollama_host(value)
    scheme, _, rest = url.partition("://")
    return f"{scheme}://127.0.0.1{rest}" if rest.startswith(":") else url
