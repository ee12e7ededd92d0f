"""The command line's error type and exit codes, owned here once for every subcommand.

The subcommands (pipeline/cli.py, serving/cli.py) raise CliError for bad input, and
textgen_cli.py, which dispatches to them, prints it and exits 2. TensorFlow-free and
importing nothing, so that serving/cli.py can take it without the rest of the pipeline:
the one import from `serving` into `pipeline` (tests/test_imports.py keeps it so).
"""

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
# The shell's code for a process ended by SIGINT (128 + 2): `textgen serve` after Ctrl-C.
EXIT_INTERRUPTED = 130
# sysexits' EX_TEMPFAIL: another run holds the pipeline root; try again later.
EXIT_BUSY = 75


class CliError(Exception):
    """One line for the user (what is wrong with which input, and what to do); exit code 2."""
