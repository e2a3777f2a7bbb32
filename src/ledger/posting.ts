import { and, eq, inArray, sql } from 'drizzle-orm'
import type { Tx } from '../db/client.js'
import { rowsOf } from '../db/rows.js'
import { ledgerAccounts, ledgerEntries, ledgerTransactions } from '../db/schema.js'
import { IdempotencyConflictError, InsufficientFundsError, LedgerError } from './errors.js'
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
// costs one lock per batch, not one per posting, and a batch costs three
// statements whatever its size.
//
// Order inside the database transaction, always the same:
//   1. lock every account of the batch, sorted by id (no deadlocks), and in
//      the same statement read the clock, the keys already posted and the
//      reversals already made;
//   2. apply the postings in memory, in order, refusing those that would
//      overdraw a non-negative account (a refusal writes nothing);
//   3. insert the transactions; release the held amounts the batch settles;
//      insert the entries.
// The database re-checks all of it and keeps the accounts' cached balances
// from the entries itself (migrations/*_ledger_guards, *_ledger_fast_path).

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

interface AccountState {
  balance: bigint
  heldAmount: bigint
  lastSeq: bigint
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
   * released and entries written (entry ids are not known yet).
   */
  beforeEntries?: (tx: Tx, posted: PostedTransaction[]) => Promise<void>
}

export async function postBatchInTx(
  tx: Tx,
  batch: readonly PreparedPosting[],
  hooks: BatchHooks = {},
): Promise<Settled<PostingResult>[]> {
  const results: (Settled<PostingResult> | undefined)[] = new Array(batch.length)
  const { states, now, existing, reversed } = await lockAndRead(tx, batch)

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
      twins.push([index, first]) // settled below by the first posting's outcome
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

  const posted = await insertTransactions(tx, accepted, now)
  if (hooks.beforeEntries && posted.length > 0) await hooks.beforeEntries(tx, posted)
  // Released holds first: the accounts' check (balance >= held) holds after every statement.
  await updateHeldAmounts(tx, states)
  await insertEntries(tx, posted)

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

interface LockedState {
  states: Map<bigint, AccountState>
  /** The database clock, read after the locks: per account, posting times follow the sequence. */
  now: string
  existing: Map<string, { requestHash: string; transaction: PostedTransaction }>
  reversed: Set<bigint>
}

async function lockAndRead(tx: Tx, batch: readonly PreparedPosting[]): Promise<LockedState> {
  const ids = [
    ...new Set(batch.flatMap((p) => [...p.accounts, ...(p.routes ?? [])].flatMap((a) => (a ? [a.id] : [])))),
  ].sort((a, b) => (a < b ? -1 : 1))
  const keys = batch.map((p) => p.request.idempotencyKey)
  const reverses = batch.flatMap((p) => (p.reversesId === null ? [] : [p.reversesId.toString()]))
  // One round trip. ORDER BY id under FOR UPDATE: rows are locked in id order,
  // the one order every posting uses, so two batches can never wait on each
  // other in a cycle. The clock is read in the outer query, after the locked
  // rows are all fetched. A key posted concurrently and missed here loses the
  // race on the unique index (23505) and the batch is retried (tx.ts).
  // Arrays travel as one parameter each, so the statement text never varies
  // with the batch size and stays prepared.
  const result = await tx.execute(sql`
    with locked as (
      select id, balance, held_amount, last_seq from ledger_accounts
       where id = any(${texts(ids)}::bigint[]) order by id for update)
    select l.accounts, clock_timestamp()::text as now,
      (select coalesce(json_agg(t.id::text), '[]') from ledger_transactions t
        where t.idempotency_key = any(${texts(keys)}::text[])) as existing_ids,
      (select coalesce(json_agg(t.reverses_id::text), '[]') from ledger_transactions t
        where t.reverses_id = any(${texts(reverses)}::bigint[])) as reversed_ids
      from (select coalesce(json_agg(json_build_array(id::text, balance::text, held_amount::text, last_seq::text)), '[]')
              as accounts from locked) l`)
  const row = rowsOf<{ accounts: unknown; now: string; existing_ids: unknown; reversed_ids: unknown }>(
    result,
  )[0]
  if (!row) throw new Error('ledger: the lock query returned no row')
  const accounts = jsonList<[string, string, string, string]>(row.accounts)
  if (accounts.length !== ids.length)
    throw new LedgerError('UNKNOWN_ACCOUNT', 'an account of this batch does not exist')
  const states = new Map<bigint, AccountState>(
    accounts.map(([id, balance, held, lastSeq]) => [
      BigInt(id),
      { balance: BigInt(balance), heldAmount: BigInt(held), lastSeq: BigInt(lastSeq), heldChanged: false },
    ]),
  )
  const existingIds = jsonList<string>(row.existing_ids).map((id) => BigInt(id))
  const existing = new Map<string, { requestHash: string; transaction: PostedTransaction }>()
  if (existingIds.length > 0) {
    for (const found of await loadTransactions(tx, existingIds))
      existing.set(found.transaction.idempotencyKey, found)
  }
  const reversed = new Set(jsonList<string>(row.reversed_ids).map((id) => BigInt(id)))
  return { states, now: row.now, existing, reversed }
}

/** json_agg comes back parsed from PGlite and as text from some drivers. */
function jsonList<T>(value: unknown): T[] {
  return (typeof value === 'string' ? JSON.parse(value) : value) as T[]
}

/** Applies a posting to the locked states, or returns why it is refused (states untouched then). */
function apply(
  prepared: PreparedPosting,
  states: Map<bigint, AccountState>,
): Omit<PostedEntry, 'id'>[] | Error {
  const scratch = new Map<bigint, AccountState>()
  const stateOf = (id: bigint) => {
    let s = scratch.get(id)
    if (!s) {
      s = { ...(states.get(id) as AccountState) }
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
  stateOf: (id: bigint) => AccountState,
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

/** Inserts the accepted postings' transactions; returns them whole, entry ids still unset (0). */
async function insertTransactions(
  tx: Tx,
  accepted: readonly Accepted[],
  now: string,
): Promise<PostedTransaction[]> {
  if (accepted.length === 0) return []
  const requests = accepted.map((a) => a.prepared)
  const inserted = rowsOf<{ id: string; idempotency_key: string }>(
    await tx.execute(sql`
      insert into ledger_transactions (idempotency_key, request_hash, kind, description, metadata, reverses_id, posted_at)
      select k, h, kind, d, m::jsonb, r::bigint, ${now}::timestamptz
        from unnest(${texts(requests.map((p) => p.request.idempotencyKey))}::text[],
                    ${texts(requests.map((p) => p.requestHash))}::text[],
                    ${texts(requests.map((p) => p.request.kind))}::text[],
                    ${texts(requests.map((p) => p.request.description ?? ''))}::text[],
                    ${texts(requests.map((p) => JSON.stringify(p.request.metadata ?? {})))}::text[],
                    ${texts(requests.map((p) => p.reversesId?.toString() ?? null))}::text[])
          as v(k, h, kind, d, m, r)
      returning id::text, idempotency_key`),
  )
  const idByKey = new Map(inserted.map((r) => [r.idempotency_key, BigInt(r.id)]))
  return accepted.map(({ prepared: p, entries }) => ({
    id: idByKey.get(p.request.idempotencyKey) as bigint,
    idempotencyKey: p.request.idempotencyKey,
    kind: p.request.kind,
    description: p.request.description ?? '',
    metadata: p.request.metadata ?? {},
    reversesId: p.reversesId,
    postedAt: now,
    entries: entries.map((e) => ({ ...e, id: 0n })),
  }))
}

/**
 * Inserts every entry of the batch in one statement (the database's checks
 * run once per statement, and its trigger brings the accounts' cached
 * balances up to date), then sets the entries' ids on `posted`.
 */
async function insertEntries(tx: Tx, posted: PostedTransaction[]): Promise<void> {
  if (posted.length === 0) return
  const entries = posted.flatMap((t) => t.entries.map((e) => ({ ...e, transactionId: t.id })))
  const entryIds = rowsOf<{ id: string; account_id: string; account_seq: string }>(
    await tx.execute(sql`
      insert into ledger_entries (transaction_id, account_id, direction, amount, unit, account_seq, balance_after, posted_at)
      select t::bigint, a::bigint, d::entry_direction, amt::bigint, u, s::bigint, b::bigint, ${(posted[0] as PostedTransaction).postedAt}::timestamptz
        from unnest(${texts(entries.map((e) => e.transactionId))}::text[],
                    ${texts(entries.map((e) => e.accountId))}::text[],
                    ${texts(entries.map((e) => e.direction))}::text[],
                    ${texts(entries.map((e) => e.amount))}::text[],
                    ${texts(entries.map((e) => e.unit))}::text[],
                    ${texts(entries.map((e) => e.accountSeq))}::text[],
                    ${texts(entries.map((e) => e.balanceAfter))}::text[])
          as v(t, a, d, amt, u, s, b)
      returning id::text, account_id::text, account_seq::text`),
  )
  const entryIdOf = new Map(entryIds.map((r) => [`${r.account_id}:${r.account_seq}`, BigInt(r.id)]))
  for (const t of posted)
    for (const e of t.entries) e.id = entryIdOf.get(`${e.accountId}:${e.accountSeq}`) as bigint
}

/** Writes the held amounts this batch released (the balances are the database's to write). */
async function updateHeldAmounts(tx: Tx, states: Map<bigint, AccountState>): Promise<void> {
  const changed = [...states].filter(([, s]) => s.heldChanged)
  if (changed.length === 0) return
  await tx.execute(sql`
    update ledger_accounts a set held_amount = v.held::bigint, updated_at = clock_timestamp()
      from unnest(${texts(changed.map(([id]) => id))}::text[], ${texts(changed.map(([, s]) => s.heldAmount))}::text[])
        as v(id, held)
     where a.id = v.id::bigint`)
}

/** A column as one text[] parameter (both drivers send string arrays natively). */
function texts(values: readonly (string | bigint | null)[]) {
  return sql.param(values.map((v) => (v === null ? null : v.toString())))
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
