"""Normalization: decode, reorient, resample and scale every item into the model input range."""

#: Background value of the model input range: padding never invents anatomy.
BACKGROUND = -1.0
