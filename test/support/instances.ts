import net from 'node:net'
import pino from 'pino'
import { loadConfig } from '../../src/config.js'
import { openDatabase } from '../../src/db/client.js'
import { buildApp } from '../../src/http/server.js'
import { createServices, type Services } from '../../src/services.js'
import { TEST_JWT_SECRET, type TestApp } from './app.js'

// Several server instances on one database: a further instance next to a
// TestApp (same PostgreSQL database, its own pool, services and port), and a
// TCP proxy to take a dependency (Redis) away and bring it back.

export interface Instance {
  url: string
  services: Services
  stop(): Promise<void>
}

/** Another server on `app`'s database (PostgreSQL only): as a second instance behind a load balancer. */
export async function startInstanceOn(app: TestApp, env: Record<string, string> = {}): Promise<Instance> {
  if (app.config.database.kind !== 'postgres') throw new Error('a second instance needs PostgreSQL')
  const database = await openDatabase(app.config.database)
  const config = {
    ...loadConfig({
      NODE_ENV: 'test',
      HOST: '127.0.0.1',
      PORT: '0',
      JWT_SECRET: TEST_JWT_SECRET,
      ...env,
    }),
    database: app.config.database,
  }
  const services = createServices(config, database)
  const server = buildApp({
    config,
    database,
    services,
    logger: pino({ level: process.env.LOG_LEVEL ?? 'silent' }),
    shutdownGraceMs: 500,
  })
  const { port } = await server.start()
  return {
    url: `http://127.0.0.1:${port}`,
    services,
    stop: async () => {
      try {
        await server.stop()
        await services.live.stop()
      } finally {
        await database.close()
      }
    },
  }
}

/** A TCP proxy on a fixed local port: `down()` cuts every connection and refuses new ones, `up()` listens again. */
export interface TcpProxy {
  port: number
  down(): Promise<void>
  up(): Promise<void>
  close(): Promise<void>
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const sockets = new Set<net.Socket>()
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host)
    sockets.add(client)
    sockets.add(upstream)
    client.pipe(upstream)
    upstream.pipe(client)
    const end = () => {
      client.destroy()
      upstream.destroy()
      sockets.delete(client)
      sockets.delete(upstream)
    }
    client.on('error', end)
    upstream.on('error', end)
    client.on('close', end)
    upstream.on('close', end)
  })
  const listen = (port: number) =>
    new Promise<number>((resolve, reject) => {
      server.once('error', reject)
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject)
        resolve((server.address() as net.AddressInfo).port)
      })
    })
  const port = await listen(0)
  const down = async () => {
    if (!server.listening) return
    const closed = new Promise<void>((resolve) => server.close(() => resolve()))
    for (const socket of sockets) socket.destroy()
    sockets.clear()
    await closed
  }
  return {
    port,
    down,
    up: async () => {
      if (!server.listening) await listen(port)
    },
    close: down,
  }
}

/** Whether something answers on host:port within `timeoutMs`. */
export function reachable(host: string, port: number, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, host)
    const done = (ok: boolean) => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(timeoutMs, () => done(false))
    socket.once('connect', () => done(true))
    socket.once('error', () => done(false))
  })
}
