"""Model presets that need the fusion modules (configs as data), registered under ``vlmkit.presets``."""

#: Vicuna-7B-shaped Llama (random init unless a path is given); same LLM block as the llava-1.5 preset
VICUNA_7B_LLM = {"name": "hf", "args": {"config": "vicuna-7b", "tokenizer": "builtin:tiny"}}

#: MG-LLaVA: CLIP-L/336 (view "base") + ConvNeXt-L at 768 px (view "hires"); Conv-Gate fuses the raw
#: ConvNeXt stage 3 into the CLIP grid, RoI object tokens come from all four ConvNeXt stages. roi is
#: listed first because it pools the ConvNeXt maps in the "hires" frame, which the fused stream (in the
#: CLIP view) no longer carries; the token order is the same either way: [image tokens][object tokens].
MG_LLAVA = {
    "encoders": [{"name": "vlmkit-encoders:clip", "args": {"config": "large-336", "feature_layer": -2, "view": "base"}},
                 {"name": "vlmkit-encoders:convnext", "args": {"image_size": 768, "view": "hires"}}],
    "fusion": [{"name": "roi", "args": {"output_size": 56}},
               {"name": "convgate", "args": {"high_map": "stage3"}}],
    "connector": {"name": "mlp2x_gelu"},
    "llm": VICUNA_7B_LLM,
    "template": "vicuna_v1",
    "max_length": 2048,
}


#: A seed idea under AnyRes: MG-LLaVA's Conv-Gate fusion (CLIP-L/336 + ConvNeXt-L at 768 px, stage 3 gated into
#: the CLIP grid) with LLaVA-NeXT's tiling; every tile is seen by both towers, each at its own size. Without
#: MG-LLaVA's RoI object tokens: boxes live in one view's pixels, and a tiled image has many crops.
CONVGATE_ANYRES = {
    "encoders": [{"name": "vlmkit-encoders:clip", "args": {"config": "large-336", "feature_layer": -2, "view": "base"}},
                 {"name": "vlmkit-encoders:convnext", "args": {"image_size": 768, "view": "hires"}}],
    "fusion": [{"name": "convgate", "args": {"high_map": "stage3"}}],
    "connector": {"name": "mlp2x_gelu"},
    "llm": VICUNA_7B_LLM,
    "template": "vicuna_v1",
    "max_length": 4096,
    "tiling": {"pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]], "merge": "spatial_unpad"},
}


#: Prismatic's prism-dinosiglip+7b (TRI-ML/prismatic-vlms, ``dinosiglip-vit-so-384px`` + ``no-align+fused-gelu-mlp``
#: + Llama-2 7B): two timm towers at 384 px, each read at its second-to-last block as Prismatic's
#: ``get_intermediate_layers(n={len(blocks) - 2})`` does, patches fused on channels (1024 + 1152 = 2176), the fused
#: GELU MLP. Each tower keeps its own view (DINOv2 normalises with ImageNet's mean/std, SigLIP with 0.5), resized
#: naively to 384 x 384 ("resize-naive"). Blocks are not pruned, so the released checkpoint's tensors all have a
#: place; Llama-2's vocabulary is Prismatic's 32,000 + <PAD> padded to a multiple of 64 (32,064).
PRISMATIC_DINOSIGLIP_384 = {
    "encoders": [
        {"name": "vlmkit-encoders:timm", "args": {"model": "vit_large_patch14_reg4_dinov2.lvd142m", "layer": -2,
                                                  "image_size": 384, "prune": False, "resize": "resize", "view": "dino"}},
        {"name": "vlmkit-encoders:timm", "args": {"model": "vit_so400m_patch14_siglip_384", "layer": -2,
                                                  "image_size": 384, "prune": False, "resize": "resize",
                                                  "view": "siglip"}},
    ],
    "fusion": [{"name": "concat"}],
    "connector": {"name": "fused-gelu-mlp"},
    "llm": {"name": "hf", "args": {"config": {**{"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
                                                 "num_hidden_layers": 32, "num_attention_heads": 32,
                                                 "num_key_value_heads": 32, "max_position_embeddings": 4096,
                                                 "rms_norm_eps": 1e-5}, "vocab_size": 32064},
                                   "tokenizer": "builtin:tiny"}},
    "max_length": 2048,
}
