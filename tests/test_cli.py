"""The command line: JSON shapes, tables, and one clear line with exit status 2 on bad input."""

import json
import subprocess
from pathlib import Path
import sys

import pytest

from verify.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_params_json_has_an_int_total_and_the_breakdowns(capsys):
    """`params MODEL --json` prints one object: the int total and its breakdowns, each equal to the
    sizes written in the config file (GQA attention, SwiGLU MLP, RMSNorm, untied head), and the
    seed formulas beside them."""
    cfg = json.loads((ROOT / "models" / "tiny-llama-gqa.json").read_text())
    h, L, V, f = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"], cfg["intermediate_size"]
    d = h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * d, cfg["num_key_value_heads"] * d
    expected = {"embedding": V * h, "attention": L * (2 * h * q + 2 * h * kv), "mlp": L * 3 * h * f,
                "norms": (2 * L + 1) * h, "output_head": V * h}
    assert main(["params", "tiny-llama-gqa", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["by_component"] == expected and out["total"] == sum(expected.values())
    assert out["by_kind"] == {"matrix": out["total"] - (2 * L + 1) * h, "norm_scale": (2 * L + 1) * h}
    claims = {c["claim"] for c in out["formulas"]["components"]}
    assert claims == {"P1", "P2", "P3", "P4", "P5", "P6"}
    exact = [t for t in out["formulas"]["totals"] if t["formula"].startswith("closed form")][0]
    assert exact["predicted"] == out["total"] and exact["rel_error"] == 0


def test_params_table_names_the_terms_the_seed_formula_misses(capsys):
    """The table form of a GQA + SwiGLU + untied model lists those corrections with their sizes."""
    assert main(["params", "llama3-8b"]) == 0
    out = capsys.readouterr().out
    assert "8,030,261,248" in out
    for term in ("GQA/MQA", "SwiGLU", "untied output head"):
        assert term in out


def test_params_accepts_a_path_to_a_config_json(tmp_path, capsys):
    """Any config.json path works, named after its folder."""
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text((ROOT / "models" / "tiny-qwen2.json").read_text())
    assert main(["params", str(tmp_path / "m"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "m" and out["tied"]


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["params", "no-such-model"], "unknown model"),
        (["params", "models/does-not-exist.json"], "no such config file"),
        (["claims", "--only", "P1,ZZ9"], "unknown claim id"),
    ],
)
def test_bad_input_prints_one_line_and_exits_2(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_a_config_without_a_causal_lm_class_is_one_line_and_exit_2(tmp_path, capsys):
    """T5 is an encoder-decoder: transformers knows it but has no causal-LM class for it."""
    (tmp_path / "config.json").write_text('{"model_type": "t5"}')
    assert main(["params", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no causal-LM class" in err and len(err.splitlines()) == 1


def test_python_dash_m_verify_runs_as_a_program():
    """`python -m verify params tiny-gpt2 --json` works from a shell and exits 0."""
    r = subprocess.run([sys.executable, "-m", "verify", "params", "tiny-gpt2", "--json"], capture_output=True, text=True, timeout=300,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["total"] > 0


def test_the_tested_torch_releases_are_stated_once_in_pyproject_and_torchapi():
    """pyproject.toml's [tool.verify.tested] lists the torch releases verify/torchapi.py names, and
    the torch and transformers running these tests are among them."""
    import tomllib

    import torch
    import transformers

    from verify.torchapi import TESTED_TORCH

    tested = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["verify"]["tested"]
    assert tuple(tested["torch"]) == TESTED_TORCH
    assert torch.__version__.split("+")[0] in tested["torch"]
    assert transformers.__version__ in tested["transformers"]
