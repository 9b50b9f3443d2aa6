/* Records shared by the BPF program and the agent. The single source of truth for
 * the ring-buffer wire format: the agent derives its view from this struct (bcc reads
 * it from the compiled program) and tests/agent/test_wire.py checks the layout. */
#ifndef RUNTIME_SIGNALS_CALLTRACE_H
#define RUNTIME_SIGNALS_CALLTRACE_H

/* Frames kept per call. 64 covers deep native stacks; the verifier bounds
 * bpf_get_stack by this constant. */
#ifndef CALLTRACE_MAX_FRAMES
#define CALLTRACE_MAX_FRAMES 64
#endif

/* Indexes of the per-CPU counters in the `counters` map. */
enum calltrace_counter {
    COUNTER_CALLS = 0,          /* every uprobe hit, whether or not it reached user space */
    COUNTER_DROP_RINGBUF_FULL,  /* bpf_ringbuf_reserve failed: the agent did not drain in time */
    COUNTER_STACK_ERROR,        /* bpf_get_stack failed; the event still carries the probed ip */
    COUNTER_MAX,
};

/* Bits of call_event.flags. */
#define CALL_FLAG_STACK_TRUNCATED (1U << 0) /* frames filled the buffer: deeper callers are cut */
#define CALL_FLAG_STACK_ERROR     (1U << 1) /* bpf_get_stack returned an error */

/* One observed call, bottom half written by the uprobe handler. Fields are ordered
 * largest first so the struct has no implicit padding. */
struct call_event {
    __u64 boot_ns;          /* bpf_ktime_get_boot_ns(): CLOCK_BOOTTIME, survives suspend */
    __u64 cgroup_id;        /* cgroup v2 id (inode of the cgroup directory) of the caller */
    __u64 function_address; /* ip at the probe: the probed function's entry in this process */
    __u32 pid;              /* what Linux calls tgid: the process */
    __u32 tid;              /* what Linux calls pid: the thread */
    __u32 frame_count;      /* valid entries in frames[] */
    __u32 flags;            /* CALL_FLAG_* */
    /* User stack, innermost first: frames[0] is the probed function's entry, frames[1]
     * the return address into its caller, then the frame-pointer chain. */
    __u64 frames[CALLTRACE_MAX_FRAMES];
};

#endif
