// Test oracle: the official ipfs-unixfs-importer with the UnixFS v1-2025 profile, a
// chosen chunk size and link width. Usage: node unixfs_oracle.mjs FILE CHUNK WIDTH [v0]
// Prints {"root": cid, "blocks": [cid, ...], "data": {cid: base64}} as JSON; with "v0",
// the legacy profile (CIDv0, dag-pb leaves holding the data) instead.
import { readFile } from 'node:fs/promises'
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { MemoryBlockstore } from 'blockstore-core/memory'

const [file, chunk, width, legacy] = process.argv.slice(2)
const v0 = legacy === 'v0'
const blockstore = new MemoryBlockstore()
const content = await readFile(file)
let root
for await (const entry of importer([{ content }], blockstore, {
  profile: v0 ? 'unixfs-v0-2015' : 'unixfs-v1-2025',
  cidVersion: v0 ? 0 : 1,
  rawLeaves: !v0,
  reduceSingleLeafToSelf: true,
  chunker: fixedSize({ chunkSize: Number(chunk) }),
  layout: balanced({ maxChildrenPerNode: Number(width) }),
})) {
  root = entry.cid.toString()
}
const blocks = []
const data = {}
for await (const pair of blockstore.getAll()) {
  blocks.push(pair.cid.toString())
  const parts = []
  for await (const part of pair.bytes) parts.push(part)
  data[pair.cid.toString()] = Buffer.concat(parts).toString('base64')
}
console.log(JSON.stringify({ root, blocks, data }))
