// The time axis: vis-timeline (vendored, see timeline/static/vendor/manifest.json) drawing entries
// as the spans they are: a "2015-09" entry spans September 2015, an entry with ended_at is a range,
// an instant without ended_at is a point.
import { DataSet, Timeline } from "../vendor/vis-timeline/vis-timeline-graph2d.min.mjs";
import { el, entrySpan } from "./common.js";

function item(entry) {
  const { start, end } = entrySpan(entry);
  const point = end.getTime() === start.getTime();
  return {
    id: entry.event_id,
    start,
    end: point ? undefined : end,
    type: point ? "point" : "range",
    content: "", // drawn by the template below, as text: never parsed as HTML
    headline: entry.headline,
    className: `kind-${entry.kind} status-${entry.status}`,
  };
}

export class Axis {
  constructor(container, { onSelect }) {
    this.items = new DataSet();
    this.timeline = new Timeline(container, this.items, {
      template: (data) => el("span", { class: "axis-headline" }, data.headline),
      orientation: "top",
      stack: true,
      maxHeight: 420,
      minHeight: 180,
      zoomMin: 60 * 60 * 1000,
      margin: { item: 6 },
      showCurrentTime: false,
      selectable: true,
      dataAttributes: ["id"], // data-id="<event id>" on each item (the list's entries carry data-event-id)
    });
    this.timeline.on("select", ({ items }) => { if (items.length) onSelect(items[0]); });
  }

  /** Adds or replaces entries. */
  put(entries) {
    if (entries.length) this.items.update(entries.map(item));
  }

  remove(eventId) {
    this.items.remove(eventId);
  }

  clear() {
    this.items.clear();
  }

  /** Shows every entry, or the window asked for (either end may be null: the entries' own). */
  fit(from = null, to = null) {
    if (!this.items.length) return;
    this.timeline.fit({ animation: false });
    if (from || to) {
      const shown = this.timeline.getWindow();
      this.timeline.setWindow(from || shown.start, to || shown.end, { animation: false });
    }
  }

  show(eventId) {
    this.timeline.setSelection([eventId], { focus: true, animation: { duration: 300 } });
  }
}
