import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort } from './processes.js'

// Private servers for fault tests that stop and start a dependency: a
// PostgreSQL cluster and a Redis of the test's own, on free ports, never the
// shared ones (other test files and other people use those). Each is cleaned
// up (stopped, its files removed) by close(), and at the latest when this
// process exits.

const cleanups = new Set<() => void>()
process.once('exit', () => {
  for (const cleanup of cleanups) cleanup()
})

// ---- PostgreSQL ---------------------------------------------------------------------

/** The directory of initdb and pg_ctl, if PostgreSQL's server binaries are installed. */
export function postgresBinaries(): string | undefined {
  const root = '/usr/lib/postgresql'
  if (!existsSync(root)) return undefined
  const versions = readdirSync(root)
    .filter((v) => /^\d+$/.test(v))
    .sort((a, b) => Number(b) - Number(a))
  for (const version of ['15', ...versions]) {
    const bin = join(root, version, 'bin')
    if (existsSync(join(bin, 'initdb')) && existsSync(join(bin, 'pg_ctl'))) return bin
  }
  return undefined
}

export interface PrivatePostgres {
  port: number
  /** postgres://postgres@127.0.0.1:<port>/postgres */
  url: string
  /** pg_ctl stop: 'fast' disconnects every session and shuts down cleanly; 'immediate' is a crash (recovery at start). */
  stop(mode: 'fast' | 'immediate'): Promise<void>
  start(): Promise<void>
  /** Stops it (immediate) and removes its files; safe to call twice. */
  close(): Promise<void>
}

/** initdb as the `postgres` user when we are root (initdb refuses to run as root). */
function asPostgresUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined
  const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim())
  const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim())
  return { uid, gid }
}

function run(file: string, args: string[], user: { uid: number; gid: number } | undefined): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { ...user, stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.on('data', (chunk) => (output += chunk))
    child.stderr.on('data', (chunk) => (output += chunk))
    child.once('error', reject)
    child.once('exit', (code) =>
      code === 0
        ? resolve(output)
        : reject(new Error(`${file} ${args.join(' ')} exited ${code}:\n${output}`)),
    )
  })
}

export async function startPrivatePostgres(bin: string): Promise<PrivatePostgres> {
  const user = asPostgresUser()
  const dir = mkdtempSync(join(tmpdir(), 'gl-pg-'))
  if (user) chownSync(dir, user.uid, user.gid)
  const data = join(dir, 'data')
  const port = await freePort()
  const pgCtl = join(bin, 'pg_ctl')
  const options = [
    `-p ${port}`,
    `-k ${dir}`,
    '-c listen_addresses=127.0.0.1',
    // A throwaway cluster: no fsync (the machine does not crash, only PostgreSQL
    // does: the operating system keeps what was written). synchronous_commit
    // stays on: a commit acknowledged must survive `pg_ctl stop -m immediate`.
    '-c fsync=off',
    '-c full_page_writes=off',
    '-c max_connections=50',
  ].join(' ')
  const stopNow = () => {
    try {
      execFileSync(pgCtl, ['-D', data, '-m', 'immediate', 'stop'], { ...user, stdio: 'ignore' })
    } catch {
      // not running
    }
    rmSync(dir, { recursive: true, force: true })
  }
  cleanups.add(stopNow)
  try {
    await run(
      join(bin, 'initdb'),
      ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync'],
      user,
    )
    const start = async () => {
      await run(pgCtl, ['-D', data, '-o', options, '-l', join(dir, 'log'), '-w', '-t', '30', 'start'], user)
    }
    await start()
    return {
      port,
      url: `postgres://postgres@127.0.0.1:${port}/postgres`,
      stop: async (mode) => {
        await run(pgCtl, ['-D', data, '-m', mode, '-w', '-t', '30', 'stop'], user)
      },
      start,
      close: async () => {
        stopNow()
        cleanups.delete(stopNow)
      },
    }
  } catch (error) {
    stopNow()
    cleanups.delete(stopNow)
    throw error
  }
}

// ---- Redis --------------------------------------------------------------------------

/** The redis-server binary, if installed. */
export function redisServerBinary(): string | undefined {
  for (const path of ['/usr/bin/redis-server', '/usr/local/bin/redis-server']) {
    if (existsSync(path)) return path
  }
  return undefined
}

export interface PrivateRedis {
  port: number
  url: string
  /** SIGKILL: every connection drops at once, nothing is saved. */
  kill(): Promise<void>
  start(): Promise<void>
  close(): Promise<void>
}

export async function startPrivateRedis(binary: string): Promise<PrivateRedis> {
  const port = await freePort()
  let child: ChildProcess | undefined
  const killNow = () => {
    child?.kill('SIGKILL')
  }
  cleanups.add(killNow)
  const start = async () => {
    const started = spawn(
      binary,
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
        '--daemonize',
        'no',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    child = started
    await new Promise<void>((resolve, reject) => {
      let output = ''
      const onData = (chunk: Buffer) => {
        output += chunk.toString()
        if (output.includes('Ready to accept connections')) {
          started.stdout?.off('data', onData)
          started.stdout?.resume()
          resolve()
        }
      }
      started.stdout?.on('data', onData)
      started.stderr?.resume()
      started.once('exit', (code) => reject(new Error(`redis-server exited ${code}:\n${output}`)))
      setTimeout(() => reject(new Error(`redis-server not ready after 10 s:\n${output}`)), 10_000).unref()
    })
  }
  const kill = async () => {
    const running = child
    if (!running || running.exitCode !== null || running.signalCode !== null) return
    const exited = new Promise((resolve) => running.once('exit', resolve))
    running.kill('SIGKILL')
    await exited
  }
  await start()
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    kill,
    start,
    close: async () => {
      await kill()
      cleanups.delete(killNow)
    },
  }
}
