"""Audition: augment one clip with one or more prompts, listen side by side, keep into a bank or discard."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from rcmae import views as viz
from rcmae import workbench
from rcmae.augment import prompts

ws = workbench.page_workspace(st.session_state.get("workspace"))

st.title("Audition")
st.write("Hear what an augmentation does before building a bank: pick a clip, one or more prompts and a backend.")

datasets = workbench.list_datasets(ws)
if not datasets:
    st.info("No data sets in the workspace yet: create the demo data on **Data** first.", icon=":material/info:")
    st.stop()

c1, c2 = st.columns(2)
folder = c1.selectbox("Data set", [str(p) for p in datasets])
try:
    index, _, _ = workbench.data_overview(folder)
except (FileNotFoundError, ValueError) as err:
    st.error(str(err), icon=":material/error:")
    st.stop()
train = index[index["split"] == "train"]
pool = train if len(train) else index
clip = c2.selectbox("Clip", list(pool["path"]), format_func=lambda p: f"{Path(p).parent.parent.name}/{Path(p).name}")

library = prompts.PromptLibrary(ws.prompts)
texts = library.texts()
chosen = st.multiselect("Prompts (several = A/B comparison)", texts, default=texts[:1],
                        help="Edit the library on Prompts.")
custom = st.text_input("…or type a prompt", placeholder="add the hiss of leaking compressed air")
if custom.strip():
    chosen = [*chosen, custom.strip()]

backend = st.radio("Backend", ["procedural", "audioldm"], horizontal=True,
                   help="procedural: synthetic factory noise mixed at an SNR (no weights needed). "
                        "audioldm: the paper's text-guided diffusion (needs local AudioLDM weights).")
c1, c2, c3, c4, c5 = st.columns(5)
seed = c1.number_input("Seed", 0, 1_000_000, 0)
snr = c2.number_input("SNR dB", -10.0, 40.0, 5.0, disabled=backend != "procedural")
t0 = c3.slider("t0", 0.0, 1.0, 0.5, disabled=backend != "audioldm",
               help="fraction of the denoising steps re-noised (paper's Equation 1)")
steps = c4.number_input("Steps", 1, 200, 20, disabled=backend != "audioldm")
guidance = c5.number_input("Guidance", 0.0, 10.0, 2.5, disabled=backend != "audioldm")
model = st.text_input("AudioLDM weights (folder or hub id in the local cache)", workbench.DEFAULT_AUDIOLDM) \
    if backend == "audioldm" else None


@st.cache_resource(show_spinner="Loading AudioLDM…")
def _audioldm(model_name: str):
    return workbench.load_audioldm(model_name)


if st.button("Augment", type="primary", icon=":material/graphic_eq:", disabled=not chosen):
    results = []
    try:
        if model and (model.startswith(("/", ".", "~")) or Path(model).expanduser().exists()):
            # A weights folder is a typed path: it must stay inside the workspace or an allowed root.
            model = str(workbench.resolve_path(ws, model))
        augmenter = _audioldm(model) if backend == "audioldm" else None
        with st.spinner("Augmenting…"):
            for prompt in chosen:
                results.append(workbench.audition(clip, prompt, backend=backend, seed=int(seed), snr_db=float(snr),
                                                  t0=float(t0), steps=int(steps), guidance=float(guidance),
                                                  model=model, augmenter=augmenter))
    except FileNotFoundError as err:
        st.error(str(err), icon=":material/error:")
        st.info("Without AudioLDM weights the procedural backend works on any machine: choose **procedural** "
                "above.", icon=":material/lightbulb:")
    except ValueError as err:
        st.error(str(err), icon=":material/error:")
    st.session_state["audition"] = results

results = st.session_state.get("audition", [])
if results:
    original = results[0]["original"]
    zmin, zmax = float(original.logmel.min()), float(original.logmel.max())
    st.subheader("Original")
    st.audio(original.wave, sample_rate=original.sample_rate)
    st.plotly_chart(viz.spectrogram_figure(original.logmel, original.sample_rate, original.hop_length,
                                           title="original", zmin=zmin, zmax=zmax), width="stretch",
                    key="spec_original")
    for i, res in enumerate(results):
        aug = res["augmented"]
        st.subheader(f"{chr(65 + i) if len(results) > 1 else 'Augmented'}: {res['prompt']}")
        st.caption(f"backend {res['backend']}, seed {res['seed']}"
                   + (f", SNR {res['snr_db']} dB" if res["backend"] == "procedural" else
                      f", t0 {res['t0']}, {res['steps']} steps, guidance {res['guidance']}"))
        st.audio(aug.wave, sample_rate=aug.sample_rate)
        a, b = st.columns(2)
        a.plotly_chart(viz.spectrogram_figure(aug.logmel, aug.sample_rate, aug.hop_length, title="augmented",
                                              zmin=zmin, zmax=zmax), width="stretch", key=f"spec_aug_{i}")
        b.plotly_chart(viz.spectrogram_figure(res["diff"], aug.sample_rate, aug.hop_length,
                                              title="difference (augmented - original, dB)", colorscale="RdBu_r",
                                              zmin=-20, zmax=20), width="stretch", key=f"spec_diff_{i}")
        k1, k2, k3 = st.columns([2, 1, 1])
        bank_name = k1.text_input("Bank", "auditions", key=f"bank_{i}", help="a folder under <workspace>/banks")
        if k2.button("Keep", key=f"keep_{i}", icon=":material/bookmark_add:"):
            try:
                bank = workbench.resolve_path(ws, bank_name, under=ws.banks)
            except ValueError as err:
                st.error(str(err), icon=":material/error:")
                st.stop()
            path = workbench.keep_audition(res, bank)
            ids = [p["id"] for p in library.list() if p["text"] == res["prompt"]]
            if ids:
                library.mark_used(ids, bank_name)
            st.success(f"Kept as `{path}`.")
        if k3.button("Discard", key=f"discard_{i}", icon=":material/delete:"):
            st.session_state["audition"] = [r for j, r in enumerate(results) if j != i]
            st.rerun()
