"""`wsitranscode train`: train a neural codec on one's own slides (see wsitranscode/train.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from wsitranscode.commands import console_err, console_out, print_json


def add_parser(sub: Any, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument(
        "--data",
        nargs="+",
        type=Path,
        required=True,
        metavar="SOURCE",
        help="DICOM WSI folders/files, image files (PNG, JPEG, TIFF, SVS) or folders of images",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="model file to write (.pt)")
    p.add_argument("--arch", choices=["factorized", "stain-aware"], default="factorized")
    p.add_argument(
        "--channels",
        nargs=2,
        type=int,
        default=None,
        metavar=("N", "M"),
        help="channels of the transforms and of the latent (default: the --init model's, else "
        "128 192 as CompressAI's bmshj2018 at qualities 1-5)",
    )
    p.add_argument(
        "--lambda",
        dest="lmbda",
        type=float,
        default=None,
        help="rate-distortion trade-off (default: CompressAI quality 4: 0.013 for mse, 8.73 "
        "for ms-ssim)",
    )
    p.add_argument("--loss", choices=["mse", "ms-ssim", "mse+lpips"], default="mse")
    p.add_argument("--init", type=Path, default=None, help="fine-tune from this model or weights")
    p.add_argument("--steps", type=int, default=2000, help="training steps (default 2000)")
    p.add_argument("--batch-size", type=int, default=8, help="crops per step (default 8)")
    p.add_argument("--patch", type=int, default=128, help="crop side, multiple of 16 (128)")
    p.add_argument("--tile-size", type=int, default=256, help="sampled tile side (256)")
    p.add_argument("--tiles-per-slide", type=int, default=64, help="tiles sampled per slide (64)")
    p.add_argument(
        "--val-fraction", type=float, default=0.25, help="share of slides held out (0.25)"
    )
    p.add_argument(
        "--val-slide",
        action="append",
        default=[],
        metavar="NAME",
        help="hold out this slide (file name or path suffix) instead of a random choice",
    )
    p.add_argument(
        "--lr", type=float, default=5e-4, help="learning rate, cosine decay to lr/10 (default 5e-4)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--checkpoint-every", type=int, default=200, metavar="STEPS")
    p.add_argument("--val-every", type=int, default=200, metavar="STEPS")
    p.add_argument(
        "--log-every",
        type=int,
        default=50,
        metavar="STEPS",
        help="progress line every N steps (default 50)",
    )
    p.add_argument(
        "--float32", action="store_true", help="store float32 weights (default: float16)"
    )
    p.add_argument("--lpips-weights", type=Path, default=None, help="AlexNet weights for LPIPS")
    p.add_argument("--no-download", action="store_true", help="never download LPIPS weights")
    p.add_argument(
        "--restart", action="store_true", help="ignore an existing checkpoint and start over"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def run(args: argparse.Namespace) -> int:
    from wsitranscode.train import TrainConfig, train

    config = TrainConfig(
        sources=list(args.data),
        output=args.output,
        arch=args.arch,
        channels=(args.channels[0], args.channels[1]) if args.channels else None,
        lmbda=args.lmbda,
        loss=args.loss,
        init=args.init,
        steps=args.steps,
        batch_size=args.batch_size,
        patch=args.patch,
        tile_size=args.tile_size,
        tiles_per_slide=args.tiles_per_slide,
        val_fraction=args.val_fraction,
        validation=list(args.val_slide),
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        checkpoint_every=args.checkpoint_every,
        val_every=args.val_every,
        log_every=args.log_every,
        half=not args.float32,
        lpips_weights=args.lpips_weights,
        allow_download=not args.no_download,
        restart=args.restart,
    )
    result = train(config, progress=print_event)
    if args.json:
        print_json({"model": str(result.model_path), "resumed_from": result.resumed_from,
                    "meta": result.meta})  # fmt: skip
    else:
        validation = result.meta.get("validation") or {}
        console_out().print(
            f"model {result.model_path} (sha256:{result.meta['weights_sha256'][:12]}); "
            f"validation: {validation.get('bpp', 'n/a')} bpp, {validation.get('psnr_db', 'n/a')} "
            f"dB PSNR; use it with --codec neural --model {result.model_path}, or put it in a "
            "folder listed in WSITRANSCODE_MODELS for --codec path-" + result.model_path.stem,
            soft_wrap=True,
        )
    return 0


def print_event(event: dict[str, Any]) -> None:
    """One line per training event on stderr."""
    kind = event.get("event")
    if kind == "step":
        line = (
            f"step {event['step']}: loss {event['loss']:.4f}, bpp {event['bpp']:.3f}, "
            f"PSNR {event['psnr']:.2f} dB ({event['elapsed_s']} s)"
        )
    elif kind == "validation":
        line = (
            f"validation at step {event['step']}: loss {event['val_loss']:.4f}, "
            f"bpp {event['val_bpp']:.3f}, PSNR {event['val_psnr']:.2f} dB"
        )
    elif kind == "data":
        line = (
            f"{event['slides']} slides: {event['train_tiles']} training tiles from "
            f"{len(event['train_slides'])} slides, {event['val_tiles']} validation tiles from "
            f"{len(event['val_slides'])}"
        )
    elif kind == "resumed":
        line = f"resuming from step {event['step']} ({event['checkpoint']})"
    elif kind == "warning":
        line = f"[yellow]warning:[/] {event['message']}"
    elif kind == "interrupted":
        line = f"interrupted at step {event['step']}; rerun the same command to resume"
    elif kind == "saved":
        line = f"saved {event['path']} (weights sha256:{event['weights_sha256'][:12]})"
    elif kind == "init":
        if not event.get("missing"):
            return  # nothing to tell: every weight came from the --init model
        from rich.markup import escape

        line = (
            f"[yellow]warning:[/] {len(event['missing'])} weights are not in "
            f"{escape(str(event['from']))} and start fresh: "
            f"{escape(', '.join(event['missing'][:5]))}"
        )
    elif kind == "lpips":
        line = f"LPIPS weights: {event['weights']}"
    else:
        line = " ".join(f"{k}={v}" for k, v in event.items())
    console_err().print(line, soft_wrap=True, markup=kind in ("warning", "init"))
