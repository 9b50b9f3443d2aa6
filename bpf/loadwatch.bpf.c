/* Hold a process for the agent at the moments its code changes, so that (1) a library a
 * target names is attached before the code that loaded it can call it, and (2) the agent
 * reads the process's maps (attribution) while the process still exists, however briefly
 * it lives.
 *
 * Two hooks:
 * - the dynamic loader's debugger hook _dl_debug_state (r_brk). glibc calls it before
 *   adding objects (RT_ADD) and again once they are mapped (RT_CONSISTENT), at start-up
 *   (before any constructor or main) and in every dlopen (before dlopen returns). At each
 *   call the objects appended to the loader's list since the last call are checked against
 *   the targets' library stems; on a match the process is stopped (SIGSTOP, delivered on
 *   the return to user space) and the agent told: it attaches, reads the maps, SIGCONTs.
 * - sched:sched_process_exec: an executable a target names is held at its first
 *   instruction (static programs have no loader), and again when its loader has mapped its
 *   libraries; so is an exec in a root not seen before (a new container): the agent hooks
 *   that root's loader before it runs.
 *
 * A process is held only while the agent's heartbeat is fresh (agent_alive): an agent
 * that died must not leave processes stopped.
 *
 * kprobes are off on the hosts this runs on: both hooks are a uprobe and a tracepoint. */
#include <uapi/linux/ptrace.h>
#include <linux/sched.h>
#include <linux/fs_struct.h>
#include <linux/dcache.h>
#include <linux/fs.h>
#include "loadwatch.h"

/* Offsets of the kernel members read below: the running kernel's, from its BTF, when the
 * agent passes them (agent/kernel_types.py); else the headers', which bcc compiles against
 * and which may be another kernel's (a wrong offset reads another field, silently). */
#ifndef LW_TASK_FS
#define LW_TASK_FS offsetof(struct task_struct, fs)
#endif
#ifndef LW_FS_ROOT_DENTRY
#define LW_FS_ROOT_DENTRY (offsetof(struct fs_struct, root) + offsetof(struct path, dentry))
#endif
#ifndef LW_DENTRY_INODE
#define LW_DENTRY_INODE offsetof(struct dentry, d_inode)
#endif
#ifndef LW_DENTRY_SB
#define LW_DENTRY_SB offsetof(struct dentry, d_sb)
#endif
#ifndef LW_INODE_INO
#define LW_INODE_INO offsetof(struct inode, i_ino)
#endif
#ifndef LW_SB_DEV
#define LW_SB_DEV offsetof(struct super_block, s_dev)
#endif

#define SIGSTOP_NUMBER 19
/* Objects read per hook call; a JVM maps ~100 libraries. */
#define MAX_OBJECTS 384
#define PATH_BYTES 256
/* New objects whose names one hook call reads: a dlopen adds a library and its needs. */
#define NAMES_PER_RUN 4
/* A power of two; at most 32 tail-called runs of NAMES_PER_RUN names each. An agent that
 * starts beside running processes meets their whole lists as new at their next dlopen. */
#define MAX_NEW_OBJECTS 128

/* glibc's struct r_debug and struct link_map (elf/link.h): stable ABI, read by debuggers. */
#define R_DEBUG_MAP_OFFSET 8
#define R_DEBUG_STATE_OFFSET 24
#define RT_CONSISTENT 0
#define LINK_MAP_NAME_OFFSET 8
#define LINK_MAP_NEXT_OFFSET 24

BPF_RINGBUF_OUTPUT(load_events, 16);
BPF_HASH(library_stems, struct name_key, u8, 1024);
BPF_HASH(executable_names, struct name_key, u8, 1024);
BPF_HASH(known_roots, struct root_key, u8, 4096);
/* Objects of each process's loader list checked so far, by tgid. LRU: bounded, and a
 * forgotten process is only re-checked (a spurious hold), never skipped. */
BPF_TABLE("lru_hash", u32, u32, objects_seen, 65536);
/* Processes that exec'd a target executable and whose loader has not finished mapping
 * their libraries yet, by tgid: held once more at its first consistent list, when every
 * library it needs is mapped (the agent loads their unwind rules before main runs). */
BPF_TABLE("lru_hash", u32, u8, startup_pending, 16384);
/* Processes stopped for the agent and not resumed yet: tgid -> boot ns of the stop. Pinned
 * beside the agent's other pins, so the next agent resumes what a killed one held. Full, a
 * process is not stopped (the agent could not find it again). */
BPF_HASH(held_pids, u32, u64, 4096);
/* &_r_debug - &_dl_debug_state in each loader file, by the uprobe's cookie. */
BPF_ARRAY(loader_delta, s64, LOADWATCH_MAX_LOADERS);
/* Boot-clock ns until which the agent answers holds (its heartbeat). */
BPF_ARRAY(agent_alive, u64, 1);
BPF_PROG_ARRAY(check_names, 1);
BPF_PERCPU_ARRAY(lw_counters, u64, LW_COUNTER_MAX);
struct path_buf {
    char bytes[PATH_BYTES];
    u64 names[MAX_NEW_OBJECTS];  /* user addresses of new objects' l_name */
    /* New objects met in the walk. In map memory, not a register: the verifier does not
     * track values there, so each possible count does not become a state to explore. */
    u32 fresh;
    u32 next;  /* the next name check_name reads */
    u32 seen;  /* objects of the list checked before this call */

};
/* Too big for the 512-byte BPF stack together with the rest: per-CPU scratch. */
BPF_PERCPU_ARRAY(path_scratch, struct path_buf, 1);
BPF_PERCPU_ARRAY(key_scratch, struct name_key, 1);

static __always_inline void lw_count(u32 index)
{
    u64 *value = lw_counters.lookup(&index);
    if (value)
        *value += 1;
}

static __always_inline int agent_answers(void)
{
    u32 zero = 0;
    u64 *until = agent_alive.lookup(&zero);
    return until && bpf_ktime_get_boot_ns() < *until;
}

static __always_inline void hold(u32 kind, u32 objects)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct load_event *event = load_events.ringbuf_reserve(sizeof(struct load_event));
    if (!event) {
        lw_count(LW_EVENT_LOST);  /* not held: the agent would never hear of it */
        return;
    }
    event->boot_ns = bpf_ktime_get_boot_ns();
    event->pid = tgid;
    event->kind = kind;
    event->objects = objects;
    event->held = 0;
    if (agent_answers()) {
        u64 now = event->boot_ns;
        if (held_pids.update(&tgid, &now) == 0) {
            if (bpf_send_signal(SIGSTOP_NUMBER) == 0) {
                event->held = 1;
                lw_count(LW_HELD);
            } else {
                held_pids.delete(&tgid);
            }
        }
    } else {
        lw_count(LW_NOT_HELD_AGENT_AWAY);
    }
    load_events.ringbuf_submit(event, 0);
}

/* key (zeroed by the caller) = the base name of the length-byte string in path, cut
 * after its first ".so" when stem is set ("/lib/x86_64-linux-gnu/libz.so.1" -> "libz.so").
 * Both loops only ever break out: a loop whose branches set state that lives on (say,
 * "start = i + 1" at each '/') makes the verifier explore every combination. */
static __always_inline void base_name(struct path_buf *path, u32 length, struct name_key *key, int stem)
{
    u32 start = 0;
    for (u32 back = 0; back < LOADWATCH_NAME_BYTES; back++) {
        if (back + 1 >= length) {
            start = 0;
            break;
        }
        u32 at = (length - 2 - back) & (PATH_BYTES - 1);  /* length counts the NUL */
        if (path->bytes[at] == '/') {
            start = at + 1;
            break;
        }
        start = at;  /* a base name longer than a key: its last characters are cut */
    }
    for (u32 j = 0; j < LOADWATCH_NAME_BYTES - 1; j++) {
        char c = path->bytes[(start + j) & (PATH_BYTES - 1)];
        if (c == 0)
            break;
        key->name[j] = c;
        if (stem && j >= 2 && c == 'o' && key->name[j - 1] == 's' && key->name[j - 2] == '.')
            break;
    }
}

int on_loader_brk(struct pt_regs *ctx)
{
    lw_count(LW_BRK_HITS);
    u32 cookie = (u32)bpf_get_attach_cookie(ctx);
    s64 *delta = loader_delta.lookup(&cookie);
    if (!delta || *delta == 0)
        return 0;
    u64 r_debug = PT_REGS_IP(ctx) + *delta;
    u64 object = 0;
    s32 state = -1;
    if (bpf_probe_read_user(&state, sizeof(state), (void *)(r_debug + R_DEBUG_STATE_OFFSET)) != 0 ||
        bpf_probe_read_user(&object, sizeof(object), (void *)(r_debug + R_DEBUG_MAP_OFFSET)) != 0) {
        lw_count(LW_READ_FAULT);
        return 0;
    }
    /* Only a consistent list is compared with the last one: at start-up the loader moves
     * its own entry to the end while adding (RT_ADD), so "new = past the old length" holds
     * between two RT_CONSISTENT calls only. */
    if (state != RT_CONSISTENT)
        return 0;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    u32 zero = 0;
    struct path_buf *path = path_scratch.lookup(&zero);
    if (!path)
        return 0;
    u32 *known = objects_seen.lookup(&tgid);
    path->seen = known ? *known : 0;
    /* First walk the list, keeping where the names of the new objects are; then read those
     * names. Reading names inside the walk multiplies the two loops' branches beyond what
     * the verifier follows (8192 jumps). */
    u32 count = 0;
    path->fresh = 0;  /* in map memory, untracked: see struct path_buf */
    for (u32 i = 0; i < MAX_OBJECTS; i++) {
        if (!object)
            break;
        if (i >= path->seen) {  /* re-read each time: a register would carry the bounds learnt */
            u32 at = path->fresh;
            if (at < MAX_NEW_OBJECTS)
                bpf_probe_read_user(&path->names[at & (MAX_NEW_OBJECTS - 1)], sizeof(u64),
                                    (void *)(object + LINK_MAP_NAME_OFFSET));
            path->fresh = at + 1;
        }
        count++;
        if (bpf_probe_read_user(&object, sizeof(object), (void *)(object + LINK_MAP_NEXT_OFFSET)) != 0) {
            lw_count(LW_READ_FAULT);
            return 0;  /* seen stays: the next call checks these objects again */
        }
    }
    if (object)
        lw_count(LW_LIST_TOO_LONG);
    /* Counted even when it shrank (dlclose): what is appended next is what is new. */
    objects_seen.update(&tgid, &count);
    if (startup_pending.lookup(&tgid)) {
        startup_pending.delete(&tgid);
        hold(LOADWATCH_LIBRARY, count);
        return 0;
    }
    if (!path->fresh)
        return 0;
    path->next = 0;
    check_names.call(ctx, 0);
    /* Only reached when the tail call failed: hold unchecked, a needless pause costs less
     * than a missed library. */
    hold(LOADWATCH_LIBRARY, count);
    return 0;
}

/* NAMES_PER_RUN new objects' names per run, then the next run by tail call: base_name's loops,
 * inlined once per name inside a loop over names, make more branches than the verifier
 * follows (8192 jumps); a tail-called program is verified once. */
int check_name(struct pt_regs *ctx)
{
    u32 zero = 0;
    struct path_buf *path = path_scratch.lookup(&zero);
    struct name_key *key = key_scratch.lookup(&zero);
    if (!path || !key)
        return 0;
    for (u32 n = 0; n < NAMES_PER_RUN; n++) {
        u32 k = path->next;
        if (k >= path->fresh || k >= MAX_NEW_OBJECTS) {
            /* Every name checked, none a target's; more new objects than names kept are
             * held unchecked. */
            if (path->fresh > MAX_NEW_OBJECTS)
                hold(LOADWATCH_LIBRARY, path->fresh);
            return 0;
        }
        path->next = k + 1;
        u64 name = path->names[k & (MAX_NEW_OBJECTS - 1)];
        long length = name ? bpf_probe_read_user_str(path->bytes, PATH_BYTES, (void *)name) : 0;
        if (length > 1) {
            __builtin_memset(key, 0, sizeof(*key));
            base_name(path, (u32)length, key, 1);
            if (library_stems.lookup(key)) {
                hold(LOADWATCH_LIBRARY, path->fresh);
                return 0;
            }
        }
    }
    check_names.call(ctx, 0);
    return 0;  /* the tail-call budget (33) is spent: cannot happen, 32 runs cover MAX_NEW_OBJECTS */
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    lw_count(LW_EXECS);
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    objects_seen.delete(&tgid);  /* a new image: a new loader list */
    startup_pending.delete(&tgid);

    char *task = (char *)bpf_get_current_task();
    struct root_key root = {};
    char *fs = NULL, *dentry = NULL, *inode = NULL, *sb = NULL;
    bpf_probe_read_kernel(&fs, sizeof(fs), task + LW_TASK_FS);
    if (fs)
        bpf_probe_read_kernel(&dentry, sizeof(dentry), fs + LW_FS_ROOT_DENTRY);
    if (dentry) {
        bpf_probe_read_kernel(&inode, sizeof(inode), dentry + LW_DENTRY_INODE);
        bpf_probe_read_kernel(&sb, sizeof(sb), dentry + LW_DENTRY_SB);
    }
    if (inode)
        bpf_probe_read_kernel(&root.inode, sizeof(root.inode), inode + LW_INODE_INO);
    if (sb) {
        u32 device = 0;  /* dev_t */
        bpf_probe_read_kernel(&device, sizeof(device), sb + LW_SB_DEV);
        root.device = device;
    }
    if (!root.inode)
        lw_count(LW_ROOT_UNREAD);

    u32 zero = 0;
    struct path_buf *path = path_scratch.lookup(&zero);
    struct name_key *key = key_scratch.lookup(&zero);
    if (!path || !key)
        return 0;
    __builtin_memset(key, 0, sizeof(*key));
    long length = bpf_probe_read_kernel_str(path->bytes, PATH_BYTES,
                                            (void *)args + (args->data_loc_filename & 0xFFFF));
    if (length > 1)
        base_name(path, (u32)length, key, 0);
    if (executable_names.lookup(key)) {
        u8 one = 1;
        startup_pending.update(&tgid, &one);
        hold(LOADWATCH_EXEC_TARGET, 0);
        return 0;
    }
    if (root.inode && !known_roots.lookup(&root))
        hold(LOADWATCH_EXEC_NEW_ROOT, 0);
    return 0;
}
