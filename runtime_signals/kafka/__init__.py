"""runtime_signals/kafka"""
