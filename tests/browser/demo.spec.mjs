// End-to-end test of the demo page (demo/) in headless Debian Chromium, driven by
// playwright-core. It starts the real demo (scripts/demo.sh: nginx with the module and the echo
// backend) on free ports, uploads files through the page's file input and checks what the
// server stored, byte for byte.
//
//   node tests/browser/demo.spec.mjs        (after `npm ci` in tests/browser)
//
// Environment: CHROMIUM (default /usr/bin/chromium); DEMO_PROFILE (default debug: the build
// `cargo build --workspace` left in target/debug). Output in target/browser-test/: the
// screenshots demo.png (the end), demo-paused.png, demo-reloaded.png and demo-progress.png
// (mid-way), demo.log (the demo's output), prefix/ (nginx's prefix: access.log, error.log,
// store/).
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { MiB, assert, out, runChecks, sha256, sleep, startDemo, waitFor } from './harness.mjs';

const prefix = path.join(out, 'prefix');
const SEGMENT = 256 * 1024;
// Milliseconds the page waits between segments, so that pauses and the reload land mid-way.
const DELAY = 60;

// One entry per line of the access log (format `upload` of nginx-conf/demo.conf).
function accessLog() {
  const file = path.join(prefix, 'access.log');
  if (!fs.existsSync(file)) return [];
  const re = /"(\S+) (\S+) [^"]*" (\d+) (\d+) session="([^"]*)" range="([^"]*)"/;
  return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((line) => {
    const m = re.exec(line);
    assert(m, `unexpected access log line ${line}`);
    const range = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(m[6]);
    return {
      method: m[1],
      uri: m[2],
      status: Number(m[3]),
      session: m[5] === '-' ? '' : m[5],
      first: range ? Number(range[1]) : null,
      bytes: range ? Number(range[2]) - Number(range[1]) + 1 : 0,
    };
  });
}

// ---- the page --------------------------------------------------------------------------------

// What each upload row of the page shows.
function rows(page) {
  return page.evaluate(() => Array.from(document.querySelectorAll('#uploads li.upload'), (li) => ({
    name: li.querySelector('.name').textContent,
    state: li.dataset.state,
    held: Number(li.dataset.held),
    sent: Number(li.dataset.sent),
    session: li.dataset.session,
    status: li.querySelector('.status').textContent,
    amount: li.querySelector('.amount').textContent,
    speed: li.querySelector('.speed').textContent,
    answer: li.querySelector('.answer').hidden ? null : li.querySelector('.answer pre').textContent,
  })));
}

async function row(page, name) {
  const found = (await rows(page)).filter((r) => r.name === name);
  assert(found.length === 1, `one row for ${name}, found ${found.length}`);
  return found[0];
}

const rowButton = (page, name, cls) =>
  page.locator('#uploads li.upload').filter({ has: page.getByText(name, { exact: true }) })
    .locator('button.' + cls);

function waitRow(page, name, what, pred, timeoutMs) {
  return waitFor(`${name}: ${what}`, async () => {
    const r = await row(page, name);
    if (r.state === 'error') throw new Error(`${name} failed: ${r.status}\n${r.answer || ''}`);
    return pred(r) ? r : null;
  }, timeoutMs);
}

// The backend's answer lists the form fields the module handed off: `file.path = ...`.
function checkStored(r, source) {
  assert(r.state === 'done', `${r.name} done (${r.status})`);
  assert(r.answer !== null, `${r.name}: the backend's answer is shown`);
  const fields = Object.fromEntries(r.answer.split('\n')
    .map((l) => l.split(' = ')).filter((kv) => kv.length === 2));
  assert(fields['file.name'] === path.basename(source), `file.name ${fields['file.name']}`);
  const expected = fs.readFileSync(source);
  assert(fields['file.size'] === String(expected.length), `file.size ${fields['file.size']}`);
  assert(fields['file.path'] && fields['file.path'].endsWith('/' + r.session),
    `file.path ${fields['file.path']} ends with the session id ${r.session}`);
  const stored = fs.readFileSync(fields['file.path']);
  assert(stored.equals(expected),
    `${fields['file.path']} (${stored.length} bytes, sha256 ${sha256(stored)}) equals ` +
    `${source} (${expected.length} bytes, sha256 ${sha256(expected)})`);
  return fields['file.path'];
}

// ---- the checks ------------------------------------------------------------------------------

// One file: start, pause mid-way, resume, reload the page mid-way, pick the file again: the
// upload goes on from what the server holds, under the same session id.
async function pauseResumeReload(page, base, files) {
  const file = files.big;
  const name = path.basename(file);
  const size = fs.statSync(file).size;
  await page.goto(`${base}/?segment=${SEGMENT}&delay=${DELAY}`);
  await page.setInputFiles('#files', file);

  let r = await waitRow(page, name, 'a quarter held', (x) => x.held >= size / 4);
  await rowButton(page, name, 'pause').click();
  r = await waitRow(page, name, 'paused', (x) => x.state === 'paused');
  const session = r.session;
  assert(/^[0-9a-f]{32}$/.test(session), `session id ${session}`);
  assert(r.held < size, `paused before the end (${r.held} of ${size})`);
  // A pause that cut a segment asks the server what it kept: let that answer land first.
  await sleep(300);
  const before = await row(page, name);
  await page.screenshot({ path: path.join(out, 'demo-paused.png'), fullPage: true });
  await sleep(300);
  const still = await row(page, name);
  assert(still.held === before.held && still.sent === before.sent && still.state === 'paused',
    `nothing moves while paused (${before.held} -> ${still.held} held)`);

  await rowButton(page, name, 'resume').click();
  r = await waitRow(page, name, 'more than half held', (x) => x.held >= size / 2);
  assert(r.session === session, 'resume keeps the session id');

  await page.reload();
  const logMark = accessLog().length;
  // The reloaded page lists the unfinished upload with what the server holds of it.
  const pending = await waitFor('the unfinished upload listed', async () => {
    const text = await page.locator('#pending-list').textContent();
    return /% on the server/.test(text) ? text : null;
  });
  const pendingPercent = Number(/: (\d+)% on the server/.exec(pending)?.[1]);
  assert(pending.includes(name) && pendingPercent >= 50 && pendingPercent < 100,
    `the reloaded page lists ${name} as unfinished, half done or more: ${pending}`);
  await page.screenshot({ path: path.join(out, 'demo-reloaded.png'), fullPage: true });
  await page.setInputFiles('#files', file);
  r = await waitRow(page, name, 'done', (x) => x.state === 'done');
  assert(r.session === session, `the same session after the reload (${r.session} vs ${session})`);
  const stored = checkStored(r, file);

  // After the reload the page sent only what the server did not hold yet.
  const after = accessLog().slice(logMark).filter((l) => l.session === session);
  const query = after.find((l) => l.bytes === 0 && l.status === 200);
  assert(query, 'after the reload the page asked the server what it holds (200)');
  const segments = after.filter((l) => l.bytes > 0);
  const resent = segments.reduce((sum, l) => sum + l.bytes, 0);
  assert(segments.length > 0 && !segments.some((l) => l.first === 0),
    'after the reload no segment starts at byte 0');
  assert(resent < size, `after the reload fewer bytes than the file were sent (${resent} < ${size})`);
  assert(r.sent < size, `the page counts fewer bytes than the file after the reload (${r.sent})`);
  const all = accessLog().filter((l) => l.session === session && l.bytes > 0);
  const answered201 = all.filter((l) => l.status === 201).length;
  const answered200 = all.filter((l) => l.status === 200).length;
  assert(answered200 === 1, `one segment got the backend's answer (${answered200})`);
  const stateGone = await page.evaluate(() => Object.keys(localStorage).length);
  assert(stateGone === 0, `the finished upload is forgotten by localStorage (${stateGone} left)`);
  console.log(`  ${name}: ${size} bytes stored at ${stored}; ${all.length} segments ` +
    `(${answered201} answered 201), ${segments.length} of them (${resent} bytes) after the reload`);
}

// Two files picked together upload side by side; a non-ASCII name arrives intact.
async function twoFilesAtOnce(page, base, files) {
  // Slower than the other checks, so that the screenshot catches both files in flight.
  await page.goto(`${base}/?segment=${SEGMENT}&delay=${3 * DELAY}`);
  const logMark = accessLog().length;
  await page.setInputFiles('#files', [files.second, files.third]);
  const names = [files.second, files.third].map((f) => path.basename(f));
  await waitFor('both files uploading', async () => {
    const both = (await rows(page)).filter((r) => names.includes(r.name));
    return both.length === 2 &&
      both.every((r) => r.state === 'uploading' && r.held >= 2 * SEGMENT && r.speed !== '');
  });
  for (const r of (await rows(page))) {
    assert(/^\d+(\.\d)? (B|KiB|MiB|GiB)\/s$/.test(r.speed), `${r.name} shows a speed: ${r.speed}`);
  }
  await page.screenshot({ path: path.join(out, 'demo-progress.png'), fullPage: true });
  const done = [];
  for (const [i, name] of names.entries()) {
    const r = await waitRow(page, name, 'done', (x) => x.state === 'done');
    done.push({ r, path: checkStored(r, [files.second, files.third][i]) });
  }
  const [a, b] = done.map(({ r }) => accessLog().slice(logMark)
    .map((l, i) => (l.session === r.session && l.bytes > 0 ? i : -1)).filter((i) => i >= 0));
  // Side by side: each file's segments began before the other's ended.
  assert(a[0] < b[b.length - 1] && b[0] < a[a.length - 1],
    `segments of both files interleave in the access log (${a[0]}..${a.at(-1)} vs ${b[0]}..${b.at(-1)})`);
  for (const { r, path: p } of done) console.log(`  ${r.name}: stored at ${p}`);
}

// A pause that cuts a segment short: the server keeps the bytes that reached it (the module
// records them when the connection drops), and the resume starts there, not at byte 0.
async function pauseMidSegment(page, base, files) {
  const file = files.cut;
  const name = path.basename(file);
  const size = fs.statSync(file).size;
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  const throttle = (bytesPerSecond) => cdp.send('Network.emulateNetworkConditions', {
    offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: bytesPerSecond,
  });
  // One segment for the whole file, sent slowly enough to pause in its middle.
  await page.goto(`${base}/?segment=${size}`);
  const logMark = accessLog().length;
  await throttle(1 * MiB);
  await page.setInputFiles('#files', file);
  let r = await waitRow(page, name, 'a third in flight', (x) => x.sent >= size / 3);
  await rowButton(page, name, 'pause').click();
  await throttle(-1);
  r = await waitRow(page, name, 'paused', (x) => x.state === 'paused');
  const sentBeforePause = r.sent;
  // The server records a cut segment when it sees the connection close; wait for that, so the
  // resume's status query cannot overtake it.
  await waitFor('the server to report the cut segment', async () => {
    const res = await fetch(`${base}/upload`, { method: 'POST', headers: { 'X-Session-ID': r.session } });
    return res.status === 200;
  }, 10000);
  await rowButton(page, name, 'resume').click();
  r = await waitRow(page, name, 'done', (x) => x.state === 'done');
  await cdp.detach();
  checkStored(r, file);

  const lines = accessLog().slice(logMark).filter((l) => l.session === r.session && l.bytes > 0);
  assert(lines.length >= 2 && lines[0].first === 0 && lines[0].bytes === size && lines[0].status >= 400,
    `the first, whole-file segment was cut short: ${JSON.stringify(lines[0])}`);
  const resumed = lines.slice(1);
  const resent = resumed.reduce((sum, l) => sum + l.bytes, 0);
  assert(resumed[0].first > 0 && resumed.every((l) => l.first > 0),
    `the resume starts where the server stopped, not at 0 (${resumed[0].first})`);
  assert(resent < size, `the resume sent less than the file (${resent} < ${size})`);
  console.log(`  ${name}: cut after ${sentBeforePause} bytes sent by the page; the server kept ` +
    `${resumed[0].first}, the resume sent ${resent} bytes`);
}

// ---- main ------------------------------------------------------------------------------------

async function main() {
  fs.rmSync(out, { recursive: true, force: true });
  fs.mkdirSync(path.join(out, 'files'), { recursive: true });
  const files = {
    big: path.join(out, 'files', 'resume-test.bin'),
    second: path.join(out, 'files', 'zweite Datei ä €.bin'),
    third: path.join(out, 'files', 'third.bin'),
    cut: path.join(out, 'files', 'cut-short.bin'),
  };
  fs.writeFileSync(files.big, randomBytes(8 * MiB));
  fs.writeFileSync(files.second, randomBytes(3 * MiB + 12345));
  fs.writeFileSync(files.third, randomBytes(2 * MiB + 1));
  fs.writeFileSync(files.cut, randomBytes(4 * MiB));

  const demo = await startDemo({
    prefix,
    log: path.join(out, 'demo.log'),
    ready: async (base) => {
      const res = await fetch(base + '/');
      return res.ok && (await res.text()).includes('app.js');
    },
  });
  return runChecks({
    demo,
    files,
    viewport: { width: 900, height: 700 },
    checks: [
      ['pause, resume, reload and resume', pauseResumeReload],
      ['pause in the middle of a segment', pauseMidSegment],
      ['two files at once', twoFilesAtOnce],
    ],
    shot: path.join(out, 'demo.png'),
    midway: ['paused', 'reloaded', 'progress'].map((s) => path.join(out, `demo-${s}.png`)),
  });
}

main().then((code) => process.exit(code), (e) => {
  console.error(e.stack || e);
  process.exit(1);
});
