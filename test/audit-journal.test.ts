import { randomUUID } from 'node:crypto'
import { fc } from '@fast-check/vitest'
import { eq, sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { trialBalance } from '../src/audit/trial-balance.js'
import { rowsOf } from '../src/db/rows.js'
import { coinPackages, rechargeOrders } from '../src/db/schema.js'
import {
  type AccountRef,
  creatorEarnings,
  type Ledger,
  type PostingRequest,
  platform,
  userWallet,
} from '../src/ledger/index.js'
import { type Actor, anonymous, signIn } from './support/actors.js'
import { startTestApp, type TestApp } from './support/app.js'
import { ACCOUNT_STATEMENT, GRANT_COINS, JOURNAL, TRIAL_BALANCE } from './support/operations.js'

// The accountants' read side, end to end over HTTP against the real server
// and database: the journal (filters, pages without duplicates or gaps), the
// statements (balance-after chains), balanceAt and the trial balance at
// arbitrary instants against a replay of the entries, read straight from the
// tables. Instants are compared to the millisecond (docs/AUDIT.md).

let app: TestApp
let ledger: Ledger
let accountant: Actor
let admin: Actor
const run = randomUUID().slice(0, 8)
const users = Array.from({ length: 4 }, () => randomUUID())
const creators = Array.from({ length: 2 }, () => randomUUID())
/** Ids of notable transactions, by name. */
const named: Record<string, string> = {}

let keyCounter = 0
const key = (what: string) => `audit-journal:${run}:${what}:${++keyCounter}`
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

function recharge(user: string, coins: bigint, cents: bigint): PostingRequest {
  return {
    idempotencyKey: key('recharge'),
    kind: 'recharge',
    description: `Recharge of ${coins} coins`,
    metadata: { user, cents: cents.toString() },
    entries: [
      { account: platform.coinsIssued, direction: 'debit', amount: coins },
      { account: userWallet(user), direction: 'credit', amount: coins },
      { account: platform.stripeClearing('USD'), direction: 'debit', amount: cents },
      { account: platform.deferredRevenue('USD'), direction: 'credit', amount: cents },
    ],
  }
}
function gift(from: string, to: string, coins: bigint): PostingRequest {
  const creatorCoins = coins / 2n
  return {
    idempotencyKey: key('gift'),
    kind: 'gift',
    description: `Gift of ${coins} coins`,
    entries: [
      { account: userWallet(from), direction: 'debit', amount: coins },
      { account: creatorEarnings(to), direction: 'credit', amount: creatorCoins },
      { account: platform.commission, direction: 'credit', amount: coins - creatorCoins },
    ],
  }
}
function grant(user: string, coins: bigint): PostingRequest {
  return {
    idempotencyKey: key('grant'),
    kind: 'grant',
    description: 'Promotional coins',
    entries: [
      { account: platform.promotions, direction: 'debit', amount: coins },
      { account: userWallet(user), direction: 'credit', amount: coins },
    ],
  }
}

async function post(request: PostingRequest): Promise<string> {
  return (await ledger.post(request)).transaction.id.toString()
}

beforeAll(async () => {
  app = await startTestApp({
    env: { RATE_LIMIT_MUTATIONS_PER_SECOND: '1000', RATE_LIMIT_MUTATIONS_BURST: '1000' },
  })
  ledger = app.services.ledger
  ;[accountant, admin] = await Promise.all([
    signIn(app, 'auditor', ['accountant']),
    signIn(app, 'admin', ['admin']),
  ])
  // A small economy, posted one transaction at a time (distinct posting
  // times, some within the same millisecond), with a pause now and then.
  for (const [i, user] of users.entries())
    await post(recharge(user, 1_000n * BigInt(i + 1), 999n * BigInt(i + 1)))
  for (let round = 0; round < 6; round++) {
    for (const [i, user] of users.entries()) {
      await post(gift(user, creators[(round + i) % 2] as string, BigInt(7 + round * 3 + i)))
    }
    if (round % 2 === 0) await sleep(3)
    await post(grant(users[round % users.length] as string, BigInt(10 + round)))
  }
  // Two entries on the same account in one transaction.
  named.split = await post({
    idempotencyKey: key('split'),
    kind: 'adjustment',
    description: 'A correction in two parts',
    metadata: { ticket: 'AUD-1' },
    entries: [
      { account: platform.adjustments, direction: 'debit', amount: 10n },
      { account: userWallet(users[0] as string), direction: 'credit', amount: 4n },
      { account: userWallet(users[0] as string), direction: 'credit', amount: 6n },
    ],
  })
  named.reversed = await post(gift(users[1] as string, creators[0] as string, 40n))
  await sleep(3)
  named.reversal = (
    await ledger.reverse(BigInt(named.reversed), { idempotencyKey: key('reversal') })
  ).transaction.id.toString()
  // And one through the API, as an admin grants.
  const granted = await admin.ok(GRANT_COINS, {
    userId: accountant.userId,
    coins: 25,
    reason: 'audit journal test',
    idempotencyKey: key('api-grant'),
  })
  expect(granted.grantCoins.userErrors).toEqual([])
  named.apiGrant = granted.grantCoins.ledgerTransaction.id
  for (const user of users.slice(2)) await post(recharge(user, 300n, 299n))
})
afterAll(() => app?.stop())

// ---- the replay: the tables read directly ---------------------------------------------

interface ReplayEntry {
  id: string
  transactionId: string
  accountId: string
  accountCode: string
  accountType: string
  unit: string
  direction: 'debit' | 'credit'
  amount: bigint
  balanceAfter: bigint
  seq: bigint
  us: bigint
}
interface ReplayTransaction {
  id: string
  kind: string
  us: bigint
  idempotencyKey: string
  reversesId: string | null
}

async function replay(): Promise<{ transactions: ReplayTransaction[]; entries: ReplayEntry[] }> {
  const db = app.database.db
  const transactions = rowsOf<{ id: string; kind: string; us: string; key: string; reverses: string | null }>(
    await db.execute(sql`
      select id::text as id, kind, (extract(epoch from posted_at) * 1000000)::bigint::text as us,
             idempotency_key as key, reverses_id::text as reverses
        from ledger_transactions order by posted_at, id`),
  ).map((r) => ({ id: r.id, kind: r.kind, us: BigInt(r.us), idempotencyKey: r.key, reversesId: r.reverses }))
  const entries = rowsOf<{
    id: string
    tx: string
    account: string
    code: string
    type: string
    unit: string
    direction: 'debit' | 'credit'
    amount: string
    after: string
    seq: string
    us: string
  }>(
    await db.execute(sql`
      select e.id::text as id, e.transaction_id::text as tx, e.account_id::text as account, a.code, a.type::text as type,
             e.unit, e.direction::text as direction, e.amount::text as amount, e.balance_after::text as after,
             e.account_seq::text as seq, (extract(epoch from e.posted_at) * 1000000)::bigint::text as us
        from ledger_entries e join ledger_accounts a on a.id = e.account_id
       order by e.account_id, e.account_seq`),
  ).map((r) => ({
    id: r.id,
    transactionId: r.tx,
    accountId: r.account,
    accountCode: r.code,
    accountType: r.type,
    unit: r.unit,
    direction: r.direction,
    amount: BigInt(r.amount),
    balanceAfter: BigInt(r.after),
    seq: BigInt(r.seq),
    us: BigInt(r.us),
  }))
  return { transactions, entries }
}

/** At or before an instant, to the millisecond: the rule the API documents. */
const atOrBefore = (us: bigint, instant: Date) => us / 1000n <= BigInt(instant.getTime())
const atOrAfter = (us: bigint, instant: Date) => us >= BigInt(instant.getTime()) * 1000n
const debitNormal = (type: string) => type === 'asset' || type === 'expense'
const isoOf = (us: bigint) => new Date(Number(us / 1000n)).toISOString()

async function accountIdOf(ref: AccountRef): Promise<string> {
  return (await ledger.balance(ref)).account.id.toString()
}

/** Every page of a connection, with the cursors and the page sizes seen. */
async function allPages<T>(
  fetchPage: (after: string | null) => Promise<{ edges: { cursor: string; node: T }[]; pageInfo: any }>,
): Promise<{ nodes: T[]; pages: number }> {
  const nodes: T[] = []
  let after: string | null = null
  for (let pages = 1; pages < 500; pages++) {
    const page = await fetchPage(after)
    nodes.push(...page.edges.map((e) => e.node))
    if (!page.pageInfo.hasNextPage) return { nodes, pages }
    expect(page.pageInfo.endCursor).toBe(page.edges.at(-1)?.cursor)
    after = page.pageInfo.endCursor
  }
  throw new Error('more than 500 pages')
}

async function journal(filter: Record<string, unknown> | null, first: number) {
  return allPages(
    async (after) => (await accountant.ok(JOURNAL, { filter, first, after })).ledgerTransactions,
  )
}

// ---- the journal ------------------------------------------------------------------------

describe('ledgerTransactions (the Journal operation)', () => {
  it('pages through the whole journal in posting order, with no duplicate and no gap', async () => {
    const { transactions } = await replay()
    expect(transactions.length).toBeGreaterThanOrEqual(40)
    for (const first of [1, 7, 100]) {
      const { nodes, pages } = await journal(null, first)
      expect(nodes.map((n: any) => n.id)).toEqual(transactions.map((t) => t.id))
      expect(pages).toBe(Math.max(1, Math.ceil(transactions.length / first)))
    }
  })

  it('shows each transaction with its entries, balanced per unit, its key and what it reverses', async () => {
    const { nodes } = await journal(null, 100)
    const { entries, transactions } = await replay()
    for (const node of nodes as any[]) {
      const own = entries
        .filter((e) => e.transactionId === node.id)
        .sort((a, b) => Number(BigInt(a.id) - BigInt(b.id)))
      expect(node.entries).toEqual(
        own.map((e) => ({
          id: e.id,
          account: { id: e.accountId, code: e.accountCode },
          direction: e.direction.toUpperCase(),
          amount: Number(e.amount),
          currency: e.unit,
          balanceAfter: Number(e.balanceAfter),
        })),
      )
      const net = new Map<string, number>()
      for (const e of node.entries)
        net.set(e.currency, (net.get(e.currency) ?? 0) + (e.direction === 'DEBIT' ? e.amount : -e.amount))
      expect([...net.values()].every((v) => v === 0)).toBe(true)
      const t = transactions.find((x) => x.id === node.id)
      expect(node.idempotencyKey).toBe(t?.idempotencyKey)
      expect(node.reverses).toEqual(t?.reversesId ? { id: t.reversesId } : null)
      expect(Date.parse(node.postedAt)).toBe(Number((t?.us ?? 0n) / 1000n))
    }
    const reversal = (nodes as any[]).find((n) => n.id === named.reversal)
    expect(reversal).toMatchObject({ kind: 'reversal', reverses: { id: named.reversed } })
  })

  it('answers ledgerTransaction(id) with reversals both ways and the metadata', async () => {
    const Q = `query($id: ID!) { ledgerTransaction(id: $id) {
      id kind description metadata reverses { id } reversedBy { id kind } entries { account { code } amount } } }`
    const original = (await accountant.ok(Q, { id: named.reversed })).ledgerTransaction
    expect(original).toMatchObject({ id: named.reversed, kind: 'gift', reverses: null })
    expect(original.reversedBy).toEqual({ id: named.reversal, kind: 'reversal' })
    const split = (await accountant.ok(Q, { id: named.split })).ledgerTransaction
    expect(JSON.parse(split.metadata)).toEqual({ ticket: 'AUD-1' })
    expect(split.entries.map((e: any) => e.amount)).toEqual([10, 4, 6])
    expect(split.reversedBy).toBeNull()
    for (const id of ['999999999', '0', 'not-an-id', '-1']) {
      expect((await accountant.ok(Q, { id })).ledgerTransaction).toBeNull()
    }
  })

  it('filters by kind, by account (a transaction with two entries on it once), by time, and all at once', async () => {
    const { transactions, entries } = await replay()
    const wallet0 = await accountIdOf(userWallet(users[0] as string))
    const commission = await accountIdOf(platform.commission)
    const touches = (t: ReplayTransaction, accountId: string) =>
      entries.some((e) => e.transactionId === t.id && e.accountId === accountId)
    // Instants taken from the journal itself, as a client would: to the millisecond.
    const from = new Date(isoOf((transactions[9] as ReplayTransaction).us))
    const to = new Date(isoOf((transactions[35] as ReplayTransaction).us))
    const cases: [Record<string, unknown>, (t: ReplayTransaction) => boolean][] = [
      [{ kind: 'gift' }, (t) => t.kind === 'gift'],
      [{ kind: 'payout' }, () => false],
      [{ accountId: wallet0 }, (t) => touches(t, wallet0)],
      [{ accountId: commission }, (t) => touches(t, commission)],
      [{ accountId: '999999999' }, () => false],
      [{ from: from.toISOString() }, (t) => atOrAfter(t.us, from)],
      [{ to: to.toISOString() }, (t) => atOrBefore(t.us, to)],
      [
        { from: from.toISOString(), to: from.toISOString() },
        (t) => atOrAfter(t.us, from) && atOrBefore(t.us, from),
      ],
      [
        { kind: 'gift', accountId: commission, from: from.toISOString(), to: to.toISOString() },
        (t) => t.kind === 'gift' && touches(t, commission) && atOrAfter(t.us, from) && atOrBefore(t.us, to),
      ],
      [
        { accountId: wallet0, from: from.toISOString(), to: to.toISOString() },
        (t) => touches(t, wallet0) && atOrAfter(t.us, from) && atOrBefore(t.us, to),
      ],
    ]
    for (const [filter, keep] of cases) {
      const expected = transactions.filter(keep).map((t) => t.id)
      for (const first of [2, 100]) {
        const { nodes } = await journal(filter, first)
        expect(
          nodes.map((n: any) => n.id),
          JSON.stringify(filter),
        ).toEqual(expected)
      }
    }
    // The boundaries matter: `from` and `to` are inclusive, and the cases above are not trivial.
    expect(transactions.filter((t) => atOrAfter(t.us, from) && atOrBefore(t.us, to)).length).toBeGreaterThan(
      20,
    )
    const wallet0Split = (await journal({ accountId: wallet0 }, 100)).nodes.filter(
      (n: any) => n.id === named.split,
    )
    expect(wallet0Split).toHaveLength(1)
  })

  it('refuses bad input with a clear error and no data', async () => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ filter: { kind: 'gifts' } }, /unknown kind "gifts"/],
      [{ filter: { accountId: 'wallet' } }, /not an account id/],
      [{ filter: { from: '2026-01-02T00:00:00Z', to: '2026-01-01T00:00:00Z' } }, /from is after to/],
      [{ after: 'bm90LWEtY3Vyc29y' }, /bad cursor/],
      [{ first: 101 }, /at most 100/],
      [{ first: -1 }, /must not be negative/],
      [{ filter: { from: 'yesterday' } }, /RFC 3339/],
    ]
    for (const [variables, message] of bad) {
      const body = await accountant.raw(JOURNAL, variables)
      expect(body.errors?.[0]?.message, JSON.stringify(variables)).toMatch(message)
      expect(body.data?.ledgerTransactions ?? null).toBeNull()
    }
    const backwards = await accountant.raw('{ ledgerTransactions(last: 2) { edges { node { id } } } }')
    expect(backwards.errors?.[0]?.message).toMatch(/forward only/)
  })
})

// ---- accounts and statements ---------------------------------------------------------------

describe('ledgerAccounts and ledgerAccount (the AccountStatement operation)', () => {
  it('lists the chart of accounts by page, filtered by unit, type and code prefix', async () => {
    const Q = `query($filter: LedgerAccountFilter, $first: Int, $after: String) {
      ledgerAccounts(filter: $filter, first: $first, after: $after) {
        edges { cursor node { id code name type currency normalSide balance debits credits held available entryCount } }
        pageInfo { hasNextPage endCursor } } }`
    const rows = rowsOf<{ id: string; code: string; unit: string; type: string; balance: string }>(
      await app.database.db.execute(
        sql`select id::text as id, code, unit, type::text as type, balance::text as balance from ledger_accounts a order by a.id`,
      ),
    )
    const list = (filter: Record<string, unknown> | null, first: number) =>
      allPages(async (after) => (await accountant.ok(Q, { filter, first, after })).ledgerAccounts)
    const all = (await list(null, 6)).nodes as any[]
    expect(all.map((a) => a.code)).toEqual(rows.map((r) => r.code))
    for (const a of all) {
      const row = rows.find((r) => r.id === a.id)
      expect(a.balance).toBe(Number(row?.balance))
      expect(a.normalSide).toBe(debitNormal(row?.type ?? '') ? 'DEBIT' : 'CREDIT')
      expect(a.balance).toBe(a.normalSide === 'DEBIT' ? a.debits - a.credits : a.credits - a.debits)
    }
    const usd = (await list({ currency: 'USD' }, 4)).nodes as any[]
    expect(usd.map((a) => a.code)).toEqual(rows.filter((r) => r.unit === 'USD').map((r) => r.code))
    const liabilities = (await list({ type: 'LIABILITY', currency: 'COIN' }, 100)).nodes as any[]
    expect(liabilities.map((a) => a.code)).toEqual(
      rows.filter((r) => r.type === 'liability' && r.unit === 'COIN').map((r) => r.code),
    )
    const mine = (await list({ codePrefix: `user:${users[0]}:` }, 100)).nodes as any[]
    expect(mine.map((a) => a.code)).toEqual([`user:${users[0]}:wallet`])
    const platformOnes = (await list({ codePrefix: 'platform:' }, 100)).nodes as any[]
    expect(platformOnes.length).toBe(rows.filter((r) => r.code.startsWith('platform:')).length)
  })

  it('gives statements whose balance-after chain continues from entry to entry and ends at the balance', async () => {
    const { entries } = await replay()
    const accounts = [...new Set(entries.map((e) => e.accountId))]
    expect(accounts.length).toBeGreaterThan(8)
    for (const accountId of accounts) {
      const { nodes } = await allPages(async (after) => {
        const { ledgerAccount } = await accountant.ok(ACCOUNT_STATEMENT, { id: accountId, first: 5, after })
        return ledgerAccount.entries
      })
      const account = (await accountant.ok(ACCOUNT_STATEMENT, { id: accountId, first: 1 })).ledgerAccount
      const own = entries.filter((e) => e.accountId === accountId)
      expect(nodes.map((n: any) => n.id)).toEqual(own.map((e) => e.id))
      const type = own[0]?.accountType ?? ''
      let running = 0
      for (const node of nodes as any[]) {
        running += (node.direction === 'DEBIT') === debitNormal(type) ? node.amount : -node.amount
        expect(node.balanceAfter).toBe(running)
      }
      expect(running).toBe(account.balance)
      // With no `to`, balanceAt is the balance now.
      expect(account.balanceAt).toBe(account.balance)
    }
  })

  it('bounds a statement by instants (inclusive, to the millisecond) and answers balanceAt(to) from it', async () => {
    const { entries } = await replay()
    const commission = await accountIdOf(platform.commission)
    const own = entries.filter((e) => e.accountId === commission)
    expect(own.length).toBeGreaterThan(10)
    const from = new Date(isoOf((own[3] as ReplayEntry).us))
    const to = new Date(isoOf((own[own.length - 4] as ReplayEntry).us))
    const expected = own.filter((e) => atOrAfter(e.us, from) && atOrBefore(e.us, to))
    const vars = { id: commission, from: from.toISOString(), to: to.toISOString() }
    const { nodes } = await allPages(
      async (after) =>
        (await accountant.ok(ACCOUNT_STATEMENT, { ...vars, first: 3, after })).ledgerAccount.entries,
    )
    expect(nodes.map((n: any) => n.id)).toEqual(expected.map((e) => e.id))
    const { ledgerAccount } = await accountant.ok(ACCOUNT_STATEMENT, { ...vars, first: 1 })
    expect(ledgerAccount.balanceAt).toBe(Number(expected.at(-1)?.balanceAfter))
    expect(ledgerAccount.entries.edges[0].node.transaction.kind).toBe('gift')
    // A window before the first entry, and one with nothing in it.
    const early = { id: commission, to: '2000-01-01T00:00:00Z', first: 10 }
    const before = (await accountant.ok(ACCOUNT_STATEMENT, early)).ledgerAccount
    expect(before.entries.edges).toEqual([])
    expect(before.balanceAt).toBe(0)
  })

  it('answers balanceAt at arbitrary instants as a replay of the entries does (property)', async () => {
    const { entries } = await replay()
    const accountIds = [...new Set(entries.map((e) => e.accountId))]
    const instants = [...new Set(entries.map((e) => e.us / 1000n))].map(Number)
    const first = Math.min(...instants)
    const last = Math.max(...instants)
    const instantArb = fc.oneof(
      fc.constantFrom(...instants).chain((ms) => fc.integer({ min: ms - 1, max: ms + 1 })),
      fc.integer({ min: first - 5, max: last + 5 }),
    )
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...accountIds), instantArb, async (accountId, ms) => {
        const at = new Date(ms)
        const expected =
          entries.filter((e) => e.accountId === accountId && atOrBefore(e.us, at)).at(-1)?.balanceAfter ?? 0n
        const Q = `query($id: ID!, $at: DateTime) { ledgerAccount(id: $id) { balanceAt(at: $at) } }`
        const { ledgerAccount } = await accountant.ok(Q, { id: accountId, at: at.toISOString() })
        expect(ledgerAccount.balanceAt).toBe(Number(expected))
      }),
      { numRuns: 60 },
    )
  })

  it('answers null for an unknown account and refuses a statement that runs backwards', async () => {
    expect((await accountant.ok(ACCOUNT_STATEMENT, { id: '999999999' })).ledgerAccount).toBeNull()
    expect((await accountant.ok(ACCOUNT_STATEMENT, { id: 'platform:commission' })).ledgerAccount).toBeNull()
    const commission = await accountIdOf(platform.commission)
    const body = await accountant.raw(ACCOUNT_STATEMENT, {
      id: commission,
      from: '2026-01-02T00:00:00Z',
      to: '2026-01-01T00:00:00Z',
    })
    expect(body.errors?.[0]?.message).toMatch(/from is after to/)
    const cursor = await accountant.raw(ACCOUNT_STATEMENT, { id: commission, after: 'abc' })
    expect(cursor.errors?.[0]?.message).toMatch(/bad cursor/)
  })
})

// ---- the trial balance ---------------------------------------------------------------------

/** The trial balance of the entries at or before an instant, by account code. */
function replayTrialBalance(entries: ReplayEntry[], at: Date | null) {
  const lines = new Map<string, { debits: bigint; credits: bigint; balance: bigint; unit: string }>()
  for (const e of entries) {
    if (at !== null && !atOrBefore(e.us, at)) continue
    const line = lines.get(e.accountCode) ?? { debits: 0n, credits: 0n, balance: 0n, unit: e.unit }
    if (e.direction === 'debit') line.debits += e.amount
    else line.credits += e.amount
    line.balance = debitNormal(e.accountType) ? line.debits - line.credits : line.credits - line.debits
    lines.set(e.accountCode, line)
  }
  return lines
}

function asNumbers(lines: Map<string, { debits: bigint; credits: bigint; balance: bigint }>) {
  return [...lines.entries()]
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([code, l]) => ({
      code,
      debits: Number(l.debits),
      credits: Number(l.credits),
      balance: Number(l.balance),
    }))
}

describe('trialBalance (the TrialBalance operation)', () => {
  it('as of now: every account with entries, from the cached totals, debits = credits in each unit', async () => {
    const { trialBalance: tb } = await accountant.ok(TRIAL_BALANCE, {})
    const { entries } = await replay()
    const expected = replayTrialBalance(entries, null)
    expect(
      tb.lines.map((l: any) => ({
        code: l.account.code,
        debits: l.debits,
        credits: l.credits,
        balance: l.balance,
      })),
    ).toEqual(asNumbers(expected))
    expect(tb.totals.map((t: any) => t.currency)).toEqual(['COIN', 'USD'])
    for (const total of tb.totals) {
      expect(total.debits).toBe(total.credits)
      expect(total.debits).toBeGreaterThan(0)
      const ofUnit = tb.lines.filter((l: any) => l.account.currency === total.currency)
      expect(ofUnit.reduce((s: number, l: any) => s + l.debits, 0)).toBe(total.debits)
    }
    expect(Date.now() - Date.parse(tb.asOf)).toBeLessThan(60_000)
    // Asked for totals only, the server reads no line; the totals are the same.
    const { trialBalance: totalsOnly } = await accountant.ok(
      '{ trialBalance { totals { currency debits credits } } }',
    )
    expect(totalsOnly.totals).toEqual(tb.totals)
    // A line carries its account's head; the rest of the account is loaded when asked for.
    const { trialBalance: deep } = await accountant.ok(
      '{ trialBalance { lines { balance account { code balance debits entryCount } } } }',
    )
    for (const line of deep.lines) expect(line.account.balance).toBe(line.balance)
    expect(deep.lines.every((l: any) => l.account.entryCount > 0 && l.account.debits >= 0)).toBe(true)
  })

  it('as of past instants: matches a replay, by either method, and balances per unit (property)', async () => {
    const { entries } = await replay()
    const instants = [...new Set(entries.map((e) => e.us / 1000n))].map(Number)
    const first = Math.min(...instants)
    const last = Math.max(...instants)
    const instantArb = fc.oneof(
      fc.constantFrom(...instants).chain((ms) => fc.integer({ min: ms - 1, max: ms + 1 })),
      fc.integer({ min: first - 3, max: last + 3 }),
    )
    const db = app.database.db
    await fc.assert(
      fc.asyncProperty(instantArb, async (ms) => {
        const at = new Date(ms)
        const expected = asNumbers(replayTrialBalance(entries, at))
        const { trialBalance: tb } = await accountant.ok(TRIAL_BALANCE, { asOf: at.toISOString() })
        expect(Date.parse(tb.asOf)).toBe(ms)
        const got = tb.lines.map((l: any) => ({
          code: l.account.code,
          debits: l.debits,
          credits: l.credits,
          balance: l.balance,
        }))
        expect(got).toEqual(expected)
        for (const total of tb.totals) expect(total.debits).toBe(total.credits)
        for (const method of ['sum-before', 'subtract-after'] as const) {
          const forced = await trialBalance(db, at, { method })
          expect(
            forced.lines.map((l) => ({
              code: l.account.code,
              debits: Number(l.debits),
              credits: Number(l.credits),
              balance: Number(l.balance),
            })),
            method,
          ).toEqual(expected)
          // Totals alone are aggregated in the database: the same sums as the lines'.
          const totalsOnly = await trialBalance(db, at, { method, lines: false })
          expect(totalsOnly.lines).toEqual([])
          expect(totalsOnly.totals).toEqual(forced.totals)
        }
        expect(tb.totals).toEqual(
          (await trialBalance(db, at, { lines: false })).totals.map((t) => ({
            currency: t.currency,
            debits: Number(t.debits),
            credits: Number(t.credits),
          })),
        )
      }),
      { numRuns: 40 },
    )
  })

  it('chooses the method by the instant: cached at or after the last posting, an empty book before the first', async () => {
    const { entries } = await replay()
    const instants = entries.map((e) => Number(e.us / 1000n))
    const db = app.database.db
    const first = Math.min(...instants)
    const last = Math.max(...instants)
    expect((await trialBalance(db, new Date(first - 1))).method).toBe('empty')
    expect((await trialBalance(db, new Date(first - 1))).lines).toEqual([])
    expect((await trialBalance(db, new Date(last))).method).toBe('cached')
    expect((await trialBalance(db, null)).method).toBe('cached')
    expect((await trialBalance(db, new Date(first))).method).toBe('sum-before')
    expect((await trialBalance(db, new Date(last - 1))).method).toBe('subtract-after')
    // An instant not reached yet: as of now, and the answer says when that was.
    const future = await accountant.ok(TRIAL_BALANCE, { asOf: '2999-01-01T00:00:00Z' })
    expect(Date.parse(future.trialBalance.asOf)).toBeLessThan(Date.now() + 1_000)
  })
})

// ---- who may read it --------------------------------------------------------------------------

describe('authorization', () => {
  it('lets only accountants read the books; an admin’s grant shows its header and nothing more', async () => {
    const viewer = await signIn(app, 'viewer')
    const creator = await signIn(app, 'creator', ['creator'])
    for (const document of [JOURNAL, TRIAL_BALANCE]) {
      expect((await anonymous(app).raw(document)).errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED')
      for (const actor of [viewer, creator, admin]) {
        const body = await actor.raw(document)
        expect(body.errors?.[0]?.extensions?.code).toBe('FORBIDDEN')
        expect(body.data ?? null).toBeNull()
      }
    }
    const GRANT_DEEP = `mutation($input: GrantCoinsInput!) { grantCoins(input: $input) {
      ledgerTransaction { id kind entries { amount account { code balance } } } userErrors { code } } }`
    const input = { userId: viewer.userId, coins: 1, reason: 'peek', idempotencyKey: key('peek') }
    const body = await admin.raw(GRANT_DEEP, { input })
    expect(body.errors?.map((e) => e.extensions?.code)).toEqual(['FORBIDDEN'])
    expect(body.errors?.[0]?.path).toEqual(['grantCoins', 'ledgerTransaction', 'entries'])
    // The grant itself went through (the mutation ran; only the entries were withheld).
    const { me } = await viewer.ok('{ me { wallet { coins } } }')
    expect(me.wallet.coins).toBe(1)
  })
})

// ---- the reconciliation report ----------------------------------------------------------------

describe('rechargeReconciliation', () => {
  it('lists payments without credits, credits without payments and mismatches, with their orders', async () => {
    const db = app.database.db
    const [pkg] = await db.select().from(coinPackages).where(eq(coinPackages.sku, 'coins_70'))
    const buyer = await signIn(app, 'buyer')
    const order = (
      status: 'succeeded' | 'failed' | 'pending',
      extra: Partial<typeof rechargeOrders.$inferInsert> = {},
    ) => ({
      userId: buyer.userId,
      packageId: pkg?.id ?? '',
      provider: 'stripe' as const,
      status,
      coins: 70n,
      bonusCoins: 0n,
      priceMinor: 99n,
      currency: 'USD',
      idempotencyKey: key('order'),
      providerReference: `pi_${key('ref')}`,
      ...extra,
    })
    const credit = await post(recharge(buyer.userId, 70n, 99n))
    const rows = await db
      .insert(rechargeOrders)
      .values([
        order('succeeded'),
        order('failed', { creditTransactionId: BigInt(credit) }),
        order('pending', { mismatch: 'amount 98, expected 99' }),
        // Credited and paid: nothing to report.
        order('succeeded', { creditTransactionId: BigInt(credit) }),
      ])
      .returning({ id: rechargeOrders.id })
    const Q = `query { rechargeReconciliation { checkedAt limitReached
      discrepancies { kind message creditTransactionId recharge { id status } } } }`
    const { rechargeReconciliation: report } = await accountant.ok(Q)
    expect(report.limitReached).toBe(false)
    // One statement's orders: same creation time, so in id order.
    expect(report.discrepancies.map((d: any) => d.recharge.id)).toEqual(
      rows
        .slice(0, 3)
        .map((r) => r.id)
        .sort(),
    )
    expect(report.discrepancies).toEqual(
      expect.arrayContaining([
        {
          kind: 'PAYMENT_WITHOUT_CREDIT',
          message: 'succeeded but not credited',
          creditTransactionId: null,
          recharge: { id: rows[0]?.id, status: 'SUCCEEDED' },
        },
        {
          kind: 'CREDIT_WITHOUT_PAYMENT',
          message: 'credited but failed',
          creditTransactionId: credit,
          recharge: { id: rows[1]?.id, status: 'FAILED' },
        },
        {
          kind: 'AMOUNT_MISMATCH',
          message: 'amount 98, expected 99',
          creditTransactionId: null,
          recharge: { id: rows[2]?.id, status: 'PENDING' },
        },
      ]),
    )
    expect(Math.abs(Date.parse(report.checkedAt) - Date.now())).toBeLessThan(60_000)
    for (const who of [buyer, admin])
      expect((await who.raw(Q)).errors?.[0]?.extensions?.code).toBe('FORBIDDEN')
  })
})
