// The search page (/): entities by name or alias, as GET /entities?q= finds them.
import { apiPath, el, entityHref, getJSON, humanDate } from "./common.js";

const LIMIT = 25;
const form = document.getElementById("search-form");
const input = document.getElementById("q");
const status = document.getElementById("result-status");
const results = document.getElementById("results");
let pending = null; // the request in flight, aborted when the text changes again
let timer = 0;

function resultItem(entity) {
  const span = entity.first_at ? `${humanDate(entity.first_at)} – ${humanDate(entity.last_at)}` : "";
  const aliases = entity.aliases && entity.aliases.length ? `also ${entity.aliases.join(", ")}` : null;
  return el("li", { class: "result", "data-entity-id": entity.id },
    el("a", { href: entityHref(entity.id) }, entity.name),
    el("span", { class: "meta" }, `${entity.type} · ${entity.event_count} events`, span && ` · ${span}`),
    aliases && el("span", { class: "meta aliases" }, aliases));
}

async function search(q) {
  pending?.abort();
  pending = new AbortController();
  status.textContent = "Searching…";
  try {
    const answer = await getJSON(apiPath("/entities", { q, limit: LIMIT }), { signal: pending.signal });
    results.replaceChildren(...answer.entities.map(resultItem));
    const count = answer.entities.length;
    status.textContent = q
      ? (count ? `${count}${count === LIMIT ? "+" : ""} found for “${q}”` : `Nothing found for “${q}”`)
      : (count ? "The entities with the most events" : "No entities yet: publish some events");
  } catch (error) {
    if (error.name === "AbortError") return;
    results.replaceChildren();
    status.textContent = `Search failed: ${error.message}`;
  }
}

function showInAddress(q) {
  const url = new URL(location.href);
  if (q) url.searchParams.set("q", q); else url.searchParams.delete("q");
  history.replaceState(null, "", url);
}

input.addEventListener("input", () => {
  clearTimeout(timer);
  timer = setTimeout(() => { showInAddress(input.value.trim()); search(input.value.trim()); }, 200);
});
form.addEventListener("submit", (event) => {
  event.preventDefault();
  clearTimeout(timer);
  showInAddress(input.value.trim());
  search(input.value.trim());
});

input.value = new URLSearchParams(location.search).get("q") || "";
search(input.value.trim());
input.focus();
