import { once } from 'node:events'
import { connect } from 'node:net'
import { Writable } from 'node:stream'
import { sql } from 'drizzle-orm'
import { type Client, createClient } from 'graphql-ws'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { signToken } from '../src/auth/tokens.js'
import { loadConfig } from '../src/config.js'
import { configuredSecrets, createLogger } from '../src/ops/logger.js'
import { Metrics, OPERATION_NAMES_MAX } from '../src/ops/metrics.js'
import { type FakeStripe, startFakeStripe } from './fakes/stripe.js'
import { type Actor, signIn } from './support/actors.js'
import { startTestApp, TEST_JWT_SECRET, type TestApp } from './support/app.js'
import { CATALOG, CREATE_RECHARGE, GRANT_COINS, SEND_GIFT, START_LIVE } from './support/operations.js'

// Operations: the real server's log lines (captured from its logger) and its
// GET /metrics, after real traffic over HTTP, a signed webhook and WebSocket
// and SSE subscriptions.

const WEBHOOK_SECRET = 'whsec_observability_0123456789abcdef'
const METRICS_TOKEN = 'metrics-token-for-tests-0123456789'
const COOKIE_SECRET = 'session-cookie-value-9f8e7d6c5b4a'
const ME = 'query Me { me { user { id handle } wallet { coins } } }'
const MY_WALLET = 'subscription MyWallet { walletUpdated { coins updatedAt } }'

const lines: string[] = []
const logSink = new Writable({
  write(chunk, _encoding, done) {
    for (const line of String(chunk).split('\n')) if (line.trim() !== '') lines.push(line)
    done()
  },
})
const logEntries = () => lines.map((line) => JSON.parse(line) as Record<string, unknown>)

let fake: FakeStripe
let app: TestApp
let alice: Actor
let creator: Actor
let admin: Actor
const stripeSignatures: string[] = []
let keyN = 0
const key = () => `obs-${++keyN}`
const clients: Client[] = []

beforeAll(async () => {
  fake = await startFakeStripe({ webhookSecret: WEBHOOK_SECRET })
  const env = {
    STRIPE_SECRET_KEY: fake.secretKey,
    STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
    STRIPE_API_BASE: fake.url,
    METRICS_TOKEN,
    RATE_LIMIT_MUTATIONS_PER_SECOND: '10000',
    RATE_LIMIT_MUTATIONS_BURST: '10000',
  }
  // The logger main.ts makes, at the most talkative level, writing where the test reads.
  const secrets = configuredSecrets(loadConfig({ NODE_ENV: 'test', JWT_SECRET: TEST_JWT_SECRET, ...env }))
  app = await startTestApp({ env, logger: createLogger({ level: 'trace', secrets }, logSink) })
  ;[alice, creator, admin] = await Promise.all([
    signIn(app, 'alice'),
    signIn(app, 'creator', ['creator']),
    signIn(app, 'admin', ['admin']),
  ])
}, 60_000)

afterAll(async () => {
  for (const client of clients) await client.dispose()
  await app?.stop()
  await fake?.stop()
})

function wsClient(token: string): Client {
  const client = createClient({
    url: `${app.url.replace('http', 'ws')}/graphql`,
    webSocketImpl: WebSocket,
    connectionParams: { authorization: `Bearer ${token}` },
    retryAttempts: 0,
    lazy: true,
  })
  clients.push(client)
  return client
}

/** Subscribes and resolves once the server has taken the subscription (its first event or a short wait). */
function subscribe(client: Client, query: string) {
  const events: unknown[] = []
  const errors: unknown[] = []
  const unsubscribe = client.subscribe(
    { query },
    { next: (value) => events.push(value), error: (error) => errors.push(error), complete: () => {} },
  )
  return { events, errors, unsubscribe }
}

async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}

async function postGraphql(query: string, headers: Record<string, string>, variables?: unknown) {
  const response = await fetch(`${app.url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json', ...headers },
    body: JSON.stringify({ query, variables }),
  })
  return {
    status: response.status,
    requestId: response.headers.get('x-request-id'),
    body: await response.json(),
  }
}

async function scrape(
  token: string | null = METRICS_TOKEN,
): Promise<{ status: number; text: string; type: string }> {
  const response = await fetch(`${app.url}/metrics`, {
    headers: token === null ? {} : { authorization: `Bearer ${token}` },
  })
  return {
    status: response.status,
    text: await response.text(),
    type: response.headers.get('content-type') ?? '',
  }
}

/** The value of one series of a scrape; 0 when it is absent. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  const wanted = Object.entries(labels)
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!match || match[1] !== name) continue
    const have = new Map([...(match[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]))
    if (wanted.every(([k, v]) => have.get(k) === v)) return Number(match[3])
  }
  return 0
}

/** A recharge through the Stripe fake, paid, with its signed webhook posted to the real route. */
async function rechargeThroughWebhook(who: Actor): Promise<void> {
  const catalog = await who.ok<{ coinPackages: { id: string }[] }>(CATALOG, { currency: 'USD' })
  const { createRecharge } = await who.ok(CREATE_RECHARGE, {
    packageId: catalog.coinPackages[0]?.id,
    provider: 'STRIPE',
    idempotencyKey: key(),
  })
  const { events } = fake.succeed(createRecharge.checkout.providerReference)
  for (const event of events) {
    const signed = fake.sign(event)
    stripeSignatures.push(signed.headers['stripe-signature'] ?? signed.headers['Stripe-Signature'] ?? '')
    const response = await fetch(`${app.url}/webhooks/stripe`, {
      method: 'POST',
      headers: { ...signed.headers, 'x-request-id': `obs-webhook-${event.id}` },
      body: signed.body,
    })
    expect(response.status).toBe(200)
  }
  // And a forged one: refused, and logged as refused.
  const forged = fake.sign(events[0] as (typeof events)[number], { signature: 'forged' })
  stripeSignatures.push(forged.headers['stripe-signature'] ?? '')
  const refused = await fetch(`${app.url}/webhooks/stripe`, {
    method: 'POST',
    headers: forged.headers,
    body: forged.body,
  })
  expect(refused.status).toBe(400)
  await app.services.inbox.idle()
}

describe('structured logs', () => {
  it('logs each request once with its request id, user and operation, and no token or secret anywhere', async () => {
    // A signed-in request with a client's request id and a cookie.
    const me = await postGraphql(ME, {
      authorization: `Bearer ${alice.token}`,
      'x-request-id': 'obs-req-0001',
      cookie: `session=${COOKIE_SECRET}`,
    })
    expect(me.status).toBe(200)
    expect(me.requestId).toBe('obs-req-0001')
    // A malformed request id is replaced, not trusted.
    const other = await postGraphql(ME, {
      authorization: `Bearer ${alice.token}`,
      'x-request-id': 'bad id',
    })
    expect(other.requestId).toMatch(/^[0-9a-f-]{36}$/)
    // A forged token (another key): 401, and its text must not be logged either.
    const forgedToken = await signToken(
      new TextEncoder().encode('another-key-that-is-not-the-server-key'),
      { sub: 'mallory' },
      { expiresIn: '1h' },
    )
    const forged = await postGraphql(ME, {
      authorization: `Bearer ${forgedToken}`,
      'x-request-id': 'obs-req-0002',
    })
    expect(forged.status).toBe(401)

    // A signed webhook (and a forged one).
    await rechargeThroughWebhook(alice)

    // A WebSocket connection with the token in connectionParams, a subscription, then a clean close.
    const ws = wsClient(alice.token)
    const sub = subscribe(ws, MY_WALLET)
    await until(() => logEntries().some((e) => e.msg === 'subscription started'), 'the subscription')
    sub.unsubscribe()
    await ws.dispose()
    // A raw WebSocket with its own request id, echoed on the upgrade's answer and in its close line.
    const raw = new WebSocket(`${app.url.replace('http', 'ws')}/graphql`, 'graphql-transport-ws', {
      headers: { 'x-request-id': 'obs-ws-0001' },
    })
    const upgradeId = new Promise<unknown>((resolve) =>
      raw.once('upgrade', (response) => resolve(response.headers['x-request-id'])),
    )
    await new Promise((resolve) => raw.once('open', resolve))
    raw.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${alice.token}` } }))
    await new Promise((resolve) => raw.once('message', resolve))
    raw.close(1000)
    expect(await upgradeId).toBe('obs-ws-0001')
    // A WebSocket with a forged token: refused (4403).
    const bad = wsClient(forgedToken)
    const refused = subscribe(bad, MY_WALLET)
    await until(() => refused.errors.length > 0, 'the refusal')
    await until(
      () => logEntries().filter((e) => e.msg === 'websocket closed').length >= 3,
      'both connections logged',
    )

    const text = lines.join('\n')
    const secrets = {
      'the bearer token': alice.token,
      'the forged token': forgedToken,
      'the JWT key': TEST_JWT_SECRET,
      'the Stripe secret key': fake.secretKey,
      'the Stripe webhook secret': WEBHOOK_SECRET,
      'the metrics token': METRICS_TOKEN,
      'the cookie': COOKIE_SECRET,
    }
    for (const [what, secret] of Object.entries(secrets)) {
      expect(text.includes(secret), `${what} appears in the logs`).toBe(false)
    }
    expect(stripeSignatures.length).toBeGreaterThan(1)
    for (const signature of stripeSignatures) {
      for (const part of signature.split(',')) {
        if (part.startsWith('v1=')) expect(text.includes(part.slice(3)), 'a webhook signature').toBe(false)
      }
    }
    // No JWT-shaped string at all (a JWT's header always starts with eyJ).
    expect(text).not.toMatch(/eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\./)

    const requests = logEntries().filter((e) => e.msg === 'request')
    const signedIn = requests.filter((e) => e.requestId === 'obs-req-0001')
    expect(signedIn).toHaveLength(1) // once per request
    expect(signedIn[0]).toMatchObject({
      method: 'POST',
      path: '/graphql',
      status: 200,
      userId: alice.userId,
      operation: 'Me',
      operationType: 'query',
    })
    expect(signedIn[0]?.durationMs).toEqual(expect.any(Number))
    expect(requests.find((e) => e.requestId === 'obs-req-0002')).toMatchObject({
      status: 401,
      operation: 'Me',
      errors: ['UNAUTHENTICATED'],
    })
    expect(requests.find((e) => e.requestId === 'obs-req-0002')?.userId).toBeUndefined()
    const webhooks = requests.filter((e) => e.path === '/webhooks/stripe')
    expect(webhooks.filter((e) => e.status === 200).length).toBeGreaterThan(0)
    expect(webhooks.filter((e) => String(e.requestId).startsWith('obs-webhook-')).length).toBeGreaterThan(0)
    expect(webhooks.some((e) => e.status === 400)).toBe(true)
    const closes = logEntries().filter((e) => e.msg === 'websocket closed')
    expect(closes.find((e) => e.userId === alice.userId)).toMatchObject({ accepted: true, code: 1000 })
    expect(closes.find((e) => e.userId === undefined)).toMatchObject({ accepted: false, code: 4403 })
    expect(closes.find((e) => e.requestId === 'obs-ws-0001')).toMatchObject({
      userId: alice.userId,
      accepted: true,
      code: 1000,
    })
    expect(
      logEntries().find((e) => e.msg === 'subscription started' && e.userId === alice.userId),
    ).toMatchObject({ operation: 'MyWallet' })
  }, 60_000)

  it('logs a request its client cut before any answer as a warning, not a server error', async () => {
    // Half a body, then the connection closed: the server never gets to answer.
    const socket = connect(Number(new URL(app.url).port), '127.0.0.1')
    await once(socket, 'connect')
    socket.write(
      'POST /graphql HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n' +
        'x-request-id: obs-cut-0001\r\ncontent-length: 100\r\nexpect: 100-continue\r\n\r\n',
    )
    // "100 Continue": the server has the request and is waiting for its body.
    const [interim] = await once(socket, 'data')
    expect(String(interim)).toMatch(/^HTTP\/1\.1 100 /)
    socket.write('{"query":')
    socket.destroy()
    await until(() => logEntries().some((e) => e.requestId === 'obs-cut-0001'), 'the cut request logged')
    const cut = logEntries().filter((e) => e.requestId === 'obs-cut-0001')
    expect(cut).toHaveLength(1)
    // pino's levels: 40 warn, 50 error.
    expect(cut[0]).toMatchObject({ msg: 'request', level: 40, status: 0, cut: true, completed: false })
  })

  it('redacts secrets wherever a logged object or an error message carries them', () => {
    const captured: string[] = []
    const sink = new Writable({
      write(chunk, _encoding, done) {
        captured.push(String(chunk))
        done()
      },
    })
    const logger = createLogger({ level: 'info', secrets: ['sk_live_abcdefghijklmnop'] }, sink)
    const jwt = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLWJ5dGVz'
    logger.info({ req: { headers: { authorization: `Bearer ${jwt}`, cookie: 'a=b' } } }, 'headers')
    logger.info({ connectionParams: { authorization: 'Bearer opaque-token-123' } }, 'params')
    logger.error({ err: new Error(`upstream said: key sk_live_abcdefghijklmnop, token ${jwt}`) }, 'failed')
    logger.info({ detail: 'Authorization: Basic dXNlcjpwYXNzd29yZHNlY3JldA==' }, 'basic')
    const text = captured.join('')
    for (const secret of [
      jwt,
      'opaque-token-123',
      'sk_live_abcdefghijklmnop',
      'dXNlcjpwYXNzd29yZHNlY3JldA==',
    ]) {
      expect(text).not.toContain(secret)
    }
    expect(text).toContain('upstream said') // the rest of the message is kept
    expect(captured).toHaveLength(4)
  })
})

describe('GET /metrics', () => {
  // First: the inbox reading is reused for a few seconds (DB_READING_MAX_AGE_MS), so scrape it fresh here.
  it('moves requests, errors, latency, gifts, coins by kind, inbox, live and pool series with the traffic', async () => {
    // The inbox as an operator would find it: one event waiting on its backoff, one parked an hour ago.
    await app.database.db.execute(sql`
      insert into webhook_events (provider, event_id, type, payload, status, next_attempt_at, received_at)
      values ('stripe', 'evt_obs_pending', 'payment_intent.succeeded', '{}', 'pending', now() + interval '1 day', now() - interval '10 minutes'),
             ('paypal', 'WH-obs-parked', 'PAYMENT.CAPTURE.COMPLETED', '{}', 'parked', now(), now() - interval '1 hour')`)
    const before = (await scrape()).text
    expect(sample(before, 'giftledger_webhook_inbox_events', { provider: 'stripe', status: 'pending' })).toBe(
      1,
    )
    expect(sample(before, 'giftledger_webhook_inbox_events', { provider: 'paypal', status: 'parked' })).toBe(
      1,
    )
    expect(sample(before, 'giftledger_webhook_inbox_events', { provider: 'paypal', status: 'pending' })).toBe(
      0,
    )
    const parkedAge = sample(before, 'giftledger_webhook_inbox_oldest_age_seconds', {
      provider: 'paypal',
      status: 'parked',
    })
    expect(parkedAge).toBeGreaterThanOrEqual(3_599)
    expect(parkedAge).toBeLessThan(3_700)
    expect(sample(before, 'giftledger_db_pool_max')).toBe(app.database.kind === 'pglite' ? 1 : 10)
    expect(sample(before, 'process_cpu_seconds_total')).toBeGreaterThan(0) // Node's own metrics too

    // Traffic: coins granted, gifts sent to a live stream, a refused gift, a query that fails.
    const catalog = await admin.ok<{ gifts: { id: string; name: string; coinCost: number }[] }>(CATALOG)
    const rose = catalog.gifts.find((g) => g.name === 'Rose') as { id: string; coinCost: number }
    await admin.ok(GRANT_COINS, {
      userId: alice.userId,
      coins: 500,
      reason: 'metrics',
      idempotencyKey: key(),
    })
    const streamId = (await creator.ok(START_LIVE, { title: 'metrics' })).startLiveStream.liveStream.id
    for (const quantity of [1, 2, 3]) {
      const { sendGift } = await alice.ok(SEND_GIFT, {
        giftId: rose.id,
        liveStreamId: streamId,
        quantity,
        idempotencyKey: key(),
      })
      expect(sendGift.userErrors).toEqual([])
    }
    const broken = await postGraphql('query Broken { noSuchField }', {
      authorization: `Bearer ${alice.token}`,
    })
    expect(broken.body.errors?.[0]?.extensions?.code).toBe('GRAPHQL_VALIDATION_FAILED')
    // Live: a WebSocket subscription and an SSE one, open while scraped.
    const ws = wsClient(alice.token)
    const wsSub = subscribe(ws, MY_WALLET)
    const sse = new AbortController()
    const sseResponse = await fetch(`${app.url}/graphql`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'text/event-stream',
        authorization: `Bearer ${creator.token}`,
      },
      body: JSON.stringify({ query: MY_WALLET }),
      signal: sse.signal,
    })
    expect(sseResponse.headers.get('content-type')).toMatch(/^text\/event-stream/)
    await until(async () => {
      const text = (await scrape()).text
      return sample(text, 'giftledger_live_subscriptions', { transport: 'websocket' }) >= 1
    }, 'the WebSocket subscription to count')

    const after = (await scrape()).text
    const delta = (name: string, labels: Record<string, string> = {}) =>
      sample(after, name, labels) - sample(before, name, labels)
    expect(delta('giftledger_gifts_total')).toBe(3)
    expect(delta('giftledger_gift_items_total')).toBe(6)
    expect(delta('giftledger_coins_moved_total', { kind: 'gift' })).toBe(6 * rose.coinCost)
    expect(delta('giftledger_coins_moved_total', { kind: 'grant' })).toBe(500)
    expect(delta('giftledger_ledger_transactions_total', { kind: 'gift' })).toBe(3)
    // Every ledger batch planned on expectations is counted once, held or stale.
    const batches = (text: string) =>
      sample(text, 'giftledger_ledger_batches_total', { expectations: 'held' }) +
      sample(text, 'giftledger_ledger_batches_total', { expectations: 'stale' })
    expect(batches(after) - batches(before)).toBeGreaterThanOrEqual(1)
    // Every gift batch is counted once, by the way it was written: pipelined on
    // PostgreSQL (the accounts were not moved by another writer), usual on PGlite.
    const giftBatches = (way: string) =>
      sample(after, 'giftledger_gift_batches_total', { way }) -
      sample(before, 'giftledger_gift_batches_total', { way })
    expect(giftBatches('pipelined') + giftBatches('usual')).toBeGreaterThanOrEqual(1)
    expect(giftBatches(app.database.kind === 'postgres' ? 'usual' : 'pipelined')).toBe(0)
    // The recharge of the first test, credited through the webhook: coins and money.
    expect(sample(after, 'giftledger_coins_moved_total', { kind: 'recharge' })).toBeGreaterThan(0)
    expect(
      sample(after, 'giftledger_money_moved_minor_total', { kind: 'recharge', currency: 'USD' }),
    ).toBeGreaterThan(0)
    const sendGifts = { operation: 'SendGift', type: 'mutation' }
    expect(delta('giftledger_graphql_operations_total', { ...sendGifts, outcome: 'ok' })).toBe(3)
    expect(delta('giftledger_graphql_operation_duration_seconds_count', sendGifts)).toBe(3)
    expect(delta('giftledger_graphql_operation_duration_seconds_sum', sendGifts)).toBeGreaterThan(0)
    expect(
      delta('giftledger_graphql_operations_total', {
        operation: 'Broken',
        type: 'query',
        outcome: 'error',
      }),
    ).toBe(1)
    expect(
      delta('giftledger_http_requests_total', { route: '/graphql', method: 'POST', status: '200' }),
    ).toBeGreaterThanOrEqual(5)
    expect(
      delta('giftledger_http_request_duration_seconds_count', { route: '/graphql' }),
    ).toBeGreaterThanOrEqual(6)
    expect(sample(after, 'giftledger_websocket_connections')).toBeGreaterThanOrEqual(1)
    expect(sample(after, 'giftledger_live_subscriptions', { transport: 'websocket' })).toBeGreaterThanOrEqual(
      1,
    )
    expect(sample(after, 'giftledger_live_subscriptions', { transport: 'sse' })).toBe(1)
    expect(delta('giftledger_db_transactions_total')).toBeGreaterThanOrEqual(4)
    expect(delta('giftledger_db_statements_total')).toBeGreaterThan(0)
    expect(sample(after, 'giftledger_db_pool_waiting')).toBe(0)

    // The live series fall back when the subscribers leave.
    wsSub.unsubscribe()
    await ws.dispose()
    sse.abort()
    await until(async () => {
      const text = (await scrape()).text
      return (
        sample(text, 'giftledger_websocket_connections') === 0 &&
        sample(text, 'giftledger_live_subscriptions', { transport: 'sse' }) === 0
      )
    }, 'the live gauges to fall')
  }, 60_000)

  it('asks for the bearer token when METRICS_TOKEN is set', async () => {
    expect((await scrape(null)).status).toBe(401)
    expect((await scrape('wrong-token-wrong-token-000')).status).toBe(401)
    const ok = await scrape()
    expect(ok.status).toBe(200)
    expect(ok.type).toMatch(/^text\/plain; version=0\.0\.4/)
  })

  it('keeps operation labels bounded whatever names clients send', () => {
    const metrics = new Metrics({
      database: app.database,
      live: () => ({ websocketConnections: 0, websocketSubscriptions: 0, sseSubscriptions: 0 }),
    })
    expect(metrics.operationLabel(undefined)).toBe('anonymous')
    expect(metrics.operationLabel('not a name')).toBe('other')
    for (let i = 0; i < OPERATION_NAMES_MAX; i++) expect(metrics.operationLabel(`Op${i}`)).toBe(`Op${i}`)
    expect(metrics.operationLabel('OneTooMany')).toBe('other')
    expect(metrics.operationLabel('Op7')).toBe('Op7')
  })
})
