"""Model registry on the local file system: versions with lineage, a champion pointer, rollback.

Layout under the registry root::

    models/<version>/model.ubj        the booster in XGBoost UBJSON
    models/<version>/metadata.json    day, kind, parent, features, training partitions, params,
                                      metrics, tree count, model sha256, ...
    champion.json                     the deployed version
    deployments.jsonl                 deployment and rollback events, oldest first

A version is ``v<number>-<day>``, e.g. ``v0001-2011-01-05``, and numbers grow by one per
registered model. Model folders, metadata and the champion pointer are written under a
temporary name in the same folder and then renamed into place, so a reader sees either the
old or the new content, never a partial one. Deployment events are appended to
``deployments.jsonl`` with one write each. Writers take an exclusive ``fcntl`` lock on
``<root>/.lock`` (POSIX only), and readers take none.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import xgboost as xgb

from freshrank.errors import ModelRegistryError
from freshrank.faults import crash_point
from freshrank.schema import DAY_FORMAT
from models.training import tree_count

logger = logging.getLogger(__name__)

MODEL_FILE = "model.ubj"
METADATA_FILE = "metadata.json"
CHAMPION_FILE = "champion.json"
DEPLOYMENTS_FILE = "deployments.jsonl"
LOCK_FILE = ".lock"
TEMP_PREFIX = ".tmp-"
MODEL_KINDS: tuple[str, ...] = ("full", "continued")
VERSION_PATTERN = re.compile(r"^v(\d{4,})-(\d{4}-\d{2}-\d{2})$")
IMMUTABLE_FIELDS: frozenset[str] = frozenset(
    {
        "version",
        "number",
        "day",
        "kind",
        "parent",
        "feature_columns",
        "training_partitions",
        "params",
        "tree_count",
        "model_file",
        "model_sha256",
        "created_at",
        "xgboost_version",
    }
)
"""Metadata fields fixed at registration; ``update_metadata`` rejects changes to them."""

_STATUS_HINT = "Run `freshrank status` to list the registered versions."


class ModelRegistry:
    """Versioned XGBoost models with lineage, a deployed champion and its history.

    Args:
        root: Registry folder (``Settings.registry_dir``); created on first write.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.models_dir = self.root / "models"

    # Versions

    def register(
        self,
        booster: xgb.Booster,
        *,
        day: str,
        kind: str,
        parent: str | None,
        feature_columns: list[str],
        training_partitions: list[dict],
        params: dict,
        metrics: dict | None = None,
        extra: dict | None = None,
    ) -> str:
        """Store a model as a new version.

        The model file and metadata are written into a temporary folder, which is then
        renamed to the version folder, so a crash leaves no partial version behind.

        Args:
            booster: The model; its feature names must equal ``feature_columns``.
            day: Partition day (YYYY-MM-DD) the model was trained for.
            kind: ``"full"`` (trained from scratch) or ``"continued"`` (boosted from ``parent``).
            parent: Version the model continues from; required for ``"continued"``. A full
                model may name the champion it replaces; lineage stops at a full model anyway.
            feature_columns: Feature columns of the model, in order.
            training_partitions: One ``{"day": ..., "data_version": ...}`` per training partition.
            params: XGBoost parameters of the training run.
            metrics: Evaluation metrics, if known at registration.
            extra: Further JSON-ready fields to record (e.g. check results).

        Returns:
            The new version, e.g. ``"v0001-2011-01-05"``.

        Raises:
            ModelRegistryError: An argument is invalid, the parent is unknown, or a field
                cannot be written as JSON.
        """
        _check_day(day)
        self._check_kind_and_parent(kind, parent)
        _check_feature_columns(booster, feature_columns)
        _check_partitions(training_partitions)

        model_bytes = bytes(booster.save_raw("ubj"))
        record = {
            "day": day,
            "kind": kind,
            "parent": parent,
            "feature_columns": list(feature_columns),
            "training_partitions": [dict(partition) for partition in training_partitions],
            "params": params,
            "metrics": metrics,
            "extra": extra,
            "tree_count": tree_count(booster),
            "model_file": MODEL_FILE,
            "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
            "created_at": _now(),
            "xgboost_version": xgb.__version__,
        }
        with self._writer_lock():
            existing = self._same_model(day, kind, parent, record["model_sha256"])
            if existing is not None:
                # A rerun after a crash trains the same bytes again; keep one version of them.
                logger.info("model of %s is already registered as %s", day, existing)
                return existing
            version = self._publish_version(model_bytes, record)
        logger.info("registered %s (%s, parent %s, %d trees)", version, kind, parent, record["tree_count"])
        return version

    def _same_model(self, day: str, kind: str, parent: str | None, sha256: str) -> str | None:
        """Return the version holding exactly this model for this day and parent, if any."""
        for version in reversed(self.versions()):
            meta = self.metadata(version)
            if meta.get("day") != day:
                continue
            if (meta.get("kind"), meta.get("parent"), meta.get("model_sha256")) == (kind, parent, sha256):
                return version
        return None

    def update_metadata(self, version: str, **fields: object) -> dict:
        """Add or replace top-level metadata fields of a version, rewriting the file atomically.

        Args:
            version: A registered version.
            **fields: JSON-ready values, e.g. ``gate=...``, ``drift=...``, ``reports=...``.

        Returns:
            The updated metadata.

        Raises:
            ModelRegistryError: The version is unknown, or a field is fixed at registration
                (see ``IMMUTABLE_FIELDS``) or not JSON-ready.
        """
        fixed = sorted(IMMUTABLE_FIELDS.intersection(fields))
        if fixed:
            raise ModelRegistryError(
                f"cannot change {fixed} of {version}: they are fixed at registration; register a new version instead"
            )
        with self._writer_lock():
            record = self.metadata(version)
            record.update(fields)
            record["updated_at"] = _now()
            _write_json_atomically(self._version_dir(version) / METADATA_FILE, _to_json(record, version))
        return record

    def metadata(self, version: str) -> dict:
        """Return the metadata record of a version.

        Raises:
            ModelRegistryError: The version is unknown or its metadata is unreadable.
        """
        path = self._existing_version_dir(version) / METADATA_FILE
        return _read_json(path)

    def load(self, version: str) -> xgb.Booster:
        """Load a version's model, after checking the file against its recorded sha256.

        Raises:
            ModelRegistryError: The version is unknown, or its model file is missing or altered.
        """
        record = self.metadata(version)
        path = self._version_dir(version) / record["model_file"]
        try:
            model_bytes = path.read_bytes()
        except FileNotFoundError as exc:
            raise ModelRegistryError(f"{path}: model file of {version} is missing; re-register the model") from exc
        digest = hashlib.sha256(model_bytes).hexdigest()
        if digest != record["model_sha256"]:
            raise ModelRegistryError(
                f"{path}: sha256 {digest} differs from the recorded {record['model_sha256']}; "
                "the file was altered after registration. Re-register the model or roll back to another version."
            )
        booster = xgb.Booster()
        booster.load_model(bytearray(model_bytes))
        return booster

    def versions(self) -> list[str]:
        """Return the registered versions, oldest first."""
        if not self.models_dir.is_dir():
            return []
        numbered = {}
        for path in self.models_dir.iterdir():
            match = VERSION_PATTERN.match(path.name)
            if match and path.is_dir():
                numbered[int(match.group(1))] = path.name
        return [numbered[number] for number in sorted(numbered)]

    def lineage(self, version: str) -> list[dict]:
        """Return metadata records from ``version`` back through its parents to the nearest full model.

        Returns:
            Records ordered from ``version`` to the full model, both included.

        Raises:
            ModelRegistryError: A version in the chain is unknown, a continued model has no
                parent, or the parents form a cycle.
        """
        chain: list[dict] = []
        seen: set[str] = set()
        current: str | None = version
        while current is not None:
            if current in seen:
                raise ModelRegistryError(f"lineage of {version} loops back to {current}; the metadata is inconsistent")
            seen.add(current)
            record = self.metadata(current)
            chain.append(record)
            if record["kind"] == "full":
                return chain
            current = record["parent"]
        raise ModelRegistryError(
            f"lineage of {version} ends at {chain[-1]['version']}, a continued model without a parent; "
            "the metadata is inconsistent"
        )

    # Champion pointer and deployment history

    def champion(self) -> str | None:
        """Return the deployed version, or None before the first deployment.

        Raises:
            ModelRegistryError: ``champion.json`` is unreadable or names an unknown version.
        """
        path = self.root / CHAMPION_FILE
        if not path.exists():
            return None
        version = _read_json(path).get("version")
        if not isinstance(version, str) or not self._version_dir(version).is_dir():
            raise ModelRegistryError(
                f"{path} names {version!r}, which is not a registered version. "
                f"Deploy a registered version with `freshrank deploy`. {_STATUS_HINT}"
            )
        return version

    def champion_for(self, day: str) -> str | None:
        """Return the champion that day ``day``'s pipeline starts from.

        That is the champion as of the start of the day, normally the current champion. When
        the current champion was trained for ``day`` or a later day, the day is being rerun
        after its own deployment (for example after a crash), so the newest earlier champion
        is returned. A rerun of a
        day therefore trains and evaluates against the same champion as the first run.

        Args:
            day: The partition, ``YYYY-MM-DD``.

        Returns:
            The version, or None when no champion was trained for an earlier day.
        """
        _check_day(day)
        current = self.champion()
        if current is None or self.metadata(current).get("day", "") < day:
            return current
        pointer = _read_json(self.root / CHAMPION_FILE)
        candidates = [pointer.get("previous")] + [event.get("previous") for event in reversed(self.history())]
        for version in candidates:
            if version and self._version_dir(version).is_dir() and self.metadata(version).get("day", "") < day:
                return version
        return None

    def deploy(self, version: str, *, reason: str, lineage: dict | None = None) -> None:
        """Make a version the champion and record the deployment event.

        Args:
            version: A registered version.
            reason: Why it is deployed (e.g. the gate decision), kept in the history.
            lineage: Extra deployment record (e.g. partitions, check results, report paths).

        Raises:
            ModelRegistryError: The version is unknown.
        """
        with self._writer_lock():
            self._existing_version_dir(version)
            if self._finish_interrupted_deploy(version, reason=reason, lineage=lineage):
                return
            crash_point("registry.before_pointer")
            self._move_pointer("deploy", version, reason=reason, lineage=lineage)

    def rollback(self, version: str | None = None, *, reason: str = "rollback") -> str:
        """Move the champion pointer back to an earlier champion.

        Deployments and rollbacks form a stack: a deployment pushes a version, and a rollback
        pops back to its target, so repeated rollbacks walk further back in history. A rollback
        to a version that was popped earlier pushes it again.

        Args:
            version: Any version that was champion before; None returns to the champion below
                the current one on the stack.
            reason: Why, kept in the history.

        Returns:
            The version that is now the champion.

        Raises:
            ModelRegistryError: There is no champion, no earlier champion, or ``version`` is
                unknown, is the current champion, or was never deployed.
        """
        with self._writer_lock():
            current = self.champion()
            if current is None:
                raise ModelRegistryError("there is no champion to roll back from; deploy a version first")
            stack = self._champion_stack(current)
            target = self._rollback_target(stack, version, current)
            self._move_pointer("rollback", target, reason=reason, lineage=None)
        logger.warning("rolled back from %s to %s: %s", current, target, reason)
        return target

    def history(self) -> list[dict]:
        """Return the deployment and rollback events, oldest first.

        Raises:
            ModelRegistryError: A line of ``deployments.jsonl`` is not valid JSON.
        """
        path = self.root / DEPLOYMENTS_FILE
        if not path.exists():
            return []
        events = []
        for line_number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ModelRegistryError(
                    f"{path}, line {line_number}: invalid JSON ({exc}); repair or remove that line"
                ) from exc
        return events

    # Private helpers

    def _version_dir(self, version: str) -> Path:
        return self.models_dir / version

    def _existing_version_dir(self, version: str) -> Path:
        path = self._version_dir(version)
        if not VERSION_PATTERN.match(str(version)) or not path.is_dir():
            raise ModelRegistryError(f"unknown model version {version!r} in {self.models_dir}. {_STATUS_HINT}")
        return path

    def _check_kind_and_parent(self, kind: str, parent: str | None) -> None:
        if kind not in MODEL_KINDS:
            raise ModelRegistryError(f"model kind must be one of {list(MODEL_KINDS)}, got {kind!r}")
        if kind == "continued" and parent is None:
            raise ModelRegistryError("a continued model needs the parent version it was boosted from")
        if parent is not None:
            self._existing_version_dir(parent)

    def _publish_version(self, model_bytes: bytes, record: dict) -> str:
        """Write the version folder under a temporary name, then rename it to the next version."""
        self.models_dir.mkdir(parents=True, exist_ok=True)
        staging = self.models_dir / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            number = self._next_number()
            version = f"v{number:04d}-{record['day']}"
            metadata = {"version": version, "number": number, **record}
            _write_and_sync(staging / MODEL_FILE, model_bytes)
            _write_and_sync(staging / METADATA_FILE, _to_json(metadata, version))
            _sync_dir(staging)
            os.rename(staging, self._version_dir(version))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _sync_dir(self.models_dir)
        return version

    def _next_number(self) -> int:
        numbers = [int(VERSION_PATTERN.match(name).group(1)) for name in self.versions()]
        # NOTE: numbers come from the folders present, so deleting the newest version folder
        # by hand lets its number be issued again.
        return max(numbers, default=0) + 1

    def _champion_stack(self, current: str) -> list[str]:
        """Replay the history into the stack of champions, the current one on top."""
        stack: list[str] = []
        for event in self.history():
            version = event["version"]
            if event["kind"] == "rollback" and version in stack:
                del stack[len(stack) - stack[::-1].index(version) :]
            elif not stack or stack[-1] != version:
                stack.append(version)
        if not stack or stack[-1] != current:
            # A writer stopped between moving the pointer and appending its event.
            logger.warning("champion %s has no deployment event; treating it as the latest deployment", current)
            stack.append(current)
        return stack

    def _rollback_target(self, stack: list[str], version: str | None, current: str) -> str:
        if version is None:
            if len(stack) < 2:
                raise ModelRegistryError(
                    f"{current} is the only champion in the deployment history, so there is nothing to roll back to. "
                    f"Deploy another version instead. {_STATUS_HINT}"
                )
            return stack[-2]
        self._existing_version_dir(version)
        if version == current:
            raise ModelRegistryError(f"{version} is already the champion; name an earlier champion to roll back to")
        ever_deployed = {event["version"] for event in self.history()}
        if version not in ever_deployed:
            raise ModelRegistryError(
                f"{version} was never deployed, so it is not an earlier champion "
                f"(earlier champions: {sorted(ever_deployed - {current})}); use `freshrank deploy` to deploy it"
            )
        return version

    def _move_pointer(self, kind: str, version: str, *, reason: str, lineage: dict | None) -> None:
        """Replace champion.json atomically, then append the event to deployments.jsonl."""
        previous = self.champion()
        event = {
            "kind": kind,
            "version": version,
            "previous": previous,
            "reason": reason,
            "lineage": lineage,
            "at": _now(),
        }
        pointer = {"version": version, "previous": previous, "reason": reason, "deployed_at": event["at"]}
        _write_json_atomically(self.root / CHAMPION_FILE, _to_json(pointer, version))
        crash_point("registry.after_pointer")
        _append_line(self.root / DEPLOYMENTS_FILE, json.dumps(event, sort_keys=True, default=_json_default))
        logger.info("%s: champion %s -> %s (%s)", kind, previous, version, reason)

    def _finish_interrupted_deploy(self, version: str, *, reason: str, lineage: dict | None) -> bool:
        """Handle a deployment of the version that is already champion; return True if it was one.

        The pointer is left alone, so ``previous`` keeps naming the champion before it. When
        the history lacks the deployment (the process stopped between moving the pointer and
        appending the event), the event is appended now.
        """
        if self.champion() != version:
            return False
        events = self.history()
        if events and events[-1].get("version") == version:
            logger.info("%s is already the champion; nothing to deploy", version)
            return True
        pointer = _read_json(self.root / CHAMPION_FILE)
        event = {
            "kind": "deploy",
            "version": version,
            "previous": pointer.get("previous"),
            "reason": reason,
            "lineage": lineage,
            "at": pointer.get("deployed_at") or _now(),
        }
        _append_line(self.root / DEPLOYMENTS_FILE, json.dumps(event, sort_keys=True, default=_json_default))
        logger.warning("%s was champion without its deployment event (an interrupted deployment); event recorded", version)
        return True

    @contextlib.contextmanager
    def _writer_lock(self) -> Iterator[None]:
        """Hold an exclusive lock on ``<root>/.lock`` so that writers do not interleave."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)


def _check_day(day: str) -> None:
    try:
        datetime.strptime(day, DAY_FORMAT)
    except (TypeError, ValueError) as exc:
        raise ModelRegistryError(f"day must be a date written YYYY-MM-DD, got {day!r}") from exc


def _check_feature_columns(booster: xgb.Booster, feature_columns: list[str]) -> None:
    model_features = list(booster.feature_names or [])
    if model_features != list(feature_columns):
        raise ModelRegistryError(
            f"feature_columns {list(feature_columns)} differ from the model's feature names {model_features}; "
            "pass the columns the model was trained on"
        )


def _check_partitions(training_partitions: list[dict]) -> None:
    for index, partition in enumerate(training_partitions):
        missing = [key for key in ("day", "data_version") if key not in partition]
        if missing:
            raise ModelRegistryError(
                f"training_partitions[{index}] = {partition!r} is missing {missing}; "
                'each item needs {"day": ..., "data_version": ...}'
            )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _json_default(value: object) -> object:
    """Convert numpy scalars and arrays and paths, which the ``json`` module cannot encode, to Python values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _to_json(record: dict, version: str) -> bytes:
    try:
        text = json.dumps(record, indent=2, sort_keys=True, allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ModelRegistryError(
            f"metadata of {version} cannot be written as JSON ({exc}); pass plain numbers, strings, "
            "lists and dicts, with None in place of NaN"
        ) from exc
    return (text + "\n").encode()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelRegistryError(f"{path} is missing. {_STATUS_HINT}") from exc
    except json.JSONDecodeError as exc:
        raise ModelRegistryError(f"{path}: invalid JSON ({exc}); the registry file is damaged") from exc


def _write_and_sync(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _sync_dir(path: Path) -> None:
    """Flush a folder's entries, so that a rename in it survives a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json_atomically(path: Path, data: bytes) -> None:
    """Replace a file with a synced temporary file in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    try:
        _write_and_sync(temp, data)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _sync_dir(path.parent)


def _append_line(path: Path, line: str) -> None:
    """Append one line with a single write, then sync it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
