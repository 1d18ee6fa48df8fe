// What the three examples share: the command line, the gRPC transport (plaintext, TLS or mutual
// TLS, with or without a bearer token), error names and the output format.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { type Event, ProducerService } from "./gen/pushpull/v1/producer_pb.js";

/** The connection flags every example takes. */
export const CONNECTION_USAGE = `
Connection: [--ca ca.pem | --tls] [--cert client.pem --key client.key] [--token T]
  --ca: TLS, trusting this CA (the producer's --tls-cert is signed by it); --tls: TLS, trusting
  the system's roots; --cert/--key: mutual TLS, for a producer with --tls-client-ca; --token: a
  bearer token, sent as \`authorization: Bearer T\` on every call (default: $PUSHPULL_TOKEN, which
  unlike the flag stays out of process listings).`;

/**
 * A ProducerService client speaking gRPC over HTTP/2 to `--producer host:port`, as the connection
 * flags ask. A producer with tokens answers a call without one UNAUTHENTICATED, and one whose
 * token lacks the scope PERMISSION_DENIED.
 */
export function producerClient(args: Record<string, string | boolean | undefined>): Client<typeof ProducerService> {
  const read = (flag: string) => {
    const path = args[flag] as string | undefined;
    if (path === undefined) return undefined;
    try {
      return readFileSync(path);
    } catch (err) {
      console.error(`cannot read --${flag} ${path}: ${(err as Error).message}`);
      process.exit(2);
    }
  };
  if ((args.cert === undefined) !== (args.key === undefined)) {
    console.error("--cert and --key go together (mutual TLS needs both)");
    process.exit(2);
  }
  const tls = args.ca !== undefined || args.tls === true || args.cert !== undefined;
  const token = (args.token as string | undefined) ?? process.env.PUSHPULL_TOKEN;
  const interceptors: Interceptor[] = [];
  if (token) {
    interceptors.push((next) => (request) => {
      request.header.set("authorization", `Bearer ${token}`);
      return next(request);
    });
  }
  const transport = createGrpcTransport({
    baseUrl: `${tls ? "https" : "http"}://${args.producer}`,
    // Node's TLS options: ca replaces the system's roots, as --ca means.
    nodeOptions: tls ? { ca: read("ca"), cert: read("cert"), key: read("key") } : undefined,
    interceptors,
  });
  return createClient(ProducerService, transport);
}

type StringOption = { type: "string"; default?: string };

/** Flags every example takes (--producer, the connection's, --help), plus its own. */
export function flags(usage: string, own: Record<string, StringOption>): Record<string, string | undefined> {
  const options = {
    producer: { type: "string", default: "localhost:50051" } as StringOption,
    ca: { type: "string" } as StringOption,
    tls: { type: "boolean" } as const,
    cert: { type: "string" } as StringOption,
    key: { type: "string" } as StringOption,
    token: { type: "string" } as StringOption,
    help: { type: "boolean" } as const,
    ...own,
  };
  const { values } = parseArgs({ options, strict: true });
  if (values.help) {
    console.error(usage.trim() + "\n" + CONNECTION_USAGE);
    process.exit(0);
  }
  return values as Record<string, string | undefined>;
}

/** The gRPC status code's name as the protocol spells it: PERMISSION_DENIED. */
export function codeName(code: Code): string {
  return Code[code].replace(/(?<=[a-z])(?=[A-Z])/g, "_").toUpperCase();
}

/** A failed call in one line, its code first: `UNAUTHENTICATED: this call needs...`. */
export function failure(err: unknown): string {
  const error = ConnectError.from(err);
  return `${codeName(error.code)}: ${error.rawMessage}`;
}

/** `--after SEQ` as a cursor: undefined (flag left out) is not the same as 0. */
export function cursorFlag(value: string | undefined): bigint | undefined {
  return value === undefined ? undefined : BigInt(value);
}

export function topicsFlag(value: string | undefined): string[] {
  return (value ?? "").split(",").filter((topic) => topic !== "");
}

const decoder = new TextDecoder();

/** One line per event on stdout, the same in every language's examples. */
export function printEvent(event: Pick<Event, "sequence" | "topic" | "payload">): void {
  console.log(`sequence=${event.sequence} topic=${event.topic} payload=${decoder.decode(event.payload)}`);
}
