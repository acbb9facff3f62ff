"""The copy signal as commit e077475 computed it, to compare with: ORB features on the whole
image normalised to 512 pixels on its longer side. Everything else (hashes, thumbnail, the ORB
settings themselves) is the current signal's, unchanged since."""

from __future__ import annotations

import cv2
from PIL import Image

from imagesearch.copies import signal as signals


def compute(image: Image.Image) -> signals.CopySignal:
    grey = signals._normalised_grey(signals._flattened(image))
    height, width = grey.shape
    phash, mirrored = signals.dct_hashes(grey)
    thumbnail = cv2.resize(grey, signals._thumbnail_size(width, height),
                           interpolation=cv2.INTER_AREA)
    points, descriptors = signals._orb(grey)
    return signals.CopySignal(width, height, phash, mirrored, thumbnail, points, descriptors)
