#!/usr/bin/env python3
"""Write the golden test vectors of the published networks (tests/golden/published/) by running
their own code (checkouts of NVlabs/edm, NVlabs/edm2 and facebookresearch/DiT, whose models.py
needs timm) at small widths, with the deterministic weights of golden_fill.py, on fixed inputs.

    make_golden_vectors.py --edm EDM --edm2 EDM2 --dit DIT --cli build/distillery --out tests/golden/published

Each vector is a safetensors file of a few KB:
  x, sigma, labels    the preconditioned network's inputs (labels int64, -1: EDM's zero class
                      vector; absent for unconditional networks)
  x_in, c_noise, raw  what EDM's preconditioning fed the inner network, and its output F (DiT:
                      the VP-scaled input, the timestep, and all its output channels)
  denoised            D(x; σ), EDM's preconditioned output (DiT: x0 as DiT's diffusion code
                      predicts it from ε)
and its metadata holds distillery's config for the network (from tools/convert_teacher.py, so
the converter's mapping of EDM's arguments is under test too), the names and shapes of EDM's
state dict, EDM's class and arguments, and the commit of the EDM checkout. Nothing here is needed to run the tests; it is how the vectors
were made.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import types

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
from convert_teacher import config_from_dit, config_from_edm, config_from_edm2  # noqa: E402
from golden_fill import golden_fill  # noqa: E402

# Small versions of the published configurations, covering every branch of the networks:
# DDPM++ (positional, standard encoder), NCSN++ (Fourier, residual encoder, [1,3,3,1]), the skip
# encoder and decoder, and ADM (adaptive scale, 0/1/2 attention heads, labels after the MLP).
VECTORS = {
    "ddpmpp-cond-vp": ("VPPrecond", dict(img_resolution=8, img_channels=3, label_dim=10, model_type="SongUNet", embedding_type="positional",
                                         encoder_type="standard", decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1],
                                         model_channels=16, channel_mult=[1, 2, 2], num_blocks=1, attn_resolutions=[4], augment_dim=9,
                                         dropout=0.13)),
    "ncsnpp-uncond-ve": ("VEPrecond", dict(img_resolution=16, img_channels=1, label_dim=0, model_type="SongUNet", embedding_type="fourier",
                                           encoder_type="residual", decoder_type="standard", channel_mult_noise=2,
                                           resample_filter=[1, 3, 3, 1], model_channels=16, channel_mult=[1, 2, 2], num_blocks=1,
                                           attn_resolutions=[8])),
    "songunet-skip-cond-edm": ("EDMPrecond", dict(img_resolution=8, img_channels=3, label_dim=4, model_type="SongUNet",
                                                  embedding_type="positional", encoder_type="skip", decoder_type="skip", channel_mult_noise=1,
                                                  resample_filter=[1, 3, 3, 1], model_channels=16, channel_mult=[1, 2], num_blocks=2,
                                                  attn_resolutions=[4], channel_mult_emb=2)),
    "adm-cond-edm": ("EDMPrecond", dict(img_resolution=8, img_channels=3, label_dim=10, model_type="DhariwalUNet", model_channels=32,
                                        channel_mult=[1, 2, 4], num_blocks=1, attn_resolutions=[4, 2], augment_dim=9, sigma_data=0.5)),
}
# EDM2's UNet (training/networks_edm2.py): conditional with 0 and 1 attention heads and the
# uncertainty head; a latent-shaped unconditional one with explicit embedding widths, 2 heads,
# dropout (off in eval), no activation clipping and a narrow uncertainty head.
VECTORS_EDM2 = {
    "edm2-cond": ("Precond", dict(img_resolution=16, img_channels=3, label_dim=10, model_channels=32, channel_mult=[1, 2, 2], num_blocks=1,
                                  attn_resolutions=[8, 4], logvar_channels=8)),
    "edm2-uncond-latent": ("Precond", dict(img_resolution=8, img_channels=4, label_dim=0, model_channels=16, channel_mult=[1, 2],
                                           channel_mult_noise=2, channel_mult_emb=3, num_blocks=2, attn_resolutions=[4], channels_per_head=16,
                                           dropout=0.1, clip_act=None, logvar_channels=4)),
}
# DiT (models.py): conditional with learned σ and the null class, 3 heads of 16; no null class,
# no learned σ, 4×4 patches, colour, an MLP ratio that rounds down.
VECTORS_DIT = {
    "dit-cond-learn-sigma": dict(input_size=8, patch_size=2, in_channels=4, hidden_size=48, depth=2, num_heads=3, mlp_ratio=4.0,
                                 class_dropout_prob=0.1, num_classes=10, learn_sigma=True),
    "dit-patch4-no-null-class": dict(input_size=16, patch_size=4, in_channels=3, hidden_size=32, depth=3, num_heads=2, mlp_ratio=2.7,
                                     class_dropout_prob=0.0, num_classes=7, learn_sigma=False),
}
DIT_TIMESTEPS = [0, 137, 999]  # σ 0.0100, 0.602, 157.4
SIGMA = [0.02, 1.3, 40.0]
# The round trip: a small DDPM++ VP checkpoint (EDM's state dict with the golden weights)
# converted by tools/convert_teacher.py and sampled by `distillery sample`, against EDM's own
# sampler (generate.py's edm_sampler, Heun, 18 steps) from the same noise and labels.
ROUNDTRIP = ("VPPrecond", dict(img_resolution=8, img_channels=3, label_dim=10, model_type="SongUNet", embedding_type="positional",
                               encoder_type="standard", decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1],
                               model_channels=8, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], augment_dim=9,
                               channel_mult_emb=2))
ROUNDTRIP_SAMPLING = dict(steps=18, num=4, seed=7)
LABELS = [2, -1, 3]
# DiT's round trip: a small DiT-shaped checkpoint converted and sampled with DDIM on DiT's
# respaced timesteps, against DiT's own ddim_sample_loop from the same noise and labels.
ROUNDTRIP_DIT = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, mlp_ratio=4.0, class_dropout_prob=0.1,
                     num_classes=10, learn_sigma=True)
ROUNDTRIP_DIT_SAMPLING = dict(steps=10, num=4, seed=7)


def reference_networks(repo, module):
    """`training.<module>` of an EDM or EDM2 checkout. Both name their packages training,
    torch_utils and dnnlib, so those of a previous checkout are forgotten first."""
    # EDM's dnnlib imports requests for downloads, which building networks never uses.
    sys.modules.setdefault("requests", types.ModuleType("requests"))
    for name in [name for name in sys.modules if name.split(".")[0] in ("training", "torch_utils", "dnnlib")]:
        del sys.modules[name]
    sys.path.insert(0, os.path.abspath(repo))
    import importlib
    networks = importlib.import_module(f"training.{module}")
    sys.path.pop(0)
    return networks


def distillery_name(edm2_name):
    """EDM2's tensors as distillery names them: without `unet.`; the uncertainty head as it is."""
    return edm2_name[len("unet."):] if edm2_name.startswith("unet.") else edm2_name


def make(networks, name, precond_class, kwargs, seed):
    net = getattr(networks, precond_class)(**kwargs).eval()
    edm2 = hasattr(net, "unet")
    inner = net.unet if edm2 else net.model
    golden_fill(net, distillery_name) if edm2 else golden_fill(net.model)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn([len(SIGMA), kwargs["img_channels"], kwargs["img_resolution"], kwargs["img_resolution"]], generator=generator)
    sigma = torch.tensor(SIGMA)
    vector = {"x": x, "sigma": sigma}
    class_labels = None
    if kwargs["label_dim"]:
        labels = torch.tensor([label % kwargs["label_dim"] if label >= 0 else -1 for label in LABELS])
        class_labels = F.one_hot(labels.clamp(min=0), kwargs["label_dim"]).float() * (labels >= 0).float()[:, None]
        vector["labels"] = labels
    seen = {}
    hook = inner.register_forward_hook(lambda module, args, output: seen.update(x_in=args[0], c_noise=args[1], raw=output))
    with torch.no_grad():
        vector["denoised"] = net(x, sigma, class_labels)
    hook.remove()
    vector.update({key: value.detach().clone().contiguous() for key, value in seen.items()})
    state = {distillery_name(name): t for name, t in net.state_dict().items()} if edm2 else net.model.state_dict()
    return vector, {name: list(tensor.shape) for name, tensor in state.items()}


def dit_code(repo):
    """DiT's models and diffusion packages from a checkout."""
    sys.path.insert(0, os.path.abspath(repo))
    import importlib
    models, diffusion = importlib.import_module("models"), importlib.import_module("diffusion")
    sys.path.pop(0)
    return models, diffusion


def dit_labels(labels, kwargs):
    return torch.where(labels < 0, kwargs["num_classes"], labels)


def make_dit(models, diffusion_package, name, kwargs, seed):
    net = golden_fill(models.DiT(**kwargs).eval())
    diffusion = diffusion_package.create_diffusion(timestep_respacing="", learn_sigma=kwargs["learn_sigma"])
    generator = torch.Generator().manual_seed(seed)
    size, channels = kwargs["input_size"], kwargs["in_channels"]
    x = torch.randn([len(DIT_TIMESTEPS), channels, size, size], generator=generator)
    t = torch.tensor(DIT_TIMESTEPS)
    sigma = torch.from_numpy(diffusion.sqrt_recipm1_alphas_cumprod[DIT_TIMESTEPS]).float()
    labels = torch.tensor([label % kwargs["num_classes"] if label >= 0 or kwargs["class_dropout_prob"] == 0 else -1 for label in LABELS])
    x_in = x * torch.from_numpy(diffusion.sqrt_alphas_cumprod[DIT_TIMESTEPS]).float()[:, None, None, None]
    with torch.no_grad():
        raw = net(x_in, t, dit_labels(labels, kwargs))
        denoised = diffusion._predict_xstart_from_eps(x_in, t, raw[:, :channels])
    vector = {"x": x, "sigma": sigma, "labels": labels, "x_in": x_in, "c_noise": t.float(), "raw": raw.contiguous(), "denoised": denoised.contiguous()}
    return vector, {name: list(tensor.shape) for name, tensor in net.state_dict().items()}


def make_dit_roundtrip(models, diffusion_package, cli, out):
    from safetensors.torch import load_file
    net = golden_fill(models.DiT(**ROUNDTRIP_DIT).eval())
    checkpoint = os.path.join(out, "roundtrip-dit.pt")
    torch.save(net.state_dict(), checkpoint)
    dit_kwargs = json.dumps(ROUNDTRIP_DIT)
    converted, ours = os.path.join(out, "roundtrip.tmp.safetensors"), os.path.join(out, "roundtrip-ours.tmp.safetensors")
    subprocess.run([sys.executable, os.path.join(HERE, "..", "convert_teacher.py"), "dit", checkpoint, converted, "--dit-kwargs", dit_kwargs],
                   check=True)
    s = ROUNDTRIP_DIT_SAMPLING
    subprocess.run([cli, "sample", "--teacher", converted, "--sampler", "ddim", "--schedule", "ddpm", "--steps", str(s["steps"]), "--num",
                    str(s["num"]), "--seed", str(s["seed"]), "--out", ours], check=True)
    drawn = load_file(ours)
    diffusion = diffusion_package.create_diffusion(timestep_respacing=str(s["steps"]))
    # distillery starts from noise·σ_T in σ-space; DiT's x_T is that over √(1 + σ_T²).
    sigma_t = float(diffusion.sqrt_recipm1_alphas_cumprod[-1])
    x_t = drawn["noise"] * (sigma_t / math.sqrt(1 + sigma_t ** 2))
    with torch.no_grad():
        samples = diffusion.ddim_sample_loop(net, x_t.shape, noise=x_t, clip_denoised=False, model_kwargs=dict(y=drawn["labels"]), eta=0.0)
    difference = ((drawn["samples"] - samples).abs().max() / samples.abs().max()).item()
    print(f"round trip: distillery's samples against DiT's ddim_sample_loop: max relative difference {difference:.2e}")
    path = os.path.join(out, "roundtrip-dit.safetensors")
    save_file({"noise": drawn["noise"], "labels": drawn["labels"], "samples": samples.contiguous()}, path,
              metadata={"dit_kwargs": dit_kwargs, "sampling": json.dumps(s), "sampler": f"ddim_sample_loop (eta 0) of create_diffusion(\"{s['steps']}\")"})
    os.remove(converted)
    os.remove(ours)
    print(f"{checkpoint}: {os.path.getsize(checkpoint)} bytes; {path}: {os.path.getsize(path)} bytes")


def edm_sampler(edm_dir):
    """generate.py's edm_sampler, taken from the file alone (generate.py's own imports, click
    and PIL among them, are not needed to run it)."""
    import ast
    import numpy as np
    with open(os.path.join(edm_dir, "generate.py")) as f:
        tree = ast.parse(f.read())
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "edm_sampler")
    namespace = {"torch": torch, "np": np}
    exec(compile(ast.Module(body=[function], type_ignores=[]), "generate.py", "exec"), namespace)
    return namespace["edm_sampler"]


def make_roundtrip(networks, edm_dir, cli, out):
    from safetensors.torch import load_file
    precond_class, kwargs = ROUNDTRIP
    net = getattr(networks, precond_class)(**kwargs).eval()
    golden_fill(net.model)
    checkpoint = os.path.join(out, "roundtrip-ddpmpp-cond-vp.pt")
    torch.save(net.state_dict(), checkpoint)
    edm_kwargs = json.dumps(dict(kwargs, class_name=f"training.networks.{precond_class}"))
    converted, ours = os.path.join(out, "roundtrip.tmp.safetensors"), os.path.join(out, "roundtrip-ours.tmp.safetensors")
    subprocess.run([sys.executable, os.path.join(HERE, "..", "convert_teacher.py"), "edm", checkpoint, converted, "--edm-kwargs", edm_kwargs],
                   check=True)
    s = ROUNDTRIP_SAMPLING
    subprocess.run([cli, "sample", "--teacher", converted, "--sampler", "heun", "--steps", str(s["steps"]), "--num", str(s["num"]),
                    "--seed", str(s["seed"]), "--out", ours], check=True)
    drawn = load_file(ours)
    class_labels = F.one_hot(drawn["labels"], kwargs["label_dim"]).float()
    with torch.no_grad():
        samples = edm_sampler(edm_dir)(net, drawn["noise"], class_labels, num_steps=s["steps"]).float()
    difference = ((drawn["samples"] - samples).abs().max() / samples.abs().max()).item()
    print(f"round trip: distillery's samples against EDM's sampler: max relative difference {difference:.2e}")
    path = os.path.join(out, "roundtrip-ddpmpp-cond-vp.safetensors")
    save_file({"noise": drawn["noise"], "labels": drawn["labels"], "samples": samples.contiguous()}, path,
              metadata={"edm_kwargs": edm_kwargs, "sampling": json.dumps(s), "sampler": "edm_sampler (Heun, rho 7, sigma 0.002..80)"})
    os.remove(converted)
    os.remove(ours)
    print(f"{checkpoint}: {os.path.getsize(checkpoint)} bytes; {path}: {os.path.getsize(path)} bytes")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edm", required=True, help="a checkout of NVlabs/edm")
    parser.add_argument("--edm2", help="a checkout of NVlabs/edm2, for EDM2's vectors")
    parser.add_argument("--dit", help="a checkout of facebookresearch/DiT (with timm importable), for DiT's vectors")
    parser.add_argument("--dit-commit", help="the DiT checkout's commit, when it is not a git work tree")
    parser.add_argument("--out", required=True)
    parser.add_argument("--commit", help="the EDM checkout's commit, when it is not a git work tree")
    parser.add_argument("--edm2-commit", help="the EDM2 checkout's commit, when it is not a git work tree")
    parser.add_argument("--cli", help="the distillery CLI, for the round-trip vector (skipped without it)")
    args = parser.parse_args()
    def commit_of(repo, given):
        return given or subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()

    os.makedirs(args.out, exist_ok=True)
    families = [(args.edm, "networks", VECTORS, config_from_edm, commit_of(args.edm, args.commit))]
    if args.edm2:
        families.append((args.edm2, "networks_edm2", VECTORS_EDM2, config_from_edm2, commit_of(args.edm2, args.edm2_commit)))
    seed = 0
    for repo, module, vectors, config_from, commit in families:
        networks = reference_networks(repo, module)
        for name, (precond_class, kwargs) in vectors.items():
            vector, state_dict = make(networks, name, precond_class, kwargs, seed)
            seed += 1
            metadata = {"state_dict": json.dumps(state_dict, sort_keys=True), "config": json.dumps(config_from(precond_class, kwargs)),
                        "edm_class": f"training.{module}.{precond_class}", "edm_kwargs": json.dumps(kwargs), "edm_commit": commit,
                        "weights": "golden_fill.py"}
            path = os.path.join(args.out, f"{name}.safetensors")
            save_file(vector, path, metadata=metadata)
            print(f"{path}: {os.path.getsize(path)} bytes, max |D| {vector['denoised'].abs().max():.3f}, max |F| {vector['raw'].abs().max():.3f}")
        if args.cli and module == "networks":
            make_roundtrip(networks, args.edm, args.cli, args.out)
    if args.dit:
        models, diffusion_package = dit_code(args.dit)
        commit = commit_of(args.dit, args.dit_commit)
        for name, kwargs in VECTORS_DIT.items():
            vector, state_dict = make_dit(models, diffusion_package, name, kwargs, seed)
            seed += 1
            metadata = {"state_dict": json.dumps(state_dict, sort_keys=True), "config": json.dumps(config_from_dit(kwargs)),
                        "dit_class": "models.DiT", "dit_kwargs": json.dumps(kwargs), "dit_commit": commit, "weights": "golden_fill.py"}
            path = os.path.join(args.out, f"{name}.safetensors")
            save_file(vector, path, metadata=metadata)
            print(f"{path}: {os.path.getsize(path)} bytes, max |D| {vector['denoised'].abs().max():.3f}, max |F| {vector['raw'].abs().max():.3f}")
        if args.cli:
            make_dit_roundtrip(models, diffusion_package, args.cli, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
