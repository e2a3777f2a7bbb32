import { type ChildProcess, fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { fileURLToPath } from 'node:url'
import WebSocket, { WebSocketServer } from 'ws'
import { signToken } from '../src/auth/tokens.js'
import { type Interference, InterferenceMonitor } from './support/interference.js'
import { createScratchDatabase, machineFacts } from './support/scratch.js'
import {
  benchServerEnv,
  builtServerArgs,
  freePort,
  otherBenchmarksRunning,
  processCpuSeconds,
  type ServerProcess,
  startServerProcess,
} from './support/server-process.js'
import { fmt } from './support/stats.js'

// bench:live: one live stream, N WebSocket subscribers of liveGifts on one
// server instance (src/main.ts in a child process, fresh PostgreSQL
// database), G gifts/s for S seconds sent over HTTP. Measured at every
// subscriber: receipt time − the event's sentAt (database clock, same
// machine), p50/p99; deliveries/s; the server's RSS before and after the
// subscribers connect (idle), per subscriber. Baseline in the same run: a
// plain `ws` server (child process) sending the same bytes to as many
// sockets at the same rate, each message stamped with the time it was due
// (so that its delays, like the feed's, include falling behind).
// Also per phase: the CPU the server (or the baseline server) and the client
// processes used, close codes seen by the clients (4421: cut as a slow
// consumer), and the CPU other processes used meanwhile (interference).
//
// Subscribers live in several client processes (--client-processes); each
// speaks the graphql-transport-ws protocol (what graphql-ws's client sends)
// directly over `ws`, one socket and one subscription per subscriber, and
// reads sentAt out of each message without parsing all of it: the clients
// share the machine's cores with the server.
//
//   npm run bench:live -- [--subscribers 5000] [--rate 20] [--seconds 30] [--client-processes 2]
//     [--wait-quiet 480] [--quiet-cpu-percent 15] [--drain-ms 10000]
//     [--server-cpu-prof <dir>] (the server's CPU profile, written when it stops)
//
// --wait-quiet: seconds to wait, in all, for other benchmarks to end and then,
// before each phase, for other processes to use at most --quiet-cpu-percent
// of the machine's CPU over 5 s; past it, the run measures anyway (and says so).

const SELF = fileURLToPath(import.meta.url)
const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url))
const HOST = '127.0.0.1'
const HISTOGRAM_MS = 120_000
const QUIET_POLL_MS = 30_000
const QUIET_WINDOW_MS = 5_000

const LIVE_GIFTS = `subscription LiveGifts($streamId: ID!, $afterSequence: Int) {
  liveGifts(streamId: $streamId, afterSequence: $afterSequence) {
    id sequence sender { id handle displayName } gift { id name coinCost imageUrl } quantity coins combo sentAt
  }
}`

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? Number(process.argv[i + 1]) : fallback
}
function flagString(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1] : undefined
}

// ---- a client process: `count` sockets, a delay histogram ---------------------

type ClientMessage =
  | { kind: 'connected'; sockets: number; failed: number }
  | {
      kind: 'report'
      received: number
      histogram: number[]
      lastReceiptAt: number
      firstReceiptAt: number
      /** Close code → sockets closed with it since the last report. */
      closes: Record<string, number>
    }

function runClient(): void {
  const url = flagString('url') as string
  const count = flag('count', 0)
  const mode = flagString('mode') as 'graphql' | 'plain'
  const streamId = flagString('stream') ?? ''
  const histogram = new Uint32Array(HISTOGRAM_MS + 1)
  let received = 0
  let firstReceiptAt = 0
  let lastReceiptAt = 0
  const sockets: WebSocket[] = []
  let open = 0
  let failed = 0
  let closes: Record<string, number> = {}
  const MARK = '"sentAt":"'
  const onMessage = (data: WebSocket.RawData) => {
    const text = String(data)
    const at = text.indexOf(MARK)
    if (at < 0) return
    const sentAt = Date.parse(text.slice(at + MARK.length, text.indexOf('"', at + MARK.length)))
    const now = Date.now()
    received++
    if (firstReceiptAt === 0) firstReceiptAt = now
    lastReceiptAt = now
    const bucket = Math.max(0, Math.min(HISTOGRAM_MS, Math.round(now - sentAt)))
    histogram[bucket] = (histogram[bucket] ?? 0) + 1
  }
  const connectOne = (i: number) =>
    new Promise<void>((resolve) => {
      const socket = new WebSocket(url, mode === 'graphql' ? 'graphql-transport-ws' : undefined)
      sockets.push(socket)
      socket.on('open', () => {
        if (mode === 'plain') {
          open++
          resolve()
          return
        }
        socket.send(JSON.stringify({ type: 'connection_init', payload: {} }))
      })
      socket.on('message', (data) => {
        if (mode === 'graphql' && !socket.protocolOk) {
          const message = JSON.parse(String(data)) as { type: string }
          if (message.type === 'connection_ack') {
            socket.protocolOk = true
            socket.send(
              JSON.stringify({
                id: `s${i}`,
                type: 'subscribe',
                payload: { query: LIVE_GIFTS, operationName: 'LiveGifts', variables: { streamId } },
              }),
            )
            open++
            resolve()
          }
          return
        }
        onMessage(data)
      })
      socket.on('error', () => {
        failed++
        resolve()
      })
      socket.on('close', (code) => {
        closes[code] = (closes[code] ?? 0) + 1
      })
    })
  const connectAll = async () => {
    // A few hundred at a time: the server's accept queue is finite.
    for (let i = 0; i < count; i += 200) {
      await Promise.all(Array.from({ length: Math.min(200, count - i) }, (_, k) => connectOne(i + k)))
    }
    process.send?.({ kind: 'connected', sockets: open, failed } satisfies ClientMessage)
  }
  process.on('message', (message: { kind: string }) => {
    if (message.kind === 'report') {
      const buckets: number[] = []
      for (let ms = 0; ms <= HISTOGRAM_MS; ms++) if (histogram[ms]) buckets.push(ms, histogram[ms] as number)
      process.send?.({
        kind: 'report',
        received,
        histogram: buckets,
        firstReceiptAt,
        lastReceiptAt,
        closes,
      } satisfies ClientMessage)
      closes = {}
      received = 0
      histogram.fill(0)
      firstReceiptAt = 0
      lastReceiptAt = 0
    }
    if (message.kind === 'exit') {
      for (const socket of sockets) socket.removeAllListeners('close').terminate()
      process.exit(0)
    }
  })
  void connectAll()
}

declare module 'ws' {
  interface WebSocket {
    protocolOk?: boolean
  }
}

// ---- the baseline server: the same bytes to every socket ----------------------

function runBaselineServer(): void {
  const port = flag('port', 0)
  const template = readFileSync(flagString('template') as string, 'utf8')
  const wss = new WebSocketServer({ host: HOST, port, perMessageDeflate: false })
  wss.on('listening', () => process.send?.({ kind: 'listening' }))
  process.on('message', (message: { kind: string; rate?: number; seconds?: number }) => {
    if (message.kind === 'rss') process.send?.({ kind: 'rss', rss: process.memoryUsage().rss })
    if (message.kind === 'run') {
      const rate = message.rate as number
      const total = rate * (message.seconds as number)
      const started = performance.now()
      const startedAt = Date.now()
      let sent = 0
      const tick = () => {
        const due = Math.min(total, Math.floor(((performance.now() - started) / 1000) * rate) + 1)
        while (sent < due) {
          // One buffer per message, the same for every socket. sentAt is when the message was
          // due (the same length), not when it is sent: a baseline that falls behind shows it.
          const dueAt = new Date(startedAt + Math.round((sent * 1000) / rate))
          sent++
          const bytes = Buffer.from(template.replace('__SENT_AT__', dueAt.toISOString()))
          for (const client of wss.clients) client.send(bytes)
        }
        if (sent < total) setTimeout(tick, 5)
        else process.send?.({ kind: 'done', sent })
      }
      tick()
    }
  })
}

// ---- the orchestrator --------------------------------------------------------------

interface ClientSet {
  children: ChildProcess[]
  report(): Promise<{
    received: number
    delays: Map<number, number>
    first: number
    last: number
    closes: Map<string, number>
  }>
  /** CPU seconds the client processes used so far. */
  cpuSeconds(): number
  stop(): void
}

async function startClients(
  url: string,
  subscribers: number,
  processes: number,
  mode: 'graphql' | 'plain',
  streamId: string,
): Promise<{ clients: ClientSet; sockets: number; failed: number; seconds: number }> {
  const started = performance.now()
  const children: ChildProcess[] = []
  const connected: Promise<ClientMessage>[] = []
  for (let p = 0; p < processes; p++) {
    const count = Math.floor(subscribers / processes) + (p < subscribers % processes ? 1 : 0)
    const child = fork(
      SELF,
      ['--role', 'client', '--url', url, '--count', String(count), '--mode', mode, '--stream', streamId],
      { execArgv: process.execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
    )
    children.push(child)
    connected.push(new Promise((resolve) => child.once('message', (m) => resolve(m as ClientMessage))))
  }
  const results = await Promise.all(connected)
  let sockets = 0
  let failed = 0
  for (const r of results) {
    if (r.kind === 'connected') {
      sockets += r.sockets
      failed += r.failed
    }
  }
  const clients: ClientSet = {
    children,
    async report() {
      const reports = await Promise.all(
        children.map(
          (child) =>
            new Promise<ClientMessage>((resolve) => {
              child.once('message', (m) => resolve(m as ClientMessage))
              child.send({ kind: 'report' })
            }),
        ),
      )
      const delays = new Map<number, number>()
      const closes = new Map<string, number>()
      let received = 0
      let first = Number.POSITIVE_INFINITY
      let last = 0
      for (const r of reports) {
        if (r.kind !== 'report') continue
        received += r.received
        for (const [code, n] of Object.entries(r.closes)) closes.set(code, (closes.get(code) ?? 0) + n)
        if (r.firstReceiptAt) first = Math.min(first, r.firstReceiptAt)
        last = Math.max(last, r.lastReceiptAt)
        for (let i = 0; i < r.histogram.length; i += 2)
          delays.set(
            r.histogram[i] as number,
            (delays.get(r.histogram[i] as number) ?? 0) + (r.histogram[i + 1] as number),
          )
      }
      return { received, delays, first, last, closes }
    },
    cpuSeconds() {
      return children.reduce((sum, child) => sum + processCpuSeconds(child.pid as number), 0)
    },
    stop() {
      for (const child of children) child.send({ kind: 'exit' })
    },
  }
  return { clients, sockets, failed, seconds: (performance.now() - started) / 1000 }
}

function percentileOf(delays: Map<number, number>, p: number): number {
  const sorted = [...delays.entries()].sort((a, b) => a[0] - b[0])
  const total = sorted.reduce((s, [, n]) => s + n, 0)
  const rank = Math.max(1, Math.ceil((p / 100) * total))
  let seen = 0
  for (const [ms, n] of sorted) {
    seen += n
    if (seen >= rank) return ms
  }
  return Number.NaN
}

function rssOf(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN)
  return kb * 1024
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

async function graphql(url: string, token: string, query: string, variables: Record<string, unknown> = {}) {
  const response = await fetch(`${url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: token },
    body: JSON.stringify({ query, variables }),
  })
  const body = (await response.json()) as { data?: Record<string, unknown>; errors?: unknown[] }
  if (body.errors) throw new Error(`graphql: ${JSON.stringify(body.errors)}`)
  return body.data as Record<string, any>
}

interface PhaseResult {
  label: string
  closes: Map<string, number>
  /** CPU seconds of the server (or the baseline server) and of the client processes, from the first message sent to the report. */
  serverCpuSeconds: number
  clientCpuSeconds: number
  interference: Interference
  sockets: number
  sent: number
  received: number
  expected: number
  deliveriesPerSecond: number
  p50: number
  p99: number
  max: number
  rssIdleBytesPerSocket: number
}

function summarizePhase(
  label: string,
  sockets: number,
  sent: number,
  report: Awaited<ReturnType<ClientSet['report']>>,
  windowSeconds: number,
  rssPerSocket: number,
  cpu: { serverCpuSeconds: number; clientCpuSeconds: number; interference: Interference },
): PhaseResult {
  const max = Math.max(...report.delays.keys())
  return {
    label,
    closes: report.closes,
    ...cpu,
    sockets,
    sent,
    received: report.received,
    expected: sent * sockets,
    deliveriesPerSecond: report.received / windowSeconds,
    p50: percentileOf(report.delays, 50),
    p99: percentileOf(report.delays, 99),
    max,
    rssIdleBytesPerSocket: rssPerSocket,
  }
}

async function orchestrate(): Promise<void> {
  const subscribers = flag('subscribers', 5000)
  const rate = flag('rate', 20)
  const seconds = flag('seconds', 30)
  const processes = flag('client-processes', 2)
  const waitQuietSeconds = flag('wait-quiet', 480)
  const quietCpuPercent = flag('quiet-cpu-percent', 15)
  const drainMs = flag('drain-ms', 10_000)

  const waitStarted = Date.now()
  let others: string[] = []
  for (;;) {
    others = otherBenchmarksRunning(/bench\//).filter(
      (line) =>
        !/\bgrep\b|pgrep/.test(line) &&
        !line.includes(String(process.pid)) &&
        !line.includes('bench/live.ts'),
    )
    if (others.length === 0 || Date.now() - waitStarted >= waitQuietSeconds * 1000) break
    console.log(`waiting: another benchmark is running:\n  ${others.join('\n  ')}`)
    await sleep(QUIET_POLL_MS)
  }
  if (others.length > 0) console.log(`WARNING: measuring while others run:\n  ${others.join('\n  ')}`)
  const machine = await machineFacts()
  console.log(
    `machine: ${machine.cpus} CPUs, ${machine.memoryGiB} GiB, Node ${machine.node}, PostgreSQL ${machine.postgresVersion}, ${machine.dateUtc}`,
  )
  console.log(
    `load: ${subscribers} subscribers in ${processes} client processes, ${rate} gifts/s for ${seconds} s`,
  )

  const scratch = await createScratchDatabase('gl_bench_live')
  const monitor = new InterferenceMonitor()
  monitor.start()
  monitor.own(scratch.name)
  /** Waits, within what is left of --wait-quiet, until other processes are quiet over a window. */
  const untilQuiet = async (phase: string) => {
    for (;;) {
      const mark = monitor.mark()
      await sleep(QUIET_WINDOW_MS)
      const { otherCpuPercent } = monitor.since(mark)
      if (!(otherCpuPercent > quietCpuPercent)) return
      if (Date.now() - waitStarted >= waitQuietSeconds * 1000) {
        console.log(
          `WARNING: ${phase} measured while other processes use ${fmt(otherCpuPercent)}% of the CPU`,
        )
        return
      }
      console.log(`${phase}: waiting for quiet (other processes use ${fmt(otherCpuPercent)}% of the CPU)`)
    }
  }
  /** CPU used by this run's processes and by others, from here on. */
  const cpuFrom = (serverPid: number, clientSet: ClientSet) => {
    const mark = monitor.mark()
    const server0 = processCpuSeconds(serverPid)
    const clients0 = clientSet.cpuSeconds()
    return () => {
      const wallSeconds = (performance.now() - mark) / 1000
      const serverCpuSeconds = processCpuSeconds(serverPid) - server0
      const clientCpuSeconds = clientSet.cpuSeconds() - clients0
      const interference = monitor.since(mark)
      // The monitor counts every process but this one and PostgreSQL's: the server and the clients are ours.
      const ours = ((serverCpuSeconds + clientCpuSeconds) / wallSeconds / os.availableParallelism()) * 100
      interference.otherCpuPercent = Math.max(0, interference.otherCpuPercent - ours)
      return { serverCpuSeconds, clientCpuSeconds, interference }
    }
  }
  let server: ServerProcess | undefined
  let clients: ClientSet | undefined
  let baseline: ChildProcess | undefined
  const results: PhaseResult[] = []
  let template = ''
  try {
    const secret = randomBytes(32).toString('hex')
    const port = await freePort(HOST)
    const env = benchServerEnv({ host: HOST, port, databaseUrl: scratch.url, jwtSecret: secret })
    const profileDir = flagString('server-cpu-prof')
    server = await startServerProcess({
      args: [
        ...(profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : []),
        ...builtServerArgs(REPO_ROOT),
      ],
      cwd: REPO_ROOT,
      env,
      host: HOST,
      port,
    })
    const key = new TextEncoder().encode(secret)
    const runId = randomBytes(4).toString('hex')
    const token = async (name: string, roles: string[]) =>
      `Bearer ${await signToken(key, { sub: `bench|${runId}|${name}`, preferred_username: name, name, roles: roles as never }, { expiresIn: '6h' })}`
    const admin = await token('admin', ['admin'])
    const creator = await token('creator', ['creator'])
    const senders = await Promise.all(Array.from({ length: 8 }, (_, i) => token(`sender${i}`, [])))
    const catalog = await graphql(server.url, admin, '{ gifts { id name } }')
    const roseId = (catalog.gifts as { id: string; name: string }[]).find((g) => g.name === 'Rose')?.id
    const started = await graphql(
      server.url,
      creator,
      'mutation($title: String!) { startLiveStream(input: { title: $title }) { liveStream { id } } }',
      { title: 'bench' },
    )
    const streamId = started.startLiveStream.liveStream.id as string
    for (const [i, sender] of senders.entries()) {
      const me = await graphql(server.url, sender, '{ me { user { id } } }')
      await graphql(
        server.url,
        admin,
        'mutation($userId: ID!, $coins: Amount!, $key: String!) { grantCoins(input: { userId: $userId, coins: $coins, reason: "bench", idempotencyKey: $key }) { userErrors { code } } }',
        { userId: me.me.user.id, coins: '10000000', key: `bench-live-grant-${runId}-${i}` },
      )
    }

    // ---- the live feed --------------------------------------------------------------
    await sleep(2_000)
    const rssBefore = rssOf(server.pid)
    const connected = await startClients(
      `${server.url.replace('http', 'ws')}/graphql`,
      subscribers,
      processes,
      'graphql',
      streamId,
    )
    clients = connected.clients
    console.log(
      `feed: ${connected.sockets} subscribed (${connected.failed} failed) in ${fmt(connected.seconds, 1)} s`,
    )
    await sleep(5_000)
    const rssAfter = rssOf(server.pid)
    const perSubscriber = (rssAfter - rssBefore) / Math.max(1, connected.sockets)
    console.log(
      `feed: server RSS ${fmt(rssBefore / 2 ** 20, 1)} -> ${fmt(rssAfter / 2 ** 20, 1)} MiB idle: ${fmt(perSubscriber / 1024, 1)} KiB per subscriber`,
    )
    let sent = 0
    let sendErrors = 0
    const total = rate * seconds
    await untilQuiet('feed')
    const feedCpu = cpuFrom(server.pid, clients)
    const sendStarted = performance.now()
    const inflight: Promise<void>[] = []
    while (sent < total) {
      const due = Math.min(total, Math.floor(((performance.now() - sendStarted) / 1000) * rate) + 1)
      while (sent < due) {
        const n = sent++
        inflight.push(
          graphql(
            server.url,
            senders[n % senders.length] as string,
            'mutation($input: SendGiftInput!) { sendGift(input: $input) { giftEvent { sequence sentAt } userErrors { code message } } }',
            { input: { giftId: roseId, liveStreamId: streamId, idempotencyKey: `bench-live-${runId}-${n}` } },
          ).then(
            (data) => {
              if (data.sendGift.userErrors.length > 0) {
                sendErrors++
                if (sendErrors <= 3) console.log(`sendGift: ${JSON.stringify(data.sendGift.userErrors)}`)
              }
            },
            (error) => {
              sendErrors++
              if (sendErrors <= 3) console.log(`sendGift: ${error}`)
            },
          ),
        )
      }
      await sleep(5)
    }
    await Promise.all(inflight)
    const sendSeconds = (performance.now() - sendStarted) / 1000
    await sleep(drainMs)
    const feedReport = await clients.report()
    const feedCpuUsed = feedCpu()
    const feedWindow = (feedReport.last - feedReport.first) / 1000
    const delivered = sent - sendErrors
    results.push(
      summarizePhase(
        'GraphQL liveGifts (graphql-ws)',
        connected.sockets,
        delivered,
        feedReport,
        feedWindow,
        perSubscriber,
        feedCpuUsed,
      ),
    )
    console.log(
      `feed: ${delivered} gifts sent in ${fmt(sendSeconds, 1)} s (${sendErrors} refused/failed); ${feedReport.received} received of ${delivered * connected.sockets}`,
    )
    // One real message, for the baseline's bytes.
    const sample = await new Promise<string>((resolve, reject) => {
      const socket = new WebSocket(`${server?.url.replace('http', 'ws')}/graphql`, 'graphql-transport-ws')
      socket.on('open', () => socket.send(JSON.stringify({ type: 'connection_init', payload: {} })))
      socket.on('message', (data) => {
        const message = JSON.parse(String(data)) as { type: string }
        if (message.type === 'connection_ack')
          socket.send(
            JSON.stringify({
              // The longest of the subscribers' ids: the baseline sends a real subscriber's bytes.
              id: `s${subscribers - 1}`,
              type: 'subscribe',
              payload: {
                query: LIVE_GIFTS,
                operationName: 'LiveGifts',
                variables: { streamId, afterSequence: 0 },
              },
            }),
          )
        if (message.type === 'next') {
          socket.terminate()
          resolve(String(data))
        }
      })
      socket.on('error', reject)
    })
    template = sample.replace(/"sentAt":"[^"]*"/, '"sentAt":"__SENT_AT__"')
    clients.stop()
    clients = undefined
    await server.stop()
    server = undefined

    // ---- the baseline: a plain ws server ------------------------------------------
    const templatePath = `/tmp/bench-live-template-${runId}.json`
    writeFileSync(templatePath, template)
    const basePort = await freePort(HOST)
    baseline = fork(
      SELF,
      ['--role', 'baseline-server', '--port', String(basePort), '--template', templatePath],
      {
        execArgv: process.execArgv,
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      },
    )
    const base = baseline
    const ask = <T>(message: object, kind: string) =>
      new Promise<T>((resolve) => {
        const on = (m: { kind: string }) => {
          if (m.kind !== kind) return
          base.off('message', on)
          resolve(m as T)
        }
        base.on('message', on)
        base.send(message)
      })
    await new Promise((resolve) => base.once('message', resolve))
    await sleep(1_000)
    const baseRssBefore = (await ask<{ rss: number }>({ kind: 'rss' }, 'rss')).rss
    const baseConnected = await startClients(`ws://${HOST}:${basePort}`, subscribers, processes, 'plain', '')
    clients = baseConnected.clients
    await sleep(5_000)
    const baseRssAfter = (await ask<{ rss: number }>({ kind: 'rss' }, 'rss')).rss
    const basePer = (baseRssAfter - baseRssBefore) / Math.max(1, baseConnected.sockets)
    console.log(
      `baseline: ${baseConnected.sockets} sockets (${baseConnected.failed} failed); ${fmt(basePer / 1024, 1)} KiB RSS per socket`,
    )
    await untilQuiet('baseline')
    const baseCpu = cpuFrom(base.pid as number, clients)
    const done = await ask<{ sent: number }>({ kind: 'run', rate, seconds }, 'done')
    await sleep(drainMs)
    const baseReport = await clients.report()
    const baseCpuUsed = baseCpu()
    results.push(
      summarizePhase(
        'plain ws broadcast (baseline)',
        baseConnected.sockets,
        done.sent,
        baseReport,
        (baseReport.last - baseReport.first) / 1000,
        basePer,
        baseCpuUsed,
      ),
    )
    clients.stop()
    clients = undefined

    // ---- the table ------------------------------------------------------------------
    console.log(
      `\n| | sockets | messages | received / expected | deliveries/s | delay p50 / p99 / max | idle RSS per socket |`,
    )
    console.log('|---|---|---|---|---|---|---|')
    for (const r of results) {
      console.log(
        `| ${r.label} | ${fmt(r.sockets)} | ${fmt(r.sent)} | ${fmt(r.received)} / ${fmt(r.expected)} (${fmt((100 * r.received) / r.expected, 1)}%) | ${fmt(r.deliveriesPerSecond)} | ${fmt(r.p50)} / ${fmt(r.p99)} / ${fmt(r.max)} ms | ${fmt(r.rssIdleBytesPerSocket / 1024, 1)} KiB |`,
      )
    }
    console.log(
      `\n| | server CPU | per 1,000 deliveries | client processes' CPU | close codes seen by clients | other processes' CPU (interference) |`,
    )
    console.log('|---|---|---|---|---|---|')
    for (const r of results) {
      const closes = [...r.closes].map(([code, n]) => `${code}: ${fmt(n)}`).join(', ') || 'none'
      console.log(
        `| ${r.label} | ${fmt(r.serverCpuSeconds, 1)} s | ${fmt((1000 * 1000 * r.serverCpuSeconds) / Math.max(1, r.received), 1)} ms | ${fmt(r.clientCpuSeconds, 1)} s | ${closes} | ${fmt(r.interference.otherCpuPercent)}% of ${os.availableParallelism()} cores, ${fmt(r.interference.otherActiveSessions, 1)} other active sessions |`,
      )
    }
    const [feed, plain] = results
    if (feed && plain) {
      console.log(
        `\nratio: ${fmt((100 * feed.deliveriesPerSecond) / plain.deliveriesPerSecond, 0)}% of the baseline's deliveries/s`,
      )
      console.log(
        `targets: p99 ${fmt(feed.p99)} ms (<= 250: ${feed.p99 <= 250 ? 'met' : 'NOT met'}), deliveries/s ${fmt((100 * feed.deliveriesPerSecond) / plain.deliveriesPerSecond)}% (>= 50%: ${feed.deliveriesPerSecond >= plain.deliveriesPerSecond / 2 ? 'met' : 'NOT met'}), idle memory ${fmt(feed.rssIdleBytesPerSocket / 1024, 1)} KiB (<= 50 KB: ${feed.rssIdleBytesPerSocket <= 50_000 ? 'met' : 'NOT met'})`,
      )
    }
  } finally {
    clients?.stop()
    baseline?.kill()
    await server?.stop()
    await monitor.stop()
    await scratch.drop()
  }
}

const role = flagString('role')
if (role === 'client') runClient()
else if (role === 'baseline-server') runBaselineServer()
else
  orchestrate().catch((error) => {
    console.error(error)
    process.exitCode = 1
  })
