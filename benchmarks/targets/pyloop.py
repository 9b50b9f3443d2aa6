"""The Python workload of the python_probe stage: time N calls of a trivial function,
print the cost per call, then wait (stdin open) while the probe's records are read."""

import sys
import time


def work(x):
    return x + 1


def never_called():
    return None


def main() -> None:
    calls = int(sys.argv[1])
    for i in range(1000):  # warm the specializing interpreter
        work(i)
    started = time.perf_counter_ns()
    for i in range(calls):
        work(i)
    elapsed = time.perf_counter_ns() - started
    print(f"calls={calls} ns_per_call={elapsed / calls:.2f}", flush=True)
    sys.stdin.readline()


main()
