import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BalanceReads, READS_PER_STATEMENT_MAX } from '../../src/ledger/balance-reads.js'
import { Ledger, platform, userWallet } from '../../src/ledger/index.js'
import { createTestDatabase, type TestDatabase } from '../support/db.js'

// Balance reads asked for together are sent together (src/ledger/balance-reads.ts):
// each caller gets its own account's row, and no read is answered from a
// statement sent before it was asked for.

let t: TestDatabase
let ledger: Ledger

beforeAll(async () => {
  t = await createTestDatabase()
  ledger = new Ledger(t.database, { concurrency: 1 })
})
afterAll(() => t.drop())

const wallet = (n: number) => userWallet(`00000000-0000-4000-8000-${n.toString().padStart(12, '0')}`)
let keys = 0

async function fund(n: number, coins: bigint) {
  await ledger.post({
    idempotencyKey: `balance-reads-${++keys}`,
    kind: 'recharge',
    entries: [
      { account: platform.coinsIssued, direction: 'debit', amount: coins },
      { account: wallet(n), direction: 'credit', amount: coins },
    ],
  })
}

describe('balance reads', () => {
  it('sends the reads asked for in one turn as one statement, each caller its own balance', async () => {
    for (let n = 1; n <= 5; n++) await fund(n, BigInt(n * 100))
    const before = { ...ledger.balanceReads.counts }
    const balances = await Promise.all(
      [1, 2, 3, 4, 5, 3].map(async (n) => (await ledger.balance(wallet(n))).balance),
    )
    expect(balances).toEqual([100n, 200n, 300n, 400n, 500n, 300n])
    expect(ledger.balanceReads.counts.statements - before.statements).toBe(1)
    // The account asked for twice is read once.
    expect(ledger.balanceReads.counts.reads - before.reads).toBe(5)
  })

  it('answers a read asked for while a statement is out with a later statement, which sees what committed meanwhile', async () => {
    await fund(6, 10n)
    const before = { ...ledger.balanceReads.counts }
    const first = ledger.balance(wallet(6))
    // The first statement is out (sent on the next tick); a credit commits, then a second read is asked for.
    await new Promise((resolve) => process.nextTick(resolve))
    await fund(6, 5n)
    const second = ledger.balance(wallet(6))
    expect((await second).balance).toBe(15n)
    expect([10n, 15n]).toContain((await first).balance)
    expect(ledger.balanceReads.counts.statements - before.statements).toBe(2)
  })

  it('answers undefined for an account that does not exist, and the others still get theirs', async () => {
    const reads = new BalanceReads(t.database.db)
    const known = (await ledger.balance(wallet(1))).account.id
    const [row, missing] = await Promise.all([reads.read(known), reads.read(987_654_321n)])
    expect(row?.balance).toBe(100n)
    expect(missing).toBeUndefined()
    expect(reads.counts).toEqual({ statements: 1, reads: 2 })
  })

  it(`reads at most ${READS_PER_STATEMENT_MAX} accounts per statement; more go in another, each still answered`, async () => {
    const reads = new BalanceReads(t.database.db)
    const known = (await ledger.balance(wallet(3))).account.id
    // Ids no account has (undefined), the known one last: it goes in the second statement.
    const ids = Array.from({ length: READS_PER_STATEMENT_MAX }, (_, i) => 10_000_000n + BigInt(i))
    const rows = await Promise.all([...ids, known].map((id) => reads.read(id)))
    expect(reads.counts).toEqual({ statements: 2, reads: READS_PER_STATEMENT_MAX + 1 })
    expect(rows.slice(0, -1).every((r) => r === undefined)).toBe(true)
    expect(rows.at(-1)?.balance).toBe(300n)
  })

  it('rejects every read of a statement that failed, and the next reads go on', async () => {
    const reads = new BalanceReads(t.database.db)
    const known = (await ledger.balance(wallet(2))).account.id
    // Out of bigint's range: the statement fails in the database.
    const failing = Promise.allSettled([reads.read(known), reads.read(2n ** 70n)])
    const settled = await failing
    expect(settled.map((s) => s.status)).toEqual(['rejected', 'rejected'])
    expect((await reads.read(known))?.balance).toBe(200n)
  })

  // ledger.balance answers an account it resolved before without resolving it
  // again; a spec that does not match the account, or a code that names none,
  // still gets the refusal, as a rejected promise (never a throw).
  it('refuses a spec that does not match the cached account, an unknown code and a malformed one, each as a rejection', async () => {
    const known = (await ledger.balance(wallet(4))).account
    const mismatched = { ...wallet(4), allowNegative: true }
    const settled = await Promise.allSettled(
      [mismatched, 'user:nobody:wallet', 'not a code'].map((ref) => {
        const answer = ledger.balance(ref)
        expect(answer).toBeInstanceOf(Promise)
        return answer
      }),
    )
    expect(
      settled.map((s) => (s.status === 'rejected' ? (s.reason as { code?: string }).code : s.status)),
    ).toEqual(['ACCOUNT_MISMATCH', 'UNKNOWN_ACCOUNT', 'UNKNOWN_ACCOUNT'])
    // The cached account itself still reads, by spec and by code.
    expect((await ledger.balance(wallet(4))).balance).toBe(400n)
    expect((await ledger.balance(known.code)).balance).toBe(400n)
  })
})
