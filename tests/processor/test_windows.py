"""Event-time windows: closed by watermarks only, late calls refused, order fixed."""

from __future__ import annotations

import pytest

from runtime_signals.processor.windows import PartitionWindows, WindowKey, WindowSpec


def _collect(windows: PartitionWindows[list[int]], container: str, at_us: int) -> None:
    windows.window_for(container, at_us, lambda key: []).append(at_us)


def test_calls_fall_into_tumbling_windows_aligned_to_the_epoch() -> None:
    spec = WindowSpec(size_ms=1000)
    assert spec.start_of(1_000_000) == 1_000_000
    assert spec.start_of(1_999_999) == 1_000_000
    assert spec.start_of(2_000_000) == 2_000_000


def test_windows_close_only_when_the_watermark_passes_end_plus_lateness() -> None:
    windows: PartitionWindows[list[int]] = PartitionWindows(WindowSpec(size_ms=1000, allowed_lateness_ms=500))
    _collect(windows, "c1", 1_200_000)
    _collect(windows, "c1", 1_900_000)
    assert list(windows.advance(2_499_999)) == []
    closed = list(windows.advance(2_500_000))
    assert closed == [(WindowKey(1_000_000, "c1"), [1_200_000, 1_900_000])]
    assert len(windows) == 0


def test_a_call_for_a_closed_window_is_late() -> None:
    windows: PartitionWindows[list[int]] = PartitionWindows(WindowSpec(size_ms=1000, allowed_lateness_ms=0))
    list(windows.advance(3_000_000))
    assert windows.is_late(2_999_999)
    assert not windows.is_late(3_000_000)


def test_watermark_never_goes_back_and_closing_order_is_deterministic() -> None:
    windows: PartitionWindows[list[int]] = PartitionWindows(WindowSpec(size_ms=1000))
    for container, at in (("b", 1_100_000), ("a", 2_100_000), ("a", 1_500_000), ("c", 1_000_000)):
        _collect(windows, container, at)
    assert list(windows.advance(5_000_000)) and windows.watermark_us == 5_000_000
    assert list(windows.advance(1_000)) == [] and windows.watermark_us == 5_000_000
    windows2: PartitionWindows[list[int]] = PartitionWindows(WindowSpec(size_ms=1000))
    for container, at in (("c", 1_000_000), ("a", 1_500_000), ("a", 2_100_000), ("b", 1_100_000)):
        _collect(windows2, container, at)
    assert [k for k, _ in windows2.advance(5_000_000)] == [
        WindowKey(1_000_000, "a"), WindowKey(1_000_000, "b"), WindowKey(1_000_000, "c"), WindowKey(2_000_000, "a"),
    ]


@pytest.mark.parametrize("size_ms, lateness_ms", [(0, 0), (-1, 0), (1000, -1)])
def test_invalid_window_settings_name_the_setting(size_ms: int, lateness_ms: int) -> None:
    with pytest.raises(ValueError, match=r"size_ms|allowed_lateness_ms"):
        WindowSpec(size_ms=size_ms, allowed_lateness_ms=lateness_ms)
