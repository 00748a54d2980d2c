#!/usr/bin/env python3
"""How well samples fit an analytic Gaussian mixture (a `gmm:` teacher's YAML spec).

Prints, per samples file (`distillery sample` / `generate` .safetensors): FD_raw against the
mixture's exact mean and covariance, the median distance of a sample to its nearest mode, and
the fraction of samples within 3 standard deviations (the mixture's mean std) of a mode, and the
mode-mass error ½·Σ|p̂_k − w_k| of the nearest-mode histogram against the weights, beside what
exact draws from the mixture give. FD_raw sees only two moments: a disc of the right spread
scores well, and samples collapsed on one mode are all "near a mode", so all three are printed.

Usage: tools/mixture_fit.py SPEC.yaml SAMPLES.safetensors [...]
"""
import sys

import numpy as np
import scipy.linalg
import yaml
from safetensors.numpy import load_file


def main(spec_path, sample_paths):
    spec = yaml.safe_load(open(spec_path))
    weights = np.array(spec["weights"], float)
    weights /= weights.sum()
    means = np.array(spec["means"], float)
    stds = np.array(spec["stds"], float)
    dim = means.shape[1]
    mean = weights @ means
    cov = sum(w * (s**2 * np.eye(dim) + np.outer(m, m)) for w, m, s in zip(weights, means, stds)) - np.outer(mean, mean)
    radius = 3 * stds.mean()

    def fit(x):
        c = np.cov(x.T)
        fd = ((x.mean(0) - mean) ** 2).sum() + np.trace(c + cov - 2 * scipy.linalg.sqrtm(c @ cov).real)
        distance = np.sqrt(((x[:, None, :] - means[None]) ** 2).sum(-1))
        nearest = distance.min(1)
        mass = np.bincount(distance.argmin(1), minlength=len(weights)) / len(x)
        return fd, np.median(nearest), (nearest < radius).mean(), 0.5 * np.abs(mass - weights).sum()

    rng = np.random.default_rng(0)
    n = 10000
    component = rng.choice(len(weights), size=n, p=weights)
    exact = means[component] + stds[component, None] * rng.standard_normal((n, dim))
    print(f"| samples | FD_raw | median distance to nearest mode | within {radius:.2f} of a mode | mode-mass error |\n|---|---|---|---|---|")
    for name, x in [("exact draws (10,000)", exact)] + [(p, load_file(p)["samples"].astype(float)) for p in sample_paths]:
        fd, median, within, mass_error = fit(x)
        print(f"| {name} | {fd:.4f} | {median:.3f} | {within:.3f} | {mass_error:.3f} |")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
