"""Training and inference speed of each backbone on this machine, with model GFLOPs.

    python -m bench.speed                 # all backbones at 28 and 224 px
    python -m bench.speed --sizes 28 --models resnet18-28 cnn-small

For each backbone and input size (1-channel input, 2 classes): forward GFLOPs per
image (torch's FlopCounterMode; a multiply-add counts as 2 FLOPs), training
images/s (forward + backward + AdamW step, batch 32, channels-last), and
inference images/s at batch 1 and batch 64. Each figure is the median of timed
repeats after a warm-up, so later work can compare against the machine's peak.
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench._common import machine, write_results

MODELS = ["cnn-small", "resnet18-28", "resnet18", "mobilenetv3-small", "mobilenetv3-large", "efficientnet-b0",
          "densenet121", "densenet121-28"]


def gflops(model, size: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 1, size, size))
    return counter.get_total_flops() / 1e9


def _rate(step, images_per_call: int, budget_s: float, min_repeats: int = 3) -> float:
    step()  # warm-up
    times = []
    deadline = time.perf_counter() + budget_s
    while len(times) < min_repeats or time.perf_counter() < deadline:
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        if len(times) >= 50:
            break
    return images_per_call / statistics.median(times)


def measure(name: str, size: int, budget_s: float) -> dict:
    import torch

    from meddx.models import create_model

    model = create_model(name, num_classes=2, in_chans=1).to(memory_format=torch.channels_last)
    flops = gflops(model, size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x_train = torch.randn(32, 1, size, size).contiguous(memory_format=torch.channels_last)
    y_train = torch.randint(0, 2, (32,))

    def train_step() -> None:
        model.train()
        loss = torch.nn.functional.cross_entropy(model(x_train), y_train)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def infer(batch: torch.Tensor):
        def step() -> None:
            with torch.inference_mode():
                model(batch)
        return step

    train_rate = _rate(train_step, 32, budget_s)
    model.eval()
    one = torch.randn(1, 1, size, size).contiguous(memory_format=torch.channels_last)
    many = torch.randn(64, 1, size, size).contiguous(memory_format=torch.channels_last)
    return {"model": name, "size": size, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "gflops": flops, "train_img_s": train_rate, "infer_b1_img_s": _rate(infer(one), 1, budget_s),
            "infer_b64_img_s": _rate(infer(many), 64, budget_s)}


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--sizes", nargs="+", type=int, default=[28, 224])
    parser.add_argument("--budget", type=float, default=4.0, help="seconds of timed repeats per figure")
    parser.add_argument("--stem", default="speed")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    rows = []
    for size in args.sizes:
        for name in args.models:
            if name.endswith("-28") and size > 64:
                # a stride-1 stem is for 28-64 px inputs; at 224 px densenet121-28 needs more than 24 GiB
                rows.append({"model": name, "size": size, "error": "28 px stem, meant for inputs of 28-64 px"})
                continue
            try:
                row = measure(name, size, args.budget)
            except RuntimeError as exc:  # e.g. densenet121 at 28 px: its stem shrinks the image to nothing
                print(f"{name} @ {size}: cannot run ({exc})", flush=True)
                rows.append({"model": name, "size": size, "error": str(exc).splitlines()[0]})
                continue
            rows.append(row)
            print(f"{name} @ {size}: {row['gflops']:.3f} GFLOPs, train {row['train_img_s']:.1f} img/s, "
                  f"infer b1 {row['infer_b1_img_s']:.1f} / b64 {row['infer_b64_img_s']:.1f} img/s", flush=True)
    info = machine()
    lines = ["# Speed on this machine", "",
             f"{info['cores']} CPU cores ({info['threads']} torch threads), torch {info['torch']}, "
             f"{'GPU ' + info['cuda'] if info['cuda'] else 'no GPU'}; 1-channel input, 2 classes, channels-last. "
             "Training: batch 32, forward + backward + AdamW. GFLOPs: forward, one image, multiply-add = 2.", "",
             "| model | px | params (M) | GFLOPs/img | train img/s | infer img/s (batch 1) | infer img/s (batch 64) | "
             "achieved GFLOP/s (infer b64) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['size']} | – | – | – | – | – | cannot run: {r['error']} |")
            continue
        lines.append(f"| {r['model']} | {r['size']} | {r['params_m']:.2f} | {r['gflops']:.3f} | {r['train_img_s']:.1f} | "
                     f"{r['infer_b1_img_s']:.1f} | {r['infer_b64_img_s']:.1f} | {r['gflops'] * r['infer_b64_img_s']:.1f} |")
    paths = write_results(args.stem, {"machine": info, "rows": rows}, "\n".join(lines))
    print("\n".join(lines))
    print("written:", *paths)


if __name__ == "__main__":
    main()
