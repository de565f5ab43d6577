// An example hookgate transform plugin: adds one header to every request.
// Config: `{"header": "X-Source", "value": "hookgate"}` (both optional).
//
// Implements the `transformer` world of `wit/transformer.wit` (hookgate:plugin@0.2.0).
// componentize-js maps the WIT exports to this module's exports: kebab-case names become
// camelCase (`validate-config` -> `validateConfig`), records are plain objects with camelCase
// fields, `list<u8>` is a Uint8Array, a variant is `{ tag, val }`, an `option` is the value or
// `undefined`. A `result` export returns its `ok` value; throwing an object with a `payload`
// (or any non-Error value) answers `err(payload)`.
//
// hookgate gives plugins no WASI: keep this free of console.*, Date, timers, Math.random,
// crypto and fetch (the build disables them; see README.md).

/** Thrown to answer `err(payload)` from a `result` export. */
class Refusal extends Error {
  constructor(payload) {
    super(typeof payload === 'string' ? payload : payload.message);
    this.payload = payload;
  }
}

/** Compares by code point, i.e. UTF-8 byte order, as the Rust example's serde_json map does. */
function byCodePoint(a, b) {
  const x = Array.from(a, (c) => c.codePointAt(0));
  const y = Array.from(b, (c) => c.codePointAt(0));
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] !== y[i]) return x[i] - y[i];
  }
  return x.length - y.length;
}

/**
 * The config, read the same way by `validateConfig` and `transform`.
 * Returns `{ ok: [name, value] }` or `{ err: { pointer, message } }`.
 */
function header(config) {
  const refuse = (pointer, message) => ({ err: { pointer, message } });
  let parsed;
  try {
    parsed = JSON.parse(config);
  } catch {
    return refuse('', 'is not JSON');
  }
  const header = ['X-Source', 'hookgate'];
  if (parsed === null) return { ok: header };
  if (typeof parsed !== 'object' || Array.isArray(parsed)) return refuse('', 'must be an object');
  // Keys in sorted order, like the Rust example, so a config with several faults is refused
  // for the same one.
  for (const key of Object.keys(parsed).sort(byCodePoint)) {
    const value = parsed[key];
    const pointer = '/' + key.replaceAll('~', '~0').replaceAll('/', '~1');
    if (key !== 'header' && key !== 'value') {
      return refuse(pointer, 'is not a field (header, value)');
    }
    if (typeof value !== 'string') return refuse(pointer, 'must be a string');
    header[key === 'header' ? 0 : 1] = value;
  }
  return { ok: header };
}

/** `describe: func() -> plugin-info` */
export function describe() {
  return {
    name: 'my_plugin',
    version: '0.1.0',
    description: 'Adds one header to every request.',
    configSchema: undefined,
  };
}

/** `validate-config: func(config: string) -> result<_, config-error>` */
export function validateConfig(config) {
  const checked = header(config);
  if (checked.err) throw new Refusal(checked.err);
}

/** `transform: func(event, request, config: string) -> result<outcome, string>` */
export function transform(_event, request, config) {
  const checked = header(config);
  if (checked.err) throw new Refusal(checked.err.message);
  const [name, value] = checked.ok;
  request.headers.push({ name, value });
  return { tag: 'send', val: request };
}
