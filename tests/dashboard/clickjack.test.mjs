// Clickjacking, in a real browser (issue 13, row 1): a decoy page on another origin frames the
// dashboard of a no-token install.  Before the fix the frame showed the dashboard and two clicks
// in it drained a node; now the browser refuses to render kumaguard inside the frame
// (Content-Security-Policy frame-ancestors 'none', X-Frame-Options: DENY).
//
// Also checked, because the CSP is strict (default-src 'self'): the dashboard opened directly
// still works — its scripts and styles are same-origin files — and the browser reports no CSP
// violation on it.
//
// Run: KG_BUILD_DIR=<cmake build dir> node --test tests/dashboard/   (after `npm ci` here).
// Every wait is bounded; every process and server started here is stopped at the end.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { killAll, launchBrowser, sleep, startKumaguard, stop, waitFor } from './harness.mjs';

let tmp;
let kg;
let kgUrl;
let decoy;
let decoyUrl;
let browser;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kg-clickjack-'));
  // A no-token install: actions are accepted from loopback, which is exactly what makes a
  // framed dashboard dangerous.
  kg = await startKumaguard({ dir: tmp, args: ['--state-dir', path.join(tmp, 'state')] });
  kgUrl = kg.url;

  // The attacker's page, on another origin (another host name and port).
  decoy = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(`<!DOCTYPE html><title>Win a prize</title>
<p>Click the two buttons to claim your prize!</p>
<iframe id="victim" src="${kgUrl.replace('127.0.0.1', 'localhost')}/" width="1200" height="800"
  style="opacity:0.01;position:absolute;top:0;left:0"></iframe>`);
  });
  await new Promise((r) => decoy.listen(0, '127.0.0.1', r));
  decoyUrl = `http://127.0.0.1:${decoy.address().port}/`;

  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
  if (decoy) await new Promise((r) => decoy.close(r));
  if (kg) await stop(kg.proc, 10000);
  killAll('SIGKILL');
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

test('a page on another origin cannot frame the dashboard', async () => {
  const page = await browser.newPage();
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(m.text()));
  let kgAnswered = null;
  page.on('response', (r) => { if (r.url().startsWith(kgUrl.replace('127.0.0.1', 'localhost'))) kgAnswered = r; });
  await page.goto(decoyUrl, { waitUntil: 'load', timeout: 20000 });
  // kumaguard did answer the frame's request: what follows is the browser refusing to show it
  await waitFor('kumaguard to answer the framed request', () => kgAnswered, 10000);
  assert.equal(kgAnswered.status(), 200);
  await sleep(1000); // give a dashboard time to run its scripts, had it been rendered
  const frame = page.frames().find((f) => f !== page.mainFrame());
  assert.ok(frame, 'the iframe exists');
  // a blocked frame is an error page: no dashboard document, none of its elements
  const framed = await frame.evaluate(() => ({
    title: document.title,
    hasDashboard: !!document.getElementById('cluster-status'),
    scripts: document.scripts.length,
  })).catch((e) => ({ blocked: String(e) }));
  assert.ok(framed.blocked || !framed.hasDashboard,
    `the dashboard rendered inside another site's frame: ${JSON.stringify(framed)}`);
  assert.ok(!frame.url().startsWith(kgUrl.replace('127.0.0.1', 'localhost')) || framed.blocked ||
    framed.scripts === 0, `frame url ${frame.url()}, content ${JSON.stringify(framed)}`);
  assert.ok(consoleLines.some((l) => /frame-ancestors|X-Frame-Options|Refused to display/i.test(l)),
    'the browser says why it refused: ' + JSON.stringify(consoleLines));
  await page.close();
});

test('the dashboard opened directly works under its strict CSP', async () => {
  const page = await browser.newPage();
  const violations = [];
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push('uncaught: ' + e));
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      (window.__cspViolations = window.__cspViolations || []).push(
        `${e.violatedDirective} blocked ${e.blockedURI} (${e.sourceFile}:${e.lineNumber})`);
    });
  });
  const r = await page.goto(kgUrl + '/', { waitUntil: 'load', timeout: 20000 });
  assert.match(r.headers()['content-security-policy'], /frame-ancestors 'none'/);
  assert.equal(r.headers()['x-frame-options'], 'DENY');
  // the page's own script ran and filled the cluster status from the API
  await waitFor('the dashboard to render the cluster status', () => page.evaluate(() => {
    const el = document.getElementById('cluster-status');
    return el && /Cluster/.test(el.textContent) && el.textContent;
  }), 15000);
  // styles applied (same-origin stylesheet): the body is not the browser's default font
  const styled = await page.evaluate(() => getComputedStyle(document.body).fontFamily);
  assert.ok(!/^"?Times/i.test(styled), 'the stylesheet did not apply: ' + styled);
  violations.push(...(await page.evaluate(() => window.__cspViolations || [])));
  assert.deepEqual(violations, [], 'CSP violations on the dashboard');
  assert.deepEqual(errors.filter((t) => /Content Security Policy|Refused/i.test(t)), [],
    'console errors about the CSP');
  await page.close();
});
