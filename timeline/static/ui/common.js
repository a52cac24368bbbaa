// Helpers shared by the pages: DOM building that never parses text as HTML, the JSON API, dates.

/** An element with attributes and children; strings become text nodes (hostile text stays text). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** A path under this service with its query string; repeated keys for arrays, empty values left out. */
export function apiPath(path, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    for (const one of Array.isArray(value) ? value : [value]) {
      if (one !== null && one !== undefined && one !== "" && one !== false) query.append(key, String(one));
    }
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** GET a JSON answer of this service; a 4xx/5xx becomes an ApiError carrying the API's message. */
export async function getJSON(path, { signal } = {}) {
  const response = await fetch(path, { headers: { Accept: "application/json" }, signal });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(response.status, (body && body.error) || `${response.status} ${response.statusText}`);
  }
  return body;
}

export function entityHref(id) {
  return `/ui/entities/${encodeURIComponent(id)}`;
}

// --- dates as written: 2025, 2025-05, 2025-05-24 or an instant with an offset ---------------

const INSTANT = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|([+-])(\d{2}):?(\d{2}))$/;
const CALENDAR = /^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$/;
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

function utc(year, month = 0, day = 1, hours = 0, minutes = 0, seconds = 0, ms = 0) {
  const date = new Date(0);
  date.setUTCFullYear(year, month, day); // not Date.UTC: it maps the years 0-99 to 1900-1999
  date.setUTCHours(hours, minutes, seconds, ms);
  return date;
}

/** The interval a written date stands for, in UTC: {start, end, precision}; end is exclusive. */
export function interval(written) {
  let m = INSTANT.exec(written);
  if (m) {
    const ms = m[7] ? Number(m[7].padEnd(3, "0").slice(0, 3)) : 0;
    const at = utc(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +(m[6] || 0), ms);
    if (m[8] !== "Z") at.setTime(at.getTime() - (m[9] === "-" ? -1 : 1) * (+m[10] * 60 + +m[11]) * 60000);
    return { start: at, end: at, precision: "instant" };
  }
  m = CALENDAR.exec(written);
  if (!m) return null;
  const [year, month, day] = [+m[1], m[2] ? +m[2] - 1 : null, m[3] ? +m[3] : null];
  if (month === null) return { start: utc(year), end: utc(year + 1), precision: "year" };
  if (day === null) return { start: utc(year, month), end: utc(year, month + 1), precision: "month" };
  return { start: utc(year, month, day), end: utc(year, month, day + 1), precision: "day" };
}

/** An entry's span: the start of occurred_at to the end of ended_at (or of occurred_at). */
export function entrySpan(entry) {
  const from = interval(entry.occurred_at);
  const to = entry.ended_at ? interval(entry.ended_at) : from;
  return { start: from.start, end: to.end };
}

/** A written date for people: "2025", "May 2025", "24 May 2025", "24 May 2025, 14:30 UTC". */
export function humanDate(written) {
  const span = interval(written);
  if (!span) return written;
  const d = span.start;
  const year = String(d.getUTCFullYear()).padStart(4, "0");
  if (span.precision === "year") return year;
  if (span.precision === "month") return `${MONTHS[d.getUTCMonth()]} ${year}`;
  const day = `${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]} ${year}`;
  if (span.precision === "day") return day;
  const time = `${String(d.getUTCHours()).padStart(2, "0")}:${String(d.getUTCMinutes()).padStart(2, "0")}`;
  return `${day}, ${time} UTC`;
}
