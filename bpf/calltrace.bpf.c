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
#include "pythread.bpf.h"

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

/* Unwinding (see calltrace.h): rows of every loaded binary, each binary's slice of them,
 * and each known process's executable mappings. Written by the agent only. */
BPF_ARRAY(unwind_rows, struct unwind_row, CALLTRACE_UNWIND_ROWS);
BPF_ARRAY(unwind_tables, struct unwind_table, CALLTRACE_UNWIND_TABLES);
BPF_F_TABLE("hash", u32, struct process_mappings, proc_mappings, CALLTRACE_MAX_PROCESSES, BPF_F_NO_PREALLOC);
/* Processes whose first call without a mapping table was sent to the agent (see announce). */
BPF_TABLE("lru_hash", u32, u8, announced, CALLTRACE_MAX_PROCESSES);

/* Steps of the binary searches: ceil(log2(entries)) + 1, set by the agent with the sizes. */
#ifndef MAPPING_SEARCH_STEPS
#define MAPPING_SEARCH_STEPS 9
#endif
#ifndef ROW_SEARCH_STEPS
#define ROW_SEARCH_STEPS 22
#endif

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

/* Multiply-xorshift over the frames; frame_count and end_reason are mixed in so a prefix,
 * or the same frames ended for another reason, differ. The empty asm hides the index from
 * the compiler so it keeps the bound check and reads one frame per iteration: an
 * unrolled, pointer-stepping loop is what the verifier cannot prove in bounds. */
static __always_inline u64 hash_frames(struct call_event *event)
{
    u32 frame_count = event->frame_count;
    u64 hash = 0x9e3779b97f4a7c15ULL ^ frame_count ^ ((u64)event->end_reason << 32);
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

/* Both searches below choose their next bound with a mask instead of a branch: a branch
 * per step would give the verifier two states per step to follow, 2^steps per frame, far
 * past its limit over 64 frames. They stop once one candidate is left (log2 of the rows
 * steps), a branch out of the loop that the verifier follows without doubling. The asm
 * hides each index from the compiler so the mask that bounds it for the verifier stays. */

/* Index of the mapping of pm that holds address, or -1. */
static __always_inline int find_mapping(struct process_mappings *pm, u64 address)
{
    u32 count = pm->count;
    if (count == 0 || count > CALLTRACE_MAX_MAPPINGS)
        return -1;
    u32 base = 0, length = count;
    for (u32 step = 0; step < MAPPING_SEARCH_STEPS; step++) {
        if (length <= 1)
            break; /* found: the exit leaves no state the rest of the walk depends on */
        u32 half = length / 2;
        u32 mid = base + half;
        asm volatile("" : "+r"(mid));
        mid &= CALLTRACE_MAX_MAPPINGS - 1;
        /* All ones when mappings[mid].start > address (user addresses are < 2^63). */
        u64 above = (u64)((s64)(address - pm->mappings[mid].start) >> 63);
        base = (u32)((base & above) | (mid & ~above));
        length -= half;
    }
    u32 index = base;
    asm volatile("" : "+r"(index));
    index &= CALLTRACE_MAX_MAPPINGS - 1;
    if (address < pm->mappings[index].start || address >= pm->mappings[index].end)
        return -1;
    return (int)index;
}

/* The row of table that covers address (the last one at or below it), or NULL. */
static __always_inline struct unwind_row *find_row(struct unwind_table *table, u32 address)
{
    if (!table || table->row_count == 0)
        return NULL;
    u32 base = table->first_row, length = table->row_count;
    u32 block = address >> (table->index_shift & 31);
    if (block + 1 < table->index_count) {
        /* The rows covering this block's start and the next one's bound the search. */
        u32 at = table->first_row + table->row_count + block;
        asm volatile("" : "+r"(at));
        at &= CALLTRACE_UNWIND_ROWS - 1;
        struct unwind_row *low = unwind_rows.lookup(&at);
        u32 next = (at + 1) & (CALLTRACE_UNWIND_ROWS - 1);
        struct unwind_row *high = unwind_rows.lookup(&next);
        if (low && high && low->address <= high->address && high->address < table->row_count) {
            base = table->first_row + low->address;
            length = high->address - low->address + 1;
        }
    }
    for (u32 step = 0; step < ROW_SEARCH_STEPS; step++) {
        if (length <= 1)
            break; /* a small binary's search ends after log2(its rows) steps */
        u32 half = length / 2;
        u32 mid = base + half;
        asm volatile("" : "+r"(mid));
        mid &= CALLTRACE_UNWIND_ROWS - 1;
        struct unwind_row *row = unwind_rows.lookup(&mid);
        if (!row)
            return NULL;
        u32 above = (u32)((s64)((u64)address - (u64)row->address) >> 63); /* all ones when the row is above */
        base = (base & above) | (mid & ~above);
        length -= half;
    }
    struct unwind_row *row = unwind_rows.lookup(&base);
    if (!row || row->address > address)
        return NULL;
    return row;
}

/* The calling thread's stack, copied a window at a time: the walk reads each frame's words
 * from the copy instead of paying a user-memory read per word (most of the walk's cost on
 * both builds). A word outside the window moves it there. Every word comes from the window,
 * so each read has one outcome the verifier has to follow besides a fault. The thread is
 * stopped in the probe: its stack cannot change under the copy. */
#define STACK_WINDOW_BYTES 1024
#define STACK_WINDOW_SLACK 64 /* kept below a word the window moves to: a frame's other saved words */
struct stack_window {
    u8 bytes[STACK_WINDOW_BYTES];
    u32 offset;
};
BPF_PERCPU_ARRAY(stack_windows, struct stack_window, SCRATCH_SLOTS);

struct stack_copy {
    struct stack_window *window;
    u64 floor;  /* the stack pointer at the probe: the stack below it may not be mapped */
    u64 base;   /* the stack address of window->bytes[0] */
    u32 copied; /* bytes of the window that hold the stack */
};

/* Copies the stack from base up: a whole window, or near the stack's end, where the rest
 * is shorter than a window, a smaller one (constant sizes: the verifier need not track
 * base's value through a size). */
static __always_inline void copy_stack(struct stack_copy *copy, u64 base)
{
    copy->base = base;
    copy->copied = 0;
    if (bpf_probe_read_user(copy->window->bytes, STACK_WINDOW_BYTES, (void *)base) == 0)
        copy->copied = STACK_WINDOW_BYTES;
    else if (bpf_probe_read_user(copy->window->bytes, STACK_WINDOW_BYTES / 4, (void *)base) == 0)
        copy->copied = STACK_WINDOW_BYTES / 4;
}

/* The 8-byte word of the stack at address, into out. 0 when read, as bpf_probe_read_user. */
static __always_inline long read_stack(struct stack_copy *copy, u64 address, u64 *out)
{
    u64 offset = address - copy->base;
    if (offset + 8 > copy->copied || (offset & 7)) {
        u64 base = address - STACK_WINDOW_SLACK;
        copy_stack(copy, base >= copy->floor && address >= STACK_WINDOW_SLACK ? base : address);
        offset = address - copy->base;
        if (offset + 8 > copy->copied)
            return -EFAULT;
    }
    /* Through memory: the verifier then knows the offset only by the mask, and does not
     * follow the stack addresses it came from (tracking them precisely split its states at
     * every frame, past its budget). The mask bounds the access; it changes nothing here. */
    *(volatile u32 *)&copy->window->offset = (u32)offset;
    u32 at = *(volatile u32 *)&copy->window->offset & (STACK_WINDOW_BYTES - 8);
    *out = *(u64 *)(copy->window->bytes + at);
    return 0;
}

/* Walks the user stack into event->frames: by the binaries' unwind rules where the
 * process's mapping table names them, by frame pointers elsewhere. A return address is
 * emitted only after it is found inside an executable mapping of the process, so the walk
 * ends at the last true frame and says why (end_reason) rather than emit a junk word.
 *
 * At frame 0 the uprobe sits on the probed function's first instruction: the CFI row
 * there says CFA = rsp + 8, and the frame-pointer step reads the return address at rsp
 * (the function has not pushed rbp yet). Callers are looked up at their return address
 * minus one, inside the call instruction: a call may be the last instruction of a
 * function, its return address then the first of the next one. */
static __always_inline void walk(struct pt_regs *ctx, struct call_event *event, u32 slot)
{
    u64 pc = PT_REGS_IP(ctx), sp = PT_REGS_SP(ctx), bp = PT_REGS_FP(ctx);
    struct stack_copy stack = {.window = stack_windows.lookup(&slot), .floor = sp};
    if (!stack.window)
        return; /* cannot happen: slot < SCRATCH_SLOTS */
    copy_stack(&stack, sp);
    u32 pid = event->pid;
    struct process_mappings *pm = proc_mappings.lookup(&pid);
    /* The mapping of the frame being unwound, found when its address was checked. */
    int m = pm ? find_mapping(pm, pc) : -1;
    if (m < 0) {
        /* No table yet, or the probed function lies in code mapped after the table was
         * written (a dlopen): frame pointers, checked by the agent, which reads the
         * process's mappings again and rewrites its table. */
        pm = NULL;
        event->flags |= CALL_FLAG_UNCHECKED;
    }
    event->frames[0] = pc;
    event->frame_count = 1;
    event->end_reason = STACK_END_DEPTH_LIMIT;
    /* Consecutive frames are mostly in one binary: its table is looked up once per run of
     * them, and a return address is first checked against the mapping of the frame before. */
    struct unwind_table *table = NULL;
    u32 table_of = 0;
    for (u32 i = 0; i < CALLTRACE_MAX_FRAMES - 1; i++) {
        struct unwind_row *row = NULL;
        if (pm) {
            u32 mi = (u32)m & (CALLTRACE_MAX_MAPPINGS - 1);
            u32 table_id = pm->mappings[mi].table_id;
            if (table_id) {
                if (table_id != table_of) {
                    table = unwind_tables.lookup(&table_id);
                    table_of = table_id;
                }
                row = find_row(table, (u32)((i == 0 ? pc : pc - 1) - pm->mappings[mi].bias));
            }
        }
        u64 return_address = 0;
        u32 cfa_register = row ? row->cfa_register : UNWIND_CFA_NONE;
        bool by_rules = cfa_register == UNWIND_CFA_RSP || cfa_register == UNWIND_CFA_RBP;
        if (cfa_register == UNWIND_CFA_END) {
            event->end_reason = STACK_END_COMPLETE;
            break;
        }
        if (by_rules) {
            u64 cfa = (cfa_register == UNWIND_CFA_RSP ? sp : bp) + (s64)row->cfa_offset;
            if (read_stack(&stack, cfa - 8, &return_address) != 0) {
                event->end_reason = STACK_END_READ_FAULT;
                break;
            }
            if (row->rbp_rule == UNWIND_RBP_AT_CFA) {
                if (read_stack(&stack, cfa + (s64)row->rbp_offset, &bp) != 0) {
                    event->end_reason = STACK_END_READ_FAULT;
                    break;
                }
            } else if (row->rbp_rule == UNWIND_RBP_UNKNOWN) {
                bp = 0;
            }
            sp = cfa;
        } else {
            event->flags |= CALL_FLAG_FRAME_POINTERS;
            if (i == 0) {
                if (read_stack(&stack, sp, &return_address) != 0) {
                    event->end_reason = STACK_END_READ_FAULT;
                    break;
                }
                sp += 8;
            } else {
                /* At a frame pointer: the caller's frame pointer, then the return address. */
                u64 caller_bp = 0;
                if (bp == 0 || read_stack(&stack, bp, &caller_bp) != 0 ||
                    read_stack(&stack, bp + 8, &return_address) != 0) {
                    /* rbp 0 ends a frame-pointer chain by convention (_start clears it); any
                     * other unreadable rbp means this frame kept none. */
                    event->end_reason = bp == 0 ? STACK_END_COMPLETE : STACK_END_NO_UNWIND_INFO;
                    break;
                }
                sp = bp + 16;
                bp = caller_bp;
            }
        }
        if (return_address == 0) {
            event->end_reason = STACK_END_COMPLETE;
            break;
        }
        if (pm) {
            u32 mi = (u32)m & (CALLTRACE_MAX_MAPPINGS - 1);
            if (return_address - 1 < pm->mappings[mi].start || return_address - 1 >= pm->mappings[mi].end)
                m = find_mapping(pm, return_address - 1);
            if (m < 0) {
                /* Found by rules, the address is right and its code has no file (JIT,
                 * anonymous); found by frame pointers, it is most likely a word of a frame
                 * that kept no frame pointer. */
                event->end_reason = by_rules ? STACK_END_NOT_EXECUTABLE : STACK_END_NO_UNWIND_INFO;
                break;
            }
        }
        u32 index = i + 1;
        asm volatile("" : "+r"(index));
        if (index >= CALLTRACE_MAX_FRAMES)
            break;
        event->frames[index] = return_address;
        event->frame_count = index + 1;
        pc = return_address;
    }
    if (event->end_reason != STACK_END_COMPLETE)
        event->flags |= CALL_FLAG_STACK_TRUNCATED;
}

/* --- Python frames (see calltrace.h) ------------------------------------------------- */
BPF_F_TABLE("hash", u32, struct python_process, python_processes, CALLTRACE_MAX_PROCESSES, BPF_F_NO_PREALLOC);
BPF_TABLE("lru_hash", struct py_code_key, struct py_code, py_codes, CALLTRACE_PY_CODES);
BPF_PERCPU_ARRAY(py_code_scratch, struct py_code, SCRATCH_SLOTS);
BPF_PROG_ARRAY(python_walker, 1);
BPF_PERCPU_ARRAY(py_frame_scratch, struct py_frame_bytes, SCRATCH_SLOTS);

/* A str object's bytes into out; empty and flagged unless it is compact ASCII. */
static __always_inline void read_py_string(char *out, u32 size, u64 object, struct python_process *py,
                                           u32 *flags, u32 unread_flag)
{
    u32 state = 0;
    if (object == 0 || bpf_probe_read_user(&state, sizeof(state), (void *)(object + py->string_state)) != 0 ||
        !(state & PY_STRING_COMPACT) || !(state & PY_STRING_ASCII) ||
        bpf_probe_read_user_str(out, size, (void *)(object + py->string_data)) < 0) {
        out[0] = 0;
        *flags |= unread_flag;
    }
}

/* Copies a code object's names into py_codes the first time the program meets it. */
static __always_inline void remember_code(struct python_process *py, u32 pid, u64 code, u64 name, u32 slot)
{
    struct py_code_key key = {.code = code, .name = name, .pid = pid};
    if (py_codes.lookup(&key))
        return;
    struct py_code *value = py_code_scratch.lookup(&slot);
    if (!value)
        return;
    value->flags = 0;
    value->firstlineno = 0;
    u64 filename = 0, type = 0;
    /* Checked once per code object: a frame chain read with offsets that do not fit this
     * interpreter would name junk; its "code object" is then no code object. */
    if (read_word(&type, code + 8) != 0 || type != py->code_type)
        value->flags |= PY_CODE_NOT_CODE;
    if (bpf_probe_read_user(&value->firstlineno, sizeof(value->firstlineno),
                            (void *)(code + py->code_firstlineno)) != 0 ||
        read_word(&filename, code + py->code_filename) != 0)
        value->flags |= PY_CODE_FILE_UNREAD;
    read_py_string(value->name, PY_NAME_BYTES, name, py, &value->flags, PY_CODE_NAME_UNREAD);
    read_py_string(value->filename, PY_FILE_BYTES, filename, py, &value->flags, PY_CODE_FILE_UNREAD);
    py_codes.update(&key, value);
}

/* Walks the calling thread's Python frames into event->py_frames (innermost first) and
 * marks where each evaluation loop call's frames end. Shim frames (3.12+) are not frames
 * of Python code and are not kept. The walk's counts live in the event, not in
 * registers: values the verifier cannot know exactly let it prune the states of each
 * step instead of following every combination of earlier steps. */
static __always_inline void walk_python(struct python_process *py, struct call_event *event, u32 slot)
{
    u64 frame = 0;
    int found = python_current_frame(py, event->tid, &frame);
    if (found != 0) {
        event->py_flags |= found == PY_THREAD_NOT_FOUND ? PY_FLAG_NO_THREAD : PY_FLAG_READ_FAULT;
        return;
    }
    event->py_flags |= PY_FLAG_WALKED;
    struct py_frame_bytes *window = py_frame_scratch.lookup(&slot);
    if (!window) {
        event->py_flags |= PY_FLAG_READ_FAULT;
        return;
    }
    /* Twice the frames kept: room for a shim after each frame. */
    for (u32 step = 0; step < 2 * CALLTRACE_MAX_PY_FRAMES; step++) {
        if (frame == 0)
            break;
        u32 kept = event->py_frame_count;
        struct py_frame_fields fields;
        if (read_python_frame(py, window, frame, &fields) != 0) {
            event->py_flags |= PY_FLAG_READ_FAULT;
            break;
        }
        if (py->entry_rule == PY_ENTRY_SHIM && fields.owner == PY_OWNED_BY_CSTACK) {
            if (kept > 0)
                event->py_entries |= 1U << ((kept - 1) & 31);
        } else {
            if (kept >= CALLTRACE_MAX_PY_FRAMES) {
                event->py_flags |= PY_FLAG_TRUNCATED;
                break;
            }
            u64 name = 0;
            if (fields.code == 0 || read_word(&name, fields.code + py->code_name) != 0) {
                event->py_flags |= PY_FLAG_READ_FAULT;
                break;
            }
            u32 at = kept & (CALLTRACE_MAX_PY_FRAMES - 1);
            event->py_frames[at].code = fields.code;
            event->py_frames[at].name = name;
            if (py->entry_rule == PY_ENTRY_EVERY_FRAME || (py->entry_rule == PY_ENTRY_IS_ENTRY && fields.is_entry))
                event->py_entries |= 1U << at;
            remember_code(py, event->pid, fields.code, name, slot);
            event->py_frame_count = kept + 1;
        }
        frame = fields.previous;
    }
    u32 kept = event->py_frame_count;
    if (frame == 0 && kept > 0)
        event->py_entries |= 1U << ((kept - 1) & 31); /* the outermost frame ends the outermost call */
    else if (frame != 0 && !(event->py_flags & PY_FLAG_READ_FAULT))
        event->py_flags |= PY_FLAG_TRUNCATED;
}

/* Mixes the Python frames into a stack hash: two Python callers through the same native
 * frames are two paths. */
static __always_inline u64 hash_python(struct call_event *event, u64 hash)
{
    u32 frame_count = event->py_frame_count;
    if (!(event->py_flags & PY_FLAG_WALKED))
        return hash;
    hash = (hash ^ event->py_entries ^ ((u64)event->py_flags << 32)) * 0xff51afd7ed558ccdULL;
    for (u32 i = 0; i < CALLTRACE_MAX_PY_FRAMES; i++) {
        if (i >= frame_count)
            break;
        u32 index = i;
        asm volatile("" : "+r"(index));
        if (index >= CALLTRACE_MAX_PY_FRAMES)
            break;
        hash = (hash ^ event->py_frames[index].code ^ (event->py_frames[index].name << 1)) * 0xff51afd7ed558ccdULL;
        hash ^= hash >> 32;
    }
    return hash;
}

static __always_inline void capture(struct pt_regs *ctx, struct call_event *event, u32 probe, u64 now, u32 slot)
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
    walk(ctx, event, slot);
    if (event->end_reason == STACK_END_READ_FAULT) {
        count(probe, COUNTER_STACK_ERROR);
        event->flags |= CALL_FLAG_STACK_ERROR;
    }
    event->py_frame_count = 0;
    event->py_flags = 0;
    event->py_entries = 0;
    event->py_reserved = 0;
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

/* Should this call skip the dedup map? The first unchecked call of a process does: the
 * ring buffer wakes the agent within its poll interval, and it writes the process's mapping
 * table then, instead of at its next collection, so fewer of the process's calls are
 * walked without the rules. A process is announced once (an LRU map, the agent deletes
 * its entry when the process exits); two CPUs racing may both announce it, harmlessly. */
static __always_inline bool announce(struct call_event *event)
{
    if (!(event->flags & CALL_FLAG_UNCHECKED))
        return false;
    u32 pid = event->pid;
    if (announced.lookup(&pid))
        return false;
    u8 one = 1;
    announced.update(&pid, &one);
    return true;
}

/* Folds the captured call into the dedup map, or sends it. */
static __always_inline void finish(struct call_event *event, struct probe_config *config, u32 probe, u64 now)
{
    u32 zero = 0;

    if (config->dedup && !announce(event)) {
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

    /* Only the Python frames the call has: a native call's record is half the struct. */
    u32 py_frames = event->py_frame_count;
    if (py_frames > CALLTRACE_MAX_PY_FRAMES)
        py_frames = CALLTRACE_MAX_PY_FRAMES;
    u64 size = sizeof(*event) - sizeof(event->py_frames) + py_frames * sizeof(struct py_frame_ref);
    if (events.ringbuf_output(event, size, 0) == 0)
        count(probe, COUNTER_SENT);
    else
        count(probe, COUNTER_DROP_RINGBUF_FULL);
}


/* Runs in place of the rest of handle() for a process with Python frames to walk (a
 * tail call from handle: the walk gets a verifier budget of its own). The nesting depth
 * is still this run's: a run that preempted it has ended, so slot = depth - 1. */
int walk_python_frames(struct pt_regs *ctx)
{
    u32 zero = 0;
    u64 *depth = nesting.lookup(&zero);
    if (!depth)
        return 0;
    u32 slot = (u32)(*depth - 1);
    struct call_event *event = slot < SCRATCH_SLOTS ? scratch.lookup(&slot) : NULL;
    if (event) {
        u32 pid = event->pid, probe = event->probe_index;
        struct python_process *py = python_processes.lookup(&pid);
        struct probe_config *config = probe_config.lookup(&probe);
        if (config) {
            if (py) { /* else the agent removed the process since handle() looked */
                walk_python(py, event, slot);
                event->stack_hash = hash_python(event, event->stack_hash);
            }
            finish(event, config, probe, event->boot_ns);
        } else {
            count(probe, COUNTER_DROP_NESTED); /* cannot happen: handle() found it */
        }
    }
    __sync_fetch_and_add(depth, -1);
    return 0;
}

static __always_inline void handle(struct pt_regs *ctx, u32 probe, u32 slot, struct probe_config *config)
{
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
    capture(ctx, event, probe, now, slot);
    u32 pid = event->pid;
    if (python_processes.lookup(&pid))
        python_walker.call(ctx, 0); /* does not return when it runs */
    finish(event, config, probe, now);
}

int on_call(struct pt_regs *ctx)
{
    u32 probe = (u32)bpf_get_attach_cookie(ctx);
    if (probe >= CALLTRACE_MAX_PROBES)
        return 0;
    /* A retired probe's uprobe fires until the kernel has unregistered it (a grace period
     * per uprobe): its calls are not taken, and the kernel's hit count shows them as
     * probe_transition. */
    struct probe_config *config = probe_config.lookup(&probe);
    if (config && config->retired)
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
        handle(ctx, probe, (u32)slot, config); /* looked up above, once per call */
    else
        count(probe, COUNTER_DROP_NESTED);
    __sync_fetch_and_add(depth, -1);
    return 0;
}
