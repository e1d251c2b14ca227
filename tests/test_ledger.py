"""The claims ledger: every id of CLAIMS.md has an entry, verdict boundaries, resume from JSONL,
and a written report whose tables hold the measured numbers."""

import json
import re
from pathlib import Path

import pytest

from verify.claims import Verdict, judge, verdict_for
from verify.claims import ledger
from verify.claims.catalog import BY_ID, CATALOG

CLAIMS_MD = Path(__file__).resolve().parents[2] / "shared" / "CLAIMS.md"


def _ids_in_claims_md() -> list[str]:
    return re.findall(r"^\| ([A-Z]\d+) \|", CLAIMS_MD.read_text(), flags=re.M)


@pytest.mark.skipif(not CLAIMS_MD.exists(), reason="the steering repo's shared/CLAIMS.md is not beside this checkout")
def test_every_id_in_claims_md_has_a_catalogue_entry_and_no_other():
    """The catalogue holds exactly the ids of shared/CLAIMS.md."""
    ids = _ids_in_claims_md()
    assert len(ids) == 41
    assert sorted(ids) == sorted(BY_ID)


def test_every_claim_has_a_registered_check():
    """No claim is left without a measurement: each id has a check on some backend."""
    checks = ledger.checks()
    missing = [e.id for e in CATALOG if e.id not in checks]
    assert not missing, f"no check registered for {missing}"


@pytest.mark.parametrize(
    "rel,tol,loose,expected",
    [
        (0.0, 0.0, None, Verdict.CONFIRMED),
        (1e-12, 0.0, None, Verdict.REFUTED),
        (0.01, 0.01, 0.05, Verdict.CONFIRMED),
        (-0.0101, 0.01, 0.05, Verdict.APPROXIMATE),
        (0.05, 0.01, 0.05, Verdict.APPROXIMATE),
        (-0.0501, 0.01, 0.05, Verdict.REFUTED),
    ],
)
def test_verdict_boundaries_are_inclusive(rel, tol, loose, expected):
    assert verdict_for(rel, tol, loose) is expected


def test_judge_computes_the_signed_relative_error_against_the_measurement():
    c = judge("P4", predicted=110, measured=100, unit="params", tolerance=0.05, loose=0.2, explanation="x",
              backend="meta", command="c", corrected_value=100)
    assert c.rel_error == pytest.approx(0.10) and c.verdict == "APPROXIMATE" and c.corrected_rel_error == 0


def test_a_run_resumes_from_its_jsonl_and_skips_a_cut_line(tmp_path):
    """Results already in the JSONL are reused, not re-measured; a half-written last line is ignored."""
    jsonl = tmp_path / "claims.jsonl"
    first = ledger.run(backend="meta", only="P4,P5", jsonl=jsonl)
    lines = jsonl.read_text().splitlines()
    assert len(lines) == 2
    doctored = json.loads(lines[0])
    doctored["explanation"] = "reused from the file"
    jsonl.write_text(json.dumps(doctored) + "\n" + lines[1] + "\n" + '{"id": "P6", "verd')
    again = ledger.run(backend="meta", only="P4,P5,P6", jsonl=jsonl)
    assert again[0].explanation == "reused from the file"
    assert again[1].as_dict() == first[1].as_dict()
    assert again[2].id == "P6" and again[2].verdict == "CONFIRMED"


def test_a_claim_whose_backend_is_not_run_is_pending_not_guessed():
    """With --backend meta, a claim measured on fake tensors says 'pending: needs fake'."""
    table = ledger.checks()
    fake_only = [e.id for e in CATALOG if set(table.get(e.id, {})) == {"fake"}]
    if not fake_only:
        pytest.skip("no fake-only check registered")
    (c,) = ledger.run(backend="meta", only=fake_only[0])
    assert c.verdict == "PENDING" and c.explanation == "pending: needs fake" and c.measured is None


def test_report_over_tiny_run_holds_the_measured_numbers(tmp_path):
    """The written CLAIMS.md has the header, the verdict counts and the measured figures of the run."""
    from verify import report

    paths = report.write(out_dir=tmp_path, backend="meta", only="P3,P4,P7", command="python -m verify report --only P3,P4,P7")
    md = (tmp_path / "CLAIMS.md").read_text()
    data = json.loads((tmp_path / "claims.json").read_text())
    assert "torch" in md and "GB = 10^9 bytes, GiB = 2^30 bytes" in md and "## Verdicts" in md
    for c in data["claims"]:
        assert f"{c['measured']:,}" in md
    assert any(p.suffix == ".png" and p.stat().st_size > 0 for p in paths)
    assert data["hardware"]["torch"]
