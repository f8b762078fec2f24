"""Ross presets (configs as data), registered under ``vlmkit.presets``.

``ross``: the paper's CLIP-L/14-336 + Vicuna-7B layout (architectures from configs; point
``encoder.clip.path``, ``llm`` and ``objective.ross.vae_path`` at real weights to train it).
``ross-tiny``: the embedded tiny model (tiny-conv, 4x4 grid) with a small denoiser and the
``builtin:shapes-tiny`` teacher (a tiny VAE trained on the synthetic-shapes images, so its latents carry
the image; a random VAE would not), trainable on a laptop CPU: recipe ``ross-tiny``.
"""

ROSS = {
    "encoders": [{"name": "vlmkit-encoders:clip", "args": {"config": "large-336", "feature_layer": -2}}],
    "connector": {"name": "vlmkit-fusion:mlp2x_gelu"},
    "llm": {"name": "hf", "args": {"config": "vicuna-7b", "tokenizer": "builtin:tiny"}},
    "objectives": [{"name": "lm"}, {"name": "ross", "weight": 1.0, "args": {"vae_config": "flux"}}],
    "template": "vicuna_v1",
    "max_length": 2048,
}

ROSS_TINY = {
    "encoders": [{"name": "vlmkit-encoders:tiny-conv"}],
    "connector": {"name": "vlmkit-fusion:mlp2x_gelu"},
    "llm": {"name": "tiny-llama"},
    "objectives": [{"name": "lm"}, {"name": "ross", "weight": 1.0,
                                    "args": {"vae_path": "builtin:shapes-tiny", "width": 128, "depth": 2,
                                             "heads": 4}}],
    "template": "vicuna_v1",
    "max_length": 256,
}
