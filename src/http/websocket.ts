import type { IncomingMessage, Server } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { createSourceEventStream, type ExecutionArgs, GraphQLError, getOperationAST } from 'graphql'
import { CloseCode, type OperationResult, type Context as WsContext } from 'graphql-ws'
import { useServer } from 'graphql-ws/use/ws'
import { maskError, type YogaServerInstance } from 'graphql-yoga'
import type { Logger } from 'pino'
import { type WebSocket, WebSocketServer } from 'ws'
import { AuthenticationError } from '../auth/tokens.js'
import type { Context, Viewer } from '../graphql/context.js'
import { type FanoutSink, LiveGiftsFanout, operationFingerprint } from '../live/fanout.js'
import { GiftFeedSource } from '../live/gift-feed.js'
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
  // No permessage-deflate: the fan-out writes pre-framed messages to the TCP socket (fanoutSink).
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: WS_LIMITS.messageSizeMaxBytes,
    perMessageDeflate: false,
  })
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

  // Fan-out: liveGifts subscribers of the same operation share one execution and one JSON per
  // event, written by the stream's channel to every caught-up subscriber (src/live/fanout.ts).
  const fanout = new LiveGiftsFanout(services.live.gifts)
  const mask = (error: GraphQLError): GraphQLError => {
    const masked = maskError(error, 'Unexpected error.', false) as GraphQLError
    if (masked !== error) logger.error({ err: error }, 'unexpected error in a GraphQL operation')
    return masked
  }

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
        const disconnectSlowConsumer = () =>
          closeSocket(socket, CLOSE_CODES.slowConsumer, 'Slow consumer: resubscribe with afterSequence')
        const enveloped = yoga.getEnveloped({
          requestId: `ws:${id}`,
          clientAddress: request.socket.remoteAddress,
          websocket: { viewer: ctx.extra.viewer ?? null, disconnectSlowConsumer },
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
        const fingerprint = operationFingerprint(
          params.query,
          document,
          params.operationName,
          params.variables,
        )
        const root: Enveloped = {
          execute: enveloped.execute,
          subscribe: enveloped.subscribe,
          shared:
            fingerprint === null
              ? null
              : {
                  key: fanout.shared.operationKey(fingerprint),
                  sink: fanoutSink(socket, request.socket, id, disconnectSlowConsumer),
                },
        }
        return {
          schema: enveloped.schema,
          document,
          operationName: params.operationName,
          variableValues: params.variables,
          contextValue: await enveloped.contextFactory(),
          rootValue: root,
        }
      },
    },
    wss,
    keepAliveMs,
  )

  /**
   * A shareable operation: the field's own subscribe (arguments, authorization,
   * refusals) gives the subscriber's feed, which the fan-out takes over; else Yoga's subscribe.
   */
  async function subscribeShared(args: ExecutionArgs): Promise<Awaited<OperationResult>> {
    const root = args.rootValue as Enveloped
    if (root.shared === null) return root.subscribe(args)
    const operationArgs = { ...args, rootValue: undefined }
    const source = await createSourceEventStream(operationArgs)
    if (source instanceof GiftFeedSource) {
      // The messages are written by the fan-out; graphql-ws gets an iterator that only ends (complete) or fails.
      return fanout.subscribe(source, { key: root.shared.key, args: operationArgs, mask }, root.shared.sink)
    }
    // A refusal (no such stream...): through Yoga again, for its error handling.
    if (Symbol.asyncIterator in source) await (source as AsyncGenerator<unknown>).return?.(undefined)
    return root.subscribe(args)
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

type Enveloped = {
  execute: (args: ExecutionArgs) => OperationResult
  subscribe: (args: ExecutionArgs) => OperationResult
  /** A shared operation's key and where its messages go; null when not shared. */
  shared: { key: string; sink: FanoutSink } | null
}

/**
 * Where the fan-out writes one subscription's `next` messages: each is
 * `{"id":<id>,"type":"next","payload":` + the shared payload bytes + `}`,
 * framed here as a WebSocket text frame and written straight to the TCP
 * socket, several messages in one write. Safe next to ws's own writes
 * (graphql-ws's messages, pings, the close frame) because, without
 * permessage-deflate, ws writes each frame whole and synchronously to the
 * same socket: frames never interleave. Nothing is written once ws is
 * closing (after a close frame).
 */
function fanoutSink(socket: WebSocket, tcp: Socket, id: string, disconnect: () => void): FanoutSink {
  const prefix = Buffer.from(`{"id":${JSON.stringify(id)},"type":"next","payload":`)
  return {
    write(payloads, flushed) {
      if (socket.readyState !== socket.OPEN || tcp.destroyed) {
        if (flushed) queueMicrotask(flushed)
        return
      }
      tcp.write(nextFrames(prefix, payloads), flushed && (() => flushed()))
    },
    bufferedBytes: () => socket.bufferedAmount,
    disconnectSlowConsumer: disconnect,
  }
}

const FIN_TEXT = 0x81
const CLOSING_BRACE = 0x7d

/** Unmasked (server) WebSocket text frames, one per payload, in one buffer. */
export function nextFrames(prefix: Buffer, payloads: readonly Buffer[]): Buffer {
  let size = 0
  for (const payload of payloads) {
    const length = prefix.length + payload.length + 1
    size += (length < 126 ? 2 : length < 65_536 ? 4 : 10) + length
  }
  const out = Buffer.allocUnsafe(size)
  let at = 0
  for (const payload of payloads) {
    const length = prefix.length + payload.length + 1
    out[at++] = FIN_TEXT
    if (length < 126) {
      out[at++] = length
    } else if (length < 65_536) {
      out[at++] = 126
      at = out.writeUInt16BE(length, at)
    } else {
      out[at++] = 127
      at = out.writeBigUInt64BE(BigInt(length), at)
    }
    at += prefix.copy(out, at)
    at += payload.copy(out, at)
    out[at++] = CLOSING_BRACE
  }
  return out
}
