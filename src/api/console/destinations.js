// Destinations: each destination's health with pause and resume, and the saved webhook
// configurations (created, edited and deleted through the LlamaCloud-compatible API). A
// configuration's signing secret can be set or replaced here but never read back.

import { EVENT_TYPES, api, append, badge, confirmed, errorNotice, fill, h, notice, pageOf, pager, query, table, when } from './core.js';

const HEALTH_PAGE_SIZE = 25;
const CONFIG_PAGE_SIZE = 25;

export async function destinationsPage(main, page) {
  // The saved notice is shown once; links from this page leave it out.
  const { saved, ...params } = page.params;
  const health = h('div', { id: 'health' }, h('p', { class: 'muted' }, 'Loading…'));
  const configs = h('div', { id: 'configs' }, h('p', { class: 'muted' }, 'Loading…'));
  append(
    main,
    h('h1', {}, 'Destinations'),
    saved ? notice(`Saved configuration ${saved}.`, 'ok') : null,
    h('h2', {}, 'Health ', h('span', { class: 'muted' }, '(this node\'s recent attempts; paused and failing first)')),
    health,
    h('div', { class: 'row' }, h('h2', {}, 'Saved configurations'), h('a', { id: 'new-destination', href: '#/destinations/new' }, '+ New configuration')),
    configs,
  );
  await Promise.all([showHealth(health, params, page), showConfigs(configs, params, page)]);
}

async function showHealth(container, params, page) {
  let found;
  try {
    found = await api('GET', '/api/v1/destinations', undefined, { signal: page.signal });
  } catch (error) {
    container.replaceChildren(errorNotice(error));
    return;
  }
  const { rows, page: current, pages } = pageOf(found.destinations, Number(params.health_page), HEALTH_PAGE_SIZE);
  const rate = (row) => (row.health ? `${Math.round(row.health.success_rate * 100)}% of ${row.health.attempts}` : '—');
  const latency = (row) => (row.health ? `${row.health.latency_ms_p50} / ${row.health.latency_ms_p99} ms` : '—');
  const toggle = (row) => {
    const paused = row.state === 'paused';
    const button = h('button', { type: 'button', class: paused ? 'resume' : 'pause', dataset: { destination: row.destination } }, paused ? 'Resume' : 'Pause');
    button.addEventListener('click', async () => {
      button.disabled = true;
      try {
        await api('POST', `/api/v1/destinations/${encodeURIComponent(row.destination)}/${paused ? 'resume' : 'pause'}`);
        await showHealth(container, params, page);
      } catch (error) {
        container.prepend(errorNotice(error));
        button.disabled = false;
      }
    });
    return button;
  };
  fill(
    container,
    table(
      [
        ['Destination', (row) => h('a', { href: '#/deliveries' + query({ host: row.destination }) }, row.destination)],
        ['State', (row) => [badge(row.state), row.paused_by ? h('span', { class: 'muted' }, ` by ${row.paused_by}`) : '']],
        ['Success', rate, 'num'],
        ['p50 / p99', latency, 'num'],
        ['Failures in a row', (row) => (row.health ? row.health.failures_in_a_row : '—'), 'num'],
        ['Waiting', (row) => row.waiting, 'num'],
        ['In flight', (row) => row.in_flight, 'num'],
        ['Last attempt', (row) => when(row.health && row.health.last_attempt_at)],
        ['Last error', (row) => (row.health && row.health.last_error) || ''],
        ['', toggle],
      ],
      rows,
      { id: 'destination-health', empty: 'No destination yet: none has been attempted or waits.', rowProps: (row) => ({ dataset: { destination: row.destination, state: row.state } }) },
    ),
    pages > 1 ? pager('#/destinations', params, 'health_page', current, pages) : null,
  );
}

async function showConfigs(container, params, page) {
  let found;
  try {
    found = await api(
      'GET',
      '/api/v2/webhook-configs' + query({ page_size: CONFIG_PAGE_SIZE, page_token: params.configs_token, include_total: true }),
      undefined,
      { signal: page.signal },
    );
  } catch (error) {
    container.replaceChildren(errorNotice(error));
    return;
  }
  const remove = (config) => {
    const button = h('button', { type: 'button', class: 'danger delete-config' }, 'Delete');
    return confirmed(button, 'Confirm delete', async () => {
      button.disabled = true;
      try {
        await api('DELETE', `/api/v1/beta/webhook-configs/${encodeURIComponent(config.id)}`);
        await showConfigs(container, params, page);
      } catch (error) {
        container.prepend(errorNotice(error));
        button.disabled = false;
      }
    });
  };
  const events = (config) => (Array.isArray(config.webhook_events) && config.webhook_events.length ? config.webhook_events.join(', ') : 'all');
  container.replaceChildren(
    table(
      [
        ['URL', (config) => h('code', {}, config.webhook_url), 'wrap'],
        ['Events', events],
        ['Plugin', (config) => config.webhook_transform || h('span', { class: 'muted' }, 'none')],
        ['Format', (config) => config.webhook_output_format],
        [
          'Secret',
          (config) =>
            !config.has_secret
              ? h('span', { class: 'muted' }, 'none')
              : config.previous_secret_expires_at
                ? ['set; the replaced one also signs until ', when(config.previous_secret_expires_at)]
                : 'set',
        ],
        ['Project', (config) => config.tenant_id],
        ['Updated', (config) => when(config.updated_at)],
        ['', (config) => [
          h('a', { href: `#/destinations/${encodeURIComponent(config.id)}/edit`, class: 'edit-config' }, 'Edit'), ' ',
          h('a', { href: '#/deliveries' + query({ config_id: config.id }) }, 'Deliveries'), ' ',
          h('a', { href: '#/playground' + query({ config_id: config.id }) }, 'Try'), ' ',
          remove(config),
        ]],
      ],
      found.items,
      { id: 'config-list', empty: 'No saved configuration.', rowProps: (config) => ({ dataset: { id: config.id } }) },
    ),
    h(
      'div',
      { class: 'pager' },
      params.configs_token ? h('a', { href: '#/destinations' }, '← First') : null,
      h('span', { class: 'muted' }, `${found.total_size ?? found.items.length} saved`),
      found.next_page_token ? h('a', { href: '#/destinations' + query({ ...params, configs_token: found.next_page_token }) }, 'Next →') : null,
    ),
  );
}

/** Create (no id) or edit a saved configuration. */
export async function destinationFormPage(main, page, configId) {
  const editing = Boolean(configId);
  const [plugins, existing] = await Promise.all([
    api('GET', '/api/v1/plugins', undefined, { signal: page.signal }),
    editing ? api('GET', `/api/v1/beta/webhook-configs/${encodeURIComponent(configId)}`, undefined, { signal: page.signal }) : null,
  ]);
  const config = existing || { webhook_output_format: 'string', webhook_headers: {} };
  const chosen = new Set(config.webhook_events || []);
  const field = (label, control, hint) => h('label', {}, label, control, hint ? h('span', { class: 'muted' }, hint) : null);
  const url = h('input', { id: 'webhook-url', type: 'url', required: true, size: 60, value: config.webhook_url || '', placeholder: 'https://hooks.example.com/llamacloud' });
  const format = h(
    'select',
    { id: 'output-format' },
    ['json', 'string'].map((value) => h('option', { value, selected: value === config.webhook_output_format }, value)),
  );
  const headers = h('textarea', { id: 'webhook-headers', rows: 3, placeholder: 'X-Team: parsing' });
  headers.value = Object.entries(config.webhook_headers || {}).map(([name, value]) => `${name}: ${value}`).join('\n');
  const plugin = h(
    'select',
    { id: 'plugin' },
    h('option', { value: '' }, 'none'),
    plugins.plugins.map((info) => h('option', { value: info.name, selected: info.name === config.webhook_transform }, `${info.name} (${info.source})`)),
  );
  const pluginConfig = h('textarea', { id: 'plugin-config', rows: 4, placeholder: '{"prefix": "Llamacloud/"}' });
  pluginConfig.value = config.webhook_transform_config == null ? '' : JSON.stringify(config.webhook_transform_config, null, 2);
  const retry = h('textarea', { id: 'webhook-retry', rows: 2, placeholder: '{"max_attempts": 10}' });
  retry.value = config.webhook_retry == null ? '' : JSON.stringify(config.webhook_retry);
  const secret = h('input', { id: 'signing-secret', type: 'password', autocomplete: 'new-password', size: 40, placeholder: editing && config.has_secret ? 'set; leave blank to keep it' : 'none' });
  const clearSecret = h('input', { id: 'clear-secret', type: 'checkbox' });
  const project = h('input', { id: 'project-id', size: 36, value: editing ? config.tenant_id : '', disabled: editing, placeholder: 'default' });
  const events = h(
    'div',
    { class: 'event-types', id: 'webhook-events' },
    EVENT_TYPES.map((type) => h('label', { class: 'inline' }, h('input', { type: 'checkbox', value: type, checked: chosen.has(type) }), type)),
  );
  const status = h('div', { id: 'form-status' });
  const form = h(
    'form',
    { id: 'destination-form', class: 'stack' },
    field('Webhook URL', url),
    h('fieldset', {}, h('legend', {}, 'Events (none ticked: every event)'), events),
    field('Output format', format, 'json: the payload object; string: the payload as a JSON string (LlamaCloud\'s default)'),
    field('Headers', headers, 'One "Name: value" per line'),
    field('Transform plugin', plugin),
    field('Plugin config (JSON)', pluginConfig),
    field('Retry override (JSON)', retry, 'e.g. {"max_attempts": 10, "max_age_seconds": 3600}; blank for the gateway\'s policy'),
    field('Signing secret', secret, editing ? 'Write-only: never shown again. A new one starts a rotation window.' : 'Write-only: never shown again.'),
    editing && config.has_secret ? h('label', { class: 'inline' }, clearSecret, 'Remove the secret (stop signing)') : null,
    field('Project', project, editing ? 'A configuration stays in its project.' : 'Blank: the default project'),
    h('div', { class: 'row' }, h('button', { type: 'submit', class: 'primary', id: 'save-destination' }, editing ? 'Save changes' : 'Create'), h('a', { href: '#/destinations' }, 'Cancel')),
    status,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    let body;
    try {
      body = {
        webhook_url: url.value.trim(),
        webhook_events: [...events.querySelectorAll('input:checked')].map((box) => box.value),
        webhook_output_format: format.value,
        webhook_headers: parseHeaders(headers.value),
        webhook_transform: plugin.value || null,
        webhook_transform_config: parseJsonField('Plugin config', pluginConfig.value),
        webhook_retry: parseJsonField('Retry override', retry.value),
      };
    } catch (error) {
      status.replaceChildren(notice(error.message, 'error'));
      return;
    }
    if (!body.webhook_events.length) body.webhook_events = null;
    if (secret.value) body.webhook_signing_secret = secret.value;
    else if (clearSecret.checked) body.webhook_signing_secret = null;
    try {
      const saved = editing
        ? await api('PUT', `/api/v1/beta/webhook-configs/${encodeURIComponent(configId)}`, body)
        : await api('POST', '/api/v1/beta/webhook-configs' + query({ project_id: project.value.trim() }), body);
      location.hash = '#/destinations?saved=' + encodeURIComponent(saved.id);
    } catch (error) {
      status.replaceChildren(errorNotice(error));
    }
  });
  append(
    main,
    h('p', {}, h('a', { href: '#/destinations' }, '← Destinations')),
    h('h1', {}, editing ? 'Edit configuration ' : 'New configuration', editing ? h('code', {}, configId) : ''),
    form,
  );
}

function parseHeaders(text) {
  const headers = {};
  for (const [index, line] of text.split('\n').entries()) {
    if (!line.trim()) continue;
    const colon = line.indexOf(':');
    if (colon < 1) throw new Error(`Headers, line ${index + 1}: write "Name: value"`);
    headers[line.slice(0, colon).trim()] = line.slice(colon + 1).trim();
  }
  return headers;
}

function parseJsonField(label, text) {
  if (!text.trim()) return null;
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new Error(`${label}: not JSON (${error.message})`);
  }
}
