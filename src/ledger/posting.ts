import { and, eq, inArray, type Query, type SQL, sql } from 'drizzle-orm'
import type { Db, DbOrTx, OneTrip, Tx } from '../db/client.js'
import { rowsOf } from '../db/rows.js'
import { ledgerAccounts, ledgerEntries, ledgerTransactions } from '../db/schema.js'
import { arrayLiteral, toSql } from '../db/statement.js'
import { IdempotencyConflictError, InsufficientFundsError, LedgerError } from './errors.js'
import type { AccountState, AccountStates, Ticket } from './state-cache.js'
import type {
  Account,
  Direction,
  EntryRequest,
  PostedEntry,
  PostedTransaction,
  PostingRequest,
  PostingResult,
} from './types.js'
import { signedAmount } from './types.js'

// The core of the engine: posts a batch of prepared postings inside one
// database transaction. Many postings share one lock on each account they
// touch (hot accounts included) and one INSERT per table, so a hot account
// costs one lock per batch, not one per posting.
//
// The fast path, taken when the engine knows what its accounts' rows should
// hold (AccountStates, state-cache.ts) and the batch settles no hold:
//   1. plan the batch in memory on the expected states: refuse what would
//      overdraw a non-negative account, compute every entry's sequence and
//      balance after;
//   2. one statement locks every account of the batch, sorted by id (no
//      deadlocks), reads the clock, and, only if every locked row is as
//      expected and no key or reversal of the batch exists, inserts the
//      transactions and the entries;
//   3. commit. The hot accounts are locked for one statement and the commit.
// On PostgreSQL, Ledger.writeBatch sends BEGIN, the statement and COMMIT in
// one round trip (postBatchInOneTrip), behind the batches already in flight
// on the same connection, each planned on the plan of the one before it
// (state-cache.ts: tickets, tainting).
// The slow path, when any expectation was wrong (or none could be made): the
// same statement has locked the accounts and returned their rows, the keys
// already posted and the reversals already made; the batch is planned again
// on them, and its transactions, released holds and entries are written in
// that order, under the locks already held.
// Either way the database re-checks all of it and keeps the accounts' cached
// balances from the entries itself (migrations/*_ledger_guards, *_ledger_fast_path).

/** A posting whose accounts are resolved and whose shape is valid. */
export interface PreparedPosting {
  request: PostingRequest
  /** Index-aligned with request.entries. */
  accounts: Account[]
  /** Index-aligned with request.entries: the entry's shortfallTo or repayFirst account, if any. */
  routes?: (Account | null)[]
  requestHash: string
  reversesId: bigint | null
  /** Pending holds this posting settles: their held amount is released with it. */
  releases?: { accountId: bigint; amount: bigint }[]
}

export type Settled<T> = { ok: true; value: T } | { ok: false; error: Error }

interface PlannedState extends AccountState {
  /** The held amount moved (a hold settled by this batch): the engine writes it, before the entries. */
  heldChanged: boolean
}

interface Accepted {
  index: number
  prepared: PreparedPosting
  entries: Omit<PostedEntry, 'id'>[]
}

export interface BatchHooks {
  /**
   * Runs after the batch's transactions are inserted, before held amounts are
   * released and entries written (entry ids are not known yet). A batch with
   * this hook takes the slow path.
   */
  beforeEntries?: (tx: Tx, posted: PostedTransaction[]) => Promise<void>
}

type Existing = Map<string, { requestHash: string; transaction: PostedTransaction }>

/** What a batch will do, decided in memory on a set of account states. */
interface Plan {
  results: (Settled<PostingResult> | undefined)[]
  accepted: Accepted[]
  /** [index, first]: a posting whose key an earlier one of the batch carries; settled by that one's outcome. */
  twins: [index: number, first: number][]
  /** The states the accepted postings leave the accounts in. */
  states: Map<bigint, PlannedState>
}

/**
 * Posts a batch inside the caller's transaction. With `known`, the batch is
 * planned on the engine's expectations when it may (see AccountStates); the
 * caller passes the batch's ticket if it entered it already (Ledger.writeBatch),
 * otherwise the batch enters and leaves here.
 */
export async function postBatchInTx(
  tx: Tx,
  batch: readonly PreparedPosting[],
  hooks: BatchHooks = {},
  known?: AccountStates,
  entered?: Ticket,
): Promise<Settled<PostingResult>[]> {
  const ids = accountIdsOf(batch)
  const ticket =
    entered ?? (known ? await known.enter(ids, mayGuess(batch) && !hooks.beforeEntries) : undefined)
  let plan: Plan
  let posted: PostedTransaction[]
  try {
    // Remembered before the statement: a batch planned while this one is in
    // flight plans on what this one will leave.
    const { expected, guess } =
      known && ticket?.guessing ? await expectAndPlan(tx, known, ids, batch) : { expected: null, guess: null }
    const locked = await lockAndWrite(tx, ids, batch, expected, guess)
    if (guess && locked.written) {
      plan = guess
      posted = toPosted(plan.accepted, locked.transactionIds, locked.now)
      setEntryIds(posted, locked.entryIds)
    } else {
      if (guess && expected) stale(known as AccountStates, ticket as Ticket, expected, locked.states)
      plan = planBatch(batch, locked.states, locked.existing, locked.reversed)
      posted = toPosted(plan.accepted, await insertTransactions(tx, plan.accepted, locked.now), locked.now)
      if (hooks.beforeEntries && posted.length > 0) await hooks.beforeEntries(tx, posted)
      // Released holds first: the accounts' check (balance >= held) holds after every statement.
      await updateHeldAmounts(tx, plan.states)
      setEntryIds(posted, await insertEntries(tx, posted))
    }
    if (known && guess && plan === guess) known.expectations.held++
  } catch (error) {
    ticket?.taint()
    throw error
  } finally {
    if (!entered) ticket?.end()
  }

  return settle(batch, plan, posted)
}

/** Expects, plans and remembers the plan's states, one batch at a time. */
function expectAndPlan(
  db: DbOrTx,
  known: AccountStates,
  ids: readonly bigint[],
  batch: readonly PreparedPosting[],
): Promise<{ expected: Map<bigint, AccountState> | null; guess: Plan | null }> {
  return known.exclusive(async () => {
    const expected = await known.expect(db, ids)
    if (!expected) return { expected, guess: null }
    const guess = planBatch(batch, planned(expected), new Map(), new Set())
    known.remember(guess.states)
    return { expected, guess }
  })
}

/** A batch that settles holds writes held amounts: it is planned under the locks. */
export function mayGuess(batch: readonly PreparedPosting[]): boolean {
  return !batch.some((p) => p.releases?.length)
}

/** The locked rows contradicted the batch's expectations. */
function stale(
  known: AccountStates,
  ticket: Ticket,
  expected: ReadonlyMap<bigint, AccountState>,
  actual: ReadonlyMap<bigint, AccountState>,
): void {
  known.expectations.stale++
  // A batch this one was planned on failed: explained. Otherwise another
  // writer moved the accounts, and will again.
  if (!ticket.overtaken()) known.contradicted(expected, actual)
  ticket.taint()
}

/** Every posting's outcome: the accepted ones posted, twins as their first, the rest as planned. */
function settle(
  batch: readonly PreparedPosting[],
  plan: Plan,
  posted: PostedTransaction[],
): Settled<PostingResult>[] {
  const { results, accepted, twins } = plan
  accepted.forEach((a, i) => {
    results[a.index] = { ok: true, value: { transaction: posted[i] as PostedTransaction, replayed: false } }
  })
  for (const [index, first] of twins) {
    const outcome = results[first] as Settled<PostingResult>
    const firstHash = (batch[first] as PreparedPosting).requestHash
    results[index] = replayOrConflict(
      batch[index] as PreparedPosting,
      firstHash,
      outcome.ok ? { ok: true, value: outcome.value.transaction } : outcome,
    )
  }
  return results as Settled<PostingResult>[]
}

/**
 * A batch planned on the engine's expectations, as one statement for the
 * caller to send inside its own transaction: it locks the accounts and
 * writes the batch only if every locked row is as expected and none of its
 * keys or reversals exist yet. Nothing is known to be written until the
 * statement's row is settled.
 */
export interface FastBatch {
  readonly statement: Query
  /** The postings the plan accepts, by index in the batch (the others are refused, or twins of an earlier key). */
  readonly accepted: ReadonlySet<number>
  /** Some posting repeats the key of an earlier one of the batch. */
  readonly hasTwins: boolean
  /**
   * The batch's outcomes from the statement's rows, or null if it wrote
   * nothing: an expectation was wrong (the ticket now knows), and the batch
   * must take the usual way (postBatchInTx with the same ticket).
   */
  settle(rows: readonly Record<string, unknown>[]): Settled<PostingResult>[] | null
}

/**
 * Plans a batch on the engine's expectations (reading, outside any
 * transaction, the accounts it has none for). Null when the batch must take
 * the usual way: the ticket may not guess, or the accounts could not be
 * expected (the ticket is tainted then).
 */
export async function planFastBatch(
  db: DbOrTx,
  batch: readonly PreparedPosting[],
  known: AccountStates,
  ticket: Ticket,
): Promise<FastBatch | null> {
  if (!ticket.guessing) return null
  const ids = accountIdsOf(batch)
  const { expected, guess } = await expectAndPlan(db, known, ids, batch)
  if (!expected || !guess) {
    ticket.taint()
    return null
  }
  return {
    statement: lockAndWriteSql(ids, batch, expected, guess),
    accepted: new Set(guess.accepted.map((a) => a.index)),
    hasTwins: guess.twins.length > 0,
    settle(rows) {
      const locked = readLocked(rows[0] as LockedRow | undefined, ids)
      if (!locked.written) {
        stale(known, ticket, expected, locked.states)
        return null
      }
      known.expectations.held++
      const posted = toPosted(guess.accepted, locked.transactionIds, locked.now)
      setEntryIds(posted, locked.entryIds)
      return settle(batch, guess, posted)
    },
  }
}

/**
 * The fast path as a whole database transaction in one round trip (BEGIN,
 * the lock-and-write statement, COMMIT; PostgreSQL): the hot accounts are
 * locked for the statement and the commit, with no answer to wait for in
 * between. Returns null when the batch must take the usual way instead
 * (postBatchInTx, with the same ticket): an expectation was wrong (nothing
 * was written), or the trip failed (nothing was committed).
 */
export async function postBatchInOneTrip(
  db: Db,
  oneTrip: OneTrip,
  batch: readonly PreparedPosting[],
  known: AccountStates,
  ticket: Ticket,
): Promise<Settled<PostingResult>[] | null> {
  try {
    const fast = await planFastBatch(db, batch, known, ticket)
    if (!fast) return null
    // Its plan is the same for any batch: arrays travel as one parameter each.
    const [rows] = await oneTrip([fast.statement], { genericPlans: true })
    return fast.settle(rows ?? [])
  } catch {
    // Nothing was committed: the usual way will tell what went wrong.
    ticket.taint()
    return null
  }
}

export function accountIdsOf(batch: readonly PreparedPosting[]): bigint[] {
  const ids = new Set<bigint>()
  for (const p of batch) {
    for (const a of p.accounts) ids.add(a.id)
    for (const a of p.routes ?? []) if (a) ids.add(a.id)
  }
  return [...ids].sort((a, b) => (a < b ? -1 : 1))
}

function planned(states: ReadonlyMap<bigint, AccountState>): Map<bigint, PlannedState> {
  return new Map([...states].map(([id, s]) => [id, { ...s, heldChanged: false }]))
}

/**
 * Decides every posting of the batch, in order, on the given states (which
 * it advances): replays and conflicts of keys already posted, twins inside
 * the batch, second reversals, overdrafts; the rest is accepted with its
 * entries' sequences and balances after.
 */
function planBatch(
  batch: readonly PreparedPosting[],
  states: Map<bigint, PlannedState>,
  existing: Existing,
  reversed: Set<bigint>,
): Plan {
  const results: (Settled<PostingResult> | undefined)[] = new Array(batch.length)
  const accepted: Accepted[] = []
  const firstWithKey = new Map<string, number>()
  const twins: [index: number, first: number][] = []
  batch.forEach((prepared, index) => {
    const { request } = prepared
    const prior = existing.get(request.idempotencyKey)
    if (prior) {
      results[index] = replayOrConflict(prepared, prior.requestHash, { ok: true, value: prior.transaction })
      return
    }
    const first = firstWithKey.get(request.idempotencyKey)
    if (first !== undefined) {
      twins.push([index, first]) // settled by the first posting's outcome
      return
    }
    firstWithKey.set(request.idempotencyKey, index)
    if (prepared.reversesId !== null && reversed.has(prepared.reversesId)) {
      results[index] = { ok: false, error: alreadyReversed(prepared.reversesId) }
      return
    }
    const applied = apply(prepared, states)
    if (applied instanceof Error) {
      results[index] = { ok: false, error: applied }
      return
    }
    if (prepared.reversesId !== null) reversed.add(prepared.reversesId)
    accepted.push({ index, prepared, entries: applied })
  })
  return { results, accepted, twins, states }
}

/** A posting whose key was seen before: the same content gets the original outcome, other content is refused. */
function replayOrConflict(
  prepared: PreparedPosting,
  originalHash: string,
  original: Settled<PostedTransaction>,
): Settled<PostingResult> {
  if (originalHash !== prepared.requestHash) {
    return { ok: false, error: new IdempotencyConflictError(prepared.request.idempotencyKey) }
  }
  return original.ok ? { ok: true, value: { transaction: original.value, replayed: true } } : original
}

interface Locked {
  /** The locked rows. */
  states: Map<bigint, PlannedState>
  /** The database clock, read after the locks: per account, posting times follow the sequence. */
  now: string
  existing: Existing
  reversed: Set<bigint>
  /** The guessed plan was written (every expectation held). */
  written: boolean
  transactionIds: Map<string, bigint>
  entryIds: EntryIdRow[]
}

/** An entry's account id, account sequence and id. */
type EntryIdRow = readonly [accountId: string, accountSeq: string, id: string]

/**
 * One round trip: locks the batch's accounts and reads what the slow path
 * needs; with a plan made on expected states (`guess`), also writes it, if
 * and only if every locked row matches its expectation and no key or
 * reversal of the batch was posted before.
 */
async function lockAndWrite(
  tx: Tx,
  ids: readonly bigint[],
  batch: readonly PreparedPosting[],
  expected: ReadonlyMap<bigint, AccountState> | null,
  guess: Plan | null,
): Promise<Locked> {
  const locked = readLocked(
    rowsOf<LockedRow>(await tx.execute(toSql(lockAndWriteSql(ids, batch, expected, guess))))[0],
    ids,
  )
  const existing: Existing = new Map()
  if (locked.existingIds.length > 0) {
    for (const found of await loadTransactions(tx, locked.existingIds))
      existing.set(found.transaction.idempotencyKey, found)
  }
  return { ...locked, existing }
}

function lockAndWriteSql(
  ids: readonly bigint[],
  batch: readonly PreparedPosting[],
  expected: ReadonlyMap<bigint, AccountState> | null,
  guess: Plan | null,
): Query {
  const want = ids.map((id) => expected?.get(id))
  const accepted = guess?.accepted ?? []
  return {
    sql: LOCK_AND_WRITE,
    params: [
      arrayLiteral(ids),
      arrayLiteral(want.map((s) => s?.balance)),
      arrayLiteral(want.map((s) => s?.heldAmount)),
      arrayLiteral(want.map((s) => s?.lastSeq)),
      arrayLiteral(batch.map((p) => p.request.idempotencyKey)),
      arrayLiteral(batch.flatMap((p) => (p.reversesId === null ? [] : [p.reversesId]))),
      guess !== null,
      ids.length,
      ...transactionColumns(accepted.map((a) => a.prepared)),
      ...entryColumns(
        accepted.map((a) => ({ transaction: a.prepared.request.idempotencyKey, entries: a.entries })),
      ),
    ],
  }
}

// ORDER BY id under FOR UPDATE: rows are locked in id order, the one order
// every posting uses, so two batches can never wait on each other in a
// cycle. The clock is read once all locked rows are fetched (state), and
// the inserts draw from `go`, which holds one row only if everything was as
// expected. A key posted concurrently and missed here loses the race on the
// unique index (23505) and the batch is retried (tx.ts). Arrays travel as
// one parameter each, so the statement text never varies with the batch
// size and stays prepared. Entries' triggers fire at the end of the
// statement and see the transactions inserted above them. The locked rows
// come back only when the batch was not written: it is planned again on
// them (a batch written as expected needs nothing of them).
// Parameters: $1 the accounts' ids; $2, $3, $4 their expected balance, held
// amount and last sequence; $5 the batch's keys; $6 the transactions it
// reverses; $7 whether it was planned (may write); $8 the accounts' count;
// $9–$14 the transactions' columns; $15–$21 the entries' columns.
const LOCK_AND_WRITE = `
    with locked as materialized (
      select id, balance, held_amount, last_seq from ledger_accounts
       where id = any($1::bigint[]) order by id for update),
    state as materialized (
      select count(*) as found, count(e.id) as matched, clock_timestamp() as now
        from locked l
        left join unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[]) as e(id, balance, held, seq)
          on e.id = l.id and e.balance = l.balance and e.held = l.held_amount and e.seq = l.last_seq),
    prior as materialized (
      select (select coalesce(json_agg(t.id::text), '[]') from ledger_transactions t
               where t.idempotency_key = any($5::text[])) as existing_ids,
             (select coalesce(json_agg(t.reverses_id::text), '[]') from ledger_transactions t
               where t.reverses_id = any($6::bigint[])) as reversed_ids),
    go as materialized (
      select s.now from state s, prior p
       where $7::boolean and s.found = $8::bigint and s.matched = s.found
         and p.existing_ids::text = '[]' and p.reversed_ids::text = '[]'),
    tx as (
      insert into ledger_transactions (idempotency_key, request_hash, kind, description, metadata, reverses_id, posted_at)
      select v.k, v.h, v.kind, v.d, v.m::jsonb, v.r::bigint, g.now
        from go g, unnest($9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[])
             with ordinality as v(k, h, kind, d, m, r, ord)
       order by v.ord
      returning id, idempotency_key),
    en as (
      insert into ledger_entries (transaction_id, account_id, direction, amount, unit, account_seq, balance_after, posted_at)
      select t.id, v.a::bigint, v.d::entry_direction, v.amt::bigint, v.u, v.s::bigint, v.b::bigint, g.now
        from go g, unnest($15::text[], $16::text[], $17::text[], $18::text[], $19::text[], $20::text[], $21::text[])
             with ordinality as v(k, a, d, amt, u, s, b, ord)
        join tx t on t.idempotency_key = v.k
       order by v.ord
      returning id, account_id, account_seq)
    select case when exists (select 1 from go) then null
                else (select coalesce(json_agg(json_build_array(l.id::text, l.balance::text, l.held_amount::text,
                                                                l.last_seq::text)), '[]') from locked l)
           end as accounts,
           s.found, s.now::text as now, p.existing_ids, p.reversed_ids,
           exists (select 1 from go) as written,
           (select coalesce(json_agg(json_build_array(t.idempotency_key, t.id::text)), '[]') from tx t) as transaction_ids,
           (select coalesce(json_agg(json_build_array(e.account_id::text, e.account_seq::text, e.id::text)), '[]') from en e) as entry_ids
      from state s, prior p`

interface LockedRow {
  /** The locked rows, read only when the batch was not written (it is planned again on them). */
  accounts: unknown
  found: number | string
  now: string
  existing_ids: unknown
  reversed_ids: unknown
  written: boolean
  transaction_ids: unknown
  entry_ids: unknown
}

function readLocked(
  row: LockedRow | undefined,
  ids: readonly bigint[],
): Omit<Locked, 'existing'> & { existingIds: bigint[] } {
  if (!row) throw new Error('ledger: the lock statement returned no row')
  if (Number(row.found) !== ids.length)
    throw new LedgerError('UNKNOWN_ACCOUNT', 'an account of this batch does not exist')
  const accounts = row.accounts === null ? [] : jsonList<[string, string, string, string]>(row.accounts)
  const states = new Map<bigint, PlannedState>(
    accounts.map(([id, balance, held, lastSeq]) => [
      BigInt(id),
      { balance: BigInt(balance), heldAmount: BigInt(held), lastSeq: BigInt(lastSeq), heldChanged: false },
    ]),
  )
  return {
    states,
    now: row.now,
    existingIds: jsonList<string>(row.existing_ids).map((id) => BigInt(id)),
    reversed: new Set(jsonList<string>(row.reversed_ids).map((id) => BigInt(id))),
    written: row.written === true,
    transactionIds: new Map(
      jsonList<[string, string]>(row.transaction_ids).map(([k, id]) => [k, BigInt(id)]),
    ),
    entryIds: jsonList<EntryIdRow>(row.entry_ids),
  }
}

/** json_agg comes back parsed from PGlite and as text from some drivers. */
function jsonList<T>(value: unknown): T[] {
  return (typeof value === 'string' ? JSON.parse(value) : value) as T[]
}

/** Applies a posting to the states, or returns why it is refused (states untouched then). */
function apply(
  prepared: PreparedPosting,
  states: Map<bigint, PlannedState>,
): Omit<PostedEntry, 'id'>[] | Error {
  const scratch = new Map<bigint, PlannedState>()
  const stateOf = (id: bigint) => {
    let s = scratch.get(id)
    if (!s) {
      s = { ...(states.get(id) as PlannedState) }
      scratch.set(id, s)
    }
    return s
  }
  for (const release of prepared.releases ?? []) {
    const state = stateOf(release.accountId)
    state.heldAmount -= release.amount
    state.heldChanged = true
  }

  const entries: Omit<PostedEntry, 'id'>[] = []
  const post = (account: Account, direction: Direction, amount: bigint): Error | undefined => {
    const state = stateOf(account.id)
    state.balance += signedAmount(account.type, direction, amount)
    state.lastSeq += 1n
    if (!account.allowNegative && state.balance < state.heldAmount) {
      const before = state.balance - signedAmount(account.type, direction, amount)
      return new InsufficientFundsError(account.code, before - state.heldAmount, amount)
    }
    entries.push({
      accountId: account.id,
      accountCode: account.code,
      direction,
      amount,
      unit: account.unit,
      accountSeq: state.lastSeq,
      balanceAfter: state.balance,
    })
    return undefined
  }
  for (const [i, entry] of prepared.request.entries.entries()) {
    const account = prepared.accounts[i] as Account
    const route = prepared.routes?.[i] ?? null
    // Routed entries split under the lock: [amount for the route, amount for the account].
    const [routed, direct] = route === null ? [0n, entry.amount] : split(entry, account, route, stateOf)
    if (routed > 0n) {
      const refused = post(route as Account, entry.direction, routed)
      if (refused) return refused
    }
    if (direct > 0n) {
      const refused = post(account, entry.direction, direct)
      if (refused) return refused
    }
  }
  for (const [id, s] of scratch) states.set(id, s)
  return entries
}

/**
 * How a routed entry divides between its route and its account, given the
 * locked balances: a debit's shortfall beyond what the account has
 * available goes to the route; a credit repays the route's balance first.
 */
function split(
  entry: EntryRequest,
  account: Account,
  route: Account,
  stateOf: (id: bigint) => PlannedState,
): [routed: bigint, direct: bigint] {
  const clamp = (v: bigint) => (v < 0n ? 0n : v > entry.amount ? entry.amount : v)
  if (entry.shortfallTo !== undefined) {
    const s = stateOf(account.id)
    const shrinks = signedAmount(account.type, 'debit', 1n) < 0n
    const cover = account.allowNegative || !shrinks ? entry.amount : clamp(s.balance - s.heldAmount)
    return [entry.amount - cover, cover]
  }
  const r = stateOf(route.id)
  const shrinks = signedAmount(route.type, 'credit', 1n) < 0n
  const repay = shrinks ? clamp(r.balance) : 0n
  return [repay, entry.amount - repay]
}

/** The accepted postings as posted transactions, entry ids still unset (0). */
function toPosted(
  accepted: readonly Accepted[],
  ids: ReadonlyMap<string, bigint>,
  now: string,
): PostedTransaction[] {
  return accepted.map(({ prepared: p, entries }) => {
    const id = ids.get(p.request.idempotencyKey)
    if (id === undefined)
      throw new Error(`ledger: no id came back for transaction ${p.request.idempotencyKey}`)
    return {
      id,
      idempotencyKey: p.request.idempotencyKey,
      kind: p.request.kind,
      description: p.request.description ?? '',
      metadata: p.request.metadata ?? {},
      reversesId: p.reversesId,
      postedAt: now,
      entries: entries.map((e) => ({ ...e, id: 0n })),
    }
  })
}

function setEntryIds(posted: PostedTransaction[], rows: readonly EntryIdRow[]): void {
  const entryIdOf = new Map<string, string>()
  for (const [accountId, accountSeq, id] of rows) entryIdOf.set(`${accountId}:${accountSeq}`, id)
  for (const t of posted) {
    for (const e of t.entries) {
      const id = entryIdOf.get(`${e.accountId}:${e.accountSeq}`)
      if (id === undefined)
        throw new Error(`ledger: no id came back for entry ${e.accountId}:${e.accountSeq}`)
      e.id = BigInt(id)
    }
  }
}

/** Inserts the accepted postings' transactions (slow path); returns their ids by idempotency key. */
async function insertTransactions(
  tx: Tx,
  accepted: readonly Accepted[],
  now: string,
): Promise<Map<string, bigint>> {
  if (accepted.length === 0) return new Map()
  const requests = accepted.map((a) => a.prepared)
  const inserted = rowsOf<{ id: string; idempotency_key: string }>(
    await tx.execute(sql`
      insert into ledger_transactions (idempotency_key, request_hash, kind, description, metadata, reverses_id, posted_at)
      select k, h, kind, d, m::jsonb, r::bigint, ${now}::timestamptz
        from unnest(${textArrays(transactionColumns(requests))}) as v(k, h, kind, d, m, r)
      returning id::text, idempotency_key`),
  )
  return new Map(inserted.map((r) => [r.idempotency_key, BigInt(r.id)]))
}

/**
 * Inserts every entry of the batch in one statement (slow path; the
 * database's checks run once per statement, and its trigger brings the
 * accounts' cached balances up to date).
 */
async function insertEntries(tx: Tx, posted: PostedTransaction[]): Promise<EntryIdRow[]> {
  if (posted.length === 0) return []
  return rowsOf<{ id: string; account_id: string; account_seq: string }>(
    await tx.execute(sql`
      insert into ledger_entries (transaction_id, account_id, direction, amount, unit, account_seq, balance_after, posted_at)
      select t::bigint, a::bigint, d::entry_direction, amt::bigint, u, s::bigint, b::bigint, ${(posted[0] as PostedTransaction).postedAt}::timestamptz
        from unnest(${textArrays(entryColumns(posted.map((t) => ({ transaction: t.id, entries: t.entries }))))})
             as v(t, a, d, amt, u, s, b)
      returning id::text, account_id::text, account_seq::text`),
  ).map((r) => [r.account_id, r.account_seq, r.id] as const)
}

/** Writes the held amounts this batch released (the balances are the database's to write). */
async function updateHeldAmounts(tx: Tx, states: Map<bigint, PlannedState>): Promise<void> {
  const changed = [...states].filter(([, s]) => s.heldChanged)
  if (changed.length === 0) return
  await tx.execute(sql`
    update ledger_accounts a set held_amount = v.held::bigint, updated_at = clock_timestamp()
      from unnest(${textArrays([arrayLiteral(changed.map(([id]) => id)), arrayLiteral(changed.map(([, s]) => s.heldAmount))])})
        as v(id, held)
     where a.id = v.id::bigint`)
}

/** The transactions' columns, for `unnest(…) as v(key, hash, kind, description, metadata, reverses)`. */
function transactionColumns(postings: readonly PreparedPosting[]): string[] {
  return [
    arrayLiteral(postings.map((p) => p.request.idempotencyKey)),
    arrayLiteral(postings.map((p) => p.requestHash)),
    arrayLiteral(postings.map((p) => p.request.kind)),
    arrayLiteral(postings.map((p) => p.request.description ?? '')),
    arrayLiteral(postings.map((p) => JSON.stringify(p.request.metadata ?? {}))),
    arrayLiteral(postings.map((p) => p.reversesId)),
  ]
}

/**
 * The entries' columns, for `unnest(…) as v(transaction, account, direction,
 * amount, unit, seq, balance after)`, each a text[] literal; the transaction
 * column is its id or key.
 */
function entryColumns(
  groups: readonly { transaction: string | bigint; entries: readonly Omit<PostedEntry, 'id'>[] }[],
): string[] {
  const columns: (string | bigint)[][] = [[], [], [], [], [], [], []]
  const [transactions, accounts, directions, amounts, units, seqs, balances] = columns as [
    (string | bigint)[],
    bigint[],
    string[],
    bigint[],
    string[],
    bigint[],
    bigint[],
  ]
  for (const { transaction, entries } of groups) {
    for (const e of entries) {
      transactions.push(transaction)
      accounts.push(e.accountId)
      directions.push(e.direction)
      amounts.push(e.amount)
      units.push(e.unit)
      seqs.push(e.accountSeq)
      balances.push(e.balanceAfter)
    }
  }
  return columns.map(arrayLiteral)
}

/** Columns as parameters of a drizzle template: `${textArrays(columns)}` gives `$n::text[], …`. */
function textArrays(columns: readonly string[]): SQL {
  return sql.join(
    columns.map((column) => sql`${column}::text[]`),
    sql`, `,
  )
}

/** Loads whole transactions with their entries (for replays and reversals). */
export async function loadTransactions(
  tx: Tx,
  ids: readonly bigint[],
): Promise<{ requestHash: string; transaction: PostedTransaction }[]> {
  if (ids.length === 0) return []
  const headers = await tx
    .select()
    .from(ledgerTransactions)
    .where(inArray(ledgerTransactions.id, [...ids]))
  const entries = await tx
    .select({
      id: ledgerEntries.id,
      transactionId: ledgerEntries.transactionId,
      accountId: ledgerEntries.accountId,
      accountCode: ledgerAccounts.code,
      direction: ledgerEntries.direction,
      amount: ledgerEntries.amount,
      unit: ledgerEntries.unit,
      accountSeq: ledgerEntries.accountSeq,
      balanceAfter: ledgerEntries.balanceAfter,
    })
    .from(ledgerEntries)
    .innerJoin(ledgerAccounts, eq(ledgerAccounts.id, ledgerEntries.accountId))
    .where(and(inArray(ledgerEntries.transactionId, [...ids])))
    .orderBy(ledgerEntries.id)
  return headers.map((h) => ({
    requestHash: h.requestHash,
    transaction: {
      id: h.id,
      idempotencyKey: h.idempotencyKey,
      kind: h.kind,
      description: h.description,
      metadata: h.metadata as Record<string, unknown>,
      reversesId: h.reversesId,
      postedAt: h.postedAt,
      entries: entries.filter((e) => e.transactionId === h.id).map(({ transactionId: _, ...e }) => e),
    },
  }))
}

export const alreadyReversed = (id: bigint) =>
  new LedgerError('ALREADY_REVERSED', `transaction ${id} has already been reversed`, {
    transactionId: id.toString(),
  })
