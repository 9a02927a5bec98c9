// Outages of what kumaguard stands on, on the dashboard, each produced for real: kumaguard on a
// throwaway MariaDB (scripts/mariadb-test-server.sh) with its state directory on a 2 MB tmpfs,
// and one realistic simulated node on the same database, seen in headless Chromium.
//
//   - a node that registers while kumaguard runs is unproven: "proving" until kumaguard's own
//     probes passed HEALTH_CHECK_RISE (set to 100 here, so the state lasts long enough to see);
//   - the state directory fills up: the local history fails, and a banner says how many events
//     were lost and what to do (skipped, saying so, where a tmpfs cannot be mounted);
//   - MariaDB is paused (SIGSTOP): "Database not answering" with for how long, what goes on,
//     and when the next try is; it answers again and the banner goes;
//   - MariaDB is stopped: "Database down", with the general reason.
//
// Run: KG_BUILD_DIR=<cmake build dir> node --test tests/dashboard/   (after `npm ci` here).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  ARTIFACTS, cardIssues, http, killAll, launchBrowser, openDashboard, screenshot, startKumaguard,
  startMariadb, startSim, stop, stopMariadb, waitFor,
} from './harness.mjs';

const TOKEN = 'outage-token-' + process.pid;
const RISE = 100;

let tmp;
let state;
let tmpfs = null; // why the tmpfs could not be mounted, or null when it is
let maria;
let kg;
let sim;
let browser;
let ctx;
let page;
const errors = [];

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kg-dash-outage-'));
  state = path.join(tmp, 'state');
  fs.mkdirSync(state);
  const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', state], { encoding: 'utf8' });
  tmpfs = m.status === 0 ? null : (m.stderr || m.error?.message || 'mount failed').trim();
  maria = await startMariadb(path.join(tmp, 'mariadb'));
  kg = await startKumaguard({
    dir: tmp,
    args: ['--state-dir', state, '--api-token', TOKEN,
      '--db-host', '127.0.0.1', '--db-port', String(maria.port), '--db-user', 'kuma', '--db-name', 'kuma',
      '--init-schema', '--db-timeout', '1000ms', '--db-retry-max', '2s',
      '--health-interval', '300ms', '--health-fast-interval', '200ms', '--health-timeout', '1000ms',
      '--fall', '2', '--rise', String(RISE), '--refresh-interval', '500ms'],
    env: { DB_PASSWORD: 'kumapw' },
  });
  sim = await startSim({ id: 'node1', mariadb: maria, log: path.join(tmp, 'kumasim.log') });
  browser = await launchBrowser();
  ({ ctx, page } = await openDashboard(browser, kg.url, { label: 'outage', errors }));
}, { timeout: 90000 });

after(async () => {
  try { if (browser) await browser.close(); } catch { /* killed below anyway */ }
  if (maria) {
    try { process.kill(maria.pid(), 'SIGCONT'); } catch { /* not running */ }
  }
  if (kg) await stop(kg.proc);
  killAll('SIGKILL');
  if (maria) stopMariadb(maria.dir);
  if (kg) {
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    try { fs.copyFileSync(kg.logPath, path.join(ARTIFACTS, 'kumaguard-outage.log')); } catch { /* no log */ }
  }
  if (tmp) {
    if (!tmpfs) spawnSync('umount', ['-l', state]);
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}, { timeout: 60000 });

test('a node that just registered is proving: no monitors until its probes pass', { timeout: 30000 }, async () => {
  const line = await waitFor('the proving line on node1', async () => {
    const list = await cardIssues(page, 'node1');
    return list && list.find((i) => i.code === 'proving');
  }, 20000);
  assert.match(line.text, new RegExp(`proving: not given monitors until ${RISE} probes pass \\(\\d+ so far\\)`));
  const n = (await http('GET', kg.url + '/api/node-status')).json.nodes.find((x) => x.node_id === 'node1');
  assert.equal(n.proven, false);
  assert.equal(n.placeable, false);
  assert.equal(await page.evaluate(() => document.querySelector('article.card[data-node="node1"]').dataset.state), 'online',
    'online and routed, but not proven');
});

test('a full state directory: the local history fails, and the page says so', { timeout: 30000 }, async (t) => {
  if (tmpfs) {
    t.skip('cannot mount a tmpfs for the state directory here: ' + tmpfs);
    return;
  }
  const filler = path.join(state, 'filler');
  const fd = fs.openSync(filler, 'w');
  try {
    const block = Buffer.alloc(65536);
    for (;;) fs.writeSync(fd, block);
  } catch { /* ENOSPC: full */ } finally {
    fs.closeSync(fd);
  }
  // every action is a history event: make some
  for (let i = 0; i < 20; i++) await http('POST', kg.url + '/api/trigger-health-check', { token: TOKEN });
  const banner = page.locator('.banner[data-banner="history"]');
  await banner.waitFor({ state: 'visible', timeout: 15000 });
  const text = await banner.textContent();
  assert.match(text, /Local history failing/);
  assert.match(text, /\d+ events? not recorded/);
  assert.match(text, /free space in kumaguard's state directory, or make it writable/);
  const h = (await http('GET', kg.url + '/api/system-status')).json.history;
  assert.equal(h.ok, false);
  assert.ok(h.events_lost > 0);
  await screenshot(page, 'dashboard-history-failing.png');
  fs.rmSync(filler); // room again, for the rest and for a clean shutdown
});

test('the database paused: "not answering", for how long, what goes on; then back', { timeout: 40000 }, async () => {
  process.kill(maria.pid(), 'SIGSTOP');
  let paused = true;
  try {
    const banner = page.locator('.banner[data-banner="database"]');
    await banner.waitFor({ state: 'visible', timeout: 15000 });
    await page.waitForFunction(() => /Database not answering/.test(document.querySelector('.banner[data-banner="database"]')?.textContent || ''), null, { timeout: 10000 });
    assert.equal(await banner.getAttribute('role'), 'alert');
    const text = await banner.textContent();
    assert.match(text, /No answer for \d+ s \(since \d\d:\d\d:\d\d\)/);
    assert.match(text, /Probing and routing continue; monitors do not move until it is back\. Retrying every few seconds/);
    assert.equal((await page.textContent('#tile-db [data-field="value"]')).trim(), 'No answer');
    // the seconds count on without the banner being rebuilt
    const first = await banner.locator('.tick').first().textContent();
    await page.waitForFunction((f) => document.querySelector('.banner[data-banner="database"] .tick')?.textContent !== f, first, { timeout: 5000 });
    // the page itself stays live (kumaguard serves from memory meanwhile)
    assert.equal(await page.textContent('#live-text'), 'Live');
    await screenshot(page, 'dashboard-db-no-answer.png');
  } finally {
    process.kill(maria.pid(), 'SIGCONT');
    paused = false;
  }
  assert.equal(paused, false);
  await page.locator('.banner[data-banner="database"]').waitFor({ state: 'detached', timeout: 25000 });
  assert.equal((await page.textContent('#tile-db [data-field="value"]')).trim(), 'OK');
});

test('the database stopped: "Database down", with the reason in general terms', { timeout: 60000 }, async () => {
  stopMariadb(maria.dir);
  const banner = page.locator('.banner[data-banner="database"]');
  await banner.waitFor({ state: 'visible', timeout: 20000 });
  await page.waitForFunction(() => /Database down/.test(document.querySelector('.banner[data-banner="database"]')?.textContent || ''), null, { timeout: 15000 });
  const text = await banner.textContent();
  assert.match(text, /mariadb: .*(cannot connect to the database server|lost the connection)/);
  assert.match(text, /Probing and routing continue; monitors do not move until it is back/);
  assert.doesNotMatch(text, new RegExp(String(maria.port)), 'no host or port in the public page');
  assert.equal((await page.textContent('#tile-db [data-field="value"]')).trim(), 'Down');
  await screenshot(page, 'dashboard-db-down.png');
  assert.deepEqual(errors, [], 'console errors: ' + JSON.stringify(errors, null, 1));
  await ctx.close();
});
