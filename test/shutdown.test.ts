import { type ChildProcess, spawn } from 'node:child_process'
import http from 'node:http'
import net from 'node:net'
import { fileURLToPath } from 'node:url'
import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { freePort } from '../bench/support/server-process.js'
import { signToken } from '../src/auth/tokens.js'
import { CLOSE_CODES } from '../src/http/websocket.js'
import { stopInOrder } from '../src/ops/shutdown.js'
import { TEST_JWT_SECRET } from './support/app.js'
import { createTestDatabase, onPostgres, type TestDatabase } from './support/db.js'

// Graceful shutdown of the real server (src/main.ts) in a child process: on
// SIGTERM it stops accepting, lets an in-flight request finish, ends SSE
// streams, closes WebSockets with 1001, stops its jobs and the pool, and
// exits 0 within SHUTDOWN_TIMEOUT_MS. On PGlite (memory://) or, with
// TEST_DATABASE_URL, on a fresh PostgreSQL database.

const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url))
const HOST = '127.0.0.1'
const SHUTDOWN_TIMEOUT_MS = 8_000

interface Child {
  process: ChildProcess
  url: string
  port: number
  lines: string[]
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

let database: TestDatabase | undefined
let child: Child | undefined

async function startChild(): Promise<Child> {
  const port = await freePort(HOST)
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    NODE_ENV: 'production',
    HOST,
    PORT: String(port),
    JWT_SECRET: TEST_JWT_SECRET,
    LOG_LEVEL: 'info',
    SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS),
    ...(database?.url ? { DATABASE_URL: database.url } : { PGLITE_DIR: 'memory://' }),
  }
  const proc = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: REPO_ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const lines: string[] = []
  for (const stream of [proc.stdout, proc.stderr]) {
    let partial = ''
    stream?.on('data', (chunk: Buffer) => {
      const parts = (partial + chunk.toString('utf8')).split('\n')
      partial = parts.pop() ?? ''
      lines.push(...parts.filter((line) => line.trim() !== ''))
    })
  }
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('exit', (code, signal) => resolve({ code, signal })),
  )
  const url = `http://${HOST}:${port}`
  const deadline = Date.now() + 90_000
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`server exited at start:\n${lines.join('\n')}`)
    try {
      if ((await fetch(`${url}/ready`)).ok) break
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`server not ready:\n${lines.join('\n')}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  return { process: proc, url, port, lines, exited }
}

beforeAll(async () => {
  // On PostgreSQL the child gets a fresh, migrated database of its own; on PGlite it makes one in memory.
  if (onPostgres) database = await createTestDatabase()
  child = await startChild()
}, 120_000)

afterAll(async () => {
  if (child && child.process.exitCode === null) {
    child.process.kill('SIGKILL')
    await child.exited
  }
  await database?.drop()
})

/** Resolves when something accepts a TCP connection on the port, rejects with the error otherwise. */
function connect(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, HOST)
    socket.once('connect', () => {
      socket.destroy()
      resolve()
    })
    socket.once('error', reject)
  })
}

async function until(check: () => boolean, what: string, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/** A GraphQL POST whose body arrives in two parts: the request is in flight until `finish()`. */
function slowRequest(url: string, requestId: string) {
  const body = Buffer.from(JSON.stringify({ query: 'query SlowCatalog { gifts { id name coinCost } }' }))
  const half = Math.floor(body.length / 2)
  let resolveAnswer: (answer: { status: number; requestId: string | undefined; text: string }) => void =
    () => {}
  let rejectAnswer: (error: Error) => void = () => {}
  const answer = new Promise<{ status: number; requestId: string | undefined; text: string }>(
    (resolve, reject) => {
      resolveAnswer = resolve
      rejectAnswer = reject
    },
  )
  const req = http.request(`${url}/graphql`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json',
      'content-length': body.length,
      'x-request-id': requestId,
    },
  })
  req.on('response', (res) => {
    const chunks: Buffer[] = []
    res.on('data', (chunk: Buffer) => chunks.push(chunk))
    res.on('end', () =>
      resolveAnswer({
        status: res.statusCode ?? 0,
        requestId: res.headers['x-request-id'] as string | undefined,
        text: Buffer.concat(chunks).toString('utf8'),
      }),
    )
  })
  req.on('error', rejectAnswer)
  answer.catch(() => {}) // awaited by the test; not an unhandled rejection if the test stops first
  req.flushHeaders()
  req.write(body.subarray(0, half))
  return {
    answer,
    finish: () => {
      req.end(body.subarray(half))
    },
  }
}

describe('graceful shutdown on SIGTERM', () => {
  it('finishes the in-flight request, ends SSE, closes WebSockets with 1001, refuses new connections and exits 0 in time', async () => {
    const server = child as Child
    const token = await signToken(
      new TextEncoder().encode(TEST_JWT_SECRET),
      { sub: 'shutdown|viewer', preferred_username: 'viewer' },
      { expiresIn: '1h' },
    )

    // A WebSocket subscription.
    const socket = new WebSocket(`${server.url.replace('http', 'ws')}/graphql`, 'graphql-transport-ws')
    const messages: string[] = []
    socket.on('message', (data) => messages.push(String(data)))
    const wsClosed = new Promise<{ code: number; atMs: number }>((resolve) =>
      socket.once('close', (code) => resolve({ code, atMs: Date.now() })),
    )
    await new Promise((resolve) => socket.once('open', resolve))
    socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${token}` } }))
    await until(() => messages.some((m) => m.includes('connection_ack')), 'connection_ack')
    socket.send(
      JSON.stringify({
        id: '1',
        type: 'subscribe',
        payload: { query: 'subscription MyWallet { walletUpdated { coins } }' },
      }),
    )

    // An SSE subscription.
    const sse = await fetch(`${server.url}/graphql`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'text/event-stream',
        authorization: `Bearer ${token}`,
      },
      body: JSON.stringify({ query: 'subscription MyWallet { walletUpdated { coins } }' }),
    })
    expect(sse.headers.get('content-type')).toMatch(/^text\/event-stream/)
    const sseEnded = (async () => {
      const reader = (sse.body as ReadableStream<Uint8Array>).getReader()
      try {
        for (;;) if ((await reader.read()).done) return { how: 'ended', atMs: Date.now() }
      } catch {
        return { how: 'cut', atMs: Date.now() }
      }
    })()

    // A request in flight: its body is half sent.
    const slow = slowRequest(server.url, 'shutdown-slow-1')
    await new Promise((resolve) => setTimeout(resolve, 300))

    const signalledAtMs = Date.now()
    server.process.kill('SIGTERM')

    // The WebSocket is closed with 1001, and the SSE stream ended (not cut), at once.
    const closed = await wsClosed
    expect(closed.code).toBe(CLOSE_CODES.goingAway)
    expect(closed.atMs - signalledAtMs).toBeLessThan(2_000)
    const ended = await sseEnded
    expect(ended.how).toBe('ended')
    expect(ended.atMs - signalledAtMs).toBeLessThan(2_000)

    // New connections are refused while the in-flight request is still running.
    await expect(connect(server.port)).rejects.toMatchObject({ code: 'ECONNREFUSED' })
    expect(server.process.exitCode).toBeNull()

    // The in-flight request completes, a second after the signal.
    await new Promise((resolve) => setTimeout(resolve, 1_000))
    slow.finish()
    const answer = await slow.answer
    expect(answer.status).toBe(200)
    expect(answer.requestId).toBe('shutdown-slow-1')
    expect(JSON.parse(answer.text).data.gifts.length).toBeGreaterThan(0)

    // Then the process exits 0 within the timeout, having stopped each part.
    const exit = await server.exited
    const tookMs = Date.now() - signalledAtMs
    expect(exit, server.lines.join('\n')).toEqual({ code: 0, signal: null })
    expect(tookMs).toBeLessThan(SHUTDOWN_TIMEOUT_MS)
    const entries = server.lines.map((line) => JSON.parse(line) as Record<string, unknown>)
    expect(entries.find((e) => e.requestId === 'shutdown-slow-1')).toMatchObject({
      msg: 'request',
      status: 200,
      operation: 'SlowCatalog',
      completed: true,
    })
    expect(entries.some((e) => e.msg === 'stopping' && e.signal === 'SIGTERM')).toBe(true)
    expect(entries.at(-1)?.msg).toBe('stopped')
    expect(entries.some((e) => Number(e.level) >= 50)).toBe(false)
  }, 60_000)
})

describe('stopInOrder', () => {
  const logger = pino({ level: 'silent' })

  it('runs the steps in order and reports a failed one, still running the next', async () => {
    const ran: string[] = []
    const clean = await stopInOrder(
      [
        { name: 'a', stop: async () => void ran.push('a') },
        {
          name: 'b',
          stop: async () => {
            ran.push('b')
            throw new Error('b failed')
          },
        },
        { name: 'c', stop: async () => void ran.push('c') },
      ],
      { timeoutMs: 1_000, logger },
    )
    expect(clean).toBe(false)
    expect(ran).toEqual(['a', 'b', 'c'])
  })

  it('gives up at the deadline: a step that hangs does not hold the process', async () => {
    const ran: string[] = []
    const started = Date.now()
    const clean = await stopInOrder(
      [
        { name: 'hangs', stop: () => new Promise<void>(() => {}) },
        { name: 'after', stop: async () => void ran.push('after') },
      ],
      { timeoutMs: 200, logger },
    )
    expect(clean).toBe(false)
    expect(ran).toEqual([])
    expect(Date.now() - started).toBeLessThan(1_000)
  })

  it('is clean when every step finishes in time', async () => {
    expect(await stopInOrder([{ name: 'quick', stop: async () => {} }], { timeoutMs: 1_000, logger })).toBe(
      true,
    )
  })
})
