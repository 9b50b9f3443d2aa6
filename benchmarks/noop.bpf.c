/* The floor of the probe-cost benchmark: a uprobe handler that only counts its hits.
 * Whatever a real handler costs beyond this is the handler's own work; this much is the
 * price of any uprobe (the trap, the kernel's uprobe dispatch, running a BPF program). */
#include <uapi/linux/ptrace.h>

BPF_PERCPU_ARRAY(hits, u64, 1);

int on_call(struct pt_regs *ctx)
{
    u32 index = 0;
    u64 *value = hits.lookup(&index);
    if (value)
        (*value)++;
    return 0;
}
