"""U-Net-like decoders on a timm feature pyramid."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _ConvBlock(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class UpBlock(nn.Module):
    """×2 bilinear up-sampling, concatenation with a skip map, two 3×3 conv-BN-ReLU.

    Examples:
        >>> blk = UpBlock(8, 4, 6)
        >>> blk(torch.zeros(1, 8, 4, 4), torch.zeros(1, 4, 8, 8)).shape
        torch.Size([1, 6, 8, 8])
    """

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = _ConvBlock(in_ch + skip_ch, out_ch)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """Up-sample ``x`` to ``skip``'s size, concatenate, convolve."""
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([x, skip], dim=1))


class UNetDecoder(nn.Module):
    """Three (or ``len(decoder_channels)``) ×2 up-sampling blocks with skip connections, then a 1×1 output conv.

    It takes the **last** ``len(decoder_channels) + 1`` maps of a feature pyramid (finest first, as timm's
    ``features_only`` returns them): the deepest map is up-sampled and merged with each shallower one in turn.
    The output logits are resized to ``out_size`` (the input image size) bilinearly.

    Args:
        encoder_channels: channels of the pyramid maps, finest first.
        out_channels: output classes (1 for binary segmentation).
        decoder_channels: widths of the up-sampling blocks.

    Examples:
        >>> dec = UNetDecoder([8, 16, 32, 64], out_channels=3, decoder_channels=(32, 16, 8))
        >>> feats = [torch.zeros(1, c, 32 // 2**i, 32 // 2**i) for i, c in enumerate([8, 16, 32, 64])]
        >>> dec(feats, out_size=(64, 64)).shape
        torch.Size([1, 3, 64, 64])
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        *,
        out_channels: int = 1,
        decoder_channels: Sequence[int] = (256, 128, 64),
    ) -> None:
        super().__init__()
        n_blocks = len(decoder_channels)
        if len(encoder_channels) < n_blocks + 1:
            raise ValueError(
                f"a decoder with {n_blocks} blocks needs {n_blocks + 1} feature maps, got {len(encoder_channels)}"
            )
        chans = list(encoder_channels)[-(n_blocks + 1) :]
        self.n_inputs = n_blocks + 1
        blocks = []
        width = chans[-1]
        for skip_ch, out_ch in zip(reversed(chans[:-1]), decoder_channels, strict=True):
            blocks.append(UpBlock(width, skip_ch, out_ch))
            width = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.out = nn.Conv2d(width, out_channels, kernel_size=1)

    def forward(self, features: Sequence[Tensor], out_size: Sequence[int] | None = None) -> Tensor:
        """Decode ``features`` (finest first) to logits ``(N, out_channels, *out_size)``."""
        feats = list(features)[-self.n_inputs :]
        x = feats[-1]
        for block, skip in zip(self.blocks, reversed(feats[:-1]), strict=True):
            x = block(x, skip)
        x = self.out(x)
        if out_size is not None and tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, size=tuple(out_size), mode="bilinear", align_corners=False)
        return x
