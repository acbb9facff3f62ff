"""The training-only attribute heads supervise the image embedding and nothing else."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from embedder_service.export.attribute_heads import AttributeHeads
from imagesearch.synthetic import Scene


def test_heads_loss_reaches_the_image_embedding():
    torch.manual_seed(0)
    features = F.normalize(torch.randn(4, 64), dim=1).requires_grad_()
    scenes = [Scene("red", shape, count, "small", "center", "white")
              for shape, count in (("circle", 1), ("star", 2), ("cross", 3), ("square", 1))]
    loss = AttributeHeads(64).loss(features, scenes)
    loss.backward()
    assert torch.isfinite(loss) and features.grad is not None and features.grad.abs().sum() > 0
