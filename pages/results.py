"""Results: per-type/per-ID AUC and pAUC (2021+: per-section source/target AUC, decisions, official score), ROC
curves and score histograms (split by domain), t-SNE/UMAP (by ID, domain or attribute); runs and benchmarks
compared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from rcmae import views as viz
from rcmae import workbench

ws = workbench.page_workspace(st.session_state.get("workspace"))

st.title("Results")

runs = [r for r in workbench.list_runs(ws) if workbench.eval_results(r)]
benchmarks = workbench.list_benchmarks(ws)
if not runs and not benchmarks:
    st.info("No evaluated run yet. Start the **quick demo run** on Start (a few minutes on a CPU), or launch "
            "pretrain → finetune → evaluate jobs on **Jobs**; results appear here when evaluation finishes.",
            icon=":material/info:")
    st.stop()


@st.cache_data(show_spinner="Projecting embeddings…", max_entries=16)
def _projection(npz: str, mtime: float, method: str, split: str) -> dict:
    emb = viz.load_embeddings(npz)
    keep = np.ones(len(emb["z"]), bool) if split == "all" else emb["split"] == split
    points = viz.compute_embedding(emb["z"][keep], method=method)
    return {"points": points, **{k: emb[k][keep] for k in ("machine_id", "machine_type", "label", "path")}}


run_tab, cmp_tab = st.tabs(["One run", "Compare"])

with run_tab:
    if not runs:
        st.write("No evaluated run yet.")
    else:
        c1, c2 = st.columns(2)
        run = c1.selectbox("Run", runs, format_func=lambda p: p.name)
        results = workbench.eval_results(run)
        scorer = c2.selectbox("Scorer", list(results), help="idprob: machine-ID probability (the paper's); "
                                                            "knn: embedding distance; recon: MAE reconstruction")
        res = results[scorer]
        avg = res["average"]
        m1, m2, m3 = st.columns(3)
        m1.metric("Average AUC", f"{avg['auc']:.3f}" if avg["auc"] is not None else "-")
        m2.metric("Average pAUC", f"{avg['pauc']:.3f}" if avg["pauc"] is not None else "-")
        m3.metric("Machine IDs", len(res["per_id"]))
        official = res.get("official") or {}
        if res.get("per_section"):
            # DCASE 2021-2025 data: the challenge's own numbers (docs/metrics.md has the formulas).
            st.subheader("DCASE 2021-2025 protocol: domains and the official score")
            o1, o2, o3, o4 = st.columns(4)
            fmt = lambda v: f"{v:.3f}" if v is not None else "-"  # noqa: E731
            o1.metric("Official score", fmt(official.get("score")),
                      help="Harmonic mean of every section's AUC (source), AUC (target) and pAUC (DCASE 2022-2025)")
            o2.metric("AUC source (hmean)", fmt(official.get("hmean_source")))
            o3.metric("AUC target (hmean)", fmt(official.get("hmean_target")))
            o4.metric("pAUC (hmean)", fmt(official.get("pauc_hmean")))
            st.dataframe(viz.section_table(res), hide_index=True, width="stretch")
            with st.expander("Official score and the evaluators' means"):
                st.dataframe(viz.official_table(res), hide_index=True, width="stretch")
            if res.get("skipped_sections"):
                st.caption("Not in the official score: " + "; ".join(
                    f"{r['machine_type']} section {r['section']} ({r['reason']})" for r in res["skipped_sections"]))
        st.subheader("Per machine type")
        st.dataframe(viz.per_type_table(res), hide_index=True, width="stretch")
        with st.expander("Per machine ID"):
            st.dataframe(viz.results_table(res), hide_index=True, width="stretch")
        try:
            scores = workbench.score_table(run, scorer)
        except FileNotFoundError as err:
            st.info(str(err))
            scores = None
        if scores is not None:
            st.subheader("ROC and scores")
            labelled = scores[scores["label"].isin(["normal", "anomaly"])]
            c1, c2 = st.columns(2)
            mtype = c1.selectbox("Machine type (histogram)", sorted(labelled["machine_type"].unique()))
            ids = sorted(labelled.loc[labelled["machine_type"] == mtype, "machine_id"].unique())
            mid = c2.selectbox("Machine ID (histogram)", ids)
            sub = labelled[(labelled["machine_type"] == mtype) & (labelled["machine_id"] == mid)]
            has_domain = "domain" in sub.columns and sub["domain"].isin(["source", "target"]).any()
            by_domain = has_domain and st.toggle("Split by domain (source / target)", value=True,
                                                 help="ROC: each domain's normals against all anomalies of the "
                                                      "section (the official AUCs); histogram: per domain")
            a, b = st.columns(2)
            thr = sub["threshold"].dropna()
            if by_domain:
                a.plotly_chart(viz.roc_figure(sub, by="domain", title=f"{mtype} section {mid}: ROC per domain"),
                               width="stretch", key="roc")
                b.plotly_chart(viz.domain_histogram(sub["score"].to_numpy(), sub["label"].tolist(),
                                                    sub["domain"].tolist(),
                                                    threshold=float(thr.iloc[0]) if len(thr) else None,
                                                    title=f"{mtype} section {mid}: scores by domain"),
                               width="stretch", key="hist")
            else:
                a.plotly_chart(viz.roc_figure(scores, by="machine_type", title="ROC per machine type"),
                               width="stretch", key="roc")
                b.plotly_chart(viz.score_histogram(sub["score"].to_numpy(), sub["label"].tolist(),
                                                   threshold=float(thr.iloc[0]) if len(thr) else None,
                                                   title=f"{mtype} id {mid}: normal vs anomalous"),
                               width="stretch", key="hist")
        spaces = workbench.embedding_files(run)
        if spaces:
            st.subheader("Embeddings")
            c1, c2, c3 = st.columns(3)
            method = c1.radio("Method", ["tsne", "umap"], horizontal=True, format_func=str.upper)
            split = c2.radio("Clips", ["test", "train", "all"], horizontal=True)
            type_options = ["(all)", *sorted(scores["machine_type"].unique())] if scores is not None else ["(all)"]
            # One machine type at a time reads like the paper's Figures 3-4; "(all)" shows every ID.
            mtype_e = c3.selectbox("Machine type", type_options, index=min(1, len(type_options) - 1),
                                   key="emb_type")
            colour = "machine ID"
            if res.get("per_section"):
                colour = st.radio("Colour by", ["machine ID", "domain", "attributes"], horizontal=True,
                                  help="domain and attributes come from the clip names (DCASE 2021+)")
            cols = st.columns(len(spaces))
            for col, (space, npz) in zip(cols, spaces.items(), strict=True):
                try:
                    proj = _projection(str(npz), npz.stat().st_mtime, method, split)
                except ValueError as err:
                    col.info(f"{space}: {err}")
                    continue
                sel = np.ones(len(proj["points"]), bool) if mtype_e == "(all)" else proj["machine_type"] == mtype_e
                if colour == "machine ID":
                    ids = [f"{t}/{i}" for t, i in zip(proj["machine_type"][sel], proj["machine_id"][sel],
                                                      strict=True)]
                else:
                    ids = list(viz.clip_groups(proj["path"][sel], by="domain" if colour == "domain" else "attributes"))
                fig = viz.embedding_figure(proj["points"][sel], ids, proj["label"][sel], proj["path"][sel],
                                           title=f"{space} ({method.upper()})")
                event = col.plotly_chart(fig, width="stretch", key=f"emb_{space}", on_select="rerun",
                                         selection_mode="points")
                points = (event or {}).get("selection", {}).get("points", []) if event else []
                if points and points[0].get("customdata"):
                    picked = points[0]["customdata"]
                    picked = picked[0] if isinstance(picked, list) else picked
                    col.caption(Path(picked).name)
                    try:
                        clip = workbench.load_clip(picked)
                        col.audio(clip.wave, sample_rate=clip.sample_rate)
                    except (ValueError, FileNotFoundError) as err:
                        col.caption(str(err))
            st.caption(f"Colour: {colour}; circle: normal, cross: anomalous. Hover shows the file; "
                       "click a point to play it.")

with cmp_tab:
    mode = st.radio("Compare", ["runs", "a benchmark's systems"], horizontal=True)
    if mode == "runs":
        chosen = st.multiselect("Runs", runs, default=runs[:2], format_func=lambda p: p.name)
        if chosen:
            picked, names = [], []
            for r in chosen:
                for name, res in workbench.eval_results(r).items():
                    picked.append(res)
                    names.append(f"{r.name}:{name}")
            st.dataframe(viz.compare_table(picked, names), hide_index=True, width="stretch")
    elif not benchmarks:
        st.write("No benchmark yet: launch one on **Jobs** (kind benchmark).")
    else:
        bench = st.selectbox("Benchmark", benchmarks, format_func=lambda p: p.name)
        rows, table = workbench.benchmark_results(bench)
        if rows:
            st.dataframe(viz.compare_table(rows), hide_index=True, width="stretch")
        st.markdown(table)
