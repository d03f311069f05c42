// What both browser tests share: small helpers, the demo server (scripts/demo.sh on free
// ports, in its own process group), and a run of checks in one headless Chromium page.
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const out = path.join(root, 'target/browser-test');
export const MiB = 1024 * 1024;

export function assert(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export async function waitFor(what, probe, timeoutMs = 60000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export const sha256 = (buf) => createHash('sha256').update(buf).digest('hex').slice(0, 16);

// Starts the demo with nginx's prefix `prefix` and its output in `log`, and waits until
// `ready(base)` says the page is served. Returns { base, stop }.
export async function startDemo({ prefix, log, ready }) {
  const listen = `127.0.0.1:${await freePort()}`;
  const backend = `127.0.0.1:${await freePort()}`;
  const logFd = fs.openSync(log, 'w');
  const child = spawn('bash', ['scripts/demo.sh'], {
    cwd: root,
    env: {
      ...process.env,
      DEMO_PROFILE: process.env.DEMO_PROFILE || 'debug',
      DEMO_LISTEN: listen,
      DEMO_BACKEND: backend,
      DEMO_PREFIX: prefix,
    },
    detached: true, // its own process group: stopping it stops nginx and the backend too
    stdio: ['ignore', logFd, logFd],
  });
  let exited = false;
  child.on('exit', () => { exited = true; });
  const stop = async () => {
    if (exited) return;
    try { process.kill(-child.pid, 'SIGTERM'); } catch (_) { return; }
    const deadline = Date.now() + 10000;
    while (!exited && Date.now() < deadline) await sleep(50);
    if (!exited) try { process.kill(-child.pid, 'SIGKILL'); } catch (_) { /* gone */ }
  };
  const base = `http://${listen}`;
  try {
    // demo.sh runs `cargo build` first: a no-op after the test build, minutes from scratch.
    await waitFor('the demo to answer on ' + base, async () => {
      if (exited) throw new Error(`scripts/demo.sh exited early; see ${log}`);
      try {
        return await ready(base);
      } catch (_) {
        return false;
      }
    }, 600000);
  } catch (e) {
    await stop();
    throw e;
  }
  return { base, stop };
}

// Runs `checks` ([name, async (page, base, files)]) one after the other in one page of a
// fresh headless Chromium, then takes the screenshot `shot` and stops the demo. Prints a line
// per check and the totals; returns the exit code.
export async function runChecks({ demo, checks, files, viewport, shot, midway }) {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ngx-upload-chromium-'));
  let context;
  let passed = 0;
  let failed = 0;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport,
    });
    const page = context.pages()[0] || await context.newPage();
    page.on('pageerror', (e) => console.log(`  page error: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') console.log(`  console: ${m.text()}`); });
    for (const [name, check] of checks) {
      try {
        await check(page, demo.base, files);
        console.log(`ok: ${name}`);
        passed++;
      } catch (e) {
        console.log(`FAILED: ${name}: ${e.stack || e}`);
        failed++;
      }
    }
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`screenshots: ${shot}, and ${midway.join(', ')} mid-way`);
  } finally {
    if (context) await context.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
    await demo.stop();
  }
  console.log(`browser: ${passed} passed, ${failed} failed`);
  return failed === 0 ? 0 : 1;
}
