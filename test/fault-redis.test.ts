import { type Client, createClient } from 'graphql-ws'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { userWallet } from '../src/ledger/index.js'
import type { RedisBus } from '../src/live/redis-bus.js'
import { type Actor, signIn } from './support/actors.js'
import { startTestApp, type TestApp } from './support/app.js'
import { onPostgres } from './support/db.js'
import { type Instance, startInstanceOn } from './support/instances.js'
import { CATALOG, GRANT_COINS, SEND_GIFT, START_LIVE } from './support/operations.js'
import { type PrivateRedis, redisServerBinary, startPrivateRedis } from './support/private-services.js'
import { sleep, until } from './support/processes.js'

// Redis dies and comes back: two server instances (A and B) on one
// PostgreSQL database and a Redis server of this test's own, killed with
// SIGKILL while gifts flow through both instances, and started again empty
// (no subscriptions, nothing kept). test/live-redis.test.ts cuts each
// instance's connection in turn through a proxy; this one takes the server
// itself away from both at once.
//
// Gift sending goes on throughout (every gift accepted, none taking more
// than 2 s). Live feeds recover and resume without gaps: subscribers on
// either instance — one of them subscribed while Redis was down — end with
// every gift of the stream, once each, in sequence order; a wallet
// subscription on B for a sender who sends through A ends at the wallet's
// real balance.

const binary = redisServerBinary()
if (onPostgres && !binary) console.warn('Redis outage test skipped: no redis-server binary')

const LIVE_GIFTS = `subscription LiveGifts($streamId: ID!, $afterSequence: Int) {
  liveGifts(streamId: $streamId, afterSequence: $afterSequence) { id sequence }
}`
const MY_WALLET = 'subscription { walletUpdated { coins } }'
const SENDERS = 10

interface Feed<T> {
  received: T[]
  errors: unknown[]
}

describe.skipIf(!onPostgres || !binary)('a Redis outage with two instances (PostgreSQL)', () => {
  let redis: PrivateRedis
  let a: TestApp
  let b: Instance
  let senders: Actor[]
  let rose: string
  let streamId: string
  const clients: Client[] = []
  const busOf = (services: { live: { bus: unknown } }) => services.live.bus as RedisBus
  const connected = (services: { live: { bus: unknown } }) => {
    const bus = busOf(services) as unknown as {
      publisher: { status: string }
      subscriber: { status: string }
    }
    return bus.publisher.status === 'ready' && bus.subscriber.status === 'ready'
  }

  beforeAll(async () => {
    redis = await startPrivateRedis(binary as string)
    const env = {
      REDIS_URL: redis.url,
      RATE_LIMIT_MUTATIONS_PER_SECOND: '10000',
      RATE_LIMIT_MUTATIONS_BURST: '10000',
    }
    a = await startTestApp({ env })
    b = await startInstanceOn(a, env)
    const admin = await signIn(a, 'admin', ['admin'])
    const creator = await signIn(a, 'creator', ['creator'])
    senders = await Promise.all(Array.from({ length: SENDERS }, (_, i) => signIn(a, `rfan${i}`)))
    for (const [i, s] of senders.entries()) {
      await admin.ok(GRANT_COINS, {
        userId: s.userId,
        coins: 100_000,
        reason: 'test',
        idempotencyKey: `rg${i}`,
      })
    }
    rose = (await admin.ok<{ gifts: { id: string; name: string }[] }>(CATALOG)).gifts.find(
      (g) => g.name === 'Rose',
    )?.id as string
    streamId = (await creator.ok(START_LIVE, { title: 'redis outage' })).startLiveStream.liveStream.id
    await until(() => connected(a.services) && connected(b.services), 10_000, 'both instances on Redis')
  }, 90_000)

  afterAll(async () => {
    for (const client of clients) await client.dispose()
    await b?.stop()
    await a?.services.live.stop()
    await a?.stop()
    await redis?.close()
  })

  function subscribe<T>(url: string, query: string, variables: Record<string, unknown>, token?: string) {
    const client = createClient({
      url: `${url.replace('http', 'ws')}/graphql`,
      webSocketImpl: WebSocket,
      connectionParams: token ? { authorization: `Bearer ${token}` } : {},
      retryAttempts: 0,
      lazy: true,
    })
    clients.push(client)
    const feed: Feed<T> = { received: [], errors: [] }
    client.subscribe<Record<string, T>>(
      { query, variables },
      {
        next: (result) => {
          if (result.errors) feed.errors.push(...result.errors)
          const value = result.data ? Object.values(result.data)[0] : undefined
          if (value) feed.received.push(value)
        },
        error: (error) => feed.errors.push(error),
        complete: () => {},
      },
    )
    return feed
  }

  it('gifts go on while Redis is down; every feed resumes with every gift once, in order', async () => {
    const onB = subscribe<{ id: string; sequence: number }>(b.url, LIVE_GIFTS, { streamId, afterSequence: 0 })
    const onA = subscribe<{ id: string; sequence: number }>(a.url, LIVE_GIFTS, { streamId, afterSequence: 0 })
    // sender 0 sends through A; B's wallet feed must learn of it through Redis.
    const wallet = subscribe<{ coins: number }>(b.url, MY_WALLET, {}, senders[0]?.token)
    await until(
      () =>
        busOf(b.services).subscriberCount(`stream:${streamId}`) === 1 && busOf(b.services).stats.resyncs >= 1,
      10_000,
      'B subscribed on Redis',
    )

    const refused: string[] = []
    const slow: number[] = []
    let sent = 0
    let sending = true
    const sender = async (i: number) => {
      const who = senders[i] as Actor
      // Even senders through A, odd ones through B.
      const via = i % 2 === 0 ? a : b
      for (let n = 0; sending; n++) {
        const started = Date.now()
        const response = await fetch(`${via.url}/graphql`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${who.token}` },
          body: JSON.stringify({
            query: SEND_GIFT,
            variables: { giftId: rose, liveStreamId: streamId, idempotencyKey: `r${i}-${n}` },
          }),
        })
        const body = (await response.json()) as {
          data?: { sendGift: { userErrors: unknown[] } }
          errors?: unknown
        }
        const ms = Date.now() - started
        if (ms > 2_000) slow.push(ms)
        if (response.status !== 200 || body.errors || body.data?.sendGift.userErrors.length)
          refused.push(JSON.stringify(body))
        else sent++
        await sleep(30)
      }
    }
    const sending$ = Array.from({ length: SENDERS }, (_, i) => sender(i))
    await until(() => sent >= 50, 15_000, 'gifts flowing')

    await redis.kill()
    await until(() => !connected(a.services) && !connected(b.services), 5_000, 'both instances to lose Redis')
    const sentAtKill = sent
    // Subscribed while Redis is down: the stored gifts first, then whatever comes.
    const lateOnB = subscribe<{ id: string; sequence: number }>(b.url, LIVE_GIFTS, {
      streamId,
      afterSequence: 0,
    })
    await until(() => sent >= sentAtKill + 50, 15_000, 'gifts flowing without Redis')
    await sleep(500)

    await redis.start()
    await until(() => connected(a.services) && connected(b.services), 15_000, 'both instances back on Redis')
    const sentAtRestart = sent
    await until(() => sent >= sentAtRestart + 50, 15_000, 'gifts flowing after Redis came back')
    sending = false
    await Promise.all(sending$)

    expect(refused).toEqual([])
    expect(slow).toEqual([])
    const expected = Array.from({ length: sent }, (_, i) => i + 1)
    for (const [name, feed] of [
      ['on B', onB],
      ['on A', onA],
      ['subscribed on B while Redis was down', lateOnB],
    ] as const) {
      await until(
        () => feed.received.length >= sent,
        15_000,
        () => `${name}: ${feed.received.length} of ${sent} gifts`,
      )
      await sleep(100)
      expect(feed.errors, name).toEqual([])
      expect(
        feed.received.map((g) => g.sequence),
        name,
      ).toEqual(expected)
    }
    // The wallet feed on B ends at sender 0's balance, though every gift went through A.
    const balance = Number(
      (await a.services.ledger.balance(userWallet(senders[0]?.userId as string))).balance,
    )
    await until(
      () => wallet.received.at(-1)?.coins === balance,
      10_000,
      () => `wallet feed at ${balance}: ${JSON.stringify(wallet.received.slice(-3))}`,
    )
    expect(wallet.errors).toEqual([])
    console.info(
      `Redis outage: ${sent} gifts (${sentAtKill} before the kill, ${sentAtRestart - sentAtKill} without Redis); ` +
        `A dropped ${busOf(a.services).stats.dropped} and republished ${busOf(a.services).stats.republished}, ` +
        `B resynced ${busOf(b.services).stats.resyncs} times`,
    )
  }, 90_000)
})
