// The page's engine, in a dedicated worker (OPFS sync access handles exist only here):
// the Rust host core (wasm-bindgen) drives the jco-transpiled components. This file only
// wires the components' imports to the host core and answers the page's messages.
import init, { Page, verify, machineOf } from './dist/host/carapace_web.js';
import * as echo from './dist/echo/echo.js';
import * as kv from './dist/kv/kv.js';

const glue = { echo, kv };
const compiled = {};
let page = null;
let machine = null;
let handles = [];

/// Compile a machine's core modules once, ahead of the synchronous instantiations.
async function compile(name) {
  if (compiled[name]) return;
  const modules = {};
  for (let index = 1; ; index += 1) {
    const path = `${name}.core${index === 1 ? '' : index}.wasm`;
    const response = await fetch(`./dist/${name}/${path}`);
    if (!response.ok) break;
    modules[path] = await WebAssembly.compile(await response.arrayBuffer());
  }
  compiled[name] = modules;
}

/// The factory the host core calls for every instance: jco's import object over the
/// host imports it is given, with and without the version suffix (the glue may look
/// either up); u64 values are BigInts both ways.
function factory(name) {
  return (imports) => {
    const interfaces = {
      grid: {
        submitRead: (address) => imports.submitRead(address),
        submitWrite: (address, block) => imports.submitWrite(address, block),
      },
      clock: {
        now: () => imports.now(),
        setTimer: (id, at) => imports.setTimer(id, at),
        cancelTimer: (id) => imports.cancelTimer(id),
      },
      delivery: {
        dueTimer: (op, previousReply) => imports.dueTimer(op, previousReply),
        prefetched: (op) => imports.prefetched(op),
        committed: (op, reply) => imports.committed(op, reply),
      },
      log: { log: (level, message) => imports.log(level, message) },
      types: {},
    };
    const importObject = {};
    for (const [key, value] of Object.entries(interfaces)) {
      importObject[`carapace:state-machine/${key}@0.5.0`] = value;
      importObject[`carapace:state-machine/${key}`] = value;
    }
    return glue[name].instantiate((path) => compiled[name][path], importObject).machine;
  };
}

function randomHex(bytes) {
  return Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (byte) =>
    byte.toString(16).padStart(2, '0'),
  ).join('');
}

async function closeFiles() {
  for (const handle of handles) handle.close();
  handles = [];
}

/// The machine's data directory in the origin private file system, or `undefined` where
/// there is none (the page then keeps it in memory).
async function opfsFiles(name, fresh) {
  if (!navigator.storage?.getDirectory) return undefined;
  const root = await navigator.storage.getDirectory();
  if (fresh) await root.removeEntry(`carapace-${name}`, { recursive: true }).catch(() => {});
  const directory = await root.getDirectoryHandle(`carapace-${name}`, { create: true });
  const files = {};
  for (const file of ['superblock', 'journal', 'grid']) {
    const handle = await directory.getFileHandle(file, { create: true });
    files[file] = await handle.createSyncAccessHandle();
    handles.push(files[file]);
  }
  return files;
}

function state() {
  return JSON.parse(page.state());
}

const encoder = new TextEncoder();

function padded(text, size) {
  const bytes = new Uint8Array(size);
  bytes.set(encoder.encode(text).slice(0, size));
  return bytes;
}

function u128Bytes(value) {
  const bytes = new Uint8Array(16);
  let rest = BigInt.asUintN(128, value);
  for (let index = 0; index < 16; index += 1) {
    bytes[index] = Number(rest & 0xffn);
    rest >>= 8n;
  }
  return bytes;
}

function u64At(bytes, offset) {
  return new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(offset, true);
}

function hex(bytes) {
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('');
}

const methods = {
  async open({ name, fresh, seed }) {
    page?.free();
    page = null;
    await closeFiles();
    await compile(name);
    const files = await opfsFiles(name, fresh);
    machine = name;
    page = new Page(name, factory(name), files, randomHex(16), BigInt(seed ?? 1));
    return { storage: files ? 'opfs' : 'memory', state: state() };
  },

  /// Echo: the message is the body. kv: `key=value` puts, keys and values as UTF-8,
  /// zero-padded to kv's 16 and 64 bytes.
  commitText({ text }) {
    let reply;
    if (machine === 'echo') {
      reply = page.commit(1, encoder.encode(text));
      reply = { text: new TextDecoder().decode(reply) };
    } else {
      const [key, value = ''] = text.split('=');
      const body = new Uint8Array(80);
      body.set(padded(key, 16), 0);
      body.set(padded(value, 64), 16);
      reply = { text: `put ${key} (${page.commit(1, body).length}-byte reply)` };
    }
    return { reply, state: state() };
  },

  /// Echo: look a Thing up by id (the op that inserted it). kv: get a key.
  lookup({ text }) {
    if (machine === 'echo') {
      if (!/^[0-9]+$/.test(text.trim())) throw new Error(`\`${text}\` is not a Thing's id (an op number)`);
      const reply = page.commit(2, u128Bytes(BigInt(text.trim())));
      const things = [];
      for (let offset = 0; offset + 32 <= reply.length; offset += 32) {
        things.push({
          timestamp: String(u64At(reply, offset)),
          value: String(u64At(reply, offset + 8)),
          id: String(u64At(reply, offset + 16)),
        });
      }
      return { things, state: state() };
    }
    const reply = page.commit(3, padded(text, 16));
    const timestamp = u64At(reply, 16);
    const value = new TextDecoder().decode(reply.slice(24, 88)).replace(/\0+$/, '');
    return {
      things: timestamp === 0n ? [] : [{ key: text, timestamp: String(timestamp), value }],
      state: state(),
    };
  },

  generate({ count }) {
    const started = performance.now();
    const committed = JSON.parse(page.generate(count));
    return { committed, millis: performance.now() - started, state: state() };
  },

  state() {
    return { state: state() };
  },

  replay() {
    return JSON.parse(page.replay());
  },

  exportFiles() {
    return { journal: page.journalBytes(), superblock: page.superblockBytes() };
  },

  async verify({ superblock, journal }) {
    const name = machineOf(superblock);
    await compile(name);
    return { machine: name, ...JSON.parse(verify(factory(name), superblock, journal)) };
  },
};

const ready = init();

self.onmessage = async ({ data: { id, method, args } }) => {
  try {
    await ready;
    const result = await methods[method](args ?? {});
    self.postMessage({ id, result });
  } catch (error) {
    self.postMessage({ id, error: String(error?.message ?? error) });
  }
};
