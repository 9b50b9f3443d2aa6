"""Run inside gdb (`gdb -batch -nx -x gdb_backtraces.py`): the ground truth of the
unwinding tests. Stops on every entry of one function and records gdb's backtrace of it
as physical frames (inlined frames folded into the frame that holds their code), each
as (mapped file, file offset) read from the inferior's /proc/<pid>/maps, innermost
first: frame 0 the function's entry, then each caller's return address, the same terms
the agent reports in. gdb unwinds with the binaries' CFI (and its own analysis where
there is none).

Environment: TRUTH_PROGRAM, TRUTH_ARGS (JSON list), TRUTH_SYMBOL (an expression whose
address is the function's entry, e.g. "deflate"), TRUTH_OUT (a JSON file written at exit),
TRUTH_AFTER_LOAD (optional: a regular expression naming the library that defines the
symbol, for a stripped program without `main`; the breakpoint is set once it is loaded) and
TRUTH_START (optional: where to stop first instead of `main`; Go's is `main.main`) and
TRUTH_SOFTWARE_BREAK (optional, non-empty: an int3 breakpoint instead of a hardware one);
TRUTH_LIBRARY and TRUTH_OFFSET (optional: the function is the one at that file offset of
that library, rather than what the name TRUTH_SYMBOL evaluates to).
"""

import json
import os

import gdb  # type: ignore[import-not-found]  # gdb's own module: this file runs only inside gdb


def _mappings(pid):
    found = []
    with open(f"/proc/{pid}/maps") as handle:
        for line in handle:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and "x" in parts[1] and parts[5].strip().startswith("/"):
                start, end = (int(v, 16) for v in parts[0].split("-"))
                found.append((start, end, int(parts[2], 16), parts[5].strip()))
    return found


def _locate(mappings, address):
    for start, end, offset, path in mappings:
        if start <= address < end:
            return [path, address - start + offset]
    return ["", address]


def _backtrace():
    pid = gdb.selected_inferior().pid
    mappings = _mappings(pid)
    frames = []
    frame = gdb.newest_frame()
    while frame is not None:
        # pc 0: gdb's outermost marker past the last frame (Go's goexit), not a frame.
        if frame.type() != gdb.INLINE_FRAME and frame.pc() != 0:
            frames.append(_locate(mappings, frame.pc()))
        try:
            frame = frame.older()
        except gdb.error:
            break
    return frames


def main():
    gdb.execute("set pagination off")
    gdb.execute("set confirm off")
    gdb.execute("set print thread-events off")
    gdb.execute("set backtrace past-main on")  # up to _start, as the agent walks
    gdb.execute("set backtrace past-entry on")
    # Go preempts goroutines with SIGURG: a stop for it is not a call.
    gdb.execute("handle SIGURG nostop noprint pass")
    gdb.execute(f"file {os.environ['TRUTH_PROGRAM']}")
    args = " ".join(json.loads(os.environ["TRUTH_ARGS"]))
    after_load = os.environ.get("TRUTH_AFTER_LOAD")
    start = os.environ.get("TRUTH_START") or "main"
    gdb.execute(f"catch load {after_load}" if after_load else f"break {start}")
    gdb.execute(f"run {args}")
    gdb.execute("delete")
    library, offset = os.environ.get("TRUTH_LIBRARY"), os.environ.get("TRUTH_OFFSET")
    if library and offset:
        # The function's entry in that library's mapping: by name, gdb may answer with the
        # program's PLT stub of the same name.
        entry = next(start + int(offset) - file_offset
                     for start, end, file_offset, path in _mappings(gdb.selected_inferior().pid)
                     if os.path.realpath(path) == os.path.realpath(library)
                     and file_offset <= int(offset) < file_offset + end - start)
    else:
        gdb.execute("set language c")  # the cast below is C, whatever the program's language
        entry = int(gdb.parse_and_eval(f"(long)&{os.environ['TRUTH_SYMBOL']}"))
        gdb.execute("set language auto")
    # A hardware breakpoint: a uprobe anyone holds on this file (an int3 of its own) would
    # take the trap of a software breakpoint at the same address and hide the call.
    # A program of the test's own (TRUTH_SOFTWARE_BREAK) is probed by no one else; Go moves a
    # goroutine between threads, and a hardware breakpoint is set in the threads of the moment.
    gdb.execute(f"{'break' if os.environ.get('TRUTH_SOFTWARE_BREAK') else 'hbreak'} *{entry}")
    backtraces = []
    while True:
        try:
            gdb.execute("continue", to_string=True)
        except gdb.error:
            break
        if not gdb.selected_inferior().pid:
            break
        if gdb.selected_frame().pc() == entry:
            backtraces.append(_backtrace())
    with open(os.environ["TRUTH_OUT"], "w") as handle:
        json.dump(backtraces, handle)


main()
