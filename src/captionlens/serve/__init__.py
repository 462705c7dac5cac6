"""`captionlens serve`: a local web page to ask the model about any image, caption, word and foil.

`create_app(CaptionService(model, ServeSettings(...)), Gallery(images), Limits(...))` is the application;
`run(app, host, port)` serves it on uvicorn. The page is the static report's viewer (`viz.page`) with the
live controls around it.
"""
from captionlens.serve.app import create_app
from captionlens.serve.gallery import Gallery
from captionlens.serve.server import exposure_warning, run
from captionlens.serve.service import CaptionService, ServeSettings
from captionlens.serve.uploads import Limits

__all__ = ["CaptionService", "Gallery", "Limits", "ServeSettings", "create_app", "exposure_warning", "run"]
