"""Stop vs warning signs, synthetic to real: renderer, data backends and the ResNet18 classifier.

Submodules are imported directly (``synthdrive.signs.render``, ``.data``, ``.classifier``) so
each DVC stage depends only on the files it uses: sign_data on the renderer and backends,
train_signs on the classifier.
"""
CLASSES = ("stop", "warning")
