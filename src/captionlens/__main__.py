"""`python -m captionlens` (and `torchrun ... -m captionlens`): the `captionlens` command."""
from captionlens.cli import main

main()
