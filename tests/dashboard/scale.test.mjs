// The dashboard with 1,000 nodes (issue 15: "a compact view, filtering, no 1,000 live
// charts"): a real kumaguard (SQLite store) that found 1,000 realistic simulated nodes in its
// node table, served by one kumasim process (--nodes 1000), seen in headless Chromium.
//
// Checked: the compact list instead of 1,000 cards, no chart until a row is opened (then
// exactly one), live updates applied in place (the same 1,000 row elements before and after),
// failing nodes first with the reason, the state chips, the filter box, opening a row from the
// keyboard, phone width and dark mode, no console errors.  The figures (time to first render,
// script time per update) are printed, not asserted: bench/dashboard_bench.mjs measures them
// against the previous dashboard in the same run.
//
// Run: KG_BUILD_DIR=<cmake build dir> node --test tests/dashboard/   (after `npm ci` here).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  ARTIFACTS, DESKTOP, PHONE, http, killAll, launchBrowser, overflowX, screenshot, simControl, sqlite,
  startKumaguard, startSim, stop, waitFor, watchPage,
} from './harness.mjs';

const N = 1000;
const PER_NODE = 5;
const TOKEN = 'scale-token-' + process.pid;
const FAILING = ['n17', 'n500', 'n999'];

let tmp;
let kg;
let fleet;
let browser;
let ctx;
let page;
let cdp;
const errors = [];
const answers = [];

/* Collects the dashboard's own User Timing measures (kg-render, kg-first-render). */
function collectMeasures() {
  window.__kgMeasures = [];
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      window.__kgMeasures.push({ name: e.name, ms: e.duration, nodes: e.detail && e.detail.nodes, at: e.startTime + e.duration });
    }
  }).observe({ type: 'measure', buffered: true });
}

const visibleRows = () => page.$$eval('#node-list > li.nrow', (rows) => rows.filter((r) => !r.hidden).map((r) => r.dataset.node));

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kg-dash-scale-'));
  const state = path.join(tmp, 'state');
  fs.mkdirSync(state);
  const db = path.join(state, 'cluster.db');
  // the nodes register themselves in the node table with the address they listen on
  fleet = await startSim({ nodes: N, prefix: 'n', sqlite: db, args: ['--no-cron', '--delay-scale', '0.01'], log: path.join(tmp, 'kumasim.log') });
  kg = await startKumaguard({
    dir: tmp,
    args: ['--state-dir', state, '--api-token', TOKEN, '--health-interval', '2s', '--health-fast-interval', '500ms',
      '--health-timeout', '1500ms', '--fall', '2', '--rise', '2', '--refresh-interval', '1s'],
  });
  sqlite(db, `WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ${N * PER_NODE})
    INSERT INTO monitor(name, active, user_id, node_id) SELECT 'm' || x, 1, 1, 'n' || ((x % ${N}) + 1) FROM c;`);
  await http('POST', kg.url + '/api/update-loads', { token: TOKEN });
  await waitFor(`${N} nodes online`, async () => {
    const r = await http('GET', kg.url + '/api/health-status');
    return r.json.nodes_total === N && r.json.nodes_online >= N - 5 && r.json.monitors_active === N * PER_NODE;
  }, 60000, 500);
  browser = await launchBrowser();
}, { timeout: 120000 });

after(async () => {
  try { if (browser) await browser.close(); } catch { /* killed below anyway */ }
  if (kg) await stop(kg.proc);
  killAll('SIGKILL');
  if (kg) {
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    try { fs.copyFileSync(kg.logPath, path.join(ARTIFACTS, 'kumaguard-scale.log')); } catch { /* no log */ }
  }
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
}, { timeout: 30000 });

test('1,000 nodes: a compact list drawn at once, and no chart', { timeout: 60000 }, async () => {
  ctx = await browser.newContext(DESKTOP);
  page = await ctx.newPage();
  page.setDefaultTimeout(20000);
  await watchPage(page, 'scale', errors, answers);
  await page.addInitScript(collectMeasures);
  await page.goto(kg.url + '/', { waitUntil: 'domcontentloaded' });
  const first = await page.waitForFunction(() => (window.__kgMeasures || []).find((m) => m.name === 'kg-first-render'), null, { timeout: 30000 });
  const f = await first.jsonValue();
  assert.equal(f.nodes, N);
  assert.equal(await page.locator('#node-list > li.nrow').count(), N);
  assert.equal(await page.locator('article.card').count(), 0, 'no card until a row is opened');
  assert.equal(await page.locator('canvas').count(), 0, 'no chart until a row is opened');
  assert.equal(await page.isVisible('#cards'), false);
  assert.match(await page.textContent('#node-count'), /^1,000 nodes$/);
  assert.match(await page.textContent('#node-chips [data-chip="all"]'), /All\s*1,000/);
  const renders = await page.evaluate(() => window.__kgMeasures.filter((m) => m.name === 'kg-render' && m.nodes > 0).map((m) => m.ms));
  const size = (await http('GET', kg.url + '/api/system-status')).text.length;
  cdp = await ctx.newCDPSession(page);
  await cdp.send('Performance.enable');
  console.log(`dashboard, ${N} nodes: first render ${Math.round(f.ms)} ms after navigation start ` +
    `(its render() ${Math.round(renders[0])} ms); /api/system-status is ${(size / 1e6).toFixed(2)} MB`);
});

test('live updates change rows in place: the same 1,000 elements, little script time', { timeout: 60000 }, async () => {
  await page.evaluate(() => {
    window.__kgRows = [...document.querySelectorAll('#node-list > li.nrow')];
    window.__kgRows.forEach((r, i) => { r.__kgMark = i; });
    window.__kgAdded = 0;
    new MutationObserver((recs) => { for (const r of recs) window.__kgAdded += r.addedNodes.length; })
      .observe(document.getElementById('node-list'), { childList: true });
  });
  const metric = async () => Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((m) => [m.name, m.value]));
  const m0 = await metric();
  const t0 = await page.evaluate(() => performance.now());
  const seen = (await page.evaluate(() => window.__kgMeasures.length));
  // at least three refreshes of the status document (each a render of 1,000 rows)
  await page.waitForFunction((s) => window.__kgMeasures.slice(s).filter((m) => m.name === 'kg-render').length >= 3, seen, { timeout: 30000 });
  const m1 = await metric();
  const t1 = await page.evaluate(() => performance.now());
  const r = await page.evaluate((s) => ({
    renders: window.__kgMeasures.slice(s).filter((m) => m.name === 'kg-render').map((m) => m.ms),
    same: window.__kgRows.every((row, i) => row.isConnected && row.__kgMark === i),
    rows: document.querySelectorAll('#node-list > li.nrow').length,
    added: window.__kgAdded,
  }), seen);
  assert.equal(r.rows, N);
  assert.ok(r.same, 'every row is the element it was: updates change rows in place');
  assert.ok(r.added <= 20, `only rows that changed place were moved (${r.added})`);
  const sorted = r.renders.slice().sort((a, b) => a - b);
  const busy = (m1.TaskDuration - m0.TaskDuration) / ((t1 - t0) / 1000);
  console.log(`dashboard, ${N} nodes: ${r.renders.length} updates in ${((t1 - t0) / 1000).toFixed(1)} s; render() per update ` +
    `median ${sorted[sorted.length >> 1].toFixed(1)} ms, max ${sorted[sorted.length - 1].toFixed(1)} ms; ` +
    `main thread busy ${(100 * busy).toFixed(1)} % of the time (script ${(m1.ScriptDuration - m0.ScriptDuration).toFixed(2)} s, ` +
    `layout ${(m1.LayoutDuration - m0.LayoutDuration).toFixed(2)} s); ${r.added} rows moved; DOM nodes ${m1.Nodes}`);
});

test('failing nodes first with the reason; state chips; the filter box; a row opened from the keyboard', { timeout: 60000 }, async () => {
  for (const id of FAILING) await simControl(fleet.ports.get(id), 'mode', '503');
  try {
    await page.waitForFunction((ids) => ids.every((id) => document.querySelector(`#node-list > li[data-node="${id}"]`)?.dataset.state === 'offline'),
      FAILING, { timeout: 20000 });
    // problems first: the three failing nodes lead the list, saying why
    await waitFor('the failing nodes at the top', async () => {
      const top = (await visibleRows()).slice(0, 3);
      return FAILING.every((id) => top.includes(id));
    }, 10000);
    const problem = await page.textContent(`#node-list > li[data-node="n500"] .nr-issue`);
    assert.match(problem, /probes fail: HTTP 503/);
    assert.match(await page.textContent(`#node-list > li[data-node="n500"] .nr-lat`), /no answer/);

    // the Problems chip shows only nodes with a problem; Offline only the offline ones
    await page.click('#node-chips [data-chip="problems"]');
    assert.equal(await page.getAttribute('#node-chips [data-chip="problems"]', 'aria-pressed'), 'true');
    let shown = await visibleRows();
    assert.ok(FAILING.every((id) => shown.includes(id)) && shown.length < 20, `problems only: ${shown}`);
    await page.click('#node-chips [data-chip="offline"]');
    shown = await visibleRows();
    assert.ok(FAILING.every((id) => shown.includes(id)));
    assert.deepEqual(await page.$$eval('#node-list > li.nrow:not([hidden])', (rows) => [...new Set(rows.map((r) => r.dataset.state))]), ['offline']);
    await page.click('#node-chips [data-chip="all"]');

    // the filter box: by id (a substring), then by host
    await page.fill('#node-q', 'n99');
    await page.waitForFunction(() => /^Showing 11 of 1,000 nodes$/.test(document.getElementById('node-count').textContent));
    shown = await visibleRows();
    assert.deepEqual(shown.slice().sort(), ['n99', ...Array.from({ length: 10 }, (_, i) => 'n99' + i)].sort());
    assert.equal(shown[0], 'n999', 'the failing one first');
    await page.fill('#node-q', '127.0.0.1:' + fleet.ports.get('n500'));
    await page.waitForFunction(() => document.querySelector('#node-list > li[data-node="n99"]').hidden);
    shown = await visibleRows();
    assert.ok(shown.includes('n500') && shown.length <= 10, `by host: ${shown}`);

    // open n500 from the keyboard: its card, with one chart, and nothing else charted
    await page.focus('#node-list > li[data-node="n500"] .nr-toggle');
    await page.keyboard.press('Enter');
    const card = page.locator('#node-list > li[data-node="n500"] article.card[data-node="n500"]');
    await card.waitFor({ state: 'visible' });
    assert.equal(await page.getAttribute('#node-list > li[data-node="n500"] .nr-toggle', 'aria-expanded'), 'true');
    assert.equal(await card.getAttribute('data-state'), 'offline');
    await page.waitForFunction(() => document.querySelectorAll('canvas').length === 1);
    assert.match(await card.locator('dd[data-f="failure"]').textContent(), /HTTP 503/);
    await screenshot(page, 'dashboard-1000-open.png', false);
    await page.keyboard.press('Enter');
    await card.waitFor({ state: 'detached' });
    assert.equal(await page.locator('canvas').count(), 0, 'its chart went with it');
    await page.fill('#node-q', '');
    await page.waitForFunction(() => /^1,000 nodes$/.test(document.getElementById('node-count').textContent));
  } finally {
    for (const id of FAILING) await simControl(fleet.ports.get(id), 'mode', 'healthy');
  }
  await screenshot(page, 'dashboard-1000.png', false);
});

test('1,000 nodes at phone width and in dark mode; no console errors', { timeout: 60000 }, async () => {
  for (const [name, opts] of [['dashboard-1000-phone.png', { ...PHONE, colorScheme: 'light' }], ['dashboard-1000-dark.png', { ...DESKTOP, colorScheme: 'dark' }]]) {
    const c = await browser.newContext(opts);
    const p = await c.newPage();
    p.setDefaultTimeout(20000);
    await watchPage(p, name, errors, answers);
    await p.goto(kg.url + '/', { waitUntil: 'domcontentloaded' });
    await p.waitForFunction((n) => document.querySelectorAll('#node-list > li.nrow').length === n, N);
    if (opts.isMobile) assert.ok(await overflowX(p) <= 0, 'no sideways scrolling on a phone');
    await p.evaluate(() => document.getElementById('nodes-heading').scrollIntoView());
    await screenshot(p, name, false);
    await c.close();
  }
  // the monitors view works at this size too (the live-node list used to be capped at 256)
  assert.deepEqual(errors, [], 'console errors: ' + JSON.stringify(errors, null, 1));
  assert.doesNotMatch(await page.textContent('#mon-summary'), /Could not load/);
  await ctx.close();
});
