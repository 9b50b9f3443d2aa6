"""Python source files seen in probed calls: which module a file is, which definition a
line belongs to (its qualified name), and which package shipped it.

A file is read through the process's root (/proc/<pid>/root), relative names through its
working directory. Parsed files are cached by file identity, at most max_files of them
(a dropped file is parsed again when met again; `counts` says how often).
"""

from __future__ import annotations

import ast
import re
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path

from runtime_signals.agent.procmaps import FileIdentity, file_identity
from runtime_signals.agent.purl import PurlResolver

# Directories of sys.path whose layout names modules: below them, a/b/c.py is a.b.c.
_IMPORT_ROOTS = re.compile(r"/(?:site-packages|dist-packages|lib/python\d\.\d+(?:/lib-dynload)?)(?=/)")
_STDLIB = re.compile(r"/lib/python\d\.\d+/(?!.*(?:site|dist)-packages/)")
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


def module_candidates(path: str) -> tuple[str, ...]:
    """Dotted module names a source path can stand for. Below site-packages, dist-packages
    or lib/pythonX.Y exactly one; elsewhere (an application's own tree, whose sys.path
    entry the agent cannot see) every dotted tail: /srv/app/handlers.py is "handlers" or
    "app.handlers" or "srv.app.handlers"."""
    if not path.endswith(".py"):
        return ()
    stem = path[:-3]
    stem = stem.removesuffix("/__init__")
    roots = list(_IMPORT_ROOTS.finditer(stem))
    if roots:
        return (stem[roots[-1].end() + 1:].replace("/", "."),)
    parts = [p for p in stem.split("/") if p]
    return tuple(".".join(parts[i:]) for i in range(len(parts) - 1, -1, -1))


@dataclass(frozen=True, slots=True)
class Definition:
    first_line: int   # its first decorator's line when decorated (as co_firstlineno)
    last_line: int
    name: str         # co_name: the def's name, "<lambda>"
    qualname: str     # co_qualname


class SourceIndex:
    """The function and class definitions of one source file, by line."""

    def __init__(self, definitions: list[Definition]) -> None:
        self.definitions = definitions

    @classmethod
    def parse(cls, text: str) -> SourceIndex:
        tree = ast.parse(text)
        found: list[Definition] = []

        def visit(node: ast.AST, prefix: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, _DEFINITIONS):
                    name = "<lambda>" if isinstance(child, ast.Lambda) else child.name
                    qualname = f"{prefix}{name}"
                    decorators = getattr(child, "decorator_list", [])
                    first = min([child.lineno] + [d.lineno for d in decorators])
                    found.append(Definition(first, child.end_lineno or child.lineno, name, qualname))
                    inner = f"{qualname}." if isinstance(child, ast.ClassDef) else f"{qualname}.<locals>."
                    visit(child, inner)
                else:
                    visit(child, prefix)

        visit(tree, "")
        return cls(found)

    def qualname_at(self, line: int, co_name: str) -> str | None:
        """The qualified name of the innermost definition named co_name that holds line;
        "<module>" for module code; None when no definition fits (the file changed since
        the process loaded it, or the code was not compiled from this file)."""
        found = self.definition_at(line, co_name)
        return found.qualname if found is not None else None

    def definition_at(self, line: int, co_name: str) -> Definition | None:
        """The innermost definition named co_name that holds line (module code: the whole
        file, from line 1), or None."""
        if co_name == "<module>":
            return Definition(1, max((d.last_line for d in self.definitions), default=1), "<module>", "<module>")
        best: Definition | None = None
        for definition in self.definitions:
            holds = definition.name == co_name and definition.first_line <= line <= definition.last_line
            if holds and (best is None or definition.first_line >= best.first_line):
                best = definition
        return best


@dataclass(frozen=True, slots=True)
class SourceFile:
    path: str              # as the process names it (absolute)
    index: SourceIndex | None  # None when unreadable or not Python source
    purl: str | None


class PythonSources:
    """Source files by (process root, path): parsed once per file identity, bounded."""

    def __init__(self, purls: PurlResolver, max_files: int = 4096) -> None:
        self._purls = purls
        self._max_files = max_files
        self._files: OrderedDict[FileIdentity, SourceFile] = OrderedDict()
        self.counts: Counter[str] = Counter()

    def source(self, proc: Path, filename: str, interpreter: str | None = None) -> SourceFile:
        """The file a code object names, for the process at /proc/<pid> (its root and cwd).
        interpreter: the interpreter file as the process sees it, whose package a standard
        library file belongs to when no package database names the file itself."""
        path = filename
        if not path.startswith("/"):
            try:
                path = str(Path((proc / "cwd").readlink()) / filename)
            except OSError:
                self.counts["unreadable"] += 1
                return SourceFile(filename, None, None)
        root = proc / "root"
        host_path = root / path.lstrip("/")
        identity = file_identity(host_path)
        if identity is None:
            self.counts["unreadable"] += 1
            return SourceFile(path, None, None)
        cached = self._files.get(identity)
        if cached is not None:
            self._files.move_to_end(identity)
            return cached
        self.counts["parsed"] += 1
        try:
            index: SourceIndex | None = SourceIndex.parse(host_path.read_text(errors="replace"))
        except (OSError, SyntaxError, ValueError, RecursionError):
            self.counts["unparsable"] += 1
            index = None
        purl = self._purls.purl(root, path)
        if purl is None and interpreter is not None and _STDLIB.search(path):
            purl = self._purls.purl(root, interpreter)
        source = SourceFile(path, index, purl)
        self._files[identity] = source
        if len(self._files) > self._max_files:
            self._files.popitem(last=False)
            self.counts["evicted"] += 1
        return source
