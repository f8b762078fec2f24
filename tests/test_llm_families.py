"""Current LLM families behind a vision tower: Llama-3.x, Qwen2.5, Phi-3, Gemma-2, Mistral.

Each family gets a tiny config of its own architecture and a tiny tokenizer of its own type (the family's
transformers tokenizer class, its special tokens, a chat template of its released form), and must: build behind
an encoder, train steps whose labels supervise exactly the assistant answers and their end-of-turn marker under
``template: chat_template``, generate, take LoRA adapters, and give ``--meta`` parameter counts equal to the
released models' published counts. Gemma's embedding scale and sliding window, and tied embeddings, are
checked against the family's own transformers model.
"""

from __future__ import annotations

import json

import pytest
import torch

from vlmkit.data.processing import MultimodalProcessor, collate
from vlmkit.data.templates import Turn
from vlmkit.model.assembly import build_model
from vlmkit.model.config import ModelConfig

WORDS = ("what shape is in the picture a red circle how many colours are there three blue square yes no "
         "which image is brighter left one you are helpful assistant").split()

LLAMA3_TEMPLATE = ("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
                   "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
                   "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
QWEN25_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                   "{{ '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                   "<|im_end|>\n' }}{% endif %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
                   "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                   "{% endif %}")
PHI3_TEMPLATE = ("{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + "
                 "message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + "
                 "message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + "
                 "message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}"
                 "{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}")
GEMMA2_TEMPLATE = ("{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'assistant') %}"
                   "{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
                   "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
                   "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}")
MISTRAL_TEMPLATE = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
                    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
                    "{{ ' ' + message['content'] + eos_token }}{% endif %}{% endfor %}")

#: family -> (tiny LLM config, tokenizer kind, special tokens, template, the released model's named config and
#: its published parameter count, what ends a supervised answer)
FAMILIES = {
    "llama-3": (dict(model_type="llama", rope_theta=500000.0), "byte-level",
                {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "pad_token": "<|end_of_text|>",
                 "additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>"]},
                LLAMA3_TEMPLATE, "llama-3.1-8b", 8_030_261_248, "<|eot_id|>"),
    "qwen2.5": (dict(model_type="qwen2"), "qwen2", {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                                                   "additional_special_tokens": ["<|im_start|>"]},
                QWEN25_TEMPLATE, "qwen2.5-7b", 7_615_616_512, "<|im_end|>"),
    "phi-3": (dict(model_type="phi3"), "llama",
              {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
               "additional_special_tokens": ["<|user|>", "<|assistant|>", "<|end|>", "<|system|>"]},
              PHI3_TEMPLATE, "phi-3-mini", 3_821_079_552, "<|end|>"),
    "gemma-2": (dict(model_type="gemma2", head_dim=16, sliding_window=4, query_pre_attn_scalar=16,
                     tie_word_embeddings=True), "gemma",
                {"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]},
                GEMMA2_TEMPLATE, "gemma-2-2b", 2_614_341_888, "<end_of_turn>"),
    "mistral": (dict(model_type="mistral", sliding_window=None), "llama", {"pad_token": "<unk>"},
                MISTRAL_TEMPLATE, "mistral-7b-v0.3", 7_248_023_552, "</s>"),
}
#: Phi-3 fuses q, k and v into one Linear (``qkv_proj``): its adapters go there (naming q_proj is an error that lists
#: the Linear layers it has)
LORA_MODULES = {"phi-3": ["qkv_proj", "o_proj"]}
TINY_SHAPE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, max_position_embeddings=256)


def family_tokenizer(kind: str, specials: dict, template: str, folder):
    """A tiny tokenizer of the family's own class, trained on the test words, with its specials and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    corpus = [" ".join(WORDS)] * 20 + WORDS
    if kind in ("byte-level", "qwen2"):
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, show_progress=False,
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    else:
        bpe = Tokenizer(models.BPE(unk_token="<unk>"))
        bpe.pre_tokenizer = pre_tokenizers.Metaspace()
        alphabet = sorted(set("".join(WORDS) + "\n▁<>|_!?.,:;'\"()[]/-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
        bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, show_progress=False, initial_alphabet=alphabet,
                                                            special_tokens=["<unk>", "<s>", "</s>"]))
    data = json.loads(bpe.to_str())
    vocab, merges = data["model"]["vocab"], [tuple(m) if isinstance(m, list) else tuple(m.split()) for m in
                                             data["model"]["merges"]]
    import transformers

    if kind == "byte-level":  # Llama-3 ships a PreTrainedTokenizerFast over a byte-level BPE
        tok = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe)
    else:
        cls = {"qwen2": transformers.Qwen2Tokenizer, "llama": transformers.LlamaTokenizer,
               "gemma": transformers.GemmaTokenizer}[kind]
        tok = cls(vocab=vocab, merges=merges)
    tok.add_special_tokens({k: v for k, v in specials.items()})
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.chat_template = template
    tok.save_pretrained(folder)
    return tok


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    name = request.param
    arch, kind, specials, template, *_ = FAMILIES[name]
    folder = tmp_path_factory.mktemp(name)
    tok = family_tokenizer(kind, specials, template, folder)
    config = {**TINY_SHAPE, **arch, "vocab_size": len(tok), "pad_token_id": tok.pad_token_id,
              "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    torch.manual_seed(0)
    model = build_model(ModelConfig.from_dict({
        "encoders": [{"name": "tiny-conv", "args": {"image_size": 32, "width": 32}}], "connector": "mlp2x_gelu",
        "llm": {"name": "hf", "args": {"config": config, "tokenizer": str(folder)}}, "template": "chat_template",
        "max_length": 128}))
    return name, model


def _batch(model):
    from PIL import Image

    proc = MultimodalProcessor.for_model(model)
    image = Image.new("RGB", (32, 32), (200, 30, 30))
    feats = [proc([Turn("user", "<image>\nwhat shape is in the picture"), Turn("assistant", "a red circle"),
                   Turn("user", "how many colours are there"), Turn("assistant", "three")], [image]),
             proc([Turn("user", "which image is brighter"), Turn("assistant", "the left one")], [])]
    return collate(feats, model.tokenizer.pad_token_id, model.config.padding_side, views=list(model.views))


def test_labels_supervise_exactly_the_answers_and_their_end_of_turn(family):
    name, model = family
    end = FAMILIES[name][6]
    batch = _batch(model)
    tok = model.llm.tokenizer
    for row, answers in zip(range(2), (["a red circle", "three"], ["the left one"])):
        labels = batch["labels"][row]
        supervised = labels[labels != -100].tolist()
        text = tok.decode(supervised)
        for a in answers:
            assert a in text, (name, text)
        assert text.count(end) == len(answers), (name, text)  # each answer closed by the family's marker
        prompt = tok.decode([t for t, lab in zip(batch["input_ids"][row].tolist(), labels.tolist())
                             if lab == -100 and t >= 0])
        assert not any(a in prompt for a in answers), (name, prompt)  # nothing of an answer left unsupervised


def test_training_steps_lower_the_loss_and_generation_runs(family):
    name, model = family
    batch = _batch(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    model.train()
    for _ in range(8):
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] * 0.9, (name, losses)
    model.eval()
    from vlmkit.inference.generation import generate_batch

    out = generate_batch(model, [[Turn("user", "how many colours are there")]], [[]], max_new_tokens=3)
    assert isinstance(out[0], str)


def test_lora_adapts_the_family_and_trains_only_adapters(family):
    import copy

    from vlmkit.training.lora import LoraSpec, apply_lora

    name, model = family
    m = copy.deepcopy(model)
    m.requires_grad_(False)
    adapted = apply_lora(m, LoraSpec(target="llm", r=4, modules=LORA_MODULES.get(name, ["q_proj", "v_proj"])))
    assert adapted and all("lora_" in n for n, p in m.named_parameters() if p.requires_grad)
    loss = m(**_batch(m)).loss
    loss.backward()
    assert any(p.grad is not None for n, p in m.named_parameters() if "lora_" in n)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_meta_parameter_counts_equal_the_released_models(name):
    named, published = FAMILIES[name][4], FAMILIES[name][5]
    model = build_model(ModelConfig.from_dict({
        "encoders": [{"name": "tiny-conv"}], "connector": "mlp2x_gelu",
        "llm": {"name": "hf", "args": {"config": named, "tokenizer": "builtin:tiny"}}}), meta=True)
    assert sum(p.numel() for p in model.llm.parameters()) == published


@pytest.mark.parametrize("family", ["phi-3"], indirect=True)
def test_lora_on_a_fused_projection_family_names_its_real_layers(family):
    """Phi-3 fuses its attention projections: the default q_proj/v_proj is an error listing its real layers."""
    import copy

    from vlmkit.errors import ConfigError
    from vlmkit.training.lora import LoraSpec, apply_lora

    name, model = family

    with pytest.raises(ConfigError, match=r"no Linear layer named q_proj, v_proj; its Linear layers are: .*qkv_proj"):
        apply_lora(copy.deepcopy(model), LoraSpec(target="llm", r=4))


def test_gemma_scales_input_embeddings_once_and_visual_tokens_are_pre_divided(tmp_path):
    """Gemma-2 multiplies inputs_embeds by sqrt(width) in its forward: text logits through vlmkit equal the
    family's own model fed token ids; visual tokens are divided by sqrt(width) first (as PaliGemma does)."""
    arch, kind, specials, template, *_ = FAMILIES["gemma-2"]
    tok = family_tokenizer(kind, specials, template, tmp_path)
    config = {**TINY_SHAPE, **arch, "vocab_size": len(tok), "pad_token_id": tok.pad_token_id}
    torch.manual_seed(0)
    model = build_model(ModelConfig.from_dict({
        "encoders": [{"name": "tiny-conv", "args": {"image_size": 32, "width": 32}}], "connector": "mlp2x_gelu",
        "llm": {"name": "hf", "args": {"config": config, "tokenizer": str(tmp_path)}}, "template": "chat_template"})).eval()
    ids = torch.tensor([tok.encode("what shape is in the picture a red circle how many colours are there")])
    assert ids.shape[1] > config["sliding_window"]  # the window is exercised
    with torch.no_grad():
        ours = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        theirs = model.llm.model(input_ids=ids).logits
    assert (ours - theirs).abs().max() <= 1e-5
    assert model.llm.visual_token_scale == pytest.approx(32 ** -0.5)
    lm = model.llm.model
    assert lm.get_output_embeddings().weight is lm.get_input_embeddings().weight  # tied, as Gemma-2 is
