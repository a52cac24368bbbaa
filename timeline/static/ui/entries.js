// The entries shown: one <li data-event-id> per entry in timeline order (start of the span, then
// store position), mirrored on the time axis.
import { el, entityHref, entrySpan, humanDate } from "./common.js";
import { historyDisclosure } from "./history.js";

function sortKey(entry) {
  return [entrySpan(entry).start.getTime(), entry.position];
}

function before(a, b) {
  return a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);
}

function when(entry) {
  const from = el("time", { datetime: entry.occurred_at }, humanDate(entry.occurred_at));
  if (!entry.ended_at) return el("p", { class: "when" }, from);
  return el("p", { class: "when" }, from, " – ", el("time", { datetime: entry.ended_at }, humanDate(entry.ended_at)));
}

function involved(entry, selfId) {
  const others = (entry.entities || []).filter((entity) => entity.id !== selfId);
  if (!others.length) return null;
  return el("p", { class: "involved" }, "With ",
    others.map((entity, i) => [i ? ", " : "", el("a", { href: entityHref(entity.id) }, entity.name),
      ` (${entity.role})`]));
}

function sources(entry) {
  const links = (entry.sources || []).filter((s) => /^https?:\/\//i.test(s.url));
  if (!links.length) return null;
  return el("p", { class: "sources" }, "Sources: ",
    links.map((s, i) => [i ? ", " : "",
      el("a", { href: s.url, rel: "noopener noreferrer nofollow", target: "_blank" }, s.publisher || s.title || s.url)]));
}

function entryItem(entry, { selfId, asOf }) {
  const marked = entry.status !== "active";
  return el("li", {
    class: `entry kind-${entry.kind} status-${entry.status}`, tabindex: "0",
    "data-event-id": entry.event_id, "aria-labelledby": `h-${entry.event_id}`,
  },
    when(entry),
    el("h3", { id: `h-${entry.event_id}` }, entry.headline),
    el("p", { class: "tags" },
      el("span", { class: "tag kind" }, entry.kind.replace("_", " ")),
      entry.role && el("span", { class: "tag role" }, entry.role),
      marked && el("span", { class: `tag status ${entry.status}` }, entry.status)),
    entry.summary && el("p", { class: "summary" }, entry.summary),
    involved(entry, selfId),
    sources(entry),
    marked && historyDisclosure(entry.event_id, asOf));
}

export class Entries {
  constructor({ list, axis, selfId, asOf, onChange }) {
    Object.assign(this, { list, axis, selfId, asOf, onChange });
    this.byId = new Map(); // event_id -> {entry, key, node}
  }

  get size() {
    return this.byId.size;
  }

  clear() {
    this.byId.clear();
    this.list.replaceChildren();
    this.axis.clear();
    this.onChange();
  }

  /** Entries of a page, in timeline order, after those shown. */
  append(entries) {
    for (const entry of entries) this.put(entry, { fresh: false });
    this.axis.put(entries);
    this.onChange();
  }

  /** The last entry shown, in timeline order (a live entry after it waits for "Load more"). */
  lastKey() {
    const last = this.list.lastElementChild;
    return last ? this.byId.get(last.dataset.eventId).key : null;
  }

  /** Adds or replaces one entry in place; focus stays on it if it had focus. */
  put(entry, { fresh = true } = {}) {
    const old = this.byId.get(entry.event_id);
    const hadFocus = old && old.node.contains(document.activeElement);
    const openHistory = old && old.node.querySelector("details[open]");
    const node = entryItem(entry, this);
    const key = sortKey(entry);
    if (old) old.node.remove();
    let next = null;
    for (let n = this.list.lastElementChild; n; n = n.previousElementSibling) {
      if (!before(key, this.byId.get(n.dataset.eventId).key)) break;
      next = n;
    }
    this.list.insertBefore(node, next);
    this.byId.set(entry.event_id, { entry, key, node });
    if (fresh) {
      node.classList.add("fresh");
      this.axis.put([entry]);
      this.onChange();
    }
    if (openHistory) node.querySelector("details")?.setAttribute("open", "");
    if (hadFocus) node.focus();
  }

  remove(eventId) {
    const old = this.byId.get(eventId);
    if (!old) return;
    old.node.remove();
    this.byId.delete(eventId);
    this.axis.remove(eventId);
    this.onChange();
  }

  has(eventId) {
    return this.byId.has(eventId);
  }

  node(eventId) {
    return this.byId.get(eventId)?.node;
  }

  /** Whether ``entry`` sorts after the last shown while more pages wait to be loaded. */
  beyondLoaded(entry, moreToLoad) {
    const last = this.lastKey();
    return moreToLoad && last !== null && before(last, sortKey(entry));
  }
}
