"""The trained models shipped with mitoscope (weights, contracts and cards): see :mod:`mitoscope.models.pretrained`."""
