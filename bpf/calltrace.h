/* Records shared by the BPF program and the agent. The single source of truth for
 * the kernel/user wire formats: the agent's ctypes views (agent/wire.py) are checked
 * against this header by tests/agent/test_wire.py. */
#ifndef RUNTIME_SIGNALS_CALLTRACE_H
#define RUNTIME_SIGNALS_CALLTRACE_H

#include "pyframes.h"

/* Frames kept per call. 64 covers deep native stacks; the verifier bounds
 * bpf_get_stack by this constant. */
#ifndef CALLTRACE_MAX_FRAMES
#define CALLTRACE_MAX_FRAMES 64
#endif

/* Probes one loaded program can serve: the probe index (the uprobe's BPF cookie)
 * indexes the per-probe arrays below. */
#ifndef CALLTRACE_MAX_PROBES
#define CALLTRACE_MAX_PROBES 1024
#endif

/* Indexes of the per-probe, per-CPU counters: counters[probe * COUNTER_MAX + index].
 * Every call is counted in COUNTER_CALLS and then in exactly one of FOLDED, SENT,
 * DROP_RINGBUF_FULL, DROP_RATE_LIMITED or DROP_NESTED, so
 *   calls == folded + sent + drop_ringbuf_full + drop_rate_limited + drop_nested. */
enum calltrace_counter {
    COUNTER_CALLS = 0,          /* every uprobe hit that ran the program */
    COUNTER_FOLDED,             /* calls added to a dedup entry (the agent flushes them) */
    COUNTER_SENT,               /* calls sent one by one through the ring buffer */
    COUNTER_DROP_RINGBUF_FULL,  /* the ring buffer had no room: the agent did not drain in time */
    COUNTER_DROP_RATE_LIMITED,  /* over the probe's rate limit: counted, stack not captured */
    COUNTER_DROP_NESTED,        /* more preempted runs on one CPU than scratch slots */
    COUNTER_DEDUP_FULL,         /* (not a drop) the dedup map was full, the call went to the ring buffer */
    COUNTER_STACK_ERROR,        /* (not a drop) the walk ended on a stack read fault (STACK_END_READ_FAULT) */
    COUNTER_MAX,
};

/* Bits of call_event.flags. */
#define CALL_FLAG_STACK_TRUNCATED (1U << 0) /* the walk stopped before the outermost frame: see end_reason */
#define CALL_FLAG_STACK_ERROR     (1U << 1) /* the walk ended on a read fault (end_reason STACK_END_READ_FAULT) */
/* The process had no mapping table in proc_mappings yet (the agent writes it when it first
 * meets the process), or the probed function lies in code mapped after it was written (a
 * dlopen): the walk followed frame pointers and could not check its return addresses
 * against the process's executable mappings. The agent checks them against
 * /proc/<pid>/maps and cuts the path at the first one that lies in none. */
#define CALL_FLAG_UNCHECKED       (1U << 2)
/* At least one frame was walked by frame pointers because its binary had no rules loaded
 * (not built yet, did not fit, or an address its CFI does not cover). */
#define CALL_FLAG_FRAME_POINTERS  (1U << 3)

/* Why a walk ended: call_event.end_reason. Anything but STACK_END_COMPLETE sets
 * CALL_FLAG_STACK_TRUNCATED. A frame is emitted only once it is known to lie inside an
 * executable, file-backed mapping of the process, so a walk never emits a junk word. */
enum stack_end {
    STACK_END_COMPLETE = 0,     /* the outermost frame: return address undefined in its CFI, or 0 */
    STACK_END_DEPTH_LIMIT,      /* frames[] is full: deeper callers are cut */
    STACK_END_NO_UNWIND_INFO,   /* a frame without rules whose frame-pointer step led outside the code */
    STACK_END_NOT_EXECUTABLE,   /* a return address (found by CFI) in no executable file mapping: JIT, anonymous */
    STACK_END_READ_FAULT,       /* the stack word the rules point at could not be read */
    STACK_END_MAX,
};

/* --- Python frames ---------------------------------------------------------------------
 * In a process running a CPython the agent described (python_processes), each call also
 * records the thread's Python frames: found from _PyRuntime through the interpreter's
 * thread states (the one whose thread is the caller) and its chain of frames. The agent
 * splices them into the native path in place of the evaluation loop's frames. */

/* Python frames kept per call; at most 32 (py_entries is a 32-bit mask). */
#ifndef CALLTRACE_MAX_PY_FRAMES
#define CALLTRACE_MAX_PY_FRAMES 32
#endif
/* Code objects whose names the program keeps (an LRU map the agent reads). */
#ifndef CALLTRACE_PY_CODES
#define CALLTRACE_PY_CODES 8192
#endif
#define PY_NAME_BYTES 128   /* co_qualname (co_name before 3.11), NUL included */
#define PY_FILE_BYTES 256   /* co_filename, NUL included */

/* Bits of call_event.py_flags. */
#define PY_FLAG_WALKED     (1U << 0) /* the thread's state was found and its frames walked */
#define PY_FLAG_TRUNCATED  (1U << 1) /* py_frames[] is full: outer Python frames are cut */
#define PY_FLAG_NO_THREAD  (1U << 2) /* a Python process, but no thread state is the caller's */
#define PY_FLAG_READ_FAULT (1U << 3) /* a thread state or frame could not be read: frames cut */

/* One Python frame: its code object and the name object it had then (a freed code
 * object's address reused by another code object has another name). */
struct py_frame_ref {
    __u64 code;
    __u64 name;
};

/* Key and value of py_codes: what a code object says of itself, copied when the program
 * first meets it, so the names outlive the process. */
struct py_code_key {
    __u64 code;
    __u64 name;
    __u32 pid;
    __u32 reserved;             /* explicit padding, always 0 */
};

#define PY_CODE_NAME_UNREAD (1U << 0) /* not a compact ASCII string, or a read fault */
#define PY_CODE_FILE_UNREAD (1U << 1)
#define PY_CODE_NOT_CODE    (1U << 2) /* its ob_type is not PyCode_Type: the layout does not fit */

struct py_code {
    __u32 firstlineno;
    __u32 flags;                /* PY_CODE_* */
    char name[PY_NAME_BYTES];
    char filename[PY_FILE_BYTES];
};

/* One call, or `count` identical calls folded together. The same layout is a ring-buffer
 * record (count == 1; it ends after its py_frame_count Python frames) and a dedup map
 * value (count >= 1). Fields are ordered largest
 * first so the struct has no implicit padding. */
struct call_event {
    __u64 boot_ns;          /* bpf_ktime_get_boot_ns() of the first call: CLOCK_BOOTTIME */
    __u64 last_boot_ns;     /* of the last call folded in; == boot_ns when count == 1 */
    __u64 count;            /* calls this record stands for */
    __u64 stack_hash;       /* hash of frames[0..frame_count): with pid and probe, the dedup key */
    __u64 cgroup_id;        /* cgroup v2 id (inode of the cgroup directory) of the first caller */
    __u64 function_address; /* ip at the probe: the probed function's entry in this process */
    __u32 pid;              /* what Linux calls tgid: the process */
    __u32 tid;              /* what Linux calls pid: the thread (of the first call) */
    __u32 frame_count;      /* valid entries in frames[] */
    __u32 flags;            /* CALL_FLAG_* */
    __u32 probe_index;      /* the probe that fired: its BPF cookie, an index into probe_config */
    __u32 end_reason;       /* enum stack_end: why the walk stopped */
    /* User stack, innermost first: frames[0] is the probed function's entry, frames[1]
     * the return address into its caller, then each caller's return address, walked by
     * the binaries' unwind rules where loaded and by frame pointers elsewhere. */
    __u64 frames[CALLTRACE_MAX_FRAMES];
    /* The Python frames the thread was running, when the process runs a CPython the agent
     * described in python_processes (agent/pyframes.py), innermost first. */
    __u32 py_frame_count;   /* valid entries of py_frames[] */
    __u32 py_flags;         /* PY_FLAG_* */
    __u32 py_entries;       /* bit i: py_frames[i] is the outermost frame of its evaluation
                               loop call (one _PyEval_EvalFrameDefault frame on the C stack) */
    __u32 py_reserved;      /* explicit padding, always 0 */
    struct py_frame_ref py_frames[CALLTRACE_MAX_PY_FRAMES];
};

/* Key of the dedup maps: calls of one probe in one process with one stack in one flush
 * epoch (stack_hash is the stack's hash mixed with the epoch, see flush_clock in
 * calltrace.bpf.c; the value's call_event.stack_hash stays the stack's). Two distinct
 * stacks collide only if their 64-bit hashes do; the count stays exact either way,
 * only its attribution to a path would be shared. */
struct dedup_key {
    __u64 stack_hash;
    __u32 pid;
    __u32 probe_index;
};

/* Per-probe settings written by the agent before it attaches the probe. */
struct probe_config {
    __u64 rate_interval_ns; /* token bucket: one call per interval per CPU; 0 = no limit */
    __u64 rate_burst_ns;    /* bucket depth, as time credit (burst calls * interval) */
    __u32 dedup;            /* 1: fold identical calls in the kernel; 0: one record per call */
    __u32 retired;          /* 1: let go, its uprobe still being unregistered: calls are ignored */
};

/* Per-probe, per-CPU token bucket state (owned by the program). */
struct rate_state {
    __u64 credit_ns;        /* time credit left; a call costs rate_interval_ns */
    __u64 last_ns;          /* when credit was last topped up */
};

/* --- Unwinding without frame pointers -----------------------------------------------
 * The agent turns each binary's CFI (.eh_frame, .debug_frame) into rows, one per address
 * range with a distinct rule for the CFA and the caller's rbp (agent/unwind.py), loads
 * them once per binary digest into unwind_rows, and gives each process a sorted table of
 * its executable file mappings, each naming its binary's rules. */

/* Executable mappings one process table holds; a process with more keeps the first
 * ones by address and the agent counts it. A power of two (the search masks the index). */
#ifndef CALLTRACE_MAX_MAPPINGS
#define CALLTRACE_MAX_MAPPINGS 256
#endif

/* Rows all binaries' rules share (a power of two), and how many binaries they can hold. */
#ifndef CALLTRACE_UNWIND_ROWS
#define CALLTRACE_UNWIND_ROWS (1 << 21)
#endif
#ifndef CALLTRACE_UNWIND_TABLES
#define CALLTRACE_UNWIND_TABLES 4096
#endif

/* Processes with a mapping table at once. */
#ifndef CALLTRACE_MAX_PROCESSES
#define CALLTRACE_MAX_PROCESSES 4096
#endif

/* How the CFA (the caller's stack pointer after the return) is found. */
enum unwind_cfa {
    UNWIND_CFA_NONE = 0,        /* no CFI covers this address: walk by frame pointers */
    UNWIND_CFA_RSP,             /* CFA = rsp + cfa_offset */
    UNWIND_CFA_RBP,             /* CFA = rbp + cfa_offset */
    UNWIND_CFA_UNSUPPORTED,     /* a rule this walker cannot express (expression, other register) */
    UNWIND_CFA_END,             /* return address undefined: the outermost frame (_start, thread start) */
};

/* Where the caller's rbp is. The return address is always at CFA - 8 (rows whose CFI says
 * otherwise are UNWIND_CFA_UNSUPPORTED). */
enum unwind_rbp {
    UNWIND_RBP_SAME = 0,        /* unchanged by this frame */
    UNWIND_RBP_AT_CFA,          /* saved at CFA + rbp_offset */
    UNWIND_RBP_UNKNOWN,         /* in a place the walker cannot read: rbp is lost from here on */
};

/* One rule, from address up to the next row's address (a binary's rows are sorted). */
struct unwind_row {
    __u32 address;              /* in the binary's ELF virtual address space */
    __s32 cfa_offset;
    __s16 rbp_offset;           /* UNWIND_RBP_AT_CFA: offset from the CFA */
    __u8 cfa_register;          /* enum unwind_cfa */
    __u8 rbp_rule;              /* enum unwind_rbp */
};

/* One binary's rows: unwind_rows[first_row .. first_row + row_count). Id 0 is never used.
 * Then, when index_count > 0, a block index in the next index_count rows (only their address
 * field is used): entry b holds the index (from first_row) of the row covering address
 * b << index_shift, so the search for an address in block b runs between entries b and
 * b + 1, a few rows, instead of over the whole table. */
struct unwind_table {
    __u32 first_row;
    __u32 row_count;
    __u32 index_shift;
    __u32 index_count;
};

/* One executable, file-backed mapping of a process. */
struct exec_mapping {
    __u64 start;                /* first address */
    __u64 end;                  /* one past the last */
    __u64 bias;                 /* address - bias = the address in the binary's ELF virtual address space */
    __u32 table_id;             /* its binary's rules in unwind_tables; 0: none (frame pointers) */
    __u32 reserved;             /* explicit padding, always 0 */
};

/* Value of proc_mappings, keyed by pid (what Linux calls tgid). */
struct process_mappings {
    __u32 count;                /* valid entries of mappings[], sorted by start, disjoint */
    __u32 reserved;             /* explicit padding, always 0 */
    struct exec_mapping mappings[CALLTRACE_MAX_MAPPINGS];
};

#endif
