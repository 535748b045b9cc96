"""Metrics learned from the index's own augmented renders (Fisher LDA, a small MLP), no
labels needed.

The image index holds, for every thumbnail, its clean render and several degraded photo-like
renders. Which descriptor dimensions survive degradation is exactly what those groups show:
the spread *within* a thumbnail's renders is what photos do to a descriptor, the spread
*between* thumbnails is what tells pages apart. Fisher's linear discriminant keeps the
directions with the largest between / within ratio: whiten the within-group scatter
(regularised towards its mean variance, since a few hundred groups estimate it), then keep
the leading principal directions of the group means. This is the supervised whitening of
image-retrieval practice (e.g. Radenović et al., "Fine-tuning CNN image retrieval with no
human annotation", 2018), with the grouping given for free by the augmentation.

Works for any corpus: the groups are the corpus's own thumbnails. Fitting is a few eigen-
decompositions of [dim, dim] matrices (milliseconds); the matrix is cached with the index.
"""

from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows of unit length (float32), so that inner products are cosines."""
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def fit_lda(
    vectors: np.ndarray, groups: np.ndarray, dim: int, reg: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], projection [D, d]) with d = min(dim, n_groups - 1, D).

    `vectors` [N, D], `groups` [N] ints (the thumbnail each render belongs to); `reg`: share
    of the mean within-group variance added to every direction (shrinkage)."""
    labels, inverse = np.unique(groups, return_inverse=True)
    if len(labels) < 2:
        raise ValueError("fit_lda needs at least two groups")
    x = vectors.astype(np.float64)
    mean = x.mean(axis=0)
    counts = np.bincount(inverse).astype(np.float64)
    group_means = np.zeros((len(labels), x.shape[1]))
    np.add.at(group_means, inverse, x)
    group_means /= counts[:, None]
    within = x - group_means[inverse]
    scatter_w = within.T @ within / len(x)
    scatter_w += reg * np.trace(scatter_w) / len(scatter_w) * np.eye(len(scatter_w))
    centred = group_means - mean
    scatter_b = centred.T @ centred / len(labels)
    eigval, eigvec = np.linalg.eigh(scatter_w)
    whiten = eigvec / np.sqrt(np.maximum(eigval, 1e-12))  # W^T S_w W = I
    between_val, between_vec = np.linalg.eigh(whiten.T @ scatter_b @ whiten)
    keep = min(dim, len(labels) - 1, x.shape[1])
    order = np.argsort(-between_val)[:keep]
    return mean.astype(np.float32), (whiten @ between_vec[:, order]).astype(np.float32)


def project(vectors: np.ndarray, mean: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Rows mapped into the learned space and L2-normalised (inner product = cosine)."""
    return l2_normalize((vectors - mean) @ matrix)


def group_centroids(vectors: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """[n_groups, d] normalised mean of each group's (normalised) vectors."""
    sums = np.zeros((n_groups, vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, groups, vectors)
    return l2_normalize(sums)


def fit_mlp_metric(
    vectors: np.ndarray,
    groups: np.ndarray,
    dim: int = 64,
    *,
    hidden: int = 512,
    epochs: int = 60,
    dropout: float = 0.3,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A small nonlinear metric, the same idea as `fit_lda`: learned from the groups of
    renders alone (which thumbnail each render shows), here with one hidden layer and a
    cosine softmax over the groups (normalised-softmax metric learning, e.g. Zhai & Wu,
    "Classification is a strong baseline for deep metric learning", 2019). Returns numpy
    arrays for `apply_mlp_metric`, so searching needs no torch.

    Trains in seconds to a minute on a CPU (15k renders x 60 epochs), seeded."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    x = torch.tensor(vectors, dtype=torch.float32)
    labels, inverse = np.unique(groups, return_inverse=True)
    y = torch.tensor(inverse, dtype=torch.long)
    mean, std = x.mean(0), x.std(0) + 1e-4
    x = (x - mean) / std
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = torch.nn.Sequential(
            torch.nn.Dropout(dropout),
            torch.nn.Linear(x.shape[1], hidden),
            torch.nn.ReLU(),
            torch.nn.Dropout(dropout),
            torch.nn.Linear(hidden, dim),
        )
        head = torch.nn.Parameter(torch.randn(len(labels), dim, generator=generator) * 0.1)
        optimizer = torch.optim.AdamW([*net.parameters(), head], lr=2e-3, weight_decay=1e-3)
        net.train()
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), 256):
                batch = order[start : start + 256]
                z = torch.nn.functional.normalize(net(x[batch]), dim=1)
                # Scale 16: a cosine softmax needs a temperature to be confident at all.
                logits = 16.0 * z @ torch.nn.functional.normalize(head, dim=1).T
                loss = torch.nn.functional.cross_entropy(logits, y[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    first, second = net[1], net[4]
    return {
        "mlp_mean": mean.numpy(),
        "mlp_std": std.numpy(),
        "mlp_w1": first.weight.detach().numpy().T.copy(),  # [D, hidden]
        "mlp_b1": first.bias.detach().numpy().copy(),
        "mlp_w2": second.weight.detach().numpy().T.copy(),  # [hidden, dim]
        "mlp_b2": second.bias.detach().numpy().copy(),
    }


def apply_mlp_metric(vectors: np.ndarray, metric: dict[str, np.ndarray]) -> np.ndarray:
    """Rows through the learned network (eval mode), L2-normalised."""
    x = (vectors - metric["mlp_mean"]) / metric["mlp_std"]
    hidden = np.maximum(x @ metric["mlp_w1"] + metric["mlp_b1"], 0.0)
    return l2_normalize(hidden @ metric["mlp_w2"] + metric["mlp_b2"])
