"""An auxiliary supervised loss on the small model's image tower, used only in training.

The contrastive loss spreads each image's gradient over every word of its caption (colour,
shape, count, size, position, background); shape is the one that does not transfer across
drawing styles (issue 16). Linear heads on the image embedding, predicting the scene's shape
and count from it, give the tower a direct signal for them. They are not part of the CLIP
model: the exported bundle is the image and text towers only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imagesearch import synthetic
from imagesearch.synthetic import Scene

COUNTS = (1, 2, 3)
# The embedding is unit length: a fixed scale lets the heads' logits grow without huge weights.
SCALE = 10.0


class AttributeHeads(nn.Module):
    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.shape = nn.Linear(embed_dim, len(synthetic.SHAPES))
        self.count = nn.Linear(embed_dim, len(COUNTS))

    def loss(self, image_features: torch.Tensor, scenes: list[Scene]) -> torch.Tensor:
        """Cross-entropy of shape and count from the (normalised) image embeddings."""
        shapes = torch.tensor([synthetic.SHAPES.index(s.shape) for s in scenes])
        counts = torch.tensor([COUNTS.index(s.count) for s in scenes])
        scaled = SCALE * image_features
        return (F.cross_entropy(self.shape(scaled), shapes)
                + F.cross_entropy(self.count(scaled), counts))
