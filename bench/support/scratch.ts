import { randomBytes } from 'node:crypto'
import os from 'node:os'
import postgres from 'postgres'
import { openDatabase } from '../../src/db/client.js'
import { checkIntegrity } from '../../src/ledger/integrity.js'

// Scratch databases for benchmarks: created fresh on the server that
// BENCH_DATABASE_URL names (an admin connection, any database), dropped after.

export const adminUrl = process.env.BENCH_DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres'

export interface ScratchDatabase {
  name: string
  url: string
  /** A setting for every later session of this database (ALTER DATABASE ... SET). */
  set(name: string, value: string): Promise<void>
  drop(): Promise<void>
}

export async function createScratchDatabase(prefix: string): Promise<ScratchDatabase> {
  const name = `${prefix}_${randomBytes(6).toString('hex')}`
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {}, connect_timeout: 10 })
  try {
    await admin.unsafe(`create database ${name}`)
  } finally {
    await admin.end({ timeout: 5 })
  }
  const url = new URL(adminUrl)
  url.pathname = `/${name}`
  return {
    name,
    url: url.toString(),
    async set(setting, value) {
      if (!/^[a-z_.]+$/.test(setting) || !/^[a-z0-9_]+$/.test(value)) throw new Error('scratch: bad setting')
      const admin = postgres(adminUrl, { max: 1, onnotice: () => {}, connect_timeout: 10 })
      try {
        await admin.unsafe(`alter database ${name} set ${setting} = '${value}'`)
      } finally {
        await admin.end({ timeout: 5 })
      }
    },
    async drop() {
      const dropper = postgres(adminUrl, { max: 1, onnotice: () => {}, connect_timeout: 10 })
      try {
        await dropper.unsafe(`drop database if exists ${name} with (force)`)
      } finally {
        await dropper.end({ timeout: 5 })
      }
    },
  }
}

export interface MachineFacts {
  dateUtc: string
  cpus: number
  memoryGiB: number
  node: string
  postgresVersion: string
  fsync: string
  synchronousCommit: string
  sharedBuffers: string
}

/** What a result depends on, read from the machine and from the server itself. */
export async function machineFacts(): Promise<MachineFacts> {
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {}, connect_timeout: 10 })
  try {
    const [row] = await admin<{ version: string; fsync: string; sc: string; sb: string }[]>`
      select current_setting('server_version') as version, current_setting('fsync') as fsync,
             current_setting('synchronous_commit') as sc, current_setting('shared_buffers') as sb`
    return {
      dateUtc: new Date().toISOString(),
      cpus: os.availableParallelism(),
      memoryGiB: Math.round(os.totalmem() / 2 ** 30),
      node: process.version,
      postgresVersion: row?.version ?? 'unknown',
      fsync: row?.fsync ?? 'unknown',
      synchronousCommit: row?.sc ?? 'unknown',
      sharedBuffers: row?.sb ?? 'unknown',
    }
  } finally {
    await admin.end({ timeout: 5 })
  }
}

/**
 * The ledger's integrity check on a benchmark's database, as one check line:
 * ok, and what was checked or the first problems found.
 */
export async function ledgerIntegrityCheck(url: string): Promise<{ ok: boolean; detail: string }> {
  const database = await openDatabase({ kind: 'postgres', url, poolMax: 2 })
  try {
    const integrity = await checkIntegrity(database.db)
    return {
      ok: integrity.ok,
      detail: integrity.ok
        ? `${integrity.checkedTransactions} transactions, ${integrity.checkedAccounts} accounts`
        : integrity.problems
            .slice(0, 5)
            .map((p) => `${p.kind}: ${p.message}`)
            .join('; '),
    }
  } finally {
    await database.close()
  }
}
