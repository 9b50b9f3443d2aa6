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
  stack_trace, a watermark <= 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from runtime_signals.schemas import codec, hashing
from runtime_signals.schemas.errors import CorruptMessageError, HashInputError, IncompatibleSchemaError, SchemaError, UnknownFingerprintError

from runtime_signals.processor.symbolize import Frame

CALL_EVENT = "io.runtimesignals.RuntimeCallEvent"
WATERMARK = "io.runtimesignals.AgentWatermark"
REASONS = ("undecodable", "unknown_fingerprint", "incompatible_schema", "unexpected_schema", "out_of_range")


@lru_cache(maxsize=65_536)
def _frame(address: int, binary_digest: str | None, binary_offset: int | None,
           library: str | None, purl: str | None = None) -> tuple[Frame, str]:
    """A frame and its identity. Both are pure functions of the four fields, and a workload's
    calls repeat a few thousand distinct frames, so each is built, normalised and checked
    once (a frozen Frame is safe to share). A malformed digest raises HashInputError, and
    errors are not cached: every record that carries it is rejected."""
    return Frame(address, binary_digest, binary_offset, library, purl), \
        hashing.frame_identity(binary_digest, binary_offset, address)


@dataclass(frozen=True, slots=True)
class CallRecord:
    """The parts of a RuntimeCallEvent the processor uses, checked."""

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


def read_raw(value: bytes | None, registry: codec.SchemaRegistry) -> Intake:
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
        return _watermark(decoded.record)
    if decoded.schema_name == CALL_EVENT:
        return _call(decoded.record)
    return Rejected("unexpected_schema", f"a {decoded.schema_name} record does not belong on the raw topic")


def _watermark(record: dict[str, Any]) -> Intake:
    if record["watermark_us"] <= 0:
        return Rejected("out_of_range", f"watermark_us={record['watermark_us']}: must be positive")
    return WatermarkRecord(record["agent_id"], record["watermark_us"], record["sequence"])


def _call(event: dict[str, Any]) -> Intake:
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
        if located:
            pairs = [_frame(f["address"], f["binary_digest"], f["binary_offset"], f["library"], f["purl"])
                     for f in located]
        elif event["stack_trace"]:
            pairs = [_frame(address, None, None, None) for address in event["stack_trace"]]
        else:
            # No stack at all: the probed function alone is still a (one-frame) path.
            pairs = [_frame(event["function_address"], event["binary_digest"], event["binary_offset"],
                            event["library"], event["purl"])]
    except HashInputError as exc:
        return Rejected("out_of_range", str(exc))
    frames = tuple(frame for frame, _ in pairs)
    identities = tuple(identity for _, identity in pairs)
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
