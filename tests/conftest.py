"""Shared fixtures: one full ledger run per test session (about 2.5 minutes on 2 cores), read by
every test that checks the ledger's figures or its written report."""

import pytest


@pytest.fixture(scope="session")
def traced_ledger_claims():
    """Every claim of the catalogue, measured on the CPU backends (meta, cpu, fake) as a machine
    without a GPU measures them, with fake-backend peaks from the trace alone (no modelled CUDA
    terms: those are a layer added on top, shown apart)."""
    from verify.claims import ledger

    return ledger.run(backend="fake", gpu_terms=False)
