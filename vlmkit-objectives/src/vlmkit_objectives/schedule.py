"""The noise schedule: IDDPM's cosine schedule over 1000 steps, from diffusers.

``squaredcos_cap_v2`` is ``alpha_bar(t) = cos(((t/T) + 0.008) / 1.008 * pi/2)^2`` with betas clipped at
0.999, the schedule Ross trains with (``alphas_cumprod[0] ~ 0.9999587``, ``betas[-1] = 0.999``).
Training uses the original's settings: eps prediction, fixed-large variance, no clipping of x0.
Sampling (which the original never released) may clip the predicted x0 (``clip``): without it, a
sampler that visits the schedule's last steps diverges, because ``alphas_cumprod[999] = 2.4e-9``
turns a small error in the predicted noise into an x0 error up to 2e4 times larger (measured: a
1,000-step sample of a trained ``ross-tiny`` reached latents of 1e5; ``docs/benchmarks/ross.md``).
"""

from __future__ import annotations

#: default clamp of the predicted x0 when sampling, in normalised latent units (6 standard deviations);
#: here, not in ``ross``, so the CLI can show it without importing torch
SAMPLE_CLIP = 6.0


def ross_scheduler(num_train_timesteps: int = 1000, clip: float | None = None):
    """The training schedule; ``clip``: clamp the predicted x0 to ``[-clip, clip]`` when sampling."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="squaredcos_cap_v2",
                         prediction_type="epsilon", variance_type="fixed_large", clip_sample=clip is not None,
                         clip_sample_range=1.0 if clip is None else float(clip))
