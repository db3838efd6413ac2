"""Probes: small classifiers trained on frozen features, to ask what a representation knows.

Features come as one tensor (N, L, D): N examples (tokens or sentences), L layers of a model,
D features per layer. A probe reads one layer, or a learned ``ScalarMix`` of all of them (ELMo's
way of using its layers), followed by a linear classifier. The model that made the features is
never updated, so differences between probes are differences between the layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ctxlib.elmo import ScalarMix
from ctxlib.runtime import device_of
from ctxlib.train import TrainConfig, train


class LayerProbe(nn.Module):
    """Logits (N, classes) from features (N, L, D): layer ``layer`` alone, or, with
    ``layer=None``, the scalar mix of all L layers (its weights show which layers the task uses).
    The classifier is linear, or with ``hidden > 0`` has one hidden ReLU layer of that width;
    either way it sees one example at a time, so it cannot add context of its own."""

    def __init__(self, num_layers: int, dim: int, num_classes: int, layer: int | None = None,
                 dropout: float = 0.1, hidden: int = 0):
        super().__init__()
        if layer is not None and not -num_layers <= layer < num_layers:
            raise ValueError(f"layer {layer} does not exist; the features have {num_layers}.")
        self.layer = layer
        self.mix = ScalarMix(num_layers, layer_norm=True) if layer is None else None
        self.dropout = nn.Dropout(dropout)
        if hidden:
            self.classifier = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                                            nn.Linear(hidden, num_classes))
        else:
            self.classifier = nn.Linear(dim, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 3:
            raise ValueError(f"features must be (N, layers, dim), got {tuple(features.shape)}.")
        features = features.float()
        if self.mix is None:
            x = F.layer_norm(features[:, self.layer], features.shape[-1:])  # (N, D)
        else:
            x = self.mix(features)  # (N, D)
        return self.classifier(self.dropout(x))

    @torch.no_grad()
    def predict(self, features: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """The most likely class of each example: (N,)."""
        self.eval()
        device = device_of(self)
        return torch.cat([self(chunk.to(device)).argmax(-1).cpu()
                          for chunk in features.split(batch_size)])


def fit_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
              layer: int | None = None, steps: int = 500, batch_size: int = 256, lr: float = 3e-3,
              hidden: int = 0, seed: int = 0) -> LayerProbe:
    """Train a ``LayerProbe`` on features (N, L, D) and labels (N,) with the course's training
    loop (no checkpoints: a probe trains in seconds)."""
    if features.shape[0] != labels.shape[0]:
        raise ValueError(f"{features.shape[0]} feature rows for {labels.shape[0]} labels.")
    torch.manual_seed(seed)
    probe = LayerProbe(features.shape[1], features.shape[2], num_classes, layer=layer, hidden=hidden)

    def batches(generator):
        rows = torch.randint(0, len(labels), (batch_size,), generator=generator)
        return features[rows], labels[rows]

    def loss_fn(model, batch):
        x, y = batch
        device = device_of(model)
        return F.cross_entropy(model(x.to(device)), y.to(device))

    train(probe, batches, loss_fn, TrainConfig(steps=steps, lr=lr, weight_decay=0.0,
                                               warmup_steps=0, seed=seed, progress=False))
    return probe.eval()


def fit_linear_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                     l2: float = 1e-2, iterations: int = 50) -> LayerProbe:
    """A linear probe (logistic regression) on one layer's features (N, 1, D), fitted to
    convergence on the whole set at once with L-BFGS, as scikit-learn's LogisticRegression does.

    The loss is convex, so the result does not depend on a seed or a learning rate; ``l2`` (the
    weight penalty) is the one setting, to be chosen on held-out data. Much faster than
    :func:`fit_probe`'s minibatch loop when the features fit in memory, which is what a learning
    curve with many small fits needs.
    """
    if features.shape[0] != labels.shape[0]:
        raise ValueError(f"{features.shape[0]} feature rows for {labels.shape[0]} labels.")
    if features.dim() != 3 or features.shape[1] != 1:
        raise ValueError(f"features must be (N, 1, D), one layer; got {tuple(features.shape)}.")
    probe = LayerProbe(1, features.shape[2], num_classes, layer=0, dropout=0.0)
    torch.nn.init.zeros_(probe.classifier.weight)
    torch.nn.init.zeros_(probe.classifier.bias)
    x = F.layer_norm(features[:, 0].float(), features.shape[-1:])  # what LayerProbe reads
    optimizer = torch.optim.LBFGS(probe.classifier.parameters(), max_iter=iterations,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(probe.classifier(x), labels)
        loss = loss + l2 * probe.classifier.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return probe.eval()
