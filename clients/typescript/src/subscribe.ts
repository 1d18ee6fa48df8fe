// Push: opens a Subscribe stream and prints each event as the producer sends it.
//
//   npx tsx src/subscribe.ts --after 0 --count 10 --timeout 30
//
// --after SEQ is the cursor: events with a sequence greater than SEQ (0: from the oldest retained
// event; left out: only events published from now on). Stops after --count events, after
// --timeout seconds, or on Ctrl-C, and says which --after resumes where it stopped.
// Events go to stdout (`sequence=N topic=T payload=P`), everything else to stderr.
// Over TLS and with a token: --ca ca.pem [--cert c.pem --key c.key] --token T (common.ts).
// Run `npm run generate` first.
import { ConnectError } from "@connectrpc/connect";

import { cursorFlag, failure, flags, printEvent, producerClient, topicsFlag } from "./common.js";

const args = flags(
  `usage: subscribe.ts [--producer host:port] [--after SEQ] [--topics a,b] [--count N] [--timeout SECONDS]`,
  {
    after: { type: "string" },
    topics: { type: "string" },
    count: { type: "string", default: "0" },
    timeout: { type: "string", default: "0" },
  },
);

const count = Number(args.count);
const timeoutMs = Number(args.timeout) * 1000;
let cursor = cursorFlag(args.after);
let received = 0;
// Aborting the signal cancels the stream: at --count, on Ctrl-C, or at --timeout.
const stop = new AbortController();
process.once("SIGINT", () => stop.abort());
const timer = timeoutMs ? setTimeout(() => stop.abort(), timeoutMs) : undefined;

try {
  const producer = producerClient(args);
  const stream = producer.subscribe(
    { afterSequence: cursor, topics: topicsFlag(args.topics) }, // afterSequence undefined: from now
    { signal: stop.signal },
  );
  let first = true;
  responses: for await (const response of stream) {
    if (first) {
      // The producer answers at once, so this means "connected".
      console.error(`subscribed to log ${response.logId}, head_sequence ${response.headSequence}`);
      first = false;
    }
    for (const event of response.events) {
      printEvent(event);
      cursor = event.sequence;
      received += 1;
      if (received === count) {
        stop.abort();
        break responses;
      }
    }
    // Past filtered-out events too: resuming from here never rescans them.
    cursor = response.nextAfterSequence;
  }
} catch (err) {
  const error = ConnectError.from(err);
  // Stopped on purpose (count, Ctrl-C, timeout): a normal end, not a failure.
  if (!stop.signal.aborted) {
    console.error(`stream failed: ${failure(error)}`);
    process.exit(1);
  }
}
clearTimeout(timer); // or it would keep the process alive until it fires
console.error(`stopped after ${received} events; resume with --after ${cursor}`);
