"""The image share of every word from one pass equals a backward pass per word, and Captum's
gradient x input on the features; words a model writes from its prefix alone get a lower share."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import InputXGradient
from PIL import Image

from captionlens.explain.image_share import image_shares
from captionlens.explain.scoring import caption_tensor, padded_captions, scores_from_features

MODELS = ("show_tell_model", "attention_model")


def per_word_loop(model, features, ids, vocab) -> np.ndarray:
    """One backward per word: gradient x input on the features and on every embedded token it read."""
    captions = caption_tensor(ids, vocab)
    shares = []
    for t in range(len(ids)):
        read = []

        def leaf(module, inputs, output, read=read):
            output = output.detach().requires_grad_()
            read.append(output)
            return output

        handle = model.decoder.embed.register_forward_hook(leaf)
        feats = features.detach().clone().requires_grad_()
        score = scores_from_features(model, feats, captions)[0, t]
        handle.remove()
        score.backward()
        image = (feats * feats.grad).abs().sum().item()
        positions = torch.cat([(e * e.grad).abs().sum(-1).reshape(1, -1) for e in read], 1)[0]
        prefix = positions[:t + 1].sum().item()               # <START> and the words before t
        shares.append(image / (image + prefix))
    return np.asarray(shares)


@pytest.mark.parametrize("model_name", MODELS)
def test_one_pass_equals_a_backward_per_word_for_every_image(model_name, request, vocab, image, caption):
    model = request.getfixturevalue(model_name)
    captions = [vocab.encode(caption, add_special=False), vocab.encode("the small green triangle", add_special=False)]
    rng = np.random.default_rng(4)
    pictures = [image, rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)]
    x = torch.stack([model.preprocessing.transform(Image.fromarray(p)) for p in pictures])
    with torch.no_grad():
        features = model.encode(x)
    ours = image_shares(model, features, padded_captions(captions, vocab), [len(c) for c in captions])
    for k, ids in enumerate(captions):
        expected = per_word_loop(model, features[k:k + 1], ids, vocab)
        np.testing.assert_allclose(ours[k], expected, rtol=1e-4)
        assert ((ours[k] > 0) & (ours[k] < 1)).all()


def test_the_image_side_equals_captums_input_x_gradient(show_tell_model, vocab, image, caption):
    model = show_tell_model
    ids = vocab.encode(caption, add_special=False)
    x = model.preprocessing.transform(Image.fromarray(image))[None]
    with torch.no_grad():
        features = model.encode(x)
    captions = caption_tensor(ids, vocab)
    oracle = InputXGradient(lambda feats: scores_from_features(model, feats, captions))
    shares = image_shares(model, features, captions, [len(ids)])[0]
    for t in range(len(ids)):
        on_image = oracle.attribute(features, target=t).abs().sum().item()
        loop = per_word_loop(model, features, ids, vocab)[t]
        prefix = on_image / loop - on_image
        assert shares[t] == pytest.approx(on_image / (on_image + prefix), rel=1e-4)


def test_a_word_written_from_the_prefix_alone_has_no_image_share(show_tell_model, vocab, image, caption):
    """Zero the decoder's use of the image (its input projection of the feature): every score depends on
    the prefix only, so the image's share is 0."""
    model = show_tell_model
    ids = vocab.encode(caption, add_special=False)
    x = model.preprocessing.transform(Image.fromarray(image))[None]
    with torch.no_grad():
        features = torch.zeros_like(model.encode(x))       # the image feature contributes nothing
    shares = image_shares(model, features, caption_tensor(ids, vocab), [len(ids)])[0]
    np.testing.assert_allclose(shares, 0.0, atol=1e-12)


def test_a_model_without_an_embedding_is_refused(show_tell_model, vocab):
    embed = show_tell_model.decoder.embed
    del show_tell_model.decoder.embed
    try:
        with pytest.raises(ValueError, match="no decoder.embed"):
            image_shares(show_tell_model, torch.zeros(1, 16), caption_tensor([5], vocab), [1])
    finally:
        show_tell_model.decoder.embed = embed
