"""Where CPython 3.8–3.13 keep what a walk of a thread's Python frames reads: the design
data for Python frames in native paths (issue 14 point 1, docs/managed-runtimes.md), kept
apart from any BPF program so the stack walker can take it as read-only data.

Byte offsets for x86-64 release builds (no Py_DEBUG, no free threading), read with gdb from
the DWARF of the pyenv builds of 3.8.18, 3.9.18, 3.10.13, 3.11.7, 3.12.1 and 3.13.0;
tests/agent/test_pylayouts.py reads them again from every such build it finds and fails on
any difference. CPython does not promise these layouts within a minor version; they have
held across the patch releases checked here, and 3.13 publishes them itself
(`_Py_DebugOffsets` at the start of `_PyRuntime`), which a walker should prefer.

The walk, per version:
  - thread state: 3.8–3.11 `_PyRuntime.gilstate.tstate_current` (the thread holding the GIL,
    which is the thread running Python code when a probe fires in it); 3.12–3.13: the list
    `_PyRuntime.interpreters.head -> threads.head -> next`, matched on `native_thread_id`
    (3.12 keeps the current thread state only in a C thread-local);
  - innermost frame: 3.8–3.10 `tstate->frame` (a PyFrameObject); 3.11–3.12
    `tstate->cframe->current_frame`; 3.13 `tstate->current_frame` (_PyInterpreterFrame);
  - per frame: its code object, its caller (`f_back` / `previous`) and the instruction
    (`f_lasti` index / `prev_instr` / `instr_ptr` pointer) that, with the code object's line
    table, gives the line; 3.11+ frames owned by the C stack (`owner` == 3 in 3.12+) are shims;
  - per code object, read once by the agent: `co_filename`, `co_name`, `co_qualname` (3.11+),
    `co_firstlineno`; a compact ASCII string's bytes start ascii_object_bytes past it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CPythonLayout:
    """Byte offsets of one CPython minor version (None: the field does not exist there)."""

    version: tuple[int, int]
    runtime_tstate_current: int | None     # _PyRuntimeState.gilstate.tstate_current
    runtime_interpreters_head: int         # _PyRuntimeState.interpreters.head
    interp_threads_head: int               # PyInterpreterState.tstate_head (<= 3.10) / threads.head
    thread_next: int                       # PyThreadState.next
    thread_native_thread_id: int | None    # PyThreadState.native_thread_id (3.11+)
    thread_frame: int | None               # PyThreadState.frame (<= 3.10)
    thread_cframe: int | None              # PyThreadState.cframe (3.11, 3.12; 3.10 has one, unused here)
    cframe_current_frame: int | None       # _PyCFrame.current_frame (3.11, 3.12)
    thread_current_frame: int | None       # PyThreadState.current_frame (3.13)
    frame_previous: int                    # PyFrameObject.f_back (<= 3.10) / _PyInterpreterFrame.previous
    frame_code: int                        # f_code (<= 3.12) / f_executable (3.13)
    frame_instruction: int                 # f_lasti (int, <= 3.10) / prev_instr / instr_ptr (pointers)
    frame_owner: int | None                # _PyInterpreterFrame.owner (3.11+)
    code_filename: int
    code_name: int
    code_qualname: int | None              # 3.11+
    code_firstlineno: int
    ascii_object_bytes: int                # sizeof(PyASCIIObject): a compact ASCII string's data follows
    debug_offsets: int | None = None       # _PyRuntime.debug_offsets (3.13+)
    thread_id: int | None = None           # PyThreadState.thread_id: the thread's pthread_t
    frame_is_entry: int | None = None      # _PyInterpreterFrame.is_entry (3.11 only)


LAYOUTS: dict[tuple[int, int], CPythonLayout] = {
    (3, 8): CPythonLayout((3, 8), runtime_tstate_current=1368, runtime_interpreters_head=32,
                          interp_threads_head=8, thread_next=8, thread_native_thread_id=None, thread_frame=24,
                          thread_cframe=None, cframe_current_frame=None, thread_current_frame=None,
                          frame_previous=24, frame_code=32, frame_instruction=104, frame_owner=None,
                          code_filename=104, code_name=112, code_qualname=None, code_firstlineno=40,
                          ascii_object_bytes=48, thread_id=176),
    (3, 9): CPythonLayout((3, 9), runtime_tstate_current=568, runtime_interpreters_head=32,
                          interp_threads_head=8, thread_next=8, thread_native_thread_id=None, thread_frame=24,
                          thread_cframe=None, cframe_current_frame=None, thread_current_frame=None,
                          frame_previous=24, frame_code=32, frame_instruction=104, frame_owner=None,
                          code_filename=104, code_name=112, code_qualname=None, code_firstlineno=40,
                          ascii_object_bytes=48, thread_id=176),
    (3, 10): CPythonLayout((3, 10), runtime_tstate_current=568, runtime_interpreters_head=32,
                           interp_threads_head=8, thread_next=8, thread_native_thread_id=None, thread_frame=24,
                           thread_cframe=48, cframe_current_frame=None, thread_current_frame=None,
                           frame_previous=24, frame_code=32, frame_instruction=96, frame_owner=None,
                           code_filename=104, code_name=112, code_qualname=None, code_firstlineno=40,
                           ascii_object_bytes=48, thread_id=176),
    (3, 11): CPythonLayout((3, 11), runtime_tstate_current=576, runtime_interpreters_head=40,
                           interp_threads_head=16, thread_next=8, thread_native_thread_id=160, thread_frame=None,
                           thread_cframe=56, cframe_current_frame=8, thread_current_frame=None,
                           frame_previous=48, frame_code=32, frame_instruction=56, frame_owner=69,
                           code_filename=112, code_name=120, code_qualname=128, code_firstlineno=72,
                           ascii_object_bytes=48, thread_id=152, frame_is_entry=68),
    (3, 12): CPythonLayout((3, 12), runtime_tstate_current=None, runtime_interpreters_head=40,
                           interp_threads_head=72, thread_next=8, thread_native_thread_id=144, thread_frame=None,
                           thread_cframe=56, cframe_current_frame=0, thread_current_frame=None,
                           frame_previous=8, frame_code=0, frame_instruction=56, frame_owner=70,
                           code_filename=112, code_name=120, code_qualname=128, code_firstlineno=68,
                           ascii_object_bytes=40, thread_id=136),
    (3, 13): CPythonLayout((3, 13), runtime_tstate_current=None, runtime_interpreters_head=632,
                           interp_threads_head=7344, thread_next=8, thread_native_thread_id=160, thread_frame=None,
                           thread_cframe=None, cframe_current_frame=None, thread_current_frame=72,
                           frame_previous=8, frame_code=0, frame_instruction=56, frame_owner=70,
                           code_filename=112, code_name=120, code_qualname=128, code_firstlineno=68,
                           ascii_object_bytes=40, debug_offsets=0, thread_id=152),
}


def layout(version: tuple[int, int]) -> CPythonLayout | None:
    """The layout of a CPython minor version, None for one not described here."""
    return LAYOUTS.get(version)
