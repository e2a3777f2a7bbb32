import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { sql } from 'drizzle-orm'
import { buildSchema, type GraphQLNamedType, getNamedType, isObjectType } from 'graphql'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rowsOf } from '../src/db/rows.js'
import { creatorEarnings, platform } from '../src/ledger/index.js'
import { type Actor, anonymous, signIn } from './support/actors.js'
import { startTestApp, type TestApp } from './support/app.js'
import { onPostgres } from './support/db.js'
import { GRANT_COINS, SEND_GIFT } from './support/operations.js'
import { snapshot, tablesOf } from './support/snapshot.js'

// Creators cash out earned coins; admins review. End to end over HTTP with
// real tokens, against the real database: the coins are held while a request
// waits, approval posts the coin side and the money side once, rejection and
// expiry give the coins back, and every refusal changes nothing.

/** The contract's operation (../shared/contract/operations.graphql), as clients send it. */
const REQUEST_PAYOUT = `mutation RequestPayout($coins: Amount!, $idempotencyKey: String!) {
  requestPayout(input: { coins: $coins, idempotencyKey: $idempotencyKey }) {
    payout { id status coins amount { amount currency } requestedAt }
    userErrors { code message field }
  }
}`
const PAYOUT_FIELDS = `id status coins amount { amount currency } requestedAt expiresAt decidedAt decisionNote
  decidedBy { id } ledgerTransactionId creator { id handle }`
const APPROVE = `mutation($input: ApprovePayoutInput!) { approvePayout(input: $input) {
  payout { ${PAYOUT_FIELDS} } userErrors { code message field } } }`
const REJECT = `mutation($input: RejectPayoutInput!) { rejectPayout(input: $input) {
  payout { ${PAYOUT_FIELDS} } userErrors { code message field } } }`
const MY_PAYOUTS = `query($first: Int, $after: String) { me { earnings {
  coins pendingPayoutCoins
  payoutTerms { currency minimumCoins dailyCapCoins requestableCoins rate { minorUnits coins } }
  payouts(first: $first, after: $after) { edges { cursor node { ${PAYOUT_FIELDS} } } pageInfo { hasNextPage endCursor } }
} } }`
const QUEUE = `query($status: PayoutStatus, $first: Int, $after: String) {
  payoutRequests(status: $status, first: $first, after: $after) {
    edges { cursor node { ${PAYOUT_FIELDS} } } pageInfo { hasNextPage endCursor } } }`

const MIN = 100
const CAP = 1_000
const ENV = {
  PAYOUT_CURRENCY: 'USD',
  PAYOUT_RATE: '1/2',
  PAYOUT_MIN_COINS: String(MIN),
  PAYOUT_DAILY_CAP_COINS: String(CAP),
  RATE_LIMIT_MUTATIONS_PER_SECOND: '10000',
  RATE_LIMIT_MUTATIONS_BURST: '10000',
}

let keyCounter = 0
const key = () => `payout-test-${++keyCounter}`

interface World {
  app: TestApp
  admin: Actor
  fan: Actor
  handHearts: string
}

async function world(env: Record<string, string>): Promise<World> {
  const app = await startTestApp({ env })
  const [admin, fan] = await Promise.all([signIn(app, 'admin', ['admin']), signIn(app, 'fan')])
  const { gifts } = await fan.ok<{ gifts: { id: string; name: string }[] }>('{ gifts { id name } }')
  const handHearts = gifts.find((g) => g.name === 'Hand Hearts')?.id ?? ''
  return { app, admin, fan, handHearts }
}

/** Real earnings: the fan is granted coins and gifts them (Hand Hearts, 100 coins, 50% to the creator). */
async function earn(w: World, creator: Actor, coins: number): Promise<void> {
  const quantity = coins / 50
  const granted = await w.admin.ok(GRANT_COINS, {
    userId: w.fan.userId,
    coins: quantity * 100,
    reason: 'payout test',
    idempotencyKey: key(),
  })
  expect(granted.grantCoins.userErrors).toEqual([])
  const sent = await w.fan.ok(SEND_GIFT, {
    giftId: w.handHearts,
    creatorId: creator.userId,
    quantity,
    idempotencyKey: key(),
  })
  expect(sent.sendGift.userErrors).toEqual([])
}

async function request(who: Actor, coins: number, idempotencyKey = key()) {
  return (await who.ok(REQUEST_PAYOUT, { coins, idempotencyKey })).requestPayout
}

async function earningsOf(w: World, userId: string) {
  const b = await w.app.services.ledger.balance(creatorEarnings(userId))
  return { coins: Number(b.balance), held: Number(b.held), available: Number(b.available) }
}

async function balanceOf(w: World, code: string): Promise<number> {
  return Number((await w.app.services.ledger.balance(code)).balance)
}

async function transactionsWithKey(w: World, idempotencyKey: string) {
  return rowsOf<{ id: string; kind: string; metadata: any }>(
    await w.app.database.db.execute(
      sql`select id::text, kind, metadata from ledger_transactions where idempotency_key = ${idempotencyKey}`,
    ),
  )
}

async function holdOf(w: World, payoutId: string) {
  const [hold] = rowsOf<{ status: string; amount: string; kind: string; resolution: any }>(
    await w.app.database.db.execute(sql`
      select h.status::text, h.amount::text, h.kind, h.resolution from ledger_holds h
        join payout_requests p on p.hold_id = h.id where p.id = ${payoutId}`),
  )
  return hold
}

async function transactionCount(w: World): Promise<number> {
  const [row] = rowsOf<{ n: string }>(
    await w.app.database.db.execute(sql`select count(*)::text as n from ledger_transactions`),
  )
  return Number(row?.n)
}

/** The trial balance's invariant, per unit: debits equal credits, and the balances net to zero. */
async function expectBooksBalanced(w: World): Promise<void> {
  const units = rowsOf<{ unit: string; debits: string; credits: string; net: string }>(
    await w.app.database.db.execute(sql`
      select unit,
             coalesce(sum(debits_total), 0)::text as debits,
             coalesce(sum(credits_total), 0)::text as credits,
             coalesce(sum(case when type in ('asset', 'expense') then balance else -balance end), 0)::text as net
        from ledger_accounts group by unit order by unit`),
  )
  for (const u of units) {
    expect(u.debits, `${u.unit}: debits = credits`).toBe(u.credits)
    expect(u.net, `${u.unit}: balances net to zero`).toBe('0')
  }
  expect((await w.app.services.ledger.checkIntegrity()).problems).toEqual([])
}

/** Runs a refused operation and asserts that nothing at all was written. */
async function expectRefusal(w: World, run: () => Promise<any>, code: string, field?: string) {
  const tables = await tablesOf(w.app.database.db)
  const before = await snapshot(w.app.database.db, tables)
  const payload = await run()
  expect(
    payload.userErrors.map((e: any) => e.code),
    JSON.stringify(payload),
  ).toEqual([code])
  if (field !== undefined) expect(payload.userErrors[0].field).toBe(field)
  expect(payload.payout).toBeNull()
  expect(await snapshot(w.app.database.db, tables), 'a refusal changes nothing').toEqual(before)
  return payload.userErrors[0]
}

describe('payouts', () => {
  let w: World
  let creator: Actor
  let otherCreator: Actor
  let adminCreator: Actor
  let secondAdmin: Actor

  beforeAll(async () => {
    w = await world(ENV)
    ;[creator, otherCreator, adminCreator, secondAdmin] = await Promise.all([
      signIn(w.app, 'creator', ['creator']),
      signIn(w.app, 'othercreator', ['creator']),
      signIn(w.app, 'bossandcreator', ['creator', 'admin']),
      signIn(w.app, 'secondadmin', ['admin']),
    ])
    await earn(w, creator, 1_000)
    await earn(w, otherCreator, 5_000)
    await earn(w, adminCreator, 500)
  })
  afterAll(() => w?.app.stop())

  describe('requesting', () => {
    it('holds the coins while the request waits for review, and posts nothing yet', async () => {
      const transactions = await transactionCount(w)
      const idempotencyKey = key()
      const payload = await request(creator, 400, idempotencyKey)
      expect(payload.userErrors).toEqual([])
      expect(payload.payout).toMatchObject({
        status: 'PENDING',
        coins: 400,
        amount: { amount: 200, currency: 'USD' },
        requestedAt: expect.any(String),
      })
      expect(await earningsOf(w, creator.userId)).toEqual({ coins: 1_000, held: 400, available: 600 })
      expect(await holdOf(w, payload.payout.id)).toMatchObject({
        status: 'pending',
        amount: '400',
        kind: 'payout',
      })
      expect(await transactionCount(w)).toBe(transactions)

      const { me } = await creator.ok(MY_PAYOUTS)
      expect(me.earnings).toMatchObject({ coins: 1_000, pendingPayoutCoins: 400 })
      expect(me.earnings.payoutTerms).toEqual({
        currency: 'USD',
        minimumCoins: MIN,
        dailyCapCoins: CAP,
        requestableCoins: CAP - 400,
        rate: { minorUnits: 1, coins: 2 },
      })
      expect(me.earnings.payouts.edges[0].node).toMatchObject({
        id: payload.payout.id,
        status: 'PENDING',
        decidedBy: null,
        creator: { id: creator.userId, handle: 'creator' },
      })

      // A retry with the same key and coins is the same request: nothing more is held.
      const retried = await request(creator, 400, idempotencyKey)
      expect(retried).toEqual(payload)
      expect(await earningsOf(w, creator.userId)).toEqual({ coins: 1_000, held: 400, available: 600 })

      // The same key for other coins is refused.
      await expectRefusal(
        w,
        async () => (await creator.ok(REQUEST_PAYOUT, { coins: 401, idempotencyKey })).requestPayout,
        'IDEMPOTENCY_KEY_REUSED',
        'input.idempotencyKey',
      )
    })

    it('refuses what the earnings cannot cover, counting the coins already held', async () => {
      const small = await signIn(w.app, 'smallcreator', ['creator'])
      await earn(w, small, 300)
      expect((await request(small, 250)).userErrors).toEqual([])
      // 300 earned, 250 held: 50 available.
      const error = await expectRefusal(w, () => request(small, MIN), 'INSUFFICIENT_EARNINGS', 'input.coins')
      expect(error.message).toContain('50 coins')
      // A creator who never earned anything (the first refusal creates the empty earnings account).
      const fresh = await signIn(w.app, 'freshcreator', ['creator'])
      await request(fresh, MIN)
      await expectRefusal(w, () => request(fresh, MIN), 'INSUFFICIENT_EARNINGS')
    })

    it('refuses less than the minimum', async () => {
      await expectRefusal(w, () => request(creator, MIN - 1), 'PAYOUT_BELOW_MINIMUM', 'input.coins')
    })

    it('caps what a creator requests in 24 hours; a rejected request no longer counts', async () => {
      const first = await request(otherCreator, 600)
      const second = await request(otherCreator, 400)
      expect([first.userErrors, second.userErrors]).toEqual([[], []])
      const error = await expectRefusal(
        w,
        () => request(otherCreator, MIN),
        'PAYOUT_CAP_EXCEEDED',
        'input.coins',
      )
      expect(error.message).toContain('0 more')
      const rejected = (
        await w.admin.ok(REJECT, { input: { payoutId: second.payout.id, reason: 'cap test' } })
      ).rejectPayout
      expect(rejected.userErrors).toEqual([])
      expect((await otherCreator.ok(MY_PAYOUTS)).me.earnings.payoutTerms.requestableCoins).toBe(400)
      await expectRefusal(w, () => request(otherCreator, 401), 'PAYOUT_CAP_EXCEEDED')
      expect((await request(otherCreator, 400)).userErrors).toEqual([])
    })

    it('is for creators: viewers, accountants and admins get NOT_A_CREATOR, anonymous callers nothing', async () => {
      const accountant = await signIn(w.app, 'accountant', ['accountant'])
      for (const who of [w.fan, accountant, w.admin]) {
        await expectRefusal(w, () => request(who, MIN), 'NOT_A_CREATOR')
      }
      const body = await anonymous(w.app).raw(REQUEST_PAYOUT, { coins: MIN, idempotencyKey: key() })
      expect(body.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED')
    })

    it('refuses bad input with a clear error', async () => {
      await expectRefusal(w, () => request(creator, 0), 'INVALID_INPUT', 'input.coins')
      await expectRefusal(w, () => request(creator, -500), 'INVALID_INPUT', 'input.coins')
      await expectRefusal(w, () => request(creator, MIN, ''), 'INVALID_INPUT', 'input.idempotencyKey')
      await expectRefusal(
        w,
        () => request(creator, MIN, 'k'.repeat(201)),
        'INVALID_INPUT',
        'input.idempotencyKey',
      )
    })
  })

  describe('approving', () => {
    it('posts the coin side and the money side in one transaction, once, with who decided', async () => {
      const { payout } = await request(creator, 300)
      const before = {
        earnings: await earningsOf(w, creator.userId),
        coinsIssued: await balanceOf(w, platform.coinsIssued),
        creatorPayouts: await balanceOf(w, platform.creatorPayouts('USD')),
        payable: await balanceOf(w, platform.payoutsPayable('USD')),
      }
      const approved = (await w.admin.ok(APPROVE, { input: { payoutId: payout.id, note: 'looks right' } }))
        .approvePayout
      expect(approved.userErrors).toEqual([])
      expect(approved.payout).toMatchObject({
        id: payout.id,
        status: 'APPROVED',
        coins: 300,
        amount: { amount: 150, currency: 'USD' },
        decidedAt: expect.any(String),
        decisionNote: 'looks right',
        decidedBy: { id: w.admin.userId },
        ledgerTransactionId: expect.any(String),
      })

      // Coins: out of the earnings (and out of held), retired to coins issued.
      expect(await earningsOf(w, creator.userId)).toEqual({
        coins: before.earnings.coins - 300,
        held: before.earnings.held - 300,
        available: before.earnings.available,
      })
      expect(await balanceOf(w, platform.coinsIssued)).toBe(before.coinsIssued - 300)
      // Money: the cost of the payout, owed to the creator.
      expect(await balanceOf(w, platform.creatorPayouts('USD'))).toBe(before.creatorPayouts + 150)
      expect(await balanceOf(w, platform.payoutsPayable('USD'))).toBe(before.payable + 150)

      // One journal transaction, under the payout's own key, saying who decided and why.
      const [posted, ...more] = await transactionsWithKey(w, `payout:${payout.id}`)
      expect(more).toEqual([])
      expect(posted?.id).toBe(approved.payout.ledgerTransactionId)
      expect(posted).toMatchObject({
        kind: 'payout',
        metadata: {
          decision: 'approved',
          payoutId: payout.id,
          creatorId: creator.userId,
          decidedBy: w.admin.userId,
          note: 'looks right',
          coins: '300',
          amountMinor: '150',
          currency: 'USD',
          rate: '1/2',
        },
      })
      const entries = rowsOf<{ code: string; direction: string; amount: string; unit: string }>(
        await w.app.database.db.execute(sql`
          select a.code, e.direction::text, e.amount::text, e.unit from ledger_entries e
            join ledger_accounts a on a.id = e.account_id where e.transaction_id = ${posted?.id}::bigint
           order by e.id`),
      )
      const sorted = entries.sort((a, b) => `${a.unit} ${a.code}`.localeCompare(`${b.unit} ${b.code}`))
      expect(sorted).toEqual([
        { code: platform.coinsIssued, direction: 'credit', amount: '300', unit: 'COIN' },
        { code: creatorEarnings(creator.userId).code, direction: 'debit', amount: '300', unit: 'COIN' },
        { code: platform.creatorPayouts('USD'), direction: 'debit', amount: '150', unit: 'USD' },
        { code: platform.payoutsPayable('USD'), direction: 'credit', amount: '150', unit: 'USD' },
      ])
      expect(await holdOf(w, payout.id)).toMatchObject({
        status: 'posted',
        resolution: { decision: 'approved', decidedBy: w.admin.userId, note: 'looks right' },
      })
      await expectBooksBalanced(w)

      // Approving again (a retry, or another admin) returns it as it is and books nothing more.
      const transactions = await transactionCount(w)
      const again = (await secondAdmin.ok(APPROVE, { input: { payoutId: payout.id } })).approvePayout
      expect(again.userErrors).toEqual([])
      expect(again.payout).toMatchObject({ status: 'APPROVED', decidedBy: { id: w.admin.userId } })
      expect(await transactionCount(w)).toBe(transactions)
      // Too late to reject.
      await expectRefusal(
        w,
        async () =>
          (await w.admin.ok(REJECT, { input: { payoutId: payout.id, reason: 'changed my mind' } }))
            .rejectPayout,
        'PAYOUT_NOT_PENDING',
      )
      // The creator sees it paid, without the reviewer's identity.
      const mine = (await creator.ok(MY_PAYOUTS)).me.earnings.payouts.edges.map((e: any) => e.node)
      expect(mine.find((p: any) => p.id === payout.id)).toMatchObject({ status: 'APPROVED', decidedBy: null })
    })

    it('is never one’s own: a creator is forbidden, an admin who is the creator is refused', async () => {
      const own = await request(adminCreator, 200)
      expect(own.userErrors).toEqual([])
      const mine = await request(creator, 100)
      const forbidden = await creator.raw(APPROVE, { input: { payoutId: mine.payout.id } })
      expect(forbidden.errors?.[0]?.extensions?.code).toBe('FORBIDDEN')
      expect(forbidden.data?.approvePayout ?? null).toBeNull()
      await expectRefusal(
        w,
        async () => (await adminCreator.ok(APPROVE, { input: { payoutId: own.payout.id } })).approvePayout,
        'CANNOT_DECIDE_OWN_PAYOUT',
      )
      await expectRefusal(
        w,
        async () =>
          (await adminCreator.ok(REJECT, { input: { payoutId: own.payout.id, reason: 'x' } })).rejectPayout,
        'CANNOT_DECIDE_OWN_PAYOUT',
      )
      // Another admin may.
      const approved = (await w.admin.ok(APPROVE, { input: { payoutId: own.payout.id } })).approvePayout
      expect(approved.payout.status).toBe('APPROVED')
      expect(
        (await w.admin.ok(REJECT, { input: { payoutId: mine.payout.id, reason: 'cleanup' } })).rejectPayout
          .userErrors,
      ).toEqual([])
    })

    it('says which payout is unknown', async () => {
      for (const payoutId of ['00000000-0000-4000-8000-000000000000', 'not-a-uuid']) {
        await expectRefusal(
          w,
          async () => (await w.admin.ok(APPROVE, { input: { payoutId } })).approvePayout,
          'PAYOUT_NOT_FOUND',
          'input.payoutId',
        )
      }
    })
  })

  describe('rejecting', () => {
    it('voids the hold with who and why; the coins are available again and nothing is posted', async () => {
      const { payout } = await request(creator, 200)
      const before = await earningsOf(w, creator.userId)
      const transactions = await transactionCount(w)
      await expectRefusal(
        w,
        async () =>
          (await w.admin.ok(REJECT, { input: { payoutId: payout.id, reason: '   ' } })).rejectPayout,
        'INVALID_INPUT',
        'input.reason',
      )
      const rejected = (
        await w.admin.ok(REJECT, { input: { payoutId: payout.id, reason: 'bank details missing' } })
      ).rejectPayout
      expect(rejected.userErrors).toEqual([])
      expect(rejected.payout).toMatchObject({
        status: 'REJECTED',
        decisionNote: 'bank details missing',
        decidedBy: { id: w.admin.userId },
        ledgerTransactionId: null,
      })
      expect(await earningsOf(w, creator.userId)).toEqual({
        coins: before.coins,
        held: before.held - 200,
        available: before.available + 200,
      })
      expect(await holdOf(w, payout.id)).toMatchObject({
        status: 'voided',
        resolution: { decision: 'rejected', decidedBy: w.admin.userId, reason: 'bank details missing' },
      })
      expect(await transactionCount(w)).toBe(transactions)

      // Rejecting again returns it; approving it now is refused.
      const again = (await secondAdmin.ok(REJECT, { input: { payoutId: payout.id, reason: 'again' } }))
        .rejectPayout
      expect(again.payout).toMatchObject({ status: 'REJECTED', decisionNote: 'bank details missing' })
      await expectRefusal(
        w,
        async () => (await w.admin.ok(APPROVE, { input: { payoutId: payout.id } })).approvePayout,
        'PAYOUT_NOT_PENDING',
      )
      await expectBooksBalanced(w)
    })
  })

  describe('listing', () => {
    it('shows creators their own requests, newest first, page by page', async () => {
      const all: any[] = []
      let after: string | null = null
      for (let page = 0; page < 20; page++) {
        const { me }: { me: any } = await creator.ok(MY_PAYOUTS, { first: 2, after })
        all.push(...me.earnings.payouts.edges.map((e: any) => e.node))
        if (!me.earnings.payouts.pageInfo.hasNextPage) break
        after = me.earnings.payouts.pageInfo.endCursor
      }
      const [count] = rowsOf<{ n: string }>(
        await w.app.database.db.execute(
          sql`select count(*)::text as n from payout_requests where creator_id = ${creator.userId}`,
        ),
      )
      expect(all.length).toBe(Number(count?.n))
      expect(new Set(all.map((p) => p.id)).size).toBe(all.length)
      expect(all.every((p) => p.creator.id === creator.userId)).toBe(true)
      const times = all.map((p) => Date.parse(p.requestedAt))
      expect(times).toEqual([...times].sort((a, b) => b - a))
    })

    it('gives admins the review queue, oldest first, filtered by status', async () => {
      const pending: any[] = []
      let after: string | null = null
      for (let page = 0; page < 20; page++) {
        const { payoutRequests }: { payoutRequests: any } = await w.admin.ok(QUEUE, {
          status: 'PENDING',
          first: 1,
          after,
        })
        pending.push(...payoutRequests.edges.map((e: any) => e.node))
        if (!payoutRequests.pageInfo.hasNextPage) break
        after = payoutRequests.pageInfo.endCursor
      }
      const rows = rowsOf<{ id: string }>(
        await w.app.database.db.execute(
          sql`select id::text from payout_requests where status = 'pending' order by requested_at, id`,
        ),
      )
      expect(pending.map((p) => p.id)).toEqual(rows.map((r) => r.id))
      expect(pending.length).toBeGreaterThan(1)
      const everything = (await w.admin.ok(QUEUE, { first: 100 })).payoutRequests.edges.map(
        (e: any) => e.node.status,
      )
      expect(new Set(everything)).toEqual(new Set(['PENDING', 'APPROVED', 'REJECTED']))
      const bad = await w.admin.raw(QUEUE, { first: 1, after: 'bm90LWEtY3Vyc29y' })
      expect(bad.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT')
      const tooMany = await w.admin.raw(QUEUE, { first: 101 })
      expect(tooMany.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT')
    })

    it('leaves the books balanced', async () => {
      await expectBooksBalanced(w)
    })
  })
})

describe('the schema', () => {
  it('reaches payout requests only through your earnings, the admins’ queue and the payout mutations', () => {
    const schema = buildSchema(
      readFileSync(fileURLToPath(new URL('../schema.graphql', import.meta.url)), 'utf8'),
    )
    const carriesPayouts = (named: GraphQLNamedType): boolean => {
      if (named.name === 'Payout') return true
      if (!isObjectType(named) || !named.name.endsWith('Connection')) return false
      const edge = getNamedType(named.getFields().edges?.type ?? named)
      return isObjectType(edge) && getNamedType(edge.getFields().node?.type ?? edge).name === 'Payout'
    }
    const ways: string[] = []
    for (const type of Object.values(schema.getTypeMap())) {
      if (!isObjectType(type) || type.name.startsWith('__')) continue
      for (const field of Object.values(type.getFields())) {
        if (carriesPayouts(getNamedType(field.type))) ways.push(`${type.name}.${field.name}`)
      }
    }
    expect(ways.sort()).toEqual([
      'ApprovePayoutPayload.payout',
      'Earnings.payouts',
      'EarningsPayoutsConnectionEdge.node',
      'Query.payoutRequests',
      'QueryPayoutRequestsConnectionEdge.node',
      'RejectPayoutPayload.payout',
      'RequestPayoutPayload.payout',
    ])
  })
})

describe('a request nobody reviews', () => {
  let w: World
  let creator: Actor

  beforeAll(async () => {
    // Holds of 1.8 seconds.
    w = await world({ ...ENV, PAYOUT_HOLD_HOURS: '0.0005' })
    creator = await signIn(w.app, 'creator', ['creator'])
    await earn(w, creator, 1_000)
  })
  afterAll(() => w?.app.stop())

  it('expires with its hold: the coins are back, nothing is posted, and it can no longer be approved', async () => {
    const { payout } = await request(creator, 500)
    expect(payout.status).toBe('PENDING')
    const { me } = await creator.ok(MY_PAYOUTS)
    const expiresAt = Date.parse(me.earnings.payouts.edges[0].node.expiresAt)
    expect(expiresAt - Date.parse(payout.requestedAt)).toBeGreaterThan(1_000)
    expect(await earningsOf(w, creator.userId)).toEqual({ coins: 1_000, held: 500, available: 500 })
    const transactions = await transactionCount(w)

    await new Promise((resolve) => setTimeout(resolve, Math.max(0, expiresAt - Date.now()) + 300))
    // Its time is up before the expiry job runs: approval is already refused.
    await expectRefusal(
      w,
      async () => (await w.admin.ok(APPROVE, { input: { payoutId: payout.id } })).approvePayout,
      'PAYOUT_NOT_PENDING',
    )
    // The ledger's expiry job (the server runs it periodically).
    expect(await w.app.services.ledger.expireHolds()).toBe(1)
    const [node] = (await creator.ok(MY_PAYOUTS)).me.earnings.payouts.edges.map((e: any) => e.node)
    expect(node).toMatchObject({
      id: payout.id,
      status: 'EXPIRED',
      decidedAt: expect.any(String),
      decidedBy: null,
    })
    expect(await earningsOf(w, creator.userId)).toEqual({ coins: 1_000, held: 0, available: 1_000 })
    expect(await holdOf(w, payout.id)).toMatchObject({ status: 'expired', resolution: { reason: 'expired' } })
    expect(await transactionCount(w)).toBe(transactions)
    await expectRefusal(
      w,
      async () => (await w.admin.ok(REJECT, { input: { payoutId: payout.id, reason: 'late' } })).rejectPayout,
      'PAYOUT_NOT_PENDING',
    )
    // The coins can be requested again (an expired request does not count against the cap).
    expect((await request(creator, 1_000)).userErrors).toEqual([])
    await expectBooksBalanced(w)
  })
})

describe.skipIf(!onPostgres)('payouts under concurrent decisions (PostgreSQL)', () => {
  let w: World
  let admins: Actor[]
  let creator: Actor

  beforeAll(async () => {
    w = await world({ ...ENV, PAYOUT_DAILY_CAP_COINS: '1000000' })
    admins = [w.admin, await signIn(w.app, 'admin2', ['admin'])]
    creator = await signIn(w.app, 'creator', ['creator'])
    await earn(w, creator, 20_000)
  })
  afterAll(() => w?.app.stop())

  it('posts a payout once when two admins approve it at the same time, many times over', async () => {
    for (let round = 0; round < 5; round++) {
      const { payout } = await request(creator, 1_000)
      const before = await earningsOf(w, creator.userId)
      const payable = await balanceOf(w, platform.payoutsPayable('USD'))
      const answers = await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          (admins[i % 2] as Actor).ok(APPROVE, { input: { payoutId: payout.id, note: `admin ${i % 2}` } }),
        ),
      )
      for (const a of answers) {
        expect(a.approvePayout.userErrors).toEqual([])
        expect(a.approvePayout.payout.status).toBe('APPROVED')
      }
      // Everyone is told of the one decision that was made.
      expect(new Set(answers.map((a) => a.approvePayout.payout.decidedBy.id)).size).toBe(1)
      expect(await transactionsWithKey(w, `payout:${payout.id}`)).toHaveLength(1)
      expect(await earningsOf(w, creator.userId)).toEqual({
        coins: before.coins - 1_000,
        held: before.held - 1_000,
        available: before.available,
      })
      expect(await balanceOf(w, platform.payoutsPayable('USD'))).toBe(payable + 500)
    }
    await expectBooksBalanced(w)
  })

  it('lets one decision win when an approval and a rejection race', async () => {
    for (let round = 0; round < 5; round++) {
      const { payout } = await request(creator, 500)
      const [approve, reject] = await Promise.all([
        (admins[0] as Actor).ok(APPROVE, { input: { payoutId: payout.id } }),
        (admins[1] as Actor).ok(REJECT, { input: { payoutId: payout.id, reason: 'race' } }),
      ])
      const approved = approve.approvePayout.userErrors.length === 0
      const rejected = reject.rejectPayout.userErrors.length === 0
      expect(approved !== rejected, JSON.stringify([approve, reject])).toBe(true)
      const loser = approved ? reject.rejectPayout : approve.approvePayout
      expect(loser.userErrors[0].code).toBe('PAYOUT_NOT_PENDING')
      const posted = await transactionsWithKey(w, `payout:${payout.id}`)
      expect(posted).toHaveLength(approved ? 1 : 0)
      expect((await holdOf(w, payout.id))?.status).toBe(approved ? 'posted' : 'voided')
    }
    await expectBooksBalanced(w)
  })

  it('keeps to the daily cap when one creator sends many requests at once', async () => {
    const capped = await world({ ...ENV, PAYOUT_DAILY_CAP_COINS: '1000' })
    try {
      const who = await signIn(capped.app, 'rushing', ['creator'])
      await earn(capped, who, 5_000)
      const answers = await Promise.all(Array.from({ length: 10 }, () => request(who, 300)))
      const accepted = answers.filter((a) => a.userErrors.length === 0)
      expect(accepted).toHaveLength(3)
      expect(answers.filter((a) => a.userErrors[0]?.code === 'PAYOUT_CAP_EXCEEDED')).toHaveLength(7)
      expect(await earningsOf(capped, who.userId)).toMatchObject({ held: 900 })
    } finally {
      await capped.app.stop()
    }
  })
})
