#!/usr/bin/env node
// A stand-in for native `solc` that py-solc-x can drive, backed by solc-js (WebAssembly).
//   solcjs_bridge.js --version                 -> "solc, the solidity compiler ..." + "Version: X"
//   solcjs_bridge.js --standard-json [...]     -> standard JSON in on stdin, out on stdout
// Imports resolve against the --base-path / --allow-paths / --include-path folders given,
// then the project's node_modules (so "@openzeppelin/contracts/..." works), then cwd.
'use strict';
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const nodeModules = process.env.POLCHAIN_NODE_MODULES || path.join(root, 'node_modules');
const solc = require(path.join(nodeModules, 'solc'));

const args = process.argv.slice(2);
if (args.includes('--version')) {
  process.stdout.write('solc, the solidity compiler commandline interface\nVersion: ' + solc.version() + '\n');
  process.exit(0);
}
if (!args.includes('--standard-json')) {
  process.stderr.write('solcjs_bridge: only --version and --standard-json are supported\n');
  process.exit(1);
}

const searchDirs = [];
for (let i = 0; i < args.length; i++) {
  if (['--base-path', '--include-path', '--allow-paths'].includes(args[i]) && args[i + 1]) {
    for (const p of args[i + 1].split(',')) searchDirs.push(path.resolve(p));
    i++;
  }
}
searchDirs.push(nodeModules, process.cwd(), root);

function findImports(importPath) {
  for (const dir of searchDirs) {
    const candidate = path.resolve(dir, importPath);
    if (fs.existsSync(candidate) && fs.statSync(candidate).isFile()) {
      return { contents: fs.readFileSync(candidate, 'utf8') };
    }
  }
  return { error: 'File not found: ' + importPath };
}

const input = fs.readFileSync(0, 'utf8');
process.stdout.write(solc.compile(input, { import: findImports }));
