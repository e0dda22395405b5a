"""The ``tunelab`` command line: one module per subcommand; parse → call the library → print."""
