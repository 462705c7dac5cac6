"""Training end to end on a tiny generated shapes set: checkpoints, log, plot, resume; and the loss
against a per-caption brute-force computation."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from PIL import Image

from captionlens.data.datasets import load_dataset
from captionlens.data.images import load_image_tensor
from captionlens.data.shapes import generate_shapes
from captionlens.data.vocabulary import SPECIAL_TOKENS, tokenize
from captionlens.models import ShowAttendTellConfig, ShowTellConfig, load_checkpoint
from captionlens.models.config import ARCHITECTURES
from captionlens.training import RECIPES, TrainConfig, caption_loss, train
from zoo import NUMBERED_WORDS, tiny_captioner

TINY = {"embed_size": 16, "hidden_size": 32, "attention_dim": 16, "image_size": 32, "batch_size": 8,
        "beam_size": 2, "max_length": 8, "progress": False, "warmup_steps": 2}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return generate_shapes(tmp_path_factory.mktemp("shapes"), n_train=24, n_val=4, n_test=2, image_size=32, seed=3)


def _log(out):
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_one_epoch_writes_checkpoints_log_and_plot_and_the_checkpoint_captions_as_trained(shapes, tmp_path):
    result = train(TrainConfig(data=shapes, format="shapes", epochs=1, out_dir=tmp_path / "run", **TINY))
    for path in (result.best_checkpoint, result.last_checkpoint, tmp_path / "run" / "last.train.pt"):
        assert path.is_file()
    [row] = _log(tmp_path / "run")
    assert row["epoch"] == 1 and row["train_loss"] > 0 and 0 <= row["val_bleu4"] <= 1 and row["images_per_s"] > 0
    with Image.open(tmp_path / "run" / "training_curves.png") as plot:
        assert plot.format == "PNG" and plot.width > 100

    ckpt = load_checkpoint(result.last_checkpoint)
    assert (ckpt.epoch, ckpt.metrics["epoch"]) == (1, 1) and ckpt.metrics["bleu4"] == row["val_bleu4"]
    train_words = {t for r in load_dataset(shapes, "shapes").split("train") for c in r.captions for t in tokenize(c)}
    assert set(ckpt.vocab.word2idx) == train_words | set(SPECIAL_TOKENS)
    image, _ = load_image_tensor(shapes / "Images" / "test_00000.png", ckpt.model.preprocessing)
    result.model.eval()
    for beam in (1, 3):
        assert (ckpt.model.generate_caption(image, ckpt.vocab, beam_size=beam)
                == result.model.generate_caption(image, result.vocab, beam_size=beam))


def test_resume_continues_where_the_last_run_stopped_and_matches_an_uninterrupted_run(shapes, tmp_path):
    # The step schedule does not depend on the number of epochs, so 1 + 1 epochs must equal 2.
    config = {"data": shapes, "format": "shapes", "schedule": "step", "step_epochs": 1, **TINY}
    train(TrainConfig(epochs=1, out_dir=tmp_path / "split", **config))
    resumed = train(TrainConfig(epochs=2, out_dir=tmp_path / "split", resume=True, **config))
    assert [row["epoch"] for row in _log(tmp_path / "split")] == [1, 2]
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    assert load_checkpoint(resumed.last_checkpoint).epoch == 2

    straight = train(TrainConfig(epochs=2, out_dir=tmp_path / "straight", **config))
    for key, tensor in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], tensor, msg=key)


class Killed(BaseException):
    """What a kill looks like from inside the process: nothing below catches it."""


@pytest.mark.parametrize("where", ["best checkpoint", "last checkpoint", "training state", "log", "plot"])
def test_a_kill_during_any_save_leaves_a_run_that_resumes_to_the_uninterrupted_weights(where, shapes, tmp_path,
                                                                                       monkeypatch):
    config = {"data": shapes, "format": "shapes", "schedule": "step", "step_epochs": 1, **TINY}
    straight = train(TrainConfig(epochs=2, out_dir=tmp_path / "straight", **config))
    train(TrainConfig(epochs=1, out_dir=tmp_path / "killed", **config))
    import captionlens.atomic as atomic

    targets = {"best checkpoint": "best.safetensors", "last checkpoint": "last.safetensors",
               "training state": "last.train.pt", "log": "train_log.jsonl", "plot": "training_curves.png"}
    real_replace = atomic.os.replace

    def replace_or_die(src, dst):                       # the file is half-written: die before it lands
        if str(dst).endswith(targets[where]):
            raise Killed
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace_or_die)
    with pytest.raises(Killed):
        train(TrainConfig(epochs=2, out_dir=tmp_path / "killed", **config))
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert not [p.name for p in (tmp_path / "killed").iterdir() if p.name.endswith(".tmp")]   # no half files
    resumed = train(TrainConfig(epochs=2, out_dir=tmp_path / "killed", resume=True, **config))
    for key, tensor in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], tensor, msg=key)
    assert [row["epoch"] for row in _log(tmp_path / "killed")] == [1, 2]
    assert load_checkpoint(resumed.last_checkpoint).epoch == 2


def test_resume_without_a_previous_run_names_the_missing_file(shapes, tmp_path):
    with pytest.raises(FileNotFoundError, match="last.train.pt"):
        train(TrainConfig(data=shapes, epochs=1, out_dir=tmp_path / "empty", resume=True, **TINY))


def test_loss_equals_per_caption_cross_entropy_plus_attention_penalty():
    model = tiny_captioner("show-attend-tell", vocab=NUMBERED_WORDS[:8], embed_size=8, hidden_size=16,
                           attention_dim=8, grid_size=2, calibrate=False, attach_vocab=False)   # 12 tokens
    images = torch.randn(2, 3, 32, 32)
    captions = torch.tensor([[1, 5, 6, 2, 0], [1, 7, 2, 0, 0], [1, 8, 9, 10, 2]])   # 0 = <PAD>
    owner = torch.tensor([0, 0, 1])
    lam = 0.7
    with torch.no_grad():
        got, got_ce = caption_loss(model, images, captions, owner, pad_idx=0, attention_lambda=lam)
        nll, count, penalty = 0.0, 0, []
        for caption, image in zip(captions, owner):
            real = caption[caption != 0].unsqueeze(0)                       # unpadded, one caption at a time
            hidden, alphas = model.teacher_forced_hidden(model.encode(images[image:image + 1]), real)
            log_probs = model.output_logits(hidden).log_softmax(-1).gather(-1, real[:, 1:, None])
            nll -= float(log_probs.sum())
            count += log_probs.numel()
            penalty.append(((1 - alphas[0].sum(0)) ** 2).mean())
    assert float(got_ce) == pytest.approx(nll / count, rel=1e-5)
    assert float(got) == pytest.approx(nll / count + lam * float(torch.stack(penalty).mean()), rel=1e-5)


def test_defaults_follow_the_data_and_say_what_they_chose():
    shapes = TrainConfig(data="d").for_data("shapes")
    assert (shapes.backbone, shapes.image_size, shapes.pretrained, shapes.grid_size) == ("tiny", 96, False, 0)
    photos = TrainConfig(data="d").for_data("kaggle")
    assert (photos.backbone, photos.image_size, photos.pretrained, photos.grid_size) == ("resnet50", 224, True, 7)
    assert photos.describe() == ("model: show-attend-tell, backbone resnet50 (ImageNet weights), 224 px input, "
                                 "embed 256, hidden 512, attention 256, grid 7")
    chosen = TrainConfig(data="d", backbone="tiny", image_size=64).for_data("karpathy")
    assert (chosen.backbone, chosen.image_size, chosen.pretrained) == ("tiny", 64, False)   # given values stay
    assert (TrainConfig(data="d", architecture="show-tell").for_data("flickr").model_config(10)
            .preprocessing.image_size == 224)


def test_each_architecture_gets_the_sizes_its_config_has_and_says_them():
    show_tell = TrainConfig(data="d", architecture="show-tell", num_layers=2).for_data("shapes")
    assert show_tell.describe() == ("model: show-tell, backbone tiny (random init), 96 px input, embed 64, "
                                    "hidden 256, 2 LSTM layers")
    config = show_tell.model_config(10)
    assert type(config) is ShowTellConfig and (config.num_layers, config.embed_size, config.hidden_size) == (2, 64, 256)
    attend = TrainConfig(data="d").for_data("shapes")
    assert attend.describe().endswith("attention 64, grid as the trunk gives it")
    config = attend.model_config(10)
    assert type(config) is ShowAttendTellConfig and (config.attention_dim, config.grid_size) == (64, None)
    assert (config.backbone, config.preprocessing.image_size, config.vocab_size) == ("tiny", 96, 10)


def test_an_unknown_architecture_is_one_error_naming_the_registered_ones():
    config = TrainConfig(data="d", architecture="transformer").for_data("shapes")
    for build in (config.describe, lambda: config.model_config(10)):
        with pytest.raises(ValueError, match="unknown architecture 'transformer'") as error:
            build()
        assert all(name in str(error.value) for name in ARCHITECTURES)


def test_the_config_and_its_recipes_are_frozen_and_keyword_only():
    config = TrainConfig(data="d")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        RECIPES["shapes"].image_size = 32
    with pytest.raises(TypeError):
        TrainConfig("d")
    assert config.for_data("shapes") is not config and config.backbone is None   # for_data returns a new config
