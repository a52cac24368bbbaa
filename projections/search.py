"""The search projection: a full-text index of every timeline version's headline and summary,
and the query language of ``q`` (``match_expression``).

FTS5, contentless, English words stemmed (Porter: "refugees" finds "refugee"), accents
ignored. A row's rowid is the version's id in the timelines
projection (``tl_events.valid_from``: the position of the change that made the version), so
a search joins the versions valid at the position a read answers for. Rows are never
removed: a version that stops being true is filtered out by that join.

A rebuild lets FTS5 merge its index segments sixteen at a time instead of four (``automerge``):
the index is rewritten fewer times while it is filled; once caught up it goes back to four, so
that live writes keep merging as they always do.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from .changes import Change
from .engine import Projection
from .erasure import Erased

SEARCH = "tl_search"
AUTOMERGE = 4  # FTS5's default
REBUILD_AUTOMERGE = 16


class SearchProjection(Projection):
    name = "search"
    version = 2  # 2: Porter stemming
    schema = {
        SEARCH: [
            "CREATE VIRTUAL TABLE {t} USING fts5(headline, summary, content='',"
            " tokenize='porter unicode61 remove_diacritics 2')",
        ],
    }

    def create(self, conn: sqlite3.Connection, tag: str, *, indexes: bool = True) -> None:
        super().create(conn, tag, indexes=indexes)
        if not indexes:  # a rebuild's table: read once caught up, when create_indexes runs
            self._automerge(conn, tag, REBUILD_AUTOMERGE)

    def create_indexes(self, conn: sqlite3.Connection, tag: str) -> None:
        self._automerge(conn, tag, AUTOMERGE)

    def _automerge(self, conn: sqlite3.Connection, tag: str, segments: int) -> None:
        t = self.table(SEARCH, tag)
        conn.execute(f"INSERT INTO {t} ({t}, rank) VALUES ('automerge', ?)", (segments,))

    def bulk(self, conn: sqlite3.Connection, tag: str, low: int, high: int, *, deferred: bool = False) -> None:
        conn.execute(
            f"""INSERT INTO {self.table(SEARCH, tag)} (rowid, headline, summary)
                SELECT e.position, e.body ->> 'headline', coalesce(e.body ->> 'summary', '')
                FROM event_meta m JOIN events e ON e.position = m.position
                WHERE m.position > ? AND m.position <= ? AND m.plain""",
            (low, high),
        )

    def apply(self, conn: sqlite3.Connection, changes: Sequence[Change], tag: str, *, deferred: bool = False) -> None:
        rows = [
            (change.position, change.new.body["headline"], change.new.body.get("summary") or "")
            for change in changes
            if change.new is not None
        ]
        conn.executemany(f"INSERT INTO {self.table(SEARCH, tag)} (rowid, headline, summary) VALUES (?, ?, ?)", rows)

    def remove(self, conn: sqlite3.Connection, tag: str, gone: Erased, reached: int) -> None:
        """Delete each version's tokens (a contentless index needs the text it was given), then
        merge every segment into one, so that no page keeps a token of the event."""
        if gone.kind == "entity_alias":
            return  # aliases are merged when reading: no rows of this projection
        t = self.table(SEARCH, tag)
        conn.executemany(
            f"INSERT INTO {t} ({t}, rowid, headline, summary) VALUES ('delete', ?, ?, ?)",
            [version for version in gone.versions if version[0] <= reached],
        )
        conn.execute(f"INSERT INTO {t} ({t}) VALUES ('optimize')")


# --- the query language ------------------------------------------------------------------------
#
# What people type, turned into an FTS5 expression in which every word is a quoted string (FTS5's
# own tokenizer splits and stems it, as it did the text), so no input is an FTS5 syntax error:
#
#   refugees boat        both words (AND is implied; ``AND`` may be written)
#   lesbos OR hungary    either (``OR`` in capitals; lower-case "or" is a word)
#   refugees NOT lesbos  the first without the second (also ``-lesbos``)
#   "border fence"       the words next to each other, in this order
#   Hungar*              words that start so (a stem's start: ``run*`` finds "running")
#   (a OR b) c           grouping
#   NEAR(a b, 5)         a and b at most 5 words apart (10 without the number)
#   headline:fence       in the headline only (or ``summary:``)
#
# Anything else is read as best it can be: an unbalanced quote or parenthesis is closed at the
# end, characters that are neither letters nor digits separate words, operators with nothing on
# one side are dropped. A query with no word left, or with only excluded words, is refused.

COLUMNS = ("headline", "summary")
MAX_DEPTH = 8  # parentheses nested deeper are ignored (FTS5 has a depth limit of its own)
# Words a query may look for (those it excludes, and each word of a phrase, count too): FTS5
# ranks every match of every word, so a query's cost grows with its words (6,000 events that
# each hold every word: 16 words 0.3 s, 32 words 1 s, 64 words 4 s, 125 words past 10 s).
MAX_WORDS = 32
_WORD = re.compile(r"[^\W_]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TOKEN = re.compile(r'"(?P<phrase>[^"]*)"?(?P<star>\*?)|(?P<open>\()|(?P<close>\))|(?P<word>[^\s"()]+)')
_COLUMN = re.compile(rf"^({'|'.join(COLUMNS)}):", re.IGNORECASE)


class SearchSyntaxError(ValueError):
    """A query that asks for nothing that can be looked up."""


@dataclass
class _Term:
    text: str
    prefix: bool = False
    column: str | None = None

    def render(self) -> str:
        out = '"' + self.text + '"' + (" *" if self.prefix else "")
        return f"{self.column} : {out}" if self.column else out


@dataclass
class _Near:
    terms: list[_Term]
    distance: int | None
    column: str | None = None

    def render(self) -> str:
        phrases = " ".join(t.render() for t in self.terms)
        near = f"NEAR({phrases}, {self.distance})" if self.distance is not None else f"NEAR({phrases})"
        return f"{self.column} : {near}" if self.column else near


# The parsed query: terms and NEAR groups combined by these. ``_Query.render`` writes the FTS5
# expression; another database's search renders the same tree its own way (projections.pg.search).


@dataclass
class _All:
    """Every item; ``grouped``: each item in parentheses even when there is one (a run of words)."""

    items: list["_Node"]
    grouped: bool = True


@dataclass
class _Any:
    items: list["_Node"]


@dataclass
class _Without:
    wanted: "_Node"
    unwanted: "_Node"


_Node = _Term | _Near | _All | _Any | _Without


def render(node: _Node) -> str:
    """The FTS5 expression of a parsed query."""
    if isinstance(node, (_Term, _Near)):
        return node.render()
    if isinstance(node, _All):
        if len(node.items) == 1 and not node.grouped:
            return render(node.items[0])
        return " AND ".join(_group(render(i)) for i in node.items)
    if isinstance(node, _Any):
        if len(node.items) == 1:
            return render(node.items[0])
        return " OR ".join(_group(render(i)) for i in node.items)
    return f"({render(node.wanted)}) NOT ({render(node.unwanted)})"


def _has_word(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def _tokens(q: str) -> list[tuple[str, str, bool]]:
    """(kind, text, prefix) with kind ``term``, ``(``, ``)``, ``OR``, ``AND``, ``NOT``, ``NEAR``, ``*``, ``-``."""
    q = _CONTROL.sub(" ", q.encode("utf-8", "replace").decode("utf-8"))
    out: list[tuple[str, str, bool]] = []
    for m in _TOKEN.finditer(q):
        if m.group("open"):
            if out and out[-1][:2] == ("term", "NEAR"):
                out[-1] = ("NEAR", "", False)
            out.append(("(", "", False))
        elif m.group("close"):
            out.append((")", "", False))
        elif m.group("word") is not None:
            word = m.group("word")
            if word in ("OR", "AND", "NOT"):
                out.append((word, "", False))
                continue
            if word.startswith("-") and len(word) > 1 and not (out and out[-1][0] == "NOT"):
                out.append(("-", "", False))
                word = word[1:]
            stripped = word.rstrip("*")
            if not stripped:
                out.append(("*", "", False))
            else:
                out.append(("term", stripped, stripped != word))
        else:
            out.append(("term", m.group("phrase"), bool(m.group("star"))))
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str, bool]]) -> None:
        self.tokens = tokens
        self.i = 0
        self.words = 0  # in the terms made so far

    def term(self, text: str, prefix: bool = False, column: str | None = None) -> _Term:
        self.words += len(_WORD.findall(text))
        return _Term(text, prefix, column)

    def peek(self) -> str | None:
        return self.tokens[self.i][0] if self.i < len(self.tokens) else None

    def parse(self) -> _Node | None:
        parts = []
        while self.i < len(self.tokens):
            parts.append(self.either(0))
            if self.peek() == ")":  # a ")" that closes nothing: read on, as if it were not there
                self.i += 1
        kept = [p for p in parts if p]
        return _All(kept, grouped=False) if kept else None

    def either(self, depth: int) -> _Node | None:
        branches = [self.both(depth)]
        while self.peek() == "OR":
            self.i += 1
            branches.append(self.both(depth))
        kept = [b for b in branches if b]
        return _Any(kept) if kept else None

    def both(self, depth: int) -> _Node | None:
        wanted: list[_Node] = []
        unwanted: list[_Node] = []
        negate = False
        column: str | None = None
        while (kind := self.peek()) not in (None, ")", "OR"):
            kind, text, prefix = self.tokens[self.i]
            self.i += 1
            item: _Node | None = None
            if kind in ("NOT", "-"):
                negate = not negate
                continue
            if kind == "*":  # "hungar *": the word before is a prefix
                last = (unwanted if negate else wanted)[-1:] or [None]
                if isinstance(last[0], _Term):
                    last[0].prefix = True
                continue
            if kind == "AND":
                continue
            if kind == "term":
                found = _COLUMN.match(text)
                if found:
                    column, text = found.group(1).lower(), text[found.end():]
                    if not text:  # "headline: fence": for the next word
                        continue
                if _has_word(text):
                    item = self.term(text, prefix, column)
            elif kind == "NEAR":
                item = self.near(column)
            elif kind == "(" and depth < MAX_DEPTH:
                item = self.either(depth + 1)
                if self.peek() == ")":
                    self.i += 1
            column = None
            if item is not None:
                (unwanted if negate else wanted).append(item)
                negate = False
        if not wanted:
            if unwanted:
                raise SearchSyntaxError(
                    "NOT (or -) excludes words from what the rest of the query finds: give a word to look for,"
                    " e.g. 'refugees NOT lesbos'"
                )
            return None
        expr: _Node = _All(wanted)
        if unwanted:
            expr = _Without(expr, _Any(unwanted))
        return expr

    def near(self, column: str | None) -> _Node | None:
        """The inside of ``NEAR(`` (consumed): words and phrases, then ``, N`` or ``,N``."""
        self.i += 1  # the "("
        terms: list[_Term] = []
        distance: int | None = None
        comma = False
        while (kind := self.peek()) not in (None, ")"):
            kind, text, prefix = self.tokens[self.i]
            self.i += 1
            if kind == "*" and terms:
                terms[-1].prefix = True
            if kind != "term":
                continue
            pieces = text.split(",")
            for n, piece in enumerate(pieces):
                comma = comma or n > 0
                word = piece.rstrip("*")
                if comma and word.isdigit() and word.isascii():
                    distance = min(int(word), 10_000)
                elif _has_word(word):
                    terms.append(self.term(word, word != piece or (prefix and n == len(pieces) - 1)))
        if self.peek() == ")":
            self.i += 1
        if not terms:
            return None
        if len(terms) == 1:
            return _Term(terms[0].text, terms[0].prefix, column)
        return _Near(terms, distance, column)


def _group(expr: str) -> str:
    return expr if expr.startswith('"') and expr.count('"') == 2 else f"({expr})"


def parse_query(q: str) -> _Node:
    """What a user typed in ``q``, parsed (the language above).

    Raises ``SearchSyntaxError`` when there is nothing to look for, or more than ``MAX_WORDS`` words.
    """
    parser = _Parser(_tokens(q))
    expr = parser.parse()
    if expr is None:
        raise SearchSyntaxError("needs at least one word (a letter or digit) to look for")
    if parser.words > MAX_WORDS:
        raise SearchSyntaxError(
            f"at most {MAX_WORDS} words (a phrase's words and excluded words count): this query has {parser.words}"
        )
    return expr


def match_expression(q: str) -> str:
    """The FTS5 expression for what a user typed in ``q`` (the language above).

    Raises ``SearchSyntaxError`` when there is nothing to look for, or more than ``MAX_WORDS`` words.
    """
    return render(parse_query(q))
