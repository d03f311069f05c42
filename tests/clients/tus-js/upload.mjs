#!/usr/bin/env node
// Drives tus-js-client (pinned in package.json) against a tus / IETF-draft endpoint and prints
// one JSON object per scenario run on stdout, so an integration test can assert on it.
//
//   node upload.mjs --endpoint http://127.0.0.1:8080/files/ --file big.bin \
//       [--scenario simple|chunked|parallel|deferred|abort-resume|terminate|all] \
//       [--protocol tus-v1|ietf-draft-03|ietf-draft-05|all] [--chunk-size 65536] \
//       [--metadata key=value ...] [--retry-delays 0,200] [--timeout-ms 30000]
//       [--override-patch] [--upload-during-creation]
//
// Exit status: 0 when every run succeeded, 1 when one failed (its JSON says why), 2 for bad
// arguments. Nothing is written to disk.

import { readFileSync } from 'node:fs'
import { basename } from 'node:path'
import { Readable } from 'node:stream'
import * as tus from 'tus-js-client'

const SCENARIOS = ['simple', 'chunked', 'parallel', 'deferred', 'abort-resume', 'terminate']
const PROTOCOLS = ['tus-v1', 'ietf-draft-03', 'ietf-draft-05']
// tus-js-client's restrictions: parallel uploads need tus concatenation, and deferred length
// needs creation-defer-length; neither exists in the IETF draft.
const TUS_ONLY = new Set(['parallel', 'deferred'])

function usage(message) {
  process.stderr.write(`upload.mjs: ${message}\n`)
  process.exit(2)
}

function parseArgs(argv) {
  const args = {
    scenario: 'simple',
    protocol: 'tus-v1',
    chunkSize: 64 * 1024,
    metadata: {},
    retryDelays: [0, 200],
    timeoutMs: 30000,
    overridePatch: false,
    uploadDuringCreation: false,
  }
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]
    const next = () => {
      if (i + 1 >= argv.length) usage(`${flag} needs a value`)
      return argv[++i]
    }
    switch (flag) {
      case '--endpoint': args.endpoint = next(); break
      case '--file': args.file = next(); break
      case '--scenario': args.scenario = next(); break
      case '--protocol': args.protocol = next(); break
      case '--chunk-size': args.chunkSize = Number(next()); break
      case '--metadata': {
        const pair = next()
        const eq = pair.indexOf('=')
        if (eq <= 0) usage(`--metadata ${pair}: want key=value`)
        args.metadata[pair.slice(0, eq)] = pair.slice(eq + 1)
        break
      }
      case '--retry-delays': {
        const v = next()
        args.retryDelays = v === '' ? null : v.split(',').map(Number)
        break
      }
      case '--timeout-ms': args.timeoutMs = Number(next()); break
      case '--override-patch': args.overridePatch = true; break
      case '--upload-during-creation': args.uploadDuringCreation = true; break
      case '--help': case '-h':
        process.stdout.write(readFileSync(new URL(import.meta.url)).toString().split('\n')
          .filter((l) => l.startsWith('//')).map((l) => l.slice(3)).join('\n') + '\n')
        process.exit(0)
      default: usage(`unknown argument ${flag}`)
    }
  }
  if (!args.endpoint) usage('--endpoint is required')
  if (!args.file) usage('--file is required')
  if (!Number.isInteger(args.chunkSize) || args.chunkSize <= 0) usage('--chunk-size must be a positive integer')
  const scenarios = args.scenario === 'all' ? SCENARIOS : [args.scenario]
  const protocols = args.protocol === 'all' ? PROTOCOLS : [args.protocol]
  for (const s of scenarios) if (!SCENARIOS.includes(s)) usage(`unknown scenario ${s}`)
  for (const p of protocols) if (!PROTOCOLS.includes(p)) usage(`unknown protocol ${p}`)
  return { ...args, scenarios, protocols }
}

const HEADERS_OF_INTEREST = [
  'location', 'upload-offset', 'upload-length', 'upload-expires', 'upload-concat',
  'upload-complete', 'upload-incomplete', 'upload-limit', 'upload-draft-interop-version',
  'tus-resumable', 'content-type',
]

/** Options recording every exchange into `log`. */
function baseOptions(args, protocol, log) {
  return {
    endpoint: args.endpoint,
    protocol,
    retryDelays: args.retryDelays,
    overridePatchMethod: args.overridePatch,
    uploadDataDuringCreation: args.uploadDuringCreation,
    metadata: { filename: basename(args.file), filetype: 'application/octet-stream', ...args.metadata },
    onBeforeRequest(req) {
      log.push({ method: req.getMethod(), url: req.getURL(), headers: pick(req) })
    },
    onAfterResponse(req, res) {
      const entry = log.findLast((e) => e.method === req.getMethod() && e.url === req.getURL() && e.status === undefined)
      const headers = {}
      for (const h of HEADERS_OF_INTEREST) {
        const v = res.getHeader(h)
        if (v !== undefined && v !== null) headers[h] = v
      }
      if (entry) Object.assign(entry, { status: res.getStatus(), responseHeaders: headers })
    },
  }
}

function pick(req) {
  const out = {}
  for (const h of ['Upload-Offset', 'Upload-Length', 'Upload-Defer-Length', 'Upload-Concat',
    'Upload-Complete', 'Upload-Draft-Interop-Version', 'Content-Type', 'X-HTTP-Method-Override']) {
    const v = req.getHeader(h)
    if (v !== undefined) out[h] = v
  }
  return out
}

function errorJson(err) {
  if (!err) return null
  const out = { message: err.message }
  const res = err.originalResponse
  if (res) {
    out.status = res.getStatus()
    out.body = res.getBody()
  }
  if (err.causingError) out.cause = String(err.causingError.message ?? err.causingError)
  return out
}

/** Runs one Upload to its end; resolves { ok, url, body, status, error, progress }. */
function runUpload(input, options, hooks = {}) {
  return new Promise((resolve) => {
    let lastProgress = 0
    const upload = new tus.Upload(input, {
      ...options,
      onProgress(sent, total) {
        lastProgress = sent
        hooks.onProgress?.(sent, total, upload)
      },
      onChunkComplete(chunk, accepted, total) {
        hooks.onChunkComplete?.(chunk, accepted, total, upload)
      },
      onSuccess({ lastResponse }) {
        resolve({
          ok: true,
          url: upload.url,
          status: lastResponse?.getStatus(),
          body: lastResponse?.getBody() ?? null,
          progress: lastProgress,
        })
      },
      onError(err) {
        resolve({ ok: false, url: upload.url, error: errorJson(err), progress: lastProgress })
      },
    })
    hooks.started?.(upload, resolve)
    upload.start()
  })
}

function withTimeout(promise, ms, what) {
  let timer
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve({ ok: false, error: { message: `${what}: no result after ${ms} ms` } }), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

async function scenario(name, protocol, args, data) {
  const log = []
  const opts = baseOptions(args, protocol, log)
  const result = { scenario: name, protocol, size: data.length, chunkSize: args.chunkSize }
  let run
  switch (name) {
    case 'simple':
      // The whole file in one PATCH (tus-js-client's default chunkSize is Infinity).
      run = runUpload(data, opts)
      break
    case 'chunked':
      run = runUpload(data, { ...opts, chunkSize: args.chunkSize })
      break
    case 'parallel':
      // Three partial uploads, then Upload-Concat: final;… (tus concatenation).
      run = runUpload(data, { ...opts, chunkSize: args.chunkSize, parallelUploads: 3 })
      break
    case 'deferred': {
      // A stream of unknown length: Upload-Defer-Length: 1, Upload-Length on the last PATCH.
      const pieces = []
      for (let i = 0; i < data.length; i += args.chunkSize) pieces.push(data.subarray(i, i + args.chunkSize))
      run = runUpload(Readable.from(pieces), {
        ...opts, chunkSize: args.chunkSize, uploadLengthDeferred: true,
      })
      break
    }
    case 'abort-resume':
      run = (async () => {
        // Abort after the first accepted chunk, then resume the same URL from its offset.
        let abortedAt = null
        let first = await runUpload(data, { ...opts, chunkSize: args.chunkSize }, {
          onChunkComplete(chunk, accepted, total, upload) {
            if (abortedAt === null && accepted < total) {
              abortedAt = accepted
              upload.abort().then(() => first_resolve({ ok: true, aborted: true, url: upload.url, progress: accepted }))
            }
          },
          started(_upload, resolve) { first_resolve = resolve },
        })
        if (!first.ok) return { ...first, phase: 'first' }
        if (!first.aborted) return { ...first, note: 'the file fit in one chunk: nothing to resume' }
        const second = await runUpload(data, { ...opts, chunkSize: args.chunkSize, uploadUrl: first.url })
        const resumedAt = log.find((e, i) => i > 0 && e.method === 'HEAD')?.responseHeaders?.['upload-offset']
        return { ...second, abortedAt, resumedAt: resumedAt === undefined ? null : Number(resumedAt), firstUrl: first.url }
      })()
      break
    case 'terminate':
      run = (async () => {
        // Abort with terminate: tus-js-client sends DELETE; then the URL must be gone.
        let url = null
        const first = await runUpload(data, { ...opts, chunkSize: args.chunkSize }, {
          onChunkComplete(chunk, accepted, total, upload) {
            if (url === null && accepted < total) {
              url = upload.url
              upload.abort(true).then(
                () => first_resolve({ ok: true, terminated: true, url }),
                (err) => first_resolve({ ok: false, url, error: errorJson(err) }),
              )
            }
          },
          started(_upload, resolve) { first_resolve = resolve },
        })
        if (!first.ok || !first.terminated) return first
        const head = await fetch(first.url, {
          method: 'HEAD',
          headers: protocol === 'tus-v1'
            ? { 'Tus-Resumable': '1.0.0' }
            : { 'Upload-Draft-Interop-Version': protocol === 'ietf-draft-03' ? '5' : '6' },
        }).then((r) => r.status, (e) => `fetch failed: ${e.message}`)
        return { ...first, headAfterDelete: head, ok: head === 404 || head === 410 }
      })()
      break
  }
  const outcome = await withTimeout(run, args.timeoutMs, `${name}/${protocol}`)
  return { ...result, ...outcome, requests: log }
}

// Set by the abort scenarios' `started` hook: resolves the first phase early.
let first_resolve = () => {}

const args = parseArgs(process.argv.slice(2))
let data
try {
  data = readFileSync(args.file)
} catch (e) {
  usage(`cannot read ${args.file}: ${e.message}`)
}
let failed = false
for (const protocol of args.protocols) {
  for (const name of args.scenarios) {
    if (TUS_ONLY.has(name) && protocol !== 'tus-v1') {
      if (args.scenario === 'all' || args.protocol === 'all') continue
      usage(`scenario ${name} needs protocol tus-v1 (tus-js-client refuses it otherwise)`)
    }
    const r = await scenario(name, protocol, args, data)
    if (!r.ok) failed = true
    process.stdout.write(`${JSON.stringify(r)}\n`)
  }
}
process.exit(failed ? 1 : 0)
