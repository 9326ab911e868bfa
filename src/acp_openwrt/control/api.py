"""The control API's answers, typed: one TypedDict (or list of them) per control command.

acpd's control socket (control/server.py) answers JSON lines; `acpctl`, the ubus object `acp`
and the LuCI page read those answers. This module is their schema in code, the same as
docs/control-api.md in words: `ANSWERS` maps every command acpd can register to the type of its
`result`, and `problems(value, type)` checks a decoded answer against such a type at run time
(the netns test asks a live acpd every command and checks every answer with it).

Conventions of every answer: times are seconds (`*_s`, floats rounded to 0.1 s unless named
otherwise), wall-clock instants are Unix seconds, addresses are strings in their usual text
form, and a key whose value is unknown or does not apply is present with `null` (ubus drops
nulls: blobmsg has none). Nested records that belong to one part's internals (GRASP counters,
the join proxy process's own view) are typed as open mappings; the keys named here are always
present.

A value the code holds as a plain `str` but that takes only some values is
`Annotated[str, Literal[...]]`: a str to mypy, checked against the Literal by `problems`.

No `from __future__ import annotations` here: on Python 3.11 it hides NotRequired from
TypedDict's __required_keys__, which `problems` reads.
"""

import types
import typing
from typing import Annotated, Any, Literal, NotRequired, Required, TypedDict, Union

# --- the envelope ------------------------------------------------------------------------------


class Request(TypedDict):
    """One request line. No command takes arguments: other keys are ignored."""
    cmd: str


class OkReply(TypedDict):
    ok: Literal[True]
    result: Any


class ErrorReply(TypedDict):
    ok: Literal[False]
    error: str


# --- identity (status.identity) ----------------------------------------------------------------

Scheme = Literal["zone", "manual", "vlong8", "vlong16"]


class IdentitySummary(TypedDict):
    acp_node_name: str
    acp_address: str | None
    prefix_length: int | None
    scheme: Scheme | None
    routing_subdomain: str
    acp_domain: str
    ula_prefix: str


# --- control server (status.control) -----------------------------------------------------------


class ControlCounters(TypedDict):
    timeouts: int
    busy: int
    malformed: int


class ControlStatus(TypedDict):
    clients: int
    max_clients: int
    idle_timeout_s: float
    counters: ControlCounters


# --- links: `interfaces`, `rescan`, status.links -----------------------------------------------


class InterfaceEntry(TypedDict):
    host_interface: str
    method: Annotated[str, Literal["veth", "macvlan"]]
    dull_interface: str
    link_local: str | None
    up_for_s: float


class LinksStatus(TypedDict):
    interfaces: list[InterfaceEntry]
    errors: dict[str, str]


class RescanAnswer(TypedDict):
    interfaces: int


# --- discovery: `neighbors`, status.discovery --------------------------------------------------


class NeighborEntry(TypedDict):
    peer: str
    interface: str
    methods: list[str]
    port: int
    ttl_s: float
    first_seen: float
    last_seen: float
    floods_heard: int
    confirmed: Literal["channel", "reheard", "answer"] | None


class AdjacencyTableStatus(TypedDict):
    entries: int
    confirmed: dict[str, int]   # "channel", "reheard", "answer": entries confirmed each way
    evicted: int
    ttl_capped: int
    reheard_refused: int
    limits: dict[str, Any]


class GraspStatus(TypedDict):
    mode: Literal["dull", "acp"]
    namespace: str
    address: str
    interfaces: dict[str, str]
    asas: list[str]
    flood_cache: int
    caches: dict[str, int]
    streams: int
    peer_sockets: int
    api: str | None
    counters: dict[str, Any]


class HeldStatus(TypedDict):
    now: int                       # unconfirmed newcomers held back from the bus now
    total: int                     # ... since start
    links_under_pressure: list[str]  # DULL links whose table evicted in the last 10 s


class DiscoveryStatus(TypedDict):
    flooding: bool
    floods_sent: int
    interval_s: float
    neighbors: list[NeighborEntry]
    own_floods_ignored: int
    unusable_floods: int
    announcing_proxy: list[Any]
    # DULL M_DISCOVERY for AN_Proxy: ours sent (as a pledge), and others' answered (as a proxy)
    proxy_solicitations: dict[str, int]
    table_full_drops: int
    drops: dict[str, int]
    held: HeldStatus
    liveness: NotRequired[dict[str, int]]   # the echo probe's counters (where it runs)
    table: AdjacencyTableStatus
    grasp: GraspStatus | None


# --- channels: `channels`, status.channels -----------------------------------------------------


class ChannelEntry(TypedDict):
    interface: str | None
    peer: str
    dull_interface: str
    peer_node_name: str | None
    state: Literal["idle", "connecting", "activating", "up"]
    role: Literal["unknown", "decider", "follower"]
    if_id: int
    ike_sas: int
    child_sas: int
    sa_age: int | None
    newest_sa_age: int | None
    bytes: int | None
    bytes_in: int | None
    bytes_out: int | None
    last_error: str | None
    failures: int
    initiating: bool
    queued: bool
    retry_in_s: float | None
    adopted: bool


class CharonStatus(TypedDict):
    pid: int | None
    adopted: bool
    restarts: int
    last_exit: str | None
    vici_socket: str
    log: str


class AttemptsStatus(TypedDict):
    in_flight: int
    waiting: int
    per_interface: int
    per_node: int
    started: int


class ParkedStatus(TypedDict):
    candidates: int
    dropped: int


class ChannelsStatus(TypedDict):
    running: bool
    charon: CharonStatus
    channels: list[ChannelEntry]
    attempts: AttemptsStatus
    parked: ParkedStatus
    acp_address: str | None


# --- RPL: `rpl`, status.rpl --------------------------------------------------------------------


class RplParent(TypedDict):
    address: str
    ifname: str
    preferred: bool
    rank: int | None


class RplChild(TypedDict):
    address: str
    ifname: str
    targets: list[str]


class RplRoute(TypedDict):
    prefix: str
    kind: Literal["unicast", "blackhole"]
    gateway: str | None
    ifname: str | None


RplRole = Literal["root", "floating-root", "member", "unattached", "inactive"]


class RplStatus(TypedDict):
    """Always: implementation, role, rank, dodag_id, parents, children, routes. The rest
    depends on `implementation` (and, for acpd's own, whether the node runs: `reason` if not)."""
    implementation: Literal["acpd", "unstrung"]
    role: RplRole
    running: bool
    rank: int | None
    dodag_id: str | None
    parents: list[RplParent]
    children: list[RplChild]
    routes: list[RplRoute]
    reason: NotRequired[str]                 # acpd, not running: why
    pid: NotRequired[int | None]             # unstrung: sunshine's process
    argv: NotRequired[list[str] | None]      # unstrung: its command line
    interfaces: NotRequired[list[str]]
    address: NotRequired[str]
    prefix: NotRequired[str]
    dag_rank: NotRequired[int | None]
    version: NotRequired[int | None]
    grounded: NotRequired[bool]
    mop: NotRequired[int | None]
    preference: NotRequired[int]
    neighbors: NotRequired[int]
    counters: NotRequired[dict[str, int]]
    installed: NotRequired[list[RplRoute]]
    namespace: NotRequired[str]
    protocol: NotRequired[int]
    targets: NotRequired[list[str]]
    own_preference: NotRequired[int]


# --- ACP connect: `connect`, status.connect ----------------------------------------------------


class RelayStatus(TypedDict):
    protocol: Literal["tcp", "udp"]
    listen: str
    target: str
    active: int
    max_connections: int
    idle_timeout: float
    counters: dict[str, int]


class RaCounters(TypedDict):
    ra_sent: int
    rs_received: int
    rs_dropped: int
    send_errors: int


class ConnectEntry(TypedDict):
    name: str
    device: str
    prefix: str | None
    subnet_id: int | None
    ipv4: str | None
    device_ipv4: str | None
    forward: list[str]
    enabled: bool
    router_advertisements: bool
    default_router: bool
    relay_max_connections: int
    relay_idle_timeout: int
    state: Annotated[str, Literal["pending", "missing", "up", "error", "disabled"]]
    error: str | None
    subnet: str | None
    source: str | None
    router: str | None
    relay: str | None
    dao_target: bool | None
    slaac: bool | None
    ra: RaCounters | None
    relays: list[RelayStatus]


class ConnectStatus(TypedDict):
    active: bool
    reason: str | None
    namespace: str
    connects: list[ConnectEntry]


# --- BRSKI pledge: `brski`, `enroll`, status.brski ---------------------------------------------

PledgeState = Annotated[str, Literal["no-idevid", "pledging", "enrolled", "renewing",
                                     "no-ldevid", "stopped"]]


class ProxyEntry(TypedDict):
    address: str
    port: int
    ifname: str | None
    failures: int
    next_try_in: float
    last_refusal: str | None


class EstServerEntry(TypedDict):
    address: str
    port: int
    heard_ago: float
    worked_ago: float | None
    failed_ago: float | None
    last_error: str | None


class PledgeStatus(TypedDict):
    state: PledgeState
    acp_node_name: str | None
    attempts: int
    last_refusal: str | None
    proxies: list[ProxyEntry]
    est_server: str | None
    est_servers: list[EstServerEntry]
    next_renewal: str | None
    renewal_failures: int
    ldevid: str
    ldevid_key: str


class EnrollAnswer(TypedDict):
    """Pledging: `proxies_tried_now`. Enrolled: `renewed` and `error`."""
    state: PledgeState
    proxies_tried_now: NotRequired[int]
    renewed: NotRequired[bool]
    error: NotRequired[str | None]


# --- BRSKI registrar: `registrar`, status.registrar --------------------------------------------


class OtherRegistrar(TypedDict):
    address: str
    port: int
    last_heard: float
    registrar_id: str | None


class RegistrarWorkerStatus(TypedDict):
    """The registrar worker (brski/registrar/worker.py): started on demand, gone when idle."""
    pid: int | None          # the one taking new connections now
    running: bool
    processes: int           # with one that is finishing its sessions before it leaves
    starts: int
    crashes: int             # exits other than idle (each logged with its last stderr line)
    connections: int         # handed over to workers (each a TLS session)
    last_exit: int | None
    last_error: str | None
    probes: int              # connections closed without data (join proxies' probes)
    crl_served: int          # GET /acp.crl answered by acpd


class RegistrarStatus(TypedDict):
    running: bool
    domain: str | None
    address: str | None
    port: int | None
    namespace: str
    problem: str | None
    default_masa_url: str | None
    masa_namespace: str | None
    flooding: bool
    floods_sent: int
    own_renewals: int
    last_flood_age: float | None
    enrolled: int | None
    recent_refusals: list[Any]
    ldevid: str | None
    ldevid_key: str | None
    other_registrars: list[OtherRegistrar]
    registrar_id_conflict: str | None
    acp_node_name: NotRequired[str | None]   # the rest: once the registrar runs
    registrar_id: NotRequired[str]
    domain_ca: NotRequired[str]
    allocations: NotRequired[int]
    counters: NotRequired[dict[str, int]]
    recent_status: NotRequired[list[Any]]
    crl_url: NotRequired[str | None]       # revocation (brski/registrar/revocation.py)
    crl_number: NotRequired[int | None]
    revoked: NotRequired[int]
    worker: NotRequired[RegistrarWorkerStatus]


class RevokedEntry(TypedDict):
    serial: str            # hex
    acp_node_name: str | None
    revoked: float         # Unix seconds
    reason: str


class RevokeAnswer(TypedDict):
    """`revoke` (target: an acp-node-name or a hex serial)."""
    target: str
    revoked: list[RevokedEntry]
    crl_number: int | None


class RevokedAnswer(TypedDict):
    crl_url: str | None
    crl_number: int | None
    revoked: list[RevokedEntry]
    revoked_names: list[str]


# --- revocation: status.revocation (the node's CRLs) -------------------------------------------


class CrlHeld(TypedDict):
    issuer: str
    crl_number: int
    this_update: float
    next_update: float | None
    stale: bool
    revoked: int
    url: str | None


class CrlSource(TypedDict):
    url: str
    in_flight: bool
    failures: int
    last_fetch: float | None
    last_attempt: float | None
    next_fetch_in_s: float | None
    last_error: str | None


class RevocationStatus(TypedDict):
    refresh_s: float
    revoked: int
    crls: list[CrlHeld]
    sources: list[CrlSource]
    fetches: int
    refused: int
    file: str | None
    problem: str | None
    last_change: float | None


# --- join proxy: `proxy`, status.join_proxy ----------------------------------------------------


class RegistrarLocator(TypedDict):
    address: str
    port: int


class HeardRegistrar(TypedDict):
    address: str
    port: int
    expires_in: float
    local: bool
    suspect_for: float | None


class ProxyListener(TypedDict):
    ifname: str
    address: str
    port: int
    serving: bool


class ProxyAnnouncement(TypedDict):
    ifname: str
    address: str
    port: int


class JoinProxyStatus(TypedDict):
    active: bool
    pid: int | None
    connected: bool
    restarts: int
    last_exit: int | None
    user: str
    registrar: RegistrarLocator | None
    registrars_heard: list[HeardRegistrar]
    listeners: list[ProxyListener]
    announcing: list[ProxyAnnouncement]


class ProxyAnswer(JoinProxyStatus):
    """`proxy`: the launcher's status plus the proxy process's own view (null when it is not
    up; then `connections` and `totals` are absent)."""
    proxy: dict[str, Any] | None
    connections: NotRequired[list[dict[str, Any]]]
    totals: NotRequired[dict[str, Any]]


# --- ACP GRASP part: status.grasp --------------------------------------------------------------


class AcpGraspStatus(TypedDict):
    """`{"running": false}` until the ACP GRASP runs; then also GraspStatus's keys."""
    running: bool
    mode: NotRequired[Literal["acp"]]
    namespace: NotRequired[str]
    address: NotRequired[str]
    interfaces: NotRequired[dict[str, str]]
    asas: NotRequired[list[str]]
    flood_cache: NotRequired[int]
    caches: NotRequired[dict[str, int]]
    streams: NotRequired[int]
    peer_sockets: NotRequired[int]
    api: NotRequired[str | None]
    counters: NotRequired[dict[str, Any]]
    est_servers_heard: NotRequired[int]
    floods_repeated: NotRequired[int]
    registrars_discovered: NotRequired[int]


# --- ubus bridge: status.ubus ------------------------------------------------------------------


class UbusCounters(TypedDict):
    registrations: int
    calls: int
    errors: int
    events_sent: int
    events_dropped: int
    calls_refused_busy: int
    malformed: int


class UbusStatus(UbusCounters):
    object: str
    connected: bool
    socket: str
    reason: str | None
    methods: list[str]
    pending_events: int


# --- the node: `status`, `reload` --------------------------------------------------------------


class Namespaces(TypedDict):
    dull: str
    acp: str


# --- the ACP map (acpmap) ------------------------------------------------------------------------

class AcpMapStatus(TypedDict):
    """status.acpmap: this node answers map requests (GRASP objective `objective`)."""
    answering: bool
    objective: str
    channels: int
    maps: int
    gathering: bool


class MapNode(TypedDict):
    address: str
    name: str | None
    roles: list[Annotated[str, Literal["registrar", "root"]]]
    state: Annotated[str, Literal["root", "attached", "detached", "no-rpl"]] | None
    rank: int | None
    parent: str | None
    channels: int | None
    hops: int
    reached: bool
    error: str | None
    origin: bool


class MapChannel(TypedDict):
    a: str
    b: str
    confirmed: bool


class MapParent(TypedDict):
    child: str
    parent: str


class MapLimits(TypedDict):
    max_nodes: int
    max_channels: int
    max_report_bytes: int
    ask_timeout_s: float
    deadline_s: float


class MapAnswer(TypedDict):
    """`map`: the whole ACP as gathered from this node (docs/acpmap.md)."""
    origin: str
    complete: bool
    duration_s: float
    nodes: list[MapNode]
    channels: list[MapChannel]
    parents: list[MapParent]
    counters: dict[str, int]
    limits: MapLimits


class NodeStatus(TypedDict):
    """`status`: the node, then one key per running part (its name) with that part's status."""
    version: str
    uptime_s: float
    identity: IdentitySummary | None
    enrolled: bool
    namespaces: Namespaces
    parts: list[str]
    failed_parts: dict[str, str]
    rebuilds: int
    control: ControlStatus
    links: NotRequired[LinksStatus]
    join_proxy: NotRequired[JoinProxyStatus]
    rpl: NotRequired[RplStatus]
    connect: NotRequired[ConnectStatus]
    grasp: NotRequired[AcpGraspStatus]
    acpmap: NotRequired[AcpMapStatus]
    channels: NotRequired[ChannelsStatus]
    discovery: NotRequired[DiscoveryStatus]
    brski: NotRequired[PledgeStatus]
    registrar: NotRequired[RegistrarStatus]
    revocation: NotRequired[RevocationStatus]
    ubus: NotRequired[UbusStatus]


class ReloadAnswer(TypedDict):
    reloaded: bool
    reason: NotRequired[str]   # only with reloaded false: why nothing was done


# --- every command -----------------------------------------------------------------------------

# command -> the type of its `result`; which part registers it is in docs/control-api.md.
ANSWERS: dict[str, Any] = {
    "help": list[str],
    "status": NodeStatus,
    "reload": ReloadAnswer,
    "interfaces": list[InterfaceEntry],
    "rescan": RescanAnswer,
    "neighbors": list[NeighborEntry],
    "channels": list[ChannelEntry],
    "rpl": RplStatus,
    "connect": ConnectStatus,
    "brski": PledgeStatus,
    "enroll": EnrollAnswer,
    "registrar": RegistrarStatus,
    "revoke": RevokeAnswer,
    "revoked": RevokedAnswer,
    "proxy": ProxyAnswer,
    "map": MapAnswer,
}

# the part (status key) whose status a command's answer repeats, where it is one
STATUS_KEYS: dict[str, tuple[str, str | None]] = {
    "interfaces": ("links", "interfaces"),
    "neighbors": ("discovery", "neighbors"),
    "channels": ("channels", "channels"),
    "rpl": ("rpl", None),
    "connect": ("connect", None),
    "brski": ("brski", None),
    "registrar": ("registrar", None),
}


# --- the run-time check ------------------------------------------------------------------------

def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__required_keys__")


def problems(value: Any, tp: Any, where: str = "result") -> list[str]:
    """What in `value` (a decoded JSON answer) does not match `tp`; [] if it matches.

    TypedDicts are closed: a required key missing and a key not declared are both problems
    (an undocumented key is drift between code and docs). bool is not an int here, an int is
    a float (JSON has one number type), Any matches anything.
    """
    if tp is Any or tp is object:
        return []
    if tp is None or tp is type(None):
        return [] if value is None else [f"{where}: {value!r} is not null"]
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *metadata = typing.get_args(tp)
        wrong = problems(value, base, where)
        for meta in metadata:
            if not wrong and typing.get_origin(meta) is Literal:
                wrong = problems(value, meta, where)
        return wrong
    if origin is Literal:
        allowed = typing.get_args(tp)
        if any(value == a and type(value) is type(a) for a in allowed):
            return []
        return [f"{where}: {value!r} is not one of {', '.join(map(repr, allowed))}"]
    if origin is Union or origin is types.UnionType:
        found: list[str] = []
        for option in typing.get_args(tp):
            found = problems(value, option, where)
            if not found:
                return []
        return found if len(typing.get_args(tp)) == 1 \
            else [f"{where}: {value!r} matches none of {_name(tp)}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: {type(value).__name__} is not a list"]
        (item,) = typing.get_args(tp) or (Any,)
        return [p for i, v in enumerate(value) for p in problems(v, item, f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__} is not an object"]
        key_tp, value_tp = typing.get_args(tp) or (Any, Any)
        out = []
        for k, v in value.items():
            out += problems(k, key_tp, f"{where} key")
            out += problems(v, value_tp, f"{where}[{k!r}]")
        return out
    if _is_typeddict(tp):
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__} is not an object ({tp.__name__})"]
        hints = {k: _unwrap(h) for k, h in
                 typing.get_type_hints(tp, include_extras=True).items()}
        out = [f"{where}: key {k!r} missing ({tp.__name__})"
               for k in sorted(tp.__required_keys__) if k not in value]
        out += [f"{where}: key {k!r} not in {tp.__name__}" for k in sorted(value)
                if k not in hints]
        for k, v in value.items():
            if k in hints:
                out += problems(v, hints[k], f"{where}.{k}")
        return out
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(tp, type):
        ok = isinstance(value, tp)
    else:
        raise TypeError(f"problems(): cannot check against {tp!r}")
    return [] if ok else [f"{where}: {value!r} is not {_name(tp)}"]


def _unwrap(tp: Any) -> Any:
    """A TypedDict item's type without Required/NotRequired (include_extras keeps them)."""
    while typing.get_origin(tp) in (Required, NotRequired):
        tp = typing.get_args(tp)[0]
    return tp


def _name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")

