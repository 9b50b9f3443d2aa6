"""The stream-processing stage: raw call events in, per-container call-path summaries out.

Pure logic (windows, aggregate, symbolize) is kept apart from the faust wiring (app)
so that it is tested without a broker and replays give the same bytes.
"""
