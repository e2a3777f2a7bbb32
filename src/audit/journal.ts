import { type SQL, sql } from 'drizzle-orm'
import type { DbOrTx } from '../db/client.js'
import { rowsOf } from '../db/rows.js'
import type { AccountType, Direction, PostedEntry } from '../ledger/index.js'

// The accountants' read side of the journal: transactions with their
// entries, accounts, statements and balances at an instant. Read-only, and
// every list is a keyset page over an index (docs/AUDIT.md, "Indexes"):
//
// - the journal in (posted_at, id) order: ledger_transactions_posted_at_idx
//   gives posted_at order, PostgreSQL sorts the few transactions of one
//   instant (one batch) by id; filtered by account, the account's entries
//   in (account_id, posted_at) order drive it instead;
// - a statement in account_seq order: ledger_entries_account_seq_key, with
//   `from`/`to` turned into sequence bounds first (per account, posting
//   times follow the sequence), so a page deep in a busy account is one
//   index range scan;
// - a balance at an instant: one probe of ledger_entries_account_posted_idx.
//
// Instants from clients are milliseconds (the DateTime scalar); entries are
// stamped in microseconds. An instant `at` covers its whole millisecond: an
// entry posted at 12:00:00.123456 is "at or before 12:00:00.123Z". So a
// transaction's own postedAt, sent back as `to` or `asOf`, includes it.

/** A journal transaction's header; `entries` when the caller already has them (a grant's payload). */
export interface JournalTransaction {
  id: bigint
  idempotencyKey: string
  kind: string
  description: string
  metadata: Record<string, unknown>
  reversesId: bigint | null
  postedAt: string
  /** posted_at in microseconds since the epoch: the keyset cursor's first half. */
  postedUs?: string
  entries?: PostedEntry[]
}

/** An account's identity: what a trial balance line carries (the rest is loaded if asked for). */
export interface AccountHead {
  id: bigint
  code: string
  name: string
  type: AccountType
  unit: string
}

export interface AccountRow extends AccountHead {
  allowNegative: boolean
  balance: bigint
  debitsTotal: bigint
  creditsTotal: bigint
  heldAmount: bigint
  lastSeq: bigint
  createdAt: string
}

export interface StatementEntry {
  id: bigint
  transactionId: bigint
  accountId: bigint
  direction: Direction
  amount: bigint
  unit: string
  accountSeq: bigint
  balanceAfter: bigint
  postedAt: string
}

export interface JournalFilter {
  kind?: string | null
  accountId?: bigint | null
  from?: Date | null
  to?: Date | null
}

export interface TransactionCursor {
  postedUs: bigint
  id: bigint
}

// ---- instants ------------------------------------------------------------------

const at = (instant: Date): SQL => sql`${instant.toISOString()}::timestamptz`
/** Entries posted at or before `instant`, to the millisecond (see above). */
export const postedAtOrBefore = (column: SQL, instant: Date): SQL =>
  sql`${column} < ${at(instant)} + interval '1 millisecond'`
const postedAtOrAfter = (column: SQL, instant: Date): SQL => sql`${column} >= ${at(instant)}`
/** A cursor's instant back as a timestamptz, exactly (microseconds). */
const fromMicros = (us: bigint): SQL =>
  sql`(timestamptz 'epoch' + ${us.toString()}::bigint * interval '1 microsecond')`

// ---- cursors -------------------------------------------------------------------

/** Opaque to clients: base64url of "<posted_at in µs>:<id>". */
export function transactionCursor(t: Pick<JournalTransaction, 'id' | 'postedUs'>): string {
  if (t.postedUs === undefined) throw new Error('a journal row without its cursor instant')
  return Buffer.from(`${t.postedUs}:${t.id}`).toString('base64url')
}

/** null for a cursor that is not one of ours. */
export function parseTransactionCursor(cursor: string): TransactionCursor | null {
  const m = /^(\d{1,20}):(\d{1,19})$/.exec(Buffer.from(cursor, 'base64url').toString())
  return m ? { postedUs: BigInt(m[1] as string), id: BigInt(m[2] as string) } : null
}

// ---- the journal ------------------------------------------------------------------

interface TransactionRowRaw {
  id: string
  idempotency_key: string
  kind: string
  description: string
  metadata: unknown
  reverses_id: string | null
  posted_at: string
  posted_us: string
}

const TRANSACTION_COLUMNS = sql.raw(`t.id::text as id, t.idempotency_key, t.kind, t.description, t.metadata,
  t.reverses_id::text as reverses_id, t.posted_at::text as posted_at,
  (extract(epoch from t.posted_at) * 1000000)::bigint::text as posted_us`)

function toTransaction(r: TransactionRowRaw): JournalTransaction {
  return {
    id: BigInt(r.id),
    idempotencyKey: r.idempotency_key,
    kind: r.kind,
    description: r.description,
    metadata: (typeof r.metadata === 'string' ? JSON.parse(r.metadata) : r.metadata) as Record<
      string,
      unknown
    >,
    reversesId: r.reverses_id === null ? null : BigInt(r.reverses_id),
    postedAt: r.posted_at,
    postedUs: r.posted_us,
  }
}

/** One page of the journal, oldest first, in (posted_at, id) order; `limit` rows at most. */
export async function listTransactions(
  db: DbOrTx,
  filter: JournalFilter,
  page: { after: TransactionCursor | null; limit: number },
): Promise<JournalTransaction[]> {
  const { after, limit } = page
  if (filter.accountId != null) return listAccountTransactions(db, filter.accountId, filter, page)
  const where: SQL[] = [sql`true`]
  if (filter.kind != null) where.push(sql`t.kind = ${filter.kind}`)
  if (filter.from != null) where.push(postedAtOrAfter(sql`t.posted_at`, filter.from))
  if (filter.to != null) where.push(postedAtOrBefore(sql`t.posted_at`, filter.to))
  if (after !== null) {
    // The plain bound lets the index start at the cursor; the row comparison breaks the tie.
    where.push(sql`t.posted_at >= ${fromMicros(after.postedUs)}`)
    where.push(sql`(t.posted_at, t.id) > (${fromMicros(after.postedUs)}, ${after.id})`)
  }
  const rows = rowsOf<TransactionRowRaw>(
    await db.execute(sql`
      select ${TRANSACTION_COLUMNS}
        from ledger_transactions t
       where ${sql.join(where, sql` and `)}
       order by t.posted_at, t.id
       limit ${limit}`),
  )
  return rows.map(toTransaction)
}

/**
 * The transactions with an entry on one account: driven by the account's
 * entries in posting order (one index range), so a busy account's page costs
 * no more than a quiet one's. A transaction with several entries on the
 * account appears once.
 */
async function listAccountTransactions(
  db: DbOrTx,
  accountId: bigint,
  filter: JournalFilter,
  page: { after: TransactionCursor | null; limit: number },
): Promise<JournalTransaction[]> {
  const { after, limit } = page
  const where: SQL[] = [sql`e.account_id = ${accountId}`]
  if (filter.from != null) where.push(postedAtOrAfter(sql`e.posted_at`, filter.from))
  if (filter.to != null) where.push(postedAtOrBefore(sql`e.posted_at`, filter.to))
  if (after !== null) {
    where.push(sql`e.posted_at >= ${fromMicros(after.postedUs)}`)
    where.push(sql`(e.posted_at, e.transaction_id) > (${fromMicros(after.postedUs)}, ${after.id})`)
  }
  // An entry's posted_at is its transaction's (the integrity check verifies it).
  const kindJoin =
    filter.kind != null
      ? sql`join ledger_transactions k on k.id = e.transaction_id and k.kind = ${filter.kind}`
      : sql``
  const rows = rowsOf<TransactionRowRaw>(
    await db.execute(sql`
      select ${TRANSACTION_COLUMNS}
        from (select e.posted_at, e.transaction_id
                from ledger_entries e ${kindJoin}
               where ${sql.join(where, sql` and `)}
               group by e.posted_at, e.transaction_id
               order by e.posted_at, e.transaction_id
               limit ${limit}) x
        join ledger_transactions t on t.id = x.transaction_id
       order by x.posted_at, x.transaction_id`),
  )
  return rows.map(toTransaction)
}

/** Transactions by id (any order); unknown ids are absent. */
export async function transactionsById(db: DbOrTx, ids: readonly bigint[]): Promise<JournalTransaction[]> {
  if (ids.length === 0) return []
  const rows = rowsOf<TransactionRowRaw>(
    await db.execute(sql`
      select ${TRANSACTION_COLUMNS} from ledger_transactions t
       where t.id = any(${idArray(ids)})`),
  )
  return rows.map(toTransaction)
}

/** The reversal of each transaction that has one, by the reversed transaction's id. */
export async function reversalsOf(db: DbOrTx, ids: readonly bigint[]): Promise<JournalTransaction[]> {
  if (ids.length === 0) return []
  const rows = rowsOf<TransactionRowRaw>(
    await db.execute(sql`
      select ${TRANSACTION_COLUMNS} from ledger_transactions t
       where t.reverses_id = any(${idArray(ids)})`),
  )
  return rows.map(toTransaction)
}

interface EntryRowRaw {
  id: string
  transaction_id: string
  account_id: string
  account_code: string
  direction: Direction
  amount: string
  unit: string
  account_seq: string
  balance_after: string
  posted_at: string
}

/** The entries of each transaction, in entry order. */
export async function entriesOf(db: DbOrTx, transactionIds: readonly bigint[]): Promise<StatementEntry[]> {
  if (transactionIds.length === 0) return []
  const rows = rowsOf<EntryRowRaw>(
    await db.execute(sql`
      select e.id::text as id, e.transaction_id::text as transaction_id, e.account_id::text as account_id,
             e.direction, e.amount::text as amount, e.unit, e.account_seq::text as account_seq,
             e.balance_after::text as balance_after, e.posted_at::text as posted_at
        from ledger_entries e
       where e.transaction_id = any(${idArray(transactionIds)})
       order by e.transaction_id, e.id`),
  )
  return rows.map(toEntry)
}

function toEntry(r: Omit<EntryRowRaw, 'account_code'>): StatementEntry {
  return {
    id: BigInt(r.id),
    transactionId: BigInt(r.transaction_id),
    accountId: BigInt(r.account_id),
    direction: r.direction,
    amount: BigInt(r.amount),
    unit: r.unit,
    accountSeq: BigInt(r.account_seq),
    balanceAfter: BigInt(r.balance_after),
    postedAt: r.posted_at,
  }
}

// ---- accounts ----------------------------------------------------------------------

export interface AccountFilter {
  currency?: string | null
  type?: AccountType | null
  codePrefix?: string | null
}

interface AccountRowRaw {
  id: string
  code: string
  name: string
  type: AccountType
  unit: string
  allow_negative: boolean
  balance: string
  debits_total: string
  credits_total: string
  held_amount: string
  last_seq: string
  created_at: string
}

export const ACCOUNT_COLUMNS = sql.raw(`a.id::text as id, a.code, a.name, a.type, a.unit, a.allow_negative,
  a.balance::text as balance, a.debits_total::text as debits_total, a.credits_total::text as credits_total,
  a.held_amount::text as held_amount, a.last_seq::text as last_seq, a.created_at::text as created_at`)

export function toAccount(r: AccountRowRaw): AccountRow {
  return {
    id: BigInt(r.id),
    code: r.code,
    name: r.name,
    type: r.type,
    unit: r.unit,
    allowNegative: r.allow_negative,
    balance: BigInt(r.balance),
    debitsTotal: BigInt(r.debits_total),
    creditsTotal: BigInt(r.credits_total),
    heldAmount: BigInt(r.held_amount),
    lastSeq: BigInt(r.last_seq),
    createdAt: r.created_at,
  }
}

const USER_ACCOUNT_PREFIX = /^user:([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}):/

/** The chart of accounts in id order (creation order: the platform's accounts first). */
export async function listAccounts(
  db: DbOrTx,
  filter: AccountFilter,
  page: { afterId: bigint | null; limit: number },
): Promise<AccountRow[]> {
  const where: SQL[] = [sql`true`]
  if (page.afterId !== null) where.push(sql`a.id > ${page.afterId}`)
  if (filter.currency != null) where.push(sql`a.unit = ${filter.currency}`)
  if (filter.type != null) where.push(sql`a.type = ${filter.type}`)
  if (filter.codePrefix != null && filter.codePrefix !== '') {
    where.push(sql`starts_with(a.code, ${filter.codePrefix})`)
    // One user's accounts: through the owner index rather than a scan of every account.
    const owner = USER_ACCOUNT_PREFIX.exec(filter.codePrefix)?.[1]
    if (owner) where.push(sql`a.owner_id = ${owner}::uuid`)
  }
  const rows = rowsOf<AccountRowRaw>(
    await db.execute(sql`
      select ${ACCOUNT_COLUMNS} from ledger_accounts a
       where ${sql.join(where, sql` and `)}
       order by a.id
       limit ${page.limit}`),
  )
  return rows.map(toAccount)
}

export async function accountsById(db: DbOrTx, ids: readonly bigint[]): Promise<AccountRow[]> {
  if (ids.length === 0) return []
  const rows = rowsOf<AccountRowRaw>(
    await db.execute(sql`select ${ACCOUNT_COLUMNS} from ledger_accounts a where a.id = any(${idArray(ids)})`),
  )
  return rows.map(toAccount)
}

// ---- statements and balances at an instant --------------------------------------------

/**
 * A statement page: the account's entries in sequence order, after sequence
 * `afterSeq`, posted between `from` and `to` (both inclusive, optional).
 * The instants become sequence bounds first (one index probe each), so the
 * page itself is one range of ledger_entries_account_seq_key however deep.
 */
export async function statement(
  db: DbOrTx,
  accountId: bigint,
  range: { from?: Date | null; to?: Date | null; afterSeq: bigint | null; limit: number },
): Promise<StatementEntry[]> {
  const where: SQL[] = [sql`e.account_id = ${accountId}`]
  if (range.afterSeq !== null) where.push(sql`e.account_seq > ${range.afterSeq}`)
  if (range.from != null) {
    where.push(sql`e.account_seq >= coalesce((
      select f.account_seq from ledger_entries f
       where f.account_id = ${accountId} and ${postedAtOrAfter(sql`f.posted_at`, range.from)}
       order by f.posted_at, f.account_seq limit 1), 9223372036854775807)`)
    where.push(postedAtOrAfter(sql`e.posted_at`, range.from))
  }
  if (range.to != null) {
    where.push(sql`e.account_seq <= coalesce((
      select l.account_seq from ledger_entries l
       where l.account_id = ${accountId} and ${postedAtOrBefore(sql`l.posted_at`, range.to)}
       order by l.posted_at desc, l.account_seq desc limit 1), 0)`)
    where.push(postedAtOrBefore(sql`e.posted_at`, range.to))
  }
  const rows = rowsOf<Omit<EntryRowRaw, 'account_code'>>(
    await db.execute(sql`
      select e.id::text as id, e.transaction_id::text as transaction_id, e.account_id::text as account_id,
             e.direction, e.amount::text as amount, e.unit, e.account_seq::text as account_seq,
             e.balance_after::text as balance_after, e.posted_at::text as posted_at
        from ledger_entries e
       where ${sql.join(where, sql` and `)}
       order by e.account_seq
       limit ${range.limit}`),
  )
  return rows.map(toEntry)
}

/**
 * The account's balance at an instant (on its normal side): the balance after
 * its last entry posted at or before it, 0 before its first. One index probe.
 */
export async function balanceAt(db: DbOrTx, accountId: bigint, instant: Date): Promise<bigint> {
  const [row] = rowsOf<{ balance_after: string }>(
    await db.execute(sql`
      select e.balance_after::text as balance_after from ledger_entries e
       where e.account_id = ${accountId} and ${postedAtOrBefore(sql`e.posted_at`, instant)}
       order by e.posted_at desc, e.account_seq desc
       limit 1`),
  )
  return row ? BigInt(row.balance_after) : 0n
}

/** A bigint[] parameter that both drivers bind the same way. */
function idArray(ids: readonly bigint[]): SQL {
  return sql`${`{${ids.join(',')}}`}::bigint[]`
}
