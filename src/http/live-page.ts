import { createHash } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { sql } from 'drizzle-orm'
import type { Database } from '../db/client.js'
import { rowsOf } from '../db/rows.js'
import { isUuid } from '../db/uuid.js'

// GET /live/<streamId>: a self-contained watch page (inline CSS and JS, no
// external resources, no build step). It follows liveGifts over SSE — fetch()
// POSTing JSON with `Accept: text/event-stream`, read with a ReadableStream
// reader — and refetches the top gifters after events. See docs/LIVE.md.

export const LIVE_PAGE_PREFIX = '/live/'

/** Limits of the page, in the browser. */
export const LIVE_PAGE_LIMITS = {
  rowsMax: 200,
  topGiftersRefreshMs: 500,
  reconnectMinMs: 500,
  reconnectMaxMs: 10_000,
  /** Yoga sends a keep-alive comment every 12 s: a stream silent for longer than this is dead. */
  silenceMaxMs: 30_000,
} as const

const STYLE = `
:root { color-scheme: light dark; font: 15px/1.4 system-ui, sans-serif; }
body { margin: 0; display: grid; grid-template-columns: 1fr 18rem; gap: 1rem; padding: 1rem; height: 100vh; box-sizing: border-box; }
h1 { font-size: 1.1rem; margin: 0 0 .5rem; }
h2 { font-size: 1rem; margin: 0 0 .5rem; }
#status { font-size: .85rem; opacity: .75; margin-bottom: .5rem; }
#feed-box { display: flex; flex-direction: column; min-height: 0; }
#feed { list-style: none; margin: 0; padding: 0; overflow-y: auto; flex: 1; }
#feed li { padding: .3rem .5rem; border-bottom: 1px solid #8884; display: flex; gap: .5rem; }
#feed .seq { opacity: .5; min-width: 3ch; text-align: right; }
#feed .sender { font-weight: 600; }
#feed .combo { margin-left: auto; color: #d33; font-weight: 600; }
#top { margin: 0; padding-left: 1.5rem; }
#top li { padding: .2rem 0; }
#top .coins { float: right; opacity: .8; }
`

// Plain ES2020, no template literals: the page's only script.
const SCRIPT = `
(function () {
  'use strict';
  var body = document.body;
  var streamId = body.getAttribute('data-stream-id');
  var lastSequence = Number(body.getAttribute('data-after-sequence'));
  var ROWS_MAX = ${LIVE_PAGE_LIMITS.rowsMax};
  var TOP_REFRESH_MS = ${LIVE_PAGE_LIMITS.topGiftersRefreshMs};
  var RETRY_MIN_MS = ${LIVE_PAGE_LIMITS.reconnectMinMs};
  var RETRY_MAX_MS = ${LIVE_PAGE_LIMITS.reconnectMaxMs};
  var SILENCE_MAX_MS = ${LIVE_PAGE_LIMITS.silenceMaxMs};
  var FEED = 'subscription LiveGifts($streamId: ID!, $afterSequence: Int) {' +
    ' liveGifts(streamId: $streamId, afterSequence: $afterSequence) {' +
    ' id sequence sender { handle } gift { name } quantity combo } }';
  var TOP = 'query TopGifters($id: ID!) { liveStream(id: $id) {' +
    ' status topGifters(first: 10) { rank coins user { handle } } } }';
  var feed = document.getElementById('feed');
  var top = document.getElementById('top');
  var statusText = document.getElementById('status');
  var failures = 0;
  var finished = false;
  var current = null; // the AbortController of the open connection
  var retryTimer = null;
  var lastActivity = Date.now();

  function setState(state, text) {
    body.setAttribute('data-state', state);
    statusText.textContent = text;
  }

  function cell(tag, className, text) {
    var el = document.createElement(tag);
    el.className = className;
    el.textContent = text;
    return el;
  }

  function show(event) {
    if (event.sequence <= lastSequence) return;
    lastSequence = event.sequence;
    var row = document.createElement('li');
    row.setAttribute('data-sequence', String(event.sequence));
    row.setAttribute('data-received-at', String(Date.now()));
    row.appendChild(cell('span', 'seq', '#' + event.sequence));
    row.appendChild(cell('span', 'sender', event.sender.handle));
    row.appendChild(cell('span', 'gift', event.gift.name));
    row.appendChild(cell('span', 'quantity', '\\u00d7' + event.quantity));
    row.appendChild(cell('span', 'combo', 'combo \\u00d7' + event.combo));
    var atBottom = feed.scrollTop + feed.clientHeight >= feed.scrollHeight - 4;
    feed.appendChild(row);
    while (feed.children.length > ROWS_MAX) feed.removeChild(feed.firstElementChild);
    if (atBottom) feed.scrollTop = feed.scrollHeight;
    scheduleTop();
  }

  // Top gifters: at most one refetch every TOP_REFRESH_MS, the last one after the last event.
  var topTimer = null;
  var topLastAt = 0;
  function scheduleTop() {
    if (topTimer !== null) return;
    var wait = Math.max(0, topLastAt + TOP_REFRESH_MS - Date.now());
    topTimer = setTimeout(function () {
      topTimer = null;
      topLastAt = Date.now();
      refreshTop();
    }, wait);
  }

  function refreshTop() {
    return fetch('/graphql', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ query: TOP, variables: { id: streamId } })
    }).then(function (response) { return response.json(); }).then(function (result) {
      var stream = result && result.data && result.data.liveStream;
      if (!stream) return;
      var rows = [];
      stream.topGifters.forEach(function (g) {
        var li = document.createElement('li');
        li.setAttribute('data-rank', String(g.rank));
        li.appendChild(cell('span', 'handle', g.user.handle));
        li.appendChild(cell('span', 'coins', String(g.coins)));
        rows.push(li);
      });
      top.replaceChildren.apply(top, rows);
      top.setAttribute('data-refreshed-at', String(Date.now()));
    }).catch(function () { /* the next event refetches */ });
  }

  function retry(reason) {
    if (finished) return;
    failures++;
    var base = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * Math.pow(2, failures - 1));
    var wait = Math.round(base / 2 + Math.random() * base / 2);
    setState('reconnecting', reason + '; reconnecting in ' + (wait / 1000).toFixed(1) + ' s');
    retryTimer = setTimeout(connect, wait);
  }

  // The network went away (or the stream went silent): drop the connection and
  // resume with afterSequence; back online, reconnect at once.
  window.addEventListener('offline', function () { if (current) current.abort(); });
  window.addEventListener('online', function () {
    if (retryTimer === null || finished) return;
    clearTimeout(retryTimer);
    failures = 0;
    connect();
  });
  setInterval(function () {
    if (current && Date.now() - lastActivity > SILENCE_MAX_MS) current.abort();
  }, 5000);

  function handleMessage(message) {
    var kind = '';
    var data = [];
    message.split('\\n').forEach(function (line) {
      if (line.indexOf('event:') === 0) kind = line.slice(6).trim();
      else if (line.indexOf('data:') === 0) data.push(line.slice(5).replace(/^ /, ''));
    });
    if (kind === 'complete') {
      finished = true;
      setState('ended', 'The stream has ended.');
      return;
    }
    if (kind !== 'next' || data.length === 0) return;
    var result = JSON.parse(data.join('\\n'));
    if (result.errors && result.errors.length > 0) {
      var code = result.errors[0].extensions && result.errors[0].extensions.code;
      if (code === 'STREAM_NOT_FOUND' || code === 'INVALID_INPUT') {
        finished = true;
        setState('error', 'This stream cannot be watched (' + code + ').');
      } else {
        throw new Error(code || 'error');
      }
      return;
    }
    if (result.data && result.data.liveGifts) show(result.data.liveGifts);
  }

  function connect() {
    retryTimer = null;
    setState('connecting', 'Connecting\\u2026');
    var variables = { streamId: streamId, afterSequence: lastSequence };
    var controller = new AbortController();
    current = controller;
    lastActivity = Date.now();
    fetch('/graphql', {
      signal: controller.signal,
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
      body: JSON.stringify({ query: FEED, variables: variables }),
      cache: 'no-store'
    }).then(function (response) {
      var type = response.headers.get('content-type') || '';
      if (!response.ok || type.indexOf('text/event-stream') !== 0 || !response.body) {
        throw new Error('HTTP ' + response.status);
      }
      failures = 0;
      setState('live', 'Live');
      var reader = response.body.getReader();
      var decoder = new TextDecoder();
      var buffer = '';
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) return;
          lastActivity = Date.now();
          buffer += decoder.decode(chunk.value, { stream: true }).replace(/\\r\\n/g, '\\n');
          var end = buffer.indexOf('\\n\\n');
          while (end >= 0) {
            var message = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            handleMessage(message);
            if (finished) { reader.cancel(); return; }
            end = buffer.indexOf('\\n\\n');
          }
          return pump();
        });
      }
      return pump();
    }).then(function () {
      current = null;
      if (!finished) retry('Disconnected');
    }, function (error) {
      current = null;
      retry('Connection lost (' + (error && error.name === 'AbortError' ? 'offline' : (error && error.message) || 'error') + ')');
    });
  }

  refreshTop();
  connect();
})();
`

const sha256 = (text: string) => `'sha256-${createHash('sha256').update(text).digest('base64')}'`

/** Only the page's own script and style run; it connects only to its own origin. */
export const LIVE_PAGE_CSP = [
  "default-src 'none'",
  `script-src ${sha256(SCRIPT)}`,
  `style-src ${sha256(STYLE)}`,
  "connect-src 'self'",
  "img-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ')

function escapeHtml(text: string): string {
  return text.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string,
  )
}

function renderPage(streamId: string, afterSequence: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Live gifts</title>
<style>${STYLE}</style>
</head>
<body data-stream-id="${escapeHtml(streamId)}" data-after-sequence="${escapeHtml(afterSequence)}" data-state="connecting">
<section id="feed-box">
<h1>Live gifts</h1>
<div id="status" role="status">Connecting…</div>
<ol id="feed" aria-live="polite"></ol>
</section>
<aside>
<h2>Top gifters</h2>
<ol id="top"></ol>
</aside>
<script>${SCRIPT}</script>
</body>
</html>
`
}

/**
 * Serves the watch page of stream `id`; false when there is no such stream
 * (a malformed id included): the caller answers 404. The page starts from the
 * stream's last sequence at load time, so no gift is missed between the page
 * load and its subscription.
 */
export async function serveLivePage(
  req: IncomingMessage,
  res: ServerResponse,
  id: string,
  database: Database,
): Promise<boolean> {
  if (!isUuid(id)) return false
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('allow', 'GET, HEAD')
    res.writeHead(405, { 'content-type': 'application/json; charset=utf-8' })
    res.end(JSON.stringify({ error: 'method not allowed' }))
    return true
  }
  const rows = rowsOf<{ last: string }>(
    await database.db.execute(
      sql`select last_sequence::text as last from live_streams where id = ${id.toLowerCase()}`,
    ),
  )
  const stream = rows[0]
  if (!stream) return false
  const html = renderPage(id.toLowerCase(), String(stream.last))
  res.writeHead(200, {
    'content-type': 'text/html; charset=utf-8',
    'content-length': Buffer.byteLength(html),
    'content-security-policy': LIVE_PAGE_CSP,
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
    'cache-control': 'no-store',
  })
  res.end(req.method === 'HEAD' ? undefined : html)
  return true
}
