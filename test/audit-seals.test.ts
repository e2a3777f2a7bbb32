import { randomUUID } from 'node:crypto'
import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { checkLedgerIntegrity } from '../src/audit/integrity.js'
import {
  chainHash,
  rangeContent,
  Sealer,
  type SealRun,
  sealsPage,
  startSealing,
  verifySeals,
} from '../src/audit/seals.js'
import { type Database, type DbOrTx, openDatabase } from '../src/db/client.js'
import { rowsOf } from '../src/db/rows.js'
import { creatorEarnings, Ledger, type PostingRequest, platform, userWallet } from '../src/ledger/index.js'
import { type Actor, signIn } from './support/actors.js'
import { startTestApp, type TestApp } from './support/app.js'
import { onPostgres } from './support/db.js'

// Tamper evidence end to end: the sealer chains closed ranges of the
// journal; ledgerIntegrity (over HTTP, as an accountant) recomputes the
// chain and the books, and reports what a superuser edited behind the
// guards' back. On PostgreSQL, sealers race postings that commit out of id
// order, and every transaction still ends up in exactly one seal.

const INTEGRITY = `query Integrity {
  ledgerIntegrity {
    ok checkedTransactions checkedAccounts checkedSeals sealedThroughTransactionId
    problems { kind message transactionId accountId }
  }
}`

interface Problem {
  kind: string
  message: string
  transactionId: string | null
  accountId: string | null
}
interface Integrity {
  ok: boolean
  checkedTransactions: number
  checkedAccounts: number
  checkedSeals: number
  sealedThroughTransactionId: string | null
  problems: Problem[]
}

let app: TestApp
let accountant: Actor
let ledger: Ledger
let run: string
let keys = 0

const user = (n: number) => `00000000-0000-4000-8000-${run}${n.toString().padStart(4, '0')}`

function gift(from: number, to: number, coins: bigint, extra: Partial<PostingRequest> = {}): PostingRequest {
  const creatorCoins = coins / 2n
  return {
    idempotencyKey: `seal-test-${run}-${++keys}`,
    kind: 'gift',
    entries: [
      { account: userWallet(user(from)), direction: 'debit', amount: coins },
      { account: creatorEarnings(user(to)), direction: 'credit', amount: creatorCoins },
      { account: platform.commission, direction: 'credit', amount: coins - creatorCoins },
    ],
    ...extra,
  }
}

const fund = (n: number, coins: bigint): PostingRequest => ({
  idempotencyKey: `seal-fund-${run}-${++keys}`,
  kind: 'recharge',
  entries: [
    { account: platform.coinsIssued, direction: 'debit', amount: coins },
    { account: userWallet(user(n)), direction: 'credit', amount: coins },
  ],
})

async function integrity(): Promise<Integrity> {
  return (await accountant.ok<{ ledgerIntegrity: Integrity }>(INTEGRITY)).ledgerIntegrity
}

async function all<T>(db: DbOrTx, query: ReturnType<typeof sql>): Promise<T[]> {
  return rowsOf<T>(await db.execute(query))
}

/** Runs statements as a superuser with the guard triggers off (session_replication_role = replica). */
async function behindTheGuards(...statements: string[]): Promise<void> {
  await app.database.db.transaction(async (tx) => {
    await tx.execute(sql`set local session_replication_role = replica`)
    for (const statement of statements) await tx.execute(sql.raw(statement))
  })
}

/** Every seal, in chain order. */
async function allSeals(db: DbOrTx = app.database.db) {
  return sealsPage(db, 0n, 1_000_000)
}

/** Seals until the whole visible journal is under seal. */
async function sealEverything(sealer: Sealer = app.services.seals): Promise<void> {
  for (let i = 0; i < 100; i++) {
    await sealer.sealClosed()
    const [row] = await all<{ unsealed: string }>(
      app.database.db,
      sql`select count(*)::text as unsealed from ledger_transactions
           where id > coalesce((select max(last_transaction_id) from ledger_seals), 0)`,
    )
    if (row?.unsealed === '0') return
  }
  throw new Error('the journal did not get sealed')
}

beforeAll(async () => {
  app = await startTestApp()
  accountant = await signIn(app, 'auditor', ['accountant'])
  ledger = app.services.ledger
  run = randomUUID().slice(0, 8)
  for (const n of [1, 2, 3]) await ledger.post(fund(n, 10_000n))
})
afterAll(() => app?.stop())

// ---- the canonical content, reimplemented here from docs/AUDIT.md ------------------

/** "2026-11-26T01:02:03.123456Z" from microseconds since the epoch. */
function utcMicros(micros: bigint): string {
  const ms = Number(micros / 1000n)
  return `${new Date(ms).toISOString().slice(0, 19)}.${(micros % 1_000_000n).toString().padStart(6, '0')}Z`
}

async function referenceContent(db: DbOrTx, first: bigint, last: bigint): Promise<string> {
  const transactions = await all<Record<string, string | null>>(
    db,
    sql`select id::text, kind, idempotency_key, request_hash, description, metadata::text as metadata,
               reverses_id::text, (extract(epoch from posted_at) * 1000000)::bigint::text as micros
          from ledger_transactions t where t.id between ${first} and ${last} order by t.id`,
  )
  const entries = await all<Record<string, string>>(
    db,
    sql`select id::text, transaction_id::text, account_id::text, direction::text, amount::text, unit,
               account_seq::text, balance_after::text, (extract(epoch from posted_at) * 1000000)::bigint::text as micros
          from ledger_entries e where e.transaction_id between ${first} and ${last} order by e.transaction_id, e.id`,
  )
  const lines = transactions.map((t) => {
    const head = [
      'T',
      t.id,
      JSON.stringify(t.kind),
      JSON.stringify(t.idempotency_key),
      JSON.stringify(t.request_hash),
      JSON.stringify(t.description),
      t.metadata,
      t.reverses_id ?? '',
      utcMicros(BigInt(t.micros as string)),
    ].join('|')
    const own = entries
      .filter((e) => e.transaction_id === t.id)
      .map((e) =>
        [
          'E',
          e.id,
          e.account_id,
          e.direction,
          e.amount,
          JSON.stringify(e.unit),
          e.account_seq,
          e.balance_after,
          utcMicros(BigInt(e.micros as string)),
        ].join('|'),
      )
    return [head, ...own].map((l) => `${l}\n`).join('')
  })
  return `giftledger-seal-v1|${first}|${last}|${transactions.length}|${entries.length}\n${lines.join('')}`
}

describe('seals', () => {
  it('chain closed ranges in bounded seals whose content is the documented canonical form', async () => {
    // Free text with every character the format must escape.
    await ledger.post(
      gift(1, 2, 10n, {
        description: 'a "quoted" | piped\nline\\ with é and \u0001',
        metadata: { z: 1, a: ['x', { b: null }], é: 'ü' },
      }),
    )
    await ledger.post({ ...gift(1, 2, 11n), idempotencyKey: `key with | and "quotes", ${run}` })
    const original = await ledger.post(gift(2, 3, 20n))
    await ledger.reverse(original.transaction.id, { idempotencyKey: `seal-rev-${run}` })
    for (let i = 0; i < 7; i++) await ledger.post(gift(3, 1, BigInt(5 + i)))

    const small = new Sealer(app.database.db, { batchSizeMax: 3 })
    await sealEverything(small)
    const seals = await allSeals()
    const [{ total, newest } = { total: '0', newest: '0' }] = await all<{ total: string; newest: string }>(
      app.database.db,
      sql`select count(*)::text as total, max(id)::text as newest from ledger_transactions`,
    )
    expect(seals.length).toBeGreaterThanOrEqual(Math.ceil(Number(total) / 3))

    let previousHash = ''
    let expectedFirst = 1n
    for (const seal of seals) {
      expect(seal.transactionCount).toBeLessThanOrEqual(3)
      expect(seal.firstTransactionId).toBe(expectedFirst)
      expect(seal.previousHash).toBe(previousHash)
      const text = await referenceContent(app.database.db, seal.firstTransactionId, seal.lastTransactionId)
      const fromDatabase = await rangeContent(
        app.database.db,
        seal.firstTransactionId,
        seal.lastTransactionId,
        { withText: true },
      )
      expect(fromDatabase.text).toBe(text)
      const { createHash } = await import('node:crypto')
      expect(seal.contentHash).toBe(createHash('sha256').update(text, 'utf8').digest('hex'))
      expect(seal.hash).toBe(
        createHash('sha256')
          .update(previousHash + seal.contentHash)
          .digest('hex'),
      )
      expect(seal.hash).toBe(chainHash(previousHash, seal.contentHash))
      previousHash = seal.hash
      expectedFirst = seal.lastTransactionId + 1n
    }
    expect(expectedFirst - 1n).toBe(BigInt(newest))
    expect(seals.reduce((n, s) => n + s.transactionCount, 0)).toBe(Number(total))

    const report = await integrity()
    expect(report).toMatchObject({ ok: true, problems: [], checkedSeals: seals.length })
    expect(report.sealedThroughTransactionId).toBe(newest)
  })

  it('seal only new transactions on the next run, and nothing when nothing is new', async () => {
    const before = await allSeals()
    expect(await app.services.seals.sealClosed()).toMatchObject({ seals: 0, transactions: 0 })
    const posted = await ledger.post(gift(1, 3, 9n))
    const run2 = await app.services.seals.sealClosed()
    expect(run2).toMatchObject({ seals: 1, transactions: 1, horizon: posted.transaction.id })
    const after = await allSeals()
    expect(after.slice(0, before.length)).toEqual(before)
    expect(after.at(-1)).toMatchObject({
      firstTransactionId: posted.transaction.id,
      lastTransactionId: posted.transaction.id,
      previousHash: before.at(-1)?.hash,
    })
  })

  it('run in the background every interval, and stop cleanly', async () => {
    const runs: SealRun[] = []
    const stop = startSealing(app.services.seals, {
      intervalMs: 100,
      onError: (error) => {
        throw error
      },
      onSealed: (run) => runs.push(run),
    })
    try {
      const posted = await ledger.post(gift(2, 1, 8n))
      await vi.waitFor(() => expect(runs.at(-1)?.horizon).toBe(posted.transaction.id), { timeout: 10_000 })
      expect((await allSeals()).at(-1)?.lastTransactionId).toBe(posted.transaction.id)
    } finally {
      await stop()
    }
    const count = (await allSeals()).length
    await ledger.post(gift(2, 1, 8n))
    await new Promise((resolve) => setTimeout(resolve, 300))
    expect((await allSeals()).length).toBe(count)
  })

  it('assign a bare INSERT its xid before its id is drawn (the horizon relies on it)', async () => {
    const db = app.database.db
    // A probe that fires after the ledger's own BEFORE STATEMENT triggers
    // (alphabetical order) and before any row's defaults are evaluated.
    await db.execute(
      sql.raw(`create function zz_audit_probe() returns trigger language plpgsql as $$
        begin raise exception 'probe: xid %', coalesce(txid_current_if_assigned()::text, 'none'); end $$`),
    )
    await db.execute(
      sql.raw('create table zz_audit_probe_target (id bigint generated always as identity, v text)'),
    )
    for (const table of ['ledger_transactions', 'zz_audit_probe_target']) {
      await db.execute(
        sql.raw(`create trigger zz_audit_probe before insert on ${table}
                   for each statement execute function zz_audit_probe()`),
      )
    }
    const probe = async (statement: string) => {
      try {
        await db.transaction(async (tx) => {
          await tx.execute(sql.raw(statement))
        })
      } catch (error) {
        return /probe: xid (\w+)/.exec(String((error as { cause?: unknown }).cause ?? error))?.[1]
      }
      return 'no probe'
    }
    try {
      expect(
        await probe(`insert into ledger_transactions (idempotency_key, request_hash, kind, posted_at)
                     values ('probe-${run}', 'x', 'probe', now())`),
      ).toMatch(/^\d+$/)
      // Without such a trigger, the first statement of a transaction has no xid yet.
      expect(await probe(`insert into zz_audit_probe_target (v) values ('x')`)).toBe('none')
    } finally {
      await db.execute(sql.raw('drop trigger zz_audit_probe on ledger_transactions'))
      await db.execute(sql.raw('drop table zz_audit_probe_target'))
      await db.execute(sql.raw('drop function zz_audit_probe()'))
    }
  })
})

describe('ledgerIntegrity after superuser edits behind the guards', () => {
  let target: { transactionId: bigint; entryId: bigint }

  beforeAll(async () => {
    const posted = await ledger.post(gift(2, 1, 40n))
    for (let i = 0; i < 4; i++) await ledger.post(gift(1, 2, BigInt(3 + i)))
    await sealEverything()
    const entry = posted.transaction.entries.find((e) => e.direction === 'debit')
    target = { transactionId: posted.transaction.id, entryId: entry?.id ?? 0n }
    expect((await integrity()).ok).toBe(true)
  })

  const sealOf = async (transactionId: bigint) =>
    (await allSeals()).find(
      (s) => s.firstTransactionId <= transactionId && transactionId <= s.lastTransactionId,
    )

  it('reports a changed entry amount: the seal no longer matches, and the books do not balance', async () => {
    const seal = await sealOf(target.transactionId)
    expect(seal).toBeDefined()
    await behindTheGuards(`update ledger_entries set amount = amount + 1 where id = ${target.entryId}`)
    try {
      const report = await integrity()
      expect(report.ok).toBe(false)
      const kinds = report.problems.map((p) => p.kind)
      expect(report.problems).toContainEqual(
        expect.objectContaining({
          kind: 'SEAL_CONTENT_MISMATCH',
          transactionId: seal?.firstTransactionId.toString(),
        }),
      )
      expect(report.problems).toContainEqual(
        expect.objectContaining({
          kind: 'TRANSACTION_UNBALANCED',
          transactionId: target.transactionId.toString(),
        }),
      )
      expect(kinds).toContain('BALANCE_CHAIN_BROKEN')
      expect(kinds).toContain('ACCOUNT_BALANCE_MISMATCH')
      // Only the one seal whose range holds the edited entry.
      expect(report.problems.filter((p) => p.kind.startsWith('SEAL_'))).toHaveLength(1)
    } finally {
      await behindTheGuards(`update ledger_entries set amount = amount - 1 where id = ${target.entryId}`)
    }
    expect(await integrity()).toMatchObject({ ok: true, problems: [] })
  })

  it('reports an edit the books cannot see (a description): only the seal catches it', async () => {
    await behindTheGuards(
      `update ledger_transactions set description = description || ' (edited)' where id = ${target.transactionId}`,
    )
    try {
      const report = await integrity()
      expect(report.problems.map((p) => p.kind)).toEqual(['SEAL_CONTENT_MISMATCH'])
      expect(report.problems[0]?.message).toContain('changed since they were sealed')
    } finally {
      await behindTheGuards(
        `update ledger_transactions set description = left(description, length(description) - 9) where id = ${target.transactionId}`,
      )
    }
    expect((await integrity()).ok).toBe(true)
  })

  it('reports a rewritten seal and a deleted seal as a broken chain', async () => {
    const seals = await allSeals()
    expect(seals.length).toBeGreaterThanOrEqual(3)
    const middle = seals[1] as (typeof seals)[number]

    await behindTheGuards(`update ledger_seals set hash = repeat('0', 64) where id = ${middle.id}`)
    try {
      const kinds = (await integrity()).problems.map((p) => p.kind).sort()
      // Its own hash no longer follows from its content, and the next seal points to the old hash.
      expect(kinds).toEqual(['SEAL_CHAIN_BROKEN', 'SEAL_HASH_MISMATCH'])
    } finally {
      await behindTheGuards(`update ledger_seals set hash = '${middle.hash}' where id = ${middle.id}`)
    }

    await behindTheGuards(`delete from ledger_seals where id = ${middle.id}`)
    try {
      const problems = (await integrity()).problems
      expect(problems.map((p) => p.kind).sort()).toEqual(['SEAL_CHAIN_BROKEN', 'SEAL_RANGE_GAP'])
      expect(problems.find((p) => p.kind === 'SEAL_RANGE_GAP')?.transactionId).toBe(
        (middle.lastTransactionId + 1n).toString(),
      )
    } finally {
      await behindTheGuards(
        `insert into ledger_seals (id, first_transaction_id, last_transaction_id, transaction_count, entry_count,
                                   content_hash, previous_hash, hash, sealed_at)
           overriding system value
           values (${middle.id}, ${middle.firstTransactionId}, ${middle.lastTransactionId}, ${middle.transactionCount},
                   ${middle.entryCount}, '${middle.contentHash}', '${middle.previousHash}', '${middle.hash}', '${middle.sealedAt}')`,
      )
    }
    expect((await integrity()).ok).toBe(true)
  })

  it('reports a transaction removed from a sealed range', async () => {
    const seal = await sealOf(target.transactionId)
    await behindTheGuards(
      `create table zz_stash_t as select * from ledger_transactions where id = ${target.transactionId}`,
      `create table zz_stash_e as select * from ledger_entries where transaction_id = ${target.transactionId}`,
      `delete from ledger_entries where transaction_id = ${target.transactionId}`,
      `delete from ledger_transactions where id = ${target.transactionId}`,
    )
    try {
      const report = await integrity()
      const mismatch = report.problems.find((p) => p.kind === 'SEAL_CONTENT_MISMATCH')
      expect(mismatch?.transactionId).toBe(seal?.firstTransactionId.toString())
      expect(mismatch?.message).toContain(
        `${(seal?.transactionCount ?? 0) - 1} transactions and ${(seal?.entryCount ?? 0) - 3} entries now`,
      )
      expect(report.problems.map((p) => p.kind)).toContain('ACCOUNT_BALANCE_MISMATCH')
    } finally {
      await behindTheGuards(
        'insert into ledger_transactions overriding system value select * from zz_stash_t',
        'insert into ledger_entries overriding system value select * from zz_stash_e',
        'drop table zz_stash_t',
        'drop table zz_stash_e',
      )
    }
    expect((await integrity()).ok).toBe(true)
  })
})

describe.skipIf(!onPostgres)('sealing while postings commit out of id order (PostgreSQL)', () => {
  let second: Database

  beforeAll(async () => {
    second = await openDatabase(app.config.database)
  })
  afterAll(() => second?.close())

  it('puts every transaction in exactly one seal, skips none, and the chain verifies', async () => {
    const ledgers = [ledger, new Ledger(second.db)]
    // Two sealers on two pools, as two server instances; small seals, many of them.
    const sealers = [
      new Sealer(app.database.db, { batchSizeMax: 25, horizonWaitMaxMs: 2_000 }),
      new Sealer(second.db, { batchSizeMax: 25, horizonWaitMaxMs: 2_000 }),
    ]
    const WALLETS = 40
    const SLOW = 4
    for (let n = 100; n < 100 + WALLETS; n++) await ledger.post(fund(n, 1_000_000n))
    // The slow postings' accounts are their own: the fast ones never wait on their locks.
    for (let w = 0; w < SLOW; w++) await ledger.post(fund(200 + w, 1_000n))
    const startedSeals = (await allSeals()).length

    let posting = true
    let sealsWhilePosting = 0
    const sealing = sealers.map(async (sealer) => {
      while (posting) {
        const result = await sealer.sealClosed()
        if (posting) sealsWhilePosting += result.seals
        await new Promise((resolve) => setTimeout(resolve, 3))
      }
    })

    // Fast postings through the group-committing engine, and slow ones that
    // draw their id, then hold their database transaction open while later
    // ids commit.
    const outOfOrder: boolean[] = []
    const fast = Array.from({ length: 12 }, async (_, w) => {
      for (let i = 0; i < 120; i++) {
        const from = 100 + ((w * 7 + i) % WALLETS)
        await (ledgers[i % 2] as Ledger).post(gift(from, 100 + ((from + 1) % WALLETS), BigInt(2 + (i % 5))))
      }
    })
    const slow = Array.from({ length: SLOW }, async (_, w) => {
      const db = w % 2 === 0 ? app.database.db : second.db
      const engine = ledgers[w % 2] as Ledger
      for (let i = 0; i < 15; i++) {
        const prepared = await engine.prepare({
          idempotencyKey: `seal-slow-${run}-${++keys}`,
          kind: 'adjustment',
          entries: [
            { account: userWallet(user(200 + w)), direction: 'debit', amount: 1n },
            { account: creatorEarnings(user(300 + w)), direction: 'credit', amount: 1n },
          ],
        })
        await db.transaction(async (tx) => {
          const [result] = await engine.postInTx(tx, [prepared])
          if (!result?.ok) throw result?.error
          await tx.execute(sql`select pg_sleep(${0.02 + Math.random() * 0.15})`)
          const [row] = rowsOf<{ newest: string }>(
            await tx.execute(sql`select max(id)::text as newest from ledger_transactions`),
          )
          outOfOrder.push(BigInt(row?.newest ?? '0') > result.value.transaction.id)
        })
      }
    })
    await Promise.all([...fast, ...slow])
    posting = false
    await Promise.all(sealing)
    await sealEverything(sealers[0])

    // The test raced what it means to: later ids committed while earlier ones were open, and sealing went on.
    expect(outOfOrder.filter(Boolean).length).toBeGreaterThan(0)
    expect(sealsWhilePosting).toBeGreaterThan(0)

    const seals = await allSeals()
    expect(seals.length).toBeGreaterThan(startedSeals)
    const ids = (
      await all<{ id: string }>(
        app.database.db,
        sql`select t.id::text from ledger_transactions t order by t.id`,
      )
    ).map((r) => BigInt(r.id))
    // Ranges follow each other from 1 to the last id; each holds exactly the transactions it counted when sealed.
    let next = 1n
    let i = 0
    for (const seal of seals) {
      expect(seal.firstTransactionId).toBe(next)
      let inRange = 0
      while (i < ids.length && (ids[i] as bigint) <= seal.lastTransactionId) {
        inRange++
        i++
      }
      expect(inRange, `seal ${seal.id}`).toBe(seal.transactionCount)
      next = seal.lastTransactionId + 1n
    }
    expect(i).toBe(ids.length)
    expect(next - 1n).toBe(ids.at(-1))

    const chain = await verifySeals(app.database.db)
    expect(chain.problems).toEqual([])
    expect(chain.checkedSeals).toBe(seals.length)
    const report = await checkLedgerIntegrity(app.database.db)
    expect(report).toMatchObject({ ok: true, problems: [] })
  })
})
