"""Which OS package installed a file: dpkg (Debian, Ubuntu), rpm (sqlite rpmdb: Fedora 33+,
RHEL 9+, openSUSE), apk (Alpine), read from the files under a root directory (a container's
/proc/<pid>/root) without running any package tool.

Not read: the Berkeley DB rpmdb of RHEL/CentOS 8 and older (/var/lib/rpm/Packages) and
SUSE's ndb; files there resolve to no OS package.

Indexes keep only paths a process can map as code (shared objects and programs), which
is what the agent asks about: a full dpkg index of a Debian host is ~130k paths.
"""

from __future__ import annotations

import re
import sqlite3
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from packageurl import PackageURL

# Python source is code too: a stack's Python frames are located in their .py files.
_CODE_PATH = re.compile(r"(\.so($|\.)|/s?bin/|/libexec/|\.py$)")
_MERGED_USR = ("/usr/lib", "/usr/bin", "/usr/sbin", "/usr/lib32", "/usr/lib64", "/usr/libx32")


@dataclass(frozen=True, slots=True)
class OsRelease:
    id: str
    version_id: str

    @property
    def distro(self) -> str | None:
        return f"{self.id}-{self.version_id}" if self.version_id else self.id or None


@dataclass(frozen=True, slots=True)
class OsPackage:
    kind: str  # deb, rpm, apk
    name: str
    version: str
    arch: str | None
    epoch: str | None = None

    def purl(self, release: OsRelease | None) -> str:
        qualifiers = {}
        if self.arch:
            qualifiers["arch"] = self.arch
        if self.epoch:
            qualifiers["epoch"] = self.epoch
        if release is not None and release.distro:
            qualifiers["distro"] = release.distro
        namespace = release.id if release is not None and release.id else {"apk": "alpine"}.get(self.kind)
        return PackageURL(type=self.kind, namespace=namespace, name=self.name, version=self.version,
                          qualifiers=qualifiers or None).to_string()


def is_code_path(path: str) -> bool:
    """A path that may hold a shared object, a program or Python source."""
    if _CODE_PATH.search(path):
        return True
    name = path.rsplit("/", 1)[-1]
    return path.startswith(("/usr/lib/", "/lib/")) and "." not in name


def path_variants(path: str) -> list[str]:
    """The path, and its twin across the merged-/usr symlinks (/lib -> /usr/lib): maps show
    the resolved /usr path while Debian's lists often hold the /lib one."""
    variants = [path]
    for prefix in _MERGED_USR:
        if path.startswith(prefix + "/"):
            variants.append(path[len("/usr"):])
        elif path.startswith(prefix[len("/usr"):] + "/"):
            variants.append("/usr" + path)
    return variants


def read_os_release(root: Path) -> OsRelease | None:
    for candidate in ("etc/os-release", "usr/lib/os-release"):
        try:
            text = (root / candidate).read_text()
        except OSError:
            continue
        values = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip().strip('"').strip("'")
        return OsRelease(values.get("ID", ""), values.get("VERSION_ID", ""))
    return None


def _stanzas(text: str) -> Iterator[dict[str, str]]:
    """RFC-822-like blocks separated by blank lines (dpkg status, apk installed)."""
    block: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if block:
                yield block
            block = {}
        elif not line[0].isspace():
            key, _, value = line.partition(":")
            block.setdefault(key, value.strip())
    if block:
        yield block


def dpkg_index(root: Path) -> dict[str, OsPackage]:
    """Code paths of every installed Debian package under root."""
    try:
        status = (root / "var/lib/dpkg/status").read_text(errors="replace")
    except OSError:
        return {}
    packages: dict[tuple[str, str], OsPackage] = {}
    for block in _stanzas(status):
        if block.get("Status", "").endswith(" installed") and "Package" in block:
            arch = block.get("Architecture", "")
            packages[(block["Package"], arch)] = OsPackage("deb", block["Package"], block.get("Version", ""),
                                                           arch or None)
    by_name = {name: package for (name, _), package in packages.items()}
    index: dict[str, OsPackage] = {}
    for listing in (root / "var/lib/dpkg/info").glob("*.list"):
        name, _, arch = listing.stem.partition(":")
        package = packages.get((name, arch)) if arch else by_name.get(name)
        if package is None:
            continue
        try:
            lines = listing.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if is_code_path(line):
                index[line] = package
    return index


_RPM_TAGS = {1000: "name", 1001: "version", 1002: "release", 1003: "epoch", 1022: "arch",
             1116: "dirindexes", 1117: "basenames", 1118: "dirnames"}
_RPM_DATABASES = ("var/lib/rpm/rpmdb.sqlite", "usr/lib/sysimage/rpm/rpmdb.sqlite")


def parse_rpm_header(blob: bytes) -> dict[str, object]:
    """The tags this module needs from one rpm header blob (rpmdb.sqlite Packages.blob:
    index count, data size, 16-byte big-endian index entries, then the data store)."""
    count, size = struct.unpack_from(">ii", blob, 0)
    data_start = 8 + count * 16
    data = blob[data_start:data_start + size]
    values: dict[str, object] = {}
    for index in range(count):
        tag, kind, offset, items = struct.unpack_from(">iIiI", blob, 8 + index * 16)
        name = _RPM_TAGS.get(tag)
        if name is None:
            continue
        if kind == 4:  # INT32 array
            values[name] = list(struct.unpack_from(f">{items}i", data, offset))
        elif kind in (6, 8, 9):  # STRING, STRING_ARRAY, I18NSTRING
            strings = data[offset:].split(b"\0", items)[:items]
            decoded = [s.decode(errors="replace") for s in strings]
            values[name] = decoded[0] if kind == 6 else decoded
    return values


def rpm_index(root: Path) -> dict[str, OsPackage]:
    """Code paths of every package in the sqlite rpmdb under root."""
    for candidate in _RPM_DATABASES:
        path = root / candidate
        if path.is_file():
            break
    else:
        return {}
    index: dict[str, OsPackage] = {}
    # immutable=1: never create -wal/-shm files inside a container's filesystem.
    connection = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        rows = connection.execute("SELECT blob FROM Packages").fetchall()
    except sqlite3.Error:
        return {}
    finally:
        connection.close()
    for (blob,) in rows:
        try:
            tags = parse_rpm_header(bytes(blob))
        except struct.error:
            continue
        name, version = tags.get("name"), tags.get("version")
        if not isinstance(name, str) or not isinstance(version, str):
            continue
        release, arch, epoch = tags.get("release"), tags.get("arch"), tags.get("epoch")
        package = OsPackage("rpm", name, f"{version}-{release}" if release else version,
                            arch if isinstance(arch, str) else None,
                            str(epoch[0]) if isinstance(epoch, list) and epoch and epoch[0] else None)
        dirnames, basenames, dirindexes = tags.get("dirnames"), tags.get("basenames"), tags.get("dirindexes")
        if isinstance(dirnames, list) and isinstance(basenames, list) and isinstance(dirindexes, list):
            for base, dir_index in zip(basenames, dirindexes, strict=False):
                file_path = dirnames[dir_index] + base
                if is_code_path(file_path):
                    index[file_path] = package
    return index


def apk_index(root: Path) -> dict[str, OsPackage]:
    """Code paths of every package in Alpine's /lib/apk/db/installed under root."""
    try:
        text = (root / "lib/apk/db/installed").read_text(errors="replace")
    except OSError:
        return {}
    index: dict[str, OsPackage] = {}
    package: OsPackage | None = None
    directory = ""
    # Not _stanzas: F:/R: lines repeat within a block and their order matters.
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if not line.strip():
            package, directory = None, ""
        elif key == "P":
            package = OsPackage("apk", value, "", None)
        elif key == "V" and package is not None:
            package = OsPackage("apk", package.name, value, package.arch)
        elif key == "A" and package is not None:
            package = OsPackage("apk", package.name, package.version, value)
        elif key == "F":
            directory = value
        elif key == "R" and package is not None:
            file_path = f"/{directory}/{value}" if directory else f"/{value}"
            if is_code_path(file_path):
                index[file_path] = package
    # P/V/A precede the file lists in apk's format, so each file got its final package.
    return index


def os_package_index(root: Path) -> dict[str, OsPackage]:
    """The first package database found under root (a root has one package manager)."""
    for build in (dpkg_index, rpm_index, apk_index):
        found = build(root)
        if found:
            return found
    return {}
