"""The claims ledger: the catalogue in the repository, a check for every id, verdict boundaries,
resume from JSONL only for results of the same code and machine, and a written report that
always holds the whole catalogue."""

import json
import re

import pytest

from verify.claims import Verdict, judge, ledger, verdict_for
from verify.claims.catalog import CATALOGUE_MD, catalog


def test_the_catalogue_holds_41_claims_each_from_a_listed_source_article():
    """verify/claims/CATALOGUE.md: 41 distinct ids in six groups; every seed a claim cites is one of
    the articles its Sources table lists (or "-" where no seed states it)."""
    entries = catalog()
    assert len(entries) == 41 and len({e.id for e in entries}) == 41
    assert {e.group for e in entries} == {"P", "B", "T", "I", "S", "L"}
    sources = set(re.findall(r"^\| (\d{3}) \|", CATALOGUE_MD.read_text(), flags=re.M))
    assert sources == {"000", "001", "002", "003", "004"}
    for e in entries:
        cited = {s.strip() for s in e.seed.split(",")}
        assert cited <= sources or cited == {"-"}, e


def test_every_claim_has_a_check_and_every_check_a_claim():
    """No claim is left without a measurement, and the table of checks names no unknown id."""
    table = ledger.checks()
    assert set(table) == {e.id for e in catalog()}
    assert all(table[cid] for cid in table)


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


def test_a_run_resumes_from_its_jsonl_only_what_the_same_code_measured(tmp_path):
    """Results an interrupted run left in the JSONL are reused when their fingerprint is this code's
    and machine's; a result with another fingerprint is measured again; a half-written last line
    is ignored. Every result carries measured_at (UTC, ISO 8601), fingerprint and commit."""
    jsonl = tmp_path / "claims.jsonl"
    first = ledger.run(backend="meta", only="P4,P5", jsonl=jsonl)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", c.measured_at) and c.fingerprint and c.commit for c in first)
    lines = jsonl.read_text().splitlines()
    assert len(lines) == 2
    same, other = json.loads(lines[0]), json.loads(lines[1])
    same["explanation"] = "reused from the file"
    other["explanation"] = "measured by other code"
    other["fingerprint"] = "0" * 16
    jsonl.write_text(json.dumps(same) + "\n" + json.dumps(other) + "\n" + '{"id": "P6", "verd')
    again = ledger.run(backend="meta", only="P4,P5,P6", jsonl=jsonl)
    assert again[0].explanation == "reused from the file"
    assert again[1].explanation == first[1].explanation and again[1].fingerprint == first[1].fingerprint
    assert again[2].id == "P6" and again[2].verdict == "CONFIRMED"


def test_a_claim_whose_backend_is_not_run_is_pending_not_guessed():
    """With --backend meta, a claim measured on fake tensors says 'pending: needs fake'."""
    table = ledger.checks()
    fake_only = [e.id for e in catalog() if set(table.get(e.id, {})) == {"fake"}]
    if not fake_only:
        pytest.skip("no fake-only check registered")
    (c,) = ledger.run(backend="meta", only=fake_only[0])
    assert c.verdict == "PENDING" and c.explanation == "pending: needs fake" and c.measured is None


def test_report_with_only_remeasures_those_claims_and_keeps_the_whole_catalogue(tmp_path):
    """`report --only` writes all 41 claims: the ones named, measured now; the others from the
    previous report, marked stale where other code measured them, PENDING where never measured.
    The measured figures are in CLAIMS.md; the JSONL of the run is gone once the run completes."""
    from verify import report

    report.write(out_dir=tmp_path, backend="meta", only="P3,P4", command="python -m verify report --only P3,P4")
    data = json.loads((tmp_path / "claims.json").read_text())
    assert len(data["claims"]) == 41 and data["fingerprint"]
    by_id = {c["id"]: c for c in data["claims"]}
    assert by_id["P3"]["fingerprint"] == data["fingerprint"] and by_id["P3"]["measured_at"]
    assert by_id["P7"]["verdict"] == "PENDING" and by_id["P7"]["measured_at"] is None
    assert not (tmp_path / "claims.jsonl").exists()
    # P4's entry now as if other code had measured it; then P7 alone is measured again
    by_id["P4"]["fingerprint"], by_id["P4"]["commit"] = "f" * 16, "0123abc"
    (tmp_path / "claims.json").write_text(json.dumps(data))
    paths = report.write(out_dir=tmp_path, backend="meta", only="P7", command="python -m verify report --only P7")
    data = json.loads((tmp_path / "claims.json").read_text())
    by_id = {c["id"]: c for c in data["claims"]}
    assert len(data["claims"]) == 41
    assert by_id["P4"]["stale"] is True and by_id["P3"]["stale"] is False and by_id["P7"]["stale"] is False
    md = (tmp_path / "CLAIMS.md").read_text()
    assert "GB = 10^9 bytes, GiB = 2^30 bytes" in md and "## Verdicts" in md and "(stale)" in md and "0123abc" in md
    assert f"{by_id['P7']['measured']:,}" in md
    assert any(p.suffix == ".png" and p.stat().st_size > 0 for p in paths)
