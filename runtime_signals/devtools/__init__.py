"""runtime_signals/devtools"""
