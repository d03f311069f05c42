// ngx-upload demo client: resumable uploads in segments, plain JavaScript, no build step.
//
// Protocol (see README.md): each segment is a POST of a slice of the file with
//   X-Content-Range: bytes first-last/total, X-Session-ID: id, Content-Disposition.
// While the file is incomplete the server answers 201 with a `Range: a-b/T,c-d/T` report of
// what it holds; the segment that completes the file gets the backend's answer. A POST with
// only X-Session-ID and an empty body asks what the server holds (200 + Range, 404 unknown).
//
// Query parameters: ?segment=BYTES (segment size, default 1 MiB), ?delay=MS (pause between
// segments, to watch a small upload), ?url=PATH (upload location, default /upload).
'use strict';

(() => {
  const params = new URLSearchParams(location.search);
  const UPLOAD_URL = params.get('url') || '/upload';
  const SEGMENT = positiveInt(params.get('segment'), 1 << 20);
  const DELAY = positiveInt(params.get('delay'), 0);
  // localStorage key prefix; the rest of the key is [name, size, lastModified] of the file.
  const STORE_PREFIX = 'ngx-upload-demo:';
  const SPEED_WINDOW_MS = 3000;

  const $ = (sel) => document.querySelector(sel);
  const uploads = [];

  // ---- helpers -------------------------------------------------------------------------

  function positiveInt(text, fallback) {
    const n = Number(text);
    return text !== null && Number.isInteger(n) && n > 0 ? n : fallback;
  }

  function formatBytes(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(n) : n.toFixed(1).replace(/\.0$/, '')) + ' ' + units[i];
  }

  function newSessionId() {
    // getRandomValues works outside secure contexts too (randomUUID does not).
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  // Header values must be Latin-1 for XHR and the server wants ASCII in `filename`: send an
  // ASCII stand-in there and the real name as RFC 8187 `filename*`, which the module prefers.
  function contentDisposition(name) {
    const ascii = name.replace(/[^\x20-\x7e]|["\\]/g, '_');
    let value = `attachment; name="file"; filename="${ascii}"`;
    if (ascii !== name) {
      value += "; filename*=UTF-8''" + encodeURIComponent(name)
        .replace(/['()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
    }
    return value;
  }

  // "0-99/1000,200-299/1000" -> [[0, 100], [200, 300]] (half-open), or null if malformed.
  function parseRanges(text, total) {
    if (!text) return null;
    const ranges = [];
    for (const part of text.trim().split(',')) {
      const m = /^\s*(\d+)-(\d+)\/(\d+)\s*$/.exec(part);
      if (!m || Number(m[3]) !== total) return null;
      ranges.push([Number(m[1]), Number(m[2]) + 1]);
    }
    return ranges;
  }

  // The byte ranges of [0, total) not covered by `held` (sorted, half-open).
  function missingRanges(held, total) {
    const gaps = [];
    let pos = 0;
    for (const [start, end] of [...held].sort((a, b) => a[0] - b[0])) {
      if (start > pos) gaps.push([pos, start]);
      pos = Math.max(pos, end);
    }
    if (pos < total) gaps.push([pos, total]);
    return gaps;
  }

  const heldBytes = (held) => held.reduce((sum, [s, e]) => sum + (e - s), 0);

  // One POST; resolves (never rejects) with {status, range, body} or {aborted} or {error}.
  function post(headers, body, onProgress, onXhr) {
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      xhr.open('POST', UPLOAD_URL);
      for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
      if (onProgress) xhr.upload.onprogress = (e) => onProgress(e.loaded);
      xhr.onload = () => resolve({
        status: xhr.status,
        statusText: xhr.statusText,
        range: xhr.getResponseHeader('Range'),
        body: xhr.responseText,
      });
      xhr.onerror = () => resolve({ error: 'network error' });
      xhr.onabort = () => resolve({ aborted: true });
      if (onXhr) onXhr(xhr);
      xhr.send(body);
    });
  }

  // ---- remembered sessions -------------------------------------------------------------

  const storageKey = (file) =>
    STORE_PREFIX + JSON.stringify([file.name, file.size, file.lastModified]);

  function loadRecord(key) {
    try {
      const record = JSON.parse(localStorage.getItem(key));
      return record && typeof record.id === 'string' ? record : null;
    } catch (_) {
      return null;
    }
  }

  function rememberedKeys() {
    const keys = [];
    for (let i = 0; i < localStorage.length; i++) {
      const key = localStorage.key(i);
      if (key.startsWith(STORE_PREFIX)) keys.push(key);
    }
    return keys.sort();
  }

  // Asks the server what it holds of a session: {held: ranges}, {unknown: true} for a session
  // it does not have (404), or {error}.
  async function queryHeld(id, total) {
    const res = await post({ 'X-Session-ID': id }, null);
    if (res.status === 404) return { unknown: true };
    const held = res.status === 200 ? parseRanges(res.range || res.body, total) : null;
    if (held) return { held };
    return { error: res.error || `status query answered ${res.status} ${res.statusText || ''}` };
  }

  // ---- one upload ------------------------------------------------------------------------

  class Upload {
    constructor(file) {
      this.file = file;
      this.key = storageKey(file);
      this.held = [];          // ranges the server reported, half-open
      this.inFlight = 0;       // bytes of the current segment the browser has sent
      this.sent = 0;           // bytes this page sent for this file (finished + cut segments)
      this.samples = [];       // [time, bytes sent] for the speed
      this.run = 0;            // bumped by every start and pause: stale loops stop
      this.xhr = null;
      this.wake = null;        // ends the wait between segments early
      this.el = $('#upload-row').content.firstElementChild.cloneNode(true);
      this.el.querySelector('.name').textContent = file.name;
      this.el.querySelector('.name').title = `${file.name} (${file.size} bytes)`;
      this.el.querySelector('.pause').onclick = () => this.pause();
      this.el.querySelector('.resume').onclick = () => this.start();
      $('#uploads').append(this.el);
      this.setState('new', 'waiting');
    }

    setState(state, status) {
      this.state = state;
      this.el.dataset.state = state;
      this.el.querySelector('.status').textContent = status;
      this.render();
      updateToolbar();
    }

    render() {
      const size = this.file.size;
      const done = this.state === 'done' ? size : heldBytes(this.held) + this.inFlight;
      const el = this.el;
      el.dataset.held = heldBytes(this.held);
      el.dataset.sent = this.sent + this.inFlight;
      el.dataset.session = this.record ? this.record.id : '';
      el.querySelector('progress').value = size ? Math.min(done / size, 1) : 0;
      el.querySelector('.amount').textContent =
        `${formatBytes(Math.min(done, size))} of ${formatBytes(size)} ` +
        `(${size ? Math.floor((100 * Math.min(done, size)) / size) : 0}%)`;
      el.querySelector('.speed').textContent = this.speedText();
    }

    // Bytes per second over the last few seconds, up to now (a page timer re-renders).
    speedText() {
      if (this.state !== 'uploading' || this.samples.length === 0) return '';
      const [t0, b0] = this.samples[0];
      const elapsed = performance.now() - t0;
      if (elapsed < 250) return '';
      return `${formatBytes(Math.round(((this.sent + this.inFlight - b0) * 1000) / elapsed))}/s`;
    }

    sample() {
      const now = performance.now();
      this.samples.push([now, this.sent + this.inFlight]);
      while (this.samples.length > 2 && now - this.samples[0][0] > SPEED_WINDOW_MS) {
        this.samples.shift();
      }
    }

    pause() {
      if (this.state !== 'uploading' && this.state !== 'checking') return;
      this.run++;
      if (this.wake) this.wake();
      const cut = this.xhr !== null;
      if (cut) this.xhr.abort(); // the server keeps what reached it
      this.setState('paused', `paused, ${formatBytes(heldBytes(this.held))} on the server`);
      if (cut && this.record) this.refreshHeld(this.run);
    }

    // After a segment was cut short, shows what the server kept of it (Resume asks again).
    async refreshHeld(run) {
      const answer = await queryHeld(this.record.id, this.file.size);
      if (run !== this.run || !answer.held) return;
      this.held = answer.held;
      this.setState('paused', `paused, ${formatBytes(heldBytes(this.held))} on the server`);
    }

    async start() {
      if (this.state === 'uploading' || this.state === 'checking' || this.state === 'done') return;
      const run = ++this.run;
      const size = this.file.size;
      this.samples = [];
      if (size === 0) {
        this.setState('error', 'empty file: nothing to upload');
        return;
      }
      this.record = loadRecord(this.key);
      if (this.record) {
        this.setState('checking', 'asking the server what it holds…');
        const answer = await queryHeld(this.record.id, size);
        if (run !== this.run) return;
        if (answer.error) {
          this.setState('error', `${answer.error}; press Resume to retry`);
          return;
        }
        // A session the server does not have starts over under a new id, so that it never
        // lands on a file some earlier attempt left under the old one.
        if (answer.unknown) this.record = null;
        else this.held = answer.held;
      }
      if (!this.record) {
        this.record = {
          id: newSessionId(),
          name: this.file.name,
          size,
          lastModified: this.file.lastModified,
        };
        // Saved before the first byte goes out, so a reload at any point can resume.
        localStorage.setItem(this.key, JSON.stringify(this.record));
        this.held = [];
      }
      renderPending();
      const from = heldBytes(this.held);
      this.setState('uploading', from ? `resuming at ${Math.floor((100 * from) / size)}%` : 'uploading');
      this.sample();

      while (run === this.run) {
        const gaps = missingRanges(this.held, size);
        // All held but no answer yet (the hand-off failed earlier): send the last piece again,
        // which runs the hand-off again.
        const [start, end] = gaps.length
          ? [gaps[0][0], Math.min(gaps[0][1], gaps[0][0] + SEGMENT)]
          : [Math.max(0, size - SEGMENT), size];
        const res = await post(
          {
            'Content-Type': 'application/octet-stream',
            'Content-Disposition': contentDisposition(this.file.name),
            'X-Content-Range': `bytes ${start}-${end - 1}/${size}`,
            'X-Session-ID': this.record.id,
          },
          this.file.slice(start, end),
          (loaded) => {
            if (run !== this.run) return;
            this.inFlight = loaded;
            this.sample();
            this.render();
          },
          (xhr) => { this.xhr = xhr; },
        );
        this.xhr = null;
        this.sent += res.aborted ? this.inFlight : end - start;
        this.inFlight = 0;
        if (res.aborted || run !== this.run) {
          this.render();
          return;
        }
        if (res.error) {
          this.setState('error', `${res.error}; press Resume to retry`);
          return;
        }
        if (res.status === 201) {
          const held = parseRanges(res.range || res.body, size);
          if (!held) {
            this.setState('error', `unreadable Range report ${JSON.stringify(res.range)}`);
            return;
          }
          this.held = held;
          this.sample();
          this.render();
          if (DELAY) {
            await new Promise((resolve) => {
              const timer = setTimeout(resolve, DELAY);
              this.wake = () => { clearTimeout(timer); resolve(); };
            });
            if (run === this.run) this.wake = null;
          }
          continue;
        }
        this.showAnswer(res);
        if (res.status >= 200 && res.status < 300) {
          this.held = [[0, size]];
          localStorage.removeItem(this.key);
          this.setState('done', `done: ${res.status} ${res.statusText}`);
        } else {
          this.setState('error', `HTTP ${res.status} ${res.statusText}; press Resume to retry`);
        }
        renderPending();
        return;
      }
    }

    showAnswer(res) {
      const answer = this.el.querySelector('.answer');
      answer.querySelector('pre').textContent = res.body;
      answer.hidden = false;
      answer.open = true;
    }
  }

  // ---- page ------------------------------------------------------------------------------

  function active(key) {
    return uploads.find((u) => u.key === key && u.state !== 'done');
  }

  function addFiles(files) {
    for (const file of files) {
      const existing = active(storageKey(file));
      if (existing) {
        if (existing.file !== file) existing.file = file; // picked again: same name, size, date
        existing.start();
        continue;
      }
      const upload = new Upload(file);
      uploads.push(upload);
      upload.start();
    }
    $('#empty').hidden = uploads.length > 0;
  }

  function updateToolbar() {
    $('#pause-all').disabled = !uploads.some((u) => u.state === 'uploading' || u.state === 'checking');
    $('#resume-all').disabled = !uploads.some((u) => u.state === 'paused' || u.state === 'error');
  }

  // Sessions remembered from earlier visits whose file has not been picked again yet.
  async function renderPending() {
    const list = $('#pending-list');
    const keys = rememberedKeys().filter((key) => !active(key));
    list.replaceChildren();
    $('#pending').hidden = keys.length === 0;
    for (const key of keys) {
      const record = loadRecord(key);
      if (!record) continue;
      const li = document.createElement('li');
      const text = document.createElement('span');
      text.textContent = `${record.name} (${formatBytes(record.size)})`;
      const forget = document.createElement('button');
      forget.type = 'button';
      forget.textContent = 'Forget';
      forget.onclick = () => { localStorage.removeItem(key); renderPending(); };
      li.append(text, forget);
      list.append(li);
      queryHeld(record.id, record.size).then(({ held, unknown }) => {
        if (held) text.textContent += `: ${Math.floor((100 * heldBytes(held)) / record.size)}% on the server`;
        if (unknown) text.textContent += ': not on the server, will start over';
      });
    }
  }

  $('#upload-url').textContent = UPLOAD_URL;
  $('#segment-size').textContent = formatBytes(SEGMENT);
  $('#files').addEventListener('change', (e) => {
    addFiles(Array.from(e.target.files));
    e.target.value = ''; // the same file can be picked again
  });
  $('#pause-all').onclick = () => uploads.forEach((u) => u.pause());
  $('#resume-all').onclick = () => uploads
    .filter((u) => u.state === 'paused' || u.state === 'error')
    .forEach((u) => u.start());
  renderPending();
  setInterval(() => uploads.forEach((u) => { if (u.state === 'uploading') { u.sample(); u.render(); } }), 500);
})();
