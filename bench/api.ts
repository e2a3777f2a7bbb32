import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import os from 'node:os'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import autocannon from 'autocannon'
import postgres from 'postgres'
import { signToken } from '../src/auth/tokens.js'
import { GRANT_COINS, SEND_GIFT, START_LIVE } from '../test/support/operations.js'
import { newestProfile, type ProfileSummary, summarizeProfile } from './support/cpu-profile.js'
import { type Interference, InterferenceMonitor } from './support/interference.js'
import {
  adminUrl,
  createScratchDatabase,
  ledgerIntegrityCheck,
  type MachineFacts,
  machineFacts,
} from './support/scratch.js'
import {
  benchServerEnv,
  builtServerArgs,
  cpuByCommand,
  cpuDelta,
  freePort,
  otherBenchmarksRunning,
  processCpuSeconds,
  processSched,
  type SchedTimes,
  type ServerProcess,
  schedByCommand,
  schedDelta,
  startServerProcess,
  threadSched,
} from './support/server-process.js'
import { fmt, median, summarize } from './support/stats.js'

// The GraphQL API over HTTP on PostgreSQL: the real server (src/main.ts) in a
// child process, autocannon in this one, a closed loop of N connections.
// 500 funded senders send gifts to one creator's live stream; in the same
// run and against the same server, a no-op authenticated mutation is the
// baseline (the GraphQL ceiling: Yoga, the plugins, authentication and
// validation, no database). Afterwards the books are checked from SQL.
//
//   npm run bench:api -- [--seconds 15] [--connections 64] [--warmup-seconds 2]
//     [--senders 500] [--pool-max N] [--shapes noop,limit,gift,me,noop] [--wait-quiet 600]
//   (shapes may repeat: with noop,gift,noop,gift,noop each gift run is also
//   compared with the no-op runs beside it, and the median printed)
//     [--cpu-prof DIR] [--server-node-arg ARG ...] [--json]
//
// --wait-quiet S: before each shape, wait up to S seconds (polling every
// 5 s) while the rest of the machine uses more than 10% of its CPU (another
// benchmark, a test run); 0 does not wait. Interference during a shape is
// reported either way.
// --cpu-prof DIR: the server runs under node --cpu-prof and writes its
// profile into DIR when it stops (profile one shape at a time: --shapes gift).
// --server-node-arg ARG: an extra option for the server's node, repeatable
// (--server-node-arg=--heap-prof, --server-node-arg=--max-semi-space-size=32).

const TARGET_GIFT_RATIO = 0.7
const TARGET_GIFT_P99_MS = 100
const TARGET_ME_RATIO = 0.8
/** Coins granted to each sender: 200,000 gifts of 5 coins each, far beyond any run. */
const FUNDING_COINS = 1_000_000
const TIMELINE_SECONDS = 5
const HOST = '127.0.0.1'
const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url))
/** The gift sent: the catalog's 1-coin gift, 1 to 5 at a time (gifts of 1–5 coins). */
const GIFT_SKU_NAME = 'Rose'
const QUANTITY_MAX = 5

const NOOP = 'mutation Noop { __typename }'
const SET_NO_LIMIT =
  'mutation NoLimit { setDailySpendLimit(input: { dailyCoins: null }) { userErrors { code } } }'
const MY_COINS = 'query MyCoins { me { wallet { coins } } }'

const SHAPE_NAMES = ['noop', 'limit', 'gift', 'me'] as const
type ShapeName = (typeof SHAPE_NAMES)[number]

const LABELS: Record<ShapeName, string> = {
  noop: '(b) `mutation { __typename }`: Yoga, plugins, rate limit, token check, no database — the GraphQL ceiling',
  limit:
    '(a) `setDailySpendLimit(input: { dailyCoins: null })`: one UPDATE of the caller’s user row, one commit',
  gift: '`sendGift` (the contract’s SendGift operation): 1–5 coins, one live stream, senders round-robin',
  me: '`query { me { wallet { coins } } }` for a random sender',
}

interface Options {
  seconds: number
  warmupSeconds: number
  connections: number
  senders: number
  /** DATABASE_POOL_MAX for the server; undefined: the server's default. */
  poolMax: number | undefined
  shapes: ShapeName[]
  /** Profile the server (node --cpu-prof) into this directory; the profile is written when it stops. */
  cpuProfileDir: string | undefined
  /** Extra arguments for the server's node (e.g. --heap-prof, --max-semi-space-size=32), for what-if runs. */
  serverNodeArgs: string[]
  /** Before each shape, wait up to this long for other benchmarks and test runs to end. */
  waitQuietSeconds: number
  json: boolean
}

function parseOptions(argv: string[]): Options {
  // Not strict: `npm run bench` passes every benchmark the same arguments,
  // including other benchmarks' options.
  const { values } = parseArgs({
    args: argv,
    options: {
      seconds: { type: 'string', default: '15' },
      'warmup-seconds': { type: 'string', default: '2' },
      connections: { type: 'string' },
      clients: { type: 'string' },
      senders: { type: 'string', default: '500' },
      'pool-max': { type: 'string' },
      'cpu-prof': { type: 'string' },
      'server-node-arg': { type: 'string', multiple: true },
      'wait-quiet': { type: 'string', default: '600' },
      shapes: { type: 'string', default: 'noop,limit,gift,me,noop' },
      json: { type: 'boolean', default: false },
    },
    strict: false,
  })
  const int = (value: unknown, name: string, min: number): number => {
    const n = Number(value)
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be a whole number >= ${min}`)
    return n
  }
  const shapes = String(values.shapes)
    .split(',')
    .map((s) => s.trim())
  for (const s of shapes) {
    if (!(SHAPE_NAMES as readonly string[]).includes(s))
      throw new Error(`--shapes: unknown shape ${s} (${SHAPE_NAMES.join(', ')})`)
  }
  return {
    seconds: int(values.seconds, 'seconds', 1),
    warmupSeconds: int(values['warmup-seconds'], 'warmup-seconds', 0),
    // --clients: the name the other benchmarks use for the same thing.
    connections: int(values.connections ?? values.clients ?? '64', 'connections', 1),
    senders: int(values.senders, 'senders', 1),
    poolMax: values['pool-max'] === undefined ? undefined : int(values['pool-max'], 'pool-max', 1),
    shapes: shapes as ShapeName[],
    cpuProfileDir: typeof values['cpu-prof'] === 'string' ? values['cpu-prof'] : undefined,
    serverNodeArgs: (values['server-node-arg'] ?? []).filter((a): a is string => typeof a === 'string'),
    waitQuietSeconds: int(values['wait-quiet'], 'wait-quiet', 0),
    json: values.json === true,
  }
}

// ---- the population ----------------------------------------------------------

interface Actor {
  userId: string
  authorization: string
}

interface Population {
  admin: Actor
  creator: Actor
  senders: Actor[]
  streamId: string
  giftId: string
  giftCoinCost: number
}

interface GraphQLBody {
  data?: Record<string, any> | null
  errors?: { message: string; extensions?: { code?: string } }[]
}

async function call(
  url: string,
  authorization: string,
  query: string,
  variables?: Record<string, unknown>,
): Promise<Record<string, any>> {
  const response = await fetch(`${url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json', authorization },
    body: JSON.stringify({ query, variables }),
  })
  const body = (await response.json()) as GraphQLBody
  if (!response.ok || body.errors || !body.data)
    throw new Error(`setup: ${query.slice(0, 60)}…: HTTP ${response.status} ${JSON.stringify(body.errors)}`)
  return body.data
}

/** Runs `task` over `items`, `parallel` at a time. */
async function eachLimited<T>(items: T[], parallel: number, task: (item: T, i: number) => Promise<void>) {
  let next = 0
  await Promise.all(
    Array.from({ length: Math.min(parallel, items.length) }, async () => {
      while (next < items.length) {
        const i = next++
        await task(items[i] as T, i)
      }
    }),
  )
}

async function setUp(url: string, secret: string, options: Options, runId: string): Promise<Population> {
  const key = new TextEncoder().encode(secret)
  const signIn = async (handle: string, roles: string[]): Promise<Actor> => {
    const token = await signToken(
      key,
      { sub: `bench|${runId}|${handle}`, preferred_username: handle, name: handle, roles },
      { expiresIn: '6h' },
    )
    const authorization = `Bearer ${token}`
    // The first request of a token's subject creates the user and its wallet.
    const data = await call(url, authorization, 'query { me { user { id } } }')
    return { userId: data.me.user.id as string, authorization }
  }
  const admin = await signIn('bench_admin', ['admin'])
  const creator = await signIn('bench_star', ['creator'])
  const senders: Actor[] = new Array(options.senders)
  await eachLimited(
    Array.from({ length: options.senders }, (_, i) => i),
    16,
    async (i) => {
      senders[i] = await signIn(`bench_fan_${i}`, [])
    },
  )
  await eachLimited(senders, 16, async (sender, i) => {
    const data = await call(url, admin.authorization, GRANT_COINS, {
      userId: sender.userId,
      coins: FUNDING_COINS,
      reason: 'bench:api funding',
      idempotencyKey: `bench-fund-${runId}-${i}`,
    })
    if (data.grantCoins.userErrors.length > 0 || data.grantCoins.wallet.coins !== FUNDING_COINS)
      throw new Error(`setup: funding ${sender.userId}: ${JSON.stringify(data.grantCoins)}`)
  })
  const started = await call(url, creator.authorization, START_LIVE, { title: 'bench:api' })
  const streamId = started.startLiveStream.liveStream?.id as string | undefined
  if (!streamId) throw new Error(`setup: startLiveStream: ${JSON.stringify(started.startLiveStream)}`)
  const catalog = await call(url, admin.authorization, 'query { gifts { id name coinCost } }')
  const gift = (catalog.gifts as { id: string; name: string; coinCost: number }[]).find(
    (g) => g.name === GIFT_SKU_NAME,
  )
  if (!gift) throw new Error(`setup: no gift named ${GIFT_SKU_NAME} in the catalog`)
  if (gift.coinCost * QUANTITY_MAX > 5) throw new Error(`setup: ${GIFT_SKU_NAME} costs ${gift.coinCost}`)
  return { admin, creator, senders, streamId, giftId: gift.id, giftCoinCost: gift.coinCost }
}

// ---- one shape -----------------------------------------------------------------

type Outcome = { ok: true; coins?: number } | { ok: false; error: string }

interface Shape {
  name: ShapeName
  /** Headers and body of the next request. */
  next(n: number): { authorization: string; body: string }
  /** Reads a response: GraphQL errors and userErrors are failures. */
  classify(status: number, body: string): Outcome
}

function graphqlOutcome(
  status: number,
  text: string,
  payload: (data: Record<string, any>) => Outcome,
): Outcome {
  if (status !== 200) return { ok: false, error: `HTTP ${status}` }
  let body: GraphQLBody
  try {
    body = JSON.parse(text) as GraphQLBody
  } catch {
    return { ok: false, error: 'unparsable body' }
  }
  const first = body.errors?.[0]
  if (first) return { ok: false, error: first.extensions?.code ?? first.message }
  if (!body.data) return { ok: false, error: 'no data' }
  return payload(body.data)
}

const userErrorsOf = (payload: { userErrors?: { code: string }[] } | null | undefined): Outcome =>
  payload?.userErrors && payload.userErrors.length > 0
    ? { ok: false, error: payload.userErrors[0]?.code ?? 'userError' }
    : { ok: true }

function shapesFor(population: Population, runId: string): Record<ShapeName, Shape> {
  const { senders } = population
  const roundRobin = (n: number) => senders[n % senders.length] as Actor
  const noopBody = JSON.stringify({ query: NOOP })
  const limitBody = JSON.stringify({ query: SET_NO_LIMIT })
  const meBody = JSON.stringify({ query: MY_COINS })
  return {
    noop: {
      name: 'noop',
      next: (n) => ({ authorization: roundRobin(n).authorization, body: noopBody }),
      classify: (status, text) =>
        graphqlOutcome(status, text, (data) =>
          data.__typename === 'Mutation' ? { ok: true } : { ok: false, error: 'unexpected data' },
        ),
    },
    limit: {
      name: 'limit',
      next: (n) => ({ authorization: roundRobin(n).authorization, body: limitBody }),
      classify: (status, text) =>
        graphqlOutcome(status, text, (data) => userErrorsOf(data.setDailySpendLimit)),
    },
    gift: {
      name: 'gift',
      next: (n) => ({
        authorization: roundRobin(n).authorization,
        body: JSON.stringify({
          query: SEND_GIFT,
          variables: {
            giftId: population.giftId,
            liveStreamId: population.streamId,
            quantity: 1 + Math.floor(Math.random() * QUANTITY_MAX),
            // Distinct per request, and per run: no request is a replay.
            idempotencyKey: `bench-${runId}-${n}`,
          },
        }),
      }),
      classify: (status, text) =>
        graphqlOutcome(status, text, (data) => {
          const outcome = userErrorsOf(data.sendGift)
          if (!outcome.ok) return outcome
          const coins = data.sendGift?.giftEvent?.coins
          return typeof coins === 'number' ? { ok: true, coins } : { ok: false, error: 'no giftEvent' }
        }),
    },
    me: {
      name: 'me',
      next: () => ({
        authorization: (senders[Math.floor(Math.random() * senders.length)] as Actor).authorization,
        body: meBody,
      }),
      classify: (status, text) =>
        graphqlOutcome(status, text, (data) =>
          typeof data.me?.wallet?.coins === 'number' ? { ok: true } : { ok: false, error: 'no coins' },
        ),
    },
  }
}

interface Tally {
  /** Requests built (sent, or about to be when the run stopped). */
  built: number
  responses: number
  ok: number
  /** Coins of the gifts the server said it accepted. */
  acceptedCoins: number
  errors: Record<string, number>
}

const newTally = (): Tally => ({ built: 0, responses: 0, ok: 0, acceptedCoins: 0, errors: {} })

interface LoadRun {
  seconds: number
  ok: number
  responses: number
  latenciesMs: number[]
  completedAtMs: number[]
  connectionErrors: number
  timeouts: number
  errors: Record<string, number>
}

/** A closed loop of `connections` keep-alive connections for `seconds`; every response read and classified. */
async function load(
  url: string,
  shape: Shape,
  connections: number,
  seconds: number,
  counter: { n: number },
  total: Tally,
): Promise<LoadRun> {
  const latenciesMs: number[] = []
  const completedAtMs: number[] = []
  const errors: Record<string, number> = {}
  let ok = 0
  let responses = 0
  let startedAt = 0
  let done: (error: unknown, result: autocannon.Result) => void = () => {}
  const finished = new Promise<autocannon.Result>((resolve, reject) => {
    done = (error, result) => (error ? reject(error) : resolve(result))
  })
  const instance = autocannon(
    {
      url: `${url}/graphql`,
      connections,
      pipelining: 1,
      duration: seconds,
      method: 'POST',
      requests: [
        {
          setupRequest: (request) => {
            const { authorization, body } = shape.next(counter.n++)
            total.built++
            return {
              ...request,
              method: 'POST',
              headers: { 'content-type': 'application/json', accept: 'application/json', authorization },
              body,
            }
          },
          onResponse: (status, body) => {
            responses++
            total.responses++
            const outcome = shape.classify(status, body)
            if (outcome.ok) {
              ok++
              total.ok++
              total.acceptedCoins += outcome.coins ?? 0
            } else {
              errors[outcome.error] = (errors[outcome.error] ?? 0) + 1
              total.errors[outcome.error] = (total.errors[outcome.error] ?? 0) + 1
            }
          },
        },
      ],
    },
    (error, result) => done(error, result),
  )
  startedAt = performance.now()
  instance.on('response', (_client, _status, _bytes, responseTime) => {
    latenciesMs.push(responseTime)
    completedAtMs.push(performance.now() - startedAt)
  })
  const result = await finished
  return {
    seconds: (result.finish.getTime() - result.start.getTime()) / 1000,
    ok,
    responses,
    latenciesMs,
    completedAtMs,
    connectionErrors: result.errors,
    timeouts: result.timeouts,
    errors,
  }
}

interface ShapeResult {
  name: ShapeName
  requestsPerSecond: number
  p50Ms: number
  p99Ms: number
  maxMs: number
  responses: number
  errors: Record<string, number>
  connectionErrors: number
  /** CPU in % of one core over the measured window. */
  serverCpu: number
  postgresCpu: number
  loadGeneratorCpu: number
  machineCpu: number
  /** Server CPU per successful request. */
  serverCpuMsPerRequest: number
  postgresCpuMsPerRequest: number
  /**
   * Database transactions committed per successful request, read-only
   * statements outside a transaction included (pg_stat_database.xact_commit):
   * about the statements a request sends, plus its share of a batch.
   */
  transactionsPerRequest: number
  /** Gift batches committed in the window, by way (pipelined: two round trips; usual: the fallback). */
  giftBatches: { pipelined: number; usual: number }
  /** The measured window, in µs of the monotonic clock (to cut the server's CPU profile). */
  window: [number, number]
  /** The server's database sessions: average number in each state over the measured window. */
  sessionStates: Record<string, number>
  /**
   * Scheduler time over the measured window, in % of the wall time: the
   * server's main thread (the event loop: on a CPU, waiting for one, the
   * rest idle); the server's other threads (garbage collection helpers,
   * libuv), PostgreSQL's processes and this process (autocannon), each on a
   * CPU and waiting for one, in % of one core.
   */
  sched: {
    mainRunning: number
    mainWaiting: number
    mainIdle: number
    serverOthers: SchedTimes
    postgres: SchedTimes
    loadGenerator: SchedTimes
  }
  interference: Interference
  timeline: number[]
}

/**
 * What the server's database sessions do, sampled every SESSION_SAMPLE_MS:
 * the average number of sessions in each state. "idle in transaction" is a
 * transaction waiting for Node to send its next statement; "active" ones
 * run in PostgreSQL or wait there (wait events: locks, WAL flushes...).
 */
const SESSION_SAMPLE_MS = 50

class SessionSampler {
  private readonly counts = new Map<string, number>()
  private samples = 0
  private busy = false
  private readonly timer: NodeJS.Timeout

  constructor(
    private readonly admin: postgres.Sql,
    private readonly database: string,
  ) {
    this.timer = setInterval(() => void this.sample(), SESSION_SAMPLE_MS)
  }

  private async sample(): Promise<void> {
    if (this.busy) return
    this.busy = true
    try {
      const rows = await this.admin<{ state: string; n: number }[]>`
        select case when state = 'active' and wait_event_type is not null
                    then 'active, waiting ' || wait_event_type || ':' || wait_event
                    when state = 'active' then 'active, running'
                    else coalesce(state, 'unknown') end as state,
               count(*)::int as n
          from pg_stat_activity
         where datname = ${this.database} and application_name = 'giftledger' and pid <> pg_backend_pid()
         group by 1`
      this.samples++
      for (const r of rows) this.counts.set(r.state, (this.counts.get(r.state) ?? 0) + r.n)
    } catch {
      // a missed sample
    } finally {
      this.busy = false
    }
  }

  /** Average sessions per state, most first. */
  stop(): Record<string, number> {
    clearInterval(this.timer)
    const averages = [...this.counts]
      .map(([state, n]) => [state, n / Math.max(1, this.samples)] as const)
      .sort((a, b) => b[1] - a[1])
    return Object.fromEntries(averages)
  }
}

async function commits(admin: postgres.Sql, database: string): Promise<number> {
  // Statistics reach pg_stat_database at most once a second; wait for them.
  await new Promise((resolve) => setTimeout(resolve, 1100))
  await admin`select pg_stat_clear_snapshot()`
  const [row] = await admin<{ n: string }[]>`
    select xact_commit::text as n from pg_stat_database where datname = ${database}`
  return Number(row?.n ?? Number.NaN)
}

/** The server's gift batches so far, by way (its /metrics: giftledger_gift_batches_total). */
async function giftBatches(url: string): Promise<{ pipelined: number; usual: number }> {
  const text = await (await fetch(`${url}/metrics`)).text()
  const count = (way: string) =>
    Number(new RegExp(`^giftledger_gift_batches_total\\{way="${way}"\\} (\\d+)`, 'm').exec(text)?.[1] ?? 0)
  return { pipelined: count('pipelined'), usual: count('usual') }
}

async function runShape(
  shape: Shape,
  context: {
    server: ServerProcess
    options: Options
    monitor: InterferenceMonitor
    admin: postgres.Sql
    database: string
    counter: { n: number }
    tally: Tally
  },
): Promise<ShapeResult> {
  const { server, options, monitor, admin, database, counter, tally } = context
  await waitForQuiet(options, server.pid)
  if (options.warmupSeconds > 0)
    await load(server.url, shape, options.connections, options.warmupSeconds, counter, tally)
  const commitsBefore = await commits(admin, database)
  const batchesBefore = await giftBatches(server.url)
  const mark = monitor.mark()
  const serverBefore = processCpuSeconds(server.pid)
  const postgresBefore = cpuByCommand('postgres')
  const schedBefore = {
    main: threadSched(server.pid),
    server: processSched(server.pid),
    postgres: schedByCommand('postgres'),
    own: processSched(process.pid),
  }
  const ownBefore = process.cpuUsage()
  const machineBefore = machineTimes()
  const sessions = new SessionSampler(admin, database)
  const windowStart = Number(process.hrtime.bigint() / 1000n)
  const run = await load(server.url, shape, options.connections, options.seconds, counter, tally)
  const window: [number, number] = [windowStart, Number(process.hrtime.bigint() / 1000n)]
  const sessionStates = sessions.stop()
  const wall = run.seconds
  const serverCpu = ((processCpuSeconds(server.pid) - serverBefore) / wall) * 100
  const postgresCpuSeconds = cpuDelta(postgresBefore, cpuByCommand('postgres'))
  const sched = schedOver(schedBefore, server.pid, wall)
  const own = process.cpuUsage(ownBefore)
  const machineAfter = machineTimes()
  const interference = monitor.since(mark)
  const commitsAfter = await commits(admin, database)
  const batchesAfter = await giftBatches(server.url)
  // The monitor counts every process but this one and PostgreSQL's: the server is ours too.
  const cpus = os.availableParallelism()
  interference.otherCpuPercent = Math.max(0, interference.otherCpuPercent - serverCpu / cpus)
  const busy = machineAfter.busy - machineBefore.busy
  const totalTime = machineAfter.total - machineBefore.total
  return {
    name: shape.name,
    requestsPerSecond: run.ok / wall,
    ...summarize(run.latenciesMs),
    responses: run.responses,
    errors: run.errors,
    connectionErrors: run.connectionErrors,
    serverCpu,
    postgresCpu: (postgresCpuSeconds / wall) * 100,
    loadGeneratorCpu: ((own.user + own.system) / 1e6 / wall) * 100,
    machineCpu: totalTime > 0 ? (busy / totalTime) * 100 : Number.NaN,
    serverCpuMsPerRequest: ((serverCpu / 100) * wall * 1000) / run.ok,
    postgresCpuMsPerRequest: (postgresCpuSeconds * 1000) / run.ok,
    transactionsPerRequest: (commitsAfter - commitsBefore) / run.ok,
    giftBatches: {
      pipelined: batchesAfter.pipelined - batchesBefore.pipelined,
      usual: batchesAfter.usual - batchesBefore.usual,
    },
    window,
    sessionStates,
    sched,
    interference,
    timeline: Array.from({ length: Math.ceil(options.seconds / TIMELINE_SECONDS) }, (_, i) => {
      const from = i * TIMELINE_SECONDS * 1000
      const to = Math.min(options.seconds, (i + 1) * TIMELINE_SECONDS) * 1000
      return run.completedAtMs.filter((t) => t >= from && t < to).length / ((to - from) / 1000)
    }),
  }
}

/** ShapeResult.sched from readings taken before the window and now. */
function schedOver(
  before: { main: SchedTimes; server: SchedTimes; postgres: Map<number, SchedTimes>; own: SchedTimes },
  serverPid: number,
  wallSeconds: number,
): ShapeResult['sched'] {
  const pct = (seconds: number) => (seconds / wallSeconds) * 100
  const delta = (a: SchedTimes, b: SchedTimes): SchedTimes => ({
    running: pct(b.running - a.running),
    waiting: pct(b.waiting - a.waiting),
  })
  const main = delta(before.main, threadSched(serverPid))
  const server = delta(before.server, processSched(serverPid))
  const postgres = schedDelta(before.postgres, schedByCommand('postgres'))
  return {
    mainRunning: main.running,
    mainWaiting: main.waiting,
    mainIdle: Math.max(0, 100 - main.running - main.waiting),
    serverOthers: { running: server.running - main.running, waiting: server.waiting - main.waiting },
    postgres: { running: pct(postgres.running), waiting: pct(postgres.waiting) },
    loadGenerator: delta(before.own, processSched(process.pid)),
  }
}

function machineTimes(): { busy: number; total: number } {
  let busy = 0
  let total = 0
  for (const cpu of os.cpus()) {
    const { user, nice, sys, irq, idle } = cpu.times
    busy += user + nice + sys + irq
    total += user + nice + sys + irq + idle
  }
  return { busy, total }
}

// ---- the books, afterwards -------------------------------------------------------

interface Check {
  name: string
  ok: boolean
  detail: string
}

async function checkBooks(
  url: string,
  population: Population,
  giftTally: Tally,
  giftsInFlightMax: number,
): Promise<{ checks: Check[]; giftsPerCommit: number }> {
  const sql = postgres(url, { max: 2, onnotice: () => {} })
  const checks: Check[] = []
  const check = (name: string, ok: boolean, detail: string) => checks.push({ name, ok, detail })
  try {
    const walletCodes = population.senders.map((s) => `user:${s.userId}:wallet`)
    const [m] = await sql<Record<string, string>[]>`
      select (select count(*) from gift_events)::text as events,
             (select coalesce(sum(coins), 0) from gift_events)::text as coins,
             (select coalesce(sum(creator_coins), 0) from gift_events)::text as creator_coins,
             (select coalesce(sum(platform_coins), 0) from gift_events)::text as platform_coins,
             (select count(*) from ledger_accounts where code = any(${walletCodes}))::text as wallets,
             (select coalesce(sum(balance), 0) from ledger_accounts where code = any(${walletCodes}))::text as wallet_coins,
             (select count(*) from ledger_accounts where code = any(${walletCodes}) and balance < 0)::text as negative,
             (select balance from ledger_accounts where code = ${`user:${population.creator.userId}:earnings`})::text as creator_balance,
             (select balance from ledger_accounts where code = 'platform:commission')::text as commission_balance,
             (select coalesce(sum(e.amount) filter (where e.direction = 'debit'), 0) from ledger_entries e
                join ledger_transactions t on t.id = e.transaction_id where t.kind = 'gift')::text as gift_debits,
             (select coalesce(sum(e.amount) filter (where e.direction = 'credit'), 0) from ledger_entries e
                join ledger_transactions t on t.id = e.transaction_id where t.kind = 'gift')::text as gift_credits,
             (select count(*) from ledger_transactions where kind = 'gift')::text as gift_transactions,
             (select count(distinct xact_id) from ledger_transactions where kind = 'gift')::text as gift_commits,
             (select gift_coins from live_streams where id = ${population.streamId})::text as stream_coins,
             (select last_sequence from live_streams where id = ${population.streamId})::text as stream_last_sequence,
             (select count(distinct sequence) from gift_events where stream_id = ${population.streamId})::text as distinct_sequences,
             (select coalesce(max(sequence), 0) from gift_events where stream_id = ${population.streamId})::text as max_sequence,
             (select coalesce(sum(coins), 0) from stream_gifters where stream_id = ${population.streamId})::text as ranking_coins`
    if (!m) throw new Error('no row')
    // No row (e.g. no gift sent yet: no earnings account) is a zero balance.
    const n = (k: string) => BigInt(m[k] ?? 0)
    const funded = BigInt(FUNDING_COINS) * BigInt(population.senders.length)
    const decrease = funded - n('wallet_coins')
    check(
      'gift coins = wallets’ decrease (funded − balances)',
      n('wallets') === BigInt(population.senders.length) && n('coins') === decrease,
      `${m.coins} coins in ${m.events} gift events; funded ${funded} − balances ${m.wallet_coins} = ${decrease}`,
    )
    check(
      'creator + platform credited = debited',
      n('creator_coins') + n('platform_coins') === n('coins') &&
        n('gift_debits') === n('coins') &&
        n('gift_credits') === n('coins') &&
        n('creator_balance') === n('creator_coins') &&
        n('commission_balance') === n('platform_coins'),
      `debited ${m.gift_debits}, credited ${m.gift_credits} (creator ${m.creator_coins}, earnings account ${m.creator_balance}; platform ${m.platform_coins}, commission account ${m.commission_balance})`,
    )
    const [perSender] = await sql<{ n: string }[]>`
      select count(*)::text as n from ledger_accounts a
        left join (select sender_id, sum(coins) as coins from gift_events group by sender_id) g
               on g.sender_id = a.owner_id
       where a.code = any(${walletCodes}) and ${FUNDING_COINS}::bigint - a.balance <> coalesce(g.coins, 0)`
    check(
      'every sender: funded − balance = its gifts; none negative',
      perSender?.n === '0' && n('negative') === 0n,
      `${perSender?.n} senders differ, ${m.negative} negative`,
    )
    check(
      'the stream: gift_coins, sequence 1..n, ranking',
      n('stream_coins') === n('coins') &&
        n('stream_last_sequence') === n('events') &&
        n('distinct_sequences') === n('events') &&
        n('max_sequence') === n('events') &&
        n('ranking_coins') === n('coins'),
      `gift_coins ${m.stream_coins}, last_sequence ${m.stream_last_sequence}, ${m.distinct_sequences} distinct sequences up to ${m.max_sequence}, ranking ${m.ranking_coins}`,
    )
    // What the clients were told against what the database holds: every
    // accepted gift is there; anything more was in flight when a run stopped.
    const events = Number(m.events)
    const coins = Number(m.coins)
    check(
      'accepted gifts (from responses) are all in the database',
      events >= giftTally.ok &&
        events <= giftTally.ok + giftsInFlightMax &&
        coins >= giftTally.acceptedCoins &&
        coins <= giftTally.acceptedCoins + giftsInFlightMax * QUANTITY_MAX * population.giftCoinCost,
      `${giftTally.ok} accepted (${giftTally.acceptedCoins} coins), ${events} in the database (${coins} coins); at most ${giftsInFlightMax} unanswered when runs stopped`,
    )
    const integrity = await ledgerIntegrityCheck(url)
    check('ledger integrity (checkIntegrity)', integrity.ok, integrity.detail)
    return { checks, giftsPerCommit: Number(m.gift_transactions) / Number(m.gift_commits) }
  } finally {
    await sql.end({ timeout: 5 })
  }
}

// ---- the report -------------------------------------------------------------------

const QUIET_OTHER_CPU_PERCENT_MAX = 5
const QUIET_OTHER_SESSIONS_MAX = 0.1
const quiet = (i: Interference) =>
  !(i.otherCpuPercent > QUIET_OTHER_CPU_PERCENT_MAX || i.otherActiveSessions > QUIET_OTHER_SESSIONS_MAX)

function log(options: Options, line: string): void {
  // With --json, stdout carries only the JSON document.
  if (options.json) console.error(line)
  else console.log(line)
}

function report(
  options: Options,
  machine: MachineFacts,
  run: {
    results: ShapeResult[]
    checks: Check[]
    giftsPerCommit: number
    poolMax: string
    /** node's options for the server (the serve script's, then --server-node-arg's). */
    serverNodeOptions: string[]
    serverLogLines: number
    serverLogSummary: Map<string, number>
    othersAtStart: string[]
    code: string
    profiles: { shape: ShapeName; summary: ProfileSummary }[]
  },
): { targetsMet: boolean } {
  const lines: string[] = []
  const noops = run.results.filter((r) => r.name === 'noop')
  // Without a noop run (e.g. when profiling one shape) there are no ratios.
  const mean = (rs: ShapeResult[]) =>
    rs.length === 0 ? Number.NaN : rs.reduce((a, r) => a + r.requestsPerSecond, 0) / rs.length
  const baseline = mean(noops)
  // The second reference: the cheapest real mutation, one UPDATE and one commit.
  const limitBaseline = mean(run.results.filter((r) => r.name === 'limit'))
  lines.push('')
  lines.push(
    `machine: ${machine.cpus} CPUs, ${machine.memoryGiB} GiB, PostgreSQL ${machine.postgresVersion}, fsync ${machine.fsync}, synchronous_commit ${machine.synchronousCommit}, shared_buffers ${machine.sharedBuffers}, Node ${machine.node}`,
  )
  lines.push(`date: ${machine.dateUtc}`)
  lines.push(`code: ${run.code}`)
  lines.push(
    `load: autocannon, ${options.connections} connections, closed loop, ${options.seconds} s per shape after ${options.warmupSeconds} s warm-up; server: src/main.ts in its own process (node ${run.serverNodeOptions.join(' ')}), NODE_ENV=production, DATABASE_POOL_MAX ${run.poolMax}, ${options.senders} funded senders`,
  )
  lines.push('')
  lines.push(
    '| shape | req/s | p50 ms | p99 ms | max ms | errors | × noop | × limit | server CPU | PostgreSQL CPU | autocannon CPU | machine | server ms/req | PG ms/req | PG xacts/req | others: CPU / sessions |',
  )
  lines.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
  for (const r of run.results) {
    const errors = Object.values(r.errors).reduce((a, b) => a + b, 0) + r.connectionErrors
    lines.push(
      `| ${r.name} | ${fmt(r.requestsPerSecond)} | ${fmt(r.p50Ms, 1)} | ${fmt(r.p99Ms, 1)} | ${fmt(r.maxMs, 1)} | ${errors} | ${fmt(r.requestsPerSecond / baseline, 2)} | ${fmt(r.requestsPerSecond / limitBaseline, 2)} | ${fmt(r.serverCpu)}% | ${fmt(r.postgresCpu)}% | ${fmt(r.loadGeneratorCpu)}% | ${fmt(r.machineCpu)}% | ${fmt(r.serverCpuMsPerRequest, 2)} | ${fmt(r.postgresCpuMsPerRequest, 2)} | ${fmt(r.transactionsPerRequest, 2)} | ${fmt(r.interference.otherCpuPercent)}% / ${fmt(r.interference.otherActiveSessions, 1)} |`,
    )
  }
  lines.push('')
  lines.push(
    `baseline (× noop): ${fmt(baseline)} req/s, the mean of the ${noops.length} noop run(s): ${noops.map((r) => fmt(r.requestsPerSecond)).join(', ')}; second reference (× limit): ${fmt(limitBaseline)} req/s`,
  )
  for (const name of [...new Set(run.results.map((r) => r.name))]) lines.push(`${name}: ${LABELS[name]}`)
  lines.push(
    'CPU in % of one core (the machine: % of all cores); ms/req: CPU per successful request; others: CPU of processes other than this one, the server and PostgreSQL (% of all cores) / active sessions of other databases',
  )
  lines.push(
    'PG xacts/req: transactions committed in the benchmark database per successful request (pg_stat_database; a read outside a transaction counts as one)',
  )
  for (const r of run.results)
    lines.push(`${r.name} req/s per ${TIMELINE_SECONDS} s: ${r.timeline.map((n) => fmt(n)).join(', ')}`)
  for (const r of run.results)
    lines.push(
      `${r.name} server's database sessions (average): ${Object.entries(r.sessionStates)
        .filter(([, n]) => n >= 0.05)
        .map(([state, n]) => `${state} ${fmt(n, 1)}`)
        .join(', ')}`,
    )
  lines.push(
    "scheduling (/proc schedstat, % of the wall time): the server's main thread on a CPU / waiting for one / idle; on a CPU + waiting for one: the server's other threads (GC helpers, libuv), PostgreSQL, this process (autocannon)",
  )
  for (const r of run.results) {
    const { sched: x } = r
    const pair = (t: SchedTimes) => `${fmt(t.running)}% + ${fmt(t.waiting)}%`
    lines.push(
      `${r.name} scheduling: main thread ${fmt(x.mainRunning)}% / ${fmt(x.mainWaiting)}% / ${fmt(x.mainIdle)}%; other server threads ${pair(x.serverOthers)}; PostgreSQL ${pair(x.postgres)}; autocannon ${pair(x.loadGenerator)}`,
    )
  }
  lines.push(`gifts per database commit (all gift batches of the run): ${fmt(run.giftsPerCommit, 1)}`)
  for (const r of run.results.filter((x) => x.name === 'gift')) {
    const { pipelined, usual } = r.giftBatches
    lines.push(
      `gift batches in the window: ${fmt(pipelined + usual)}, ${fmt(usual)} of them the usual way (the fallback: more round trips), ${fmt((r.requestsPerSecond * (r.window[1] - r.window[0])) / 1e6 / Math.max(1, pipelined + usual), 1)} gifts per batch`,
    )
  }
  for (const r of run.results) {
    const list = Object.entries(r.errors)
    if (list.length > 0 || r.connectionErrors > 0)
      lines.push(
        `errors in ${r.name}: ${[...list.map(([k, n]) => `${k} × ${n}`), ...(r.connectionErrors > 0 ? [`connection errors × ${r.connectionErrors}`] : [])].join(', ')}`,
      )
  }
  if (run.othersAtStart.length > 0)
    lines.push(
      `WARNING: other benchmarks or tests were running at the start:\n  ${run.othersAtStart.join('\n  ')}`,
    )
  const noisy = run.results.filter((r) => !quiet(r.interference)).map((r) => r.name)
  if (noisy.length > 0)
    lines.push(
      `WARNING: other work ran on the machine during ${noisy.join(', ')}: those figures are not clean`,
    )
  if (run.serverLogLines > 0)
    lines.push(
      `server log (LOG_LEVEL=warn): ${run.serverLogLines} lines: ${[...run.serverLogSummary].map(([k, n]) => `${k} × ${n}`).join('; ')}`,
    )
  for (const { shape, summary } of run.profiles) {
    const share = (entries: [string, number][]) =>
      entries.map(([k, ms]) => `${k} ${fmt((ms / summary.totalMs) * 100, 1)}%`).join(', ')
    lines.push(`profile of the server during ${shape} (${fmt(summary.totalMs)} ms sampled, ${summary.file}):`)
    lines.push(`  self time by area: ${share(summary.byArea)}`)
    lines.push(`  inclusive time, src/ functions: ${share(summary.srcInclusive)}`)
    lines.push(`  self time, top functions: ${share(summary.topSelf)}`)
  }
  lines.push('')
  for (const c of run.checks) lines.push(`check ${c.ok ? 'pass' : 'FAIL'}: ${c.name} — ${c.detail}`)

  // Each gift run against the no-op runs right beside it: on a machine whose
  // speed drifts over minutes, a steadier ratio than the mean of all no-ops
  // (--shapes noop,gift,noop,gift,noop,... for several pairs).
  const paired = run.results.flatMap((r, i) => {
    if (r.name !== 'gift') return []
    const beside = [run.results[i - 1], run.results[i + 1]].filter(
      (n): n is ShapeResult => n?.name === 'noop',
    )
    if (beside.length === 0) return []
    const noopCpu = beside.reduce((a, n) => a + n.serverCpuMsPerRequest, 0) / beside.length
    return [
      { ratio: r.requestsPerSecond / mean(beside), cpu: r.serverCpuMsPerRequest / noopCpu, p99: r.p99Ms },
    ]
  })
  if (paired.length > 1) {
    lines.push(
      `gift runs against the no-op runs beside them: ${paired.map((p) => `${fmt(p.ratio, 2)} × (server CPU per request ${fmt(p.cpu, 2)} × the no-op's, p99 ${fmt(p.p99, 1)} ms)`).join('; ')}; median ${fmt(median(paired.map((p) => p.ratio)), 2)} ×, server CPU per request ${fmt(median(paired.map((p) => p.cpu)), 2)} ×`,
    )
  }

  // What each shape could reach on this machine at the cost per request just
  // measured: with all its cores busy on the shape's work (server, PostgreSQL
  // and autocannon together), and with the server's event loop busy all the
  // time (the no-op's own limit). A target above the first is out of this
  // machine's reach, whatever the code does with the cost it has.
  const cpus = machine.cpus
  for (const r of run.results.filter((x) => x.name !== 'noop')) {
    const coreMs = ((r.machineCpu / 100) * cpus * 1000) / r.requestsPerSecond
    const allCores = (r.requestsPerSecond * 100) / r.machineCpu
    const eventLoop = (r.requestsPerSecond * 100) / r.sched.mainRunning
    lines.push(
      `${r.name} CPU budget: ${fmt(coreMs, 3)} core-ms per request on the machine (server ${fmt(r.serverCpuMsPerRequest, 3)}, PostgreSQL ${fmt(r.postgresCpuMsPerRequest, 3)}); ceilings at this cost: all ${cpus} cores busy ${fmt(allCores)}/s = ${fmt(allCores / baseline, 2)} × noop, the event loop busy ${fmt(eventLoop)}/s = ${fmt(eventLoop / baseline, 2)} × noop`,
    )
  }

  let targetsMet = true
  const gifts = run.results.filter((r) => r.name === 'gift')
  for (const gift of gifts) {
    const ratio = gift.requestsPerSecond / baseline
    const met = ratio >= TARGET_GIFT_RATIO && gift.p99Ms <= TARGET_GIFT_P99_MS
    targetsMet &&= met
    lines.push(
      `target sendGift ≥ ${TARGET_GIFT_RATIO} × noop, p99 ≤ ${TARGET_GIFT_P99_MS} ms: ${met ? 'met' : 'NOT met'} (${fmt(ratio, 2)} ×, p99 ${fmt(gift.p99Ms, 1)} ms)`,
    )
  }
  for (const me of run.results.filter((r) => r.name === 'me')) {
    const ratio = me.requestsPerSecond / baseline
    const met = ratio >= TARGET_ME_RATIO
    targetsMet &&= met
    lines.push(
      `target me { wallet { coins } } ≥ ${TARGET_ME_RATIO} × noop: ${met ? 'met' : 'NOT met'} (${fmt(ratio, 2)} ×)`,
    )
  }
  for (const line of lines) log(options, line)
  if (options.json)
    console.log(
      JSON.stringify({
        options,
        machine,
        baseline,
        ...run,
        serverLogSummary: Object.fromEntries(run.serverLogSummary),
      }),
    )
  return { targetsMet }
}

const QUIET_POLL_MS = 5000
/** Quiet: the rest of the machine (not this process, not the server) used less than this, in % of all cores. */
const QUIET_MACHINE_CPU_PERCENT_MAX = 10

/**
 * The machine's CPU over the next `ms`, in % of all cores, less what this
 * process and the server used (PostgreSQL's share counts: an idle server
 * leaves it idle, so what it does is someone else's).
 */
async function othersCpuPercent(serverPid: number, ms: number): Promise<number> {
  const machineBefore = machineTimes()
  const ownBefore = process.cpuUsage()
  const serverBefore = processCpuSeconds(serverPid)
  await new Promise((resolve) => setTimeout(resolve, ms))
  const machineAfter = machineTimes()
  const own = process.cpuUsage(ownBefore)
  const ours = (own.user + own.system) / 1e6 + (processCpuSeconds(serverPid) - serverBefore)
  const totalMs = machineAfter.total - machineBefore.total
  const busyMs = machineAfter.busy - machineBefore.busy - ours * 1000
  return totalMs > 0 ? Math.max(0, (busyMs / totalMs) * 100) : Number.NaN
}

/**
 * Waits, up to --wait-quiet seconds, while the rest of the machine is busy
 * (another benchmark, a test run): a figure measured meanwhile is theirs as
 * much as ours. A test runner left idle does not count: CPU does.
 */
async function waitForQuiet(options: Options, serverPid: number): Promise<void> {
  if (options.waitQuietSeconds === 0) return
  const deadline = Date.now() + options.waitQuietSeconds * 1000
  let busy = await othersCpuPercent(serverPid, 1000)
  if (!(busy > QUIET_MACHINE_CPU_PERCENT_MAX)) return
  const running = otherBenchmarksRunning()
  log(
    options,
    `  the machine is busy (${fmt(busy)}% of all cores besides this benchmark); waiting up to ${options.waitQuietSeconds} s${running.length > 0 ? ` — running: ${running.join(' | ').slice(0, 300)}` : ''}`,
  )
  while (busy > QUIET_MACHINE_CPU_PERCENT_MAX && Date.now() < deadline) {
    busy = await othersCpuPercent(serverPid, QUIET_POLL_MS)
  }
  log(options, busy > QUIET_MACHINE_CPU_PERCENT_MAX ? '  still busy; measuring anyway' : '  quiet now')
}

/** The commit the server runs, and whether src/ has uncommitted changes (they run too). */
function codeVersion(): string {
  try {
    const git = (...args: string[]) =>
      execFileSync('git', args, {
        cwd: REPO_ROOT,
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      }).trim()
    const dirty = git('status', '--porcelain', '--', 'src') !== ''
    return `${git('rev-parse', '--short', 'HEAD')}${dirty ? ' + uncommitted changes in src/' : ''}`
  } catch {
    return 'unknown (not a git work tree)'
  }
}

// ---- main -------------------------------------------------------------------------

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2))
  const othersAtStart = otherBenchmarksRunning()
  for (const other of othersAtStart) log(options, `WARNING: running meanwhile: ${other}`)
  const machine = await machineFacts()
  const monitor = new InterferenceMonitor()
  monitor.start()
  const scratch = await createScratchDatabase('gl_bench_api')
  monitor.own(scratch.name)
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} })
  let server: ServerProcess | undefined
  try {
    const secret = randomBytes(32).toString('hex')
    const port = await freePort(HOST)
    const env = benchServerEnv({
      host: HOST,
      port,
      databaseUrl: scratch.url,
      jwtSecret: secret,
      extra: {
        ...(options.poolMax === undefined ? {} : { DATABASE_POOL_MAX: String(options.poolMax) }),
      },
    })
    const serveArgs = builtServerArgs(REPO_ROOT)
    const serverScript = serveArgs.slice(-1)
    const serverNodeOptions = [...serveArgs.slice(0, -1), ...options.serverNodeArgs]
    log(options, `server: ${scratch.name} on ${HOST}:${port} ...`)
    server = await startServerProcess({
      args: [
        ...(options.cpuProfileDir ? ['--cpu-prof', '--cpu-prof-dir', options.cpuProfileDir] : []),
        // The what-if options after the serve script's own, so that they win.
        ...serverNodeOptions,
        ...serverScript,
      ],
      cwd: REPO_ROOT,
      env,
      host: HOST,
      port,
    })
    const runId = randomBytes(4).toString('hex')
    log(options, `setup: ${options.senders} senders signed in and funded, one live stream ...`)
    const population = await setUp(server.url, secret, options, runId)
    const shapes = shapesFor(population, runId)
    const tallies = new Map<ShapeName, Tally>(SHAPE_NAMES.map((name) => [name, newTally()]))
    const counter = { n: 0 }
    const results: ShapeResult[] = []
    for (const name of options.shapes) {
      log(options, `${name}: ${options.warmupSeconds} s warm-up, ${options.seconds} s ...`)
      const result = await runShape(shapes[name], {
        server,
        options,
        monitor,
        admin,
        database: scratch.name,
        counter,
        tally: tallies.get(name) as Tally,
      })
      results.push(result)
      log(
        options,
        `  ${fmt(result.requestsPerSecond)} req/s, p50 ${fmt(result.p50Ms, 1)} ms, p99 ${fmt(result.p99Ms, 1)} ms, server CPU ${fmt(result.serverCpu)}%`,
      )
    }
    const giftTally = tallies.get('gift') as Tally
    // The server may still be committing the gifts of connections cut at the end of a run.
    await new Promise((resolve) => setTimeout(resolve, 2000))
    const { checks, giftsPerCommit } = await checkBooks(
      scratch.url,
      population,
      giftTally,
      giftTally.built - giftTally.responses,
    )
    const serverLogSummary = server.logSummary()
    const serverLogLines = server.logLineCount()
    // The server writes its CPU profile as it exits.
    await server.stop()
    const profiles: { shape: ShapeName; summary: ProfileSummary }[] = []
    const profile = options.cpuProfileDir ? newestProfile(options.cpuProfileDir) : undefined
    if (profile) {
      for (const name of new Set(results.map((r) => r.name))) {
        const windows = results.filter((r) => r.name === name).map((r) => r.window)
        profiles.push({ shape: name, summary: summarizeProfile(profile, { windows }) })
      }
    }
    report(options, machine, {
      results,
      checks,
      giftsPerCommit,
      poolMax: options.poolMax === undefined ? '10 (default)' : String(options.poolMax),
      serverNodeOptions,
      serverLogLines,
      serverLogSummary,
      othersAtStart,
      code: codeVersion(),
      profiles,
    })
    process.exitCode = checks.every((c) => c.ok) ? 0 : 1
  } finally {
    await server?.stop()
    await admin.end({ timeout: 5 })
    await scratch.drop()
    await monitor.stop()
  }
}

await main()
