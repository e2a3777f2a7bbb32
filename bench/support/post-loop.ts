import http from 'node:http'

// A closed loop of POSTs over keep-alive connections: `connections` workers,
// each sends its next request when the previous answer has been read. Each
// request's latency is from the call to the last byte of the answer.

export interface PreparedPost {
  path: string
  body: string
  headers: Record<string, string>
}

export interface PostAnswer {
  status: number
  body: string
  latencyMs: number
}

export interface LoopResult {
  answers: PostAnswer[]
  /** From the first request sent to the last answer read. */
  elapsedMs: number
  /** performance.now() when the first request was sent. */
  startedAt: number
  errors: string[]
}

function postOnce(agent: http.Agent, url: URL, request: PreparedPost): Promise<PostAnswer> {
  return new Promise((resolve) => {
    const started = performance.now()
    const req = http.request(
      {
        agent,
        host: url.hostname,
        port: url.port,
        method: 'POST',
        path: request.path,
        headers: { ...request.headers, 'content-length': Buffer.byteLength(request.body) },
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (chunk: Buffer) => chunks.push(chunk))
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            body: Buffer.concat(chunks).toString('utf8'),
            latencyMs: performance.now() - started,
          }),
        )
        res.on('error', (error) =>
          resolve({ status: 0, body: String(error), latencyMs: performance.now() - started }),
        )
      },
    )
    req.on('error', (error) =>
      resolve({ status: 0, body: String(error), latencyMs: performance.now() - started }),
    )
    req.end(request.body)
  })
}

/** POSTs every request once, `connections` at a time; answers are in the requests' order. */
export async function postAll(
  baseUrl: string,
  requests: readonly PreparedPost[],
  connections: number,
): Promise<LoopResult> {
  const url = new URL(baseUrl)
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections })
  const answers: PostAnswer[] = new Array(requests.length)
  const errors: string[] = []
  let next = 0
  const startedAt = performance.now()
  try {
    await Promise.all(
      Array.from({ length: Math.min(connections, requests.length) }, async () => {
        while (next < requests.length) {
          const i = next++
          const answer = await postOnce(agent, url, requests[i] as PreparedPost)
          if (answer.status === 0 && errors.length < 10) errors.push(answer.body)
          answers[i] = answer
        }
      }),
    )
  } finally {
    agent.destroy()
  }
  return { answers, elapsedMs: performance.now() - startedAt, startedAt, errors }
}
