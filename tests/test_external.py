"""The catalogue of GPU memory figures others published (verify/external.py): every entry is cited
and buildable, reproducible entries have valid specs, and a reproduction writes the report."""

import dataclasses
import json
from decimal import Decimal

import pytest

from verify import external
from verify.build import build
from verify.configs import load_config, shape
from verify.measure.memory import validate
from verify.units import UNITS


def test_every_entry_cites_its_source_place_api_and_a_positive_published_figure():
    """Each figure has a source URL, a place in it, the API that printed it, and a positive size
    equal to the printed number times the printing code's unit."""
    figures = external.catalogue()
    assert len(figures) >= 10 and len({f.id for f in figures}) == len(figures)
    for f in figures:
        assert f.source.startswith("https://"), f.id
        assert f.where and f.quote and f.api and f.gpu and f.versions and f.covers, f.id
        assert f.published_unit in UNITS and f.compare in ("peak", "steady"), f.id
        assert f.published_bytes > 0, f.id
        assert abs(f.published_bytes - Decimal(f.published) * UNITS[f.published_unit]) <= 1, f.id


def test_every_entry_model_config_exists_and_builds_on_the_meta_device():
    """The model each figure needs is bundled (or a config path) and builds without storage."""
    for name in sorted({f.spec["model"] for f in external.catalogue()}):
        model = build(load_config(name), device="meta")
        assert sum(p.numel() for p in model.parameters()) > 0, name


def test_the_spec_of_every_reproducible_entry_validates_and_the_others_say_what_they_need():
    """Entries our backend can run have a MemorySpec that validates against their model; the
    others name the feature they wait for and give no cause (nothing of ours to explain)."""
    for f in external.catalogue():
        if f.needs:
            assert not f.cause and not f.terms, f.id
            continue
        validate(external.memory_spec(f), shape(load_config(f.spec["model"])))
        assert f.cause or not f.terms, f.id


def test_only_selects_in_catalogue_order_and_rejects_unknown_ids():
    """--only keeps the catalogue's order and names the ids that exist when one does not."""
    ids = [f.id for f in external.catalogue()]
    assert [f.id for f in external.select(f"{ids[3]},{ids[0]}")] == [ids[0], ids[3]]
    with pytest.raises(ValueError, match="unknown figure id"):
        external.select("no-such-figure")


def _tiny_figure() -> external.Figure:
    """A reproducible catalogue entry moved to the tiny Llama, so that the whole path runs in seconds."""
    fig = next(f for f in external.catalogue() if not f.needs and f.compare == "peak")
    spec = dict(model="tiny-llama", mode="train", dtype="bf16", precision="pure", optimizer="adamw", batch=2, seq=64,
                attn="sdpa", checkpointing=False)
    return dataclasses.replace(fig, id="tiny-llama-train", spec=spec, published="1", published_unit="MB")


def test_a_cheap_reproduction_writes_the_report_files_with_the_header(tmp_path):
    """A reproduction on the smallest model traces it now, compares it with the published bytes,
    and writes EXTERNAL.md (header with command, commit, date, machine, versions) and external.json."""
    fig = _tiny_figure()
    rows, paths = external.write(out_dir=tmp_path, figures=[fig], command="python -m verify external --only x")
    assert [p.name for p in paths] == ["EXTERNAL.md", "external.json"]
    row = rows[0]
    assert row["status"] == "reproduced" and row["ours_bytes"] > 0
    assert row["rel_error"] == pytest.approx((row["ours_bytes"] - 10**6) / 10**6)
    text = (tmp_path / "EXTERNAL.md").read_text()
    for needle in ("- command: `python -m verify external --only x`", "- code: commit", "- measured: ", "- machine: ",
                   "- versions: Python", "GB = 10^9 bytes, GiB = 2^30 bytes", "tiny-llama-train"):
        assert needle in text
    saved = json.loads((tmp_path / "external.json").read_text())
    assert saved["rows"][0]["ours_bytes"] == row["ours_bytes"] and saved["hardware"]["torch"]
    assert not (tmp_path / "external.jsonl").exists()  # a complete run leaves no resume file


def test_an_interrupted_run_resumes_from_its_jsonl(tmp_path):
    """Rows appended to the JSONL by this code are reused, not measured again; an entry waiting for
    a feature is listed as such without a trace."""
    fig, waiting = _tiny_figure(), next(f for f in external.catalogue() if f.needs)
    jsonl = tmp_path / "external.jsonl"
    first = external.run(figures=[fig, waiting], jsonl=jsonl)
    assert first[1]["status"] == "not reproduced yet" and first[1]["ours_bytes"] is None
    seen = []
    again = external.run(figures=[fig, waiting], jsonl=jsonl, progress=lambda i, n, row, resumed: seen.append(resumed))
    assert seen == [True, True] and again[0]["measured_at"] == first[0]["measured_at"]
    assert external.explanation(again[1]).startswith("not reproduced yet: needs ")


def test_the_command_rejects_an_unknown_id_with_one_line_and_status_2(tmp_path, capsys):
    """`python -m verify external --only BAD` exits 2 with one line naming the ids, writing nothing."""
    from verify.cli import main

    assert main(["external", "--only", "no-such-figure", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown figure id(s) no-such-figure") and "\n" not in err
    assert not (tmp_path / "out").exists()
