#!/usr/bin/env python3
"""Latency a ladder rendition adds (bench/ladder.sh): polls the source's and
one rung's LL-HLS media playlists every 10 ms and notes when each segment
and each part is first listed; prints the rung's delay behind the source,
part by part (media sequence number, part index) and segment by segment:
p50, p90, max in ms.

    ladder_latency.py http://127.0.0.1:8391/live/SESSION 480p

Stops when both playlists end (#EXT-X-ENDLIST) or after 150 s.
"""
import sys
import threading
import time
import urllib.error
import urllib.request


def listed(text):
    """Keys of what a media playlist lists: ("seg", msn) and ("part", msn, k)."""
    msn, k, keys = 0, 0, []
    for line in text.splitlines():
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            msn = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-PART:"):
            keys.append(("part", msn, k))
            k += 1
        elif line and not line.startswith("#"):
            keys.append(("seg", msn))
            msn, k = msn + 1, 0
    return keys


def poll(url, seen, done):
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                text = r.read().decode()
        except (urllib.error.URLError, OSError):
            time.sleep(0.01)
            continue
        now = time.monotonic()
        for key in listed(text):
            seen.setdefault(key, now)
        if "#EXT-X-ENDLIST" in text:
            break
        time.sleep(0.01)
    done.set()


def stats(delays):
    if not delays:
        return "none"
    d = sorted(delays)
    pick = lambda q: d[min(len(d) - 1, int(q * len(d)))]
    return (f"p50 {pick(0.5) * 1000:.0f} ms, p90 {pick(0.9) * 1000:.0f} ms, "
            f"max {d[-1] * 1000:.0f} ms over {len(d)}")


def main():
    base, rung = sys.argv[1], sys.argv[2]
    source, ladder = {}, {}
    threads = []
    for url, seen in ((f"{base}/index.m3u8", source), (f"{base}~{rung}/index.m3u8", ladder)):
        done = threading.Event()
        t = threading.Thread(target=poll, args=(url, seen, done), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    for kind in ("part", "seg"):
        delays = [ladder[k] - source[k] for k in sorted(ladder) if k[0] == kind and k in source]
        print(f"{rung} rung behind the source, {kind}s: {stats(delays)}")
        if len(sys.argv) > 3:
            print(" ".join(f"{d * 1000:.0f}" for d in delays))


if __name__ == "__main__":
    main()
