"""What ``SourceLossMonitor`` costs a training step, at the tiny proxy model's size on CPU.

Usage:  python benchmarks/monitor_overhead.py [--repeats 5] [--steps 20] [--warmup 4] [--shards DIR]

With ``--shards`` (a mixed_shards output, e.g. the demo build's ``data/demo/mixed_shards/<version>``)
it also times what the attribution adds to the data side of a step: the source id of every target
token of a batch, read from the lineage (``SampleReader.target_sources``), over random samples of
the whole stream so that lineage files are loaded as a trainer's reads move through the shards.

Setup: ``ProxyLM`` preset tiny with GPT-2's vocabulary (50,257) and seq_len 256, batches of
8 x 256, AdamW, ``torch.set_num_threads(2)``. A step is: forward, per-token loss
(``reduction="none"``, reshaped to [8, 256]), ``mean().backward()``, optimizer step. Variant A
is that step alone; variant B adds ``monitor.update(...)`` after the loss, with a record (one
host sync, one JSON line appended and fsynced to a temporary file) every 10 of B's steps.
One model and optimizer serve both, interleaved A B A B ... so drift in the machine's speed
falls on both alike; each repeat is ``steps`` steps (half of each variant, so exactly one
record per repeat at the default 20) after ``warmup`` untimed steps. Token ids are uniform in
[0, vocab) and source ids in [0, 6): the monitor's work (one index_add over B x L values into a
[2, 6] tensor) does not depend on their values. A step takes ~1.5 s on this machine's two
cores, so 5 repeats of 20 steps (50 of each variant) is what fits in about three minutes.

Criterion, set before measuring: the monitor adds under 2% to a step, on both figures:
the median per-step time (B / A) and the median over repeats of the mean step time (B / A;
this one carries each repeat's record, which a per-step median leaves out). The isolated costs
of ``update`` and of a record are timed too, to say what the difference is made of: at a few
tens of microseconds on a 1.5 s step it is far below the run-to-run noise of either figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corpusmix.proxies.model import ModelConfig, ProxyLM  # noqa: E402
from corpusmix.trainer.monitor import SourceLossMonitor, read_log  # noqa: E402

VOCAB, SEQ, BATCH, SOURCES = 50257, 256, 8, ["wiki", "web", "books", "code", "math", "dialogue"]


def train_step(model: ProxyLM, opt: torch.optim.Optimizer, window: torch.Tensor, source_ids: torch.Tensor,
               monitor: SourceLossMonitor | None, step: int) -> float:
    """Seconds for one step as a trainer runs it; the monitor, when given, sees the loss before
    backward, as it would in a real loop."""
    t = time.perf_counter()
    ids, targets = window[:, :-1], window[:, 1:]
    loss = model.loss(ids, targets, reduction="none").view(targets.shape)
    if monitor is not None:
        monitor.update(loss, source_ids, step=step, tokens=step * targets.numel())
    loss.mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def isolated_costs(loss: torch.Tensor, source_ids: torch.Tensor, log: Path) -> tuple[float, float]:
    """Median seconds of ``update`` alone (no record) and of a record (sync, JSON, append, fsync)."""
    monitor = SourceLossMonitor(SOURCES, log, every=10**9)
    updates, records = [], []
    for k in range(1, 201):
        t = time.perf_counter()
        monitor.update(loss, source_ids, step=k, tokens=k)
        updates.append(time.perf_counter() - t)
        if k % 10 == 0:
            t = time.perf_counter()
            monitor.flush(step=k, tokens=k)
            records.append(time.perf_counter() - t)
    return statistics.median(updates), statistics.median(records)


def lookup_cost(shards: Path, batches: int = 200) -> float:
    """Median seconds to give a batch of BATCH samples of SEQ tokens its source ids from the lineage."""
    import numpy as np

    from corpusmix.trainer.loader import SampleReader, TokenStream

    reader = SampleReader(TokenStream.from_dir(shards), SEQ)
    starts = np.random.default_rng(0).integers(0, len(reader) - BATCH, batches)
    times = []
    for k in starts.tolist():
        t = time.perf_counter()
        np.stack([reader.target_sources(j) for j in range(k, k + BATCH)])
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="steps per repeat, A and B alternating")
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--shards", type=Path, help="a mixed_shards directory: also time the source-id lookup")
    args = ap.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = ProxyLM(ModelConfig.preset("tiny", vocab_size=VOCAB, seq_len=SEQ))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = [(torch.randint(0, VOCAB, (BATCH, SEQ + 1)), torch.randint(0, len(SOURCES), (BATCH, SEQ)))
               for _ in range(4)]

    with tempfile.TemporaryDirectory() as tmp:
        monitor = SourceLossMonitor(SOURCES, Path(tmp) / "monitor.jsonl", every=10)
        monitored = 0  # B's steps so far: the monitor's step count
        for k in range(args.warmup):
            train_step(model, opt, *batches[k % 4], None, 0)
        per_step: dict[str, list[float]] = {"A": [], "B": []}
        repeat_means: dict[str, list[float]] = {"A": [], "B": []}
        for _ in range(args.repeats):
            block: dict[str, list[float]] = {"A": [], "B": []}
            for k in range(args.steps):
                window, sources = batches[k % 4]
                if k % 2 == 0:
                    block["A"].append(train_step(model, opt, window, sources, None, 0))
                else:
                    monitored += 1
                    block["B"].append(train_step(model, opt, window, sources, monitor, monitored))
            for v in "AB":
                per_step[v] += block[v]
                repeat_means[v].append(statistics.fmean(block[v]))
        log = Path(tmp) / "monitor.jsonl"
        records = len(read_log(log)) if log.exists() else 0

        loss = model.loss(batches[0][0][:, :-1], batches[0][0][:, 1:], reduction="none").view(BATCH, SEQ)
        update_s, record_s = isolated_costs(loss.detach(), batches[0][1], Path(tmp) / "isolated.jsonl")

    a, b = statistics.median(per_step["A"]), statistics.median(per_step["B"])
    ma, mb = statistics.median(repeat_means["A"]), statistics.median(repeat_means["B"])
    print(f"tiny proxy, vocab {VOCAB}, batch {BATCH} x {SEQ}, AdamW, 2 threads; {args.repeats} repeats x "
          f"{args.steps} steps interleaved A B ({len(per_step['A'])} + {len(per_step['B'])} timed steps, "
          f"{args.warmup} warm-up); monitor: {len(SOURCES)} sources, record every 10 steps ({records} written)")
    print(f"median step, without monitor (A): {a * 1000:8.1f} ms")
    print(f"median step, with monitor    (B): {b * 1000:8.1f} ms   ratio {b / a:.4f}  overhead {100 * (b / a - 1):+.2f}%")
    print(f"median of repeat means, A: {ma * 1000:8.1f} ms, B: {mb * 1000:8.1f} ms   "
          f"ratio {mb / ma:.4f}  overhead {100 * (mb / ma - 1):+.2f}%")
    print(f"spread of A's per-step times: min {min(per_step['A']) * 1000:.1f} ms, max {max(per_step['A']) * 1000:.1f} ms")
    amortized = update_s + record_s / 10
    print(f"isolated: update() {update_s * 1e6:.1f} us, a record {record_s * 1e3:.2f} ms; amortized per step "
          f"{amortized * 1e6:.1f} us = {100 * amortized / a:.4f}% of a step")
    if args.shards is not None:
        lookup = lookup_cost(args.shards)
        print(f"source ids of a batch from the lineage ({args.shards}): {lookup * 1e6:.1f} us; with the monitor "
              f"{(amortized + lookup) * 1e6:.1f} us = {100 * (amortized + lookup) / a:.4f}% of a step")
    met = b / a - 1 < 0.02 and mb / ma - 1 < 0.02
    print(f"criterion (overhead < 2% on both interleaved figures): {'met' if met else 'NOT met'}")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
