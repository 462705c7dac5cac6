"""captionlens: see what an image-captioning model looks at for each word it writes.

    import captionlens
    model = captionlens.load("best.safetensors").model
    expl = captionlens.explain(model, "dog.jpg", methods=("gradcam", "lime"))
"""
from captionlens.runtime import set_wait_policy

set_wait_policy()  # before torch is imported below (see captionlens.runtime)

# ruff: noqa: E402
from captionlens.data.images import Preprocessing
from captionlens.data.vocabulary import Vocabulary
from captionlens.explain import CaptionExplanation, explain, explain_batch
from captionlens.models import (
                                Captioner,
                                CNNLSTMModel,
                                ShowAttendTellConfig,
                                ShowAttendTellModel,
                                ShowTellConfig,
                                Trunk,
                                load,
                                load_checkpoint,
                                save_checkpoint,
)
from captionlens.models.importers import convert_sgrvinod, convert_yunjey

__version__ = "0.1.0"
__all__ = ["CNNLSTMModel", "CaptionExplanation", "Captioner", "Preprocessing", "ShowAttendTellConfig",
           "ShowAttendTellModel", "ShowTellConfig", "Trunk", "Vocabulary", "convert_sgrvinod", "convert_yunjey",
           "explain", "explain_batch", "load", "load_checkpoint", "save_checkpoint"]
