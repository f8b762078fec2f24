"""Model presets (configs as data), registered under ``vlmkit.presets``."""

TINY = {
    "encoders": [{"name": "tiny-conv"}],
    "connector": {"name": "mlp2x_gelu"},
    "llm": {"name": "tiny-llama"},
    "template": "vicuna_v1",
    "max_length": 256,
}

LLAVA_15 = {
    "encoders": [{"name": "clip", "args": {"config": "large-336", "feature_layer": -2}}],
    "connector": {"name": "mlp2x_gelu"},
    "llm": {"name": "hf", "args": {"config": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
                                               "num_hidden_layers": 32, "num_attention_heads": 32,
                                               "num_key_value_heads": 32, "vocab_size": 32000,
                                               "max_position_embeddings": 4096, "rms_norm_eps": 1e-5},
                                    "tokenizer": "builtin:tiny"}},
    "template": "vicuna_v1",
    "max_length": 2048,
}
