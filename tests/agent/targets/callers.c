/* Known call chains into functions whose first instruction differs, for the stack-walk
 * test: the kernel's unwinder treats a uprobe on `push %rbp` (newer kernels add the
 * caller's return address themselves) differently from one on any other instruction.
 *
 *   leaf_push    starts with push %rbp        main → a → b → leaf_push
 *   leaf_nopush  pushes no frame at all       main → a → c → leaf_nopush
 *   rec_push     starts with push %rbp, recurses from one call site   main → rec_push × 1..4
 *   rec_nop      starts with a nop, then push %rbp (the form every call takes on a kernel
 *                without the uprobe-at-entry fix), recurses likewise  main → rec_nop × 1..4
 *
 * Usage: callers CALLS. Each chain runs CALLS times, then the program lingers a second
 * (the agent reads a caller's /proc entries after the call). */
#include <stdlib.h>
#include <unistd.h>

static volatile unsigned long sink;

/* The statement after each call keeps it a call (not a tail jump), so the caller stays in
 * the stack. At -O1 gcc sets up no frame in a leaf even with -fno-omit-frame-pointer:
 * leaf_push is built at -O0, which always does. */
__attribute__((noinline, optimize("O0"))) void leaf_push(unsigned long x) { sink += x; }
__attribute__((noinline, optimize("omit-frame-pointer"))) void leaf_nopush(unsigned long x) { sink += x * 3; }
__attribute__((noinline)) void rec_push(int depth) { if (depth > 0) rec_push(depth - 1); sink++; }
__attribute__((noinline, patchable_function_entry(1))) void rec_nop(int depth)
{
    if (depth > 0)
        rec_nop(depth - 1);
    sink++;
}
__attribute__((noinline)) void b(unsigned long i) { leaf_push(i); sink ^= 1; }
__attribute__((noinline)) void c(unsigned long i) { leaf_nopush(i); sink ^= 2; }
__attribute__((noinline)) void a(unsigned long i) { b(i); c(i); sink ^= 4; }

int main(int argc, char **argv)
{
    int calls = argc > 1 ? atoi(argv[1]) : 1;
    for (int i = 0; i < calls; i++) {
        a((unsigned long)i);
        rec_push(3);
        rec_nop(3);
    }
    usleep(1000000);
    return 0;
}
