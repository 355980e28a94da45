"""The ``learnat`` Typer app: one thin module per subcommand (parse options, build a config, call the core in
``learnat_cli``, write records). Errors become one-line messages at the single boundary in ``common.run``."""
