// caching-proxy status page: reads GET /status once a second and draws it.
//
// With admin.token set, /status answers 401 until the token is given: the page then shows a
// prompt. The token lives in the variable below only (never in storage or a cookie) and is
// sent as "Authorization: Bearer"; reloading the page forgets it. Every value from the
// server is written with textContent, never as HTML (URLs come from clients).
'use strict';

(() => {
  const REFRESH_MS = 1000;
  let token = null;
  let timer = null;
  let pristine = null; // the dashboard before any data, restored when access is lost
  let lastChart = null; // redrawn when the window is resized

  const $ = (id) => document.getElementById(id);
  const DASH = '–';
  const X_CACHE_ORDER = ['HIT', 'MISS', 'EXPIRED', 'STALE', 'REVALIDATED', 'BYPASS'];
  const ERROR_ORDER = ['connect', 'timeout', 'reset', '5xx'];
  // Known keys in a meaningful order, then any others.
  const ordered = (obj, order) =>
    order.filter((k) => k in obj).concat(Object.keys(obj).filter((k) => !order.includes(k)));

  // --- formatting -------------------------------------------------------------------------
  const fmt = {
    int(n) {
      return n == null ? DASH : Math.round(n).toLocaleString('en-US');
    },
    rate(x) {
      if (x == null) return DASH;
      if (x >= 10000) return (x / 1000).toFixed(1) + 'k';
      if (x >= 100) return x.toFixed(0);
      if (x >= 10) return x.toFixed(1);
      return x.toFixed(2);
    },
    pct(r) {
      return r == null ? DASH : (r * 100).toFixed(1) + ' %';
    },
    bytes(b) {
      if (b == null) return DASH;
      const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
      let i = 0;
      while (b >= 1024 && i < units.length - 1) {
        b /= 1024;
        i += 1;
      }
      return (i === 0 ? b.toFixed(0) : b.toFixed(1)) + ' ' + units[i];
    },
    ms(x) {
      if (x == null) return DASH;
      if (x >= 1000) return (x / 1000).toFixed(2) + ' s';
      if (x >= 100) return x.toFixed(0) + ' ms';
      if (x >= 10) return x.toFixed(1) + ' ms';
      return x.toFixed(2) + ' ms';
    },
    duration(s) {
      const d = Math.floor(s / 86400);
      const h = Math.floor((s % 86400) / 3600);
      const m = Math.floor((s % 3600) / 60);
      const sec = s % 60;
      if (d > 0) return d + 'd ' + h + 'h';
      if (h > 0) return h + 'h ' + m + 'm';
      if (m > 0) return m + 'm ' + sec + 's';
      return sec + 's';
    },
  };

  const set = (id, text) => {
    const el = $(id);
    if (el) el.textContent = text;
  };

  const cell = (tag, text, cls) => {
    const el = document.createElement(tag);
    el.textContent = text;
    if (cls) el.className = cls;
    return el;
  };

  const row = (cells) => {
    const tr = document.createElement('tr');
    cells.forEach((c) => tr.appendChild(c));
    return tr;
  };

  // --- fetching ---------------------------------------------------------------------------
  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(poll, REFRESH_MS);
  }

  async function poll() {
    clearTimeout(timer);
    const headers = token === null ? {} : { Authorization: 'Bearer ' + token };
    let res;
    try {
      res = await fetch('/status', { headers, cache: 'no-store' });
    } catch (e) {
      offline('the admin service does not answer');
      schedule();
      return;
    }
    if (res.status === 401) {
      askForToken(token !== null);
      return;
    }
    if (!res.ok) {
      offline('GET /status answered ' + res.status);
      schedule();
      return;
    }
    let status;
    try {
      status = await res.json();
    } catch (e) {
      offline('GET /status sent something that is not JSON');
      schedule();
      return;
    }
    $('offline').hidden = true;
    $('login').hidden = true;
    $('dashboard').hidden = false;
    render(status);
    schedule();
  }

  function offline(why) {
    const el = $('offline');
    el.textContent = 'Not updating: ' + why + '. Retrying every second.';
    el.hidden = false;
    const state = $('state');
    state.textContent = 'offline';
    state.className = 'badge offline';
  }

  function askForToken(wrong) {
    token = null;
    lastChart = null;
    // No figures may stay on the page without the token.
    $('dashboard').innerHTML = pristine;
    $('dashboard').hidden = true;
    $('login').hidden = false;
    $('login-error').hidden = !wrong;
    $('state').textContent = 'locked';
    $('state').className = 'badge';
    $('token').focus();
  }

  // --- drawing ----------------------------------------------------------------------------
  function render(s) {
    const inst = s.instance;
    set('version', 'v' + inst.version + (inst.git_sha ? ' (' + inst.git_sha.slice(0, 8) + ')' : ''));
    const state = $('state');
    state.textContent = inst.state;
    state.className = 'badge ' + inst.state;
    set('uptime', fmt.duration(inst.uptime_s));
    set('pid', String(inst.pid));
    set('listen', inst.listen);
    set('admin', inst.admin);
    set('updated', 'updated ' + new Date().toLocaleTimeString('en-GB'));
    document.title = 'caching-proxy ' + inst.state + ' · ' + fmt.pct(s.hit_ratio['1m']) + ' hits';

    for (const w of ['1s', '1m', '15m']) {
      set('req-' + w, fmt.rate(s.requests.per_s[w]));
      set('hit-' + w, fmt.pct(s.hit_ratio[w]));
      set('origin-' + w, fmt.rate(s.origin.requests.per_s[w]));
    }
    set('req-total', fmt.int(s.requests.total));
    set('origin-total', fmt.int(s.origin.requests.total));
    lastChart = s.chart;
    drawChart(s.chart);
    renderCache(s.cache);
    renderOrigin(s.origin, s.windows_s['1m']);
    renderTop(s.top_urls, s.windows_s['1m']);
    renderUpstreams(s.upstreams);
    renderRedis(s.redis);
    $('dashboard').classList.toggle('no-side', !s.upstreams && !s.redis);
    renderConfig(inst.config);
  }

  function meter(prefix, value, max, format) {
    $(prefix + '-meter').hidden = !(max > 0);
    set(prefix, format(value));
    set('max-' + prefix, format(max));
    const share = max > 0 ? Math.min(1, value / max) : 0;
    const bar = $(prefix + '-bar');
    bar.style.width = (share * 100).toFixed(1) + '%';
    bar.className = share > 0.9 ? 'fill high' : 'fill';
  }

  function renderCache(c) {
    meter('entries', c.entries, c.max_entries, fmt.int);
    meter('bytes', c.bytes, c.max_bytes, fmt.bytes);
    const counters = $('cache-counters');
    counters.replaceChildren(
      ...[
        ['evictions', c.evictions],
        ['expirations', c.expirations],
        ['stale serves', c.x_cache.STALE],
        ['coalesced waits', c.coalesced_waits],
      ].map(([name, k]) => row([cell('th', name), cell('td', fmt.int(k.total)), cell('td', fmt.rate(k.per_s['1m']))])),
    );
    const statuses = ordered(c.x_cache, X_CACHE_ORDER);
    const all = statuses.reduce((n, k) => n + c.x_cache[k].total, 0);
    $('x-cache').replaceChildren(
      ...statuses.map((k) => {
        const v = c.x_cache[k];
        return row([
          cell('th', k),
          cell('td', fmt.int(v.total)),
          cell('td', fmt.rate(v.per_s['1m'])),
          cell('td', all > 0 ? fmt.pct(v.total / all) : DASH),
        ]);
      }),
    );
  }

  function renderOrigin(o, minuteSpan) {
    set('p50', fmt.ms(o.latency.p50_ms));
    set('p99', fmt.ms(o.latency.p99_ms));
    set('latency-count', fmt.int(o.latency.responses));
    $('origin-errors').replaceChildren(
      ...ordered(o.errors, ERROR_ORDER).map((kind) => {
        const e = o.errors[kind];
        // Errors in the last minute (or since start, when younger).
        const lastMin = e.per_s['1m'] == null ? null : e.per_s['1m'] * minuteSpan;
        return row([
          cell('th', kind),
          cell('td', fmt.int(e.total), e.total > 0 ? 'bad' : ''),
          cell('td', fmt.int(lastMin), lastMin > 0 ? 'bad' : ''),
        ]);
      }),
    );
  }

  // `minute`: what the last minute spans (less while the process is younger).
  function renderTop(t, minute) {
    const body = $('top-urls');
    if (t.urls.length === 0) {
      body.replaceChildren(row([cell('td', ''), cell('td', 'no requests in the last minute', 'url dim'), cell('td', ''), cell('td', ''), cell('td', '')]));
    } else {
      body.replaceChildren(
        ...t.urls.map((u, i) => {
          const url = cell('td', u.url, 'url');
          url.title = u.url;
          return row([
            cell('td', String(i + 1), 'rank'),
            url,
            cell('td', fmt.int(u.requests)),
            cell('td', fmt.rate(u.requests / Math.max(1, Math.min(t.window_s, minute)))),
            cell('td', fmt.pct(u.hit_ratio)),
          ]);
        }),
      );
    }
    set('top-note', 'Counted in 10 s slices over the last ' + t.window_s + ' s, in ' + fmt.int(t.tracked) +
      ' counters of at most ' + fmt.int(t.bound) + ': counts of rare URLs are estimates.');
  }

  function renderUpstreams(groups) {
    $('upstreams').hidden = !groups;
    if (!groups) return;
    $('upstream-groups').replaceChildren(
      ...groups.map((g) => {
        const box = cell('div', '', 'group');
        const head = cell('div', '', 'group-head');
        head.appendChild(cell('span', g.name + ' '));
        head.firstChild.appendChild(cell('span', g.selection + (g.health_check ? ', checked' : ', no health check'), 'dim small'));
        head.appendChild(cell('span', g.healthy + '/' + g.servers.length + ' healthy', g.healthy < g.servers.length ? 'error' : ''));
        box.appendChild(head);
        for (const sv of g.servers) {
          const line = cell('div', '', 'server');
          line.appendChild(cell('span', '', sv.healthy ? 'dot' : 'dot down'));
          const addr = cell('span', sv.server + (sv.host && sv.host !== sv.server.split(':')[0] ? ' (' + sv.host + ')' : ''), 'addr');
          addr.title = sv.last_check_error || (sv.last_check ? 'last check ' + sv.last_check : '');
          line.appendChild(addr);
          line.appendChild(cell('span', 'w' + sv.weight, 'dim'));
          line.appendChild(cell('span', sv.healthy ? 'up' : 'down', sv.healthy ? '' : 'error'));
          box.appendChild(line);
        }
        return box;
      }),
    );
  }

  function renderRedis(r) {
    $('redis').hidden = !r;
    if (!r) return;
    const state = $('redis-state');
    state.textContent = r.up ? 'up' : 'down';
    state.className = 'badge ' + (r.up ? 'up' : 'down');
    $('redis-figures').replaceChildren(
      row([cell('th', 'circuit'), cell('td', r.circuit, r.circuit === 'open' ? 'bad' : '')]),
      ...['hits', 'misses', 'writes', 'errors'].map((k) =>
        row([cell('th', k), cell('td', fmt.int(r[k]), k === 'errors' && r[k] > 0 ? 'bad' : '')]),
      ),
    );
    set('redis-nodes', r.nodes.join(', '));
  }

  function flatten(value, prefix, out) {
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
      for (const k of Object.keys(value)) flatten(value[k], prefix ? prefix + '.' + k : k, out);
    } else {
      out.push([prefix, Array.isArray(value) ? value.join(', ') : String(value)]);
    }
    return out;
  }

  function renderConfig(config) {
    $('config').replaceChildren(
      ...flatten(config, '', []).map(([k, v]) => {
        const kv = cell('div', '', 'kv');
        kv.appendChild(cell('span', k, 'k'));
        kv.appendChild(cell('span', v, 'v'));
        return kv;
      }),
    );
  }

  // A nice axis maximum: 1, 2 or 5 times a power of ten.
  function niceMax(x) {
    if (!(x > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(x)));
    for (const m of [1, 2, 5, 10]) if (m * p >= x) return m * p;
    return 10 * p;
  }

  function drawChart(chart) {
    const canvas = $('chart');
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (w === 0 || h === 0) return;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const g = canvas.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const css = getComputedStyle(document.documentElement);
    const color = (name) => css.getPropertyValue(name).trim();
    const pad = { l: 44, r: 40, t: 6, b: 18 };
    const pw = w - pad.l - pad.r;
    const ph = h - pad.t - pad.b;
    const points = 300;
    const req = chart.requests_per_s;
    const origin = chart.origin_per_s;
    const hits = chart.hit_ratio;
    const max = niceMax(Math.max(0, ...req.map((v) => v || 0), ...origin.map((v) => v || 0)));
    const x = (i, n) => pad.l + pw - ((n - 1 - i) / (points - 1)) * pw;
    const yRate = (v) => pad.t + ph - (v / max) * ph;
    const yRatio = (v) => pad.t + ph - v * ph;

    g.font = '11px system-ui, "DejaVu Sans", sans-serif';
    g.lineWidth = 1;
    g.strokeStyle = '#e5e7eb';
    g.fillStyle = color('--dim');
    g.textBaseline = 'middle';
    for (let i = 0; i <= 4; i++) {
      const y = pad.t + (ph * i) / 4;
      g.beginPath();
      g.moveTo(pad.l, Math.round(y) + 0.5);
      g.lineTo(pad.l + pw, Math.round(y) + 0.5);
      g.stroke();
      g.textAlign = 'right';
      g.fillText(fmt.rate(max * (1 - i / 4)), pad.l - 6, y);
      g.textAlign = 'left';
      g.fillText((100 - 25 * i) + '%', pad.l + pw + 6, y);
    }
    g.textBaseline = 'top';
    g.textAlign = 'center';
    for (let m = 5; m >= 0; m--) {
      const px = pad.l + pw - (m * 60 / (points - 1)) * pw;
      g.fillText(m === 0 ? 'now' : '-' + m + ' min', Math.min(Math.max(px, pad.l + 14), pad.l + pw - 10), pad.t + ph + 4);
    }

    const n = req.length;
    if (n === 0) return;
    // Requests: a filled area.
    g.beginPath();
    g.moveTo(x(0, n), yRate(0));
    req.forEach((v, i) => g.lineTo(x(i, n), yRate(v || 0)));
    g.lineTo(x(n - 1, n), yRate(0));
    g.closePath();
    g.fillStyle = 'rgba(37, 99, 235, 0.12)';
    g.fill();
    const line = (values, y, stroke, width) => {
      g.beginPath();
      let drawing = false;
      values.forEach((v, i) => {
        if (v == null) {
          drawing = false;
          return;
        }
        if (drawing) g.lineTo(x(i, n), y(v));
        else g.moveTo(x(i, n), y(v));
        drawing = true;
      });
      g.strokeStyle = stroke;
      g.lineWidth = width;
      g.stroke();
    };
    line(req, yRate, color('--req'), 1.5);
    line(origin, yRate, color('--origin'), 1.2);
    line(hits, yRatio, color('--hit'), 1.5);
  }

  // --- start ------------------------------------------------------------------------------
  document.addEventListener('DOMContentLoaded', () => {
    pristine = $('dashboard').innerHTML;
    $('login-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const input = $('token');
      token = input.value;
      input.value = '';
      $('login-error').hidden = true;
      poll();
    });
    window.addEventListener('resize', () => {
      if (lastChart && !$('dashboard').hidden) drawChart(lastChart);
    });
    poll();
  });
})();
