"""ucoder: unsupervised self-improvement of code LLMs (UCoder / IPC)."""

__version__ = "0.1.0"
