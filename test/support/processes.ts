import { fileURLToPath } from 'node:url'
import {
  benchServerEnv,
  freePort,
  type ServerProcess,
  startServerProcess,
} from '../../bench/support/server-process.js'
import { signToken, type TokenInput } from '../../src/auth/tokens.js'
import { TEST_JWT_SECRET } from './app.js'

// The real server (src/main.ts) as a child process, for the fault tests: a
// process that can be killed with SIGKILL and started again on the same
// port, with clients that tell "no answer" (the connection failed, was cut or
// timed out) from an answer.

export { freePort, type ServerProcess }

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url))
export const HOST = '127.0.0.1'

/** src/main.ts on `port` over `databaseUrl`, production mode, TEST_JWT_SECRET, rate limit out of the way. */
export function startServer(options: {
  port: number
  databaseUrl: string
  env?: Record<string, string>
  readyTimeoutMs?: number
}): Promise<ServerProcess> {
  return startServerProcess({
    args: ['--import', 'tsx', 'src/main.ts'],
    cwd: REPO_ROOT,
    env: benchServerEnv({
      host: HOST,
      port: options.port,
      databaseUrl: options.databaseUrl,
      jwtSecret: TEST_JWT_SECRET,
      extra: { LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn', ...options.env },
    }),
    host: HOST,
    port: options.port,
    readyTimeoutMs: options.readyTimeoutMs ?? 60_000,
  })
}

/** SIGKILL: no shutdown hook runs, in-flight transactions are cut; resolves once the process is gone. */
export async function killHard(server: ServerProcess): Promise<void> {
  process.kill(server.pid, 'SIGKILL')
  await server.stop(0)
}

/** A token the child servers accept (TEST_JWT_SECRET, no issuer or audience). */
export function tokenFor(claims: TokenInput): Promise<string> {
  return signToken(new TextEncoder().encode(TEST_JWT_SECRET), claims, { expiresIn: '1h' })
}

export interface AnswerBody<T> {
  data?: T | null
  errors?: { message: string; extensions?: { code?: string } }[]
}

export type Answer<T = Record<string, any>> =
  | { answered: true; status: number; body: AnswerBody<T>; ms: number }
  | { answered: false; error: string; ms: number }

/** One GraphQL POST; never throws: a failed, cut or timed-out request is `answered: false`. */
export async function post<T = Record<string, any>>(
  url: string,
  query: string,
  variables: Record<string, unknown>,
  token?: string,
  timeoutMs = 20_000,
): Promise<Answer<T>> {
  const started = Date.now()
  try {
    const response = await fetch(`${url}/graphql`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json',
        ...(token ? { authorization: `Bearer ${token}` } : {}),
      },
      body: JSON.stringify({ query, variables }),
      signal: AbortSignal.timeout(timeoutMs),
    })
    const text = await response.text()
    let body: AnswerBody<T>
    try {
      body = JSON.parse(text)
    } catch {
      body = { errors: [{ message: `not JSON (HTTP ${response.status}): ${text.slice(0, 200)}` }] }
    }
    return { answered: true, status: response.status, body, ms: Date.now() - started }
  } catch (error) {
    const cause = (error as { cause?: { code?: string } }).cause?.code
    return {
      answered: false,
      error: `${(error as Error).name}${cause ? ` ${cause}` : ''}`,
      ms: Date.now() - started,
    }
  }
}

/** GET a probe (/ready, /health): its status, or 0 when nothing answered within `timeoutMs`. */
export async function probe(url: string, path: string, timeoutMs = 5_000): Promise<number> {
  try {
    const response = await fetch(`${url}${path}`, { signal: AbortSignal.timeout(timeoutMs) })
    await response.arrayBuffer()
    return response.status
  } catch {
    return 0
  }
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Polls `check` every `everyMs` until it is truthy; throws naming `what` after `timeoutMs`. */
export async function until<T>(
  check: () => Promise<T> | T,
  timeoutMs: number,
  what: string | (() => string),
  everyMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value) return value
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${typeof what === 'string' ? what : what()}`,
      )
    await sleep(everyMs)
  }
}
