"""runtime-signals: eBPF call observation, Kafka transport and per-container call-path summaries."""

# Every Prometheus metric is named runtime_signals_<part>_<name> (agent, processor, ...).
METRIC_NAMESPACE = "runtime_signals"
