"""The ConvNeXt parts vlmkit assembles, all timm's own modules: a stem, a stage, ConvLLaVA's fifth stage.

vlmkit's ConvNeXt towers are assembled from these rather than from ``timm.models.convnext.ConvNeXt`` because
that class gives its first stage a 2x2 downsampler when the stem's patch is 2 (its "overlap" stem rule), while
transformers' ConvNeXt, which ConvLLaVA's towers are saved as, never downsamples in stage 0. With a patch of
4 (every released LAION and ConvLLaVA tower) both agree, and the parts are exactly timm's.

ConvLLaVA's fifth stage (``fifth_stage``), one builder for every tower that adds it (``convnext5`` and ``timm``
with ``stage5``): LayerNorm (eps 1e-6, channels first) + 2x2 stride-2 conv to ``width``, then ``depth`` ConvNeXt
blocks of the trunk's kind (linear or 1x1-conv MLP, GRN or not), layer scale 1e-6, no drop path. Created
outside any model init, it has PyTorch's default initialisation, as in ConvLLaVA.
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

from torch import nn

#: ConvLLaVA's released recipe: 6 blocks
STAGE5_DEPTH = 6
EPS = 1e-6


def stage(in_width: int, width: int, depth: int, stride: int, conv_mlp: bool = False, use_grn: bool = False,
          ls_init_value: float | None = 1e-6, drop_path_rates: Sequence[float] | None = None,
          act_layer: str = "gelu", kernel_size: int = 7) -> nn.Module:
    """timm's ``ConvNeXtStage`` with the norms timm's ConvNeXt gives it (eps 1e-6)."""
    from timm.layers import LayerNorm, LayerNorm2d
    from timm.models.convnext import ConvNeXtStage

    norm2d = partial(LayerNorm2d, eps=EPS)
    return ConvNeXtStage(in_width, width, kernel_size=kernel_size, stride=stride, depth=depth,
                         drop_path_rates=list(drop_path_rates or [0.0] * depth), ls_init_value=ls_init_value,
                         conv_mlp=conv_mlp, use_grn=use_grn, act_layer=act_layer, norm_layer=norm2d,
                         norm_layer_cl=norm2d if conv_mlp else partial(LayerNorm, eps=EPS))


def stem(in_channels: int, width: int, patch: int) -> nn.Module:
    """timm's patch stem: a patch x patch conv of stride patch, then LayerNorm2d."""
    from timm.layers import LayerNorm2d

    return nn.Sequential(nn.Conv2d(in_channels, width, kernel_size=patch, stride=patch), LayerNorm2d(width, eps=EPS))


def trunk(widths: Sequence[int], depths: Sequence[int], in_channels: int = 3, patch: int = 4,
          conv_mlp: bool = False, ls_init_value: float | None = 1e-6, drop_path_rate: float = 0.0,
          act_layer: str = "gelu") -> tuple[nn.Module, nn.ModuleList]:
    """Stem and stages (stage 0 keeps the stem's stride, each later stage halves it), initialised as timm's
    ConvNeXt initialises itself (truncated normal, std 0.02; zero biases)."""
    from timm.layers import trunc_normal_

    total = sum(depths)  # drop path grows linearly over all blocks, as timm's ConvNeXt sets it (plain floats:
    # tensors would follow a meta-device build)
    flat = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
    rates = [flat[sum(depths[:i]):sum(depths[:i + 1])] for i in range(len(depths))]
    stages, prev = [], widths[0]
    for i, (w, d) in enumerate(zip(widths, depths)):
        stages.append(stage(prev, w, d, stride=1 if i == 0 else 2, conv_mlp=conv_mlp, ls_init_value=ls_init_value,
                            drop_path_rates=rates[i], act_layer=act_layer))
        prev = w
    head, body = stem(in_channels, widths[0], patch), nn.ModuleList(stages)
    for module in [*head.modules(), *body.modules()]:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            trunc_normal_(module.weight, std=.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return head, body


def fifth_stage(in_width: int, width: int, depth: int, conv_mlp: bool = False, use_grn: bool = False) -> nn.Module:
    """ConvLLaVA's fifth stage (PyTorch's default init, as ConvLLaVA creates it outside any model init)."""
    return stage(in_width, width, depth, stride=2, conv_mlp=conv_mlp, use_grn=use_grn)
