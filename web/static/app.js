/* kumaguard dashboard (app.js).
 *
 * Owns: everything the page shows and does.  It reads GET /api/system-status (one document with
 * the cluster summary, every node, nginx, rebalancing and recent events) and GET
 * /api/failover-history (paged, filtered) and /api/monitors (paged, filtered: where each
 * monitor runs and why), listens to the /api/events stream (SSE: one frame per history event,
 * plus an `event: snapshot` notice whenever the controller publishes a new picture) and
 * refreshes the status document when told to, and POSTs the actions (also a monitor's move,
 * pin and unpin, and the panic guard's override).
 *
 * What it says: per node, the problems and pending work in words with their fix (the last
 * reconcile call's cause, why work waits, told first, a host without a port, not proven yet);
 * banners for the panic guard, the database, the local history and the page's own
 * connection.  Up to COMPACT_ABOVE nodes it draws a card per node; above, a compact list
 * (filter, state chips, problems first) whose rows are updated in place and open into a card,
 * so 1,000 nodes cost one row each and a chart only where a user asked for one.  Each render
 * is a User Timing measure ("kg-render"), which the dashboard tests and bench read.
 *
 * Must not: load anything from another host, use inline script/style or innerHTML with data
 * from the server (node names and failure reasons come from the cluster database), or poll
 * fast while the stream works.  The API token, when the server wants one, is asked for once
 * and kept in sessionStorage (this tab only). */
(function () {
  'use strict';

  const TOKEN_KEY = 'kumaguard.apiToken';
  const HISTORY_PAGE = 50;
  const HISTORY_MAX_ROWS = 500;       /* a tab left open for weeks keeps only the newest rows */
  const MIN_REFRESH_GAP_MS = 700;     /* snapshots can arrive several times a second */
  const LARGE_REFRESH_GAP_MS = 2000;  /* the least gap above COMPACT_ABOVE nodes */
  const MAX_REFRESH_GAP_MS = 10000;
  const REFRESH_COST_FACTOR = 10;     /* parse + render at most ~10 % of the page's time */
  const COMPACT_ABOVE = 24;           /* more nodes than this: the compact node list */
  const POLL_WHEN_DOWN_MS = 5000;     /* while the stream is down */
  const SAFETY_POLL_MS = 15000;       /* even with a live stream: notices can be missed, and a
                                       * frozen controller keeps its stream open but silent */
  const FETCH_TIMEOUT_MS = 8000;
  const STREAM_RETRY_MS = 3000;

  const STATES = {
    online: { label: 'Online', icon: '●', note: 'Healthy: routed and running its monitors' },
    suspect: { label: 'Suspect', icon: '▲', note: 'Failing probes, below the fall threshold; still routed' },
    offline: { label: 'Offline', icon: '✕', note: 'Failed its probes: not routed, monitors moved away' },
    recovering: { label: 'Recovering', icon: '↻', note: 'Passing probes again; not routed until stable' },
    draining: { label: 'Draining', icon: '⇥', note: 'Operator drain: monitors moved away, still routed for sticky sessions' },
    maintenance: { label: 'Maintenance', icon: '⏸', note: 'Operator maintenance: not routed and not probed' },
    unknown: { label: 'Unknown', icon: '?', note: 'Not probed yet' },
  };

  const KINDS = {
    failover: 'Failover',
    revert: 'Revert',
    rebalance: 'Rebalance',
    force_rebalance: 'Force rebalance',
    adoption: 'Adoption',
    state_change: 'State change',
    operator: 'Operator action',
    panic: 'Panic guard',
    capacity_warning: 'Capacity warning',
    nginx_reload: 'nginx reload',
    nginx_failed: 'nginx reload failed',
    leader: 'Leader',
    database: 'Database',
    monitor: 'Monitor moved or pinned',
    setup: 'First-run setup',
    reconcile_failed: 'Reconcile refused',
  };
  const MOVE_KINDS = new Set(['failover', 'revert', 'rebalance', 'force_rebalance', 'adoption', 'monitor']);
  const MONITOR_PAGE = 25;

  /* ------------------------------------------------------------------ small helpers */

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = v;
        else if (k === 'dataset') Object.assign(e.dataset, v);
        else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, v === true ? '' : v);
      }
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function setText(node, text) {
    const t = text === null || text === undefined ? '' : String(text);
    if (node.textContent !== t) node.textContent = t;
  }

  function parseTime(iso) {
    if (!iso) return null;
    const t = Date.parse(iso);
    return Number.isFinite(t) ? t : null;
  }

  function fmtAgo(ms) {
    if (ms === null) return 'never';
    let s = Math.round((Date.now() - ms) / 1000);
    if (s < 0) s = 0;
    if (s < 5) return 'just now';
    if (s < 60) return s + ' s ago';
    const m = Math.floor(s / 60);
    if (m < 60) return m + ' min ago';
    const h = Math.floor(m / 60);
    if (h < 48) return h + ' h ' + (m % 60) + ' min ago';
    return Math.floor(h / 24) + ' days ago';
  }

  function fmtClock(ms) {
    if (ms === null) return '—';
    const d = new Date(ms);
    const now = new Date();
    const time = d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
    if (d.toDateString() === now.toDateString()) return time;
    return d.toLocaleDateString(undefined, { month: 'short', day: 'numeric' }) + ' ' + time;
  }

  function fmtLatency(v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return '—';
    if (v < 1) return v.toFixed(2) + ' ms';
    if (v < 10) return v.toFixed(1) + ' ms';
    return Math.round(v) + ' ms';
  }

  function fmtDuration(ms) {
    if (!ms || ms <= 0) return '';
    if (ms < 1000) return ms + ' ms';
    const s = ms / 1000;
    if (s < 60) return (s < 10 ? s.toFixed(1) : Math.round(s)) + ' s';
    const m = Math.floor(s / 60);
    return m + ' min ' + Math.round(s % 60) + ' s';
  }

  /* one formatter: Number#toLocaleString builds a new one per call, which at 1,000 nodes was
   * the dashboard's most expensive function */
  const INT_FORMAT = new Intl.NumberFormat();
  function fmtInt(n) {
    return Number.isFinite(n) ? INT_FORMAT.format(n) : '—';
  }

  function stateInfo(st) {
    return STATES[st] || { label: st || 'Unknown', icon: '?', note: '' };
  }

  /* A span of time in words: "42 s", "3 min 5 s", "2 h 10 min". */
  function fmtSpan(ms) {
    let s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + ' s';
    const m = Math.floor(s / 60);
    s %= 60;
    if (m < 60) return m + ' min' + (s ? ' ' + s + ' s' : '');
    const h = Math.floor(m / 60);
    if (h < 48) return h + ' h' + (m % 60 ? ' ' + (m % 60) + ' min' : '');
    return Math.floor(h / 24) + ' days';
  }

  /* Spans whose text follows the clock, refreshed by tickClock() once a second:
   * data-ago = "N ago", data-for = how long since (a duration), data-in = "in N" until. */
  const TICKS = {
    ago: (t) => fmtAgo(t),
    for: (t) => fmtSpan(Date.now() - t),
    in: (t) => (t - Date.now() < 1000 ? 'now' : 'in ' + fmtSpan(t - Date.now())),
  };

  function tickSpan(kind, t, cls, title) {
    const s = el('span', { class: cls, title: title || null });
    if (t !== null && t !== undefined) {
      s.dataset[kind] = String(t);
      s.textContent = TICKS[kind](t);
    } else {
      s.textContent = kind === 'ago' ? 'never' : '—';
    }
    return s;
  }

  /* An element whose text is "N ago" and is refreshed by the clock tick. */
  function agoSpan(iso, cls) {
    return tickSpan('ago', parseTime(iso), cls, iso || '');
  }

  /* Only where clock spans live (banners, tiles, cards): a query over the whole page costs
   * milliseconds each second once a compact list of 1,000 nodes is on it. */
  function tickClock() {
    const roots = [$('banners'), $('summary')];
    for (const r of S.cards.values()) roots.push(r.root);
    for (const root of roots) tickWithin(root);
  }

  function tickWithin(root) {
    for (const s of root.querySelectorAll('[data-ago],[data-for],[data-in]')) {
      const kind = s.dataset.ago !== undefined ? 'ago' : s.dataset.for !== undefined ? 'for' : 'in';
      setText(s, TICKS[kind](Number(s.dataset[kind])));
    }
  }

  /* Text made of parts: strings, and {ago|for|in: epoch ms} for a span that follows the clock.
   * JSON of the parts is a key that changes only when what is said changes, not each second. */
  function partsNodes(parts) {
    return parts.map((p) => {
      if (typeof p === 'string') return p;
      const kind = Object.keys(p)[0];
      const t = tickSpan(kind, p[kind], 'tick');
      t.setAttribute('aria-live', 'off'); /* inside an alert: the seconds are not announced */
      return t;
    });
  }

  /* ------------------------------------------------------------------ HTTP */

  async function fetchJSON(url, opts) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    try {
      const r = await fetch(url, Object.assign({ cache: 'no-store', signal: ctl.signal }, opts || {}));
      let body = null;
      const text = await r.text();
      const t0 = performance.now();
      if (text) {
        try { body = JSON.parse(text); } catch (_) { body = { detail: text.slice(0, 200) }; }
      }
      return { status: r.status, ok: r.ok, body, parseMs: performance.now() - t0 };
    } finally {
      clearTimeout(timer);
    }
  }

  /* ------------------------------------------------------------------ state */

  const S = {
    status: null,            /* last /api/system-status document */
    statusError: null,       /* message when the last fetch failed */
    statusHttp: false,       /* that failure was an HTTP answer, not a lost connection */
    lastOkAt: null,          /* Date.now() of the last good fetch */
    stream: 'connecting',    /* connecting | live | down */
    streamEverOpen: false,
    history: new Map(),      /* id -> event, for the current filters */
    historyNext: null,       /* next_before of the last page, null = no more */
    historyLoaded: false,
    freshIds: new Set(),     /* rows that arrived live, highlighted once */
    cards: new Map(),        /* node_id -> card record (every node, or the expanded ones) */
    banners: new Map(),      /* banner id -> banner record */
    mon: { cursors: [0], next: null, gen: 0, loaded: false }, /* the monitors view's paging */
    /* the node view: cards up to COMPACT_ABOVE nodes, a compact list above */
    nv: { compact: null, q: '', chip: 'all', sort: 'problems', expanded: new Set(), rows: new Map(),
      order: '', chipKey: '' },
    cost: 0,                 /* script ms of the last refresh (parse + render) */
    firstRenderDone: false,
  };

  /* ------------------------------------------------------------------ status refresh */

  let refreshTimer = null;
  let refreshInFlight = false;
  let refreshAgain = false;
  let lastRefreshAt = 0;

  /* The status document grows with the cluster (about 1.2 kB a node): with many nodes, and
   * when parsing and drawing it gets expensive, the page re-reads it less often, so an open
   * dashboard stays a light load on the browser and on kumaguard. */
  function refreshGap() {
    const n = S.status ? S.status.nodes.length : 0;
    return Math.min(MAX_REFRESH_GAP_MS, Math.max(MIN_REFRESH_GAP_MS,
      n > COMPACT_ABOVE ? LARGE_REFRESH_GAP_MS : 0, REFRESH_COST_FACTOR * S.cost));
  }

  function scheduleRefresh(soon) {
    if (refreshInFlight) { refreshAgain = true; return; }
    if (refreshTimer) return;
    if (document.hidden && !soon) return; /* a background tab catches up when shown */
    const wait = soon ? 0 : Math.max(0, lastRefreshAt + refreshGap() - Date.now());
    refreshTimer = setTimeout(() => { refreshTimer = null; refreshStatus(); }, wait);
  }

  async function refreshStatus() {
    refreshInFlight = true;
    lastRefreshAt = Date.now();
    let parseMs = 0;
    try {
      const r = await fetchJSON('api/system-status', { headers: { Accept: 'application/json' } });
      parseMs = r.parseMs || 0;
      if (!r.ok || !r.body || !Array.isArray(r.body.nodes)) {
        const err = new Error((r.body && (r.body.detail || r.body.error)) || ('HTTP ' + r.status));
        err.httpStatus = r.status;
        throw err;
      }
      S.status = r.body;
      S.statusError = null;
      S.statusHttp = false;
      S.lastOkAt = Date.now();
      if (!S.historyLoaded) mergeRecentEvents(r.body.recent_events);
    } catch (e) {
      S.statusHttp = !!(e && e.httpStatus);
      S.statusError = e && e.name === 'AbortError' ? 'no answer within ' + FETCH_TIMEOUT_MS / 1000 + ' s'
        : e && e.name === 'TypeError' ? 'cannot connect (' + e.message + ')' : String(e && e.message || e);
    } finally {
      refreshInFlight = false;
      S.cost = parseMs + render();
      if (refreshAgain) { refreshAgain = false; scheduleRefresh(false); }
    }
  }

  /* ------------------------------------------------------------------ rendering */

  /* Returns the script time it took (ms).  Each render is also a User Timing measure
   * ("kg-render"; the first one with nodes also "kg-first-render" from navigation start), so
   * its cost can be read in the browser's performance tools and by the dashboard tests. */
  function render() {
    const t0 = performance.now();
    renderLive();
    renderBanners();
    const s = S.status;
    if (s) {
      renderHeader(s);
      renderSummary(s);
      renderRebalance(s.rebalancing || {});
      renderNodes(s);
      renderNodeFilter(s.nodes);
      renderNodeFilter(s.nodes, 'mon-node');
      tickClock();
    }
    const t1 = performance.now();
    if (performance.measure) {
      const detail = { nodes: s ? s.nodes.length : 0 };
      performance.measure('kg-render', { start: t0, end: t1, detail });
      if (s && s.nodes.length && !S.firstRenderDone) {
        S.firstRenderDone = true;
        performance.measure('kg-first-render', { start: 0, end: t1, detail });
      }
      if (++renderCount % 200 === 0) performance.clearMeasures('kg-render');
    }
    return t1 - t0;
  }
  let renderCount = 0;

  function renderHeader(s) {
    const st = (s.cluster && s.cluster.status) || 'unknown';
    const pill = $('cluster-status');
    const icon = { healthy: '✓', degraded: '▲', critical: '✕' }[st] || '?';
    setText(pill, icon + ' Cluster ' + st);
    pill.className = 'pill pill-' + (['healthy', 'degraded', 'critical'].includes(st) ? st : 'unknown');
    const c = s.controller || {};
    setText($('footer-instance'), c.instance_id ? 'Controller ' + c.instance_id + (c.uptime_seconds ? ', up ' + fmtDuration(c.uptime_seconds * 1000) : '') : '');
    document.title = (st === 'healthy' ? '' : '(' + st + ') ') + 'kumaguard';
  }

  function setTile(id, tone, value, sub) {
    const t = $(id);
    t.className = 'tile tone-' + tone;
    const v = t.querySelector('[data-field="value"]');
    if (value instanceof Node) { v.replaceChildren(value); } else { setText(v, value); }
    const sb = t.querySelector('[data-field="sub"]');
    if (sub instanceof Node) { sb.replaceChildren(sub); } else { setText(sb, sub); }
  }

  function renderSummary(s) {
    const cl = s.cluster || {};
    const by = cl.nodes_by_state || {};
    const total = cl.nodes_total || 0;
    const online = cl.nodes_online || 0;
    const others = Object.keys(STATES).filter((k) => k !== 'online' && by[k] > 0)
      .map((k) => by[k] + ' ' + STATES[k].label.toLowerCase());
    const nodesTone = total === 0 ? 'muted' : (cl.nodes_routable === 0 ? 'bad' : (online >= total - (by.maintenance || 0) ? 'ok' : 'warn'));
    setTile('tile-nodes', nodesTone,
      el('span', null, String(online), el('span', { class: 'of' }, ' / ' + total)),
      others.length ? others.join(' · ') : (total ? 'all nodes online' : 'no nodes registered'));

    const active = cl.monitors_active || 0;
    const stranded = cl.monitors_stranded || 0;
    const unassigned = cl.monitors_unassigned || 0;
    const running = Math.max(0, active - stranded - unassigned);
    setTile('tile-running', running === active ? 'ok' : 'warn', fmtInt(running),
      'of ' + fmtInt(active) + ' active' + (cl.monitors_total > active ? ' (' + fmtInt(cl.monitors_total - active) + ' paused)' : ''));

    const nowhere = stranded + unassigned;
    setTile('tile-nowhere', nowhere > 0 ? 'bad' : 'ok', fmtInt(nowhere),
      nowhere ? stranded + ' on unroutable nodes · ' + unassigned + ' with no node' : 'every active monitor has a live node');

    const c = s.controller || {};
    setTile('tile-leader', c.is_leader ? 'info' : 'muted', c.is_leader ? 'Leader' : 'Standby',
      (c.is_leader ? 'acts on the cluster' : 'another instance acts') + (c.leader_generation ? ' · generation ' + c.leader_generation : ''));

    const db = s.database || {};
    const dbWord = db.ok ? 'OK' : { no_answer: 'No answer', waiting_schema: 'Waiting', connecting: 'Connecting' }[db.state] || 'Down';
    setTile('tile-db', db.ok ? 'ok' : (db.state === 'waiting_schema' || db.state === 'connecting' ? 'warn' : 'bad'), dbWord,
      (db.backend || 'database') + (db.ok ? (db.errors_total ? ' · ' + db.errors_total + ' errors since start' : ' · connected') : (db.error ? ': ' + db.error : '')));

    const lb = s.load_balancer || {};
    if (!lb.enabled) {
      setTile('tile-nginx', 'muted', 'Off', 'no nginx include configured');
    } else if (!lb.last_reload) {
      setTile('tile-nginx', lb.reloads_failed ? 'bad' : 'muted', 'None yet',
        lb.routed_nodes + ' node' + (lb.routed_nodes === 1 ? '' : 's') + ' in the upstream');
    } else {
      const sub = el('span', null);
      sub.append(agoSpan(lb.last_reload));
      if (lb.last_ok) sub.append(' · ' + lb.routed_nodes + ' routed' + (lb.fallback_all ? ' (fallback: all nodes)' : ''));
      else sub.append(' · ' + (lb.last_error || 'failed'));
      setTile('tile-nginx', lb.last_ok ? 'ok' : 'bad', lb.last_ok ? 'OK' : 'Failed', sub);
    }
  }

  function renderRebalance(r) {
    const box = $('rebalance');
    if (!r.running) { box.hidden = true; return; }
    box.hidden = false;
    const pct = Number.isFinite(r.progress_percent) ? r.progress_percent : 0;
    setText($('rebalance-text'), (r.operation === 'force-rebalance' ? 'Force rebalance' : (r.operation || 'Rebalance')) +
      ' ' + (r.phase || 'running') + ': ' + fmtInt(r.moved) + ' of ' + fmtInt(r.total) + ' moves');
    const bar = $('rebalance-bar');
    bar.setAttribute('aria-valuenow', String(Math.round(pct)));
    bar.querySelector('.bar-fill').style.width = Math.min(100, Math.max(0, pct)) + '%';
  }

  /* ---- banners: each kept by its id and updated in place (a button in it keeps its focus);
   * their text changes only when what they say changes (clock spans tick silently). */

  function currentBanners() {
    const out = [];
    if (S.statusError) {
      out.push({ id: 'status', tone: 'bad', icon: '!', title: S.statusHttp ? 'Cluster status unavailable' : 'kumaguard is not answering',
        parts: [S.statusError + (S.lastOkAt ? ' — showing the picture from ' + fmtClock(S.lastOkAt) + '; it may be out of date.' : '')] });
    }
    if (S.stream === 'down') {
      out.push({ id: 'stream', tone: 'warn', icon: '!', title: 'Live updates interrupted',
        parts: ['The event stream is disconnected; reconnecting automatically. Meanwhile the page re-reads the status every ' + POLL_WHEN_DOWN_MS / 1000 + ' s.'] });
    }
    const s = S.status;
    if (s) {
      const panic = panicBanner(s);
      if (panic) out.push(panic);
      const db = databaseBanner(s.database || {});
      if (db) out.push(db);
      const h = s.history;
      if (h && h.ok === false) {
        out.push({ id: 'history', tone: 'warn', icon: '!', title: 'Local history failing',
          parts: [(h.error || 'the state directory cannot be written') + '. ' + fmtInt(h.events_lost || 0) + ' event' + (h.events_lost === 1 ? '' : 's') +
            ' not recorded. Failover and probing go on, but these events are missing from the history below and /health says degraded: free space in kumaguard\'s state directory, or make it writable.'] });
      }
      if (s.controller && s.controller.is_leader === false) {
        out.push({ id: 'standby', tone: 'info', icon: 'i', title: 'Standby controller',
          parts: ['Another kumaguard instance holds the leader lease; it makes the moves. Actions here that move monitors will be refused.'] });
      }
      const setup = s.setup || {};
      if (setup.gated && setup.setup_complete === false) {
        const p = setup.primary_node;
        out.push({ id: 'setup', tone: 'warn', icon: '!', title: p ? 'Setup pending on ' + p : 'First-run setup pending',
          parts: [(setup.message || 'No Uptime Kuma user exists yet.') + (p ? ' Reconcile calls wait until then.' : '')],
          link: setup.setup_url ? { href: setup.setup_url, text: 'Open ' + p + ' to create the first user' } : null });
      }
      const lb = s.load_balancer || {};
      if (lb.enabled && lb.last_reload && lb.last_ok === false) {
        out.push({ id: 'nginx', tone: 'warn', icon: '!', title: 'nginx reload failed',
          parts: [(lb.last_error || 'the reload command failed') + '. nginx keeps its last good configuration.'] });
      }
    }
    return out;
  }

  /* The panic guard: since when, how many nodes fail of how many, what it holds, and the
   * operator's way out (or who took it). */
  function panicBanner(s) {
    const cl = s.cluster || {};
    const pg = (s.fault_detection && s.fault_detection.panic_guard) || null;
    if (!(pg ? pg.engaged : cl.panic)) return null;
    const parts = [];
    const since = pg ? parseTime(pg.since) : null;
    if (since !== null) parts.push('Since ' + fmtClock(since) + ' (', { ago: since }, '), ');
    if (pg && pg.nodes_counted) {
      parts.push(pg.nodes_failing + ' of ' + pg.nodes_counted + ' nodes fail their probes' + (since === null ? '. ' : '. '));
    } else if (cl.panic_reason) {
      parts.push(cl.panic_reason + '. ');
    }
    if (pg && pg.override) {
      parts.push('Failover for this outage was allowed by ' + (pg.override_by || 'an operator') +
        ': the failing nodes\' monitors move to the nodes that still answer, and nginx routes only to those. The guard ends by itself when fewer nodes fail.');
      return { id: 'panic', tone: 'bad', icon: '!', title: 'Panic guard engaged — failover allowed by ' + (pg.override_by || 'an operator'), parts };
    }
    if (pg && pg.nodes_released > 0) {
      parts.push('It has held longer than KUMAGUARD_PANIC_MAX_HOLD: the failing nodes are released one at a time (' + pg.nodes_released +
        ' so far), their monitors move. ');
    } else {
      parts.push('Nothing moves and nginx keeps its upstream: with this many nodes failing together, the fault is more likely kumaguard\'s own network or the database than the nodes. ');
    }
    parts.push('If the nodes really are down, allow failover; it lasts until this outage ends.');
    return { id: 'panic', tone: 'bad', icon: '!', title: 'Panic guard engaged — nothing moves', parts,
      action: { id: 'panic-override', label: 'Allow failover for this outage…', run: panicOverride } };
  }

  /* The cluster database: down, not answering, or not ready yet. */
  function databaseBanner(db) {
    if (db.ok !== false) return null;
    const since = parseTime(db.down_since);
    const retry = parseTime(db.next_retry);
    const parts = [];
    let title;
    if (db.state === 'no_answer') {
      title = 'Database not answering';
      parts.push('No answer');
      if (since !== null) parts.push(' for ', { for: since }, ' (since ' + fmtClock(since) + ')');
      if (db.error) parts.push(': ' + db.error);
    } else if (db.state === 'waiting_schema') {
      title = 'Waiting for the Kuma tables';
      parts.push(db.error || 'the database has no node and monitor tables yet', ' (the Kuma nodes create them when they first start)');
    } else if (db.state === 'connecting') {
      title = 'Connecting to the database';
      parts.push(db.error || 'not connected yet');
    } else {
      title = 'Database down';
      parts.push((db.backend ? db.backend + ': ' : '') + (db.error || 'no connection'));
      if (since !== null) parts.push(' — for ', { for: since }, ' (since ' + fmtClock(since) + ')');
    }
    parts.push('. Probing and routing continue; monitors do not move until it is back. Retrying every few seconds');
    if (retry !== null) parts.push(' (next try ', { in: retry }, ')');
    parts.push('.');
    return { id: 'database', tone: db.state === 'waiting_schema' || db.state === 'connecting' ? 'warn' : 'bad', icon: '!', title, parts };
  }

  function renderBanners() {
    const list = currentBanners();
    const box = $('banners');
    const seen = new Set();
    let prev = null;
    for (const b of list) {
      seen.add(b.id);
      let rec = S.banners.get(b.id);
      if (!rec) {
        rec = buildBanner(b.id);
        S.banners.set(b.id, rec);
      }
      updateBanner(rec, b);
      const want = prev ? prev.nextSibling : box.firstChild;
      if (want !== rec.root) box.insertBefore(rec.root, want);
      prev = rec.root;
    }
    for (const [id, rec] of S.banners) {
      if (!seen.has(id)) {
        rec.root.remove();
        S.banners.delete(id);
      }
    }
  }

  function buildBanner(id) {
    const r = { key: null, akey: null };
    r.icon = el('span', { class: 'banner-icon', 'aria-hidden': 'true' });
    r.title = el('strong');
    r.text = el('span', { class: 'banner-text' });
    r.actions = el('div', { class: 'banner-actions' });
    r.root = el('div', { dataset: { banner: id } }, r.icon, el('div', { class: 'banner-body' }, r.title, r.text), r.actions);
    return r;
  }

  function updateBanner(r, b) {
    const cls = 'banner banner-' + b.tone;
    if (r.root.className !== cls) r.root.className = cls;
    const role = b.tone === 'info' ? 'status' : 'alert';
    if (r.root.getAttribute('role') !== role) r.root.setAttribute('role', role);
    setText(r.icon, b.icon);
    setText(r.title, b.title);
    const key = JSON.stringify([b.parts, b.link || null]);
    if (r.key !== key) {
      r.key = key;
      r.text.replaceChildren(...partsNodes(b.parts),
        ...(b.link ? [' ', el('a', { href: b.link.href, rel: 'noopener noreferrer', target: '_blank', text: b.link.text })] : []));
    }
    const akey = b.action ? b.action.id : '';
    if (r.akey !== akey) {
      r.akey = akey;
      r.actions.replaceChildren(...(b.action ? [el('button', { type: 'button', class: 'btn btn-danger-solid', id: 'act-' + b.action.id,
        text: b.action.label, onclick: (e) => b.action.run(e.currentTarget) })] : []));
    }
    r.actions.hidden = !b.action;
  }

  /* ---- what is wrong with a node, or pending on it, in words an operator can act on */

  /* The reconcile scheduler's reasons for waiting (server/reconcile_sched.c), said plainly;
   * [pattern, words (null = said elsewhere), severity, ends at the node's cron]. */
  const WAITING = [
    [/call is in flight/, null, 1, false],
    [/timed-out call may still be running/, 'timed out: may still be running; waiting for the node before asking again', 2, false],
    [/cannot be called now/, 'waiting: the node cannot be called now; left to its :00 cron', 1, true],
    [/after a refused call/, 'waiting: left to the node\'s :00 cron after the refused call', 2, true],
    [/backing off/, 'waiting: backing off after a failed call', 2, false],
    [/budget/, 'waiting: KUMA_RECONCILE_BUDGET calls spent in 15 min; left to the node\'s :00 cron', 2, true],
    [/cron may be running/, 'waiting: the node\'s :00 cron may still be running', 1, false],
    [/too close to the node's :00 cron/, 'waiting: too close to the node\'s :00 cron; left to it', 1, true],
  ];
  const STATE_SEV = { offline: 3, suspect: 2, recovering: 2, unknown: 1, online: 0, draining: 0, maintenance: 0 };
  const SEV_TONE = ['info', 'info', 'warn', 'bad'];
  const SEV_ICON = ['i', 'i', '▲', '!'];

  function pendingWords(r) {
    const w = [];
    if (r.pending_starts > 0) w.push(fmtInt(r.pending_starts) + ' monitor' + (r.pending_starts === 1 ? '' : 's') + ' to start');
    if (r.pending_stops > 0) w.push(fmtInt(r.pending_stops) + ' to stop');
    return w.join(', ');
  }

  /* -> [{sev 1..3, tone, icon, code, short (plain text), parts (with clock spans)}], worst
   * first.  sev 3: the operator must fix something; 2: it will not settle by itself soon;
   * 1: work in progress. */
  function nodeIssues(n, rise) {
    const out = [];
    const add = (sev, code, short, ...more) => out.push({ sev, tone: SEV_TONE[sev], icon: SEV_ICON[sev], code, short, parts: [short, ...more] });
    if (n.host_problem || n.host_valid === false) {
      /* never probed, routed or called: nothing else about it means anything */
      add(3, 'host', n.host_problem || 'host not usable: never probed or routed');
      return out;
    }
    const placeable = n.state === 'online' || n.state === 'suspect';
    if (n.proven === false && placeable && n.host_valid !== false) {
      add(1, 'proving', 'proving: not given monitors until ' + (rise ? rise + ' probes pass' : 'its probes pass') +
        (rise ? ' (' + Math.min(n.consecutive_successes || 0, rise) + ' so far)' : ''));
    }
    const r = n.reconcile;
    if (!r) return out;
    const cron = parseTime(r.next_cron);
    const cronPart = cron !== null ? [' (', { in: cron }, ')'] : [];
    const last = parseTime(r.last_call);
    const when = last !== null ? [' · ', { ago: last }] : [];
    const pend = pendingWords(r);
    switch (r.last_result) {
      case 'rate_limited':
        add(3, 'r429', '429: the node\'s API_RATE_LIMIT is spent — raise API_RATE_LIMIT on the nodes', ' (kumaguard and the users behind nginx share it); its :00 cron picks the work up', ...when);
        break;
      case 'unauthorized':
        add(3, 'r401', '401: no first user yet, or KUMA_API_KEY starts with \'Bearer \'', ' — create the first user on the primary node, or give the bare key; its :00 cron picks the work up', ...when);
        break;
      case 'http_error':
        add(3, 'rhttp', 'HTTP ' + (r.last_http_status || '?') + ': the node\'s reconcile failed', '; retried with back-off, then left to its :00 cron', ...when);
        break;
      case 'connect_failed':
        add(2, 'rconn', 'no connection: could not ask the node to reconcile', '; retried with back-off, then left to its :00 cron', ...when);
        break;
      default:
        break;
    }
    let waitSaid = false;
    if (r.last_result === 'timeout') {
      const still = !!(r.waiting && /timed-out call/.test(r.waiting));
      add(2, 'rtimeout', still ? 'timed out: may still be running; waiting for the node'
        : 'timed out: the node may have finished late',
      (r.last_duration_ms ? ' (no answer within ' + fmtDuration(r.last_duration_ms) + ')' : ''), ...when);
      waitSaid = still;
    }
    /* must_tell holds back a returning node (recovering); on a node that is down it is what
     * will happen; on a routed node, or one that cannot be called (no KUMA_API_KEY, setup
     * pending), it holds nothing */
    const away = n.state === 'offline' || n.state === 'maintenance';
    if (r.must_tell && away) {
      add(1, 'tell', 'when it answers again it is told first, and routed only once it dropped what moved away');
    } else if (r.must_tell && n.state === 'recovering' && !(r.waiting && /cannot be called now/.test(r.waiting))) {
      add(2, 'tell', 'told first: not routed until it drops what moved away', r.in_flight ? ' (telling it now)' : '');
    }
    if (away && r.waiting && /cannot be called now/.test(r.waiting)) {
      /* a node that does not answer cannot be called: its state says so already */
    } else if (r.in_flight) {
      add(1, 'flight', 'asking the node to reconcile' + (pend ? ': ' + pend : ''));
    } else if (r.waiting && !waitSaid) {
      const w = WAITING.find(([re]) => re.test(r.waiting));
      if (!w) add(1, 'wait', 'waiting: ' + r.waiting, pend ? ' — ' + pend : '');
      else if (w[1]) add(w[2], 'wait', w[1], ...(w[3] ? cronPart : []), pend ? ' — ' + pend : '');
    } else if (pend && !r.must_tell) {
      add(1, 'pending', 'pending: ' + pend, ' — the node\'s next :00 cron', ...cronPart);
    }
    out.sort((x, y) => y.sev - x.sev);
    return out;
  }

  function resultWords(r) {
    switch (r.last_result) {
      case 'ok': return 'OK';
      case 'timeout': return 'timed out';
      case 'rate_limited': return '429';
      case 'unauthorized': return '401';
      case 'http_error': return 'HTTP ' + (r.last_http_status || '?');
      case 'connect_failed': return 'no connection';
      default: return r.last_result || 'none';
    }
  }

  /* "last OK in 1.3 s · 2 min ago · 12 calls, 3 failed (429 ×2, timed out ×1) · next cron in 23 s" */
  function reconcileParts(r) {
    if (!r) return ['—'];
    const parts = [];
    const last = parseTime(r.last_call);
    if (r.calls > 0 && last !== null) {
      parts.push('last ' + resultWords(r) + (r.last_duration_ms ? ' in ' + fmtDuration(r.last_duration_ms) : '') + ' · ', { ago: last });
      const why = [];
      if (r.rate_limited) why.push('429 ×' + r.rate_limited);
      if (r.unauthorized) why.push('401 ×' + r.unauthorized);
      if (r.timeouts) why.push('timed out ×' + r.timeouts);
      parts.push(' · ' + fmtInt(r.calls) + ' call' + (r.calls === 1 ? '' : 's') +
        (r.failures ? ', ' + fmtInt(r.failures) + ' failed' + (why.length ? ' (' + why.join(', ') + ')' : '') : ''));
    } else {
      parts.push('no call yet');
    }
    if (r.left_to_cron) parts.push(' · ' + fmtInt(r.left_to_cron) + ' left to the cron');
    const cron = parseTime(r.next_cron);
    if (cron !== null) parts.push(' · next cron ', { in: cron });
    return parts;
  }

  /* Per node: the node, its issues, and how bad it is (for sorting and the Problems filter). */
  function nodeInfos(s) {
    const rise = s.health_check && s.health_check.config ? s.health_check.config.rise : null;
    return s.nodes.map((n) => {
      const issues = nodeIssues(n, rise);
      const st = STATE_SEV[n.state];
      return { n, issues, sev: Math.max(st === undefined ? 1 : st, issues.length ? issues[0].sev : 0) };
    });
  }

  function issueItem(i) {
    return el('li', { class: 'issue issue-' + i.tone, dataset: { code: i.code } },
      el('span', { class: 'issue-icon', 'aria-hidden': 'true', text: i.icon }),
      el('span', { class: 'issue-text' }, ...partsNodes(i.parts)));
  }

  /* ---- the node view: one card per node up to COMPACT_ABOVE nodes; above, a compact list
   * (filter, state chips, problems first) whose rows are updated in place and open into the
   * full card, chart included, only for the nodes a user expands. */

  function renderNodes(s) {
    const compact = s.nodes.length > COMPACT_ABOVE;
    if (compact !== S.nv.compact) switchNodeView(compact);
    const infos = nodeInfos(s);
    if (compact) renderList(s, infos);
    else renderCards(s, infos);
    const limit = s.cluster && s.cluster.monitor_limit;
    setText($('nodes-note'), (limit ? 'limit ' + fmtInt(limit) + ' monitors per node' : '') +
      (compact ? (limit ? ' · ' : '') + 'compact view above ' + COMPACT_ABOVE + ' nodes: open a node for its card and latency chart' : ''));
  }

  function dropCard(rec) {
    if (rec.chart) rec.chart.destroy();
    if (rec.ro) rec.ro.disconnect();
    rec.root.remove();
  }

  function switchNodeView(compact) {
    const nv = S.nv;
    nv.compact = compact;
    $('cards').hidden = compact;
    $('node-tools').hidden = !compact;
    $('node-list-wrap').hidden = !compact;
    for (const rec of S.cards.values()) dropCard(rec);
    S.cards.clear();
    for (const rec of nv.rows.values()) rec.root.remove();
    nv.rows.clear();
    nv.expanded.clear();
    nv.order = '';
    nv.chipKey = '';
  }

  function renderCards(s, infos) {
    const cards = $('cards');
    const seen = new Set();
    const empty = $('cards-empty');
    if (s.nodes.length === 0) {
      empty.textContent = 'No nodes yet: nodes register themselves in the node table, or are given with --node.';
      empty.hidden = false;
    } else {
      empty.hidden = true;
    }
    let prev = null;
    for (const x of infos) {
      const n = x.n;
      seen.add(n.node_id);
      let rec = S.cards.get(n.node_id);
      if (!rec) {
        rec = buildCard(n);
        S.cards.set(n.node_id, rec);
      }
      /* keep the snapshot's order (sorted by id) */
      const want = prev ? prev.nextSibling : cards.firstChild;
      if (want !== rec.root) cards.insertBefore(rec.root, want);
      updateCard(rec, n, s, x.issues);
      prev = rec.root;
    }
    for (const [id, rec] of S.cards) {
      if (!seen.has(id)) {
        dropCard(rec);
        S.cards.delete(id);
      }
    }
  }

  /* ---- the compact list */

  const CHIPS = ['all', 'problems', 'online', 'suspect', 'offline', 'recovering', 'draining', 'maintenance', 'unknown'];
  /* Node ids in natural order (n2 before n10); ranks are recomputed only when the ids change,
   * so sorting 1,000 rows on each update compares numbers. */
  const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });
  const idRank = { key: '', rank: new Map() };
  function rankIds(infos) {
    const key = infos.map((x) => x.n.node_id).join('\n');
    if (key === idRank.key) return;
    idRank.key = key;
    const ids = infos.map((x) => x.n.node_id).sort(collator.compare);
    idRank.rank = new Map(ids.map((id, i) => [id, i]));
  }
  const byId = (a, b) => idRank.rank.get(a.n.node_id) - idRank.rank.get(b.n.node_id);
  const SORTS = {
    problems: (a, b) => b.sev - a.sev || byId(a, b),
    id: byId,
    load: (a, b) => (b.n.monitors_effective || 0) - (a.n.monitors_effective || 0) || byId(a, b),
    latency: (a, b) => latencyRank(b.n) - latencyRank(a.n) || byId(a, b),
  };

  function latencyRank(n) {
    if ((n.consecutive_failures || 0) > 0) return Infinity; /* no answer: the slowest */
    return Number.isFinite(n.last_latency_ms) ? n.last_latency_ms : -1;
  }

  function nodeMatches(x) {
    const nv = S.nv;
    if (nv.chip === 'problems' ? x.sev < 2 : nv.chip !== 'all' && x.n.state !== nv.chip) return false;
    if (!nv.q) return true;
    const q = nv.q;
    return x.n.node_id.toLowerCase().includes(q) || (x.n.host || '').toLowerCase().includes(q) ||
      (x.n.name || '').toLowerCase().includes(q);
  }

  function renderList(s, infos) {
    const nv = S.nv;
    const counts = { all: infos.length, problems: 0 };
    for (const x of infos) {
      counts[x.n.state] = (counts[x.n.state] || 0) + 1;
      if (x.sev >= 2) counts.problems++;
    }
    renderChips(counts);

    rankIds(infos);
    const sorted = infos.slice().sort(SORTS[nv.sort] || SORTS.problems);
    const limit = (s.cluster && s.cluster.monitor_limit) || 0;
    const list = $('node-list');
    const seen = new Set();
    let shown = 0;
    for (const x of sorted) {
      const id = x.n.node_id;
      seen.add(id);
      let rec = nv.rows.get(id);
      if (!rec) {
        rec = buildRow(id);
        nv.rows.set(id, rec);
        list.append(rec.root);
        nv.order = ''; /* place it */
      }
      updateRow(rec, x, limit);
      const vis = nodeMatches(x);
      if (rec.root.hidden === vis) rec.root.hidden = !vis;
      if (vis) shown++;
      if (rec.card) updateCard(rec.card, x.n, s, x.issues);
    }
    for (const [id, rec] of nv.rows) {
      if (!seen.has(id)) {
        if (rec.card) { dropCard(rec.card); S.cards.delete(id); }
        rec.root.remove();
        nv.rows.delete(id);
        nv.expanded.delete(id);
      }
    }
    /* Reorder only when the order changed, and not under the keyboard: moving the row that
     * has the focus would drop it.  The next render after the focus leaves catches up. */
    const order = sorted.map((x) => x.n.node_id).join('\n');
    if (order !== nv.order && !list.contains(document.activeElement)) {
      nv.order = order;
      let prev = null;
      for (const x of sorted) {
        const root = nv.rows.get(x.n.node_id).root;
        const want = prev ? prev.nextSibling : list.firstChild;
        if (want !== root) list.insertBefore(root, want);
        prev = root;
      }
    }
    setText($('node-count'), shown === infos.length ? fmtInt(shown) + ' nodes'
      : 'Showing ' + fmtInt(shown) + ' of ' + fmtInt(infos.length) + ' nodes');
    $('node-list-empty').hidden = shown > 0;
  }

  function renderChips(counts) {
    const nv = S.nv;
    const keys = CHIPS.filter((k) => k === 'all' || k === 'problems' || counts[k] > 0 || nv.chip === k);
    const box = $('node-chips');
    if (keys.join() !== nv.chipKey) {
      nv.chipKey = keys.join();
      box.replaceChildren(...keys.map((k) => el('button', { type: 'button', class: 'chip' + (STATES[k] ? ' st-' + k : k === 'problems' ? ' chip-problems' : ''), dataset: { chip: k } },
        STATES[k] ? el('span', { class: 'chip-icon', 'aria-hidden': 'true', text: STATES[k].icon }) : null,
        el('span', { class: 'chip-label', text: k === 'all' ? 'All' : k === 'problems' ? 'Problems' : STATES[k].label }),
        el('span', { class: 'chip-count' }))));
    }
    for (const b of box.children) {
      const k = b.dataset.chip;
      setText(b.lastChild, fmtInt(counts[k] || 0));
      const pressed = String(k === nv.chip);
      if (b.getAttribute('aria-pressed') !== pressed) b.setAttribute('aria-pressed', pressed);
    }
  }

  /* One row, cloned from a template (cheaper than building 1,000 rows element by element). */
  let rowTemplate = null;

  function buildRow(id) {
    if (!rowTemplate) {
      rowTemplate = el('li', { class: 'nrow' },
        el('span', { class: 'nr-state' }, el('span', { class: 'nr-icon', 'aria-hidden': 'true' }), el('span', { class: 'nr-label' })),
        el('span', { class: 'nr-node' }, el('button', { type: 'button', class: 'nr-toggle', 'aria-expanded': 'false' },
          el('span', { class: 'nr-caret', 'aria-hidden': 'true', text: '▸' }), el('span', { class: 'nr-id' }))),
        el('span', { class: 'nr-host' }),
        el('span', { class: 'nr-load' }, el('span', { class: 'bar' }, el('span', { class: 'bar-fill' })), el('span', { class: 'nr-count' })),
        el('span', { class: 'nr-lat' }),
        el('span', { class: 'nr-issue' }, el('span', { class: 'nr-issue-icon', 'aria-hidden': 'true' }), el('span', { class: 'nr-issue-text' })));
    }
    const root = rowTemplate.cloneNode(true);
    const [state, node, host, load, lat, issue] = root.children;
    const rec = {
      id, root, key: '', card: null,
      icon: state.firstChild, label: state.lastChild,
      toggle: node.firstChild, host, fill: load.firstChild.firstChild, count: load.lastChild, lat,
      issue, issueIcon: issue.firstChild, issueText: issue.lastChild,
    };
    root.dataset.node = id;
    setText(rec.toggle.lastChild, id);
    return rec;
  }

  function updateRow(rec, x, clusterLimit) {
    const n = x.n;
    const st = STATES[n.state] ? n.state : 'unknown';
    const eff = n.monitors_effective || 0;
    const limit = n.monitor_limit || clusterLimit || 0;
    const fails = n.consecutive_failures || 0;
    const lat = fails > 0 ? 'no answer' : fmtLatency(n.last_latency_ms);
    const top = rowProblem(n, x.issues);
    const key = st + '\n' + (n.host || '') + '\n' + eff + '\n' + limit + '\n' + lat + '\n' + x.sev + '\n' +
      (top ? top.sev + top.short + '\n' + x.issues.length : '');
    if (key === rec.key) return;
    rec.key = key;
    const info = stateInfo(st);
    const cls = 'nrow st-' + st + (x.sev >= 2 ? ' has-problem' : '');
    if (rec.root.className !== cls) rec.root.className = cls;
    rec.root.dataset.state = st;
    setText(rec.icon, info.icon);
    setText(rec.label, info.label);
    setText(rec.host, n.host || 'no host');
    const pct = limit > 0 ? (100 * eff) / limit : 0;
    rec.fill.style.width = Math.min(100, pct) + '%';
    const fillCls = 'bar-fill ' + (pct >= 90 ? 'fill-bad' : pct >= 75 ? 'fill-warn' : 'fill-ok');
    if (rec.fill.className !== fillCls) rec.fill.className = fillCls;
    setText(rec.count, fmtInt(eff) + ' / ' + fmtInt(limit));
    setText(rec.lat, lat);
    rec.lat.classList.toggle('is-bad', fails > 0);
    if (top) {
      rec.issue.className = 'nr-issue issue-' + top.tone;
      setText(rec.issueIcon, top.icon);
      const more = x.issues.length - (top.fromState ? 0 : 1);
      setText(rec.issueText, top.short + (more > 0 ? ' (+' + more + ')' : ''));
      rec.issue.title = (top.fromState ? [top] : []).concat(x.issues).map((i) => i.parts.filter((p) => typeof p === 'string').join('')).join('\n');
    } else {
      rec.issue.className = 'nr-issue';
      setText(rec.issueIcon, '');
      setText(rec.issueText, '');
      rec.issue.removeAttribute('title');
    }
  }

  /* What a row says in its Problem column: the worst problem line, or, when the node's state
   * is worse than any of them, why its probes fail. */
  function rowProblem(n, issues) {
    const top = issues[0] || null;
    const sev = STATE_SEV[n.state] || 0;
    if (sev < 2 || (top && top.sev >= sev)) return top;
    const short = n.state === 'recovering'
      ? 'recovering: ' + (n.consecutive_successes || 0) + ' probes passed'
      : 'probes fail: ' + (n.last_failure_reason || 'no answer');
    return { sev, tone: SEV_TONE[sev], icon: SEV_ICON[sev], short, parts: [short], fromState: true };
  }

  function toggleRow(id) {
    const nv = S.nv;
    const rec = nv.rows.get(id);
    if (!rec) return;
    if (rec.card) {
      dropCard(rec.card);
      S.cards.delete(id);
      rec.card = null;
      nv.expanded.delete(id);
      rec.toggle.setAttribute('aria-expanded', 'false');
      rec.root.classList.remove('is-open');
      return;
    }
    const n = nodeById(id);
    if (!n) return;
    const x = nodeInfos({ nodes: [n], health_check: S.status.health_check })[0];
    rec.card = buildCard(n);
    rec.card.root.classList.add('card-in-list');
    rec.card.root.id = 'node-detail-' + id;
    rec.toggle.setAttribute('aria-controls', rec.card.root.id);
    S.cards.set(id, rec.card);
    nv.expanded.add(id);
    rec.root.append(rec.card.root);
    rec.toggle.setAttribute('aria-expanded', 'true');
    rec.root.classList.add('is-open');
    updateCard(rec.card, n, S.status, x.issues);
  }

  /* ---- node cards */

  function fact(label, field, wide) {
    const dd = el('dd', { dataset: { f: field } });
    return { wrap: el('div', { class: wide ? 'wide' : null }, el('dt', { text: label }), dd), dd };
  }

  function buildCard(n) {
    const id = n.node_id;
    const titleId = 'card-title-' + id;
    const r = { id, f: {}, issuesKey: null, reconcileKey: null };
    r.badgeIcon = el('span', { class: 'badge-icon', 'aria-hidden': 'true' });
    r.badgeText = el('span', { class: 'badge-text' });
    r.badge = el('span', { class: 'badge', dataset: { field: 'state' } }, r.badgeIcon, r.badgeText);
    r.tags = el('span', { class: 'card-tags' });
    r.title = el('h3', { id: titleId }, el('span', { class: 'card-name' }), r.tags);
    r.host = el('div', { class: 'card-host' });
    r.note = el('div', { class: 'card-state-note' });
    r.issues = el('ul', { class: 'issues', 'aria-label': 'Problems and pending work on ' + id });
    const facts = [
      fact('Latency', 'latency'), fact('Failures', 'fails'), fact('Last seen', 'seen'),
      fact('Last failure', 'failure', true), fact('Reconcile calls', 'reconcile', true),
    ];
    for (const fa of facts) r.f[fa.dd.dataset.f] = fa.dd;
    r.chartEl = el('div', { class: 'chart', role: 'img' });
    r.chartRange = el('span');
    r.capNum = el('span', { class: 'cap-num' });
    r.capDetail = el('span', { class: 'cap-detail' });
    r.capFill = el('span', { class: 'bar-fill' });
    r.capBar = el('div', { class: 'bar', role: 'meter', 'aria-valuemin': '0', 'aria-label': 'Monitors on ' + id + ' against the limit' }, r.capFill);
    r.btn = {
      drain: el('button', { type: 'button', class: 'btn btn-small', 'aria-label': 'Drain ' + id, text: 'Drain',
        onclick: () => nodeAction(id, 'drain') }),
      maintenance: el('button', { type: 'button', class: 'btn btn-small', 'aria-label': 'Maintenance for ' + id, text: 'Maintenance',
        onclick: () => nodeAction(id, 'maintenance') }),
      enable: el('button', { type: 'button', class: 'btn btn-small', 'aria-label': 'Enable ' + id, text: 'Enable',
        onclick: () => nodeAction(id, 'enable') }),
      monitors: el('button', { type: 'button', class: 'btn btn-small btn-ghost', 'aria-label': 'Monitors on ' + id, text: 'Monitors',
        onclick: () => showMonitorsOf(id) }),
    };
    r.root = el('article', { class: 'card', 'aria-labelledby': titleId, dataset: { node: id } },
      el('div', { class: 'card-head' }, el('div', { class: 'card-title' }, r.title, r.host), r.badge),
      r.note,
      r.issues,
      el('dl', { class: 'facts' }, ...facts.map((fa) => fa.wrap)),
      el('div', { class: 'chart-box' },
        el('div', { class: 'chart-caption' }, el('span', { text: 'Probe latency' }), r.chartRange),
        r.chartEl),
      el('div', { class: 'capacity' },
        el('div', { class: 'capacity-line' }, el('span', null, 'Monitors ', r.capNum), r.capDetail),
        r.capBar),
      el('div', { class: 'card-actions', role: 'group', 'aria-label': 'Actions for ' + id },
        r.btn.drain, r.btn.maintenance, r.btn.enable, r.btn.monitors));
    return r;
  }

  function updateCard(r, n, s, issues) {
    const st = n.state || 'unknown';
    const info = stateInfo(st);
    r.root.className = 'card st-' + (STATES[st] ? st : 'unknown') + (r.root.classList.contains('card-in-list') ? ' card-in-list' : '');
    r.root.dataset.state = st;
    setText(r.badgeIcon, info.icon);
    setText(r.badgeText, info.label);
    r.badge.title = info.note;
    setText(r.title.querySelector('.card-name'), n.name && n.name !== n.node_id ? n.node_id + ' · ' + n.name : n.node_id);
    const tags = [];
    if (n.is_primary) tags.push(el('span', { class: 'tag', text: 'primary' }));
    if (!n.host_valid) tags.push(el('span', { class: 'tag tag-warn', title: 'This host is not a valid host:port and is never routed', text: 'invalid host' }));
    r.tags.replaceChildren(...tags);
    setText(r.host, n.host || 'no host');

    const since = parseTime(n.state_since);
    const pg = s.fault_detection && s.fault_detection.panic_guard;
    const held = pg && pg.engaged && !pg.override && n.host_valid !== false && (st === 'offline' || st === 'suspect');
    /* under the panic guard a failing node keeps its monitors and its place in nginx */
    const note = held ? 'Failing its probes, but the panic guard holds: nothing moves off it and nginx keeps its upstream' : info.note;
    r.note.replaceChildren(note + (since ? ' · since ' + fmtClock(since) + ' (' : ''),
      ...(since ? [agoSpan(n.state_since), ')'] : []));

    const ikey = JSON.stringify(issues.map((i) => [i.tone, i.code, i.parts]));
    if (ikey !== r.issuesKey) {
      r.issuesKey = ikey;
      r.issues.replaceChildren(...issues.map(issueItem));
      r.issues.hidden = issues.length === 0;
    }

    const fails = n.consecutive_failures || 0;
    /* the last latency of a node that stopped answering would look like good news */
    setText(r.f.latency, fails > 0 ? 'no answer' : (n.last_latency_ms === null || n.last_latency_ms === undefined ? '—' : fmtLatency(n.last_latency_ms)));
    r.f.latency.classList.toggle('is-bad', fails > 0);
    setText(r.f.fails, fails > 0 ? fails + ' in a row' : 'none');
    r.f.fails.title = fails > 0 ? fails + ' consecutive failed probes' : 'the last probe succeeded';
    r.f.fails.classList.toggle('is-bad', fails > 0);
    r.f.seen.replaceChildren(agoSpan(n.last_seen));
    if (n.last_failure_reason || n.last_failure) {
      r.f.failure.className = 'reason';
      r.f.failure.replaceChildren(n.last_failure_reason || 'failed', el('span', { class: 'when' }, ' · ', agoSpan(n.last_failure)));
    } else {
      r.f.failure.className = 'reason';
      r.f.failure.replaceChildren('none recorded');
    }
    const rparts = reconcileParts(n.reconcile);
    const rkey = JSON.stringify(rparts);
    if (rkey !== r.reconcileKey) {
      r.reconcileKey = rkey;
      r.f.reconcile.className = 'reason';
      r.f.reconcile.replaceChildren(...partsNodes(rparts));
    }

    updateChart(r, n);

    const eff = n.monitors_effective || 0;
    const limit = n.monitor_limit || (s.cluster && s.cluster.monitor_limit) || 0;
    const pct = limit > 0 ? (100 * eff) / limit : 0;
    setText(r.capNum, fmtInt(eff) + ' / ' + fmtInt(limit));
    setText(r.capDetail, (limit ? (pct < 1 && eff > 0 ? '<1' : Math.round(pct)) + '% · ' : '') + 'home ' + fmtInt(n.monitors_home || 0) +
      (n.monitors_pinned ? ' · pinned ' + fmtInt(n.monitors_pinned) : ''));
    r.capBar.setAttribute('aria-valuemax', String(limit));
    r.capBar.setAttribute('aria-valuenow', String(eff));
    r.capBar.setAttribute('aria-valuetext', eff + ' of ' + limit + ' monitors');
    r.capFill.style.width = Math.min(100, pct) + '%';
    r.capFill.className = 'bar-fill ' + (pct >= 90 ? 'fill-bad' : pct >= 75 ? 'fill-warn' : 'fill-ok');

    r.btn.drain.disabled = st === 'draining' || st === 'maintenance';
    r.btn.maintenance.disabled = st === 'maintenance';
    r.btn.enable.disabled = !(st === 'draining' || st === 'maintenance');
  }

  /* ---- latency chart (uPlot): the node's last probes, oldest left; failed probes as red dots
   * on the baseline, gaps in the line. */

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function chartData(hist) {
    const n = hist.length;
    const xs = new Array(n), lat = new Array(n), fail = new Array(n);
    for (let i = 0; i < n; i++) {
      xs[i] = i - (n - 1);
      const v = hist[i];
      lat[i] = v === null || v === undefined ? null : v;
      fail[i] = v === null || v === undefined ? 0 : null;
    }
    return [xs, lat, fail];
  }

  function chartOptions(width) {
    const line = cssVar('--chart-line') || '#1f6feb';
    const fill = cssVar('--chart-fill') || 'rgba(31,111,235,0.12)';
    const bad = cssVar('--bad') || '#c42b2b';
    const muted = cssVar('--muted') || '#667';
    const grid = cssVar('--border') || '#ddd';
    return {
      width: Math.max(120, width),
      height: 70,
      legend: { show: false },
      cursor: { show: false },
      select: { show: false },
      padding: [6, 4, 2, 0],
      scales: {
        x: { time: false },
        y: { range: (u, min, max) => [0, Math.max(1, (max || 0) * 1.15)] },
      },
      axes: [
        { show: false },
        {
          size: 46, space: 22, gap: 3, font: '11px system-ui, sans-serif', stroke: muted,
          grid: { stroke: grid, width: 1 }, ticks: { show: false },
          values: (u, vals) => vals.map((v) => (v >= 10 ? Math.round(v) : +v.toFixed(1)) + ' ms'),
        },
      ],
      series: [
        {},
        { label: 'latency', stroke: line, width: 1.6, fill, spanGaps: false, points: { show: false } },
        { label: 'failed', stroke: bad, width: 0, paths: () => null, points: { show: true, size: 7, fill: bad, stroke: bad } },
      ],
    };
  }

  function updateChart(r, n) {
    const hist = Array.isArray(n.latency_history) ? n.latency_history : [];
    const ok = hist.filter((v) => v !== null && v !== undefined);
    const failed = hist.length - ok.length;
    const max = ok.length ? Math.max(...ok) : null;
    const avg = ok.length ? ok.reduce((a, b) => a + b, 0) / ok.length : null;
    setText(r.chartRange, hist.length ? 'last ' + hist.length + ' probes' + (max !== null ? ' · max ' + fmtLatency(max) : '') + (failed ? ' · ' + failed + ' failed' : '') : '');
    r.chartEl.setAttribute('aria-label', hist.length
      ? 'Probe latency of ' + n.node_id + ' over the last ' + hist.length + ' probes: average ' + fmtLatency(avg) + ', maximum ' + fmtLatency(max) + ', ' + failed + ' failed'
      : 'No probes yet for ' + n.node_id);
    if (hist.length === 0 || typeof window.uPlot !== 'function') {
      if (r.chart) { r.chart.destroy(); r.chart = null; }
      if (!r.chartEl.querySelector('.chart-empty')) {
        r.chartEl.replaceChildren(el('div', { class: 'chart-empty', text: typeof window.uPlot === 'function' ? 'no probes yet' : 'chart unavailable' }));
      }
      return;
    }
    const key = hist.join(',');
    if (r.chart && r.chartKey === key) return;
    r.chartKey = key;
    const data = chartData(hist);
    if (!r.chart) {
      r.chartEl.replaceChildren();
      r.chart = new window.uPlot(chartOptions(r.chartEl.clientWidth || 300), data, r.chartEl);
      if (typeof ResizeObserver === 'function') {
        r.ro = new ResizeObserver(() => {
          const w = r.chartEl.clientWidth;
          if (r.chart && w > 0 && Math.abs(w - r.chart.width) > 1) r.chart.setSize({ width: w, height: 70 });
        });
        r.ro.observe(r.chartEl);
      }
    } else {
      r.chart.setData(data);
    }
  }

  function rebuildCharts() {
    for (const r of S.cards.values()) {
      if (r.chart) { r.chart.destroy(); r.chart = null; r.chartKey = null; }
    }
    render();
  }

  /* ------------------------------------------------------------------ history */

  function renderNodeFilter(nodes, selId) {
    const sel = $(selId || 'filter-node');
    const cur = sel.value;
    const ids = nodes.map((n) => n.node_id);
    /* a filter on a node that left the cluster stays selectable */
    if (cur && !ids.includes(cur)) ids.push(cur);
    const have = [...sel.options].map((o) => o.value);
    if (['', ...ids].join('\n') === have.join('\n')) return;
    sel.replaceChildren(el('option', { value: '', text: 'All nodes' }),
      ...ids.map((id) => el('option', { value: id, text: id })));
    sel.value = cur;
  }

  function initKindFilter() {
    const sel = $('filter-kind');
    for (const [k, label] of Object.entries(KINDS)) sel.append(el('option', { value: k, text: label }));
  }

  function filters() {
    return { node: $('filter-node').value, kind: $('filter-kind').value };
  }

  function matchesFilters(ev) {
    const f = filters();
    return (!f.node || ev.node === f.node) && (!f.kind || ev.kind === f.kind);
  }

  function addEvent(ev, fresh) {
    if (!ev || typeof ev.id !== 'number' || !matchesFilters(ev)) return false;
    if (S.history.has(ev.id)) return false;
    S.history.set(ev.id, ev);
    if (fresh) S.freshIds.add(ev.id);
    if (fresh && S.history.size > HISTORY_MAX_ROWS) {
      const ids = [...S.history.keys()].sort((a, b) => a - b);
      for (const id of ids.slice(0, ids.length - HISTORY_MAX_ROWS)) S.history.delete(id);
      S.historyNext = ids[ids.length - HISTORY_MAX_ROWS]; /* "Load older" continues from here */
    }
    return true;
  }

  /* Before the history endpoint answered, the status document's recent events stand in. */
  function mergeRecentEvents(list) {
    if (!Array.isArray(list)) return;
    let changed = false;
    for (const ev of list) changed = addEvent(ev, false) || changed;
    if (changed) renderHistory();
  }

  let historyGen = 0;

  async function loadHistory(more) {
    const gen = more ? historyGen : ++historyGen;
    const f = filters();
    const q = new URLSearchParams({ limit: String(HISTORY_PAGE) });
    if (f.node) q.set('node', f.node);
    if (f.kind) q.set('kind', f.kind);
    if (more && S.historyNext) q.set('before', String(S.historyNext));
    const btn = $('history-more');
    btn.setAttribute('aria-busy', 'true');
    try {
      const r = await fetchJSON('api/failover-history?' + q.toString(), { headers: { Accept: 'application/json' } });
      if (gen !== historyGen) return; /* the filters changed meanwhile */
      if (!r.ok || !r.body || !Array.isArray(r.body.events)) throw new Error((r.body && (r.body.detail || r.body.error)) || 'HTTP ' + r.status);
      if (!more) { S.history.clear(); S.freshIds.clear(); }
      for (const ev of r.body.events) addEvent(ev, false);
      S.historyNext = r.body.next_before === null || r.body.next_before === undefined ? null : r.body.next_before;
      S.historyLoaded = true;
    } catch (e) {
      if (gen === historyGen) toast('Could not load the history: ' + (e.message || e), 'bad');
    } finally {
      btn.removeAttribute('aria-busy');
      if (gen === historyGen) renderHistory();
    }
  }

  /* Explicit table roles: the phone layout turns rows into blocks, which would otherwise drop
   * the table semantics screen readers rely on. */
  function cell(cls, ...content) {
    const empty = content.length === 0 || content.every((c) => c === '' || c === null || c === undefined);
    return el('td', { role: 'cell', class: [cls, empty ? 'is-empty' : ''].filter(Boolean).join(' ') || null }, ...content);
  }

  function historyRow(ev) {
    const t = parseTime(ev.time);
    const timeEl = el('time', { datetime: ev.time || '', title: ev.time || '' }, fmtClock(t));
    const kind = el('span', { class: 'kind k-' + ev.kind, text: KINDS[ev.kind] || ev.kind });
    const fromTo = ev.from || ev.to ? (ev.from || '?') + ' → ' + (ev.to || '?') : '';
    const count = MOVE_KINDS.has(ev.kind) ? fmtInt(ev.count || 0) : (ev.count ? fmtInt(ev.count) : '');
    const row = el('tr', { role: 'row', dataset: { eventId: String(ev.id), kind: ev.kind } },
      cell('time', timeEl),
      cell('kind-cell', kind),
      cell('node', ev.node || ''),
      cell('fromto', fromTo),
      cell('num count', count),
      cell('num duration', fmtDuration(ev.duration_ms)),
      cell('details', ev.reason || ''));
    if (S.freshIds.has(ev.id)) row.classList.add('is-new');
    return row;
  }

  /* Rows are kept by event id: a live event adds its row, it does not rebuild the table (a
   * busy large cluster sends many). */
  const historyRowsById = new Map();

  function renderHistory() {
    const evs = [...S.history.values()].sort((a, b) => b.id - a.id);
    const body = $('history-body');
    for (const [id, row] of historyRowsById) {
      if (!S.history.has(id)) {
        row.remove();
        historyRowsById.delete(id);
      }
    }
    let prev = null;
    for (const ev of evs) {
      let row = historyRowsById.get(ev.id);
      if (!row) {
        row = historyRow(ev);
        historyRowsById.set(ev.id, row);
      }
      const want = prev ? prev.nextSibling : body.firstChild;
      if (want !== row) body.insertBefore(row, want);
      prev = row;
    }
    S.freshIds.clear();
    $('history-empty').hidden = evs.length > 0;
    $('history-more').hidden = !S.historyNext;
  }

  /* ------------------------------------------------------------------ live stream */

  let es = null;
  let streamRetry = null;

  function setStream(state) {
    S.stream = state;
    renderLive();
    renderBanners();
  }

  /* The indicator says "Live" only when the stream is open and the last status read worked. */
  function renderLive() {
    const state = S.stream;
    const stale = state === 'live' && S.statusError;
    const live = $('live');
    live.classList.toggle('is-live', state === 'live' && !stale);
    live.classList.toggle('is-down', state === 'down' || !!stale);
    setText($('live-text'), stale ? 'Not answering' : state === 'live' ? 'Live' : state === 'down' ? 'Reconnecting…' : 'Connecting…');
  }

  function openStream() {
    if (typeof EventSource !== 'function') { setStream('down'); return; }
    if (es) es.close();
    es = new EventSource('api/events');
    es.onopen = () => {
      const wasDown = S.stream === 'down';
      setStream('live');
      S.streamEverOpen = true;
      scheduleRefresh(true);
      /* Last-Event-ID replays what was missed on a browser reconnect; a fresh stream after a
       * hard failure does not, so re-read the history then. */
      if (wasDown) loadHistory(false);
    };
    es.onmessage = (m) => {
      let ev;
      try { ev = JSON.parse(m.data); } catch (_) { return; }
      if (addEvent(ev, true)) renderHistory();
      scheduleRefresh(false);
      if (ev && MOVE_KINDS.has(ev.kind)) scheduleMonitors();
    };
    es.addEventListener('snapshot', () => scheduleRefresh(false));
    es.onerror = () => {
      setStream(S.streamEverOpen || es.readyState === EventSource.CLOSED ? 'down' : 'connecting');
      if (es.readyState === EventSource.CLOSED && !streamRetry) {
        /* the server refused the stream (e.g. 503, too many streams): retry ourselves */
        streamRetry = setTimeout(() => { streamRetry = null; openStream(); }, STREAM_RETRY_MS);
      }
    };
  }

  /* ------------------------------------------------------------------ toasts and dialogs */

  function toast(text, tone) {
    const t = el('div', { class: 'toast', text });
    t.style.setProperty('--tone', tone === 'bad' ? 'var(--bad)' : tone === 'ok' ? 'var(--ok)' : 'var(--accent)');
    $('toasts').append(t);
    setTimeout(() => t.remove(), tone === 'bad' ? 10000 : 6000);
  }

  /* Resolves true when the operator confirms. */
  function confirmDialog(title, body, okLabel, danger) {
    const d = $('confirm-dialog');
    setText($('confirm-title'), title);
    $('confirm-body').replaceChildren(...body.map((p) => el('p', { text: p })));
    const ok = $('confirm-ok');
    setText(ok, okLabel);
    ok.className = 'btn ' + (danger ? 'btn-danger-solid' : 'btn-primary');
    d.returnValue = '';
    return new Promise((resolve) => {
      d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
      d.showModal();
      $('confirm-cancel').focus(); /* the safe choice has the focus */
    });
  }

  /* Resolves the token typed, or null when cancelled. */
  function askToken(message) {
    const d = $('token-dialog');
    const input = $('token-input');
    const err = $('token-error');
    input.value = '';
    err.hidden = !message;
    setText(err, message || '');
    d.returnValue = '';
    return new Promise((resolve) => {
      d.addEventListener('close', () => {
        const v = input.value.trim();
        input.value = '';
        resolve(d.returnValue === 'ok' && v ? v : null);
      }, { once: true });
      d.showModal();
      input.focus();
    });
  }

  function getToken() {
    try { return sessionStorage.getItem(TOKEN_KEY); } catch (_) { return null; }
  }

  function setToken(t) {
    try {
      if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) { /* storage disabled: the token lives for this request only */ }
    $('forget-token').hidden = !t;
  }

  /* ------------------------------------------------------------------ actions */

  /* POSTs an action; on 401 (or 403 with a token that was rejected) asks for the token and
   * tries again.  Returns the reply body on success, null otherwise. */
  async function postAction(path, body, label, button) {
    if (button) { button.disabled = true; button.setAttribute('aria-busy', 'true'); }
    try {
      let rejected = '';
      for (let attempt = 0; attempt < 3; attempt++) {
        let token = getToken();
        if (rejected) {
          token = await askToken(rejected === 'missing' ? '' : 'That token was not accepted. Try again.');
          if (!token) { toast(label + ': cancelled (no token)', 'info'); return null; }
          setToken(token);
        }
        const headers = { Accept: 'application/json' };
        if (body) headers['Content-Type'] = 'application/json';
        if (token) headers.Authorization = 'Bearer ' + token;
        let r;
        try {
          r = await fetchJSON(path, { method: 'POST', headers, body: body ? JSON.stringify(body) : undefined });
        } catch (e) {
          toast(label + ' failed: kumaguard did not answer (' + (e.name === 'AbortError' ? 'timeout' : e.message) + ')', 'bad');
          return null;
        }
        if (r.status === 401 || (r.status === 403 && token)) {
          if (token) setToken(null);
          rejected = token ? 'wrong' : 'missing';
          continue;
        }
        const b = r.body || {};
        if (!r.ok) {
          toast(label + ' refused (' + r.status + '): ' + (b.detail || b.error || 'error'), 'bad');
          return null;
        }
        toast(label + ': ' + (b.detail || b.message || b.status || 'done'), 'ok');
        scheduleRefresh(true);
        return b;
      }
      toast(label + ': the token was not accepted', 'bad');
      return null;
    } finally {
      if (button) { button.disabled = false; button.removeAttribute('aria-busy'); }
      if (S.status) renderNodes(S.status); /* restores the per-state disabled buttons */
    }
  }

  function nodeById(id) {
    return S.status ? S.status.nodes.find((n) => n.node_id === id) : null;
  }

  async function nodeAction(id, what) {
    const n = nodeById(id);
    const count = n ? n.monitors_effective || 0 : 0;
    const rec = S.cards.get(id);
    const button = rec ? rec.btn[what] : null;
    if (what === 'drain' || what === 'maintenance') {
      const text = what === 'drain'
        ? ['Drain ' + id + '?', 'Its ' + count + ' monitors move to the other online nodes. It stays in the nginx upstream for sticky sessions but gets no new work.']
        : ['Put ' + id + ' into maintenance?', 'Its ' + count + ' monitors move to the other online nodes, it leaves the nginx upstream and is no longer probed.'];
      const ok = await confirmDialog(what === 'drain' ? 'Drain node' : 'Maintenance', text, what === 'drain' ? 'Drain ' + id : 'Start maintenance', false);
      if (!ok) return;
    }
    const label = { drain: 'Drain ', maintenance: 'Maintenance for ', enable: 'Enable ' }[what] + id;
    await postAction('api/nodes/' + encodeURIComponent(id) + '/' + what, null, label, button);
  }

  async function forceRebalance() {
    const active = S.status && S.status.cluster ? S.status.cluster.monitors_active : null;
    const ok = await confirmDialog('Force rebalance all monitors?', [
      'This recomputes the home node of every unpinned active monitor' + (active !== null ? ' (' + fmtInt(active) + ' monitors)' : '') + ' from scratch.',
      'Many monitors may move at once; each node picks up its new set within about a minute. Operator pins are kept.',
    ], 'Force rebalance all', true);
    if (!ok) return;
    await postAction('api/force-rebalance-all', { confirm: 'force-rebalance-all' }, 'Force rebalance all', $('act-force'));
  }

  async function panicOverride(button) {
    const pg = S.status && S.status.fault_detection ? S.status.fault_detection.panic_guard || {} : {};
    const failing = pg.nodes_failing, counted = pg.nodes_counted;
    const ok = await confirmDialog('Allow failover for this outage?', [
      (failing && counted ? failing + ' of ' + counted + ' nodes fail their probes. ' : '') +
        'The panic guard holds their monitors where they are, because a fault this wide is more often kumaguard\'s own network or the database than the nodes.',
      'Allowing failover moves the failing nodes\' monitors to the nodes that still answer and takes the failing nodes out of nginx. If the nodes are in fact fine, their monitors will run on fewer nodes until the outage ends and they move back.',
      'This lasts for this outage only: the guard arms itself again once fewer nodes fail.',
    ], 'Allow failover', true);
    if (!ok) return;
    await postAction('api/panic-override', { confirm: 'move-monitors-during-outage' }, 'Allow failover for this outage', button);
  }

  /* ------------------------------------------------------------------ monitors */

  function monitorQuery() {
    const q = new URLSearchParams({ limit: String(MONITOR_PAGE) });
    const text = $('mon-q').value.trim();
    if (text) q.set('q', text);
    if ($('mon-node').value) q.set('node', $('mon-node').value);
    if ($('mon-state').value) q.set('state', $('mon-state').value);
    if ($('mon-override').value) q.set('override', $('mon-override').value);
    return q;
  }

  /* which: 'first' (filters changed), 'next', 'prev' or 'same' (refresh the page shown) */
  async function loadMonitors(which) {
    const M = S.mon;
    if (which === 'first') M.cursors = [0];
    else if (which === 'next' && M.next !== null) M.cursors.push(M.next);
    else if (which === 'prev' && M.cursors.length > 1) M.cursors.pop();
    const gen = ++M.gen;
    const q = monitorQuery();
    const after = M.cursors[M.cursors.length - 1];
    if (after) q.set('after', String(after));
    try {
      const r = await fetchJSON('api/monitors?' + q.toString(), { headers: { Accept: 'application/json' } });
      if (gen !== M.gen) return; /* a newer request is on its way */
      if (!r.ok || !r.body || !Array.isArray(r.body.monitors)) throw new Error((r.body && (r.body.detail || r.body.error)) || 'HTTP ' + r.status);
      M.next = r.body.next_after === null || r.body.next_after === undefined ? null : r.body.next_after;
      M.loaded = true;
      renderMonitors(r.body);
    } catch (e) {
      if (gen === M.gen) setText($('mon-summary'), 'Could not load the monitors: ' + (e.message || e));
    }
  }

  let monitorsTimer = null;
  function scheduleMonitors() {
    if (!S.mon.loaded || monitorsTimer) return;
    monitorsTimer = setTimeout(() => { monitorsTimer = null; loadMonitors('same'); }, 1000);
  }

  function renderMonitors(doc) {
    const rows = doc.monitors.map(monitorRow);
    $('monitors-body').replaceChildren(...rows);
    $('monitors-empty').hidden = rows.length > 0;
    const page = S.mon.cursors.length;
    const total = Number.isFinite(doc.total) ? doc.total : null;
    setText($('mon-summary'), rows.length === 0 ? '' :
      (total !== null ? fmtInt(total) + ' monitor' + (total === 1 ? '' : 's') + ' match' + (total === 1 ? 'es' : '') + ' · ' : '') +
      'page ' + page + (doc.next_after !== null && doc.next_after !== undefined ? '' : ' (last)'));
    $('mon-prev').hidden = page <= 1;
    $('mon-next').hidden = doc.next_after === null || doc.next_after === undefined;
  }

  function monitorRow(m) {
    const where = m.effective
      ? el('span', { class: 'where' + (m.active && !m.effective_live ? ' is-down' : '') },
        m.effective + ' · ' + stateInfo(m.effective_state).label.toLowerCase() +
        (m.override_kind === 'pin' ? ' (pinned)' : m.override_kind === 'kumaguard' ? ' (moved by kumaguard)' : ''))
      : el('span', { class: 'where is-down', text: 'no node' });
    const label = (what) => what + ' monitor ' + m.id + (m.name ? ' (' + m.name + ')' : '');
    const actions = [];
    actions.push(el('button', { type: 'button', class: 'btn btn-small', text: 'Move…', 'aria-label': label('Move'),
      disabled: !m.active || m.pinned, title: m.pinned ? 'Pinned by an operator: unpin it first' : (m.active ? null : 'Paused'),
      onclick: (e) => monitorDialog(m, 'move', e.currentTarget) }));
    if (m.pinned) {
      actions.push(el('button', { type: 'button', class: 'btn btn-small', text: 'Unpin', 'aria-label': label('Unpin'),
        onclick: (e) => unpinMonitor(m, e.currentTarget) }));
    } else {
      actions.push(el('button', { type: 'button', class: 'btn btn-small', text: 'Pin…', 'aria-label': label('Pin'),
        disabled: !m.active, title: m.active ? null : 'Paused',
        onclick: (e) => monitorDialog(m, 'pin', e.currentTarget) }));
    }
    return el('tr', { role: 'row', class: m.active ? null : 'is-paused', dataset: { monitorId: String(m.id) } },
      el('td', { role: 'cell', class: 'num mon-id', text: String(m.id) }),
      el('td', { role: 'cell', class: 'mon-name', text: m.name || '(no name)' }),
      el('td', { role: 'cell', class: 'mon-where' }, where),
      el('td', { role: 'cell', class: 'mon-why', text: m.why || '' }),
      el('td', { role: 'cell', class: 'mon-actions' }, ...actions));
  }

  /* The per-node drill-down of a card: the monitors that run there. */
  function showMonitorsOf(node) {
    $('mon-q').value = '';
    $('mon-state').value = '';
    $('mon-override').value = '';
    renderNodeFilter(S.status ? S.status.nodes : [], 'mon-node');
    const sel = $('mon-node');
    if (![...sel.options].some((o) => o.value === node)) sel.append(el('option', { value: node, text: node }));
    sel.value = node;
    loadMonitors('first');
    $('monitors-section').scrollIntoView({ block: 'start' });
    $('monitors-heading').focus({ preventScroll: true });
  }

  /* Resolves {node, revert} when the operator confirms, null otherwise. */
  function askTarget(m, what) {
    const d = $('monitor-dialog');
    const verb = what === 'move' ? 'Move' : 'Pin';
    setText($('monitor-title'), verb + ' monitor ' + m.id);
    $('monitor-body').replaceChildren(
      el('p', { text: (m.name ? '"' + m.name + '" ' : '') + 'runs on ' + (m.effective || 'no node') + ': ' + (m.why || '') }),
      el('p', { text: what === 'move'
        ? 'Moving makes the chosen node its home; it stays there, and fails over and back like any monitor homed there.'
        : 'A pin is an operator\'s choice: kumaguard never moves a pinned monitor, not even off a dead node, until it is unpinned.' }));
    const nodes = (S.status ? S.status.nodes : []).filter((n) => n.placeable && n.host_valid);
    const sel = $('monitor-target');
    sel.replaceChildren(...nodes.map((n) => el('option', { value: n.node_id, text: n.node_id + ' · ' + fmtInt(n.monitors_effective) + ' monitors' })));
    const other = nodes.find((n) => n.node_id !== m.effective);
    if (other) sel.value = other.node_id;
    $('monitor-revert-wrap').hidden = what !== 'move';
    $('monitor-revert').checked = false;
    setText($('monitor-ok'), verb);
    d.returnValue = '';
    return new Promise((resolve) => {
      d.addEventListener('close', () => {
        resolve(d.returnValue === 'ok' && sel.value ? { node: sel.value, revert: $('monitor-revert').checked } : null);
      }, { once: true });
      d.showModal();
      sel.focus();
    });
  }

  async function monitorDialog(m, what, button) {
    const choice = await askTarget(m, what);
    if (!choice) return;
    const body = what === 'move' ? { node: choice.node, revert: choice.revert } : { node: choice.node };
    const done = await postAction('api/monitors/' + m.id + '/' + what, body,
      (what === 'move' ? 'Move' : 'Pin') + ' monitor ' + m.id + ' to ' + choice.node, button);
    if (done) loadMonitors('same');
  }

  async function unpinMonitor(m, button) {
    const done = await postAction('api/monitors/' + m.id + '/unpin', null, 'Unpin monitor ' + m.id, button);
    if (done) loadMonitors('same');
  }

  /* ------------------------------------------------------------------ start */

  function start() {
    initKindFilter();
    setToken(getToken());
    $('act-health-check').addEventListener('click', (e) => postAction('api/trigger-health-check', null, 'Health check', e.currentTarget));
    $('act-rebalance').addEventListener('click', (e) => postAction('api/trigger-rebalancing', null, 'Rebalance', e.currentTarget));
    $('act-force').addEventListener('click', forceRebalance);
    $('act-cancel').addEventListener('click', (e) => postAction('api/cancel-rebalancing', null, 'Cancel rebalance', e.currentTarget));
    $('forget-token').addEventListener('click', () => { setToken(null); toast('Token forgotten for this tab', 'info'); });
    $('history-more').addEventListener('click', () => loadHistory(true));
    $('filter-node').addEventListener('change', () => loadHistory(false));
    $('filter-kind').addEventListener('change', () => loadHistory(false));
    $('history-filters').addEventListener('submit', (e) => e.preventDefault());
    /* Cancel is a plain button so that Enter in a field submits the OK button, not Cancel. */
    $('confirm-cancel').addEventListener('click', () => $('confirm-dialog').close('cancel'));
    $('token-cancel').addEventListener('click', () => $('token-dialog').close('cancel'));
    $('monitor-cancel').addEventListener('click', () => $('monitor-dialog').close('cancel'));
    let searchTimer = null;
    $('mon-q').addEventListener('input', () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => loadMonitors('first'), 300);
    });
    for (const id of ['mon-node', 'mon-state', 'mon-override']) $(id).addEventListener('change', () => loadMonitors('first'));
    $('monitor-filters').addEventListener('submit', (e) => { e.preventDefault(); loadMonitors('first'); });
    $('mon-next').addEventListener('click', () => loadMonitors('next'));
    $('mon-prev').addEventListener('click', () => loadMonitors('prev'));

    /* the compact node list: filter, state chips, sort, and a row's toggle (one listener each) */
    const rerenderNodes = () => { if (S.status) renderNodes(S.status); };
    let nodeQTimer = null;
    $('node-q').addEventListener('input', () => {
      clearTimeout(nodeQTimer);
      nodeQTimer = setTimeout(() => { S.nv.q = $('node-q').value.trim().toLowerCase(); rerenderNodes(); }, 120);
    });
    $('node-filters').addEventListener('submit', (e) => e.preventDefault());
    $('node-sort').addEventListener('change', () => { S.nv.sort = $('node-sort').value; S.nv.order = ''; rerenderNodes(); });
    $('node-chips').addEventListener('click', (e) => {
      const b = e.target.closest('button[data-chip]');
      if (!b) return;
      S.nv.chip = b.dataset.chip;
      rerenderNodes();
    });
    $('node-list').addEventListener('click', (e) => {
      const b = e.target.closest('button.nr-toggle');
      if (b) toggleRow(b.closest('li.nrow').dataset.node);
    });
    /* rows are not moved while the focus is in the list; put them in order once it leaves */
    $('node-list').addEventListener('focusout', (e) => {
      if (!e.relatedTarget || !$('node-list').contains(e.relatedTarget)) setTimeout(rerenderNodes, 0);
    });
    document.addEventListener('visibilitychange', () => { if (!document.hidden) scheduleRefresh(true); });

    const mq = window.matchMedia ? window.matchMedia('(prefers-color-scheme: dark)') : null;
    if (mq && mq.addEventListener) mq.addEventListener('change', rebuildCharts);

    openStream();
    refreshStatus();
    loadHistory(false);
    loadMonitors('first');
    setInterval(tickClock, 1000);
    setInterval(() => { if (S.stream !== 'live') scheduleRefresh(true); }, POLL_WHEN_DOWN_MS);
    setInterval(() => scheduleRefresh(false), SAFETY_POLL_MS);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
