/* Records shared by the Python-function program (bpf/pyfunc.bpf.c) and the agent
 * (agent/pywire.py, checked against this header by tests/agent/test_pywire.py). */
#ifndef RUNTIME_SIGNALS_PYFUNC_H
#define RUNTIME_SIGNALS_PYFUNC_H

#include "pyframes.h"

/* Python frames kept per thread and per record: the innermost PYFUNC_MAX_FRAMES of the
 * thread's Python stack (deeper stacks are marked PYFUNC_FLAG_TRUNCATED). A power of two. */
#ifndef PYFUNC_MAX_FRAMES
#define PYFUNC_MAX_FRAMES 64
#endif

/* Python-function probes one program serves (each is tested on every matching call). */
#ifndef PYFUNC_MAX_PROBES
#define PYFUNC_MAX_PROBES 8
#endif

/* Marker sites (function__entry / function__return of each interpreter file). */
#ifndef PYFUNC_MAX_SITES
#define PYFUNC_MAX_SITES 64
#endif

#define PYFUNC_NAME_BYTES 64   /* a function name (co_name), NUL included */
#define PYFUNC_FILE_BYTES 256  /* a source path (co_filename), NUL included; a power of two (masks) */

/* Per-probe counters: counters[probe * PYFUNC_COUNTER_MAX + index]. Every call that
 * passes a probe's filter is counted in CALLS and then in exactly one of SENT,
 * DROP_RINGBUF_FULL, DROP_RATE_LIMITED or DROP_DISABLED. */
enum pyfunc_counter {
    PYFUNC_COUNTER_CALLS = 0,
    PYFUNC_COUNTER_SENT,
    PYFUNC_COUNTER_DROP_RINGBUF_FULL,
    PYFUNC_COUNTER_DROP_RATE_LIMITED,
    PYFUNC_COUNTER_DROP_DISABLED,   /* the probe was switched off (detached by the budget) */
    PYFUNC_COUNTER_MAX,
};

/* Program-wide counters (global_counters[index]), not per probe. */
enum pyfunc_global_counter {
    PYFUNC_GLOBAL_ENTRIES = 0,      /* function__entry markers that ran the program */
    PYFUNC_GLOBAL_RETURNS,          /* function__return markers that ran the program */
    PYFUNC_GLOBAL_UNMATCHED_RETURN, /* a return that did not match the thread's top frame */
    PYFUNC_GLOBAL_NO_STORAGE,       /* the thread's stack could not be allocated: not tracked */
    PYFUNC_GLOBAL_MAX,
};

/* Bits of py_call_event.flags. */
#define PYFUNC_FLAG_TRUNCATED (1U << 0) /* outer Python frames are missing: the thread's stack
                                           began before tracking, or was deeper than kept */
#define PYFUNC_FLAG_UNSURE    (1U << 1) /* a return did not match the shadow stack once:
                                           the frames may be wrong, not only missing */
#define PYFUNC_FLAG_WALKED    (1U << 2) /* a return site's record whose frames were walked
                                           from the thread state (the process is described
                                           in python_processes): innermost first */

/* USDT argument locations, as the marker's note describes them ("8@%rbp", "-4@8(%rsp)"). */
enum usdt_arg_kind {
    USDT_ARG_NONE = 0,
    USDT_ARG_REG = 1,   /* the value is in a register */
    USDT_ARG_MEM = 2,   /* the value is at register + displacement */
    USDT_ARG_CONST = 3, /* the value is the constant itself */
};

struct usdt_arg {
    __s64 value;        /* the constant (CONST) or the displacement (MEM) */
    __u32 reg_offset;   /* offset of the register in struct pt_regs */
    __u8 kind;          /* enum usdt_arg_kind */
    __u8 size_bytes;    /* 1, 2, 4 or 8 */
    __u8 is_signed;     /* sign-extend a narrower value */
    __u8 reserved;      /* explicit padding, always 0 */
};

#define PYFUNC_SITE_ENTRY 1
#define PYFUNC_SITE_RETURN 2

/* Bits of pyfunc_site.flags. Where function__entry fires for every call (CPython up to
 * 3.10), entry sites fire the probes and both sites keep the shadow stack. CPython 3.11
 * fires function__entry only when C code starts a frame (generators, coroutines): Python
 * to Python calls are inlined in the evaluation loop and skip the marker, while
 * function__return still fires for every frame. There the return site fires the probes
 * and no stack is kept: a record holds the returning function alone, marked truncated. */
#define PYFUNC_SITE_FIRES_PROBES (1U << 0)
#define PYFUNC_SITE_TRACKS_STACK (1U << 1)

/* One marker site, by its BPF cookie: arguments are (filename, funcname, lineno) for
 * both function__entry and function__return in CPython 3.x. */
struct pyfunc_site {
    struct usdt_arg args[3];
    __u32 kind;         /* PYFUNC_SITE_ENTRY or PYFUNC_SITE_RETURN */
    __u32 flags;        /* PYFUNC_SITE_* */
};

/* A probe's filter and limits. An empty funcname or file suffix matches any. */
struct pyfunc_probe {
    char funcname[PYFUNC_NAME_BYTES];     /* co_name, exactly */
    char file_suffix[PYFUNC_FILE_BYTES];  /* the end of co_filename, e.g. "/json/decoder.py" */
    __u64 rate_interval_ns; /* token bucket: one call per interval per CPU; 0 = no limit */
    __u64 rate_burst_ns;    /* bucket depth, as time credit */
    __u32 funcname_len;     /* bytes of funcname, NUL excluded; 0 = any function */
    __u32 file_suffix_len;  /* bytes of file_suffix, NUL excluded; 0 = any file */
    __u32 enabled;          /* 0: a filtered call is counted as DROP_DISABLED, not recorded */
    __u32 active;           /* 1: this slot holds a probe */
};

/* One Python frame: the code's strings by address (the agent reads them from the
 * process once per address) and the first line the marker reported. */
struct py_frame {
    __u64 filename_ptr;     /* UTF-8 of co_filename, in the process */
    __u64 funcname_ptr;     /* UTF-8 of co_name, in the process */
    __u32 lineno;           /* the marker's line: the function's first line at entry */
    __u32 reserved;         /* explicit padding, always 0 */
};

/* The Python stack of one thread, pushed at function__entry and popped at
 * function__return (task-local storage: freed with the thread). */
struct thread_stack {
    __u32 depth;            /* frames on the thread's stack since tracking began */
    __u32 valid_from;       /* frames below this depth were overwritten (deeper than kept) */
    __u32 flags;            /* PYFUNC_FLAG_* that every record of this thread carries */
    __u32 initialized;      /* 0 until the first marker of this thread set flags */
    struct py_frame frames[PYFUNC_MAX_FRAMES]; /* frame at depth d is in slot d & (MAX - 1) */
};

/* One call of a probed Python function. */
struct py_call_event {
    __u64 boot_ns;          /* bpf_ktime_get_boot_ns() of the call */
    __u64 cgroup_id;        /* cgroup v2 id of the caller */
    __u32 pid;              /* what Linux calls tgid */
    __u32 tid;              /* what Linux calls pid */
    __u32 probe_index;      /* the probe whose filter matched */
    __u32 frame_count;      /* valid entries of frames[] */
    __u32 flags;            /* PYFUNC_FLAG_* */
    __u32 lineno;           /* the marker's line: the function's first line at entry, the
                               returning line at return */
    char funcname[PYFUNC_NAME_BYTES];  /* the called function's co_name, copied at the call */
    char filename[PYFUNC_FILE_BYTES];  /* its co_filename, copied at the call */
    /* Outermost first; the last is the probed function itself (alone at a return site). */
    struct py_frame frames[PYFUNC_MAX_FRAMES];
};

#endif
