"""Package URLs (package-url/purl-spec) of mapped files: which package shipped this code.

A file is looked up inside the root of the process that maps it (/proc/<pid>/root), so
a container's own package databases answer for its files. The most specific answer wins:
  1. language packages: Python wheels (dist-info RECORD), npm (node_modules/*/package.json),
     Maven (a .jar's pom.properties or manifest), Go modules (the binary's build info);
  2. the OS package database (agent/pkgdb.py: dpkg, rpm, apk).
So a wheel's extension module is pkg:pypi/… even inside a Debian image, and libz is
pkg:deb/debian/zlib1g@….

Results are cached by file identity (device, inode, mtime, size), and each root's OS index
by the identity of its database (not by /proc/<pid>/root: every process of one image shares
one index, and an exited process leaves nothing behind), so each is read once. Every cache
is bounded (least recently used out); sizes() reports them for /metrics.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import zipfile
from pathlib import Path

from cachetools import LRUCache
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from packageurl import PackageURL

from runtime_signals.agent.pkgdb import (
    OsPackage,
    OsRelease,
    os_package_index,
    path_variants,
    read_os_release,
)
from runtime_signals.agent.procmaps import FileIdentity, file_identity

log = logging.getLogger(__name__)

_GO_MAGIC = b"\xff Go buildinf:"
_SITE_DIRS = ("/site-packages/", "/dist-packages/")
# Bounds of the caches. An OS index is the largest (a full distribution's dpkg index is some
# 100,000 paths): a few dozen distinct images at once is plenty; another is read again.
MAX_CACHED_FILES = 1 << 16
MAX_OS_INDEXES = 32
MAX_SITE_INDEXES = 256
_OS_DATABASES = ("var/lib/dpkg/status", "var/lib/rpm/rpmdb.sqlite", "usr/lib/sysimage/rpm/rpmdb.sqlite",
                 "lib/apk/db/installed")


def _uvarint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def go_build_info(path: str | os.PathLike[str]) -> tuple[str, dict[str, str]] | None:
    """(Go version, {"path": main package, "mod": module path, "version": module version})
    from a Go binary's .go.buildinfo section (the layout of Go 1.18+, whose strings are
    inline), or None for anything else."""
    try:
        with open(path, "rb") as handle:
            elf = ELFFile(handle)
            section = elf.get_section_by_name(".go.buildinfo")
            if section is None:
                return None
            data = section.data()
    except (OSError, ELFError, ValueError):
        return None
    if not data.startswith(_GO_MAGIC) or len(data) < 33 or not data[15] & 0x2:
        return None  # pre-1.18 layout: pointers into the data segment, not read here
    go_version_length, position = _uvarint(data, 32)
    go_version = data[position:position + go_version_length].decode(errors="replace")
    position += go_version_length
    modinfo_length, position = _uvarint(data, position)
    modinfo = data[position:position + modinfo_length].decode(errors="replace")
    # modinfo is framed by 16-byte sentinels.
    if len(modinfo) >= 33 and modinfo[-17] == "\n":
        modinfo = modinfo[16:-16]
    info: dict[str, str] = {}
    for line in modinfo.splitlines():
        fields = line.split("\t")
        if fields[0] == "path" and len(fields) > 1:
            info["path"] = fields[1]
        elif fields[0] == "mod" and len(fields) > 2:
            info["mod"], info["version"] = fields[1], fields[2]
    return go_version, info


def _golang_purl(path: Path) -> str | None:
    found = go_build_info(path)
    if found is None or "mod" not in found[1]:
        return None
    module = found[1]["mod"]
    version = found[1].get("version")
    namespace, _, name = module.rpartition("/")
    return PackageURL(type="golang", namespace=namespace or None, name=name,
                      version=None if version in (None, "", "(devel)") else version).to_string()


def _read_jar_coordinates(jar: Path) -> tuple[str, str, str] | None:
    """(groupId, artifactId, version) of a jar: its pom.properties, else its manifest."""
    try:
        with zipfile.ZipFile(jar) as archive:
            poms = sorted(n for n in archive.namelist()
                          if n.startswith("META-INF/maven/") and n.endswith("/pom.properties"))
            # A shaded jar embeds its dependencies' poms too: prefer the one named like the file.
            poms.sort(key=lambda n: not jar.name.startswith(n.split("/")[3] + "-"))
            for name in poms[:1]:
                values = dict(line.split("=", 1) for line in archive.read(name).decode(errors="replace").splitlines()
                              if "=" in line and not line.startswith("#"))
                if {"groupId", "artifactId", "version"} <= values.keys():
                    return values["groupId"].strip(), values["artifactId"].strip(), values["version"].strip()
            if "META-INF/MANIFEST.MF" in archive.namelist():
                manifest: dict[str, str] = {}
                for line in archive.read("META-INF/MANIFEST.MF").decode(errors="replace").splitlines():
                    key, sep, value = line.partition(": ")
                    if sep:
                        manifest[key] = value.strip()
                group = manifest.get("Implementation-Vendor-Id")
                artifact = manifest.get("Implementation-Title")
                version = manifest.get("Implementation-Version")
                if group and artifact and version:
                    return group, artifact, version
    except (OSError, zipfile.BadZipFile, KeyError):
        return None
    return None


def resolve_in_root(root: Path, path: str, max_links: int = 40) -> str:
    """path with its symbolic links followed as the process under root sees them (an
    absolute link target is relative to root, not to the agent's /). Package databases list
    real files and their links separately: a library's -dev symlink belongs to another
    package than the library it points to."""
    parts = [p for p in path.split("/") if p]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        try:
            target = os.readlink(candidate)
        except OSError:  # not a link (or gone): keep the name
            resolved.append(part)
            continue
        links += 1
        if links > max_links:
            return path
        if target.startswith("/"):
            resolved = []
        parts = [p for p in target.split("/") if p] + parts
    return "/" + "/".join(resolved)


class PurlResolver:
    """purl of a file seen from a process's root; thread-safe, cached."""

    def __init__(self, max_files: int = MAX_CACHED_FILES, max_os_indexes: int = MAX_OS_INDEXES,
                 max_site_indexes: int = MAX_SITE_INDEXES) -> None:
        self._lock = threading.Lock()
        self._by_file: LRUCache[FileIdentity, str | None] = LRUCache(max_files)
        # Keyed by the identities of the package database and of etc/os-release: the same
        # image's files answer the same whichever process's root they are read through.
        self._os_index: LRUCache[tuple[FileIdentity | None, FileIdentity | None],
                                 tuple[dict[str, OsPackage], OsRelease | None]] = LRUCache(max_os_indexes)
        self._site_index: LRUCache[tuple[str, FileIdentity], dict[str, str]] = LRUCache(max_site_indexes)
        self.lookups = 0

    def sizes(self) -> dict[str, int]:
        """Entries held, for /metrics."""
        with self._lock:
            return {"purl_files": len(self._by_file), "purl_os_indexes": len(self._os_index),
                    "purl_site_indexes": len(self._site_index)}

    def purl(self, root: Path, path: str) -> str | None:
        """The package URL of the file at path (as the process sees it) under root."""
        path = resolve_in_root(root, path)
        host_path = root / path.lstrip("/")
        identity = file_identity(host_path)
        if identity is None:
            return None
        with self._lock:
            if identity in self._by_file:
                return self._by_file[identity]
            self.lookups += 1
            try:
                found = self._resolve(root, path, host_path)
            except Exception:  # a malformed package database must not cost the event
                log.exception("resolving the package of %s under %s failed", path, root)
                found = None
            self._by_file[identity] = found
            return found

    def _resolve(self, root: Path, path: str, host_path: Path) -> str | None:
        return (self._pypi(root, path) or self._npm(root, path) or self._maven(host_path)
                or _golang_purl(host_path) or self._os_package(root, path))

    def _os_package(self, root: Path, path: str) -> str | None:
        database = next((identity for identity in (file_identity(root / db) for db in _OS_DATABASES)
                         if identity is not None), None)
        key = (database, file_identity(root / "etc/os-release"))
        found = self._os_index.get(key)
        if found is None:
            found = self._os_index[key] = (os_package_index(root), read_os_release(root))
        index, release = found
        for variant in path_variants(path):
            package = index.get(variant)
            if package is not None:
                return package.purl(release)
        return None

    def _pypi(self, root: Path, path: str) -> str | None:
        marker = next((m for m in _SITE_DIRS if m in path), None)
        if marker is None:
            return None
        site = path[:path.rfind(marker) + len(marker) - 1]
        site_dir = root / site.lstrip("/")
        site_identity = file_identity(site_dir)
        if site_identity is None:
            return None
        # The directory's identity (its device is the container's overlay) and its path in
        # the root: one entry per image's site directory, not per process.
        key = (site, site_identity)
        index = self._site_index.get(key)
        if index is None:
            index = self._site_index[key] = _record_index(site_dir)
        found = index.get(path[len(site) + 1:])
        if found is None:
            return None
        name, version = found.split("\0")
        return PackageURL(type="pypi", name=name, version=version).to_string()

    def _npm(self, root: Path, path: str) -> str | None:
        cut = path.rfind("/node_modules/")
        if cut < 0:
            return None
        parts = path[cut + len("/node_modules/"):].split("/")
        package_dir = "/".join(parts[:2] if parts[0].startswith("@") else parts[:1])
        manifest = root / path[:cut].lstrip("/") / "node_modules" / package_dir / "package.json"
        try:
            data = json.loads(manifest.read_text())
        except (OSError, ValueError):
            return None
        name, version = data.get("name"), data.get("version")
        if not isinstance(name, str) or not isinstance(version, str):
            return None
        namespace, _, short = name.rpartition("/")
        return PackageURL(type="npm", namespace=namespace or None, name=short, version=version).to_string()

    def _maven(self, host_path: Path) -> str | None:
        if host_path.suffix != ".jar":
            return None
        found = _read_jar_coordinates(host_path)
        if found is None:
            return None
        group, artifact, version = found
        return PackageURL(type="maven", namespace=group, name=artifact, version=version).to_string()


def _record_index(site_dir: Path) -> dict[str, str]:
    """'relative path' -> 'name\\0version' for the native modules and Python sources of every
    wheel installed in site_dir (its *.dist-info/RECORD files): a process maps the .so
    files, and Python frames name the .py files."""
    index: dict[str, str] = {}
    try:
        dist_infos = [p for p in site_dir.iterdir() if p.name.endswith(".dist-info")]
    except OSError:
        return index
    for dist_info in dist_infos:
        name, _, version = dist_info.name[: -len(".dist-info")].rpartition("-")
        try:
            lines = (dist_info / "RECORD").read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            file_name = line.split(",", 1)[0].strip('"')
            if ".so" in file_name or file_name.endswith(".py"):
                index[os.path.normpath(file_name)] = f"{name}\0{version}"
    return index
