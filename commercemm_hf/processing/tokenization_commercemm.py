"""Training a CommerceMM tokenizer offline, with the `tokenizers` library.

No vocabulary can be downloaded where CommerceMM is often trained, so `train_commercemm_tokenizer` builds a
WordPiece (BERT-style) or byte-level BPE tokenizer from any iterator of texts. Any `PreTrainedTokenizerFast` with
[CLS]/[SEP]/[PAD]/[MASK]-like tokens works with `CommerceMMProcessor` too (e.g. an imported BERT or XLM-R one).

This file travels as Hugging Face remote code: transformers and tokenizers only.
"""

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast


SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_commercemm_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 8000,
    algorithm: str = "wordpiece",
    lowercase: bool = True,
    model_max_length: int = 512,
    min_frequency: int = 2,
) -> PreTrainedTokenizerFast:
    """Train a tokenizer on `texts`; special tokens [PAD]=0, [UNK], [CLS], [SEP], [MASK]; `[CLS] text [SEP]`.

    `algorithm="wordpiece"` (BERT-like: NFD, accents stripped when lowercasing, whitespace/punctuation splits, CJK
    characters split one by one) or `"bpe"` (byte-level: any unicode, emoji included, without unknown tokens).

    Example:
        >>> from commercemm_hf import train_commercemm_tokenizer
        >>> tokenizer = train_commercemm_tokenizer(["red ceramic mug", "blue cotton t-shirt"] * 10, vocab_size=200)
        >>> tokenizer("red mug")["input_ids"][0] == tokenizer.cls_token_id
        True
    """
    if algorithm not in ("wordpiece", "bpe"):
        raise ValueError(f"algorithm must be 'wordpiece' or 'bpe', got {algorithm!r}.")
    if vocab_size < len(SPECIAL_TOKENS) + 1:
        raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}.")
    if algorithm == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        # BERT's normaliser: control characters cleaned, CJK characters split one by one, accents stripped when
        # lowercasing
        tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase
        )
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS)
    else:
        tokenizer = Tokenizer(models.BPE(unk_token=None))
        steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
        tokenizer.normalizer = normalizers.Sequence(steps)
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    tokenizer.train_from_iterator((text for text in texts if isinstance(text, str)), trainer=trainer)
    if tokenizer.get_vocab_size() <= len(SPECIAL_TOKENS):
        raise ValueError("The tokenizer learned no tokens: the training texts are empty.")
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
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
