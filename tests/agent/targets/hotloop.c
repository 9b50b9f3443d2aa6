/* A hot function for the overhead tests: hot() is called in a tight loop through call
 * paths path_a and path_b, then for a second phase also through path_c, a path that
 * appears late (typically while the agent's budget has the probe detached).
 *
 * The program counts its own calls per path, split by whether a uprobe sat on hot() at
 * the time: an attached uprobe replaces the function's first instruction with a
 * breakpoint, which the process can read. A call is "attached" when the breakpoint was
 * there just before and just after it, "detached" when it was there neither time, and
 * "ambiguous" otherwise (the probe came or went during that very call).
 *
 * Usage: hotloop PHASE1_MS PHASE2_MS [LINGER_MS]
 * Prints one line per path: "<path> <attached> <detached> <ambiguous>". */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static volatile unsigned long sink;

__attribute__((noinline)) void hot(unsigned long seed)
{
    sink += seed * 2654435761u;
}

/* The statement after each call keeps it a call (not a tail jump), so the path's
 * function stays in the stack as the caller of hot(). */
__attribute__((noinline)) void path_a(unsigned long seed) { hot(seed); sink ^= 1; }
__attribute__((noinline)) void path_b(unsigned long seed) { hot(seed); sink ^= 2; }
__attribute__((noinline)) void path_c(unsigned long seed) { hot(seed); sink ^= 3; }

static int probed(void)
{
#if defined(__x86_64__)
    return *(volatile unsigned char *)(void *)hot == 0xCC;          /* int3 */
#elif defined(__aarch64__)
    return *(volatile unsigned int *)(void *)hot == 0xd42000a0u;    /* BRK #0x5, uprobes' */
#else
#error "hotloop knows the uprobe breakpoint of x86_64 and aarch64 only"
#endif
}

struct tally { unsigned long attached, detached, ambiguous; };

static void call(void (*path)(unsigned long), unsigned long seed, struct tally *tally)
{
    int before = probed();
    path(seed);
    int after = probed();
    if (before && after)
        tally->attached++;
    else if (!before && !after)
        tally->detached++;
    else
        tally->ambiguous++;
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s PHASE1_MS PHASE2_MS [LINGER_MS]\n", argv[0]);
        return 2;
    }
    long phase1_ms = atol(argv[1]), phase2_ms = atol(argv[2]);
    long linger_ms = argc > 3 ? atol(argv[3]) : 1500;
    struct tally a = {0}, b = {0}, c = {0};
    long start = now_ms();
    for (unsigned long i = 0;; i++) {
        if ((i & 255) == 0) {
            long elapsed = now_ms() - start;
            if (elapsed >= phase1_ms + phase2_ms)
                break;
            if (elapsed >= phase1_ms)
                call(path_c, i, &c);
        }
        call(path_a, i, &a);
        call(path_b, i, &b);
    }
    /* Stay alive a moment: the agent reads /proc/<pid>/maps to place the last frames. */
    struct timespec linger = {linger_ms / 1000, (linger_ms % 1000) * 1000000L};
    nanosleep(&linger, NULL);
    printf("path_a %lu %lu %lu\n", a.attached, a.detached, a.ambiguous);
    printf("path_b %lu %lu %lu\n", b.attached, b.detached, b.ambiguous);
    printf("path_c %lu %lu %lu\n", c.attached, c.detached, c.ambiguous);
    return 0;
}
