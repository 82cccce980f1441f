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
data = workbench.quick_demo_data(ws)
lo, hi = workbench.QUICK_DEMO_SECONDS
data_note = (f"the small demo set `{data.relative_to(ws.root)}`" if (data / "demo.json").is_file() else
             f"a small synthetic factory data set it writes first ({s['train_per_id']} training and "
             f"{s['test_per_id']}+{s['test_per_id']} test clips per machine ID)")
st.write(f"One click fits rcmae's default detector on {data_note} and evaluates it: **about {lo}-{hi} seconds on "
         "2 CPU cores**. The default detector needs no training (an ensemble of two models of the log-mel's band "
         "statistics and frames; README, *What to expect*), so you see per-machine AUC/pAUC, ROC curves and "
         "scores at once. Training RC-MAE on the same data is the button below it.")
chain = workbench.quick_demo_chain(ws, store)
busy = any(j.state in ("queued", "running") for j in chain)
if st.button("Start the quick demo run", type="primary", icon=":material/rocket_launch:", disabled=busy,
             help="a chain is running: wait for it, or cancel it on Jobs" if busy else None):
    chain = workbench.quick_demo(ws, store)
    st.session_state["flash_home"] = (f"Queued jobs {', '.join(str(j.id) for j in chain)}; the run goes to "
                                      f"`{chain[-1].out}`.")
    st.rerun()
if st.button("Train RC-MAE on the same data", icon=":material/model_training:", disabled=busy,
             help=(f"pretrain ({s['pretrain_epochs']} epochs) -> fine-tune ({s['finetune_epochs']}) -> evaluate, "
                   "the tiny preset: several minutes on 2 CPU cores, progress on Jobs")):
    chain = workbench.train_demo(ws, store)
    st.session_state["flash_home"] = (f"Queued jobs {', '.join(str(j.id) for j in chain)}; the run goes to "
                                      f"`{chain[-1].out}`.")
    st.rerun()
if busy and st.session_state.get("flash_home"):  # what was queued, while it runs
    st.success(st.session_state["flash_home"], icon=":material/check_circle:")
elif not busy:
    st.session_state.pop("flash_home", None)


@st.fragment(run_every=2.0)
def _chain_status() -> None:
    jobs.refresh(store)
    current = workbench.quick_demo_chain(ws, store)
    if not current:
        return
    for line in workbench.chain_lines(current):
        st.write(line)
    if any(j.state in ("queued", "running") for j in current):
        eta = workbench.chain_eta(current, store.list(["done"]))
        if eta:
            st.caption(eta)
        return
    if busy:
        st.rerun()  # the chain just ended: redraw the whole page (buttons enabled again, counts, links)
    if all(j.state == "done" for j in current):
        st.success("Done. Next: read the per-machine AUC/pAUC, ROC curves and embeddings on **Results**, score "
                   "your own clips on **Score**, or follow the 3-minute demo recording on **Monitor**.",
                   icon=":material/task_alt:")
        c1, c2, c3 = st.columns(3)
        c1.page_link("../pages/results.py", label="Results", icon=":material/monitoring:")
        c2.page_link("../pages/score.py", label="Score", icon=":material/rule:")
        c3.page_link("../pages/monitor.py", label="Monitor", icon=":material/timeline:")
    else:
        bad = next(j for j in current if j.state != "done")
        st.error(f"Job {bad.id} ({bad.name}) ended {bad.state}: its log is on **Jobs**.", icon=":material/error:")


_chain_status()

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
