"""Your own captioner, explained by captionlens: any PyTorch model that implements the `Captioner`
protocol gets every explanation method, decoding, figures and the HTML report.

This one shares nothing with captionlens' models: a two-stage CNN pooled to a 4x4 grid, and a GRU decoder
with dot-product (Luong) attention whose output layer sees the hidden state and the attended context.
What the protocol asks of it (see `captionlens.models.protocol`):

    vocab, preprocessing, has_attention        attributes
    trunk()                                    the encoder cut into named stages, pooling and head
    encode, init_state, step                   what decoding needs
    teacher_forced_hidden, output_logits       what scoring and explanations need

Run it (a minute on two CPU cores): it trains the model briefly on captionlens' synthetic shapes, then
explains held-out images with every method into a report.

    python examples/custom_captioner.py --out outputs/custom [--steps 300]
"""
from __future__ import annotations

import argparse
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import captionlens
from captionlens.data import CaptionTrainingSet, Preprocessing, Vocabulary, generate_shapes, load_dataset
from captionlens.models import Trunk
from captionlens.viz import save_figure, word_grid, write_report


class GRUCaptioner(nn.Module):
    """CNN encoder -> (B, 16, C) annotations; GRU decoder with dot-product attention over them."""

    has_attention = True

    def __init__(self, vocab: Vocabulary, channels: int = 32, hidden: int = 64, image_size: int = 64) -> None:
        super().__init__()
        self.vocab = vocab
        self.preprocessing = Preprocessing(image_size=image_size)
        self.stages = nn.Sequential(OrderedDict(
            block1=nn.Sequential(nn.Conv2d(3, channels, 3, stride=2, padding=1), nn.BatchNorm2d(channels), nn.ReLU()),
            block2=nn.Sequential(nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.BatchNorm2d(channels),
                                 nn.ReLU()),
        ))
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.embed = nn.Embedding(len(vocab), hidden)
        self.init = nn.Linear(channels, hidden)
        self.query = nn.Linear(hidden, channels, bias=False)
        self.cell = nn.GRUCell(hidden + channels, hidden)
        self.out = nn.Linear(hidden + channels, len(vocab))

    # --- the encoder, as explanations see it
    def trunk(self) -> Trunk:
        return Trunk(self.stages, self.pool, self.annotations)

    @staticmethod
    def annotations(pooled: torch.Tensor) -> torch.Tensor:
        """(B, C, 4, 4) -> (B, 16, C), cells row-major (what the attention weights index)."""
        return pooled.flatten(2).transpose(1, 2)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.annotations(self.pool(self.stages(images)))

    # --- the decoder
    def init_state(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.tanh(self.init(features.mean(1))), features

    def _advance(self, tokens: torch.Tensor, state: tuple[torch.Tensor, ...]):
        h, features = state
        alpha = torch.bmm(features, self.query(h).unsqueeze(2)).squeeze(2).softmax(1)
        context = torch.bmm(alpha.unsqueeze(1), features).squeeze(1)
        h = self.cell(torch.cat([self.embed(tokens), context], 1), h)
        return torch.cat([h, context], 1), (h, features), alpha

    def step(self, tokens: torch.Tensor, state: tuple[torch.Tensor, ...]):
        hidden, state, alpha = self._advance(tokens, state)
        return self.output_logits(hidden), state, alpha

    def teacher_forced_hidden(self, features: torch.Tensor, captions: torch.Tensor):
        state = self.init_state(features)
        hiddens, alphas = [], []
        for t in range(captions.size(1) - 1):
            hidden, state, alpha = self._advance(captions[:, t], state)
            hiddens.append(hidden)
            alphas.append(alpha)
        return torch.stack(hiddens, 1), torch.stack(alphas, 1)

    def output_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.out(hidden)


def train_briefly(model: GRUCaptioner, data: Path, steps: int, batch_size: int = 32) -> None:
    """Teacher-forced cross-entropy on the shapes training split: your own training loop goes here."""
    records = load_dataset(data, "shapes").split("train")
    pairs = CaptionTrainingSet(records, model.vocab, model.preprocessing, preload=True)
    loader = torch.utils.data.DataLoader(pairs, batch_size=batch_size, shuffle=True, collate_fn=_collate)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    step = 0
    while step < steps:
        for images, captions in loader:
            hidden, _ = model.teacher_forced_hidden(model.encode(images), captions)
            loss = F.cross_entropy(model.output_logits(hidden).flatten(0, 1), captions[:, 1:].flatten(),
                                   ignore_index=model.vocab.pad_idx)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step >= steps:
                break
    model.eval()


def _collate(batch):
    images, captions = zip(*batch)
    padded = nn.utils.rnn.pad_sequence(list(captions), batch_first=True, padding_value=0)  # <PAD> is always 0
    return torch.stack(images), padded


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/custom"))
    parser.add_argument("--steps", type=int, default=300, help="training steps (0: explain an untrained model)")
    parser.add_argument("--images", type=int, default=3, help="held-out images to explain")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    data = generate_shapes(args.out / "data", n_train=400, n_val=4, n_test=args.images, image_size=64)
    vocab = Vocabulary.build(load_dataset(data, "shapes").split("train").all_captions())
    model = GRUCaptioner(vocab)
    assert isinstance(model, captionlens.Captioner)        # the protocol is runtime-checkable
    train_briefly(model, data, args.steps)

    images = [r.image_path for r in load_dataset(data, "shapes").split("test")]
    methods = ("gradcam", "gradcam++", "attention", "lime", "occlusion")
    explanations = captionlens.explain_batch(model, images, methods, beam_size=3,
                                             settings={"lime": {"num_samples": 200}})
    for path, expl in zip(images, explanations):
        print(f"{path.name}: {expl.caption}  (Grad-CAM route: {expl['gradcam'].gradient_route})")
    save_figure(word_grid(explanations[0], "gradcam"), args.out / "grid-gradcam.png")
    report = write_report(explanations, args.out / "report")
    print(f"report: {report}")
    return report


if __name__ == "__main__":
    main()
