"""A lane-level model of the tensor-core attention kernels (kernels/fused_attention.cu).

Each warp instruction the kernels use is modelled from its PTX ISA definition — the register
fragments of mma.sync.m16n8k16 (A row-major 16×16, B column-major 16×8, f32 C 16×8), ldmatrix
.x4 with and without .trans, 16-bit rounding of packed pairs — and the kernels' index
arithmetic is run through them, warp by warp, as the .cu file writes it: fragment loads, tile
copies with zero fill, the online softmax with quad reductions, the backward's recomputed
probabilities. The results are compared with softmax(q kᵀ/√d) v and its gradients in float64.
No GPU runs here, so this checks the kernels' fragment bookkeeping and algebra, not the CUDA
code itself (the GPU tests do that where a GPU is lent).

    python tests/python/tensor_core_attention_model.py   # one JSON line; exit status 1 on a failure

The shared tiles go through a model of the block's copy schedule (SharedTiles): cp.async
groups, cp.async.wait_group and __syncthreads in the order the .cu file issues them. A tile read
before its copy has landed and a barrier has made it visible, or a copy started into a tile that
another warp may still be reading, raises; with the kernels' pipelined copies (a tile refilled
while the block works on another) this is the part of a race a CPU can see.

Run by the test Attention.TensorCoreKernelsLaneModelMatchesFloat64; worth running by hand
before a change to the kernels' fragment arithmetic or copy schedule goes to a GPU.
"""
import json
import math
import sys

import torch

LANES = torch.arange(32)
GROUP, THREAD_IN_GROUP = LANES // 4, LANES % 4
WARPS, ROWS_PER_WARP = 4, 16
LOG2E = 1.0 / math.log(2.0)


def round16(x, dtype):
    """Rounds float32 values to the kernel's 16-bit input type and back."""
    return x.to(dtype).to(torch.float32)


# ---- The warp instructions, from the PTX ISA's fragment tables ----

def a_fragment_indices():
    # register i ∈ 0..3, half h ∈ {0, 1}: row groupID + 8·(i % 2), column 2·tig + h + 8·(i // 2)
    rows = torch.stack([torch.stack([GROUP + 8 * (i % 2)] * 2) for i in range(4)])
    cols = torch.stack([torch.stack([2 * THREAD_IN_GROUP + h + 8 * (i // 2) for h in range(2)]) for i in range(4)])
    return rows, cols  # [4, 2, 32]


A_ROWS, A_COLS = a_fragment_indices()


def mma(c, a, b0, b1):
    """c [32, 4] += A · B; a [4, 32, 2] (registers × lanes × halves), b0/b1 [32, 2]."""
    A = torch.zeros(16, 16)
    A[A_ROWS, A_COLS] = a.permute(0, 2, 1)
    B = torch.zeros(16, 8)
    for i, b in enumerate((b0, b1)):
        for h in range(2):
            B[2 * THREAD_IN_GROUP + h + 8 * i, GROUP] = b[:, h]  # k = 2·tig + h + 8i, n = groupID
    C = A.double() @ B.double()
    for e in range(4):
        c[:, e] += C[GROUP + 8 * (e // 2), 2 * THREAD_IN_GROUP + e % 2].float()


def ldmatrix_x4(smem, row_address, transpose):
    """Four 8×8 matrices; lane L gives the flat address of row L % 8 of matrix L // 8. Returns [4, 32, 2]."""
    out = torch.zeros(4, 32, 2)
    for m in range(4):
        M = torch.stack([smem[row_address[8 * m + r]: row_address[8 * m + r] + 8] for r in range(8)])
        for h in range(2):
            out[m, :, h] = M[2 * THREAD_IN_GROUP + h, GROUP] if transpose else M[GROUP, 2 * THREAD_IN_GROUP + h]
    return out


def pack_pair(low, high, dtype):
    return torch.stack([round16(low, dtype), round16(high, dtype)], dim=-1)


def quad_reduce(x, op):
    return op(x.view(8, 4), dim=1, keepdim=True).expand(8, 4).reshape(32)


# ---- The kernels' building blocks, as fused_attention.cu writes them ----

def stride(D):
    return D + 8


class ScheduleError(AssertionError):
    pass


class SharedTiles:
    """One block's shared tiles under cp.async and barriers, for a schedule every thread runs alike.

    A copy lands when a cp.async.wait_group of this thread has retired its group; every thread's
    landed copies are visible after the next __syncthreads. A read needs its tile visible; a copy
    into a tile needs a barrier since the tile's last read (other warps may still be reading it)
    and no copy into it still in flight."""

    def __init__(self):
        self.contents, self.groups, self.uncommitted = {}, [], []
        self.landed, self.visible, self.read_since_barrier = set(), set(), set()

    def copy(self, name, value):
        if name in self.read_since_barrier:
            raise ScheduleError(f"copy into '{name}' while other warps may still read it (no barrier since its last read)")
        if name in self.uncommitted or any(name in group for group in self.groups):
            raise ScheduleError(f"copy into '{name}' while an earlier copy into it is in flight")
        self.contents[name] = value
        self.landed.discard(name)
        self.visible.discard(name)
        self.uncommitted.append(name)

    def commit(self):
        self.groups.append(self.uncommitted)
        self.uncommitted = []

    def sync(self):
        self.visible |= self.landed
        self.read_since_barrier.clear()

    def wait(self, pending):
        """wait_for_copies<pending>: cp.async.wait_group, then __syncthreads."""
        retired = len(self.groups) - pending
        for group in self.groups[:max(retired, 0)]:
            self.landed.update(group)
        self.groups = self.groups[max(retired, 0):]
        self.sync()

    def read(self, name):
        if name not in self.visible:
            raise ScheduleError(f"read of '{name}' before its copy landed and a barrier made it visible")
        self.read_since_barrier.add(name)
        return self.contents[name]


def start_tile_copy(tiles, name, matrix, first, rows, D):
    """start_tile_copy: rows [first, first + rows) into a padded flat tile, zeros past n, as one
    committed group (empty past the last tile, where nothing is copied)."""
    n = matrix.shape[0]
    if first < n:
        tile = torch.full((rows * stride(D),), float("nan"))  # padding is never read: NaN would show it
        for r in range(rows):
            row = first + r
            tile[r * stride(D): r * stride(D) + D] = matrix[row] if row < n else 0.0
        tiles.copy(name, tile)
    tiles.commit()


def start_row_value_copies(tiles, name, values, first, rows):
    """start_row_value_copies: values [first, first + rows), zeros past n, left for the next commit."""
    n = values.shape[0]
    if first < n:
        indices = torch.arange(first, first + rows)
        tiles.copy(name, torch.where(indices < n, values[torch.clamp(indices, max=n - 1)], torch.zeros(rows)))


def load_row_fragments(matrix, row0, D):
    n = matrix.shape[0]

    def pair_at(row, col):
        valid = row < n
        safe = torch.where(valid, row, torch.zeros_like(row))
        values = torch.stack([matrix[safe, col], matrix[safe, col + 1]], dim=-1)
        return torch.where(valid[:, None], values, torch.zeros_like(values))

    pc = 2 * THREAD_IN_GROUP
    return [torch.stack([pair_at(row0, 16 * c + pc), pair_at(row0 + 8, 16 * c + pc), pair_at(row0, 16 * c + 8 + pc),
                         pair_at(row0 + 8, 16 * c + 8 + pc)]) for c in range(D // 16)]


def multiply_by_tile_transposed(a, tile, R, D):
    matrix, matrix_row = LANES // 8, LANES % 8
    acc = [torch.zeros(32, 4) for _ in range(R // 8)]
    for j in range(R // 8):
        for c in range(0, D // 16, 2):
            b = ldmatrix_x4(tile, (8 * j + matrix_row) * stride(D) + 16 * c + 8 * matrix, transpose=False)
            mma(acc[j], a[c], b[0], b[1])
            mma(acc[j], a[c + 1], b[2], b[3])
    return acc


def accumulate_times_tile(acc, p, tile, R, D, dtype):
    matrix, matrix_row = LANES // 8, LANES % 8
    for t in range(R // 16):
        a = torch.stack([pack_pair(p[2 * t][:, 0], p[2 * t][:, 1], dtype), pack_pair(p[2 * t][:, 2], p[2 * t][:, 3], dtype),
                         pack_pair(p[2 * t + 1][:, 0], p[2 * t + 1][:, 1], dtype), pack_pair(p[2 * t + 1][:, 2], p[2 * t + 1][:, 3], dtype)])
        for b in range(0, D // 8, 2):
            vb = ldmatrix_x4(tile, (16 * t + 8 * (matrix % 2) + matrix_row) * stride(D) + 8 * (b + matrix // 2), transpose=True)
            mma(acc[b], a, vb[0], vb[1])
            mma(acc[b + 1], a, vb[2], vb[3])


def store_row_fragments(out, acc, factor, row0, D, dtype):
    n = out.shape[0]
    pc = 2 * THREAD_IN_GROUP
    for second in range(2):
        row = row0 + 8 * second
        for b in range(D // 8):
            for h in range(2):
                value = round16(acc[b][:, 2 * second + h] * factor, dtype)
                keep = row < n
                out[row[keep], (8 * b + pc + h)[keep]] = value[keep]


def columns(j, e):
    return 8 * j + 2 * THREAD_IN_GROUP + (e & 1)


# ---- The three kernels, one head, block by block and warp by warp ----

class OnlineSoftmaxRows:
    """OnlineSoftmaxRows of the .cu file: one block of 16 rows, this lane's rows h = 0, 1."""

    def __init__(self):
        self.max = [torch.full((32,), -math.inf), torch.full((32,), -math.inf)]
        self.sum = [torch.zeros(32), torch.zeros(32)]

    def absorb(self, s, o, start, n, R, D, scale_log2):
        tile_max = [torch.full((32,), -math.inf), torch.full((32,), -math.inf)]
        for j in range(R // 8):
            for e in range(4):
                valid = start + columns(j, e) < n
                s[j][:, e] = torch.where(valid, s[j][:, e] * scale_log2, torch.tensor(-math.inf))
                tile_max[e // 2] = torch.maximum(tile_max[e // 2], s[j][:, e])
        rescale = []
        for h in range(2):
            new_max = torch.maximum(self.max[h], quad_reduce(tile_max[h], torch.amax))
            rescale.append(torch.exp2(self.max[h] - new_max))
            self.max[h] = new_max
            self.sum[h] = self.sum[h] * rescale[h]
        for b in range(D // 8):
            for e in range(4):
                o[b][:, e] *= rescale[e // 2]
        for j in range(R // 8):
            for e in range(4):
                s[j][:, e] = torch.exp2(s[j][:, e] - self.max[e // 2])
                self.sum[e // 2] = self.sum[e // 2] + s[j][:, e]

    def finish(self, o, out, lse, row0, D, dtype):
        self.sum = [quad_reduce(x, torch.sum) for x in self.sum]
        for b in range(D // 8):
            for e in range(4):
                o[b][:, e] /= self.sum[e // 2]
        store_row_fragments(out, o, 1.0, row0, D, dtype)
        lead = LANES % 4 == 0
        n = out.shape[0]
        for h in range(2):
            row = row0 + 8 * h
            keep = lead & (row < n)
            lse[row[keep]] = ((self.max[h] + torch.log2(self.sum[h])) / LOG2E)[keep]


def forward_key_tile(D, M):
    """The launcher's key tile: two blocks of rows per warp at head dim 128 fit the registers with 16 keys."""
    return 16 if M == 2 and D == 128 else 64


def forward(q, k, v, dtype, M=1):
    """The forward kernel with M blocks of 16 rows per warp (FusedAttentionOptions: 16·M rows per warp)."""
    n, D = q.shape
    KEYS = forward_key_tile(D, M)
    scale_log2 = LOG2E / math.sqrt(D)
    out, lse = torch.zeros(n, D), torch.zeros(n)
    block_rows = WARPS * ROWS_PER_WARP * M
    for block in range((n + block_rows - 1) // block_rows):
        for warp in range(WARPS):
            first_row = (block * WARPS + warp) * ROWS_PER_WARP * M + GROUP
            tiles = SharedTiles()
            start_tile_copy(tiles, "keys", k, 0, KEYS, D)
            start_tile_copy(tiles, "values", v, 0, KEYS, D)
            q_frag = [load_row_fragments(q, first_row + 16 * m, D) for m in range(M)]
            o = [[torch.zeros(32, 4) for _ in range(D // 8)] for _ in range(M)]
            softmax = [OnlineSoftmaxRows() for _ in range(M)]
            for start in range(0, n, KEYS):
                tiles.wait(1)
                keys = tiles.read("keys")
                s = [multiply_by_tile_transposed(q_frag[m], keys, KEYS, D) for m in range(M)]
                tiles.sync()
                start_tile_copy(tiles, "keys", k, start + KEYS, KEYS, D)
                for m in range(M):
                    softmax[m].absorb(s[m], o[m], start, n, KEYS, D, scale_log2)
                tiles.wait(1)
                values = tiles.read("values")
                for m in range(M):
                    accumulate_times_tile(o[m], s[m], values, KEYS, D, dtype)
                tiles.sync()
                start_tile_copy(tiles, "values", v, start + KEYS, KEYS, D)
            for m in range(M):
                softmax[m].finish(o[m], out, lse, first_row + 16 * m, D, dtype)
    return out, lse


def grad_query(q, k, v, grad_out, lse, delta, dtype, KEYS=64):
    n, D = q.shape
    scale = 1.0 / math.sqrt(D)
    dq_out = torch.zeros(n, D)
    for block in range((n + 63) // 64):
        for warp in range(WARPS):
            row0 = block * 64 + warp * ROWS_PER_WARP + GROUP
            row1 = row0 + 8
            at = lambda x, row: torch.where(row < n, x[torch.clamp(row, max=n - 1)], torch.zeros(32))
            lse0, lse1 = at(lse, row0) * LOG2E, at(lse, row1) * LOG2E
            delta0, delta1 = at(delta, row0), at(delta, row1)
            tiles = SharedTiles()
            start_tile_copy(tiles, "values", v, 0, KEYS, D)
            start_tile_copy(tiles, "keys", k, 0, KEYS, D)
            q_frag, do_frag = load_row_fragments(q, row0, D), load_row_fragments(grad_out, row0, D)
            dq = [torch.zeros(32, 4) for _ in range(D // 8)]
            for start in range(0, n, KEYS):
                tiles.wait(1)
                dp = multiply_by_tile_transposed(do_frag, tiles.read("values"), KEYS, D)
                tiles.wait(0)
                start_tile_copy(tiles, "values", v, start + KEYS, KEYS, D)
                p = multiply_by_tile_transposed(q_frag, tiles.read("keys"), KEYS, D)
                for j in range(KEYS // 8):
                    for e in range(4):
                        valid = start + columns(j, e) < n
                        probability = torch.where(valid, torch.exp2(p[j][:, e] * scale * LOG2E - (lse0 if e < 2 else lse1)), torch.zeros(32))
                        p[j][:, e] = probability * (dp[j][:, e] - (delta0 if e < 2 else delta1))
                accumulate_times_tile(dq, p, tiles.read("keys"), KEYS, D, dtype)
                tiles.sync()
                start_tile_copy(tiles, "keys", k, start + KEYS, KEYS, D)
            store_row_fragments(dq_out, dq, scale, row0, D, dtype)
    return dq_out


def grad_key_value(q, k, v, grad_out, lse, delta, dtype):
    n, D = q.shape
    R = 16 if D == 128 else 32
    scale = 1.0 / math.sqrt(D)
    dk_out, dv_out = torch.zeros(n, D), torch.zeros(n, D)
    for block in range((n + 63) // 64):
        for warp in range(WARPS):
            key0 = block * 64 + warp * ROWS_PER_WARP + GROUP
            tiles = SharedTiles()
            start_row_value_copies(tiles, "lse", lse, 0, R)
            start_row_value_copies(tiles, "deltas", delta, 0, R)
            start_tile_copy(tiles, "grad_outs", grad_out, 0, R, D)
            start_tile_copy(tiles, "queries", q, 0, R, D)
            k_frag, v_frag = load_row_fragments(k, key0, D), load_row_fragments(v, key0, D)
            dk, dv = [torch.zeros(32, 4) for _ in range(D // 8)], [torch.zeros(32, 4) for _ in range(D // 8)]
            for start in range(0, n, R):
                tiles.wait(1)
                dp = multiply_by_tile_transposed(v_frag, tiles.read("grad_outs"), R, D)
                deltas = tiles.read("deltas")
                for j in range(R // 8):
                    for e in range(4):
                        dp[j][:, e] -= deltas[columns(j, e)]
                tiles.wait(0)
                p = multiply_by_tile_transposed(k_frag, tiles.read("queries"), R, D)
                lse_tile = tiles.read("lse")
                for j in range(R // 8):
                    for e in range(4):
                        column = columns(j, e)
                        p[j][:, e] = torch.where(start + column < n, torch.exp2(p[j][:, e] * scale * LOG2E - lse_tile[column] * LOG2E), torch.zeros(32))
                accumulate_times_tile(dv, p, tiles.read("grad_outs"), R, D, dtype)
                tiles.sync()
                start_row_value_copies(tiles, "lse", lse, start + R, R)
                start_row_value_copies(tiles, "deltas", delta, start + R, R)
                start_tile_copy(tiles, "grad_outs", grad_out, start + R, R, D)
                for j in range(R // 8):
                    for e in range(4):
                        p[j][:, e] *= dp[j][:, e]
                accumulate_times_tile(dk, p, tiles.read("queries"), R, D, dtype)
                tiles.sync()
                start_tile_copy(tiles, "queries", q, start + R, R, D)
            store_row_fragments(dk_out, dk, scale, key0, D, dtype)
            store_row_fragments(dv_out, dv, 1.0, key0, D, dtype)
    return dk_out, dv_out


def relative_error(x, reference):
    return ((x.double() - reference).abs().max() / reference.abs().max()).item()


def check(tokens, D, dtype, query_scale, seed, M=1):
    generator = torch.Generator().manual_seed(seed)
    draw = lambda: round16(torch.randn(tokens, D, generator=generator), dtype)
    q, k, v, grad_out = round16(draw() * query_scale, dtype), draw(), draw(), draw()
    out, lse = forward(q, k, v, dtype, M)
    delta = (round16(grad_out, dtype) * out).sum(-1)
    dq = grad_query(q, k, v, grad_out, lse, delta, dtype)
    dk, dv = grad_key_value(q, k, v, grad_out, lse, delta, dtype)

    q64, k64, v64 = (x.double().requires_grad_() for x in (q, k, v))
    logits = q64 @ k64.T / math.sqrt(D)
    reference = torch.softmax(logits, -1) @ v64
    reference.backward(grad_out.double())
    # SDPA on the same 16-bit inputs: the rounding level the kernels are held to on a GPU.
    q16, k16, v16 = (x.to(dtype).requires_grad_() for x in (q, k, v))
    sdpa = torch.nn.functional.scaled_dot_product_attention(q16[None], k16[None], v16[None])[0]
    sdpa.backward(grad_out.to(dtype))
    errors = {
        "forward": relative_error(out, reference.detach()),
        "sdpa_forward": relative_error(sdpa.detach().float(), reference.detach()),
        "logsumexp": relative_error(lse, torch.logsumexp(logits.detach(), -1)),
        "backward": max(relative_error(dq, q64.grad), relative_error(dk, k64.grad), relative_error(dv, v64.grad)),
        "sdpa_backward": max(relative_error(x.grad.float(), y.grad) for x, y in ((q16, q64), (k16, k64), (v16, v64))),
    }
    # A fragment or index slip gives errors of order one; 16-bit rounding gives ~1e-2 at most.
    errors["pass"] = errors["forward"] < 2e-2 and errors["logsumexp"] < 1e-4 and errors["backward"] < 3e-2
    return {"tokens": tokens, "head_dim": D, "dtype": str(dtype).replace("torch.", ""), "query_scale": query_scale,
            "forward_rows_per_warp": 16 * M, **errors}


def schedule_checker_catches():
    """The hazards SharedTiles must refuse, each as the shortest schedule that has it."""
    def raises(schedule):
        tiles = SharedTiles()
        try:
            schedule(tiles)
        except ScheduleError:
            return True
        return False

    def copied(tiles, *names):
        for name in names:
            tiles.copy(name, torch.zeros(1))
            tiles.commit()
        return tiles

    return {
        "read_before_wait": raises(lambda t: copied(t, "a").read("a")),
        "read_of_the_group_still_pending": raises(lambda t: (copied(t, "a", "b").wait(1), t.read("b"))),
        "read_of_an_uncommitted_copy": raises(lambda t: (t.copy("a", torch.zeros(1)), t.wait(0), t.read("a"))),
        "refill_without_barrier": raises(lambda t: (copied(t, "a").wait(0), t.read("a"), t.copy("a", torch.zeros(1)))),
        "refill_while_in_flight": raises(lambda t: (copied(t, "a"), t.copy("a", torch.zeros(1)))),
        "pipelined_refill_is_allowed": not raises(lambda t: (copied(t, "a", "b").wait(1), t.read("a"), t.sync(), copied(t, "a"),
                                                             t.wait(1), t.read("b"))),
    }


def main():
    torch.set_num_threads(1)
    cases = [(tokens, D, torch.bfloat16, 1.0) for D in (32, 64, 128) for tokens in (17, 100)]
    cases += [(70, 64, torch.float16, 1.0), (70, 64, torch.bfloat16, 30.0)]
    results = [check(*c, seed=i) for i, c in enumerate(cases)]
    # 32 rows per warp: 128-row blocks, two online softmaxes per warp, 16-key tiles at head dim 128.
    wide = [(tokens, D, torch.bfloat16, 1.0) for D in (32, 64, 128) for tokens in (17, 130)]
    results += [check(*c, seed=100 + i, M=2) for i, c in enumerate(wide)]
    catches = schedule_checker_catches()
    all_pass = all(r["pass"] for r in results) and all(catches.values())
    print(json.dumps({"cases": results, "schedule_checker_catches": catches, "all_pass": all_pass}))
    return 0 if all_pass else 1


if __name__ == "__main__":
    sys.exit(main())
