"""Start: what this machine has (data, GPU, AudioLDM weights, LLM key) and the quick demo run."""

from __future__ import annotations

import streamlit as st

from rcmae import workbench
from rcmae.workbench import jobs

ws = workbench.page_workspace(st.session_state.get("workspace"))
store = jobs.JobStore(ws.jobs_db)

st.title("rcmae workbench")
st.write("Unsupervised anomalous machine-sound detection with RC-MAE: explore data, audition augmentations, "
         "train in the background, and read the results.")

status = workbench.first_launch_status(ws)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Data sets", len(status["datasets"]))
c2.metric("Runs", len(status["runs"]))
c3.metric("GPUs", len(status["gpus"]))
c4.metric("Jobs running", len(store.list(["running"])))

st.subheader("Quick demo run")
s = workbench.quick_demo_settings()
data_note = ("trains on the demo data set of this workspace" if (ws.demo_data / "demo.json").is_file() else
             f"creates a small synthetic factory data set ({s['train_per_id']} training and {s['test_per_id']}+"
             f"{s['test_per_id']} test clips per machine ID)")
st.write(f"One click {data_note}, pretrains the tiny RC-MAE for {s['pretrain_epochs']} epochs, fine-tunes it for "
         f"{s['finetune_epochs']}, and evaluates it: chained background jobs that finish in minutes on a CPU. "
         "Follow them on **Jobs**; the run then appears on **Results**.")
if st.button("Start the quick demo run", type="primary", icon=":material/rocket_launch:"):
    chain = workbench.quick_demo(ws, store)
    st.success(f"Queued jobs {', '.join(str(j.id) for j in chain)}; the run goes to `{chain[-1].out}`. "
               "Follow them on **Jobs** (sidebar).")

st.subheader("This machine")
if status["datasets"]:
    st.write(f":material/check_circle: Data sets in the workspace: {', '.join(status['datasets'])}.")
else:
    st.info("No data yet. **Data** creates the synthetic demo set with one click, or points at any DCASE folder "
            "(2020 `dev_data/<type>/{train,test}` or 2021+ `section_XX_...` layouts).", icon=":material/info:")
if status["gpus"]:
    st.write(f":material/check_circle: GPUs: {', '.join(status['gpus'])}. **Jobs** lets you pick one per job.")
else:
    st.info("No GPU detected: training runs on the CPU. The tiny preset is made for this; the paper preset "
            "needs a GPU for reasonable times.", icon=":material/info:")
if status["audioldm_weights"]:
    st.write(":material/check_circle: AudioLDM weights are in the local Hugging Face cache.")
else:
    st.info("AudioLDM weights are not on this machine, so **Audition** and banks use the procedural backend "
            f"(prompt-driven synthetic factory noise). For AudioLDM, download `{workbench.DEFAULT_AUDIOLDM}` with "
            "`huggingface-cli download` where there is internet and copy the HF cache here.", icon=":material/info:")
if status["llm"]:
    st.write(":material/check_circle: An LLM is configured for prompt generation.")
else:
    st.info("No LLM key (OPENAI_API_KEY / OPENAI_BASE_URL): **Prompts** generates new prompts with the built-in "
            "template generator instead.", icon=":material/info:")
