/* Records shared by the BPF program and the agent. The single source of truth for
 * the kernel/user wire formats: the agent's ctypes views (agent/wire.py) are checked
 * against this header by tests/agent/test_wire.py. */
#ifndef RUNTIME_SIGNALS_CALLTRACE_H
#define RUNTIME_SIGNALS_CALLTRACE_H

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
    COUNTER_STACK_ERROR,        /* (not a drop) bpf_get_stack failed; the record still has ip and caller */
    COUNTER_MAX,
};

/* Bits of call_event.flags. */
#define CALL_FLAG_STACK_TRUNCATED (1U << 0) /* frames filled the buffer: deeper callers are cut */
#define CALL_FLAG_STACK_ERROR     (1U << 1) /* bpf_get_stack returned an error */
/* The kernel's walk already held the caller's return address (newer kernels read *(sp)
 * themselves for a uprobe on `push %rbp` or `endbr64`): its copy was dropped, so frames[]
 * is the same as an older kernel's. Informational: the frames need no further fixing. */
#define CALL_FLAG_KERNEL_ADDED_CALLER (1U << 2)

/* One call, or `count` identical calls folded together. The same layout is a ring-buffer
 * record (count == 1) and a dedup map value (count >= 1). Fields are ordered largest
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
    __u32 reserved;         /* explicit padding, always 0 */
    /* User stack, innermost first: frames[0] is the probed function's entry, frames[1]
     * the return address into its caller, then the frame-pointer chain, whichever way
     * the kernel's unwinder treats a function entry (see CALL_FLAG_KERNEL_ADDED_CALLER). */
    __u64 frames[CALLTRACE_MAX_FRAMES];
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
    __u32 reserved;         /* explicit padding, always 0 */
};

/* Per-probe, per-CPU token bucket state (owned by the program). */
struct rate_state {
    __u64 credit_ns;        /* time credit left; a call costs rate_interval_ns */
    __u64 last_ns;          /* when credit was last topped up */
};

#endif
