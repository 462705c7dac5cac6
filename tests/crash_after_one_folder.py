"""Run under torchrun by tests/test_distributed.py: `captionlens explain` whose rank 1 dies (os._exit, as a
kill would) right after writing its first image folder."""
import os

import captionlens.export as export
from captionlens.cli import main

if os.environ.get("RANK") == "1":
    write_folder = export._write_folder

    def write_then_die(*args, **kwargs):
        write_folder(*args, **kwargs)
        os._exit(3)

    export._write_folder = write_then_die

main()
