"""Tasks and models that the tests queue and inspect."""
