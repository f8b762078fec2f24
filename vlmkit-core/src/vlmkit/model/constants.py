"""Token constants shared by templates, splicing and data. Torch-free, so data code stays light."""

#: image-placeholder id inside ``input_ids`` (one per image, expanded by splicing); LLaVA's value
IMAGE_PLACEHOLDER = -200
#: label of positions that are not supervised (PyTorch's cross-entropy default ignore index)
IGNORE_INDEX = -100
