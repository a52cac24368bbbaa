// An entry's history (GET /events/{id}): the corrections and the retraction applied, in store order.
import { el, getJSON, humanDate } from "./common.js";

function change(field, value) {
  const shown = value === null ? "(removed)" : typeof value === "string" ? value : JSON.stringify(value);
  return el("li", {}, el("span", { class: "changed" }, field), ": ", shown);
}

function step(record) {
  const what = record.kind === "retraction" ? "Retracted" : record.applied === false ? "Correction not applied" : "Corrected";
  const changes = record.changes ? Object.entries(record.changes) : [];
  return el("li", { class: `step ${record.kind}` },
    el("p", {}, el("strong", {}, what), ` ${humanDate(record.occurred_at)} (recorded ${record.recorded_at})`),
    record.reason && el("p", { class: "reason" }, record.reason),
    changes.length && el("ul", { class: "changes" }, changes.map(([field, value]) => change(field, value))));
}

/** A disclosure showing the history of ``eventId``, loaded when first opened. */
export function historyDisclosure(eventId, asOf) {
  const body = el("div", { class: "history-body" }, "Loading…");
  const details = el("details", { class: "history" }, el("summary", {}, "History"), body);
  let loaded = false;
  details.addEventListener("toggle", async () => {
    if (!details.open || loaded) return;
    loaded = true;
    const query = asOf ? `?as_of=${encodeURIComponent(asOf)}` : "";
    try {
      const event = await getJSON(`/events/${encodeURIComponent(eventId)}${query}`);
      body.replaceChildren(
        event.history.length ? el("ol", { class: "steps" }, event.history.map(step)) : el("p", {}, "No corrections."),
        el("p", {}, el("a", { href: `/events/${encodeURIComponent(eventId)}${query}` }, "The event as JSON")));
    } catch (error) {
      loaded = false;
      body.replaceChildren(el("p", { class: "error" }, `History not available: ${error.message}`));
    }
  });
  return details;
}
