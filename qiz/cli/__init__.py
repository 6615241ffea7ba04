"""The ``qiz`` command line. Every command has ``--json``; user errors are one line, exit 2."""
