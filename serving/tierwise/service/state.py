"""What a running service holds: the loaded model, policy, scorer and router (`Services`), and the
per-request context the middleware attaches.

`load_services` builds and warms up a `Services`; `ModelReloader` (serving/tierwise/service/reloader.py)
swaps one in at start-up and on every reload. The classifier's type and loader: classifier.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from tierwise.core.decide import ClassifierLike
from tierwise.core.policy import Policy, PolicyError
from tierwise.core.policy_file import load_policy
from tierwise.evidence.segment_control import SegmentController
from tierwise.service.batcher import DirectScorer, MicroBatcher, Scorer
from tierwise.service.canary import Canary, build_canary
from tierwise.service.classifier import ClassifierFactory, warm_up
from tierwise.service.metrics import ServiceMetrics
from tierwise.service.routing import Router
from tierwise.service.score_cache import ScoreCache
from tierwise.service.settings import Settings


@dataclass
class Services:
    settings: Settings
    classifier: ClassifierLike
    policy: Policy
    scorer: Scorer
    router: Router
    metrics: ServiceMetrics
    ready: bool = False
    in_flight: int = 0  # requests using this classifier now; a reload waits for 0 before closing it
    canary: Canary | None = None  # when the policy names a candidate model


@dataclass(frozen=True)
class RequestContext:
    request_id: str
    trace_id: str | None
    traceparent: str | None
    started: float


def build_services(
    settings: Settings, classifier_factory: ClassifierFactory, metrics: ServiceMetrics
) -> Services:
    """Load the policy and the model and wire the scorer; raises PolicyError or ModelFolderError."""
    policy = load_policy(settings.policy_file)
    classifier = classifier_factory(settings)
    policy.check_model_tiers(classifier.tiers)
    scorer: Scorer
    if settings.micro_batching:
        scorer = MicroBatcher(
            classifier.predict_proba,
            max_batch_size=settings.micro_batch_max_size,
            max_wait_ms=settings.micro_batch_max_wait_ms,
            on_batch=metrics.observe_batch,
        )
    else:
        scorer = DirectScorer(classifier.predict_proba, on_batch=metrics.observe_batch)
    cache = (
        ScoreCache(settings.score_cache_size, metrics.observe_score_cache)
        if settings.score_cache_size
        else None
    )
    router = Router.for_classifier(policy, scorer, classifier, settings, cache=cache)
    metrics.model.set(version=classifier.version, tiers=",".join(classifier.tiers))
    canary = build_canary(policy, settings, classifier_factory, metrics)
    return Services(settings, classifier, policy, scorer, router, metrics, canary=canary)


def attach_controller(services: Services, controller: SegmentController | None) -> None:
    """The per-segment controller routes the model's requests (its decisions are the evidence) and
    raises, never lowers, a canary's."""
    services.router.attach_controller(controller)
    if services.canary is not None:
        services.canary.router.attach_controller(controller, evidence=False)


def startup_error_message(err: Exception, settings: Settings) -> str:
    """What went wrong loading the model or policy, and what to do about it."""
    if isinstance(err, PolicyError):
        return str(err)
    if isinstance(err, ValueError):  # ModelFolderError is a ValueError
        message = str(err).rstrip()
        if "make train" not in message:
            message += (
                " Re-export the model folder with `make train` (or `make export`), or point "
                "TIERWISE_MODEL_DIR at a complete one."
            )
        return message
    return (
        f"loading the model folder {settings.model_dir} failed ({type(err).__name__}: {err}); point "
        "TIERWISE_MODEL_DIR at a folder written by `make train` (model.onnx, tokenizer.json, manifest.json)"
    )


def load_services(settings: Settings, factory: ClassifierFactory, metrics: ServiceMetrics) -> Services:
    """Build and warm up the services (blocking: run it in a thread)."""
    services = build_services(settings, factory, metrics)
    warm_up(services.classifier, settings.micro_batch_max_size)
    return services
