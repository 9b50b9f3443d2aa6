/* Records shared by bpf/loadwatch.bpf.c and the agent (agent/loadwatch.py mirrors them
 * with ctypes; tests/agent/test_loadwatch.py checks the two agree). */
#ifndef RUNTIME_SIGNALS_LOADWATCH_H
#define RUNTIME_SIGNALS_LOADWATCH_H

/* A file name as a map key: a library's stem ("libz.so") or an executable's base name. */
#define LOADWATCH_NAME_BYTES 64
/* Loaders (ld.so files) one program serves; a loader's index is its uprobe's cookie. */
#define LOADWATCH_MAX_LOADERS 64

struct name_key {
    char name[LOADWATCH_NAME_BYTES];
};

/* Where a process's root is: a new one (a container started) has a loader the agent may
 * not have hooked yet. */
struct root_key {
    __u64 device;  /* s_dev of the root's super block, as the kernel encodes it */
    __u64 inode;
};

enum loadwatch_kind {
    LOADWATCH_EXEC_TARGET = 1,   /* exec of an executable a target names */
    LOADWATCH_EXEC_NEW_ROOT = 2, /* exec in a root not seen before: its loader may be new */
    LOADWATCH_LIBRARY = 3,       /* the loader mapped a library a target names (startup or dlopen) */
};

/* Ring-buffer record: one process the agent should look at now. */
struct load_event {
    __u64 boot_ns;
    __u32 pid;       /* what Linux calls tgid */
    __u32 kind;      /* enum loadwatch_kind */
    __u32 held;      /* 1: SIGSTOP was sent; the agent must SIGCONT it */
    __u32 objects;   /* LIBRARY: objects in the loader's list now */
};

enum loadwatch_counter {
    LW_BRK_HITS = 0,        /* loader hook calls (two per dlopen: before and after mapping) */
    LW_EXECS,               /* execs seen */
    LW_HELD,                /* processes stopped for the agent */
    LW_NOT_HELD_AGENT_AWAY, /* would have held, but the agent's heartbeat is stale */
    LW_EVENT_LOST,          /* ring buffer full: the process was not held */
    LW_READ_FAULT,          /* the loader's list could not be read (paged out, corrupt) */
    LW_LIST_TOO_LONG,       /* more objects than one walk reads: the rest not checked */
    LW_ROOT_UNREAD,         /* an exec whose root could not be read: not held for a new root */
    LW_COUNTER_MAX,
};

#endif
