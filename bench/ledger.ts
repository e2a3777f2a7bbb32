import { execFileSync } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { sql } from 'drizzle-orm'
import postgres from 'postgres'
import { LEDGER_LANES_DEFAULT } from '../src/config.js'
import { type Database, type DatabaseConfig, openDatabase } from '../src/db/client.js'
import { migrateDatabase } from '../src/db/migrate.js'
import { rowsOf } from '../src/db/rows.js'
import {
  type AccountSpec,
  creatorEarnings,
  defaultConcurrency,
  defaultLedgerOptions,
  isShardedAccount,
  Ledger,
  type LedgerOptions,
  type PostingRequest,
  platform,
  userWallet,
} from '../src/ledger/index.js'
import { type Interference, InterferenceMonitor } from './support/interference.js'
import { type PgbenchResult, runPgbenchHotRow } from './support/pgbench.js'
import { createScratchDatabase, type MachineFacts, machineFacts } from './support/scratch.js'
import { cpuByCommand, cpuDelta } from './support/server-process.js'
import { CpuMeter, fmt, median, summarize } from './support/stats.js'

// The ledger under gift-shaped load on PostgreSQL, against pgbench's hot-row
// figure measured in the same run. Closed loop: each client awaits its
// post() and posts again, so throughput and latency are of the engine as a
// caller sees it (prepare, queue, batch, commit), not of the database alone.
//
//   npm run bench:ledger -- [--seconds 15] [--clients 64] [--pgbench-clients 16]
//     [--batch-size-max N] [--concurrency N] [--lanes N] [--pool-max 10] [--shapes many,hot,platform]
//     [--warmup-seconds 2] [--paired-rounds N] [--json]
//   diagnostics: [--analyze] [--jit off] [--auto-explain-ms N] [--what-if-sql FILE]

const TARGET_RATIO = 5
const TARGET_P99_MS = 50
/** Coins each wallet gets before the run: 10^10 gifts of 100 coins, far beyond any run. */
const FUNDING_COINS = 1_000_000_000_000n
const GIFT_COINS = 100n
const CREATOR_SHARE_COINS = 50n
const TIMELINE_SECONDS = 5

interface Options {
  seconds: number
  warmupSeconds: number
  clients: number
  pgbenchClients: number
  senders: number
  creators: number
  poolMax: number
  ledger: LedgerOptions
  shapes: ShapeName[]
  /** 'off' turns PostgreSQL's JIT off for the benchmark database (a what-if; the server's setting otherwise). */
  jit: 'server' | 'off'
  /** Plans of statements slower than this go to the server's log (auto_explain; needs a superuser). */
  autoExplainMs: number | undefined
  /** ANALYZE the ledger's tables before each shape, as autovacuum might (this server runs none). */
  analyze: boolean
  /** A SQL file run on the benchmark database after the migrations: a what-if (a candidate index or trigger). */
  whatIfSql: string | undefined
  /**
   * After the shapes: this many rounds of pgbench's hot row then the hot
   * shape, back to back, each round's ratio from its own pair. On a machine
   * whose speed drifts over minutes, a pair measured seconds apart is a
   * steadier ratio than one baseline measured before every shape.
   */
  pairedRounds: number
  json: boolean
}

/** One round of --paired-rounds: pgbench's hot row, then the hot shape right after it. */
interface PairedRound {
  pgbenchTps: number
  hot: ShapeResult
}

const SHAPE_NAMES = ['many', 'hot', 'platform'] as const
type ShapeName = (typeof SHAPE_NAMES)[number]

interface Shape {
  name: ShapeName
  label: string
  request(key: string): PostingRequest
}

interface Population {
  senders: AccountSpec[]
  creators: AccountSpec[]
}

interface ShapeResult {
  name: ShapeName
  label: string
  measuredSeconds: number
  postsPerSecond: number
  p50Ms: number
  p99Ms: number
  maxMs: number
  meanMs: number
  /** Successful post() calls, warm-up and drain included (checked against the database). */
  postedTotal: number
  errors: Record<string, number>
  /** Postings per database transaction, from the rows this shape wrote. */
  postingsPerBatch: number
  /** Batches written on the engine's expectations in one statement, and planned again under the locks (warm-up included). */
  expectationsHeld: number
  expectationsStale: number
  nodePercentOfCore: number
  machinePercent: number
  /** CPU of all PostgreSQL processes (backends, WAL writer, …) per successful post, in µs: steadier than throughput on a noisy machine. */
  postgresUsPerPost: number
  interference: Interference
  /** Posts per second in each TIMELINE_SECONDS of the measured window: drift shows here. */
  timeline: number[]
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      seconds: { type: 'string', default: '15' },
      'warmup-seconds': { type: 'string', default: '2' },
      clients: { type: 'string', default: '64' },
      'pgbench-clients': { type: 'string', default: '16' },
      senders: { type: 'string', default: '1000' },
      creators: { type: 'string', default: '100' },
      'pool-max': { type: 'string', default: '10' },
      'batch-size-max': { type: 'string', default: String(defaultLedgerOptions.batchSizeMax) },
      concurrency: { type: 'string' },
      lanes: { type: 'string', default: String(LEDGER_LANES_DEFAULT) },
      'queue-length-max': { type: 'string', default: String(defaultLedgerOptions.queueLengthMax) },
      shapes: { type: 'string', default: SHAPE_NAMES.join(',') },
      jit: { type: 'string', default: 'server' },
      'auto-explain-ms': { type: 'string' },
      analyze: { type: 'boolean', default: false },
      'what-if-sql': { type: 'string' },
      'paired-rounds': { type: 'string', default: '0' },
      json: { type: 'boolean', default: false },
    },
    strict: true,
  })
  const int = (name: keyof typeof values, min: number): number => {
    const n = Number(values[name])
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be a whole number >= ${min}`)
    return n
  }
  const shapes = String(values.shapes)
    .split(',')
    .map((s) => s.trim())
  if (values.jit !== 'server' && values.jit !== 'off') throw new Error('--jit must be server or off')
  for (const s of shapes) {
    if (!(SHAPE_NAMES as readonly string[]).includes(s))
      throw new Error(`--shapes: unknown shape ${s} (${SHAPE_NAMES.join(', ')})`)
  }
  return {
    seconds: int('seconds', 1),
    warmupSeconds: int('warmup-seconds', 0),
    clients: int('clients', 1),
    pgbenchClients: int('pgbench-clients', 1),
    senders: int('senders', 1),
    creators: int('creators', 1),
    poolMax: int('pool-max', 1),
    ledger: {
      batchSizeMax: int('batch-size-max', 1),
      concurrency: values.concurrency === undefined ? undefined : int('concurrency', 1),
      queueLengthMax: int('queue-length-max', 1),
      contendedAccountMs: defaultLedgerOptions.contendedAccountMs,
      lanes: int('lanes', 1),
      sharded: isShardedAccount,
    },
    shapes: shapes as ShapeName[],
    jit: values.jit === 'off' ? 'off' : 'server',
    autoExplainMs: values['auto-explain-ms'] === undefined ? undefined : int('auto-explain-ms', 0),
    analyze: values.analyze === true,
    whatIfSql: values['what-if-sql'],
    pairedRounds: int('paired-rounds', 0),
    json: values.json === true,
  }
}

const pick = <T>(items: readonly T[]): T => items[Math.floor(Math.random() * items.length)] as T

function gift(key: string, sender: AccountSpec, creator: AccountSpec): PostingRequest {
  return {
    idempotencyKey: key,
    kind: 'gift',
    entries: [
      { account: sender, direction: 'debit', amount: GIFT_COINS },
      { account: creator, direction: 'credit', amount: CREATOR_SHARE_COINS },
      { account: platform.commission, direction: 'credit', amount: GIFT_COINS - CREATOR_SHARE_COINS },
    ],
  }
}

function shapesFor(population: Population): Record<ShapeName, Shape> {
  const hotCreator = population.creators[0] as AccountSpec
  return {
    many: {
      name: 'many',
      label: `(a) many creators: gift from 1 of ${population.senders.length} wallets to 1 of ${population.creators.length} creators`,
      request: (key) => gift(key, pick(population.senders), pick(population.creators)),
    },
    hot: {
      name: 'hot',
      label: '(b) one hot creator: every gift to the same creator',
      request: (key) => gift(key, pick(population.senders), hotCreator),
    },
    platform: {
      name: 'platform',
      label: '(c) platform account only: a random wallet and platform:commission, nothing else',
      request: (key) => ({
        idempotencyKey: key,
        kind: 'fee',
        entries: [
          { account: pick(population.senders), direction: 'debit', amount: CREATOR_SHARE_COINS },
          { account: platform.commission, direction: 'credit', amount: CREATOR_SHARE_COINS },
        ],
      }),
    },
  }
}

/** Every wallet recharged once (debit coins issued, credit the wallet), every creator account created. */
async function fund(ledger: Ledger, database: Database, population: Population): Promise<number> {
  await Promise.all(
    population.senders.map((wallet, i) =>
      ledger.post({
        idempotencyKey: `funding:${i}`,
        kind: 'recharge',
        entries: [
          { account: platform.coinsIssued, direction: 'debit', amount: FUNDING_COINS },
          { account: wallet, direction: 'credit', amount: FUNDING_COINS },
        ],
      }),
    ),
  )
  // First use of an account creates it; do that here, not inside a measured shape.
  await ledger.accounts.resolve(database.db, population.creators)
  return population.senders.length
}

async function lastTransactionId(database: Database): Promise<bigint> {
  const [row] = rowsOf<{ id: string | null }>(
    await database.db.execute(sql`select max(id)::text as id from ledger_transactions`),
  )
  return BigInt(row?.id ?? '0')
}

/** Postings per database transaction among the transactions with ids in (after, upto]. */
async function postingsPerBatch(database: Database, after: bigint, upto: bigint): Promise<number> {
  const [row] = rowsOf<{ postings: string; batches: string }>(
    await database.db.execute(sql`
      select count(*)::text as postings, count(distinct xact_id)::text as batches
        from ledger_transactions where id > ${after} and id <= ${upto}`),
  )
  const batches = Number(row?.batches ?? 0)
  return batches === 0 ? Number.NaN : Number(row?.postings ?? 0) / batches
}

async function runShape(
  ledger: Ledger,
  database: Database,
  shape: Shape,
  options: Options,
  monitor: InterferenceMonitor,
): Promise<ShapeResult> {
  // Fresh statistics also make every session re-plan its cached statements (the guard triggers' among them).
  if (options.analyze)
    await database.db.execute(sql`analyze ledger_accounts, ledger_transactions, ledger_entries`)
  const before = await lastTransactionId(database)
  const expectationsBefore = { ...ledger.expectations }
  const latenciesMs: number[] = []
  const completedPerSlot: number[] = []
  let startedAt = 0
  const errors: Record<string, number> = {}
  let measuring = false
  let stopped = false
  let postedTotal = 0

  // Keys unique to this run of the shape: a shape runs again in --paired-rounds.
  const run = randomUUID().slice(0, 8)
  const client = async (clientIndex: number) => {
    for (let i = 0; !stopped; i++) {
      const request = shape.request(`${shape.name}:${run}:${clientIndex}:${i}`)
      const submittedAt = performance.now()
      try {
        await ledger.post(request)
        const latencyMs = performance.now() - submittedAt
        postedTotal++
        if (measuring) {
          latenciesMs.push(latencyMs)
          const slot = Math.floor((performance.now() - startedAt) / 1000 / TIMELINE_SECONDS)
          completedPerSlot[slot] = (completedPerSlot[slot] ?? 0) + 1
        }
      } catch (error) {
        const code = (error as { code?: unknown }).code
        const key = typeof code === 'string' ? code : (error as Error).name
        errors[key] = (errors[key] ?? 0) + 1
        // A refusal comes back at once: do not spin on it.
        await new Promise((resolve) => setTimeout(resolve, 10))
      }
    }
  }

  const clients = Array.from({ length: options.clients }, (_, i) => client(i))
  await new Promise((resolve) => setTimeout(resolve, options.warmupSeconds * 1000))
  const cpu = new CpuMeter()
  const postgresCpuBefore = cpuByCommand('postgres')
  const mark = monitor.mark()
  startedAt = performance.now()
  measuring = true
  await new Promise((resolve) => setTimeout(resolve, options.seconds * 1000))
  measuring = false
  const measuredSeconds = (performance.now() - startedAt) / 1000
  const usage = cpu.read()
  const postgresCpuSeconds = cpuDelta(postgresCpuBefore, cpuByCommand('postgres'))
  const interference = monitor.since(mark)
  stopped = true
  await Promise.all(clients)

  const after = await lastTransactionId(database)
  return {
    name: shape.name,
    label: shape.label,
    measuredSeconds,
    postsPerSecond: latenciesMs.length / measuredSeconds,
    ...summarize(latenciesMs),
    postedTotal,
    errors,
    postingsPerBatch: await postingsPerBatch(database, before, after),
    expectationsHeld: ledger.expectations.held - expectationsBefore.held,
    expectationsStale: ledger.expectations.stale - expectationsBefore.stale,
    ...usage,
    postgresUsPerPost: (postgresCpuSeconds / Math.max(latenciesMs.length, 1)) * 1e6,
    interference,
    timeline: Array.from(
      { length: Math.ceil(options.seconds / TIMELINE_SECONDS) },
      (_, i) =>
        (completedPerSlot[i] ?? 0) / Math.min(TIMELINE_SECONDS, options.seconds - i * TIMELINE_SECONDS),
    ),
  }
}

interface Checks {
  integrityOk: boolean
  integrityProblems: string[]
  transactionsInDatabase: number
  successfulPosts: number
}

async function runLedger(
  options: Options,
  monitor: InterferenceMonitor,
): Promise<{ results: ShapeResult[]; rounds: PairedRound[]; checks: Checks; databaseName: string }> {
  const scratch = await createScratchDatabase('gl_bench')
  monitor.own(scratch.name)
  const config: DatabaseConfig = { kind: 'postgres', url: scratch.url, poolMax: options.poolMax }
  let database: Database | undefined
  try {
    if (options.jit === 'off') await scratch.set('jit', 'off')
    if (options.autoExplainMs !== undefined) {
      await scratch.set('session_preload_libraries', 'auto_explain')
      await scratch.set('auto_explain.log_min_duration', `${options.autoExplainMs}ms`)
      await scratch.set('auto_explain.log_analyze', 'on')
      await scratch.set('auto_explain.log_timing', 'off')
      await scratch.set('auto_explain.log_triggers', 'on')
      await scratch.set('auto_explain.log_nested_statements', 'on')
    }
    database = await openDatabase(config)
    await migrateDatabase(config, database)
    if (options.whatIfSql !== undefined) {
      const client = postgres(scratch.url, { max: 1, onnotice: () => {} })
      try {
        await client.unsafe(await readFile(options.whatIfSql, 'utf8')) // several statements: simple protocol
      } finally {
        await client.end({ timeout: 5 })
      }
      // Sessions that planned before the change would keep their plans.
      await database.close()
      database = await openDatabase(config)
    }
    const ledger = new Ledger(database, options.ledger)
    const population: Population = {
      senders: Array.from({ length: options.senders }, () => userWallet(randomUUID())),
      creators: Array.from({ length: options.creators }, () => creatorEarnings(randomUUID())),
    }
    let successfulPosts = await fund(ledger, database, population)
    const shapes = shapesFor(population)
    const results: ShapeResult[] = []
    for (const name of options.shapes) {
      const result = await runShape(ledger, database, shapes[name], options, monitor)
      successfulPosts += result.postedTotal
      results.push(result)
      log(options, `  ${name}: ${fmt(result.postsPerSecond)} posts/s, p99 ${fmt(result.p99Ms, 1)} ms`)
    }
    const rounds: PairedRound[] = []
    for (let round = 1; round <= options.pairedRounds; round++) {
      const pgbench = await runPgbenchHotRow({
        clients: options.pgbenchClients,
        seconds: options.seconds,
        onDatabase: (name) => monitor.own(name),
      })
      const hot = await runShape(ledger, database, shapes.hot, options, monitor)
      successfulPosts += hot.postedTotal
      rounds.push({ pgbenchTps: pgbench.tps, hot })
      log(
        options,
        `  round ${round}: pgbench ${fmt(pgbench.tps)} TPS, hot ${fmt(hot.postsPerSecond)} posts/s (${fmt(hot.postsPerSecond / pgbench.tps, 2)}×), p99 ${fmt(hot.p99Ms, 1)} ms`,
      )
    }
    const integrity = await ledger.checkIntegrity()
    const [row] = rowsOf<{ n: string }>(
      await database.db.execute(sql`select count(*)::text as n from ledger_transactions`),
    )
    return {
      results,
      rounds,
      databaseName: scratch.name,
      checks: {
        integrityOk: integrity.ok,
        integrityProblems: integrity.problems.slice(0, 10).map((p) => `${p.kind}: ${p.message}`),
        transactionsInDatabase: Number(row?.n ?? Number.NaN),
        successfulPosts,
      },
    }
  } finally {
    await database?.close()
    await scratch.drop()
  }
}

function log(options: Options, line: string): void {
  // With --json, stdout carries only the JSON document.
  if (options.json) console.error(line)
  else console.log(line)
}

/** Above these, something else ran on the machine while a figure was measured. */
const QUIET_OTHER_CPU_PERCENT_MAX = 5
const QUIET_OTHER_SESSIONS_MAX = 0.1

const quiet = (i: Interference) =>
  !(i.otherCpuPercent > QUIET_OTHER_CPU_PERCENT_MAX || i.otherActiveSessions > QUIET_OTHER_SESSIONS_MAX)

const others = (i: Interference) => `${fmt(i.otherCpuPercent)}% / ${fmt(i.otherActiveSessions, 1)}`

function report(
  options: Options,
  machine: MachineFacts,
  baseline: PgbenchResult & { interference: Interference },
  run: { results: ShapeResult[]; rounds: PairedRound[]; checks: Checks },
  engine: string,
): void {
  const lines: string[] = []
  lines.push('')
  lines.push(
    `machine: ${machine.cpus} CPUs, ${machine.memoryGiB} GiB, PostgreSQL ${machine.postgresVersion}, fsync ${machine.fsync}, synchronous_commit ${machine.synchronousCommit}, shared_buffers ${machine.sharedBuffers}, Node ${machine.node}`,
  )
  lines.push(`date: ${machine.dateUtc}, engine: ${engine}`)
  lines.push(
    `ledger: ${options.clients} closed-loop clients, ${options.seconds} s per shape after ${options.warmupSeconds} s warm-up, batchSizeMax ${options.ledger.batchSizeMax}, concurrency ${options.ledger.concurrency ?? `${defaultConcurrency(options.ledger.lanes)} (the engine's default)`} per lane, lanes ${options.ledger.lanes} (creator earnings and platform:commission sharded), poolMax ${options.poolMax}${options.analyze ? ', ANALYZE before each shape' : ''}${options.whatIfSql ? `, what-if ${options.whatIfSql}` : ''}${options.jit === 'off' ? ', jit off for the benchmark database' : ''}`,
  )
  lines.push(`baseline: ${baseline.command}`)
  lines.push('')
  lines.push(
    '| shape | posts/s | p50 ms | p99 ms | max ms | postings/batch | Node CPU (% of a core) | machine CPU | PostgreSQL CPU µs/post | others: CPU / sessions | × pgbench hot row |',
  )
  lines.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
  for (const r of run.results) {
    lines.push(
      `| ${r.name} | ${fmt(r.postsPerSecond)} | ${fmt(r.p50Ms, 1)} | ${fmt(r.p99Ms, 1)} | ${fmt(r.maxMs, 1)} | ${fmt(r.postingsPerBatch, 1)} | ${fmt(r.nodePercentOfCore)}% | ${fmt(r.machinePercent)}% | ${fmt(r.postgresUsPerPost)} | ${others(r.interference)} | ${fmt(r.postsPerSecond / baseline.tps, 2)} |`,
    )
  }
  lines.push(
    `| pgbench hot row, ${baseline.clients} clients | ${fmt(baseline.tps)} | | | | | | | | ${others(baseline.interference)} | 1.00 |`,
  )
  lines.push('')
  for (const r of run.results) lines.push(`${r.name}: ${r.label}`)
  for (const r of run.results)
    lines.push(`${r.name} posts/s per ${TIMELINE_SECONDS} s: ${r.timeline.map((n) => fmt(n)).join(', ')}`)
  for (const r of run.results)
    lines.push(
      `${r.name} batches (warm-up included): ${fmt(r.expectationsHeld)} written on the engine's expectations of the rows, ${fmt(r.expectationsStale)} found them stale and were planned again`,
    )
  lines.push(
    `pgbench: every client updates the same row, one other row and inserts one row, one transaction each; latency average ${fmt(baseline.latencyAverageMs, 1)} ms, ${baseline.failed} failed`,
  )
  lines.push(
    'others: CPU of other processes (not this one, PostgreSQL or pgbench) in % of all cores / active sessions of other databases on the server, averaged',
  )
  for (const r of run.results) {
    const errorList = Object.entries(r.errors)
    if (errorList.length > 0)
      lines.push(`errors in ${r.name}: ${errorList.map(([k, n]) => `${k} × ${n}`).join(', ')}`)
  }
  const noisy = [
    ...(quiet(baseline.interference) ? [] : ['pgbench']),
    ...run.results.filter((r) => !quiet(r.interference)).map((r) => r.name),
  ]
  if (noisy.length > 0)
    lines.push(
      `WARNING: other work ran on the machine during ${noisy.join(', ')}: those figures are not clean`,
    )
  const { checks } = run
  lines.push(
    `integrity: ${checks.integrityOk ? 'ok' : 'BROKEN'}${checks.integrityProblems.map((p) => `\n  ${p}`).join('')}`,
  )
  lines.push(
    `transactions in the database: ${checks.transactionsInDatabase}, successful post() calls: ${checks.successfulPosts} (${checks.transactionsInDatabase === checks.successfulPosts ? 'equal' : 'DIFFERENT'})`,
  )
  const hot = run.results.find((r) => r.name === 'hot')
  if (hot) {
    const ratio = hot.postsPerSecond / baseline.tps
    const met = ratio >= TARGET_RATIO && hot.p99Ms <= TARGET_P99_MS
    lines.push(
      `target (hot creator ≥ ${TARGET_RATIO}× pgbench hot row, p99 ≤ ${TARGET_P99_MS} ms): ${met ? 'met' : 'NOT met'} (${fmt(ratio, 2)}×, p99 ${fmt(hot.p99Ms, 1)} ms)`,
    )
  }
  if (run.rounds.length > 0) {
    const ratios = run.rounds.map((r) => r.hot.postsPerSecond / r.pgbenchTps)
    const worstP99 = Math.max(...run.rounds.map((r) => r.hot.p99Ms))
    lines.push('')
    lines.push(
      '| paired round | pgbench hot row TPS | hot posts/s | × pgbench | p99 ms | PostgreSQL CPU µs/post | postings/batch | batches on expectations / stale |',
    )
    lines.push('|---:|---:|---:|---:|---:|---:|---:|---:|')
    run.rounds.forEach((r, i) => {
      lines.push(
        `| ${i + 1} | ${fmt(r.pgbenchTps)} | ${fmt(r.hot.postsPerSecond)} | ${fmt(ratios[i] as number, 2)} | ${fmt(r.hot.p99Ms, 1)} | ${fmt(r.hot.postgresUsPerPost)} | ${fmt(r.hot.postingsPerBatch, 1)} | ${fmt(r.hot.expectationsHeld)} / ${fmt(r.hot.expectationsStale)} |`,
      )
    })
    const met = ratios.filter(
      (ratio, i) => ratio >= TARGET_RATIO && (run.rounds[i]?.hot.p99Ms ?? Infinity) <= TARGET_P99_MS,
    )
    lines.push(
      `paired rounds (pgbench, then the hot shape, ${options.seconds} s each): median ${fmt(median(ratios), 2)}×, ${met.length} of ${ratios.length} rounds at or above ${TARGET_RATIO}× with p99 ≤ ${TARGET_P99_MS} ms; worst p99 ${fmt(worstP99, 1)} ms`,
    )
  }
  for (const line of lines) log(options, line)
  if (options.json) {
    const replacer = (_: string, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)
    console.log(JSON.stringify({ options, machine, engine, baseline, ...run }, replacer))
  }
}

/** The engine measured: the commit, and whether its code has uncommitted edits (a shared working tree). */
function engineVersion(): string {
  const git = (...args: string[]) =>
    execFileSync('git', args, { cwd: fileURLToPath(new URL('..', import.meta.url)), encoding: 'utf8' }).trim()
  try {
    const edited = git('status', '--porcelain', '--', 'src/ledger', 'src/db', 'migrations')
    return `git ${git('rev-parse', '--short', 'HEAD')}${edited ? ' + uncommitted edits in src/ledger, src/db or migrations' : ''}`
  } catch {
    return 'unknown (no git)'
  }
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2))
  const machine = await machineFacts()
  const monitor = new InterferenceMonitor()
  monitor.start()
  try {
    log(options, `pgbench hot row: ${options.pgbenchClients} clients, ${options.seconds} s ...`)
    const mark = monitor.mark()
    const pgbench = await runPgbenchHotRow({
      clients: options.pgbenchClients,
      seconds: options.seconds,
      onDatabase: (name) => monitor.own(name),
    })
    const baseline = { ...pgbench, interference: monitor.since(mark) }
    log(options, `  ${fmt(baseline.tps)} TPS`)
    log(options, `ledger: ${options.shapes.join(', ')}, ${options.seconds} s each ...`)
    const run = await runLedger(options, monitor)
    report(options, machine, baseline, run, engineVersion())
    const consistent =
      run.checks.integrityOk && run.checks.transactionsInDatabase === run.checks.successfulPosts
    process.exitCode = consistent ? 0 : 1
  } finally {
    await monitor.stop()
  }
}

await main()
