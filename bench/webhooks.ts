import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import postgres from 'postgres'
import { signToken } from '../src/auth/tokens.js'
import { type FakeStripe, type StripeEvent, startFakeStripe } from '../test/fakes/stripe.js'
import { CATALOG } from '../test/support/operations.js'
import { type LoopResult, type PreparedPost, postAll } from './support/post-loop.js'
import { createScratchDatabase, ledgerIntegrityCheck, machineFacts } from './support/scratch.js'
import {
  benchServerEnv,
  builtServerArgs,
  cpuByCommand,
  cpuDelta,
  freePort,
  otherBenchmarksRunning,
  processCpuSeconds,
  type ServerProcess,
  startServerProcess,
} from './support/server-process.js'
import { fmt, summarize } from './support/stats.js'

// Stripe webhooks on PostgreSQL: the real server (src/main.ts) in a child
// process, the fake Stripe and the load generator in this one. N recharges
// are created through the API and paid in the fake; then every
// payment_intent.succeeded event is POSTed twice (2N signed deliveries, in a
// shuffled order) by a closed loop of C keep-alive connections, each POST's
// acknowledgement latency measured. The inbox credits the payments after the
// acknowledgement; SQL is polled until every payment is credited. Baseline in
// the same run, against the same server: the same number of POSTs with a
// forged signature (verified and refused with 400, nothing stored).
// Afterwards: exactly-once crediting and the ledger's integrity.
//
//   npm run bench:webhooks -- [--payments 5000] [--connections 32] [--wait-quiet 600] [--json]

const TARGET_ACK_P99_MS = 50
const TARGET_CREDITS_PER_SECOND = 500
const HOST = '127.0.0.1'
const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url))
const WEBHOOK_SECRET = `whsec_bench_${randomBytes(12).toString('hex')}`
const SETUP_PARALLEL = 16
const CREDIT_POLL_MS = 25
const CREDIT_TIMEOUT_MS = 10 * 60 * 1000
const QUIET_POLL_MS = 30_000
const WARMUP_POSTS = 500

const CREATE = `mutation CreateRecharge($packageId: ID!, $provider: PaymentProvider!, $idempotencyKey: String!) {
  createRecharge(input: { packageId: $packageId, provider: $provider, idempotencyKey: $idempotencyKey }) {
    recharge { id }
    checkout { providerReference }
    userErrors { code message }
  }
}`

interface Options {
  payments: number
  connections: number
  waitQuietSeconds: number
  json: boolean
}

function parseOptions(argv: string[]): Options {
  // Not strict: `npm run bench` may pass other benchmarks' options too.
  const { values } = parseArgs({
    args: argv,
    options: {
      payments: { type: 'string', default: '5000' },
      connections: { type: 'string', default: '32' },
      'wait-quiet': { type: 'string', default: '600' },
      json: { type: 'boolean', default: false },
    },
    strict: false,
  })
  const int = (value: unknown, name: string, min: number): number => {
    const n = Number(value)
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be a whole number >= ${min}`)
    return n
  }
  return {
    payments: int(values.payments, 'payments', 1),
    connections: int(values.connections, 'connections', 1),
    waitQuietSeconds: int(values['wait-quiet'], 'wait-quiet', 0),
    json: values.json === true,
  }
}

const log = (options: Options, line: string) => {
  if (!options.json) console.log(line)
  else console.error(line)
}

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

async function graphql(
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
  const body = (await response.json()) as { data?: Record<string, any>; errors?: unknown[] }
  if (!response.ok || body.errors || !body.data)
    throw new Error(`setup: ${query.slice(0, 50)}…: HTTP ${response.status} ${JSON.stringify(body.errors)}`)
  return body.data
}

/** Waits while other benchmarks or test runs are on this machine; returns what was seen last. */
async function waitQuiet(options: Options): Promise<{ waitedSeconds: number; stillRunning: string[] }> {
  const started = Date.now()
  for (;;) {
    const others = otherBenchmarksRunning().filter((line) => !/\bgrep\b|pgrep/.test(line))
    const waited = (Date.now() - started) / 1000
    if (others.length === 0 || waited >= options.waitQuietSeconds)
      return { waitedSeconds: Math.round(waited), stillRunning: others }
    log(options, `waiting: another benchmark or test run is on this machine:\n  ${others.join('\n  ')}`)
    await new Promise((resolve) => setTimeout(resolve, QUIET_POLL_MS))
  }
}

/** Deterministic shuffle (xorshift), so that runs are comparable. */
function shuffle<T>(items: T[], seed = 0x9e3779b9): T[] {
  let s = seed >>> 0
  const rand = () => {
    s ^= s << 13
    s >>>= 0
    s ^= s >>> 17
    s ^= s << 5
    s >>>= 0
    return s / 2 ** 32
  }
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1))
    ;[items[i], items[j]] = [items[j] as T, items[i] as T]
  }
  return items
}

interface PhaseFigures {
  requests: number
  perSecond: number
  p50Ms: number
  p99Ms: number
  maxMs: number
  statuses: Record<string, number>
  cpu: { serverPercentOfCore: number; postgresPercentOfCore: number; benchPercentOfCore: number }
}

function statusesOf(result: LoopResult): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const a of result.answers) counts[a.status] = (counts[a.status] ?? 0) + 1
  return counts
}

async function measured(
  server: ServerProcess,
  run: () => Promise<LoopResult>,
): Promise<{ result: LoopResult; figures: PhaseFigures }> {
  const serverBefore = processCpuSeconds(server.pid)
  const pgBefore = cpuByCommand('postgres')
  const benchBefore = process.cpuUsage()
  const result = await run()
  const seconds = result.elapsedMs / 1000
  const bench = process.cpuUsage(benchBefore)
  const stats = summarize(result.answers.map((a) => a.latencyMs))
  return {
    result,
    figures: {
      requests: result.answers.length,
      perSecond: result.answers.length / seconds,
      p50Ms: stats.p50Ms,
      p99Ms: stats.p99Ms,
      maxMs: stats.maxMs,
      statuses: statusesOf(result),
      cpu: {
        serverPercentOfCore: ((processCpuSeconds(server.pid) - serverBefore) / seconds) * 100,
        postgresPercentOfCore: (cpuDelta(pgBefore, cpuByCommand('postgres')) / seconds) * 100,
        benchPercentOfCore: ((bench.user + bench.system) / 1e6 / seconds) * 100,
      },
    },
  }
}

async function main(): Promise<number> {
  const options = parseOptions(process.argv.slice(2))
  const n = options.payments
  const quiet = await waitQuiet(options)
  if (quiet.stillRunning.length > 0)
    log(options, `WARNING: measuring while others run:\n  ${quiet.stillRunning.join('\n  ')}`)
  const machine = await machineFacts()
  log(
    options,
    `machine: ${machine.cpus} CPUs, ${machine.memoryGiB} GiB, Node ${machine.node}, PostgreSQL ${machine.postgresVersion} (fsync ${machine.fsync}, synchronous_commit ${machine.synchronousCommit}, shared_buffers ${machine.sharedBuffers}), ${machine.dateUtc}`,
  )

  const scratch = await createScratchDatabase('gl_bench_wh')
  let fake: FakeStripe | undefined
  let server: ServerProcess | undefined
  let sqlc: postgres.Sql | undefined
  const failures: string[] = []
  const check = (name: string, ok: boolean, detail: string) => {
    log(options, `  ${ok ? 'ok  ' : 'FAIL'} ${name}: ${detail}`)
    if (!ok) failures.push(name)
  }
  try {
    fake = await startFakeStripe({ webhookSecret: WEBHOOK_SECRET })
    const secret = randomBytes(32).toString('hex')
    const port = await freePort(HOST)
    const env = benchServerEnv({
      host: HOST,
      port,
      databaseUrl: scratch.url,
      jwtSecret: secret,
      extra: {
        STRIPE_SECRET_KEY: fake.secretKey,
        STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
        STRIPE_API_BASE: fake.url,
      },
    })
    log(options, `server: ${scratch.name} on ${HOST}:${port}, fake Stripe on ${fake.url} ...`)
    server = await startServerProcess({
      args: builtServerArgs(REPO_ROOT),
      cwd: REPO_ROOT,
      env,
      host: HOST,
      port,
    })
    sqlc = postgres(scratch.url, { max: 1, onnotice: () => {} })

    // ---- setup: N buyers, one Stripe recharge each, paid in the fake ----------
    const setupStarted = performance.now()
    const key = new TextEncoder().encode(secret)
    const runId = randomBytes(4).toString('hex')
    const tokenOf = async (i: number) =>
      `Bearer ${await signToken(key, { sub: `bench|${runId}|buyer${i}`, preferred_username: `buyer${i}`, name: `buyer${i}`, roles: [] }, { expiresIn: '6h' })}`
    const catalog = await graphql(server.url, await tokenOf(-1), CATALOG, { currency: 'USD' })
    const packages = catalog.coinPackages as { id: string }[]
    if (packages.length === 0) throw new Error('setup: no coin packages in USD')
    const intents: string[] = new Array(n)
    await eachLimited(
      Array.from({ length: n }, (_, i) => i),
      SETUP_PARALLEL,
      async (i) => {
        const data = await graphql(server?.url as string, await tokenOf(i), CREATE, {
          packageId: (packages[i % packages.length] as { id: string }).id,
          provider: 'STRIPE',
          idempotencyKey: `bench-wh-${runId}-${i}`,
        })
        const created = data.createRecharge
        if (created.userErrors.length > 0 || !created.checkout?.providerReference)
          throw new Error(`setup: createRecharge: ${JSON.stringify(created)}`)
        intents[i] = created.checkout.providerReference as string
      },
    )
    const events: StripeEvent[] = intents.map((pi) => {
      const found = fake?.succeed(pi).events.find((e) => e.type === 'payment_intent.succeeded')
      if (!found) throw new Error(`setup: no payment_intent.succeeded for ${pi}`)
      return found
    })
    const setupSeconds = (performance.now() - setupStarted) / 1000
    log(options, `setup: ${n} buyers, ${n} Stripe recharges created and paid in ${fmt(setupSeconds, 1)} s`)

    const toPost = (event: StripeEvent, forged: boolean): PreparedPost => {
      const signed = (fake as FakeStripe).sign(event, forged ? { signature: 'forged' } : {})
      return { path: '/webhooks/stripe', body: signed.body, headers: signed.headers }
    }

    // ---- warm-up and baseline: forged signatures (verify, 400, nothing stored) -----
    await postAll(
      server.url,
      events.slice(0, WARMUP_POSTS).map((e) => toPost(e, true)),
      options.connections,
    )
    const forged = shuffle([...events, ...events].map((e) => toPost(e, true)))
    log(
      options,
      `baseline: ${forged.length} POSTs with a forged signature, ${options.connections} connections ...`,
    )
    const baseline = await measured(server, () => postAll(server?.url as string, forged, options.connections))
    const [stored] = await sqlc<{ rows: number }[]>`select count(*)::int as rows from webhook_events`
    const storedByBaseline = stored?.rows ?? -1

    // ---- the measured phase: every event twice, signed -------------------------
    const realEvents = shuffle([...events, ...events])
    const signedPosts = realEvents.map((e) => toPost(e, false))
    log(
      options,
      `webhooks: ${signedPosts.length} signed POSTs (${n} events × 2), ${options.connections} connections ...`,
    )
    const creditsBefore = cpuByCommand('postgres')
    const serverCpuBefore = processCpuSeconds(server.pid)
    const phaseStarted = performance.now()
    // The credit poller runs while the POSTs go out: credited-over-time.
    let creditedAt: number | undefined
    let creditsAtAckEnd = 0
    let lastCredits = 0
    let postingDone = false
    const poll = (async () => {
      const deadline = performance.now() + CREDIT_TIMEOUT_MS
      while (performance.now() < deadline) {
        const [row] = await (sqlc as postgres.Sql)<{ credits: number; pending: number }[]>`
          select (select count(*)::int from ledger_transactions where idempotency_key like 'recharge:%:credit') as credits,
                 (select count(*)::int from webhook_events where status = 'pending') as pending`
        lastCredits = row?.credits ?? 0
        if (postingDone && lastCredits >= n && row?.pending === 0) {
          creditedAt = performance.now()
          return
        }
        await new Promise((resolve) => setTimeout(resolve, CREDIT_POLL_MS))
      }
    })()
    const real = await measured(server, () =>
      postAll(server?.url as string, signedPosts, options.connections),
    )
    postingDone = true
    creditsAtAckEnd = lastCredits
    await poll
    const firstPost = real.result.startedAt
    const creditSeconds = creditedAt === undefined ? Number.NaN : (creditedAt - firstPost) / 1000
    const serverCpuSeconds = processCpuSeconds(server.pid) - serverCpuBefore
    const pgCpuSeconds = cpuDelta(creditsBefore, cpuByCommand('postgres'))
    const wholeSeconds = (performance.now() - phaseStarted) / 1000
    const creditedPerSecond = n / creditSeconds

    const ratioRate = real.figures.perSecond / baseline.figures.perSecond
    const ratioP99 = real.figures.p99Ms / baseline.figures.p99Ms
    const line = (name: string, f: PhaseFigures) =>
      `  ${name}: ${fmt(f.perSecond)} acks/s, p50 ${fmt(f.p50Ms, 1)} ms, p99 ${fmt(f.p99Ms, 1)} ms, max ${fmt(f.maxMs, 1)} ms; statuses ${JSON.stringify(f.statuses)}; CPU (% of a core) server ${fmt(f.cpu.serverPercentOfCore)}, PostgreSQL ${fmt(f.cpu.postgresPercentOfCore)}, bench+fake ${fmt(f.cpu.benchPercentOfCore)}`
    log(options, '')
    log(options, 'results')
    log(options, line('baseline, forged signature (400)', baseline.figures))
    log(options, line('signed, stored (200)          ', real.figures))
    log(
      options,
      `  ratio signed/baseline: throughput ${fmt(ratioRate, 2)}, p99 ${fmt(ratioP99, 2)}×; ${creditsAtAckEnd} of ${n} payments credited when the last POST was acknowledged (${fmt(real.result.elapsedMs / 1000, 2)} s)`,
    )
    log(
      options,
      `  credited: ${n} payments in ${fmt(creditSeconds, 2)} s from the first POST = ${fmt(creditedPerSecond)} credited payments/s; server CPU ${fmt((serverCpuSeconds / wholeSeconds) * 100)}% of a core, PostgreSQL ${fmt((pgCpuSeconds / wholeSeconds) * 100)}% over ${fmt(wholeSeconds, 2)} s`,
    )
    const ackOk = real.figures.p99Ms <= TARGET_ACK_P99_MS
    const creditOk = creditedPerSecond >= TARGET_CREDITS_PER_SECOND
    log(
      options,
      `  target ack p99 <= ${TARGET_ACK_P99_MS} ms: ${ackOk ? 'PASS' : 'FAIL'} (${fmt(real.figures.p99Ms, 1)} ms)`,
    )
    log(
      options,
      `  target >= ${TARGET_CREDITS_PER_SECOND} credited payments/s: ${creditOk ? 'PASS' : 'FAIL'} (${fmt(creditedPerSecond)})`,
    )

    // ---- checks -----------------------------------------------------------------
    log(options, '')
    log(options, 'checks')
    const okAnswers = real.result.answers.filter((a) => a.status === 200)
    check(
      'every signed POST acknowledged 200',
      okAnswers.length === 2 * n,
      JSON.stringify(real.figures.statuses),
    )
    const duplicates = okAnswers.filter((a) => a.body.includes('"duplicate":true')).length
    check(
      'exactly one of the two deliveries of each event stored',
      duplicates === n,
      `${duplicates} duplicates of ${2 * n}`,
    )
    check(
      'every forged POST refused 400, nothing stored',
      baseline.figures.statuses['400'] === 2 * n && storedByBaseline === 0,
      `${JSON.stringify(baseline.figures.statuses)}, ${storedByBaseline} rows stored`,
    )
    check('every payment credited in time', creditedAt !== undefined, `${lastCredits} of ${n} credits seen`)
    const [db] = await sqlc<
      {
        credits: number
        distinct_credits: number
        events: number
        processed: number
        parked: number
        pending: number
        succeeded: number
        wallets_right: number
        wallets_wrong: number
      }[]
    >`
      select
        (select count(*)::int from ledger_transactions where idempotency_key like 'recharge:%:credit') as credits,
        (select count(distinct idempotency_key)::int from ledger_transactions where idempotency_key like 'recharge:%:credit') as distinct_credits,
        (select count(*)::int from webhook_events) as events,
        (select count(*)::int from webhook_events where status = 'processed') as processed,
        (select count(*)::int from webhook_events where status = 'parked') as parked,
        (select count(*)::int from webhook_events where status = 'pending') as pending,
        (select count(*)::int from recharge_orders where status = 'succeeded' and credit_transaction_id is not null) as succeeded,
        (select count(*)::int from (
            select o.user_id, sum(o.coins + o.bonus_coins) as coins from recharge_orders o group by o.user_id) x
          join ledger_accounts a on a.code = 'user:' || x.user_id || ':wallet' where a.balance = x.coins) as wallets_right,
        (select count(*)::int from (
            select o.user_id, sum(o.coins + o.bonus_coins) as coins from recharge_orders o group by o.user_id) x
          left join ledger_accounts a on a.code = 'user:' || x.user_id || ':wallet'
          where a.balance is distinct from x.coins) as wallets_wrong`
    if (!db) throw new Error('checks: no row')
    check(
      'exactly N credits',
      db.credits === n && db.distinct_credits === n,
      `${db.credits} credit transactions (${db.distinct_credits} keys) for ${n} payments`,
    )
    check(
      'N webhook_events rows, all processed',
      db.events === n && db.processed === n,
      `${db.events} rows, ${db.processed} processed, ${db.pending} pending`,
    )
    check('no parked events', db.parked === 0, `${db.parked} parked`)
    check('N orders succeeded', db.succeeded === n, `${db.succeeded} of ${n}`)
    check(
      'every wallet equals its package coins',
      db.wallets_right === n && db.wallets_wrong === 0,
      `${db.wallets_right} right, ${db.wallets_wrong} wrong`,
    )
    // How the inbox worked: events processed one after another (gaps between
    // processed_at), and how long an event waited in the inbox.
    const [inbox] = await sqlc<{ gap_p50: number; gap_p90: number; wait_p50: number; wait_max: number }[]>`
      with t as (
        select processed_at, received_at,
               extract(epoch from processed_at - lag(processed_at) over (order by processed_at)) * 1000 as gap
          from webhook_events where processed_at is not null)
      select percentile_cont(0.5) within group (order by gap)::float8 as gap_p50,
             percentile_cont(0.9) within group (order by gap)::float8 as gap_p90,
             (percentile_cont(0.5) within group (order by extract(epoch from processed_at - received_at)))::float8 * 1000 as wait_p50,
             max(extract(epoch from processed_at - received_at))::float8 * 1000 as wait_max
        from t`
    log(
      options,
      `  inbox: one event processed every ${fmt(inbox?.gap_p50 ?? Number.NaN, 1)} ms (p50; p90 ${fmt(inbox?.gap_p90 ?? Number.NaN, 1)} ms) = ${fmt(1000 / (inbox?.gap_p50 ?? Number.NaN))} events/s; time in the inbox p50 ${fmt((inbox?.wait_p50 ?? Number.NaN) / 1000, 1)} s, max ${fmt((inbox?.wait_max ?? Number.NaN) / 1000, 1)} s`,
    )
    const integrity = await ledgerIntegrityCheck(scratch.url)
    check('ledger integrity (checkIntegrity)', integrity.ok, integrity.detail)
    const summary = [...server.logSummary()].filter(([line]) => !line.includes('webhook refused'))
    log(
      options,
      `  server log lines other than the ${fmt(baseline.figures.requests + WARMUP_POSTS)} expected "webhook refused": ${summary.length === 0 ? 'none' : summary.map(([l, c]) => `${c}× ${l}`).join('; ')}`,
    )
    const quietAfter = otherBenchmarksRunning().filter((line) => !/\bgrep\b|pgrep/.test(line))
    if (quietAfter.length > 0)
      log(options, `  WARNING: others running at the end:\n    ${quietAfter.join('\n    ')}`)

    if (options.json) {
      console.log(
        JSON.stringify({
          machine,
          options,
          quiet,
          baseline: baseline.figures,
          signed: real.figures,
          ratio: { throughput: ratioRate, p99: ratioP99 },
          credit: { seconds: creditSeconds, perSecond: creditedPerSecond, atAckEnd: creditsAtAckEnd },
          inbox,
          targets: { ackP99: ackOk, creditsPerSecond: creditOk },
          failures,
        }),
      )
    }
    log(options, '')
    log(options, failures.length === 0 ? 'checks: all passed' : `checks FAILED: ${failures.join(', ')}`)
    return failures.length === 0 ? 0 : 1
  } finally {
    await sqlc?.end({ timeout: 5 })
    await server?.stop()
    await fake?.stop()
    await scratch.drop()
  }
}

main().then(
  (code) => process.exit(code),
  (error) => {
    console.error(error)
    process.exit(2)
  },
)
