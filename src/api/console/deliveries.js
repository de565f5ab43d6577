// Deliveries: the search (status, event type, destination, event, configuration, time), a
// bulk replay of what a search finds, and one delivery's page with every attempt's request
// and response and a Redeliver button.

import {
  EVENT_TYPES,
  api,
  badge,
  errorNotice,
  append,
  buttonPager,
  confirmed,
  fill,
  h,
  headerTable,
  isoToLocal,
  localToIso,
  notice,
  pageOf,
  query,
  sleep,
  table,
  when,
} from './core.js';

const PAGE_SIZE = 50;
const ATTEMPTS_PAGE_SIZE = 10;
const STATUSES = ['queued', 'in_flight', 'succeeded', 'failed', 'skipped'];
const REPLAYABLE = ['failed', 'succeeded', 'skipped'];
const SEARCH_FIELDS = ['status', 'event_type', 'host', 'event_id', 'config_id', 'since', 'until'];

export async function deliveriesPage(main, page) {
  const params = page.params;
  const filters = Object.fromEntries(SEARCH_FIELDS.map((name) => [name, params[name] || '']));
  main.append(h('h1', {}, 'Deliveries'), searchForm(filters));
  const results = h('div', { id: 'results' }, h('p', { class: 'muted' }, 'Searching…'));
  main.append(results);
  if (REPLAYABLE.includes(filters.status)) main.append(replayPanel(filters, page));
  let found;
  try {
    found = await api(
      'GET',
      '/api/v1/deliveries' + query({ ...filters, limit: PAGE_SIZE, page_token: params.page_token }),
      undefined,
      { signal: page.signal },
    );
  } catch (error) {
    results.replaceChildren(errorNotice(error));
    return;
  }
  if (!page.alive) return;
  const pageNumber = Number(params.page || 1);
  const next = found.next_page_token
    ? h('a', { id: 'next-page', href: '#/deliveries' + query({ ...filters, page_token: found.next_page_token, page: pageNumber + 1 }) }, 'Older →')
    : null;
  const first = params.page_token ? h('a', { href: '#/deliveries' + query(filters) }, '← Newest') : null;
  fill(
    results,
    table(
      [
        ['Created', (row) => when(row.created_at)],
        ['Status', (row) => badge(row.status)],
        ['Event type', (row) => row.event_type],
        ['Destination', (row) => row.webhook_url, 'wrap'],
        ['Attempts', (row) => row.attempt_count, 'num'],
        ['Last error', (row) => row.last_error || ''],
        ['', (row) => h('a', { href: `#/deliveries/${encodeURIComponent(row.id)}`, class: 'open-delivery' }, 'Open')],
      ],
      found.items,
      {
        id: 'deliveries',
        empty: 'No delivery matches this search.',
        rowProps: (row) => ({ class: 'delivery-row', dataset: { id: row.id, status: row.status } }),
      },
    ),
    h(
      'div',
      { class: 'pager' },
      first,
      h('span', { class: 'muted' }, `Page ${pageNumber} · ${found.items.length} shown`),
      next,
      found.items.length < PAGE_SIZE && next
        ? h('span', { class: 'muted' }, '(this page read its share of rows; older ones may match)')
        : null,
    ),
  );
}

function searchForm(filters) {
  const input = (name, props = {}) => h('input', { name, id: `search-${name}`, value: filters[name], ...props });
  const select = (name, options) =>
    h(
      'select',
      { name, id: `search-${name}` },
      h('option', { value: '' }, 'any'),
      options.map((option) => h('option', { value: option, selected: option === filters[name] }, option)),
    );
  const form = h(
    'form',
    {
      class: 'filters',
      id: 'delivery-search',
      onsubmit: (event) => {
        event.preventDefault();
        const data = Object.fromEntries(new FormData(form));
        data.since = localToIso(data.since);
        data.until = localToIso(data.until);
        location.hash = '#/deliveries' + query(data);
      },
    },
    h('label', {}, 'Status', select('status', STATUSES)),
    h('label', {}, 'Event type', select('event_type', EVENT_TYPES)),
    h('label', {}, 'Destination host', input('host', { placeholder: 'hooks.example.com' })),
    h('label', {}, 'Event id', input('event_id', { size: 36 })),
    h('label', {}, 'Configuration id', input('config_id', { size: 36 })),
    h('label', {}, 'Created from', input('since', { type: 'datetime-local', step: 1, value: isoToLocal(filters.since) })),
    h('label', {}, 'Created before', input('until', { type: 'datetime-local', step: 1, value: isoToLocal(filters.until) })),
    h('button', { type: 'submit', class: 'primary', id: 'search' }, 'Search'),
    h('a', { href: '#/deliveries' }, 'Clear'),
  );
  return form;
}

/** Count what the search matches (a dry run), then queue it again, following the job. */
function replayPanel(filters, page) {
  const status = h('div', { id: 'replay-status' });
  const search = Object.fromEntries(Object.entries(filters).filter(([, value]) => value));
  const run = async (dryRun, button) => {
    button.disabled = true;
    try {
      let job = await api('POST', '/api/v1/deliveries/redeliver', { ...search, dry_run: dryRun });
      while (job.state === 'running' && page.alive) {
        status.replaceChildren(notice(describe(job)));
        await sleep(500);
        job = await api('GET', `/api/v1/deliveries/redeliver/${encodeURIComponent(job.id)}`);
      }
      if (page.alive) status.replaceChildren(notice(describe(job), job.state === 'done' ? 'ok' : 'error'));
    } catch (error) {
      if (page.alive) status.replaceChildren(errorNotice(error));
    } finally {
      button.disabled = false;
    }
  };
  const count = h('button', { type: 'button', id: 'replay-count', onclick: () => run(true, count) }, 'Count matches');
  // Queueing again cannot be undone: the first click asks, the second replays.
  const replay = h('button', { type: 'button', id: 'replay-start', class: 'primary' }, `Replay every ${filters.status} delivery this search matches`);
  confirmed(replay, 'Confirm: queue them all again', () => run(false, replay));
  return h(
    'section',
    {},
    h('h2', {}, 'Bulk replay'),
    h('p', { class: 'muted' }, 'Queues every matching delivery again (up to the gateway\'s replay ceiling), paced so the queue never floods.'),
    h('div', { class: 'row' }, count, replay),
    status,
  );
}

function describe(job) {
  const what = job.dry_run ? `${job.matched} deliveries match` : `${job.queued} of ${job.matched} matched deliveries queued again`;
  const error = job.error ? ` — ${job.error}` : '';
  return `Replay ${job.state}: ${what}${error}`;
}

export async function deliveryPage(main, page, deliveryId) {
  const facts = h('div', { id: 'delivery' });
  const message = h('div', { id: 'redeliver-status' });
  const attempts = h('div', { id: 'attempts' });
  const redeliver = h('button', { id: 'redeliver', class: 'primary', type: 'button' }, 'Redeliver');
  append(
    main,
    h('p', {}, h('a', { href: '#/deliveries' }, '← Deliveries')),
    h('h1', {}, 'Delivery ', h('code', {}, deliveryId)),
    facts,
    h('div', { class: 'row' }, redeliver),
    message,
    h('h2', {}, 'Attempts'),
    attempts,
  );
  let attemptPage = 1;
  let shown = null;
  const show = (delivery) => {
    shown = delivery;
    fill(facts, factsOf(delivery));
    const list = [...(delivery.attempts || [])].reverse();
    const { rows, page: current, pages } = pageOf(list, attemptPage, ATTEMPTS_PAGE_SIZE);
    const go = (to) => {
      attemptPage = to;
      show(shown);
    };
    fill(attempts, attemptsOf(rows), pages > 1 ? buttonPager(current, pages, go) : null);
    facts.dataset.status = delivery.status;
  };
  const load = () => api('GET', `/api/v1/deliveries/${encodeURIComponent(deliveryId)}`, undefined, { signal: page.signal });
  try {
    show(await load());
  } catch (error) {
    facts.replaceChildren(errorNotice(error));
    redeliver.disabled = true;
    return;
  }
  redeliver.addEventListener('click', async () => {
    redeliver.disabled = true;
    try {
      const queued = await api('POST', `/api/v1/deliveries/${encodeURIComponent(deliveryId)}/redeliver`);
      show(queued);
      message.replaceChildren(notice('Queued again; following its attempt…'));
      // Follow it until its next attempt is recorded (or the operator leaves the page).
      let followed = false;
      for (let polls = 0; polls < 120 && page.alive && !followed; polls++) {
        await sleep(polls < 10 ? 300 : 1000);
        const delivery = await load();
        show(delivery);
        const waiting = ['queued', 'in_flight'].includes(delivery.status);
        if (delivery.attempt_count > queued.attempt_count || !waiting) {
          message.replaceChildren(
            delivery.status === 'succeeded'
              ? notice('Redelivered: the receiver answered 2xx.', 'ok')
              : waiting
                ? notice(`The attempt failed; the next is due ${delivery.next_attempt_at || 'soon'}.`, 'error')
                : notice(`Redelivery ended: ${delivery.status}.`, 'error'),
          );
          followed = true;
        }
      }
      if (!followed && page.alive) {
        message.replaceChildren(notice(`Not finished yet (${shown.status}): reload this page to see its attempt when it runs.`));
      }
    } catch (error) {
      if (page.alive) message.replaceChildren(errorNotice(error));
    } finally {
      redeliver.disabled = false;
    }
  });
}

function factsOf(delivery) {
  const source = delivery.source || {};
  const sourceText =
    source.kind === 'saved'
      ? h('a', { href: `#/destinations/${encodeURIComponent(source.config_id)}/edit` }, `saved configuration ${source.config_id}`)
      : source.kind === 'route'
        ? `operator route ${source.name}`
        : 'inline in the event';
  const fact = (term, value) => [h('dt', {}, term), h('dd', {}, value)];
  return h(
    'dl',
    { class: 'facts' },
    fact('Status', badge(delivery.status)),
    fact('Event', [delivery.event_type, ' · ', h('a', { href: '#/deliveries' + query({ event_id: delivery.event_id }) }, delivery.event_id)]),
    fact('Destination', h('code', {}, delivery.webhook_url)),
    fact('From', sourceText),
    fact('Attempts', String(delivery.attempt_count)),
    delivery.next_attempt_at ? fact('Next attempt', when(delivery.next_attempt_at)) : null,
    delivery.last_error ? fact('Last error', delivery.last_error) : null,
    fact('Created', when(delivery.created_at)),
    fact('Updated', when(delivery.updated_at)),
  );
}

/** Attempts, newest first, as sections. */
function attemptsOf(list) {
  if (!list.length) return [h('p', { class: 'muted' }, 'No attempt yet.')];
  return list.map((attempt) => {
    const outcome = attempt.response_status
      ? `answered ${attempt.response_status}`
      : attempt.error
        ? 'no response'
        : 'no response recorded';
    const request = attempt.request;
    return h(
      'section',
      { class: 'attempt', dataset: { number: attempt.number } },
      h('h3', {}, `Attempt ${attempt.number}: ${outcome} in ${attempt.duration_ms} ms, `, when(attempt.started_at)),
      attempt.error ? h('p', { class: 'attempt-error s-failed' }, attempt.error) : null,
      h(
        'div',
        { class: 'columns' },
        h(
          'div',
          { class: 'attempt-request' },
          h('h3', {}, 'Request'),
          request
            ? [h('p', {}, h('code', {}, `POST ${request.url}`)), headerTable(request.headers), h('pre', { class: 'request-body' }, request.body)]
            : h('p', { class: 'muted' }, 'Nothing was sent: the plugin skipped or failed, or the record predates request capture.'),
        ),
        h(
          'div',
          { class: 'attempt-response' },
          h('h3', {}, 'Response'),
          attempt.response_status
            ? [
                h('p', {}, 'Status ', h('strong', { class: 'response-status' }, String(attempt.response_status))),
                headerTable(attempt.response_headers),
                attempt.response_body
                  ? h('pre', { class: 'response-body' }, attempt.response_body)
                  : h('p', { class: 'muted response-body' }, 'Empty body.'),
              ]
            : h('p', { class: 'muted' }, 'No response.'),
        ),
      ),
    );
  });
}
