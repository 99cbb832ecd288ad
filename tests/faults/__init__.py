"""Fault tests (RELIABILITY.md R1-R7): the service under kills, restarts and lost messages."""
