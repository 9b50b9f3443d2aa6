/* Uprobe handler for runtime-signals: one ring-buffer record per probed call.
 * Loaded by agent/probes.py with bcc; configured through -D cflags only. */
#include <uapi/linux/ptrace.h>
#include "calltrace.h"

/* Ring buffer size in pages (a power of two), set by the agent. */
#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 1024
#endif

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_PERCPU_ARRAY(counters, u64, COUNTER_MAX);

static __always_inline void count(u32 index)
{
    u64 *value = counters.lookup(&index);
    if (value)
        (*value)++;
}

int on_call(struct pt_regs *ctx)
{
    count(COUNTER_CALLS);

    struct call_event *event = events.ringbuf_reserve(sizeof(struct call_event));
    if (!event) {
        count(COUNTER_DROP_RINGBUF_FULL);
        return 0;
    }

    u64 pid_tgid = bpf_get_current_pid_tgid();
    event->boot_ns = bpf_ktime_get_boot_ns();
    event->cgroup_id = bpf_get_current_cgroup_id();
    event->function_address = PT_REGS_IP(ctx);
    event->pid = pid_tgid >> 32;
    event->tid = (u32)pid_tgid;
    event->flags = 0;

    /* At a function's first instruction the callee has not pushed its frame yet, so a
     * frame-pointer walk starts at the caller's frame and skips the caller itself. The
     * return address into the caller sits at the top of the stack: read it, and let
     * bpf_get_stack fill the rest from slot 1 (its own slot 1 copy of ip is replaced). */
    long stack_bytes = bpf_get_stack(ctx, &event->frames[1],
                                     (CALLTRACE_MAX_FRAMES - 1) * sizeof(u64),
                                     BPF_F_USER_STACK);
    event->frames[0] = PT_REGS_IP(ctx);
    u64 return_address = 0;
    bpf_probe_read_user(&return_address, sizeof(return_address), (void *)PT_REGS_SP(ctx));
    if (stack_bytes < 0) {
        count(COUNTER_STACK_ERROR);
        event->flags |= CALL_FLAG_STACK_ERROR;
        event->frames[1] = return_address;
        event->frame_count = return_address ? 2 : 1;
    } else {
        event->frames[1] = return_address;
        u32 walked = (u32)stack_bytes / sizeof(u64);
        /* walked counts slot 1 (the ip copy, now the return address) and what follows */
        event->frame_count = walked + 1;
        if (walked >= CALLTRACE_MAX_FRAMES - 1)
            event->flags |= CALL_FLAG_STACK_TRUNCATED;
        if (walked == 0)
            event->frame_count = return_address ? 2 : 1;
    }
    events.ringbuf_submit(event, 0);
    return 0;
}
