// Plugins: what is loaded, from where, its sha256 and load errors; and the playground, which
// runs a plugin with a config on a sample or pasted event and shows the exact request the
// gateway would send (or the plugin's skip or error). The playground sends nothing.

import { EVENT_TYPES, api, append, badge, errorNotice, h, headerTable, notice, pageOf, pager, table, when } from './core.js';

const PAGE_SIZE = 25;

export async function pluginsPage(main, page) {
  const found = await api('GET', '/api/v1/plugins', undefined, { signal: page.signal });
  const { rows, page: current, pages } = pageOf(found.plugins, Number(page.params.page), PAGE_SIZE);
  // A load error beside a sha256 is a newer file that failed while an older version serves.
  const state = (info) =>
    info.loading
      ? badge('queued', 's', 'loading')
      : info.paused_for_ms
        ? badge('paused')
        : info.last_error && !info.sha256
          ? badge('failed', 's', 'load error')
          : badge('succeeded', 's', 'serving');
  append(
    main,
    h('h1', {}, 'Plugins'),
    h('p', { class: 'muted' }, 'Bundled plugins are built into the gateway; files dropped into the plugins folder load on the next scan and replace a bundled plugin of the same name.'),
    table(
      [
        ['Name', (info) => h('strong', {}, info.name)],
        ['State', state],
        ['Source', (info) => [info.source, info.path ? h('div', {}, h('code', {}, info.path)) : null]],
        ['Contract', (info) => info.contract || '—'],
        ['sha256', (info) => h('code', { title: info.sha256 }, info.sha256), 'wrap'],
        ['Loaded', (info) => when(info.loaded_at)],
        ['About', (info) => (info.about ? `${info.about.name} ${info.about.version}: ${info.about.description}` : '')],
        ['Load error', (info) => [info.last_error ? h('span', { class: 's-failed load-error' }, info.last_error) : '', trapping(info)], 'wrap'],
        ['', (info) => (info.sha256 ? h('a', { href: '#/playground?plugin=' + encodeURIComponent(info.name) }, 'Try') : '')],
      ],
      rows,
      { id: 'plugin-list', empty: 'No plugin is loaded.', rowProps: (info) => ({ dataset: { name: info.name } }) },
    ),
    pages > 1 ? pager('#/plugins', page.params, 'page', current, pages) : null,
  );
}

/** The imports hookgate does not provide, folded: most plugins built with a language's
 * standard library declare a few they never call. */
function trapping(info) {
  const imports = info.trapping_imports;
  if (!imports.length) return null;
  return h(
    'details',
    { class: 'muted' },
    h('summary', {}, `${imports.length} import${imports.length === 1 ? '' : 's'} would trap if called`),
    h('code', {}, imports.join(', ')),
  );
}

/** A sample event of `type`, shaped as a producer would send it. */
function sampleEvent(type) {
  const job = 'job-' + Math.random().toString(16).slice(2, 10);
  const data = { id: job, job_id: job, status: type.split('.').pop() };
  if (type.endsWith('.error')) data.error = 'the document could not be read';
  if (type.startsWith('parse.')) data.file_name = 'report.pdf';
  return { event_type: type, data };
}

export async function playgroundPage(main, page) {
  const params = page.params;
  const [plugins, configs] = await Promise.all([
    api('GET', '/api/v1/plugins', undefined, { signal: page.signal }),
    api('GET', '/api/v2/webhook-configs?page_size=100', undefined, { signal: page.signal }),
  ]);
  // A configuration named by the link but past the first hundred is read on its own.
  if (params.config_id && !configs.items.some((item) => item.id === params.config_id)) {
    const named = await api('GET', `/api/v1/beta/webhook-configs/${encodeURIComponent(params.config_id)}`, undefined, { signal: page.signal }).catch(() => null);
    if (named) configs.items.unshift(named);
  }
  const plugin = h(
    'select',
    { id: 'playground-plugin' },
    h('option', { value: '' }, 'the configuration\'s own (or none)'),
    plugins.plugins.map((info) => h('option', { value: info.name, selected: info.name === params.plugin }, info.name)),
  );
  const config = h(
    'select',
    { id: 'playground-config' },
    h('option', { value: '' }, 'none: only a URL'),
    configs.items.map((item) =>
      h('option', { value: item.id, selected: item.id === params.config_id }, `${item.webhook_url} (${item.webhook_transform || 'no plugin'})`),
    ),
  );
  const url = h('input', { id: 'playground-url', type: 'url', size: 50, placeholder: 'https://receiver.example/webhook' });
  const pluginConfig = h('textarea', { id: 'playground-plugin-config', rows: 3, placeholder: 'blank: the configuration\'s own, or none' });
  const sample = h(
    'select',
    { id: 'playground-sample' },
    EVENT_TYPES.map((type) => h('option', { value: type, selected: type === 'parse.success' }, type)),
  );
  const event = h('textarea', { id: 'playground-event', rows: 10 });
  event.value = JSON.stringify(sampleEvent('parse.success'), null, 2);
  sample.addEventListener('change', () => {
    event.value = JSON.stringify(sampleEvent(sample.value), null, 2);
  });
  const result = h('div', { id: 'playground-result' });
  const run = h('button', { type: 'submit', class: 'primary', id: 'playground-run' }, 'Run');
  const form = h(
    'form',
    { class: 'stack', id: 'playground-form' },
    h('div', { class: 'row' }, h('label', {}, 'Plugin', plugin), h('label', {}, 'Saved configuration', config), h('label', {}, 'URL (without a configuration)', url)),
    h('label', {}, 'Plugin config (JSON)', pluginConfig),
    h('div', { class: 'row' }, h('label', {}, 'Sample event', sample), h('span', { class: 'muted' }, 'or paste an event below (event_type, data, optional event_id)')),
    h('label', {}, 'Event', event),
    h('div', { class: 'row' }, run, h('span', { class: 'muted' }, 'Nothing is sent: the playground shows the request the gateway would send.')),
  );
  form.addEventListener('submit', async (submitted) => {
    submitted.preventDefault();
    let body;
    try {
      body = { event: JSON.parse(event.value) };
      if (pluginConfig.value.trim()) body.plugin_config = JSON.parse(pluginConfig.value);
    } catch (error) {
      result.replaceChildren(notice(`Not JSON: ${error.message}`, 'error'));
      return;
    }
    if (plugin.value) body.plugin = plugin.value;
    if (config.value) body.config_id = config.value;
    else if (url.value.trim()) body.webhook_url = url.value.trim();
    run.disabled = true;
    try {
      showResult(result, await api('POST', '/api/v1/plugins/preview', body));
    } catch (error) {
      result.replaceChildren(errorNotice(error));
    } finally {
      run.disabled = false;
    }
  });
  main.append(
    h('h1', {}, 'Plugin playground'),
    h('div', { class: 'columns' }, form, h('section', {}, h('h2', { class: 'flush' }, 'Result'), result)),
  );
}

function showResult(result, preview) {
  const by = preview.plugin ? `plugin ${preview.plugin}` : 'no plugin';
  if (preview.outcome === 'send') {
    result.replaceChildren(
      h('p', {}, badge('send'), ` With ${by}, the gateway would send:`),
      h('p', {}, h('code', { id: 'preview-line' }, `${preview.method} ${preview.request.url}`)),
      headerTable(preview.request.headers, 'preview-headers'),
      h('pre', { id: 'preview-body' }, preview.request.body),
    );
  } else if (preview.outcome === 'skip') {
    result.replaceChildren(h('p', { id: 'preview-skip' }, badge('skip'), ` ${by} skips this event: ${preview.reason}`));
  } else {
    result.replaceChildren(h('p', { id: 'preview-error' }, badge('error'), ` ${preview.error}`));
  }
}
