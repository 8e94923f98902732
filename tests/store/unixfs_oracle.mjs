// Test oracle: the official ipfs-unixfs-importer with the UnixFS v1-2025 profile, a
// chosen chunk size and link width. Usage: node unixfs_oracle.mjs FILE CHUNK WIDTH
// Prints {"root": cid, "blocks": [cid, ...]} as JSON.
import { readFile } from 'node:fs/promises'
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { MemoryBlockstore } from 'blockstore-core/memory'

const [file, chunk, width] = process.argv.slice(2)
const blockstore = new MemoryBlockstore()
const content = await readFile(file)
let root
for await (const entry of importer([{ content }], blockstore, {
  profile: 'unixfs-v1-2025',
  cidVersion: 1,
  rawLeaves: true,
  reduceSingleLeafToSelf: true,
  chunker: fixedSize({ chunkSize: Number(chunk) }),
  layout: balanced({ maxChildrenPerNode: Number(width) }),
})) {
  root = entry.cid.toString()
}
const blocks = []
for await (const pair of blockstore.getAll()) {
  blocks.push(pair.cid.toString())
}
console.log(JSON.stringify({ root, blocks }))
