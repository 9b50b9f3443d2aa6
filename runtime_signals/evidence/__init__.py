"""runtime_signals/evidence"""
