"""Tiny tokenizers of the kinds the seed releases ship, saved by the seeds' own transformers as the releases are.

Run in a seed environment (``seedenv-llava``: transformers 4.37.2; ``seedenv-ross``: 4.43.1), never in vlmkit's.

* ``llama OUT``: a SentencePiece BPE model (byte fallback, ``<unk>``/``<s>``/``</s>`` at 0/1/2, as Llama's),
  loaded as the slow ``LlamaTokenizer`` and saved with ``save_pretrained`` after LLaVA's ``train.py`` step
  ``tokenizer.pad_token = tokenizer.unk_token``. That writes exactly what liuhaotian/llava-v1.5-7b and its
  forks ship: ``tokenizer.model``, ``tokenizer_config.json``, ``special_tokens_map.json`` (no ``tokenizer.json``).
* ``qwen2 OUT``: a byte-level BPE (``vocab.json`` + ``merges.txt``) loaded as the slow ``Qwen2Tokenizer`` with
  Qwen2's three special tokens and its ChatML template, saved with ``save_pretrained`` (Ross's builder loads
  it with ``use_fast=False``): ``vocab.json``, ``merges.txt``, ``tokenizer_config.json``,
  ``special_tokens_map.json``, ``added_tokens.json``.

Both vocabularies hold every word the fixtures' batches use as a single token (checked here).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

#: words the fixture batches (llava_original.batch) spell, plus the chat templates' words
WORDS = ("what color is the circle ? count and how many shapes there a red square in picture yes no "
         "A chat between curious user artificial intelligence assistant gives helpful detailed polite "
         "answers to questions USER ASSISTANT blue green triangle image describe left right").split()
QWEN_CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
               "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
               "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
               "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def _corpus(path: Path) -> None:
    lines = []
    for i in range(60):
        lines.append(" ".join(WORDS[(i + j) % len(WORDS)] for j in range(12)))
        lines.extend(WORDS)
    path.write_text("\n".join(lines) + "\n")


def make_llama(out: Path) -> None:
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        _corpus(corpus)
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(Path(tmp) / "sp"), vocab_size=640, model_type="bpe",
            byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            add_dummy_prefix=True, split_digits=True, normalization_rule_name="identity", num_threads=1)
        tok = LlamaTokenizer(vocab_file=str(Path(tmp) / "sp.model"), legacy=False)
        tok.pad_token = tok.unk_token  # LLaVA's train.py, for conversation version v1
        tok.model_max_length = 256
        tok.save_pretrained(out)
    _check(out)


def make_qwen2(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        _corpus(corpus)
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        bpe.train([str(corpus)], trainer)
        bpe.model.save(tmp)  # vocab.json, merges.txt
        tok = Qwen2Tokenizer(vocab_file=str(Path(tmp) / "vocab.json"), merges_file=str(Path(tmp) / "merges.txt"),
                             errors="replace", unk_token=None, bos_token=None, eos_token="<|endoftext|>",
                             pad_token="<|endoftext|>")
        tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        tok.chat_template = QWEN_CHATML
        tok.model_max_length = 256
        tok.save_pretrained(out)
    _check(out)


def word_ids(folder: Path) -> dict[str, int]:
    """Each fixture word's single token id, as the slow tokenizer (what the originals load) encodes it."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), use_fast=False)
    out = {}
    for w in WORDS:
        ids = tok.encode(w, add_special_tokens=False)
        if len(ids) != 1:
            raise SystemExit(f"{folder}: '{w}' is {len(ids)} tokens; the fixture batches need one")
        out[w] = ids[0]
    return out


def _check(out: Path) -> None:
    ids = word_ids(out)
    print(f"wrote {out}: {sorted(p.name for p in out.iterdir())}; {len(ids)} words are single tokens")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=("llama", "qwen2"))
    p.add_argument("out", type=Path)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    {"llama": make_llama, "qwen2": make_qwen2}[args.kind](args.out)
    print(json.dumps({"kind": args.kind, "files": sorted(p.name for p in args.out.iterdir())}))


if __name__ == "__main__":
    main()
