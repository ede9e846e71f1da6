#!/usr/bin/env python3
"""A liveslice client in Python (grpcio): publish an H.264 file, or follow a session.

    python3 client.py publish   --server 127.0.0.1:50051 --session cam1 stream.h264
    python3 client.py subscribe --server 127.0.0.1:50051 --session cam1 [--count N]

With auth on, add --token TOKEN (or set LIVESLICE_TOKEN): it is sent as
`authorization: Bearer TOKEN` metadata. With TLS on, use --tls (the system's
roots) or --ca FILE (a private CA or self-signed certificate, PEM); an
https:// server address also turns TLS on.

The gRPC stubs are generated from the repository's proto/ with grpcio-tools at
start-up, into a temporary directory (or into $LIVESLICE_STUBS, reused when it
already holds them), so no generated code is committed. Output is one line per
response, `kind key=value ...`, easy to read and to grep.
"""

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTO = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
PROTO_FILE = os.path.join("liveslice", "v1", "slicer.proto")


def load_stubs(proto_dir):
    """Imports liveslice.v1's messages and service stub, generating them first."""
    out = os.environ.get("LIVESLICE_STUBS")
    if not out:
        out = tempfile.mkdtemp(prefix="liveslice-stubs-")
        atexit.register(shutil.rmtree, out, ignore_errors=True)
    if not os.path.exists(os.path.join(out, "liveslice", "v1", "slicer_pb2_grpc.py")):
        from grpc_tools import protoc

        os.makedirs(out, exist_ok=True)
        rc = protoc.main(
            [
                "grpc_tools.protoc",
                "-I" + proto_dir,
                "--python_out=" + out,
                "--grpc_python_out=" + out,
                os.path.join(proto_dir, PROTO_FILE),
            ]
        )
        if rc != 0:
            sys.exit("client.py: generating stubs from %s failed" % proto_dir)
    sys.path.insert(0, out)
    from liveslice.v1 import slicer_pb2, slicer_pb2_grpc

    return slicer_pb2, slicer_pb2_grpc


def access_units(data):
    """Splits an Annex B stream into access units (H.264 7.4.1.2.3): a new one
    starts at an AUD/SPS/PPS/SEI after a picture's slices, or at a slice with
    first_mb_in_slice == 0 after another slice."""
    starts = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)
    units, begin, prev_vcl = [], 0, False
    for n, s in enumerate(starts):
        if s >= len(data):
            break
        nal_type = data[s] & 0x1F
        vcl = 1 <= nal_type <= 5
        first_mb_zero = vcl and s + 1 < len(data) and data[s + 1] & 0x80 != 0
        new_au = prev_vcl and (nal_type in (6, 7, 8, 9, 14, 15) or first_mb_zero)
        if new_au:
            # Back up to the start code (and a leading zero byte of a 4-byte one).
            cut = s - 3
            if cut > 0 and data[cut - 1] == 0:
                cut -= 1
            units.append(data[begin:cut])
            begin = cut
        if vcl:
            prev_vcl = True
        elif nal_type in (6, 7, 8, 9, 14, 15):
            prev_vcl = False
    units.append(data[begin:])
    return [u for u in units if u]


def target(args):
    """host:port for grpcio, and whether to use TLS (https://, --tls or --ca)."""
    server, tls = args.server, bool(args.tls or args.ca)
    if server.startswith("https://"):
        server, tls = server[len("https://"):], True
    elif server.startswith("http://"):
        server = server[len("http://"):]
    return server.rstrip("/"), tls


def connect(pb2_grpc, args):
    import grpc

    server, tls = target(args)
    options = [("grpc.max_receive_message_length", 64 << 20)]
    if tls:
        root = None
        if args.ca:
            with open(args.ca, "rb") as f:
                root = f.read()
        channel = grpc.secure_channel(
            server, grpc.ssl_channel_credentials(root_certificates=root), options=options)
    else:
        channel = grpc.insecure_channel(server, options=options)
    grpc.channel_ready_future(channel).result(timeout=10)
    return channel, pb2_grpc.SliceServiceStub(channel)


def metadata(args):
    """The bearer token as call metadata (none without a token)."""
    return [("authorization", "Bearer " + args.token)] if args.token else None


def describe(pb2, r):
    """One line for one SliceResponse."""
    kind = r.WhichOneof("event")
    if kind == "frame" or (kind is None and r.data):
        f = r.frame
        return "frame index=%d pts_90k=%d dts_90k=%d keyframe=%s bytes=%d timestamp_ns=%d" % (
            f.index, f.pts_90k, f.dts_90k, str(r.is_keyframe).lower(), len(r.data), r.timestamp_ns)
    if kind == "publish_ack":
        a = r.publish_ack
        return "ack session=%s resumed=%s segment_target_ms=%d window=%d" % (
            a.session_id, str(a.resumed).lower(), a.segment_target_ms, a.window_segments)
    if kind == "session_info":
        i = r.session_info
        return "info session=%s codec=%s size=%dx%d fps=%d/%d changed=%s start_frame=%d" % (
            i.session_id, i.codec, i.width, i.height, i.frame_rate_num, i.frame_rate_den,
            str(i.changed).lower(), i.start_frame_index)
    if kind == "segment_ready":
        s = r.segment_ready
        return "segment sequence=%d frames=%d duration_90k=%d bytes=%d uri=%s" % (
            s.sequence, s.frame_count, s.duration_90k, s.byte_size, s.uri_cmaf)
    if kind == "manifest_delta":
        d = r.manifest_delta
        return "manifest media_sequence=%d segment=%d ended=%s" % (
            d.media_sequence, d.segment_sequence, str(d.ended).lower())
    if kind == "frame_dropped":
        d = r.frame_dropped
        return "dropped reason=%s count=%d total=%d detail=%r" % (
            pb2.DropReason.Name(d.reason), d.count, d.total, d.detail)
    if kind == "lagged":
        g = r.lagged
        return "lagged skipped=%d resume_index=%d" % (g.skipped_frames, g.resume_frame_index)
    if kind == "session_ended":
        e = r.session_ended
        return "ended reason=%s frames=%d segments=%d detail=%r" % (
            pb2.SessionEnded.Reason.Name(e.reason), e.frames, e.segments, e.detail)
    return "unknown %r" % r


def publish(args, pb2, pb2_grpc):
    with open(args.file, "rb") as f:
        data = f.read()
    if args.pace:
        # Like a live encoder: one access unit per message, at `pace` per second.
        chunks = access_units(data)
    else:
        chunks = [data[i:i + args.chunk] for i in range(0, len(data), args.chunk)]

    def requests():
        yield pb2.SliceRequest(
            session_id=args.session,
            role=pb2.ROLE_PUBLISH,
            target_fps=args.target_fps,
            publish=pb2.PublishOptions(
                segment_duration_ms=args.segment_ms, window_segments=args.window),
        )
        start = time.monotonic()
        for n, chunk in enumerate(chunks):
            if args.pace:
                delay = start + n / args.pace - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            yield pb2.SliceRequest(data=chunk, end_of_access_unit=bool(args.pace))
        # Ends the session cleanly (half-closing the stream would too).
        yield pb2.SliceRequest(end_of_stream=True)

    channel, stub = connect(pb2_grpc, args)
    print("publishing %s to %s (%d bytes in %d messages)" % (
        args.file, args.session, len(data), len(chunks)), flush=True)
    for r in stub.StreamSlices(requests(), metadata=metadata(args)):
        print(describe(pb2, r), flush=True)
    channel.close()


def subscribe(args, pb2, pb2_grpc):
    first = pb2.SliceRequest(
        session_id=args.session,
        role=pb2.ROLE_SUBSCRIBE,
        target_fps=args.target_fps,
        subscribe=pb2.SubscribeOptions(
            events=not args.frames_only, wait_ms=args.wait_ms),
    )
    channel, stub = connect(pb2_grpc, args)
    print("subscribing to %s" % args.session, flush=True)
    # A subscriber sends one message; the half-close that follows is fine.
    call = stub.StreamSlices(iter([first]), metadata=metadata(args))
    frames = 0
    for r in call:
        print(describe(pb2, r), flush=True)
        if r.WhichOneof("event") == "frame":
            frames += 1
            if args.count and frames >= args.count:
                call.cancel()
                break
    channel.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--proto", default=DEFAULT_PROTO, help="the proto/ directory")
    # Connection options, shared by both subcommands.
    conn = argparse.ArgumentParser(add_help=False)
    conn.add_argument("--server", default="127.0.0.1:50051",
                      help="host:port, or http:// / https:// URL")
    conn.add_argument("--token", default=os.environ.get("LIVESLICE_TOKEN"),
                      help="bearer token for a server with auth on (default: $LIVESLICE_TOKEN)")
    conn.add_argument("--ca", help="PEM file of the CA to trust for TLS (turns TLS on)")
    conn.add_argument("--tls", action="store_true", help="TLS with the system's roots")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("publish", parents=[conn],
                       help="publish an H.264 Annex B file into a session")
    p.add_argument("--session", required=True)
    p.add_argument("file")
    p.add_argument("--chunk", type=int, default=16384, help="bytes per message (unpaced)")
    p.add_argument("--pace", type=float, default=0,
                   help="send one access unit per message, this many per second")
    p.add_argument("--target-fps", type=int, default=0,
                   help="frame rate for streams without timing (0: server default)")
    p.add_argument("--segment-ms", type=int, default=0)
    p.add_argument("--window", type=int, default=0)

    s = sub.add_parser("subscribe", parents=[conn], help="print a session's frames and events")
    s.add_argument("--session", required=True)
    s.add_argument("--count", type=int, default=0, help="stop after N frames")
    s.add_argument("--target-fps", type=int, default=0)
    s.add_argument("--wait-ms", type=int, default=10000,
                   help="how long to wait for the session to appear")
    s.add_argument("--frames-only", action="store_true", help="no events, only frames")

    args = ap.parse_args()
    pb2, pb2_grpc = load_stubs(args.proto)
    import grpc

    try:
        (publish if args.command == "publish" else subscribe)(args, pb2, pb2_grpc)
    except grpc.RpcError as e:
        print("error %s: %s" % (e.code().name, e.details()), file=sys.stderr, flush=True)
        sys.exit(1)
    except grpc.FutureTimeoutError:
        hint = "" if target(args)[1] else " (a TLS server? add --tls or --ca FILE)"
        print("error: cannot connect to %s%s" % (args.server, hint), file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
