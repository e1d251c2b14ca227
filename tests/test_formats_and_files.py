"""Number formats, quantized storage, safetensors file sizes and the arithmetic claims
(N1 B1 B3 B4 B6 T7 Q1 P14): measured figures against the seeds' formulas."""

import pytest
import torch

from verify.build import build
from verify.claims import Context, Verdict
from verify.claims import other as checks
from verify.configs import load_config
from verify.formulas import other as F
from verify.measure.checkpoint import Spec, file_size, header, shards, specs, with_norms_in, written
from verify.measure.numerics import element_bytes, float_formats
from verify.measure.params import count


def test_bit_counts_and_maxima_of_fp32_fp16_bf16_match_the_seeds_table():
    """Sign/exponent/fraction bits read from the patterns of -0.0 and +inf equal the seed's 1/8/23, 1/5/10,
    1/8/7; finfo.max is exactly 65504 for fp16 and within the seed's rounding (0.5%) for fp32 and bf16."""
    seed = F.float_formats_table()
    for name, m in float_formats().items():
        assert (m.sign, m.exponent, m.fraction, m.bits, m.bytes) == tuple(
            seed[name][k] for k in ("sign", "exponent", "fraction", "bits", "bytes"))
        assert abs(m.max - seed[name]["max"]) / m.max <= 0.005
    assert float_formats()["fp16"].max == 65504.0


def test_the_seeds_minimum_is_the_most_negative_value_not_the_smallest_positive():
    """finfo.min = -finfo.max (the seed's "minimum"); the smallest positive fp16 values are far from it."""
    fp16 = float_formats()["fp16"]
    assert fp16.min == -fp16.max == -65504.0
    assert fp16.tiny == 2.0**-14 and fp16.subnormal == 2.0**-24


def test_the_seeds_fp16_maximum_formula_gives_finfo_max():
    """2^(30-15) · (1 + 1023/1024) = 65504, and the max bit pattern has exponent field 11110."""
    t = F.fp16_max_seed()
    assert t["2^(e-bias)"] * t["1+f/2^m"] == torch.finfo(torch.float16).max
    assert float_formats()["fp16"].max_bits == "0|11110|1111111111"


def test_element_sizes_are_the_seeds_bytes_per_parameter_for_floats_and_int8():
    """fp32 4, fp16 2, bf16 2, int8 1 byte per element, from real tensors."""
    e = element_bytes()
    assert (e["fp32"], e["fp16"], e["bf16"], e["int8"]) == (4, 2, 2, 1)


@pytest.fixture(scope="module")
def quantized_tiny():
    from verify.measure.quant import quantized_storage

    c = load_config("tiny-llama")
    return {(w, d): quantized_storage(c, w, device=d) for w in ("int8", "int4") for d in ("cpu", "meta")}


def test_quanto_storage_on_meta_equals_storage_of_real_cpu_quantization(quantized_tiny):
    """The same tensors and bytes whether quanto quantizes real weights or meta tensors: what lets the
    ledger count LLaMA-7B and 13B quantized on meta."""
    for w in ("int8", "int4"):
        assert quantized_tiny[(w, "cpu")].by_suffix == quantized_tiny[(w, "meta")].by_suffix


def test_int8_weights_take_one_byte_each_plus_one_scale_per_output_row(quantized_tiny):
    """int8 data bytes = quantized parameters; scales: one (bf16, the model's dtype) per output row of every
    quantized layer."""
    q = quantized_tiny[("int8", "cpu")]
    model = build(load_config("tiny-llama"), device="meta")
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert q.data_bytes == q.quantized_params == sum(m.weight.numel() for m in linears)
    assert q.by_suffix["weight._scale"] == 2 * sum(m.out_features for m in linears)
    assert q.bytes_per_quantized_param > 1.0


def test_int4_weights_take_half_a_byte_each_plus_scale_and_shift_per_group_of_128():
    """On LLaMA-7B (meta) int4 packs two values per byte and each group of 128 values carries a bf16
    scale and shift: 0.5 + 4/128 bytes per weight, plus two bf16 activation scales per layer."""
    from verify.measure.quant import quantized_storage

    q = quantized_storage(load_config("llama-7b"), "int4", device="meta")
    assert q.group_sizes == [128]
    assert q.data_bytes * 2 == q.quantized_params
    assert q.by_suffix["weight._scale"] == q.by_suffix["weight._shift"] == 2 * q.quantized_params // 128
    layers = 32 * 7 + 1  # seven projections per layer and lm_head
    assert q.quantized_bytes == q.quantized_params // 2 + 4 * q.quantized_params // 128 + 2 * 2 * layers


def test_safetensors_header_rebuilt_from_names_and_shapes_equals_the_librarys(tmp_path):
    """Byte-exact: a mixed-dtype dict (F32, BF16, F16, I8, U8) serialized by safetensors has the header
    `header()` builds without the data, and the file size is 8 + header + data."""
    from safetensors.torch import save

    tensors = {"z.weight": torch.zeros(3, 5, dtype=torch.float16), "a.bias": torch.zeros(7, dtype=torch.float32),
               "m": torch.zeros(2, 9, dtype=torch.bfloat16), "q": torch.zeros(11, dtype=torch.int8),
               "p": torch.zeros(4, 4, dtype=torch.uint8)}
    blob = save(tensors, metadata={"format": "pt"})
    spec_list = [Spec(k, v.dtype, tuple(v.shape)) for k, v in tensors.items()]
    n = int.from_bytes(blob[:8], "little")
    assert blob[8:8 + n] == header(spec_list)
    assert len(blob) == file_size(spec_list).total_bytes


@pytest.mark.parametrize("name,dtype", [("tiny-llama", torch.float16), ("tiny-gpt2", torch.float32), ("tiny-mixtral", torch.bfloat16)])
def test_written_checkpoints_have_exactly_the_size_the_rule_predicts(tmp_path, name, dtype):
    """save_file of real models (tied GPT-2 stored once): file on disk = 8 + rebuilt header + tensor bytes."""
    torch.manual_seed(0)
    r = written(build(load_config(name), device="cpu", dtype=dtype), tmp_path / "m.safetensors")
    assert r["header_identical"] and r["file_bytes"] == r["rule_bytes"]


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_sharded_save_pretrained_files_have_the_sizes_the_rule_gives_each_shard(tmp_path, name):
    """transformers' save_pretrained with a 100KB shard limit: every shard on disk has the rule's size."""
    import os

    model = build(load_config(name), device="cpu", dtype=torch.float16)
    model.save_pretrained(tmp_path, max_shard_size="100KB")
    disk = {f: os.path.getsize(tmp_path / f) for f in os.listdir(tmp_path) if f.endswith(".safetensors")}
    assert len(disk) > 1
    assert disk == {f: s.total_bytes for f, s in shards(model, "100KB").items()}


def test_llama7b_fp16_file_is_two_bytes_per_counted_parameter_plus_header():
    """The meta-built LLaMA-7B's file: tensor bytes = 2 × 6,738,415,616, plus 8 + a ~33 KB header."""
    model = build(load_config("llama-7b"), device="meta", dtype=torch.float16)
    size = file_size(specs(model))
    assert size.tensor_bytes == 2 * count(model).total == 2 * 6_738_415_616
    assert size.total_bytes == 8 + size.header_bytes + size.tensor_bytes
    assert abs(size.total_bytes - 13.5e9) / size.total_bytes < 0.005


def test_keeping_norms_in_fp32_adds_two_bytes_per_norm_parameter():
    """Tensor bytes grow by exactly 2 × (norm parameters); nothing else changes dtype."""
    model = build(load_config("tiny-llama"), device="meta", dtype=torch.float16)
    norms = count(model).by_component["norms"]
    half, mixed = specs(model), with_norms_in(model, torch.float32)
    assert sum(s.nbytes for s in mixed) - sum(s.nbytes for s in half) == F.total(F.norms_fp32_extra(norms))
    assert sum(s.dtype == torch.float32 for s in mixed) == 2 * 2 + 1  # two per layer, one final


def test_a_dtype_safetensors_order_is_unknown_for_is_rejected_by_name():
    """One clear error naming the dtype and the known ones."""
    with pytest.raises(ValueError, match="complex64"):
        header([Spec("x", torch.complex64, (2,))])


def test_scaling_arithmetic_one_point_one_not_ten_to_the_one_over_alpha():
    """1.1^(1/0.07) ≈ 3.90 (the seed's 3.7 is 5% off it); 10^(1/0.07) ≈ 1.9e14."""
    t = F.scaling_multiplier(0.07, 0.10)
    assert t["(1+gain)^(1/α)"] == pytest.approx(3.9023, abs=1e-4)
    assert t["10^(1/α)"] == pytest.approx(1.93e14, rel=0.01)
    assert checks.t7(Context("arith")).verdict == Verdict.APPROXIMATE.value


def test_fourteen_billion_fp16_is_28_gb_but_26_gib():
    """28e9 bytes: exactly 28 GB, 26.08 GiB; the B4 check refutes the 1024³ reading."""
    assert F.total(F.fp16_model_bytes(14)) == 28 * 10**9
    c = checks.b4(Context("arith"))
    assert c.measured == pytest.approx(26.077, abs=1e-3) and c.verdict == Verdict.REFUTED.value


def test_power_of_two_alignment_and_padding_of_qwen2_embedding():
    """151936 = 2^7 · 1187; minus 151,643 tokens and 3 special tokens leaves 290 rows; bad input is named."""
    assert F.power_of_two_alignment(151_936) == {"2^k": 128, "odd factor": 1187}
    assert F.embedding_padding(151_936, 151_643, 3)["unused rows"] == 290
    with pytest.raises(ValueError, match="positive"):
        F.power_of_two_alignment(0)


def test_p14_measures_the_embedding_rows_of_the_meta_built_qwen2():
    """The check reads Embedding(151936, 896) from the module and bos/eos 151643 from the config."""
    c = checks.p14(Context("meta"))
    assert c.verdict == Verdict.CONFIRMED.value
    assert c.evidence["embedding shape (meta module)"] == [151_936, 896]
    assert c.evidence["config bos/eos"] == [151_643, 151_643]


def test_lora_parameter_formula_of_the_seeds_layer():
    """A 1024×32 + B 32×2048 = 98,304 trainable."""
    assert F.total(F.lora_params(1024, 2048, 32)) == 98_304


def test_every_other_claim_runs_through_the_ledger_to_its_verdict():
    """All sixteen checks run (no ERROR) and reach the verdicts their measurements support today."""
    from verify.claims import ledger

    expected = {"N1": "CONFIRMED", "B1": "APPROXIMATE", "B3": "CONFIRMED", "B4": "REFUTED", "B6": "CONFIRMED",
                "S1": "CONFIRMED", "S2": "CONFIRMED", "S3": "CONFIRMED", "S4": "CONFIRMED", "L1": "CONFIRMED",
                "L2": "CONFIRMED", "L3": "REFUTED", "A1": "CONFIRMED", "T7": "APPROXIMATE", "Q1": "NOT TESTABLE HERE",
                "P14": "CONFIRMED"}
    claims = ledger.run(backend="fake", only=",".join(expected))
    got = {c.id: c.verdict for c in claims}
    assert got == expected, {c.id: c.explanation for c in claims if got[c.id] != expected[c.id]}
    assert all(c.evidence and c.command.startswith("python -m verify") for c in claims)
