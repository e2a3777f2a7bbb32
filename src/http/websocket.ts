import type { IncomingMessage, Server } from 'node:http'
import type { Duplex } from 'node:stream'
import { createSourceEventStream, type ExecutionArgs, GraphQLError, getOperationAST } from 'graphql'
import { CloseCode, type Context as WsContext } from 'graphql-ws'
import { useServer } from 'graphql-ws/use/ws'
import { maskError, type YogaServerInstance } from 'graphql-yoga'
import type { Logger } from 'pino'
import { type WebSocket, WebSocketServer } from 'ws'
import { AuthenticationError } from '../auth/tokens.js'
import type { Context, Viewer } from '../graphql/context.js'
import {
  operationFingerprint,
  SharedResults,
  sharedResultStream,
  spliceMessage,
  spliceReplacer,
} from '../live/fanout.js'
import type { Services } from '../services.js'
import { upgradeRequestId } from './observe.js'

// GraphQL subscriptions over WebSocket (graphql-ws, the graphql-transport-ws
// protocol) on the GraphQL path, through Yoga's envelop: the same schema,
// parse and validation limits (graphql-armor), error masking and context as
// over HTTP. Yoga's HTTP-level plugins do not run here, so the connection is
// authenticated in connection_init, from connectionParams.authorization.
// Only subscriptions: queries and mutations go over HTTP, where CSRF
// prevention and rate limits apply.

/** Close codes a client may see; see docs/LIVE.md. */
export const CLOSE_CODES = {
  /** connectionParams.authorization did not check out (graphql-ws's Forbidden). */
  invalidToken: CloseCode.Forbidden,
  /** The user already has connectionsPerUserMax connections open. */
  tooManyConnections: 4420,
  /** A subscription fell more than bufferedEventsMax events behind: resubscribe with afterSequence. */
  slowConsumer: 4421,
  /** The server is shutting down. */
  goingAway: 1001,
} as const

export const WS_LIMITS = {
  subscriptionsPerConnectionMax: 20,
  /** Signed-in users; anonymous connections are limited by the HTTP server's own connection handling. */
  connectionsPerUserMax: 10,
  /** Largest message a client may send. */
  messageSizeMaxBytes: 64 * 1024,
  /** connection_init must arrive within this (else graphql-ws closes with 4408). */
  connectionInitWaitMs: 3_000,
  /** A ws-level ping every keepAliveMs; no pong within another keepAliveMs terminates the socket. */
  keepAliveMs: 12_000,
  /** A socket asked to close that has not closed by then (a client that stopped reading) is cut. */
  closeGraceMs: 5_000,
} as const

type ConnectionExtra = {
  viewer?: Viewer | null
  /** When connection_init was accepted (the close log's duration). */
  acceptedAtMs?: number
}

export interface WebSocketOptions {
  server: Server
  path: string
  // biome-ignore lint/suspicious/noExplicitAny: Yoga's server context type is the caller's.
  yoga: YogaServerInstance<any, Context>
  services: Services
  logger: Logger
  keepAliveMs?: number
}

export interface GraphqlWebSocket {
  wss: WebSocketServer
  /** Open connections and their subscriptions, for GET /metrics (read only). */
  stats(): { websocketConnections: number; websocketSubscriptions: number }
  /** Closes every connection (1001) and the WebSocket server. */
  close(): Promise<void>
}

export function attachWebSocket({
  server,
  path,
  yoga,
  services,
  logger,
  keepAliveMs = WS_LIMITS.keepAliveMs,
}: WebSocketOptions): GraphqlWebSocket {
  const wss = new WebSocketServer({ noServer: true, maxPayload: WS_LIMITS.messageSizeMaxBytes })
  const connectionsByUser = new Map<string, number>()
  const counted = new WeakSet<WebSocket>()
  /** Accepted connections (connection_init checked out): their subscriptions are counted at scrape. */
  const accepted = new Set<Ctx>()

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const url = new URL(req.url ?? '/', 'http://localhost')
    if (url.pathname !== path) {
      socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n')
      return
    }
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req))
  }
  server.on('upgrade', onUpgrade)

  // Fan-out: identical live operations share one execution and one JSON per event (src/live/fanout.ts).
  const shared = new SharedResults()
  const mask = (error: GraphQLError): GraphQLError => {
    const masked = maskError(error, 'Unexpected error.', false) as GraphQLError
    if (masked !== error) logger.error({ err: error }, 'unexpected error in a GraphQL operation')
    return masked
  }
  wss.on('connection', (socket: WebSocket) => {
    const send = socket.send.bind(socket) as (data: unknown, cb?: (error?: Error) => void) => void
    // biome-ignore lint/suspicious/noExplicitAny: ws's send overloads.
    ;(socket as any).send = (data: unknown, cb?: (error?: Error) => void) => send(spliceMessage(data), cb)
  })

  const closeSocket = (socket: WebSocket, code: number, reason: string) => {
    socket.close(code, reason)
    // A client that stopped reading never answers the close frame.
    setTimeout(() => socket.terminate(), WS_LIMITS.closeGraceMs).unref()
  }

  const release = (socket: WebSocket, viewer: Viewer | null | undefined) => {
    if (!viewer || !counted.has(socket)) return
    counted.delete(socket)
    const n = (connectionsByUser.get(viewer.userId) ?? 1) - 1
    if (n <= 0) connectionsByUser.delete(viewer.userId)
    else connectionsByUser.set(viewer.userId, n)
  }

  type Ctx = WsContext<
    Record<string, unknown>,
    { socket: WebSocket; request: IncomingMessage } & ConnectionExtra
  >

  const disposable = useServer<Record<string, unknown>, ConnectionExtra>(
    {
      connectionInitWaitTimeout: WS_LIMITS.connectionInitWaitMs,
      isProd: true,
      execute: (args) => (args.rootValue as Enveloped).execute(args),
      subscribe: (args) => subscribeShared(args),
      jsonMessageReplacer: spliceReplacer(shared),
      // The shared payload itself (already formatted), so that it is serialized once.
      onNext: (_ctx, _id, _payload, _args, result) => (shared.isShared(result) ? result : undefined),
      onConnect: async (ctx: Ctx) => {
        const { socket } = ctx.extra
        let viewer: Viewer | null
        try {
          viewer = await services.auth.viewerFor(ctx.connectionParams?.authorization)
        } catch (error) {
          if (!(error instanceof AuthenticationError)) throw error
          return false // graphql-ws closes with 4403 Forbidden
        }
        if (viewer) {
          const n = connectionsByUser.get(viewer.userId) ?? 0
          if (n >= WS_LIMITS.connectionsPerUserMax) {
            closeSocket(socket, CLOSE_CODES.tooManyConnections, 'Too many connections for this user')
            return false
          }
          connectionsByUser.set(viewer.userId, n + 1)
          counted.add(socket)
        }
        ctx.extra.viewer = viewer
        ctx.extra.acceptedAtMs = Date.now()
        accepted.add(ctx)
        return true
      },
      onClose: (ctx: Ctx, code, reason) => {
        release(ctx.extra.socket, ctx.extra.viewer)
        accepted.delete(ctx)
        // One line per connection, as per HTTP request (src/http/observe.ts); never its connectionParams.
        logger.info(
          {
            requestId: upgradeRequestId(ctx.extra.request),
            userId: ctx.extra.viewer?.userId,
            path,
            code,
            reason: reason || undefined,
            accepted: ctx.extra.acceptedAtMs !== undefined,
            durationMs:
              ctx.extra.acceptedAtMs === undefined ? undefined : Date.now() - ctx.extra.acceptedAtMs,
          },
          'websocket closed',
        )
      },
      onSubscribe: async (ctx: Ctx, id, params) => {
        const { socket, request } = ctx.extra
        // ctx.subscriptions already holds this one.
        if (Object.keys(ctx.subscriptions).length > WS_LIMITS.subscriptionsPerConnectionMax) {
          return [
            new GraphQLError(
              `At most ${WS_LIMITS.subscriptionsPerConnectionMax} subscriptions per connection.`,
              { extensions: { code: 'TOO_MANY_SUBSCRIPTIONS' } },
            ),
          ]
        }
        const enveloped = yoga.getEnveloped({
          requestId: `ws:${id}`,
          clientAddress: request.socket.remoteAddress,
          websocket: {
            viewer: ctx.extra.viewer ?? null,
            disconnectSlowConsumer: () =>
              closeSocket(socket, CLOSE_CODES.slowConsumer, 'Slow consumer: resubscribe with afterSequence'),
          },
          params,
          request,
        })
        let document: ExecutionArgs['document']
        try {
          document = enveloped.parse(params.query)
        } catch (error) {
          return [error instanceof GraphQLError ? error : new GraphQLError('Invalid query.')]
        }
        const errors = enveloped.validate(enveloped.schema, document)
        if (errors.length > 0) return errors
        if (getOperationAST(document, params.operationName)?.operation !== 'subscription') {
          return [
            new GraphQLError('Only subscriptions over WebSocket: send queries and mutations over HTTP.', {
              extensions: { code: 'BAD_REQUEST' },
            }),
          ]
        }
        return {
          schema: enveloped.schema,
          document,
          operationName: params.operationName,
          variableValues: params.variables,
          contextValue: await enveloped.contextFactory(),
          rootValue: {
            execute: enveloped.execute,
            subscribe: enveloped.subscribe,
            fingerprint: operationFingerprint(params.query, document, params.operationName, params.variables),
          },
        }
      },
    },
    wss,
    keepAliveMs,
  )

  /** A shareable operation: its own source stream, results shared by event; else Yoga's subscribe. */
  async function subscribeShared(args: ExecutionArgs): Promise<OperationResult> {
    const root = args.rootValue as Enveloped
    if (root.fingerprint === null) return root.subscribe(args)
    const source = await createSourceEventStream({ ...args, rootValue: undefined })
    // A refusal (no such stream...): through Yoga again, for its error handling.
    if (!(Symbol.asyncIterator in source)) return root.subscribe(args)
    return sharedResultStream(
      source,
      { ...args, rootValue: undefined },
      shared.operationKey(root.fingerprint),
      shared,
      mask,
    ) as never
  }

  wss.on('error', (error) => logger.error({ err: error }, 'WebSocket server error'))

  return {
    wss,
    stats: () => {
      let websocketSubscriptions = 0
      for (const ctx of accepted) websocketSubscriptions += Object.keys(ctx.subscriptions).length
      return { websocketConnections: wss.clients.size, websocketSubscriptions }
    },
    close: async () => {
      server.off('upgrade', onUpgrade)
      // graphql-ws's dispose closes every client with 1001 and then the server;
      // terminate the ones that do not answer, or close() would wait for them.
      const stragglers = setTimeout(() => {
        for (const client of wss.clients) client.terminate()
      }, WS_LIMITS.closeGraceMs)
      try {
        await disposable.dispose()
      } finally {
        clearTimeout(stragglers)
      }
    },
  }
}

type OperationResult = ReturnType<NonNullable<Parameters<typeof useServer>[0]['execute']>>
type Enveloped = {
  execute: (args: ExecutionArgs) => OperationResult
  subscribe: (args: ExecutionArgs) => OperationResult
  /** The operation's sharing key; null when not shared. */
  fingerprint: string | null
}
