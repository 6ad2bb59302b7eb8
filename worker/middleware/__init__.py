"""Dramatiq middleware of the runtime: one concern per module."""
