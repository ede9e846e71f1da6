#!/usr/bin/env node
// Headless-Chromium check of liveslice's built-in player page.
//
//   node browser/check-player.mjs http://127.0.0.1:8080 demo [SCREENSHOT_DIR]
//
// Opens /player/<session>?mode=<mode> for each mode (hls: hls.js, dash:
// dash.js, native: Chromium's own HLS player), side by side in one headless
// Chromium, and waits up to 30 s per mode until `window.liveslice` reports
// currentTime > 3 s and decoded frames > 0 while the video is really playing
// (over the last second it decoded frames and its time moved at about real
// time, so a seek does not count). Fails on any `window.liveslice.errors`
// entry, page error or request to a host other than 127.0.0.1. Screenshots
// each page (player-<mode>.png) and prints one JSON line per mode; exits 0
// only if every mode passed.
//
// Environment:
//   LIVESLICE_SCREENSHOT_DIR  screenshot directory (or the third argument;
//                             default browser/screenshots)
//   LIVESLICE_PLAYER_MODES    comma-separated modes (default hls,dash,native)
//   LIVESLICE_PLAYER_TIMEOUT  seconds to wait per mode (default 30)
//   LIVESLICE_AUDIO_MODES     comma-separated modes that must also decode
//                             audio (Chromium's webkitAudioDecodedByteCount
//                             > 0 while playing; default none)
//   CHROMIUM                  browser binary (default /usr/bin/chromium)

import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const [base, session, shotArg] = process.argv.slice(2);
if (!base || !session) {
  console.error("usage: node check-player.mjs HTTP_BASE_URL SESSION_ID [SCREENSHOT_DIR]");
  process.exit(2);
}
const baseUrl = new URL(base);
if (baseUrl.hostname !== "127.0.0.1") {
  console.error(`refusing ${base}: this check only talks to 127.0.0.1`);
  process.exit(2);
}
const shotDir = resolve(shotArg || process.env.LIVESLICE_SCREENSHOT_DIR || join(here, "screenshots"));
const modes = (process.env.LIVESLICE_PLAYER_MODES || "hls,dash,native").split(",").map(s => s.trim()).filter(Boolean);
const timeoutMs = Number(process.env.LIVESLICE_PLAYER_TIMEOUT || 30) * 1000;
const audioModes = (process.env.LIVESLICE_AUDIO_MODES || "").split(",").map(s => s.trim()).filter(Boolean);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
mkdirSync(shotDir, { recursive: true });

// Exactly these flags (Playwright's own defaults are not added).
// --host-resolver-rules: even with --disable-background-networking and
// --disable-component-update, Chromium 156 resolves accounts.google.com,
// clients2.google.com and update.googleapis.com at startup; this keeps every
// lookup and connection on 127.0.0.1. --remote-debugging-pipe and
// --no-startup-window are Playwright's control channel and launch mode.
const profile = mkdtempSync(join(tmpdir(), "liveslice-chromium-"));
const args = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-quic",
  "--no-first-run",
  "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
  `--user-data-dir=${profile}`,
  "--remote-debugging-pipe",
  "--no-startup-window",
];

const isLocal = url => {
  try {
    const u = new URL(url);
    return !/^(https?|wss?):$/.test(u.protocol) || u.hostname === "127.0.0.1";
  } catch {
    return true;
  }
};

async function checkMode(browser, mode) {
  const url = new URL(`/player/${encodeURIComponent(session)}?mode=${mode}`, baseUrl).href;
  const context = await browser.newContext({ viewport: { width: 1000, height: 700 } });
  const page = await context.newPage();
  const problems = [];
  const console_ = [];
  const offHost = [];
  const httpErrors = [];
  page.on("console", m => {
    console_.push(`${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", e => problems.push(`page error: ${e.message}`));
  page.on("crash", () => problems.push("page crashed"));
  page.on("request", r => {
    if (!isLocal(r.url())) offHost.push(r.url());
  });
  page.on("response", r => {
    // The page polls the manifest (404) until the first segment is complete.
    const path = new URL(r.url()).pathname;
    if (r.status() >= 400 && !(r.status() === 404 && /(\.m3u8|\.mpd|\/favicon\.ico)$/.test(path)))
      httpErrors.push(`${r.status()} ${r.url()}`);
  });
  page.on("requestfailed", r => {
    const f = r.failure()?.errorText || "";
    // Aborted requests are players cancelling their own loads (normal).
    if (!/ERR_ABORTED/.test(f)) httpErrors.push(`failed ${r.url()}: ${f}`);
  });

  const t0 = Date.now();
  let s = {};
  let firstTime = null;
  let ok = false;
  let advance = null;
  const samples = []; // [wall ms, video time, video frames, readyState, buffered]
  try {
    await page.goto(url, { waitUntil: "load", timeout: timeoutMs });
    while (Date.now() - t0 < timeoutMs) {
      s = await page.evaluate(() => {
        const l = window.liveslice || {};
        const v = document.querySelector("video");
        const q = v && v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : {};
        const b = [];
        for (let i = 0; v && i < v.buffered.length; i++)
          b.push(v.buffered.start(i).toFixed(2) + "-" + v.buffered.end(i).toFixed(2));
        return {
          started: !!l.started,
          errors: [...(l.errors || [])],
          // What the page reports (refreshed every 500 ms) ...
          currentTime: l.currentTime || 0,
          decodedFrames: l.decodedFrames || 0,
          audioBytes: v ? v.webkitAudioDecodedByteCount || 0 : 0,
          // ... and the video element right now.
          videoTime: v ? v.currentTime : 0,
          videoFrames: q.totalVideoFrames || 0,
          droppedFrames: q.droppedVideoFrames || 0,
          paused: v ? v.paused : true,
          seeking: v ? v.seeking : false,
          readyState: v ? v.readyState : 0,
          buffered: b.join(","),
          videoWidth: v ? v.videoWidth : 0,
          videoHeight: v ? v.videoHeight : 0,
          canPlayNativeHls: v ? v.canPlayType("application/vnd.apple.mpegurl") : "",
        };
      });
      const now = Date.now();
      samples.push([now - t0, s.videoTime, s.videoFrames, s.readyState, s.buffered]);
      if (s.errors.length) problems.push(...s.errors.map(e => `player: ${e}`));
      if (problems.length || offHost.length) break;
      if (firstTime === null && s.videoTime > 0) firstTime = s.videoTime;
      // The criterion (currentTime > 3 s, frames decoded), and that it
      // is real playback rather than a seek: over the last second or more of
      // wall-clock time the video decoded frames and its time moved forward
      // at about real-time pace (a long-running server starts players well
      // past 3 s, and live players seek to the live edge).
      const past = samples.findLast(([t]) => t <= now - t0 - 1000);
      const audioOk = !audioModes.includes(mode) || s.audioBytes > 0;
      if (past && audioOk && s.currentTime > 3 && s.decodedFrames > 0 && s.readyState >= 2 && !s.seeking) {
        const wall = (now - t0 - past[0]) / 1000;
        const moved = s.videoTime - past[1];
        const frames = s.videoFrames - past[2];
        if (frames >= 10 && moved >= 0.5 * wall && moved <= 2 * wall) {
          advance = { overMs: Math.round(wall * 1000), time: Number(moved.toFixed(3)), frames };
          ok = true;
          break;
        }
      }
      await page.waitForTimeout(250);
    }
  } catch (e) {
    problems.push(`check: ${e.message}`);
  }
  const elapsedMs = Date.now() - t0;
  if (!ok && !problems.length && !offHost.length)
    problems.push(`playback did not advance within ${timeoutMs / 1000} s`);
  if (offHost.length) problems.push(`requests off 127.0.0.1: ${offHost.join(", ")}`);
  const screenshot = join(shotDir, `player-${mode}.png`);
  try {
    await page.screenshot({ path: screenshot });
  } catch (e) {
    problems.push(`screenshot: ${e.message}`);
  }
  await context.close().catch(() => {});
  const passed = ok && problems.length === 0;
  const result = {
    mode,
    ok: passed,
    currentTime: Number((s.currentTime || 0).toFixed(3)),
    firstTime: firstTime === null ? null : Number(firstTime.toFixed(3)),
    decodedFrames: s.decodedFrames || 0,
    audioDecodedBytes: s.audioBytes || 0,
    droppedFrames: s.droppedFrames || 0,
    advance,
    videoSize: `${s.videoWidth || 0}x${s.videoHeight || 0}`,
    readyState: s.readyState || 0,
    paused: s.paused ?? null,
    canPlayNativeHls: s.canPlayNativeHls ?? "",
    elapsedMs,
    screenshot,
    errors: problems,
  };
  if (!passed) {
    result.httpErrors = httpErrors;
    result.console = console_.slice(-40);
    result.samples = samples.filter((_, i) => i % 4 === 0 || i === samples.length - 1);
  }
  return result;
}

let browser;
let allOk = false;
try {
  browser = await chromium.launch({
    executablePath,
    ignoreDefaultArgs: true,
    args,
    timeout: 30000,
  });
  // One fresh context per mode, run side by side.
  const results = await Promise.all(modes.map(m => checkMode(browser, m)));
  for (const r of results) console.log(JSON.stringify(r));
  allOk = results.length > 0 && results.every(r => r.ok);
} catch (e) {
  console.error(`check-player: ${e.stack || e}`);
} finally {
  if (browser) await browser.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
process.exit(allOk ? 0 : 1);
