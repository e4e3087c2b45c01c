// The console in a real browser (the system chromium through playwright-core), against
// the switchyard that tests/console.rs started. The Rust side does what a browser cannot
// (send events, make the webhook fail, check what it received): this script asks it with
// a line `STEP <name>` on stdout and waits for `ok …` on stdin.
//
//   SWITCHYARD_URL, SWITCHYARD_TOKEN   where and with what to log in
//   SCREENSHOTS                        directory for a screenshot of each page
import { chromium } from "playwright-core";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

const url = process.env.SWITCHYARD_URL;
const token = process.env.SWITCHYARD_TOKEN;
const shots = process.env.SCREENSHOTS || "target/console-screenshots";
if (!url || !token) throw new Error("set SWITCHYARD_URL and SWITCHYARD_TOKEN");
mkdirSync(shots, { recursive: true });

const replies = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function step(name) {
  process.stdout.write(`STEP ${name}\n`);
  const { value, done } = await replies.next();
  if (done || !value.startsWith("ok")) throw new Error(`step ${name}: ${done ? "no answer" : value}`);
  return value.slice(2).trim();
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

const profile = mkdtempSync(join(tmpdir(), "switchyard-console-"));
// A fresh profile directory (playwright passes it as --user-data-dir).
const context = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1280, height: 800 },
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const problems = [];
const page = context.pages()[0] || (await context.newPage());
page.setDefaultTimeout(20_000);
// The console loads nothing from elsewhere and runs without script errors (a CSP
// violation is a console error too).
page.on("request", (r) => { if (!r.url().startsWith(url)) problems.push(`request to ${r.url()}`); });
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
page.on("console", (m) => { if (m.type() === "error" && !/status of 401/.test(m.text())) problems.push(`console: ${m.text()}`); });

async function logIn() {
  await page.goto(`${url}/console`);
  await page.fill("#token", token);
  await page.click("#login-form button[type=submit]");
  await page.waitForSelector("#nav:not([hidden])");
}

// A Postgres source's page: start a table's snapshot, pause, resume and cancel it.
async function postgresScenario() {
  await logIn();
  await page.click('#nav a[href="#/sources"]');
  await page.waitForFunction(() => / · connected · /.test(document.querySelector("#source-db")?.textContent || ""));
  await page.fill("#snapshot-table-db", "public.big");
  await page.click('#source-db button:text("Start snapshot")');
  const row = '#source-db tr[data-table="public.big"]';
  await page.waitForSelector(`${row}[data-state="running"]`);
  await page.click(`${row} button:text("Pause")`);
  await page.waitForSelector(`${row}[data-state="paused"]`);
  await page.screenshot({ path: join(shots, "sources-paused.png"), fullPage: true });
  await page.click(`${row} button:text("Resume")`);
  await page.waitForSelector(`${row}[data-state="running"]`);
  await page.click(`${row} button:text("Cancel")`);
  await page.waitForSelector(`${row}[data-state="cancelled"]`);
  await step("check-cancelled");

  // "Snapshot again" fills in the form; a snapshot of the rows a condition picks (of a
  // smaller table: a filtered snapshot still walks the whole table) completes, and its
  // row shows the condition.
  await page.click(`${row} button:text("Snapshot again…")`);
  check(await page.inputValue("#snapshot-table-db") === "public.big", "snapshot again fills in the table");
  await page.fill("#snapshot-table-db", "public.small");
  await page.fill("#snapshot-where-db", "id <= 50");
  await page.click('#source-db button:text("Start snapshot")');
  const small = '#source-db tr[data-table="public.small"]';
  await page.waitForSelector(`${small}[data-state="done"]`);
  check((await page.textContent(small)).includes("where id <= 50"), "the row shows the snapshot's condition");
  await step("check-filtered");

  // The slot's lag over time, against the source's max_slot_lag, and the replication
  // state.
  await page.waitForSelector("#lag-db line.limit", { state: "attached" });
  await page.waitForSelector("#lag-db polyline.lag", { state: "attached" });
  check(/max_slot_lag 1\.0 GiB/.test(await page.textContent("#lag-db")), "the chart names the limit");
  await page.waitForSelector('#source-db .replication[data-state="streaming"]');
  await page.screenshot({ path: join(shots, "sources.png"), fullPage: true });

  // The slot is dropped behind switchyard's back: the source stops, and the overview
  // says switchyard is not ready, and why.
  await page.click('#nav a[href="#/overview"]');
  await step("drop-slot");
  await page.waitForSelector("#banner:not([hidden])");
  const banner = await page.textContent("#banner");
  check(/Not ready: sources stopped: db/.test(banner), `the banner says: ${banner}`);
  await page.waitForSelector("#node-sources-db.stopped");
  await page.screenshot({ path: join(shots, "overview-not-ready.png"), fullPage: true });
}

// Log in, the live graph, dead letters, every page, keyboard and phone width.
async function mainScenario() {
  // A wrong token is refused, with a message saying so.
  await page.goto(`${url}/console`);
  await page.fill("#token", "not-the-admin-token-at-all");
  await page.click("#login-form button[type=submit]");
  await page.waitForSelector("#login-error:not([hidden])");
  const refusal = await page.textContent("#login-error");
  check(/Refused/.test(refusal), `the refusal says: ${refusal}`);
  check(await page.isHidden("#nav"), "the pages are offered without a login");
  await page.screenshot({ path: join(shots, "login-refused.png") });

  // The right token opens the overview: the graph with the source, pipeline and sink.
  await page.fill("#token", token);
  await page.click("#login-form button[type=submit]");
  await page.waitForSelector("#node-sources-api");
  await page.waitForSelector("#node-pipelines-deliver");
  await page.waitForSelector("#node-sinks-hook");
  const stored = await page.evaluate(() => Object.keys(sessionStorage).length + Object.keys(localStorage).length);
  check(stored === 1, `the token is kept in sessionStorage only (${stored} entries)`);

  // Events sent now show in the counts the page streams.
  const stat = (node, name) => page.textContent(`#${node} dd[data-stat="${name}"]`);
  const before = Number((await stat("node-sinks-hook", "delivered")).replace(/,/g, ""));
  const sent = Number(await step("send-events"));
  await page.waitForFunction(
    ([want]) => Number(document.querySelector('#node-sinks-hook dd[data-stat="delivered"]').textContent.replace(/,/g, "")) >= want,
    [before + sent]);
  await page.waitForFunction(() => document.querySelector('#node-sources-api dd[data-stat="events"]').textContent !== "0");
  await page.screenshot({ path: join(shots, "overview.png"), fullPage: true });

  // The webhook fails: the sink retries, then dead-letters; the page shows it failing.
  const poison = await step("fail-webhook");
  await page.waitForFunction(() => document.querySelector('#node-sinks-hook dd[data-stat="dead-lettered"]').textContent !== "0");
  await page.waitForSelector("#node-sinks-hook.failing");
  await page.screenshot({ path: join(shots, "overview-failing.png"), fullPage: true });

  // Pipeline detail: a chart per sink from the history, the reader's checkpoint past
  // every event sent (all of them completed: delivered or dead-lettered), the sink's
  // delivery latency, and no plugin.
  await page.click('#node-pipelines-deliver a[href="#/pipelines/deliver"]');
  await page.waitForSelector("figure.chart polyline.delivered");
  check((await page.$$("figure.chart")).length >= 2, "a chart for the pipeline and one for its sink");
  await page.waitForFunction(
    ([want]) => Number(document.querySelector('#readers tr[data-source="api"] td[data-stat="checkpoint"]')?.textContent.replace(/,/g, "")) >= want,
    [sent + 1]);
  await page.waitForFunction(() => document.querySelector('#readers tr[data-source="api"] td[data-stat="in-flight"]')?.textContent === "0");
  await page.waitForSelector("figure.chart :is(polyline, circle).latency", { state: "attached" });
  const latency = await page.textContent("figure.chart .legend .latency");
  check(/mean ([\d.]+ (µs|ms|s)|–)/.test(latency), `the latency legend says: ${latency}`);
  check(/runs no plugin/.test(await page.textContent("#plugins")), "a pipeline without plugins says so");

  // A pipeline with a filter: its calls and how long they took, no failure.
  await page.goto(`${url}/console#/pipelines/audit`);
  const plugin = '#plugins tr[data-plugin="filter:numbered"]';
  await page.waitForFunction((sel) => Number(document.querySelector(`${sel} td[data-stat="calls"]`)?.textContent.replace(/,/g, "")) > 0, plugin);
  check((await page.textContent(`${plugin} td[data-stat="errors"]`)) === "none", "the filter failed no call");
  await page.screenshot({ path: join(shots, "pipeline-plugin.png"), fullPage: true });
  await page.screenshot({ path: join(shots, "pipeline.png"), fullPage: true });

  // Dead letters: the one the webhook refused, its payload and headers; replayed after
  // the webhook healed, it is delivered and leaves the list.
  await step("heal-webhook");
  await page.click('#nav a[href="#/dead-letters"]');
  const row = `#dead-letters tr[data-id="${poison}"]`;
  await page.waitForSelector(row);
  const rowText = await page.textContent(row);
  check(rowText.includes("hook") && rowText.includes("500"), `the row names the sink and the error: ${rowText}`);
  await page.click(`${row} td.mono button`);
  await page.waitForSelector("#dlq-detail pre.payload");
  check((await page.textContent("#dlq-detail pre.payload")).includes('"poison"'), "the payload is shown");
  check((await page.textContent("#dlq-detail pre.headers")).includes("x-switchyard-dead-letter-sink: hook"), "the headers are shown");
  await page.screenshot({ path: join(shots, "dead-letters.png"), fullPage: true });
  await page.click(`${row} button:text("Replay")`);
  await page.waitForFunction(() => /Replayed 1/.test(document.getElementById("dlq-status").textContent));
  await page.waitForSelector(row, { state: "detached" });
  await step(`check-replayed ${poison}`);

  // Two more dead letters; the second one picked and replayed: only it is delivered,
  // the first stays (and so does the picked one, behind it: the replay position stops
  // at the first one skipped).
  const [second, third] = (await step("dead-letter-two")).split(" ");
  await page.click('button:text("Refresh")');
  await page.waitForSelector(`#dead-letters tr[data-id="${third}"]`);
  await page.check(`#dead-letters tr[data-id="${third}"] input[type=checkbox]`);
  await page.click('button:text("Replay selected")');
  await page.waitForFunction(() => /Replayed 1, 1 skipped/.test(document.getElementById("dlq-status").textContent));
  await step(`check-replayed ${third}`);
  await step(`check-not-delivered ${second}`);
  await page.waitForSelector(`#dead-letters tr[data-id="${second}"]`);

  // Purge asks first, then drops what is listed.
  await page.click('button:text("Purge…")');
  await page.waitForSelector("#confirm[open]");
  await page.screenshot({ path: join(shots, "purge-confirm.png") });
  await page.click("#confirm-ok");
  await page.waitForFunction(() => /Purged 2/.test(document.getElementById("dlq-status").textContent));
  await page.waitForSelector("#dead-letters", { state: "detached" });

  // Queues: depth per queue, records in per second, a work group's delayed message and
  // its acks, and a peek at the dead-letter queue's messages.
  await page.click('#nav a[href="#/queues"]');
  await step("queue-work");
  const group = '#app tr[data-queue="jobs"] [data-group="workers"]';
  await page.waitForFunction((sel) => /^workers: 2 \/ 0 \/ 1 \//.test(document.querySelector(sel)?.textContent || ""), group);
  await page.waitForSelector('#app figure.chart polyline.delivered', { state: "attached" });
  check(/acked by workers/.test(await page.textContent("#app .charts")), "the queue's chart shows the group's acks");
  check(await page.$('#app tr[data-queue="intake.api"] td[data-stat="in/s"]') !== null, "records in per second per queue");
  await page.click('button:text("Peek dead-letters")');
  await page.waitForSelector("details.panel summary");
  await page.click("details.panel summary");
  await page.screenshot({ path: join(shots, "queues.png"), fullPage: true });

  // Postgres sources: none in this config, and the page says so.
  await page.click('#nav a[href="#/sources"]');
  await page.waitForSelector("text=No postgres_cdc source");

  // Config: the running config without its secrets, and the validator's answer.
  await page.click('#nav a[href="#/config"]');
  await page.waitForSelector("#running-config");
  const shown = await page.textContent("#running-config");
  check(!shown.includes(token), "the running config shows the admin token");
  check(shown.includes('"admin_token": "***"'), "the admin token is masked");
  await page.fill("#config-text", '[sinks.x]\ntype = "webhook"\n');
  await page.click('button:text("Validate")');
  await page.waitForSelector("#validate-result ul.issues li");
  check(/sinks\.x/.test(await page.textContent("#validate-result")), "the problem names its key");
  await page.screenshot({ path: join(shots, "config.png"), fullPage: true });

  // Keyboard: on a fresh load (still logged in: the tab keeps its session) the first
  // Tab reaches the skip link, the next one the first page.
  await page.goto(`${url}/console#/overview`);
  await page.reload();
  await page.waitForSelector("#node-sinks-hook");
  await page.keyboard.press("Tab");
  check(await page.evaluate(() => document.activeElement.classList.contains("skip")), "Tab reaches the skip link first");
  await page.keyboard.press("Tab");
  check(await page.evaluate(() => document.activeElement.getAttribute("href") === "#/overview"), "then the first page link");

  // Phone width: one column, nothing wider than the screen.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForSelector("#node-sinks-hook");
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `the overview is ${overflow}px wider than a phone`);
  await page.screenshot({ path: join(shots, "overview-phone.png"), fullPage: true });
  const widerThanAPhone = () => page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await page.click('#nav a[href="#/dead-letters"]');
  await page.waitForSelector("#dlq-status", { state: "attached" });
  check((await widerThanAPhone()) <= 0, "the dead letters page is wider than a phone");
  await page.screenshot({ path: join(shots, "dead-letters-phone.png"), fullPage: true });
  for (const [hash, name] of [["#/pipelines/deliver", "pipeline"], ["#/queues", "queues"], ["#/config", "config"]]) {
    await page.goto(`${url}/console${hash}`);
    await page.waitForSelector("#app h1");
    await page.waitForFunction(() => document.getElementById("app").children.length > 1);
    const wider = await widerThanAPhone();
    check(wider <= 0, `the ${name} page is ${wider}px wider than a phone`);
    await page.screenshot({ path: join(shots, `${name}-phone.png`), fullPage: true });
  }
}

try {
  if (process.env.SCENARIO === "postgres") {
    await postgresScenario();
    check(problems.length === 0, `problems:\n${problems.join("\n")}`);
    console.error("console (postgres): every check passed");
  } else {
    await mainScenario();
    check(problems.length === 0, `problems:\n${problems.join("\n")}`);
    console.error("console: every check passed");
  }
} catch (e) {
  // What the page showed when a check failed, next to the other screenshots.
  await page.screenshot({ path: join(shots, "failure.png"), fullPage: true }).catch(() => {});
  console.error(`console: page ${page.url()}`);
  throw e;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(0);
