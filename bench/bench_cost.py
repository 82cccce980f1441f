"""The reproduction's cost model, priced on every GPU of its table: FLOPs counted, throughput assumed.

    python bench/bench_cost.py            # writes bench/results/cost.md and cost.json

The same numbers ``rcmae reproduce --dry-run`` prints (``rcmae.evaluation.reproduce.cost``), for DCASE 2020's
published clip counts and the ``paper`` preset, on each GPU of ``cost.GPUS`` at the assumed utilisations.
No GPU is needed: the models are traced on the meta device.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, write_result  # noqa: E402

from rcmae.evaluation.reproduce import ARMS, cost  # noqa: E402


def main() -> None:
    train = cost.training_flops("paper")
    bank = cost.audioldm_flops()
    clips = cost.dcase2020_counts("all")
    raw = {"training": train, "audioldm": bank, "clips": clips, "per_gpu": {},
           "header": header("The reproduction's cost from FLOPs (no GPU needed)")}
    for key in cost.GPUS:
        raw["per_gpu"][key] = cost.gpu_hours(train, clips, ARMS, cost.Throughput(key), bank=bank, per_clip=4)
    text = render(json.loads(json.dumps(raw, default=float)))
    path = write_result("cost", text)
    (path.parent / "cost.json").write_text(json.dumps(raw, indent=1, default=float) + "\n")
    print(text)
    print(f"wrote {path} and cost.json")


def render(raw: dict) -> str:
    """bench/results/cost.md from the raw numbers (and the GPU table in rcmae.evaluation.reproduce.cost)."""
    train, bank, clips = raw["training"], raw["audioldm"], raw["clips"]
    rows = []
    for key, (name, peak) in cost.GPUS.items():
        res = raw["per_gpu"][key]
        st = res["steps"]
        rows.append(f"| {name} | {peak / 1e12:.0f} | {st['pretrain']['step_s']:.3f} | "
                    f"{st['bank']['s_per_generation']:.3f} | {res['arms']['rcmae']['gpu_hours']:.1f} | "
                    f"{res['arms']['rcmae-nodda']['gpu_hours']:.1f} | {res['total_gpu_hours']:.1f} |")
    t, g = 1e12, 1e9
    return raw["header"] + (
        f"`paper` preset ({train['params'] / 1e6:.1f} M parameters), DCASE 2020's published clip counts: "
        f"{clips['pretrain']:,} pretraining clips (`--pretrain-data all`), {clips['finetune']:,} fine-tuning clips "
        f"(41 IDs), {clips['test']:,} test clips; 4 AudioLDM copies per pretraining clip.\n\n"
        f"- FLOPs per clip per step (torch.utils.flop_counter on the meta device, 2 per multiply-add): pretraining "
        f"{train['pretrain_per_clip'] / g:.1f} G (both branches, forward + backward, mask ratio 0.5-0.75), "
        f"fine-tuning {train['finetune_per_clip'] / g:.1f} G, evaluation {train['eval_per_clip'] / g:.1f} G per "
        "test clip.\n"
        f"- One AudioLDM generation (cvssp/audioldm-s-full-v2's architecture): {bank['per_generation'] / t:.2f} "
        f"TFLOP = VAE encode {bank['vae_encode'] / t:.2f} + CLAP text {bank['text'] / t:.3f} + "
        f"{bank['mean_steps']:.2f} guided UNet steps x {bank['unet_step'] / t:.3f} + VAE decode "
        f"{bank['vae_decode'] / t:.2f} + HiFi-GAN {bank['vocoder'] / t:.2f}.\n"
        f"- Throughput: the GPU's bf16 dense peak x {cost.TRAIN_UTILISATION:.0%} (training) or "
        f"{cost.AUDIOLDM_UTILISATION:.0%} (AudioLDM), **assumed**, until `bench/bench_paper.py` measures step "
        "times on a GPU (then `--step-times` replaces them).\n\n"
        "| GPU | bf16 peak (TFLOP/s) | pretraining step (s, batch 128) | AudioLDM s per generation | "
        "GPU hours with DDA | GPU hours without DDA | both arms |\n|---|---:|---:|---:|---:|---:|---:|\n"
        + "\n".join(rows) + "\n\n"
        "GPU hours do not depend on how many GPUs share them (wall hours = GPU hours / GPUs at perfect scaling). "
        "The bank is about a third of the with-DDA arm; pretraining is nearly all of the rest.\n")


if __name__ == "__main__":
    main()
