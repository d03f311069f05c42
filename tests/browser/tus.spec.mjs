// End-to-end test of the tus demo page (demo/tus.html: Uppy's Dashboard and Tus plugin) in
// headless Debian Chromium, driven by playwright-core like demo.spec.mjs. It starts the real
// demo (scripts/demo.sh: nginx with the module and the echo backend) on free ports, adds files
// through the Dashboard's file input, pauses, resumes and reloads mid-upload, and checks that
// every file reached the backend byte for byte, handed off exactly once.
//
//   node tests/browser/tus.spec.mjs        (after scripts/setup.sh: npm ci in tests/browser, demo)
//
// Environment: CHROMIUM (default /usr/bin/chromium); DEMO_PROFILE (default debug: the build
// `cargo build --workspace` left in target/debug). Output in target/browser-test/ (beside
// demo.spec.mjs's): the screenshots tus.png (the end), tus-progress.png, tus-paused.png and
// tus-reloaded.png (mid-way), tus-demo.log (the demo's output: the backend logs each hand-off
// there), tus-prefix/ (nginx's prefix: tus-access.log, error.log, tus-store/).
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { MiB, assert, out, runChecks, sha256, sleep, startDemo, waitFor } from './harness.mjs';

const prefix = path.join(out, 'tus-prefix');
const demoLog = path.join(out, 'tus-demo.log');
// Chromium's upload bandwidth while files are in flight (DevTools network emulation), so that
// pauses and the reload land mid-upload.
const THROTTLE = 2 * MiB;

// One entry per request to the tus location (log format `tus` of nginx-conf/demo.conf).
function tusLog() {
  const file = path.join(prefix, 'tus-access.log');
  if (!fs.existsSync(file)) return [];
  const re = /"(\S+) (\S+) [^"]*" (\d+) (\d+) offset="([^"]*)" answered="([^"]*)"/;
  return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((line) => {
    const m = re.exec(line);
    assert(m, `unexpected tus access log line ${line}`);
    return {
      method: m[1],
      uri: m[2],
      status: Number(m[3]),
      length: Number(m[4]),
      offset: m[5] === '-' ? null : Number(m[5]),
      answered: m[6] === '-' ? null : Number(m[6]),
    };
  });
}

// The hand-offs the echo backend received for one upload (it logs `POST <uri> (N body bytes)`
// on standard error, which scripts/demo.sh leaves in tus-demo.log).
function handOffs(id) {
  return fs.readFileSync(demoLog, 'utf8').split('\n')
    .filter((l) => new RegExp(`^\\S+ /files/${id} \\(\\d+ body bytes\\)$`).test(l));
}

// What the server holds of an upload (tus HEAD). Only for uploads that are not sending: a HEAD
// on an upload a PATCH still holds asks that PATCH to stop (README, "A client that lost its
// connection").
async function serverOffset(url) {
  const res = await fetch(url, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } });
  return res.status === 200 ? Number(res.headers.get('upload-offset')) : -res.status;
}

// ---- the page --------------------------------------------------------------------------------

// Uppy's view of each file (the page leaves its Uppy instance in globalThis.uppy).
function files(page) {
  return page.evaluate(() => globalThis.uppy.getFiles().map((f) => ({
    id: f.id,
    name: f.name,
    size: f.size,
    sent: f.progress.bytesUploaded || 0,
    started: Boolean(f.progress.uploadStarted),
    complete: Boolean(f.progress.uploadComplete),
    paused: Boolean(f.isPaused),
    error: f.error || null,
    url: (f.tus && f.tus.uploadUrl) || (f.response && f.response.uploadURL) || null,
  })));
}

async function file(page, name) {
  const found = (await files(page)).filter((f) => f.name === name);
  assert(found.length === 1, `one Uppy file named ${name}, found ${found.length}`);
  return found[0];
}

function waitFile(page, name, what, pred, timeoutMs) {
  return waitFor(`${name}: ${what}`, async () => {
    const f = await file(page, name);
    if (f.error) throw new Error(`${name} failed: ${f.error}`);
    return pred(f) ? f : null;
  }, timeoutMs);
}

// The Dashboard's file input (not the folder one), as a user's "browse files" would use it.
async function addFiles(page, paths) {
  const input = page.locator('.uppy-Dashboard-input[name="files[]"]:not([webkitdirectory])');
  await waitFor('the Dashboard', async () => (await input.count()) === 1, 10000);
  await input.setInputFiles(paths);
  for (const p of paths) await waitFile(page, path.basename(p), 'added', () => true, 10000);
}

const uploadButton = (page) => page.locator('.uppy-StatusBar-actionBtn--upload');

// The round pause/resume button of a file's Dashboard item.
const pauseResumeButton = (page, name) => page.locator('.uppy-Dashboard-Item')
  .filter({ has: page.locator('.uppy-Dashboard-Item-name', { hasText: name }) })
  .locator('button.uppy-Dashboard-Item-progressIndicator');

async function throttling(page) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  return {
    set: (bytesPerSecond) => cdp.send('Network.emulateNetworkConditions', {
      offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: bytesPerSecond,
    }),
    detach: () => cdp.detach(),
  };
}

// The page's "Handed to the backend" entry of a file: the backend's answer to the completing
// PATCH, the form fields the module handed off (`file.path = ...`).
async function finished(page, name) {
  const entries = await page.evaluate(() => Array.from(
    document.querySelectorAll('#finished-list li.finished'),
    (li) => ({ name: li.querySelector('.name').textContent, url: li.dataset.url,
      answer: li.querySelector('pre.answer').textContent })));
  const found = entries.filter((e) => e.name === name);
  assert(found.length === 1, `one finished entry for ${name}, found ${found.length}`);
  return found[0];
}

// The file reached the backend byte for byte, handed off exactly once.
async function checkStored(page, source) {
  const name = path.basename(source);
  const f = await file(page, name);
  assert(f.complete, `${name} complete in Uppy`);
  const entry = await finished(page, name);
  const fields = Object.fromEntries(entry.answer.split('\n')
    .map((l) => l.split(' = ')).filter((kv) => kv.length === 2));
  const id = new URL(entry.url).pathname.replace(/^\/files\//, '');
  assert(/^[A-Za-z0-9_-]+$/.test(id), `upload URL ${entry.url} is /files/<id>`);
  assert(fields.method === 'POST' && fields.uri === `/files/${id}`,
    `the backend got a POST of /files/${id} (${fields.method} ${fields.uri})`);
  assert(fields['file.name'] === name, `file.name ${fields['file.name']}`);
  assert(fields['upload.id'] === id, `upload.id ${fields['upload.id']}`);
  const expected = fs.readFileSync(source);
  assert(fields['file.size'] === String(expected.length), `file.size ${fields['file.size']}`);
  assert(fields['file.path'] && fields['file.path'].endsWith('/' + id),
    `file.path ${fields['file.path']} ends with the upload id ${id}`);
  const stored = fs.readFileSync(fields['file.path']);
  assert(stored.equals(expected),
    `${fields['file.path']} (${stored.length} bytes, sha256 ${sha256(stored)}) equals ` +
    `${source} (${expected.length} bytes, sha256 ${sha256(expected)})`);
  const backend = handOffs(id);
  assert(backend.length === 1, `one hand-off of ${id} reached the backend: ${JSON.stringify(backend)}`);
  const completing = tusLog().filter((l) => l.uri === `/files/${id}` && l.status === 200 &&
    l.method === 'PATCH');
  assert(completing.length === 1, `one PATCH of ${id} got the backend's answer (${completing.length})`);
  assert(await serverOffset(entry.url) === -404, `${id} is forgotten by the server after the hand-off`);
  return { id, path: fields['file.path'] };
}

// ---- the checks ------------------------------------------------------------------------------

// Three files added together upload side by side (one PATCH each, tus-js-client's default);
// one is paused mid-upload, nothing moves while it is paused, and its resume goes on from the
// offset the server kept.
async function severalFilesPauseResume(page, base, paths) {
  const throttle = await throttling(page);
  await page.goto(`${base}/tus.html`);
  const logMark = tusLog().length;
  const sources = [paths.big, paths.second, paths.third];
  const names = sources.map((p) => path.basename(p));
  await addFiles(page, sources);
  await throttle.set(THROTTLE);
  await uploadButton(page).click();

  await waitFor('all three files in flight together', async () => {
    const all = (await files(page)).filter((f) => names.includes(f.name));
    return all.length === 3 && all.every((f) => f.started && f.sent > 0 && !f.complete);
  });
  const name = names[0];
  const size = fs.statSync(paths.big).size;
  await page.screenshot({ path: path.join(out, 'tus-progress.png'), fullPage: true });
  await waitFile(page, name, 'a quarter sent', (f) => f.sent >= size / 4);
  await pauseResumeButton(page, name).click();
  let f = await waitFile(page, name, 'paused', (x) => x.paused);
  assert(f.url, `${name} has an upload URL`);
  assert(!f.complete && f.sent < size, `${name} paused mid-upload (${f.sent} of ${size} sent)`);
  // The cut PATCH is recorded when the server sees the connection close (or yields to our
  // HEAD); wait until two HEADs agree, then check that nothing moves while paused.
  let held = await waitFor('the server to settle the cut PATCH', async () => {
    const a = await serverOffset(f.url);
    await sleep(200);
    const b = await serverOffset(f.url);
    return a >= 0 && a === b ? String(b) : null;
  }, 10000);
  held = Number(held);
  assert(held > 0 && held < size, `the server kept part of the cut PATCH (${held} of ${size})`);
  await page.screenshot({ path: path.join(out, 'tus-paused.png'), fullPage: true });
  const before = await file(page, name);
  await sleep(500);
  const still = await file(page, name);
  assert(still.paused && still.sent === before.sent, `nothing moves while paused (${before.sent} -> ${still.sent})`);
  assert(await serverOffset(f.url) === held, 'the server holds the same while paused');

  await pauseResumeButton(page, name).click();
  await waitFile(page, name, 'resumed', (x) => !x.paused);
  for (const n of names) await waitFile(page, n, 'complete', (x) => x.complete, 120000);
  await throttle.set(-1);
  await throttle.detach();

  const results = [];
  for (const p of sources) results.push(await checkStored(page, p));
  // The resume asked the server for its offset and sent only the rest.
  const id = results[0].id;
  const lines = tusLog().slice(logMark).filter((l) => l.uri === `/files/${id}`);
  const patches = lines.filter((l) => l.method === 'PATCH');
  assert(patches.length >= 2 && patches[0].offset === 0,
    `a first PATCH from 0, cut by the pause: ${JSON.stringify(patches)}`);
  const resumed = patches.filter((l) => l.offset > 0);
  assert(resumed.length >= 1 && resumed[0].offset === held,
    `the resume's PATCH starts at the held offset ${held}: ${JSON.stringify(patches)}`);
  assert(lines.some((l) => l.method === 'HEAD' && l.status === 200 && l.answered === held),
    `a HEAD answered Upload-Offset ${held}`);
  const resent = resumed.reduce((sum, l) => sum + l.length, 0);
  assert(resent < size, `after the resume fewer bytes than the file went out (${resent} < ${size})`);
  for (const [i, r] of results.entries()) console.log(`  ${names[i]}: stored at ${r.path}`);
  console.log(`  ${name}: paused with ${held} of ${size} bytes on the server, resumed from there`);
}

// One file in PATCHes of 1 MiB: reload the page mid-upload; the page lists the unfinished upload
// (tus-js-client's localStorage entry), adding the same file again resumes the same upload URL
// from what the server holds.
async function reloadAndResume(page, base, paths) {
  const source = paths.reload;
  const name = path.basename(source);
  const size = fs.statSync(source).size;
  const chunk = MiB;
  const throttle = await throttling(page);
  await page.goto(`${base}/tus.html?chunkSize=${chunk}`);
  await addFiles(page, [source]);
  await throttle.set(THROTTLE);
  await uploadButton(page).click();
  const f = await waitFile(page, name, 'more than half sent', (x) => x.sent >= size / 2 + chunk && x.url);
  const url = f.url;
  const id = new URL(url).pathname.replace(/^\/files\//, '');
  const stored = await page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('tus::')));
  assert(stored.length === 1, `tus-js-client remembers the upload in localStorage (${stored})`);

  await page.reload();
  await throttle.set(-1);
  const logMark = tusLog().length;
  const pending = await waitFor('the unfinished upload listed', async () => {
    const text = await page.locator('#pending-list').textContent();
    return /% on the server/.test(text) ? text : null;
  });
  const percent = Number(/: (\d+)% on the server/.exec(pending)?.[1]);
  assert(pending.includes(name) && percent >= 25 && percent < 100,
    `the reloaded page lists ${name} as unfinished, a quarter done or more: ${pending}`);
  // The reload cut a PATCH: as after a pause, let the server settle it.
  const held = Number(await waitFor('the server to settle the cut PATCH', async () => {
    const a = await serverOffset(url);
    await sleep(200);
    const b = await serverOffset(url);
    return a >= 0 && a === b ? String(b) : null;
  }, 10000));
  assert(held >= size / 2 && held < size, `the server holds half of the file or more (${held} of ${size})`);
  await page.screenshot({ path: path.join(out, 'tus-reloaded.png'), fullPage: true });

  await addFiles(page, [source]);
  await uploadButton(page).click();
  await waitFile(page, name, 'complete', (x) => x.complete, 120000);
  await throttle.detach();
  const entry = await finished(page, name);
  assert(entry.url === url, `the same upload URL after the reload (${entry.url} vs ${url})`);
  const result = await checkStored(page, source);

  const lines = tusLog().slice(logMark).filter((l) => l.uri === `/files/${id}`);
  assert(lines.some((l) => l.method === 'HEAD' && l.status === 200 && l.answered === held),
    `after the reload the page asked the server for the offset (HEAD answered ${held})`);
  assert(!tusLog().slice(logMark).some((l) => l.method === 'POST' && l.uri === '/files/'),
    'no new upload was created after the reload');
  const patches = lines.filter((l) => l.method === 'PATCH');
  assert(patches.length > 0 && patches[0].offset === held && patches.every((l) => l.offset > 0),
    `after the reload the PATCHes start at the held offset ${held}: ${JSON.stringify(patches)}`);
  const resent = patches.reduce((sum, l) => sum + l.length, 0);
  assert(resent < size, `after the reload fewer bytes than the file were sent (${resent} < ${size})`);
  const left = await page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('tus::')));
  assert(left.length === 0, `the finished upload is forgotten by localStorage (${left})`);
  await waitFor('the unfinished list to empty', async () => page.locator('#pending').isHidden(), 5000);
  console.log(`  ${name}: ${size} bytes stored at ${result.path}; reloaded with ${held} on the ` +
    `server, ${patches.length} PATCHes (${resent} bytes with headers) after the reload`);
}

// ---- main ------------------------------------------------------------------------------------

async function main() {
  // Only this test's outputs: demo.spec.mjs's share target/browser-test.
  for (const p of ['tus-files', 'tus-prefix', 'tus.png', 'tus-progress.png', 'tus-paused.png',
    'tus-reloaded.png', 'tus-demo.log']) fs.rmSync(path.join(out, p), { recursive: true, force: true });
  fs.mkdirSync(path.join(out, 'tus-files'), { recursive: true });
  const paths = {
    big: path.join(out, 'tus-files', 'tus-paused.bin'),
    second: path.join(out, 'tus-files', 'zweite Datei ä €.bin'),
    third: path.join(out, 'tus-files', 'third.bin'),
    reload: path.join(out, 'tus-files', 'tus-reload.bin'),
  };
  fs.writeFileSync(paths.big, randomBytes(8 * MiB));
  fs.writeFileSync(paths.second, randomBytes(4 * MiB + 12345));
  fs.writeFileSync(paths.third, randomBytes(3 * MiB + 1));
  fs.writeFileSync(paths.reload, randomBytes(8 * MiB + 777));

  const demo = await startDemo({
    prefix,
    log: demoLog,
    ready: async (base) => {
      const res = await fetch(base + '/tus.html');
      return res.ok && (await res.text()).includes('tus.js');
    },
  });
  try {
    const bundle = await fetch(demo.base + '/uppy/uppy.min.js');
    assert(bundle.ok && (await bundle.text()).includes('globalThis.Uppy'),
      `Uppy's bundle is served on /uppy/uppy.min.js (${bundle.status}; npm ci in demo/?)`);
  } catch (e) {
    await demo.stop();
    throw e;
  }
  return runChecks({
    demo,
    files: paths,
    viewport: { width: 900, height: 900 },
    checks: [
      ['three files at once, one paused and resumed', severalFilesPauseResume],
      ['reload mid-upload and resume', reloadAndResume],
    ],
    shot: path.join(out, 'tus.png'),
    midway: ['progress', 'paused', 'reloaded'].map((s) => path.join(out, `tus-${s}.png`)),
  });
}

main().then((code) => process.exit(code), (e) => {
  console.error(e.stack || e);
  process.exit(1);
});
