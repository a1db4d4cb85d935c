"""A small item-response fit: how hard each item is and how able each model is, from many verdicts.

Two-parameter logistic model (2PL) with a known guessing floor per verdict:

    P(model m answers item i right) = c + (1 - c) * sigmoid(a_i * (theta_m + delta_{m,g(i)} - b_i))

- b_i: the item's difficulty; a_i > 0: how sharply it separates weaker from stronger models.
- theta_m: the model's ability; delta_{m,g}: its small, shrunk deviation in the item's group (math,
  code, knowledge, chat), so a code model is not assumed to be as good at law.
- c: the chance of a right answer without knowing it (1 / options for multiple choice, else 0).

Fitted jointly (maximum a posteriori, L-BFGS) with Gaussian priors that keep it stable where data are
thin: b_i ~ N(mu_s, sigma_b) around the mean of its prior group s (its source), so an item with few
verdicts stays near its source's mean; log a_i ~ N(0, sigma_log_a); theta, delta, mu centred at 0.
Written here because the PyPI options do not fit: girth (0.8.0, unmaintained since 2021) has no
per-source priors or per-verdict guessing, and py-irt needs pyro on top of torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit


@dataclass(frozen=True)
class Verdicts:
    """One entry per verdict (n,). Items and models are indices; outcomes may be judged shares."""

    item: np.ndarray  # (n,) int
    model: np.ndarray  # (n,) int
    outcome: np.ndarray  # (n,) float in [0, 1]: 1 right, 0 wrong
    guess: np.ndarray  # (n,) float in [0, 1): the guessing floor c of that verdict

    def __post_init__(self) -> None:
        n = len(self.item)
        if not len(self.model) == len(self.outcome) == len(self.guess) == n:
            raise ValueError("item, model, outcome and guess must have one entry per verdict")
        if n and not (np.all((self.outcome >= 0) & (self.outcome <= 1)) and np.all(self.guess < 1)):
            raise ValueError("outcomes must lie in [0, 1] and guessing floors below 1")


@dataclass(frozen=True)
class Priors:
    sigma_b: float = 1.5  # spread of difficulties inside one prior group: the shrinkage strength
    sigma_theta: float = 2.0
    sigma_delta: float = 0.5  # a model's ability differs a little between groups
    sigma_log_a: float = 0.5
    sigma_mu: float = 3.0


@dataclass(frozen=True)
class ItemLayout:
    """Which prior group (source) and which ability group (math, code, ...) each item belongs to."""

    prior_group: np.ndarray  # (items,) int in [0, n_prior_groups)
    ability_group: np.ndarray  # (items,) int in [0, n_ability_groups)
    n_models: int
    n_prior_groups: int
    n_ability_groups: int

    @property
    def n_items(self) -> int:
        return len(self.prior_group)


@dataclass(frozen=True)
class IrtFit:
    theta: np.ndarray  # (models,)
    delta: np.ndarray  # (models, ability groups)
    b: np.ndarray  # (items,) posterior mode
    b_sd: np.ndarray  # (items,) Laplace posterior sd of b: large where verdicts are few
    a: np.ndarray  # (items,)
    mu: np.ndarray  # (prior groups,) mean difficulty of each group
    evidence: np.ndarray  # (items,) number of verdicts
    layout: ItemLayout
    converged: bool

    def p_solve(self, items: np.ndarray, models: np.ndarray) -> np.ndarray:
        """P(model knows item) without guessing, averaged over the uncertainty of b. (n,) each.

        The probit approximation E[sigmoid(x)] ~ sigmoid(mean / sqrt(1 + pi var / 8)) with
        x = a (ability - b): an item known from few verdicts gets a less certain answer.
        """
        a, sd = self.a[items], self.b_sd[items]
        ability = self.theta[models] + self.delta[models, self.layout.ability_group[items]]
        z = a * (ability - self.b[items])
        return expit(z / np.sqrt(1.0 + np.pi * (a * sd) ** 2 / 8.0))


class _Params:
    """The flat parameter vector L-BFGS sees, cut into named views (no copies)."""

    def __init__(self, layout: ItemLayout) -> None:
        m, i = layout.n_models, layout.n_items
        sizes = {
            "theta": m,
            "delta": m * layout.n_ability_groups,
            "b": i,
            "log_a": i,
            "mu": layout.n_prior_groups,
        }
        self.slices, start = {}, 0
        for name, size in sizes.items():
            self.slices[name] = slice(start, start + size)
            start += size
        self.size = start
        self.layout = layout

    def split(self, x: np.ndarray) -> dict[str, np.ndarray]:
        views = {name: x[s] for name, s in self.slices.items()}
        views["delta"] = views["delta"].reshape(self.layout.n_models, self.layout.n_ability_groups)
        return views


def _log_likelihood_terms(z: np.ndarray, y: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Negative log-likelihood per verdict and its derivative in z. (n,) each, stable for any z."""
    s = expit(z)
    p = c + (1 - c) * s
    log_p = np.where(c > 0, np.log(np.maximum(p, 1e-300)), -np.logaddexp(0.0, -z))
    log_not_p = np.log1p(-c) - np.logaddexp(0.0, z)
    nll = -(y * log_p + (1 - y) * log_not_p)
    # d nll / dz = (p - y) * s / p: equals (s - y) when c = 0, taken as such so that it stays -y where s
    # underflows (z below about -700), not 0
    grad_z = np.where(c > 0, (p - y) * s / np.maximum(p, 1e-300), s - y)
    return nll, grad_z


def _objective(x: np.ndarray, params: _Params, v: Verdicts, priors: Priors) -> tuple[float, np.ndarray]:
    """Negative log posterior and its gradient (flat, like x)."""
    layout = params.layout
    p = params.split(x)
    a = np.exp(p["log_a"])
    group = layout.ability_group[v.item]
    gap = p["theta"][v.model] + p["delta"][v.model, group] - p["b"][v.item]  # (n,)
    z = a[v.item] * gap
    nll, grad_z = _log_likelihood_terms(z, v.outcome, v.guess)

    grad = np.zeros_like(x)
    g = params.split(grad)
    g_ability = grad_z * a[v.item]  # d nll / d ability of each verdict
    g["theta"][:] = np.bincount(v.model, g_ability, layout.n_models)
    flat_cell = v.model * layout.n_ability_groups + group
    g["delta"][:] = np.bincount(flat_cell, g_ability, g["delta"].size).reshape(g["delta"].shape)
    g["b"][:] = -np.bincount(v.item, g_ability, layout.n_items)
    g["log_a"][:] = np.bincount(v.item, grad_z * z, layout.n_items)

    centred_b = p["b"] - p["mu"][layout.prior_group]
    prior = (
        (p["theta"] ** 2).sum() / (2 * priors.sigma_theta**2)
        + (p["delta"] ** 2).sum() / (2 * priors.sigma_delta**2)
        + (centred_b**2).sum() / (2 * priors.sigma_b**2)
        + (p["log_a"] ** 2).sum() / (2 * priors.sigma_log_a**2)
        + (p["mu"] ** 2).sum() / (2 * priors.sigma_mu**2)
    )
    g["theta"] += p["theta"] / priors.sigma_theta**2
    g["delta"] += p["delta"] / priors.sigma_delta**2
    g["b"] += centred_b / priors.sigma_b**2
    g["log_a"] += p["log_a"] / priors.sigma_log_a**2
    g["mu"][:] = p["mu"] / priors.sigma_mu**2 - np.bincount(
        layout.prior_group, centred_b / priors.sigma_b**2, layout.n_prior_groups
    )
    return float(nll.sum() + prior), grad


def _start(params: _Params, v: Verdicts) -> np.ndarray:
    """b starts at minus the logit of each item's (smoothed) share of right answers; the rest at 0."""
    x = np.zeros(params.size)
    n = params.layout.n_items
    right = np.bincount(v.item, v.outcome, n) + 0.5
    seen = np.bincount(v.item, minlength=n) + 1.0
    params.split(x)["b"][:] = -np.log(right / (seen - right))
    return x


def _b_sd(fit_x: dict[str, np.ndarray], layout: ItemLayout, v: Verdicts, priors: Priors) -> np.ndarray:
    """Laplace sd of each b_i: 1 / sqrt(prior precision + Fisher information of its verdicts)."""
    a = np.exp(fit_x["log_a"])
    group = layout.ability_group[v.item]
    z = a[v.item] * (fit_x["theta"][v.model] + fit_x["delta"][v.model, group] - fit_x["b"][v.item])
    s = expit(z)
    p = v.guess + (1 - v.guess) * s
    info = a[v.item] ** 2 * (1 - v.guess) * s**2 * (1 - s) / np.maximum(p, 1e-300)  # (n,)
    precision = np.bincount(v.item, info, layout.n_items) + 1.0 / priors.sigma_b**2
    return 1.0 / np.sqrt(precision)


def fit_irt(v: Verdicts, layout: ItemLayout, priors: Priors | None = None, max_iter: int = 2000) -> IrtFit:
    """Joint MAP fit of every item, model and group. Items without verdicts keep their group's prior."""
    priors = priors or Priors()
    params = _Params(layout)
    result = minimize(
        _objective,
        _start(params, v),
        args=(params, v, priors),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "maxcor": 20},
    )
    p = params.split(result.x)
    return IrtFit(
        theta=p["theta"].copy(),
        delta=p["delta"].copy(),
        b=p["b"].copy(),
        b_sd=_b_sd(p, layout, v, priors),
        a=np.exp(p["log_a"]),
        mu=p["mu"].copy(),
        evidence=np.bincount(v.item, minlength=layout.n_items),
        layout=layout,
        converged=bool(result.success),
    )
