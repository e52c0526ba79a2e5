// Drives the built-in chat page (GET /) of a server whose model takes
// images, in headless Chromium with playwright-core: the attach button is
// shown, an image file is attached (thumbnail, removable), sent with the
// text as OpenAI content parts (image first), answered; a second turn
// resends the history with the image. Writes a screenshot.
//   node chat_page_image_check.mjs URL CHROMIUM IMAGE SCREENSHOT
import { chromium } from "playwright-core";

const [url, exe, image, shot] = process.argv.slice(2);
const fail = (m) => { console.error("FAILED: " + m); process.exit(1); };
const browser = await chromium.launch({ executablePath: exe, args: ["--no-sandbox"] });
const page = await browser.newPage({ viewport: { width: 1100, height: 720 } });
const bodies = [];
page.on("request", (r) => { if (r.url().endsWith("/v1/chat/completions")) bodies.push(JSON.parse(r.postData())); });
const errors = [];
page.on("pageerror", (e) => errors.push(String(e)));

await page.goto(url + "/");
await page.waitForSelector("#attach:not([hidden])", { timeout: 10000 }).catch(() => fail("no attach button for a model that takes images"));
await page.fill("#maxtokens", "6");
await page.dispatchEvent("#maxtokens", "change");
// Attach twice, remove one: one image goes.
await page.setInputFiles("#file", [image, image]);
await page.waitForFunction(() => document.querySelectorAll("#attached .thumb").length === 2);
await page.click("#attached .thumb >> nth=1");
if ((await page.locator("#attached .thumb").count()) !== 1) fail("removing an attached image");

async function ask(text) {
  const before = await page.locator(".msg.assistant[data-done]").count();
  await page.fill("#input", text);
  await page.press("#input", "Enter");
  await page.waitForFunction((n) => document.querySelectorAll(".msg.assistant[data-done]").length > n, before, { timeout: 60000 });
  const last = page.locator(".msg.assistant").last();
  return { reply: await last.locator(".content").textContent(), error: await last.evaluate((e) => e.classList.contains("error")) };
}
const a = await ask("What is in this picture?");
if (a.error) fail("reply is an error: " + a.reply);
const parts = bodies[0].messages[0].content;
if (!Array.isArray(parts) || parts.length !== 2 || parts[0].type !== "image_url" || !parts[0].image_url.url.startsWith("data:image/") || parts[1].text !== "What is in this picture?")
  fail("the image was not sent as content parts: " + JSON.stringify(parts).slice(0, 200));
if ((await page.locator("#attached .thumb").count()) !== 0) fail("the attachment was not cleared after sending");
if ((await page.locator(".msg.user .thumb").count()) !== 1) fail("no thumbnail in the user's message");
const b = await ask("And its colours?");
if (b.error) fail("second reply is an error: " + b.reply);
const again = bodies[1].messages;
if (again.length !== 3 || !Array.isArray(again[0].content) || again[2].content !== "And its colours?") fail("history with the image not resent: " + JSON.stringify(again).slice(0, 300));
await page.screenshot({ path: shot });
if (errors.length) fail("page errors: " + errors.join("; "));
console.log(JSON.stringify({ first: a, second: b }));
console.log("chat page with images OK");
await browser.close();
