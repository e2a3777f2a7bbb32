import { randomUUID } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { type ExecutionArgs, getOperationAST } from 'graphql'
import type { Plugin } from 'graphql-yoga'
import type { Logger } from 'pino'
import type { Context } from '../graphql/context.js'
import type { Metrics, OperationType } from '../ops/metrics.js'
import { LIVE_PAGE_PREFIX } from './live-page.js'

// Every HTTP request is logged once, when its response ends, with its request
// id (the client's X-Request-Id when well-formed, else a new UUID, echoed in
// the response), the user, the GraphQL operation, the status and the
// duration; and counted in the metrics. The fields are named one by one:
// no header, body, query string or variable is ever logged.

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,100}$/
/** Probes and scrapes are logged at debug: a load balancer asks every few seconds. */
const QUIET_ROUTES = new Set(['/health', '/ready', '/metrics'])
const ERROR_CODES_LOGGED_MAX = 5

/** The client's request id when it is well-formed (1–100 of A–Z a–z 0–9 . _ : -), else a new one. */
export function requestIdOf(header: string | string[] | undefined): string {
  return typeof header === 'string' && REQUEST_ID.test(header) ? header : randomUUID()
}

const upgradeIds = new WeakMap<IncomingMessage, string>()

/** A WebSocket upgrade's request id: the same for its 101 response header and its close log line. */
export function upgradeRequestId(req: IncomingMessage): string {
  let id = upgradeIds.get(req)
  if (id === undefined) {
    id = requestIdOf(req.headers['x-request-id'])
    upgradeIds.set(req, id)
  }
  return id
}

/** What one request's log line says; the GraphQL plugin fills in the operation and the user. */
export interface RequestObservation {
  requestId: string
  userId?: string
  operationName?: string
  operationType?: OperationType
  /** extensions.code of the GraphQL errors in the response (at most a few). */
  errorCodes?: string[]
  /** An event stream (SSE subscription): no latency is recorded for it. */
  stream?: boolean
}

/** The metrics label of a path: the route itself, bounded (anything answered 404 is "unmatched"). */
export function routeLabel(path: string, status: number): string {
  if (path.startsWith(LIVE_PAGE_PREFIX)) return `${LIVE_PAGE_PREFIX}:id`
  // The server answers 404 for every path it has no route for: those never become labels.
  if (status === 404) return 'unmatched'
  return path
}

/**
 * Starts observing a request: sets its id (and the X-Request-Id response
 * header) and logs and counts it once when its response is done or cut.
 */
export function observeRequest(
  req: IncomingMessage,
  res: ServerResponse,
  logger: Logger,
  metrics: Metrics,
): RequestObservation {
  const startedNs = process.hrtime.bigint()
  const observation: RequestObservation = { requestId: requestIdOf(req.headers['x-request-id']) }
  res.setHeader('x-request-id', observation.requestId)
  res.once('close', () => {
    const durationS = Number(process.hrtime.bigint() - startedNs) / 1e9
    const path = new URL(req.url ?? '/', 'http://localhost').pathname
    // A response cut before its headers went out: the client never saw a status.
    const status = res.headersSent ? res.statusCode : 0
    const latencyS = observation.stream ? undefined : durationS
    metrics.httpRequest(routeLabel(path, status), req.method, status, latencyS)
    const failed = status >= 400 || status === 0 || (observation.errorCodes?.length ?? 0) > 0
    if (observation.operationType || observation.operationName) {
      metrics.operation(observation.operationName, observation.operationType ?? 'unknown', failed, latencyS)
    }
    const line = {
      requestId: observation.requestId,
      method: req.method,
      path,
      status,
      durationMs: Math.round(durationS * 1000 * 10) / 10,
      userId: observation.userId,
      operation: observation.operationName,
      operationType: observation.operationType,
      errors: observation.errorCodes,
      remoteAddress: req.socket.remoteAddress,
      completed: res.writableFinished,
    }
    if (status >= 500) logger.error(line, 'request')
    // Cut before any answer: the client went away (it closed the connection, gave up
    // waiting, or sent only part of its body). A server fault that cuts a request is
    // logged where it happens ('request failed'); this line is the client's doing.
    else if (status === 0) logger.warn({ ...line, cut: true }, 'request')
    else if (QUIET_ROUTES.has(path)) logger.debug(line, 'request')
    else logger.info(line, 'request')
  })
  return observation
}

/** What the plugin finds in Yoga's context: the HTTP request's observation, or a WebSocket operation. */
type ObservedContext = Context & {
  observation?: RequestObservation
  websocket?: unknown
  params?: { operationName?: string | null; query?: string }
}

/**
 * Fills in a request's observation from Yoga: the operation's name and type
 * and the signed-in user, and the error codes of the response. Over
 * WebSocket (no HTTP request to log), each subscription is counted and
 * logged when it starts.
 */
export function useRequestObservation(metrics: Metrics, logger: Logger): Plugin<ObservedContext> {
  // A WebSocket operation's name from its document, by its params (the same object from parse to context).
  const websocketOperationNames = new WeakMap<object, string>()
  const noteOperation = (args: ExecutionArgs) => {
    const context = args.contextValue as ObservedContext
    const observation = context.observation
    if (!observation) return
    const operation = getOperationAST(args.document, args.operationName)
    if (operation) {
      observation.operationType = operation.operation
      observation.operationName = operation.name?.value ?? observation.operationName
    }
    observation.userId = context.viewer?.userId
  }
  return {
    onParams({ params, context }) {
      const observation = (context as ObservedContext).observation
      if (observation && typeof params.operationName === 'string')
        observation.operationName = params.operationName
    },
    onParse({ context }) {
      const observed = context as ObservedContext
      // The operation's own name and type, known before validation or authentication can refuse it.
      return ({ result }) => {
        if (!result || result instanceof Error || !('kind' in result)) return
        const operation = getOperationAST(
          result,
          observed.observation?.operationName ?? observed.params?.operationName,
        )
        if (!operation) return
        const name = operation.name?.value
        if (observed.observation) {
          observed.observation.operationType = operation.operation
          observed.observation.operationName = name ?? observed.observation.operationName
        } else if (observed.websocket && name && observed.params) {
          websocketOperationNames.set(observed.params, name)
        }
      }
    },
    onContextBuilding() {
      return ({ context }) => {
        const observed = context as ObservedContext
        if (observed.observation) {
          observed.observation.userId = observed.viewer?.userId
          return
        }
        if (!observed.websocket || !observed.params) return
        // A subscription over WebSocket, past validation: its connection is logged when it closes.
        const operationName =
          websocketOperationNames.get(observed.params) ?? observed.params.operationName ?? undefined
        metrics.operation(operationName, 'subscription', false)
        logger.debug(
          { requestId: observed.requestId, userId: observed.viewer?.userId, operation: operationName },
          'subscription started',
        )
      }
    },
    onExecute({ args }) {
      noteOperation(args)
    },
    onSubscribe({ args }) {
      noteOperation(args)
    },
    onResultProcess({ result, serverContext }) {
      const observation = (serverContext as { observation?: RequestObservation }).observation
      if (!observation || Array.isArray(result) || Symbol.asyncIterator in result) return
      const errors = result.errors ?? []
      if (errors.length === 0) return
      observation.errorCodes = errors
        .slice(0, ERROR_CODES_LOGGED_MAX)
        .map((error) => String(error.extensions?.code ?? 'INTERNAL'))
    },
  }
}
