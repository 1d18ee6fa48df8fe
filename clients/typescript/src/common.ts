// What the three examples share: the command line, the gRPC transport and the output format.
import { parseArgs } from "node:util";

import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { type Event, ProducerService } from "./gen/pushpull/v1/producer_pb.js";

/** A ProducerService client speaking gRPC over HTTP/2 (plaintext) to `--producer host:port`. */
export function producerClient(producer: string): Client<typeof ProducerService> {
  const transport = createGrpcTransport({ baseUrl: `http://${producer}` });
  return createClient(ProducerService, transport);
}

type StringOption = { type: "string"; default?: string };

/** Flags every example takes (--producer, --help), plus its own; all are strings. */
export function flags(usage: string, own: Record<string, StringOption>): Record<string, string | undefined> {
  const options = {
    producer: { type: "string", default: "localhost:50051" } as StringOption,
    help: { type: "boolean" } as const,
    ...own,
  };
  const { values } = parseArgs({ options, strict: true });
  if (values.help) {
    console.error(usage.trim());
    process.exit(0);
  }
  return values as Record<string, string | undefined>;
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
