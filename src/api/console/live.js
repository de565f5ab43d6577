// Live: this node's attempts as they finish, from the streaming API (server-sent events read
// through fetch, since EventSource cannot send the API key). The newest are kept in memory
// and shown a page at a time; the stream closes when the operator leaves the page.

import { EVENT_TYPES, api, badge, buttonPager, errorNotice, fill, h, notice, pageOf, query, refused, table, when } from './core.js';

const KEEP = 500;
const PAGE_SIZE = 50;
const OUTCOMES = ['succeeded', 'retry', 'failed', 'skipped'];

export async function livePage(main, page) {
  const params = page.params;
  const attempts = [];
  let shownPage = 1;
  let missed = 0;
  const status = h('div', { id: 'live-status' }, notice('Connecting…'));
  const list = h('div', { id: 'live-list' });
  const select = (name, options) =>
    h('select', { name }, h('option', { value: '' }, 'any'), options.map((option) => h('option', { value: option, selected: option === params[name] }, option)));
  const form = h(
    'form',
    {
      class: 'filters',
      onsubmit: (event) => {
        event.preventDefault();
        location.hash = '#/live' + query(Object.fromEntries(new FormData(form)));
      },
    },
    h('label', {}, 'Outcome', select('outcome', OUTCOMES)),
    h('label', {}, 'Event type', select('event_type', EVENT_TYPES)),
    h('label', {}, 'Destination host', h('input', { name: 'host', value: params.host || '' })),
    h('button', { type: 'submit' }, 'Filter'),
  );
  const draw = () => {
    const { rows, page: current, pages } = pageOf(attempts, shownPage, PAGE_SIZE);
    shownPage = current;
    const go = (to) => {
      shownPage = to;
      draw();
    };
    const lagging = missed ? ` · ${missed} missed while lagging` : '';
    fill(
      list,
      table(
        [
          ['Started', (row) => when(row.started_at)],
          ['Outcome', (row) => badge(row.outcome, 'o')],
          ['Event type', (row) => row.event_type],
          ['Destination', (row) => row.webhook_url, 'wrap'],
          ['Attempt', (row) => row.attempt, 'num'],
          ['Status', (row) => row.response_status ?? '—', 'num'],
          ['Took', (row) => `${row.duration_ms} ms`, 'num'],
          ['Error', (row) => row.error || ''],
          ['', (row) => h('a', { href: `#/deliveries/${encodeURIComponent(row.delivery_id)}` }, 'Open')],
        ],
        rows,
        { id: 'live-attempts', empty: 'Waiting for attempts to finish…' },
      ),
      buttonPager(current, pages, go, `Page ${current} of ${pages} · newest ${attempts.length} kept${lagging}`),
    );
  };
  main.append(h('h1', {}, 'Live attempts'), form, status, list);
  draw();
  let response;
  try {
    const filters = { outcome: params.outcome, event_type: params.event_type, host: params.host };
    response = await api('GET', '/api/v1/stream' + query(filters), undefined, { signal: page.signal, raw: true });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      if (response.status === 401) {
        refused(body.detail || 'invalid API key');
        return;
      }
      status.replaceChildren(notice(`${response.status}: ${body.detail || response.statusText}`, 'error'));
      return;
    }
  } catch (error) {
    if (page.alive) status.replaceChildren(errorNotice(error));
    return;
  }
  status.replaceChildren(notice('Connected: attempts appear as they finish on this node.', 'ok'));
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = parseEvent(block);
        if (event.name === 'attempt') {
          attempts.unshift(JSON.parse(event.data));
          if (attempts.length > KEEP) attempts.length = KEEP;
        } else if (event.name === 'lagged') {
          missed += JSON.parse(event.data).missed || 0;
        }
      }
      draw();
    }
    if (page.alive) status.replaceChildren(notice('The stream ended (the node is shutting down). Reload to reconnect.', 'error'));
  } catch (error) {
    if (page.alive) status.replaceChildren(errorNotice(error));
  }
}

/** One server-sent event block: its `event:` name and joined `data:` lines. */
function parseEvent(block) {
  let name = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith('event:')) name = line.slice(6).trim();
    else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
  }
  return { name, data: data.join('\n') };
}
