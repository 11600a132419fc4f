// Cortex cluster dashboard. Plain browser JavaScript: no build step, no external requests.
// Every 2 s it reads this node's /cluster/* endpoints and /metrics, and redraws. An endpoint
// that answers 404 shows "n/a"; any other failure is listed in the banner at the top.
// Data from the network is only ever put into the page as text (textContent), never as HTML.
'use strict';

(() => {
  const REFRESH_MS = 2000;
  const FETCH_TIMEOUT_MS = 1800;
  const SPARK_POINTS = 60;
  const MAX_EVENTS = 50;
  const RATE_FAMILIES = {
    received: 'cortex_messages_received_total',
    sent: 'cortex_messages_sent_total',
    forwarded: 'cortex_messages_forwarded_total',
    dropped: 'cortex_messages_dropped_total',
  };

  const $ = (id) => document.getElementById(id);

  class NotFound extends Error {}

  // ---------- fetching ----------

  async function getText(path, accept) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    try {
      const res = await fetch(path, { signal: ctl.signal, cache: 'no-store', headers: { Accept: accept } });
      if (res.status === 404) throw new NotFound(path);
      const body = await res.text();
      if (!res.ok) {
        let detail = body.slice(0, 160);
        try { detail = JSON.parse(body).error || detail; } catch (_) { /* not JSON */ }
        throw new Error(`${path}: HTTP ${res.status}${detail ? ` (${detail})` : ''}`);
      }
      return body;
    } catch (e) {
      if (e instanceof NotFound) throw e;
      if (e.name === 'AbortError') throw new Error(`${path}: no answer within ${FETCH_TIMEOUT_MS} ms`);
      if (e.message && e.message.startsWith(path)) throw e;
      throw new Error(`${path}: ${e.message || e}`);
    } finally {
      clearTimeout(timer);
    }
  }

  async function getJson(path) {
    const text = await getText(path, 'application/json');
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new Error(`${path}: the answer is not JSON (${e.message})`);
    }
  }

  // ---------- Prometheus text format ----------

  function parseValue(s) {
    if (s === '+Inf' || s === 'Inf') return Infinity;
    if (s === '-Inf') return -Infinity;
    return Number(s);
  }

  /** Parses Prometheus text (0.0.4) or OpenMetrics samples into [{name, labels, value}]. */
  function parseMetrics(text) {
    const out = [];
    for (const raw of text.split('\n')) {
      const line = raw.trim();
      if (!line || line[0] === '#') continue;
      let i = 0;
      while (i < line.length && /[A-Za-z0-9_:]/.test(line[i])) i++;
      const name = line.slice(0, i);
      const labels = {};
      let ok = name.length > 0;
      if (ok && line[i] === '{') {
        i++;
        while (ok && i < line.length && line[i] !== '}') {
          const eq = line.indexOf('=', i);
          if (eq < 0 || line[eq + 1] !== '"') { ok = false; break; }
          const key = line.slice(i, eq).trim();
          i = eq + 2;
          let value = '';
          while (i < line.length && line[i] !== '"') {
            if (line[i] === '\\' && i + 1 < line.length) {
              const n = line[i + 1];
              value += n === 'n' ? '\n' : n;
              i += 2;
            } else {
              value += line[i++];
            }
          }
          if (line[i] !== '"') { ok = false; break; }
          i++;
          labels[key] = value;
          while (line[i] === ',' || line[i] === ' ') i++;
        }
        if (line[i] !== '}') ok = false;
        i++;
      }
      if (!ok) continue;
      const value = parseValue(line.slice(i).trim().split(/\s+/)[0]);
      if (!Number.isNaN(value)) out.push({ name, labels, value });
    }
    return out;
  }

  // ---------- formatting ----------

  function fmtRate(x) {
    if (x == null || !Number.isFinite(x)) return 'n/a';
    if (x >= 100) return Math.round(x).toLocaleString();
    if (x >= 10) return x.toFixed(1);
    return x.toFixed(2);
  }

  function fmtBytes(b) {
    if (b == null || !Number.isFinite(b)) return 'n/a';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
    return `${b.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
  }

  function fmtDuration(seconds) {
    if (seconds == null || !Number.isFinite(seconds) || seconds < 0) return 'n/a';
    const s = Math.floor(seconds);
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    if (d > 0) return `${d}d ${h}h`;
    if (h > 0) return `${h}h ${m}m`;
    if (m > 0) return `${m}m ${s % 60}s`;
    return `${s}s`;
  }

  /** Accepts RFC 3339 strings, Unix milliseconds or Unix seconds; returns a Date or null. */
  function toDate(v) {
    if (v == null || v === '') return null;
    if (typeof v === 'number') return new Date(v > 1e12 ? v : v * 1000);
    const d = new Date(v);
    return Number.isNaN(d.getTime()) ? null : d;
  }

  function ago(date) {
    if (!date) return 'n/a';
    // A time ahead of this browser's clock is clock skew between machines, not the future.
    const seconds = Math.max(0, (Date.now() - date.getTime()) / 1000);
    return seconds < 1 ? 'just now' : `${fmtDuration(seconds)} ago`;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null) continue;
      if (k === 'class') node.className = v;
      else if (k === 'data') for (const [dk, dv] of Object.entries(v)) node.dataset[dk] = dv;
      else node.setAttribute(k, v);
    }
    for (const c of children) {
      if (c == null) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function badge(state) {
    const s = String(state || 'unknown').toLowerCase();
    return el('span', { class: `badge ${s}` }, s);
  }

  function showNa(section, na) {
    $(`${section}-na`).hidden = !na;
  }

  // ---------- state kept between refreshes ----------

  const state = {
    prevCounters: null, // { t: ms, values: Map<seriesKey, value> }
    spark: [],
    refreshes: 0,
  };

  function seriesKey(s) {
    const labels = Object.keys(s.labels).sort().map((k) => `${k}=${s.labels[k]}`).join(',');
    return `${s.name}{${labels}}`;
  }

  /** Per-second rates of every counter sample since the previous scrape (null on the first). */
  function counterRates(samples, now) {
    const values = new Map();
    for (const s of samples) if (s.name.endsWith('_total')) values.set(seriesKey(s), s.value);
    const prev = state.prevCounters;
    state.prevCounters = { t: now, values };
    if (!prev || now <= prev.t) return null;
    const dt = (now - prev.t) / 1000;
    const rates = new Map();
    for (const [k, v] of values) {
      const before = prev.values.has(k) ? prev.values.get(k) : 0;
      // A counter that went down was reset (the node restarted): count from zero.
      rates.set(k, (v >= before ? v - before : v) / dt);
    }
    return rates;
  }

  // ---------- rendering ----------

  function renderMembers(members, ring) {
    const body = $('members-body');
    if (!members) {
      body.replaceChildren();
      $('members-count').textContent = '';
      $('sum-members').textContent = 'n/a';
      showNa('members', true);
      return;
    }
    showNa('members', false);
    const shares = new Map((ring && Array.isArray(ring.shares) ? ring.shares : []).map((s) => [s.node, s.share]));
    const scale = shareScale(ring);
    const sorted = [...members].sort((a, b) => String(a.name).localeCompare(String(b.name)));
    body.replaceChildren(...sorted.map((m) => {
      const share = shares.get(m.name);
      const roles = Array.isArray(m.roles) && m.roles.length
        ? m.roles.map((r) => el('span', { class: 'role' }, r)) : ['—'];
      const since = toDate(m.since != null ? m.since : m.since_unix_ms);
      return el('tr', { data: { member: m.name }, class: m.local ? 'local' : null },
        el('td', {}, m.name),
        el('td', {}, badge(m.state)),
        el('td', { class: 'mono' }, m.incarnation ?? 'n/a'),
        el('td', {}, share == null ? 'n/a' : `${(share * scale).toFixed(1)} %`),
        el('td', {}, ...roles),
        el('td', { class: 'mono' }, m.quic_addr || m.quic || 'n/a'),
        el('td', { class: 'mono' }, m.gossip_addr || m.gossip || 'n/a'),
        el('td', { class: 'mono' }, m.http_addr || m.http || 'n/a'),
        el('td', { title: since ? since.toISOString() : '' }, ago(since)));
    }));
    const alive = members.filter((m) => String(m.state).toLowerCase() === 'alive').length;
    $('members-count').textContent = `${alive} alive of ${members.length}`;
    $('sum-members').textContent = String(members.length);
    const local = members.find((m) => m.local);
    if (local) $('sum-node').textContent = local.name;
  }

  /** Shares are fractions of the id space (0..1); tolerate percentages too. */
  function shareScale(ring) {
    if (!ring || !Array.isArray(ring.shares)) return 100;
    const total = ring.shares.reduce((a, s) => a + (Number(s.share) || 0), 0);
    return total > 1.5 ? 1 : 100;
  }

  function renderRing(ring) {
    const bars = $('ring-bars');
    if (!ring || !Array.isArray(ring.shares)) {
      bars.replaceChildren();
      $('ring-meta').textContent = '';
      $('sum-epoch').textContent = 'n/a';
      showNa('ring', true);
      return;
    }
    showNa('ring', false);
    const scale = shareScale(ring);
    const max = Math.max(...ring.shares.map((s) => Number(s.share) || 0), 1e-9);
    const sorted = [...ring.shares].sort((a, b) => String(a.node).localeCompare(String(b.node)));
    bars.replaceChildren(...sorted.map((s) => {
      const share = Number(s.share) || 0;
      const fill = el('div', { class: 'bar-fill' });
      fill.style.width = `${(share / max) * 100}%`;
      return el('div', { class: 'bar-row', data: { ringNode: s.node } },
        el('span', { class: 'bar-label', title: s.node }, s.node),
        el('div', { class: 'bar-track' }, fill),
        el('span', { class: 'bar-value' }, `${(share * scale).toFixed(1)} %`));
    }));
    const parts = [`epoch ${ring.epoch ?? 'n/a'}`];
    if (ring.vnodes != null) parts.push(`${ring.vnodes} virtual nodes per member`);
    if (ring.digest != null) parts.push(`digest ${String(ring.digest).slice(0, 16)}`);
    if (typeof ring.settled === 'boolean') parts.push(ring.settled ? 'settled' : 'settling');
    const q = ring.quorum;
    if (q && Array.isArray(q.reachable) && Array.isArray(q.base)) {
      const count = `${q.reachable.length} of ${q.base.length} members reachable`;
      parts.push(q.policy === 'off' ? 'quorum rule off'
        : q.has_quorum ? `quorum (${count})` : `NO QUORUM: serving nothing (${count})`);
    }
    $('ring-meta').textContent = parts.join(' · ');
    $('ring-meta').dataset.quorum = q ? String(q.has_quorum) : '';
    $('sum-epoch').textContent = String(ring.epoch ?? 'n/a');
  }

  function renderActors(actors) {
    const head = $('actors-head');
    const body = $('actors-body');
    if (actors && !Array.isArray(actors)) actors = [actors];
    if (!actors) {
      head.replaceChildren();
      body.replaceChildren();
      $('sum-actors').textContent = 'n/a';
      showNa('actors', true);
      return;
    }
    showNa('actors', false);
    const nodes = actors.map((a) => String(a.node)).sort();
    const kinds = new Set();
    const cell = new Map();
    for (const a of actors) {
      for (const k of Array.isArray(a.kinds) ? a.kinds : []) {
        kinds.add(k.kind);
        cell.set(`${a.node}\u0000${k.kind}`, Number(k.live) || 0);
      }
    }
    const kindList = [...kinds].sort();
    head.replaceChildren(el('tr', {}, el('th', {}, 'Kind'), ...nodes.map((n) => el('th', {}, n)), el('th', {}, 'Total')));
    const colTotals = nodes.map(() => 0);
    let grand = 0;
    const rows = kindList.map((kind) => {
      let rowTotal = 0;
      const cells = nodes.map((n, i) => {
        const v = cell.get(`${n}\u0000${kind}`) || 0;
        rowTotal += v;
        colTotals[i] += v;
        return el('td', { class: v === 0 ? 'zero' : null }, v.toLocaleString());
      });
      grand += rowTotal;
      return el('tr', { data: { kind } }, el('td', {}, kind), ...cells, el('td', {}, rowTotal.toLocaleString()));
    });
    if (kindList.length === 0) {
      rows.push(el('tr', {}, el('td', { colspan: String(nodes.length + 2), class: 'zero' }, 'no live actors')));
    } else {
      rows.push(el('tr', { class: 'total' }, el('td', {}, 'Total'),
        ...colTotals.map((v) => el('td', {}, v.toLocaleString())), el('td', {}, grand.toLocaleString())));
    }
    body.replaceChildren(...rows);
    $('sum-actors').textContent = grand.toLocaleString();
  }

  function renderSpark() {
    const svg = $('rates-spark');
    const pts = state.spark;
    if (pts.length < 2) { svg.replaceChildren(); return; }
    const max = Math.max(...pts, 1);
    const step = 300 / (SPARK_POINTS - 1);
    const x0 = 300 - (pts.length - 1) * step;
    const coords = pts.map((v, i) => `${(x0 + i * step).toFixed(1)},${(46 - (v / max) * 42).toFixed(1)}`);
    const ns = 'http://www.w3.org/2000/svg';
    const area = document.createElementNS(ns, 'polygon');
    area.setAttribute('points', `${x0.toFixed(1)},48 ${coords.join(' ')} 300,48`);
    const line = document.createElementNS(ns, 'polyline');
    line.setAttribute('points', coords.join(' '));
    svg.replaceChildren(area, line);
  }

  function renderMetrics(samples, now) {
    const body = $('rates-body');
    const nodeFields = ['node-rss', 'node-uptime', 'node-cpu', 'node-members', 'node-gossip-ok',
      'node-gossip-rej', 'node-pubsub', 'node-version'];
    if (!samples) {
      state.prevCounters = null;
      body.replaceChildren();
      $('rates-total').textContent = 'n/a';
      for (const id of nodeFields) $(id).textContent = 'n/a';
      showNa('rates', true);
      return;
    }
    showNa('rates', false);
    const rates = counterRates(samples, now);
    const rateOf = (s) => (rates ? rates.get(seriesKey(s)) : null);
    const byKind = new Map();
    let totalReceived = rates ? 0 : null;
    for (const s of samples) {
      const col = Object.keys(RATE_FAMILIES).find((c) => RATE_FAMILIES[c] === s.name);
      if (!col) continue;
      const kind = s.labels.kind || 'other';
      if (!byKind.has(kind)) byKind.set(kind, { received: null, sent: null, forwarded: null, dropped: null });
      const r = rateOf(s);
      if (r == null) continue;
      const row = byKind.get(kind);
      row[col] = (row[col] || 0) + r;
      if (col === 'received') totalReceived += r;
    }
    const kinds = [...byKind.keys()].sort();
    body.replaceChildren(...(kinds.length ? kinds.map((k) => {
      const r = byKind.get(k);
      const td = (v) => el('td', { class: !v ? 'zero' : null }, fmtRate(v));
      return el('tr', { data: { kind: k } }, el('td', {}, k), td(r.received), td(r.sent), td(r.forwarded), td(r.dropped));
    }) : [el('tr', {}, el('td', { colspan: '5', class: 'zero' }, 'no messages yet'))]));
    if (totalReceived != null) {
      state.spark.push(totalReceived);
      if (state.spark.length > SPARK_POINTS) state.spark.shift();
    }
    $('rates-total').textContent = fmtRate(totalReceived);
    renderSpark();

    const one = (name) => samples.find((s) => s.name === name);
    const rss = one('process_resident_memory_bytes');
    $('node-rss').textContent = rss ? fmtBytes(rss.value) : 'n/a';
    const start = one('process_start_time_seconds');
    $('node-uptime').textContent = start ? fmtDuration(Date.now() / 1000 - start.value) : 'n/a';
    const cpu = one('process_cpu_seconds_total');
    const cpuRate = cpu ? rateOf(cpu) : null;
    $('node-cpu').textContent = cpuRate == null ? 'n/a' : `${(cpuRate * 100).toFixed(1)} %`;
    const size = one('cortex_membership_size');
    $('node-members').textContent = size ? String(size.value) : 'n/a';
    const gossipOk = one('cortex_gossip_datagrams_accepted_total');
    $('node-gossip-ok').textContent = gossipOk ? fmtRate(rateOf(gossipOk)) : 'n/a';
    const rejected = samples.filter((s) => s.name === 'cortex_gossip_datagrams_rejected_total');
    const rejTotal = rejected.reduce((a, s) => a + s.value, 0);
    const rejEl = $('node-gossip-rej');
    rejEl.textContent = rejTotal.toLocaleString();
    rejEl.title = rejected.filter((s) => s.value > 0).map((s) => `${s.labels.reason}: ${s.value}`).join('\n');
    const pubsub = one('cortex_pubsub_delivered_total');
    $('node-pubsub').textContent = pubsub ? fmtRate(rateOf(pubsub)) : 'n/a';
    const build = one('cortex_build_info');
    $('node-version').textContent = build && build.labels.version ? build.labels.version : 'n/a';
    const anyNode = samples.find((s) => s.labels.node);
    if (anyNode && $('sum-node').textContent === 'n/a') $('sum-node').textContent = anyNode.labels.node;
  }

  function renderEvents(events) {
    const list = $('events-list');
    if (!Array.isArray(events)) {
      list.replaceChildren();
      showNa('events', true);
      return;
    }
    showNa('events', false);
    const sorted = events
      .map((e) => ({ ...e, date: toDate(e.at) }))
      .sort((a, b) => (b.date ? b.date.getTime() : 0) - (a.date ? a.date.getTime() : 0))
      .slice(0, MAX_EVENTS);
    if (sorted.length === 0) {
      list.replaceChildren(el('li', { class: 'zero' }, 'no events yet'));
      return;
    }
    const eventClass = { joined: 'alive', suspect: 'suspect', down: 'down', left: 'left' };
    list.replaceChildren(...sorted.map((e) => {
      const ev = String(e.event || 'unknown').toLowerCase();
      const b = el('span', { class: `badge ${eventClass[ev] || ''}` }, ev);
      return el('li', {},
        el('time', { datetime: e.date ? e.date.toISOString() : '', title: e.date ? e.date.toISOString() : '' },
          e.date ? e.date.toLocaleTimeString() : 'n/a'),
        el('span', {}, e.node ?? 'n/a'), b);
    }));
  }

  function renderStatus(errors, notFound, total) {
    const banner = $('banner');
    const status = $('status');
    if (errors.length) {
      $('banner-list').replaceChildren(...errors.map((e) => el('li', {}, e)));
      banner.hidden = false;
    } else {
      banner.hidden = true;
    }
    const failed = errors.length + notFound;
    let s = 'ok';
    let text = 'live';
    if (errors.length === total) { s = 'error'; text = 'unreachable'; }
    else if (errors.length) { s = 'partial'; text = `${errors.length} of ${total} failing`; }
    else if (failed) { s = 'partial'; text = `live, ${notFound} endpoint${notFound > 1 ? 's' : ''} n/a`; }
    status.dataset.state = s;
    $('status-text').textContent = text;
    $('sum-updated').textContent = new Date().toLocaleTimeString();
  }

  // ---------- the loop ----------

  async function refresh() {
    const sources = {
      members: () => getJson('/cluster/members'),
      ring: () => getJson('/cluster/ring'),
      actors: () => getJson('/cluster/actors'),
      events: () => getJson('/cluster/events'),
      metrics: () => getText('/metrics', 'text/plain;version=0.0.4'),
    };
    const names = Object.keys(sources);
    const settled = await Promise.allSettled(names.map((n) => sources[n]()));
    const now = performance.now();
    const data = {};
    const errors = [];
    let notFound = 0;
    settled.forEach((r, i) => {
      if (r.status === 'fulfilled') data[names[i]] = r.value;
      else if (r.reason instanceof NotFound) notFound++;
      else errors.push(String(r.reason && r.reason.message ? r.reason.message : r.reason));
    });
    const render = (label, fn) => {
      try { fn(); } catch (e) { errors.push(`${label}: unexpected data (${e.message})`); }
    };
    render('/cluster/members', () => renderMembers(data.members && Array.isArray(data.members) ? data.members : null, data.ring));
    render('/cluster/ring', () => renderRing(data.ring));
    render('/cluster/actors', () => renderActors(data.actors));
    render('/cluster/events', () => renderEvents(data.events));
    render('/metrics', () => renderMetrics(data.metrics != null ? parseMetrics(data.metrics) : null, now));
    renderStatus(errors, notFound, names.length);
    state.refreshes++;
    document.body.dataset.refreshes = String(state.refreshes);
  }

  async function loop() {
    try {
      if (!document.hidden || state.refreshes === 0) await refresh();
    } catch (e) {
      renderStatus([`dashboard error: ${e.message || e}`], 0, 1);
    } finally {
      setTimeout(loop, REFRESH_MS);
    }
  }

  // Exposed for tests and the browser console.
  window.cortexDashboard = { parseMetrics, refresh };

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', loop);
  else loop();
})();
