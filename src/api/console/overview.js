// Overview: the last hour's events and deliveries, the queue now, the destinations in
// trouble and the nodes sharing the store. Refreshed every ten seconds while shown.

import { api, badge, errorNotice, fill, h, pageOf, pager, query, table, when } from './core.js';

const REFRESH_MS = 10000;
const NODES_PAGE_SIZE = 20;

export async function overviewPage(main, page) {
  const body = h('div', { id: 'overview' });
  main.append(h('h1', {}, 'Overview'), body);
  await refresh(body, page);
  page.every(REFRESH_MS, () => refresh(body, page));
}

async function refresh(body, page) {
  let activity, destinations, nodes;
  try {
    [activity, destinations, nodes] = await Promise.all([
      api('GET', '/api/v1/activity'),
      api('GET', '/api/v1/destinations'),
      api('GET', '/api/v1/nodes'),
    ]);
  } catch (error) {
    if (page.alive) body.replaceChildren(errorNotice(error));
    return;
  }
  if (!page.alive) return;
  const since = activity.since;
  const search = (status) => '#/deliveries' + query({ status, since });
  // A card links to the search that lists what it counts, where one does exactly.
  const card = (id, label, value, href) =>
    h(href ? 'a' : 'div', { class: 'card', id, href }, h('div', { class: 'value' }, value.toLocaleString()), h('div', { class: 'label' }, label));
  const deliveries = activity.deliveries;
  const shownNodes = pageOf(nodes.nodes, Number(page.params.nodes_page), NODES_PAGE_SIZE);
  const trouble = destinations.destinations.filter((row) => row.state === 'paused' || row.state === 'failing');
  fill(
    body,
    h('h2', {}, 'Last hour ', h('span', { class: 'muted' }, '(since ', when(since), ')')),
    h(
      'div',
      { class: 'cards' },
      card('card-events', 'events accepted', activity.events_accepted),
      card('card-succeeded', 'deliveries succeeded', deliveries.succeeded, search('succeeded')),
      card('card-failed', 'deliveries failed', deliveries.failed, search('failed')),
      card('card-skipped', 'skipped by a plugin', deliveries.skipped, search('skipped')),
      card('card-waiting', 'still queued or in flight', deliveries.waiting),
    ),
    h('h2', {}, 'Queue now'),
    h(
      'div',
      { class: 'cards' },
      card('card-queued', 'queued', activity.queue.queued, '#/deliveries?status=queued'),
      card('card-in-flight', 'in flight', activity.queue.in_flight, '#/deliveries?status=in_flight'),
    ),
    h('h2', {}, 'Destinations in trouble'),
    trouble.length
      ? table(
          [
            ['Destination', (row) => h('a', { href: '#/deliveries' + query({ host: row.destination }) }, row.destination)],
            ['State', (row) => badge(row.state)],
            ['Failures in a row', (row) => (row.health ? row.health.failures_in_a_row : '—'), 'num'],
            ['Waiting', (row) => row.waiting, 'num'],
            ['Last error', (row) => (row.health && row.health.last_error) || ''],
          ],
          trouble.slice(0, 10),
          { id: 'trouble' },
        )
      : h('p', { class: 'muted', id: 'trouble' }, 'None: every destination this node has seen is healthy or idle.'),
    trouble.length > 10 ? h('p', {}, h('a', { href: '#/destinations' }, `All ${trouble.length} on the destinations page`)) : null,
    h('h2', {}, `Nodes (${nodes.nodes.length})`),
    table(
      [
        ['Node', (node) => h('code', {}, node.id), 'wrap'],
        ['Listens on', (node) => node.listen || '—'],
        ['Version', (node) => node.version],
        ['Alive', (node) => (node.alive ? badge('healthy', 's', 'alive') : badge('failing', 's', 'silent'))],
        ['In flight', (node) => node.in_flight, 'num'],
        ['Last heartbeat', (node) => when(node.last_heartbeat_at)],
        ['', (node) => (node.this_node ? h('span', { class: 'muted' }, 'this node') : '')],
      ],
      shownNodes.rows,
      { id: 'nodes' },
    ),
    shownNodes.pages > 1 ? pager('#/', page.params, 'nodes_page', shownNodes.page, shownNodes.pages) : null,
  );
}
