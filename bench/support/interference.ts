import { readdirSync, readFileSync } from 'node:fs'
import os from 'node:os'
import postgres from 'postgres'
import { adminUrl } from './scratch.js'

// These machines are shared: other sessions run test suites on the same
// PostgreSQL server and the same two cores. A figure measured while they do
// is not the engine's. The monitor samples, every SAMPLE_MS, the sessions of
// other databases that are active on the server and the CPU of processes
// other than this one, PostgreSQL and pgbench, so that every figure comes
// with how quiet the machine was while it was measured.

const SAMPLE_MS = 250
/** Linux's USER_HZ: /proc counts CPU time in hundredths of a second. */
const TICKS_PER_SECOND = 100
const OWN_COMMANDS = new Set(['postgres', 'pgbench'])

interface Sample {
  at: number
  otherActiveSessions: number
  /** Cumulative CPU seconds of other processes since the monitor started. */
  otherCpuSeconds: number
}

export interface Interference {
  /** Average number of active sessions of other databases on the server. */
  otherActiveSessions: number
  /** CPU used by other processes (not this one, PostgreSQL or pgbench), in % of all cores. */
  otherCpuPercent: number
}

export class InterferenceMonitor {
  private readonly client = postgres(adminUrl, { max: 1, onnotice: () => {}, connect_timeout: 10 })
  private readonly ownDatabases = new Set<string>()
  private readonly samples: Sample[] = []
  private readonly lastTicks = new Map<number, number>()
  private otherCpuSeconds = 0
  private timer: NodeJS.Timeout | undefined
  private sampling = false
  private primed = false

  start(): void {
    this.readOtherCpu()
    this.timer = setInterval(() => void this.sample(), SAMPLE_MS)
  }

  /** A database of this benchmark: its sessions are not interference. */
  own(database: string): void {
    this.ownDatabases.add(database)
  }

  /** A point to measure from; `since(mark)` summarises the samples after it. */
  mark(): number {
    return performance.now()
  }

  since(mark: number): Interference {
    const window = this.samples.filter((s) => s.at >= mark)
    const first = window[0]
    const last = window.at(-1)
    if (!first || !last || window.length < 2)
      return { otherActiveSessions: Number.NaN, otherCpuPercent: Number.NaN }
    const seconds = (last.at - first.at) / 1000
    return {
      otherActiveSessions: window.reduce((a, s) => a + s.otherActiveSessions, 0) / window.length,
      otherCpuPercent:
        ((last.otherCpuSeconds - first.otherCpuSeconds) / seconds / os.availableParallelism()) * 100,
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.timer)
    await this.client.end({ timeout: 5 })
  }

  private async sample(): Promise<void> {
    if (this.sampling) return
    this.sampling = true
    try {
      const own = [...this.ownDatabases]
      const [row] = await this.client<{ n: number }[]>`
        select count(*)::int as n from pg_stat_activity
         where backend_type = 'client backend' and state <> 'idle' and pid <> pg_backend_pid()
           and not (datname = any(${own}::text[]))`
      this.readOtherCpu()
      this.samples.push({
        at: performance.now(),
        otherActiveSessions: row?.n ?? 0,
        otherCpuSeconds: this.otherCpuSeconds,
      })
    } catch {
      // A missed sample is not worth failing a benchmark for.
    } finally {
      this.sampling = false
    }
  }

  /** Adds the CPU that other processes used since the last read (Linux /proc; nothing elsewhere). */
  private readOtherCpu(): void {
    let pids: string[]
    try {
      pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d))
    } catch {
      return
    }
    for (const dir of pids) {
      const pid = Number(dir)
      if (pid === process.pid) continue
      let stat: string
      try {
        stat = readFileSync(`/proc/${dir}/stat`, 'utf8')
      } catch {
        continue // ended meanwhile
      }
      const close = stat.lastIndexOf(')')
      const command = stat.slice(stat.indexOf('(') + 1, close)
      if (OWN_COMMANDS.has(command)) continue
      // Fields after the command: state is field 3; utime and stime are fields 14 and 15.
      const fields = stat.slice(close + 2).split(' ')
      const ticks = Number(fields[11]) + Number(fields[12])
      const previous = this.lastTicks.get(pid)
      this.lastTicks.set(pid, ticks)
      // A process first seen after the first read started meanwhile: all its CPU is new.
      const since = previous ?? (this.primed ? 0 : ticks)
      if (ticks > since) this.otherCpuSeconds += (ticks - since) / TICKS_PER_SECOND
    }
    this.primed = true
  }
}
