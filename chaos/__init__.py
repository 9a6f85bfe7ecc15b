"""Runs the chaos scenarios at their long size: ``python -m chaos`` (see __main__)."""
