"""`textgen serve` and `textgen generate` (filled in by the serving work)."""


def add_parsers(subparsers) -> None:
    del subparsers
