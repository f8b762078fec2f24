"""A small, fully local tokenizer for the embedded default (no downloads).

WordPiece over a fixed vocabulary: every printable ASCII character (so any ASCII text encodes) plus a
list of whole words used by the chat templates and the synthetic data. Deterministic: the same
vocabulary is built every time, and it is saved as ``tokenizer.json`` with checkpoints.
"""

from __future__ import annotations

import string

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]

WORDS = """
a an the is are was of in on at to and or with what which where how many color colour shape object
objects image picture photo there this that it its left right top bottom upper lower middle center
centre corner side one two three four five six seven eight nine ten zero none red green blue yellow
purple orange white black gray grey pink cyan magenta brown circle square triangle star cross diamond
ellipse rectangle hexagon shapes yes no A chat between curious user artificial intelligence assistant
gives helpful detailed polite answers user's questions USER ASSISTANT Human Assistant system
Answer question using single word phrase Describe describe briefly short caption please Please
provide region object within pointed by arrow point scribble mask contour rectangle ellipse triangle
do you see count number largest smallest big small large tiny Is Are What Which Where How
""".split()


def build_tiny_tokenizer():
    """Return a transformers ``PreTrainedTokenizerFast`` built from the fixed vocabulary."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for tok in SPECIALS:
        vocab.setdefault(tok, len(vocab))
    chars = [c for c in string.printable if c not in string.whitespace]
    for c in chars:
        vocab.setdefault(c, len(vocab))
    for c in chars:
        vocab.setdefault("##" + c, len(vocab))
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
        vocab.setdefault("##" + w, len(vocab))

    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="<unk>", max_input_chars_per_word=200))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        additional_special_tokens=["<image>"],
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
