"""Which packages are mapped where: the inventory, folded from the modules topic.

Agents publish each process's module map (schemas/ModuleMap.avsc) to a compacted topic, one
key per process, the latest version kept, a tombstone when compaction retires it. Folding
those maps gives, per package (PURL with its version), the files that hold it and the
containers and nodes whose processes map them. ``entries`` is pure; ``read_module_maps``
is the only Kafka read.

A Go binary's PURL names its main module only (agent/purl.py reads the build info's main
module): a Go library compiled into it is not listed under its own PURL.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from packageurl import PackageURL

from runtime_signals.consumer import query
from runtime_signals.consumer.errors import QueryError
from runtime_signals.consumer.kafka import TopicReader
from runtime_signals.schemas import codec
from runtime_signals.schemas.errors import SchemaError

log = logging.getLogger(__name__)

MODULE_MAP = "io.runtimesignals.ModuleMap"


@dataclass(frozen=True, slots=True)
class InventoryEntry:
    """One file of one package, mapped by processes of one container on one node."""

    purl: str                    # as the agent found it, with its version
    package: str                 # the PURL without version or qualifiers: pkg:deb/debian/zlib1g
    version: str | None
    host: str
    container_id: str
    path: str                    # as the container's processes see it
    binary_digest: str | None
    runtime_type: str
    processes: int               # processes whose latest map holds the file
    last_seen_us: int            # the newest of those maps' observed_at_us

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def package_of(purl: str) -> tuple[str, str | None]:
    """(``pkg:type/namespace/name``, version) of a PURL; the PURL itself when it does not parse."""
    try:
        parsed = PackageURL.from_string(purl)
    except ValueError:
        return purl, None
    base = PackageURL(type=parsed.type, namespace=parsed.namespace, name=parsed.name).to_string()
    return base, parsed.version


def entries(module_maps: Iterable[Mapping[str, Any]]) -> list[InventoryEntry]:
    """The inventory of these (decoded, latest-per-process) module maps, sorted by
    (package, version, host, container, path). Modules without a PURL are not packages
    anyone named, and are left out; JIT blobs and Python sources are kept as mapped."""
    processes: Counter[tuple[str, str, str, str, str | None, str]] = Counter()
    seen_us: dict[tuple[str, str, str, str, str | None, str], int] = {}
    for record in module_maps:
        files = {(m["purl"], m["path"], m.get("binary_digest")) for m in record["modules"] if m.get("purl")}
        for purl, path, digest in files:
            key = (purl, record["host"], record["container_id"], path, digest, record.get("runtime_type", "UNKNOWN"))
            processes[key] += 1
            seen_us[key] = max(seen_us.get(key, 0), record["observed_at_us"])
    found = []
    for key, count in processes.items():
        purl, host, container, path, digest, runtime = key
        package, version = package_of(purl)
        found.append(InventoryEntry(purl, package, version, host, container, path, digest, runtime, count,
                                    seen_us[key]))
    return sorted(found, key=lambda e: (e.package, e.version or "", e.host, e.container_id, e.path))


def select(found: Iterable[InventoryEntry], *, purl: str | None = None,
           container: str | None = None) -> list[InventoryEntry]:
    """Entries of one package (a PURL with or without version: ``pkg:deb/debian/zlib1g``)
    and/or one container (an id or a 12+ character prefix)."""
    wanted = query.parse_purl(purl) if purl is not None else None
    if container is not None and not container.strip():
        raise QueryError("--container: empty; give a container id, or leave it out")
    return [e for e in found
            if (wanted is None or query.purl_matches(wanted, e.purl))
            and (container is None or e.container_id == container or e.container_id.startswith(container))]


def read_module_maps(reader: TopicReader, topic: str, registry: codec.SchemaRegistry,
                     skipped: Counter[str] | None = None) -> list[dict[str, Any]]:
    """The latest module map of each process on ``topic`` now (highest ``version`` per key;
    a tombstone forgets the process). Records that do not decode are counted in ``skipped``
    by reason and left out."""
    latest: dict[bytes | None, dict[str, Any]] = {}
    for record in reader.read(topic, reader.whole_topic(topic)):
        if record.value is None:
            latest.pop(record.key, None)
            continue
        try:
            decoded = codec.decode(record.value, registry, MODULE_MAP).record
        except SchemaError as exc:
            if skipped is not None:
                skipped[type(exc).__name__] += 1
            log.warning("%s[%d]@%d: module map skipped: %s", topic, record.partition, record.offset, exc)
            continue
        known = latest.get(record.key)
        if known is None or decoded["version"] >= known["version"]:
            latest[record.key] = decoded
    return list(latest.values())


def latest_records(reader: TopicReader, topic: str, registry: codec.SchemaRegistry, schema: str,
                   skipped: Counter[str] | None = None) -> dict[bytes, dict[str, Any]]:
    """The latest record of each key of a compacted topic now (a tombstone deletes its key),
    decoded as ``schema`` (the plans and plan status topics). Undecodable records are counted
    in ``skipped`` by reason; a key whose latest record does not decode is left out."""
    latest: dict[bytes, dict[str, Any] | None] = {}
    for record in reader.read(topic, reader.whole_topic(topic)):
        key = record.key or b""
        if record.value is None:
            latest.pop(key, None)
            continue
        try:
            latest[key] = codec.decode(record.value, registry, schema).record
        except SchemaError as exc:
            latest[key] = None
            if skipped is not None:
                skipped[type(exc).__name__] += 1
            log.warning("%s[%d]@%d: record skipped: %s", topic, record.partition, record.offset, exc)
    return {key: value for key, value in latest.items() if value is not None}
