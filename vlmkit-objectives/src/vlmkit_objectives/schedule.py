"""The noise schedule: IDDPM's cosine schedule over 1000 steps, from diffusers.

``squaredcos_cap_v2`` is ``alpha_bar(t) = cos(((t/T) + 0.008) / 1.008 * pi/2)^2`` with betas clipped at
0.999, the schedule Ross trains with (``alphas_cumprod[0] ~ 0.9999587``, ``betas[-1] = 0.999``).
Sampling uses the original's settings: eps prediction, fixed-large variance, no clipping of x0.
"""

from __future__ import annotations


def ross_scheduler(num_train_timesteps: int = 1000):
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="squaredcos_cap_v2",
                         prediction_type="epsilon", variance_type="fixed_large", clip_sample=False)
