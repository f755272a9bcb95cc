// The browser demo in real Chromium: commits through the page, a replay in a fresh
// instance, a reload that recovers from the origin private file system, the kv machine,
// and a data directory written by the native `carapace run --data` verified in the page
// to the same checkpoint ids. Any console error or page error fails the test.
//
// Needs `web/dist` (`cargo xtask web`), `CARAPACE_BIN` (the `carapace` binary) and
// Chromium at `CHROMIUM` (default /usr/bin/chromium). With `CARAPACE_SCREENSHOTS=DIR`
// it also saves screenshots of the page in use there.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const web = join(dirname(fileURLToPath(import.meta.url)), '..');
const carapace = process.env.CARAPACE_BIN ?? join(web, '..', 'target', 'debug', 'carapace');
const screenshots = process.env.CARAPACE_SCREENSHOTS;
const types = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.wasm': 'application/wasm' };

let server;
let origin;
let context;
let page;
let userData;
const problems = [];

function serve(request, response) {
  const path = normalize(decodeURIComponent(new URL(request.url, 'http://127.0.0.1').pathname));
  const file = join(web, path.endsWith('/') ? `${path}index.html` : path);
  try {
    const body = readFileSync(file);
    response.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream' });
    response.end(body);
  } catch {
    response.writeHead(404).end();
  }
}

before(async () => {
  server = createServer(serve);
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin = `http://127.0.0.1:${server.address().port}`;
  userData = mkdtempSync(join(tmpdir(), 'carapace-chromium-'));
  context = await chromium.launchPersistentContext(userData, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1360, height: 900 },
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console error: ${message.text()}`);
  });
  await page.goto(`${origin}/`);
  await page.waitForFunction(() => window.carapace?.ready);
});

after(async () => {
  await context?.close();
  server?.close();
  if (userData) rmSync(userData, { recursive: true, force: true });
  assert.deepEqual(problems, [], 'the page logged errors');
});

const published = (key) => page.evaluate((key) => window.carapace[key], key);

async function shot(name) {
  if (screenshots) await page.screenshot({ path: join(screenshots, `${name}.png`), fullPage: true });
}

test('echo: commit a message, random requests and a lookup through the page', async () => {
  assert.equal(await published('storage'), 'opfs');
  await page.fill('#message', 'hello, deterministic world');
  await page.click('#commit');
  await page.waitForFunction(() => window.carapace.state.op === 1);
  assert.match(await page.textContent('#replies'), /hello, deterministic world/);

  await page.fill('#count', '100');
  await page.click('#generate');
  await page.waitForFunction(() => window.carapace.state.op === 101);
  const state = await published('state');
  assert.equal(state.checkpoints.length, 6, 'a checkpoint every 16 ops');
  const tables = state.statistics.find((statistic) => statistic.name === 'tree 1 tables per level');
  assert.ok(tables.values.some((count) => count > 0), 'the LSM holds tables');

  await page.fill('#lookup-text', '1');
  await page.click('#lookup');
  await page.waitForFunction(() => window.carapace.state.op === 102);
  const things = await published('things');
  assert.equal(things.length, 1);
  assert.equal(things[0].id, '1');
  await shot('commit');
});

test('echo: a replay in a fresh instance reproduces every checkpoint id', async () => {
  await page.click('#replay');
  await page.waitForFunction(() => window.carapace.replay);
  const replay = await published('replay');
  const state = await published('state');
  assert.equal(replay.outcome, 'identical');
  assert.equal(replay.identical_through, state.op);
  assert.equal(replay.checkpoints.length, state.checkpoints.length);
  for (const checkpoint of replay.checkpoints) assert.equal(checkpoint.replayed, checkpoint.recorded);
  assert.equal(replay.checkpoints_verified, state.checkpoints.length);
  await shot('replay');
});

test('echo: the exported journal replays natively to the same checkpoint ids', async () => {
  const state = await published('state');
  const dir = mkdtempSync(join(tmpdir(), 'carapace-export-'));
  const downloads = [];
  const saved = new Promise((resolve) => {
    page.on('download', async function save(download) {
      await download.saveAs(join(dir, download.suggestedFilename()));
      downloads.push(download.suggestedFilename());
      if (downloads.length === 2) {
        page.off('download', save);
        resolve();
      }
    });
  });
  await page.click('#export');
  await saved;
  assert.deepEqual(downloads.sort(), ['journal', 'superblock']);
  writeFileSync(join(dir, 'grid'), '');
  const replayed = String(execFileSync(carapace, ['replay', dir]));
  assert.match(replayed, new RegExp(`identical through op ${state.op} \\(${state.checkpoints.length} checkpoint ids verified`));
  rmSync(dir, { recursive: true, force: true });
});

test('echo: a reload recovers from the superblock and journal in OPFS', async () => {
  const before = await published('state');
  await page.reload();
  await page.waitForFunction(() => window.carapace?.ready);
  const after = await published('state');
  assert.equal(after.op, before.op);
  assert.deepEqual(after.checkpoint, before.checkpoint);
  assert.equal(after.recovered.checkpoint_op, before.checkpoint.op);
  assert.equal(after.recovered.replayed_ops, before.op - before.checkpoint.op);
  await page.fill('#count', '20');
  await page.click('#generate');
  await page.waitForFunction((op) => window.carapace.state.op === op + 20, before.op);
});

test('kv: the second machine commits and replays in the same page', async () => {
  await page.selectOption('#machine', 'kv');
  await page.waitForFunction(() => window.carapace.state?.machine === 'kv');
  await page.fill('#message', 'answer=42');
  await page.click('#commit');
  await page.waitForFunction(() => window.carapace.state.op >= 1);
  const first = (await published('state')).op;
  await page.fill('#count', '80');
  await page.click('#generate');
  await page.waitForFunction((op) => window.carapace.state.op === op + 80, first);
  await page.fill('#lookup-text', 'answer');
  await page.click('#lookup');
  await page.waitForFunction(() => window.carapace.things?.[0]?.value === '42');
  await page.evaluate(() => (window.carapace.replay = null));
  await page.click('#replay');
  await page.waitForFunction(() => window.carapace.replay);
  assert.equal((await published('replay')).outcome, 'identical');
  await page.selectOption('#machine', 'echo');
  await page.waitForFunction(() => window.carapace.state?.machine === 'echo');
});

test('a log written by the native host verifies in the page to the same checkpoint ids', async () => {
  for (const machine of ['echo', 'kv']) {
    const dir = mkdtempSync(join(tmpdir(), `carapace-native-${machine}-`));
    execFileSync(carapace, ['run', '--machine', machine, '--data', join(dir, 'data'), '--ops', '400',
      '--checkpoint-interval', '32', '--seed', '7'], { stdio: 'pipe' });
    const replayed = String(execFileSync(carapace, ['replay', join(dir, 'data')]));
    const wasmtimeRate = replayed.match(/([0-9]+) ops\/s/)?.[1];
    const inspected = JSON.parse(execFileSync(carapace, ['inspect', '--json', join(dir, 'data')]));

    await page.evaluate(() => (window.carapace.verify = null));
    await page.setInputFiles('#import', [join(dir, 'data', 'superblock'), join(dir, 'data', 'journal')]);
    await page.waitForFunction(() => window.carapace.verify);
    const verified = await published('verify');
    assert.equal(verified.machine, machine);
    assert.equal(verified.outcome, 'identical');
    assert.equal(verified.identical_through, 400);
    assert.equal(verified.checkpoint.op, inspected.checkpoint.op);
    assert.equal(verified.checkpoint.id, inspected.checkpoint.id, 'the native checkpoint id');
    assert.equal(verified.checkpoints.length, Math.floor(400 / 32), 'every checkpoint the journal recorded');
    for (const checkpoint of verified.checkpoints) assert.equal(checkpoint.replayed, checkpoint.recorded);
    console.log(`${machine}: the same 400-op log replayed from genesis at ` +
      `${Math.round(400_000 / verified.millis)} ops/s in the page (V8), ${wasmtimeRate} ops/s in wasmtime`);
    rmSync(dir, { recursive: true, force: true });
  }
  await shot('verify');
});

test('bad input is refused with a clear message and loses nothing', async () => {
  const before = (await published('state')).op;
  const refused = async (action, expected) => {
    await page.evaluate(() => (window.carapace.error = null));
    await action();
    await page.waitForFunction(() => window.carapace.error);
    assert.match(await published('error'), expected);
    assert.match(await page.textContent('#status'), expected);
  };
  await refused(async () => {
    await page.fill('#lookup-text', 'not a number');
    await page.click('#lookup');
  }, /`not a number` is not a Thing's id/);

  const dir = mkdtempSync(join(tmpdir(), 'carapace-bad-'));
  const write = (name, bytes) => {
    const path = join(dir, name);
    writeFileSync(path, bytes);
    return path;
  };
  const superblock = write('superblock', Buffer.alloc(16384, 7));
  const journal = write('journal', Buffer.from('not a journal'));
  await refused(() => page.setInputFiles('#import', [journal]), /choose two files/);
  await refused(() => page.setInputFiles('#import', [superblock, journal]), /no valid superblock copy/);

  // The superblock of one directory with the journal of another.
  for (const name of ['one', 'two']) {
    execFileSync(carapace, ['run', '--data', join(dir, name), '--ops', '40', '--checkpoint-interval', '32'], { stdio: 'pipe' });
  }
  const mixed = join(dir, 'mixed');
  mkdirSync(mixed);
  copyFileSync(join(dir, 'one', 'superblock'), join(mixed, 'superblock'));
  copyFileSync(join(dir, 'two', 'journal'), join(mixed, 'journal'));
  await refused(() => page.setInputFiles('#import', [join(mixed, 'superblock'), join(mixed, 'journal')]), /journal/);
  rmSync(dir, { recursive: true, force: true });

  // Nothing was lost, and the replica goes on.
  assert.equal((await published('state')).op, before);
  await page.fill('#message', 'still here');
  await page.click('#commit');
  await page.waitForFunction((op) => window.carapace.state.op === op + 1, before);
});
