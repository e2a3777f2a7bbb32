import type { IncomingMessage, ServerResponse } from 'node:http'
import type { GraphQLError } from 'graphql'
import type { Logger } from 'pino'
import {
  HorizonUnavailableError,
  JOURNAL_EXPORT_COLUMNS,
  type JournalExportFormat,
  type JournalExportRange,
  journalExportHorizon,
  journalExportPages,
} from '../audit/export.js'
import { AuthenticationError } from '../auth/tokens.js'
import type { Database } from '../db/client.js'
import { parseDateTime } from '../graphql/scalars.js'
import type { Services } from '../services.js'

// GET /exports/journal.csv and /exports/journal.jsonl?from=…&to=…: the
// journal, one row per entry, for accountants (a bearer token with the
// accountant role). Streamed a page of transactions at a time, each page
// written only once the client has taken the previous one (backpressure):
// the server's memory does not grow with the journal. See docs/AUDIT.md.

export const EXPORT_ROUTES = new Map<string, JournalExportFormat>([
  ['/exports/journal.csv', 'csv'],
  ['/exports/journal.jsonl', 'jsonl'],
])

const CONTENT_TYPES: Record<JournalExportFormat, string> = {
  csv: 'text/csv; charset=utf-8; header=present',
  jsonl: 'application/jsonl; charset=utf-8',
}

const PARAMETERS = ['from', 'to'] as const

export interface ExportDeps {
  database: Database
  services: Pick<Services, 'auth'>
  logger: Logger
}

export async function serveJournalExport(
  req: IncomingMessage,
  res: ServerResponse,
  format: JournalExportFormat,
  { database, services, logger }: ExportDeps,
): Promise<void> {
  if (req.method !== 'GET') {
    res.setHeader('allow', 'GET')
    return sendError(res, 405, 'method not allowed')
  }
  const refusal = await authorize(services, req.headers.authorization)
  if (refusal) return sendError(res, refusal.status, refusal.message, refusal.headers)

  const range = parseRange(new URL(req.url ?? '/', 'http://localhost').searchParams)
  if ('error' in range) return sendError(res, 400, range.error)

  let horizon: bigint
  try {
    horizon = await journalExportHorizon(database.db)
  } catch (error) {
    if (!(error instanceof HorizonUnavailableError)) throw error
    return sendError(res, 503, `the journal is busy: ${error.message}; try again`, { 'retry-after': '5' })
  }

  res.writeHead(200, {
    'content-type': CONTENT_TYPES[format],
    'content-disposition': `attachment; filename="journal-upto-${horizon}.${format}"`,
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    // The export holds every transaction up to this id that is in range, and none after it.
    'x-journal-horizon': horizon.toString(),
  })
  let closed = false
  res.on('close', () => {
    closed = true
  })
  try {
    if (format === 'csv') await write(res, `${JOURNAL_EXPORT_COLUMNS.map(csvField).join(',')}\r\n`)
    for await (const page of journalExportPages(database.db, format, range, horizon)) {
      if (closed) return
      await write(res, page)
    }
    res.end()
  } catch (error) {
    // Headers are gone: cutting the connection (no final chunk) is how the client learns it is incomplete.
    if (!closed) logger.error({ err: error }, 'journal export failed mid-stream')
    res.destroy()
  }
}

interface Refusal {
  status: 401 | 403
  message: string
  headers?: Record<string, string>
}

async function authorize(
  services: Pick<Services, 'auth'>,
  authorization: string | undefined,
): Promise<Refusal | null> {
  let viewer: Awaited<ReturnType<Services['auth']['viewerFor']>>
  try {
    viewer = await services.auth.viewerFor(authorization)
  } catch (error) {
    if (!(error instanceof AuthenticationError)) throw error
    return {
      status: 401,
      message: `invalid credentials: ${error.message}`,
      headers: { 'www-authenticate': 'Bearer error="invalid_token"' },
    }
  }
  if (!viewer) {
    return {
      status: 401,
      message: 'sign in: an accountant bearer token is required',
      headers: { 'www-authenticate': 'Bearer' },
    }
  }
  if (!viewer.roles.includes('accountant')) {
    return { status: 403, message: 'only accountants may export the journal' }
  }
  return null
}

/** from and to: RFC 3339 instants with an offset, each at most once, from before to; nothing else. */
export function parseRange(params: URLSearchParams): JournalExportRange | { error: string } {
  const range: JournalExportRange = {}
  for (const name of new Set(params.keys())) {
    if (!(PARAMETERS as readonly string[]).includes(name)) {
      return { error: `unknown parameter ${JSON.stringify(name.slice(0, 40))}: only from and to are allowed` }
    }
    const values = params.getAll(name)
    if (values.length > 1) return { error: `${name} is given ${values.length} times` }
    const value = values[0] as string
    try {
      parseDateTime(value)
    } catch (error) {
      return { error: `${name}: ${(error as GraphQLError).message}` }
    }
    range[name as (typeof PARAMETERS)[number]] = value
  }
  if (range.from !== undefined && range.to !== undefined) {
    if (parseDateTime(range.from).getTime() >= parseDateTime(range.to).getTime()) {
      // Millisecond comparison; the database compares the full precision.
      return { error: 'from must be before to' }
    }
  }
  return range
}

/** RFC 4180: a field with a comma, a quote, CR or LF is quoted, its quotes doubled (the rows are quoted so in SQL). */
export function csvField(value: string): string {
  return /[",\r\n]/.test(value) ? `"${value.replaceAll('"', '""')}"` : value
}

/** Writes, then waits until the client has taken it (or is gone). */
function write(res: ServerResponse, text: string | Buffer): Promise<void> {
  if (res.write(text)) return Promise.resolve()
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done)
      res.off('close', done)
      resolve()
    }
    res.once('drain', done)
    res.once('close', done)
  })
}

function sendError(
  res: ServerResponse,
  status: number,
  message: string,
  headers: Record<string, string> = {},
) {
  const text = JSON.stringify({ error: message })
  res.writeHead(status, {
    ...headers,
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  })
  res.end(text)
}
