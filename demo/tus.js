// The tus demo page (tus.html): Uppy's Dashboard and Tus plugin, from Uppy's prebuilt bundle
// (globalThis.Uppy), uploading to the module's tus location on this origin.
//
// Resuming is tus-js-client's (inside Uppy's Tus plugin): it stores each upload's URL in
// localStorage (storeFingerprintForResuming, on by default) under a fingerprint made of Uppy's
// file id (name, type, size, modification time) and the endpoint. Adding the same file again,
// after a pause or a reload, asks the server for its offset (HEAD) and sends only the rest.
//
// Query parameters: chunkSize=BYTES (default: the whole rest of the file in one PATCH),
// endpoint=PATH (default /files/).
(() => {
  'use strict';
  const { Uppy, Dashboard, Tus } = globalThis.Uppy;
  const params = new URLSearchParams(location.search);
  // Absolute: tus-js-client resolves the Location answers against it, and it is part of the
  // fingerprint under which an upload is remembered.
  const endpoint = new URL(params.get('endpoint') || '/files/', location.href).href;
  const chunkSize = Number(params.get('chunkSize')) || Infinity;
  const $ = (sel) => document.querySelector(sel);

  const units = ['B', 'KiB', 'MiB', 'GiB'];
  function bytes(n) {
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return `${i ? n.toFixed(1) : n} ${units[i]}`;
  }

  $('#endpoint').textContent = new URL(endpoint).pathname;
  if (Number.isFinite(chunkSize)) $('#chunking').textContent = `PATCHes of ${bytes(chunkSize)}`;

  const uppy = new Uppy({ autoProceed: false, restrictions: { maxFileSize: 1024 ** 3 } })
    .use(Dashboard, {
      inline: true,
      target: '#dashboard',
      width: '100%',
      height: 430,
      showProgressDetails: true,
      proudlyDisplayPoweredByUppy: false,
      note: 'Up to 1 GiB per file (upload_max_file_size of nginx-conf/demo.conf)',
    })
    .use(Tus, {
      endpoint,
      chunkSize,
      // A finished upload is forgotten by the module (later requests get 404): forget its URL
      // too. The other defaults (storeFingerprintForResuming: true, the localStorage url
      // storage) are what resumes after a reload.
      removeFingerprintOnSuccess: true,
      retryDelays: [0, 500, 1000, 3000, 5000],
    });
  globalThis.uppy = uppy; // for the browser test and the console

  // The completing PATCH is answered by the backend (the echo backend lists the form fields
  // the module handed it: file.name, file.path, file.size…): show that answer.
  uppy.on('upload-success', (file, response) => {
    const li = document.createElement('li');
    li.className = 'finished';
    li.dataset.url = response.uploadURL || '';
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = file.name;
    const url = document.createElement('span');
    url.className = 'url';
    url.textContent = `${bytes(file.size)}, ${new URL(response.uploadURL, location.href).pathname}`;
    const pre = document.createElement('pre');
    pre.className = 'answer';
    pre.textContent = response.body?.xhr?.responseText ?? '';
    li.append(name, url, pre);
    $('#finished-list').append(li);
    $('#finished').hidden = false;
    renderPending();
  });

  // The uploads tus-js-client remembers (keys tus::<fingerprint>::<n>) that are not in the
  // Dashboard: unfinished uploads of an earlier visit, with what the server holds of each.
  async function renderPending() {
    const inDashboard = new Set(uppy.getFiles().map((f) => `tus-${f.id}-${endpoint}`));
    const list = $('#pending-list');
    const items = [];
    for (let i = 0; i < localStorage.length; i++) {
      const key = localStorage.key(i);
      const m = /^tus::(.*)::[^:]*$/.exec(key);
      if (!m || inDashboard.has(m[1])) continue;
      let record;
      try { record = JSON.parse(localStorage.getItem(key)); } catch (_) { continue; }
      if (!record || !record.uploadUrl) continue;
      items.push({ key, record });
    }
    list.replaceChildren();
    $('#pending').hidden = items.length === 0;
    for (const { key, record } of items) {
      const li = document.createElement('li');
      li.dataset.key = key;
      const name = record.metadata?.filename || record.metadata?.name || '(no name)';
      li.textContent = `${name}, ${bytes(record.size)}: asking the server…`;
      list.append(li);
      fetch(record.uploadUrl, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } })
        .then((res) => {
          if (res.status === 200) {
            const held = Number(res.headers.get('Upload-Offset'));
            const share = Math.floor((100 * held) / Math.max(record.size, 1));
            li.textContent = `${name}, ${bytes(record.size)}: ${share}% on the server`;
            li.dataset.held = String(held);
          } else {
            li.textContent = `${name}, ${bytes(record.size)}: unknown to the server (${res.status}), ` +
              'adding it again starts over';
          }
        })
        .catch(() => { li.textContent = `${name}, ${bytes(record.size)}: the server did not answer`; });
    }
  }
  uppy.on('files-added', renderPending);
  uppy.on('file-removed', renderPending);
  renderPending();
})();
