"""Raw topic records in, checked values out: decoding and range checks. No I/O.

Whatever cannot be used becomes a Rejected with a reason, which the engine routes to
the dead-letter topic (with the original bytes) and counts; it never raises. The
reasons are a closed set, used as the DLQ header and the metrics label:

- ``undecodable``: not a single-object Avro message, a truncated body, a tombstone;
- ``unknown_fingerprint``: a writer schema this processor does not know;
- ``incompatible_schema``: a known writer schema that does not resolve to the reader's;
- ``unexpected_schema``: a valid record of a type that does not belong on the raw topic;
- ``out_of_range``: a field outside what the contract allows (observation_count < 1,
  pid or tid < 0, no event time, a malformed binary digest, stack_frames not parallel to
  stack_trace, a watermark <= 0);
- ``over_limit``: a record larger than any agent writes (Limits below): a string, a stack,
  an observation count. Rejected, never truncated or saturated: a cut name or count would
  be a falsified fact, and the whole record stays in the DLQ for whoever investigates;
- ``clock_skew``: a call dated further after its record's broker timestamp than
  max_event_ahead_ms allows (processor/engine.py; docs/processor.md, "What the clock trusts");
- ``too_many_agents``: a watermark from a new agent id when a partition already tracks
  Limits.max_agents of them (the checkpoint holds one entry per agent, and must fit a record);
- ``killed_worker``: a record that was being processed when a worker died (processor/inflight.py):
  on restart it goes here instead of being processed again, so it cannot kill every worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from runtime_signals.processor.symbolize import Frame
from runtime_signals.schemas import codec, hashing
from runtime_signals.schemas.errors import (
    CorruptMessageError,
    HashInputError,
    IncompatibleSchemaError,
    SchemaError,
    UnknownFingerprintError,
)

CALL_EVENT = "io.runtimesignals.RuntimeCallEvent"
WATERMARK = "io.runtimesignals.AgentWatermark"
REASONS = ("undecodable", "unknown_fingerprint", "incompatible_schema", "unexpected_schema", "out_of_range",
           "over_limit", "clock_skew", "too_many_agents", "killed_worker", "unauthenticated", "impersonation")
# observation_count is a long on the wire, and sums of it are longs in every output: one count
# near 2^63 would overflow the first sum it joins (and fail to encode). An agent folds the calls
# of one probe and one stack over one flush interval into a record; 2^32 of them is far beyond
# any probe's rate (the BPF side caps it in the millions per second).
MAX_OBSERVATION_COUNT = 2**32


@dataclass(frozen=True)
class Limits:
    """The largest record the processor takes. Everything a record carries ends up in
    windows, outputs and checkpoints, so bounding it here bounds all of them: a path record
    holds at most max_frames frames, each with strings of at most max_string_bytes."""

    # Identifiers: they key windows, summaries and checkpoint entries (one per agent).
    max_id_bytes: int = 256
    # Symbol, signature, PURL, library path, host: generous for C++ template names.
    max_string_bytes: int = 4096
    # The agent's BPF program unwinds at most 127 frames (agent/probes.py); twice that.
    max_frames: int = 256
    max_observation_count: int = MAX_OBSERVATION_COUNT
    # Agents tracked per partition (AgentMark entries): one agent per node, so tens of
    # thousands in a large fleet. A checkpoint holds each, with its id (at most ~280 bytes
    # encoded), so it stays under the checkpoint topic's 16 MiB records (kafka_io.py).
    max_agents: int = 50_000
    # Event ids a window remembers to count a record sent twice once (processor/aggregate.py):
    # ~60 bytes each. A window is one container's records of one window length, which the
    # agents' dedup folds to one per distinct stack and flush interval.
    max_event_ids_per_window: int = 16_384


DEFAULT_LIMITS = Limits()
_ID_FIELDS = ("container_id", "agent_id")
_STRING_FIELDS = ("event_id", "symbol", "function_signature", "purl", "library", "host", "binary_digest",
                  "node_hash", "callstack_hash")


class _OverLimit(Exception):
    def __init__(self, rejected: Rejected) -> None:
        super().__init__(rejected.error)
        self.rejected = rejected


def _check_frame_strings(library: str | None, binary_digest: str | None, max_string_bytes: int) -> None:
    too_long = _too_long({"library": library, "binary_digest": binary_digest}, ("library", "binary_digest"),
                         max_string_bytes)
    if too_long:
        raise _OverLimit(too_long)


# Frames and their identities are pure functions of the fields, and a workload's calls repeat
# a few thousand distinct frames: each is built, normalised and checked once (a frozen Frame
# is safe to share). A malformed digest raises HashInputError, a library or digest over
# max_string_bytes _OverLimit; errors are not cached: every record that carries one is rejected.

@lru_cache(maxsize=65_536)
def _located_frame(binary_digest: str | None, binary_offset: int | None, library: str | None, purl: str | None,
                   max_string_bytes: int) -> tuple[Frame, str] | None:
    """A frame located in a digested file, and its identity; None for a frame that is not.
    Neither depends on where the process loaded the file, which every process of a fleet does
    elsewhere (ASLR): the frame's address is left out (0), so one entry serves them all."""
    if binary_digest is None or binary_offset is None:
        return None
    identity = hashing.frame_identity(binary_digest, binary_offset, 0)
    if identity.startswith(hashing.UNKNOWN_BINARY):
        return None
    _check_frame_strings(library, binary_digest, max_string_bytes)
    return Frame(0, binary_digest, binary_offset, library, purl), identity


@lru_cache(maxsize=65_536)
def _unlocated_frame(address: int, binary_digest: str | None, binary_offset: int | None, library: str | None,
                     purl: str | None, max_string_bytes: int) -> tuple[Frame, str]:
    """A frame in no digested file (anonymous or JIT memory, a file not read): its address
    is its identity."""
    _check_frame_strings(library, binary_digest, max_string_bytes)
    return (Frame(address, binary_digest, binary_offset, library, purl),
            hashing.frame_identity(binary_digest, binary_offset, address))


def _frame(address: int, binary_digest: str | None, binary_offset: int | None, library: str | None,
           purl: str | None, max_string_bytes: int) -> tuple[Frame, str]:
    return (_located_frame(binary_digest, binary_offset, library, purl, max_string_bytes)
            or _unlocated_frame(address, binary_digest, binary_offset, library, purl, max_string_bytes))


@dataclass(slots=True)
class CallRecord:
    """The parts of a RuntimeCallEvent the processor uses, checked. Not changed once made
    (not frozen only because a frozen dataclass's __init__ costs a microsecond more per
    record)."""

    container_id: str
    observed_at_us: int       # event time: observed_at_us, or received_at_us for old writers
    observation_count: int
    frames: tuple[Frame, ...]  # bottom (entry point) to top (probed function), never empty
    identities: tuple[str, ...]  # frame identities (schemas/HASHING.md), parallel to frames
    top_symbol: str | None
    top_signature: str | None
    top_purl: str | None
    runtime_type: str
    executable: Executable | None = None  # the calling process's, when the agent said
    # Event time of the last call a folded record stands for (observed_at_us for one call).
    last_observed_at_us: int = 0
    agent_id: str = ""  # who says it made the call: checked against a signed record's principal
    # The agent's id for this record: a record sent twice (an agent's spool resends what it
    # cannot know was delivered when it is killed) keeps it, and is counted once.
    event_id: str = ""


@dataclass(frozen=True, slots=True, order=True)
class Executable:
    """The executable of the calling process (ObservedCallPath.ProcessExecutable)."""

    path: str | None
    binary_digest: str | None
    purl: str | None
    comm: str

    def record(self) -> dict[str, Any]:
        return {"path": self.path, "binary_digest": self.binary_digest, "purl": self.purl, "comm": self.comm}

    def sort_key(self) -> tuple[str, str, str, str]:
        return (self.path or "", self.binary_digest or "", self.purl or "", self.comm)


@dataclass(frozen=True, slots=True)
class WatermarkRecord:
    agent_id: str
    watermark_us: int
    sequence: int


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str   # one of REASONS
    error: str    # what is wrong, for the DLQ header and the log


Intake = CallRecord | WatermarkRecord | Rejected


def read_raw(value: bytes | None, registry: codec.SchemaRegistry, limits: Limits = DEFAULT_LIMITS) -> Intake:
    """Decode and check one raw-topic value."""
    try:
        decoded = codec.decode(value, registry)  # type: ignore[arg-type]  # None is a tombstone
    except UnknownFingerprintError as exc:
        return Rejected("unknown_fingerprint", str(exc))
    except IncompatibleSchemaError as exc:
        return Rejected("incompatible_schema", str(exc))
    except CorruptMessageError as exc:
        return Rejected("undecodable", str(exc))
    except SchemaError as exc:
        return Rejected("undecodable", str(exc))
    if decoded.schema_name == WATERMARK:
        return _watermark(decoded.record, limits)
    if decoded.schema_name == CALL_EVENT:
        return _call(decoded.record, limits)
    return Rejected("unexpected_schema", f"a {decoded.schema_name} record does not belong on the raw topic")


def _too_long(record: dict[str, Any], names: tuple[str, ...], limit: int) -> Rejected | None:
    for name in names:
        text = record.get(name)
        # UTF-8 takes at most 4 bytes a character: most strings are judged without encoding.
        if isinstance(text, str) and len(text) * 4 > limit and len(text.encode("utf-8", "replace")) > limit:
            return Rejected("over_limit", f"{name} is {len(text.encode('utf-8', 'replace'))} bytes; "
                            f"at most {limit} are taken")
    return None


def _watermark(record: dict[str, Any], limits: Limits) -> Intake:
    too_long = _too_long(record, ("agent_id",), limits.max_id_bytes) or \
        _too_long(record, ("host",), limits.max_string_bytes)
    if too_long:
        return too_long
    if record["watermark_us"] <= 0:
        return Rejected("out_of_range", f"watermark_us={record['watermark_us']}: must be positive")
    return WatermarkRecord(record["agent_id"], record["watermark_us"], record["sequence"])


def _call(event: dict[str, Any], limits: Limits) -> Intake:
    too_long = _too_long(event, _ID_FIELDS, limits.max_id_bytes) or \
        _too_long(event, _STRING_FIELDS, limits.max_string_bytes)
    if too_long:
        return too_long
    frame_count = max(len(event["stack_trace"]), len(event["stack_frames"] or ()))
    if frame_count > limits.max_frames:
        return Rejected("over_limit", f"{frame_count} stack frames; at most {limits.max_frames} are taken")
    if event["observation_count"] > limits.max_observation_count:
        return Rejected("over_limit", f"observation_count={event['observation_count']}: at most "
                        f"{limits.max_observation_count} are taken in one record")
    for name in ("pid", "tid"):
        if event[name] < 0:
            return Rejected("out_of_range", f"{name}={event[name]}: must not be negative")
    if event["observation_count"] < 1:
        return Rejected("out_of_range", f"observation_count={event['observation_count']}: must be at least 1")
    # The contract: 0 means a writer older than observed_at_us; fall back to received_at_us.
    observed_us = event["observed_at_us"] or event["received_at_us"]
    if observed_us <= 0:
        return Rejected("out_of_range", f"observed_at_us={event['observed_at_us']}, "
                        f"received_at_us={event['received_at_us']}: no event time")
    located = event["stack_frames"]
    if located and len(located) != len(event["stack_trace"]):
        return Rejected("out_of_range", f"{len(located)} stack_frames for {len(event['stack_trace'])} "
                        f"stack_trace addresses: they must be parallel")
    try:
        # Built once per distinct frame, at the door: this also checks every digest's and
        # offset's shape.
        limit = limits.max_string_bytes  # the frames' strings are checked as each distinct frame is built
        if located:
            pairs = [_frame(f["address"], f["binary_digest"], f["binary_offset"], f["library"], f["purl"], limit)
                     for f in located]
        elif event["stack_trace"]:
            pairs = [_unlocated_frame(address, None, None, None, None, limit) for address in event["stack_trace"]]
        else:
            # No stack at all: the probed function alone is still a (one-frame) path.
            pairs = [_frame(event["function_address"], event["binary_digest"], event["binary_offset"],
                            event["library"], event["purl"], limit)]
    except HashInputError as exc:
        return Rejected("out_of_range", str(exc))
    except _OverLimit as exc:
        return exc.rejected
    frames, identities = zip(*pairs, strict=True)
    return CallRecord(
        container_id=event["container_id"],
        observed_at_us=observed_us,
        observation_count=event["observation_count"],
        frames=frames,
        identities=identities,
        top_symbol=event["symbol"],
        top_signature=event["function_signature"],
        top_purl=event["purl"],
        runtime_type=event["runtime_type"],
        executable=_executable(event),
        last_observed_at_us=observed_us + _folded_span_us(event),
        agent_id=event["agent_id"],
        event_id=event["event_id"],
    )


def _folded_span_us(event: dict[str, Any]) -> int:
    last_ns: int | None = event["last_timestamp_ns"]
    first_ns: int = event["timestamp_ns"]
    if last_ns is None or event["observation_count"] < 2 or last_ns < first_ns:
        return 0
    return (last_ns - first_ns) // 1000


@lru_cache(maxsize=4096)
def _executable_of(path: str | None, digest: str | None, purl: str | None, comm: str) -> Executable:
    return Executable(path, digest, purl, comm)  # one shared value per distinct executable


def _executable(event: dict[str, Any]) -> Executable | None:
    if event["executable"] is None and event["executable_digest"] is None and not event["comm"]:
        return None  # an agent older than these fields
    return _executable_of(event["executable"], event["executable_digest"], event["executable_purl"], event["comm"])
