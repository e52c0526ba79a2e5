// Drives the built-in chat page (GET /) in headless Chromium with
// playwright-core: enters the API key, sends two messages (multi-turn),
// checks the streamed replies, the tokens/s line, the stop button, the
// system prompt and the settings reaching the request; writes a screenshot.
//   node chat_page_check.mjs URL API_KEY CHROMIUM SCREENSHOT
import { chromium } from "playwright-core";

const [url, key, exe, shot] = process.argv.slice(2);
const fail = (m) => { console.error("FAILED: " + m); process.exit(1); };
const browser = await chromium.launch({ executablePath: exe, args: ["--no-sandbox"] });
const page = await browser.newPage({ viewport: { width: 1100, height: 720 } });
const external = [];
page.on("request", (r) => { if (!r.url().startsWith(url)) external.push(r.url()); });
const bodies = [];
page.on("request", (r) => { if (r.url().endsWith("/v1/chat/completions")) bodies.push(JSON.parse(r.postData())); });
const errors = [];
page.on("pageerror", (e) => errors.push(String(e)));

await page.goto(url + "/");
await page.fill("#apikey", key);
await page.dispatchEvent("#apikey", "change");
await page.waitForFunction(() => !["…", "enter the API key", "server unreachable"].includes(document.getElementById("model").textContent));
const model = await page.textContent("#model");
await page.fill("#system", "You are a helpful assistant.");
await page.dispatchEvent("#system", "change");
await page.fill("#maxtokens", "24");
await page.dispatchEvent("#maxtokens", "change");

async function ask(text) {
  const before = await page.locator(".msg.assistant[data-done]").count();
  await page.fill("#input", text);
  await page.press("#input", "Enter");
  await page.waitForFunction((n) => document.querySelectorAll(".msg.assistant[data-done]").length > n, before, { timeout: 60000 });
  const last = page.locator(".msg.assistant").last();
  return { reply: await last.locator(".content").textContent(), error: await last.evaluate((e) => e.classList.contains("error")),
           stats: await page.locator(".stats").last().textContent() };
}

const a = await ask("Hello! What is the capital of France?");
if (a.error) fail("first reply is an error: " + a.reply);
if (!a.reply.trim()) fail("first reply is empty");
if (!/tokens\/s/.test(a.stats)) fail("no tokens/s line: " + a.stats);
const b = await ask("And of Italy?");
if (b.error || !b.reply.trim()) fail("second reply: " + b.reply);
const sent = bodies[1];
if (!sent || sent.messages.length !== 4 || sent.messages[0].role !== "system" || sent.messages[2].role !== "assistant") fail("history not sent: " + JSON.stringify(sent));
if (!sent.stream || sent.max_tokens !== 24 || typeof sent.temperature !== "number") fail("settings not sent: " + JSON.stringify(sent));

// Stop: a long reply cut off by the button.
await page.fill("#maxtokens", "400");
await page.dispatchEvent("#maxtokens", "change");
const n = await page.locator(".msg.assistant[data-done]").count();
await page.fill("#input", "Write a long story about a dragon.");
await page.press("#input", "Enter");
await page.waitForFunction(() => { const c = document.querySelectorAll(".msg.assistant .content"); return c.length && c[c.length - 1].textContent.length > 0; }, null, { timeout: 60000 });
await page.click("#stop");
await page.waitForFunction((k) => document.querySelectorAll(".msg.assistant[data-done]").length > k, n, { timeout: 30000 });
const stopped = await page.locator(".stats").last().textContent();
if (!/stopped/.test(stopped)) fail("stop did not stop: " + stopped);
await page.fill("#maxtokens", "24");
await page.dispatchEvent("#maxtokens", "change");
await page.screenshot({ path: shot });
if (external.length) fail("the page fetched other origins: " + external.join(", "));
if (errors.length) fail("page errors: " + errors.join("; "));
console.log(JSON.stringify({ model, first: a, second: b, stopped }, null, 1));
console.log("chat page OK");
await browser.close();
