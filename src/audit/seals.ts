import { createHash } from 'node:crypto'
import { sql } from 'drizzle-orm'
import type { Db, DbOrTx } from '../db/client.js'
import { rowsOf } from '../db/rows.js'
import { closedHorizon } from './horizon.js'

// Tamper evidence: closed ranges of journal transactions sealed, in the
// background, into a hash chain (table ledger_seals). Nothing waits on it:
// postings take no lock the sealer holds, and the sealer only seals what no
// database transaction in flight can still change (horizon.ts).
//
// The canonical content of a range [first, last] — the one definition, used
// to seal and to verify; docs/AUDIT.md spells it out for an auditor — is
// UTF-8 text, one line per transaction in id order, each followed by one
// line per entry of it in entry id order, after a header line:
//
//   giftledger-seal-v1|<first>|<last>|<transactions>|<entries>
//   T|<id>|<kind>|<idempotency key>|<request hash>|<description>|<metadata>|<reverses id>|<posted at>
//   E|<id>|<account id>|<direction>|<amount>|<unit>|<account seq>|<balance after>|<posted at>
//
// Every line ends with "\n". Numbers in decimal; text fields (kind, key,
// request hash, description, unit) as JSON strings (PostgreSQL's to_json);
// metadata as PostgreSQL prints the jsonb value; reverses id empty when null;
// instants in UTC as 2026-11-26T01:02:03.123456Z (always six fraction
// digits). Entries whose transaction is missing still count, in the place of
// their transaction id. content_hash = sha256 hex of that text; hash =
// sha256 hex of previous_hash || content_hash (the first seal's previous
// hash is the empty string). A seal's range starts right after its
// predecessor's: ids that do not exist (rolled back) are simply absent.

export const SEAL_FORMAT = 'giftledger-seal-v1'

/** The advisory lock of the sealer (only sealers take it): one seal is written at a time. */
const SEALER_LOCK_KEY = 0x7365_616c // "seal"

export interface SealerOptions {
  /** Transactions per seal (a backlog is sealed in many seals of at most this many). */
  batchSizeMax: number
  /** How long to wait for in-flight database transactions before sealing up to the horizon. */
  horizonWaitMaxMs: number
}

export const SEALER_DEFAULTS: SealerOptions = { batchSizeMax: 10_000, horizonWaitMaxMs: 5_000 }

export interface Seal {
  id: bigint
  firstTransactionId: bigint
  lastTransactionId: bigint
  transactionCount: number
  entryCount: number
  contentHash: string
  previousHash: string
  hash: string
  sealedAt: string
}

export interface SealRun {
  /** Seals written by this run. */
  seals: number
  transactions: number
  /** The closed horizon this run sealed towards; null when in-flight transactions did not finish in time. */
  horizon: bigint | null
}

export interface RangeContent {
  transactions: number
  entries: number
  contentHash: string
  /** The canonical text itself, when asked for (tests, an auditor's check by hand). */
  text?: string
}

const sha256Hex = (text: string) => createHash('sha256').update(text, 'utf8').digest('hex')

/** A seal's hash: it chains the previous seal's hash to this seal's content. */
export const chainHash = (previousHash: string, contentHash: string) => sha256Hex(previousHash + contentHash)

const utc = (column: string) =>
  sql.raw(`to_char(${column} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`)

/**
 * The canonical content of the transactions with ids in [first, last] as the
 * rows are now, hashed by PostgreSQL: one statement, bounded by the range.
 */
export async function rangeContent(
  db: DbOrTx,
  first: bigint,
  last: bigint,
  options: { withText?: boolean } = {},
): Promise<RangeContent> {
  const [row] = rowsOf<{ transactions: string; entries: string; content_hash: string; text: string | null }>(
    await db.execute(sql`
      with tx as (
        select t.id,
               concat_ws('|', 'T', t.id, to_json(t.kind)::text, to_json(t.idempotency_key)::text,
                         to_json(t.request_hash)::text, to_json(t.description)::text, t.metadata::text,
                         coalesce(t.reverses_id::text, ''), ${utc('t.posted_at')}) || E'\n' as line
          from ledger_transactions t
         where t.id between ${first} and ${last}
      ), en as (
        select e.transaction_id, count(*) as n,
               string_agg(concat_ws('|', 'E', e.id, e.account_id, e.direction, e.amount, to_json(e.unit)::text,
                                    e.account_seq, e.balance_after, ${utc('e.posted_at')}) || E'\n', ''
                          order by e.id) as lines
          from ledger_entries e
         where e.transaction_id between ${first} and ${last}
         group by e.transaction_id
      ), body as (
        select count(tx.id) as transactions, coalesce(sum(en.n), 0) as entries,
               coalesce(string_agg(coalesce(tx.line, '') || coalesce(en.lines, ''), ''
                                   order by coalesce(tx.id, en.transaction_id)), '') as lines
          from tx full join en on en.transaction_id = tx.id
      ), content as (
        select transactions, entries,
               format(E'%s|%s|%s|%s|%s\n', ${SEAL_FORMAT}::text, ${first}::bigint, ${last}::bigint,
                      transactions, entries) || lines as text
          from body
      )
      select transactions::text, entries::text,
             encode(sha256(convert_to(text, 'UTF8')), 'hex') as content_hash,
             case when ${options.withText ?? false}::boolean then text end as text
        from content`),
  )
  if (!row) throw new Error('audit: the range content query returned no row')
  return {
    transactions: Number(row.transactions),
    entries: Number(row.entries),
    contentHash: row.content_hash,
    ...(row.text === null ? {} : { text: row.text }),
  }
}

interface SealRow {
  id: string
  first_transaction_id: string
  last_transaction_id: string
  transaction_count: number
  entry_count: number
  content_hash: string
  previous_hash: string
  hash: string
  sealed_at: string
}

const SEAL_COLUMNS =
  sql.raw(`id::text, first_transaction_id::text, last_transaction_id::text, transaction_count,
  entry_count, content_hash, previous_hash, hash,
  to_char(sealed_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as sealed_at`)

function toSeal(row: SealRow): Seal {
  return {
    id: BigInt(row.id),
    firstTransactionId: BigInt(row.first_transaction_id),
    lastTransactionId: BigInt(row.last_transaction_id),
    transactionCount: Number(row.transaction_count),
    entryCount: Number(row.entry_count),
    contentHash: row.content_hash,
    previousHash: row.previous_hash,
    hash: row.hash,
    sealedAt: row.sealed_at,
  }
}

/** The latest seal (the end of the chain), or null before the first. */
export async function latestSeal(db: DbOrTx): Promise<Seal | null> {
  const [row] = rowsOf<SealRow>(
    // Qualified: the output column of the same name is text, and would sort as text.
    await db.execute(
      sql`select ${SEAL_COLUMNS} from ledger_seals s order by s.last_transaction_id desc limit 1`,
    ),
  )
  return row ? toSeal(row) : null
}

/** Seals in chain order, from the one after `afterLastId`: a page of at most `limit`. */
export async function sealsPage(db: DbOrTx, afterLastId: bigint, limit: number): Promise<Seal[]> {
  return rowsOf<SealRow>(
    await db.execute(sql`
      select ${SEAL_COLUMNS} from ledger_seals s
       where s.last_transaction_id > ${afterLastId}
       order by s.last_transaction_id limit ${limit}`),
  ).map(toSeal)
}

/**
 * Writes seals in the background. Safe on several instances at once: one
 * seal is written at a time under an advisory lock only sealers take, and
 * the unique first/last indexes refuse a fork even without it.
 */
export class Sealer {
  private readonly options: SealerOptions

  constructor(
    private readonly db: Db,
    options: Partial<SealerOptions> = {},
  ) {
    this.options = { ...SEALER_DEFAULTS, ...options }
    if (!Number.isInteger(this.options.batchSizeMax) || this.options.batchSizeMax < 1) {
      throw new Error('audit: batchSizeMax must be a positive whole number')
    }
  }

  /**
   * Seals every closed transaction not sealed yet, in seals of at most
   * batchSizeMax transactions, each in its own short database transaction.
   * Stops early when `shouldStop()` says so (shutdown) or another instance
   * is sealing.
   */
  async sealClosed(shouldStop: () => boolean = () => false): Promise<SealRun> {
    const run: SealRun = { seals: 0, transactions: 0, horizon: null }
    const sealed = (await latestSeal(this.db))?.lastTransactionId ?? 0n
    run.horizon = await closedHorizon(this.db, {
      waitMaxMs: this.options.horizonWaitMaxMs,
      ifAbove: sealed,
    })
    if (run.horizon === null) return run
    while (!shouldStop()) {
      const seal = await this.sealNext(run.horizon)
      if (!seal) break
      run.seals++
      run.transactions += seal.transactionCount
    }
    return run
  }

  /** One seal of the next closed range up to `horizon`; null when there is nothing to seal (or another sealer is at it). */
  private sealNext(horizon: bigint): Promise<Seal | null> {
    return this.db.transaction(async (tx) => {
      const [lock] = rowsOf<{ locked: boolean }>(
        await tx.execute(sql`select pg_try_advisory_xact_lock(${SEALER_LOCK_KEY}) as locked`),
      )
      if (!lock?.locked) return null
      const previous = await latestSeal(tx)
      const first = (previous?.lastTransactionId ?? 0n) + 1n
      if (first > horizon) return null
      const [bound] = rowsOf<{ last: string | null }>(
        await tx.execute(sql`
          select max(id)::text as last from (
            select id from ledger_transactions where id between ${first} and ${horizon}
             order by id limit ${this.options.batchSizeMax}) batch`),
      )
      if (!bound?.last) return null
      const last = BigInt(bound.last)
      const content = await rangeContent(tx, first, last)
      const previousHash = previous?.hash ?? ''
      const [row] = rowsOf<SealRow>(
        await tx.execute(sql`
          insert into ledger_seals
            (first_transaction_id, last_transaction_id, transaction_count, entry_count, content_hash, previous_hash, hash)
          values (${first}, ${last}, ${content.transactions}, ${content.entries}, ${content.contentHash},
                  ${previousHash}, ${chainHash(previousHash, content.contentHash)})
          returning ${SEAL_COLUMNS}`),
      )
      if (!row) throw new Error('audit: the seal insert returned no row')
      return toSeal(row)
    })
  }
}

/**
 * Runs the sealer every `intervalMs`, one run at a time (a tick while a run
 * is in progress is skipped: a backlog does not queue runs up). The returned
 * function stops it and waits for the run in progress, which stops after its
 * current seal.
 */
export function startSealing(
  sealer: Sealer,
  options: {
    intervalMs: number
    onError: (error: unknown) => void
    onSealed?: (run: SealRun) => void
    /** In-flight database transactions kept the horizon from closing this time (a stuck session?). */
    onStalled?: () => void
  },
): () => Promise<void> {
  let stopping = false
  let running: Promise<void> | null = null
  const tick = () => {
    if (running || stopping) return
    running = sealer
      .sealClosed(() => stopping)
      .then((run) => {
        if (run.horizon === null) options.onStalled?.()
        else if (run.seals > 0) options.onSealed?.(run)
      })
      .catch(options.onError)
      .finally(() => {
        running = null
      })
  }
  const timer = setInterval(tick, options.intervalMs)
  timer.unref()
  tick()
  return async () => {
    stopping = true
    clearInterval(timer)
    await running
  }
}

// ---- verification ------------------------------------------------------------

export type SealProblemKind =
  | 'SEAL_CONTENT_MISMATCH'
  | 'SEAL_HASH_MISMATCH'
  | 'SEAL_CHAIN_BROKEN'
  | 'SEAL_RANGE_GAP'

export interface SealProblem {
  kind: SealProblemKind
  message: string
  /** The first transaction of the seal's range. */
  transactionId: bigint | null
}

export interface SealVerification {
  checkedSeals: number
  /** The last transaction id under seal (null before the first seal). */
  sealedThroughTransactionId: bigint | null
  problems: SealProblem[]
}

const SEALS_PER_PAGE = 100

/**
 * Recomputes the chain from the current rows: each seal's content hash over
 * its range, its hash from its previous hash and content hash, the link to
 * the seal before it, and that the ranges follow each other with no gap.
 * Streams: a page of seals at a time, one statement per seal's range. Run it
 * inside one repeatable-read transaction for a consistent answer.
 */
export async function verifySeals(
  db: DbOrTx,
  options: { problemsMax?: number } = {},
): Promise<SealVerification> {
  const problemsMax = options.problemsMax ?? 100
  const problems: SealProblem[] = []
  const report = (problem: SealProblem) => {
    if (problems.length < problemsMax) problems.push(problem)
  }
  let checkedSeals = 0
  let previous: Seal | null = null
  for (;;) {
    const page = await sealsPage(db, previous?.lastTransactionId ?? 0n, SEALS_PER_PAGE)
    for (const seal of page) {
      checkedSeals++
      const name = `seal ${seal.id} (transactions ${seal.firstTransactionId}–${seal.lastTransactionId})`
      const expectedFirst = (previous?.lastTransactionId ?? 0n) + 1n
      if (seal.firstTransactionId !== expectedFirst) {
        report({
          kind: 'SEAL_RANGE_GAP',
          message: `${name} starts at ${seal.firstTransactionId}, the previous seal ends at ${expectedFirst - 1n}`,
          transactionId: seal.firstTransactionId,
        })
      }
      const expectedPrevious = previous?.hash ?? ''
      if (seal.previousHash !== expectedPrevious) {
        report({
          kind: 'SEAL_CHAIN_BROKEN',
          message: `${name}: previous hash ${seal.previousHash || '(empty)'}, the previous seal's hash is ${expectedPrevious || '(empty)'}`,
          transactionId: seal.firstTransactionId,
        })
      }
      if (seal.hash !== chainHash(seal.previousHash, seal.contentHash)) {
        report({
          kind: 'SEAL_HASH_MISMATCH',
          message: `${name}: hash ${seal.hash} is not sha256(previous hash + content hash)`,
          transactionId: seal.firstTransactionId,
        })
      }
      const now = await rangeContent(db, seal.firstTransactionId, seal.lastTransactionId)
      if (now.contentHash !== seal.contentHash) {
        report({
          kind: 'SEAL_CONTENT_MISMATCH',
          message:
            `${name}: its transactions changed since they were sealed (content hash ${now.contentHash}, sealed ${seal.contentHash}; ` +
            `${now.transactions} transactions and ${now.entries} entries now, ${seal.transactionCount} and ${seal.entryCount} sealed)`,
          transactionId: seal.firstTransactionId,
        })
      }
      previous = seal
    }
    if (page.length < SEALS_PER_PAGE) break
  }
  return {
    checkedSeals,
    sealedThroughTransactionId: previous?.lastTransactionId ?? null,
    problems,
  }
}
