/* Where a CPython interpreter keeps a thread's frames, as the agent describes it per
 * process (agent/pyframes.py, from agent/pylayouts.py): shared by the native probes'
 * program (calltrace.bpf.c: Python frames in native paths) and the Python-function
 * probes' program (pyfunc.bpf.c: the Python path of a probed Python call). The walk
 * itself is in pythread.bpf.h. */
#ifndef RUNTIME_SIGNALS_PYFRAMES_H
#define RUNTIME_SIGNALS_PYFRAMES_H

/* Thread states searched for the caller's. */
#ifndef PY_MAX_THREADS
#define PY_MAX_THREADS 32
#endif

/* How a frame chain tells where each evaluation loop call begins. */
enum py_entry_rule {
    PY_ENTRY_EVERY_FRAME = 0,   /* <= 3.10: every frame is its own call */
    PY_ENTRY_IS_ENTRY = 1,      /* 3.11: the outermost frame of a call has is_entry set */
    PY_ENTRY_SHIM = 2,          /* 3.12+: a frame owned by the C stack follows each call's frames */
};
#define PY_OWNED_BY_CSTACK 3

/* Where one interpreter keeps what the walk reads: written per process by the agent from
 * agent/pylayouts.py, the interpreter file's symbols and libc's own description of
 * struct pthread. */
struct python_process {
    __u64 runtime;              /* address of _PyRuntime in the process */
    __u64 code_type;            /* address of PyCode_Type: what a code object's ob_type holds */
    __u32 interpreters_head;    /* _PyRuntimeState.interpreters.head */
    __u32 threads_head;         /* PyInterpreterState: its first thread state */
    __u32 thread_next;          /* PyThreadState.next */
    __u32 thread_tid;           /* PyThreadState: native_thread_id (3.11+) or thread_id (a pthread_t) */
    __s32 pthread_tid;          /* -1: thread_tid holds the tid; else the tid's offset in struct pthread */
    __u32 thread_frame;         /* PyThreadState: frame (<= 3.10), cframe (3.11, 3.12), current_frame (3.13) */
    __s32 cframe_frame;         /* -1: thread_frame holds the frame; else current_frame's offset in the cframe */
    __u32 frame_previous;       /* f_back / previous */
    __u32 frame_code;           /* f_code / f_executable */
    __s32 frame_owner;          /* -1 where frames have no owner (<= 3.10) */
    __s32 frame_is_entry;       /* -1 where frames have no is_entry (all but 3.11) */
    __u32 entry_rule;           /* enum py_entry_rule */
    __u32 code_filename;        /* PyCodeObject.co_filename */
    __u32 code_name;            /* the name recorded: co_qualname (3.11+) in native paths, co_name
                                   in Python-function records (the markers' name) */
    __u32 code_firstlineno;
    __u32 string_data;          /* sizeof(PyASCIIObject): a compact ASCII string's bytes follow */
    __u32 string_state;         /* offset of PyASCIIObject.state */
    __u32 frame_window;         /* the frame fields above lie in [frame_window, frame_window +
                                   PY_FRAME_WINDOW): one read per frame fetches them all */
};

/* Bytes of a frame read at once (a power of two; 8-byte fields lie 8-aligned in it). */
#define PY_FRAME_WINDOW 128

#endif
