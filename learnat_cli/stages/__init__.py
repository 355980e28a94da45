"""The eight pipeline stages, one module each, named as the subcommands."""
