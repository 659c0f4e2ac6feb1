"""Metrics of the paper: synthesis (PSNR, SSIM, NMSE) and segmentation (Dice, ASSD per region).

Arrays are numpy in (z, y, x) order; ``spacing`` is in the same order, in mm.
"""

from abmseg.metrics.segmentation import assd, dice, region_scores
from abmseg.metrics.synthesis import nmse, psnr, ssim

__all__ = ["assd", "dice", "nmse", "psnr", "region_scores", "ssim"]
