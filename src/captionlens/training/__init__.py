"""Training: teacher-forced cross-entropy, free-running validation BLEU-4, resumable checkpoints.

`train(TrainConfig(data=...))` builds the vocabulary from the training captions, trains (in one process
or, under `torchrun`, with DistributedDataParallel), and keeps `best.safetensors` (highest validation
BLEU-4), `last.safetensors` and `last.train.pt` in `out_dir`, with a JSONL log and a loss/BLEU plot.

    config   TrainConfig (what a run depends on) and the recipes its open sizes come from
    batches  ImageCaptions and collate_images: batches of whole images with all their captions
    loop     train, train_epoch, caption_loss, make_scheduler, validate, the DistributedDataParallel wrapping
    state    the files written after each epoch (atomically) and what `resume` reads back

The plot itself is drawn by `captionlens.viz.training`.
"""
from captionlens.training.batches import ImageCaptions, collate_images
from captionlens.training.config import PHOTOS_RECIPE, PRELOAD_BYTES, RECIPES, SHAPES_RECIPE, Recipe, TrainConfig
from captionlens.training.loop import TrainResult, caption_loss, make_scheduler, train, train_epoch, validate
from captionlens.training.state import BEST_NAME, CONFIG_NAME, LAST_NAME, LOG_NAME, PLOT_NAME, STATE_NAME

__all__ = ["BEST_NAME", "CONFIG_NAME", "LAST_NAME", "LOG_NAME", "PHOTOS_RECIPE", "PLOT_NAME", "PRELOAD_BYTES",
           "RECIPES", "SHAPES_RECIPE", "STATE_NAME", "ImageCaptions", "Recipe", "TrainConfig", "TrainResult",
           "caption_loss", "collate_images", "make_scheduler", "train", "train_epoch", "validate"]
