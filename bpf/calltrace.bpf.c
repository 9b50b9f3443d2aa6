/* Uprobe handler for runtime-signals: counts every probed call, folds identical calls
 * (same probe, process and stack) into one record in the kernel, and rate-limits the
 * stack capture per probe. Loaded by agent/probes.py with bcc; sizes come from -D
 * cflags, behaviour from the probe_config map (no C assembled in Python strings).
 *
 * Exact counts. Every call ends in exactly one counter besides COUNTER_CALLS (see
 * calltrace.h). Folded calls live in one of two dedup maps; dedup_active[0] names the
 * one the program writes. The agent swaps it and only then reads and empties the other:
 * an update of an ARRAY_OF_MAPS element returns to user space after synchronize_rcu()
 * (kernel/bpf/syscall.c, maybe_wait_bpf_programs), and uprobe programs run inside an RCU
 * read-side section with preemption off, so once the swap returns no program still holds
 * a pointer into the old map and every increment made to it is visible. Nothing is read
 * while it can still change, and nothing is deleted while it can still be incremented:
 * no increment can be lost between a read and a delete. */
#include <uapi/linux/ptrace.h>
#include "calltrace.h"

/* Ring buffer size in pages (a power of two), set by the agent. */
#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 1024
#endif

/* Distinct (probe, process, stack) keys one dedup map holds per flush interval. A call
 * whose key does not fit goes through the ring buffer instead (COUNTER_DEDUP_FULL). */
#ifndef DEDUP_ENTRIES
#define DEDUP_ENTRIES 16384
#endif

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_PERCPU_ARRAY(counters, u64, CALLTRACE_MAX_PROBES * COUNTER_MAX);
BPF_ARRAY(probe_config, struct probe_config, CALLTRACE_MAX_PROBES);
BPF_PERCPU_ARRAY(rate_state, struct rate_state, CALLTRACE_MAX_PROBES);
/* Records under construction: 600 bytes do not fit the 512-byte BPF stack. Uprobe
 * programs run with migration disabled but, on preemptible kernels, not with preemption
 * disabled: another task on the same CPU may run the program while this run is
 * preempted. Each run takes the slot of its nesting depth on its CPU. */
#define SCRATCH_SLOTS 4
BPF_PERCPU_ARRAY(scratch, struct call_event, SCRATCH_SLOTS);
BPF_PERCPU_ARRAY(nesting, u64, 1);
/* Allocated on insert: memory follows the keys actually seen in an interval. */
BPF_F_TABLE("hash", struct dedup_key, struct call_event, dedup_a, DEDUP_ENTRIES, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", struct dedup_key, struct call_event, dedup_b, DEDUP_ENTRIES, BPF_F_NO_PREALLOC);
BPF_ARRAY_OF_MAPS(dedup_active, "dedup_a", 1);
/* The agent's flush clock: [0] the flush interval in ns, [1] CLOCK_REALTIME - CLOCK_BOOTTIME
 * in ns as the agent converts times. A call's flush epoch is (boot_ns + [1]) / [0]: the
 * wall-clock interval it falls in, aligned to the Unix epoch. It is part of the dedup key,
 * so a folded record never holds calls of two epochs, and so never spans the boundary of
 * a window whose length is a multiple of the interval, whenever the agent swaps the maps.
 * [0] == 0 (not set yet) puts every call in epoch 0. */
BPF_ARRAY(flush_clock, u64, 2);

/* A 64-bit odd constant (2^64 / golden ratio) spreads consecutive epochs over the key's
 * hash: distinct epochs of one stack never collide unless their hashes do. */
#define EPOCH_MIX 0x9E3779B97F4A7C15ULL

static __always_inline u64 flush_epoch(u64 boot_ns)
{
    u32 interval_key = 0, offset_key = 1;
    u64 *interval_ns = flush_clock.lookup(&interval_key);
    u64 *offset_ns = flush_clock.lookup(&offset_key);
    if (!interval_ns || !offset_ns || !*interval_ns)
        return 0;
    return (boot_ns + *offset_ns) / *interval_ns;
}

static __always_inline void count(u32 probe, u32 index)
{
    u32 slot = probe * COUNTER_MAX + index;
    u64 *value = counters.lookup(&slot);
    /* Atomic although per-CPU: a preempting run on the same CPU may add at the same time. */
    if (value)
        __sync_fetch_and_add(value, 1);
}

/* Token bucket per probe and CPU (no cross-CPU contention on a hot function). A preempted
 * run may race another on the same CPU here: the limit is then approximate, never the
 * counts (each call still lands in exactly one counter). */
static __always_inline bool over_rate(u32 probe, struct probe_config *config, u64 now)
{
    if (!config->rate_interval_ns)
        return false;
    struct rate_state *state = rate_state.lookup(&probe);
    if (!state)
        return false;
    u64 credit = state->credit_ns + (now - state->last_ns);
    state->last_ns = now;
    if (credit > config->rate_burst_ns)
        credit = config->rate_burst_ns;
    if (credit < config->rate_interval_ns) {
        state->credit_ns = credit;
        return true;
    }
    state->credit_ns = credit - config->rate_interval_ns;
    return false;
}

/* Multiply-xorshift over the frames; frame_count is mixed in so a prefix differs.
 * The empty asm hides the index from the compiler so it keeps the bound check and
 * reads one frame per iteration: an unrolled, pointer-stepping loop is what the
 * verifier cannot prove in bounds. */
static __always_inline u64 hash_frames(struct call_event *event)
{
    u32 frame_count = event->frame_count;
    u64 hash = 0x9e3779b97f4a7c15ULL ^ frame_count;
    for (u32 i = 0; i < CALLTRACE_MAX_FRAMES; i++) {
        if (i >= frame_count)
            break;
        u32 index = i;
        asm volatile("" : "+r"(index));
        if (index >= CALLTRACE_MAX_FRAMES)
            break;
        hash = (hash ^ event->frames[index]) * 0xff51afd7ed558ccdULL;
        hash ^= hash >> 32;
    }
    return hash;
}

/* Did bpf_get_stack already put the caller's return address after ip?
 *
 * At a function's first instruction the callee has not pushed its frame yet, so a walk of
 * the frame pointers starts at the caller's frame and skips the caller itself: its return
 * address is at the top of the stack, ret = *(sp). Older kernels (Debian's 6.1) return
 * K = [ip, F...], F being the frame-pointer chain's return addresses (F[0] = *(rbp + 8));
 * newer ones, for a uprobe on `push %rbp` or `endbr64` (the x86 unwinder's uprobe-at-entry
 * fix), return K = [ip, ret, F...]. A probe on any other first instruction gets the old
 * form on every kernel, so this is decided per call, not per kernel.
 *
 * The rule: let run_k be how many of K[1], K[2], ... in a row equal ret, and run_f how
 * many of F[0], F[1], ... do. Old form: K[1..] is F, so run_k == run_f (or less, when
 * the buffer cut K). New form: K[1..] is ret then F, so run_k == run_f + 1. Hence the
 * kernel added the caller exactly when run_f < run_k. In the usual call, ret != F[0]:
 * run_k is 0 (old) or 1 (new) and reading F[0] decides. A function that recurses from one
 * call site has ret == F[0] == F[1] ...: comparing K[1] with ret and K[2] with F[0] alone
 * would take an old kernel's three-deep recursion for the new form and lose a level; the
 * run lengths tell them apart, at the cost of walking run_k frames, only then. When the
 * buffer cut a run of ret, both forms give the same frames (all ret), so either answer
 * yields the same record and the same dedup key.
 *
 * One loop walks both runs in step (a loop nested in another is more paths than the
 * verifier follows): at step j, K[j + 1] != ret means run_k == j <= run_f, the old form;
 * else F[j] != ret means run_f == j < run_k, the new form. K sits in frames[1..walked],
 * K[i] in frames[i + 1]; the empty asm keeps the index a bounded register the verifier
 * can check (see hash_frames). */
static __always_inline bool kernel_added_caller(struct pt_regs *ctx, struct call_event *event, u32 walked,
                                                u64 return_address)
{
    u64 frame[2]; /* at each frame pointer: { next frame pointer, return address } */
    u64 fp = PT_REGS_FP(ctx);
    for (u32 j = 0; j < CALLTRACE_MAX_FRAMES - 2; j++) {
        if (j + 1 >= walked)
            return false; /* K ended: run_k == j */
        u32 index = j + 2;
        asm volatile("" : "+r"(index));
        if (index >= CALLTRACE_MAX_FRAMES)
            return false;
        if (event->frames[index] != return_address)
            return false; /* run_k == j */
        if (bpf_probe_read_user(frame, sizeof(frame), (void *)fp) != 0 || frame[1] != return_address)
            return true; /* run_f == j < run_k */
        fp = frame[0];
    }
    return false; /* the buffer is full of ret: both forms give the same frames */
}

/* Removes frames[1] (K's ip copy, replaced by ret when the kernel added it too): moves
 * frames[2..walked] one slot down. */
static __always_inline void drop_slot_one(struct call_event *event, u32 walked)
{
    for (u32 i = 1; i < CALLTRACE_MAX_FRAMES - 1; i++) {
        if (i >= walked)
            break;
        u32 index = i;
        asm volatile("" : "+r"(index));
        if (index >= CALLTRACE_MAX_FRAMES - 1)
            break;
        event->frames[index] = event->frames[index + 1];
    }
}

static __always_inline void capture(struct pt_regs *ctx, struct call_event *event, u32 probe, u64 now)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    event->boot_ns = now;
    event->last_boot_ns = now;
    event->count = 1;
    event->cgroup_id = bpf_get_current_cgroup_id();
    event->function_address = PT_REGS_IP(ctx);
    event->pid = pid_tgid >> 32;
    event->tid = (u32)pid_tgid;
    event->flags = 0;
    event->probe_index = probe;
    event->reserved = 0;

    /* The kernel's walk K goes from slot 1, so that slot 1 (K's copy of ip) can take the
     * return address into the caller, ret = *(sp), when the kernel left it out (see
     * kernel_added_caller), and be dropped when it did not. */
    long stack_bytes = bpf_get_stack(ctx, &event->frames[1],
                                     (CALLTRACE_MAX_FRAMES - 1) * sizeof(u64),
                                     BPF_F_USER_STACK);
    event->frames[0] = PT_REGS_IP(ctx);
    u64 return_address = 0;
    bpf_probe_read_user(&return_address, sizeof(return_address), (void *)PT_REGS_SP(ctx));
    if (stack_bytes < 0) {
        count(probe, COUNTER_STACK_ERROR);
        event->flags |= CALL_FLAG_STACK_ERROR;
        event->frames[1] = return_address;
        event->frame_count = return_address ? 2 : 1;
    } else {
        u32 walked = (u32)stack_bytes / sizeof(u64); /* K's length, ip included */
        if (walked >= CALLTRACE_MAX_FRAMES - 1)
            event->flags |= CALL_FLAG_STACK_TRUNCATED;
        if (return_address && walked >= 2 && kernel_added_caller(ctx, event, walked, return_address)) {
            drop_slot_one(event, walked);
            event->frame_count = walked;
            event->flags |= CALL_FLAG_KERNEL_ADDED_CALLER;
        } else {
            event->frames[1] = return_address;
            event->frame_count = walked > 0 ? walked + 1 : (return_address ? 2 : 1);
        }
    }
    event->stack_hash = hash_frames(event);
}

/* Adds one call to an existing dedup entry. The count is atomic (several CPUs fold into
 * the same entry); last_boot_ns is a plain store, so under contention it may be a few
 * nanoseconds older than the true last call, which no consumer can tell apart. */
static __always_inline void fold(struct call_event *entry, u64 now)
{
    __sync_fetch_and_add(&entry->count, 1);
    entry->last_boot_ns = now;
}

static __always_inline void handle(struct pt_regs *ctx, u32 probe, u32 slot)
{
    struct probe_config *config = probe_config.lookup(&probe);
    if (!config) {
        count(probe, COUNTER_DROP_NESTED); /* cannot happen (probe < CALLTRACE_MAX_PROBES) */
        return;
    }
    u64 now = bpf_ktime_get_boot_ns();
    if (over_rate(probe, config, now)) {
        count(probe, COUNTER_DROP_RATE_LIMITED);
        return;
    }

    struct call_event *event = scratch.lookup(&slot);
    if (!event) {
        count(probe, COUNTER_DROP_NESTED);
        return;
    }
    capture(ctx, event, probe, now);
    u32 zero = 0;

    if (config->dedup) {
        void *dedup = dedup_active.lookup(&zero);
        if (dedup) {
            struct dedup_key key = {.stack_hash = event->stack_hash ^ (flush_epoch(now) * EPOCH_MIX),
                                    .pid = event->pid, .probe_index = probe};
            struct call_event *entry = bpf_map_lookup_elem(dedup, &key);
            if (entry) {
                fold(entry, now);
                count(probe, COUNTER_FOLDED);
                return;
            }
            /* First call of this key in this interval: the new entry carries it (count 1). */
            long err = bpf_map_update_elem(dedup, &key, event, BPF_NOEXIST);
            if (err == 0) {
                count(probe, COUNTER_FOLDED);
                return;
            }
            if (err == -EEXIST) { /* another CPU inserted it first */
                entry = bpf_map_lookup_elem(dedup, &key);
                if (entry) {
                    fold(entry, now);
                    count(probe, COUNTER_FOLDED);
                    return;
                }
            }
            count(probe, COUNTER_DEDUP_FULL);
        }
    }

    if (events.ringbuf_output(event, sizeof(*event), 0) == 0)
        count(probe, COUNTER_SENT);
    else
        count(probe, COUNTER_DROP_RINGBUF_FULL);
}

int on_call(struct pt_regs *ctx)
{
    u32 probe = (u32)bpf_get_attach_cookie(ctx);
    if (probe >= CALLTRACE_MAX_PROBES)
        return 0;
    count(probe, COUNTER_CALLS);
    u32 zero = 0;
    u64 *depth = nesting.lookup(&zero);
    if (!depth) { /* cannot happen (index 0 of an array); keeps the counter invariant */
        count(probe, COUNTER_DROP_NESTED);
        return 0;
    }
    u64 slot = __sync_fetch_and_add(depth, 1);
    if (slot < SCRATCH_SLOTS)
        handle(ctx, probe, (u32)slot);
    else
        count(probe, COUNTER_DROP_NESTED);
    __sync_fetch_and_add(depth, -1);
    return 0;
}
