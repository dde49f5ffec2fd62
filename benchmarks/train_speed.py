"""Training throughput (patches/s, forward + backward + AdamW step) of the encoder at several widths,
for a supervised step and an SSL step (two augmented views, projection head, ACL loss).

    python benchmarks/train_speed.py [--widths 16 32 64] [--batch 64] [--steps 5]

Synthetic log-mel patches: the speed does not depend on the data. Writes reports/train_speed.json.
"""

import argparse
import json
import time

import torch
from _data import REPORTS, machine

from training.augment import AugmentConfig, make_views
from training.losses import acl_ssl_loss, acl_supervised_loss
from training.model import ModelConfig, SoundModel


def measure(width: int, batch: int, steps: int, ssl: bool) -> float:
    torch.manual_seed(0)
    model = SoundModel(ModelConfig(width=width, num_classes=10))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, 101, 96) - 2
    y = torch.randint(0, 10, (batch,))

    def step():
        if ssl:
            views = make_views(x, x.flip(0), AugmentConfig(), g)  # (2B, 1, T, M)
            h = model.encoder(views)
            loss = acl_ssl_loss(model.projection(h), h)
        else:
            h = model.encoder(x)
            loss = acl_supervised_loss(model.classifier(h), h, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch * (2 if ssl else 1) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = [{"width": w, "supervised_patches_per_s": round(measure(w, args.batch, args.steps, False), 1),
             "ssl_patches_per_s": round(measure(w, args.batch, args.steps, True), 1)} for w in args.widths]
    report = {"device": device, "machine": f"{machine()}, torch {torch.__version__}",
              "threads": torch.get_num_threads(), "batch": args.batch, "rows": rows}
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "train_speed.json").write_text(json.dumps(report, indent=2) + "\n")
    print("| width | supervised patches/s | SSL patches/s (both views) |\n|---|---|---|")
    for r in rows:
        print(f"| {r['width']} | {r['supervised_patches_per_s']} | {r['ssl_patches_per_s']} |")


if __name__ == "__main__":
    main()
