"""The proxy trainer on the session's built corpus: deterministic for a seed, a run stopped and
started again ends with the same weights as one never stopped, a checkpoint of another run is
refused, and the held-out loss per source is measured on a fixed number of tokens."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import orjson
import pytest

torch = pytest.importorskip("torch")

from corpusmix.proxies.model import PRESETS, ModelConfig, ProxyLM  # noqa: E402
from corpusmix.proxies.train import (  # noqa: E402
    CHECKPOINT,
    CheckpointError,
    TrainConfig,
    heldout_stores,
    lr_at,
    shards_dir,
    train_proxy,
)

TOY = TrainConfig(preset="tiny", seq_len=64, batch=4, steps=12, warmup=3, checkpoint_every=4, log_every=4,
                  eval_tokens=1024)
QUIET = {"progress": lambda m: None}


def _weights(run_dir) -> dict[str, np.ndarray]:
    state = torch.load(run_dir / CHECKPOINT, weights_only=False)["model"]
    return {k: v.numpy() for k, v in state.items()}


@pytest.mark.slow
def test_training_is_deterministic_and_resumes_to_the_same_weights(built_corpus, tmp_path):
    shards, stores = shards_dir(built_corpus), heldout_stores(built_corpus)
    a = train_proxy(shards, stores, tmp_path / "a", TOY, **QUIET)
    again = train_proxy(shards, stores, tmp_path / "again", TOY, **QUIET)
    wa, wagain = _weights(tmp_path / "a"), _weights(tmp_path / "again")
    assert all(np.array_equal(wa[k], wagain[k]) for k in wa)  # same seed, same shards: bit for bit
    assert a["curve"] == again["curve"] and a["eval"] == again["eval"]
    assert a["curve"][-1][1] < a["curve"][0][1] - 1.0  # it learns: the loss falls from ~ln(50257)
    assert a["curve"][0][1] == pytest.approx(math.log(50257), abs=0.5)

    assert train_proxy(shards, stores, tmp_path / "b", TOY, stop_after=6, **QUIET) == {}  # killed after step 6
    assert not (tmp_path / "b" / "train.json").exists()
    said: list[str] = []
    b = train_proxy(shards, stores, tmp_path / "b", TOY, progress=said.append)
    assert said[0].startswith("resuming from step 6 of 12") and b["resumed_from"] == 6
    wb = _weights(tmp_path / "b")
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)  # as if it had never stopped
    assert b["curve"] == a["curve"] and b["eval"] == a["eval"]

    for source, r in a["eval"].items():
        assert source in built_corpus.source_names
        assert r["tokens"] == min(1024, r["tokens"]) and r["tokens"] % TOY.seq_len == 0 and r["tokens"] > 0
        assert r["bits_per_token"] == pytest.approx(r["loss_nats"] / math.log(2))
    assert a["non_embedding_parameters"] == ModelConfig.preset("tiny", 50257, 64).non_embedding_parameters

    other = TrainConfig(**{**TOY.__dict__, "lr": 1e-3})
    with pytest.raises(CheckpointError, match="made by another run"):
        train_proxy(shards, stores, tmp_path / "a", other, **QUIET)


@pytest.mark.slow
def test_corpusmix_train_proxy_prints_progress_and_the_heldout_loss(built_corpus, tmp_path):
    r = subprocess.run([sys.executable, "-m", "corpusmix.cli", "train-proxy", str(built_corpus.path), "--steps", "4",
                        "--batch", "2", "--seq-len", "32", "--eval-tokens", "256", "--out", str(tmp_path / "run")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "step 4/4 loss" in r.stdout and "tokens/s" in r.stdout
    assert "held-out loss per source (bits per token):" in r.stdout
    result = orjson.loads((tmp_path / "run" / "train.json").read_bytes())
    assert result["steps"] == 4 and result["tokens_trained"] == 4 * 2 * 32
    assert set(result["eval"]) == set(built_corpus.source_names)


def test_presets_are_named_by_their_parameters_without_embeddings():
    for name, expected in (("tiny", 0.44e6), ("small", 1.8e6), ("base", 7.4e6), ("large", 19e6)):
        cfg = ModelConfig.preset(name, vocab_size=1000, seq_len=32)
        model = ProxyLM(cfg)
        counted = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("tokens", "positions")))
        assert counted == cfg.non_embedding_parameters
        assert cfg.non_embedding_parameters == pytest.approx(expected, rel=0.06), name
    assert set(PRESETS) == {"tiny", "small", "base", "large"}
    with pytest.raises(ValueError, match="no model preset 'huge'"):
        ModelConfig.preset("huge", 1000, 32)


def test_the_learning_rate_warms_up_then_decays_to_its_floor():
    cfg = TrainConfig(lr=1e-3, warmup=10, min_lr_ratio=0.1)
    lrs = [lr_at(cfg, s, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lr_at(cfg, 100, 100) == pytest.approx(1e-4)
