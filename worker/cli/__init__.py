"""The `taskmaster-worker` command line: one module per command group."""
