"""Copy detection that does not depend on the embedding model.

`signal` computes a copy signal from a decoded image (the embedder does, where it decodes);
`verify` compares two signals and says whether one image is an edited copy of the other, with
its evidence. Both need OpenCV and numpy only.
"""
