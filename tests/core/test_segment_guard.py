"""Per-segment risk control, the pure numbers (tierwise.core.segment_guard): the exact one-sided bound,
the judge-noise correction, cold start and the fixed-sequence choice of a setting along PATH."""

import math

import numpy as np
import pytest
from tierwise.core.segment_guard import (
    DELTAS,
    PATH,
    GuardConfig,
    GuardSetting,
    SegmentEvidence,
    bound_of,
    choose_setting,
    clean_record_judged,
    clopper_pearson_upper,
    corrected,
    regularized_beta,
    risk_counts,
    setting_tiers,
    under_from_range,
    under_from_verdicts,
)

Q = 0.7  # the model's q in these tests (3 tiers, no offsets)
CONFIG = GuardConfig()  # alpha 0.05, confidence 0.95, cold-start margin 0.05, no judge noise

# cumulative 0.6 / 0.9: fast while q <= 0.6 (delta <= -0.1), balanced up to q 0.9 (delta <= +0.2),
# frontier above (delta +0.225 and +0.25)
MIDDLE = [0.6, 0.3, 0.1]
# cumulative 0.97: fast for every setting on the path, however high the shift
SURE_FAST = [0.97, 0.02, 0.01]


def evidence(rows, under, noisy=None):
    """SegmentEvidence of len(rows) judged requests: `under` one (fast, balanced) pair per row."""
    probabilities = np.asarray(rows, dtype=np.float64)
    under = np.asarray(under, dtype=bool).reshape(len(rows), 2)
    noisy = np.zeros(len(rows), dtype=bool) if noisy is None else np.asarray(noisy, dtype=bool)
    return SegmentEvidence(probabilities, under, noisy)


def repeat(row, under, n):
    return evidence([row] * n, [under] * n)


# --- the bound -------------------------------------------------------------------------------------


def test_zero_failures_in_59_is_just_under_five_percent():
    bound = clopper_pearson_upper(0, 59, 0.95)
    assert bound == pytest.approx(1 - 0.05 ** (1 / 59), abs=1e-9)  # (1 - p)^59 = 0.05
    assert 0.049 < bound < 0.05
    assert clopper_pearson_upper(0, 58, 0.95) > 0.05  # one fewer verdict cannot pass alpha 0.05


@pytest.mark.parametrize(
    ("k", "n", "confidence"),
    [
        (0, 10, 0.95),
        (1, 10, 0.95),
        (3, 59, 0.95),
        (5, 100, 0.9),
        (20, 200, 0.99),
        (58, 2000, 0.95),
        (9, 10, 0.95),
    ],
)
def test_clopper_pearson_matches_the_beta_quantile(k, n, confidence):
    stats = pytest.importorskip("scipy.stats")
    expected = float(stats.beta.ppf(confidence, k + 1, n - k))
    assert clopper_pearson_upper(k, n, confidence) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(("a", "b", "x"), [(1, 10, 0.1), (4, 56, 0.05), (21, 180, 0.3), (41, 2960, 0.9)])
def test_the_regularized_incomplete_beta_matches_scipy(a, b, x):
    stats = pytest.importorskip("scipy.stats")
    assert regularized_beta(a, b, x) == pytest.approx(float(stats.beta.cdf(x, a, b)), rel=1e-9, abs=1e-12)


def test_the_regularized_incomplete_beta_edges():
    assert regularized_beta(2, 3, 0.0) == 0.0 and regularized_beta(2, 3, 1.0) == 1.0


def test_the_bound_grows_with_failures_and_shrinks_with_verdicts():
    by_k = [clopper_pearson_upper(k, 100, 0.95) for k in range(0, 30)]
    assert all(a < b for a, b in zip(by_k, by_k[1:], strict=False))
    by_n = [clopper_pearson_upper(3, n, 0.95) for n in (10, 30, 59, 100, 500, 2000)]
    assert all(a > b for a, b in zip(by_n, by_n[1:], strict=False))
    assert clopper_pearson_upper(3, 100, 0.99) > clopper_pearson_upper(3, 100, 0.95)
    for k in range(0, 30):
        assert clopper_pearson_upper(k, 100, 0.95) >= k / 100


def test_no_evidence_or_all_failures_bound_at_one():
    assert clopper_pearson_upper(0, 0) == 1.0 and clopper_pearson_upper(10, 10) == 1.0
    assert bound_of(0, 0, 0, CONFIG) == (0.0, 1.0)


# --- the judge-noise correction ---------------------------------------------------------------------


def test_correction_formula():
    assert corrected(0.116, 1.0, 0.1) == pytest.approx(0.02)
    assert corrected(0.05, 1.0, 0.0) == 0.05  # a perfect judge: nothing to correct
    assert corrected(0.01, 1.0, 0.1) == 0.0  # never negative
    assert corrected(0.1, 0.5, 0.1) == pytest.approx((0.1 - 0.05) / 0.8)  # only the noisy share


def flipped_verdicts(rng, n, true_rate, error_rate):
    truth = rng.random(n) < true_rate
    return truth ^ (rng.random(n) < error_rate)


def test_a_noisy_judge_is_corrected_back_to_the_true_rate():
    rng = np.random.default_rng(23)
    config = GuardConfig(judge_error_rate=0.1)
    n = 4000
    observed = flipped_verdicts(rng, n, 0.02, 0.1)
    k = int(observed.sum())
    assert k / n > 0.1  # read raw, a 2% segment looks like ~12%
    estimate, upper = bound_of(k, n, n, config)
    assert estimate == pytest.approx(0.02, abs=0.015)
    assert estimate < upper < 0.05


def test_the_corrected_bound_covers_the_truth():
    rng = np.random.default_rng(7)
    config = GuardConfig(judge_error_rate=0.1, confidence=0.95)
    n, trials, covered = 500, 200, 0
    for _ in range(trials):
        k = int(flipped_verdicts(rng, n, 0.02, 0.1).sum())
        covered += bound_of(k, n, n, config)[1] >= 0.02
    assert covered >= 0.9 * trials


def test_noise_is_counted_on_the_requests_a_setting_routes_below_the_top():
    rows = [MIDDLE] * 10
    under = [(False, True)] * 10
    noisy = [True] * 5 + [False] * 5
    ev = evidence(rows, under, noisy)
    assert risk_counts(ev, GuardSetting(delta=0.0), Q, None) == (10, 5)  # balanced: every row under, 5 noisy
    assert risk_counts(ev, GuardSetting(delta=-0.2), Q, None) == (0, 5)  # fast: none under
    assert risk_counts(ev, GuardSetting(delta=0.25), Q, None) == (0, 0)  # frontier: nothing below the top
    assert risk_counts(ev, GuardSetting(top_only=True), Q, None) == (0, 0)


# --- the path, cold start and the choice -------------------------------------------------------------


def test_the_path_runs_from_top_only_to_the_cheapest_shift():
    assert PATH[0].top_only and not any(s.top_only for s in PATH[1:])
    assert [s.delta for s in PATH[1:]] == list(DELTAS)
    assert DELTAS[0] == 0.25 and DELTAS[-1] == -0.75 and len(DELTAS) == 41
    assert all(a > b for a, b in zip(DELTAS, DELTAS[1:], strict=False))
    assert PATH[0].label() == "top_only" and GuardSetting(delta=-0.1).label() == "q-0.100"


def test_setting_tiers_follow_the_shift():
    probs = np.asarray([MIDDLE])
    assert setting_tiers(GuardSetting(delta=-0.1), probs, Q, None).tolist() == [0]
    assert setting_tiers(GuardSetting(delta=-0.075), probs, Q, None).tolist() == [1]
    assert setting_tiers(GuardSetting(delta=0.2), probs, Q, None).tolist() == [1]
    assert setting_tiers(GuardSetting(delta=0.225), probs, Q, None).tolist() == [2]
    assert setting_tiers(GuardSetting(top_only=True), np.asarray([SURE_FAST]), Q, None).tolist() == [2]


def test_required_judged_is_59_at_alpha_five_percent():
    assert CONFIG.required_judged(0.05) == 59
    assert CONFIG.required_judged(0.02) == math.ceil(math.log(0.05) / math.log(0.98)) == 149
    assert GuardConfig(min_judged=10).required_judged(0.05) == 10


def test_a_noisy_judge_needs_more_verdicts_before_anything_can_pass():
    noisy = GuardConfig(judge_error_rate=0.1)
    needed = noisy.required_judged(0.05)
    assert needed == clean_record_judged(0.05, 0.95, 0.1) > 59

    # the defining property: a clean record read through the noisy judge passes at `needed`, not before
    def clean_passes(n):
        upper = clopper_pearson_upper(round(0.1 * n), n, 0.95)
        return corrected(upper, 1.0, 0.1) <= 0.05

    assert clean_passes(needed) and not clean_passes(needed - 1)
    assert clean_record_judged(0.05, 0.95, 0.0) == 59


def test_evidence_that_the_cold_start_breaks_alpha_ends_it_early():
    # 40 verdicts (fewer than the 59 needed to certify), 20 of them under-routed at the cold start
    rows = repeat(SURE_FAST, (True, True), 20).probabilities.tolist() + [SURE_FAST] * 20
    under = [(True, True)] * 20 + [(False, False)] * 20
    state = choose_setting("bad", evidence(rows, under), Q, None, CONFIG)
    assert state.status == "top_only" and state.setting.top_only
    # 1 failure in 40 is no proof of a breach: still cold start
    mild = evidence([SURE_FAST] * 40, [(True, True)] + [(False, False)] * 39)
    assert choose_setting("mild", mild, Q, None, CONFIG).status == "cold_start"


def test_evidence_that_certifies_a_setting_no_dearer_than_the_cold_start_lowers_it_early():
    # a noisy judge needs 220 verdicts before a clean record could pass everything; but requests the
    # model is sure of (routed fast by every setting) can be certified sooner when none is wrong
    noisy = GuardConfig(judge_error_rate=0.1, cold_start_margin=0.25)  # cold start: top for MIDDLE rows
    clean = evidence([MIDDLE] * 100, [(False, False)] * 100, noisy=[False] * 100)
    state = choose_setting("easy", clean, Q, None, noisy)
    assert noisy.required_judged(0.05) > 100 and state.status == "certified"
    assert setting_tiers(state.setting, np.asarray([MIDDLE]), Q, None).tolist() == [0]  # cheaper than cold
    # as cheap as a cold start that already routes fast: the proven setting is preferred
    cheap_cold = GuardConfig(judge_error_rate=0.1, cold_start_margin=-0.5)
    assert choose_setting("easy", clean, Q, None, cheap_cold).status == "certified"
    # a dearer certified setting does not replace a cheaper cold start (tier costs decide)
    assert choose_setting("easy", clean, Q, None, noisy, tier_costs=[5.0, 5.0, 1.0]).status == "cold_start"


def test_fewer_verdicts_than_required_is_cold_start():
    state = choose_setting("s", repeat(SURE_FAST, (False, False), 58), Q, None, CONFIG)
    assert (
        state.status == "cold_start"
        and state.setting == GuardSetting(delta=0.05, floor=True) == CONFIG.cold_start()
    )
    assert state.bound is None and state.judged == 58 and state.estimate == 0.0
    empty = choose_setting("s", SegmentEvidence.empty(3), Q, None, CONFIG)
    assert empty.status == "cold_start" and empty.estimate is None and empty.judged == 0
    margin = GuardConfig(cold_start_margin=0.2)
    assert choose_setting("s", SegmentEvidence.empty(3), Q, None, margin).setting == GuardSetting(
        delta=0.2, floor=True
    )
    # the same clean record, one verdict more, is certified
    assert choose_setting("s", repeat(SURE_FAST, (False, False), 59), Q, None, CONFIG).status == "certified"


def test_a_segment_whose_fast_tier_always_suffices_gets_the_cheapest_setting():
    state = choose_setting("easy", repeat(MIDDLE, (False, False), 300), Q, None, CONFIG)
    assert state.status == "certified" and state.setting == PATH[-1] and state.setting.delta == -0.75
    assert state.under_routed == 0 and state.estimate == 0.0
    assert state.bound == pytest.approx(clopper_pearson_upper(0, 300, 0.95)) and state.bound <= 0.05
    assert setting_tiers(state.setting, np.asarray([MIDDLE]), Q, None).tolist() == [0]  # routes fast


def test_a_segment_whose_cheap_tiers_always_fail_is_top_only():
    state = choose_setting("hard", repeat(SURE_FAST, (True, True), 500), Q, None, CONFIG)
    assert state.status == "top_only" and state.setting.top_only
    assert state.bound == 0.0 and state.under_routed == 0 and state.judged == 500


def test_raising_q_can_certify_a_segment_the_model_q_would_fail():
    # the fast tier fails, balanced suffices: only shifts that send MIDDLE to balanced or above pass
    state = choose_setting("mid", repeat(MIDDLE, (True, False), 300), Q, None, CONFIG)
    assert state.status == "certified" and state.setting == GuardSetting(delta=-0.075)
    k, m = risk_counts(repeat(MIDDLE, (True, False), 300), GuardSetting(delta=-0.1), Q, None)
    assert k == 300  # the next setting on the path sends every row to fast


def test_a_failing_setting_stops_the_sequence_even_if_a_cheaper_one_would_pass():
    # balanced under-routes, fast does not (a judge can say so): frontier-routing shifts pass, the
    # balanced-routing ones fail, the fast-routing ones would pass again but are never reached
    ev = repeat(MIDDLE, (False, True), 300)
    state = choose_setting("odd", ev, Q, None, CONFIG)
    assert state.status == "certified" and state.setting == GuardSetting(delta=0.225)
    assert bound_of(*risk_counts(ev, PATH[-1], Q, None), 300, CONFIG)[1] <= 0.05  # cheaper would pass


def test_the_choice_is_the_last_pass_before_the_first_failure():
    rng = np.random.default_rng(3)
    n = 400
    rows = rng.dirichlet([2.0, 1.0, 1.0], size=n)
    needed = rng.choice(3, size=n, p=[0.7, 0.25, 0.05])
    under = np.stack([needed > 0, needed > 1], axis=1)  # tier t under-routes when the need is above t
    ev = SegmentEvidence(rows, under, np.zeros(n, dtype=bool))
    state = choose_setting("mixed", ev, Q, None, CONFIG)
    bounds = [bound_of(*risk_counts(ev, s, Q, None), n, CONFIG)[1] for s in PATH[1:]]
    first_fail = next((i for i, b in enumerate(bounds) if b > 0.05), len(bounds))
    if first_fail == 0:
        assert state.status == "top_only"
    else:
        assert state.status == "certified" and state.setting == PATH[first_fail]
        assert state.bound == pytest.approx(bounds[first_fail - 1]) and state.bound <= 0.05
    assert 0 < first_fail < len(bounds)  # this scripted segment is neither all-cheap nor top-only


def test_a_per_call_alpha_overrides_the_config():
    ev = evidence([MIDDLE] * 200, [(True, False)] * 2 + [(False, False)] * 198)
    loose = choose_setting("s", ev, Q, None, CONFIG)
    strict = choose_setting("s", ev, Q, None, CONFIG, alpha=0.02)
    assert loose.setting == PATH[-1] and loose.alpha == 0.05
    assert strict.setting == GuardSetting(delta=-0.075) and strict.alpha == 0.02 and strict.bound <= 0.02


def test_the_path_goes_by_thresholds_alone_and_the_cold_start_keeps_the_models_floor():
    probs = np.asarray([[0.5, 0.45, 0.05]])
    offsets = [0.0, 1.0, 0.0]  # the most likely tier (with offsets) is balanced
    assert setting_tiers(PATH[-1], probs, Q, offsets).tolist() == [0]  # cumulative 0.5 >= q - 0.75
    assert all(not setting.floor for setting in PATH)
    assert setting_tiers(GuardSetting(delta=-0.75, floor=True), probs, Q, offsets).tolist() == [1]
    assert CONFIG.cold_start().floor


# --- the thresholds routing reads, and the evidence encodings ------------------------------------------


def test_setting_thresholds():
    assert CONFIG.cold_start().thresholds(Q, 3) == pytest.approx((0.75, 0.75))
    easy = choose_setting("easy", repeat(MIDDLE, (False, False), 100), Q, None, CONFIG)
    assert easy.setting.thresholds(Q, 3) == (0.0, 0.0)  # 0.7 - 0.75, clipped at 0
    assert GuardSetting(delta=0.25).thresholds((0.9, 0.5), 3) == pytest.approx((1.0, 0.75))  # clipped at 1
    assert GuardSetting(delta=-0.1).thresholds(0.7, 4) == pytest.approx((0.6, 0.6, 0.6))


def test_under_from_range_and_verdicts():
    assert under_from_range(0, 3).tolist() == [False, False]  # fast sufficed
    assert under_from_range(1, 3).tolist() == [True, False]
    assert under_from_range(2, 3).tolist() == [
        True,
        True,
    ]  # up to the top: every cheaper tier counts as under
    assert under_from_verdicts([True, False]).tolist() == [False, True]
    assert SegmentEvidence.empty(3).judged == 0 and SegmentEvidence.empty(3).under.shape == (0, 2)
