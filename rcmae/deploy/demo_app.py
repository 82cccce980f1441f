"""``rcmae demo-app BUNDLE``: a Gradio page for stakeholders over an exported bundle.

Upload a clip, record one from the microphone or pick an example, check the machine (the first one is
preselected), press **Score**: the page shows the
score against the machine's threshold and the verdict, the clip's log-mel spectrogram (the bundle's own
front-end output), and the bundle's normal training clips nearest to it (cosine distance of the
embeddings) to listen to side by side. Those clips travel inside the bundle (``examples/``, written by
``rcmae export --examples K``), so the page needs neither the training data nor the run.

It binds to 127.0.0.1 unless ``--host`` says otherwise and opens a public Gradio share link only with
``--share``. The score is also served as the API endpoint ``/score`` (``gradio_client``).
"""

from __future__ import annotations

import os
from pathlib import Path

from rcmae.deploy.bundle import Bundle

N_NEAREST = 3
UPLOAD_LIMIT_MB = 20  # the workbench's limit (rcmae.workbench.UPLOAD_LIMIT_MB)
UPLOAD_CACHE = (600, 3600)  # gradio's delete_cache: (every N seconds, delete files older than M seconds)


def predict(bundle: Bundle, audio_path: str | None, machine: str | None) -> tuple:
    """Score one clip: ``(result dict, verdict markdown, spectrogram figure, nearest paths x3, nearest markdown)``.

    Raises:
        gradio.Error: No clip, no machine, or an unreadable clip (shown in the page as one line).
    """
    import gradio as gr

    from rcmae.data.audio import AudioError, load_audio
    from rcmae.views import spectrogram_figure

    if not audio_path:
        raise gr.Error("No clip: upload a .wav or record one from the microphone first.")
    if not machine or "/" not in machine:
        raise gr.Error("Pick the machine (type/ID) the clip was recorded on.")
    mtype, mid = machine.split("/", 1)
    try:
        wave = load_audio(audio_path, sample_rate=bundle.sample_rate,
                          duration=bundle.clip_samples / bundle.sample_rate, channel=bundle.meta.get("channel", 0))
    except AudioError as err:
        # The message names the server's temporary upload file: show the clip's own name instead.
        raise gr.Error(str(err).replace(str(audio_path), Path(audio_path).name)) from err
    out = bundle.score(wave, mtype, mid)
    thr = out["threshold"]
    result = {"machine_type": mtype, "machine_id": mid, "scorer": out["scorer"], "score": out["score"],
              "threshold": thr, "decision": out["decision"]}
    if thr is None:
        verdict = f"### Score {out['score']:.4f}\nNo threshold was fitted for {machine}: no verdict."
    else:
        word = "ANOMALOUS" if out["decision"] == "anomaly" else "normal"
        rel = "above" if out["decision"] == "anomaly" else "at or below"
        verdict = (f"## Verdict: **{word}**\nScore **{out['score']:.4f}** is {rel} the threshold {thr:.4f} of "
                   f"{machine} (scorer `{out['scorer']}`; higher = more unusual).")
    fe = bundle.meta.get("front_end", {})
    fig = spectrogram_figure(out["logmel"], sample_rate=bundle.sample_rate, hop_length=int(fe.get("hop_length", 512)),
                             title="Log-mel spectrogram of the clip")
    near = bundle.nearest_examples(out["embedding"], mtype, mid, k=N_NEAREST)
    paths = [n["path"] for n in near] + [None] * (N_NEAREST - len(near))
    if near:
        lines = [f"{k + 1}. `{Path(n['file']).name}` (cosine distance {n['distance']:.4f}, training clip "
                 f"`{Path(n['source']).name}`)" for k, n in enumerate(near)]
        near_md = "Nearest normal training clips of this machine, closest first:\n\n" + "\n".join(lines)
    else:
        near_md = "The bundle carries no normal example clips of this machine (export with `--examples 3`)."
    return (result, verdict, fig, *paths, near_md)


def example_rows(bundle: Bundle) -> list[list[str]]:
    """``[[clip path, "type/id"], ...]``: the bundle's first example clip of each machine (the Examples row)."""
    rows, seen = [], set()
    for ex in bundle.examples:
        unit = f"{ex['machine_type']}/{ex['machine_id']}"
        if unit not in seen and (bundle.path / ex["file"]).is_file():
            seen.add(unit)
            rows.append([str(bundle.path / ex["file"]), unit])
    return rows


def build_app(bundle: str | os.PathLike | Bundle, trust: bool = False):
    """The Gradio Blocks app of a bundle (not launched)."""
    import gradio as gr

    b = bundle if isinstance(bundle, Bundle) else Bundle(bundle, trust=trust)
    b._load()  # a TorchScript bundle without trust is refused before the page exists
    machines = [f"{t}/{i}" for t, i in b.units]
    meta = b.meta
    metrics = (meta.get("metrics") or {}).get("average")
    summary = (f"Detector `{meta['run']['id']}`, scorer `{b.scorer}`, {meta['clip_seconds']:g} s clips at "
               f"{b.sample_rate} Hz" + (f"; AUC {metrics['auc']:.3f} / pAUC {metrics['pauc']:.3f} on its test data"
                                        if metrics else "") + ".")
    # Uploads are deleted an hour after they arrive (checked every 10 minutes): a demo page keeps no audio.
    with gr.Blocks(title="rcmae: is this machine sound normal?", delete_cache=UPLOAD_CACHE) as app:
        gr.Markdown("# Is this machine sound normal?\n" + summary +
                    "\n\nUpload a clip or record one, pick the machine, press **Score**.")
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Clip")
                machine = gr.Dropdown(machines, value=machines[0], label="Machine")
                button = gr.Button("Score", variant="primary")
                examples = example_rows(b)
                if examples:
                    gr.Examples(examples, inputs=[audio, machine], label="Try a normal clip of each machine")
            with gr.Column():
                verdict = gr.Markdown()
                result = gr.JSON(label="Result")
        spec = gr.Plot(label="Log-mel spectrogram")
        near_md = gr.Markdown()
        with gr.Row():
            near = [gr.Audio(label=f"Normal example {k + 1}", type="filepath", interactive=False)
                    for k in range(N_NEAREST)]
        button.click(lambda a, m: predict(b, a, m), inputs=[audio, machine],
                     outputs=[result, verdict, spec, *near, near_md], api_name="score")
    return app


def launch(bundle: str | os.PathLike, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           trust: bool = False) -> None:
    """Serve the app until interrupted (loopback only unless ``host`` is given; share link only with ``share``)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    b = Bundle(bundle, trust=trust)
    app = build_app(b)
    print(f"demo app for {b.path}: http://{host}:{port}/" + (" (and a public share link)" if share else ""),
          flush=True)
    app.launch(server_name=host, server_port=port, share=share, allowed_paths=[str(b.path / "examples")],
               max_file_size=f"{UPLOAD_LIMIT_MB}mb",  # enforced by the server: larger uploads are refused
               show_error=True)


# ------------------------------------------------------------------------------- the workbench's Demo button
def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the OS picks it)."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def demo_job_argv(bundle: str | os.PathLike, port: int, trust: bool = False) -> list[str]:
    """The ``rcmae`` arguments of a background demo-app job (loopback only, no share link)."""
    return ["demo-app", str(Path(bundle).resolve()), "--port", str(int(port)), *(["--trust"] if trust else [])]


def demo_link(argv: list[str]) -> str | None:
    """The local URL of a demo-app job from its arguments (``None`` when they are not a demo-app command)."""
    if not argv or "demo-app" not in argv[:2]:
        return None
    host = argv[argv.index("--host") + 1] if "--host" in argv else "127.0.0.1"
    port = argv[argv.index("--port") + 1] if "--port" in argv else "7860"
    return f"http://{host}:{port}/"
