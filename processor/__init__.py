"""The stream-processing stage: raw call events in, per-container call-path summaries out.

Pure logic (windows, aggregate, symbolize) is kept apart from the Kafka wiring (app, kafka_io)
so that it is tested without a broker and replays give the same bytes.
"""
