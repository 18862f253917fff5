"""Measurements of trained features against a known truth: the studies' judges (numpy / torch, no model code).

- :func:`mine_judge`: a FRESH mutual-information estimator (MINE, Belghazi et al. 2018, DV bound),
  trained after the fact on one set of (x, z) pairs and scored on another; the judge of Xie et al.'s
  claim that the MINE term lowers I(f^e; f^d) (eqs. 3, 7-9).
- :func:`mean_abs_cosine`: MEDN's per-sample α = <f̂_m, f̂_e> (eqs. 5-6), the quantity its orthogonal
  loss (eq. 8) acts on, as mean |α|.
- :func:`mean_squared_cross_correlation`: mean over every (motion dim, emotion dim) pair of the
  squared Pearson correlation across samples: a dimension-wise (batch) view of the same decoupling.
- :func:`macro_auc`: mean ROC AUC over the AUs that occur and do not occur among the samples.
- :func:`au_probe_scores`: a linear AU probe fitted on training features, scored on held-out ones.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

# The fresh MINE's settings (our choices), set on planted Gaussians at the studies' sample sizes (40 fit
# and 40 scored pairs of 64-d features sharing a 4-d latent): with 400 steps on the full features it
# overfits the fit pairs and scores independent features at about -7 nats; reduced to 4 principal
# components per side and trained 100 steps it scores independent features near 0 (-0.1) and grows with
# the latent correlation (rho 0.5: ~0.3, rho 0.9: ~1.7 nats; a lower bound).
JUDGE_STEPS = 100  # full-batch Adam steps
JUDGE_HIDDEN = 64  # width of its two hidden layers
JUDGE_LR = 1e-3
JUDGE_COMPONENTS = 4  # principal components kept per side (fitted on the fit pairs)


def standardise(fit: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays standardised per column with the fit array's mean and std (constant columns: std 1)."""
    mean, std = fit.mean(0), fit.std(0)
    std = np.where(std > 1e-8, std, 1.0)
    return (fit - mean) / std, (other - mean) / std


def principal_components(fit: np.ndarray, other: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays projected on the first k principal axes of the fit array (unchanged if k >= its width)."""
    if k >= fit.shape[1]:
        return fit, other
    mean = fit.mean(0)
    axes = np.linalg.svd(fit - mean, full_matrices=False)[2][:k]
    return (fit - mean) @ axes.T, (other - mean) @ axes.T


def mine_judge(x_fit: np.ndarray, z_fit: np.ndarray, x_eval: np.ndarray, z_eval: np.ndarray, seed: int = 0,
               steps: int = JUDGE_STEPS, components: int = JUDGE_COMPONENTS) -> float:
    """DV lower bound on I(X; Z) in nats of a statistics network T trained from scratch on the fit pairs
    (full batch, marginals by a fresh shuffle of z each step), scored on the eval pairs: mean T over the
    eval pairs minus log of the mean of exp T over every eval pair (x_i, z_j), i != j (the product of
    the marginals of the eval sample). Scoring on pairs T never saw keeps its overfitting from
    inflating the estimate (it can then come out below 0 for independent features). Each side is
    reduced to its first `components` principal components and standardised, both fitted on the fit
    part. T: Linear-ReLU-Linear-ReLU-Linear (our choice; Xie et al.'s MINE, Table 3, has one hidden
    layer of 64)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    xf, xe = (torch.as_tensor(a, dtype=torch.float32)
              for a in standardise(*principal_components(x_fit, x_eval, components)))
    zf, ze = (torch.as_tensor(a, dtype=torch.float32)
              for a in standardise(*principal_components(z_fit, z_eval, components)))
    statistics = nn.Sequential(nn.Linear(xf.shape[1] + zf.shape[1], JUDGE_HIDDEN), nn.ReLU(),
                               nn.Linear(JUDGE_HIDDEN, JUDGE_HIDDEN), nn.ReLU(), nn.Linear(JUDGE_HIDDEN, 1))
    optimiser = torch.optim.Adam(statistics.parameters(), lr=JUDGE_LR)

    def score(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return statistics(torch.cat([x, z], dim=-1)).squeeze(-1)

    for _ in range(steps):
        shuffled = zf[torch.randperm(len(zf), generator=generator)]
        bound = score(xf, zf).mean() - (torch.logsumexp(score(xf, shuffled), 0) - math.log(len(xf)))
        optimiser.zero_grad()
        (-bound).backward()
        optimiser.step()
    with torch.no_grad():
        n = len(xe)
        pairs = score(xe.repeat_interleave(n, 0), ze.repeat(n, 1)).view(n, n)
        off_diagonal = pairs[~torch.eye(n, dtype=torch.bool)]
        return float(pairs.diagonal().mean() - (torch.logsumexp(off_diagonal, 0) - math.log(len(off_diagonal))))


def mean_abs_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over samples of |cos(a_i, b_i)| (MEDN eq. 6's α, in absolute value)."""
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return float(np.mean(np.abs(cos)))


def mean_squared_cross_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over every column pair (i of a, j of b) of the squared Pearson correlation across the rows;
    a constant column correlates 0 with everything."""
    ac, bc = a - a.mean(0), b - b.mean(0)
    an, bn = np.linalg.norm(ac, axis=0), np.linalg.norm(bc, axis=0)
    an, bn = np.where(an > 1e-12, an, np.inf), np.where(bn > 1e-12, bn, np.inf)
    return float(np.mean(((ac / an).T @ (bc / bn)) ** 2))


def macro_auc(targets: np.ndarray, scores: np.ndarray) -> float:
    """Mean ROC AUC over the columns (AUs) with both classes among the rows; NaN if none has."""
    from sklearn.metrics import roc_auc_score

    aucs = [roc_auc_score(targets[:, j], scores[:, j]) for j in range(targets.shape[1])
            if 0 < targets[:, j].sum() < len(targets)]
    return float(np.mean(aucs)) if aucs else math.nan


def au_probe_scores(fit_features: np.ndarray, fit_aus: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Per AU, the probability a logistic regression (L2, C=1, standardised features; our choice) fitted
    on the fit rows gives the other rows; an AU constant in the fit rows predicts that constant."""
    from sklearn.linear_model import LogisticRegression

    fit, other = standardise(fit_features, features)
    scores = np.empty((len(features), fit_aus.shape[1]))
    for j in range(fit_aus.shape[1]):
        column = fit_aus[:, j] > 0.5
        if column.all() or not column.any():
            scores[:, j] = float(column[0])
            continue
        scores[:, j] = LogisticRegression(max_iter=2000).fit(fit, column).predict_proba(other)[:, 1]
    return scores
