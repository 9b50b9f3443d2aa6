"""Errors of the agent.

AgentError
 ├── ConfigError     a setting or flag is wrong (names the setting)
 ├── ProbeError      a binary or symbol cannot be probed (names both)
 └── BpfLoadError    the BPF program did not compile or load
"""


class AgentError(Exception):
    """Root of the agent's errors."""


class ConfigError(AgentError):
    """A setting or command-line flag is invalid."""


class ProbeError(AgentError):
    """A probe target (binary or symbol) cannot be attached."""


class BpfLoadError(AgentError):
    """The BPF program could not be compiled or loaded."""
