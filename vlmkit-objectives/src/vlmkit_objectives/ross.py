"""Ross (Reconstructive Visual Instruction Tuning) as a vlmkit objective: ``{"ross": loss}``.

For every image in the batch: the LLM's final hidden states at its main visual tokens, LayerNorm'd
(no affine, eps 1e-5), condition a DiT denoiser per token; the target is the image's FLUX VAE latent
(a fresh posterior sample, ``(z - shift) * scale``, 2x2-grouped onto the token grid). The denoiser
predicts the noise of ``K`` independent (t, eps) draws per image under the cosine schedule; the loss is
the MSE averaged over the images actually present. Text-only rows add nothing (the original's mask
is a no-op); a batch without images gives a zero that keeps the denoiser in the graph.

The VAE is a frozen teacher: never saved (``non_persistent``), rebuilt from ``vae_path`` or the
recorded config when a checkpoint loads, kept in fp32 and eval mode whatever the rest of the model
does. ``latent_cache`` (see :mod:`vlmkit_objectives.latent_cache`) replaces the VAE encoder by stored
posterior moments; the targets are still sampled each step, so the objective is unchanged.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from vlmkit.errors import ConfigError, Incompatible
from vlmkit.model.contracts import BuildOptions, ImageSpan, ModelOutput, Objective, ObjectiveContext

from .denoiser import RossDenoiser
from .latents import GROUP, group_latents, no_autocast, posterior_moments, sample_latents, ungroup_latents, vae_pixels
from .schedule import SAMPLE_CLIP, ross_scheduler
from .vae import build_vae, latent_scale_shift, teacher_fingerprint, vae_config_dict

DENOISER_DTYPES = ("float32", "model")


class RossObjective(Objective):
    """Latent-denoising reconstruction loss. Defaults are the paper's (``denoiser_vit3x``, K = 4).

    ``denoiser_dtype``: "float32" computes the denoiser in fp32 outside any autocast, as the original
    (fp32 parameters required; on GPUs enable TF32 for speed); "model" follows the parameters' dtype
    and the surrounding autocast (faster under bf16, not the original's numerics).
    """

    needs_hidden_states = True
    tiny_args = {"vae_config": "tiny", "width": 32, "depth": 1, "heads": 4}
    non_persistent = ("vae",)

    def __init__(self, context: ObjectiveContext, vae_path: str | None = None, vae_config: str | dict = "flux",
                 vae_seed: int = 0, width: int = 1024, depth: int = 3, heads: int = 16, mlp_ratio: float = 4.0,
                 noise_draws: int = 4, num_timesteps: int = 1000, denoiser_dtype: str = "float32",
                 latent_cache: str | None = None, build: BuildOptions = BuildOptions()):
        super().__init__()
        visual = context.visual
        if visual is None:
            raise Incompatible("visual stream", "an encoder whose tokens form a grid", "a model without encoders",
                               "ross reconstructs images; add an encoder (clip, siglip, convnext, tiny-conv ...)")
        self.grid = visual.require_grid("objective 'ross'")
        if getattr(context, "tiled", False):
            raise Incompatible("visual tokens", "one token grid per image", "an AnyRes tiling (base crop + tiles)",
                               "ross denoises each image's token grid; build the model without tiling")
        if visual.view is None:
            raise Incompatible("image view", "the view (size, mean, std) the visual tokens come from", "none",
                               "the encoder must declare its ImageView")
        if width % heads:
            raise ConfigError(f"objective 'ross': width {width} is not divisible by heads {heads}")
        for name, value in (("width", width), ("depth", depth), ("heads", heads), ("noise_draws", noise_draws),
                            ("num_timesteps", num_timesteps)):
            if value < 1:
                raise ConfigError(f"objective 'ross': {name} must be >= 1, got {value}")
        if denoiser_dtype not in DENOISER_DTYPES:
            raise ConfigError(f"objective 'ross': denoiser_dtype must be one of {', '.join(DENOISER_DTYPES)}, "
                              f"got '{denoiser_dtype}'")
        self.view = visual.view
        self.d_llm = context.d_llm
        self.noise_draws = noise_draws
        self.denoiser_dtype = denoiser_dtype

        self.vae_path = vae_path
        self.vae, self.teacher_ready = build_vae(vae_path, vae_config, vae_seed, build)
        self.latent_scale, self.latent_shift = latent_scale_shift(self.vae)
        self.latent_channels = int(self.vae.config.latent_channels) * GROUP * GROUP
        self.ln_pre = nn.LayerNorm(self.d_llm, elementwise_affine=False, eps=1e-5)
        self.denoiser = RossDenoiser(self.latent_channels, self.d_llm, width, depth, heads, mlp_ratio)
        self.scheduler = ross_scheduler(num_timesteps)

        self.cache = None
        if latent_cache is not None and not build.meta:
            from .latent_cache import LatentCache

            self.cache = LatentCache(latent_cache, fingerprint=teacher_fingerprint(self.vae))

    # -- bookkeeping ---------------------------------------------------------------------------
    def named_parts(self) -> dict[str, list[str]]:
        """``objective.ross:denoiser`` selects what trains (the frozen VAE never should)."""
        return {"denoiser": [f"denoiser.{n}" for n, _ in self.denoiser.named_parameters()]}

    def checkpoint_args(self, args: dict[str, Any]) -> dict[str, Any]:
        """Keep ``vae_path`` (weights are re-read from it) and record the VAE architecture; the latent
        cache belongs to a training run, not to the model."""
        out = {k: v for k, v in args.items() if k != "latent_cache"}
        out["vae_config"] = vae_config_dict(self.vae)
        return out

    def train(self, mode: bool = True) -> "RossObjective":
        super().train(mode)
        self.vae.eval()
        return self

    def _apply(self, fn: Any, recurse: bool = True) -> "RossObjective":
        # a model-wide .to(bfloat16) moves the teacher but must not cast it: the original keeps it fp32
        super()._apply(fn, recurse)
        for t in list(self.vae.parameters()) + list(self.vae.buffers()):
            if t.is_floating_point() and t.dtype != torch.float32:
                t.data = t.data.float()
        return self

    # -- pieces --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _precision(self, device: torch.device) -> Iterator[torch.dtype]:
        dtype = next(self.denoiser.parameters()).dtype
        if self.denoiser_dtype == "float32" and dtype == torch.float32:
            with no_autocast(device):
                yield torch.float32
        else:
            yield dtype

    def condition(self, hidden: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(n, N, D_llm) LLM hidden states -> (n, N, width) per-token condition (before the t embedding)."""
        return self.denoiser.embed_condition(self.ln_pre(hidden.float()).to(dtype))

    def latent_moments(self, pixels: torch.Tensor, grid: tuple[int, int], keys: Sequence[str] | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior (mean, std) of each image's VAE latent, (n, 16, 2gh, 2gw): from the cache when it has
        them, else from the VAE encoder."""
        n = pixels.shape[0]
        shape = (self.latent_channels // (GROUP * GROUP), grid[0] * GROUP, grid[1] * GROUP)
        found: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n
        if self.cache is not None and keys is not None:
            found = self.cache.lookup(keys, shape)
        missing = [i for i, f in enumerate(found) if f is None]
        if missing:
            if not self.teacher_ready:
                raise ConfigError("objective 'ross': the VAE weights are missing (vae_path was not found when the "
                                  "model was built) and the latent cache does not hold these images; "
                                  "set objective.ross.vae_path to the FLUX VAE folder")
            sel = pixels if len(missing) == n else pixels[torch.as_tensor(missing, device=pixels.device)]
            mean, std = posterior_moments(self.vae, vae_pixels(sel, self.view, grid))
            if len(missing) == n:
                return mean, std
            for j, i in enumerate(missing):
                found[i] = (mean[j], std[j])
        device = pixels.device
        means = torch.stack([f[0] for f in found]).to(device, torch.float32, non_blocking=True)  # type: ignore[index]
        stds = torch.stack([f[1] for f in found]).to(device, torch.float32, non_blocking=True)  # type: ignore[index]
        return means, stds

    def targets(self, pixels: torch.Tensor, grid: tuple[int, int], keys: Sequence[str] | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, 64, gh, gw) denoising targets lined up with the visual-token grid."""
        mean, std = self.latent_moments(pixels, grid, keys)
        return group_latents(sample_latents(mean, std, self.latent_scale, self.latent_shift, generator))

    def denoising_losses(self, x0: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """Per-draw MSE, (n * K,): K (t, eps) draws per image, eps-prediction, mean over C, H, W."""
        k = self.noise_draws
        x0 = x0.repeat_interleave(k, 0)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        x_t = self.scheduler.add_noise(x0, noise, t)
        with self._precision(x0.device) as dtype:
            cond = self.condition(hidden, dtype).repeat_interleave(k, 0)
            eps = self.denoiser(x_t.to(dtype), t, cond)
        return (eps.float() - noise).pow(2).flatten(1).mean(1)

    # -- the objective -------------------------------------------------------------------------
    def image_groups(self, output: ModelOutput, batch: Mapping[str, Any]
                     ) -> list[tuple[torch.Tensor, torch.Tensor, tuple[int, int], list[str] | None]]:
        """Images present in the sequence, grouped by (pixel size, grid): (pixels, hidden, grid, cache keys)."""
        spans = output.image_spans
        if not spans:
            return []
        hidden = output.hidden_states
        if hidden is None:
            raise ValueError("objective 'ross' needs the LLM hidden states (ModelOutput.hidden_states is None)")
        pv = (batch.get("pixel_values") or {}).get(self.view.name)
        if pv is None:
            raise ValueError(f"objective 'ross': the batch has image tokens but no pixel_values['{self.view.name}']")
        present = self._present(spans, output.attention_mask, hidden.shape[1])
        sample_ids = batch.get("sample_ids")
        nth_in_row: dict[int, int] = {}
        groups: dict[tuple, list[int]] = {}
        keys: list[str | None] = []
        for k, span in enumerate(spans):
            j = nth_in_row.get(span.row, 0)
            nth_in_row[span.row] = j + 1
            keys.append(f"{sample_ids[span.row]}#{j}" if sample_ids is not None else None)
            if not present[k]:
                continue
            grid = span.grid or self.grid
            if grid[0] * grid[1] != span.num_main:
                raise ValueError(f"objective 'ross': image {k} has {span.num_main} main tokens but grid {grid}")
            groups.setdefault((tuple(pv[k].shape[-2:]), tuple(grid)), []).append(k)

        out = []
        for (_, grid), idx in groups.items():
            if isinstance(pv, torch.Tensor):
                pixels = pv if len(idx) == pv.shape[0] else pv[torch.as_tensor(idx, device=pv.device)]
            else:
                pixels = torch.stack([pv[i] for i in idx])
            sel = [spans[i] for i in idx]
            group_keys = None
            if self.cache is not None:
                if sample_ids is not None:
                    group_keys = [keys[i] for i in idx]  # type: ignore[misc]
                else:
                    from .latent_cache import content_keys

                    group_keys = content_keys(pixels)
            out.append((pixels, gather_image_hidden(hidden, sel), grid, group_keys))
        return out

    @staticmethod
    def _present(spans: Sequence[ImageSpan], mask: torch.Tensor | None, length: int) -> list[bool]:
        """An image cut by ``max_length`` has no hidden states for its last tokens: leave it out."""
        ends = [s.start + s.num_main - 1 for s in spans]
        inside = [e < length for e in ends]
        if mask is None or not all(inside):
            return inside
        rows = torch.as_tensor([s.row for s in spans], device=mask.device)
        last = torch.as_tensor(ends, device=mask.device)
        return mask[rows, last].bool().tolist()

    def forward(self, output: ModelOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        groups = self.image_groups(output, batch)
        if not groups:
            return {"ross": self.zero_loss()}
        total, rows = None, 0
        for pixels, hidden, grid, keys in groups:
            losses = self.denoising_losses(self.targets(pixels, grid, keys), hidden)
            total = losses.sum() if total is None else total + losses.sum()
            rows += losses.numel()
        return {"ross": total / rows}

    # -- sampling (the original never released this) --------------------------------------------
    @torch.no_grad()
    def sample(self, hidden: torch.Tensor, grid: tuple[int, int], steps: int = 50,
               generator: torch.Generator | None = None, clip: float | None = SAMPLE_CLIP) -> torch.Tensor:
        """DDPM ancestral sampling of (n, 64, gh, gw) latents conditioned on (n, N, D_llm) hidden states.

        ``clip`` clamps each step's predicted x0 to ``[-clip, clip]`` in normalised latent units (unit
        variance), which keeps long samplers from diverging at the schedule's end (see ``schedule``);
        None samples without it, as the training schedule is defined.
        """
        if clip is not None and clip <= 0:
            raise ConfigError(f"objective 'ross': the sampling clip must be > 0 (or None), got {clip}")
        sched = ross_scheduler(self.scheduler.config.num_train_timesteps, clip)
        device = hidden.device
        sched.set_timesteps(steps, device=device)
        n = hidden.shape[0]
        x = torch.randn((n, self.latent_channels, *grid), generator=generator, dtype=torch.float32,
                        device=generator.device if generator is not None else device).to(device)
        with self._precision(device) as dtype:
            cond = self.condition(hidden, dtype)
            for t in sched.timesteps:
                eps = self.denoiser(x.to(dtype), t.expand(n), cond).float()
                x = sched.step(eps, t, x, generator=generator).prev_sample
        return x

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(n, 64, gh, gw) normalised grouped latents -> (n, 3, 16gh, 16gw) pixels in [-1, 1]."""
        z = ungroup_latents(latents.float()) / self.latent_scale + self.latent_shift
        with no_autocast(z.device):
            return self.vae.decode(z).sample.clamp(-1, 1)


def gather_image_hidden(hidden: torch.Tensor, spans: Sequence[ImageSpan]) -> torch.Tensor:
    """(B, L, D) -> (n, N, D): each image's main visual tokens (all spans have the same N)."""
    n_tok = spans[0].num_main
    rows = torch.as_tensor([s.row for s in spans], device=hidden.device)
    starts = torch.as_tensor([s.start for s in spans], device=hidden.device)
    cols = starts[:, None] + torch.arange(n_tok, device=hidden.device)
    return hidden[rows[:, None], cols]
