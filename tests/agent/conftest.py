"""Fixtures of the agent tests that several modules share."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.agent.agent_runs import build_target
from tests.bpf_support import bpf_unavailable_reason


def _bpf_target(name: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/agent/targets/<name>.c built; skips where BPF cannot run (the tests use it)."""
    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    return build_target(name, tmp_path_factory.mktemp(name))


@pytest.fixture(scope="module")
def hotloop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _bpf_target("hotloop", tmp_path_factory)


@pytest.fixture(scope="module")
def callers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _bpf_target("callers", tmp_path_factory)
