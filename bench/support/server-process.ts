import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { createWriteStream, readdirSync, readFileSync } from 'node:fs'
import { createServer } from 'node:net'

// The real server (src/main.ts) in a child process, so that a load generator
// in the benchmark's process does not share the server's event loop; and the
// CPU time of processes read from /proc (Linux), to tell which one limits.

/** Linux's USER_HZ: /proc counts CPU time in hundredths of a second. */
const TICKS_PER_SECOND = 100
const LOG_LINES_KEPT = 200

/** A port nobody listens on right now (the server is told it; PORT=0 could not be read back). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer()
    probe.once('error', reject)
    probe.listen(0, host, () => {
      const address = probe.address()
      const port = typeof address === 'object' && address ? address.port : 0
      probe.close(() => resolve(port))
    })
  })
}

const built = new Set<string>()

/**
 * Node's arguments for the server as production runs it (`npm run serve`):
 * bundled by `npm run build` (once per benchmark process) and run by plain
 * node with the options of package.json's `serve` script, read from there so
 * that the benchmarks cannot drift from it. Under tsx the same server holds
 * ~85 MB more (the loader's transforms), which the benchmarks' memory figures
 * would count.
 */
export function builtServerArgs(cwd: string): string[] {
  if (!built.has(cwd)) {
    execFileSync('npm', ['run', '--silent', 'build'], { cwd, stdio: 'inherit' })
    built.add(cwd)
  }
  const serve = (
    JSON.parse(readFileSync(`${cwd}/package.json`, 'utf8')) as { scripts: Record<string, string> }
  ).scripts.serve
  const words = serve?.trim().split(/\s+/) ?? []
  if (words[0] !== 'node' || words.at(-1) !== 'dist/server/main.mjs')
    throw new Error(`package.json's serve script is not "node [options] dist/server/main.mjs": ${serve}`)
  return words.slice(1)
}

export interface ServerProcess {
  pid: number
  /** http://host:port, no trailing slash. */
  url: string
  /** The server's last output lines (pino JSON at the level it was given). */
  logs(): string[]
  /** Lines printed since start. */
  logLineCount(): number
  /** Every line printed since start, grouped: "level msg: error" → count. */
  logSummary(): Map<string, number>
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when it has exited. */
  stop(graceMs?: number): Promise<void>
}

export async function startServerProcess(options: {
  /** Arguments to node, e.g. ['--import', 'tsx', 'src/main.ts']. */
  args: string[]
  cwd: string
  env: NodeJS.ProcessEnv
  host: string
  port: number
  readyTimeoutMs?: number
}): Promise<ServerProcess> {
  const child: ChildProcess = spawn(process.execPath, options.args, {
    cwd: options.cwd,
    env: options.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const lines: string[] = []
  const summary = new Map<string, number>()
  let lineCount = 0
  // A chunk may end in the middle of a line: the rest comes with the next one.
  const partial = { stdout: '', stderr: '' }
  // BENCH_SERVER_LOG=FILE: every line the server prints, also into FILE (node --trace-gc, say).
  const copy = process.env.BENCH_SERVER_LOG ? createWriteStream(process.env.BENCH_SERVER_LOG) : undefined
  const collect = (stream: 'stdout' | 'stderr') => (chunk: Buffer) => {
    copy?.write(chunk)
    const text = partial[stream] + chunk.toString('utf8')
    const complete = text.split('\n')
    partial[stream] = complete.pop() ?? ''
    for (const line of complete) {
      if (line.trim() === '') continue
      lineCount++
      lines.push(line)
      if (lines.length > LOG_LINES_KEPT) lines.shift()
      const key = summarizeLogLine(line)
      summary.set(key, (summary.get(key) ?? 0) + 1)
    }
  }
  child.stdout?.on('data', collect('stdout'))
  child.stderr?.on('data', collect('stderr'))
  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined
  const exit = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exited = { code, signal }
      resolve()
    })
  })
  if (child.pid === undefined) throw new Error('server process did not start')
  const pid = child.pid
  const url = `http://${options.host}:${options.port}`

  const stop = async (graceMs = 10_000): Promise<void> => {
    if (exited) return
    child.kill('SIGTERM')
    const timer = setTimeout(() => {
      if (!exited) child.kill('SIGKILL')
    }, graceMs)
    await exit
    clearTimeout(timer)
  }

  const deadline = Date.now() + (options.readyTimeoutMs ?? 60_000)
  for (;;) {
    if (exited) {
      throw new Error(
        `server exited before it was ready (code ${exited.code}, signal ${exited.signal}):\n${lines.join('\n')}`,
      )
    }
    try {
      const response = await fetch(`${url}/ready`)
      await response.arrayBuffer()
      if (response.ok) break
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop()
      throw new Error(`server not ready after ${options.readyTimeoutMs ?? 60_000} ms:\n${lines.join('\n')}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  return {
    pid,
    url,
    logs: () => [...lines],
    logLineCount: () => lineCount,
    logSummary: () => new Map(summary),
    stop,
  }
}

const PINO_LEVELS: Record<number, string> = {
  10: 'trace',
  20: 'debug',
  30: 'info',
  40: 'warn',
  50: 'error',
  60: 'fatal',
}

/** A pino line as "level msg: ErrorType message"; any other line as its first 200 characters. */
function summarizeLogLine(line: string): string {
  try {
    const entry = JSON.parse(line) as {
      level?: number
      msg?: string
      err?: { type?: string; message?: string }
    }
    const level = PINO_LEVELS[entry.level ?? 0] ?? String(entry.level)
    const err = entry.err ? `: ${entry.err.type ?? 'Error'} ${entry.err.message ?? ''}`.trimEnd() : ''
    return `${level} ${entry.msg ?? ''}${err}`
  } catch {
    return line.slice(0, 200)
  }
}

interface ProcStat {
  command: string
  ppid: number
  /** utime + stime, in seconds. */
  cpuSeconds: number
}

function readStat(pid: number | string): ProcStat | undefined {
  let stat: string
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return undefined
  }
  const close = stat.lastIndexOf(')')
  const command = stat.slice(stat.indexOf('(') + 1, close)
  // Fields after the command: state is field 3, ppid 4; utime and stime are fields 14 and 15.
  const fields = stat.slice(close + 2).split(' ')
  return {
    command,
    ppid: Number(fields[1]),
    cpuSeconds: (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND,
  }
}

function allPids(): number[] {
  try {
    return readdirSync('/proc')
      .filter((d) => /^\d+$/.test(d))
      .map(Number)
  } catch {
    return []
  }
}

/** CPU seconds (user + system) of one process so far; NaN when unreadable. */
export function processCpuSeconds(pid: number): number {
  return readStat(pid)?.cpuSeconds ?? Number.NaN
}

/** CPU seconds per process whose command name is `command` (e.g. every PostgreSQL backend). */
export function cpuByCommand(command: string): Map<number, number> {
  return byCommand(command, (stat) => stat.cpuSeconds)
}

/** `read` of every process whose command name is `command`, by pid (from one reading of its stat). */
function byCommand<T>(command: string, read: (stat: ProcStat, pid: number) => T): Map<number, T> {
  const result = new Map<number, T>()
  for (const pid of allPids()) {
    const stat = readStat(pid)
    if (stat?.command === command) result.set(pid, read(stat, pid))
  }
  return result
}

/** CPU used between two cpuByCommand() readings; a process first seen in `after` counts whole. */
export function cpuDelta(before: Map<number, number>, after: Map<number, number>): number {
  let seconds = 0
  for (const [pid, cpu] of after) seconds += cpu - (before.get(pid) ?? 0)
  return seconds
}

/** This process and its ancestors (npm, sh, tsx): not "another" benchmark. */
function ownLineage(): Set<number> {
  const pids = new Set<number>()
  for (let pid = process.pid; pid > 1 && !pids.has(pid); ) {
    pids.add(pid)
    const stat = readStat(pid)
    if (!stat) break
    pid = stat.ppid
  }
  return pids
}

/** Command lines of other benchmarks or test runs on this machine (their figures and ours would mix). */
export function otherBenchmarksRunning(pattern = /bench\/|vitest/): string[] {
  const own = ownLineage()
  const found: string[] = []
  for (const pid of allPids()) {
    if (own.has(pid)) continue
    let cmdline: string
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim()
    } catch {
      continue
    }
    if (pattern.test(cmdline)) found.push(`${pid} ${cmdline}`)
  }
  return found
}

/**
 * The environment of a benchmarked server: this process's environment
 * without settings that would change what is measured, production mode, a
 * fresh database, a random JWT secret, warnings only, and the mutation rate
 * limit out of the way (it would cap each sender at 20 mutations/s).
 */
export function benchServerEnv(options: {
  host: string
  port: number
  databaseUrl: string
  jwtSecret: string
  extra?: Record<string, string>
}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env }
  for (const name of ['JWT_ISSUER', 'JWT_AUDIENCE', 'REDIS_URL', 'PGLITE_DIR', 'DATABASE_POOL_MAX'])
    delete env[name]
  return Object.assign(env, {
    NODE_ENV: 'production',
    HOST: options.host,
    PORT: String(options.port),
    DATABASE_URL: options.databaseUrl,
    JWT_SECRET: options.jwtSecret,
    LOG_LEVEL: 'warn',
    RATE_LIMIT_MUTATIONS_PER_SECOND: '100000',
    RATE_LIMIT_MUTATIONS_BURST: '100000',
    ...options.extra,
  })
}

/**
 * Scheduler time of threads so far (/proc/<pid>/task/<tid>/schedstat): on a
 * CPU, and runnable but waiting for one (the run queue). On a machine whose
 * cores the server, PostgreSQL and the load generator share, a thread that
 * waits for a CPU is neither working nor idle: this tells the two apart.
 */
export interface SchedTimes {
  /** Seconds on a CPU. */
  running: number
  /** Seconds runnable, waiting for a CPU. */
  waiting: number
}

function readSchedstat(path: string): SchedTimes | undefined {
  try {
    const [running, waiting] = readFileSync(path, 'utf8').split(' ').map(Number)
    return { running: (running ?? 0) / 1e9, waiting: (waiting ?? 0) / 1e9 }
  } catch {
    return undefined
  }
}

/** One thread's scheduler times (the main thread's tid is the process's pid); zero when unreadable. */
export function threadSched(pid: number, tid: number | string = pid): SchedTimes {
  return readSchedstat(`/proc/${pid}/task/${tid}/schedstat`) ?? { running: 0, waiting: 0 }
}

/** Scheduler times of every thread of the processes named `command`, by pid (their threads summed). */
export function schedByCommand(command: string): Map<number, SchedTimes> {
  return byCommand(command, (_stat, pid) => processSched(pid))
}

/** A process's threads' scheduler times, summed. */
export function processSched(pid: number): SchedTimes {
  const total = { running: 0, waiting: 0 }
  let tids: string[] = []
  try {
    tids = readdirSync(`/proc/${pid}/task`)
  } catch {
    return total
  }
  for (const tid of tids) {
    const times = threadSched(pid, tid)
    total.running += times.running
    total.waiting += times.waiting
  }
  return total
}

/** What changed between two readings of schedByCommand; a process first seen in `after` counts whole. */
export function schedDelta(before: Map<number, SchedTimes>, after: Map<number, SchedTimes>): SchedTimes {
  const delta = { running: 0, waiting: 0 }
  for (const [pid, times] of after) {
    const was = before.get(pid) ?? { running: 0, waiting: 0 }
    delta.running += times.running - was.running
    delta.waiting += times.waiting - was.waiting
  }
  return delta
}
