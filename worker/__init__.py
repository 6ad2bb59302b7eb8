"""taskmaster-worker: the runtime every job stands on."""

__version__ = "0.1.0"
