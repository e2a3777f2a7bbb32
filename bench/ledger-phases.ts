import { randomUUID } from 'node:crypto'
import { parseArgs } from 'node:util'
import { sql } from 'drizzle-orm'
import { drizzle } from 'drizzle-orm/postgres-js'
import postgres from 'postgres'
import {
  type Database,
  type DatabaseConfig,
  type Db,
  openDatabase,
  postgresOptions,
} from '../src/db/client.js'
import { migrateDatabase } from '../src/db/migrate.js'
import { relations } from '../src/db/relations.js'
import { rowsOf } from '../src/db/rows.js'
import {
  type AccountSpec,
  creatorEarnings,
  Ledger,
  type PostingRequest,
  platform,
  userWallet,
} from '../src/ledger/index.js'
import { type PreparedPosting, postBatchInTx } from '../src/ledger/posting.js'
import { createScratchDatabase } from './support/scratch.js'
import { fmt, median } from './support/stats.js'

// Where a batch's time goes: the diagnosis behind bench/ledger.ts, not a
// benchmark of its own. Writes batches of hot-creator gifts through the
// engine's own postBatchInTx, one at a time, timing each phase from the
// client, at several ledger sizes, on sessions that planned the guard
// triggers' statements on the empty ledger ("early", JIT on and off) and on
// one that planned them at that size ("fresh"); then a batch under
// auto_explain (plans and timings of every statement, those inside triggers
// included). The entries' insert trigger (chain check and the accounts'
// cached balances) shows in "insert entries", plans made on the empty ledger
// in "deferred checks" (ledger_transactions_check_balanced).
//
//   npx tsx bench/ledger-phases.ts [--batch-sizes 1,20,100,500] [--rounds 10]
//     [--sizes 0,50000,200000] [--explain-batch 100]

const FUNDING_COINS = 1_000_000_000_000n

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    'batch-sizes': { type: 'string', default: '1,20,100,500' },
    rounds: { type: 'string', default: '10' },
    sizes: { type: 'string', default: '0,50000,200000' },
    'explain-batch': { type: 'string', default: '100' },
    senders: { type: 'string', default: '1000' },
  },
  strict: true,
})
const list = (v: string | undefined) => String(v).split(',').map(Number)
const batchSizes = list(values['batch-sizes'])
const sizes = list(values.sizes)
const rounds = Number(values.rounds)
const explainBatch = Number(values['explain-batch'])

interface Phases {
  prepareMs: number
  beginMs: number
  lockReadInsertTransactionsMs: number
  insertEntriesMs: number
  deferredChecksMs: number
  commitMs: number
  totalMs: number
  nodeCpuMs: number
}

const senders: AccountSpec[] = Array.from({ length: Number(values.senders) }, () => userWallet(randomUUID()))
const hotCreator = creatorEarnings(randomUUID())
let keySeq = 0

function hotGift(): PostingRequest {
  return {
    idempotencyKey: `phases:${keySeq++}`,
    kind: 'gift',
    entries: [
      {
        account: senders[Math.floor(Math.random() * senders.length)] as AccountSpec,
        direction: 'debit',
        amount: 100n,
      },
      { account: hotCreator, direction: 'credit', amount: 50n },
      { account: platform.commission, direction: 'credit', amount: 50n },
    ],
  }
}

/** One batch through the engine's postBatchInTx, in the order and isolation the engine uses. */
async function timedBatch(ledger: Ledger, probe: Db, size: number): Promise<Phases> {
  const cpuStart = process.cpuUsage()
  const t0 = performance.now()
  const batch: PreparedPosting[] = []
  for (let i = 0; i < size; i++) batch.push(await ledger.prepare(hotGift()))
  const t1 = performance.now()
  let t2 = 0
  let t3 = 0
  let t4 = 0
  let t5 = 0
  await probe.transaction(
    async (tx) => {
      t2 = performance.now()
      const results = await postBatchInTx(tx, batch, {
        beforeEntries: async () => {
          t3 = performance.now()
        },
      })
      t4 = performance.now()
      // The constraint triggers deferred to commit, run now so that they are timed apart from the commit.
      await tx.execute(sql`set constraints all immediate`)
      t5 = performance.now()
      if (results.some((r) => !r.ok)) throw new Error('phases: a posting was refused')
    },
    // As the engine does: READ COMMITTED is the sessions' default (postgresOptions), no SET round trip.
  )
  const t6 = performance.now()
  const cpu = process.cpuUsage(cpuStart)
  return {
    prepareMs: t1 - t0,
    beginMs: t2 - t1,
    lockReadInsertTransactionsMs: t3 - t2,
    insertEntriesMs: t4 - t3,
    deferredChecksMs: t5 - t4,
    commitMs: t6 - t5,
    totalMs: t6 - t0,
    nodeCpuMs: (cpu.user + cpu.system) / 1000,
  }
}

async function grow(ledger: Ledger, database: Database, target: number): Promise<void> {
  const count = async () =>
    Number(
      rowsOf<{ n: string }>(
        await database.db.execute(sql`select count(*)::text as n from ledger_transactions`),
      )[0]?.n,
    )
  let have = await count()
  while (have < target) {
    const chunk = Math.min(5000, target - have)
    await Promise.all(Array.from({ length: chunk }, () => ledger.post(hotGift())))
    have += chunk
  }
}

interface Explained {
  duration: number
  text: string
  notice: string
}

/**
 * One batch under auto_explain, its plans sent back as notices. With nested
 * statements off, the top-level statements with their triggers' total times
 * (little overhead); with them on, every statement a trigger runs too (the
 * per-row foreign key checks then cost more than they do unobserved).
 */
async function explainOneBatch(
  ledger: Ledger,
  url: string,
  size: number,
  nested: boolean,
  jit: 'on' | 'off',
): Promise<Explained[]> {
  const notices: string[] = []
  const options = postgresOptions(1)
  const client = postgres(url, {
    ...options,
    connection: { ...options.connection, jit },
    onnotice: (n) => notices.push(String(n.message)),
  })
  const probe = drizzle({ client, relations }) as unknown as Db
  try {
    await probe.execute(sql`load 'auto_explain'`)
    await probe.execute(sql`set auto_explain.log_min_duration = 0`)
    await probe.execute(sql`set auto_explain.log_analyze = on`)
    await probe.execute(sql`set auto_explain.log_triggers = on`)
    await probe.execute(sql.raw(`set auto_explain.log_nested_statements = ${nested ? 'on' : 'off'}`))
    await probe.execute(sql`set auto_explain.log_level = 'notice'`)
    // A first batch plans the triggers' statements (plpgsql caches them per session): not the steady state.
    for (const warm of [true, false]) {
      const batch: PreparedPosting[] = []
      for (let i = 0; i < size; i++) batch.push(await ledger.prepare(hotGift()))
      notices.length = 0
      await probe.transaction((tx) => postBatchInTx(tx, batch))
      if (!warm) break
    }
  } finally {
    await client.end({ timeout: 5 })
  }
  // Each notice is "duration: X ms  plan:\n Query Text: ...\n <plan>".
  return notices
    .filter((n) => n.startsWith('duration:'))
    .map((n) => ({
      duration: Number(/duration: ([\d.]+) ms/.exec(n)?.[1] ?? Number.NaN),
      // The query's text runs from "Query Text:" to the plan's first line (the first with a cost).
      text: (/Query Text:([\s\S]*?)\n(?=\S[^\n]*\(cost=)/.exec(n)?.[1] ?? '')
        .replace(/\s+/g, ' ')
        .trim()
        .slice(0, 110),
      notice: n,
    }))
}

const shorten = (line: string) => (line.length > 200 ? `${line.slice(0, 200)} ...` : line)

async function explainReport(ledger: Ledger, url: string, size: number): Promise<void> {
  for (const jit of ['on', 'off'] as const) {
    const top = await explainOneBatch(ledger, url, size, false, jit)
    console.log(
      `\nauto_explain, one batch of ${size} hot-creator gifts, jit ${jit}: top-level statements and their triggers`,
    )
    console.log('| ms | statement | triggers (total ms, calls) |')
    console.log('|---:|---|---|')
    for (const p of top) {
      const triggers = [
        ...p.notice.matchAll(/^Trigger (?:for constraint )?(\S+): time=([\d.]+) calls=(\d+)/gm),
      ]
        .map((m) => `${m[1]} ${m[2]} ms × ${m[3]}`)
        .join('; ')
      console.log(`| ${fmt(p.duration, 2)} | \`${p.text.replaceAll('|', '\\|')}\` | ${triggers} |`)
    }
    console.log(
      `(${fmt(
        top.reduce((a, p) => a + p.duration, 0),
        1,
      )} ms in all)`,
    )
  }
  const all = await explainOneBatch(ledger, url, size, true, 'on')
  console.log(`\nwith nested statements, jit on (${all.length} statements): the slowest inside the triggers`)
  const nested = all.filter((p) => /^\s*SELECT/i.test(p.text) && !p.text.startsWith('select "id"'))
  for (const p of [...nested].sort((a, b) => b.duration - a.duration).slice(0, 2)) {
    const lines = p.notice.split('\n').filter((l) => !l.startsWith('Query Text'))
    console.log(`\n${p.text} ...\n${lines.map(shorten).join('\n')}`)
  }
}

/** A session of its own, with PostgreSQL's JIT on or off. */
function openProbe(url: string, jit: 'on' | 'off'): { db: Db; end: () => Promise<void> } {
  const options = postgresOptions(1)
  const client = postgres(url, { ...options, connection: { ...options.connection, jit } })
  return { db: drizzle({ client, relations }) as unknown as Db, end: () => client.end({ timeout: 5 }) }
}

// Sessions compared at each ledger size. PL/pgSQL plans a trigger's
// statements once per session and keeps the plan; PostgreSQL plans with the
// statistics and table sizes of that moment (this server runs no
// autovacuum, so no ANALYZE replaces them). "early" sessions were opened on
// the empty ledger and planned there; a "fresh" one is opened at this size.
const SESSION_KINDS = ['early, jit on', 'early, jit off', 'fresh, jit on'] as const
type SessionKind = (typeof SESSION_KINDS)[number]

async function main(): Promise<void> {
  const scratch = await createScratchDatabase('gl_phases')
  const config: DatabaseConfig = { kind: 'postgres', url: scratch.url, poolMax: 10 }
  let database: Database | undefined
  const early = { on: openProbe(scratch.url, 'on'), off: openProbe(scratch.url, 'off') }
  try {
    database = await openDatabase(config)
    await migrateDatabase(config, database)
    const ledger = new Ledger(database.db)
    await Promise.all(
      senders.map((wallet, i) =>
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
    await ledger.accounts.resolve(database.db, [hotCreator])
    // The early sessions plan the triggers now, on the (nearly) empty ledger.
    for (const probe of [early.on, early.off]) await timedBatch(ledger, probe.db, 1)

    console.log('median per batch, one batch at a time (no contention), ms:')
    console.log(
      "| ledger size (transactions) | batch | session | prepare (Node) | begin | lock + read + insert transactions | release holds + insert entries (with the accounts' update) | deferred checks | commit | total | per posting | Node CPU |",
    )
    console.log('|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for (const size of sizes) {
      await grow(ledger, database, size)
      for (const batchSize of batchSizes) {
        const fresh = openProbe(scratch.url, 'on')
        try {
          await timedBatch(ledger, fresh.db, batchSize) // plans the triggers at this size
          const probes: Record<SessionKind, Db> = {
            'early, jit on': early.on.db,
            'early, jit off': early.off.db,
            'fresh, jit on': fresh.db,
          }
          // Rounds alternate between the sessions, so that drift hits all alike.
          const runs = Object.fromEntries(SESSION_KINDS.map((k) => [k, [] as Phases[]])) as Record<
            SessionKind,
            Phases[]
          >
          for (let r = 0; r < rounds; r++) {
            for (const kind of SESSION_KINDS)
              runs[kind].push(await timedBatch(ledger, probes[kind], batchSize))
          }
          for (const kind of SESSION_KINDS) {
            const m = (k: keyof Phases) => median(runs[kind].map((x) => x[k]))
            console.log(
              `| ${fmt(size)} | ${batchSize} | ${kind} | ${fmt(m('prepareMs'), 1)} | ${fmt(m('beginMs'), 1)} | ${fmt(m('lockReadInsertTransactionsMs'), 1)} | ${fmt(m('insertEntriesMs'), 1)} | ${fmt(m('deferredChecksMs'), 1)} | ${fmt(m('commitMs'), 1)} | ${fmt(m('totalMs'), 1)} | ${fmt(m('totalMs') / batchSize, 2)} | ${fmt(m('nodeCpuMs'), 1)} |`,
            )
          }
        } finally {
          await fresh.end()
        }
      }
    }
    await explainReport(ledger, scratch.url, explainBatch)
    const integrity = await ledger.checkIntegrity()
    console.log(
      `\nintegrity: ${integrity.ok ? 'ok' : 'BROKEN'} (${integrity.checkedTransactions} transactions)`,
    )
    if (!integrity.ok) process.exitCode = 1
  } finally {
    await early.on.end()
    await early.off.end()
    await database?.close()
    await scratch.drop()
  }
}

await main()
