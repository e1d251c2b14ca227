"""Pure formulas (no torch): each returns a dict of named terms whose sum is the formula's figure."""


def total(terms: dict) -> int | float:
    """The figure of a formula: the sum of its named terms."""
    return sum(terms.values())
