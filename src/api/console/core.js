// The console's shared parts: building DOM without innerHTML (every value a receiver or a
// producer sent is shown as text, never parsed as markup), calling the API with the session's
// key, and the small widgets every page uses (tables with pagers, badges, times).

const KEY = 'hookgate.api_key';

/** Why the gateway last refused the session's key, and the page the operator was on, for
 * the sign-in page (kept in memory, so no link can put words on that page). */
let refusal = { detail: '', returnTo: '' };

export function takeRefusal() {
  const said = refusal;
  refusal = { detail: '', returnTo: '' };
  return said;
}

/** End the session after the gateway refused its key. */
export function refused(detail) {
  setKey(null);
  refusal = { detail, returnTo: location.hash };
  location.hash = '#/signin';
}

/**
 * A pair of clicks for what cannot be undone: the first arms `button` (showing `armedText`),
 * a second within a few seconds runs `action`; otherwise it disarms.
 */
export function confirmed(button, armedText, action) {
  const label = button.textContent;
  let timer = null;
  button.addEventListener('click', () => {
    if (button.dataset.armed !== 'yes') {
      button.dataset.armed = 'yes';
      button.textContent = armedText;
      timer = setTimeout(() => {
        delete button.dataset.armed;
        button.textContent = label;
      }, 5000);
      return;
    }
    clearTimeout(timer);
    delete button.dataset.armed;
    button.textContent = label;
    action();
  });
  return button;
}

export const EVENT_TYPES = JSON.parse(document.getElementById('event-types').textContent);

/** Build an element: `h('a', {href: '#/'}, 'text', child)`. */
export function h(tag, props, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else if (name === 'class') element.className = value;
    else if (name === 'dataset') Object.assign(element.dataset, value);
    else if (name in element && typeof value !== 'string') element[name] = value;
    else element.setAttribute(name, value === true ? '' : value);
  }
  append(element, children);
  return element;
}

/** Replace what `element` shows with `children`, skipping empty ones like `append`. */
export function fill(element, ...children) {
  element.replaceChildren();
  append(element, children);
}

/** Append `children`, skipping null, undefined and false (DOM's own append writes "null"). */
export function append(element, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
}

export function key() {
  return sessionStorage.getItem(KEY);
}

export function setKey(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

/** Call the API with the session's key; a refused key ends the session. */
export async function api(method, path, body, options = {}) {
  const used = options.key ?? key() ?? '';
  const headers = { Authorization: 'Bearer ' + used };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: options.signal,
  });
  if (options.raw) return response;
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!response.ok) {
    const detail = (json && json.detail) || text || response.statusText;
    // Only the session's own key is ended: a late answer to a call made with an older one
    // must not sign out the key the operator has just entered.
    if (response.status === 401 && !options.key && used === key()) refused(detail);
    throw new ApiError(response.status, detail);
  }
  return json;
}

/** The query string of a path, without empty values. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') search.set(name, value);
  }
  const text = search.toString();
  return text ? '?' + text : '';
}

export function badge(word, prefix = 's', text = word) {
  return h('span', { class: `badge ${prefix}-${word}` }, text);
}

/** An ISO time as local date and time, with the ISO text on hover. */
export function when(iso) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  const date = new Date(iso);
  return h('time', { datetime: iso, title: iso }, date.toLocaleString());
}

export function notice(text, kind = '') {
  return h('div', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
}

export function errorNotice(error) {
  const text = error instanceof ApiError ? `${error.status}: ${error.message}` : String(error);
  return notice(text, 'error');
}

/** A table: `columns` are [heading, cell(row), class?]. */
export function table(columns, rows, options = {}) {
  const head = h('tr', {}, columns.map(([heading, , cls]) => h('th', { class: cls }, heading)));
  const body = rows.map((row) =>
    h(
      'tr',
      options.rowProps ? options.rowProps(row) : {},
      columns.map(([, cell, cls]) => h('td', { class: cls }, cell(row))),
    ),
  );
  if (!rows.length) {
    body.push(h('tr', {}, h('td', { colspan: columns.length, class: 'muted' }, options.empty || 'Nothing here.')));
  }
  return h('table', { id: options.id }, h('thead', {}, head), h('tbody', {}, body));
}

/**
 * Client-side paging for lists the API returns whole: `page` (from 1) of `size` rows, and a
 * pager whose links change the hash parameter `param`.
 */
export function pageOf(rows, page, size) {
  const pages = Math.max(1, Math.ceil(rows.length / size));
  const current = Math.min(Math.max(1, page || 1), pages);
  return { rows: rows.slice((current - 1) * size, current * size), page: current, pages };
}

export function pager(route, params, param, page, pages) {
  const link = (to, text) => h('a', { href: route + query({ ...params, [param]: to }) }, text);
  return h(
    'div',
    { class: 'pager' },
    page > 1 ? link(page - 1, '← Previous') : null,
    h('span', { class: 'muted' }, `Page ${page} of ${pages}`),
    page < pages ? link(page + 1, 'Next →') : null,
  );
}

/**
 * A pager of buttons for a list the page holds itself (attempts, the live tail), newest
 * first: `go(to)` shows page `to`; `summary` replaces the page count's text.
 */
export function buttonPager(page, pages, go, summary = `Page ${page} of ${pages}`) {
  const turn = (to, text) => h('button', { type: 'button', class: 'link', onclick: () => go(to) }, text);
  return h(
    'div',
    { class: 'pager' },
    page > 1 ? turn(page - 1, '← Newer') : null,
    h('span', { class: 'muted' }, summary),
    page < pages ? turn(page + 1, 'Older →') : null,
  );
}

/** Header pairs `[[name, value]]` as a two-column table. */
export function headerTable(pairs, id) {
  return table(
    [
      ['Header', ([name]) => h('code', {}, name)],
      ['Value', ([, value]) => h('code', {}, value), 'wrap'],
    ],
    pairs || [],
    { empty: 'No headers recorded.', id },
  );
}

/** A `datetime-local` value as an ISO time in UTC, or '' when empty. */
export function localToIso(value) {
  return value ? new Date(value).toISOString() : '';
}

/** An ISO time as a `datetime-local` value, to the second. */
export function isoToLocal(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return '';
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return local.toISOString().slice(0, 19);
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
