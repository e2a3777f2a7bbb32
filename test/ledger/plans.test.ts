import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openDatabase } from '../../src/db/client.js'
import { creatorEarnings, Ledger, platform, userWallet } from '../../src/ledger/index.js'
import { createTestDatabase, onPostgres, type TestDatabase } from '../support/db.js'
import { growForPlanner, ledgerGrowth, readsBetween, readsSoFar } from '../support/grow.js'

// A posting's statements and the guard triggers it fires probe the rows they
// need through indexes, whatever size the ledger has when a session plans
// them. Their plans are generic, made once per session and kept: a plan made
// on a large ledger that merge-joined the batch's transactions with the
// whole entries index (the check at commit, 2026-11-26: ~560,000 index
// entries read per commit, the hot-creator benchmark at a tenth of its
// throughput once the pool's sessions were renewed) got slower with every
// posting the ledger held. Here sessions opened on a ledger shown to the
// planner as 250,000 transactions post, and the rows and index entries
// their postings read are counted (pg_stat_user_tables,
// pg_stat_user_indexes).

const SENDERS = 200
const FILLER = 2_000
/** The size the planner is shown (ledgerGrowth). */
const BLOAT_TRANSACTIONS = 250_000
const MEASURED = 10
/**
 * Rows and index entries a gift-shaped posting may read, all tables together:
 * some per entry and account (~42 measured), where a scan of the grown tables
 * reads tens of thousands (88,067 per posting before the fix).
 */
const READS_PER_POSTING_MAX = 200

let t: TestDatabase
let keys = 0

const wallet = (i: number) => userWallet(`00000000-0000-4000-8000-${String(i).padStart(12, '0')}`)
const creator = creatorEarnings('00000000-0000-4000-8000-100000000000')

const gift = (ledger: Ledger, sender: number) =>
  ledger.post({
    idempotencyKey: `plans-gift-${keys++}`,
    kind: 'gift',
    entries: [
      { account: wallet(sender), direction: 'debit', amount: 10n },
      { account: creator, direction: 'credit', amount: 5n },
      { account: platform.commission, direction: 'credit', amount: 5n },
    ],
  })

describe.skipIf(!onPostgres)('plans on a grown ledger (PostgreSQL)', () => {
  beforeAll(async () => {
    t = await createTestDatabase()
    const filler = new Ledger(t.database)
    await Promise.all(
      Array.from({ length: SENDERS }, (_, i) =>
        filler.post({
          idempotencyKey: `plans-fund-${i}`,
          kind: 'recharge',
          entries: [
            { account: platform.coinsIssued, direction: 'debit', amount: 1_000_000n },
            { account: wallet(i), direction: 'credit', amount: 1_000_000n },
          ],
        }),
      ),
    )
    // Concurrent callers: the engine batches them, as under load.
    for (let done = 0; done < FILLER; done += 400)
      await Promise.all(Array.from({ length: 400 }, (_, i) => gift(filler, (done + i) % SENDERS)))
    await growForPlanner(t.url as string, ledgerGrowth(BLOAT_TRANSACTIONS))
  }, 120_000)
  afterAll(() => t?.drop())

  it('reads a few rows per posting, not the ledger, in sessions planned on it', async () => {
    const before = await readsSoFar(t.url as string)
    // New sessions: their statements and triggers are planned on the ledger as it is now.
    const database = await openDatabase({ kind: 'postgres', url: t.url as string, poolMax: 2 })
    try {
      const ledger = new Ledger(database)
      for (let i = 0; i < MEASURED; i++) await gift(ledger, 1 + i)
    } finally {
      await database.close()
    }
    const after = await readsSoFar(t.url as string)
    expect(
      (after.total - before.total) / MEASURED,
      `reads per posting by relation: ${JSON.stringify(readsBetween(before, after))}`,
    ).toBeLessThanOrEqual(READS_PER_POSTING_MAX)
  })
})
