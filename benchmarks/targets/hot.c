/* The benchmarks' C target: calls bench_target through up to 1000 distinct call paths.
 *
 *   hot time CALLS PATHS WORK      CALLS calls, round-robin over PATHS paths, WORK spin
 *                                  iterations before each; prints ns per call (CLOCK_MONOTONIC
 *                                  around the whole loop), then waits for stdin to close
 *   hot leaf CALLS                 the same for bench_leaf, called directly
 *   hot paced CALLS INTERVAL_US PATHS
 *                                  one call every INTERVAL_US; prints the CLOCK_REALTIME of
 *                                  each call just before it, then waits for stdin to close
 *
 * It waits for stdin to close before exiting because the agent reads /proc/<pid>/maps to
 * place the frames of every call: the process must outlive the agent's backlog.
 * Built with frame pointers and without inlining, like deploy/demo/workload.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile unsigned long sink;

__attribute__((noinline)) static unsigned long mix(unsigned long seed)
{
    sink += seed;
    return sink;
}

/* The probed function. It calls mix(), so it keeps a frame and starts with `push %rbp`, as
 * most functions of a frame-pointer build do; x86 uprobes emulate that instruction. */
__attribute__((noinline)) unsigned long bench_target(unsigned long seed)
{
    return mix(seed) + 1;
}

/* A leaf whose first instruction (a rip-relative load) x86 uprobes cannot emulate: the
 * kernel single-steps it out of line, a second trap per call. */
__attribute__((noinline)) unsigned long bench_leaf(unsigned long seed)
{
    sink += seed;
    return sink;
}

/* One caller per path: the return address into via_NNN differs, so each is its own
 * call stack. Distinct constants keep a compiler from folding identical bodies. */
#define VIA(n) \
    __attribute__((noinline)) static unsigned long via_##n(unsigned long seed) \
    { return bench_target(seed + 0x##n) + 1; }
#define VIA10(p) VIA(p##0) VIA(p##1) VIA(p##2) VIA(p##3) VIA(p##4) \
                 VIA(p##5) VIA(p##6) VIA(p##7) VIA(p##8) VIA(p##9)
#define VIA100(p) VIA10(p##0) VIA10(p##1) VIA10(p##2) VIA10(p##3) VIA10(p##4) \
                  VIA10(p##5) VIA10(p##6) VIA10(p##7) VIA10(p##8) VIA10(p##9)
VIA100(0) VIA100(1) VIA100(2) VIA100(3) VIA100(4) VIA100(5) VIA100(6) VIA100(7) VIA100(8) VIA100(9)

#define REF(n) via_##n,
#define REF10(p) REF(p##0) REF(p##1) REF(p##2) REF(p##3) REF(p##4) \
                 REF(p##5) REF(p##6) REF(p##7) REF(p##8) REF(p##9)
#define REF100(p) REF10(p##0) REF10(p##1) REF10(p##2) REF10(p##3) REF10(p##4) \
                  REF10(p##5) REF10(p##6) REF10(p##7) REF10(p##8) REF10(p##9)
typedef unsigned long (*caller_fn)(unsigned long);
static caller_fn const callers[] = {
    REF100(0) REF100(1) REF100(2) REF100(3) REF100(4) REF100(5) REF100(6) REF100(7) REF100(8) REF100(9)
};
#define MAX_PATHS ((long)(sizeof callers / sizeof callers[0]))

static long long now_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void spin(long work)
{
    for (long i = 0; i < work; i++)
        __asm__ volatile("" ::: "memory");
}

static void wait_for_stdin_to_close(void)
{
    char line[64];
    while (fgets(line, sizeof line, stdin))
        ;
}

static int run_timed(long calls, long paths, long work)
{
    long long start_ns = now_ns(CLOCK_MONOTONIC);
    long path = 0;
    for (long i = 0; i < calls; i++) {
        spin(work);
        callers[path]((unsigned long)i);
        if (++path == paths)
            path = 0;
    }
    long long elapsed_ns = now_ns(CLOCK_MONOTONIC) - start_ns;
    printf("calls=%ld paths=%ld work=%ld elapsed_ns=%lld ns_per_call=%.3f\n",
           calls, paths, work, elapsed_ns, calls ? (double)elapsed_ns / calls : 0.0);
    fflush(stdout);
    return 0;
}

static int run_leaf(long calls)
{
    long long start_ns = now_ns(CLOCK_MONOTONIC);
    for (long i = 0; i < calls; i++)
        bench_leaf((unsigned long)i);
    long long elapsed_ns = now_ns(CLOCK_MONOTONIC) - start_ns;
    printf("calls=%ld paths=1 work=0 elapsed_ns=%lld ns_per_call=%.3f\n",
           calls, elapsed_ns, calls ? (double)elapsed_ns / calls : 0.0);
    fflush(stdout);
    return 0;
}

static int run_paced(long calls, long interval_us, long paths)
{
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (long i = 0; i < calls; i++) {
        printf("call %lld\n", now_ns(CLOCK_REALTIME));
        callers[i % paths]((unsigned long)i);
        next.tv_nsec += interval_us * 1000L;
        while (next.tv_nsec >= 1000000000L) {
            next.tv_nsec -= 1000000000L;
            next.tv_sec++;
        }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
    }
    printf("done %ld\n", calls);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "time") == 0) {
        long paths = atol(argv[3]);
        if (paths < 1 || paths > MAX_PATHS) {
            fprintf(stderr, "PATHS must be 1..%ld\n", MAX_PATHS);
            return 2;
        }
        run_timed(atol(argv[2]), paths, atol(argv[4]));
    } else if (argc == 3 && strcmp(argv[1], "leaf") == 0) {
        run_leaf(atol(argv[2]));
    } else if (argc == 5 && strcmp(argv[1], "paced") == 0) {
        long paths = atol(argv[4]);
        if (paths < 1 || paths > MAX_PATHS) {
            fprintf(stderr, "PATHS must be 1..%ld\n", MAX_PATHS);
            return 2;
        }
        run_paced(atol(argv[2]), atol(argv[3]), paths);
    } else {
        fprintf(stderr, "usage: %s time CALLS PATHS WORK | leaf CALLS | paced CALLS INTERVAL_US PATHS\n", argv[0]);
        return 2;
    }
    wait_for_stdin_to_close();
    return 0;
}
