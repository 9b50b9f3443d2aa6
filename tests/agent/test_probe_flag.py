"""`--probe BINARY:SYMBOL` with the names people write: C++ and Rust paths, Go package paths,
library names, and paths that hold a ':' themselves."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime_signals.agent.errors import ConfigError
from runtime_signals.agent.probes import ProbeSpec
from runtime_signals.cli.agent import target_of_probe_flag


@pytest.mark.parametrize(("text", "binary", "symbol"), [
    ("/app/server:imgproc::Parser::parse", "/app/server", "imgproc::Parser::parse"),
    ("/app/server:imgproc::Parser::parse(char const*)", "/app/server", "imgproc::Parser::parse(char const*)"),
    ("/usr/bin/rustapp:mycrate::a::b", "/usr/bin/rustapp", "mycrate::a::b"),
    ("libstdc++.so.6:std::__cxx11::basic_string<char>::size", "libstdc++.so.6",
     "std::__cxx11::basic_string<char>::size"),
    ("c:malloc", "c", "malloc"),
    ("ssl:SSL_read", "ssl", "SSL_read"),
    ("/app/gosvc:golang.org/x/net/html.Parse", "/app/gosvc", "golang.org/x/net/html.Parse"),
    ("/app/server:::global_fn", "/app/server", "::global_fn"),
    ("/app/server:imgproc::*", "/app/server", "imgproc::*"),
])
def test_the_binary_is_split_from_a_symbol_that_holds_double_colons(text: str, binary: str, symbol: str) -> None:
    spec = ProbeSpec.parse(text)
    assert (spec.binary, spec.symbol) == (binary, symbol)
    target = target_of_probe_flag(text)
    assert (target.binary, target.symbols) == (binary, [symbol])


def test_a_path_holding_a_colon_is_split_after_the_file_that_exists(tmp_path: Path) -> None:
    odd = tmp_path / "srv:blue" / "server"
    odd.parent.mkdir()
    odd.write_bytes(b"")
    spec = ProbeSpec.parse(f"{odd}:ns::handle")
    assert (spec.binary, spec.symbol) == (str(odd), "ns::handle")


@pytest.mark.parametrize("text", ["malloc", "/app/server::parse", ":malloc", "c:"])
def test_a_flag_without_a_binary_and_a_symbol_is_refused_by_name(text: str) -> None:
    with pytest.raises(ConfigError, match="--probe"):
        ProbeSpec.parse(text)
