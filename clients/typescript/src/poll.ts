// Pull: a Poll loop that carries its cursor from one call to the next.
//
//   npx tsx src/poll.ts --after 0 --count 10                 # poll; wait --interval when caught up
//   npx tsx src/poll.ts --after 0 --max-wait 30 --timeout 60  # long poll: each call waits for events
//
// --after SEQ is the cursor: events with a sequence greater than SEQ (0: from the oldest retained
// event; left out: from the head, only new events). Each response's nextAfterSequence is the
// cursor of the next call. With --max-wait the producer holds each call until an event exists
// (a long poll), so there is no interval to wait. Stops after --count events, at the first call
// that ends after --timeout seconds, or on Ctrl-C, and says which --after resumes.
// Events go to stdout (`sequence=N topic=T payload=P`), everything else to stderr.
// Run `npm run generate` first.
import { setTimeout as sleep } from "node:timers/promises";

import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";

import { cursorFlag, flags, printEvent, producerClient, topicsFlag } from "./common.js";

const args = flags(
  `usage: poll.ts [--producer host:port] [--after SEQ] [--topics a,b] [--max-events N]
               [--max-wait SECONDS] [--interval SECONDS] [--count N] [--timeout SECONDS]`,
  {
    after: { type: "string" },
    topics: { type: "string" },
    "max-events": { type: "string", default: "100" },
    "max-wait": { type: "string", default: "0" },
    interval: { type: "string", default: "1" },
    count: { type: "string", default: "0" },
    timeout: { type: "string", default: "0" },
  },
);

const maxWaitMs = Number(args["max-wait"]) * 1000;
const intervalMs = Number(args.interval) * 1000;
const count = Number(args.count);
const deadline = Number(args.timeout) ? Date.now() + Number(args.timeout) * 1000 : undefined;
let cursor = cursorFlag(args.after);
let logId: string | undefined;
let received = 0;
let polls = 0;
let stopping = false;
process.once("SIGINT", () => (stopping = true));

const producer = producerClient(args.producer!);
while (!stopping) {
  let response;
  // A bound for a producer that never answers; cleared after the call so that it does not keep
  // the process alive.
  const abandon = new AbortController();
  const timer = setTimeout(() => abandon.abort(), maxWaitMs + 10_000);
  try {
    response = await producer.poll(
      {
        afterSequence: cursor, // undefined: from the head
        topics: topicsFlag(args.topics),
        maxEvents: Number(args["max-events"]),
        maxWait: maxWaitMs ? durationFromMs(maxWaitMs) : undefined,
      },
      { signal: abandon.signal },
    );
  } catch (err) {
    console.error(`poll failed: ${ConnectError.from(err).message}`);
    process.exit(1);
  } finally {
    clearTimeout(timer);
  }
  polls += 1;
  if (logId !== undefined && response.logId !== logId) {
    // The producer restarted: a cursor of the old log means nothing in the new one.
    console.error(`new log ${response.logId}: starting over from its oldest event`);
    cursor = 0n;
    logId = undefined;
    continue;
  }
  logId = response.logId;
  cursor = response.nextAfterSequence;
  for (const event of response.events) {
    printEvent(event);
    received += 1;
    if (received === count) {
      cursor = event.sequence;
      break;
    }
  }
  if (received === count || (deadline !== undefined && Date.now() >= deadline)) break;
  const caughtUp = response.nextAfterSequence >= response.headSequence;
  if (caughtUp && !maxWaitMs) {
    await sleep(deadline === undefined ? intervalMs : Math.max(0, Math.min(intervalMs, deadline - Date.now())));
  }
}
console.error(`stopped after ${polls} polls and ${received} events; resume with --after ${cursor}`);
