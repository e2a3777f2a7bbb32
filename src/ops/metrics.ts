import { sql } from 'drizzle-orm'
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client'
import type { Database } from '../db/client.js'
import { rowsOf } from '../db/rows.js'
import type { GiftEvent } from '../gifts/service.js'
import { COIN, type PostedTransaction } from '../ledger/index.js'
import type { ProviderName } from '../payments/types.js'

// The numbers of GET /metrics (Prometheus text format), one registry per
// server. docs/OPERATIONS.md says what each series means and how to read it.
//
// Labels stay bounded whatever clients send: HTTP routes and methods come
// from fixed lists, ledger kinds and units from the chart, and operation
// names from clients are kept only while fewer than OPERATION_NAMES_MAX
// distinct ones have been seen (then "other").

/** Distinct GraphQL operation names labelled; later new names count as "other". */
export const OPERATION_NAMES_MAX = 200
/** Database readings (webhook inbox) are reused for this long: several scrapers cost one query. */
export const DB_READING_MAX_AGE_MS = 5_000

const OPERATION_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/
const HTTP_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'])
const PROVIDERS: readonly ProviderName[] = ['stripe', 'paypal']
const INBOX_STATUSES = ['pending', 'parked'] as const
const LATENCY_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

export type OperationType = 'query' | 'mutation' | 'subscription'

/** Live connections right now, read at scrape (the WebSocket server, SSE responses). */
export interface LiveCounts {
  websocketConnections: number
  websocketSubscriptions: number
  sseSubscriptions: number
}

export interface MetricsSources {
  database: Database
  live: () => LiveCounts
  /** The ledger's batches by how their plans fared (Ledger.expectations). */
  ledgerExpectations?: () => Readonly<{ held: number; stale: number }>
  /** Gift batches committed by way (GiftService.batches). */
  giftBatches?: () => Readonly<{ pipelined: number; usual: number }>
}

export class Metrics {
  readonly registry = new Registry()
  private readonly operationNames = new Set<string>()

  private readonly httpRequests = new Counter({
    name: 'giftledger_http_requests_total',
    help: 'HTTP requests answered, by route, method and status code.',
    labelNames: ['route', 'method', 'status'] as const,
    registers: [this.registry],
  })
  private readonly httpDuration = new Histogram({
    name: 'giftledger_http_request_duration_seconds',
    help: 'Time from a request’s arrival to the end of its response, by route (SSE streams excluded).',
    labelNames: ['route'] as const,
    buckets: LATENCY_BUCKETS_S,
    registers: [this.registry],
  })
  private readonly operations = new Counter({
    name: 'giftledger_graphql_operations_total',
    help: 'GraphQL operations, by operation name, type and outcome (error: the response carried GraphQL errors; user errors in a payload are not errors).',
    labelNames: ['operation', 'type', 'outcome'] as const,
    registers: [this.registry],
  })
  private readonly operationDuration = new Histogram({
    name: 'giftledger_graphql_operation_duration_seconds',
    help: 'Time to answer a GraphQL query or mutation over HTTP, by operation name and type.',
    labelNames: ['operation', 'type'] as const,
    buckets: LATENCY_BUCKETS_S,
    registers: [this.registry],
  })
  private readonly gifts = new Counter({
    name: 'giftledger_gifts_total',
    help: 'Gifts committed (one per sendGift; replays not counted). rate() of it is gifts per second.',
    registers: [this.registry],
  })
  private readonly giftItems = new Counter({
    name: 'giftledger_gift_items_total',
    help: 'Gift items committed (the sum of the quantities of the gifts).',
    registers: [this.registry],
  })
  private readonly ledgerTransactions = new Counter({
    name: 'giftledger_ledger_transactions_total',
    help: 'Ledger transactions committed by this instance, by kind.',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  })
  private readonly coinsMoved = new Counter({
    name: 'giftledger_coins_moved_total',
    help: 'Coins moved by committed ledger transactions (the sum of their COIN debits), by transaction kind.',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  })
  private readonly moneyMoved = new Counter({
    name: 'giftledger_money_moved_minor_total',
    help: 'Money moved by committed ledger transactions (the sum of their debits), in minor units, by kind and currency.',
    labelNames: ['kind', 'currency'] as const,
    registers: [this.registry],
  })

  constructor(sources: MetricsSources) {
    collectDefaultMetrics({ register: this.registry })
    this.registerLive(sources.live)
    this.registerPool(sources.database)
    this.registerInbox(sources.database)
    if (sources.ledgerExpectations)
      this.registerCounts(
        'giftledger_ledger_batches_total',
        "Ledger batches planned on this instance's expectations of their accounts: written as planned (held) or found stale and planned again under the locks (stale). Stale batches climbing: another writer moves the same accounts.",
        'expectations',
        sources.ledgerExpectations,
      )
    if (sources.giftBatches)
      this.registerCounts(
        'giftledger_gift_batches_total',
        'Gift batches committed: as a pipelined transaction of two round trips (pipelined), or the usual way (usual: on PGlite, when the ledger found its expectations stale and the batch ran again, for accounts another writer just moved, or after a broken connection).',
        'way',
        sources.giftBatches,
      )
  }

  /** The operation label of a client's operation name: bounded in number and shape. */
  operationLabel(name: string | undefined | null): string {
    if (!name) return 'anonymous'
    if (this.operationNames.has(name)) return name
    if (!OPERATION_NAME.test(name) || this.operationNames.size >= OPERATION_NAMES_MAX) return 'other'
    this.operationNames.add(name)
    return name
  }

  /** One HTTP request answered; `durationS` undefined for a stream (SSE), which has no latency. */
  httpRequest(route: string, method: string | undefined, status: number, durationS?: number): void {
    const m = method && HTTP_METHODS.has(method) ? method : 'other'
    this.httpRequests.inc({ route, method: m, status: String(status) })
    if (durationS !== undefined) this.httpDuration.observe({ route }, durationS)
  }

  /** One GraphQL operation done (a subscription: started); type "unknown" when it failed before execution. */
  operation(
    name: string | undefined | null,
    type: OperationType | 'unknown',
    failed: boolean,
    durationS?: number,
  ): void {
    const operation = this.operationLabel(name)
    this.operations.inc({ operation, type, outcome: failed ? 'error' : 'ok' })
    if (durationS !== undefined && type !== 'subscription') {
      this.operationDuration.observe({ operation, type }, durationS)
    }
  }

  /** GiftService.onCommitted: committed gifts (never replays). */
  giftsCommitted(events: readonly Pick<GiftEvent, 'quantity'>[]): void {
    if (events.length === 0) return
    this.gifts.inc(events.length)
    let items = 0
    for (const event of events) items += event.quantity
    this.giftItems.inc(items)
  }

  /** Ledger.onCommitted: each transaction's debits per unit (debits equal credits in every unit). */
  ledgerCommitted(transactions: readonly PostedTransaction[]): void {
    for (const transaction of transactions) {
      this.ledgerTransactions.inc({ kind: transaction.kind })
      const debits = new Map<string, bigint>()
      for (const entry of transaction.entries) {
        if (entry.direction !== 'debit') continue
        debits.set(entry.unit, (debits.get(entry.unit) ?? 0n) + entry.amount)
      }
      for (const [unit, amount] of debits) {
        // Counters are doubles: exact up to 2^53 per increment, far above any posting.
        if (unit === COIN) this.coinsMoved.inc({ kind: transaction.kind }, Number(amount))
        else this.moneyMoved.inc({ kind: transaction.kind, currency: unit }, Number(amount))
      }
    }
  }

  /** The text a Prometheus scrape gets. */
  render(): Promise<string> {
    return this.registry.metrics()
  }

  get contentType(): string {
    return this.registry.contentType
  }

  private registerLive(live: () => LiveCounts): void {
    new Gauge({
      name: 'giftledger_websocket_connections',
      help: 'WebSocket connections open on this instance (graphql-transport-ws).',
      registers: [this.registry],
      collect() {
        this.set(live().websocketConnections)
      },
    })
    new Gauge({
      name: 'giftledger_live_subscriptions',
      help: 'GraphQL subscriptions open on this instance, by transport.',
      labelNames: ['transport'] as const,
      registers: [this.registry],
      collect() {
        const counts = live()
        this.set({ transport: 'websocket' }, counts.websocketSubscriptions)
        this.set({ transport: 'sse' }, counts.sseSubscriptions)
      },
    })
  }

  /** A counter read at scrape from counts kept elsewhere: one series per key of `read()`, under `label`. */
  private registerCounts(
    name: string,
    help: string,
    label: string,
    read: () => Readonly<Record<string, number>>,
  ): void {
    new Counter({
      name,
      help,
      labelNames: [label],
      registers: [this.registry],
      collect() {
        const counts = read()
        this.reset()
        for (const [value, count] of Object.entries(counts)) this.inc({ [label]: value }, count)
      },
    })
  }

  private registerPool(database: Database): void {
    const { pool } = database
    new Gauge({
      name: 'giftledger_db_pool_max',
      help: 'Database connections this instance may open (DATABASE_POOL_MAX; 1 on PGlite).',
      registers: [this.registry],
      collect() {
        this.set(pool.max)
      },
    })
    new Gauge({
      name: 'giftledger_db_pool_in_use',
      help: 'Database connections in use now: transactions plus statements outside transactions, at most the pool’s max.',
      registers: [this.registry],
      collect() {
        this.set(Math.min(pool.max, pool.transactions + pool.statements))
      },
    })
    new Gauge({
      name: 'giftledger_db_pool_waiting',
      help: 'Transactions and statements waiting for a free database connection now.',
      registers: [this.registry],
      collect() {
        this.set(Math.max(0, pool.transactions + pool.statements - pool.max))
      },
    })
    new Counter({
      name: 'giftledger_db_transactions_total',
      help: 'Database transactions begun by this instance.',
      registers: [this.registry],
      collect() {
        this.reset()
        this.inc(pool.transactionsStarted)
      },
    })
    new Counter({
      name: 'giftledger_db_statements_total',
      help: 'Database statements sent outside transactions by this instance.',
      registers: [this.registry],
      collect() {
        this.reset()
        this.inc(pool.statementsStarted)
      },
    })
  }

  /**
   * The webhook inbox, read from the database at scrape (shared by every
   * instance: aggregate with max, not sum). Two index-only-sized reads: the
   * pending events (partial index webhook_events_due_idx) and the parked
   * ones (webhook_events_parked_idx).
   */
  private registerInbox(database: Database): void {
    let reading: Promise<InboxReading[]> | undefined
    let readAtMs = 0
    const read = (): Promise<InboxReading[]> => {
      const nowMs = Date.now()
      if (!reading || nowMs - readAtMs > DB_READING_MAX_AGE_MS) {
        readAtMs = nowMs
        reading = readInbox(database).catch(() => {
          readAtMs = 0 // a failed reading is not kept
          return []
        })
      }
      return reading
    }
    new Gauge({
      name: 'giftledger_webhook_inbox_events',
      help: 'Verified provider webhook events waiting in the inbox, by provider and status (pending: to process; parked: failed too often, needs a person).',
      labelNames: ['provider', 'status'] as const,
      registers: [this.registry],
      async collect() {
        setInboxSeries(this, await read(), (row) => row.events)
      },
    })
    new Gauge({
      name: 'giftledger_webhook_inbox_oldest_age_seconds',
      help: 'Age of the oldest event waiting in the inbox, by provider and status (0 when none waits).',
      labelNames: ['provider', 'status'] as const,
      registers: [this.registry],
      async collect() {
        setInboxSeries(this, await read(), (row) => row.ageS)
      },
    })
  }
}

interface InboxReading {
  provider: string
  status: 'pending' | 'parked'
  events: number
  ageS: number
}

/** Every provider and status has a series (0 when nothing waits), so that alerts need no absent(). */
function setInboxSeries(
  gauge: Gauge<'provider' | 'status'>,
  rows: readonly InboxReading[],
  value: (row: InboxReading) => number,
): void {
  gauge.reset()
  for (const provider of PROVIDERS) for (const status of INBOX_STATUSES) gauge.set({ provider, status }, 0)
  for (const row of rows) gauge.set({ provider: row.provider, status: row.status }, value(row))
}

async function readInbox(database: Database): Promise<InboxReading[]> {
  // Each arm is answered from its partial index (status fixed): no scan of processed events.
  const rows = rowsOf<{ provider: string; status: 'pending' | 'parked'; events: number; age_s: number }>(
    await database.db.execute(sql`
      select provider::text, 'pending' as status, count(*)::int as events,
             coalesce(extract(epoch from now() - min(received_at)), 0)::float8 as age_s
        from webhook_events where status = 'pending' group by provider
      union all
      select provider::text, 'parked' as status, count(*)::int as events,
             coalesce(extract(epoch from now() - min(received_at)), 0)::float8 as age_s
        from webhook_events where status = 'parked' group by provider`),
  )
  return rows.map((row) => ({
    provider: row.provider,
    status: row.status,
    events: Number(row.events),
    ageS: Math.max(0, Number(row.age_s)),
  }))
}
