/**
 * A small typed wrapper over the generated imagesearch.search.v1 client.
 *
 * The generated client (`createClient(SearchService, transport)`) is usable as it is; this
 * module adds what every caller otherwise writes by hand: the gRPC transport, a bearer token,
 * a default deadline, plain-object metadata, and one-line search helpers.
 */
import { create } from "@bufbuild/protobuf";
import { type Client, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import {
  type Hit,
  type MetadataValue,
  MetadataValueSchema,
  type QueryResult,
  SearchService,
} from "./gen/imagesearch/search/v1/search_pb.js";

export * from "./gen/imagesearch/search/v1/search_pb.js";
export { Code, ConnectError } from "@connectrpc/connect";

export type Scalar = string | number | bigint | boolean;

export interface ClientOptions {
  /** host:port of the search service, e.g. "127.0.0.1:50052". */
  address: string;
  /** Use TLS (https). The Node.js trust store applies. */
  tls?: boolean;
  /** Bearer token, when the service has SEARCH_AUTH_TOKENS set. */
  token?: string;
  /** Deadline of each call in milliseconds (default 30 000). */
  timeoutMs?: number;
  /**
   * Keepalive: PING the connection this often, idle or not, and drop it when a PING goes
   * unanswered for 10 s, so a dead server or network path is found in seconds rather than
   * minutes (default 20 000; the services accept PINGs every 5 s or more). 0 turns it off.
   */
  keepaliveMs?: number;
}

export type SearchClient = Client<typeof SearchService>;

/** The generated client over gRPC (HTTP/2), with token and default deadline applied. */
export function connect(options: ClientOptions): SearchClient {
  const interceptors: Interceptor[] = [];
  if (options.token) {
    const header = `Bearer ${options.token}`;
    interceptors.push((next) => (request) => {
      request.header.set("authorization", header);
      return next(request);
    });
  }
  const keepaliveMs = options.keepaliveMs ?? 20_000;
  const transport = createGrpcTransport({
    baseUrl: `${options.tls ? "https" : "http"}://${options.address}`,
    interceptors,
    defaultTimeoutMs: options.timeoutMs ?? 30_000,
    ...(keepaliveMs > 0 && {
      pingIntervalMs: keepaliveMs,
      pingIdleConnection: true,
      pingTimeoutMs: 10_000,
    }),
  });
  return createClient(SearchService, transport);
}

/** Plain values as MetadataValue messages: integers become int_value, other numbers double. */
export function metadata(values: Record<string, Scalar>): Record<string, MetadataValue> {
  const out: Record<string, MetadataValue> = {};
  for (const [key, value] of Object.entries(values)) {
    out[key] = create(MetadataValueSchema, { kind: toKind(value) });
  }
  return out;
}

function toKind(value: Scalar): MetadataValue["kind"] {
  switch (typeof value) {
    case "string":
      return { case: "stringValue", value };
    case "boolean":
      return { case: "boolValue", value };
    case "bigint":
      return { case: "intValue", value };
    default:
      return Number.isInteger(value)
        ? { case: "intValue", value: BigInt(value) }
        : { case: "doubleValue", value };
  }
}

/** A MetadataValue back to a plain value (int64 as bigint). */
export function plain(value: MetadataValue): Scalar | undefined {
  return value.kind.value;
}

/** Hits of one query result, or the query's own error (each query of a batch fails alone). */
export function hitsOf(result: QueryResult): Hit[] {
  if (result.status && result.status.code !== 0) {
    throw new Error(`query failed with code ${result.status.code}: ${result.status.message}`);
  }
  return result.hits;
}
