"""Which file the kernel attaches a uprobe to, whatever path the agent found it by.

A uprobe is set on an inode: the kernel resolves the path it is given and, on overlayfs,
takes the inode of the layer that holds the data (d_real_inode), so every container started
from one image shares one uprobe on the image layer's file. The agent finds files through
/proc/<pid>/root, where each container's overlay mount has its own device number: keyed by
(st_dev, st_ino) as stat() shows them, one layer file looked like one file per container,
got one uprobe per container, and every call fired every one of them (counted N times).

So files are keyed by the identity of the file underneath: for a file on overlayfs, the
mount's layers are read from the mountinfo of the process that sees it (upperdir first,
then each lowerdir in order: the first layer holding the path is the one that provides
its data), and the layer file is stat()ed from the agent's side (host root + layer path,
as the mounter named it). Layers on overlayfs themselves are resolved the same way.
Where the layers cannot be read (no access, paths not visible to the agent) the overlay's
own identity is kept, counted in `unresolved`, and logged: calls through two such views
would be counted once per view, and the statistics say so.

/proc/<pid>/maps does not help: since Linux 6.x it shows the overlay's inode for a mapped
file (the user-visible one), not the layer's.
"""

from __future__ import annotations

import logging
import os
import stat
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

FileKey = tuple[int, int]  # (device, inode) of the file a uprobe attaches to

_MAX_DEPTH = 4  # overlays stacked on overlays: docker-in-docker is 2
_MAX_CACHED = 1 << 16


@dataclass(frozen=True, slots=True)
class OverlayMount:
    """One overlayfs mount as a mountinfo line describes it."""

    device: int                 # st_dev of files under it
    mount_point: str            # as the process whose mountinfo it is sees it
    root: str                   # the overlay's directory mounted there ("/" unless a bind)
    layers: tuple[str, ...]     # upperdir (if any), then lowerdirs, top first, as the mounter named them


def _unescape(text: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 ...).
    out, index = [], 0
    while index < len(text):
        if text[index] == "\\" and index + 4 <= len(text) and text[index + 1:index + 4].isdigit():
            out.append(chr(int(text[index + 1:index + 4], 8)))
            index += 4
        else:
            out.append(text[index])
            index += 1
    return "".join(out)


def _split_lowerdirs(value: str) -> list[str]:
    # lowerdir=a:b:c, where a ':' inside a path is written '\:'.
    parts, current, index = [], [], 0
    while index < len(value):
        char = value[index]
        if char == "\\" and index + 1 < len(value):
            current.append(value[index + 1])
            index += 2
            continue
        if char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    parts.append("".join(current))
    return [p for p in parts if p]


def _split_options(text: str) -> list[str]:
    # Super options are comma-separated; a ',' inside a path is escaped as '\,'.
    parts, current, index = [], [], 0
    while index < len(text):
        if text[index] == "\\" and index + 1 < len(text) and text[index + 1] == ",":
            current.append(",")
            index += 2
            continue
        if text[index] == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(text[index])
        index += 1
    parts.append("".join(current))
    return parts


def overlay_mounts(mountinfo: str) -> dict[int, OverlayMount]:
    """The overlayfs mounts of a mountinfo text, by device number."""
    mounts: dict[int, OverlayMount] = {}
    for line in mountinfo.splitlines():
        head, sep, tail = line.partition(" - ")
        if not sep:
            continue
        fields, tail_fields = head.split(), tail.split()
        if len(fields) < 5 or len(tail_fields) < 3 or tail_fields[0] != "overlay":
            continue
        major, _, minor = fields[2].partition(":")
        upper: list[str] = []
        lower: list[str] = []
        for option in _split_options(tail_fields[2]):
            key, _, value = option.partition("=")
            if key == "upperdir":
                upper = [_unescape(value)]
            elif key == "lowerdir":
                lower.extend(_unescape(v) for v in _split_lowerdirs(value))
            elif key == "lowerdir+":  # the new mount API adds layers one option each
                lower.append(_unescape(value))
        device = os.makedev(int(major), int(minor))
        mounts[device] = OverlayMount(device, _unescape(fields[4]), _unescape(fields[3]), tuple(upper + lower))
    return mounts


class BackingFiles:
    """(device, inode) of the file underneath, for files found through any root."""

    def __init__(self, host_root: Path = Path("/"), host_mountinfo: Path = Path("/proc/self/mountinfo")) -> None:
        self._host_root = host_root
        # The mounts of the node's own namespace, where layer paths are named.
        self.host_mountinfo = host_mountinfo
        self._cache: dict[FileKey, FileKey] = {}
        self.unresolved: Counter[str] = Counter()  # overlay files kept by their overlay identity, by reason

    def identity(self, host_path: Path, mountinfo_path: Path, path_in_root: str) -> FileKey | None:
        """The key of the file at host_path, which a process whose mountinfo is at
        mountinfo_path sees as path_in_root; None when it is gone."""
        try:
            st = os.stat(host_path)
        except OSError:
            return None
        seen = (st.st_dev, st.st_ino)
        cached = self._cache.get(seen)
        if cached is not None:
            return cached
        resolved = self._resolve(st, mountinfo_path, path_in_root, 0)
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[seen] = resolved
        return resolved

    def _resolve(self, st: os.stat_result, mountinfo_path: Path, path: str, depth: int) -> FileKey:
        seen = (st.st_dev, st.st_ino)
        if os.major(st.st_dev) != 0 or not stat.S_ISREG(st.st_mode):
            return seen  # overlayfs has an anonymous device (major 0); block devices are real
        try:
            mounts = overlay_mounts(mountinfo_path.read_text())
        except OSError as exc:
            return self._unresolved(seen, path, f"reading {mountinfo_path}: {exc.strerror}")
        mount = mounts.get(st.st_dev)
        if mount is None:
            return seen  # tmpfs, a FUSE or other anonymous-device file system: no layers
        if depth >= _MAX_DEPTH:
            return self._unresolved(seen, path, f"more than {_MAX_DEPTH} overlays stacked")
        relative = os.path.relpath(path, mount.mount_point) if mount.mount_point != "/" else path.lstrip("/")
        if relative.startswith(".."):
            return self._unresolved(seen, path, f"not under its mount point {mount.mount_point}")
        inner = os.path.normpath(os.path.join(mount.root.lstrip("/"), relative))
        for layer in mount.layers:
            layer_path = os.path.join(layer, inner)
            try:
                layer_st = os.stat(self._host_root / layer_path.lstrip("/"))
            except FileNotFoundError:
                continue  # not in this layer: a lower one provides it
            except OSError as exc:
                return self._unresolved(seen, path, f"layer {layer}: {exc.strerror}")
            if stat.S_ISCHR(layer_st.st_mode) and layer_st.st_rdev == 0:
                break  # a whiteout: would not be visible in the merged view
            # The layer's path is the mounter's: its own overlays (if any) are in our mountinfo.
            return self._resolve(layer_st, self.host_mountinfo, layer_path, depth + 1)
        return self._unresolved(seen, path, f"no layer of the overlay at {mount.mount_point} holds it "
                                            f"(layers {', '.join(mount.layers)} not visible from the agent?)")

    def _unresolved(self, seen: FileKey, path: str, reason: str) -> FileKey:
        if not self.unresolved[reason]:
            log.warning("%s is on overlayfs and its layer file could not be found (%s): calls through another "
                        "view of the same file would be counted once per view", path, reason)
        self.unresolved[reason] += 1
        return seen
