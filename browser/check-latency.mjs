#!/usr/bin/env node
// Headless-Chromium measurement of live latency in real players.
//
//   node browser/check-latency.mjs http://127.0.0.1:8080 SESSION [SECONDS]
//
// Plays the session side by side in one headless Chromium, one page per
// mode, with the players the server itself serves (/assets/…):
//
//   hls-ll   hls.js, lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5 (parts, blocking reload)
//   hls      hls.js, lowLatencyMode: false   (the same URL, whole segments)
//   dash-ll  dash.js, its low-latency mode    (manifest.mpd)
//
// Once a page plays, it samples every 250 ms for SECONDS (default 30) the
// live latency: wall clock minus the program date time of the frame on
// screen (hls.js `hls.playingDate`; dash.js `getCurrentLiveLatency()`, which
// is the same thing from the MPD's availability start). Prints one JSON
// line per mode ({mode, ok, p50, p90, min, max, samples, stalls, errors});
// exits 0 when every mode played.
//
// Environment:
//   LIVESLICE_LATENCY_MODES  comma-separated modes (default hls-ll,hls,dash-ll);
//                            MODE@URL plays that mode from another server's
//                            HTTP base URL (127.0.0.1 only), e.g. two edges
//                            of a cluster: hls-ll,hls-ll@http://127.0.0.1:8081
//                            (each result line then carries its `base`)
//   CHROMIUM                 browser binary (default /usr/bin/chromium)

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [base, session, secondsArg] = process.argv.slice(2);
if (!base || !session) {
  console.error("usage: node check-latency.mjs HTTP_BASE_URL SESSION_ID [SECONDS]");
  process.exit(2);
}
function loopbackUrl(text) {
  const url = new URL(text);
  if (url.hostname !== "127.0.0.1") {
    console.error(`refusing ${text}: this check only talks to 127.0.0.1`);
    process.exit(2);
  }
  return url;
}
const baseUrl = loopbackUrl(base);
const seconds = Number(secondsArg || 30);
// Each entry: {mode, base} (MODE or MODE@BASE_URL).
const modes = (process.env.LIVESLICE_LATENCY_MODES || "hls-ll,hls,dash-ll")
  .split(",")
  .map(s => s.trim())
  .filter(Boolean)
  .map(entry => {
    const at = entry.indexOf("@");
    return at < 0
      ? { mode: entry, base: baseUrl, own: false }
      : { mode: entry.slice(0, at), base: loopbackUrl(entry.slice(at + 1)), own: true };
  });
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

// As browser/check-player.mjs: exactly these flags, every lookup on 127.0.0.1.
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
  "--autoplay-policy=no-user-gesture-required",
  "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
  `--user-data-dir=${profile}`,
  "--remote-debugging-pipe",
  "--no-startup-window",
];

// Runs in the page: starts the player, exposes window.ll = {latency(), errors}.
function startPlayer({ mode, session }) {
  const v = document.createElement("video");
  v.muted = true;
  v.autoplay = true;
  v.playsInline = true;
  document.body.appendChild(v);
  const errors = [];
  window.ll = { errors, video: v, stalls: 0 };
  v.addEventListener("waiting", () => window.ll.stalls++);
  const live = `/live/${encodeURIComponent(session)}`;
  if (mode.startsWith("hls")) {
    // hls.js defaults otherwise: the README's player settings (for low
    // latency, `maxLiveSyncPlaybackRate: 1.5` so a slow start is caught up
    // instead of kept for the whole run).
    const hls = new Hls(
      mode === "hls-ll"
        ? { lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5 }
        : { lowLatencyMode: false },
    );
    hls.on(Hls.Events.ERROR, (_, d) => {
      if (d.fatal) errors.push(`hls.js: ${d.type} ${d.details}`);
    });
    hls.loadSource(`${live}/index.m3u8`);
    hls.attachMedia(v);
    hls.on(Hls.Events.MANIFEST_PARSED, () => v.play().catch(() => {}));
    window.ll.latency = () => {
      const d = hls.playingDate;
      return d ? (Date.now() - d.getTime()) / 1000 : null;
    };
    window.ll.playerLatency = () => hls.latency;
  } else {
    const p = dashjs.MediaPlayer().create();
    p.updateSettings({
      streaming: {
        delay: { liveDelay: undefined },
        liveCatchup: { enabled: true },
        lowLatencyEnabled: true,
      },
    });
    p.on(dashjs.MediaPlayer.events.ERROR, e => errors.push(`dash.js: ${JSON.stringify(e.error || e)}`));
    // dash.js starts on the video element's own play event (see
    // ../shared notes): autoplay, no play() of our own.
    p.initialize(v, `${live}/manifest.mpd`, true);
    window.ll.latency = () => {
      const l = p.getCurrentLiveLatency();
      return Number.isFinite(l) && l > 0 ? l : null;
    };
    window.ll.playerLatency = () => p.getCurrentLiveLatency();
    window.ll.lowLatencyMode = () => {
      try {
        return p.getLowLatencyModeEnabled ? p.getLowLatencyModeEnabled() : null;
      } catch {
        return null;
      }
    };
  }
}

function quantile(sorted, q) {
  if (!sorted.length) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.round(q * (sorted.length - 1))));
  return Number(sorted[i].toFixed(3));
}

async function measure(browser, { mode, base: pageBase, own }) {
  const context = await browser.newContext({ viewport: { width: 640, height: 400 } });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", e => problems.push(`page error: ${e.message}`));
  const samples = [];
  let lowLatencyMode = null;
  let started = null;
  try {
    await page.goto(new URL("/time", pageBase).href);
    await page.setContent("<!doctype html><html><body></body></html>");
    const asset = mode.startsWith("hls") ? "/assets/hls.min.js" : "/assets/dash.mediaplayer.min.js";
    await page.addScriptTag({ url: new URL(asset, pageBase).href });
    await page.evaluate(startPlayer, { mode, session });
    const t0 = Date.now();
    // Up to 20 s to start playing, then SECONDS of samples.
    while (Date.now() - t0 < 20_000 + seconds * 1000) {
      const s = await page.evaluate(() => ({
        latency: window.ll.latency(),
        time: window.ll.video.currentTime,
        paused: window.ll.video.paused,
        errors: window.ll.errors.slice(),
        lowLatencyMode: window.ll.lowLatencyMode ? window.ll.lowLatencyMode() : null,
      }));
      if (s.errors.length) {
        problems.push(...s.errors);
        break;
      }
      if (s.lowLatencyMode !== null) lowLatencyMode = s.lowLatencyMode;
      const playing = !s.paused && s.time > 0 && s.latency !== null;
      if (playing && started === null) started = Date.now();
      if (started !== null && s.latency !== null) samples.push(s.latency);
      if (started !== null && Date.now() - started >= seconds * 1000) break;
      await page.waitForTimeout(250);
    }
  } catch (e) {
    problems.push(`check: ${e.message}`);
  }
  const stalls = await page.evaluate(() => window.ll && window.ll.stalls).catch(() => null);
  await context.close().catch(() => {});
  if (started === null && !problems.length) problems.push("never played");
  const sorted = [...samples].sort((a, b) => a - b);
  const result = {
    mode,
    ok: problems.length === 0 && samples.length > 0,
    p50: quantile(sorted, 0.5),
    p90: quantile(sorted, 0.9),
    min: quantile(sorted, 0),
    max: quantile(sorted, 1),
    samples: samples.length,
    stalls,
    errors: problems,
  };
  if (own) result.base = pageBase.origin;
  if (lowLatencyMode !== null) result.lowLatencyMode = lowLatencyMode;
  return result;
}

const browser = await chromium.launch({ executablePath, args, ignoreDefaultArgs: true, headless: true });
let allOk = true;
try {
  const results = await Promise.all(modes.map(m => measure(browser, m)));
  for (const r of results) {
    console.log(JSON.stringify(r));
    allOk &&= r.ok;
  }
} finally {
  await browser.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
process.exit(allOk ? 0 : 1);
