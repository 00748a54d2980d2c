#!/usr/bin/env python3
"""Turn a published diffusion checkpoint into a distillery denoiser file (safetensors, format
"distillery.denoiser" v1), with the preconditioning recorded in its metadata.

EDM (Karras et al. 2022) network snapshots, `.pkl`:

    convert_teacher.py edm edm-cifar10-32x32-cond-vp.pkl OUT.safetensors --edm-repo EDM_CHECKOUT --trust-pickle

A `.pkl` is a Python pickle: loading it runs code from the file, so it is read only with
--trust-pickle, and it needs EDM's own code (`--edm-repo`, a checkout of NVlabs/edm) because
the pickle refers to it. Without pickles, convert a plain state dict (`torch.save(net.state_dict())`
of EDM's preconditioned network, read with `weights_only=True`) and name its architecture:

    convert_teacher.py edm STATE_DICT.pt OUT.safetensors --preset cifar10-32x32-cond-vp

`--preset` names one of the published configurations (`--list-presets`); `--edm-kwargs JSON`
gives the constructor arguments of another (EDM's `network_kwargs`, with `class_name`).
Supported: VPPrecond, VEPrecond and EDMPrecond around SongUNet (DDPM++, NCSN++) or DhariwalUNet
(ADM). iDDPMPrecond (the ADM baseline) is refused: its noise input is an index into a
discretised schedule.

EDM2 (Karras et al. 2024) snapshots, the same way with family `edm2` and a checkout of NVlabs/edm2:

    convert_teacher.py edm2 edm2-img64-s-1073741-0.075.pkl OUT.safetensors --edm-repo EDM2_CHECKOUT --trust-pickle
    convert_teacher.py edm2 STATE_DICT.pt OUT.safetensors --preset edm2-img64-s

EDM2's ImageNet-512 models work in the latent space of Stable Diffusion's VAE (4 channels,
64×64): they convert and distil as latent-space teachers, and turning their samples into images
needs that VAE, which distillery does not include.

DiT (Peebles & Xie 2023) checkpoints are `.pt` state dicts (DiT-XL-2-256x256.pt, or a training
checkpoint, whose EMA weights are taken), read with `weights_only=True`:

    convert_teacher.py dit DiT-XL-2-256x256.pt OUT.safetensors --preset DiT-XL/2-256

or with `--dit-kwargs JSON` (DiT's constructor arguments). DiT is discrete DDPM ε-prediction on
the linear β schedule in the latent space of Stable Diffusion's VAE (4×32×32 at 256², 4×64×64 at
512²): it converts to the `ddpm` parameterisation and distils in latent space, and its samples
need that VAE to become images.
"""
import argparse
import json
import math
import os
import pickle
import sys

# EDM's published configurations (its train.py options and README): the preconditioning class
# and the constructor arguments of the checkpoints at https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/.
_DDPMPP = dict(model_type="SongUNet", embedding_type="positional", encoder_type="standard", decoder_type="standard",
               channel_mult_noise=1, resample_filter=[1, 1], model_channels=128)
_NCSNPP = dict(model_type="SongUNet", embedding_type="fourier", encoder_type="residual", decoder_type="standard",
               channel_mult_noise=2, resample_filter=[1, 3, 3, 1], model_channels=128)
_ADM = dict(model_type="DhariwalUNet", model_channels=192, channel_mult=[1, 2, 3, 4])
PRESETS = {
    "cifar10-32x32-cond-vp": ("VPPrecond", dict(_DDPMPP, img_resolution=32, img_channels=3, label_dim=10, channel_mult=[2, 2, 2], augment_dim=9)),
    "cifar10-32x32-cond-ve": ("VEPrecond", dict(_NCSNPP, img_resolution=32, img_channels=3, label_dim=10, channel_mult=[2, 2, 2], augment_dim=9)),
    "cifar10-32x32-uncond-vp": ("VPPrecond", dict(_DDPMPP, img_resolution=32, img_channels=3, label_dim=0, channel_mult=[2, 2, 2], augment_dim=9)),
    "cifar10-32x32-uncond-ve": ("VEPrecond", dict(_NCSNPP, img_resolution=32, img_channels=3, label_dim=0, channel_mult=[2, 2, 2], augment_dim=9)),
    "ffhq-64x64-uncond-vp": ("VPPrecond", dict(_DDPMPP, img_resolution=64, img_channels=3, label_dim=0, channel_mult=[1, 2, 2, 2], augment_dim=9)),
    "ffhq-64x64-uncond-ve": ("VEPrecond", dict(_NCSNPP, img_resolution=64, img_channels=3, label_dim=0, channel_mult=[1, 2, 2, 2], augment_dim=9)),
    "afhqv2-64x64-uncond-vp": ("VPPrecond", dict(_DDPMPP, img_resolution=64, img_channels=3, label_dim=0, channel_mult=[1, 2, 2, 2], augment_dim=9)),
    "afhqv2-64x64-uncond-ve": ("VEPrecond", dict(_NCSNPP, img_resolution=64, img_channels=3, label_dim=0, channel_mult=[1, 2, 2, 2], augment_dim=9)),
    "imagenet-64x64-cond-adm": ("EDMPrecond", dict(_ADM, img_resolution=64, img_channels=3, label_dim=1000)),
}

# EDM2's published configurations (its train_edm2.py presets): model_channels and dropout.
_EDM2_SIZES = {"img64-xs": (128, 0.0), "img64-s": (192, 0.0), "img64-m": (256, 0.1), "img64-l": (320, 0.1), "img64-xl": (384, 0.1),
               "img512-xxs": (64, 0.0), "img512-xs": (128, 0.0), "img512-s": (192, 0.0), "img512-m": (256, 0.1), "img512-l": (320, 0.1),
               "img512-xl": (384, 0.1), "img512-xxl": (448, 0.1)}
EDM2_PRESETS = {f"edm2-{name}": ("Precond", dict(img_resolution=64, img_channels=3 if name.startswith("img64") else 4, label_dim=1000,
                                                   model_channels=channels, dropout=dropout))
                for name, (channels, dropout) in _EDM2_SIZES.items()}
_EDM2_DEFAULTS = dict(model_channels=192, channel_mult=[1, 2, 3, 4], channel_mult_noise=None, channel_mult_emb=None, num_blocks=3,
                      attn_resolutions=[16, 8], label_balance=0.5, concat_balance=0.5, channels_per_head=64, dropout=0.0, res_balance=0.3,
                      attn_balance=0.3, clip_act=256, logvar_channels=128)

# DiT's configurations (models.py's DiT_models), at 256² and 512² (latents of 32² and 64²).
_DIT_SIZES = {"XL": (28, 1152, 16), "L": (24, 1024, 16), "B": (12, 768, 12), "S": (12, 384, 6)}
DIT_PRESETS = {f"DiT-{size}/{patch}-{image}": dict(input_size=image // 8, patch_size=patch, hidden_size=hidden, depth=depth, num_heads=heads)
               for size, (depth, hidden, heads) in _DIT_SIZES.items() for patch in (2, 4, 8) for image in (256, 512)}
_DIT_DEFAULTS = dict(input_size=32, patch_size=2, in_channels=4, hidden_size=1152, depth=28, num_heads=16, mlp_ratio=4.0, class_dropout_prob=0.1,
                     num_classes=1000, learn_sigma=True)

# EDM's constructor defaults, which a checkpoint's arguments override.
_SONG_DEFAULTS = dict(model_channels=128, channel_mult=[1, 2, 2, 2], channel_mult_emb=4, num_blocks=4, attn_resolutions=[16], dropout=0.10,
                      label_dropout=0, augment_dim=0, embedding_type="positional", channel_mult_noise=1, encoder_type="standard",
                      decoder_type="standard", resample_filter=[1, 1])
_DHARIWAL_DEFAULTS = dict(model_channels=192, channel_mult=[1, 2, 3, 4], channel_mult_emb=4, num_blocks=3, attn_resolutions=[32, 16, 8],
                          dropout=0.10, label_dropout=0, augment_dim=0)
# EDM's argument names that distillery spells differently.
_RENAMED = {"num_blocks": "blocks_per_level", "embedding_type": "noise_embedding", "label_dim": "num_classes"}
# The range EDM's sampler uses (generate.py): [0.002, 80], narrowed by the network's own.
SAMPLER_SIGMA_MIN, SAMPLER_SIGMA_MAX = 0.002, 80.0


class ConversionError(Exception):
    pass


def _vp_sigma(t, beta_d, beta_min):
    return math.sqrt(math.expm1(0.5 * beta_d * t * t + beta_min * t))


def config_from_edm(precond_class, kwargs):
    """distillery's denoiser config ({"model": ..., "precond": ...}) for EDM's `precond_class`
    built with `kwargs` (its init_kwargs: img_resolution, img_channels, label_dim, model_type and
    the network's arguments)."""
    kwargs = dict(kwargs)
    kwargs.pop("use_fp16", None)  # a compute choice, not part of the network
    if precond_class == "iDDPMPrecond":
        raise ConversionError("iDDPMPrecond (the ADM baseline) is not supported: its noise input is an index into a discretised schedule")
    if precond_class not in ("VPPrecond", "VEPrecond", "EDMPrecond"):
        raise ConversionError(f"unknown preconditioning {precond_class!r}: expected VPPrecond, VEPrecond or EDMPrecond")
    precond_args = {"VPPrecond": dict(beta_d=19.9, beta_min=0.1, M=1000, epsilon_t=1e-5),
                    "VEPrecond": dict(sigma_min=0.02, sigma_max=100),
                    "EDMPrecond": dict(sigma_min=0, sigma_max=float("inf"), sigma_data=0.5)}[precond_class]
    for key in list(precond_args):
        if key in kwargs:
            precond_args[key] = kwargs.pop(key)
    model_type = kwargs.pop("model_type", "SongUNet" if precond_class in ("VPPrecond", "VEPrecond") else "DhariwalUNet")
    if model_type not in ("SongUNet", "DhariwalUNet"):
        raise ConversionError(f"unknown model_type {model_type!r}: expected SongUNet or DhariwalUNet")
    arguments = dict(_SONG_DEFAULTS if model_type == "SongUNet" else _DHARIWAL_DEFAULTS)
    try:
        channels, resolution = kwargs.pop("img_channels"), kwargs.pop("img_resolution")
    except KeyError as missing:
        raise ConversionError(f"the network's arguments lack {missing}") from None
    arguments["label_dim"] = kwargs.pop("label_dim", 0)
    for key, value in kwargs.items():
        if key not in arguments:
            raise ConversionError(f"{model_type} argument {key!r} is not one distillery's {model_type} has")
        arguments[key] = value
    model = {"kind": "song_unet" if model_type == "SongUNet" else "dhariwal_unet", "in_channels": channels, "out_channels": channels,
             "resolution": resolution}
    for key, value in arguments.items():
        model[_RENAMED.get(key, key)] = list(value) if isinstance(value, (list, tuple)) else value
    if precond_class == "VPPrecond":
        if (precond_args["beta_d"], precond_args["beta_min"], precond_args["M"]) != (19.9, 0.1, 1000):
            raise ConversionError("VPPrecond with beta_d, beta_min, M other than 19.9, 0.1, 1000 is not supported")
        low, high = _vp_sigma(precond_args["epsilon_t"], 19.9, 0.1), _vp_sigma(1.0, 19.9, 0.1)
        precond = {"parameterization": "vp", "sigma_data": 0.5}
    elif precond_class == "VEPrecond":
        low, high = precond_args["sigma_min"], precond_args["sigma_max"]
        precond = {"parameterization": "ve", "sigma_data": 0.5}
    else:
        low, high = precond_args["sigma_min"], precond_args["sigma_max"]
        precond = {"parameterization": "edm", "sigma_data": precond_args["sigma_data"]}
    precond["sigma_min"] = max(SAMPLER_SIGMA_MIN, low)
    precond["sigma_max"] = min(SAMPLER_SIGMA_MAX, high)
    return {"model": model, "precond": precond}


def config_from_edm2(precond_class, kwargs):
    """distillery's denoiser config for EDM2's Precond built with `kwargs` (its init_kwargs)."""
    kwargs = dict(kwargs)
    kwargs.pop("use_fp16", None)
    if precond_class != "Precond":
        raise ConversionError(f"unknown EDM2 preconditioning {precond_class!r}: expected Precond")
    try:
        channels, resolution = kwargs.pop("img_channels"), kwargs.pop("img_resolution")
    except KeyError as missing:
        raise ConversionError(f"the network's arguments lack {missing}") from None
    sigma_data = kwargs.pop("sigma_data", 0.5)
    label_dim = kwargs.pop("label_dim", 0)
    if list(kwargs.pop("resample_filter", [1, 1])) != [1, 1]:
        raise ConversionError("EDM2 networks with a resampling filter other than [1, 1] are not supported")
    arguments = dict(_EDM2_DEFAULTS)
    for key, value in kwargs.items():
        if key not in arguments:
            raise ConversionError(f"EDM2 UNet argument {key!r} is not one distillery's edm2_unet has")
        arguments[key] = value
    model = {"kind": "edm2_unet", "in_channels": channels, "resolution": resolution, "num_classes": label_dim}
    # EDM2's automatic embedding widths, written out.
    if arguments["channel_mult_noise"] is None:
        arguments["channel_mult_noise"] = arguments["channel_mult"][0]
    if arguments["channel_mult_emb"] is None:
        arguments["channel_mult_emb"] = max(arguments["channel_mult"])
    for key, value in arguments.items():
        if key == "clip_act" and value is None:
            value = 0
        model[_RENAMED.get(key, key)] = list(value) if isinstance(value, (list, tuple)) else value
    return {"model": model, "precond": {"parameterization": "edm", "sigma_data": sigma_data, "sigma_min": SAMPLER_SIGMA_MIN,
                                        "sigma_max": SAMPLER_SIGMA_MAX}}


def config_from_dit(kwargs):
    """distillery's denoiser config for DiT built with `kwargs` (its constructor arguments)."""
    arguments = dict(_DIT_DEFAULTS)
    for key, value in kwargs.items():
        if key not in arguments:
            raise ConversionError(f"DiT argument {key!r} is not one distillery's dit has")
        arguments[key] = value
    model = {"kind": "dit", "in_channels": arguments["in_channels"], "resolution": arguments["input_size"]}
    for key in ("patch_size", "hidden_size", "depth", "num_heads", "mlp_ratio", "num_classes", "learn_sigma"):
        model[key] = arguments[key]
    model["label_dropout"] = arguments["class_dropout_prob"]
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference"))
    from denoiser import ddpm_sigmas
    sigmas = ddpm_sigmas()
    # σ_data only scales the EDM-family losses of students: Stable Diffusion's latents, scaled by
    # 0.18215, were chosen to have unit variance.
    return {"model": model, "precond": {"parameterization": "ddpm", "sigma_data": 1.0, "sigma_min": float(sigmas[0]), "sigma_max": float(sigmas[-1])}}


def network_tensors(state_dict, family="edm"):
    """The network's tensors under distillery's names: EDM's without its preconditioning's `model.`,
    EDM2's without `unet.` (its uncertainty head, `logvar_*`, keeps its names), DiT's as they are."""
    tensors = {}
    for name, tensor in state_dict.items():
        if family == "dit":
            ours = name
            ours = name
        elif family == "edm2" and name.startswith("logvar_"):
            ours = name
        elif name.startswith("model." if family == "edm" else "unet."):
            ours = name.split(".", 1)[1]
        else:
            raise ConversionError(f"tensor {name!r} is not one of the {family.upper()} network's: expected the state dict of its preconditioned network")
        tensors[ours] = tensor.detach().float().contiguous().cpu()
    return tensors


def check_against_architecture(config, tensors):
    """The tensors must be exactly those of the network the config declares (built by the
    Python twin), so that a wrong preset is refused here rather than when the file loads."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference"))
    from denoiser import NetworkDenoiser
    import torch
    with torch.device("meta"):  # shapes only, no memory
        expected = {name: tuple(t.shape) for name, t in NetworkDenoiser(config).net.state_dict().items()}
    for name, shape in expected.items():
        if name not in tensors:
            raise ConversionError(f"the checkpoint lacks tensor {name!r} of the {config['model']['kind']} it was declared to be")
        if tuple(tensors[name].shape) != shape:
            raise ConversionError(f"tensor {name!r} has shape {list(tensors[name].shape)}, but the declared network's is {list(shape)}: "
                                  "the checkpoint is of another width or configuration")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise ConversionError(f"the checkpoint has tensors the declared network lacks, such as {extra[0]!r}")


def write_denoiser(path, config, tensors, source):
    from safetensors.torch import save_file
    save_file(tensors, path, metadata={"format": "distillery.denoiser", "format_version": "1", "config": json.dumps(config),
                                       "converted_from": source})


def _load_edm_pickle(path, edm_repo):
    if edm_repo is None or not os.path.isdir(os.path.join(edm_repo, "torch_utils")):
        raise ConversionError("--edm-repo must name a checkout of NVlabs/edm (or NVlabs/edm2): the pickle refers to its torch_utils and training packages")
    sys.path.insert(0, os.path.abspath(edm_repo))
    try:
        import requests  # noqa: F401
    except ImportError:
        # EDM's dnnlib imports requests for downloads, which unpickling a network never does.
        import types
        sys.modules["requests"] = types.ModuleType("requests")
    with open(path, "rb") as f:
        data = pickle.load(f)
    net = data["ema"] if isinstance(data, dict) and "ema" in data else data
    init_kwargs = getattr(net, "init_kwargs", None)
    if init_kwargs is None:
        raise ConversionError(f"{path}: the pickle holds no EDM network with its constructor arguments")
    return type(net).__name__, dict(init_kwargs), net.state_dict()


def convert_edm(source, out, edm_repo=None, trust_pickle=False, preset=None, edm_kwargs=None, family="edm"):
    import torch
    presets, config_from = (PRESETS, config_from_edm) if family == "edm" else (EDM2_PRESETS, config_from_edm2)
    if source.endswith(".pkl"):
        if not trust_pickle:
            raise ConversionError(f"{source} is a pickle, which runs code when loaded: pass --trust-pickle if it comes from a source you trust, "
                                  "or convert a plain state dict with --preset")
        precond_class, kwargs, state_dict = _load_edm_pickle(source, edm_repo)
    else:
        if (preset is None) == (edm_kwargs is None):
            raise ConversionError("a state dict needs its architecture: give --preset or --edm-kwargs (not both)")
        if preset is not None:
            if preset not in presets:
                raise ConversionError(f"unknown preset {preset!r}: expected one of {', '.join(presets)}")
            precond_class, kwargs = presets[preset]
        else:
            kwargs = json.loads(edm_kwargs)
            precond_class = kwargs.pop("class_name", "").rsplit(".", 1)[-1]
        state_dict = torch.load(source, map_location="cpu", weights_only=True)
    config = config_from(precond_class, kwargs)
    tensors = network_tensors(state_dict, family)
    check_against_architecture(config, tensors)
    write_denoiser(out, config, tensors, os.path.basename(source))
    return config


def convert_dit(source, out, preset=None, dit_kwargs=None):
    import torch
    if source.endswith(".pkl"):
        raise ConversionError(f"{source}: DiT checkpoints are .pt state dicts")
    if (preset is None) == (dit_kwargs is None):
        raise ConversionError("a DiT state dict needs its architecture: give --preset or --dit-kwargs (not both)")
    if preset is not None:
        if preset not in DIT_PRESETS:
            raise ConversionError(f"unknown preset {preset!r}: expected one of {', '.join(DIT_PRESETS)}")
        kwargs = DIT_PRESETS[preset]
    else:
        kwargs = json.loads(dit_kwargs)
    # DiT's training checkpoints also hold its argparse options, plain data the loader may build.
    with torch.serialization.safe_globals([argparse.Namespace]):
        state_dict = torch.load(source, map_location="cpu", weights_only=True)
    if isinstance(state_dict, dict) and "ema" in state_dict:
        state_dict = state_dict["ema"]
    config = config_from_dit(kwargs)
    tensors = network_tensors(state_dict, "dit")
    check_against_architecture(config, tensors)
    write_denoiser(out, config, tensors, os.path.basename(source))
    return config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("family", choices=["edm", "edm2", "dit"], help="whose checkpoint it is")
    parser.add_argument("source", nargs="?", help="the checkpoint (.pkl snapshot or .pt state dict)")
    parser.add_argument("out", nargs="?", help="the denoiser file to write (.safetensors)")
    parser.add_argument("--edm-repo", help="a checkout of NVlabs/edm (edm2: NVlabs/edm2), for .pkl snapshots")
    parser.add_argument("--trust-pickle", action="store_true", help="allow loading a .pkl (runs code from the file)")
    parser.add_argument("--preset", help="the published configuration of a plain state dict")
    parser.add_argument("--edm-kwargs", help="EDM network_kwargs as JSON (with class_name) for a plain state dict")
    parser.add_argument("--dit-kwargs", help="DiT's constructor arguments as JSON, for a state dict of no preset")
    parser.add_argument("--list-presets", action="store_true")
    args = parser.parse_args(argv)
    if args.list_presets:
        if args.family == "dit":
            for name, kwargs in DIT_PRESETS.items():
                print(f"{name}: DiT {json.dumps(kwargs)}")
            return 0
        for name, (precond_class, kwargs) in (PRESETS if args.family == "edm" else EDM2_PRESETS).items():
            print(f"{name}: {precond_class} {kwargs.get('model_type', 'UNet')}")
        return 0
    if not args.source or not args.out:
        parser.error("give the checkpoint and the output file")
    try:
        if args.family == "dit":
            config = convert_dit(args.source, args.out, args.preset, args.dit_kwargs)
        else:
            config = convert_edm(args.source, args.out, args.edm_repo, args.trust_pickle, args.preset, args.edm_kwargs, args.family)
    except (ConversionError, OSError, ValueError, RuntimeError, pickle.UnpicklingError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {config['model']['kind']}, {config['precond']['parameterization']} preconditioning, "
          f"σ in [{config['precond']['sigma_min']:g}, {config['precond']['sigma_max']:g}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
