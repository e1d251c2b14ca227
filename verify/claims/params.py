"""Checks of the ledger; see verify/claims/__init__.py for which ids live here."""
