import { type Client, createClient } from 'graphql-ws'
import { afterAll, beforeAll, expect, it } from 'vitest'
import WebSocket from 'ws'
import { fanoutStats } from '../src/live/fanout.js'
import { type Actor, signIn } from './support/actors.js'
import { startTestApp, type TestApp } from './support/app.js'
import { CATALOG, GRANT_COINS, SEND_GIFT, START_LIVE } from './support/operations.js'

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
  // Every subscription is listening once a gift sent now reaches all of them; wait for the server side.
  await new Promise((r) => setTimeout(r, 1_000))
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
  expect(fanoutStats.hits - before.hits).toBe(EVENTS * (SUBSCRIBERS - 1))
}, 60_000)
