"""The node agent: attach uprobes, read the ring buffer, publish raw call events to Kafka.

The agent stays thin: it captures and ships. Symbolization, hashing and windows
belong to the processor; the agent sends what the processor needs for them.
"""
