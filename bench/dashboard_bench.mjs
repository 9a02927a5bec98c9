#!/usr/bin/env node
// dashboard_bench.mjs — does the dashboard stay usable with 1,000 nodes (issue 15)?
//
// One kumaguard (SQLite store) finds N realistic simulated nodes (one kumasim process,
// --nodes N) in its node table; headless Chromium opens its dashboard twice over, alternating:
// the page files of this tree, and those of a baseline git revision (default 532cd09, the
// dashboard before its compact view), both served to the browser the same way (Playwright
// fulfils the page's own three files from disk; every API request goes to the same kumaguard).
// Per variant, the median over the runs of:
//   - first render: navigation start until every node is on the page (a card or a row);
//   - main thread busy: share of wall time the renderer's main thread worked, over a window
//     of steady live updates (CDP Performance.TaskDuration), and the script part of it;
//   - busy time per status update: that work divided by the /api/system-status reads in it;
//   - DOM nodes and charts (canvases) on the page.
// Printed as this tree ÷ baseline, measured in the same run.
//
//   KG_BUILD_DIR=$PWD/build node bench/dashboard_bench.mjs [--nodes 1000] [--runs 3]
//       [--window 10] [--baseline REV]
// Needs `npm ci` in tests/dashboard (playwright-core) and Debian's chromium.  Loopback only;
// starts and stops its own processes; bounded in time.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  DESKTOP, ROOT, http, killAll, launchBrowser, sqlite, startKumaguard, startSim, stop, waitFor,
} from '../tests/dashboard/harness.mjs';

const opt = { nodes: 1000, runs: 3, window: 10, baseline: '532cd09' };
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i].replace(/^--/, '');
  if (!(k in opt) || process.argv[i + 1] === undefined) {
    console.error('usage: dashboard_bench.mjs [--nodes N] [--runs R] [--window S] [--baseline REV]');
    process.exit(2);
  }
  opt[k] = k === 'baseline' ? process.argv[i + 1] : Number(process.argv[i + 1]);
}

const FILES = { '/': 'templates/dashboard.html', '/static/app.js': 'static/app.js', '/static/style.css': 'static/style.css' };
const TYPES = { html: 'text/html; charset=utf-8', js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8' };

function variantFiles(rev) {
  const out = {};
  for (const [url, rel] of Object.entries(FILES)) {
    out[url] = rev
      ? execFileSync('git', ['-C', ROOT, 'show', `${rev}:web/${rel}`], { maxBuffer: 1 << 24 })
      : fs.readFileSync(path.join(ROOT, 'web', rel));
  }
  return out;
}

function median(xs) {
  const s = xs.slice().sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

async function measure(browser, url, files) {
  const ctx = await browser.newContext(DESKTOP);
  const page = await ctx.newPage();
  await page.route((u) => Object.prototype.hasOwnProperty.call(files, u.pathname), (route) => {
    const p = new URL(route.request().url()).pathname;
    route.fulfill({ status: 200, body: files[p], headers: { 'Content-Type': TYPES[p === '/' ? 'html' : p.split('.').pop()], 'Cache-Control': 'no-store' } });
  });
  let reads = 0;
  page.on('response', (r) => { if (r.url().endsWith('/api/system-status') && r.status() === 200) reads++; });
  await page.goto(url + '/', { waitUntil: 'domcontentloaded' });
  const handle = await page.waitForFunction((n) => {
    const shown = document.querySelectorAll('article.card[data-node], #node-list > li.nrow').length;
    return shown >= n ? performance.now() : false;
  }, opt.nodes, { timeout: 120000, polling: 50 });
  const first = await handle.jsonValue();
  await page.waitForTimeout(2000); // let the first charts and reads settle
  const cdp = await ctx.newCDPSession(page);
  await cdp.send('Performance.enable');
  const metrics = async () => Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((m) => [m.name, m.value]));
  const m0 = await metrics();
  const r0 = reads;
  const t0 = Date.now();
  await page.waitForTimeout(opt.window * 1000);
  const m1 = await metrics();
  const wall = (Date.now() - t0) / 1000;
  const updates = reads - r0;
  const task = m1.TaskDuration - m0.TaskDuration;
  const res = {
    first_render_s: first / 1000,
    busy_pct: (100 * task) / wall,
    script_pct: (100 * (m1.ScriptDuration - m0.ScriptDuration)) / wall,
    busy_per_update_ms: updates ? (1000 * task) / updates : NaN,
    updates_per_10s: (10 * updates) / wall,
    dom_nodes: m1.Nodes,
    charts: await page.evaluate(() => document.querySelectorAll('canvas').length),
  };
  await ctx.close();
  return res;
}

async function main() {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kg-dash-bench-'));
  const variants = { baseline: variantFiles(opt.baseline), tree: variantFiles(null) };
  let kg;
  let browser;
  try {
    const state = path.join(tmp, 'state');
    fs.mkdirSync(state);
    const db = path.join(state, 'cluster.db');
    await startSim({ nodes: opt.nodes, prefix: 'n', sqlite: db, args: ['--no-cron', '--delay-scale', '0.01'] });
    kg = await startKumaguard({
      dir: tmp,
      args: ['--state-dir', state, '--health-interval', '2s', '--health-fast-interval', '500ms', '--health-timeout', '1500ms',
        '--fall', '2', '--rise', '2', '--refresh-interval', '1s'],
    });
    sqlite(db, `WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ${opt.nodes * 5})
      INSERT INTO monitor(name, active, user_id, node_id) SELECT 'm' || x, 1, 1, 'n' || ((x % ${opt.nodes}) + 1) FROM c;`);
    await http('POST', kg.url + '/api/update-loads');
    await waitFor(`${opt.nodes} nodes online`, async () => {
      const r = await http('GET', kg.url + '/api/health-status');
      return r.json.nodes_total === opt.nodes && r.json.nodes_online >= opt.nodes - 5;
    }, 90000, 500);
    const size = (await http('GET', kg.url + '/api/system-status')).text.length;
    browser = await launchBrowser();
    const results = { baseline: [], tree: [] };
    for (let run = 0; run < opt.runs; run++) {
      for (const v of run % 2 ? ['tree', 'baseline'] : ['baseline', 'tree']) {
        const r = await measure(browser, kg.url, variants[v]);
        results[v].push(r);
        console.log(`run ${run + 1} ${v.padEnd(8)} ${JSON.stringify(r, (k, x) => (typeof x === 'number' ? Math.round(x * 100) / 100 : x))}`);
      }
    }
    const rows = [
      ['first render (s)', 'first_render_s'],
      ['main thread busy (% of wall time)', 'busy_pct'],
      ['  of which script (%)', 'script_pct'],
      ['busy time per status update (ms)', 'busy_per_update_ms'],
      ['status updates per 10 s', 'updates_per_10s'],
      ['DOM nodes', 'dom_nodes'],
      ['charts drawn', 'charts'],
    ];
    console.log(`\ndashboard_bench: ${opt.nodes} nodes, /api/system-status ${(size / 1e6).toFixed(2)} MB, ` +
      `median of ${opt.runs} runs each, window ${opt.window} s`);
    console.log(`${'measure'.padEnd(36)}${('baseline ' + opt.baseline).padStart(18)}${'this tree'.padStart(12)}${'ratio'.padStart(9)}`);
    for (const [label, key] of rows) {
      const b = median(results.baseline.map((r) => r[key]));
      const t = median(results.tree.map((r) => r[key]));
      const fmt = (x) => (Number.isFinite(x) ? (Math.abs(x) >= 100 ? x.toFixed(0) : x.toFixed(2)) : '—');
      console.log(`${label.padEnd(36)}${fmt(b).padStart(18)}${fmt(t).padStart(12)}${(b ? fmt(t / b) : '—').padStart(9)}`);
    }
  } finally {
    try { if (browser) await browser.close(); } catch { /* killed below */ }
    if (kg) await stop(kg.proc);
    killAll('SIGKILL');
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e) => { console.error(e); killAll('SIGKILL'); process.exit(1); });
