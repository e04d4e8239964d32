"""Typed errors of the user-facing layer.

Library code raises typed errors (`networks.NetworkError`, `specs.SpecError`, ...);
`ProfitError` covers what only the API/CLI layer can get wrong: an input file that
does not fit the network, a bad sample index, a bad combination of arguments. The
CLI prints any of them as one line and exits with code 2.
"""


class ProfitError(Exception):
    """A user error detected by the profit API or CLI (the message is one line)."""
