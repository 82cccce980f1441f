"""Monitor: score a long recording over time (click a point to listen); export a run and start its demo app."""

from __future__ import annotations

import streamlit as st

from rcmae import views as viz
from rcmae import workbench
from rcmae.deploy import bundle as export
from rcmae.deploy import demo_app, monitor
from rcmae.workbench import jobs

ws = workbench.page_workspace(st.session_state.get("workspace"))
BUNDLES = ws.root / "bundles"

st.title("Monitor")
runs = workbench.list_runs(ws)
bundles = export.list_bundles(BUNDLES)
if not runs and not bundles:
    st.info("No trained run or exported bundle yet: start the **quick demo run** on Start first.",
            icon=":material/info:")
    st.stop()


@st.cache_resource(show_spinner="Loading the detector…", max_entries=4)
def _scorer(kind: str, path: str, mtime: float, name: str | None = None, trust: bool = False) -> monitor.WindowScorer:
    return monitor.open_scorer(**{kind: path}, scorer=name, trust=trust)


tab_monitor, tab_deploy = st.tabs(["Monitor a recording", "Export and demo"])

with tab_monitor:
    c1, c2 = st.columns(2)
    kinds = (["run"] if runs else []) + (["bundle"] if bundles else [])
    kind = c1.radio("Detector", kinds, horizontal=True, format_func=lambda k: {"run": "a run",
                                                                              "bundle": "an exported bundle"}[k])
    source = c2.selectbox("Run" if kind == "run" else "Bundle", runs if kind == "run" else bundles,
                          format_func=lambda p: p.name)
    trust = False
    if kind == "bundle" and export.Bundle(source).format == "torchscript":
        trust = st.checkbox("I trust this bundle's source: load its TorchScript (TorchScript is code, and loading it "
                            "runs that code; graph and ONNX bundles are data and need no trust)",
                            key=f"trust_{source.name}")
    try:
        mtime = max((p.stat().st_mtime for p in source.rglob("*") if p.is_file()), default=0.0)
        scorer = _scorer(kind, str(source), mtime, None, trust)
        if kind == "run":
            det = scorer.extra["detector"]
            name = st.selectbox("Scorer", det.scorers, index=det.scorers.index(det.default_scorer))
            scorer = _scorer(kind, str(source), mtime, name)
    except (ValueError, FileNotFoundError) as err:
        st.error(str(err), icon=":material/error:")
        st.stop()
    recordings = workbench.list_recordings(ws)
    if recordings and "monitor_path" not in st.session_state:
        # The demo recording (make app writes it): something to monitor right away.
        st.session_state["monitor_path"] = str(recordings[0].relative_to(ws.root))
    recording = st.text_input("Recording (.wav/.flac, any length) on this machine",
                              placeholder="recordings/demo_fan_id_00.wav", key="monitor_path",
                              help="A path inside the workspace (or an allowed folder). "
                                   + (f"Recordings here: {', '.join(p.name for p in recordings)}."
                                      if recordings else ""))
    upload = st.file_uploader(f"... or upload one (up to {workbench.UPLOAD_LIMIT_MB:g} MB)", type=["wav"])
    c1, c2, c3, c4 = st.columns(4)
    machines = [f"{t}/{i}" for t, i in scorer.units]
    guess = workbench.guess_machine(scorer, recording or (upload.name if upload is not None else ""))
    machine = c1.selectbox("Machine", machines, index=machines.index(guess) if guess in machines else 0,
                           help="preselected from the recording's folders and name (<type>/..., id_XX) when they "
                                "tell")
    hop = c2.number_input("Hop (s)", min_value=0.1, max_value=60.0, value=1.0, step=0.5)
    min_duration = c3.number_input("Shortest event (s)", min_value=0.0, max_value=600.0, value=1.0, step=0.5)
    threshold = c4.number_input("Threshold (empty: the machine's fitted one)", value=None, format="%.4f",
                                help="Events are stretches above it. Runs trained on very few clips may have no "
                                     "fitted threshold for some scorers: give one here.")

    path = None
    if upload is not None:
        saved, problems = workbench.save_uploads([(upload.name, upload.getvalue())], ws.root / "uploads")
        for name, why in problems:
            st.error(f"{name}: {why}", icon=":material/error:")
        path = saved[0] if saved else None
    elif recording:
        try:
            path = workbench.resolve_path(ws, recording)
        except workbench.PathNotAllowed as err:
            st.error(str(err), icon=":material/error:")
    if path is not None and st.button("Monitor", type="primary", icon=":material/timeline:"):
        mtype, mid = machine.split("/", 1)
        try:
            with st.spinner(f"Scoring {path.name} window by window…"):
                res = monitor.monitor_recording(scorer, path, mtype, mid, hop=hop, min_duration=min_duration,
                                                threshold=threshold, progress=False)
                monitor.write_outputs(res, ws.root / "monitor" / path.stem)
            st.session_state["monitor_result"] = res
        except monitor.MonitorError as err:
            st.error(str(err), icon=":material/error:")

    res = st.session_state.get("monitor_result")
    if res is not None and len(res.series) == 1:
        # One window: no curve to draw and no stretch to time; say what the one score means.
        row = res.series.iloc[0]
        verdict = "above" if row["score"] > res.threshold else "at or below"
        st.info(f"**{res.path.name}** is one window long ({res.duration:.1f} s): score {row['score']:.4f} is "
                f"{verdict} the threshold {res.threshold:.4f} ({res.scorer}, {res.machine_type}/{res.machine_id}). "
                "Monitoring shows a score over time for recordings longer than one window "
                f"({scorer.clip_samples / scorer.sample_rate:g} s); for single clips the **Score** page is the tool.",
                icon=":material/info:")
    elif res is not None:
        st.write(f"**{res.path.name}**: {res.duration:.1f} s, {len(res.series)} windows, **{len(res.events)} "
                 f"event(s)** above the threshold {res.threshold:.4f} ({res.scorer}, {res.machine_type}/"
                 f"{res.machine_id}). Files: " + ", ".join(f"`{p}`" for p in res.files.values()))
        fig = viz.monitor_figure(res.series, res.events, res.threshold, title="Anomaly score over time")
        event = st.plotly_chart(fig, on_select="rerun", selection_mode="points", key="monitor_plot")
        if not res.events.empty:
            st.dataframe(res.events, hide_index=True, width="stretch")
        points = event.selection.points if event else []
        peak = float(res.series.loc[res.series["score"].idxmax(), "center_s"])
        default = float(points[0]["x"]) if points else peak
        at = st.number_input("Listen around (s); click a point of the plot to choose it", min_value=0.0,
                             max_value=float(res.duration), value=min(default, float(res.duration)), step=1.0,
                             key=f"monitor_at_{default}")
        half = scorer.clip_samples / scorer.sample_rate / 2
        segment, sr = monitor.read_segment(res.path, max(0.0, at - half), at + half, scorer.channel)
        st.caption(f"{max(0.0, at - half):.1f}-{min(res.duration, at + half):.1f} s (one window around {at:.1f} s)")
        st.audio(segment, sample_rate=sr)

with tab_deploy:
    store = jobs.JobStore(ws.jobs_db)
    if runs:
        st.subheader("Export a run")
        c1, c2, c3 = st.columns(3)
        run = c1.selectbox("Run", runs, format_func=lambda p: p.name, key="export_run")
        fmt = c2.radio("Format", ["graph", "onnx", "torchscript"], horizontal=True, key="export_format",
                       help="graph (default): arrays and a JSON spec that rcmae rebuilds, data that cannot run code. "
                            "ONNX: data too, loads with onnxruntime alone (slower to export). TorchScript: loads with "
                            "torch alone, but it is code, so loading it needs trust.")
        name_key = f"bundle_name_{run.name}_{fmt}"
        if name_key not in st.session_state:  # made once: a rerun must not replace what the user typed
            st.session_state[name_key] = workbench.new_name(BUNDLES, f"{run.name}-{fmt}")
        name = c3.text_input("Bundle name", key=name_key)
        if st.button("Export", icon=":material/inventory_2:"):
            try:
                out = workbench.resolve_path(ws, name, under=BUNDLES)  # stays in the workspace (or allowed roots)
            except workbench.PathNotAllowed as err:
                st.error(str(err), icon=":material/error:")
            else:
                argv = ["export", "--run", str(run), "--out", str(out), "--format", fmt]
                job = workbench.launch_and_start(store, argv, name=f"export {name}")
                st.success(f"Export job #{job.id} started; the bundle appears below when it is done "
                           "(see **Jobs**).")
    st.subheader("Bundles")
    if not bundles:
        st.caption(f"None yet in `{BUNDLES}`.")
    else:
        bundle = st.selectbox("Bundle", bundles, format_func=lambda p: p.name, key="demo_bundle")
        meta = export.Bundle(bundle).meta
        demo_trust = meta["format"] != "torchscript" or st.checkbox(
            "I trust this bundle's source: its demo may load the TorchScript (which runs its code)",
            key=f"demo_trust_{bundle.name}")
        avg = (meta.get("metrics") or {}).get("average")
        st.caption(f"`{bundle}`: {meta['format']}, scorer `{meta['scorer']}`, {len(meta['units'])} machine(s)"
                   + (f", AUC {avg['auc']:.3f}" if avg else "") + ". Load it as its README.md shows.")
        if st.button("Demo", icon=":material/slideshow:", disabled=not demo_trust,
                     help="Start the Gradio demo app of this bundle as a background job (this machine only)."):
            job = workbench.launch_and_start(store, demo_app.demo_job_argv(bundle, demo_app.free_port(),
                                                                           trust=meta["format"] == "torchscript"),
                                             name=f"demo {bundle.name}")
            st.success(f"Demo job #{job.id} started: {demo_app.demo_link(list(job.argv))} (ready in a few "
                       "seconds; stop it on **Jobs**).")
    live = [j for j in jobs.refresh(store) if j.kind == "demo-app" and j.state in ("queued", "running")]
    for j in live:
        st.markdown(f"Demo app **{j.name}** (job #{j.id}, {j.state}): {demo_app.demo_link(list(j.argv))}")

    @st.fragment(run_every=2.0)
    def _export_watch() -> None:
        # A finished export shows its bundle without a reload: rerun the page when the bundle list changes.
        exporting = [j for j in jobs.refresh(store) if j.kind == "export" and j.state in ("queued", "running")]
        for j in exporting:
            st.caption(f"Export job #{j.id} ({j.name}) is {j.state}…")
        if len(export.list_bundles(BUNDLES)) != len(bundles):
            st.rerun()

    _export_watch()
