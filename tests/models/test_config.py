"""The architecture registry: each architecture name builds one model class; a second class registered under
a name is refused, naming where both are defined."""
from __future__ import annotations

import re
import sys

import pytest

from captionlens.models import ARCHITECTURES, CNNLSTMModel, ShowAttendTellModel, ShowTellConfig
from captionlens.models.config import register_architecture


def test_each_model_class_is_registered_under_its_configs_architecture_name():
    for model_class in (CNNLSTMModel, ShowAttendTellModel):
        assert ARCHITECTURES[model_class.config_class.architecture] is model_class


def test_an_architecture_registered_twice_is_refused_naming_both_classes():
    line = sys._getframe().f_lineno + 1
    class Imitation(CNNLSTMModel):
        """Another class under Show-and-Tell's architecture name."""

    with pytest.raises(ValueError) as info:
        register_architecture(Imitation)
    message = str(info.value)
    first = re.escape(sys.modules[CNNLSTMModel.__module__].__file__ or "")
    assert re.fullmatch(rf"architecture 'show-tell' is registered twice: first by "
                        rf"captionlens\.models\.show_tell\.CNNLSTMModel \({first}:\d+\), again by "
                        rf"{re.escape(__name__)}\.test_an_architecture_registered_twice_is_refused_naming_both_classes"
                        rf"\.<locals>\.Imitation \({re.escape(__file__)}:{line}\)", message), message
    assert ARCHITECTURES[ShowTellConfig.architecture] is CNNLSTMModel  # the first registration stands
