"""The Python twins (tools/reference/) against the golden vectors of the published networks
(tests/golden/published/, made by tools/reference/make_golden_vectors.py from their own code).

  golden_vectors.py VECTOR...   build each vector's network from its config, check that its
                                state dict has EDM's names and shapes, set the golden weights,
                                and compare the raw output F and D(x; σ)

Agreement is max|a − b| / max|b| ≤ 1e-5 (float32 rounding through a few dozen layers); 5e-5 for
EDM2's networks, whose per-pixel normalisations amplify rounding where features nearly cancel.
"""
import json
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools", "reference"))
from denoiser import NetworkDenoiser  # noqa: E402
from golden_fill import golden_fill  # noqa: E402

TOLERANCE, EDM2_TOLERANCE = 1e-5, 5e-5


def relative_difference(got, expected):
    return ((got - expected).abs().max() / expected.abs().max()).item()


def main():
    failed = 0
    for path in sys.argv[1:]:
        with safe_open(path, framework="pt") as f:
            config = json.loads(f.metadata()["config"])
            edm_state_dict = json.loads(f.metadata()["state_dict"])
        vector = load_file(path)
        model = NetworkDenoiser(config).eval()
        ours = {name: list(tensor.shape) for name, tensor in model.net.state_dict().items()}
        if ours != edm_state_dict:
            print(f"{os.path.basename(path)}: state dict differs from EDM's: only ours {sorted(set(ours) - set(edm_state_dict))}, "
                  f"only EDM's {sorted(set(edm_state_dict) - set(ours))}, other shapes "
                  f"{sorted(k for k in set(ours) & set(edm_state_dict) if ours[k] != edm_state_dict[k])}")
            failed += 1
            continue
        golden_fill(model.net)
        labels = vector.get("labels")
        with torch.no_grad():
            raw = model.net(vector["x_in"], vector["c_noise"], labels)
            denoised = model(vector["x"], vector["sigma"], labels)
        errors = relative_difference(raw, vector["raw"]), relative_difference(denoised, vector["denoised"])
        ok = max(errors) <= (EDM2_TOLERANCE if os.path.basename(path).startswith("edm2") else TOLERANCE)
        failed += not ok
        print(f"{os.path.basename(path)}: raw {errors[0]:.2e}, denoised {errors[1]:.2e} {'ok' if ok else 'FAILED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
