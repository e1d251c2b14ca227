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


def test_the_neox_benchmark_terms_are_the_closed_forms_of_transformers_4_42_and_the_loop():
    """Buffers of 24 layers (2048² bool mask, fp32 cos/sin caches, two scalars booked at 512) less ours;
    the previous step's logits, fp32 keys and qkv outputs; SDPA: this step's fp32 keys; eager: fp32 q, k."""
    sdpa = dict(external.neox_train_terms(4, 512, "sdpa"))
    eager = dict(external.neox_train_terms(1, 1024, "eager"))
    buffers = 24 * (2048 * 2048 + 2 * 2048 * 16 * 4 + 512 + 512) - 2 * 512
    assert list(sdpa.values())[0] == list(eager.values())[0] == buffers == 106_978_304
    assert list(sdpa.values())[1] == 2048 * 50_304 * 2 + 24 * (2048 * 1024 * 4 + 2048 * 3072 * 2) + 512
    assert list(sdpa.values())[2] == 24 * 2048 * 1024 * 4
    assert list(eager.values())[2] == 24 * 2 * 1024 * 1024 * 2


def test_terms_at_forward_are_added_to_our_forwards_peak_with_its_cuda_terms():
    """A figure whose published run peaks in its forward adds its terms to our forward's traced peak
    plus the CUDA terms booked at the forward's end, not to our overall peak."""
    from verify.measure.fake import run as trace

    spec = dict(model="tiny-neox", mode="train", dtype="fp16", precision="pure", optimizer="none", loss="sum", batch=2,
                seq=32, attn="sdpa", gpu_arch="sm86")
    fig = dataclasses.replace(_tiny_figure(), id="tiny-neox-sum", spec=spec, terms=(("one byte", 1),), terms_at="forward",
                              cause="test")
    row = external.reproduce(fig)
    result = trace(external.memory_spec(fig))
    forward = result.phases["forward"] + result.snapshots["forward_end"]["cuda_terms"]
    assert result.snapshots["forward_end"]["cuda_terms"] > 0
    assert row["terms_added_to_bytes"] == forward and row["ours_plus_terms_bytes"] == forward + 1
    assert row["ours_bytes"] == result.peak_bytes


def test_the_neox_generation_terms_are_the_closed_forms_of_the_first_decode_step():
    """Buffers (mask, fp16 rotary caches, two scalars at 512), the cuBLAS workspace, the prefill's
    presents (fp16 key + the qkv output a value view keeps), its fp16 logits, and the first decode
    step's concatenated cache of S + 1 positions."""
    terms = [b for _, b in external.neox_generate_terms(4, 1024)]
    assert terms[0] == 24 * (2048 * 2048 + 2 * 2048 * 16 * 2 + 1024) == 103_833_600
    assert terms[1] == 8_519_680
    assert terms[2] == 24 * 4096 * 1024 * (2 + 6)
    assert terms[3] == 4096 * 50_304 * 2
    assert terms[4] == 2 * 24 * 4 * 1025 * 1024 * 2
