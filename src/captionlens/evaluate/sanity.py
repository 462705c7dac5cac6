"""Sanity checks for saliency maps (Adebayo et al., 2018): cascading model-parameter randomisation.

A map that explains the model must change when the model's weights are replaced by random ones. The
parameters are randomised cumulatively from the top of the model down — first everything outside the
image trunk (the decoder and the encoder's head), then the trunk's stages from the last to the first —
and after each step every method's maps of the same captions (teacher-forced) are compared with the
trained model's: Spearman rank correlation of the map values and SSIM of the min-max normalised maps,
on maps resized to `size` x `size`. The verdict of a method follows one stated rule per step
(`VERDICT_RULE`): two steps are required, the first (the decoder and the encoder's head randomised: the
part of the model that chooses the word) and the last (every parameter randomised); a method fails at the
first required step after which its maps' mean rank correlation with the trained model's is not below
`PASS_BELOW`. Only the first catches a map that ignores the word: a map made from the image and the
trunk alone survives the first step unchanged and still changes when the trunk is randomised.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from torch import nn

from captionlens.evaluate.result import SanityResult, SanityStep
from captionlens.explain.api import ImageLike, explain_batch
from captionlens.explain.maps import normalize_maps
from captionlens.explain.result import CaptionExplanation
from captionlens.models.protocol import Captioner

PASS_BELOW = 0.5
VERDICT_RULE = (f"passes when the mean Spearman rank correlation between its maps and the trained model's is below "
                f"{PASS_BELOW} after each required step: the decoder and head randomised (the part that chooses "
                f"the word), and every parameter randomised")


def randomisation_steps(model: Captioner) -> list[tuple[str, list[nn.Module]]]:
    """(label, modules) to randomise, top first: the modules outside the trunk's stages ("decoder and
    head"), then each trunk stage from the last to the first. Cumulative: step k randomises steps 0..k."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"sanity checks randomise an nn.Module's parameters; got {type(model).__name__}")
    stages = model.trunk().stages
    in_trunk = {id(m) for m in stages.modules()}
    rest = [m for m in model.modules() if id(m) not in in_trunk and _has_own_state(m)]
    steps = [("decoder and head", rest)]
    for name, stage in reversed(list(stages.named_children())):
        steps.append((f"trunk {name}", [m for m in stage.modules() if _has_own_state(m)]))
    return steps


def _has_own_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))


def randomise(modules: Sequence[nn.Module], generator: torch.Generator) -> None:
    """Replace the parameters of `modules` by fresh random values: each module's own initialisation when
    it has one (`reset_parameters`, which also resets batch-norm statistics), else N(0, 0.02)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    try:
        with torch.no_grad():
            for module in modules:
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
                else:
                    for p in module.parameters(recurse=False):
                        p.normal_(0.0, 0.02)
    finally:
        torch.random.set_rng_state(state)


def cascading_models(model: Captioner, seed: int = 0) -> Iterator[tuple[str, Captioner]]:
    """The model with its parameters randomised cumulatively, one copy per step (the model is not touched)."""
    generator = torch.Generator().manual_seed(seed)
    randomised: Any = copy.deepcopy(model)
    copies = dict(zip((id(m) for m in model.modules()), randomised.modules()))  # type: ignore[attr-defined]
    for label, modules in randomisation_steps(model):
        randomise([copies[id(m)] for m in modules], generator)
        yield label, randomised


def map_similarity(a: np.ndarray, b: np.ndarray, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(Spearman rank correlation, SSIM) of each pair of (T, H, W) maps, resized to `size` x `size`.
    A constant map has no ranks: its correlation is 0 when the other map varies, 1 when both are constant."""
    small_a, small_b = _resized(a, size), _resized(b, size)
    rho = np.empty(len(small_a))
    ssim = np.empty(len(small_a))
    for i, (x, y) in enumerate(zip(small_a, small_b)):
        flat_x, flat_y = x.ravel(), y.ravel()
        if np.ptp(flat_x) == 0 or np.ptp(flat_y) == 0:
            rho[i] = 1.0 if np.ptp(flat_x) == np.ptp(flat_y) == 0 else 0.0
        else:
            rho[i] = spearmanr(flat_x, flat_y).statistic
        nx, ny = normalize_maps(x[None])[0], normalize_maps(y[None])[0]
        ssim[i] = structural_similarity(nx, ny, data_range=1.0)
    return rho, ssim


def _resized(maps: np.ndarray, size: int) -> np.ndarray:
    tensor = torch.as_tensor(np.asarray(maps, np.float32))[:, None]
    return F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)[:, 0].numpy().astype(np.float64)


def sanity_check(model: Captioner, images: Sequence[ImageLike], captions: Sequence[str], methods: Sequence[str],
                 settings: Mapping[str, Mapping[str, Any]] | None = None, seed: int = 0,
                 trained: Sequence[CaptionExplanation] | None = None,
                 target_layer: str | int | None = None) -> dict[str, SanityResult]:
    """Per method: its maps' similarity to the trained model's after each randomisation step, over every
    word of the given captions of `images` (each method's maps of the trained model in `trained`, or
    computed), and its verdict under `VERDICT_RULE`."""
    if trained is None:
        trained = explain_batch(model, images, methods, captions=captions, settings=settings,
                                target_layer=target_layer)
    steps: dict[str, list[SanityStep]] = {name: [] for name in methods}
    labels = [label for label, _ in randomisation_steps(model)]
    required = {labels[0], labels[-1]}
    for label, randomised in cascading_models(model, seed):
        again = explain_batch(randomised, images, methods, captions=captions, settings=settings,
                              target_layer=target_layer)
        for name in methods:
            pairs = [map_similarity(a[name].maps, b[name].maps) for a, b in zip(trained, again) if a.tokens]
            rho = np.concatenate([p[0] for p in pairs]) if pairs else np.array([])
            ssim = np.concatenate([p[1] for p in pairs]) if pairs else np.array([])
            steps[name].append(SanityStep(label, float(np.mean(rho)) if len(rho) else None,
                                          float(np.mean(ssim)) if len(ssim) else None, label in required))
    return {name: _result(layers) for name, layers in steps.items()}


def _result(layers: Sequence[SanityStep]) -> SanityResult:
    """The verdict: the first required step the maps survive (correlation not below PASS_BELOW, or
    nothing measured) is where the method fails."""
    failed_at = next((step.randomised for step in layers if step.required
                      and (step.spearman is None or step.spearman >= PASS_BELOW)), None)
    if not layers:
        failed_at = "no randomisation step"
    return SanityResult(tuple(layers), "fail" if failed_at else "pass", VERDICT_RULE, failed_at)
