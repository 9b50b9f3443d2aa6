"""Whether this host can run the BPF tests, and why not when it cannot."""

from __future__ import annotations

import os
from pathlib import Path


def bpf_unavailable_reason() -> str | None:
    """None when uprobes can be attached here; otherwise the reason, for pytest.skip."""
    if os.geteuid() != 0:
        return "not root: attaching uprobes needs root (or CAP_BPF + CAP_PERFMON)"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "bcc is not importable: run scripts/bootstrap.sh (installs Debian's python3-bpfcc)"
    if not any(Path(p).exists() for p in ("/sys/kernel/tracing/uprobe_events",
                                          "/sys/kernel/debug/tracing/uprobe_events")):
        return "no tracefs with uprobe_events: kernel lacks uprobes or tracefs is not mounted"
    kernel = os.uname().release
    if not Path(f"/lib/modules/{kernel}/build").exists() and not Path("/sys/kernel/kheaders.tar.xz").exists():
        return f"no kernel headers for {kernel}: bcc cannot compile (run scripts/bootstrap.sh)"
    return None
