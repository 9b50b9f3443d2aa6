"""Benchmarks of runtime-signals: every figure is a ratio against a floor measured in the
same run, because the machines these run on are shared and noisy.

    python -m benchmarks            # the whole suite (~10 min): results.json, results.md, the plot
    python -m benchmarks --quick    # every stage at toy sizes, for the smoke test

Stages (docs/benchmarks.md explains each figure and its floor):
    probe_agent   probe cost per call (full probe vs a counting no-op uprobe) and agent
                  throughput (vs a loop that only encodes and produces)
    hot           a hot function under the agent's dedup/budget: slowdown, paths kept
    processor     worker throughput (vs consume + decode) with 1 and 2 workers; memory
    latency       call -> closed window's summary, p50/p99

The suite drives the parts through their public surfaces only: the `signals` command,
agent.probes.CallTracer's program (through `signals agent`), processor.engine.Engine and
schemas.codec, so it keeps working as their insides change.
"""
