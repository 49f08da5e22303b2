"""Training loss per source, from any PyTorch training loop: is the mixture teaching each source?

A mixed batch's mean loss hides a source that stops improving (or starts diverging) behind the
others, so ``SourceLossMonitor`` splits it: given the per-token losses ([B, L], e.g.
``F.cross_entropy(..., reduction="none")`` reshaped) and the source id of every target token
([B, L], an index into the monitor's source names), it adds each source's loss sum and token
count into a [2, n_sources] float64 tensor on the losses' own device. Nothing is copied to the
host between records (no ``.item()``, no ``bincount``, whose CUDA output size needs the ids'
maximum), so the GPU is never stalled; float64 keeps the sums and counts exact over long
intervals. Every ``every`` steps the monitor syncs once, and writes one record: the interval's
mean loss per source, an exponential moving average of it, and its token count.

The log is one JSON object per line (keys sorted, compact), appended crash-safely: the whole
line in one write, then fsync. A process killed mid-write leaves at most a partial last line,
which ``read_log`` skips. A run resumed from its checkpoint at step s calls ``resume(s)``:
records after s are dropped (the file rewritten atomically) and the EMA comes back from the last
record kept, so the resumed run's log is byte for byte the one an uninterrupted run writes,
provided the checkpoint falls on a record (a multiple of ``every``, or after a ``flush``) or
the trainer also checkpoints ``state_dict()``, which holds the open interval's sums.

Trainers that only have one loss per sample (Megatron's per-sample losses, for instance) use
``update_samples`` with each sample's token count per source: the sample's mean loss is
attributed to its sources by those counts. That assumes a sample's tokens share one loss, so
those records carry ``"exact": false``; the two paths never mix within one record.

Non-finite losses are written as ``NaN`` / ``Infinity`` (Python's json reads them; a strict
JSON parser does not), not as null, which means "no tokens this interval". In data-parallel
training each process sees its share of the batch: a monitor on one rank logs that rank's tokens,
and only one rank may write a given path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from corpusmix.core.storage import _fsync_dir, atomic_write_bytes
from corpusmix.trainer.monitor_log import _read_lines, read_log

__all__ = ["SourceLossMonitor", "read_log"]


class SourceLossMonitor:
    """Per-source loss of a training run, logged every ``every`` optimizer steps to ``path``."""

    def __init__(self, sources: list[str], path: str | Path, every: int = 10, ema_alpha: float = 0.1):
        if not sources or len(set(sources)) != len(sources):
            raise ValueError(f"sources must be distinct names, at least one: {sources!r}")
        if every < 1:
            raise ValueError(f"every must be at least 1, not {every}")
        if not 0 < ema_alpha <= 1:
            raise ValueError(f"ema_alpha must be in (0, 1], not {ema_alpha}")
        self.sources, self.path, self.every, self.ema_alpha = list(sources), Path(path), every, ema_alpha
        self._ema: list[float | None] = [None] * len(sources)
        self._sums: torch.Tensor | None = None  # [loss sums, token counts] x sources, on the losses' device
        self._exact: bool | None = None  # the open interval's path: per-token (True) or per-sample (False)
        self._pending = 0  # updates since the last record
        self._log_checked = False  # the log is known to hold nothing this run would contradict
        self._last_step: int | None = None

    def update(self, token_loss: torch.Tensor, source_ids: torch.Tensor, step: int, tokens: int) -> dict | None:
        """Add one step's per-token losses ([B, L]) by source id ([B, L], in [0, n_sources)).
        ``step``: optimizer steps done, this one included; ``tokens``: target tokens trained so far.
        Returns the record written when ``step`` is a multiple of ``every``, else None. An id out of
        range raises (on CUDA as a device-side assert: checking it here would need a sync)."""
        if token_loss.shape != source_ids.shape:
            raise ValueError(f"token_loss {tuple(token_loss.shape)} and source_ids {tuple(source_ids.shape)} "
                             "must have the same shape: one source id per target token")
        loss = token_loss.detach().reshape(-1).double()
        sums = self._open_interval(exact=True, device=loss.device)
        sums.index_add_(1, source_ids.reshape(-1), torch.stack((loss, torch.ones_like(loss))))
        return self._close_update(step, tokens)

    def update_samples(self, sample_loss: torch.Tensor, source_counts: torch.Tensor, step: int,
                       tokens: int) -> dict | None:
        """Add one step's per-sample mean losses ([B]) by each sample's token count per source
        ([B, n_sources]): source i gets sum_b loss_b * count_bi over sum_b count_bi. An estimate (a
        sample's tokens are taken to share its mean loss), so its records say ``"exact": false``."""
        if sample_loss.dim() != 1 or source_counts.shape != (len(sample_loss), len(self.sources)):
            raise ValueError(f"sample_loss {tuple(sample_loss.shape)} and source_counts "
                             f"{tuple(source_counts.shape)} must be [B] and [B, {len(self.sources)}]")
        loss = sample_loss.detach().double()
        counts = source_counts.double()
        sums = self._open_interval(exact=False, device=loss.device)
        sums += torch.stack((loss @ counts, counts.sum(0)))
        return self._close_update(step, tokens)

    def flush(self, step: int, tokens: int) -> dict | None:
        """Write the open interval now (end of a run, or before a checkpoint that does not fall on
        a multiple of ``every``), so its steps are not lost; None when it holds no update."""
        return self._record(step, tokens) if self._pending else None

    def resume(self, step: int) -> None:
        """Continue the run from its checkpoint at ``step`` (0 for a new run on an existing path):
        drop the log's records after it and a partial last line, and take the EMA from the last
        record kept. Call ``load_state_dict`` afterwards if the trainer checkpointed the monitor."""
        data, lines = _read_lines(self.path) if self.path.exists() else (b"", [])
        kept = [(raw, record) for raw, record in lines if record["step"] <= step]
        for _, record in kept:
            if set(record["sources"]) != set(self.sources):
                raise ValueError(f"{self.path}: the record of step {record['step']} has sources "
                                 f"{sorted(record['sources'])}, this monitor {sorted(self.sources)}: another run's log")
        kept_bytes = b"".join(raw for raw, _ in kept)
        if kept_bytes != data:
            atomic_write_bytes(self.path, kept_bytes)
        last = kept[-1][1] if kept else None
        self._ema = [last["sources"][name]["ema"] for name in self.sources] if last else [None] * len(self.sources)
        self._last_step = last["step"] if last else None
        self._log_checked = True
        self._reset_interval()

    def state_dict(self) -> dict:
        """The EMA and the open interval, for trainers that checkpoint at any step."""
        return {"sources": list(self.sources), "ema": list(self._ema), "exact": self._exact,
                "pending": self._pending, "sums": None if self._sums is None else self._sums.clone()}

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()``'s state (after ``resume``, which truncates the log)."""
        if state["sources"] != self.sources:
            raise ValueError(f"a monitor state of sources {state['sources']}, this monitor has {self.sources}")
        self._ema, self._exact, self._pending = list(state["ema"]), state["exact"], state["pending"]
        self._sums = None if state["sums"] is None else state["sums"].clone()

    def _open_interval(self, exact: bool, device: torch.device) -> torch.Tensor:
        """The accumulator on ``device``, refusing to mix per-token and per-sample losses in one
        record: its ``exact`` flag would then be wrong for part of it."""
        if self._exact is not None and self._exact != exact:
            raise ValueError("update and update_samples cannot both feed one interval: a record is either "
                             "exact (per-token) or an estimate (per-sample)")
        if self._sums is None:
            self._sums = torch.zeros(2, len(self.sources), dtype=torch.float64, device=device)
        elif self._sums.device != device:
            self._sums = self._sums.to(device)
        self._exact = exact
        return self._sums

    def _close_update(self, step: int, tokens: int) -> dict | None:
        self._pending += 1
        return self._record(step, tokens) if step % self.every == 0 else None

    def _record(self, step: int, tokens: int) -> dict:
        """The open interval as a record, appended to the log; the EMA advances only once the line
        is on disk, so a failed write leaves the state matching the log."""
        loss_sums, counts = self._sums.tolist()  # the one host sync per record
        ema, sources = list(self._ema), {}
        for i, name in enumerate(self.sources):
            n = int(counts[i])
            loss = loss_sums[i] / n if n else None
            if loss is not None:
                ema[i] = loss if ema[i] is None else self.ema_alpha * loss + (1 - self.ema_alpha) * ema[i]
            sources[name] = {"loss": loss, "ema": ema[i], "tokens": n}
        record = {"step": step, "tokens": tokens, "exact": self._exact, "sources": sources}
        self._append(record)
        self._ema = ema
        self._reset_interval()
        return record

    def _append(self, record: dict) -> None:
        """One line, one write, fsynced: a crash leaves at most a partial last line. Refuses to
        append after records of a run this monitor was not resumed from (they would interleave)."""
        if not self._log_checked:
            if self.path.exists() and self.path.stat().st_size:
                raise ValueError(f"{self.path} already holds a log: call resume(step) with the step this run "
                                 "restarts from (0 for a new run) to keep the records up to it")
            self._log_checked = True
        if self._last_step is not None and record["step"] <= self._last_step:
            raise ValueError(f"{self.path}: step {record['step']} is not after the last record's {self._last_step}")
        line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
        created = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        if created:  # the new file's name must survive a crash too
            _fsync_dir(self.path.parent)
        self._last_step = record["step"]

    def _reset_interval(self) -> None:
        if self._sums is not None:
            self._sums.zero_()
        self._exact, self._pending = None, 0
