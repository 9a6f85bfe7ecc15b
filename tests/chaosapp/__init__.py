"""The tasks, schedule and row writer of the chaos scenarios (tests/chaos.py)."""
