import { once } from 'node:events'
import { connect, createServer, type Socket } from 'node:net'
import { describe, expect, it } from 'vitest'
import { Turns } from '../src/http/turns.js'

const nextImmediate = () => new Promise<void>((resolve) => setImmediate(resolve))

describe('request turns (src/http/turns.ts)', () => {
  it('releases waiting requests in arrival order, at most perTurn per turn of the event loop', async () => {
    const turns = new Turns(3)
    const released: number[] = []
    for (let i = 0; i < 7; i++) void turns.wait().then(() => released.push(i))
    expect(released).toEqual([])
    expect(turns.pending).toBe(7)
    await nextImmediate()
    expect(released).toEqual([0, 1, 2])
    await nextImmediate()
    expect(released).toEqual([0, 1, 2, 3, 4, 5])
    await nextImmediate()
    expect(released).toEqual([0, 1, 2, 3, 4, 5, 6])
    expect(turns.pending).toBe(0)
  })

  it('runs the I/O callbacks that became ready during a turn before the next turn', async () => {
    const server = createServer()
    const accepted = new Promise<Socket>((resolve) => {
      server.once('connection', resolve)
    })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    const address = server.address() as { port: number }
    const client = connect(address.port, '127.0.0.1')
    await once(client, 'connect')
    const peer = await accepted
    try {
      const order: string[] = []
      peer.on('data', () => order.push('io'))
      const turns = new Turns(2)
      const waits = [0, 1, 2, 3].map((i) =>
        turns.wait().then(() => {
          order.push(`request ${i}`)
          // The first turn's work makes the database's answer (here: the peer's data) ready.
          if (i === 0) client.write('answer')
        }),
      )
      await Promise.all(waits)
      await new Promise((resolve) => setTimeout(resolve, 20))
      expect(order).toEqual(['request 0', 'request 1', 'io', 'request 2', 'request 3'])
    } finally {
      client.destroy()
      peer.destroy()
      server.close()
    }
  })

  it('refuses a turn size that is not a positive integer', () => {
    expect(() => new Turns(0)).toThrow(RangeError)
    expect(() => new Turns(1.5)).toThrow(RangeError)
  })
})
