/* Calls only_here_work of libonlyhere.so every 20 ms for argv[1] seconds (0: once), then exits,
 * printing how many calls it made. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

uint64_t only_here_work(uint64_t value);

__attribute__((noinline)) static void serve_request(uint64_t i) { only_here_work(i); }

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 0;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    uint64_t calls = 0;
    for (uint64_t i = 0;; i++) {
        serve_request(i);
        calls++;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9 >= seconds) break;
        usleep(20000);
    }
    printf("%" PRIu64 " calls\n", calls);
    return 0;
}
