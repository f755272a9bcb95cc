// Transpile the components `carapace component` wrote to dist/components/ into ES
// modules with jco's library: dist/<machine>/<machine>.js and its core modules, which
// are byte for byte the core modules inside the component wasmtime runs.
import { transpileBytes } from '@bytecodealliance/jco-transpile';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const dist = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist');

for (const machine of ['echo', 'kv']) {
  const component = readFileSync(join(dist, 'components', `${machine}.wasm`));
  // Synchronous instantiation: the host core makes instances inside a call (a rebuild,
  // a replay), so the page compiles the core modules once, ahead, and instantiates
  // them synchronously.
  const { files } = await transpileBytes(component, { name: machine, instantiation: 'sync' });
  for (const [name, bytes] of Object.entries(files)) {
    const path = join(dist, machine, name);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, bytes);
  }
  console.log(`transpiled ${machine}: ${Object.keys(files).length} files`);
}
