"""Train a small VAE teacher on your own images, so that its latents carry them.

Ross learns to predict the teacher's latents from the LLM's hidden states. A randomly initialised VAE
is a poor teacher: its latents hardly depend on the image and its posterior noise is larger than
their spread, so the targets are mostly noise (measured: see ``docs/benchmarks/ross.md``). The paper
uses FLUX's VAE; at CPU scale a tiny VAE trained for a few minutes on the images at hand does the same
job. The embedded ``builtin:shapes-tiny`` teacher was made by ``scripts/make_shapes_vae.py`` with
:func:`train_vae` and :func:`calibrate_latents`.

The loss is the usual one, pixel MSE plus a small KL weight (as latent-diffusion VAEs, which use
1e-6 of the KL against summed pixel losses). A small weight lets the posterior shrink well below the
latents' spread; :func:`calibrate_latents` then sets FLUX's ``shift_factor``/``scaling_factor`` so the
normalised latents have mean 0 and variance 1 over the images, the way those factors were chosen for
FLUX and SD3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vlmkit.errors import ConfigError

from .vae import resolve_config


def train_vae(images: torch.Tensor, config: str | dict[str, Any] = "tiny", *, steps: int = 1500,
              batch_size: int = 32, lr: float = 2e-3, kl_weight: float = 1e-6, initial_log_variance: float = -8.0,
              seed: int = 0, progress: bool = True) -> tuple[Any, list[dict[str, float]]]:
    """Train an ``AutoencoderKL`` of ``config`` on ``images`` (N, 3, H, W) in [-1, 1].

    Adam with a one-cycle learning rate; each step a random batch (drawn from ``seed``). The posterior's
    log-variance starts at ``initial_log_variance`` (the encoder's output bias) instead of about 0: from
    a unit-variance start, the pixel loss shrinks the posterior only slowly, and a teacher whose posterior
    noise is comparable to its latents' spread gives targets that are mostly noise.
    Returns ``(vae in eval mode, frozen; log of {step, mse, kl} every 50 steps)``.
    """
    from diffusers import AutoencoderKL

    if images.ndim != 4 or images.shape[1] != 3:
        raise ConfigError(f"train_vae: images must be (N, 3, H, W), got {tuple(images.shape)}")
    if float(images.min()) < -1.001 or float(images.max()) > 1.001:
        raise ConfigError("train_vae: images must be scaled to [-1, 1]")
    if steps < 1 or batch_size < 1:
        raise ConfigError(f"train_vae: steps and batch_size must be >= 1, got {steps}, {batch_size}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(**resolve_config(config)).float().train()
        latent = int(vae.config.latent_channels)
        with torch.no_grad():  # conv_out gives (mean, logvar) stacked on channels
            vae.encoder.conv_out.bias[latent:] = initial_log_variance
        generator = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(vae.parameters(), lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.05)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=steps, desc="train VAE", unit="step")
        log: list[dict[str, float]] = []
        for step in range(steps):
            x = images[torch.randint(0, images.shape[0], (batch_size,), generator=generator)].float()
            dist = vae.encode(x).latent_dist
            recon = vae.decode(dist.sample(generator)).sample
            mse = (recon - x).pow(2).mean()
            kl = 0.5 * (dist.mean.pow(2) + dist.var - 1.0 - dist.logvar).mean()
            loss = mse + kl_weight * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step % 50 == 0 or step == steps - 1:
                log.append({"step": step, "mse": mse.item(), "kl": kl.item()})
                if bar is not None:
                    bar.set_postfix(mse=f"{mse.item():.4f}")
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
    vae.requires_grad_(False)
    return vae.eval(), log


@torch.no_grad()
def latent_statistics(vae: Any, images: torch.Tensor, batch_size: int = 256) -> dict[str, float]:
    """How much of the latent is image and how much posterior noise, in the VAE's raw units.

    ``spread``: std of the posterior means over images; ``posterior_std``: mean posterior std;
    ``sample_mean``/``sample_std``: mean and std of posterior samples (what calibration uses);
    ``recon_mse``: pixel MSE of decoding the posterior mean; ``mean_image_mse``: MSE of the mean image.
    """
    means, stds, recon = [], [], 0.0
    g = torch.Generator().manual_seed(0)
    samples = []
    for i in range(0, images.shape[0], batch_size):
        x = images[i:i + batch_size].float()
        dist = vae.encode(x).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
        samples.append(dist.sample(g))
        recon += float((vae.decode(dist.mean).sample - x).pow(2).sum())
    mean, std, z = torch.cat(means), torch.cat(stds), torch.cat(samples)
    n = images.numel()
    return {"spread": float(mean.std()), "posterior_std": float(std.mean()), "sample_mean": float(z.mean()),
            "sample_std": float(z.std()), "recon_mse": recon / n,
            "mean_image_mse": float((images.float() - images.float().mean(0)).pow(2).mean())}


def calibrate_latents(vae: Any, images: torch.Tensor) -> dict[str, float]:
    """Set ``shift_factor`` and ``scaling_factor`` so ``(z - shift) * scale`` has mean 0, std 1 over ``images``.

    Returns the statistics (see :func:`latent_statistics`) with the chosen factors.
    """
    stats = latent_statistics(vae, images)
    shift, scale = stats["sample_mean"], 1.0 / stats["sample_std"]
    vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    return {**stats, "shift_factor": shift, "scaling_factor": scale}


def save_vae(vae: Any, folder: str | Path) -> Path:
    """A diffusers folder (``config.json`` + safetensors weights) that ``vae_path`` reads."""
    folder = Path(folder)
    vae.save_pretrained(str(folder), safe_serialization=True)
    return folder
