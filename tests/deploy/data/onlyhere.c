/* A library that exists only inside a test image (tests/deploy/test_agent_containers.py):
 * the agent must find it through the container's root, /proc/<pid>/root. */
#include <stdint.h>

volatile uint64_t only_here_total;

__attribute__((noinline)) uint64_t only_here_work(uint64_t value) {
    only_here_total += value;
    return only_here_total;
}
