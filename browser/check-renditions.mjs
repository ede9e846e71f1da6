#!/usr/bin/env node
// Headless-Chromium check that real players switch between a session's
// renditions when told to, and keep playing.
//
//   node browser/check-renditions.mjs http://127.0.0.1:8080 SESSION
//
// One page per player, with the players the server itself serves:
//
//   hls   hls.js on /live/SESSION/master.m3u8: `hls.currentLevel = i`
//   dash  dash.js on /live/SESSION/manifest.mpd: automatic switching off,
//         `setRepresentationForTypeByIndex("video", i, true)`
//
// Once a page plays, each rendition is forced in turn (lowest, highest,
// then the middle one): the player must report the switch, the picture
// size (video.videoWidth/Height) must become that rendition's, and playback
// must go on (currentTime advancing 2 s past the switch) with no fatal
// error. Prints one JSON line per player ({mode, ok, renditions, switches:
// [{to, width, height, shown, advanced}], errors}); exits 0 when both
// passed.
//
// Environment:
//   LIVESLICE_RENDITION_MODES  comma-separated modes (default hls,dash)
//   CHROMIUM                   browser binary (default /usr/bin/chromium)

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [base, session] = process.argv.slice(2);
if (!base || !session) {
  console.error("usage: node check-renditions.mjs HTTP_BASE_URL SESSION_ID");
  process.exit(2);
}
const baseUrl = new URL(base);
if (baseUrl.hostname !== "127.0.0.1") {
  console.error(`refusing ${base}: this check only talks to 127.0.0.1`);
  process.exit(2);
}
const modes = (process.env.LIVESLICE_RENDITION_MODES || "hls,dash")
  .split(",")
  .map(s => s.trim())
  .filter(Boolean);
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

// Runs in the page: starts the player and exposes window.r = {renditions(),
// select(i), current(), errors, video}.
function startPlayer({ mode, session }) {
  const v = document.createElement("video");
  v.muted = true;
  v.autoplay = true;
  v.playsInline = true;
  document.body.appendChild(v);
  const errors = [];
  window.r = { errors, video: v, switched: [] };
  const live = `/live/${encodeURIComponent(session)}`;
  if (mode === "hls") {
    const hls = new Hls();
    hls.on(Hls.Events.ERROR, (_, d) => {
      if (d.fatal) errors.push(`hls.js: ${d.type} ${d.details}`);
    });
    hls.on(Hls.Events.LEVEL_SWITCHED, (_, d) => window.r.switched.push(d.level));
    hls.loadSource(`${live}/master.m3u8`);
    hls.attachMedia(v);
    hls.on(Hls.Events.MANIFEST_PARSED, () => v.play().catch(() => {}));
    window.r.renditions = () => hls.levels.map(l => ({ width: l.width, height: l.height, bitrate: l.bitrate }));
    window.r.select = i => {
      hls.currentLevel = i;
    };
    window.r.current = () => hls.currentLevel;
  } else {
    const p = dashjs.MediaPlayer().create();
    p.updateSettings({ streaming: { abr: { autoSwitchBitrate: { video: false } } } });
    p.on(dashjs.MediaPlayer.events.ERROR, e => errors.push(`dash.js: ${JSON.stringify(e.error || e)}`));
    p.on(dashjs.MediaPlayer.events.QUALITY_CHANGE_RENDERED, e => {
      if (e.mediaType === "video") {
        const reps = p.getRepresentationsByType("video");
        window.r.switched.push(reps.findIndex(r => r.id === (e.newRepresentation && e.newRepresentation.id)));
      }
    });
    p.initialize(v, `${live}/manifest.mpd`, true);
    window.r.renditions = () =>
      (p.getRepresentationsByType("video") || []).map(r => ({ width: r.width, height: r.height, bitrate: r.bandwidth }));
    window.r.select = i => p.setRepresentationForTypeByIndex("video", i, true);
    window.r.current = () => {
      const cur = p.getCurrentRepresentationForType("video");
      return cur ? p.getRepresentationsByType("video").findIndex(r => r.id === cur.id) : -1;
    };
  }
}

async function check(browser, mode) {
  const context = await browser.newContext({ viewport: { width: 640, height: 400 } });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", e => problems.push(`page error: ${e.message}`));
  const switches = [];
  let renditions = [];
  const state = () =>
    page.evaluate(() => ({
      time: window.r.video.currentTime,
      paused: window.r.video.paused,
      width: window.r.video.videoWidth,
      height: window.r.video.videoHeight,
      switched: window.r.switched.slice(),
      current: window.r.current(),
      errors: window.r.errors.slice(),
    }));
  try {
    await page.goto(new URL("/time", baseUrl).href);
    await page.setContent("<!doctype html><html><body></body></html>");
    const asset = mode === "hls" ? "/assets/hls.min.js" : "/assets/dash.mediaplayer.min.js";
    await page.addScriptTag({ url: new URL(asset, baseUrl).href });
    await page.evaluate(startPlayer, { mode, session });
    // Up to 20 s to start playing.
    const t0 = Date.now();
    for (;;) {
      const s = await state();
      if (s.errors.length) throw new Error(s.errors.join("; "));
      if (!s.paused && s.time > 1) break;
      if (Date.now() - t0 > 20_000) throw new Error("never played");
      await page.waitForTimeout(250);
    }
    renditions = await page.evaluate(() => window.r.renditions());
    if (renditions.length < 2) throw new Error(`only ${renditions.length} rendition(s) listed`);
    const byHeight = renditions.map((r, i) => [r.height, i]).sort((a, b) => a[0] - b[0]);
    const order = [byHeight[0][1], byHeight[byHeight.length - 1][1]];
    if (byHeight.length > 2) order.push(byHeight[1][1]);
    for (const to of order) {
      const want = renditions[to];
      await page.evaluate(i => window.r.select(i), to);
      const since = Date.now();
      let shown = null;
      let advanced = false;
      let at = null;
      while (Date.now() - since < 20_000) {
        const s = await state();
        if (s.errors.length) throw new Error(s.errors.join("; "));
        if (shown === null && s.width === want.width && s.height === want.height) {
          shown = (Date.now() - since) / 1000;
          at = s.time;
        }
        if (shown !== null && s.time - at >= 2 && !s.paused) {
          advanced = true;
          break;
        }
        await page.waitForTimeout(250);
      }
      const s = await state();
      switches.push({
        to,
        width: want.width,
        height: want.height,
        reported: s.switched.includes(to),
        shown,
        advanced,
      });
    }
  } catch (e) {
    problems.push(`check: ${e.message}`);
  }
  await context.close().catch(() => {});
  const ok =
    problems.length === 0 &&
    switches.length >= 2 &&
    switches.every(s => s.reported && s.shown !== null && s.advanced);
  return { mode, ok, renditions, switches, errors: problems };
}

const browser = await chromium.launch({ executablePath, args, ignoreDefaultArgs: true, headless: true });
let allOk = true;
try {
  const results = await Promise.all(modes.map(m => check(browser, m)));
  for (const r of results) {
    console.log(JSON.stringify(r));
    allOk &&= r.ok;
  }
} finally {
  await browser.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
process.exit(allOk ? 0 : 1);
