// The console's entry: routes `#/...` to pages, keeps the API key in the browser session
// only, and gives each page a context that ends when the operator navigates away (timers
// stop, streams close, late answers are dropped).

import { api, h, key, setKey, takeRefusal } from './core.js';
import { overviewPage } from './overview.js';
import { deliveriesPage, deliveryPage } from './deliveries.js';
import { destinationsPage, destinationFormPage } from './destinations.js';
import { pluginsPage, playgroundPage } from './plugins.js';
import { livePage } from './live.js';

const ROUTES = [
  [/^\/$/, 'overview', overviewPage],
  [/^\/deliveries$/, 'deliveries', deliveriesPage],
  [/^\/deliveries\/([^/]+)$/, 'deliveries', deliveryPage],
  [/^\/destinations$/, 'destinations', destinationsPage],
  [/^\/destinations\/new$/, 'destinations', destinationFormPage],
  [/^\/destinations\/([^/]+)\/edit$/, 'destinations', destinationFormPage],
  [/^\/plugins$/, 'plugins', pluginsPage],
  [/^\/playground$/, 'playground', playgroundPage],
  [/^\/live$/, 'live', livePage],
];

const main = document.getElementById('main');
const nav = document.getElementById('nav');
let current = null;

/** What a page may use while it is shown. */
class PageContext {
  constructor(params) {
    this.params = params;
    this.controller = new AbortController();
    this.cleanups = [];
  }
  get alive() {
    return !this.controller.signal.aborted;
  }
  get signal() {
    return this.controller.signal;
  }
  /** Run `fn` every `ms` while the page is shown. */
  every(ms, fn) {
    // A page left while it was loading has already run its cleanups.
    if (!this.alive) return;
    const timer = setInterval(() => this.alive && fn(), ms);
    this.cleanups.push(() => clearInterval(timer));
  }
  leave() {
    this.controller.abort();
    for (const cleanup of this.cleanups) cleanup();
  }
}

function parseHash() {
  const hash = location.hash.replace(/^#/, '') || '/';
  const [path, search] = hash.split('?');
  return { path: path || '/', params: Object.fromEntries(new URLSearchParams(search || '')) };
}

async function render() {
  if (current) current.leave();
  const { path, params } = parseHash();
  if (!key() || path === '/signin') {
    nav.hidden = true;
    current = null;
    signInPage(path === '/signin');
    return;
  }
  nav.hidden = false;
  const found = ROUTES.map(([pattern, section, page]) => [path.match(pattern), section, page]).find(
    ([match]) => match,
  );
  main.replaceChildren();
  if (!found) {
    main.append(h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/' }, 'Back to the overview')));
    return;
  }
  const [match, section, page] = found;
  for (const link of nav.querySelectorAll('a')) {
    link.classList.toggle('active', link.dataset.section === section);
  }
  const context = new PageContext(params);
  current = context;
  try {
    await page(main, context, ...match.slice(1).map(decodeURIComponent));
  } catch (error) {
    if (context.alive && error.name !== 'AbortError') {
      main.append(h('div', { class: 'notice error', role: 'alert' }, String(error.message || error)));
    }
  }
}

/** `afterRefusal`: the page was reached because the gateway refused the session's key. */
function signInPage(afterRefusal) {
  const refusal = afterRefusal ? takeRefusal() : { detail: '', returnTo: '' };
  const input = h('input', {
    id: 'api-key',
    type: 'password',
    autocomplete: 'off',
    required: true,
    placeholder: 'API key',
  });
  const message = h('p', { id: 'signin-error', role: 'alert', class: 'muted' }, refusal.detail ? `The key was refused: ${refusal.detail}` : '');
  const submit = h('button', { id: 'sign-in', class: 'primary', type: 'submit' }, 'Sign in');
  const form = h(
    'form',
    {
      onsubmit: async (event) => {
        event.preventDefault();
        submit.disabled = true;
        message.textContent = 'Checking the key…';
        try {
          await api('GET', '/api/v1/activity?window_seconds=60', undefined, { key: input.value.trim() });
          setKey(input.value.trim());
          // Back where the operator was: the page whose call was refused, the page asked
          // for before signing in, or the overview.
          if (parseHash().path === '/signin') location.hash = refusal.returnTo || '#/';
          else render();
        } catch (error) {
          message.textContent =
            error.status === 401 ? `The gateway refused this key: ${error.message}` : `Sign-in failed: ${error.message}`;
          message.className = 'notice error';
        } finally {
          submit.disabled = false;
        }
      },
    },
    h('label', {}, 'API key', input),
    submit,
    h(
      'p',
      { class: 'muted' },
      'The key is kept in this browser tab only (session storage) and sent with each API call. ',
      'A gateway started without one prints the key it generated, and saves it in data/api_key.',
    ),
  );
  main.replaceChildren(h('section', { class: 'signin' }, h('h1', {}, 'Sign in to hookgate'), form, message));
  input.focus();
}

document.getElementById('sign-out').addEventListener('click', () => {
  setKey(null);
  location.hash = '#/signin';
});
window.addEventListener('hashchange', render);
render();
