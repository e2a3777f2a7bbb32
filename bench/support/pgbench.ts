import { execFile } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import postgres from 'postgres'
import { createScratchDatabase } from './scratch.js'

// The baseline: plain PostgreSQL doing the least a hot-row write can do.
// Every client updates the same row, plus one random other row and one
// insert, one database transaction each (BASELINES.md, "hot row"). A ledger
// that locks the hot account once per posting cannot beat this; one that
// batches can.

export const pgbenchPath = process.env.PGBENCH || '/usr/bin/pgbench'
const OTHER_ROWS = 1000
const THREADS = 2

const HOT_ROW_SCRIPT = `\\set other random(1, ${OTHER_ROWS})
BEGIN;
UPDATE bench_hot SET n = n + 1 WHERE id = 1;
UPDATE bench_other SET n = n - 1 WHERE id = :other;
INSERT INTO bench_log (other_id, delta) VALUES (:other, 1);
END;
`

export interface PgbenchResult {
  clients: number
  threads: number
  seconds: number
  tps: number
  latencyAverageMs: number
  transactions: number
  failed: number
  command: string
}

export async function runPgbenchHotRow(options: {
  clients: number
  seconds: number
  /** Told the scratch database's name before pgbench starts. */
  onDatabase?: (name: string) => void
}): Promise<PgbenchResult> {
  const scratch = await createScratchDatabase('gl_pgb')
  options.onDatabase?.(scratch.name)
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gl-pgbench-'))
  try {
    const client = postgres(scratch.url, { max: 1, onnotice: () => {} })
    try {
      await client.unsafe(`
        create table bench_hot (id int primary key, n bigint not null);
        create table bench_other (id int primary key, n bigint not null);
        create table bench_log (id bigserial primary key, other_id int not null, delta int not null,
                                at timestamptz not null default now());
        insert into bench_hot values (1, 0);
        insert into bench_other select g, 0 from generate_series(1, ${OTHER_ROWS}) g;`)
      // A multi-statement query runs as one transaction; VACUUM needs its own.
      await client.unsafe('vacuum analyze bench_hot, bench_other')
    } finally {
      await client.end({ timeout: 5 })
    }
    const scriptPath = path.join(dir, 'hot-row.sql')
    await writeFile(scriptPath, HOT_ROW_SCRIPT)
    const threads = Math.min(THREADS, options.clients)
    const args = [
      '-n',
      '-f',
      scriptPath,
      '-c',
      String(options.clients),
      '-j',
      String(threads),
      '-T',
      String(options.seconds),
      scratch.url,
    ]
    const { stdout } = await promisify(execFile)(pgbenchPath, args, { maxBuffer: 1 << 20 })
    const number = (pattern: RegExp): number => {
      const match = pattern.exec(stdout)
      if (!match?.[1]) throw new Error(`pgbench: ${pattern} not found in its output:\n${stdout}`)
      return Number(match[1])
    }
    return {
      clients: options.clients,
      threads,
      seconds: options.seconds,
      tps: number(/^tps = ([\d.]+) \(without initial connection time\)/m),
      latencyAverageMs: number(/^latency average = ([\d.]+) ms/m),
      transactions: number(/^number of transactions actually processed: (\d+)/m),
      failed: number(/^number of failed transactions: (\d+)/m),
      command: `${pgbenchPath} ${args.slice(0, -1).join(' ')} <scratch db>`,
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
    await scratch.drop()
  }
}
