class CliError(Exception):
    """A failure the user can act on: printed as one line, exit code 2."""
