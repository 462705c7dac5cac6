"""`explain(caption=[words])`: a caption given as its words is explained exactly as those words (no
tokenising, "<UNK>" allowed), equal to the same caption given as text; words the vocabulary lacks, or
special tokens, are refused naming them."""
from __future__ import annotations

import numpy as np
import pytest

from captionlens.explain import explain


def test_a_caption_given_as_words_equals_the_same_text(attention_model, image):
    as_text = explain(attention_model, image, ("gradcam",), caption="a red circle above the square")
    as_words = explain(attention_model, image, ("gradcam",), caption=["a", "red", "circle", "above", "the", "square"])
    assert as_words.tokens == as_text.tokens and as_words.source == "given"
    np.testing.assert_allclose(as_words["gradcam"].raw, as_text["gradcam"].raw, rtol=1e-6, atol=1e-9)
    unknown = explain(attention_model, image, ("gradcam",), caption=["a", "<UNK>", "circle"])
    assert unknown.token_ids[1] == attention_model.vocab.unk_idx


@pytest.mark.parametrize("words, match", [(["a", "zebra"], "words not in the vocabulary: \\['zebra'\\]"),
                                          (["a", "<START>"], "words not in the vocabulary: \\['<START>'\\]"),
                                          (["A"], "words not in the vocabulary: \\['A'\\]"),
                                          ([], "no words")])
def test_words_the_vocabulary_lacks_are_refused(attention_model, image, words, match):
    with pytest.raises(ValueError, match=match):
        explain(attention_model, image, ("gradcam",), caption=words)
