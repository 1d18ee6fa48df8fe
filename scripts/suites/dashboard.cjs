// The dashboard in a real browser: Debian's chromium driven by playwright-core (no browser
// download). Run by scripts/suites/65-dashboard.sh, which starts the producer and consumers and
// passes their addresses in the environment. Exits non-zero on the first failed check.
// With DASHBOARD_TOKENS=1 it checks instead the page against a producer that checks tokens, over
// HTTPS (PRODUCER_BASE=https://...; the certificate is accepted as the suite's CA is not the
// browser's): READ_TOKEN (read scope), PUBLISH_TOKEN (publish only, also used to publish).
"use strict";
const { chromium } = require("playwright-core");
const { spawn } = require("child_process");
const fs = require("fs");
const path = require("path");
const os = require("os");

const HTTP = process.env.PRODUCER_HTTP; // 127.0.0.1:PORT
const SCREENSHOT = process.env.SCREENSHOT;
const base = process.env.PRODUCER_BASE || `http://${HTTP}`;
const TOKENS = process.env.DASHBOARD_TOKENS === "1";
const READ_TOKEN = process.env.READ_TOKEN, PUBLISH_TOKEN = process.env.PUBLISH_TOKEN;

function check(ok, what) {
  if (!ok) throw new Error("check failed: " + what);
  console.log("ok -", what);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function publish(topic, payload) {
  const response = await fetch(base + "/publish", {
    method: "POST",
    headers: {
      "content-type": "application/json",
      ...(PUBLISH_TOKEN ? { authorization: "Bearer " + PUBLISH_TOKEN } : {}),
    },
    body: JSON.stringify({ events: [{ topic, payload }] }),
  });
  check(response.ok, `POST /publish answered ${response.status}`);
  return (await response.json()).first_sequence;
}

// Publishes one event and measures how long until both the SSE and the WebSocket side of the
// page show it (their "last sequence" reaches it and the event row is on the page).
async function publishAndWatch(page, label) {
  const payload = `${label}-${Date.now()}`;
  const started = Date.now();
  const seq = await publish("suite.dashboard", payload);
  await page.waitForFunction(
    ([seq, payload]) =>
      Number(document.getElementById("sse-last").textContent) >= seq &&
      Number(document.getElementById("ws-last").textContent) >= seq &&
      [...document.querySelectorAll("#events td")].some((td) => td.textContent === payload),
    [seq, payload],
    { timeout: 5000, polling: 10 },
  );
  return { seq, took: Date.now() - started };
}

async function restartProducer() {
  const pid = Number(fs.readFileSync(process.env.PRODUCER_PID_FILE, "utf8"));
  process.kill(pid, "SIGTERM");
  // The suite's restart loop starts it again once it has exited; we only wait for the page.
}

const bothConnected = () =>
  document.getElementById("sse-status").textContent === "connected" &&
  document.getElementById("ws-status").textContent === "connected";

// Against a producer with tokens: the form on a 401 (and nothing connected before a token is
// given), the token from the form, from the fragment (then off the address bar), a refused one,
// one without the read scope; events over SSE and WebSocket once it has a good one.
async function tokensScenario(browser) {
  const page = browser.pages()[0] || (await browser.newPage());
  page.on("console", (m) => { if (m.type() === "error") console.log("page console:", m.text()); });
  const sent = []; // every URL the page asked for, to check where the token went
  page.on("request", (r) => sent.push(r.url()));
  page.on("websocket", (w) => sent.push(w.url()));
  await page.goto(base + "/", { waitUntil: "domcontentloaded" });
  check((await page.title()).includes("pushpull"), `GET ${base}/ serves the dashboard without a token`);
  await page.waitForSelector("#auth", { state: "visible", timeout: 5000 });
  const asked = await page.textContent("#auth-why");
  check(/needs one with the read scope/.test(asked), `a 401 shows the token form: "${asked}"`);
  await sleep(1500);
  check(!(await page.evaluate(bothConnected)) &&
        (await page.textContent("#sse-status")) !== "connected",
        "nothing connects while the form waits");

  await page.fill("#token", READ_TOKEN);
  await page.click("#auth button");
  await page.waitForFunction(bothConnected, null, { timeout: 5000 });
  check(!(await page.isVisible("#auth")), "a read token from the form: SSE and WebSocket connect, the form goes");
  const { seq, took } = await publishAndWatch(page, "with-token");
  check(took < 1000, `event ${seq} shown over SSE and WebSocket ${took} ms after publishing`);
  const stored = await page.evaluate(() => sessionStorage.getItem("pushpull.token"));
  check(stored === READ_TOKEN, "the token is kept in sessionStorage");
  const streams = sent.filter((u) => /\/(events|ws)(\?|$)/.test(u));
  check(streams.some((u) => u.startsWith("https:")) && streams.some((u) => u.startsWith("wss:")) &&
        streams.slice(-2).every((u) => u.endsWith("?access_token=" + READ_TOKEN)),
        `EventSource and WebSocket URLs carry access_token: ${streams.map((u) => u.split("?")[0]).join(", ")}`);
  await page.close();

  // A new tab (its own sessionStorage) with the token in the fragment.
  const tab = await browser.newPage();
  await tab.goto(base + "/#token=" + encodeURIComponent(READ_TOKEN), { waitUntil: "domcontentloaded" });
  await tab.waitForFunction(bothConnected, null, { timeout: 5000 });
  check(!(await tab.isVisible("#auth")), "#token=… in the address: connected, no form");
  check((await tab.evaluate(() => location.hash)) === "", "the fragment is taken off the address bar");
  await tab.close();

  for (const [token, says, what] of [
    ["x".repeat(24), /did not accept the token \(TOKEN_INVALID\)/, "an unknown token"],
    [PUBLISH_TOKEN, /lacks the read scope/, "a token without the read scope (403)"],
  ]) {
    const refused = await browser.newPage();
    await refused.goto(base + "/#token=" + token, { waitUntil: "domcontentloaded" });
    await refused.waitForSelector("#auth", { state: "visible", timeout: 5000 });
    const text = await refused.textContent("#auth-why");
    check(says.test(text), `${what}: the form asks again: "${text}"`);
    await refused.close();
  }
}

(async () => {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "pushpull-chromium-"));
  // A fresh profile each run (playwright passes it as --user-data-dir).
  const browser = await chromium.launchPersistentContext(userDataDir, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    // The suite's development CA is not the browser's; a CA it trusted would need an NSS db.
    ignoreHTTPSErrors: TOKENS,
    viewport: { width: 1280, height: 900 },
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  try {
    if (TOKENS) return await tokensScenario(browser);
    const page = browser.pages()[0] || (await browser.newPage());
    page.on("console", (m) => { if (m.type() === "error") console.log("page console:", m.text()); });
    const started = Date.now();
    await page.goto(base + "/", { waitUntil: "domcontentloaded" });
    check((await page.title()).includes("pushpull"), "GET / serves the dashboard");
    await page.waitForFunction(
      () => document.getElementById("sse-status").textContent === "connected" &&
            document.getElementById("ws-status").textContent === "connected",
      null, { timeout: 5000 });
    check(true, `SSE and WebSocket connected ${Date.now() - started} ms after loading`);

    for (let i = 0; i < 3; i++) {
      const { seq, took } = await publishAndWatch(page, "probe" + i);
      check(took < 1000, `event ${seq} shown over SSE and WebSocket ${took} ms after publishing (< 1000)`);
    }
    const head = Number(await page.textContent("#head"));
    check(head >= 3, `head sequence shown (${head})`);
    await page.waitForFunction(
      () => ["sse", "ws"].every((t) => /^[0-9.]+$/.test(document.getElementById(t + "-p50").textContent)),
      null, { timeout: 2000 });
    const p50 = await page.evaluate(() => ["sse", "ws"].map((t) => document.getElementById(t + "-p50").textContent));
    check(p50.every((v) => Number(v) < 1000), `per-transport latency shown (p50 SSE ${p50[0]} ms, WebSocket ${p50[1]} ms)`);

    await page.waitForFunction(
      () => ["push", "poll", "long-poll"].every((mode) => {
        const row = document.querySelector(`#consumers tr[data-mode="${mode}"]`);
        return row && Number(row.children[2].textContent) >= 3;
      }),
      null, { timeout: 5000 });
    check(true, "the three consumers' stats (push, poll, long-poll) are shown and counting");

    // Producer restart: the page says it is disconnected, then follows the new log by itself.
    const oldLog = await page.textContent("#log-id");
    await restartProducer();
    await page.waitForFunction(
      () => document.getElementById("banner").classList.contains("show"),
      null, { timeout: 5000 });
    check(true, "the page says it is disconnected while the producer is down");
    await page.waitForFunction(
      (oldLog) => document.getElementById("sse-status").textContent === "connected" &&
                  document.getElementById("ws-status").textContent === "connected" &&
                  document.getElementById("log-id").textContent !== oldLog,
      oldLog, { timeout: 15000 });
    check(!(await page.isVisible("#banner")), "reconnected by itself to the restarted producer (new log)");
    const after = await publishAndWatch(page, "after-restart");
    check(after.took < 1000, `after the restart, event ${after.seq} shown ${after.took} ms after publishing`);
    // Let the demo source and consumers fill the page for the picture.
    await sleep(2500);
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    console.log("screenshot:", SCREENSHOT);
  } finally {
    await browser.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
