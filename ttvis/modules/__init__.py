"""The visualizer network, its losses and its LightningModule."""

from ttvis.modules.autoencoder import Autoencoder
from ttvis.modules.visualizer import VisualizerModule

__all__ = ["Autoencoder", "VisualizerModule"]
