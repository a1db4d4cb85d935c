"""The service's metrics in one process: counters by label, histograms, gauges, the model info series,
the text exposition a scrape reads, and the folder several workers share."""

import os
from pathlib import Path

import pytest
from tierwise.service import metrics
from tierwise.service.metrics import ServiceMetrics, prepare_multiprocess_dir, remove_multiprocess_dir


def series(exposition: str, prefix: str) -> list[str]:
    """The sample lines of one metric family, comments left out."""
    return [line for line in exposition.splitlines() if line.startswith(prefix)]


@pytest.fixture(autouse=True)
def one_process(monkeypatch):
    """These tests read the in-memory registry: no multiprocess folder, whatever the environment says.
    PROMETHEUS_MULTIPROC_DIR is unset here and restored after (setenv first: delenv of a variable that
    is not set records nothing to restore, and `prepare_multiprocess_dir` would leak it to later tests)."""
    monkeypatch.setattr(metrics, "MULTIPROC_DIR", None)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")


def test_decisions_are_counted_by_tier_method_and_reason():
    m = ServiceMetrics()
    m.observe_decision("fast", ["confident"], escalated=False)
    m.observe_decision("balanced", ["escalated", "long_context"], escalated=True, decided_by="estimator")
    m.observe_decision("fast", ["confident"], escalated=False)
    text = m.exposition()
    assert series(text, "tierwise_decisions_total") == [
        'tierwise_decisions_total{tier="fast"} 2.0',
        'tierwise_decisions_total{tier="balanced"} 1.0',
    ]
    assert series(text, "tierwise_escalations_total") == ["tierwise_escalations_total 1.0"]
    assert "_created" not in text  # one-process only series would make the two modes differ
    assert [m.decisions.value(tier) for tier in ("fast", "balanced", "frontier")] == [2, 1, 0]
    assert (m.decided_by.value("encoder"), m.decided_by.value("estimator")) == (2, 1)
    assert m.reasons.value("confident") == 2 and m.reasons.value("long_context") == 1
    assert m.escalations.value() == 1


def test_cache_lookups_and_log_records_count_their_items_and_skip_empty_batches():
    m = ServiceMetrics()
    m.observe_score_cache("hit", 0)
    m.observe_score_cache("miss", 3)
    m.observe_decision_log("written", 2)
    text = m.exposition()
    assert series(text, "tierwise_score_cache_lookups_total") == [
        'tierwise_score_cache_lookups_total{outcome="miss"} 3.0'
    ]
    assert series(text, "tierwise_decision_log_records_total") == [
        'tierwise_decision_log_records_total{outcome="written"} 2.0'
    ]


def test_batches_fill_cumulative_histogram_buckets():
    m = ServiceMetrics()
    m.observe_batch(3, 0.004)
    m.observe_batch(40, 0.03)
    assert m.batch_size.count() == 2 and m.inference.count() == 2
    text = m.exposition()
    buckets = series(text, "tierwise_classifier_batch_size_bucket")
    assert 'tierwise_classifier_batch_size_bucket{le="2.0"} 0.0' in buckets
    assert 'tierwise_classifier_batch_size_bucket{le="4.0"} 1.0' in buckets
    assert 'tierwise_classifier_batch_size_bucket{le="64.0"} 2.0' in buckets
    assert 'tierwise_classifier_batch_size_bucket{le="+Inf"} 2.0' in buckets
    assert series(text, "tierwise_classifier_batch_size_sum") == ["tierwise_classifier_batch_size_sum 43.0"]
    m.latency.observe(0.2, "/classify")
    assert m.latency.count("/classify") == 1 and m.latency.count("/feedback") == 0


def test_a_cleared_gauge_leaves_the_scrape():
    m = ServiceMetrics()
    m.shadow_under_routing.set(0.25, "fast", "-")
    m.shadow_under_routing.set(0.5, "balanced", "legal")
    assert m.shadow_under_routing.value("fast", "-") == 0.25
    m.shadow_under_routing.clear("fast", "-")
    m.shadow_under_routing.clear("frontier", "-")  # never set: nothing to do
    assert m.shadow_under_routing.value("fast", "-") is None
    assert series(m.exposition(), "tierwise_shadow_under_routing_ratio") == [
        'tierwise_shadow_under_routing_ratio{route="legal",tier="balanced"} 0.5'
    ]


def test_the_model_info_series_names_the_loaded_model_only():
    m = ServiceMetrics()
    m.model.set(version="tiny@a", tiers="fast,balanced")
    m.model.set(version="tiny@b", tiers="fast,balanced")
    assert series(m.exposition(), "tierwise_model_info") == [
        'tierwise_model_info{tiers="fast,balanced",version="tiny@b"} 1.0'
    ]
    with pytest.raises(ValueError, match="labels"):
        m.model.set(version="tiny@c")


def test_each_app_has_its_own_registry():
    first, second = ServiceMetrics(), ServiceMetrics()
    first.http_requests.inc("/classify", "200")
    assert first.http_requests.value("/classify", "200") == 1
    assert 'tierwise_http_requests_total{endpoint="/classify",status="200"} 1.0' in first.exposition()
    assert "tierwise_http_requests_total{" not in second.exposition()
    assert second.http_requests.value("/classify", "200") == 0


def test_one_worker_needs_no_metrics_folder():
    assert prepare_multiprocess_dir(1) is None
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ


def test_several_workers_get_a_fresh_folder_that_is_removed_after():
    folder = prepare_multiprocess_dir(2)
    assert folder is not None and folder.is_dir() and folder.name.startswith("tierwise-metrics-")
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(folder)
    remove_multiprocess_dir(folder)
    assert not folder.exists()


def test_a_given_folder_is_emptied_of_earlier_counts_and_kept(monkeypatch, tmp_path: Path):
    given = tmp_path / "metrics"
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"old counts")
    (given / "notes.txt").write_text("not a metrics file")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(given))
    assert prepare_multiprocess_dir(3) == given
    assert sorted(p.name for p in given.iterdir()) == ["notes.txt"]
    remove_multiprocess_dir(given)  # not one tierwise made: left alone
    assert given.is_dir()
