"""Synthetic shop: deterministic daily view, add-to-cart and purchase events.

The shop is the default data of the demo and of the scale benchmarks; it needs no
download. Its model:

- Items have a Zipf-like popularity (weight ``rank ** -ZIPF_EXPONENT`` over a random
  ranking), one of ``categories`` categories, a lognormal price around a per-category
  price level, and a latent quality.
- Users have an activity level (lognormal) and a preferred category mix: a Dirichlet
  draw over all categories whose ``PREFERRED_CATEGORIES`` largest shares are kept.
  Each user also has ``FAVOURITES_PER_USER`` favourite items in those categories.
- A day has sessions of users drawn by activity. A view's category comes from the
  user's mix with probability ``PREFERENCE_SHARE``, and the item from popularity within
  that category; other views follow global popularity. Views become carts with a
  probability rising with user-category affinity and item quality, and carts become
  purchases likewise. Some sessions buy one of the user's favourite items again.
- Weekend days have ``WEEKEND_FACTOR`` times the volume of weekdays.

Everything is drawn from numpy Generators: the items and users from ``seed`` alone, and
a day from ``(seed, day_index)``. So any day can be generated alone, and it equals the
same day of a full run.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from freshrank.importers.landing import STRING_DTYPE, to_canonical, write_day
from freshrank.schema import DAY_FORMAT, EVENT_TYPES

logger = logging.getLogger(__name__)

ZIPF_EXPONENT = 1.0
"""Exponent of the item popularity power law."""
PREFERENCE_CONCENTRATION = 0.3
"""Dirichlet concentration of a user's category mix; below 1 gives a few strong favourites."""
PREFERRED_CATEGORIES = 4
"""Categories kept in a user's mix (the largest Dirichlet shares, renormalized)."""
PREFERENCE_SHARE = 0.75
"""Share of views whose category is drawn from the user's mix; the rest follow popularity."""
FAVOURITES_PER_USER = 3
"""Items per user that the user buys again now and then."""
REPEAT_SESSION_SHARE = 0.08
"""Share of sessions that view, cart and buy one of the user's favourite items."""
MEAN_SESSION_VIEWS = 5.0
"""Mean number of popularity-driven views per session."""
EVENTS_PER_SESSION = 5.8
"""Mean events per session (views, carts, purchases, repeat purchases).

Measured with the other constants of this module. It turns the day's target volume into a
number of sessions, so it must be measured again when they change."""
DEFAULT_EVENTS_PER_USER = 2.0
"""Weekday events per user when ``ShopSpec.events_per_day`` is None."""
WEEKEND_FACTOR = 1.3
"""Volume of a Saturday or Sunday relative to a weekday."""
DAILY_VOLUME_SIGMA = 0.05
"""Sigma of the lognormal day-to-day volume noise."""
CART_LOGIT = (-4.3, 0.9, 0.6)
"""Intercept, log1p(affinity) and quality coefficients of the view -> cart logit."""
PURCHASE_LOGIT = (-1.2, 0.3, 0.5)
"""Intercept, log1p(affinity) and quality coefficients of the cart -> purchase logit."""
HOURLY_PROFILE = np.array(
    [1.0, 0.6, 0.4, 0.3, 0.3, 0.4, 0.8, 1.5, 2.5, 3.0, 3.2, 3.5,
     4.0, 3.8, 3.5, 3.4, 3.5, 4.0, 4.5, 5.0, 5.2, 4.5, 3.0, 1.8]
)  # fmt: skip
"""Relative session starts per local hour of the day."""

_WORLD_STREAM = 0
_DAY_STREAM = 1
_USER_CHUNK = 65536


@dataclass(frozen=True)
class ShopSpec:
    """Size and seed of a synthetic shop.

    Attributes:
        days: Number of days.
        users: Number of users.
        items: Number of items; at least ``categories``.
        seed: Seed of every random draw.
        start: Date of day 0, a calendar day in ``timezone``.
        categories: Number of item categories.
        events_per_day: Mean events of a weekday before noise; None means
            ``DEFAULT_EVENTS_PER_USER * users``. Weekend days get ``WEEKEND_FACTOR`` times
            as many. The realised count varies by a few percent around it.
        timezone: IANA name of the business timezone whose calendar days are the days.
    """

    days: int
    users: int
    items: int
    seed: int
    start: date = date(2024, 1, 1)
    categories: int = 20
    events_per_day: int | None = None
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        for name in ("days", "users", "items", "categories"):
            if getattr(self, name) < 1:
                raise ValueError(f"ShopSpec.{name} must be at least 1, not {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"ShopSpec.seed must be a non-negative integer, not {self.seed}")
        if self.items < self.categories:
            raise ValueError(
                f"ShopSpec.items ({self.items}) must be at least ShopSpec.categories ({self.categories}) "
                "so that every category has an item"
            )
        if self.events_per_day is not None and self.events_per_day < 1:
            raise ValueError(f"ShopSpec.events_per_day must be at least 1 or None, not {self.events_per_day}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {self.timezone!r}; use an IANA name such as 'Europe/London'") from exc

    @property
    def weekday_events(self) -> float:
        """Mean events of a weekday before noise."""
        if self.events_per_day is None:
            return DEFAULT_EVENTS_PER_USER * self.users
        return float(self.events_per_day)

    def day(self, day_index: int) -> date:
        """Return the calendar date of ``day_index``."""
        return self.start + timedelta(days=day_index)


@dataclass(frozen=True)
class _World:
    """Items and users of a shop; depends on the seed and the sizes only."""

    item_category: np.ndarray  # int32, per item
    item_price: np.ndarray  # float64, per item
    item_quality: np.ndarray  # float64, per item
    global_cdf: np.ndarray  # cumulative popularity over items in id order
    by_category: np.ndarray  # item ids sorted by category
    category_cdf: np.ndarray  # cumulative popularity over ``by_category``
    category_bounds: np.ndarray  # (categories, 2): cdf value at each category's start and end
    user_categories: np.ndarray  # (users, PREFERRED_CATEGORIES) int32
    user_shares: np.ndarray  # (users, PREFERRED_CATEGORIES) float32, rows sum to 1
    activity_cdf: np.ndarray  # cumulative activity over users
    favourites: np.ndarray  # (users, FAVOURITES_PER_USER) int32 item ids
    user_names: pa.Array
    item_names: pa.Array
    category_names: pa.Array


def generate_day(spec: ShopSpec, day_index: int) -> pd.DataFrame:
    """Generate one day of events in the canonical schema, sorted by ``event_time``.

    The frame depends only on ``spec`` (not on ``spec.days``) and ``day_index``.

    Args:
        spec: The shop.
        day_index: Day number, from 0 (``spec.start``) to ``spec.days - 1``.

    Returns:
        Canonical frame: ``event_time`` (UTC, inside the local day), ``user_id``
        (``u000123``), ``item_id`` (``i004567``), ``event_type``, ``quantity``,
        ``price``, ``category`` (``c07``) and ``session_id`` (``20240101-0000042``).
    """
    if not 0 <= day_index < spec.days:
        raise ValueError(f"day_index must be in [0, {spec.days}), not {day_index}")

    world = _world(spec.seed, spec.users, spec.items, spec.categories)
    rng = np.random.default_rng([spec.seed, _DAY_STREAM, day_index])
    day = spec.day(day_index)
    day_start, day_end = _day_bounds_ms(day, spec.timezone)

    sessions = _draw_sessions(rng, world, spec, day, day_start)
    views = _draw_views(rng, world, sessions)
    events = _funnel(rng, world, sessions, views)
    events["time_ms"] = np.minimum(events["time_ms"], day_end - 1)
    return _to_frame(world, sessions, events, day)


def generate_shop(landing: Path, spec: ShopSpec) -> list[str]:
    """Write every day of the shop to ``<landing>/<YYYY-MM-DD>/events.parquet``.

    Days are generated and written one at a time, so only one day is in memory.

    Returns:
        The days written, as ``YYYY-MM-DD``.
    """
    written = []
    for day_index in range(spec.days):
        frame = generate_day(spec, day_index)
        label = spec.day(day_index).strftime(DAY_FORMAT)
        write_day(Path(landing), label, frame)
        written.append(label)
        logger.info("synthetic day %s: %d events", label, len(frame))
    return written


# Items and users -------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _world(seed: int, users: int, items: int, categories: int) -> _World:
    rng = np.random.default_rng([seed, _WORLD_STREAM])

    # Item i gets category i % categories, so every category has items.
    item_category = (np.arange(items) % categories).astype(np.int32)
    rank = rng.permutation(items) + 1
    popularity = rank.astype(np.float64) ** -ZIPF_EXPONENT
    category_price = rng.lognormal(mean=2.5, sigma=0.7, size=categories)
    item_price = np.round(category_price[item_category] * rng.lognormal(0.0, 0.4, size=items), 2)
    item_quality = rng.normal(0.0, 1.0, size=items)

    by_category = np.argsort(item_category, kind="stable")
    category_cdf = np.cumsum(popularity[by_category])
    ends = np.searchsorted(item_category[by_category], np.arange(categories), side="right")
    upper = category_cdf[ends - 1]
    lower = np.concatenate(([0.0], upper[:-1]))

    user_categories, user_shares = _user_preferences(rng, users, categories)
    activity = rng.lognormal(0.0, 1.0, size=users)

    world = _World(
        item_category=item_category,
        item_price=item_price,
        item_quality=item_quality,
        global_cdf=np.cumsum(popularity),
        by_category=by_category,
        category_cdf=category_cdf,
        category_bounds=np.stack([lower, upper], axis=1),
        user_categories=user_categories,
        user_shares=user_shares,
        activity_cdf=np.cumsum(activity),
        favourites=np.empty((0, 0), dtype=np.int32),
        user_names=_names("u", users, 6),
        item_names=_names("i", items, 6),
        category_names=_names("c", categories, 2),
    )
    return replace(world, favourites=_draw_favourites(rng, world, users))


def _user_preferences(rng: np.random.Generator, users: int, categories: int) -> tuple[np.ndarray, np.ndarray]:
    kept = min(PREFERRED_CATEGORIES, categories)
    user_categories = np.empty((users, kept), dtype=np.int32)
    user_shares = np.empty((users, kept), dtype=np.float32)
    # Chunks bound the users x categories matrix for shops with millions of users.
    for first in range(0, users, _USER_CHUNK):
        count = min(_USER_CHUNK, users - first)
        mix = rng.dirichlet(np.full(categories, PREFERENCE_CONCENTRATION), size=count)
        top = np.argsort(-mix, axis=1, kind="stable")[:, :kept]
        shares = np.take_along_axis(mix, top, axis=1)
        user_categories[first : first + count] = top
        user_shares[first : first + count] = shares / shares.sum(axis=1, keepdims=True)
    return user_categories, user_shares


def _draw_favourites(rng: np.random.Generator, world: _World, users: int) -> np.ndarray:
    owners = np.repeat(np.arange(users), FAVOURITES_PER_USER)
    categories = _preferred_category(rng, world, owners)
    return _item_in_category(rng, world, categories).reshape(users, FAVOURITES_PER_USER).astype(np.int32)


def _names(prefix: str, count: int, width: int) -> pa.Array:
    width = max(width, len(str(count - 1)))
    numbers = pc.cast(pa.array(np.arange(count, dtype=np.int64)), pa.string())
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(numbers, width=width, padding="0"), "")


# Sampling helpers ------------------------------------------------------------------------


def _preferred_category(rng: np.random.Generator, world: _World, users: np.ndarray) -> np.ndarray:
    cumulative = np.cumsum(world.user_shares[users], axis=1)
    draws = rng.random(len(users))[:, None]
    slot = np.minimum((cumulative < draws).sum(axis=1), cumulative.shape[1] - 1)
    return world.user_categories[users, slot]


def _item_in_category(rng: np.random.Generator, world: _World, categories: np.ndarray) -> np.ndarray:
    lower = world.category_bounds[categories, 0]
    upper = world.category_bounds[categories, 1]
    targets = lower + rng.random(len(categories)) * (upper - lower)
    positions = np.searchsorted(world.category_cdf, targets, side="right")
    return world.by_category[np.minimum(positions, len(world.by_category) - 1)]


def _popular_item(rng: np.random.Generator, world: _World, count: int) -> np.ndarray:
    targets = rng.random(count) * world.global_cdf[-1]
    positions = np.searchsorted(world.global_cdf, targets, side="right")
    return np.minimum(positions, len(world.global_cdf) - 1)


def _affinity(world: _World, users: np.ndarray, categories: np.ndarray) -> np.ndarray:
    """Return the user's share of each category times the number of categories (1 = uniform)."""
    matches = world.user_categories[users] == categories[:, None]
    shares = (world.user_shares[users] * matches).sum(axis=1)
    return shares * len(world.category_names)


def _sigmoid(logit: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logit))


# One day ---------------------------------------------------------------------------------


def _day_bounds_ms(day: date, timezone: str) -> tuple[int, int]:
    zone = ZoneInfo(timezone)
    start = datetime.combine(day, time(), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=zone)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def _draw_sessions(rng: np.random.Generator, world: _World, spec: ShopSpec, day: date, day_start: int) -> dict:
    volume = spec.weekday_events * (WEEKEND_FACTOR if day.weekday() >= 5 else 1.0)
    volume *= rng.lognormal(0.0, DAILY_VOLUME_SIGMA)
    count = max(1, int(round(volume / EVENTS_PER_SESSION)))

    targets = rng.random(count) * world.activity_cdf[-1]
    users = np.minimum(np.searchsorted(world.activity_cdf, targets, side="right"), len(world.activity_cdf) - 1)
    views = 1 + rng.poisson(MEAN_SESSION_VIEWS - 1.0, size=count)
    hours = rng.choice(24, size=count, p=HOURLY_PROFILE / HOURLY_PROFILE.sum())
    start_ms = day_start + (hours * 3600.0 + rng.random(count) * 3600.0) * 1000.0
    repeat = rng.random(count) < REPEAT_SESSION_SHARE
    return {"users": users, "views": views, "start_ms": start_ms.astype(np.int64), "repeat": repeat}


def _draw_views(rng: np.random.Generator, world: _World, sessions: dict) -> dict:
    session = np.repeat(np.arange(len(sessions["users"])), sessions["views"])
    users = sessions["users"][session]
    count = len(session)

    from_preferences = rng.random(count) < PREFERENCE_SHARE
    items = _popular_item(rng, world, count)
    preferred = _item_in_category(rng, world, _preferred_category(rng, world, users[from_preferences]))
    items[from_preferences] = preferred

    # Views of a session follow each other with exponential gaps (mean 60 s).
    gaps_ms = rng.exponential(60_000.0, size=count).astype(np.int64) + 1
    elapsed = np.cumsum(gaps_ms)
    first_of_session = np.cumsum(sessions["views"]) - sessions["views"]
    elapsed -= np.repeat(elapsed[first_of_session] - gaps_ms[first_of_session], sessions["views"])
    time_ms = sessions["start_ms"][session] + elapsed
    return {"session": session, "users": users, "items": items, "time_ms": time_ms}


def _funnel(rng: np.random.Generator, world: _World, sessions: dict, views: dict) -> dict[str, np.ndarray]:
    users, items = views["users"], views["items"]
    affinity = np.log1p(_affinity(world, users, world.item_category[items]))
    quality = world.item_quality[items]

    cart_chance = _sigmoid(CART_LOGIT[0] + CART_LOGIT[1] * affinity + CART_LOGIT[2] * quality)
    carted = rng.random(len(items)) < cart_chance
    cart_ms = views["time_ms"][carted] + rng.exponential(30_000.0, size=int(carted.sum())).astype(np.int64) + 1

    buy_logit = PURCHASE_LOGIT[0] + PURCHASE_LOGIT[1] * affinity[carted] + PURCHASE_LOGIT[2] * quality[carted]
    bought = rng.random(int(carted.sum())) < _sigmoid(buy_logit)
    buy_ms = cart_ms[bought] + rng.exponential(120_000.0, size=int(bought.sum())).astype(np.int64) + 1
    buy_quantity = 1.0 + rng.poisson(0.3, size=int(bought.sum()))

    repeat = _repeat_purchases(rng, world, sessions)
    cart_session = views["session"][carted]
    parts = [
        (views["session"], items, views["time_ms"], 0, np.ones(len(items))),
        (cart_session, items[carted], cart_ms, 1, np.ones(len(cart_ms))),
        (cart_session[bought], items[carted][bought], buy_ms, 2, buy_quantity),
        *repeat,
    ]
    return {
        "session": np.concatenate([part[0] for part in parts]),
        "items": np.concatenate([part[1] for part in parts]),
        "time_ms": np.concatenate([part[2] for part in parts]),
        "type": np.concatenate([np.full(len(part[0]), part[3], dtype=np.int8) for part in parts]),
        "quantity": np.concatenate([part[4] for part in parts]).astype(np.float64),
    }


def _repeat_purchases(rng: np.random.Generator, world: _World, sessions: dict) -> list[tuple]:
    """Return view, cart and purchase parts of favourite items bought again, one per repeat session."""
    session = np.flatnonzero(sessions["repeat"])
    slot = rng.integers(0, FAVOURITES_PER_USER, size=len(session))
    items = world.favourites[sessions["users"][session], slot]
    view_ms = sessions["start_ms"][session] + rng.exponential(20_000.0, size=len(session)).astype(np.int64)
    cart_ms = view_ms + rng.exponential(20_000.0, size=len(session)).astype(np.int64) + 1
    buy_ms = cart_ms + rng.exponential(60_000.0, size=len(session)).astype(np.int64) + 1
    quantity = 1.0 + rng.poisson(0.5, size=len(session))
    ones = np.ones(len(session))
    return [
        (session, items, view_ms, 0, ones),
        (session, items, cart_ms, 1, ones),
        (session, items, buy_ms, 2, quantity),
    ]


def _to_frame(world: _World, sessions: dict, events: dict[str, np.ndarray], day: date) -> pd.DataFrame:
    order = np.argsort(events["time_ms"], kind="stable")
    session = events["session"][order]
    items = events["items"][order]
    users = sessions["users"][session]

    session_names = _names(f"{day:%Y%m%d}-", len(sessions["users"]), 7)
    table = pa.table(
        {
            "event_time": pa.array(events["time_ms"][order], pa.timestamp("ms", tz="UTC")),
            "user_id": _take(world.user_names, users),
            "item_id": _take(world.item_names, items),
            "event_type": _take(pa.array(EVENT_TYPES), events["type"][order]),
            "quantity": events["quantity"][order],
            "price": world.item_price[items],
            "category": _take(world.category_names, world.item_category[items]),
            "session_id": _take(session_names, session),
        }
    )
    frame = table.to_pandas(types_mapper={pa.string(): STRING_DTYPE}.get)
    return to_canonical(frame)


def _take(names: pa.Array, indices: np.ndarray) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(indices.astype(np.int32)), names).dictionary_decode()
