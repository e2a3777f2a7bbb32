import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type DatabaseConfig, openDatabase } from '../../src/db/client.js'
import { rowsOf } from '../../src/db/rows.js'
import {
  creatorEarnings,
  isShardedAccount,
  LANES_MAX,
  Ledger,
  LedgerError,
  type PostingRequest,
  platform,
  shardParent,
  userWallet,
} from '../../src/ledger/index.js'
import { laneOf, shardCode, shardCodes } from '../../src/ledger/lanes.js'
import { createTestDatabase, onPostgres, type TestDatabase } from '../support/db.js'

// Lanes (src/ledger/lanes.ts): postings split by debited account over
// several writers, the hot accounts' credits on per-lane shards, balances
// read as sums, shards swept back into their account.

describe('shard codes', () => {
  it('names a shard after its account and finds the account again', () => {
    expect(shardCode('platform:commission', 1)).toBe('platform:commission:shard1')
    expect(shardParent('user:abc:earnings:shard7')).toBe('user:abc:earnings')
    expect(shardParent('user:abc:earnings')).toBeNull()
    expect(shardParent('platform:commission:shard0')).toBeNull()
    expect(shardCodes('platform:commission')).toHaveLength(LANES_MAX - 1)
    expect(() => shardCode('platform:commission', 0)).toThrow()
    expect(() => shardCode('platform:commission', LANES_MAX)).toThrow()
  })

  it('shards the commission and creator earnings, nothing else', () => {
    expect(isShardedAccount(platform.commission)).toBe(true)
    expect(isShardedAccount(creatorEarnings('00000000-0000-4000-8000-000000000001').code)).toBe(true)
    expect(isShardedAccount(userWallet('00000000-0000-4000-8000-000000000001').code)).toBe(false)
    expect(isShardedAccount(platform.coinsIssued)).toBe(false)
    expect(isShardedAccount('user:x:earnings:shard1')).toBe(false)
  })
})

let t: TestDatabase
beforeAll(async () => {
  t = await createTestDatabase({ poolMax: 10 })
})
afterAll(() => t.drop())

const id = (n: number) => `00000000-0000-4000-8000-${n.toString().padStart(12, '0')}`
let keys = 0

describe.skipIf(onPostgres)('lanes on PGlite', () => {
  it('writes in one lane whatever is asked: PGlite has one connection', () => {
    const ledger = new Ledger(t.database, { lanes: 4, sharded: isShardedAccount })
    expect(ledger.laneCount).toBe(1)
  })
})

describe.skipIf(!onPostgres)('lanes on PostgreSQL', () => {
  let ledger: Ledger
  const creator = creatorEarnings(id(900))
  const wallets = Array.from({ length: 12 }, (_, i) => userWallet(id(100 + i)))

  beforeAll(async () => {
    ledger = new Ledger(t.database, { lanes: 3, sharded: isShardedAccount })
    await Promise.all(
      wallets.map((wallet, i) =>
        ledger.post({
          idempotencyKey: `lanes-fund-${i}`,
          kind: 'recharge',
          entries: [
            { account: platform.coinsIssued, direction: 'debit', amount: 1_000n },
            { account: wallet, direction: 'credit', amount: 1_000n },
          ],
        }),
      ),
    )
  })

  const gift = (wallet: (typeof wallets)[number], coins: bigint): PostingRequest => ({
    idempotencyKey: `lanes-gift-${keys++}`,
    kind: 'gift',
    entries: [
      { account: wallet, direction: 'debit', amount: coins },
      { account: creator, direction: 'credit', amount: coins / 2n },
      { account: platform.commission, direction: 'credit', amount: coins - coins / 2n },
    ],
  })

  const balances = async () => ({
    creator: (await ledger.balance(creator)).balance,
    commission: (await ledger.balance(platform.commission)).balance,
  })

  it('credits each lane’s shard, and reads the sharded account as the sum', async () => {
    expect(ledger.laneCount).toBe(3)
    const before = await balances()
    const results = await Promise.all(wallets.map((w) => ledger.post(gift(w, 10n))))
    const lanes = new Set<number>()
    for (const { transaction } of results) {
      const credit = transaction.entries.find(
        (e) => e.direction === 'credit' && e.accountCode.includes('earnings'),
      )
      expect(credit).toBeDefined()
      expect(shardParent(credit?.accountCode ?? '') ?? credit?.accountCode).toBe(creator.code)
      lanes.add(credit?.accountCode.endsWith(':shard1') ? 1 : credit?.accountCode.endsWith(':shard2') ? 2 : 0)
    }
    // Twelve consecutive wallets spread over the three lanes.
    expect([...lanes].sort()).toEqual([0, 1, 2])
    const after = await balances()
    expect(after.creator - before.creator).toBe(60n)
    expect(after.commission - before.commission).toBe(60n)
    // The account row alone holds only lane 0's part.
    const [row] = rowsOf<{ balance: string }>(
      await t.database.db.execute(
        sql`select balance::text from ledger_accounts where code = ${creator.code}`,
      ),
    )
    expect(BigInt(row?.balance ?? '0')).toBeLessThan(after.creator)
    expect((await ledger.checkIntegrity()).problems).toEqual([])
  })

  it('answers a retry with the original, in the same lane', async () => {
    const request = gift(wallets[1] as (typeof wallets)[number], 4n)
    const first = await ledger.post(request)
    const again = await ledger.post(request)
    expect(again.replayed).toBe(true)
    expect(again.transaction.id).toBe(first.transaction.id)
    // The same key with other content is refused, as without lanes.
    await expect(
      ledger.post({ ...request, entries: request.entries.map((e) => ({ ...e, amount: e.amount * 2n })) }),
    ).rejects.toMatchObject({ code: 'IDEMPOTENCY_KEY_REUSED' })
  })

  it('sweeps the shards into the account without changing its balance', async () => {
    const before = await balances()
    const at = new Date().toISOString()
    expect(await ledger.balanceAt(creator, at)).toBe(before.creator)
    const swept = await ledger.sweep(creator)
    expect(swept).toBe(2)
    expect(await ledger.sweep(creator)).toBe(0) // nothing left
    const after = await balances()
    expect(after).toEqual(before)
    const rows = rowsOf<{ code: string; balance: string }>(
      await t.database.db.execute(
        sql`select code, balance::text from ledger_accounts where code like ${`${creator.code}%`} order by code`,
      ),
    )
    expect(rows.map((r) => [r.code, BigInt(r.balance)])).toEqual([
      [creator.code, after.creator],
      [`${creator.code}:shard1`, 0n],
      [`${creator.code}:shard2`, 0n],
    ])
    // As of before the sweep, the history still sums to the balance then.
    expect(await ledger.balanceAt(creator, at)).toBe(before.creator)
    await expect(ledger.sweep(`${creator.code}:shard1`)).rejects.toBeInstanceOf(LedgerError)
  })

  it('sweeps before a debit, so the whole balance can be spent', async () => {
    await Promise.all(wallets.map((w) => ledger.post(gift(w, 2n))))
    const { balance } = await ledger.balance(creator)
    const [row] = rowsOf<{ balance: string }>(
      await t.database.db.execute(
        sql`select balance::text from ledger_accounts where code = ${creator.code}`,
      ),
    )
    expect(BigInt(row?.balance ?? '0')).toBeLessThan(balance)
    // A debit of everything: only possible once the shards are swept into the account.
    const paid = await ledger.post({
      idempotencyKey: `lanes-payout-${keys++}`,
      kind: 'payout',
      entries: [
        { account: creator, direction: 'debit', amount: balance },
        { account: platform.coinsIssued, direction: 'credit', amount: balance },
      ],
    })
    expect(paid.transaction.entries[0]?.accountCode).toBe(creator.code)
    expect((await ledger.balance(creator)).balance).toBe(0n)
  })

  it('sweeps before a debit with one lane too: shards of earlier lanes keep their coins', async () => {
    await Promise.all(wallets.map((w) => ledger.post(gift(w, 6n))))
    const { balance } = await ledger.balance(creator)
    const oneLane = new Ledger(t.database, { lanes: 1, sharded: isShardedAccount })
    expect(oneLane.laneCount).toBe(1)
    expect((await oneLane.balance(creator)).balance).toBe(balance)
    await oneLane.post({
      idempotencyKey: `lanes-payout-${keys++}`,
      kind: 'payout',
      entries: [
        { account: creator, direction: 'debit', amount: balance },
        { account: platform.coinsIssued, direction: 'credit', amount: balance },
      ],
    })
    expect((await ledger.balance(creator)).balance).toBe(0n)
    expect((await ledger.checkIntegrity()).problems).toEqual([])
  })

  it('reverses a gift credited on a shard against the account itself', async () => {
    let posted: Awaited<ReturnType<Ledger['post']>> | undefined
    for (const wallet of wallets) {
      posted = await ledger.post(gift(wallet, 8n))
      if (posted.transaction.entries.some((e) => shardParent(e.accountCode) !== null)) break
    }
    const original = posted as Awaited<ReturnType<Ledger['post']>>
    expect(original.transaction.entries.some((e) => shardParent(e.accountCode) !== null)).toBe(true)
    const before = await balances()
    const reversed = await ledger.reverse(original.transaction.id, { idempotencyKey: `lanes-rev-${keys++}` })
    expect(reversed.transaction.entries.every((e) => shardParent(e.accountCode) === null)).toBe(true)
    const after = await balances()
    expect(before.creator - after.creator).toBe(4n)
    expect(before.commission - after.commission).toBe(4n)
    expect((await ledger.checkIntegrity()).problems).toEqual([])
  })

  it('takes no more lanes than the pool can give a writer to', async () => {
    for (const [poolMax, lanes] of [
      [3, 1],
      [4, 2],
      [5, 3],
    ] as const) {
      const database = await openDatabase({ ...t.config, poolMax } as DatabaseConfig)
      try {
        expect(
          new Ledger(database, { lanes: 8, sharded: isShardedAccount }).laneCount,
          `pool ${poolMax}`,
        ).toBe(lanes)
      } finally {
        await database.close()
      }
    }
  })

  it('sends a wallet’s postings to one lane, by its account id', async () => {
    const [account] = await ledger.accounts.resolve(t.database.db, [wallets[0] as (typeof wallets)[number]])
    const request = gift(wallets[0] as (typeof wallets)[number], 2n)
    const prepared = { request, accounts: [account], requestHash: '', reversesId: null } as Parameters<
      typeof laneOf
    >[0]
    expect(laneOf(prepared, 3)).toBe(Number((account?.id ?? 0n) % 3n))
    expect(laneOf(prepared, 1)).toBe(0)
  })
})
