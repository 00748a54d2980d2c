"""Convert pytorch-fid's FID Inception weights to the safetensors file `distillery eval --features
inception` loads (pytorch-fid's InceptionV3 parameter names, e.g. blocks.2.0.branch1x1.conv.weight).

    python tools/convert_inception.py pt_inception-2015-12-05-6726825d.pth inception.safetensors

The input is pytorch-fid's download (https://github.com/mseitzer/pytorch-fid/releases/download/
fid_weights/pt_inception-2015-12-05-6726825d.pth) or any state_dict of the same network, in
torchvision's names (Conv2d_1a_3x3..., Mixed_7c...) or already in InceptionV3's (blocks...). It is
read with torch.load(weights_only=True): tensors only, no code.
"""
import sys

import torch


def build_fid_inception(state_dict=None):
    """pytorch-fid's InceptionV3 (pool3 output) with the given torchvision-named weights, or with
    torchvision's random initialisation when none are given."""
    import pytorch_fid.inception as fid

    def fid_inception_v3():
        inception = fid._inception_v3(num_classes=1008, aux_logits=False, weights=None)
        inception.Mixed_5b = fid.FIDInceptionA(192, pool_features=32)
        inception.Mixed_5c = fid.FIDInceptionA(256, pool_features=64)
        inception.Mixed_5d = fid.FIDInceptionA(288, pool_features=64)
        inception.Mixed_6b = fid.FIDInceptionC(768, channels_7x7=128)
        inception.Mixed_6c = fid.FIDInceptionC(768, channels_7x7=160)
        inception.Mixed_6d = fid.FIDInceptionC(768, channels_7x7=160)
        inception.Mixed_6e = fid.FIDInceptionC(768, channels_7x7=192)
        inception.Mixed_7b = fid.FIDInceptionE_1(1280)
        inception.Mixed_7c = fid.FIDInceptionE_2(2048)
        if state_dict is not None:
            inception.load_state_dict(state_dict)
        return inception

    # pytorch-fid builds the network through this module-level function; ours only skips the download.
    original, fid.fid_inception_v3 = fid.fid_inception_v3, fid_inception_v3
    try:
        return fid.InceptionV3([fid.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    finally:
        fid.fid_inception_v3 = original


def main():
    if len(sys.argv) != 3 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(sys.argv) == 2 else 2
    from safetensors.torch import save_file
    state = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
    if all(k.startswith("blocks.") for k in state):
        tensors = state
    else:
        tensors = build_fid_inception(state).state_dict()
    save_file({k: v.contiguous() for k, v in tensors.items()}, sys.argv[2], metadata={"format": "distillery.inception-fid"})
    print(f"wrote {sys.argv[2]} ({len(tensors)} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
