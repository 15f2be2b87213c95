"""The visualizer network, its losses and its LightningModule."""

from ttvis.modules.autoencoder import Autoencoder
from ttvis.modules.timevis import EpochHeads, TimeVisModule
from ttvis.modules.visualizer import TrainingDiverged, VisualizerModule

__all__ = ["Autoencoder", "EpochHeads", "TimeVisModule", "TrainingDiverged", "VisualizerModule"]
