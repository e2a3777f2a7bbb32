import { type Client, createClient } from 'graphql-ws'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import type { RedisBus } from '../src/live/redis-bus.js'
import { type Actor, signIn } from './support/actors.js'
import { startTestApp, type TestApp } from './support/app.js'
import { onPostgres } from './support/db.js'
import {
  type Instance,
  reachable,
  startInstanceOn,
  startTcpProxy,
  type TcpProxy,
} from './support/instances.js'
import { CATALOG, GRANT_COINS, SEND_GIFT, START_LIVE } from './support/operations.js'

// Several instances: two servers on ONE PostgreSQL database and one real
// Redis. Gifts are sent through A; the subscriber is on B. Each instance
// reaches Redis through its own TCP proxy, so that a test can take Redis
// away from one instance and bring it back.

const REDIS = new URL(process.env.REDIS_URL || 'redis://127.0.0.1:6379')
const redisHost = REDIS.hostname
const redisPort = Number(REDIS.port || 6379)
const redisUp = await reachable(redisHost, redisPort)
if (onPostgres && !redisUp) {
  console.warn(`live-redis tests skipped: Redis is unreachable at ${redisHost}:${redisPort}`)
}

const LIVE_GIFTS = `subscription LiveGifts($streamId: ID!, $afterSequence: Int) {
  liveGifts(streamId: $streamId, afterSequence: $afterSequence) { id sequence sender { id } }
}`

interface LiveGift {
  id: string
  sequence: number
}

describe.skipIf(!onPostgres || !redisUp)('live events across instances through Redis (PostgreSQL)', () => {
  let a: TestApp
  let b: Instance
  let proxyA: TcpProxy
  let proxyB: TcpProxy
  let admin: Actor
  let senders: Actor[]
  let roseId: string
  let streamId: string
  const clients: Client[] = []
  let keyCounter = 0
  const key = () => `redis-live-${++keyCounter}`
  const busOf = (services: { live: { bus: unknown } }) => services.live.bus as RedisBus

  beforeAll(async () => {
    proxyA = await startTcpProxy({ host: redisHost, port: redisPort })
    proxyB = await startTcpProxy({ host: redisHost, port: redisPort })
    const env = { RATE_LIMIT_MUTATIONS_PER_SECOND: '10000', RATE_LIMIT_MUTATIONS_BURST: '10000' }
    a = await startTestApp({ env: { ...env, REDIS_URL: `redis://127.0.0.1:${proxyA.port}` } })
    b = await startInstanceOn(a, { ...env, REDIS_URL: `redis://127.0.0.1:${proxyB.port}` })
    const creator = await signIn(a, 'creator', ['creator'])
    admin = await signIn(a, 'admin', ['admin'])
    senders = await Promise.all(Array.from({ length: 20 }, (_, i) => signIn(a, `rsender${i}`)))
    await Promise.all(
      senders.map((s) =>
        admin.ok(GRANT_COINS, { userId: s.userId, coins: 10_000, reason: 'test', idempotencyKey: key() }),
      ),
    )
    const catalog = await admin.ok<{ gifts: { id: string; name: string }[] }>(CATALOG)
    roseId = (catalog.gifts.find((g) => g.name === 'Rose') as { id: string }).id
    streamId = (await creator.ok(START_LIVE, { title: 'redis test' })).startLiveStream.liveStream.id
    await until(
      () => busOf(a.services).stats && redisReady(a) && redisReady(b),
      10_000,
      'both instances connected to Redis',
    )
  }, 60_000)

  afterAll(async () => {
    for (const client of clients) await client.dispose()
    await b?.stop()
    await a?.services.live.stop()
    await a?.stop()
    await proxyA?.close()
    await proxyB?.close()
  })

  function redisReady(instance: { services: { live: { bus: unknown } } }) {
    const bus = busOf(instance.services) as unknown as {
      publisher: { status: string }
      subscriber: { status: string }
    }
    return bus.publisher.status === 'ready' && bus.subscriber.status === 'ready'
  }

  async function send(who: Actor) {
    const body = await who.raw(SEND_GIFT, { giftId: roseId, liveStreamId: streamId, idempotencyKey: key() })
    expect(body.errors, JSON.stringify(body.errors)).toBeUndefined()
    return body.data?.sendGift as { giftEvent: { sequence: number } | null; userErrors: { code: string }[] }
  }

  function subscribeOnB(afterSequence?: number) {
    const client = createClient({
      url: `${b.url.replace('http', 'ws')}/graphql`,
      webSocketImpl: WebSocket,
      retryAttempts: 0,
      lazy: true,
    })
    clients.push(client)
    const received: LiveGift[] = []
    const errors: unknown[] = []
    client.subscribe<{ liveGifts: LiveGift }>(
      { query: LIVE_GIFTS, variables: { streamId, afterSequence } },
      {
        next: (result) => {
          if (result.errors) errors.push(...result.errors)
          if (result.data?.liveGifts) received.push(result.data.liveGifts)
        },
        error: (error) => errors.push(error),
        complete: () => {},
      },
    )
    return { received, errors }
  }

  const inOrderOnce = (received: LiveGift[], from: number, to: number) =>
    expect(received.map((g) => g.sequence)).toEqual(Array.from({ length: to - from + 1 }, (_, i) => from + i))

  let subscription: ReturnType<typeof subscribeOnB>
  let lastSequence = 0

  it('gifts sent through A arrive on a subscriber of B, every one once, in order', async () => {
    subscription = subscribeOnB(0)
    // B's Redis subscription is active (its SUBSCRIBE answered, then a resync).
    await until(
      () => busOf(b.services).subscriberCount(`stream:${streamId}`) === 1,
      10_000,
      'subscribed on B',
    )
    await until(() => busOf(b.services).stats.resyncs >= 1, 10_000, 'Redis subscription active on B')
    const publishedBefore = busOf(a.services).stats.published

    const results = await Promise.all(senders.map((s) => send(s)))
    for (const result of results) expect(result.userErrors).toEqual([])
    lastSequence = Math.max(...results.map((r) => r.giftEvent?.sequence ?? 0))
    expect(lastSequence).toBe(20)

    await until(() => subscription.received.length >= 20, 15_000, '20 events on B')
    await new Promise((r) => setTimeout(r, 200))
    expect(subscription.errors).toEqual([])
    inOrderOnce(subscription.received, 1, 20)
    // They travelled through Redis: A published them (B has no other way to hear of them).
    expect(busOf(a.services).stats.published).toBeGreaterThan(publishedBefore)
  }, 30_000)

  it("Redis away from A (the sender): gifts still succeed; B's subscriber gets them once Redis is back", async () => {
    await proxyA.down()
    await until(() => !redisReady(a), 5_000, 'A lost Redis')
    const results = await Promise.all(senders.slice(0, 10).map((s) => send(s)))
    for (const result of results) expect(result.userErrors).toEqual([])
    expect(busOf(a.services).stats.dropped).toBeGreaterThan(0)
    await new Promise((r) => setTimeout(r, 300))
    expect(subscription.received.length).toBe(20)

    await proxyA.up()
    await until(() => subscription.received.length >= 30, 15_000, '30 events on B')
    // A published the last message it had to drop once Redis was back; B read the gap.
    expect(busOf(a.services).stats.republished).toBeGreaterThan(0)
    await new Promise((r) => setTimeout(r, 200))
    expect(subscription.errors).toEqual([])
    inOrderOnce(subscription.received, 1, 30)
  }, 30_000)

  it("Redis away from B (the subscriber's server): B catches up from the database once Redis is back", async () => {
    await proxyB.down()
    await until(() => !redisReady(b), 5_000, 'B lost Redis')
    const resyncsBefore = busOf(b.services).stats.resyncs
    const results = await Promise.all(senders.slice(0, 10).map((s) => send(s)))
    for (const result of results) expect(result.userErrors).toEqual([])
    await new Promise((r) => setTimeout(r, 300))
    expect(subscription.received.length).toBe(30)

    await proxyB.up()
    await until(() => subscription.received.length >= 40, 15_000, '40 events on B')
    // B resubscribed and its feed read what it missed from the database.
    expect(busOf(b.services).stats.resyncs).toBeGreaterThan(resyncsBefore)
    await new Promise((r) => setTimeout(r, 200))
    expect(subscription.errors).toEqual([])
    inOrderOnce(subscription.received, 1, 40)
  }, 30_000)

  it('Redis away from both while gifts flow: every event once, in order, after it comes back', async () => {
    const sending = (async () => {
      for (let round = 0; round < 4; round++) {
        const results = await Promise.all(senders.slice(0, 5).map((s) => send(s)))
        for (const result of results) expect(result.userErrors).toEqual([])
        await new Promise((r) => setTimeout(r, 50))
      }
    })()
    await new Promise((r) => setTimeout(r, 30))
    await Promise.all([proxyA.down(), proxyB.down()])
    await sending
    await Promise.all([proxyA.up(), proxyB.up()])
    await until(() => subscription.received.length >= 60, 15_000, '60 events on B')
    await new Promise((r) => setTimeout(r, 200))
    expect(subscription.errors).toEqual([])
    inOrderOnce(subscription.received, 1, 60)
    // A late subscriber resumes with afterSequence, as a client would after a disconnect.
    const resumed = subscribeOnB(45)
    await until(() => resumed.received.length >= 15, 10_000, 'resumed subscriber')
    inOrderOnce(resumed.received, 46, 60)
  }, 30_000)
})

async function until(check: () => unknown, timeoutMs: number, what: string) {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}
