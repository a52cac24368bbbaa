// The entity page (/ui/entities/{id}): its card, aliases and related entities, the filters, the
// entries on a time axis and in a list, and live changes from GET /entities/{id}/timeline/stream.
import { Axis } from "./axis.js";
import { ApiError, apiPath, el, entityHref, entrySpan, getJSON, humanDate, interval } from "./common.js";
import { Entries } from "./entries.js";

const PAGE = 500; // entries per request (the API's maximum)
const RELATED = 20;
// the API's date forms; (\+|-) rather than [+-]: the pattern attribute compiles with the v flag
const DATE_PATTERN = String.raw`[0-9]{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01])(T([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,9})?)?(Z|(\+|-)[0-9]{2}:?[0-9]{2}))?)?)?`;

const $ = (id) => document.getElementById(id);
const entityId = decodeURIComponent(location.pathname.split("/").pop());
const filters = readFilters(new URLSearchParams(location.search));

function readFilters(params) {
  return {
    q: params.get("q") || "",
    kind: params.getAll("kind"),
    role: params.get("role") || "",
    since: params.get("since") || "",
    until: params.get("until") || "",
    as_of: params.get("as_of") || "",
    include_retracted: params.get("include_retracted") === "true",
  };
}

function showFilters() {
  const form = $("filters");
  $("f-q").value = filters.q;
  for (const box of form.querySelectorAll('input[name="kind"]')) box.checked = filters.kind.includes(box.value);
  $("f-role").value = filters.role;
  $("f-since").value = filters.since;
  $("f-until").value = filters.until;
  $("f-as-of").value = filters.as_of;
  $("f-retracted").checked = filters.include_retracted;
  for (const input of form.querySelectorAll("input.date")) input.pattern = DATE_PATTERN;
  $("clear-filters").href = location.pathname;
  const given = new URLSearchParams(location.search).size > 0;
  $("filter-summary").textContent = given ? "(some in force)" : "";
  if (!given && matchMedia("(max-width: 800px)").matches) $("filter-box").open = false; // a phone: entries first
  form.action = location.pathname;
  form.addEventListener("submit", dropEmptyFields);
}

/** Submits only the fields given, so the address stays short and shareable. */
function dropEmptyFields(event) {
  event.preventDefault();
  const params = new URLSearchParams();
  for (const [name, value] of new FormData(event.target)) if (value !== "") params.append(name, value);
  const query = params.toString();
  location.assign(query ? `${location.pathname}?${query}` : location.pathname);
}

function showError(message) {
  $("page-error").hidden = !message;
  $("page-error").textContent = message || "";
}

function setLive(text) {
  $("live-status").textContent = text;
}

// --- the entity, its aliases and related entities --------------------------------------------

function showEntity(card) {
  document.title = `${card.name}: news timeline`;
  $("entity-name").textContent = card.name;
  const span = card.first_at ? ` · ${humanDate(card.first_at)} – ${humanDate(card.last_at)}` : "";
  $("entity-facts").textContent = `${card.type} · ${card.event_count} events${span}`;
  if (card.aliases.length) {
    $("entity-aliases").hidden = false;
    $("entity-aliases").replaceChildren("Also known as ", ...
      card.aliases.flatMap((alias, i) => [i ? ", " : "", el("a", { href: entityHref(alias) }, alias)]));
  }
  if (card.id !== entityId) history.replaceState(null, "", entityHref(card.id) + location.search);
}

async function loadRelated(cursor = null) {
  const answer = await getJSON(apiPath(`/entities/${encodeURIComponent(entityId)}/related`, { limit: RELATED, cursor }));
  const items = answer.entities.map((entity) =>
    el("li", {}, el("a", { href: entityHref(entity.id) }, entity.name), el("span", { class: "count" }, ` ${entity.count}`)));
  $("related-list").append(...items);
  $("related").hidden = $("related-list").children.length === 0;
  const more = $("related-more");
  more.hidden = !answer.next_cursor; // paging where the API offers it
  more.onclick = () => loadRelated(answer.next_cursor).catch((error) => showError(error.message));
}

// --- the entries ------------------------------------------------------------------------------

let nextCursor = null;

function timelineParams(cursor) {
  const { q, kind, role, since, until, as_of, include_retracted } = filters;
  return { q, kind, role, since, until, as_of, include_retracted, limit: PAGE, cursor };
}

async function loadPage(entries, cursor = null) {
  const path = apiPath(`/entities/${encodeURIComponent(entityId)}/timeline`, timelineParams(cursor));
  const page = await getJSON(path);
  nextCursor = page.next_cursor; // before the entries: the count shown says whether more wait
  if (!cursor) entries.clear();
  entries.append(page.entries);
  $("load-more").hidden = !nextCursor;
  return page;
}

function showCount(entries) {
  const n = entries.size;
  $("entries-count").textContent = `${n} ${n === 1 ? "entry" : "entries"}${nextCursor ? " shown, more to load" : ""}`
    + (filters.as_of ? ` as known at ${filters.as_of}` : "");
}

// --- live changes -----------------------------------------------------------------------------

/** Whether a changed entry belongs in this view (q is left to the API: the view is reloaded). */
function matches(entry) {
  if (entry.status === "retracted" && !filters.include_retracted) return false;
  if (filters.kind.length && !filters.kind.includes(entry.kind)) return false;
  if (filters.role && entry.role !== filters.role) return false;
  const span = entrySpan(entry);
  const [since, until] = [interval(filters.since), interval(filters.until)]; // null when not given
  if (since && span.end <= since.start) return false;
  if (until && span.start >= until.end) return false;
  return true;
}

function follow(entries) {
  if (filters.as_of) {
    setLive(`Showing the timeline as known at ${filters.as_of}: live updates are off.`);
    return { ready() {} };
  }
  const queued = [];
  let loaded = false;
  let reload = 0;
  const apply = (type, entry) => {
    if (filters.q) { // full-text matching is the API's: fetch the view again, once the changes settle
      clearTimeout(reload);
      reload = setTimeout(() => loadPage(entries).catch((error) => showError(error.message)), 400);
      return;
    }
    const keep = type === "remove" ? filters.include_retracted && entry.status === "retracted" && matches(entry)
      : matches(entry);
    if (!keep) entries.remove(entry.event_id);
    else if (!entries.beyondLoaded(entry, Boolean(nextCursor))) {
      const isNew = !entries.has(entry.event_id);
      entries.put(entry);
      if (isNew) setLive(`New entry: ${entry.headline}`);
    }
  };
  const { kind, role, include_retracted } = filters; // the stream's own filters; dates and text are applied here
  const source = new EventSource(apiPath(`/entities/${encodeURIComponent(entityId)}/timeline/stream`,
    { kind, role, include_retracted }));
  for (const type of ["entry", "update", "remove"]) {
    source.addEventListener(type, (message) => {
      const entry = JSON.parse(message.data);
      if (loaded) apply(type, entry); else queued.push([type, entry]);
    });
  }
  source.onopen = () => setLive("Live: new entries, corrections and retractions appear as they are stored.");
  source.onerror = () => setLive(source.readyState === EventSource.CLOSED
    ? "Live updates are not available; reload the page to see later changes."
    : "Live updates interrupted: reconnecting…");
  return {
    ready() { // changes that arrived while the first page loaded, applied over it in order
      loaded = true;
      for (const [type, entry] of queued.splice(0)) apply(type, entry);
    },
  };
}

// --- wiring -----------------------------------------------------------------------------------

async function main() {
  showFilters();
  let entries;
  const axis = new Axis($("axis"), {
    onSelect(eventId) {
      const node = entries.node(eventId);
      if (node) { node.scrollIntoView({ block: "nearest" }); node.focus({ preventScroll: true }); }
    },
  });
  entries = new Entries({
    list: $("entries"), axis, selfId: entityId, asOf: filters.as_of || null,
    onChange: () => showCount(entries),
  });
  $("entries").addEventListener("click", (event) => {
    const node = event.target.closest("li.entry");
    if (node && !event.target.closest("a, summary, details")) axis.show(node.dataset.eventId);
  });
  $("entries").addEventListener("keydown", (event) => {
    const node = event.target;
    if (!node.matches("li.entry")) return;
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); axis.show(node.dataset.eventId); }
    if (event.key === "ArrowDown") { event.preventDefault(); node.nextElementSibling?.focus(); }
    if (event.key === "ArrowUp") { event.preventDefault(); node.previousElementSibling?.focus(); }
  });
  $("load-more").addEventListener("click", () =>
    loadPage(entries, nextCursor).catch((error) => showError(error.message)));

  let card;
  try {
    card = await getJSON(apiPath(`/entities/${encodeURIComponent(entityId)}`, { as_of: filters.as_of }));
  } catch (error) {
    $("entity-name").textContent = error instanceof ApiError && error.status === 404 ? "No such entity" : "Not available";
    showError(`${error.message}. Search for another entity from the home page.`);
    return;
  }
  showEntity(card);
  entries.selfId = card.id; // an alias in the address answers with its canonical entity
  loadRelated().catch((error) => showError(error.message));
  const live = follow(entries); // opened before the first page is read: no change falls between
  try {
    await loadPage(entries);
    axis.fit(filters.since ? interval(filters.since).start : null, filters.until ? interval(filters.until).end : null);
  } catch (error) {
    showError(error.message);
  }
  live.ready();
}

main();
