import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import http from 'node:http'
import os from 'node:os'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import postgres from 'postgres'
import { checkLedgerIntegrity } from '../src/audit/integrity.js'
import { signToken } from '../src/auth/tokens.js'
import { type DatabaseConfig, openDatabase } from '../src/db/client.js'
import { migrateDatabase } from '../src/db/migrate.js'
import { ACCOUNT_STATEMENT, TRIAL_BALANCE } from '../test/support/operations.js'
import { type Interference, InterferenceMonitor } from './support/interference.js'
import { createScratchDatabase, type MachineFacts, machineFacts } from './support/scratch.js'
import {
  benchServerEnv,
  builtServerArgs,
  freePort,
  otherBenchmarksRunning,
  processCpuSeconds,
  type ServerProcess,
  startServerProcess,
} from './support/server-process.js'
import { fmt, summarize } from './support/stats.js'

// The accountants' side on a ledger of a million transactions, on PostgreSQL.
//
// 1. A fresh database, migrated, bulk-loaded through the engine's own tables
//    (ledger_accounts, ledger_transactions, ledger_entries) with set-based SQL:
//    gift-shaped transactions (wallet debit, creator earnings credit, platform
//    commission credit) among thousands of users and hundreds of creators,
//    recharges (coin side and money side) funding the wallets first, a few
//    reversals, posted over weeks. The guard triggers are off for the load
//    (session_replication_role = replica, as the superuser): each entry's
//    account_seq and balance_after come from window functions, the accounts'
//    cached balance, totals and last_seq from the entries afterwards. Then
//    VACUUM ANALYZE (this server runs no autovacuum) and the verification: the
//    auditor's own integrity check must find nothing, or the bench fails.
// 2. The real server (src/main.ts) in a child process on that database, with
//    a short seal interval: the time until the whole journal is sealed.
// 3. Over HTTP, as an accountant: trialBalance now and as of the middle of
//    the history, a statement page deep in the busiest accounts
//    (AccountStatement), ledgerIntegrity, and GET /exports/journal.csv (and
//    .jsonl) of every entry with the server's resident memory sampled every
//    50 ms while it streams.
//
// Each figure is printed against its target (met / NOT met) with how quiet
// the machine was while it was measured. The bench exits non-zero when a
// check fails (the load broke an invariant, an answer is wrong, the export
// misses rows), not when a target is missed.
//
//   npm run bench:audit -- [--transactions 1000000] [--users 5000] [--creators 300] [--days 42]
//     [--runs 5] [--integrity-runs 3] [--export-runs 2] [--seal-interval-ms 500] [--skip-jsonl] [--keep-database] [--json]

const HOST = '127.0.0.1'
const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url))

const TARGET_TRIAL_BALANCE_NOW_MS = 500
const TARGET_TRIAL_BALANCE_PAST_MS = 2_000
const TARGET_STATEMENT_PAGE_MS = 50
const TARGET_INTEGRITY_MS = 60_000
const TARGET_EXPORT_RSS_MB = 200

/** Transactions per block: a recharge, then gifts from the same wallet that it covers. */
const BLOCK = 10
const GIFTS_PER_BLOCK = BLOCK - 1
/** One block in this many ends with a reversal of its last gift instead of a gift. */
const REVERSAL_EVERY_BLOCKS = 50
/** The busiest creator's share of gifts, in percent; the rest are spread evenly. */
const BUSIEST_CREATOR_PERCENT = 15
const STATEMENT_PAGE = 50
const RSS_SAMPLE_MS = 50
const SEAL_POLL_MS = 100
const SEAL_TIMEOUT_MS = 15 * 60 * 1000
/** Short figures run for at least this long, so that the interference monitor has samples. */
const FAST_FIGURE_MIN_MS = 2_000
const RUNS_MAX = 200

/** Above these, something else ran on the machine while a figure was measured. */
const QUIET_OTHER_CPU_PERCENT_MAX = 5
const QUIET_OTHER_SESSIONS_MAX = 0.1

const INTEGRITY = `query Integrity {
  ledgerIntegrity {
    ok
    checkedTransactions
    checkedAccounts
    checkedSeals
    sealedThroughTransactionId
    problems { kind message transactionId accountId }
  }
}`

interface Options {
  transactions: number
  users: number
  creators: number
  days: number
  runs: number
  integrityRuns: number
  exportRuns: number
  sealIntervalMs: number
  jsonl: boolean
  keepDatabase: boolean
  json: boolean
}

function parseOptions(argv: string[]): Options {
  // Not strict: `npm run bench` passes every benchmark the same arguments.
  const { values } = parseArgs({
    args: argv,
    options: {
      transactions: { type: 'string', default: '1000000' },
      users: { type: 'string', default: '5000' },
      creators: { type: 'string', default: '300' },
      days: { type: 'string', default: '42' },
      runs: { type: 'string', default: '5' },
      'integrity-runs': { type: 'string', default: '3' },
      'export-runs': { type: 'string', default: '2' },
      'seal-interval-ms': { type: 'string', default: '500' },
      'skip-jsonl': { type: 'boolean', default: false },
      'keep-database': { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
    },
    strict: false,
  })
  const int = (name: keyof typeof values, min: number): number => {
    const n = Number(values[name])
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be a whole number >= ${min}`)
    return n
  }
  return {
    transactions: int('transactions', BLOCK),
    users: int('users', 1),
    creators: int('creators', 2),
    days: int('days', 1),
    runs: int('runs', 1),
    integrityRuns: int('integrity-runs', 1),
    exportRuns: int('export-runs', 1),
    sealIntervalMs: int('seal-interval-ms', 100),
    jsonl: values['skip-jsonl'] !== true,
    keepDatabase: values['keep-database'] === true,
    json: values.json === true,
  }
}

let jsonMode = false
/** With --json, stdout carries only the JSON document. */
const log = (line: string) => (jsonMode ? console.error(line) : console.log(line))

const quiet = (i: Interference) =>
  !(i.otherCpuPercent > QUIET_OTHER_CPU_PERCENT_MAX || i.otherActiveSessions > QUIET_OTHER_SESSIONS_MAX)
const others = (i: Interference) => `${fmt(i.otherCpuPercent)}% / ${fmt(i.otherActiveSessions, 1)}`
const seconds = (ms: number) => `${fmt(ms / 1000, 1)} s`

// ---- the bulk load ----------------------------------------------------------------------

interface LoadResult {
  steps: [string, number][]
  loadMs: number
  vacuumAnalyzeMs: number
  transactions: number
  entries: number
  accounts: number
  /** The first and last posting times, and the middle of the history. */
  firstPostedAt: string
  lastPostedAt: string
  middle: Date
  databaseBytes: number
  tableBytes: Record<string, number>
  /** The secondary indexes dropped for the load are back, with the same definitions. */
  indexesRebuilt: boolean
  indexNames: string[]
}

/**
 * The load, in one database transaction as the superuser with the guard
 * triggers off. Every block of BLOCK transactions is one wallet's recharge
 * followed by gifts from that wallet which it covers (each gift at most a
 * ninth of the recharge), so that no wallet is ever negative; every
 * REVERSAL_EVERY_BLOCKS-th block ends with the reversal of its last gift.
 * Ids follow posting time, as the engine assigns them.
 */
async function bulkLoad(url: string, options: Options): Promise<LoadResult> {
  const client = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 10 })
  const steps: [string, number][] = []
  const n = options.transactions
  const blocks = Math.ceil(n / BLOCK)
  const spanUs = BigInt(options.days) * 86_400_000_000n
  const stepUs = spanUs / BigInt(n)
  let secondaryIndexes: { name: string; definition: string }[] = []
  try {
    const started = performance.now()
    await client.begin(async (tx) => {
      const step = async (name: string, text: string) => {
        const at = performance.now()
        await tx.unsafe(text)
        steps.push([name, performance.now() - at])
      }
      // Triggers (the guards, the foreign key of reverses_id) do not fire for a
      // replica session; CHECK and UNIQUE constraints still hold.
      await tx.unsafe(`set local session_replication_role = replica;
        set local work_mem = '512MB'; set local jit = off; set local statement_timeout = 0;
        select setseed(0.4242)`)
      // As PostgreSQL's "Populating a Database" advises: the journal's secondary
      // indexes are dropped for the load and built again after it from their own
      // definitions (one sort each instead of millions of scattered inserts).
      // Primary keys stay; the unique indexes check their keys as they are built.
      secondaryIndexes = await tx<{ name: string; definition: string }[]>`
        select i.indexname as name, i.indexdef as definition from pg_indexes i
         where i.schemaname = 'public' and i.tablename in ('ledger_transactions', 'ledger_entries')
           and not exists (select 1 from pg_constraint c where c.conname = i.indexname)
         order by i.indexname`
      await step('drop secondary indexes', secondaryIndexes.map((i) => `drop index ${i.name};`).join('\n'))
      await step(
        'users and accounts',
        `create temp table bench_people on commit drop as
           select g as idx, gen_random_uuid() as owner, g >= ${options.users} as creator
             from generate_series(0, ${options.users + options.creators - 1}) g;
         insert into users (id, subject, handle, display_name, roles)
           select owner, 'bench|' || owner, case when creator then 'creator' else 'fan' end || idx,
                  case when creator then 'Creator ' else 'Fan ' end || idx,
                  case when creator then '{creator}'::text[] else '{}'::text[] end
             from bench_people;
         insert into ledger_accounts (code, name, type, unit, owner_id, allow_negative)
           select 'user:' || owner || case when creator then ':earnings' else ':wallet' end,
                  case when creator then 'Creator earnings' else 'Coin wallet' end,
                  'liability', 'COIN', owner, false
             from bench_people order by idx;
         create temp table bench_wallets on commit drop as
           select p.idx, p.owner, a.id as account_id from bench_people p
             join ledger_accounts a on a.code = 'user:' || p.owner || ':wallet' where not p.creator;
         create temp table bench_creators on commit drop as
           select p.idx - ${options.users} as idx, p.owner, a.id as account_id from bench_people p
             join ledger_accounts a on a.code = 'user:' || p.owner || ':earnings' where p.creator;
         create unique index on bench_wallets (idx);
         create unique index on bench_creators (idx);`,
      )
      await step(
        'staging',
        `create temp table bench_blocks on commit drop as
           select b, b % ${options.users} as wallet_idx,
                  floor(random() * 4)::int + 1 as package,
                  case when random() < 0.75 then 'USD' else 'EUR' end as currency,
                  case when random() < 0.8 then 'stripe' else 'paypal' end as provider
             from generate_series(0, ${blocks - 1}) b;
         create temp table bench_draw on commit drop as
           select i as id, (i - 1) / ${BLOCK} as b, (i - 1) % ${BLOCK} as pos,
                  case when random() * 100 < ${BUSIEST_CREATOR_PERCENT} then 0
                       else 1 + floor(random() * ${options.creators - 1})::int end as creator_idx,
                  (array[5, 10, 25, 100, 500])[1 + floor(random() * 5)::int] as wish
             from generate_series(1::bigint, ${n}) i;
         create temp table bench_tx on commit drop as
           with drawn as (
             select d.id, d.b, d.pos,
                    case when d.pos = 0 then 'recharge'
                         when d.pos = ${BLOCK - 1} and d.b % ${REVERSAL_EVERY_BLOCKS} = 3 then 'reversal'
                         else 'gift' end as kind,
                    (timestamptz '${new Date().toISOString()}' - interval '1 minute' - ${spanUs.toString()} * interval '1 microsecond')
                      + (d.id - 1) * ${stepUs.toString()} * interval '1 microsecond' as posted_at,
                    bl.currency, bl.provider,
                    (array[65, 330, 1321, 6607])[bl.package] as recharge_coins,
                    case bl.currency when 'USD' then (array[99, 499, 1999, 9999])[bl.package]
                                     else (array[89, 459, 1849, 9199])[bl.package] end as price_minor,
                    greatest(5, least((array[65, 330, 1321, 6607])[bl.package] / ${GIFTS_PER_BLOCK}, d.wish) / 5 * 5) as gift_coins,
                    w.owner as sender, w.account_id as wallet_id, c.owner as creator, c.account_id as earnings_id
               from bench_draw d
               join bench_blocks bl on bl.b = d.b
               join bench_wallets w on w.idx = bl.wallet_idx
               join bench_creators c on c.idx = d.creator_idx
           )
           select id, kind, posted_at, currency, provider, recharge_coins, price_minor, sender, wallet_id,
                  -- A reversal mirrors the gift right before it (same block, same wallet).
                  case when kind = 'reversal' then lag(gift_coins) over o else gift_coins end as gift_coins,
                  case when kind = 'reversal' then lag(creator) over o else creator end as creator,
                  case when kind = 'reversal' then lag(earnings_id) over o else earnings_id end as earnings_id,
                  case when kind = 'reversal' then id - 1 end as reverses_id
             from drawn window o as (order by id);`,
      )
      await step(
        'ledger_transactions',
        `insert into ledger_transactions
           (id, idempotency_key, request_hash, kind, description, metadata, reverses_id, posted_at)
         overriding system value
         select id, key, encode(sha256(convert_to(key || '|' || kind, 'UTF8')), 'hex'), kind,
                case kind when 'recharge' then format('Recharge of %s coins', recharge_coins)
                          when 'gift' then format('Gift ×%s', gift_coins / 5)
                          else format('Reversal of transaction %s', reverses_id) end,
                case kind when 'recharge' then jsonb_build_object('provider', provider, 'userId', sender,
                                                                  'priceMinor', price_minor, 'currency', currency)
                          when 'gift' then jsonb_build_object('giftId', 'b0b5f1c1-0000-4000-8000-000000000005',
                                                              'quantity', gift_coins / 5, 'streamId', null,
                                                              'creatorId', creator, 'senderId', sender)
                          else '{}'::jsonb end,
                reverses_id, posted_at
           from (select t.*, case kind when 'recharge' then 'recharge:bench-' || id || ':credit'
                                       when 'gift' then 'gift:bench-' || id
                                       else 'reversal:bench-' || id end as key
                   from bench_tx t) t
          order by id;`,
      )
      await step(
        'ledger_entries',
        `create temp table bench_platform on commit drop as select code, id from ledger_accounts where code like 'platform:%';
         create temp table bench_entries on commit drop as
           select t.id as transaction_id, x.ord, x.account_id, x.direction::entry_direction as direction,
                  x.amount, x.unit, t.posted_at
             from bench_tx t
             join bench_platform issued on issued.code = 'platform:coins_issued'
             join bench_platform clearing on clearing.code = format('platform:%s_clearing:%s', t.provider, t.currency)
             join bench_platform deferred on deferred.code = 'platform:deferred_revenue:' || t.currency
             cross join lateral (values
               (1, issued.id, 'debit', t.recharge_coins::bigint, 'COIN'),
               (2, t.wallet_id, 'credit', t.recharge_coins::bigint, 'COIN'),
               (3, clearing.id, 'debit', t.price_minor::bigint, t.currency),
               (4, deferred.id, 'credit', t.price_minor::bigint, t.currency)) x(ord, account_id, direction, amount, unit)
            where t.kind = 'recharge'
           union all
           select t.id, x.ord, x.account_id, x.direction::entry_direction, x.amount, 'COIN', t.posted_at
             from bench_tx t
             join bench_platform commission on commission.code = 'platform:commission'
             -- A gift: wallet debit, creator credit (half, rounded down), platform credit (the rest); a reversal mirrors it.
             cross join lateral (values
               (1, t.wallet_id, case when t.kind = 'gift' then 'debit' else 'credit' end, t.gift_coins::bigint),
               (2, t.earnings_id, case when t.kind = 'gift' then 'credit' else 'debit' end, (t.gift_coins / 2)::bigint),
               (3, commission.id, case when t.kind = 'gift' then 'credit' else 'debit' end, (t.gift_coins - t.gift_coins / 2)::bigint))
               x(ord, account_id, direction, amount)
            where t.kind <> 'recharge';
         insert into ledger_entries
           (id, transaction_id, account_id, direction, amount, unit, account_seq, balance_after, posted_at)
         overriding system value
         select row_number() over (order by n.transaction_id, n.ord),
                n.transaction_id, n.account_id, n.direction, n.amount, n.unit,
                row_number() over w,
                sum(case when (a.type in ('asset', 'expense')) = (n.direction = 'debit') then n.amount else -n.amount end) over w,
                n.posted_at
           from bench_entries n join ledger_accounts a on a.id = n.account_id
         window w as (partition by n.account_id order by n.transaction_id, n.ord rows unbounded preceding)
          order by 1;`,
      )
      await step(
        'accounts from their entries',
        `update ledger_accounts a
            set debits_total = s.debits, credits_total = s.credits, last_seq = s.n,
                balance = case when a.type in ('asset', 'expense') then s.debits - s.credits else s.credits - s.debits end,
                updated_at = clock_timestamp()
           from (select account_id, count(*) as n,
                        coalesce(sum(amount) filter (where direction = 'debit'), 0) as debits,
                        coalesce(sum(amount) filter (where direction = 'credit'), 0) as credits
                   from ledger_entries group by account_id) s
          where a.id = s.account_id;
         select setval(pg_get_serial_sequence('ledger_transactions', 'id'), (select max(id) from ledger_transactions));
         select setval(pg_get_serial_sequence('ledger_entries', 'id'), (select max(id) from ledger_entries));`,
      )
      await tx.unsafe(`set local maintenance_work_mem = '512MB'`)
      await step('build secondary indexes', secondaryIndexes.map((i) => `${i.definition};`).join('\n'))
    })
    const loadMs = performance.now() - started
    const vacuumStarted = performance.now()
    await client.unsafe('vacuum (analyze) ledger_accounts, ledger_transactions, ledger_entries, users')
    const vacuumAnalyzeMs = performance.now() - vacuumStarted
    const [facts] = await client<
      {
        transactions: string
        entries: string
        accounts: string
        first: string
        last: string
        middle: Date
        db: string
        tx_bytes: string
        en_bytes: string
        ac_bytes: string
      }[]
    >`
      select (select count(*) from ledger_transactions)::text as transactions,
             (select count(*) from ledger_entries)::text as entries,
             (select count(*) from ledger_accounts)::text as accounts,
             (select min(posted_at) from ledger_transactions)::text as first,
             (select max(posted_at) from ledger_transactions)::text as last,
             (select min(posted_at) + (max(posted_at) - min(posted_at)) / 2 from ledger_transactions) as middle,
             pg_database_size(current_database())::text as db,
             pg_total_relation_size('ledger_transactions')::text as tx_bytes,
             pg_total_relation_size('ledger_entries')::text as en_bytes,
             pg_total_relation_size('ledger_accounts')::text as ac_bytes`
    const indexesAfter = await client<{ name: string; definition: string }[]>`
      select i.indexname as name, i.indexdef as definition from pg_indexes i
       where i.schemaname = 'public' and i.tablename in ('ledger_transactions', 'ledger_entries')
         and not exists (select 1 from pg_constraint c where c.conname = i.indexname)
       order by i.indexname`
    if (!facts) throw new Error('load: no facts')
    return {
      steps,
      loadMs,
      vacuumAnalyzeMs,
      transactions: Number(facts.transactions),
      entries: Number(facts.entries),
      accounts: Number(facts.accounts),
      firstPostedAt: facts.first,
      lastPostedAt: facts.last,
      middle: facts.middle,
      databaseBytes: Number(facts.db),
      indexesRebuilt:
        secondaryIndexes.length > 0 &&
        JSON.stringify(indexesAfter.map((i) => [i.name, i.definition])) ===
          JSON.stringify(secondaryIndexes.map((i) => [i.name, i.definition])),
      indexNames: secondaryIndexes.map((i) => i.name),
      tableBytes: {
        ledger_transactions: Number(facts.tx_bytes),
        ledger_entries: Number(facts.en_bytes),
        ledger_accounts: Number(facts.ac_bytes),
      },
    }
  } finally {
    await client.end({ timeout: 5 })
  }
}

// ---- over HTTP ------------------------------------------------------------------------------

interface GraphQLAnswer {
  data: Record<string, any>
  ms: number
  bytes: number
}

async function graphql(
  url: string,
  authorization: string,
  query: string,
  variables?: Record<string, unknown>,
): Promise<GraphQLAnswer> {
  const started = performance.now()
  const response = await fetch(`${url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json', authorization },
    body: JSON.stringify({ query, variables }),
  })
  const text = await response.text()
  const ms = performance.now() - started
  const body = JSON.parse(text) as { data?: Record<string, any>; errors?: unknown[] }
  if (!response.ok || body.errors || !body.data)
    throw new Error(`${query.slice(0, 40)}…: HTTP ${response.status} ${JSON.stringify(body.errors)}`)
  return { data: body.data, ms, bytes: Buffer.byteLength(text) }
}

/** VmRSS of a process in bytes (Linux); NaN when unreadable. */
function residentBytes(pid: number): number {
  try {
    const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return match ? Number(match[1]) * 1024 : Number.NaN
  } catch {
    return Number.NaN
  }
}

interface ExportResult {
  format: 'csv' | 'jsonl'
  status: number
  ms: number
  firstByteMs: number
  bytes: number
  /** Data lines (the CSV header not counted). */
  rows: number
  rssBeforeBytes: number
  rssPeakBytes: number
  rssSamples: number
  horizon: string | undefined
  interference: Interference
}

/** Streams the export, counting bytes and lines, while the server's VmRSS is sampled. */
function measureExport(
  server: ServerProcess,
  authorization: string,
  format: 'csv' | 'jsonl',
  open: () => () => Interference,
): Promise<ExportResult> {
  const url = new URL(`/exports/journal.${format}`, server.url)
  const rssBeforeBytes = residentBytes(server.pid)
  let rssPeakBytes = rssBeforeBytes
  let rssSamples = 0
  const sampler = setInterval(() => {
    const rss = residentBytes(server.pid)
    rssSamples++
    if (rss > rssPeakBytes) rssPeakBytes = rss
  }, RSS_SAMPLE_MS)
  const close = open()
  const started = performance.now()
  return new Promise<ExportResult>((resolve, reject) => {
    const req = http.get(url, { headers: { authorization } }, (res) => {
      const firstByteMs = performance.now() - started
      let bytes = 0
      let newlines = 0
      res.on('data', (chunk: Buffer) => {
        bytes += chunk.length
        for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) newlines++
      })
      res.on('end', () => {
        clearInterval(sampler)
        const rss = residentBytes(server.pid)
        if (rss > rssPeakBytes) rssPeakBytes = rss
        resolve({
          format,
          status: res.statusCode ?? 0,
          ms: performance.now() - started,
          firstByteMs,
          bytes,
          rows: format === 'csv' ? newlines - 1 : newlines,
          rssBeforeBytes,
          rssPeakBytes,
          rssSamples,
          horizon: res.headers['x-journal-horizon'] as string | undefined,
          interference: close(),
        })
      })
      res.on('error', (error) => {
        clearInterval(sampler)
        reject(error)
      })
    })
    req.on('error', (error) => {
      clearInterval(sampler)
      reject(error)
    })
  })
}

interface Figure {
  name: string
  runs: number[]
  /** Compared with the median. */
  targetMs?: number
  detail: string
  interference: Interference
}

/**
 * Opens a measuring window: what else ran on the machine until it is closed.
 * The monitor counts the CPU of every process but this one and PostgreSQL's;
 * the server is ours too, so its own CPU is taken out.
 */
function openWindow(monitor: InterferenceMonitor, serverPid?: number): () => Interference {
  const mark = monitor.mark()
  const startedAt = performance.now()
  const serverBefore = serverPid === undefined ? 0 : processCpuSeconds(serverPid)
  return () => {
    const interference = monitor.since(mark)
    if (serverPid === undefined) return interference
    const wallSeconds = (performance.now() - startedAt) / 1000
    const serverPercent =
      ((processCpuSeconds(serverPid) - serverBefore) / wallSeconds / os.availableParallelism()) * 100
    return { ...interference, otherCpuPercent: Math.max(0, interference.otherCpuPercent - serverPercent) }
  }
}

/** `runs` runs one after the other, more while under `minMs` (the monitor samples every 250 ms), at most RUNS_MAX. */
async function measureRuns(
  open: () => () => Interference,
  runs: number,
  minMs: number,
  once: () => Promise<number>,
): Promise<{ runs: number[]; interference: Interference }> {
  const close = open()
  const started = performance.now()
  const result: number[] = []
  while (result.length < runs || (performance.now() - started < minMs && result.length < RUNS_MAX))
    result.push(await once())
  return { runs: result, interference: close() }
}

interface Account {
  id: string
  code: string
  lastSeq: number
  type: string
}

/**
 * A statement page deep in an account: a cursor from the API (the first
 * entry at the middle of a two-week window), then pages of 50 after it, with
 * the window's bounds, as the AccountStatement operation asks them.
 */
async function measureStatement(
  server: ServerProcess,
  authorization: string,
  account: Account,
  middle: Date,
  options: Options,
  open: () => () => Interference,
  check: (name: string, ok: boolean, detail: string) => void,
): Promise<Figure> {
  const weekMs = 7 * 86_400_000
  const from = new Date(middle.getTime() - weekMs).toISOString()
  const to = new Date(middle.getTime() + weekMs).toISOString()
  const probe = await graphql(server.url, authorization, ACCOUNT_STATEMENT, {
    id: account.id,
    from: middle.toISOString(),
    to,
    first: 1,
  })
  const cursor = probe.data.ledgerAccount?.entries.edges[0]?.cursor as string | undefined
  if (!cursor) throw new Error(`statement: no entry of ${account.code} after ${middle.toISOString()}`)
  const variables = { id: account.id, from, to, first: STATEMENT_PAGE, after: cursor }
  let last: GraphQLAnswer | undefined
  await graphql(server.url, authorization, ACCOUNT_STATEMENT, variables) // warm-up
  const { runs, interference } = await measureRuns(open, options.runs, FAST_FIGURE_MIN_MS, async () => {
    last = await graphql(server.url, authorization, ACCOUNT_STATEMENT, variables)
    return last.ms
  })
  // The page continues the chain: 50 entries, each balance the one before it moved by its amount.
  const edges = (last?.data.ledgerAccount?.entries.edges ?? []) as {
    cursor: string
    node: { direction: string; amount: number; balanceAfter: number; transaction: { postedAt: string } }
  }[]
  const creditNormal = !['ASSET', 'EXPENSE'].includes(account.type)
  let chained = edges.length === STATEMENT_PAGE
  for (let i = 1; i < edges.length; i++) {
    const a = edges[i - 1]?.node
    const b = edges[i]?.node
    if (!a || !b) break
    const delta = (b.direction === 'CREDIT') === creditNormal ? b.amount : -b.amount
    if (a.balanceAfter + delta !== b.balanceAfter) chained = false
  }
  check(
    `statement page of ${account.code}: ${STATEMENT_PAGE} entries, balance-after chained`,
    chained,
    `${edges.length} entries after cursor ${cursor} (of ${fmt(account.lastSeq)})`,
  )
  return {
    name: `statement page (50) deep in ${account.code}`,
    runs,
    targetMs: TARGET_STATEMENT_PAGE_MS,
    detail: `after entry ${cursor} of ${fmt(account.lastSeq)}, window ${from.slice(0, 10)}..${to.slice(0, 10)}`,
    interference,
  }
}

// ---- the report ----------------------------------------------------------------------------

function figureRow(f: Figure): string {
  const s = summarize(f.runs)
  const met = f.targetMs === undefined ? '' : s.p50Ms <= f.targetMs ? 'met' : '**NOT met**'
  const target = f.targetMs === undefined ? '' : `≤ ${fmt(f.targetMs)} ms`
  return `| ${f.name} | ${fmt(s.p50Ms, 1)} | ${fmt(s.maxMs, 1)} | ${f.runs.length} | ${target} | ${met} | ${others(f.interference)}${quiet(f.interference) ? '' : ' (not clean)'} | ${f.detail} |`
}

/** The code measured: the commit, and whether the audit, ledger or database code has uncommitted edits. */
function engineVersion(): string {
  const git = (...args: string[]) => execFileSync('git', args, { cwd: REPO_ROOT, encoding: 'utf8' }).trim()
  try {
    const edited = git(
      'status',
      '--porcelain',
      '--',
      'src/audit',
      'src/ledger',
      'src/db',
      'src/http',
      'migrations',
    )
    return `git ${git('rev-parse', '--short', 'HEAD')}${edited ? ' + uncommitted edits in src/audit, src/ledger, src/db, src/http or migrations' : ''}`
  } catch {
    return 'unknown (no git)'
  }
}

const mb = (bytes: number) => fmt(bytes / 2 ** 20, 1)

async function main(): Promise<number> {
  const options = parseOptions(process.argv.slice(2))
  const benchStarted = performance.now()
  jsonMode = options.json
  const busy = otherBenchmarksRunning().filter((line) => !/\bgrep\b|pgrep/.test(line))
  if (busy.length > 0) log(`WARNING: other benchmarks or test runs on this machine:\n  ${busy.join('\n  ')}`)
  const machine: MachineFacts = await machineFacts()
  const engine = engineVersion()
  const monitor = new InterferenceMonitor()
  monitor.start()
  const scratch = await createScratchDatabase('gl_bench_audit')
  monitor.own(scratch.name)
  let server: ServerProcess | undefined
  let sqlc: postgres.Sql | undefined
  const failures: string[] = []
  const check = (name: string, ok: boolean, detail: string) => {
    log(`  ${ok ? 'ok  ' : 'FAIL'} ${name}: ${detail}`)
    if (!ok) failures.push(name)
  }
  try {
    // ---- 1. load and verify -------------------------------------------------------------
    const config: DatabaseConfig = { kind: 'postgres', url: scratch.url, poolMax: 2 }
    const migrating = await openDatabase(config)
    try {
      await migrateDatabase(config, migrating)
    } finally {
      await migrating.close()
    }
    log(
      `load: ${fmt(options.transactions)} transactions, ${fmt(options.users)} wallets, ${fmt(options.creators)} creators, over ${options.days} days into ${scratch.name} ...`,
    )
    const loadMark = monitor.mark()
    const load = await bulkLoad(scratch.url, options)
    const loadInterference = monitor.since(loadMark)
    for (const [name, ms] of load.steps) log(`  ${name}: ${seconds(ms)}`)
    log(
      `  loaded in ${seconds(load.loadMs)} (${fmt(load.transactions / (load.loadMs / 1000))} transactions/s), VACUUM ANALYZE ${seconds(load.vacuumAnalyzeMs)}; ${fmt(load.transactions)} transactions, ${fmt(load.entries)} entries, ${fmt(load.accounts)} accounts, database ${mb(load.databaseBytes)} MiB`,
    )
    sqlc = postgres(scratch.url, { max: 1, onnotice: () => {} })
    check(
      'load: every transaction and entry written',
      load.transactions === options.transactions,
      `${fmt(load.transactions)} transactions, ${fmt(load.entries)} entries`,
    )
    check(
      'load: the secondary indexes rebuilt as the migrations define them',
      load.indexesRebuilt,
      load.indexNames.join(', '),
    )
    const [negatives] = await sqlc<{ n: number }[]>`
      select count(*)::int as n from ledger_entries e join ledger_accounts a on a.id = e.account_id
       where not a.allow_negative and e.balance_after < 0`
    check('load: no user account ever below zero', negatives?.n === 0, `${negatives?.n} negative balances`)

    const verifyMark = monitor.mark()
    const verifyStarted = performance.now()
    const database = await openDatabase(config)
    let verification: Awaited<ReturnType<typeof checkLedgerIntegrity>>
    try {
      verification = await checkLedgerIntegrity(database.db)
    } finally {
      await database.close()
    }
    const verifyMs = performance.now() - verifyStarted
    const verifyInterference = monitor.since(verifyMark)
    check(
      'load verified: the integrity check (checkLedgerIntegrity, in process) finds no problem',
      verification.ok && verification.problems.length === 0,
      verification.ok
        ? `${fmt(verification.checkedTransactions)} transactions, ${fmt(verification.checkedAccounts)} accounts in ${seconds(verifyMs)}`
        : verification.problems
            .slice(0, 5)
            .map((p) => `${p.kind}: ${p.message}`)
            .join('; '),
    )
    if (!verification.ok) return 1

    // ---- 2. the server, and the sealer ------------------------------------------------------
    const secret = randomBytes(32).toString('hex')
    const port = await freePort(HOST)
    const env = benchServerEnv({
      host: HOST,
      port,
      databaseUrl: scratch.url,
      jwtSecret: secret,
      extra: { LEDGER_SEAL_INTERVAL_MS: String(options.sealIntervalMs) },
    })
    log(`server: ${scratch.name} on ${HOST}:${port}, sealing every ${options.sealIntervalMs} ms ...`)
    const spawnedAt = performance.now()
    server = await startServerProcess({
      args: builtServerArgs(REPO_ROOT),
      cwd: REPO_ROOT,
      env,
      host: HOST,
      port,
    })
    const readyMs = performance.now() - spawnedAt
    const rssAtReadyBytes = residentBytes(server.pid)
    const closeSealWindow = openWindow(monitor, server.pid)
    let sealed: { through: string; seals: number; first: Date; last: Date } | undefined
    for (const deadline = performance.now() + SEAL_TIMEOUT_MS; performance.now() < deadline; ) {
      const [row] = await sqlc<{ through: string | null; seals: number; first: Date; last: Date }[]>`
        select max(last_transaction_id)::text as through, count(*)::int as seals,
               min(sealed_at) as first, max(sealed_at) as last from ledger_seals`
      if (row?.through && Number(row.through) >= load.transactions) {
        sealed = { through: row.through, seals: row.seals, first: row.first, last: row.last }
        break
      }
      await new Promise((resolve) => setTimeout(resolve, SEAL_POLL_MS))
    }
    const sealedMs = performance.now() - spawnedAt
    const sealInterference = closeSealWindow()
    check(
      'the sealer sealed the whole journal',
      sealed !== undefined,
      sealed
        ? `${fmt(sealed.seals)} seals through transaction ${sealed.through}`
        : `not within ${SEAL_TIMEOUT_MS / 60_000} minutes`,
    )
    // sealed_at is each seal's transaction start: from the first seal's start to the last one's, plus one seal.
    const sealSpanMs = sealed ? sealed.last.getTime() - sealed.first.getTime() : Number.NaN
    log(
      `  server ready in ${seconds(readyMs)} (RSS ${mb(rssAtReadyBytes)} MiB); journal sealed ${seconds(sealedMs)} after spawn (first to last seal started ${seconds(sealSpanMs)} apart)`,
    )

    // ---- 3. the accountant's queries over HTTP -----------------------------------------------
    const serverPid = server.pid
    const open = () => openWindow(monitor, serverPid)
    const key = new TextEncoder().encode(secret)
    const token = await signToken(
      key,
      {
        sub: `bench|audit|${randomBytes(4).toString('hex')}`,
        preferred_username: 'auditor',
        name: 'Auditor',
        roles: ['accountant'],
      },
      { expiresIn: '6h' },
    )
    const authorization = `Bearer ${token}`
    const figures: Figure[] = []

    log('trialBalance ...')
    const [expected] = await sqlc<{ lines: number; coin_debits: string; coin_credits: string }[]>`
      select count(*)::int as lines,
             coalesce(sum(debits_total) filter (where unit = 'COIN'), 0)::text as coin_debits,
             coalesce(sum(credits_total) filter (where unit = 'COIN'), 0)::text as coin_credits
        from ledger_accounts where debits_total > 0 or credits_total > 0`
    await graphql(server.url, authorization, TRIAL_BALANCE, {}) // warm-up
    let now: GraphQLAnswer | undefined
    const nowRuns = await measureRuns(open, options.runs, FAST_FIGURE_MIN_MS, async () => {
      now = await graphql(server?.url as string, authorization, TRIAL_BALANCE, {})
      return now.ms
    })
    const balanced = (totals: { currency: string; debits: number; credits: number }[]) =>
      totals.length > 0 && totals.every((t) => t.debits === t.credits)
    const nowTb = now?.data.trialBalance
    const coinNow = nowTb?.totals.find((t: { currency: string }) => t.currency === 'COIN')
    check(
      'trialBalance now: every account with entries, debits = credits per unit, COIN totals = the accounts',
      nowTb?.lines.length === expected?.lines &&
        balanced(nowTb.totals) &&
        String(coinNow?.debits) === expected?.coin_debits,
      `${nowTb?.lines.length} lines (${expected?.lines} expected), totals ${JSON.stringify(nowTb?.totals)}`,
    )
    figures.push({
      name: 'trialBalance, now',
      ...nowRuns,
      targetMs: TARGET_TRIAL_BALANCE_NOW_MS,
      detail: `${fmt(nowTb?.lines.length ?? Number.NaN)} lines, ${mb(now?.bytes ?? Number.NaN)} MiB of JSON`,
    })

    const middle = load.middle
    const [past] = await sqlc<{ unit: string; debits: string; credits: string; lines: number }[]>`
      select 'COIN' as unit,
             coalesce(sum(amount) filter (where direction = 'debit'), 0)::text as debits,
             coalesce(sum(amount) filter (where direction = 'credit'), 0)::text as credits,
             count(distinct account_id)::int as lines
        from ledger_entries where unit = 'COIN' and posted_at < ${middle.toISOString()}::timestamptz + interval '1 millisecond'`
    const asOf = middle.toISOString()
    await graphql(server.url, authorization, TRIAL_BALANCE, { asOf }) // warm-up
    let then: GraphQLAnswer | undefined
    const pastRuns = await measureRuns(open, options.runs, 0, async () => {
      then = await graphql(server?.url as string, authorization, TRIAL_BALANCE, { asOf })
      return then.ms
    })
    const pastTb = then?.data.trialBalance
    const coinThen = pastTb?.totals.find((t: { currency: string }) => t.currency === 'COIN')
    check(
      'trialBalance as of the middle: debits = credits per unit, COIN totals = a sum of the entries',
      balanced(pastTb?.totals ?? []) &&
        String(coinThen?.debits) === past?.debits &&
        String(coinThen?.credits) === past?.credits,
      `COIN ${coinThen?.debits}/${coinThen?.credits}, SQL ${past?.debits}/${past?.credits}`,
    )
    figures.push({
      name: 'trialBalance, as of the middle of the history',
      ...pastRuns,
      targetMs: TARGET_TRIAL_BALANCE_PAST_MS,
      detail: `asOf ${asOf}, ${fmt(pastTb?.lines.length ?? Number.NaN)} lines`,
    })

    log('statements ...')
    const busiest = await sqlc<Account[]>`
      (select id::text, code, last_seq::int as "lastSeq", upper(type::text) as type from ledger_accounts
        where code = 'platform:commission')
      union all
      (select id::text, code, last_seq::int, upper(type::text) from ledger_accounts
        where code like 'user:%:earnings' order by last_seq desc limit 1)`
    for (const account of busiest) {
      figures.push(await measureStatement(server, authorization, account, middle, options, open, check))
    }

    log(`ledgerIntegrity × ${options.integrityRuns} ...`)
    let integrity: GraphQLAnswer | undefined
    const integrityRuns = await measureRuns(open, options.integrityRuns, 0, async () => {
      integrity = await graphql(server?.url as string, authorization, INTEGRITY)
      return integrity.ms
    })
    const report = integrity?.data.ledgerIntegrity
    check(
      'ledgerIntegrity: ok, no problem, every transaction checked, the whole journal under seal',
      report?.ok === true &&
        report.problems.length === 0 &&
        report.checkedTransactions === load.transactions &&
        report.sealedThroughTransactionId === String(load.transactions),
      `ok ${report?.ok}, ${report?.problems.length} problems, ${report?.checkedTransactions} transactions, ${report?.checkedSeals} seals through ${report?.sealedThroughTransactionId}`,
    )
    figures.push({
      name: 'ledgerIntegrity, everything',
      ...integrityRuns,
      targetMs: TARGET_INTEGRITY_MS,
      detail: `${fmt(report?.checkedTransactions ?? Number.NaN)} transactions, ${fmt(report?.checkedSeals ?? Number.NaN)} seals; in process before the server: ${seconds(verifyMs)}`,
    })

    const exports: ExportResult[][] = []
    for (const format of options.jsonl ? (['csv', 'jsonl'] as const) : (['csv'] as const)) {
      log(`GET /exports/journal.${format} × ${options.exportRuns} ...`)
      const runs: ExportResult[] = []
      for (let i = 0; i < options.exportRuns; i++) {
        const result = await measureExport(server, authorization, format, open)
        runs.push(result)
        check(
          `export .${format}, run ${i + 1}: 200, one row per entry`,
          result.status === 200 && result.rows === load.entries,
          `HTTP ${result.status}, ${fmt(result.rows)} rows for ${fmt(load.entries)} entries, horizon ${result.horizon}; ${fmt(result.ms / 1000, 1)} s, server RSS ${mb(result.rssBeforeBytes)} → peak ${mb(result.rssPeakBytes)} MiB`,
        )
      }
      exports.push(runs)
    }

    // ---- the report ---------------------------------------------------------------------------
    const lines: string[] = []
    lines.push('')
    lines.push(
      `machine: ${machine.cpus} CPUs, ${machine.memoryGiB} GiB, PostgreSQL ${machine.postgresVersion}, fsync ${machine.fsync}, synchronous_commit ${machine.synchronousCommit}, shared_buffers ${machine.sharedBuffers}, Node ${machine.node}`,
    )
    lines.push(`date: ${machine.dateUtc}, code: ${engine}`)
    lines.push(
      `ledger: ${fmt(load.transactions)} transactions (${fmt(load.entries)} entries) on ${fmt(load.accounts)} accounts, ${fmt(options.users)} wallets, ${fmt(options.creators)} creators, posted ${load.firstPostedAt} .. ${load.lastPostedAt}; database ${mb(load.databaseBytes)} MiB (ledger_entries ${mb(load.tableBytes.ledger_entries ?? 0)} MiB, ledger_transactions ${mb(load.tableBytes.ledger_transactions ?? 0)} MiB with indexes)`,
    )
    lines.push('')
    lines.push('| setup | time | others: CPU / sessions |')
    lines.push('|---|---:|---:|')
    lines.push(
      `| bulk load (${load.steps.map(([n, ms]) => `${n} ${fmt(ms / 1000, 1)} s`).join(', ')}) | ${seconds(load.loadMs)} | ${others(loadInterference)} |`,
    )
    lines.push(`| VACUUM ANALYZE | ${seconds(load.vacuumAnalyzeMs)} | |`)
    lines.push(
      `| verification: the integrity check, in process | ${seconds(verifyMs)} | ${others(verifyInterference)} |`,
    )
    lines.push(
      `| sealing the whole journal: spawn to sealed (server ready after ${seconds(readyMs)}, RSS then ${mb(rssAtReadyBytes)} MiB; ${fmt(sealed?.seals ?? Number.NaN)} seals) | ${seconds(sealedMs)} | ${others(sealInterference)} |`,
    )
    lines.push('')
    lines.push('| figure | median ms | max ms | runs | target | | others: CPU / sessions | notes |')
    lines.push('|---|---:|---:|---:|---|---|---:|---|')
    for (const f of figures) lines.push(figureRow(f))
    for (const runs of exports) {
      const e = runs[0] as ExportResult
      const times = summarize(runs.map((r) => r.ms))
      const peak = Math.max(...runs.map((r) => r.rssPeakBytes))
      const growth = Math.max(...runs.map((r) => r.rssPeakBytes - r.rssBeforeBytes))
      const met = peak / 2 ** 20 < TARGET_EXPORT_RSS_MB ? 'met' : '**NOT met**'
      // The noisiest run's.
      const interference = runs
        .map((r) => r.interference)
        .reduce((a, b) => (b.otherCpuPercent > a.otherCpuPercent ? b : a))
      lines.push(
        `| GET /exports/journal.${e.format}: peak server RSS ${mb(peak)} MiB (at most ${mb(growth)} MiB above its level before; ${runs.map((r) => `${mb(r.rssBeforeBytes)} → ${mb(r.rssPeakBytes)}`).join(', ')}) | ${fmt(times.p50Ms, 0)} | ${fmt(times.maxMs, 0)} | ${runs.length} | RSS < ${TARGET_EXPORT_RSS_MB} MiB | ${met} | ${others(interference)}${quiet(interference) ? '' : ' (not clean)'} | ${fmt(e.rows)} rows, ${mb(e.bytes)} MiB, ${fmt(e.bytes / 2 ** 20 / (times.p50Ms / 1000), 1)} MiB/s, first byte after ${fmt(e.firstByteMs)} ms, RSS sampled every ${RSS_SAMPLE_MS} ms |`,
      )
    }
    lines.push('')
    lines.push(
      'others: CPU of other processes (not this one or PostgreSQL) in % of all cores / active sessions of other databases on the server, averaged; "not clean" above 5% / 0.1',
    )
    const summary = [...server.logSummary()]
    lines.push(
      `server log lines (warn and above): ${summary.length === 0 ? 'none' : summary.map(([l, c]) => `${c}× ${l}`).join('; ')}`,
    )
    const busyAfter = otherBenchmarksRunning().filter((line) => !/\bgrep\b|pgrep/.test(line))
    if (busyAfter.length > 0) lines.push(`WARNING: others running at the end:\n  ${busyAfter.join('\n  ')}`)
    lines.push(`bench run time: ${seconds(performance.now() - benchStarted)}`)
    lines.push(failures.length === 0 ? 'checks: all passed' : `checks FAILED: ${failures.join(', ')}`)
    for (const line of lines) log(line)
    if (options.json) {
      console.log(
        JSON.stringify({
          machine,
          engine,
          options,
          load,
          verifyMs,
          readyMs,
          sealedMs,
          sealed,
          figures,
          exports,
          failures,
        }),
      )
    }
    return failures.length === 0 ? 0 : 1
  } finally {
    await sqlc?.end({ timeout: 5 })
    await server?.stop()
    await monitor.stop()
    if (options.keepDatabase) log(`kept: ${scratch.url}`)
    else await scratch.drop()
  }
}

main().then(
  (code) => process.exit(code),
  (error) => {
    console.error(error)
    process.exit(2)
  },
)
