// The causes of trouble, said plainly on the dashboard, each produced for real: a real
// kumaguard (SQLite store, API token, Kuma API key) and four realistic simulated nodes
// (kumasim) on its cluster file, seen in headless Chromium.
//
//   node1  fails (HTTP 503) and comes back while the cluster has no active user: it is told
//          first and answers 401;
//   node2  reconciles slowly (--delay-scale 20) against kumaguard's short deadline: its call
//          times out;
//   node3  has API_RATE_LIMIT 1, already spent: kumaguard's call gets 429;
//   node4  registers itself with a host without a port (a real node's default
//          UPTIME_KUMA_NODE_HOST);
//   node2 dies while node1 is down: 2 of 3 nodes fail, the panic guard holds, and the banner's
//          button (confirmation, then the API token) allows failover, after which the banner
//          says who allowed it and node2's monitors really move to node3.
//
// Also: no console errors or CSP violations besides the token exchange's 401, and screenshots
// (desktop light and dark, phone) in tests/dashboard/artifacts/.
//
// Run: KG_BUILD_DIR=<cmake build dir> node --test tests/dashboard/   (after `npm ci` here).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  ARTIFACTS, DESKTOP, PHONE, awayFromCron, cardIssues, http, killAll, launchBrowser, openDashboard,
  overflowX, screenshot, seedMonitors, simControl, sqlite, startKumaguard, startSim, stop, waitFor,
} from './harness.mjs';

const TOKEN = 'causes-token-' + process.pid;
const KUMA_KEY = 'causes-cluster-key';
const PER_NODE = 10;

let tmp;
let db;
let kg;
const sims = {};
let browser;
let ctx;
let page;
const errors = [];
const answers = [];

async function nodeDoc(id) {
  const r = await http('GET', kg.url + '/api/node-status');
  return r.json.nodes.find((n) => n.node_id === id);
}

/* Waits for the problem line `code` on a node's card, saying `re` (a line may first say
   something else: a node that is down is told first *when it answers again*). */
async function issue(id, code, what, re = /./, timeoutMs = 20000) {
  return waitFor(what, async () => {
    const list = await cardIssues(page, id);
    return list && list.find((i) => i.code === code && re.test(i.text));
  }, timeoutMs, 100);
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kg-dash-causes-'));
  const state = path.join(tmp, 'state');
  fs.mkdirSync(state);
  db = path.join(state, 'cluster.db');
  const log = path.join(tmp, 'kumasim.log');
  sims.node1 = await startSim({ id: 'node1', sqlite: db, log });
  sims.node2 = await startSim({ id: 'node2', sqlite: db, log, args: ['--delay-scale', '20'] });
  sims.node3 = await startSim({ id: 'node3', sqlite: db, log });
  sims.node4 = await startSim({ id: 'node4', sqlite: db, log, nodeHost: null }); // registers '127.0.0.1'
  kg = await startKumaguard({
    dir: tmp,
    args: ['--state-dir', state, '--api-token', TOKEN, '--kuma-api-key', KUMA_KEY,
      '--health-interval', '300ms', '--health-fast-interval', '150ms', '--health-timeout', '1000ms',
      '--fall', '2', '--rise', '2', '--refresh-interval', '500ms', '--recovery-hold-down', '120s',
      // a deadline far under what node2 needs (it sleeps 2-6 s per monitor it starts)
      '--kuma-reconcile-base', '300ms', '--kuma-reconcile-start-cost', '50ms', '--kuma-reconcile-stop-cost', '50ms',
      '--log-level', 'debug'],
  });
  await waitFor('the monitor table', () => sqlite(db, "SELECT name FROM sqlite_master WHERE name='monitor'") === 'monitor', 10000);
  seedMonitors(db, 3 * PER_NODE, ['node1', 'node2', 'node3']);
  assert.equal((await http('POST', kg.url + '/api/update-loads', { token: TOKEN })).status, 200);
  await waitFor('node1-3 online and proven with their monitors, node4 found', async () => {
    const r = await http('GET', kg.url + '/api/node-status');
    const by = Object.fromEntries(r.json.nodes.map((n) => [n.node_id, n]));
    return ['node1', 'node2', 'node3'].every((id) => by[id] && by[id].state === 'online' && by[id].proven &&
      by[id].monitors_effective === PER_NODE) && by.node4;
  }, 20000);

  browser = await launchBrowser();
  ({ ctx, page } = await openDashboard(browser, kg.url, { label: 'causes', errors, answers }));
  await page.waitForFunction(() => document.querySelectorAll('article.card').length === 4);
}, { timeout: 90000 });

after(async () => {
  try { if (browser) await browser.close(); } catch { /* killed below anyway */ }
  if (kg) await stop(kg.proc);
  killAll('SIGKILL');
  if (kg) {
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    try { fs.copyFileSync(kg.logPath, path.join(ARTIFACTS, 'kumaguard-causes.log')); } catch { /* no log */ }
  }
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
}, { timeout: 30000 });

test('a node whose host has no port says so on its card, with the fix', { timeout: 20000 }, async () => {
  const n4 = await nodeDoc('node4');
  assert.equal(n4.host, '127.0.0.1', 'kumasim registered the default host, as a real node does');
  assert.equal(n4.host_valid, false);
  const i = await issue('node4', 'host', 'the host problem on node4');
  assert.match(i.text, /host '127\.0\.0\.1' has no port: set UPTIME_KUMA_NODE_HOST=host:port on the node/);
  assert.match(i.tone, /issue-bad/);
  // nothing else is said about a node kumaguard never talks to
  assert.equal((await cardIssues(page, 'node4')).length, 1);
});

test('a failover\'s calls: 429 on a node whose rate limit is spent, a timeout on a slow node', { timeout: 60000 }, async () => {
  // node3 allows one /api/v1 request per window from this address (kumaguard's too); spend it
  await simControl(sims.node3.port, 'rate-limit?limit=1&window_ms=900000');
  const spent = await fetch(`http://127.0.0.1:${sims.node3.port}/api/v1/reconcile-monitors`,
    { method: 'POST', headers: { Authorization: KUMA_KEY }, signal: AbortSignal.timeout(10000) });
  assert.equal(spent.status, 200, 'the one allowed call');

  await awayFromCron();
  await simControl(sims.node1.port, 'mode', '503');
  await page.waitForFunction(() => document.querySelector('article.card[data-node="node1"]')?.dataset.state === 'offline', null, { timeout: 15000 });

  const r429 = await issue('node3', 'r429', 'the 429 on node3\'s card');
  assert.match(r429.text, /429: the node's API_RATE_LIMIT is spent — raise API_RATE_LIMIT on the nodes/);
  assert.match(r429.tone, /issue-bad/);
  const d3 = await nodeDoc('node3');
  assert.equal(d3.reconcile.last_result, 'rate_limited');
  assert.equal(d3.reconcile.last_http_status, 429);
  assert.match(await page.textContent('article.card[data-node="node3"] dd[data-f="reconcile"]'), /last 429 .*1 call, 1 failed \(429 ×1\)/);

  const timeout = await issue('node2', 'rtimeout', 'the timeout on node2\'s card');
  assert.match(timeout.text, /^.?timed out: /);
  assert.equal((await nodeDoc('node2')).reconcile.last_result, 'timeout');
  await page.locator('article.card[data-node="node3"]').screenshot({ path: path.join(ARTIFACTS, 'card-429.png') });
  await page.locator('article.card[data-node="node2"]').screenshot({ path: path.join(ARTIFACTS, 'card-timeout.png') });
});

test('panic guard: 2 of 3 nodes fail; nothing moves until the banner\'s button allows failover', { timeout: 60000 }, async () => {
  const before = await nodeDoc('node2');
  const held = before.monitors_effective;
  assert.ok(held >= PER_NODE, `node2 carries its monitors and some of node1's (${held})`);
  sims.node2.proc.kill('SIGKILL');

  const banner = page.locator('.banner[data-banner="panic"]');
  await banner.waitFor({ state: 'visible', timeout: 15000 });
  assert.equal(await banner.getAttribute('role'), 'alert');
  const text = await banner.textContent();
  assert.match(text, /Panic guard engaged — nothing moves/);
  assert.match(text, /Since \d\d:\d\d:\d\d \(/, 'since when');
  assert.match(text, /2 of 3 nodes fail their probes/);
  assert.match(text, /Nothing moves and nginx keeps its upstream/);

  // held: node2's monitors stay where they are (the guard's promise), also after a while
  await page.waitForTimeout(1500);
  assert.equal((await nodeDoc('node2')).monitors_effective, held, 'nothing moved under the guard');

  // the top of the page as an operator sees it now (docs/dashboard.png is taken from this)
  await page.evaluate(() => window.scrollTo(0, 0));
  const bottom = await page.evaluate(() => document.getElementById('cards').getBoundingClientRect().bottom + window.scrollY + 16);
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-panic.png'), fullPage: true, clip: { x: 0, y: 0, width: 1280, height: bottom } });

  // the button: a confirmation first (Cancel does nothing), then the token
  const button = page.getByRole('button', { name: 'Allow failover for this outage…' });
  await button.click();
  await page.locator('#confirm-dialog').waitFor({ state: 'visible' });
  assert.match(await page.textContent('#confirm-body'), /2 of 3 nodes fail their probes/);
  assert.equal(await page.evaluate(() => document.activeElement.id), 'confirm-cancel', 'the safe choice has the focus');
  await page.keyboard.press('Enter');
  await page.locator('#confirm-dialog').waitFor({ state: 'hidden' });
  assert.equal((await http('GET', kg.url + '/api/fault-detection-status')).json.panic_guard.override, false, 'cancel changed nothing');

  await awayFromCron(); // the moves it allows are not paced around the nodes' :00 cron
  await button.click();
  await page.click('#confirm-ok');
  const sent = page.waitForRequest((r) => r.url().endsWith('/api/panic-override') && /Bearer /.test(r.headers().authorization || ''));
  await page.locator('#token-dialog').waitFor({ state: 'visible' });
  await page.fill('#token-input', TOKEN);
  await page.keyboard.press('Enter');
  const req = await sent;
  assert.deepEqual(JSON.parse(req.postData()), { confirm: 'move-monitors-during-outage' });
  assert.ok(answers.some((a) => a.status === 401 && a.url.endsWith('/api/panic-override')), 'asked for the token after a 401');

  await page.waitForFunction(() => /failover allowed by 127\.0\.0\.1/.test(document.querySelector('.banner[data-banner="panic"]')?.textContent || ''));
  assert.equal(await page.locator('#act-panic-override').count(), 0, 'the button is gone once used');
  const pg = (await http('GET', kg.url + '/api/fault-detection-status')).json.panic_guard;
  assert.equal(pg.engaged, true);
  assert.equal(pg.override, true);
  assert.equal(pg.override_by, '127.0.0.1');
  // and it is real: the failing nodes' monitors move to node3, the one node that answers
  await page.waitForFunction((n) => document.querySelector('article.card[data-node="node3"] .cap-num')?.textContent.startsWith(n + ' /'),
    String(3 * PER_NODE), { timeout: 20000 });
  await screenshot(page, 'dashboard-panic-allowed.png');
});

test('a node that comes back is told first; with no active user it answers 401', { timeout: 60000 }, async () => {
  sqlite(db, 'UPDATE user SET active = 0 WHERE id = 1'); // as before the first user is set up
  await awayFromCron();
  await simControl(sims.node1.port, 'mode', 'healthy');
  const told = await issue('node1', 'tell', 'node1 told first', /told first: /);
  assert.match(told.text, /told first: not routed until it drops what moved away/);
  const r401 = await issue('node1', 'r401', 'the 401 on node1\'s card');
  assert.match(r401.text, /401: no first user yet, or KUMA_API_KEY starts with 'Bearer '/);
  assert.equal(await page.evaluate(() => document.querySelector('article.card[data-node="node1"]').dataset.state), 'recovering',
    'not routed while it may still run what moved away');
  const d1 = await nodeDoc('node1');
  assert.equal(d1.reconcile.must_tell, true);
  assert.equal(d1.reconcile.last_result, 'unauthorized');
  // one node failing of three: the guard let go
  await page.locator('.banner[data-banner="panic"]').waitFor({ state: 'detached', timeout: 15000 });
  sqlite(db, 'UPDATE user SET active = 1 WHERE id = 1');
  await page.locator('article.card[data-node="node1"]').screenshot({ path: path.join(ARTIFACTS, 'card-told-first-401.png') });
});

test('screenshots light, dark and phone; keyboard; no console errors', { timeout: 60000 }, async () => {
  await page.waitForFunction(() => document.querySelectorAll('.toast').length === 0, null, { timeout: 15000 });
  await screenshot(page, 'dashboard-causes.png');
  for (const [name, opts] of [['dashboard-causes-dark.png', { ...DESKTOP, colorScheme: 'dark' }],
    ['dashboard-causes-phone.png', { ...PHONE, colorScheme: 'light' }]]) {
    const v = await openDashboard(browser, kg.url, { opts, label: name, errors });
    await v.page.waitForFunction(() => document.querySelectorAll('article.card .issues li').length >= 3);
    if (opts.isMobile) assert.ok(await overflowX(v.page) <= 0, 'no sideways scrolling on a phone');
    await screenshot(v.page, name);
    if (!opts.isMobile) {
      // keyboard: the skip link, then the first node card's first action (the problem lines
      // in between take no focus)
      await v.page.keyboard.press('Tab');
      assert.equal(await v.page.evaluate(() => document.activeElement.className), 'skip-link');
      await v.page.keyboard.press('Enter');
      await v.page.keyboard.press('Tab');
      assert.equal(await v.page.evaluate(() => document.activeElement.getAttribute('aria-label')), 'Drain node1');
    }
    await v.ctx.close();
  }

  // Chromium logs the token exchange's 401 as a failed load; nothing else is allowed
  const unexpected = errors.filter((e) => !(/status of 401/.test(e.text) && /\/api\/panic-override$/.test(e.url)));
  assert.deepEqual(unexpected, [], 'console errors: ' + JSON.stringify(unexpected, null, 1));
  await ctx.close();
});
