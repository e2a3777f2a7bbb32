import { eq, sql } from 'drizzle-orm'
import { type Client, createClient } from 'graphql-ws'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { rowsOf } from '../src/db/rows.js'
import { giftEvents } from '../src/db/schema.js'
import { CLOSE_CODES, WS_LIMITS } from '../src/http/websocket.js'
import { type Actor, signIn } from './support/actors.js'
import { startTestApp, type TestApp } from './support/app.js'
import { onPostgres } from './support/db.js'
import { CATALOG, END_LIVE, GRANT_COINS, SEND_GIFT, START_LIVE } from './support/operations.js'

// Real-time delivery end to end: the real server on a free port, real
// graphql-ws (WebSocket) and SSE clients, gifts sent through the HTTP API.

const LIVE_GIFTS = `subscription LiveGifts($streamId: ID!, $afterSequence: Int) {
  liveGifts(streamId: $streamId, afterSequence: $afterSequence) {
    id
    sequence
    sender { id handle displayName }
    gift { id name coinCost imageUrl }
    quantity
    coins
    combo
    sentAt
  }
}`
const MY_WALLET = 'subscription MyWallet { walletUpdated { coins updatedAt } }'

interface LiveGift {
  id: string
  sequence: number
  sender: { id: string }
  combo: number
}

const KEEP_ALIVE_MS = 500
const COMBO_WINDOW_MS = 400
let app: TestApp
let stopped = false
let admin: Actor
let creator: Actor
let senders: Actor[]
let roseId: string
let streamId: string
const clients: Client[] = []

beforeAll(async () => {
  app = await startTestApp({
    env: {
      RATE_LIMIT_MUTATIONS_PER_SECOND: '10000',
      RATE_LIMIT_MUTATIONS_BURST: '10000',
      GIFT_COMBO_WINDOW_MS: String(COMBO_WINDOW_MS),
    },
    websocketKeepAliveMs: KEEP_ALIVE_MS,
  })
  ;[admin, creator] = await Promise.all([
    signIn(app, 'admin', ['admin']),
    signIn(app, 'creator', ['creator']),
  ])
  senders = await Promise.all(Array.from({ length: 20 }, (_, i) => signIn(app, `sender${i}`)))
  await Promise.all(senders.map((s) => grant(s, 10_000)))
  const catalog = await admin.ok<{ gifts: { id: string; name: string }[] }>(CATALOG)
  roseId = (catalog.gifts.find((g) => g.name === 'Rose') as { id: string }).id
  streamId = (await creator.ok(START_LIVE, { title: 'live test' })).startLiveStream.liveStream.id
}, 60_000)

afterAll(async () => {
  for (const client of clients) await client.dispose()
  if (!stopped) await app?.stop()
})

let keyCounter = 0
const key = () => `live-${++keyCounter}`
const wsUrl = () => `${app.url.replace('http', 'ws')}/graphql`

async function grant(to: Actor, coins: number) {
  await admin.ok(GRANT_COINS, { userId: to.userId, coins, reason: 'test', idempotencyKey: key() })
}

async function send(who: Actor, stream = streamId) {
  const body = await who.raw(SEND_GIFT, { giftId: roseId, liveStreamId: stream, idempotencyKey: key() })
  return body.data?.sendGift as { giftEvent: { sequence: number } | null; userErrors: { code: string }[] }
}

function wsClient(token?: string): Client {
  const client = createClient({
    url: wsUrl(),
    webSocketImpl: WebSocket,
    connectionParams: token ? { authorization: `Bearer ${token}` } : {},
    retryAttempts: 0,
    lazy: true,
  })
  clients.push(client)
  return client
}

/** A running subscription: what it received so far, and how it ended. */
function collect<T>(client: Client, query: string, variables: Record<string, unknown> = {}) {
  const received: T[] = []
  const errors: unknown[] = []
  let settle: (how: 'complete' | 'error') => void = () => {}
  const ended = new Promise<'complete' | 'error'>((resolve) => {
    settle = resolve
  })
  const unsubscribe = client.subscribe<Record<string, T>>(
    { query, variables },
    {
      next: (result) => {
        if (result.errors) errors.push(...result.errors)
        const value = result.data && Object.values(result.data)[0]
        if (value) received.push(value)
      },
      error: (error) => {
        errors.push(error)
        settle('error')
      },
      complete: () => settle('complete'),
    },
  )
  return { received, errors, ended, unsubscribe }
}

async function until(check: () => boolean, timeoutMs = 20_000, what = 'condition') {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** An SSE subscription through fetch (what EventSource does), parsed by hand. */
function sse<T>(query: string, variables: Record<string, unknown>) {
  const received: T[] = []
  const abort = new AbortController()
  const done = (async () => {
    const response = await fetch(`${app.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
      body: JSON.stringify({ query, variables }),
      signal: abort.signal,
    })
    expect(response.headers.get('content-type')).toContain('text/event-stream')
    const decoder = new TextDecoder()
    let buffer = ''
    try {
      for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true })
        let end = buffer.indexOf('\n\n')
        while (end >= 0) {
          const message = buffer.slice(0, end)
          buffer = buffer.slice(end + 2)
          const data = message
            .split('\n')
            .filter((l) => l.startsWith('data:'))
            .map((l) => l.slice(5).trim())
            .join('\n')
          if (message.includes('event: next') && data) {
            const value = Object.values((JSON.parse(data) as { data: Record<string, T> }).data)[0]
            if (value) received.push(value)
          }
          if (message.includes('event: complete')) return 'complete'
          end = buffer.indexOf('\n\n')
        }
      }
    } catch (error) {
      if (!abort.signal.aborted) throw error
    }
    return 'closed'
  })()
  return { received, done, close: () => abort.abort() }
}

function expectContiguous(events: LiveGift[], from: number, to: number) {
  expect(events.map((e) => e.sequence)).toEqual(Array.from({ length: to - from + 1 }, (_, i) => from + i))
  expect(new Set(events.map((e) => e.id)).size).toBe(events.length)
}

async function lastSequence(stream = streamId): Promise<number> {
  const rows = rowsOf<{ n: number }>(
    await app.database.db.execute(sql`select last_sequence::int as n from live_streams where id = ${stream}`),
  )
  return Number(rows[0]?.n)
}

describe(`live gifts (${onPostgres ? 'PostgreSQL' : 'PGlite'})`, () => {
  it('delivers every gift of 20 concurrent senders exactly once, in sequence order, over WebSocket and SSE', async () => {
    const start = await lastSequence()
    const ws = collect<LiveGift>(wsClient(), LIVE_GIFTS, { streamId, afterSequence: start })
    const stream = sse<LiveGift>(LIVE_GIFTS, { streamId, afterSequence: start })
    const perSender = 5
    const results = await Promise.all(
      senders.map(async (s) => {
        const out = []
        for (let i = 0; i < perSender; i++) out.push(await send(s))
        return out
      }),
    )
    const total = senders.length * perSender
    expect(results.flat().every((r) => r.giftEvent !== null)).toBe(true)
    await until(() => ws.received.length >= total && stream.received.length >= total, 20_000, 'all gifts')
    await new Promise((r) => setTimeout(r, 200))
    expectContiguous(ws.received, start + 1, start + total)
    expectContiguous(stream.received, start + 1, start + total)
    expect(stream.received.map((e) => e.id)).toEqual(ws.received.map((e) => e.id))
    expect(ws.errors).toEqual([])
    ws.unsubscribe()
    stream.close()
  })

  it('resumes after a disconnect with afterSequence while gifts keep flowing: no gap, no duplicate', async () => {
    const start = await lastSequence()
    let sending = true
    const flow = Promise.all(
      senders.slice(0, 10).map(async (s) => {
        let n = 0
        while (sending && n < 30) {
          await send(s)
          n++
        }
      }),
    )
    const first = wsClient()
    const before = collect<LiveGift>(first, LIVE_GIFTS, { streamId, afterSequence: start })
    await until(() => before.received.length >= 20, 20_000, 'first gifts')
    await first.dispose()
    const seen = [...before.received]
    const lastSeen = seen[seen.length - 1]?.sequence as number
    // Gifts committed while disconnected are replayed from the database.
    await new Promise((r) => setTimeout(r, 100))
    const after = collect<LiveGift>(wsClient(), LIVE_GIFTS, { streamId, afterSequence: lastSeen })
    await flow
    sending = false
    const end = await lastSequence()
    await until(() => (after.received.at(-1)?.sequence ?? 0) >= end, 20_000, 'the resumed feed')
    expectContiguous([...seen, ...after.received], start + 1, end)
    after.unsubscribe()
  })

  it('never publishes a refused gift', async () => {
    const broke = await signIn(app, 'broke')
    const start = await lastSequence()
    const ws = collect<LiveGift>(wsClient(), LIVE_GIFTS, { streamId, afterSequence: start })
    const outcomes = await Promise.all([
      send(broke),
      send(senders[0] as Actor),
      send(broke),
      send(senders[1] as Actor),
    ])
    expect(outcomes.filter((o) => o.userErrors[0]?.code === 'INSUFFICIENT_COINS')).toHaveLength(2)
    await until(() => ws.received.length >= 2, 10_000, 'the accepted gifts')
    await new Promise((r) => setTimeout(r, 300))
    expectContiguous(ws.received, start + 1, start + 2)
    expect(ws.received.some((e) => e.sender.id === broke.userId)).toBe(false)
    expect(await lastSequence()).toBe(start + 2)
    ws.unsubscribe()
  })

  it('refuses an unknown stream and a negative afterSequence', async () => {
    const client = wsClient()
    // A refusal at subscribe time is one result with errors, then complete.
    const unknown = collect(client, LIVE_GIFTS, { streamId: '00000000-0000-4000-8000-000000000000' })
    await unknown.ended
    expect(unknown.received).toEqual([])
    expect(JSON.stringify(unknown.errors)).toContain('STREAM_NOT_FOUND')
    const negative = collect(client, LIVE_GIFTS, { streamId, afterSequence: -1 })
    await negative.ended
    expect(JSON.stringify(negative.errors)).toContain('INVALID_INPUT')
  })

  it('allows only subscriptions over WebSocket, and at most 20 per connection', async () => {
    const client = wsClient()
    const query = collect(client, '{ __typename }')
    expect(await query.ended).toBe('error')
    expect(JSON.stringify(query.errors)).toContain('Only subscriptions')
    const open = Array.from({ length: WS_LIMITS.subscriptionsPerConnectionMax }, () =>
      collect(client, LIVE_GIFTS, { streamId }),
    )
    await new Promise((r) => setTimeout(r, 300))
    const extra = collect(client, LIVE_GIFTS, { streamId })
    expect(await extra.ended).toBe('error')
    expect(JSON.stringify(extra.errors)).toContain('TOO_MANY_SUBSCRIPTIONS')
    for (const s of open) s.unsubscribe()
  })
})

describe('wallet updates', () => {
  it('refuses an anonymous walletUpdated', async () => {
    const sub = collect(wsClient(), MY_WALLET)
    await sub.ended
    expect(sub.received).toEqual([])
    expect(JSON.stringify(sub.errors)).toContain('UNAUTHENTICATED')
  })

  it('closes a connection whose token does not check out with 4403', async () => {
    const sub = collect(wsClient('not-a-token'), MY_WALLET)
    expect(await sub.ended).toBe('error')
    expect((sub.errors[0] as { code?: number }).code).toBe(CLOSE_CODES.invalidToken)
  })

  it('shows a user their own balance after each change, and no one else’s', async () => {
    const [carol, dave] = await Promise.all([signIn(app, 'carol'), signIn(app, 'dave')])
    const sub = collect<{ coins: number; updatedAt: string }>(wsClient(carol.token), MY_WALLET)
    await new Promise((r) => setTimeout(r, 300))
    await grant(dave, 777)
    await grant(carol, 100)
    await send(carol)
    await grant(dave, 888)
    await until(() => sub.received.length >= 2, 10_000, 'two wallet updates')
    await new Promise((r) => setTimeout(r, 300))
    expect(sub.received.map((u) => u.coins)).toEqual([100, 99])
    expect(sub.received.every((u) => typeof u.updatedAt === 'string')).toBe(true)
    sub.unsubscribe()
  })
})

describe('slow consumers', () => {
  it('disconnects a subscriber that stops reading, with 4421, and keeps nothing for it', async () => {
    const other = await signIn(app, 'slowcreator', ['creator'])
    const slowStream = (await other.ok(START_LIVE, { title: 'slow' })).startLiveStream.liveStream.id as string
    const socket = new WebSocket(wsUrl(), 'graphql-transport-ws')
    const messages: string[] = []
    socket.on('message', (data) => messages.push(String(data)))
    const closed = new Promise<number>((resolve) => socket.on('close', (code) => resolve(code)))
    await new Promise((r) => socket.once('open', r))
    socket.send(JSON.stringify({ type: 'connection_init', payload: {} }))
    await until(() => messages.some((m) => m.includes('connection_ack')), 5_000, 'ack')
    socket.send(
      JSON.stringify({
        id: '1',
        type: 'subscribe',
        payload: { query: LIVE_GIFTS, variables: { streamId: slowStream } },
      }),
    )
    const topic = `stream:${slowStream}`
    const bus = app.services.live.bus as unknown as { subscriberCount(topic: string): number }
    await until(() => bus.subscriberCount(topic) === 1, 5_000, 'the subscription')
    // One real gift, received: the subscriber has caught up (written to directly from now on).
    expect((await send(senders[0] as Actor, slowStream)).giftEvent?.sequence).toBe(1)
    await until(() => messages.some((m) => m.includes('"next"')), 5_000, 'the first gift')
    socket.pause()
    // Publish straight onto the bus, much faster than the client reads. The
    // server writes until the OS's socket buffers are full (megabytes on
    // loopback), then holds at most bufferedEventsMax events' worth: copies of
    // the stored gift (same id, the next sequences) are executed once (the
    // fan-out shares results by event id), so that many megabytes go quickly.
    const [stored] = await app.database.db
      .select()
      .from(giftEvents)
      .where(eq(giftEvents.streamId, slowStream))
    let published = 1
    for (let batch = 0; batch < 1_000 && bus.subscriberCount(topic) > 0; batch++) {
      const events = Array.from({ length: 100 }, () => ({
        ...(stored as typeof giftEvents.$inferSelect),
        sequence: BigInt(++published),
      }))
      app.services.live.gifts.publishCommitted(events)
      await new Promise((r) => setImmediate(r))
    }
    expect(bus.subscriberCount(topic)).toBe(0)
    socket.resume()
    expect(await closed).toBe(CLOSE_CODES.slowConsumer)
    const delivered = messages.filter((m) => m.includes('"next"')).length
    expect(delivered).toBeLessThan(published)
  }, 60_000)
})

describe('SSE subscribers that go away', () => {
  it('are unsubscribed as soon as the client closes, not at the next event or ping', async () => {
    const other = await signIn(app, 'gonessecreator', ['creator'])
    const quietStream = (await other.ok(START_LIVE, { title: 'quiet sse' })).startLiveStream.liveStream
      .id as string
    const topic = `stream:${quietStream}`
    const bus = app.services.live.bus as unknown as { subscriberCount(topic: string): number }
    // Yoga pings an SSE stream every 300 ms under NODE_ENV=test (12 s otherwise), and a ping
    // written to a closed socket ends it too: this stream gets the real interval.
    const nodeEnv = process.env.NODE_ENV
    process.env.NODE_ENV = 'development'
    const subscriber = sse<LiveGift>(LIVE_GIFTS, { streamId: quietStream })
    try {
      await until(() => bus.subscriberCount(topic) === 1, 5_000, 'the subscription')
    } finally {
      process.env.NODE_ENV = nodeEnv
    }
    subscriber.close()
    expect(await subscriber.done).toBe('closed')
    // No gift is sent to the stream: only the client's going away can end the subscription.
    await until(() => bus.subscriberCount(topic) === 0, 5_000, 'the subscription to end')
  })
})

describe('slow SSE consumers', () => {
  it('cuts an SSE subscriber that stops reading', async () => {
    const other = await signIn(app, 'slowssecreator', ['creator'])
    const slowStream = (await other.ok(START_LIVE, { title: 'slow sse' })).startLiveStream.liveStream
      .id as string
    const response = await fetch(`${app.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
      body: JSON.stringify({ query: LIVE_GIFTS, variables: { streamId: slowStream } }),
    })
    expect(response.status).toBe(200)
    const topic = `stream:${slowStream}`
    const bus = app.services.live.bus as unknown as { subscriberCount(topic: string): number }
    await until(() => bus.subscriberCount(topic) === 1, 5_000, 'the subscription')
    // The body is never read: undici stops reading the socket once its buffer is full.
    let published = 0
    for (let batch = 0; batch < 500 && bus.subscriberCount(topic) > 0; batch++) {
      app.services.live.gifts.publishCommitted(
        Array.from({ length: 100 }, () =>
          fakeEvent(slowStream, ++published, senders[0]?.userId ?? '', other.userId),
        ),
      )
      await new Promise((r) => setTimeout(r, 5))
    }
    expect(bus.subscriberCount(topic)).toBe(0)
    await expect(response.text()).rejects.toThrow()
  }, 60_000)
})

describe('streak ends', () => {
  const STREAK_ENDS = `subscription($streamId: ID!) {
    liveStreakEnds(streamId: $streamId) { streamId senderId giftId combo lastSequence lastGiftEventId endedAt }
  }`
  interface End {
    senderId: string
    combo: number
    lastSequence: number
    lastGiftEventId: string
  }

  it('publishes the end of each streak once, with its final combo, and ends open streaks with the stream', async () => {
    const host = await signIn(app, 'streakhost', ['creator'])
    const stream = (await host.ok(START_LIVE, { title: 'streaks' })).startLiveStream.liveStream.id as string
    const [gina, hal] = senders.slice(10, 12) as [Actor, Actor]
    const client = wsClient()
    const ends = collect<End>(client, STREAK_ENDS, { streamId: stream })
    const gifts = collect<LiveGift>(client, LIVE_GIFTS, { streamId: stream, afterSequence: 0 })
    await new Promise((r) => setTimeout(r, 200))
    // Three in a row: one streak of 3.
    for (let i = 0; i < 3; i++) await send(gina, stream)
    await until(() => ends.received.length >= 1, 5_000, 'the first streak end')
    expect(ends.received[0]).toMatchObject({ senderId: gina.userId, combo: 3, lastSequence: 3 })
    expect(ends.received[0]?.lastGiftEventId).toBe(gifts.received[2]?.id)
    // A new streak, still open when the stream ends.
    await new Promise((r) => setTimeout(r, COMBO_WINDOW_MS))
    await send(hal, stream)
    await host.ok(END_LIVE, { liveStreamId: stream })
    expect(await ends.ended).toBe('complete')
    expect(ends.received.map((e) => [e.senderId, e.combo, e.lastSequence])).toEqual([
      [gina.userId, 3, 3],
      [hal.userId, 1, 4],
    ])
    expect(gifts.received.map((g) => g.combo)).toEqual([1, 2, 3, 1])
  })
})

describe('stream end', () => {
  it('completes the subscriptions of a stream when its creator ends it', async () => {
    const ws = collect<LiveGift>(wsClient(), LIVE_GIFTS, { streamId })
    const stream = sse<LiveGift>(LIVE_GIFTS, { streamId })
    await new Promise((r) => setTimeout(r, 300))
    await send(senders[2] as Actor)
    await creator.ok(END_LIVE, { liveStreamId: streamId })
    expect(await ws.ended).toBe('complete')
    expect(await stream.done).toBe('complete')
    expect(ws.received).toHaveLength(1)
    expect(stream.received).toHaveLength(1)
    // Subscribing to an ended stream replays what is asked for, then completes.
    const late = collect<LiveGift>(wsClient(), LIVE_GIFTS, { streamId, afterSequence: 0 })
    expect(await late.ended).toBe('complete')
    expectContiguous(late.received, 1, await lastSequence())
  })
})

describe('connections', () => {
  it('drops a connection that stops answering pings', async () => {
    const socket = new WebSocket(wsUrl(), 'graphql-transport-ws', { autoPong: false })
    const closed = new Promise<number>((resolve) => socket.on('close', (code) => resolve(code)))
    await new Promise((r) => socket.once('open', r))
    socket.send(JSON.stringify({ type: 'connection_init', payload: {} }))
    const started = Date.now()
    // Terminated, not closed: no close frame, so the client sees 1006.
    expect(await closed).toBe(1006)
    expect(Date.now() - started).toBeLessThan(KEEP_ALIVE_MS * 4)
  })

  it('closes a user’s connections past the tenth with 4420', async () => {
    const erin = await signIn(app, 'erin')
    const subs = Array.from({ length: 11 }, () => collect(wsClient(erin.token), MY_WALLET))
    const refused = await Promise.race(subs.map((s, i) => s.ended.then(() => i)))
    expect(((subs[refused] as (typeof subs)[number]).errors[0] as { code?: number }).code).toBe(
      CLOSE_CODES.tooManyConnections,
    )
    for (const s of subs) s.unsubscribe()
  })

  it('closes every WebSocket with 1001 when the server stops', async () => {
    const frank = await signIn(app, 'frank')
    const socket = new WebSocket(wsUrl(), 'graphql-transport-ws')
    const messages: string[] = []
    socket.on('message', (data) => messages.push(String(data)))
    const closed = new Promise<number>((resolve) => socket.on('close', (code) => resolve(code)))
    await new Promise((r) => socket.once('open', r))
    socket.send(
      JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${frank.token}` } }),
    )
    await until(() => messages.some((m) => m.includes('connection_ack')), 5_000, 'ack')
    socket.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: MY_WALLET } }))
    await new Promise((r) => setTimeout(r, 200))
    stopped = true
    await app.stop()
    expect(await closed).toBe(CLOSE_CODES.goingAway)
  })
})

function fakeEvent(stream: string, sequence: number, senderId: string, creatorId: string) {
  return {
    id: crypto.randomUUID(),
    streamId: stream,
    sequence: BigInt(sequence),
    senderId,
    creatorId,
    giftId: roseId,
    quantity: 1,
    coinCost: 1n,
    coins: 1n,
    creatorCoins: 0n,
    platformCoins: 1n,
    combo: 1,
    transactionId: BigInt(sequence),
    sentAt: new Date().toISOString(),
  }
}
