/* The walk of a CPython thread's frames, shared by calltrace.bpf.c and pyfunc.bpf.c (BPF
 * code only; the structs it reads are in pyframes.h). */
#ifndef RUNTIME_SIGNALS_PYTHREAD_BPF_H
#define RUNTIME_SIGNALS_PYTHREAD_BPF_H

#include "pyframes.h"

/* PyASCIIObject.state: compact and ascii bits (the same in 3.8 to 3.13). */
#define PY_STRING_COMPACT (1U << 5)
#define PY_STRING_ASCII (1U << 6)

/* What python_current_frame returns when it finds no frame to walk. */
#define PY_THREAD_NOT_FOUND 1
#define PY_THREAD_READ_FAULT 2

static __always_inline int read_word(u64 *out, u64 address)
{
    return bpf_probe_read_user(out, sizeof(*out), (void *)address);
}

/* The thread state whose thread is tid, or 0. Only the main interpreter is searched. */
static __always_inline u64 python_thread_state(struct python_process *py, u32 tid)
{
    u64 interpreter = 0, tstate = 0;
    if (read_word(&interpreter, py->runtime + py->interpreters_head) != 0 || interpreter == 0)
        return 0;
    if (read_word(&tstate, interpreter + py->threads_head) != 0)
        return 0;
    for (u32 i = 0; i < PY_MAX_THREADS; i++) {
        if (tstate == 0)
            return 0;
        u64 id = 0;
        if (read_word(&id, tstate + py->thread_tid) != 0)
            return 0;
        u32 thread = (u32)id;
        /* Before 3.11 a thread state knows its pthread_t, the address of glibc's struct
         * pthread, which holds the tid. */
        if (py->pthread_tid >= 0 && bpf_probe_read_user(&thread, sizeof(thread), (void *)(id + py->pthread_tid)) != 0)
            thread = 0;
        if (thread == tid)
            return tstate;
        if (read_word(&tstate, tstate + py->thread_next) != 0)
            return 0;
    }
    return 0;
}

/* The innermost frame of thread tid (0 when it runs none) in *frame; 0, or why not. Never
 * another thread's: a layout that does not fit finds no thread whose tid matches. */
static __always_inline int python_current_frame(struct python_process *py, u32 tid, u64 *frame)
{
    u64 tstate = python_thread_state(py, tid);
    if (tstate == 0)
        return PY_THREAD_NOT_FOUND;
    *frame = 0;
    if (read_word(frame, tstate + py->thread_frame) != 0 ||
        (py->cframe_frame >= 0 && *frame != 0 && read_word(frame, *frame + py->cframe_frame) != 0))
        return PY_THREAD_READ_FAULT;
    return 0;
}

struct py_frame_bytes {
    u8 bytes[PY_FRAME_WINDOW];
};

/* The fields of one frame the walks use. */
struct py_frame_fields {
    u64 code;
    u64 previous;
    u8 owner;       /* 0 where frames have none */
    u8 is_entry;    /* 0 where frames have none */
};

/* Reads frame's fields with one read of PY_FRAME_WINDOW bytes (into window, a map value:
 * its bytes may be indexed by a variable). 0, or a read fault. */
static __always_inline int read_python_frame(struct python_process *py, struct py_frame_bytes *window, u64 frame,
                                             struct py_frame_fields *fields)
{
    if (bpf_probe_read_user(window->bytes, PY_FRAME_WINDOW, (void *)(frame + py->frame_window)) != 0)
        return -1;
    /* Where each field lies in the window: 8-byte fields 8-aligned (pyframes.h). */
    u32 at_code = (py->frame_code - py->frame_window) & (PY_FRAME_WINDOW - 8);
    u32 at_previous = (py->frame_previous - py->frame_window) & (PY_FRAME_WINDOW - 8);
    u32 at_owner = (py->frame_owner - py->frame_window) & (PY_FRAME_WINDOW - 1);
    u32 at_is_entry = (py->frame_is_entry - py->frame_window) & (PY_FRAME_WINDOW - 1);
    fields->code = *(u64 *)&window->bytes[at_code];
    fields->previous = *(u64 *)&window->bytes[at_previous];
    fields->owner = py->frame_owner >= 0 ? window->bytes[at_owner] : 0;
    fields->is_entry = py->frame_is_entry >= 0 ? window->bytes[at_is_entry] : 0;
    return 0;
}

/* The same fields with one small read each: for a program without a per-run scratch
 * buffer (a preempting run on the same CPU would share a per-CPU one). */
static __always_inline int read_python_frame_fields(struct python_process *py, u64 frame,
                                                    struct py_frame_fields *fields)
{
    fields->owner = 0;
    fields->is_entry = 0;
    if (read_word(&fields->code, frame + py->frame_code) != 0 ||
        read_word(&fields->previous, frame + py->frame_previous) != 0)
        return -1;
    if (py->frame_owner >= 0 && bpf_probe_read_user(&fields->owner, 1, (void *)(frame + py->frame_owner)) != 0)
        return -1;
    return 0;
}

/* The address of a str object's bytes when it is compact ASCII (NUL-terminated UTF-8 the
 * agent can read as a C string), else 0. */
static __always_inline u64 python_ascii_data(struct python_process *py, u64 object)
{
    u32 state = 0;
    if (object == 0 || bpf_probe_read_user(&state, sizeof(state), (void *)(object + py->string_state)) != 0 ||
        !(state & PY_STRING_COMPACT) || !(state & PY_STRING_ASCII))
        return 0;
    return object + py->string_data;
}

#endif
