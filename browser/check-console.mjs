#!/usr/bin/env node
// Headless-Chromium check of liveslice's web console.
//
//   node browser/check-console.mjs http://127.0.0.1:8080 demo [SCREENSHOT_DIR]
//
// With a live session SESSION on the server:
// - console: `/` lists SESSION and its numbers move (frames grow between two
//   reads a few seconds apart, the page polled /api/sessions more than once);
// - plots: `/player/SESSION?mode=hls` and `?mode=dash` play, their SVG plots
//   are drawn (a bar per segment, points per segment), the manifests are
//   shown; and how far behind live each player sits is read (hls.js from
//   EXT-X-PROGRAM-DATE-TIME, dash.js getCurrentLiveLatency(); and both as
//   the distance from currentTime to the end of the seekable range);
// - not-found: `/player/<unknown>` answers 404 with a page linking back to `/`.
// Screenshots: console.png, console-dark.png, player-hls-console.png,
// not-found.png. Prints one JSON line per check; exits 0 only if all passed.
//
// Environment: LIVESLICE_SCREENSHOT_DIR (or the third argument),
// LIVESLICE_CONSOLE_SETTLE (seconds of playback before reading latency,
// default 8), CHROMIUM (default /usr/bin/chromium).

import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const [base, session, shotArg] = process.argv.slice(2);
if (!base || !session) {
  console.error("usage: node check-console.mjs HTTP_BASE_URL SESSION_ID [SCREENSHOT_DIR]");
  process.exit(2);
}
const baseUrl = new URL(base);
if (baseUrl.hostname !== "127.0.0.1") {
  console.error(`refusing ${base}: this check only talks to 127.0.0.1`);
  process.exit(2);
}
const shotDir = resolve(shotArg || process.env.LIVESLICE_SCREENSHOT_DIR || join(here, "screenshots"));
const settleS = Number(process.env.LIVESLICE_CONSOLE_SETTLE || 8);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
mkdirSync(shotDir, { recursive: true });

// The same flags as check-player.mjs (see there): nothing leaves 127.0.0.1.
const profile = mkdtempSync(join(tmpdir(), "liveslice-chromium-"));
const args = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
  "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
  `--user-data-dir=${profile}`, "--remote-debugging-pipe", "--no-startup-window",
];
const url = p => new URL(p, baseUrl).href;
const sleep = ms => new Promise(r => setTimeout(r, ms));

async function open(browser, path, scheme = "light", viewport = { width: 1280, height: 720 }) {
  const context = await browser.newContext({ viewport, colorScheme: scheme });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", e => problems.push(`page error: ${e.message}`));
  page.on("request", r => {
    const u = new URL(r.url());
    if (/^https?:$/.test(u.protocol) && u.hostname !== "127.0.0.1") problems.push(`request off 127.0.0.1: ${r.url()}`);
  });
  const response = await page.goto(url(path), { waitUntil: "load", timeout: 20000 });
  return { context, page, problems, response };
}

async function checkConsole(browser) {
  const r = { check: "console", ok: false, errors: [] };
  const { context, page, problems } = await open(browser, "/");
  try {
    const read = () => page.evaluate(id => {
      const row = [...document.querySelectorAll("tr[data-session]")].find(t => t.dataset.session === id);
      const c = window.livesliceConsole || {};
      if (!row) return { row: false, polls: c.polls || 0, errors: c.errors || [] };
      const v = k => row.querySelector("." + k);
      return {
        row: true, polls: c.polls || 0, errors: c.errors || [],
        frames: Number(v("frames").dataset.v), bitrate: v("bitrate").textContent,
        fps: v("fps").textContent, latency: v("latency").textContent, state: row.querySelector(".badge").textContent,
      };
    }, session);
    let a = await read();
    for (let i = 0; !a.row && i < 40; i++) { await sleep(250); a = await read(); }
    if (!a.row) throw new Error(`no row for ${session}`);
    await sleep(3000);
    const b = await read();
    r.first = a; r.second = b;
    if (!(b.frames > a.frames)) r.errors.push(`frames did not move: ${a.frames} then ${b.frames}`);
    if (!(b.polls >= 2)) r.errors.push(`polled /api/sessions ${b.polls} times in 3 s`);
    if (b.state !== "live") r.errors.push(`state ${b.state}`);
    if (!/[kM]b\/s/.test(b.bitrate)) r.errors.push(`no bitrate: ${b.bitrate}`);
    r.errors.push(...b.errors);
    await page.screenshot({ path: join(shotDir, "console.png") });
    const dark = await open(browser, "/", "dark");
    await sleep(1500);
    await dark.page.screenshot({ path: join(shotDir, "console-dark.png") });
    problems.push(...dark.problems);
    await dark.context.close();
  } catch (e) {
    r.errors.push(`check: ${e.message}`);
  }
  r.errors.push(...problems);
  await context.close().catch(() => {});
  r.ok = r.errors.length === 0;
  return r;
}

async function checkPlayer(browser, mode) {
  const r = { check: `plots-${mode}`, ok: false, errors: [] };
  const { context, page, problems } = await open(browser, `/player/${encodeURIComponent(session)}?mode=${mode}`,
    "light", { width: 1280, height: 1400 });
  try {
    const read = () => page.evaluate(() => {
      const l = window.liveslice || {};
      const st = l.stats || {};
      return {
        currentTime: l.currentTime || 0, decodedFrames: l.decodedFrames || 0, errors: [...(l.errors || [])],
        latency: l.latency ?? null, behindEdge: l.behindEdge ?? null, polls: st.polls || 0,
        durationBars: document.querySelectorAll("#durations rect.bar").length,
        rateDots: document.querySelectorAll("#rates circle").length,
        dropBars: document.querySelectorAll("#drops rect").length,
        segments: st.last ? st.last.segment_list.length : 0,
        hls: document.getElementById("hls-text").textContent.slice(0, 7),
        dash: document.getElementById("dash-text").textContent.slice(0, 5),
      };
    });
    const t0 = Date.now();
    let s = await read();
    // Playing, then `settle` seconds more for the player to reach its
    // steady distance from live.
    while (Date.now() - t0 < 30000 && !(s.currentTime > 3 && s.decodedFrames > 0) && !s.errors.length) {
      await sleep(250);
      s = await read();
    }
    if (!(s.currentTime > 3)) r.errors.push(`did not play: currentTime ${s.currentTime}`);
    await sleep(settleS * 1000);
    const samples = [];
    for (let i = 0; i < 5; i++) { samples.push(await read()); await sleep(500); }
    s = samples[samples.length - 1];
    const avg = k => {
      const v = samples.map(x => x[k]).filter(x => x != null);
      return v.length ? Number((v.reduce((a, b) => a + b, 0) / v.length).toFixed(2)) : null;
    };
    r.latencyS = avg("latency");
    r.behindEdgeS = avg("behindEdge");
    r.state = s;
    if (s.errors.length) r.errors.push(...s.errors.map(e => `player: ${e}`));
    if (!(s.polls >= 2)) r.errors.push(`stats polled ${s.polls} times`);
    if (!(s.segments > 0 && s.durationBars === s.segments)) r.errors.push(`${s.durationBars} duration bars for ${s.segments} segments`);
    if (!(s.rateDots === 2 * s.segments)) r.errors.push(`${s.rateDots} rate points for ${s.segments} segments`);
    if (!(s.dropBars > 1)) r.errors.push(`${s.dropBars} drop samples`);
    if (s.hls !== "#EXTM3U") r.errors.push(`HLS manifest not shown: ${s.hls}`);
    if (s.dash !== "<?xml") r.errors.push(`MPD not shown: ${s.dash}`);
    if (mode === "hls") await page.screenshot({ path: join(shotDir, "player-hls-console.png"), fullPage: true });
  } catch (e) {
    r.errors.push(`check: ${e.message}`);
  }
  r.errors.push(...problems);
  await context.close().catch(() => {});
  r.ok = r.errors.length === 0;
  return r;
}

async function checkNotFound(browser) {
  const r = { check: "not-found", ok: false, errors: [] };
  const missing = `no-such-${session}`;
  const t0 = Date.now();
  const { context, page, problems, response } = await open(browser, `/player/${missing}`);
  try {
    r.status = response ? response.status() : null;
    r.waitedMs = Date.now() - t0;
    const info = await page.evaluate(() => ({
      title: document.title,
      text: (document.getElementById("not-found") || {}).textContent || "",
      back: [...document.querySelectorAll("a")].some(a => new URL(a.href).pathname === "/"),
      video: !!document.querySelector("video"),
    }));
    if (r.status !== 404) r.errors.push(`status ${r.status}`);
    if (!info.text.includes(missing)) r.errors.push(`page does not name ${missing}: ${info.text.slice(0, 80)}`);
    if (!info.back) r.errors.push("no link back to /");
    if (info.video) r.errors.push("a player on the 404 page");
    await page.screenshot({ path: join(shotDir, "not-found.png") });
  } catch (e) {
    r.errors.push(`check: ${e.message}`);
  }
  r.errors.push(...problems);
  await context.close().catch(() => {});
  r.ok = r.errors.length === 0;
  return r;
}

let browser;
let allOk = false;
try {
  browser = await chromium.launch({ executablePath, ignoreDefaultArgs: true, args, timeout: 30000 });
  const results = await Promise.all([
    checkConsole(browser), checkPlayer(browser, "hls"), checkPlayer(browser, "dash"), checkNotFound(browser),
  ]);
  for (const r of results) console.log(JSON.stringify(r));
  allOk = results.every(r => r.ok);
} catch (e) {
  console.error(`check-console: ${e.stack || e}`);
} finally {
  if (browser) await browser.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
process.exit(allOk ? 0 : 1);
