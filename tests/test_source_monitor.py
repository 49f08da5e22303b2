"""SourceLossMonitor: per-source interval means and EMAs as a hand computation gives them, a log
that survives a crash mid-write, and a resumed run whose log is byte for byte an uninterrupted one's."""

import json

import numpy as np
import pytest
import torch

from corpusmix.trainer.monitor import SourceLossMonitor, read_log

SOURCES = ["web", "code", "math"]
B, L = 4, 16


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Step ``step``'s per-token losses and source ids, the same on every call. "math" has no
    token before step 6 and "code" none in steps 6-10, so an interval lacks each of them."""
    g = torch.Generator().manual_seed(step)
    loss = torch.rand(B, L, generator=g) * 5
    choices = {True: [0, 1], False: [0, 2]}[step <= 5] if step <= 10 else [0, 1, 2]
    ids = torch.tensor(choices)[torch.randint(0, len(choices), (B, L), generator=g)]
    return loss, ids


def train(monitor: SourceLossMonitor, first: int, last: int) -> list[dict]:
    """Steps first..last as a trainer calls the monitor, and the records they wrote."""
    out = [monitor.update(*batch(s), step=s, tokens=s * B * L) for s in range(first, last + 1)]
    return [r for r in out if r is not None]


def numpy_means(steps: range) -> list[float | None]:
    losses = np.concatenate([batch(s)[0].numpy().ravel().astype(np.float64) for s in steps])
    ids = np.concatenate([batch(s)[1].numpy().ravel() for s in steps])
    return [float(losses[ids == i].mean()) if (ids == i).any() else None for i in range(len(SOURCES))]


def test_interval_means_and_emas_match_a_hand_computation(tmp_path):
    monitor = SourceLossMonitor(SOURCES, tmp_path / "log.jsonl", every=5, ema_alpha=0.3)
    loss, ids = batch(1)
    assert monitor.update(loss.requires_grad_(), ids, step=1, tokens=B * L) is None  # a graph's loss: detached
    records = train(monitor, 2, 15)
    assert [r["step"] for r in records] == [5, 10, 15] and all(r["exact"] for r in records)
    assert [r["tokens"] for r in records] == [5 * B * L, 10 * B * L, 15 * B * L]

    intervals = [range(1, 6), range(6, 11), range(11, 16)]
    for record, steps in zip(records, intervals):
        for name, mean in zip(SOURCES, numpy_means(steps)):
            got = record["sources"][name]["loss"]
            assert got == (None if mean is None else pytest.approx(mean, rel=1e-12)), (record["step"], name)
    counts = [np.bincount(np.concatenate([batch(s)[1].numpy().ravel() for s in steps]), minlength=3).tolist()
              for steps in intervals]
    assert [[r["sources"][n]["tokens"] for n in SOURCES] for r in records] == counts
    assert counts[0][2] == 0 and counts[1][1] == 0  # math absent from the first interval, code from the second

    web = [r["sources"]["web"] for r in records]
    assert web[0]["ema"] == web[0]["loss"]
    assert web[1]["ema"] == 0.3 * web[1]["loss"] + 0.7 * web[0]["ema"]
    assert web[2]["ema"] == 0.3 * web[2]["loss"] + 0.7 * web[1]["ema"]
    code = [r["sources"]["code"] for r in records]
    assert code[1] == {"loss": None, "ema": code[0]["ema"], "tokens": 0}  # absent: the EMA stays
    assert code[2]["ema"] == 0.3 * code[2]["loss"] + 0.7 * code[0]["ema"]
    math = [r["sources"]["math"] for r in records]
    assert math[0] == {"loss": None, "ema": None, "tokens": 0}
    assert math[1]["ema"] == math[1]["loss"]  # its first interval with tokens sets the EMA


def test_the_log_reads_back_as_the_records_and_survives_a_cut_write(tmp_path):
    path = tmp_path / "runs" / "log.jsonl"  # the directory is made on the first record
    monitor = SourceLossMonitor(SOURCES, path, every=4)
    records = train(monitor, 1, 13)
    assert monitor.flush(step=13, tokens=13 * B * L)["step"] == 13  # the partial interval 13..13
    assert monitor.flush(step=13, tokens=13 * B * L) is None
    records.append(read_log(path)[-1])
    assert read_log(path) == records and len(records) == 4
    lines = path.read_bytes().splitlines(keepends=True)
    assert lines == [(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n").encode() for r in records]
    assert set(records[0]["sources"]) == set(SOURCES) and list(json.loads(lines[0])) == sorted(records[0])

    with open(path, "ab") as f:
        f.write(lines[0][:30])  # a crash mid-write
    assert read_log(path) == records
    path.write_bytes(b"".join(lines) + b"\x00" * 40)  # a file system that extended the file, data lost
    assert read_log(path) == records
    path.write_bytes(b"".join(lines) + lines[-1].replace(b'"step":13', b'"step":16').rstrip(b"\n"))
    assert read_log(path) == records  # cut just before its newline: the line is not known to be whole

    path.write_bytes(lines[0] + b'{"step": 8, "sour\n' + b"".join(lines[2:]))
    with pytest.raises(ValueError, match=r"log\.jsonl: line 2 "):
        read_log(path)
    path.write_bytes(lines[0] + b"\n" + b"".join(lines[1:]))  # an empty line in the middle
    with pytest.raises(ValueError, match="line 2 "):
        read_log(path)


def test_a_run_killed_and_resumed_writes_the_log_of_an_uninterrupted_one(tmp_path):
    whole = tmp_path / "whole.jsonl"
    train(SourceLossMonitor(SOURCES, whole, every=5), 1, 30)

    crashed = tmp_path / "crashed.jsonl"
    monitor = SourceLossMonitor(SOURCES, crashed, every=5)
    train(monitor, 1, 17)
    del monitor  # killed at step 17; its last checkpoint was step 10
    with open(crashed, "ab") as f:
        f.write(b'{"exact":true,"sources":{"code"')  # and it died writing a record
    assert [r["step"] for r in read_log(crashed)] == [5, 10, 15]

    resumed = SourceLossMonitor(SOURCES, crashed, every=5)
    resumed.resume(10)
    assert [r["step"] for r in read_log(crashed)] == [5, 10]
    assert not list(tmp_path.glob(".*.tmp"))  # the rewrite left no temp file
    train(resumed, 11, 30)
    assert resumed.flush(step=30, tokens=30 * B * L) is None
    assert crashed.read_bytes() == whole.read_bytes()
    assert read_log(whole)[-1]["sources"]["math"]["ema"] is not None  # math's EMA was None at step 10


def test_a_checkpointed_state_resumes_between_records(tmp_path):
    whole = tmp_path / "whole.jsonl"
    train(SourceLossMonitor(SOURCES, whole, every=5), 1, 20)
    path = tmp_path / "log.jsonl"
    monitor = SourceLossMonitor(SOURCES, path, every=5)
    train(monitor, 1, 13)
    torch.save(monitor.state_dict(), tmp_path / "monitor.pt")  # the checkpoint at step 13, mid-interval
    train(monitor, 14, 16)

    resumed = SourceLossMonitor(SOURCES, path, every=5)
    resumed.resume(13)
    resumed.load_state_dict(torch.load(tmp_path / "monitor.pt"))
    train(resumed, 14, 20)
    assert path.read_bytes() == whole.read_bytes()  # the record of step 15 covers 11..15, as in one run

    with pytest.raises(ValueError, match="sources"):
        SourceLossMonitor(["web", "code"], path).resume(20)  # another run's log


def test_an_existing_log_is_not_appended_to_without_resume(tmp_path):
    path = tmp_path / "log.jsonl"
    train(SourceLossMonitor(SOURCES, path, every=5), 1, 10)
    again = SourceLossMonitor(SOURCES, path, every=5)
    with pytest.raises(ValueError, match="resume"):
        train(again, 1, 5)
    again.resume(0)  # a new run on the same path
    assert path.read_bytes() == b""
    assert [r["step"] for r in train(again, 1, 5)] == [5]


def test_per_sample_losses_are_attributed_by_token_counts(tmp_path):
    monitor = SourceLossMonitor(SOURCES, tmp_path / "log.jsonl", every=3, ema_alpha=0.5)
    g = torch.Generator().manual_seed(0)
    losses, counts = [], []
    for step in range(1, 4):
        loss = torch.rand(B, generator=g) * 4
        count = torch.randint(0, 9, (B, 3), generator=g)
        count[:, 2] = 0 if step < 3 else count[:, 2]
        losses.append(loss.numpy().astype(np.float64))
        counts.append(count.numpy())
        record = monitor.update_samples(loss, count, step=step, tokens=step * 100)
    loss_np, count_np = np.concatenate(losses), np.concatenate(counts)
    expected = (loss_np[:, None] * count_np).sum(0) / count_np.sum(0)
    assert record["exact"] is False and record["tokens"] == 300
    for i, name in enumerate(SOURCES):
        assert record["sources"][name]["loss"] == pytest.approx(expected[i], rel=1e-12)
        assert record["sources"][name]["tokens"] == int(count_np[:, i].sum())
    assert read_log(tmp_path / "log.jsonl") == [record]


def test_one_interval_does_not_mix_per_token_and_per_sample_losses(tmp_path):
    monitor = SourceLossMonitor(SOURCES, tmp_path / "log.jsonl", every=2)
    monitor.update_samples(torch.ones(B), torch.ones(B, 3, dtype=torch.int64), step=1, tokens=B * 3)
    with pytest.raises(ValueError, match="cannot both"):
        monitor.update(*batch(2), step=2, tokens=2 * B * L)
    assert monitor.update_samples(torch.ones(B), torch.ones(B, 3), step=2, tokens=2 * B * 3)["exact"] is False
    monitor.update(*batch(3), step=3, tokens=3 * B * L)  # a new interval may take the other path
    assert monitor.update(*batch(4), step=4, tokens=4 * B * L)["exact"] is True
    with pytest.raises(ValueError, match="same shape"):
        monitor.update(torch.ones(B, L), torch.zeros(B, L - 1, dtype=torch.int64), step=5, tokens=0)
