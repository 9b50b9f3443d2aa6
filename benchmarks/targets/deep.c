/* The unwinding benchmark's target: bench_target reached through twelve distinct functions,
 * built by benchmarks/unwind_cost.py twice: with frame pointers and no CFI (the walker
 * follows frame pointers) and at -O2 without frame pointers (it needs the CFI rules).
 *
 *   deep CALLS PAUSE_MS   one warm-up call, PAUSE_MS of sleep (the agent meets the process
 *                         and loads its mapping table), then CALLS calls timed with
 *                         CLOCK_MONOTONIC; prints "calls=N paths=1 work=0 ns_per_call=X"
 *                         like hot.c, then waits for stdin to close. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define KEEP __asm__ volatile("" ::: "memory") /* a call followed by this is not a tail call */

static volatile unsigned long sink;

/* Starts with an instruction the kernel emulates in both builds (`push %rbp` with frame
 * pointers, the nop without): a rip-relative load would be single-stepped, a second trap
 * per call, and the builds would differ in more than how their callers are walked. */
__attribute__((noinline)) unsigned long bench_target(unsigned long seed)
{
    __asm__ volatile("nop");
    sink += seed;
    KEEP;
    return sink;
}

#define LEVEL(name, next) \
    __attribute__((noinline)) unsigned long name(unsigned long n) { unsigned long r = next(n + 1) + n; KEEP; return r; }
LEVEL(d12, bench_target) LEVEL(d11, d12) LEVEL(d10, d11) LEVEL(d9, d10) LEVEL(d8, d9) LEVEL(d7, d8)
LEVEL(d6, d7) LEVEL(d5, d6) LEVEL(d4, d5) LEVEL(d3, d4) LEVEL(d2, d3) LEVEL(d1, d2)

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    long calls = argc > 1 ? atol(argv[1]) : 1000;
    long pause_ms = argc > 2 ? atol(argv[2]) : 0;
    unsigned long total = bench_target(1); /* warm-up: another path than the timed one */
    usleep((useconds_t)pause_ms * 1000);
    long long started = now_ns();
    for (long i = 0; i < calls; i++)
        total += d1((unsigned long)i);
    long long elapsed = now_ns() - started;
    printf("calls=%ld paths=1 work=0 ns_per_call=%.2f\n", calls, (double)elapsed / (double)calls);
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin))
        ;
    return (int)(total & 0);
}
