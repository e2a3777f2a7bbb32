import os from 'node:os'

/** Nearest-rank percentile of ascending-sorted values (p in 0..100). */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN
  const rank = Math.ceil((p / 100) * sorted.length)
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1] as number
}

/** The middle value (the mean of the two middle ones for an even count); NaN for none. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2
}

/** Latencies in milliseconds, summarised. */
export function summarize(latenciesMs: number[]): {
  p50Ms: number
  p99Ms: number
  maxMs: number
  meanMs: number
} {
  const sorted = Float64Array.from(latenciesMs).sort()
  const values = Array.from(sorted)
  const sum = values.reduce((a, b) => a + b, 0)
  return {
    p50Ms: percentile(values, 50),
    p99Ms: percentile(values, 99),
    maxMs: values.at(-1) ?? Number.NaN,
    meanMs: values.length === 0 ? Number.NaN : sum / values.length,
  }
}

/**
 * Where the CPU went over an interval: this Node process (in % of one core)
 * and the whole machine (in % of all cores). On a machine that runs only the
 * benchmark and the database, the rest is mostly PostgreSQL.
 */
export class CpuMeter {
  private readonly processStart = process.cpuUsage()
  private readonly machineStart = machineTimes()
  private readonly wallStart = performance.now()

  read(): { nodePercentOfCore: number; machinePercent: number } {
    const used = process.cpuUsage(this.processStart)
    const wallMs = performance.now() - this.wallStart
    const now = machineTimes()
    const busy = now.busy - this.machineStart.busy
    const total = now.total - this.machineStart.total
    return {
      nodePercentOfCore: ((used.user + used.system) / 1000 / wallMs) * 100,
      machinePercent: total > 0 ? (busy / total) * 100 : Number.NaN,
    }
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

export const fmt = (value: number, digits = 0): string =>
  Number.isFinite(value)
    ? value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
    : 'n/a'
