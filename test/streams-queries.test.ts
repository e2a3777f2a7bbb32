import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Actor, anonymous, signIn } from './support/actors.js'
import { startTestApp, type TestApp } from './support/app.js'
import { CATALOG, GRANT_COINS, START_LIVE } from './support/operations.js'

// A page of 50 live streams with their creators and top gifters costs a
// bounded number of SQL statements, however many streams and gifters.

let app: TestApp
const STREAMS = 50

const PAGE = `query Page($first: Int, $after: String) {
  liveStreams(first: $first, after: $after) {
    edges { cursor node { id title giftCoins creator { id handle displayName } topGifters(first: 3) { rank coins user { id handle } } } }
    pageInfo { hasNextPage endCursor }
  }
}`

beforeAll(async () => {
  app = await startTestApp({
    env: { RATE_LIMIT_MUTATIONS_PER_SECOND: '1000', RATE_LIMIT_MUTATIONS_BURST: '1000' },
  })
  const admin = await signIn(app, 'admin', ['admin'])
  const viewers: Actor[] = await Promise.all([signIn(app, 'v1'), signIn(app, 'v2'), signIn(app, 'v3')])
  for (const v of viewers) {
    await admin.ok(GRANT_COINS, {
      userId: v.userId,
      coins: 10_000,
      reason: 'test',
      idempotencyKey: `g-${v.userId}`,
    })
  }
  const rose = (await viewers[0]?.ok(CATALOG))?.gifts[0]?.id as string
  const creators: Actor[] = []
  for (let i = 0; i < STREAMS; i++) creators.push(await signIn(app, `creator${i}`, ['creator']))
  for (const [i, c] of creators.entries()) {
    const { startLiveStream } = await c.ok(START_LIVE, { title: `Stream ${i}` })
    const streamId = startLiveStream.liveStream.id
    await Promise.all(
      viewers.map((v, j) =>
        app.services.gifts.send({
          senderId: v.userId,
          giftId: rose,
          liveStreamId: streamId,
          quantity: 1 + j + (i % 3),
          idempotencyKey: `s${i}-v${j}`,
        }),
      ),
    )
  }
}, 180_000)
afterAll(() => app?.stop())

describe('live stream listing', () => {
  it(`answers a page of ${STREAMS} streams with creators and top gifters in a bounded number of statements`, async () => {
    app.queries.reset()
    const body = await anonymous(app).raw(PAGE, { first: STREAMS })
    expect(body.errors).toBeUndefined()
    const edges = (body.data as any).liveStreams.edges
    expect(edges).toHaveLength(STREAMS)
    for (const { node } of edges) {
      expect(node.creator.handle).toMatch(/^creator\d+$/)
      expect(node.topGifters).toHaveLength(3)
      expect(node.topGifters.map((g: any) => g.rank)).toEqual([1, 2, 3])
      const coins = node.topGifters.map((g: any) => g.coins)
      expect([...coins].sort((a: number, b: number) => b - a)).toEqual(coins)
      expect(node.giftCoins).toBe(coins.reduce((a: number, b: number) => a + b, 0))
    }
    // One for the streams and their creators, one for all the rankings.
    expect(app.queries.statements.length, app.queries.statements.join('\n---\n')).toBeLessThanOrEqual(3)
  })

  it('pages newest first without gaps or repeats', async () => {
    const seen: string[] = []
    let after: string | null = null
    for (;;) {
      const body = await anonymous(app).raw(PAGE, { first: 7, after })
      const page = (body.data as any).liveStreams
      seen.push(...page.edges.map((e: any) => e.node.title))
      if (!page.pageInfo.hasNextPage) break
      after = page.pageInfo.endCursor
    }
    expect(seen).toEqual(Array.from({ length: STREAMS }, (_, i) => `Stream ${STREAMS - 1 - i}`))
  })
})
