// The page: forms and drawings. Everything a replica does happens in worker.js, in the
// Rust host core; this file sends it requests and draws what comes back. It publishes
// what it shows on `window.carapace` for the browser test.
const worker = new Worker('./worker.js', { type: 'module' });
const pending = new Map();
let nextId = 1;

worker.onmessage = ({ data: { id, result, error } }) => {
  const { resolve, reject } = pending.get(id);
  pending.delete(id);
  if (error !== undefined) reject(new Error(error));
  else resolve(result);
};

function call(method, args) {
  const id = nextId++;
  worker.postMessage({ id, method, args });
  return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
}

const $ = (selector) => document.querySelector(selector);
const published = (window.carapace = { ready: false, state: null, replay: null, verify: null, replies: [] });

function element(tag, attributes = {}, children = []) {
  const node = document.createElementNS(
    ['svg', 'rect', 'text', 'line', 'circle', 'title', 'g', 'polyline'].includes(tag) ? 'http://www.w3.org/2000/svg' : 'http://www.w3.org/1999/xhtml',
    tag,
  );
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  for (const child of [].concat(children)) node.append(child);
  return node;
}

function status(text, error = false) {
  $('#status').textContent = text;
  $('#status').classList.toggle('error', error);
}

/// Run `action` with the page's buttons disabled; report its error in the status line
/// (refused input is the user's to fix, not the page's error).
async function busy(action) {
  const buttons = document.querySelectorAll('button');
  buttons.forEach((button) => (button.disabled = true));
  try {
    published.error = null;
    return await action();
  } catch (error) {
    published.error = String(error.message ?? error);
    status(published.error, true);
  } finally {
    buttons.forEach((button) => (button.disabled = false));
  }
}

function drawLsm(statistics) {
  const trees = statistics.filter((statistic) => statistic.name.endsWith('tables per level'));
  const levels = Math.max(1, ...trees.map((tree) => tree.values.length));
  const most = Math.max(1, ...trees.flatMap((tree) => tree.values));
  const width = 360, rowHeight = 46, barWidth = (width - 70) / levels - 6;
  const svg = element('svg', { width, height: trees.length * rowHeight + 18, role: 'img' });
  trees.forEach((tree, row) => {
    const y = row * rowHeight;
    svg.append(element('text', { x: 0, y: y + 28 }, tree.name.replace(' tables per level', '')));
    tree.values.forEach((count, level) => {
      const height = count === 0 ? 1 : 4 + (30 * Math.log2(1 + count)) / Math.log2(1 + most);
      const x = 70 + level * (barWidth + 6);
      svg.append(
        element('rect', { x, y: y + 36 - height, width: barWidth, height, rx: 2, fill: count ? '#2f6fdf' : '#d9dde6' }, [
          element('title', {}, `level ${level}: ${count} tables`),
        ]),
      );
      svg.append(element('text', { x: x + barWidth / 2 - 4, y: y + 12 + (36 - height) }, String(count)));
    });
  });
  for (let level = 0; level < levels; level += 1) {
    svg.append(element('text', { x: 70 + level * (barWidth + 6) + barWidth / 2 - 6, y: trees.length * rowHeight + 12 }, `L${level}`));
  }
  $('#lsm').replaceChildren(svg);
  const other = statistics.filter((statistic) => !statistic.name.endsWith('tables per level'));
  $('#lsm').append(
    element('div', { class: 'figures-line' }, other.map((statistic) => `${statistic.name}: ${statistic.values.join(' / ')}`).join(' · ')),
  );
}

function drawTimeline(checkpoints, op) {
  const width = 360, height = 40;
  const svg = element('svg', { width, height });
  svg.append(element('line', { x1: 4, y1: 20, x2: width - 4, y2: 20, stroke: '#d9dde6', 'stroke-width': 2 }));
  const last = Math.max(1, op);
  for (const checkpoint of checkpoints) {
    const x = 4 + ((width - 8) * checkpoint.op) / last;
    svg.append(element('circle', { cx: x, cy: 20, r: 4, fill: '#1f9d55' }, [element('title', {}, `op ${checkpoint.op}: ${checkpoint.id}`)]));
  }
  svg.append(element('text', { x: width - 60, y: 36 }, `op ${op}`));
  $('#timeline').replaceChildren(svg, element('div', {}, `${checkpoints.length} checkpoints`));
}

/// Grid blocks in use and tables, op by op as the page saw them: compactions show as
/// the drops.
let history = [];

function drawHistory() {
  const width = 360, height = 70;
  const svg = element('svg', { width, height });
  if (history.length > 1) {
    const lastOp = Math.max(1, history[history.length - 1].op);
    const most = Math.max(1, ...history.map((point) => point.blocks));
    const points = (key, top) =>
      history.map((point) => `${4 + ((width - 8) * point.op) / lastOp},${height - 14 - ((height - 20) * point[key]) / top}`).join(' ');
    const tables = Math.max(1, ...history.map((point) => point.tables));
    svg.append(element('polyline', { points: points('blocks', most), fill: 'none', stroke: '#2f6fdf', 'stroke-width': 2 }));
    svg.append(element('polyline', { points: points('tables', tables), fill: 'none', stroke: '#1f9d55', 'stroke-width': 1.5, 'stroke-dasharray': '4 3' }));
    svg.append(element('text', { x: 4, y: height - 2 }, `grid blocks in use (max ${most}) · tables (dashed, max ${tables})`));
  }
  $('#history').replaceChildren(svg);
}

function show(state) {
  published.state = state;
  const figure = (name) => state.statistics.find((statistic) => statistic.name === name)?.values ?? [];
  const tables = state.statistics
    .filter((statistic) => statistic.name.endsWith('tables per level'))
    .reduce((sum, statistic) => sum + statistic.values.reduce((a, b) => a + b, 0), 0);
  if (history.length && history[history.length - 1].op > state.op) history = [];
  history.push({ op: state.op, blocks: figure('grid blocks in use')[0] ?? 0, tables });
  drawHistory();
  $('#lookup-text').placeholder = state.machine === 'echo' ? `a Thing's id: 1 to ${state.op}` : 'a key';
  $('#op').textContent = state.op;
  $('#timestamp').textContent = state.timestamp;
  $('#checkpoint-id').textContent = state.checkpoint ? `${state.checkpoint.id} (op ${state.checkpoint.op})` : 'none yet';
  $('#journal-bytes').textContent = `${state.journal_bytes} bytes`;
  $('#recovered').textContent = `checkpoint at op ${state.recovered.checkpoint_op}, then ${state.recovered.replayed_ops} ops replayed`;
  drawLsm(state.statistics);
  drawTimeline(state.checkpoints, state.op);
}

function addReplies(replies) {
  published.replies.push(...replies);
  const body = $('#replies tbody');
  for (const reply of replies.slice(-20)) {
    body.prepend(element('tr', {}, [reply.op, reply.timestamp, reply.operation, reply.body, reply.reply].map((cell) => element('td', {}, String(cell)))));
  }
  while (body.children.length > 20) body.lastChild.remove();
}

async function open(name, fresh = false) {
  await busy(async () => {
    status(`opening ${name}…`);
    const { storage, state } = await call('open', { name, fresh, seed: Date.now() % 1_000_000 });
    $('#storage').textContent = storage === 'opfs' ? 'origin private file system (survives a reload)' : 'memory';
    $('#replies tbody').replaceChildren();
    published.replies = [];
    history = [];
    show(state);
    status(`${state.identity} at op ${state.op}`);
    published.storage = storage;
    published.ready = true;
  });
}

$('#commit-form').onsubmit = async (event) => {
  event.preventDefault();
  const text = $('#message').value;
  await busy(async () => {
    const { reply, state } = await call('commitText', { text });
    addReplies([{ op: state.op, timestamp: state.timestamp, operation: 1, body: text, reply: reply.text }]);
    show(state);
    status(`committed op ${state.op}`);
  });
};

$('#generate-form').onsubmit = async (event) => {
  event.preventDefault();
  const count = Number($('#count').value);
  await busy(async () => {
    const { committed, millis, state } = await call('generate', { count });
    addReplies(committed);
    show(state);
    const rate = Math.round((count * 1000) / Math.max(millis, 1));
    published.generateRate = rate;
    status(`committed ${count} ops (${rate} ops/s), every reply checked against the workload's model`);
  });
};

$('#lookup-form').onsubmit = async (event) => {
  event.preventDefault();
  await busy(async () => {
    const { things, state } = await call('lookup', { text: $('#lookup-text').value });
    $('#things').textContent = things.length ? things.map((thing) => JSON.stringify(thing)).join('\n') : 'not found';
    published.things = things;
    show(state);
  });
};

$('#replay').onclick = () =>
  busy(async () => {
    status('replaying the journal in a fresh instance…');
    const replay = await call('replay');
    published.replay = replay;
    const rows = replay.checkpoints.map((checkpoint) => {
      const same = checkpoint.recorded === checkpoint.replayed;
      return element('tr', {}, [
        element('td', {}, String(checkpoint.op)),
        element('td', {}, checkpoint.recorded),
        element('td', {}, checkpoint.replayed ?? '—'),
        element('td', { class: same ? 'match' : 'mismatch' }, same ? '✓' : '✗'),
      ]);
    });
    const rate = Math.round((replay.identical_through * 1000) / Math.max(replay.millis, 1));
    $('#replay-result').replaceChildren(
      element('p', { class: replay.outcome === 'identical' ? 'match' : 'mismatch' },
        `${replay.outcome}: ops 1 to ${replay.identical_through}, ${replay.checkpoints_verified} checkpoint ids verified, ${rate} ops/s`),
      element('table', {}, [element('thead', {}, element('tr', {}, ['op', 'recorded', 'replayed', ''].map((title) => element('th', {}, title)))), element('tbody', {}, rows)]),
    );
    status(`replay ${replay.outcome}`);
  });

$('#export').onclick = () =>
  busy(async () => {
    const files = await call('exportFiles');
    for (const name of ['superblock', 'journal']) {
      const blob = new Blob([files[name]], { type: 'application/octet-stream' });
      const link = element('a', { href: URL.createObjectURL(blob), download: name });
      link.click();
    }
  });

$('#import').onchange = (event) =>
  busy(async () => {
    const files = {};
    for (const file of event.target.files) files[file.name.replace(/^.*[\\/]/, '')] = new Uint8Array(await file.arrayBuffer());
    if (!files.superblock || !files.journal) throw new Error('choose two files: `superblock` and `journal`');
    status('verifying the imported journal…');
    const result = await call('verify', files);
    published.verify = result;
    $('#verify-result').replaceChildren(
      element('p', { class: result.outcome === 'identical' ? 'match' : 'mismatch' },
        `${result.machine}: ${result.outcome} through op ${result.identical_through}; ${result.checkpoints_verified} checkpoint ids reproduced; last ${result.checkpoint?.id ?? 'none'}`),
    );
    status(`verified: ${result.outcome}`);
  });

$('#machine').onchange = () => open($('#machine').value);
$('#reset').onclick = () => open($('#machine').value, true);

open('echo');
