"""Training a CommerceMM tokenizer offline, with the `tokenizers` library.

No vocabulary can be downloaded where CommerceMM is often trained, so `train_commercemm_tokenizer` builds a
byte-level BPE or a WordPiece (BERT-style) tokenizer from any iterable of texts. Any `PreTrainedTokenizerFast` with
[CLS]/[SEP]/[PAD]/[MASK]-like tokens works with `CommerceMMProcessor` too (e.g. an imported BERT or XLM-R one).

This file travels as Hugging Face remote code: it imports transformers and tokenizers only.
"""

from collections.abc import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast


SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _checked_texts(texts: Iterable[str], seen: list) -> Iterator[str]:
    """The texts, refusing non-strings (None, a missing text, is skipped); counts the non-blank ones in `seen`."""
    for index, text in enumerate(texts):
        if text is None:
            continue
        if not isinstance(text, str):
            raise ValueError(f"texts[{index}] is a {type(text).__name__}, not a string.")
        if text.strip():
            seen[0] += 1
        yield text


def _wordpiece(lowercase: bool, vocab_size: int, min_frequency: int):
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    # NFKC (full-width forms, ligatures), then BERT's normaliser: control characters cleaned, CJK characters split
    # one by one, and when lowercasing NFD + accents stripped, as BERT-uncased does
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.NFKC(),
        normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase
        ),
    ])
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS, show_progress=False
    )
    return tokenizer, trainer, None


def _byte_level_bpe(lowercase: bool, vocab_size: int, min_frequency: int):
    tokenizer = Tokenizer(models.BPE())
    # NFKC (+ lowercase); accents are kept: they carry meaning in many languages and cost no unknown tokens here
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else []))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    return tokenizer, trainer, processors.ByteLevel(trim_offsets=True)


def train_commercemm_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 8000,
    algorithm: str = "bpe",
    lowercase: bool = True,
    model_max_length: int = 512,
    min_frequency: int = 2,
) -> PreTrainedTokenizerFast:
    """Train a tokenizer on `texts`, offline: special tokens [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4, and every
    text encoded as `[CLS] text [SEP]` (pairs as `[CLS] a [SEP] b [SEP]`).

    Args:
        texts: any iterable of strings (a list, a generator, a `datasets` column); `None` items are skipped.
        vocab_size: the largest vocabulary; a small corpus may learn fewer tokens.
        algorithm: `"bpe"` (default): byte-level BPE over NFKC-normalised text: any unicode, emoji included, encodes
            without unknown tokens, and training is reproducible (the same vocabulary in every process).
            `"wordpiece"`: BERT-style: NFKC, then BERT's normaliser (CJK characters split one by one; when
            lowercasing, NFD and accents stripped as BERT-uncased does); characters never seen in training become
            [UNK]. Note that the `tokenizers` WordPiece trainer breaks ties in hash-map order, so two runs on the
            same texts may learn slightly different vocabularies: keep the trained tokenizer with the model.
        lowercase: lowercase the text (and, for WordPiece, strip accents).
        model_max_length: the longest encoding; `CommerceMMProcessor` truncates to it by default.
        min_frequency: how often a merge must occur to be learned.

    Returns:
        A `PreTrainedTokenizerFast` with pad/unk/cls/sep/mask tokens and `model_max_length` set; `save_pretrained`
        writes `tokenizer.json`, which `AutoTokenizer` loads.

    Example:
        >>> tokenizer = train_commercemm_tokenizer(["red ceramic mug", "taza roja 😀", "红色杯子"] * 10, vocab_size=300)
        >>> ids = tokenizer("red mug 😀")["input_ids"]
        >>> ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id, tokenizer.unk_token_id in ids
        (True, False)
    """
    builders = {"bpe": _byte_level_bpe, "wordpiece": _wordpiece}
    if algorithm not in builders:
        raise ValueError(f"algorithm must be 'bpe' or 'wordpiece', got {algorithm!r}.")
    if isinstance(texts, str):
        raise ValueError("texts must be an iterable of strings, not one string (wrap it in a list).")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}.")
    if model_max_length < 2:
        raise ValueError(f"model_max_length must leave room for [CLS] and [SEP], got {model_max_length}.")
    tokenizer, trainer, byte_level = builders[algorithm](lowercase, vocab_size, min_frequency)
    seen = [0]
    tokenizer.train_from_iterator(_checked_texts(texts, seen), trainer=trainer)
    if seen[0] == 0:
        raise ValueError("The tokenizer learned no tokens: the training texts are empty or blank.")
    template = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[(token, tokenizer.token_to_id(token)) for token in ("[CLS]", "[SEP]")],
    )
    tokenizer.post_processor = template if byte_level is None else processors.Sequence([byte_level, template])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
    )


__all__ = ["SPECIAL_TOKENS", "train_commercemm_tokenizer"]
