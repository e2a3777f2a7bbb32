import { readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'

// A summary of a V8 CPU profile (node --cpu-prof): where the time went, by
// package or source folder (self time), and the functions of src/ with the
// most time spent in them and what they call (inclusive time).

interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  children?: number[]
}

interface Profile {
  nodes: ProfileNode[]
  samples: number[]
  timeDeltas: number[]
  startTime: number
  endTime: number
}

export interface ProfileSummary {
  file: string
  /** Profiled wall time (within the windows), ms. */
  totalMs: number
  /** Self time by area (a package, a folder of src/, node internals, GC, idle), ms, most first. */
  byArea: [string, number][]
  /** Inclusive time of functions in src/, ms, most first. */
  srcInclusive: [string, number][]
  /** Self time by function, ms, most first. */
  topSelf: [string, number][]
}

function area(url: string, functionName: string): string {
  if (url === '') {
    if (functionName === '(idle)' || functionName === '(program)' || functionName === '(garbage collector)')
      return functionName
    return '(native)'
  }
  if (url.startsWith('node:')) return 'node internals'
  const modules = url.lastIndexOf('/node_modules/')
  if (modules >= 0) {
    const rest = url.slice(modules + '/node_modules/'.length).split('/')
    return rest[0]?.startsWith('@') ? `${rest[0]}/${rest[1]}` : (rest[0] ?? url)
  }
  const src = url.indexOf('/src/')
  if (src >= 0) {
    const rest = url.slice(src + 1).split('/')
    return rest.length > 2 ? `${rest[0]}/${rest[1]}/` : (rest.slice(0, 2).join('/') ?? url)
  }
  return url
}

function functionKey(node: ProfileNode): string {
  const { functionName, url, lineNumber } = node.callFrame
  const file =
    url === ''
      ? ''
      : ` ${url.slice(url.lastIndexOf('/src/') >= 0 ? url.lastIndexOf('/src/') + 1 : url.lastIndexOf('/') + 1)}:${lineNumber + 1}`
  return `${functionName || '(anonymous)'}${file}`
}

/**
 * `windows`: only samples taken within these intervals count, in
 * microseconds of the monotonic clock (process.hrtime.bigint() / 1000n in any
 * process of the machine: V8 stamps samples with the same clock).
 */
export function summarizeProfile(
  file: string,
  options: { top?: number; windows?: [number, number][] } = {},
): ProfileSummary {
  const top = options.top ?? 15
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const parent = new Map<number, number>()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const selfByArea = new Map<string, number>()
  const selfByFunction = new Map<string, number>()
  const inclusive = new Map<string, number>()
  let at = profile.startTime
  let totalMs = 0
  for (const [i, id] of profile.samples.entries()) {
    const delta = profile.timeDeltas[i] ?? 0
    at += delta
    if (options.windows && !options.windows.some(([from, to]) => at >= from && at <= to)) continue
    const ms = delta / 1000
    totalMs += ms
    const leaf = byId.get(id)
    if (!leaf) continue
    const a = area(leaf.callFrame.url, leaf.callFrame.functionName)
    selfByArea.set(a, (selfByArea.get(a) ?? 0) + ms)
    const leafKey = functionKey(leaf)
    selfByFunction.set(leafKey, (selfByFunction.get(leafKey) ?? 0) + ms)
    // Inclusive: every distinct src/ function on the stack, once per sample.
    const seen = new Set<string>()
    for (let n: ProfileNode | undefined = leaf; n; n = byId.get(parent.get(n.id) ?? -1)) {
      if (!n.callFrame.url.includes('/src/') || n.callFrame.url.includes('/node_modules/')) continue
      const key = functionKey(n)
      if (seen.has(key)) continue
      seen.add(key)
      inclusive.set(key, (inclusive.get(key) ?? 0) + ms)
    }
  }
  const sorted = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1])
  return {
    file,
    totalMs,
    byArea: sorted(selfByArea).slice(0, top),
    srcInclusive: sorted(inclusive).slice(0, top),
    topSelf: sorted(selfByFunction).slice(0, top),
  }
}

/** The newest main-thread .cpuprofile in `dir`, if any. */
export function newestProfile(dir: string): string | undefined {
  const files = readdirSync(dir)
    // CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile: thread 0 is the main thread.
    .filter((f) => /\.0\.\d+\.cpuprofile$/.test(f))
    .sort()
  const last = files.at(-1)
  return last === undefined ? undefined : path.join(dir, last)
}
