"""A realistic, reproducible workload: news events of ~500 bytes, a few entities each, with
entity popularity skewed like news (a few entities in many events, most in few: Zipf-like)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

KINDS = ["outage", "statement", "political_move", "report"]
WORDS = (
    "outage service users report failures platform government policy statement meeting contribution "
    "election market shares backlash minister company court ruling conflict ceasefire storm flood "
    "network datacenter attack claim group analysts investors regulators parliament summit"
).split()


def entity_pool(size: int) -> list[dict[str, str]]:
    types = ["person", "organization", "group", "place", "product"]
    return [{"id": f"entity-{i}", "name": f"Entity {i}", "type": types[i % len(types)]} for i in range(size)]


def events(n: int, *, seed: int = 7, entities: int = 20_000) -> Iterator[dict]:
    rng = random.Random(seed)
    pool = entity_pool(entities)
    weights = [1.0 / (rank + 1) ** 1.1 for rank in range(entities)]  # Zipf-like popularity
    cumulative = []
    total = 0.0
    for w in weights:
        total += w
        cumulative.append(total)
    for i in range(n):
        chosen: dict[str, dict] = {}
        for _ in range(rng.randint(2, 4)):
            e = pool[_pick(rng, cumulative, total)]
            chosen[e["id"]] = e
        ents = [
            {**e, "role": role}
            for e, role in zip(chosen.values(), ["subject", "actor", "target", "mentioned"])
        ]
        kind = KINDS[i % 4]
        first = ents[0]["id"]
        details = {
            "outage": {"service": "X", "duration_minutes": rng.randint(1, 600), "cause": "unknown"},
            "statement": {"speaker": first, "quote": " ".join(rng.choices(WORDS, k=12)), "medium": "post on X"},
            "political_move": {"actor": first, "action": "meeting"},
            "report": {"category": "business"},
        }[kind]
        year = rng.randint(2015, 2025)
        month = rng.randint(1, 12)
        day = rng.randint(1, 28)
        occurred = rng.choice([f"{year}", f"{year}-{month:02d}", f"{year}-{month:02d}-{day:02d}",
                               f"{year}-{month:02d}-{day:02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}Z"])
        yield {
            "id": f"bench-{seed}-{i}",
            "kind": kind,
            "occurred_at": occurred,
            "headline": " ".join(rng.choices(WORDS, k=10)).capitalize(),
            "summary": " ".join(rng.choices(WORDS, k=30)).capitalize() + ".",
            "entities": ents,
            "sources": [{"url": f"https://news.example/{i}", "publisher": "Example Wire"}],
            "details": details,
        }


def _pick(rng: random.Random, cumulative: list[float], total: float) -> int:
    import bisect

    return bisect.bisect_left(cumulative, rng.random() * total)


def lines(n: int, *, seed: int = 7) -> Iterator[bytes]:
    for event in events(n, seed=seed):
        yield json.dumps(event, separators=(",", ":")).encode()
