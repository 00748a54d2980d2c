"""Times one DMD2 iteration of the eager PyTorch twins for the C++-vs-Python benchmark.

  bench_dmd2.py TEACHER.safetensors BATCH CRITIC_STEPS REPEATS -> one JSON line: {"median_ms": ..., "threads": ...}

The iteration is the one distill/dmd2.cpp performs: CRITIC_STEPS critic updates (the one-step
generator's samples without gradient, EDM-weighted denoising loss at σ from a 1000-point Karras
grid, Adam), then one generator update (samples with gradient, real and fake denoisers at the
noised samples without gradient, the normalised distribution-matching surrogate loss, Adam),
with the gradient clipping the trainer applies.
"""
import copy
import json
import statistics
import sys
import time

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from denoiser import NetworkDenoiser  # noqa: E402


def main():
    teacher_file, batch, critic_steps, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    real = NetworkDenoiser.from_safetensors(teacher_file).eval().requires_grad_(False)
    generator = copy.deepcopy(real).requires_grad_(True)
    critic = copy.deepcopy(real).requires_grad_(True)
    g_opt = torch.optim.Adam(generator.parameters(), lr=5e-5)
    c_opt = torch.optim.Adam(critic.parameters(), lr=5e-5)
    shape = [batch] + generator.sample_shape
    ramp = torch.linspace(0, 1, 1000)
    grid = (80 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    grid = grid.flip(0)
    sigma_data = 0.5

    def generate(labels):
        return generator(torch.randn(shape) * 80, torch.full((batch,), 80.0), labels)

    def update(optimizer, module, loss):
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 10.0)
        optimizer.step()

    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        labels = torch.arange(batch) % 10
        for _ in range(critic_steps):
            with torch.no_grad():
                x = generate(labels)
            sigma = grid[torch.randint(0, 1000, (batch,))]
            weight = (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2
            denoised = critic(x + sigma[:, None, None, None] * torch.randn_like(x), sigma, labels)
            update(c_opt, critic, (weight[:, None, None, None] * (denoised - x) ** 2).mean())
        x = generate(labels)
        with torch.no_grad():
            sigma = grid[torch.randint(20, 980, (batch,))]
            noisy = x + sigma[:, None, None, None] * torch.randn_like(x)
            d_real, d_fake = real(noisy, sigma, labels), critic(noisy, sigma, labels)
            direction = torch.nan_to_num((d_fake - d_real) / (x - d_real).abs().mean(dim=[1, 2, 3], keepdim=True))
        update(g_opt, generator, 0.5 * torch.nn.functional.mse_loss(x, (x - direction).detach()))
        if i >= 2:  # warm-up iterations excluded
            times.append((time.perf_counter() - start) * 1000)
    print(json.dumps({"median_ms": statistics.median(times), "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
