"""Training a neural codec on one's own slides (`wsitranscode train`).

Rate-distortion training as in CompressAI: loss = bpp + lambda * distortion, where distortion is
255^2 * MSE (`mse`), 1 - MS-SSIM (`ms-ssim`), or 255^2 * MSE + 100 * LPIPS (`mse+lpips`, the
SPL2 recipe's perceptual term; 100 * LPIPS is about the size of 255^2 * MSE at 35 dB on tissue).
LPIPS is used only when its AlexNet weights are available (cache or --lpips-weights); otherwise
training says so and uses MSE alone. The entropy model's quantiles have their own optimiser
(CompressAI's auxiliary loss).

Reproducible and resumable: each step's crops and noise come from generators seeded by (seed,
step), so a run resumed from its checkpoint takes exactly the steps an uninterrupted run would.
The checkpoint (`MODEL.ckpt` beside the output) holds the network, both optimisers, the step and
the history; it is written every `checkpoint_every` steps, on Ctrl-C, and at the end.

torch is imported inside functions only: importing this module is cheap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from wsitranscode.errors import UsageError

LOSSES = ("mse", "ms-ssim", "mse+lpips")
DEFAULT_LAMBDA = {"mse": 0.0130, "ms-ssim": 8.73, "mse+lpips": 0.0130}  # CompressAI quality 4
LPIPS_WEIGHT = 100.0
CHECKPOINT_SUFFIX = ".ckpt"
LATENT_INIT_SCALE = 10.0
DEFAULT_CHANNELS = (128, 192)  # CompressAI's bmshj2018 at qualities 1-5


@dataclass
class TrainConfig:
    sources: list[Path]
    output: Path
    arch: str = "factorized"
    channels: tuple[int, int] | None = None  # None: the --init model's, else DEFAULT_CHANNELS
    lmbda: float | None = None
    loss: str = "mse"
    init: Path | None = None
    steps: int = 2000
    batch_size: int = 8
    patch: int = 128
    tile_size: int = 256
    tiles_per_slide: int = 64
    val_fraction: float = 0.25
    validation: list[str] = field(default_factory=list)
    lr: float = 5e-4
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    checkpoint_every: int = 200
    val_every: int = 200
    log_every: int = 50
    half: bool = True
    lpips_weights: Path | None = None
    allow_download: bool = True  # LPIPS weights through torchvision's URL when not cached
    restart: bool = False

    @property
    def lambda_(self) -> float:
        return DEFAULT_LAMBDA[self.loss] if self.lmbda is None else float(self.lmbda)

    @property
    def checkpoint_path(self) -> Path:
        return self.output.with_suffix(CHECKPOINT_SUFFIX)

    def fingerprint(self) -> dict[str, Any]:
        """What must not change between a run and its resumption (steps may grow)."""
        keys = ("arch", "channels", "loss", "batch_size", "patch", "tile_size", "tiles_per_slide",
                "val_fraction", "validation", "lr", "seed", "half")  # fmt: skip
        values = {k: getattr(self, k) for k in keys}
        values["lambda"] = self.lambda_
        values["channels"] = list(self.channels) if self.channels else None
        values["sources"] = sorted(str(Path(s).resolve()) for s in self.sources)
        values["init"] = str(self.init) if self.init else None
        return values

    def check(self) -> None:
        from wsitranscode.neural.nets import ARCHITECTURES

        if self.arch not in ("factorized", "stain-aware"):
            raise UsageError(
                f"--arch {self.arch}: train supports factorized and stain-aware "
                f"(known architectures: {', '.join(ARCHITECTURES)})"
            )
        if self.loss not in LOSSES:
            raise UsageError(f"--loss {self.loss}: choose one of {', '.join(LOSSES)}")
        if self.patch % 16 or self.patch < 32 or self.patch > self.tile_size:
            raise UsageError(
                "--patch must be a multiple of 16, at least 32 and at most --tile-size"
            )
        if self.steps < 1 or self.batch_size < 1:
            raise UsageError("--steps and --batch-size must be positive")
        if self.output.suffix != ".pt":
            raise UsageError("the model file (-o) must end in .pt", path=self.output)


@dataclass
class TrainResult:
    model_path: Path
    meta: dict[str, Any]
    history: list[dict[str, Any]]
    resumed_from: int


Progress = Callable[[dict[str, Any]], None]


def train(config: TrainConfig, progress: Progress | None = None) -> TrainResult:
    """Train (or resume) and write the model file; see the module docstring."""
    import torch

    config.check()
    _resolve_channels(config)
    emit = progress or (lambda event: None)
    if config.threads:
        torch.set_num_threads(config.threads)
    from wsitranscode.neural.engine import resolve_device

    device = resolve_device(config.device)
    train_set, val_set = _tiles(config, emit)
    state = _TrainingState.create(config, device, emit, train_set.tiles)
    resumed_from = state.step
    lpips = _load_lpips(config, device, emit)
    if state.step == 0 and len(val_set):
        figures = validate(state.net, val_set.tiles, config, device, lpips)
        state.history.append({"step": 0, **figures})
        emit({"event": "validation", "step": 0, **figures})
    try:
        while state.step < config.steps:
            _one_step(state, train_set.tiles, config, device, lpips)
            if state.step % config.log_every == 0 or state.step == config.steps:
                emit({"event": "step", **state.last})
            if val_set.tiles.size and (
                state.step % config.val_every == 0 or state.step == config.steps
            ):
                figures = validate(state.net, val_set.tiles, config, device, lpips)
                state.history.append({"step": state.step, **figures})
                emit({"event": "validation", "step": state.step, **figures})
            if state.step % config.checkpoint_every == 0:
                state.save_checkpoint()
    except KeyboardInterrupt:
        state.save_checkpoint()
        emit(
            {"event": "interrupted", "step": state.step, "checkpoint": str(config.checkpoint_path)}
        )
        raise
    state.save_checkpoint()
    model = _write_model(state, config, train_set, val_set, device, emit)
    return TrainResult(config.output, model.meta, state.history, resumed_from)


# --- data -------------------------------------------------------------------------------------


def _tiles(config: TrainConfig, emit: Progress) -> tuple[Any, Any]:
    from wsitranscode.neural.data import TileSet, build_tile_sets, open_slides

    slides = open_slides(config.sources)
    train_set, val_set = build_tile_sets(
        slides,
        tile_size=config.tile_size,
        tiles_per_slide=config.tiles_per_slide,
        val_fraction=config.val_fraction,
        seed=config.seed,
        validation=config.validation,
    )
    if not len(val_set) and len(train_set) >= 4:
        # One slide only: a split by slide is impossible, so hold out its last quarter of tiles.
        cut = len(train_set) * 3 // 4
        val_set = TileSet(train_set.tiles[cut:], train_set.slides[cut:])
        train_set = TileSet(train_set.tiles[:cut], train_set.slides[:cut])
        emit({"event": "warning", "message": "one slide only: validation tiles share its slide"})
    emit(
        {
            "event": "data",
            "slides": len(slides),
            "train_tiles": len(train_set),
            "val_tiles": len(val_set),
            "train_slides": sorted(set(train_set.slides)),
            "val_slides": sorted(set(val_set.slides)),
        }
    )
    return train_set, val_set


def _batch(tiles: np.ndarray, config: TrainConfig, step: int) -> np.ndarray:
    """Seeded random crops with flips and 90-degree turns (H&E has no orientation)."""
    rng = np.random.default_rng([config.seed, step])
    picks = rng.integers(0, len(tiles), size=config.batch_size)
    limit = config.tile_size - config.patch + 1
    ys = rng.integers(0, limit, size=config.batch_size)
    xs = rng.integers(0, limit, size=config.batch_size)
    turns = rng.integers(0, 4, size=config.batch_size)
    flips = rng.integers(0, 2, size=config.batch_size)
    crops = []
    for i, y, x, k, f in zip(picks, ys, xs, turns, flips, strict=True):
        crop = np.rot90(tiles[i, y : y + config.patch, x : x + config.patch], k)
        crops.append(crop[:, ::-1] if f else crop)
    return np.ascontiguousarray(np.stack(crops))


def _to_tensor(tiles: np.ndarray, device: Any) -> Any:
    import torch

    return (
        torch.from_numpy(np.ascontiguousarray(tiles)).to(device).permute(0, 3, 1, 2).float() / 255
    )


# --- model and optimisers ---------------------------------------------------------------------


@dataclass
class _TrainingState:
    config: TrainConfig
    net: Any
    optimizer: Any
    aux_optimizer: Any
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    last: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    elapsed_before: float = 0.0

    @classmethod
    def create(
        cls, config: TrainConfig, device: Any, emit: Progress, tiles: np.ndarray
    ) -> _TrainingState:
        import torch

        from wsitranscode.neural import nets

        torch.manual_seed(config.seed)
        net = nets.build(config.arch, *config.channels)
        if config.init:
            _initialise_from(net, config.init, emit)
        else:
            _start_at_the_mean_colour(net, tiles)
        net = net.to(device).train()
        main = [p for n, p in net.named_parameters() if not n.endswith(".quantiles")]
        aux = [p for n, p in net.named_parameters() if n.endswith(".quantiles")]
        state = cls(
            config,
            net,
            torch.optim.Adam(main, lr=config.lr),
            torch.optim.Adam(aux, lr=1e-3),
        )
        state.resume(emit)
        return state

    def resume(self, emit: Progress) -> None:
        import torch

        path = self.config.checkpoint_path
        if not path.is_file() or self.config.restart:
            return
        saved = torch.load(path, map_location="cpu", weights_only=True)
        wanted = _jsonable(self.config.fingerprint())
        if saved.get("fingerprint") != wanted:
            differences = option_differences(saved.get("fingerprint") or {}, wanted)
            raise UsageError(
                "a checkpoint from a training run with other options exists "
                f"({'; '.join(differences)}); use the same options to resume it, or --restart "
                "to start over",
                path=path,
            )
        self.net.load_state_dict(saved["net"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.aux_optimizer.load_state_dict(saved["aux_optimizer"])
        self.step = int(saved["step"])
        self.history = list(saved.get("history", []))
        self.elapsed_before = float(saved.get("elapsed_s", 0.0))
        emit({"event": "resumed", "step": self.step, "checkpoint": str(path)})

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    def save_checkpoint(self) -> None:
        import torch

        path = self.config.checkpoint_path
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        torch.save(
            {
                "fingerprint": _jsonable(self.config.fingerprint()),
                "net": self.net.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "aux_optimizer": self.aux_optimizer.state_dict(),
                "step": self.step,
                "history": self.history,
                "elapsed_s": self.elapsed,
            },
            partial,
        )
        partial.replace(path)


# What each fingerprint entry is called on the command line, for "which option differs".
_OPTION_NAMES = {
    "arch": "--arch",
    "channels": "--channels",
    "loss": "--loss",
    "lambda": "--lambda",
    "batch_size": "--batch-size",
    "patch": "--patch",
    "tile_size": "--tile-size",
    "tiles_per_slide": "--tiles-per-slide",
    "val_fraction": "--val-fraction",
    "validation": "--val-slide",
    "lr": "--lr",
    "seed": "--seed",
    "half": "--float32",
    "sources": "--data",
    "init": "--init",
}


def option_differences(recorded: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Each option in which two fingerprints differ, as "--lr 0.001 there, 0.0005 now"."""

    def shown(key: str, value: Any) -> str:
        if key == "half" and isinstance(value, bool):
            return "off" if value else "on"  # --float32 is the opposite of half
        if value is None or value == []:
            return "not set"
        if isinstance(value, list):
            return " ".join(map(str, value))
        return str(value)

    keys = [*wanted, *(k for k in recorded if k not in wanted)]
    return [
        f"{_OPTION_NAMES.get(k, k)} {shown(k, recorded.get(k))} in the checkpoint, "
        f"{shown(k, wanted.get(k))} now"
        for k in keys
        if recorded.get(k) != wanted.get(k)
    ]


def _start_at_the_mean_colour(net: Any, tiles: np.ndarray) -> None:
    """Start near a useful codec: the mean colour as output bias, latents above the noise.

    A fresh network reconstructs about black; tissue is mostly bright, and learning that offset
    through the whole decoder costs hundreds of steps. Its latents are also small next to the
    quantisation noise (uniform, width 1) that hides them in training, so the analysis output is
    scaled up and the synthesis input down by the same factor. Only initial values change: the
    architecture stays CompressAI's.
    """
    import torch

    mean = tiles.reshape(-1, 3).mean(axis=0) / 255.0
    with torch.no_grad():
        net.g_s[-1].bias.copy_(torch.from_numpy(mean.astype(np.float32)))
        net.g_a[-1].weight.mul_(LATENT_INIT_SCALE)
        net.g_s[0].weight.div_(LATENT_INIT_SCALE)


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


def _init_state(init: Path) -> dict[str, Any]:
    """The state dict of an --init model (ours or CompressAI's weights)."""
    from wsitranscode.neural.modelfile import FORMAT, read_state

    loaded = read_state(init)
    state = (
        loaded["state_dict"] if loaded.get("format") == FORMAT else loaded.get("state_dict", loaded)
    )
    if not loaded.get("format"):
        from compressai.zoo.pretrained import load_pretrained

        state = load_pretrained(state)
    return state


def _init_channels(init: Path) -> tuple[int, int]:
    """(N, M) of an --init model."""
    from wsitranscode.neural import nets

    state = _init_state(init)
    try:
        return nets.infer_shape(nets.infer_arch(state), state)
    except (KeyError, IndexError, AttributeError) as err:
        raise UsageError(
            "--init is not a bmshj2018 model (no g_a.0/g_a.6 weights)", path=init
        ) from err


def _resolve_channels(config: TrainConfig) -> None:
    """--channels: given, else the --init model's (fine-tuning keeps its size), else 128 192."""
    if config.init is None:
        config.channels = tuple(config.channels or DEFAULT_CHANNELS)  # type: ignore[assignment]
        return
    found = _init_channels(config.init)
    if config.channels is None:
        config.channels = found
    elif tuple(config.channels) != found:
        raise UsageError(
            f"--init model has N={found[0]}, M={found[1]} but --channels {config.channels[0]} "
            f"{config.channels[1]} was given: pass --channels {found[0]} {found[1]} (or leave "
            "--channels out to take the --init model's)",
            path=config.init,
        )


def _initialise_from(net: Any, init: Path, emit: Progress) -> None:
    """Fine-tune from a model (ours or CompressAI's); a factorized model can seed stain-aware."""
    import torch

    state = _init_state(init)
    own = net.state_dict()
    first = own["g_a.0.weight"]
    if "g_a.0.weight" in state and state["g_a.0.weight"].shape[1] != first.shape[1]:
        # RGB model into the stain-aware one: RGB filters kept, stain inputs start at zero.
        widened = torch.zeros_like(first)
        widened[:, : state["g_a.0.weight"].shape[1]] = state["g_a.0.weight"].float()
        state = {**state, "g_a.0.weight": widened}
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    missing = [k for k in own if k not in state and not k.startswith("stain.")]
    try:
        net.load_state_dict({**{k: own[k] for k in own if k not in state}, **state}, strict=False)
    except RuntimeError as err:
        raise UsageError(
            f"--init weights do not fit --arch/--channels: {' '.join(str(err).split())[:200]}",
            path=init,
        ) from err
    emit({"event": "init", "from": str(init), "missing": missing})


def _load_lpips(config: TrainConfig, device: Any, emit: Progress) -> Any:
    if config.loss != "mse+lpips":
        return None
    from wsitranscode.quality.perceptual import Lpips, MetricUnavailable

    try:
        metric = Lpips.load(
            config.lpips_weights, allow_download=config.allow_download, device=str(device)
        )
    except MetricUnavailable as err:
        emit(
            {
                "event": "warning",
                "message": f"LPIPS not available ({err}); training with MSE only",
            }
        )
        return None
    model = metric.model.to(device).eval()
    for param in model.parameters():
        param.requires_grad_(False)
    emit({"event": "lpips", "weights": str(metric.weights_path)})
    return model


# --- steps ------------------------------------------------------------------------------------


def _rate_distortion(
    out: dict[str, Any], x: Any, config: TrainConfig, lpips: Any
) -> tuple[Any, Any, Any]:
    """(loss, bpp, mse) of one forward pass."""
    import torch

    pixels = x.shape[0] * x.shape[2] * x.shape[3]
    bpp = sum(torch.log(lik).sum() for lik in out["likelihoods"].values()) / (-math.log(2) * pixels)
    x_hat = out["x_hat"]
    mse = torch.mean((x_hat - x) ** 2)
    if config.loss == "ms-ssim":
        from pytorch_msssim import ms_ssim

        # Five scales need a side above 16 * (window - 1): small crops get a smaller window.
        window = 11
        while window > 3 and (window - 1) * 16 >= min(x.shape[2:]):
            window -= 2
        distortion = 1 - ms_ssim(x_hat.clamp(0, 1), x, data_range=1.0, win_size=window)
    else:
        distortion = 255.0**2 * mse
        if lpips is not None:
            distortion = distortion + LPIPS_WEIGHT * lpips(x_hat, x, normalize=True).mean()
    return bpp + config.lambda_ * distortion, bpp, mse


def _learning_rate(config: TrainConfig, step: int) -> float:
    """Cosine decay from lr to lr/10 over the run: short runs end on a settled model."""
    progress = min(1.0, step / max(1, config.steps))
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _one_step(
    state: _TrainingState, tiles: np.ndarray, config: TrainConfig, device: Any, lpips: Any
):
    import torch

    torch.manual_seed(config.seed * 1_000_003 + state.step)  # the training noise of this step
    x = _to_tensor(_batch(tiles, config, state.step), device)
    for group in state.optimizer.param_groups:
        group["lr"] = _learning_rate(config, state.step)
    state.net.train()
    state.optimizer.zero_grad(set_to_none=True)
    state.aux_optimizer.zero_grad(set_to_none=True)
    loss, bpp, mse = _rate_distortion(state.net(x), x, config, lpips)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(state.net.parameters(), 1.0)
    state.optimizer.step()
    aux_loss = state.net.aux_loss()
    aux_loss.backward()
    state.aux_optimizer.step()
    state.step += 1
    state.last = {
        "step": state.step,
        "loss": loss.item(),
        "bpp": bpp.item(),
        "psnr": _psnr(mse.item()),
        "aux": aux_loss.item(),
        "elapsed_s": round(state.elapsed, 1),
    }


def _psnr(mse: float) -> float:
    return 10 * math.log10(1.0 / mse) if mse > 0 else float("inf")


def validate(net: Any, tiles: np.ndarray, config: TrainConfig, device: Any, lpips: Any) -> dict:
    """Validation loss, estimated bpp and PSNR (8-bit, rounded) over whole validation tiles."""
    import torch

    net.eval()
    losses, bpps, sq = [], [], []
    with torch.inference_mode():
        for start in range(0, len(tiles), 8):
            x = _to_tensor(tiles[start : start + 8], device)
            out = net(x)
            loss, bpp, _ = _rate_distortion(out, x, config, lpips)
            rounded = out["x_hat"].clamp(0, 1).mul(255).round()
            sq.append(float(torch.mean((rounded - x * 255) ** 2)) * len(x))
            losses.append(float(loss) * len(x))
            bpps.append(float(bpp) * len(x))
    net.train()
    n = len(tiles)
    mse = sum(sq) / n
    return {
        "val_loss": sum(losses) / n,
        "val_bpp": sum(bpps) / n,
        "val_psnr": 10 * math.log10(255.0**2 / mse) if mse > 0 else float("inf"),
    }


# --- the model file ---------------------------------------------------------------------------


def _write_model(
    state: _TrainingState,
    config: TrainConfig,
    train_set: Any,
    val_set: Any,
    device: Any,
    emit: Progress,
) -> Any:
    import compressai
    import torch

    from wsitranscode import __version__
    from wsitranscode.neural.modelfile import save_model

    name = config.output.stem
    meta = {
        "id": name,
        "arch": config.arch,
        "N": config.channels[0],
        "M": config.channels[1],
        "loss": config.loss,
        "lambda": config.lambda_,
        "training": {
            **{
                k: v
                for k, v in _jsonable(asdict(config)).items()
                if k not in ("output", "restart", "allow_download")
            },
            "steps_done": state.step,
            "train_tiles": len(train_set),
            "train_slides": sorted(set(train_set.slides)),
            "val_tiles": len(val_set),
            "val_slides": sorted(set(val_set.slides)),
            "wall_time_s": round(state.elapsed, 1),
            "device": str(device),
            "threads": torch.get_num_threads(),
        },
        "history": state.history,
        "created": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "software": {
            "wsitranscode": __version__,
            "torch": str(torch.__version__),
            "compressai": compressai.__version__,
        },
    }
    meta = _jsonable(meta)
    model = save_model(config.output, state.net, meta, half=config.half)
    if len(val_set):
        meta["validation"] = measure_codec(model, val_set.tiles)
        model = save_model(config.output, state.net, meta, half=config.half)
    emit({"event": "saved", "path": str(config.output), "weights_sha256": model.weights_sha256,
          "validation": meta.get("validation")})  # fmt: skip
    return model


def measure_codec(model: Any, tiles: np.ndarray) -> dict[str, float]:
    """Real bitstreams: mean bpp (container included) and PSNR of the decoded tiles."""
    from wsitranscode.neural.engine import decode_frames, encode_tiles, remember

    remember(model)
    payloads = encode_tiles(model, list(tiles), device="cpu", batch_size=8)
    decoded = decode_frames(payloads, batch_size=8)
    bpp = [8 * len(p) / (t.shape[0] * t.shape[1]) for p, t in zip(payloads, tiles, strict=True)]
    psnr = []
    for original, back in zip(tiles, decoded, strict=True):
        mse = float(np.mean((original.astype(np.float64) - back) ** 2))
        psnr.append(10 * math.log10(255.0**2 / mse) if mse > 0 else 99.0)
    return {
        "tiles": len(tiles),
        "bpp": round(float(np.mean(bpp)), 4),
        "psnr_db": round(float(np.mean(psnr)), 3),
        "psnr_db_std": round(float(np.std(psnr)), 3),
    }
