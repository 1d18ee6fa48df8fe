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
// Over TLS and with a token: --ca ca.pem [--cert c.pem --key c.key] --token T (common.ts).
// Run `npm run generate` first.
//
// Errors: every error status of the producer carries, in its details, a google.rpc.ErrorInfo
// whose `reason` is one of the ErrorReason names of proto/pushpull/v1/errors.proto and whose
// `metadata` has the numbers a client needs. This loop branches on the reason, never on the
// message text (which is for people and may be reworded):
//   CURSOR_EXPIRED  retention dropped events after the cursor: resume from oldest_sequence - 1
//                   and report the `missed` events;
//   CURSOR_AHEAD    the cursor is beyond the head: start over from 0 if it came from an earlier
//                   log of a restarted producer, else stop;
//   anything else   stop, naming the reason, the field at fault (google.rpc.BadRequest) and when
//                   to retry (google.rpc.RetryInfo), if the status has them.
// The google.rpc schemas are generated from the google-proto-files package (buf.gen.yaml).
import { setTimeout as sleep } from "node:timers/promises";

import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";

import { codeName, cursorFlag, flags, printEvent, producerClient, topicsFlag } from "./common.js";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb.js";
import { ErrorReason } from "./gen/pushpull/v1/errors_pb.js";

// ErrorInfo.reason travels as the enum value's name; the generated enum gives the names.
const CURSOR_EXPIRED = ErrorReason[ErrorReason.CURSOR_EXPIRED];
const CURSOR_AHEAD = ErrorReason[ErrorReason.CURSOR_AHEAD];

/** What a person needs: code, reason, the field at fault, when to retry, the message. */
function describe(error: ConnectError, reason: string): string {
  const parts = [codeName(error.code)];
  if (reason) parts.push(reason);
  const violation = error.findDetails(BadRequestSchema)[0]?.fieldViolations[0];
  if (violation) parts.push(`field ${violation.field}`);
  const delay = error.findDetails(RetryInfoSchema)[0]?.retryDelay;
  if (delay) parts.push(`retry in ${Number(delay.seconds) + delay.nanos / 1e9}s`);
  return `${parts.join(": ")}: ${error.rawMessage}`;
}

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
let missed = 0n;
let stopping = false;
process.once("SIGINT", () => (stopping = true));

const producer = producerClient(args);
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
    const error = ConnectError.from(err);
    // connect-es keeps the details of grpc-status-details-bin; findDetails decodes those of one
    // type. An ErrorInfo of another domain is another service's, and means nothing here.
    const info = error.findDetails(ErrorInfoSchema).find((detail) => detail.domain === "pushpull");
    const reason = info?.reason ?? "";
    const meta = info?.metadata ?? {};
    if ((reason === CURSOR_EXPIRED || reason === CURSOR_AHEAD) && logId !== undefined && meta.log_id !== logId) {
      // The producer restarted: our cursor belongs to its previous log.
      console.error(`new log ${meta.log_id}: starting over from its oldest event`);
      cursor = 0n;
      logId = undefined;
      continue;
    }
    if (reason === CURSOR_EXPIRED) {
      // Retention dropped the events after the cursor: say how many are lost, then go on from
      // the oldest retained event. Metadata values are decimal strings.
      const oldest = BigInt(meta.oldest_sequence);
      const gone = BigInt(meta.missed);
      console.error(
        `cursor ${meta.after_sequence} has expired: ${gone} events missed ` +
          `(oldest_sequence ${oldest}); resuming from --after ${oldest - 1n}`,
      );
      cursor = oldest - 1n;
      missed += gone;
      continue;
    }
    if (reason === CURSOR_AHEAD) {
      console.error(
        `poll refused: ${CURSOR_AHEAD}: --after ${meta.after_sequence} is beyond ` +
          `head_sequence=${meta.head_sequence} (oldest_sequence=${meta.oldest_sequence}, log_id=${meta.log_id})`,
      );
      process.exit(1);
    }
    console.error(`poll failed: ${describe(error, reason)}`);
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
const lost = missed ? ` (${missed} missed)` : "";
console.error(`stopped after ${polls} polls and ${received} events${lost}; resume with --after ${cursor}`);
