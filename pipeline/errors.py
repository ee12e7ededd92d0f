"""The command line's error type and exit codes, owned here once for every subcommand.

pipeline/cli.py catches CliError and serving/cli.py raises it; neither imports the other
for it, so importing either module alone pulls in no cycle.
"""

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
# The shell's code for a process ended by SIGINT (128 + 2): `textgen serve` after Ctrl-C.
EXIT_INTERRUPTED = 130
# sysexits' EX_TEMPFAIL: another run holds the pipeline root; try again later.
EXIT_BUSY = 75


class CliError(Exception):
    """One line for the user (what is wrong with which input, and what to do); exit code 2."""
