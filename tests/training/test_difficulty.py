"""The in-house 2PL item-response fit (training/difficulty.py) against data whose truth is known:
simulated verdicts recover difficulty and ability, the guessing floor keeps lucky guesses from
passing for knowledge, thin items shrink to their source's mean, and the gradient L-BFGS follows is
the gradient of the objective it minimises."""

import numpy as np
import pytest
from scipy.special import expit
from scipy.stats import spearmanr
from tierwise.training.difficulty import (
    ItemLayout,
    Priors,
    Verdicts,
    _log_likelihood_terms,
    _objective,
    _Params,
    fit_irt,
)

N_ITEMS, N_MODELS = 300, 30


def simulate(seed: int, guess: float = 0.0) -> dict[str, np.ndarray]:
    """Every model answers every item; right with P = c + (1 - c) sigmoid(a (theta - b))."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(0.0, 1.5, N_MODELS)
    b = rng.normal(0.0, 1.5, N_ITEMS)
    a = np.exp(rng.normal(0.3, 0.3, N_ITEMS))
    item, model = (g.ravel() for g in np.meshgrid(np.arange(N_ITEMS), np.arange(N_MODELS), indexing="ij"))
    p_right = guess + (1.0 - guess) * expit(a[item] * (theta[model] - b[item]))
    outcome = (rng.random(item.size) < p_right).astype(float)
    return {"theta": theta, "b": b, "a": a, "item": item, "model": model, "outcome": outcome}


def one_group_layout(n_items: int, n_models: int) -> ItemLayout:
    zeros = np.zeros(n_items, dtype=np.int64)
    return ItemLayout(zeros, zeros, n_models, n_prior_groups=1, n_ability_groups=1)


def test_a_simulated_matrix_gives_back_item_difficulty_and_model_ability():
    sim = simulate(seed=0)
    verdicts = Verdicts(sim["item"], sim["model"], sim["outcome"], np.zeros(sim["item"].size))
    fit = fit_irt(verdicts, one_group_layout(N_ITEMS, N_MODELS))
    assert fit.converged
    assert spearmanr(fit.b, sim["b"]).statistic >= 0.9
    assert spearmanr(fit.theta, sim["theta"]).statistic >= 0.9
    assert np.all(fit.evidence == N_MODELS)


def test_the_guessing_floor_keeps_lucky_guesses_from_looking_like_knowledge():
    """Four-option questions (c = 0.25): a model that cannot solve an item is still right a quarter
    of the time. Fitted with that floor, P(model knows item) of such pairs stays near 0 and the
    whole P(knows) matrix is closer to the truth than a fit that takes the lucky guesses at face value."""
    sim = simulate(seed=1, guess=0.25)
    item, model, outcome = sim["item"], sim["model"], sim["outcome"]
    layout = one_group_layout(N_ITEMS, N_MODELS)
    with_floor = fit_irt(Verdicts(item, model, outcome, np.full(item.size, 0.25)), layout)
    without_floor = fit_irt(Verdicts(item, model, outcome, np.zeros(item.size)), layout)
    assert with_floor.converged and without_floor.converged

    knows = expit(sim["a"][item] * (sim["theta"][model] - sim["b"][item]))
    hopeless = knows < 0.05
    assert hopeless.sum() > 500  # the simulation does hold many pairs that only a guess gets right
    assert with_floor.p_solve(item, model)[hopeless].mean() < 0.12
    assert without_floor.p_solve(item, model)[hopeless].mean() > 0.18

    error_with = np.abs(with_floor.p_solve(item, model) - knows).mean()
    error_without = np.abs(without_floor.p_solve(item, model) - knows).mean()
    assert error_with < error_without - 0.03


def shrinkage_fit() -> tuple[object, dict[str, int]]:
    """Two sources: a hard one (b ~ N(2, 0.5)) and an easy one (b ~ N(-1, 0.5)), 60 items each
    answered by all 30 models; then three more items of the hard source:
    - `thin`: 2 verdicts, the 15th strongest model right and the 16th wrong (share right 1/2);
    - `thick`: 30 verdicts, the 15 strongest right and the 15 weakest wrong (share right 1/2);
    - `unseen`: no verdict at all."""
    rng = np.random.default_rng(2)
    theta = np.sort(rng.normal(0.0, 1.5, N_MODELS))[::-1]  # model 0 is the strongest
    n_each = 60
    b = np.concatenate([rng.normal(2.0, 0.5, n_each), rng.normal(-1.0, 0.5, n_each)])
    prior_group = np.repeat([0, 1], n_each)
    item, model = (g.ravel() for g in np.meshgrid(np.arange(2 * n_each), np.arange(N_MODELS), indexing="ij"))
    outcome = (rng.random(item.size) < expit(theta[model] - b[item])).astype(float)

    thin, thick, unseen = 2 * n_each, 2 * n_each + 1, 2 * n_each + 2
    item = np.concatenate([item, [thin, thin], np.full(N_MODELS, thick)])
    model = np.concatenate([model, [14, 15], np.arange(N_MODELS)])
    outcome = np.concatenate([outcome, [1.0, 0.0], (np.arange(N_MODELS) < 15).astype(float)])
    prior_group = np.concatenate([prior_group, [0, 0, 0]])
    layout = ItemLayout(
        prior_group, np.zeros_like(prior_group), N_MODELS, n_prior_groups=2, n_ability_groups=1
    )
    fit = fit_irt(Verdicts(item, model, outcome, np.zeros(item.size)), layout)
    return fit, {"thin": thin, "thick": thick, "unseen": unseen}


@pytest.fixture(scope="module")
def shrunk() -> tuple[object, dict[str, int]]:
    return shrinkage_fit()


def test_the_prior_groups_learn_their_sources_mean_difficulty(shrunk):
    fit, _ = shrunk
    assert fit.converged
    assert fit.mu[0] > fit.mu[1] + 2.0


def test_an_item_with_few_verdicts_stays_nearer_its_sources_mean_and_less_certain(shrunk):
    fit, at = shrunk
    mu = fit.mu[0]
    thin, thick = fit.b[at["thin"]], fit.b[at["thick"]]
    assert fit.evidence[at["thin"]] == 2 and fit.evidence[at["thick"]] == N_MODELS
    # Half right by the middle models places both below the hard source's mean; the thin one less so.
    assert thick < thin < mu
    assert abs(thin - mu) < abs(thick - mu)
    assert fit.b_sd[at["thin"]] > fit.b_sd[at["thick"]]


def test_an_item_without_verdicts_keeps_its_sources_mean_and_the_prior_sd(shrunk):
    fit, at = shrunk
    assert fit.evidence[at["unseen"]] == 0
    assert fit.b[at["unseen"]] == pytest.approx(fit.mu[0], abs=0.01)  # L-BFGS stops near, not at, the mode
    assert fit.b_sd[at["unseen"]] == pytest.approx(Priors().sigma_b)


def central_differences(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    grad = np.empty_like(x)
    for k in range(x.size):
        step = np.zeros_like(x)
        step[k] = h
        grad[k] = (f(x + step) - f(x - step)) / (2 * h)
    return grad


def test_the_objectives_gradient_is_its_finite_difference_gradient():
    """Several models, ability groups and prior groups, guessing floors and judged shares, one item
    without verdicts, at a random point: the analytic gradient matches central differences."""
    rng = np.random.default_rng(3)
    n_items, n_models, n = 7, 4, 40
    layout = ItemLayout(
        prior_group=np.array([0, 0, 1, 1, 2, 2, 2]),
        ability_group=np.array([0, 1, 0, 1, 0, 1, 1]),
        n_models=n_models,
        n_prior_groups=3,
        n_ability_groups=2,
    )
    verdicts = Verdicts(
        item=rng.integers(0, n_items - 1, n),  # the last item has no verdict
        model=rng.integers(0, n_models, n),
        outcome=rng.choice([0.0, 1.0, 0.3], n),
        guess=rng.choice([0.0, 0.25, 0.2], n),
    )
    params = _Params(layout)
    priors = Priors()
    x = rng.normal(0.0, 0.8, params.size)

    _, analytic = _objective(x, params, verdicts, priors)
    numeric = central_differences(lambda y: _objective(y, params, verdicts, priors)[0], x)
    assert np.all(analytic[params.slices["b"]][-1:] != 0)  # the unseen item still feels its prior
    assert np.linalg.norm(analytic - numeric) <= 1e-4 * np.linalg.norm(numeric)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("guess", [0.0, 0.25])
@pytest.mark.parametrize("outcome", [0.0, 1.0, 0.4])
def test_the_per_verdict_gradient_holds_where_the_logistic_underflows(guess, outcome):
    """z far below -700 (a line search may try a large discrimination): sigmoid(z) underflows, but
    d nll / dz is still sigmoid(z) - y without a floor (about -y), and about 0 with one (P = c)."""
    z = np.array([-800.0, -720.0, -40.0, -1.0, 0.0, 2.0, 40.0, 720.0, 800.0])
    y, c = np.full(z.size, outcome), np.full(z.size, guess)
    _, grad = _log_likelihood_terms(z, y, c)
    h = 1e-4
    numeric = (_log_likelihood_terms(z + h, y, c)[0] - _log_likelihood_terms(z - h, y, c)[0]) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7)
