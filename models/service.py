"""The HTTP ranking service: a FastAPI (ASGI) app over ``models.serving.ServingEngine``, run by uvicorn.

Endpoints:

- ``POST /rank``: ``{"user_id": ..., "item_ids": [...]}`` -> the candidates ordered by score.
- ``GET /recommend/{user_id}?k=10``: ranks the popular items of the user's top categories
  plus the popular items overall.
- ``GET /search?q=...&user_id=...&k=10``: ranks the catalogue items whose title or category
  contains every word of ``q``.
- ``GET /healthz``: the versions served and the age of the item snapshot and candidates.
- ``GET /metrics``: Prometheus text format.

Handlers are ``async`` and rank on the event loop thread: a ranking is a few milliseconds of
CPU work, and handing it to a thread pool would add a thread switch and GIL contention to
every request. More cores are used with more worker processes (``serving.workers``).

This module does not use ``from __future__ import annotations``: FastAPI reads the handler
annotations at runtime, and the request models are built per app from ``serving`` limits.
"""

import gc
import logging
import math
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, create_model

from freshrank.config import ServingConfig, Settings, load_settings
from freshrank.errors import RankingInputError, ServingUnavailableError
from models.ab import RequestLog, request_log_path
from models.serving import CATEGORY_VIEW, ITEM_VIEW, PAIR_VIEW, USER_VIEW, RankResult, ServingEngine, ServingState

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Upper bounds, in seconds, of the request latency histogram buckets."""
ENDPOINT_LABELS = {"/rank", "/recommend/{user_id}", "/search", "/healthz", "/metrics"}
"""Route paths used as the ``endpoint`` metric label; any other path counts as ``other``."""

try:
    from redis.exceptions import RedisError as _RedisError
except ImportError:  # the redis client is optional; without it there is no Redis error to map
    _RedisError = sqlite3.OperationalError
ONLINE_STORE_ERRORS = (sqlite3.OperationalError, _RedisError)
"""Errors of the online store (a locked SQLite file, an unreachable Redis) that get a 503 response."""


# Request models


def _no_control_characters(value: str) -> str:
    if any(ord(character) < 32 or ord(character) == 127 for character in value):
        raise ValueError("must not contain control characters")
    return value


def _distinct(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        seen: set[str] = set()
        repeated = sorted({value for value in values if value in seen or seen.add(value)})
        raise ValueError(f"repeats {repeated[:10]}; send each candidate once")
    return values


def _id_type(config: ServingConfig) -> Any:
    return Annotated[
        str,
        StringConstraints(strict=True, min_length=1, max_length=config.max_id_length),
        AfterValidator(_no_control_characters),
    ]


def rank_request_model(config: ServingConfig) -> type[BaseModel]:
    """Build the ``POST /rank`` body model with the configured limits.

    Unknown fields are rejected, and ``strict`` rejects numbers in place of id strings.
    """
    identifier = _id_type(config)
    candidates = Annotated[
        list[identifier],
        Field(min_length=1, max_length=config.max_candidates),
        AfterValidator(_distinct),
    ]
    return create_model(
        "RankRequest",
        __config__=ConfigDict(extra="forbid", strict=True),
        user_id=(identifier, Field(description="The user to rank for.")),
        item_ids=(candidates, Field(description="Distinct candidate item ids.")),
    )


# Error responses


def _field_name(location: tuple) -> str:
    """Turn a pydantic error location such as ``("body", "item_ids", 3)`` into ``item_ids[3]``."""
    parts = [part for part in location if part not in ("body", "query", "path")]
    name = ""
    for part in parts:
        if isinstance(part, int):
            name += f"[{part}]"
        elif name:
            name += f".{part}"
        else:
            name = str(part)
    return name or "body"


def _validation_response(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [
        {"field": "body" if error["type"] == "json_invalid" else _field_name(tuple(error["loc"])), "message": error["msg"]}
        for error in exc.errors()
    ]
    message = "; ".join(f"{error['field']}: {error['message']}" for error in errors)
    return JSONResponse(status_code=422, content={"error": "invalid request", "message": message, "errors": errors})


def _input_error_response(request: Request, exc: RankingInputError) -> JSONResponse:
    return JSONResponse(status_code=422, content={"error": "invalid request", "message": str(exc)})


class _RepeatLimiter:
    """Lets the same error message through to the log once per interval and counts the rest."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: dict[str, tuple[float, int]] = {}

    def check(self, message: str) -> int | None:
        """Return how many repeats were held back if ``message`` may be logged now, else None."""
        now = time.monotonic()
        last, held_back = self._last.get(message, (-math.inf, 0))
        if now - last < self.interval_s:
            self._last[message] = (last, held_back + 1)
            return None
        self._last[message] = (now, 0)
        return held_back


_error_log_limiter = _RepeatLimiter(interval_s=60.0)
"""Error responses repeat at the request rate during an outage; each message is logged once a minute."""


def _unavailable_response(request: Request, exc: Exception) -> JSONResponse:
    message = f"{type(exc).__name__}: {exc}"
    held_back = _error_log_limiter.check(message)
    if held_back is not None:
        logger.error("%s %s: service unavailable (%d repeats not logged): %s", request.method, request.url.path, held_back, message)
    return JSONResponse(status_code=503, content={"error": "service unavailable", "message": str(exc)})


def _internal_error_response(request: Request, exc: Exception) -> JSONResponse:
    message = f"{type(exc).__name__}: {exc}"
    held_back = _error_log_limiter.check(message)
    if held_back is not None:
        logger.error("%s %s failed (%d repeats not logged)", request.method, request.url.path, held_back, exc_info=exc)
    return JSONResponse(status_code=500, content={"error": "internal error", "message": f"{message}; see the service log"})


# Metrics


class _EngineCollector:
    """Prometheus collector that reads the engine's current state at scrape time."""

    def __init__(self, engine: ServingEngine) -> None:
        self.engine = engine

    def collect(self):
        state = self.engine.current_state
        info = GaugeMetricFamily("freshrank_model_info", "Model version serving each variant (value 1).", labels=["variant", "version"])
        loaded = GaugeMetricFamily("freshrank_model_loaded_timestamp_seconds", "Unix time each variant's model was loaded.", labels=["variant"])
        snapshot_items = GaugeMetricFamily("freshrank_item_snapshot_items", "Items in the item-feature snapshot.")
        snapshot_read = GaugeMetricFamily("freshrank_item_snapshot_read_timestamp_seconds", "Unix time the item-feature snapshot was read.")
        item_age = GaugeMetricFamily(
            "freshrank_item_snapshot_feature_age_seconds",
            "Seconds since the event timestamp of the newest item features in the snapshot.",
        )
        candidates = GaugeMetricFamily(
            "freshrank_candidates_built_timestamp_seconds", "Unix time the candidate source and catalogue were built."
        )
        if state is not None:
            for variant, model in (("control", state.control), ("treatment", state.treatment)):
                if model is not None:
                    info.add_metric([variant, model.version], 1.0)
                    loaded.add_metric([variant], model.loaded_at)
            if state.snapshot is not None:
                snapshot_items.add_metric([], state.snapshot.size)
                snapshot_read.add_metric([], state.snapshot.read_at)
                newest = state.snapshot.newest_event_ts()
                if newest is not None:
                    item_age.add_metric([], time.time() - newest)
            if state.candidates is not None:
                candidates.add_metric([], state.candidates.built_at)
        refreshes = CounterMetricFamily(
            "freshrank_refreshes", "Watcher refreshes by component and outcome.", labels=["component", "outcome"]
        )
        for (component, outcome), count in sorted(self.engine.refresh_counts.snapshot().items()):
            refreshes.add_metric([component, outcome], count)
        yield from (info, loaded, snapshot_items, snapshot_read, item_age, candidates, refreshes)


class ServiceMetrics:
    """The service's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(self, engine: ServingEngine) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "freshrank_requests", "HTTP requests by endpoint and status code.", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "freshrank_request_duration_seconds",
            "Time from receiving a request to sending its response, in seconds.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ranked = Counter(
            "freshrank_ranked_requests", "Ranked requests by endpoint and A/B variant.", ["endpoint", "variant"], registry=self.registry
        )
        self.unknown = Counter(
            "freshrank_unknown_entities", "Users and candidate items without online features.", ["kind"], registry=self.registry
        )
        self.feature_age = Gauge(
            "freshrank_feature_age_seconds",
            "Seconds since the event timestamp of the oldest feature row used by the latest ranked request, per view.",
            ["view"],
            registry=self.registry,
        )
        self.registry.register(_EngineCollector(engine))

    def observe_ranking(self, endpoint: str, variant: str, result: RankResult) -> None:
        """Count a ranked request and record its feature ages and unknown entities."""
        self.ranked.labels(endpoint, variant).inc()
        if not result.user_known:
            self.unknown.labels("user").inc()
        if result.unknown_item_ids:
            self.unknown.labels("item").inc(len(result.unknown_item_ids))
        for view, age in result.feature_age_s.items():
            if age is not None:
                self.feature_age.labels(view).set(age)


class _MetricsMiddleware:
    """Pure ASGI middleware that counts requests and times them by route (no response buffering)."""

    def __init__(self, app, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_with_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None)
            endpoint = endpoint if endpoint in ENDPOINT_LABELS else "other"
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)


# The app


def _feature_report(result: RankResult) -> dict:
    return {
        USER_VIEW: {"age_s": result.feature_age_s[USER_VIEW], "source": "online", "found": result.user_known},
        ITEM_VIEW: {
            "age_s": result.feature_age_s[ITEM_VIEW],
            "source": result.item_features_source,
            "snapshot_age_s": result.snapshot_age_s,
        },
        PAIR_VIEW: {"age_s": result.feature_age_s[PAIR_VIEW], "source": "online", "rows_found": result.pair_rows_found},
        CATEGORY_VIEW: {
            "age_s": result.feature_age_s[CATEGORY_VIEW],
            "source": "online",
            "rows_found": result.category_rows_found,
        },
    }


def _health(state: ServingState) -> dict:
    snapshot = state.snapshot
    candidates = state.candidates
    now = time.time()
    return {
        "status": "ok",
        "model_version": state.control.version,
        "variants": {"control": state.control.version, "treatment": state.treatment.version if state.treatment else None},
        "item_snapshot": None
        if snapshot is None
        else {
            "items": snapshot.size,
            "read_at": snapshot.read_at,
            "age_s": now - snapshot.read_at,
            "newest_feature_ts": snapshot.newest_event_ts(),
        },
        "candidates": None
        if candidates is None
        else {
            "built_for": candidates.built_for,
            "age_s": now - candidates.built_at,
            "newest_day": candidates.newest_day,
            "popular_items": len(candidates.popular),
        },
        "catalogue_items": None if state.catalogue is None else len(state.catalogue),
        "candidates_error": state.candidates_error,
    }


def create_app(settings: Settings) -> FastAPI:
    """Build the ranking service of a home; the engine starts in the app's lifespan.

    Args:
        settings: Settings of the home (``serving`` contains the limits and the A/B split).
    """
    config = settings.serving
    engine = ServingEngine(settings)
    metrics = ServiceMetrics(engine)
    log_path = request_log_path(settings)
    resources: dict[str, RequestLog | None] = {"log": None}

    def _refreeze(state: ServingState) -> None:
        # Objects of a new state live as long as the state, so freezing them keeps them out of
        # later full collections. Without this, a lookup loop paused about 74 ms every ~200 calls.
        gc.collect()
        gc.freeze()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        engine.warm_up()
        engine.add_listener(_refreeze)
        _refreeze(engine.state)
        if log_path is not None:
            resources["log"] = RequestLog(log_path, config.request_log_items)
        logger.info("ranking service ready for %s (request log %s)", settings.home, log_path)
        try:
            yield
        finally:
            engine.stop()
            if resources["log"] is not None:
                resources["log"].close()
            gc.unfreeze()
            logger.info("ranking service stopped")

    app = FastAPI(title="freshrank ranking service", lifespan=lifespan)
    app.state.engine = engine
    app.state.metrics = metrics
    app.add_exception_handler(RequestValidationError, _validation_response)
    app.add_exception_handler(RankingInputError, _input_error_response)
    app.add_exception_handler(ServingUnavailableError, _unavailable_response)
    for error in ONLINE_STORE_ERRORS:
        app.add_exception_handler(error, _unavailable_response)
    app.add_exception_handler(Exception, _internal_error_response)
    app.add_middleware(_MetricsMiddleware, metrics=metrics)

    identifier = _id_type(config)
    RankRequest = rank_request_model(config)
    KParam = Annotated[int, Query(ge=1, le=config.max_k, description="Number of items to return.")]

    def respond(endpoint: str, variant: str, result: RankResult, k: int | None = None, **extra: Any) -> Response:
        request_id = uuid.uuid4().hex
        item_ids = result.item_ids if k is None else result.item_ids[:k]
        scores = result.scores if k is None else result.scores[:k]
        log = resources["log"]
        if log is not None:
            log.write(
                endpoint=endpoint, request_id=request_id, user_id=result.user_id, variant=variant,
                model_version=result.model_version, item_ids=item_ids,
            )
        metrics.observe_ranking(endpoint, variant, result)
        body = {
            "request_id": request_id,
            "user_id": result.user_id,
            "variant": variant,
            "model_version": result.model_version,
            **extra,
            "items": [{"item_id": item, "score": score} for item, score in zip(item_ids, scores)],
            "unknown_user": not result.user_known,
            "unknown_item_ids": result.unknown_item_ids,
            "features": _feature_report(result),
        }
        return JSONResponse(body)

    def empty(endpoint: str, state: ServingState, user_id: str, **extra: Any) -> Response:
        """Return the response to a request without candidates (a search without matches)."""
        variant, model = engine.choose_model(state, user_id)
        return JSONResponse(
            {"request_id": uuid.uuid4().hex, "user_id": user_id, "variant": variant, "model_version": model.version,
             **extra, "items": [], "unknown_user": None, "unknown_item_ids": [], "features": None}
        )

    @app.post("/rank")
    async def rank(request: RankRequest) -> Response:  # type: ignore[valid-type]
        """Rank the candidate items for the user."""
        state = engine.state
        variant, result = engine.rank(state, request.user_id, request.item_ids)
        return respond("rank", variant, result)

    @app.get("/recommend/{user_id}")
    async def recommend(user_id: Annotated[identifier, PathParam()], k: KParam = config.default_k) -> Response:
        """Rank the user's recommendation candidates and return the best ``k``."""
        state = engine.state
        candidates = engine.recommend_candidates(state, user_id)
        if not candidates:
            raise ServingUnavailableError("the candidate source has no items; the warehouse has no events in the popularity window")
        variant, result = engine.rank(state, user_id, candidates)
        return respond("recommend", variant, result, k, candidates=len(candidates))

    @app.get("/search")
    async def search(
        q: Annotated[str, Query(min_length=1, max_length=config.max_query_length, description="Words to find.")],
        user_id: Annotated[identifier, Query(description="The user to rank for.")],
        k: KParam = config.default_k,
    ) -> Response:
        """Rank the catalogue items matching every word of ``q`` and return the best ``k``."""
        state = engine.state
        candidates, matches = engine.search_candidates(state, q)
        if not candidates:
            return empty("search", state, user_id, query=q, matches=0)
        variant, result = engine.rank(state, user_id, candidates)
        return respond("search", variant, result, k, query=q, matches=matches)

    @app.get("/healthz")
    async def healthz() -> Response:
        """Report the versions served and the freshness of item features and candidates."""
        return JSONResponse(_health(engine.state))

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        """Return the metrics in Prometheus text format."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def app_from_environment() -> FastAPI:
    """Build the app of the home in ``$FRESHRANK_HOME`` (the factory uvicorn workers import)."""
    return create_app(load_settings())


def run_service(settings: Settings, host: str | None = None, port: int | None = None, workers: int | None = None) -> None:
    """Serve a home with uvicorn until interrupted.

    One worker runs the app in this process; several workers import ``app_from_environment``
    in child processes, which read the home from ``$FRESHRANK_HOME``.
    """
    config = settings.serving
    host = host or config.host
    port = config.port if port is None else port
    workers = workers or config.workers
    options: dict[str, Any] = {"host": host, "port": port, "access_log": False, "log_level": "info", "lifespan": "on"}
    if workers == 1:
        uvicorn.run(create_app(settings), **options)
        return
    os.environ["FRESHRANK_HOME"] = str(settings.home)
    uvicorn.run("models.service:app_from_environment", factory=True, workers=workers, **options)

