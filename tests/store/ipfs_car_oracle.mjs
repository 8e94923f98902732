// Test oracle: ipfs-car's own file encoder (createFileEncoderStream, i.e. @ipld/unixfs with
// raw leaves and the balanced layout) with a chosen chunk size and width instead of
// 1 MiB / 1024, so multi-level trees come from small files.
// Usage: node ipfs_car_oracle.mjs FILE CHUNK WIDTH  ->  {"root": cid, "blocks": [cid, ...]}
import { readFile } from 'node:fs/promises'
import { createFileEncoderStream } from 'ipfs-car'
import * as UnixFS from '@ipld/unixfs'
import { withMaxChunkSize } from '@ipld/unixfs/file/chunker/fixed'
import { withWidth } from '@ipld/unixfs/file/layout/balanced'
import * as raw from 'multiformats/codecs/raw'

const [file, chunk, width] = process.argv.slice(2)
const settings = UnixFS.configure({
  fileChunkEncoder: raw,
  smallFileEncoder: raw,
  chunker: withMaxChunkSize(Number(chunk)),
  fileLayout: withWidth(Number(width)),
})
const content = await readFile(file)
const blob = new Blob([content])
const blocks = []
let last
await createFileEncoderStream(blob, settings).pipeTo(
  new WritableStream({
    write (block) {
      blocks.push(block.cid.toString())
      last = block.cid.toString()
    },
  })
)
console.log(JSON.stringify({ root: last, blocks }))
