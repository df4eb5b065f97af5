"""node.toml and the roster file: parsing and validation. Every error names the file and the key."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from node.compute import SCHEDULER_ADDRESS
from node.crypto.errors import InputError
from node.identity import decode_public_key, fingerprint


class ConfigError(InputError):
    """A config or roster file is missing, malformed, or has a wrong value."""


NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,62}")

NODE_TOML = """\
# guardian-node: the configuration of one guardian's node.
# Relative paths are relative to the directory holding this file.

[node]
# The guardian's name, as it appears in the roster.
name = {name!r}
# The node's data directory: identity, database, audit log, exports. Nothing of the node lives outside it.
data_dir = "."
# Host and port this node listens on for its peers.
listen = {listen!r}
# The address peers dial to reach this node (ws://host:port, or wss:// with TLS below).
advertise = {advertise!r}

[roster]
# The file listing every guardian of the election: sequence number, name, public key, address.
file = "roster.toml"

[network]
# Frames larger than this many bytes are refused and counted.
max_frame_bytes = 1048576
# Seconds between heartbeats; a peer silent for three heartbeats is dropped and dialled again.
heartbeat_seconds = 5.0
# Re-dial backoff: starts here, doubles on each failure up to the maximum, with random jitter.
# A peer that starts calls this node, which then dials it at once, whatever its backoff.
redial_initial_seconds = 0.5
redial_max_seconds = 30.0
# What this node stores of each peer's messages (the rest is refused as "quota", and counted): bytes and
# messages at once, and each second after; sessions not opened here yet whose messages are kept; and
# ceremony proposals and decryption requests of one peer pending (or invalid) at a time.
peer_burst_bytes = 16777216
peer_bytes_per_second = 262144
peer_burst_messages = 1000
peer_messages_per_second = 20.0
peer_open_sessions = 8
peer_pending = 8

[tls]
# Optional TLS (wss://) around the already encrypted link, for operators who want it.
# PEM files: this node's certificate and key, and the CA that signed the peers' certificates.
cert = ""
key = ""
ca = ""

[control]
# The local control channel used by `guardian status`: a Unix socket, owner-only, in the data directory.
socket = "control.sock"

[passphrase]
# Where `guardian run` reads the passphrase that unseals the identity:
# "prompt", "env:VARIABLE" or "file:PATH". Never on the command line.
source = "prompt"

[decryption]
# Seconds each step of a decryption session may take before the guardians that did not
# answer are named missing (and, with at least k left, the decryption goes on without them).
timeout_seconds = 30.0
# Processes that verify the record before this node decrypts anything (0: every core).
verify_workers = 0
# Seconds a decryption request's record may take to arrive; past it, the session fails.
fetch_timeout_seconds = 600.0
# Whether this node takes part in a rehearsal decryption (`guardian decrypt --rehearsal`), one whose
# ceremony has no certificate of every guardian's key custody. Never true for a real election.
allow_rehearsal = false
# Where this node may read the published record a decryption names, before asking its peers: directories
# it can see and http(s) URLs (a file at URL/<its path in the record>), tried in this order, as are those
# a request names (`guardian decrypt --source`). Every file is checked against the request's index; a
# location that fails or serves a wrong file is logged, and the file comes from the peers instead.
# Relative paths are relative to this file. For example: ["https://example.org/election/record"]
record_sources = []

[page]
# The guardian's own page: `guardian page` prints a one-time login link to it.
enabled = true
# Loopback only, unless cert and key (PEM) are set for HTTPS. Port 0: any free port.
listen = "127.0.0.1:0"
cert = ""
key = ""

[metrics]
# Prometheus metrics at http://HOST:PORT/metrics for the operator; empty: off.
listen = ""

[compute]
# The guardian's own Dask scheduler (e.g. "tcp://10.0.0.5:8786"), whose workers check the record's
# ballots for this node (`guardian record follow`, and before a decryption). The workers must see
# this node's data directory at the same path. Empty: every core of this machine.
scheduler = ""
"""


@dataclass(frozen=True)
class RosterEntry:
    sequence: int
    name: str
    public_key: bytes
    address: str

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)


@dataclass(frozen=True)
class Roster:
    entries: tuple[RosterEntry, ...]

    def by_key(self, public_key: bytes) -> RosterEntry | None:
        for e in self.entries:
            if e.public_key == public_key:
                return e
        return None

    def by_name(self, name: str) -> RosterEntry | None:
        for e in self.entries:
            if e.name == name:
                return e
        return None

    def __len__(self) -> int:
        return len(self.entries)


@dataclass(frozen=True)
class NodeConfig:
    path: Path
    name: str
    data_dir: Path
    listen_host: str
    listen_port: int
    advertise: str
    roster_file: Path
    max_frame_bytes: int
    heartbeat_seconds: float
    redial_initial_seconds: float
    redial_max_seconds: float
    tls_cert: Path | None
    tls_key: Path | None
    tls_ca: Path | None
    control_socket: Path
    passphrase_source: str
    decryption_timeout_seconds: float = 30.0
    verify_workers: int = 0                  # 0: every core
    allow_rehearsal: bool = False            # take part in decryptions whose custody is not certified
    page_enabled: bool = True
    page_host: str = "127.0.0.1"
    page_port: int = 0                       # 0: any free port (`guardian page` says which)
    page_cert: Path | None = None            # HTTPS for the page; required off loopback
    page_key: Path | None = None
    metrics_host: str | None = None          # None: no metrics endpoint
    metrics_port: int = 0
    peer_burst_bytes: int = 16 * 2**20
    peer_bytes_per_second: float = 262144.0
    peer_burst_messages: int = 1000
    peer_messages_per_second: float = 20.0
    peer_open_sessions: int = 8
    peer_pending: int = 8
    fetch_timeout_seconds: float = 600.0
    record_sources: tuple[str, ...] = ()     # http(s) URLs and absolute paths of the published record
    compute_scheduler: str | None = None     # a Dask scheduler's address; None: this machine's cores


def _load_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def _get(table: dict, key: str, kind, where: str, default=None):
    value = table.get(key, default)
    if value is None:
        raise ConfigError(f"{where}: missing key {key!r}")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"{where}: {key!r} must be a {kind.__name__}")
    return value


def parse_listen(text: str, where: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{where}: listen address must be HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def check_address(text: str, where: str) -> str:
    try:
        url = urlparse(text)
        port = url.port
    except ValueError:   # urlparse raises on a bad port or bracket
        port = None
        url = None
    if url is None or url.scheme not in ("ws", "wss") or not url.hostname or port is None:
        raise ConfigError(f"{where}: address must be ws://HOST:PORT or wss://HOST:PORT, got {text!r}")
    return text


def default_advertise(host: str, port: int) -> str:
    return f"ws://[{host}]:{port}" if ":" in host else f"ws://{host}:{port}"


_SECTIONS = {
    "node": {"name", "data_dir", "listen", "advertise"},
    "roster": {"file"},
    "network": {"max_frame_bytes", "heartbeat_seconds", "redial_initial_seconds", "redial_max_seconds",
                "peer_burst_bytes", "peer_bytes_per_second", "peer_burst_messages", "peer_messages_per_second",
                "peer_open_sessions", "peer_pending"},
    "tls": {"cert", "key", "ca"},
    "control": {"socket"},
    "passphrase": {"source"},
    "decryption": {"timeout_seconds", "verify_workers", "allow_rehearsal", "fetch_timeout_seconds",
                   "record_sources"},
    "page": {"enabled", "listen", "cert", "key"},
    "metrics": {"listen"},
    "compute": {"scheduler"},
}

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _sections(doc: dict, path: Path) -> dict[str, dict]:
    """Every top-level key must be a known table holding known keys: a misspelt key is an error, not a no-op."""
    unknown = set(doc) - set(_SECTIONS)
    if unknown:
        raise ConfigError(f"{path}: unknown sections {sorted(unknown)}")
    tables = {}
    for name, keys in _SECTIONS.items():
        table = doc.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {name!r} must be a [{name}] table")
        extra = set(table) - keys
        if extra:
            raise ConfigError(f"{path} [{name}]: unknown keys {sorted(extra)}")
        tables[name] = table
    return tables


def check_name(name: object, where: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or name != name.strip():
        raise ConfigError(f"{where}: a name is 1-63 letters, digits, spaces, dots, dashes or underscores, "
                          f"got {name!r}")
    return name


def load_node_config(path: Path) -> NodeConfig:
    path = Path(path).resolve()
    doc = _sections(_load_toml(path), path)
    base = path.parent
    node = doc["node"]
    where = f"{path} [node]"
    name = check_name(_get(node, "name", str, where), where)
    data_dir = (base / _get(node, "data_dir", str, where, ".")).resolve()
    host, port = parse_listen(_get(node, "listen", str, where), where)
    advertise = check_address(_get(node, "advertise", str, where, default_advertise(host, port)), where)
    roster_file = (base / _get(doc["roster"], "file", str, f"{path} [roster]", "roster.toml")).resolve()
    net = doc["network"]
    where = f"{path} [network]"
    max_frame = _get(net, "max_frame_bytes", int, where, 1048576)
    heartbeat = _get(net, "heartbeat_seconds", float, where, 5.0)
    initial = _get(net, "redial_initial_seconds", float, where, 0.5)
    maximum = _get(net, "redial_max_seconds", float, where, 30.0)
    if not 1024 <= max_frame <= 64 * 2**20:
        raise ConfigError(f"{where}: max_frame_bytes must be between 1 KiB and 64 MiB")
    if not 0.05 <= heartbeat <= 3600 or not 0.01 <= initial <= maximum <= 3600:
        raise ConfigError(f"{where}: heartbeat and re-dial times must be positive, initial <= max")
    burst_bytes = _get(net, "peer_burst_bytes", int, where, 16 * 2**20)
    bytes_rate = _get(net, "peer_bytes_per_second", float, where, 262144.0)
    burst_messages = _get(net, "peer_burst_messages", int, where, 1000)
    messages_rate = _get(net, "peer_messages_per_second", float, where, 20.0)
    open_sessions = _get(net, "peer_open_sessions", int, where, 8)
    pending = _get(net, "peer_pending", int, where, 8)
    if not max_frame <= burst_bytes <= 2**40:
        raise ConfigError(f"{where}: peer_burst_bytes must be at least max_frame_bytes ({max_frame}): "
                          f"a frame that size could never be stored")
    if not 0 < bytes_rate <= 2**40 or not 0 < messages_rate <= 1e6:
        raise ConfigError(f"{where}: peer_bytes_per_second and peer_messages_per_second must be positive")
    if not 1 <= burst_messages <= 10**7 or not 1 <= open_sessions <= 4096 or not 1 <= pending <= 4096:
        raise ConfigError(f"{where}: peer_burst_messages must be 1..10000000, peer_open_sessions and "
                          f"peer_pending 1..4096")
    tls = doc["tls"]
    tls_paths = []
    for key in ("cert", "key", "ca"):
        value = _get(tls, key, str, f"{path} [tls]", "")
        tls_paths.append((base / value).resolve() if value else None)
    if (tls_paths[0] is None) != (tls_paths[1] is None):
        raise ConfigError(f"{path} [tls]: cert and key go together")
    control = doc["control"]
    socket = data_dir / _get(control, "socket", str, f"{path} [control]", "control.sock")
    source = _get(doc["passphrase"], "source", str, f"{path} [passphrase]", "prompt")
    if not (source == "prompt" or source.startswith("env:") or source.startswith("file:")):
        raise ConfigError(f"{path} [passphrase]: source must be prompt, env:VARIABLE or file:PATH")
    if source.startswith("file:"):
        source = "file:" + str((base / source[5:]).resolve())
    dec = doc["decryption"]
    where = f"{path} [decryption]"
    timeout = _get(dec, "timeout_seconds", float, where, 30.0)
    workers = _get(dec, "verify_workers", int, where, 0)
    if not 1 <= timeout <= 86400 or not 0 <= workers <= 1024:
        raise ConfigError(f"{where}: timeout_seconds must be 1..86400 and verify_workers 0..1024")
    rehearsal = _get(dec, "allow_rehearsal", bool, where, False)
    fetch_timeout = _get(dec, "fetch_timeout_seconds", float, where, 600.0)
    if not 1 <= fetch_timeout <= 7 * 86400:
        raise ConfigError(f"{where}: fetch_timeout_seconds must be 1..604800")
    sources = _get(dec, "record_sources", list, where, [])
    sources = check_record_sources([s if not isinstance(s, str) or "://" in s or not s else str((base / s).resolve())
                                    for s in sources], f"{where} record_sources", ConfigError)
    page = doc["page"]
    where = f"{path} [page]"
    page_enabled = _get(page, "enabled", bool, where, True)
    page_host, page_port = parse_listen(_get(page, "listen", str, where, "127.0.0.1:0"), where)
    page_tls = [(base / v).resolve() if v else None
                for v in (_get(page, "cert", str, where, ""), _get(page, "key", str, where, ""))]
    if (page_tls[0] is None) != (page_tls[1] is None):
        raise ConfigError(f"{where}: cert and key go together")
    if page_host not in LOOPBACK and page_tls[0] is None:
        # The page can accept a ceremony and export a key backup: never in clear text off this machine.
        raise ConfigError(f"{where}: listen {page_host!r} is not loopback; set cert and key to serve the page "
                          f"over HTTPS, or listen on 127.0.0.1")
    metrics_listen = _get(doc["metrics"], "listen", str, f"{path} [metrics]", "")
    metrics_host, metrics_port = (parse_listen(metrics_listen, f"{path} [metrics]") if metrics_listen
                                  else (None, 0))
    return NodeConfig(path, name, data_dir, host, port, advertise, roster_file, max_frame, heartbeat, initial,
                      maximum, tls_paths[0], tls_paths[1], tls_paths[2], socket, source, timeout, workers,
                      rehearsal, page_enabled, page_host, page_port, page_tls[0], page_tls[1], metrics_host,
                      metrics_port, burst_bytes, bytes_rate, burst_messages, messages_rate, open_sessions, pending,
                      fetch_timeout, tuple(sources),
                      compute_scheduler=_scheduler(doc["compute"], f"{path} [compute]"))


def _scheduler(compute: dict, where: str) -> str | None:
    address = _get(compute, "scheduler", str, where, "").strip()
    if address and not SCHEDULER_ADDRESS.fullmatch(address):
        raise ConfigError(f"{where}: scheduler {address[:100]!r} is not a Dask scheduler address like "
                          f"tcp://HOST:8786")
    return address or None


MAX_RECORD_SOURCES = 8


def check_record_sources(value: object, what: str, error: type[InputError] = InputError) -> list[str]:
    """Locations of a published record: http(s) URLs (no query) and absolute paths; `error` names `what`."""
    if not isinstance(value, list) or len(value) > MAX_RECORD_SOURCES:
        raise error(f"{what}: at most {MAX_RECORD_SOURCES} record locations, as a list")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not 1 <= len(item) <= 2048 or any(ord(c) < 32 or c == "\x7f" for c in item):
            raise error(f"{what}: a record location is a URL or a path of 1 to 2048 printable characters")
        if "://" in item:
            try:
                url = urlparse(item)
                valid = url.scheme in ("http", "https") and url.hostname and not url.query and not url.fragment
                url.port            # raises on a bad port
            except ValueError:
                valid = False
            if not valid:
                raise error(f"{what}: {item[:100]!r} is not an http(s) URL of a record directory")
            item = item.rstrip("/")
        elif not item.startswith("/"):
            raise error(f"{what}: {item[:100]!r} is neither an http(s) URL nor an absolute path")
        if item not in out:
            out.append(item)
    return out


def load_roster(path: Path) -> Roster:
    doc = _load_toml(Path(path))
    entries = doc.get("guardian")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: no [[guardian]] entries")
    result = []
    for i, entry in enumerate(entries, 1):
        where = f"{path} guardian entry {i}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: must be a table")
        unknown = set(entry) - {"sequence", "name", "public_key", "address", "fingerprint"}
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
        sequence = _get(entry, "sequence", int, where)
        name = check_name(_get(entry, "name", str, where), where)
        try:
            key = decode_public_key(_get(entry, "public_key", str, where), f"{where} public_key")
        except InputError as e:
            raise ConfigError(str(e)) from None
        address = check_address(_get(entry, "address", str, where), where)
        if "fingerprint" in entry and entry["fingerprint"] != fingerprint(key):
            raise ConfigError(f"{where} ({name}): the fingerprint does not match the public key")
        result.append(RosterEntry(sequence, name, key, address))
    unset = [e.name for e in result if e.sequence == 0]
    if unset:
        raise ConfigError(f"{path}: set the sequence number of {', '.join(unset)}: the guardians are numbered "
                          f"1..{len(result)} (`guardian roster entry --sequence N`)")
    sequences = sorted(e.sequence for e in result)
    if sequences != list(range(1, len(result) + 1)):
        raise ConfigError(f"{path}: sequence numbers must be exactly 1..{len(result)}, got {sequences}")
    for attr in ("name", "public_key", "address"):
        values = [getattr(e, attr) for e in result]
        if len(set(values)) != len(values):
            raise ConfigError(f"{path}: two guardians share the same {attr.replace('_', ' ')}")
    return Roster(tuple(sorted(result, key=lambda e: e.sequence)))


def roster_entry_toml(sequence: int | None, name: str, public_key: str, address: str, fp: str) -> str:
    """One [[guardian]] table of a roster file; without a sequence, a 0 for the guardians to fill in."""
    seq = (f"sequence = {sequence}\n" if sequence is not None
           else "sequence = 0   # to set: 1..n, agreed by the guardians\n")
    return (f"[[guardian]]\n{seq}name = {_toml_string(name)}\npublic_key = {_toml_string(public_key)}\n"
            f"address = {_toml_string(address)}\nfingerprint = {_toml_string(fp)}\n")


def _toml_string(text: str) -> str:
    return json.dumps(text)       # a JSON string (ASCII, escaped) is a TOML basic string
