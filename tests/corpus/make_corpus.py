#!/usr/bin/env python3
"""Writes the malformed-input corpus: damaged files of every format the project reads, and the
`distillery` command that must refuse each one, into cases.jsonl.

    make_corpus.py CLI          # rewrite the files and cases (keeping the recorded errors)
    make_corpus.py CLI --record # run every case and record the error it gives now

Each case is {"name", "command", "error"}: the command runs from a fresh scratch directory with
{cli}, {corpus} (this folder), {source} (the source tree) and {out} (the scratch
directory) substituted, and must fail (an exit status from 1 to 127: no signal) and print
exactly `error` (from its "error: " line to the end, or the whole output where the argument
parser speaks; the same placeholders substituted). The recorded errors are reviewed by hand before they are committed: each must
name the file or key and say what was expected.
"""
import argparse
import base64
import fractions
import gzip
import json
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "tools" / "reference"))
from denoiser import NetworkDenoiser  # noqa: E402

cases = []


def case(name, command):
    cases.append({"name": name, "command": command})


def write(relative, data):
    path = HERE / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return "{corpus}/" + relative


# ---- safetensors: the framing, then a denoiser's metadata and tensors ------------------------

def safetensors_bytes(header, data=b""):
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return struct.pack("<Q", len(text)) + text + data


def tiny_student():
    torch.manual_seed(0)
    config = {"model": {"kind": "mlp", "shape": [1, 4, 4], "hidden": 8, "layers": 1, "embedding": 8, "num_classes": 0, "label_dropout": 0.0},
              "precond": {"parameterization": "edm", "sigma_data": 0.5, "sigma_min": 0.002, "sigma_max": 80.0}}
    net = NetworkDenoiser(config)
    tensors = {k: v.contiguous() for k, v in net.net.state_dict().items()}
    metadata = {"format": "distillery.denoiser", "format_version": "1", "config": json.dumps(config),
                "student_sampler": "multistep", "student_sigmas": "[80.0]"}
    return tensors, metadata


def tensors_file(tensors, metadata):
    header, data = {}, b""
    for name, tensor in tensors.items():
        raw = tensor.numpy().tobytes()
        dtype = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64"}[tensor.dtype]
        header[name] = {"dtype": dtype, "shape": list(tensor.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    header["__metadata__"] = metadata
    return safetensors_bytes(header, data)


def safetensors_cases():
    generate = "{cli} generate --model %s --num 2 --out {out}/g.png"
    f32 = struct.pack("<4f", 1, 2, 3, 4)
    one = {"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    framing = {
        "empty": b"",
        "short-length": b"\x10\x00\x00",
        "length-beyond-file": struct.pack("<Q", 1000) + b"{}",
        "length-zero": struct.pack("<Q", 0),
        "length-huge": struct.pack("<Q", 2**63) + b"{}",
        "header-not-json": safetensors_bytes(b"{not json"),
        "header-array": safetensors_bytes([1, 2]),
        "header-string": safetensors_bytes("tensors"),
        "no-dtype": safetensors_bytes({"t": {"shape": [4], "data_offsets": [0, 16]}}, f32),
        "no-shape": safetensors_bytes({"t": {"dtype": "F32", "data_offsets": [0, 16]}}, f32),
        "no-offsets": safetensors_bytes({"t": {"dtype": "F32", "shape": [4]}}, f32),
        "unknown-dtype": safetensors_bytes({"t": {"dtype": "F128", "shape": [4], "data_offsets": [0, 16]}}, f32),
        "negative-shape": safetensors_bytes({"t": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}, f32),
        "shape-not-list": safetensors_bytes({"t": {"dtype": "F32", "shape": 4, "data_offsets": [0, 16]}}, f32),
        "shape-of-strings": safetensors_bytes({"t": {"dtype": "F32", "shape": ["4"], "data_offsets": [0, 16]}}, f32),
        "offsets-reversed": safetensors_bytes({"t": {"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}}, f32),
        "offsets-beyond-data": safetensors_bytes({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 32]}}, f32),
        "size-mismatch": safetensors_bytes({"t": {"dtype": "F32", "shape": [5], "data_offsets": [0, 16]}}, f32),
        "overlapping": safetensors_bytes({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                                          "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, f32),
        "gap": safetensors_bytes({"t": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, f32),
        "metadata-not-strings": safetensors_bytes({**one, "__metadata__": {"format": 3}}, f32),
        "metadata-not-object": safetensors_bytes({**one, "__metadata__": ["format"]}, f32),
        "shape-overflow": safetensors_bytes({"t": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 16]}}, f32),
        "header-not-utf8": safetensors_bytes(b'{"t\xff": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}', f32),
        "not-a-denoiser": safetensors_bytes(one, f32),
    }
    for name, data in framing.items():
        case(f"safetensors/{name}", generate % write(f"safetensors/{name}.safetensors", data))

    tensors, metadata = tiny_student()
    variants = {}
    variants["format-version-2"] = (tensors, {**metadata, "format_version": "2"})
    variants["no-config"] = (tensors, {k: v for k, v in metadata.items() if k != "config"})
    variants["config-not-json"] = (tensors, {**metadata, "config": "{model: "})
    config = json.loads(metadata["config"])
    unknown = json.loads(metadata["config"]); unknown["model"]["hiden"] = 8
    variants["config-unknown-key"] = (tensors, {**metadata, "config": json.dumps(unknown)})
    negative = json.loads(metadata["config"]); negative["precond"]["sigma_data"] = -0.5
    variants["config-negative-sigma-data"] = (tensors, {**metadata, "config": json.dumps(negative)})
    huge = json.loads(metadata["config"]); huge["model"]["hidden"] = 60000
    variants["config-far-larger-network"] = (tensors, {**metadata, "config": json.dumps(huge)})
    wider = json.loads(metadata["config"]); wider["model"]["hidden"] = 16
    variants["config-other-width"] = (tensors, {**metadata, "config": json.dumps(wider)})
    odd = json.loads(metadata["config"]); odd["model"]["embedding"] = 7
    variants["config-odd-embedding"] = (tensors, {**metadata, "config": json.dumps(odd)})
    kind = json.loads(metadata["config"]); kind["model"]["kind"] = "transformer"
    variants["config-unknown-kind"] = (tensors, {**metadata, "config": json.dumps(kind)})
    missing = dict(tensors); missing.pop(sorted(missing)[0])
    variants["tensor-missing"] = (missing, metadata)
    extra = dict(tensors); extra["extra.weight"] = torch.zeros(3)
    variants["tensor-extra"] = (extra, metadata)
    first = sorted(tensors)[0]
    matrix = next(name for name in sorted(tensors) if tensors[name].dim() == 2)
    reshaped = dict(tensors); reshaped[matrix] = reshaped[matrix].reshape(-1)
    variants["tensor-wrong-shape"] = (reshaped, metadata)
    doubled = dict(tensors); doubled[first] = doubled[first].double()
    variants["tensor-float64"] = (doubled, metadata)
    nan = {k: v.clone() for k, v in tensors.items()}; nan[first].view(-1)[0] = float("nan")
    variants["tensor-nan"] = (nan, metadata)
    variants["not-a-student"] = (tensors, {k: v for k, v in metadata.items() if not k.startswith("student_")})
    variants["student-sigmas-not-list"] = (tensors, {**metadata, "student_sigmas": "80"})
    variants["student-sigmas-negative"] = (tensors, {**metadata, "student_sigmas": "[80.0, -1.0]"})
    variants["student-unknown-sampler"] = (tensors, {**metadata, "student_sampler": "rk45"})
    for name, (t, m) in variants.items():
        case(f"denoiser/{name}", generate % write(f"denoiser/{name}.safetensors", tensors_file(t, m)))
    # The valid student itself: the cases above differ from it in one thing each.
    write("denoiser/valid.safetensors", tensors_file(tensors, metadata))
    routed_cases(generate)


def routed_students(num_classes, route):
    """Two conditional tiny students in one routed file (multi-student distillation's output)."""
    torch.manual_seed(1)
    config = {"model": {"kind": "mlp", "shape": [1, 4, 4], "hidden": 8, "layers": 1, "embedding": 8, "num_classes": num_classes, "label_dropout": 0.0},
              "precond": {"parameterization": "edm", "sigma_data": 0.5, "sigma_min": 0.002, "sigma_max": 80.0}}
    tensors = {}
    for k in range(2):
        for name, value in NetworkDenoiser(config).net.state_dict().items():
            tensors[f"student.{k}.{name}"] = value.contiguous()
    metadata = {"format": "distillery.routed_denoiser", "format_version": "1", "router": json.dumps({"route": route, "networks": [config, config]}),
                "student_sampler": "multistep", "student_sigmas": "[80.0]"}
    return tensors, metadata


def routed_cases(generate):
    tensors, metadata = routed_students(2, [0, 1])
    variants = {
        "routed-format-version-2": (tensors, {**metadata, "format_version": "2"}),
        "routed-no-router": (tensors, {k: v for k, v in metadata.items() if k != "router"}),
        "routed-router-not-json": (tensors, {**metadata, "router": '{"route": [0, 1'}),
        "routed-route-to-absent-network": routed_students(2, [0, 2]),
        "routed-network-without-class": routed_students(2, [0, 0]),
        "routed-tensor-of-no-network": ({**tensors, "student.2.extra": torch.zeros(3)}, metadata),
        "routed-networks-of-other-classes": routed_students(3, [0, 1]),
    }
    for name, (t, m) in variants.items():
        case(f"denoiser/{name}", generate % write(f"denoiser/{name}.safetensors", tensors_file(t, m)))
    valid = write("denoiser/routed-valid.safetensors", tensors_file(tensors, metadata))
    case("denoiser/routed-label-out-of-range", (generate % valid) + " --labels 2")


# ---- .npz statistics --------------------------------------------------------------------------

def npz_bytes(arrays, compressed=True):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.npz"
        (np.savez_compressed if compressed else np.savez)(path, **arrays)
        return path.read_bytes()


def npz_cases():
    fd = "{cli} eval fd %s %s --quiet --classifier {source}/assets/eval/fmnist-classifier.safetensors"
    # Statistics of the classifier's 256 features that compress well (the corpus stays small).
    mu, sigma = np.linspace(-1, 1, 256), 0.5 * np.eye(256) + 0.01
    good = write("npz/valid.npz", npz_bytes({"mu": mu, "sigma": sigma, "count": np.int64(300)}))
    stored = npz_bytes({"mu": mu, "sigma": sigma}, compressed=False)
    flipped = bytearray(stored); flipped[len(stored) // 2] ^= 0x10
    claims = bytearray(stored)
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = claims.find(signature); claims[at + offset:at + offset + 4] = struct.pack("<I", 2**31)
    sigma_bad = sigma.copy(); sigma_bad[0, 1] += 1.0
    mu_inf = mu.copy(); mu_inf[3] = np.inf
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "b.npz"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("mu.npy", b"not an npy")
            z.writestr("sigma.txt", b"x")
        foreign_member = path.read_bytes()
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_BZIP2) as z:
            z.writestr("mu.npy", npz_bytes({"mu": mu})[:10])
        bzip2 = path.read_bytes()
    variants = {
        "empty": b"",
        "not-zip": b"mu sigma",
        "truncated": stored[: len(stored) // 2],
        "flipped-byte": bytes(flipped),
        "member-claims-2gb": bytes(claims),
        "member-not-npy": foreign_member,
        "bzip2-member": bzip2,
        "no-sigma": npz_bytes({"mu": mu}),
        "no-mu": npz_bytes({"sigma": sigma}),
        "wrong-dims": npz_bytes({"mu": mu[:10], "sigma": sigma[:10, :10]}),
        "sigma-not-square": npz_bytes({"mu": mu, "sigma": sigma[:, :100]}),
        "sigma-asymmetric": npz_bytes({"mu": mu, "sigma": sigma_bad}),
        "sigma-negative-definite": npz_bytes({"mu": mu, "sigma": -sigma}),
        "mu-infinite": npz_bytes({"mu": mu_inf, "sigma": sigma}),
        # Finite, but its squared distance to any other mean overflows a double.
        "mu-huge": npz_bytes({"mu": mu * 1e160, "sigma": sigma}),
        "mu-integer": npz_bytes({"mu": mu.astype(np.int64), "sigma": sigma}),
        "mu-big-endian": npz_bytes({"mu": mu.astype(">f8"), "sigma": sigma}),
        "mu-fortran-matrix": npz_bytes({"mu": mu, "sigma": np.asfortranarray(sigma + np.eye(256) * 1e-9)}),
        "count-one": npz_bytes({"mu": mu, "sigma": sigma, "count": np.int64(1)}),
        "count-float": npz_bytes({"mu": mu, "sigma": sigma, "count": np.float64(300)}),
        "mu-strings": npz_bytes({"mu": np.array(["a", "b"]), "sigma": sigma}),
    }
    for name, data in variants.items():
        case(f"npz/{name}", fd % (write(f"npz/{name}.npz", data), good))


# ---- YAML recipes -----------------------------------------------------------------------------

def yaml_cases():
    # From the folder, where the recipes' data.path (gmm.yaml) is.
    train = "cd {corpus}/yaml && {cli} teacher train --config %s --out {out}/run"
    base = "data: {dataset: gmm, path: gmm.yaml, size: 64}\nmodel: {kind: mlp, shape: [2], hidden: 8, layers: 1}\ntrain: {batch: 8, steps: 2}\n"
    variants = {
        "not-yaml": "model: [unclosed\n",
        "list-at-top": "- model\n- train\n",
        "scalar-at-top": "just text\n",
        "unknown-key": base + "trian: {steps: 3}\n",
        "unknown-nested-key": base.replace("hidden: 8", "hiden: 8"),
        "wrong-type-int": base.replace("steps: 2", "steps: two"),
        "fractional-int": base.replace("steps: 2", "steps: 2.5"),
        "wrong-type-list": base.replace("shape: [2]", "shape: 2"),
        "wrong-type-bool": base.replace("size: 64}", "size: 64, hflip: maybe}"),
        "bad-choice": base.replace("kind: mlp", "kind: mpl"),
        "negative-lr": base.replace("steps: 2}", "steps: 2, lr: -1}"),
        "nan-lr": base.replace("steps: 2}", "steps: 2, lr: .nan}"),
        "inf-lr": base.replace("steps: 2}", "steps: 2, lr: .inf}"),
        "zero-batch": base.replace("batch: 8", "batch: 0"),
        "huge-batch": base.replace("batch: 8", "batch: 100000000"),
        "beta-one": base + "optimizer: {beta1: 1.0}\n",
        "negative-weight-decay": base + "optimizer: {weight_decay: -0.1}\n",
        "dropout-one": base.replace("layers: 1}", "layers: 1, label_dropout: 1.5}"),
        "huge-hidden": base.replace("hidden: 8", "hidden: 100000000"),
        "key-is-list": base + "[a, b]: 1\n",
        "key-is-map": base + "train:\n  {x: 1}: 2\n",
        "not-utf8": base.replace("gmm.yaml", "gmm\udcff.yaml"),
        "unknown-optimizer": base + "optimizer: {kind: adamw2}\n",
        "decay-beyond-steps": base.replace("steps: 2}", "steps: 2, lr_schedule: cosine, decay_steps: 5}"),
        "sigma-min-above-max": base + "precond: {sigma_min: 10, sigma_max: 1}\n",
        "mlp-key-on-unet": base.replace("kind: mlp, shape: [2], hidden: 8, layers: 1", "kind: unet, hidden: 8"),
        "missing-data-path": base.replace(", path: gmm.yaml", ""),
        "duplicate-key": base + "train: {steps: 3}\n",
        "int-overflow": base.replace("steps: 2", "steps: 99999999999999999999"),
        "tab-indent": "model:\n\tkind: mlp\n",
    }
    for name, text in variants.items():
        data = text.encode("utf-8", "surrogateescape")
        case(f"yaml/{name}", train % write(f"yaml/{name}.yaml", data))


# ---- image folders ----------------------------------------------------------------------------

def png_chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xffffffff)


def png(width, height, bit_depth=8, colour=0, rows=None, ihdr_crc_ok=True):
    raw = rows if rows is not None else b"".join(b"\x00" + bytes(width * (bit_depth // 8) * (3 if colour == 2 else 1)) for _ in range(height))
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0))
    if not ihdr_crc_ok:
        ihdr = ihdr[:-4] + b"\0\0\0\0"
    return b"\x89PNG\r\n\x1a\n" + ihdr + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")


def image_cases():
    fd = "{cli} eval fd %s dataset:fmnist-test --quiet --classifier {source}/assets/eval/fmnist-classifier.safetensors"
    good = png(8, 8)
    folders = {
        "empty-folder": {},
        "not-png": {"a.png": b"plain text"},
        "truncated-png": {"a.png": good[: len(good) // 2]},
        "bad-ihdr-crc": {"a.png": png(8, 8, ihdr_crc_ok=False)},
        "sixteen-bit": {"a.png": png(8, 8, bit_depth=16)},
        # Valid headers (the size is checked once the decoder has read them, before pixels).
        "huge-declared-png": {"a.png": png(60000, 60000, rows=b"")},
        "huge-declared-jpeg": {"a.jpg": b"\xff\xd8\xff\xc0\x00\x11\x08\x9c\x40\xc3\x50\x03\x01\x11\x00\x02\x11\x01\x03\x11\x01"
                                        b"\xff\xda\x00\x0c\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00\xff\xd9"},
        "truncated-jpeg": {"a.jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"},
        "sizes-differ": {"a.png": good, "b.png": png(4, 4)},
        "dataset-json-not-json": {"a.png": good, "dataset.json": b"{labels"},
        "dataset-json-no-labels": {"a.png": good, "dataset.json": b'{"classes": 3}'},
        "dataset-json-label-string": {"a.png": good, "dataset.json": b'{"labels": [["a.png", "shirt"]]}'},
        "dataset-json-negative": {"a.png": good, "dataset.json": b'{"labels": [["a.png", -2]]}'},
        "dataset-json-missing-image": {"a.png": good, "dataset.json": b'{"labels": [["other.png", 1]]}'},
        "dataset-json-extra-entry": {"a.png": good, "dataset.json": b'{"labels": [["a.png", 1], ["other.png", 1]]}'},
        "dataset-json-duplicate": {"a.png": good, "dataset.json": b'{"labels": [["a.png", 1], ["a.png", 2]]}'},
        # Decodable, but not the 28x28 the Fashion-MNIST classifier reads.
        "size-27": {"a.png": png(27, 27), "b.png": png(27, 27)},
        "image-rows-short": {"a.png": png(8, 8, rows=b"\x00" * 20)},
    }
    for name, files in folders.items():
        folder = HERE / "images" / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for file, data in files.items():
            (folder / file).write_bytes(data)
        (folder / ".keep").write_bytes(b"")
        case(f"images/{name}", fd % ("{corpus}/images/" + name))


# ---- Fashion-MNIST IDX files ------------------------------------------------------------------

def idx_cases():
    accuracy = "DISTILLERY_FASHION_MNIST_DIR=%s {cli} eval accuracy dataset:fmnist-test --quiet --classifier {source}/assets/eval/fmnist-classifier.safetensors"
    images = struct.pack(">4I", 0x803, 4, 28, 28) + bytes(4 * 28 * 28)
    labels = struct.pack(">2I", 0x801, 4) + bytes([0, 1, 2, 3])
    variants = {
        "images-missing": (None, labels),
        "images-not-gzip": (b"\x1f\x8b\x08\x00garbage", labels),
        "images-bad-magic": (struct.pack(">4I", 0x804, 4, 28, 28) + bytes(4 * 28 * 28), labels),
        "images-truncated": (images[:-100], labels),
        "images-wrong-size": (struct.pack(">4I", 0x803, 4, 32, 32) + bytes(4 * 32 * 32), labels),
        "images-huge-count": (struct.pack(">4I", 0x803, 2**31 - 1, 28, 28) + bytes(28 * 28), labels),
        "labels-count-differs": (images, struct.pack(">2I", 0x801, 3) + bytes([0, 1, 2])),
        "labels-beyond-ten": (images, struct.pack(">2I", 0x801, 4) + bytes([0, 1, 2, 40])),
        "labels-header-short": (images, b"\x00\x00\x08"),
        "labels-wrong-type": (images, struct.pack(">2I", 0x0d01, 4) + bytes(16)),
    }
    for name, (image_data, label_data) in variants.items():
        folder = HERE / "idx" / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        if image_data is not None:
            (folder / "t10k-images-idx3-ubyte.gz").write_bytes(image_data if image_data.startswith(b"\x1f\x8b") else gzip.compress(image_data, mtime=0))
        (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(label_data, mtime=0))
        case(f"idx/{name}", accuracy % ("{corpus}/idx/" + name))


# ---- pickled CIFAR-10 batches ------------------------------------------------------------------

def pickle_cases():
    accuracy = "{cli} eval accuracy dataset:cifar10-test:%s --quiet --classifier {source}/assets/eval/fmnist-classifier.safetensors"
    data = np.zeros((2, 3072), np.uint8)
    good = pickle.dumps({b"data": data, b"labels": [0, 1]}, protocol=2)
    variants = {
        "runs-code": b"cos\nsystem\n(S'echo ran'\ntR.",
        "object": pickle.dumps({b"data": data, b"labels": [0, 1], b"when": fractions.Fraction(1, 2)}, protocol=4),
        "truncated": good[:len(good) // 2],
        "self-containing": b"\x80\x02]q\x00h\x00a.",
        "not-a-dict": pickle.dumps([1, 2], protocol=2),
        "wrong-shape": pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=2),
        "float-data": pickle.dumps({b"data": data.astype(np.float32), b"labels": [0, 1]}, protocol=5),
        "fortran-order": pickle.dumps({b"data": np.asfortranarray(data), b"labels": [0, 1]}, protocol=2),
        "labels-beyond-ten": pickle.dumps({b"data": data, b"labels": [0, 12]}, protocol=3),
        "labels-count-differs": pickle.dumps({b"data": data, b"labels": [0]}, protocol=3),
        # Found by fuzz_pickle: _reconstruct called, its state never set (BUILD missing).
        "array-without-state": base64.b64decode(
            "gAJ9cQAoY19jb2RlY3MKZW5jb2RlCnEBWAQAAABkYXRhcQJYBgAAAGxhdGluMXEDhnEEUnEFY251bXB5Ll9jb3JlLm11bHRpYXJyYXkKX3JlY29uc3RydWN0"
            "CnEGY251bXB5Cm5kYXJyYXkKcQdLAIVxCGgBWAEAAABicQloA4ZxClJxC4dxDFJxDXUu"),
    }
    for name, raw in variants.items():
        write(f"pickle/{name}/test_batch", raw)
        case(f"pickle/{name}", accuracy % ("{corpus}/pickle/" + name))
    case("pickle/missing-batch", accuracy % "{corpus}/pickle")


# ---- trajectory stores ------------------------------------------------------------------------

def store_cases(cli):
    base = HERE / "store" / "valid"
    shutil.rmtree(HERE / "store", ignore_errors=True)
    write("store/gmm.yaml", "dim: 2\nweights: [1]\nmeans: [[0, 0]]\nstds: [1]\n")
    # Recorded from the folder, so that the store names its teacher by a relative path.
    subprocess.run([cli, "record", "--teacher", "gmm:gmm.yaml", "--out", "valid", "--num", "16", "--shard-size", "8", "--steps", "2", "--sampler", "euler"],
                   cwd=HERE / "store", check=True, capture_output=True)
    for leftover in base.glob(".lock*"):
        leftover.unlink()
    (base / "stats.jsonl").unlink()
    # Through the reader every consumer of a store uses (distillation, eval, report).
    inspect = "{cli} eval fd %s {corpus}/npz/valid.npz --quiet --classifier {source}/assets/eval/fmnist-classifier.safetensors"

    def variant(name, change):
        folder = HERE / "store" / name
        shutil.copytree(base, folder)
        change(folder)
        case(f"store/{name}", inspect % ("{corpus}/store/" + name))

    def edit(file, transform):
        return lambda folder: (folder / file).write_bytes(transform((folder / file).read_bytes()))

    shard = "shard-000000.h5"
    variant("store-json-missing", lambda f: (f / "store.json").unlink())
    # With a file inside, because git keeps no empty folder.
    variant("store-json-a-directory", lambda f: ((f / "store.json").unlink(), (f / "store.json").mkdir(), (f / "store.json" / "kept").write_bytes(b"")))
    variant("store-json-not-json", edit("store.json", lambda b: b[:20]))
    variant("store-json-other-format", edit("store.json", lambda b: b.replace(b"distillery.trajectories", b"other.trajectories")))
    variant("store-json-version-9", edit("store.json", lambda b: b.replace(b'"format_version": 1', b'"format_version": 9')))
    variant("store-json-negative-num", edit("store.json", lambda b: b.replace(b'"num": 16', b'"num": -16')))
    variant("store-json-huge-num", edit("store.json", lambda b: b.replace(b'"num": 16', b'"num": 99999999999999')))
    # A float beyond int64 (fuzz_store's finding: converting it was undefined behaviour).
    variant("store-json-num-a-huge-float", edit("store.json", lambda b: b.replace(b'"num": 16', b'"num": 8e21')))
    variant("store-json-huge-shard-size", edit("store.json", lambda b: b.replace(b'"shard_size": 8', b'"shard_size": 9223372036854775807')))
    variant("store-json-format-a-number", edit("store.json", lambda b: b.replace(b'"distillery.trajectories"', b"1")))
    variant("store-json-stored-step-outside", edit("store.json", lambda b: re.sub(rb'("stored_steps": \[\s*0,\s*)\d+', rb"\g<1>99", b)))
    variant("store-json-unknown-dtype", edit("store.json", lambda b: b.replace(b'"float32"', b'"int8"')))
    variant("manifest-not-json", edit("manifest.jsonl", lambda b: b"{shard" + b))
    variant("manifest-shard-outside", edit("manifest.jsonl", lambda b: b.replace(b'"shard":1', b'"shard":7')))
    variant("manifest-wrong-crc", edit("manifest.jsonl", lambda b: re.sub(rb'"crc32":"[0-9a-f]{8}"', b'"crc32":"0badc0de"', b, count=1)))
    variant("manifest-crc-nine-digits", edit("manifest.jsonl", lambda b: b.replace(b'","file"', b'0","file"', 1)))
    variant("shard-missing", lambda f: (f / shard).unlink())
    variant("shard-truncated", edit(shard, lambda b: b[: len(b) // 2]))
    variant("shard-not-hdf5", edit(shard, lambda b: b"\0" * len(b)))
    variant("shard-flipped-byte", edit(shard, lambda b: b[:-40] + bytes([b[-40] ^ 1]) + b[-39:]))

    # Shards rewritten with their manifest lines brought up to date, so that every checksum
    # holds and only the contents are wrong.
    def rewrite(dataset, index, value):
        def change(folder):
            import h5py
            with h5py.File(folder / shard, "r+") as f:
                f[dataset][index] = value
            data = (folder / shard).read_bytes()
            lines = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
            for entry in lines:
                if entry["file"] == shard:
                    entry["bytes"], entry["crc32"] = len(data), f"{zlib.crc32(data):08x}"
            (folder / "manifest.jsonl").write_text("".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in lines))
        return change

    variant("shard-nan-state-checksum-updated", rewrite("x", (3, 1, 0), float("nan")))
    variant("shard-foreign-label-checksum-updated", rewrite("labels", 2, 7))
    shutil.rmtree(base)


# ---- command-line arguments -------------------------------------------------------------------

def cli_cases():
    gmm = write("cli/gmm.yaml", "dim: 2\nweights: [1]\nmeans: [[0, 0]]\nstds: [1]\n")
    sample = "{cli} sample --teacher gmm:" + gmm + " --out {out}/s.safetensors "
    plot = "{cli} plot --data " + write("cli/plot.json", json.dumps({"series": [{"name": "a", "x": [1, 2], "y": [3, 4]}]}))
    write("cli/two-images/a.png", png(28, 28))
    two_images = write("cli/two-images/b.png", png(28, 28)).rsplit("/", 1)[0]
    huge = write("cli/plot-span-overflow.json", json.dumps({"series": [{"name": "a", "x": [1, 2], "y": [-1e308, 1e308]}]}))
    generate = "{cli} generate --model {corpus}/denoiser/valid.safetensors --out {out}/g.png "
    arguments = {
        "num-zero": sample + "--num 0",
        "num-negative": sample + "--num -4",
        "num-exponent": sample + "--num 1e3",
        "num-beyond-int64": sample + "--num 99999999999999999999",
        "seed-negative": sample + "--seed -1",
        "seed-beyond-uint64": sample + "--seed 18446744073709551616",
        "steps-zero": sample + "--steps 0",
        "steps-huge": sample + "--steps 1000000",
        "batch-zero": sample + "--batch 0",
        "rho-nan": sample + "--rho nan",
        "rho-huge": sample + "--rho 1e17",
        "ddpm-schedule-sigma-max": sample + "--schedule ddpm --sigma-max 10",
        "sigma-min-negative": sample + "--sigma-min -1",
        "sigma-max-infinite": sample + "--sigma-max inf",
        "sigma-max-beyond-float32": sample + "--sigma-max 1e300",
        "guidance-nan": sample + "--guidance nan",
        "s-noise-negative": sample + "--s-noise -1",
        "unknown-sampler": sample + "--sampler rk45",
        "unknown-schedule": sample + "--schedule cosine",
        "labels-for-unconditional": sample + "--labels 3",
        "unknown-device": sample + "--device tpu",
        "output-type": "{cli} sample --teacher gmm:" + gmm + " --out {out}/s.jpg",
        "teacher-missing": "{cli} sample --teacher {out}/absent.safetensors --out {out}/s.safetensors",
        "teacher-run-unfinished": "mkdir {out}/run && {cli} sample --teacher {out}/run --out {out}/s.safetensors",
        "teacher-distillation-run": "mkdir {out}/run && : > {out}/run/student.safetensors && {cli} sample --teacher {out}/run --out {out}/s.safetensors",
        "teacher-unknown-form": "{cli} sample --teacher model.bin --out {out}/s.safetensors",
        "unknown-option": sample + "--nmu 4",
        "no-teacher": "{cli} sample --out {out}/s.safetensors",
        "unknown-command": "{cli} smaple",
        "generate-steps-mismatch": generate + "--steps 4",
        "generate-labels-unconditional": generate + "--labels 2",
        "generate-model-missing": "{cli} generate --model {out}/absent --out {out}/g.png",
        "eval-one-source": "{cli} eval fd {corpus}/npz/valid.npz",
        "eval-fd-of-one-image": "{cli} eval fd model:{source}/assets/teachers/fmnist.safetensors {corpus}/npz/valid.npz --num 1 --steps 1 --classifier {source}/assets/eval/fmnist-classifier.safetensors",
        "eval-stats-output-type": "{cli} eval stats dataset:fmnist-test --out {out}/stats.txt --classifier {source}/assets/eval/fmnist-classifier.safetensors",
        "eval-unknown-dataset": "{cli} eval fd dataset:cifar10 {corpus}/npz/valid.npz --classifier {source}/assets/eval/fmnist-classifier.safetensors",
        "record-shard-size-zero": "{cli} record --teacher gmm:" + gmm + " --out {out}/store --num 8 --shard-size 0",
        "record-part-beyond-int64": "{cli} record --teacher gmm:" + gmm + " --out {out}/store --num 8 --part 0/99999999999999999999",
        "set-without-equals": "{cli} teacher train --config {source}/configs/teacher/gmm2d_mlp.yaml --out {out}/run --set train.steps",
        "set-unknown-key": "{cli} teacher train --config {source}/configs/teacher/gmm2d_mlp.yaml --out {out}/run --set train.stpes=3",
        "config-missing": "{cli} teacher train --config {out}/absent.yaml --out {out}/run",
        "plot-span-overflow": "{cli} plot --data " + huge + " --out {out}/p.png",
        # Statistics of the second classifier (the same width as the first) read against the first.
        "eval-fd-statistics-of-another-network": "{cli} eval stats " + two_images + " --quiet --out {out}/second.npz"
                                                 " --classifier {source}/assets/eval/fmnist-second-classifier.safetensors && "
                                                 "{cli} eval fd {out}/second.npz {corpus}/npz/valid.npz --quiet"
                                                 " --classifier {source}/assets/eval/fmnist-classifier.safetensors",
        "output-folder-under-a-file": plot + " --out {corpus}/cli/plot.json/p.png",
    }
    for name, command in arguments.items():
        case(f"cli/{name}", command)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("cli", help="the distillery binary")
    parser.add_argument("--record", action="store_true", help="run every case and record the error it gives")
    args = parser.parse_args()
    cli = str(Path(args.cli).resolve())
    previous = {}
    if (HERE / "cases.jsonl").exists():
        for line in (HERE / "cases.jsonl").read_text().splitlines():
            entry = json.loads(line)
            previous[entry["name"]] = entry.get("error")
    for folder in ("safetensors", "denoiser", "npz", "yaml", "images", "idx", "pickle", "store", "cli"):
        shutil.rmtree(HERE / folder, ignore_errors=True)
    safetensors_cases()
    npz_cases()
    yaml_cases()
    (HERE / "yaml" / "gmm.yaml").write_text("dim: 2\nweights: [1]\nmeans: [[0, 0]]\nstds: [1]\n")
    image_cases()
    idx_cases()
    pickle_cases()
    store_cases(cli)
    cli_cases()
    for entry in cases:
        entry["error"] = previous.get(entry["name"])
        if args.record:
            with tempfile.TemporaryDirectory() as out:
                command = entry["command"].format(cli=cli, corpus=HERE, source=HERE.parent.parent, out=out)
                result = subprocess.run(["sh", "-c", command], cwd=out, capture_output=True, text=True, errors="replace")
                # Our errors from their "error: " line on (log lines before it carry times);
                # the argument parser's own messages whole.
                text = result.stdout + result.stderr
                at = text.find("\nerror: ") + 1 if not text.startswith("error: ") else 0
                text = text[at:] if at > 0 or text.startswith("error: ") else text
                entry["error"] = text.replace(str(HERE), "{corpus}").replace(str(HERE.parent.parent), "{source}").replace(out, "{out}")
                if not 0 < result.returncode < 128:
                    print(f"{entry['name']}: exit {result.returncode}\n{text[-2000:]}")
    with open(HERE / "cases.jsonl", "w") as f:
        for entry in cases:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
    print(f"{len(cases)} cases")


if __name__ == "__main__":
    main()
