import { eq } from 'drizzle-orm'
import { type Client, createClient } from 'graphql-ws'
import { afterAll, beforeAll, expect, it } from 'vitest'
import WebSocket from 'ws'
import { giftEvents } from '../src/db/schema.js'
import type { Json } from '../src/live/bus.js'
import { fanoutStats } from '../src/live/fanout.js'
import { type Actor, signIn } from './support/actors.js'
import { startTestApp, type TestApp } from './support/app.js'
import { CATALOG, END_LIVE, GRANT_COINS, SEND_GIFT, START_LIVE } from './support/operations.js'

// Fan-out: subscribers with the same liveGifts operation share one execution
// and one serialization per event, whatever afterSequence each gave.

const LIVE_GIFTS = `subscription LiveGifts($streamId: ID!, $afterSequence: Int) {
  liveGifts(streamId: $streamId, afterSequence: $afterSequence) {
    id
    sequence
    sender { id handle }
    gift { id name coinCost }
    coins
    combo
    sentAt
  }
}`

let app: TestApp
let admin: Actor
let creator: Actor
let sender: Actor
let roseId: string
let streamId: string
const clients: Client[] = []
let keyCounter = 0
const key = () => `fanout-${++keyCounter}`

beforeAll(async () => {
  app = await startTestApp({
    env: { RATE_LIMIT_MUTATIONS_PER_SECOND: '10000', RATE_LIMIT_MUTATIONS_BURST: '10000' },
  })
  ;[admin, creator, sender] = await Promise.all([
    signIn(app, 'admin', ['admin']),
    signIn(app, 'creator', ['creator']),
    signIn(app, 'sender'),
  ])
  await admin.ok(GRANT_COINS, { userId: sender.userId, coins: 10_000, reason: 'test', idempotencyKey: key() })
  const catalog = await admin.ok<{ gifts: { id: string; name: string }[] }>(CATALOG)
  roseId = (catalog.gifts.find((g) => g.name === 'Rose') as { id: string }).id
  streamId = (await creator.ok(START_LIVE, { title: 'fanout' })).startLiveStream.liveStream.id
}, 60_000)

afterAll(async () => {
  for (const client of clients) await client.dispose()
  await app?.stop()
})

async function until(check: () => boolean, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out')
    await new Promise((r) => setTimeout(r, 20))
  }
}

it('executes and serializes each event once for 50 subscribers of the same operation', async () => {
  const SUBSCRIBERS = 50
  const EVENTS = 5
  const received: { sequence: number }[][] = []
  const sockets: { raw: string[] }[] = []
  let active = 0
  const directBefore = fanoutStats.directSubscribers
  // 5 connections of 10 subscriptions; half give afterSequence 0 (a replay of nothing), half none.
  for (let c = 0; c < 5; c++) {
    const socket = { raw: [] as string[] }
    sockets.push(socket)
    const client = createClient({
      url: `${app.url.replace('http', 'ws')}/graphql`,
      webSocketImpl: class extends WebSocket {
        constructor(...args: ConstructorParameters<typeof WebSocket>) {
          super(...args)
          this.on('message', (data) => socket.raw.push(String(data)))
        }
      },
      retryAttempts: 0,
      on: { connected: () => {} },
    })
    clients.push(client)
    for (let s = 0; s < SUBSCRIBERS / 5; s++) {
      const mine: { sequence: number }[] = []
      received.push(mine)
      const variables = (c * 10 + s) % 2 === 0 ? { streamId, afterSequence: 0 } : { streamId }
      active++
      client.subscribe<{ liveGifts: { sequence: number } }>(
        { query: LIVE_GIFTS, variables },
        {
          next: (result) => {
            if (result.data) mine.push({ sequence: result.data.liveGifts.sequence })
          },
          error: (error) => {
            throw error
          },
          complete: () => {
            active--
          },
        },
      )
    }
  }
  expect(active).toBe(SUBSCRIBERS)
  // Half start "now": wait until every subscription has caught up on the server.
  await until(() => fanoutStats.directSubscribers === directBefore + SUBSCRIBERS)
  const before = { ...fanoutStats }
  for (let i = 0; i < EVENTS; i++) {
    const body = await sender.raw(SEND_GIFT, {
      giftId: roseId,
      liveStreamId: streamId,
      idempotencyKey: key(),
    })
    expect(body.errors).toBeUndefined()
  }
  await until(() => received.every((r) => r.length >= EVENTS))
  for (const mine of received) expect(mine.map((r) => r.sequence)).toEqual([1, 2, 3, 4, 5])
  expect(fanoutStats.executions - before.executions).toBe(EVENTS)
  expect(fanoutStats.serializations - before.serializations).toBe(EVENTS)
  // The same bytes after each subscription's id: one serialization, spliced.
  const payloads = new Set<string>()
  for (const socket of sockets) {
    for (const raw of socket.raw) {
      const message = JSON.parse(raw) as { type: string; payload?: unknown }
      if (message.type !== 'next') continue
      payloads.add(raw.slice(raw.indexOf('"type":"next"')))
      expect(raw).toBe(JSON.stringify(message))
    }
  }
  expect(payloads.size).toBe(EVENTS)
  // Every subscriber had caught up: each message was written by the stream's channel (the fast path).
  expect(fanoutStats.directDeliveries - before.directDeliveries).toBe(EVENTS * SUBSCRIBERS)
  expect(fanoutStats.queuedDeliveries - before.queuedDeliveries).toBe(0)
}, 60_000)

it('fills a gap a transport left from the database, drops a duplicate, and goes back to the fast path', async () => {
  const SUBSCRIBERS = 10
  const host = await signIn(app, 'gaphost', ['creator'])
  const stream = (await host.ok(START_LIVE, { title: 'gaps' })).startLiveStream.liveStream.id as string
  const client = createClient({
    url: `${app.url.replace('http', 'ws')}/graphql`,
    webSocketImpl: WebSocket,
    retryAttempts: 0,
  })
  clients.push(client)
  const received: number[][] = []
  let completed = 0
  const directBefore = fanoutStats.directSubscribers
  for (let s = 0; s < SUBSCRIBERS; s++) {
    const mine: number[] = []
    received.push(mine)
    client.subscribe<{ liveGifts: { sequence: number } }>(
      {
        query: LIVE_GIFTS,
        variables: s % 2 === 0 ? { streamId: stream, afterSequence: 0 } : { streamId: stream },
      },
      {
        next: (result) => {
          if (result.data) mine.push(result.data.liveGifts.sequence)
        },
        error: (error) => {
          throw error
        },
        complete: () => {
          completed++
        },
      },
    )
  }
  await until(() => fanoutStats.directSubscribers === directBefore + SUBSCRIBERS)
  const gift = async () => {
    const body = await sender.raw(SEND_GIFT, { giftId: roseId, liveStreamId: stream, idempotencyKey: key() })
    expect(body.errors).toBeUndefined()
  }
  const everyoneHas = (n: number) => until(() => received.every((r) => r.length >= n))
  await gift()
  await everyoneHas(1)
  await new Promise((r) => setTimeout(r, 200))
  const before = { ...fanoutStats }

  // A transport that loses the message of gift 3 (as Redis pub/sub may).
  const bus = app.services.live.bus
  const publish = bus.publish.bind(bus)
  let dropNext = false
  bus.publish = (topic: string, payload: Json) => {
    if (dropNext && topic === `stream:${stream}`) {
      dropNext = false
      return
    }
    publish(topic, payload)
  }
  try {
    await gift()
    await everyoneHas(2)
    dropNext = true
    await gift()
    expect(dropNext).toBe(false)
    await gift()
    await everyoneHas(4)
    // A duplicate of gift 2 (a transport delivering twice).
    const [second] = await app.database.db
      .select()
      .from(giftEvents)
      .where(eq(giftEvents.streamId, stream))
      .orderBy(giftEvents.sequence)
      .offset(1)
      .limit(1)
    app.services.live.gifts.publishCommitted([second as typeof giftEvents.$inferSelect])
    await gift()
    await everyoneHas(5)
  } finally {
    bus.publish = publish
  }
  await host.ok(END_LIVE, { liveStreamId: stream })
  await until(() => completed === SUBSCRIBERS)
  for (const mine of received) expect(mine).toEqual([1, 2, 3, 4, 5])
  // Gifts 2 and 5 went the fast path; 4 arrived after a gap, so 3 (read from the
  // database) and 4 were written by each subscriber's own feed loop.
  expect(fanoutStats.directDeliveries - before.directDeliveries).toBe(2 * SUBSCRIBERS)
  expect(fanoutStats.queuedDeliveries - before.queuedDeliveries).toBe(2 * SUBSCRIBERS)
  expect(fanoutStats.executions - before.executions).toBe(4)
}, 60_000)
