import { mkdirSync } from 'node:fs'
import { PGlite } from '@electric-sql/pglite'
import { is, SQL, sql } from 'drizzle-orm'
import type { Logger as DrizzleLogger } from 'drizzle-orm/logger'
import { PgDialect } from 'drizzle-orm/pg-core'
import type { PgAsyncDatabase, PgAsyncTransaction } from 'drizzle-orm/pg-core/async'
import type { PgQueryResultHKT } from 'drizzle-orm/pg-core/session'
import { drizzle as drizzlePglite } from 'drizzle-orm/pglite'
import { drizzle as drizzlePostgres } from 'drizzle-orm/postgres-js'
import postgres from 'postgres'
import type { Config } from '../config.js'
import { type Relations, relations } from './relations.js'
import type { Statement } from './statement.js'

/** The drizzle database, whichever driver is underneath. */
export type Db = PgAsyncDatabase<PgQueryResultHKT, Relations>
export type Tx = PgAsyncTransaction<PgQueryResultHKT, Relations>
/** A database handle or an open transaction: code that only reads or writes takes either. */
export type DbOrTx = Db | Tx

/**
 * Runs statements as one database transaction in one round trip: BEGIN, the
 * statements and COMMIT are sent together, and PostgreSQL runs them in order.
 * A statement that fails aborts the transaction (the COMMIT then rolls it
 * back) and its error is thrown. Returns each statement's rows.
 */
export type OneTrip = (
  statements: readonly Statement[],
  options?: OneTripOptions,
) => Promise<Record<string, unknown>[][]>

export interface OneTripOptions {
  /**
   * Plan the trip's statements once per connection and reuse the plan
   * (plan_cache_mode = force_generic_plan for this transaction only; the
   * pool's sessions plan each execution for its values). For statements
   * whose best plan does not depend on their parameters' values: every
   * trip saves its planning, and so does every statement of the triggers
   * the trip fires. Sequential scans are off in that transaction too
   * (GENERIC_PLANS_BEGIN): a plan kept from when a table was small must
   * not scan it whole once it has grown.
   */
  genericPlans?: boolean
}

export interface Database {
  readonly kind: 'postgres' | 'pglite'
  readonly db: Db
  /** What the driver is doing now, counted around its calls (GET /metrics). */
  readonly pool: PoolUse
  /**
   * On PostgreSQL: a transaction in one round trip, for work that needs no
   * answer before its commit (the ledger's fast path). PGlite has no network
   * to save: undefined.
   */
  readonly oneTrip?: OneTrip
  /**
   * On PostgreSQL, with oneTrip: the one-trip writer of lane k (lane 0 is
   * oneTrip), each on a connection of its own, created on first use (the
   * ledger's lanes, src/ledger/lanes.ts). Trips of one lane run in the order
   * sent; trips of different lanes run side by side. Undefined for a lane
   * the pool cannot spare a connection for (lane k needs a pool of k + 3:
   * the writers, the gift batches' pipeline, and one for everything else).
   */
  readonly oneTripLane?: (lane: number) => OneTrip | undefined
  /**
   * On PostgreSQL with a pool of three or more: pipelined transactions on a
   * connection reserved for them while they come (the gift batches). PGlite:
   * undefined. Their statements run on generic plans (plan_cache_mode =
   * force_generic_plan for the transaction, sequential scans off: see
   * GENERIC_PLANS_BEGIN): planned once per connection,
   * like the one-trip transactions' with `genericPlans`, and so are the
   * foreign-key checks of their inserts, which the pool's
   * force_custom_plan otherwise plans again for every row (about 30% of
   * PostgreSQL's CPU per gift, measured with perf in bench:api).
   */
  readonly pipelined?: Pipelined
  /** True when the database answers; never throws. */
  ping(): Promise<boolean>
  close(): Promise<void>
}

/**
 * A transaction on a connection of its own whose statements are sent as soon
 * as they are issued, without waiting for the answers of those before them:
 * PostgreSQL runs them in the order issued. BEGIN goes out with the first
 * statements and COMMIT with the last (`commit()`), so a transaction of two
 * dependent steps costs two round trips, not one per statement plus BEGIN
 * and COMMIT.
 */
export interface PipelinedTx {
  /**
   * drizzle on the transaction's connection. Statements issued through it
   * are sent in the order issued, but drizzle may defer the sending by a
   * tick: for statements that must go out at once and in order, behind all
   * of these, use send().
   */
  readonly db: Db
  /**
   * Sends the statements now, in this order, and with `commit`, COMMIT right
   * behind them; resolves with each statement's rows. A statement that fails
   * aborts the transaction (the COMMIT then rolls it back) and its error is
   * thrown.
   */
  send(statements: readonly Statement[], options?: { commit?: boolean }): Promise<Record<string, unknown>[][]>
}

/**
 * Runs `work` as one pipelined transaction. If `work` returns or throws
 * without having sent COMMIT, the transaction is rolled back. One at a time:
 * a second call waits for the first to end.
 */
export type Pipelined = <T>(work: (tx: PipelinedTx) => Promise<T>) => Promise<T>

export type DatabaseConfig = Config['database']

/**
 * Connection use, counted in this process around the driver's calls: the
 * `postgres` driver exposes no pool statistics. A transaction holds one
 * connection from BEGIN to COMMIT; a statement outside a transaction holds
 * one while it runs. When `transactions + statements` exceeds `max`, the
 * rest are waiting for a connection inside the driver.
 */
export interface PoolUse {
  /** Connections the pool may open (PGlite: its single one). */
  readonly max: number
  /** Transactions running or waiting for a connection now. */
  transactions: number
  /** Statements outside transactions running or waiting for a connection now. */
  statements: number
  /** Since start: transactions begun, statements sent outside transactions. */
  transactionsStarted: number
  statementsStarted: number
}

function newPoolUse(max: number): PoolUse {
  return { max, transactions: 0, statements: 0, transactionsStarted: 0, statementsStarted: 0 }
}

/** Wraps `target[method]` (which returns a promise or a lazy thenable) to count its calls in flight. */
function countCalls(target: object, method: string, use: PoolUse, kind: 'transactions' | 'statements'): void {
  const host = target as Record<string, (...args: unknown[]) => PromiseLike<unknown>>
  const original = host[method]
  if (typeof original !== 'function') throw new Error(`driver has no ${method}()`)
  const startedKey = kind === 'transactions' ? 'transactionsStarted' : 'statementsStarted'
  host[method] = function (this: unknown, ...args: unknown[]) {
    const result = original.apply(this, args)
    use[kind]++
    use[startedKey]++
    const done = () => {
      use[kind]--
    }
    // A postgres.js query runs when first awaited; drizzle awaits it at once, so this starts nothing early.
    result.then(done, done)
    return result
  }
}

export interface OpenDatabaseOptions {
  /** Sees every statement drizzle sends (SQL logging; query counting in tests). */
  logger?: DrizzleLogger
}

export async function openDatabase(
  config: DatabaseConfig,
  options: OpenDatabaseOptions = {},
): Promise<Database> {
  return config.kind === 'postgres'
    ? openPostgres(config.url, config.poolMax, options.logger)
    : openPglite(config.dir, options.logger)
}

/** Options that matter for a ledger, set explicitly rather than left to defaults. */
export function postgresOptions(poolMax: number): postgres.Options<Record<string, postgres.PostgresType>> {
  return {
    max: poolMax,
    idle_timeout: 30,
    connect_timeout: 10,
    // While PostgreSQL is away, a query waits for its connection's next
    // attempt: the driver's default backoff grows to 20 s, so requests hung
    // for 10-20 s each. At most 1 s between attempts: a request is refused
    // within about a second, and the pool is back about a second after the
    // database (test/fault-database-restart.test.ts).
    backoff: (retries: number) => Math.min(0.05 * 2 ** retries, 1),
    max_lifetime: 60 * 30,
    onnotice: () => {},
    connection: {
      application_name: 'giftledger',
      // Row locks give the ledger the isolation it needs; set per session so
      // a transaction costs no extra SET round trip.
      default_transaction_isolation: 'read committed',
      // The guard triggers' set-based checks are misestimated on transition
      // tables; JIT then compiles ~200 ms for ~3 ms of work (bench:ledger).
      jit: 'off',
      // A request never waits forever on a lock or a runaway query; a
      // forgotten open transaction never holds account locks for long.
      statement_timeout: 30_000,
      lock_timeout: 10_000,
      idle_in_transaction_session_timeout: 60_000,
      // Statements are prepared (preferPrepared below); each execution is
      // still planned for its own values, as an unnamed statement was: no
      // generic plan for a query whose best plan depends on them.
      plan_cache_mode: 'force_custom_plan',
    },
  }
}

/**
 * drizzle sends its raw statements (db.execute: the ledger's and the gift
 * batches' SQL) as unnamed statements, and postgres.js sends an unnamed
 * statement with parameters in two round trips: Parse and Describe, then,
 * once the parameter types are known, Bind and Execute. A named (prepared)
 * statement is described once per connection and then takes one round trip.
 * Measured: ~110 µs instead of ~160 µs per execute on a quiet machine, ~40%
 * less driver CPU, and under load one wait for the event loop instead of two
 * per statement. Statements whose text varies would each be prepared once
 * per connection (connections are recycled every max_lifetime).
 */
function preferPrepared(sql: postgres.Sql): void {
  const driver = sql as unknown as Record<string, (...args: unknown[]) => unknown>
  const unsafe = driver.unsafe as (query: string, parameters?: unknown[], options?: object) => unknown
  driver.unsafe = (query, parameters, options) =>
    unsafe.call(sql, query as string, parameters as unknown[], { ...(options as object), prepare: true })
  // A transaction's (or savepoint's) statements go through its own sql.
  for (const method of ['begin', 'savepoint']) {
    const original = driver[method]
    if (typeof original !== 'function') continue
    driver[method] = (...args: unknown[]) => {
      const work = args.pop() as (tx: postgres.Sql) => unknown
      return original.call(sql, ...args, (tx: postgres.Sql) => {
        preferPrepared(tx)
        return work(tx)
      })
    }
  }
}

function openPostgres(url: string, poolMax: number, logger?: DrizzleLogger): Database {
  const client = postgres(url, postgresOptions(poolMax))
  preferPrepared(client)
  const pool = newPoolUse(poolMax)
  // drizzle sends statements with unsafe() and runs transactions with begin().
  countCalls(client, 'unsafe', pool, 'statements')
  countCalls(client, 'begin', pool, 'transactions')
  const db = drizzlePostgres({ client, relations, logger }) as unknown as Db
  const writers = [new OneTripConnection(client, pool, logger)]
  const writerOf = (lane: number): OneTripConnection => {
    while (writers.length <= lane) writers.push(new OneTripConnection(client, pool, logger))
    return writers[lane] as OneTripConnection
  }
  const pipeline = new PipelinedConnection(client, pool, logger)
  return {
    kind: 'postgres',
    db,
    pool,
    // Each writer keeps a connection while it is busy: with too small a
    // pool, nothing else could run.
    oneTrip: poolMax >= 2 ? writerOf(0).run : undefined,
    // Lane k's writer only while the writers, the gift pipeline and one more still fit in the pool.
    oneTripLane:
      poolMax >= 2
        ? (lane) => (lane === 0 || lane + 3 <= poolMax ? writerOf(lane).run : undefined)
        : undefined,
    pipelined: poolMax >= 3 ? pipeline.run : undefined,
    ping: () => pingDb(db),
    close: () => {
      for (const writer of writers) writer.close()
      pipeline.close()
      return client.end({ timeout: 5 })
    },
  }
}

const dialect = new PgDialect()

type Rows = Record<string, unknown>[]

/**
 * One use of a reserved connection (a trip, a pipelined transaction), made
 * to fail at once when the connection breaks. postgres.js settles only the
 * statements in flight when a reserved connection's socket breaks: those
 * sent on it afterwards, and a reservation asked for while the server was
 * away, can stay unanswered for good. So the first statement that fails for
 * want of the database fails the whole use, and so does a reservation, a
 * ROLLBACK or the whole use left unanswered past its bound.
 */
class Guard {
  /** The use failed because the connection, not a statement, did. */
  broken = false
  private fail!: (error: unknown) => void
  private readonly failed = new Promise<never>((_, reject) => {
    this.fail = (error) => {
      this.broken = true
      reject(error)
    }
  })
  private readonly timer: NodeJS.Timeout

  constructor(unansweredMs: number, what: string) {
    this.failed.catch(() => {})
    this.timer = setTimeout(() => this.fail(new Error(`database: ${what} went unanswered`)), unansweredMs)
  }

  /** `promise`, or the use's failure if that comes first (or `within` ms pass without an answer). */
  watch<T>(promise: Promise<T>, within?: { ms: number; what: string }): Promise<T> {
    promise.catch((error) => {
      if (isDatabaseUnavailable(error)) this.fail(error)
    })
    if (!within) return Promise.race([promise, this.failed])
    const timer = setTimeout(
      () => this.fail(new Error(`database: ${within.what} went unanswered`)),
      within.ms,
    )
    return Promise.race([promise, this.failed]).finally(() => clearTimeout(timer))
  }

  end(): void {
    clearTimeout(this.timer)
  }
}

/**
 * A connection reserved from the pool while its users keep coming, and given
 * back after IDLE_MS without any (reads need it more than an idle writer
 * does; not at once: under load the next use is a moment away, and
 * reserving again costs its pipelining). A broken one is forgotten, not
 * given back: the driver took it back when it closed, and releasing it
 * would put the dead connection among the pool's open ones, where the next
 * statement would fail on it.
 */
abstract class ReservedConnection<C extends { sql: postgres.ReservedSql }> {
  static readonly IDLE_MS = 1_000
  /** A pool that cannot lend a connection for this long is saturated or broken: the caller's usual way then. */
  static readonly RESERVE_MS = 5_000
  /** Past statement_timeout and lock_timeout together (postgresOptions): no live server leaves a use unanswered so long. */
  static readonly UNANSWERED_MS = 45_000
  static readonly ROLLBACK_MS = 2_000
  private connection: Promise<C> | undefined
  private idleTimer: NodeJS.Timeout | undefined
  /** Uses begun and not ended. */
  private inUse = 0

  constructor(
    protected readonly client: postgres.Sql,
    protected readonly pool: PoolUse,
    protected readonly logger?: DrizzleLogger,
  ) {}

  close(): void {
    clearTimeout(this.idleTimer)
    if (this.connection) this.drop(this.connection, false)
  }

  /** What a use needs besides the reserved connection itself. */
  protected abstract wrap(reserved: postgres.ReservedSql): C

  /**
   * Runs one use of the connection (reserving it first if needed) under a
   * guard. `cleanUp` runs when the use failed on a connection that did not
   * break (a statement's error, the caller's): it must leave the connection
   * out of any transaction, or throw.
   */
  protected async use<T>(
    what: string,
    work: (connection: C, guard: Guard) => Promise<T>,
    cleanUp?: (connection: C, guard: Guard) => Promise<void>,
  ): Promise<T> {
    this.inUse++
    clearTimeout(this.idleTimer)
    this.pool.transactions++
    this.pool.transactionsStarted++
    if (!this.connection) this.connection = this.client.reserve().then((reserved) => this.wrap(reserved))
    const reserving = this.connection
    const guard = new Guard(ReservedConnection.UNANSWERED_MS, what)
    let connection: C | undefined
    try {
      const reserved = await guard.watch(reserving, {
        ms: ReservedConnection.RESERVE_MS,
        what: 'the reservation of a connection',
      })
      // Given up by another use while this one waited for it: it goes back to the pool.
      if (this.connection !== reserving) throw new Error('database: the reservation was given up')
      connection = reserved
      return await guard.watch(work(connection, guard))
    } catch (error) {
      // Not reserved (the reservation failed or timed out): given back when it comes, unused.
      if (!connection) this.drop(reserving, false)
      else if (guard.broken || isDatabaseUnavailable(error)) this.drop(reserving, true)
      else if (cleanUp) await cleanUp(connection, guard).catch(() => this.drop(reserving, true))
      throw error
    } finally {
      guard.end()
      this.pool.transactions--
      if (--this.inUse === 0) {
        this.idleTimer = setTimeout(() => {
          if (this.inUse === 0) this.drop(reserving, false)
        }, ReservedConnection.IDLE_MS)
        this.idleTimer.unref()
      }
    }
  }

  private drop(reserving: Promise<C>, broken: boolean): void {
    if (this.connection !== reserving) return
    this.connection = undefined
    if (broken) return
    reserving.then(
      ({ sql }) => sql.release(),
      () => {},
    )
  }
}

/**
 * Sends `head` (raw text), the statements (prepared) and `tail` (raw text)
 * on the connection at once, in this order, without waiting for any answer;
 * resolves with each statement's rows, or throws the first failure. In a
 * transaction, a statement that fails aborts it, and a COMMIT behind it then
 * rolls it back.
 */
async function sendTogether(
  connection: postgres.ReservedSql,
  guard: Guard,
  statements: readonly Statement[],
  options: { head?: string; tail?: string; logger?: DrizzleLogger },
): Promise<Rows[]> {
  const raw = (text: string | undefined) => (text === undefined ? [] : [connection.unsafe(text).execute()])
  const head = raw(options.head)
  const queries = statements.map((statement) => {
    const query = is(statement, SQL) ? dialect.sqlToQuery(statement) : statement
    options.logger?.logQuery(query.sql, query.params)
    return connection
      .unsafe(query.sql, query.params as postgres.ParameterOrJSON<never>[], { prepare: true })
      .execute()
  })
  const sent = [...head, ...queries, ...raw(options.tail)]
  for (const query of sent) guard.watch(query).catch(() => {})
  const settled = await guard.watch(Promise.allSettled(sent))
  const failed = settled.find((r) => r.status === 'rejected')
  if (failed) throw failed.reason
  return settled
    .slice(head.length, head.length + queries.length)
    .map((r) => [...(r as PromiseFulfilledResult<postgres.RowList<Rows>>).value])
}

/**
 * BEGIN, with generic plans for this transaction only (OneTripOptions.genericPlans,
 * Database.pipelined). A generic plan is made once per connection and kept
 * until an ANALYZE of its tables: one made while a table was small (a new
 * database, the first minute of a benchmark) scanned it whole, and went on
 * scanning it as it grew until autovacuum analyzed it (seen in bench:api:
 * the events' statement read all of ledger_transactions per batch, and
 * PostgreSQL's CPU per gift doubled). With sequential scans off, these
 * statements, whose every lookup has an index, are planned on their indexes
 * whatever the tables' sizes were then (the guard triggers do the same).
 */
const GENERIC_PLANS_BEGIN =
  'begin; set local plan_cache_mode = force_generic_plan; set local enable_seqscan = off'

/**
 * The one-trip transactions' connection: a trip sent while earlier ones are
 * running is pipelined behind them on it, so PostgreSQL runs them back to
 * back in the order they were sent. (The ledger plans a batch on what the
 * batch before it will leave: in that order, its plans hold. On separate
 * connections, two sent together could take the locks in either order.)
 */
class OneTripConnection extends ReservedConnection<{ sql: postgres.ReservedSql }> {
  run: OneTrip = (statements, options) =>
    // A failed statement needs no clean-up: the COMMIT sent behind it rolled the transaction back.
    this.use('a one-trip transaction', (connection, guard) =>
      sendTogether(connection.sql, guard, statements, {
        head: options?.genericPlans ? GENERIC_PLANS_BEGIN : 'begin',
        tail: 'commit',
        logger: this.logger,
      }),
    )

  protected wrap(reserved: postgres.ReservedSql) {
    return { sql: reserved }
  }
}

/** Pipelined transactions, one at a time, on a connection reserved while they come (Database.pipelined). */
class PipelinedConnection extends ReservedConnection<{ sql: postgres.ReservedSql; db: Db }> {
  /** The transaction running now; the next one starts once it has ended. */
  private last: Promise<unknown> = Promise.resolve()

  run: Pipelined = (work) => {
    const turn = this.last.then(() => this.transaction(work))
    this.last = turn.catch(() => {})
    return turn
  }

  protected wrap(reserved: postgres.ReservedSql) {
    preferPrepared(reserved)
    // drizzle reads the driver's type options from its client; a reserved
    // connection shares its pool's (which drizzle set up already).
    Object.assign(reserved, { options: this.client.options })
    return {
      sql: reserved,
      db: drizzlePostgres({ client: reserved, relations, logger: this.logger }) as unknown as Db,
    }
  }

  private transaction<T>(work: (tx: PipelinedTx) => Promise<T>): Promise<T> {
    let committing = false
    // A live server answers a ROLLBACK at once: one left unanswered means a broken connection.
    const rollback = (sql: postgres.ReservedSql, guard: Guard) =>
      guard
        .watch(sql.unsafe('rollback').execute(), { ms: ReservedConnection.ROLLBACK_MS, what: 'a rollback' })
        .then(() => undefined)
    return this.use(
      'a pipelined transaction',
      async (connection, guard) => {
        // Not awaited: BEGIN leaves with the first statements work issues.
        // Generic plans for this transaction (see Database.pipelined): its
        // statements and the foreign-key checks of its inserts are planned
        // once per connection, not on every execution.
        guard.watch(connection.sql.unsafe(GENERIC_PLANS_BEGIN).execute()).catch(() => {})
        const result = await work({
          db: connection.db,
          send: (statements, options) => {
            if (options?.commit) committing = true
            return sendTogether(connection.sql, guard, statements, {
              tail: options?.commit ? 'commit' : undefined,
              logger: this.logger,
            })
          },
        })
        if (!committing) await rollback(connection.sql, guard)
        return result
      },
      async (connection, guard) => {
        if (!committing) await rollback(connection.sql, guard)
      },
    )
  }
}

async function openPglite(dir: string, logger?: DrizzleLogger): Promise<Database> {
  if (!dir.startsWith('memory://')) mkdirSync(dir, { recursive: true })
  const client = await PGlite.create(dir)
  const pool = newPoolUse(1)
  countCalls(client, 'query', pool, 'statements')
  countCalls(client, 'transaction', pool, 'transactions')
  const db = drizzlePglite({ client, relations, logger }) as unknown as Db
  return {
    kind: 'pglite',
    db,
    pool,
    ping: () => pingDb(db),
    close: () => client.close(),
  }
}

async function pingDb(db: Db): Promise<boolean> {
  try {
    await db.execute(sql`select 1`)
    return true
  } catch {
    return false
  }
}

// Errors that mean "the database cannot be reached right now" (not "this
// query is wrong"): the driver's connection errors, the network's, and
// PostgreSQL's own shutdown and start-up refusals. A request that meets one is
// refused as unavailable (HTTP 503), not as an internal error.
const UNAVAILABLE_CODES = new Set([
  // postgres.js
  'CONNECTION_CLOSED',
  'CONNECTION_DESTROYED',
  'CONNECTION_ENDED',
  'CONNECT_TIMEOUT',
  // the network
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  // PostgreSQL: admin_shutdown, crash_shutdown, cannot_connect_now (starting up or recovering)
  '57P01',
  '57P02',
  '57P03',
])

/** True when `error`, or an error it wraps (cause, originalError), says the database cannot be reached. */
export function isDatabaseUnavailable(error: unknown): boolean {
  let current = error
  for (let depth = 0; depth < 8 && typeof current === 'object' && current !== null; depth++) {
    const { code, cause, originalError } = current as {
      code?: unknown
      cause?: unknown
      originalError?: unknown
    }
    // SQLSTATE class 08: connection exceptions.
    if (typeof code === 'string' && (UNAVAILABLE_CODES.has(code) || /^08[0-9A-Z]{3}$/.test(code))) return true
    current = cause ?? originalError
  }
  return false
}
