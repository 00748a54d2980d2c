"""Reference side of the Inception parity tests: pytorch-fid's own InceptionV3 with seeded random
weights (batch-norm statistics calibrated on random images so activations stay O(1)).

  inception_reference.py WEIGHTS_OUT IO_OUT
      write the weights (safetensors, pytorch-fid names) and, per image size, uint8 images
      and their features
  inception_reference.py --files WEIGHTS_OUT DIR
      write the weights and image folders under DIR (PNG grey, RGB, RGBA, palette and a grey
      and colour mix; JPEG colour and grey; 28 to 512 px), then what pytorch-fid computes from
      those files through its own ImagePathDataset: each folder's pool3 features
      (DIR/features.safetensors, one tensor per folder, files in sorted order) and the FID
      between DIR/fid_a and DIR/fid_b (DIR/fid.json)
"""
import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
from convert_inception import build_fid_inception  # noqa: E402

SIZES = [28, 32, 64, 299, 512]


def calibrated_model():
    torch.manual_seed(0)
    model = build_fid_inception()
    # Calibrate: cumulative batch-norm statistics of random images, then freeze.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.rand(6, 3, 299, 299))
    return model.eval()


def save_weights(model, path):
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)


def tensors(weights_out, io_out):
    model = calibrated_model()
    save_weights(model, weights_out)
    rng = np.random.default_rng(1)
    io = {}
    for size in SIZES:
        channels = 1 if size == 28 else 3  # grey images are replicated to RGB
        images = rng.integers(0, 256, size=(2, channels, size, size), dtype=np.uint8)
        batch = torch.from_numpy(images).float() / 255  # what pytorch-fid's ToTensor gives
        if channels == 1:
            batch = batch.repeat(1, 3, 1, 1)
        with torch.no_grad():
            features = model(batch)[0].squeeze(3).squeeze(2)
        io[f"images{size}"] = torch.from_numpy(images)
        io[f"features{size}"] = features.double()
    save_file(io, io_out)


def random_image(rng, mode, size):
    """Smooth colour fields plus noise: JPEG has edges and flat parts to round differently."""
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(6.28 * (x * rng.uniform(0.5, 3) + rng.uniform())) for _ in range(3)], axis=2)
    pixels = np.clip(127.5 + 90 * base + rng.normal(0, 25, size=(size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    if mode == "L":
        return image.convert("L")
    if mode == "RGBA":
        alpha = Image.fromarray(rng.integers(0, 256, size=(size, size), dtype=np.uint8), "L")
        image.putalpha(alpha)
        return image
    if mode == "P":
        return image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return image


def files(weights_out, out_dir):
    from pytorch_fid.fid_score import calculate_activation_statistics, calculate_frechet_distance, get_activations

    model = calibrated_model()
    save_weights(model, weights_out)
    rng = np.random.default_rng(2)
    # Every image costs one 299-px Inception pass on each side, whatever its size: few per folder.
    folders = {f"rgb{s}": (["RGB"] * 2, "png") for s in SIZES}
    folders.update({f"grey{s}": (["L"] * 2, "png") for s in SIZES})
    folders.update({"jpeg32": (["RGB"] * 2, "jpg"), "jpeg299": (["RGB"] * 2, "jpg"), "greyjpeg28": (["L"] * 2, "jpg"),
                    "rgba32": (["RGBA"] * 2, "png"), "palette32": (["P"] * 2, "png"), "mixed32": (["L", "RGB", "L"], "png"),
                    "fid_a": (["RGB"] * 8, "png"), "fid_b": (["RGB"] * 8, "png")})
    features = {}
    for name, (modes, extension) in folders.items():
        size = int("".join(c for c in name if c.isdigit()) or 64)
        os.makedirs(os.path.join(out_dir, name))
        paths = []
        for i, mode in enumerate(modes):
            path = os.path.join(out_dir, name, f"img{i}.{extension}")
            image = random_image(rng, mode, size)
            image.save(path, quality=90) if extension == "jpg" else image.save(path)
            paths.append(path)
        with torch.no_grad():
            features[name] = torch.from_numpy(get_activations(sorted(paths), model, batch_size=len(paths), device="cpu", num_workers=0))
    save_file(features, os.path.join(out_dir, "features.safetensors"))
    stats = [calculate_activation_statistics(sorted(os.path.join(out_dir, d, f) for f in os.listdir(os.path.join(out_dir, d))), model,
                                             batch_size=8, device="cpu", num_workers=0) for d in ("fid_a", "fid_b")]
    with open(os.path.join(out_dir, "fid.json"), "w") as f:
        json.dump({"fid": float(calculate_frechet_distance(*stats[0], *stats[1]))}, f)


def main():
    if sys.argv[1] == "--files":
        files(sys.argv[2], sys.argv[3])
    else:
        tensors(sys.argv[1], sys.argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
