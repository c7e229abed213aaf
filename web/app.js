// POD Engine dashboard: one ES module, no build step, no dependencies.
//
// Data flow: HTTP loads the state (jobs, metrics, health, info); the /ws
// stream keeps it live (job:update, job:progress, metrics, log). Jobs live in
// one Map; the table shows the newest PAGE of those matching the filter and
// reuses its rows, so an event touches one row, not the whole list. Every
// piece of job data goes into the page as text (textContent, attributes),
// never as HTML.

const PAGE = 200;                 // rows per page of the job list
const DESIGNS_COLLAPSED = 24;     // cards in the one-row strip
const DESIGNS_EXPANDED = 120;     // cards in the expanded grid
const LOG_LINES = 500;            // log lines kept in the detail view
const KEEP_JOBS = 5000;           // jobs kept in memory; older finished ones are dropped
const THUMB_ROW = 96;             // thumbnail widths asked of /thumbs
const THUMB_CARD = 256;
const THUMB_CHIP = 64;
const STATUSES = ['pending', 'running', 'completed', 'failed', 'cancelled'];
const FINISHED = new Set(['completed', 'failed', 'cancelled']);

const state = {
  key: sessionStorage.getItem('podEngineKey') || localStorage.getItem('podEngineKey') || '',
  keyRequired: false,
  info: null,
  platforms: [],           // enabled publishers (short names)
  metrics: null,
  jobs: new Map(),         // id -> job (without logs)
  seenAt: new Map(),       // id -> when an event last changed it (performance.now())
  filter: 'all',
  search: '',
  limit: PAGE,
  hasMore: {},             // filter -> the server may have more jobs than loaded
  openId: null,            // the job in the detail view
  designsExpanded: false,
};

// DOM helpers ----------------------------------------------------------------

const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

/** An element: h('a', {href, class: 'x', dataset: {id}, onclick}, 'text', child). */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') el.className = value;
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else if (name === 'style') Object.assign(el.style, value);
    else if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace an element's children (nulls skipped, strings as text). */
function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

function setText(el, text) {
  text = String(text ?? '');
  if (el.textContent !== text) el.textContent = text;
}

// Formatting -------------------------------------------------------------------

function duration(ms) {
  if (ms === null || ms === undefined || ms < 0 || Number.isNaN(ms)) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.floor(s % 60)} s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours} h ${m % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

function age(ms) {
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 5) return 'just now';
  if (s < 60) return `${Math.floor(s)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400 * 2) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

const clock = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const stamp = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
const when = (ms) => (ms ? stamp.format(new Date(ms)) : '–');
const count = (n) => (n === null || n === undefined ? '–' : Number(n).toLocaleString());
const plural = (n, word) => `${count(n)} ${word}${n === 1 ? '' : 's'}`;

function jobDuration(job) {
  if (!job.startedAt) return null;
  return (job.completedAt || Date.now()) - job.startedAt;
}

/** One line saying what a job makes. */
function summary(job) {
  const request = job.request || {};
  if (job.type === 'generate') {
    const what = request.prompt || [request.theme, request.style, request.niche].filter(Boolean).join(' · ');
    return what || 'Generate';
  }
  if (job.type === 'batch') {
    const items = request.items || [];
    const first = items[0] ? summary({ type: 'generate', request: items[0] }) : '';
    return `Batch of ${plural(items.length, 'item')}${first ? `: ${first}${items.length > 1 ? ', …' : ''}` : ''}`;
  }
  if (job.type === 'order') {
    const result = job.result || {};
    const status = (result.orderStatus || '').replace('_', ' ');
    const shipped = (result.shipments || []).map((s) => `${s.carrier} ${s.trackingNumber}`);
    const tracking = status === 'shipped' && shipped.length ? ` (${shipped.join(', ')})` : '';
    return `Order ${request.shopifyOrderName || request.shopifyOrderId || ''}${status ? ` · ${status}${tracking}` : ''}`;
  }
  const about = request.title || request.image || '';
  return `Custom: ${request.handler || 'handler'}${about ? ` · ${about}` : ''}`;
}

function subline(job) {
  const request = job.request || {};
  const parts = [job.type];
  if (job.type === 'generate') {
    const n = request.count || 1;
    parts.push(`${plural(n, 'design')} → ${(request.productTypes || []).join(', ')}`);
  }
  if (job.retryCount) parts.push(`retry ${job.retryCount}/${job.maxRetries}`);
  parts.push(job.id);
  return parts.join(' · ');
}

// Files and thumbnails -----------------------------------------------------------

/** A same-origin URL of a small PNG of ``path`` (a path under DATA_DIR). */
function thumb(path, width) {
  return `thumbs/${path.split('/').map(encodeURIComponent).join('/')}?w=${width}`;
}

/** The DATA_DIR path of a /files/ URL (the engine's PUBLIC_URL may differ from ours). */
function filePath(url) {
  if (!url) return null;
  try {
    const pathname = new URL(url, location.href).pathname;
    const at = pathname.indexOf('/files/');
    return at < 0 ? null : decodeURIComponent(pathname.slice(at + '/files/'.length));
  } catch {
    return null;
  }
}

function mockupPath(product) {
  return product.mockupPath || filePath(product.mockupUrl);
}

/** A platform's mockups of a product (Printify's), loaded from its own http(s) URLs. */
function platformMockups(product) {
  if (mockupPath(product)) return [];
  return (Array.isArray(product.mockups) ? product.mockups : [])
    .filter((m) => m && /^https?:\/\//i.test(m.src || ''));
}

/** An <img> of a product: its local mockup's thumbnail, or the platform's default mockup. */
function productImg(product, width, alt, cls) {
  const path = mockupPath(product);
  if (path) return thumbImg(path, width, alt, cls);
  const [mockup] = platformMockups(product);
  return mockup ? remoteImg(mockup.src, alt, cls) : null;
}

function remoteImg(src, alt, cls) {
  return h('img', { src, alt, loading: 'lazy', decoding: 'async', referrerpolicy: 'no-referrer', class: cls });
}

/** Every generate result in a job's result (a batch holds one per item). */
function generateResults(job) {
  const result = job.result;
  if (!result || typeof result !== 'object') return [];
  if (Array.isArray(result.results)) return result.results.filter((r) => r && typeof r === 'object');
  return Array.isArray(result.generatedImages) ? [result] : [];
}

/**
 * The designs of a job, each with its products. Products name their design
 * when the engine says so (imageId/design); otherwise a result without errors
 * holds the same number of products per design, in design order.
 */
function designsOf(job) {
  const designs = [];
  for (const result of generateResults(job)) {
    const images = result.generatedImages || [];
    const products = result.products || [];
    const copy = result.designs || [];
    const linked = products.length && products.every((p) => p.imageId || p.designPath);
    const even = !linked && images.length && !(result.errors || []).length &&
      products.length % images.length === 0;
    const per = even ? products.length / images.length : 0;
    images.forEach((image, index) => {
      let mine = [];
      if (linked) mine = products.filter((p) => p.imageId === image.id || p.designPath === image.path);
      else if (even) mine = products.slice(index * per, (index + 1) * per);
      designs.push({ job, image, products: mine, copy: copy[index] || null });
    });
  }
  return designs;
}

function firstImage(job) {
  for (const result of generateResults(job)) {
    const image = (result.generatedImages || [])[0];
    if (image && image.path) return image;
  }
  return null;
}

function thumbImg(path, width, alt, cls) {
  return h('img', { src: thumb(path, width), alt, loading: 'lazy', decoding: 'async', class: cls });
}

const PUBLISH_STATES = { publishing: 'publishing…', publish_failed: 'publish failed' };

/** Product links grouped by platform; local products show their mockup. */
function productLinks(products) {
  const byPlatform = new Map();
  for (const product of products) {
    const list = byPlatform.get(product.platform) || [];
    list.push(product);
    byPlatform.set(product.platform, list);
  }
  return h('div', { class: 'products' }, [...byPlatform].map(([platform, list]) =>
    h('div', { class: 'platform' },
      byPlatform.size > 1 || state.platforms.length > 1
        ? h('span', { class: 'platform-name' }, platform) : null,
      list.map((product) => {
        const links = [h('a', {
          class: 'chip', href: product.url || product.mockupUrl, target: '_blank', rel: 'noopener',
          title: `${product.title || product.type} (${platform}: ${product.productId})`,
          dataset: { productId: product.productId || '' },
        }, productImg(product, THUMB_CHIP, ''), product.type)];
        if (product.storeUrl) {
          links.push(h('a', { class: 'chip store', href: product.storeUrl, target: '_blank',
            rel: 'noopener', title: 'Open in the store' }, 'store ↗'));
        }
        if (PUBLISH_STATES[product.status]) {
          // A connected shop syncs after the job ends; a failed sync says why.
          links.push(h('span', { class: 'chip publish-state', dataset: { state: product.status },
            title: product.error || 'The platform is still making the store listing' },
          PUBLISH_STATES[product.status]));
        }
        return links;
      }))));
}

// HTTP ---------------------------------------------------------------------------

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

function authHeaders() {
  return state.key ? { Authorization: `Bearer ${state.key}` } : {};
}

async function api(path, { method = 'GET', body } = {}) {
  const headers = authHeaders();
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError('The engine cannot be reached', 0);
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    // not JSON: the status says what happened
  }
  if (response.status === 401) {
    askForKey('The API key was not accepted: enter it again.');
  }
  if (!response.ok) {
    throw new ApiError((data && data.error) || `${response.status} ${response.statusText}`, response.status);
  }
  return data;
}

// API key --------------------------------------------------------------------------

/**
 * /health is open to everyone but answers metrics only to callers with the
 * key (when POD_API_KEY is set): that tells whether the key is needed and
 * right without a single 401.
 */
async function probeHealth(key = state.key) {
  const response = await fetch('health?report=true', { headers: key ? { Authorization: `Bearer ${key}` } : {} });
  const health = await response.json();
  return { health, authorized: 'metrics' in health };
}

let keyWaiters = [];

function askForKey(message) {
  const dialog = $('#key-dialog');
  const error = $('.form-error', dialog);
  error.hidden = !message;
  setText(error, message || '');
  $('#key-forget').hidden = !state.key;
  if (!dialog.open) dialog.showModal();
  $('#key-input').focus();
  return new Promise((resolve) => keyWaiters.push(resolve));
}

function setupKeyDialog() {
  const dialog = $('#key-dialog');
  dialog.addEventListener('cancel', (event) => {
    if (state.keyRequired && !state.key) event.preventDefault(); // nothing works without it
  });
  $('#key-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const key = $('#key-input').value.trim();
    const error = $('.form-error', dialog);
    if (!key) return;
    const { authorized } = await probeHealth(key).catch(() => ({ authorized: false }));
    if (!authorized) {
      error.hidden = false;
      setText(error, 'That key was not accepted.');
      return;
    }
    state.key = key;
    sessionStorage.setItem('podEngineKey', key);
    if ($('#key-remember').checked) localStorage.setItem('podEngineKey', key);
    else localStorage.removeItem('podEngineKey');
    $('#key-input').value = '';
    dialog.close();
    $('#key-button').hidden = false;
    const waiters = keyWaiters;
    keyWaiters = [];
    waiters.forEach((resolve) => resolve(key));
    if (live.started) live.restart(); // the socket carries the key too
  });
  $('#key-forget').addEventListener('click', () => {
    state.key = '';
    sessionStorage.removeItem('podEngineKey');
    localStorage.removeItem('podEngineKey');
    $('#key-forget').hidden = true;
    if (live.started) live.restart();
  });
  $('#key-button').addEventListener('click', () => askForKey(''));
}

// Toasts -----------------------------------------------------------------------------

function toast(message, kind = 'info') {
  const el = h('div', { class: 'toast', dataset: { kind }, role: kind === 'error' ? 'alert' : 'status' }, message);
  $('#toasts').append(el);
  setTimeout(() => el.remove(), kind === 'error' ? 7000 : 4000);
}

// Health, info and metrics ---------------------------------------------------------

function renderHealth(health) {
  const pill = $('#health');
  const status = health ? health.status : 'down';
  pill.dataset.status = status;
  setText(pill, health ? status[0].toUpperCase() + status.slice(1) : 'Unreachable');
  if (health) {
    const reasons = health.reasons || [];
    const services = Object.entries(health.services || {}).map(([name, up]) => `${name}: ${up ? 'up' : 'down'}`);
    pill.title = [`Engine ${status}`, ...reasons, ...services].join('\n');
  }
  if (health && health.metrics) renderMetrics(health.metrics);
}

function renderInfo(info) {
  state.info = info;
  const config = info.config || {};
  setText($('#version'), `v${info.version}`);
  const short = (text) => String(text || '').split(' (')[0];
  state.platforms = (config.platforms || []).map(short);
  fill($('#backends'),
    h('span', {}, 'Images ', h('b', {}, short(config.imageBackend) || '–')),
    h('span', {}, 'Publishing to ', h('b', {}, state.platforms.join(', ') || 'nothing')));
  $('#backends').title = [`Image backend: ${config.imageBackend}`, `Prompt writer: ${config.promptWriter}`,
    `Platforms: ${(config.platforms || []).join(', ')}`].join('\n');
  const types = config.productTypes || ['tshirt', 'hoodie'];
  const preset = types.includes('tshirt') ? 'tshirt' : types[0];
  for (const box of $$('[data-product-types]')) {
    box.replaceChildren(...types.map((type) => h('label', {},
      h('input', { type: 'checkbox', name: 'productTypes', value: type, checked: type === preset }),
      type)));
  }
  if (state.metrics) renderMetrics(state.metrics);
}

function renderMetrics(metrics) {
  state.metrics = metrics;
  const set = (name, value, sub) => {
    const card = $(`[data-metric="${name}"]`);
    setText($('.value', card), value);
    if (sub !== undefined) setText($('.sub', card), sub);
  };
  const slots = state.info && state.info.config ? state.info.config.maxConcurrent : null;
  set('running', count(metrics.runningJobs), slots ? `of ${plural(slots, 'slot')}` : '');
  set('pending', count(metrics.pendingJobs));
  set('completed', count(metrics.completedJobs), `of ${count(metrics.totalJobs)} submitted`);
  set('failed', count(metrics.failedJobs), metrics.cancelledJobs ? `${count(metrics.cancelledJobs)} cancelled` : '');
  const finished = (metrics.completedJobs || 0) + (metrics.failedJobs || 0);
  set('success', finished ? `${Number(metrics.successRate).toFixed(metrics.successRate % 1 ? 1 : 0)} %` : '–',
    finished ? `of ${plural(finished, 'finished job')}` : 'no finished jobs yet');
  set('average', metrics.averageJobTime ? duration(metrics.averageJobTime) : '–', `up ${duration(metrics.uptime)}`);
  $('[data-metric="failed"]').toggleAttribute('data-nonzero', metrics.failedJobs > 0);
  setText($('[data-filter="pending"] .count'), metrics.pendingJobs || '');
  setText($('[data-filter="running"] .count'), metrics.runningJobs || '');
}

let metricsTimer = null;
let healthDue = false;

/**
 * Refresh the metrics soon after a job changes (the event comes on a timer);
 * after a job finishes, health too, as it is judged from finished jobs.
 */
function refreshMetricsSoon(finished = false) {
  healthDue ||= finished;
  if (metricsTimer) return;
  metricsTimer = setTimeout(async () => {
    metricsTimer = null;
    const withHealth = healthDue;
    healthDue = false;
    try {
      renderMetrics(await api('api/metrics'));
      if (withHealth) await refreshHealth();
    } catch {
      // the next event or poll will do
    }
  }, 400);
}

async function refreshHealth() {
  try {
    const { health, authorized } = await probeHealth();
    renderHealth(health);
    if (!authorized) {
      state.keyRequired = true;
      $('#key-button').hidden = false;
      if (!$('#key-dialog').open) askForKey(state.key ? 'The API key is no longer accepted.' : '');
    }
  } catch {
    renderHealth(null);
  }
}

// Jobs: state -------------------------------------------------------------------------

const newestFirst = (a, b) => (b.createdAt - a.createdAt) || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);

const TYPE_FILTERS = new Set(['order']);  // filters by job type, not status

function matches(job) {
  if (TYPE_FILTERS.has(state.filter)) {
    if (job.type !== state.filter) return false;
  } else if (state.filter !== 'all' && job.status !== state.filter) return false;
  if (!state.search) return true;
  const text = `${job.id} ${summary(job)}`.toLowerCase();
  return text.includes(state.search);
}

function putJob(job, fromEvent) {
  const { logs, ...rest } = job; // logs live in the detail view only
  state.jobs.set(rest.id, rest);
  if (fromEvent) state.seenAt.set(rest.id, performance.now());
}

/** Merge a page from the server; an event newer than the request wins. */
function mergePage(jobs, requestedAt) {
  for (const job of jobs) {
    if ((state.seenAt.get(job.id) || 0) > requestedAt) continue;
    putJob(job, false);
  }
}

function filterParams(params, filter) {
  if (TYPE_FILTERS.has(filter)) params.set('type', filter);
  else if (filter !== 'all') params.set('status', filter);
}

async function loadPage(filter, offset) {
  const params = new URLSearchParams({ order: 'newest', limit: String(PAGE), offset: String(offset) });
  filterParams(params, filter);
  const requestedAt = performance.now();
  const page = await api(`api/jobs?${params}`);
  mergePage(page, requestedAt);
  state.hasMore[filter] = page.length === PAGE;
  return page;
}

/** Start over from the server: after a reconnect, a cleanup, a new key. */
async function reloadJobs() {
  const requestedAt = performance.now();
  const params = new URLSearchParams({ order: 'newest', limit: String(PAGE) });
  filterParams(params, state.filter);
  const page = await api(`api/jobs?${params}`);
  const keep = new Map();
  for (const [id, job] of state.jobs) {
    if ((state.seenAt.get(id) || 0) > requestedAt) keep.set(id, job);
  }
  state.jobs = keep;
  state.hasMore = {};
  mergePage(page, requestedAt);
  state.hasMore[state.filter] = page.length === PAGE;
  state.limit = PAGE;
  scheduleRender();
}

// Jobs: table ---------------------------------------------------------------------------

const rows = new Map(); // id -> <tr>
let renderQueued = false;

function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    prune();
    renderJobs();
    renderDesigns();
  });
}

/** A page left open for days must not keep every job it ever saw. */
function prune() {
  if (state.jobs.size <= KEEP_JOBS) return;
  const keep = KEEP_JOBS - PAGE;
  const all = [...state.jobs.values()].sort(newestFirst);
  for (const job of all.slice(keep)) {
    if (FINISHED.has(job.status) && job.id !== state.openId) {
      state.jobs.delete(job.id);
      state.seenAt.delete(job.id);
    }
  }
  for (const filter of ['all', ...STATUSES, ...TYPE_FILTERS]) state.hasMore[filter] = true;
  state.limit = Math.min(state.limit, keep);
}

function renderJobs() {
  const visible = [];
  for (const job of state.jobs.values()) if (matches(job)) visible.push(job);
  visible.sort(newestFirst);
  const shown = visible.slice(0, state.limit);
  const wanted = new Set(shown.map((job) => job.id));
  for (const [id, row] of rows) {
    if (!wanted.has(id)) {
      row.remove();
      rows.delete(id);
    }
  }
  const body = $('#job-rows');
  let cursor = body.firstChild;
  for (const job of shown) {
    let row = rows.get(job.id);
    if (!row) {
      row = makeRow(job);
      rows.set(job.id, row);
    } else {
      updateRow(row, job);
    }
    if (row === cursor) cursor = cursor.nextSibling;
    else body.insertBefore(row, cursor);
  }
  const more = visible.length > state.limit || (!state.search && state.hasMore[state.filter]);
  $('#load-more').hidden = !more;
  $('#jobs-empty').hidden = shown.length > 0;
  setText($('#jobs-empty'), state.search || state.filter !== 'all'
    ? 'No jobs match.' : 'No jobs yet. Submit one with the form.');
  setText($('#jobs-shown'), shown.length ? `Showing ${count(shown.length)}${more ? '+' : ''} ${shown.length === 1 ? 'job' : 'jobs'}` : '');
}

/** A completed job with products whose publish failed after it ended: its retry publishes them again. */
function publishFailed(job) {
  return job.status === 'completed' &&
    ((job.result && job.result.products) || []).some((p) => p.status === 'publish_failed');
}

function actionButtons(job) {
  const buttons = [];
  if (job.status === 'pending' || job.status === 'running') {
    buttons.push(h('button', { type: 'button', class: 'secondary small danger', dataset: { action: 'cancel' },
      'aria-label': `Cancel ${job.id}` }, 'Cancel'));
  }
  if (job.status === 'failed' || job.status === 'cancelled' || publishFailed(job)) {
    buttons.push(h('button', { type: 'button', class: 'secondary small', dataset: { action: 'retry' },
      'aria-label': `Retry ${job.id}` }, 'Retry'));
  }
  return buttons;
}

function makeRow(job) {
  const row = h('tr', { class: 'job-row', tabindex: 0, dataset: { id: job.id } },
    h('td', { class: 'c-status' }, h('span', { class: 'badge' })),
    h('td', { class: 'c-job' }, h('div', { class: 'job-cell' },
      h('span', { class: 'job-thumb', 'aria-hidden': 'true' }),
      h('div', { class: 'job-text' }, h('div', { class: 'job-title' }), h('div', { class: 'job-sub' })))),
    h('td', { class: 'c-prio' }, h('span', { class: 'prio' })),
    h('td', { class: 'c-progress' }, h('div', { class: 'progress' },
      h('div', { class: 'bar', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100 }, h('span')),
      h('span', { class: 'pct' }))),
    h('td', { class: 'c-age' }),
    h('td', { class: 'c-dur' }),
    h('td', { class: 'c-actions' }));
  updateRow(row, job);
  return row;
}

function updateRow(row, job) {
  const previous = row.job;
  row.job = job;
  if (previous === job) return;
  row.dataset.status = job.status;
  const badge = $('.badge', row);
  badge.dataset.status = job.status;
  setText(badge, job.status);
  setProgress(row, job);
  const title = summary(job);
  setText($('.job-title', row), title);
  $('.job-title', row).title = title;
  setText($('.job-sub', row), subline(job));
  const prio = $('.prio', row);
  prio.dataset.priority = job.priority;
  setText(prio, job.priority);
  $('.c-age', row).title = when(job.createdAt);
  tickRow(row, job);
  // Thumbnail: the first design, once there is one.
  const image = firstImage(job);
  const holder = $('.job-thumb', row);
  const src = image ? thumb(image.path, THUMB_ROW) : null;
  if (src && holder.dataset.src !== src) {
    holder.dataset.src = src;
    holder.replaceChildren(h('img', { src, alt: '', loading: 'lazy', decoding: 'async' }));
  } else if (!src && holder.dataset.src !== job.type) {
    holder.dataset.src = job.type;
    holder.replaceChildren({ generate: '✦', batch: '▦', custom: '⚙' }[job.type] || '•');
  }
  if (!previous || previous.status !== job.status || publishFailed(previous) !== publishFailed(job)) {
    $('.c-actions', row).replaceChildren(...actionButtons(job));
  }
}

function setProgress(root, job) {
  const bar = $('.bar', root);
  const value = Math.max(0, Math.min(100, Math.round(job.progress || 0)));
  bar.dataset.status = job.status;
  bar.setAttribute('aria-valuenow', value);
  $('span', bar).style.width = `${value}%`;
  setText($('.pct', root), `${value}%`);
}

function tickRow(row, job) {
  setText($('.c-age', row), age(job.createdAt));
  setText($('.c-dur', row), job.startedAt ? duration(jobDuration(job)) : '–');
}

/** Ages and running durations move on their own. */
function tick() {
  for (const row of rows.values()) tickRow(row, row.job);
  if (state.openId) {
    const job = state.jobs.get(state.openId);
    const cell = $('#detail [data-fact="duration"]');
    if (job && cell) setText(cell, duration(jobDuration(job)));
  }
}

function setupJobList() {
  $('#filters').addEventListener('click', async (event) => {
    const button = event.target.closest('[data-filter]');
    if (!button) return;
    for (const other of $$('[data-filter]')) other.setAttribute('aria-selected', String(other === button));
    state.filter = button.dataset.filter;
    state.limit = PAGE;
    scheduleRender();
    try {
      await loadPage(state.filter, 0);
      scheduleRender();
    } catch (error) {
      toast(error.message, 'error');
    }
  });
  let searchTimer = null;
  $('#search').addEventListener('input', (event) => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      state.search = event.target.value.trim().toLowerCase();
      scheduleRender();
    }, 120);
  });
  $('#load-more').addEventListener('click', async () => {
    const button = $('#load-more');
    const loaded = [...state.jobs.values()].filter(matches).length;
    state.limit += PAGE;
    if (loaded < state.limit && state.hasMore[state.filter] && !state.search) {
      button.disabled = true;
      try {
        await loadPage(state.filter, loaded);
      } catch (error) {
        toast(error.message, 'error');
      } finally {
        button.disabled = false;
      }
    }
    scheduleRender();
  });
  const body = $('#job-rows');
  body.addEventListener('click', (event) => {
    const row = event.target.closest('tr.job-row');
    if (!row) return;
    const action = event.target.closest('[data-action]');
    if (action) jobAction(row.dataset.id, action.dataset.action, action);
    else openDetail(row.dataset.id);
  });
  body.addEventListener('keydown', (event) => {
    const row = event.target.closest('tr.job-row');
    if (row && event.target === row && (event.key === 'Enter' || event.key === ' ')) {
      event.preventDefault();
      openDetail(row.dataset.id);
    }
  });
}

async function jobAction(id, action, button) {
  if (button) button.disabled = true;
  try {
    await api(`api/jobs/${encodeURIComponent(id)}/${action}`, { method: 'POST' });
    toast(action === 'cancel' ? 'Job cancelled' : 'Job queued again');
    // The job:update event updates the row; without the socket, fetch the job.
    if (!live.connected) {
      putJob(await api(`api/jobs/${encodeURIComponent(id)}`), true);
      scheduleRender();
      refreshMetricsSoon();
    }
  } catch (error) {
    toast(`Could not ${action} the job: ${error.message}`, 'error');
    if (button) button.disabled = false;
  }
}

// Designs --------------------------------------------------------------------------------

const cards = new Map(); // image id -> card

function renderDesigns() {
  const all = [];
  const jobs = [...state.jobs.values()].filter((job) => job.result).sort(newestFirst);
  for (const job of jobs) {
    all.push(...designsOf(job));
    if (all.length > DESIGNS_EXPANDED) break;
  }
  const limit = state.designsExpanded ? DESIGNS_EXPANDED : DESIGNS_COLLAPSED;
  const shown = all.slice(0, limit);
  const grid = $('#designs');
  const wanted = new Set(shown.map((d) => `${d.job.id}/${d.image.id}`));
  for (const [key, card] of cards) {
    if (!wanted.has(key)) {
      card.remove();
      cards.delete(key);
    }
  }
  let cursor = grid.firstChild;
  for (const design of shown) {
    const key = `${design.job.id}/${design.image.id}`;
    let card = cards.get(key);
    const signature = `${design.image.path}|${design.products.map((p) =>
      `${p.productId}:${p.status || ''}:${platformMockups(p).length}`).join(',')}`;
    if (!card || card.dataset.signature !== signature) {
      const fresh = designCard(design, THUMB_CARD, false);
      fresh.dataset.signature = signature;
      if (card) card.replaceWith(fresh);
      if (cursor === card) cursor = fresh;
      card = fresh;
      cards.set(key, card);
    }
    if (card === cursor) cursor = cursor.nextSibling;
    else grid.insertBefore(card, cursor);
  }
  $('#designs-empty').hidden = shown.length > 0;
  setText($('#designs-count'), all.length ? (all.length > DESIGNS_EXPANDED ? `${DESIGNS_EXPANDED}+` : all.length) : '');
  const toggle = $('#designs-toggle');
  toggle.hidden = all.length <= 6;
  setText(toggle, state.designsExpanded ? 'Show fewer' : 'Show all');
  grid.dataset.expanded = String(state.designsExpanded);
}

function designCard(design, width, detailed) {
  const { job, image, products, copy } = design;
  const title = image.title || (copy && copy.title) || image.prompt || 'Design';
  // A platform's mockup shows the design as a customer sees it: the card shows
  // it instead of the flat art, which stays one click away.
  const shown = products.map((p) => platformMockups(p)[0]).find(Boolean);
  const picture = shown ? remoteImg(shown.src, `${title} (mockup)`, 'mockup')
    : thumbImg(image.path, width, title);
  // In the strip a design opens its job; in the job's view, its print file.
  const art = detailed
    ? h('a', { class: 'art', href: image.url || null, target: '_blank', rel: 'noopener',
      title: `Open the print file (${image.width}×${image.height})` }, picture)
    : h('button', { type: 'button', class: 'art', onclick: () => openDetail(job.id),
      title: `${title}\n${age(job.completedAt || job.createdAt)} · ${job.id}` }, picture);
  return h('article', { class: 'design', dataset: { imageId: image.id || '', jobId: job.id,
    shows: shown ? 'mockup' : 'art' } },
    art,
    printBadge(image.print),
    h('div', { class: 'meta' },
      h('div', { class: 'title', title }, title),
      detailed ? printFacts(image.print) : null,
      detailed && image.prompt ? h('div', { class: 'prompt', title: image.prompt }, image.prompt) : null,
      detailed && copy && copy.tags ? h('div', { class: 'tags' }, copy.tags.map((tag) => h('span', { class: 'tag' }, tag))) : null,
      products.length ? productLinks(products) : null,
      detailed ? mockupStrip(products) : null,
      detailed
        ? h('div', { class: 'links' },
          h('a', { href: image.url, target: '_blank', rel: 'noopener' }, `Print file ${image.width}×${image.height}`),
          image.backend ? h('span', { class: 'muted' }, `${image.backend}${image.seed !== undefined && image.seed !== null ? ` · seed ${image.seed}` : ''}`) : null)
        : null));
}

const MOCKUPS_SHOWN = 12;  // of a design's platform mockups in its job's view

/** Every platform mockup of a design's products, each opening full size. */
function mockupStrip(products) {
  const mockups = products.flatMap((p) => platformMockups(p).map((m) => ({ ...m, product: p })));
  if (!mockups.length) return null;
  return h('div', { class: 'mockups' }, mockups.slice(0, MOCKUPS_SHOWN).map((m) =>
    h('a', { href: m.src, target: '_blank', rel: 'noopener',
      title: `${m.product.platform} ${m.product.type} mockup${m.isDefault ? ' (default)' : ''}` },
    remoteImg(m.src, `${m.product.type} mockup`))),
  mockups.length > MOCKUPS_SHOWN ? h('span', { class: 'muted' }, `+${mockups.length - MOCKUPS_SHOWN}`) : null);
}

/** A small badge when the print report holds a WARNING (e.g. a low DPI). */
function printBadge(report) {
  const warnings = (report && report.warnings) || [];
  if (!warnings.length) return null;
  const label = report.effectiveDpi ? `${report.effectiveDpi} DPI` : 'print';
  return h('span', { class: 'print-warning', title: warnings.join('\n') }, `⚠ ${label}`);
}

/** The print report in words: placement, sharpness, background, colours. */
function printFacts(report) {
  if (!report || !report.placement) return null;
  const background = report.background || {};
  const parts = [report.placement, `${report.effectiveDpi} DPI`];
  if (background.decision === 'removed') parts.push(`background removed (${Math.round(background.removed * 100)}%)`);
  else if (background.decision) parts.push(`background ${background.decision}`);
  const disabled = Object.entries(report.disabledColours || {})
    .map(([type, colours]) => `${type}: not in ${colours.join(', ')}`);
  return h('div', { class: 'print-facts muted', title: background.reason || '' },
    [...parts, ...disabled].join(' · '));
}

function setupDesigns() {
  $('#designs-toggle').addEventListener('click', () => {
    state.designsExpanded = !state.designsExpanded;
    renderDesigns();
  });
}

// Job detail --------------------------------------------------------------------------------

let detailLogs = [];

async function openDetail(id) {
  const dialog = $('#detail');
  if (state.openId !== id) detailLogs = [];
  state.openId = id;
  for (const row of rows.values()) row.toggleAttribute('data-open', row.dataset.id === id);
  const known = state.jobs.get(id);
  if (known) renderDetail(known);
  if (!dialog.open) dialog.showModal();
  try {
    const job = await api(`api/jobs/${encodeURIComponent(id)}`);
    if (state.openId !== id) return;
    detailLogs = (job.logs || []).slice(-LOG_LINES);
    putJob(job, false);
    renderDetail(state.jobs.get(id));
    scheduleRender();
  } catch (error) {
    if (error.status === 404) {
      state.jobs.delete(id);
      scheduleRender();
      closeDetail();
      toast('That job no longer exists (cleaned up).', 'error');
    } else {
      toast(error.message, 'error');
    }
  }
}

function closeDetail() {
  const dialog = $('#detail');
  state.openId = null;
  detailLogs = [];
  for (const row of rows.values()) row.removeAttribute('data-open');
  if (dialog.open) dialog.close();
}

function renderDetail(job) {
  const badge = $('#detail-status');
  badge.dataset.status = job.status;
  setText(badge, job.status);
  setText($('#detail-title'), summary(job));
  $('#detail-title').title = summary(job);
  const fact = (label, value, name) => h('div', {}, h('dt', {}, label), h('dd', { dataset: { fact: name || '' } }, value));
  const result = job.result;
  const designs = designsOf(job);
  const products = generateResults(job).flatMap((r) => r.products || []);
  const problems = [...new Set([...generateResults(job).flatMap((r) => r.errors || []),
    ...(result && Array.isArray(result.results) && Array.isArray(result.errors) ? result.errors : [])])];
  const body = $('#detail-body');
  const logList = h('ol', { class: 'logs', id: 'detail-logs' }, detailLogs.map(logLine));
  fill(body,
    h('div', { class: 'detail-actions' },
      h('div', { class: 'progress' },
        h('div', { class: 'bar', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100 }, h('span')),
        h('span', { class: 'pct' })),
      actionButtons(job).map((button) => {
        button.classList.remove('small');
        button.addEventListener('click', () => jobAction(job.id, button.dataset.action, button));
        return button;
      })),
    h('dl', { class: 'facts' },
      fact('Job', h('span', { class: 'mono' }, job.id), 'id'),
      fact('Type', job.type === 'custom' ? `custom (${(job.request || {}).handler})` : job.type),
      fact('Priority', job.priority),
      fact('Retries', `${job.retryCount} of ${job.maxRetries}`),
      fact('Created', when(job.createdAt)),
      fact('Started', when(job.startedAt)),
      fact('Finished', when(job.completedAt)),
      fact('Duration', job.startedAt ? duration(jobDuration(job)) : '–', 'duration'),
      job.nextRetryAt ? fact('Next retry', when(job.nextRetryAt)) : null),
    job.error ? h('section', {}, h('h3', {}, 'Error'), h('p', { class: 'callout' }, job.error)) : null,
    designs.length ? h('section', {}, h('h3', {}, `Designs (${designs.length})`),
      h('div', { class: 'detail-designs' }, designs.map((d) => designCard(d, THUMB_CARD, true)))) : null,
    products.length ? h('section', {}, h('h3', {}, `Products (${products.length})`), productTable(products)) : null,
    problems.length && !job.error ? h('section', {}, h('h3', {}, 'Problems'), h('p', { class: 'callout warn' }, problems.join('\n'))) : null,
    result !== null && result !== undefined ? h('section', {},
      h('details', { open: designs.length ? null : true },
        h('summary', {}, 'Result (JSON)'), h('pre', { class: 'json' }, JSON.stringify(result, null, 2)))) : null,
    h('section', {}, h('h3', {}, 'Request'), h('pre', { class: 'json' }, JSON.stringify(job.request, null, 2))),
    h('section', {}, h('h3', {}, 'Logs'), logList));
  setProgress(body, job);
  logList.scrollTop = logList.scrollHeight;
}

function productTable(products) {
  return h('table', { class: 'product-table' },
    h('thead', {}, h('tr', {}, h('th', {}, ''), h('th', {}, 'Platform'), h('th', {}, 'Type'), h('th', {}, 'Title'), h('th', {}, 'Links'))),
    h('tbody', {}, products.map((product) => {
      const picture = productImg(product, THUMB_ROW, `${product.type} mockup`);
      return h('tr', {},
        h('td', {}, picture ? h('a', { href: product.mockupUrl, target: '_blank', rel: 'noopener', title: 'Open the mockup' },
          picture) : null),
        h('td', {}, product.platform),
        h('td', {}, product.type),
        h('td', {}, product.title || ''),
        h('td', { class: 'links' },
          product.url ? h('a', { href: product.url, target: '_blank', rel: 'noopener' },
            product.platform === 'local' ? 'product.json' : 'Product ↗') : null,
          product.storeUrl ? h('a', { href: product.storeUrl, target: '_blank', rel: 'noopener' }, 'Store ↗') : null,
          product.published === false ? h('span', { class: 'muted' }, 'draft') : null));
    })));
}

function logLine(entry) {
  return h('li', {},
    h('time', { datetime: new Date(entry.timestamp).toISOString(), title: when(entry.timestamp) }, clock.format(new Date(entry.timestamp))),
    h('span', { class: 'lvl', dataset: { level: entry.type } }, entry.type),
    h('span', { class: 'msg' }, entry.message));
}

function appendLog(entry) {
  detailLogs.push(entry);
  const list = $('#detail-logs');
  if (!list) return;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 24;
  list.append(logLine(entry));
  while (detailLogs.length > LOG_LINES) {
    detailLogs.shift();
    list.firstChild.remove();
  }
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function setupDetail() {
  const dialog = $('#detail');
  $('#detail-close').addEventListener('click', closeDetail);
  dialog.addEventListener('close', () => {
    if (state.openId) closeDetail();
  });
  dialog.addEventListener('click', (event) => {
    if (event.target === dialog) closeDetail(); // the backdrop
  });
}

// Forms ------------------------------------------------------------------------------------

function checkedTypes(form) {
  return $$('input[name="productTypes"]:checked', form).map((input) => input.value);
}

function formError(form, message) {
  const el = $('.form-error', form);
  el.hidden = !message;
  setText(el, message || '');
}

/** A theme/style/niche line of the batch box, or a prompt. */
function batchItem(line) {
  if (line.includes('|')) {
    const [theme, style, niche] = line.split('|').map((part) => part.trim());
    return Object.fromEntries(Object.entries({ theme, style, niche }).filter(([, value]) => value));
  }
  return { prompt: line };
}

async function submitJob(form, path, body, label) {
  const button = $('button[type="submit"]', form);
  button.disabled = true;
  formError(form, '');
  try {
    const created = await api(path, { method: 'POST', body });
    putJob(created.job, true);
    scheduleRender();
    refreshMetricsSoon();
    toast(`${label} queued: ${created.jobId}`);
    return true;
  } catch (error) {
    formError(form, error.message);
    return false;
  } finally {
    button.disabled = false;
  }
}

function setupForms() {
  const tabs = [['#tab-generate', '#generate-form'], ['#tab-batch', '#batch-form']];
  for (const [tab, panel] of tabs) {
    $(tab).addEventListener('click', () => {
      for (const [otherTab, otherPanel] of tabs) {
        $(otherTab).setAttribute('aria-selected', String(otherTab === tab));
        $(otherPanel).hidden = otherPanel !== panel;
      }
    });
  }

  const generate = $('#generate-form');
  generate.addEventListener('change', (event) => {
    if (event.target.name !== 'mode') return;
    for (const el of $$('[data-mode]', generate)) el.hidden = el.dataset.mode !== event.target.value;
  });
  generate.addEventListener('submit', async (event) => {
    event.preventDefault();
    const data = new FormData(generate);
    const body = { productTypes: checkedTypes(generate), autoPublish: data.get('autoPublish') === 'on',
      count: Number(data.get('count') || 1), priority: data.get('priority') };
    if (data.get('mode') === 'prompt') {
      const prompt = String(data.get('prompt')).trim();
      if (!prompt) return formError(generate, 'Write a prompt, or switch to theme, style, niche.');
      body.prompt = prompt;
    } else {
      for (const name of ['theme', 'style', 'niche']) {
        const value = String(data.get(name)).trim();
        if (value) body[name] = value;
      }
      if (!body.theme && !body.style && !body.niche) return formError(generate, 'Give a theme, a style or a niche.');
    }
    if (!body.productTypes.length) return formError(generate, 'Pick at least one product type.');
    if (!Number.isInteger(body.count) || body.count < 1 || body.count > 50) return formError(generate, 'Designs must be from 1 to 50.');
    const seed = String(data.get('seed') || '').trim();
    if (seed) body.seed = Number(seed);
    if (await submitJob(generate, 'api/generate', body, 'Generate job')) {
      $('#g-prompt').value = '';
    }
  });

  const batch = $('#batch-form');
  const itemsBox = $('#b-items');
  const batchButton = $('button[type="submit"]', batch);
  itemsBox.addEventListener('input', () => {
    const n = itemsBox.value.split('\n').filter((line) => line.trim()).length;
    setText(batchButton, n ? `Queue batch of ${n}` : 'Queue batch');
  });
  batch.addEventListener('submit', async (event) => {
    event.preventDefault();
    const data = new FormData(batch);
    const lines = String(data.get('items')).split('\n').map((line) => line.trim()).filter(Boolean);
    const productTypes = checkedTypes(batch);
    const countPer = Number(data.get('count') || 1);
    if (!lines.length) return formError(batch, 'Write at least one line.');
    if (lines.length > 100) return formError(batch, `A batch holds at most 100 items (this has ${lines.length}).`);
    if (!productTypes.length) return formError(batch, 'Pick at least one product type.');
    const items = lines.map((line) => ({ ...batchItem(line), productTypes, count: countPer,
      autoPublish: data.get('autoPublish') === 'on' }));
    if (items.some((item) => !item.prompt && !item.theme && !item.style && !item.niche)) {
      return formError(batch, 'Every line needs a prompt or a theme | style | niche.');
    }
    if (await submitJob(batch, 'api/generate/batch', { items, priority: data.get('priority') }, 'Batch')) {
      itemsBox.value = '';
      setText(batchButton, 'Queue batch');
    }
  });

  $('#cleanup-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = $('button', event.target);
    button.disabled = true;
    try {
      const { cleared } = await api('api/jobs/cleanup', { method: 'POST', body: { maxAge: Number($('#cleanup-age').value) } });
      toast(cleared ? `Removed ${plural(cleared, 'finished job')}` : 'Nothing to clean up');
      if (cleared) await reloadJobs();
      refreshMetricsSoon();
    } catch (error) {
      toast(`Cleanup failed: ${error.message}`, 'error');
    } finally {
      button.disabled = false;
    }
  });
}

// Live events over /ws ---------------------------------------------------------------------

const live = {
  socket: null,
  connected: false,
  attempts: 0,
  timer: null,
  everConnected: false,
  started: false,

  url() {
    const url = new URL('ws', location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    if (state.key) url.searchParams.set('key', state.key);
    return url.href;
  },

  connect() {
    clearTimeout(this.timer);
    this.started = true;
    const socket = new WebSocket(this.url());
    this.socket = socket;
    socket.addEventListener('open', () => {
      if (this.socket !== socket) return;
      this.connected = true;
      this.attempts = 0;
      setConnection('live');
      // Whatever happened while we were away: load it again.
      if (this.everConnected) resync();
      this.everConnected = true;
    });
    socket.addEventListener('message', (message) => {
      if (this.socket !== socket) return;
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return;
      }
      handleEvent(frame.event, frame.data);
    });
    socket.addEventListener('close', () => {
      if (this.socket !== socket) return;
      this.connected = false;
      this.socket = null;
      setConnection('reconnecting');
      // Back off 0.5 s, 1 s, 2 s ... up to 10 s, with jitter.
      const delay = Math.min(10000, 500 * 2 ** this.attempts) * (0.8 + Math.random() * 0.4);
      this.attempts += 1;
      this.timer = setTimeout(() => this.connect(), delay);
      if (this.attempts === 3) refreshHealth(); // is the engine down, or the key wrong?
    });
  },

  restart() {
    const old = this.socket;
    this.socket = null;
    if (old) old.close();
    this.connected = false;
    this.attempts = 0;
    this.everConnected = true; // reload on the new connection
    this.connect();
  },
};

function setConnection(status) {
  const el = $('#conn');
  el.dataset.state = status;
  setText($('.conn-label', el), { live: 'Live', reconnecting: 'Reconnecting…', connecting: 'Connecting…' }[status]);
}

async function resync() {
  try {
    await Promise.all([reloadJobs(), refreshHealth()]);
    if (state.openId) openDetail(state.openId);
  } catch (error) {
    toast(`Could not reload: ${error.message}`, 'error');
  }
}

function handleEvent(event, data) {
  if (!data) return;
  if (event === 'job:update') {
    putJob(data, true);
    scheduleRender();
    refreshMetricsSoon(['completed', 'failed'].includes(data.status));
    if (state.openId === data.id) renderDetail(state.jobs.get(data.id));
  } else if (event === 'job:progress') {
    const job = state.jobs.get(data.id);
    if (!job) return;
    const next = { ...job, progress: data.progress, status: data.status || job.status };
    state.jobs.set(job.id, next);
    state.seenAt.set(job.id, performance.now());
    const row = rows.get(job.id);
    if (next.status !== job.status) scheduleRender();
    else if (row) {
      row.job = next;
      setProgress(row, next);
    }
    if (state.openId === job.id) setProgress($('#detail-body'), next);
  } else if (event === 'metrics') {
    renderMetrics(data);
  } else if (event === 'log') {
    if (state.openId && data.jobId === state.openId) appendLog(data);
  }
}

// Start ----------------------------------------------------------------------------------

async function start() {
  setupKeyDialog();
  setupJobList();
  setupDesigns();
  setupDetail();
  setupForms();

  let probe;
  try {
    probe = await probeHealth();
  } catch {
    renderHealth(null);
    probe = null;
  }
  if (probe && !probe.authorized) {
    state.keyRequired = true;
    renderHealth(probe.health);
    await askForKey(state.key ? 'The saved API key was not accepted.' : '');
    probe = await probeHealth();
  }
  $('#key-button').hidden = !state.keyRequired;
  if (probe) renderHealth(probe.health);

  live.connect();
  try {
    const [info] = await Promise.all([api('api/info'), reloadJobs()]);
    renderInfo(info);
  } catch (error) {
    toast(`Could not load the engine state: ${error.message}`, 'error');
  }
  setInterval(tick, 1000);
  setInterval(refreshHealth, 15000);
  document.documentElement.dataset.ready = 'true'; // for tests and tools
}

start();
