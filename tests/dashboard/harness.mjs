// harness.mjs — what the dashboard tests share: starting real kumaguard, kumasim and MariaDB
// processes on free loopback ports, bounded waits, plain HTTP, and Debian's headless Chromium
// driven by playwright-core.
//
// Owns: the processes a test file starts (every one is tracked and killed when the file's
// process exits, also on failure) and the browser launch flags that work here.  Must not:
// hard-code a port, wait without a bound, or assert anything (the tests do).

import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, '..', '..');
export const BUILD = process.env.KG_BUILD_DIR || path.join(ROOT, 'build');
export const ARTIFACTS = path.join(HERE, 'artifacts');
export const CHROMIUM = process.env.KG_CHROMIUM || '/usr/bin/chromium';

/* ---------------------------------------------------------------- processes */

const children = new Set(); // every process started here, killed at exit whatever happens

export function killAll(signal = 'SIGKILL') {
  for (const p of children) {
    if (p.exitCode === null && p.signalCode === null) {
      try { p.kill(signal); } catch { /* already gone */ }
    }
  }
}
process.on('exit', () => killAll('SIGKILL'));
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => { killAll('SIGKILL'); process.exit(130); });
}

export function track(proc) {
  children.add(proc);
  proc.on('exit', () => children.delete(proc));
  return proc;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function waitFor(what, fn, timeoutMs, intervalMs = 100) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await sleep(intervalMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export function binary(name) {
  const p = path.join(BUILD, name);
  if (!fs.existsSync(p)) throw new Error(`${p} not found: build it first (KG_BUILD_DIR=${BUILD})`);
  return p;
}

export function tail(file, n = 4000) {
  try {
    return fs.readFileSync(file, 'utf8').slice(-n);
  } catch {
    return '(no log)';
  }
}

/* Stops a process: SIGTERM, then SIGKILL after `graceMs`. */
export async function stop(proc, graceMs = 5000) {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
  proc.kill('SIGTERM');
  await Promise.race([new Promise((r) => proc.once('exit', r)), sleep(graceMs)]);
  if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
}

/* A realistic kumasim (tests/kumasim/README.md) on ephemeral ports, serving one node id
   (`id`) or a fleet (`nodes`, `prefix`).  Its database: `sqlite` (a file, e.g. kumaguard's
   embedded cluster.db) or `mariadb` ({port}).  Resolves {proc, ports: Map id -> port, port}
   once every node said it is listening. */
export function startSim({ id, nodes, prefix = 'n', sqlite, mariadb, nodeHost = 'listen', setupDone = true, args = [], log } = {}) {
  const want = nodes || 1;
  const argv = ['--listen', '127.0.0.1:0'];
  if (nodes) argv.push('--nodes', String(nodes), '--node-prefix', prefix);
  else argv.push('--node-id', id);
  if (sqlite) argv.push('--sqlite-path', sqlite);
  if (mariadb) argv.push('--db-host', '127.0.0.1', '--db-port', String(mariadb.port), '--db-user', 'kuma', '--db-password', 'kumapw', '--db-name', 'kuma');
  if (nodeHost) argv.push('--node-host', nodeHost);
  if (setupDone) argv.push('--setup-done');
  argv.push(...args);
  return new Promise((resolve, reject) => {
    const proc = track(spawn(binary('kumasim'), argv, { stdio: ['ignore', 'pipe', 'pipe'] }));
    let out = '';
    const ports = new Map();
    const timer = setTimeout(() => reject(new Error(`kumasim ${id || prefix} did not say it was listening (${ports.size}/${want}): ${out.slice(-2000)}`)), 30000);
    let ready = false;
    let partial = ''; // a line can be split between two reads
    proc.stdout.on('data', (d) => {
      if (log) fs.appendFileSync(log, d);
      if (ready) return;
      out = (out + d).slice(-4000);
      const lines = (partial + d).split('\n');
      partial = lines.pop();
      for (const line of lines) {
        const m = line.match(/kumasim (\S+) listening on 127\.0\.0\.1:(\d+)/);
        if (m) ports.set(m[1], Number(m[2]));
      }
      if (ports.size >= want) {
        ready = true;
        clearTimeout(timer);
        resolve({ proc, ports, port: ports.values().next().value });
      }
    });
    proc.stderr.on('data', (d) => { if (!ready) out = (out + d).slice(-4000); if (log) fs.appendFileSync(log, d); });
    proc.on('exit', (code, sig) => { clearTimeout(timer); if (!ready) reject(new Error(`kumasim ${id || prefix} exited (${code ?? sig}): ${out.slice(-2000)}`)); });
  });
}

/* POSTs to a kumasim's /_sim control endpoint. */
export async function simControl(port, what, body) {
  const r = await fetch(`http://127.0.0.1:${port}/_sim/${what}`, { method: 'POST', body: body ?? '', signal: AbortSignal.timeout(5000) });
  if (!r.ok) throw new Error(`/_sim/${what} on ${port}: HTTP ${r.status}`);
  return r.text();
}

export async function http(method, url, { body, token, headers: extra } = {}) {
  const headers = { Accept: 'application/json', ...(extra || {}) };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = 'Bearer ' + token;
  const r = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(5000) });
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  return { status: r.status, json, text };
}

/* kumaguard on a free port with the dashboard of this tree; resolves once /health answers
   200.  `args` are its flags besides --listen and --web-dir. */
export async function startKumaguard({ dir, args = [], env = {} }) {
  const logPath = path.join(dir, 'kumaguard.log');
  // The port is free a moment before kumaguard binds it; on the rare collision, try again.
  for (let attempt = 1; attempt <= 3; attempt++) {
    const port = await freePort();
    const log = fs.openSync(logPath, 'a');
    const proc = track(spawn(binary('kumaguard'), ['--listen', `127.0.0.1:${port}`, '--web-dir', path.join(ROOT, 'web'), ...args],
      { stdio: ['ignore', log, log], env: { ...process.env, ...env } }));
    fs.closeSync(log);
    const url = `http://127.0.0.1:${port}`;
    try {
      await waitFor('kumaguard /health', async () => {
        if (proc.exitCode !== null || proc.signalCode !== null) throw new Error('kumaguard exited: ' + tail(logPath));
        return (await http('GET', url + '/health')).status === 200;
      }, 20000);
      return { proc, url, logPath };
    } catch (e) {
      proc.kill('SIGKILL');
      if (attempt === 3 || !/in use/i.test(tail(logPath))) throw e;
    }
  }
  throw new Error('unreachable');
}

export function sqlite(db, sql) {
  return execFileSync('sqlite3', ['-batch', '-cmd', '.timeout 5000', db, sql], { encoding: 'utf8', timeout: 10000 }).trim();
}

/* Seeds `count` active monitors homed round-robin on `nodes` into an SQLite cluster file. */
export function seedMonitors(db, count, nodes) {
  const cases = nodes.map((n, i) => `WHEN ${i} THEN '${n}'`).join(' ');
  sqlite(db, `WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ${count})
    INSERT INTO monitor(name, active, user_id, node_id)
    SELECT 'dash monitor ' || x, 1, 1, CASE (x % ${nodes.length}) ${cases} END FROM c;`);
}

/* Waits until the wall clock's second is in [lo, hi].  A Kuma node re-reads its monitors at
   :00 of every minute, and kumaguard leaves work near that moment to the node's cron instead
   of calling it (README, "Exactly once"): a test that needs a call starts its move here. */
export async function awayFromCron(lo = 3, hi = 45) {
  for (;;) {
    const s = new Date().getSeconds();
    if (s >= lo && s <= hi) return;
    await sleep(250);
  }
}

/* ---------------------------------------------------------------- MariaDB */

const MARIADB_SCRIPT = path.join(ROOT, 'scripts', 'mariadb-test-server.sh');

/* A throwaway MariaDB (scripts/mariadb-test-server.sh): database kuma, user kuma/kumapw.
   Resolves {dir, port, pid()}. */
export async function startMariadb(dir) {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    try {
      execFileSync('bash', [MARIADB_SCRIPT, 'start', dir, String(port)], { encoding: 'utf8', timeout: 60000, stdio: ['ignore', 'pipe', 'pipe'] });
      return { dir, port, pid: () => Number(fs.readFileSync(path.join(dir, 'pid'), 'utf8').trim()) };
    } catch (e) {
      if (attempt === 3) throw new Error('MariaDB did not start: ' + (e.stderr || e.message));
    }
  }
}

export function stopMariadb(dir) {
  try {
    execFileSync('bash', [MARIADB_SCRIPT, 'stop', dir], { timeout: 40000, stdio: 'ignore' });
  } catch { /* already gone */ }
}

/* ---------------------------------------------------------------- browser */

export function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM, headless: true, timeout: 30000,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
  });
}

export const PHONE = { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true };
export const DESKTOP = { viewport: { width: 1280, height: 900 } };

/* Records console errors, uncaught errors and CSP violations of a page into `sink` (an
   array of {page, text, url}); `answers`, when given, collects HTTP error answers. */
export async function watchPage(p, label, sink, answers) {
  p.on('console', (m) => {
    if (m.type() === 'error') sink.push({ page: label, text: m.text(), url: m.location().url || '' });
  });
  p.on('pageerror', (e) => sink.push({ page: label, text: 'uncaught: ' + (e && e.stack || e), url: '' }));
  if (answers) p.on('response', (r) => { if (r.status() >= 400) answers.push({ page: label, status: r.status(), url: r.url() }); });
  await p.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI} (${e.sourceFile}:${e.lineNumber})`);
    });
  });
}

export async function screenshot(p, name, fullPage = true) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, name);
  await p.screenshot({ path: file, fullPage });
  return file;
}

/* Opens the dashboard in a new context; resolves {ctx, page} once the first cluster picture
   is drawn. */
export async function openDashboard(browser, url, { opts = DESKTOP, label = 'page', errors, answers, init } = {}) {
  const ctx = await browser.newContext(opts);
  const page = await ctx.newPage();
  page.setDefaultTimeout(15000);
  if (errors) await watchPage(page, label, errors, answers);
  if (init) await page.addInitScript(init);
  await page.goto(url + '/', { waitUntil: 'domcontentloaded' });
  await page.waitForFunction(() => /Cluster/.test(document.getElementById('cluster-status')?.textContent || ''));
  return { ctx, page };
}

/* The text of one node's card and its problem lines ({code, text}). */
export async function cardIssues(page, id) {
  return page.evaluate((nid) => {
    const c = document.querySelector(`article.card[data-node="${nid}"]`);
    if (!c) return null;
    return [...c.querySelectorAll('.issues li')].map((li) => ({ code: li.dataset.code, tone: li.className, text: li.textContent }));
  }, id);
}

/* Nothing wider than the viewport: no sideways scrolling of the page. */
export async function overflowX(page) {
  return page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
}
