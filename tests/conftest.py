"""Suite-wide settings: two CPU threads (the project machines have two cores), headless matplotlib."""
import matplotlib
import torch

matplotlib.use("Agg")
torch.set_num_threads(2)
