"""The brief-training recipe's constants (no torch here: the CLI's help and footnotes quote them).

Why these: SGD trains both families from scratch, where AdamW at 2e-3 trained Fast-SCNN as well but
made the BN-free VGG16 of FCN-8s diverge within three steps; 0.4 is the Fast-SCNN paper's auxiliary
weight; the scale range is the usual segmentation jitter around the training size.
"""

DEFAULT_LR = 0.02
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
POLY_POWER = 0.9
AUX_WEIGHT = 0.4
SCALE_RANGE = (0.75, 1.5)
