"""Times forward+backward of the PyTorch twin (eager) for the C++-vs-Python benchmark.

  bench_unet.py CONFIG_YAML BATCH REPEATS   -> prints one JSON line: {"median_ms": ..., "threads": ...}

Same recipe file as `distillery teacher train`, same batch, same thread count as LibTorch's
default (the machine's cores), same EDM loss.
"""
import json
import statistics
import sys
import time

import torch
import yaml

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from denoiser import NetworkDenoiser  # noqa: E402


def main():
    recipe = yaml.safe_load(open(sys.argv[1]))
    batch, repeats = int(sys.argv[2]), int(sys.argv[3])
    model_cfg = {**recipe["model"]}
    model = NetworkDenoiser({"model": model_cfg, "precond": {"sigma_data": 0.5}}).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    m = model_cfg
    x0 = torch.rand(batch, m["in_channels"], m["resolution"], m["resolution"]) * 2 - 1
    labels = torch.randint(0, max(m.get("num_classes", 0), 1), (batch,))
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        sigma = (torch.randn(batch) * 1.2 - 1.2).exp()
        weight = (sigma ** 2 + 0.25) / (sigma * 0.5) ** 2
        loss = (weight[:, None, None, None] * (model(x0 + sigma[:, None, None, None] * torch.randn_like(x0), sigma, labels) - x0) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i >= 2:  # warm-up iterations excluded
            times.append((time.perf_counter() - start) * 1000)
    print(json.dumps({"median_ms": statistics.median(times), "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
