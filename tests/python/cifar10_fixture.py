"""Writes a small CIFAR-10 python-version directory (data_batch_1..5, test_batch) and what
torchvision's reader makes of it, for tests/test_datasets.cpp.

  cifar10_fixture.py DIR    DIR/cifar-10-batches-py/ and DIR/expected.safetensors

The batches are pickled as the published files are (Python 2's cPickle at protocol 2: byte
strings as SHORT_BINSTRING/BINSTRING, the array through numpy's _reconstruct) and, for the
other batches, by this Python at protocols 2 to 5, so every way NumPy and Python write such a
file is read. Each batch is checked to load with pickle.load(encoding="bytes") before use.
"""
import io
import os
import pickle
import struct
import sys

import numpy as np
import torch
from safetensors.torch import save_file

IMAGES_PER_BATCH = 7


def _string(raw):
    return (b"U" + bytes([len(raw)]) if len(raw) < 256 else b"T" + struct.pack("<I", len(raw))) + raw


def python2_pickle(batch):
    """The byte layout of Python 2's cPickle.dump(batch, f, 2) for a CIFAR-10 batch dict."""
    data, labels = batch[b"data"], batch[b"labels"]
    out = bytearray(b"\x80\x02}q\x01(")
    out += _string(b"batch_label") + b"q\x02" + _string(batch[b"batch_label"]) + b"q\x03"
    out += _string(b"labels") + b"q\x04]q\x05(" + b"".join(b"K" + bytes([label]) for label in labels) + b"e"
    out += _string(b"data") + b"q\x06cnumpy.core.multiarray\n_reconstruct\nq\x07cnumpy\nndarray\nq\x08K\x00\x85q\tU\x01b\x87q\nRq\x0b"
    out += b"(K\x01M" + struct.pack("<H", data.shape[0]) + b"M" + struct.pack("<H", data.shape[1]) + b"\x86q\x0c"
    out += b"cnumpy\ndtype\nq\rU\x02u1K\x00K\x01\x87Rq\x0e(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    out += b"\x89" + _string(data.tobytes()) + b"tb"
    out += _string(b"filenames") + b"]q\x0f(" + b"".join(_string(name) for name in batch[b"filenames"]) + b"eu."
    return bytes(out)


def main():
    root = sys.argv[1]
    batches_dir = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(batches_dir, exist_ok=True)
    rng = np.random.default_rng(11)
    expected = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    writers = [python2_pickle] + [lambda b, p=p: pickle.dumps(b, protocol=p) for p in (2, 3, 4, 5)] + [python2_pickle]
    images, labels = {"train": [], "test": []}, {"train": [], "test": []}
    for name, write in zip(names, writers):
        data = rng.integers(0, 256, size=(IMAGES_PER_BATCH, 3072), dtype=np.uint8)
        batch_labels = [int(x) for x in rng.integers(0, 10, size=IMAGES_PER_BATCH)]
        batch = {b"batch_label": name.encode(), b"labels": batch_labels, b"data": data,
                 b"filenames": [f"image_{i}.png".encode() for i in range(IMAGES_PER_BATCH)]}
        raw = write(batch)
        loaded = pickle.load(io.BytesIO(raw), encoding="bytes")
        assert np.array_equal(loaded[b"data"], data) and loaded[b"labels"] == batch_labels, name
        with open(os.path.join(batches_dir, name), "wb") as f:
            f.write(raw)
        split = "test" if name == "test_batch" else "train"
        # torchvision's CIFAR10: data.reshape(-1, 3, 32, 32), labels as they are.
        images[split].append(torch.from_numpy(loaded[b"data"].reshape(-1, 3, 32, 32).copy()))
        labels[split].append(torch.tensor(loaded[b"labels"], dtype=torch.int64))
    for split in ("train", "test"):
        expected[f"{split}_images"] = torch.cat(images[split])
        expected[f"{split}_labels"] = torch.cat(labels[split])
    save_file(expected, os.path.join(root, "expected.safetensors"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
