"""runtime-signals: eBPF call observation, Kafka transport and per-container call-path summaries."""
