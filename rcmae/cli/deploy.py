"""`rcmae export`, `rcmae monitor` and `rcmae demo-app`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


# ---------------------------------------------------------------- export / monitor / demo-app (deployment)
def _cmd_export(args: argparse.Namespace) -> int:
    from rcmae.deploy import bundle as export_bundle
    from rcmae.deploy import export

    out = export.export_run(Path(args.run), Path(args.out), format=args.format, scorer=args.scorer,
                            examples=args.examples, overwrite=args.overwrite)
    meta = export_bundle.Bundle(out).meta
    print(f"bundle written to {out} ({meta['format']}, scorer {meta['scorer']}, {len(meta['units'])} machine(s)); "
          f"load it as {out / 'README.md'} shows")
    return 0


def add_export(sub) -> None:
    p = sub.add_parser("export", help="write a self-contained detector bundle of a run (a graph of arrays by "
                                      "default; or ONNX, TorchScript)")
    p.add_argument("--run", required=True, help="a trained (and ideally evaluated) run folder")
    p.add_argument("--out", required=True, help="the bundle folder to create")
    p.add_argument("--format", default="graph", choices=["graph", "onnx", "torchscript"],
                   help="graph (default: a JSON spec plus arrays that rcmae rebuilds; data, it runs no code), onnx "
                        "(data too; loads with onnxruntime alone) or torchscript (loads with torch alone, but it is "
                        "code: loading it needs --trust)")
    p.add_argument("--scorer", default=None, help="the scorer to export (default: the run's default)")
    p.add_argument("--examples", type=int, default=3,
                   help="normal training clips per machine copied into the bundle for listening (default 3)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    p.set_defaults(func=_cmd_export)


def _cmd_monitor(args: argparse.Namespace) -> int:
    from rcmae.deploy import monitor

    out = Path(args.out) if args.out else Path(args.paths[0]).with_suffix("").parent / "monitor"
    results, skipped = monitor.monitor(args.paths, out, bundle=args.bundle, run=args.run, scorer=args.scorer,
                                       trust=args.trust,
                                       machine_type=args.machine_type, machine_id=args.machine_id, hop=args.hop,
                                       min_duration=args.min_duration, threshold=args.threshold, plot=args.plot,
                                       progress=not args.quiet, stream=not args.no_stream)
    for res in results:
        print(f"{res.path}: {res.duration:.1f} s, {len(res.series)} windows, {len(res.events)} event(s) above "
              f"{res.threshold:.4f} ({res.scorer}, {res.machine_type}/{res.machine_id})")
        for _, ev in res.events.iterrows():
            if ev["kind"] == "invalid":  # NaN/inf scores: its own kind of event, never normal
                print(f"  event {int(ev['event'])}: {ev['start_s']:.1f}-{ev['end_s']:.1f} s, INVALID (no finite "
                      "score: the audio overflows or holds non-finite samples)")
                continue
            print(f"  event {int(ev['event'])}: {ev['start_s']:.1f}-{ev['end_s']:.1f} s, peak {ev['peak_score']:.4f} "
                  f"at {ev['peak_s']:.1f} s")
        print(f"  -> {', '.join(str(p) for p in res.files.values())}")
    for path, why in skipped:
        print(f"skipped {path}: {why}", file=sys.stderr)
    invalid = any((res.events["kind"] == "invalid").any() for res in results)
    return 1 if skipped or invalid else 0


def add_monitor(sub) -> None:
    p = sub.add_parser("monitor", help="score long recordings with a sliding window: score series, events, plot")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bundle", default=None, help="an exported bundle (rcmae export)")
    p.add_argument("--trust", action="store_true",
                   help="load a TorchScript bundle, which runs its code: only for a bundle from a source you trust "
                        "(ONNX bundles need no trust)")
    src.add_argument("--run", default=None, help="a run folder")
    p.add_argument("paths", nargs="+", help="recordings (.wav/.flac) or folders of them")
    p.add_argument("--out", default=None, help="output folder (default: monitor/ beside the first recording)")
    p.add_argument("--scorer", default=None, help="with --run: the scorer (default: the run's default)")
    p.add_argument("--machine-type", default=None, help="machine type (default: the only one, or from the path)")
    p.add_argument("--machine-id", default=None, help="machine ID (default: the only one, or id_XX in the name)")
    p.add_argument("--hop", type=float, default=1.0, help="seconds between window starts (default 1.0)")
    p.add_argument("--min-duration", type=float, default=1.0,
                   help="shortest event in seconds; shorter threshold crossings are ignored (default 1.0)")
    p.add_argument("--threshold", type=float, default=None, help="override the machine's fitted threshold")
    p.add_argument("--plot", default="html", choices=["html", "png", "none"], help="plot format (default html)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-stream", action="store_true",
                   help="compute each window's log-mel on its own instead of sharing the frames of overlapping "
                        "windows (same scores to float32 rounding; slower; TorchScript/ONNX bundles always do)")
    p.set_defaults(func=_cmd_monitor)


def _cmd_demo_app(args: argparse.Namespace) -> int:
    from rcmae.deploy import demo_app

    demo_app.launch(Path(args.bundle), host=args.host, port=args.port, share=args.share, trust=args.trust)
    return 0


def add_demo_app(sub) -> None:
    p = sub.add_parser("demo-app", help="a Gradio demo of an exported bundle: upload or record, see the verdict")
    p.add_argument("bundle", help="an exported bundle folder (rcmae export)")
    p.add_argument("--trust", action="store_true",
                   help="load a TorchScript bundle, which runs its code: only for a bundle from a source you trust "
                        "(ONNX bundles need no trust)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--share", action="store_true",
                   help="also open a public Gradio share link (sends traffic through Gradio's servers)")
    p.set_defaults(func=_cmd_demo_app)
