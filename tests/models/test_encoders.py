"""Encoders: the grid pool, every torchvision ResNet by name, a trunk registered by a user (once: a second
registration of its name is refused), and telling trunks apart by the exact shapes of their weights."""
from __future__ import annotations

import re
import sys

import pytest
import torch
from torch import nn
from torchvision import models as tv_models

from captionlens.models.encoders import TRUNKS, GridPool, identify_trunk, register_trunk, tiny_trunk, trunk_shapes
from zoo import NUMBERED_WORDS, tiny_captioner

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def test_grid_pool_passes_a_map_of_its_size_through_and_pools_others():
    pool = GridPool(7)
    same = torch.randn(2, 5, 7, 7)
    assert pool(same) is same
    larger = torch.randn(2, 5, 14, 11)
    torch.testing.assert_close(pool(larger), nn.AdaptiveAvgPool2d(7)(larger))
    torch.testing.assert_close(GridPool((3, 3))(larger), nn.AdaptiveAvgPool2d(3)(larger))


@pytest.mark.parametrize("name", RESNETS)
def test_every_resnet_is_identified_from_torchvisions_own_weights(name):
    """The oracle is torchvision's model: its children less avgpool/fc, keyed as our `encoder.resnet`."""
    with torch.device("meta"):
        net = tv_models.get_model(name)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.startswith("fc.")}
    assert shapes == trunk_shapes(name)
    assert identify_trunk(shapes) == name


def test_a_trunk_no_backbone_fits_is_named_by_key_and_shape():
    shapes = dict(trunk_shapes("resnet152"))
    shapes["layer4.2.conv3.weight"] = (1024, 512, 1, 1)
    with pytest.raises(ValueError, match=r"closest is resnet152: 'layer4\.2\.conv3\.weight' has shape "
                                         r"\(1024, 512, 1, 1\), expected \(2048, 512, 1, 1\)"):
        identify_trunk(shapes)
    del shapes["layer4.2.conv3.weight"]
    with pytest.raises(ValueError, match="missing key 'layer4.2.conv3.weight'"):
        identify_trunk(shapes)


@pytest.fixture
def scratch_trunks():
    """Trunks a test registers are unregistered after it (a name can be registered only once)."""
    before = set(TRUNKS)
    yield
    for name in set(TRUNKS) - before:
        del TRUNKS[name]
    trunk_shapes.cache_clear()


def test_a_registered_torchvision_trunk_builds_and_is_told_from_resnet50(scratch_trunks):
    register_trunk("resnext50_32x4d")
    model = tiny_captioner("show-tell", vocab=NUMBERED_WORDS[:6], embed_size=8, hidden_size=8,
                           backbone="resnext50_32x4d", calibrate=False, attach_vocab=False)
    assert model.encoder.channels == 2048
    assert model.encode(torch.randn(1, 3, 32, 32)).shape == (1, 8)
    shapes = {k.removeprefix("encoder.resnet."): tuple(v.shape) for k, v in model.state_dict().items()
              if k.startswith("encoder.resnet.")}
    assert identify_trunk(shapes) == "resnext50_32x4d"           # same keys as resnet50, other shapes
    assert identify_trunk(trunk_shapes("resnet50")) == "resnet50"


def test_a_trunk_name_registered_twice_is_refused_naming_both_lines(scratch_trunks):
    first = sys._getframe().f_lineno + 1
    register_trunk("mine", tiny_trunk, dropped=())
    with pytest.raises(ValueError) as info:
        again = sys._getframe().f_lineno + 1
        register_trunk("mine", lambda pretrained: nn.Sequential(), dropped=())
    assert str(info.value) == (f"trunk 'mine' is registered twice: first by {__file__}:{first}, "
                               f"again by {__file__}:{again}")
    assert TRUNKS["mine"].build is tiny_trunk                    # the first registration stands
    with pytest.raises(ValueError, match=rf"trunk 'resnet50' is registered twice: first by .*encoders\.py:\d+, "
                                         rf"again by {re.escape(__file__)}:\d+$"):
        register_trunk("resnet50")
