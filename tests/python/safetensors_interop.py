"""Reference side of the safetensors interop test, using the `safetensors` package.

  write FILE   writes the agreed tensors (one per dtype) plus metadata {"origin": "python"}
  check FILE   loads a file distillery wrote and checks the same tensors and metadata

The agreed tensor for dtype D is arange(6).reshape(2, 3) converted to D (bool: arange % 2).
"""
import json
import sys

import torch
from safetensors import safe_open
from safetensors.torch import save_file

DTYPES = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "U16": torch.uint16, "I16": torch.int16,
    "F16": torch.float16, "BF16": torch.bfloat16, "U32": torch.uint32, "I32": torch.int32,
    "F32": torch.float32, "C64": torch.complex64, "F64": torch.float64, "U64": torch.uint64,
    "I64": torch.int64, "F8_E5M2": torch.float8_e5m2, "F8_E4M3": torch.float8_e4m3fn,
}


def agreed(dtype):
    base = torch.arange(6, dtype=torch.int64).reshape(2, 3)
    if dtype == torch.bool:
        return (base % 2).to(torch.bool)
    if dtype.is_floating_point or dtype.is_complex:
        return base.to(torch.float32).to(dtype)
    return base.to(dtype)


def main():
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "write":
        save_file({name: agreed(dtype) for name, dtype in DTYPES.items()}, path, metadata={"origin": "python"})
        return 0
    failures = []
    with safe_open(path, framework="pt") as f:
        if f.metadata() != {"origin": "distillery"}:
            failures.append(f"metadata {f.metadata()!r}")
        if sorted(f.keys()) != sorted(DTYPES):
            failures.append(f"keys {sorted(f.keys())}")
        for name, dtype in DTYPES.items():
            got = f.get_tensor(name)
            want = agreed(dtype)
            if got.dtype != dtype or got.shape != want.shape or not torch.equal(got.view(torch.uint8), want.view(torch.uint8)):
                failures.append(f"{name}: got {got.dtype} {tuple(got.shape)}")
    # The header must also be what the spec says, independently of the package's parser.
    with open(path, "rb") as raw:
        n = int.from_bytes(raw.read(8), "little")
        header = json.loads(raw.read(n))
        if (8 + n) % 8:
            failures.append("data section is not 8-byte aligned")
    if header.get("__metadata__") != {"origin": "distillery"}:
        failures.append("raw header metadata")
    print("\n".join(failures) if failures else "ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
