"""captionlens: see what an image-captioning model looks at for each word it writes.

    import captionlens
    model = captionlens.load("best.safetensors").model
    expl = captionlens.explain(model, "dog.jpg", methods=("gradcam", "lime"))
"""
from captionlens.data.vocabulary import Vocabulary
from captionlens.explain import CaptionExplanation, explain, explain_batch
from captionlens.models import CNNLSTMModel, ShowAttendTellModel, load, load_checkpoint, save_checkpoint

__version__ = "0.1.0"
__all__ = ["CNNLSTMModel", "CaptionExplanation", "ShowAttendTellModel", "Vocabulary", "explain", "explain_batch",
           "load", "load_checkpoint", "save_checkpoint"]
