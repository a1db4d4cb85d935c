"""Hot reload: load the model folder again, warm it up, swap it in, and retire the old one.

`POST /admin/reload` (serving/tierwise/service/routes/admin.py) or SIGHUP to a single-process server
reloads; the old model finishes the requests already on it before it is closed, and a folder that
fails to load leaves the old model serving. With several workers, the worker that reloads bumps a
shared generation and the others follow it (serving/tierwise/service/worker_sync.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from tierwise.evidence.segment_control import SegmentController, load_segment_control
from tierwise.service import worker_sync
from tierwise.service.batcher import MicroBatcher
from tierwise.service.classifier import ClassifierFactory
from tierwise.service.metrics import ServiceMetrics
from tierwise.service.settings import Settings
from tierwise.service.state import Services, attach_controller, load_services, startup_error_message

logger = logging.getLogger("tierwise.service")


class ModelReloader:
    """Loads the model into the app at start-up and swaps in a new one on reload, one at a time."""

    def __init__(
        self, app: FastAPI, settings: Settings, factory: ClassifierFactory, metrics: ServiceMetrics
    ) -> None:
        self.app = app
        self.settings = settings
        self.factory = factory
        self.metrics = metrics
        self._lock: asyncio.Lock | None = None
        self._background: set[asyncio.Task[Any]] = set()
        # With several workers: the folder they share, and the reload generation this one serves.
        self.shared = worker_sync.shared_dir()
        self.generation = 0
        self.controller: SegmentController | None = None  # set once the decision log is open

    async def _load(self, settings: Settings) -> Services:
        services = await asyncio.to_thread(load_services, settings, self.factory, self.metrics)
        if self.controller is not None:  # the evidence stays; the settings now shift the new model's q
            attach_controller(services, self.controller)
            await asyncio.to_thread(self.controller.refresh_safely)
            self._warn_if_segment_control_changed(settings)
        if isinstance(services.scorer, MicroBatcher):
            services.scorer.start()
        services.ready = True
        return services

    def _warn_if_segment_control_changed(self, settings: Settings) -> None:
        """A reload reads the policy's rules again, but the controller keeps the section it started with."""
        assert self.controller is not None
        try:
            changed = load_segment_control(settings.policy_file) != self.controller.config
        except Exception as err:
            changed, detail = True, f" (it no longer parses: {err})"
        else:
            detail = ""
        if changed:
            logger.warning(
                "the policy's segment_control section changed%s; restart the service to apply it "
                "(the controller keeps the section it started with)",
                detail,
            )

    async def start(self) -> Services:
        if self.shared is not None:
            # A worker started after an admin reload serves what that reload asked for.
            latest = worker_sync.read_generation(self.shared)
            self.generation = latest.number
            if latest.model_dir:
                self.settings = self.settings.model_copy(update={"model_dir": Path(latest.model_dir)})
        services = await self._load(self.settings)
        self.app.state.services = services
        if self.shared is not None:
            self._publish_status(services)
            task = asyncio.get_running_loop().create_task(self._follow_reloads(self.shared))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return services

    def _publish_status(self, services: Services) -> None:
        if self.shared is not None:
            worker_sync.write_worker_status(
                self.shared, services.classifier.version, self.generation, str(self.settings.model_dir)
            )

    def worker_statuses(self) -> list[dict[str, Any]]:
        """Which model each live worker serves (only this one with a single process)."""
        if self.shared is not None:
            return worker_sync.worker_statuses(self.shared)
        services: Services = self.app.state.services
        return [
            {
                "pid": os.getpid(),
                "model_version": services.classifier.version,
                "generation": self.generation,
                "model_dir": str(self.settings.model_dir),
            }
        ]

    async def _follow_reloads(self, folder: Path) -> None:
        """Reload whenever another worker publishes a newer generation (a cheap stat per poll)."""
        stamp = worker_sync.generation_stamp(folder)
        while True:
            await asyncio.sleep(worker_sync.POLL_SECONDS)
            current = worker_sync.generation_stamp(folder)
            if current == stamp:
                continue
            stamp = current
            wanted = worker_sync.read_generation(folder)
            if wanted.number <= self.generation:
                continue
            self.generation = wanted.number
            await self._reload_logging_errors(Path(wanted.model_dir) if wanted.model_dir else None)

    async def reload_everywhere(self, model_dir: Path | None = None) -> tuple[Services, Services]:
        """Reload this worker (raises if the folder cannot be loaded: nothing else changes), then ask
        every other worker to load the same folder."""
        old, new = await self.reload(model_dir)
        if self.shared is not None:
            # No await between the bump and the assignment: this worker's poller sees it as done.
            self.generation = worker_sync.bump_generation(self.shared, str(self.settings.model_dir)).number
            self._publish_status(new)
        return old, new

    async def wait_for_workers(self, timeout: float) -> tuple[list[dict[str, Any]], bool]:
        """(statuses, all agree) once every live worker serves this worker's generation and version."""
        deadline = time.monotonic() + timeout
        while True:
            statuses = self.worker_statuses()
            version = self.app.state.services.classifier.version
            agree = all(
                s["generation"] >= self.generation and s["model_version"] == version for s in statuses
            )
            if agree or time.monotonic() >= deadline:
                return statuses, agree
            await asyncio.sleep(0.1)

    async def reload(self, model_dir: Path | None = None) -> tuple[Services, Services]:
        """(old, new) services once the new model serves; raises if it cannot be loaded (old stays)."""
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            old: Services = self.app.state.services
            settings = self.settings
            if model_dir is not None:
                settings = settings.model_copy(update={"model_dir": Path(model_dir)})
            started = time.perf_counter()
            new = await self._load(settings)
            self.app.state.services = new
            self.settings = settings
            self._publish_status(new)
            logger.info(
                "reloaded",
                extra={
                    "model_version": new.classifier.version,
                    "previous_model_version": old.classifier.version,
                    "model_dir": str(settings.model_dir),
                    "reload_ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
        await self.retire(old)
        return old, new

    async def retire(self, old: Services) -> None:
        """Close the old model once the requests using it have finished (or drain_seconds passed)."""
        old.ready = False
        deadline = time.monotonic() + self.settings.drain_seconds
        while old.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if old.in_flight > 0:
            logger.warning(
                "closing the old model with requests in flight", extra={"in_flight": old.in_flight}
            )
        await old.scorer.close()

    async def _reload_logging_errors(self, model_dir: Path | None = None) -> None:
        try:
            await self.reload(model_dir)
        except Exception as err:
            current: Services = self.app.state.services
            logger.error(
                "reload failed, still serving the previous model: %s",
                startup_error_message(err, self.settings),
                extra={"model_version": current.classifier.version},
            )

    def reload_in_background(self) -> None:
        """The SIGHUP handler."""
        task = asyncio.get_running_loop().create_task(self._reload_logging_errors())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def install_sighup(self) -> bool:
        """Reload on SIGHUP when running in the main thread (a uvicorn server), else do nothing."""
        if not self.settings.reload_on_sighup or threading.current_thread() is not threading.main_thread():
            return False
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload_in_background)
        except (NotImplementedError, RuntimeError, ValueError, AttributeError):
            return False
        return True

    def remove_sighup(self) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError, AttributeError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self.shared is not None:
            worker_sync.remove_worker_status(self.shared)
        services: Services | None = getattr(self.app.state, "services", None)
        if services is not None:
            services.ready = False
            await services.scorer.close()
