"""The proxy model: a small decoder-only transformer, defined here so nothing is downloaded.

GPT-2's shape at small scale: token and learned position embeddings, ``layers`` pre-norm
blocks (causal multi-head self-attention, a 4x GELU MLP), a final LayerNorm and an output
layer tied to the token embedding. Sizes are named by presets whose parameter counts exclude
the embeddings (the convention of the scaling and mixing-law literature: with a 50k vocabulary
the embedding would dominate a small model's count): 12 x width^2 per layer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

# name -> (layers, width, heads): non-embedding parameters ~0.44M, 1.8M, 7.4M, 19M
PRESETS = {"tiny": (4, 96, 4), "small": (4, 192, 4), "base": (6, 320, 8), "large": (8, 448, 8)}


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    seq_len: int
    layers: int
    width: int
    heads: int

    @classmethod
    def preset(cls, name: str, vocab_size: int, seq_len: int) -> ModelConfig:
        if name not in PRESETS:
            raise ValueError(f"no model preset {name!r}; the presets are {sorted(PRESETS)}")
        layers, width, heads = PRESETS[name]
        return cls(vocab_size, seq_len, layers, width, heads)

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def non_embedding_parameters(self) -> int:
        """Weights and biases of the blocks and the final norm (the count presets are named by)."""
        d = self.width
        per_block = (4 * d * d + 4 * d) + (8 * d * d + 5 * d) + 4 * d  # attention, MLP, two LayerNorms
        return self.layers * per_block + 2 * d


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads = cfg.heads
        self.norm1, self.norm2 = nn.LayerNorm(cfg.width), nn.LayerNorm(cfg.width)
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.width)
        self.up, self.down = nn.Linear(cfg.width, 4 * cfg.width), nn.Linear(4 * cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        return x + self.down(F.gelu(self.up(self.norm2(x))))


class ProxyLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.width % cfg.heads:
            raise ValueError(f"width {cfg.width} is not a multiple of heads {cfg.heads}")
        self.cfg = cfg
        self.tokens = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positions = nn.Embedding(cfg.seq_len, cfg.width)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.width)
        self.apply(self._init)
        for block in self.blocks:  # residual projections scaled down with depth (GPT-2)
            for layer in (block.proj, block.down):
                nn.init.normal_(layer.weight, 0.0, 0.02 / math.sqrt(2 * cfg.layers))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits (batch x seq x vocab) for token ids (batch x seq)."""
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.tokens(ids) + self.positions(pos)[None]
        for block in self.blocks:
            x = block(x)
        return self.norm(x) @ self.tokens.weight.T  # tied output layer

    def loss(self, ids: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Cross-entropy in nats per target token."""
        logits = self(ids)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction=reduction)
