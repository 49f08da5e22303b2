"""Training a proxy model on mixed shards, and its loss on each source's held-out text.

The model (``model.ProxyLM``) reads the shards in training order through our own loader
(``trainer.loader.SampleReader``: step s takes samples s x batch ... s x batch + batch - 1, so
a schedule's phases arrive when the plan says), with AdamW, a linear warm-up and a cosine
decay to ``min_lr_ratio`` of the peak. On CPU (the default; CUDA when asked and present) the
run is deterministic for a seed: no dropout, a fixed data order, deterministic kernels and a
fixed thread count, so the same shards and configuration give the same weights, bit for bit.

A run is checkpointed every ``checkpoint_every`` steps (model, optimizer, step; written
atomically) and resumes from its checkpoint: a run killed at any point and started again
ends with the same weights as one never stopped. A checkpoint made with another
configuration is refused, not silently continued; so is one made on other shards, unless
every shard the run had read is in the new set byte for byte (a set re-planned at a restart
point: the phases already trained kept, later ones with new weights), where it resumes.

With ``monitor_log`` the run's per-token losses are attributed to sources through the
lineage (``SampleReader.target_sources``) and logged by a ``trainer.monitor.SourceLossMonitor``
every ``log_every`` steps, and at a stop: what a next-phase proposal reads.

Evaluation: the loss on each source's held-out store (tokenize's ``valid.bin``), on its first
``eval_tokens`` tokens in windows of ``seq_len`` (fixed per source, so runs compare), reported
in nats and bits per token (not per byte: tokens are what the stores hold).
"""

from __future__ import annotations

import hashlib
import io
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import orjson
import torch

from corpusmix.core.indexed import IndexedReader
from corpusmix.core.storage import atomic_write_bytes
from corpusmix.proxies.model import ModelConfig, ProxyLM
from corpusmix.trainer.loader import SampleReader, TokenStream

CHECKPOINT = "checkpoint.pt"
RESULT = "train.json"


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "tiny"
    seq_len: int = 256
    batch: int = 8
    steps: int | None = None  # default: every sample of the shards once
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int = 20
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    eval_tokens: int = 16_384
    checkpoint_every: int = 50
    log_every: int = 10
    threads: int = 2
    device: str = "cpu"


class CheckpointError(ValueError):
    """A checkpoint that belongs to another run (the message names it and the fix)."""


def lr_at(cfg: TrainConfig, step: int, steps: int) -> float:
    """Linear warm-up to ``lr`` over ``warmup`` steps, then cosine down to ``min_lr_ratio`` x lr."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def _deterministic(cfg: TrainConfig) -> None:
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(cfg.threads)


def _batch(reader: SampleReader, step: int, batch: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    windows = np.stack([reader.window(k) for k in range(step * batch, step * batch + batch)]).astype(np.int64)
    w = torch.from_numpy(windows).to(device)
    return w[:, :-1], w[:, 1:]


def _batch_sources(reader: SampleReader, step: int, batch: int, device: str) -> torch.Tensor:
    codes = np.stack([reader.target_sources(k) for k in range(step * batch, step * batch + batch)])
    return torch.from_numpy(codes.astype(np.int64)).to(device)


def evaluate(model: ProxyLM, stores: dict[str, Path], cfg: TrainConfig) -> dict[str, dict]:
    """Mean loss per source on the first ``eval_tokens`` (+1) tokens of its held-out store."""
    out = {}
    model.eval()
    with torch.no_grad():
        for source, prefix in stores.items():
            tokens = np.asarray(IndexedReader(prefix).tokens[:cfg.eval_tokens + 1], np.int64)
            n = (len(tokens) - 1) // cfg.seq_len
            if n == 0:
                out[source] = {"tokens": 0, "loss_nats": None, "bits_per_token": None}
                continue
            w = torch.from_numpy(tokens[:n * cfg.seq_len + 1])
            ids = w[:-1].view(n, cfg.seq_len).to(cfg.device)
            targets = w[1:].view(n, cfg.seq_len).to(cfg.device)
            total = sum(float(model.loss(ids[i:i + 8], targets[i:i + 8], reduction="sum")) for i in range(0, n, 8))
            nats = total / (n * cfg.seq_len)
            out[source] = {"tokens": n * cfg.seq_len, "loss_nats": nats, "bits_per_token": nats / math.log(2)}
    model.train()
    return out


def _identity(cfg: TrainConfig, model_cfg: ModelConfig) -> dict:
    """What a checkpoint must match to be resumed: the configuration."""
    return {"train": asdict(cfg) | {"checkpoint_every": None, "log_every": None}, "model": model_cfg.as_dict()}


def _read_digests(shards: Path, stream: TokenStream, read_until: int) -> list[list]:
    """What the run has read, shard by shard: each shard's stream range and the sha256 of its tokens
    before ``read_until`` (the whole shard's checksum from its manifest when it was read to the end)."""
    out = []
    for p in sorted(shards.glob("shard-*.json")):
        info = orjson.loads(p.read_bytes())
        a, b = info["stream_start"], info["stream_end"]
        if a >= read_until:
            break
        digest = info["bin_sha256"] if b <= read_until else \
            hashlib.sha256(np.ascontiguousarray(stream.tokens(a, read_until)).tobytes()).hexdigest()
        out.append([a, min(b, read_until), digest])
    return out


def _read_until(step: int, cfg: TrainConfig) -> int:
    """Stream tokens the first ``step`` steps read: every sample's window, the last target included."""
    return step * cfg.batch * cfg.seq_len + 1


def train_proxy(shards_dir: str | Path, stores: dict[str, Path], out_dir: str | Path, cfg: TrainConfig,
                progress: Callable[[str], None] = print, stop_after: int | None = None,
                monitor_log: str | Path | None = None) -> dict:
    """Train (or resume) one proxy on the shards in ``shards_dir``; evaluate it on ``stores``
    (source -> held-out store prefix); write ``train.json`` and return it. ``stop_after`` ends
    the run after that many steps in total, as a kill would (checkpoint written, no result);
    ``monitor_log``: where the per-source loss log goes."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _deterministic(cfg)
    stream = TokenStream.from_dir(shards_dir)
    reader = SampleReader(stream, cfg.seq_len)
    if stream.vocab_size is None:
        raise ValueError(f"{shards_dir}: the shards do not record their vocabulary size; rebuild them")
    steps = cfg.steps or len(reader) // cfg.batch
    if steps * cfg.batch > len(reader):
        raise ValueError(f"{steps} steps of {cfg.batch} samples need {steps * cfg.batch:,} samples of {cfg.seq_len} "
                         f"tokens; the shards hold {len(reader):,}: lower steps or batch, or build a larger budget")
    model_cfg = ModelConfig.preset(cfg.preset, stream.vocab_size, cfg.seq_len)
    model = ProxyLM(model_cfg).to(cfg.device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    rest = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.95))
    identity = _identity(cfg, model_cfg)
    start, curve, resumed, monitor_state = 0, [], None, None
    ckpt = out / CHECKPOINT
    if ckpt.is_file():
        state = torch.load(ckpt, map_location=cfg.device, weights_only=False)
        if state["identity"] != identity or "read" not in state:  # "read": recorded since re-planned resumes
            raise CheckpointError(f"{ckpt} was made by another run (other configuration); delete it to "
                                  "start over, or give this run its own output directory")
        if _read_digests(Path(shards_dir), stream, _read_until(state["step"], cfg)) != state["read"]:
            raise CheckpointError(f"{ckpt} was trained on shards that differ from these in what it has read (stream "
                                  f"tokens 0-{_read_until(state['step'], cfg):,}): resuming would not continue the "
                                  "same data. Re-plan only phases the run has not reached, or delete the "
                                  "checkpoint to start over")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, curve, resumed = state["step"], state["curve"], state["step"]
        progress(f"resuming from step {start} of {steps} ({ckpt})")
        monitor_state = state.get("monitor")
    progress(f"{cfg.preset}: {model_cfg.non_embedding_parameters:,} parameters without embeddings, "
             f"{sum(p.numel() for p in model.parameters()):,} in all; {steps} steps of {cfg.batch} x {cfg.seq_len} "
             f"tokens ({steps * cfg.batch * cfg.seq_len:,}) on {cfg.device}")
    monitor = None
    if monitor_log is not None:
        from corpusmix.trainer.monitor import SourceLossMonitor

        monitor = SourceLossMonitor(stream.sources, monitor_log, every=cfg.log_every)
        monitor.resume(start)
        if monitor_state is not None:
            monitor.load_state_dict(monitor_state)
    tokens_per_step = cfg.batch * cfg.seq_len
    t0, done_at_start = time.perf_counter(), start
    for step in range(start, steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step, steps)
        ids, targets = _batch(reader, step, cfg.batch, cfg.device)
        if monitor is None:
            loss = model.loss(ids, targets)
        else:
            per_token = model.loss(ids, targets, reduction="none").view(targets.shape)
            loss = per_token.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        curve.append([step + 1, loss.item()])
        if monitor is not None:
            monitor.update(per_token, _batch_sources(reader, step, cfg.batch, cfg.device), step + 1,
                           (step + 1) * tokens_per_step)
            if step + 1 == stop_after or step + 1 == steps:
                monitor.flush(step + 1, (step + 1) * tokens_per_step)
        if (step + 1) % cfg.log_every == 0 or step + 1 == steps:
            rate = (step + 1 - done_at_start) * cfg.batch * cfg.seq_len / max(time.perf_counter() - t0, 1e-9)
            eta = (steps - step - 1) * cfg.batch * cfg.seq_len / max(rate, 1e-9)
            progress(f"step {step + 1}/{steps} loss {curve[-1][1]:.4f} lr {lr_at(cfg, step, steps):.2e} "
                     f"{rate:,.0f} tokens/s ETA {eta:.0f} s")
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == steps or step + 1 == stop_after:
            buf = io.BytesIO()
            torch.save({"identity": identity, "read": _read_digests(Path(shards_dir), stream, _read_until(step + 1, cfg)),
                        "model": model.state_dict(),
                        "optimizer": opt.state_dict(), "step": step + 1, "curve": curve,
                        "monitor": None if monitor is None else monitor.state_dict()}, buf)
            atomic_write_bytes(ckpt, buf.getvalue())
        if stop_after is not None and step + 1 >= stop_after:
            progress(f"stopped after step {step + 1} (checkpointed)")
            return {}
    elapsed = time.perf_counter() - t0
    tail = [loss for _, loss in curve[-10:]]
    result = {"config": asdict(cfg), "model": model_cfg.as_dict(),
              "non_embedding_parameters": model_cfg.non_embedding_parameters,
              "parameters": sum(p.numel() for p in model.parameters()), "steps": steps,
              "tokens_trained": steps * cfg.batch * cfg.seq_len, "resumed_from": resumed,
              "final_train_loss": sum(tail) / len(tail) if tail else None, "curve": curve,
              "eval": evaluate(model, stores, cfg), "eval_unit": "nats and bits per token",
              "elapsed_s": round(elapsed, 3), "shards": str(shards_dir)}
    atomic_write_bytes(out / RESULT, orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    progress("held-out loss per source (bits per token): "
             + ", ".join(f"{s} {r['bits_per_token']:.3f}" for s, r in result["eval"].items()
                         if r["bits_per_token"] is not None))
    return result


def heldout_stores(loaded) -> dict[str, Path]:
    """Each source's held-out store prefix (tokenize's valid.bin without the suffix), in spec order."""
    from corpusmix.core.manifest import require_manifest

    stores = {}
    for s in loaded.source_names:
        m = require_manifest(loaded.manifest_root, "tokenize", s)[1]
        valid = [o for o in m["outputs"] if o["kind"] == "valid_bin"]
        if valid:
            stores[s] = (loaded.storage_root / valid[0]["path"]).with_suffix("")
    return stores


def shards_dir(loaded) -> Path:
    """The directory of the spec's published mixed shards."""
    from corpusmix.core.manifest import require_manifest

    m = require_manifest(loaded.manifest_root, "mixed_shards", None)[1]
    return loaded.storage_root / m["outputs"][0]["path"].rsplit("/", 1)[0]
