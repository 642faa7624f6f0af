"""Architectures of the zoo, sized for 8×8 digits and 2D points.

Plain ``nn.Module`` code with no randomness in ``forward`` (no dropout), so a model in
eval mode is a deterministic function of its weights, as a loss landscape needs.
"""
from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """Fully connected ReLU network: ``(N, n_inputs) -> (N, n_classes)`` logits."""

    def __init__(self, n_inputs: int, n_classes: int, widths: tuple[int, ...] = (128, 64)):
        super().__init__()
        layers: list[nn.Module] = []
        n_prev = n_inputs
        for width in widths:
            layers += [nn.Linear(n_prev, width), nn.ReLU()]
            n_prev = width
        layers.append(nn.Linear(n_prev, n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _conv_bn(n_in: int, n_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(n_out),
    )


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU layers and a linear head for ``(N, 1, 8, 8)`` images."""

    def __init__(self, n_classes: int = 10, widths: tuple[int, int, int] = (16, 32, 64)):
        super().__init__()
        w1, w2, w3 = widths
        self.features = nn.Sequential(
            _conv_bn(1, w1), nn.ReLU(),
            _conv_bn(w1, w2), nn.ReLU(),
            nn.MaxPool2d(2),
            _conv_bn(w2, w3), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(w3, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers; with ``skip``, the input is added before the last ReLU.

    Without ``skip`` there is no shortcut at all (no projection parameters either),
    like the "ResNet-noshort" networks of Li et al. 2018.
    """

    def __init__(self, n_in: int, n_out: int, stride: int, skip: bool):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(n_in, n_out, stride), nn.ReLU(), _conv_bn(n_out, n_out))
        self.shortcut: nn.Module | None = None
        if skip:
            self.shortcut = nn.Identity()
            if stride != 1 or n_in != n_out:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(n_in, n_out, 1, stride=stride, bias=False), nn.BatchNorm2d(n_out)
                )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.relu(out)


class ResNet(nn.Module):
    """CIFAR-style ResNet (He et al. 2016): a stem, 3 stages of ``n_blocks`` basic blocks.

    ``n_blocks=3`` is ResNet-20 (6·3 + 2 layers). Stages have ``widths`` channels and
    halve the resolution after the first (8×8 → 4×4 → 2×2 for digits).
    """

    def __init__(
        self,
        n_classes: int = 10,
        n_blocks: int = 3,
        widths: tuple[int, int, int] = (16, 32, 64),
        skip: bool = True,
        n_in_channels: int = 1,
    ):
        super().__init__()
        self.stem = nn.Sequential(_conv_bn(n_in_channels, widths[0]), nn.ReLU())
        blocks: list[nn.Module] = []
        n_prev = widths[0]
        for i_stage, width in enumerate(widths):
            for i_block in range(n_blocks):
                stride = 2 if i_stage > 0 and i_block == 0 else 1
                blocks.append(BasicBlock(n_prev, width, stride, skip))
                n_prev = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(n_prev, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.blocks(self.stem(x))))


class Attention(nn.Module):
    """Multi-head self-attention written with plain matmuls (no fused fast paths)."""

    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_batch, n_tokens, dim = x.shape
        qkv = self.qkv(x).reshape(n_batch, n_tokens, 3, self.n_heads, dim // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        weights = torch.softmax(q @ k.transpose(-2, -1) * (q.shape[-1] ** -0.5), dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(n_batch, n_tokens, dim)
        return self.proj(out)


class TransformerBlock(nn.Module):
    """Pre-norm transformer encoder block: attention and a GELU MLP, each residual."""

    def __init__(self, dim: int, n_heads: int, mlp_ratio: int = 2):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, n_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """Vision transformer (Dosovitskiy et al. 2021) for small images, mean-pooled tokens.

    ``patch_size`` 2 cuts an 8×8 image into 16 tokens.
    """

    def __init__(
        self,
        n_classes: int = 10,
        image_size: int = 8,
        patch_size: int = 2,
        dim: int = 32,
        n_layers: int = 2,
        n_heads: int = 4,
        n_in_channels: int = 1,
    ):
        super().__init__()
        n_tokens = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(n_in_channels, dim, patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.randn(1, n_tokens, dim) * 0.02)
        self.blocks = nn.Sequential(*(TransformerBlock(dim, n_heads) for _ in range(n_layers)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        return self.head(self.norm(self.blocks(tokens)).mean(dim=1))
