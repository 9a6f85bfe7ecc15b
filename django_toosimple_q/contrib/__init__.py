"""Optional integrations, each an app of its own to add to INSTALLED_APPS."""
