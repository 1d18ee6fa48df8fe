// Publishes --count events in one Publish call and prints the sequence each one got:
//
//   npx tsx src/publish.ts --count 3 --topic demo.ts --payload hello
//
// prints `sequence=1 topic=demo.ts payload=hello 1`, one line per event, in sequence order.
// Over TLS and with a token: --ca ca.pem [--cert c.pem --key c.key] --token T (common.ts).
// Run `npm run generate` first.
import { failure, flags, printEvent, producerClient } from "./common.js";

const args = flags(
  `usage: publish.ts [--producer host:port] [--count N] [--topic T] [--payload TEXT]
Event i gets the payload "TEXT i".`,
  {
    count: { type: "string", default: "3" },
    topic: { type: "string", default: "demo.ts" },
    payload: { type: "string", default: "hello" },
  },
);

const encoder = new TextEncoder();
const events = Array.from({ length: Number(args.count) }, (_, i) => ({
  topic: args.topic!,
  payload: encoder.encode(`${args.payload} ${i + 1}`),
}));

try {
  const producer = producerClient(args);
  const response = await producer.publish({ events }, { timeoutMs: 10_000 });
  // The events got firstSequence..=lastSequence, consecutively, in request order.
  events.forEach((event, i) => printEvent({ sequence: response.firstSequence + BigInt(i), ...event }));
  console.error(`published ${response.firstSequence}..${response.lastSequence} to log ${response.logId}`);
} catch (err) {
  console.error(`publish failed: ${failure(err)}`);
  process.exit(1);
}
