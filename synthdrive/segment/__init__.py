"""Segmentation: mmseg models from params (config), our dataset format and the equal-exposure
sampler as mmseg plug-ins (data), the real_aug control (photometric), training (train),
inference, per-condition mIoU, FID/KID and the semantic-consistency filter (evaluate)."""
