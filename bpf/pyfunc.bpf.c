/* Probes on Python functions, from CPython's USDT markers function__entry and
 * function__return (builds configured --with-dtrace, such as Debian's python3).
 *
 * Why markers: they hand over (co_filename, co_name, line) of the function the
 * interpreter enters or leaves, without reading interpreter structures whose layout
 * changes with every CPython version. Where function__entry fires for every call (up to
 * 3.10), each thread's Python stack is rebuilt from the entry/return pairs in task-local
 * storage (freed with the thread) and a probed function's path is that stack at its
 * entry; frames entered before tracking began are unknown, so threads of processes that
 * ran Python before the markers were attached (preexisting_pids) carry
 * PYFUNC_FLAG_TRUNCATED, as do stacks deeper than PYFUNC_MAX_FRAMES. CPython 3.11 skips
 * function__entry for Python-to-Python calls: there the probes fire at function__return
 * and a record holds the function alone (see PYFUNC_SITE_* in pyfunc.h).
 *
 * The markers only fire while their semaphores are non-zero; the kernel raises them in
 * every process mapping the file when the uprobe is defined with a reference counter
 * (tracefs "path:offset(semaphore)"), so running processes need no restart. While they
 * are raised, every Python call in those processes pays for both markers: see
 * docs/managed-runtimes.md for the measured cost.
 *
 * Argument locations come from the marker's note (agent/usdt.py), one pyfunc_site per
 * marker, selected by the uprobe's BPF cookie; nothing is compiled per binary. */
#include <uapi/linux/ptrace.h>
#include "pyfunc.h"
#include "pythread.bpf.h"

#if PYFUNC_MAX_FRAMES & (PYFUNC_MAX_FRAMES - 1)
#error "PYFUNC_MAX_FRAMES must be a power of two: slots are indexed by depth & (MAX - 1), which the verifier can bound"
#endif

#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 256
#endif

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_ARRAY(sites, struct pyfunc_site, PYFUNC_MAX_SITES);
BPF_ARRAY(probes, struct pyfunc_probe, PYFUNC_MAX_PROBES);
BPF_PERCPU_ARRAY(counters, u64, PYFUNC_MAX_PROBES * PYFUNC_COUNTER_MAX);
BPF_PERCPU_ARRAY(global_counters, u64, PYFUNC_GLOBAL_MAX);
struct rate_state {
    u64 credit_ns;          /* time credit left; a call costs rate_interval_ns */
    u64 last_ns;            /* when credit was last topped up */
};
BPF_PERCPU_ARRAY(rate_state, struct rate_state, PYFUNC_MAX_PROBES);
/* Processes that ran Python before tracking began (written by the agent; bounded: the
 * agent lists at most this many and says so when there are more). */
BPF_HASH(preexisting_pids, u32, u8, 65536);
BPF_TASK_STORAGE(thread_stacks, struct thread_stack);
/* Processes whose interpreter the agent described (agent/pyframes.py): a return site's
 * record gets the thread's Python path from its frames. */
BPF_F_TABLE("hash", u32, struct python_process, python_processes, 65536, BPF_F_NO_PREALLOC);
BPF_PROG_ARRAY(return_walker, 1);

static __always_inline void count(u32 probe, u32 index)
{
    u32 slot = probe * PYFUNC_COUNTER_MAX + index;
    u64 *value = counters.lookup(&slot);
    if (value)
        __sync_fetch_and_add(value, 1);
}

static __always_inline void count_global(u32 index)
{
    u64 *value = global_counters.lookup(&index);
    if (value)
        __sync_fetch_and_add(value, 1);
}

/* One USDT argument, as libbpf's usdt.bpf.h reads them: a register is read out of the
 * pt_regs the uprobe saved (its offset comes from user space, so it is read with
 * bpf_probe_read_kernel rather than a constant-offset ctx access). */
static __always_inline u64 read_arg(struct pt_regs *ctx, struct usdt_arg *arg)
{
    u64 value = 0;
    if (arg->kind == USDT_ARG_CONST)
        return (u64)arg->value;
    if (arg->reg_offset > sizeof(struct pt_regs) - sizeof(u64))
        return 0;
    bpf_probe_read_kernel(&value, sizeof(value), (void *)ctx + arg->reg_offset);
    if (arg->kind == USDT_ARG_MEM) {
        u64 address = value + arg->value;
        value = 0;
        bpf_probe_read_user(&value, sizeof(value), (void *)address);
    }
    /* Keep the low size_bytes bytes, sign-extended when the note says so. */
    u32 shift = (8 - (arg->size_bytes & 7)) * 8;
    if (arg->size_bytes >= 8 || arg->size_bytes == 0)
        return value;
    value <<= shift;
    if (arg->is_signed)
        return (u64)((s64)value >> shift);
    return value >> shift;
}

static __always_inline bool over_rate(u32 probe, struct pyfunc_probe *config, u64 now)
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

static __always_inline struct thread_stack *thread_stack(void)
{
    struct task_struct *task = bpf_get_current_task_btf();
    struct thread_stack *stack = thread_stacks.task_storage_get(task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (!stack) {
        count_global(PYFUNC_GLOBAL_NO_STORAGE);
        return 0;
    }
    if (!stack->initialized) {
        u32 pid = bpf_get_current_pid_tgid() >> 32;
        if (preexisting_pids.lookup(&pid))
            stack->flags |= PYFUNC_FLAG_TRUNCATED;
        stack->initialized = 1;
    }
    return stack;
}

static __always_inline bool name_matches(struct pyfunc_probe *probe, const char *name, long name_bytes)
{
    if (probe->funcname_len == 0)
        return true;
    if (name_bytes - 1 != probe->funcname_len)
        return false;
    for (u32 i = 0; i < PYFUNC_NAME_BYTES; i++) {
        if (i >= probe->funcname_len)
            break;
        u32 at = i;
        asm volatile("" : "+r"(at)); /* keep a bounded register index (see bpf/calltrace.bpf.c) */
        at &= PYFUNC_NAME_BYTES - 1;
        if (name[at] != probe->funcname[at])
            return false;
    }
    return true;
}

static __always_inline bool file_matches(struct pyfunc_probe *probe, const char *file, long file_bytes)
{
    u32 suffix_len = probe->file_suffix_len;
    if (suffix_len == 0)
        return true;
    u32 length = file_bytes > 0 ? (u32)file_bytes - 1 : 0;
    if (length < suffix_len || suffix_len >= PYFUNC_FILE_BYTES)
        return false;
    u32 start = length - suffix_len;
    for (u32 i = 0; i < PYFUNC_FILE_BYTES; i++) {
        if (i >= suffix_len)
            break;
        /* The masks keep both indexes provably inside their buffers. */
        u32 at = start + i, in_suffix = i;
        asm volatile("" : "+r"(at), "+r"(in_suffix));
        if (file[at & (PYFUNC_FILE_BYTES - 1)] != probe->file_suffix[in_suffix & (PYFUNC_FILE_BYTES - 1)])
            return false;
    }
    return true;
}

/* The Python path of the returning function (a return site, 3.11+, where no shadow stack
 * is kept): walked from the thread state into the thread stack's slots, innermost first,
 * its first frame the marker's own; stack->depth frames, valid_from 0. Returns the
 * record's flags (PYFUNC_FLAG_WALKED, and TRUNCATED when cut), or 0 when the frames
 * cannot be walked or their innermost is not the function the marker reports: then the
 * record holds the function alone, as without a description. The count lives in the
 * stack, not a register, so the verifier prunes each step's states. */
static __always_inline u32 walk_path(struct python_process *py, struct thread_stack *stack, u64 file_ptr,
                                     u64 name_ptr, u32 lineno)
{
    u64 frame = 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    if (python_current_frame(py, tid, &frame) != 0 || frame == 0)
        return 0;
    u32 flags = PYFUNC_FLAG_WALKED;
    stack->depth = 0;
    stack->valid_from = 0;
    for (u32 step = 0; step < PYFUNC_MAX_FRAMES + 8; step++) {
        if (frame == 0)
            break;
        struct py_frame_fields fields;
        if (read_python_frame_fields(py, frame, &fields) != 0) {
            flags |= PYFUNC_FLAG_TRUNCATED;
            break;
        }
        if (!(py->entry_rule == PY_ENTRY_SHIM && fields.owner == PY_OWNED_BY_CSTACK)) {
            u32 kept = stack->depth;
            if (kept >= PYFUNC_MAX_FRAMES) {
                flags |= PYFUNC_FLAG_TRUNCATED;
                break;
            }
            u64 name = 0, file = 0, type = 0;
            u32 first_line = 0;
            /* A "code object" of another type: offsets that do not fit; no path rather than junk. */
            if (fields.code == 0 || read_word(&type, fields.code + 8) != 0 || type != py->code_type)
                return 0;
            if (read_word(&name, fields.code + py->code_name) != 0 ||
                read_word(&file, fields.code + py->code_filename) != 0 ||
                bpf_probe_read_user(&first_line, sizeof(first_line), (void *)(fields.code + py->code_firstlineno)) != 0) {
                flags |= PYFUNC_FLAG_TRUNCATED;
                break;
            }
            struct py_frame *slot = &stack->frames[kept & (PYFUNC_MAX_FRAMES - 1)];
            if (kept == 0) {
                if (python_ascii_data(py, name) != name_ptr)
                    return 0;
                slot->filename_ptr = file_ptr;
                slot->funcname_ptr = name_ptr;
                slot->lineno = lineno;
            } else {
                slot->filename_ptr = python_ascii_data(py, file);
                slot->funcname_ptr = python_ascii_data(py, name);
                slot->lineno = first_line;
            }
            slot->reserved = 0;
            stack->depth = kept + 1;
        }
        frame = fields.previous;
    }
    if (frame != 0)
        flags |= PYFUNC_FLAG_TRUNCATED;
    return stack->depth > 0 ? flags : 0;
}

static __always_inline void emit(struct thread_stack *stack, u32 probe_index, struct pyfunc_probe *probe,
                                 const char *name, const char *file, u64 file_ptr, u64 name_ptr, u32 lineno,
                                 bool tracks, bool walked, u32 walked_flags)
{
    count(probe_index, PYFUNC_COUNTER_CALLS);
    if (!probe->enabled) {
        count(probe_index, PYFUNC_COUNTER_DROP_DISABLED);
        return;
    }
    u64 now = bpf_ktime_get_boot_ns();
    if (over_rate(probe_index, probe, now)) {
        count(probe_index, PYFUNC_COUNTER_DROP_RATE_LIMITED);
        return;
    }
    struct py_call_event *event = events.ringbuf_reserve(sizeof(struct py_call_event));
    if (!event) {
        count(probe_index, PYFUNC_COUNTER_DROP_RINGBUF_FULL);
        return;
    }
    u64 pid_tgid = bpf_get_current_pid_tgid();
    event->boot_ns = now;
    event->cgroup_id = bpf_get_current_cgroup_id();
    event->pid = pid_tgid >> 32;
    event->tid = (u32)pid_tgid;
    event->probe_index = probe_index;
    event->lineno = lineno;
    event->flags = stack->flags;
    __builtin_memcpy(event->funcname, name, PYFUNC_NAME_BYTES);
    __builtin_memcpy(event->filename, file, PYFUNC_FILE_BYTES);
    if (walked) {
        /* The thread's frames, walked into its stack's slots for this return (innermost first). */
        event->flags = walked_flags;
    } else if (!tracks) {
        event->flags |= PYFUNC_FLAG_TRUNCATED;
        event->frames[0].filename_ptr = file_ptr;
        event->frames[0].funcname_ptr = name_ptr;
        event->frames[0].lineno = lineno;
        event->frames[0].reserved = 0;
        event->frame_count = 1;
        events.ringbuf_submit(event, 0);
        count(probe_index, PYFUNC_COUNTER_SENT);
        return;
    }
    u32 depth = stack->depth;
    u32 first = stack->valid_from;
    if (depth > PYFUNC_MAX_FRAMES && first < depth - PYFUNC_MAX_FRAMES)
        first = depth - PYFUNC_MAX_FRAMES;
    if (first > 0)
        event->flags |= PYFUNC_FLAG_TRUNCATED;
    u32 copied = 0;
    for (u32 i = 0; i < PYFUNC_MAX_FRAMES; i++) {
        u32 at = first + i;
        if (at >= depth)
            break;
        event->frames[i] = stack->frames[at & (PYFUNC_MAX_FRAMES - 1)];
        copied++;
    }
    event->frame_count = copied;
    events.ringbuf_submit(event, 0);
    count(probe_index, PYFUNC_COUNTER_SENT);
}

/* Pushes the entered function on the thread's shadow stack. */
static __always_inline void push(struct thread_stack *stack, u64 file_ptr, u64 name_ptr, u32 lineno)
{
    u32 depth = stack->depth;
    struct py_frame *slot = &stack->frames[depth & (PYFUNC_MAX_FRAMES - 1)];
    slot->filename_ptr = file_ptr;
    slot->funcname_ptr = name_ptr;
    slot->lineno = lineno;
    slot->reserved = 0;
    /* The slot just written held depth - MAX: that frame is gone from the copy. */
    if (depth >= PYFUNC_MAX_FRAMES && stack->valid_from <= depth - PYFUNC_MAX_FRAMES)
        stack->valid_from = depth - PYFUNC_MAX_FRAMES + 1;
    stack->depth = depth + 1;
}

/* Pops the returning function; a return that does not match the top frame marks the
 * thread's records unsure (the stack may be wrong, not only short). */
static __always_inline void pop(struct thread_stack *stack, u64 name_ptr)
{
    u32 depth = stack->depth;
    if (depth == 0) {
        /* A frame entered before tracking began returned: this thread's outer frames are unknown. */
        stack->flags |= PYFUNC_FLAG_TRUNCATED;
        return;
    }
    depth -= 1;
    if (depth >= stack->valid_from &&
        stack->frames[depth & (PYFUNC_MAX_FRAMES - 1)].funcname_ptr != name_ptr) {
        stack->flags |= PYFUNC_FLAG_UNSURE;
        count_global(PYFUNC_GLOBAL_UNMATCHED_RETURN);
    }
    stack->depth = depth;
    if (depth < stack->valid_from)
        stack->valid_from = depth;
}

/* Runs each probe's filter on the function at this site; emits a record per match, with
 * the thread's walked path when walked_flags is set (on_return_walked). */
static __always_inline void fire(struct thread_stack *stack, u64 file_ptr, u64 name_ptr, u32 lineno, bool tracks,
                                 u32 walked_flags)
{
    char name[PYFUNC_NAME_BYTES] = {};
    char file[PYFUNC_FILE_BYTES] = {};
    long name_bytes = -1, file_bytes = -1;
    /* Unrolled: the probe slots are few, and a rolled loop around a map lookup keyed by
     * its own counter is what the verifier takes for an infinite loop. */
#pragma unroll
    for (u32 i = 0; i < PYFUNC_MAX_PROBES; i++) {
        u32 index = i;
        struct pyfunc_probe *probe = probes.lookup(&index);
        if (!probe || !probe->active)
            continue;
        if (name_bytes < 0)
            name_bytes = bpf_probe_read_user_str(name, sizeof(name), (void *)name_ptr);
        if (!name_matches(probe, name, name_bytes))
            continue;
        if (file_bytes < 0)
            file_bytes = bpf_probe_read_user_str(file, sizeof(file), (void *)file_ptr);
        if (!file_matches(probe, file, file_bytes))
            continue;
        emit(stack, index, probe, name, file, file_ptr, name_ptr, lineno, tracks, walked_flags != 0, walked_flags);
    }
}

/* Whether some active probe's co_name filter takes the function (its file is checked when
 * the record is made): the walk of a return site is paid only then. */
static __always_inline bool some_probe_named(u64 name_ptr)
{
    char name[PYFUNC_NAME_BYTES] = {};
    long name_bytes = bpf_probe_read_user_str(name, sizeof(name), (void *)name_ptr);
#pragma unroll
    for (u32 i = 0; i < PYFUNC_MAX_PROBES; i++) {
        u32 index = i;
        struct pyfunc_probe *probe = probes.lookup(&index);
        if (probe && probe->active && name_matches(probe, name, name_bytes))
            return true;
    }
    return false;
}

/* A site's arguments (see pyfunc_site). */
struct marker_call {
    struct pyfunc_site *site;
    struct thread_stack *stack;
    u64 file_ptr;
    u64 name_ptr;
    u32 lineno;
};

static __always_inline bool read_marker(struct pt_regs *ctx, struct marker_call *call)
{
    u32 index = (u32)bpf_get_attach_cookie(ctx);
    call->site = sites.lookup(&index);
    if (!call->site)
        return false;
    call->stack = thread_stack();
    if (!call->stack)
        return false;
    call->file_ptr = read_arg(ctx, &call->site->args[0]);
    call->name_ptr = read_arg(ctx, &call->site->args[1]);
    call->lineno = (u32)read_arg(ctx, &call->site->args[2]);
    return true;
}

/* A return site of a described process without a shadow stack: the probes fire with the
 * thread's walked path. Tail-called from on_marker, so the walk has a verifier budget of
 * its own. */
int on_return_walked(struct pt_regs *ctx)
{
    struct marker_call call;
    if (!read_marker(ctx, &call))
        return 0;
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    struct python_process *py = python_processes.lookup(&pid);
    u32 walked_flags = py ? walk_path(py, call.stack, call.file_ptr, call.name_ptr, call.lineno) : 0;
    fire(call.stack, call.file_ptr, call.name_ptr, call.lineno, false, walked_flags);
    return 0;
}

int on_marker(struct pt_regs *ctx)
{
    u32 index = (u32)bpf_get_attach_cookie(ctx);
    struct pyfunc_site *site = sites.lookup(&index);
    if (!site)
        return 0;
    count_global(site->kind == PYFUNC_SITE_ENTRY ? PYFUNC_GLOBAL_ENTRIES : PYFUNC_GLOBAL_RETURNS);
    bool tracks = site->flags & PYFUNC_SITE_TRACKS_STACK;
    struct marker_call call;
    if (!read_marker(ctx, &call))
        return 0;
    if (site->kind != PYFUNC_SITE_ENTRY && !tracks && (site->flags & PYFUNC_SITE_FIRES_PROBES)) {
        u32 pid = bpf_get_current_pid_tgid() >> 32;
        if (python_processes.lookup(&pid) && some_probe_named(call.name_ptr))
            return_walker.call(ctx, 0); /* does not return when it runs */
    }
    if (site->kind == PYFUNC_SITE_ENTRY) {
        if (tracks)
            push(call.stack, call.file_ptr, call.name_ptr, call.lineno);
        if (site->flags & PYFUNC_SITE_FIRES_PROBES)
            fire(call.stack, call.file_ptr, call.name_ptr, call.lineno, tracks, 0);
    } else {
        /* Fire before popping: the returning function is still the top frame. */
        if (site->flags & PYFUNC_SITE_FIRES_PROBES)
            fire(call.stack, call.file_ptr, call.name_ptr, call.lineno, tracks, 0);
        if (tracks)
            pop(call.stack, call.name_ptr);
    }
    return 0;
}
