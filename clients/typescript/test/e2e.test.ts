/**
 * End to end from Node.js against the real services (started by
 * tests/clients/test_typescript.py, which also writes the sample images):
 *   IMAGESEARCH_SEARCH_ADDRESS  host:port of the search service
 *   IMAGESEARCH_SAMPLES         a folder of PNGs with manifest.json: [{id, file, colour, shape}]
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { Code, ConnectError, connect, hitsOf, metadata, Operator, plain } from "../src/index.js";

interface Sample {
  id: string;
  file: string;
  colour: string;
  shape: string;
}

const address = process.env.IMAGESEARCH_SEARCH_ADDRESS;
const samplesDir = process.env.IMAGESEARCH_SAMPLES;
if (!address || !samplesDir) {
  throw new Error("set IMAGESEARCH_SEARCH_ADDRESS and IMAGESEARCH_SAMPLES (see the header)");
}
const samples: Sample[] = JSON.parse(readFileSync(join(samplesDir, "manifest.json"), "utf8"));
const bytesOf = (sample: Sample) => new Uint8Array(readFileSync(join(samplesDir, sample.file)));
const client = connect({ address, timeoutMs: 60_000 });
const collection = "from-typescript";

async function rejection(call: Promise<unknown>): Promise<ConnectError> {
  const error = await call.then(
    () => assert.fail("the call succeeded"),
    (err: unknown) => err,
  );
  assert.ok(error instanceof ConnectError, `not a ConnectError: ${String(error)}`);
  return error;
}

test("collections, images with metadata, and searches by text and by image", async (t) => {
  await client.createCollection({ name: collection, description: "made by the TS client" });
  const added = await client.addImages({
    collection,
    images: samples.map((s) => ({
      id: s.id,
      data: bytesOf(s),
      metadata: metadata({ colour: s.colour, shape: s.shape, from_node: true }),
    })),
  });
  assert.deepEqual(added.results.map((s) => s.code), samples.map(() => 0));

  await t.test("the collection counts its images", async () => {
    const got = await client.getCollection({ name: collection });
    assert.equal(got.collection?.imageCount, BigInt(samples.length));
    assert.equal(got.collection?.description, "made by the TS client");
  });

  await t.test("text search puts the described image first, with its metadata", async () => {
    const reply = await client.search({ collection, topK: 3, queries: [{ kind: { case: "text", value: "a red circle" } }] });
    const [best] = hitsOf(reply.results[0]);
    assert.equal(best.id, "red-circle");
    assert.equal(plain(best.metadata.colour), "red");
    assert.equal(plain(best.metadata.from_node), true);
  });

  await t.test("image search finds the image itself first", async () => {
    const query = samples.find((s) => s.id === "blue-square")!;
    const reply = await client.search({ collection, topK: 1, queries: [{ kind: { case: "image", value: bytesOf(query) } }] });
    const [best] = hitsOf(reply.results[0]);
    assert.equal(best.id, "blue-square");
    assert.ok(best.similarity > 0.99, `similarity ${best.similarity}`);
  });

  await t.test("a metadata filter keeps only matching images", async () => {
    const reply = await client.search({
      collection,
      topK: 10,
      queries: [{ kind: { case: "text", value: "a shape" } }],
      filter: [{ key: "shape", operator: Operator.EQUAL, values: [metadata({ v: "triangle" }).v] }],
    });
    assert.deepEqual(hitsOf(reply.results[0]).map((h) => h.id), ["green-triangle"]);
  });

  await t.test("a bad query in a batch fails alone", async () => {
    const reply = await client.search({
      collection,
      queries: [{ kind: { case: "imageId", value: "no-such-image" } }, { kind: { case: "text", value: "a star" } }],
    });
    assert.equal(reply.results[0].status?.code, Code.NotFound);
    assert.ok(hitsOf(reply.results[1]).length > 0);
  });
});

test("errors arrive as gRPC status codes with messages", async () => {
  const missing = await rejection(client.getCollection({ name: "no-such-collection" }));
  assert.equal(missing.code, Code.NotFound);
  assert.equal(missing.rawMessage, "collection 'no-such-collection' does not exist");

  const invalid = await rejection(client.createCollection({ name: "not a valid name!" }));
  assert.equal(invalid.code, Code.InvalidArgument);
  assert.match(invalid.rawMessage, /collection name/);
});
