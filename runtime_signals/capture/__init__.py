"""runtime_signals/capture"""
