"""Model presets (configs as data), registered under ``vlmkit.presets``.

Components of another package are named with their distribution (``vlmkit-fusion:mlp2x_gelu``), so a
third-party plugin that reuses a name cannot change what a preset builds; this package's own names are
resolved in its favour when the preset is loaded (``vlmkit.presets``).

Paper presets use a Vicuna-7B-shaped LLM built from a config (no weights); point ``llm`` at a real
checkpoint (``--llm lmsys/vicuna-7b-v1.5``) and encoders at real towers (``path``) to train them.
"""

def vicuna_7b() -> dict:
    """Vicuna-7B v1.5's shape (core's named LLM config); a fresh copy per preset, none shared."""
    return {"name": "hf", "args": {"config": "vicuna-7b", "tokenizer": "builtin:tiny"}}


TINY = {
    "encoders": [{"name": "tiny-conv"}],
    "connector": {"name": "vlmkit-fusion:mlp2x_gelu"},
    "llm": {"name": "tiny-llama"},
    # Vicuna's turn format without its 35-token system prompt: a constant prefix that long slows a
    # 2-layer, width-128 LLM down a lot (measured: shape questions 27 % vs 92 % after 750 steps)
    "template": {"name": "vicuna_v1", "args": {"system": ""}},
    "max_length": 256,
}

LLAVA_15 = {
    "encoders": [{"name": "clip", "args": {"config": "large-336", "feature_layer": -2}}],
    "connector": {"name": "vlmkit-fusion:mlp2x_gelu"},
    "llm": vicuna_7b(),
    "template": "vicuna_v1",
    "max_length": 2048,
}

#: DenseFusion-1M's S2 model: CLIP-L/14-336 tiles at 336/672/1008 -> 576 tokens x 3072
LLAVA_15_S2 = {
    "encoders": [{"name": "s2", "args": {"encoder": {"name": "clip", "args": {"config": "large-336",
                                                                             "feature_layer": -2}},
                                         "scales": [336, 672, 1008]}}],
    "connector": {"name": "vlmkit-fusion:mlp2x_gelu"},
    "llm": vicuna_7b(),
    "template": "vicuna_v1",
    "max_length": 2048,
}

#: ConvLLaVA-1536: ConvNeXt-L + stage 5 (3072 wide, 6 blocks) at 1536 px -> 576 tokens x 3072
CONVLLAVA_1536 = {
    "encoders": [{"name": "convnext5", "args": {"config": "large", "stage5_width": 3072, "stage5_depth": 6,
                                                "image_size": 1536}}],
    "connector": {"name": "vlmkit-fusion:mlp2x_gelu"},
    "llm": vicuna_7b(),
    "template": "vicuna_v1",
    "max_length": 2048,
}

#: ViP-LLaVA: CLIP-L/14-336 layers [-2,-5,-8,-11,6] -> 576 tokens x 5120, LayerNorm + MLP projector
VIP_LLAVA = {
    "encoders": [{"name": "clip-multilayer", "args": {"config": "large-336", "layers": [-2, -5, -8, -11, 6]}}],
    "connector": {"name": "vlmkit-fusion:ln-mlp2x_gelu"},
    "llm": vicuna_7b(),
    "template": "vicuna_v1",
    "max_length": 2048,
}


#: LLaVA-1.6 (LLaVA-NeXT)'s pinpoints, as liuhaotian/llava-v1.6-vicuna-7b's config.json lists them ([h, w] px)
LLAVA_NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]

#: LLaVA-1.6-Vicuna-7B: LLaVA-1.5's CLIP-L/14-336 (layer -2, no CLS) and projector, AnyRes on 336 px tiles with
#: spatial_unpad (base crop 576 tokens + the unpadded tile grid, a newline per row): up to 2,928 tokens per image
LLAVA_NEXT_7B = {
    "encoders": [{"name": "clip", "args": {"config": "large-336", "feature_layer": -2}}],
    "connector": {"name": "vlmkit-fusion:mlp2x_gelu"},
    "llm": vicuna_7b(),
    "template": "vicuna_v1",
    "max_length": 4096,
    "tiling": {"pinpoints": LLAVA_NEXT_PINPOINTS, "merge": "spatial_unpad"},
}

#: LLaVA-OneVision-Qwen2-0.5B: SigLIP-so400m/14-384 without its last block (26 layers, read at the last: 729
#: tokens per crop), the GELU MLP, Qwen2-0.5B's shape, ChatML; tiles on a (1x1)..(6x6) grid of 384 px capped
#: at about 9 tiles' tokens (anyres_max_9); several images in one sample are not tiled
LLAVA_ONEVISION_05B = {
    "encoders": [{"name": "siglip", "args": {"config": {"hidden_size": 1152, "intermediate_size": 4304,
                                                        "num_hidden_layers": 26, "num_attention_heads": 16,
                                                        "image_size": 384, "patch_size": 14,
                                                        "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6},
                                             "feature_layer": -1}}],
    "connector": {"name": "vlmkit-fusion:mlp2x_gelu"},
    "llm": {"name": "hf", "args": {"config": "qwen2-0.5b", "tokenizer": "builtin:tiny"}},
    "template": "chatml",
    "max_length": 32768,
    "tiling": {"pinpoints": "(1x1),...,(6x6)", "merge": "spatial_unpad", "anyres_max": 9, "tile_multi_images": False},
}
