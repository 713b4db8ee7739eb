"""Chapter: convolutional neural networks.

``shapes.py`` derives every layer's output shape and parameter count by hand and
checks them against Keras; ``classify.py`` labels photos with ImageNet models
from ``keras.applications``; ``transfer.py`` re-uses a trained convolutional
base on a new task with few labels.
"""
