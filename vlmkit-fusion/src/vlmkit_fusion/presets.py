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
