import { timingSafeEqual } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { EnvelopArmorPlugin } from '@escape.tech/graphql-armor'
import { useCSRFPrevention } from '@graphql-yoga/plugin-csrf-prevention'
import { useDisableIntrospection } from '@graphql-yoga/plugin-disable-introspection'
import type { GraphQLSchema } from 'graphql'
import {
  createGraphQLError,
  createYoga,
  isAsyncIterable,
  maskError,
  type Plugin,
  type YogaLogger,
} from 'graphql-yoga'
import type { Logger } from 'pino'
import type { Authenticator } from '../auth/authenticate.js'
import { AuthenticationError } from '../auth/tokens.js'
import type { Config } from '../config.js'
import { type Database, isDatabaseUnavailable } from '../db/client.js'
import { migrationsApplied } from '../db/migrate.js'
import type { Context, Viewer } from '../graphql/context.js'
import { schema as appSchema } from '../graphql/schema.js'
import { Metrics } from '../ops/metrics.js'
import { ProviderUnavailableError } from '../payments/types.js'
import type { Services } from '../services.js'
import { EXPORT_ROUTES, serveJournalExport } from './exports.js'
import { useRefuseUnstorableStrings } from './input-guard.js'
import { LIVE_PAGE_PREFIX, serveLivePage } from './live-page.js'
import {
  observeRequest,
  type RequestObservation,
  upgradeRequestId,
  useRequestObservation,
} from './observe.js'
import { type ClientAddress, TokenBuckets, useMutationRateLimit } from './rate-limit.js'
import { Turns } from './turns.js'
import { attachWebSocket } from './websocket.js'

/** Limits on what one request may ask of the server. */
export const LIMITS = {
  bodySizeMaxBytes: 1024 * 1024,
  queryDepthMax: 10,
  queryCostMax: 5000,
  queryAliasesMax: 15,
  queryDirectivesMax: 50,
  queryTokensMax: 2000,
  headersTimeoutMs: 20_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  /** How long stop() lets in-flight requests finish before cutting their connections. */
  shutdownGraceMs: 5_000,
  /** After a 413, how long the rest of an oversized body is read and dropped before the socket is cut. */
  lingerMs: 2_000,
} as const

const GRAPHQL_PATH = '/graphql'
const WEBHOOK_ROUTES = new Map<string, 'stripe' | 'paypal'>([
  ['/webhooks/stripe', 'stripe'],
  ['/webhooks/paypal', 'paypal'],
])

export interface AppOptions {
  config: Config
  database: Database
  services: Services
  logger: Logger
  /** Overrides for tests; production uses LIMITS and the application's schema. */
  shutdownGraceMs?: number
  schema?: GraphQLSchema
  /** WebSocket keep-alive ping interval (tests shorten it). */
  websocketKeepAliveMs?: number
}

export interface App {
  server: Server
  /** What GET /metrics serves. */
  metrics: Metrics
  start(): Promise<{ port: number }>
  stop(): Promise<void>
}

interface ServerContext extends ClientAddress {
  requestId: string
  /** The HTTP request's log line and metrics, filled in by useRequestObservation (absent over WebSocket). */
  observation?: RequestObservation
  /** Cuts this request's connection: for an SSE subscriber that fell behind. */
  disconnect?: () => void
  /** Calls back once this request's connection has closed (Context.onClientGone). */
  onClientGone?: (release: () => void) => void
  /** Set for operations over WebSocket: the connection's viewer, authenticated in connection_init. */
  websocket?: { viewer: Viewer | null; disconnectSlowConsumer: () => void }
}

/**
 * The viewer that `authorization` (an `Authorization` header, or a
 * WebSocket's `connectionParams.authorization`) stands for: null without
 * one; credentials that do not check out are a GraphQL error
 * UNAUTHENTICATED (HTTP 401), never an anonymous request.
 */
export async function authenticate(auth: Authenticator, authorization: unknown): Promise<Viewer | null> {
  try {
    return await auth.viewerFor(authorization)
  } catch (err) {
    if (!(err instanceof AuthenticationError)) throw err
    throw createGraphQLError(`Invalid credentials: ${err.message}.`, {
      extensions: {
        code: 'UNAUTHENTICATED',
        http: { status: 401, headers: { 'www-authenticate': 'Bearer error="invalid_token"' } },
      },
    })
  }
}

/**
 * SERVICE_UNAVAILABLE, HTTP 503 with Retry-After. A write may or may not have
 * been committed (a commit whose answer was lost with its connection): send it
 * again with the same idempotency key, which returns the first result if it was.
 */
export function databaseUnavailableError() {
  return createGraphQLError('The service is unavailable for a moment; try again shortly.', {
    extensions: { code: 'SERVICE_UNAVAILABLE', http: { status: 503, headers: { 'retry-after': '1' } } },
  })
}

export function buildApp({
  config,
  database,
  services,
  logger,
  shutdownGraceMs = LIMITS.shutdownGraceMs,
  schema = appSchema,
  websocketKeepAliveMs,
}: AppOptions): App {
  // Read at scrape: open event streams (SSE subscriptions) and the WebSocket server's counts.
  const eventStreams = new Set<AbortController>()
  const metrics = new Metrics({
    database,
    live: () => ({ ...websocket.stats(), sseSubscriptions: eventStreams.size }),
    ledgerExpectations: () => services.ledger.expectations,
    giftBatches: () => services.gifts.batches,
  })
  services.ledger.onCommitted((transactions) => metrics.ledgerCommitted(transactions))
  services.gifts.onCommitted((events) => metrics.giftsCommitted(events))

  const mutationBuckets = new TokenBuckets(
    config.rateLimit.mutationsPerSecond,
    config.rateLimit.mutationsBurst,
  )
  const yoga = createYoga<ServerContext, Context>({
    schema,
    graphqlEndpoint: GRAPHQL_PATH,
    // GraphiQL is of no use without introspection.
    graphiql: config.graphql.introspection ? { title: 'giftledger' } : false,
    landingPage: false,
    // One operation per request: a batch would multiply every other limit here.
    batching: false,
    // The body's size is limited before Yoga sees it (readBody: LIMITS.bodySizeMaxBytes, 413);
    // Yoga's own limit would pipe every body through a stream once more.
    maxRequestBodySize: false,
    logging: yogaLogger(logger),
    maskedErrors: {
      errorMessage: 'Unexpected error.',
      // Never send originals (messages, stacks, SQL) to clients, whatever NODE_ENV says.
      isDev: false,
      maskError: (error, message) => {
        // The database away (a restart, a failover): a refusal worth retrying, not an internal error.
        if (isDatabaseUnavailable(error)) {
          logger.warn({ err: error }, 'database unavailable during a GraphQL operation')
          return databaseUnavailableError()
        }
        const masked = maskError(error, message, false)
        if (masked !== error) logger.error({ err: error }, 'unexpected error in a GraphQL operation')
        return masked
      },
    },
    plugins: [
      // First, so that it sees every operation, including those a later plugin refuses.
      useRequestObservation(metrics, logger),
      // A request a browser could send cross-site without a CORS preflight
      // (a GET, or a form's content type) must carry x-graphql-yoga-csrf.
      useCSRFPrevention(),
      ...(config.graphql.introspection ? [] : [useDisableIntrospection()]),
      EnvelopArmorPlugin({
        // Depth counts fields, not the fragments a client wraps them in.
        maxDepth: { n: LIMITS.queryDepthMax, flattenFragments: true },
        costLimit: { maxCost: LIMITS.queryCostMax },
        maxAliases: { n: LIMITS.queryAliasesMax },
        maxDirectives: { n: LIMITS.queryDirectivesMax },
        maxTokens: { n: LIMITS.queryTokensMax },
        blockFieldSuggestion: { enabled: true },
      }),
      useMutationRateLimit(mutationBuckets),
      useRefuseUnstorableStrings(),
      useEndSubscriptionsWithClient(),
    ],
    context: async ({ request, requestId, disconnect, onClientGone, websocket }): Promise<Context> => ({
      db: database.db,
      viewer: websocket
        ? websocket.viewer
        : await authenticate(services.auth, request.headers.get('authorization') ?? undefined),
      requestId,
      services,
      disconnectSlowConsumer: websocket?.disconnectSlowConsumer ?? disconnect,
      onClientGone,
    }),
  })

  const inFlight = new Set<ServerResponse>()
  const turns = new Turns()

  const server = createServer(
    {
      headersTimeout: LIMITS.headersTimeoutMs,
      requestTimeout: LIMITS.requestTimeoutMs,
      keepAliveTimeout: LIMITS.keepAliveTimeoutMs,
    },
    (req, res) => {
      inFlight.add(res)
      res.on('close', () => inFlight.delete(res))
      const observation = observeRequest(req, res, logger, metrics)
      route(req, res, observation).catch((err: unknown) => {
        // A client that went away mid-request is not a server error. (Not req.destroyed: it
        // is true as soon as a request's body has been read, and every later failure was
        // taken for a client gone: the connection cut, no answer, nothing logged.)
        if (req.socket.destroyed || res.destroyed || (err instanceof Error && err.name === 'AbortError')) {
          logger.debug({ err }, 'client went away')
          res.destroy()
          return
        }
        if (res.headersSent) {
          logger.error({ err }, 'request failed')
          res.destroy()
        } else if (isDatabaseUnavailable(err) || err instanceof ProviderUnavailableError) {
          // The database or a payment provider away: 503, which clients and providers retry.
          logger.warn({ err }, 'request refused: a dependency is unavailable')
          res.setHeader('retry-after', '1')
          sendJson(res, 503, { error: 'temporarily unavailable; try again shortly' })
        } else {
          logger.error({ err }, 'request failed')
          sendJson(res, 500, { error: 'internal error' })
        }
      })
    },
  )

  const websocket = attachWebSocket({
    server,
    path: GRAPHQL_PATH,
    yoga,
    services,
    logger,
    keepAliveMs: websocketKeepAliveMs,
  })
  // The upgrade's answer carries the connection's request id, as HTTP responses do.
  websocket.wss.on('headers', (headers: string[], req: IncomingMessage) => {
    headers.push(`X-Request-Id: ${upgradeRequestId(req)}`)
  })

  async function route(
    req: IncomingMessage,
    res: ServerResponse,
    observation: RequestObservation,
  ): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname
    if (path === GRAPHQL_PATH) return handleGraphql(req, res, observation)
    if (path === '/metrics') return handleMetrics(req, res)
    if (path === '/health') return handleProbe(req, res, async () => true, 'ok')
    if (path === '/ready') {
      return handleProbe(
        req,
        res,
        async () => (await database.ping()) && (await migrationsApplied(database)),
        'ready',
      )
    }
    const webhook = WEBHOOK_ROUTES.get(path)
    if (webhook) return handleWebhook(req, res, webhook)
    // Journal exports for accountants, streamed (src/http/exports.ts).
    const exportFormat = EXPORT_ROUTES.get(path)
    if (exportFormat) return serveJournalExport(req, res, exportFormat, { database, services, logger })
    // The watch page of a stream (src/http/live-page.ts); unknown or malformed ids are 404.
    if (path.startsWith(LIVE_PAGE_PREFIX)) {
      if (await serveLivePage(req, res, path.slice(LIVE_PAGE_PREFIX.length), database)) return
    }
    sendJson(res, 404, { error: 'not found' })
  }

  /**
   * Provider webhooks, outside GraphQL: the raw body, byte for byte, is what
   * the signature covers. A verified event is stored and acknowledged at
   * once; a forged or stale one is refused with 400 and stored nowhere.
   */
  async function handleWebhook(req: IncomingMessage, res: ServerResponse, provider: 'stripe' | 'paypal') {
    if (req.method !== 'POST') {
      res.setHeader('allow', 'POST')
      return sendJson(res, 405, { error: 'method not allowed' })
    }
    const body = await readBody(req, LIMITS.bodySizeMaxBytes)
    if (body === 'too-large') return refuseTooLarge(req, res)
    const headers: Record<string, string | undefined> = {}
    for (const [name, value] of Object.entries(req.headers)) {
      headers[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : value
    }
    const result = await services.inbox.receive(provider, body ?? Buffer.alloc(0), headers)
    if (result.status === 200) return sendJson(res, 200, { received: true, duplicate: result.duplicate })
    logger.warn({ provider, status: result.status }, 'webhook refused')
    return sendJson(res, result.status, { error: result.error })
  }

  async function handleProbe(
    req: IncomingMessage,
    res: ServerResponse,
    check: () => Promise<boolean>,
    okStatus: string,
  ): Promise<void> {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD')
      return sendJson(res, 405, { error: 'method not allowed' })
    }
    const ok = await check()
    res.setHeader('cache-control', 'no-store')
    sendJson(res, ok ? 200 : 503, { status: ok ? okStatus : 'unavailable' })
  }

  /**
   * Prometheus metrics. With METRICS_TOKEN set, only for `Authorization:
   * Bearer <token>` (compared in constant time); without it, open: keep the
   * route from the internet at the load balancer (docs/OPERATIONS.md).
   */
  async function handleMetrics(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD')
      return sendJson(res, 405, { error: 'method not allowed' })
    }
    const token = config.metrics.token
    if (token !== undefined && !bearerMatches(req.headers.authorization, token)) {
      res.setHeader('www-authenticate', 'Bearer realm="metrics"')
      return sendJson(res, 401, { error: 'metrics need the bearer token (METRICS_TOKEN)' })
    }
    const text = await metrics.render()
    res.writeHead(200, {
      'content-type': metrics.contentType,
      'content-length': Buffer.byteLength(text),
      'cache-control': 'no-store',
    })
    res.end(req.method === 'HEAD' ? undefined : text)
  }

  async function handleGraphql(
    req: IncomingMessage,
    res: ServerResponse,
    observation: RequestObservation,
  ): Promise<void> {
    const { requestId } = observation
    const body = await readBody(req, LIMITS.bodySizeMaxBytes)
    if (body === 'too-large') return refuseTooLarge(req, res)
    // Its turn: after the database's answers that came with this one (turns.ts).
    await turns.wait()

    // Yoga's own Fetch classes (the @whatwg-node ponyfills) wrap the body and
    // the headers as they are; the request carries no abort signal, which Yoga
    // would not use (operations run to their end), and which would cost a
    // native AbortController per request. An event stream (SSE) is written as
    // it comes (sendStream).
    const response = await yoga.fetch(
      new URL(req.url ?? '/', `http://${req.headers.host ?? 'localhost'}`),
      {
        method: req.method ?? 'GET',
        headers: req.headers as Record<string, string>,
        body:
          body && body.length > 0
            ? new Uint8Array(body.buffer as ArrayBuffer, body.byteOffset, body.length)
            : undefined,
      },
      {
        requestId,
        observation,
        clientAddress: req.socket.remoteAddress,
        disconnect: () => res.destroy(),
        onClientGone: (release) => {
          if (res.closed) release()
          else res.once('close', release)
        },
      },
    )
    if (!response.headers.get('content-type')?.startsWith('text/event-stream')) {
      return sendResponse(res, response)
    }
    // A subscription over SSE: a live subscriber while it lasts, ended by stop().
    const ending = new AbortController()
    observation.stream = true
    eventStreams.add(ending)
    res.once('close', () => {
      eventStreams.delete(ending)
      ending.abort()
    })
    await sendStream(res, response, ending.signal)
  }

  function refuseTooLarge(req: IncomingMessage, res: ServerResponse): void {
    // Drain what the client is still sending for a moment, so that it can read
    // the 413 instead of a reset connection; then cut it.
    req.resume()
    const linger = setTimeout(() => req.socket.destroy(), LIMITS.lingerMs)
    linger.unref()
    res.setHeader('connection', 'close')
    sendJson(res, 413, { error: `request body larger than ${LIMITS.bodySizeMaxBytes} bytes` })
  }

  return {
    server,
    metrics,
    start: () =>
      new Promise((resolve, reject) => {
        server.once('error', reject)
        server.listen(config.http.port, config.http.host, () => {
          server.off('error', reject)
          resolve({ port: (server.address() as AddressInfo).port })
        })
      }),
    stop: async () => {
      if (!server.listening) return
      // Stop accepting at once; then upgraded sockets, which are not the HTTP server's any more (1001).
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      // SSE subscriptions never finish by themselves: end their streams (the client sees the end, not a reset).
      for (const stream of eventStreams) stream.abort()
      await websocket.close()
      server.closeIdleConnections()
      const grace = setTimeout(() => server.closeAllConnections(), shutdownGraceMs)
      // Requests answered after close() keep their sockets otherwise.
      const idleSweep = setInterval(() => server.closeIdleConnections(), 100)
      try {
        await closed
      } finally {
        clearTimeout(grace)
        clearInterval(idleSweep)
      }
      await yoga.dispose()
    },
  }
}

/** Whether an Authorization header is `Bearer <expected>`, compared in constant time. */
function bearerMatches(header: string | undefined, expected: string): boolean {
  const presented = Buffer.from(/^Bearer (.+)$/.exec(header ?? '')?.[1] ?? '')
  const wanted = Buffer.from(expected)
  return presented.length === wanted.length && timingSafeEqual(presented, wanted)
}

/** The body, up to `limitBytes`; 'too-large' as soon as it is known to be over. */
function readBody(req: IncomingMessage, limitBytes: number): Promise<Buffer | 'too-large' | undefined> {
  if (req.method === 'GET' || req.method === 'HEAD') return Promise.resolve(undefined)
  const declared = Number(req.headers['content-length'])
  if (Number.isFinite(declared) && declared > limitBytes) return Promise.resolve('too-large')
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    const onData = (chunk: Buffer) => {
      size += chunk.length
      if (size > limitBytes) {
        cleanup()
        resolve('too-large')
        return
      }
      chunks.push(chunk)
    }
    const onEnd = () => {
      cleanup()
      resolve(Buffer.concat(chunks))
    }
    const onError = (err: Error) => {
      cleanup()
      reject(err)
    }
    const cleanup = () => {
      req.off('data', onData)
      req.off('end', onEnd)
      req.off('error', onError)
    }
    req.on('data', onData)
    req.on('end', onEnd)
    req.on('error', onError)
  })
}

/**
 * Every subscription over an HTTP request (SSE) is returned, its bus
 * subscription released, as soon as its client goes away
 * (Context.onClientGone). Yoga's event stream would notice only at its next
 * event or keep-alive ping (up to 12 s). Over WebSocket there is no
 * onClientGone: graphql-ws returns a connection's subscriptions itself.
 */
function useEndSubscriptionsWithClient(): Plugin<Context> {
  return {
    onSubscribe({ args }) {
      const { onClientGone } = args.contextValue
      if (!onClientGone) return
      return {
        onSubscribeResult({ result }) {
          if (!isAsyncIterable(result)) return
          onClientGone(() => {
            result.return?.().catch(() => {})
          })
        },
      }
    },
  }
}

/** The status and headers of Yoga's response, for res.writeHead. */
function headersOf(response: Response): Record<string, string | string[]> {
  const headers: Record<string, string | string[]> = {}
  response.headers.forEach((value, name) => {
    if (name !== 'set-cookie') headers[name] = value
  })
  const cookies = response.headers.getSetCookie()
  if (cookies.length > 0) headers['set-cookie'] = cookies
  return headers
}

/** Writes Yoga's response (not a stream) in one piece, with its length. */
async function sendResponse(res: ServerResponse, response: Response): Promise<void> {
  const body = response.body ? Buffer.from(await response.arrayBuffer()) : undefined
  const headers = headersOf(response)
  if (body) headers['content-length'] = String(body.length)
  res.writeHead(response.status, headers)
  res.end(body)
}

/**
 * Writes an event stream (SSE) chunk by chunk, as events come; `ending`
 * aborted (the server stops, the client went away) ends it: the
 * subscription's iterator is returned. (Yoga's stream lets that cancel
 * through only when its pending read settles, at the next event or
 * keep-alive ping; a client gone releases its subscription at once through
 * useEndSubscriptionsWithClient.)
 */
async function sendStream(res: ServerResponse, response: Response, ending: AbortSignal): Promise<void> {
  res.writeHead(response.status, headersOf(response))
  if (!response.body) {
    res.end()
    return
  }
  const reader = response.body.getReader()
  // Yoga's stream (a ponyfill) does not settle a pending read when cancelled: `ending` settles it instead.
  let settleRead: ((result: null) => void) | undefined
  const onEnding = () => settleRead?.(null)
  ending.addEventListener('abort', onEnding, { once: true })
  for (;;) {
    const next = ending.aborted
      ? null
      : await new Promise<ReadableStreamReadResult<Uint8Array> | null>((resolve, reject) => {
          settleRead = resolve
          reader.read().then(resolve, reject)
        })
    if (next === null || res.destroyed) {
      // Returns the subscription's iterator (the stream's cancel); nothing waits for it.
      void reader.cancel().catch(() => {})
      break
    }
    if (next.done) break
    if (!res.write(next.value)) {
      await new Promise<void>((resolve) => {
        res.once('drain', resolve)
        res.once('close', resolve)
      })
    }
  }
  ending.removeEventListener('abort', onEnding)
  res.end()
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
  })
  res.end(text)
}

function yogaLogger(logger: Logger): YogaLogger {
  const log = logger.child({ component: 'yoga' })
  const bridge =
    (level: 'debug' | 'info' | 'warn' | 'error') =>
    (...args: unknown[]): void => {
      const [first, ...rest] = args
      if (typeof first === 'string' && rest.length === 0) log[level](first)
      else if (first instanceof Error) log[level]({ err: first, details: rest }, first.message)
      else log[level]({ details: args }, 'yoga')
    }
  return { debug: bridge('debug'), info: bridge('info'), warn: bridge('warn'), error: bridge('error') }
}
